//! Vector transforms that keep each series: `round`, `clamp`, `clamp_min`, `clamp_max`,
//! `timestamp`,
//! `sort`, `sort_desc`.

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
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
                    r.drop_hists();
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
                    r.drop_hists();
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
            let mut inner = a;
            while let Expr::Paren(p) = inner {
                inner = p.expr.as_ref();
            }
            if let Expr::VectorSelector(vs) = inner {
                // The timestamp of the sample the selector picked, not the step's.
                let points = ev.vector_points(vs, s)?;
                let rows = points
                    .into_iter()
                    .map(|(labels, sd, idx)| {
                        let mut r = Row::new(drop_name(&labels), s.n);
                        for (i, j) in idx.into_iter().enumerate() {
                            let t = match j {
                                Some(Pick::F(j)) => sd.samples[j].t,
                                Some(Pick::H(j)) => sd.histograms[j].t,
                                None => continue,
                            };
                            r.set(i, t as f64 / 1000.0);
                        }
                        r
                    })
                    .collect();
                return Ok(Some(Val::Vector(merge_rows(rows)?)));
            }
            let rows = vector_arg(ev, a, s)?;
            let rows = rows
                .into_iter()
                .map(|mut r| {
                    r.labels = drop_name(&r.labels);
                    for i in 0..s.n {
                        if r.ok[i] {
                            r.set(i, s.t(i) as f64 / 1000.0);
                        }
                    }
                    r
                })
                .collect();
            Ok(Val::Vector(merge_rows(rows)?))
        }
        "sort" | "sort_desc" => {
            let mut rows = vector_arg(ev, arg(0)?, s)?;
            // Histograms have no order: `sort` leaves them out.
            rows.iter_mut().for_each(Row::drop_hists);
            rows.retain(Row::any);
            if s.n == 1 {
                let desc = name == "sort_desc";
                // NaN last in both orders.
                rows.sort_by(|a, b| crate::promql::aggregate::nan_last(a.v[0], b.v[0], desc));
            }
            Ok(Val::Vector(rows))
        }
        _ => return Ok(None),
    };
    value.map(Some)
}
