//! What a query must pass before anything walks its expression tree recursively.
//!
//! The engine, the fetch walk, `Expr`'s `Display` (the cache key), its value type and its drop glue all
//! recurse once per level of the tree, and a debug build spends tens of kilobytes of stack per level of
//! evaluation: `abs(`×85 was enough to abort the process ("stack overflow"). So, in this order:
//! 1. [`prescan`] reads the raw text (no tree yet): bracket nesting deeper than the parser itself can
//!    take is refused, and a number written where the parser reads a duration (`[1e300]`,
//!    `offset 1e300`) must fit one: promql-parser 0.11 converts it with `Duration::from_secs_f64`,
//!    which panics on values it cannot hold (`promql.y`, rule `duration -> NUMBER`).
//! 2. After parsing, [`check_depth`] measures the tree without recursion and refuses trees deeper than
//!    [`MAX_DEPTH`]; a refused tree is taken apart iteratively ([`drop_iteratively`]) so that even its
//!    drop does not recurse.
//! 3. [`check_values`] (recursive, now safe) refuses durations and `@` times out of range, as
//!    Prometheus does while parsing (`duration out of range`, `timestamp out of bounds for @
//!    modifier`), so the time arithmetic after it cannot overflow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr, Offset};

use crate::api::params::{MAX_TIME, MIN_TIME};

/// Deepest expression tree evaluated (every node counts: `abs(abs(x))` is 3 deep, `a+b+c` is 3).
///
/// Prometheus has no such limit (Go stacks grow); ours is the recursion every walk of the tree does.
/// 128 levels take ~1.5 MiB of stack in a debug build's evaluator (measured; release needs far less),
/// within the 2 MiB of a Tokio thread, and no hand-written query comes near it.
pub const MAX_DEPTH: usize = 128;

/// Largest upper bound of the tree's depth, estimated from the text alone ([`prescan`]), that is handed
/// to the parser. promql-parser 0.11 itself recurses (a debug build on a 2 MiB stack overflowed between
/// 8,000 and 12,000 nested `abs(`), and its time grows with the square of the depth (a chain of 20,000
/// `+1` took 6.7 s, 2,000 took 0.09 s): texts whose bound is above this are refused unparsed.
pub const MAX_TEXT_DEPTH: usize = 1024;

/// Longest duration a query may hold: Go's `time.Duration` (int64 nanoseconds, ~292 years), which
/// bounds every duration in Prometheus.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Refuses `query` before it is parsed: an upper bound of its tree's depth above [`MAX_TEXT_DEPTH`],
/// numbers in duration positions that no duration can hold, `@` times out of range. The message is
/// the reason alone.
///
/// The depth bound: within one bracket group, `k` operators make a tree at most `k + 1` deep, each of
/// whose leaves may be a bracketed group (or a call's arguments) of its own bound, plus one level for
/// the group. It is exact for chains (`a or b or …`, `abs(abs(…))`) and only overestimates flat
/// expressions that mix operator precedences.
pub fn prescan(query: &str) -> Result<(), String> {
    depth_bound(query).map(drop)
}

/// [`prescan`], answering the upper bound of the depth (a selector's is at most 2: `up{job="a"}`).
pub fn depth_bound(query: &str) -> Result<usize, String> {
    let mut sc = Scan {
        query,
        b: query.as_bytes(),
        groups: vec![(0, 0, false)],
        brackets: 0,
        prev: Prev::Other,
        i: 0,
    };
    while sc.i < sc.b.len() {
        let c = sc.b[sc.i];
        if !sc.punctuation(c)? {
            sc.word(c)?;
        }
    }
    sc.finish()
}

/// The previous significant token: `[`, `:` or `offset` (with an optional sign after it).
#[derive(Clone, Copy, PartialEq)]
enum Prev {
    Other,
    DurationNext,
    Offset,
    /// After `@` (and its optional sign): a number here is a time in seconds.
    At(bool),
    /// After `=~` or `!~`: a string here is a regular expression.
    Regex,
}

/// The scanner's state over one query.
struct Scan<'q> {
    query: &'q str,
    b: &'q [u8],
    /// One entry per open bracket group: (operators in it, deepest bound of its subgroups, is `{`).
    groups: Vec<(usize, usize, bool)>,
    /// Open `[`s: a number after `[` or after `:` inside brackets is a duration.
    brackets: usize,
    prev: Prev,
    i: usize,
}

fn too_deep() -> String {
    format!(
        "expression nesting is too deep: more than {MAX_TEXT_DEPTH} levels (functions, operators, parentheses)"
    )
}

/// Counts an operator in the innermost group (not in label matchers: `{a!="b"}`).
fn operator(groups: &mut [(usize, usize, bool)]) -> Result<(), String> {
    if let Some(g) = groups.last_mut()
        && !g.2
    {
        g.0 += 1;
        if g.0 + g.1 >= MAX_TEXT_DEPTH {
            return Err(too_deep());
        }
    }
    Ok(())
}

impl Scan<'_> {
    /// Consumes a comment, string, bracket, operator or blank at `self.i` (byte `c`); `false` when
    /// a word starts there instead.
    fn punctuation(&mut self, c: u8) -> Result<bool, String> {
        let (b, query) = (self.b, self.query);
        let i = &mut self.i;
        let groups = &mut self.groups;
        let brackets = &mut self.brackets;
        let prev = &mut self.prev;
        match c {
            b'#' => {
                while *i < b.len() && b[*i] != b'\n' {
                    *i += 1;
                }
                Ok(true)
            }
            b'"' | b'\'' | b'`' => {
                *i += 1;
                let body = *i;
                while *i < b.len() && b[*i] != c {
                    // A backslash escapes the next byte, except in raw (backtick) strings.
                    if b[*i] == b'\\' && c != b'`' {
                        *i += 1;
                    }
                    *i += 1;
                }
                // promql-parser 0.11 compiles a matcher's regular expression while parsing (twice
                // when the first attempt fails), so Go's limits are checked here, before it.
                if *prev == Prev::Regex
                    && let Some(text) = query.get(body..(*i).min(b.len()))
                    && let Some(re) = if c == b'`' {
                        Some(text.to_owned())
                    } else {
                        unquote(text).map(|(_, t)| t)
                    }
                {
                    meridian_core::matcher::translate_go_regex(&re)
                        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))?;
                }
                *i += 1;
                *prev = Prev::Other;
                Ok(true)
            }
            b'~' => {
                *prev = if *i > 0 && matches!(b[*i - 1], b'=' | b'!') {
                    Prev::Regex
                } else {
                    Prev::Other
                };
                *i += 1;
                Ok(true)
            }
            b'(' | b'[' | b'{' => {
                groups.push((0, 0, c == b'{'));
                // Every open group is at least one level deeper than the one around it.
                if groups.len() > MAX_TEXT_DEPTH {
                    return Err(too_deep());
                }
                if c == b'[' {
                    *brackets += 1;
                    *prev = Prev::DurationNext;
                } else {
                    *prev = Prev::Other;
                }
                *i += 1;
                Ok(true)
            }
            b')' | b']' | b'}' => {
                if groups.len() > 1
                    && let Some((ops, sub, _)) = groups.pop()
                    && let Some(parent) = groups.last_mut()
                {
                    parent.1 = parent.1.max(ops + sub + 1);
                    if parent.0 + parent.1 >= MAX_TEXT_DEPTH {
                        return Err(too_deep());
                    }
                }
                if c == b']' {
                    *brackets = brackets.saturating_sub(1);
                }
                *prev = Prev::Other;
                *i += 1;
                Ok(true)
            }
            b':' if *brackets > 0 => {
                *prev = Prev::DurationNext;
                *i += 1;
                Ok(true)
            }
            b'@' => {
                *prev = Prev::At(false);
                *i += 1;
                Ok(true)
            }
            b'-' if *prev == Prev::At(false) => {
                *prev = Prev::At(true);
                *i += 1;
                Ok(true)
            }
            b'+' if *prev == Prev::At(false) => {
                *i += 1;
                Ok(true)
            }
            b'+' | b'-' if *prev == Prev::Offset => {
                // `offset -5m`: the sign belongs to the offset; the duration follows.
                *prev = Prev::DurationNext;
                *i += 1;
                Ok(true)
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' => {
                // Binary and unary operators; `==`, `!=`, `<=`, `>=` count once.
                if !(matches!(c, b'=') && *i > 0 && matches!(b[*i - 1], b'=' | b'!' | b'<' | b'>'))
                {
                    operator(groups)?;
                }
                *prev = Prev::Other;
                *i += 1;
                Ok(true)
            }
            c if c.is_ascii_whitespace() => {
                *i += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Consumes a word (an identifier, keyword, number or duration) or any other byte at `self.i`.
    fn word(&mut self, c: u8) -> Result<(), String> {
        let (b, query, brackets, prev) = (self.b, self.query, self.brackets, self.prev);
        let mut i = self.i;
        let start = i;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            while i < b.len() {
                let x = b[i];
                let exponent_sign = matches!(x, b'+' | b'-')
                    && matches!(b[i - 1], b'e' | b'E')
                    && b[start].is_ascii_digit()
                    && !b[start..i].iter().any(|y| matches!(y, b'x' | b'X'));
                if x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b':' || exponent_sign
                {
                    // `:` ends a word inside brackets (`[5m:1m]`), and belongs to metric names outside.
                    if x == b':' && brackets > 0 {
                        break;
                    }
                    i += 1;
                } else {
                    break;
                }
            }
            let word = &query[start..i];
            if matches!(prev, Prev::DurationNext | Prev::Offset)
                && let Some(secs) = number_value(word)
                && !(secs.is_finite() && secs >= 0.0 && secs * 1e9 <= i64::MAX as f64)
            {
                return Err(format!("duration out of range: {word}"));
            }
            if let Prev::At(negative) = prev
                && let Some(secs) = number_value(word)
            {
                let ms = if negative { -secs } else { secs } * 1000.0;
                if !(ms.is_finite() && ms >= MIN_TIME as f64 && ms <= MAX_TIME as f64) {
                    let sign = if negative { "-" } else { "" };
                    return Err(format!(
                        "timestamp out of bounds for @ modifier: {sign}{word}"
                    ));
                }
            }
            if ["and", "or", "unless", "atan2"]
                .iter()
                .any(|k| word.eq_ignore_ascii_case(k))
            {
                self.i = i;
                operator(&mut self.groups)?;
            }
            self.i = i;
            self.prev = if word.eq_ignore_ascii_case("offset") {
                Prev::Offset
            } else {
                Prev::Other
            };
            return Ok(());
        }
        // Any other byte (commas, multi-byte characters).
        self.prev = Prev::Other;
        self.i = i + 1;
        Ok(())
    }

    /// The bound of the whole query: what is left open (an invalid query) still counts.
    fn finish(mut self) -> Result<usize, String> {
        let mut bound = 0;
        while let Some((ops, sub, _)) = self.groups.pop() {
            bound = bound.max(ops + sub) + 1;
        }
        if bound > MAX_TEXT_DEPTH {
            return Err(too_deep());
        }
        Ok(bound)
    }
}

pub(crate) use meridian_core::promfmt::go_unquote_body as unquote;

/// The value of `word` if the parser reads it as a number (decimal, hexadecimal, octal, `Inf`, `NaN`),
/// as promql-parser's `parse_str_radix` does; `None` for durations with units and identifiers.
fn number_value(word: &str) -> Option<f64> {
    let lower = word.to_ascii_lowercase();
    if lower == "inf" || lower == "nan" {
        return lower.parse().ok();
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    if !lower.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    lower.parse::<f64>().ok()
}

/// The children of a node, in no particular order.
fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => {
            let mut v: Vec<&Expr> = vec![&a.expr];
            if let Some(p) = &a.param {
                v.push(p);
            }
            v
        }
        Expr::Unary(u) => vec![&u.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Paren(p) => vec![&p.expr],
        Expr::Subquery(s) => vec![&s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => vec![],
    }
}

/// The depth of the tree (a leaf is 1), measured with an explicit stack; stops counting once past
/// `limit`.
pub fn depth(e: &Expr, limit: usize) -> usize {
    let mut stack = vec![(e, 1usize)];
    let mut max = 0;
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        if max > limit {
            break;
        }
        stack.extend(children(e).into_iter().map(|c| (c, d + 1)));
    }
    max
}

/// Whether the tree is small enough to evaluate on the calling (async) thread once its data is loaded:
/// at most `max_depth` levels (the evaluator recurses per level; an async worker's stack is the
/// runtime's default) and no subquery (whose steps multiply work without loading samples).
pub fn evaluates_inline(e: &Expr, max_depth: usize) -> bool {
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        if d > max_depth || matches!(e, Expr::Subquery(_)) {
            return false;
        }
        stack.extend(children(e).into_iter().map(|c| (c, d + 1)));
    }
    true
}

/// Refuses a tree deeper than [`MAX_DEPTH`] (taking it apart without recursion).
pub fn check_depth(e: Expr) -> Result<Expr, String> {
    if depth(&e, MAX_DEPTH) <= MAX_DEPTH {
        return Ok(e);
    }
    drop_iteratively(e);
    Err(format!(
        "expression nesting is too deep: more than {MAX_DEPTH} levels (functions, operators, parentheses)"
    ))
}

/// Drops a tree of any depth without recursing: children are moved out onto a heap stack first.
pub fn drop_iteratively(e: Expr) {
    let leaf = || Box::new(Expr::from(0.0));
    let mut stack = vec![e];
    while let Some(mut e) = stack.pop() {
        match &mut e {
            Expr::Aggregate(a) => {
                stack.push(*std::mem::replace(&mut a.expr, leaf()));
                if let Some(p) = a.param.take() {
                    stack.push(*p);
                }
            }
            Expr::Unary(u) => stack.push(*std::mem::replace(&mut u.expr, leaf())),
            Expr::Binary(b) => {
                stack.push(*std::mem::replace(&mut b.lhs, leaf()));
                stack.push(*std::mem::replace(&mut b.rhs, leaf()));
            }
            Expr::Paren(p) => stack.push(*std::mem::replace(&mut p.expr, leaf())),
            Expr::Subquery(s) => stack.push(*std::mem::replace(&mut s.expr, leaf())),
            Expr::Call(c) => stack.extend(c.args.args.drain(..).map(|a| *a)),
            _ => {}
        }
        // `e` now holds only leaves and drops shallowly.
    }
}

/// Refuses durations longer than [`MAX_DURATION`] and `@` times outside Prometheus' time range, as
/// Prometheus does while parsing (`model.ParseDuration`: "duration out of range";
/// `parser.setTimestamp`: "timestamp out of bounds for @ modifier"). Call after [`check_depth`].
pub fn check_values(e: &Expr) -> Result<(), String> {
    let duration = |d: &Duration| {
        if *d > MAX_DURATION {
            Err(format!(
                "duration out of range: {}",
                promql_parser::util::display_duration(d)
            ))
        } else {
            Ok(())
        }
    };
    let offset = |o: &Option<Offset>| match o {
        Some(Offset::Pos(d) | Offset::Neg(d)) => duration(d),
        None => Ok(()),
    };
    let at = |a: &Option<AtModifier>| match a {
        Some(AtModifier::At(t)) => at_in_range(t),
        _ => Ok(()),
    };
    match e {
        Expr::VectorSelector(vs) => {
            offset(&vs.offset)?;
            at(&vs.at)
        }
        Expr::MatrixSelector(m) => {
            duration(&m.range)?;
            offset(&m.vs.offset)?;
            at(&m.vs.at)
        }
        Expr::Subquery(s) => {
            duration(&s.range)?;
            if let Some(step) = &s.step {
                duration(step)?;
            }
            offset(&s.offset)?;
            at(&s.at)?;
            check_values(&s.expr)
        }
        other => children(other).into_iter().try_for_each(check_values),
    }
}

/// An `@` time must lie within Prometheus' `[MinTime, MaxTime]`.
fn at_in_range(t: &SystemTime) -> Result<(), String> {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
    };
    if ms < i128::from(MIN_TIME) || ms > i128::from(MAX_TIME) {
        return Err(format!(
            "timestamp out of bounds for @ modifier: {}",
            ms as f64 / 1000.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prescan_refuses_numbers_no_duration_holds() {
        for q in [
            "rate(up[1e300])",
            "up offset 1e300",
            "up offset -1e300",
            "up offset Inf",
            "up offset NaN",
            "max_over_time(up[5m:1e300])",
            "up[1e10]",
        ] {
            let e = prescan(q).err();
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with("duration out of range")),
                "{q}: {e:?}"
            );
        }
        for q in [
            "rate(up[5m])",
            "rate(up[300])",
            "up offset 5m",
            "up offset -300",
            "vector(1e300)",
            "up @ 1700000000",
            "up @ -1.5",
            "max_over_time(up[5m:30s])",
            "max_over_time(up[5m:])",
            r#"up{a="[1e300]"} offset 1h"#,
            "metric:name_total offset 1m",
            "1e+300 * 2",
            "up[1e5]",
        ] {
            assert_eq!(prescan(q), Ok(()), "{q}");
        }
    }

    /// Go refuses repeat counts above 1000 while parsing; the regex crate compiled them in tens of
    /// milliseconds each, and promql-parser compiles every matcher's pattern while parsing: a fuzzed
    /// query with three such matchers took a second to answer "bad_data". Refused from the text now,
    /// whatever the quoting.
    #[test]
    fn prescan_refuses_regex_repeat_counts_go_refuses() {
        for q in [
            r#"{__name__=~"a{55555}"}"#,
            r#"up{job!~'x\x7b2000}'}"#,
            "up{job =~ `(a|b){0,1001}`}",
            r#"sum(rate(x{a=~"y", b=~"z{1001,}"}[5m]))"#,
        ] {
            let err = prescan(q).unwrap_err();
            assert!(err.contains("invalid repeat count"), "{q}: {err}");
        }
        for q in [
            r#"{a=~"a{1000}"}"#,
            r#"{a="a{55555}"}"#,
            r#"{a=~"\\{55555}"}"#,
            r#"label_replace(up, "a", "$1", "b", "c{5000}")"#,
        ] {
            assert!(prescan(q).is_ok(), "{q}");
        }
    }

    #[test]
    fn prescan_refuses_at_times_out_of_range() {
        for q in [
            "up @ 1e300",
            "up @ -1e300",
            "rate(up[5m] @ +1e17)",
            "up @ Inf",
            "up @ NaN",
        ] {
            let e = prescan(q).err();
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with("timestamp out of bounds for @ modifier")),
                "{q}: {e:?}"
            );
        }
    }

    #[test]
    fn selectors_have_a_depth_bound_of_two() {
        for q in [
            "up",
            "up{job=\"a\"}",
            "{__name__=~\"a|(b)\"}",
            "up{a!=\"1\",b=~\"x\"}",
        ] {
            let d = depth_bound(q);
            assert!(matches!(d, Ok(1 | 2)), "{q}: {d:?}");
        }
        assert_eq!(depth_bound("sum(up)"), Ok(2));
        assert_eq!(depth_bound("sum(rate(up[5m]))"), Ok(4));
    }

    #[test]
    fn prescan_bounds_the_depth_from_the_text() {
        let deep = format!("{}1{}", "(".repeat(1500), ")".repeat(1500));
        assert!(prescan(&deep).is_err());
        let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(prescan(&ok), Ok(()));
        assert!(prescan(&format!("1{}", "+1".repeat(1100))).is_err());
        assert!(prescan(&format!("{}up", "-".repeat(1100))).is_err());
        assert!(prescan(&format!("up{}", " or up".repeat(1100))).is_err());
        assert!(prescan(&format!("{}up{}", "abs(".repeat(1100), ")".repeat(1100))).is_err());
        // Operators in different groups do not add up; in nested ones they do.
        let wide = vec![format!("({})", vec!["1"; 900].join("+")); 20].join(" + ");
        assert_eq!(prescan(&wide), Ok(()));
        let chain = vec!["1"; 600].join("+");
        assert_eq!(
            prescan(&format!("({chain}) + ({chain})")),
            Ok(()),
            "siblings"
        );
        assert!(
            prescan(&format!("({chain}) + {chain}")).is_err(),
            "a group in a chain"
        );
        assert!(
            prescan(&format!("abs({chain} + abs({chain}))")).is_err(),
            "nested"
        );
        // Matchers are not operators.
        let matchers: Vec<String> = (0..2000).map(|i| format!("l{i}!=\"v\"")).collect();
        assert_eq!(prescan(&format!("up{{{}}}", matchers.join(","))), Ok(()));
        // Brackets in strings and comments are not nesting.
        let s = format!("up{{a=\"{}\"}} # {}", "(".repeat(1000), "(".repeat(1000));
        assert_eq!(prescan(&s), Ok(()));
    }

    #[test]
    fn depth_counts_every_level_without_recursion() {
        let chain = promql_parser::parser::parse(&vec!["1"; 500].join("+"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(depth(&chain, usize::MAX), 500);
        assert_eq!(depth(&chain, 10), 11, "counting stops past the limit");
        assert!(check_depth(chain).is_err());
        let q =
            promql_parser::parser::parse("sum(rate(up[5m])) + 1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(depth(&q, usize::MAX), 4);
        assert!(check_depth(q).is_ok());
    }
}
