//! Scraping a target that, like a Kubernetes API server or etcd, requires TLS with a client certificate
//! and a bearer token (`scheme: https`, `tls_config` with `ca_file`/`cert_file`/`key_file`/`server_name`,
//! `authorization`/`bearer_token_file`), and the same target with the wrong credentials refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::tls::{ServerTls, ServerTlsFiles, ServerTlsOptions, TlsIncoming};
use meridian_testkit::{http_get, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificate_and_token() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = issue::new_ca("test-ca", KeyType::P256, Validity::days(2).unwrap()).unwrap();
    issue::write_pair(&pki, "ca", &ca, true).unwrap();
    let server = issue::issue(
        &ca,
        Usage::Server,
        "apiserver",
        &["kubernetes.default.svc".to_string()],
        &[],
        KeyType::P256,
        Validity::days(1).unwrap(),
    )
    .unwrap();
    issue::write_pair(&pki, "server", &server, true).unwrap();
    let client = issue::issue(
        &ca,
        Usage::Client,
        "prometheus",
        &[],
        &[],
        KeyType::P256,
        Validity::days(1).unwrap(),
    )
    .unwrap();
    issue::write_pair(&pki, "client", &client, true).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();

    // The target: mTLS (client certificate required) plus a bearer token.
    let tls = ServerTls::load(
        "apiserver",
        ServerTlsFiles {
            cert: pki.join("server.crt"),
            key: pki.join("server.key"),
            client_ca: Some(pki.join("ca.crt")),
        },
        ServerTlsOptions::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(tls, listener).unwrap();
    let target = incoming.local_addr();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|h: HeaderMap| async move {
            match h.get("authorization").and_then(|v| v.to_str().ok()) {
                Some("Bearer s3cret") => {
                    (StatusCode::OK, "apiserver_requests_total{verb=\"GET\"} 7\n")
                }
                _ => (StatusCode::UNAUTHORIZED, "no\n"),
            }
        }),
    );
    tokio::spawn(async move { axum::serve(incoming, app).await });

    let p = |f: &str| pki.join(f).display().to_string();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: apiserver
    scheme: https
    bearer_token_file: {token}
    tls_config: {{ca_file: {ca}, cert_file: {crt}, key_file: {key}, server_name: kubernetes.default.svc}}
    static_configs: [{{targets: ['{target}']}}]
  - job_name: wrong-token
    scheme: https
    authorization: {{credentials: nope}}
    tls_config: {{ca_file: {ca}, cert_file: {crt}, key_file: {key}, server_name: kubernetes.default.svc}}
    static_configs: [{{targets: ['{target}']}}]
  - job_name: no-client-cert
    scheme: https
    bearer_token: s3cret
    tls_config: {{ca_file: {ca}, server_name: kubernetes.default.svc}}
    static_configs: [{{targets: ['{target}']}}]
  - job_name: wrong-name
    scheme: https
    bearer_token: s3cret
    tls_config: {{ca_file: {ca}, cert_file: {crt}, key_file: {key}}}
    static_configs: [{{targets: ['{target}']}}]
"#,
        token = dir.path().join("token").display(),
        ca = p("ca.crt"),
        crt = p("client.crt"),
        key = p("client.key"),
    );
    let agent = crate::support::start_agent(dir.path(), &config).await;
    let addr = agent.http_addr().to_string();
    let health = tokio::task::spawn_blocking(move || {
        wait_for("all four targets scraped", Duration::from_secs(15), || {
            let j = http_get(&addr, "/api/v1/targets").json();
            let t = j["data"]["activeTargets"].as_array().unwrap().clone();
            let done = t.len() == 4 && t.iter().all(|x| x["health"] != "unknown");
            done.then(|| {
                t.iter()
                    .map(|x| {
                        (
                            x["scrapePool"].as_str().unwrap().to_owned(),
                            x["health"].as_str().unwrap().to_owned(),
                            x["lastError"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
    })
    .await
    .unwrap();
    let get = |pool: &str| health.iter().find(|h| h.0 == pool).unwrap().clone();
    assert_eq!(get("apiserver").1, "up", "{health:?}");
    let wrong = get("wrong-token");
    assert_eq!(wrong.1, "down");
    assert!(wrong.2.contains("401"), "{wrong:?}");
    let nocert = get("no-client-cert");
    assert_eq!(nocert.1, "down", "{nocert:?}");
    let name = get("wrong-name");
    assert_eq!(name.1, "down");
    assert!(
        name.2.contains("TLS") || name.2.contains("certificate"),
        "{name:?}"
    );
    let db = agent.db().clone();
    let s = db
        .samples(
            &[meridian_core::Matcher::equal(
                "__name__",
                "apiserver_requests_total",
            )],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.get("job"), Some("apiserver"));
    assert_eq!(s[0].1[0].v, 7.0);
    agent.shutdown().await;
}
