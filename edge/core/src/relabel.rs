//! Relabeling: Prometheus' `relabel_configs` / `metric_relabel_configs`, every action, same semantics.
//!
//! Regular expressions are Go RE2 (translated by [`crate::matcher::translate_go_regex`]) and fully anchored;
//! `$1`, `${1}`, `$name` and `$$` in `target_label` and `replacement` expand as Go's
//! `Regexp.ExpandString` does (a name is the longest run of letters, digits and `_`, so `$1x` is the group
//! named `1x`, which is empty). `hashmod` is the md5 of the joined values, its last 8 bytes read big-endian,
//! modulo `modulus` — Prometheus' `sum64(md5.Sum(...))`, so targets shard to the same bucket as there.
//!
//! Where Prometheus 2.42 and 3 differ we follow 3: a `replace` whose expanded `target_label` is not a
//! valid label name does nothing (2.42 deleted the unexpanded name).

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

use crate::labels::{Labels, LabelsBuilder};
use crate::matcher::translate_go_regex;

/// A relabeling action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An anchored Go regular expression, remembering how it was written.
#[derive(Clone)]
pub struct GoRegex {
    source: String,
    re: Regex,
}

impl GoRegex {
    pub fn new(source: &str) -> Result<GoRegex, String> {
        let translated = translate_go_regex(source)?;
        let re = Regex::new(&format!("^(?:{translated})$"))
            .map_err(|e| format!("invalid regex {source:?}: {e}"))?;
        Ok(GoRegex {
            source: source.to_owned(),
            re,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// Go's `ExpandString` of `template` for the match of this regex on `src`; `None` when it does not match.
    pub fn expand(&self, template: &str, src: &str) -> Option<String> {
        let caps = self.re.captures(src)?;
        Some(expand(&self.re, &caps, template))
    }
}

impl PartialEq for GoRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for GoRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl<'de> Deserialize<'de> for GoRegex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoRegex::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Go's `regexp.expand`: `$$` is a dollar, `$name`/`${name}` a group by number or name, anything else
/// after `$` leaves the `$` as text.
fn expand(re: &Regex, caps: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut t = template;
    while let Some(i) = t.find('$') {
        out.push_str(&t[..i]);
        t = &t[i + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            out.push('$');
            t = rest;
            continue;
        }
        match extract(t) {
            Some((name, num, rest)) => {
                t = rest;
                let m = match num {
                    Some(n) => caps.get(n),
                    None => re
                        .capture_names()
                        .position(|n| n == Some(name))
                        .and_then(|i| caps.get(i)),
                };
                if let Some(m) = m {
                    out.push_str(m.as_str());
                }
            }
            None => out.push('$'),
        }
    }
    out.push_str(t);
    out
}

/// Parses a group reference after `$`: `(name, number if all digits without a leading zero, rest)`.
fn extract(s: &str) -> Option<(&str, Option<usize>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let mut rest = &body[end..];
    if brace {
        rest = rest.strip_prefix('}')?;
    }
    let num = if name.bytes().all(|b| b.is_ascii_digit())
        && !(name.len() > 1 && name.starts_with('0'))
        && name.len() <= 8
    {
        name.parse::<usize>().ok()
    } else {
        None
    };
    Some((name, num, rest))
}

/// Whether `s` is a (legacy) Prometheus label name.
pub fn is_valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Prometheus' `relabelTarget`: a label name in which `$var`/`${var}` references may appear.
fn is_valid_target_template(s: &str) -> bool {
    // `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`: starts with a letter, `_` or a reference; the rest is
    // word characters and references.
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if b.get(i) == Some(&b'{') {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && word(b[j]) {
                    j += 1;
                }
                if j == start || b.get(j) != Some(&b'}') {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if (first && !(b[i].is_ascii_alphabetic() || b[i] == b'_')) || !word(b[i]) {
            return false;
        } else {
            i += 1;
        }
        first = false;
    }
    true
}

/// One relabeling step, validated as Prometheus validates it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: GoRegex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    regex: Option<GoRegex>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<Action>,
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(r: RawRelabelConfig) -> Result<Self, String> {
        let action = r.action.unwrap_or(Action::Replace);
        let regex = match r.regex {
            Some(re) => re,
            None => GoRegex::new(DEFAULT_REGEX)?,
        };
        let c = RelabelConfig {
            source_labels: r.source_labels.clone().unwrap_or_default(),
            separator: r
                .separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SEPARATOR.into()),
            regex,
            modulus: r.modulus.unwrap_or(0),
            target_label: r.target_label.clone().unwrap_or_default(),
            replacement: r
                .replacement
                .clone()
                .unwrap_or_else(|| DEFAULT_REPLACEMENT.into()),
            action,
        };
        for l in &c.source_labels {
            if !is_valid_label_name(l) {
                return Err(format!(
                    "{l:?} is not a valid label name in 'source_labels'"
                ));
            }
        }
        use Action::*;
        if c.modulus == 0 && action == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(
            action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        ) && c.target_label.is_empty()
        {
            return Err(format!(
                "relabel configuration for {action} action requires 'target_label' value"
            ));
        }
        if matches!(
            action,
            Replace | Lowercase | Uppercase | KeepEqual | DropEqual
        ) && !is_valid_target_template(&c.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {action} action",
                c.target_label
            ));
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && c.replacement != DEFAULT_REPLACEMENT
        {
            return Err(format!("'replacement' can not be set for {action} action"));
        }
        if action == LabelMap && !is_valid_target_template(&c.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {action} action",
                c.replacement
            ));
        }
        if action == HashMod && !is_valid_label_name(&c.target_label) {
            return Err(format!(
                "{:?} is invalid 'target_label' for {action} action",
                c.target_label
            ));
        }
        if matches!(action, KeepEqual | DropEqual)
            && (c.regex.as_str() != DEFAULT_REGEX
                || c.modulus != 0
                || c.separator != DEFAULT_SEPARATOR
                || c.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{action} action requires only 'source_labels' and 'target_label', and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (r.source_labels.is_some()
                || !c.target_label.is_empty()
                || c.modulus != 0
                || c.separator != DEFAULT_SEPARATOR
                || c.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{action} action requires only 'regex', and no other fields"
            ));
        }
        Ok(c)
    }
}

impl RelabelConfig {
    /// A config from YAML-equivalent parts (tests and programmatic use).
    pub fn parse_yaml(yaml: &str) -> Result<RelabelConfig, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    /// Applies this step to `lb`; `false` drops the label set.
    fn apply(&self, lb: &mut LabelsBuilder) -> bool {
        let val = if self.source_labels.len() == 1 {
            lb.get(&self.source_labels[0]).unwrap_or("").to_owned()
        } else {
            let mut v = String::new();
            for (i, l) in self.source_labels.iter().enumerate() {
                if i > 0 {
                    v.push_str(&self.separator);
                }
                v.push_str(lb.get(l).unwrap_or(""));
            }
            v
        };
        match self.action {
            Action::Drop => return !self.regex.is_match(&val),
            Action::Keep => return self.regex.is_match(&val),
            Action::DropEqual => return lb.get(&self.target_label).unwrap_or("") != val,
            Action::KeepEqual => return lb.get(&self.target_label).unwrap_or("") == val,
            Action::Replace => {
                let Some(caps) = self.regex.re.captures(&val) else {
                    return true;
                };
                let target = expand(&self.regex.re, &caps, &self.target_label);
                if !is_valid_label_name(&target) {
                    return true;
                }
                let res = expand(&self.regex.re, &caps, &self.replacement);
                if res.is_empty() {
                    lb.del(&target);
                } else {
                    lb.set(&target, &res);
                }
            }
            Action::Lowercase => {
                lb.set(&self.target_label, &val.to_lowercase());
            }
            Action::Uppercase => {
                lb.set(&self.target_label, &val.to_uppercase());
            }
            Action::HashMod => {
                let digest = Md5::digest(val.as_bytes());
                let mut last8 = [0u8; 8];
                last8.copy_from_slice(&digest[8..16]);
                let m = u64::from_be_bytes(last8) % self.modulus;
                lb.set(&self.target_label, &m.to_string());
            }
            Action::LabelMap => {
                for (name, value) in lb.pairs() {
                    if let Some(caps) = self.regex.re.captures(&name) {
                        let res = expand(&self.regex.re, &caps, &self.replacement);
                        lb.set(&res, &value);
                    }
                }
            }
            Action::LabelDrop => {
                for (name, _) in lb.pairs() {
                    if self.regex.is_match(&name) {
                        lb.del(&name);
                    }
                }
            }
            Action::LabelKeep => {
                for (name, _) in lb.pairs() {
                    if !self.regex.is_match(&name) {
                        lb.del(&name);
                    }
                }
            }
        }
        true
    }
}

/// Applies `cfgs` in order to the builder; `false` when a step dropped the set (the builder is then
/// unspecified).
pub fn process_builder(lb: &mut LabelsBuilder, cfgs: &[RelabelConfig]) -> bool {
    cfgs.iter().all(|c| c.apply(lb))
}

/// Applies `cfgs` in order; `None` when a step dropped the set.
pub fn process(labels: &Labels, cfgs: &[RelabelConfig]) -> Option<Labels> {
    if cfgs.is_empty() {
        return Some(labels.clone());
    }
    let mut lb = labels.to_builder();
    process_builder(&mut lb, cfgs).then(|| lb.build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> RelabelConfig {
        RelabelConfig::parse_yaml(yaml).unwrap()
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn go_expand() {
        let re = GoRegex::new("(?P<a>a+)(b*)").unwrap();
        let e = |t: &str| re.expand(t, "aab").unwrap();
        assert_eq!(e("$1"), "aa");
        assert_eq!(e("${1}x"), "aax");
        assert_eq!(e("$1x"), ""); // the group named "1x"
        assert_eq!(e("$a-$2"), "aa-b");
        assert_eq!(e("$$1"), "$1");
        assert_eq!(e("$"), "$");
        assert_eq!(e("$-"), "$-");
        assert_eq!(e("${1"), "${1");
        assert_eq!(e("$01"), ""); // leading zero: a name, not a number
        assert_eq!(e("$9"), "");
        assert!(re.expand("$1", "c").is_none());
    }

    #[test]
    fn anchored() {
        let re = GoRegex::new("a|b").unwrap();
        assert!(re.is_match("a"));
        assert!(!re.is_match("ab"));
    }

    #[test]
    fn actions() {
        let base = l(&[
            ("__name__", "up"),
            ("a", "Foo"),
            ("b", "bar"),
            ("__meta_x_y", "1"),
        ]);
        let got = process(
            &base,
            &[cfg(
                "source_labels: [a, b]\ntarget_label: c\nregex: (.*);(.*)\nreplacement: ${2}-$1",
            )],
        )
        .unwrap();
        assert_eq!(got.get("c"), Some("bar-Foo"));
        // No match: nothing happens. Empty result deletes.
        let got = process(
            &base,
            &[cfg("source_labels: [a]\ntarget_label: b\nregex: nomatch")],
        )
        .unwrap();
        assert_eq!(got.get("b"), Some("bar"));
        let got = process(
            &base,
            &[cfg(
                "source_labels: [missing]\ntarget_label: b\nregex: (.*)",
            )],
        )
        .unwrap();
        assert_eq!(got.get("b"), None);
        assert!(
            process(
                &base,
                &[cfg("source_labels: [a]\nregex: Foo\naction: drop")]
            )
            .is_none()
        );
        assert!(
            process(
                &base,
                &[cfg("source_labels: [a]\nregex: foo\naction: keep")]
            )
            .is_none()
        );
        assert!(
            process(
                &base,
                &[cfg("source_labels: [a]\nregex: F.*\naction: keep")]
            )
            .is_some()
        );
        let lower = process(
            &base,
            &[cfg(
                "source_labels: [a]\ntarget_label: a\naction: lowercase",
            )],
        )
        .unwrap();
        assert_eq!(lower.get("a"), Some("foo"));
        let upper = process(
            &base,
            &[cfg(
                "source_labels: [b]\ntarget_label: B\naction: uppercase",
            )],
        )
        .unwrap();
        assert_eq!(upper.get("B"), Some("BAR"));
        let mapped = process(
            &base,
            &[cfg(
                "regex: __meta_(x)_(.*)\nreplacement: ${1}_$2\naction: labelmap",
            )],
        )
        .unwrap();
        assert_eq!(mapped.get("x_y"), Some("1"));
        assert_eq!(mapped.get("__meta_x_y"), Some("1"));
        let dropped = process(&base, &[cfg("regex: __meta_.*\naction: labeldrop")]).unwrap();
        assert!(!dropped.has("__meta_x_y"));
        let kept = process(&base, &[cfg("regex: __name__|a\naction: labelkeep")]).unwrap();
        assert_eq!(kept.len(), 2);
        let eq = l(&[("a", "x"), ("b", "x")]);
        assert!(
            process(
                &eq,
                &[cfg(
                    "source_labels: [a]\ntarget_label: b\naction: keepequal"
                )]
            )
            .is_some()
        );
        assert!(
            process(
                &eq,
                &[cfg(
                    "source_labels: [a]\ntarget_label: b\naction: dropequal"
                )]
            )
            .is_none()
        );
    }

    /// Values computed with Prometheus' `sum64(md5.Sum(...)) % m`.
    #[test]
    fn hashmod_matches_prometheus() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e; last 8 bytes 0xe9800998ecf8427e.
        let got = process(
            &l(&[("a", "")]),
            &[cfg(
                "source_labels: [a]\ntarget_label: h\nmodulus: 1000000007\naction: hashmod",
            )],
        )
        .unwrap();
        assert_eq!(
            got.get("h").unwrap(),
            (0xe980_0998_ecf8_427e_u64 % 1_000_000_007).to_string()
        );
    }

    #[test]
    fn validation_errors() {
        let bad = [
            ("action: hashmod\ntarget_label: x", "non-zero modulus"),
            ("action: replace", "requires 'target_label'"),
            (
                "action: labeldrop\nsource_labels: [a]",
                "requires only 'regex'",
            ),
            (
                "action: keepequal\ntarget_label: x\nregex: a",
                "no other fields",
            ),
            (
                "action: lowercase\ntarget_label: x\nreplacement: y",
                "can not be set",
            ),
            ("target_label: 1x", "invalid 'target_label'"),
            ("action: nosuch", "nosuch"),
            ("regex: '(' ", "regex"),
            ("sourcelabels: [a]", "sourcelabels"),
        ];
        for (y, want) in bad {
            let e = RelabelConfig::parse_yaml(y).unwrap_err();
            assert!(e.contains(want), "{y}: {e}");
        }
        assert!(is_valid_target_template("${1}_x"));
        assert!(is_valid_target_template("foo_$1"));
        assert!(!is_valid_target_template("1foo"));
        assert!(!is_valid_target_template("a-b"));
    }
}
