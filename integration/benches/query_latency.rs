//! Per-query latency through the gateway against Prometheus 2.42 on the same blocks (issue 25): the
//! fixed cost every small dashboard query pays.
//!
//! 8 demo instances (the compliance list's series shapes) × 2 h at 15 s become blocks with
//! `promtool tsdb create-blocks-from openmetrics`. Prometheus 2.42 serves them; a release
//! `meridian-edge` serves copies of them over the StoreAPI twice, plaintext and mTLS (certificates
//! from `meridian-pki`), each behind its own `meridian-gateway` (`--endpoint`, no results cache for
//! instant queries). Every query is asked sequentially over one kept-alive HTTP/1.1 connection per
//! server; the median of N (300 with `--bench`) is reported, and the gateway's minus Prometheus'.
//!
//! Run: `cargo build --release --bins && cargo bench -p meridian-integration --bench query_latency`
//! (binaries from this build's directory or `MERIDIAN_BIN_DIR`; `MERIDIAN_QUERY_LATENCY_N` sets the
//! number of requests, e.g. to profile the processes). Under `cargo test --all-targets`: a
//! smoke run of 5 requests per query.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use meridian_integration::demo::{STEP, T0, generate};
use meridian_integration::demo::{block_dirs, prometheus_from_blocks};
use meridian_integration::served::{Conn, Gateways, metric, require_binaries};
use meridian_testkit::{require, urlencode, wait_for};

const QUERIES: &[&str] = &[
    "vector(1)",
    "demo_num_cpus",
    "sum(rate(demo_cpu_usage_seconds_total[5m]))",
    "demo_memory_usage_bytes{type=\"free\"}",
];

fn query_path(q: &str, t: i64) -> String {
    format!(
        "/api/v1/query?query={}&time={}.{:03}",
        urlencode(q),
        t / 1000,
        t % 1000
    )
}

/// Median wall time of `n` sequential calls of `path` on one connection (after 3 warm-ups).
fn median(addr: &str, path: &str, n: usize) -> Duration {
    let mut c = Conn::open(addr);
    for _ in 0..3 {
        assert_eq!(c.get(path).0, 200, "{path}");
    }
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get(path);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("MERIDIAN_QUERY_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 300 } else { 5 });
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    require_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let points = 2 * 3600 * 1000 / STEP;
    let series = generate(8, points);
    let Some(prom) = prometheus_from_blocks(&promtool, tmp.path(), &series) else {
        return;
    };
    let blocks = block_dirs(&tmp.path().join("prom-data"));

    let gws = Gateways::start(tmp.path(), &blocks);
    let (plain, mtls, tls_grpc) = (gws.plain.clone(), gws.mtls.clone(), gws.tls_edge.clone());
    let t = T0 + 3600 * 1000;
    let ready = query_path("count(demo_num_cpus)", t);
    for addr in [&plain, &mtls] {
        wait_for(
            "the gateway answers from its edge",
            Duration::from_secs(60),
            || {
                let r = meridian_testkit::http("GET", addr, &ready, &[], b"").ok()?;
                (r.status == 200 && r.text().contains("\"8\"")).then_some(())
            },
        );
    }
    eprintln!(
        "query_latency: 8 instances x 2 h at 15 s ({} series), instant queries at T0+1h, median of {n} sequential requests over keep-alive HTTP",
        series.len()
    );
    eprintln!(
        "{:<50} {:>12} {:>14} {:>16} {:>12} {:>12}",
        "query", "Prometheus", "gateway mTLS", "gateway plain", "mTLS - P", "plain - P"
    );
    let phases = |addr: &str| -> Vec<(String, f64, f64)> {
        let text = meridian_testkit::http_get(addr, "/metrics").text();
        ["queue", "parse", "fetch", "eval", "encode"]
            .iter()
            .map(|p| {
                let v = |suffix: &str| {
                    meridian_testkit::metric_value(
                        &text,
                        &format!(
                            "meridian_gateway_query_phase_duration_seconds_{suffix}{{phase=\"{p}\"}}"
                        ),
                    )
                    .unwrap_or(0.0)
                };
                ((*p).to_owned(), v("sum"), v("count"))
            })
            .collect()
    };
    for q in QUERIES {
        let path = query_path(q, t);
        let before: Vec<Vec<(String, f64, f64)>> =
            [&mtls, &plain].iter().map(|a| phases(a)).collect();
        // Bytes of series frames the mTLS gateway received per request (its counter over one
        // request, asked alone).
        let received =
            format!("meridian_gateway_store_series_received_bytes_total{{store=\"{tls_grpc}\"}}");
        let b0 = metric(&mtls, &received);
        Conn::open(&mtls).get(&path);
        let bytes = metric(&mtls, &received) - b0;
        let pm = median(&prom.addr, &path, n);
        let tm = median(&mtls, &path, n);
        let pl = median(&plain, &path, n);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "{:<50} {:>9.3} ms {:>11.3} ms {:>13.3} ms {:>9.3} ms {:>9.3} ms",
            q,
            ms(pm),
            ms(tm),
            ms(pl),
            ms(tm) - ms(pm),
            ms(pl) - ms(pm)
        );
        // The gateway's own breakdown (mean per query, from its phase histogram) over this query's
        // requests.
        for (name, addr, before) in [("mTLS", &mtls, &before[0]), ("plain", &plain, &before[1])] {
            let after = phases(addr);
            let parts: Vec<String> = after
                .iter()
                .zip(before)
                .map(|((p, s, c), (_, s0, c0))| {
                    format!("{p} {:.3}", (s - s0) / (c - c0).max(1.0) * 1000.0)
                })
                .collect();
            eprintln!("    {name:<5} phases, ms: {}", parts.join(", "));
        }
        eprintln!("    series frames received per query: {bytes} bytes");
    }
}
