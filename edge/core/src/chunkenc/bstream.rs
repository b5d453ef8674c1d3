//! Bit streams for the XOR encoding: most significant bit first, as Prometheus' `bstream`.

/// Appends bits to a byte vector whose last byte may be partly used.
///
/// Invariant: the unused low bits of the last byte are zero, so the vector is always the exact byte
/// encoding Prometheus would produce for the same bits.
///
/// Prometheus 2.x's `writeByte` always appended a fresh byte, so a write of whole bytes that ends on a
/// byte boundary leaves an empty last byte; Prometheus 3.0 (prometheus#14854) stopped doing that. With
/// `legacy_trailing_byte` the writer reproduces the 2.x bytes (`free == 8` is that empty byte).
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    pub(crate) buf: Vec<u8>,
    /// Unused bits in the last byte (0..=7; 8 only for the 2.x empty trailing byte).
    pub(crate) free: u32,
    pub(crate) legacy_trailing_byte: bool,
}

impl BitWriter {
    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit && let Some(last) = self.buf.last_mut() {
            *last |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v` (n <= 64), most significant first.
    #[inline]
    pub(crate) fn write_bits(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        self.write_bits_compact(v, n);
        if self.legacy_trailing_byte && n.is_multiple_of(8) && self.free == 0 {
            // Whole bytes that end on a byte boundary: 2.x's writeByte leaves an empty byte after them.
            self.buf.push(0);
            self.free = 8;
        }
    }

    #[inline]
    fn write_bits_compact(&mut self, v: u64, n: u32) {
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let free = self.free;
        if n <= free {
            if let Some(last) = self.buf.last_mut() {
                *last |= (v << (free - n)) as u8;
            }
            self.free = free - n;
            return;
        }
        // Top `free` bits of `v` complete the last byte; the other `rest` bits go into new bytes,
        // left-aligned.
        let rest = n - free;
        if free > 0
            && let Some(last) = self.buf.last_mut()
        {
            *last |= (v >> rest) as u8;
        }
        let aligned = if rest == 64 { v } else { v << (64 - rest) };
        let nbytes = rest.div_ceil(8);
        self.buf
            .extend_from_slice(&aligned.to_be_bytes()[..nbytes as usize]);
        self.free = nbytes * 8 - rest;
    }

    /// Number of bits written.
    #[cfg(test)]
    pub(crate) fn bit_len(&self) -> usize {
        self.buf.len() * 8 - self.free as usize
    }
}

/// Reads bits from a byte slice with a 64-bit buffer refilled a word at a time.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load.
    pos: usize,
    /// Loaded bits, left-aligned. Bits below the `valid` ones are either zero or already equal to the
    /// stream's next bits (the word-wise refill loads a few bits early; ORing them again is harmless).
    buf: u64,
    valid: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            valid: 0,
        }
    }

    /// Bits consumed so far.
    pub(crate) fn bit_pos(&self) -> usize {
        self.pos * 8 - self.valid as usize
    }

    #[inline]
    fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let w = u64::from_be_bytes(w);
            // valid <= 56 here (callers refill only when short of bits), so at least one byte fits.
            self.buf |= w >> self.valid;
            let nbytes = (64 - self.valid) / 8;
            self.pos += nbytes as usize;
            self.valid += nbytes * 8;
        } else {
            while self.valid <= 56 && self.pos < self.data.len() {
                self.buf |= u64::from(self.data[self.pos]) << (56 - self.valid);
                self.pos += 1;
                self.valid += 8;
            }
        }
    }

    /// Bits loaded and not consumed.
    #[inline(always)]
    pub(crate) fn available(&self) -> u32 {
        self.valid
    }

    /// Makes at least `n` (<= 57) bits available; false at the end of the data.
    #[inline(always)]
    pub(crate) fn ensure(&mut self, n: u32) -> bool {
        if self.valid < n {
            self.refill();
        }
        self.valid >= n
    }

    /// The next `n` bits (1..=63) without consuming them; only after `ensure(n)`.
    #[inline(always)]
    pub(crate) fn peek(&self, n: u32) -> u64 {
        self.buf >> (64 - n)
    }

    /// The raw 64-bit window (the next bits, left-aligned; only `ensure`d bits are meaningful).
    #[inline(always)]
    pub(crate) fn window(&self) -> u64 {
        self.buf
    }

    /// Drops `n` (< 64) bits; only after `ensure(n)`.
    #[inline(always)]
    pub(crate) fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.valid -= n;
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        if self.valid == 0 {
            self.refill();
            if self.valid == 0 {
                return None;
            }
        }
        let bit = self.buf >> 63 == 1;
        self.buf <<= 1;
        self.valid -= 1;
        Some(bit)
    }

    /// Reads `n` bits (n <= 64) as the low bits of the result.
    #[inline]
    pub(crate) fn read_bits(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let hi = self.read_bits(n - 32)?;
            let lo = self.read_bits(32)?;
            return Some((hi << 32) | lo);
        }
        if self.valid < n {
            self.refill();
            if self.valid < n {
                return None;
            }
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.valid -= n;
        Some(v)
    }

    pub(crate) fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }
}

/// Reads a Go `binary.Uvarint` from the bit stream.
pub(crate) fn read_uvarint(r: &mut BitReader<'_>) -> Option<u64> {
    let mut x: u64 = 0;
    let mut s = 0u32;
    for i in 0..10 {
        let b = r.read_byte()?;
        if b < 0x80 {
            if i == 9 && b > 1 {
                return None;
            }
            return Some(x | (u64::from(b) << s));
        }
        x |= u64::from(b & 0x7f) << s;
        s += 7;
    }
    None
}

/// Reads a Go `binary.Varint` (zig-zag) from the bit stream.
pub(crate) fn read_varint(r: &mut BitReader<'_>) -> Option<i64> {
    let ux = read_uvarint(r)?;
    Some(zigzag_decode(ux))
}

pub(crate) fn zigzag_decode(ux: u64) -> i64 {
    let x = (ux >> 1) as i64;
    if ux & 1 != 0 { !x } else { x }
}

pub(crate) fn zigzag_encode(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Appends a Go `binary.PutUvarint` encoding.
pub(crate) fn put_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_bits((x as u8 | 0x80).into(), 8);
        x >>= 7;
    }
    w.write_bits(x, 8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(fields in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..200), legacy in any::<bool>()) {
            let mut w = BitWriter { legacy_trailing_byte: legacy, ..BitWriter::default() };
            for &(v, n) in &fields {
                if n == 1 { w.write_bit(v & 1 == 1) } else { w.write_bits(v, n) }
            }
            let total: u32 = fields.iter().map(|f| f.1).sum();
            prop_assert_eq!(w.bit_len(), total as usize);
            let mut r = BitReader::new(&w.buf);
            for &(v, n) in &fields {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                let got = if n == 1 { u64::from(r.read_bit().unwrap()) } else { r.read_bits(n).unwrap() };
                prop_assert_eq!(got, v & mask);
            }
            prop_assert_eq!(r.bit_pos(), total as usize);
            // The padding of the last byte is zero.
            if let Some(last) = w.buf.last() {
                prop_assert_eq!(last & ((1u16 << w.free) - 1) as u8, 0);
            }
        }

        #[test]
        fn varints(x in any::<i64>(), u in any::<u64>()) {
            let mut w = BitWriter::default();
            w.write_bits(5, 3); // misalign on purpose
            put_uvarint(&mut w, zigzag_encode(x));
            put_uvarint(&mut w, u);
            let mut r = BitReader::new(&w.buf);
            r.read_bits(3).unwrap();
            prop_assert_eq!(read_varint(&mut r), Some(x));
            prop_assert_eq!(read_uvarint(&mut r), Some(u));
        }
    }
}
