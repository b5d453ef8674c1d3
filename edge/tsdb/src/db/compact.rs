//! Writing blocks out of the head (compaction, flush) and retention: the housekeeping steps.

use super::*;

impl Db {
    /// Writes the oldest complete block ranges of the head while it spans more than 1.5 ranges (as
    /// Prometheus decides). Returns the new blocks.
    ///
    /// Time arithmetic is done in i128 and clamped (issue 22, item 9): a sample at `i64::MIN` or next to
    /// `i64::MAX` (accepted before timestamps were validated, or in an old WAL) must neither overflow
    /// (`max - min`, `start + block_range`) nor keep the loop from ending.
    pub fn compact(&self) -> std::result::Result<Vec<BlockMeta>, DbError> {
        let mut out = Vec::new();
        loop {
            let (min, max) = self.read().head.time_range();
            if min == i64::MAX
                || i128::from(max) - i128::from(min) <= i128::from(self.opts.block_range / 2 * 3)
            {
                return Ok(out);
            }
            let (start, end) = block_bounds(min, self.opts.block_range);
            out.extend(self.persist(start, end)?);
            self.refresh_metrics();
            if !self.head_moved_past(min) {
                return Ok(out);
            }
        }
    }

    /// Writes everything in the head into blocks (shutdown, tests). Returns the new blocks.
    pub fn flush_head(&self) -> std::result::Result<Vec<BlockMeta>, DbError> {
        let mut out = Vec::new();
        loop {
            let (min, _) = self.read().head.time_range();
            if min == i64::MAX {
                return Ok(out);
            }
            let (start, end) = block_bounds(min, self.opts.block_range);
            out.extend(self.persist(start, end)?);
            if !self.head_moved_past(min) {
                return Ok(out);
            }
        }
    }

    /// Whether the head's oldest sample is now after `min` (a cut made progress). A sample at
    /// `i64::MAX` fits no block (a block's end is exclusive) and stays in the head: the cutting loops
    /// stop there instead of spinning.
    fn head_moved_past(&self, min: i64) -> bool {
        let (now, _) = self.read().head.time_range();
        if now == i64::MAX || now > min {
            return true;
        }
        tracing::warn!(
            min_time = now,
            "the head's oldest samples fit no block (a timestamp at the end of the time axis); they stay in the head"
        );
        false
    }

    /// Persists the head's `[start, end)` as a block, then truncates the head and checkpoints the WAL.
    fn persist(&self, start: i64, end: i64) -> std::result::Result<Option<BlockMeta>, DbError> {
        // From here on the range is closed for appends: what is collected is what the block holds.
        let samples = {
            let mut st = self.write();
            st.head.min_valid_time = st.head.min_valid_time.max(end);
            st.head.samples_in(start, end)
        };
        let meta = if samples.is_empty() {
            None
        } else {
            let meta = write_block_with(&self.dir, samples, start, end)?;
            let block = Arc::new(Block::open(&self.dir.join(&meta.ulid))?);
            Some((meta, block))
        };
        self.truncate_head(end, meta.as_ref().map(|(_, b)| b.clone()))?;
        if meta.is_some() {
            self.metrics.blocks_written.inc();
        }
        Ok(meta.map(|(m, _)| m))
    }

    /// Truncates the head before `before` (adding `block`, which holds what it had there) and
    /// checkpoints the WAL, keeping the segments and series its readers still need.
    fn truncate_head(
        &self,
        before: i64,
        block: Option<Arc<Block>>,
    ) -> std::result::Result<(), DbError> {
        let hold = self.wal_hold();
        let (upto, records) = {
            let mut st = self.write();
            if let Some(b) = block {
                st.blocks.push(b);
                st.blocks.sort_by_key(|b| b.meta().min_time);
            }
            st.head.truncate(before, hold);
            self.cuts.fetch_add(1, Ordering::Release);
            let upto = self.wal().cut()?;
            (upto, st.head.records())
        };
        self.wal().checkpoint(upto, &records, hold.keep_from)?;
        Ok(())
    }

    /// Agent mode's truncation (Prometheus v2.42 `tsdb/agent/db.go`): series whose last sample is
    /// before `before` leave (unless a queue still reads their segments), the WAL is checkpointed, and
    /// the segments every queue has finished are deleted.
    pub fn truncate_agent(&self, before: i64) -> std::result::Result<(), DbError> {
        self.truncate_head(before, None)?;
        self.refresh_metrics();
        Ok(())
    }

    /// Deletes blocks outside retention that the upload status, if set, confirms uploaded. Returns the
    /// deleted ULIDs.
    ///
    /// Time retention is measured from the newest block's end, as Prometheus does (v2.42
    /// `tsdb/db.go` `BeyondTimeRetention`): a block is outside it when its end is more than the
    /// retention time before the newest block's end. The wall clock is not used, so blocks from a
    /// backfill (or an edge restarted after a long outage) are not deleted on arrival, and the newest
    /// block is never deleted by time. Size retention deletes the oldest blocks while the total is
    /// over the limit.
    pub fn apply_retention(&self) -> std::result::Result<Vec<String>, DbError> {
        let status = self
            .upload_status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let uploaded = |ulid: &str| status.as_ref().is_none_or(|s| s.is_uploaded(ulid));
        let blocks: Vec<Arc<Block>> = self.read().blocks.clone();
        let sizes: Vec<u64> = blocks.iter().map(|b| dir_size(b.dir())).collect();
        let mut total: u64 = sizes.iter().sum();
        // Prometheus measures time retention from the newest block's end. A block that starts beyond
        // the clock's allowed lead (written from samples an older edge accepted far in the future) is
        // left out of that measure: counted, it would expire every real block at once.
        let max_valid = bounds::max_valid_time(self.opts.clock.now_ms(), self.opts.max_ahead);
        let newest_end = blocks
            .iter()
            .map(|b| b.meta())
            .filter(|m| m.min_time <= max_valid)
            .map(|m| m.max_time)
            .max();
        let mut doomed = Vec::new();
        for (b, size) in blocks.iter().zip(&sizes) {
            let m = b.meta();
            // In i128: block ends anywhere on the i64 axis are compared without overflow.
            let by_time = match (self.opts.retention_time, newest_end) {
                (Some(rt), Some(newest)) => {
                    i128::from(newest) - i128::from(m.max_time) > i128::from(rt)
                }
                _ => false,
            };
            let by_size = self.opts.retention_size.is_some_and(|rs| total > rs);
            if !(by_time || by_size) {
                continue;
            }
            if !uploaded(&m.ulid) {
                tracing::debug!(block = %m.ulid, "outside retention but not uploaded yet; kept");
                continue;
            }
            total = total.saturating_sub(*size);
            doomed.push(m.ulid.clone());
        }
        if doomed.is_empty() {
            return Ok(doomed);
        }
        self.write()
            .blocks
            .retain(|b| !doomed.contains(&b.meta().ulid));
        for ulid in &doomed {
            // Rename first: a crash leaves a `.tmp-for-deletion` directory that start-up removes, never
            // a half-deleted block that looks valid.
            let from = self.dir.join(ulid);
            let to = self.dir.join(format!("{ulid}{DELETION_SUFFIX}"));
            fs::rename(&from, &to).map_err(io(&from))?;
            fs::remove_dir_all(&to).map_err(io(&to))?;
            tracing::info!(block = %ulid, "block deleted by retention");
            self.metrics.blocks_deleted.inc();
        }
        self.refresh_metrics();
        Ok(doomed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::tail::{Event, Position, Tail, checkpoint_series};
    use std::sync::atomic::AtomicU64;

    struct Reader(AtomicU64);
    impl WalReaders for Reader {
        fn keep_from(&self) -> Option<u64> {
            Some(self.0.load(Ordering::SeqCst))
        }
    }

    /// Every sample record from `from` on, resolved to labels through the checkpoint's series and the
    /// series records read on the way (as a remote-write queue resolves them).
    fn read_resolved(dir: &Path, from: Position) -> Vec<(String, i64)> {
        let mut names: std::collections::HashMap<u64, Labels> = checkpoint_series(dir)
            .unwrap()
            .map(|c| c.1.into_iter().collect())
            .unwrap_or_default();
        let mut tail = Tail::new(dir, Position::default());
        let mut out = Vec::new();
        loop {
            let events = tail.read(1 << 20, true).unwrap();
            if events.is_empty() {
                return out;
            }
            for e in events {
                match e {
                    Event::Record(Record::Series(s), _) => names.extend(s),
                    Event::Record(Record::Samples(s), end) if end > from => {
                        for (r, x) in s {
                            out.push((
                                names.get(&r).expect("every reference resolves").to_string(),
                                x.t,
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn append(db: &Db, name: &str, t: i64) {
        let mut app = db.appender();
        app.add(&Labels::from_pairs([("__name__", name)]), t, 1.0)
            .unwrap();
        app.commit().unwrap();
    }

    /// Issue 26: a truncation keeps the WAL segments a reader has not finished, and the labels of the
    /// series in them, even when the head has let those series go.
    #[test]
    fn truncation_keeps_what_a_reader_still_needs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            block_range: 1000,
            max_ahead: None,
            ..DbOptions::default()
        };
        let db = Db::open(dir.path(), opts).unwrap();
        let reader = Arc::new(Reader(AtomicU64::new(0)));
        db.set_wal_readers(reader.clone());
        // `gone` has samples only in the first block range: the head drops it at the first cut.
        append(&db, "gone", 10);
        append(&db, "kept", 20);
        for t in (1000..4000).step_by(100) {
            append(&db, "kept", t);
        }
        assert!(!db.compact().unwrap().is_empty());
        let got = read_resolved(&db.wal_dir(), Position::default());
        assert!(got.contains(&("{__name__=\"gone\"}".into(), 10)), "{got:?}");
        assert_eq!(got.len(), 32);
        // The reader moves on: the next truncation releases the old segments and the series.
        let now = db.wal().segment();
        reader.0.store(now, Ordering::SeqCst);
        for t in (4000..6000).step_by(100) {
            append(&db, "kept", t);
        }
        db.compact().unwrap();
        let segs = wal::segments(&db.wal_dir()).unwrap();
        assert!(segs.iter().all(|s| *s >= now), "{segs:?} from {now}");
        let (_, series) = checkpoint_series(&db.wal_dir()).unwrap().unwrap();
        assert_eq!(series.len(), 1, "{series:?}");
    }

    /// Agent mode: no blocks and no chunks; truncation drops series not written since `before`.
    #[test]
    fn agent_mode_writes_no_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            block_range: 1000,
            max_ahead: None,
            agent: true,
            ..DbOptions::default()
        };
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        append(&db, "old", 10);
        for t in (0..10_000).step_by(100) {
            append(&db, "live", t);
        }
        assert!(db.compact().unwrap().is_empty());
        assert!(db.flush_head().unwrap().is_empty());
        assert_eq!(db.head_series(), 2);
        db.truncate_agent(5000).unwrap();
        assert_eq!(db.head_series(), 1);
        assert!(db.blocks().is_empty());
        assert!(db.select(&[], i64::MIN, i64::MAX, true).unwrap().is_empty());
        // Order is still checked, and the state survives a restart.
        let mut app = db.appender();
        let live = Labels::from_pairs([("__name__", "live")]);
        assert!(app.add(&live, 50, 1.0).is_err());
        drop(app);
        drop(db);
        let db = Db::open(dir.path(), opts).unwrap();
        let mut app = db.appender();
        assert!(app.add(&live, 50, 1.0).is_err());
        assert!(app.add(&live, 20_000, 1.0).is_ok());
        let has_blocks = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.path().join("meta.json").exists());
        assert!(!has_blocks);
    }
}
