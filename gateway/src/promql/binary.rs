//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators, vector matching with
//! `on`/`ignoring` and `group_left`/`group_right`. Matching is decided once per pair of series; the
//! uniqueness rules Prometheus checks per step are checked per step.

use std::collections::HashMap;

use meridian_core::error::Result;
use meridian_core::labels::Labels;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{Elem, Evaluator, Row, Steps, Val, drop_name, exec, merge_rows};

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Arithmetic and `atan2` drop the metric name; comparisons keep it unless `bool`.
fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^" | "atan2")
}

pub(crate) fn arith(op: &str, l: f64, r: f64) -> f64 {
    match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        // Go's math.Mod: the sign of the dividend, like Rust's `%` on floats.
        "%" => l % r,
        "^" => l.powf(r),
        "atan2" => l.atan2(r),
        _ => f64::NAN,
    }
}

fn compare(op: &str, l: f64, r: f64) -> bool {
    match op {
        "==" => l == r,
        "!=" => l != r,
        ">" => l > r,
        "<" => l < r,
        ">=" => l >= r,
        "<=" => l <= r,
        _ => false,
    }
}

/// Prometheus' element operation: the value and whether the element is kept.
fn element(op: &str, l: f64, r: f64) -> (f64, bool) {
    if is_comparison(op) {
        (l, compare(op, l, r))
    } else {
        (arith(op, l, r), true)
    }
}

/// Prometheus 3's element operation over floats and native histograms (`vectorElemBinop`): a
/// histogram times or divided by a float, histograms added, subtracted (a gauge) or compared for
/// equality; every other mix is incompatible (`None`: dropped, even with `bool`).
fn elem_op(op: &str, l: &Elem, r: &Elem) -> Option<(Elem, bool)> {
    use std::sync::Arc;
    let scaled = |h: &Arc<meridian_core::histogram::FloatHistogram>, f: f64, div: bool| {
        let mut h = (**h).clone();
        if div {
            h.div(f)
        } else {
            h.mul(f)
        }
        h.compact();
        Some((Elem::H(Arc::new(h)), true))
    };
    match (l, r) {
        (Elem::F(a), Elem::F(b)) => {
            let (v, keep) = element(op, *a, *b);
            Some((Elem::F(v), keep))
        }
        (Elem::F(a), Elem::H(h)) if op == "*" => scaled(h, *a, false),
        (Elem::H(h), Elem::F(b)) if op == "*" => scaled(h, *b, false),
        (Elem::H(h), Elem::F(b)) if op == "/" => scaled(h, *b, true),
        (Elem::H(a), Elem::H(b)) => match op {
            "+" | "-" => {
                let mut h = (**a).clone();
                let ok = if op == "+" { h.add(b) } else { h.sub(b) };
                ok.ok()?;
                if op == "-" {
                    h.hint = meridian_core::histogram::CounterResetHint::Gauge;
                }
                h.compact();
                Some((Elem::H(Arc::new(h)), true))
            }
            "==" | "!=" => {
                let same = super::functions::same_histogram(a, b);
                Some((Elem::H(a.clone()), same == (op == "==")))
            }
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, b: &BinaryExpr, s: &Steps) -> Result<Val> {
    let op = b.op.to_string();
    let op = op.as_str();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, s)?;
    let rhs = ev.eval(&b.rhs, s)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&a, &b)| {
                    if is_comparison(op) {
                        if compare(op, a, b) { 1.0 } else { 0.0 }
                    } else {
                        arith(op, a, b)
                    }
                })
                .collect(),
        )),
        (Val::Vector(rows), Val::Scalar(sc)) => {
            vector_scalar(op, rows, &sc, false, return_bool, s).map(Val::Vector)
        }
        (Val::Scalar(sc), Val::Vector(rows)) => {
            vector_scalar(op, rows, &sc, true, return_bool, s).map(Val::Vector)
        }
        (Val::Vector(l), Val::Vector(r)) => match op {
            "and" | "or" | "unless" => Ok(Val::Vector(merge_rows(set_op(op, l, r, b, s))?)),
            _ => vector_vector(op, l, r, b, return_bool, s).map(Val::Vector),
        },
        (l, r) => Err(exec(format!(
            "binary operator {op} not defined between {} and {}",
            l.kind(),
            r.kind()
        ))),
    }
}

fn vector_scalar(
    op: &str,
    rows: Vec<Row>,
    sc: &[f64],
    swap: bool,
    return_bool: bool,
    s: &Steps,
) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(rows.len());
    let drop = drops_name(op) || return_bool;
    for r in rows {
        let labels = if drop {
            drop_name(&r.labels)
        } else {
            r.labels.clone()
        };
        let mut o = Row::new(labels, s.n);
        for i in 0..s.n {
            let Some(v) = r.elem(i) else { continue };
            let scalar = Elem::F(sc[i]);
            let (l, rr) = if swap { (&scalar, &v) } else { (&v, &scalar) };
            let Some((mut value, mut keep)) = elem_op(op, l, rr) else {
                continue;
            };
            // A comparison keeps the vector's value, on whichever side it is.
            if is_comparison(op) && swap {
                value = v;
            }
            if return_bool {
                value = Elem::F(if keep { 1.0 } else { 0.0 });
                keep = true;
            }
            if keep {
                o.set_elem(i, value);
            }
        }
        if o.any() {
            out.push(o);
        }
    }
    if drop { merge_rows(out) } else { Ok(out) }
}

/// The matching signature of a series.
fn signature(l: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => l.keep_only(&on.labels),
        Some(LabelModifier::Exclude(ign)) => {
            let mut names: Vec<&str> = ign.labels.iter().map(String::as_str).collect();
            names.push("__name__");
            l.without(&names)
        }
        None => drop_name(l),
    }
}

fn set_op(op: &str, l: Vec<Row>, r: Vec<Row>, b: &BinaryExpr, s: &Steps) -> Vec<Row> {
    let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
    // Per signature of the right side, the steps where any of its series is present.
    let mut present: HashMap<Labels, Vec<bool>> = HashMap::new();
    for row in &r {
        let p = present
            .entry(signature(&row.labels, matching))
            .or_insert_with(|| vec![false; s.n]);
        for i in 0..s.n {
            p[i] |= row.ok[i];
        }
    }
    match op {
        "and" | "unless" => {
            let keep_when_present = op == "and";
            l.into_iter()
                .filter_map(|mut row| {
                    let p = present.get(&signature(&row.labels, matching));
                    for i in 0..s.n {
                        let there = p.is_some_and(|p| p[i]);
                        if there != keep_when_present {
                            row.ok[i] = false;
                        }
                    }
                    row.any().then_some(row)
                })
                .collect()
        }
        _ => {
            // or: the left side, plus right-side series at steps where no left series has their
            // signature.
            let mut left: HashMap<Labels, Vec<bool>> = HashMap::new();
            for row in &l {
                let p = left
                    .entry(signature(&row.labels, matching))
                    .or_insert_with(|| vec![false; s.n]);
                for i in 0..s.n {
                    p[i] |= row.ok[i];
                }
            }
            let mut out = l;
            for mut row in r {
                if let Some(p) = left.get(&signature(&row.labels, matching)) {
                    for i in 0..s.n {
                        if p[i] {
                            row.ok[i] = false;
                        }
                    }
                }
                if row.any() {
                    out.push(row);
                }
            }
            out
        }
    }
}

fn vector_vector(
    op: &str,
    lhs: Vec<Row>,
    rhs: Vec<Row>,
    b: &BinaryExpr,
    return_bool: bool,
    s: &Steps,
) -> Result<Vec<Row>> {
    let modifier = b.modifier.as_ref();
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let card = modifier.map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
    let (include, one_to_many) = match &card {
        VectorMatchCardinality::ManyToOne(l) => (Some(l.labels.clone()), false),
        VectorMatchCardinality::OneToMany(l) => (Some(l.labels.clone()), true),
        _ => (None, false),
    };
    let one_to_one = include.is_none();
    // The "many" side and the "one" side (group_right swaps them).
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig: HashMap<Labels, Vec<usize>> = HashMap::new();
    for (k, row) in one.iter().enumerate() {
        one_by_sig
            .entry(signature(&row.labels, matching))
            .or_default()
            .push(k);
    }
    // The "one" side must be unique per signature at every step.
    for (sig, idx) in &one_by_sig {
        if idx.len() < 2 {
            continue;
        }
        for i in 0..s.n {
            let present: Vec<&Row> = idx.iter().map(|&k| &one[k]).filter(|r| r.ok[i]).collect();
            if present.len() > 1 {
                let side = if one_to_many { "left" } else { "right" };
                return Err(exec(format!(
                    "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    present[0].labels, present[1].labels
                )));
            }
        }
    }
    let drop = drops_name(op) || return_bool;
    let mut out: Vec<Row> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    // For one-to-one matching, the many side must be unique per signature at every step too.
    let mut many_seen: HashMap<Labels, Vec<bool>> = HashMap::new();
    for m in &many {
        let sig = signature(&m.labels, matching);
        let Some(ones) = one_by_sig.get(&sig) else {
            continue;
        };
        if one_to_one {
            let seen = many_seen
                .entry(sig.clone())
                .or_insert_with(|| vec![false; s.n]);
            for i in 0..s.n {
                if m.ok[i] && ones.iter().any(|&k| one[k].ok[i]) {
                    if seen[i] {
                        return Err(exec(format!(
                            "found duplicate series for the match group {sig} on the left hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
                            m.labels
                        )));
                    }
                    seen[i] = true;
                }
            }
        }
        for &k in ones {
            let o = &one[k];
            let labels = result_labels(&m.labels, &o.labels, drop, matching, include.as_deref());
            let mut row = Row::new(labels, s.n);
            for i in 0..s.n {
                let (Some(mv), Some(ov)) = (m.elem(i), o.elem(i)) else {
                    continue;
                };
                let (l, r) = if one_to_many { (&ov, &mv) } else { (&mv, &ov) };
                let Some((mut value, mut keep)) = elem_op(op, l, r) else {
                    continue;
                };
                if is_comparison(op) && one_to_many {
                    value = mv;
                }
                if return_bool {
                    value = Elem::F(if keep { 1.0 } else { 0.0 });
                    keep = true;
                }
                if keep {
                    row.set_elem(i, value);
                }
            }
            if !row.any() {
                continue;
            }
            match out_index.get(&row.labels) {
                None => {
                    out_index.insert(row.labels.clone(), out.len());
                    out.push(row);
                }
                Some(&j) => {
                    let into = &mut out[j];
                    for i in 0..s.n {
                        if let Some(e) = row.elem(i) {
                            if into.ok[i] {
                                return Err(exec(if one_to_one {
                                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".to_string()
                                } else {
                                    "multiple matches for labels: grouping labels must ensure unique matches".to_string()
                                }));
                            }
                            into.set_elem(i, e);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Prometheus' result metric: the many side's labels, the name dropped where the operation drops it;
/// one-to-one matching keeps only the `on` labels (or drops the `ignoring` ones); `group_x(labels)` copies
/// those labels from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    drop: bool,
    matching: Option<&LabelModifier>,
    include: Option<&[String]>,
) -> Labels {
    let base = if drop { drop_name(many) } else { many.clone() };
    match include {
        None => match matching {
            Some(LabelModifier::Include(on)) => base.keep_only(&on.labels),
            Some(LabelModifier::Exclude(ign)) => base.without(&ign.labels),
            None => base,
        },
        Some(extra) => {
            if extra.is_empty() {
                return base;
            }
            let mut b = base.to_builder();
            for name in extra {
                match one.get(name) {
                    Some(v) => b.set(name, v),
                    None => b.del(name),
                };
            }
            b.build()
        }
    }
}
