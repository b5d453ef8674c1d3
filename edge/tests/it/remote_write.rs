//! Remote write out of the edge, against a receiver whose answers the test chooses (the exactness,
//! outage, kill and agent-mode tests with real receivers are in `remote_write_process`).
//!
//! `answers_relabeling_and_metadata`: one edge, four queues to one receiver. `write_relabel_configs`
//! keeps one series and drops the other (counted in `samples_dropped_total`); external labels are added
//! where the series lacks them (the series' own value wins); a 400 is dropped after one attempt and
//! counted in `samples_failed_total`; a 429 is dropped the same way unless `retry_on_http_429`, which
//! retries it until it is stored; metadata arrives in its own requests. The samples enter the sender
//! through its own remote-write receiver, so what must arrive is known exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use prost::Message;

use meridian_storeapi::proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use meridian_testkit::wait_for;

#[derive(Default)]
struct Receiver {
    /// Samples stored, by path: (labels, t, v).
    stored: BTreeMap<String, Vec<(String, i64, f64)>>,
    /// Requests seen, by path.
    requests: BTreeMap<String, usize>,
    /// Metadata families received, by path.
    metadata: BTreeMap<String, Vec<String>>,
    headers_ok: bool,
    /// `/flaky` answers 503 while set.
    failing: bool,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(
    State(r): State<Shared>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut g = r.lock().unwrap();
    let n = {
        let c = g.requests.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let ok = headers
        .get("content-encoding")
        .is_some_and(|v| v == "snappy")
        && headers
            .get("x-prometheus-remote-write-version")
            .is_some_and(|v| v == "0.1.0")
        && headers
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf")
        && headers.get("x-scope").is_some_and(|v| v == "tenant-a");
    if path == "keep" {
        // Only this queue sets the extra header; every one of its requests must carry all four.
        g.headers_ok = ok && (g.requests["keep"] == 1 || g.headers_ok);
    }
    let w = WriteRequest::decode(&snap::raw::Decoder::new().decompress_vec(&body).unwrap()[..])
        .unwrap();
    let status = match path.as_str() {
        "r400" => StatusCode::BAD_REQUEST,
        "r429" => StatusCode::TOO_MANY_REQUESTS,
        "r429retry" if n <= 3 => StatusCode::TOO_MANY_REQUESTS,
        "flaky" if g.failing => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::NO_CONTENT,
    };
    if status.is_success() {
        for m in &w.metadata {
            g.metadata
                .entry(path.clone())
                .or_default()
                .push(m.metric_family_name.clone());
        }
        for ts in w.timeseries {
            let l: Vec<String> = ts
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
            for s in ts.samples {
                g.stored
                    .entry(path.clone())
                    .or_default()
                    .push((l.join(","), s.timestamp, s.value));
            }
        }
    }
    status
}

/// The sum of the series of `name` whose labels include `remote_name="queue"`.
fn queue_metric(text: &str, name: &str, queue: &str) -> f64 {
    let want = format!("remote_name=\"{queue}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn series(name: &str, extra: &[(&str, &str)], t0: i64, n: i64) -> TimeSeries {
    let mut labels = vec![Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    labels.extend(extra.iter().map(|(k, v)| Label {
        name: (*k).into(),
        value: (*v).into(),
    }));
    TimeSeries {
        labels,
        samples: (0..n)
            .map(|i| Sample {
                value: i as f64,
                timestamp: t0 + i * 1000,
            })
            .collect(),
        ..Default::default()
    }
}

/// Serves the test receiver; its address.
async fn serve(shared: Shared) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    raddr
}

/// Remote-writes `req` into the edge at `addr`.
async fn push(addr: String, req: &WriteRequest) {
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let resp = tokio::task::spawn_blocking(move || {
        meridian_testkit::http(
            "POST",
            &addr,
            "/api/v1/write",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
            ],
            &body,
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());
}

/// Shutdown gives up on a receiver that keeps failing once the flush deadline has passed, and the
/// next start sends what was not sent (the queue's progress file), and only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_deadline_then_resume_after_restart() {
    use meridian_edge::agent::{Agent, AgentOptions};
    let shared: Shared = Arc::default();
    shared.lock().unwrap().failing = true;
    let raddr = serve(shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.yml");
    std::fs::write(
        &cfg,
        format!(
            "remote_write:\n- url: http://{raddr}/flaky\n  queue_config: {{batch_send_deadline: 100ms, min_backoff: 10ms, max_backoff: 50ms}}\n  metadata_config: {{send: false}}\n"
        ),
    )
    .unwrap();
    let start = || async {
        Agent::start(AgentOptions {
            remote_flush_deadline: Duration::from_secs(1),
            ..AgentOptions::new(
                cfg.clone(),
                dir.path().join("data"),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        })
        .await
        .unwrap()
    };
    let agent = start().await;
    let t0 = meridian_core::time::now_ms() - 60_000;
    push(
        agent.http_addr().to_string(),
        &WriteRequest {
            timeseries: vec![series("first", &[], t0, 10)],
            metadata: vec![],
        },
    )
    .await;
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("failed attempts", Duration::from_secs(30), || {
            (s.lock()
                .unwrap()
                .requests
                .get("flaky")
                .copied()
                .unwrap_or(0)
                > 2)
            .then_some(())
        })
    })
    .await
    .unwrap();
    let began = std::time::Instant::now();
    agent.shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "shutdown took {:?} with a 1 s flush deadline",
        began.elapsed()
    );
    assert!(!shared.lock().unwrap().stored.contains_key("flaky"));
    shared.lock().unwrap().failing = false;
    let agent = start().await;
    push(
        agent.http_addr().to_string(),
        &WriteRequest {
            timeseries: vec![series("second", &[], t0, 5)],
            metadata: vec![],
        },
    )
    .await;
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "the backlog and the new samples",
            Duration::from_secs(30),
            || (s.lock().unwrap().stored.get("flaky").map_or(0, Vec::len) >= 15).then_some(()),
        )
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.shutdown().await;
    let g = std::mem::take(&mut *shared.lock().unwrap());
    let mut got: Vec<(String, i64)> = g.stored["flaky"]
        .iter()
        .map(|x| (x.0.clone(), x.1))
        .collect();
    got.sort();
    let mut want: Vec<(String, i64)> = (0..10)
        .map(|i| ("__name__=first".to_owned(), t0 + i * 1000))
        .chain((0..5).map(|i| ("__name__=second".to_owned(), t0 + i * 1000)))
        .collect();
    want.sort();
    assert_eq!(got, want, "each sample exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_relabeling_and_metadata() {
    let shared: Shared = Arc::default();
    let raddr = serve(shared.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let q = "queue_config: {batch_send_deadline: 100ms, min_backoff: 10ms, max_backoff: 50ms}";
    let config = format!(
        "global:\n  external_labels: {{cluster: c1, env: prod}}\nremote_write:\n\
         - url: http://{raddr}/keep\n  name: kept\n  headers: {{X-Scope: tenant-a}}\n  {q}\n  metadata_config: {{send_interval: 200ms}}\n  write_relabel_configs: [{{source_labels: [__name__], regex: 'keep_.*', action: keep}}]\n\
         - url: http://{raddr}/r400\n  name: bad\n  {q}\n  metadata_config: {{send: false}}\n\
         - url: http://{raddr}/r429\n  name: no429\n  {q}\n  metadata_config: {{send: false}}\n\
         - url: http://{raddr}/r429retry\n  name: yes429\n  queue_config: {{batch_send_deadline: 100ms, min_backoff: 10ms, max_backoff: 50ms, retry_on_http_429: true}}\n  metadata_config: {{send: false}}\n"
    );
    let agent = crate::support::start_agent(dir.path(), &config).await;
    let addr = agent.http_addr().to_string();
    let t0 = meridian_core::time::now_ms() - 60_000;
    let req = WriteRequest {
        timeseries: vec![
            series("keep_a", &[("env", "own")], t0, 20),
            series("drop_b", &[], t0, 10),
        ],
        metadata: vec![meridian_storeapi::proto::prometheus::MetricMetadata {
            r#type: 1,
            metric_family_name: "keep_a".into(),
            help: "kept".into(),
            unit: String::new(),
        }],
    };
    push(addr, &req).await;

    let metrics = |agent: &meridian_edge::agent::Agent| {
        let a = agent.http_addr().to_string();
        std::thread::spawn(move || meridian_testkit::http_get(&a, "/metrics").text())
            .join()
            .unwrap()
    };
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("every queue to settle", Duration::from_secs(30), || {
            let g = s.lock().unwrap();
            let kept = g.stored.get("keep").map_or(0, Vec::len);
            let retried = g.stored.get("r429retry").map_or(0, Vec::len);
            let meta = g.metadata.contains_key("keep");
            (kept == 20 && retried == 30 && meta).then_some(())
        })
    })
    .await
    .unwrap();
    let text = metrics(&agent);
    let g = std::mem::take(&mut *shared.lock().unwrap());
    // Relabeling kept keep_a only; the series' env wins over the external one.
    let kept = &g.stored["keep"];
    assert!(
        kept.iter()
            .all(|(l, _, _)| l == "__name__=keep_a,cluster=c1,env=own"),
        "{kept:?}"
    );
    let times: Vec<i64> = kept.iter().map(|x| x.1).collect();
    assert_eq!(times, (0..20).map(|i| t0 + i * 1000).collect::<Vec<_>>());
    assert!(g.headers_ok, "remote-write headers");
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_dropped_total",
            "kept"
        ),
        10.0
    );
    // Metadata is sent again every `send_interval` (200 ms), as Prometheus does: once or more.
    let meta = &g.metadata["keep"];
    assert!(
        !meta.is_empty() && meta.iter().all(|m| m == "keep_a"),
        "{meta:?}"
    );
    // 400: one attempt, dropped, counted.
    assert!(!g.stored.contains_key("r400"));
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_failed_total",
            "bad"
        ),
        30.0
    );
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_retried_total",
            "bad"
        ),
        0.0
    );
    // 429 without retry_on_http_429: the same.
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_failed_total",
            "no429"
        ),
        30.0
    );
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_retried_total",
            "no429"
        ),
        0.0
    );
    assert_eq!(
        g.requests["r429"], g.requests["r400"],
        "a 429 is not retried"
    );
    // 429 with it: retried until stored, nothing failed.
    assert_eq!(g.stored["r429retry"].len(), 30);
    assert!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_retried_total",
            "yes429"
        ) >= 30.0
    );
    assert_eq!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_failed_total",
            "yes429"
        ),
        0.0
    );
    assert_eq!(
        queue_metric(&text, "prometheus_remote_storage_samples_pending", "yes429"),
        0.0
    );
    agent.shutdown().await;
}

/// Remote write over TLS: a sender with `tls_config.ca_file` writes to an edge receiver served over
/// HTTPS; a sender without the CA is refused by certificate and keeps retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_over_tls() {
    use meridian_edge::agent::{Agent, AgentOptions};
    let dir = tempfile::tempdir().unwrap();
    let (pki, _ca) =
        crate::support::ca_and_server(dir.path(), &["localhost"], &["127.0.0.1".parse().unwrap()]);
    let rcfg = dir.path().join("rx.yml");
    std::fs::write(&rcfg, "global: {}\n").unwrap();
    let rx = Agent::start(AgentOptions {
        http_tls: Some(crate::support::server_tls("rx", &pki)),
        ..AgentOptions::new(
            rcfg,
            dir.path().join("rx-data"),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let raddr = rx.http_addr();
    let q = "queue_config: {batch_send_deadline: 100ms, min_backoff: 10ms, max_backoff: 50ms}\n  metadata_config: {send: false}";
    let config = format!(
        "remote_write:\n- url: https://{raddr}/api/v1/write\n  name: tls\n  tls_config: {{ca_file: {}}}\n  {q}\n- url: https://{raddr}/api/v1/write\n  name: untrusted\n  {q}\n",
        pki.join("ca.crt").display()
    );
    let scfg = dir.path().join("sender.yml");
    std::fs::write(&scfg, config).unwrap();
    // The untrusted queue never sends: a short flush deadline ends it at shutdown.
    let sender = Agent::start(AgentOptions {
        remote_flush_deadline: Duration::from_secs(1),
        ..AgentOptions::new(
            scfg,
            dir.path().join("sender-data"),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let t0 = meridian_core::time::now_ms() - 60_000;
    push(
        sender.http_addr().to_string(),
        &WriteRequest {
            timeseries: vec![series("over_tls", &[], t0, 10)],
            metadata: vec![],
        },
    )
    .await;
    let m = [meridian_core::Matcher::equal("__name__", "over_tls")];
    for _ in 0..300 {
        let n: usize = rx
            .db()
            .samples(&m, i64::MIN, i64::MAX)
            .unwrap()
            .iter()
            .map(|(_, s)| s.len())
            .sum();
        if n == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = rx.db().samples(&m, i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 10, "every sample over TLS, exactly once");
    let a = sender.http_addr().to_string();
    let text =
        tokio::task::spawn_blocking(move || meridian_testkit::http_get(&a, "/metrics").text())
            .await
            .unwrap();
    assert!(
        queue_metric(
            &text,
            "prometheus_remote_storage_samples_retried_total",
            "untrusted"
        ) > 0.0
    );
    sender.shutdown().await;
    rx.shutdown().await;
}
