//! Agent mode side by side (issue 26): Prometheus 2.42 (`--enable-feature=agent`) and
//! `meridian-edge run --agent` scrape the same targets on the same interval and remote-write them,
//! each to its own receiver (a `meridian-edge` receiving; two, so the senders do not wait on each
//! other's backlog). Measured, for each sender:
//! - **steady state**: CPU (user + system, `/proc`) over a window after the warm-up, and resident
//!   memory at its end;
//! - **catch-up**: each sender's receiver is stopped for the outage, then started again; the time
//!   from when it is ready until the sender has sent everything scraped before then
//!   (`prometheus_remote_storage_queue_highest_sent_timestamp_seconds` past that moment), the CPU it
//!   spent meanwhile, and the backlog's samples per CPU-second and per second of wall time.
//!
//! Targets: one exposition server in this process answering `/metrics?t=N` with the same series for
//! every target (the `t` label of each target tells them apart), values changing every second.
//!
//! Run: `cargo bench -p meridian-integration --bench remote_write_agent` (1,000 targets × 1,000
//! series every 15 s, 3 min warm-up, 5 min window, 5 min outage, or `MERIDIAN_RW_BENCH_PHASES=
//! warmup,window,outage` in seconds; needs the release binaries and `prometheus`). Under `cargo test --all-targets`: a smoke run (20 targets × 100 series every 2 s,
//! short phases) that checks both senders send and catch up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_integration::served::bin_dir;
use meridian_testkit::{
    ChildGuard, cpu_seconds, free_port, http_get, metric_value, require, rss_bytes, wait_for,
};

struct Shape {
    targets: usize,
    series: usize,
    interval: Duration,
    warmup: Duration,
    window: Duration,
    outage: Duration,
}

/// The exposition every target serves at second `s`.
fn exposition(series: usize, s: u64) -> String {
    let mut out = String::with_capacity(series * 48);
    out.push_str("# HELP bench_value A value per series.\n# TYPE bench_value counter\n");
    for i in 0..series {
        out.push_str(&format!(
            "bench_value{{series=\"s{i}\",kind=\"k{}\"}} {}\n",
            i % 10,
            s * (i as u64 % 7 + 1)
        ));
    }
    out
}

async fn serve_targets(series: usize) -> String {
    let cache: Arc<Mutex<(u64, Arc<String>)>> = Arc::new(Mutex::new((0, Arc::new(String::new()))));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let cache = cache.clone();
            async move {
                let s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let body = {
                    let mut c = cache.lock().unwrap();
                    if c.0 != s {
                        *c = (s, Arc::new(exposition(series, s)));
                    }
                    c.1.clone()
                };
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    (*body).clone(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn scrape_config(shape: &Shape, targets_addr: &str, receiver: &str, sender: &str) -> String {
    let mut c = format!(
        "global:\n  scrape_interval: {}s\n  scrape_timeout: {}s\n  external_labels: {{sender: {sender}}}\nscrape_configs:\n  - job_name: bench\n    static_configs:\n",
        shape.interval.as_secs(),
        shape.interval.as_secs().min(10)
    );
    for t in 0..shape.targets {
        c.push_str(&format!(
            "      - targets: ['{targets_addr}']\n        labels: {{t: '{t}', __param_t: '{t}'}}\n"
        ));
    }
    c.push_str(&format!(
        "remote_write:\n  - url: http://{receiver}/api/v1/write\n    name: bench\n"
    ));
    c
}

fn spawn(cmd: &mut Command, log: &Path) -> ChildGuard {
    let log = std::fs::File::create(log).unwrap();
    ChildGuard(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    )
}

fn receiver(dir: &Path, name: &str, addr: &str) -> ChildGuard {
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg, "global: {}\n").unwrap();
    let c = spawn(
        Command::new(bin_dir().join("meridian-edge"))
            .arg("run")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ))
            .arg(format!("--http-address={addr}"))
            .arg("--grpc-address=none")
            .arg("--config.no-watch"),
        &dir.join(format!("{name}.log")),
    );
    wait_ready(addr);
    c
}

fn wait_ready(addr: &str) {
    wait_for(
        &format!("{addr} to be ready"),
        Duration::from_secs(60),
        || {
            meridian_testkit::http("GET", addr, "/-/ready", &[], b"")
                .is_ok_and(|r| r.status == 200)
                .then_some(())
        },
    );
}

fn stop(mut c: ChildGuard) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.pid().to_string())
        .status();
    let _ = c.0.wait();
}

fn highest_sent(addr: &str) -> f64 {
    metric_value(
        &http_get(addr, "/metrics").text(),
        "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
    )
    .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    // `MERIDIAN_RW_BENCH_PHASES=warmup,window,outage` (seconds) shortens a run.
    let phases: Vec<u64> = std::env::var("MERIDIAN_RW_BENCH_PHASES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| v.len() == 3)
        .unwrap_or_else(|| vec![180, 300, 300]);
    let shape = if bench {
        Shape {
            targets: 1000,
            series: 1000,
            interval: Duration::from_secs(15),
            warmup: Duration::from_secs(phases[0]),
            window: Duration::from_secs(phases[1]),
            outage: Duration::from_secs(phases[2]),
        }
    } else {
        Shape {
            targets: 20,
            series: 100,
            interval: Duration::from_secs(2),
            warmup: Duration::from_secs(6),
            window: Duration::from_secs(6),
            outage: Duration::from_secs(6),
        }
    };
    let Some(prom_bin) = require("prometheus", "apt-get install prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let targets = serve_targets(shape.series).await;
    let (rx_p, rx_m) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut receivers = Some((
        receiver(d, "rx-prom", &rx_p),
        receiver(d, "rx-meridian", &rx_m),
    ));
    let (p_addr, m_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(
        d.join("prom.yml"),
        scrape_config(&shape, &targets, &rx_p, "prometheus"),
    )
    .unwrap();
    std::fs::write(
        d.join("edge.yml"),
        scrape_config(&shape, &targets, &rx_m, "meridian"),
    )
    .unwrap();
    let prom = spawn(
        Command::new(prom_bin)
            .arg("--enable-feature=agent")
            .arg(format!("--config.file={}", d.join("prom.yml").display()))
            .arg(format!(
                "--storage.agent.path={}",
                d.join("prom-agent").display()
            ))
            .arg(format!("--web.listen-address={p_addr}")),
        &d.join("prom.log"),
    );
    let edge = spawn(
        Command::new(bin_dir().join("meridian-edge"))
            .arg("run")
            .arg("--agent")
            .arg(format!("--config.file={}", d.join("edge.yml").display()))
            .arg(format!(
                "--storage.agent.path={}",
                d.join("edge-agent").display()
            ))
            .arg(format!("--http-address={m_addr}"))
            .arg("--config.no-watch"),
        &d.join("edge.log"),
    );
    wait_ready(&p_addr);
    wait_ready(&m_addr);
    let senders = [
        ("Prometheus 2.42 --agent", prom.pid(), p_addr.clone()),
        ("meridian-edge --agent", edge.pid(), m_addr.clone()),
    ];
    tokio::time::sleep(shape.warmup).await;
    let cpu0: Vec<f64> = senders.iter().map(|s| cpu_seconds(s.1)).collect();
    tokio::time::sleep(shape.window).await;
    let steady: Vec<(f64, u64)> = senders
        .iter()
        .zip(&cpu0)
        .map(|(s, c0)| {
            (
                (cpu_seconds(s.1) - c0) / shape.window.as_secs_f64(),
                rss_bytes(s.1),
            )
        })
        .collect();
    // The outages, one sender at a time (each catches up alone, not competing for the cores).
    let (a, b) = receivers.take().unwrap();
    let mut rxs = [Some(a), Some(b)];
    let limit = if bench {
        Duration::from_secs(1800)
    } else {
        Duration::from_secs(120)
    };
    let mut caught: Vec<Option<(Duration, f64, f64, String)>> = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let (rx_addr, name) = if i == 0 {
            (&rx_p, "rx-prom")
        } else {
            (&rx_m, "rx-meridian")
        };
        stop(rxs[i].take().unwrap());
        let began = meridian_core::time::now_ms() as f64 / 1000.0;
        tokio::time::sleep(shape.outage).await;
        // The outage lasts until the receiver is ready again (it replays its WAL first): the
        // catch-up is timed from then, and the backlog is what was scraped until then.
        let restarted = receiver(d, name, rx_addr);
        let back = meridian_core::time::now_ms() as f64 / 1000.0;
        let cpu1 = cpu_seconds(s.1);
        let t1 = Instant::now();
        let mut got = None;
        while got.is_none() && t1.elapsed() < limit {
            if highest_sent(&s.2) >= back {
                let text = http_get(&s.2, "/metrics").text();
                let shards = format!(
                    "{} shards (desired {:.1}, max {})",
                    metric_value(&text, "prometheus_remote_storage_shards").unwrap_or(0.0),
                    metric_value(&text, "prometheus_remote_storage_shards_desired").unwrap_or(0.0),
                    metric_value(&text, "prometheus_remote_storage_shards_max").unwrap_or(0.0),
                );
                got = Some((t1.elapsed(), cpu_seconds(s.1) - cpu1, back - began, shards));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        caught.push(got);
        rxs[i] = Some(restarted);
        // Let the other sender's steady state settle before its outage.
        tokio::time::sleep(shape.warmup.min(Duration::from_secs(30))).await;
    }
    let per_scrape = shape.targets as f64 * (shape.series as f64 + 5.0);
    println!(
        "## Agent mode: {} targets x {} series every {:?} ({:.0} samples/s); window {:?}, outage {:?}",
        shape.targets,
        shape.series,
        shape.interval,
        per_scrape / shape.interval.as_secs_f64(),
        shape.window,
        shape.outage
    );
    println!(
        "| sender | CPU (cores) | RSS (MiB) | catch-up wall | catch-up CPU s | backlog samples / CPU s | backlog samples / s | shards at catch-up |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, s) in senders.iter().enumerate() {
        let (cpu, rss) = steady[i];
        match &caught[i] {
            Some((wall, c, outage, shards)) => {
                let backlog = per_scrape * outage / shape.interval.as_secs_f64();
                println!(
                    "| {} | {cpu:.3} | {:.0} | {:.1} s | {c:.1} | {:.0} | {:.0} | {shards} |",
                    s.0,
                    rss as f64 / (1 << 20) as f64,
                    wall.as_secs_f64(),
                    backlog / c.max(0.01),
                    backlog / wall.as_secs_f64().max(0.001)
                )
            }
            None => println!(
                "| {} | {cpu:.3} | {:.0} | not within {limit:?} | | | | |",
                s.0,
                rss as f64 / (1 << 20) as f64
            ),
        }
    }
    for (i, s) in senders.iter().enumerate() {
        assert!(caught[i].is_some(), "{} did not catch up", s.0);
    }
    drop((prom, edge, rxs));
}
