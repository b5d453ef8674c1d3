//! The running edge's side of `monitoring_resources`: one watcher (`crate::monitors::run`) per section,
//! restarted when a reload changes the section or what its jobs inherit; the jobs it generates are
//! added to the file's jobs, and the scrape manager gets the sum whenever either changes.
//! `/api/v1/status/config` shows that sum.

use super::*;
use crate::monitors::{self, GeneratedJobs, generate::Node};

/// The watcher of the section in effect and the jobs it generated.
pub(super) struct MonitorState {
    generated: std::sync::Mutex<Arc<GeneratedJobs>>,
    running: std::sync::Mutex<Option<(monitors::Watch, CancellationToken)>>,
    /// Cancelled at shutdown; every watcher's token is its child.
    pub(super) root: CancellationToken,
    opts: MonitorOptions,
}

impl MonitorState {
    /// The discovery's shared informers; TLS material from Secrets under the TSDB's directory.
    pub(super) fn new(discovery: &DiscoveryOptions, tsdb_path: &Path) -> MonitorState {
        MonitorState {
            generated: Default::default(),
            running: Default::default(),
            root: CancellationToken::new(),
            opts: MonitorOptions {
                registry: discovery.kubernetes.clone(),
                sa_dir: PathBuf::from(crate::discovery::kubernetes::client::SERVICE_ACCOUNT_DIR),
                cert_dir: tsdb_path.join("monitoring-resources").join("certs"),
            },
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The file's configuration with the generated jobs after its own.
    pub(super) fn effective(&self, file: &Config) -> Config {
        let generated = lock(&self.monitors.generated).clone();
        let mut cfg = file.clone();
        if file.monitoring_resources.is_some() {
            cfg.scrape_configs.extend(generated.jobs.iter().cloned());
        }
        cfg
    }

    /// Starts, restarts or stops the watcher to match `cfg` (after a load that applied).
    pub(super) fn sync_monitors(self: &Arc<Self>, cfg: &Config) {
        let opts = &self.monitors.opts;
        let want = cfg.monitoring_resources.as_ref().map(|m| monitors::Watch {
            cfg: m.clone(),
            global: cfg.global.clone(),
            file_jobs: cfg
                .scrape_configs
                .iter()
                .map(|j| j.job_name.clone())
                .collect(),
            registry: opts.registry.clone(),
            sa_dir: opts.sa_dir.clone(),
            cert_dir: opts.cert_dir.clone(),
        });
        let mut running = lock(&self.monitors.running);
        if running.as_ref().map(|(w, _)| w) == want.as_ref() {
            return;
        }
        if let Some((_, stop)) = running.take() {
            stop.cancel();
        }
        let Some(w) = want else {
            *lock(&self.monitors.generated) = Arc::new(GeneratedJobs::default());
            return;
        };
        let stop = self.monitors.root.child_token();
        let (tx, mut rx) = tokio::sync::watch::channel(GeneratedJobs::default());
        tokio::spawn(monitors::run(w.clone(), tx, stop.clone()));
        let me = self.clone();
        let until = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = until.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return; },
                }
                let jobs = rx.borrow_and_update().clone();
                me.apply_generated(jobs, &until).await;
            }
        });
        *running = Some((w, stop));
    }

    /// Applies newly generated jobs with the file's configuration in effect.
    async fn apply_generated(&self, jobs: GeneratedJobs, until: &CancellationToken) {
        let _guard = self.reload_lock.lock().await;
        if until.is_cancelled() {
            // A reload replaced this watcher while we waited: its jobs are not wanted any more.
            return;
        }
        let n = jobs.jobs.len();
        let refresh = jobs.refresh.clone();
        *lock(&self.monitors.generated) = Arc::new(jobs);
        let cfg = self.effective(&self.current_config());
        let applied = match self.scrape.apply(&cfg).await {
            Ok(()) => self.scrape.refresh_clients(&refresh).await,
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => tracing::info!(
                jobs = n,
                "monitoring_resources: scrape jobs from ServiceMonitors and PodMonitors applied"
            ),
            Err(e) => {
                tracing::error!(error = %e, "monitoring_resources: generated jobs not applied")
            }
        }
    }

    /// `/api/v1/status/config`: the file as written (environment substituted), the generated jobs
    /// after its own, secrets as `<secret>`.
    pub(super) fn config_yaml(&self) -> Result<String, String> {
        let text = lock(&self.config).1.clone();
        let text = crate::config::expand_env(&text, |k| std::env::var(k).ok())?;
        let mut doc: Node = if text.trim().is_empty() {
            Node::Map(Vec::new())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| e.to_string())?
        };
        let generated = lock(&self.monitors.generated).clone();
        if let Node::Map(items) = &mut doc
            && !generated.yaml.is_empty()
        {
            match items.iter_mut().find(|(k, _)| k == "scrape_configs") {
                Some((_, Node::Seq(jobs))) => jobs.extend(generated.yaml.iter().cloned()),
                _ => items.push(("scrape_configs".into(), Node::Seq(generated.yaml.clone()))),
            }
        }
        redact(&mut doc);
        serde_saphyr::to_string(&doc).map_err(|e| e.to_string())
    }
}

/// Prometheus' `Secret` fields shown as `<secret>`.
fn redact(n: &mut Node) {
    match n {
        Node::Map(items) => {
            for (k, v) in items {
                if matches!(
                    k.as_str(),
                    "password" | "credentials" | "bearer_token" | "client_secret"
                ) && matches!(v, Node::Str(_))
                {
                    *v = Node::Str("<secret>".into());
                } else {
                    redact(v);
                }
            }
        }
        Node::Seq(v) => v.iter_mut().for_each(redact),
        _ => {}
    }
}

/// What the watchers need from the edge's options.
#[derive(Debug, Clone)]
struct MonitorOptions {
    pub registry: Arc<meridian_kube::informer::Registry>,
    pub sa_dir: PathBuf,
    pub cert_dir: PathBuf,
}
