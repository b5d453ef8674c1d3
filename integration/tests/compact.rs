//! `meridian-gateway compact` as a process:
//! - over an S3 bucket (PyPI's moto): two clusters × two replicas of 2 h blocks are compacted with
//!   the replicas merged offline; the compacted blocks pass `promtool tsdb analyze` and `promtool tsdb
//!   dump` shows exactly the samples of the sources; a second compactor started on the bucket waits on
//!   the lease until the first is SIGKILLed, then takes over;
//! - SIGKILLed 20 times at random points of compaction and downsampling: after each kill a reader
//!   of the bucket sees every sample exactly once, and the last run finishes the job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_gateway::compact::lease::{Lease, LeaseState};
use meridian_integration::served::bin_dir;
use meridian_testkit::{
    ChildGuard, Moto, free_port, http, metric_value, promtool_dump, require, wait_for,
};
use meridian_tsdb::block::write_block;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

const H: i64 = 3_600_000;
/// A 2-day boundary.
const T0: i64 = 1_700_006_400_000;

fn series(cluster: &str, from: i64, to: i64) -> Vec<(Labels, Vec<Sample>)> {
    (0..10)
        .map(|i| {
            let l = Labels::from_pairs([
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", &i.to_string()),
                ("instance", &format!("{cluster}-node")),
            ]);
            let s = (from..to)
                .step_by(15_000)
                .map(|t| Sample::new(t, ((t - T0) / 15_000) as f64 * 0.25 * f64::from(i + 1)))
                .collect();
            (l, s)
        })
        .collect()
}

fn metrics(addr: &str) -> Option<String> {
    http("GET", addr, "/metrics", &[], b"")
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.text())
}

fn metric(addr: &str, name: &str) -> Option<f64> {
    metrics(addr).and_then(|m| metric_value(&m, name))
}

fn spawn_compactor(objstore: &Path, data: &Path, http_addr: &str) -> ChildGuard {
    ChildGuard(
        std::process::Command::new(bin_dir().join("meridian-gateway"))
            .arg("compact")
            .arg(format!("--objstore.config-file={}", objstore.display()))
            .arg(format!("--data-dir={}", data.display()))
            .args([
                "--wait",
                "--wait-interval=1s",
                "--consistency-delay=0s",
                "--delete-delay=0s",
                "--deduplication.replica-label=replica",
                "--compact.lease-duration=6s",
                "--log.level=warn",
            ])
            .arg(format!("--http-address={http_addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_process_merges_replicas_and_a_second_one_waits() {
    meridian_pki::install_crypto_provider();
    assert!(
        bin_dir().join("meridian-gateway").exists(),
        "meridian-gateway missing (cargo build --bins)"
    );
    let promtool = require("promtool", "apt-get install prometheus").expect("promtool");
    let moto = Moto::start().expect("moto");
    moto.create_bucket("compact");
    let dir = tempfile::tempdir().unwrap();
    let objstore = dir.path().join("objstore.yml");
    std::fs::write(&objstore, moto.objstore_yaml("compact", "")).unwrap();
    let bucket = Bucket::from_file(&objstore).unwrap();

    // The lease on S3: conditional puts as the compactor uses them.
    let clock = meridian_core::time::Clock::system();
    let a = Lease::new(bucket.store.clone(), "x", "a".into(), 60_000, clock.clone());
    let b = Lease::new(bucket.store.clone(), "x", "b".into(), 60_000, clock);
    assert!(matches!(
        a.acquire().await.unwrap(),
        LeaseState::Held { .. }
    ));
    assert!(
        matches!(b.acquire().await.unwrap(), LeaseState::HeldBy { ref holder, .. } if holder == "a")
    );
    assert!(
        matches!(a.acquire().await.unwrap(), LeaseState::Held { .. }),
        "renewal (If-Match)"
    );
    a.release().await.unwrap();
    assert!(matches!(
        b.acquire().await.unwrap(),
        LeaseState::Held { .. }
    ));
    b.release().await.unwrap();

    // 24 h of 2 h blocks, two clusters, two identical replicas each.
    for cluster in ["a", "b"] {
        let src = dir.path().join(format!("src-{cluster}"));
        for replica in ["0", "1"] {
            let local = dir.path().join(format!("blocks-{cluster}-{replica}"));
            std::fs::create_dir_all(&local).unwrap();
            let ext = Labels::from_pairs([("cluster", cluster), ("replica", replica)]);
            for k in 0..12 {
                let (from, to) = (T0 + k * 2 * H, T0 + (k + 1) * 2 * H);
                let meta = write_block(&local, series(cluster, from, to), from, to).unwrap();
                upload_block_dir(&bucket, &local.join(&meta.ulid), &ext, "sidecar")
                    .await
                    .unwrap();
                if replica == "0" {
                    std::fs::create_dir_all(&src).unwrap();
                    std::fs::rename(local.join(&meta.ulid), src.join(&meta.ulid)).unwrap();
                }
            }
        }
    }

    let http_a = format!("127.0.0.1:{}", free_port());
    let mut first = spawn_compactor(&objstore, &dir.path().join("data-a"), &http_a);
    wait_for(
        "compactor A holds the lease",
        Duration::from_secs(30),
        || (metric(&http_a, "meridian_compact_lease_held") == Some(1.0)).then_some(()),
    );
    let http_b = format!("127.0.0.1:{}", free_port());
    let mut second = spawn_compactor(&objstore, &dir.path().join("data-b"), &http_b);
    wait_for("compactor A done", Duration::from_secs(120), || {
        let done = metric(&http_a, "meridian_compact_iterations_total").is_some_and(|n| n >= 3.0)
            && metric(&http_a, "meridian_compact_todo_compactions") == Some(0.0);
        done.then_some(())
    });
    assert_eq!(metric(&http_b, "meridian_compact_lease_held"), Some(0.0));
    assert_eq!(
        metric(&http_b, "meridian_compact_iterations_total"),
        Some(0.0),
        "the second compactor waits"
    );
    assert_eq!(metric(&http_a, "meridian_compact_halted"), Some(0.0));
    assert!(metric(&http_a, "meridian_compact_group_compactions_total").unwrap() >= 12.0);

    // The bucket now: per cluster, blocks without the replica label, no overlap, made by the
    // compactor; every sample of the sources exactly once (promtool's own reader).
    let entries = meridian_tsdb::listing::list_blocks(bucket.store.as_ref())
        .await
        .unwrap();
    for cluster in ["a", "b"] {
        let out = dir.path().join(format!("out-{cluster}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut ranges = Vec::new();
        for (ulid, e) in &entries {
            if !e.has_meta || e.deletion_mark {
                continue;
            }
            let (meta, _) = meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), ulid)
                .await
                .unwrap();
            if meta.thanos_labels().get("cluster") != Some(cluster) {
                continue;
            }
            assert_eq!(meta.thanos_labels().get("replica"), None, "{ulid}");
            ranges.push((meta.min_time, meta.max_time, meta.compaction.level));
            meridian_tsdb::listing::download_block(bucket.store.as_ref(), ulid, &out)
                .await
                .unwrap();
            let analyzed = std::process::Command::new(&promtool)
                .args(["tsdb", "analyze"])
                .arg(&out)
                .arg(ulid)
                .output()
                .unwrap();
            assert!(
                analyzed.status.success(),
                "promtool tsdb analyze {ulid}: {}",
                String::from_utf8_lossy(&analyzed.stderr)
            );
        }
        ranges.sort();
        assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "{ranges:?}");
        assert!(
            ranges.iter().any(|r| r.2 >= 3),
            "8 h blocks made: {ranges:?}"
        );
        let want = promtool_dump(&promtool, &dir.path().join(format!("src-{cluster}")));
        let got = promtool_dump(&promtool, &out);
        assert_eq!(got.len(), want.len(), "cluster {cluster}: sample count");
        assert!(
            want.iter()
                .all(|(k, v)| got.get(k).is_some_and(|g| g.to_bits() == v.to_bits())),
            "cluster {cluster}: samples differ"
        );
    }

    // A dies without releasing the lease: B takes over once it expires.
    first.0.kill().unwrap();
    let _ = first.0.wait();
    wait_for("compactor B takes over", Duration::from_secs(30), || {
        (metric(&http_b, "meridian_compact_lease_held") == Some(1.0)).then_some(())
    });
    wait_for("compactor B passes", Duration::from_secs(30), || {
        metric(&http_b, "meridian_compact_iterations_total")
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    });
    // A stop releases the lease.
    second.signal("TERM");
    let status = second.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let probe = Lease::new(
        bucket.store.clone(),
        "",
        "probe".into(),
        60_000,
        meridian_core::time::Clock::system(),
    );
    assert!(matches!(
        probe.acquire().await.unwrap(),
        LeaseState::Held { .. }
    ));
}

/// Every sample the bucket store serves, by series; samples of one series sorted but not
/// deduplicated, so a block served twice shows.
async fn read_all(bucket: &Bucket) -> BTreeMap<String, Vec<(i64, u64)>> {
    use futures::StreamExt;
    use meridian_storeapi::Store;
    let store = meridian_gateway::bucket::BucketStore::new(
        bucket.clone(),
        meridian_gateway::bucket::BucketStoreOptions::default(),
    );
    store.sync().await.unwrap();
    let req = meridian_storeapi::series_request(
        i64::MIN,
        i64::MAX,
        &[meridian_core::matcher::Matcher::new(
            meridian_core::matcher::MatchType::Regex,
            "__name__",
            ".+",
        )
        .unwrap()],
        false,
    );
    let mut out: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    let mut stream = store.series(req).await.unwrap();
    while let Some(f) = stream.next().await {
        if let meridian_storeapi::SeriesFrame::Series(s) = f.unwrap() {
            let samples = out.entry(s.labels.to_string()).or_default();
            for c in &s.chunks {
                let raw = c.raw.as_ref().expect("raw chunk");
                let mut it = meridian_core::chunkenc::XorIterator::new(&raw.data).unwrap();
                while let Some((t, v)) = it.next_sample() {
                    samples.push((t, v.to_bits()));
                }
            }
        }
    }
    for s in out.values_mut() {
        s.sort_unstable();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_twenty_times_readers_see_each_sample_once() {
    meridian_pki::install_crypto_provider();
    assert!(
        bin_dir().join("meridian-gateway").exists(),
        "meridian-gateway missing (cargo build --bins)"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    std::fs::create_dir_all(&root).unwrap();
    let objstore = dir.path().join("objstore.yml");
    std::fs::write(
        &objstore,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let bucket = Bucket::from_file(&objstore).unwrap();
    // 50 h of 2 h blocks (a 2-day block forms and is downsampled), plus late blocks overlapping
    // three of them (vertical compaction).
    let local = dir.path().join("blocks");
    std::fs::create_dir_all(&local).unwrap();
    let ext = Labels::from_pairs([("cluster", "a")]);
    let mut want: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    let mut add = |s: &[(Labels, Vec<Sample>)]| {
        for (l, x) in s {
            let mut pairs: Vec<(String, String)> = l
                .iter()
                .chain(ext.iter())
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect();
            pairs.sort();
            let e = want
                .entry(Labels::from_pairs(pairs).to_string())
                .or_default();
            e.extend(x.iter().map(|s| (s.t, s.v.to_bits())));
        }
    };
    for k in 0..25 {
        let (from, to) = (T0 + k * 2 * H, T0 + (k + 1) * 2 * H);
        let mut s = series("a", from, to);
        if k % 8 == 3 {
            // Late samples at other timestamps, in a block of their own.
            let late: Vec<(Labels, Vec<Sample>)> = s
                .iter()
                .map(|(l, x)| {
                    (
                        l.clone(),
                        x.iter().map(|p| Sample::new(p.t + 7_000, p.v)).collect(),
                    )
                })
                .collect();
            add(&late);
            let meta = write_block(&local, late, from, to).unwrap();
            upload_block_dir(&bucket, &local.join(&meta.ulid), &ext, "sidecar")
                .await
                .unwrap();
        }
        s.truncate(5);
        add(&s);
        let meta = write_block(&local, s, from, to).unwrap();
        upload_block_dir(&bucket, &local.join(&meta.ulid), &ext, "sidecar")
            .await
            .unwrap();
    }
    for s in want.values_mut() {
        s.sort_unstable();
    }
    assert_eq!(read_all(&bucket).await, want, "before");
    // Deterministic "random" kill points (a fixed LCG), spread over a pass.
    let compact = |bucket_dir: &Path, data: &Path| {
        let objstore = bucket_dir.with_extension("yml");
        std::fs::write(
            &objstore,
            format!(
                "type: FILESYSTEM\nconfig:\n  directory: {}\n",
                bucket_dir.display()
            ),
        )
        .unwrap();
        let mut c = std::process::Command::new(bin_dir().join("meridian-gateway"));
        c.arg("compact")
            .arg(format!("--objstore.config-file={}", objstore.display()))
            .arg(format!("--data-dir={}", data.display()))
            .args([
                "--consistency-delay=0s",
                "--delete-delay=0s",
                "--log.level=error",
            ])
            .arg("--compact.lease-duration=1s")
            .arg(format!("--http-address=127.0.0.1:{}", free_port()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        c
    };
    // How long an unhindered run takes, on a copy.
    let calibrate = dir.path().join("calibrate");
    meridian_testkit::copy_tree(&root, &calibrate);
    let t = std::time::Instant::now();
    assert!(
        compact(&calibrate, &dir.path().join("data-c"))
            .status()
            .unwrap()
            .success()
    );
    let full = t.elapsed();
    let fs = |p: &Path| {
        Bucket::parse(
            &format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", p.display()),
            "test",
        )
        .unwrap()
    };
    let done = fs(&calibrate);
    assert_eq!(read_all(&done).await, want, "after an unhindered run");
    // 20 kill points spread over such a run (a fixed LCG), each on a fresh copy of the bucket:
    // readers see every sample once right after the kill and after a restarted run.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut killed = 0;
    // Until 20 runs were killed while working (a run that ends before its point is not counted).
    for round in 0..40 {
        if killed == 20 {
            break;
        }
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let after = full.mul_f64(((x >> 11) as f64) / ((1u64 << 53) as f64));
        let copy = dir.path().join(format!("round{round}"));
        meridian_testkit::copy_tree(&root, &copy);
        let data = dir.path().join(format!("data{round}"));
        let mut child = ChildGuard(compact(&copy, &data).spawn().unwrap());
        std::thread::sleep(after);
        if child.0.try_wait().unwrap().is_none() {
            killed += 1;
            child.0.kill().unwrap();
            let _ = child.0.wait();
        }
        let b = fs(&copy);
        assert_eq!(
            read_all(&b).await,
            want,
            "round {round}: killed after {after:?} of {full:?}"
        );
        // Restarted (after the dead one's lease runs out), it finishes the job.
        assert!(compact(&copy, &data).status().unwrap().success());
        assert_eq!(read_all(&b).await, want, "round {round}: restarted");
        let entries = meridian_tsdb::listing::list_blocks(b.store.as_ref())
            .await
            .unwrap();
        let mut kinds = Vec::new();
        for (u, e) in &entries {
            assert!(
                !e.deletion_mark,
                "round {round}: {u} marked but not deleted: {e:?} {:?}",
                std::fs::read_to_string(copy.join(u).join("deletion-mark.json"))
            );
            if !e.has_meta {
                // An upload the kill cut short: not served, deleted once 48 h old.
                continue;
            }
            let (m, _) = meridian_tsdb::listing::fetch_meta(b.store.as_ref(), u)
                .await
                .unwrap();
            kinds.push((m.resolution(), m.max_time - m.min_time));
        }
        assert!(kinds.contains(&(0, 48 * H)), "round {round}: {kinds:?}");
        assert!(
            kinds.contains(&(300_000, 48 * H)),
            "round {round}: {kinds:?}"
        );
        std::fs::remove_dir_all(&copy).unwrap();
    }
    eprintln!("an unhindered run: {full:?}; {killed} runs killed");
    assert_eq!(
        killed, 20,
        "only {killed} runs were killed before they ended"
    );
}
