//! Issue 27's benchmark: the same PromQL through a gateway in front of `meridian-edge sidecar`
//! beside Prometheus 2.42, directly against that Prometheus, and through a gateway in front of an
//! edge's own TSDB, all on the same data and real processes.
//!
//! 370 demo-shaped instances (9,990 series) × 24 h at 15 s: the first 22 h become 2-hour blocks
//! (`promtool tsdb create-blocks-from openmetrics`) in Prometheus' data directory and in the edge's,
//! the last 2 h are remote-written into both heads. The sidecar therefore reads 11 blocks in place
//! and the head through remote read. Queries: the compliance list (variants expanded) as an instant
//! query in the head's range (1 h before the end), as one in the blocks' range (6 h before), and as
//! a range query over the last 6 h at 60 s (blocks and head); interleaved, one kept-alive HTTP/1.1
//! connection each, best of N. Prints the geometric means and the worst ratios; writes every query to
//! `target/sidecar_vs_prometheus.md`.
//!
//! Run: `cargo build --release --bins && cargo bench -p meridian-integration --bench
//! sidecar_vs_prometheus`. Knobs: `MERIDIAN_BENCH_INSTANCES` (370), `MERIDIAN_BENCH_HOURS` (24),
//! `MERIDIAN_BENCH_RUNS` (3), `MERIDIAN_BENCH_QUERIES` (only queries containing this text),
//! `MERIDIAN_BENCH_HOLD` (seconds to keep the servers up before timing, for profiling),
//! `MERIDIAN_BENCH_SIDECAR_LOG` (the sidecar's `--log.level`, default `warn`). Under
//! `cargo test --all-targets`: a smoke run on 2 instances × 4 h and the first 12 queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_gateway::queryable::SeriesData;
use meridian_integration::bench::remote_write;
use meridian_integration::demo::{STEP, T0, compliance_queries, generate, promtool_blocks_sliced};
use meridian_integration::served::{
    Conn, Timing, api_secs, best_of, bin_dir, edge, env_or, gateway, geomean, require_binaries,
};
use meridian_testkit::{Prometheus, free_port, require, spawn_announcing, urlencode, wait_for};

const H: i64 = 3_600_000;

/// `series` cut to `[from, to)`.
fn cut(series: &[SeriesData], from: i64, to: i64) -> Vec<SeriesData> {
    series
        .iter()
        .map(|s| SeriesData {
            labels: s.labels.clone(),
            samples: s
                .samples
                .iter()
                .filter(|x| x.t >= from && x.t < to)
                .copied()
                .collect(),
            ..Default::default()
        })
        .collect()
}

struct Row {
    query: String,
    kind: &'static str,
    prom: Timing,
    sidecar: Timing,
    edge: Timing,
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let instances: usize = env_or("MERIDIAN_BENCH_INSTANCES", if bench { 370 } else { 2 });
    let hours: i64 = env_or("MERIDIAN_BENCH_HOURS", if bench { 24 } else { 4 });
    let runs: usize = env_or("MERIDIAN_BENCH_RUNS", if bench { 3 } else { 1 });
    let only = std::env::var("MERIDIAN_BENCH_QUERIES").ok();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    require_binaries();
    let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/compliance/promql-test-queries.yml");
    let Ok(text) = std::fs::read_to_string(&list) else {
        eprintln!(
            "sidecar_vs_prometheus: compliance query list not found at {}; not run",
            list.display()
        );
        return;
    };
    let mut queries = compliance_queries(&text);
    if let Some(f) = &only {
        queries.retain(|q| q.contains(f.as_str()));
    }
    if !bench {
        queries.truncate(12);
    }

    let tmp = tempfile::tempdir().unwrap();
    let points = hours * H / STEP;
    let end = T0 + hours * H;
    let head_from = end - 2 * H;
    let started = Instant::now();
    let series = generate(instances, points);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    let blocks = promtool_blocks_sliced(&promtool, tmp.path(), &cut(&series, T0, head_from), 2 * H);
    let head = cut(&series, head_from, end);
    let n_series = series.len();
    drop(series);
    eprintln!(
        "sidecar_vs_prometheus: {n_series} series x {hours} h at 15 s = {samples} samples; {} blocks made in {:.0?}",
        blocks.len(),
        started.elapsed()
    );
    let Some(prom) = Prometheus::start(
        tmp.path(),
        "global:\n  external_labels: {cluster: bench, replica: p0}\n",
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=100y",
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
        ],
    ) else {
        return;
    };
    let edge_dir = tmp.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let (edge_proc, edge_grpc, edge_http) = edge(&edge_dir, &blocks, None);
    wait_for("the edge", Duration::from_secs(60), || {
        meridian_testkit::http("GET", &edge_http, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let started = Instant::now();
    remote_write(&prom.addr, &head, points);
    remote_write(&edge_http, &head, points);
    eprintln!(
        "sidecar_vs_prometheus: the last 2 h remote-written into both heads in {:.0?}",
        started.elapsed()
    );
    drop(head);
    let sidecar_dir = tmp.path().join("sidecar");
    std::fs::create_dir_all(&sidecar_dir).unwrap();
    let mut cmd = Command::new(bin_dir().join("meridian-edge"));
    cmd.arg("sidecar")
        .arg(format!("--prometheus.url=http://{}", prom.addr))
        .arg(format!("--tsdb.path={}", prom.data.display()))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
        .arg(format!(
            "--log.level={}",
            std::env::var("MERIDIAN_BENCH_SIDECAR_LOG").unwrap_or_else(|_| "warn".into())
        ));
    let (sidecar_proc, addrs) = spawn_announcing(
        cmd,
        &sidecar_dir.join("sidecar.log"),
        &["http listening on", "grpc listening on"],
    );
    let (gw_s, sidecar_gw) = gateway(&sidecar_dir, &addrs[1], None);
    let (gw_e, edge_gw) = gateway(&edge_dir, &edge_grpc, None);
    let procs = [gw_s, gw_e, sidecar_proc, edge_proc];

    // Half-second times: never on a sample (they sit at odd milliseconds).
    let head_t = end - H + 500;
    let blocks_t = end - 6 * H + 500;
    let (rstart, rend) = ((end - 6 * H).max(T0) + 500, end - 500);
    let ready = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("count(demo_num_cpus)"),
        api_secs(head_t)
    );
    for addr in [&sidecar_gw, &edge_gw, &prom.addr] {
        wait_for(
            "an answer over all instances",
            Duration::from_secs(120),
            || {
                let r = meridian_testkit::http("GET", addr, &ready, &[], b"").ok()?;
                (r.status == 200 && r.text().contains(&format!("\"{instances}\""))).then_some(())
            },
        );
    }
    let held: u64 = env_or("MERIDIAN_BENCH_HOLD", 0);
    if held > 0 {
        // For profiling: the servers stay up and say where they are.
        eprintln!(
            "sidecar_vs_prometheus: holding {held} s: prometheus {} sidecar gateway {sidecar_gw} (sidecar log {}) edge gateway {edge_gw}; head instant {} blocks instant {} range {}..{}",
            prom.addr,
            sidecar_dir.join("sidecar.log").display(),
            api_secs(head_t),
            api_secs(blocks_t),
            api_secs(rstart),
            api_secs(rend)
        );
        std::thread::sleep(Duration::from_secs(held));
    }
    let mut conns = [
        Conn::open(&prom.addr),
        Conn::open(&sidecar_gw),
        Conn::open(&edge_gw),
    ];
    let mut rows = Vec::new();
    for q in &queries {
        let paths = [
            (
                "instant (head)",
                format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(q),
                    api_secs(head_t)
                ),
            ),
            (
                "instant (blocks)",
                format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(q),
                    api_secs(blocks_t)
                ),
            ),
            (
                "range",
                format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step=60",
                    urlencode(q),
                    api_secs(rstart),
                    api_secs(rend)
                ),
            ),
        ];
        for (kind, path) in paths {
            let prom_t = best_of(&mut conns[0], &path, runs);
            let sidecar_t = best_of(&mut conns[1], &path, runs);
            let edge_t = best_of(&mut conns[2], &path, runs);
            rows.push(Row {
                query: q.clone(),
                kind,
                prom: prom_t,
                sidecar: sidecar_t,
                edge: edge_t,
            });
        }
    }
    // Memory after the queries: the sidecar holds a copy of Prometheus' head (from its WAL).
    let mib = |pid: u32| meridian_testkit::rss_bytes(pid) as f64 / (1 << 20) as f64;
    let memory = format!(
        "resident memory after the queries: Prometheus {:.0} MiB, sidecar {:.0} MiB, edge {:.0} MiB",
        prom.pid().map_or(0.0, mib),
        mib(procs[2].pid()),
        mib(procs[3].pid())
    );
    eprintln!("{memory}");
    report(&rows, n_series, hours, samples, runs, &memory);
}

fn report(rows: &[Row], n_series: usize, hours: i64, samples: usize, runs: usize, memory: &str) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{n_series} series x {hours} h at 15 s ({samples} samples), the last 2 h in the heads; best of {runs}\n"
    );
    let _ = writeln!(
        md,
        "| query | kind | Prometheus ms | sidecar ms | edge ms | sidecar/P | edge/P |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in rows {
        let mark = |t: Timing| if t.ok { "" } else { " (error)" };
        let _ = writeln!(
            md,
            "| `{}` | {} | {:.2}{} | {:.2}{} | {:.2}{} | {:.2} | {:.2} |",
            r.query.replace('|', "\\|"),
            r.kind,
            ms(r.prom.best),
            mark(r.prom),
            ms(r.sidecar.best),
            mark(r.sidecar),
            ms(r.edge.best),
            mark(r.edge),
            ms(r.sidecar.best) / ms(r.prom.best),
            ms(r.edge.best) / ms(r.prom.best),
        );
    }
    let _ = writeln!(md);
    let compared: Vec<&Row> = rows
        .iter()
        .filter(|r| r.prom.ok && r.sidecar.ok && r.edge.ok)
        .collect();
    for kind in ["instant (head)", "instant (blocks)", "range"] {
        let of: Vec<&&Row> = compared.iter().filter(|r| r.kind == kind).collect();
        for (name, pick) in [
            (
                "sidecar",
                (|r: &Row| r.sidecar.best) as fn(&Row) -> Duration,
            ),
            ("edge", |r: &Row| r.edge.best),
        ] {
            let ratios: Vec<f64> = of.iter().map(|r| ms(pick(r)) / ms(r.prom.best)).collect();
            let over = ratios.iter().filter(|x| **x > 1.2).count();
            let worst = of
                .iter()
                .zip(&ratios)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(r, x)| format!("{x:.2}x `{}`", r.query))
                .unwrap_or_default();
            let total_p: f64 = of.iter().map(|r| ms(r.prom.best)).sum();
            let total: f64 = of.iter().map(|r| ms(pick(r))).sum();
            let line = format!(
                "{kind} via {name}: {} queries, geometric mean {:.3}x Prometheus, summed {total:.0} ms vs {total_p:.0} ms, {over} over 1.2x, worst {worst}",
                of.len(),
                geomean(&ratios)
            );
            eprintln!("{line}");
            let _ = writeln!(md, "- {line}");
        }
    }
    let _ = writeln!(md, "- {memory}");
    let skipped = rows.len() - compared.len();
    let _ = writeln!(
        md,
        "- {skipped} pairs left out: a side did not answer with success"
    );
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sidecar_vs_prometheus.md");
    if std::fs::write(&out, md).is_ok() {
        eprintln!("table: {}", out.display());
    }
}
