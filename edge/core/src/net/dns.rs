//! DNS lookups (hickory-resolver): SRV, A/AAAA, MX and NS answers for the edge's `dns_sd_configs`,
//! the gateway's `dnssrv+` endpoints and its Alertmanager discovery.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SrvRecord {
    /// As returned, with the trailing dot.
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// Why a lookup failed (a name without records is not a failure: it answers an empty list).
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup of {name:?} ({kind}) failed: {reason}")]
pub struct DnsError {
    pub name: String,
    pub kind: &'static str,
    pub reason: String,
}

/// A resolver: the system's (`/etc/resolv.conf`) or one server (tests, `--dns.server`).
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsResolver")
    }
}

impl DnsResolver {
    /// The system resolver, or `server` when given (UDP and TCP on its port). Answers are cached no
    /// longer than 5 s so discovery sees changes at its own refresh interval.
    pub fn new(server: Option<SocketAddr>) -> Result<DnsResolver, DnsError> {
        DnsResolver::with_ttl_cap(server, Duration::from_secs(5))
    }

    /// Like [`DnsResolver::new`], caching answers no longer than `ttl_cap`.
    pub fn with_ttl_cap(
        server: Option<SocketAddr>,
        ttl_cap: Duration,
    ) -> Result<DnsResolver, DnsError> {
        let err = |reason: String| DnsError {
            name: String::new(),
            kind: "resolver",
            reason,
        };
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| err(e.to_string()))?,
        };
        let opts = builder.options_mut();
        opts.positive_max_ttl = Some(ttl_cap);
        opts.negative_max_ttl = Some(ttl_cap);
        opts.attempts = 2;
        opts.timeout = Duration::from_secs(3);
        let inner = builder.build().map_err(|e| err(e.to_string()))?;
        Ok(DnsResolver { inner })
    }

    async fn lookup(
        &self,
        name: &str,
        rt: RecordType,
        kind: &'static str,
    ) -> Result<Vec<RData>, DnsError> {
        match self.inner.lookup(name, rt).await {
            Ok(l) => Ok(l.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(DnsError {
                name: name.to_owned(),
                kind,
                reason: e.to_string(),
            }),
        }
    }

    /// SRV records of `name`, sorted.
    pub async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let mut out: Vec<SrvRecord> = self
            .lookup(name, RecordType::SRV, "SRV")
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(SrvRecord {
                    target: s.target.to_string(),
                    port: s.port,
                    priority: s.priority,
                    weight: s.weight,
                }),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// A (`v6 = false`) or AAAA records of `name`.
    pub async fn ips(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        let (rt, kind) = if v6 {
            (RecordType::AAAA, "AAAA")
        } else {
            (RecordType::A, "A")
        };
        let mut out: Vec<IpAddr> = self
            .lookup(name, rt, kind)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// `host:port` as Go's `net.JoinHostPort` writes it.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
