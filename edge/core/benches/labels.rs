//! Label set costs for 10-label sets: compare (equal and differing in the last value), hash-map lookup,
//! construction.

#![allow(clippy::expect_used)]

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_core::Labels;

fn set(last: &str) -> Labels {
    Labels::from_pairs([
        ("__name__", "container_cpu_usage_seconds_total"),
        ("cluster", "prod-eu-west-1"),
        ("container", "api-server"),
        ("cpu", "total"),
        ("id", "/kubepods/burstable/pod1234/abcd"),
        ("image", "registry.example/api:1.2.3"),
        ("instance", "10.0.12.34:10250"),
        ("job", "kubelet"),
        ("namespace", "payments"),
        ("pod", last),
    ])
}

fn bench(c: &mut Criterion) {
    let a = set("api-7d9f8b6c5d-x2x4k");
    let a2 = set("api-7d9f8b6c5d-x2x4k");
    let b = set("api-7d9f8b6c5d-zzzzz");
    let mut g = c.benchmark_group("labels10");
    g.bench_function("eq_equal", |bn| {
        bn.iter(|| std::hint::black_box(&a) == std::hint::black_box(&a2))
    });
    g.bench_function("eq_differ_last", |bn| {
        bn.iter(|| std::hint::black_box(&a) == std::hint::black_box(&b))
    });
    g.bench_function("cmp_equal", |bn| {
        bn.iter(|| std::hint::black_box(&a).cmp(std::hint::black_box(&a2)))
    });
    g.bench_function("cmp_differ_last", |bn| {
        bn.iter(|| std::hint::black_box(&a).cmp(std::hint::black_box(&b)))
    });
    g.bench_function("hash_value", |bn| {
        bn.iter(|| std::hint::black_box(&a).hash_value())
    });
    let map: HashMap<Labels, u64> = (0..10_000).map(|i| (set(&format!("pod-{i}")), i)).collect();
    let probe = set("pod-4242");
    g.bench_function("hashmap_lookup_10k", |bn| {
        bn.iter(|| map.get(std::hint::black_box(&probe)))
    });
    g.bench_function("build_from_pairs", |bn| {
        bn.iter(|| set(std::hint::black_box("api-7d9f8b6c5d-x2x4k")))
    });
    g.bench_function("get_label", |bn| {
        bn.iter(|| std::hint::black_box(&a).get("namespace"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
