//! What several of the edge's tests set up alike.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use meridian_testkit::ChildGuard;

use meridian_pki::issue::{self, Issued, KeyType, Usage, Validity};

/// A test CA (`ca.crt`/`ca.key`) and a server certificate for `dns` and `ips` (`server.crt`/
/// `server.key`) in `dir/pki`; the directory and the CA (to issue more from).
pub(crate) fn ca_and_server(dir: &Path, dns: &[&str], ips: &[IpAddr]) -> (PathBuf, Issued) {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = issue::new_ca("test-ca", KeyType::P256, Validity::days(2).unwrap()).unwrap();
    issue::write_pair(&pki, "ca", &ca, true).unwrap();
    let dns: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
    let server = issue::issue(
        &ca,
        Usage::Server,
        "server",
        &dns,
        ips,
        KeyType::P256,
        Validity::days(1).unwrap(),
    )
    .unwrap();
    issue::write_pair(&pki, "server", &server, true).unwrap();
    (pki, ca)
}

/// Writes `config` as `dir/edge.yml` and starts an edge on it (data in `dir/data`, HTTP on a free
/// loopback port).
pub(crate) async fn start_agent(dir: &Path, config: &str) -> meridian_edge::agent::Agent {
    use meridian_edge::agent::{Agent, AgentOptions};
    let cfg = dir.join("edge.yml");
    std::fs::write(&cfg, config).unwrap();
    Agent::start(AgentOptions::new(
        cfg,
        dir.join("data"),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ))
    .await
    .unwrap()
}

/// The server TLS of `dir/pki`'s `server.crt`/`server.key` (from [`ca_and_server`]), no client
/// certificates asked; `name` names it in errors.
pub(crate) fn server_tls(name: &str, pki: &Path) -> std::sync::Arc<meridian_pki::tls::ServerTls> {
    use meridian_pki::tls::{ServerTls, ServerTlsFiles, ServerTlsOptions};
    ServerTls::load(
        name,
        ServerTlsFiles {
            cert: pki.join("server.crt"),
            key: pki.join("server.key"),
            client_ca: None,
        },
        ServerTlsOptions::default(),
    )
    .unwrap()
}

/// Starts the edge serving HTTP on `addr` (port 0: any free port); answers it and the address it took.
pub(crate) fn start_edge(
    config: &Path,
    data: &Path,
    addr: &str,
    log: &Path,
    watch: bool,
) -> (ChildGuard, String) {
    start_edge_with(config, data, addr, log, watch, &[])
}

/// [`start_edge`] with more flags.
pub(crate) fn start_edge_with(
    config: &Path,
    data: &Path,
    addr: &str,
    log: &Path,
    watch: bool,
    extra: &[&str],
) -> (ChildGuard, String) {
    let log_path = log.to_path_buf();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian-edge"));
    cmd.arg("run")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--tsdb.path={}", data.display()))
        .arg(format!("--http-address={addr}"))
        .arg("--grpc-address=127.0.0.1:0")
        .arg("--log.level=info")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log);
    if !watch {
        cmd.arg("--config.no-watch");
    }
    let mut child = cmd.spawn().unwrap();
    // The edge prints its address once it serves.
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // Keep reading so the edge never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    assert!(
        line.starts_with("http listening on"),
        "edge said {line:?}; its log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let taken = line
        .trim()
        .trim_start_matches("http listening on")
        .trim()
        .to_owned();
    (ChildGuard(child), taken)
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

pub(crate) fn stop_gracefully(mut c: ChildGuard) {
    signal(c.pid(), "TERM");
    let status = c.0.wait().unwrap();
    assert!(status.success(), "edge exited with {status}");
}

/// A client of the Prometheus at `addr`, plaintext, no auth (the sidecar's tests).
pub(crate) fn prom_client(addr: &str) -> meridian_edge::sidecar::prom::PromClient {
    meridian_edge::sidecar::prom::PromClient::new(
        &format!("http://{addr}/").parse().unwrap(),
        meridian_edge::scrape::http::Dialer {
            tls: None,
            server_name: None,
            proxy: None,
        },
        meridian_core::http_config::Auth::None,
    )
}
