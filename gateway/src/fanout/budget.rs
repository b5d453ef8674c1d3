//! The per-query budget: what a query fetched, counted against its limits as frames arrive.

use super::*;

/// Counts what a query fetched against its limits.
pub(super) struct Budget {
    pub(super) limits: Limits,
    pub(super) series: AtomicU64,
    pub(super) samples: AtomicU64,
    pub(super) bytes: AtomicU64,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            series: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub(super) fn charge(&self, s: &pb::Series) -> Result<()> {
        let mut bytes = s
            .labels
            .iter()
            .map(|l| (l.name.len() + l.value.len()) as u64)
            .sum::<u64>();
        let mut samples = 0u64;
        for c in &s.chunks {
            if let Some(raw) = &c.raw {
                bytes += raw.data.len() as u64;
                // Every chunk encoding of Prometheus starts with its sample count, big-endian u16.
                if raw.data.len() >= 2 {
                    samples += u64::from(u16::from_be_bytes([raw.data[0], raw.data[1]]));
                }
            }
        }
        let check = |counter: &AtomicU64, add: u64, limit: u64, what: &str, flag: &str| {
            let total = counter.fetch_add(add, AtomicOrdering::Relaxed) + add;
            if limit > 0 && total > limit {
                Err(Error::limit(format!(
                    "the query fetched more than {limit} {what} from stores (limit {flag}); \
                     narrow the selectors or the time range"
                )))
            } else {
                Ok(())
            }
        };
        check(
            &self.series,
            1,
            self.limits.series,
            "series",
            "--store.limits.request-series",
        )?;
        check(
            &self.samples,
            samples,
            self.limits.samples,
            "samples",
            "--store.limits.request-samples, by default --query.max-samples",
        )?;
        check(
            &self.bytes,
            bytes,
            self.limits.bytes,
            "bytes",
            "--store.limits.request-bytes",
        )
    }
}
