//! Scrape pools: one task per job owning its discovery providers and its targets' scrape loops.
//!
//! - A discovery update recomputes the job's targets and diffs them against the running loops: new
//!   targets start a loop, vanished ones stop theirs (which writes stale markers), unchanged ones keep
//!   scraping untouched — their scrape cache and staleness state stay as they are.
//! - A reload ([`ScrapeManager::apply`]) starts new jobs, removes dropped ones (stale markers), and
//!   reconfigures changed ones: discovery restarts, and loops are replaced by loops with the new settings
//!   that inherit the old loops' state, so a reload neither marks series stale nor loses the cache.
//!   Unchanged jobs are not touched at all.
//! - Shutdown stops everything without stale markers (as Prometheus: the data simply ends).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::http::HttpClient;
use super::scrape_loop::{self, Health, LoopContext, LoopSettings, LoopState, StopMode};
use super::target::{DroppedTarget, Target, targets_from_groups};
use crate::config::{Config, ScrapeConfig};
use crate::discovery::{DiscoveryOptions, TargetGroup, Update, provider_count, start_providers};
use crate::metadata::{MetadataStore, TargetKey};
use meridian_core::labels::Labels;
use meridian_tsdb::db::Db;

/// One active target as the targets API shows it.
#[derive(Debug, Clone)]
pub struct ActiveTarget {
    pub pool: String,
    pub target: Target,
    pub url: String,
    pub health: Health,
}

/// A snapshot of every pool's targets.
#[derive(Debug, Clone, Default)]
pub struct TargetsSnapshot {
    pub active: Vec<ActiveTarget>,
    pub dropped: Vec<(String, DroppedTarget)>,
    /// Targets discovery produced that could not be used (bad labels, no address, …).
    pub errors: Vec<String>,
}

#[derive(Default)]
struct PoolStatus {
    active: Vec<(Target, String, Arc<Mutex<Health>>)>,
    dropped: Vec<DroppedTarget>,
    errors: Vec<String>,
}

/// Longest a new or changed job waits for its first discovery round before it starts scraping what
/// it has.
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(5);

enum PoolCmd {
    Reconfigure(Box<ScrapeConfig>, Arc<HttpClient>, oneshot::Sender<()>),
    /// `true`: the job was removed (mark stale); `false`: shutdown.
    Stop(bool, oneshot::Sender<()>),
}

struct PoolHandle {
    cfg: ScrapeConfig,
    cmd: mpsc::Sender<PoolCmd>,
    join: JoinHandle<()>,
    status: Arc<Mutex<PoolStatus>>,
}

/// Owns all scrape pools.
pub struct ScrapeManager {
    db: Arc<Db>,
    metadata: Arc<MetadataStore>,
    opts: DiscoveryOptions,
    pools: tokio::sync::Mutex<BTreeMap<String, PoolHandle>>,
    /// `prometheus_target_scrape_pool_targets{scrape_job}`.
    pool_targets: PoolTargets,
}

type PoolTargets = Family<Vec<(String, String)>, Gauge>;

fn job_label(job: &str) -> Vec<(String, String)> {
    vec![("scrape_job".to_owned(), job.to_owned())]
}

impl std::fmt::Debug for ScrapeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeManager").finish_non_exhaustive()
    }
}

impl ScrapeManager {
    /// Scrape loops append to `db` and publish their targets' metadata to `metadata`.
    pub fn new(db: Arc<Db>, metadata: Arc<MetadataStore>, opts: DiscoveryOptions) -> ScrapeManager {
        ScrapeManager {
            db,
            metadata,
            opts,
            pools: tokio::sync::Mutex::new(BTreeMap::new()),
            pool_targets: PoolTargets::default(),
        }
    }

    /// Registers the pools' target counts, and the Kubernetes discovery's event counts.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "prometheus_target_scrape_pool_targets",
            "Current number of targets in this scrape pool",
            self.pool_targets.clone(),
        );
        self.opts.kubernetes.register(r);
    }

    /// Makes the running pools match `cfg`. Every job's HTTP client (TLS files included) is built first;
    /// if one fails nothing changes and the error names the job.
    pub async fn apply(&self, cfg: &Config) -> Result<(), String> {
        let mut clients = HashMap::new();
        for job in &cfg.scrape_configs {
            let c = HttpClient::new(job).map_err(|e| format!("job {:?}: {e}", job.job_name))?;
            clients.insert(job.job_name.clone(), Arc::new(c));
        }
        let seed = cfg.external_labels.hash_value();
        let mut pools = self.pools.lock().await;
        let wanted: Vec<&str> = cfg
            .scrape_configs
            .iter()
            .map(|j| j.job_name.as_str())
            .collect();
        let gone: Vec<String> = pools
            .keys()
            .filter(|k| !wanted.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(p) = pools.remove(&name) {
                stop_pool(p, true).await;
            }
            self.pool_targets.remove(&job_label(&name));
        }
        // New pools' first discovery round: `apply` returns once their targets are known, so a
        // reload that answered has applied (the targets API shows the new jobs at once).
        let mut started = Vec::new();
        for job in &cfg.scrape_configs {
            let Some(client) = clients.remove(&job.job_name) else {
                continue;
            };
            match pools.get_mut(&job.job_name) {
                Some(p) if p.cfg == *job => {}
                Some(p) => {
                    let (tx, rx) = oneshot::channel();
                    if p.cmd
                        .send(PoolCmd::Reconfigure(Box::new(job.clone()), client, tx))
                        .await
                        .is_ok()
                    {
                        let _ = rx.await;
                    }
                    p.cfg = job.clone();
                }
                None => {
                    let (cmd_tx, cmd_rx) = mpsc::channel(4);
                    let status = Arc::new(Mutex::new(PoolStatus::default()));
                    let pool = Pool {
                        cfg: job.clone(),
                        client,
                        db: self.db.clone(),
                        metadata: self.metadata.clone(),
                        opts: self.opts.clone(),
                        targets_gauge: self
                            .pool_targets
                            .get_or_create(&job_label(&job.job_name))
                            .clone(),
                        seed,
                        status: status.clone(),
                        loops: HashMap::new(),
                        groups: BTreeMap::new(),
                        ending: JoinSet::new(),
                    };
                    let (ready_tx, ready_rx) = oneshot::channel();
                    let join = tokio::spawn(pool.run(cmd_rx, ready_tx));
                    started.push(ready_rx);
                    pools.insert(
                        job.job_name.clone(),
                        PoolHandle {
                            cfg: job.clone(),
                            cmd: cmd_tx,
                            join,
                            status,
                        },
                    );
                }
            }
        }
        for ready in started {
            let _ = ready.await;
        }
        Ok(())
    }

    /// Builds the HTTP clients of these jobs again (their TLS files changed, their configuration did
    /// not), handing each pool's loops over as a reload does.
    pub async fn refresh_clients(&self, jobs: &[String]) -> Result<(), String> {
        let pools = self.pools.lock().await;
        for name in jobs {
            let Some(p) = pools.get(name) else {
                continue;
            };
            let client = HttpClient::new(&p.cfg).map_err(|e| format!("job {name:?}: {e}"))?;
            let (tx, rx) = oneshot::channel();
            if p.cmd
                .send(PoolCmd::Reconfigure(
                    Box::new(p.cfg.clone()),
                    Arc::new(client),
                    tx,
                ))
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        }
        Ok(())
    }

    /// Stops every pool (no stale markers) and waits for their loops.
    pub async fn stop(&self) {
        let mut pools = self.pools.lock().await;
        for (_, p) in std::mem::take(&mut *pools) {
            stop_pool(p, false).await;
        }
    }

    pub async fn targets(&self) -> TargetsSnapshot {
        let pools = self.pools.lock().await;
        let mut snap = TargetsSnapshot::default();
        for (name, p) in pools.iter() {
            let st = p
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (t, url, h) in &st.active {
                let health = h
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                snap.active.push(ActiveTarget {
                    pool: name.clone(),
                    target: t.clone(),
                    url: url.clone(),
                    health,
                });
            }
            snap.dropped
                .extend(st.dropped.iter().map(|d| (name.clone(), d.clone())));
            snap.errors.extend(st.errors.iter().cloned());
        }
        snap
    }
}

async fn stop_pool(p: PoolHandle, remove: bool) {
    let (tx, rx) = oneshot::channel();
    if p.cmd.send(PoolCmd::Stop(remove, tx)).await.is_ok() {
        let _ = rx.await;
    }
    let _ = p.join.await;
}

struct RunningLoop {
    stop: watch::Sender<Option<StopMode>>,
    join: JoinHandle<Option<LoopState>>,
    health: Arc<Mutex<Health>>,
}

struct Pool {
    cfg: ScrapeConfig,
    client: Arc<HttpClient>,
    db: Arc<Db>,
    metadata: Arc<MetadataStore>,
    opts: DiscoveryOptions,
    targets_gauge: Gauge,
    seed: u64,
    status: Arc<Mutex<PoolStatus>>,
    loops: HashMap<Labels, RunningLoop>,
    groups: BTreeMap<usize, Vec<TargetGroup>>,
    /// Loops told to stop, still writing their stale markers.
    ending: JoinSet<()>,
}

impl Pool {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<PoolCmd>, ready: oneshot::Sender<()>) {
        let (mut sd_rx, mut sd_stop, mut sd_tasks) = self.start_discovery();
        self.first_round(&mut sd_rx).await;
        self.sync(HashMap::new());
        let _ = ready.send(());
        loop {
            tokio::select! {
                Some(u) = sd_rx.recv() => {
                    self.groups.insert(u.provider, u.groups);
                    self.sync(HashMap::new());
                }
                Some(()) = async { self.ending.join_next().await.map(|_| ()) }, if !self.ending.is_empty() => {}
                cmd = cmd_rx.recv() => match cmd {
                    Some(PoolCmd::Reconfigure(cfg, client, done)) => {
                        sd_stop.cancel();
                        sd_tasks.shutdown().await;
                        let states = self.handover_all().await;
                        self.cfg = *cfg;
                        self.client = client;
                        let n = provider_count(&self.cfg);
                        self.groups.retain(|p, _| *p < n);
                        (sd_rx, sd_stop, sd_tasks) = self.start_discovery();
                        self.first_round(&mut sd_rx).await;
                        self.sync(states);
                        let _ = done.send(());
                    }
                    Some(PoolCmd::Stop(remove, done)) => {
                        sd_stop.cancel();
                        sd_tasks.shutdown().await;
                        let mode = if remove { StopMode::Remove } else { StopMode::Handover };
                        for (_, l) in self.loops.drain() {
                            let _ = l.stop.send(Some(mode));
                            let _ = l.join.await;
                        }
                        while self.ending.join_next().await.is_some() {}
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        sd_stop.cancel();
                        sd_tasks.shutdown().await;
                        for (_, l) in self.loops.drain() {
                            let _ = l.stop.send(Some(StopMode::Handover));
                            let _ = l.join.await;
                        }
                        while self.ending.join_next().await.is_some() {}
                        return;
                    }
                }
            }
        }
    }

    /// Takes the first update of every provider (static groups at once, a file read, a DNS lookup),
    /// for at most [`FIRST_DISCOVERY_WAIT`]: what is known by then is scraped at once, the rest when
    /// it arrives.
    async fn first_round(&mut self, sd_rx: &mut mpsc::Receiver<Update>) {
        let deadline = tokio::time::Instant::now() + FIRST_DISCOVERY_WAIT;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < provider_count(&self.cfg) {
            match tokio::time::timeout_at(deadline, sd_rx.recv()).await {
                Ok(Some(u)) => {
                    seen.insert(u.provider);
                    self.groups.insert(u.provider, u.groups);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn start_discovery(&self) -> (mpsc::Receiver<Update>, CancellationToken, JoinSet<()>) {
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        start_providers(&self.cfg, &self.opts, tx, stop.clone(), &mut tasks);
        (rx, stop, tasks)
    }

    async fn handover_all(&mut self) -> HashMap<Labels, LoopState> {
        let mut states = HashMap::new();
        for (labels, l) in self.loops.drain() {
            let _ = l.stop.send(Some(StopMode::Handover));
            if let Ok(Some(st)) = l.join.await {
                states.insert(labels, st);
            }
        }
        states
    }

    /// Diffs the targets of the current groups against the running loops.
    fn sync(&mut self, mut states: HashMap<Labels, LoopState>) {
        let all: Vec<TargetGroup> = self.groups.values().flatten().cloned().collect();
        let (mut targets, dropped, mut errors) = targets_from_groups(&all, &self.cfg);
        if self.cfg.target_limit > 0 && targets.len() as u64 > self.cfg.target_limit {
            errors.push(format!(
                "job {:?}: target_limit exceeded ({} targets, limit {}): no target of this job is scraped",
                self.cfg.job_name,
                targets.len(),
                self.cfg.target_limit
            ));
            tracing::warn!(job = %self.cfg.job_name, "target_limit exceeded");
            targets.clear();
        }
        for e in &errors {
            tracing::warn!(error = %e, "discovered target not usable");
        }
        let wanted: HashMap<&Labels, &Target> = targets.iter().map(|t| (&t.labels, t)).collect();
        let gone: Vec<Labels> = self
            .loops
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(l) = self.loops.remove(&k) {
                let _ = l.stop.send(Some(StopMode::Remove));
                self.ending.spawn(async move {
                    let _ = l.join.await;
                });
            }
        }
        let settings = LoopSettings::from_config(&self.cfg);
        for t in &targets {
            if self.loops.contains_key(&t.labels) {
                continue;
            }
            let health = Arc::new(Mutex::new(Health::default()));
            let ctx = LoopContext {
                target: t.clone(),
                public: t.public_labels(),
                settings: settings.clone(),
                client: self.client.clone(),
                path_and_query: t.path_and_query(&self.cfg),
                db: self.db.clone(),
                health: health.clone(),
                offset_seed: self.seed,
                metadata: self.metadata.clone(),
                metadata_key: TargetKey {
                    pool: self.cfg.job_name.clone(),
                    labels: t.labels.clone(),
                },
            };
            let state = states.remove(&t.labels).unwrap_or_default();
            let (stop_tx, stop_rx) = watch::channel(None);
            let join = tokio::spawn(scrape_loop::run(ctx, state, stop_rx));
            self.loops.insert(
                t.labels.clone(),
                RunningLoop {
                    stop: stop_tx,
                    join,
                    health,
                },
            );
        }
        // States whose targets did not come back after a reconfiguration: their series end here.
        for (labels, mut st) in states {
            self.metadata.remove(&TargetKey {
                pool: self.cfg.job_name.clone(),
                labels,
            });
            let db = self.db.clone();
            self.ending.spawn(async move {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
                let _ = tokio::task::spawn_blocking(move || st.stale_all(&db, ts)).await;
            });
        }
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.active = targets
            .iter()
            .filter_map(|t| {
                self.loops
                    .get(&t.labels)
                    .map(|l| (t.clone(), t.url(&self.cfg), l.health.clone()))
            })
            .collect();
        status.dropped = dropped;
        status.errors = errors;
        self.targets_gauge
            .set(i64::try_from(status.active.len()).unwrap_or(i64::MAX));
    }
}
