//! JSON exactly as Prometheus' HTTP API writes it, by hand (results can be hundreds of MB; a writer
//! into one buffer is several times faster than building `serde_json::Value`s):
//!
//! - sample values are strings in Go's `strconv.FormatFloat(v, 'f', -1, 64)` form, switching to the `'e'`
//!   form (`1e-07`, `1e+21`) outside `[1e-6, 1e21)`, and `NaN`, `+Inf`, `-Inf`;
//! - timestamps are JSON numbers in seconds, the milliseconds (when not zero) as three digits after the
//!   dot (`1435781451.781`, `1.500`), never in exponent form;
//! - strings are escaped as Go's `encoding/json` does, HTML characters included (`<` is `\u003c`);
//! - label sets are objects with their names in byte order (Go sorts map keys);
//! - native histograms are `{"count":…,"sum":…,"buckets":[[kind,lower,upper,count],…]}` under
//!   `histogram` (vectors) and `histograms` (matrices, beside `values`);
//! - the envelope is `{"status":"success","data":…,"warnings":[…],"infos":[…]}`, the lists left out when
//!   empty, and errors are `{"status":"error","errorType":…,"error":…}`.

use std::io::Write as _;

use meridian_core::error::Error;
use meridian_core::histogram::FloatHistogram;
use meridian_core::labels::Labels;

use crate::promql::QueryValue;
use crate::queryable::SeriesData;

/// Writes `v` as Prometheus writes sample values: a quoted Go float.
pub fn float(out: &mut Vec<u8>, v: f64) {
    out.push(b'"');
    float_unquoted(out, v);
    out.push(b'"');
}

/// Go's `strconv.AppendFloat(v, 'f' or 'e', -1, 64)` as Prometheus' `MarshalFloat` chooses: `'e'` when
/// `|v|` is below 1e-6 or at least 1e21. Rust and Go both print the shortest digits that round-trip, so
/// only the exponent's spelling differs (Go: sign and at least two digits).
pub fn float_unquoted(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        out.extend_from_slice(mantissa.as_bytes());
        out.push(b'e');
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => (b'-', d),
            None => (b'+', exp),
        };
        out.push(sign);
        if digits.len() < 2 {
            out.push(b'0');
        }
        out.extend_from_slice(digits.as_bytes());
    } else if v.fract() == 0.0 && abs < 1e15 {
        // Whole numbers (counters, most gauges) without the formatting machinery; the same digits.
        if v.is_sign_negative() {
            out.push(b'-');
        }
        write_u64(out, abs as u64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Decimal digits of `n`.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A millisecond timestamp in seconds, as Prometheus' `MarshalTimestamp`: the whole seconds, then, when
/// the milliseconds are not zero, a dot and the milliseconds as three digits (`1.5 s` is `1.500`).
pub fn timestamp(out: &mut Vec<u8>, t: i64) {
    if t < 0 {
        out.push(b'-');
    }
    let t = t.unsigned_abs();
    write_u64(out, t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let digit = |d: u64| b'0' + (d % 10) as u8;
        out.extend_from_slice(&[b'.', digit(frac / 100), digit(frac / 10), digit(frac)]);
    }
}

/// A JSON string, escaped as Go's `encoding/json` (with HTML escaping, as Prometheus' jsoniter config).
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            b'<' => Some(b"\\u003c"),
            b'>' => Some(b"\\u003e"),
            b'&' => Some(b"\\u0026"),
            0..=0x1f => None,
            // U+2028 and U+2029 (E2 80 A8/A9) are escaped by Go too.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                None
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => {
                out.extend_from_slice(e);
                start = i + 1;
            }
            None if b < 0x20 => {
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
            }
            None => {
                let last = if bytes[i + 2] == 0xa8 { '8' } else { '9' };
                let _ = write!(out, "\\u202{last}");
                start = i + 3;
            }
        }
    }
    // A U+2028/9 escape may have moved `start` past the bytes the loop still walks; those are
    // continuation bytes (>= 0x80) and never escaped themselves.
    if start < bytes.len() {
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

/// A label set as a JSON object.
pub fn labels(out: &mut Vec<u8>, l: &Labels) {
    out.push(b'{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, x.name);
        out.push(b':');
        string(out, x.value);
    }
    out.push(b'}');
}

/// A JSON array of `items`, each written by `item`.
fn array<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
    }
    out.push(b']');
}

/// A list of strings.
pub fn strings<S: AsRef<str>>(out: &mut Vec<u8>, list: &[S]) {
    array(out, list, |out, s| string(out, s.as_ref()));
}

/// A list of label sets (`/api/v1/series`).
pub fn label_sets(out: &mut Vec<u8>, list: &[Labels]) {
    array(out, list, labels);
}

/// `[t, "v"]`.
fn point(out: &mut Vec<u8>, t: i64, v: f64) {
    out.push(b'[');
    timestamp(out, t);
    out.push(b',');
    float(out, v);
    out.push(b']');
}

/// A native histogram as Prometheus' `MarshalHistogram`: `{"count":"…","sum":"…","buckets":[[b,"lower",
/// "upper","count"],…]}` with the populated buckets from below, `b` the kind of interval (0 left-open,
/// 1 right-open, 2 open, 3 closed); no `buckets` key without populated buckets.
pub fn histogram(out: &mut Vec<u8>, h: &FloatHistogram) {
    out.extend_from_slice(b"{\"count\":");
    float(out, h.count);
    out.extend_from_slice(b",\"sum\":");
    float(out, h.sum);
    let mut found = false;
    for b in h.all_buckets() {
        if b.count == 0.0 {
            continue;
        }
        out.extend_from_slice(if found { b"," } else { b",\"buckets\":[" });
        found = true;
        let kind = match (b.lower_inclusive, b.upper_inclusive) {
            (true, true) => b'3',
            (true, false) => b'1',
            (false, true) => b'0',
            (false, false) => b'2',
        };
        out.extend_from_slice(&[b'[', kind, b',']);
        float(out, b.lower);
        out.push(b',');
        float(out, b.upper);
        out.push(b',');
        float(out, b.count);
        out.push(b']');
    }
    if found {
        out.push(b']');
    }
    out.push(b'}');
}

/// `[t, {histogram}]`.
fn hpoint(out: &mut Vec<u8>, t: i64, h: &FloatHistogram) {
    out.push(b'[');
    timestamp(out, t);
    out.push(b',');
    histogram(out, h);
    out.push(b']');
}

/// The series of a matrix, each `{"metric":{…},"values":[[t,"v"],…],"histograms":[[t,{…}],…]}`, each
/// list only when it is not empty.
pub fn matrix(out: &mut Vec<u8>, series: &[SeriesData]) {
    array(out, series, |out, s| {
        out.extend_from_slice(b"{\"metric\":");
        labels(out, &s.labels);
        if !s.samples.is_empty() {
            out.extend_from_slice(b",\"values\":");
            array(out, &s.samples, |out, p| point(out, p.t, p.v));
        }
        if !s.histograms.is_empty() {
            out.extend_from_slice(b",\"histograms\":");
            array(out, &s.histograms, |out, p| hpoint(out, p.t, &p.h));
        }
        out.push(b'}');
    });
}

/// A query result's `data`: `{"resultType":…,"result":…}`.
pub fn query_data(out: &mut Vec<u8>, v: &QueryValue) {
    out.extend_from_slice(b"{\"resultType\":");
    match v {
        QueryValue::Scalar { t, v } => {
            out.extend_from_slice(b"\"scalar\",\"result\":");
            point(out, *t, *v);
        }
        QueryValue::String { t, s } => {
            out.extend_from_slice(b"\"string\",\"result\":[");
            timestamp(out, *t);
            out.push(b',');
            string(out, s);
            out.push(b']');
        }
        QueryValue::Vector(samples) => {
            out.extend_from_slice(b"\"vector\",\"result\":");
            array(out, samples, |out, s| {
                out.extend_from_slice(b"{\"metric\":");
                labels(out, &s.labels);
                match &s.h {
                    Some(h) => {
                        out.extend_from_slice(b",\"histogram\":");
                        hpoint(out, s.t, h);
                    }
                    None => {
                        out.extend_from_slice(b",\"value\":");
                        point(out, s.t, s.v);
                    }
                }
                out.push(b'}');
            });
        }
        QueryValue::Matrix(series) => {
            out.extend_from_slice(b"\"matrix\",\"result\":");
            matrix(out, series);
        }
    }
    out.push(b'}');
}

/// Adds Prometheus' `stats` (asked with `stats=…`) to an encoded `data` object: the samples this request
/// loaded (pieces answered by the results cache load none) and its time so far.
pub fn append_stats(data: &mut Vec<u8>, samples: usize, elapsed: std::time::Duration) {
    if data.last() != Some(&b'}') {
        return;
    }
    data.pop();
    let secs = elapsed.as_secs_f64();
    data.extend_from_slice(
        format!(
            ",\"stats\":{{\"timings\":{{\"execTotalTime\":{secs}}},\"samples\":{{\"totalQueryableSamples\":{samples}}}}}}}"
        )
        .as_bytes(),
    );
}

/// The success envelope around already encoded `data`.
pub fn success(data: &[u8], warnings: &[String], infos: &[String]) -> Vec<u8> {
    let extra: usize = warnings.iter().chain(infos).map(|w| w.len() + 8).sum();
    let mut out = Vec::with_capacity(data.len() + extra + 48);
    out.extend_from_slice(b"{\"status\":\"success\",\"data\":");
    out.extend_from_slice(data);
    if !warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":");
        strings(&mut out, warnings);
    }
    if !infos.is_empty() {
        out.extend_from_slice(b",\"infos\":");
        strings(&mut out, infos);
    }
    out.push(b'}');
    out
}

/// The error envelope.
pub fn error(e: &Error) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.message.len() + 64);
    out.extend_from_slice(b"{\"status\":\"error\",\"errorType\":");
    string(&mut out, e.kind.prometheus_error_type());
    out.extend_from_slice(b",\"error\":");
    string(&mut out, &e.message);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_go_inside_data() {
        let mut d = br#"{"resultType":"vector","result":[]}"#.to_vec();
        append_stats(&mut d, 42, std::time::Duration::from_millis(1500));
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["stats"]["samples"]["totalQueryableSamples"], 42);
        assert_eq!(v["stats"]["timings"]["execTotalTime"], 1.5);
        assert_eq!(v["resultType"], "vector");
    }

    #[test]
    fn histograms_as_prometheus_writes_them() {
        use meridian_core::histogram::Span;
        let h = FloatHistogram {
            count: 4.0,
            sum: 10.5,
            zero_threshold: 0.001,
            zero_count: 1.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 0.0, 2.0],
            ..FloatHistogram::default()
        };
        let mut out = Vec::new();
        histogram(&mut out, &h);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"count":"4","sum":"10.5","buckets":[[3,"-0.001","0.001","1"],[0,"0.5","1","1"],[0,"2","4","2"]]}"#
        );
        let mut out = Vec::new();
        histogram(&mut out, &FloatHistogram::default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"count":"0","sum":"0"}"#
        );
    }

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        float_unquoted(&mut out, v);
        String::from_utf8(out).unwrap_or_default()
    }

    fn ts(t: i64) -> String {
        let mut out = Vec::new();
        timestamp(&mut out, t);
        String::from_utf8(out).unwrap_or_default()
    }

    fn s(x: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, x);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn floats_as_go_formats_them() {
        // Expected strings are what Go's strconv.FormatFloat gives with Prometheus' 'f'/'e' choice.
        let cases = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456789.0, "123456789"),
            (-42.0, "-42"),
            (999999999999999.0, "999999999999999"),
            (1e15, "1000000000000000"),
            (9007199254740993.0, "9007199254740992"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-07"),
            (1.234e-10, "1.234e-10"),
            (-2.5e-8, "-2.5e-08"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(f(v), want, "{v:e}");
        }
    }

    #[test]
    fn timestamps_as_prometheus_marshals_them() {
        assert_eq!(ts(0), "0");
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1_500), "1.500");
        assert_eq!(ts(4_000), "4");
        assert_eq!(ts(1_005), "1.005");
        assert_eq!(ts(-1_500), "-1.500");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn strings_escaped_as_go() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(s("<a&b>"), "\"\\u003ca\\u0026b\\u003e\"");
        assert_eq!(s("x\ny\u{1}"), "\"x\\ny\\u0001\"");
        assert_eq!(s("a\u{2028}b\u{2029}"), "\"a\\u2028b\\u2029\"");
        assert_eq!(s("é→🙂"), "\"é→🙂\"");
        // What we write is JSON that parses back to the input.
        for x in ["a\u{2028}b", "<\"\t\u{7f}>", "\u{2027}\u{202a}"] {
            let back: String = serde_json::from_str(&s(x)).unwrap_or_default();
            assert_eq!(back, x);
        }
    }

    #[test]
    fn envelope_leaves_out_empty_lists() {
        assert_eq!(
            success(b"[]", &[], &[]),
            b"{\"status\":\"success\",\"data\":[]}"
        );
        assert_eq!(
            String::from_utf8(success(b"1", &["w".into()], &[])).unwrap_or_default(),
            "{\"status\":\"success\",\"data\":1,\"warnings\":[\"w\"]}"
        );
        let e = Error::bad_data("invalid parameter \"query\": <x>");
        assert_eq!(
            String::from_utf8(error(&e)).unwrap_or_default(),
            "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"invalid parameter \\\"query\\\": \\u003cx\\u003e\"}"
        );
    }
}
