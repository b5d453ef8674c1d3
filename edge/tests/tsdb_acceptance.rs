//! The StoreAPI acceptance suite against the edge TSDB: head only, blocks only, and both; served by a
//! bare `LeafStore` and by the running edge over mTLS.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_edge::agent::{Agent, AgentOptions};
use meridian_edge::storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_edge::storeapi::leaf::LeafStore;
use meridian_edge::storeapi::server;
use meridian_edge::tsdb::db::{Db, DbOptions};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;

#[derive(Clone, Copy)]
enum Layout {
    HeadOnly,
    BlocksOnly,
    Both,
}

/// 30-minute blocks so the fixture's ~100 minutes span several of them.
const BLOCK_RANGE: i64 = 30 * 60 * 1000;

fn db_options() -> DbOptions {
    DbOptions {
        block_range: BLOCK_RANGE,
        retention_time: None,
        ..Default::default()
    }
}

/// A TSDB in `dir` holding the fixture, split between head and blocks as `layout` says.
fn fill(dir: &Path, fx: &Fixture, layout: Layout) -> Db {
    let db = Db::open(dir, db_options()).unwrap();
    for (labels, samples) in &fx.series {
        let mut app = db.appender();
        for s in samples {
            app.add(labels, s.t, s.v).unwrap();
        }
        app.commit().unwrap();
    }
    match layout {
        Layout::HeadOnly => {}
        Layout::BlocksOnly => {
            db.flush_head().unwrap();
        }
        Layout::Both => {
            db.compact().unwrap();
        }
    }
    // The main fixture (~100 minutes) really is split as the layout says.
    if fx.series.len() >= 10 {
        let (blocks, head) = (db.blocks().len(), db.head_series());
        match layout {
            Layout::HeadOnly => assert_eq!(blocks, 0),
            Layout::BlocksOnly => assert!(
                blocks > 0 && head == 0,
                "{blocks} blocks, {head} head series"
            ),
            Layout::Both => assert!(
                blocks > 0 && head > 0,
                "{blocks} blocks, {head} head series"
            ),
        }
    }
    db
}

async fn start(fx: Fixture, layout: Layout) -> StartedStore {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fill(dir.path(), &fx, layout));
    let store = LeafStore::from_source(db, fx.external_labels.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp(Arc::new(store), listener, async {
        let _ = rx.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StartedStore {
        channel,
        guard: Box::new((tx, dir)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_head_only() {
    acceptance::run(|fx| start(fx, Layout::HeadOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_blocks_only() {
    acceptance::run(|fx| start(fx, Layout::BlocksOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_head_and_blocks() {
    acceptance::run(|fx| start(fx, Layout::Both)).await;
}

fn pki(dir: &Path) {
    let ca = issue::new_ca("ca", KeyType::P256, Validity::days(2)).unwrap();
    issue::write_pair(dir, "ca", &ca, true).unwrap();
    let s = issue::issue(
        &ca,
        Usage::Server,
        "edge",
        &["edge-0.cluster-a.example".to_string()],
        &[],
        KeyType::P256,
        Validity::days(1),
    )
    .unwrap();
    issue::write_pair(dir, "edge", &s, true).unwrap();
    let c = issue::issue(
        &ca,
        Usage::Client,
        "gateway",
        &[],
        &[],
        KeyType::P256,
        Validity::days(1),
    )
    .unwrap();
    issue::write_pair(dir, "gateway", &c, true).unwrap();
}

/// The same suite against the running edge (`Agent`, as `meridian-edge run` starts it) over real mTLS:
/// the edge opens the prepared TSDB with the fixture's external labels in its Prometheus config; a client
/// without a certificate is refused.
async fn start_edge_mtls(fx: Fixture, layout: Layout) -> StartedStore {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(fill(&data, &fx, layout));
    let ext: Vec<String> = fx
        .external_labels
        .iter()
        .map(|l| format!("{}: {}", l.name, serde_json::to_string(l.value).unwrap()))
        .collect();
    let cfg = dir.path().join("edge.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  external_labels: {{{}}}\n", ext.join(", ")),
    )
    .unwrap();
    let certs = dir.path().join("pki");
    std::fs::create_dir_all(&certs).unwrap();
    pki(&certs);
    let tls = ServerTls::load(
        "edge",
        ServerTlsFiles {
            cert: certs.join("edge.crt"),
            key: certs.join("edge.key"),
            client_ca: Some(certs.join("ca.crt")),
        },
        ServerTlsOptions::default(),
    )
    .unwrap();
    let agent = Agent::start(AgentOptions {
        db: db_options(),
        grpc_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        grpc_tls: Some(tls),
        ..AgentOptions::new(
            cfg,
            data,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    send_metadata(&agent.http_addr().to_string(), &fx).await;
    let addr = agent.grpc_addr().unwrap().to_string();
    let client = ClientTls::load(
        "gateway",
        ClientTlsFiles {
            ca: certs.join("ca.crt"),
            cert: Some(certs.join("gateway.crt")),
            key: Some(certs.join("gateway.key")),
        },
    )
    .unwrap();
    let channel = client
        .channel(
            &addr,
            Some("edge-0.cluster-a.example"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // Without a client certificate the handshake is refused.
    let anonymous = ClientTls::load(
        "anonymous",
        ClientTlsFiles {
            ca: certs.join("ca.crt"),
            cert: None,
            key: None,
        },
    )
    .unwrap();
    let refused = match anonymous
        .channel(
            &addr,
            Some("edge-0.cluster-a.example"),
            Duration::from_secs(5),
        )
        .await
    {
        Err(_) => true,
        Ok(ch) => meridian_edge::proto::thanos::info::info_client::InfoClient::new(ch)
            .info(meridian_edge::proto::thanos::info::InfoRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    StartedStore {
        channel,
        guard: Box::new((agent, dir)),
    }
}

/// Delivers the fixture's metadata as Prometheus does: a remote-write request carrying only metadata.
async fn send_metadata(http: &str, fx: &Fixture) {
    use meridian_edge::proto::prometheus::{
        MetricMetadata, WriteRequest, metric_metadata::MetricType,
    };
    use prost::Message;
    let metadata = fx
        .metadata
        .iter()
        .flat_map(|(family, metas)| {
            metas.iter().map(move |m| MetricMetadata {
                r#type: match m.r#type.as_str() {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    other => panic!("fixture type {other}"),
                } as i32,
                metric_family_name: family.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
        })
        .collect();
    let body = snap::raw::Encoder::new()
        .compress_vec(
            &WriteRequest {
                metadata,
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .unwrap();
    let http = http.to_owned();
    let r = tokio::task::spawn_blocking(move || {
        meridian_testkit::http(
            "POST",
            &http,
            "/api/v1/write",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            &body,
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_head_only() {
    acceptance::run(|fx| start_edge_mtls(fx, Layout::HeadOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_blocks_only() {
    acceptance::run(|fx| start_edge_mtls(fx, Layout::BlocksOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_head_and_blocks() {
    acceptance::run(|fx| start_edge_mtls(fx, Layout::Both)).await;
}
