//! Native histograms as remote write 1.0 messages, for the tests that send them.

use meridian_storeapi::proto::prometheus as prom;

/// Bucket spans from `(offset, length)` pairs.
pub fn spans(v: &[(i32, u32)]) -> Vec<prom::BucketSpan> {
    v.iter()
        .map(|&(offset, length)| prom::BucketSpan { offset, length })
        .collect()
}

/// The spatial deltas (first bucket absolute, then differences) of absolute bucket counts.
pub fn deltas(abs: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    abs.iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect()
}
