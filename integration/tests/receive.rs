//! Issue 28 end to end: edges as a Thanos-style Receive hashring (seed 003).
//!
//! - `rf3_over_mtls_fed_by_prometheus_survives_a_kill`: three receivers, replication factor 3,
//!   forwarding to each other over mTLS, fed by a real Prometheus 2.42 `remote_write` through the
//!   first. The third is SIGKILLed during the write and restarted: Prometheus' writes keep
//!   succeeding (no failed or retried sample, no non-2xx answer), the gateway (dedup by
//!   `receive_replica`) answers exactly what Prometheus answers (every sample once), the two
//!   receivers that stayed up hold every sample Prometheus sent, and the third holds every series.
//! - `rf1_spreads_series_and_follows_a_hashring_change`: three receivers, RF=1: every series on
//!   exactly one node, about a third each; the hashring file changed at run time (one node left
//!   out) moves routing; every sample written before and after is on exactly one node.
//! - `tenants_get_their_own_tsdbs_blocks_and_selection`: two tenants by `THANOS-TENANT`: separate
//!   TSDB directories, separate blocks in the bucket (moto) with `tenant_id` and the node's labels,
//!   one label set per tenant in `Info`, and a `tenant_id` matcher or a `storeMatch[]` selects one
//!   tenant. The seed 003 hashring file and flags load verbatim, with `--remote-write.address`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::{MatchType, Matcher};
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_integration::receivers::{Node, body, hashring, post};
use meridian_testkit::{Moto, Prometheus, free_port, http_get, metric_value, urlencode, wait_for};
use object_store::ObjectStoreExt;

/// The test PKI: a CA, a server certificate for 127.0.0.1, a client certificate; their paths.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    use meridian_pki::issue::{self, KeyType, Usage, Validity};
    let d = dir.join("pki");
    std::fs::create_dir_all(&d).unwrap();
    let ca = issue::new_ca("test-ca", KeyType::P256, Validity::days(2).unwrap()).unwrap();
    issue::write_pair(&d, "ca", &ca, true).unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    for (name, usage) in [("server", Usage::Server), ("client", Usage::Client)] {
        let c = issue::issue(
            &ca,
            usage,
            name,
            &["localhost".to_owned()],
            &[ip],
            KeyType::P256,
            Validity::days(1).unwrap(),
        )
        .unwrap();
        issue::write_pair(&d, name, &c, true).unwrap();
    }
    let pair = |n: &str| (d.join(format!("{n}.crt")), d.join(format!("{n}.key")));
    Pki {
        ca: d.join("ca.crt"),
        server: pair("server"),
        client: pair("client"),
    }
}

/// A gateway over `grpcs` deduplicating by `receive_replica`, over mTLS when `tls` is given.
async fn gateway(grpcs: &[String], tls: Option<&Pki>) -> Gateway {
    let transport = match tls {
        None => meridian_gateway::Transport::Plaintext,
        Some(p) => meridian_gateway::Transport::Tls {
            tls: meridian_pki::tls::client::ClientTls::load(
                "gateway",
                meridian_pki::tls::client::ClientTlsFiles {
                    ca: p.ca.clone(),
                    cert: Some(p.client.0.clone()),
                    key: Some(p.client.1.clone()),
                },
            )
            .unwrap(),
            server_name: None,
        },
    };
    let mut opts = GatewayOptions::new(
        EndpointGroup {
            specs: grpcs.iter().map(|g| g.parse().unwrap()).collect(),
            transport,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    opts.fanout.replica_labels = vec!["receive_replica".into()];
    let gw = Gateway::start(opts).await.unwrap();
    let addr = gw.http_addr().to_string();
    let want = grpcs.to_vec();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "every receiver in the endpoint set",
            Duration::from_secs(30),
            || {
                let a = http_get(&addr, "/api/v1/stores").text();
                want.iter().all(|g| a.contains(g.as_str())).then_some(())
            },
        )
    })
    .await
    .unwrap();
    gw
}

async fn get(addr: &str, path: &str) -> serde_json::Value {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || http_get(&addr, &path).json())
        .await
        .unwrap()
}

/// An answer's series by their labels (without `drop`), each with its points.
fn series_of(answer: &serde_json::Value, drop: &[&str]) -> BTreeMap<String, String> {
    assert_eq!(answer["status"], "success", "{answer}");
    let data = &answer["data"];
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut m = r["metric"].as_object().unwrap().clone();
            for d in drop {
                m.remove(*d);
            }
            let points = if data["resultType"] == "matrix" {
                r["values"].to_string()
            } else {
                r["value"].to_string()
            };
            (serde_json::Value::Object(m).to_string(), points)
        })
        .collect()
}

/// Every `meta.json` in a bucket.
async fn bucket_metas(bucket: &meridian_tsdb::objstore::Bucket) -> Vec<serde_json::Value> {
    use futures::TryStreamExt;
    let objects: Vec<_> = bucket.store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for o in objects {
        if o.location.filename() == Some("meta.json") {
            let raw = bucket
                .store
                .get(&o.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.push(serde_json::from_slice(&raw).unwrap());
        }
    }
    out
}

fn api_secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_over_mtls_fed_by_prometheus_survives_a_kill() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(dir.path(), i, Vec::new()))
        .collect();
    let grpcs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let ring = dir.path().join("hashring.json");
    std::fs::write(
        &ring,
        hashring(&grpcs.iter().map(String::as_str).collect::<Vec<_>>()),
    )
    .unwrap();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.flags = vec![
            format!("--receive.hashrings-file={}", ring.display()),
            "--receive.replication-factor=3".into(),
            format!("--label=receive_replica=\"{i}\""),
            format!("--grpc-server-tls-cert={}", p.server.0.display()),
            format!("--grpc-server-tls-key={}", p.server.1.display()),
            format!("--grpc-server-tls-client-ca={}", p.ca.display()),
            format!("--remote-write.client-tls-ca={}", p.ca.display()),
            format!("--remote-write.client-tls-cert={}", p.client.0.display()),
            format!("--remote-write.client-tls-key={}", p.client.1.display()),
        ];
        n.start();
    }
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['$PROMETHEUS_ADDR']}}]\nremote_write:\n  - url: http://{}/api/v1/receive\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 50ms, max_backoff: 1s}}\n",
        nodes[0].http
    );
    let Some(mut prom) = Prometheus::start(dir.path(), &config, &[]) else {
        panic!("prometheus is missing")
    };
    let start_ms = meridian_core::time::now_ms();
    let n0 = nodes[0].http.clone();
    let sent_since = |ms: i64| {
        let prom_addr = prom.addr.clone();
        move || {
            let v = metric_value(
                &http_get(&prom_addr, "/metrics").text(),
                "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            )?;
            (v * 1000.0 > ms as f64).then_some(())
        }
    };
    wait_for(
        "Prometheus sending",
        Duration::from_secs(30),
        sent_since(start_ms + 5_000),
    );
    // One receiver killed while the writes go on; writes keep succeeding on the other two.
    nodes[2].kill();
    let killed_at = meridian_core::time::now_ms();
    wait_for(
        "Prometheus sending with a receiver down",
        Duration::from_secs(30),
        sent_since(killed_at + 8_000),
    );
    nodes[2].start();
    let restarted_at = meridian_core::time::now_ms();
    wait_for(
        "the restarted receiver storing again",
        Duration::from_secs(30),
        || (nodes[2].metric("meridian_receive_samples_total", "stored") > 0.0).then_some(()),
    );
    wait_for(
        "Prometheus sending after the restart",
        Duration::from_secs(30),
        sent_since(restarted_at + 5_000),
    );
    let cutoff = meridian_core::time::now_ms() - 2_000;
    wait_for(
        "everything up to the cutoff sent",
        Duration::from_secs(30),
        sent_since(cutoff + 3_000),
    );
    let prom_metrics = http_get(&prom.addr, "/metrics").text();
    for m in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_retried_total",
        "prometheus_remote_storage_samples_dropped_total",
    ] {
        assert_eq!(metric_value(&prom_metrics, m), Some(0.0), "{m}");
    }
    let answered = |code: &str| nodes[0].metric("meridian_receive_requests_total", code);
    assert!(answered("code=\"200\"") > 0.0);
    let all = nodes[0].metric("meridian_receive_requests_total", "");
    assert_eq!(
        all,
        answered("code=\"200\""),
        "a remote-write request was not answered 200: {}",
        http_get(&n0, "/metrics").text()
    );
    assert!(
        nodes[0].metric("meridian_receive_forward_requests_total", "unavailable") > 0.0,
        "the killed receiver was never found down"
    );

    // The gateway's deduplicated answers equal Prometheus' own, sample for sample.
    let gw = gateway(&grpcs, Some(&p)).await;
    let gw_addr = gw.http_addr().to_string();
    let window = (cutoff - start_ms) / 1000 + 5;
    let mut compared = 0;
    for q in [
        format!("{{job=\"prometheus\"}}[{window}s]"),
        format!("up[{window}s]"),
        format!("count_over_time(scrape_samples_scraped[{window}s])"),
    ] {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            urlencode(&q),
            api_secs(cutoff)
        );
        let ours = series_of(&get(&gw_addr, &path).await, &["tenant_id"]);
        let theirs = series_of(&get(&prom.addr, &path).await, &[]);
        assert!(!theirs.is_empty(), "{q}: Prometheus has nothing");
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{q}: series differ"
        );
        for (k, v) in &theirs {
            assert_eq!(&ours[k], v, "{q}: {k}");
        }
        compared += theirs.len();
    }
    println!("{compared} deduplicated series equal Prometheus' answers");
    gw.shutdown().await;

    // On disk: receivers 0 and 1 hold every sample Prometheus sent up to the cutoff; receiver 2
    // every series.
    let prom_samples: HashMap<(String, i64), f64> = {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            urlencode(&format!("{{__name__=~\".+\"}}[{window}s]")),
            api_secs(cutoff)
        );
        let a = get(&prom.addr, &path).await;
        let mut out = HashMap::new();
        for r in a["data"]["result"].as_array().unwrap() {
            let l = Labels::from_pairs(
                r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap())),
            );
            for p in r["values"].as_array().unwrap() {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let v = meridian_testkit::parse_go_float(p[1].as_str().unwrap());
                out.insert((l.to_string(), t), v);
            }
        }
        out
    };
    prom.stop();
    for n in &mut nodes {
        n.stop();
    }
    let series = |s: &HashMap<(String, i64), f64>| -> BTreeSet<String> {
        s.keys().map(|k| k.0.clone()).collect()
    };
    let want_series = series(&prom_samples);
    for (i, n) in nodes.iter().enumerate() {
        let got = n.samples("default-tenant");
        let missing: Vec<_> = prom_samples
            .iter()
            .filter(|(k, v)| {
                got.get(*k)
                    .is_none_or(|g| !(g.to_bits() == v.to_bits() || (g.is_nan() && v.is_nan())))
            })
            .take(5)
            .collect();
        if i < 2 {
            assert!(missing.is_empty(), "receiver {i} misses {missing:?}");
        } else {
            let have = series(&got);
            let absent: Vec<_> = want_series.difference(&have).take(5).collect();
            assert!(absent.is_empty(), "receiver 2 has no {absent:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf1_spreads_series_and_follows_a_hashring_change() {
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(dir.path(), i, Vec::new()))
        .collect();
    let grpcs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let ring = dir.path().join("hashring.json");
    std::fs::write(
        &ring,
        hashring(&grpcs.iter().map(String::as_str).collect::<Vec<_>>()),
    )
    .unwrap();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.flags = vec![
            format!("--receive.hashrings-file={}", ring.display()),
            format!("--label=receive_replica=\"{i}\""),
        ];
        n.start();
    }
    const SERIES: usize = 300;
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "spread_total"),
                ("pod", format!("pod-{i}").as_str()),
            ])
        })
        .collect();
    let write = |from: i64| {
        let batch: Vec<(Labels, Vec<(i64, f64)>)> = labels
            .iter()
            .map(|l| {
                (
                    l.clone(),
                    (0..10).map(|k| (from + k * 1000, k as f64)).collect(),
                )
            })
            .collect();
        // Through a different entry node each time: routing does not depend on the entry.
        for (i, chunk) in batch.chunks(50).enumerate() {
            let (status, text) = post(&nodes[i % 3].http, &body(chunk), &[]);
            assert_eq!(status, 200, "{text}");
        }
    };
    let t0 = 1_700_000_000_000;
    write(t0);
    // Every series on exactly one node, about a third each (StoreAPI of each node).
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, g) in grpcs.iter().enumerate() {
        let mut client = meridian_storeapi::proto::thanos::store_client::StoreClient::new(
            meridian_pki::channel::GrpcChannel::plaintext_lazy(g, None).unwrap(),
        );
        let req = meridian_storeapi::series_request(
            t0,
            t0 + 3_600_000,
            &[Matcher::new(MatchType::Equal, "__name__", "spread_total").unwrap()],
            true,
        );
        let mut stream = client.series(req).await.unwrap().into_inner();
        let mut n = 0;
        while let Some(f) = stream.message().await.unwrap() {
            use meridian_storeapi::proto::thanos::series_response::Result as R;
            let list = match f.result {
                Some(R::Series(s)) => vec![s],
                Some(R::Batch(b)) => b.series,
                _ => vec![],
            };
            for s in list {
                let pod = s.labels.get("pod").unwrap().to_owned();
                assert_eq!(
                    s.labels.get("receive_replica"),
                    Some(i.to_string().as_str())
                );
                assert!(owner.insert(pod.clone(), i).is_none(), "{pod} on two nodes");
                n += 1;
            }
        }
        assert!(
            (SERIES / 5..=SERIES / 2).contains(&n),
            "node {i} holds {n} of {SERIES} series"
        );
    }
    assert_eq!(owner.len(), SERIES);

    // The hashring file changes: node 2 leaves the ring; every node follows the file.
    let before: Vec<f64> = nodes
        .iter()
        .map(|n| n.metric("meridian_receive_config_hash", ""))
        .collect();
    std::fs::write(&ring, hashring(&[&grpcs[0], &grpcs[1]])).unwrap();
    wait_for(
        "every node reloading the hashring",
        Duration::from_secs(30),
        || {
            nodes
                .iter()
                .zip(&before)
                .all(|(n, b)| n.metric("meridian_receive_config_hash", "") != *b)
                .then_some(())
        },
    );
    write(t0 + 60_000);
    for n in &mut nodes {
        n.stop();
    }
    let per_node: Vec<HashMap<(String, i64), f64>> =
        nodes.iter().map(|n| n.samples("default-tenant")).collect();
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for s in &per_node {
        for k in s.keys() {
            *seen.entry(k.clone()).or_default() += 1;
        }
    }
    for l in &labels {
        for from in [t0, t0 + 60_000] {
            for k in 0..10 {
                let key = (l.to_string(), from + k * 1000);
                assert_eq!(seen.get(&key), Some(&1), "{key:?}");
            }
        }
    }
    assert_eq!(seen.len(), SERIES * 20, "nothing else stored");
    // Node 2 got nothing of the second write.
    assert!(per_node[2].keys().all(|(_, t)| *t < t0 + 60_000));
    let moved = owner.values().filter(|o| **o == 2).count();
    assert!(moved > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_their_own_tsdbs_blocks_and_selection() {
    meridian_pki::install_crypto_provider();
    let Some(moto) = Moto::start() else {
        panic!("moto is missing")
    };
    moto.create_bucket("receive");
    let dir = tempfile::tempdir().unwrap();
    // Seed 003's hashring file, verbatim, and its flags (`--label replica=…`, `--label
    // receive="true"`, `--tsdb.retention=2h`, `--remote-write.address`); this node's endpoint is not
    // in that ring, so only the file's loading is exercised there.
    let seed = dir.path().join("thanos-receive-hashrings");
    std::fs::write(
        &seed,
        r#"[
  {
    "hashring": "soft-tenants",
    "endpoints":
    [
      "thanos-receive-0.thanos-receive.kube-system.svc.cluster.local:10901",
      "thanos-receive-1.thanos-receive.kube-system.svc.cluster.local:10901",
      "thanos-receive-2.thanos-receive.kube-system.svc.cluster.local:10901"
    ]
  }
]"#,
    )
    .unwrap();
    let mut seeded = Node::new(
        dir.path(),
        9,
        vec![
            format!("--receive.hashrings-file={}", seed.display()),
            "--label=replica=\"thanos-receive-0\"".into(),
            "--label=receive=\"true\"".into(),
            "--tsdb.retention=2h".into(),
            format!("--remote-write.address=127.0.0.1:{}", free_port()),
        ],
    );
    seeded.start();
    assert!(http_get(&seeded.http, "/-/ready").status == 200);
    seeded.stop();

    let objstore = dir.path().join("objstore.yml");
    std::fs::write(&objstore, moto.objstore_yaml("receive", "")).unwrap();
    let mut node = Node::new(
        dir.path(),
        0,
        vec![
            "--label=receive_replica=\"0\"".into(),
            format!("--objstore.config-file={}", objstore.display()),
        ],
    );
    node.start();
    // Eight hours of a minute-step series per tenant: blocks are cut at shutdown.
    let now = meridian_core::time::now_ms() / 60_000 * 60_000;
    let series = |tenant: &str| {
        vec![(
            Labels::from_pairs([("__name__", "tenant_metric"), ("owner", tenant)]),
            (0..480)
                .map(|k| (now - 8 * 3_600_000 + k * 60_000, k as f64))
                .collect::<Vec<_>>(),
        )]
    };
    for t in ["team-a", "team-b"] {
        let (status, text) = post(&node.http, &body(&series(t)), &[("THANOS-TENANT", t)]);
        assert_eq!(status, 200, "{text}");
    }
    let (status, text) = post(
        &node.http,
        &body(&series("x")),
        &[("THANOS-TENANT", "../x")],
    );
    assert_eq!(status, 400, "{text}");
    for t in ["team-a", "team-b"] {
        assert!(
            node.data.join("tenants").join(t).join("wal").is_dir(),
            "{t}"
        );
    }
    // Info: one label set per tenant (and the node's own TSDB).
    let gw = gateway(std::slice::from_ref(&node.grpc), None).await;
    let gw_addr = gw.http_addr().to_string();
    let stores = get(&gw_addr, "/api/v1/stores").await.to_string();
    for t in ["team-a", "team-b"] {
        assert!(
            stores.contains(&format!("\"tenant_id\":\"{t}\"")),
            "{stores}"
        );
    }
    let owners = |path: String| {
        let gw_addr = gw_addr.clone();
        async move {
            let a = get(&gw_addr, &path).await;
            assert_eq!(a["status"], "success", "{a}");
            a["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["metric"]["owner"].as_str().unwrap().to_owned(),
                        r["metric"]["tenant_id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let at = api_secs(now - 3_600_000);
    let both = owners(format!("/api/v1/query?query=tenant_metric&time={at}")).await;
    assert_eq!(
        both,
        vec![
            ("team-a".to_owned(), "team-a".to_owned()),
            ("team-b".to_owned(), "team-b".to_owned())
        ]
    );
    let by_matcher = owners(format!(
        "/api/v1/query?query={}&time={at}",
        urlencode("tenant_metric{tenant_id=\"team-b\"}")
    ))
    .await;
    assert_eq!(by_matcher, vec![("team-b".to_owned(), "team-b".to_owned())]);
    let by_store = owners(format!(
        "/api/v1/query?query=tenant_metric&time={at}&{}={}",
        urlencode("storeMatch[]"),
        urlencode("{tenant_id=\"team-a\"}")
    ))
    .await;
    assert_eq!(by_store, vec![("team-a".to_owned(), "team-a".to_owned())]);
    gw.shutdown().await;
    node.stop();

    // Each tenant's blocks in the bucket carry its labels.
    let bucket = meridian_tsdb::objstore::Bucket::from_file(&objstore).unwrap();
    let metas = bucket_metas(&bucket).await;
    let mut by_tenant: BTreeMap<String, usize> = BTreeMap::new();
    for m in &metas {
        let labels = &m["thanos"]["labels"];
        assert_eq!(labels["receive_replica"], "0", "{m}");
        assert_eq!(m["thanos"]["source"], "receive", "{m}");
        *by_tenant
            .entry(labels["tenant_id"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        by_tenant.keys().collect::<Vec<_>>(),
        vec!["team-a", "team-b"],
        "{metas:?}"
    );
    assert!(by_tenant.values().all(|n| *n >= 2), "{by_tenant:?}");
}
