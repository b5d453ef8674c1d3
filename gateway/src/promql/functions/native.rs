//! Native histograms: `histogram_count`, `histogram_sum`, `histogram_avg`, `histogram_stddev`,
//! `histogram_stdvar`, and the native halves of `histogram_quantile(s)` and `histogram_fraction`.
//! Interpolation as Prometheus' `HistogramQuantile` and `HistogramFraction` (`promql/quantile.go`,
//! commit d15adb9): logarithmic inside exponential buckets, linear inside the zero bucket and custom
//! buckets, the zero bucket starting (or ending) at 0 when only one side has buckets.

use meridian_core::histogram::{Bucket, FloatHistogram};

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let f: fn(&FloatHistogram) -> f64 = match c.func.name {
        "histogram_count" => |h| h.count,
        "histogram_sum" => |h| h.sum,
        "histogram_avg" => |h| h.sum / h.count,
        "histogram_stddev" => |h| variance(h).sqrt(),
        "histogram_stdvar" => variance,
        _ => return Ok(None),
    };
    let rows = vector_arg(ev, nth_arg(c, 0)?, s)?;
    Ok(Some(Val::Vector(merge_rows(per_histogram(
        &rows,
        s,
        |h, _| f(h),
    ))?)))
}

/// A row per input series holding histograms: `f` of each histogram, the name dropped.
pub(super) fn per_histogram(
    rows: &[Row],
    s: &Steps,
    f: impl Fn(&FloatHistogram, usize) -> f64,
) -> Vec<Row> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.has_hists()) {
        let mut row = Row::new(drop_name(&r.labels), s.n);
        for i in 0..s.n {
            if let Some(h) = r.hist(i) {
                row.set(i, f(h, i));
            }
        }
        out.push(row);
    }
    out
}

/// The estimated variance of the observations: each bucket's count at its geometric mean (0 in the
/// zero bucket, the arithmetic mean for custom buckets).
fn variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut v, mut c) = (0.0, 0.0);
    for b in h.all_buckets() {
        if b.count == 0.0 {
            continue;
        }
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let g = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 { -g } else { g }
        };
        let d = val - mean;
        (v, c) = crate::promql::aggregate::kahan_inc(b.count * d * d, v, c);
    }
    (v + c) / h.count
}

/// The zero bucket's bounds when only one side has buckets: it starts (or ends) at 0.
fn zero_side(h: &FloatHistogram, b: &mut Bucket) {
    if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
        b.lower = 0.0;
    } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
        b.upper = 0.0;
    }
}

/// The `q`-quantile of the observations (`HistogramQuantile`).
pub(super) fn quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let custom = h.uses_custom_buckets();
    let mut buckets = h.all_buckets();
    // With NaN observations (sum NaN) or a low quantile, count from below; otherwise from above.
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward {
        q * h.count
    } else {
        buckets.reverse();
        (1.0 - q) * h.count
    };
    let mut count = 0.0;
    let mut at = None;
    for (k, b) in buckets.iter().enumerate() {
        at = Some(k);
        if b.count == 0.0 {
            continue;
        }
        count += b.count;
        if count >= rank {
            break;
        }
    }
    let Some(k) = at else {
        return f64::NAN;
    };
    let mut bucket = buckets[k];
    if !custom && bucket.lower < 0.0 && bucket.upper > 0.0 {
        zero_side(h, &mut bucket);
    } else if custom {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return bucket.upper;
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return bucket.lower;
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return f64::NAN;
        }
        return bucket.upper;
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let fraction = rank / bucket.count;
    if custom || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return bucket.lower + (bucket.upper - bucket.lower) * fraction;
    }
    let (lo, hi) = (bucket.lower.abs().log2(), bucket.upper.abs().log2());
    if bucket.lower > 0.0 {
        (lo + (hi - lo) * fraction).exp2()
    } else {
        -(hi + (lo - hi) * (1.0 - fraction)).exp2()
    }
}

/// The share of observations between `lower` and `upper` (`HistogramFraction`).
pub(super) fn fraction(lower: f64, upper: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let custom = h.uses_custom_buckets();
    let buckets = h.all_buckets();
    let (mut count, mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut consumed = buckets.len();
    for (k, b0) in buckets.iter().enumerate() {
        let mut b = *b0;
        count += b.count;
        let zero = b.lower <= 0.0 && b.upper >= 0.0;
        if zero {
            zero_side(h, &mut b);
        }
        let linear = |v: f64| {
            if b.lower == f64::NEG_INFINITY {
                b.count
            } else {
                rank + b.count * (v - b.lower) / (b.upper - b.lower)
            }
        };
        let exponential = |v: f64| {
            let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
            let below = if v > 0.0 {
                (lv - ll) / (lu - ll)
            } else {
                1.0 - (lv - lu) / (ll - lu)
            };
            rank + b.count * below
        };
        let interpolate = |v: f64| {
            if custom || zero {
                linear(v)
            } else {
                exponential(v)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            consumed = k + 1;
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            consumed = k + 1;
            break;
        }
        rank += b.count;
    }
    if h.sum.is_nan() {
        // NaN observations are in no bucket: count only what the buckets hold.
        count += buckets[consumed.min(buckets.len())..]
            .iter()
            .map(|b| b.count)
            .sum::<f64>();
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / h.count
}
