//! PromQL properties over random data: a range query equals the instant queries at each of its steps,
//! and the answer does not depend on how the data is split over stores (the fan-out over several
//! in-memory stores, split by series and by time, answers like one store).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_core::{Labels, Sample};
use meridian_gateway::fanout::{Fanout, FanoutOptions, QueryOptions, StaticStores};
use meridian_gateway::promql::{Engine, MemQueryable, QueryValue};
use meridian_gateway::queryable::SeriesData;
use meridian_storeapi::Store;
use meridian_storeapi::memstore::MemStore;
use proptest::prelude::*;

const QUERIES: &[&str] = &[
    "m",
    "rate(m[2m])",
    "increase(m[3m])",
    "sum by (job) (m)",
    "avg_over_time(m[90s])",
    "max_over_time(m[2m:30s])",
    "m offset 1m",
    "m > bool 5",
    "m * on(instance) group_left m{job=\"a\"}",
    "topk(1, m)",
    "deriv(m[3m])",
    "count(m) or vector(0)",
    "changes(m[5m]) + resets(m[5m])",
    "quantile(0.5, m)",
    "label_replace(m, \"x\", \"$1\", \"instance\", \"i(.*)\")",
];

fn data() -> impl Strategy<Value = Vec<SeriesData>> {
    prop::collection::vec(
        (
            0u8..2,
            prop::collection::vec((1i64..40_000, -3i32..20, prop::bool::weighted(0.1)), 1..30),
        ),
        1..5,
    )
    .prop_map(|series| {
        series
            .into_iter()
            .enumerate()
            .map(|(k, (job, points))| {
                let mut t = 0;
                let mut samples = Vec::new();
                for (dt, v, reset) in points {
                    t += dt;
                    let v = if reset { 0.0 } else { f64::from(v) };
                    samples.push(Sample::new(t, v));
                }
                SeriesData {
                    labels: Labels::from_pairs([
                        ("__name__", "m"),
                        ("instance", &format!("i{k}")),
                        ("job", if job == 0 { "a" } else { "b" }),
                    ]),
                    samples,
                    ..Default::default()
                }
            })
            .collect()
    })
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn range_equals_instant_at_every_step(series in data(), q in 0..QUERIES.len(), start in 0i64..200, step in 1i64..90) {
        let rt = rt();
        let engine = Engine::default();
        let store = MemQueryable { series };
        let (start, step) = (start * 1000, step * 1000);
        let end = start + step * 12;
        let query = QUERIES[q];
        let range = rt.block_on(engine.range(&store, query, start, end, step));
        let Ok(range) = range else {
            // An error for the range must be an error at some step.
            let any_err = (0..=12).any(|k| rt.block_on(engine.instant(&store, query, start + k * step)).is_err());
            prop_assert!(any_err, "{query}: range failed, no instant did");
            return Ok(());
        };
        let QueryValue::Matrix(matrix) = range.value else { panic!("range query gave no matrix") };
        for k in 0..=12 {
            let t = start + k * step;
            let inst = rt.block_on(engine.instant(&store, query, t)).unwrap();
            let mut want: Vec<(String, f64)> = match inst.value {
                QueryValue::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
                QueryValue::Scalar { v, .. } => vec![("{}".to_string(), v)],
                other => panic!("{other:?}"),
            };
            let mut got: Vec<(String, f64)> = matrix
                .iter()
                .filter_map(|s| s.samples.iter().find(|x| x.t == t).map(|x| (s.labels.to_string(), x.v)))
                .collect();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            got.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(got.len(), want.len(), "{} at {}: {:?} vs {:?}", query, t, got, want);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!(g.0 == w.0 && same(g.1, w.1), "{} at {}: {:?} vs {:?}", query, t, g, w);
            }
        }
    }

    #[test]
    fn store_split_does_not_change_answers(series in data(), q in 0..QUERIES.len(), split in 1i64..40_000) {
        let rt = rt();
        let engine = Engine::default();
        let query = QUERIES[q];
        let (start, end, step) = (0, 400_000, 20_000);
        let one = MemQueryable { series: series.clone() };
        let want = rt.block_on(engine.range(&one, query, start, end, step));
        // Series alternate between two stores, and the second store also holds the early part of the
        // first store's series (overlapping data, as edge and bucket).
        let a = MemStore::new(Labels::empty());
        let b = MemStore::new(Labels::empty());
        for (k, s) in series.iter().enumerate() {
            let (home, other) = if k % 2 == 0 { (&a, &b) } else { (&b, &a) };
            home.append(&s.labels, &s.samples).unwrap();
            let early: Vec<Sample> = s.samples.iter().copied().filter(|x| x.t < split).collect();
            other.append(&s.labels, &early).unwrap();
        }
        let got = rt.block_on(async {
            let stores: Vec<(String, Arc<dyn Store>)> =
                vec![("a".into(), Arc::new(a)), ("b".into(), Arc::new(b))];
            let f = Arc::new(Fanout::new(
                Arc::new(StaticStores::probe(stores).await.unwrap()),
                FanoutOptions::default(),
            ));
            let q = f.querier(QueryOptions::default());
            engine.range(&q, query, start, end, step).await
        });
        match (want, got) {
            (Ok(w), Ok(g)) => prop_assert_eq!(w.value, g.value, "{}", query),
            (Err(w), Err(g)) => prop_assert_eq!(w.message, g.message),
            (w, g) => prop_assert!(false, "{}: {:?} vs {:?}", query, w.map(|_| ()), g.map(|_| ())),
        }
    }
}

/// Limits end queries with Prometheus' error types.
#[test]
fn limits_give_prometheus_error_types() {
    use meridian_core::error::ErrorKind;
    use meridian_gateway::promql::EngineOptions;
    use std::time::Duration;
    let rt = rt();
    let series: Vec<SeriesData> = (0..50)
        .map(|k| SeriesData {
            labels: Labels::from_pairs([("__name__", "m"), ("k", &k.to_string())]),
            samples: (0..200)
                .map(|i| Sample::new(i * 15_000, i as f64))
                .collect(),
            ..Default::default()
        })
        .collect();
    let store = MemQueryable { series };
    let small = Engine::new(EngineOptions {
        max_samples: 1_000,
        ..Default::default()
    });
    let e = rt
        .block_on(small.range(&store, "sum(rate(m[5m]))", 0, 3_000_000, 15_000))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Execution);
    assert_eq!(e.kind.prometheus_error_type(), "execution");
    assert!(e.message.contains("too many samples"), "{e}");
    let hurried = Engine::new(EngineOptions {
        timeout: Duration::from_nanos(1),
        ..Default::default()
    });
    let e = rt
        .block_on(hurried.range(&store, "sum(rate(m[5m]))", 0, 3_000_000, 15_000))
        .unwrap_err();
    assert_eq!(e.kind.prometheus_error_type(), "timeout", "{e}");
    let bad = rt
        .block_on(Engine::default().instant(&store, "sum(", 0))
        .unwrap_err();
    assert_eq!(bad.kind.prometheus_error_type(), "bad_data", "{bad}");
}
