//! End to end, with real processes: the local federation (`meridian_integration::federation`) of
//! `meridian-edge` and `meridian-gateway` binaries, mutual TLS between them, SRV records served by
//! Debian's dnsmasq (or the embedded server), S3 buckets on moto, Alertmanager 0.25 and a webhook.
//! One federation at a time (each is five processes on a two-core machine).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_integration::federation::{Federation, Options};
use meridian_testkit::{require, urlencode};

static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

/// The workspace's binaries (`cargo test --workspace` builds them next to the test's `deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in ["meridian-edge", "meridian-gateway"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run `cargo build --workspace --bins` (the test command does)",
            dir.join(b).display()
        );
    }
    dir
}

fn options(dir: &tempfile::TempDir) -> Options {
    let mut o = Options::new(bin_dir(), dir.path().join("federation"));
    o.gateway_http = "127.0.0.1:0".parse().unwrap();
    o.scrape_interval = "1s".into();
    o.eval_interval = "2s".into();
    o.log_level = "info,meridian_edge::scrape=warn".into();
    o
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `GET /api/v1/query` on the gateway; the whole JSON answer (status checked by the caller).
async fn query_at(
    fed: &Federation,
    expr: &str,
    time: Option<f64>,
    extra: &str,
) -> serde_json::Value {
    let addr = fed.gateway_http.to_string();
    let mut path = format!("/api/v1/query?query={}{extra}", urlencode(expr));
    if let Some(t) = time {
        path.push_str(&format!("&time={t:.3}"));
    }
    tokio::task::spawn_blocking(move || meridian_testkit::http_get(&addr, &path).json())
        .await
        .unwrap()
}

async fn query(fed: &Federation, expr: &str) -> serde_json::Value {
    query_at(fed, expr, None, "").await
}

/// A vector answer by the value of one label.
fn by_label(answer: &serde_json::Value, label: &str) -> BTreeMap<String, f64> {
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"][label].as_str().unwrap_or_default().to_string(),
                r["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// A matrix answer: label set → sample timestamps (s) and values.
fn matrix(answer: &serde_json::Value) -> BTreeMap<String, Vec<(f64, String)>> {
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let samples = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v[0].as_f64().unwrap(), v[1].as_str().unwrap().to_string()))
                .collect();
            (r["metric"].to_string(), samples)
        })
        .collect()
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still not so after {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Two clusters through dnsmasq's SRV records, blocks in moto's S3: one global view with each HA pair
/// counted once and no replica label; the bundled alert reaches Alertmanager 0.25 and the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_view_real_dns_s3_and_alerts_end_to_end() {
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(dnsmasq) = require("dnsmasq", "apt-get install dnsmasq-base") else {
        return;
    };
    let Some(moto) = meridian_testkit::Moto::start() else {
        return;
    };
    moto.create_bucket("meridian");
    let dir = tempfile::tempdir().unwrap();
    let Some((_am, am_addr)) = meridian_testkit::alertmanager(dir.path(), None) else {
        return;
    };
    let mut o = options(&dir);
    o.dnsmasq = Some(dnsmasq);
    o.objstore = Some(moto.objstore_yaml("meridian", ""));
    o.gateway_args = vec![format!("--alertmanagers.url=http://{am_addr}")];
    let fed = Federation::start(o).await.unwrap();

    eventually(
        "both clusters' pods, counted once",
        Duration::from_secs(30),
        || async {
            let pods = by_label(
                &query(
                    &fed,
                    "sum by (cluster) (kube_pod_status_phase{phase=\"Running\"})",
                )
                .await,
                "cluster",
            );
            let want = BTreeMap::from([("c1".to_string(), 6.0), ("c2".to_string(), 6.0)]);
            if pods == want {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            }
        },
    )
    .await;
    // Each edge target is scraped by both replicas; deduplicated, every cluster has 2 edge series, none
    // with a replica label; without deduplication both replicas answer, twice as many. (Waited for: the
    // first scrape of each target comes up to one interval after the exporter's.)
    eventually(
        "every edge scraped, counted once",
        Duration::from_secs(30),
        || async {
            let up = query(&fed, "up{job=\"edge\"}").await;
            let raw = query_at(&fed, "up{job=\"edge\"}", None, "&dedup=false").await;
            let series = up["data"]["result"].as_array().cloned().unwrap_or_default();
            let raw_n = raw["data"]["result"].as_array().map_or(0, Vec::len);
            assert!(
                series.iter().all(|s| s["metric"].get("replica").is_none()),
                "{up}"
            );
            if series.len() == 4 && raw_n == 8 {
                Ok(())
            } else {
                Err(format!("deduplicated {up}, raw {raw}"))
            }
        },
    )
    .await;
    // CPU usage per cluster is what the exporter was built to show (busy 0.35 and 0.45 on average).
    eventually("CPU usage per cluster", Duration::from_secs(30), || async {
        let cpu = by_label(
            &query(&fed, meridian_integration::federation::QUERIES[0].1).await,
            "cluster",
        );
        let ok =
            cpu.len() == 2 && (cpu["c1"] - 0.35).abs() < 0.01 && (cpu["c2"] - 0.45).abs() < 0.01;
        if ok { Ok(()) } else { Err(format!("{cpu:?}")) }
    })
    .await;

    // The filesystem alert (for: 30s) reaches both receivers, with the cluster label and no replica.
    eventually(
        "the alert in Alertmanager",
        Duration::from_secs(120),
        || async {
            let a = am_addr.clone();
            let alerts = tokio::task::spawn_blocking(move || {
                meridian_testkit::http_get(&a, "/api/v2/alerts").json()
            })
            .await
            .unwrap();
            let found = alerts.as_array().unwrap().iter().any(|x| {
                x["labels"]["alertname"] == "NodeFilesystemAlmostFull"
                    && x["labels"]["cluster"] == "c2"
                    && x["labels"]["instance"] == "c2-node-2:9100"
                    && x["labels"].get("replica").is_none()
            });
            if found {
                Ok(())
            } else {
                Err(alerts.to_string())
            }
        },
    )
    .await;
    eventually(
        "the alert at the webhook",
        Duration::from_secs(60),
        || async {
            let got = fed.notifications.all();
            let found = got.iter().any(|n| {
                n["status"] == "firing"
                    && n["alerts"].as_array().unwrap().iter().any(|a| {
                        a["labels"]["alertname"] == "NodeFilesystemAlmostFull"
                            && a["labels"]["cluster"] == "c2"
                    })
            });
            if found {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    fed.stop(|_| {}).await.unwrap();
}

/// Raw samples of one deduplicated series over the last `window` seconds.
async fn raw_samples(fed: &Federation, selector: &str, window: u32) -> Vec<(f64, String)> {
    let m = matrix(&query(fed, &format!("{selector}[{window}s]")).await);
    assert_eq!(m.len(), 1, "{selector}: {m:?}");
    m.into_values().next().unwrap()
}

/// An HA replica SIGKILLed mid-range and restarted: the merged series has neither a gap nor doubled
/// samples. With a whole cluster down, queries answer from the other with a warning, or fail when
/// partial responses are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_mid_range_and_cluster_down() {
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(options(&dir)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let edge = fed.edge_mut("c1", 0).unwrap();
    edge.proc.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    edge.proc.restart().unwrap();
    fed.wait_for_endpoints(4, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let samples = raw_samples(&fed, "up{job=\"demo\",cluster=\"c1\"}", 25).await;
    let gaps: Vec<f64> = samples.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let max_gap = gaps.iter().copied().fold(0.0, f64::max);
    // 1 s scrapes for 25 s: one sample a second, not two (both replicas) and no hole while one was dead.
    assert!(
        (20..=27).contains(&samples.len()),
        "{} samples in 25 s: {samples:?}",
        samples.len()
    );
    assert!(max_gap <= 2.5, "a {max_gap} s gap: {samples:?}");
    assert!(samples.iter().all(|(_, v)| v == "1"), "{samples:?}");

    // Cluster c2 down: partial answer with a warning by default; an error when refused.
    for r in 0..2 {
        fed.edge_mut("c2", r).unwrap().proc.kill().await.unwrap();
    }
    eventually(
        "a partial answer from c1",
        Duration::from_secs(30),
        || async {
            let a = query(&fed, "count by (cluster) (up{job=\"demo\"})").await;
            let clusters = by_label(&a, "cluster");
            let warned = a["warnings"].as_array().is_some_and(|w| !w.is_empty());
            if clusters.keys().collect::<Vec<_>>() == ["c1"] && warned {
                Ok(())
            } else {
                Err(a.to_string())
            }
        },
    )
    .await;
    let refused = query_at(&fed, "up", None, "&partial_response=false").await;
    assert_eq!(refused["status"], "error", "{refused}");
    // The stopped cluster's edges are gone; the rest stops cleanly.
    fed.stop(|_| {}).await.unwrap();
}

/// Blocks cut every 20 s are shipped to the filesystem bucket and deleted locally after a 20 s
/// retention; the gateway still answers for that time, from the bucket, exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_after_local_retention_comes_from_the_bucket() {
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir);
    o.block_duration = "20s".into();
    o.edge_args = vec!["--tsdb.retention=20s".into()];
    let fed = Federation::start(o).await.unwrap();
    let start = now_s();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let at = start + 12.0;
    let expr = "up{job=\"demo\"}[10s]";
    let before = matrix(&query_at(&fed, expr, Some(at), "").await);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.values().all(|s| s.len() >= 8), "{before:?}");

    // Wait until no edge holds that time any more: every edge's StoreAPI starts after it.
    let edge_min_times = || async {
        let addr = fed.gateway_http.to_string();
        let v = tokio::task::spawn_blocking(move || {
            meridian_testkit::http_get(&addr, "/api/v1/stores").json()
        })
        .await
        .unwrap();
        v["data"]["sidecar"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["minTime"].as_i64().unwrap())
            .collect::<Vec<i64>>()
    };
    eventually(
        "local retention to drop the first blocks",
        Duration::from_secs(240),
        || async {
            let mins = edge_min_times().await;
            let gone = mins.len() == 4 && mins.iter().all(|m| (*m as f64) / 1000.0 > at);
            if gone {
                Ok(())
            } else {
                Err(format!("edge min times {mins:?}, query time {at}"))
            }
        },
    )
    .await;
    eventually(
        "the same answer from the bucket",
        Duration::from_secs(60),
        || async {
            let after = matrix(&query_at(&fed, expr, Some(at), "").await);
            if after == before {
                Ok(())
            } else {
                Err(format!("{after:?} != {before:?}"))
            }
        },
    )
    .await;
    fed.stop(|_| {}).await.unwrap();
}

/// Under a steady query load: an edge's scrape configuration is changed and reloaded, and its server
/// certificate is re-issued and picked up; no query fails or comes back partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_certificate_reloads_under_load() {
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(openssl) = require("openssl", "apt-get install openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir);
    o.edge_args = vec!["--grpc-server-tls-reload-interval=1s".into()];
    let fed = Federation::start(o).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (done, bad) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(vec![])),
    );
    let load = {
        let (stop, done, bad) = (stop.clone(), done.clone(), bad.clone());
        let addr = fed.gateway_http.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let path = format!(
                    "/api/v1/query?query={}",
                    urlencode("count(up{job=\"demo\"})")
                );
                let a = meridian_testkit::http_get(&addr, &path).json();
                let full = a["status"] == "success"
                    && a.get("warnings")
                        .is_none_or(|w| w.as_array().is_none_or(Vec::is_empty));
                if !full {
                    bad.lock().unwrap().push(a.to_string());
                }
                done.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // 1. A new scrape job on c1's first edge, applied by POST /-/reload.
    let edge = &fed.edges[0];
    let config = edge.dir.join("prometheus.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    let exporter = text
        .lines()
        .rev()
        .find(|l| l.contains("targets"))
        .unwrap()
        .to_string();
    std::fs::write(
        &config,
        format!("{text}  - job_name: extra\n    static_configs:\n{exporter}\n"),
    )
    .unwrap();
    let http = edge.http.to_string();
    let r = tokio::task::spawn_blocking(move || {
        meridian_testkit::http("POST", &http, "/-/reload", &[], b"").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    eventually("the new job's series", Duration::from_secs(30), || async {
        let n = query(&fed, "count(up{job=\"extra\"})").await;
        if by_label(&n, "x").values().any(|v| *v >= 1.0) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;

    // 2. A new server certificate for the same edge (same CA, new serial).
    let ca = meridian_pki::issue::read_ca(&fed.pki_dir).unwrap();
    let host = format!("edge-0.c1.{}", meridian_integration::federation::DOMAIN);
    meridian_pki::issue::issue_into(
        &fed.pki_dir,
        &ca,
        meridian_pki::issue::Usage::Server,
        &edge.replica,
        std::slice::from_ref(&host),
        &["127.0.0.1".parse().unwrap()],
        meridian_pki::issue::Validity::days(1).unwrap(),
    )
    .unwrap();
    let crt = fed.pki_dir.join(format!("{}.crt", edge.replica));
    let serial_of_file = meridian_testkit::run_ok(
        std::process::Command::new(&openssl)
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&crt),
    );
    let want = String::from_utf8_lossy(&serial_of_file.stdout)
        .trim()
        .to_string();
    let grpc = edge.grpc.to_string();
    let pki = fed.pki_dir.clone();
    eventually(
        "the edge to serve the new certificate",
        Duration::from_secs(30),
        || {
            let (grpc, pki, openssl, want) =
                (grpc.clone(), pki.clone(), openssl.clone(), want.clone());
            async move {
                let served =
                    tokio::task::spawn_blocking(move || served_serial(&openssl, &grpc, &pki))
                        .await
                        .unwrap();
                if served == want {
                    Ok(())
                } else {
                    Err(format!("serving {served}, want {want}"))
                }
            }
        },
    )
    .await;
    fed.wait_for_endpoints(4, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let bad = std::mem::take(&mut *bad.lock().unwrap());
    assert!(done.load(Ordering::SeqCst) > 50, "too few queries");
    assert!(
        bad.is_empty(),
        "{} of {} queries failed or were partial: {:?}",
        bad.len(),
        done.load(Ordering::SeqCst),
        bad.first()
    );
    fed.stop(|_| {}).await.unwrap();
}

/// The serial number of the certificate a TLS server presents (`serial=…`), through `openssl s_client`
/// with the gateway's client certificate.
fn served_serial(openssl: &std::path::Path, addr: &str, pki: &std::path::Path) -> String {
    use std::io::Write;
    let s = std::process::Command::new(openssl)
        .args(["s_client", "-connect", addr, "-alpn", "h2"])
        .arg("-cert")
        .arg(pki.join("gateway.crt"))
        .arg("-key")
        .arg(pki.join("gateway.key"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut x = std::process::Command::new(openssl)
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    x.stdin.take().unwrap().write_all(&s.stdout).unwrap();
    let out = x.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every component stops on SIGTERM with exit status 0, in order; started again on the same data, the
/// federation answers for the time before the stop exactly as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_nothing() {
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(options(&dir)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Two seconds back: a scrape stamped just before "now" may still be committing, and would be in
    // the second answer but not the first.
    let at = now_s() - 2.0;
    let expr = "{__name__=~\"up|node_cpu_seconds_total\"}[8s]";
    let before = matrix(&query_at(&fed, expr, Some(at), "").await);
    assert!(before.len() > 40, "{} series", before.len());
    let mut steps = vec![];
    fed.stop(|s| steps.push(s.to_string())).await.unwrap();
    assert!(
        steps[0].contains("gateway") && steps[1].contains("edges"),
        "{steps:?}"
    );

    let fed = Federation::start(options(&dir)).await.unwrap();
    let after = matrix(&query_at(&fed, expr, Some(at), "").await);
    assert_eq!(after.len(), before.len());
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k}");
    }
    fed.stop(|_| {}).await.unwrap();
}

/// A second gateway reaches cluster c1's edges only through a real nginx ingress: SRV records (dnsmasq)
/// name each edge's public host at the ingress port (`dnssrvnoa+`), the gateway connects under that name
/// (SNI) with its client certificate, nginx verifies it and forwards over its own mTLS hop. The answer
/// equals the direct gateway's, and a replica killed behind the ingress leaves no gap in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_through_nginx_ingress_to_real_edges() {
    use meridian_pki::issue::{self, Usage, Validity};
    meridian_pki::install_crypto_provider();
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(nginx) = require("nginx", "apt-get install nginx") else {
        return;
    };
    let Some(dnsmasq) = require("dnsmasq", "apt-get install dnsmasq-base") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir);
    o.clusters = 1;
    let mut fed = Federation::start(o).await.unwrap();
    let domain = format!("c1.{}", meridian_integration::federation::DOMAIN);

    // The ingress' certificates, from the federation's CA.
    let pki = fed.pki_dir.clone();
    let ca = issue::read_ca(&pki).unwrap();
    let day = Validity::days(1).unwrap();
    for n in 0..2 {
        let host = format!("edge-{n}.{domain}");
        let name = format!("ingress-edge-{n}");
        issue::issue_into(&pki, &ca, Usage::Server, &name, &[host], &[], day).unwrap();
    }
    issue::issue_into(&pki, &ca, Usage::Client, "ingress-upstream", &[], &[], day).unwrap();
    let edges = [fed.edges[0].grpc, fed.edges[1].grpc];
    let (_nginx, listen) =
        meridian_testkit::nginx_ingress(&nginx, &dir.path().join("nginx"), &pki, edges, &domain);

    let dns_port = meridian_testkit::free_port();
    let mut args = vec![format!("--local=/{domain}/")];
    for n in 0..2 {
        let host = format!("edge-{n}.{domain}");
        args.push(format!(
            "--srv-host=_grpc._tcp.ingress.{domain},{host},{}",
            listen.port()
        ));
        args.push(format!("--host-record={host},127.0.0.1"));
    }
    let _dns = meridian_testkit::dnsmasq(&dnsmasq, dns_port, &args);

    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.path().join("gateway-via-ingress.log")).unwrap();
    let p = |f: &str| pki.join(f).display().to_string();
    let _gw = meridian_testkit::ChildGuard(
        std::process::Command::new(bin_dir().join("meridian-gateway"))
            .arg("query")
            .arg(format!("--http-address={http}"))
            .arg(format!("--grpc-address={grpc}"))
            .arg(format!("--endpoint=dnssrvnoa+_grpc._tcp.ingress.{domain}"))
            .arg(format!("--dns.nameserver=127.0.0.1:{dns_port}"))
            .arg("--store.sd-dns-interval=1s")
            .args(["--grpc-client-tls-secure", "--query.replica-label=replica"])
            .arg(format!("--grpc-client-tls-cert={}", p("gateway.crt")))
            .arg(format!("--grpc-client-tls-key={}", p("gateway.key")))
            .arg(format!("--grpc-client-tls-ca={}", p("ca.crt")))
            .arg(format!("--data-dir={}", dir.path().join("gw2").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let via = http.to_string();
    let q = |expr: &str, addr: String| {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        async move {
            tokio::task::spawn_blocking(move || {
                meridian_testkit::http("GET", &addr, &path, &[], b"")
                    .map_or(serde_json::Value::Null, |r| r.json())
            })
            .await
            .unwrap()
        }
    };
    let expr = "sum by (cluster, namespace) (kube_pod_status_phase{phase=\"Running\"})";
    eventually(
        "the same answer through the ingress",
        Duration::from_secs(60),
        || async {
            let a = q(expr, via.clone()).await;
            let b = q(expr, fed.gateway_http.to_string()).await;
            if a["status"] != "success" {
                return Err(format!("via ingress: {a}"));
            }
            let (x, y) = (by_label(&a, "namespace"), by_label(&b, "namespace"));
            let stores = meridian_testkit::http("GET", &via, "/api/v1/stores", &[], b"")
                .map(|r| r.text())
                .unwrap_or_default();
            if x == y
                && x.len() == 2
                && x.values().all(|v| *v == 3.0)
                && stores.contains(&format!("edge-1.{domain}:"))
            {
                Ok(())
            } else {
                Err(format!("via ingress {a}, direct {b}, stores {stores}"))
            }
        },
    )
    .await;

    // Replica 0 dies behind the ingress: the deduplicated series goes on from replica 1, without a
    // gap. The window is pinned (`@`) to 6 s after the kill, so it holds the switch-over; it is asked
    // until the answer settles (under load a query can still meet the dying replica's connections).
    // First both replicas must have scraped the target for longer than the window: under load a
    // replica's first scrape can come seconds after the federation answers, and the window's start
    // would then hold only the replica that is about to die.
    eventually(
        "both replicas scrape the demo target for 14 s",
        Duration::from_secs(60),
        || async {
            let a = query_at(
                &fed,
                "count_over_time(up{job=\"demo\"}[14s])",
                None,
                "&dedup=false",
            )
            .await;
            let counts = by_label(&a, "replica");
            if counts.len() == 2 && counts.values().all(|n| *n >= 13.0) {
                Ok(())
            } else {
                Err(format!("{a}"))
            }
        },
    )
    .await;
    fed.edge_mut("c1", 0).unwrap().proc.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let at = meridian_core::time::now_ms() as f64 / 1000.0;
    let window = format!("up{{job=\"demo\"}}[12s] @ {at:.3}");
    eventually(
        "the series goes on from replica 1",
        Duration::from_secs(30),
        || async {
            let a = q(&window, via.clone()).await;
            let m = matrix(&a);
            if m.len() != 1 {
                return Err(format!("{a}"));
            }
            let samples = m.into_values().next().unwrap_or_default();
            let max_gap = samples
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .fold(0.0, f64::max);
            if max_gap <= 2.5 && (10..=14).contains(&samples.len()) {
                Ok(())
            } else {
                let direct = q(&window, fed.gateway_http.to_string()).await;
                let twin = fed.edges[1].http.to_string();
                let targets = tokio::task::spawn_blocking(move || {
                    meridian_testkit::http("GET", &twin, "/api/v1/targets", &[], b"")
                        .map(|r| r.text())
                        .unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                Err(format!(
                    "{samples:?}, warnings {}; the federation's own gateway: {direct}; replica 1's targets: {targets}",
                    a["warnings"]
                ))
            }
        },
    )
    .await;
    fed.stop(|_| {}).await.unwrap_or_else(|e| panic!("{e}"));
}
