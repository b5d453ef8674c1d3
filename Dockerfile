# One image with the three static binaries (musl, aws-lc-rs built in): meridian-edge, meridian-gateway,
# meridian-pki. The Kubernetes manifests (deploy/kubernetes) run it with the binary as first argument.
#   docker build -t ghcr.io/meridian/meridian:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools cmake clang \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p meridian-edge -p meridian-gateway -p meridian-pki --bins \
    && mkdir /out \
    && cp target/x86_64-unknown-linux-musl/release/meridian-edge \
          target/x86_64-unknown-linux-musl/release/meridian-gateway \
          target/x86_64-unknown-linux-musl/release/meridian-pki /out/

FROM scratch
COPY --from=build /out/ /usr/local/bin/
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
USER 65534:65534
ENV PATH=/usr/local/bin
ENTRYPOINT []
