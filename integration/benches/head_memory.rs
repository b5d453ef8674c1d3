//! Head memory per active series, side by side with Prometheus 2.42 on the same series.
//!
//! 100k series with 10 labels each and 10 samples (one open chunk) are appended into Meridian's TSDB (in
//! this process; RSS measured from /proc) and remote-written into a Prometheus 2.42 started on loopback
//! (`--web.enable-remote-write-receiver`; its `process_resident_memory_bytes` and
//! `go_memstats_heap_inuse_bytes` before and after). Run: `cargo bench -p meridian-integration --bench
//! head_memory`. Needs `prometheus` on PATH (Debian's package).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use meridian_core::Labels;
use meridian_storeapi::proto::prometheus as prom;
use meridian_tsdb::db::{Db, DbOptions};

const SERIES: usize = 100_000;
const SAMPLES: i64 = 10;

fn labels(i: usize) -> Vec<(String, String)> {
    vec![
        (
            "__name__".into(),
            "container_memory_working_set_bytes".into(),
        ),
        ("cluster".into(), "prod-eu-west-1".into()),
        ("container".into(), format!("c-{}", i % 50)),
        ("endpoint".into(), "https-metrics".into()),
        ("id".into(), format!("/kubepods/pod{i}")),
        ("image".into(), "registry.example/app:1.2.3".into()),
        (
            "instance".into(),
            format!("10.0.{}.{}:10250", i / 250 % 256, i % 250),
        ),
        ("job".into(), "kubelet".into()),
        ("namespace".into(), format!("ns-{}", i % 40)),
        ("pod".into(), format!("pod-{i}")),
    ]
}

fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let r = meridian_testkit::http(method, addr, path, headers, body).unwrap();
    (r.status, r.body)
}

fn metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not exposed"))
}

fn main() {
    // Criterion-style invocations (`cargo test --benches`) pass --bench or nothing; only measure when
    // asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("head_memory: run with `cargo bench` to measure");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - SAMPLES * 15_000;

    // Meridian.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        DbOptions {
            retention_time: None,
            ..Default::default()
        },
    )
    .unwrap();
    let all: Vec<Labels> = (0..SERIES).map(|i| Labels::from_pairs(labels(i))).collect();
    let label_text: usize = all.iter().map(|l| l.text_len()).sum();
    let before = meridian_testkit::rss_bytes(std::process::id());
    for k in 0..SAMPLES {
        for batch in all.chunks(5000) {
            let mut app = db.appender();
            for (j, l) in batch.iter().enumerate() {
                app.add(l, t0 + k * 15_000, (j as i64 * k) as f64).unwrap();
            }
            app.commit().unwrap();
        }
    }
    let ours_rss = meridian_testkit::rss_bytes(std::process::id()) - before;
    db.refresh_metrics();
    let ours_accounted = db.metrics.head_memory_per_series_bytes.get();
    drop(db);

    // Prometheus 2.42.
    let Some(prometheus) = meridian_testkit::require("prometheus", "apt-get install prometheus")
    else {
        return;
    };
    let pdir = tempfile::tempdir().unwrap();
    let cfg = pdir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let port = meridian_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _p = meridian_testkit::ChildGuard(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&addr).is_err() || http(&addr, "GET", "/-/ready", &[], b"").0 != 200 {
        assert!(Instant::now() < deadline, "prometheus not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let p_rss0 = metric(&addr, "process_resident_memory_bytes");
    let p_heap0 = metric(&addr, "go_memstats_heap_inuse_bytes");
    for k in 0..SAMPLES {
        for start in (0..SERIES).step_by(5000) {
            let req = prom::WriteRequest {
                timeseries: (start..start + 5000)
                    .map(|i| prom::TimeSeries {
                        labels: labels(i)
                            .into_iter()
                            .map(|(name, value)| prom::Label { name, value })
                            .collect(),
                        samples: vec![prom::Sample {
                            value: ((i - start) as i64 * k) as f64,
                            timestamp: t0 + k * 15_000,
                        }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            let body = meridian_edge::receive::encode_body(&req).unwrap();
            let (status, resp) = http(
                &addr,
                "POST",
                "/api/v1/write",
                &[
                    ("Content-Type", "application/x-protobuf"),
                    ("Content-Encoding", "snappy"),
                    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                ],
                &body,
            );
            assert!(
                status == 204 || status == 200,
                "remote write: {status} {}",
                String::from_utf8_lossy(&resp)
            );
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let head = metric(&addr, "prometheus_tsdb_head_series");
    let p_rss = metric(&addr, "process_resident_memory_bytes") - p_rss0;
    let p_heap = metric(&addr, "go_memstats_heap_inuse_bytes") - p_heap0;
    let per = |x: f64| x / SERIES as f64;
    println!(
        "head memory per active series ({SERIES} series, 10 labels, {SAMPLES} samples, ~{} bytes of label text each):",
        label_text / SERIES
    );
    println!(
        "  meridian     RSS delta {:>7.0} B/series   accounted {:>5} B/series",
        per(ours_rss as f64),
        ours_accounted
    );
    println!(
        "  prometheus   RSS delta {:>7.0} B/series   Go heap in use delta {:>7.0} B/series   (head series {head})",
        per(p_rss),
        per(p_heap)
    );
}
