//! Issue 27 end to end: an HA pair of real Prometheus 2.42 servers, each with `meridian-edge
//! sidecar`, behind the gateway, as seed 000 deploys Thanos.
//!
//! - One config template with `$(POD_NAME)`, rendered by each sidecar's reloader: Prometheus gets its
//!   `replica` external label from it.
//! - The same data in both replicas: three 2-hour blocks in each data directory (written before
//!   Prometheus starts, so each replica has its own ULIDs) and 40 minutes in the head (remote
//!   write). The gateway's deduplicated answers equal each Prometheus' own, over blocks and head.
//! - The sidecars upload the blocks to S3 (moto); replica 1 starts with a `thanos.shipper.json`
//!   in Thanos' format naming a block a Thanos sidecar uploaded before: it is not uploaded again.
//! - One Prometheus stopped: the gateway answers (its sidecar from the WAL) with a warning; back: no
//!   warning.
//! - Prometheus' retention deletes the old blocks: the bucket store answers for them, as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::app::{Gateway, GatewayOptions};
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::endpoints::EndpointGroup;
use meridian_integration::served::api_secs;
use meridian_storeapi::proto::prometheus as prompb;
use meridian_testkit::{
    ChildGuard, Moto, Prometheus, http_get, spawn_announcing, urlencode, wait_for,
};
use meridian_tsdb::objstore::{BlockObject, Bucket, block_path};
use object_store::ObjectStoreExt;

const H: i64 = 3_600_000;
const STEP: i64 = 15_000;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` (the test command does)",
        p.display()
    );
    p
}

/// Ten counters and ten gauges from `b0` to `end`, every 15 s.
fn data(b0: i64, end: i64) -> Vec<(Labels, Vec<Sample>)> {
    let mut out = Vec::new();
    for i in 0..10i64 {
        let instance = format!("app-{i}:8080");
        let ts = (b0..=end).step_by(STEP as usize);
        out.push((
            Labels::from_pairs([
                ("__name__", "demo_requests_total"),
                ("instance", instance.as_str()),
                ("job", "demo"),
            ]),
            ts.clone()
                .map(|t| Sample::new(t, ((t - b0) / STEP * (i + 1)) as f64))
                .collect(),
        ));
        out.push((
            Labels::from_pairs([
                ("__name__", "demo_temperature"),
                ("instance", instance.as_str()),
                ("job", "demo"),
                ("room", if i % 2 == 0 { "a" } else { "b" }),
            ]),
            ts.map(|t| Sample::new(t, 20.0 + ((t / STEP + i) % 17) as f64 * 0.25))
                .collect(),
        ));
    }
    out
}

/// The part of `series` in `[lo, hi)`.
fn window(series: &[(Labels, Vec<Sample>)], lo: i64, hi: i64) -> Vec<(Labels, Vec<Sample>)> {
    series
        .iter()
        .map(|(l, s)| {
            let s: Vec<Sample> = s
                .iter()
                .filter(|x| x.t >= lo && x.t < hi)
                .copied()
                .collect();
            (l.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Remote-writes `series` in time order.
fn remote_write(addr: &str, series: &[(Labels, Vec<Sample>)]) {
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|x| x.t))
        .fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let mut from = lo;
    while from <= hi {
        let to = from + 20 * STEP;
        let mut req = prompb::WriteRequest::default();
        for (l, _) in series {
            let samples: Vec<prompb::Sample> = window(series, from, to)
                .into_iter()
                .filter(|(x, _)| x == l)
                .flat_map(|(_, s)| s)
                .map(|x| prompb::Sample {
                    value: x.v,
                    timestamp: x.t,
                })
                .collect();
            if samples.is_empty() {
                continue;
            }
            req.timeseries.push(prompb::TimeSeries {
                labels: l
                    .iter()
                    .map(|x| prompb::Label {
                        name: x.name.to_owned(),
                        value: x.value.to_owned(),
                    })
                    .collect(),
                samples,
                ..Default::default()
            });
        }
        let body = meridian_edge::receive::encode_body(&req).unwrap();
        meridian_testkit::post_remote_write(addr, &body);
        from = to;
    }
}

const TEMPLATE: &str =
    "global:\n  external_labels:\n    cluster: eu1\n    replica: $(POD_NAME)\nscrape_configs: []\n";
const PROM_ARGS: [&str; 3] = [
    "--web.enable-remote-write-receiver",
    "--storage.tsdb.min-block-duration=2h",
    "--storage.tsdb.max-block-duration=2h",
];

/// A sidecar process; its gRPC address.
fn sidecar(
    prom: &Prometheus,
    pod: &str,
    template: &Path,
    objstore: &str,
    log: &Path,
) -> (ChildGuard, String, String) {
    let mut cmd = Command::new(bin("meridian-edge"));
    cmd.arg("sidecar")
        .arg(format!("--prometheus.url=http://{}", prom.addr))
        .arg(format!("--tsdb.path={}", prom.data.display()))
        .arg("--http-address=127.0.0.1:0")
        .arg("--grpc-address=127.0.0.1:0")
        .arg(format!("--reloader.config-file={}", template.display()))
        .arg(format!(
            "--reloader.config-envsubst-file={}",
            prom.config.display()
        ))
        .arg("--reloader.retry-interval=200ms")
        .arg(format!("--objstore.config={objstore}"))
        .env("POD_NAME", pod);
    let (child, mut addrs) =
        spawn_announcing(cmd, log, &["http listening on", "grpc listening on"]);
    let grpc = addrs.remove(1);
    (child, grpc, addrs.remove(0))
}

/// An answer's series by their labels (without `drop`), each with its `[t, "v"]` points.
fn series_of(answer: &serde_json::Value, drop: &str) -> BTreeMap<String, String> {
    assert_eq!(answer["status"], "success", "{answer}");
    let data = &answer["data"];
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut m = r["metric"].as_object().unwrap().clone();
            m.remove(drop);
            let points = if data["resultType"] == "matrix" {
                r["values"].to_string()
            } else {
                r["value"].to_string()
            };
            (serde_json::Value::Object(m).to_string(), points)
        })
        .collect()
}

/// Where two answers differ first (for a short failure message).
fn first_difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Option<String> {
    if a.keys().ne(b.keys()) {
        return Some(format!(
            "series {:?} vs {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        ));
    }
    a.iter()
        .zip(b)
        .find(|(x, y)| x.1 != y.1)
        .map(|((k, x), (_, y))| {
            let at = x
                .bytes()
                .zip(y.bytes())
                .position(|(p, q)| p != q)
                .unwrap_or(0);
            let from = at.saturating_sub(60);
            format!(
                "{k}: ...{}... vs ...{}...",
                &x[from..(at + 60).min(x.len())],
                &y[from..(at + 60).min(y.len())]
            )
        })
}

/// The query paths compared, over `[from, to]`.
fn queries(from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    for q in [
        "demo_requests_total",
        "rate(demo_requests_total[5m])",
        "sum by (room) (demo_temperature)",
        "max_over_time(demo_temperature[30m])",
    ] {
        out.push(format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            urlencode(q),
            api_secs(from),
            api_secs(to)
        ));
    }
    for t in [from + H, from + 4 * H, to] {
        for q in [
            "demo_temperature",
            "count_over_time(demo_requests_total[2h])",
        ] {
            out.push(format!(
                "/api/v1/query?query={}&time={}",
                urlencode(q),
                api_secs(t)
            ));
        }
    }
    out
}

async fn get(addr: &str, path: &str) -> serde_json::Value {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || http_get(&addr, &path).json())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_behind_the_gateway_uploads_and_answers_after_retention() {
    meridian_pki::install_crypto_provider();
    let Some(moto) = Moto::start() else {
        panic!("moto is missing")
    };
    moto.create_bucket("sidecars");
    let objstore = moto.objstore_yaml("sidecars", "");
    let bucket = Bucket::parse(&objstore, "test").unwrap();
    let d = tempfile::tempdir().unwrap();
    let template = d.path().join("prometheus.yml.tmpl");
    std::fs::write(&template, TEMPLATE).unwrap();

    let now = meridian_core::time::now_ms();
    let b0 = (now - 8 * H).div_euclid(2 * H) * 2 * H;
    let end = b0 + 6 * H + 40 * 60_000;
    let all = data(b0, end);
    let mut proms = Vec::new();
    let mut sidecars = Vec::new();
    let mut taken_over = String::new();
    for r in 0..2 {
        let dir = d.path().join(format!("prom-{r}"));
        let data_dir = dir.join("prom-data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut ulids = Vec::new();
        for k in 0..3 {
            let lo = b0 + k * 2 * H;
            let meta = meridian_tsdb::block::write_block(
                &data_dir,
                window(&all, lo, lo + 2 * H),
                lo,
                lo + 2 * H,
            )
            .unwrap();
            ulids.push(meta.ulid);
        }
        if r == 1 {
            // What a Thanos sidecar left: its oldest block in the bucket and in its state file.
            let ext = Labels::from_pairs([("cluster", "eu1"), ("replica", "prometheus-1")]);
            meridian_tsdb::shipper::upload_block_dir(
                &bucket,
                &data_dir.join(&ulids[0]),
                &ext,
                "thanos-sidecar-v0.25.1",
            )
            .await
            .unwrap();
            std::fs::write(
                data_dir.join("thanos.shipper.json"),
                format!(
                    "{{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\"{}\"\n\t]\n}}",
                    ulids[0]
                ),
            )
            .unwrap();
            taken_over = ulids[0].clone();
        }
        let Some(prom) = Prometheus::start(&dir, "global: {}\nscrape_configs: []\n", &PROM_ARGS)
        else {
            panic!("Prometheus is missing")
        };
        let (child, grpc, http) = sidecar(
            &prom,
            &format!("prometheus-{r}"),
            &template,
            &objstore,
            &dir.join("sidecar.log"),
        );
        let cfg = http_get(&prom.addr, "/api/v1/status/config");
        assert!(
            cfg.text().contains(&format!("replica: prometheus-{r}")),
            "{}",
            cfg.text()
        );
        remote_write(&prom.addr, &window(&all, b0 + 6 * H, end + 1));
        proms.push(prom);
        sidecars.push((child, grpc, ulids, http));
    }

    // Every block in the bucket; the one a Thanos sidecar uploaded was left as it was.
    let all_ulids: Vec<String> = sidecars.iter().flat_map(|s| s.2.clone()).collect();
    let meta_of = |ulid: String| {
        let store = bucket.store.clone();
        async move {
            let raw = store
                .get(&block_path(&ulid, BlockObject::Meta))
                .await
                .ok()?
                .bytes()
                .await
                .ok()?;
            serde_json::from_slice::<serde_json::Value>(&raw).ok()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut missing = Vec::new();
        for u in &all_ulids {
            if meta_of(u.clone()).await.is_none() {
                missing.push(u.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not uploaded: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for u in &all_ulids {
        let m = meta_of(u.clone()).await.unwrap();
        let want = if *u == taken_over {
            "thanos-sidecar-v0.25.1"
        } else {
            "sidecar"
        };
        assert_eq!(m["thanos"]["source"], want, "{u}");
    }

    let store = Arc::new(BucketStore::new(
        bucket.clone(),
        BucketStoreOptions::default(),
    ));
    assert_eq!(store.sync().await.unwrap().loaded, 6);
    let mut opts = GatewayOptions::new(
        EndpointGroup {
            specs: sidecars.iter().map(|s| s.1.parse().unwrap()).collect(),
            transport: meridian_gateway::Transport::Plaintext,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    opts.fanout.replica_labels = vec!["replica".into()];
    opts.bucket = Some(store.clone());
    let gw = Gateway::start(opts).await.unwrap();
    let gw_addr = gw.http_addr().to_string();
    let grpcs: Vec<String> = sidecars.iter().map(|s| s.1.clone()).collect();
    let stores_addr = gw_addr.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "both sidecars in the endpoint set",
            Duration::from_secs(30),
            || {
                let a = http_get(&stores_addr, "/api/v1/stores").text();
                grpcs.iter().all(|g| a.contains(g.as_str())).then_some(())
            },
        )
    })
    .await
    .unwrap();

    // The deduplicated view equals each Prometheus' own answers, blocks and head.
    // Half a second off the samples' grid: no window edge falls on a sample, where Prometheus 2.42's
    // closed range windows and Prometheus 3's left-open ones (which Meridian follows) differ.
    let paths = queries(b0 + 5 * 60_000 + 500, end - 500);
    let mut compared = 0;
    let mut before_retention = Vec::new();
    for p in &paths {
        let ours = series_of(&get(&gw_addr, p).await, "cluster");
        assert!(!ours.is_empty(), "{p}: nothing");
        for prom in &proms {
            let theirs = series_of(&get(&prom.addr, p).await, "cluster");
            if let Some(d) = first_difference(&ours, &theirs) {
                panic!("{p}: gateway vs Prometheus {}: {d}", prom.addr);
            }
            compared += theirs.len();
        }
        before_retention.push(ours);
    }
    println!("{compared} series answers agree with both Prometheus servers");
    // The head's range came from Prometheus' WAL, never through remote read.
    for (_, _, _, http) in &sidecars {
        let m = http_get(http, "/metrics").text();
        let reads = |via: &str| {
            m.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "meridian_sidecar_head_reads_total{{via=\"{via}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        assert!(reads("wal") > 0.0, "{m}");
        assert_eq!(reads("remote_read"), 0.0, "{m}");
    }

    // One Prometheus down: answered with a warning; back: no warning.
    proms[0].stop();
    // Its sidecar still answers from the WAL, with a warning once it noticed (a success of its
    // readiness check holds for a second). Each try ends a step earlier: an answer without a
    // warning is cached by the gateway, and would be found again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut tries = 0;
    let (answer, path) = loop {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60",
            urlencode("rate(demo_requests_total[5m])"),
            api_secs(b0 + 6 * H + 500),
            api_secs(end - 500 - tries * 60_000)
        );
        let answer = get(&gw_addr, &path).await;
        let warned = answer["warnings"].as_array().is_some_and(|w| !w.is_empty());
        if warned || std::time::Instant::now() > deadline {
            break (answer, path);
        }
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        answer["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{answer}"
    );
    let want = series_of(&get(&proms[1].addr, &path).await, "cluster");
    assert_eq!(
        first_difference(&series_of(&answer, "cluster"), &want),
        None
    );
    proms[0].restart();
    let answer = get(&gw_addr, &path).await;
    assert!(
        answer["warnings"].as_array().is_none_or(Vec::is_empty),
        "{answer}"
    );
    assert_eq!(series_of(&answer, "cluster"), want);

    // Retention removes the two older blocks locally; the bucket store answers for them.
    let mut args: Vec<&str> = PROM_ARGS.to_vec();
    args.push("--storage.tsdb.retention.time=1h");
    for (prom, (_, _, ulids, _)) in proms.iter_mut().zip(&sidecars) {
        prom.restart_with(&args);
        let data_dir = prom.data.clone();
        let old = ulids[..2].to_vec();
        wait_for("retention", Duration::from_secs(30), || {
            old.iter().all(|u| !data_dir.join(u).exists()).then_some(())
        });
    }
    for (p, want) in paths.iter().zip(&before_retention) {
        let ours = series_of(&get(&gw_addr, p).await, "cluster");
        if let Some(d) = first_difference(&ours, want) {
            panic!("{p}: after retention: {d}");
        }
    }
    gw.shutdown().await;
    for (child, _, _, _) in sidecars {
        let pid = child.pid();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let mut child = child;
        assert!(child.0.wait().unwrap().success(), "sidecar exit status");
    }
}
