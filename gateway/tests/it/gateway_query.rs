//! The `meridian-gateway query` binary end to end, against StoreAPI servers on loopback:
//! - discovery through a real DNS server (dnsmasq, SRV records for two clusters × two replicas), the
//!   stores view following record changes and surviving a DNS outage, and replica deduplication through
//!   the gateway's own StoreAPI (as a gateway layered above it asks);
//! - partial response: a stopped cluster and a hanging one become warnings naming them, within the
//!   per-store timeout; with `abort` the query fails;
//! - the HTTP API over mTLS (`--http.tls-config-file`) with JSON query logs (`--log.format=json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_core::chunkenc::XorIterator;
use meridian_core::{Labels, Matcher, Sample};
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::{SeriesFrame, Store, server};
use meridian_testkit::{ChildGuard, FaultProxy, dnsmasq, free_port, http, require, wait_for};

const T0: i64 = 1_700_000_000_000;
const S: i64 = 1000;

/// One replica's data: `up` and a counter, every 15 s at its own phase; replica 0 misses 10 scrapes and
/// its counter started long before replica 1's (values differ by 1000).
fn replica_store(cluster: &str, replica: u32) -> MemStore {
    let store = MemStore::new(Labels::from_pairs([
        ("cluster", cluster),
        ("replica", &replica.to_string()),
    ]));
    let phase = i64::from(replica) * 5 * S;
    let keep = |k: i64| replica != 0 || !(30..40).contains(&k);
    let up: Vec<Sample> = (0..80)
        .filter(|k| keep(*k))
        .map(|k| Sample::new(T0 + phase + k * 15 * S, 1.0))
        .collect();
    let base = if replica == 0 { 1000.0 } else { 0.0 };
    let total: Vec<Sample> = (0..80)
        .filter(|k| keep(*k))
        .map(|k| Sample::new(T0 + phase + k * 15 * S, base + k as f64))
        .collect();
    store
        .append(
            &Labels::from_pairs([("__name__", "up"), ("job", "edge")]),
            &up,
        )
        .unwrap();
    store
        .append(
            &Labels::from_pairs([("__name__", "requests_total"), ("job", "edge")]),
            &total,
        )
        .unwrap();
    store
}

/// Serves a store on `ip` (a free port); dropping the sender stops it.
async fn serve_on(ip: &str, store: MemStore) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp(Arc::new(store), listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

struct GatewayProc {
    _child: ChildGuard,
    grpc: String,
    http: String,
}

fn start_gateway(args: &[String]) -> GatewayProc {
    let grpc = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_meridian-gateway"))
        .arg("query")
        .args(["--grpc-address", &grpc, "--http-address", &http_addr])
        .args(["--endpoint.info-interval", "200ms"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    wait_for("gateway HTTP", Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("gateway exited with {status}");
        }
        http("GET", &http_addr, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    GatewayProc {
        _child: child,
        grpc,
        http: http_addr,
    }
}

/// `(name, lastError, labels)` of every store in `/api/v1/stores`.
fn stores(http_addr: &str) -> Vec<(String, Option<String>, String)> {
    let v = http("GET", http_addr, "/api/v1/stores", &[], b"")
        .unwrap()
        .json();
    assert_eq!(v["status"], "success");
    let mut out = Vec::new();
    for list in v["data"].as_object().unwrap().values() {
        for s in list.as_array().unwrap() {
            out.push((
                s["name"].as_str().unwrap().to_owned(),
                s["lastError"].as_str().map(str::to_owned),
                s["labelSets"].to_string(),
            ));
        }
    }
    out.sort();
    out
}

struct Answer {
    series: Vec<(Labels, Vec<Sample>)>,
    warnings: Vec<String>,
}

async fn query(gateway: &str, name: &str, without: &[&str], abort: bool) -> Result<Answer, String> {
    let client = StoreClient::connect_plaintext(gateway)
        .await
        .map_err(|e| e.to_string())?;
    let mut req = meridian_storeapi::series_request(
        T0 - 3_600 * S,
        T0 + 3_600 * S,
        &[Matcher::equal("__name__", name)],
        false,
    );
    req.without_replica_labels = without.iter().map(|s| s.to_string()).collect();
    if abort {
        req.partial_response_strategy = pb::PartialResponseStrategy::Abort as i32;
    }
    let mut frames = client.series(req).await.map_err(|e| e.to_string())?;
    let mut a = Answer {
        series: vec![],
        warnings: vec![],
    };
    while let Some(f) = frames.next().await {
        match f.map_err(|e| e.to_string())? {
            SeriesFrame::Series(s) => {
                let mut samples = Vec::new();
                for c in &s.chunks {
                    let raw = c.raw.as_ref().unwrap();
                    samples.extend(XorIterator::new(&raw.data).unwrap());
                }
                a.series.push((s.labels.clone(), samples));
            }
            SeriesFrame::Warning(w) => a.warnings.push(w),
        }
    }
    Ok(a)
}

fn dns_server(bin: &Path, port: u16, hosts: &Path, ports: &[(String, u16)]) -> ChildGuard {
    let mut args = vec![
        "--local=/meridian.test/".to_string(),
        format!("--addn-hosts={}", hosts.display()),
    ];
    for (host, port) in ports {
        let cluster = &host[5..6];
        args.push(format!(
            "--srv-host=_grpc._tcp.edges-{cluster}.meridian.test,{host}.meridian.test,{port}"
        ));
    }
    dnsmasq(bin, port, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_discovers_clusters_by_srv_and_deduplicates_replicas() {
    meridian_pki::install_crypto_provider();
    let Some(bin) = require("dnsmasq", "apt-get install dnsmasq-base") else {
        return;
    };
    // Two clusters × two replicas, each on its own loopback address.
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    let mut hosts_text = String::new();
    for (cluster, n) in [("a", 1), ("b", 2)] {
        for replica in 0..2u32 {
            let ip = format!("127.0.0.{}", n * 10 + replica + 1);
            let (addr, stop) = serve_on(&ip, replica_store(cluster, replica)).await;
            let host = format!("edge-{cluster}-{replica}");
            hosts_text.push_str(&format!("{ip} {host}.meridian.test\n"));
            ports.push((host, addr.port()));
            servers.push((addr, stop));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, &hosts_text).unwrap();
    let dns_port = free_port();
    let mut dns = Some(dns_server(&bin, dns_port, &hosts, &ports));

    let gw = start_gateway(&[
        "--endpoint".into(),
        "dnssrv+_grpc._tcp.edges-a.meridian.test".into(),
        "--endpoint".into(),
        "dnssrv+_grpc._tcp.edges-b.meridian.test".into(),
        "--dns.nameserver".into(),
        format!("127.0.0.1:{dns_port}"),
        "--store.sd-dns-interval".into(),
        "1s".into(),
        "--query.replica-label".into(),
        "replica".into(),
    ]);
    let want: Vec<String> = servers.iter().map(|(a, _)| a.to_string()).collect();
    let healthy = |s: &[(String, Option<String>, String)]| {
        s.iter()
            .filter(|(_, err, labels)| err.is_none() && labels.contains("cluster"))
            .map(|(n, _, _)| n.clone())
            .collect::<Vec<_>>()
    };
    wait_for(
        "all four endpoints healthy",
        Duration::from_secs(20),
        || (healthy(&stores(&gw.http)) == want).then_some(()),
    );

    // All replicas as they are, then deduplicated: one series per cluster.
    let all = query(&gw.grpc, "up", &[], false).await.unwrap();
    assert_eq!(all.series.len(), 4, "{:?}", all.warnings);
    assert!(all.warnings.is_empty(), "{:?}", all.warnings);
    let dedup = query(&gw.grpc, "up", &["replica"], false).await.unwrap();
    let names: Vec<String> = dedup.series.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(
        names,
        vec![
            r#"{__name__="up", cluster="a", job="edge"}"#,
            r#"{__name__="up", cluster="b", job="edge"}"#
        ]
    );
    for (labels, samples) in &dedup.series {
        // Replica 0's gap is filled from replica 1: never more than one interval plus the phase shift.
        let max_gap = samples.windows(2).map(|w| w[1].t - w[0].t).max().unwrap();
        assert!(max_gap <= 20 * S, "{labels}: gap of {max_gap} ms");
        assert!(
            (78..=82).contains(&samples.len()),
            "{labels}: {} samples, want about 80 (one per interval, not the union of 150)",
            samples.len()
        );
    }
    // The counter's replicas differ by 1000: the merge switches without a false reset.
    let counter = query(&gw.grpc, "requests_total", &["replica"], false)
        .await
        .unwrap();
    assert_eq!(counter.series.len(), 2);
    for (labels, samples) in &counter.series {
        assert!(
            samples.windows(2).all(|w| w[1].v >= w[0].v),
            "{labels}: counter decreases at a replica switch: {samples:?}"
        );
    }

    // edge-b-1 loses its address record: gone from the set within the refresh interval (1 s, plus the
    // 5 s answer cache at most).
    std::fs::write(
        &hosts,
        hosts_text.replace("127.0.0.22 edge-b-1.meridian.test\n", ""),
    )
    .unwrap();
    dns.as_ref().unwrap().signal("HUP");
    let three: Vec<String> = want[..3].to_vec();
    let started = Instant::now();
    wait_for("edge-b-1 removed", Duration::from_secs(10), || {
        (healthy(&stores(&gw.http)) == three).then_some(())
    });
    eprintln!("record removal noticed after {:?}", started.elapsed());
    // And back: the record returns, so does the endpoint.
    std::fs::write(&hosts, &hosts_text).unwrap();
    dns.as_ref().unwrap().signal("HUP");
    wait_for("edge-b-1 back", Duration::from_secs(10), || {
        (healthy(&stores(&gw.http)) == want).then_some(())
    });
    std::fs::write(
        &hosts,
        hosts_text.replace("127.0.0.22 edge-b-1.meridian.test\n", ""),
    )
    .unwrap();
    dns.as_ref().unwrap().signal("HUP");
    wait_for("edge-b-1 removed again", Duration::from_secs(10), || {
        (healthy(&stores(&gw.http)) == three).then_some(())
    });

    // The DNS server stops: the gateway keeps the last good set (and keeps answering).
    drop(dns.take());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(healthy(&stores(&gw.http)), three);
    let after = query(&gw.grpc, "up", &["replica"], false).await.unwrap();
    assert_eq!(after.series.len(), 2);
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_response_warns_or_aborts_naming_the_store() {
    meridian_pki::install_crypto_provider();
    let (a, _stop_a) = serve_on("127.0.0.1", replica_store("a", 0)).await;
    let (b, stop_b) = serve_on("127.0.0.1", replica_store("b", 0)).await;
    let (c, _stop_c) = serve_on("127.0.0.1", replica_store("c", 0)).await;
    // Cluster c answers Info at first, then hangs behind a stalled proxy.
    let proxy = FaultProxy::start(&c.to_string());
    let gw = start_gateway(&[
        "--endpoint".into(),
        a.to_string(),
        "--endpoint".into(),
        b.to_string(),
        "--endpoint".into(),
        proxy.addr.clone(),
        "--store.response-timeout".into(),
        "1s".into(),
    ]);
    wait_for("three endpoints healthy", Duration::from_secs(20), || {
        let s = stores(&gw.http);
        (s.len() == 3 && s.iter().all(|(_, e, _)| e.is_none())).then_some(())
    });
    let full = query(&gw.grpc, "up", &[], false).await.unwrap();
    assert_eq!(full.series.len(), 3);

    // Cluster b stops: cluster a and c answer, plus a warning naming b.
    drop(stop_b);
    wait_for("b to stop listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(b).is_err().then_some(())
    });
    let got = query(&gw.grpc, "up", &[], false).await.unwrap();
    let clusters: Vec<&str> = got
        .series
        .iter()
        .map(|(l, _)| l.get("cluster").unwrap())
        .collect();
    assert_eq!(clusters, vec!["a", "c"]);
    assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
    assert!(
        got.warnings[0].contains(&b.to_string()),
        "{:?}",
        got.warnings
    );
    // With abort, the query fails and says why.
    let err = query(&gw.grpc, "up", &[], true).await.err().unwrap();
    assert!(err.contains(&b.to_string()), "{err}");

    // Cluster c hangs: its part becomes a warning after the 1 s store timeout, not a hung query.
    wait_for("b marked unhealthy", Duration::from_secs(10), || {
        stores(&gw.http)
            .iter()
            .any(|(n, e, _)| *n == b.to_string() && e.is_some())
            .then_some(())
    });
    proxy.stall();
    let started = Instant::now();
    let got = query(&gw.grpc, "up", &[], false).await.unwrap();
    let took = started.elapsed();
    assert_eq!(got.series.len(), 1, "only cluster a answers");
    assert!(
        got.warnings.iter().any(
            |w| w.contains(&proxy.addr) && (w.contains("within 1s") || w.contains("unhealthy"))
        ),
        "{:?}",
        got.warnings
    );
    assert!(took < Duration::from_secs(5), "query took {took:?}");
    let err = query(&gw.grpc, "up", &[], true).await.err().unwrap();
    assert!(
        err.contains(&b.to_string()) || err.contains(&proxy.addr),
        "{err}"
    );
    proxy.resume();
}

/// `GET` over HTTPS with `tls`'s client configuration: the status and body, or the error.
async fn https_get(
    tls: &meridian_pki::tls::client::ClientTls,
    addr: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A server may close without close_notify once the answer is sent.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_over_mtls_with_json_query_log() {
    meridian_pki::install_crypto_provider();
    let (a, _stop_a) = serve_on("127.0.0.1", replica_store("a", 0)).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = meridian_pki::dev::DevPki::create(dir.path(), "localhost").unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("gateway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_meridian-gateway"))
        .arg("query")
        .args(["--grpc-address", &grpc, "--http-address", &http_addr])
        .args(["--endpoint", &a.to_string()])
        .arg(format!("--http.tls-config-file={}", web.display()))
        .arg("--log.format=json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _child = ChildGuard(child);
    let client = pki.client_tls(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = https_get(&client, &http_addr, "/-/ready").await {
            break;
        }
        assert!(Instant::now() < deadline, "gateway HTTPS not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = https_get(
        &client,
        &http_addr,
        &format!("/api/v1/query?query=up&time={}", (T0 + 600 * S) / 1000),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["data"]["result"].as_array().map(Vec::len), Some(1), "{j}");
    // Without a client certificate, no answer.
    let anonymous = pki.client_tls(false).unwrap();
    let r = https_get(&anonymous, &http_addr, "/-/ready").await;
    assert!(r.is_err(), "answered without a client certificate: {r:?}");
    // Plain HTTP is not served either.
    assert!(
        http("GET", &http_addr, "/-/ready", &[], b"").map_or(true, |r| r.status != 200),
        "plain HTTP answered"
    );
    // One JSON log line for the query, with its duration, samples, stores and cache outcome.
    let line = wait_for("the query's log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("\"message\":\"query\""))
            .map(str::to_owned)
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["query"], "up", "{line}");
    assert!(f["duration_seconds"].is_number(), "{line}");
    assert!(f["samples"].as_u64().is_some_and(|n| n > 0), "{line}");
    assert_eq!(f["stores"], 1, "{line}");
    assert_eq!(f["cache"], "none", "{line}");
}
