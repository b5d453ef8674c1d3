//! Native histograms as Prometheus models them (`model/histogram`, v2.42.0): exponential buckets of
//! schema `-4..=8`, a zero bucket, and sparse buckets described by spans.
//!
//! An integer [`Histogram`] keeps its buckets as *spatial deltas* (the first bucket of a side absolute,
//! each later one the difference to the bucket before), as Prometheus does in memory, in chunks and in
//! the WAL. A [`FloatHistogram`] keeps absolute float counts.

mod bounds_table;
pub mod ops;

pub use ops::{Bucket, CUSTOM_BUCKETS_SCHEMA, CombineError, bound};

/// Whether a histogram follows a counter reset (`histogram.CounterResetHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown = 0,
    CounterReset = 1,
    NotCounterReset = 2,
    Gauge = 3,
}

impl CounterResetHint {
    /// The hint of its number (as written in WAL records, remote write and the gateway's cache).
    pub fn from_code(code: i64) -> Option<CounterResetHint> {
        Some(match code {
            0 => CounterResetHint::Unknown,
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => return None,
        })
    }
}

/// A run of consecutive buckets: `offset` is the index of its first bucket for the first span, the gap
/// after the previous span for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// An integer histogram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    /// Spatial deltas (see the module docs).
    pub positive_buckets: Vec<i64>,
    pub negative_buckets: Vec<i64>,
}

/// A histogram with float counts and absolute buckets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    pub positive_buckets: Vec<f64>,
    pub negative_buckets: Vec<f64>,
    /// The upper bounds of custom buckets (schema −53 only: PromQL and tests; never stored in 2.42's
    /// formats).
    pub custom_values: Vec<f64>,
}

/// A native-histogram sample's value: integer counts (as scraped and stored by Prometheus) or float
/// counts (results, remote write of float histograms).
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramValue {
    Int(Histogram),
    Float(FloatHistogram),
}

impl HistogramValue {
    pub fn to_float(&self) -> FloatHistogram {
        match self {
            HistogramValue::Int(h) => h.to_float(),
            HistogramValue::Float(h) => h.clone(),
        }
    }

    pub fn sum(&self) -> f64 {
        match self {
            HistogramValue::Int(h) => h.sum,
            HistogramValue::Float(h) => h.sum,
        }
    }

    pub fn hint(&self) -> CounterResetHint {
        match self {
            HistogramValue::Int(h) => h.hint,
            HistogramValue::Float(h) => h.hint,
        }
    }

    /// Prometheus' validation of the kind of histogram it is.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            HistogramValue::Int(h) => h.validate(),
            HistogramValue::Float(h) => h.validate(),
        }
    }

    /// A hash of every field's bits: equal values give equal fingerprints (the duplicate-sample check
    /// compares these as it compares a float's bits).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut s = std::collections::hash_map::DefaultHasher::new();
        let spans = |sp: &[Span], s: &mut std::collections::hash_map::DefaultHasher| {
            for x in sp {
                (x.offset, x.length).hash(s);
            }
        };
        match self {
            HistogramValue::Int(h) => {
                (0u8, h.hint as u8, h.schema, h.zero_threshold.to_bits()).hash(&mut s);
                (h.zero_count, h.count, h.sum.to_bits()).hash(&mut s);
                spans(&h.positive_spans, &mut s);
                spans(&h.negative_spans, &mut s);
                h.positive_buckets.hash(&mut s);
                h.negative_buckets.hash(&mut s);
            }
            HistogramValue::Float(h) => {
                (1u8, h.hint as u8, h.schema, h.zero_threshold.to_bits()).hash(&mut s);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                (h.zero_count.to_bits(), h.count.to_bits(), h.sum.to_bits()).hash(&mut s);
                spans(&h.positive_spans, &mut s);
                spans(&h.negative_spans, &mut s);
                bits(&h.positive_buckets).hash(&mut s);
                bits(&h.negative_buckets).hash(&mut s);
            }
        }
        s.finish()
    }
}

/// The number of buckets spans describe.
pub fn span_buckets(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.length as usize).sum()
}

/// Absolute counts from spatial deltas.
pub fn cumulate(deltas: &[i64]) -> Vec<f64> {
    let mut acc = 0i64;
    deltas
        .iter()
        .map(|d| {
            acc = acc.wrapping_add(*d);
            acc as f64
        })
        .collect()
}

impl Histogram {
    /// The same histogram with float counts (`ToFloat`).
    pub fn to_float(&self) -> FloatHistogram {
        FloatHistogram {
            hint: self.hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            negative_spans: self.negative_spans.clone(),
            positive_buckets: cumulate(&self.positive_buckets),
            negative_buckets: cumulate(&self.negative_buckets),
            custom_values: Vec::new(),
        }
    }

    /// Empty buckets removed, spans joined (Prometheus' `Compact(0)`), deltas recomputed.
    pub fn compact(&mut self) {
        self.rebuild(|p| p);
    }

    /// The buckets merged down to the coarser schema `target` (`ReduceResolution`).
    pub fn reduce_resolution(&mut self, target: i32) {
        if target >= self.schema {
            return;
        }
        let from = self.schema;
        self.rebuild(|p| {
            let mut out: Vec<(i32, f64)> = Vec::with_capacity(p.len());
            for (idx, c) in p {
                let t = (idx.saturating_sub(1) >> (from - target).clamp(0, 31)).saturating_add(1);
                match out.last_mut() {
                    Some(last) if last.0 == t => last.1 += c,
                    _ => out.push((t, c)),
                }
            }
            out
        });
        self.schema = target;
    }

    /// Rebuilds both sides from their absolute counts (by index) as `f` maps them.
    fn rebuild(&mut self, f: impl Fn(Vec<(i32, f64)>) -> Vec<(i32, f64)>) {
        let side = |spans: &[Span], deltas: &[i64]| -> (Vec<Span>, Vec<i64>) {
            let pairs = f(ops::pairs(spans, &cumulate(deltas)));
            let (spans, abs) = ops::from_pairs(&pairs);
            let mut prev = 0i64;
            let deltas = abs
                .iter()
                .map(|a| {
                    let a = *a as i64;
                    let d = a.wrapping_sub(prev);
                    prev = a;
                    d
                })
                .collect();
            (spans, deltas)
        };
        (self.positive_spans, self.positive_buckets) =
            side(&self.positive_spans, &self.positive_buckets);
        (self.negative_spans, self.negative_buckets) =
            side(&self.negative_spans, &self.negative_buckets);
    }

    /// Prometheus 2.42's `ValidateHistogram`: spans after the first have non-negative offsets, spans
    /// and buckets agree in number, no absolute bucket count is negative, and the buckets do not hold
    /// more observations than `count`.
    pub fn validate(&self) -> Result<(), String> {
        let mut total: u64 = 0;
        for (side, spans, deltas) in [
            ("positive", &self.positive_spans, &self.positive_buckets),
            ("negative", &self.negative_spans, &self.negative_buckets),
        ] {
            check_spans(side, spans, deltas.len())?;
            let mut acc = 0i64;
            for (i, d) in deltas.iter().enumerate() {
                acc = acc
                    .checked_add(*d)
                    .ok_or_else(|| format!("{side} bucket {i}: the count overflows"))?;
                if acc < 0 {
                    return Err(format!("{side} bucket {i} has a negative count: {acc}"));
                }
                total = total.saturating_add(acc as u64);
            }
        }
        if total > self.count {
            return Err(format!(
                "{total} observations found in buckets, but the count is {}",
                self.count
            ));
        }
        Ok(())
    }
}

impl FloatHistogram {
    /// As [`Histogram::validate`] (`ValidateFloatHistogram`).
    pub fn validate(&self) -> Result<(), String> {
        let mut total = 0.0;
        for (side, spans, buckets) in [
            ("positive", &self.positive_spans, &self.positive_buckets),
            ("negative", &self.negative_spans, &self.negative_buckets),
        ] {
            check_spans(side, spans, buckets.len())?;
            for (i, c) in buckets.iter().enumerate() {
                if *c < 0.0 {
                    return Err(format!("{side} bucket {i} has a negative count: {c}"));
                }
                total += c;
            }
        }
        if total > self.count {
            return Err(format!(
                "{total} observations found in buckets, but the count is {}",
                self.count
            ));
        }
        Ok(())
    }
}

/// The largest bucket index accepted (see `check_spans`).
pub const MAX_BUCKET_INDEX: i64 = 1 << 24;

fn check_spans(side: &str, spans: &[Span], buckets: usize) -> Result<(), String> {
    for (i, s) in spans.iter().enumerate().skip(1) {
        if s.offset < 0 {
            return Err(format!(
                "{side} span {i} has a negative offset {}",
                s.offset
            ));
        }
    }
    // Bucket indices stay within what a float64 can need at schema 8 (±2^18 for finite values,
    // with room): an index far outside is no histogram of real observations, and is refused
    // before any arithmetic on it.
    let mut idx: i64 = 0;
    for (i, sp) in spans.iter().enumerate() {
        idx += i64::from(sp.offset) + i64::from(sp.length);
        if idx.abs() > MAX_BUCKET_INDEX {
            return Err(format!(
                "{side} span {i} reaches bucket index {idx}, beyond ±{MAX_BUCKET_INDEX}"
            ));
        }
    }
    let want = span_buckets(spans);
    if want != buckets {
        return Err(format!(
            "{side} spans need {want} buckets, have {buckets} buckets"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn float_conversion_and_validation() {
        let h = Histogram {
            schema: 1,
            count: 15,
            zero_count: 2,
            sum: 18.4,
            positive_spans: vec![
                Span {
                    offset: 0,
                    length: 2,
                },
                Span {
                    offset: 1,
                    length: 2,
                },
            ],
            positive_buckets: vec![1, 1, -1, 0],
            negative_spans: vec![
                Span {
                    offset: 1,
                    length: 1,
                },
                Span {
                    offset: 2,
                    length: 3,
                },
            ],
            negative_buckets: vec![2, 1, -1, -1],
            ..Histogram::default()
        };
        h.validate().unwrap();
        let f = h.to_float();
        assert_eq!(f.positive_buckets, vec![1.0, 2.0, 1.0, 1.0]);
        assert_eq!(f.negative_buckets, vec![2.0, 3.0, 2.0, 1.0]);
        f.validate().unwrap();
        let mut bad = h.clone();
        bad.positive_buckets[1] = -5;
        assert!(bad.validate().unwrap_err().contains("negative count"));
        let mut bad = h.clone();
        bad.count = 3;
        assert!(bad.validate().unwrap_err().contains("observations"));
        let mut bad = h.clone();
        bad.positive_spans[1].offset = -1;
        assert!(bad.validate().unwrap_err().contains("negative offset"));
        let mut bad = h;
        bad.positive_spans[1].offset = i32::MAX;
        assert!(bad.validate().unwrap_err().contains("beyond"));
    }
}
