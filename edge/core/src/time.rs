//! Time as Meridian reads and writes it: milliseconds since the Unix epoch, an injectable wall clock,
//! and Go's RFC 3339 rendering of `time.Time` (what Prometheus' JSON carries).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A wall clock, in ms since the Unix epoch; injectable for tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(now_ms))
    }

    /// A clock that always reads `ms`.
    pub fn fixed(ms: i64) -> Clock {
        Clock(Arc::new(move || ms))
    }

    /// A clock read from `f` (e.g. a test's adjustable time).
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now={})", self.now_ms())
    }
}

/// RFC 3339 with nanoseconds, as Go formats `time.Time` in JSON; Go's zero time for `None`.
pub fn rfc3339(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return "0001-01-01T00:00:00Z".into();
    };
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
    rfc3339_nanos(nanos)
}

/// RFC 3339 of `nanos` since the Unix epoch (UTC, fractional seconds only where non-zero, as Go).
pub fn rfc3339_nanos(nanos: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_go_json_time() {
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(UNIX_EPOCH)), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(rfc3339(Some(t)), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn clocks_read_what_they_are_given() {
        assert_eq!(Clock::fixed(42).now_ms(), 42);
        assert!(Clock::system().now_ms() > 1_600_000_000_000);
    }
}
