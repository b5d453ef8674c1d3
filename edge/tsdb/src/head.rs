//! The in-memory head: recent series and their open XOR chunks, indexed by reference, by label hash
//! and by postings.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::RefMap;
use super::bounds::{MAX_TIMESTAMP, MIN_TIMESTAMP};
use super::postings::{self, Postings};
use super::wal::Record;
pub(crate) use chunk::{Body, split_kinds};

mod chunk;
use meridian_core::chunkenc::{SAMPLES_PER_CHUNK, XorChunk};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;
use meridian_core::series::{SourceChunk, SourceSeries};

/// Why a sample was refused. All but `UnknownRef` and `Storage` are the client's fault (remote_write
/// answers 400 and the sender drops the sample); `Storage` is ours (5xx, the sender retries).
/// `TooOld`, `TooFarInFuture` and `TimestampOutOfRange` are Prometheus' `storage.ErrOutOfBounds`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error(
        "out-of-order sample for {labels}: timestamp {t} is before the series' last sample at {last}"
    )]
    OutOfOrder { labels: String, t: i64, last: i64 },
    #[error("duplicate sample for {labels} at timestamp {t} with a different value")]
    Duplicate { labels: String, t: i64 },
    #[error(
        "sample for {labels} at timestamp {t} is too old: data before {min_valid} is already in blocks"
    )]
    TooOld {
        labels: String,
        t: i64,
        min_valid: i64,
    },
    /// More than the allowed lead (10 min) ahead of the TSDB's clock; see [`super::bounds`].
    #[error(
        "out of bounds: sample for {labels} at timestamp {t} is too far in the future (the latest timestamp accepted now is {max_valid})"
    )]
    TooFarInFuture {
        labels: String,
        t: i64,
        max_valid: i64,
    },
    /// Outside years 1..=9999 (e.g. `i64::MIN`); see [`super::bounds`].
    #[error(
        "out of bounds: sample for {labels} has timestamp {t}, outside the supported range [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}] (years 1 to 9999)"
    )]
    TimestampOutOfRange { labels: String, t: i64 },
    #[error(
        "unknown series reference {0} (the series was removed from the head; resolve its labels again)"
    )]
    UnknownRef(u64),
    #[error("storage: {0}")]
    Storage(String),
    /// A native histogram Prometheus would refuse (`ValidateHistogram`).
    #[error("invalid native histogram for {labels} at timestamp {t}: {reason}")]
    InvalidHistogram {
        labels: String,
        t: i64,
        reason: String,
    },
}

impl AppendError {
    /// Whether the sender is at fault (retrying will not help).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, AppendError::Storage(_) | AppendError::UnknownRef(_))
    }

    /// For Prometheus' out-of-bounds refusals, the `reason` label of
    /// `meridian_tsdb_out_of_bound_samples_total`: `too_old`, `too_far_in_future` or `out_of_range`.
    pub fn out_of_bounds_reason(&self) -> Option<&'static str> {
        match self {
            AppendError::TooOld { .. } => Some("too_old"),
            AppendError::TooFarInFuture { .. } => Some("too_far_in_future"),
            AppendError::TimestampOutOfRange { .. } => Some("out_of_range"),
            _ => None,
        }
    }
}

/// Checks a sample against the previous one of its series: older is out of order, the same time with
/// another value a duplicate, the same sample again is accepted with nothing to store.
pub(crate) fn check_order(
    labels: &Labels,
    s: Sample,
    last: Option<(i64, u64)>,
) -> Result<Accept, AppendError> {
    match last {
        Some((lt, _)) if s.t < lt => Err(AppendError::OutOfOrder {
            labels: labels.to_string(),
            t: s.t,
            last: lt,
        }),
        Some((lt, bits)) if s.t == lt => {
            if bits == s.v.to_bits() {
                Ok(Accept::AlreadyStored)
            } else {
                Err(AppendError::Duplicate {
                    labels: labels.to_string(),
                    t: s.t,
                })
            }
        }
        _ => Ok(Accept::Append),
    }
}

/// What to do with a checked sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    Append,
    /// Same timestamp and same value as the last sample: accepted, nothing to store.
    AlreadyStored,
}

pub(crate) struct HeadChunk {
    pub chunk: Body,
    pub min_t: i64,
    /// The time of the last sample.
    pub max_t: i64,
}

pub(crate) struct MemSeries {
    pub labels: Labels,
    pub chunks: Vec<HeadChunk>,
    /// Time and value bits of the last sample (of a histogram: its fingerprint).
    pub last: Option<(i64, u64)>,
    /// The last histogram appended (not a stale marker), to detect counter resets.
    pub last_hist: Option<std::sync::Arc<meridian_core::histogram::FloatHistogram>>,
    /// Whether the series record is in the WAL.
    pub logged: bool,
    created_gen: u64,
    /// Set when a truncation found the series without data: the WAL segment current then. Its
    /// samples are in segments up to that one, so it stays (in the head and its checkpoints, where
    /// WAL readers find its labels) while a reader still needs such a segment. Cleared by an append.
    linger: Option<u64>,
}

/// What WAL readers (remote-write queues) still need when the head is truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHold {
    /// The segment the WAL is writing now.
    pub segment: u64,
    /// The oldest segment a reader has not finished; `u64::MAX` when nobody reads.
    pub keep_from: u64,
}

impl WalHold {
    /// No reader: series without data leave at once.
    pub const NONE: WalHold = WalHold {
        segment: 0,
        keep_from: u64::MAX,
    };
}

/// See the module documentation.
pub(crate) struct Head {
    /// Indexed by reference (references are dense; removed series leave `None`).
    series: Vec<Option<MemSeries>>,
    live: usize,
    by_hash: RefMap<Vec<u64>>,
    postings: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    next_ref: u64,
    /// Samples before this are refused: their range is already in blocks.
    pub min_valid_time: i64,
    /// Chunks never span a multiple of this (the block range).
    chunk_range: i64,
    max_t: i64,
    generation: u64,
    /// `false` in agent mode: samples go to the WAL only; the head keeps each series' last sample
    /// (for order checks and staleness) and no chunks or postings.
    keep_samples: bool,
}

impl Head {
    pub(crate) fn with_samples(chunk_range: i64, min_valid_time: i64, keep_samples: bool) -> Head {
        Head {
            series: Vec::new(),
            live: 0,
            by_hash: RefMap::default(),
            postings: BTreeMap::new(),
            next_ref: 1,
            min_valid_time,
            chunk_range,
            max_t: i64::MIN,
            generation: 0,
            keep_samples,
        }
    }

    pub(crate) fn num_series(&self) -> usize {
        self.live
    }

    #[inline]
    pub(crate) fn get(&self, r: u64) -> Option<&MemSeries> {
        self.series.get(r as usize)?.as_ref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, r: u64) -> Option<&mut MemSeries> {
        self.series.get_mut(r as usize)?.as_mut()
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &MemSeries)> {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(r, s)| s.as_ref().map(|s| (r as u64, s)))
    }

    pub(crate) fn lookup(&self, labels: &Labels) -> Option<u64> {
        self.by_hash
            .get(&labels.hash_value())?
            .iter()
            .copied()
            .find(|r| self.get(*r).is_some_and(|s| s.labels == *labels))
    }

    /// The series' reference, creating it when new (`true`).
    pub(crate) fn get_or_create(&mut self, labels: &Labels) -> (u64, bool) {
        if let Some(r) = self.lookup(labels) {
            return (r, false);
        }
        let r = self.next_ref;
        self.insert(r, labels.clone());
        (r, true)
    }

    /// Inserts a series under a known reference (WAL replay).
    pub(crate) fn insert(&mut self, r: u64, labels: Labels) {
        if self.get(r).is_some() {
            return;
        }
        self.next_ref = self.next_ref.max(r + 1);
        self.by_hash.entry(labels.hash_value()).or_default().push(r);
        for l in labels.iter().filter(|_| self.keep_samples) {
            let list = self
                .postings
                .entry(l.name.to_owned())
                .or_default()
                .entry(l.value.to_owned())
                .or_default();
            // References grow, so pushing keeps lists sorted except after replay of old references.
            if list.last().is_some_and(|x| *x > r) {
                let at = list.partition_point(|x| *x < r);
                list.insert(at, r);
            } else {
                list.push(r);
            }
        }
        let i = r as usize;
        if self.series.len() <= i {
            self.series.resize_with(i + 1, || None);
        }
        self.series[i] = Some(MemSeries {
            labels,
            chunks: Vec::new(),
            last: None,
            last_hist: None,
            logged: false,
            created_gen: self.generation,
            linger: None,
        });
        self.live += 1;
    }

    /// Checks a sample against the series' last one and the head's valid range (`max_valid`: the latest
    /// timestamp accepted now, see [`Head::check_bounds`]).
    pub(crate) fn check(
        &self,
        r: u64,
        s: Sample,
        last: Option<(i64, u64)>,
        max_valid: i64,
    ) -> Result<Accept, AppendError> {
        let series = self.get(r).ok_or(AppendError::UnknownRef(r))?;
        self.check_bounds(&series.labels, s.t, max_valid)?;
        check_order(&series.labels, s, last.or(series.last))
    }

    /// Checks a timestamp against the valid range: the supported range (years 1..=9999), the data
    /// already in blocks (`min_valid_time`) and `max_valid` (the clock plus the allowed lead).
    pub(crate) fn check_bounds(
        &self,
        labels: &Labels,
        t: i64,
        max_valid: i64,
    ) -> Result<(), AppendError> {
        if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&t) {
            return Err(AppendError::TimestampOutOfRange {
                labels: labels.to_string(),
                t,
            });
        }
        if t < self.min_valid_time {
            return Err(AppendError::TooOld {
                labels: labels.to_string(),
                t,
                min_valid: self.min_valid_time,
            });
        }
        if t > max_valid {
            return Err(AppendError::TooFarInFuture {
                labels: labels.to_string(),
                t,
                max_valid,
            });
        }
        Ok(())
    }

    /// Appends a checked sample; cuts a new chunk at 120 samples or when the sample crosses a block
    /// boundary, so no chunk spans two blocks.
    pub(crate) fn append(&mut self, r: u64, s: Sample) {
        let range = self.chunk_range;
        let Some(series) = self.series.get_mut(r as usize).and_then(Option::as_mut) else {
            return;
        };
        series.linger = None;
        if !self.keep_samples {
            series.last = Some((s.t, s.v.to_bits()));
            self.max_t = self.max_t.max(s.t);
            return;
        }
        let cut = match series.chunks.last() {
            None => true,
            Some(c) => {
                !matches!(c.chunk, Body::Xor(_))
                    || c.chunk.num_samples() >= SAMPLES_PER_CHUNK
                    || s.t.div_euclid(range) != c.min_t.div_euclid(range)
            }
        };
        if cut {
            series.chunks.push(HeadChunk {
                chunk: Body::Xor(XorChunk::with_layout(Default::default(), 160)),
                min_t: s.t,
                max_t: s.t,
            });
        }
        if let Some(c) = series.chunks.last_mut()
            && let Body::Xor(x) = &mut c.chunk
        {
            // 120 samples per chunk is far below the format's 65535.
            let _ = x.append(s.t, s.v);
            c.max_t = s.t;
        }
        series.last = Some((s.t, s.v.to_bits()));
        self.max_t = self.max_t.max(s.t);
    }

    /// The newest sample time appended (agent mode included); `i64::MIN` before any.
    pub(crate) fn max_time(&self) -> i64 {
        self.max_t
    }

    /// `(min, max)` sample times in the head; `(i64::MAX, i64::MIN)` when empty.
    pub(crate) fn time_range(&self) -> (i64, i64) {
        let min = self
            .iter()
            .filter_map(|(_, s)| s.chunks.first().map(|c| c.min_t))
            .min()
            .unwrap_or(i64::MAX);
        if min == i64::MAX {
            (i64::MAX, i64::MIN)
        } else {
            (min, self.max_t)
        }
    }

    /// Series matching `matchers` with chunks overlapping `[mint, maxt]`.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Vec<SourceSeries> {
        let Ok(refs) = postings::select(self, matchers);
        refs.into_iter()
            .filter_map(|r| {
                let labels = &self.get(r)?.labels;
                let chunks = self.series_chunks(r, mint, maxt, with_data)?;
                (!chunks.is_empty()).then(|| SourceSeries {
                    labels: labels.clone(),
                    chunks,
                })
            })
            .collect()
    }

    /// References and labels of the series matching `matchers` with chunks overlapping `[mint, maxt]`
    /// (the plan of a streamed select; chunks are read later with [`Head::series_chunks`]).
    pub(crate) fn select_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(u64, Labels)> {
        let Ok(refs) = postings::select(self, matchers);
        refs.into_iter()
            .filter_map(|r| {
                let s = self.get(r)?;
                s.chunks
                    .iter()
                    .any(|c| c.min_t <= maxt && c.max_t >= mint)
                    .then(|| (r, s.labels.clone()))
            })
            .collect()
    }

    /// The chunks of series `r` overlapping `[mint, maxt]` (bytes copied when `with_data`); `None`
    /// when the series is no longer in the head.
    pub(crate) fn series_chunks(
        &self,
        r: u64,
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> Option<Vec<SourceChunk>> {
        let s = self.get(r)?;
        Some(
            s.chunks
                .iter()
                .filter(|c| c.min_t <= maxt && c.max_t >= mint)
                .map(|c| SourceChunk {
                    encoding: c.chunk.encoding(),
                    min_time: c.min_t,
                    max_time: c.max_t,
                    data: if with_data {
                        Bytes::copy_from_slice(c.chunk.bytes())
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        )
    }

    /// Every series' samples within `[start, end)`, for writing a block.
    pub(crate) fn samples_in(&self, start: i64, end: i64) -> Vec<crate::block::SeriesToWrite> {
        self.iter()
            .filter_map(|(_, s)| {
                let samples: Vec<Sample> = s
                    .chunks
                    .iter()
                    .filter(|c| c.min_t < end && c.max_t >= start)
                    .flat_map(|c| c.chunk.floats())
                    .filter(|x| x.t >= start && x.t < end)
                    .collect();
                // Histogram chunks go into the block as they are (a head chunk never spans a
                // block boundary).
                let encoded: Vec<crate::blockwriter::OwnedChunk> = s
                    .chunks
                    .iter()
                    .filter(|c| !matches!(c.chunk, Body::Xor(_)))
                    .filter(|c| c.min_t >= start && c.max_t < end)
                    .map(|c| crate::blockwriter::OwnedChunk {
                        min_time: c.min_t,
                        max_time: c.max_t,
                        encoding: c.chunk.encoding() as u8,
                        data: c.chunk.bytes().to_vec(),
                    })
                    .collect();
                (!samples.is_empty() || !encoded.is_empty())
                    .then(|| (s.labels.clone(), samples, encoded))
            })
            .collect()
    }

    /// Drops data before `before` (now in blocks) and series left without data; refuses samples before it
    /// from now on. Series created since the previous truncation are kept even when empty (an appender
    /// may hold their reference), and so are series whose samples are in WAL segments a reader still
    /// needs (`hold`; see `MemSeries::linger`). In agent mode (no chunks) a series is without data
    /// when its last sample is before `before`, and samples before it stay accepted.
    pub(crate) fn truncate(&mut self, before: i64, hold: WalHold) {
        if self.keep_samples {
            self.min_valid_time = self.min_valid_time.max(before);
        }
        let mut removed = Vec::new();
        for (r, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            s.chunks.retain(|c| c.max_t >= before);
            let empty = if self.keep_samples {
                s.chunks.is_empty()
            } else {
                s.last.is_none_or(|(t, _)| t < before)
            };
            if empty && (s.last.is_some() || s.created_gen < self.generation) {
                let last_segment = *s.linger.get_or_insert(hold.segment);
                if last_segment < hold.keep_from {
                    removed.push(r as u64);
                }
            }
        }
        for r in removed {
            if let Some(s) = self.series.get_mut(r as usize).and_then(Option::take) {
                self.live -= 1;
                if let Some(v) = self.by_hash.get_mut(&s.labels.hash_value()) {
                    v.retain(|x| *x != r);
                }
                for l in s.labels.iter() {
                    if let Some(values) = self.postings.get_mut(l.name) {
                        if let Some(list) = values.get_mut(l.value) {
                            list.retain(|x| *x != r);
                            if list.is_empty() {
                                values.remove(l.value);
                            }
                        }
                        if values.is_empty() {
                            self.postings.remove(l.name);
                        }
                    }
                }
            }
        }
        self.generation += 1;
    }

    /// The head as WAL records (for a checkpoint). In agent mode each series' last sample stands for
    /// its samples, so order checks hold across a restart.
    pub(crate) fn records(&self) -> Vec<Record> {
        let series: Vec<(u64, Labels)> = self.iter().map(|(r, s)| (r, s.labels.clone())).collect();
        if !self.keep_samples {
            let last = self
                .iter()
                .filter_map(|(r, s)| s.last.map(|(t, v)| (r, Sample::new(t, f64::from_bits(v)))))
                .collect();
            return vec![Record::Series(series), Record::Samples(last)];
        }
        let samples: Vec<(u64, Sample)> = self
            .iter()
            .flat_map(|(r, s)| {
                s.chunks
                    .iter()
                    .flat_map(move |c| c.chunk.floats().map(move |x| (r, x)))
            })
            .collect();
        let (ints, floats) = chunk::split_kinds(self.iter().flat_map(|(r, s)| {
            s.chunks.iter().flat_map(move |c| {
                c.chunk
                    .histograms()
                    .into_iter()
                    .map(move |(t, h)| (r, t, h))
            })
        }));
        vec![
            Record::Series(series),
            Record::Samples(samples),
            Record::Histograms(ints),
            Record::FloatHistograms(floats),
        ]
    }

    /// Approximate memory held by the head: per series its struct, label text and chunk buffers.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.iter()
            .map(|(_, s)| {
                std::mem::size_of::<MemSeries>()
                    + s.labels.text_len()
                    + s.labels.len() * 8
                    + s.chunks
                        .iter()
                        .map(|c| std::mem::size_of::<HeadChunk>() + c.chunk.bytes().len())
                        .sum::<usize>()
            })
            .sum()
    }
}

impl Postings for Head {
    type Error = std::convert::Infallible;

    fn values(&self, name: &str) -> Vec<&str> {
        self.postings
            .get(name)
            .map(|v| v.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn list(&self, name: &str, value: &str) -> Result<Vec<u64>, Self::Error> {
        Ok(self
            .postings
            .get(name)
            .and_then(|v| v.get(value))
            .cloned()
            .unwrap_or_default())
    }

    fn all(&self) -> Result<Vec<u64>, Self::Error> {
        Ok(self.iter().map(|(r, _)| r).collect())
    }

    fn count(&self, name: &str, value: &str) -> Result<usize, Self::Error> {
        Ok(self
            .postings
            .get(name)
            .and_then(|v| v.get(value))
            .map_or(0, Vec::len))
    }
}
