//! The rule manager: loads rule files, runs each group on its own task, reloads on change, stops in
//! order.

use super::*;

/// How the gateway runs rules (`--rule-file` and the flags next to it, Thanos Ruler's names).
#[derive(Clone)]
pub struct RulesOptions {
    /// `--rule-file` patterns.
    pub files: Vec<String>,
    /// `--eval-interval`: groups without their own `interval`.
    pub eval_interval: Duration,
    /// `--data-dir`: the TSDB of recorded series and `ALERTS`.
    pub data_dir: std::path::PathBuf,
    /// `--label`: external labels of the rule TSDB's store and of sent alerts.
    pub external_labels: Labels,
    /// `--tsdb.retention` of the rule TSDB.
    pub retention: Duration,
    /// `--alert.query-url`: the base of `generatorURL`s.
    pub external_url: String,
    pub resend_delay: Duration,
    pub for_grace_period: Duration,
    pub for_outage_tolerance: Duration,
    /// The strategy of groups without `partial_response_strategy` (abort).
    pub partial_response: PartialResponse,
    /// Where alerts go besides the Alertmanager sender (the native router, tests).
    pub alert_sinks: Vec<Arc<dyn AlertSink>>,
    /// The Alertmanager sender (`--alertmanagers.url`): run, drained at shutdown and measured by the
    /// gateway.
    pub notifier: Option<Arc<crate::alerting::notifier::Notifier>>,
    /// The native router (`--alert.routing-config-file`): run and measured by the gateway.
    pub router: Option<Arc<crate::alerting::dispatch::Router>>,
    /// `--rule.monitoring-resources-file`: PrometheusRules read from the Kubernetes API.
    pub resources: Option<meridian_kube::resources::MonitoringResources>,
}

impl std::fmt::Debug for RulesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesOptions").finish_non_exhaustive()
    }
}

impl RulesOptions {
    /// Thanos Ruler's defaults for everything but the files and the data directory.
    pub fn new(files: Vec<String>, data_dir: std::path::PathBuf) -> RulesOptions {
        RulesOptions {
            files,
            eval_interval: Duration::from_secs(60),
            data_dir,
            external_labels: Labels::empty(),
            retention: Duration::from_secs(48 * 3600),
            external_url: String::new(),
            resend_delay: Duration::from_secs(60),
            for_grace_period: Duration::from_secs(600),
            for_outage_tolerance: Duration::from_secs(3600),
            partial_response: PartialResponse::Abort,
            alert_sinks: Vec::new(),
            notifier: None,
            router: None,
            resources: None,
        }
    }
}

/// Sends to several sinks.
pub struct FanoutSink(pub Vec<Arc<dyn AlertSink>>);

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink").finish_non_exhaustive()
    }
}

impl AlertSink for FanoutSink {
    fn send(&self, alerts: Vec<OutAlert>) {
        for s in &self.0 {
            s.send(alerts.clone());
        }
    }
}

/// Rule files that could not be loaded: every problem of every file, one file per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LoadError(pub Vec<file::RuleFileError>);

/// Loads rule files, runs their groups and reloads them.
pub struct RuleManager {
    pub(super) patterns: Vec<String>,
    pub(super) default_interval: Duration,
    pub(super) ctx: EvalContext,
    pub(super) clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    pub(super) groups: RwLock<Vec<(Arc<Group>, CancellationToken)>>,
    pub(super) tasks: Mutex<tokio::task::JoinSet<()>>,
    pub(super) stop: CancellationToken,
    pub(super) reload_lock: tokio::sync::Mutex<()>,
    /// The rule files of the selected PrometheusRules (`None` until the first list).
    pub(super) resource_rules: Mutex<Vec<meridian_kube::rules::RuleText>>,
    pub metrics: Arc<RuleMetrics>,
}

impl std::fmt::Debug for RuleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleManager").finish_non_exhaustive()
    }
}

/// Rule self-metrics.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    pub evaluations: prometheus_client::metrics::counter::Counter,
    pub evaluation_failures: prometheus_client::metrics::counter::Counter,
    pub last_reload_successful: prometheus_client::metrics::gauge::Gauge,
    pub rule_groups: prometheus_client::metrics::gauge::Gauge,
}

impl RuleMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_rule_evaluations",
            "Rule evaluations.",
            self.evaluations.clone(),
        );
        r.register(
            "meridian_rule_evaluation_failures",
            "Rule evaluations that failed.",
            self.evaluation_failures.clone(),
        );
        r.register(
            "meridian_rule_config_last_reload_successful",
            "Whether the last rule file reload succeeded.",
            self.last_reload_successful.clone(),
        );
        r.register(
            "meridian_rule_groups",
            "Rule groups loaded.",
            self.rule_groups.clone(),
        );
    }
}

impl RuleManager {
    /// Loads the files; errors name every problem of every file.
    pub fn new(
        patterns: Vec<String>,
        default_interval: Duration,
        ctx: EvalContext,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<Arc<RuleManager>, LoadError> {
        let m = Arc::new(RuleManager {
            patterns,
            default_interval,
            ctx,
            clock,
            groups: RwLock::new(Vec::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            stop: CancellationToken::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            resource_rules: Mutex::new(Vec::new()),
            metrics: Arc::new(RuleMetrics::default()),
        });
        let specs = m.load()?;
        let groups: Vec<_> = specs
            .into_iter()
            .map(|s| {
                (
                    Arc::new(Group::new(s, default_interval)),
                    CancellationToken::new(),
                )
            })
            .collect();
        m.metrics.rule_groups.set(groups.len() as i64);
        m.metrics.last_reload_successful.set(1);
        *m.groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
        Ok(m)
    }

    /// The rule files' groups, then the groups of every PrometheusRule that passes the same checks (one
    /// that does not is left out with a warning naming it; the others load).
    pub(super) fn load(&self) -> Result<Vec<GroupSpec>, LoadError> {
        let mut groups = file::load_all(&self.patterns).map_err(LoadError)?;
        for r in lock(&self.resource_rules).iter() {
            let parsed = file::parse(std::path::Path::new(&r.name), &r.text)
                .map_err(|e| e.errors.join("; "))
                .and_then(|mut g| match &r.enforce {
                    Some((label, ns)) => super::enforce::enforce(&mut g, label, ns).map(|()| g),
                    None => Ok(g),
                });
            match parsed {
                Ok(g) => groups.extend(g),
                Err(e) => tracing::warn!(
                    resource = %format!("PrometheusRule {}", r.resource),
                    reason = "InvalidConfiguration",
                    "monitoring_resources: PrometheusRule {} skipped: {e}",
                    r.resource,
                ),
            }
        }
        Ok(groups)
    }

    /// Reads the PrometheusRules `cfg` selects and reloads whenever they change, until [`Self::stop`].
    pub fn watch_resources(self: &Arc<Self>, cfg: meridian_kube::resources::MonitoringResources) {
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let stop = self.stop.clone();
        let registry = Arc::new(meridian_kube::informer::Registry::default());
        let mut tasks = lock(&self.tasks);
        let until = stop.clone();
        tasks.spawn(async move {
            let sa = std::path::Path::new(meridian_kube::client::SERVICE_ACCOUNT_DIR);
            let agent = concat!("Meridian-gateway/", env!("CARGO_PKG_VERSION"));
            if let Err(e) = meridian_kube::rules::run(cfg, registry, sa, agent, tx, until).await {
                tracing::error!(error = %e, "monitoring_resources: no PrometheusRule is read");
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return; },
                }
                let texts = rx.borrow_and_update().clone().unwrap_or_default();
                *lock(&me.resource_rules) = texts;
                let _ = me.reload().await;
            }
        });
    }

    /// The loaded groups.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Starts a loop per group (call once).
    pub fn start(self: &Arc<Self>) {
        let groups: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (g, stop) in groups {
            self.spawn(g, stop);
        }
    }

    pub(super) fn spawn(self: &Arc<Self>, g: Arc<Group>, stop: CancellationToken) {
        let me = self.clone();
        let mut tasks = lock(&self.tasks);
        // Loops of groups replaced by reloads have ended: reap them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let interval = g.interval.as_millis().max(1) as i64;
            let mut last = i64::MIN;
            loop {
                let now = (me.clock)();
                let next = g.slot_at(now) + interval;
                let wait = Duration::from_millis((next - now).max(0) as u64);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = me.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let ts = g.slot_at((me.clock)());
                if ts <= last {
                    // The wall clock stepped back: never evaluate one slot twice.
                    continue;
                }
                last = ts;
                g.eval(&me.ctx, ts).await;
                me.metrics.evaluations.inc_by(g.rules.len() as u64);
                let failed = g
                    .rules
                    .iter()
                    .filter(|r| lock(&r.state).health.health == "err")
                    .count();
                me.metrics.evaluation_failures.inc_by(failed as u64);
            }
        });
    }

    /// Reloads the files: changed groups replace the old ones (taking over unchanged rules' state),
    /// removed groups stop. A file with errors keeps everything as it is.
    pub async fn reload(self: &Arc<Self>) -> Result<(), LoadError> {
        let _one = self.reload_lock.lock().await;
        let specs = match self.load() {
            Ok(s) => s,
            Err(e) => {
                self.metrics.last_reload_successful.set(0);
                tracing::error!(error = %e, "rule files not reloaded");
                return Err(e);
            }
        };
        let old: Vec<_> = std::mem::take(
            &mut *self
                .groups
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut new = Vec::new();
        let mut old_by_key: HashMap<_, _> = old
            .into_iter()
            .map(|(g, stop)| (g.key(), (g, stop)))
            .collect();
        for s in specs {
            let g = Group::new(s, self.default_interval);
            match old_by_key.remove(&g.key()) {
                Some((o, stop)) if o.spec == g.spec && o.interval == g.interval => {
                    new.push((o, stop));
                }
                Some((o, stop)) => {
                    stop.cancel();
                    g.copy_state(&o);
                    let g = Arc::new(g);
                    let stop = CancellationToken::new();
                    self.spawn(g.clone(), stop.clone());
                    new.push((g, stop));
                }
                None => {
                    let g = Arc::new(g);
                    let stop = CancellationToken::new();
                    self.spawn(g.clone(), stop.clone());
                    new.push((g, stop));
                }
            }
        }
        for (_, (_, stop)) in old_by_key {
            stop.cancel();
        }
        self.metrics.rule_groups.set(new.len() as i64);
        self.metrics.last_reload_successful.set(1);
        *self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        tracing::info!("rule files reloaded");
        Ok(())
    }

    /// Watches the rule files' directories and reloads on change (and every 30 s).
    pub fn watch(self: &Arc<Self>) {
        use notify::{RecursiveMode, Watcher};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut dirs: Vec<std::path::PathBuf> = self
            .patterns
            .iter()
            .map(|p| {
                std::path::Path::new(p)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let watcher = meridian_core::fswatch::watcher(move |_| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| {
            for d in &dirs {
                w.watch(d, RecursiveMode::NonRecursive)?;
            }
            Ok(w)
        });
        let me = self.clone();
        lock(&self.tasks).spawn(async move {
            let _watcher = watcher
                .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the rule files; checking every 30s"))
                .ok();
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = me.fingerprint();
            loop {
                tokio::select! {
                    () = me.stop.cancelled() => return,
                    _ = rx.recv() => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = tick.tick() => {}
                }
                let now = me.fingerprint();
                if now != last {
                    last = now;
                    let _ = me.reload().await;
                }
            }
        });
    }

    /// The rule files' names and contents, to tell a real change from an unrelated event.
    pub(super) fn fingerprint(&self) -> u64 {
        let mut h = 0u64;
        if let Ok(files) = file::expand_globs(&self.patterns) {
            for f in files {
                let text = std::fs::read(&f).unwrap_or_default();
                h ^= xxhash_rust::xxh3::xxh3_64(f.to_string_lossy().as_bytes())
                    .wrapping_mul(31)
                    .wrapping_add(xxhash_rust::xxh3::xxh3_64(&text));
            }
        }
        h
    }

    /// Stops every group loop and the watcher, waiting for evaluations in flight.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        while tasks.join_next().await.is_some() {}
    }
}
