//! Service discovery: where a job's targets come from. Each provider (`static_configs`, one
//! `file_sd_configs` entry, one `dns_sd_configs` entry) produces target groups; a job's targets are the
//! union of its providers' latest groups. Providers run as tasks owned by the job's scrape pool and
//! report the complete set they currently see on a channel, so the pool can diff it against its running
//! scrape loops.

pub mod dns;
pub mod file;
pub mod kubernetes;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ScrapeConfig;
use meridian_core::labels::Labels;
pub use meridian_core::targetgroup::TargetGroup;

/// A provider's complete current view.
#[derive(Debug, Clone)]
pub struct Update {
    pub provider: usize,
    pub groups: Vec<TargetGroup>,
}

/// How the providers of a job reach the outside world.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryOptions {
    /// The DNS server for `dns_sd_configs`; the system's resolver when `None`.
    pub dns_server: Option<std::net::SocketAddr>,
    /// The Kubernetes informers and clients, shared by every job of the process.
    pub kubernetes: Arc<kubernetes::informer::Registry>,
}

/// The number of providers a job has (static counts as one when present).
pub fn provider_count(cfg: &ScrapeConfig) -> usize {
    usize::from(!cfg.static_configs.is_empty())
        + cfg.file_sd_configs.len()
        + cfg.dns_sd_configs.len()
        + cfg.kubernetes_sd_configs.len()
}

/// Groups from `static_configs`.
pub fn static_groups(cfg: &ScrapeConfig) -> Vec<TargetGroup> {
    cfg.static_configs
        .iter()
        .enumerate()
        .map(|(i, sc)| TargetGroup {
            source: i.to_string(),
            targets: sc
                .targets
                .iter()
                .map(|t| Labels::from_pairs([("__address__", t.as_str())]))
                .collect(),
            labels: Labels::from_pairs(sc.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        })
        .collect()
}

/// Starts the providers of a job. Static groups are sent at once; file and DNS providers run until
/// `stop` is cancelled, sending a full update whenever what they see changes.
pub fn start_providers(
    cfg: &ScrapeConfig,
    opts: &DiscoveryOptions,
    tx: mpsc::Sender<Update>,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let mut provider = 0;
    if !cfg.static_configs.is_empty() {
        let groups = static_groups(cfg);
        let tx = tx.clone();
        tasks.spawn(async move {
            let _ = tx
                .send(Update {
                    provider: 0,
                    groups,
                })
                .await;
        });
        provider += 1;
    }
    for f in &cfg.file_sd_configs {
        let sd = file::FileSd::new(f.files.clone(), f.refresh_interval.0);
        tasks.spawn(sd.run(provider, tx.clone(), stop.clone()));
        provider += 1;
    }
    for d in &cfg.dns_sd_configs {
        let sd = dns::DnsSd::new(d.clone(), opts.dns_server);
        tasks.spawn(sd.run(provider, tx.clone(), stop.clone()));
        provider += 1;
    }
    for k in &cfg.kubernetes_sd_configs {
        let sd = kubernetes::KubernetesSd::new(k.clone(), opts.kubernetes.clone());
        tasks.spawn(sd.run(provider, tx.clone(), stop.clone()));
        provider += 1;
    }
}

/// Sends `groups` unless they equal what was sent last; `false` when the receiver is gone.
pub(crate) async fn send_if_changed(
    tx: &mpsc::Sender<Update>,
    provider: usize,
    sent: &mut Option<Vec<TargetGroup>>,
    groups: Vec<TargetGroup>,
) -> bool {
    if sent.as_ref() == Some(&groups) {
        return true;
    }
    let ok = tx
        .send(Update {
            provider,
            groups: groups.clone(),
        })
        .await
        .is_ok();
    *sent = Some(groups);
    ok
}

/// Waits `period` or until `stop`; `false` when stopped.
pub(crate) async fn sleep_or_stop(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        () = stop.cancelled() => false,
    }
}
