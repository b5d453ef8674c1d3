//! TLS costs on loopback, with the server on one core (its own single-threaded runtime and thread):
//!
//! - `handshake/full` and `handshake/resumed`: 32 new connections per iteration, 8 rounds of 4 concurrent
//!   ones (TLS 1.3 tickets are single-use and rustls keeps 8 per server, so more concurrency would turn
//!   "resumed" into full handshakes), each complete when the client has read the server's first HTTP/2
//!   bytes (so the server has verified the client certificate). Handshakes/s = 32 / time.
//! - `storeapi_info`: one `Info` call on an established channel, plaintext vs mTLS.

#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_core::{Labels, Sample};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::tls::{
    ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions, TlsIncoming,
};
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::{Store, server};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

const HOST: &str = "edge-0.cluster-a.example";
const ROUNDS: usize = 8;
const CONCURRENT: usize = 4;
const BATCH: usize = ROUNDS * CONCURRENT;

struct Setup {
    _dir: tempfile::TempDir,
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
    client: Arc<ClientTls>,
}

fn setup() -> Setup {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = issue::new_ca("CA", KeyType::P256, Validity::days(30).expect("validity")).expect("ca");
    issue::write_pair(d, "ca", &ca, true).expect("write");
    let srv = issue::issue(
        &ca,
        Usage::Server,
        "edge",
        &[HOST.into()],
        &[],
        KeyType::P256,
        Validity::days(30).expect("validity"),
    )
    .expect("srv");
    issue::write_pair(d, "srv", &srv, true).expect("write");
    let cli = issue::issue(
        &ca,
        Usage::Client,
        "gateway",
        &[],
        &[],
        KeyType::P256,
        Validity::days(30).expect("validity"),
    )
    .expect("cli");
    issue::write_pair(d, "cli", &cli, true).expect("write");
    let tls = ServerTls::load(
        "bench",
        ServerTlsFiles {
            cert: d.join("srv.crt"),
            key: d.join("srv.key"),
            client_ca: Some(d.join("ca.crt")),
        },
        ServerTlsOptions::default(),
    )
    .expect("server tls");
    let client = ClientTls::load(
        "bench",
        ClientTlsFiles {
            ca: d.join("ca.crt"),
            cert: Some(d.join("cli.crt")),
            key: Some(d.join("cli.key")),
        },
    )
    .expect("client tls");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let store = Arc::new(MemStore::new(Labels::from_pairs([("cluster", "a")])));
            store
                .append(
                    &Labels::from_pairs([("__name__", "up")]),
                    &[Sample::new(1, 1.0)],
                )
                .expect("append");
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let incoming = TlsIncoming::new(tls, l).expect("incoming");
            let tls_addr = incoming.local_addr();
            let p = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let plain_addr = p.local_addr().expect("addr");
            tx.send((tls_addr, plain_addr)).expect("send");
            let a = server::serve_incoming(
                store.clone(),
                incoming.into_stream(),
                std::future::pending(),
            );
            let b = server::serve_tcp(store, p, std::future::pending());
            let _ = tokio::join!(a, b);
        });
    });
    let (tls_addr, plain_addr) = rx.recv().expect("server started");
    Setup {
        _dir: dir,
        tls_addr,
        plain_addr,
        client,
    }
}

async fn connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(HOST.to_owned()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("handshake");
    // The server's HTTP/2 SETTINGS: it has finished the handshake, client certificate included.
    let mut b = [0u8; 9];
    tls.read_exact(&mut b).await.expect("server preface");
    tls.get_ref().1.handshake_kind().expect("handshake done")
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut full = (*s.client.config()).clone();
    full.resumption = rustls::client::Resumption::disabled();
    let full = Arc::new(full);
    let resumed = s.client.config();
    // Prime the session cache, and make sure what is measured is what it is called.
    rt.block_on(connect(s.tls_addr, resumed.clone()));
    assert_eq!(
        rt.block_on(connect(s.tls_addr, resumed.clone())),
        rustls::HandshakeKind::Resumed
    );
    assert_eq!(
        rt.block_on(connect(s.tls_addr, full.clone())),
        rustls::HandshakeKind::Full
    );

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(5));
    for (name, cfg) in [("full", full), ("resumed", resumed)] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let cfg = cfg.clone();
                async move {
                    let mut kinds = Vec::with_capacity(BATCH);
                    for _ in 0..ROUNDS {
                        let all = (0..CONCURRENT).map(|_| connect(s.tls_addr, cfg.clone()));
                        kinds.extend(futures::future::join_all(all).await);
                    }
                    kinds
                }
            })
        });
    }
    g.finish();
    // What "resumed" measured.
    let kinds = rt.block_on(async {
        let mut k = Vec::new();
        for _ in 0..ROUNDS {
            let all = (0..CONCURRENT).map(|_| connect(s.tls_addr, s.client.config()));
            k.extend(futures::future::join_all(all).await);
        }
        k
    });
    let resumed_share = kinds
        .iter()
        .filter(|k| **k == rustls::HandshakeKind::Resumed)
        .count();
    eprintln!(
        "resumed config: {resumed_share}/{} handshakes resumed",
        kinds.len()
    );

    let (plain, mtls) = rt.block_on(async {
        let plain = StoreClient::connect_plaintext(&s.plain_addr.to_string())
            .await
            .expect("plain");
        let ch = s
            .client
            .channel(&s.tls_addr.to_string(), Some(HOST), Duration::from_secs(5))
            .await
            .expect("mtls");
        (plain, StoreClient::new(ch, "mtls"))
    });
    let mut g = c.benchmark_group("storeapi_info");
    for (name, client) in [("plaintext", plain), ("mtls", mtls)] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                async move { client.info().await.expect("info") }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
