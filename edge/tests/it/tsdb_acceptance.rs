//! The StoreAPI acceptance suite against the edge TSDB: head only, blocks only, and both; served by a
//! bare `LeafStore` and by the running edge over mTLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_edge::agent::{Agent, AgentOptions};
use meridian_pki::channel::GrpcChannel;
use meridian_pki::dev::DevPki;
use meridian_storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_storeapi::leaf::LeafStore;
use meridian_storeapi::server;
use meridian_tsdb::db::{Db, DbOptions, DbSource};
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
    let store = LeafStore::from_source(DbSource(db), fx.external_labels.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp(Arc::new(store), listener, async {
        let _ = rx.await;
    }));
    let channel = GrpcChannel::plaintext_lazy(&addr.to_string(), None).unwrap();
    channel.connect().await.unwrap();
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

/// The same suite against the running edge (`Agent`, as `meridian-edge run` starts it) over real mTLS:
/// the edge opens the prepared TSDB with the fixture's external labels in its Prometheus config; a client
/// without a certificate is refused.
async fn start_edge_mtls(fx: Fixture, layout: Layout) -> StartedStore {
    let edge = EdgeOverMtls::start(&fx, layout).await;
    let addr = edge.addr.clone();
    let channel = edge
        .pki
        .client_tls(true)
        .unwrap()
        .channel(
            &addr,
            Some("edge-0.cluster-a.example"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // Without a client certificate the handshake is refused.
    let anonymous = edge.pki.client_tls(false).unwrap();
    let refused = match anonymous
        .channel(
            &addr,
            Some("edge-0.cluster-a.example"),
            Duration::from_secs(5),
        )
        .await
    {
        Err(_) => true,
        Ok(ch) => meridian_storeapi::proto::thanos::info::info_client::InfoClient::new(ch)
            .info(meridian_storeapi::proto::thanos::info::InfoRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    StartedStore {
        channel,
        guard: Box::new(edge),
    }
}

/// A running edge over mTLS holding a fixture (its metadata delivered by remote write).
struct EdgeOverMtls {
    _agent: Agent,
    addr: String,
    pki: DevPki,
    _dir: tempfile::TempDir,
}

impl EdgeOverMtls {
    async fn start(fx: &Fixture, layout: Layout) -> EdgeOverMtls {
        meridian_pki::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        drop(fill(&data, fx, layout));
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
        let pki = DevPki::create(&dir.path().join("pki"), "edge-0.cluster-a.example").unwrap();
        let tls = pki.server_tls().unwrap();
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
        send_metadata(&agent.http_addr().to_string(), fx).await;
        let addr = agent.grpc_addr().unwrap().to_string();
        EdgeOverMtls {
            _agent: agent,
            addr,
            pki,
            _dir: dir,
        }
    }
}

/// Delivers the fixture's metadata as Prometheus does: a remote-write request carrying only metadata.
async fn send_metadata(http: &str, fx: &Fixture) {
    use meridian_storeapi::proto::prometheus::{
        MetricMetadata, WriteRequest, metric_metadata::MetricType,
    };
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
    let body = meridian_edge::receive::encode_body(&WriteRequest {
        metadata,
        ..Default::default()
    })
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

/// A client that shares no code with Meridian — Python's grpcio (gRPC's C core) with messages compiled
/// at run time from `integration/wire-client/*.proto`, written from `shared/specs/storeapi-wire.md` —
/// reads Info, Series and LabelValues from the running edge over mTLS and gets what the spec promises:
/// the fixture's series (external labels attached, sorted), every sample, the label values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_wire_client_reads_the_edge() {
    if !meridian_testkit::require_python_modules(
        &["grpc", "grpc_tools"],
        "python3 -m pip install grpcio grpcio-tools",
    ) {
        return;
    }
    let fx = acceptance::main_fixture();
    let edge = EdgeOverMtls::start(&fx, Layout::Both).await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/wire-client/storeapi_client.py");
    let (addr, pki) = (edge.addr.clone(), edge.pki.clone());
    let run = move |batch: &str| {
        let out = meridian_testkit::run_ok(
            std::process::Command::new("python3")
                .arg(&script)
                .arg(&addr)
                .arg("edge-0.cluster-a.example")
                .arg(pki.path("ca.crt"))
                .arg(pki.path("client.crt"))
                .arg(pki.path("client.key"))
                .arg(i64::MIN.to_string())
                .arg(i64::MAX.to_string())
                .arg("job")
                .arg(batch),
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (plain, batched) = tokio::task::spawn_blocking(move || (run("0"), run("3")))
        .await
        .unwrap();
    let info = &plain["info"];
    let ext: std::collections::BTreeMap<String, String> = fx
        .external_labels
        .iter()
        .map(|l| (l.name.to_owned(), l.value.to_owned()))
        .collect();
    assert_eq!(info["label_sets"][0], serde_json::json!(ext));
    assert_eq!(info["component_type"], "sidecar");
    assert_eq!(info["store"]["supports_without_replica_labels"], true);
    assert_eq!(info["metric_metadata"], true);
    let mint = fx
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.t))
        .min()
        .unwrap();
    // A live edge announces no end to its range, as Thanos' sidecar and Receive do (a gateway would
    // otherwise skip it for samples written after its last Info).
    assert_eq!(
        (
            info["store"]["min_time"].as_i64(),
            info["store"]["max_time"].as_i64()
        ),
        (Some(mint), Some(i64::MAX))
    );
    // Every fixture series, with the external labels, in label order, with all its samples.
    let mut want: Vec<(String, usize)> = fx
        .series
        .iter()
        .map(|(l, s)| {
            let mut b = l.to_builder();
            for e in fx.external_labels.iter() {
                b.set(e.name, e.value);
            }
            (b.build().to_string(), s.len())
        })
        .collect();
    want.sort();
    let got_of = |v: &serde_json::Value| -> Vec<(String, usize)> {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let l = meridian_core::Labels::from_pairs(
                    s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
                );
                (l.to_string(), s["samples"].as_u64().unwrap() as usize)
            })
            .collect()
    };
    assert_eq!(
        got_of(&plain),
        want,
        "series as the independent client read them"
    );
    assert_eq!(got_of(&batched), want, "series in SeriesBatch frames");
    assert_eq!(plain["frames"]["batch"], 0);
    assert!(batched["frames"]["batch"].as_u64().unwrap() > 0);
    let mut jobs: Vec<String> = fx
        .series
        .iter()
        .filter_map(|(l, _)| l.get("job").map(str::to_owned))
        .collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(plain["label_values"], serde_json::json!(jobs));
}

// Issue 22, item 5 (edge half): admission control and streaming of StoreAPI `Series` calls.

const WIDE: usize = 20_000;

/// A TSDB of `WIDE` series `wide{i="…"}`, each with a sample in a block and one in the head.
fn wide_db(dir: &Path) -> Arc<Db> {
    let db = Db::open(dir, db_options()).unwrap();
    let mut app = db.appender();
    for i in 0..WIDE {
        let l = meridian_core::Labels::from_pairs([
            ("__name__", "wide".to_string()),
            ("i", format!("{i:05}")),
        ]);
        let r = app.add(&l, 0, 1.0).unwrap();
        app.append(r, 2 * BLOCK_RANGE, 2.0).unwrap();
    }
    app.commit().unwrap();
    db.compact().unwrap();
    assert!(!db.blocks().is_empty() && db.head_series() == WIDE);
    Arc::new(db)
}

fn wide_request() -> meridian_storeapi::proto::thanos::SeriesRequest {
    meridian_storeapi::proto::thanos::SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: vec![meridian_storeapi::proto::thanos::LabelMatcher {
            r#type: 0,
            name: "__name__".into(),
            value: "wide".into(),
        }],
        ..Default::default()
    }
}

/// Polls `cond` (a gauge, a reference count) until it holds; fails after 30 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `Series` stream dropped after its first frame stops reading the TSDB: far fewer series than the
/// selection are produced, and the producer lets go of the TSDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_series_stream_stops_reading_the_tsdb() {
    use futures::StreamExt;
    use meridian_storeapi::Store;
    let dir = tempfile::tempdir().unwrap();
    let db = wide_db(dir.path());
    let store = LeafStore::from_source(
        DbSource(db.clone()),
        meridian_core::Labels::from_pairs([("cluster", "a")]),
    );
    let before = db.metrics.select_series.get();
    let refs = Arc::strong_count(&db);
    let mut stream = store.series(wide_request()).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    // The producer ends at its next send and drops its cursor (and its reference to the TSDB).
    wait_until("the producer to stop", || Arc::strong_count(&db) == refs).await;
    let read = db.metrics.select_series.get() - before;
    assert!(
        read < WIDE as u64 / 10,
        "read {read} of {WIDE} series for a stream dropped after one frame"
    );
}

/// With `--store.grpc.series-max-concurrency 1`, a second `Series` call waits until the first one's
/// stream is gone, then is answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_calls_beyond_max_concurrency_wait_for_a_slot() {
    use meridian_storeapi::MAX_MESSAGE_SIZE;
    use meridian_storeapi::proto::thanos as pb;
    use meridian_storeapi::server::{SeriesGate, ServerOptions};
    let dir = tempfile::tempdir().unwrap();
    let db = wide_db(dir.path());
    let store = LeafStore::from_source(
        DbSource(db),
        meridian_core::Labels::from_pairs([("cluster", "a")]),
    );
    let gate = SeriesGate::new(1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp_with(
        Arc::new(store),
        listener,
        ServerOptions {
            series_gate: Some(gate.clone()),
            writer: None,
        },
        async {
            let _ = rx.await;
        },
    ));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client =
        pb::store_client::StoreClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
    // The first call is being answered; its client reads one frame and stops reading.
    let mut first = client
        .clone()
        .series(wide_request())
        .await
        .unwrap()
        .into_inner();
    first.message().await.unwrap().unwrap();
    let mut c2 = client.clone();
    let mut second = tokio::spawn(async move {
        let mut s = c2.series(wide_request()).await?.into_inner();
        let mut n = 0;
        while let Some(f) = s.message().await? {
            if let Some(pb::series_response::Result::Series(_)) = f.result {
                n += 1;
            }
        }
        Ok::<usize, tonic::Status>(n)
    });
    tokio::select! {
        r = &mut second => panic!("the second Series call was answered while the first held the only slot: {r:?}"),
        () = wait_until("the second call to wait for a slot", || gate.waiting() == 1) => {}
    }
    assert_eq!(gate.in_flight(), 1);
    assert!(!second.is_finished());
    // The first client goes away: its slot goes to the second call, which gets every series.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the second call was answered")
        .unwrap()
        .unwrap();
    assert_eq!(n, WIDE);
    wait_until("the slot to be free", || gate.in_flight() == 0).await;
}

/// `--store.limits.request-series` / `--store.limits.request-samples` (Thanos' flags): a call over a
/// limit ends with a RESOURCE_EXHAUSTED error naming the limit, after at most the limit's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_limits_end_the_call_with_resource_exhausted() {
    use futures::StreamExt;
    use meridian_storeapi::Store;
    use meridian_storeapi::leaf::SeriesLimits;
    let dir = tempfile::tempdir().unwrap();
    let db = wide_db(dir.path());
    // Each series has two chunks (a block's and the head's): 150 chunks are 75 series.
    for (limits, what, most) in [
        (
            SeriesLimits {
                max_series: 100,
                max_samples: 0,
            },
            "exceeded series limit: limit 100",
            100,
        ),
        (
            SeriesLimits {
                max_series: 0,
                max_samples: 150 * 120,
            },
            "exceeded samples limit: limit 18000",
            75,
        ),
    ] {
        let store = LeafStore::from_source(
            DbSource(db.clone()),
            meridian_core::Labels::from_pairs([("cluster", "a")]),
        )
        .with_limits(limits);
        let frames: Vec<_> = store.series(wide_request()).await.unwrap().collect().await;
        let (last, served) = frames.split_last().unwrap();
        let e = last.as_ref().unwrap_err();
        assert_eq!(
            e.kind,
            meridian_core::error::ErrorKind::LimitExceeded,
            "{e}"
        );
        assert!(e.message.contains(what), "{e}");
        assert_eq!(served.len(), most);
        assert_eq!(
            tonic::Status::from(e.clone()).code(),
            tonic::Code::ResourceExhausted
        );
    }
}
