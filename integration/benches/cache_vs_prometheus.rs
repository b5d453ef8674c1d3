//! Results cache: a 24 h range query over ~1,000 series through the gateway's HTTP API, uncached and
//! cached, side by side with Prometheus 2.42 answering the same query on the same data.
//!
//! ~1,000 demo-shaped series (37 instances) × 24 h at 15 s go into Meridian's TSDB in this process (cut
//! into blocks, read through the leaf StoreAPI and the fan-out) and by remote write into a Prometheus
//! 2.42 on loopback. Both are asked over HTTP on loopback, so both times include parsing, evaluation
//! and JSON encoding; both are asked with `Accept-Encoding: gzip`, as Grafana and promtool ask (so
//! both gzip their answers). Uncached: an API with the cache off; cached: the same request repeated on
//! an API with the cache on (the first request fills it). Each figure is the best of 5.
//!
//! Run: `cargo bench -p meridian-integration --bench cache_vs_prometheus` (needs `prometheus` on PATH).
//! Under `cargo test --all-targets`: a 2-instance, 1 h smoke run of the cached path only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_gateway::api::{Api, ApiOptions};
use meridian_gateway::cache::CacheOptions;
use meridian_integration::bench::{best, load_tsdb, remote_write, tsdb_fanout};
use meridian_integration::demo::{STEP, T0, generate};
use meridian_testkit::{Prometheus, http, urlencode};

const QUERIES: &[&str] = &[
    "{job=\"demo\"}",
    "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le, instance) (rate(demo_api_request_duration_seconds_bucket[5m])))",
];

/// As Grafana and promtool (Go's HTTP client) ask: gzip accepted. Returns the bytes received.
fn get_ok(addr: &str, path: &str) -> usize {
    let r = http("GET", addr, path, &[("Accept-Encoding", "gzip")], b"").unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.body.len()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (instances, points) = if bench { (37, 5_760) } else { (2, 240) };
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
    let db = load_tsdb(&dir.path().join("meridian"), &series);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Two APIs over one fan-out: the cache off and on.
    let (uncached, cached) = rt.block_on(async {
        let fanout = tsdb_fanout(db).await;
        let mut addrs = Vec::new();
        for max_bytes in [0, 1 << 30] {
            let api = Arc::new(Api::new(
                fanout.clone(),
                Arc::new(|| serde_json::json!({})),
                ApiOptions {
                    cache: CacheOptions {
                        max_bytes,
                        ..CacheOptions::default()
                    },
                    ..ApiOptions::default()
                },
                |_| {},
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap().to_string());
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(meridian_pki::serve::serve_http(
                listener,
                None,
                meridian_gateway::api::router(api),
                meridian_pki::serve::WebLimits::default(),
                stop.clone(),
            ));
            std::mem::forget(stop);
        }
        (addrs[0].clone(), addrs[1].clone())
    });
    let (start, stop) = (end - 24 * 3_600_000 + STEP + 500, end + 500);
    let path = |q: &str| {
        format!(
            "/api/v1/query_range?query={}&start={}.{:03}&end={}.{:03}&step=60",
            urlencode(q),
            start / 1000,
            start % 1000,
            stop / 1000,
            stop % 1000
        )
    };
    if !bench {
        for q in QUERIES {
            let p = path(q);
            let a = get_ok(&cached, &p);
            assert_eq!(get_ok(&cached, &p), a);
        }
        println!("smoke: {} queries answered twice", QUERIES.len());
        return;
    }
    let pdir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(
        pdir.path(),
        "global: {}\n",
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=100y",
        ],
    );
    if let Some(p) = &prometheus {
        remote_write(&p.addr, &series, points);
    }
    drop(series);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{:<100} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "query (24 h at 60 s)", "uncached", "cached", "Prom 2.42", "c/unc", "c/Prom", "MB gz"
    );
    for q in QUERIES {
        let p = path(q);
        let mut bytes = 0;
        let un = best(5, || {
            bytes = get_ok(&uncached, &p);
            true
        });
        get_ok(&cached, &p);
        let ca = best(5, || {
            get_ok(&cached, &p);
            true
        });
        let pr = prometheus.as_ref().and_then(|pm| {
            best(5, || {
                get_ok(&pm.addr, &p);
                true
            })
        });
        println!(
            "{:<100} {:>8.1}ms {:>8.2}ms {:>8.1}ms {:>9.3} {:>9.3} {:>8.1}",
            q,
            ms(un),
            ms(ca),
            ms(pr),
            ms(ca) / ms(un),
            ms(ca) / ms(pr),
            bytes as f64 / 1e6
        );
    }
}
