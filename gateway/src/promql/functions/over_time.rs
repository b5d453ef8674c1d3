//! `<aggregation>_over_time`: one value per window of each series (`avg`, `sum`, `count`, `min`,
//! `max`, `stddev`, `stdvar`, `quantile`, `mad`, `first`, `last`, `present`, `absent`).

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
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
            if rv.counts {
                // Downsampled windows' counts: the raw samples they stand for (Thanos counts the
                // windows themselves).
                over_range(&ev.guard, &rv, s, false, |w, _| {
                    Some(w.iter().map(|x| x.v).sum())
                })
            } else {
                over_range(&ev.guard, &rv, s, false, |w, _| Some(w.len() as f64))
            }
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
        _ => return Ok(None),
    };
    value.map(Some)
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
