//! Durations as Prometheus writes them (`1y2w3d4h5m6s7ms`, `0`): the grammar of `model.ParseDuration`
//! in `prometheus/common` (`model/time.go`, v0.62, the version Prometheus 3 pins). Every unit at most
//! once, largest first, integers only, at most `i64::MAX` nanoseconds (about 292 years). So `30s1m`,
//! `1.5s`, `10` and `1h1h` are refused — by flags, `prometheus.yml`, rule files, the HTTP API and
//! templates alike.

use std::fmt;
use std::time::Duration;

/// The units in the order they must appear, with their length in nanoseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000_000_000),
    ("w", 7 * 24 * 3_600_000_000_000),
    ("d", 24 * 3_600_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Parses a Prometheus duration. The error names the string and what is wrong with it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match s {
        "0" => return Ok(Duration::ZERO),
        "" => return Err("empty duration string".into()),
        _ => {}
    }
    let invalid = || {
        format!(
            "not a valid duration string: {s:?} (use e.g. 15s, 1m, 1h30m, 500ms; units y w d h m s ms, largest first, each once)"
        )
    };
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "duration out of range".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| !b.is_ascii_digit()).count();
        if unit_len == 0 {
            return Err(invalid());
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit {unit:?} in duration {s:?}"));
        };
        if pos < next_unit {
            return Err(invalid());
        }
        next_unit = pos + 1;
        let ns = n
            .checked_mul(UNITS[pos].1)
            .and_then(|ns| total.checked_add(ns))
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or_else(|| "duration out of range".to_string())?;
        total = ns;
    }
    Ok(Duration::from_nanos(total))
}

/// A Prometheus duration as a YAML value (`scrape_interval: 15s`), printed as Prometheus prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub fn parse(s: &str) -> Result<PromDuration, String> {
        parse_duration(s).map(PromDuration)
    }

    /// Prometheus' `model.Duration.String()`: largest units first, `0s` for zero.
    pub fn format(d: Duration) -> String {
        let mut ms = d.as_millis();
        if ms == 0 {
            return "0s".into();
        }
        let mut out = String::new();
        for (unit, ns) in UNITS {
            let size = u128::from(ns / 1_000_000);
            if ms >= size {
                out.push_str(&format!("{}{unit}", ms / size));
                ms %= size;
            }
        }
        out
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&PromDuration::format(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PromDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_of_model_parse_duration() {
        let ms = Duration::from_millis;
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("15s", ms(15_000)),
            ("1m", ms(60_000)),
            ("1h30m", ms(5_400_000)),
            ("500ms", ms(500)),
            (
                "1y2w3d4h5m6s7ms",
                ms(((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60 + 6) * 1000 + 7),
            ),
            ("90s", ms(90_000)),
            ("292y", ms(292 * 365 * 86_400_000)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s).as_ref(), Ok(want), "{s}");
        }
        let refused = [
            "",
            "30s1m",
            "1h1h",
            "1m1h",
            "1.5s",
            "10",
            "-1s",
            "s",
            "1x",
            "1 s",
            " 1s",
            "1S",
            "1sms",
            "300y",
            "18446744073709551616s",
        ];
        for s in refused {
            assert!(parse_duration(s).is_err(), "{s:?} must be refused");
        }
        assert_eq!(
            parse_duration("1x").unwrap_err(),
            "unknown unit \"x\" in duration \"1x\""
        );
        assert_eq!(parse_duration("300y").unwrap_err(), "duration out of range");
    }

    #[test]
    fn format_is_largest_units_first() {
        let ms = Duration::from_millis;
        assert_eq!(PromDuration::format(Duration::ZERO), "0s");
        assert_eq!(PromDuration::format(ms(5_400_000)), "1h30m");
        assert_eq!(PromDuration::format(ms(86_400_000 * 8 + 1)), "1w1d1ms");
        for s in ["1y2w3d4h5m6s7ms", "5m", "1h30m", "500ms"] {
            assert_eq!(
                PromDuration::parse(s).map(|d| d.to_string()),
                Ok(s.to_string())
            );
        }
    }
}
