//! Fan-out rules over in-process stores: which stores are asked, limits, partial response for stores
//! known to be unhealthy, label names/values, and the dedup switch of the `Queryable`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meridian_core::error::{ErrorKind, Result};
use meridian_core::{Labels, MatchType, Matcher, Sample};
use meridian_gateway::fanout::{
    Fanout, FanoutOptions, Limits, QueryOptions, StaticStores, StoreRef, StoreSet,
};
use meridian_gateway::queryable::{LabelsRequest, Queryable, SelectRequest};
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::partial::PartialResponse;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_storeapi::{SeriesStream, Store};

/// A memstore that counts the Series calls it gets.
struct Counting {
    inner: MemStore,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        self.inner.info().await
    }
    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.series(req).await
    }
    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        self.inner.label_names(req).await
    }
    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        self.inner.label_values(req).await
    }
}

fn store(cluster: &str, replica: &str, t0: i64, n: i64) -> Arc<Counting> {
    let s = MemStore::new(Labels::from_pairs([
        ("cluster", cluster),
        ("replica", replica),
    ]));
    let phase = if replica == "1" { 7_000 } else { 0 };
    for job in ["api", "db"] {
        let samples: Vec<Sample> = (0..n)
            .map(|k| Sample::new(t0 + phase + k * 15_000, k as f64))
            .collect();
        s.append(
            &Labels::from_pairs([("__name__", "up"), ("job", job)]),
            &samples,
        )
        .unwrap();
    }
    Arc::new(Counting {
        inner: s,
        calls: AtomicUsize::new(0),
    })
}

async fn fanout(stores: &[(&str, Arc<Counting>)], opts: FanoutOptions) -> Arc<Fanout> {
    let list: Vec<(String, Arc<dyn Store>)> = stores
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone() as Arc<dyn Store>))
        .collect();
    Arc::new(Fanout::new(
        Arc::new(StaticStores::probe(list).await.unwrap()),
        opts,
    ))
}

fn up(extra: Vec<Matcher>, start: i64, end: i64) -> SelectRequest {
    let mut matchers = vec![Matcher::equal("__name__", "up")];
    matchers.extend(extra);
    SelectRequest {
        matchers,
        start,
        end,
        hints: Default::default(),
    }
}

fn opts(dedup: bool) -> QueryOptions {
    QueryOptions {
        dedup,
        ..Default::default()
    }
}

#[tokio::test]
async fn stores_are_chosen_by_time_range_and_external_labels() {
    let a = store("a", "0", 0, 100);
    let b = store("b", "0", 0, 100);
    let late = store("a", "1", 10_000_000, 100);
    let f = fanout(
        &[("a", a.clone()), ("b", b.clone()), ("late", late.clone())],
        FanoutOptions::default(),
    )
    .await;
    let q = f.querier(opts(false));
    let got = q
        .select(up(vec![Matcher::equal("cluster", "a")], 0, 2_000_000))
        .await
        .unwrap();
    assert_eq!(got.series.len(), 2);
    assert!(got.warnings.is_empty());
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(b.calls.load(Ordering::SeqCst), 0, "cluster=a rules out b");
    assert_eq!(
        late.calls.load(Ordering::SeqCst),
        0,
        "time range rules out late"
    );
    let got = q
        .select(up(
            vec![Matcher::new(MatchType::Regex, "cluster", "a|b").unwrap()],
            9_000_000,
            20_000_000,
        ))
        .await
        .unwrap();
    assert_eq!(got.series.len(), 2);
    assert_eq!(late.calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dedup_switch_and_replica_label_override() {
    let r0 = store("a", "0", 0, 100);
    let r1 = store("a", "1", 0, 100);
    let f = fanout(
        &[("r0", r0), ("r1", r1)],
        FanoutOptions {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
    )
    .await;
    let all = f
        .querier(opts(false))
        .select(up(vec![], 0, 10_000_000))
        .await
        .unwrap();
    assert_eq!(all.series.len(), 4, "dedup=false returns every replica");
    let merged = f
        .querier(opts(true))
        .select(up(vec![], 0, 10_000_000))
        .await
        .unwrap();
    assert_eq!(merged.series.len(), 2);
    for s in &merged.series {
        assert!(!s.labels.has("replica"));
        // One replica's 100 samples (the other's last one may extend the end), not the union of 200.
        assert!(
            (100..=101).contains(&s.samples.len()),
            "{}",
            s.samples.len()
        );
    }
    // replicaLabels[] per query: deduplicate over another label (here: none matches, nothing merges).
    let q = f.querier(QueryOptions {
        dedup: true,
        replica_labels: Some(vec!["pod".into()]),
        ..Default::default()
    });
    assert_eq!(
        q.select(up(vec![], 0, 10_000_000))
            .await
            .unwrap()
            .series
            .len(),
        4
    );
    // Label names and values follow the same switch.
    let lr = LabelsRequest {
        start: 0,
        end: 10_000_000,
        ..Default::default()
    };
    let names = f.querier(opts(true)).label_names(lr.clone()).await.unwrap();
    assert_eq!(names.names, vec!["__name__", "cluster", "job"]);
    let names = f
        .querier(opts(false))
        .label_names(lr.clone())
        .await
        .unwrap();
    assert_eq!(names.names, vec!["__name__", "cluster", "job", "replica"]);
    let values = f
        .querier(opts(false))
        .label_values("replica", lr.clone())
        .await
        .unwrap();
    assert_eq!(values.names, vec!["0", "1"]);
    let values = f
        .querier(opts(false))
        .label_values("job", LabelsRequest { limit: 1, ..lr })
        .await
        .unwrap();
    assert_eq!(values.names, vec!["api"]);
}

#[tokio::test]
async fn limits_end_a_query_of_death_with_a_clear_error() {
    let a = store("a", "0", 0, 500);
    let b = store("b", "0", 0, 500);
    for (limits, flag) in [
        (
            Limits {
                series: 3,
                ..Default::default()
            },
            "--store.limits.request-series",
        ),
        (
            Limits {
                samples: 1_500,
                ..Default::default()
            },
            "--store.limits.request-samples",
        ),
        (
            Limits {
                bytes: 1_000,
                ..Default::default()
            },
            "--store.limits.request-bytes",
        ),
    ] {
        let f = fanout(
            &[("a", a.clone()), ("b", b.clone())],
            FanoutOptions {
                limits,
                ..Default::default()
            },
        )
        .await;
        // Under partial response too: a limit is the query's fault, not a store's.
        let e = f
            .querier(opts(false))
            .select(up(vec![], 0, 100_000_000))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
        assert!(e.message.contains(flag), "{e}");
    }
    let f = fanout(
        &[("a", a), ("b", b)],
        FanoutOptions {
            limits: Limits {
                series: 4,
                samples: 2_000,
                bytes: 1 << 20,
            },
            ..Default::default()
        },
    )
    .await;
    let ok = f
        .querier(opts(false))
        .select(up(vec![], 0, 100_000_000))
        .await
        .unwrap();
    assert_eq!(ok.series.len(), 4, "exactly at the limits is allowed");
}

/// A set with one store known to be unhealthy and one that never answered Info.
struct Troubled(Vec<StoreRef>);

impl StoreSet for Troubled {
    fn stores(&self) -> Vec<StoreRef> {
        self.0.clone()
    }
}

#[tokio::test]
async fn unhealthy_and_unready_stores_are_named_not_waited_for() {
    let good = store("a", "0", 0, 10);
    let sick = store("b", "0", 0, 10);
    let mut refs = StaticStores::probe(vec![
        ("good:1".into(), good.clone() as Arc<dyn Store>),
        ("sick:1".into(), sick.clone() as Arc<dyn Store>),
    ])
    .await
    .unwrap()
    .0;
    refs[1].unhealthy = Some("connection refused".into());
    refs.push(StoreRef {
        name: "new:1".into(),
        store: sick.clone(),
        meta: None,
        unhealthy: None,
    });
    let f = Arc::new(Fanout::new(
        Arc::new(Troubled(refs)),
        FanoutOptions::default(),
    ));
    let got = f
        .querier(opts(false))
        .select(up(vec![], 0, 1_000_000))
        .await
        .unwrap();
    assert_eq!(got.series.len(), 2);
    assert_eq!(
        got.warnings,
        vec![
            "sick:1: unhealthy: connection refused".to_string(),
            "new:1: not ready (no Info answer yet)".to_string()
        ]
    );
    assert_eq!(sick.calls.load(Ordering::SeqCst), 0);
    // A selector that rules the sick store out by its labels gives no warning about it.
    let got = f
        .querier(opts(false))
        .select(up(vec![Matcher::equal("cluster", "a")], 0, 1_000_000))
        .await
        .unwrap();
    assert_eq!(
        got.warnings,
        vec!["new:1: not ready (no Info answer yet)".to_string()]
    );
    let e = f
        .querier(QueryOptions {
            partial_response: Some(PartialResponse::Abort),
            ..Default::default()
        })
        .select(up(vec![], 0, 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.message.contains("sick:1: unhealthy: connection refused"),
        "{e}"
    );
}
