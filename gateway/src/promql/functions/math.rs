//! Instant functions on numbers: the math table (`abs`, `ln`, ...), `pi`, `time` and the
//! query-range
//! scalars, `min_of`/`max_of`, `vector`, `scalar`.

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let arg = |i: usize| nth_arg(c, i);
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
        return map_values(rows, f).map(Some);
    }
    let value = match name {
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
        _ => return Ok(None),
    };
    value.map(Some)
}
