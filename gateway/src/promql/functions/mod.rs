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

use super::eval::{
    Elem, Evaluator, Guard, Pick, RangeVal, Row, Steps, Val, drop_name, exec, merge_rows,
};
use crate::promql::aggregate::{average, kahan_inc, quantile};

/// Evaluates an argument that must be of one kind (`what` names it in the error).
mod date;
mod histogram;
mod hrange;
mod label;
mod math;
mod native;
mod over_time;
mod rate;
mod vector;

pub(crate) use histogram::parse_go_float;
pub(crate) use hrange::{same_histogram, sum_or_mean};
use label::{absent_labels, set_or_delete};

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
            r.drop_hists();
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

/// Applies a window function of float samples to every series at every step (windows without
/// floats are skipped); `keep_name` for `last_over_time`.
fn over_range(
    guard: &Guard,
    rv: &RangeVal,
    s: &Steps,
    keep_name: bool,
    mut f: impl FnMut(&[Sample], usize) -> Option<f64>,
) -> Result<Val> {
    hrange::over_range_h(guard, rv, s, keep_name, |w, _, i| {
        if w.is_empty() {
            return None;
        }
        f(w, i).map(Elem::F)
    })
}

/// Argument `i` of a call, or an error naming the function.
fn nth_arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| exec(format!("{}: missing argument {}", c.func.name, i + 1)))
}

/// Evaluates a function call: each family answers for its own names.
pub(crate) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Val> {
    let families: [Family; 9] = [
        native::call,
        hrange::call,
        math::call,
        vector::call,
        over_time::call,
        rate::call,
        label::call,
        histogram::call,
        date::call,
    ];
    for family in families {
        if let Some(v) = family(ev, c, s)? {
            return Ok(v);
        }
    }
    Err(exec(format!("function {}() is not supported", c.func.name)))
}

/// One family of functions: the value of a call, or `None` when the name is not the family's.
type Family = fn(&mut Evaluator<'_>, &Call, &Steps) -> Result<Option<Val>>;
