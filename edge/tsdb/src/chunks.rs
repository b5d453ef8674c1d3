//! Chunk segment files (`<block>/chunks/000001`, ...), Prometheus' `tsdb/chunks` format:
//!
//! ```text
//! header:  magic 0x85BD40DD (u32 BE) | version 1 (u8) | 3 bytes padding
//! chunk:   len(data) uvarint | encoding (u8) | data | CRC32-Castagnoli(encoding, data) (u32 BE)
//! ```
//!
//! A chunk reference in the index is `segment_index << 32 | byte_offset`.

use std::path::Path;

use meridian_core::chunkenc::Encoding;

pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
pub const CHUNKS_FORMAT_V1: u8 = 1;
pub const SEGMENT_HEADER_SIZE: usize = 8;

/// A segment file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("reading chunk segment {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("chunk segment is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("chunk segment has magic {found:#010x}, want {MAGIC_CHUNKS:#010x}")]
    BadMagic { found: u32 },
    #[error("chunk segment has format version {0}, only 1 is supported")]
    BadVersion(u8),
    #[error("chunk at offset {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
    #[error("chunk at offset {offset}: checksum {found:#010x}, computed {computed:#010x}")]
    Checksum {
        offset: usize,
        found: u32,
        computed: u32,
    },
}

/// One chunk as stored in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawChunk<'a> {
    /// Byte offset of the chunk's length field in the segment.
    pub offset: usize,
    pub encoding: Encoding,
    pub data: &'a [u8],
}

/// A chunk segment held in memory.
#[derive(Debug)]
pub struct Segment {
    bytes: super::mmap::FileBytes,
}

impl Segment {
    /// Reads and checks the header of a segment file.
    pub fn open(path: &Path) -> Result<Segment, SegmentError> {
        let bytes = super::mmap::FileBytes::map(path).map_err(|source| SegmentError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Segment::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: impl Into<super::mmap::FileBytes>) -> Result<Segment, SegmentError> {
        let bytes: super::mmap::FileBytes = bytes.into();
        if bytes.len() < SEGMENT_HEADER_SIZE {
            return Err(SegmentError::TooShort(bytes.len()));
        }
        let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != MAGIC_CHUNKS {
            return Err(SegmentError::BadMagic { found: magic });
        }
        if bytes[4] != CHUNKS_FORMAT_V1 {
            return Err(SegmentError::BadVersion(bytes[4]));
        }
        Ok(Segment { bytes })
    }

    /// The chunk starting at `offset` (the low 32 bits of a chunk reference), checksum verified.
    pub fn chunk_at(&self, offset: usize) -> Result<RawChunk<'_>, SegmentError> {
        parse_chunk_record(self.bytes.get(offset..).unwrap_or_default(), offset)
    }

    /// Every chunk, in file order.
    pub fn chunks(&self) -> impl Iterator<Item = Result<RawChunk<'_>, SegmentError>> + '_ {
        let mut off = SEGMENT_HEADER_SIZE;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || off >= self.bytes.len() {
                return None;
            }
            match self.chunk_at(off) {
                Ok(c) => {
                    off =
                        c.data.as_ptr() as usize - self.bytes.as_ptr() as usize + c.data.len() + 4;
                    Some(Ok(c))
                }
                Err(e) => {
                    failed = true;
                    Some(Err(e))
                }
            }
        })
    }
}

/// The length of the chunk record at the start of `b` (length field, encoding, data and checksum);
/// `None` when `b` is too short to hold the length field.
pub fn chunk_record_len(b: &[u8]) -> Option<usize> {
    let (len, n) = uvarint(b)?;
    usize::try_from(len).ok()?.checked_add(n + 1 + 4)
}

/// Parses the chunk record at the start of `b`, found at byte `offset` of its segment; checksum verified.
pub fn parse_chunk_record(b: &[u8], offset: usize) -> Result<RawChunk<'_>, SegmentError> {
    let corrupt = |reason: &str| SegmentError::Corrupt {
        offset,
        reason: reason.to_owned(),
    };
    if b.is_empty() {
        return Err(corrupt("offset beyond the end of the segment"));
    }
    let (len, n) = uvarint(b).ok_or_else(|| corrupt("bad length varint"))?;
    let len = usize::try_from(len).map_err(|_| corrupt("length overflows"))?;
    let body = b
        .get(n..n.saturating_add(len).saturating_add(5))
        .ok_or_else(|| corrupt("chunk runs past the end of the segment"))?;
    let encoding = Encoding::from_u8(body[0]).ok_or_else(|| corrupt("unknown chunk encoding"))?;
    let data = &body[1..1 + len];
    let found = u32::from_be_bytes([body[1 + len], body[2 + len], body[3 + len], body[4 + len]]);
    let computed = crc32c::crc32c(&body[..1 + len]);
    if found != computed {
        return Err(SegmentError::Checksum {
            offset,
            found,
            computed,
        });
    }
    Ok(RawChunk {
        offset,
        encoding,
        data,
    })
}

/// Go `binary.Uvarint` over bytes: the value and the bytes it took.
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    let mut s = 0u32;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if byte < 0x80 {
            if i == 9 && byte > 1 {
                return None;
            }
            return Some((x | (u64::from(byte) << s), i + 1));
        }
        x |= u64::from(byte & 0x7f) << s;
        s += 7;
    }
    None
}

/// Appends a segment's chunk record (the writer side, used by tests now and by block writing later).
/// Appends one chunk record; `encoding` is the byte stored (an [`Encoding`], or Thanos' `0xff`).
pub fn write_chunk_record(out: &mut Vec<u8>, encoding: u8, data: &[u8]) {
    let mut len = data.len() as u64;
    while len >= 0x80 {
        out.push(len as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    let start = out.len();
    out.push(encoding);
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A segment header.
pub fn segment_header() -> [u8; SEGMENT_HEADER_SIZE] {
    let m = MAGIC_CHUNKS.to_be_bytes();
    [m[0], m[1], m[2], m[3], CHUNKS_FORMAT_V1, 0, 0, 0]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meridian_core::chunkenc::XorChunk;

    #[test]
    fn roundtrip_and_corruption() {
        let mut bytes = segment_header().to_vec();
        let mut chunks = vec![];
        for n in [1, 120, 300] {
            let mut c = XorChunk::new();
            for i in 0..n {
                c.append(i * 1000, i as f64).unwrap();
            }
            write_chunk_record(&mut bytes, Encoding::Xor as u8, c.bytes());
            chunks.push(c.into_bytes());
        }
        let seg = Segment::from_bytes(bytes.clone()).unwrap();
        let got: Vec<Vec<u8>> = seg.chunks().map(|c| c.unwrap().data.to_vec()).collect();
        assert_eq!(got, chunks);

        let mut bad = bytes.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        let seg = Segment::from_bytes(bad).unwrap();
        let errs: Vec<_> = seg.chunks().filter_map(Result::err).collect();
        assert!(
            matches!(errs[..], [SegmentError::Checksum { .. }]),
            "{errs:?}"
        );

        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 2);
        let seg = Segment::from_bytes(truncated).unwrap();
        assert!(seg.chunks().any(|c| c.is_err()));
        assert!(matches!(
            Segment::from_bytes(vec![0; 8]),
            Err(SegmentError::BadMagic { found: 0 })
        ));
    }
}
