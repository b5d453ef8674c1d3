//! PromQL functions. Range functions walk each series' samples once with windows sliding over the steps;
//! instant functions map values step by step.
//!
//! `rate`/`increase`/`delta` extrapolate as Prometheus does (`extrapolatedRate` in its
//! `promql/functions.go`): the increase seen between the first and last sample of the window is
//! extended towards the window's edges by up to half an average sample interval, and for counters never
//! below zero.

use std::collections::HashMap;

use meridian_core::error::Result;
use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use promql_parser::parser::{Call, Expr};

use super::aggregate::{average, kahan_inc, quantile};
use super::eval::{Evaluator, Guard, RangeVal, Row, Steps, Val, drop_name, exec, merge_rows};

/// Evaluates an argument that must be of one kind (`what` names it in the error).
fn typed_arg<T>(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    s: &Steps,
    what: &str,
    pick: fn(Val) -> std::result::Result<T, Val>,
) -> Result<T> {
    pick(ev.eval(e, s)?)
        .map_err(|other| exec(format!("expected {what} argument, got {}", other.kind())))
}

fn scalar_arg(ev: &mut Evaluator<'_>, e: &Expr, s: &Steps) -> Result<Vec<f64>> {
    typed_arg(ev, e, s, "a scalar", |v| match v {
        Val::Scalar(x) => Ok(x),
        o => Err(o),
    })
}

fn string_arg(ev: &mut Evaluator<'_>, e: &Expr, s: &Steps) -> Result<String> {
    typed_arg(ev, e, s, "a string", |v| match v {
        Val::Str(x) => Ok(x),
        o => Err(o),
    })
}

fn vector_arg(ev: &mut Evaluator<'_>, e: &Expr, s: &Steps) -> Result<Vec<Row>> {
    typed_arg(ev, e, s, "an instant vector", |v| match v {
        Val::Vector(x) => Ok(x),
        o => Err(o),
    })
}

fn range_arg(ev: &mut Evaluator<'_>, e: &Expr, s: &Steps) -> Result<RangeVal> {
    let rv = typed_arg(ev, e, s, "a range vector", |v| match v {
        Val::Range(x) => Ok(x),
        o => Err(o),
    })?;
    // Every series of a range vector becomes a row of a value per step.
    ev.reserve(rv.series.len(), s.n)?;
    Ok(rv)
}

/// Applies `f` to every present value, dropping the metric name.
fn map_values(rows: Vec<Row>, f: impl Fn(f64) -> f64) -> Result<Val> {
    let rows = rows
        .into_iter()
        .map(|mut r| {
            r.labels = drop_name(&r.labels);
            for i in 0..r.v.len() {
                if r.ok[i] {
                    r.v[i] = f(r.v[i]);
                }
            }
            r
        })
        .collect();
    Ok(Val::Vector(merge_rows(rows)?))
}

/// Applies a window function to every series at every step; `keep_name` for `last_over_time`.
fn over_range(
    guard: &Guard,
    rv: &RangeVal,
    s: &Steps,
    keep_name: bool,
    mut f: impl FnMut(&[Sample], usize) -> Option<f64>,
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
            let w = rv.window(k, i);
            // A window's work is its samples (`max_over_time` over a long subquery reads millions).
            guard.tick(w.len())?;
            if w.is_empty() {
                continue;
            }
            if let Some(v) = f(w, i) {
                row.set(i, v);
            }
        }
        if row.any() {
            rows.push(row);
        }
    }
    Ok(Val::Vector(merge_rows(rows)?))
}

/// Prometheus' extrapolated rate (see the module documentation).
fn extrapolated_rate(w: &[Sample], end: i64, range: i64, counter: bool, rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    // Times near the ends of the i64 range (extreme offsets) must not overflow: differences in i128.
    let range_start = end.saturating_sub(range);
    let diff = |a: i64, b: i64| (i128::from(a) - i128::from(b)) as f64 / 1000.0;
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
    let mut to_start = diff(first.t, range_start);
    let mut to_end = diff(end, last.t);
    let sampled = diff(last.t, first.t);
    let avg_between = sampled / (w.len() - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter && result > 0.0 && first.v >= 0.0 {
        // A counter cannot be extrapolated below zero.
        let to_zero = sampled * (first.v / result);
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
    Some(result * factor)
}

/// Slope and intercept of the least-squares line through the samples, times relative to `intercept_t`.
fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
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

fn variance_over(w: &[Sample]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for x in w {
        count += 1.0;
        let delta = x.v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (x.v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

/// Labels `absent()` gives: the selector's equality matchers (a name matched twice is left out).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        _ => return Labels::empty(),
    };
    let Ok(alternatives) = super::selector_matchers(vs) else {
        return Labels::empty();
    };
    let Some(matchers) = alternatives.first() else {
        return Labels::empty();
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in matchers {
        *seen.entry(m.name()).or_default() += 1;
    }
    let pairs: Vec<(&str, &str)> = matchers
        .iter()
        .filter(|m| {
            m.kind() == meridian_core::matcher::MatchType::Equal
                && seen[m.name()] == 1
                && m.name() != "__name__"
        })
        .map(|m| (m.name(), m.value()))
        .collect();
    Labels::from_pairs(pairs)
}

fn date_part(
    ev: &mut Evaluator<'_>,
    c: &Call,
    s: &Steps,
    f: fn(time::OffsetDateTime) -> f64,
) -> Result<Val> {
    let convert = move |v: f64| {
        if v.is_nan() || v.is_infinite() {
            return f64::NAN;
        }
        match time::OffsetDateTime::from_unix_timestamp(v as i64) {
            Ok(d) => f(d),
            Err(_) => f64::NAN,
        }
    };
    match c.args.args.first() {
        None => {
            let mut row = Row::new(Labels::empty(), s.n);
            for i in 0..s.n {
                row.set(i, convert(s.t(i) as f64 / 1000.0));
            }
            Ok(Val::Vector(vec![row]))
        }
        Some(a) => {
            let rows = vector_arg(ev, a, s)?;
            map_values(rows, convert)
        }
    }
}

fn days_in_month(d: time::OffsetDateTime) -> f64 {
    f64::from(d.month().length(d.year()))
}

pub(crate) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Val> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| -> Result<&Expr> {
        args.get(i)
            .map(|b| b.as_ref())
            .ok_or_else(|| exec(format!("{name}: missing argument {}", i + 1)))
    };
    let simple: Option<fn(f64) -> f64> = match name {
        "abs" => Some(f64::abs),
        "ceil" => Some(f64::ceil),
        "floor" => Some(f64::floor),
        "exp" => Some(f64::exp),
        "sqrt" => Some(f64::sqrt),
        "ln" => Some(f64::ln),
        "log2" => Some(f64::log2),
        "log10" => Some(f64::log10),
        "sin" => Some(f64::sin),
        "cos" => Some(f64::cos),
        "tan" => Some(f64::tan),
        "asin" => Some(f64::asin),
        "acos" => Some(f64::acos),
        "atan" => Some(f64::atan),
        "sinh" => Some(f64::sinh),
        "cosh" => Some(f64::cosh),
        "tanh" => Some(f64::tanh),
        "asinh" => Some(f64::asinh),
        "acosh" => Some(f64::acosh),
        "atanh" => Some(f64::atanh),
        "deg" => Some(|v: f64| v * 180.0 / std::f64::consts::PI),
        "rad" => Some(|v: f64| v * std::f64::consts::PI / 180.0),
        "sgn" => Some(|v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        _ => None,
    };
    if let Some(f) = simple {
        let rows = vector_arg(ev, arg(0)?, s)?;
        return map_values(rows, f);
    }
    match name {
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; s.n])),
        "step" => {
            let step = if s.n > 1 || ev.qend > ev.qstart {
                s.step
            } else {
                0
            };
            Ok(Val::Scalar(vec![step as f64 / 1000.0; s.n]))
        }
        "range" => Ok(Val::Scalar(vec![
            (i128::from(ev.qend) - i128::from(ev.qstart))
                as f64
                / 1000.0;
            s.n
        ])),
        "start" => Ok(Val::Scalar(vec![ev.qstart as f64 / 1000.0; s.n])),
        "end" => Ok(Val::Scalar(vec![ev.qend as f64 / 1000.0; s.n])),
        "min_of" | "max_of" => {
            let a = scalar_arg(ev, arg(0)?, s)?;
            let b = scalar_arg(ev, arg(1)?, s)?;
            let max = name == "max_of";
            Ok(Val::Scalar(
                a.iter()
                    .zip(&b)
                    .map(|(&x, &y)| {
                        if x.is_nan() || y.is_nan() {
                            f64::NAN
                        } else if max {
                            x.max(y)
                        } else {
                            x.min(y)
                        }
                    })
                    .collect(),
            ))
        }
        "first_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, true, |w, _| w.first().map(|x| x.v))
        }
        "ts_of_first_over_time"
        | "ts_of_last_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| {
                let pick = match name {
                    "ts_of_first_over_time" => w.first(),
                    "ts_of_last_over_time" => w.last(),
                    _ => {
                        let max = name == "ts_of_max_over_time";
                        w.iter().fold(None, |best: Option<&Sample>, x| match best {
                            None => Some(x),
                            Some(b) if b.v.is_nan() && !x.v.is_nan() => Some(x),
                            Some(b) if (max && x.v >= b.v) || (!max && x.v <= b.v) => Some(x),
                            keep => keep,
                        })
                    }
                };
                pick.map(|x| x.t as f64 / 1000.0)
            })
        }
        "time" => Ok(Val::Scalar(
            (0..s.n).map(|i| s.t(i) as f64 / 1000.0).collect(),
        )),
        "vector" => {
            let v = scalar_arg(ev, arg(0)?, s)?;
            let mut row = Row::new(Labels::empty(), s.n);
            for (i, x) in v.into_iter().enumerate() {
                ev.guard.tick(1)?;
                row.set(i, x);
            }
            Ok(Val::Vector(vec![row]))
        }
        "scalar" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            Ok(Val::Scalar(
                (0..s.n)
                    .map(|i| {
                        let mut present = rows.iter().filter_map(|r| r.get(i));
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "round" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let to = match args.get(1) {
                Some(a) => scalar_arg(ev, a, s)?,
                None => vec![1.0; s.n],
            };
            let rows = rows
                .into_iter()
                .map(|mut r| {
                    r.labels = drop_name(&r.labels);
                    for i in 0..s.n {
                        if r.ok[i] {
                            let inv = 1.0 / to[i];
                            r.v[i] = (r.v[i] * inv + 0.5).floor() / inv;
                        }
                    }
                    r
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let (lo, hi) = match name {
                "clamp" => (scalar_arg(ev, arg(1)?, s)?, scalar_arg(ev, arg(2)?, s)?),
                "clamp_min" => (scalar_arg(ev, arg(1)?, s)?, vec![f64::INFINITY; s.n]),
                _ => (vec![f64::NEG_INFINITY; s.n], scalar_arg(ev, arg(1)?, s)?),
            };
            let rows = rows
                .into_iter()
                .filter_map(|mut r| {
                    r.labels = drop_name(&r.labels);
                    for i in 0..s.n {
                        if !r.ok[i] {
                            continue;
                        }
                        if name == "clamp" && hi[i] < lo[i] {
                            r.ok[i] = false;
                            continue;
                        }
                        // Go's math.Max/Min: NaN in, NaN out.
                        let v = r.v[i];
                        r.v[i] = if v.is_nan() || lo[i].is_nan() || hi[i].is_nan() {
                            f64::NAN
                        } else {
                            v.max(lo[i]).min(hi[i])
                        };
                    }
                    r.any().then_some(r)
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "timestamp" => {
            let a = arg(0)?;
            let inner = match a {
                Expr::Paren(p) => p.expr.as_ref(),
                other => other,
            };
            if let Expr::VectorSelector(vs) = inner {
                // The timestamp of the sample the selector picked, not the step's.
                let points = ev.vector_points(vs, s)?;
                let rows = points
                    .into_iter()
                    .map(|(labels, samples, idx)| {
                        let mut r = Row::new(drop_name(&labels), s.n);
                        for (i, j) in idx.into_iter().enumerate() {
                            if let Some(j) = j {
                                r.set(i, samples[j].t as f64 / 1000.0);
                            }
                        }
                        r
                    })
                    .collect();
                return Ok(Val::Vector(merge_rows(rows)?));
            }
            let rows = vector_arg(ev, a, s)?;
            let rows = rows
                .into_iter()
                .map(|mut r| {
                    r.labels = drop_name(&r.labels);
                    for i in 0..s.n {
                        if r.ok[i] {
                            r.v[i] = s.t(i) as f64 / 1000.0;
                        }
                    }
                    r
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "absent" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let mut row = Row::new(absent_labels(arg(0)?), s.n);
            for i in 0..s.n {
                if !rows.iter().any(|r| r.ok[i]) {
                    row.set(i, 1.0);
                }
            }
            Ok(Val::Vector(if row.any() { vec![row] } else { vec![] }))
        }
        "absent_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let mut row = Row::new(absent_labels(arg(0)?), s.n);
            for i in 0..s.n {
                if (0..rv.series.len()).all(|k| rv.window(k, i).is_empty()) {
                    row.set(i, 1.0);
                }
            }
            Ok(Val::Vector(if row.any() { vec![row] } else { vec![] }))
        }
        "rate" | "increase" | "delta" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let counter = name != "delta";
            let is_rate = name == "rate";
            let (ends, range) = (rv.ends.clone(), rv.range);
            over_range(&ev.guard, &rv, s, false, |w, i| {
                extrapolated_rate(w, ends[i], range, counter, is_rate)
            })
        }
        "irate" | "idelta" => {
            let rv = range_arg(ev, arg(0)?, s)?;
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
        "avg_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| {
                Some(average(w.iter().map(|x| x.v)))
            })
        }
        "sum_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| {
                let (mut sum, mut c) = (0.0, 0.0);
                for x in w {
                    (sum, c) = kahan_inc(x.v, sum, c);
                }
                Some(sum + c)
            })
        }
        "count_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| Some(w.len() as f64))
        }
        "present_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, false, |_, _| Some(1.0))
        }
        "last_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            over_range(&ev.guard, &rv, s, true, |w, _| w.last().map(|x| x.v))
        }
        "min_over_time" | "max_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let max = name == "max_over_time";
            over_range(&ev.guard, &rv, s, false, |w, _| {
                Some(w[1..].iter().fold(w[0].v, |acc, x| {
                    let better = if max { acc < x.v } else { acc > x.v };
                    if better || acc.is_nan() { x.v } else { acc }
                }))
            })
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let sd = name == "stddev_over_time";
            over_range(&ev.guard, &rv, s, false, |w, _| {
                let v = variance_over(w);
                Some(if sd { v.sqrt() } else { v })
            })
        }
        "quantile_over_time" => {
            let q = scalar_arg(ev, arg(0)?, s)?;
            let rv = range_arg(ev, arg(1)?, s)?;
            let mut buf = Vec::new();
            over_range(&ev.guard, &rv, s, false, |w, i| {
                buf.clear();
                buf.extend(w.iter().map(|x| x.v));
                Some(quantile(q[i], &mut buf))
            })
        }
        "mad_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let mut buf = Vec::new();
            over_range(&ev.guard, &rv, s, false, |w, _| {
                if w.iter().any(|x| x.v.is_nan()) {
                    return Some(f64::NAN);
                }
                buf.clear();
                buf.extend(w.iter().map(|x| x.v));
                let median = quantile(0.5, &mut buf);
                let mut dev: Vec<f64> = w.iter().map(|x| (x.v - median).abs()).collect();
                Some(quantile(0.5, &mut dev))
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
        "label_replace" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let dst = string_arg(ev, arg(1)?, s)?;
            let repl = string_arg(ev, arg(2)?, s)?;
            let src = string_arg(ev, arg(3)?, s)?;
            let re_text = string_arg(ev, arg(4)?, s)?;
            // A Go regular expression (Go's syntax and limits), anchored as Prometheus anchors it.
            let re = meridian_core::matcher::translate_go_regex(&re_text)
                .and_then(|t| regex::Regex::new(&format!("^(?s:{t})$")).map_err(|e| e.to_string()))
                .map_err(|e| {
                    exec(format!(
                        "invalid regular expression in label_replace(): {re_text}: {e}"
                    ))
                })?;
            if !valid_label_name(&dst) {
                return Err(exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let rows = rows
                .into_iter()
                .map(|mut r| {
                    let value = r.labels.get(&src).unwrap_or("").to_owned();
                    if let Some(caps) = re.captures(&value) {
                        let mut out = String::new();
                        caps.expand(&repl, &mut out);
                        r.labels = set_or_delete(&r.labels, &dst, &out);
                    }
                    r
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "label_join" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let dst = string_arg(ev, arg(1)?, s)?;
            let sep = string_arg(ev, arg(2)?, s)?;
            let mut srcs = Vec::new();
            for a in args.iter().skip(3) {
                srcs.push(string_arg(ev, a, s)?);
            }
            if !valid_label_name(&dst) {
                return Err(exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let rows = rows
                .into_iter()
                .map(|mut r| {
                    let joined = srcs
                        .iter()
                        .map(|n| r.labels.get(n).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join(&sep);
                    r.labels = set_or_delete(&r.labels, &dst, &joined);
                    r
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "sort" | "sort_desc" => {
            let mut rows = vector_arg(ev, arg(0)?, s)?;
            if s.n == 1 {
                let desc = name == "sort_desc";
                // NaN last in both orders.
                rows.sort_by(|a, b| super::aggregate::nan_last(a.v[0], b.v[0], desc));
            }
            Ok(Val::Vector(rows))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut rows = vector_arg(ev, arg(0)?, s)?;
            let mut names = Vec::new();
            for a in args.iter().skip(1) {
                names.push(string_arg(ev, a, s)?);
            }
            let desc = name == "sort_by_label_desc";
            rows.sort_by(|a, b| {
                for n in &names {
                    let o =
                        natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if o != std::cmp::Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
            Ok(Val::Vector(rows))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ev, arg(0)?, s)?;
            let rows = vector_arg(ev, arg(1)?, s)?;
            histogram_quantile(&[q], None, rows, s)
        }
        "histogram_quantiles" => {
            let rows = vector_arg(ev, arg(0)?, s)?;
            let label = string_arg(ev, arg(1)?, s)?;
            let mut qs = Vec::new();
            for a in args.iter().skip(2) {
                qs.push(scalar_arg(ev, a, s)?);
            }
            histogram_quantile(&qs, Some(&label), rows, s)
        }
        "histogram_fraction" => {
            let lo = scalar_arg(ev, arg(0)?, s)?;
            let hi = scalar_arg(ev, arg(1)?, s)?;
            let rows = vector_arg(ev, arg(2)?, s)?;
            histogram_fraction(&lo, &hi, rows, s)
        }
        "day_of_month" => date_part(ev, c, s, |d| f64::from(d.day())),
        "day_of_week" => date_part(ev, c, s, |d| {
            f64::from(d.weekday().number_days_from_sunday())
        }),
        "day_of_year" => date_part(ev, c, s, |d| f64::from(d.ordinal())),
        "days_in_month" => date_part(ev, c, s, days_in_month),
        "hour" => date_part(ev, c, s, |d| f64::from(d.hour())),
        "minute" => date_part(ev, c, s, |d| f64::from(d.minute())),
        "month" => date_part(ev, c, s, |d| f64::from(u8::from(d.month()))),
        "year" => date_part(ev, c, s, |d| f64::from(d.year())),
        other => Err(exec(format!("function {other}() is not supported"))),
    }
}

/// The labels with `name` set to `value`, or removed when `value` is empty.
fn set_or_delete(l: &Labels, name: &str, value: &str) -> Labels {
    let mut b = l.to_builder();
    if value.is_empty() {
        b.del(name);
    } else {
        b.set(name, value);
    }
    b.build()
}

fn valid_label_name(s: &str) -> bool {
    super::aggregate::valid_label_name(s)
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = dx.iter().skip_while(|c| **c == b'0').count();
                let ty = dy.iter().skip_while(|c| **c == b'0').count();
                let o = tx.cmp(&ty).then_with(|| dx[nx - tx..].cmp(&dy[ny - ty..]));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Classic histograms of a vector: series grouped by labels without `le` (the name still tells two
/// histograms apart), with each bucket's upper bound and row.
fn classic_groups(rows: &[Row]) -> Vec<(Labels, Vec<(f64, usize)>)> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (k, r) in rows.iter().enumerate() {
        let Some(le) = r.labels.get("le") else {
            continue;
        };
        let Ok(bound) = parse_go_float(le) else {
            continue;
        };
        let g = r.labels.without(&["le"]);
        let gi = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push((bound, k));
    }
    groups
}

/// The buckets of a group present at step `i`, sorted, equal bounds summed, counts made monotonic
/// (differences within a relative 1e-12 are noise), as Prometheus fixes them up. `None` without a
/// `+Inf` bucket.
fn buckets_at(rows: &[Row], buckets: &[(f64, usize)], i: usize) -> Option<Vec<(f64, f64)>> {
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|&(ub, k)| rows[k].get(i).map(|c| (ub, c)))
        .collect();
    if b.is_empty() {
        return None;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (ub, c) in b {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut prev = merged[0].1;
    for x in merged.iter_mut().skip(1) {
        let curr = x.1;
        if curr == prev {
            continue;
        }
        if ((curr - prev) / curr.abs().max(prev.abs())).abs() <= 1e-12 || curr < prev {
            x.1 = prev;
            continue;
        }
        prev = curr;
    }
    Some(merged)
}

/// `histogram_quantile` (one `q`) and `histogram_quantiles` (several, each as a series labelled
/// `label="<q>"`) over classic buckets.
fn histogram_quantile(
    q: &[Vec<f64>],
    label: Option<&str>,
    rows: Vec<Row>,
    s: &Steps,
) -> Result<Val> {
    let mut out = Vec::new();
    for (group, buckets) in classic_groups(&rows) {
        let base = drop_name(&group);
        for qv in q {
            let labels = match label {
                Some(l) => {
                    // Like `le` values: integral quantiles keep one decimal ("1.0").
                    let mut text = super::aggregate::format_go_float(qv[0]);
                    if qv[0].is_finite() && !text.contains(['.', 'e']) {
                        text.push_str(".0");
                    }
                    set_or_delete(&base, l, &text)
                }
                None => base.clone(),
            };
            let mut row = Row::new(labels, s.n);
            for i in 0..s.n {
                if let Some(b) = buckets_at(&rows, &buckets, i) {
                    let v = if b.last().is_some_and(|x| x.0 == f64::INFINITY) {
                        bucket_quantile(qv[i], &b)
                    } else {
                        f64::NAN
                    };
                    row.set(i, v);
                }
            }
            if row.any() {
                out.push(row);
            }
        }
    }
    Ok(Val::Vector(merge_rows(out)?))
}

/// `histogram_fraction(lower, upper, buckets)` over classic buckets: the share of observations in
/// `[lower, upper]`. A bucket inside the range counts fully; a finite bucket partly inside counts in
/// proportion to the overlap (linear interpolation); an infinitely wide bucket partly inside counts
/// nothing. The first bucket starts at 0 when its bound is positive, at -Inf otherwise.
fn histogram_fraction(lo: &[f64], hi: &[f64], rows: Vec<Row>, s: &Steps) -> Result<Val> {
    let mut out = Vec::new();
    for (group, buckets) in classic_groups(&rows) {
        let mut row = Row::new(drop_name(&group), s.n);
        for i in 0..s.n {
            let Some(b) = buckets_at(&rows, &buckets, i) else {
                continue;
            };
            let (lower, upper) = (lo[i], hi[i]);
            let total = b.last().map_or(0.0, |x| x.1);
            let v = if lower.is_nan() || upper.is_nan() || total == 0.0 {
                f64::NAN
            } else if lower >= upper {
                0.0
            } else {
                let mut sum = 0.0;
                for (k, &(ub, count)) in b.iter().enumerate() {
                    let (lb, below) = if k == 0 {
                        (if ub > 0.0 { 0.0 } else { f64::NEG_INFINITY }, 0.0)
                    } else {
                        (b[k - 1].0, b[k - 1].1)
                    };
                    let c = count - below;
                    // An infinitely wide bucket counts fully when the range reaches its open end.
                    let reaches_open_end = (ub == f64::INFINITY
                        && upper == f64::INFINITY
                        && lower < ub)
                        || (lb == f64::NEG_INFINITY && lower == f64::NEG_INFINITY && upper > lb);
                    if (lb >= lower && ub <= upper) || reaches_open_end {
                        sum += c;
                    } else if lb.is_finite() && ub.is_finite() && ub > lb {
                        let overlap = (ub.min(upper) - lb.max(lower)).max(0.0);
                        sum += c * overlap / (ub - lb);
                    }
                }
                sum / total
            };
            row.set(i, v);
        }
        if row.any() {
            out.push(row);
        }
    }
    Ok(Val::Vector(merge_rows(out)?))
}

fn parse_go_float(s: &str) -> std::result::Result<f64, ()> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        other => other.parse().map_err(|_| ()),
    }
}

fn bucket_quantile(q: f64, merged: &[(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = merged.len() - 1;
    let b = merged[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return merged[last - 1].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
