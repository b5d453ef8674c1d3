//! XOR chunk encode/decode throughput on 120-sample chunks of realistic data.
//!
//! Three shapes: a gauge with noise (3 decimals, like CPU or latency gauges), a counter (integer
//! increments), a constant (like `up`). Timestamps are 15 s apart with a few ms of scrape jitter.

#![allow(clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meridian_core::chunkenc::{XorChunk, XorIterator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHUNKS: usize = 1000;
const PER_CHUNK: usize = 120;

fn data(kind: &str) -> Vec<Vec<(i64, f64)>> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..CHUNKS)
        .map(|c| {
            let mut t = 1_700_000_000_000 + c as i64 * 1_800_000;
            let mut counter = rng.random_range(0.0..1e6f64).floor();
            (0..PER_CHUNK)
                .map(|_| {
                    t += 15_000 + rng.random_range(-3..=3);
                    let v = match kind {
                        "gauge" => {
                            (50_000.0 + rng.random_range(-5_000.0..5_000.0f64)).round() / 1000.0
                        }
                        "counter" => {
                            counter += f64::from(rng.random_range(0..100u32));
                            counter
                        }
                        _ => 1.0,
                    };
                    (t, v)
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xor");
    g.throughput(Throughput::Elements((CHUNKS * PER_CHUNK) as u64));
    for kind in ["gauge", "counter", "constant"] {
        let samples = data(kind);
        let chunks: Vec<Vec<u8>> = samples
            .iter()
            .map(|s| {
                let mut c = XorChunk::new();
                for &(t, v) in s {
                    c.append(t, v).expect("append");
                }
                c.into_bytes()
            })
            .collect();
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        eprintln!(
            "{kind}: {:.2} bytes/sample",
            bytes as f64 / (CHUNKS * PER_CHUNK) as f64
        );
        g.bench_with_input(BenchmarkId::new("encode", kind), &samples, |b, samples| {
            b.iter(|| {
                let mut total = 0;
                for s in samples {
                    let mut c = XorChunk::with_layout(Default::default(), 256);
                    for &(t, v) in s {
                        c.append(t, v).expect("append");
                    }
                    total += c.bytes().len();
                }
                total
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", kind), &chunks, |b, chunks| {
            b.iter(|| {
                let mut acc = 0.0;
                let mut ts = 0i64;
                for c in chunks {
                    let mut it = XorIterator::new(c).expect("header");
                    while let Some((t, v)) = it.next_sample() {
                        ts ^= t;
                        acc += v;
                    }
                }
                (ts, acc)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
