//! PromQL engine speed side by side with Prometheus 2.42 on the same data.
//!
//! ~10,000 demo-shaped series (370 instances) × 24 h at 15 s (57 M samples) go into Meridian's TSDB in
//! this process (appended, then cut into blocks: queries read through the block reader, the leaf
//! StoreAPI and the fan-out, no network) and by remote write into a Prometheus 2.42 on loopback. The
//! compliance query list (variants expanded) then runs on both as an instant query (1 h before the
//! end) and as a range query (the last 6 h at 60 s). Per query: the best of 3 wall times; Prometheus'
//! includes its HTTP API and JSON encoding, ours does not include any encoding. Prints every query's
//! ratio, the geometric mean and the worst.
//!
//! Run: `cargo bench -p meridian-integration --bench promql_vs_prometheus` (needs `prometheus` on PATH
//! and the compliance list at `../shared/conformance/compliance/promql-test-queries.yml` or
//! `MERIDIAN_PROMQL_COMPLIANCE_QUERIES`). Under `cargo test --all-targets`: a 3-instance, 1 h smoke run
//! of the engine alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The counting allocator below (peak memory per query) is the only unsafe code: it forwards to the
// system allocator.
#![allow(unsafe_code)]

use std::time::Instant;

use meridian_gateway::fanout::QueryOptions;
use meridian_gateway::promql::Engine;
use meridian_integration::bench::{best, load_tsdb, remote_write, tsdb_fanout};
use meridian_integration::demo::{STEP, T0, compliance_queries, generate};
use meridian_testkit::{Prometheus, http, urlencode};

/// The system allocator, counting live bytes and their peak (the peak memory of each query).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn grew(by: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are updated besides.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            if new >= layout.size() {
                grew(new - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new, std::sync::atomic::Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most heap it held at once beyond what was live before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (instances, points) = if bench { (370, 5_760) } else { (3, 240) };
    meridian_pki::install_crypto_provider();
    let series = generate(instances, points);
    let total: usize = series.iter().map(|s| s.samples.len()).sum();
    let end = T0 + (points - 1) * STEP;
    println!(
        "{} series, {total} samples, 15 s, {} h",
        series.len(),
        points * 15 / 3600
    );

    let dir = tempfile::tempdir().unwrap();
    let load = Instant::now();
    let db = load_tsdb(&dir.path().join("meridian"), &series);
    println!(
        "Meridian: loaded and cut into blocks in {:.1}s",
        load.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fanout = rt.block_on(tsdb_fanout(db));
    let engine = Engine::default();
    let querier = fanout.querier(QueryOptions::default());

    let list = std::env::var_os("MERIDIAN_PROMQL_COMPLIANCE_QUERIES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/compliance/promql-test-queries.yml")
        });
    let queries = match std::fs::read_to_string(&list) {
        Ok(t) => compliance_queries(&t),
        Err(_) => vec![
            "rate(demo_cpu_usage_seconds_total[5m])".to_string(),
            "sum by (instance) (demo_memory_usage_bytes)".to_string(),
            "histogram_quantile(0.9, rate(demo_api_request_duration_seconds_bucket[1m]))"
                .to_string(),
        ],
    };
    let instant_t = end - 3_600_000 + 500;
    let (rstart, rend) = (end - 6 * 3_600_000 + 500, end + 500);

    if !bench {
        // Smoke run: the engine answers every query over the block reader.
        for q in &queries {
            let _ = rt.block_on(engine.instant(&querier, q, instant_t));
        }
        println!("smoke: {} queries evaluated", queries.len());
        return;
    }

    let pdir = tempfile::tempdir().unwrap();
    let Some(prometheus) = Prometheus::start(
        pdir.path(),
        "global: {}\n",
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=100y",
        ],
    ) else {
        println!("prometheus not found; only Meridian loaded");
        return;
    };
    let load = Instant::now();
    remote_write(&prometheus.addr, &series, points);
    println!(
        "Prometheus: remote-written in {:.1}s",
        load.elapsed().as_secs_f64()
    );
    drop(series);

    let mut ratios = Vec::new();
    let mut by_kind: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut peaks: Vec<(usize, String)> = Vec::new();
    let mut worst: (f64, String) = (0.0, String::new());
    for q in &queries {
        for (kind, path, ours) in [
            (
                "instant",
                format!(
                    "/api/v1/query?query={}&time={}.{:03}",
                    urlencode(q),
                    instant_t / 1000,
                    instant_t % 1000
                ),
                true,
            ),
            (
                "range",
                format!(
                    "/api/v1/query_range?query={}&start={}.{:03}&end={}.{:03}&step=60",
                    urlencode(q),
                    rstart / 1000,
                    rstart % 1000,
                    rend / 1000,
                    rend % 1000
                ),
                false,
            ),
        ] {
            let p = best(3, || {
                http("GET", &prometheus.addr, &path, &[], b"").is_ok_and(|r| r.status == 200)
            });
            let run = || {
                rt.block_on(async {
                    if ours {
                        engine.instant(&querier, q, instant_t).await.is_ok()
                    } else {
                        engine
                            .range(&querier, q, rstart, rend, 60_000)
                            .await
                            .is_ok()
                    }
                })
            };
            let (_, peak) = peak_of(run);
            let m = best(3, run);
            let (Some(p), Some(m)) = (p, m) else { continue };
            let ratio = m.as_secs_f64() / p.as_secs_f64().max(1e-6);
            println!(
                "{kind:7} {:9.3} ms  Prometheus {:9.3} ms  {ratio:6.2}x  peak {:8.1} MB  {q}",
                m.as_secs_f64() * 1e3,
                p.as_secs_f64() * 1e3,
                peak as f64 / 1e6
            );
            by_kind.entry(kind).or_default().push(ratio);
            peaks.push((peak, format!("{kind} {q}")));
            if ratio > worst.0 {
                worst = (ratio, format!("{kind} {q}"));
            }
            ratios.push(ratio);
        }
    }
    let geo = |rs: &[f64]| (rs.iter().map(|r| r.ln()).sum::<f64>() / rs.len() as f64).exp();
    println!(
        "{} comparisons: geometric mean ours/Prometheus {:.3}x; worst {:.2}x ({})",
        ratios.len(),
        geo(&ratios),
        worst.0,
        worst.1
    );
    for (kind, rs) in &by_kind {
        println!(
            "{kind}: {} comparisons, geometric mean {:.3}x, {} slower than Prometheus, {} over 1.5x",
            rs.len(),
            geo(rs),
            rs.iter().filter(|r| **r > 1.0).count(),
            rs.iter().filter(|r| **r > 1.5).count()
        );
    }
    peaks.sort();
    if let (Some(max), Some(median)) = (peaks.last(), peaks.get(peaks.len() / 2)) {
        println!(
            "peak heap per query (ours): median {:.1} MB, largest {:.1} MB ({})",
            median.0 as f64 / 1e6,
            max.0 as f64 / 1e6,
            max.1
        );
        for (p, q) in peaks.iter().rev().take(5) {
            println!("  {:8.1} MB  {q}", *p as f64 / 1e6);
        }
    }
}
