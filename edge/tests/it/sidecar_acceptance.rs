//! The StoreAPI acceptance suite against the sidecar's store beside a real Prometheus 2.42: the
//! fixture in Prometheus' head only (remote-written into it), in blocks only (written into its data
//! directory before it starts), and split between both. Metadata is compared with Prometheus' own
//! answer, since a fixture cannot load metadata into Prometheus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_edge::sidecar::blocks::PromBlocks;
use meridian_edge::sidecar::store::{PromState, SidecarStore};
use meridian_storeapi::acceptance::{self, Fixture, StartedStore, SuiteOptions, T0};
use meridian_storeapi::proto::prometheus as prompb;
use meridian_testkit::{Prometheus, http};
use prost::Message;

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
        let r = http(
            "POST",
            addr,
            "/api/v1/write",
            &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            &body,
        )
        .unwrap();
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
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

async fn start(fx: Fixture, layout: Layout) -> StartedStore {
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
        write_blocks(&data, &fx, split.min(T0 + 4 * HOUR));
    }
    let Some(prom) = Prometheus::start(dir.path(), &config(&fx.external_labels), &PROM_ARGS) else {
        panic!("Prometheus is missing");
    };
    remote_write(&prom.addr, &fx.series, split);
    let prom_client = Arc::new(crate::support::prom_client(&prom.addr));
    let state = Arc::new(PromState::default());
    state.refresh(&prom_client).await.unwrap();
    assert_eq!(state.labels(), fx.external_labels);
    let store = SidecarStore::new(
        prom_client,
        Arc::new(PromBlocks::new(data)),
        state,
        i64::MIN,
        Default::default(),
        1 << 30,
    );
    let started = acceptance::serve_plaintext(Arc::new(store)).await;
    StartedStore {
        channel: started.channel,
        guard: Box::new((started.guard, prom, dir)),
    }
}

const OPTS: SuiteOptions = SuiteOptions {
    fixture_metadata: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_head_only() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::HeadOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_blocks_only() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::BlocksOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_blocks_and_head() {
    acceptance::run_with(OPTS, |fx| start(fx, Layout::Both)).await;
}
