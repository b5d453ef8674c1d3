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
            let meta = write_block(&self.dir, samples, start, end)?;
            let block = Arc::new(Block::open(&self.dir.join(&meta.ulid))?);
            Some((meta, block))
        };
        let (upto, records) = {
            let mut st = self.write();
            if let Some((_, b)) = &meta {
                st.blocks.push(b.clone());
                st.blocks.sort_by_key(|b| b.meta().min_time);
            }
            st.head.truncate(end);
            self.cuts.fetch_add(1, Ordering::Release);
            let upto = self.wal().cut()?;
            (upto, st.head.records())
        };
        self.wal().checkpoint(upto, &records)?;
        if meta.is_some() {
            self.metrics.blocks_written.inc();
        }
        Ok(meta.map(|(m, _)| m))
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
