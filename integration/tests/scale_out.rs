//! Scale-out: several `meridian-gateway query` processes sharing Debian's memcached and Redis, and
//! two HA rule gateways in front of Alertmanager 0.25.
//!
//! - A range query computed by gateway A is answered by gateway B from the shared results cache with
//!   byte-identical JSON (B's cache metrics show the hits), and B's bucket store finds in the shared
//!   index and chunk caches what A's read from the bucket.
//! - memcached killed in the middle of a stream of queries: every answer still equals an uncached
//!   gateway's, and none takes longer than the cache timeout plus the uncached time.
//! - Two rule gateways with the same rules and replica labels `a` and `b`: Alertmanager's webhook gets
//!   one notification per alert group, and a third gateway deduplicates their recorded series.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_core::Labels;
use meridian_integration::demo::{T0, generate, promtool_blocks};
use meridian_integration::served::bin_dir;
use meridian_testkit::{
    CacheServer, ChildGuard, free_port, http_get, metric_sum, require, urlencode, wait_for,
};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

/// A gateway process and its HTTP address.
struct Gw {
    http: String,
    grpc: String,
    _child: ChildGuard,
}

fn gateway(dir: &Path, name: &str, args: &[String]) -> Gw {
    let gw_bin = bin_dir().join("meridian-gateway");
    assert!(
        gw_bin.exists(),
        "meridian-gateway missing (cargo build --bins)"
    );
    let (http, grpc) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = std::process::Command::new(gw_bin)
        .arg("query")
        .arg(format!("--http-address={http}"))
        .arg(format!("--grpc-address={grpc}"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    wait_for(
        &format!("gateway {name} ready"),
        Duration::from_secs(30),
        || {
            meridian_testkit::http("GET", &http, "/-/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        },
    );
    Gw {
        http,
        grpc,
        _child: guard,
    }
}

/// A FILESYSTEM bucket holding `promtool`'s blocks of 3 series × 4 h; its objstore YAML.
async fn bucket(dir: &Path, promtool: &Path) -> String {
    let series = generate(3, 960);
    let blocks = promtool_blocks(promtool, dir, &series);
    let bucket_dir = dir.join("bucket");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket_dir.display()
    );
    let bucket = Bucket::parse(&yaml, "test").unwrap();
    for b in &blocks {
        upload_block_dir(&bucket, b, &Labels::empty(), "promtool")
            .await
            .unwrap();
    }
    yaml
}

fn range_path(q: &str, start: i64, end: i64, step: i64) -> String {
    format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        urlencode(q),
        start as f64 / 1000.0,
        end as f64 / 1000.0,
        step as f64 / 1000.0
    )
}

fn metrics(gw: &Gw) -> String {
    http_get(&gw.http, "/metrics").text()
}

const QUERY: &str = "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_memcached_and_redis_caches() {
    meridian_pki::install_crypto_provider();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let (Some(memcached), Some(redis)) = (CacheServer::memcached(), CacheServer::redis()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let objstore = bucket(dir.path(), &promtool).await;
    // Results in memcached, the bucket's index in Redis, its chunks in memcached.
    let args = vec![
        format!("--objstore.config={objstore}"),
        "--query-range.split-interval=1h".to_owned(),
        format!(
            "--query-range.response-cache-config=type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\n",
            memcached.addr
        ),
        format!(
            "--index-cache.config=type: REDIS\nconfig:\n  addr: \"{}\"\n",
            redis.addr
        ),
        format!(
            "--store.caching-bucket.config=type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\nchunk_subrange_size: 16000\n",
            memcached.addr
        ),
    ];
    let a = gateway(dir.path(), "a", &args);
    let b = gateway(dir.path(), "b", &args);
    // 3 h of the 4 on the hour grid: three pieces of an hour.
    let (start, end, step) = (
        T0 + 1_800_000,
        T0 + 1_800_000 + 3 * 3_600_000 - 60_000,
        60_000,
    );
    let path = range_path(QUERY, start, end, step);
    let from_a = http_get(&a.http, &path);
    assert_eq!(from_a.status, 200, "{}", from_a.text());
    let ma = metrics(&a);
    let pieces = metric_sum(
        &ma,
        "meridian_gateway_cache_requests_total",
        "cache=\"range\",result=\"miss\"",
    );
    assert!(pieces >= 3.0, "A computed the pieces: {pieces}");
    // A's writes are asynchronous: B asks once they are in.
    wait_for("A's pieces in memcached", Duration::from_secs(10), || {
        let m = metrics(&a);
        (metric_sum(&m, "meridian_cache_writes_total", "name=\"query-range\"") >= pieces
            && metric_sum(&m, "meridian_cache_writes_total", "name=\"index\"") > 0.0
            && metric_sum(&m, "meridian_cache_writes_total", "name=\"chunks\"") > 0.0)
            .then_some(())
    });
    let from_b = http_get(&b.http, &path);
    assert_eq!(from_b.status, 200);
    assert_eq!(
        from_a.text(),
        from_b.text(),
        "B answers from the shared cache with A's bytes"
    );
    let mb = metrics(&b);
    let hit = |m: &str, f: &str| metric_sum(m, "meridian_gateway_cache_requests_total", f);
    assert_eq!(
        hit(&mb, "cache=\"range\",result=\"hit\""),
        pieces,
        "every piece a hit on B:\n{mb}"
    );
    assert_eq!(hit(&mb, "cache=\"range\",result=\"miss\""), 0.0);
    assert_eq!(
        metric_sum(
            &mb,
            "meridian_cache_hits_total",
            "name=\"query-range\",backend=\"memcached\""
        ),
        pieces
    );
    // B's bucket store: the shared index (Redis) and chunks (memcached) answer what A read. A
    // query on the same series that B evaluates first makes B read the bucket's index and chunks.
    let other = range_path(
        "max by (instance) (demo_cpu_usage_seconds_total)",
        start,
        end,
        step,
    );
    let ob = http_get(&b.http, &other);
    let oa = http_get(&a.http, &other);
    assert_eq!(oa.text(), ob.text());
    let mb = metrics(&b);
    assert!(
        metric_sum(
            &mb,
            "meridian_cache_hits_total",
            "name=\"index\",backend=\"redis\""
        ) > 0.0,
        "{mb}"
    );
    assert!(
        metric_sum(
            &mb,
            "meridian_cache_hits_total",
            "name=\"chunks\",backend=\"memcached\""
        ) > 0.0
    );
    assert_eq!(
        metric_sum(&mb, "meridian_cache_errors_total", ""),
        0.0,
        "{mb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_killed_mid_load_costs_no_answer() {
    meridian_pki::install_crypto_provider();
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let Some(mut memcached) = CacheServer::memcached() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let objstore = bucket(dir.path(), &promtool).await;
    let timeout = Duration::from_millis(200);
    let cache_yaml = |what: &str| {
        format!(
            "{what}=type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\n  timeout: {}ms\n",
            memcached.addr,
            timeout.as_millis()
        )
    };
    let cached = gateway(
        dir.path(),
        "cached",
        &[
            format!("--objstore.config={objstore}"),
            "--query-range.split-interval=1h".to_owned(),
            cache_yaml("--query-range.response-cache-config"),
            cache_yaml("--index-cache.config"),
            cache_yaml("--store.caching-bucket.config"),
        ],
    );
    // The reference: no results cache at all.
    let plain = gateway(
        dir.path(),
        "plain",
        &[
            format!("--objstore.config={objstore}"),
            "--query-range.response-cache-max-size=0".to_owned(),
        ],
    );
    let queries = [
        QUERY,
        "max_over_time(demo_memory_usage_bytes[10m])",
        "count(demo_cpu_usage_seconds_total)",
    ];
    let mut asked = 0;
    let mut slowest = (Duration::ZERO, String::new());
    for round in 0..12 {
        if round == 6 {
            memcached.kill();
        }
        for (i, q) in queries.iter().enumerate() {
            // Overlapping ranges: later rounds reuse earlier pieces while memcached lives.
            let start = T0 + (round % 4) as i64 * 1_200_000 + i as i64 * 60_000;
            let path = range_path(q, start, start + 2 * 3_600_000, 30_000);
            let t = Instant::now();
            let got = http_get(&cached.http, &path);
            let cached_time = t.elapsed();
            let t = Instant::now();
            let want = http_get(&plain.http, &path);
            let plain_time = t.elapsed();
            assert_eq!(got.status, 200, "round {round}: {}", got.text());
            assert_eq!(got.text(), want.text(), "round {round}: {q}");
            // A miss costs at most the timeout (per multi-get) on top of the uncached evaluation;
            // 100 ms of slack for a 2-core machine running both gateways.
            let bound = plain_time + timeout + Duration::from_millis(100);
            if cached_time > slowest.0 {
                slowest = (
                    cached_time,
                    format!("round {round} {q}: {cached_time:?} vs {plain_time:?} uncached"),
                );
            }
            assert!(
                cached_time <= bound,
                "round {round} {q}: {cached_time:?} with a dead memcached, uncached {plain_time:?}"
            );
            asked += 1;
        }
    }
    let m = metrics(&cached);
    assert!(
        metric_sum(&m, "meridian_cache_errors_total", "name=\"query-range\"") > 0.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "meridian_cache_hits_total", "name=\"query-range\"") > 0.0,
        "{m}"
    );
    eprintln!("{asked} queries answered correctly; slowest: {}", slowest.1);
}

/// Alertmanager's webhook: the notifications' bodies, in arrival order.
fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                seen.lock().unwrap().push(v);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ha_rule_gateways_make_one_notification_per_group() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (hook, notifications) = webhook();
    let am_config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 2s\n  group_interval: 1h\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs: [{{url: 'http://{hook}/', send_resolved: false}}]\n"
    );
    let Some((_am, am_addr)) = meridian_testkit::alertmanager_with(dir.path(), None, &am_config)
    else {
        return;
    };
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: job:always:one\n    expr: vector(1)\n  - alert: AlwaysFiring\n    expr: vector(1) > 0\n    labels: {severity: page}\n  - alert: AlsoFiring\n    expr: vector(2) > 0\n",
    )
    .unwrap();
    let mut rule_gws = Vec::new();
    for replica in ["a", "b"] {
        let data = dir.path().join(format!("data-{replica}"));
        rule_gws.push(gateway(
            dir.path(),
            &format!("rules-{replica}"),
            &[
                format!("--rule-file={}", rules.display()),
                format!("--data-dir={}", data.display()),
                "--eval-interval=1s".to_owned(),
                "--label=cluster=\"c1\"".to_owned(),
                format!("--label=replica=\"{replica}\""),
                "--alert.label-drop=replica".to_owned(),
                format!("--alertmanagers.url=http://{am_addr}"),
            ],
        ));
    }
    // Both evaluators send (each gateway's notifier counts its own sends).
    for gw in &rule_gws {
        wait_for("alerts sent", Duration::from_secs(30), || {
            (metric_sum(&metrics(gw), "meridian_notifications_sent_total", "") > 0.0).then_some(())
        });
    }
    // Two groups (one per alertname); Alertmanager waits group_wait, then notifies once per group.
    wait_for("two notifications", Duration::from_secs(30), || {
        (notifications.lock().unwrap().len() >= 2).then_some(())
    });
    // Long enough for any duplicate (a second evaluator's copy would be its own group member, not
    // a second notification; a missing label drop would make two groups' worth of alerts).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = notifications.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one notification per group: {got:#?}");
    let mut names: Vec<String> = got
        .iter()
        .map(|n| n["groupLabels"]["alertname"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["AlsoFiring", "AlwaysFiring"]);
    for n in &got {
        let alerts = n["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "the two replicas' alerts are one: {n:#}");
        let labels = &alerts[0]["labels"];
        assert!(labels.get("replica").is_none(), "{labels}");
        assert_eq!(labels["cluster"], "c1");
    }
    // The recorded series of both evaluators, read through a gateway that deduplicates them.
    let reader = gateway(
        dir.path(),
        "reader",
        &[
            format!("--endpoint={}", rule_gws[0].grpc),
            format!("--endpoint={}", rule_gws[1].grpc),
            "--query.replica-label=replica".to_owned(),
        ],
    );
    let answer = wait_for("recorded series", Duration::from_secs(30), || {
        let r = http_get(
            &reader.http,
            &format!("/api/v1/query?query={}", urlencode("job:always:one")),
        )
        .json();
        r["data"]["result"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|_| r.clone())
    });
    let result = answer["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "deduplicated: {answer}");
    assert_eq!(
        result[0]["metric"],
        serde_json::json!({"__name__": "job:always:one", "cluster": "c1"})
    );
}
