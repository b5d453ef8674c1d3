//! Samples: an `i64` millisecond timestamp and an `f64` value.

/// The bit pattern Prometheus uses to mark a series stale. It is a NaN, so it must be compared by bits:
/// every path (chunks, WAL, wire) preserves these exact bits.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (not merely any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub v: f64,
}

impl Sample {
    pub fn new(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }
}

/// Bitwise equality: two NaNs are equal when their bits are, so stale markers compare exactly.
impl PartialEq for Sample {
    fn eq(&self, other: &Sample) -> bool {
        self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

impl Eq for Sample {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(stale_nan().is_nan());
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
        assert_eq!(Sample::new(1, stale_nan()), Sample::new(1, stale_nan()));
        assert_ne!(Sample::new(1, stale_nan()), Sample::new(1, f64::NAN));
    }
}
