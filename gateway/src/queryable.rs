//! The seam between the PromQL engine and the data: like Prometheus' `storage.Queryable`, the engine asks
//! for the samples of the series that match some selectors in a time range and never learns where they
//! come from. The fan-out over the endpoint set (with replica deduplication) implements it; so can
//! anything else (tests, the bucket store on its own).

use std::sync::Arc;

use meridian_core::error::Result;
use meridian_core::histogram::FloatHistogram;
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;

/// What the engine knows about a selection (Prometheus' `SelectHints`): it lets stores and dedup choose
/// well, never changes the answer's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// The function the selection feeds (`rate`, `sum_over_time`, ...); counter functions make replica
    /// deduplication counter-aware. `series` (as in Prometheus) asks for labels only: the series may come
    /// without samples.
    pub func: Option<String>,
    /// Query resolution, ms (0 for instant queries).
    pub step_ms: i64,
    /// Range of a matrix selector, ms (0 for vector selectors).
    pub range_ms: i64,
    /// `(step, window)`, ms: the samples are read only at every `step` back from the request's end,
    /// each time the `window` before it (a range query's selector outside subqueries). Stores that
    /// understand it send only those samples (`meridian_storeapi::trim`).
    pub step_windows: Option<(i64, i64)>,
    /// The selection is read once, at its end: only its last sample at most this long (ms) before the
    /// end is used (an instant vector selector's lookback).
    pub last_sample_within: Option<i64>,
}

/// One selection.
#[derive(Debug, Clone)]
pub struct SelectRequest {
    pub matchers: Vec<Matcher>,
    /// Inclusive bounds, ms.
    pub start: i64,
    pub end: i64,
    pub hints: SelectHints,
}

/// One native-histogram sample.
#[derive(Debug, Clone, PartialEq)]
pub struct HPoint {
    pub t: i64,
    pub h: Arc<FloatHistogram>,
}

/// One series and its samples inside the requested range, in time order: float samples (stale markers
/// of histograms among them, as float stale markers) and native-histogram samples, apart as
/// Prometheus' `promql.Series` keeps them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesData {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HPoint>,
    /// Each sample's value is the number of raw samples it stands for (downsampled counts read for
    /// `count_over_time`), not a value of the series.
    pub counts: bool,
}

/// The answer to a selection: series sorted by labels, and warnings (partial responses) to pass on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selected {
    pub series: Vec<SeriesData>,
    pub warnings: Vec<String>,
}

/// A label names or values question.
#[derive(Debug, Clone, Default)]
pub struct LabelsRequest {
    pub matchers: Vec<Matcher>,
    pub start: i64,
    pub end: i64,
    /// 0 = unlimited.
    pub limit: usize,
}

/// Sorted label names or values, and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub names: Vec<String>,
    pub warnings: Vec<String>,
}

/// Where the PromQL engine gets its data from.
#[async_trait::async_trait]
pub trait Queryable: Send + Sync {
    async fn select(&self, req: SelectRequest) -> Result<Selected>;

    async fn label_names(&self, req: LabelsRequest) -> Result<Named>;

    async fn label_values(&self, name: &str, req: LabelsRequest) -> Result<Named>;
}
