//! JSON encoding throughput of large range-query answers: N series × 1,440 points (24 h at 60 s), a
//! realistic mix of labels (5 per series) and values (counters, fractional gauges, a few NaN/Inf),
//! encoded exactly as Prometheus writes them ([`meridian_gateway::api::json::matrix`]) on one core.
//! Reports series/s, points/s and MB/s of output (best of 5).
//!
//! Run: `cargo bench -p meridian-gateway --bench json` (10,000 series); under `cargo test --all-targets`
//! a 100-series smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use meridian_core::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::api::json;
use meridian_gateway::queryable::SeriesData;

fn main() {
    let n = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    };
    let t0 = 1_700_000_000_000i64;
    let series: Vec<SeriesData> = (0..n)
        .map(|i| {
            let instance = format!("10.1.{}.{}:9100", i / 250, i % 250);
            let name = [
                "node_cpu_seconds_total",
                "node_memory_bytes",
                "http_requests_total",
            ][i % 3];
            SeriesData {
                labels: Labels::from_pairs([
                    ("__name__", name),
                    ("cluster", "eu-west-1"),
                    ("instance", instance.as_str()),
                    ("job", "node"),
                    ("mode", if i % 2 == 0 { "idle" } else { "user" }),
                ]),
                samples: (0..1_440i64)
                    .map(|k| {
                        let v = match i % 4 {
                            0 => (k * 17 + i as i64) as f64,
                            1 => (k as f64).sin() * 1e9 / 7.0,
                            2 => 0.001 * k as f64 + 1e-9,
                            _ if k % 500 == 0 => f64::NAN,
                            _ => k as f64 / 3.0,
                        };
                        Sample {
                            t: t0 + k * 60_000 + 500,
                            v,
                        }
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    let points = n * 1_440;
    let mut best = Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut out = Vec::with_capacity(size);
        json::matrix(&mut out, &series);
        best = best.min(start.elapsed());
        size = out.len();
        // The output is JSON.
        if n <= 100 {
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v.as_array().unwrap().len(), n);
        }
    }
    let s = best.as_secs_f64();
    println!(
        "{n} series x 1440 points: {:.1} ms, {:.0} series/s, {:.1} M points/s, {:.0} MB/s ({:.1} MB)",
        s * 1000.0,
        n as f64 / s,
        points as f64 / s / 1e6,
        size as f64 / s / 1e6,
        size as f64 / 1e6
    );
}
