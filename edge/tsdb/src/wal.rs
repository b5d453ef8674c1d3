//! Write-ahead log of the head: every committed sample is written here before the commit returns.
//!
//! Layout (under `<data dir>/meridian-wal/`): `00000000`, `00000001`, … segments of at most 128 MiB, and
//! `checkpoint.NNNNNNNN/`
//! (a snapshot of the head after a truncation, covering segments up to NNNNNNNN). Meridian's own format,
//! versioned:
//!
//! ```text
//! segment:  "MWAL" | version 1 (u8) | 3 zero bytes | record*
//! record:   len u32 BE | CRC32-Castagnoli(payload) u32 BE | payload (len bytes)
//! payload:  type u8 | body
//!   1 series:  (ref uvarint | #labels uvarint | (name, value as uvarint-length strings)*)*
//!   2 samples: (ref uvarint | t varint | value bits u64 BE)*
//!   7 native histograms (integer counts), 8 native histograms (float counts): the bodies of
//!     Prometheus' WAL records of those types (`tsdb/record`, see `promwal::histograms`)
//! ```
//!
//! Durability: a record is handed to the operating system (`write`) before the commit returns, so a
//! commit that returned survives a crash of the process. With [`FsyncPolicy::Always`] it is also synced,
//! and survives a crash of the machine. Replay stops at the first torn or corrupt record, truncates the
//! segment there (with a log line) and drops later segments: what follows a torn record was never
//! acknowledged.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_core::histogram::{FloatHistogram, Histogram};
use meridian_core::labels::Labels;
use meridian_core::sample::Sample;

use crate::promwal::histograms::{encode_float_histograms, encode_histograms};

pub mod tail;

pub const SEGMENT_SIZE: u64 = 128 << 20;
/// Default largest payload of one record. Bigger records (a checkpoint of the whole head, a large
/// commit) are split into several records of at most this size; a record's length field is a u32, so
/// this can never exceed `u32::MAX`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;
/// The smallest record limit accepted: one sample entry must fit.
const MIN_MAX_RECORD_BYTES: usize = 64;
pub(crate) const MAGIC: &[u8; 4] = b"MWAL";
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER: usize = 8;
pub(crate) const REC_SERIES: u8 = 1;
pub(crate) const REC_SAMPLES: u8 = 2;

/// When the WAL is synced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After every commit: survives machine crashes.
    Always,
    /// Never explicitly (the OS writes back): survives process crashes.
    #[default]
    OnCut,
}

/// A WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Series(Vec<(u64, Labels)>),
    Samples(Vec<(u64, Sample)>),
    /// Native-histogram samples with integer counts: reference, time, histogram.
    Histograms(Vec<(u64, i64, Histogram)>),
    /// Native-histogram samples with float counts.
    FloatHistograms(Vec<(u64, i64, FloatHistogram)>),
}

/// The WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One entry of a record (a series with its labels, or a sample) does not fit in a record of the
    /// largest allowed size: it is refused, never truncated.
    #[error(
        "WAL {path}: a {kind} entry of {len} bytes does not fit in a WAL record (at most {limit} bytes)"
    )]
    RecordTooLarge {
        path: PathBuf,
        kind: &'static str,
        len: usize,
        limit: usize,
    },
}

pub(crate) fn werr(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

use crate::index::put_uvarint;

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_uvarint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// Buffered frames are written out once they reach this size (a checkpoint of a large head is not
/// assembled in memory as a whole).
const FLUSH_AT: usize = 8 << 20;

/// Starts a frame (length and CRC filled in later) of record type `kind`; returns its offset.
fn start_frame(buf: &mut Vec<u8>, kind: u8) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    at
}

fn put_series_entry(b: &mut Vec<u8>, r: u64, l: &Labels) {
    put_uvarint(b, r);
    put_uvarint(b, l.len() as u64);
    for x in l.iter() {
        put_str(b, x.name);
        put_str(b, x.value);
    }
}

fn put_sample_entry(b: &mut Vec<u8>, r: u64, s: Sample) {
    put_uvarint(b, r);
    put_uvarint(b, ((s.t << 1) ^ (s.t >> 63)) as u64);
    b.extend_from_slice(&s.v.to_bits().to_be_bytes());
}

fn uvarint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

/// The encoded size of a series entry, without encoding it.
fn series_entry_len(r: u64, l: &Labels) -> usize {
    uvarint_len(r)
        + uvarint_len(l.len() as u64)
        + l.iter()
            .map(|x| {
                uvarint_len(x.name.len() as u64)
                    + x.name.len()
                    + uvarint_len(x.value.len() as u64)
                    + x.value.len()
            })
            .sum::<usize>()
}

/// Encodes a record's payload.
pub fn encode(r: &Record) -> Vec<u8> {
    let mut b = Vec::new();
    encode_into(r, &mut b);
    b
}

/// Appends a record's payload to `b`.
pub fn encode_into(r: &Record, b: &mut Vec<u8>) {
    let b = &mut *b;
    match r {
        Record::Series(series) => {
            b.push(REC_SERIES);
            for (r, l) in series {
                put_series_entry(b, *r, l);
            }
        }
        Record::Samples(samples) => {
            b.reserve(samples.len() * 16 + 1);
            b.push(REC_SAMPLES);
            for (r, s) in samples {
                put_sample_entry(b, *r, *s);
            }
        }
        Record::Histograms(h) => b.extend_from_slice(&encode_histograms(h)),
        Record::FloatHistograms(h) => b.extend_from_slice(&encode_float_histograms(h)),
    }
}

/// Decodes a payload; `None` when it is malformed.
pub fn decode(p: &[u8]) -> Option<Record> {
    let (&kind, mut rest) = p.split_first()?;
    let uv = |rest: &mut &[u8]| -> Option<u64> {
        let (v, n) = super::chunks::uvarint(rest)?;
        *rest = &rest[n..];
        Some(v)
    };
    match kind {
        REC_SERIES => {
            let mut out = Vec::new();
            while !rest.is_empty() {
                let r = uv(&mut rest)?;
                let n = uv(&mut rest)? as usize;
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let mut s = [String::new(), String::new()];
                    for x in &mut s {
                        let len = uv(&mut rest)? as usize;
                        let bytes = rest.get(..len)?;
                        *x = String::from_utf8(bytes.to_vec()).ok()?;
                        rest = &rest[len..];
                    }
                    let [a, b] = s;
                    pairs.push((a, b));
                }
                out.push((r, Labels::from_pairs(pairs)));
            }
            Some(Record::Series(out))
        }
        REC_SAMPLES => {
            let mut out = Vec::new();
            while !rest.is_empty() {
                let r = uv(&mut rest)?;
                let z = uv(&mut rest)?;
                let t = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let bits = rest.get(..8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(bits);
                rest = &rest[8..];
                out.push((r, Sample::new(t, f64::from_bits(u64::from_be_bytes(a)))));
            }
            Some(Record::Samples(out))
        }
        crate::promwal::histograms::HISTOGRAM_SAMPLES
        | crate::promwal::histograms::FLOAT_HISTOGRAM_SAMPLES => {
            match crate::promwal::decode(p).ok()? {
                crate::promwal::PromRecord::Histograms(h) => Some(Record::Histograms(h)),
                crate::promwal::PromRecord::FloatHistograms(h) => Some(Record::FloatHistograms(h)),
                _ => None,
            }
        }
        _ => None,
    }
}

pub(crate) fn segment_name(n: u64) -> String {
    format!("{n:08}")
}

/// Segment numbers in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .map_err(werr(dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The newest complete checkpoint: its directory and the last segment it covers.
pub(crate) fn latest_checkpoint(dir: &Path) -> Result<Option<(PathBuf, u64)>, WalError> {
    let mut best: Option<(PathBuf, u64)> = None;
    for e in fs::read_dir(dir).map_err(werr(dir))? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint.")
            .and_then(|s| s.parse::<u64>().ok())
            && best.as_ref().is_none_or(|b| n > b.1)
        {
            best = Some((e.path(), n));
        }
    }
    Ok(best)
}

/// Reads every record of one segment file; at a torn or corrupt record, truncates the file there and
/// reports `true`.
fn read_segment(path: &Path, out: &mut Vec<Record>) -> Result<bool, WalError> {
    let bytes = fs::read(path).map_err(werr(path))?;
    if bytes.len() < HEADER {
        // A segment whose creation was cut short (killed before its header was written and synced):
        // it never held a record. It is removed, not kept as a torn segment — an empty "torn" file
        // would make every later replay discard the segments written after it, acknowledged records
        // included (found by the SIGKILL test).
        tracing::warn!(segment = %path.display(), "removing a WAL segment whose creation was interrupted");
        fs::remove_file(path).map_err(werr(path))?;
        return Ok(false);
    }
    let mut pos = HEADER;
    let good_header = bytes.len() >= HEADER && &bytes[..4] == MAGIC && bytes[4] == VERSION;
    let mut torn = !good_header;
    if good_header {
        while pos < bytes.len() {
            let Some(h) = bytes.get(pos..pos + 8) else {
                torn = true;
                break;
            };
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
                torn = true;
                break;
            };
            if crc32c::crc32c(payload) != crc {
                torn = true;
                break;
            }
            match decode(payload) {
                Some(r) => out.push(r),
                None => {
                    torn = true;
                    break;
                }
            }
            pos += 8 + len;
        }
    } else {
        pos = 0;
    }
    if torn {
        tracing::warn!(segment = %path.display(), offset = pos, "WAL segment torn or corrupt; truncating it there (the rest was never acknowledged)");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(werr(path))?;
        f.set_len(pos as u64).map_err(werr(path))?;
        f.sync_all().map_err(werr(path))?;
    }
    Ok(torn)
}

/// Reads the checkpoint and the segments after it, repairing a torn tail. Returns the records in order.
pub fn replay(dir: &Path) -> Result<Vec<Record>, WalError> {
    fs::create_dir_all(dir).map_err(werr(dir))?;
    let mut out = Vec::new();
    let mut after = None;
    if let Some((cp, n)) = latest_checkpoint(dir)? {
        for s in segments(&cp)? {
            read_segment(&cp.join(segment_name(s)), &mut out)?;
        }
        after = Some(n);
    }
    let segs: Vec<u64> = segments(dir)?
        .into_iter()
        .filter(|s| after.is_none_or(|a| *s > a))
        .collect();
    for (i, s) in segs.iter().enumerate() {
        let path = dir.join(segment_name(*s));
        if read_segment(&path, &mut out)? {
            // Nothing after a torn record was acknowledged; later segments cannot be trusted.
            for later in &segs[i + 1..] {
                let p = dir.join(segment_name(*later));
                tracing::warn!(segment = %p.display(), "removing WAL segment after a torn one");
                fs::remove_file(&p).map_err(werr(&p))?;
            }
            break;
        }
    }
    Ok(out)
}

/// The WAL writer.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: fs::File,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    segment: u64,
    size: u64,
    policy: FsyncPolicy,
    /// Largest record payload written (see [`DEFAULT_MAX_RECORD_BYTES`]).
    max_record: usize,
    /// A segment is cut when a write would take it past this size.
    segment_size: u64,
}

impl Wal {
    /// Opens the WAL for appending, in a new segment after the existing ones (so a repaired segment is
    /// never appended to).
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(werr(dir))?;
        let next = segments(dir)?.last().map_or(0, |s| s + 1);
        let next = next.max(latest_checkpoint(dir)?.map_or(0, |c| c.1 + 1));
        let (file, size) = create_segment(dir, next)?;
        Ok(Wal {
            dir: dir.to_owned(),
            file,
            buf: Vec::new(),
            segment: next,
            size,
            policy,
            max_record: DEFAULT_MAX_RECORD_BYTES,
            segment_size: SEGMENT_SIZE,
        })
    }

    /// Sets the segment size (bytes; at least 64 KiB): Prometheus' `--storage.agent.wal-segment-size`.
    pub fn with_segment_size(mut self, n: u64) -> Wal {
        self.segment_size = n.max(64 << 10);
        self
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the largest record payload (bytes; capped at `u32::MAX`, the length field's range).
    /// Tests lower it to exercise record splitting.
    pub fn with_max_record_bytes(mut self, n: usize) -> Wal {
        // At least room for one sample entry (type byte, two 10-byte varints, 8 value bytes).
        self.max_record = n.clamp(MIN_MAX_RECORD_BYTES, u32::MAX as usize);
        self
    }

    /// Appends records; they are in the operating system (and, with `Always`, on disk) on return.
    ///
    /// A record whose payload would exceed the record limit is written as several records of the same
    /// type, each holding whole entries (Prometheus likewise writes series and samples in batches;
    /// replay reads any number of records of either type). Nothing is written when one entry alone
    /// cannot fit ([`WalError::RecordTooLarge`]); lengths are never truncated to the u32 field.
    pub fn log(&mut self, records: &[Record]) -> Result<(), WalError> {
        // Checked up front so that a refused call writes nothing (large calls are written in parts).
        let limit = self.max_record;
        for r in records {
            if let Record::Series(series) = r
                && let Some(len) = series
                    .iter()
                    .map(|(r, l)| series_entry_len(*r, l))
                    .find(|len| 1 + len > limit)
            {
                return Err(WalError::RecordTooLarge {
                    path: self.dir.clone(),
                    kind: "series",
                    len: 1 + len,
                    limit,
                });
            }
        }
        for r in records {
            let big = match r {
                Record::Histograms(h) => h
                    .iter()
                    .map(|x| encode_histograms(std::slice::from_ref(x)).len())
                    .find(|len| *len > limit),
                Record::FloatHistograms(h) => h
                    .iter()
                    .map(|x| encode_float_histograms(std::slice::from_ref(x)).len())
                    .find(|len| *len > limit),
                _ => None,
            };
            if let Some(len) = big {
                return Err(WalError::RecordTooLarge {
                    path: self.dir.clone(),
                    kind: "histogram",
                    len,
                    limit,
                });
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let r = self.log_into(records, &mut buf);
        buf.clear();
        if buf.capacity() > 2 * FLUSH_AT {
            // A checkpoint's buffer: not kept for the small commits that follow.
            buf = Vec::new();
        }
        self.buf = buf;
        r
    }

    fn log_into(&mut self, records: &[Record], buf: &mut Vec<u8>) -> Result<(), WalError> {
        let limit = self.max_record;
        let mut entry = Vec::with_capacity(64);
        for r in records {
            let (kind, n) = match r {
                Record::Series(v) => (REC_SERIES, v.len()),
                Record::Samples(v) => (REC_SAMPLES, v.len()),
                Record::Histograms(v) => {
                    self.log_histograms(buf, v, encode_histograms)?;
                    continue;
                }
                Record::FloatHistograms(v) => {
                    self.log_histograms(buf, v, encode_float_histograms)?;
                    continue;
                }
            };
            let mut at = start_frame(buf, kind);
            for i in 0..n {
                entry.clear();
                match r {
                    Record::Series(v) => put_series_entry(&mut entry, v[i].0, &v[i].1),
                    Record::Samples(v) => put_sample_entry(&mut entry, v[i].0, v[i].1),
                    Record::Histograms(_) | Record::FloatHistograms(_) => {}
                }
                // `buf.len() - at - 8` is the frame's payload so far (type byte included); a frame
                // holds at least one entry, and `log` checked that every entry fits alone.
                if buf.len() - at - 8 + entry.len() > limit && buf.len() - at - 8 > 1 {
                    self.finish_frame(buf, at)?;
                    if buf.len() >= FLUSH_AT {
                        self.write_out(buf)?;
                    }
                    at = start_frame(buf, kind);
                }
                buf.extend_from_slice(&entry);
            }
            self.finish_frame(buf, at)?;
        }
        self.write_out(buf)?;
        if self.policy == FsyncPolicy::Always {
            let path = self.dir.join(segment_name(self.segment));
            self.file.sync_data().map_err(werr(&path))?;
        }
        Ok(())
    }

    /// Fills in the length and CRC of the frame started at `at`.
    /// Histogram samples as frames of at most the record limit, each a whole record of Prometheus'
    /// format (`encode`: the payload of some samples). A sample's size alone was checked by `log`; in a
    /// frame its reference and time deltas may take up to 18 bytes more.
    fn log_histograms<H>(
        &mut self,
        buf: &mut Vec<u8>,
        samples: &[(u64, i64, H)],
        encode: impl Fn(&[(u64, i64, H)]) -> Vec<u8>,
    ) -> Result<(), WalError> {
        let limit = self.max_record;
        let mut from = 0;
        while from < samples.len() {
            let mut to = from;
            let mut size = 17;
            while to < samples.len() {
                let one = encode(&samples[to..=to]).len() - 17 + 18;
                if to > from && size + one > limit {
                    break;
                }
                size += one;
                to += 1;
            }
            let payload = encode(&samples[from..to]);
            let at = start_frame(buf, payload[0]);
            buf.extend_from_slice(&payload[1..]);
            self.finish_frame(buf, at)?;
            if buf.len() >= FLUSH_AT {
                self.write_out(buf)?;
            }
            from = to;
        }
        Ok(())
    }

    fn finish_frame(&self, buf: &mut [u8], at: usize) -> Result<(), WalError> {
        let len = buf.len() - at - 8;
        let too_large = || WalError::RecordTooLarge {
            path: self.dir.clone(),
            kind: "record",
            len,
            limit: self.max_record,
        };
        if len > self.max_record {
            return Err(too_large());
        }
        let len32 = u32::try_from(len).map_err(|_| too_large())?;
        let crc = crc32c::crc32c(&buf[at + 8..]);
        buf[at..at + 4].copy_from_slice(&len32.to_be_bytes());
        buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Writes finished frames out (starting a new segment first when this one would grow past
    /// [`SEGMENT_SIZE`]) and empties `buf`.
    fn write_out(&mut self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.size + buf.len() as u64 > self.segment_size && self.size > HEADER as u64 {
            self.cut()?;
        }
        let written = self.file.write_all(buf);
        self.size += buf.len() as u64;
        buf.clear();
        written.map_err(|e| werr(&self.dir.join(segment_name(self.segment)))(e))
    }

    /// Starts a new segment; returns the number of the last complete one.
    pub fn cut(&mut self) -> Result<u64, WalError> {
        let path = self.dir.join(segment_name(self.segment));
        self.file.sync_all().map_err(werr(&path))?;
        let done = self.segment;
        let (file, size) = create_segment(&self.dir, done + 1)?;
        self.file = file;
        self.segment = done + 1;
        self.size = size;
        Ok(done)
    }

    /// Writes a checkpoint covering segments up to `upto` with `records` (the head's state), then deletes
    /// those segments before `keep_from` (the rest is still read by remote-write queues; replay skips
    /// it) and older checkpoints. The checkpoint is written to a temporary directory and renamed, so a
    /// crash leaves either the old state or the new one.
    pub fn checkpoint(
        &mut self,
        upto: u64,
        records: &[Record],
        keep_from: u64,
    ) -> Result<(), WalError> {
        let tmp = self.dir.join(format!("checkpoint.{upto:08}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(werr(&tmp))?;
        let mut cp = Wal {
            dir: tmp.clone(),
            buf: Vec::new(),
            file: create_segment(&tmp, 0)?.0,
            segment: 0,
            size: HEADER as u64,
            policy: FsyncPolicy::Always,
            max_record: self.max_record,
            segment_size: u64::MAX,
        };
        cp.log(records)?;
        cp.file.sync_all().map_err(werr(&tmp))?;
        drop(cp);
        let dst = self.dir.join(format!("checkpoint.{upto:08}"));
        let _ = fs::remove_dir_all(&dst);
        fs::rename(&tmp, &dst).map_err(werr(&dst))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr(&self.dir))?;
        for s in segments(&self.dir)? {
            if s <= upto && s < keep_from {
                let p = self.dir.join(segment_name(s));
                fs::remove_file(&p).map_err(werr(&p))?;
            }
        }
        for e in fs::read_dir(&self.dir).map_err(werr(&self.dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("checkpoint.")
                .and_then(|s| s.parse::<u64>().ok())
                && n < upto
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, n: u64) -> Result<(fs::File, u64), WalError> {
    let path = dir.join(segment_name(n));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(werr(&path))?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&[VERSION, 0, 0, 0]);
    f.write_all(&header).map_err(werr(&path))?;
    f.sync_all().map_err(werr(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok((f, HEADER as u64))
}

/// The payload lengths of the records in one segment file (tests).
#[cfg(test)]
pub(crate) fn frame_sizes(path: &Path) -> Vec<usize> {
    let Ok(b) = fs::read(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut pos = HEADER;
    while let Some(h) = b.get(pos..pos + 4) {
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        out.push(len);
        pos += 8 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::sample::stale_nan;

    /// Issue 22 item 12: a record bigger than the limit is written as several records (each within
    /// the limit) that replay to the same entries; one entry that cannot fit is refused.
    #[test]
    fn large_records_are_split_and_oversized_entries_refused() {
        const LIMIT: usize = 1024;
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        let samples: Vec<(u64, Sample)> = (0..1000u64)
            .map(|i| (i % 7, Sample::new(i as i64 * 1000 - 500_000, i as f64)))
            .collect();
        let series: Vec<(u64, Labels)> = (0..200u64)
            .map(|i| {
                (
                    i,
                    Labels::from_pairs([("job", "a"), ("i", &*i.to_string())]),
                )
            })
            .collect();
        // Native histograms, integer and float, with a few buckets each (spread over records too).
        let hist = |i: u64| Histogram {
            schema: 1,
            count: 10 + i,
            sum: i as f64,
            positive_spans: vec![meridian_core::histogram::Span {
                offset: -2,
                length: 3,
            }],
            positive_buckets: vec![1 + i as i64, -1, 0],
            ..Histogram::default()
        };
        let hists: Vec<(u64, i64, Histogram)> = (0..300u64)
            .map(|i| (i % 5, i as i64 * 1000, hist(i)))
            .collect();
        let fhists: Vec<(u64, i64, FloatHistogram)> = (0..300u64)
            .map(|i| (i % 3, i as i64 * 1000, hist(i).to_float()))
            .collect();
        {
            let mut wal = Wal::open(&w, FsyncPolicy::OnCut)
                .unwrap()
                .with_max_record_bytes(LIMIT);
            wal.log(&[
                Record::Series(series.clone()),
                Record::Samples(samples.clone()),
                Record::Histograms(hists.clone()),
                Record::FloatHistograms(fhists.clone()),
            ])
            .unwrap();
        }
        let sizes = frame_sizes(&w.join(segment_name(0)));
        assert!(sizes.len() > 10, "written as {} records", sizes.len());
        assert!(sizes.iter().all(|s| *s <= LIMIT), "{sizes:?}");
        let (mut got_series, mut got_samples) = (Vec::new(), Vec::new());
        let (mut got_hists, mut got_fhists) = (Vec::new(), Vec::new());
        for r in replay(&w).unwrap() {
            match r {
                Record::Series(s) => got_series.extend(s),
                Record::Samples(s) => got_samples.extend(s),
                Record::Histograms(h) => got_hists.extend(h),
                Record::FloatHistograms(h) => got_fhists.extend(h),
            }
        }
        assert_eq!(got_series, series);
        assert_eq!(got_samples, samples);
        assert_eq!(got_hists, hists);
        assert_eq!(got_fhists, fhists);
        // A series whose labels alone exceed the limit cannot be split: refused, nothing written.
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut)
            .unwrap()
            .with_max_record_bytes(LIMIT);
        let huge = Labels::from_pairs([("a", "x".repeat(2 * LIMIT))]);
        let e = wal.log(&[Record::Series(vec![(9, huge)])]).unwrap_err();
        assert!(
            matches!(e, WalError::RecordTooLarge { limit: LIMIT, .. }),
            "{e}"
        );
        drop(wal);
        assert_eq!(replay(&w).unwrap().len(), sizes.len());
    }

    fn recs() -> Vec<Record> {
        vec![
            Record::Series(vec![
                (1, Labels::from_pairs([("a", "1")])),
                (2, Labels::from_pairs([("a", "2"), ("b", "x\ny")])),
            ]),
            Record::Samples(vec![
                (1, Sample::new(-5, 1.5)),
                (2, Sample::new(1_700_000_000_000, stale_nan())),
            ]),
        ]
    }

    #[test]
    fn roundtrip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        {
            let mut wal = Wal::open(&w, FsyncPolicy::Always).unwrap();
            wal.log(&recs()).unwrap();
            wal.log(&[Record::Samples(vec![(1, Sample::new(10, 2.0))])])
                .unwrap();
        }
        let got = replay(&w).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[..2], recs()[..]);
        // Tear the last record: replay keeps the others and repairs the file.
        let seg = w.join(segment_name(0));
        let len = fs::metadata(&seg).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let got = replay(&w).unwrap();
        assert_eq!(got, recs());
        assert_eq!(replay(&w).unwrap(), recs(), "repair is stable");
        // Corrupt a byte in the middle: everything from there on is dropped.
        let mut b = fs::read(&seg).unwrap();
        let n = b.len();
        b[n - 4] ^= 0xff;
        fs::write(&seg, b).unwrap();
        assert_eq!(replay(&w).unwrap(), recs()[..1].to_vec());
    }

    #[test]
    fn interrupted_segment_creation_loses_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        {
            let mut wal = Wal::open(&w, FsyncPolicy::Always).unwrap();
            wal.log(&recs()).unwrap();
        }
        // A writer killed while creating its segment leaves a file without (a whole) header.
        fs::write(w.join(segment_name(1)), &MAGIC[..2]).unwrap();
        assert_eq!(replay(&w).unwrap(), recs());
        // The next writer's records, in the segment after it, survive every later replay.
        {
            let mut wal = Wal::open(&w, FsyncPolicy::Always).unwrap();
            wal.log(&[Record::Samples(vec![(1, Sample::new(10, 2.0))])])
                .unwrap();
        }
        for _ in 0..2 {
            assert_eq!(replay(&w).unwrap().len(), 3);
        }
    }

    #[test]
    fn checkpoint_replaces_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("wal");
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut).unwrap();
        wal.log(&recs()).unwrap();
        let upto = wal.cut().unwrap();
        wal.log(&[Record::Samples(vec![(2, Sample::new(99, 9.0))])])
            .unwrap();
        let snapshot = vec![Record::Series(vec![(2, Labels::from_pairs([("a", "2")]))])];
        wal.checkpoint(upto, &snapshot, u64::MAX).unwrap();
        drop(wal);
        let got = replay(&w).unwrap();
        assert_eq!(got[0], snapshot[0]);
        assert_eq!(got[1], Record::Samples(vec![(2, Sample::new(99, 9.0))]));
        assert_eq!(got.len(), 2);
        // A reopened WAL continues after the checkpoint.
        let mut wal = Wal::open(&w, FsyncPolicy::OnCut).unwrap();
        wal.log(&[Record::Samples(vec![(2, Sample::new(100, 1.0))])])
            .unwrap();
        assert_eq!(replay(&w).unwrap().len(), 3);
    }
}
