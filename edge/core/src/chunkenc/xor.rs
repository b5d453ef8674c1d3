//! The XOR chunk encoding of Prometheus' TSDB (`chunkenc/xor.go`), bit for bit.
//!
//! The scheme is the one of Facebook's Gorilla paper (Pelkonen et al., VLDB 2015), with Prometheus'
//! choices for the details:
//!
//! - bytes 0..2: the number of samples, big-endian `u16`;
//! - sample 0: timestamp as a zig-zag varint, value as 64 raw bits;
//! - sample 1: timestamp delta as an unsigned varint, value XOR-encoded;
//! - sample n >= 2: delta-of-delta `dod` of the timestamp with a prefix code — `0` for dod == 0, `10` + 14
//!   bits, `110` + 17 bits, `1110` + 20 bits, `1111` + 64 bits — where an n-bit field holds values in
//!   `[-(2^(n-1) - 1), 2^(n-1)]` (note the asymmetry: the reader treats a field above `2^(n-1)` as negative);
//! - values: XOR with the previous value; `0` if equal, else `1` then either `0` + the meaningful bits
//!   inside the previous leading/trailing-zero window, or `1` + 5 bits of leading zeros (capped at 31) +
//!   6 bits of significant-bit count (64 written as 0) + the significant bits.

use super::ChunkError;
use super::bstream::{BitReader, BitWriter, put_uvarint, read_uvarint, read_varint, zigzag_encode};
use crate::sample::Sample;

/// Byte layout of the encoded stream. The bits are the same; Prometheus 2.x (up to 2.55) leaves an empty
/// trailing byte after a write of whole bytes that ends on a byte boundary, Prometheus 3 does not
/// (prometheus#14854). Both decode everywhere; the layout matters only for byte-identical output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Prometheus3,
    Prometheus2,
}

/// An XOR chunk that can be read and appended to.
#[derive(Debug, Clone)]
pub struct XorChunk {
    w: BitWriter,
    num: u16,
    state: AppendState,
}

/// What the encoder needs to know about the last sample.
#[derive(Debug, Clone, Copy)]
struct AppendState {
    t: i64,
    v: f64,
    t_delta: i64,
    /// Leading zeros of the current XOR window; 0xff before the first window is set.
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> XorChunk {
        XorChunk::new()
    }
}

impl XorChunk {
    /// An empty chunk (Prometheus 3 byte layout).
    pub fn new() -> XorChunk {
        XorChunk::with_layout(Layout::Prometheus3, 128)
    }

    /// An empty chunk in the given byte layout, with room for `bytes` bytes before reallocating.
    pub fn with_layout(layout: Layout, bytes: usize) -> XorChunk {
        let mut buf = Vec::with_capacity(bytes.max(2));
        buf.extend_from_slice(&[0, 0]);
        XorChunk {
            w: BitWriter {
                buf,
                free: 0,
                legacy_trailing_byte: layout == Layout::Prometheus2,
            },
            num: 0,
            state: AppendState {
                t: 0,
                v: 0.0,
                t_delta: 0,
                leading: 0xff,
                trailing: 0,
            },
        }
    }

    /// Takes existing chunk bytes (from a segment file, the wire, ...) and makes them appendable: the
    /// encoder state is recovered by decoding every sample, and any bytes past the last sample's final bit
    /// are dropped so appends continue exactly where the encoding ended. A 2.x empty trailing byte is kept
    /// and selects the 2.x layout; otherwise appends use Prometheus 3's.
    pub fn from_bytes(data: &[u8]) -> Result<XorChunk, ChunkError> {
        let mut it = XorIterator::new(data)?;
        let total = it.total;
        while it.next_sample().is_some() {}
        if let Some(e) = it.err() {
            return Err(e);
        }
        debug_assert_eq!(it.read, total);
        let end_bits = 16 + it.br.bit_pos();
        let legacy = end_bits % 8 == 0 && data.len() == end_bits / 8 + 1 && data[end_bits / 8] == 0;
        let mut buf = data[..end_bits.div_ceil(8) + usize::from(legacy)].to_vec();
        let free = (buf.len() * 8 - end_bits) as u32;
        if (1..8).contains(&free)
            && let Some(last) = buf.last_mut()
        {
            *last &= !((1u16 << free) - 1) as u8;
        }
        Ok(XorChunk {
            w: BitWriter {
                buf,
                free,
                legacy_trailing_byte: legacy,
            },
            num: total,
            state: AppendState {
                t: it.t,
                v: it.v,
                t_delta: it.t_delta,
                // 0xff when no XOR window was ever written (all values equal so far), exactly as a fresh
                // encoder would have it.
                leading: it.leading,
                trailing: it.trailing,
            },
        })
    }

    /// The encoded chunk: header and bit stream.
    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    /// Consumes the chunk, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.buf
    }

    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// Timestamp of the last sample appended (meaningless when empty).
    pub fn last_t(&self) -> i64 {
        self.state.t
    }

    pub fn iter(&self) -> XorIterator<'_> {
        // The chunk's own bytes always have a header.
        XorIterator::from_valid(&self.w.buf)
    }

    /// Appends a sample. Timestamps are expected to increase (the TSDB enforces it; the encoding itself can
    /// represent any order, as Prometheus').
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        if self.num == u16::MAX {
            return Err(ChunkError::Full);
        }
        let s = &mut self.state;
        let w = &mut self.w;
        let t_delta;
        match self.num {
            0 => {
                put_uvarint(w, zigzag_encode(t));
                w.write_bits(v.to_bits(), 64);
                t_delta = 0;
            }
            1 => {
                t_delta = t.wrapping_sub(s.t);
                put_uvarint(w, t_delta as u64);
                write_value(w, v, s.v, &mut s.leading, &mut s.trailing);
            }
            _ => {
                t_delta = t.wrapping_sub(s.t);
                let dod = t_delta.wrapping_sub(s.t_delta);
                // The 2.x layout depends on the exact sequence of writes (see `Layout`), so it makes
                // Prometheus' calls one by one; Prometheus 3's layout depends only on the bits, so the
                // prefix and field go out in one write.
                let legacy = w.legacy_trailing_byte;
                if dod == 0 {
                    w.write_bit(false);
                } else if bit_range(dod, 14) {
                    write_prefixed(w, legacy, 0b10, 2, dod as u64, 14);
                } else if bit_range(dod, 17) {
                    write_prefixed(w, legacy, 0b110, 3, dod as u64, 17);
                } else if bit_range(dod, 20) {
                    write_prefixed(w, legacy, 0b1110, 4, dod as u64, 20);
                } else {
                    w.write_bits(0b1111, 4);
                    w.write_bits(dod as u64, 64);
                }
                write_value(w, v, s.v, &mut s.leading, &mut s.trailing);
            }
        }
        s.t = t;
        s.v = v;
        s.t_delta = t_delta;
        self.num += 1;
        self.w.buf[..2].copy_from_slice(&self.num.to_be_bytes());
        Ok(())
    }
}

/// Whether `x` fits an `nbits` field of the dod code: `[-(2^(n-1) - 1), 2^(n-1)]`.
#[inline]
fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// Writes a `plen`-bit prefix then an `n`-bit field.
#[inline(always)]
fn write_prefixed(w: &mut BitWriter, legacy: bool, prefix: u64, plen: u32, field: u64, n: u32) {
    if legacy {
        w.write_bits(prefix, plen);
        w.write_bits(field, n);
    } else {
        let mask = (1u64 << n) - 1;
        w.write_bits((prefix << n) | (field & mask), plen + n);
    }
}

#[inline]
pub(super) fn write_value(
    w: &mut BitWriter,
    v: f64,
    prev: f64,
    leading: &mut u8,
    trailing: &mut u8,
) {
    let delta = v.to_bits() ^ prev.to_bits();
    if delta == 0 {
        w.write_bit(false);
        return;
    }
    let legacy = w.legacy_trailing_byte;
    // Only 5 bits hold the leading-zero count: clamp to 31.
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != 0xff && new_leading >= *leading && new_trailing >= *trailing {
        // The meaningful bits fit the previous window: control bits `10`, then the bits.
        let mbits = 64 - u32::from(*leading) - u32::from(*trailing);
        let bits = delta >> *trailing;
        if legacy || mbits > 62 {
            w.write_bit(true);
            w.write_bit(false);
            w.write_bits(bits, mbits);
        } else {
            w.write_bits((0b10 << mbits) | bits, mbits + 2);
        }
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    // 64 significant bits cannot be written in 6 bits; it is written as 0 (0 itself never occurs, since a
    // zero delta took the branch above).
    let sigbits = 64 - u32::from(new_leading) - u32::from(new_trailing);
    if legacy {
        w.write_bit(true);
        w.write_bit(true);
        w.write_bits(u64::from(new_leading), 5);
        w.write_bits(u64::from(sigbits), 6);
    } else {
        // Control bits `11`, 5 bits of leading zeros, 6 bits of significant-bit count.
        w.write_bits(
            (0b11 << 11) | (u64::from(new_leading) << 6) | u64::from(sigbits & 0x3f),
            13,
        );
    }
    w.write_bits(delta >> new_trailing, sigbits);
}

/// Bits the decoder's fast path needs loaded: a dod of up to 4 + 20 bits and a value's 13 control bits.
/// Refilling only below this keeps refills to about one per 20-40 bits decoded.
const FAST_BITS: u32 = 37;

/// Iterates over the samples of an XOR chunk.
///
/// Stops at the end or at the first decoding error; [`XorIterator::err`] tells which.
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    br: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    v: f64,
    t_delta: i64,
    leading: u8,
    trailing: u8,
    err: Option<ChunkError>,
}

impl<'a> XorIterator<'a> {
    /// Iterates over chunk bytes (header and bit stream).
    pub fn new(data: &'a [u8]) -> Result<XorIterator<'a>, ChunkError> {
        if data.len() < 2 {
            return Err(ChunkError::NoHeader);
        }
        Ok(XorIterator::from_valid(data))
    }

    fn from_valid(data: &'a [u8]) -> XorIterator<'a> {
        let total = u16::from_be_bytes([data[0], data[1]]);
        XorIterator {
            br: BitReader::new(&data[2..]),
            total,
            read: 0,
            t: 0,
            v: 0.0,
            t_delta: 0,
            leading: 0xff,
            trailing: 0,
            err: None,
        }
    }

    /// Number of samples the header announces.
    pub fn total(&self) -> u16 {
        self.total
    }

    /// The decoding error that ended the iteration, if any.
    pub fn err(&self) -> Option<ChunkError> {
        self.err.clone()
    }

    /// The current sample (after a successful `next_sample`/`seek`).
    pub fn at(&self) -> (i64, f64) {
        (self.t, self.v)
    }

    /// Advances to the first sample with timestamp >= `t` and returns it; `None` when there is none.
    /// Like Prometheus' `Seek`, it never moves backwards: if the current sample already qualifies it is
    /// returned again.
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        if self.read > 0 && self.t >= t {
            return Some((self.t, self.v));
        }
        while let Some((st, sv)) = self.next_sample() {
            if st >= t {
                return Some((st, sv));
            }
        }
        None
    }

    fn fail(&mut self) -> Option<(i64, f64)> {
        self.err = Some(ChunkError::Truncated {
            read: self.read,
            total: self.total,
        });
        self.read = self.total;
        None
    }

    /// Decodes the next sample.
    #[inline(always)]
    pub fn next_sample(&mut self) -> Option<(i64, f64)> {
        if self.read >= self.total {
            return None;
        }
        match self.read {
            0 => {
                let Some(t) = read_varint(&mut self.br) else {
                    return self.fail();
                };
                let Some(v) = self.br.read_bits(64) else {
                    return self.fail();
                };
                self.t = t;
                self.v = f64::from_bits(v);
            }
            1 => {
                let Some(d) = read_uvarint(&mut self.br) else {
                    return self.fail();
                };
                self.t_delta = d as i64;
                self.t = self.t.wrapping_add(self.t_delta);
                if !self.read_value() {
                    return self.fail();
                }
            }
            _ => {
                // Fast path: with FAST_BITS loaded, the dod (<= 24 bits for all but the 64-bit code) and
                // the value's control bits (<= 13) need no further availability checks.
                self.br.ensure(FAST_BITS);
                let ok = if self.br.available() >= FAST_BITS {
                    self.read_fast()
                } else {
                    self.read_dod() && self.read_value()
                };
                if !ok {
                    return self.fail();
                }
            }
        }
        self.read += 1;
        Some((self.t, self.v))
    }

    /// Decodes a sample >= 2 with at least `FAST_BITS` bits loaded. (A branch-free variant was slower
    /// here: the serial dependency through the bit buffer, not branch prediction, bounds decoding.)
    #[inline(always)]
    fn read_fast(&mut self) -> bool {
        let br = &mut self.br;
        let w = br.window();
        let ones = w.leading_ones();
        if ones == 0 {
            br.consume(1);
        } else if ones < 4 {
            let (plen, sz) = match ones {
                1 => (2, 14),
                2 => (3, 17),
                _ => (4, 20),
            };
            let mut b = (w << plen) >> (64 - sz);
            br.consume(plen + sz);
            // Fields above 2^(sz-1) are negative.
            if b > (1 << (sz - 1)) {
                b = b.wrapping_sub(1 << sz);
            }
            self.t_delta = self.t_delta.wrapping_add(b as i64);
        } else {
            return self.read_dod() && self.read_value();
        }
        self.t = self.t.wrapping_add(self.t_delta);
        // At most 24 bits used: the value's 13 control bits are loaded.
        let w = br.window();
        if w >> 63 == 0 {
            br.consume(1);
            return true;
        }
        if (w >> 62) & 1 == 0 {
            br.consume(2);
            self.reuse_window();
        } else {
            br.consume(13);
            self.new_window((w << 2) >> 53);
        }
        self.read_value_bits()
    }

    /// Control bits `10`: the previous window again. Go's decoder starts from a zero window, so a stream
    /// that reuses before any window was set means 64 bits; do the same.
    #[inline(always)]
    fn reuse_window(&mut self) {
        if self.leading == 0xff {
            self.leading = 0;
            self.trailing = 0;
        }
    }

    /// Control bits `11`: `x` holds 5 bits of leading zeros and 6 of significant-bit count (0 = 64).
    #[inline(always)]
    fn new_window(&mut self, x: u64) {
        let mut sig = (x & 0x3f) as u8;
        if sig == 0 {
            sig = 64;
        }
        self.leading = ((x >> 6) & 0x1f) as u8;
        // A corrupt stream could announce more bits than fit; saturate rather than overflow.
        self.trailing = 64u8.saturating_sub(self.leading).saturating_sub(sig);
    }

    /// Reads the meaningful bits of an XOR'd value (after its control bits).
    #[inline(always)]
    fn read_value_bits(&mut self) -> bool {
        let br = &mut self.br;
        let mbits = 64u32.saturating_sub(u32::from(self.leading) + u32::from(self.trailing));
        let bits = if mbits == 0 {
            0
        } else if mbits <= 56 {
            if !br.ensure(mbits) {
                return false;
            }
            let b = br.peek(mbits);
            br.consume(mbits);
            b
        } else {
            match br.read_bits(mbits) {
                Some(b) => b,
                None => return false,
            }
        };
        let shifted = if self.trailing >= 64 {
            0
        } else {
            bits << self.trailing
        };
        self.v = f64::from_bits(self.v.to_bits() ^ shifted);
        true
    }

    /// Reads a delta-of-delta (samples >= 2) and advances the timestamp.
    #[inline(always)]
    fn read_dod(&mut self) -> bool {
        let br = &mut self.br;
        if !br.ensure(4) {
            // Fewer than 4 bits left: only the 1-bit "dod == 0" code can still fit.
            if br.read_bit() == Some(false) {
                self.t = self.t.wrapping_add(self.t_delta);
                return true;
            }
            return false;
        }
        // The prefix is up to four bits, ending at the first zero: count leading ones.
        let ones = br.window().leading_ones().min(4);
        if ones == 0 {
            br.consume(1);
            self.t = self.t.wrapping_add(self.t_delta);
            return true;
        }
        let (plen, sz) = match ones {
            1 => (2, 14),
            2 => (3, 17),
            3 => (4, 20),
            _ => (4, 64),
        };
        br.consume(plen);
        let dod = if sz == 64 {
            match br.read_bits(64) {
                Some(b) => b as i64,
                None => return false,
            }
        } else {
            if !br.ensure(sz) {
                return false;
            }
            let mut b = br.peek(sz);
            br.consume(sz);
            // Fields above 2^(sz-1) are negative numbers (see the module documentation).
            if b > (1 << (sz - 1)) {
                b = b.wrapping_sub(1 << sz);
            }
            b as i64
        };
        self.t_delta = self.t_delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.t_delta);
        true
    }

    #[inline(always)]
    fn read_value(&mut self) -> bool {
        let br = &mut self.br;
        if !br.ensure(2) {
            // Only "value unchanged" (one 0 bit) can fit.
            return br.read_bit() == Some(false);
        }
        match br.peek(2) {
            0 | 1 => {
                br.consume(1);
                return true;
            }
            2 => {
                br.consume(2);
                self.reuse_window();
            }
            _ => {
                br.consume(2);
                if !br.ensure(11) {
                    return false;
                }
                let x = br.peek(11);
                br.consume(11);
                self.new_window(x);
            }
        }
        self.read_value_bits()
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Sample;

    #[inline]
    fn next(&mut self) -> Option<Sample> {
        self.next_sample().map(|(t, v)| Sample { t, v })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.total - self.read.min(self.total));
        (0, Some(left))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sample::stale_nan;
    use proptest::prelude::*;

    fn encode(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v).unwrap();
        }
        c
    }

    fn decode(data: &[u8]) -> Vec<(u64, u64)> {
        let mut it = XorIterator::new(data).unwrap();
        let mut out = vec![];
        while let Some((t, v)) = it.next_sample() {
            out.push((t as u64, v.to_bits()));
        }
        assert_eq!(it.err(), None);
        out
    }

    fn bits(samples: &[(i64, f64)]) -> Vec<(u64, u64)> {
        samples
            .iter()
            .map(|&(t, v)| (t as u64, v.to_bits()))
            .collect()
    }

    #[test]
    fn known_bytes() {
        // Hand-derived from the format: t=1000 (zig-zag varint 0xd0 0x0f), v=1.0 raw; t=2000 (uvarint delta
        // 1000 = 0xe8 0x07), same value (bit 0); t=3000: dod 0 (bit 0), same value (bit 0).
        let c = encode(&[(1000, 1.0), (2000, 1.0), (3000, 1.0)]);
        let mut want = vec![0x00, 0x03, 0xd0, 0x0f];
        want.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        want.extend_from_slice(&[0xe8, 0x07, 0b0000_0000]);
        assert_eq!(c.bytes(), &want[..]);
    }

    #[test]
    fn edge_values_roundtrip() {
        let s = vec![
            (-5, 0.0),
            (0, -0.0),
            (1, f64::NAN),
            (2, stale_nan()),
            (3, f64::INFINITY),
            (4, f64::NEG_INFINITY),
            (10_000, f64::MIN_POSITIVE),
            (10_001, f64::MAX),
            (10_002, 1e-300),
            (i64::MAX / 4, 3.0),
            (i64::MAX / 4 + 1, 3.0),
            (i64::MAX / 4 - 1_000_000_000, 7.0),
        ];
        let c = encode(&s);
        assert_eq!(decode(c.bytes()), bits(&s));
    }

    #[test]
    fn dod_field_boundaries() {
        // Exercise both ends of every dod field width, including the asymmetric upper bound.
        for &dod in &[
            1i64,
            -1,
            8191,
            8192,
            -8191,
            -8192,
            8193,
            65535,
            65536,
            -65535,
            -65536,
            524287,
            524288,
            -524287,
            -524288,
            524289,
            1 << 40,
            -(1 << 40),
        ] {
            let s = vec![(0, 1.0), (100_000_000, 2.0), (200_000_000 + dod, 3.0)];
            let c = encode(&s);
            assert_eq!(decode(c.bytes()), bits(&s), "dod {dod}");
        }
    }

    #[test]
    fn continue_existing_chunk() {
        let s: Vec<(i64, f64)> = (0..50)
            .map(|i| (i * 15_000 + i % 3, (i as f64).sin()))
            .collect();
        let whole = encode(&s);
        for cut in 0..s.len() {
            let first = encode(&s[..cut]);
            let mut resumed = XorChunk::from_bytes(first.bytes()).unwrap();
            for &(t, v) in &s[cut..] {
                resumed.append(t, v).unwrap();
            }
            assert_eq!(resumed.bytes(), whole.bytes(), "cut at {cut}");
        }
        // Trailing garbage after the last sample is dropped, not decoded.
        let mut padded = encode(&s[..10]).into_bytes();
        padded.extend_from_slice(&[0xff, 0xff]);
        let mut c = XorChunk::from_bytes(&padded).unwrap();
        for &(t, v) in &s[10..] {
            c.append(t, v).unwrap();
        }
        assert_eq!(c.bytes(), whole.bytes());
    }

    #[test]
    fn continue_after_constant_values() {
        // No XOR window exists until the value first changes; a resumed encoder must know that.
        let s = [
            (0, 1.0),
            (10, 1.0),
            (20, 1.0),
            (30, 2.5),
            (40, 2.5),
            (50, -3.0),
        ];
        let whole = encode(&s);
        for cut in 0..s.len() {
            let mut resumed = XorChunk::from_bytes(encode(&s[..cut]).bytes()).unwrap();
            for &(t, v) in &s[cut..] {
                resumed.append(t, v).unwrap();
            }
            assert_eq!(resumed.bytes(), whole.bytes(), "cut at {cut}");
        }
    }

    #[test]
    fn layouts_differ_only_by_the_trailing_byte() {
        // Two samples: the second ends with a value write; a 64-bit first value written aligned leaves
        // the 2.x empty byte until the next write.
        let cases: Vec<Vec<(i64, f64)>> = vec![
            vec![(0, 1.0)],
            vec![(1000, 1.0), (2000, 1.0)],
            (0..200)
                .map(|i| (i * 15_000, (i as f64 * 0.37).sin() * 1e3))
                .collect(),
            (0..50)
                .map(|i| {
                    (
                        i * 10_000 + (i % 7) * 1000,
                        f64::from_bits(0x4000_0000_0000_0000 | (i as u64) << 40),
                    )
                })
                .collect(),
        ];
        let mut saw_trailing = false;
        for s in cases {
            for n in 1..=s.len() {
                let mut modern = XorChunk::new();
                let mut legacy = XorChunk::with_layout(Layout::Prometheus2, 16);
                for &(t, v) in &s[..n] {
                    modern.append(t, v).unwrap();
                    legacy.append(t, v).unwrap();
                }
                let (m, l) = (modern.bytes(), legacy.bytes());
                if l.len() == m.len() + 1 {
                    assert_eq!(l[l.len() - 1], 0);
                    saw_trailing = true;
                    // Continuing a 2.x chunk from its bytes stays in the 2.x layout.
                    let mut resumed = XorChunk::from_bytes(l).unwrap();
                    let mut whole = XorChunk::with_layout(Layout::Prometheus2, 16);
                    for &(t, v) in &s {
                        whole.append(t, v).unwrap();
                    }
                    for &(t, v) in &s[n..] {
                        resumed.append(t, v).unwrap();
                    }
                    assert_eq!(resumed.bytes(), whole.bytes());
                } else {
                    assert_eq!(l, m);
                }
                assert_eq!(decode(l), decode(m));
            }
        }
        assert!(saw_trailing);
    }

    #[test]
    fn truncated_is_an_error() {
        let s: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, i as f64 * 1.5)).collect();
        let c = encode(&s);
        let cut = &c.bytes()[..c.bytes().len() - 3];
        let mut it = XorIterator::new(cut).unwrap();
        let n = std::iter::from_fn(|| it.next_sample()).count();
        assert!(n < 20);
        assert!(matches!(
            it.err(),
            Some(ChunkError::Truncated { total: 20, .. })
        ));
        assert!(XorChunk::from_bytes(cut).is_err());
        assert_eq!(XorIterator::new(&[1]).err(), Some(ChunkError::NoHeader));
    }

    #[test]
    fn seek() {
        let s: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, i as f64)).collect();
        let c = encode(&s);
        let mut it = c.iter();
        assert_eq!(it.seek(35), Some((40, 4.0)));
        assert_eq!(it.seek(20), Some((40, 4.0)));
        assert_eq!(it.seek(40), Some((40, 4.0)));
        assert_eq!(it.next_sample(), Some((50, 5.0)));
        assert_eq!(it.seek(1000), None);
    }

    proptest! {
        #[test]
        fn roundtrip_any(samples in proptest::collection::vec((any::<i64>(), any::<u64>()), 0..300)) {
            let s: Vec<(i64, f64)> = samples.iter().map(|&(t, v)| (t, f64::from_bits(v))).collect();
            let c = encode(&s);
            prop_assert_eq!(decode(c.bytes()), bits(&s));
            prop_assert_eq!(c.iter().count(), s.len());
        }

        #[test]
        fn roundtrip_realistic(start in 0i64..1 << 42, jitter in proptest::collection::vec(-50i64..50, 1..240),
                               base in -1e6f64..1e6, step in prop_oneof![Just(0.0), -10.0f64..10.0]) {
            let s: Vec<(i64, f64)> = jitter.iter().enumerate()
                .map(|(i, j)| (start + i as i64 * 15_000 + j, base + step * i as f64)).collect();
            let c = encode(&s);
            prop_assert_eq!(decode(c.bytes()), bits(&s));
        }
    }
}
