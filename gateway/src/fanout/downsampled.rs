//! Reading downsampled data (issue 29): which resolution and aggregate a selection asks the stores
//! for, and how aggregate chunks become the samples the engine evaluates.
//!
//! The function the selection feeds (the engine's `func` hint) picks the aggregate, as in Thanos'
//! `aggrsFromFunc` (`pkg/query/querier.go`, thanos-io/thanos `000f8c9`), with three differences that
//! make answers agree with raw data where Thanos' do not:
//!
//! | function | read |
//! |---|---|
//! | `min_over_time`, `min` | min per window |
//! | `max_over_time`, `max` | max per window |
//! | `sum_over_time` | sum per window |
//! | `count_over_time`, `count` | count per window, **weighted**: `count_over_time` adds the counts (raw samples), where Thanos counts windows |
//! | `rate`, `increase`, `irate` | counter, resets applied across chunks |
//! | `resets`, `changes` | **raw data only**: a window's aggregates cannot tell how often a value changed or reset (Thanos answers from the counter, which hides resets) |
//! | anything else, bare selectors, `sum`, `count_values` | sum / count per window (Thanos maps `count_values` to counts) |
//!
//! On aligned windows (range and evaluation times multiples of the resolution, no raw sample on a
//! window's edge) `min/max/sum/count_over_time` equal the raw answer exactly; the others approximate
//! it (a rate's extrapolation sees window ends, an average sees window averages).

use super::*;
use crate::compact::downsample::apply_counter_resets;

/// The aggregate a selection reads from downsampled chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Count,
    Sum,
    Min,
    Max,
    Counter,
    /// Sum / count per window.
    Average,
}

/// How one selection reads the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// `SeriesRequest.max_resolution_window`, ms (0: raw blocks only).
    pub max_resolution: i64,
    /// The aggregate, when downsampled data may come.
    pub want: Option<Want>,
}

impl ReadPlan {
    /// The plan for a selection feeding `func` in a query allowed `max_source_resolution` (ms).
    pub fn new(func: Option<&str>, max_source_resolution: i64) -> ReadPlan {
        let raw = ReadPlan {
            max_resolution: 0,
            want: None,
        };
        if max_source_resolution <= 0 {
            return raw;
        }
        let want = match func.unwrap_or("") {
            "resets" | "changes" | "series" => return raw,
            "min_over_time" | "min" => Want::Min,
            "max_over_time" | "max" => Want::Max,
            "sum_over_time" => Want::Sum,
            "count_over_time" | "count" => Want::Count,
            "rate" | "increase" | "irate" => Want::Counter,
            _ => Want::Average,
        };
        ReadPlan {
            max_resolution: max_source_resolution,
            want: Some(want),
        }
    }

    /// `SeriesRequest.aggregates`.
    pub fn aggregates(&self) -> Vec<i32> {
        let a = match self.want {
            None => return vec![],
            Some(Want::Count) => vec![pb::Aggr::Count],
            Some(Want::Sum) => vec![pb::Aggr::Sum],
            Some(Want::Min) => vec![pb::Aggr::Min],
            Some(Want::Max) => vec![pb::Aggr::Max],
            Some(Want::Counter) => vec![pb::Aggr::Counter],
            Some(Want::Average) => vec![pb::Aggr::Count, pb::Aggr::Sum],
        };
        a.into_iter().map(|x| x as i32).collect()
    }

    /// Each sample stands for this many raw samples (its value), not for one.
    pub fn counts(&self) -> bool {
        self.want == Some(Want::Count)
    }
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("a store sent a corrupt chunk: {e}"))
}

fn xor_samples(data: &[u8]) -> Result<Vec<Sample>> {
    crate::compact::downsample::part_samples(data).map_err(corrupt)
}

fn part<'a>(c: &'a pb::AggrChunk, which: &'a Option<pb::Chunk>, name: &str) -> Result<&'a [u8]> {
    which.as_ref().map(|p| &p.data[..]).ok_or_else(|| {
        Error::internal(format!(
            "a store sent a downsampled chunk ({}..{}) without the {name} aggregate asked for",
            c.min_time, c.max_time
        ))
    })
}

/// One chunk's samples as `want` reads them.
fn chunk_samples(c: &pb::AggrChunk, want: Want) -> Result<Vec<Sample>> {
    if let Some(raw) = &c.raw {
        if raw.r#type != pb::chunk::Encoding::Xor as i32 {
            // Native histograms are read apart (`chunks::decode_histograms`), at raw resolution.
            return Ok(Vec::new());
        }
        let mut s = xor_samples(&raw.data)?;
        if want == Want::Count {
            // A raw sample counts once; a staleness marker stays one.
            for x in &mut s {
                if !meridian_core::sample::is_stale_nan(x.v) {
                    x.v = 1.0;
                }
            }
        }
        return Ok(s);
    }
    match want {
        Want::Count => xor_samples(part(c, &c.count, "count")?),
        Want::Sum => xor_samples(part(c, &c.sum, "sum")?),
        Want::Min => xor_samples(part(c, &c.min, "min")?),
        Want::Max => xor_samples(part(c, &c.max, "max")?),
        Want::Counter => xor_samples(part(c, &c.counter, "counter")?),
        Want::Average => {
            let sum = xor_samples(part(c, &c.sum, "sum")?)?;
            let count = xor_samples(part(c, &c.count, "count")?)?;
            if sum.len() != count.len() {
                return Err(corrupt(format!(
                    "{} sums and {} counts in one downsampled chunk",
                    sum.len(),
                    count.len()
                )));
            }
            Ok(sum
                .iter()
                .zip(&count)
                .map(|(s, n)| Sample::new(s.t, s.v / n.v))
                .collect())
        }
    }
}

/// The samples in `[mint, maxt]` of one copy's chunks, raw or downsampled, read as `want`: sorted by
/// time, a timestamp once. A counter read over aggregate chunks carries resets across chunks
/// (Thanos' `ApplyCounterResetsSeriesIterator`), so its values are a running total.
pub(super) fn decode_aggregates<C: std::borrow::Borrow<pb::AggrChunk>>(
    chunks: &[C],
    mint: i64,
    maxt: i64,
    want: Want,
) -> Result<Vec<Sample>> {
    let mut wanted: Vec<&pb::AggrChunk> = chunks
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|c| c.max_time >= mint && c.min_time <= maxt)
        .collect();
    let aggregated = wanted.iter().any(|c| c.raw.is_none());
    if !aggregated && want != Want::Count {
        // Raw data only (edges, recent blocks): read as ever.
        return super::chunks::decode_range(&wanted, mint, maxt);
    }
    wanted.sort_by_key(|c| (c.min_time, c.max_time));
    let per_chunk = wanted
        .iter()
        .map(|c| chunk_samples(c, want))
        .collect::<Result<Vec<_>>>()?;
    let mut out = if want == Want::Counter {
        let raw_spans: Vec<(i64, i64)> = wanted
            .iter()
            .filter(|c| c.raw.is_some())
            .map(|c| (c.min_time, c.max_time))
            .collect();
        window_ends(apply_counter_resets(&per_chunk).0, &raw_spans)
    } else {
        let mut all: Vec<Sample> = per_chunk.into_iter().flatten().collect();
        all.sort_by_key(|s| s.t);
        all.dedup_by_key(|s| s.t);
        all
    };
    out.retain(|s| s.t >= mint && s.t <= maxt);
    Ok(out)
}

/// A running total read from counter aggregates, at window ends only (and raw chunks' samples, and
/// the series' first and last sample). A counter chunk also holds its first raw value (for reset
/// detection) and, where a chunk ends inside a window, that window's total so far, stamped at its
/// last raw sample; kept, such extra samples make a rate's average sample interval look shorter
/// than the resolution, and its extrapolation stop short of the range's start (1 h data read by
/// `rate(x[6h])` lost ~10 %). The total at the window's end includes them: nothing is lost.
/// `raw_spans`: the time ranges of the raw chunks, in time order (a merge walk, no lookups).
fn window_ends(samples: Vec<Sample>, raw_spans: &[(i64, i64)]) -> Vec<Sample> {
    let last = samples.len().saturating_sub(1);
    let mut span = 0;
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.into_iter().enumerate() {
        while raw_spans.get(span).is_some_and(|r| r.1 < s.t) {
            span += 1;
        }
        let raw = raw_spans.get(span).is_some_and(|r| r.0 <= s.t);
        if i == 0
            || i == last
            || raw
            || (s.t + 1).rem_euclid(crate::compact::downsample::RES_5M) == 0
        {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_pick_their_aggregates() {
        let plan = |f| ReadPlan::new(Some(f), 300_000);
        assert_eq!(plan("min_over_time").want, Some(Want::Min));
        assert_eq!(plan("max").want, Some(Want::Max));
        assert_eq!(plan("sum_over_time").want, Some(Want::Sum));
        assert_eq!(plan("sum").want, Some(Want::Average));
        assert_eq!(plan("count_over_time").want, Some(Want::Count));
        assert_eq!(plan("count_values").want, Some(Want::Average));
        assert_eq!(plan("rate").want, Some(Want::Counter));
        assert_eq!(plan("quantile_over_time").want, Some(Want::Average));
        for raw in ["resets", "changes", "series"] {
            assert_eq!(plan(raw).max_resolution, 0, "{raw}");
            assert!(plan(raw).aggregates().is_empty(), "{raw}");
        }
        assert_eq!(ReadPlan::new(Some("rate"), 0).want, None);
        assert_eq!(
            ReadPlan::new(None, 3_600_000).aggregates(),
            vec![pb::Aggr::Count as i32, pb::Aggr::Sum as i32]
        );
    }
}
