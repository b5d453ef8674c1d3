//! Prometheus' and Thanos' textual formats for durations and byte sizes, each parsed in exactly one
//! place: flags, YAML files, query parameters and templates all call these.

pub mod duration;
pub mod size;

pub use duration::{PromDuration, parse_duration};
pub use size::parse_base2_bytes;

/// Go's `strconv.FormatFloat(v, 'g', prec, 64)` (and so `fmt`'s `%.<prec>g`); `prec` `None` is the
/// shortest representation (`%g` and `%v` of a float64: the exponent form from 1e+06 and below 1e-04).
pub fn go_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let neg = v.is_sign_negative() && v != 0.0;
    let a = v.abs();
    // Decimal digits and exponent, rounded as requested.
    let sci = match prec {
        Some(p) => format!("{:.*e}", p.max(1) - 1, a),
        None => format!("{a:e}"),
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if a == 0.0 {
        digits.clear();
    }
    let nd = digits.len() as i32;
    let dp = if a == 0.0 { 0 } else { exp + 1 };
    let mut p = match prec {
        Some(p) => p.max(1) as i32,
        None => nd,
    };
    let mut eprec = p;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if prec.is_none() {
        eprec = 6;
    }
    let e = dp - 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let digit = |i: i32| -> char {
        if i >= 0 && i < nd {
            digits.as_bytes()[i as usize] as char
        } else {
            '0'
        }
    };
    if e < -4 || e >= eprec {
        if p > nd {
            p = nd;
        }
        out.push(digit(0));
        if p > 1 {
            out.push('.');
            for i in 1..p {
                out.push(digit(i));
            }
        }
        let ex = if a == 0.0 { 0 } else { e };
        out.push('e');
        out.push(if ex < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", ex.abs()));
        return out;
    }
    if p > dp {
        p = nd;
    }
    let frac = (p - dp).max(0);
    if dp > 0 {
        for i in 0..dp {
            out.push(digit(i));
        }
    } else {
        out.push('0');
    }
    if frac > 0 {
        out.push('.');
        for i in 0..frac {
            out.push(digit(dp + i));
        }
    }
    out
}

/// A quoted string literal's body (`"…"` or `'…'`, without the quotes) with its escapes decoded as Go's
/// `strconv.Unquote` decodes them: the bytes Prometheus sees, and the text promql-parser 0.11 makes
/// of them (it holds Rust strings, so it reads `\xff` as the code point U+00FF). `None` when an escape
/// is invalid (the parser then refuses the string itself).
pub fn go_unquote_body(body: &str) -> Option<(Vec<u8>, String)> {
    let (mut bytes, mut text) = (
        Vec::with_capacity(body.len()),
        String::with_capacity(body.len()),
    );
    let push_char = |c: char, bytes: &mut Vec<u8>, text: &mut String| {
        let mut buf = [0u8; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        text.push(c);
    };
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push_char(c, &mut bytes, &mut text);
            continue;
        }
        let e = chars.next()?;
        let mut digits = |n: usize, radix: u32| -> Option<u32> {
            let d: String = chars.by_ref().take(n).collect();
            (d.chars().count() == n).then_some(())?;
            u32::from_str_radix(&d, radix).ok()
        };
        let byte = match e {
            'x' => Some(digits(2, 16)?),
            '0'..='7' => Some(u32::from_str_radix(&format!("{e}"), 8).ok()? * 64 + digits(2, 8)?),
            _ => None,
        };
        if let Some(b) = byte {
            let b = u8::try_from(b).ok()?;
            bytes.push(b);
            text.push(char::from(b));
            continue;
        }
        let c = match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' | '\'' | '"' => e,
            'u' => char::from_u32(digits(4, 16)?)?,
            'U' => char::from_u32(digits(8, 16)?)?,
            _ => return None,
        };
        push_char(c, &mut bytes, &mut text);
    }
    Some((bytes, text))
}

/// A Go-quoted string (`strconv.Unquote`): `"…"` with escapes, or `` `…` `` raw. The value must be
/// UTF-8.
pub fn go_unquote(quoted: &str) -> Result<String, String> {
    if quoted.len() >= 2 && quoted.starts_with('`') && quoted.ends_with('`') {
        let inner = &quoted[1..quoted.len() - 1];
        if inner.contains('`') {
            return Err(format!("{quoted:?}: a backquote inside a raw string"));
        }
        return Ok(inner.to_owned());
    }
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .filter(|_| quoted.len() >= 2)
        .ok_or_else(|| format!("{quoted:?} is not in double quotes"))?;
    let (bytes, _) =
        go_unquote_body(inner).ok_or_else(|| format!("{quoted:?}: invalid escape sequence"))?;
    String::from_utf8(bytes).map_err(|_| format!("{quoted:?}: not valid UTF-8"))
}

#[cfg(test)]
mod unquote_tests {
    #![allow(clippy::unwrap_used)]

    use super::go_unquote;

    #[test]
    fn go_quoted_values() {
        assert_eq!(
            go_unquote(r#""thanos-receive-0""#).unwrap(),
            "thanos-receive-0"
        );
        assert_eq!(go_unquote(r#""a\"b\n""#).unwrap(), "a\"b\n");
        assert_eq!(go_unquote(r#""\u00e9\x41""#).unwrap(), "éA");
        assert_eq!(go_unquote("`raw \\n`").unwrap(), "raw \\n");
        assert_eq!(go_unquote(r#""""#).unwrap(), "");
        for bad in ["true", "\"open", "\"", r#""\q""#, r#""\xff""#] {
            assert!(go_unquote(bad).is_err(), "{bad}");
        }
    }
}
