//! A copy of a Prometheus' head, kept by following its WAL: the sidecar answers the head's range from
//! it instead of Prometheus' remote read, which costs Prometheus 2.42 about twice what answering the
//! same query itself does.
//!
//! The copy is built as Prometheus replays its WAL after a restart (`tsdb/head_wal.go`, v2.42.0): the
//! newest checkpoint, then the segments after it, in order; a series record maps Prometheus' reference
//! to a series (one per label set, whatever references name it); a sample is kept when it is newer
//! than its series' last one. The follower then reads only what was appended since its last read, on
//! every query and in the background, so the copy holds everything Prometheus could answer from.
//!
//! What it does not copy makes it step aside for good ([`MirrorError::Unusable`], the sidecar then
//! uses remote read): zstd-compressed records, native histograms, tombstones, record types newer than
//! it knows, out-of-order samples (a non-empty `wbl/`). A segment removed before it was read through
//! (Prometheus checkpointed while the follower lagged) rebuilds the copy from the new checkpoint.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use super::{PromRecord, PromWalError, WalDir, decode, list_dir, segment_name, split_records};
use crate::RefMap;
use crate::head::{Head, WalHold};
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;
use meridian_core::series::SourceChunk;

/// Chunks of the copy are cut at multiples of this (Prometheus' default block range); where they
/// are cut does not change what is answered.
const CHUNK_RANGE: i64 = 2 * 3600 * 1000;
/// The first read of a segment takes this much; a record longer than that doubles it.
const READ_WINDOW: usize = 1 << 20;

/// Following the WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The WAL holds what the copy cannot hold; it stays unusable until the process restarts.
    #[error("Prometheus' WAL cannot be followed: {0}")]
    Unusable(String),
    #[error("reading Prometheus' WAL {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Prometheus' WAL {path}: {source}")]
    Corrupt { path: PathBuf, source: PromWalError },
}

/// See the module documentation.
pub struct HeadMirror {
    wal: PathBuf,
    wbl: PathBuf,
    follower: Mutex<Follower>,
    copy: RwLock<Copy>,
}

impl std::fmt::Debug for HeadMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadMirror")
            .field("wal", &self.wal)
            .finish()
    }
}

#[derive(Default)]
struct Follower {
    /// The next byte to read; `None` before the first read and after a segment was lost.
    pos: Option<Pos>,
    unusable: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    segment: u64,
    offset: u64,
}

struct Copy {
    head: Head,
    /// Prometheus' series references → the copy's series.
    refs: RefMap<Entry>,
    /// Nothing older is kept (the blocks on disk hold it).
    keep_from: i64,
}

struct Entry {
    ours: u64,
    labels: Labels,
    /// Its series was dropped at the last truncation; dropped from here at the next one.
    orphaned: bool,
}

impl Copy {
    fn new(keep_from: i64) -> Copy {
        Copy {
            head: Head::with_samples(CHUNK_RANGE, keep_from, true),
            refs: RefMap::default(),
            keep_from,
        }
    }

    fn apply(&mut self, rec: PromRecord) {
        match rec {
            PromRecord::Series(series) => {
                for (r, labels) in series {
                    let (ours, _) = self.head.get_or_create(&labels);
                    self.refs.insert(
                        r,
                        Entry {
                            ours,
                            labels,
                            orphaned: false,
                        },
                    );
                }
            }
            PromRecord::Samples(samples) => {
                for (r, t, v) in samples {
                    // Unknown references: Prometheus drops them on replay too.
                    let Some(e) = self.refs.get_mut(&r) else {
                        continue;
                    };
                    if t < self.keep_from {
                        continue;
                    }
                    let ours = match self.head.get(e.ours) {
                        Some(_) => e.ours,
                        // Truncated here while Prometheus still held it.
                        None => {
                            e.ours = self.head.get_or_create(&e.labels).0;
                            e.ours
                        }
                    };
                    let last = self.head.get(ours).and_then(|s| s.last);
                    // Not newer than the series' last sample: Prometheus did not keep it either
                    // (a duplicate of the last sample, or one its commit found out of order).
                    if last.is_some_and(|(lt, _)| t <= lt) {
                        continue;
                    }
                    self.head.append(ours, Sample::new(t, v));
                }
            }
            PromRecord::Skipped(_) | PromRecord::Histograms(_) | PromRecord::FloatHistograms(_) => {
            }
        }
    }

    /// Drops data before `before`; references of series gone since the truncation before are
    /// forgotten (by then Prometheus has dropped them too and names them anew if they return).
    fn truncate(&mut self, before: i64) {
        if before <= self.keep_from {
            return;
        }
        self.keep_from = before;
        self.head.truncate(before, WalHold::NONE);
        let head = &self.head;
        self.refs.retain(|_, e| {
            if head.get(e.ours).is_some() {
                e.orphaned = false;
                true
            } else {
                !std::mem::replace(&mut e.orphaned, true)
            }
        });
    }
}

impl HeadMirror {
    /// The copy of the head of the Prometheus whose data directory is `tsdb_path`; nothing is read
    /// until the first [`HeadMirror::catch_up`].
    pub fn new(tsdb_path: &Path) -> HeadMirror {
        HeadMirror {
            wal: tsdb_path.join("wal"),
            wbl: tsdb_path.join("wbl"),
            follower: Mutex::new(Follower::default()),
            copy: RwLock::new(Copy::new(i64::MIN)),
        }
    }

    /// The series matching `matchers` with samples in `[mint, maxt]`, their chunks (bytes only with
    /// `with_data`), after reading what Prometheus appended since the last read; data before
    /// `keep_from` is dropped for good.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        keep_from: i64,
    ) -> Result<Vec<(Labels, Vec<SourceChunk>)>, MirrorError> {
        self.catch_up()?;
        let behind = self
            .copy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keep_from
            < keep_from;
        if behind {
            let mut copy = self.copy.write().unwrap_or_else(PoisonError::into_inner);
            copy.truncate(keep_from);
        }
        let copy = self.copy.read().unwrap_or_else(PoisonError::into_inner);
        Ok(copy
            .head
            .select(matchers, mint.max(copy.keep_from), maxt, with_data)
            .into_iter()
            .map(|s| (s.labels, s.chunks))
            .collect())
    }

    /// Series in the copy.
    pub fn num_series(&self) -> usize {
        self.copy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .head
            .num_series()
    }

    /// Reads what Prometheus appended since the last read.
    pub fn catch_up(&self) -> Result<(), MirrorError> {
        let mut f = self.follower.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(why) = &f.unusable {
            return Err(MirrorError::Unusable(why.clone()));
        }
        let result = self.check_wbl().and_then(|()| self.follow(&mut f));
        match result {
            Err(MirrorError::Unusable(why)) => {
                f.unusable = Some(why.clone());
                Err(MirrorError::Unusable(why))
            }
            Err(e @ MirrorError::Corrupt { .. }) => {
                // Read from the start next time: Prometheus may have repaired it.
                f.pos = None;
                Err(e)
            }
            other => other,
        }
    }

    /// Out-of-order samples live in `wbl/`, which the copy does not follow.
    fn check_wbl(&self) -> Result<(), MirrorError> {
        let entries = match std::fs::read_dir(&self.wbl) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(&self.wbl, e)),
        };
        for e in entries.flatten() {
            if e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
                return Err(MirrorError::Unusable(
                    "out-of-order samples (a non-empty wbl/ directory)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The WAL's segments and newest checkpoint. No `wal/` at all is for good: the sidecar starts
    /// reading once Prometheus answered, and Prometheus creates it before it answers.
    fn list_wal(&self) -> Result<WalDir, MirrorError> {
        list_dir(&self.wal).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MirrorError::Unusable(format!(
                    "there is no {} (is Prometheus' data directory shared with the sidecar?)",
                    self.wal.display()
                ))
            } else {
                self.io(&self.wal, e)
            }
        })
    }

    fn io(&self, path: &Path, source: std::io::Error) -> MirrorError {
        MirrorError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Three tries: each lost segment (a checkpoint replaced it while it was read) starts over.
    fn follow(&self, f: &mut Follower) -> Result<(), MirrorError> {
        for _ in 0..3 {
            if f.pos.is_none() {
                match self.rebuild()? {
                    Some((copy, pos)) => {
                        *self.copy.write().unwrap_or_else(PoisonError::into_inner) = copy;
                        f.pos = Some(pos);
                    }
                    None => continue,
                }
            }
            let Some(pos) = f.pos.as_mut() else { continue };
            if self.advance(pos, |recs| self.apply(recs))? {
                return Ok(());
            }
            f.pos = None;
        }
        Err(self.io(
            &self.wal,
            std::io::Error::other("segments kept disappearing while they were read"),
        ))
    }

    fn apply(&self, recs: Vec<PromRecord>) {
        let mut copy = self.copy.write().unwrap_or_else(PoisonError::into_inner);
        for r in recs {
            copy.apply(r);
        }
    }

    /// A new copy from the newest checkpoint, and the position after it; `None` when the checkpoint
    /// disappeared while it was read.
    fn rebuild(&self) -> Result<Option<(Copy, Pos)>, MirrorError> {
        let keep_from = self
            .copy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keep_from;
        let WalDir {
            segments,
            checkpoint,
        } = self.list_wal()?;
        let mut copy = Copy::new(keep_from);
        let mut from = segments.first().copied().unwrap_or(0);
        if let Some((n, name)) = checkpoint {
            let dir = self.wal.join(name);
            let parts = match list_dir(&dir) {
                Ok(d) => d.segments,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io(&dir, e)),
            };
            for part in parts {
                let path = dir.join(segment_name(part));
                let mut offset = 0;
                match read_segment(&path, &mut offset, &mut |recs| {
                    recs.into_iter().for_each(|r| copy.apply(r));
                }) {
                    Ok(()) => {}
                    Err(ReadFail::Gone) => return Ok(None),
                    Err(ReadFail::Failed(e)) => return Err(e),
                }
            }
            from = n + 1;
        }
        Ok(Some((
            copy,
            Pos {
                segment: from,
                offset: 0,
            },
        )))
    }

    /// Reads from `pos` to the end of the newest segment; `false` when a segment still needed was
    /// removed.
    fn advance(
        &self,
        pos: &mut Pos,
        mut apply: impl FnMut(Vec<PromRecord>),
    ) -> Result<bool, MirrorError> {
        let segments = self.list_wal()?.segments;
        if segments.first().is_some_and(|first| pos.segment < *first) {
            return Ok(false);
        }
        loop {
            // Listed before the read: when a later segment exists, this one was complete.
            let next = segments.iter().copied().find(|s| *s > pos.segment);
            let path = self.wal.join(segment_name(pos.segment));
            match read_segment(&path, &mut pos.offset, &mut apply) {
                Ok(()) => {}
                Err(ReadFail::Gone) if segments.contains(&pos.segment) => return Ok(false),
                // Not created yet.
                Err(ReadFail::Gone) => {}
                Err(ReadFail::Failed(e)) => return Err(e),
            }
            match next {
                Some(n) => {
                    *pos = Pos {
                        segment: n,
                        offset: 0,
                    };
                }
                None => return Ok(true),
            }
        }
    }
}

enum ReadFail {
    /// The file is not there.
    Gone,
    Failed(MirrorError),
}

/// Applies the complete records of the segment at `path` from `offset` on, moving `offset` past them.
fn read_segment(
    path: &Path,
    offset: &mut u64,
    apply: &mut dyn FnMut(Vec<PromRecord>),
) -> Result<(), ReadFail> {
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadFail::Gone
        } else {
            ReadFail::Failed(MirrorError::Io {
                path: path.to_owned(),
                source: e,
            })
        }
    };
    let corrupt = |source| {
        ReadFail::Failed(match source {
            PromWalError::Unsupported(what) => MirrorError::Unusable(format!("it holds {what}")),
            source => MirrorError::Corrupt {
                path: path.to_owned(),
                source,
            },
        })
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut window = READ_WINDOW;
    let mut buf = Vec::new();
    loop {
        file.seek(SeekFrom::Start(*offset)).map_err(io)?;
        buf.clear();
        (&mut file)
            .take(window as u64)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (raw, used) = split_records(&buf, *offset).map_err(corrupt)?;
        let mut recs = Vec::with_capacity(raw.len());
        for r in raw {
            let rec = decode(&r).map_err(corrupt)?;
            // The head copy holds float samples only: a WAL with histograms leaves the head's range
            // to remote read, as before the records could be decoded.
            if let PromRecord::Histograms(_) | PromRecord::FloatHistograms(_) = rec {
                return Err(corrupt(PromWalError::Unsupported(format!(
                    "native histogram samples (record type {})",
                    r.first().copied().unwrap_or(0)
                ))));
            }
            recs.push(rec);
        }
        apply(recs);
        *offset += used as u64;
        let at_end = buf.len() < window;
        if used == 0 {
            if at_end {
                // A record still being written.
                return Ok(());
            }
            // One record longer than the window.
            window = window.saturating_mul(2);
            if window > super::MAX_RECORD_BYTES * 2 {
                return Err(corrupt(PromWalError::Corrupt {
                    offset: *offset,
                    reason: "a record longer than 256 MiB".into(),
                }));
            }
        } else if at_end {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tests::{Writer, samples_record, series_record};
    use super::*;
    use meridian_core::matcher::MatchType;

    fn up(job: &str) -> Matcher {
        Matcher::new(MatchType::Equal, "job", job).unwrap()
    }

    fn times(m: &HeadMirror, job: &str, keep_from: i64) -> Vec<i64> {
        let got = m
            .select(&[up(job)], i64::MIN, i64::MAX, true, keep_from)
            .unwrap();
        got.iter()
            .flat_map(|(_, cs)| cs.iter())
            .flat_map(|c| {
                meridian_core::chunkenc::XorChunk::from_bytes(&c.data)
                    .unwrap()
                    .iter()
                    .map(|s| s.t)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    struct Wal {
        dir: tempfile::TempDir,
        seg: u64,
        w: Writer,
    }

    impl Wal {
        fn new() -> Wal {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("wal")).unwrap();
            Wal {
                dir,
                seg: 0,
                w: Writer {
                    buf: Vec::new(),
                    compress: true,
                },
            }
        }

        /// Logs a record and writes what the segment holds so far (as Prometheus flushes a commit).
        fn log(&mut self, rec: &[u8]) {
            self.w.log(rec);
            let path = self.dir.path().join("wal").join(segment_name(self.seg));
            std::fs::write(path, &self.w.buf).unwrap();
        }

        fn next_segment(&mut self) {
            let len = self.w.buf.len().next_multiple_of(super::super::PAGE_SIZE);
            self.w.buf.resize(len, 0);
            let path = self.dir.path().join("wal").join(segment_name(self.seg));
            std::fs::write(path, &self.w.buf).unwrap();
            self.seg += 1;
            self.w.buf.clear();
            let path = self.dir.path().join("wal").join(segment_name(self.seg));
            std::fs::write(path, b"").unwrap();
        }
    }

    #[test]
    fn follows_appends_segments_checkpoints_and_truncation() {
        // Chunks are cut at multiples of the block range: the samples before it are in chunks of their own.
        const H: i64 = CHUNK_RANGE;
        let mut wal = Wal::new();
        wal.log(&series_record(&[
            (1, &[("job", "a")]),
            (2, &[("job", "b")]),
        ]));
        wal.log(&samples_record(&[(1, 1000, 1.0), (2, 1000, 2.0)]));
        let m = HeadMirror::new(wal.dir.path());
        assert_eq!(times(&m, "a", i64::MIN), vec![1000]);

        // Appended later, a duplicate and an out-of-order sample among them: kept as Prometheus keeps.
        wal.log(&samples_record(&[
            (1, 2000, 1.0),
            (1, 2000, 9.0),
            (1, 1500, 9.0),
        ]));
        assert_eq!(times(&m, "a", i64::MIN), vec![1000, 2000]);

        // A new segment, and a second series record naming the same labels with a new reference.
        wal.next_segment();
        wal.log(&series_record(&[(3, &[("job", "a")])]));
        wal.log(&samples_record(&[(3, H + 1000, 1.0)]));
        assert_eq!(times(&m, "a", i64::MIN), vec![1000, 2000, H + 1000]);

        // Truncated below H (a block's end): only the newer samples stay, and "b" (no data left) leaves.
        assert_eq!(times(&m, "a", H), vec![H + 1000]);
        assert_eq!(times(&m, "b", H), Vec::<i64>::new());
        // Prometheus still names "b" by 2: a new sample brings it back.
        wal.log(&samples_record(&[(2, H + 2000, 2.0)]));
        assert_eq!(times(&m, "b", H), vec![H + 2000]);

        // Prometheus checkpoints segments 0 and 1 and removes them: a follower whose segment was
        // removed, and a fresh one, start from the checkpoint.
        let cp = wal.dir.path().join("wal").join("checkpoint.00000001");
        std::fs::create_dir(&cp).unwrap();
        let mut w = Writer {
            buf: Vec::new(),
            compress: false,
        };
        w.log(&series_record(&[
            (3, &[("job", "a")]),
            (2, &[("job", "b")]),
        ]));
        w.log(&samples_record(&[(3, H + 1000, 1.0), (2, H + 2000, 2.0)]));
        std::fs::write(cp.join("00000000"), &w.buf).unwrap();
        wal.next_segment();
        wal.log(&samples_record(&[(3, H + 3000, 1.0)]));
        for s in 0..2 {
            std::fs::remove_file(wal.dir.path().join("wal").join(segment_name(s))).unwrap();
        }
        assert_eq!(times(&m, "a", H), vec![H + 1000, H + 3000]);
        let fresh = HeadMirror::new(wal.dir.path());
        assert_eq!(times(&fresh, "a", H), vec![H + 1000, H + 3000]);
        assert_eq!(times(&fresh, "b", H), vec![H + 2000]);
    }

    #[test]
    fn steps_aside_for_what_it_cannot_copy() {
        let mut wal = Wal::new();
        wal.log(&series_record(&[(1, &[("job", "a")])]));
        let m = HeadMirror::new(wal.dir.path());
        assert!(m.catch_up().is_ok());
        // A tombstone: unusable for good.
        wal.log(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
        assert!(matches!(m.catch_up(), Err(MirrorError::Unusable(_))));
        assert!(matches!(m.catch_up(), Err(MirrorError::Unusable(_))));
        // Out-of-order samples in wbl/.
        let other = Wal::new();
        std::fs::create_dir(other.dir.path().join("wbl")).unwrap();
        std::fs::write(other.dir.path().join("wbl").join("00000000"), [1u8]).unwrap();
        let m = HeadMirror::new(other.dir.path());
        assert!(matches!(m.catch_up(), Err(MirrorError::Unusable(_))));
    }
}
