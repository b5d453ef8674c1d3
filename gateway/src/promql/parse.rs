//! Parsing a query as every caller must: the guard's prescan, promql-parser, the depth and value
//! checks, and Prometheus' refusal of label names that are not UTF-8 as `label_replace`/`label_join`
//! destinations.

use meridian_core::error::{Error, ErrorKind, Result};
use promql_parser::parser::{self, Expr};

use super::guard;

/// Parses an expression as every caller must: [`guard::prescan`] first, then promql-parser, then the
/// tree's depth ([`guard::check_depth`]) and its durations and `@` times ([`guard::check_values`]).
/// The error is the reason alone (callers name the parameter).
pub fn parse_expr(query: &str) -> std::result::Result<Expr, String> {
    guard::prescan(query)?;
    let expr = guard::check_depth(parser::parse(query)?)?;
    guard::check_values(&expr)?;
    Ok(expr)
}

/// Parses a query, mapping the parser's message to a `bad_data` error.
pub fn parse(query: &str) -> Result<Expr> {
    let expr = parse_expr(query)
        .map_err(|e| Error::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let invalid = not_utf8_literals(query);
    if !invalid.is_empty() {
        check_label_destinations(&expr, &invalid)?;
    }
    Ok(expr)
}

/// String literals of `src` whose bytes, as Go reads the escapes, are not UTF-8 (`"\xff"`), in the form
/// promql-parser gives them (it holds Rust strings, so it reads `\xff` as the code point U+00FF).
fn not_utf8_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                // A comment, to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                let quote = c;
                let mut body = String::new();
                while let Some(c) = chars.next() {
                    if c == quote {
                        break;
                    }
                    body.push(c);
                    if c == '\\'
                        && let Some(e) = chars.next()
                    {
                        body.push(e);
                    }
                }
                if let Some((bytes, read)) = guard::unquote(&body)
                    && std::str::from_utf8(&bytes).is_err()
                {
                    out.push(read);
                }
            }
            _ => {}
        }
    }
    out
}

/// Prometheus refuses label names that are not UTF-8 as `label_replace`/`label_join` destinations.
fn check_label_destinations(e: &Expr, invalid: &[String]) -> Result<()> {
    match e {
        Expr::Call(c) => {
            if matches!(c.func.name, "label_replace" | "label_join")
                && let Some(Expr::StringLiteral(dst)) = c.args.args.get(1).map(|a| &**a)
                && invalid.contains(&dst.val)
            {
                return Err(Error::new(
                    ErrorKind::Execution,
                    format!(
                        "invalid destination label name in {}(): {:?} is not valid UTF-8",
                        c.func.name, dst.val
                    ),
                ));
            }
            c.args
                .args
                .iter()
                .try_for_each(|a| check_label_destinations(a, invalid))
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                check_label_destinations(p, invalid)?;
            }
            check_label_destinations(&a.expr, invalid)
        }
        Expr::Unary(u) => check_label_destinations(&u.expr, invalid),
        Expr::Binary(b) => {
            check_label_destinations(&b.lhs, invalid)?;
            check_label_destinations(&b.rhs, invalid)
        }
        Expr::Paren(p) => check_label_destinations(&p.expr, invalid),
        Expr::Subquery(s) => check_label_destinations(&s.expr, invalid),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod literal_tests {
    use super::*;

    #[test]
    fn literals_that_are_not_utf8() {
        assert_eq!(
            not_utf8_literals(r#"label_replace(m, "\xff", "", "a", "b")"#),
            ["\u{ff}"]
        );
        // Escapes that make valid UTF-8 together (ÿ), other escapes, comments and raw strings.
        assert!(not_utf8_literals(r#"f("\xc3\xbf", "\n\u00ff", `\xff`) # "\xff""#).is_empty());
        assert_eq!(not_utf8_literals(r"f('a\377\tb')"), ["a\u{ff}\tb"]);
        let e = parse(r#"label_replace(up, "\xff", "", "src", "(.*)")"#).err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::Execution));
        assert!(parse(r#"label_replace(up, "\xc3\xbf", "", "src", "(.*)")"#).is_ok());
    }
}
