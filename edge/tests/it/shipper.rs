//! The shipper against real object storage: PyPI's moto S3 server (the S3 API over HTTP) and the local
//! filesystem. Blocks are checked by layout, by their `meta.json` Thanos section, and by downloading
//! them and reading them with `promtool tsdb analyze` and `promtool tsdb dump`: the samples in the bucket
//! equal the samples ingested. Faults: the S3 endpoint going down mid-upload, and the edge SIGKILLed
//! mid-upload; a watcher checks throughout that no `meta.json` is ever visible before the files it
//! lists are complete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use meridian_core::labels::Labels;
use meridian_edge::agent::{Agent, AgentOptions};
use meridian_testkit::{ChildGuard, FaultProxy, Moto, promtool_dump, require, run_ok};
use meridian_tsdb::db::{Db, DbOptions};
use meridian_tsdb::objstore::Bucket;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

type Samples = HashMap<(String, i64), f64>;

const T0: i64 = 1_700_000_000_000 / 7_200_000 * 7_200_000;
const STEP: i64 = 15_000;
/// Seven hours: blocks 0-2h, 2-4h, 4-6h, 6-7h once the head is flushed.
const SPAN: i64 = 7 * 3_600_000;

/// A TSDB in `dir` whose data is all in blocks; returns every sample (for comparison with dumps).
/// Values are pseudo-random so chunks do not compress to nothing (~9 bytes a sample).
fn fill(dir: &Path, edge: &str, series: usize) -> Samples {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut expected = Samples::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ edge.len() as u64;
    for i in 0..series {
        let l = Labels::from_pairs([
            ("__name__", "node_cpu_seconds_total"),
            ("cpu", &i.to_string()),
            ("edge", edge),
        ]);
        let key = l.to_string();
        let mut app = db.appender();
        let mut t = T0;
        while t < T0 + SPAN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> 11) as f64 / 1e6;
            app.add(&l, t, v).unwrap();
            expected.insert((key.clone(), t), v);
            t += STEP;
        }
        app.commit().unwrap();
    }
    db.flush_head().unwrap();
    assert_eq!(db.blocks().len(), 4);
    expected
}

async fn list(b: &Bucket) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut s = b.store.list(None);
    while let Some(m) = s.next().await {
        let m = m.unwrap();
        out.insert(m.location.to_string(), m.size);
    }
    out
}

/// Downloads the blocks `ulids` into `dir/<ULID>/…`.
async fn download(b: &Bucket, ulids: &[String], dir: &Path) {
    for (key, _) in list(b).await {
        let ulid = key.split('/').next().unwrap();
        if !ulids.iter().any(|u| u == ulid) {
            continue;
        }
        let bytes = b
            .store
            .get(&ObjectPath::from(key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Checks the bucket holds exactly these blocks, whole: `<ULID>/chunks/000001…`, `index`, `meta.json`,
/// sizes as `meta.json` lists them, its labels the edge's external labels; then reads them with
/// promtool and compares every sample.
async fn check_blocks(
    b: &Bucket,
    local: &Path,
    ulids: &[String],
    external: &BTreeMap<&str, &str>,
    expected: &Samples,
    promtool: &Path,
) {
    let objects = list(b).await;
    for ulid in ulids {
        let mine: Vec<&String> = objects
            .keys()
            .filter(|k| k.starts_with(&format!("{ulid}/")))
            .collect();
        let mut want: Vec<String> = std::fs::read_dir(local.join(ulid).join("chunks"))
            .unwrap()
            .map(|e| format!("{ulid}/chunks/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        want.push(format!("{ulid}/index"));
        want.push(format!("{ulid}/meta.json"));
        want.sort();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "objects of block {ulid}"
        );
        let meta: serde_json::Value = serde_json::from_slice(
            &b.store
                .get(&ObjectPath::from(format!("{ulid}/meta.json")))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let th = &meta["thanos"];
        let labels: BTreeMap<&str, &str> = th["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_eq!(&labels, external, "{ulid}: thanos.labels");
        assert_eq!(th["downsample"]["resolution"], 0);
        assert_eq!(th["version"], 1);
        assert_eq!(th["source"], "sidecar");
        for f in th["files"].as_array().unwrap() {
            let rel = f["rel_path"].as_str().unwrap();
            if rel == "meta.json" {
                continue;
            }
            let local_size = std::fs::metadata(local.join(ulid).join(rel)).unwrap().len();
            assert_eq!(
                f["size_bytes"], local_size,
                "{ulid}/{rel}: size in meta.json"
            );
            assert_eq!(
                objects[&format!("{ulid}/{rel}")],
                local_size,
                "{ulid}/{rel}: size in the bucket"
            );
        }
    }
    let dl = tempfile::tempdir().unwrap();
    download(b, ulids, dl.path()).await;
    for ulid in ulids {
        let out = run_ok(
            std::process::Command::new(promtool)
                .args(["tsdb", "analyze"])
                .arg(dl.path())
                .arg(ulid),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("Block ID: {ulid}")), "{text}");
    }
    let dl_path = dl.path().to_owned();
    let promtool = promtool.to_owned();
    let got = tokio::task::spawn_blocking(move || promtool_dump(&promtool, &dl_path))
        .await
        .unwrap();
    assert_eq!(got.len(), expected.len(), "samples in the bucket");
    let differ = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_none_or(|g| g.to_bits() != v.to_bits()))
        .count();
    assert_eq!(differ, 0, "samples that differ between ingest and bucket");
}

/// Watches a bucket: every `meta.json` that is ever visible must list files that are all there, whole.
struct MetaWatcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl MetaWatcher {
    fn start(b: Bucket) -> MetaWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut checks, mut violations) = (0usize, Vec::new());
            while !s.load(Ordering::SeqCst) {
                let Ok(objects) =
                    tokio::time::timeout(Duration::from_secs(5), list_lenient(&b)).await
                else {
                    continue;
                };
                for key in objects.keys().filter(|k| k.ends_with("/meta.json")) {
                    let Ok(Ok(r)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        b.store.get(&ObjectPath::from(key.as_str())),
                    )
                    .await
                    else {
                        continue;
                    };
                    let Ok(raw) = r.bytes().await else { continue };
                    let meta: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                    let ulid = key.trim_end_matches("/meta.json");
                    for f in meta["thanos"]["files"].as_array().unwrap() {
                        let rel = f["rel_path"].as_str().unwrap();
                        if rel == "meta.json" {
                            continue;
                        }
                        let want = f["size_bytes"].as_u64().unwrap();
                        // The listing was taken after meta.json appeared in it… or before; ask again.
                        let got = b
                            .store
                            .head(&ObjectPath::from(format!("{ulid}/{rel}")))
                            .await
                            .map(|m| m.size);
                        if !matches!(got, Ok(g) if g == want) {
                            violations
                                .push(format!("{ulid}/{rel}: {got:?}, meta.json says {want}"));
                        }
                    }
                    checks += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (checks, violations)
        });
        MetaWatcher { stop, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (checks, violations) = self.task.await.unwrap();
        assert!(
            violations.is_empty(),
            "meta.json visible for incomplete blocks: {violations:?}"
        );
        checks
    }
}

async fn list_lenient(b: &Bucket) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut s = b.store.list(None);
    while let Some(Ok(m)) = s.next().await {
        out.insert(m.location.to_string(), m.size);
    }
    out
}

fn edge_config(dir: &Path, external: &BTreeMap<&str, &str>) -> PathBuf {
    let labels: Vec<String> = external.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let cfg = dir.join("edge.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  external_labels: {{{}}}\n", labels.join(", ")),
    )
    .unwrap();
    cfg
}

async fn start_edge(dir: &Path, external: &BTreeMap<&str, &str>, bucket: Bucket) -> Agent {
    Agent::start(AgentOptions {
        objstore: Some(bucket),
        ..AgentOptions::new(
            edge_config(dir, external),
            dir.join("data"),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap()
}

async fn wait_uploaded(agent: &Agent, within: Duration) -> Vec<String> {
    let ulids: Vec<String> = agent.db().blocks().into_iter().map(|m| m.ulid).collect();
    let shipper = agent.shipper().unwrap();
    tokio::time::timeout(within, async {
        while !ulids.iter().all(|u| shipper.is_uploaded(u)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("blocks not uploaded within {within:?}"));
    ulids
}

/// Two edges with different external labels ship into one bucket, over the S3 API and on the
/// filesystem; each block lands whole under its ULID, readable by promtool, with the samples ingested.
/// Returns the size of the largest object.
async fn two_edges_one_bucket(yaml: String, promtool: &Path, series: [usize; 2]) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let a_ext = BTreeMap::from([("cluster", "a"), ("replica", "0")]);
    let b_ext = BTreeMap::from([("cluster", "b"), ("replica", "0")]);
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let a_samples = fill(&a_dir.join("data"), "a", series[0]);
    let b_samples = fill(&b_dir.join("data"), "b", series[1]);
    let bucket = Bucket::parse(&yaml, "test").unwrap();
    let watcher = MetaWatcher::start(bucket.clone());
    let a = start_edge(&a_dir, &a_ext, bucket.clone()).await;
    let b = start_edge(&b_dir, &b_ext, bucket.clone()).await;
    let a_ulids = wait_uploaded(&a, Duration::from_secs(120)).await;
    let b_ulids = wait_uploaded(&b, Duration::from_secs(120)).await;
    assert_eq!(
        list(&bucket)
            .await
            .keys()
            .filter(|k| k.ends_with("meta.json"))
            .count(),
        8
    );
    check_blocks(
        &bucket,
        &a_dir.join("data"),
        &a_ulids,
        &a_ext,
        &a_samples,
        promtool,
    )
    .await;
    check_blocks(
        &bucket,
        &b_dir.join("data"),
        &b_ulids,
        &b_ext,
        &b_samples,
        promtool,
    )
    .await;
    assert!(
        watcher.finish().await > 0,
        "the watcher never saw a meta.json"
    );
    for agent in [&a, &b] {
        let s = agent.shipper().unwrap();
        assert_eq!(s.metrics.uploads.get(), 4);
        assert_eq!(s.metrics.pending_blocks.get(), 0);
    }
    a.shutdown().await;
    b.shutdown().await;
    list(&bucket).await.into_values().max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_two_edges_one_bucket() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("metrics");
    // 5 MiB parts and a ~6 MB chunk file: the multipart path runs against the S3 API too.
    let largest = two_edges_one_bucket(
        moto.objstore_yaml("metrics", "  part_size: 5242880\nprefix: tenant-0\n"),
        &promtool,
        [1700, 100],
    )
    .await;
    assert!(
        largest > 5 << 20,
        "no file went through multipart: largest {largest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_two_edges_one_bucket() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    two_edges_one_bucket(
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            dir.path().join("bucket").display()
        ),
        &promtool,
        [200, 100],
    )
    .await;
}

/// moto with a `metrics` bucket behind a fault proxy: the bucket seen directly (for checks) and the
/// objstore YAML that goes through the proxy (for the edge).
struct FaultyS3 {
    /// Bind it (`_moto`, not `..`): dropping it stops the server.
    _moto: Moto,
    proxy: FaultProxy,
    direct: Bucket,
    proxy_yaml: String,
}

fn faulty_s3() -> Option<FaultyS3> {
    let moto = Moto::start()?;
    moto.create_bucket("metrics");
    let proxy = FaultProxy::start(&moto.addr);
    let direct = Bucket::parse(&moto.objstore_yaml("metrics", ""), "direct").unwrap();
    let proxy_yaml = moto
        .objstore_yaml("metrics", "")
        .replace(&moto.addr, &proxy.addr);
    Some(FaultyS3 {
        _moto: moto,
        proxy,
        direct,
        proxy_yaml,
    })
}

async fn wait_stalled(proxy: &FaultProxy) {
    let p = proxy.clone();
    tokio::task::spawn_blocking(move || {
        meridian_testkit::wait_for("the upload to stall", Duration::from_secs(60), || {
            p.is_stalled().then_some(())
        })
    })
    .await
    .unwrap();
}

/// The S3 endpoint goes down in the middle of an upload (connections reset, new ones refused) and
/// comes back: every block ends up in the bucket once and whole, and no `meta.json` was ever visible
/// for an incomplete block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_upload() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let Some(FaultyS3 {
        proxy,
        direct,
        proxy_yaml,
        _moto,
    }) = faulty_s3()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ext = BTreeMap::from([("cluster", "a"), ("replica", "0")]);
    let samples = fill(&tmp.path().join("data"), "a", 1000);
    let via_proxy = Bucket::parse(&proxy_yaml, "proxy").unwrap();
    let watcher = MetaWatcher::start(direct.clone());
    // Half-way through the first block's chunk file (~2 MB), the endpoint stalls, then goes down.
    proxy.stall_after(1 << 20);
    let agent = start_edge(tmp.path(), &ext, via_proxy).await;
    wait_stalled(&proxy).await;
    proxy.cut();
    assert!(
        list(&direct)
            .await
            .keys()
            .all(|k| !k.ends_with("meta.json")),
        "a block was complete before the outage"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.resume();
    let ulids = wait_uploaded(&agent, Duration::from_secs(240)).await;
    check_blocks(
        &direct,
        &tmp.path().join("data"),
        &ulids,
        &ext,
        &samples,
        &promtool,
    )
    .await;
    watcher.finish().await;
    let s = agent.shipper().unwrap();
    assert_eq!(s.metrics.uploads.get(), 4, "each block uploaded once");
    agent.shutdown().await;
}

/// `meridian-edge run` is SIGKILLed in the middle of an upload; after a restart the upload is finished:
/// every block once and whole in the bucket, none visible before it was complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let Some(FaultyS3 {
        proxy,
        direct,
        proxy_yaml: yaml,
        _moto,
    }) = faulty_s3()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ext = BTreeMap::from([("cluster", "k"), ("replica", "1")]);
    let data = tmp.path().join("data");
    let samples = fill(&data, "k", 1000);
    let ulids: Vec<String> = {
        let db = Db::open(&data, DbOptions::default()).unwrap();
        db.blocks().into_iter().map(|m| m.ulid).collect()
    };
    let cfg = edge_config(tmp.path(), &ext);
    let edge = |yaml: &str| {
        ChildGuard(
            std::process::Command::new(env!("CARGO_BIN_EXE_meridian-edge"))
                .arg("run")
                .arg("--config.file")
                .arg(&cfg)
                .arg("--tsdb.path")
                .arg(&data)
                .args(["--http-address", "127.0.0.1:0", "--grpc-address", "none"])
                // The data is from 2023: keep it locally to compare with the bucket.
                .args(["--tsdb.retention", "100y"])
                .arg("--objstore.config")
                .arg(yaml)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let watcher = MetaWatcher::start(direct.clone());
    // Stall in the middle of the second block: the first is complete, the second half-sent.
    let first_block: u64 = std::fs::read_dir(data.join(&ulids[0]).join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum::<u64>()
        + std::fs::metadata(data.join(&ulids[0]).join("index"))
            .unwrap()
            .len();
    proxy.stall_after(first_block + (1 << 20));
    let mut first = edge(&yaml);
    wait_stalled(&proxy).await;
    let before = list(&direct).await;
    let complete: Vec<&String> = before.keys().filter(|k| k.ends_with("meta.json")).collect();
    assert_eq!(
        complete.len(),
        1,
        "one block complete before the kill: {before:?}"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    proxy.cut();
    proxy.resume();
    let _second = edge(&yaml);
    let d = direct.clone();
    tokio::time::timeout(Duration::from_secs(120), async {
        while list(&d)
            .await
            .keys()
            .filter(|k| k.ends_with("meta.json"))
            .count()
            < ulids.len()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the restarted edge did not finish the uploads");
    check_blocks(&direct, &data, &ulids, &ext, &samples, &promtool).await;
    watcher.finish().await;
    // The state file records every block (written atomically after each upload).
    let state: serde_json::Value = loop {
        let raw = std::fs::read(data.join("thanos.shipper.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        if v["uploaded"].as_array().unwrap().len() == ulids.len() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let recorded: BTreeSet<&str> = state["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(recorded, ulids.iter().map(String::as_str).collect());
}

/// Shutdown while an upload hangs: the edge waits its grace period, then abandons the upload (no
/// `meta.json` of it appears) and stops; a restart uploads it (see the SIGKILL test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_a_hung_upload() {
    let Some(FaultyS3 {
        proxy,
        direct,
        proxy_yaml,
        _moto,
    }) = faulty_s3()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    fill(&tmp.path().join("data"), "a", 500);
    let via_proxy = Bucket::parse(&proxy_yaml, "proxy").unwrap();
    proxy.stall_after(1 << 20);
    let ext = BTreeMap::from([("cluster", "a")]);
    let agent = Agent::start(AgentOptions {
        objstore: Some(via_proxy),
        shipper_shutdown_timeout: Duration::from_secs(1),
        ..AgentOptions::new(
            edge_config(tmp.path(), &ext),
            tmp.path().join("data"),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();
    wait_stalled(&proxy).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), agent.shutdown())
        .await
        .expect("shutdown hung on a stalled upload");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "no grace period"
    );
    proxy.cut();
    proxy.resume();
    assert!(
        list(&direct)
            .await
            .keys()
            .all(|k| !k.ends_with("meta.json")),
        "a meta.json appeared for the abandoned upload"
    );
}
