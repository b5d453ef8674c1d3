//! Label and annotation templates in Go's `text/template` syntax (the gtmpl crate), with the data and the
//! functions Prometheus gives alert templates (`template/template.go`): `$labels`, `$externalLabels`,
//! `$externalURL`, `$value`, and `humanize*`, `title`, `toUpper`, `toLower`, `reReplaceAll`, `match`,
//! `query`, `first`, `label`, `value`, `strvalue`, `sortByLabel`, `args`, `safeHtml`, `stripPort`,
//! `stripDomain`, `graphLink`, `tableLink`, `externalURL`, `pathPrefix`, `parseDuration`, plus Go's
//! built-ins (`printf`, `len`, `index`, comparisons ...).
//!
//! Numbers print as Go prints them where Prometheus formats them itself (`humanize` is `%.4g`); a bare
//! `{{ $value }}` prints through gtmpl, which agrees with Go except for exponents (Go writes `1e+06`).
//!
//! gtmpl functions are plain `fn` pointers, so `query` reaches the engine through a thread-local set
//! around one expansion ([`with_query`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use gtmpl::{Context, FuncError, Template, Value};

/// What a `query` call returns: the samples of an instant vector (or one unlabelled scalar).
pub type QueryFn =
    dyn Fn(&str) -> Result<Vec<(BTreeMap<String, String>, f64)>, meridian_core::error::Error>;

thread_local! {
    static QUERY: RefCell<Option<Rc<QueryFn>>> = const { RefCell::new(None) };
    static EXTERNAL_URL: RefCell<String> = const { RefCell::new(String::new()) };
}

const DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// The data of one alert's expansion.
#[derive(Debug, Clone)]
pub struct AlertData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Checks that every action is closed before gtmpl sees the text: gtmpl 0.7's lexer never returns
/// (and grows without bound) on an unclosed action or an unterminated string inside one.
fn check_actions(name: &str, text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    let line = |at: usize| text[..at].matches('\n').count() + 1;
    while let Some(open) = text[i..].find("{{").map(|o| o + i) {
        let mut j = open + 2;
        let mut closed = false;
        while j < b.len() {
            match b[j] {
                q @ (b'"' | b'\'') => {
                    j += 1;
                    while j < b.len() && b[j] != q && b[j] != b'\n' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    if j >= b.len() || b[j] != q {
                        return Err(format!(
                            "template: __alert_{name}:{}: unterminated quoted string",
                            line(open)
                        ));
                    }
                }
                b'`' => {
                    j += 1;
                    while j < b.len() && b[j] != b'`' {
                        j += 1;
                    }
                    if j >= b.len() {
                        return Err(format!(
                            "template: __alert_{name}:{}: unterminated raw quoted string",
                            line(open)
                        ));
                    }
                }
                b'/' if b.get(j + 1) == Some(&b'*') => match text[j + 2..].find("*/") {
                    Some(e) => j += e + 3,
                    None => {
                        return Err(format!(
                            "template: __alert_{name}:{}: unclosed comment",
                            line(open)
                        ));
                    }
                },
                b'}' if b.get(j + 1) == Some(&b'}') => {
                    closed = true;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        if !closed {
            return Err(format!(
                "template: __alert_{name}:{}: unclosed action",
                line(open)
            ));
        }
        i = j + 2;
    }
    Ok(())
}

fn template(name: &str, text: &str) -> Result<Template, String> {
    check_actions(name, text)?;
    let mut t = Template::with_name(format!("__alert_{name}"));
    t.add_funcs(FUNCS);
    t.parse(format!("{DEFS}{text}"))
        .map_err(|e| e.to_string())?;
    Ok(t)
}

/// Parses a template as `promtool check rules` does: `Err` with the parser's message.
pub fn check(name: &str, text: &str) -> Result<(), String> {
    template(name, text).map(|_| ())
}

/// Whether a template may call the engine (and so must run where blocking is allowed).
pub fn uses_query(text: &str) -> bool {
    text.contains("query")
}

/// Expands `text` for `data`; an error gives Prometheus' `<error expanding template: ...>` text.
pub fn expand(rule: &str, text: &str, data: &AlertData<'_>) -> String {
    if !text.contains("{{") {
        return text.to_owned();
    }
    let mut dot = HashMap::new();
    dot.insert("Labels".to_owned(), string_map(data.labels));
    dot.insert(
        "ExternalLabels".to_owned(),
        string_map(data.external_labels),
    );
    dot.insert(
        "ExternalURL".to_owned(),
        Value::String(data.external_url.to_owned()),
    );
    dot.insert("Value".to_owned(), Value::from(data.value));
    EXTERNAL_URL.with(|u| *u.borrow_mut() = data.external_url.to_owned());
    let out = template(rule, text).and_then(|t| {
        t.render(&Context::from(Value::Object(dot)))
            .map_err(|e| e.to_string())
    });
    match out {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

/// Runs `f` with `query` answering template `query` calls on this thread.
pub fn with_query<R>(query: Rc<QueryFn>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            QUERY.with(|q| *q.borrow_mut() = None);
        }
    }
    QUERY.with(|q| *q.borrow_mut() = Some(query));
    let _reset = Reset;
    f()
}

fn err(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn to_f64(v: &Value) -> Result<f64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or_else(|| err("not a number")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(err(format!("can't convert {other} to float"))),
    }
}

fn to_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [a] => Ok(a),
        _ => Err(FuncError::ExactlyXArgs(name.to_owned(), 1)),
    }
}

pub use meridian_core::promfmt::go_g;

fn g4(v: f64) -> String {
    go_g(v, Some(4))
}

fn humanize_f(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut v = v;
    if v.abs() >= 1.0 {
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", g4(v));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", g4(v))
}

fn humanize(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(humanize_f(to_f64(one("humanize", args)?)?)))
}

fn humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = to_f64(one("humanize1024", args)?)?;
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return Ok(Value::String(g4(v)));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(Value::String(format!("{}{prefix}", g4(v))))
}

fn humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    let mut v = to_f64(one("humanizeDuration", args)?)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::String(g4(v)));
    }
    if v == 0.0 {
        return Ok(Value::String(format!("{}s", g4(v))));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let whole = v as i64;
        let (s, m, h, d) = (
            whole % 60,
            (whole / 60) % 60,
            (whole / 3600) % 24,
            whole / 86400,
        );
        let text = if d != 0 {
            format!("{sign}{d}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
        return Ok(Value::String(text));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(Value::String(format!("{}{prefix}s", g4(v))))
}

fn humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanizePercentage", args)?)?;
    Ok(Value::String(format!("{}%", g4(v * 100.0))))
}

/// Go's `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time_string(secs: f64) -> String {
    let nanos = (secs * 1e9) as i128;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return g4(secs);
    };
    let mut frac = String::new();
    if t.nanosecond() != 0 {
        frac = format!(".{:09}", t.nanosecond());
        while frac.ends_with('0') {
            frac.pop();
        }
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn humanize_timestamp(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanizeTimestamp", args)?)?;
    if v.is_nan() || v.is_infinite() {
        return Ok(Value::String(g4(v)));
    }
    Ok(Value::String(go_time_string(v)))
}

/// Go's deprecated `strings.Title`: the first letter of every word upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("title", args)?);
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    Ok(Value::String(out))
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_str(one("toUpper", args)?).to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_str(one("toLower", args)?).to_lowercase()))
}

fn go_regex(p: &str) -> Result<regex::Regex, FuncError> {
    let translated = meridian_core::matcher::translate_go_regex(p).map_err(err)?;
    regex::Regex::new(&translated).map_err(|e| err(format!("error parsing regexp: {e}")))
}

/// `reReplaceAll pattern replacement text`, with Go's `$1`/`${1}` expansion.
fn re_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    let [p, r, t] = args else {
        return Err(FuncError::ExactlyXArgs("reReplaceAll".into(), 3));
    };
    let re = go_regex(&to_str(p))?;
    let repl = to_str(r);
    Ok(Value::String(
        re.replace_all(&to_str(t), repl.as_str()).into_owned(),
    ))
}

fn match_fn(args: &[Value]) -> Result<Value, FuncError> {
    let [p, s] = args else {
        return Err(FuncError::ExactlyXArgs("match".into(), 2));
    };
    Ok(Value::Bool(go_regex(&to_str(p))?.is_match(&to_str(s))))
}

fn sample_value(labels: BTreeMap<String, String>, v: f64) -> Value {
    let mut m = HashMap::new();
    m.insert("Labels".to_owned(), string_map(&labels));
    m.insert("Value".to_owned(), Value::from(v));
    Value::Object(m)
}

fn query(args: &[Value]) -> Result<Value, FuncError> {
    let q = to_str(one("query", args)?);
    let Some(f) = QUERY.with(|c| c.borrow().clone()) else {
        return Err(err("query is not available here"));
    };
    let samples = f(&q).map_err(|e| err(e.message))?;
    Ok(Value::Array(
        samples
            .into_iter()
            .map(|(l, v)| sample_value(l, v))
            .collect(),
    ))
}

fn first(args: &[Value]) -> Result<Value, FuncError> {
    match one("first", args)? {
        Value::Array(a) if !a.is_empty() => Ok(a[0].clone()),
        _ => Err(err("first() called on vector with no elements")),
    }
}

fn sample_field<'a>(v: &'a Value, field: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) | Value::Map(m) => m.get(field),
        _ => None,
    }
}

fn label(args: &[Value]) -> Result<Value, FuncError> {
    let [name, s] = args else {
        return Err(FuncError::ExactlyXArgs("label".into(), 2));
    };
    let name = to_str(name);
    Ok(sample_field(s, "Labels")
        .and_then(|l| sample_field(l, &name))
        .cloned()
        .unwrap_or(Value::String(String::new())))
}

fn value(args: &[Value]) -> Result<Value, FuncError> {
    Ok(sample_field(one("value", args)?, "Value")
        .cloned()
        .unwrap_or(Value::Nil))
}

fn strvalue(args: &[Value]) -> Result<Value, FuncError> {
    Ok(sample_field(one("strvalue", args)?, "Labels")
        .and_then(|l| sample_field(l, "__value__"))
        .cloned()
        .unwrap_or(Value::String(String::new())))
}

fn sort_by_label(args: &[Value]) -> Result<Value, FuncError> {
    let [name, v] = args else {
        return Err(FuncError::ExactlyXArgs("sortByLabel".into(), 2));
    };
    let name = to_str(name);
    let Value::Array(a) = v else {
        return Ok(v.clone());
    };
    let mut a = a.clone();
    let key = |s: &Value| {
        sample_field(s, "Labels")
            .and_then(|l| sample_field(l, &name))
            .map(to_str)
            .unwrap_or_default()
    };
    a.sort_by_key(key);
    Ok(Value::Array(a))
}

fn args_fn(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Map(
        args.iter()
            .enumerate()
            .map(|(i, v)| (format!("arg{i}"), v.clone()))
            .collect(),
    ))
}

fn safe_html(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_str(one("safeHtml", args)?)))
}

fn strip_port(args: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("stripPort", args)?);
    Ok(Value::String(match s.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_start_matches('[').trim_end_matches(']').to_owned()
        }
        _ => s,
    }))
}

fn strip_domain(args: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("stripDomain", args)?);
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(Value::String(s));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_owned(), format!(":{p}")),
        _ => (s.clone(), String::new()),
    };
    let host = host.split('.').next().unwrap_or_default().to_owned();
    Ok(Value::String(format!("{host}{port}")))
}

fn link(expr: &str, tab: u8) -> String {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!("/graph?g0.expr={q}&g0.tab={tab}")
}

fn graph_link(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(link(&to_str(one("graphLink", args)?), 0)))
}

fn table_link(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(link(&to_str(one("tableLink", args)?), 1)))
}

fn external_url(_args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(EXTERNAL_URL.with(|u| u.borrow().clone())))
}

fn path_prefix(_args: &[Value]) -> Result<Value, FuncError> {
    let u = EXTERNAL_URL.with(|u| u.borrow().clone());
    let path = u
        .split_once("://")
        .map(|(_, rest)| rest.find('/').map_or("", |i| &rest[i..]).to_owned())
        .unwrap_or_default();
    Ok(Value::String(path))
}

fn parse_duration(args: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("parseDuration", args)?);
    let d = meridian_core::promfmt::PromDuration::parse(&s).map_err(err)?;
    Ok(Value::from(d.0.as_secs_f64()))
}

/// Orders two values; numbers compare by value whatever gtmpl stores them as (an integral float such as
/// a `$value` of 2 is held as an integer, which gtmpl's own comparisons refuse to compare with 1.5).
fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, FuncError> {
    let num = |v: &Value| match v {
        Value::Number(_) => to_f64(v).ok(),
        _ => None,
    };
    let ord = match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            num(a).zip(num(b)).and_then(|(x, y)| x.partial_cmp(&y))
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    ord.ok_or_else(|| err(format!("incompatible types for comparison: {a} and {b}")))
}

/// A two-argument comparison: `name a b` is `test(order of a and b)`.
fn ordered(
    name: &str,
    args: &[Value],
    test: fn(std::cmp::Ordering) -> bool,
) -> Result<Value, FuncError> {
    match args {
        [a, b] => Ok(Value::Bool(test(compare(a, b)?))),
        _ => Err(FuncError::ExactlyXArgs(name.to_owned(), 2)),
    }
}

fn lt(args: &[Value]) -> Result<Value, FuncError> {
    ordered("lt", args, std::cmp::Ordering::is_lt)
}

fn le(args: &[Value]) -> Result<Value, FuncError> {
    ordered("le", args, std::cmp::Ordering::is_le)
}

fn gt(args: &[Value]) -> Result<Value, FuncError> {
    ordered("gt", args, std::cmp::Ordering::is_gt)
}

fn ge(args: &[Value]) -> Result<Value, FuncError> {
    ordered("ge", args, std::cmp::Ordering::is_ge)
}

/// `eq a b c ...`: whether `a` equals any of the others (Go's form).
fn eq(args: &[Value]) -> Result<Value, FuncError> {
    let Some((a, rest)) = args.split_first().filter(|(_, r)| !r.is_empty()) else {
        return Err(FuncError::AtLeastXArgs("eq".into(), 2));
    };
    for b in rest {
        if compare(a, b)?.is_eq() {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn ne(args: &[Value]) -> Result<Value, FuncError> {
    ordered("ne", args, std::cmp::Ordering::is_ne)
}

const FUNCS: &[(&str, gtmpl::Func)] = &[
    ("lt", lt),
    ("le", le),
    ("gt", gt),
    ("ge", ge),
    ("eq", eq),
    ("ne", ne),
    ("humanize", humanize),
    ("humanize1024", humanize1024),
    ("humanizeDuration", humanize_duration),
    ("humanizePercentage", humanize_percentage),
    ("humanizeTimestamp", humanize_timestamp),
    ("title", title),
    ("toUpper", to_upper),
    ("toLower", to_lower),
    ("reReplaceAll", re_replace_all),
    ("match", match_fn),
    ("query", query),
    ("first", first),
    ("label", label),
    ("value", value),
    ("strvalue", strvalue),
    ("sortByLabel", sort_by_label),
    ("args", args_fn),
    ("safeHtml", safe_html),
    ("stripPort", strip_port),
    ("stripDomain", strip_domain),
    ("graphLink", graph_link),
    ("tableLink", table_link),
    ("externalURL", external_url),
    ("pathPrefix", path_prefix),
    ("parseDuration", parse_duration),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formats() {
        for (v, p, want) in [
            (1.5, Some(4), "1.5"),
            (100.0, Some(4), "100"),
            // Exactly halfway rounds to even, as Go does.
            (12345.0, Some(4), "1.234e+04"),
            (12346.0, Some(4), "1.235e+04"),
            (1000.0, Some(4), "1000"),
            (0.0001234, Some(4), "0.0001234"),
            (0.00001234, Some(4), "1.234e-05"),
            (0.0, Some(4), "0"),
            (1e6, None, "1e+06"),
            (123456.0, None, "123456"),
            (-2.5, None, "-2.5"),
            (f64::INFINITY, None, "+Inf"),
        ] {
            assert_eq!(go_g(v, p), want, "{v} {p:?}");
        }
    }

    #[test]
    fn expands_like_prometheus() {
        let labels: BTreeMap<String, String> =
            [("instance".to_owned(), "web-1:80".to_owned())].into();
        let ext: BTreeMap<String, String> = [("cluster".to_owned(), "eu".to_owned())].into();
        let data = AlertData {
            labels: &labels,
            external_labels: &ext,
            external_url: "http://x/prefix",
            value: 2.0,
        };
        let e = |t: &str| expand("A", t, &data);
        assert_eq!(e("{{ $labels.instance }} {{ $value }}"), "web-1:80 2");
        assert_eq!(e("{{ $externalLabels.cluster }}"), "eu");
        assert_eq!(e("{{ 1234567 | humanize }}"), "1.235M");
        assert_eq!(e("{{ 2048 | humanize1024 }}"), "2ki");
        assert_eq!(e("{{ 90061 | humanizeDuration }}"), "1d 1h 1m 1s");
        assert_eq!(e("{{ 0.1234 | humanizePercentage }}"), "12.34%");
        assert_eq!(
            e("{{ 0 | humanizeTimestamp }}"),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(e("{{ \"hello world\" | title }}"), "Hello World");
        assert_eq!(e("{{ $labels.instance | stripPort }}"), "web-1");
        assert_eq!(e("{{ if gt $value 1.5 }}big{{ end }}"), "big");
        assert_eq!(e("{{ pathPrefix }}"), "/prefix");
        assert!(e("{{ first (args) }}").starts_with("<error expanding template"));
        // No query function outside an evaluation.
        assert!(e("{{ query \"up\" }}").starts_with("<error expanding template"));
    }

    #[test]
    fn unclosed_actions_are_errors_not_hangs() {
        for t in ["{{ .x ", "{{ \"abc }}", "a {{ `raw }}", "{{/* c }}"] {
            assert!(check("A", t).is_err(), "{t}");
        }
        assert!(check("A", "{{ \"}}\" }} {{ `x` }}").is_ok());
    }
}
