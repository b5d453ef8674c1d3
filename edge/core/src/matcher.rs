//! Label matchers with Prometheus semantics.
//!
//! - `=`, `!=`, `=~`, `!~`; regexes are fully anchored and `.` matches a newline (Prometheus compiles
//!   `^(?s:<re>)$`).
//! - A missing label matches as the empty string, so `{a=""}` and `{a=~""}` select series *without* `a`,
//!   `{a!=""}` and `{a=~".+"}` select series *with* it.
//! - Regexes use Go RE2 syntax. Rust's `regex` crate is almost the same language, but its Perl classes
//!   (`\d`, `\w`, `\s`, `\b`) are Unicode-aware while Go's are ASCII-only, it nests character classes where
//!   Go takes `[` literally, and it rejects a `{` that does not start a repetition where Go takes it
//!   literally. [`translate_go_regex`] rewrites those constructs so a pattern means what it means in
//!   Prometheus.
//! - Common shapes are recognised and evaluated without the regex engine: a literal, an alternation of
//!   literals (`a|b|c`, the shape Grafana variables produce), `.*` and `.+`.

use std::fmt;

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind};

use crate::labels::{Labels, write_go_quoted};

/// The four matcher types, numbered as on the wire (`LabelMatcher.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regex => "=~",
            MatchType::NotRegex => "!~",
        }
    }
}

/// A matcher could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MatcherError {
    #[error("invalid regular expression in matcher {name}{op}{value:?}: {reason}")]
    InvalidRegex {
        name: String,
        op: &'static str,
        value: String,
        reason: String,
    },
    #[error("matcher has an empty label name")]
    EmptyName,
}

/// A label matcher. Cheap to evaluate; build once per query.
#[derive(Clone)]
pub struct Matcher {
    name: String,
    value: String,
    kind: MatchType,
    pattern: Pattern,
}

#[derive(Clone)]
enum Pattern {
    /// `=` / `!=`, or a regex that is a plain literal.
    Literal(String),
    /// A regex that is an alternation of literals; sorted for binary search.
    Set(Vec<String>),
    /// `.*` (with `s` flag): everything, including the empty string.
    Any,
    /// `.+`: any non-empty string.
    NonEmpty,
    Regex(Regex),
}

impl Matcher {
    /// Builds a matcher; regexes are anchored and translated from Go syntax.
    pub fn new(
        kind: MatchType,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, MatcherError> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() {
            return Err(MatcherError::EmptyName);
        }
        let pattern = match kind {
            MatchType::Equal | MatchType::NotEqual => Pattern::Literal(value.clone()),
            MatchType::Regex | MatchType::NotRegex => {
                // The value and the regex crate's reason (which quotes the pattern) are cut short: a
                // megabyte of pattern must not come back as a megabyte of error message.
                compile(&value).map_err(|reason| MatcherError::InvalidRegex {
                    name: crate::error::excerpt(&name, 128).into_owned(),
                    op: kind.as_str(),
                    value: crate::error::excerpt(&value, 256).into_owned(),
                    reason: crate::error::excerpt(&reason, 512).into_owned(),
                })?
            }
        };
        Ok(Matcher {
            name,
            value,
            kind,
            pattern,
        })
    }

    /// `name="value"`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        let value = value.into();
        Matcher {
            name: name.into(),
            pattern: Pattern::Literal(value.clone()),
            value,
            kind: MatchType::Equal,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> MatchType {
        self.kind
    }

    /// Whether a label value (`""` for an absent label) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        let hit = match &self.pattern {
            Pattern::Literal(s) => s == v,
            Pattern::Set(set) => set.binary_search_by(|x| x.as_str().cmp(v)).is_ok(),
            Pattern::Any => true,
            Pattern::NonEmpty => !v.is_empty(),
            Pattern::Regex(re) => re.is_match(v),
        };
        match self.kind {
            MatchType::Equal | MatchType::Regex => hit,
            MatchType::NotEqual | MatchType::NotRegex => !hit,
        }
    }

    /// Whether the label set satisfies the matcher (a missing label counts as `""`).
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get_or_empty(&self.name))
    }

    /// Whether the matcher selects series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=` and for regexes that are literals or alternations of literals: the exact values that match
    /// (positive matchers only). Index lookups use it to read postings directly instead of scanning values.
    pub fn set_values(&self) -> Option<Vec<&str>> {
        if !matches!(self.kind, MatchType::Equal | MatchType::Regex) {
            return None;
        }
        match &self.pattern {
            Pattern::Literal(s) => Some(vec![s.as_str()]),
            Pattern::Set(v) => Some(v.iter().map(String::as_str).collect()),
            _ => None,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.kind.as_str())?;
        write_go_quoted(f, &self.value)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.kind == other.kind && self.name == other.name && self.value == other.value
    }
}

impl Eq for Matcher {}

/// Whether a label set satisfies every matcher.
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

fn compile(go_re: &str) -> Result<Pattern, String> {
    let translated = translate_go_regex(go_re)?;
    let anchored = format!("^(?s:{translated})$");
    // Recognise the cheap shapes from the parsed expression (the same parse the regex crate does).
    let inner = format!("(?s:{translated})");
    if let Ok(hir) = regex_syntax::ParserBuilder::new()
        .dot_matches_new_line(true)
        .build()
        .parse(&inner)
        && let Some(p) = simple_pattern(&hir)
    {
        return Ok(p);
    }
    Regex::new(&anchored)
        .map(Pattern::Regex)
        .map_err(|e| e.to_string())
}

fn simple_pattern(hir: &Hir) -> Option<Pattern> {
    if let Some(mut set) = literal_set(hir) {
        set.sort_unstable();
        set.dedup();
        return Some(if set.len() == 1 {
            Pattern::Literal(set.remove(0))
        } else {
            Pattern::Set(set)
        });
    }
    match hir.kind() {
        HirKind::Repetition(rep) if rep.max.is_none() && rep.min <= 1 && is_any_char(&rep.sub) => {
            Some(if rep.min == 0 {
                Pattern::Any
            } else {
                Pattern::NonEmpty
            })
        }
        HirKind::Capture(c) => simple_pattern(&c.sub),
        _ => None,
    }
}

/// Largest finite set of strings a regex may be expanded to.
const MAX_SET: usize = 256;

/// The finite set of strings `hir` matches, when it is small: literals, small classes (the parser turns
/// `a|b` into `[ab]`), alternations and concatenations of those.
fn literal_set(hir: &Hir) -> Option<Vec<String>> {
    match hir.kind() {
        HirKind::Empty => Some(vec![String::new()]),
        HirKind::Literal(l) => Some(vec![String::from_utf8(l.0.to_vec()).ok()?]),
        HirKind::Class(Class::Unicode(c)) => {
            let mut out = Vec::new();
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    out.push(ch.to_string());
                    if out.len() > MAX_SET {
                        return None;
                    }
                }
            }
            Some(out)
        }
        HirKind::Capture(c) => literal_set(&c.sub),
        HirKind::Alternation(alts) => {
            let mut out = Vec::new();
            for a in alts {
                out.extend(literal_set(a)?);
                if out.len() > MAX_SET {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Concat(parts) => {
            let mut out = vec![String::new()];
            for p in parts {
                let next = literal_set(p)?;
                if out.len() * next.len() > MAX_SET {
                    return None;
                }
                out = out
                    .iter()
                    .flat_map(|prefix| next.iter().map(move |n| format!("{prefix}{n}")))
                    .collect();
            }
            Some(out)
        }
        _ => None,
    }
}

fn is_any_char(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let r = c.ranges();
            r.len() == 1 && r[0].start() == '\0' && r[0].end() == char::MAX
        }
        _ => false,
    }
}

/// Go's largest repeat count (`regexp/syntax`, Go 1.19–1.23: `{n}`, `{n,}` and `{n,m}` with n or m
/// above 1000 are "invalid repeat count"). The regex crate takes counts up to its compiled-size limit,
/// and compiling one such pattern costs tens of milliseconds (`a{55555}` 15 ms, `\pL{1000}` 84 ms in
/// a release build), which every matcher of every request would pay: Prometheus refuses them, so do we.
pub const GO_MAX_REPEAT: u32 = 1000;

/// Refuses the repetitions Go's parser refuses (`regexp/syntax`, Perl flags, Go 1.19–1.23), reading
/// `pattern` lexically as that parser does, so patterns that do not parse are covered too
/// (promql-parser retries those with braces escaped, which would compile a large count after all):
/// - a count above [`GO_MAX_REPEAT`] (`a{1001}`): "invalid repeat count";
/// - counts whose nesting multiplies past it (`((a{10}){10}){11}`, Go's `repeatIsValid`): the same;
/// - a repetition of a repetition (`a**`, `(x){9}{9}`; `a*?` is a lazy star): "invalid nested
///   repetition operator".
///
/// A `{` is a repetition only where it opens `{n}`, `{n,}` or `{n,m}`; elsewhere, in a bracket
/// expression, or after `\p`/`\x`, it is a literal.
fn check_go_repeats(pattern: &str) -> Result<(), String> {
    let b = pattern.as_bytes();
    // Per open group: the largest product of counts inside it so far.
    let mut groups: Vec<u64> = vec![1];
    // The product of counts of the last atom (a closed group's inner product; 1 for anything else),
    // or `None` where nothing can be repeated (start, `|`, `(`).
    let mut atom: Option<u64> = None;
    // After a repetition operator (and its lazy `?`, once taken).
    let mut repeated = false;
    let mut lazy_taken = false;
    // Where the last repetition operator began, to name a nested one as Go does (`*{2}`).
    let mut op_start = 0;
    let nested = |op: &str| format!("invalid nested repetition operator: `{op}`");
    let limit = u64::from(GO_MAX_REPEAT);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'*' | b'+' | b'?' => {
                if repeated {
                    if c == b'?' && !lazy_taken {
                        lazy_taken = true;
                        i += 1;
                        continue;
                    }
                    return Err(nested(&pattern[op_start..=i]));
                }
                repeated = atom.is_some();
                lazy_taken = false;
                op_start = i;
                i += 1;
                continue;
            }
            b'{' => {
                let digits =
                    |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n1 = digits(i + 1);
                let mut j = i + 1 + n1;
                let mut n2 = 0;
                let comma = b.get(j) == Some(&b',');
                if comma {
                    n2 = digits(j + 1);
                    j += 1 + n2;
                }
                if n1 > 0 && b.get(j) == Some(&b'}') {
                    let op = &pattern[i..=j];
                    // More digits than any count Go takes: too large whatever they say.
                    let count = |from: usize, n: usize| -> u64 {
                        if n > 9 {
                            u64::MAX
                        } else {
                            pattern[from..from + n].parse().unwrap_or(u64::MAX)
                        }
                    };
                    let min = count(i + 1, n1);
                    let max = (comma && n2 > 0).then(|| count(i + 2 + n1, n2));
                    let invalid = || {
                        format!(
                            "invalid repeat count: `{op}` (at most {GO_MAX_REPEAT} copies, as in Go)"
                        )
                    };
                    if min > limit || max.is_some_and(|m| m > limit || m < min) {
                        return Err(invalid());
                    }
                    if repeated {
                        return Err(nested(&pattern[op_start..=j]));
                    }
                    let m = max.unwrap_or(min);
                    if let Some(inner) = atom {
                        if (min >= 2 || m >= 2) && m > 0 && inner > limit / m {
                            return Err(invalid());
                        }
                        let product = inner.saturating_mul(m.max(1));
                        if let Some(g) = groups.last_mut() {
                            *g = (*g).max(product);
                        }
                    }
                    repeated = atom.is_some();
                    lazy_taken = false;
                    op_start = i;
                    i = j + 1;
                    continue;
                }
                atom = Some(1);
                i += 1;
            }
            b'\\' => {
                // `\p{Greek}` and `\x{41}` carry braces that are not counts.
                i += 2;
                if matches!(b.get(i - 1), Some(b'p' | b'P' | b'x')) && b.get(i) == Some(&b'{') {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                }
                atom = Some(1);
            }
            b'[' => {
                i = skip_bracket(pattern, i)?;
                atom = Some(1);
            }
            b'(' => {
                groups.push(1);
                atom = None;
                i += 1;
            }
            b')' => {
                let inner = if groups.len() > 1 { groups.pop() } else { None };
                atom = Some(inner.unwrap_or(1));
                i += 1;
            }
            b'|' => {
                atom = None;
                i += 1;
            }
            _ => {
                atom = Some(1);
                i += 1;
            }
        }
        repeated = false;
        lazy_taken = false;
    }
    Ok(())
}

/// The end of the bracket expression opening at `b[i]` (`[`): `]` right after `[` or `[^` is a
/// literal, `[:name:]` nests. Go takes everything up to the next `:]` as a class name and refuses
/// names it does not know ("invalid character class range").
fn skip_bracket(pattern: &str, mut i: usize) -> Result<usize, String> {
    let b = pattern.as_bytes();
    i += 1;
    if b.get(i) == Some(&b'^') {
        i += 1;
    }
    if b.get(i) == Some(&b']') {
        i += 1;
    }
    while i < b.len() && b[i] != b']' {
        if b[i] == b'\\' {
            i += 1;
        } else if b[i] == b'['
            && b.get(i + 1) == Some(&b':')
            && let Some(end) = pattern[i + 2..].find(":]")
        {
            let name = &pattern[i + 2..i + 2 + end];
            if !GO_POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(name)) {
                return Err(format!(
                    "invalid character class range: `{}`",
                    &pattern[i..i + end + 4]
                ));
            }
            i += end + 3;
        }
        i += 1;
    }
    Ok(i + 1)
}

/// The ASCII classes Go knows inside brackets (`[[:alpha:]]`, `[[:^digit:]]`).
const GO_POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

const GO_DIGIT: &str = "0-9";
const GO_WORD: &str = "0-9A-Za-z_";
const GO_SPACE: &str = "\\t\\n\\x0C\\r ";

/// Rewrites a Go RE2 pattern into the Rust `regex` dialect with the same meaning (see the module
/// documentation). Errors name constructs Rust cannot express.
pub fn translate_go_regex(re: &str) -> Result<String, String> {
    check_go_repeats(re)?;
    let chars: Vec<char> = re.chars().collect();
    let mut out = String::with_capacity(re.len() + 8);
    let mut i = 0;
    // Inside a bracket expression: Go has no nesting, so only the outermost `[` counts.
    let mut in_class = false;
    // Position just after the class' opening `[` or `[^`, where `]` is a literal.
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else {
                return Err("trailing backslash at end of expression".into());
            };
            i += 2;
            let (pos, neg) = match e {
                'd' | 'D' => (GO_DIGIT, e == 'D'),
                'w' | 'W' => (GO_WORD, e == 'W'),
                's' | 'S' => (GO_SPACE, e == 'S'),
                'b' | 'B' if !in_class => {
                    // ASCII word boundary as in Go. (`(?-u:\B)` is refused by the regex crate for UTF-8
                    // text, so `\B` keeps its Unicode meaning; the two differ only next to non-ASCII word
                    // characters.)
                    out.push_str(if e == 'b' { "(?-u:\\b)" } else { "\\B" });
                    continue;
                }
                'Q' => return Err("\\Q...\\E quoting is not supported".into()),
                'C' => return Err("\\C (any byte) is not supported".into()),
                _ => {
                    out.push('\\');
                    out.push(e);
                    // `\p{...}`/`\x{...}` carry their braces with them.
                    if matches!(e, 'p' | 'P' | 'x') && chars.get(i) == Some(&'{') {
                        while i < chars.len() {
                            out.push(chars[i]);
                            i += 1;
                            if chars[i - 1] == '}' {
                                break;
                            }
                        }
                    }
                    continue;
                }
            };
            match (in_class, neg) {
                (true, false) => out.push_str(pos),
                // Rust nests classes, so a negated Perl class inside a class becomes a nested class.
                (true, true) | (false, true) => {
                    out.push_str("[^");
                    out.push_str(pos);
                    out.push(']');
                }
                (false, false) => {
                    out.push('[');
                    out.push_str(pos);
                    out.push(']');
                }
            }
            continue;
        }
        if in_class {
            match c {
                ']' if i > class_start => {
                    in_class = false;
                    out.push(']');
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // POSIX class `[:alpha:]`: copy through to its closing `:]`.
                    let rest: String = chars[i..].iter().collect();
                    let Some(end) = rest.find(":]") else {
                        return Err("unterminated POSIX class".into());
                    };
                    out.push_str(&rest[..end + 2]);
                    i += rest[..end + 2].chars().count();
                    continue;
                }
                // Literal in Go; special (nesting, set operations) in Rust.
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                continue;
            }
            '{' => {
                // A repetition only when `{n}`, `{n,}` or `{n,m}` follows; otherwise a literal in Go.
                if let Some(len) = repetition_len(&chars[i..]) {
                    out.extend(&chars[i..i + len]);
                    i += len;
                    continue;
                }
                out.push_str("\\{");
            }
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    if in_class {
        return Err("missing closing ]".into());
    }
    Ok(out)
}

/// Length of `{n}`, `{n,}` or `{n,m}` at the start of `s`.
fn repetition_len(s: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (s.get(i) == Some(&'}')).then_some(i + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn re(v: &str) -> Matcher {
        Matcher::new(MatchType::Regex, "a", v).unwrap()
    }

    #[test]
    fn anchored_and_dot_matches_newline() {
        let m = re("b");
        assert!(m.matches("b"));
        assert!(!m.matches("ab"));
        assert!(!m.matches("bc"));
        assert!(re("a.b").matches("a\nb"));
        assert!(re("x|y.*").matches("yes"));
        assert!(!re("x|y.*").matches("xz"));
    }

    /// Go refuses repeat counts above 1000, at every spelling of a count; the regex crate would
    /// compile them slowly. Counts up to 1000, and braces that are not counts, are kept.
    #[test]
    fn repeat_counts_above_go_limit_are_refused() {
        for bad in [
            "a{1001}",
            "a{55555}",
            "d*{55555}",
            "a{1001,}",
            "a{2,1001}",
            "(x|y){0,5000}",
        ] {
            let err = Matcher::new(MatchType::Regex, "a", bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid repeat count"),
                "{bad}: {err}"
            );
            assert!(translate_go_regex(bad).is_err(), "{bad}");
        }
        for good in [
            "a{1000}",
            "a{0,1000}",
            "a{1000,}",
            "\\{55555}",
            "[{]55555}",
            "x{",
        ] {
            assert!(translate_go_regex(good).is_ok(), "{good}");
        }
        assert!(re("a{2}").matches("aa"));
    }

    #[test]
    fn empty_means_absent() {
        let labels = Labels::from_pairs([("b", "1")]);
        assert!(
            Matcher::new(MatchType::Equal, "a", "")
                .unwrap()
                .matches_labels(&labels)
        );
        assert!(re("").matches_labels(&labels));
        assert!(re(".*").matches_labels(&labels));
        assert!(!re(".+").matches_labels(&labels));
        assert!(
            !Matcher::new(MatchType::NotEqual, "a", "")
                .unwrap()
                .matches_labels(&labels)
        );
        assert!(
            Matcher::new(MatchType::NotRegex, "a", ".+")
                .unwrap()
                .matches_labels(&labels)
        );
        assert!(
            Matcher::new(MatchType::NotEqual, "a", "x")
                .unwrap()
                .matches_labels(&labels)
        );
    }

    #[test]
    fn fast_paths_agree_with_regex() {
        for (pat, inputs) in [
            ("abc", &["abc", "ab", "abcd", ""][..]),
            ("a|b|cc", &["a", "b", "cc", "c", "ab", ""]),
            (".*", &["", "x", "\n"]),
            (".+", &["", "x", "\n\n"]),
            ("(foo|bar)", &["foo", "bar", "foobar"]),
            ("(a|b)x[12]", &["ax1", "bx2", "ax", "cx1"]),
            ("[a-c]", &["a", "b", "c", "d"]),
            ("(?i)ab", &["AB", "aB", "ab", "a"]),
        ] {
            let m = re(pat);
            let slow = Regex::new(&format!("^(?s:{pat})$")).unwrap();
            for i in inputs {
                assert_eq!(m.matches(i), slow.is_match(i), "{pat} on {i:?}");
            }
        }
        assert_eq!(re("a|b").set_values(), Some(vec!["a", "b"]));
        assert_eq!(re("a.").set_values(), None);
        assert_eq!(re("(a|b)x").set_values(), Some(vec!["ax", "bx"]));
    }

    #[test]
    fn go_ascii_perl_classes() {
        // U+0663 ARABIC-INDIC DIGIT THREE is \d in Rust's Unicode mode, not in Go.
        assert!(!re("\\d").matches("\u{663}"));
        assert!(re("\\d+").matches("0123"));
        assert!(!re("\\w").matches("ü"));
        assert!(re("\\W").matches("ü"));
        assert!(re("[\\d.]+").matches("1.5"));
        assert!(re("[^\\d]+").matches("\u{663}"));
        assert!(re("[\\D]").matches("x"));
        assert!(!re("\\s").matches("\u{a0}"));
        assert!(re("a\\sb").matches("a\tb"));
        assert!(re("(?i)UP").matches("up"));
    }

    #[test]
    fn go_literal_brackets_and_braces() {
        assert!(re("[[]").matches("["));
        assert!(re("a{").matches("a{"));
        assert!(re("a{x}").matches("a{x}"));
        assert!(re("a{2}").matches("aa"));
        assert!(re("a{1,}").matches("aaa"));
        assert!(re("[]a]").matches("]"));
        assert!(re("[a&&b]").matches("&"));
        assert!(re("[[:alpha:]]+").matches("abc"));
        assert!(re("\\p{Greek}").matches("α"));
    }

    #[test]
    fn errors_name_the_matcher() {
        let e = Matcher::new(MatchType::Regex, "job", "(").err().unwrap();
        let s = e.to_string();
        assert!(s.contains("job=~\"(\""), "{s}");
        assert!(Matcher::new(MatchType::Regex, "job", "[a").is_err());
        assert!(Matcher::new(MatchType::Regex, "job", "\\Qx\\E").is_err());
        assert_eq!(
            Matcher::new(MatchType::Equal, "", "x").err(),
            Some(MatcherError::EmptyName)
        );
    }

    #[test]
    fn display_like_prometheus() {
        assert_eq!(re("a\"b").to_string(), r#"a=~"a\"b""#);
        assert_eq!(Matcher::equal("job", "x").to_string(), r#"job="x""#);
    }
}
