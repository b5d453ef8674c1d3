//! Exposition format parser: Prometheus text format 0.0.4 and OpenMetrics 1.0, zero-copy over the body.
//!
//! Names and label values are borrowed from the input unless they contain escapes. Where the formats
//! differ:
//!
//! | | text 0.0.4 | OpenMetrics 1.0 |
//! |---|---|---|
//! | timestamps | integer milliseconds | float seconds |
//! | `# UNIT`, exemplars (`# {…} v [ts]`) | — | yes |
//! | `# EOF` | — | required last line (a truncated body is an error) |
//!
//! Values parse like Go's `strconv.ParseFloat`, and `NaN` yields Go's NaN bits (`0x7ff8000000000001`), so
//! what we store is bit-identical to what Prometheus stores. Metric names may contain `:`, and label
//! values may contain `,`, `=`, `}` and (escaped) quotes — the cases `prometheus-parse` gets wrong.
//! Errors name the line.

use std::borrow::Cow;

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces (text when unknown, as Prometheus falls back).
    pub fn from_content_type(ct: &str) -> Format {
        if ct.trim_start().starts_with("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The `Accept` header Prometheus 2.42 sends when scraping: OpenMetrics preferred, text as fallback.
pub const SCRAPE_ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Go's `math.NaN()`: the NaN Prometheus stores for a parsed "NaN".
pub const GO_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// A metric family type from `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    fn parse(s: &str, format: Format) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" if format == Format::Text => MetricType::Unknown,
            "unknown" if format == Format::OpenMetrics => MetricType::Unknown,
            "gaugehistogram" if format == Format::OpenMetrics => MetricType::GaugeHistogram,
            "info" if format == Format::OpenMetrics => MetricType::Info,
            "stateset" if format == Format::OpenMetrics => MetricType::StateSet,
            _ => return None,
        })
    }

    /// The name Prometheus' metadata API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// The labels of a sample: a validated view of the exposition text, parsed again (without allocating,
/// unless a value has escapes) when iterated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawLabels<'a> {
    /// The text between `{` and `}`.
    src: &'a str,
    count: usize,
}

impl<'a> RawLabels<'a> {
    /// Labels written as the text format writes them (`name="value",…`, values escaped), `count` of
    /// them (the protobuf format's samples, laid out as text).
    pub(crate) fn from_parts(src: &'a str, count: usize) -> RawLabels<'a> {
        RawLabels { src, count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(name, value)` pairs in exposition order.
    pub fn iter(&self) -> RawLabelsIter<'a> {
        RawLabelsIter { s: self.src }
    }
}

/// Iterator over [`RawLabels`].
#[derive(Debug)]
pub struct RawLabelsIter<'a> {
    s: &'a str,
}

impl<'a> Iterator for RawLabelsIter<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was validated by the parser: `ws name ws = ws "value" ws ,` repeated.
        let s = self.s.trim_start_matches([' ', '\t', ',']);
        let eq = s.find('=')?;
        let name = s[..eq].trim_end_matches([' ', '\t']);
        let rest = s[eq + 1..]
            .trim_start_matches([' ', '\t'])
            .strip_prefix('"')?;
        let b = rest.as_bytes();
        let (mut i, mut escaped) = (0, false);
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                escaped = true;
                i += 1;
            }
            i += 1;
        }
        let raw = rest.get(..i)?;
        self.s = rest.get(i + 1..).unwrap_or("");
        let value = if escaped {
            unescape(raw, true).unwrap_or(Cow::Borrowed(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some((name, value))
    }
}

/// An exemplar attached to a sample (OpenMetrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
    /// Milliseconds.
    pub timestamp: Option<i64>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Sample {
        name: &'a str,
        /// The series as written, `name{labels}`: a cache key that needs no parsing (two spellings of one
        /// series give two keys, which only costs a cache entry).
        series: &'a str,
        /// In exposition order (not sorted), without `__name__`.
        labels: RawLabels<'a>,
        value: f64,
        /// Milliseconds.
        timestamp: Option<i64>,
        exemplar: Option<Exemplar<'a>>,
    },
    Help {
        metric: &'a str,
        text: Cow<'a, str>,
    },
    Type {
        metric: &'a str,
        kind: MetricType,
    },
    Unit {
        metric: &'a str,
        unit: &'a str,
    },
    /// A native-histogram sample (the protobuf format only).
    Histogram {
        name: &'a str,
        series: &'a str,
        labels: RawLabels<'a>,
        value: &'a meridian_core::histogram::HistogramValue,
        timestamp: Option<i64>,
    },
}

/// A body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {snippet:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
    /// The start of the offending line.
    pub snippet: String,
}

/// Iterates over the entries of a body.
#[derive(Debug)]
pub struct Parser<'a> {
    body: &'a str,
    pos: usize,
    line: usize,
    format: Format,
    saw_eof: bool,
    done: bool,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a str, format: Format) -> Parser<'a> {
        Parser {
            body,
            pos: 0,
            line: 0,
            format,
            saw_eof: false,
            done: false,
        }
    }

    fn err(&self, line: &str, reason: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            reason: reason.into(),
            snippet: line.chars().take(80).collect(),
        }
    }

    fn parse_line(&self, line: &'a str) -> Result<Option<Entry<'a>>, ParseError> {
        if let Some(rest) = line.strip_prefix('#') {
            return self.parse_comment(line, rest);
        }
        if line.trim().is_empty() {
            if self.format == Format::OpenMetrics {
                return Err(self.err(line, "empty line"));
            }
            return Ok(None);
        }
        self.parse_sample(line).map(Some)
    }

    fn parse_comment(&self, line: &'a str, rest: &'a str) -> Result<Option<Entry<'a>>, ParseError> {
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (keyword, tail) = split_word(rest);
        match keyword {
            "HELP" => {
                let (metric, text) = split_word(tail);
                if !valid_metric_name(metric) {
                    return Err(self.err(line, format!("invalid metric name {metric:?} in HELP")));
                }
                let text = unescape(text, self.format == Format::OpenMetrics)
                    .ok_or_else(|| self.err(line, "invalid escape in HELP"))?;
                Ok(Some(Entry::Help { metric, text }))
            }
            "TYPE" => {
                let (metric, kind) = split_word(tail);
                if !valid_metric_name(metric) {
                    return Err(self.err(line, format!("invalid metric name {metric:?} in TYPE")));
                }
                let kind = MetricType::parse(kind.trim(), self.format).ok_or_else(|| {
                    self.err(line, format!("invalid metric type {:?}", kind.trim()))
                })?;
                Ok(Some(Entry::Type { metric, kind }))
            }
            "UNIT" if self.format == Format::OpenMetrics => {
                let (metric, unit) = split_word(tail);
                Ok(Some(Entry::Unit {
                    metric,
                    unit: unit.trim(),
                }))
            }
            "EOF" if self.format == Format::OpenMetrics && tail.is_empty() => Ok(None),
            _ if self.format == Format::OpenMetrics => Err(self.err(line, "invalid comment line")),
            // Text format: any other comment is ignored.
            _ => Ok(None),
        }
    }

    fn parse_sample(&self, line: &'a str) -> Result<Entry<'a>, ParseError> {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() && is_name_byte(b[i], i == 0) {
            i += 1;
        }
        let name = &line[..i];
        if name.is_empty() {
            return Err(self.err(line, "expected a metric name"));
        }
        let mut labels = RawLabels::default();
        if b.get(i) == Some(&b'{') {
            let start = i + 1;
            let (end, count) = self.check_labels(line, start)?;
            labels = RawLabels {
                src: &line[start..end - 1],
                count,
            };
            i = end;
        }
        let series = &line[..i];
        let rest = &line[i..];
        if !rest.starts_with([' ', '\t']) {
            return Err(self.err(line, "expected a space before the value"));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (value_s, rest) = split_token(rest);
        let value = parse_float(value_s)
            .ok_or_else(|| self.err(line, format!("invalid value {value_s:?}")))?;
        // Then an optional timestamp, then (OpenMetrics) an optional exemplar after '#'. Every slice here
        // is a suffix of `line`, so the exemplar can borrow from it.
        let (timestamp, rest) = if rest.is_empty() || rest.starts_with('#') {
            (None, rest)
        } else {
            let (ts_s, r) = split_token(rest);
            (Some(self.parse_timestamp(line, ts_s)?), r)
        };
        let exemplar = match rest.strip_prefix('#') {
            Some(_) if self.format != Format::OpenMetrics => {
                return Err(self.err(line, "exemplars need the OpenMetrics format"));
            }
            Some(ex) => Some(self.parse_exemplar(line, ex)?),
            None if !rest.trim().is_empty() => {
                return Err(self.err(
                    line,
                    format!("unexpected {:?} after the sample", rest.trim()),
                ));
            }
            None => None,
        };
        Ok(Entry::Sample {
            name,
            series,
            labels,
            value,
            timestamp,
            exemplar,
        })
    }

    /// Validates `name="value",...}` starting after `{`; returns the index after `}` and the number of
    /// labels. Duplicate names are found without allocating for up to 16 labels.
    fn check_labels(&self, line: &'a str, start: usize) -> Result<(usize, usize), ParseError> {
        let mut seen: [&str; 16] = [""; 16];
        let mut more: Vec<&str> = Vec::new();
        let mut count = 0;
        let end = self.scan_labels(line, start, &mut |name, _| {
            let dup = seen[..count.min(16)].contains(&name) || more.contains(&name);
            if count < 16 {
                seen[count] = name;
            } else {
                more.push(name);
            }
            count += 1;
            !dup
        })?;
        Ok((end, count))
    }

    /// Parses `name="value",...}` starting after `{`; returns the index after `}`.
    fn parse_labels(
        &self,
        line: &'a str,
        start: usize,
        out: &mut Vec<(&'a str, Cow<'a, str>)>,
    ) -> Result<usize, ParseError> {
        let mut bad_escape = false;
        let end = self.scan_labels(line, start, &mut |name, raw| {
            let dup = out.iter().any(|(n, _)| *n == name);
            match unescape(raw, true) {
                Some(v) => out.push((name, v)),
                None => bad_escape = true,
            }
            !dup
        })?;
        if bad_escape {
            return Err(self.err(line, "invalid escape in a label value"));
        }
        Ok(end)
    }

    /// Walks `name="value",...}` from `i` (after `{`), calling `each(name, raw value)`; `each` returns
    /// false for a duplicate name. Returns the index after `}`.
    fn scan_labels(
        &self,
        line: &'a str,
        mut i: usize,
        each: &mut dyn FnMut(&'a str, &'a str) -> bool,
    ) -> Result<usize, ParseError> {
        let b = line.as_bytes();
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if b.get(i) == Some(&b'}') {
                return Ok(i + 1);
            }
            let start = i;
            while i < b.len() && is_label_byte(b[i], i == start) {
                i += 1;
            }
            let name = &line[start..i];
            if name.is_empty() {
                return Err(self.err(line, "expected a label name"));
            }
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if b.get(i) != Some(&b'=') {
                return Err(self.err(line, format!("expected '=' after label {name:?}")));
            }
            i += 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if b.get(i) != Some(&b'"') {
                return Err(self.err(
                    line,
                    format!("expected '\"' for the value of label {name:?}"),
                ));
            }
            i += 1;
            let vstart = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(self.err(line, format!("unterminated value of label {name:?}")));
            }
            if !each(name, &line[vstart..i]) {
                return Err(self.err(line, format!("duplicate label {name:?}")));
            }
            i += 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => return Ok(i + 1),
                _ => return Err(self.err(line, "expected ',' or '}' after a label")),
            }
        }
    }

    fn parse_timestamp(&self, line: &str, s: &str) -> Result<i64, ParseError> {
        match self.format {
            Format::Text => s
                .parse::<i64>()
                .map_err(|_| self.err(line, format!("invalid timestamp {s:?}"))),
            Format::OpenMetrics => {
                let secs = parse_float(s)
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| self.err(line, format!("invalid timestamp {s:?}")))?;
                // As Prometheus: float seconds to integer milliseconds, truncating.
                Ok((secs * 1000.0) as i64)
            }
        }
    }

    fn parse_exemplar(&self, line: &'a str, ex: &'a str) -> Result<Exemplar<'a>, ParseError> {
        let ex = ex.trim_start();
        let Some(after) = ex.strip_prefix('{') else {
            return Err(self.err(line, "exemplar without labels"));
        };
        let start = line.len() - after.len();
        let mut labels = Vec::new();
        let end = self.parse_labels(line, start, &mut labels)?;
        let rest = line[end..].trim_start_matches([' ', '\t']);
        let (value_s, rest) = split_token(rest);
        let value = parse_float(value_s)
            .ok_or_else(|| self.err(line, format!("invalid exemplar value {value_s:?}")))?;
        let (ts_s, rest) = split_token(rest);
        let timestamp = if ts_s.is_empty() {
            None
        } else {
            Some(self.parse_timestamp(line, ts_s)?)
        };
        if !rest.trim().is_empty() {
            return Err(self.err(line, "unexpected text after the exemplar"));
        }
        Ok(Exemplar {
            labels,
            value,
            timestamp,
        })
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.pos >= self.body.len() {
                self.done = true;
                if self.format == Format::OpenMetrics && !self.saw_eof {
                    return Some(Err(ParseError {
                        line: self.line,
                        reason: "OpenMetrics body without '# EOF' (truncated?)".into(),
                        snippet: String::new(),
                    }));
                }
                return None;
            }
            let rest = &self.body[self.pos..];
            let (line, adv) = match rest.find('\n') {
                Some(n) => (&rest[..n], n + 1),
                None => (rest, rest.len()),
            };
            self.pos += adv;
            self.line += 1;
            if self.saw_eof {
                self.done = true;
                return Some(Err(self.err(line, "content after '# EOF'")));
            }
            if self.format == Format::OpenMetrics && line == "# EOF" {
                self.saw_eof = true;
                continue;
            }
            let line = if self.format == Format::Text {
                line.trim_end_matches('\r')
            } else {
                line
            };
            match self.parse_line(line) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

#[inline]
fn is_name_byte(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || (!first && c.is_ascii_digit())
}

#[inline]
fn is_label_byte(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (!first && c.is_ascii_digit())
}

pub(crate) fn valid_metric_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().enumerate().all(|(i, c)| is_name_byte(c, i == 0))
}

/// Resolves `\\`, `\n` and (in label values and OpenMetrics HELP) `\"`. Unknown escapes are kept as
/// written, as Prometheus does.
fn unescape(s: &str, quotes: bool) -> Option<Cow<'_, str>> {
    if !s.contains('\\') {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Some(Cow::Owned(out))
}

/// Go's `strconv.ParseFloat(s, 64)` for the spellings exposition formats use; `NaN` gives Go's NaN bits.
pub fn parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let digits_start = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    match b.get(digits_start) {
        Some(c) if c.is_ascii_digit() || *c == b'.' => {}
        _ => {
            // The rare words: no allocation, case-insensitive as in Go.
            let word = &s[digits_start..];
            let neg = b.first() == Some(&b'-');
            return if word.eq_ignore_ascii_case("nan") && digits_start == 0 {
                Some(f64::from_bits(GO_NAN_BITS))
            } else if word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity") {
                Some(if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else {
                None
            };
        }
    }
    // Digits, '.', exponents and signs only: Rust would accept nothing Go rejects here except '_'
    // separators, which Go allows only with a base prefix.
    if b.iter()
        .any(|c| !(c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, labels, value bits, timestamp) of every sample.
    type Flat = (String, Vec<(String, String)>, u64, Option<i64>);

    fn samples(body: &str, f: Format) -> Vec<Flat> {
        Parser::new(body, f)
            .filter_map(|e| match e.unwrap() {
                Entry::Sample {
                    name,
                    labels,
                    value,
                    timestamp,
                    ..
                } => Some((
                    name.to_owned(),
                    labels
                        .iter()
                        .map(|(n, v)| (n.to_owned(), v.into_owned()))
                        .collect(),
                    value.to_bits(),
                    timestamp,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn what_prometheus_parse_gets_wrong() {
        let body = "# TYPE node:cpu:rate5m gauge\nnode:cpu:rate5m{path=\"/a,b=c}\",q=\"x\\\"y\\\\z\\nw\"} 0.25\n";
        let s = samples(body, Format::Text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "node:cpu:rate5m");
        assert_eq!(
            s[0].1,
            vec![
                ("path".into(), "/a,b=c}".into()),
                ("q".into(), "x\"y\\z\nw".into())
            ]
        );
        assert_eq!(f64::from_bits(s[0].2), 0.25);
    }

    #[test]
    fn text_format() {
        let body = "# HELP http_requests_total The total\\nnumber of \\\\ requests.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"post\",code=\"200\",} 1027 1395066363000\nhttp_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\n# a comment\nmetric_without_timestamp_and_labels 12.47\nsomething_weird{problem=\"division by zero\"} +Inf -3982045\nnan_value NaN\nneg -Inf\nsci 1.458255915e9\n";
        let entries: Vec<Entry> = Parser::new(body, Format::Text)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            entries[0],
            Entry::Help {
                metric: "http_requests_total",
                text: Cow::Owned("The total\nnumber of \\ requests.".into())
            }
        );
        assert_eq!(
            entries[1],
            Entry::Type {
                metric: "http_requests_total",
                kind: MetricType::Counter
            }
        );
        let s = samples(body, Format::Text);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].3, Some(1395066363000));
        assert_eq!(s[0].1.len(), 2);
        assert_eq!(f64::from_bits(s[3].2), f64::INFINITY);
        assert_eq!(s[3].3, Some(-3982045));
        assert_eq!(s[4].2, GO_NAN_BITS);
        assert_eq!(f64::from_bits(s[6].2), 1.458255915e9);
    }

    #[test]
    fn openmetrics_format() {
        let body = "# TYPE acme_http_router_request_seconds summary\n# UNIT acme_http_router_request_seconds seconds\n# HELP acme_http_router_request_seconds Latency though all of ACME's \"HTTP\" router.\nacme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32 1520879607.789\nacme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n# TYPE foo histogram\nfoo_bucket{le=\"0.1\"} 8 # {trace_id=\"KOO5S4vxi0o\"} 0.067 1520879602.219\nfoo_bucket{le=\"+Inf\"} 17\n# EOF\n";
        let entries: Vec<Entry> = Parser::new(body, Format::OpenMetrics)
            .map(Result::unwrap)
            .collect();
        assert!(entries.contains(&Entry::Unit {
            metric: "acme_http_router_request_seconds",
            unit: "seconds"
        }));
        let s = samples(body, Format::OpenMetrics);
        assert_eq!(s[0].3, Some(1520879607789));
        let ex = entries
            .iter()
            .find_map(|e| match e {
                Entry::Sample {
                    exemplar: Some(x), ..
                } => Some(x.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(ex.labels, vec![("trace_id", Cow::Borrowed("KOO5S4vxi0o"))]);
        assert_eq!(ex.value, 0.067);
        assert_eq!(ex.timestamp, Some(1520879602219));
    }

    #[test]
    fn openmetrics_needs_eof() {
        let truncated = "# TYPE a counter\na_total 1\n";
        let r: Vec<_> = Parser::new(truncated, Format::OpenMetrics).collect();
        assert!(
            r.last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .reason
                .contains("EOF")
        );
        let after = "a 1\n# EOF\nb 2\n";
        assert!(Parser::new(after, Format::OpenMetrics).any(|e| e.is_err()));
    }

    #[test]
    fn errors_name_the_line() {
        for (body, want) in [
            ("ok 1\nbad{a=\"x} 1\n", "unterminated"),
            ("ok 1\n\nbad{a=x} 1\n", "expected '\"'"),
            ("m{a=\"1\",a=\"2\"} 1\n", "duplicate label"),
            ("m one\n", "invalid value"),
            ("m 1 12.5\n", "invalid timestamp"),
            ("m 1 # {a=\"b\"} 1\n", "exemplars need"),
            ("# TYPE m countr\n", "invalid metric type"),
            ("9m 1\n", "expected a metric name"),
        ] {
            let err = Parser::new(body, Format::Text)
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("{body:?} accepted"));
            assert!(err.reason.contains(want), "{body:?}: {err}");
            assert!(err.to_string().starts_with("line "), "{err}");
        }
        let e = Parser::new("ok 1\n\nbad{a=x} 1\n", Format::Text)
            .find_map(Result::err)
            .unwrap();
        assert_eq!(e.line, 3);
    }

    proptest::proptest! {
        /// A fuzz-style property: any input ends in entries or one error, never a panic or a loop.
        #[test]
        fn never_panics(body in "(\\PC|[{}=\",#\\\n ])*", om in proptest::bool::ANY) {
            let f = if om { Format::OpenMetrics } else { Format::Text };
            let mut n = 0;
            for e in Parser::new(&body, f) {
                if let Ok(Entry::Sample { labels, .. }) = e {
                    n += labels.iter().count();
                }
                n += 1;
                proptest::prop_assert!(n <= body.len() * 4 + 4);
            }
        }

        /// Sample lines built from arbitrary names and escaped values come back exactly.
        #[test]
        fn roundtrip_lines(name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", values in proptest::collection::vec("\\PC{0,12}", 0..4), v in proptest::num::f64::NORMAL, ts in proptest::num::i64::ANY) {
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let labels: Vec<(String, String)> = values.iter().enumerate().map(|(i, x)| (format!("l{i}"), x.clone())).collect();
            let body = format!(
                "{name}{{{}}} {v:?} {ts}\n",
                labels.iter().map(|(n, x)| format!("{n}=\"{}\"", esc(x))).collect::<Vec<_>>().join(",")
            );
            let got = samples(&body, Format::Text);
            proptest::prop_assert_eq!(got, vec![(name.clone(), labels, v.to_bits(), Some(ts))]);
        }
    }

    #[test]
    fn content_negotiation() {
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4"),
            Format::Text
        );
        assert_eq!(Format::from_content_type(""), Format::Text);
        assert!(SCRAPE_ACCEPT_HEADER.starts_with("application/openmetrics-text;version=1.0.0"));
    }

    #[test]
    fn floats_like_go() {
        assert_eq!(parse_float("1e3"), Some(1000.0));
        assert_eq!(parse_float("-0"), Some(-0.0));
        assert_eq!(parse_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("nan").map(f64::to_bits), Some(GO_NAN_BITS));
        assert_eq!(parse_float("1_000"), None);
        assert_eq!(parse_float("0x10"), None);
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("1.5"), Some(1.5));
    }
}
