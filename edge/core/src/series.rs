//! The series-source seam: what a store of series (the TSDB, the in-memory store) hands to the layer
//! that serves it. Plain data, no protocol types, so the TSDB does not depend on the StoreAPI.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::labels::Labels;
use crate::matcher::Matcher;

/// A metric family's TYPE/HELP/UNIT, as Prometheus' metadata API and the StoreAPI carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricMeta {
    /// `counter`, `gauge`, `histogram`, `summary`, `info`, `stateset`, `gaugehistogram` or `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// A chunk as a source holds it.
#[derive(Debug, Clone)]
pub struct SourceChunk {
    /// How `data` is encoded: XOR (floats), Prometheus' histogram or float-histogram encoding.
    pub encoding: crate::chunkenc::Encoding,
    /// The time of the first sample (as in Prometheus' chunk metadata). The leaf store relies on it:
    /// a chunk starting inside an instant selector's window supersedes chunks that end before it.
    pub min_time: i64,
    /// Inclusive: the time of the last sample.
    pub max_time: i64,
    /// The XOR chunk bytes; may be empty when the caller did not ask for data.
    pub data: Bytes,
}

/// A series as a source holds it (its own labels, without external labels).
#[derive(Debug, Clone)]
pub struct SourceSeries {
    pub labels: Labels,
    pub chunks: Vec<SourceChunk>,
}

/// Turns a series' own labels into the labels it is served with (external labels applied).
pub type Relabel = Arc<dyn Fn(&Labels) -> Labels + Send + Sync>;

/// Selected series handed out batch by batch, sorted by their served labels, equal ones joined (each
/// series' chunks in time order). Driven on a blocking thread: `next_batch` may read files.
pub trait SeriesCursor: Send {
    /// Up to `max` more series; empty when there are no more.
    fn next_batch(&mut self, max: usize) -> Result<Vec<(Labels, Vec<SourceChunk>)>>;
}

/// A cursor over series already in memory.
#[derive(Debug)]
pub struct VecCursor(std::vec::IntoIter<(Labels, Vec<SourceChunk>)>);

impl VecCursor {
    pub fn new(series: Vec<(Labels, Vec<SourceChunk>)>) -> VecCursor {
        VecCursor(series.into_iter())
    }
}

impl SeriesCursor for VecCursor {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(Labels, Vec<SourceChunk>)>> {
        Ok(self.0.by_ref().take(max).collect())
    }
}

/// Bounds on a selection's work, from [`SeriesSource::cheap_cost`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectCost {
    /// Index entries (series IDs) read.
    pub entries: usize,
    /// Series found, at most.
    pub series: usize,
}

impl SelectCost {
    /// Both bounds added (two indexes: blocks and the head).
    pub fn plus(self, other: SelectCost) -> SelectCost {
        SelectCost {
            entries: self.entries.saturating_add(other.entries),
            series: self.series.saturating_add(other.series),
        }
    }
}

/// Where a store's series come from: the TSDB, a block in the bucket, memory. The StoreAPI's leaf store
/// (`meridian_storeapi::leaf`) serves any of them.
pub trait SeriesSource: Send + Sync + 'static {
    /// Series whose labels satisfy every matcher (no matchers: all series) and that have chunks
    /// overlapping `[mint, maxt]`, with those chunks (data only when `with_data`). Any order.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Result<Vec<SourceSeries>>;

    /// What `select` selects, as a cursor: labels mapped by `relabel`, sorted by them, equal series
    /// joined. The default selects everything at once; sources holding much data override it to read
    /// series batch by batch, without work before the first `next_batch`.
    fn select_sorted(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: Relabel,
    ) -> Result<Box<dyn SeriesCursor>> {
        let all = self
            .select(matchers, mint, maxt, with_data)?
            .into_iter()
            .map(|s| (relabel(&s.labels), s.chunks))
            .collect();
        Ok(Box::new(VecCursor::new(merge_equal_series(all))))
    }

    /// `(min, max)` timestamps of the data; `(i64::MAX, i64::MIN)` when there is none.
    fn time_range(&self) -> (i64, i64);

    /// Bounds on what a selection of `matchers` in `[mint, maxt]` reads and finds, when in-memory
    /// indexes give them cheaply; `None` when they do not. A caller may run a selection this small
    /// where it stands rather than hand it to another thread.
    fn cheap_cost(&self, _matchers: &[Matcher], _mint: i64, _maxt: i64) -> Option<SelectCost> {
        None
    }

    /// TYPE/HELP/UNIT by metric family; `None` when the source serves no metadata.
    fn metadata(&self) -> Option<BTreeMap<String, Vec<MetricMeta>>> {
        None
    }

    /// Whether [`SeriesSource::metadata`] is served (what `Info` announces). Override it where building
    /// the metadata is not cheap: `Info` is polled by every querier.
    fn serves_metadata(&self) -> bool {
        self.metadata().is_some()
    }
}

/// Series sorted by labels, equal ones joined (their chunks in time order).
///
/// The input is usually sorted already (a source's series, or runs of them, one per block): the
/// stable sort detects runs and costs a comparison per series then, where a map would cost a
/// logarithm of them per insertion.
pub fn merge_equal_series<C: TimeSpan>(mut all: Vec<(Labels, Vec<C>)>) -> Vec<(Labels, Vec<C>)> {
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Labels, Vec<C>)> = Vec::with_capacity(all.len());
    let mut joined = false;
    for (labels, chunks) in all {
        match out.last_mut() {
            Some(last) if last.0 == labels => {
                last.1.extend(chunks);
                joined = true;
            }
            _ => out.push((labels, chunks)),
        }
    }
    if joined {
        for (_, chunks) in &mut out {
            chunks.sort_by_key(TimeSpan::span);
        }
    }
    out
}

/// A chunk's first and last sample times (inclusive), by which chunks of one series are ordered.
pub trait TimeSpan {
    fn span(&self) -> (i64, i64);
}

impl TimeSpan for SourceChunk {
    fn span(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }
}
