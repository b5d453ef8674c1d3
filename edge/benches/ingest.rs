//! Ingestion benchmarks of the `meridian-edge` process, with Prometheus 2.42 side by side where it applies.
//! CPU is the server process' own user+system time (from `/proc/<pid>/stat`), RSS its `VmRSS`.
//!
//! - `remote_write`: the same snappy `WriteRequest` payloads (1,000 series × 5 samples each, time-ordered)
//!   POSTed by 4 client threads to the edge's `/api/v1/write` and to Prometheus 2.42 started with
//!   `--web.enable-remote-write-receiver`; samples per second of server CPU, and wall-clock rate.
//! - `scrape`: one edge scraping 1,000 targets × 1,000 series every 15 s (targets served by this process
//!   on 1,000 loopback ports, values changing every scrape); CPU cores used and RSS per series after
//!   warm-up, over 4 intervals.
//!
//! Run: `cargo bench -p meridian-edge --bench ingest [-- remote_write|scrape]` (release profile).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_storeapi::proto::prometheus as pb;
use meridian_testkit::{ChildGuard, Prometheus, free_port, http, wait_for};

fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn start_edge(dir: &std::path::Path, config: &str) -> (ChildGuard, String) {
    let cfg = dir.join("edge.yml");
    std::fs::write(&cfg, config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_meridian-edge"))
        .arg("run")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--tsdb.path={}", dir.join("edge-data").display()))
        .arg(format!("--http-address={addr}"))
        .arg("--grpc-address=127.0.0.1:0")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let a = addr.clone();
    wait_for("the edge to be ready", Duration::from_secs(30), || {
        http("GET", &a, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    (ChildGuard(child), addr)
}

const RW_SERIES: usize = 1000;
const RW_SAMPLES: usize = 5;

/// Full size under `cargo bench`; a few seconds' smoke run under `cargo test --all-targets` (which runs
/// bench binaries without `--bench`), so the code keeps working without costing CI minutes.
#[derive(Clone, Copy)]
struct Scale {
    rw_requests: usize,
    targets: usize,
    series_per_target: usize,
    interval_s: u64,
    warmup: Duration,
    measure: Duration,
}

const FULL: Scale = Scale {
    rw_requests: 400,
    targets: 1000,
    series_per_target: 1000,
    interval_s: 15,
    warmup: Duration::from_secs(32),
    measure: Duration::from_secs(60),
};

const SMOKE: Scale = Scale {
    rw_requests: 8,
    targets: 5,
    series_per_target: 10,
    interval_s: 1,
    warmup: Duration::from_secs(2),
    measure: Duration::from_secs(2),
};

fn payloads(requests: usize) -> Vec<Vec<u8>> {
    let t0 = 1_700_000_000_000i64;
    (0..requests)
        .map(|r| {
            let req = pb::WriteRequest {
                timeseries: (0..RW_SERIES)
                    .map(|i| pb::TimeSeries {
                        labels: vec![
                            pb::Label {
                                name: "__name__".into(),
                                value: "http_requests_total".into(),
                            },
                            pb::Label {
                                name: "code".into(),
                                value: ["200", "404", "500"][i % 3].into(),
                            },
                            pb::Label {
                                name: "instance".into(),
                                value: format!("10.1.{}.{}:8080", i / 200, i % 200),
                            },
                            pb::Label {
                                name: "job".into(),
                                value: "api".into(),
                            },
                            pb::Label {
                                name: "pod".into(),
                                value: format!("api-{}", i / 3),
                            },
                            // One shard of the series space per request group, so every series gets
                            // time-ordered samples across requests.
                            pb::Label {
                                name: "shard".into(),
                                value: (r % 4).to_string(),
                            },
                        ],
                        samples: (0..RW_SAMPLES)
                            .map(|k| pb::Sample {
                                value: (r * RW_SAMPLES + k) as f64,
                                timestamp: t0 + ((r / 4) * RW_SAMPLES + k) as i64 * 15_000,
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            meridian_edge::receive::encode_body(&req).unwrap()
        })
        .collect()
}

/// Sends the payloads with 4 threads (thread `k` sends the requests of shard `k`, in order); returns
/// (wall seconds, server CPU seconds).
fn blast(addr: &str, path: &str, pid: u32, payloads: &Arc<Vec<Vec<u8>>>) -> (f64, f64) {
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (addr, path, payloads, errors) = (
                addr.to_owned(),
                path.to_owned(),
                payloads.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                for (i, p) in payloads.iter().enumerate() {
                    if i % 4 != k {
                        continue;
                    }
                    let r = http(
                        "POST",
                        &addr,
                        &path,
                        &[
                            ("Content-Encoding", "snappy"),
                            ("Content-Type", "application/x-protobuf"),
                            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                        ],
                        p,
                    )
                    .unwrap();
                    if r.status / 100 != 2 {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{addr}{path}: {} {}", r.status, r.text());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "requests failed");
    (t0.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0)
}

fn remote_write(scale: Scale) {
    let payloads = Arc::new(payloads(scale.rw_requests));
    let samples = (RW_SERIES * RW_SAMPLES * scale.rw_requests) as f64;
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "remote_write: {} requests x {RW_SERIES} series x {RW_SAMPLES} samples = {samples} samples, {:.1} MB snappy",
        scale.rw_requests,
        bytes as f64 / 1e6
    );
    let dir = tempfile::tempdir().unwrap();
    let (edge, addr) = start_edge(dir.path(), "global: {}\n");
    let (wall, cpu) = blast(&addr, "/api/v1/write", edge.pid(), &payloads);
    println!(
        "  edge:       {:>10.0} samples/s per core ({cpu:.2} CPU s), {:>10.0} samples/s wall, RSS {} MB",
        samples / cpu,
        samples / wall,
        rss_bytes(edge.pid()) >> 20
    );
    drop(edge);
    let pdir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        pdir.path(),
        "global: {}\n",
        &["--web.enable-remote-write-receiver"],
    )
    .expect("prometheus on PATH");
    let pid = prom_pid(&prom);
    let (wall, cpu) = blast(&prom.addr, "/api/v1/write", pid, &payloads);
    println!(
        "  prometheus: {:>10.0} samples/s per core ({cpu:.2} CPU s), {:>10.0} samples/s wall, RSS {} MB",
        samples / cpu,
        samples / wall,
        rss_bytes(pid) >> 20
    );
}

fn prom_pid(p: &Prometheus) -> u32 {
    // The testkit does not expose the child; find it by its listen address.
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("web.listen-address={}", p.addr))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("prometheus pid")
}

fn scrape(scale: Scale) {
    let (targets_n, series_n) = (scale.targets, scale.series_per_target);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    rt.block_on(async {
        for t in 0..targets_n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            let c = counter.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let n = c.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut b = String::with_capacity(series_n * 80);
                        b.push_str("# TYPE app_requests_total counter\n");
                        for s in 0..series_n {
                            b.push_str(&format!(
                                "app_requests_total{{handler=\"/api/v{}/item\",code=\"{}\",method=\"GET\"}} {}\n",
                                s / 4,
                                200 + s % 4,
                                n * 7 + (s * t) as u64 % 1000
                            ));
                        }
                        b
                    }
                }),
            );
            rt.spawn(async move { axum::serve(l, app).await });
        }
    });
    let targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: {}s\n  scrape_timeout: {}s\nscrape_configs:\n  - job_name: load\n    static_configs: [{{targets: [{}]}}]\n",
        scale.interval_s,
        scale.interval_s.min(10),
        targets.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let (edge, _addr) = start_edge(dir.path(), &config);
    let pid = edge.pid();
    println!(
        "scrape: {targets_n} targets x {series_n} series every {}s; warming up {:?}",
        scale.interval_s, scale.warmup
    );
    std::thread::sleep(scale.warmup);
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    let scrapes0 = counter.load(Ordering::Relaxed);
    std::thread::sleep(scale.measure);
    let (cpu, wall) = (cpu_seconds(pid) - cpu0, t0.elapsed().as_secs_f64());
    let scrapes = counter.load(Ordering::Relaxed) - scrapes0;
    let rss = rss_bytes(pid);
    let series = (targets_n * (series_n + 5)) as f64;
    println!(
        "  {scrapes} scrapes in {wall:.0}s: {:.3} cores, {:.0} samples/s; RSS {} MB = {:.0} B per series",
        cpu / wall,
        scrapes as f64 * series_n as f64 / wall,
        rss >> 20,
        rss as f64 / series
    );
    drop(edge);
    drop(rt);
}

fn main() {
    meridian_pki::install_crypto_provider();
    let scale = if std::env::args().any(|a| a == "--bench") {
        FULL
    } else {
        SMOKE
    };
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |n: &str| which.is_empty() || which.iter().any(|w| w == n);
    if want("remote_write") {
        remote_write(scale);
    }
    if want("scrape") {
        scrape(scale);
    }
}
