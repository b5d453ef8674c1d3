//! Bucket store benchmarks (FILESYSTEM bucket, so the numbers are the store's own costs plus the page
//! cache, not a network's):
//! - **start-up**: `meridian-gateway store` on 10, 100 and 1,000 small blocks: time from spawn to
//!   `/-/ready` and resident memory before the first query;
//! - **history queries**: 1,000 series × 7 days at 15 s (40.3 M samples, seven 1-day blocks) through the
//!   fan-out and the PromQL engine, cold (a fresh store: index-headers, postings, series and chunks all
//!   read from the bucket) and warm (the same query again), with the bytes and requests each needed.
//!
//! Run: `cargo bench -p meridian-gateway --bench bucket`; under `cargo test --all-targets` a small
//! smoke run (20 series × 1 day) that also checks the answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::fanout::QueryOptions;
use meridian_gateway::promql::{Engine, EngineOptions, QueryValue};
use meridian_tsdb::block::write_block;
use meridian_tsdb::shipper::upload_block_dir;
use support::{STEP, T0, fanout_over, fs_bucket, many_blocks, rss_bytes, spawn_store};

const DAY: i64 = 24 * 3_600_000;

fn start_up(counts: &[i64], rt: &tokio::runtime::Runtime) {
    println!("| blocks | ready | RSS before the first query |");
    println!("|---|---|---|");
    for &n in counts {
        let root = tempfile::tempdir().unwrap();
        rt.block_on(many_blocks(root.path(), n));
        let (child, _, _, ready) = spawn_store(root.path(), env!("CARGO_BIN_EXE_meridian-gateway"));
        let rss = rss_bytes(child.pid());
        println!(
            "| {n} | {:.0} ms | {:.1} MiB |",
            ready.as_secs_f64() * 1e3,
            rss as f64 / f64::from(1 << 20)
        );
    }
}

/// `series` counters over `days` days at 15 s, one block per day, uploaded to a bucket in `root`.
async fn history(
    root: &std::path::Path,
    series: usize,
    days: i64,
) -> meridian_tsdb::objstore::Bucket {
    let local = root.join("blocks");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    let bucket = fs_bucket(&root.join("bucket"));
    let ext = Labels::from_pairs([("cluster", "a")]);
    for d in 0..days {
        let start = T0 + d * DAY;
        let data: Vec<(Labels, Vec<Sample>)> = (0..series)
            .map(|i| {
                let labels = Labels::from_pairs([
                    ("__name__", "bench_requests_total"),
                    ("instance", &format!("i{i:04}")),
                    ("job", "bench"),
                ]);
                let mut x = (i as u64 + 1) * 0x9E37_79B9;
                let samples = (0..DAY / STEP)
                    .map(|k| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let t = start + k * STEP;
                        Sample::new(t, ((t - T0) / STEP) as f64 * 2.0 + (x % 4) as f64)
                    })
                    .collect();
                (labels, samples)
            })
            .collect();
        let meta = write_block(&local, data, start, start + DAY).unwrap();
        upload_block_dir(&bucket, &local.join(&meta.ulid), &ext, "bench")
            .await
            .unwrap();
        std::fs::remove_dir_all(local.join(&meta.ulid)).unwrap();
    }
    bucket
}

async fn queries(series: usize, days: i64, runs: usize) {
    let root = tempfile::tempdir().unwrap();
    let bucket = history(root.path(), series, days).await;
    let end = T0 + days * DAY - STEP;
    let engine = Engine::new(EngineOptions {
        max_samples: usize::MAX,
        ..Default::default()
    });
    let cases: [(&str, &str, bool); 3] = [
        (
            "sum(rate(bench_requests_total[5m])), range, step 1h",
            "sum(rate(bench_requests_total[5m]))",
            true,
        ),
        (
            "count_over_time(bench_requests_total[7d]), instant",
            "count_over_time(bench_requests_total[7d])",
            false,
        ),
        (
            "bench_requests_total{instance=\"i0007\"}, range, step 5m",
            "bench_requests_total{instance=\"i0007\"}",
            true,
        ),
    ];
    println!(
        "| query ({series} series × {days} d) | cold | warm | samples | bytes read (cold) | bytes/sample | requests (cold) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, q, ranged) in cases {
        let (mut cold, mut warm) = (Duration::MAX, Duration::MAX);
        let (mut bytes, mut requests, mut samples) = (0, 0, 0);
        for _ in 0..runs {
            let store = Arc::new(BucketStore::new(
                bucket.clone(),
                BucketStoreOptions::default(),
            ));
            store.sync().await.unwrap();
            let fanout = fanout_over(store.clone()).await;
            let run = || async {
                let qr = fanout.querier(QueryOptions::default());
                let t = Instant::now();
                let r = if ranged {
                    let step = if q.contains("i0007") {
                        300_000
                    } else {
                        3_600_000
                    };
                    engine.range(&qr, q, T0 + 600_000, end, step).await
                } else {
                    engine.instant(&qr, q, end).await
                }
                .unwrap();
                (t.elapsed(), r)
            };
            let (before_b, before_r) = (
                store.metrics().fetched_total(),
                store.metrics().requests_total(),
            );
            let (c, r) = run().await;
            bytes = store.metrics().fetched_total() - before_b;
            requests = store.metrics().requests_total() - before_r;
            samples = r.samples;
            if q.starts_with("count_over_time") {
                let QueryValue::Vector(v) = &r.value else {
                    panic!("vector expected")
                };
                assert_eq!(v.len(), series);
                assert!(
                    v.iter().all(|s| s.v == (days * DAY / STEP) as f64),
                    "every sample once"
                );
            }
            let (w, _) = run().await;
            cold = cold.min(c);
            warm = warm.min(w);
        }
        println!(
            "| `{name}` | {:.1} ms | {:.1} ms | {samples} | {:.1} MB | {:.2} | {requests} |",
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            bytes as f64 / 1e6,
            bytes as f64 / samples.max(1) as f64,
        );
    }
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if bench {
        start_up(&[10, 100, 1000], &rt);
        rt.block_on(queries(1000, 7, 3));
    } else {
        start_up(&[10], &rt);
        rt.block_on(queries(20, 1, 1));
    }
}
