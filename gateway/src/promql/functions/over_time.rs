//! `<aggregation>_over_time`: one value per window of each series (`avg`, `sum`, `count`, `min`,
//! `max`, `stddev`, `stdvar`, `quantile`, `mad`, `first`, `last`, `present`, `absent`).

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let arg = |i: usize| nth_arg(c, i);
    // `sum_over_time` and `avg_over_time` look at their argument before choosing how to evaluate.
    let mut rv_cache: Option<RangeVal> = None;
    let value = match name {
        "ts_of_first_over_time"
        | "ts_of_last_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, _| {
                let pick = match name {
                    "ts_of_first_over_time" => {
                        let t = w
                            .first()
                            .map(|x| x.t)
                            .into_iter()
                            .chain(hw.first().map(|x| x.t));
                        return t.min().map(|t| Elem::F(t as f64 / 1000.0));
                    }
                    "ts_of_last_over_time" => {
                        let t = w
                            .last()
                            .map(|x| x.t)
                            .into_iter()
                            .chain(hw.last().map(|x| x.t));
                        return t.max().map(|t| Elem::F(t as f64 / 1000.0));
                    }
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
                pick.map(|x| Elem::F(x.t as f64 / 1000.0))
            })
        }
        "absent_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            let mut row = Row::new(absent_labels(arg(0)?), s.n);
            for i in 0..s.n {
                if (0..rv.series.len())
                    .all(|k| rv.window(k, i).is_empty() && rv.hwindow(k, i).is_empty())
                {
                    row.set(i, 1.0);
                }
            }
            Ok(Val::Vector(if row.any() { vec![row] } else { vec![] }))
        }
        "avg_over_time" | "sum_over_time" if rv_has_hists(&mut rv_cache, ev, c, s)? => {
            let rv = rv_cache.take().ok_or_else(|| exec("range argument"))?;
            let avg = name == "avg_over_time";
            hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, _| {
                if !w.is_empty() {
                    // Floats alone, or a mix (nothing).
                    if !hw.is_empty() {
                        return None;
                    }
                    return Some(Elem::F(if avg {
                        average(w.iter().map(|x| x.v))
                    } else {
                        kahan_sum(w)
                    }));
                }
                hrange::sum_or_avg(hw, avg).map(|h| Elem::H(std::sync::Arc::new(h)))
            })
        }
        "avg_over_time" => {
            let rv = take_range(&mut rv_cache, ev, c, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| {
                Some(average(w.iter().map(|x| x.v)))
            })
        }
        "sum_over_time" => {
            let rv = take_range(&mut rv_cache, ev, c, s)?;
            over_range(&ev.guard, &rv, s, false, |w, _| Some(kahan_sum(w)))
        }
        "count_over_time" => {
            let rv = range_arg(ev, arg(0)?, s)?;
            if rv.counts {
                // Downsampled windows' counts: the raw samples they stand for (Thanos counts the
                // windows themselves).
                over_range(&ev.guard, &rv, s, false, |w, _| {
                    Some(w.iter().map(|x| x.v).sum())
                })
            } else {
                hrange::over_range_h(&ev.guard, &rv, s, false, |w, hw, _| {
                    Some(Elem::F((w.len() + hw.len()) as f64))
                })
            }
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
        _ => return Ok(None),
    };
    value.map(Some)
}

/// The argument of a one-argument range function, evaluated once and kept.
fn eval_range<'c>(
    cache: &'c mut Option<RangeVal>,
    ev: &mut Evaluator<'_>,
    c: &Call,
    s: &Steps,
) -> Result<&'c RangeVal> {
    if cache.is_none() {
        *cache = Some(range_arg(ev, nth_arg(c, 0)?, s)?);
    }
    cache.as_ref().ok_or_else(|| exec("range argument"))
}

fn rv_has_hists(
    cache: &mut Option<RangeVal>,
    ev: &mut Evaluator<'_>,
    c: &Call,
    s: &Steps,
) -> Result<bool> {
    Ok(eval_range(cache, ev, c, s)?.has_hists())
}

fn take_range(
    cache: &mut Option<RangeVal>,
    ev: &mut Evaluator<'_>,
    c: &Call,
    s: &Steps,
) -> Result<RangeVal> {
    eval_range(cache, ev, c, s)?;
    cache.take().ok_or_else(|| exec("range argument"))
}

fn kahan_sum(w: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for x in w {
        (sum, c) = kahan_inc(x.v, sum, c);
    }
    sum + c
}

pub(super) fn variance_over(w: &[Sample]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for x in w {
        count += 1.0;
        let delta = x.v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (x.v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}
