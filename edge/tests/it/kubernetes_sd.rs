//! `kubernetes_sd_configs` against a stand-in Kubernetes API server that serves TLS, accepts only its
//! current bearer token, lists and watches nodes with resource versions, can answer a watch with
//! `410 Gone` (a watch from before a compaction), and proxies kubelet metrics at `/api/v1/nodes/<name>/proxy/metrics`, as the API server
//! does for seed 001's `kubernetes-nodes` job (which this test's job follows).
//!
//! Shown: targets come from the API and are scraped through the proxy path with the CA and token;
//! rotating the token file keeps discovery and scraping working without a restart; `410 Gone` on a
//! watch makes the edge list again, finds what the lost events carried, and no target disappears
//! meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meridian_pki::tls::TlsIncoming;
use meridian_testkit::{http_get, wait_for};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The stand-in's state: nodes, their event history, the accepted token, what was asked.
struct Api {
    token: Mutex<String>,
    /// Every event so far: (resourceVersion, type, object).
    history: Mutex<Vec<(u64, &'static str, Value)>>,
    nodes: Mutex<BTreeMap<String, Value>>,
    rv: watch::Sender<u64>,
    /// Bumped to end every open watch.
    close: watch::Sender<u64>,
    /// Watches from a resourceVersion below this get `410 Gone` (history compacted).
    compacted: AtomicU64,
    /// (path and query, authorized).
    requests: Mutex<Vec<(String, bool)>>,
}

type Shared = Arc<Api>;

fn node(name: &str, ip: &str, rv: u64) -> Value {
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "resourceVersion": rv.to_string(),
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
    })
}

impl Api {
    fn new(token: &str) -> Shared {
        Arc::new(Api {
            token: Mutex::new(token.into()),
            history: Mutex::new(Vec::new()),
            nodes: Mutex::new(BTreeMap::new()),
            rv: watch::Sender::new(1),
            close: watch::Sender::new(0),
            compacted: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }

    /// Adds a node; `announce: false` leaves no watch event (as if compacted away).
    fn add_node(&self, name: &str, ip: &str, announce: bool) {
        let rv = *self.rv.borrow() + 1;
        let obj = node(name, ip, rv);
        self.nodes.lock().unwrap().insert(name.into(), obj.clone());
        if announce {
            self.history.lock().unwrap().push((rv, "ADDED", obj));
        }
        self.rv.send_replace(rv);
    }

    fn authorized(&self, h: &HeaderMap, what: String) -> bool {
        let want = format!("Bearer {}", self.token.lock().unwrap());
        let ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str());
        self.requests.lock().unwrap().push((what, ok));
        ok
    }

    fn lists(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ok)| *ok && p.starts_with("/api/v1/nodes?") && !p.contains("watch=true"))
            .count()
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        ),
    )
        .into_response()
}

async fn nodes(
    State(api): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> Response {
    let what = format!(
        "/api/v1/nodes?{}",
        q.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    if !api.authorized(&h, what) {
        return unauthorized();
    }
    if q.get("watch").map(String::as_str) != Some("true") {
        let items: Vec<Value> = api.nodes.lock().unwrap().values().cloned().collect();
        let rv = *api.rv.borrow();
        return axum::Json(json!({"kind": "NodeList", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": rv.to_string()}, "items": items}))
        .into_response();
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if from < api.compacted.load(Ordering::SeqCst) {
        let ev = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": "too old resource version", "reason": "Expired", "code": 410}});
        return Response::new(Body::from(format!("{ev}\n")));
    }
    let rv_rx = api.rv.subscribe();
    let close_rx = api.close.subscribe();
    let stream = futures::stream::unfold(
        (api, from, rv_rx, close_rx),
        |(api, mut cursor, mut rv_rx, mut close_rx)| async move {
            loop {
                let next = api
                    .history
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(rv, _, _)| *rv > cursor)
                    .cloned();
                if let Some((rv, ty, obj)) = next {
                    cursor = rv;
                    let line = format!("{}\n", json!({"type": ty, "object": obj}));
                    return Some((
                        Ok::<_, std::io::Error>(line),
                        (api, cursor, rv_rx, close_rx),
                    ));
                }
                tokio::select! {
                    r = rv_rx.changed() => if r.is_err() { return None },
                    _ = close_rx.changed() => return None,
                }
            }
        },
    );
    Response::new(Body::from_stream(stream))
}

async fn proxy_metrics(
    State(api): State<Shared>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Response {
    if !api.authorized(&h, format!("/api/v1/nodes/{name}/proxy/metrics")) {
        return unauthorized();
    }
    if !api.nodes.lock().unwrap().contains_key(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    format!("kubelet_running_pods{{node=\"{name}\"}} 3\n").into_response()
}

/// The targets API's active targets: instance -> (health, lastScrape).
fn targets(addr: &str) -> BTreeMap<String, (String, String)> {
    let j = http_get(addr, "/api/v1/targets").json();
    j["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["labels"]["instance"].as_str().unwrap().to_owned(),
                (
                    t["health"].as_str().unwrap().to_owned(),
                    t["lastScrape"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

async fn wait_until(
    addr: &str,
    what: &'static str,
    f: impl Fn(&BTreeMap<String, (String, String)>) -> bool + Send + 'static,
) {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        wait_for(what, Duration::from_secs(20), || {
            let t = targets(&addr);
            f(&t).then_some(())
        })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_through_the_api_proxy_with_token_rotation_and_410() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (pki, _) = crate::support::ca_and_server(
        dir.path(),
        &["kubernetes.default.svc"],
        &["127.0.0.1".parse().unwrap()],
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-1\n").unwrap();

    let api = Api::new("token-1");
    api.add_node("node-a", "10.0.0.1", true);
    let tls = crate::support::server_tls("apiserver", &pki);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(tls, listener).unwrap();
    let api_addr = incoming.local_addr();
    let app = axum::Router::new()
        .route("/api/v1/nodes", axum::routing::get(nodes))
        .route(
            "/api/v1/nodes/{name}/proxy/metrics",
            axum::routing::get(proxy_metrics),
        )
        .with_state(api.clone());
    tokio::spawn(async move { axum::serve(incoming, app).await });

    // Seed 001's kubernetes-nodes job; the API server is named instead of found in-cluster, and is
    // also where the proxy path is scraped (kubernetes.default.svc:443 in a cluster).
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kubernetes-nodes
    kubernetes_sd_configs:
      - role: node
        api_server: https://{api_addr}
        tls_config:
          ca_file: {ca}
        bearer_token_file: {token}
    scheme: https
    tls_config:
      ca_file: {ca}
      server_name: kubernetes.default.svc
    bearer_token_file: {token}
    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_node_label_(.+)
      - target_label: __address__
        replacement: {api_addr}
      - source_labels: [__meta_kubernetes_node_name]
        regex: (.+)
        target_label: __metrics_path__
        replacement: /api/v1/nodes/${{1}}/proxy/metrics
      - source_labels: [__meta_kubernetes_node_name]
        target_label: instance
"#,
        ca = pki.join("ca.crt").display(),
        token = token_file.display(),
    );
    // The same API through a kubeconfig file (its own client and informer), with the token read from
    // a file named there.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n  - name: k\n    cluster:\n      server: https://{api_addr}\n      certificate-authority: {ca}\ncontexts:\n  - name: c\n    context: {{cluster: k, user: u}}\nusers:\n  - name: u\n    user:\n      tokenFile: {token}\n",
            ca = pki.join("ca.crt").display(),
            token = token_file.display(),
        ),
    )
    .unwrap();
    let config = format!(
        "{config}  - job_name: kubeconfig-nodes\n    kubernetes_sd_configs:\n      - role: node\n        kubeconfig_file: {}\n    relabel_configs:\n      - {{source_labels: [__meta_kubernetes_node_name], target_label: instance, replacement: 'kc-$1'}}\n      - {{target_label: __address__, replacement: '127.0.0.1:1'}}\n",
        kubeconfig.display()
    );
    let agent = crate::support::start_agent(dir.path(), &config).await;
    let addr = agent.http_addr().to_string();

    // Discovered through the API and scraped through its proxy path, over TLS with the token.
    wait_until(&addr, "node-a scraped through the API proxy", |t| {
        t.get("node-a").is_some_and(|h| h.0 == "up")
    })
    .await;
    wait_until(&addr, "node-a found through the kubeconfig", |t| {
        t.contains_key("kc-node-a")
    })
    .await;

    // Token rotation: the file changes, the server accepts only the new token from now on, and the
    // open watches end (as a bound token's expiry ends them).
    std::fs::write(&token_file, "token-2\n").unwrap();
    *api.token.lock().unwrap() = "token-2".into();
    let rotated = nanos_now();
    api.close.send_modify(|g| *g += 1);
    api.add_node("node-b", "10.0.0.2", true);
    wait_until(
        &addr,
        "node-b discovered and both scraped after rotation",
        move |t| {
            ["node-a", "node-b"].iter().all(|n| {
                t.get(*n)
                    .is_some_and(|h| h.0 == "up" && nanos(&h.1) > rotated)
            })
        },
    )
    .await;
    let with_new_token = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, ok)| *ok && p.starts_with("/api/v1/nodes?"))
        .count();
    assert!(with_new_token >= 3, "{:?}", api.requests.lock().unwrap());

    // 410 Gone: the next watch is refused as too old; a node added without an event (compacted away)
    // is found only by listing again. No target may disappear meanwhile.
    let lists_before = api.lists();
    api.add_node("node-c", "10.0.0.3", false);
    api.compacted.store(*api.rv.borrow(), Ordering::SeqCst);
    api.close.send_modify(|g| *g += 1);
    let poll_addr = addr.clone();
    let flaps = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut missing = Vec::new();
        while Instant::now() < deadline {
            let t = targets(&poll_addr);
            for n in ["node-a", "node-b"] {
                if !t.contains_key(n) {
                    missing.push(n);
                }
            }
            if t.contains_key("node-c") {
                return (true, missing);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (false, missing)
    })
    .await
    .unwrap();
    assert!(flaps.0, "node-c never appeared after the 410");
    assert!(
        flaps.1.is_empty(),
        "targets vanished across the relist: {:?}",
        flaps.1
    );
    assert!(
        api.lists() > lists_before,
        "no list after 410 Gone: {:?}",
        api.requests.lock().unwrap()
    );
    agent.shutdown().await;
}

fn nanos_now() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// A `lastScrape` value in nanoseconds since the epoch.
fn nanos(rfc3339: &str) -> i128 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
}
