//! Replica deduplication throughput: 2 replicas × N series × 2 h at 15 s (their own scrape phases, 1 %
//! missed scrapes, a 10-minute outage in one replica per 50 series), merged series by series on one core;
//! as gauges and as counters. Samples/s counts input samples (both replicas).
//!
//! Run: `cargo bench -p meridian-gateway --bench dedup` (10,000 series); under `cargo test --all-targets`
//! a 200-series smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use meridian_core::sample::Sample;
use meridian_gateway::dedup::{SeriesKind, dedup};

fn replica(series: usize, phase: i64, seed: u64, outage: bool) -> Vec<Sample> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(480);
    for k in 0..480i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(100) || (outage && (100..140).contains(&k)) {
            continue;
        }
        out.push(Sample::new(
            k * 15_000 + phase,
            (series as f64) * 10.0 + k as f64 * 3.0,
        ));
    }
    out
}

fn main() {
    let n = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        200
    };
    let data: Vec<(Vec<Sample>, Vec<Sample>)> = (0..n)
        .map(|i| {
            (
                replica(i, 1_000, i as u64 * 2 + 1, i.is_multiple_of(50)),
                replica(i, 8_500, i as u64 * 2 + 2, false),
            )
        })
        .collect();
    let input: usize = data.iter().map(|(a, b)| a.len() + b.len()).sum();
    for kind in [SeriesKind::Gauge, SeriesKind::Counter] {
        let mut best = f64::MAX;
        let mut merged = 0;
        for _ in 0..5 {
            let start = Instant::now();
            merged = 0;
            for (a, b) in &data {
                merged += std::hint::black_box(dedup(&[a, b], kind)).len();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "dedup {kind:?}: {n} series, {input} input samples -> {merged} merged in {best:.3}s (best of 5): {:.1} M input samples/s",
            input as f64 / best / 1e6
        );
    }
}
