//! Rule files in Prometheus' format, checked as `promtool check rules` checks them (rulefmt's
//! `Validate` plus template parsing): the same file is accepted or rejected by both, and a rejection
//! names the group, the rule and the field.
//!
//! ```yaml
//! groups:
//!   - name: example
//!     interval: 1m            # default: --eval-interval
//!     limit: 0                # most series (recording) or alerts (alerting) per rule; 0 = no limit
//!     query_offset: 0s        # evaluate at `t - query_offset`
//!     labels: {team: infra}   # added to every rule of the group (the rule's own labels win)
//!     partial_response_strategy: abort   # Thanos Ruler's per-group override: abort | warn
//!     rules:
//!       - record: job:up:sum
//!         expr: sum by (job) (up)
//!       - alert: InstanceDown
//!         expr: up == 0
//!         for: 5m
//!         keep_firing_for: 0s
//!         labels: {severity: page}
//!         annotations: {summary: "{{ $labels.instance }} down"}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_core::promfmt::PromDuration;
use meridian_core::relabel::is_valid_label_name;
use serde::Deserialize;

use meridian_storeapi::partial::PartialResponse;

/// A rule file's top level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    interval: Option<PromDuration>,
    #[serde(default)]
    limit: usize,
    query_offset: Option<PromDuration>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    partial_response_strategy: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<String>,
    alert: Option<String>,
    expr: Option<Scalar>,
    #[serde(rename = "for")]
    for_: Option<PromDuration>,
    keep_firing_for: Option<PromDuration>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

/// `expr: 1` is a valid (numeric) YAML scalar; Prometheus reads it as the text `1`.
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Scalar(match Any::deserialize(d)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::F(f) => f.to_string(),
            Any::B(b) => b.to_string(),
        }))
    }
}

/// A rule group, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub file: PathBuf,
    pub name: String,
    /// `None`: the global evaluation interval.
    pub interval: Option<Duration>,
    pub limit: usize,
    pub query_offset: Duration,
    /// `None`: the gateway's default (abort).
    pub partial_response: Option<PartialResponse>,
    pub rules: Vec<RuleSpec>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Record,
    Alert {
        hold: Duration,
        keep_firing_for: Duration,
        annotations: BTreeMap<String, String>,
    },
}

/// One rule, checked. `labels` already holds the group's labels under the rule's own.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// The recorded metric or the alert name.
    pub name: String,
    pub expr: String,
    pub labels: BTreeMap<String, String>,
    pub kind: RuleKind,
}

/// A rule file that cannot be used: every problem found, each naming the group and rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", file.display(), errors.join("; "))]
pub struct RuleFileError {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

/// Whether `s` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads and checks one rule file.
pub fn load(path: &Path) -> Result<Vec<GroupSpec>, RuleFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuleFileError {
        file: path.to_owned(),
        errors: vec![format!("cannot read: {e}")],
    })?;
    parse(path, &text)
}

/// Checks a rule file's text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<GroupSpec>, RuleFileError> {
    let fail = |errors: Vec<String>| RuleFileError {
        file: path.to_owned(),
        errors,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: vec![] }
    } else {
        serde_saphyr::from_str(text).map_err(|e| fail(vec![e.to_string()]))?
    };
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut groups = Vec::new();
    for g in raw.groups {
        if g.name.is_empty() {
            errors.push("group name must not be empty".to_owned());
            continue;
        }
        if !seen.insert(g.name.clone()) {
            errors.push(format!(
                "groupname: {:?} is repeated in the same file",
                g.name
            ));
        }
        let partial_response = match g.partial_response_strategy.as_deref() {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("abort") => Some(PartialResponse::Abort),
            Some(s) if s.eq_ignore_ascii_case("warn") => Some(PartialResponse::Warn),
            Some(s) => {
                errors.push(format!(
                    "group {:?}: partial_response_strategy {s:?} is not abort or warn",
                    g.name
                ));
                None
            }
        };
        for (k, v) in &g.labels {
            if let Err(e) = check_label(k, v) {
                errors.push(format!("group {:?}: {e}", g.name));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let what = r.record.as_deref().or(r.alert.as_deref()).unwrap_or("");
            let at = format!("group {:?}, rule {}, {what:?}", g.name, i + 1);
            match check_rule(r, &g.labels) {
                Ok(rule) => rules.push(rule),
                Err(es) => errors.extend(es.into_iter().map(|e| format!("{at}: {e}"))),
            }
        }
        groups.push(GroupSpec {
            file: path.to_owned(),
            name: g.name,
            interval: g.interval.map(|d| d.0),
            limit: g.limit,
            query_offset: g.query_offset.map(|d| d.0).unwrap_or_default(),
            partial_response,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(fail(errors))
    }
}

fn check_label(name: &str, value: &str) -> Result<(), String> {
    if !is_valid_label_name(name) || name == "__name__" {
        return Err(format!("invalid label name: {name}"));
    }
    if std::str::from_utf8(value.as_bytes()).is_err() {
        return Err(format!("invalid label value: {value}"));
    }
    Ok(())
}

fn check_rule(
    r: RawRule,
    group_labels: &BTreeMap<String, String>,
) -> Result<RuleSpec, Vec<String>> {
    let mut errors = Vec::new();
    let (name, is_record) = match (&r.record, &r.alert) {
        (Some(_), Some(_)) => {
            errors.push("only one of 'record' and 'alert' must be set".to_owned());
            (String::new(), false)
        }
        (None, None) => {
            errors.push("one of 'record' or 'alert' must be set".to_owned());
            (String::new(), false)
        }
        (Some(rec), None) => {
            if rec.is_empty() {
                errors.push("one of 'record' or 'alert' must be set".to_owned());
            } else if !is_valid_metric_name(rec) {
                errors.push(format!("invalid recording rule name: {rec}"));
            }
            (rec.clone(), true)
        }
        (None, Some(a)) => {
            if a.is_empty() {
                errors.push("one of 'record' or 'alert' must be set".to_owned());
            }
            (a.clone(), false)
        }
    };
    let expr = r.expr.map(|s| s.0).unwrap_or_default();
    if expr.is_empty() {
        errors.push("field 'expr' must be set in rule".to_owned());
    } else if let Err(e) = crate::promql::parse(&expr) {
        let msg = e
            .message
            .trim_start_matches("invalid parameter \"query\": ");
        errors.push(format!("could not parse expression: {msg}"));
    }
    if is_record {
        if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
            errors.push("invalid field 'annotations' in recording rule".to_owned());
        }
        if r.for_.is_some_and(|d| !d.0.is_zero()) {
            errors.push("invalid field 'for' in recording rule".to_owned());
        }
        if r.keep_firing_for.is_some_and(|d| !d.0.is_zero()) {
            errors.push("invalid field 'keep_firing_for' in recording rule".to_owned());
        }
    }
    let labels = r.labels.unwrap_or_default();
    for (k, v) in &labels {
        if let Err(e) = check_label(k, v) {
            errors.push(e);
        }
    }
    let annotations = r.annotations.unwrap_or_default();
    for k in annotations.keys() {
        if !is_valid_label_name(k) {
            errors.push(format!("invalid annotation name: {k}"));
        }
    }
    // Templates are parsed as promtool parses them (alerting rules only; recording rules' labels are
    // not templates).
    if !is_record {
        for (k, v) in labels.iter().chain(annotations.iter()) {
            if let Err(e) = super::template::check(&name, v) {
                errors.push(format!("msg=\"template: {k}\" err={e}"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut all = group_labels.clone();
    all.extend(labels);
    Ok(RuleSpec {
        name,
        expr,
        labels: all,
        kind: if is_record {
            RuleKind::Record
        } else {
            RuleKind::Alert {
                hold: r.for_.map(|d| d.0).unwrap_or_default(),
                keep_firing_for: r.keep_firing_for.map(|d| d.0).unwrap_or_default(),
                annotations,
            }
        },
    })
}

/// `promtool check rules`' report of each file (`SUCCESS: n rules found`, or `FAILED:` and every
/// problem), and whether all passed.
pub fn check_report(files: &[PathBuf]) -> (String, bool) {
    use std::fmt::Write;
    let mut out = String::new();
    let mut ok = true;
    for f in files {
        match load(f) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                let _ = writeln!(out, "Checking {}\n  SUCCESS: {n} rules found", f.display());
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "Checking {}\n  FAILED:", f.display());
                for m in &e.errors {
                    let _ = writeln!(out, "{m}");
                }
            }
        }
    }
    (out, ok)
}

/// Expands `--rule-file` patterns (`*`, `?`, `[...]` in the file name part, as Prometheus'
/// `filepath.Glob`); a pattern without glob characters names a file that must exist. The result is
/// sorted and without repeats.
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            out.push(path.to_owned());
            continue;
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // Like filepath.Glob: a missing directory matches nothing.
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if meridian_core::targetgroup::glob_match(&name, &n) && e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Loads every file of `patterns`; all errors of all files are reported together.
pub fn load_all(patterns: &[String]) -> Result<Vec<GroupSpec>, Vec<RuleFileError>> {
    let files = expand_globs(patterns).map_err(|e| {
        vec![RuleFileError {
            file: PathBuf::from("--rule-file"),
            errors: vec![e],
        }]
    })?;
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load(&f) {
            Ok(g) => groups.extend(g),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Vec<GroupSpec>, RuleFileError> {
        parse(Path::new("r.yml"), text)
    }

    #[test]
    fn accepts_a_full_file_and_merges_group_labels() {
        let g = check(
            "groups:\n- name: a\n  interval: 30s\n  limit: 3\n  query_offset: 1m\n  labels: {team: x, sev: low}\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m\n    labels: {sev: page}\n    annotations: {summary: '{{ $labels.instance }} is down ({{ $value }})'}\n",
        )
        .expect("valid");
        assert_eq!(g[0].interval, Some(Duration::from_secs(30)));
        assert_eq!(g[0].query_offset, Duration::from_secs(60));
        assert_eq!(g[0].rules[1].labels["sev"], "page");
        assert_eq!(g[0].rules[1].labels["team"], "x");
        assert!(
            matches!(g[0].rules[1].kind, RuleKind::Alert { hold, .. } if hold == Duration::from_secs(300))
        );
    }

    #[test]
    fn names_every_problem() {
        let e = check(
            "groups:\n- name: a\n  rules:\n  - record: 'bad name'\n    expr: up\n  - alert: X\n    expr: 'sum('\n  - record: r\n    alert: y\n    expr: up\n  - record: ok\n    expr: up\n    for: 1m\n  - alert: T\n    expr: up\n    annotations: {a: '{{ $labels.x '}\n- name: a\n",
        )
        .expect_err("invalid");
        let all = e.errors.join("\n");
        assert!(
            all.contains("invalid recording rule name: bad name"),
            "{all}"
        );
        assert!(
            all.contains("rule 2, \"X\": could not parse expression"),
            "{all}"
        );
        assert!(
            all.contains("only one of 'record' and 'alert' must be set"),
            "{all}"
        );
        assert!(
            all.contains("invalid field 'for' in recording rule"),
            "{all}"
        );
        assert!(all.contains("template: a"), "{all}");
        assert!(all.contains("is repeated in the same file"), "{all}");
        let e =
            check("groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up\n    severity: page\n")
                .expect_err("unknown field");
        assert!(e.to_string().contains("severity"), "{e}");
    }
}
