//! What several of the edge's tests set up alike.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
