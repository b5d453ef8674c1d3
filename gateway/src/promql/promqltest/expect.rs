//! What a case expects (`eval` result lines) and the comparison with the engine's answer.

use meridian_core::histogram::FloatHistogram;
use meridian_core::labels::Labels;

use super::hist::{self, TVal};
use super::{Case, almost_equal, expand_values, parse_series_labels, parse_value};
use crate::promql::QueryValue;

enum Expect {
    Instant(Vec<(Labels, TVal)>, Option<f64>),
    Range(Vec<(Labels, Vec<Option<TVal>>)>),
}

fn parse_expect(case: &Case, lines: &[String]) -> Result<Expect, String> {
    if case.range.is_some() {
        let mut out = Vec::new();
        for l in lines {
            let (labels, rest) = parse_series_labels(l)?;
            out.push((labels, expand_values(rest)?));
        }
        return Ok(Expect::Range(out));
    }
    let mut out = Vec::new();
    let mut scalar = None;
    for l in lines {
        if let Ok(v) = parse_value(l.trim()) {
            scalar = Some(v);
            continue;
        }
        let (labels, rest) = parse_series_labels(l)?;
        let v = match expand_values(rest)?.pop() {
            Some(Some(v)) => v,
            _ => return Err(format!("no value in {l:?}")),
        };
        out.push((labels, v));
    }
    Ok(Expect::Instant(out, scalar))
}

/// Whether a result value is the expected one.
fn same(want: &TVal, got_v: f64, got_h: Option<&FloatHistogram>) -> bool {
    match (want, got_h) {
        (TVal::F(w), None) => almost_equal(*w, got_v),
        (TVal::H(w, hint_set), Some(g)) => hist::matches(w, g, *hint_set),
        _ => false,
    }
}

fn show_val(v: f64, h: Option<&FloatHistogram>) -> String {
    match h {
        Some(h) => hist::show(h),
        None => v.to_string(),
    }
}

fn show_want(w: &TVal) -> String {
    match w {
        TVal::F(v) => v.to_string(),
        TVal::H(h, _) => hist::show(h),
    }
}

pub(super) fn compare(case: &Case, lines: &[String], got: QueryValue) -> Result<(), String> {
    match (parse_expect(case, lines)?, got) {
        (Expect::Instant(_, Some(want)), QueryValue::Scalar { v, .. }) => {
            if almost_equal(want, v) {
                Ok(())
            } else {
                Err(format!("scalar {v}, want {want}"))
            }
        }
        (Expect::Instant(want, None), QueryValue::Vector(got)) => {
            if want.len() != got.len() {
                return Err(format!(
                    "{} series, want {}: got {:?}",
                    got.len(),
                    want.len(),
                    got.iter()
                        .map(|s| (s.labels.to_string(), show_val(s.v, s.h.as_deref())))
                        .collect::<Vec<_>>()
                ));
            }
            if case.ordered {
                for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                    if w.0 != g.labels || !same(&w.1, g.v, g.h.as_deref()) {
                        return Err(format!(
                            "at position {k}: {} {}, want {} {}",
                            g.labels,
                            show_val(g.v, g.h.as_deref()),
                            w.0,
                            show_want(&w.1)
                        ));
                    }
                }
                return Ok(());
            }
            for (labels, v) in &want {
                match got.iter().find(|g| &g.labels == labels) {
                    None => return Err(format!("missing {labels}")),
                    Some(g) if !same(v, g.v, g.h.as_deref()) => {
                        return Err(format!(
                            "{labels}: {} want {}",
                            show_val(g.v, g.h.as_deref()),
                            show_want(v)
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        (Expect::Instant(want, None), QueryValue::Matrix(got)) => {
            // An instant query of a range selector: expectations list the samples per series.
            if want.is_empty() && got.is_empty() {
                Ok(())
            } else {
                Err("range-vector results of instant queries are not compared".into())
            }
        }
        (Expect::Range(want), QueryValue::Matrix(got)) => {
            let (a, _, st) = case.range.unwrap_or((0, 0, 1));
            if want.len() != got.len() {
                return Err(format!(
                    "{} series, want {}: got {:?}",
                    got.len(),
                    want.len(),
                    got.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>()
                ));
            }
            for (labels, values) in &want {
                let Some(g) = got.iter().find(|g| &g.labels == labels) else {
                    return Err(format!("missing {labels}"));
                };
                let expected: Vec<(i64, &TVal)> = values
                    .iter()
                    .enumerate()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (a + k as i64 * st, v)))
                    .collect();
                // The result's floats and histograms in time order.
                let mut points: Vec<(i64, f64, Option<&FloatHistogram>)> =
                    g.samples.iter().map(|s| (s.t, s.v, None)).collect();
                points.extend(g.histograms.iter().map(|h| (h.t, 0.0, Some(&*h.h))));
                points.sort_by_key(|p| p.0);
                let ok = expected.len() == points.len()
                    && expected
                        .iter()
                        .zip(&points)
                        .all(|(e, p)| e.0 == p.0 && same(e.1, p.1, p.2));
                if !ok {
                    return Err(format!(
                        "{labels}: got {:?}, want {:?}",
                        points
                            .iter()
                            .map(|p| (p.0, show_val(p.1, p.2)))
                            .collect::<Vec<_>>(),
                        expected
                            .iter()
                            .map(|e| (e.0, show_want(e.1)))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            Ok(())
        }
        (Expect::Instant(want, _), QueryValue::Scalar { v, .. }) if want.is_empty() => {
            Err(format!("scalar {v}, want an empty vector"))
        }
        (_, other) => Err(format!("unexpected result type {other:?}")),
    }
}
