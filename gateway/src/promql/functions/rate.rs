//! Rates and trends: `rate`, `increase`, `delta` (extrapolated as Prometheus' `extrapolatedRate`),
//! `irate`, `idelta`, `changes`, `resets`, `deriv`, `predict_linear`,
//! `double_exponential_smoothing`.

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
        "rate" | "increase" | "delta" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let counter = name != "delta";
            let is_rate = name == "rate";
            let (ends, range) = (rv.ends.clone(), rv.range);
            if rv.has_hists() {
                return hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, i| {
                    if !hw.is_empty() && !w.is_empty() {
                        return None;
                    }
                    if hw.len() >= 2 {
                        return hrange::histogram_rate(hw, ends[i], range, counter, is_rate)
                            .map(|h| Elem::H(std::sync::Arc::new(h)));
                    }
                    extrapolated_rate(w, ends[i], range, counter, is_rate).map(Elem::F)
                })
                .map(Some);
            }
            over_range(&ev.guard, &rv, s, false, |w, i| {
                extrapolated_rate(w, ends[i], range, counter, is_rate)
            })
        }
        "irate" | "idelta" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            if rv.has_hists() {
                return hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, _| {
                    hrange::instant_value(w, hw, name == "irate")
                })
                .map(Some);
            }
            over_range(&ev.guard, &rv, s, false, |w, _| {
                if w.len() < 2 {
                    return None;
                }
                let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
                if name == "idelta" {
                    return Some(last.v - prev.v);
                }
                let dt = (last.t - prev.t) as f64 / 1000.0;
                if dt == 0.0 {
                    return None;
                }
                let d = if last.v < prev.v {
                    last.v
                } else {
                    last.v - prev.v
                };
                Some(d / dt)
            })
        }
        "changes" | "resets" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            if rv.has_hists() {
                return hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, _| {
                    Some(Elem::F(hrange::resets_or_changes(w, hw, name == "changes")))
                })
                .map(Some);
            }
            over_range(&ev.guard, &rv, s, false, |w, _| {
                let mut n = 0.0;
                for p in w.windows(2) {
                    let (a, b) = (p[0].v, p[1].v);
                    let hit = if name == "changes" {
                        !(a == b || (a.is_nan() && b.is_nan()))
                    } else {
                        b < a
                    };
                    if hit {
                        n += 1.0;
                    }
                }
                Some(n)
            })
        }
        "deriv" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| {
                (w.len() >= 2).then(|| linear_regression(w, w[0].t).0)
            })
        }
        "predict_linear" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let d = scalar_arg(ev, arg(1)?, s)?;
            // The line is anchored at the evaluation time, not at an `@` time.
            over_range(&ev.guard, &rv, s, false, |w, i| {
                (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, s.t(i));
                    slope * d[i] + intercept
                })
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let sf = scalar_arg(ev, arg(1)?, s)?;
            let tf = scalar_arg(ev, arg(2)?, s)?;
            for i in 0..s.n {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(exec(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(exec(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            over_range(&ev.guard, &rv, s, false, |w, i| {
                if w.len() < 2 {
                    return None;
                }
                let (sf, tf) = (sf[i], tf[i]);
                let (mut s0, mut s1) = (0.0, w[0].v);
                let mut b = w[1].v - w[0].v;
                for (j, x) in w.iter().enumerate().skip(1) {
                    if j > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let next = sf * x.v + (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = next;
                }
                Some(s1)
            })
        }
        _ => return Ok(None),
    };
    value.map(Some)
}

/// Prometheus' extrapolated rate (see the module documentation).
pub(super) fn extrapolated_rate(
    w: &[Sample],
    end: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.v - first.v;
    if counter {
        let mut prev = first.v;
        for x in &w[1..] {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let zero = (counter && result > 0.0 && first.v >= 0.0).then_some((first.v, result));
    Some(result * extrapolation(first.t, last.t, w.len() - 1, end, range, zero, rate))
}

/// The factor that extends the increase seen between the first and last sample (`gaps` intervals
/// apart) of the window ending at `end` to the window's edges; `zero` = (first value, increase) of a
/// counter, which is not extrapolated below zero.
pub(super) fn extrapolation(
    first_t: i64,
    last_t: i64,
    gaps: usize,
    end: i64,
    range: i64,
    zero: Option<(f64, f64)>,
    rate: bool,
) -> f64 {
    // Times near the ends of the i64 range (extreme offsets) must not overflow: differences in i128.
    let range_start = end.saturating_sub(range);
    let diff = |a: i64, b: i64| (i128::from(a) - i128::from(b)) as f64 / 1000.0;
    let mut to_start = diff(first_t, range_start);
    let mut to_end = diff(end, last_t);
    let sampled = diff(last_t, first_t);
    let avg_between = sampled / gaps as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if let Some((first_v, result)) = zero {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= range as f64 / 1000.0;
    }
    factor
}

/// Slope and intercept of the least-squares line through the samples, times relative to `intercept_t`.
pub(super) fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = w[0].v;
    let mut constant = true;
    for (i, smp) in w.iter().enumerate() {
        if constant && i > 0 && smp.v != init {
            constant = false;
        }
        n += 1.0;
        let x = (smp.t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(smp.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * smp.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}
