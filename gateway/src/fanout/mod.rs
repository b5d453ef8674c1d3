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
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use meridian_core::chunkenc::{SAMPLES_PER_CHUNK, XorChunk, XorIterator};
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;
use meridian_storeapi::info::InfoBuilder;
use meridian_storeapi::partial::PartialResponse;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use meridian_storeapi::{
    MetadataStream, SeriesFrame, SeriesStream, Store, labels_from_proto, matcher_to_proto,
    matchers_from_proto, truncate_to_limit,
};
use tokio::time::Instant;

use crate::dedup::{SeriesKind, kind_of, merge_replicas};
use crate::queryable::{LabelsRequest, Named, Queryable, SelectRequest, Selected, SeriesData};

mod budget;
mod call;
mod chunks;
mod downsampled;
mod merge;
mod metrics;
mod querier;
mod storeapi;
use budget::*;
use chunks::*;
pub use downsampled::{ReadPlan, Want};
use merge::*;
pub use metrics::*;
pub use querier::*;

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

impl std::fmt::Debug for StoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRef").finish_non_exhaustive()
    }
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
#[derive(Debug)]
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
    /// Thanos' `max_source_resolution`, ms: the coarsest downsampled data a selection may read
    /// (0: raw data only).
    pub max_source_resolution: i64,
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

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").finish_non_exhaustive()
    }
}
