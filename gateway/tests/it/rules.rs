//! Rules inside the gateway: recording rules evaluated over the fan-out land in the gateway's own TSDB,
//! are queryable through its HTTP API like any store's series, and are still there after a restart;
//! alerting rules show in `/api/v1/alerts` and `/api/v1/rules` in Prometheus' shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::Labels;
use meridian_core::sample::Sample;
use meridian_core::time::now_ms;
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_gateway::rules::RulesOptions;
use meridian_storeapi::memstore::MemStore;

async fn get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (addr, path) = (addr.to_string(), path.to_owned());
    tokio::task::spawn_blocking(move || meridian_testkit::http_get(&addr, &path).json())
        .await
        .unwrap()
}

async fn post_reload(addr: std::net::SocketAddr) -> meridian_testkit::HttpResponse {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        meridian_testkit::http("POST", &addr, "/-/reload", &[], b"").unwrap()
    })
    .await
    .unwrap()
}

async fn start(rules: &Path, data: &Path) -> Gateway {
    Gateway::start(options(rules, data, None).await)
        .await
        .unwrap()
}

/// A gateway without endpoints, evaluating `rules` every second, optionally routing alerts natively.
async fn options(rules: &Path, data: &Path, router: Option<Arc<Router>>) -> GatewayOptions {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = GatewayOptions::new(
        EndpointGroup {
            specs: vec![],
            transport: meridian_gateway::Transport::Plaintext,
        },
        grpc,
        http,
    );
    let mut r = RulesOptions::new(vec![rules.display().to_string()], data.to_owned());
    r.eval_interval = Duration::from_secs(1);
    r.external_labels = Labels::from_pairs([("ruler", "r1")]);
    r.router = router;
    opts.rules = Some(r);
    opts
}

/// Polls an instant query until it has a result.
async fn wait_result(addr: std::net::SocketAddr, query: &str) -> serde_json::Value {
    let path = format!("/api/v1/query?query={}", meridian_testkit::urlencode(query));
    for _ in 0..100 {
        let r = get(addr, &path).await;
        if r["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return r["data"]["result"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{query}: no result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_series_are_queryable_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: SomeDown\n    expr: up == 0\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} down'}\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let gw = start(&rules, &data).await;
    // The input: 3 instances of `up`, one of them down, around now.
    let mem = MemStore::new(Labels::from_pairs([("cluster", "a")]));
    let now = now_ms();
    for (i, v) in [(0, 1.0), (1, 1.0), (2, 0.0)] {
        let l = Labels::from_pairs([
            ("__name__", "up"),
            ("job", "node"),
            ("instance", &format!("n{i}")),
        ]);
        let samples: Vec<Sample> = (-12..=120)
            .map(|k| Sample::new(now + k * 5_000, v))
            .collect();
        mem.append(&l, &samples).unwrap();
    }
    gw.endpoints().add_local("input", Arc::new(mem));
    gw.endpoints().refresh_now().await;

    let result = wait_result(gw.http_addr(), "job:up:sum").await;
    assert_eq!(result[0]["metric"]["job"], "node", "{result}");
    assert_eq!(
        result[0]["metric"]["ruler"], "r1",
        "the rule store's external label: {result}"
    );
    assert_eq!(result[0]["value"][1], "2", "{result}");
    let alerts = wait_result(gw.http_addr(), "ALERTS{alertstate=\"firing\"}").await;
    assert_eq!(alerts[0]["metric"]["instance"], "n2", "{alerts}");

    let a = get(gw.http_addr(), "/api/v1/alerts").await;
    assert_eq!(a["status"], "success");
    let list = a["data"]["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{a}");
    assert_eq!(list[0]["state"], "firing");
    assert_eq!(list[0]["labels"]["alertname"], "SomeDown");
    assert_eq!(list[0]["annotations"]["summary"], "n2 down");
    assert_eq!(list[0]["value"], "0e+00");
    let r = get(gw.http_addr(), "/api/v1/rules").await;
    let group = &r["data"]["groups"][0];
    assert_eq!(group["name"], "g", "{r}");
    assert_eq!(group["interval"], 1.0);
    assert_eq!(group["rules"][0]["type"], "recording");
    assert_eq!(group["rules"][0]["health"], "ok", "{r}");
    assert_eq!(group["rules"][1]["type"], "alerting");
    assert_eq!(group["rules"][1]["state"], "firing");
    assert_eq!(group["rules"][1]["alerts"][0]["labels"]["severity"], "page");
    let only_alerts = get(gw.http_addr(), "/api/v1/rules?type=alert").await;
    assert_eq!(
        only_alerts["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bad = get(gw.http_addr(), "/api/v1/rules?type=x").await;
    assert_eq!(bad["errorType"], "bad_data", "{bad}");
    let recorded_at = now_ms();
    gw.shutdown().await;

    // Restarted without the input store and with another rule: what was recorded is still served.
    std::fs::write(
        &rules,
        "groups:\n- name: other\n  rules:\n  - record: one\n    expr: vector(1)\n",
    )
    .unwrap();
    let gw = start(&rules, &data).await;
    let path = format!(
        "/api/v1/query_range?query=job:up:sum&start={}&end={}&step=1",
        (now - 1000) as f64 / 1000.0,
        recorded_at as f64 / 1000.0
    );
    let r = get(gw.http_addr(), &path).await;
    let values = r["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(values.len() >= 2, "recorded series lost on restart: {r}");
    assert!(values.iter().all(|v| v[1] == "2"), "{r}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_groups_and_keeps_a_bad_file_out() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: a\n  rules:\n  - record: one\n    expr: vector(1)\n",
    )
    .unwrap();
    let gw = start(&rules, &dir.path().join("data")).await;
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&get(gw.http_addr(), "/api/v1/rules").await), ["a"]);
    std::fs::write(
        &rules,
        "groups:\n- name: b\n  rules:\n  - record: two\n    expr: vector(2)\n",
    )
    .unwrap();
    let resp = post_reload(gw.http_addr()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(names(&get(gw.http_addr(), "/api/v1/rules").await), ["b"]);
    std::fs::write(
        &rules,
        "groups:\n- name: c\n  rules:\n  - record: 'bad name'\n    expr: up\n",
    )
    .unwrap();
    let resp = post_reload(gw.http_addr()).await;
    assert_eq!(resp.status, 500);
    assert!(
        resp.text()
            .contains("invalid recording rule name: bad name"),
        "{}",
        resp.text()
    );
    assert_eq!(
        names(&get(gw.http_addr(), "/api/v1/rules").await),
        ["b"],
        "the bad file must not replace the good one"
    );
    gw.shutdown().await;
}

// ---- the native router ----

use meridian_gateway::alerting::dispatch::{Router, RouterOptions, SendError, WebhookSender};
use meridian_gateway::alerting::route;
use meridian_gateway::rules::{AlertSink, OutAlert};

/// Records every POST with the (paused) time it was made; fails the first `fail` POSTs to `fail_url`
/// with a 5xx.
struct Recorder {
    start: tokio::time::Instant,
    posts: std::sync::Mutex<Vec<(Duration, String, serde_json::Value)>>,
    fail_url: String,
    fail: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl WebhookSender for Recorder {
    async fn post(&self, hook: &route::Webhook, body: bytes::Bytes) -> Result<(), SendError> {
        let url = hook.url.as_str();
        let at = self.start.elapsed();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        self.posts.lock().unwrap().push((at, url.to_owned(), json));
        if url == self.fail_url
            && self
                .fail
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
        {
            return Err(SendError {
                retry: true,
                message: "503 Service Unavailable".into(),
            });
        }
        Ok(())
    }
}

impl Recorder {
    /// The POSTs so far, as (time, url, alert instances by status).
    fn take(&self) -> Vec<(Duration, String, serde_json::Value)> {
        std::mem::take(&mut *self.posts.lock().unwrap())
    }
}

fn alert(pairs: &[(&str, &str)], starts_at: i64, ends_at: i64) -> OutAlert {
    OutAlert {
        labels: Labels::from_pairs(pairs.iter().copied()),
        annotations: [("summary".to_owned(), format!("{pairs:?}"))].into(),
        starts_at,
        ends_at,
        generator_url: "http://gw/graph".into(),
    }
}

/// `instance` of each alert in a payload, with its status: `i1:firing`.
fn instances(payload: &serde_json::Value) -> Vec<String> {
    payload["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["labels"]["instance"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap()
            )
        })
        .collect()
}

const MIN: Duration = Duration::from_secs(60);

/// The dispatcher's timing rules, under paused time: group_wait, group_interval, repeat_interval,
/// resolution, inhibition, an old alert flushing a new group at once, and retries on 5xx.
#[tokio::test(start_paused = true)]
async fn router_groups_and_times_notifications_as_alertmanager() {
    let config = route::parse(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [cluster]
receivers:
  - name: team
    webhook_configs: [{url: 'http://team.example/hook'}]
  - name: pager
    webhook_configs: [{url: 'http://pager.example/hook', send_resolved: false}]
"#,
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let base: i64 = 1_700_000_000_000;
    let recorder = Arc::new(Recorder {
        start,
        posts: Default::default(),
        fail_url: "http://pager.example/hook".into(),
        fail: 2.into(),
    });
    let mut o = RouterOptions::new(config);
    o.sender = recorder.clone();
    o.clock = Arc::new(move || base + start.elapsed().as_millis() as i64);
    o.external_labels = Labels::from_pairs([("cluster", "c1"), ("replica", "a")]);
    o.label_drop = vec!["replica".into()];
    o.external_url = "http://gw.example".into();
    let router = Router::new(o);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(router.clone().run(stop.clone()));
    let now = || base + start.elapsed().as_millis() as i64;
    let far = base + 24 * 3600 * 1000;
    fn warning(i: &str) -> [(&str, &str); 3] {
        [
            ("alertname", "HighCPU"),
            ("severity", "warning"),
            ("instance", i),
        ]
    }
    let until = |d: Duration| tokio::time::sleep_until(start + d);

    router.send(vec![alert(&warning("i1"), now(), far)]);
    until(Duration::from_secs(10)).await;
    router.send(vec![alert(&warning("i2"), now(), far)]);
    until(Duration::from_secs(29)).await;
    assert!(recorder.take().is_empty(), "nothing before group_wait");
    until(Duration::from_secs(31)).await;
    let posts = recorder.take();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (at, url, p) = &posts[0];
    assert_eq!(*at, Duration::from_secs(30));
    assert_eq!(url, "http://team.example/hook");
    assert_eq!(instances(p), ["i1:firing", "i2:firing"]);
    // Webhook payload version 4, as Alertmanager 0.25 writes it.
    assert_eq!(p["version"], "4");
    assert_eq!(p["status"], "firing");
    assert_eq!(p["receiver"], "team");
    assert_eq!(p["groupKey"], r#"{}:{alertname="HighCPU"}"#);
    assert_eq!(
        p["groupLabels"],
        serde_json::json!({"alertname": "HighCPU"})
    );
    assert_eq!(
        p["commonLabels"],
        serde_json::json!({"alertname": "HighCPU", "severity": "warning", "cluster": "c1"}),
        "external labels added, the replica label dropped"
    );
    assert_eq!(p["externalURL"], "http://gw.example");
    assert_eq!(p["truncatedAlerts"], 0);
    assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(p["alerts"][0]["startsAt"], "2023-11-14T22:13:20Z");
    assert_eq!(p["alerts"][0]["generatorURL"], "http://gw/graph");
    assert_eq!(p["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);

    // A new alert in a group that has flushed waits for the group_interval.
    until(MIN).await;
    router.send(vec![alert(&warning("i3"), now(), far)]);
    until(5 * MIN + Duration::from_secs(29)).await;
    assert!(recorder.take().is_empty());
    until(5 * MIN + Duration::from_secs(31)).await;
    let posts = recorder.take();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, 5 * MIN + Duration::from_secs(30));
    assert_eq!(
        instances(&posts[0].2),
        ["i1:firing", "i2:firing", "i3:firing"]
    );

    // A resolution is told at the next flush (send_resolved defaults to true for webhooks).
    until(6 * MIN).await;
    router.send(vec![alert(&warning("i1"), base, now())]);
    until(11 * MIN).await;
    let posts = recorder.take();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, 10 * MIN + Duration::from_secs(30));
    assert_eq!(
        instances(&posts[0].2),
        ["i1:resolved", "i2:firing", "i3:firing"]
    );
    assert!(posts[0].2["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z");

    // Nothing changes: the next word is after repeat_interval (1h after 10m30s, at a flush).
    until(75 * MIN).await;
    assert!(
        recorder.take().is_empty(),
        "no repeat before repeat_interval"
    );
    until(76 * MIN).await;
    let posts = recorder.take();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, 75 * MIN + Duration::from_secs(30));
    assert_eq!(
        instances(&posts[0].2),
        ["i2:firing", "i3:firing"],
        "resolved i1 left the group"
    );

    // A critical alert that started long ago: its new group flushes at once (no group_wait), to the
    // pager, retried after two 503s (500 ms, then 750 ms later). It inhibits c1's warnings.
    until(80 * MIN).await;
    router.send(vec![alert(
        &[("alertname", "NodeDown"), ("severity", "critical")],
        now() - 3_600_000,
        far,
    )]);
    until(81 * MIN).await;
    let posts = recorder.take();
    let times: Vec<Duration> = posts.iter().map(|p| p.0).collect();
    assert_eq!(
        times,
        [
            80 * MIN,
            80 * MIN + Duration::from_millis(500),
            80 * MIN + Duration::from_millis(1250)
        ],
        "{posts:?}"
    );
    assert!(posts.iter().all(|p| p.1 == "http://pager.example/hook"));
    assert_eq!(
        posts[2].2["groupKey"],
        r#"{}/{severity="critical"}:{alertname="NodeDown"}"#
    );

    // A warning in another cluster is not inhibited; c1's warnings are, so only it is sent.
    router.send(vec![alert(
        &[
            ("alertname", "HighCPU"),
            ("severity", "warning"),
            ("instance", "i4"),
            ("cluster", "c2"),
        ],
        now(),
        far,
    )]);
    until(86 * MIN).await;
    let posts = recorder.take();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, 85 * MIN + Duration::from_secs(30));
    assert_eq!(
        instances(&posts[0].2),
        ["i4:firing"],
        "c1's warnings are inhibited"
    );

    // The pager does not send resolved alerts: the resolution is logged, not sent.
    router.send(vec![alert(
        &[("alertname", "NodeDown"), ("severity", "critical")],
        base,
        now(),
    )]);
    until(100 * MIN).await;
    let posts = recorder.take();
    assert!(
        posts.iter().all(|p| p.1 != "http://pager.example/hook"),
        "{posts:?}"
    );
    // Once the inhibiting alert resolved, c1's warnings are back in the team's notifications.
    assert!(
        posts
            .iter()
            .any(|p| instances(&p.2) == ["i2:firing", "i3:firing", "i4:firing"]),
        "{posts:?}"
    );
    stop.cancel();
    task.await.unwrap();
}

/// A webhook receiver on loopback: answers 503 to its first POST, then 200; hands every body over with
/// the request's Authorization header, as `{"auth": …, "body": …}`.
async fn webhook_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let first = first.clone();
                async move {
                    let auth = headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let body = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
                    let _ = tx.send(serde_json::json!({"auth": auth, "body": body}));
                    if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, rx)
}

/// End to end in real time: an alerting rule in the gateway fires, the native router (given by file,
/// as `--alert.routing-config-file` gives it) groups it and POSTs to a webhook over loopback with the
/// webhook's basic auth, retries the 503, and later tells the resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_alerts_to_a_webhook() {
    let (hook, mut bodies) = webhook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - alert: SomeDown\n    expr: up == 0\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} down'}\n",
    )
    .unwrap();
    let routing = dir.path().join("routing.yml");
    std::fs::write(
        &routing,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 200ms\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: 'http://{hook}/hook'\n    http_config: {{basic_auth: {{username: u, password: p}}}}\n"
        ),
    )
    .unwrap();
    let mut ro = RouterOptions::new(route::load(&routing).unwrap());
    ro.external_labels = Labels::from_pairs([("ruler", "r1"), ("replica", "a")]);
    ro.label_drop = vec!["replica".into()];
    let opts = options(&rules, &dir.path().join("data"), Some(Router::new(ro))).await;
    let gw = Gateway::start(opts).await.unwrap();

    // n2 is down for the next 4 s, then up again.
    let mem = MemStore::new(Labels::from_pairs([("cluster", "a")]));
    let now = now_ms();
    for i in 0..3 {
        let l = Labels::from_pairs([
            ("__name__", "up"),
            ("job", "node"),
            ("instance", &format!("n{i}")),
        ]);
        let samples: Vec<Sample> = (-12..=120)
            .map(|k| {
                let t = now + k * 500;
                let down = i == 2 && t < now + 4_000;
                Sample::new(t, if down { 0.0 } else { 1.0 })
            })
            .collect();
        mem.append(&l, &samples).unwrap();
    }
    gw.endpoints().add_local("input", Arc::new(mem));
    gw.endpoints().refresh_now().await;

    async fn next(
        bodies: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    ) -> serde_json::Value {
        let got = tokio::time::timeout(Duration::from_secs(20), bodies.recv())
            .await
            .expect("a webhook POST within 20 s")
            .unwrap();
        // http_config's basic_auth, base64("u:p").
        assert_eq!(got["auth"], "Basic dTpw");
        got["body"].clone()
    }
    let refused = next(&mut bodies).await;
    let retried = next(&mut bodies).await;
    assert_eq!(refused, retried, "the 503 is retried with the same payload");
    assert_eq!(retried["status"], "firing", "{retried}");
    assert_eq!(retried["groupKey"], r#"{}:{alertname="SomeDown"}"#);
    let a = &retried["alerts"][0];
    assert_eq!(a["labels"]["instance"], "n2");
    assert_eq!(a["labels"]["ruler"], "r1");
    assert!(a["labels"].get("replica").is_none(), "{a}");
    assert_eq!(a["annotations"]["summary"], "n2 down");
    // Then, once n2 is up, the resolution (the group_interval is 1 s).
    let resolved = loop {
        let b = next(&mut bodies).await;
        if b["status"] == "resolved" {
            break b;
        }
    };
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert_eq!(resolved["alerts"][0]["labels"]["instance"], "n2");
    gw.shutdown().await;
}
