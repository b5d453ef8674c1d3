//! The StoreAPI acceptance suite: one set of checks of the whole wire contract
//! (`shared/specs/storeapi-wire.md`), run against every implementation — the in-memory store, the edge
//! TSDB, the bucket store and the gateway's fan-out — over real gRPC.
//!
//! An implementation provides a way to start a store holding a [`Fixture`] (series, external labels,
//! metadata) and returns a channel to it. The suite computes what the answer must be from the fixture
//! with a deliberately simple reference model and compares. Where the contract leaves stores freedom
//! (chunk boundaries; whether a series whose chunk spans the range but has no sample inside it is
//! returned; block-granular label queries on partial ranges) the checks accept every allowed answer and
//! nothing else.
//!
//! Checks panic with the case name and what differed, like any test assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures::StreamExt;
use meridian_pki::channel::GrpcChannel;

use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use crate::{MAX_MESSAGE_SIZE, matcher_to_proto};
use meridian_core::chunkenc::XorIterator;
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher, matches_all};
use meridian_core::sample::{Sample, stale_nan};

/// What a store under test must hold.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    pub external_labels: Labels,
    /// Series labels (without external labels) and their samples in time order.
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// TYPE/HELP/UNIT by metric family, for stores that serve metadata.
    pub metadata: BTreeMap<String, Vec<pb::Meta>>,
}

/// A started store: a channel to it, and whatever keeps it alive (dropped at the end of the group).
#[derive(Debug)]
pub struct StartedStore {
    pub channel: GrpcChannel,
    pub guard: Box<dyn Any + Send>,
}

/// Serves `store` over plaintext gRPC on a loopback port; dropping the guard stops the server.
pub async fn serve_plaintext(store: std::sync::Arc<dyn crate::Store>) -> StartedStore {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::serve_tcp(store, listener, async {
        let _ = stop_rx.await;
    }));
    let channel = GrpcChannel::plaintext_lazy(&addr.to_string(), None).expect("endpoint");
    channel.connect().await.expect("connect");
    struct Guard(
        Option<tokio::sync::oneshot::Sender<()>>,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    );
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
            self.1.abort();
        }
    }
    StartedStore {
        channel,
        guard: Box::new(Guard(Some(stop_tx), task)),
    }
}

/// Base timestamp of the fixtures (aligned to a 2 h block boundary), ms.
pub const T0: i64 = 1_700_006_400_000;
const S: i64 = 1000;
/// A range that covers all fixture data.
const ALL: (i64, i64) = (T0 - 3600 * S, T0 + 3 * 3600 * S);

/// What a store under test takes from the fixture besides its series.
#[derive(Debug, Clone, Copy)]
pub struct SuiteOptions {
    /// Whether the store serves the fixture's metadata. A sidecar serves what its Prometheus
    /// scraped, which a fixture cannot load; its metadata is tested against Prometheus instead.
    pub fixture_metadata: bool,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            fixture_metadata: true,
        }
    }
}

/// Runs the whole suite. `start` is called once per fixture group.
pub async fn run<F, Fut>(start: F)
where
    F: Fn(Fixture) -> Fut,
    Fut: Future<Output = StartedStore>,
{
    run_with(SuiteOptions::default(), start).await;
}

/// [`run`] with options.
pub async fn run_with<F, Fut>(opts: SuiteOptions, start: F)
where
    F: Fn(Fixture) -> Fut,
    Fut: Future<Output = StartedStore>,
{
    let fx = main_fixture();
    let store = start(fx.clone()).await;
    let s = Suite {
        fx: &fx,
        ch: store.channel.clone(),
    };
    s.info().await;
    s.series_matchers().await;
    s.series_time_ranges().await;
    s.series_features().await;
    s.series_errors().await;
    s.label_names().await;
    s.label_values().await;
    if opts.fixture_metadata {
        s.metadata().await;
    }
    drop(store.guard);

    let fx = no_external_labels_fixture();
    let store = start(fx.clone()).await;
    Suite {
        fx: &fx,
        ch: store.channel.clone(),
    }
    .without_external_labels()
    .await;
    drop(store.guard);

    let fx = Fixture::default();
    let store = start(fx.clone()).await;
    Suite {
        fx: &fx,
        ch: store.channel.clone(),
    }
    .empty_store()
    .await;
    drop(store.guard);
}

fn samples(start: i64, step: i64, n: usize, f: impl Fn(usize) -> f64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample::new(start + i as i64 * step, f(i)))
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// The main fixture: ten series over ~100 minutes with multi-chunk series, odd label values, special
/// floats and a stale marker; external labels `region`, `replica`.
pub fn main_fixture() -> Fixture {
    // A tiny deterministic generator for noisy gauges.
    let noise = |i: usize| {
        let x = (i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut up_a = samples(T0, 15 * S, 400, |i| if i % 97 == 0 { 0.0 } else { 1.0 });
    if let Some(last) = up_a.last_mut() {
        last.v = stale_nan();
    }
    let up_b: Vec<Sample> = (0..400)
        .map(|i| Sample::new(T0 + i as i64 * 15 * S + (i as i64 * 7) % 5, 1.0))
        .collect();
    let weird = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e-300,
        f64::MAX,
        stale_nan(),
        0.0,
    ];
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "up".to_owned(),
        vec![pb::Meta {
            r#type: "gauge".into(),
            help: "Whether the target is up.".into(),
            unit: String::new(),
        }],
    );
    metadata.insert(
        "http_requests_total".to_owned(),
        vec![pb::Meta {
            r#type: "counter".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    );
    Fixture {
        external_labels: l(&[("region", "eu-west"), ("replica", "r1")]),
        series: vec![
            (
                l(&[("__name__", "up"), ("job", "api"), ("instance", "a:9090")]),
                up_a,
            ),
            (
                l(&[("__name__", "up"), ("job", "api"), ("instance", "b:9090")]),
                up_b,
            ),
            (
                l(&[("__name__", "up"), ("job", "db"), ("instance", "c:5432")]),
                samples(T0, 15 * S, 50, |_| 1.0),
            ),
            (
                l(&[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "200"),
                    ("path", "/a,b=c}\"q"),
                ]),
                samples(T0, 15 * S, 400, |i| (i * 10) as f64),
            ),
            (
                l(&[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", "500"),
                    ("path", "/x"),
                ]),
                samples(T0, 15 * S, 400, |i| (i % 150) as f64 * 0.5),
            ),
            (
                l(&[("__name__", "foo:bar:rate5m"), ("job", "api")]),
                samples(T0, 15 * S, 400, |i| 100.0 + noise(i) * 10.0),
            ),
            (
                l(&[
                    ("__name__", "node_info"),
                    ("job", "node"),
                    ("multi", "a\nb"),
                    ("uni", "ü"),
                    ("digit", "\u{663}"),
                ]),
                samples(T0, 15 * S, 10, |_| 1.0),
            ),
            (
                l(&[("__name__", "late_metric"), ("job", "late")]),
                samples(T0 + 5000 * S, 15 * S, 40, |i| i as f64),
            ),
            (
                l(&[
                    ("__name__", "own_region"),
                    ("job", "api"),
                    ("region", "us-east"),
                ]),
                samples(T0, 15 * S, 20, |i| i as f64),
            ),
            (
                l(&[("__name__", "weird_values"), ("job", "w")]),
                samples(T0, 60 * S, weird.len(), |i| weird[i]),
            ),
        ],
        metadata,
    }
}

/// Series with their own `replica` label and no external labels.
pub fn no_external_labels_fixture() -> Fixture {
    Fixture {
        external_labels: Labels::empty(),
        series: vec![
            (
                l(&[("__name__", "x"), ("replica", "own")]),
                samples(T0, 15 * S, 10, |i| i as f64),
            ),
            (
                l(&[("__name__", "x"), ("replica", "other")]),
                samples(T0, 15 * S, 10, |i| -(i as f64)),
            ),
        ],
        metadata: BTreeMap::new(),
    }
}

fn m(kind: MatchType, name: &str, value: &str) -> Matcher {
    Matcher::new(kind, name, value).unwrap()
}

use MatchType::{Equal as EQ, NotEqual as NEQ, NotRegex as NRE, Regex as RE};

/// What the suite received for one `Series` call.
#[derive(Debug, Default)]
struct Got {
    series: Vec<pb::Series>,
    warnings: Vec<String>,
    /// Frame kinds in order: 's', 'b' + batch size, 'w'.
    frames: Vec<String>,
}

struct Suite<'a> {
    fx: &'a Fixture,
    ch: GrpcChannel,
}

impl Suite<'_> {
    fn store(&self) -> pb::store_client::StoreClient<GrpcChannel> {
        pb::store_client::StoreClient::new(self.ch.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    async fn call_series(&self, req: pb::SeriesRequest) -> Result<Got, tonic::Status> {
        use pb::series_response::Result as R;
        let mut stream = self.store().series(req).await?.into_inner();
        let mut got = Got::default();
        while let Some(frame) = stream.next().await {
            match frame?.result {
                Some(R::Series(s)) => {
                    got.frames.push("s".into());
                    got.series.push(s);
                }
                Some(R::Batch(b)) => {
                    got.frames.push(format!("b{}", b.series.len()));
                    got.series.extend(b.series);
                }
                Some(R::Warning(w)) => {
                    got.frames.push("w".into());
                    got.warnings.push(w);
                }
                Some(R::Hints(_)) | None => {}
            }
        }
        Ok(got)
    }

    /// Reference model: the series the store holds as served (external labels applied, replica labels
    /// removed), with all their samples, for series whose labels match.
    fn reference(&self, matchers: &[Matcher], without: &[String]) -> BTreeMap<Labels, Vec<Sample>> {
        let ext = &self.fx.external_labels;
        let drop: Vec<&String> = without.iter().filter(|w| ext.has(w)).collect();
        let mut out: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for (labels, smp) in &self.fx.series {
            let merged = labels.merged_with(ext);
            if !matches_all(matchers, &merged) {
                continue;
            }
            out.entry(merged.without(&drop))
                .or_default()
                .extend(smp.iter().copied());
        }
        for v in out.values_mut() {
            v.sort_by_key(|s| s.t);
        }
        out
    }

    fn req(matchers: &[Matcher], (mint, maxt): (i64, i64)) -> pb::SeriesRequest {
        pb::SeriesRequest {
            min_time: mint,
            max_time: maxt,
            matchers: matchers.iter().map(matcher_to_proto).collect(),
            ..Default::default()
        }
    }

    /// Calls `Series` and checks the answer against the reference model; returns the series' labels.
    async fn check_series(&self, case: &str, req: pb::SeriesRequest) -> Vec<Labels> {
        let got = self
            .call_series(req.clone())
            .await
            .unwrap_or_else(|e| panic!("{case}: Series failed: {e}"));
        self.verify(case, &req, &got)
    }

    fn verify(&self, case: &str, req: &pb::SeriesRequest, got: &Got) -> Vec<Labels> {
        let matchers: Vec<Matcher> = req
            .matchers
            .iter()
            .map(|pm| crate::matcher_from_proto(pm).unwrap())
            .collect();
        let (mint, maxt) = (req.min_time, req.max_time);
        let reference = self.reference(&matchers, &req.without_replica_labels);
        let in_range = |s: &&Sample| s.t >= mint && s.t <= maxt;
        let must: BTreeMap<&Labels, Vec<Sample>> = reference
            .iter()
            .filter(|(_, smp)| smp.iter().any(|s| in_range(&s)))
            .map(|(l, smp)| (l, smp.iter().filter(in_range).copied().collect()))
            .collect();
        let may: BTreeSet<&Labels> = reference
            .iter()
            .filter(|(_, smp)| {
                smp.first().is_some_and(|f| f.t <= maxt) && smp.last().is_some_and(|x| x.t >= mint)
            })
            .map(|(l, _)| l)
            .collect();

        assert!(
            got.warnings.is_empty(),
            "{case}: unexpected warnings {:?}",
            got.warnings
        );
        let batch = req.response_batch_size;
        for f in &got.frames {
            if batch > 0 {
                let n: i64 = f
                    .strip_prefix('b')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("{case}: frame {f:?} sent while batches of {batch} were asked for")
                    });
                assert!(
                    n >= 1 && n <= batch,
                    "{case}: batch of {n} series, asked for up to {batch}"
                );
            } else {
                assert_eq!(
                    f, "s",
                    "{case}: batch frame sent without response_batch_size"
                );
            }
        }

        let mut out = Vec::new();
        for s in &got.series {
            // A series' labels are a `Labels`: sorted by name, unique and without empty values by
            // construction, on the wire too (`wire`).
            let labels = s.labels.clone();
            if let Some(prev) = out.last() {
                // Removing replica labels may leave several replicas' series equal in labels (Thanos
                // allows that; the querier deduplicates them): in order, then, but maybe repeated.
                let repeat_ok = !req.without_replica_labels.is_empty() && prev == &labels;
                assert!(
                    prev < &labels || repeat_ok,
                    "{case}: series out of order or repeated: {prev} then {labels}"
                );
            }
            assert!(
                must.contains_key(&labels) || may.contains(&labels),
                "{case}: unexpected series {labels}"
            );
            if req.skip_chunks {
                assert!(
                    s.chunks.is_empty(),
                    "{case}: chunks sent for {labels} despite skip_chunks"
                );
            } else {
                let samples = check_chunks(case, &labels, &s.chunks, mint, maxt);
                let want = must.get(&labels).cloned().unwrap_or_default();
                if samples != want {
                    let first = samples
                        .iter()
                        .zip(&want)
                        .position(|(a, b)| a != b)
                        .unwrap_or(samples.len().min(want.len()));
                    let show = |v: &[Sample]| -> Vec<(i64, u64)> {
                        v.iter()
                            .skip(first)
                            .take(3)
                            .map(|s| (s.t, s.v.to_bits()))
                            .collect()
                    };
                    panic!(
                        "{case}: samples of {labels} in [{mint}, {maxt}] differ from #{first} on: got {} samples, (t, bits) {:?}..., want {} {:?}...",
                        samples.len(),
                        show(&samples),
                        want.len(),
                        show(&want)
                    );
                }
            }
            out.push(labels);
        }
        let returned: BTreeSet<&Labels> = out.iter().collect();
        let limit = usize::try_from(req.limit).unwrap_or(0);
        if limit == 0 {
            for l in must.keys() {
                assert!(returned.contains(l), "{case}: series {l} missing");
            }
        } else {
            assert!(
                out.len() <= limit,
                "{case}: {} series returned, limit {limit}",
                out.len()
            );
        }
        out
    }

    async fn expect_error(
        &self,
        case: &str,
        req: pb::SeriesRequest,
        code: tonic::Code,
    ) -> tonic::Status {
        match self.call_series(req).await {
            Ok(got) => panic!("{case}: expected {code:?}, got {} series", got.series.len()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    code,
                    "{case}: wrong status: {}",
                    meridian_core::error::excerpt(s.message(), 300)
                );
                s
            }
        }
    }

    async fn info(&self) {
        let info = infopb::info_client::InfoClient::new(self.ch.clone())
            .info(infopb::InfoRequest {})
            .await
            .expect("Info")
            .into_inner();
        let want = crate::labels_to_proto(&self.fx.external_labels);
        assert!(
            info.label_sets.iter().any(|ls| ls.labels == want),
            "Info: external labels {} not among label sets {:?}",
            self.fx.external_labels,
            info.label_sets
        );
        assert!(!info.component_type.is_empty(), "Info: empty ComponentType");
        let store = info
            .store
            .expect("Info: no StoreInfo although the Store API is served");
        assert!(
            store.supports_without_replica_labels,
            "Info: without_replica_labels not advertised"
        );
        let first = self
            .fx
            .series
            .iter()
            .filter_map(|s| s.1.first())
            .map(|s| s.t)
            .min()
            .unwrap();
        let last = self
            .fx
            .series
            .iter()
            .filter_map(|s| s.1.last())
            .map(|s| s.t)
            .max()
            .unwrap();
        assert!(
            store.min_time <= first && store.max_time >= last,
            "Info: time range [{}, {}] does not cover the data [{first}, {last}]",
            store.min_time,
            store.max_time
        );
    }

    async fn series_matchers(&self) {
        let n = |v: &str| m(EQ, "__name__", v);
        let cases: Vec<(&str, Vec<Matcher>, usize)> = vec![
            ("all by name regex", vec![m(RE, "__name__", ".+")], 10),
            (
                "all by empty-matching regex",
                vec![m(RE, "__name__", ".*")],
                10,
            ),
            ("equal", vec![n("up")], 3),
            ("not equal", vec![n("up"), m(NEQ, "job", "api")], 1),
            (
                "regex alternation",
                vec![m(RE, "__name__", "up|node_info")],
                4,
            ),
            ("regex prefix", vec![n("up"), m(RE, "instance", "a.*")], 1),
            (
                "regex is anchored",
                vec![n("up"), m(RE, "instance", "a")],
                0,
            ),
            (
                "negative regex",
                vec![n("up"), m(NRE, "instance", "a:.*|b:.*")],
                1,
            ),
            (
                "empty value selects absent label",
                vec![m(EQ, "job", "api"), m(EQ, "code", "")],
                4,
            ),
            (
                "not-empty selects present label",
                vec![m(EQ, "job", "api"), m(NEQ, "code", "")],
                2,
            ),
            (
                "regex .+ selects present label",
                vec![m(EQ, "job", "api"), m(RE, "code", ".+")],
                2,
            ),
            (
                "negative regex .+ selects absent label",
                vec![m(EQ, "job", "api"), m(NRE, "code", ".+")],
                4,
            ),
            (
                "value with , = } and quote",
                vec![m(EQ, "path", "/a,b=c}\"q")],
                1,
            ),
            ("dot matches newline", vec![m(RE, "multi", "a.b")], 1),
            ("\\d is ASCII as in Go", vec![m(RE, "digit", "\\d")], 0),
            ("\\w is ASCII as in Go", vec![m(RE, "uni", "\\w")], 0),
            ("\\W matches non-ASCII", vec![m(RE, "uni", "\\W")], 1),
            (
                "case-insensitive flag",
                vec![m(RE, "__name__", "(?i)UP")],
                3,
            ),
            (
                "metric name with colons",
                vec![m(RE, "__name__", "foo:bar:.*")],
                1,
            ),
            (
                "external label equal",
                vec![m(EQ, "region", "eu-west"), n("up")],
                3,
            ),
            (
                "external label overrides series label",
                vec![m(EQ, "region", "us-east"), n("own_region")],
                0,
            ),
            (
                "external label regex",
                vec![m(RE, "region", "eu-.*"), n("own_region")],
                1,
            ),
            (
                "external label not equal",
                vec![m(NEQ, "replica", "r1"), n("up")],
                0,
            ),
            (
                "external label not empty",
                vec![m(NEQ, "region", ""), n("up")],
                3,
            ),
            (
                "missing label equal",
                vec![n("up"), m(EQ, "nonexistent", "x")],
                0,
            ),
            (
                "missing label not equal",
                vec![n("up"), m(NEQ, "nonexistent", "x")],
                3,
            ),
            ("unknown metric", vec![n("absent_metric")], 0),
        ];
        for (case, matchers, count) in cases {
            let got = self.check_series(case, Self::req(&matchers, ALL)).await;
            assert_eq!(
                got.len(),
                count,
                "{case}: {} series, want {count}: {got:?}",
                got.len()
            );
        }
        // Every label set carries the external labels.
        for l in self
            .check_series("external labels added", Self::req(&[n("own_region")], ALL))
            .await
        {
            assert_eq!(
                l.get("region"),
                Some("eu-west"),
                "external label region missing on {l}"
            );
            assert_eq!(
                l.get("replica"),
                Some("r1"),
                "external label replica missing on {l}"
            );
        }
        // Stale markers and special floats arrive bit-exactly (checked inside verify; asserted here too).
        let req = Self::req(&[n("weird_values")], ALL);
        let got = self.call_series(req).await.unwrap();
        let s = &got.series[0];
        let vals: Vec<u64> = s
            .chunks
            .iter()
            .flat_map(|c| decode(&c.raw.as_ref().unwrap().data))
            .map(|s| s.v.to_bits())
            .collect();
        assert!(
            vals.contains(&meridian_core::sample::STALE_NAN_BITS),
            "stale marker not preserved: {vals:x?}"
        );
    }

    async fn series_time_ranges(&self) {
        let n = |v: &str| m(EQ, "__name__", v);
        let cases: Vec<(&str, Vec<Matcher>, (i64, i64), Option<usize>)> = vec![
            (
                "range after a series ended",
                vec![m(EQ, "job", "db")],
                (T0 + 1000 * S, T0 + 2000 * S),
                Some(0),
            ),
            (
                "range clips to overlapping chunks",
                vec![n("up")],
                (T0 + 600 * S, T0 + 900 * S),
                Some(3),
            ),
            (
                "range before a series started",
                vec![n("late_metric")],
                (T0, T0 + 4999 * S),
                Some(0),
            ),
            (
                "single-point range",
                vec![n("late_metric")],
                (T0 + 5000 * S, T0 + 5000 * S),
                Some(1),
            ),
            (
                "range before all data",
                vec![m(RE, "__name__", ".+")],
                (T0 - 7200 * S, T0 - 1),
                Some(0),
            ),
            (
                "range after all data",
                vec![m(RE, "__name__", ".+")],
                (T0 + 7200 * S, T0 + 9000 * S),
                Some(0),
            ),
            // Between two samples of multi-chunk series: a store may or may not return them (their chunk
            // spans the range), but never a sample outside.
            (
                "range between samples",
                vec![n("up")],
                (T0 + 3000 * S + 1, T0 + 3015 * S - 3),
                None,
            ),
            (
                "range in the middle",
                vec![m(RE, "__name__", ".+")],
                (T0 + 2000 * S, T0 + 3500 * S),
                None,
            ),
        ];
        for (case, matchers, range, count) in cases {
            let got = self.check_series(case, Self::req(&matchers, range)).await;
            if let Some(c) = count {
                assert_eq!(
                    got.len(),
                    c,
                    "{case}: {} series, want {c}: {got:?}",
                    got.len()
                );
            }
        }
    }

    async fn series_features(&self) {
        let all = vec![m(RE, "__name__", ".+")];
        let full = self.check_series("all", Self::req(&all, ALL)).await;

        let mut r = Self::req(&[m(EQ, "job", "api")], ALL);
        let with = self.check_series("job=api", r.clone()).await;
        r.skip_chunks = true;
        let without = self.check_series("skip_chunks", r).await;
        assert_eq!(with, without, "skip_chunks: different series");

        for limit in [1, 3, 10, 1000] {
            let mut r = Self::req(&all, ALL);
            r.limit = limit;
            let case = format!("limit {limit}");
            let got = self.check_series(&case, r).await;
            let want = &full[..full.len().min(limit as usize)];
            assert_eq!(got, want, "{case}: not the first {limit} series");
        }

        for batch in [1, 2, 3, 1000] {
            let mut r = Self::req(&all, ALL);
            r.response_batch_size = batch;
            let case = format!("response_batch_size {batch}");
            let got = self.check_series(&case, r).await;
            assert_eq!(got, full, "{case}: batched answer differs");
        }

        for (case, without, gone) in [
            ("without replica", vec!["replica"], vec!["replica"]),
            (
                "without two external labels",
                vec!["region", "replica"],
                vec!["region", "replica"],
            ),
            (
                "without a non-external label keeps it",
                vec!["replica", "job"],
                vec!["replica"],
            ),
        ] {
            let mut r = Self::req(&all, ALL);
            r.without_replica_labels = without.iter().map(|s| s.to_string()).collect();
            let got = self.check_series(case, r).await;
            assert_eq!(got.len(), full.len(), "{case}: series count");
            for l in &got {
                for g in &gone {
                    assert!(!l.has(g), "{case}: {g} still on {l}");
                }
                assert!(l.has("job"), "{case}: job removed from {l}");
            }
        }

        // Combined: replica removed, batched, limited.
        let mut r = Self::req(&all, ALL);
        r.without_replica_labels = vec!["replica".into()];
        r.response_batch_size = 2;
        r.limit = 5;
        let got = self
            .check_series("without replica, batched, limited", r)
            .await;
        let want: Vec<Labels> = full
            .iter()
            .take(5)
            .map(|l| l.without(&["replica"]))
            .collect();
        assert_eq!(got, want, "without replica, batched, limited");
    }

    async fn series_errors(&self) {
        let bad = tonic::Code::InvalidArgument;
        // Sent raw: a Matcher cannot even be built from it.
        let mut r = Self::req(&[m(EQ, "job", "api")], ALL);
        r.matchers.push(pb::LabelMatcher {
            r#type: pb::label_matcher::Type::Re as i32,
            name: "__name__".into(),
            value: "(".into(),
        });
        self.expect_error("invalid regex", r, bad).await;
        // A megabyte of bad pattern is still a bad argument, with a message of bounded size (it once
        // came back as an 875 KB grpc-message, and so as RESOURCE_EXHAUSTED).
        let mut r = Self::req(&[m(EQ, "job", "api")], ALL);
        r.matchers.push(pb::LabelMatcher {
            r#type: pb::label_matcher::Type::Re as i32,
            name: "__name__".into(),
            value: format!("({}", "a".repeat(1 << 20)),
        });
        let status = self.expect_error("a 1 MiB invalid regex", r, bad).await;
        assert!(
            status.message().len() <= meridian_core::error::MAX_GRPC_MESSAGE_BYTES + 64,
            "a 1 MiB regex came back as a {}-byte message",
            status.message().len()
        );
        self.expect_error(
            "only external-label matchers",
            Self::req(&[m(EQ, "region", "eu-west")], ALL),
            bad,
        )
        .await;
        self.expect_error("no matchers", Self::req(&[], ALL), bad)
            .await;
    }

    async fn label_names(&self) {
        let names = |matchers: &[Matcher], range: (i64, i64), without: &[&str], limit: i64| {
            pb::LabelNamesRequest {
                start: range.0,
                end: range.1,
                matchers: matchers.iter().map(matcher_to_proto).collect(),
                without_replica_labels: without.iter().map(|s| s.to_string()).collect(),
                limit,
                ..Default::default()
            }
        };
        let reference =
            |matchers: &[Matcher], range: (i64, i64), without: &[&str]| -> Vec<String> {
                let without: Vec<String> = without.iter().map(|s| s.to_string()).collect();
                let mut set = BTreeSet::new();
                for (l, smp) in self.reference(matchers, &without) {
                    if smp.iter().any(|s| s.t >= range.0 && s.t <= range.1) {
                        set.extend(l.iter().map(|x| x.name.to_owned()));
                    }
                }
                set.into_iter().collect()
            };
        let call = |req: pb::LabelNamesRequest| {
            let mut c = pb::store_client::StoreClient::new(self.ch.clone());
            async move { c.label_names(req).await.map(|r| r.into_inner()) }
        };
        let up = [m(EQ, "__name__", "up")];
        let exact: Vec<(&str, Vec<Matcher>, (i64, i64), &[&str])> = vec![
            ("label names: all", vec![], ALL, &[]),
            ("label names: matcher", up.to_vec(), ALL, &[]),
            ("label names: without replica", vec![], ALL, &["replica"]),
            (
                "label names: range outside data",
                vec![],
                (T0 + 7200 * S, T0 + 9000 * S),
                &[],
            ),
            (
                "label names: external matcher rejects",
                vec![m(EQ, "region", "us-east")],
                ALL,
                &[],
            ),
            (
                "label names: external matcher accepts",
                vec![m(EQ, "region", "eu-west"), m(EQ, "job", "w")],
                ALL,
                &[],
            ),
        ];
        for (case, matchers, range, without) in exact {
            let got = call(names(&matchers, range, without, 0))
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(got.names, reference(&matchers, range, without), "{case}");
            assert!(
                got.warnings.is_empty(),
                "{case}: warnings {:?}",
                got.warnings
            );
        }
        let all = reference(&[], ALL, &[]);
        assert!(all.contains(&"replica".to_string()) && all.contains(&"__name__".to_string()));
        let got = call(names(&[], ALL, &[], 2)).await.unwrap();
        assert_eq!(got.names, all[..2], "label names: limit 2");
        // Partial range: stores may answer at block granularity; what has data there must be present.
        let late = (T0 + 5000 * S, T0 + 6000 * S);
        let got = call(names(&[], late, &[], 0)).await.unwrap();
        for want in reference(&[], late, &[]) {
            assert!(
                got.names.contains(&want),
                "label names: partial range misses {want}"
            );
        }
        for g in &got.names {
            assert!(
                all.contains(g),
                "label names: partial range has unknown name {g}"
            );
        }
    }

    async fn label_values(&self) {
        let values =
            |label: &str, matchers: &[Matcher], range: (i64, i64), without: &[&str], limit: i64| {
                pb::LabelValuesRequest {
                    label: label.to_owned(),
                    start: range.0,
                    end: range.1,
                    matchers: matchers.iter().map(matcher_to_proto).collect(),
                    without_replica_labels: without.iter().map(|s| s.to_string()).collect(),
                    limit,
                    ..Default::default()
                }
            };
        let reference = |label: &str,
                         matchers: &[Matcher],
                         range: (i64, i64),
                         without: &[&str]|
         -> Vec<String> {
            let without: Vec<String> = without.iter().map(|s| s.to_string()).collect();
            let mut set = BTreeSet::new();
            for (l, smp) in self.reference(matchers, &without) {
                if smp.iter().any(|s| s.t >= range.0 && s.t <= range.1)
                    && let Some(v) = l.get(label)
                {
                    set.insert(v.to_owned());
                }
            }
            set.into_iter().collect()
        };
        let call = |req: pb::LabelValuesRequest| {
            let mut c = pb::store_client::StoreClient::new(self.ch.clone());
            async move { c.label_values(req).await.map(|r| r.into_inner()) }
        };
        let up = [m(EQ, "__name__", "up")];
        let outside = (T0 + 7200 * S, T0 + 9000 * S);
        let exact: Vec<(&str, &str, Vec<Matcher>, (i64, i64), &[&str], usize)> = vec![
            (
                "label values: metric names",
                "__name__",
                vec![],
                ALL,
                &[],
                7,
            ),
            (
                "label values: with matcher",
                "job",
                up.to_vec(),
                ALL,
                &[],
                2,
            ),
            (
                "label values: regex matcher",
                "instance",
                vec![m(RE, "job", "a.i")],
                ALL,
                &[],
                2,
            ),
            (
                "label values: special characters",
                "path",
                vec![],
                ALL,
                &[],
                2,
            ),
            (
                "label values: external label",
                "region",
                vec![],
                ALL,
                &[],
                1,
            ),
            (
                "label values: external label removed",
                "replica",
                vec![],
                ALL,
                &["replica"],
                0,
            ),
            (
                "label values: unknown label",
                "nonexistent",
                vec![],
                ALL,
                &[],
                0,
            ),
            (
                "label values: range outside data",
                "__name__",
                vec![],
                outside,
                &[],
                0,
            ),
            (
                "label values: external matcher rejects",
                "job",
                vec![m(EQ, "region", "us-east")],
                ALL,
                &[],
                0,
            ),
        ];
        for (case, label, matchers, range, without, count) in exact {
            let got = call(values(label, &matchers, range, without, 0))
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let want = reference(label, &matchers, range, without);
            assert_eq!(got.values, want, "{case}");
            assert_eq!(want.len(), count, "{case}: fixture changed?");
        }
        let all = reference("__name__", &[], ALL, &[]);
        let got = call(values("__name__", &[], ALL, &[], 2)).await.unwrap();
        assert_eq!(got.values, all[..2], "label values: limit 2");
        let err = call(values("", &[], ALL, &[], 0))
            .await
            .expect_err("label values: empty name accepted");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "label values: empty name: {err}"
        );
    }

    async fn metadata(&self) {
        let info = infopb::info_client::InfoClient::new(self.ch.clone())
            .info(infopb::InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        if info.metric_metadata.is_none() {
            return;
        }
        let call = |metric: &str, limit: i32| {
            let mut c = pb::metadata_client::MetadataClient::new(self.ch.clone());
            let req = pb::MetricMetadataRequest {
                metric: metric.to_owned(),
                limit,
                ..Default::default()
            };
            async move {
                let mut stream = c.metric_metadata(req).await.unwrap().into_inner();
                let mut all: BTreeMap<String, Vec<pb::Meta>> = BTreeMap::new();
                while let Some(f) = stream.next().await {
                    if let Some(pb::metric_metadata_response::Result::Metadata(md)) =
                        f.unwrap().result
                    {
                        for (k, v) in md.metadata {
                            all.entry(k).or_default().extend(v.metas);
                        }
                    }
                }
                all
            }
        };
        assert_eq!(call("", -1).await, self.fx.metadata, "metadata: all");
        let up = call("up", -1).await;
        assert_eq!(
            up.keys().collect::<Vec<_>>(),
            vec!["up"],
            "metadata: one metric"
        );
        assert_eq!(call("", 1).await.len(), 1, "metadata: limit 1");
    }

    async fn without_external_labels(&self) {
        let info = infopb::info_client::InfoClient::new(self.ch.clone())
            .info(infopb::InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            info.label_sets.iter().all(|ls| ls.labels.is_empty()),
            "no external labels, yet Info announces {:?}",
            info.label_sets
        );
        let mut r = Self::req(&[m(EQ, "__name__", "x")], ALL);
        r.without_replica_labels = vec!["replica".into()];
        let got = self
            .check_series("series' own replica label is not removed", r)
            .await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|l| l.has("replica")));
    }

    async fn empty_store(&self) {
        let got = self
            .check_series("empty store", Self::req(&[m(RE, "__name__", ".+")], ALL))
            .await;
        assert!(got.is_empty());
        let mut c = pb::store_client::StoreClient::new(self.ch.clone());
        let names = c
            .label_names(pb::LabelNamesRequest {
                start: ALL.0,
                end: ALL.1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            names.names.is_empty(),
            "empty store has label names {:?}",
            names.names
        );
        let values = c
            .label_values(pb::LabelValuesRequest {
                label: "__name__".into(),
                start: ALL.0,
                end: ALL.1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            values.values.is_empty(),
            "empty store has values {:?}",
            values.values
        );
    }
}

fn decode(data: &[u8]) -> Vec<Sample> {
    XorIterator::new(data)
        .map(|it| it.collect())
        .unwrap_or_default()
}

/// Checks a series' chunks and returns its distinct samples within `[mint, maxt]`, in time order.
fn check_chunks(
    case: &str,
    labels: &Labels,
    chunks: &[pb::AggrChunk],
    mint: i64,
    maxt: i64,
) -> Vec<Sample> {
    assert!(!chunks.is_empty(), "{case}: {labels} has no chunks");
    let mut prev_min = i64::MIN;
    let mut out: Vec<Sample> = Vec::new();
    for c in chunks {
        assert!(
            c.min_time >= prev_min,
            "{case}: chunks of {labels} not sorted by min_time"
        );
        prev_min = c.min_time;
        assert!(
            c.min_time <= maxt && c.max_time >= mint,
            "{case}: chunk [{}, {}] of {labels} outside [{mint}, {maxt}]",
            c.min_time,
            c.max_time
        );
        let raw = c
            .raw
            .as_ref()
            .unwrap_or_else(|| panic!("{case}: chunk of {labels} without raw data"));
        assert_eq!(
            raw.r#type,
            pb::chunk::Encoding::Xor as i32,
            "{case}: chunk encoding"
        );
        if raw.hash != 0 {
            assert_eq!(
                raw.hash,
                xxhash_rust::xxh64::xxh64(&raw.data, 0),
                "{case}: chunk hash"
            );
        }
        let mut it = XorIterator::new(&raw.data)
            .unwrap_or_else(|e| panic!("{case}: chunk of {labels}: {e}"));
        let smp: Vec<Sample> = it.by_ref().collect();
        assert_eq!(it.err(), None, "{case}: chunk of {labels} does not decode");
        assert!(!smp.is_empty(), "{case}: empty chunk in {labels}");
        assert_eq!(
            (smp[0].t, smp[smp.len() - 1].t),
            (c.min_time, c.max_time),
            "{case}: chunk times of {labels} do not match its samples"
        );
        out.extend(smp.into_iter().filter(|s| s.t >= mint && s.t <= maxt));
    }
    out.sort_by_key(|s| s.t);
    // Overlapping chunks (e.g. head and block) may repeat a sample; identical repeats count once.
    out.dedup();
    out
}
