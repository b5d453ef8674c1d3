//! A runner for Prometheus' promqltest script format: `load <interval>` blocks in the series notation
//! (`0+10x5`, `1x3`, `_`, `stale`, `NaN`, `Inf`), `clear`, `eval instant at <t> <expr>` and
//! `eval range from <t> to <t> step <d> <expr>` (also `eval_fail`, `eval_ordered`, `eval_warn`,
//! `eval_info`) with their expected results and `expect fail|ordered|warn|info|...` lines.
//!
//! Cases that cannot apply are **skipped with a reason** (native histograms, syntax the parser does not
//! support, unknown commands); every other case runs and passes or fails. Values compare with
//! Prometheus' tolerance (relative 1e-6; NaN equals NaN).

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::sample::{Sample, stale_nan};

use super::{Engine, MemQueryable};
use crate::queryable::{HPoint, SeriesData};

mod expect;
mod hist;
use expect::compare;
use hist::TVal;

/// The outcome of running scripts.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub run: usize,
    pub passed: usize,
    /// `(where, what)` of every failure.
    pub failures: Vec<(String, String)>,
    /// `(where, reason)` of every skipped case.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.run += other.run;
        self.passed += other.passed;
        self.failures.extend(other.failures);
        self.skipped.extend(other.skipped);
    }

    /// A printable summary: counts, skip reasons, and the failures (all, or the first `max`).
    pub fn summary(&self, max_failures: usize, with_skips: bool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (at, msg) in self.failures.iter().take(max_failures) {
            let _ = writeln!(out, "FAIL {at}: {msg}");
        }
        if with_skips {
            for (at, reason) in &self.skipped {
                let _ = writeln!(out, "SKIP {at}: {reason}");
            }
        }
        let _ = writeln!(
            out,
            "cases run {}, passed {}, failed {}, skipped {}",
            self.run,
            self.passed,
            self.failures.len(),
            self.skipped.len()
        );
        for (reason, n) in self.skip_reasons() {
            let _ = writeln!(out, "  skipped {n}: {reason}");
        }
        out
    }

    /// Skip reasons with their counts.
    pub fn skip_reasons(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, r) in &self.skipped {
            *m.entry(r.clone()).or_default() += 1;
        }
        m
    }
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok((n * 1000.0) as i64);
    }
    let d = meridian_core::promfmt::PromDuration::parse(s)?;
    Ok(i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX))
}

/// Parses `name{a="b", ...}` (either part optional) from the start of `s`; returns the labels and the
/// rest of the line.
fn parse_series_labels(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let mut pairs: Vec<(String, String)> = Vec::new();
    if name_end > 0 {
        pairs.push(("__name__".into(), s[..name_end].to_owned()));
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if rest.starts_with('"') {
                let (v, r) = parse_quoted(rest)?;
                (v, r)
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (rest[..end].to_owned(), &rest[end..])
            };
            let r = r.trim_start();
            let Some(r) = r.strip_prefix('=') else {
                // A quoted metric name alone: {"name"}.
                if let Some(r2) = r.strip_prefix(',').or(Some(r)) {
                    pairs.push(("__name__".into(), name));
                    rest = r2;
                    continue;
                }
                return Err(format!("expected = after label {name:?}"));
            };
            let (value, r) = parse_quoted(r.trim_start())?;
            pairs.push((name, value));
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            }
        }
    }
    Ok((
        Labels::from_pairs(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))),
        rest,
    ))
}

fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let quote = s.chars().next().ok_or("expected a quoted string")?;
    if quote != '"' && quote != '\'' {
        return Err(format!("expected a quoted string at {s:?}"));
    }
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, x)) => {
                    out.push('\\');
                    out.push(x);
                }
                None => return Err("unterminated string".into()),
            },
            c if c == quote => return Ok((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        "stale" => Ok(stale_nan()),
        other => {
            if let Some(h) = other.strip_prefix("0x") {
                return i64::from_str_radix(h, 16)
                    .map(|v| v as f64)
                    .map_err(|e| e.to_string());
            }
            other
                .parse::<f64>()
                .map_err(|_| format!("bad value {other:?}"))
        }
    }
}

/// Expands the series notation into values (`None` = no sample at that step).
fn expand_values(text: &str) -> Result<Vec<Option<TVal>>, String> {
    let mut out = Vec::new();
    for tok in hist::tokenize(text) {
        if tok.starts_with("{{") {
            out.extend(hist::expand(tok)?.into_iter().map(Some));
        } else {
            expand_floats(tok, &mut out)?;
        }
    }
    Ok(out)
}

/// One float token of the series notation (`_`, `_x3`, `1+2x3`, `5x2`, `stale`, a number).
fn expand_floats(tok: &str, out: &mut Vec<Option<TVal>>) -> Result<(), String> {
    if tok == "_" {
        out.push(None);
        return Ok(());
    }
    if let Some((head, times)) = tok.split_once('x') {
        let n: usize = times
            .parse()
            .map_err(|_| format!("bad repetition in {tok:?}"))?;
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n));
            return Ok(());
        }
        // start+incr, start-incr, or start alone (incr 0); the sign of the start is part of it.
        let split = head
            .char_indices()
            .skip(1)
            .find(|(i, c)| (*c == '+' || *c == '-') && !head[..*i].ends_with(['e', 'E']))
            .map(|(i, _)| i);
        let (start, incr) = match split {
            Some(i) => {
                let start = parse_value(&head[..i])?;
                let inc = parse_value(&head[i + 1..])?;
                (start, if &head[i..=i] == "-" { -inc } else { inc })
            }
            None => (parse_value(head)?, 0.0),
        };
        for k in 0..=n {
            out.push(Some(TVal::F(start + incr * k as f64)));
        }
        return Ok(());
    }
    out.push(Some(TVal::F(parse_value(tok)?)));
    Ok(())
}

/// One series in the series notation, as promqltest's `load` and promtool's `input_series` write it:
/// `labels` (`up{job="a"}`) and `values` (`0+10x5 _ stale 3`), one value every `interval_ms` from 0.
pub fn series_from_notation(
    labels: &str,
    values: &str,
    interval_ms: i64,
) -> Result<SeriesData, String> {
    let (labels, rest) = parse_series_labels(labels.trim())?;
    if !rest.trim().is_empty() {
        return Err(format!("unexpected {rest:?} after the label set"));
    }
    let mut out = SeriesData {
        labels,
        ..Default::default()
    };
    for (k, v) in expand_values(values)?.into_iter().enumerate() {
        let t = k as i64 * interval_ms;
        match v {
            Some(TVal::F(v)) => out.samples.push(Sample::new(t, v)),
            Some(TVal::H(h, _)) => out.histograms.push(HPoint { t, h }),
            None => {}
        }
    }
    Ok(out)
}

/// A loaded series' float and histogram samples.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) floats: Vec<Sample>,
    pub(super) hists: Vec<HPoint>,
}

struct Case {
    at: String,
    query: String,
    instant: Option<i64>,
    range: Option<(i64, i64, i64)>,
    fail: bool,
    fail_msg: Option<String>,
    ordered: bool,
    expect_lines: Vec<String>,
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < 1e-6
}

/// Runs one script's text; `name` prefixes every location.
pub async fn run_script(text: &str, name: &str) -> Report {
    let engine = Engine::default();
    let mut report = Report::default();
    // Scripts that test semantics Prometheus 3 has only behind a feature flag.
    let file = name.rsplit('/').next().unwrap_or(name);
    let flagged = match file {
        "type_and_unit.test" => Some("needs Prometheus feature flag type-and-unit-labels"),
        "name_label_dropping.test" => {
            Some("needs Prometheus feature flag promql-delayed-name-removal")
        }
        // Series with start timestamps (`metric@st`), stored only with the st-storage feature.
        "start_timestamps.test" => {
            Some("needs start timestamps (`@st` series, feature st-storage)")
        }
        _ => None,
    };
    let mut store: BTreeMap<Labels, Loaded> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let indented = |l: &str| l.starts_with(' ') || l.starts_with('\t');
    while i < lines.len() {
        let line = lines[i].trim_end();
        let at = format!("{name}:{}", i + 1);
        i += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let cmd = words.next().unwrap_or("");
        match cmd {
            "clear" => {
                store.clear();
            }
            "load" | "load_with_nhcb" => {
                let nhcb = cmd == "load_with_nhcb";
                let mut block: Vec<Labels> = Vec::new();
                let interval = words.next().map(parse_duration_ms);
                while i < lines.len() && indented(lines[i]) && !lines[i].trim().is_empty() {
                    let l = lines[i].trim();
                    i += 1;
                    if l.starts_with('#') {
                        continue;
                    }
                    let Some(Ok(step)) = interval else { continue };
                    block.extend(load_series(l, step, &mut store));
                }
                if nhcb {
                    hist::add_nhcb(&mut store, &block);
                }
            }
            c if c.starts_with("eval") => {
                let rest: Vec<&str> = words.collect();
                let mut case = Case {
                    at: at.clone(),
                    query: String::new(),
                    instant: None,
                    range: None,
                    fail: c == "eval_fail",
                    fail_msg: None,
                    ordered: c == "eval_ordered",
                    expect_lines: vec![],
                };
                let parsed = match rest.as_slice() {
                    ["instant", "at", t, q @ ..] => parse_duration_ms(t).map(|t| {
                        case.instant = Some(t);
                        case.query = q.join(" ");
                    }),
                    ["range", "from", a, "to", b, "step", st, q @ ..] => {
                        match (
                            parse_duration_ms(a),
                            parse_duration_ms(b),
                            parse_duration_ms(st),
                        ) {
                            (Ok(a), Ok(b), Ok(st)) => {
                                case.range = Some((a, b, st));
                                case.query = q.join(" ");
                                Ok(())
                            }
                            _ => Err("bad range".to_string()),
                        }
                    }
                    _ => Err("unknown eval form".to_string()),
                };
                // The query text keeps its own spacing: take it from the original line, after the
                // command's own words (4 for instant, 8 for range).
                if parsed.is_ok() {
                    let skip = if case.range.is_some() { 8 } else { 4 };
                    if let Some(pos) = token_offset(line, skip) {
                        case.query = line[pos..].trim().to_owned();
                    }
                }
                while i < lines.len() && indented(lines[i]) && !lines[i].trim().is_empty() {
                    let l = lines[i].trim().to_owned();
                    i += 1;
                    if l.starts_with('#') {
                        continue;
                    }
                    case.expect_lines.push(l);
                }
                if let Err(e) = parsed {
                    report
                        .skipped
                        .push((at, format!("unsupported eval syntax: {e}")));
                    continue;
                }
                if let Some(reason) = flagged {
                    report.skipped.push((at, reason.to_owned()));
                    continue;
                }
                if let Some(reason) = experimental(&case.query) {
                    report.skipped.push((at, reason.to_owned()));
                    continue;
                }
                run_case(&engine, &store, case, &mut report).await;
            }
            other => {
                report
                    .skipped
                    .push((at, format!("unknown command {other:?}")));
                while i < lines.len() && indented(lines[i]) && !lines[i].trim().is_empty() {
                    i += 1;
                }
            }
        }
    }
    report
}

/// One series line of a `load` command: its samples into `store`; the series' labels.
fn load_series(l: &str, step: i64, store: &mut BTreeMap<Labels, Loaded>) -> Option<Labels> {
    let (labels, rest) = parse_series_labels(l).ok()?;
    if let Ok(values) = expand_values(rest) {
        let e = store.entry(labels.clone()).or_default();
        // A later line for the same series wins at equal timestamps.
        for (k, v) in values.into_iter().enumerate() {
            let t = k as i64 * step;
            if v.is_some() {
                e.hists.retain(|h| h.t != t);
                e.floats.retain(|s| s.t != t);
            }
            match v {
                Some(TVal::F(v)) => e.floats.push(Sample::new(t, v)),
                Some(TVal::H(h, _)) => e.hists.push(HPoint { t, h }),
                None => {}
            }
        }
        e.floats.sort_by_key(|s| s.t);
        e.hists.sort_by_key(|h| h.t);
    }
    Some(labels)
}

async fn run_case(
    engine: &Engine,
    store: &BTreeMap<Labels, Loaded>,
    mut case: Case,
    report: &mut Report,
) {
    let mut expect_lines = Vec::new();
    for l in std::mem::take(&mut case.expect_lines) {
        if let Some(e) = l.strip_prefix("expect ") {
            let e = e.trim();
            if e == "ordered" {
                case.ordered = true;
            } else if let Some(m) = e.strip_prefix("fail") {
                case.fail = true;
                let m = m.trim();
                if let Some(msg) = m.strip_prefix("msg:") {
                    case.fail_msg = Some(msg.trim().to_owned());
                } else if let Some(re) = m.strip_prefix("regex:") {
                    case.fail_msg = Some(format!("regex:{}", re.trim()));
                }
            } else if e.starts_with("string") || e.starts_with("range") {
                report.skipped.push((
                    case.at.clone(),
                    format!(
                        "unsupported expectation \"expect {}\"",
                        e.split_whitespace().next().unwrap_or("")
                    ),
                ));
                return;
            }
            // warn/info/no_warn/no_info: annotations are not compared yet.
            continue;
        }
        expect_lines.push(l);
    }
    if let Err(e) = promql_parser::parser::parse(&case.query) {
        if case.fail {
            report.run += 1;
            report.passed += 1;
        } else {
            report.skipped.push((
                case.at,
                format!("syntax the parser does not support: {}", first_line(&e)),
            ));
        }
        return;
    }
    let q = MemQueryable {
        series: store
            .iter()
            .map(|(l, s)| SeriesData {
                labels: l.clone(),
                samples: s.floats.clone(),
                histograms: hist::as_stored(&s.floats, &s.hists),
                ..Default::default()
            })
            .collect(),
    };
    report.run += 1;
    let result = match (case.instant, case.range) {
        (Some(t), _) => engine.instant(&q, &case.query, t).await,
        (_, Some((a, b, st))) => engine.range(&q, &case.query, a, b, st).await,
        _ => return,
    };
    let outcome = match result {
        Err(e) if case.fail => match &case.fail_msg {
            None => Ok(()),
            Some(m) if m.starts_with("regex:") => {
                let re = regex::Regex::new(&m["regex:".len()..]);
                match re {
                    Ok(re) if re.is_match(&e.message) => Ok(()),
                    _ => Err(format!("error {:?} does not match {m:?}", e.message)),
                }
            }
            Some(m) => {
                if e.message.contains(m.as_str()) {
                    Ok(())
                } else {
                    Err(format!("error {:?}, want {m:?}", e.message))
                }
            }
        },
        Err(e) => Err(format!("unexpected error: {}", e.message)),
        Ok(_) if case.fail => Err("expected an error, got a result".into()),
        Ok(r) => compare(&case, &expect_lines, r.value),
    };
    match outcome {
        Ok(()) => report.passed += 1,
        Err(msg) => report
            .failures
            .push((case.at, format!("{}: {msg}", case.query))),
    }
}

/// Experimental PromQL (behind `--enable-feature=promql-experimental-functions` and similar in Prometheus
/// 3), not part of the default language.
fn experimental(query: &str) -> Option<&'static str> {
    let q = query.replace(' ', "");
    if q.contains("info(") && !q.contains("_info(") {
        return Some("experimental function info()");
    }
    if q.contains("fill(") || q.contains("fill_left(") || q.contains("fill_right(") {
        return Some("experimental fill modifiers");
    }
    if q.contains("</") || q.contains(">/") {
        return Some("experimental histogram trim operators </ and >/");
    }
    None
}

/// Byte offset of the `n`-th whitespace-separated token of `line`.
fn token_offset(line: &str, n: usize) -> Option<usize> {
    let mut count = 0;
    let mut in_token = false;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            in_token = false;
        } else if !in_token {
            if count == n {
                return Some(i);
            }
            count += 1;
            in_token = true;
        }
    }
    None
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

/// Runs every `.test` file in `dir`.
pub async fn run_dir(dir: &std::path::Path) -> std::io::Result<Report> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut report = Report::default();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = tokio::time::timeout(Duration::from_secs(120), run_script(&text, &name))
            .await
            .unwrap_or_else(|_| Report {
                failures: vec![(name.clone(), "timed out".into())],
                ..Default::default()
            });
        report.merge(r);
    }
    Ok(report)
}
