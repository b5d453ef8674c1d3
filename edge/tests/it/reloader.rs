//! The sidecar's config reloader against a real Prometheus 2.42 (`--web.enable-lifecycle`): the
//! template rendered with `$(POD_NAME)` becomes Prometheus' config, a template change and a rule file
//! added to a watched directory (given with seed 000's trailing slash) are reloaded; and a refused
//! reload gives Thanos' hint about `--web.enable-lifecycle`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_edge::scrape::http::Dialer;
use meridian_edge::sidecar::prom::PromClient;
use meridian_edge::sidecar::reloader::{HttpTrigger, Metrics, Options, Reloader, Trigger};
use meridian_testkit::{Prometheus, http_get, wait_for};
use tokio_util::sync::CancellationToken;

fn dialer() -> Dialer {
    Dialer {
        tls: None,
        server_name: None,
        proxy: None,
    }
}

fn trigger(url: &str) -> HttpTrigger {
    HttpTrigger::new(PromClient::new(
        &url.parse().unwrap(),
        dialer(),
        meridian_core::http_config::Auth::None,
    ))
}

fn config_yaml(addr: &str) -> String {
    http_get(addr, "/api/v1/status/config").json()["data"]["yaml"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_the_template_and_reloads_prometheus() {
    let d = tempfile::tempdir().unwrap();
    let rules = d.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let rule_files = format!("rule_files: ['{}/*.yml']\n", rules.display());
    let Some(prom) = Prometheus::start(
        d.path(),
        &format!("global: {{external_labels: {{replica: initial}}}}\n{rule_files}"),
        &[],
    ) else {
        return;
    };
    let tmpl = d.path().join("prometheus.yml.tmpl");
    std::fs::write(
        &tmpl,
        format!("global: {{external_labels: {{replica: $(POD_NAME)}}}}\n{rule_files}"),
    )
    .unwrap();
    let opts = Options {
        config_file: Some(tmpl.clone()),
        envsubst_file: Some(prom.config.clone()),
        rule_dirs: vec![format!("{}/", rules.display()).into()],
        watch_interval: Duration::from_secs(180),
        retry_interval: Duration::from_millis(200),
    };
    let m = Metrics::default();
    let stop = CancellationToken::new();
    let reloader = Reloader::new(
        opts,
        Arc::new(trigger(&format!("http://{}", prom.addr))),
        m.clone(),
    )
    .with_env(Arc::new(|k: &str| {
        (k == "POD_NAME").then(|| "prometheus-0".to_owned())
    }));
    let task = tokio::spawn(reloader.run(stop.clone()));
    let addr = prom.addr.clone();
    let seen = move |what: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            wait_for(what, Duration::from_secs(20), || {
                config_yaml(&addr).contains(what).then_some(())
            })
        })
    };
    seen("replica: prometheus-0").await.unwrap();
    assert_eq!(m.reloads.get(), 1);
    assert_eq!(m.last_reload_successful.get(), 1);
    // The template changes: rendered and reloaded.
    std::fs::write(
        &tmpl,
        format!(
            "global: {{scrape_interval: 7s, external_labels: {{replica: $(POD_NAME)}}}}\n{rule_files}"
        ),
    )
    .unwrap();
    seen("scrape_interval: 7s").await.unwrap();
    // A rule file in the watched directory: reloaded.
    std::fs::write(
        rules.join("new.yml"),
        "groups:\n  - name: added\n    rules:\n      - record: r:up\n        expr: vector(1)\n",
    )
    .unwrap();
    let addr = prom.addr.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the added rule group", Duration::from_secs(20), || {
            let j = http_get(&addr, "/api/v1/rules").json();
            (j["data"]["groups"][0]["name"] == "added").then_some(())
        })
    })
    .await
    .unwrap();
    assert_eq!(m.reloads_failed.get(), 0);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn refused_and_unreachable_reloads_say_why() {
    let app = axum::Router::new().route(
        "/sub/-/reload",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::FORBIDDEN,
                "Lifecycle API is not enabled.",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let t = trigger(&format!("http://{addr}/sub/"));
    assert_eq!(
        t.reload().await.unwrap_err(),
        "received non-200 response: 403 Forbidden; have you set `--web.enable-lifecycle` Prometheus flag?"
    );
    let closed = format!("127.0.0.1:{}", meridian_testkit::free_port());
    let e = trigger(&format!("http://{closed}"))
        .reload()
        .await
        .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "reload request failed: Post \"http://{closed}/-/reload\": "
        )),
        "{e}"
    );
}
