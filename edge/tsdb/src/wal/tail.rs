//! Following the WAL while it is written: what remote-write queues read (Prometheus' WAL watcher,
//! v2.42 `tsdb/wlog/watcher.go`, tails its own WAL the same way).
//!
//! A [`Tail`] reads whole records after a [`Position`] and never modifies a file. A record is
//! complete when its length, CRC and payload are all there; a partial record at the end of the
//! segment being written is read again later. A segment is finished once a later one exists (the
//! writer cuts only between whole writes), so the reader moves on only after re-reading it with the
//! later segment already listed. Segments deleted before they were read (the WAL released them past
//! its hold limit) are reported as [`Event::Skipped`], never silently passed over.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{HEADER, MAGIC, Record, VERSION, WalError, decode, latest_checkpoint, segments, werr};
use meridian_core::labels::Labels;

/// A place in the WAL: a segment and a byte offset in it (0 or the header's size: its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A record and the position just after it.
    Record(Record, Position),
    /// Segments `[from, to)` were deleted before they were read: what they held is lost to the reader.
    Skipped { from: u64, to: u64 },
}

/// A reader following one WAL directory.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    pos: Position,
    file: Option<(u64, fs::File)>,
    buf: Vec<u8>,
}

/// Most bytes read from a file at once (a bigger record is read whole).
const READ_AT_MOST: usize = 4 << 20;

impl Tail {
    pub fn new(dir: &Path, pos: Position) -> Tail {
        Tail {
            dir: dir.to_owned(),
            pos,
            file: None,
            buf: Vec::new(),
        }
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The end of the WAL as it is now (the newest segment's size): where a reader that wants only
    /// what comes next starts.
    pub fn end(dir: &Path) -> Result<Position, WalError> {
        let Some(&last) = segments(dir)?.last() else {
            return Ok(Position::default());
        };
        let path = dir.join(super::segment_name(last));
        let len = fs::metadata(&path).map_err(werr(&path))?.len();
        Ok(Position {
            segment: last,
            offset: len,
        })
    }

    /// Reads whole records after the position, about `max_bytes` of them (at least one when one is
    /// there); empty when caught up. With `samples` false, sample records come back empty (not
    /// decoded): a reader catching up on series only.
    pub fn read(&mut self, max_bytes: usize, samples: bool) -> Result<Vec<Event>, WalError> {
        let mut out = Vec::new();
        let mut budget = max_bytes.max(1);
        loop {
            let listed = segments(&self.dir)?;
            let later = listed.iter().copied().find(|s| *s > self.pos.segment);
            if !listed.contains(&self.pos.segment) {
                match later {
                    // Not written yet (a reader started at the end of an empty WAL).
                    None => return Ok(out),
                    Some(next) => {
                        // Deleted before it was read (or a reader that starts before the oldest).
                        out.push(Event::Skipped {
                            from: self.pos.segment,
                            to: next,
                        });
                        self.move_to(next);
                        continue;
                    }
                }
            }
            let got = self.read_segment(&mut budget, samples, &mut out)?;
            if budget == 0 {
                return Ok(out);
            }
            match later {
                Some(next) if !got => {
                    // The segment was finished before this read began: nothing more will come.
                    self.move_to(next);
                }
                Some(_) => {}
                None => return Ok(out),
            }
        }
    }

    fn move_to(&mut self, segment: u64) {
        self.pos = Position { segment, offset: 0 };
        self.file = None;
    }

    /// Reads whole records of the current segment; whether any was read.
    fn read_segment(
        &mut self,
        budget: &mut usize,
        samples: bool,
        out: &mut Vec<Event>,
    ) -> Result<bool, WalError> {
        let seg = self.pos.segment;
        let path = self.dir.join(super::segment_name(seg));
        if self.file.as_ref().is_none_or(|(s, _)| *s != seg) {
            match fs::File::open(&path) {
                Ok(f) => self.file = Some((seg, f)),
                // Deleted between the listing and here: the next listing reports it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(werr(&path)(e)),
            }
        }
        let Some((_, file)) = &self.file else {
            return Ok(false);
        };
        let mut any = false;
        if self.pos.offset < HEADER as u64 {
            let mut h = [0u8; HEADER];
            if read_full(file, &mut h, 0).map_err(werr(&path))? < HEADER {
                return Ok(false);
            }
            if &h[..4] != MAGIC || h[4] != VERSION {
                tracing::warn!(segment = %path.display(), "WAL segment without a valid header; skipped");
                self.pos.offset = u64::MAX;
                return Ok(false);
            }
            self.pos.offset = HEADER as u64;
        }
        // At least one whole record per read, however small the budget.
        let mut at_least = 8;
        while *budget > 0 {
            let want = (*budget).clamp(at_least, READ_AT_MOST.max(at_least));
            self.buf.resize(want, 0);
            let n = read_full(file, &mut self.buf, self.pos.offset).map_err(werr(&path))?;
            let mut at = 0;
            let mut progressed = false;
            let mut bigger = None;
            while let Some(h) = self.buf[..n].get(at..at + 8) {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let Some(payload) = self.buf[..n].get(at + 8..at + 8 + len) else {
                    if at == 0 && n == want {
                        // One record bigger than the read: read it whole.
                        bigger = Some(8 + len);
                    }
                    break;
                };
                if crc32c::crc32c(payload) != crc {
                    tracing::warn!(segment = %path.display(), offset = self.pos.offset + at as u64, "corrupt WAL record; the rest of the segment is skipped");
                    self.pos.offset = u64::MAX;
                    return Ok(any);
                }
                let record = if !samples && payload.first() == Some(&super::REC_SAMPLES) {
                    Some(Record::Samples(Vec::new()))
                } else {
                    decode(payload)
                };
                at += 8 + len;
                progressed = true;
                let end = Position {
                    segment: seg,
                    offset: self.pos.offset + at as u64,
                };
                match record {
                    Some(r) => out.push(Event::Record(r, end)),
                    None => {
                        tracing::warn!(segment = %path.display(), "undecodable WAL record skipped")
                    }
                }
                *budget = budget.saturating_sub(8 + len);
                if *budget == 0 {
                    break;
                }
            }
            self.pos.offset += at as u64;
            any |= progressed;
            if let Some(need) = bigger {
                at_least = need;
                continue;
            }
            if !progressed || n < want {
                break;
            }
        }
        Ok(any)
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; the bytes read.
fn read_full(f: &fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The last segment the newest checkpoint covers; `None` without a checkpoint. Cheap (a directory
/// listing): readers call it to learn when to collect their series.
pub fn checkpoint_index(dir: &Path) -> Result<Option<u64>, WalError> {
    Ok(latest_checkpoint(dir)?.map(|(_, n)| n))
}

/// Series references and their labels.
pub type SeriesList = Vec<(u64, Labels)>;

/// The series of the newest checkpoint (the head's series when it was written, those lingering for
/// readers included) and the last segment it covers; `None` without a checkpoint.
pub fn checkpoint_series(dir: &Path) -> Result<Option<(u64, SeriesList)>, WalError> {
    let Some((cp, n)) = latest_checkpoint(dir)? else {
        return Ok(None);
    };
    let mut tail = Tail::new(&cp, Position::default());
    let mut series = Vec::new();
    loop {
        let events = tail.read(READ_AT_MOST, false)?;
        if events.is_empty() {
            return Ok(Some((n, series)));
        }
        for e in events {
            if let Event::Record(Record::Series(s), _) = e {
                series.extend(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{FsyncPolicy, Wal};
    use meridian_core::sample::Sample;

    fn samples(from: i64, n: i64) -> Record {
        Record::Samples(
            (from..from + n)
                .map(|t| (1, Sample::new(t, t as f64)))
                .collect(),
        )
    }

    fn times(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .flat_map(|e| match e {
                Event::Record(Record::Samples(s), _) => s.iter().map(|x| x.1.t).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn follows_writes_across_segments_and_resumes_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut).unwrap();
        let mut tail = Tail::new(&w, Position::default());
        assert!(tail.read(1 << 20, true).unwrap().is_empty());
        wal.log(&[samples(0, 10)]).unwrap();
        wal.cut().unwrap();
        wal.log(&[samples(10, 5)]).unwrap();
        let got = tail.read(1 << 20, true).unwrap();
        assert_eq!(times(&got), (0..15).collect::<Vec<_>>());
        assert!(tail.read(1 << 20, true).unwrap().is_empty(), "caught up");
        // A partial record at the end is not read until it is whole.
        let seg = w.join(crate::wal::segment_name(wal.segment()));
        let len = fs::metadata(&seg).unwrap().len();
        wal.log(&[samples(15, 1)]).unwrap();
        let full = fs::read(&seg).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len + 5)
            .unwrap();
        assert!(tail.read(1 << 20, true).unwrap().is_empty());
        fs::write(&seg, &full).unwrap();
        assert_eq!(times(&tail.read(1 << 20, true).unwrap()), vec![15]);
        // A new reader resumes exactly after a record's end position.
        let mid = match &got[0] {
            Event::Record(_, p) => *p,
            Event::Skipped { .. } => unreachable!(),
        };
        let mut again = Tail::new(&w, mid);
        assert_eq!(
            times(&again.read(1 << 20, true).unwrap()),
            (10..16).collect::<Vec<_>>()
        );
        // Small budgets read a record at a time, never a part of one.
        let mut slow = Tail::new(&w, Position::default());
        let mut all = Vec::new();
        loop {
            let e = slow.read(1, true).unwrap();
            if e.is_empty() {
                break;
            }
            assert_eq!(e.len(), 1);
            all.extend(e);
        }
        assert_eq!(times(&all), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn deleted_segments_are_reported_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut).unwrap();
        wal.log(&[samples(0, 3)]).unwrap();
        let upto = wal.cut().unwrap();
        wal.log(&[samples(3, 3)]).unwrap();
        let mut tail = Tail::new(&w, Position::default());
        wal.checkpoint(upto, &[], u64::MAX).unwrap();
        let got = tail.read(1 << 20, true).unwrap();
        assert_eq!(got[0], Event::Skipped { from: 0, to: 1 });
        assert_eq!(times(&got), vec![3, 4, 5]);
        // Held back: the segment stays for the reader.
        let upto = wal.cut().unwrap();
        wal.log(&[samples(6, 1)]).unwrap();
        wal.checkpoint(upto, &[], upto).unwrap();
        let mut held = Tail::new(
            &w,
            Position {
                segment: 1,
                offset: 0,
            },
        );
        assert_eq!(times(&held.read(1 << 20, true).unwrap()), vec![3, 4, 5, 6]);
        assert_eq!(checkpoint_series(&w).unwrap().unwrap().0, upto);
    }
}
