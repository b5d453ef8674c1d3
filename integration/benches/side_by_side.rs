//! The side-by-side benchmark: Prometheus 2.42 and a Meridian federation (real processes: an HA pair of
//! `meridian-edge` and `meridian-gateway` over mutual TLS, found through DNS SRV) on the same data.
//!
//! Demo-shaped series (the PromQL compliance list's) are remote-written into both edges of the pair and
//! into a Prometheus 2.42 on loopback (`--web.enable-remote-write-receiver`). Measured:
//! - **remote-write ingest**: samples per second of the receiving process' CPU time (user + system,
//!   from `/proc`), the first edge against Prometheus;
//! - **memory per active series**: resident memory growth over the ingest divided by the series count;
//! - **bytes per sample on disk**: the first 2 h block of each (chunks + index over `numSamples` of
//!   `meta.json`);
//! - **PromQL latency**: every compliance query (variants expanded) as an instant query and as a range
//!   query, through the gateway's HTTP API (fan-out to both replicas over mTLS, deduplication) and
//!   through Prometheus' HTTP API; best of 3 each; geometric mean and worst of the ratios;
//! - **cached-query latency**: a range query repeated through the gateway (results cache) against
//!   Prometheus answering it.
//!
//! Run: `./integration/bench.sh` (this and the other side-by-side benchmarks) or `cargo bench -p
//! meridian-integration --bench side_by_side`; needs `prometheus` on PATH, the workspace's binaries
//! (`cargo build --release --bins`) and the compliance list at
//! `../shared/conformance/compliance/promql-test-queries.yml` (or `MERIDIAN_PROMQL_COMPLIANCE_QUERIES`).
//! Under `cargo test --all-targets`: a smoke run on 2 instances × 1 h with 4 queries, without the block
//! wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meridian_integration::bench::remote_write;
use meridian_integration::demo::{self, STEP, T0};
use meridian_integration::federation::{Federation, Options};
use meridian_testkit::{Prometheus, urlencode};

/// `(utime + stime)` of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The first block under `dir` (recursively) covering the first hour from `mint`: bytes per sample.
fn bytes_per_sample(dir: &std::path::Path, mint: i64) -> Option<f64> {
    fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "meta.json") {
                out.push(p);
            }
        }
    }
    let mut metas = vec![];
    walk(dir, &mut metas);
    for m in metas {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).ok()?).ok()?;
        // Prometheus' first block starts at the head's first sample, ours at the range boundary.
        let (lo, hi) = (v["minTime"].as_i64()?, v["maxTime"].as_i64()?);
        if !(lo <= mint + STEP && hi > mint + 3_600_000) {
            continue;
        }
        let block = m.parent()?;
        let mut bytes = std::fs::metadata(block.join("index")).ok()?.len();
        for c in std::fs::read_dir(block.join("chunks")).ok()?.flatten() {
            bytes += c.metadata().ok()?.len();
        }
        return Some(bytes as f64 / v["stats"]["numSamples"].as_f64()?);
    }
    None
}

/// Best of `n` wall times of a GET; `None` when an answer is not a success.
fn best_get(addr: &str, path: &str, n: usize) -> Option<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        let t = Instant::now();
        let r = meridian_testkit::http("GET", addr, path, &[], b"").ok()?;
        let took = t.elapsed();
        if r.status != 200 {
            return None;
        }
        best = best.min(took);
    }
    Some(best)
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let (instances, points) = if bench { (37, 960) } else { (2, 240) };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("prometheus")).unwrap();
    let Some(prom) = Prometheus::start(
        &dir.path().join("prometheus"),
        "global: {}\n",
        &["--web.enable-remote-write-receiver"],
    ) else {
        return;
    };
    let mut o = Options::new(bin_dir(), dir.path().join("federation"));
    o.gateway_http = "127.0.0.1:0".parse().unwrap();
    o.clusters = 1;
    o.scrape = false;
    o.log_level = "warn".into();
    let fed = Federation::start(o).await.unwrap();
    let series = demo::generate(instances, points);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    println!(
        "data: {} series × {points} points at {} s = {samples} samples; machine: {} cores",
        series.len(),
        STEP / 1000,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Ingest: the first edge, then its twin, then Prometheus; CPU and RSS around each.
    let edge_pid = fed.edges[0].proc.pid().unwrap();
    let (cpu0, rss0) = (
        cpu_seconds(edge_pid),
        meridian_testkit::rss_bytes(edge_pid) as f64,
    );
    let (addr0, addr1) = (fed.edges[0].http.to_string(), fed.edges[1].http.to_string());
    let s2 = series.clone();
    let wall = Instant::now();
    tokio::task::spawn_blocking(move || remote_write(&addr0, &s2, points))
        .await
        .unwrap();
    let edge_wall = wall.elapsed().as_secs_f64();
    let (cpu1, rss1) = (
        cpu_seconds(edge_pid),
        meridian_testkit::rss_bytes(edge_pid) as f64,
    );
    let s2 = series.clone();
    tokio::task::spawn_blocking(move || remote_write(&addr1, &s2, points))
        .await
        .unwrap();
    let p_cpu0 = prom.self_metric("process_cpu_seconds_total").unwrap();
    let p_rss0 = prom.self_metric("process_resident_memory_bytes").unwrap();
    let (paddr, s2) = (prom.addr.clone(), series.clone());
    let wall = Instant::now();
    tokio::task::spawn_blocking(move || remote_write(&paddr, &s2, points))
        .await
        .unwrap();
    let prom_wall = wall.elapsed().as_secs_f64();
    let p_cpu1 = prom.self_metric("process_cpu_seconds_total").unwrap();
    let p_rss1 = prom.self_metric("process_resident_memory_bytes").unwrap();
    let n = series.len() as f64;
    let s = samples as f64;
    println!("\n| measurement | Meridian edge | Prometheus 2.42 | ratio |\n|---|---|---|---|");
    let row = |what: &str, ours: f64, theirs: f64, unit: &str| {
        println!(
            "| {what} | {ours:.3e} {unit} | {theirs:.3e} {unit} | {:.2}× |",
            ours / theirs
        );
    };
    row(
        "remote-write ingest, samples/s per core of receiver CPU",
        s / (cpu1 - cpu0).max(0.01),
        s / (p_cpu1 - p_cpu0).max(0.01),
        "",
    );
    row(
        "remote-write ingest, samples/s wall (1 sender)",
        s / edge_wall,
        s / prom_wall,
        "",
    );
    row(
        "RSS growth per active series",
        (rss1 - rss0) / n,
        (p_rss1 - p_rss0) / n,
        "B",
    );

    // Bytes per sample of the first 2 h block (the edge's compaction runs every minute).
    if bench {
        let two_h = 7_200_000;
        let mint = T0.div_euclid(two_h) * two_h;
        let deadline = Instant::now() + Duration::from_secs(180);
        let (mut ours, mut theirs) = (None, None);
        while Instant::now() < deadline && (ours.is_none() || theirs.is_none()) {
            ours = ours.or_else(|| bytes_per_sample(&fed.bucket_dir, mint));
            theirs = theirs.or_else(|| bytes_per_sample(&prom.data, mint));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        match (ours, theirs) {
            (Some(a), Some(b)) => row("bytes per sample on disk, first 2 h block", a, b, "B"),
            _ => println!(
                "| bytes per sample on disk | {ours:?} | {theirs:?} | block not cut in 180 s |"
            ),
        }
    }

    // PromQL through the gateway (HTTP, fan-out over mTLS to both replicas, dedup) vs Prometheus.
    let end_s = (T0 + (points - 1) * STEP) / 1000;
    let queries: Vec<String> = if bench {
        let path = std::env::var("MERIDIAN_PROMQL_COMPLIANCE_QUERIES").map_or_else(
            |_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/conformance/compliance/promql-test-queries.yml")
            },
            PathBuf::from,
        );
        demo::compliance_queries(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
    } else {
        [
            "demo_num_cpus",
            "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))",
            "histogram_quantile(0.9, sum by (le) (rate(demo_api_request_duration_seconds_bucket[5m])))",
            "count_values(\"value\", demo_num_cpus)",
        ]
        .map(String::from)
        .to_vec()
    };
    let gw = fed.gateway_http.to_string();
    let mut ratios: Vec<(f64, String)> = Vec::new();
    let mut times: Vec<(f64, f64, bool)> = Vec::new();
    let mut failed = 0;
    for q in &queries {
        for (kind, params) in [
            ("instant", format!("time={}", end_s - 3600)),
            (
                "range",
                format!("start={}&end={end_s}&step=60", end_s - 7200),
            ),
        ] {
            let api = if kind == "instant" {
                "query"
            } else {
                "query_range"
            };
            let path = format!("/api/v1/{api}?query={}&{params}", urlencode(q));
            // A distinct query string per run would defeat the cache; range answers are cached by the
            // gateway, so the range comparison uses the uncached first answer only (n = 1) and instant
            // queries the best of 3.
            let n = if kind == "range" { 1 } else { 3 };
            let (g, p) = (gw.clone(), prom.addr.clone());
            let (pa, pb) = (path.clone(), path.clone());
            let ours = tokio::task::spawn_blocking(move || best_get(&g, &pa, n))
                .await
                .unwrap();
            let theirs = tokio::task::spawn_blocking(move || best_get(&p, &pb, n))
                .await
                .unwrap();
            match (ours, theirs) {
                (Some(a), Some(b)) => {
                    times.push((a.as_secs_f64(), b.as_secs_f64(), kind == "instant"));
                    ratios.push((
                        a.as_secs_f64() / b.as_secs_f64().max(1e-6),
                        format!("{kind} {q}"),
                    ));
                }
                _ => failed += 1,
            }
        }
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let geo = (ratios.iter().map(|r| r.0.ln()).sum::<f64>() / ratios.len().max(1) as f64).exp();
    let slower = ratios.iter().filter(|r| r.0 > 1.0).count();
    println!(
        "| PromQL latency through the gateway over mTLS / Prometheus ({} comparisons, {failed} not comparable) | geometric mean {geo:.3}× | {slower} slower than Prometheus | worst {:.2}× `{}` |",
        ratios.len(),
        ratios.last().map_or(0.0, |r| r.0),
        ratios.last().map_or("", |r| r.1.as_str())
    );

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0) * 1e3
    };
    let geo_of = |f: &dyn Fn(&(f64, f64, bool)) -> bool| {
        let r: Vec<f64> = times
            .iter()
            .filter(|t| f(t))
            .map(|t| (t.0 / t.1).ln())
            .collect();
        (
            (r.iter().sum::<f64>() / r.len().max(1) as f64).exp(),
            r.len(),
        )
    };
    let (gi, ni) = geo_of(&|t| t.2);
    let (gr, nr) = geo_of(&|t| !t.2);
    let (gh, nh) = geo_of(&|t| t.1 >= 0.010);
    println!(
        "| PromQL latency, medians | {:.2} ms | {:.2} ms | instant {gi:.3}× ({ni}), range {gr:.3}× ({nr}), where Prometheus takes ≥ 10 ms {gh:.3}× ({nh}) |",
        median(times.iter().map(|t| t.0).collect()),
        median(times.iter().map(|t| t.1).collect()),
    );

    // Cached range query.
    let q = "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))";
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={end_s}&step=60",
        urlencode(q),
        end_s - (points - 1) * STEP / 1000
    );
    let (g, p, pa, pb) = (gw.clone(), prom.addr.clone(), path.clone(), path.clone());
    let (cached, theirs) = tokio::task::spawn_blocking(move || {
        best_get(&g, &pa, 1).unwrap();
        (best_get(&g, &pa, 5).unwrap(), best_get(&p, &pb, 5).unwrap())
    })
    .await
    .unwrap();
    row(
        "cached range query (whole range, 60 s step), ms",
        cached.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3,
        "ms",
    );
    assert!(!ratios.is_empty(), "no query answered by both");
    fed.stop(|_| {}).await.unwrap();
}
