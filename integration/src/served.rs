//! Real processes serving the same promtool-made blocks, for the side-by-side benchmarks through the
//! network: release `meridian-edge`s (plaintext or mTLS StoreAPI), each behind a release
//! `meridian-gateway`, and a kept-alive HTTP/1.1 client to time their answers and Prometheus'.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_testkit::{ChildGuard, free_port};

/// Where the release binaries are: `MERIDIAN_BIN_DIR`, else the build directory of the running
/// benchmark (`target/release`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MERIDIAN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own path: {e}"));
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no build directory above {}", exe.display()))
}

/// Panics unless `meridian-edge` and `meridian-gateway` are in [`bin_dir`].
pub fn require_binaries() {
    for b in ["meridian-edge", "meridian-gateway"] {
        assert!(
            bin_dir().join(b).exists(),
            "{} missing (cargo build --release --bins)",
            bin_dir().join(b).display()
        );
    }
}

/// One kept-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
        Conn {
            addr: addr.to_owned(),
            r: BufReader::new(s),
        }
    }

    /// GET `path`: the status and the body.
    pub fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        let fail = |e: std::io::Error| -> ! { panic!("{}{path}: {e}", self.addr) };
        self.r
            .get_mut()
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| fail(e));
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap_or_else(|e| fail(e));
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{path}: status line {line:?}"));
        let mut len = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap_or_else(|e| fail(e));
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line).unwrap_or_else(|e| fail(e));
                let n = usize::from_str_radix(line.trim(), 16)
                    .unwrap_or_else(|_| panic!("{path}: chunk size {line:?}"));
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk).unwrap_or_else(|e| fail(e));
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body = vec![0; len.unwrap_or_else(|| panic!("{path}: no Content-Length"))];
            self.r.read_exact(&mut body).unwrap_or_else(|e| fail(e));
        }
        (status, body)
    }
}

/// Certificates for an edge (`edge.bench`, server) and a gateway (client) from a new CA, in `dir`.
/// Returns `[edge cert, edge key, CA]` and `[gateway cert, gateway key, CA]`.
pub fn pki(dir: &Path) -> ([PathBuf; 3], [PathBuf; 3]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let day = |n| Validity::days(n).unwrap_or_else(|e| panic!("{e}"));
    let ca = issue::new_ca("bench-ca", KeyType::P256, day(2)).unwrap_or_else(|e| panic!("{e}"));
    issue::write_pair(dir, "ca", &ca, true).unwrap_or_else(|e| panic!("{e}"));
    for (name, usage, dns) in [
        ("edge", Usage::Server, vec!["edge.bench".to_string()]),
        ("gateway", Usage::Client, vec![]),
    ] {
        let c = issue::issue(&ca, usage, name, &dns, &[], KeyType::P256, day(1))
            .unwrap_or_else(|e| panic!("{e}"));
        issue::write_pair(dir, name, &c, true).unwrap_or_else(|e| panic!("{e}"));
    }
    let p = |f: &str| dir.join(f);
    (
        [p("edge.crt"), p("edge.key"), p("ca.crt")],
        [p("gateway.crt"), p("gateway.key"), p("ca.crt")],
    )
}

/// An edge serving a copy of `blocks` from `dir`, plaintext or with `tls` (cert, key, client CA);
/// the process, its StoreAPI address and its HTTP address (remote write goes there). `MERIDIAN_EDGE_BIN` names another edge binary (an older
/// build, for before/after figures).
pub fn edge(
    dir: &Path,
    blocks: &[PathBuf],
    tls: Option<[PathBuf; 3]>,
) -> (ChildGuard, String, String) {
    let data = dir.join("tsdb");
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    };
    for b in blocks {
        let to = data.join(b.file_name().unwrap_or_default());
        std::fs::create_dir_all(to.join("chunks")).unwrap_or_else(|e| panic!("{e}"));
        for f in ["meta.json", "index", "tombstones"] {
            if b.join(f).exists() {
                copy(&b.join(f), &to.join(f));
            }
        }
        for c in std::fs::read_dir(b.join("chunks")).unwrap_or_else(|e| panic!("{e}")) {
            let c = c.unwrap_or_else(|e| panic!("{e}")).path();
            copy(
                &c,
                &to.join("chunks").join(c.file_name().unwrap_or_default()),
            );
        }
    }
    let cfg = dir.join("edge.yml");
    std::fs::write(&cfg, "global:\n  external_labels: {cluster: bench}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let bin = std::env::var_os("MERIDIAN_EDGE_BIN")
        .map_or_else(|| bin_dir().join("meridian-edge"), PathBuf::from);
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--tsdb.path={}", data.display()))
        .arg("--tsdb.retention=100y")
        .arg(format!("--http-address={http}"))
        .arg(format!("--grpc-address={grpc}"))
        .arg("--log.level=warn");
    if let Some([cert, key, ca]) = tls {
        cmd.arg(format!("--grpc-server-tls-cert={}", cert.display()))
            .arg(format!("--grpc-server-tls-key={}", key.display()))
            .arg(format!("--grpc-server-tls-client-ca={}", ca.display()));
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting meridian-edge: {e}"));
    (ChildGuard(child), grpc, http)
}

/// A gateway in front of one edge (`--endpoint`), results cache off; `tls`: client cert, key, CA.
/// The process and its HTTP address.
pub fn gateway(dir: &Path, endpoint: &str, tls: Option<[PathBuf; 3]>) -> (ChildGuard, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin_dir().join("meridian-gateway"));
    cmd.arg("query")
        .arg(format!("--http-address={http}"))
        .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
        .arg(format!("--endpoint={endpoint}"))
        .arg(format!("--data-dir={}", dir.display()))
        .arg("--query-range.response-cache-max-size=0")
        .arg("--log.level=warn");
    if let Some([cert, key, ca]) = tls {
        cmd.arg("--grpc-client-tls-secure")
            .arg(format!("--grpc-client-tls-cert={}", cert.display()))
            .arg(format!("--grpc-client-tls-key={}", key.display()))
            .arg(format!("--grpc-client-tls-ca={}", ca.display()))
            .arg("--grpc-client-server-name=edge.bench");
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting meridian-gateway: {e}"));
    (ChildGuard(child), http)
}

/// A counter or gauge of the gateway's `/metrics` (0 when absent).
pub fn metric(addr: &str, series: &str) -> f64 {
    let text = meridian_testkit::http_get(addr, "/metrics").text();
    meridian_testkit::metric_value(&text, series).unwrap_or(0.0)
}

/// The two set-ups the latency benchmarks compare: an edge serving `blocks` plaintext behind one
/// gateway, and one serving them over mTLS behind another.
#[derive(Debug)]
pub struct Gateways {
    /// HTTP address of the gateway over plaintext.
    pub plain: String,
    /// HTTP address of the gateway over mTLS.
    pub mtls: String,
    /// StoreAPI address of the mTLS edge (the `store` label of the gateway's per-store metrics).
    pub tls_edge: String,
    _procs: Vec<ChildGuard>,
}

impl Gateways {
    /// Starts both in subdirectories of `dir` (certificates included).
    pub fn start(dir: &Path, blocks: &[PathBuf]) -> Gateways {
        let (edge_tls, gateway_tls) = pki(&dir.join("pki"));
        let sub = |name: &str| {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            d
        };
        let (e1, plain_grpc, _) = edge(&sub("edge-plain"), blocks, None);
        let (e2, tls_edge, _) = edge(&sub("edge-tls"), blocks, Some(edge_tls));
        let (g1, plain) = gateway(&sub("gw-plain"), &plain_grpc, None);
        let (g2, mtls) = gateway(&sub("gw-tls"), &tls_edge, Some(gateway_tls));
        Gateways {
            plain,
            mtls,
            tls_edge,
            _procs: vec![g1, g2, e1, e2],
        }
    }
}

/// A benchmark knob from the environment, `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `t` (ms) in seconds with milliseconds, as the HTTP API takes it.
pub fn api_secs(t: i64) -> String {
    format!("{}.{:03}", t.div_euclid(1000), t.rem_euclid(1000))
}

/// One target's best time for a query and whether every run answered with success.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub best: std::time::Duration,
    pub ok: bool,
}

/// The best of `runs` GETs of `path` on `conn`.
pub fn best_of(conn: &mut Conn, path: &str, runs: usize) -> Timing {
    let mut best = std::time::Duration::MAX;
    let mut ok = true;
    for _ in 0..runs {
        let start = std::time::Instant::now();
        let (status, body) = conn.get(path);
        best = best.min(start.elapsed());
        ok &= status == 200 && body.starts_with(b"{\"status\":\"success\"");
    }
    Timing { best, ok }
}

/// The geometric mean (NaN for none).
pub fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}
