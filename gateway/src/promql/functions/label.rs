//! Label functions: `absent`, `label_replace`, `label_join`, `sort_by_label(_desc)`.

use super::*;

/// This family's function `c`, or `None` when `c` is not one of its functions.
pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, s: &Steps) -> Result<Option<Val>> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| nth_arg(c, i);
    let value = match name {
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
        _ => return Ok(None),
    };
    value.map(Some)
}

/// Labels `absent()` gives: the selector's equality matchers (a name matched twice is left out).
pub(super) fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        _ => return Labels::empty(),
    };
    let Ok(alternatives) = crate::promql::selector_matchers(vs) else {
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

/// The labels with `name` set to `value`, or removed when `value` is empty.
pub(super) fn set_or_delete(l: &Labels, name: &str, value: &str) -> Labels {
    let mut b = l.to_builder();
    if value.is_empty() {
        b.del(name);
    } else {
        b.set(name, value);
    }
    b.build()
}

pub(super) fn valid_label_name(s: &str) -> bool {
    crate::promql::aggregate::valid_label_name(s)
}

/// Compares strings with runs of digits compared as numbers.
pub(super) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
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
