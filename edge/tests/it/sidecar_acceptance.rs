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

/// Prometheus compacts its head into blocks, cuts WAL segments and checkpoints them (removing the
/// segments the checkpoint covers) while the sidecar follows its WAL: every sample is answered once,
/// by a sidecar that followed all along and by one started afterwards (which starts from the
/// checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_compacted_and_checkpointed_while_followed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prom-data");
    std::fs::create_dir_all(&data).unwrap();
    let ext = Labels::from_pairs([("cluster", "c")]);
    let Some(prom) = Prometheus::start(dir.path(), &config(&ext), &PROM_ARGS) else {
        panic!("Prometheus is missing");
    };
    // 14 h of 20 series at 30 s, ending 10 minutes ago, written 4 h and then 2 h at a time: each
    // part makes the head compactable (over 3 h), and each compaction starts a WAL segment; from
    // the fourth on, Prometheus checkpoints the older segments and removes them.
    let end = meridian_core::time::now_ms() / 30_000 * 30_000 - 600_000;
    let start = end - 14 * HOUR;
    let series: Vec<(Labels, Vec<Sample>)> = (0..20)
        .map(|i| {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]);
            let s = (start..=end)
                .step_by(30_000)
                .map(|t| Sample::new(t, (t / 1000 + i) as f64))
                .collect();
            (l, s)
        })
        .collect();
    let prom_client = Arc::new(crate::support::prom_client(&prom.addr));
    let state = Arc::new(PromState::default());
    state.refresh(&prom_client).await.unwrap();
    let make = || {
        let head = Arc::new(HeadReader::new(Some(data.as_path())));
        let store = SidecarStore::new(
            prom_client.clone(),
            Arc::new(PromBlocks::new(data.clone())),
            state.clone(),
            head.clone(),
            i64::MIN,
            Default::default(),
            1 << 30,
        );
        (head, Arc::new(store))
    };
    let (follower_reads, follower) = make();
    let all = [meridian_core::matcher::Matcher::equal("__name__", "m")];
    let wal = data.join("wal");
    let wal_entries = || -> Vec<String> {
        std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let cuts = [
        start + 4 * HOUR,
        start + 6 * HOUR,
        start + 8 * HOUR,
        start + 10 * HOUR,
        start + 12 * HOUR,
        end + 1,
    ];
    let mut from = start;
    for (k, to) in cuts.into_iter().enumerate() {
        let part: Vec<(Labels, Vec<Sample>)> = series
            .iter()
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.iter()
                        .filter(|x| x.t >= from && x.t < to)
                        .copied()
                        .collect(),
                )
            })
            .collect();
        remote_write(&prom.addr, &part, i64::MIN);
        from = to;
        // The compaction this part triggered: one more segment (the last part adds none).
        if k + 1 < cuts.len() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while wal_entries()
                .iter()
                .filter(|n| !n.starts_with("checkpoint"))
                .count()
                < k + 2
                && !wal_entries().iter().any(|n| n.starts_with("checkpoint."))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no compaction after part {k}: {:?}",
                    wal_entries()
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        // The follower reads as Prometheus goes.
        let _ = read_all(&follower, &all).await;
    }
    // The checkpoint can appear while Prometheus is still writing the last block (seen under a loaded
    // suite: 4 blocks at the first checkpoint): wait for both.
    let blocks = || {
        std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("meta.json").exists())
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !wal_entries().iter().any(|n| n.starts_with("checkpoint.")) || blocks() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no WAL checkpoint and 5 blocks: {:?}, {} blocks",
            wal_entries(),
            blocks()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (fresh_reads, fresh) = make();
    let mut want: Vec<(Labels, Vec<Sample>)> = series
        .iter()
        .map(|(l, s)| (l.merged_with(&ext), s.clone()))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    for store in [&follower, &fresh] {
        assert_eq!(read_all(store, &all).await, want);
    }
    for reads in [follower_reads, fresh_reads] {
        assert!(reads.reads("wal") > 0);
        assert_eq!(reads.reads("remote_read"), 0);
    }
}

/// Every sample of the series `matchers` select, through the StoreAPI, chunks decoded and merged in
/// time order (a sample in two overlapping chunks counted once, as a querier merges them).
async fn read_all(
    store: &Arc<SidecarStore>,
    matchers: &[meridian_core::matcher::Matcher],
) -> Vec<(Labels, Vec<Sample>)> {
    use futures::StreamExt;
    let req = meridian_storeapi::series_request(i64::MIN, i64::MAX, matchers, false);
    let mut stream = meridian_storeapi::Store::series(store.as_ref(), req)
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(frame) = stream.next().await {
        if let meridian_storeapi::SeriesFrame::Series(s) = frame.unwrap() {
            let mut samples: Vec<Sample> = Vec::new();
            for c in &s.chunks {
                let raw = c.raw.as_ref().unwrap();
                samples.extend(
                    meridian_core::chunkenc::XorIterator::new(&raw.data)
                        .unwrap()
                        .map(|x| Sample::new(x.t, x.v)),
                );
            }
            samples.sort_by_key(|x| x.t);
            // The same sample in two chunks (a block and the head around their boundary) must
            // agree; it is one sample.
            for w in samples.windows(2) {
                if w[0].t == w[1].t {
                    assert_eq!(w[0].v.to_bits(), w[1].v.to_bits(), "{}", s.labels);
                }
            }
            samples.dedup_by_key(|x| x.t);
            out.push((s.labels.clone(), samples));
        }
    }
    out
}
