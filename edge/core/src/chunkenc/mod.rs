//! Prometheus chunk encodings: XOR (float samples) and the native-histogram encodings (integer and
//! float histograms).

mod bstream;
mod float_histogram;
mod histogram;
mod xor;

pub use float_histogram::{FloatHistogramChunk, read_float_histograms};
pub use histogram::{CounterResetHeader, HistogramChunk, HistogramLayout, read_histograms};
pub use xor::{Layout, XorChunk, XorIterator};

/// Chunk encodings as numbered in Prometheus' `chunkenc.Encoding` (and in chunk segment files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    None = 0,
    Xor = 1,
    Histogram = 2,
    FloatHistogram = 3,
    /// Thanos' downsampled aggregates (`ChunkEncAggr`): count, sum, min, max and counter chunks in one.
    Aggr = 0xff,
}

impl Encoding {
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::None),
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::FloatHistogram),
            0xff => Some(Encoding::Aggr),
            _ => None,
        }
    }
}

/// Samples Prometheus puts in a chunk before cutting a new one.
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// A chunk's bytes are not a valid encoding.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk is shorter than its 2-byte header")]
    NoHeader,
    #[error("chunk data ends after {read} of {total} samples")]
    Truncated { read: u16, total: u16 },
    #[error("chunk already holds the maximum of 65535 samples")]
    Full,
    #[error("the sample needs a new chunk: {0}")]
    NeedsNewChunk(&'static str),
}
