//! The gateway's HTTP API side by side with Debian's Prometheus 2.42 on the same data:
//!
//! - `promtool` as the client: `query instant`, `query range`, `query series --match` and
//!   `query labels` print the same against both;
//! - bad requests (query, time, `end < start`, `step <= 0`, too many points, missing `match[]`, ...)
//!   get the same status code and `errorType`, and the same message where Prometheus 3 kept 2.42's.
//!
//! Data: demo-shaped series written as OpenMetrics, turned into blocks by promtool for Prometheus; the
//! same samples in an in-memory store behind a StoreAPI server that the gateway binary's library finds
//! as a static endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_core::Labels;
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_integration::demo::{T0, generate, prometheus_from_blocks};
use meridian_storeapi::Store;
use meridian_storeapi::memstore::MemStore;
use meridian_testkit::{http_get, require};

const POINTS: i64 = 480;

async fn start_gateway(series: &[meridian_gateway::queryable::SeriesData]) -> (Gateway, String) {
    let mem = MemStore::new(Labels::empty());
    for s in series {
        mem.append(&s.labels, &s.samples).unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(mem);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let spawned = meridian_storeapi::server::spawn(
        store,
        listener,
        None,
        Duration::from_secs(60),
        stop.clone().cancelled_owned(),
    )
    .unwrap();
    // The server lives as long as the test process.
    std::mem::forget(spawned);
    std::mem::forget(stop);
    let gw = Gateway::start(GatewayOptions::new(
        EndpointGroup {
            specs: vec![store_addr.parse().unwrap()],
            transport: meridian_gateway::Transport::Plaintext,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ))
    .await
    .unwrap();
    let addr = gw.http_addr().to_string();
    (gw, addr)
}

fn promtool_out(promtool: &std::path::Path, args: &[String]) -> (bool, String) {
    meridian_testkit::status_and_output(std::process::Command::new(promtool).args(args))
}

/// Instant vectors come back in no promised order: compare their lines as a set.
fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

fn secs(t: i64) -> String {
    format!("{}.{:03}", t / 1000, t % 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_and_error_shapes_match_prometheus() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let series = generate(2, POINTS);
    let dir = tempfile::tempdir().unwrap();
    let Some(prom) = prometheus_from_blocks(&promtool, dir.path(), &series) else {
        return;
    };
    let (gw, ours) = start_gateway(&series).await;
    let servers = [
        ("prometheus", format!("http://{}", prom.addr)),
        ("meridian", format!("http://{ours}")),
    ];
    let t = secs(T0 + 3_600_500);
    let (start, end) = (secs(T0 + 1_800_500), secs(T0 + 5_400_500));
    let time = format!("--time={t}");
    let (from, to) = (format!("--start={start}"), format!("--end={end}"));
    let args = |a: &[&str]| -> Vec<String> { a.iter().map(|x| (*x).to_owned()).collect() };
    let instant = |q: &str| args(&["query", "instant", "URL", q, &time]);
    let ranged =
        |what: &str, arg: &str, last: &str| args(&["query", what, "URL", arg, &from, &to, last]);
    // (promtool arguments, whether the answer is an instant vector in no promised order)
    let cases: Vec<(Vec<String>, bool)> = vec![
        (instant("demo_cpu_usage_seconds_total"), true),
        (
            instant("sum by (mode) (rate(demo_cpu_usage_seconds_total[5m]))"),
            true,
        ),
        (
            instant(
                "histogram_quantile(0.9, sum by (le) (rate(demo_api_request_duration_seconds_bucket[5m])))",
            ),
            true,
        ),
        (instant("scalar(sum(demo_num_cpus))"), false),
        (instant("sum("), false),
        (
            ranged(
                "range",
                "avg by (instance) (demo_memory_usage_bytes)",
                "--step=1m",
            ),
            false,
        ),
        (
            ranged(
                "range",
                "rate(demo_cpu_usage_seconds_total{mode=\"idle\"}[2m])",
                "--step=90s",
            ),
            false,
        ),
        (
            ranged(
                "series",
                "--match=demo_disk_usage_bytes",
                "--match=demo_num_cpus",
            ),
            false,
        ),
        (args(&["query", "labels", "URL", "mode", &from, &to]), false),
        (
            args(&["query", "labels", "URL", "__name__", &from, &to]),
            false,
        ),
    ];
    let mut compared = 0;
    for (args, unordered) in &cases {
        let outs: Vec<(bool, String)> = servers
            .iter()
            .map(|(_, url)| {
                let a: Vec<String> = args
                    .iter()
                    .map(|x| {
                        if *x == "URL" {
                            url.clone()
                        } else {
                            (*x).to_owned()
                        }
                    })
                    .collect();
                promtool_out(&promtool, &a)
            })
            .collect();
        let (p, m) = (&outs[0], &outs[1]);
        assert_eq!(
            p.0, m.0,
            "promtool {args:?}: exit status\nprometheus: {}\nmeridian: {}",
            p.1, m.1
        );
        if p.0 {
            assert!(
                !p.1.trim().is_empty(),
                "promtool {args:?}: empty answer from Prometheus"
            );
            if *unordered {
                assert_eq!(sorted_lines(&p.1), sorted_lines(&m.1), "promtool {args:?}");
            } else {
                assert_eq!(p.1, m.1, "promtool {args:?}");
            }
        }
        compared += 1;
    }
    println!("{compared} promtool commands print the same against Prometheus 2.42 and the gateway");

    // Error shapes: (path, whether the message must be equal too).
    let bad: &[(&str, bool)] = &[
        ("/api/v1/query?query=sum(", false),
        ("/api/v1/query?query=up&time=abc", true),
        ("/api/v1/query_range?query=up&start=10&end=5&step=1", true),
        ("/api/v1/query_range?query=up&start=1&end=5&step=0", true),
        ("/api/v1/query_range?query=up&start=1&end=5&step=-1", true),
        (
            "/api/v1/query_range?query=up&start=0&end=11001&step=1",
            true,
        ),
        ("/api/v1/query_range?query=up&start=abc&end=5&step=1", true),
        ("/api/v1/query_range?query=up&start=1&end=5&step=abc", true),
        ("/api/v1/query_range?query=up&end=5&step=1", true),
        (
            "/api/v1/query_range?query=rate(up)&start=1&end=5&step=1",
            false,
        ),
        ("/api/v1/series", true),
        ("/api/v1/series?match[]=%7B%7D", false),
        ("/api/v1/series?match[]=up&start=abc", true),
        ("/api/v1/labels?start=abc", true),
        ("/api/v1/label/job/values?end=abc", true),
        ("/api/v1/query?query=up&timeout=abc", true),
        ("/api/v1/metadata?limit=abc", true),
        ("/api/v1/query_exemplars?query=up&start=5&end=1", true),
        (
            "/api/v1/query?query=demo_num_cpus%20%2B%20on()%20demo_num_cpus&time=1700010000",
            false,
        ),
    ];
    for (path, same_message) in bad {
        let p = http_get(&prom.addr, path);
        let m = http_get(&ours, path);
        let (pj, mj) = (p.json(), m.json());
        assert_eq!(
            p.status, m.status,
            "{path}: status\nprometheus: {pj}\nmeridian: {mj}"
        );
        assert_eq!(pj["status"], mj["status"], "{path}");
        assert_eq!(
            pj["errorType"], mj["errorType"],
            "{path}\nprometheus: {pj}\nmeridian: {mj}"
        );
        if *same_message {
            // 2.42 spelled one prefix "Invalid time value"; Prometheus 3 lower-cased it.
            let norm = |v: &serde_json::Value| v["error"].as_str().unwrap_or("").to_lowercase();
            assert_eq!(norm(&pj), norm(&mj), "{path}: message");
        }
    }
    println!("{} bad requests answered alike", bad.len());
    gw.shutdown().await;
}
