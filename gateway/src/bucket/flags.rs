//! The bucket flags shared by `store`, `query` and `compact`: the objstore config, the block selector
//! (`--selector.relabel-config`) and the `--min-time`/`--max-time` bounds.

use meridian_core::relabel::RelabelConfig;
use meridian_tsdb::objstore::Bucket;

/// A `--min-time`/`--max-time` bound: a fixed time, or an offset from now that moves with the clock.
///
/// As in Thanos (`pkg/model/timeduration.go`, `PrometheusTimestamp` adds the duration to `time.Now()`
/// each time the time-partition filter runs; read at commit 2a9a7ed), a relative bound is resolved
/// again at every sync, so `--min-time=-2w` keeps serving the last two weeks: blocks that age past it are dropped at
/// the next sync and their cached parts forgotten, and blocks a relative `--max-time` held back are
/// admitted once they are old enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreTime {
    /// Milliseconds since the epoch.
    At(i64),
    /// Milliseconds from now (negative: in the past).
    FromNow(i64),
}

impl StoreTime {
    /// The bound at `now_ms`.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            StoreTime::At(t) => t,
            StoreTime::FromNow(d) => now_ms.saturating_add(d),
        }
    }
}

/// The bucket of `--objstore.config-file` or `--objstore.config`; `None` without either.
pub fn open_objstore(
    file: Option<&std::path::Path>,
    text: Option<&str>,
) -> anyhow::Result<Option<Bucket>> {
    Ok(match (file, text) {
        (Some(p), _) => Some(Bucket::from_file(p)?),
        (None, Some(text)) => Some(Bucket::parse(text, "--objstore.config")?),
        (None, None) => None,
    })
}

/// The relabel configs of `--selector.relabel-config-file` or `--selector.relabel-config`.
pub fn read_selector(
    file: Option<&std::path::Path>,
    text: Option<&str>,
) -> anyhow::Result<Vec<RelabelConfig>> {
    parse_selector(&selector_text(file, text)?).map_err(anyhow::Error::msg)
}

/// The YAML of `--selector.relabel-config-file` or `--selector.relabel-config` (empty without either).
pub fn selector_text(file: Option<&std::path::Path>, text: Option<&str>) -> anyhow::Result<String> {
    use anyhow::Context;
    Ok(match (file, text) {
        (Some(p), _) => std::fs::read_to_string(p)
            .with_context(|| format!("--selector.relabel-config-file {}", p.display()))?,
        (None, Some(t)) => t.to_owned(),
        (None, None) => String::new(),
    })
}

/// Parses `--selector.relabel-config` YAML: a list of relabel configs.
pub fn parse_selector(yaml: &str) -> std::result::Result<Vec<RelabelConfig>, String> {
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_saphyr::from_str(yaml).map_err(|e| format!("--selector.relabel-config: {e}"))
}

/// `--min-time`/`--max-time`: RFC 3339, or a duration relative to now (`-2w`, `36h`), in ms.
pub fn parse_store_time(s: &str) -> Result<StoreTime, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map(StoreTime::At)
            .map_err(|_| format!("time {s:?} is out of range"));
    }
    let (sign, d) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    let d = meridian_core::promfmt::PromDuration::parse(d).map_err(|_| {
        format!("invalid time {s:?}: use RFC 3339 (2024-01-02T15:04:05Z) or a duration such as -2w")
    })?;
    let ms = i64::try_from(d.0.as_millis()).map_err(|_| format!("duration {s:?} is too long"))?;
    // Resolved at every bucket sync, not once here: the range moves with the clock.
    Ok(StoreTime::FromNow(sign * ms))
}
