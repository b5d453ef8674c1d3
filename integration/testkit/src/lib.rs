//! Test support shared by every crate's tests.
//!
//! Real components (promtool, Prometheus, nginx, dnsmasq, Alertmanager, moto) are located with
//! [`require`]: under `CI=true` a missing component fails the test; elsewhere the test is skipped with a
//! line saying how to install it. Servers bind to 127.0.0.1 on free ports and are stopped by pid
//! ([`ChildGuard`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;

/// Whether the suite runs in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Locates a real component. `install` says how to get it (printed when it is missing).
///
/// Under `CI=true` a missing component panics, failing the test; otherwise `None` is returned after
/// printing a `SKIPPED` line, and the caller returns early.
pub fn require(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let msg = format!("{name} not found on PATH (install: {install})");
    if in_ci() {
        panic!("CI=true and a required component is missing: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A free port on 127.0.0.1 (TCP and UDP), bound and released, for a server started right after.
///
/// Taken *below* the kernel's ephemeral range (`ip_local_port_range`): a port the kernel handed out
/// for port 0 can be handed out again at once as the source port of some outgoing connection, which
/// then holds it when our server binds (seen in CI: "Address already in use"). Below the range only
/// an explicit bind takes a port. Each call starts from a per-process offset and moves on, so
/// concurrent tests and processes rarely try the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    const BASE: u32 = 10_000;
    let span = low.saturating_sub(BASE).max(1_000);
    // The offset is drawn once per process: every call then walks one permutation of the range
    // (4,099 is prime, and prime to the usual spans), so two tests of one process never get the same port, even when
    // the first has not bound its port yet. (Drawn per call, two calls could land on one port.)
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(BASE + seed.wrapping_add(n.wrapping_mul(4_099)) % span) else {
            continue;
        };
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Kills and reaps a child process when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) with `kill`, panicking when it cannot be delivered.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {} failed", self.pid());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion: whether it succeeded, and its stdout then stderr.
pub fn status_and_output(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs `promtool tsdb dump` on a data directory and returns every sample, keyed by the label set as Go
/// prints it and the timestamp. Values are parsed from Go's `%g`; every NaN (stale markers included)
/// comes back as `f64::NAN`, since `%g` prints them all alike. Panics on a repeated sample.
pub fn promtool_dump(promtool: &Path, dir: &Path) -> std::collections::HashMap<(String, i64), f64> {
    // promtool 2.42 opens the directory as a Prometheus data directory, which always has a WAL.
    std::fs::create_dir_all(dir.join("wal"))
        .unwrap_or_else(|e| panic!("creating {}/wal: {e}", dir.display()));
    let out = run_ok(
        std::process::Command::new(promtool)
            .arg("tsdb")
            .arg("dump")
            .arg(dir),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(ts), Some(v), Some(labels)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("unexpected dump line {line:?}");
        };
        let ts: i64 = ts
            .parse()
            .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            x => x
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if m.insert((labels.to_owned(), ts), v).is_some() {
            panic!("duplicate sample in dump: {line}");
        }
    }
    m
}

/// A plain HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// A blocking HTTP/1.1 request to 127.0.0.1 (`Connection: close`; chunked bodies decoded). Errors are
/// returned, not panicked, so callers can poll a server that is still starting.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    // To the end of the stream, or of the body when its length is given (some servers, such as
    // chromedriver, keep the connection open whatever the request says).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("bad chunk"))?;
            let size_text = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `GET` that panics on connection errors.
pub fn http_get(addr: &str, path: &str) -> HttpResponse {
    http("GET", addr, path, &[], b"").unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// A real Prometheus server (Debian's 2.42) on a free loopback port with its own data directory.
#[derive(Debug)]
pub struct Prometheus {
    pub addr: String,
    pub data: PathBuf,
    pub config: PathBuf,
    child: Option<ChildGuard>,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML text, `$PROMETHEUS_ADDR` replaced by its own address)
    /// written into `dir`; waits until it is ready.
    /// `None` when Prometheus is missing outside CI.
    pub fn start(dir: &Path, config: &str, extra_args: &[&str]) -> Option<Prometheus> {
        require("prometheus", "apt-get install prometheus")?;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("prometheus.yml");
        let config = config.replace("$PROMETHEUS_ADDR", &addr);
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("writing config: {e}"));
        let mut p = Prometheus {
            addr,
            data: dir.join("prom-data"),
            config: cfg,
            child: None,
            dir: dir.to_owned(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        p.spawn();
        Some(p)
    }

    /// Starts it again (after [`Prometheus::stop`] or a kill) on the same address, data and config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again with these extra arguments instead of the first ones (same address, data
    /// and config).
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.stop();
        self.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        self.spawn();
    }

    /// Starts the process and waits until it is ready.
    fn spawn(&mut self) {
        let Some(bin) = which("prometheus") else {
            panic!("prometheus is not installed");
        };
        let log_path = self.dir.join("prometheus.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", self.config.display()))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--web.enable-lifecycle")
            .args(&self.extra_args)
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
        self.child = Some(ChildGuard(child));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !http("GET", &self.addr, "/-/ready", &[], b"").is_ok_and(|r| r.status == 200) {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.0.try_wait().ok().flatten().is_some());
            if exited || std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("Prometheus did not become ready in 30 s; its log:\n{log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// An instant query; returns `(labels, value)` pairs of the vector result.
    pub fn query(&self, expr: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
        let r = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        );
        let j = r.json();
        assert_eq!(j["status"], "success", "query {expr}: {j}");
        j["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let v = parse_go_float(s["value"][1].as_str().unwrap_or(""));
                        (labels, v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the config file and asks Prometheus to reload it.
    pub fn reload(&self, config: &str) {
        let config = config.replace("$PROMETHEUS_ADDR", &self.addr);
        std::fs::write(&self.config, config).unwrap_or_else(|e| panic!("writing config: {e}"));
        let r = http("POST", &self.addr, "/-/reload", &[], b"")
            .unwrap_or_else(|e| panic!("reloading Prometheus: {e}"));
        assert_eq!(r.status, 200, "Prometheus reload: {}", r.text());
    }

    /// The value of an unlabeled (or first) series of Prometheus' own `/metrics`.
    pub fn self_metric(&self, name: &str) -> Option<f64> {
        metric_value(&http_get(&self.addr, "/metrics").text(), name)
    }

    /// Stops Prometheus gracefully (SIGTERM; it flushes remote write and the head) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.pid().to_string())
                .status();
            let _ = c.0.wait();
        }
    }
}

/// Parses a float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` prints it (Prometheus' API values).
pub fn parse_go_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        x => x.parse().unwrap_or_else(|_| panic!("not a float: {x:?}")),
    }
}

/// The sum over all series named `name` in a text exposition (None when there is none).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v = rest.rsplit(' ').next().map(parse_go_float)?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

/// A local S3 API: PyPI's `moto_server` on a free loopback port, stopped (by its pid) when dropped.
/// Data lives in the server's memory.
#[derive(Debug)]
pub struct Moto {
    pub addr: String,
    _child: ChildGuard,
}

impl Moto {
    /// Starts the server and waits until it answers; `None` (after a `SKIPPED` line) when `moto_server`
    /// is missing outside CI.
    pub fn start() -> Option<Moto> {
        let bin = require("moto_server", "pip install 'moto[server]'")?;
        let port = free_port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("moto_server: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let guard = ChildGuard(child);
        wait_for(
            "moto_server to answer",
            std::time::Duration::from_secs(30),
            || {
                http("GET", &addr, "/moto-api/", &[], b"")
                    .ok()
                    .filter(|r| r.status < 500)
            },
        );
        Some(Moto {
            addr,
            _child: guard,
        })
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        let r = http("PUT", &self.addr, &format!("/{name}"), &[], b"")
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert!(
            r.status < 300,
            "create bucket {name}: {} {}",
            r.status,
            r.text()
        );
    }

    /// Thanos objstore YAML for a bucket on this server.
    pub fn objstore_yaml(&self, bucket: &str, extra: &str) -> String {
        format!(
            "type: S3\nconfig:\n  bucket: {bucket}\n  endpoint: {}\n  region: us-east-1\n  access_key: test\n  secret_key: test\n  insecure: true\n{extra}",
            self.addr
        )
    }
}

/// A TCP proxy on a free loopback port that can fail on command: `stall` stops moving bytes (requests
/// hang, as behind a frozen server), `cut` resets every connection and refuses new ones (the server is
/// down), `resume` restores normal service. Counts the bytes sent upstream.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub addr: String,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Debug)]
struct ProxyState {
    /// Upstream byte count at which the proxy stalls by itself.
    stall_at: std::sync::atomic::AtomicU64,
    mode: std::sync::Mutex<ProxyMode>,
    changed: std::sync::Condvar,
    upstream_bytes: std::sync::atomic::AtomicU64,
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    #[default]
    Pass,
    Stall,
    Cut,
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy: {e}"));
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let state = std::sync::Arc::new(ProxyState {
            stall_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            mode: std::sync::Mutex::default(),
            changed: std::sync::Condvar::new(),
            upstream_bytes: std::sync::atomic::AtomicU64::new(0),
            conns: std::sync::Mutex::default(),
        });
        let (st, up) = (state.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if st.mode() == ProxyMode::Cut {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&up) else {
                    continue;
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    st.lock_conns().extend([c, s]);
                }
                for (from, to, count) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let st = st.clone();
                    std::thread::spawn(move || st.pump(from, to, count));
                }
            }
        });
        FaultProxy { addr, state }
    }

    pub fn stall(&self) {
        self.state.set(ProxyMode::Stall);
    }

    /// Stalls by itself once this many bytes went upstream (in the middle of a request).
    pub fn stall_after(&self, bytes: u64) {
        self.state
            .stall_at
            .store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_stalled(&self) -> bool {
        self.state.mode() == ProxyMode::Stall
    }

    pub fn cut(&self) {
        self.state.set(ProxyMode::Cut);
        for c in self.state.lock_conns().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn resume(&self) {
        self.state.set(ProxyMode::Pass);
    }

    /// Bytes forwarded from clients to the upstream so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.state
            .upstream_bytes
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl ProxyState {
    fn mode(&self) -> ProxyMode {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, m: ProxyMode) {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = m;
        self.changed.notify_all();
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, Vec<std::net::TcpStream>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pump(&self, mut from: std::net::TcpStream, mut to: std::net::TcpStream, upstream: bool) {
        use std::io::{Read, Write};
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Hold the bytes while stalled; drop the connection when cut.
            {
                let mut m = self
                    .mode
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let sent = self
                    .upstream_bytes
                    .load(std::sync::atomic::Ordering::SeqCst);
                if upstream
                    && *m == ProxyMode::Pass
                    && sent + n as u64 > self.stall_at.load(std::sync::atomic::Ordering::SeqCst)
                {
                    self.stall_at
                        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
                    *m = ProxyMode::Stall;
                }
                while *m == ProxyMode::Stall {
                    m = self
                        .changed
                        .wait(m)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if *m == ProxyMode::Cut {
                    break;
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if upstream {
                self.upstream_bytes
                    .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    }
}

/// Whether `python3` can import every module (a real client library a test runs). Like [`require`]:
/// under `CI=true` a missing module panics; otherwise `false` after a `SKIPPED` line.
pub fn require_python_modules(modules: &[&str], install: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let msg = format!("python3 modules {modules:?} not found (install: {install})");
    if in_ci() {
        panic!("CI=true and a required component is missing: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Starts Debian's dnsmasq (`bin`, from [`require`]) as a DNS server on 127.0.0.1:`port` that answers
/// only from its arguments (`--srv-host=…`, `--host-record=…`, `--addn-hosts=…`, `--local=/domain/`),
/// with 1 s TTLs; stopped when the guard drops. SIGHUP makes it re-read `--addn-hosts` files.
pub fn dnsmasq(bin: &Path, port: u16, args: &[String]) -> ChildGuard {
    let child = std::process::Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file=",
            "--local-ttl=1",
        ])
        .arg(format!("--port={port}"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("dnsmasq: {e}"));
    ChildGuard(child)
}

/// Alertmanager 0.25 (Debian's) on a free loopback port, in `dir`, routing everything to a receiver
/// with no integrations (the alerts stay visible in its API); `None` when it is missing outside CI.
/// With an optional `--web.config.file` (TLS); readiness is then waited for on the TCP port.
pub fn alertmanager(
    dir: &std::path::Path,
    web_config: Option<&std::path::Path>,
) -> Option<(ChildGuard, String)> {
    alertmanager_with(
        dir,
        web_config,
        "route:\n  receiver: none\n  group_by: [alertname, cluster]\n  group_wait: 1h\nreceivers:\n- name: none\n",
    )
}

/// [`alertmanager`] with its configuration file's text.
pub fn alertmanager_with(
    dir: &std::path::Path,
    web_config: Option<&std::path::Path>,
    config: &str,
) -> Option<(ChildGuard, String)> {
    let bin = require(
        "prometheus-alertmanager",
        "apt-get install prometheus-alertmanager",
    )?;
    let cfg = dir.join("am.yml");
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("alertmanager: {e}"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(w) = web_config {
        cmd.arg(format!("--web.config.file={}", w.display()));
    }
    let guard = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("alertmanager: {e}")));
    wait_for(
        "alertmanager ready",
        std::time::Duration::from_secs(20),
        || {
            if web_config.is_some() {
                return std::net::TcpStream::connect(&addr).ok().map(|_| ());
            }
            http("GET", &addr, "/-/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ())
        },
    );
    Some((guard, addr))
}

/// Debian's nginx running `deploy/nginx/grpc-mtls-ingress.conf.template`, rendered for the two edge
/// replicas at `edges` with the certificates in `pki` (`ca`, `ingress-edge-{0,1}`, `ingress-upstream`),
/// its prefix in `prefix`, listening on a free loopback port; `domain` replaces the template's
/// `cluster-a.example` in host names. Returns once the port accepts connections; stopped on drop.
pub fn nginx_ingress(
    bin: &Path,
    prefix: &Path,
    pki: &Path,
    edges: [std::net::SocketAddr; 2],
    domain: &str,
) -> (ChildGuard, std::net::SocketAddr) {
    std::fs::create_dir_all(prefix).unwrap_or_else(|e| panic!("{}: {e}", prefix.display()));
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/grpc-mtls-ingress.conf.template"
    ))
    .unwrap_or_else(|e| panic!("the nginx template: {e}"));
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = template
        .replace("{{PREFIX}}", &prefix.display().to_string())
        .replace("{{PKI}}", &pki.display().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{EDGE0}}", &edges[0].to_string())
        .replace("{{EDGE1}}", &edges[1].to_string())
        .replace("cluster-a.example", domain);
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("{}: {e}", conf_path.display()));
    let mut nginx = ChildGuard(
        std::process::Command::new(bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg("stderr")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("nginx: {e}")),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(listen).is_err() {
        if let Ok(Some(status)) = nginx.0.try_wait() {
            panic!("nginx exited early with {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx not listening on {listen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (nginx, listen)
}

/// CPU time (user + system) process `pid` has used, seconds, from `/proc` (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The sum of a metric's samples in an exposition (`/metrics` text) over the series whose line
/// contains `filter` (`""` for all); a counter is named with its `_total`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident memory of process `pid` (`std::process::id()` for this one), bytes, from `/proc`.
pub fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kb * 1024
}

/// POSTs a snappy-compressed remote-write 1.0 body to `addr`'s `/api/v1/write`; panics unless it
/// is accepted (2xx).
pub fn post_remote_write(addr: &str, body: &[u8]) {
    let r = http(
        "POST",
        addr,
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ],
        body,
    )
    .unwrap_or_else(|e| panic!("remote write to {addr}: {e}"));
    assert!(
        r.status < 300,
        "remote write to {addr}: {} {}",
        r.status,
        r.text()
    );
}

/// Spawns `cmd` with its stdout piped and its stderr appended to `log`, reads one stdout line per
/// prefix in `announces` (the addresses a server prints once it listens) and returns what follows
/// each prefix; the rest of stdout is drained so the child never writes into a closed pipe.
pub fn spawn_announcing(
    mut cmd: std::process::Command,
    log: &Path,
    announces: &[&str],
) -> (ChildGuard, Vec<String>) {
    use std::io::BufRead;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let guard_stdout = child.stdout.take();
    let guard = ChildGuard(child);
    let Some(out) = guard_stdout else {
        panic!("no stdout");
    };
    let mut reader = std::io::BufReader::new(out);
    let mut got = Vec::new();
    for prefix in announces {
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let Some(rest) = line.trim().strip_prefix(prefix) else {
            panic!(
                "expected {prefix:?}, got {line:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        got.push(rest.trim().to_owned());
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (guard, got)
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst)
                .unwrap_or_else(|err| panic!("copying {}: {err}", e.path().display()));
        }
    }
}

/// A cache server (Debian's `memcached` or `redis-server`) on 127.0.0.1, stopped (by pid) when dropped.
#[derive(Debug)]
pub struct CacheServer {
    pub addr: String,
    pub child: ChildGuard,
}

fn wait_tcp(what: &str, addr: &str) {
    wait_for(what, std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).ok()
    });
}

impl CacheServer {
    /// Starts `memcached` (64 MiB, 1 MiB items); `None` (after a `SKIPPED` line) when it is missing
    /// outside CI.
    pub fn memcached() -> Option<CacheServer> {
        CacheServer::memcached_with(&["-m", "64"])
    }

    /// `memcached` with more arguments (`-m` memory, `-I` item size).
    pub fn memcached_with(args: &[&str]) -> Option<CacheServer> {
        let bin = require("memcached", "apt-get install memcached")?;
        let port = free_port().to_string();
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["-l", "127.0.0.1", "-p", &port, "-U", "0"])
            .args(args);
        // memcached refuses to run as root without naming the user to run as.
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("memcached: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let guard = ChildGuard(child);
        wait_tcp("memcached to listen", &addr);
        Some(CacheServer { addr, child: guard })
    }

    /// Starts `redis-server` without persistence; `None` (after a `SKIPPED` line) when it is missing
    /// outside CI.
    pub fn redis() -> Option<CacheServer> {
        CacheServer::redis_with(&[])
    }

    /// Starts `redis-server` speaking only TLS, requiring client certificates signed by `ca`.
    pub fn redis_tls(cert: &Path, key: &Path, ca: &Path) -> Option<CacheServer> {
        let s = |p: &Path| p.display().to_string();
        CacheServer::redis_with(&[
            "--tls-cert-file".into(),
            s(cert),
            "--tls-key-file".into(),
            s(key),
            "--tls-ca-cert-file".into(),
            s(ca),
            "--tls-auth-clients".into(),
            "yes".into(),
        ])
    }

    /// `redis-server` on a free port (plaintext, or TLS only when `tls` names its files).
    fn redis_with(tls: &[String]) -> Option<CacheServer> {
        let bin = require("redis-server", "apt-get install redis-server")?;
        let port = free_port().to_string();
        let ports: [&str; 4] = if tls.is_empty() {
            ["--port", &port, "--tls-port", "0"]
        } else {
            ["--port", "0", "--tls-port", &port]
        };
        let child = std::process::Command::new(bin)
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(tls)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let guard = ChildGuard(child);
        wait_tcp("redis-server to listen", &addr);
        Some(CacheServer { addr, child: guard })
    }

    /// Kills the server now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}
