//! `proxy_url`: scrapes through an HTTP proxy, plain targets with absolute-form requests and TLS
//! targets through a `CONNECT` tunnel. The targets' host name does not resolve; only the proxy (a
//! small one here, which maps it to loopback and logs what it was asked) can reach them, so a scrape
//! that succeeds went through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_pki::tls::TlsIncoming;
use meridian_testkit::{http_get, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy: answers CONNECT and absolute-form requests for `target.invalid:<port>` by connecting to
/// `127.0.0.1:<port>`; logs every request line.
async fn proxy(log: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = l.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let line = text.lines().next().unwrap_or("").to_owned();
                log.lock().unwrap().push(line.clone());
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let port_of = |hostport: &str| hostport.rsplit(':').next().unwrap_or("").to_owned();
                if method == "CONNECT" {
                    let mut up =
                        tokio::net::TcpStream::connect(format!("127.0.0.1:{}", port_of(target)))
                            .await
                            .unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                } else {
                    // http://target.invalid:PORT/path -> GET /path to 127.0.0.1:PORT
                    let rest = target.strip_prefix("http://").unwrap_or(target);
                    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let mut up =
                        tokio::net::TcpStream::connect(format!("127.0.0.1:{}", port_of(hostport)))
                            .await
                            .unwrap();
                    let forwarded = text.replacen(target, path, 1);
                    up.write_all(forwarded.as_bytes()).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_targets_through_an_http_proxy() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (pki, _) = crate::support::ca_and_server(dir.path(), &["target.invalid"], &[]);

    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "through_proxy{kind=\"plain\"} 1\n" }),
    );
    tokio::spawn(async move { axum::serve(plain, app).await });
    let tls = crate::support::server_tls("target", &pki);
    let incoming = TlsIncoming::new(
        tls,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .unwrap();
    let tls_port = incoming.local_addr().port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "through_proxy{kind=\"tls\"} 1\n" }),
    );
    tokio::spawn(async move { axum::serve(incoming, app).await });

    let log = Arc::new(Mutex::new(Vec::new()));
    let proxy = proxy(log.clone()).await;
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: plain
    proxy_url: http://{proxy}
    static_configs: [{{targets: ['target.invalid:{plain_port}']}}]
  - job_name: tls
    scheme: https
    proxy_url: http://{proxy}
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ['target.invalid:{tls_port}']}}]
"#,
        ca = pki.join("ca.crt").display(),
    );
    let agent = crate::support::start_agent(dir.path(), &config).await;
    let addr = agent.http_addr().to_string();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "both targets scraped through the proxy",
            Duration::from_secs(15),
            || {
                let j = http_get(&addr, "/api/v1/targets").json();
                let t = j["data"]["activeTargets"].as_array().unwrap().clone();
                (t.len() == 2 && t.iter().all(|x| x["health"] == "up")).then_some(())
            },
        )
    })
    .await
    .unwrap();
    let lines = log.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("GET http://target.invalid:{plain_port}/metrics "))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("CONNECT target.invalid:{tls_port} "))),
        "{lines:?}"
    );
    agent.shutdown().await;
}
