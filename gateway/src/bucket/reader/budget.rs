//! What one request may fetch from the bucket (`--store.grpc.*-limit`), counted across its blocks.

use meridian_core::error::Result;
use meridian_storeapi::limits::Limiter;

/// What one request may fetch (`--store.grpc.*-limit`), counted across its blocks.
#[derive(Debug)]
pub struct Budget {
    series: Limiter,
    samples: Limiter,
    bytes: Limiter,
}

const TOUCHED: (&str, &str) = ("the request touched", "in the bucket");

impl Budget {
    pub fn new(limits: crate::bucket::BucketLimits) -> Budget {
        Budget {
            series: Limiter::new(
                limits.series,
                "series",
                TOUCHED,
                "--store.grpc.touched-series-limit",
            ),
            samples: Limiter::new(
                limits.samples,
                "samples",
                TOUCHED,
                "--store.grpc.series-sample-limit",
            ),
            bytes: Limiter::new(
                limits.bytes,
                "bytes",
                TOUCHED,
                "--store.grpc.downloaded-bytes-limit",
            ),
        }
    }

    pub(super) fn series(&self, n: usize) -> Result<()> {
        self.series.reserve(n as u64)
    }

    pub(super) fn samples(&self, n: u64) -> Result<()> {
        self.samples.reserve(n)
    }

    pub(super) fn bytes(&self, n: u64) -> Result<()> {
        self.bytes.reserve(n)
    }
}
