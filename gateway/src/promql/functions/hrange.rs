//! Range functions over windows that hold native histograms, as Prometheus 3 evaluates them
//! (`promql/functions.go`, commit d15adb9): `rate`/`increase`/`delta` (`histogramRate`: the last
//! histogram minus the first at the coarsest schema, every reset adding back the histogram before
//! it), `irate`/`idelta`, `resets`/`changes` over floats and histograms in time order, and
//! `sum_over_time`/`avg_over_time`. A window that mixes floats and histograms gives nothing for
//! the functions that cannot mix them.

use std::sync::Arc;

use meridian_core::histogram::ops::KahanSum;
use meridian_core::histogram::{CounterResetHint, FloatHistogram};

use super::*;
use crate::queryable::HPoint;

/// This family's function `c` (window functions that take floats and histograms alike), or `None`
/// when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
        "first_over_time" | "last_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let first = name == "first_over_time";
            // The earliest (latest) sample, float or histogram.
            over_range_h(&ev.guard, &rv, s, true, |w, hw, _| {
                let f = if first { w.first() } else { w.last() };
                let h = if first { hw.first() } else { hw.last() };
                match (f, h) {
                    (Some(f), Some(h)) if (h.t < f.t) == first => Some(Elem::H(h.h.clone())),
                    (Some(f), _) => Some(Elem::F(f.v)),
                    (None, Some(h)) => Some(Elem::H(h.h.clone())),
                    (None, None) => None,
                }
            })
        }
        "present_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range_h(&ev.guard, &rv, s, false, |_, _, _| Some(Elem::F(1.0)))
        }
        _ => return Ok(None),
    };
    value.map(Some)
}

/// Applies a window function that sees floats and histograms to every series at every step.
pub(super) fn over_range_h(
    guard: &Guard,
    rv: &RangeVal,
    s: &Steps,
    keep_name: bool,
    mut f: impl FnMut(&[Sample], &[HPoint], usize) -> Option<Elem>,
) -> Result<Val> {
    let mut rows = Vec::with_capacity(rv.series.len());
    for k in 0..rv.series.len() {
        guard.tick(s.n)?;
        let labels = if keep_name {
            rv.series[k].0.clone()
        } else {
            drop_name(&rv.series[k].0)
        };
        let mut row = Row::new(labels, s.n);
        for i in 0..s.n {
            let (w, hw) = (rv.window(k, i), rv.hwindow(k, i));
            guard.tick(w.len() + hw.len())?;
            if w.is_empty() && hw.is_empty() {
                continue;
            }
            if let Some(e) = f(w, hw, i) {
                row.set_elem(i, e);
            }
        }
        if row.any() {
            rows.push(row);
        }
    }
    Ok(Val::Vector(merge_rows(rows)?))
}

/// `rate`, `increase` or `delta` of a window of histograms (at least two), extrapolated as the float
/// version is; `None` when the histograms cannot be combined.
pub(super) fn histogram_rate(
    hw: &[HPoint],
    end: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<FloatHistogram> {
    let first = &hw[0];
    let last = &hw[hw.len() - 1];
    let mut prev: FloatHistogram = (*first.h).clone();
    if counter && hw[1].h.detect_reset(&first.h) {
        // A reset right after the first sample: the first one's layout does not matter.
        prev = FloatHistogram {
            schema: hw[1].h.schema,
            custom_values: hw[1].h.custom_values.clone(),
            ..FloatHistogram::default()
        };
    }
    if last.h.uses_custom_buckets() != prev.uses_custom_buckets() {
        return None;
    }
    if hw[1..hw.len() - 1]
        .iter()
        .any(|p| p.h.uses_custom_buckets() != prev.uses_custom_buckets())
    {
        return None;
    }
    let mut h = (*last.h).clone();
    let mut min_schema = last.h.schema.min(prev.schema);
    if counter {
        for p in &hw[1..hw.len() - 1] {
            min_schema = min_schema.min(p.h.schema);
        }
    }
    h.reduce_resolution(min_schema);
    h.sub(&prev).ok()?;
    if counter {
        let mut before = prev;
        for p in &hw[1..] {
            if p.h.detect_reset(&before) {
                h.add(&before).ok()?;
            }
            before = (*p.h).clone();
        }
    }
    h.hint = CounterResetHint::Gauge;
    h.compact();
    let zero =
        (counter && h.count > 0.0 && first.h.count >= 0.0).then_some((first.h.count, h.count));
    let factor = super::rate::extrapolation(first.t, last.t, hw.len() - 1, end, range, zero, rate);
    h.mul(factor);
    // Scaling by a positive factor keeps the gauge hint.
    h.hint = CounterResetHint::Gauge;
    Some(h)
}

/// `irate` or `idelta` over the last two samples (floats or histograms, not one of each).
pub(super) fn instant_value(w: &[Sample], hw: &[HPoint], rate: bool) -> Option<Elem> {
    if w.len() + hw.len() < 2 {
        return None;
    }
    // The last two samples in time order.
    let mut last: Vec<(i64, Option<&Arc<FloatHistogram>>, f64)> = w
        .iter()
        .rev()
        .take(2)
        .map(|x| (x.t, None, x.v))
        .chain(hw.iter().rev().take(2).map(|p| (p.t, Some(&p.h), 0.0)))
        .collect();
    last.sort_by_key(|x| x.0);
    let (a, b) = (&last[last.len() - 2], &last[last.len() - 1]);
    let dt = b.0 - a.0;
    if dt == 0 {
        return None;
    }
    match (a.1, b.1) {
        (None, None) => {
            let v = if rate && b.2 < a.2 { b.2 } else { b.2 - a.2 };
            Some(Elem::F(if rate { v / (dt as f64 / 1000.0) } else { v }))
        }
        (Some(ha), Some(hb)) => {
            let mut h = (**hb).clone();
            if !rate || !hb.detect_reset(ha) {
                h.sub(ha).ok()?;
            }
            h.hint = CounterResetHint::Gauge;
            h.compact();
            if rate {
                h.div(dt as f64 / 1000.0);
            }
            Some(Elem::H(Arc::new(h)))
        }
        _ => None,
    }
}

/// `resets` (or `changes`) over floats and histograms in time order; a switch between a float and
/// a histogram counts as one.
pub(super) fn resets_or_changes(w: &[Sample], hw: &[HPoint], changes: bool) -> f64 {
    let (mut i, mut j) = (0, 0);
    let mut prev: Option<(f64, Option<&FloatHistogram>)> = None;
    let mut n = 0.0;
    while i < w.len() || j < hw.len() {
        let cur = if j >= hw.len() || (i < w.len() && w[i].t < hw[j].t) {
            i += 1;
            (w[i - 1].v, None)
        } else {
            j += 1;
            (0.0, Some(&*hw[j - 1].h))
        };
        if let Some(p) = prev {
            let hit = match (p.1, cur.1) {
                (None, None) => {
                    if changes {
                        !(cur.0 == p.0 || (cur.0.is_nan() && p.0.is_nan()))
                    } else {
                        cur.0 < p.0
                    }
                }
                (Some(a), Some(b)) => {
                    if changes {
                        !same_histogram(a, b)
                    } else {
                        b.detect_reset(a)
                    }
                }
                _ => true,
            };
            if hit {
                n += 1.0;
            }
        }
        prev = Some(cur);
    }
    n
}

/// Prometheus' `FloatHistogram.Equals` on compacted histograms: the same layout and the same bits.
pub(crate) fn same_histogram(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.compact();
    b.compact();
    let bits = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    };
    a.schema == b.schema
        && a.count.to_bits() == b.count.to_bits()
        && a.sum.to_bits() == b.sum.to_bits()
        && (!a.uses_custom_buckets() || a.custom_values == b.custom_values)
        && a.zero_threshold == b.zero_threshold
        && a.zero_count.to_bits() == b.zero_count.to_bits()
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && bits(&a.positive_buckets, &b.positive_buckets)
        && bits(&a.negative_buckets, &b.negative_buckets)
}

/// The sum of a window's histograms (`sum_over_time`), or their mean (`avg_over_time`).
pub(super) fn sum_or_avg(hw: &[HPoint], avg: bool) -> Option<FloatHistogram> {
    sum_or_mean(hw.iter().map(|p| &*p.h), avg)
}

/// The sum or the mean of histograms as Prometheus' `sum`/`avg` and `sum_over_time`/`avg_over_time`
/// compute them: Kahan-compensated sums; the mean divides the sum until the sum would overflow and
/// then continues as an incremental mean. `None` when the histograms cannot be added.
pub(crate) fn sum_or_mean<'h>(
    mut hs: impl Iterator<Item = &'h FloatHistogram>,
    avg: bool,
) -> Option<FloatHistogram> {
    let mut sum = KahanSum::new(hs.next()?);
    let mut count = 1.0;
    let mut mean: Option<KahanSum> = None;
    for h in hs {
        count += 1.0;
        if mean.is_none() {
            let mut next = sum.clone();
            next.add(h).ok()?;
            if !avg || !next.has_overflow() {
                sum = next;
                continue;
            }
            let mut m = sum.clone();
            m.div(count - 1.0);
            mean = Some(m);
        }
        let m = mean.as_mut()?;
        m.scale((count - 1.0) / count);
        let mut part = h.clone();
        part.div(count);
        m.add(&part).ok()?;
    }
    let mut out = match mean {
        Some(m) => m.value(),
        None => {
            let mut v = sum.value();
            if avg {
                v.div(count);
            }
            v
        }
    };
    out.compact();
    Some(out)
}
