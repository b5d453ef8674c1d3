//! PromQL through the gateway against Prometheus 2.42, real processes on the same blocks (issue 25).
//!
//! 740 demo-shaped instances (19,980 series) × 24 h at 15 s (115 M samples) become blocks with
//! `promtool tsdb create-blocks-from openmetrics` (one run per 2 h slice). Prometheus 2.42 serves
//! them (compaction off: `--storage.tsdb.max-block-duration=2h`); two release `meridian-edge`s serve
//! copies over the StoreAPI, one plaintext and one over mTLS, each behind its own release
//! `meridian-gateway` with the results cache off. The compliance query list (variants expanded) runs
//! as an instant query twice (1 h before the end, just after a chunk boundary, and 15 min earlier,
//! mid-chunk) and as a range query (the last 6 h at 60 s) on all three,
//! interleaved, over one kept-alive HTTP/1.1 connection each; per query the best of N wall times.
//! Prints every query's ratios, the geometric means, the worst, and the bytes of series frames the
//! mTLS gateway received per instant query; writes the table to `target/gateway_vs_prometheus.md`.
//!
//! Run: `cargo build --release --bins && cargo bench -p meridian-integration --bench
//! gateway_vs_prometheus`. Knobs: `MERIDIAN_BENCH_INSTANCES` (740), `MERIDIAN_BENCH_HOURS` (24),
//! `MERIDIAN_BENCH_RUNS` (3), `MERIDIAN_BENCH_QUERIES` (only queries containing this text),
//! `MERIDIAN_EDGE_BIN` (another edge binary, e.g. an older build, for before/after bytes),
//! `MERIDIAN_BENCH_HOLD` (seconds to keep the servers up before timing, for profiling). Under
//! `cargo test --all-targets`: a smoke run on 2 instances × 2 h and the first 12 queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use meridian_integration::demo::{STEP, T0, compliance_queries, generate, promtool_blocks_sliced};
use meridian_integration::served::{
    Conn, Gateways, Timing, api_secs, best_of, env_or, geomean, metric, require_binaries,
};
use meridian_testkit::{Prometheus, require, urlencode, wait_for};

/// The shapes issue 25 names that the compliance list does not hold as such.
const ISSUE_SHAPES: &[&str] = &[
    "-demo_memory_usage_bytes",
    "time() == demo_memory_usage_bytes",
    "count without(instance) (demo_memory_usage_bytes)",
    "stddev without(instance) (demo_memory_usage_bytes)",
    "last_over_time(demo_intermittent_metric[10m])",
];

struct Row {
    query: String,
    kind: &'static str,
    prom: Timing,
    mtls: Timing,
    plain: Timing,
    bytes: f64,
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let instances: usize = env_or("MERIDIAN_BENCH_INSTANCES", if bench { 740 } else { 2 });
    let hours: i64 = env_or("MERIDIAN_BENCH_HOURS", if bench { 24 } else { 2 });
    let runs: usize = env_or("MERIDIAN_BENCH_RUNS", if bench { 3 } else { 1 });
    let only = std::env::var("MERIDIAN_BENCH_QUERIES").ok();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    require_binaries();
    let list = std::env::var_os("MERIDIAN_PROMQL_COMPLIANCE_QUERIES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/compliance/promql-test-queries.yml")
        });
    let Ok(text) = std::fs::read_to_string(&list) else {
        eprintln!(
            "gateway_vs_prometheus: compliance query list not found at {} (set MERIDIAN_PROMQL_COMPLIANCE_QUERIES); not run",
            list.display()
        );
        return;
    };
    let mut queries = compliance_queries(&text);
    queries.extend(ISSUE_SHAPES.iter().map(|q| (*q).to_owned()));
    if let Some(f) = &only {
        queries.retain(|q| q.contains(f.as_str()));
    }
    if !bench {
        queries.truncate(12);
    }

    let tmp = tempfile::tempdir().unwrap();
    let points = hours * 3600 * 1000 / STEP;
    let started = Instant::now();
    let series = generate(instances, points);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    let blocks = promtool_blocks_sliced(&promtool, tmp.path(), &series, 2 * 3600 * 1000);
    let n_series = series.len();
    drop(series);
    eprintln!(
        "gateway_vs_prometheus: {instances} instances, {n_series} series x {hours} h at 15 s = {samples} samples, {} blocks made in {:.0?}",
        blocks.len(),
        started.elapsed()
    );
    let Some(prom) = Prometheus::start(
        tmp.path(),
        "global: {}\n",
        &[
            "--storage.tsdb.retention.time=100y",
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
        ],
    ) else {
        return;
    };
    let gws = Gateways::start(tmp.path(), &blocks);
    let (plain, mtls, tls_grpc) = (gws.plain.clone(), gws.mtls.clone(), gws.tls_edge.clone());

    let end = T0 + hours * 3600 * 1000;
    // Half-second query times: never on a sample (they sit at odd milliseconds). Blocks start every
    // 2 h and their chunks every 30 min, so the first instant time is 0.5 s after a chunk starts (a
    // lookback then reaches into the chunk before) and the second sits mid-chunk.
    let instant_t = end - 3600 * 1000 + 500;
    let mid_chunk_t = instant_t - 15 * 60 * 1000;
    let (rstart, rend) = ((end - 6 * 3600 * 1000).max(T0) + 500, end - 500);
    let ready = format!(
        "/api/v1/query?query={}&time={}",
        urlencode("count(demo_num_cpus)"),
        api_secs(instant_t)
    );
    for addr in [&plain, &mtls, &prom.addr] {
        wait_for(
            "an answer over all instances",
            Duration::from_secs(120),
            || {
                let r = meridian_testkit::http("GET", addr, &ready, &[], b"").ok()?;
                (r.status == 200 && r.text().contains(&format!("\"{instances}\""))).then_some(())
            },
        );
    }
    let secs_held: u64 = env_or("MERIDIAN_BENCH_HOLD", 0);
    if secs_held > 0 {
        // For profiling: the servers stay up and say where they are.
        eprintln!(
            "gateway_vs_prometheus: holding {secs_held} s: prometheus {} mtls-gateway {mtls} plain-gateway {plain} instant time {} range {}..{}",
            prom.addr,
            api_secs(instant_t),
            api_secs(rstart),
            api_secs(rend)
        );
        std::thread::sleep(Duration::from_secs(secs_held));
    }
    let received =
        format!("meridian_gateway_store_series_received_bytes_total{{store=\"{tls_grpc}\"}}");
    let mut conns = [
        Conn::open(&prom.addr),
        Conn::open(&mtls),
        Conn::open(&plain),
    ];
    let mut rows = Vec::new();
    for q in &queries {
        let paths = [
            (
                "instant",
                format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(q),
                    api_secs(instant_t)
                ),
            ),
            (
                "instant-mid",
                format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(q),
                    api_secs(mid_chunk_t)
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
            let b0 = metric(&mtls, &received);
            let prom_t = best_of(&mut conns[0], &path, runs);
            let mtls_t = best_of(&mut conns[1], &path, runs);
            let bytes = (metric(&mtls, &received) - b0) / runs as f64;
            let plain_t = best_of(&mut conns[2], &path, runs);
            rows.push(Row {
                query: q.clone(),
                kind,
                prom: prom_t,
                mtls: mtls_t,
                plain: plain_t,
                bytes,
            });
        }
    }
    report(&rows, instances, n_series, hours, samples, runs);
}

fn report(
    rows: &[Row],
    instances: usize,
    n_series: usize,
    hours: i64,
    samples: usize,
    runs: usize,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{instances} instances, {n_series} series x {hours} h at 15 s ({samples} samples); best of {runs}\n"
    );
    let _ = writeln!(
        md,
        "| query | kind | Prometheus ms | mTLS ms | plain ms | mTLS/P | plain/P | bytes received (mTLS) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    let compared: Vec<&Row> = rows
        .iter()
        .filter(|r| r.prom.ok && r.mtls.ok && r.plain.ok)
        .collect();
    for r in rows {
        let _ = writeln!(
            md,
            "| `{}` | {} | {:.2}{} | {:.2}{} | {:.2}{} | {:.2} | {:.2} | {:.0} |",
            r.query.replace('|', "\\|"),
            r.kind,
            ms(r.prom.best),
            if r.prom.ok { "" } else { " (error)" },
            ms(r.mtls.best),
            if r.mtls.ok { "" } else { " (error)" },
            ms(r.plain.best),
            if r.plain.ok { "" } else { " (error)" },
            ms(r.mtls.best) / ms(r.prom.best),
            ms(r.plain.best) / ms(r.prom.best),
            r.bytes
        );
    }
    let _ = writeln!(md);
    for kind in ["instant", "instant-mid", "range"] {
        let of: Vec<&&Row> = compared.iter().filter(|r| r.kind == kind).collect();
        for (name, pick) in [
            ("mTLS", (|r: &Row| r.mtls.best) as fn(&Row) -> Duration),
            ("plaintext", |r: &Row| r.plain.best),
        ] {
            let ratios: Vec<f64> = of.iter().map(|r| ms(pick(r)) / ms(r.prom.best)).collect();
            let over = ratios.iter().filter(|x| **x > 1.5).count();
            let slower = ratios.iter().filter(|x| **x > 1.0).count();
            let worst = of
                .iter()
                .zip(&ratios)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(r, x)| format!("{x:.2}x `{}`", r.query))
                .unwrap_or_default();
            let line = format!(
                "{kind} via {name}: {} queries, geometric mean {:.3}x Prometheus, {slower} slower, {over} over 1.5x, worst {worst}",
                of.len(),
                geomean(&ratios)
            );
            eprintln!("{line}");
            let _ = writeln!(md, "- {line}");
        }
    }
    let instant_bytes: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind == "instant" && r.mtls.ok)
        .map(|r| r.bytes)
        .collect();
    let line = format!(
        "series frames received per instant query (mTLS gateway): mean {:.0} bytes, total {:.0} bytes over {} queries",
        instant_bytes.iter().sum::<f64>() / instant_bytes.len().max(1) as f64,
        instant_bytes.iter().sum::<f64>(),
        instant_bytes.len()
    );
    eprintln!("{line}");
    let _ = writeln!(md, "- {line}");
    let skipped = rows.len() - compared.len();
    let _ = writeln!(
        md,
        "- {skipped} pairs left out: a side did not answer with success"
    );
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gateway_vs_prometheus.md");
    if std::fs::write(&out, md).is_ok() {
        eprintln!("table: {}", out.display());
    }
}
