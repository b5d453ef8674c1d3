//! `histogram_quantile(s)` and `histogram_fraction`: classic histograms, bucket interpolation as
//! Prometheus' `bucketQuantile`; native histograms through [`super::native`].

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
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
        _ => return Ok(None),
    };
    value.map(Some)
}

/// A classic histogram: its labels without `le`, and each bucket's upper bound and row.
pub(super) type ClassicGroup = (Labels, Vec<(f64, usize)>);

/// Classic histograms of a vector: series grouped by labels without `le` (the name still tells two
/// histograms apart), with each bucket's upper bound and row.
pub(super) fn classic_groups(rows: &[Row]) -> Vec<ClassicGroup> {
    let mut groups: Vec<ClassicGroup> = Vec::new();
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

/// The rows and their classic groups, where a native histogram and a classic histogram of the same
/// labels meet at a step both left out there (Prometheus warns of the mix and answers neither).
fn without_conflicts(mut rows: Vec<Row>, s: &Steps) -> (Vec<Row>, Vec<ClassicGroup>) {
    let groups = classic_groups(&rows);
    let by_labels: HashMap<&Labels, usize> =
        groups.iter().enumerate().map(|(k, g)| (&g.0, k)).collect();
    let mut clashes: Vec<(usize, usize, usize)> = Vec::new();
    for (k, r) in rows.iter().enumerate() {
        if !r.has_hists() {
            continue;
        }
        if let Some(&g) = by_labels.get(&r.labels) {
            for i in 0..s.n {
                if r.hist(i).is_some() && buckets_at(&rows, &groups[g].1, i).is_some() {
                    clashes.push((k, g, i));
                }
            }
        }
    }
    for (k, g, i) in clashes {
        rows[k].ok[i] = false;
        for &(_, b) in &groups[g].1 {
            rows[b].ok[i] = false;
        }
    }
    (rows, groups)
}

/// The buckets of a group present at step `i`, sorted, equal bounds summed, counts made monotonic
/// (differences within a relative 1e-12 are noise), as Prometheus fixes them up. `None` without a
/// `+Inf` bucket.
pub(super) fn buckets_at(
    rows: &[Row],
    buckets: &[(f64, usize)],
    i: usize,
) -> Option<Vec<(f64, f64)>> {
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
pub(super) fn histogram_quantile(
    q: &[Vec<f64>],
    label: Option<&str>,
    rows: Vec<Row>,
    s: &Steps,
) -> Result<Val> {
    let mut out = Vec::new();
    let (rows, groups) = without_conflicts(rows, s);
    for qv in q {
        let native =
            super::native::per_histogram(&rows, s, |h, i| super::native::quantile(qv[i], h));
        out.extend(native.into_iter().map(|mut r| {
            if let Some(l) = label {
                r.labels = set_or_delete(&r.labels, l, &quantile_label(qv[0]));
            }
            r
        }));
    }
    for (group, buckets) in groups {
        let base = drop_name(&group);
        for qv in q {
            let labels = match label {
                Some(l) => set_or_delete(&base, l, &quantile_label(qv[0])),
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

/// A quantile as `histogram_quantiles` labels it: like `le` values, integral quantiles keep one
/// decimal ("1.0").
fn quantile_label(q: f64) -> String {
    let mut text = crate::promql::aggregate::format_go_float(q);
    if q.is_finite() && !text.contains(['.', 'e']) {
        text.push_str(".0");
    }
    text
}

/// `histogram_fraction(lower, upper, buckets)` over classic buckets: the share of observations in
/// `[lower, upper]`. A bucket inside the range counts fully; a finite bucket partly inside counts in
/// proportion to the overlap (linear interpolation); an infinitely wide bucket partly inside counts
/// nothing. The first bucket starts at 0 when its bound is positive, at -Inf otherwise.
pub(super) fn histogram_fraction(lo: &[f64], hi: &[f64], rows: Vec<Row>, s: &Steps) -> Result<Val> {
    let (rows, groups) = without_conflicts(rows, s);
    let mut out =
        super::native::per_histogram(&rows, s, |h, i| super::native::fraction(lo[i], hi[i], h));
    for (group, buckets) in groups {
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

pub(crate) fn parse_go_float(s: &str) -> std::result::Result<f64, ()> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        other => other.parse().map_err(|_| ()),
    }
}

pub(super) fn bucket_quantile(q: f64, merged: &[(f64, f64)]) -> f64 {
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
