//! Native histograms side by side with Prometheus 2.42 on the same data (issue 31's benchmarks).
//!
//! 200 integer native-histogram series (20 services × 10 pods, schema 3, ~40 populated buckets that
//! grow and sometimes spread to new buckets) × 6 h at 15 s go into Meridian's TSDB in this process
//! (appended, then cut into blocks; queries read through the block reader, the leaf StoreAPI and the
//! fan-out) and by remote write into a Prometheus 2.42 (`--enable-feature=native-histograms`).
//!
//! - **Bytes per histogram sample in blocks**: the chunk bytes of our blocks and of Prometheus'
//!   snapshot of its head (the same samples), over the number of samples.
//! - **PromQL latency** of histogram queries, instant (1 h before the end) and range (the last hour
//!   at 60 s): best of 3 wall times; Prometheus' includes its HTTP API and JSON encoding, ours does
//!   not include any encoding.
//!
//! Run: `cargo bench -p meridian-integration --bench histograms_vs_prometheus` (needs `prometheus`).
//! Under `cargo test --all-targets`: a 10-series, 40-sample smoke run of the engine alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use meridian_core::Labels;
use meridian_core::histogram::{Histogram, HistogramValue, Span};
use meridian_gateway::fanout::QueryOptions;
use meridian_gateway::promql::Engine;
use meridian_integration::bench::{best, tsdb_fanout};
use meridian_storeapi::proto::prometheus as prom;
use meridian_testkit::{Prometheus, http, urlencode};
use meridian_tsdb::db::{Db, DbOptions};

const STEP: i64 = 15_000;

/// Series `k`'s histogram at step `i`: buckets around index 8·k%5 growing by a few observations a
/// step, a bucket added further out now and then.
fn histogram(k: usize, i: i64) -> Histogram {
    let width = 36 + (i / 120).min(8) as u32 + (k % 3) as u32;
    let mut abs: Vec<i64> = (0..width as i64)
        .map(|b| (i + 1) * (1 + (b * 7 + k as i64) % 5) + b)
        .collect();
    // The middle buckets hold most observations.
    for (b, a) in abs.iter_mut().enumerate() {
        if (12..24).contains(&b) {
            *a *= 3;
        }
    }
    let count = abs.iter().sum::<i64>() as u64 + i as u64;
    let mut prev = 0;
    let deltas = abs
        .iter()
        .map(|a| {
            let d = a - prev;
            prev = *a;
            d
        })
        .collect();
    Histogram {
        schema: 3,
        zero_threshold: 2f64.powi(-128),
        zero_count: i as u64,
        count,
        sum: count as f64 * 0.137,
        positive_spans: vec![Span {
            offset: -10 + (k % 5) as i32,
            length: width,
        }],
        positive_buckets: deltas,
        ..Histogram::default()
    }
}

fn labels(k: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "req_seconds"),
        ("service", format!("svc-{}", k / 10).as_str()),
        ("pod", format!("pod-{}", k % 10).as_str()),
    ])
}

/// Bytes of the chunk segment files under `dir` (blocks' `chunks/`).
fn chunk_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += chunk_bytes(&p);
        } else if p.parent().is_some_and(|d| d.ends_with("chunks")) {
            n += e.metadata().unwrap().len();
        }
    }
    n
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n_series, points) = if bench { (200, 1_440) } else { (10, 40) };
    meridian_pki::install_crypto_provider();
    let end = meridian_core::time::now_ms() / STEP * STEP - 60_000;
    let t0 = end - (points - 1) * STEP;
    println!(
        "{n_series} native-histogram series × {points} samples ({} h at 15 s), schema 3, ~40 buckets",
        points * 15 / 3600
    );

    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(
        Db::open(
            &dir.path().join("meridian"),
            DbOptions {
                max_ahead: None,
                ..DbOptions::default()
            },
        )
        .unwrap(),
    );
    let load = Instant::now();
    for k in 0..n_series {
        let mut app = db.appender();
        let r = app.series_ref(&labels(k));
        for i in 0..points {
            app.append_histogram(r, t0 + i * STEP, HistogramValue::Int(histogram(k, i)))
                .unwrap();
        }
        app.commit().unwrap();
    }
    db.flush_head().unwrap();
    let samples = (n_series as i64 * points) as f64;
    let ours_bytes = chunk_bytes(&dir.path().join("meridian"));
    println!(
        "Meridian: loaded and cut into blocks in {:.1}s; {:.2} bytes per histogram sample in blocks",
        load.elapsed().as_secs_f64(),
        ours_bytes as f64 / samples
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fanout = rt.block_on(tsdb_fanout(db));
    let engine = Engine::default();
    let querier = fanout.querier(QueryOptions::default());
    let queries = [
        "histogram_quantile(0.9, sum by (service) (rate(req_seconds[5m])))",
        "histogram_count(rate(req_seconds[5m]))",
        "sum by (service) (rate(req_seconds[5m]))",
        "histogram_sum(req_seconds)",
        "histogram_fraction(0, 0.5, rate(req_seconds[5m]))",
        "histogram_avg(increase(req_seconds[1h]))",
    ];
    let instant_t = end - 3_600_000 + 500;
    let (rstart, rend) = (end - 3_600_000 + 500, end + 500);
    if !bench {
        for q in queries {
            let r = rt.block_on(engine.instant(&querier, q, end));
            assert!(r.is_ok(), "{q}: {r:?}");
        }
        println!("smoke: {} queries evaluated", queries.len());
        return;
    }

    let pdir = tempfile::tempdir().unwrap();
    let Some(prometheus) = Prometheus::start(
        pdir.path(),
        "global: {}\n",
        &[
            "--enable-feature=native-histograms",
            "--web.enable-remote-write-receiver",
            "--web.enable-admin-api",
            "--storage.tsdb.retention.time=100y",
        ],
    ) else {
        println!("prometheus not found; only Meridian loaded");
        return;
    };
    let load = Instant::now();
    // Time-ordered batches of 20 steps across all series, as a scraping Prometheus would send them.
    let mut i = 0;
    while i < points {
        let upto = (i + 20).min(points);
        let req = prom::WriteRequest {
            timeseries: (0..n_series)
                .map(|k| prom::TimeSeries {
                    labels: labels(k)
                        .iter()
                        .map(|l| prom::Label {
                            name: l.name.into(),
                            value: l.value.into(),
                        })
                        .collect(),
                    histograms: (i..upto)
                        .map(|j| {
                            meridian_storeapi::rw_histogram::from_value(
                                t0 + j * STEP,
                                &HistogramValue::Int(histogram(k, j)),
                            )
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        meridian_testkit::post_remote_write(
            &prometheus.addr,
            &meridian_edge::receive::encode_body(&req).unwrap(),
        );
        i = upto;
    }
    println!(
        "Prometheus: remote-written in {:.1}s",
        load.elapsed().as_secs_f64()
    );
    let snap = http(
        "POST",
        &prometheus.addr,
        "/api/v1/admin/tsdb/snapshot",
        &[],
        b"",
    )
    .unwrap()
    .json();
    let snapdir = prometheus
        .data
        .join("snapshots")
        .join(snap["data"]["name"].as_str().unwrap_or_default());
    println!(
        "Prometheus 2.42: {:.2} bytes per histogram sample in blocks (its snapshot of the same samples)",
        chunk_bytes(&snapdir) as f64 / samples
    );

    println!("| query | kind | Meridian ms | Prometheus 2.42 ms | ratio |\n|---|---|---|---|---|");
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    for q in queries {
        for (kind, path) in [
            (
                "instant",
                format!(
                    "/api/v1/query?query={}&time={}",
                    urlencode(q),
                    secs(instant_t)
                ),
            ),
            (
                "range",
                format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step=60",
                    urlencode(q),
                    secs(rstart),
                    secs(rend)
                ),
            ),
        ] {
            let p = best(3, || {
                http("GET", &prometheus.addr, &path, &[], b"").is_ok_and(|r| r.status == 200)
            });
            let o = best(3, || {
                rt.block_on(async {
                    if kind == "instant" {
                        engine.instant(&querier, q, instant_t).await.is_ok()
                    } else {
                        engine
                            .range(&querier, q, rstart, rend, 60_000)
                            .await
                            .is_ok()
                    }
                })
            });
            let ms = |d: Option<std::time::Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
            println!(
                "| `{q}` | {kind} | {:.2} | {:.2} | {:.2} |",
                ms(o),
                ms(p),
                ms(o) / ms(p)
            );
        }
    }
}
