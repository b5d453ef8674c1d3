//! `Info` latency on a running edge while another client streams a large `Series` answer (issue 23):
//! a StoreAPI read must not stall the edge's async workers, so a querier's `Info` poll (which decides
//! whether the edge is healthy) stays fast while a big query streams.
//!
//! The edge binary (`meridian-edge run`, from this build or `MERIDIAN_EDGE_BIN`, so an older build can
//! be measured on the same data) serves a TSDB of N series × 2 h at 15 s (one block) on loopback
//! without TLS. One client asks for every series with one `Series` call after another; a second calls
//! `Info` every 5 ms. Reported: `Info` latency (p50, p99, max) idle and under the stream, and the
//! stream's series/s.
//!
//! Run: `cargo bench -p meridian-integration --bench info_under_load` (release; 10k series, 20 s under
//! load). Under `cargo test --all-targets` a small smoke run keeps the code working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_core::labels::Labels;
use meridian_storeapi::Store;
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::proto::thanos as pb;
use meridian_testkit::ChildGuard;
use meridian_tsdb::db::{Db, DbOptions};

const STEP: i64 = 15_000;
const TWO_HOURS: i64 = 7_200_000;

fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / TWO_HOURS - 2) * TWO_HOURS
}

fn fill(dir: &Path, t0: i64, series: usize) {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..series {
        let l = Labels::from_pairs([
            ("__name__", "container_cpu_usage_seconds_total"),
            ("namespace", &format!("ns-{}", i % 50)),
            ("pod", &format!("pod-{i}")),
        ]);
        let mut app = db.appender();
        for k in 0..TWO_HOURS / STEP {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            app.add(&l, t0 + k * STEP, (x >> 11) as f64 / 1e6).unwrap();
        }
        app.commit().unwrap();
    }
    db.flush_head().unwrap();
}

fn edge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_EDGE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("meridian-edge")
}

/// Starts the edge on `data`; answers its StoreAPI address.
fn start_edge(dir: &Path, data: &Path) -> (ChildGuard, String) {
    let cfg = dir.join("edge.yml");
    std::fs::write(&cfg, "global:\n  external_labels: {cluster: a}\n").unwrap();
    let mut child = Command::new(edge_bin())
        .arg("run")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--tsdb.path={}", data.display()))
        .arg("--http-address=127.0.0.1:0")
        .arg("--grpc-address=127.0.0.1:0")
        .arg("--log.level=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut grpc = None;
    let mut line = String::new();
    while grpc.is_none() && out.read_line(&mut line).unwrap() > 0 {
        if let Some(addr) = line.trim().strip_prefix("grpc listening on ") {
            grpc = Some(addr.to_owned());
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (
        ChildGuard(child),
        grpc.expect("the edge printed its gRPC address"),
    )
}

/// `Info` latencies (µs), one call every 5 ms for `for_`.
async fn poll_info(client: &StoreClient, for_: Duration) -> Vec<u64> {
    let mut out = Vec::new();
    let end = Instant::now() + for_;
    while Instant::now() < end {
        let t = Instant::now();
        client.info().await.unwrap();
        out.push(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

fn summary(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "{:>6} calls  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        v.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let (series, load) = if bench {
        (10_000, Duration::from_secs(20))
    } else {
        (200, Duration::from_secs(2))
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let t0 = t0();
    let t = Instant::now();
    fill(&data, t0, series);
    eprintln!(
        "info_under_load: {series} series x {} samples written in {:.1}s; edge {}",
        TWO_HOURS / STEP,
        t.elapsed().as_secs_f64(),
        edge_bin().display()
    );
    let (_edge, addr) = start_edge(tmp.path(), &data);
    let info = StoreClient::connect_plaintext(&addr).await.unwrap();
    let _ = info.info().await.unwrap();
    let idle = poll_info(&info, load / 4).await;

    let streamer = StoreClient::connect_plaintext(&addr).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (streamed, streams) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load_task = {
        let (stop, streamed, streams) = (stop.clone(), streamed.clone(), streams.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = pb::SeriesRequest {
                    min_time: t0,
                    max_time: t0 + TWO_HOURS,
                    matchers: vec![pb::LabelMatcher {
                        r#type: pb::label_matcher::Type::Eq as i32,
                        name: "__name__".into(),
                        value: "container_cpu_usage_seconds_total".into(),
                    }],
                    ..Default::default()
                };
                let mut s = streamer.series(req).await.unwrap();
                while let Some(frame) = s.next().await {
                    frame.unwrap();
                    streamed.fetch_add(1, Ordering::Relaxed);
                }
                streams.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the first stream start before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let before = streamed.load(Ordering::Relaxed);
    let loaded = poll_info(&info, load).await;
    let rate = (streamed.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    load_task.await.unwrap();
    println!(
        "Info latency on an edge serving {series} series x 2 h (one block), loopback, plaintext"
    );
    println!("  idle:                  {}", summary(idle));
    println!("  under a Series stream: {}", summary(loaded));
    println!(
        "  the stream: {:.0} series/s, {} complete answers",
        rate,
        streams.load(Ordering::Relaxed)
    );
}
