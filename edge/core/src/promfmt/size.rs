//! Byte sizes as Thanos' flags (kingpin `Bytes`) and Prometheus' `body_size_limit` take them:
//! `units.ParseBase2Bytes` of `alecthomas/units` (v0.0.0-20240927), where `KB` and `KiB` are both
//! 1024 bytes. So `--index-cache-size=1KB` is 1,024 bytes here as in Thanos.
//!
//! The grammar: an optional sign, then one or more `<number><unit>` terms (`1GB512MB`, `1.5GiB`);
//! units `B`, `KiB`…`EiB`, or the old spellings `KB`…`EB` (one family per value, as upstream tries the
//! two maps in turn); `0` alone is zero. A bare number (`1024`) has no unit and is refused, as upstream.
//! Negative sizes are refused here (upstream returns them; no size flag means anything by them).

/// The unit maps upstream tries in turn: `…iB`, then the old `…B` spelling, both base 2.
const FAMILIES: [[&str; 6]; 2] = [
    ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    ["KB", "MB", "GB", "TB", "PB", "EB"],
];

/// Parses a base-2 byte size. The error names the value and the units accepted.
pub fn parse_base2_bytes(s: &str) -> Result<u64, String> {
    let mut first_err = None;
    for family in &FAMILIES {
        match parse_with(s, family) {
            Ok(n) => return Ok(n),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_default())
}

fn parse_with(orig: &str, family: &[&str; 6]) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid size {orig:?} (use e.g. 512MiB, 1GB, 1.5GiB; units B, KB/KiB, MB/MiB, GB/GiB, TB/TiB, PB/PiB, EB/EiB, powers of 1024)"
        )
    };
    let mut s = orig;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut term_len = int_len;
        let mut frac_len = 0;
        if s[int_len..].starts_with('.') {
            frac_len = s[int_len + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            term_len = int_len + 1 + frac_len;
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        // Digits are bounded by the input length; f64 keeps upstream's arithmetic (it sums floats too).
        let number: f64 = s[..term_len].parse().map_err(|_| invalid())?;
        s = &s[term_len..];
        let unit_len = s
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let scale = if unit == "B" {
            1f64
        } else {
            let Some(power) = family.iter().position(|u| *u == unit) else {
                return Err(if unit.is_empty() {
                    format!("invalid size {orig:?}: a unit is required (e.g. {orig}B or {orig}MiB)")
                } else {
                    format!(
                        "unknown unit {unit:?} in size {orig:?} (B, KB/KiB, MB/MiB, GB/GiB, TB/TiB, PB/PiB, EB/EiB, powers of 1024)"
                    )
                });
            };
            1024f64.powi(i32::try_from(power).unwrap_or(0) + 1)
        };
        total += number * scale;
    }
    if negative && total != 0.0 {
        return Err(format!("size {orig:?} is negative"));
    }
    if total >= 9_223_372_036_854_775_808.0 {
        return Err(format!("size {orig:?} is too large"));
    }
    // Truncates as upstream's int64 conversion does (`1.5B` is 1 byte).
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base2_bytes_as_thanos_flags_and_prometheus_read_them() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1KB", 1024),
            ("1KiB", 1024),
            ("250MB", 250 << 20),
            ("250MiB", 250 << 20),
            ("1GB", 1 << 30),
            ("2TiB", 2 << 40),
            ("1.5GiB", 3 << 29),
            ("1GB512MB", (1 << 30) + (512 << 20)),
            ("512B", 512),
            ("+8MiB", 8 << 20),
            ("7EiB", 7 << 60),
        ];
        for (s, want) in ok {
            assert_eq!(parse_base2_bytes(s), Ok(*want), "{s}");
        }
        let refused = [
            "", "1024", "1kB", "1kb", "1KiBKB", "1GiB1MB", "MB", "1 MB", "1XB", "-1MB", "8EiB",
            "1.", ".", "1..5MB",
        ];
        for s in refused {
            assert!(parse_base2_bytes(s).is_err(), "{s:?} must be refused");
        }
        assert!(
            parse_base2_bytes("1024")
                .unwrap_err()
                .contains("unit is required")
        );
        assert!(parse_base2_bytes("1XB").unwrap_err().contains("\"XB\""));
    }
}
