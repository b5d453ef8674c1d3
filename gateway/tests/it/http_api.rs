//! The Prometheus HTTP API as its clients use it, over real HTTP: a request suite written from Grafana's
//! Prometheus datasource (health check, POST form range queries, label browser, metadata, rules,
//! exemplar probe, buildinfo), Prometheus' error shapes, Thanos' parameters (`dedup`,
//! `replicaLabels[]`, `storeMatch[]`, `partial_response`), gzip, the results cache and `/metrics`.
//!
//! The gateway runs in process over in-memory stores: cluster `a` with two HA replicas (replica 1 is
//! missing the first half hour), cluster `b` with one; every store holds a counter scraped every 15 s
//! (10 per scrape) and an `up` gauge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_core::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::api::{Api, ApiOptions};
use meridian_gateway::fanout::{Fanout, FanoutOptions, StaticStores, StoreRef};
use meridian_storeapi::Store;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::proto::thanos as pb;
use meridian_testkit::{HttpResponse, urlencode};

/// Data starts here (ms, a multiple of 15 s and of one hour).
const T0: i64 = 1_699_999_200_000;
/// Two hours of samples.
const POINTS: i64 = 480;
/// "Now" for the API: long after the data, so every cache piece is old enough to keep.
const NOW: i64 = T0 + 30 * 24 * 3_600_000;

struct Gw {
    addr: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gw {
    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn counter_value(t: i64) -> f64 {
    ((t - T0) / 15_000 * 10) as f64
}

fn store(cluster: &str, replica: &str, from: i64) -> MemStore {
    let s = MemStore::new(Labels::from_pairs([
        ("cluster", cluster),
        ("replica", replica),
    ]));
    let samples: Vec<Sample> = (from..POINTS)
        .map(|i| {
            let t = T0 + i * 15_000;
            Sample {
                t,
                v: counter_value(t),
            }
        })
        .collect();
    for instance in ["i1", "i2"] {
        s.append(
            &Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("instance", instance),
                ("job", "api"),
            ]),
            &samples,
        )
        .unwrap();
        let up: Vec<Sample> = samples.iter().map(|x| Sample { t: x.t, v: 1.0 }).collect();
        s.append(
            &Labels::from_pairs([("__name__", "up"), ("instance", instance), ("job", "api")]),
            &up,
        )
        .unwrap();
    }
    s.set_metadata(
        "http_requests_total",
        vec![pb::Meta {
            r#type: "counter".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    );
    s
}

/// Starts the API over the three stores (plus `extra`), on a free port.
async fn start(extra: Vec<StoreRef>) -> (Gw, Arc<Api>) {
    start_with(extra, ApiOptions::default()).await
}

/// [`start`] with options.
async fn start_with(extra: Vec<StoreRef>, opts: ApiOptions) -> (Gw, Arc<Api>) {
    let stores: Vec<(String, Arc<dyn Store>)> = vec![
        ("a-0".into(), Arc::new(store("a", "0", 0))),
        ("a-1".into(), Arc::new(store("a", "1", 120))),
        ("b-0".into(), Arc::new(store("b", "0", 0))),
    ];
    let mut set = StaticStores::probe(stores).await.unwrap();
    set.0.extend(extra);
    let fanout = Arc::new(Fanout::new(
        Arc::new(set),
        FanoutOptions {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
    ));
    let api = Arc::new(
        Api::new(
            fanout,
            Arc::new(|| serde_json::json!({"status": "success", "data": {}})),
            opts,
            |_| {},
        )
        .with_clock(|| NOW),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(meridian_pki::serve::serve_http(
        listener,
        None,
        meridian_gateway::api::router(api.clone()),
        meridian_pki::serve::WebLimits::default(),
        stop.clone(),
    ));
    (Gw { addr, stop, task }, api)
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let (addr, method, path, body) = (
        addr.to_owned(),
        method.to_owned(),
        path.to_owned(),
        body.to_owned(),
    );
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        meridian_testkit::http(&method, &addr, &path, &h, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    })
    .await
    .unwrap()
}

async fn get(addr: &str, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[], "").await
}

async fn post_form(addr: &str, path: &str, body: &str) -> HttpResponse {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

fn secs(t: i64) -> String {
    format!("{}.{:03}", t / 1000, t % 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_datasource_requests() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;

    // Health check: `1+1` at time=4, answered byte for byte as Prometheus does.
    let r = get(a, "/api/v1/query?query=1%2B1&time=4").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
    );
    // Grafana's POST variant of the same.
    let r = post_form(a, "/api/v1/query", "query=1%2B1&time=4").await;
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
    );

    // A panel: POST form query_range, start/end floored to the step, step as float seconds.
    let step = 60_000;
    let start = (T0 + 3_600_000 + 17_000) / step * step;
    let end = (T0 + 7_000_000) / step * step;
    let body = format!(
        "query={}&start={}&end={}&step=60",
        urlencode("sum by (cluster) (http_requests_total)"),
        start / 1000,
        end / 1000
    );
    let r = post_form(a, "/api/v1/query_range", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["data"]["resultType"], "matrix");
    let result = j["data"]["result"].as_array().unwrap();
    // One series per cluster: the replicas of `a` are merged, the replica label is gone.
    let metrics: Vec<String> = result.iter().map(|s| s["metric"].to_string()).collect();
    assert_eq!(metrics, [r#"{"cluster":"a"}"#, r#"{"cluster":"b"}"#]);
    for s in result {
        let values = s["values"].as_array().unwrap();
        assert_eq!(values.len() as i64, (end - start) / step + 1);
        for (k, p) in values.iter().enumerate() {
            let t = start + k as i64 * step;
            assert_eq!(p[0].as_i64(), Some(t / 1000), "timestamps as integers");
            // Lookback: the last sample at or before t, two instances.
            let last = t - (t - T0).rem_euclid(15_000);
            let want = 2.0 * counter_value(last);
            assert_eq!(p[1].as_str(), Some(format!("{want}").as_str()), "at {t}");
        }
    }

    // Label browser: metric names with Grafana's limit, then label names for a selector.
    let r = get(
        a,
        &format!(
            "/api/v1/label/__name__/values?limit=40000&start={}&end={}",
            T0 / 1000,
            (T0 + 7_200_000) / 1000
        ),
    )
    .await;
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":["http_requests_total","up"]}"#
    );
    let r = get(
        a,
        &format!(
            "/api/v1/labels?match%5B%5D={}&start={}&end={}",
            urlencode("up{job=\"api\"}"),
            T0 / 1000,
            (T0 + 7_200_000) / 1000
        ),
    )
    .await;
    assert_eq!(
        r.json()["data"],
        serde_json::json!(["__name__", "cluster", "instance", "job"]),
        "replica labels are deduplicated away"
    );
    let r = post_form(a, "/api/v1/labels", "match[]=up").await;
    assert_eq!(r.status, 200, "labels by POST: {}", r.text());
    let r = get(a, "/api/v1/label/instance/values?match[]=up").await;
    assert_eq!(r.json()["data"], serde_json::json!(["i1", "i2"]));
    // Truncated at the limit, with Prometheus' warning.
    let r = get(a, "/api/v1/label/instance/values?limit=1").await;
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":["i1"],"warnings":["results truncated due to limit"]}"#
    );

    // Series.
    let r = get(
        a,
        &format!(
            "/api/v1/series?match[]={}",
            urlencode("up{instance=\"i2\"}")
        ),
    )
    .await;
    assert_eq!(
        r.json()["data"],
        serde_json::json!([
            {"__name__": "up", "cluster": "a", "instance": "i2", "job": "api"},
            {"__name__": "up", "cluster": "b", "instance": "i2", "job": "api"},
        ])
    );

    // Metadata (from the stores' Metadata API).
    let r = get(a, "/api/v1/metadata").await;
    assert_eq!(
        r.json()["data"],
        serde_json::json!({"http_requests_total": [{"type": "counter", "help": "Requests served.", "unit": ""}]})
    );
    let r = get(a, "/api/v1/metadata?metric=up").await;
    assert_eq!(r.json()["data"], serde_json::json!({}));

    // Rules and alerts (empty until rules exist), with Grafana's type filter.
    let r = get(a, "/api/v1/rules?type=alert").await;
    assert_eq!(r.text(), r#"{"status":"success","data":{"groups":[]}}"#);
    let r = get(a, "/api/v1/alerts").await;
    assert_eq!(r.text(), r#"{"status":"success","data":{"alerts":[]}}"#);

    // Exemplar probe: Grafana sends milliseconds.
    let r = get(
        a,
        "/api/v1/query_exemplars?query=up&start=1637830000000&end=1637830060000",
    )
    .await;
    assert_eq!(r.text(), r#"{"status":"success","data":[]}"#);

    // Buildinfo: string fields only, and no `features` (Grafana would take us for Mimir).
    let r = get(a, "/api/v1/status/buildinfo").await;
    let data = r.json()["data"].clone();
    for k in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(data[k].is_string(), "buildinfo {k}: {data}");
    }
    assert!(data.get("features").is_none());

    // format_query.
    let r = get(a, "/api/v1/format_query?query=sum%20by(job)(up)").await;
    assert_eq!(r.json()["data"], "sum by (job) (up)");

    // Every API endpoint that answers GET answers POST too (never a 405 where GET works).
    for path in [
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/label/job/values",
        "/api/v1/metadata",
        "/api/v1/query_exemplars",
        "/api/v1/format_query",
        "/api/v1/status/buildinfo",
        "/api/v1/status/config",
        "/api/v1/status/flags",
        "/api/v1/status/runtimeinfo",
        "/api/v1/rules",
        "/api/v1/alerts",
    ] {
        let g = get(
            a,
            &format!("{path}?query=up&match[]=up&start=1&end=2&step=1"),
        )
        .await;
        let p = post_form(a, path, "query=up&match[]=up&start=1&end=2&step=1").await;
        assert_eq!(g.status, 200, "GET {path}: {}", g.text());
        assert_eq!(p.status, 200, "POST {path}: {}", p.text());
        assert_eq!(g.body, p.body, "{path}: GET and POST answer alike");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_prometheus_types_and_codes() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "/api/v1/query?query=sum(",
            400,
            "bad_data",
            "invalid parameter \"query\": ",
        ),
        (
            "/api/v1/query?query=up&time=abc",
            400,
            "bad_data",
            "invalid parameter \"time\": invalid time value for 'time': cannot parse \"abc\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=10&end=5&step=1",
            400,
            "bad_data",
            "invalid parameter \"end\": end timestamp must not be before start time",
        ),
        (
            "/api/v1/query_range?query=up&start=1&end=5&step=0",
            400,
            "bad_data",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "/api/v1/query_range?query=up&start=1&end=5&step=-3",
            400,
            "bad_data",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=11001&step=1",
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ),
        (
            "/api/v1/query_range?query=up&start=x&end=5&step=1",
            400,
            "bad_data",
            "invalid parameter \"start\": cannot parse \"x\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=1&end=5&step=1h1x",
            400,
            "bad_data",
            "invalid parameter \"step\": cannot parse \"1h1x\" to a valid duration",
        ),
        (
            "/api/v1/series",
            400,
            "bad_data",
            "no match[] parameter provided",
        ),
        (
            "/api/v1/series?match[]=%7Bjob%3D~%22.*%22%7D",
            400,
            "bad_data",
            "invalid parameter \"match[]\": ",
        ),
        (
            "/api/v1/query_range?query=http_requests_total%5B5m%5D&start=1&end=5&step=1",
            400,
            "bad_data",
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
        ),
        (
            "/api/v1/query?query=up&limit=-1",
            400,
            "bad_data",
            "invalid parameter \"limit\": limit must be non-negative",
        ),
        (
            "/api/v1/query?query=up&timeout=abc",
            400,
            "bad_data",
            "invalid parameter \"timeout\": cannot parse \"abc\" to a valid duration",
        ),
        (
            "/api/v1/metadata?limit=x",
            400,
            "bad_data",
            "limit must be a number",
        ),
        (
            "/api/v1/query?query=up&dedup=maybe",
            400,
            "bad_data",
            "invalid parameter \"dedup\": ",
        ),
        (
            // Many-to-many matching: an execution error, 422.
            "/api/v1/query?query=up%20%2B%20on(job)%20up&time=1700000000",
            422,
            "execution",
            "",
        ),
    ];
    for (path, status, kind, message) in cases {
        let r = get(a, path).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["status"], "error", "{path}");
        assert_eq!(j["errorType"], *kind, "{path}");
        let got = j["error"].as_str().unwrap();
        assert!(
            got.starts_with(message),
            "{path}: error {got:?} does not start with {message:?}"
        );
        assert_eq!(j.as_object().unwrap().len(), 3, "{path}: {j}");
    }
    // An unknown path is a plain 404.
    assert_eq!(get(a, "/api/v1/nope").await.status, 404);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thanos_parameters_and_partial_responses() {
    // A fourth store is known but unhealthy: every answer carries a warning naming it.
    let broken = store("c", "0", 0);
    let meta = meridian_gateway::fanout::StoreMeta::from_info(&broken.info().await.unwrap());
    let extra = vec![StoreRef {
        name: "10.0.0.9:10901".into(),
        store: Arc::new(broken),
        meta: Some(meta),
        unhealthy: Some("connection refused".into()),
    }];
    let (gw, _) = start(extra).await;
    let a = &gw.addr;
    let t = secs(T0 + 3_600_000);
    let count = |r: &HttpResponse| {
        r.json()["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.text()))
            .len()
    };

    let r = get(a, &format!("/api/v1/query?query=up&time={t}")).await;
    assert_eq!(count(&r), 4, "2 clusters x 2 instances: {}", r.text());
    let j = r.json();
    let warnings = j["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("10.0.0.9:10901: unhealthy")
    );
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "partial answers are not cached by proxies"
    );

    // partial_response=false: the missing store fails the query.
    let r = get(
        a,
        &format!("/api/v1/query?query=up&time={t}&partial_response=false"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("10.0.0.9:10901"));

    // storeMatch[] leaves the broken store out (and cluster a): no warning.
    let r = get(
        a,
        &format!(
            "/api/v1/query?query=up&time={t}&storeMatch[]={}",
            urlencode("{cluster=\"b\"}")
        ),
    )
    .await;
    assert_eq!(count(&r), 2, "{}", r.text());
    assert!(r.json().get("warnings").is_none());
    assert_eq!(r.header("cache-control"), None);
    // ... also by address.
    let r = get(
        a,
        &format!(
            "/api/v1/query?query=up&time={t}&storeMatch[]={}",
            urlencode("{__address__=~\"a-.*\"}")
        ),
    )
    .await;
    assert_eq!(count(&r), 2, "{}", r.text());

    // dedup=false: cluster a's replicas are separate series, with their replica label.
    let r = get(a, &format!("/api/v1/query?query=up&time={t}&dedup=false")).await;
    assert_eq!(count(&r), 6, "{}", r.text());
    assert!(r.text().contains("\"replica\":\"1\""));
    // replicaLabels[] overrides the flag: deduplicating over `cluster` instead merges a and b, and
    // the replicas of a (still told apart by `replica`) stay two.
    let r = get(
        a,
        &format!("/api/v1/query?query=up&time={t}&replicaLabels[]=cluster"),
    )
    .await;
    let metrics: Vec<String> = r.json()["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].to_string())
        .collect();
    assert_eq!(metrics.len(), 4, "{metrics:?}");
    assert!(
        metrics.iter().all(|m| !m.contains("cluster")),
        "{metrics:?}"
    );
    // max_source_resolution and engine are accepted.
    let r = get(
        a,
        &format!("/api/v1/query?query=up&time={t}&max_source_resolution=5m&engine=prometheus"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_range_query_is_served_from_cache_with_identical_bytes() {
    let (gw, api) = start(vec![]).await;
    let a = &gw.addr;
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=30",
        urlencode("sum by (instance) (rate(http_requests_total[5m]))"),
        secs(T0 + 600_000),
        secs(T0 + 7_000_000),
    );
    let hits = |text: &str| {
        meridian_testkit::metric_value(
            text,
            "meridian_gateway_cache_requests_total{cache=\"response\",result=\"hit\"}",
        )
        .unwrap_or(0.0)
    };
    let first = get(a, &path).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(hits(&api.metrics_text()), 0.0);
    let second = get(a, &path).await;
    assert_eq!(second.body, first.body, "the cache never changes an answer");
    assert!(
        hits(&get(a, "/metrics").await.text()) >= 1.0,
        "{}",
        api.metrics_text()
    );
    // The same answer gzipped when asked for.
    let gz = request(a, "GET", &path, &[("Accept-Encoding", "gzip")], "").await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, first.body);
    // Another request over the same pieces (a limit makes it another whole answer) reuses them.
    let limited = path.replace("step=30", "step=30&limit=1");
    let third = get(a, &limited).await;
    assert_eq!(third.status, 200);
    assert!(third.text().contains("results truncated due to limit"));
    let piece_hits = meridian_testkit::metric_value(
        &api.metrics_text(),
        "meridian_gateway_cache_requests_total{cache=\"range\",result=\"hit\"}",
    );
    assert_eq!(piece_hits, Some(1.0), "{}", api.metrics_text());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() {
    let Some(promtool) = meridian_testkit::require("promtool", "apt-get install prometheus") else {
        return;
    };
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    get(a, "/api/v1/query?query=up").await;
    get(a, "/api/v1/query_range?query=up&start=1&end=100&step=10").await;
    get(a, "/api/v1/labels").await;
    let r = get(a, "/metrics").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for name in [
        "meridian_gateway_http_requests_total{handler=\"query\",code=\"200\",method=\"GET\"}",
        "meridian_gateway_queries_in_flight",
        "meridian_gateway_store_request_duration_seconds_count{store=\"a-0\"}",
        "meridian_gateway_cache_requests_total{cache=\"range\",result=\"miss\"}",
        "meridian_gateway_build_info{version=",
        // Issue 25: the instant query's time by phase.
        "meridian_gateway_query_phase_duration_seconds_count{phase=\"queue\"} 1",
        "meridian_gateway_query_phase_duration_seconds_count{phase=\"parse\"} 1",
        "meridian_gateway_query_phase_duration_seconds_count{phase=\"fetch\"} 1",
        "meridian_gateway_query_phase_duration_seconds_count{phase=\"eval\"} 1",
        "meridian_gateway_query_phase_duration_seconds_count{phase=\"encode\"} 1",
        // The standard process metrics the Prometheus/Thanos mixins use.
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_max_fds ",
        "process_virtual_memory_bytes ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.shutdown().await;
}

/// A store that takes `delay` before every `Series` answer.
struct SlowStore {
    inner: MemStore,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl Store for SlowStore {
    async fn info(&self) -> meridian_core::error::Result<pb::info::InfoResponse> {
        self.inner.info().await
    }

    async fn series(
        &self,
        req: pb::SeriesRequest,
    ) -> meridian_core::error::Result<meridian_storeapi::SeriesStream> {
        tokio::time::sleep(self.delay).await;
        self.inner.series(req).await
    }

    async fn label_names(
        &self,
        req: pb::LabelNamesRequest,
    ) -> meridian_core::error::Result<pb::LabelNamesResponse> {
        self.inner.label_names(req).await
    }

    async fn label_values(
        &self,
        req: pb::LabelValuesRequest,
    ) -> meridian_core::error::Result<pb::LabelValuesResponse> {
        self.inner.label_values(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stops_when_its_client_goes_away() {
    let slow = SlowStore {
        inner: store("s", "0", 0),
        delay: std::time::Duration::from_secs(60),
    };
    let meta = meridian_gateway::fanout::StoreMeta::from_info(&slow.info().await.unwrap());
    let extra = vec![StoreRef {
        name: "slow:10901".into(),
        store: Arc::new(slow),
        meta: Some(meta),
        unhealthy: None,
    }];
    let (gw, api) = start(extra).await;
    let in_flight = queries_in_flight;
    let client = hold_a_query(&gw, &api).await;
    // While the client waits, so does the query.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(in_flight(&api), Some(1.0));
    // The client goes away: the query (waiting on the slow store) is dropped, long before the store
    // would answer.
    drop(client);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_flight(&api) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query kept running after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gw.shutdown().await;
}

/// Asserts an error answer: status, `errorType` and the start of `error`.
fn assert_error(what: &str, r: &HttpResponse, status: u16, kind: &str, message: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let j = r.json();
    assert_eq!(j["errorType"], kind, "{what}: {j}");
    let got = j["error"].as_str().unwrap_or_default();
    assert!(
        got.starts_with(message),
        "{what}: error {got:?} does not start with {message:?}"
    );
}

/// Regular expressions with repeat counts Go refuses (over 1000) are refused, as Prometheus refuses
/// them, before anything compiles them: promql-parser compiles each matcher's pattern while parsing,
/// and the regex crate took tens of milliseconds per such pattern (a fuzzed query took a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_repeat_counts_over_go_limit_are_bad_data() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    let many = vec![r#"a=~"b{55555}""#; 500].join(",");
    for (q, status, kind, want) in [
        (
            r#"up{job=~"a{55555}"}"#.to_owned(),
            400,
            "bad_data",
            "invalid parameter \"query\": invalid regular expression \"a{55555}\": invalid repeat count",
        ),
        (
            format!("up{{{many}}}"),
            400,
            "bad_data",
            "invalid parameter \"query\": invalid regular expression",
        ),
        (
            r#"label_replace(up, "a", "$1", "job", "(x){1001}")"#.to_owned(),
            422,
            "execution",
            "invalid regular expression in label_replace(): (x){1001}: invalid repeat count",
        ),
    ] {
        let r = post_form(
            a,
            "/api/v1/query",
            &format!("query={}&time={}", urlencode(&q), secs(T0 + 3_600_000)),
        )
        .await;
        assert_error(&q[..q.len().min(20)], &r, status, kind, want);
    }
    gw.shutdown().await;
}

/// Issue 22, item 1: deeply nested expressions used to abort the process (stack overflow in the
/// engine's recursive walks); they are refused with `bad_data`, and the gateway keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_queries_are_refused_and_the_gateway_keeps_answering() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    let cases = [
        format!("{}up{}", "abs(".repeat(2000), ")".repeat(2000)),
        format!("{}up{}", "abs(".repeat(300), ")".repeat(300)),
        format!("{}up{}", "sum(".repeat(300), ")".repeat(300)),
        // A left-deep tree of 750 levels, without a single bracket.
        format!("1{}", "+1".repeat(750)),
        format!("{}1{}", "(".repeat(1500), ")".repeat(1500)),
        // Unary minus on a series (on a number it folds into the literal).
        format!("{}up", "-".repeat(1000)),
    ];
    for q in &cases {
        let what = &q[..q.len().min(12)];
        let r = post_form(a, "/api/v1/query", &format!("query={}", urlencode(q))).await;
        assert_error(
            what,
            &r,
            400,
            "bad_data",
            "invalid parameter \"query\": expression nesting is too deep",
        );
    }
    // The deepest trees accepted (128 levels) are evaluated within a debug build's 2 MiB stacks, and
    // the next query is answered.
    let d = meridian_gateway::promql::guard::MAX_DEPTH - 1;
    let deepest = [
        format!("{}up{}", "abs(".repeat(d), ")".repeat(d)),
        format!("{}up{}", "sum(".repeat(d), ")".repeat(d)),
        format!("{}up{}", "(".repeat(d), ")".repeat(d)),
        format!("{}up", "-".repeat(d)),
        format!("up{}", " + up".repeat(d)),
        format!("up{}", " or up".repeat(d)),
        format!("{}up{}", "sum(-abs(1 * ".repeat(d / 4), "))".repeat(d / 4)),
        format!(
            "{}up{}",
            "max_over_time((".repeat(d / 3),
            ")[5m:1m])".repeat(d / 3)
        ),
        format!(
            "{}up{}",
            "label_replace(".repeat(d),
            ", \"a\", \"$1\", \"job\", \"(.*)\")".repeat(d)
        ),
    ];
    for q in &deepest {
        let r = post_form(
            a,
            "/api/v1/query",
            &format!("query={}&time={}", urlencode(q), secs(T0 + 3_600_000)),
        )
        .await;
        assert_eq!(r.status, 200, "{}: {}", &q[..20], r.text());
    }
    let r = get(
        a,
        &format!("/api/v1/query?query=up&time={}", secs(T0 + 3_600_000)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["result"].as_array().unwrap().len(), 4);
    gw.shutdown().await;
}

/// Issue 22, item 2: subqueries allocated a value per inner step before any limit (252 GB for the
/// first query); the steps are counted against `--query.max-samples` first, answered as Prometheus
/// answers (422 `execution`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_over_the_samples_limit_are_refused_before_allocating() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    let t = secs(T0 + 3_600_000);
    let too_many = "query processing would load too many samples into memory in query execution";
    for q in [
        "max_over_time(rate(up[1y:1ms])[1y:1ms])",
        "max_over_time(vector(1)[30d:1ms])",
        "max_over_time(up[1d:1ms])",
        // Within the grid limit alone, over it with the 4 series.
        "max_over_time(up[12h:1ms])",
    ] {
        let r = get(a, &format!("/api/v1/query?query={}&time={t}", urlencode(q))).await;
        assert_error(q, &r, 422, "execution", too_many);
    }
    // A range query counts its steps the same way: 11 steps of a subquery of 4 series each.
    let r = get(
        a,
        &format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=1h",
            urlencode("max_over_time(up[1h:1ms])"),
            secs(T0),
            secs(T0 + 10 * 3_600_000)
        ),
    )
    .await;
    assert_error("query_range", &r, 422, "execution", too_many);
    // The limit is the configured one.
    let r = get(
        a,
        &format!(
            "/api/v1/query?query={}&time={t}",
            urlencode("max_over_time(up[1h:1s])")
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.shutdown().await;
}

/// Issue 22, item 7: extreme times and durations dropped the connection (overflow panics, a panic in
/// the parser's duration conversion) or answered 200; they are refused with `bad_data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_times_and_durations_are_refused_with_bad_data() {
    let (gw, _) = start(vec![]).await;
    let a = &gw.addr;
    let q = |query: &str| format!("/api/v1/query?query={}&time={}", urlencode(query), secs(T0));
    let cases = [
        (
            "/api/v1/query?query=up&time=-1e300".to_owned(),
            "invalid parameter \"time\": invalid time value for 'time': cannot parse \"-1e300\" to a valid timestamp",
        ),
        (
            "/api/v1/query?query=up&time=1e300".to_owned(),
            "invalid parameter \"time\": invalid time value for 'time': cannot parse \"1e300\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=-1e300&end=-1e300&step=15".to_owned(),
            "invalid parameter \"start\": cannot parse \"-1e300\" to a valid timestamp",
        ),
        (
            q("rate(up[1e300])"),
            "invalid parameter \"query\": duration out of range: 1e300",
        ),
        (
            q("up offset 1e300"),
            "invalid parameter \"query\": duration out of range: 1e300",
        ),
        (
            q("up offset -1e300"),
            "invalid parameter \"query\": duration out of range: 1e300",
        ),
        (
            q("up offset Inf"),
            "invalid parameter \"query\": duration out of range: Inf",
        ),
        (
            q("up[300y]"),
            "invalid parameter \"query\": duration out of range",
        ),
        (
            q("up @ 1e300"),
            "invalid parameter \"query\": timestamp out of bounds for @ modifier: 1e300",
        ),
        (
            q("up @ -1e300"),
            "invalid parameter \"query\": timestamp out of bounds for @ modifier: -1e300",
        ),
        (
            "/api/v1/series?match[]=up%20offset%201e300".to_owned(),
            "invalid parameter \"match[]\": duration out of range: 1e300",
        ),
    ];
    for (path, message) in &cases {
        let r = get(a, path).await;
        assert_error(path, &r, 400, "bad_data", message);
    }
    // The largest accepted values are answered (nothing there), without overflow.
    for query in [
        "up offset 290y",
        "rate(up[290y])",
        "up @ 9000000000",
        "max_over_time(up[290y:100y] offset -290y)",
    ] {
        let r = get(a, &q(query)).await;
        assert_eq!(r.status, 200, "{query}: {}", r.text());
    }
    // Near the earliest time accepted, ranges and offsets reach further back without overflow.
    let r = get(
        a,
        &format!(
            "/api/v1/query_range?query={}&start=-9223309901257000&end=-9223309901257000&step=15",
            urlencode("max_over_time(rate(up[290y] offset 290y)[290y:100y] offset 290y)")
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.shutdown().await;
}

/// Issue 22, item 5: Thanos' `--query.max-concurrent`: a query beyond the limit waits for a slot,
/// bounded by its own timeout (503 `timeout`, as Prometheus' "query queue" timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_max_concurrent_wait_bounded_by_their_timeout() {
    let slow = SlowStore {
        inner: store("s", "0", 0),
        delay: std::time::Duration::from_secs(60),
    };
    let meta = meridian_gateway::fanout::StoreMeta::from_info(&slow.info().await.unwrap());
    let extra = vec![StoreRef {
        name: "slow:10901".into(),
        store: Arc::new(slow),
        meta: Some(meta),
        unhealthy: None,
    }];
    let (gw, api) = start_with(
        extra,
        ApiOptions {
            max_concurrent_queries: 1,
            ..Default::default()
        },
    )
    .await;
    let in_flight = queries_in_flight;
    // The first query holds the only slot (it waits on the slow store).
    let client = hold_a_query(&gw, &api).await;
    // The second (no store needed) waits for the slot until its timeout.
    let started = std::time::Instant::now();
    let r = get(&gw.addr, "/api/v1/query?query=vector(1)&time=1&timeout=1s").await;
    let waited = started.elapsed();
    assert_error(
        "second query",
        &r,
        503,
        "timeout",
        "query timed out in query queue",
    );
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(5),
        "waited {waited:?}"
    );
    // Once the first query is gone, the slot is free again.
    drop(client);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_flight(&api) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first query kept its slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = get(&gw.addr, "/api/v1/query?query=vector(1)&time=1&timeout=1s").await;
    assert_eq!(r.status, 200, "{}", r.text());
    gw.shutdown().await;
}

/// Issue 22, item 4: parsing ran on the async workers (two long queries kept `/-/healthy` waiting
/// for many seconds) and without a length limit. Queries are parsed on the blocking pool, health
/// answers while they parse, and texts over `--query.max-length` are refused unparsed.
/// One async worker: any parse on it would hold up every other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn health_answers_while_long_queries_parse() {
    let (gw, _) = start(vec![]).await;
    // ~118 KB, under the 128 KiB default: 62 sums of 950 terms, each a while to parse (the parser's
    // time grows with the square of the depth), and a syntax error at the very end.
    let group = format!("({})", vec!["1"; 950].join("+"));
    let q = vec![group; 62].join("+") + "+";
    assert!(q.len() < meridian_gateway::promql::DEFAULT_MAX_QUERY_LENGTH);
    let body = format!("query={}", urlencode(&q));
    let mut queries = Vec::new();
    for _ in 0..2 {
        let (addr, body) = (gw.addr.clone(), body.clone());
        queries.push(tokio::spawn(async move {
            let r = post_form(&addr, "/api/v1/query", &body).await;
            (r, std::time::Instant::now())
        }));
    }
    // Health, asked over and over while the two are parsed.
    let mut slowest = std::time::Duration::ZERO;
    let mut probes = 0;
    while !queries.iter().all(|q| q.is_finished()) {
        let started = std::time::Instant::now();
        let r = get(&gw.addr, "/-/healthy").await;
        assert_eq!(r.status, 200);
        slowest = slowest.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for q in queries {
        let (r, _) = q.await.unwrap();
        assert_error(
            "long query",
            &r,
            400,
            "bad_data",
            "invalid parameter \"query\": ",
        );
    }
    assert!(
        slowest < std::time::Duration::from_millis(500),
        "/-/healthy took {slowest:?} while queries were parsed"
    );
    assert!(
        probes >= 3,
        "the queries were parsed too quickly to tell ({probes} probes)"
    );
    // Longer than the limit: refused before parsing.
    let long = format!(
        "up{{a=~\"{}\"}}",
        "x".repeat(meridian_gateway::promql::DEFAULT_MAX_QUERY_LENGTH)
    );
    let r = post_form(
        &gw.addr,
        "/api/v1/query",
        &format!("query={}", urlencode(&long)),
    )
    .await;
    assert_error(
        "too long",
        &r,
        400,
        "bad_data",
        &format!(
            "invalid parameter \"query\": the query is {} bytes long, longer than the limit of {} bytes (--query.max-length)",
            long.len(),
            meridian_gateway::promql::DEFAULT_MAX_QUERY_LENGTH
        ),
    );
    gw.shutdown().await;
}

/// Issue 22, item 3: a long node ran to its end past the query's timeout
/// (`max_over_time(up[1d:1ms])` with `timeout=2s` answered after 18.6 s). With a samples limit high
/// enough to let such a subquery run at all, it stops at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_subquery_stops_at_its_timeout() {
    let (gw, _) = start_with(
        vec![],
        ApiOptions {
            engine: meridian_gateway::promql::EngineOptions {
                max_samples: 20_000_000,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let timeout = std::env::var("LONG_SUBQUERY_TIMEOUT").unwrap_or_else(|_| "300ms".into());
    // 8,640,000 inner steps.
    let q = urlencode("max_over_time(vector(1)[1d:10ms])");
    let started = std::time::Instant::now();
    let r = get(
        &gw.addr,
        &format!("/api/v1/query?query={q}&time=1&timeout={timeout}"),
    )
    .await;
    let took = started.elapsed();
    println!("answered {} after {took:?}", r.status);
    assert_error(
        "long subquery",
        &r,
        503,
        "timeout",
        "query timed out in expression evaluation",
    );
    assert!(
        took < std::time::Duration::from_millis(1_000),
        "answered after {took:?}"
    );
    gw.shutdown().await;
}

fn queries_in_flight(api: &Api) -> Option<f64> {
    meridian_testkit::metric_value(&api.metrics_text(), "meridian_gateway_queries_in_flight")
}

/// Sends `up` (which waits on the slow store) from a client that does not read its answer, and waits
/// until the query holds a slot; the client's connection is returned.
async fn hold_a_query(gw: &Gw, api: &Api) -> std::net::TcpStream {
    let addr = gw.addr.clone();
    let path = format!("/api/v1/query?query=up&time={}", secs(T0 + 3_600_000));
    let client = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        s
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while queries_in_flight(api) != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client
}
