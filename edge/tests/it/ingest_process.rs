//! The `meridian-edge run` process with real peers.
//!
//! - `prometheus_remote_write_loses_nothing`: a real Prometheus 2.42 scrapes itself and node_exporter every
//!   second and remote-writes to the edge. The edge is SIGKILLed mid-stream and restarted on the same
//!   port and data directory; Prometheus retries. At the end every sample in Prometheus' own TSDB (read
//!   with `promtool tsdb dump`) is in the edge with the same value, and nothing else is.
//! - `reload_by_signal_endpoint_and_file_change`: SIGHUP, `POST /-/reload` and a ConfigMap-style symlink
//!   swap each apply a new config; an invalid config is refused with its line, the old one keeps
//!   scraping, and `meridian_config_last_reload_successful` drops to 0. The edge scrapes itself.
//! - `refused_samples_are_visible_and_the_rest_is_stored`: a target exposing a sample a year ahead and
//!   remote-write requests with far-future samples, invalid series and a 2.0 Content-Type. The
//!   far-future sample shows in the target's `lastError` (health stays up), in
//!   `meridian_tsdb_out_of_bound_samples_total` and in the log; the requests are answered 400 / 415;
//!   the valid series are stored and nothing refused is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_core::{MatchType, Matcher};
use meridian_testkit::{
    ChildGuard, Prometheus, free_port, http, http_get, metric_value, promtool_dump, require,
    wait_for,
};
use meridian_tsdb::db::{Db, DbOptions};

use crate::support::{signal, start_edge, stop_gracefully};

#[test]
fn prometheus_remote_write_loses_nothing() {
    let (Some(promtool), Some(node_exporter)) = (
        require("promtool", "apt-get install prometheus"),
        require(
            "prometheus-node-exporter",
            "apt-get install prometheus-node-exporter",
        ),
    ) else {
        return;
    };
    let seconds: u64 = std::env::var("MERIDIAN_RW_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let ne_addr = format!("127.0.0.1:{}", free_port());
    let _ne = ChildGuard(
        Command::new(node_exporter)
            .arg(format!("--web.listen-address={ne_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edge_cfg = dir.path().join("edge.yml");
    std::fs::write(&edge_cfg, "global:\n  external_labels: {cluster: test}\n").unwrap();
    let edge_data = dir.path().join("edge-data");
    let edge_addr = format!("127.0.0.1:{}", free_port());
    let edge_log = dir.path().join("edge.log");
    let mut edge = Some(start_edge(&edge_cfg, &edge_data, &edge_addr, &edge_log, false).0);
    let remote_write = format!(
        "remote_write:\n  - url: http://{edge_addr}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n"
    );
    let scraping = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['$PROMETHEUS_ADDR']}}]\n  - job_name: node\n    static_configs: [{{targets: ['{ne_addr}']}}]\n{remote_write}"
    );
    let Some(mut prom) = Prometheus::start(dir.path(), &scraping, &[]) else {
        return;
    };
    let start = Instant::now();
    let kill_at = Duration::from_secs(seconds / 3);
    let restart_at = kill_at + Duration::from_secs(7);
    let end = Duration::from_secs(seconds);
    let mut killed = false;
    while start.elapsed() < end {
        if !killed && start.elapsed() >= kill_at {
            // SIGKILL mid-stream: no chance to flush or answer in-flight requests.
            let mut e = edge.take().unwrap();
            signal(e.pid(), "KILL");
            let _ = e.0.wait();
            killed = true;
        }
        if killed && edge.is_none() && start.elapsed() >= restart_at {
            edge = Some(start_edge(&edge_cfg, &edge_data, &edge_addr, &edge_log, false).0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stop scraping (Prometheus writes stale markers for the removed targets) and let the queue drain.
    prom.reload(&format!("global:\n  scrape_interval: 1s\n{remote_write}"));
    let mut last_highest = (0.0, Instant::now());
    wait_for(
        "Prometheus' remote-write queue to drain",
        Duration::from_secs(60),
        || {
            let text = http_get(&prom.addr, "/metrics").text();
            let highest = metric_value(
                &text,
                "prometheus_remote_storage_highest_timestamp_in_seconds",
            )?;
            let sent = metric_value(
                &text,
                "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            )?;
            let pending =
                metric_value(&text, "prometheus_remote_storage_samples_pending").unwrap_or(0.0);
            if highest != last_highest.0 {
                last_highest = (highest, Instant::now());
            }
            (pending == 0.0 && sent >= highest && last_highest.1.elapsed() > Duration::from_secs(5))
                .then_some(())
        },
    );
    let retried = prom
        .self_metric("prometheus_remote_storage_samples_retried_total")
        .unwrap_or(0.0)
        + prom
            .self_metric("prometheus_remote_storage_retried_samples_total")
            .unwrap_or(0.0);
    prom.stop();
    stop_gracefully(edge.take().unwrap());

    let theirs = promtool_dump(&promtool, &prom.data);
    let db = Db::open(&edge_data, DbOptions::default()).unwrap();
    let mut ours: HashMap<(String, i64), f64> = HashMap::new();
    for (l, samples) in db
        .samples(
            &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
    {
        let key = l.to_string();
        for s in samples {
            ours.insert((key.clone(), s.t), s.v);
        }
    }
    let missing: Vec<_> = theirs
        .iter()
        .filter(|(k, v)| match ours.get(*k) {
            Some(o) => !((o.is_nan() && v.is_nan()) || o.to_bits() == v.to_bits()),
            None => true,
        })
        .map(|(k, v)| format!("{} @{} = {v} (edge: {:?})", k.0, k.1, ours.get(k)))
        .collect();
    let extra = ours.keys().filter(|k| !theirs.contains_key(*k)).count();
    let series: BTreeSet<&String> = theirs.keys().map(|k| &k.0).collect();
    eprintln!(
        "prometheus stored {} samples of {} series in {seconds}s; retried {retried} samples after the kill; edge has {}",
        theirs.len(),
        series.len(),
        ours.len()
    );
    assert!(theirs.len() > 10_000, "too little data to be meaningful");
    assert!(
        retried > 0.0,
        "Prometheus never had to retry: the kill did not hit the stream"
    );
    assert!(
        missing.is_empty(),
        "{} samples missing or different in the edge, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(extra, 0, "the edge has samples Prometheus does not");
}

fn pools(addr: &str) -> BTreeSet<String> {
    let j = http_get(addr, "/api/v1/targets").json();
    j["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scrapePool"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn last_scrape(addr: &str, pool: &str) -> String {
    let j = http_get(addr, "/api/v1/targets").json();
    j["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scrapePool"] == pool)
        .map(|t| t["lastScrape"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn reload_by_signal_endpoint_and_file_change() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let job = |name: &str| {
        format!(
            "  - job_name: {name}\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{addr}']}}]\n"
        )
    };
    let config = |jobs: &[&str]| {
        let mut s = String::from("scrape_configs:\n");
        for j in jobs {
            s.push_str(&job(j));
        }
        s
    };
    // A ConfigMap mount: edge.yml -> ..data/edge.yml, ..data -> ..<version>.
    let mount = dir.path().join("config");
    std::fs::create_dir_all(&mount).unwrap();
    let mut version = 0;
    let mut publish = |text: &str| {
        version += 1;
        let v = mount.join(format!("..v{version}"));
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("edge.yml"), text).unwrap();
        let tmp = mount.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
        if !mount.join("edge.yml").exists() {
            std::os::unix::fs::symlink("..data/edge.yml", mount.join("edge.yml")).unwrap();
        }
    };
    publish(&config(&["self"]));
    let cfg_path = mount.join("edge.yml");
    let data = dir.path().join("data");
    let log = dir.path().join("edge.log");
    let wait_pools = |want: BTreeSet<String>, how: &str| {
        wait_for(
            &format!("pools {want:?} after {how}"),
            Duration::from_secs(20),
            || (pools(&addr) == want).then_some(()),
        )
    };
    // Phase A, without the file watcher, so only the signal or the request can apply a change.
    let (edge, _) = start_edge(&cfg_path, &data, &addr, &log, false);
    wait_pools(set(&["self"]), "start");
    // The edge scrapes its own /metrics.
    wait_for("the edge to scrape itself", Duration::from_secs(10), || {
        let j = http_get(&addr, "/api/v1/targets").json();
        (j["data"]["activeTargets"][0]["health"] == "up").then_some(())
    });
    // SIGHUP.
    publish(&config(&["self", "hup"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pools(&addr),
        set(&["self"]),
        "nothing reloads without a trigger"
    );
    signal(edge.pid(), "HUP");
    wait_pools(set(&["self", "hup"]), "SIGHUP");
    // POST /-/reload applies before it answers.
    publish(&config(&["self", "endpoint"]));
    let r = http("POST", &addr, "/-/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(pools(&addr), set(&["self", "endpoint"]));
    // An invalid config: refused with its line, by the endpoint and by SIGHUP; the old one keeps scraping.
    publish("scrape_configs:\n  - job_name: self\n    scrape_intervall: 1s\n");
    let r = http("POST", &addr, "/-/reload", &[], b"").unwrap();
    assert_eq!(r.status, 500);
    let msg = r.text();
    assert!(
        msg.contains("scrape_intervall") && msg.contains("line 3"),
        "{msg}"
    );
    signal(edge.pid(), "HUP");
    let metrics = http_get(&addr, "/metrics").text();
    assert_eq!(
        metric_value(&metrics, "meridian_config_last_reload_successful"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(pools(&addr), set(&["self", "endpoint"]));
    let before = last_scrape(&addr, "self");
    wait_for(
        "the old config to keep scraping",
        Duration::from_secs(10),
        || (last_scrape(&addr, "self") > before).then_some(()),
    );
    stop_gracefully(edge);

    // Phase B, with the watcher: a ConfigMap symlink swap alone applies the change.
    publish(&config(&["self"]));
    let (edge, _) = start_edge(&cfg_path, &data, &addr, &log, true);
    wait_pools(set(&["self"]), "start");
    publish(&config(&["self", "watched"]));
    wait_pools(set(&["self", "watched"]), "a ConfigMap symlink swap");
    let metrics = http_get(&addr, "/metrics").text();
    assert_eq!(
        metric_value(&metrics, "meridian_config_last_reload_successful"),
        Some(1.0)
    );
    // The standard process metrics, as the mixins' dashboards read them.
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(
            metric_value(&metrics, name).is_some(),
            "{name} missing:\n{metrics}"
        );
    }
    stop_gracefully(edge);
}

/// Serves `body` as a text exposition on a loopback port, forever (the thread ends with the test).
fn serve_exposition(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn post_write(
    addr: &str,
    content_type: &str,
    req: &meridian_storeapi::proto::prometheus::WriteRequest,
) -> (u16, String) {
    let body = meridian_edge::receive::encode_body(req).unwrap();
    let r = http(
        "POST",
        addr,
        "/api/v1/write",
        &[
            ("Content-Type", content_type),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
        &body,
    )
    .unwrap();
    (r.status, r.text())
}

fn series(
    name: &str,
    extra: &[(&str, &str)],
    t: i64,
) -> meridian_storeapi::proto::prometheus::TimeSeries {
    use meridian_storeapi::proto::prometheus::{Label, Sample, TimeSeries};
    TimeSeries {
        labels: std::iter::once(("__name__", name))
            .chain(extra.iter().copied())
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .collect(),
        samples: vec![Sample {
            value: 1.0,
            timestamp: t,
        }],
        ..Default::default()
    }
}

#[test]
fn refused_samples_are_visible_and_the_rest_is_stored() {
    use meridian_storeapi::proto::prometheus::WriteRequest;
    let dir = tempfile::tempdir().unwrap();
    let now = meridian_core::time::now_ms();
    let year = 365 * 24 * 3600 * 1000;
    let target = serve_exposition(format!("present 1\nfuture 2 {}\n", now + year));
    let cfg = dir.path().join("edge.yml");
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs:\n  - job_name: future\n    scrape_interval: 1s\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("edge.log");
    // Port 0: the edge takes a free port and says which, so no other process can take it first.
    let (edge, addr) = start_edge(&cfg, &data, "127.0.0.1:0", &log, false);

    // The scrape: stored but for the future sample, which the target's lastError names.
    let t = wait_for("the target's lastError", Duration::from_secs(30), || {
        let j = http_get(&addr, "/api/v1/targets").json();
        let t = j["data"]["activeTargets"][0].clone();
        t["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
            .then_some(t)
    });
    let e = t["lastError"].as_str().unwrap();
    assert!(e.contains("out of bounds") && e.contains("future"), "{t}");
    assert_eq!(t["health"], "up", "{t}");

    // Remote write: a 2.0 message is 415; far-future and invalid series are refused (400), the rest
    // stored. The version header is not consulted (Prometheus v3).
    let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let (status, text) = post_write(&addr, v2, &WriteRequest::default());
    assert_eq!(status, 415, "{text}");
    let mixed = WriteRequest {
        timeseries: vec![
            series("rw_valid", &[], now),
            series("rw_future", &[], now + year),
            series("rw_invalid", &[("bad-name", "x")], now),
            series("rw_min", &[], i64::MIN),
        ],
        ..Default::default()
    };
    let (status, text) = post_write(&addr, "application/x-protobuf", &mixed);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("3 sample(s) refused, 1 stored"), "{text}");

    let metrics = http_get(&addr, "/metrics").text();
    let future = metric_value(
        &metrics,
        "meridian_tsdb_out_of_bound_samples_total{reason=\"too_far_in_future\"}",
    )
    .unwrap_or(0.0);
    assert!(future >= 2.0, "scrape + remote write: {future}\n{metrics}");
    let range = metric_value(
        &metrics,
        "meridian_tsdb_out_of_bound_samples_total{reason=\"out_of_range\"}",
    );
    assert_eq!(range, Some(1.0), "{metrics}");
    let unsupported = metric_value(&metrics, "meridian_receive_requests_total{code=\"415\"}");
    assert_eq!(unsupported, Some(1.0), "{metrics}");
    stop_gracefully(edge);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("sample refused as out of bounds"), "{text}");

    let db = Db::open(&data, DbOptions::default()).unwrap();
    let names: BTreeSet<String> = db
        .samples(
            &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(l, _)| l.get_or_empty("__name__").to_owned())
        .collect();
    assert!(
        names.contains("rw_valid") && names.contains("present"),
        "{names:?}"
    );
    for refused in ["future", "rw_future", "rw_invalid", "rw_min"] {
        assert!(!names.contains(refused), "{refused} stored: {names:?}");
    }
}
