//! Request parameters as Prometheus reads them: from the URL and from a form-encoded body (the body's
//! values first, as Go's `Request.FormValue`), repeated keys (`match[]`) from both; times as Unix seconds
//! (float) or RFC 3339; durations as float seconds or Prometheus durations (`1m0s`, `1h30m`).

use meridian_core::error::{Error, Result};
use meridian_core::matcher::Matcher;

/// Every `(name, value)` pair of a request, body first.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Reads the URL query and, when the body is a form, the body.
    pub fn parse(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Result<Params> {
        let mut pairs = Vec::new();
        let is_form = content_type.is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if is_form && !body.is_empty() {
            if std::str::from_utf8(body).is_err() {
                return Err(Error::bad_data(
                    "error parsing form values: the body is not valid UTF-8",
                ));
            }
            pairs.extend(
                form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        if let Some(q) = query {
            pairs.extend(
                form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        Ok(Params { pairs })
    }

    /// Builds parameters from pairs (tests, internal callers).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Params {
        Params {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The first value of `name`, `""` when absent (Go's `FormValue`).
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every pair, in order (for cache keys).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A time parameter, `default` when absent or empty.
    pub fn time(&self, name: &str, default: i64) -> Result<i64> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(default);
        }
        parse_time(v)
            .map_err(|e| invalid_param(name, &format!("invalid time value for '{name}': {e}")))
    }

    /// A required time parameter (`query_range`'s `start` and `end`).
    pub fn required_time(&self, name: &str) -> Result<i64> {
        parse_time(self.get(name)).map_err(|e| invalid_param(name, &e))
    }

    /// A `limit` parameter: 0 (none) when absent.
    pub fn limit(&self) -> Result<usize> {
        let v = self.get("limit");
        if v.is_empty() {
            return Ok(0);
        }
        match v.parse::<i64>() {
            Ok(n) if n < 0 => Err(invalid_param("limit", "limit must be non-negative")),
            Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(_) => Err(invalid_param(
                "limit",
                &format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
            )),
        }
    }

    /// A boolean Thanos parameter (`dedup`, `partial_response`): `None` when absent.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        let v = self.get(name);
        if v.is_empty() {
            return Ok(None);
        }
        // Go's strconv.ParseBool.
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
            _ => Err(invalid_param(
                name,
                &format!("strconv.ParseBool: parsing {v:?}: invalid syntax"),
            )),
        }
    }

    /// The matcher sets of a repeated selector parameter (`match[]`, `storeMatch[]`).
    pub fn matcher_sets(&self, name: &str) -> Result<Vec<Vec<Matcher>>> {
        self.all(name)
            .into_iter()
            .map(parse_metric_selector)
            .collect()
    }
}

/// `invalid parameter "name": why`, a `bad_data` error.
pub fn invalid_param(name: &str, why: &str) -> Error {
    Error::bad_data(format!("invalid parameter {name:?}: {why}"))
}

/// Milliseconds of a Prometheus API time: Unix seconds (float, rounded to the millisecond) or RFC 3339.
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("cannot parse {s:?} to a valid timestamp");
    if let Some(f) = parse_go_float(s) {
        if !f.is_finite() {
            return Err(bad());
        }
        // Go: whole seconds, then the fraction rounded to the millisecond.
        let whole = f.trunc();
        let frac = ((f - whole) * 1000.0).round();
        let ms = whole * 1000.0 + frac;
        // Prometheus' own range ([MinTime, MaxTime]): every time computed from a request stays in
        // i64 milliseconds, whatever lookback, range or offset is taken from it.
        if !(ms >= MIN_TIME as f64 && ms <= MAX_TIME as f64) {
            return Err(format!("{}: out of range", bad()));
        }
        return Ok(ms as i64);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        return i64::try_from(ms).map_err(|_| bad());
    }
    match s {
        // Prometheus' own min and max times, which Go's parser cannot read back.
        "-292273086-05-16T16:47:06Z" => Ok(MIN_TIME),
        "292277025-08-18T07:12:54.999999999Z" => Ok(MAX_TIME),
        _ => Err(bad()),
    }
}

/// Prometheus' `MinTime` and `MaxTime` (the defaults of optional ranges), in milliseconds.
pub const MIN_TIME: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
pub const MAX_TIME: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// Go's `strconv.ParseFloat` on the forms an API client sends (decimal, exponent, `Inf`, `NaN`, hex
/// floats left out); `None` when `s` is not a number.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return s.parse::<f64>().ok();
    }
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Nanoseconds of a Prometheus API duration: float seconds or a Prometheus duration (`1m0s`, `1h30m`).
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    if let Some(f) = parse_go_float(s) {
        let ns = f * 1e9;
        if !ns.is_finite() || ns > i64::MAX as f64 || ns < i64::MIN as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        // Negative durations become zero: the callers refuse a zero step, and a zero timeout expires.
        return Ok(std::time::Duration::from_nanos(ns.max(0.0) as u64));
    }
    meridian_core::promfmt::parse_duration(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// One `match[]` value: a vector selector (`up`, `{job="x"}`), no offset or `@`.
pub fn parse_metric_selector(s: &str) -> Result<Vec<Matcher>> {
    use promql_parser::parser::Expr;
    if s.len() > crate::promql::DEFAULT_MAX_QUERY_LENGTH {
        return Err(Error::bad_data(format!(
            "the selector is {} bytes long, longer than the limit of {} bytes",
            s.len(),
            crate::promql::DEFAULT_MAX_QUERY_LENGTH
        )));
    }
    // Only a selector is accepted: anything deeper is refused before it is parsed (on an async worker,
    // where a long, deep expression would take a while).
    let not_selector = || {
        Error::bad_data(format!(
            "{s:?} is not a series selector (a metric name and/or label matchers)"
        ))
    };
    if crate::promql::guard::depth_bound(s).map_err(Error::bad_data)? > 2 {
        return Err(not_selector());
    }
    let expr = crate::promql::parse_expr(s).map_err(Error::bad_data)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(not_selector());
    };
    if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
        return Err(Error::bad_data(format!(
            "{s:?} is not a plain series selector (no offset, @ or \"or\")"
        )));
    }
    let sets = crate::promql::selector_matchers(&vs)?;
    let ms = sets.into_iter().next().unwrap_or_default();
    if ms.iter().all(|m| m.matches("")) {
        return Err(Error::bad_data(
            "match[] must contain at least one non-empty matcher",
        ));
    }
    Ok(ms)
}

/// A label name from the URL path: `U__`-escaped names (Prometheus' value-encoding escaping, for names
/// that are not valid in a path) are unescaped: `__` is `_`, `_1f600_` is the code point U+1F600.
pub fn unescape_label_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else {
        return name.to_owned();
    };
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let mut hex = String::new();
        loop {
            match chars.next() {
                Some('_') => break,
                Some(h) if h.is_ascii_hexdigit() => hex.push(h),
                // Not a valid escape: the name is taken as it is.
                _ => return name.to_owned(),
            }
        }
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(ch) => out.push(ch),
            None => return name.to_owned(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_prometheus_parses_them() {
        assert_eq!(parse_time("4"), Ok(4000));
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1.0006"), Ok(1001));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1e3"), Ok(1_000_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00"),
            Ok(1_435_781_451_000)
        );
        // Grafana's exemplar probe sends milliseconds; they are (far-future) seconds, not an error.
        assert_eq!(parse_time("1637830000000"), Ok(1_637_830_000_000_000));
        assert_eq!(
            parse_time("abc"),
            Err("cannot parse \"abc\" to a valid timestamp".into())
        );
        assert!(parse_time("").is_err());
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_time("-292273086-05-16T16:47:06Z"), Ok(MIN_TIME));
        // Outside Prometheus' time range.
        for s in ["-1e300", "1e300", "1e17", "-9223372036854775.808"] {
            assert_eq!(
                parse_time(s),
                Err(format!(
                    "cannot parse {s:?} to a valid timestamp: out of range"
                )),
                "{s}"
            );
        }
        assert_eq!(parse_time("9223309901257"), Ok(9_223_309_901_257_000));
    }

    #[test]
    fn durations_as_prometheus_parses_them() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(d("15"), Ok(15_000));
        assert_eq!(d("0.5"), Ok(500));
        assert_eq!(d("1m0s"), Ok(60_000));
        assert_eq!(d("1h30m"), Ok(5_400_000));
        assert_eq!(d("2d"), Ok(172_800_000));
        assert_eq!(d("100ms"), Ok(100));
        assert_eq!(d("1m30s500ms"), Ok(90_500));
        assert!(d("30s1m").is_err(), "units out of order");
        assert!(d("1x").is_err());
        assert!(d("").is_err());
        assert_eq!(
            d("abc"),
            Err("cannot parse \"abc\" to a valid duration".into())
        );
        assert_eq!(
            d("-1"),
            Ok(0),
            "negative steps become zero, refused by the caller"
        );
    }

    #[test]
    fn form_body_comes_before_url() {
        let p = Params::parse(
            Some("query=url&match%5B%5D=a"),
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"query=body&match[]=b",
        )
        .unwrap_or_default();
        assert_eq!(p.get("query"), "body");
        assert_eq!(p.all("match[]"), ["b", "a"]);
        assert_eq!(p.get("absent"), "");
        let p = Params::parse(Some("a=1"), Some("application/json"), b"a=2").unwrap_or_default();
        assert_eq!(p.get("a"), "1");
    }

    #[test]
    fn selectors_need_a_non_empty_matcher() {
        assert_eq!(parse_metric_selector("up").map(|m| m.len()).ok(), Some(1));
        assert!(parse_metric_selector("{job=\"a\"}").is_ok());
        let e = parse_metric_selector("{job=~\".*\"}")
            .err()
            .map(|e| e.message);
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("at least one non-empty matcher")),
            "{e:?}"
        );
        assert!(parse_metric_selector("rate(up[5m])").is_err());
        let deep = format!("{}up", "-".repeat(1000));
        let e = parse_metric_selector(&deep).err().map(|e| e.message);
        assert!(e.is_some_and(|e| {
            e.ends_with("is not a series selector (a metric name and/or label matchers)")
        }));
        assert!(parse_metric_selector("up{").is_err());
    }

    #[test]
    fn escaped_label_names() {
        assert_eq!(unescape_label_name("job"), "job");
        assert_eq!(unescape_label_name("U__http_2e_status"), "http.status");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
        assert_eq!(unescape_label_name("U__x_1f600_"), "x\u{1f600}");
        assert_eq!(unescape_label_name("U__bad_zz_"), "U__bad_zz_");
    }
}
