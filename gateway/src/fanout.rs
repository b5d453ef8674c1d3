//! Fan-out: one question asked of every store that can hold part of the answer, the answers merged.
//!
//! - **Store selection.** A store is asked only when its time range (from `Info`) overlaps the query and
//!   one of its external label sets is compatible with the matchers (a matcher on an external label that
//!   rejects its value rules the store out).
//! - **Parallel calls** with a per-store timeout (`--store.response-timeout`) inside the query deadline.
//! - **Partial response.** With `warn` (the default) a store that fails, times out or is known to be
//!   unhealthy becomes a warning naming its address and the reason, and the answer is built from the
//!   others; with `abort` it fails the query. Bad requests (`bad_data`) and exceeded limits always fail:
//!   they are not the store's fault.
//! - **Limits** on series, samples and bytes fetched per query (`--store.limits.request-*`), counted as
//!   frames arrive, so a query of death ends with a clear error instead of exhausting memory.
//! - **Merge.** Each store's answer is sorted by labels (re-sorted if a store breaks that promise, which
//!   removing replica labels can), then the stores' lists are merged k-way; series equal in labels are
//!   one group. Within a group, copies of one replica's data are joined exactly and HA replicas are
//!   deduplicated ([`crate::dedup::merge_replicas`]).
//!
//! [`Fanout`] serves the StoreAPI itself (`ComponentType` "query", so gateways can be layered) and hands
//! out [`Querier`]s, the [`Queryable`] the PromQL engine reads through.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use meridian_core::chunkenc::{SAMPLES_PER_CHUNK, XorChunk, XorIterator};
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_storeapi::{
    MetadataStream, SeriesFrame, SeriesStream, Store, labels_from_proto, labels_to_proto,
    matcher_to_proto, matchers_from_proto, truncate_to_limit,
};
use tokio::time::Instant;

use crate::dedup::{SeriesKind, kind_of, merge_replicas};
use crate::queryable::{LabelsRequest, Named, Queryable, SelectRequest, Selected, SeriesData};

/// What happens when a store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialResponse {
    /// Answer from the other stores, with a warning naming the store and the reason.
    #[default]
    Warn,
    /// Fail the query.
    Abort,
}

impl PartialResponse {
    /// The strategy a StoreAPI request asks for (`partial_response_disabled` is the older spelling).
    pub fn from_request(disabled: bool, strategy: i32) -> PartialResponse {
        if disabled || strategy == pb::PartialResponseStrategy::Abort as i32 {
            PartialResponse::Abort
        } else {
            PartialResponse::Warn
        }
    }

    /// The StoreAPI enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            PartialResponse::Warn => pb::PartialResponseStrategy::Warn as i32,
            PartialResponse::Abort => pb::PartialResponseStrategy::Abort as i32,
        }
    }
}

impl std::str::FromStr for PartialResponse {
    type Err = String;

    /// `warn`/`true` or `abort`/`false` (Thanos' `--query.partial-response` is a boolean).
    fn from_str(s: &str) -> Result<PartialResponse, String> {
        match s {
            "warn" | "true" => Ok(PartialResponse::Warn),
            "abort" | "false" => Ok(PartialResponse::Abort),
            other => Err(format!(
                "partial response {other:?}: expected warn (true) or abort (false)"
            )),
        }
    }
}

/// Per-query limits on what is fetched from stores; 0 = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub series: u64,
    pub samples: u64,
    pub bytes: u64,
}

/// How the fan-out behaves.
#[derive(Debug, Clone, Default)]
pub struct FanoutOptions {
    /// Per-store answer timeout; `None` = only the query deadline.
    pub store_timeout: Option<Duration>,
    /// The default strategy (`--query.partial-response`).
    pub partial_response: PartialResponse,
    /// `--query.replica-label`: removed (and deduplicated over) when a query deduplicates.
    pub replica_labels: Vec<String>,
    pub limits: Limits,
}

/// What a store announced in `Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMeta {
    pub component_type: String,
    pub label_sets: Vec<Labels>,
    pub min_time: i64,
    pub max_time: i64,
    pub supports_without_replica_labels: bool,
    pub serves_metadata: bool,
}

impl StoreMeta {
    pub fn from_info(info: &infopb::InfoResponse) -> StoreMeta {
        let store = info.store.as_ref();
        StoreMeta {
            component_type: info.component_type.clone(),
            label_sets: info
                .label_sets
                .iter()
                .map(|ls| labels_from_proto(&ls.labels))
                .collect(),
            // A store without the Store API has no data to select.
            min_time: store.map_or(i64::MAX, |s| s.min_time),
            max_time: store.map_or(i64::MIN, |s| s.max_time),
            supports_without_replica_labels: store
                .is_some_and(|s| s.supports_without_replica_labels),
            serves_metadata: info.metric_metadata.is_some(),
        }
    }

    /// Whether the store may hold series matching `matchers` in `[mint, maxt]`.
    pub fn may_match(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> bool {
        if self.min_time > maxt || self.max_time < mint {
            return false;
        }
        if self.label_sets.is_empty() {
            return true;
        }
        self.label_sets.iter().any(|ls| {
            matchers
                .iter()
                .all(|m| ls.get(m.name()).is_none_or(|v| m.matches(v)))
        })
    }
}

/// One store of the set, as the fan-out sees it at the start of a query.
#[derive(Clone)]
pub struct StoreRef {
    /// The address (or another name) used in warnings and errors.
    pub name: String,
    pub store: Arc<dyn Store>,
    /// The last good `Info`; `None` before the first.
    pub meta: Option<StoreMeta>,
    /// Why the store is currently unhealthy (its last `Info` failed); it is not asked then.
    pub unhealthy: Option<String>,
}

/// The stores a fan-out asks: the endpoint set, or a fixed list.
pub trait StoreSet: Send + Sync + 'static {
    fn stores(&self) -> Vec<StoreRef>;

    /// The metadata TYPE of a metric family, when any store announced one (for counter-aware dedup).
    fn metric_type(&self, _metric: &str) -> Option<String> {
        None
    }
}

/// A fixed list of stores (tests, benchmarks, a gateway in front of known stores).
pub struct StaticStores(pub Vec<StoreRef>);

impl StaticStores {
    /// Asks each store for its `Info` once.
    pub async fn probe(stores: Vec<(String, Arc<dyn Store>)>) -> Result<StaticStores> {
        let mut out = Vec::with_capacity(stores.len());
        for (name, store) in stores {
            let info = store.info().await.map_err(|e| e.context(&name))?;
            out.push(StoreRef {
                name,
                store,
                meta: Some(StoreMeta::from_info(&info)),
                unhealthy: None,
            });
        }
        Ok(StaticStores(out))
    }
}

impl StoreSet for StaticStores {
    fn stores(&self) -> Vec<StoreRef> {
        self.0.clone()
    }
}

/// Per-query options chosen by the caller (HTTP parameters, rule evaluation).
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Remove the replica labels and merge replicas (Thanos' `dedup`, default on).
    pub dedup: bool,
    /// Overrides the default strategy.
    pub partial_response: Option<PartialResponse>,
    /// Overrides `--query.replica-label` (Thanos' `replicaLabels[]`).
    pub replica_labels: Option<Vec<String>>,
    /// The query's deadline.
    pub deadline: Option<Instant>,
    /// Thanos' `storeMatch[]`: ask only the stores one of these matcher sets selects.
    pub store_match: Vec<Vec<Matcher>>,
}

/// Which stores a call may ask, and until when.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub deadline: Option<Instant>,
    /// Thanos' `storeMatch[]` (empty = every store): a store is asked when one set's matchers all
    /// match one of its external label sets, with `__address__` standing for the store's address.
    pub store_match: &'a [Vec<Matcher>],
}

impl Scope<'_> {
    fn admits(&self, name: &str, meta: &StoreMeta) -> bool {
        if self.store_match.is_empty() {
            return true;
        }
        let empty = [Labels::empty()];
        let sets: &[Labels] = if meta.label_sets.is_empty() {
            &empty
        } else {
            &meta.label_sets
        };
        self.store_match.iter().any(|ms| {
            sets.iter().any(|ls| {
                ms.iter().all(|m| {
                    if m.name() == "__address__" {
                        m.matches(name)
                    } else {
                        m.matches(ls.get_or_empty(m.name()))
                    }
                })
            })
        })
    }
}

/// What the fan-out records about the stores it asks (self-monitoring).
#[derive(Debug)]
pub struct FanoutMetrics {
    /// Seconds per store call, by store address.
    pub store_duration: prometheus_client::metrics::family::Family<
        StoreLabel,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    /// Failed store calls, by store address.
    pub store_errors: prometheus_client::metrics::family::Family<
        StoreLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Series assembled from more than one store answer (replicas or copies merged).
    pub series_merged: prometheus_client::metrics::counter::Counter,
    /// Series answered, merged or not.
    pub series_total: prometheus_client::metrics::counter::Counter,
}

/// The `store` label of the per-store metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct StoreLabel {
    pub store: String,
}

fn store_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for FanoutMetrics {
    fn default() -> FanoutMetrics {
        FanoutMetrics::new()
    }
}

impl FanoutMetrics {
    pub fn new() -> FanoutMetrics {
        FanoutMetrics {
            store_duration: prometheus_client::metrics::family::Family::new_with_constructor(
                store_histogram,
            ),
            store_errors: Default::default(),
            series_merged: Default::default(),
            series_total: Default::default(),
        }
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register_with_unit(
            "meridian_gateway_store_request_duration",
            "Time to a store's whole answer, by store address",
            prometheus_client::registry::Unit::Seconds,
            self.store_duration.clone(),
        );
        r.register(
            "meridian_gateway_store_request_errors",
            "Store calls that failed or timed out, by store address",
            self.store_errors.clone(),
        );
        r.register(
            "meridian_gateway_dedup_series_merged",
            "Series assembled from more than one store answer (HA replicas or copies merged)",
            self.series_merged.clone(),
        );
        r.register(
            "meridian_gateway_fanout_series",
            "Series the fan-out answered",
            self.series_total.clone(),
        );
    }
}

/// Counts what a query fetched against its limits.
struct Budget {
    limits: Limits,
    series: AtomicU64,
    samples: AtomicU64,
    bytes: AtomicU64,
}

impl Budget {
    fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            series: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn charge(&self, s: &pb::Series) -> Result<()> {
        let mut bytes = s
            .labels
            .iter()
            .map(|l| (l.name.len() + l.value.len()) as u64)
            .sum::<u64>();
        let mut samples = 0u64;
        for c in &s.chunks {
            if let Some(raw) = &c.raw {
                bytes += raw.data.len() as u64;
                // Every chunk encoding of Prometheus starts with its sample count, big-endian u16.
                if raw.data.len() >= 2 {
                    samples += u64::from(u16::from_be_bytes([raw.data[0], raw.data[1]]));
                }
            }
        }
        let check = |counter: &AtomicU64, add: u64, limit: u64, what: &str, flag: &str| {
            let total = counter.fetch_add(add, AtomicOrdering::Relaxed) + add;
            if limit > 0 && total > limit {
                Err(Error::limit(format!(
                    "the query fetched more than {limit} {what} from stores (limit {flag}); \
                     narrow the selectors or the time range"
                )))
            } else {
                Ok(())
            }
        };
        check(
            &self.series,
            1,
            self.limits.series,
            "series",
            "--store.limits.request-series",
        )?;
        check(
            &self.samples,
            samples,
            self.limits.samples,
            "samples",
            "--store.limits.request-samples, by default --query.max-samples",
        )?;
        check(
            &self.bytes,
            bytes,
            self.limits.bytes,
            "bytes",
            "--store.limits.request-bytes",
        )
    }
}

/// One store's answer to `Series`: its series with their labels as the gateway serves them, sorted.
type StoreSeries = Vec<(Labels, pb::Series)>;

/// Series equal in labels from every store (and the store each came from).
struct Group {
    labels: Labels,
    members: Vec<pb::Series>,
}

/// The fan-out over a [`StoreSet`].
pub struct Fanout {
    set: Arc<dyn StoreSet>,
    opts: FanoutOptions,
    metrics: Arc<FanoutMetrics>,
}

impl Fanout {
    pub fn new(set: Arc<dyn StoreSet>, opts: FanoutOptions) -> Fanout {
        Fanout {
            set,
            opts,
            metrics: Arc::new(FanoutMetrics::new()),
        }
    }

    /// Store latencies and errors, merged series (register them to export).
    pub fn metrics(&self) -> &Arc<FanoutMetrics> {
        &self.metrics
    }

    pub fn options(&self) -> &FanoutOptions {
        &self.opts
    }

    pub fn store_set(&self) -> &Arc<dyn StoreSet> {
        &self.set
    }

    /// A [`Queryable`] for one query with these options.
    pub fn querier(self: &Arc<Self>, opts: QueryOptions) -> Querier {
        Querier {
            fanout: self.clone(),
            opts,
            stores_asked: Default::default(),
        }
    }

    /// The stores to ask, and the problems (stores that should be asked but cannot) under `strategy`.
    fn targets(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        strategy: PartialResponse,
        scope: &Scope<'_>,
        wanted: impl Fn(&StoreMeta) -> bool,
    ) -> Result<(Vec<StoreRef>, Vec<String>)> {
        let mut targets = Vec::new();
        let mut warnings = Vec::new();
        for s in self.set.stores() {
            if let Some(meta) = &s.meta
                && !scope.admits(&s.name, meta)
            {
                continue;
            }
            let problem = match (&s.meta, &s.unhealthy) {
                (None, reason) => format!(
                    "{}: not ready (no Info answer yet{})",
                    s.name,
                    reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                (Some(meta), _) if !wanted(meta) || !meta.may_match(matchers, mint, maxt) => {
                    continue;
                }
                (Some(_), Some(reason)) => format!("{}: unhealthy: {reason}", s.name),
                (Some(_), None) => {
                    targets.push(s);
                    continue;
                }
            };
            match strategy {
                PartialResponse::Warn => warnings.push(problem),
                PartialResponse::Abort => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("partial response disabled and a store cannot answer: {problem}"),
                    ));
                }
            }
        }
        Ok((targets, warnings))
    }

    /// Runs `call` on every target in parallel, each within the store timeout, all within the deadline;
    /// failures become warnings or the error, per `strategy`.
    async fn call_all<T, F, Fut>(
        &self,
        targets: &[StoreRef],
        strategy: PartialResponse,
        deadline: Option<Instant>,
        warnings: &mut Vec<String>,
        call: F,
    ) -> Result<Vec<T>>
    where
        F: Fn(&StoreRef) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let store_timeout = self.opts.store_timeout;
        let calls = targets.iter().map(|t| {
            let fut = call(t);
            let metrics = self.metrics.clone();
            async move {
                let started = std::time::Instant::now();
                let label = StoreLabel {
                    store: t.name.clone(),
                };
                let r = match store_timeout {
                    Some(d) => tokio::time::timeout(d, fut).await.unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::Timeout,
                            format!("no answer within {d:?} (--store.response-timeout)"),
                        ))
                    }),
                    None => fut.await,
                };
                metrics
                    .store_duration
                    .get_or_create(&label)
                    .observe(started.elapsed().as_secs_f64());
                if r.is_err() {
                    metrics.store_errors.get_or_create(&label).inc();
                }
                r
            }
        });
        let all = join_all(calls);
        let results = match deadline {
            Some(d) => tokio::time::timeout_at(d, all).await.map_err(|_| {
                Error::new(ErrorKind::Timeout, "query timed out waiting for stores")
            })?,
            None => all.await,
        };
        let mut out = Vec::with_capacity(results.len());
        for (t, r) in targets.iter().zip(results) {
            match r {
                Ok(v) => out.push(v),
                Err(e) if matches!(e.kind, ErrorKind::BadData | ErrorKind::LimitExceeded) => {
                    return Err(e);
                }
                Err(e) => {
                    // Clients already prefix "store <address>: ".
                    let prefix = format!("store {}: ", t.name);
                    let msg = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                    let problem = format!("{}: {msg}", t.name);
                    match strategy {
                        PartialResponse::Warn => warnings.push(problem),
                        PartialResponse::Abort => return Err(Error::new(e.kind, problem)),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fetches `req` from every selected store and groups the series by labels (k-way merge).
    async fn fetch_groups(
        &self,
        req: pb::SeriesRequest,
        strategy: PartialResponse,
        scope: &Scope<'_>,
    ) -> Result<(Vec<Group>, Vec<String>, usize)> {
        let matchers = matchers_from_proto(&req.matchers)?;
        if matchers.is_empty() {
            return Err(Error::bad_data("no matchers specified"));
        }
        let (targets, mut warnings) = self.targets(
            &matchers,
            req.min_time,
            req.max_time,
            strategy,
            scope,
            |_| true,
        )?;
        let budget = Arc::new(Budget::new(self.opts.limits));
        let answers = self
            .call_all(&targets, strategy, scope.deadline, &mut warnings, |t| {
                // Stores that do not support without_replica_labels send those external labels anyway.
                let strip: Vec<String> = match &t.meta {
                    Some(m) if !m.supports_without_replica_labels => req
                        .without_replica_labels
                        .iter()
                        .filter(|l| m.label_sets.iter().any(|ls| ls.has(l)))
                        .cloned()
                        .collect(),
                    _ => vec![],
                };
                fetch_one(t.store.clone(), req.clone(), budget.clone(), strip)
            })
            .await?;
        let mut lists = Vec::with_capacity(answers.len());
        for (list, w) in answers {
            warnings.extend(w);
            lists.push(list);
        }
        let groups = merge_sorted(lists);
        self.metrics.series_total.inc_by(groups.len() as u64);
        self.metrics
            .series_merged
            .inc_by(groups.iter().filter(|g| g.members.len() > 1).count() as u64);
        Ok((groups, warnings, targets.len()))
    }

    fn series_kind(&self, labels: &Labels, func: Option<&str>) -> SeriesKind {
        let name = labels.metric_name().unwrap_or("");
        kind_of(name, self.set.metric_type(name).as_deref(), func)
    }

    /// Asks every selected store `call` and joins the answers' strings (names or values) into one
    /// sorted, deduplicated, limited list; `split` takes a store's answer apart into strings and warnings.
    #[allow(clippy::too_many_arguments)]
    async fn label_query<T, F, Fut>(
        &self,
        matchers: &[pb::LabelMatcher],
        (start, end): (i64, i64),
        (disabled, strategy): (bool, i32),
        limit: i64,
        scope: &Scope<'_>,
        call: F,
        split: fn(T) -> (Vec<String>, Vec<String>),
    ) -> Result<(Vec<String>, Vec<String>)>
    where
        F: Fn(&StoreRef) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let strategy = PartialResponse::from_request(disabled, strategy);
        let matchers = matchers_from_proto(matchers)?;
        let (targets, mut warnings) =
            self.targets(&matchers, start, end, strategy, scope, |_| true)?;
        let answers = self
            .call_all(&targets, strategy, scope.deadline, &mut warnings, call)
            .await?;
        let mut set = BTreeSet::new();
        for a in answers {
            let (strings, w) = split(a);
            set.extend(strings);
            warnings.extend(w);
        }
        let mut out: Vec<String> = set.into_iter().collect();
        truncate_to_limit(&mut out, limit);
        Ok((out, warnings))
    }

    /// `LabelNames` over every store in `scope`.
    pub async fn label_names_with(
        &self,
        req: pb::LabelNamesRequest,
        scope: &Scope<'_>,
    ) -> Result<pb::LabelNamesResponse> {
        let (names, warnings) = self
            .label_query(
                &req.matchers,
                (req.start, req.end),
                (req.partial_response_disabled, req.partial_response_strategy),
                req.limit,
                scope,
                |t| {
                    let (r, store) = (req.clone(), t.store.clone());
                    async move { store.label_names(r).await }
                },
                |a| (a.names, a.warnings),
            )
            .await?;
        Ok(pb::LabelNamesResponse {
            names,
            warnings,
            hints: None,
        })
    }

    /// `LabelValues` over every store in `scope`.
    pub async fn label_values_with(
        &self,
        req: pb::LabelValuesRequest,
        scope: &Scope<'_>,
    ) -> Result<pb::LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::bad_data("label values request without a label name"));
        }
        let (values, warnings) = self
            .label_query(
                &req.matchers,
                (req.start, req.end),
                (req.partial_response_disabled, req.partial_response_strategy),
                req.limit,
                scope,
                |t| {
                    let (r, store) = (req.clone(), t.store.clone());
                    async move { store.label_values(r).await }
                },
                |a| (a.values, a.warnings),
            )
            .await?;
        Ok(pb::LabelValuesResponse {
            values,
            warnings,
            hints: None,
        })
    }
}

async fn fetch_one(
    store: Arc<dyn Store>,
    req: pb::SeriesRequest,
    budget: Arc<Budget>,
    strip: Vec<String>,
) -> Result<(StoreSeries, Vec<String>)> {
    let mut stream = store.series(req).await?;
    let mut out: StoreSeries = Vec::new();
    let mut warnings = Vec::new();
    while let Some(frame) = stream.next().await {
        match frame? {
            SeriesFrame::Series(s) => {
                budget.charge(&s)?;
                let mut labels = labels_from_proto(&s.labels);
                if strip.iter().any(|l| labels.has(l)) {
                    labels = labels.without(&strip);
                }
                out.push((labels, s));
            }
            SeriesFrame::Warning(w) => warnings.push(w),
        }
    }
    if !out.windows(2).all(|w| w[0].0 <= w[1].0) {
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok((out, warnings))
}

/// Heap entry of the k-way merge: the next series of one store's list.
struct Head {
    labels: Labels,
    list: usize,
    series: pb::Series,
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Reversed, so the max-heap pops the smallest labels (then the lowest list) first.
    fn cmp(&self, other: &Head) -> Ordering {
        other
            .labels
            .cmp(&self.labels)
            .then(other.list.cmp(&self.list))
    }
}

/// Merges sorted lists into groups of equal labels, in label order.
fn merge_sorted(lists: Vec<StoreSeries>) -> Vec<Group> {
    let mut iters: Vec<std::vec::IntoIter<(Labels, pb::Series)>> =
        lists.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (list, it) in iters.iter_mut().enumerate() {
        if let Some((labels, series)) = it.next() {
            heap.push(Head {
                labels,
                list,
                series,
            });
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    while let Some(Head {
        labels,
        list,
        series,
    }) = heap.pop()
    {
        if let Some((l, s)) = iters[list].next() {
            heap.push(Head {
                labels: l,
                list,
                series: s,
            });
        }
        match groups.last_mut() {
            Some(g) if g.labels == labels => g.members.push(series),
            _ => groups.push(Group {
                labels,
                members: vec![series],
            }),
        }
    }
    groups
}

/// Decodes one copy's chunks into samples, sorted by time, a timestamp once (its chunks may overlap, like
/// an edge's head and its newest block).
fn decode<C: std::borrow::Borrow<pb::AggrChunk>>(chunks: &[C]) -> Result<Vec<Sample>> {
    decode_range(chunks, i64::MIN, i64::MAX)
}

/// [`decode`] keeping only the samples in `[mint, maxt]`: chunks outside are not decoded, and a chunk's
/// decoding stops at its first sample after `maxt` (an instant query needs a few samples of each
/// 120-sample chunk; storing only those is most of what makes its fetch cheap).
fn decode_range<C: std::borrow::Borrow<pb::AggrChunk>>(
    chunks: &[C],
    mint: i64,
    maxt: i64,
) -> Result<Vec<Sample>> {
    let wanted = |c: &&pb::AggrChunk| c.max_time >= mint && c.min_time <= maxt;
    // Room for the samples expected inside the range (chunk sample counts, pro rata).
    let expected: usize = chunks
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(wanted)
        .filter_map(|c| {
            let raw = c.raw.as_ref()?;
            let n = f64::from(u16::from_be_bytes([*raw.data.first()?, *raw.data.get(1)?]));
            let span = (c.max_time - c.min_time) as f64 + 1.0;
            let inside = (c.max_time.min(maxt) - c.min_time.max(mint)) as f64 + 1.0;
            Some((n * (inside / span).clamp(0.0, 1.0)).ceil() as usize + 1)
        })
        .sum();
    let mut out: Vec<Sample> = Vec::with_capacity(expected);
    let mut sorted = true;
    for c in chunks
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(wanted)
    {
        let Some(raw) = &c.raw else { continue };
        if raw.r#type != pb::chunk::Encoding::Xor as i32 {
            return Err(Error::new(
                ErrorKind::Execution,
                "native histograms are not supported yet (this series has native histogram chunks)",
            ));
        }
        let mut it = XorIterator::new(&raw.data)
            .map_err(|e| Error::internal(format!("a store sent a corrupt chunk: {e}")))?;
        let before = out.last().map(|s| s.t);
        let first = out.len();
        for s in it.by_ref() {
            if s.t > maxt {
                break;
            }
            if s.t >= mint {
                out.push(Sample::new(s.t, s.v));
            }
        }
        if let Some(e) = it.err() {
            return Err(Error::internal(format!(
                "a store sent a corrupt chunk: {e}"
            )));
        }
        if let (Some(b), Some(f)) = (before, out.get(first)) {
            sorted &= f.t > b;
        }
    }
    if !sorted {
        out.sort_by_key(|s| s.t);
        out.dedup_by_key(|s| s.t);
    }
    Ok(out)
}

/// Encodes samples as XOR chunks of up to 120 samples, keeping those that overlap `[mint, maxt]`.
fn encode(samples: &[Sample], mint: i64, maxt: i64) -> Result<Vec<pb::AggrChunk>> {
    let mut out = Vec::new();
    for part in samples.chunks(usize::from(SAMPLES_PER_CHUNK)) {
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            continue;
        };
        if first.t > maxt || last.t < mint {
            continue;
        }
        let mut c = XorChunk::new();
        for s in part {
            c.append(s.t, s.v)
                .map_err(|e| Error::internal(format!("re-encoding merged samples: {e}")))?;
        }
        let data = Bytes::from(c.into_bytes());
        out.push(pb::AggrChunk {
            min_time: first.t,
            max_time: last.t,
            raw: Some(pb::Chunk {
                r#type: pb::chunk::Encoding::Xor as i32,
                hash: xxhash_rust::xxh64::xxh64(&data, 0),
                data,
            }),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The chunks of a group's members in time order, identical chunks once, when no two overlap in time
/// (one replica's data split by time, as over edge head and bucket blocks): then they are simply one
/// series. `None` when some overlap.
fn disjoint_chunks(members: &[pb::Series]) -> Option<Vec<&pb::AggrChunk>> {
    let mut all: Vec<&pb::AggrChunk> = members.iter().flat_map(|s| &s.chunks).collect();
    all.sort_by_key(|c| (c.min_time, c.max_time));
    all.dedup_by(|a, b| {
        a.min_time == b.min_time
            && a.max_time == b.max_time
            && a.raw.as_ref().map(|r| &r.data) == b.raw.as_ref().map(|r| &r.data)
    });
    all.windows(2)
        .all(|w| w[1].min_time > w[0].max_time)
        .then_some(all)
}

/// The samples of a group: its members' chunks in order when they do not overlap, otherwise each
/// member decoded and the copies merged ([`merge_replicas`]).
fn group_samples(members: &[pb::Series], kind: SeriesKind) -> Result<Vec<Sample>> {
    if let [one] = members {
        return decode(&one.chunks);
    }
    if let Some(chunks) = disjoint_chunks(members) {
        return decode(&chunks);
    }
    let copies = members
        .iter()
        .map(|m| decode(&m.chunks))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[Sample]> = copies.iter().map(Vec::as_slice).collect();
    Ok(merge_replicas(&refs, kind))
}

/// The chunks of one merged series for the StoreAPI: identical chunks once; chunks of several copies that
/// overlap in time are decoded, merged and re-encoded.
fn merge_chunks(
    members: Vec<pb::Series>,
    kind: SeriesKind,
    mint: i64,
    maxt: i64,
) -> Result<Vec<pb::AggrChunk>> {
    if members.len() == 1 {
        return Ok(members.into_iter().flat_map(|s| s.chunks).collect());
    }
    if let Some(chunks) = disjoint_chunks(&members) {
        return Ok(chunks.into_iter().cloned().collect());
    }
    encode(&group_samples(&members, kind)?, mint, maxt)
}

#[async_trait::async_trait]
impl Store for Fanout {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        let mut label_sets: BTreeSet<Labels> = BTreeSet::new();
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let mut tsdb_infos = Vec::new();
        let mut metadata = false;
        for s in self.set.stores() {
            let Some(meta) = &s.meta else { continue };
            if s.unhealthy.is_some() {
                continue;
            }
            label_sets.extend(meta.label_sets.iter().cloned());
            min_time = min_time.min(meta.min_time);
            max_time = max_time.max(meta.max_time);
            metadata |= meta.serves_metadata;
            for ls in &meta.label_sets {
                tsdb_infos.push(infopb::TsdbInfo {
                    labels: Some(pb::ZLabelSet {
                        labels: labels_to_proto(ls),
                    }),
                    min_time: meta.min_time,
                    max_time: meta.max_time,
                });
            }
        }
        Ok(infopb::InfoResponse {
            label_sets: label_sets
                .iter()
                .filter(|ls| !ls.is_empty())
                .map(|ls| pb::ZLabelSet {
                    labels: labels_to_proto(ls),
                })
                .collect(),
            component_type: "query".into(),
            store: Some(infopb::StoreInfo {
                min_time,
                max_time,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos,
            }),
            metric_metadata: metadata.then_some(infopb::MetricMetadataInfo {}),
            ..Default::default()
        })
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        let strategy = PartialResponse::from_request(
            req.partial_response_disabled,
            req.partial_response_strategy,
        );
        let (mint, maxt, limit, skip) = (req.min_time, req.max_time, req.limit, req.skip_chunks);
        let func = req
            .query_hints
            .as_ref()
            .and_then(|h| h.func.as_ref())
            .map(|f| f.name.clone());
        let (groups, warnings, _) = self.fetch_groups(req, strategy, &Scope::default()).await?;
        let mut frames: Vec<Result<SeriesFrame>> = Vec::with_capacity(groups.len() + 1);
        for g in groups {
            if limit > 0 && frames.len() as i64 >= limit {
                break;
            }
            let kind = self.series_kind(&g.labels, func.as_deref());
            let chunks = if skip {
                vec![]
            } else {
                merge_chunks(g.members, kind, mint, maxt)?
            };
            frames.push(Ok(SeriesFrame::Series(pb::Series {
                labels: labels_to_proto(&g.labels),
                chunks,
            })));
        }
        frames.extend(warnings.into_iter().map(|w| Ok(SeriesFrame::Warning(w))));
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        self.label_names_with(req, &Scope::default()).await
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        self.label_values_with(req, &Scope::default()).await
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        use pb::metric_metadata_response::Result as R;
        let strategy = PartialResponse::from_request(false, req.partial_response_strategy);
        let (targets, mut warnings) =
            self.targets(&[], i64::MIN, i64::MAX, strategy, &Scope::default(), |m| {
                m.serves_metadata
            })?;
        let answers = self
            .call_all(&targets, strategy, None, &mut warnings, |t| {
                let (r, store) = (req.clone(), t.store.clone());
                async move {
                    let mut stream = store.metric_metadata(r).await?;
                    let mut frames = Vec::new();
                    while let Some(f) = stream.next().await {
                        frames.push(f?);
                    }
                    Ok(frames)
                }
            })
            .await?;
        let mut all: BTreeMap<String, Vec<pb::Meta>> = BTreeMap::new();
        for frame in answers.into_iter().flatten() {
            match frame.result {
                Some(R::Metadata(md)) => {
                    for (name, entry) in md.metadata {
                        let metas = all.entry(name).or_default();
                        for m in entry.metas {
                            if !metas.contains(&m) {
                                metas.push(m);
                            }
                        }
                    }
                }
                Some(R::Warning(w)) => warnings.push(w),
                None => {}
            }
        }
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let metadata = all
            .into_iter()
            .take(limit)
            .map(|(name, metas)| (name, pb::MetricMetadataEntry { metas }))
            .collect();
        let mut frames = vec![Ok(pb::MetricMetadataResponse {
            result: Some(R::Metadata(pb::MetricMetadata { metadata })),
        })];
        frames.extend(warnings.into_iter().map(|w| {
            Ok(pb::MetricMetadataResponse {
                result: Some(R::Warning(w)),
            })
        }));
        Ok(Box::pin(futures::stream::iter(frames)))
    }
}

/// The fan-out for one query: what the PromQL engine reads through.
#[derive(Clone)]
pub struct Querier {
    fanout: Arc<Fanout>,
    opts: QueryOptions,
    stores_asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl Querier {
    /// The most stores one selection of this query asked (for the query log).
    pub fn stores_asked(&self) -> usize {
        self.stores_asked.load(AtomicOrdering::Relaxed)
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            deadline: self.opts.deadline,
            store_match: &self.opts.store_match,
        }
    }

    fn strategy(&self) -> PartialResponse {
        self.opts
            .partial_response
            .unwrap_or(self.fanout.opts.partial_response)
    }

    /// The labels removed and merged over: the replica labels when deduplicating, none otherwise.
    fn without(&self) -> Vec<String> {
        if !self.opts.dedup {
            return vec![];
        }
        self.opts
            .replica_labels
            .clone()
            .unwrap_or_else(|| self.fanout.opts.replica_labels.clone())
    }

    fn labels_request_parts(&self, req: &LabelsRequest) -> (Vec<pb::LabelMatcher>, i64) {
        (
            req.matchers.iter().map(matcher_to_proto).collect(),
            i64::try_from(req.limit).unwrap_or(0),
        )
    }
}

#[async_trait::async_trait]
impl Queryable for Querier {
    async fn select(&self, req: SelectRequest) -> Result<Selected> {
        let strategy = self.strategy();
        // Prometheus' hint for lookups that need no samples (`/api/v1/series`).
        let skip_chunks = req.hints.func.as_deref() == Some("series");
        let hints = pb::QueryHints {
            step_millis: req.hints.step_ms,
            func: req
                .hints
                .func
                .as_ref()
                .map(|name| pb::Func { name: name.clone() }),
            range: (req.hints.range_ms > 0).then_some(pb::Range {
                millis: req.hints.range_ms,
            }),
            ..Default::default()
        };
        let sreq = pb::SeriesRequest {
            min_time: req.start,
            max_time: req.end,
            matchers: req.matchers.iter().map(matcher_to_proto).collect(),
            partial_response_strategy: strategy.to_proto(),
            without_replica_labels: self.without(),
            query_hints: Some(hints),
            skip_chunks,
            ..Default::default()
        };
        let (groups, warnings, asked) = self
            .fanout
            .fetch_groups(sreq, strategy, &self.scope())
            .await?;
        self.stores_asked.fetch_max(asked, AtomicOrdering::Relaxed);
        let mut series = Vec::with_capacity(groups.len());
        if skip_chunks {
            series.extend(groups.into_iter().map(|g| SeriesData {
                labels: g.labels,
                samples: vec![],
            }));
            return Ok(Selected { series, warnings });
        }
        for g in groups {
            let kind = self
                .fanout
                .series_kind(&g.labels, req.hints.func.as_deref());
            let decoded = |m: &pb::Series| {
                decode_range(&m.chunks, req.start, req.end).map_err(|e| e.context(&g.labels))
            };
            let samples = if let [one] = &g.members[..] {
                decoded(one)?
            } else {
                let copies = g.members.iter().map(decoded).collect::<Result<Vec<_>>>()?;
                let refs: Vec<&[Sample]> = copies.iter().map(Vec::as_slice).collect();
                merge_replicas(&refs, kind)
            };
            if !samples.is_empty() {
                series.push(SeriesData {
                    labels: g.labels,
                    samples,
                });
            }
        }
        Ok(Selected { series, warnings })
    }

    async fn label_names(&self, req: LabelsRequest) -> Result<Named> {
        let (matchers, limit) = self.labels_request_parts(&req);
        let r = pb::LabelNamesRequest {
            start: req.start,
            end: req.end,
            matchers,
            limit,
            partial_response_strategy: self.strategy().to_proto(),
            without_replica_labels: self.without(),
            ..Default::default()
        };
        let mut r = self.fanout.label_names_with(r, &self.scope()).await?;
        let names = std::mem::take(&mut r.names);
        Ok(Named {
            names,
            warnings: r.warnings,
        })
    }

    async fn label_values(&self, name: &str, req: LabelsRequest) -> Result<Named> {
        let (matchers, limit) = self.labels_request_parts(&req);
        let r = pb::LabelValuesRequest {
            label: name.to_owned(),
            start: req.start,
            end: req.end,
            matchers,
            limit,
            partial_response_strategy: self.strategy().to_proto(),
            without_replica_labels: self.without(),
            ..Default::default()
        };
        let r = self.fanout.label_values_with(r, &self.scope()).await?;
        Ok(Named {
            names: r.values,
            warnings: r.warnings,
        })
    }
}
