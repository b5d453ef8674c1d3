//! Compiles the StoreAPI and remote-write protos with protox (pure Rust; no system `protoc`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/thanos/types.proto",
        "proto/thanos/rpc.proto",
        "proto/thanos/info.proto",
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        // Hand-written: a series' labels as a `Labels`, with no `String` per label (`src/wire.rs`).
        .extern_path(".thanos.Series", "crate::wire::Series")
        .extern_path(".thanos.SeriesBatch", "crate::wire::SeriesBatch")
        .extern_path(".thanos.SeriesResponse", "crate::wire::SeriesResponse")
        .out_dir(&out)
        .compile_fds(fds)?;
    Ok(())
}
