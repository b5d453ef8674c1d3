//! The StoreAPI acceptance suite against the running edge (`Agent`, as `meridian-edge run` starts it) over
//! real mTLS: the TSDB directory is prepared (head only, blocks only, both), the edge opens it with the
//! fixture's external labels in its Prometheus config, and the suite talks to its gRPC port with a client
//! certificate. A client without a certificate is refused.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use meridian_edge::agent::{Agent, AgentOptions};
use meridian_edge::storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_edge::tsdb::db::{Db, DbOptions};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions};

#[derive(Clone, Copy)]
enum Layout {
    HeadOnly,
    BlocksOnly,
    Both,
}

const BLOCK_RANGE: i64 = 30 * 60 * 1000;

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

async fn start(fx: Fixture, layout: Layout) -> StartedStore {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let db = Db::open(
            &data,
            DbOptions {
                block_range: BLOCK_RANGE,
                retention_time: None,
                ..Default::default()
            },
        )
        .unwrap();
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
    }
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
        config_file: cfg,
        tsdb_path: data,
        db: DbOptions {
            block_range: BLOCK_RANGE,
            retention_time: None,
            ..Default::default()
        },
        http_listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http_tls: None,
        grpc_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        grpc_tls: Some(tls),
        grpc_tls_reload_interval: Duration::from_secs(60),
        discovery: Default::default(),
        receive: Default::default(),
        watch_config: false,
    })
    .await
    .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_head_only() {
    acceptance::run(|fx| start(fx, Layout::HeadOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_blocks_only() {
    acceptance::run(|fx| start(fx, Layout::BlocksOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mtls_head_and_blocks() {
    acceptance::run(|fx| start(fx, Layout::Both)).await;
}
