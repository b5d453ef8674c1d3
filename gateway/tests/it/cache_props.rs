//! The results cache can never change an answer: over random ranges, steps and queries, asked one after
//! another of the same cache (so later requests overlap earlier ones and hit their pieces), the cached
//! answer equals the engine's direct answer bit for bit. Pieces are an hour long here, "now" falls
//! inside the data (so some pieces are too fresh to keep), and the queries include what splitting could
//! break: windows reaching across piece boundaries, subqueries, `offset`, `@ start()`, `time()`.
//! The property holds for the process-local cache and through a real memcached and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_core::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::cache::config::{CacheConfig, Role};
use meridian_gateway::cache::connect::connect;
use meridian_gateway::cache::shared::{OperationLabels, SharedCache, SharedMetrics};
use meridian_gateway::cache::{CacheOptions, ResultsCache};
use meridian_gateway::promql::{Engine, MemQueryable, QueryValue};
use meridian_gateway::queryable::SeriesData;
use meridian_testkit::CacheServer;
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;
/// Six hours of data.
const SPAN: i64 = 6 * 3_600_000;

const QUERIES: &[&str] = &[
    "rate(c[5m])",
    "sum by (job) (c)",
    "c offset 10m",
    "max_over_time(c[17m:2m])",
    "c @ start()",
    "timestamp(c)",
    "deriv(g[10m])",
    "g > 5",
    "time()",
    "count_over_time(g[1h])",
];

fn data() -> MemQueryable {
    let mut series = Vec::new();
    for (i, job) in ["a", "b", "a"].iter().enumerate() {
        let id = i.to_string();
        let mut c = Vec::new();
        let mut g = Vec::new();
        let mut v = 0.0;
        let mut t = T0 + 1_234 * i as i64;
        let mut k = 0u64;
        while t < T0 + SPAN {
            k += 1;
            // A counter with a reset and a gap, and an irregular gauge.
            v += (k % 7) as f64;
            if k == 900 {
                v = 0.0;
            }
            if !(400..440).contains(&k) {
                c.push(Sample { t, v });
                g.push(Sample {
                    t,
                    v: ((k * 37 + i as u64) % 11) as f64,
                });
            }
            t += 10_000 + (k % 5) as i64 * 1_000;
        }
        series.push(SeriesData {
            labels: Labels::from_pairs([("__name__", "c"), ("id", id.as_str()), ("job", job)]),
            samples: c,
            ..Default::default()
        });
        series.push(SeriesData {
            labels: Labels::from_pairs([("__name__", "g"), ("id", id.as_str()), ("job", job)]),
            samples: g,
            ..Default::default()
        });
    }
    MemQueryable { series }
}

fn same(a: &[SeriesData], b: &[SeriesData]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} series vs {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        if x.labels != y.labels {
            return Err(format!("labels {} vs {}", x.labels, y.labels));
        }
        let xs: Vec<(i64, u64)> = x.samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
        let ys: Vec<(i64, u64)> = y.samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
        if xs != ys {
            return Err(format!("{}: samples differ", x.labels));
        }
    }
    Ok(())
}

type Requests = Vec<(usize, i64, i64, i64)>;

fn requests() -> impl Strategy<Value = (Requests, i64)> {
    (
        prop::collection::vec(
            (
                0..QUERIES.len(),
                0i64..SPAN / 1000,
                1i64..400,
                prop::sample::select(vec![7_000i64, 15_000, 30_000, 60_000, 300_000]),
            ),
            1..8,
        ),
        0i64..SPAN,
    )
}

fn options(shared: Option<Arc<SharedCache>>) -> CacheOptions {
    CacheOptions {
        max_bytes: 64 << 20,
        split_interval: Duration::from_secs(3600),
        max_freshness: Duration::from_secs(60),
        labels_ttl: Duration::ZERO,
        shared,
    }
}

/// Asks `cache` the requests one after another and compares each answer with the engine's direct
/// one; answers how many pieces came from the cache.
async fn check(cache: &ResultsCache, requests: Requests, now_offset: i64) -> Result<usize, String> {
    let store = data();
    let engine = Engine::default();
    let now = T0 + now_offset;
    let mut hits = 0;
    for (qi, start_s, steps, step) in requests {
        let q = QUERIES[qi];
        let start = T0 + start_s * 1000 + 500;
        let end = start + steps * step;
        let splittable = !q.contains("start()");
        let cached = cache
            .range(q, splittable, (start, end, step), now, |a, b| {
                let (engine, store) = (&engine, &store);
                async move { engine.range(store, q, a, b, step).await }
            })
            .await
            .map_err(|e| format!("{q}: {e}"))?;
        hits += cached.outcome.hits;
        let direct = engine
            .range(&store, q, start, end, step)
            .await
            .map_err(|e| format!("{q}: {e}"))?;
        let QueryValue::Matrix(direct) = direct.value else {
            return Err(format!("{q}: not a matrix"));
        };
        same(&cached.series, &direct).map_err(|e| {
            format!(
                "{q} [{start}, {end}] step {step} now {now}: {e} ({:?})",
                cached.outcome
            )
        })?;
    }
    Ok(hits)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn cached_answers_equal_uncached((requests, now_offset) in requests()) {
        let r = runtime().block_on(async {
            check(&ResultsCache::new(options(None)), requests, now_offset).await
        });
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

/// The same property with the pieces in a real memcached or Redis (one server for every case, so
/// later cases read what earlier ones wrote, checked against the engine like everything else).
fn property_through(yaml: &str) {
    let rt = runtime();
    let metrics = Arc::new(SharedMetrics::default());
    let cfg = CacheConfig::parse(yaml, "test", Role::ResponseCache).unwrap();
    let shared = rt
        .block_on(connect("query-range", &cfg, None, &metrics))
        .unwrap()
        .expect("a shared backend");
    let kind = shared.backend_kind();
    let cache = ResultsCache::new(options(Some(shared.clone())));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let hits = std::cell::Cell::new(0usize);
    runner
        .run(&requests(), |(requests, now_offset)| {
            let r = rt.block_on(async {
                let h = check(&cache, requests.clone(), now_offset).await?;
                // The writes are asynchronous: asked again once they are in, every old piece is a hit.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<usize, String>(h + check(&cache, requests, now_offset).await?)
            });
            match r {
                Ok(h) => {
                    hits.set(hits.get() + h);
                    Ok(())
                }
                Err(e) => Err(proptest::test_runner::TestCaseError::fail(e)),
            }
        })
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    rt.block_on(shared.stop(Duration::from_secs(2)));
    let errors: u64 = ["get", "set"]
        .iter()
        .map(|op| {
            metrics
                .errors
                .get_or_create(&OperationLabels {
                    name: "query-range",
                    backend: kind,
                    operation: op,
                })
                .get()
        })
        .sum();
    assert_eq!(
        errors, 0,
        "{kind}: no operation may fail against a healthy server"
    );
    assert!(
        hits.get() > 0,
        "{kind}: pieces must come back from the shared cache"
    );
}

#[test]
fn cached_answers_equal_uncached_through_memcached() {
    let Some(server) = CacheServer::memcached() else {
        return;
    };
    property_through(&format!(
        "type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\n",
        server.addr
    ));
}

#[test]
fn cached_answers_equal_uncached_through_redis() {
    let Some(server) = CacheServer::redis() else {
        return;
    };
    property_through(&format!(
        "type: REDIS\nconfig:\n  addr: \"{}\"\n",
        server.addr
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_are_reused_and_fresh_ones_are_not_kept() {
    let store = data();
    let engine = Engine::default();
    let cache = ResultsCache::new(CacheOptions {
        split_interval: Duration::from_secs(3600),
        ..CacheOptions::default()
    });
    let q = "sum by (job) (rate(c[5m]))";
    let step = 30_000;
    let run = |start: i64, end: i64, now: i64| {
        let (engine, store, cache) = (&engine, &store, &cache);
        async move {
            cache
                .range(q, true, (start, end, step), now, |a, b| async move {
                    engine.range(store, q, a, b, step).await
                })
                .await
                .unwrap()
        }
    };
    // 4 h on the hour grid: four pieces, the last one fresh (now is inside it).
    let start = T0 / 3_600_000 * 3_600_000 + 3_600_000;
    let end = start + 4 * 3_600_000 - step;
    let now = end - 30_000;
    let first = run(start, end, now).await;
    assert_eq!((first.outcome.misses, first.outcome.uncached), (3, 1));
    let again = run(start, end, now).await;
    assert_eq!((again.outcome.hits, again.outcome.uncached), (3, 1));
    assert_eq!(again.series, first.series);
    // Later, everything is old enough: the fresh piece is now cached too.
    let later = run(start, end, end + 3_600_000).await;
    assert_eq!((later.outcome.hits, later.outcome.misses), (3, 1));
    // A request shifted by whole steps shares the middle pieces.
    let shifted = run(start + 3_600_000, end + 3_600_000, end + 7_200_000).await;
    assert_eq!(shifted.outcome.hits, 3);
    assert!(shifted.samples > 0, "the one new piece loaded samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_loads_are_coalesced() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = data();
    let engine = Engine::default();
    let cache = ResultsCache::new(CacheOptions::default());
    let evaluations = AtomicUsize::new(0);
    let q = "sum(rate(c[5m]))";
    let (start, end, step) = (T0 + 600_000, T0 + 3_600_000, 60_000);
    let one = || {
        let (engine, store, cache, evaluations) = (&engine, &store, &cache, &evaluations);
        async move {
            cache
                .range(
                    q,
                    true,
                    (start, end, step),
                    T0 + SPAN * 10,
                    |a, b| async move {
                        evaluations.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that the other requests arrive while this one loads.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        engine.range(store, q, a, b, step).await
                    },
                )
                .await
                .unwrap()
        }
    };
    let answers = futures::future::join_all((0..4).map(|_| one())).await;
    assert_eq!(
        evaluations.load(Ordering::SeqCst),
        1,
        "one load for four requests"
    );
    assert!(answers.windows(2).all(|w| w[0].series == w[1].series));
}
