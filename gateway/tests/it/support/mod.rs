//! Helpers shared by the bucket store's tests and benchmarks (the benches include this file by path).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_tsdb::block::write_block;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;

pub(crate) const H: i64 = 3_600_000;
pub(crate) const STEP: i64 = 15_000;
/// A 2 h boundary, so block ranges line up with whole hours.
pub(crate) const T0: i64 = 1_700_006_400_000;

pub(crate) fn counter(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "requests_total"),
        ("instance", &format!("i{i}")),
    ])
}

pub(crate) fn fs_bucket(dir: &Path) -> Bucket {
    Bucket::parse(
        &format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            dir.display()
        ),
        "test",
    )
    .unwrap()
}
/// `n` small 2 h blocks (3 series, 4 samples) uploaded to a FILESYSTEM bucket in `root/bucket`,
/// alternately of clusters `a` and `b`, plus one unfinished upload (no meta.json).
pub(crate) async fn many_blocks(root: &Path, n: i64) -> Bucket {
    let local = root.join("blocks");
    std::fs::create_dir_all(&local).unwrap();
    let bucket = fs_bucket(&root.join("bucket"));
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    for b in 0..n {
        let start = T0 + b * 2 * H;
        let series: Vec<(Labels, Vec<Sample>)> = (0..3)
            .map(|i| {
                (
                    counter(i),
                    (0..4)
                        .map(|k| Sample::new(start + k * 60_000, (b * 10 + k) as f64))
                        .collect(),
                )
            })
            .collect();
        let meta = write_block(&local, series, start, start + 2 * H).unwrap();
        let cluster = if b % 2 == 0 { "a" } else { "b" };
        upload_block_dir(
            &bucket,
            &local.join(&meta.ulid),
            &Labels::from_pairs([("cluster", cluster)]),
            "test",
        )
        .await
        .unwrap();
        std::fs::remove_dir_all(local.join(&meta.ulid)).unwrap();
    }
    std::fs::create_dir_all(root.join("bucket/01HGW2N7EHJX0Y3ZQK3Q6T9V8R/chunks")).unwrap();
    std::fs::write(
        root.join("bucket/01HGW2N7EHJX0Y3ZQK3Q6T9V8R/chunks/000001"),
        b"partial",
    )
    .unwrap();
    bucket
}

/// Resident memory of a process, from /proc (kB → bytes).
pub(crate) fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A `meridian-gateway store` process serving the FILESYSTEM bucket in `root/bucket`, waited on until
/// `/-/ready`: the process, its gRPC and HTTP addresses, and the time from spawn to ready.
pub(crate) fn spawn_store(
    root: &Path,
    bin: &str,
) -> (
    meridian_testkit::ChildGuard,
    String,
    String,
    std::time::Duration,
) {
    use meridian_testkit::{ChildGuard, free_port, http, wait_for};
    let objstore = root.join("objstore.yml");
    std::fs::write(
        &objstore,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            root.join("bucket").display()
        ),
    )
    .unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let mut child = ChildGuard(
        std::process::Command::new(bin)
            .arg("store")
            .arg(format!("--objstore.config-file={}", objstore.display()))
            .args(["--grpc-address", &grpc, "--http-address", &http_addr])
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for("store ready", std::time::Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("store exited with {status}");
        }
        http("GET", &http_addr, "/-/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let ready = started.elapsed();
    (child, grpc, http_addr, ready)
}

/// A fan-out over one bucket store, as a gateway with only the bucket would query it.
pub(crate) async fn fanout_over(
    store: std::sync::Arc<meridian_gateway::bucket::BucketStore>,
) -> std::sync::Arc<meridian_gateway::fanout::Fanout> {
    use meridian_gateway::fanout::{Fanout, FanoutOptions, StaticStores};
    let stores: Vec<(String, std::sync::Arc<dyn meridian_storeapi::Store>)> =
        vec![("bucket".into(), store)];
    std::sync::Arc::new(Fanout::new(
        std::sync::Arc::new(StaticStores::probe(stores).await.unwrap()),
        FanoutOptions::default(),
    ))
}
