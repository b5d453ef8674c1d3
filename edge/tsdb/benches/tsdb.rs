//! TSDB benchmarks:
//! - `append/cached_ref`: 100k series, one sample each per iteration, through the cached-reference path
//!   in commits of 1,000 samples (a scrape-sized batch), WAL included (not synced).
//! - `block/select_decode`: select every series of a block of 10k series × 2 h at 15 s (4.8 M samples)
//!   and decode every sample.

#![allow(clippy::expect_used)]

use std::cell::Cell;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_core::chunkenc::XorIterator;
use meridian_core::{Labels, MatchType, Matcher, Sample};
use meridian_tsdb::block::{Block, write_block};
use meridian_tsdb::db::{Db, DbOptions};

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "container_cpu_usage_seconds_total".to_string()),
        ("cluster", "prod-eu-west-1".to_string()),
        ("container", format!("c-{}", i % 50)),
        ("cpu", "total".to_string()),
        ("image", "registry.example/app:1.2.3".to_string()),
        (
            "instance",
            format!("10.0.{}.{}:10250", i / 250 % 256, i % 250),
        ),
        ("job", "kubelet".to_string()),
        ("namespace", format!("ns-{}", i % 40)),
        ("pod", format!("pod-{i}")),
    ])
}

fn bench(c: &mut Criterion) {
    const SERIES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        dir.path(),
        DbOptions {
            retention_time: None,
            ..Default::default()
        },
    )
    .expect("db");
    let t = Cell::new(1_700_006_400_000i64);
    // Series are created by their first stored sample; their head references are stable from then on.
    let refs: Vec<u64> = {
        let mut app = db.appender();
        for i in 0..SERIES {
            app.add(&labels(i), t.get() - 15_000, 0.0).expect("append");
        }
        app.commit().expect("commit");
        let mut app = db.appender();
        (0..SERIES).map(|i| app.series_ref(&labels(i))).collect()
    };
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.sample_size(20);
    g.bench_function("cached_ref", |b| {
        b.iter(|| {
            let ts = t.get();
            for batch in refs.chunks(1000) {
                let mut app = db.appender();
                for (k, r) in batch.iter().enumerate() {
                    app.append(*r, ts, (ts / 1000) as f64 + k as f64)
                        .expect("append");
                }
                app.commit().expect("commit");
            }
            t.set(ts + 15_000);
        })
    });
    g.finish();
    eprintln!(
        "head after the append bench: {} series, {:.0} bytes/series (excluding nothing: labels and chunks included)",
        db.head_series(),
        db.head_memory_bytes() as f64 / db.head_series() as f64
    );
    drop(db);

    let bdir = tempfile::tempdir().expect("tempdir");
    let series: Vec<(Labels, Vec<Sample>)> = (0..10_000usize)
        .map(|i| {
            let s = (0..480)
                .map(|k: i64| {
                    Sample::new(
                        1_700_006_400_000 + k * 15_000 + (k % 3),
                        ((i as i64 * k) % 1000) as f64 / 8.0,
                    )
                })
                .collect();
            (labels(i), s)
        })
        .collect();
    let meta = write_block(
        bdir.path(),
        series,
        1_700_006_400_000,
        1_700_006_400_000 + 7_200_000,
    )
    .expect("block");
    let block = Block::open(&bdir.path().join(&meta.ulid)).expect("open");
    let all = [Matcher::new(
        MatchType::Equal,
        "__name__",
        "container_cpu_usage_seconds_total",
    )
    .expect("m")];
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Elements(meta.stats.num_samples));
    g.sample_size(10);
    g.bench_function("select_decode_10k_series_2h", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let mut acc = 0.0;
            for s in block.select(&all, i64::MIN, i64::MAX).expect("select") {
                for (_, _, data) in &s.chunks {
                    let mut it = XorIterator::new(data).expect("chunk");
                    while let Some((_, v)) = it.next_sample() {
                        acc += v;
                        n += 1;
                    }
                }
            }
            (n, acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
