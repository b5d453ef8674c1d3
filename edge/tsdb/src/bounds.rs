//! Which sample timestamps the TSDB accepts, the clock it judges them by, and how refusals are shown.
//!
//! - **Supported range**: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z, the instants RFC 3339 can
//!   write. A sample outside it (`i64::MIN`, `i64::MAX`, …) is out of bounds on every path, appends and
//!   WAL replay alike, so no time arithmetic over stored data (block ranges, `max - min`) can overflow.
//! - **Too far in the future**: more than [`DEFAULT_MAX_AHEAD`] (10 minutes) past the clock. This is
//!   Prometheus' `maxAheadTime`: its scrape loop (`scrape/scrape.go`, v2.42) and remote-write handler
//!   (`storage/remote/write_handler.go`, v2.42 and v3) wrap the appender in a `timeLimitAppender` that
//!   answers `storage.ErrOutOfBounds` ("out of bounds"; remote write answers 400). Without it, one
//!   sample at now + 10 y stretches the head's range; the next compaction then closes every range up to
//!   it and every later sample is refused as too old. An edge that already holds such a sample drops it
//!   when it replays its WAL (see `Db::open`).
//! - Every refused out-of-bounds sample (these two and "too old") is counted in
//!   `meridian_tsdb_out_of_bound_samples_total{reason}` and logged, at most one line per
//!   [`LOG_EVERY`] with the number of refusals since the previous line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The earliest supported sample timestamp: 0001-01-01T00:00:00Z in ms.
pub const MIN_TIMESTAMP: i64 = -62_135_596_800_000;
/// The latest supported sample timestamp: 9999-12-31T23:59:59.999Z in ms.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999;
/// How far ahead of the clock a sample may be (ms): Prometheus' `maxAheadTime`, 10 minutes.
pub const DEFAULT_MAX_AHEAD: i64 = 10 * 60 * 1000;
/// At most one log line about refused samples this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

pub use meridian_core::time::Clock;

/// The latest timestamp accepted at `now` with `max_ahead` (ms; `None`: no limit but the supported
/// range). Saturating: a clock or limit near `i64::MAX` cannot overflow.
pub fn max_valid_time(now: i64, max_ahead: Option<i64>) -> i64 {
    max_ahead.map_or(MAX_TIMESTAMP, |a| {
        now.saturating_add(a.max(0)).min(MAX_TIMESTAMP)
    })
}

/// A log line at most once per period; the lines in between are counted, not lost.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub(crate) fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to write a line at `now`: `Some(n)` with the `n` lines suppressed since the last one.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                st.1 += 1;
                None
            }
            _ => {
                st.0 = Some(now);
                Some(std::mem::take(&mut st.1))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::{Db, DbOptions};
    use meridian_core::labels::Labels;
    use meridian_core::matcher::Matcher;

    const H: i64 = 3600 * 1000;

    fn l(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)])
    }

    /// An edge that persisted a far-future sample before the limit existed recovers at start-up: WAL
    /// replay drops samples more than 10 minutes ahead of the clock (with a warning), so housekeeping
    /// no longer drags the head's valid range into the future and later samples are accepted.
    #[test]
    fn far_future_head_data_is_dropped_at_wal_replay() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_764_892_800_000; // 2025-12-05T00:00:00Z
        let future = now + 24 * H;
        let at = |ms| DbOptions {
            clock: Clock::fixed(ms),
            ..Default::default()
        };
        {
            // What an older edge left behind: a far-future sample in the head (and so in the WAL).
            let old = DbOptions {
                max_ahead: None,
                ..at(now)
            };
            let db = Db::open(dir.path(), old).unwrap();
            let mut app = db.appender();
            app.add(&l("a"), now, 1.0).unwrap();
            app.add(&l("b"), future, 2.0).unwrap();
            app.commit().unwrap();
        }
        let db = Db::open(dir.path(), at(now)).unwrap();
        let b = db
            .samples(&[Matcher::equal("__name__", "b")], i64::MIN, i64::MAX)
            .unwrap();
        assert!(b.iter().all(|(_, s)| s.is_empty()), "{b:?}");
        // Housekeeping, then the next sample of `a`: accepted.
        db.compact().unwrap();
        let mut app = db.appender();
        app.add(&l("a"), now + 60_000, 3.0).unwrap();
        assert_eq!(app.commit().unwrap(), 1);
        assert_eq!(
            db.metrics
                .out_of_bound_samples
                .get_or_create(&crate::db::ReasonLabel {
                    reason: "too_far_in_future"
                })
                .get(),
            1
        );
    }

    /// A block an older edge cut from far-future samples does not bound the head's valid range: it is
    /// still served, and current samples are accepted.
    #[test]
    fn far_future_block_does_not_close_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_764_892_800_000; // 2025-12-05T00:00:00Z, a block boundary
        {
            let db = Db::open(
                dir.path(),
                DbOptions {
                    max_ahead: None,
                    clock: Clock::fixed(now),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut app = db.appender();
            app.add(&l("b"), now + 240 * H, 1.0).unwrap();
            app.add(&l("b"), now + 250 * H, 2.0).unwrap();
            app.commit().unwrap();
            // [now+240h, now+242h) becomes a block; the head's valid range moves past it.
            assert_eq!(db.compact().unwrap().len(), 1);
        }
        let db = Db::open(
            dir.path(),
            DbOptions {
                clock: Clock::fixed(now),
                ..Default::default()
            },
        )
        .unwrap();
        let mut app = db.appender();
        app.add(&l("a"), now + 1000, 1.0).unwrap();
        assert_eq!(app.commit().unwrap(), 1);
        let b = db
            .samples(&[Matcher::equal("__name__", "b")], i64::MIN, i64::MAX)
            .unwrap();
        assert_eq!(
            b[0].1.len(),
            1,
            "the block is served; the WAL's sample dropped"
        );
    }

    #[test]
    fn the_log_is_rate_limited_and_counts_what_it_suppressed() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.allow(t0), Some(0));
        assert_eq!(log.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(log.allow(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn max_valid_time_saturates() {
        assert_eq!(max_valid_time(1000, Some(DEFAULT_MAX_AHEAD)), 601_000);
        assert_eq!(
            max_valid_time(i64::MAX, Some(DEFAULT_MAX_AHEAD)),
            MAX_TIMESTAMP
        );
        assert_eq!(max_valid_time(0, None), MAX_TIMESTAMP);
    }
}
