//! Issue 29's benchmark: the compactor and downsampled queries on 30 days × 1,000 series × 2 HA
//! replicas of 2 h blocks (scrapes every 30 s, the replicas 5 s apart), side by side with Prometheus
//! 2.42 on the same data, real processes, one after the other:
//!
//! 1. **Compaction alone**: replica 0's 2 h blocks compacted by `meridian-gateway compact`
//!    (`--downsampling.disable`) and by Prometheus 2.42 itself (the same blocks in its data directory,
//!    `--storage.tsdb.retention.time=100y`: it compacts them at its first compaction, a minute after
//!    start). Raw samples per CPU second, wall time, peak RSS.
//! 2. **The whole job**: both replicas, offline dedup (`penalty`) and downsampling to 5 m and 1 h:
//!    objects and blocks in the bucket before and after, raw samples per CPU second, peak RSS next to
//!    the largest block written.
//! 3. **A 30-day range query at 1 h step** through `meridian-gateway query` over the compacted
//!    bucket, reading raw data (`max_source_resolution=0s`), 5 m and 1 h data, and Prometheus over
//!    its own compacted raw blocks: the first answer (cold caches) and the best of N.
//!
//! FILESYSTEM buckets on local disk. Run: `cargo build --release --bins && cargo bench -p
//! meridian-integration --bench compact_downsampled`. Knobs: `MERIDIAN_BENCH_SERIES` (1000),
//! `MERIDIAN_BENCH_DAYS` (30), `MERIDIAN_BENCH_SCRAPE_S` (30), `MERIDIAN_BENCH_RUNS` (3). Writes
//! `target/compact_downsampled.md`. Under `cargo test --all-targets`: a smoke run on 20 series × 3
//! days, without Prometheus' one-minute wait for its compaction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_integration::served::{Conn, api_secs, best_of, bin_dir, env_or, require_binaries};
use meridian_testkit::{
    ChildGuard, Prometheus, cpu_seconds, free_port, http, metric_value, require, urlencode,
    wait_for,
};
use meridian_tsdb::block::write_block;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

const H: i64 = 3_600_000;
const D: i64 = 24 * H;
/// A 2-week boundary (Thanos' 14-day level lines up).
const T0: i64 = 1_699_488_000_000;

/// Peak resident memory of `pid` (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Files and bytes under `dir`.
fn tree_size(dir: &Path) -> (usize, u64) {
    let mut out = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (n, b) = tree_size(&e.path());
            out = (out.0 + n, out.1 + b);
        } else {
            out = (out.0 + 1, out.1 + m.len());
        }
    }
    out
}

/// Block directories (with meta.json) under a bucket's root, with their sizes.
fn blocks_in(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.join("meta.json").exists() {
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                tree_size(&p).1,
            ));
        }
    }
    out
}

/// One replica's samples of one 2 h window: counters (a function of time, so replicas agree on
/// the curve) and gauges.
fn window(series: usize, scrape: i64, replica: i64, from: i64) -> Vec<(Labels, Vec<Sample>)> {
    let times: Vec<i64> = (from + 5_000 * replica..from + 2 * H)
        .step_by(scrape as usize)
        .collect();
    (0..series)
        .map(|i| {
            let counter = i % 2 == 0;
            let name = if counter {
                "bench_requests_total"
            } else {
                "bench_queue_depth"
            };
            let labels =
                Labels::from_pairs([("__name__", name), ("pod", &format!("pod-{:04}", i / 2))]);
            let samples = times
                .iter()
                .map(|&t| {
                    let v = if counter {
                        ((t - T0) / 1000) as f64 * (1 + i % 7) as f64
                    } else {
                        (((t - T0) / scrape * 31 + i as i64) % 100) as f64
                    };
                    Sample::new(t, v)
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

fn objstore(dir: &Path, root: &Path) -> PathBuf {
    let yaml = dir.join(format!(
        "{}.yml",
        root.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &yaml,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    yaml
}

/// One compactor pass over `objstore` (kept running with `--wait` so its CPU time and peak RSS can
/// be read when the pass is done): wall time, CPU seconds, peak RSS.
fn compact(dir: &Path, objstore: &Path, extra: &[&str]) -> (Duration, f64, u64) {
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let child = ChildGuard(
        Command::new(bin_dir().join("meridian-gateway"))
            .arg("compact")
            .arg(format!("--objstore.config-file={}", objstore.display()))
            .arg(format!("--data-dir={}", dir.display()))
            .arg(format!("--http-address={addr}"))
            .args([
                "--wait",
                "--wait-interval=24h",
                "--consistency-delay=0s",
                "--delete-delay=0s",
                "--log.level=warn",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metric = |name: &str| {
        http("GET", &addr, "/metrics", &[], b"")
            .ok()
            .and_then(|r| metric_value(&r.text(), name))
    };
    wait_for("a compactor pass", Duration::from_secs(3600), || {
        metric("meridian_compact_iterations_total")
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    });
    let wall = started.elapsed();
    assert_eq!(metric("meridian_compact_halted"), Some(0.0), "halted");
    (wall, cpu_seconds(child.pid()), peak_rss(child.pid()))
}

const QUERIES: [&str; 4] = [
    "sum(increase(bench_requests_total[3h]))",
    "max(max_over_time(bench_queue_depth[1h]))",
    "avg(avg_over_time(bench_queue_depth[1h]))",
    "sum(count_over_time(bench_queue_depth[1h]))",
];

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let n_series: usize = env_or("MERIDIAN_BENCH_SERIES", if bench { 1000 } else { 20 });
    let days: i64 = env_or("MERIDIAN_BENCH_DAYS", if bench { 30 } else { 3 });
    let scrape: i64 = env_or::<i64>("MERIDIAN_BENCH_SCRAPE_S", 30) * 1000;
    let runs: usize = env_or("MERIDIAN_BENCH_RUNS", if bench { 3 } else { 1 });
    if require("prometheus", "apt-get install prometheus").is_none() {
        return;
    }
    require_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut report = String::new();
    let mut line = |s: String| {
        eprintln!("compact_downsampled: {s}");
        let _ = writeln!(report, "{s}");
    };

    // The data: 2 h blocks per replica, uploaded to two buckets (replica 0 alone, and both), and
    // replica 0's copied into Prometheus' data directory.
    let started = Instant::now();
    let one = dir.join("bucket-one");
    let two = dir.join("bucket-two");
    let prom_data = dir.join("prom").join("prom-data");
    for d in [&one, &two, &prom_data] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (one_yml, two_yml) = (objstore(dir, &one), objstore(dir, &two));
    let (b_one, b_two) = (
        Bucket::from_file(&one_yml).unwrap(),
        Bucket::from_file(&two_yml).unwrap(),
    );
    let local = dir.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut samples_per_replica = 0usize;
    for replica in 0..2i64 {
        let ext = Labels::from_pairs([("cluster", "bench"), ("replica", &replica.to_string())]);
        for k in 0..days * 12 {
            let from = T0 + k * 2 * H;
            let data = window(n_series, scrape, replica, from);
            if replica == 0 {
                samples_per_replica += data.iter().map(|s| s.1.len()).sum::<usize>();
            }
            let meta = write_block(&local, data, from, from + 2 * H).unwrap();
            let block = local.join(&meta.ulid);
            rt.block_on(async {
                upload_block_dir(&b_two, &block, &ext, "sidecar")
                    .await
                    .unwrap();
                if replica == 0 {
                    upload_block_dir(&b_one, &block, &ext, "sidecar")
                        .await
                        .unwrap();
                }
            });
            if replica == 0 {
                std::fs::rename(&block, prom_data.join(&meta.ulid)).unwrap();
            } else {
                std::fs::remove_dir_all(&block).unwrap();
            }
        }
    }
    let total_samples = 2 * samples_per_replica;
    let (objects_before, bytes_before) = tree_size(&two);
    let blocks_before = blocks_in(&two).len();
    line(format!(
        "data: {n_series} series x {days} d at {} s x 2 replicas = {total_samples} samples in {blocks_before} blocks, {objects_before} objects, {:.1} MiB; made in {:.0?}",
        scrape / 1000,
        bytes_before as f64 / 1048576.0,
        started.elapsed()
    ));

    // 1. Compaction alone, one replica: Meridian, then Prometheus.
    let (wall, cpu, rss) = compact(&dir.join("data-one"), &one_yml, &["--downsampling.disable"]);
    let largest_one = blocks_in(&one).iter().map(|b| b.1).max().unwrap_or(0);
    line(format!(
        "compaction, replica 0 ({samples_per_replica} samples): meridian {:.1} s wall, {cpu:.1} s CPU = {:.2} M samples/s per core, peak RSS {:.0} MiB (largest block {:.0} MiB)",
        wall.as_secs_f64(),
        samples_per_replica as f64 / cpu.max(0.01) / 1e6,
        rss as f64 / 1048576.0,
        largest_one as f64 / 1048576.0,
    ));
    let prom = Prometheus::start(
        &dir.join("prom"),
        "global:\n  scrape_interval: 1h\n",
        &["--storage.tsdb.retention.time=100y"],
    )
    .expect("prometheus");
    if bench {
        let pid = prom.pid().unwrap();
        let cpu0 = cpu_seconds(pid);
        let metric = |name: &str| {
            http("GET", &prom.addr, "/metrics", &[], b"")
                .ok()
                .and_then(|r| metric_value(&r.text(), name))
                .unwrap_or(0.0)
        };
        wait_for(
            "Prometheus' first compaction",
            Duration::from_secs(600),
            || (metric("prometheus_tsdb_compactions_total") >= 1.0).then_some(()),
        );
        // Done when no compaction ran for 20 s.
        let mut last = (metric("prometheus_tsdb_compactions_total"), Instant::now());
        while last.1.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_secs(1));
            let n = metric("prometheus_tsdb_compactions_total");
            if n != last.0 {
                last = (n, Instant::now());
            }
        }
        let cpu = cpu_seconds(pid) - cpu0;
        let wall = metric("prometheus_tsdb_compaction_duration_seconds_sum");
        line(format!(
            "compaction, replica 0: prometheus 2.42 {wall:.1} s in {} compactions, {cpu:.1} s CPU = {:.2} M samples/s per core, peak RSS {:.0} MiB",
            metric("prometheus_tsdb_compactions_total"),
            samples_per_replica as f64 / cpu.max(0.01) / 1e6,
            peak_rss(pid) as f64 / 1048576.0
        ));
    }

    // 2. The whole job on both replicas.
    let (wall, cpu, rss) = compact(
        &dir.join("data-two"),
        &two_yml,
        &[
            "--deduplication.replica-label=replica",
            "--deduplication.func=penalty",
        ],
    );
    let (objects_after, bytes_after) = tree_size(&two);
    let after = blocks_in(&two);
    let largest = after.iter().map(|b| b.1).max().unwrap_or(0);
    line(format!(
        "compaction + penalty dedup + downsampling, 2 replicas ({total_samples} samples): {:.1} s wall, {cpu:.1} s CPU = {:.2} M samples/s per core, peak RSS {:.0} MiB (largest block {:.0} MiB)",
        wall.as_secs_f64(),
        total_samples as f64 / cpu.max(0.01) / 1e6,
        rss as f64 / 1048576.0,
        largest as f64 / 1048576.0
    ));
    line(format!(
        "bucket: {blocks_before} blocks / {objects_before} objects / {:.1} MiB before, {} blocks / {objects_after} objects / {:.1} MiB after (raw, 5m and 1h)",
        bytes_before as f64 / 1048576.0,
        after.len(),
        bytes_after as f64 / 1048576.0
    ));

    // 3. The 30-day range query at 1 h step.
    let gw_addr = format!("127.0.0.1:{}", free_port());
    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let _gw = ChildGuard(
        Command::new(bin_dir().join("meridian-gateway"))
            .arg("query")
            .arg(format!("--http-address={gw_addr}"))
            .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
            .arg(format!("--objstore.config-file={}", two_yml.display()))
            .arg(format!("--data-dir={}", gw_dir.display()))
            .args([
                "--query-range.response-cache-max-size=0",
                "--log.level=warn",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the gateway", Duration::from_secs(60), || {
        http("GET", &gw_addr, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let (start, end) = (T0 + 3 * H, T0 + days * D);
    let path = |q: &str, res: &str| {
        format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=3600{res}",
            urlencode(q),
            api_secs(start),
            api_secs(end)
        )
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut gw = Conn::open(&gw_addr);
    let mut pr = Conn::open(&prom.addr);
    line(
        "| query | prometheus 2.42 raw | meridian raw | meridian 5m | meridian 1h | raw / 1h |"
            .into(),
    );
    line("|---|---|---|---|---|---|".into());
    for q in QUERIES {
        let mut cells = Vec::new();
        let p = best_of(&mut pr, &path(q, ""), runs);
        assert!(p.ok, "prometheus: {q}");
        cells.push(format!("{:.1} ms", ms(p.best)));
        let mut best = Vec::new();
        for res in ["0s", "5m", "1h"] {
            let url = path(q, &format!("&max_source_resolution={res}"));
            let t = Instant::now();
            let (status, body) = gw.get(&url);
            let cold = t.elapsed();
            assert_eq!(
                status,
                200,
                "{q} at {res}: {}",
                String::from_utf8_lossy(&body)
            );
            let warm = best_of(&mut gw, &url, runs);
            assert!(warm.ok, "{q} at {res}");
            best.push(warm.best);
            cells.push(format!("{:.1} ms (cold {:.1})", ms(warm.best), ms(cold)));
        }
        let ratio = best[0].as_secs_f64() / best[2].as_secs_f64().max(1e-9);
        line(format!("| `{q}` | {} | {ratio:.1}x |", cells.join(" | ")));
    }
    line(format!(
        "range {} d at 1 h step ({} steps); best of {runs}",
        (end - start) / D,
        (end - start) / H + 1
    ));
    drop(prom);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/compact_downsampled.md");
    let _ = std::fs::write(out, report);
}
