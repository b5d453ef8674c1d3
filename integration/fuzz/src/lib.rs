//! Fuzz targets: every input a Meridian process takes from outside, driven with arbitrary bytes. Each
//! target must return for any input — refused with an error is fine; a panic, an abort, a hang or an
//! unbounded allocation is a bug.
//!
//! The targets are plain functions so that the same code runs three ways:
//! - under AFL++ (`integration/fuzz/fuzz.sh`, `cargo afl` on the stable toolchain), coverage-guided;
//! - as a replay of the seed corpus and of every crash found so far, in the test suite
//!   (`tests/replay.rs`), so the targets build and run in CI;
//! - by hand: `meridian-fuzz <target> < input`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;

/// A fuzz target: takes any bytes, returns (never panics, aborts or hangs).
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name the runner and the seed directories use.
pub const TARGETS: &[(&str, Target)] = &[
    ("promql", promql),
    ("exposition", exposition),
    ("remote_write", remote_write),
    ("relabel", relabel),
    ("storeapi", storeapi),
    ("index", index),
    ("chunks", chunks),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("cannot start a tokio runtime: {e}"),
        }
    })
}

const T0: i64 = 1_700_000_000_000;

/// A few series over an hour at 15 s: counters, gauges, a stale marker, labels with odd values.
fn small_data() -> Vec<meridian_gateway::queryable::SeriesData> {
    let mut out = Vec::new();
    for (i, (name, job)) in [
        ("up", "api"),
        ("up", "db"),
        ("http_requests_total", "api"),
        ("http_requests_total", "db"),
        ("node_load1", "api"),
    ]
    .into_iter()
    .enumerate()
    {
        let labels = Labels::from_pairs([
            ("__name__", name),
            ("job", job),
            ("instance", if i % 2 == 0 { "a:9100" } else { "b;9100" }),
        ]);
        let samples = (0..240)
            .map(|k| {
                let v = match name {
                    "up" => (k % 7 != 0) as u8 as f64,
                    "http_requests_total" => (k * (i as i64 + 1)) as f64,
                    _ => ((k as f64) / 10.0).sin(),
                };
                Sample::new(T0 + k * 15_000, v)
            })
            .collect();
        out.push(meridian_gateway::queryable::SeriesData {
            labels,
            samples,
            ..Default::default()
        });
    }
    out
}

/// PromQL: the gateway's whole query path (length and depth guards, parse, evaluation) as an instant
/// query and as a range query over a small data set, with a short timeout and a small samples limit.
pub fn promql(data: &[u8]) {
    use meridian_gateway::promql::{Engine, EngineOptions, MemQueryable};
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    static SETUP: OnceLock<(Engine, MemQueryable)> = OnceLock::new();
    let (engine, store) = SETUP.get_or_init(|| {
        let engine = Engine::new(EngineOptions {
            max_samples: 200_000,
            timeout: Duration::from_secs(2),
            ..EngineOptions::default()
        });
        (
            engine,
            MemQueryable {
                series: small_data(),
            },
        )
    });
    runtime().block_on(async {
        let _ = engine.instant(store, query, T0 + 1_800_000).await;
        let _ = engine.range(store, query, T0, T0 + 3_600_000, 60_000).await;
    });
}

/// The scrape parser on arbitrary bytes, in both formats: it ends (every step consumes input) and
/// what it returns is well formed.
pub fn exposition(data: &[u8]) {
    use meridian_edge::scrape::parse::{Entry, Format, Parser};
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Text, Format::OpenMetrics] {
        let mut steps = 0usize;
        for entry in Parser::new(body, format) {
            steps += 1;
            assert!(steps <= body.len() + 1, "the parser stopped advancing");
            if let Ok(Entry::Sample { name, labels, .. }) = entry {
                assert!(!name.is_empty());
                assert_eq!(labels.iter().count(), labels.len());
            }
        }
    }
}

/// Remote write: the receiver on a real TSDB. The first byte picks the body: 0 = the bytes as sent
/// (snappy framing and all), otherwise the rest is a protobuf `WriteRequest` that is snappy-compressed
/// first, so mutations reach the decoder and the validation instead of dying in snappy.
pub fn remote_write(data: &[u8]) {
    use meridian_edge::metadata::MetadataStore;
    use meridian_edge::receive::{ReceiveLimits, ReceiveMetrics};
    use meridian_tsdb::db::{Db, DbOptions};
    struct Sink {
        _dir: tempfile::TempDir,
        db: Db,
        writes: usize,
    }
    fn open() -> Option<Sink> {
        let dir = tempfile::tempdir().ok()?;
        let db = Db::open(dir.path(), DbOptions::default()).ok()?;
        Some(Sink {
            _dir: dir,
            db,
            writes: 0,
        })
    }
    static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();
    static META: OnceLock<(MetadataStore, ReceiveMetrics)> = OnceLock::new();
    let (metadata, metrics) =
        META.get_or_init(|| (MetadataStore::new(), ReceiveMetrics::default()));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    let mut guard = SINK
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A fresh TSDB every few thousand writes: a persistent fuzzer would otherwise grow one head
    // without end, which says nothing about the receiver.
    if guard.as_ref().is_none_or(|s| s.writes >= 5_000) {
        *guard = None;
        *guard = open();
    }
    let Some(sink) = guard.as_mut() else {
        return;
    };
    sink.writes += 1;
    let limits = ReceiveLimits {
        max_body_bytes: 1 << 20,
        max_decoded_bytes: 4 << 20,
    };
    let answer = meridian_edge::receive::write(&sink.db, metadata, &body, limits, metrics);
    assert!(
        matches!(answer.status, 204 | 400 | 413 | 415),
        "unexpected status {}",
        answer.status
    );
}

/// Relabel configs from arbitrary YAML, applied to a label set: parsing fails cleanly or yields a
/// config whose application never panics (regex translation, `$` expansion, hashmod).
pub fn relabel(data: &[u8]) {
    use meridian_core::relabel::{RelabelConfig, process};
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = RelabelConfig::parse_yaml(yaml) {
        let l = Labels::from_pairs([("__name__", "up"), ("a", "x;y"), ("__meta_k", "v")]);
        let _ = process(&l, &[cfg]);
    }
}

/// StoreAPI requests decoded from arbitrary bytes and served by a leaf store over a few series. The
/// first byte picks the call: Series, LabelNames or LabelValues. A Series stream is read to its end.
pub fn storeapi(data: &[u8]) {
    use futures::StreamExt;
    use meridian_storeapi::Store;
    use meridian_storeapi::memstore::MemStore;
    use meridian_storeapi::proto::thanos as pb;
    use prost::Message;
    static STORE: OnceLock<Arc<MemStore>> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        let store = MemStore::new(Labels::from_pairs([("cluster", "c1"), ("replica", "r0")]));
        for s in small_data() {
            let _ = store.append(&s.labels, &s.samples);
        }
        Arc::new(store)
    });
    let Some((&call, rest)) = data.split_first() else {
        return;
    };
    runtime().block_on(async {
        match call % 3 {
            0 => {
                let Ok(req) = pb::SeriesRequest::decode(rest) else {
                    return;
                };
                if let Ok(mut stream) = store.series(req).await {
                    while let Some(frame) = stream.next().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                }
            }
            1 => {
                if let Ok(req) = pb::LabelNamesRequest::decode(rest) {
                    let _ = store.label_names(req).await;
                }
            }
            _ => {
                if let Ok(req) = pb::LabelValuesRequest::decode(rest) {
                    let _ = store.label_values(req).await;
                }
            }
        }
    });
}

/// A block index from arbitrary (corrupted) bytes: opening it, every label name and value, their
/// postings and every series they name are read or refused with an error.
pub fn index(data: &[u8]) {
    use meridian_tsdb::index::IndexReader;
    let Ok(ix) = IndexReader::new(data.to_vec()) else {
        return;
    };
    let mut ids = Vec::new();
    for name in ix.label_names() {
        for value in ix.label_values(name) {
            if let Ok(p) = ix.postings(name, value) {
                ids.extend(p.into_iter().take(1_000));
            }
        }
    }
    if let Ok(all) = ix.all_postings() {
        ids.extend(all.into_iter().take(1_000));
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids.into_iter().take(1_000) {
        let _ = ix.series(id);
    }
}

/// A chunk segment file from arbitrary (corrupted) bytes: every chunk record is parsed or refused, and
/// every XOR chunk found is decoded to its end.
pub fn chunks(data: &[u8]) {
    use meridian_core::chunkenc::XorChunk;
    use meridian_tsdb::chunks::Segment;
    // The bytes as a whole segment, and as one bare XOR chunk.
    if let Ok(seg) = Segment::from_bytes(data.to_vec()) {
        for chunk in seg.chunks().take(10_000) {
            let Ok(chunk) = chunk else { break };
            if let Ok(x) = XorChunk::from_bytes(chunk.data) {
                let n = x.iter().take(1 << 16).count();
                assert!(n <= usize::from(x.num_samples()) + 1);
            }
        }
    }
    if let Ok(x) = XorChunk::from_bytes(data) {
        let _ = x.iter().take(1 << 16).count();
    }
}
