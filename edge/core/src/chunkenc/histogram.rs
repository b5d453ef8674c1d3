//! Prometheus' native-histogram chunk encodings, bit for bit as v2.42.0 writes them
//! (`tsdb/chunkenc/histogram.go`, `float_histogram.go`, `histogram_meta.go`, `varbit.go`):
//!
//! - bytes 0..2: the sample count (big-endian), byte 2: the counter-reset header in its top two bits
//!   ([`CounterResetHeader`]);
//! - then a bit stream: the layout (zero threshold, schema, positive and negative spans), written with
//!   the first sample, and the samples.
//! - Encoding 2 ([`HistogramChunk`]): every integer is a "varbit" prefix code; the first sample is
//!   written raw, later ones as delta-of-deltas over time (the bucket values being the histogram's
//!   spatial deltas); `sum` is Gorilla-XOR.
//! - Encoding 3 ([`FloatHistogramChunk`]): the timestamp as above; count, zero count, sum and every
//!   bucket raw in the first sample, then Gorilla-XOR, each field with its own leading/trailing-zero
//!   window.
//!
//! A chunk has one layout: a sample with other spans, schema or zero threshold needs a new chunk (or a
//! recoding, which the head does), as does a live sample after a stale marker. A stale marker carries
//! no buckets.

use super::ChunkError;
use super::bstream::{BitReader, BitWriter};
use super::xor::write_value as xor_write;
use crate::histogram::{Histogram, Span, span_buckets};
use crate::sample::{STALE_NAN_BITS, is_stale_nan};

/// The chunk's counter-reset header (top two bits of byte 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHeader {
    #[default]
    Unknown = 0x00,
    CounterReset = 0x80,
    NotCounterReset = 0x40,
    Gauge = 0xc0,
}

impl CounterResetHeader {
    pub fn from_byte(b: u8) -> CounterResetHeader {
        match b & 0xc0 {
            0x80 => CounterResetHeader::CounterReset,
            0x40 => CounterResetHeader::NotCounterReset,
            0xc0 => CounterResetHeader::Gauge,
            _ => CounterResetHeader::Unknown,
        }
    }
}

/// What every sample of a chunk shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramLayout {
    pub schema: i32,
    pub zero_threshold: f64,
    pub positive: Vec<Span>,
    pub negative: Vec<Span>,
}

impl HistogramLayout {
    pub(super) fn of(schema: i32, zt: f64, pos: &[Span], neg: &[Span]) -> HistogramLayout {
        HistogramLayout {
            schema,
            zero_threshold: zt,
            positive: pos.to_vec(),
            negative: neg.to_vec(),
        }
    }

    pub(super) fn same(&self, schema: i32, zt: f64, pos: &[Span], neg: &[Span]) -> bool {
        self.schema == schema
            && self.zero_threshold.to_bits() == zt.to_bits()
            && self.positive == pos
            && self.negative == neg
    }
}

// ------------------------------------------------------------------------------------ primitives

/// Whether `x` fits `n` bits as the varbit codes count them: `-(2^(n-1) - 1) ..= 2^(n-1)`.
fn fits(x: i64, n: u32) -> bool {
    let half = 1i64 << (n - 1);
    -(half - 1) <= x && x <= half
}

/// The varbit classes: prefix, prefix length, payload bits.
const CLASSES: [(u64, u32, u32); 7] = [
    (0b10, 2, 3),
    (0b110, 3, 6),
    (0b1110, 4, 9),
    (0b11110, 5, 12),
    (0b111110, 6, 18),
    (0b1111110, 7, 25),
    (0b11111110, 8, 56),
];

/// `putVarbitInt`: the prefix and the payload as separate writes, as Go does (which matters for the
/// 2.x trailing byte).
pub(crate) fn put_varbit_int(w: &mut BitWriter, v: i64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, plen, bits) in CLASSES {
        if fits(v, bits) {
            w.write_bits(prefix, plen);
            w.write_bits(v as u64, bits);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v as u64, 64);
}

/// `putVarbitUint`.
pub(crate) fn put_varbit_uint(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, plen, bits) in CLASSES {
        if v < (1u64 << bits) {
            w.write_bits(prefix, plen);
            w.write_bits(v, bits);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v, 64);
}

/// The number of leading one bits of a varbit prefix (0..=8), consuming the prefix.
fn read_prefix(r: &mut BitReader<'_>) -> Option<u32> {
    let mut ones = 0;
    while ones < 8 {
        if !r.read_bit()? {
            break;
        }
        ones += 1;
    }
    Some(ones)
}

pub(crate) fn read_varbit_int(r: &mut BitReader<'_>) -> Option<i64> {
    let ones = read_prefix(r)?;
    if ones == 0 {
        return Some(0);
    }
    if ones == 8 {
        return r.read_bits(64).map(|b| b as i64);
    }
    let bits = CLASSES[ones as usize - 1].2;
    let b = r.read_bits(bits)?;
    // A payload above 2^(n-1) is negative; exactly 2^(n-1) is positive (the asymmetric range).
    let v = if b > (1u64 << (bits - 1)) {
        b as i64 - (1i64 << bits)
    } else {
        b as i64
    };
    Some(v)
}

pub(crate) fn read_varbit_uint(r: &mut BitReader<'_>) -> Option<u64> {
    let ones = read_prefix(r)?;
    match ones {
        0 => Some(0),
        8 => r.read_bits(64),
        n => r.read_bits(CLASSES[n as usize - 1].2),
    }
}

/// `putZeroThreshold`: 0 as one zero byte, a power of two 2^-243..=2^10 as one byte, anything else as
/// `0xff` and the float's 64 bits.
fn put_zero_threshold(w: &mut BitWriter, zt: f64) {
    if zt == 0.0 {
        w.write_bits(0, 8);
        return;
    }
    let bits = zt.to_bits();
    let mantissa = bits & ((1u64 << 52) - 1);
    let biased = ((bits >> 52) & 0x7ff) as i32;
    // A positive normal power of two: zt = 0.5 * 2^exp with exp = biased - 1022.
    if zt > 0.0 && mantissa == 0 && biased != 0 && biased != 0x7ff {
        let exp = biased - 1022;
        if (-242..=11).contains(&exp) {
            w.write_bits((exp + 243) as u64, 8);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(bits, 64);
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Option<f64> {
    match r.read_byte()? {
        0 => Some(0.0),
        0xff => r.read_bits(64).map(f64::from_bits),
        b => {
            // 0.5 * 2^(b-243), a normal float for every byte value 1..=254.
            let exp = i32::from(b) - 243 + 1022;
            Some(f64::from_bits((exp as u64) << 52))
        }
    }
}

/// Spans: their number, then each span's length then offset (the WAL has offset first).
fn put_spans(w: &mut BitWriter, spans: &[Span]) {
    put_varbit_uint(w, spans.len() as u64);
    for s in spans {
        put_varbit_uint(w, u64::from(s.length));
        put_varbit_int(w, i64::from(s.offset));
    }
}

fn read_spans(r: &mut BitReader<'_>, max_bits: usize) -> Option<Vec<Span>> {
    let n = read_varbit_uint(r)?;
    // Each span takes at least two bits: more than the chunk holds is corrupt (and would allocate).
    if n > (max_bits / 2) as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let length = u32::try_from(read_varbit_uint(r)?).ok()?;
        let offset = i32::try_from(read_varbit_int(r)?).ok()?;
        out.push(Span { offset, length });
    }
    Some(out)
}

pub(super) fn write_layout(w: &mut BitWriter, l: &HistogramLayout) {
    put_zero_threshold(w, l.zero_threshold);
    put_varbit_int(w, i64::from(l.schema));
    put_spans(w, &l.positive);
    put_spans(w, &l.negative);
}

pub(super) fn read_layout(r: &mut BitReader<'_>, max_bits: usize) -> Option<HistogramLayout> {
    let zero_threshold = read_zero_threshold(r)?;
    let schema = i32::try_from(read_varbit_int(r)?).ok()?;
    let positive = read_spans(r, max_bits)?;
    let negative = read_spans(r, max_bits)?;
    // Every bucket costs at least one bit per sample.
    if span_buckets(&positive) + span_buckets(&negative) > max_bits {
        return None;
    }
    Some(HistogramLayout {
        schema,
        zero_threshold,
        positive,
        negative,
    })
}

/// Whether a sample after the first fits the chunk: a stale marker always does; a live one needs the
/// chunk's layout (and buckets that match it) and no stale marker before it.
pub(super) fn check_next(
    layout: Option<&HistogramLayout>,
    was_stale: bool,
    stale: bool,
    new: &HistogramLayout,
    buckets: (usize, usize),
) -> Result<(), ChunkError> {
    if stale {
        return Ok(());
    }
    if was_stale {
        return Err(ChunkError::NeedsNewChunk(
            "a live sample after a stale marker",
        ));
    }
    let same = layout
        .is_some_and(|l| l.same(new.schema, new.zero_threshold, &new.positive, &new.negative));
    if !same || buckets != (span_buckets(&new.positive), span_buckets(&new.negative)) {
        return Err(ChunkError::NeedsNewChunk("another bucket layout"));
    }
    Ok(())
}

/// The hint 2.42's iterators give sample `k` of a chunk with header `head`: `Gauge` throughout a gauge
/// chunk; otherwise the first sample `CounterReset` under that header, else `Unknown`, and every later
/// one `NotCounterReset`.
pub(super) fn sample_hint(
    head: CounterResetHeader,
    k: usize,
) -> crate::histogram::CounterResetHint {
    use crate::histogram::CounterResetHint as H;
    match (head, k) {
        (CounterResetHeader::Gauge, _) => H::Gauge,
        (CounterResetHeader::CounterReset, 0) => H::CounterReset,
        (_, 0) => H::Unknown,
        _ => H::NotCounterReset,
    }
}

/// `xorRead`: the next Gorilla-XOR value after `prev`.
pub(super) fn xor_read(
    r: &mut BitReader<'_>,
    prev: f64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Option<f64> {
    if !r.read_bit()? {
        return Some(prev);
    }
    let mbits = if r.read_bit()? {
        *leading = r.read_bits(5)? as u8;
        let mut m = r.read_bits(6)? as u8;
        if m == 0 {
            m = 64;
        }
        *trailing = 64u8.checked_sub(*leading)?.checked_sub(m)?;
        u32::from(m)
    } else {
        64u32.checked_sub(u32::from(*leading) + u32::from(*trailing))?
    };
    let bits = r.read_bits(mbits)?;
    let shifted = if *trailing >= 64 {
        0
    } else {
        bits << *trailing
    };
    Some(f64::from_bits(prev.to_bits() ^ shifted))
}

pub(super) fn new_writer(legacy_trailing_byte: bool) -> BitWriter {
    BitWriter {
        buf: vec![0, 0, 0],
        free: 0,
        legacy_trailing_byte,
    }
}

pub(super) fn set_count(buf: &mut [u8], n: u16) {
    buf[..2].copy_from_slice(&n.to_be_bytes());
}

/// The sample count and header of chunk bytes, checked.
pub(super) fn header(data: &[u8]) -> Result<(u16, CounterResetHeader), ChunkError> {
    if data.len() < 3 {
        return Err(ChunkError::NoHeader);
    }
    Ok((
        u16::from_be_bytes([data[0], data[1]]),
        CounterResetHeader::from_byte(data[2]),
    ))
}

// ------------------------------------------------------------------------------------ encoding 2

#[derive(Debug, Clone, Default)]
struct IntState {
    t: i64,
    t_delta: i64,
    cnt: u64,
    cnt_delta: i64,
    zcnt: u64,
    zcnt_delta: i64,
    sum: f64,
    leading: u8,
    trailing: u8,
    pos: Vec<i64>,
    pos_delta: Vec<i64>,
    neg: Vec<i64>,
    neg_delta: Vec<i64>,
    stale: bool,
}

/// An integer-histogram chunk (encoding 2) being written.
#[derive(Debug, Clone)]
pub struct HistogramChunk {
    w: BitWriter,
    num: u16,
    layout: Option<HistogramLayout>,
    s: IntState,
}

fn stale_histogram() -> Histogram {
    Histogram {
        sum: f64::from_bits(STALE_NAN_BITS),
        ..Histogram::default()
    }
}

impl HistogramChunk {
    /// An empty chunk; `legacy_trailing_byte` writes the bytes of Prometheus 2.x (see `BitWriter`).
    pub fn new(legacy_trailing_byte: bool) -> HistogramChunk {
        HistogramChunk {
            w: new_writer(legacy_trailing_byte),
            num: 0,
            layout: None,
            s: IntState {
                leading: 0xff,
                ..IntState::default()
            },
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    pub fn num_samples(&self) -> u16 {
        self.num
    }

    pub fn layout(&self) -> Option<&HistogramLayout> {
        self.layout.as_ref()
    }

    pub fn set_header(&mut self, h: CounterResetHeader) {
        self.w.buf[2] = (self.w.buf[2] & 0x3f) | h as u8;
    }

    /// Appends a sample with the chunk's layout (any layout for the first sample). A sample that
    /// needs a new chunk is refused with [`ChunkError::NeedsNewChunk`].
    pub fn append(&mut self, t: i64, h: &Histogram) -> Result<(), ChunkError> {
        if self.num == u16::MAX {
            return Err(ChunkError::Full);
        }
        let stale_owned;
        let stale = is_stale_nan(h.sum);
        let h = if stale {
            stale_owned = stale_histogram();
            &stale_owned
        } else {
            h
        };
        let w = &mut self.w;
        let s = &mut self.s;
        if self.num == 0 {
            let l = HistogramLayout::of(
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
            );
            write_layout(w, &l);
            put_varbit_int(w, t);
            put_varbit_uint(w, h.count);
            put_varbit_uint(w, h.zero_count);
            w.write_bits(h.sum.to_bits(), 64);
            for b in h.positive_buckets.iter().chain(&h.negative_buckets) {
                put_varbit_int(w, *b);
            }
            s.pos = h.positive_buckets.clone();
            s.neg = h.negative_buckets.clone();
            s.pos_delta = vec![0; s.pos.len()];
            s.neg_delta = vec![0; s.neg.len()];
            s.t_delta = 0;
            s.cnt_delta = 0;
            s.zcnt_delta = 0;
            self.layout = Some(l);
        } else {
            let new = HistogramLayout::of(
                h.schema,
                h.zero_threshold,
                &h.positive_spans,
                &h.negative_spans,
            );
            check_next(
                self.layout.as_ref(),
                s.stale,
                stale,
                &new,
                (h.positive_buckets.len(), h.negative_buckets.len()),
            )?;
            let t_delta = t.wrapping_sub(s.t);
            put_varbit_int(w, t_delta.wrapping_sub(s.t_delta));
            let cnt_delta = (h.count as i64).wrapping_sub(s.cnt as i64);
            let zcnt_delta = (h.zero_count as i64).wrapping_sub(s.zcnt as i64);
            let (cnt_dod, zcnt_dod) = if stale {
                (0, 0)
            } else {
                (
                    cnt_delta.wrapping_sub(s.cnt_delta),
                    zcnt_delta.wrapping_sub(s.zcnt_delta),
                )
            };
            put_varbit_int(w, cnt_dod);
            put_varbit_int(w, zcnt_dod);
            xor_write(w, h.sum, s.sum, &mut s.leading, &mut s.trailing);
            if !stale {
                for (i, b) in h.positive_buckets.iter().enumerate() {
                    let delta = b.wrapping_sub(s.pos[i]);
                    put_varbit_int(w, delta.wrapping_sub(s.pos_delta[i]));
                    s.pos_delta[i] = delta;
                }
                for (i, b) in h.negative_buckets.iter().enumerate() {
                    let delta = b.wrapping_sub(s.neg[i]);
                    put_varbit_int(w, delta.wrapping_sub(s.neg_delta[i]));
                    s.neg_delta[i] = delta;
                }
                s.pos.clone_from(&h.positive_buckets);
                s.neg.clone_from(&h.negative_buckets);
            }
            s.t_delta = t_delta;
            s.cnt_delta = cnt_delta;
            s.zcnt_delta = zcnt_delta;
        }
        s.t = t;
        s.cnt = h.count;
        s.zcnt = h.zero_count;
        s.sum = h.sum;
        s.stale = stale;
        self.num += 1;
        set_count(&mut self.w.buf, self.num);
        Ok(())
    }
}

/// Reads an integer-histogram chunk: its header and every sample, hints as 2.42's iterator gives them
/// (`Gauge` for a gauge chunk; otherwise the first sample `CounterReset` under that header, else
/// `Unknown`, and every later one `NotCounterReset`).
pub fn read_histograms(
    data: &[u8],
) -> Result<(CounterResetHeader, Vec<(i64, Histogram)>), ChunkError> {
    let (total, head) = header(data)?;
    let max_bits = data.len() * 8;
    let mut r = BitReader::new(&data[3..]);
    let trunc = |read: usize| ChunkError::Truncated {
        read: read as u16,
        total,
    };
    let mut out: Vec<(i64, Histogram)> = Vec::with_capacity(usize::from(total).min(max_bits));
    if total == 0 {
        return Ok((head, out));
    }
    let l = read_layout(&mut r, max_bits).ok_or_else(|| trunc(0))?;
    let (np, nn) = (span_buckets(&l.positive), span_buckets(&l.negative));
    let mut s = IntState::default();
    for k in 0..usize::from(total) {
        let sample = (|| {
            let mut pos = Vec::new();
            let mut neg = Vec::new();
            if k == 0 {
                s.t = read_varbit_int(&mut r)?;
                s.cnt = read_varbit_uint(&mut r)?;
                s.zcnt = read_varbit_uint(&mut r)?;
                s.sum = f64::from_bits(r.read_bits(64)?);
                if !is_stale_nan(s.sum) {
                    for _ in 0..np {
                        pos.push(read_varbit_int(&mut r)?);
                    }
                    for _ in 0..nn {
                        neg.push(read_varbit_int(&mut r)?);
                    }
                    s.pos_delta = vec![0; np];
                    s.neg_delta = vec![0; nn];
                    s.pos.clone_from(&pos);
                    s.neg.clone_from(&neg);
                }
            } else {
                s.t_delta = s.t_delta.wrapping_add(read_varbit_int(&mut r)?);
                s.t = s.t.wrapping_add(s.t_delta);
                s.cnt_delta = s.cnt_delta.wrapping_add(read_varbit_int(&mut r)?);
                s.cnt = (s.cnt as i64).wrapping_add(s.cnt_delta) as u64;
                s.zcnt_delta = s.zcnt_delta.wrapping_add(read_varbit_int(&mut r)?);
                s.zcnt = (s.zcnt as i64).wrapping_add(s.zcnt_delta) as u64;
                s.sum = xor_read(&mut r, s.sum, &mut s.leading, &mut s.trailing)?;
                if !is_stale_nan(s.sum) {
                    if s.pos.len() != np || s.neg.len() != nn {
                        // Live after stale within a chunk never happens in Prometheus' chunks.
                        return None;
                    }
                    for i in 0..np {
                        s.pos_delta[i] = s.pos_delta[i].wrapping_add(read_varbit_int(&mut r)?);
                        s.pos[i] = s.pos[i].wrapping_add(s.pos_delta[i]);
                    }
                    for i in 0..nn {
                        s.neg_delta[i] = s.neg_delta[i].wrapping_add(read_varbit_int(&mut r)?);
                        s.neg[i] = s.neg[i].wrapping_add(s.neg_delta[i]);
                    }
                    pos.clone_from(&s.pos);
                    neg.clone_from(&s.neg);
                }
            }
            Some((pos, neg))
        })();
        let (pos, neg) = sample.ok_or_else(|| trunc(k))?;
        let h = if is_stale_nan(s.sum) {
            stale_histogram()
        } else {
            Histogram {
                hint: sample_hint(head, k),
                schema: l.schema,
                zero_threshold: l.zero_threshold,
                zero_count: s.zcnt,
                count: s.cnt,
                sum: s.sum,
                positive_spans: l.positive.clone(),
                negative_spans: l.negative.clone(),
                positive_buckets: pos,
                negative_buckets: neg,
            }
        };
        out.push((s.t, h));
    }
    Ok((head, out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::histogram::CounterResetHint;

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub(crate) fn sp(v: &[(i32, u32)]) -> Vec<Span> {
        v.iter()
            .map(|&(offset, length)| Span { offset, length })
            .collect()
    }

    /// The histograms of Prometheus 2.42's `TestHistogramChunkSameBuckets`, with the bytes of a model of
    /// its code (the vectors in the format notes; the XOR primitives are checked against Prometheus' own
    /// bytes in xor.rs).
    #[test]
    fn integer_histogram_chunk_bytes() {
        let t0 = 1_234_567_890;
        let base = Histogram {
            schema: 1,
            zero_threshold: 1e-100,
            positive_spans: sp(&[(0, 2), (1, 2)]),
            negative_spans: sp(&[(1, 1), (2, 3)]),
            ..Histogram::default()
        };
        let samples = [
            (t0, 15, 2, 18.4, [1, 1, -1, 0], [2, 1, -1, -1]),
            (t0 + 16, 32, 3, 24.4, [5, -2, 1, -2], [4, -1, 1, -1]),
            (t0 + 30, 54, 5, 24.4, [6, 1, -3, 6], [5, 1, -2, 3]),
        ];
        let want = [
            "000100ff2b2bff2ee48e05308ca4946518ce5fc000000932c05a58f9201933333333333346374a37b8",
            "000200ff2b2bff2ee48e05308ca4946518ce5fc000000932c05a58f9201933333333333346374a37be43231d81da565695a4",
            "000300ff2b2bff2ee48e05308ca4946518ce5fc000000932c05a58f9201933333333333346374a37be43231d81da565695a4b6162ae1b758abd37740",
        ];
        let mut c = HistogramChunk::new(true);
        let mut hs = Vec::new();
        for ((t, count, zc, sum, pb, nb), want) in samples.iter().zip(want) {
            let h = Histogram {
                count: *count,
                zero_count: *zc,
                sum: *sum,
                positive_buckets: pb.to_vec(),
                negative_buckets: nb.to_vec(),
                ..base.clone()
            };
            c.append(*t, &h).unwrap();
            assert_eq!(hex(c.bytes()), want);
            hs.push((*t, h));
        }
        let (head, got) = read_histograms(c.bytes()).unwrap();
        assert_eq!(head, CounterResetHeader::Unknown);
        for (i, ((t, h), (gt, gh))) in hs.iter().zip(&got).enumerate() {
            assert_eq!(t, gt);
            let mut h = h.clone();
            h.hint = if i == 0 {
                CounterResetHint::Unknown
            } else {
                CounterResetHint::NotCounterReset
            };
            assert_eq!(&h, gh);
        }
        // Another layout needs another chunk.
        let mut other = hs[2].1.clone();
        other.schema = 2;
        assert!(matches!(
            c.append(t0 + 60, &other),
            Err(ChunkError::NeedsNewChunk(_))
        ));
    }

    #[test]
    fn a_stale_marker_alone() {
        let mut c = HistogramChunk::new(true);
        let stale = Histogram {
            sum: f64::from_bits(STALE_NAN_BITS),
            ..Histogram::default()
        };
        c.append(1_700_000_000_000, &stale).unwrap();
        assert_eq!(hex(c.bytes()), "000100001fc0003179fcad0003ff80000000000010");
        let (_, got) = read_histograms(c.bytes()).unwrap();
        assert!(is_stale_nan(got[0].1.sum));
    }

    #[test]
    fn varbit_codes_round_trip_at_every_class_edge() {
        let mut ints = vec![0i64, i64::MIN, i64::MAX, -1, 1];
        for (_, _, bits) in CLASSES {
            let half = 1i64 << (bits - 1);
            ints.extend([half, half + 1, -(half - 1), -half, -(half + 1)]);
        }
        let mut w = BitWriter::default();
        for v in &ints {
            put_varbit_int(&mut w, *v);
            put_varbit_uint(&mut w, v.unsigned_abs());
        }
        let mut r = BitReader::new(&w.buf);
        for v in &ints {
            assert_eq!(read_varbit_int(&mut r), Some(*v));
            assert_eq!(read_varbit_uint(&mut r), Some(v.unsigned_abs()));
        }
        for zt in [
            0.0,
            1e-100,
            f64::from_bits(0x37f0_0000_0000_0000),
            1024.0,
            2048.0,
            -1.0,
        ] {
            let mut w = BitWriter::default();
            put_zero_threshold(&mut w, zt);
            assert_eq!(read_zero_threshold(&mut BitReader::new(&w.buf)), Some(zt));
        }
    }

    #[test]
    fn corrupt_chunks_are_errors_not_allocations() {
        // A layout claiming 2^32-1 buckets in a 12-byte chunk.
        let mut w = new_writer(false);
        put_zero_threshold(&mut w, 0.0);
        put_varbit_int(&mut w, 0);
        put_varbit_uint(&mut w, 1);
        put_varbit_uint(&mut w, u64::from(u32::MAX));
        put_varbit_int(&mut w, 0);
        put_varbit_uint(&mut w, 0);
        set_count(&mut w.buf, 3);
        assert!(read_histograms(&w.buf).is_err());
        assert!(super::super::read_float_histograms(&w.buf).is_err());
        assert_eq!(read_histograms(&[0, 1]), Err(ChunkError::NoHeader));
    }
}
