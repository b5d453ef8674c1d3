//! Aggregation operators. Series are grouped once; each group is aggregated step by step over the
//! members present at that step. Sums use Kahan-Neumaier compensation as Prometheus 3 does; `avg` sums
//! directly and switches to an incremental mean only where the sum would overflow.

use std::collections::HashMap;

use meridian_core::error::Result;
use meridian_core::labels::Labels;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{Evaluator, Row, Steps, Val, exec};

pub(crate) use meridian_core::histogram::ops::kahan_inc;

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's sort.Float64s: NaN before everything else.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Average of values (Kahan sum, incremental mean after an overflow), as `avg` and `avg_over_time`.
pub(crate) fn average(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c, mut count) = (0.0f64, 0.0f64, 0.0f64);
    let mut incremental = false;
    let mut mean = 0.0f64;
    for v in values {
        count += 1.0;
        if count == 1.0 {
            sum = v;
            continue;
        }
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        let (m, nc) = kahan_inc(v / count, q * mean, q * c);
        mean = m;
        c = nc;
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

fn group_labels(l: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => l.keep_only(&by.labels),
        Some(LabelModifier::Exclude(without)) => {
            let mut names: Vec<&str> = without.labels.iter().map(String::as_str).collect();
            names.push("__name__");
            l.without(&names)
        }
        None => Labels::empty(),
    }
}

pub(crate) fn eval(ev: &mut Evaluator<'_>, a: &AggregateExpr, s: &Steps) -> Result<Val> {
    let op = a.op.to_string();
    let op = op.as_str();
    let param = match &a.param {
        Some(p) => Some(ev.eval(p, s)?),
        None => None,
    };
    let rows = match ev.eval(&a.expr, s)? {
        Val::Vector(r) => r,
        other => {
            return Err(exec(format!(
                "aggregation {op} expects a vector, got {}",
                other.kind()
            )));
        }
    };
    let g = Grouped::new(rows, a.modifier.as_ref());
    let scalar_param = |name: &str| -> Result<Vec<f64>> {
        match &param {
            Some(Val::Scalar(v)) => Ok(v.clone()),
            _ => Err(exec(format!("{name}: expected a scalar parameter"))),
        }
    };
    let out = match op {
        "topk" | "bottomk" | "limitk" => {
            let k = scalar_param(op)?;
            if k.iter().any(|k| k.is_nan()) {
                return Err(exec(format!("Parameter value is NaN for {op}")));
            }
            select_k(ev, op, &k, &g, s)?
        }
        "count_values" => {
            let Some(Val::Str(label)) = &param else {
                return Err(exec("count_values: expected a string parameter"));
            };
            if !valid_label_name(label) {
                return Err(exec(format!("invalid label name {label:?}")));
            }
            count_values(ev, label, &g, s)?
        }
        "limit_ratio" => {
            let r = scalar_param(op)?;
            if r.iter().any(|r| r.is_nan()) {
                return Err(exec("Ratio value is NaN"));
            }
            limit_ratio(&r, &g, s)
        }
        _ => {
            let q = if op == "quantile" {
                Some(scalar_param(op)?)
            } else {
                None
            };
            reduce_groups(ev, op, q.as_deref(), g, s)?
        }
    };
    Ok(Val::Vector(out))
}

/// The input series of an aggregation grouped by their output labels, groups in order of first
/// appearance.
struct Grouped {
    rows: Vec<Row>,
    order: Vec<Labels>,
    groups: HashMap<Labels, Vec<usize>>,
}

impl Grouped {
    fn new(rows: Vec<Row>, modifier: Option<&LabelModifier>) -> Grouped {
        let mut order: Vec<Labels> = Vec::new();
        let mut groups: HashMap<Labels, Vec<usize>> = HashMap::new();
        for (k, r) in rows.iter().enumerate() {
            let g = group_labels(&r.labels, modifier);
            groups
                .entry(g.clone())
                .or_insert_with(|| {
                    order.push(g);
                    Vec::new()
                })
                .push(k);
        }
        Grouped {
            rows,
            order,
            groups,
        }
    }
}

/// `topk`, `bottomk`, `limitk`: at most `k` series of each group at each step.
fn select_k(
    ev: &mut Evaluator<'_>,
    op: &str,
    k: &[f64],
    g: &Grouped,
    s: &Steps,
) -> Result<Vec<Row>> {
    let (rows, order, groups) = (&g.rows, &g.order, &g.groups);
    let mut out: Vec<Row> = Vec::new();
    for g in order {
        let members = &groups[g];
        ev.guard.tick(members.len().saturating_mul(s.n))?;
        let mut picked: Vec<Row> = members
            .iter()
            .map(|&m| Row::new(rows[m].labels.clone(), s.n))
            .collect();
        for i in 0..s.n {
            let kf = k[i];
            // Saturating: a huge k keeps everything.
            let kk = kf as i64;
            if kk < 1 {
                continue;
            }
            if op == "limitk" {
                // Any series, floats and histograms alike.
                let present = members
                    .iter()
                    .enumerate()
                    .filter_map(|(j, &m)| rows[m].elem(i).map(|e| (j, e)));
                for (j, e) in present.take(kk as usize) {
                    picked[j].set_elem(i, e);
                }
                continue;
            }
            let mut present: Vec<(usize, f64)> = members
                .iter()
                .enumerate()
                .filter_map(|(j, &m)| rows[m].get(i).map(|v| (j, v)))
                .collect();
            let top = op == "topk";
            present.sort_by(|a, b| nan_last(a.1, b.1, top));
            for (j, v) in present.into_iter().take(kk as usize) {
                picked[j].set(i, v);
            }
        }
        let mut kept: Vec<Row> = picked.into_iter().filter(Row::any).collect();
        if s.n == 1 && op != "limitk" {
            let top = op == "topk";
            kept.sort_by(|a, b| nan_last(a.v[0], b.v[0], top));
        }
        out.extend(kept);
    }
    Ok(out)
}

/// `count_values`: per group and step, one series per distinct value, counting the series holding it.
fn count_values(ev: &mut Evaluator<'_>, label: &str, g: &Grouped, s: &Steps) -> Result<Vec<Row>> {
    let (rows, order, groups) = (&g.rows, &g.order, &g.groups);
    let mut out: Vec<Row> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for g in order {
        for i in 0..s.n {
            ev.guard.tick(groups[g].len())?;
            // Distinct values in order of first appearance, found by hash (a series per
            // value must not cost a scan of the values so far).
            let mut counts: Vec<(String, f64)> = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for &m in &groups[g] {
                let key = match (rows[m].hist(i), rows[m].get(i)) {
                    (Some(h), _) => Some(h.go_string()),
                    (None, Some(v)) => Some(format_go_float(v)),
                    _ => None,
                };
                if let Some(key) = key {
                    match seen.get(&key) {
                        Some(&c) => counts[c].1 += 1.0,
                        None => {
                            seen.insert(key.clone(), counts.len());
                            counts.push((key, 1.0));
                        }
                    }
                }
            }
            for (value, count) in counts {
                let mut b = g.to_builder();
                b.set(label, &value);
                let labels = b.build();
                let k = match index.get(&labels) {
                    Some(&k) => k,
                    None => {
                        // A new output series holds a value per step: counted before it is
                        // allocated (a value per step per series can make many).
                        ev.reserve(out.len() + 1, s.n)?;
                        index.insert(labels.clone(), out.len());
                        out.push(Row::new(labels, s.n));
                        out.len() - 1
                    }
                };
                // Groups whose labels the new label overwrites meet in one series: counts add up.
                let before = out[k].get(i).unwrap_or(0.0);
                out[k].set(i, before + count);
            }
        }
    }
    Ok(out)
}

/// `limit_ratio`: a deterministic subset of the series (by label hash) at every step.
fn limit_ratio(r: &[f64], g: &Grouped, s: &Steps) -> Vec<Row> {
    let (rows, order, groups) = (&g.rows, &g.order, &g.groups);
    let mut out: Vec<Row> = Vec::new();
    for g in order {
        for &m in &groups[g] {
            let mut row = rows[m].clone();
            let h = row.labels.hash_value() as f64 / u64::MAX as f64;
            for i in 0..s.n {
                let ri = r[i].clamp(-1.0, 1.0);
                let keep = if ri >= 0.0 { h < ri } else { h >= 1.0 + ri };
                if !keep {
                    row.ok[i] = false;
                }
            }
            if row.any() {
                out.push(row);
            }
        }
    }
    out
}

/// The aggregations to one value per group and step: `sum`, `avg`, `count`, `group`, `min`, `max`,
/// `stddev`, `stdvar`, `quantile` (`q`: its parameter per step).
fn reduce_groups(
    ev: &mut Evaluator<'_>,
    op: &str,
    q: Option<&[f64]>,
    g: Grouped,
    s: &Steps,
) -> Result<Vec<Row>> {
    let Grouped {
        rows,
        order,
        groups,
    } = g;
    let mut out: Vec<Row> = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    for g in order {
        let members = &groups[&g];
        ev.guard.tick(members.len().saturating_mul(s.n))?;
        let mut row = Row::new(g, s.n);
        for i in 0..s.n {
            match op {
                // Floats and histograms alike.
                "count" | "group" => {
                    let n = members.iter().filter(|&&m| rows[m].ok[i]).count();
                    if n > 0 {
                        row.set(i, if op == "count" { n as f64 } else { 1.0 });
                    }
                    continue;
                }
                "sum" | "avg" if members.iter().any(|&m| rows[m].hist(i).is_some()) => {
                    // Histograms only: their sum or mean; mixed with floats: nothing.
                    if let Some(h) =
                        sum_histograms(members.iter().map(|&m| &rows[m]), i, op == "avg")
                    {
                        row.set_h(i, std::sync::Arc::new(h));
                    }
                    continue;
                }
                _ => {}
            }
            values.clear();
            values.extend(members.iter().filter_map(|&m| rows[m].get(i)));
            if values.is_empty() {
                continue;
            }
            let qv = q.map_or(f64::NAN, |q| q[i]);
            row.set(i, reduce(op, &mut values, qv)?);
        }
        if row.any() {
            out.push(row);
        }
    }
    Ok(out)
}

/// The sum (or mean) of the histograms of `rows` at step `i`; `None` when a float is among them or
/// the histograms cannot be added (exponential and custom buckets).
fn sum_histograms<'r>(
    rows: impl Iterator<Item = &'r Row>,
    i: usize,
    avg: bool,
) -> Option<meridian_core::histogram::FloatHistogram> {
    let mut hs = Vec::new();
    for r in rows {
        if r.ok[i] {
            hs.push(&**r.hist(i)?);
        }
    }
    super::functions::sum_or_mean(hs.into_iter(), avg)
}

/// One group's value at one step (`values` not empty; `q`: the quantile's parameter).
fn reduce(op: &str, values: &mut [f64], q: f64) -> Result<f64> {
    Ok(match op {
        "sum" => {
            let (mut sum, mut c) = (values[0], 0.0);
            for &v in &values[1..] {
                (sum, c) = kahan_inc(v, sum, c);
            }
            sum + c
        }
        "avg" => average(values.iter().copied()),
        "count" => values.len() as f64,
        "group" => 1.0,
        "min" => values[1..].iter().fold(
            values[0],
            |acc, &v| {
                if acc > v || acc.is_nan() { v } else { acc }
            },
        ),
        "max" => values[1..].iter().fold(
            values[0],
            |acc, &v| {
                if acc < v || acc.is_nan() { v } else { acc }
            },
        ),
        "stddev" | "stdvar" => {
            let (mut count, mut mean, mut var) = (0.0f64, 0.0f64, 0.0f64);
            for &v in values.iter() {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                var += delta * (v - mean);
            }
            let sv = var / count;
            if op == "stddev" { sv.sqrt() } else { sv }
        }
        "quantile" => quantile(q, values),
        other => return Err(exec(format!("unsupported aggregation {other}"))),
    })
}

/// Descending (`desc`) or ascending order with NaN last either way.
pub(crate) fn nan_last(x: f64, y: f64, desc: bool) -> std::cmp::Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if desc => y.total_cmp(&x),
        _ => x.total_cmp(&y),
    }
}

/// Prometheus 3 accepts any valid UTF-8 label name; bytes that were not UTF-8 arrive as U+FFFD.
pub(crate) fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('\u{FFFD}')
}
