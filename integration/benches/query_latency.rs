//! Per-query latency through the gateway against Prometheus 2.42 on the same blocks (issue 25): the
//! fixed cost every small dashboard query pays.
//!
//! 8 demo instances (the compliance list's series shapes) × 2 h at 15 s become blocks with
//! `promtool tsdb create-blocks-from openmetrics`. Prometheus 2.42 serves them; a release
//! `meridian-edge` serves copies of them over the StoreAPI twice, plaintext and mTLS (certificates
//! from `meridian-pki`), each behind its own `meridian-gateway` (`--endpoint`, no results cache for
//! instant queries). Every query is asked sequentially over one kept-alive HTTP/1.1 connection per
//! server; the median of N (300 with `--bench`) is reported, and the gateway's minus Prometheus'.
//!
//! Run: `cargo build --release --bins && cargo bench -p meridian-integration --bench query_latency`
//! (binaries from this build's directory or `MERIDIAN_BIN_DIR`; `MERIDIAN_QUERY_LATENCY_N` sets the
//! number of requests, e.g. to profile the processes). Under `cargo test --all-targets`: a
//! smoke run of 5 requests per query.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_integration::demo::prometheus_from_blocks;
use meridian_integration::demo::{STEP, T0, generate};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_testkit::{ChildGuard, free_port, require, urlencode, wait_for};

const QUERIES: &[&str] = &[
    "vector(1)",
    "demo_num_cpus",
    "sum(rate(demo_cpu_usage_seconds_total[5m]))",
    "demo_memory_usage_bytes{type=\"free\"}",
];

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MERIDIAN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            addr: addr.to_owned(),
            r: BufReader::new(s),
        }
    }

    /// GET `path`; the body.
    fn get(&mut self, path: &str) -> Vec<u8> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.contains(" 200 "), "{path}: {line}");
        let mut len = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>().unwrap());
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let mut b = vec![0; len.expect("Content-Length")];
            self.r.read_exact(&mut b).unwrap();
            body = b;
        }
        body
    }
}

fn query_path(q: &str, t: i64) -> String {
    format!(
        "/api/v1/query?query={}&time={}.{:03}",
        urlencode(q),
        t / 1000,
        t % 1000
    )
}

/// Median wall time of `n` sequential calls of `path` on one connection (after 3 warm-ups).
fn median(addr: &str, path: &str, n: usize) -> Duration {
    let mut c = Conn::open(addr);
    for _ in 0..3 {
        c.get(path);
    }
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get(path);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

/// An edge serving a copy of `blocks`, plaintext or with `tls` (cert, key, client CA).
fn edge(dir: &Path, blocks: &[PathBuf], tls: Option<[PathBuf; 3]>) -> (ChildGuard, String) {
    let data = dir.join("tsdb");
    std::fs::create_dir_all(&data).unwrap();
    for b in blocks {
        let to = data.join(b.file_name().unwrap());
        std::fs::create_dir_all(to.join("chunks")).unwrap();
        for f in ["meta.json", "index", "tombstones"] {
            if b.join(f).exists() {
                std::fs::copy(b.join(f), to.join(f)).unwrap();
            }
        }
        for c in std::fs::read_dir(b.join("chunks")).unwrap() {
            let c = c.unwrap().path();
            std::fs::copy(&c, to.join("chunks").join(c.file_name().unwrap())).unwrap();
        }
    }
    let cfg = dir.join("edge.yml");
    std::fs::write(&cfg, "global:\n  external_labels: {cluster: bench}\n").unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin_dir().join("meridian-edge"));
    cmd.arg("run")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--tsdb.path={}", data.display()))
        .arg("--tsdb.retention=100y")
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .arg(format!("--grpc-address={grpc}"))
        .arg("--log.level=warn");
    if let Some([cert, key, ca]) = tls {
        cmd.arg(format!("--grpc-server-tls-cert={}", cert.display()))
            .arg(format!("--grpc-server-tls-key={}", key.display()))
            .arg(format!("--grpc-server-tls-client-ca={}", ca.display()));
    }
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    (ChildGuard(child), grpc)
}

/// A gateway with one static endpoint; `tls`: client cert, key, CA.
fn gateway(dir: &Path, endpoint: &str, tls: Option<[PathBuf; 3]>) -> (ChildGuard, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin_dir().join("meridian-gateway"));
    cmd.arg("query")
        .arg(format!("--http-address={http}"))
        .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
        .arg(format!("--endpoint={endpoint}"))
        .arg(format!("--data-dir={}", dir.display()))
        .arg("--log.level=warn");
    if let Some([cert, key, ca]) = tls {
        cmd.arg("--grpc-client-tls-secure")
            .arg(format!("--grpc-client-tls-cert={}", cert.display()))
            .arg(format!("--grpc-client-tls-key={}", key.display()))
            .arg(format!("--grpc-client-tls-ca={}", ca.display()))
            .arg("--grpc-client-server-name=edge.bench");
    }
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    (ChildGuard(child), http)
}

fn main() {
    meridian_pki::install_crypto_provider();
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("MERIDIAN_QUERY_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 300 } else { 5 });
    let Some(promtool) = require("promtool", "apt-get install prometheus") else {
        return;
    };
    for b in ["meridian-edge", "meridian-gateway"] {
        assert!(
            bin_dir().join(b).exists(),
            "{} missing (cargo build --bins)",
            bin_dir().join(b).display()
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let points = 2 * 3600 * 1000 / STEP;
    let series = generate(8, points);
    let Some(prom) = prometheus_from_blocks(&promtool, tmp.path(), &series) else {
        return;
    };
    let blocks: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("prom-data"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").is_file())
        .collect();

    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = issue::new_ca("bench-ca", KeyType::P256, Validity::days(2).unwrap()).unwrap();
    issue::write_pair(&pki, "ca", &ca, true).unwrap();
    for (name, usage, dns) in [
        ("edge", Usage::Server, vec!["edge.bench".to_string()]),
        ("gateway", Usage::Client, vec![]),
    ] {
        let c = issue::issue(
            &ca,
            usage,
            name,
            &dns,
            &[],
            KeyType::P256,
            Validity::days(1).unwrap(),
        )
        .unwrap();
        issue::write_pair(&pki, name, &c, true).unwrap();
    }
    let p = |f: &str| pki.join(f);
    let sub = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (_e1, plain_grpc) = edge(&sub("edge-plain"), &blocks, None);
    let (_e2, tls_grpc) = edge(
        &sub("edge-tls"),
        &blocks,
        Some([p("edge.crt"), p("edge.key"), p("ca.crt")]),
    );
    let (_g1, plain) = gateway(&sub("gw-plain"), &plain_grpc, None);
    let (_g2, mtls) = gateway(
        &sub("gw-tls"),
        &tls_grpc,
        Some([p("gateway.crt"), p("gateway.key"), p("ca.crt")]),
    );
    let t = T0 + 3600 * 1000;
    let ready = query_path("count(demo_num_cpus)", t);
    for addr in [&plain, &mtls] {
        wait_for(
            "the gateway answers from its edge",
            Duration::from_secs(60),
            || {
                let r = meridian_testkit::http("GET", addr, &ready, &[], b"").ok()?;
                (r.status == 200 && r.text().contains("\"8\"")).then_some(())
            },
        );
    }
    eprintln!(
        "query_latency: 8 instances x 2 h at 15 s ({} series), instant queries at T0+1h, median of {n} sequential requests over keep-alive HTTP",
        series.len()
    );
    eprintln!(
        "{:<50} {:>12} {:>14} {:>16} {:>12} {:>12}",
        "query", "Prometheus", "gateway mTLS", "gateway plain", "mTLS - P", "plain - P"
    );
    let phases = |addr: &str| -> Vec<(String, f64, f64)> {
        let text = meridian_testkit::http_get(addr, "/metrics").text();
        ["queue", "parse", "fetch", "eval", "encode"]
            .iter()
            .map(|p| {
                let v = |suffix: &str| {
                    meridian_testkit::metric_value(
                        &text,
                        &format!(
                            "meridian_gateway_query_phase_duration_seconds_{suffix}{{phase=\"{p}\"}}"
                        ),
                    )
                    .unwrap_or(0.0)
                };
                ((*p).to_owned(), v("sum"), v("count"))
            })
            .collect()
    };
    for q in QUERIES {
        let path = query_path(q, t);
        let before: Vec<Vec<(String, f64, f64)>> =
            [&mtls, &plain].iter().map(|a| phases(a)).collect();
        let pm = median(&prom.addr, &path, n);
        let tm = median(&mtls, &path, n);
        let pl = median(&plain, &path, n);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "{:<50} {:>9.3} ms {:>11.3} ms {:>13.3} ms {:>9.3} ms {:>9.3} ms",
            q,
            ms(pm),
            ms(tm),
            ms(pl),
            ms(tm) - ms(pm),
            ms(pl) - ms(pm)
        );
        // The gateway's own breakdown (mean per query, from its phase histogram) over this query's
        // requests.
        for (name, addr, before) in [("mTLS", &mtls, &before[0]), ("plain", &plain, &before[1])] {
            let after = phases(addr);
            let parts: Vec<String> = after
                .iter()
                .zip(before)
                .map(|((p, s, c), (_, s0, c0))| {
                    format!("{p} {:.3}", (s - s0) / (c - c0).max(1.0) * 1000.0)
                })
                .collect();
            eprintln!("    {name:<5} phases, ms: {}", parts.join(", "));
        }
    }
}
