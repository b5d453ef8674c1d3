//! History from object storage next to Debian's Prometheus 2.42: blocks written by `promtool tsdb
//! create-blocks-from openmetrics`, given a `thanos` meta section and uploaded to a bucket, are served by
//! the gateway's bucket store (`--objstore.config-file`); PromQL instant and range queries over its
//! HTTP API answer what Prometheus answers from the same blocks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_core::Labels;
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_integration::demo::{T0, generate, promtool_blocks};
use meridian_testkit::{Prometheus, http_get, require, urlencode};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

/// Result series by labels, each with its `(time, value)` points.
fn by_labels(answer: &serde_json::Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    assert_eq!(answer["status"], "success", "{answer}");
    let data = &answer["data"];
    let mut out = BTreeMap::new();
    for r in data["result"].as_array().unwrap() {
        let key = r["metric"].to_string();
        let points: Vec<&serde_json::Value> = match r.get("values") {
            Some(v) => v.as_array().unwrap().iter().collect(),
            None => vec![&r["value"]],
        };
        let parsed = points
            .into_iter()
            .map(|p| {
                (
                    p[0].as_f64().unwrap(),
                    p[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            })
            .collect();
        out.insert(key, parsed);
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_blocks_in_the_bucket_answer_like_prometheus() {
    meridian_pki::install_crypto_provider();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    // 4 h at 15 s: promtool cuts 2 h blocks, so the range crosses block boundaries.
    let series = generate(3, 960);
    let dir = tempfile::tempdir().unwrap();
    let blocks = promtool_blocks(&promtool, dir.path(), &series);
    assert!(blocks.len() >= 2, "{blocks:?}");
    let bucket_dir = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let bucket = Bucket::parse(
        &format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket_dir.display()
        ),
        "test",
    )
    .unwrap();
    for b in &blocks {
        upload_block_dir(&bucket, b, &Labels::empty(), "promtool")
            .await
            .unwrap();
    }
    // Prometheus may compact its copy; the bucket has its own.
    let Some(prom) = Prometheus::start(
        dir.path(),
        "global: {}\n",
        &["--storage.tsdb.retention.time=100y"],
    ) else {
        return;
    };
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    let gw = Gateway::start(GatewayOptions {
        bucket: Some(store.clone()),
        ..GatewayOptions::new(
            EndpointGroup {
                specs: vec![],
                transport: meridian_gateway::Transport::Plaintext,
            },
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let ours = gw.http_addr().to_string();
    assert_eq!(store.blocks().len(), blocks.len());

    let secs = |t: i64| format!("{}.{:03}", t / 1000, t % 1000);
    let (start, end) = (secs(T0 + 600_500), secs(T0 + 4 * 3_600_000 - 60_500));
    let queries = [
        "demo_cpu_usage_seconds_total",
        "sum by (mode) (rate(demo_cpu_usage_seconds_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(demo_api_request_duration_seconds_bucket[5m])))",
        "count_over_time(demo_memory_usage_bytes[30m])",
        "demo_disk_usage_bytes offset 1h",
    ];
    let mut compared = 0;
    for q in queries {
        for path in [
            format!(
                "/api/v1/query_range?query={}&start={start}&end={end}&step=60",
                urlencode(q)
            ),
            format!("/api/v1/query?query={}&time={end}", urlencode(q)),
        ] {
            let want = by_labels(&http_get(&prom.addr, &path).json());
            let got = by_labels(&http_get(&ours, &path).json());
            assert!(!want.is_empty(), "{path}: Prometheus answered nothing");
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>(),
                "{path}: series differ"
            );
            for (k, w) in &want {
                let g = &got[k];
                assert_eq!(w.len(), g.len(), "{path}: {k}: point count");
                for (a, b) in w.iter().zip(g) {
                    assert!(a.0 == b.0 && close(a.1, b.1), "{path}: {k}: {a:?} vs {b:?}");
                    compared += 1;
                }
            }
        }
    }
    println!("{compared} points agree with Prometheus 2.42");
    let m = store.metrics();
    assert!(m.fetched_total() > 0);
    gw.shutdown().await;
}
