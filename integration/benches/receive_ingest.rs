//! Receive ingest (issue 28): remote-write throughput and latency of a hashring of three receivers
//! at RF=1 and RF=3, against a single edge receiving directly (`/api/v1/write`, no routing).
//!
//! Load: `WORKERS` client threads in this process, each owning a disjoint share of `SERIES`
//! series, post remote-write 1.0 requests of 500 samples (Prometheus 2.42's
//! `max_samples_per_send`), one sample per series per round, rounds 1 s apart in sample time (from 2 h ago), to
//! the nodes in turn (as a Service in front of a StatefulSet spreads them), over plaintext HTTP/1.1,
//! one connection per request. Every request must be answered 2xx. Measured per setup over the
//! window: samples accepted per second of wall time, samples per CPU-second of all receivers
//! together (user + system, `/proc`; "per core"), the p50/p99 latency of one request, and the
//! writes the receivers made for routed requests by outcome.
//!
//! Limits of the setup: the three nodes, the client threads and the replicas' copies share one
//! machine, so RF=3 does three times the storing on the same cores; forwarding is over loopback.
//!
//! Run: `cargo bench -p meridian-integration --bench receive_ingest` (20,000 series, 30 s per
//! setup; `MERIDIAN_RECEIVE_BENCH_SECONDS` to change; needs the release binaries). Under
//! `cargo test --all-targets`: a smoke run (2,000 series, 2 s per setup) that checks every setup
//! stores what it was sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_core::labels::Labels;
use meridian_integration::receivers::{Node, body, hashring};
use meridian_testkit::{cpu_seconds, http};

const PER_REQUEST: usize = 500;
const WORKERS: usize = 4;

struct Result {
    setup: &'static str,
    samples: u64,
    wall: Duration,
    cpu: f64,
    p50: Duration,
    p99: Duration,
    stored: u64,
    /// Writes of routed requests by outcome, over every node.
    outcomes: String,
}

/// Starts a setup: one plain edge, or three receivers in a hashring with `rf`.
fn start(dir: &std::path::Path, rf: Option<usize>) -> Vec<Node> {
    match rf {
        None => {
            let mut n = Node::new(dir, 0, vec![]);
            n.local_endpoint = false;
            n.start();
            vec![n]
        }
        Some(rf) => {
            let mut nodes: Vec<Node> = (0..3).map(|i| Node::new(dir, i, vec![])).collect();
            let ring = dir.join("hashring.json");
            let eps: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
            std::fs::write(
                &ring,
                hashring(&eps.iter().map(String::as_str).collect::<Vec<_>>()),
            )
            .unwrap();
            for (i, n) in nodes.iter_mut().enumerate() {
                n.flags = vec![
                    format!("--receive.hashrings-file={}", ring.display()),
                    format!("--receive.replication-factor={rf}"),
                    format!("--label=receive_replica=\"{i}\""),
                ];
                n.start();
            }
            nodes
        }
    }
}

fn run(setup: &'static str, rf: Option<usize>, series: usize, window: Duration) -> Result {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(dir.path(), rf);
    let path = if rf.is_some() {
        "/api/v1/receive"
    } else {
        "/api/v1/write"
    };
    let addrs: Vec<String> = nodes.iter().map(|n| n.http.clone()).collect();
    let pids: Vec<u32> = nodes
        .iter()
        .map(|n| n.child.as_ref().unwrap().pid())
        .collect();
    let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = meridian_core::time::now_ms() - 2 * 3_600_000;
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, sent, addrs) = (stop.clone(), sent.clone(), addrs.clone());
            std::thread::spawn(move || {
                let mine: Vec<Labels> = (0..series)
                    .filter(|i| i % WORKERS == w)
                    .map(|i| {
                        Labels::from_pairs([
                            ("__name__", "bench_ingest_total"),
                            (
                                "instance",
                                format!("10.0.{}.{}:9100", i / 250, i % 250).as_str(),
                            ),
                            ("job", "node"),
                            ("series", i.to_string().as_str()),
                        ])
                    })
                    .collect();
                let mut latencies = Vec::new();
                let mut round = 0i64;
                let mut next = w;
                'rounds: while !stop.load(Ordering::Relaxed) {
                    let t = t0 + round * 1_000;
                    if t > meridian_core::time::now_ms() {
                        break;
                    }
                    for chunk in mine.chunks(PER_REQUEST) {
                        let batch: Vec<(Labels, Vec<(i64, f64)>)> = chunk
                            .iter()
                            .map(|l| (l.clone(), vec![(t, round as f64)]))
                            .collect();
                        let b = body(&batch);
                        let addr = &addrs[next % addrs.len()];
                        next += 1;
                        let began = Instant::now();
                        let r = http(
                            "POST",
                            addr,
                            path,
                            &[
                                ("Content-Encoding", "snappy"),
                                ("Content-Type", "application/x-protobuf"),
                                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                            ],
                            &b,
                        )
                        .unwrap();
                        latencies.push(began.elapsed());
                        assert!(r.status < 300, "{addr}: {} {}", r.status, r.text());
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break 'rounds;
                        }
                    }
                    round += 1;
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let wall = started.elapsed();
    let cpu: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    // The writes past each request's quorum finish in the background (RF=3's third copy).
    let want = sent.load(Ordering::Relaxed) * rf.unwrap_or(1) as u64;
    let stored_now = || -> u64 {
        nodes
            .iter()
            .map(|n| n.metric("meridian_receive_samples_total", "stored") as u64)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_now() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = stored_now();
    let outcomes: Vec<String> = ["stored", "conflict", "unavailable", "invalid", "failed"]
        .iter()
        .map(|o| {
            let n: f64 = nodes
                .iter()
                .map(|n| n.metric("meridian_receive_forward_requests_total", o))
                .sum();
            format!("{o} {}", n.abs())
        })
        .collect();
    for n in &mut nodes {
        n.stop();
    }
    Result {
        setup,
        samples: sent.load(Ordering::Relaxed),
        wall,
        cpu,
        p50: pct(0.5),
        p99: pct(0.99),
        stored,
        outcomes: outcomes.join(", "),
    }
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("MERIDIAN_RECEIVE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (series, window) = if bench {
        (20_000, Duration::from_secs(secs))
    } else {
        (2_000, Duration::from_secs(2))
    };
    let mut rows = Vec::new();
    for (setup, rf) in [
        ("single edge, /api/v1/write", None),
        ("3 receivers, RF=1", Some(1)),
        ("3 receivers, RF=3", Some(3)),
    ] {
        let r = run(setup, rf, series, window);
        // Everything accepted is stored at least quorum times (RF / 2 + 1). A copy past the quorum
        // may arrive after the next round's sample of its series reached that node (the answer
        // does not wait for it, as in Thanos) and is then refused as out of order.
        let copies = rf.map_or(1, |rf| rf / 2 + 1) as u64;
        assert!(
            r.stored >= r.samples * copies,
            "{setup}: {} samples accepted, {} stored (want {} copies); writes: {}",
            r.samples,
            r.stored,
            copies,
            r.outcomes
        );
        rows.push(r);
    }
    let mut out = String::from(
        "| setup | samples accepted | samples/s | samples per CPU-second | p50 | p99 | node writes |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {} |\n",
            r.setup,
            r.samples,
            r.samples as f64 / r.wall.as_secs_f64(),
            r.samples as f64 / r.cpu.max(0.001),
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.outcomes
        ));
    }
    println!(
        "receive ingest: {series} series, {} client threads, {PER_REQUEST} samples per request, {:?} per setup\n{out}",
        WORKERS, window
    );
    if bench {
        let _ = std::fs::write("target/receive_ingest.md", &out);
    }
}
