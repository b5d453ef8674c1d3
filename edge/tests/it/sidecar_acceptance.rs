//! The StoreAPI acceptance suite against the sidecar's store beside a real Prometheus 2.42: the
//! fixture in Prometheus' head only (remote-written into it), in blocks only (written into its data
//! directory before it starts), and split between both; the head read from Prometheus' WAL, and
//! through remote read. Metadata is compared with Prometheus' own answer, since a fixture cannot
//! load metadata into Prometheus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_edge::sidecar::blocks::PromBlocks;
use meridian_edge::sidecar::head::HeadReader;
use meridian_edge::sidecar::store::{PromState, SidecarStore};
use meridian_storeapi::acceptance::{self, Fixture, StartedStore, SuiteOptions, T0};
use meridian_storeapi::proto::prometheus as prompb;
use meridian_testkit::Prometheus;
use prost::Message;

/// How the sidecar reads the head's range.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Via {
    Wal,
    RemoteRead,
}

#[derive(Clone, Copy)]
enum Layout {
    HeadOnly,
    BlocksOnly,
    Both,
}

const HOUR: i64 = 3_600_000;

/// The fixture's samples before `split` go into blocks in `data` (one per two hours, as
/// Prometheus cuts them).
fn write_blocks(data: &Path, fx: &Fixture, split: i64) {
    let (mut lo, hi) = (T0 - 2 * HOUR, split);
    while lo < hi {
        let end = (lo + 2 * HOUR).min(hi);
        let part: Vec<(Labels, Vec<Sample>)> = fx
            .series
            .iter()
            .map(|(l, s)| {
                let s: Vec<Sample> = s
                    .iter()
                    .filter(|x| x.t >= lo && x.t < end)
                    .copied()
                    .collect();
                (l.clone(), s)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if !part.is_empty() {
            meridian_tsdb::block::write_block(data, part, lo, end).unwrap();
        }
        lo = end;
    }
}

/// Remote-writes the fixture's samples from `split` on into Prometheus, in time order across
/// series (the head refuses samples far behind its newest).
fn remote_write(addr: &str, series: &[(Labels, Vec<Sample>)], split: i64) {
    let mut all: Vec<(i64, usize, f64)> = series
        .iter()
        .enumerate()
        .flat_map(|(i, (_, s))| {
            s.iter()
                .filter(|x| x.t >= split)
                .map(move |x| (x.t, i, x.v))
        })
        .collect();
    all.sort_by_key(|a| (a.0, a.1));
    for batch in all.chunks(500) {
        let mut req = Vec::new();
        for &(t, i, v) in batch {
            let labels = series[i]
                .0
                .iter()
                .map(|l| prompb::Label {
                    name: l.name.to_owned(),
                    value: l.value.to_owned(),
                })
                .collect();
            let mut ts = prompb::TimeSeries {
                labels,
                ..Default::default()
            }
            .encode_to_vec();
            // The sample by hand: prost (like Prometheus' gogo code) leaves out a value equal to
            // 0.0, and -0.0 is, so it would arrive as 0.0.
            let mut sample = vec![0x09];
            sample.extend_from_slice(&v.to_bits().to_le_bytes());
            sample.push(0x10);
            prost::encoding::encode_varint(t as u64, &mut sample);
            ts.push(0x12);
            prost::encoding::encode_varint(sample.len() as u64, &mut ts);
            ts.extend_from_slice(&sample);
            req.push(0x0a);
            prost::encoding::encode_varint(ts.len() as u64, &mut req);
            req.extend_from_slice(&ts);
        }
        let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
        meridian_testkit::post_remote_write(addr, &body);
    }
}

/// Prometheus' config with these external labels (and nothing to scrape).
fn config(ext: &Labels) -> String {
    let labels: Vec<String> = ext
        .iter()
        .map(|l| format!("{}: {:?}", l.name, l.value))
        .collect();
    format!(
        "global:\n  external_labels: {{{}}}\nscrape_configs: []\n",
        labels.join(", ")
    )
}

/// The flags a sidecar expects of its Prometheus, and remote write to load the fixture.
const PROM_ARGS: [&str; 3] = [
    "--web.enable-remote-write-receiver",
    "--storage.tsdb.min-block-duration=2h",
    "--storage.tsdb.max-block-duration=2h",
];

/// Prometheus holding the fixture as `layout` says, and the sidecar's store beside it.
async fn load(
    fx: &Fixture,
    layout: Layout,
    via: Via,
) -> (tempfile::TempDir, Prometheus, SidecarStore) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prom-data");
    std::fs::create_dir_all(&data).unwrap();
    // Both: blocks up to an hour in, the head after.
    let split = match layout {
        Layout::HeadOnly => i64::MIN,
        Layout::BlocksOnly => i64::MAX,
        Layout::Both => T0 + HOUR,
    };
    if split > i64::MIN {
        write_blocks(&data, fx, split.min(T0 + 4 * HOUR));
    }
    let Some(prom) = Prometheus::start(dir.path(), &config(&fx.external_labels), &PROM_ARGS) else {
        panic!("Prometheus is missing");
    };
    remote_write(&prom.addr, &fx.series, split);
    let prom_client = Arc::new(crate::support::prom_client(&prom.addr));
    let state = Arc::new(PromState::default());
    state.refresh(&prom_client).await.unwrap();
    assert_eq!(state.labels(), fx.external_labels);
    let head = Arc::new(HeadReader::new((via == Via::Wal).then_some(data.as_path())));
    let store = SidecarStore::new(
        prom_client,
        Arc::new(PromBlocks::new(data)),
        state,
        head.clone(),
        i64::MIN,
        Default::default(),
        1 << 30,
    );
    // The head's range is read the way asked.
    let req = meridian_storeapi::proto::thanos::SeriesRequest {
        min_time: T0,
        max_time: i64::MAX,
        matchers: vec![meridian_storeapi::proto::thanos::LabelMatcher {
            name: "__name__".into(),
            value: ".+".into(),
            r#type: meridian_storeapi::proto::thanos::label_matcher::Type::Re as i32,
        }],
        ..Default::default()
    };
    let _ = meridian_storeapi::Store::series(&store, req).await.unwrap();
    let (wal, remote) = match via {
        Via::Wal => (1, 0),
        Via::RemoteRead => (0, 1),
    };
    assert_eq!(
        (head.reads("wal"), head.reads("remote_read")),
        (wal, remote)
    );
    (dir, prom, store)
}

async fn start(fx: Fixture, layout: Layout, via: Via) -> StartedStore {
    let (dir, prom, store) = load(&fx, layout, via).await;
    let started = acceptance::serve_plaintext(Arc::new(store)).await;
    StartedStore {
        channel: started.channel,
        guard: Box::new((started.guard, prom, dir)),
    }
}

/// A client sharing no code with Meridian (Python's grpcio, messages compiled from
/// `integration/wire-client/*.proto`) reads the sidecar over mTLS: Info, every fixture series with
/// the external labels and all its samples (blocks and head), label values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_wire_client_reads_the_sidecar() {
    if !meridian_testkit::require_python_modules(
        &["grpc", "grpc_tools"],
        "python3 -m pip install grpcio grpcio-tools",
    ) {
        return;
    }
    meridian_pki::install_crypto_provider();
    let fx = acceptance::main_fixture();
    let (dir, _prom, store) = load(&fx, Layout::Both, Via::Wal).await;
    let pki =
        meridian_pki::dev::DevPki::create(&dir.path().join("pki"), "sidecar-0.example").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let _server = meridian_storeapi::server::spawn(
        Arc::new(store),
        listener,
        Some(pki.server_tls().unwrap()),
        std::time::Duration::from_secs(60),
        async {
            let _ = stop_rx.await;
        },
    )
    .unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/wire-client/storeapi_client.py");
    let out = tokio::task::spawn_blocking(move || {
        meridian_testkit::run_ok(
            std::process::Command::new("python3")
                .arg(&script)
                .arg(&addr)
                .arg("sidecar-0.example")
                .arg(pki.path("ca.crt"))
                .arg(pki.path("client.crt"))
                .arg(pki.path("client.key"))
                .arg(i64::MIN.to_string())
                .arg(i64::MAX.to_string())
                .arg("job")
                .arg("0"),
        )
    })
    .await
    .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ext: std::collections::BTreeMap<&str, &str> = fx
        .external_labels
        .iter()
        .map(|l| (l.name, l.value))
        .collect();
    assert_eq!(got["info"]["label_sets"][0], serde_json::json!(ext));
    assert_eq!(got["info"]["component_type"], "sidecar");
    assert_eq!(got["info"]["metric_metadata"], true);
    let mint = fx
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.t))
        .min();
    assert_eq!(got["info"]["store"]["min_time"].as_i64(), mint);
    assert_eq!(got["info"]["store"]["max_time"].as_i64(), Some(i64::MAX));
    let mut want: Vec<(String, u64)> = fx
        .series
        .iter()
        .map(|(l, s)| {
            (
                l.merged_with(&fx.external_labels).to_string(),
                s.len() as u64,
            )
        })
        .collect();
    want.sort();
    let series: Vec<(String, u64)> = got["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let l = Labels::from_pairs(
                s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
            );
            (l.to_string(), s["samples"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(series, want, "series as the independent client read them");
    let mut jobs: Vec<&str> = fx.series.iter().filter_map(|(l, _)| l.get("job")).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(got["label_values"], serde_json::json!(jobs));
    let _ = stop_tx.send(());
}

const OPTS: SuiteOptions = SuiteOptions {
    fixture_metadata: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_head_only() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::HeadOnly, Via::Wal)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_head_only_through_remote_read() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::HeadOnly, Via::RemoteRead)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_blocks_only() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::BlocksOnly, Via::Wal)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_blocks_and_head() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::Both, Via::Wal)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_blocks_and_head_through_remote_read() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::Both, Via::RemoteRead)).await;
}
