//! Endpoint discovery: `--endpoint` values as Thanos writes them, resolved through DNS and refreshed.
//!
//! | spec | resolves to |
//! |---|---|
//! | `host:port` | itself |
//! | `dns+host:port` | one endpoint per A and AAAA record of `host`, on `port` |
//! | `dnssrv+_grpc._tcp.name` | the SRV records of the name; each target's A/AAAA records, on the SRV port |
//! | `dnssrvnoa+_grpc._tcp.name` | the SRV targets themselves (`target:port`), without address lookups — what an ingress that routes by SNI needs |
//!
//! Each spec keeps its **last good answer** when a lookup fails (server down, timeout), so a DNS outage
//! does not empty the endpoint set; a name that exists without records answers "no endpoints". Lookups
//! use `edge::discovery::dns::DnsResolver` (the system resolver or `--dns.nameserver`), whose cache never
//! outlives 5 s, so a refresh sees record changes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_core::net::dns::{DnsError, DnsResolver, join_host_port};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One `--endpoint` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// `host:port`, used as given.
    Static(String),
    /// `dns+host:port`: A/AAAA of `host`.
    Dns { host: String, port: u16 },
    /// `dnssrv+name`: SRV, then A/AAAA of each target.
    DnsSrv(String),
    /// `dnssrvnoa+name`: SRV targets as they are.
    DnsSrvNoA(String),
}

/// An `--endpoint` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--endpoint {value:?}: {reason}")]
pub struct SpecError {
    pub value: String,
    pub reason: String,
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "missing port (host:port)".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0".into());
    }
    Ok((host.to_owned(), port))
}

impl std::str::FromStr for EndpointSpec {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<EndpointSpec, SpecError> {
        let err = |reason: String| SpecError {
            value: value.to_owned(),
            reason,
        };
        let (scheme, rest) = match value.split_once('+') {
            Some((s, r)) if !s.contains(':') && !s.contains('.') => (Some(s), r),
            _ => (None, value),
        };
        match scheme {
            None => {
                let (host, port) = host_port(rest).map_err(err)?;
                Ok(EndpointSpec::Static(join_host_port(&host, port)))
            }
            Some("dns") => {
                let (host, port) = host_port(rest).map_err(err)?;
                Ok(EndpointSpec::Dns { host, port })
            }
            Some(s @ ("dnssrv" | "dnssrvnoa")) => {
                if rest.is_empty() {
                    return Err(err("missing SRV name".into()));
                }
                if let Some((_, port)) = rest.rsplit_once(':') {
                    return Err(err(format!(
                        "{s}+ takes the port from the SRV records; remove \":{port}\""
                    )));
                }
                Ok(if s == "dnssrv" {
                    EndpointSpec::DnsSrv(rest.to_owned())
                } else {
                    EndpointSpec::DnsSrvNoA(rest.to_owned())
                })
            }
            Some(other) => Err(err(format!(
                "unknown lookup {other:?}: use dns+, dnssrv+ or dnssrvnoa+"
            ))),
        }
    }
}

/// A discovered endpoint: its address and which spec produced it (whose settings apply to it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Discovered {
    pub address: String,
    pub spec: usize,
}

/// Resolves a list of specs, keeping each one's last good answer.
#[derive(Debug)]
pub struct EndpointDiscovery {
    resolver: DnsResolver,
    specs: Vec<EndpointSpec>,
    last_good: Vec<Option<BTreeSet<String>>>,
}

impl EndpointDiscovery {
    pub fn new(resolver: DnsResolver, specs: Vec<EndpointSpec>) -> EndpointDiscovery {
        let last_good = vec![None; specs.len()];
        EndpointDiscovery {
            resolver,
            specs,
            last_good,
        }
    }

    /// A and AAAA records of `host`. Like Go's `LookupIPAddr` (which Thanos uses), one family failing is
    /// not an error when the other answers: some servers refuse the family they hold nothing for.
    async fn addresses(&self, host: &str) -> Result<Vec<std::net::IpAddr>, DnsError> {
        let (v4, v6) = tokio::join!(
            self.resolver.ips(host, false),
            self.resolver.ips(host, true)
        );
        match (v4, v6) {
            (Err(e), Err(_)) => Err(e),
            (a, b) => Ok(a.into_iter().chain(b).flatten().collect()),
        }
    }

    async fn resolve_spec(&self, spec: &EndpointSpec) -> Result<BTreeSet<String>, DnsError> {
        let mut out = BTreeSet::new();
        match spec {
            EndpointSpec::Static(a) => {
                out.insert(a.clone());
            }
            EndpointSpec::Dns { host, port } => {
                for ip in self.addresses(host).await? {
                    out.insert(SocketAddr::new(ip, *port).to_string());
                }
            }
            EndpointSpec::DnsSrv(name) => {
                let srvs = self.resolver.srv(name).await?;
                let ips = futures::future::join_all(
                    srvs.iter()
                        .map(|srv| self.addresses(srv.target.trim_end_matches('.'))),
                )
                .await;
                for (srv, ips) in srvs.iter().zip(ips) {
                    for ip in ips? {
                        out.insert(SocketAddr::new(ip, srv.port).to_string());
                    }
                }
            }
            EndpointSpec::DnsSrvNoA(name) => {
                for srv in self.resolver.srv(name).await? {
                    out.insert(join_host_port(srv.target.trim_end_matches('.'), srv.port));
                }
            }
        }
        Ok(out)
    }

    /// Resolves every spec once. A spec whose lookup fails keeps its previous answer (none before its
    /// first success); the failures are returned for logging and the stores view.
    pub async fn refresh(&mut self) -> (Vec<Discovered>, Vec<DnsError>) {
        let mut errors = Vec::new();
        let answers =
            futures::future::join_all(self.specs.iter().map(|s| self.resolve_spec(s))).await;
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                Ok(set) => self.last_good[i] = Some(set),
                Err(e) => errors.push(e),
            }
        }
        let mut out: Vec<Discovered> = self
            .last_good
            .iter()
            .enumerate()
            .flat_map(|(spec, set)| {
                set.iter().flatten().map(move |address| Discovered {
                    address: address.clone(),
                    spec,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        (out, errors)
    }

    /// Refreshes every `interval` until `stop`, publishing the endpoint list when it changes.
    pub async fn run(
        mut self,
        interval: Duration,
        tx: watch::Sender<Vec<Discovered>>,
        stop: CancellationToken,
    ) {
        loop {
            let (found, errors) = self.refresh().await;
            for e in errors {
                tracing::warn!(error = %e, "endpoint discovery: keeping the last good answer");
            }
            tx.send_if_modified(|cur| {
                if *cur == found {
                    return false;
                }
                *cur = found;
                true
            });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_as_thanos_writes_them() {
        let p = |s: &str| s.parse::<EndpointSpec>();
        assert_eq!(
            p("edge-0.cluster-a:10901").unwrap(),
            EndpointSpec::Static("edge-0.cluster-a:10901".into())
        );
        assert_eq!(
            p("[::1]:10901").unwrap(),
            EndpointSpec::Static("[::1]:10901".into())
        );
        assert_eq!(
            p("dns+edges.monitoring.svc:10901").unwrap(),
            EndpointSpec::Dns {
                host: "edges.monitoring.svc".into(),
                port: 10901
            }
        );
        assert_eq!(
            p("dnssrv+_grpc._tcp.edges.monitoring.svc").unwrap(),
            EndpointSpec::DnsSrv("_grpc._tcp.edges.monitoring.svc".into())
        );
        assert_eq!(
            p("dnssrvnoa+_grpc._tcp.edges.example.com").unwrap(),
            EndpointSpec::DnsSrvNoA("_grpc._tcp.edges.example.com".into())
        );
        for (bad, why) in [
            ("edges", "missing port"),
            ("dns+edges", "missing port"),
            ("edges:http", "not a number"),
            ("dnssrv+_grpc._tcp.x:10901", "remove \":10901\""),
            ("srv+_grpc._tcp.x", "unknown lookup"),
            ("dnssrv+", "missing SRV name"),
            (":10901", "missing host"),
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn run_publishes_and_stops() {
        let resolver = DnsResolver::new(Some("127.0.0.1:9".parse().unwrap())).unwrap();
        let specs = vec!["b:1".parse().unwrap(), "a:2".parse().unwrap()];
        let (tx, mut rx) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(EndpointDiscovery::new(resolver, specs).run(
            Duration::from_millis(10),
            tx,
            stop.clone(),
        ));
        rx.changed().await.unwrap();
        let got: Vec<(String, usize)> = rx
            .borrow()
            .iter()
            .map(|d| (d.address.clone(), d.spec))
            .collect();
        assert_eq!(got, vec![("a:2".to_string(), 1), ("b:1".to_string(), 0)]);
        stop.cancel();
        task.await.unwrap();
    }
}
