//! The edge remote-writing to real receivers, as processes (issue 26).
//!
//! - `sends_exactly_through_an_outage_and_a_kill`: an edge scrapes node_exporter and itself every
//!   second and remote-writes to Prometheus 2.42 (`--web.enable-remote-write-receiver`) and to a
//!   second edge. Prometheus is down for two minutes (`MERIDIAN_RW_OUTAGE_SECONDS`), then back; then
//!   the sender is SIGKILLed and restarted on its data directory; then it is stopped (its queues
//!   flush). Every sample in the sender's own TSDB (with its external label) is in both receivers with
//!   the same value, and nothing else is.
//! - `agent_mode_writes_no_blocks_and_keeps_disk_bounded`: `--agent` scraping node_exporter and itself
//!   every second for ten minutes (`MERIDIAN_AGENT_SECONDS`) into an edge receiver, truncating every
//!   30 s: no block directory ever appears, the data directory stays small while the data sent grows,
//!   and `up` arrives every second without a gap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_core::{MatchType, Matcher};
use meridian_testkit::{
    ChildGuard, Prometheus, free_port, http_get, promtool_dump, require, wait_for,
};
use meridian_tsdb::db::{Db, DbOptions, dir_size};

use crate::support::{signal, start_edge_with, stop_gracefully};

fn secs(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

fn node_exporter() -> Option<(ChildGuard, String)> {
    let bin = require(
        "prometheus-node-exporter",
        "apt-get install prometheus-node-exporter",
    )?;
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some((ChildGuard(child), addr))
}

/// An edge that only receives remote write, in `dir`: the process, its data directory, its address.
fn start_receiver(dir: &Path) -> (ChildGuard, std::path::PathBuf, String) {
    let cfg = dir.join("receiver.yml");
    std::fs::write(&cfg, "global: {}\n").unwrap();
    let data = dir.join("receiver-data");
    let addr = format!("127.0.0.1:{}", free_port());
    let (rx, _) = start_edge_with(&cfg, &data, &addr, &dir.join("receiver.log"), false, &[]);
    (rx, data, addr)
}

/// Every sample of a TSDB directory, keyed as `promtool tsdb dump` prints series, with `extra`
/// labels added.
fn samples(dir: &Path, extra: &[(&str, &str)]) -> HashMap<(String, i64), f64> {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut out = HashMap::new();
    let all = [Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()];
    for (l, ss) in db.samples(&all, i64::MIN, i64::MAX).unwrap() {
        let l = if extra.is_empty() {
            l
        } else {
            meridian_core::labels::Labels::from_pairs(extra.iter().copied()).merged_with(&l)
        };
        let key = l.to_string();
        for s in ss {
            out.insert((key.clone(), s.t), s.v);
        }
    }
    out
}

/// Differences between two sample sets: (missing or different in `got`, extra in `got`).
fn diff(
    want: &HashMap<(String, i64), f64>,
    got: &HashMap<(String, i64), f64>,
) -> (Vec<String>, usize) {
    let missing: Vec<String> = want
        .iter()
        .filter(|(k, v)| match got.get(*k) {
            Some(o) => !((o.is_nan() && v.is_nan()) || o.to_bits() == v.to_bits()),
            None => true,
        })
        .map(|(k, v)| format!("{} @{} = {v} (got {:?})", k.0, k.1, got.get(k)))
        .collect();
    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
    (missing, extra)
}

/// A metric of an edge's `/metrics`, summed over the series whose line contains `filter`.
fn edge_metric(addr: &str, name: &str, filter: &str) -> f64 {
    meridian_testkit::metric_sum(&http_get(addr, "/metrics").text(), name, filter)
}

#[test]
fn sends_exactly_through_an_outage_and_a_kill() {
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    let Some((_ne, ne_addr)) = node_exporter() else {
        return;
    };
    let outage = secs("MERIDIAN_RW_OUTAGE_SECONDS", 120);
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("prom");
    std::fs::create_dir_all(&pdir).unwrap();
    let Some(mut prom) = Prometheus::start(
        &pdir,
        "global: {}\n",
        &["--web.enable-remote-write-receiver"],
    ) else {
        return;
    };
    // The second receiver: an edge that only receives.
    let (rx, rx_data, rx_addr) = start_receiver(dir.path());
    let cfg = dir.path().join("sender.yml");
    let sender_addr = format!("127.0.0.1:{}", free_port());
    let q = "queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 2s}";
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  external_labels: {{cluster: e1}}\n\
             scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{ne_addr}']}}]\n  - job_name: edge\n    static_configs: [{{targets: ['{sender_addr}']}}]\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    name: prometheus\n    {q}\n  - url: http://{rx_addr}/api/v1/write\n    name: edge\n    {q}\n",
            prom.addr
        ),
    )
    .unwrap();
    let data = dir.path().join("sender-data");
    let log = dir.path().join("sender.log");
    let start = || start_edge_with(&cfg, &data, &sender_addr, &log, false, &[]).0;
    let mut sender = start();
    std::thread::sleep(Duration::from_secs(15));
    // The receiver goes away; what the sender scrapes meanwhile waits in its WAL.
    prom.stop();
    std::thread::sleep(outage);
    let retried_during_outage = edge_metric(
        &sender_addr,
        "prometheus_remote_storage_samples_retried_total",
        "remote_name=\"prometheus\"",
    );
    prom.restart();
    std::thread::sleep(Duration::from_secs(10));
    // SIGKILL mid-stream: what was in the WAL but not sent must go out after the restart.
    signal(sender.pid(), "KILL");
    let _ = sender.0.wait();
    std::thread::sleep(Duration::from_secs(3));
    sender = start();
    std::thread::sleep(Duration::from_secs(15));
    // A graceful stop: scraping ends, the queues send what is left within the flush deadline.
    stop_gracefully(sender);
    prom.stop();
    stop_gracefully(rx);

    let ours = samples(&data, &[("cluster", "e1")]);
    let theirs = promtool_dump(&promtool, &prom.data);
    let received = samples(&rx_data, &[]);
    eprintln!(
        "sender stored {} samples; Prometheus has {}, the edge receiver {}; {retried_during_outage} samples retried during the {outage:?} outage",
        ours.len(),
        theirs.len(),
        received.len()
    );
    // node_exporter and the edge give about 600 samples a second.
    let ran = 15 + outage.as_secs() + 10 + 3 + 15;
    assert!(
        ours.len() as u64 > 300 * ran,
        "too little data to be meaningful"
    );
    assert!(
        retried_during_outage > 0.0,
        "the outage did not hit the stream"
    );
    for (name, got) in [("Prometheus", &theirs), ("the edge receiver", &received)] {
        let (missing, extra) = diff(&ours, got);
        assert!(
            missing.is_empty(),
            "{} samples missing or different in {name}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert_eq!(extra, 0, "{name} has samples the sender does not");
    }
}

#[test]
fn agent_mode_writes_no_blocks_and_keeps_disk_bounded() {
    let Some((_ne, ne_addr)) = node_exporter() else {
        return;
    };
    let run = secs("MERIDIAN_AGENT_SECONDS", 600);
    let dir = tempfile::tempdir().unwrap();
    let (rx, rx_data, rx_addr) = start_receiver(dir.path());
    let cfg = dir.path().join("agent.yml");
    let agent_addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{ne_addr}']}}]\n  - job_name: agent\n    static_configs: [{{targets: ['{agent_addr}']}}]\n\
             remote_write:\n  - url: http://{rx_addr}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s}}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("agent-data");
    let agent_path = format!("--storage.agent.path={}", data.display());
    let (agent, _) = start_edge_with(
        &cfg,
        &data,
        &agent_addr,
        &dir.path().join("agent.log"),
        false,
        &[
            "--agent",
            &agent_path,
            "--storage.agent.wal-truncate-frequency=30s",
            "--storage.agent.retention.min-time=30s",
        ],
    );
    let began = Instant::now();
    let mut sizes: Vec<(Duration, u64)> = Vec::new();
    while began.elapsed() < run {
        std::thread::sleep(Duration::from_secs(5));
        for e in std::fs::read_dir(&data).unwrap().flatten() {
            assert!(
                !e.path().join("meta.json").exists() && !e.path().join("chunks").exists(),
                "agent mode wrote a block: {}",
                e.path().display()
            );
        }
        sizes.push((began.elapsed(), dir_size(&data)));
    }
    let sent = edge_metric(&agent_addr, "prometheus_remote_storage_samples_total", "");
    wait_for(
        "the agent's queue to catch up",
        Duration::from_secs(30),
        || {
            (edge_metric(&agent_addr, "prometheus_remote_storage_samples_pending", "") == 0.0)
                .then_some(())
        },
    );
    stop_gracefully(agent);
    stop_gracefully(rx);
    let half = run / 2;
    let early = sizes
        .iter()
        .filter(|(t, _)| *t <= half)
        .map(|x| x.1)
        .max()
        .unwrap();
    let late = sizes
        .iter()
        .filter(|(t, _)| *t > half)
        .map(|x| x.1)
        .max()
        .unwrap();
    eprintln!(
        "agent: {sent} samples sent in {run:?}; data directory at most {early} bytes in the first half, {late} in the second"
    );
    // WAL records cost at least ~10 bytes a sample: unbounded, the directory would hold all of it;
    // truncated every 30 s, it holds about the last minute.
    assert!(
        sent > 300.0 * run.as_secs_f64(),
        "too little data to be meaningful"
    );
    assert!(
        (late as f64) < sent * 10.0 / 2.0,
        "the data directory ({late} bytes) holds most of what was sent ({sent} samples)"
    );
    assert!(
        late <= early * 3 / 2 + (1 << 20),
        "the data directory grows: {early} bytes in the first half, {late} in the second"
    );
    // Nothing lost: `up` of the agent's own job arrives every second.
    let received = samples(&rx_data, &[]);
    let mut ts: Vec<i64> = received
        .keys()
        .filter(|(l, _)| l.starts_with("{__name__=\"up\"") && l.contains("job=\"agent\""))
        .map(|k| k.1)
        .collect();
    ts.sort_unstable();
    let gaps: Vec<i64> = ts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 2500)
        .collect();
    assert!(
        ts.len() as u64 >= run.as_secs() * 9 / 10,
        "{} samples of up",
        ts.len()
    );
    assert!(gaps.is_empty(), "gaps in up: {gaps:?}");
}
