//! Native histograms in promqltest's series notation: `{{schema:0 sum:5 count:4 buckets:[1 2 1]}}`
//! (keys `schema`, `sum`, `count`, `z_bucket`, `z_bucket_w`, `buckets`, `offset`, `n_buckets`,
//! `n_offset`, `custom_values`, `counter_reset_hint`), alone, repeated (`{{...}}x3`) or as a series
//! growing or shrinking by a histogram each step (`{{...}}+{{...}}x3`, `{{...}}-{{...}}x3`), as
//! Prometheus' series-description grammar reads them (`promql/parser`, commit d15adb9). Expected
//! histograms compare as promqltest's `compareNativeHistogram` does: both compacted, floats with the
//! usual tolerance, the counter-reset hint only when the expectation names one.

use std::sync::Arc;

use meridian_core::histogram::{CounterResetHint, FloatHistogram, Span};

use crate::queryable::HPoint;

/// A value of the series notation.
#[derive(Debug, Clone)]
pub(crate) enum TVal {
    F(f64),
    /// A histogram, and whether its counter-reset hint was written out.
    H(Arc<FloatHistogram>, bool),
}

/// Splits a values text into tokens at whitespace outside `{{ }}`.
pub(super) fn tokenize(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'{' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            start.get_or_insert(i);
            i += 2;
            continue;
        }
        if c == b'}' && bytes.get(i + 1) == Some(&b'}') && depth > 0 {
            depth -= 1;
            i += 2;
            continue;
        }
        if c.is_ascii_whitespace() && depth == 0 {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else {
            start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// The values of one token that starts with `{{`.
pub(super) fn expand(tok: &str) -> Result<Vec<TVal>, String> {
    let (first, rest) = split_desc(tok)?;
    let (base, base_hint) = parse_desc(first)?;
    if rest.is_empty() {
        return Ok(vec![TVal::H(Arc::new(base), base_hint)]);
    }
    if let Some(times) = rest.strip_prefix('x') {
        let n = repetitions(times)?;
        let h = Arc::new(base);
        return Ok((0..=n).map(|_| TVal::H(h.clone(), base_hint)).collect());
    }
    let sign = match rest.as_bytes().first() {
        Some(b'+') => 1.0,
        Some(b'-') => -1.0,
        _ => return Err(format!("unexpected {rest:?} after a histogram")),
    };
    let (inc_text, tail) = split_desc(&rest[1..])?;
    let (inc, inc_hint) = parse_desc(inc_text)?;
    let n = repetitions(
        tail.strip_prefix('x')
            .ok_or_else(|| format!("expected xN after {rest:?}"))?,
    )?;
    let mut out = vec![TVal::H(Arc::new(base.clone()), inc_hint)];
    let mut cur = base;
    for _ in 0..n {
        if cur.schema > inc.schema {
            return Err(format!(
                "error combining histograms: cannot merge from schema {} to {}",
                inc.schema, cur.schema
            ));
        }
        let mut next = cur.clone();
        let r = if sign > 0.0 {
            next.add(&inc)
        } else {
            next.sub(&inc)
        };
        r.map_err(|e| e.to_string())?;
        out.push(TVal::H(Arc::new(next.clone()), inc_hint));
        cur = next;
    }
    Ok(out)
}

fn repetitions(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("bad repetition {s:?}"))?;
    // Scripts repeat at most a few thousand times; a typo must not allocate without bound.
    if n > 1_000_000 {
        return Err(format!("repetition {n} is too large"));
    }
    Ok(n)
}

/// The text inside the leading `{{ }}` of `s`, and what follows it.
fn split_desc(s: &str) -> Result<(&str, &str), String> {
    let inner = s
        .strip_prefix("{{")
        .ok_or_else(|| format!("expected {{{{ at {s:?}"))?;
    let end = inner
        .find("}}")
        .ok_or_else(|| format!("unterminated histogram {s:?}"))?;
    Ok((&inner[..end], &inner[end + 2..]))
}

fn number(s: &str) -> Result<f64, String> {
    super::parse_value(s)
}

fn int(key: &str, s: &str) -> Result<i32, String> {
    s.parse::<i32>()
        .map_err(|_| format!("error parsing {key} number: {s}"))
}

/// A histogram description's fields (without the braces).
fn parse_desc(text: &str) -> Result<(FloatHistogram, bool), String> {
    let mut h = FloatHistogram::default();
    let mut hint_set = false;
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let (mut pos_offset, mut neg_offset) = (0, 0);
    let mut rest = text.trim();
    let mut seen: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("expected key:value in histogram at {rest:?}"))?;
        let key = rest[..colon].trim();
        if seen.contains(&key) {
            return Err(format!("duplicate key \"{key}\" in histogram"));
        }
        seen.push(key);
        let after = rest[colon + 1..].trim_start();
        let (value, tail) = if let Some(list) = after.strip_prefix('[') {
            let end = list.find(']').ok_or("unterminated bucket list")?;
            (&list[..end], &list[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        rest = tail.trim_start();
        let list =
            || -> Result<Vec<f64>, String> { value.split_whitespace().map(number).collect() };
        match key {
            "schema" => h.schema = int(key, value)?,
            "sum" => h.sum = number(value)?,
            "count" => h.count = number(value)?,
            "z_bucket" => h.zero_count = number(value)?,
            "z_bucket_w" => h.zero_threshold = number(value)?,
            "buckets" => pos = list()?,
            "n_buckets" => neg = list()?,
            "offset" => pos_offset = int(key, value)?,
            "n_offset" => neg_offset = int(key, value)?,
            "custom_values" => h.custom_values = list()?,
            "counter_reset_hint" => {
                hint_set = true;
                h.hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("error parsing counter_reset_hint: {other}")),
                }
            }
            other => return Err(format!("unknown histogram description key {other:?}")),
        }
    }
    let span = |offset: i32, n: usize| {
        if n == 0 {
            vec![]
        } else {
            vec![Span {
                offset,
                length: n as u32,
            }]
        }
    };
    h.positive_spans = span(pos_offset, pos.len());
    h.positive_buckets = pos;
    h.negative_spans = span(neg_offset, neg.len());
    h.negative_buckets = neg;
    Ok((h, hint_set))
}

/// The histograms as a query reads them back from Prometheus' TSDB, whose chunks keep counter-reset
/// hints only in their headers: a gauge stays a gauge; a histogram that starts a chunk reads as
/// `Unknown` (since v3.1), one that continues a chunk as `NotCounterReset`. A chunk is cut at a
/// counter reset (detected, or hinted), a change of schema, zero threshold or custom bounds, a switch
/// between gauge and counter, and wherever a float sample comes between.
pub(super) fn as_stored(floats: &[meridian_core::sample::Sample], hists: &[HPoint]) -> Vec<HPoint> {
    let mut out = Vec::with_capacity(hists.len());
    let mut prev: Option<&HPoint> = None;
    for p in hists {
        let h = &*p.h;
        let gauge = h.hint == CounterResetHint::Gauge;
        let continues = prev.is_some_and(|q| {
            let before = &*q.h;
            !floats.iter().any(|f| f.t > q.t && f.t < p.t)
                && (before.hint == CounterResetHint::Gauge) == gauge
                && before.schema == h.schema
                && before.zero_threshold == h.zero_threshold
                && before.custom_values == h.custom_values
                && (gauge || !h.detect_reset(before))
        });
        let hint = match (gauge, continues) {
            (true, _) => CounterResetHint::Gauge,
            (false, true) => CounterResetHint::NotCounterReset,
            (false, false) => CounterResetHint::Unknown,
        };
        let h = if hint == h.hint {
            p.h.clone()
        } else {
            let mut c = h.clone();
            c.hint = hint;
            Arc::new(c)
        };
        out.push(HPoint { t: p.t, h });
        prev = Some(p);
    }
    out
}

/// `load_with_nhcb`: the classic histograms among the series of a `load` block (`_bucket` with
/// `le`, `_count`, `_sum`) also loaded as native histograms with custom buckets under their base name,
/// one per timestamp, as Prometheus' `convertnhcb` builds them (bucket counts made non-cumulative, a
/// `+Inf` bucket of the count added when missing, float counts, compacted). A timestamp whose buckets
/// are not cumulative or disagree with the count makes no histogram.
pub(super) fn add_nhcb(
    store: &mut std::collections::BTreeMap<meridian_core::labels::Labels, super::Loaded>,
    block: &[meridian_core::labels::Labels],
) {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Temp {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        sum: f64,
    }
    let mut by_base: BTreeMap<meridian_core::labels::Labels, BTreeMap<i64, Temp>> = BTreeMap::new();
    for labels in block {
        let Some(name) = labels.metric_name() else {
            continue;
        };
        let (base, part) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 2)
        } else {
            continue;
        };
        let le = match labels
            .get("le")
            .map(super::super::functions::parse_go_float)
        {
            Some(Ok(le)) if !le.is_nan() => Some(le),
            _ if part == 0 => continue,
            _ => None,
        };
        let mut b = labels.to_builder();
        b.set("__name__", base);
        b.del("le");
        let Some(loaded) = store.get(labels) else {
            continue;
        };
        let per_t = by_base.entry(b.build()).or_default();
        for s in &loaded.floats {
            let t = per_t.entry(s.t).or_default();
            match (part, le) {
                (0, Some(le)) => t.buckets.push((le, s.v)),
                (1, _) => t.sum = s.v,
                _ => t.count = Some(s.v),
            }
        }
    }
    for (labels, per_t) in by_base {
        let mut hists = Vec::new();
        for (t, mut temp) in per_t {
            temp.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            temp.buckets.dedup_by(|a, b| a.0 == b.0);
            if temp.buckets.windows(2).any(|w| w[1].1 < w[0].1)
                || temp.buckets.iter().any(|b| b.1 < 0.0)
            {
                continue;
            }
            let count = temp
                .count
                .or_else(|| temp.buckets.last().map(|b| b.1))
                .unwrap_or(0.0);
            if temp.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
                temp.buckets.push((f64::INFINITY, count));
            }
            if temp.buckets.last().is_some_and(|b| b.1 != count) {
                continue;
            }
            let mut prev = 0.0;
            let counts: Vec<f64> = temp
                .buckets
                .iter()
                .map(|b| {
                    let c = b.1 - prev;
                    prev = b.1;
                    c
                })
                .collect();
            let mut h = FloatHistogram {
                schema: meridian_core::histogram::CUSTOM_BUCKETS_SCHEMA,
                count,
                sum: temp.sum,
                positive_spans: vec![Span {
                    offset: 0,
                    length: counts.len() as u32,
                }],
                positive_buckets: counts,
                custom_values: temp.buckets[..temp.buckets.len() - 1]
                    .iter()
                    .map(|b| b.0)
                    .collect(),
                ..FloatHistogram::default()
            };
            h.compact();
            hists.push(HPoint { t, h: Arc::new(h) });
        }
        if !hists.is_empty() {
            store.entry(labels).or_default().hists.extend(hists);
        }
    }
}

/// promqltest's comparison of an expected and a resulting histogram.
pub(super) fn matches(exp: &FloatHistogram, got: &FloatHistogram, hint_set: bool) -> bool {
    let (mut e, mut g) = (exp.clone(), got.clone());
    e.compact();
    g.compact();
    let eq = super::almost_equal;
    let buckets =
        |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(*x, *y));
    e.schema == g.schema
        && eq(e.count, g.count)
        && eq(e.sum, g.sum)
        && (!e.uses_custom_buckets() || e.custom_values == g.custom_values)
        && e.zero_threshold == g.zero_threshold
        && eq(e.zero_count, g.zero_count)
        && e.positive_spans == g.positive_spans
        && e.negative_spans == g.negative_spans
        && buckets(&e.positive_buckets, &g.positive_buckets)
        && buckets(&e.negative_buckets, &g.negative_buckets)
        && (!hint_set || e.hint == g.hint)
}

/// A histogram in the notation (for failure messages).
pub(super) fn show(h: &FloatHistogram) -> String {
    let mut h = h.clone();
    h.compact();
    let mut parts = vec![
        format!("schema:{}", h.schema),
        format!("count:{}", h.count),
        format!("sum:{}", h.sum),
    ];
    if h.zero_count != 0.0 {
        parts.push(format!("z_bucket:{}", h.zero_count));
    }
    if h.zero_threshold != 0.0 {
        parts.push(format!("z_bucket_w:{}", h.zero_threshold));
    }
    if !h.custom_values.is_empty() {
        parts.push(format!("custom_values:{:?}", h.custom_values));
    }
    parts.push(format!(
        "pos:{:?}",
        meridian_core::histogram::ops::pairs(&h.positive_spans, &h.positive_buckets)
    ));
    parts.push(format!(
        "neg:{:?}",
        meridian_core::histogram::ops::pairs(&h.negative_spans, &h.negative_buckets)
    ));
    parts.push(format!("hint:{:?}", h.hint));
    format!("{{{{{}}}}}", parts.join(" "))
}
