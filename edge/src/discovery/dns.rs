//! `dns_sd_configs`: each name becomes one group (source = the name) with Prometheus' labels:
//! `__address__` (`host:port`, the SRV target without its trailing dot), `__meta_dns_name`, and for SRV
//! records `__meta_dns_srv_record_target` (as returned, with the trailing dot) and
//! `__meta_dns_srv_record_port`. A failed lookup keeps the name's previous targets; a name that does not
//! exist (or has no records) has none.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meridian_core::labels::Labels;
use meridian_core::net::dns::{DnsError, DnsResolver, join_host_port};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{TargetGroup, Update, send_if_changed, sleep_or_stop};
use crate::config::{DnsRecordType, DnsSdConfig};

/// One `dns_sd_configs` entry.
#[derive(Debug)]
pub struct DnsSd {
    cfg: DnsSdConfig,
    server: Option<SocketAddr>,
}

impl DnsSd {
    pub fn new(cfg: DnsSdConfig, server: Option<SocketAddr>) -> DnsSd {
        DnsSd { cfg, server }
    }

    /// The group for one name.
    pub async fn resolve(&self, r: &DnsResolver, name: &str) -> Result<TargetGroup, DnsError> {
        let mut targets = Vec::new();
        match self.cfg.record_type {
            DnsRecordType::Srv => {
                for s in r.srv(name).await? {
                    let host = s.target.trim_end_matches('.');
                    let port = s.port.to_string();
                    targets.push(Labels::from_pairs([
                        ("__address__", join_host_port(host, s.port).as_str()),
                        ("__meta_dns_name", name),
                        ("__meta_dns_srv_record_target", s.target.as_str()),
                        ("__meta_dns_srv_record_port", port.as_str()),
                    ]));
                }
            }
            DnsRecordType::A | DnsRecordType::Aaaa => {
                let v6 = self.cfg.record_type == DnsRecordType::Aaaa;
                for ip in r.ips(name, v6).await? {
                    targets.push(Labels::from_pairs([
                        (
                            "__address__",
                            join_host_port(&ip.to_string(), self.cfg.port).as_str(),
                        ),
                        ("__meta_dns_name", name),
                    ]));
                }
            }
            // Refused by config validation.
            DnsRecordType::Mx | DnsRecordType::Ns => {}
        }
        Ok(TargetGroup {
            source: name.to_owned(),
            targets,
            labels: Labels::empty(),
        })
    }

    pub async fn run(self, provider: usize, tx: mpsc::Sender<Update>, stop: CancellationToken) {
        let resolver = match DnsResolver::new(self.server) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "dns_sd: no resolver; this provider finds no targets");
                return;
            }
        };
        let mut last: BTreeMap<String, TargetGroup> = BTreeMap::new();
        let mut sent: Option<Vec<TargetGroup>> = None;
        loop {
            for name in &self.cfg.names {
                match self.resolve(&resolver, name).await {
                    Ok(g) => {
                        last.insert(name.clone(), g);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dns_sd: lookup failed; keeping the name's previous targets");
                    }
                }
            }
            let groups: Vec<TargetGroup> = last.values().cloned().collect();
            if !send_if_changed(&tx, provider, &mut sent, groups).await {
                return;
            }
            if !sleep_or_stop(self.cfg.refresh_interval.0, &stop).await {
                return;
            }
        }
    }
}
