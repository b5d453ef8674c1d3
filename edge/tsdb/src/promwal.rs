//! Prometheus' write-ahead log, read in place (the sidecar's view of the head of the Prometheus beside
//! it; [`mirror`] follows it).
//!
//! The format, as Prometheus 2.42 writes it (`tsdb/wlog/wlog.go`, `tsdb/record/record.go`):
//!
//! ```text
//! <data>/wal/00000000, 00000001, …     segments (128 MiB by default), records never span two
//! <data>/wal/checkpoint.NNNNNNNN/      the head at a truncation, covering segments up to NNNNNNNN
//! segment:  32 KiB pages of fragments; a 0 byte where a header would start pads the rest of the page
//! fragment: type u8 (low 3 bits: 1 full, 2 first, 3 middle, 4 last; 0x08 snappy, 0x10 zstd)
//!           | length u16 BE | CRC32-Castagnoli(data) u32 BE | data
//! record:   type u8 | body                              (the fragments' data joined, then decompressed)
//!   1 series:     (ref u64 BE | #labels uvarint | (name, value as uvarint-length bytes)*)*
//!   2 samples:    base ref u64 BE | base t i64 BE | (ref − base varint | t − base varint | value u64 BE)*
//!   3 tombstones: (ref u64 BE | mint varint | maxt varint)*
//! ```
//!
//! Prometheus writes every page it fills, and the part of a page a commit filled, with `write` before
//! the commit is applied to its memory: whatever a query of Prometheus can see is in these files. A
//! record still being written shows as fragments cut short at the end of the newest segment; it is
//! read again once complete.

use meridian_core::labels::Labels;

pub mod histograms;
pub mod mirror;

pub const PAGE_SIZE: usize = 32 * 1024;
const FRAGMENT_HEADER: usize = 7;
const TYPE_MASK: u8 = 0x07;
const SNAPPY: u8 = 0x08;
const ZSTD: u8 = 0x10;
/// The largest decompressed record accepted (Prometheus' records are one commit's series or samples;
/// a segment is 128 MiB by default and 256 MiB at most).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// Reading Prometheus' WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum PromWalError {
    /// The bytes are not what Prometheus writes (a checksum, a length, a fragment sequence).
    #[error("corrupt WAL at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// Valid, but holding what Meridian does not read from the WAL (zstd compression, native
    /// histograms, tombstones, newer record types).
    #[error("the WAL holds {0}, which Meridian does not read from it")]
    Unsupported(String),
}

/// One record of the WAL, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum PromRecord {
    /// New series with the reference the samples name them by.
    Series(Vec<(u64, Labels)>),
    /// Float samples: reference, time, value.
    Samples(Vec<(u64, i64, f64)>),
    /// Integer native-histogram samples (record type 7).
    Histograms(Vec<(u64, i64, meridian_core::histogram::Histogram)>),
    /// Float native-histogram samples (record type 8).
    FloatHistograms(Vec<(u64, i64, meridian_core::histogram::FloatHistogram)>),
    /// What the head does not need: exemplars (4), metadata (6), m-map markers (5), a checkpoint's
    /// min valid time (14).
    Skipped(u8),
}

/// The records in `buf` (bytes of one segment from a record's start) that are complete, and how many
/// bytes they took: a record cut short at the end of `buf` is left for the next read. `at` is the
/// offset of `buf[0]` in the segment (pages are aligned to the segment's start).
pub fn split_records(buf: &[u8], at: u64) -> Result<(Vec<Vec<u8>>, usize), PromWalError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // The start of the record being assembled, and its fragments' data so far.
    let mut start = 0usize;
    let mut data: Vec<u8> = Vec::new();
    let mut compression = 0u8;
    let mut in_record = false;
    let corrupt = |pos: usize, reason: String| PromWalError::Corrupt {
        offset: at + pos as u64,
        reason,
    };
    while pos < buf.len() {
        let in_page = ((at + pos as u64) % PAGE_SIZE as u64) as usize;
        if buf[pos] == 0 {
            // Page padding: the rest of this page is zeros.
            let end = pos + (PAGE_SIZE - in_page);
            if end > buf.len() {
                break;
            }
            if buf[pos..end].iter().any(|b| *b != 0) {
                return Err(corrupt(pos, "non-zero byte in a padded page".into()));
            }
            pos = end;
            if !in_record {
                start = pos;
            }
            continue;
        }
        if pos + FRAGMENT_HEADER > buf.len() {
            break;
        }
        if in_page + FRAGMENT_HEADER > PAGE_SIZE {
            return Err(corrupt(
                pos,
                "a fragment header crosses a page boundary".into(),
            ));
        }
        let h = &buf[pos..pos + FRAGMENT_HEADER];
        let kind = h[0] & TYPE_MASK;
        let flags = h[0] & !TYPE_MASK;
        let len = usize::from(u16::from_be_bytes([h[1], h[2]]));
        let crc = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
        if flags & ZSTD != 0 {
            return Err(PromWalError::Unsupported("zstd-compressed records".into()));
        }
        if flags & !SNAPPY != 0 {
            return Err(corrupt(pos, format!("unknown fragment flags {flags:#04x}")));
        }
        if in_page + FRAGMENT_HEADER + len > PAGE_SIZE {
            return Err(corrupt(
                pos,
                format!("fragment of {len} bytes crosses a page"),
            ));
        }
        let body = pos + FRAGMENT_HEADER;
        if body + len > buf.len() {
            break;
        }
        let frag = &buf[body..body + len];
        if crc32c::crc32c(frag) != crc {
            return Err(corrupt(pos, "fragment checksum mismatch".into()));
        }
        match (kind, in_record) {
            (1 | 2, false) => {
                start = pos;
                data.clear();
                compression = flags;
            }
            (3 | 4, true) => {}
            _ => {
                return Err(corrupt(
                    pos,
                    format!("fragment of type {kind} where it cannot be"),
                ));
            }
        }
        if data.len() + len > MAX_RECORD_BYTES {
            return Err(corrupt(pos, "record larger than 256 MiB".into()));
        }
        data.extend_from_slice(frag);
        pos = body + len;
        in_record = matches!(kind, 2 | 3);
        if !in_record {
            out.push(
                decompress(std::mem::take(&mut data), compression)
                    .map_err(|reason| corrupt(start, reason))?,
            );
            start = pos;
        }
    }
    Ok((out, if in_record { start } else { pos }))
}

fn decompress(data: Vec<u8>, flags: u8) -> Result<Vec<u8>, String> {
    if flags & SNAPPY == 0 || data.is_empty() {
        return Ok(data);
    }
    let len = snap::raw::decompress_len(&data).map_err(|e| format!("snappy: {e}"))?;
    if len > MAX_RECORD_BYTES {
        return Err(format!("record of {len} bytes decompressed, over 256 MiB"));
    }
    snap::raw::Decoder::new()
        .decompress_vec(&data)
        .map_err(|e| format!("snappy: {e}"))
}

/// Decodes one record.
pub fn decode(rec: &[u8]) -> Result<PromRecord, PromWalError> {
    let Some((&kind, body)) = rec.split_first() else {
        return Err(bad("an empty record"));
    };
    let mut d = Dec(body);
    match kind {
        1 => {
            let mut series = Vec::new();
            while !d.0.is_empty() {
                let r = d.be64()?;
                let n = d.uvarint()?;
                // Each label takes at least two bytes: `n` is bounded by what is left.
                if n > d.0.len() as u64 / 2 {
                    return Err(bad("a series record with more labels than bytes"));
                }
                let mut pairs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let name = d.string()?;
                    let value = d.string()?;
                    pairs.push((name, value));
                }
                series.push((r, Labels::from_pairs(pairs)));
            }
            Ok(PromRecord::Series(series))
        }
        2 => {
            let mut samples = Vec::new();
            if d.0.is_empty() {
                return Ok(PromRecord::Samples(samples));
            }
            let base_ref = d.be64()?;
            let base_t = d.be64()? as i64;
            samples.reserve(d.0.len() / 10);
            while !d.0.is_empty() {
                let r = (base_ref as i64).wrapping_add(d.varint()?) as u64;
                let t = base_t.wrapping_add(d.varint()?);
                let v = f64::from_bits(d.be64()?);
                samples.push((r, t, v));
            }
            Ok(PromRecord::Samples(samples))
        }
        3 => Err(PromWalError::Unsupported(
            "tombstones (series deleted through the admin API)".into(),
        )),
        4 | 5 | 6 | 14 => Ok(PromRecord::Skipped(kind)),
        histograms::HISTOGRAM_SAMPLES => {
            histograms::decode_histograms(&mut d).map(PromRecord::Histograms)
        }
        histograms::FLOAT_HISTOGRAM_SAMPLES => {
            histograms::decode_float_histograms(&mut d).map(PromRecord::FloatHistograms)
        }
        9 | 10 | 12 | 13 => Err(PromWalError::Unsupported(format!(
            "native histogram samples (record type {kind})"
        ))),
        _ => Err(PromWalError::Unsupported(format!("record type {kind}"))),
    }
}

fn bad(reason: &str) -> PromWalError {
    PromWalError::Corrupt {
        offset: 0,
        reason: reason.to_owned(),
    }
}

/// Go's `encoding.Decbuf` over a record's body.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn be64(&mut self) -> Result<u64, PromWalError> {
        let Some((head, rest)) = self.0.split_first_chunk::<8>() else {
            return Err(bad("a record cut short"));
        };
        self.0 = rest;
        Ok(u64::from_be_bytes(*head))
    }

    fn uvarint(&mut self) -> Result<u64, PromWalError> {
        let (v, n) = super::chunks::uvarint(self.0).ok_or_else(|| bad("a bad varint"))?;
        self.0 = &self.0[n..];
        Ok(v)
    }

    fn varint(&mut self) -> Result<i64, PromWalError> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn string(&mut self) -> Result<&'a str, PromWalError> {
        let n = self.uvarint()?;
        if n > self.0.len() as u64 {
            return Err(bad("a string longer than its record"));
        }
        let (s, rest) = self.0.split_at(n as usize);
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| bad("a label that is not UTF-8"))
    }
}

/// What a WAL directory holds.
#[derive(Debug, Default)]
pub struct WalDir {
    /// Segment indexes, ascending.
    pub segments: Vec<u64>,
    /// The newest complete checkpoint (`checkpoint.NNNNNNNN`, not `.tmp`): its index and name.
    pub checkpoint: Option<(u64, String)>,
}

/// The WAL's segments and newest checkpoint in `dir`.
pub fn list_dir(dir: &std::path::Path) -> std::io::Result<WalDir> {
    let mut segments = Vec::new();
    let mut checkpoint: Option<(u64, String)> = None;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("checkpoint.") {
            if let Ok(i) = n.parse::<u64>()
                && checkpoint.as_ref().is_none_or(|(c, _)| i > *c)
            {
                checkpoint = Some((i, name.to_owned()));
            }
        } else if name.len() >= 8
            && name.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = name.parse::<u64>()
        {
            segments.push(i);
        }
    }
    segments.sort_unstable();
    Ok(WalDir {
        segments,
        checkpoint,
    })
}

/// A segment's file name (`%08d`).
pub fn segment_name(i: u64) -> String {
    format!("{i:08}")
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A WAL writer as Prometheus' (`wlog.Log`): records split into fragments on 32 KiB pages, each
    /// commit flushed; `compress` as `--storage.tsdb.wal-compression`.
    pub(crate) struct Writer {
        pub buf: Vec<u8>,
        pub compress: bool,
    }

    impl Writer {
        pub(crate) fn log(&mut self, rec: &[u8]) {
            let (data, flag) = if self.compress {
                (snap::raw::Encoder::new().compress_vec(rec).unwrap(), SNAPPY)
            } else {
                (rec.to_vec(), 0)
            };
            let mut rest = &data[..];
            let mut first = true;
            loop {
                let in_page = self.buf.len() % PAGE_SIZE;
                if PAGE_SIZE - in_page < FRAGMENT_HEADER + 1 {
                    self.buf.resize(self.buf.len() + PAGE_SIZE - in_page, 0);
                    continue;
                }
                let room = PAGE_SIZE - in_page - FRAGMENT_HEADER;
                let n = rest.len().min(room);
                let last = n == rest.len();
                let kind = match (first, last) {
                    (true, true) => 1,
                    (true, false) => 2,
                    (false, false) => 3,
                    (false, true) => 4,
                };
                let (frag, tail) = rest.split_at(n);
                self.buf.push(kind | flag);
                self.buf.extend_from_slice(&(n as u16).to_be_bytes());
                self.buf
                    .extend_from_slice(&crc32c::crc32c(frag).to_be_bytes());
                self.buf.extend_from_slice(frag);
                rest = tail;
                first = false;
                if last {
                    return;
                }
            }
        }
    }

    pub(crate) fn series_record(series: &[(u64, &[(&str, &str)])]) -> Vec<u8> {
        let mut b = vec![1u8];
        for (r, labels) in series {
            b.extend_from_slice(&r.to_be_bytes());
            put_uvarint(&mut b, labels.len() as u64);
            for (n, v) in *labels {
                put_uvarint(&mut b, n.len() as u64);
                b.extend_from_slice(n.as_bytes());
                put_uvarint(&mut b, v.len() as u64);
                b.extend_from_slice(v.as_bytes());
            }
        }
        b
    }

    pub(crate) fn samples_record(samples: &[(u64, i64, f64)]) -> Vec<u8> {
        let mut b = vec![2u8];
        let Some(&(r0, t0, _)) = samples.first() else {
            return b;
        };
        b.extend_from_slice(&r0.to_be_bytes());
        b.extend_from_slice(&t0.to_be_bytes());
        for (r, t, v) in samples {
            put_varint(&mut b, *r as i64 - r0 as i64);
            put_varint(&mut b, t - t0);
            b.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        b
    }

    fn put_uvarint(b: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            b.push((x as u8) | 0x80);
            x >>= 7;
        }
        b.push(x as u8);
    }

    fn put_varint(b: &mut Vec<u8>, x: i64) {
        put_uvarint(b, ((x << 1) ^ (x >> 63)) as u64);
    }

    #[test]
    fn records_round_trip_across_pages_with_and_without_snappy() {
        for compress in [false, true] {
            let mut w = Writer {
                buf: Vec::new(),
                compress,
            };
            let big: Vec<(u64, i64, f64)> = (0..9000).map(|i| (7, i * 15_000, i as f64)).collect();
            let series = series_record(&[(7, &[("__name__", "up"), ("job", "a")])]);
            w.log(&series);
            w.log(&samples_record(&big));
            w.log(&samples_record(&[(7, 1, 0.5)]));
            let (recs, used) = split_records(&w.buf, 0).unwrap();
            assert_eq!(used, w.buf.len());
            assert_eq!(recs.len(), 3);
            assert_eq!(
                decode(&recs[0]).unwrap(),
                PromRecord::Series(vec![(
                    7,
                    Labels::from_pairs([("__name__", "up"), ("job", "a")])
                )])
            );
            assert_eq!(decode(&recs[1]).unwrap(), PromRecord::Samples(big.clone()));
            // Cut anywhere, only whole records come out, and the rest is read again from `used`.
            for cut in [1, 6, 7, 100, PAGE_SIZE - 1, PAGE_SIZE + 3, w.buf.len() - 1] {
                let (first, used) = split_records(&w.buf[..cut], 0).unwrap();
                let (rest, more) = split_records(&w.buf[used..], used as u64).unwrap();
                assert_eq!(used + more, w.buf.len(), "cut at {cut}");
                assert_eq!([first, rest].concat(), recs, "cut at {cut}");
            }
        }
    }

    #[test]
    fn padding_checksums_and_unsupported_records() {
        let mut w = Writer {
            buf: Vec::new(),
            compress: false,
        };
        w.log(&samples_record(&[(1, 5, 1.0)]));
        // A segment closed by Prometheus: the page padded with zeros.
        w.buf.resize(PAGE_SIZE, 0);
        w.log(&samples_record(&[(1, 6, 2.0)]));
        let (recs, used) = split_records(&w.buf, 0).unwrap();
        assert_eq!((recs.len(), used), (2, w.buf.len()));
        let mut bad_crc = w.buf.clone();
        bad_crc[PAGE_SIZE + 10] ^= 1;
        assert!(matches!(
            split_records(&bad_crc, 0),
            Err(PromWalError::Corrupt { offset, .. }) if offset == PAGE_SIZE as u64
        ));
        assert!(matches!(
            decode(&[3, 0, 0]),
            Err(PromWalError::Unsupported(_))
        ));
        assert!(matches!(decode(&[9]), Err(PromWalError::Unsupported(_))));
        assert_eq!(decode(&[4]).unwrap(), PromRecord::Skipped(4));
        // A series record claiming more labels than it has bytes is refused before allocating.
        let mut b = vec![1u8];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&b), Err(PromWalError::Corrupt { .. })));
    }
}
