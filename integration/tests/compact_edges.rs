//! The compactor over blocks real edges cut and shipped (issue 29, first "done when"): four
//! `meridian-edge run` processes (clusters `a` and `b`, replicas `0` and `1`) receive three days of
//! samples by remote write, in time order, cut 2 h blocks from their heads and ship them to one
//! FILESYSTEM bucket. Then, on copies of that bucket:
//!
//! - `meridian-gateway compact` without deduplication: every compacted raw block passes `promtool
//!   tsdb analyze`, and `promtool tsdb dump` of each stream's compacted blocks equals the dump of its
//!   source blocks, sample for sample;
//! - with `--deduplication.replica-label=replica --deduplication.func=penalty`: PromQL answers over
//!   the deduplicated bucket equal the gateway's online deduplication over the source blocks,
//!   replicas at other scrape phases and with gaps of their own included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::fanout::{Fanout, FanoutOptions, QueryOptions, StaticStores};
use meridian_gateway::promql::{Engine, QueryValue};
use meridian_integration::served::bin_dir;
use meridian_storeapi::Store;
use meridian_storeapi::proto::prometheus as prom;
use meridian_testkit::{
    ChildGuard, copy_tree, free_port, http, post_remote_write, promtool_dump, require, wait_for,
};
use meridian_tsdb::objstore::Bucket;

const H: i64 = 3_600_000;
const M: i64 = 60_000;
/// A 2-day boundary.
const T0: i64 = 1_700_006_400_000;
const SCRAPE: i64 = 15_000;
/// Data written: three days and three hours (the edges' heads keep the last hours).
const SPAN: i64 = 75 * H;

fn objstore_yaml(dir: &Path) -> String {
    format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.display()
    )
}

/// A replica's gaps (half-open, relative to T0): in cluster `a`, replica 0 misses half an hour and
/// replica 1 twenty minutes later, both inside one 2 h block, so deduplication switches replicas
/// twice. Cluster `b` has none.
fn missing(cluster: &str, replica: usize, t: i64) -> bool {
    let gap = match (cluster, replica) {
        ("a", 0) => (24 * H + 30 * M, 25 * H),
        ("a", 1) => (25 * H + 20 * M, 25 * H + 40 * M),
        _ => return false,
    };
    (T0 + gap.0..T0 + gap.1).contains(&t)
}

/// A replica's series: counters whose value is a function of time (replicas at other phases agree
/// on the curve) and gauges; replica `r` scrapes `5 s × r` later.
fn series(cluster: &str, replica: usize) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let times: Vec<i64> = (0..SPAN / SCRAPE)
        .map(|k| T0 + k * SCRAPE + 5_000 * replica as i64)
        .filter(|&t| !missing(cluster, replica, t))
        .collect();
    let mut out = Vec::new();
    for i in 0..6 {
        out.push((
            Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("pod", &format!("{cluster}-{i}")),
            ]),
            times
                .iter()
                .map(|&t| (t, ((t - T0) / 1000) as f64 * 0.5 * f64::from(i + 1)))
                .collect(),
        ));
    }
    for i in 0..4 {
        out.push((
            Labels::from_pairs([
                ("__name__", "queue_depth"),
                ("pod", &format!("{cluster}-{i}")),
            ]),
            times
                .iter()
                .map(|&t| (t, (((t - T0) / SCRAPE * 7 + i64::from(i)) % 50) as f64))
                .collect(),
        ));
    }
    out
}

/// Sends `series` by remote write in half-hour batches, in time order, as a Prometheus would.
fn remote_write(addr: &str, series: &[(Labels, Vec<(i64, f64)>)]) {
    let batch = 30 * M;
    for from in (T0..T0 + SPAN).step_by(batch as usize) {
        let mut req = prom::WriteRequest::default();
        for (labels, samples) in series {
            let samples: Vec<prom::Sample> = samples
                .iter()
                .filter(|(t, _)| (from..from + batch).contains(t))
                .map(|&(timestamp, value)| prom::Sample { value, timestamp })
                .collect();
            if samples.is_empty() {
                continue;
            }
            req.timeseries
                .push(meridian_integration::bench::time_series(labels, samples));
        }
        post_remote_write(addr, &meridian_edge::receive::encode_body(&req).unwrap());
    }
}

fn spawn_edge(dir: &Path, objstore: &Path, cluster: &str, replica: usize) -> (ChildGuard, String) {
    let home = dir.join(format!("edge-{cluster}-{replica}"));
    std::fs::create_dir_all(&home).unwrap();
    let cfg = home.join("edge.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  external_labels: {{cluster: {cluster}, replica: '{replica}'}}\n"),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin_dir().join("meridian-edge"))
        .arg("run")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--tsdb.path={}", home.join("tsdb").display()))
        .arg(format!("--objstore.config-file={}", objstore.display()))
        .arg(format!("--http-address={addr}"))
        .args([
            "--grpc-address=none",
            "--tsdb.retention=100y",
            "--log.level=warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (ChildGuard(child), addr)
}

/// Live blocks (meta.json, no deletion mark): ULID → meta.
async fn live(bucket: &Bucket) -> BTreeMap<String, meridian_tsdb::block::BlockMeta> {
    let mut out = BTreeMap::new();
    for (ulid, e) in meridian_tsdb::listing::list_blocks(bucket.store.as_ref())
        .await
        .unwrap()
    {
        if e.has_meta && !e.deletion_mark {
            let (meta, _) = meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), &ulid)
                .await
                .unwrap();
            out.insert(ulid, meta);
        }
    }
    out
}

/// Downloads the raw blocks of one stream (external labels `ext`) into `to`.
async fn download_stream(bucket: &Bucket, ext: &Labels, to: &Path) -> usize {
    std::fs::create_dir_all(to).unwrap();
    let mut n = 0;
    for (ulid, meta) in live(bucket).await {
        if meta.thanos_labels() == *ext && meta.resolution() == 0 {
            meridian_tsdb::listing::download_block(bucket.store.as_ref(), &ulid, to)
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

/// One compactor pass (no `--wait`) over the bucket in `objstore`, with `extra` flags.
fn compact(dir: &Path, objstore: &Path, extra: &[&str]) {
    let out = Command::new(bin_dir().join("meridian-gateway"))
        .arg("compact")
        .arg(format!("--objstore.config-file={}", objstore.display()))
        .arg(format!("--data-dir={}", dir.display()))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .args([
            "--consistency-delay=0s",
            "--delete-delay=0s",
            "--log.level=warn",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compact {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn fanout_over(bucket: Bucket, replica_labels: Vec<String>) -> Arc<Fanout> {
    let store = Arc::new(BucketStore::new(bucket, BucketStoreOptions::default()));
    store.sync().await.unwrap();
    Arc::new(Fanout::new(
        Arc::new(
            StaticStores::probe(vec![("bucket".into(), store as Arc<dyn Store>)])
                .await
                .unwrap(),
        ),
        FanoutOptions {
            replica_labels,
            ..Default::default()
        },
    ))
}

async fn range(
    fanout: &Arc<Fanout>,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Vec<(String, Vec<(i64, u64)>)> {
    let querier = fanout.querier(QueryOptions {
        dedup: true,
        ..Default::default()
    });
    let got = Engine::default()
        .range(&querier, q, start, end, step)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
    let QueryValue::Matrix(m) = got.value else {
        panic!("{q}: matrix expected")
    };
    m.into_iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_days_from_four_edges_compact_exactly_and_dedup_offline_as_online() {
    meridian_pki::install_crypto_provider();
    for bin in ["meridian-edge", "meridian-gateway"] {
        assert!(
            bin_dir().join(bin).exists(),
            "{bin} missing (cargo build --bins)"
        );
    }
    let promtool = require("promtool", "apt-get install prometheus").expect("promtool");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    std::fs::create_dir_all(&root).unwrap();
    let objstore = dir.path().join("objstore.yml");
    std::fs::write(&objstore, objstore_yaml(&root)).unwrap();
    let bucket = Bucket::from_file(&objstore).unwrap();

    // Four edges, fed and left to cut and ship their blocks.
    let streams: Vec<(&str, usize)> = vec![("a", 0), ("a", 1), ("b", 0), ("b", 1)];
    let mut edges = Vec::new();
    for &(cluster, replica) in &streams {
        let (child, addr) = spawn_edge(dir.path(), &objstore, cluster, replica);
        wait_for("edge ready", Duration::from_secs(30), || {
            http("GET", &addr, "/-/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        let data = series(cluster, replica);
        let a = addr.clone();
        tokio::task::spawn_blocking(move || remote_write(&a, &data))
            .await
            .unwrap();
        edges.push(child);
    }
    let ext = |cluster: &str, replica: usize| {
        Labels::from_pairs([("cluster", cluster), ("replica", &replica.to_string())])
    };
    // 2 h blocks up to 72 h: the heads keep what follows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let blocks = live(&bucket).await;
        let shipped = |c: &str, r: usize| {
            blocks
                .values()
                .filter(|m| m.thanos_labels() == ext(c, r) && m.max_time - m.min_time == 2 * H)
                .count()
        };
        if streams.iter().all(|&(c, r)| shipped(c, r) >= 36) {
            break;
        }
        let counts: Vec<usize> = streams.iter().map(|&(c, r)| shipped(c, r)).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for 36 blocks from each edge: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for e in &edges {
        e.signal("TERM");
    }
    for mut e in edges {
        assert!(e.0.wait().unwrap().success());
    }
    let blocks = live(&bucket).await;
    assert!(
        blocks.values().all(|m| m.max_time - m.min_time <= 2 * H
            && m.min_time % (2 * H) == 0
            && m.thanos_source() == "sidecar"),
        "2 h blocks, aligned, shipped by the edges"
    );
    assert!(
        blocks
            .values()
            .all(|m| m.min_time >= T0 && m.max_time <= T0 + SPAN)
    );

    // The same bucket three times: compacted as is, compacted with deduplication, and the sources.
    let copy = |name: &str| {
        let to = dir.path().join(name);
        copy_tree(&root, &to);
        let yaml = dir.path().join(format!("{name}.yml"));
        std::fs::write(&yaml, objstore_yaml(&to)).unwrap();
        (Bucket::from_file(&yaml).unwrap(), yaml)
    };
    let (dedup_bucket, dedup_yaml) = copy("dedup");
    let (sources, _) = copy("sources");

    // 1. Compaction, streams kept apart: promtool reads the output, and finds every sample once.
    let mut src_dumps = Vec::new();
    for &(c, r) in &streams {
        let to = dir.path().join(format!("src-{c}-{r}"));
        assert!(download_stream(&sources, &ext(c, r), &to).await >= 36);
        src_dumps.push(promtool_dump(&promtool, &to));
    }
    compact(&dir.path().join("data-plain"), &objstore, &[]);
    let after = live(&bucket).await;
    assert!(
        after
            .values()
            .any(|m| m.resolution() == 0 && m.max_time - m.min_time == 48 * H),
        "a 2-day block was made"
    );
    assert!(
        after.values().any(|m| m.resolution() == 300_000),
        "and downsampled to 5m"
    );
    for (&(c, r), want) in streams.iter().zip(&src_dumps) {
        let to = dir.path().join(format!("out-{c}-{r}"));
        let n = download_stream(&bucket, &ext(c, r), &to).await;
        assert!(n < 36, "{c}/{r}: {n} blocks after compaction");
        for entry in std::fs::read_dir(&to).unwrap() {
            let p = entry.unwrap().path();
            if !p.join("meta.json").exists() {
                continue;
            }
            let analyzed = Command::new(&promtool)
                .args(["tsdb", "analyze"])
                .arg(&to)
                .arg(p.file_name().unwrap())
                .output()
                .unwrap();
            assert!(
                analyzed.status.success(),
                "promtool tsdb analyze {}: {}",
                p.display(),
                String::from_utf8_lossy(&analyzed.stderr)
            );
        }
        let got = promtool_dump(&promtool, &to);
        assert_eq!(got.len(), want.len(), "{c}/{r}: sample count");
        let differ = want
            .iter()
            .filter(|(k, v)| got.get(k).is_none_or(|g| g.to_bits() != v.to_bits()))
            .count();
        assert_eq!(differ, 0, "{c}/{r}: samples differ from the sources");
    }

    // 2. Offline deduplication answers as the gateway's online deduplication over the sources.
    compact(
        &dir.path().join("data-dedup"),
        &dedup_yaml,
        &[
            "--deduplication.replica-label=replica",
            "--deduplication.func=penalty",
        ],
    );
    let merged = live(&dedup_bucket).await;
    assert!(
        merged
            .values()
            .all(|m| m.thanos_labels().get("replica").is_none()),
        "the replica label is gone"
    );
    let online = fanout_over(sources, vec!["replica".into()]).await;
    let offline = fanout_over(dedup_bucket, vec!["replica".into()]).await;
    // The whole compacted range but its first and last hours. Online deduplication (the gateway's,
    // like Thanos') starts with the replica whose sample comes first in the queried range, the
    // compactor with the one first in the block: queries start 1 s before a scrape of replica 0, so
    // that every selector's range (a multiple of 15 s) opens with replica 0 as the block does.
    let (start, end) = (T0 + H - 1_000, T0 + 70 * H);
    for (q, step) in [
        ("http_requests_total", M),
        ("queue_depth", M),
        ("rate(http_requests_total[5m])", M),
        (
            "sum by (cluster) (increase(http_requests_total[1h]))",
            10 * M,
        ),
        ("max_over_time(queue_depth[30m])", 5 * M),
        ("count_over_time(http_requests_total[10m])", 5 * M),
    ] {
        // Online over an hour more, cut at `end`: the last point of an online answer may take the
        // other replica's sample just after the current one's last in range (its end-of-data rule,
        // `dedup.rs`), which a longer range shows it would not.
        let mut want = range(&online, q, start, end + H, step).await;
        for (_, points) in &mut want {
            points.retain(|p| p.0 <= end);
        }
        let got = range(&offline, q, start, end, step).await;
        assert!(!want.is_empty(), "{q}");
        assert_eq!(got.len(), want.len(), "{q}: series");
        for ((gl, gs), (wl, ws)) in got.iter().zip(&want) {
            assert_eq!(gl, wl, "{q}");
            let first = gs.iter().zip(ws).position(|(a, b)| a != b);
            if let Some(i) = first {
                let diffs = gs.iter().zip(ws).filter(|(a, b)| a != b).count();
                for k in i..(i + 3).min(gs.len()) {
                    eprintln!(
                        "{q} {gl}: {} of {}: at {}: got {} want {}",
                        diffs,
                        gs.len(),
                        (gs[k].0 - T0) as f64 / H as f64,
                        f64::from_bits(gs[k].1),
                        f64::from_bits(ws[k].1)
                    );
                }
            }
            assert!(
                gs.len() == ws.len() && first.is_none(),
                "{q}: {gl}: {} points, want {}; first difference at {first:?}",
                gs.len(),
                ws.len()
            );
        }
    }
}
