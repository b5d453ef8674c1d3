//! The edge's TSDB: head + WAL + blocks in one directory, as Prometheus lays it out:
//!
//! ```text
//! <dir>/meridian-wal/…         write-ahead log of the head (Meridian's format)
//! <dir>/wal/                   kept empty: Prometheus tools (`promtool tsdb dump`, `analyze`) open a data
//!                              directory only with a `wal/`, and would fail to parse ours
//! <dir>/<ULID>/…               blocks, 2 h ranges aligned like Prometheus' (multiples of the range)
//! <dir>/<ULID>.tmp-for-*       unfinished block writes or deletions, removed at start-up
//! ```
//!
//! Appends are atomic per commit: validated against the head, written to the WAL, then applied. When the
//! head spans more than 1.5 block ranges, its oldest complete range is written as a block and the head is
//! truncated (with a WAL checkpoint). Retention deletes blocks outside the retention time or size — and,
//! when an upload status is set (the shipper), only blocks confirmed uploaded.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::block::{Block, BlockError, BlockMeta, is_tmp_block, write_block_with};
use super::bounds::{self, Clock, RateLimitedLog};
use super::head::{Accept, AppendError, Head, WalHold, check_order};
use super::wal::{self, FsyncPolicy, Record, Wal, WalError};
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;
use meridian_core::series::{
    Relabel, SelectCost, SeriesCursor, SeriesSource, SourceChunk, SourceSeries,
};

mod appender;
mod compact;
mod select;
pub use appender::*;
pub use select::*;

pub const DEFAULT_BLOCK_RANGE: i64 = 2 * 3600 * 1000;
const DELETION_SUFFIX: &str = ".tmp-for-deletion";
/// The WAL's directory under the data directory.
pub const WAL_DIR: &str = "meridian-wal";

/// How the TSDB behaves.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Block range in ms (2 h).
    pub block_range: i64,
    /// Blocks ending more than this long ago (ms) are deleted.
    pub retention_time: Option<i64>,
    /// Oldest blocks are deleted while the blocks' total size exceeds this (bytes).
    pub retention_size: Option<u64>,
    pub fsync: FsyncPolicy,
    /// Largest WAL record payload (bytes); bigger records (checkpoints of the whole head, large
    /// commits) are split. Lowered by tests.
    pub wal_max_record_bytes: usize,
    /// Samples more than this many ms ahead of `clock` are refused as out of bounds, and dropped when
    /// the WAL is replayed (Prometheus' `maxAheadTime`: 10 min). `None`: only the supported range
    /// (years 1..=9999) applies — for tools writing synthetic data. See [`super::bounds`].
    pub max_ahead: Option<i64>,
    /// The wall clock "ahead" is measured against (injectable for tests).
    pub clock: Clock,
    /// Agent mode (Prometheus' `--agent`): samples go to the WAL only, for remote write; no blocks,
    /// no chunks in memory. The WAL is truncated by [`Db::truncate_agent`].
    pub agent: bool,
    /// WAL segment size (bytes).
    pub wal_segment_size: u64,
    /// WAL segments finished longer ago than this are deleted at the next truncation even when a
    /// remote-write queue has not read them (`None`: held as long as a queue needs them).
    pub wal_hold_max_age: Option<std::time::Duration>,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            block_range: DEFAULT_BLOCK_RANGE,
            retention_time: Some(15 * 24 * 3600 * 1000),
            retention_size: None,
            fsync: FsyncPolicy::default(),
            wal_max_record_bytes: wal::DEFAULT_MAX_RECORD_BYTES,
            max_ahead: Some(bounds::DEFAULT_MAX_AHEAD),
            clock: Clock::system(),
            agent: false,
            wal_segment_size: wal::SEGMENT_SIZE,
            wal_hold_max_age: None,
        }
    }
}

/// TSDB self-metrics.
#[derive(Debug, Default, Clone)]
pub struct TsdbMetrics {
    pub head_series: prometheus_client::metrics::gauge::Gauge,
    /// Memory held by the head (series structs, label text, chunk buffers).
    pub head_memory_bytes: prometheus_client::metrics::gauge::Gauge,
    /// `head_memory_bytes / head_series`: the per-series accounting.
    pub head_memory_per_series_bytes: prometheus_client::metrics::gauge::Gauge,
    pub blocks: prometheus_client::metrics::gauge::Gauge,
    pub blocks_written: prometheus_client::metrics::counter::Counter,
    pub blocks_deleted: prometheus_client::metrics::counter::Counter,
    pub samples_appended: prometheus_client::metrics::counter::Counter,
    /// Series handed out with their chunks by selects (StoreAPI `Series`, tools), counted as they are
    /// produced: a streamed select whose client goes away stops adding to it.
    pub select_series: prometheus_client::metrics::counter::Counter,
    /// Samples refused as out of bounds (too old, too far in the future, outside the supported range),
    /// at append or dropped at WAL replay.
    pub out_of_bound_samples: prometheus_client::metrics::family::Family<
        ReasonLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

/// The `reason` label of `meridian_tsdb_out_of_bound_samples_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl TsdbMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_tsdb_head_series",
            "Series in the head",
            self.head_series.clone(),
        );
        r.register(
            "meridian_tsdb_head_memory_bytes",
            "Memory held by the head: series, label text, chunk buffers",
            self.head_memory_bytes.clone(),
        );
        r.register(
            "meridian_tsdb_head_memory_per_series_bytes",
            "Head memory per series",
            self.head_memory_per_series_bytes.clone(),
        );
        r.register(
            "meridian_tsdb_blocks",
            "Blocks on disk",
            self.blocks.clone(),
        );
        r.register(
            "meridian_tsdb_blocks_written",
            "Blocks written from the head",
            self.blocks_written.clone(),
        );
        r.register(
            "meridian_tsdb_blocks_deleted",
            "Blocks deleted by retention",
            self.blocks_deleted.clone(),
        );
        r.register(
            "meridian_tsdb_samples_appended",
            "Samples committed",
            self.samples_appended.clone(),
        );
        r.register(
            "meridian_tsdb_select_series",
            "Series produced with their chunks by selects (StoreAPI Series calls, tools)",
            self.select_series.clone(),
        );
        r.register(
            "meridian_tsdb_out_of_bound_samples",
            "Samples refused as out of bounds, by reason: too_old (before the head's valid range), too_far_in_future (more than 10m ahead of the clock; also dropped at WAL replay), out_of_range (outside years 1..=9999)",
            self.out_of_bound_samples.clone(),
        );
    }
}

/// Whether a block is safely uploaded (implemented by the shipper). Retention keeps every block it
/// does not confirm.
pub trait UploadStatus: Send + Sync {
    fn is_uploaded(&self, ulid: &str) -> bool;
}

/// The TSDB failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the data directory is in use by another process")]
    Locked(PathBuf),
    #[error("block range {0} ms: must be positive")]
    BadBlockRange(i64),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Error {
        Error::with_source(ErrorKind::Internal, e.to_string(), e)
    }
}

struct State {
    head: Head,
    blocks: Vec<Arc<Block>>,
}

/// See the module documentation.
pub struct Db {
    dir: PathBuf,
    /// Held (flock) while open: one process per data directory.
    _lock: fs::File,
    opts: DbOptions,
    state: RwLock<State>,
    wal: Mutex<Wal>,
    upload_status: RwLock<Option<Arc<dyn UploadStatus>>>,
    /// Who still reads the WAL (remote-write queues): truncation keeps what they need.
    wal_readers: RwLock<Option<Arc<dyn WalReaders>>>,
    /// Head truncations so far (changed under the state's write lock): a streamed select whose plan
    /// predates the latest one plans its remaining series again.
    cuts: AtomicU64,
    pub metrics: TsdbMetrics,
    /// The next reference for a series an appender has not created yet (see [`Appender`]).
    next_pending_ref: AtomicU64,
    /// The rate-limited log of out-of-bounds refusals.
    out_of_bounds_log: RateLimitedLog,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Whoever follows the WAL (remote-write queues) and must not have it truncated under them.
pub trait WalReaders: Send + Sync {
    /// The oldest WAL segment some reader has not finished; `None` when nobody reads.
    fn keep_from(&self) -> Option<u64>;
}

/// References with this bit are an appender's series not created in the head yet; head references
/// never reach it.
const PENDING_REF: u64 = 1 << 63;

fn io(path: &Path) -> impl Fn(std::io::Error) -> DbError + '_ {
    move |source| DbError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Db {
    /// Opens (or creates) a TSDB: removes unfinished block writes, opens blocks, replays the WAL.
    pub fn open(dir: &Path, opts: DbOptions) -> std::result::Result<Db, DbError> {
        if opts.block_range <= 0 {
            return Err(DbError::BadBlockRange(opts.block_range));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DbError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let mut blocks = Vec::new();
        for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if is_tmp_block(&name) || name.ends_with(DELETION_SUFFIX) {
                tracing::info!(dir = %path.display(), "removing an unfinished block write or deletion");
                fs::remove_dir_all(&path).map_err(io(&path))?;
            } else if path.join("meta.json").is_file() {
                blocks.push(Arc::new(Block::open(&path)?));
            }
        }
        blocks.sort_by_key(|b| b.meta().min_time);
        let max_valid = bounds::max_valid_time(opts.clock.now_ms(), opts.max_ahead);
        let min_valid = blocks
            .iter()
            .map(|b| b.meta())
            .filter(|m| {
                // A block written from samples an older edge accepted far in the future would put
                // everything before its end out of bounds. It is still served; the head's valid
                // range ignores it (the head cannot reach its range before the clock does).
                let future = m.min_time > max_valid;
                if future {
                    tracing::warn!(block = %m.ulid, min_time = m.min_time, max_valid, "block starts more than the allowed lead ahead of the clock; it does not bound the head's valid range");
                }
                !future
            })
            .map(|m| m.max_time)
            .max()
            .unwrap_or(i64::MIN);
        let mut head = Head::with_samples(opts.block_range, min_valid, !opts.agent);
        let prom_wal = dir.join("wal");
        fs::create_dir_all(&prom_wal).map_err(io(&prom_wal))?;
        let wal_dir = dir.join(WAL_DIR);
        let (mut replayed, mut skipped) = (0usize, 0usize);
        let metrics = TsdbMetrics::default();
        // Samples out of bounds that an older edge accepted (see `bounds`): dropped, with a warning.
        let (mut dropped, mut dropped_latest) = (0u64, i64::MIN);
        for rec in wal::replay(&wal_dir)? {
            match rec {
                Record::Series(s) => {
                    for (r, labels) in s {
                        head.insert(r, labels);
                        if let Some(m) = head.get_mut(r) {
                            m.logged = true;
                        }
                    }
                }
                Record::Samples(_) | Record::Histograms(_) | Record::FloatHistograms(_) => {
                    for (r, item) in replay_items(rec) {
                        let smp = item.check_sample();
                        match head.check(r, smp, None, max_valid) {
                            Ok(Accept::Append) => {
                                match item {
                                    ReplayItem::Float(smp) => head.append(r, smp),
                                    ReplayItem::Histogram(t, h) => head.append_histogram(r, t, &h),
                                }
                                replayed += 1;
                            }
                            Err(e @ AppendError::TooFarInFuture { .. })
                            | Err(e @ AppendError::TimestampOutOfRange { .. }) => {
                                if let Some(reason) = e.out_of_bounds_reason() {
                                    metrics
                                        .out_of_bound_samples
                                        .get_or_create(&ReasonLabel { reason })
                                        .inc();
                                }
                                dropped += 1;
                                dropped_latest = dropped_latest.max(smp.t);
                            }
                            // Already in a block, or a repeat: nothing to restore.
                            _ => skipped += 1,
                        }
                    }
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                latest = dropped_latest,
                max_valid,
                "WAL replay dropped samples out of bounds (too far in the future or outside the supported range) that an older edge accepted; kept, they would close the head's valid range up to them at the next compaction"
            );
        }
        if replayed + skipped > 0 {
            tracing::info!(replayed, skipped, "WAL replayed");
        }
        let wal = Wal::open(&wal_dir, opts.fsync)?
            .with_max_record_bytes(opts.wal_max_record_bytes)
            .with_segment_size(opts.wal_segment_size);
        Ok(Db {
            dir: dir.to_owned(),
            _lock: lock,
            opts,
            state: RwLock::new(State { head, blocks }),
            wal: Mutex::new(wal),
            upload_status: RwLock::new(None),
            wal_readers: RwLock::new(None),
            cuts: AtomicU64::new(0),
            metrics,
            next_pending_ref: AtomicU64::new(PENDING_REF),
            out_of_bounds_log: RateLimitedLog::new(bounds::LOG_EVERY),
        })
        .inspect(Db::refresh_metrics)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the upload status retention must respect.
    pub fn set_upload_status(&self, status: Arc<dyn UploadStatus>) {
        *self
            .upload_status
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    /// Sets who reads the WAL: segments they have not finished are kept (up to
    /// [`DbOptions::wal_hold_max_age`]), and so are the labels of the series in them.
    pub fn set_wal_readers(&self, readers: Arc<dyn WalReaders>) {
        *self.wal_readers.write().unwrap_or_else(|p| p.into_inner()) = Some(readers);
    }

    /// The WAL's directory (what remote-write queues follow).
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    /// What a truncation must keep for the WAL's readers now.
    fn wal_hold(&self) -> WalHold {
        let segment = self.wal().segment();
        let readers = self
            .wal_readers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(keep_from) = readers.and_then(|r| r.keep_from()) else {
            return WalHold {
                segment,
                keep_from: u64::MAX,
            };
        };
        let mut keep_from = keep_from.min(segment);
        if let Some(max_age) = self.opts.wal_hold_max_age {
            // Segments finished before the hold limit are released: the first one written since.
            let dir = self.wal_dir();
            let now = std::time::SystemTime::now();
            let fresh = wal::segments(&dir).ok().and_then(|segs| {
                segs.into_iter().find(|s| {
                    fs::metadata(dir.join(wal::segment_name(*s)))
                        .and_then(|m| m.modified())
                        .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age <= max_age))
                })
            });
            let floor = fresh.unwrap_or(segment);
            if floor > keep_from {
                tracing::warn!(
                    from = keep_from,
                    to = floor,
                    "WAL segments older than the hold limit are released although a remote-write queue has not sent them"
                );
                keep_from = floor;
            }
        }
        WalHold { segment, keep_from }
    }

    /// A batch of appends, applied atomically by [`Appender::commit`]. Samples more than the allowed
    /// lead ahead of the clock as it reads now are refused.
    pub fn appender(&self) -> Appender<'_> {
        Appender {
            db: self,
            pending: Vec::new(),
            last: crate::RefMap::default(),
            new_series: Vec::new(),
            new_refs: crate::RefMap::default(),
            new_by_hash: crate::RefMap::default(),
            max_valid: bounds::max_valid_time(self.opts.clock.now_ms(), self.opts.max_ahead),
        }
    }

    /// Counts an out-of-bounds refusal and logs it, at most one line per [`bounds::LOG_EVERY`].
    fn note_refusal(&self, e: &AppendError) {
        let Some(reason) = e.out_of_bounds_reason() else {
            return;
        };
        self.metrics
            .out_of_bound_samples
            .get_or_create(&ReasonLabel { reason })
            .inc();
        if let Some(suppressed) = self.out_of_bounds_log.allow(std::time::Instant::now()) {
            tracing::warn!(
                error = %e,
                more_since_last_line = suppressed,
                "sample refused as out of bounds (counted in meridian_tsdb_out_of_bound_samples_total)"
            );
        }
    }

    /// Metas of the blocks, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.read()
            .blocks
            .iter()
            .map(|b| b.meta().clone())
            .collect()
    }

    /// The newest sample time appended to the head (`i64::MIN` before any): what remote-write
    /// queues measure how far behind they are against.
    pub fn head_max_time(&self) -> i64 {
        self.read().head.max_time()
    }

    pub fn head_series(&self) -> usize {
        self.read().head.num_series()
    }

    /// Approximate memory held by the head (for the per-series memory gauge).
    pub fn head_memory_bytes(&self) -> usize {
        self.read().head.memory_bytes()
    }

    /// Recomputes the gauges (head memory is a walk over the head: call it periodically, not per append).
    pub fn refresh_metrics(&self) {
        let st = self.read();
        let series = st.head.num_series() as i64;
        let mem = st.head.memory_bytes() as i64;
        self.metrics.head_series.set(series);
        self.metrics.head_memory_bytes.set(mem);
        self.metrics
            .head_memory_per_series_bytes
            .set(if series > 0 { mem / series } else { 0 });
        self.metrics.blocks.set(st.blocks.len() as i64);
    }
}

/// The block range holding `t`: `[start, end)` with `start` a multiple of `range` (as Prometheus
/// aligns blocks), computed in i128 and clamped to the i64 axis, so the ranges at both ends of the
/// axis neither overflow nor overlap their neighbours. `range` is positive ([`Db::open`] checks it).
fn block_bounds(t: i64, range: i64) -> (i64, i64) {
    let range = i128::from(range.max(1));
    let start = i128::from(t).div_euclid(range) * range;
    let clamp = |x: i128| i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX });
    (clamp(start), clamp(start + range))
}

/// Bytes of the files under `dir`, recursively (block sizes for retention and reports).
pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::matcher::MatchType;
    use meridian_core::sample::stale_nan;

    const H: i64 = 3600 * 1000;

    fn l(i: usize) -> Labels {
        Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())])
    }

    #[test]
    fn append_rules() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let mut app = db.appender();
        let r = app.add(&l(1), 1000, 1.0).unwrap();
        app.append(r, 2000, stale_nan()).unwrap();
        assert!(matches!(
            app.append(r, 1500, 1.0),
            Err(AppendError::OutOfOrder { .. })
        ));
        assert_eq!(app.commit().unwrap(), 2);
        let mut app = db.appender();
        // The series was new to the first batch: its reference then was pending, valid in that batch
        // only.
        assert!(matches!(
            app.append(r, 3000, 1.0),
            Err(AppendError::UnknownRef(_))
        ));
        let r = app.series_ref(&l(1));
        assert!(matches!(
            app.append(r, 2000, 5.0),
            Err(AppendError::Duplicate { .. })
        ));
        app.append(r, 2000, stale_nan()).unwrap(); // same value: accepted, nothing new
        assert_eq!(app.commit().unwrap(), 0);
        let got = db.samples(&[Matcher::equal("i", "1")], 0, 10_000).unwrap();
        assert_eq!(
            got[0].1,
            vec![Sample::new(1000, 1.0), Sample::new(2000, stale_nan())]
        );
        // Rolled back samples are not visible.
        let mut app = db.appender();
        app.append(r, 3000, 3.0).unwrap();
        app.rollback();
        assert_eq!(
            db.samples(&[Matcher::equal("i", "1")], 0, 10_000).unwrap()[0]
                .1
                .len(),
            2
        );
    }

    /// `cheap_cost` counts the postings entries of `=` and literal-set matchers in the head and the
    /// blocks overlapping the range (read from the lists' headers), bounds what a selection finds, and
    /// has no answer for matchers that scan values.
    #[test]
    fn cheap_cost_bounds_small_selections() {
        let cost = |entries, series| SelectCost { entries, series };
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let mut app = db.appender();
        for i in 0..5 {
            app.add(&l(i), 1000, 1.0).unwrap();
        }
        app.commit().unwrap();
        let name = [Matcher::equal("__name__", "m")];
        assert_eq!(db.cheap_cost(&name, 0, 10_000), Some(cost(5, 5)));
        let one = [Matcher::equal("__name__", "m"), Matcher::equal("i", "3")];
        assert_eq!(db.cheap_cost(&one, 0, 10_000), Some(cost(6, 1)));
        assert_eq!(db.select(&one, 0, 10_000, false).unwrap().len(), 1);
        let set = [Matcher::new(MatchType::Regex, "i", "1|2|9").unwrap()];
        assert_eq!(db.cheap_cost(&set, 0, 10_000), Some(cost(2, 2)));
        let absent = [Matcher::equal("__name__", "absent")];
        assert_eq!(db.cheap_cost(&absent, 0, 10_000), Some(cost(0, 0)));
        // Matchers that scan a label's values, or match series without the label: no bound.
        let scan = [Matcher::new(MatchType::Regex, "i", "1.+").unwrap()];
        assert_eq!(db.cheap_cost(&scan, 0, 10_000), None);
        let empty = [Matcher::new(MatchType::NotEqual, "i", "1").unwrap()];
        assert_eq!(db.cheap_cost(&empty, 0, 10_000), None);
        assert_eq!(db.cheap_cost(&[], 0, 10_000), None);

        // In a block the count comes from the list's header; blocks outside the range are not asked.
        db.flush_head().unwrap();
        let mut app = db.appender();
        app.add(&l(0), 8_000_000, 1.0).unwrap();
        app.commit().unwrap();
        assert_eq!(db.blocks().len(), 1);
        assert_eq!(db.cheap_cost(&name, 0, 10_000), Some(cost(6, 6)));
        assert_eq!(db.cheap_cost(&name, 7_500_000, 9_000_000), Some(cost(1, 1)));
    }

    /// A series new to two concurrent batches is created once: the later commit joins the series the
    /// earlier one created, and its samples are checked against it.
    #[test]
    fn concurrent_batches_creating_the_same_series_join() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let (mut a, mut b, mut c) = (db.appender(), db.appender(), db.appender());
        let ra = a.series_ref(&l(1));
        let rb = b.series_ref(&l(1));
        let rc = c.series_ref(&l(1));
        assert_ne!(ra, rb, "pending references are unique");
        assert_eq!(a.series_ref(&l(1)), ra, "and stable within a batch");
        assert_eq!(db.head_series(), 0, "nothing created before commit");
        a.append(ra, 2000, 1.0).unwrap();
        b.append(rb, 3000, 2.0).unwrap();
        c.append(rc, 1000, 0.5).unwrap();
        assert_eq!(a.commit().unwrap(), 1);
        assert_eq!(b.commit().unwrap(), 1);
        assert!(matches!(c.commit(), Err(AppendError::OutOfOrder { .. })));
        assert_eq!(db.head_series(), 1);
        let got = db.samples(&[Matcher::equal("i", "1")], 0, 10_000).unwrap();
        assert_eq!(
            got[0].1,
            vec![Sample::new(2000, 1.0), Sample::new(3000, 2.0)]
        );
        // A pending reference is not valid in another batch.
        let mut d = db.appender();
        assert!(matches!(
            d.append(rb, 4000, 1.0),
            Err(AppendError::UnknownRef(_))
        ));
    }

    #[test]
    fn replay_compact_checkpoint_retention() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            retention_time: Some(4 * H),
            ..Default::default()
        };
        let mut want: Vec<(Labels, Vec<Sample>)> = (0..20).map(|i| (l(i), vec![])).collect();
        {
            let db = Db::open(dir.path(), opts.clone()).unwrap();
            for k in 0..(5 * 60) {
                let mut app = db.appender();
                for (i, (labels, s)) in want.iter_mut().enumerate() {
                    let smp = Sample::new(k * 60_000, (k as f64) * (i as f64));
                    app.add(labels, smp.t, smp.v).unwrap();
                    s.push(smp);
                }
                app.commit().unwrap();
            }
            // 5 h of data: the head spans more than 1.5 ranges, so [0, 2h) becomes a block; then it spans
            // less than 3 h and stays.
            let made = db.compact().unwrap();
            assert_eq!(made.len(), 1);
            assert_eq!((made[0].min_time, made[0].max_time), (0, 2 * H));
            assert_eq!(db.read().head.time_range().0, 2 * H);
            // Too old now.
            let mut app = db.appender();
            assert!(matches!(
                app.add(&l(0), H, 1.0),
                Err(AppendError::TooOld { .. })
            ));
        }
        // Reopen: blocks + checkpoint + WAL give back every sample exactly once.
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(db.metrics.head_series.get(), 20);
        assert!(db.metrics.head_memory_per_series_bytes.get() > 100);
        assert_eq!(db.metrics.blocks.get(), 1);
        let all = [Matcher::new(MatchType::Equal, "__name__", "m").unwrap()];
        let got = db.samples(&all, i64::MIN, i64::MAX).unwrap();
        let mut want_sorted = want.clone();
        want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want_sorted);
        // Flushing the head writes the rest, block-aligned.
        let made = db.flush_head().unwrap();
        assert_eq!(
            made.iter()
                .map(|m| (m.min_time, m.max_time))
                .collect::<Vec<_>>(),
            vec![(2 * H, 4 * H), (4 * H, 6 * H)]
        );
        assert_eq!(db.head_series(), 0);
        // Retention (from the newest block's end, 6 h): block [0, 2h) ends 4 h before it, which is
        // not more than the retention; it is kept.
        assert!(db.apply_retention().unwrap().is_empty());
        drop(db);
        // With a 3 h retention it is outside; with an upload status, deleted only if uploaded.
        let db = Db::open(
            dir.path(),
            DbOptions {
                retention_time: Some(3 * H),
                ..opts
            },
        )
        .unwrap();
        struct Nothing;
        impl UploadStatus for Nothing {
            fn is_uploaded(&self, _: &str) -> bool {
                false
            }
        }
        db.set_upload_status(Arc::new(Nothing));
        assert!(db.apply_retention().unwrap().is_empty());
        struct All;
        impl UploadStatus for All {
            fn is_uploaded(&self, _: &str) -> bool {
                true
            }
        }
        db.set_upload_status(Arc::new(All));
        let deleted = db.apply_retention().unwrap();
        assert_eq!(deleted.len(), 1);
        assert!(!dir.path().join(&deleted[0]).exists());
        assert_eq!(
            db.blocks()
                .iter()
                .map(|m| (m.min_time, m.max_time))
                .collect::<Vec<_>>(),
            vec![(2 * H, 4 * H), (4 * H, 6 * H)]
        );
    }

    #[test]
    fn one_process_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert!(matches!(
            Db::open(dir.path(), DbOptions::default()),
            Err(DbError::Locked(_))
        ));
        drop(db);
        Db::open(dir.path(), DbOptions::default()).unwrap();
    }

    #[test]
    fn unfinished_block_write_is_invisible() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir
            .path()
            .join("01ABCDEFGHJKMNPQRSTVWXYZ00.tmp-for-creation");
        fs::create_dir_all(partial.join("chunks")).unwrap();
        fs::write(partial.join("meta.json"), b"{").unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert!(db.blocks().is_empty());
        assert!(!partial.exists());
    }
}

/// Issue 22 (robustness): extreme timestamps, retention from the newest block, split WAL records.
#[cfg(test)]
mod robustness_tests {
    use super::*;
    use crate::block::write_block;

    const H: i64 = 3600 * 1000;
    const DAY: i64 = 24 * H;
    /// 2024-01-01T00:00:00Z.
    const JAN_2024: i64 = 1_704_067_200_000;

    fn l(i: usize) -> Labels {
        Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())])
    }

    /// Puts samples straight into the head, past every append-time check: what an old WAL, or a sample
    /// accepted before timestamps were validated, leaves there.
    fn force_into_head(db: &Db, labels: &Labels, ts: &[i64]) {
        let mut st = db.write();
        let (r, _) = st.head.get_or_create(labels);
        for t in ts {
            st.head.append(r, Sample::new(*t, 1.0));
        }
    }

    /// Runs `f` on another thread and fails if it does not finish within a minute (a stalled
    /// housekeeping loop would otherwise hang the test run).
    fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{what} did not finish (stalled or panicked)"))
    }

    /// Item 9: an `i64::MIN` sample (and samples next to `i64::MAX`) in the head: cutting blocks,
    /// compaction planning, retention, selects and flushing neither panic (debug overflow checks) nor
    /// loop forever, and the ordinary data still reaches blocks.
    #[test]
    fn housekeeping_survives_extreme_timestamps_in_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), DbOptions::default()).unwrap());
        force_into_head(&db, &l(0), &[i64::MIN, i64::MIN + 1]);
        force_into_head(&db, &l(1), &[JAN_2024, JAN_2024 + 5 * H]);
        force_into_head(&db, &l(2), &[i64::MAX - 1, i64::MAX]);
        let d = db.clone();
        let made = within_a_minute("compaction", move || d.compact().unwrap());
        // The i64::MIN range and the two ordinary ranges became blocks; the newest range stays in the head.
        assert!(
            made.iter().any(|m| m.min_time == i64::MIN),
            "no block holds the i64::MIN sample: {made:?}"
        );
        assert!(made.iter().all(|m| m.min_time < m.max_time), "{made:?}");
        let ordinary = db
            .samples(&[Matcher::equal("i", "1")], i64::MIN, i64::MAX)
            .unwrap();
        assert_eq!(ordinary[0].1.len(), 2);
        // Compaction keeps working: a second round is a no-op, not a panic.
        let d = db.clone();
        within_a_minute("second compaction", move || d.compact().unwrap());
        // Retention measures from the newest block: the i64::MIN block is out of retention.
        let d = db.clone();
        let deleted = within_a_minute("retention", move || d.apply_retention().unwrap());
        assert!(!deleted.is_empty(), "the i64::MIN block was kept");
        assert!(db.blocks().iter().all(|m| m.min_time != i64::MIN));
        // Selects over the whole time axis and the Info range do not overflow.
        let all = db
            .samples(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX)
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let (min, max) = Db::time_range(&db);
        assert!(min <= max);
        // Flushing ends: the sample at i64::MAX cannot be in any block (a block's end is exclusive) and
        // stays in the head, but the loop stops.
        let d = db.clone();
        within_a_minute("flush", move || d.flush_head().unwrap());
        assert!(
            db.blocks().iter().any(|m| m.max_time == i64::MAX),
            "the range next to i64::MAX was not written: {:?}",
            db.blocks()
        );
    }

    /// Item 9: a block range flag of 0 is refused at open (it would divide by zero at the first cut).
    #[test]
    fn zero_block_range_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            block_range: 0,
            ..Default::default()
        };
        let e = Db::open(dir.path(), opts).expect_err("block range 0 accepted");
        assert!(e.to_string().contains("block range"), "{e}");
    }

    /// A 2 h block holding one sample, written into `dir` as a backfill would.
    fn two_hour_block(dir: &Path, start: i64) -> BlockMeta {
        write_block(
            dir,
            vec![(l(0), vec![Sample::new(start + 1000, 1.0)])],
            start,
            start + 2 * H,
        )
        .unwrap()
    }

    /// Item 15: time retention counts from the newest block's end (Prometheus v2.42
    /// `tsdb/db.go` `BeyondTimeRetention`), not from the wall clock: backfilled blocks from January
    /// 2024 survive a TSDB opened with the default 15 d retention.
    #[test]
    fn time_retention_counts_from_the_newest_block_not_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let block = |start: i64| two_hour_block(dir.path(), start);
        for k in 0..3 {
            block(JAN_2024 + k * 2 * H);
        }
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let deleted = db.apply_retention().unwrap();
        assert!(deleted.is_empty(), "backfilled blocks deleted: {deleted:?}");
        assert_eq!(db.blocks().len(), 3);
        drop(db);
        // A block ending 15 d after the newest January block: that one ends exactly the retention
        // before it and is kept (Prometheus deletes only blocks ending more than the retention before);
        // the two older ones go.
        block(JAN_2024 + 4 * H + 15 * DAY);
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let deleted = db.apply_retention().unwrap();
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        let kept: Vec<i64> = db.blocks().iter().map(|m| m.min_time).collect();
        assert_eq!(kept, vec![JAN_2024 + 4 * H, JAN_2024 + 4 * H + 15 * DAY]);
    }

    /// Items 8 and 15 together: a block an older edge wrote from a sample ten years ahead does not
    /// become "the newest block" that time retention counts from (it would expire every real block).
    #[test]
    fn a_far_future_block_does_not_expire_the_real_ones() {
        let dir = tempfile::tempdir().unwrap();
        let block = |start: i64| two_hour_block(dir.path(), start);
        for k in 0..3 {
            block(JAN_2024 + k * 2 * H);
        }
        block(JAN_2024 + 10 * 365 * DAY);
        let opts = DbOptions {
            clock: bounds::Clock::fixed(JAN_2024 + 7 * H),
            ..Default::default()
        };
        let db = Db::open(dir.path(), opts).unwrap();
        let deleted = db.apply_retention().unwrap();
        assert!(
            deleted.is_empty(),
            "real blocks expired by a far-future one: {deleted:?}"
        );
        assert_eq!(db.blocks().len(), 4);
    }

    /// Item 12: with the WAL record limit lowered, the checkpoint of a head bigger than the limit is
    /// written as several records, none above the limit, and a restart restores every sample.
    #[test]
    fn checkpoint_bigger_than_the_record_limit_is_split_and_replayed() {
        const LIMIT: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            retention_time: None,
            wal_max_record_bytes: LIMIT,
            ..Default::default()
        };
        let mut want: Vec<(Labels, Vec<Sample>)> = (0..100).map(|i| (l(i), vec![])).collect();
        {
            let db = Db::open(dir.path(), opts.clone()).unwrap();
            for k in 0..(5 * 60) {
                let mut app = db.appender();
                for (i, (labels, s)) in want.iter_mut().enumerate() {
                    let smp = Sample::new(k * 60_000, (k * i as i64) as f64);
                    app.add(labels, smp.t, smp.v).unwrap();
                    s.push(smp);
                }
                app.commit().unwrap();
            }
            // [0, 2h) becomes a block; the head keeps 3 h of 100 series (18,000 samples, ~200 KB of
            // records) and is checkpointed.
            assert_eq!(db.compact().unwrap().len(), 1);
        }
        let wal_dir = dir.path().join(WAL_DIR);
        let cp = fs::read_dir(&wal_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint."))
            })
            .expect("a checkpoint");
        let mut sizes = Vec::new();
        for seg in fs::read_dir(&cp).unwrap().flatten() {
            sizes.extend(wal::frame_sizes(&seg.path()));
        }
        assert!(
            sizes.len() > 10,
            "checkpoint written as {} records",
            sizes.len()
        );
        assert!(
            sizes.iter().all(|s| *s <= LIMIT),
            "checkpoint records above the {LIMIT}-byte limit: {:?}",
            sizes.iter().filter(|s| **s > LIMIT).collect::<Vec<_>>()
        );
        let db = Db::open(dir.path(), opts).unwrap();
        let got = db
            .samples(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX)
            .unwrap();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
    }

    /// Item 5: a streamed select that spans a head truncation (its series moved into a new block)
    /// still serves every series once with all its samples, in served-label order.
    #[test]
    fn streamed_select_across_a_head_cut_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Db::open(
                dir.path(),
                DbOptions {
                    retention_time: None,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        for k in 0..(5 * 60) {
            let mut app = db.appender();
            for i in 0..50 {
                app.add(&l(i), k * 60_000, k as f64).unwrap();
            }
            app.commit().unwrap();
        }
        let m = [Matcher::equal("__name__", "m")];
        let want = db.samples(&m, i64::MIN, i64::MAX).unwrap();
        let ext = Labels::from_pairs([("cluster", "a")]);
        let relabel: Relabel = Arc::new(move |l: &Labels| l.merged_with(&ext));
        let mut cursor = db.cursor(&m, i64::MIN, i64::MAX, true, relabel);
        let mut got = cursor.next_batch(7).unwrap();
        // The head's oldest range becomes a block between two batches.
        assert_eq!(db.compact().unwrap().len(), 1);
        loop {
            let b = cursor.next_batch(7).unwrap();
            if b.is_empty() {
                break;
            }
            got.extend(b);
        }
        let got: Vec<(Labels, Vec<Sample>)> = got
            .into_iter()
            .map(|(labels, chunks)| {
                let mut all: Vec<Sample> = chunks
                    .iter()
                    .flat_map(|c| {
                        meridian_core::chunkenc::XorIterator::new(&c.data)
                            .into_iter()
                            .flatten()
                    })
                    .collect();
                all.sort_by_key(|x| x.t);
                all.dedup_by_key(|x| x.t);
                (labels.without(&["cluster"]), all)
            })
            .collect();
        assert_eq!(got, want);
    }
}
