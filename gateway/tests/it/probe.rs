//! `meridian-gateway probe` with the Thanos client TLS flags against an mTLS StoreAPI server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_core::{Labels, Sample};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::tls::{ServerTls, ServerTlsFiles, ServerTlsOptions, TlsIncoming};
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_over_mtls() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = issue::new_ca("CA", KeyType::P256, Validity::days(7).unwrap()).unwrap();
    issue::write_pair(d, "ca", &ca, false).unwrap();
    let host = "edge-0.cluster-a.example";
    let srv = issue::issue(
        &ca,
        Usage::Server,
        "edge-0",
        &[host.into()],
        &[],
        KeyType::P256,
        Validity::days(7).unwrap(),
    )
    .unwrap();
    issue::write_pair(d, "edge-0", &srv, false).unwrap();
    let cli = issue::issue(
        &ca,
        Usage::Client,
        "gateway",
        &[],
        &[],
        KeyType::P256,
        Validity::days(7).unwrap(),
    )
    .unwrap();
    issue::write_pair(d, "gateway", &cli, false).unwrap();
    let tls = ServerTls::load(
        "edge",
        ServerTlsFiles {
            cert: d.join("edge-0.crt"),
            key: d.join("edge-0.key"),
            client_ca: Some(d.join("ca.crt")),
        },
        ServerTlsOptions::default(),
    )
    .unwrap();
    let store = MemStore::new(Labels::from_pairs([("cluster", "a"), ("replica", "0")]));
    store
        .append(
            &Labels::from_pairs([("__name__", "up")]),
            &[Sample::new(1, 1.0)],
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(tls, listener).unwrap();
    let addr = incoming.local_addr().to_string();
    tokio::spawn(server::serve_incoming(
        Arc::new(store),
        incoming.into_stream(),
        std::future::pending(),
    ));

    let bin = env!("CARGO_BIN_EXE_meridian-gateway");
    let p = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let out = tokio::process::Command::new(bin)
        .args([
            "probe",
            "--endpoint",
            &addr,
            "--grpc-client-tls-secure",
            "--grpc-client-tls-ca",
            &p("ca.crt"),
        ])
        .args([
            "--grpc-client-tls-cert",
            &p("gateway.crt"),
            "--grpc-client-tls-key",
            &p("gateway.key"),
        ])
        .args(["--grpc-client-server-name", host])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sidecar") && stdout.contains("replica=\\\"0\\\""),
        "{stdout}"
    );

    // Plaintext to the TLS port fails, and says which endpoint.
    let out = tokio::process::Command::new(bin)
        .args(["probe", "--endpoint", &addr])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}
