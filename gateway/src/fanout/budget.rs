//! The per-query budget: what a query fetched, counted against its limits as frames arrive.

use meridian_storeapi::limits::Limiter;

use super::*;

/// Counts what a query fetched against its limits (`--store.limits.request-*`).
pub(super) struct Budget {
    series: Limiter,
    samples: Limiter,
    bytes: Limiter,
}

const FETCHED: (&str, &str) = ("the query fetched", "from stores");

impl Budget {
    pub(super) fn new(limits: Limits) -> Budget {
        Budget {
            series: Limiter::new(
                limits.series,
                "series",
                FETCHED,
                "--store.limits.request-series",
            ),
            samples: Limiter::new(
                limits.samples,
                "samples",
                FETCHED,
                "--store.limits.request-samples, by default --query.max-samples",
            ),
            bytes: Limiter::new(
                limits.bytes,
                "bytes",
                FETCHED,
                "--store.limits.request-bytes",
            ),
        }
    }

    /// Counts one series frame: the series, its samples (from the chunks' headers) and its bytes.
    pub(super) fn charge(&self, s: &pb::Series) -> Result<()> {
        let mut bytes = s
            .labels
            .iter()
            .map(|l| (l.name.len() + l.value.len()) as u64)
            .sum::<u64>();
        let mut samples = 0u64;
        for c in &s.chunks {
            // The raw chunk, or a downsampled chunk's aggregates (each an XOR chunk).
            for part in [&c.raw, &c.count, &c.sum, &c.min, &c.max, &c.counter]
                .into_iter()
                .flatten()
            {
                bytes += part.data.len() as u64;
                // Every chunk encoding of Prometheus starts with its sample count, big-endian u16.
                if part.data.len() >= 2 {
                    samples += u64::from(u16::from_be_bytes([part.data[0], part.data[1]]));
                }
            }
        }
        self.series.reserve(1)?;
        self.samples.reserve(samples)?;
        self.bytes.reserve(bytes)
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("series", &self.series.used())
            .field("samples", &self.samples.used())
            .field("bytes", &self.bytes.used())
            .finish()
    }
}
