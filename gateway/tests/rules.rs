//! Rules inside the gateway: recording rules evaluated over the fan-out land in the gateway's own TSDB,
//! are queryable through its HTTP API like any store's series, and are still there after a restart;
//! alerting rules show in `/api/v1/alerts` and `/api/v1/rules` in Prometheus' shapes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_edge::Labels;
use meridian_edge::sample::{Sample, now_ms};
use meridian_edge::storeapi::memstore::MemStore;
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_gateway::rules::RulesOptions;

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
    opts.rules = Some(r);
    Gateway::start(opts).await.unwrap()
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
