//! Target groups (Prometheus' `targetgroup.Group`) and the `file_sd` file format: what scrape
//! discovery produces and what the gateway's file-based Alertmanager discovery reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::labels::Labels;
use crate::relabel::is_valid_label_name;

/// A group of targets sharing labels, as Prometheus' `targetgroup.Group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// Identifies the group within its provider (`file.json:0`, `_x._tcp.example:0`, …).
    pub source: String,
    /// Per-target labels; each has at least `__address__`.
    pub targets: Vec<Labels>,
    /// Labels common to the group (target labels win).
    pub labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses the content of one file into groups.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let name = path.display().to_string();
    let raw: Vec<RawGroup> = if name.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            for k in g.labels.keys() {
                if !is_valid_label_name(k) {
                    return Err(format!("group {i}: {k:?} is not a valid label name"));
                }
            }
            for t in &g.targets {
                if t.is_empty() || t.contains('/') {
                    return Err(format!("group {i}: {t:?} is not a valid host:port"));
                }
            }
            let mut labels: Vec<(&str, &str)> = g
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.push(("__meta_filepath", &name));
            Ok(TargetGroup {
                source: format!("{name}:{i}"),
                targets: g
                    .targets
                    .iter()
                    .map(|t| Labels::from_pairs([("__address__", t.as_str())]))
                    .collect(),
                labels: Labels::from_pairs(labels),
            })
        })
        .collect()
}

/// Go's `filepath.Match` for one path element: `*`, `?`, `[...]` (with `^`/`!` negation and ranges).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in p including brackets).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('^' | '!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() && (first || p[i] != ']') {
            first = false;
            let lo = p[i];
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                let hi = p[i + 2];
                matched |= lo <= c && c <= hi;
                i += 3;
            } else {
                matched |= lo == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((matched != negate, i + 1))
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(p, n.first().copied().unwrap_or('\0'))) {
                (Some(_), Some((true, len))) => go(&p[len..], &n[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}
