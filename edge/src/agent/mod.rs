//! The running edge: TSDB, scrape manager, remote-write receiver, HTTP server, configuration reloads and
//! TSDB housekeeping, with one owner for every task and an ordered shutdown.
//!
//! HTTP endpoints (one port): `/metrics`, `/-/healthy`, `/-/ready`, `POST|PUT /-/reload`,
//! `POST /api/v1/write` and `/api/v1/receive` (remote write), `GET /api/v1/targets` (Prometheus' shape),
//! `GET /api/v1/status/config` (the file with the jobs generated from `monitoring_resources`).
//!
//! Reloads come from `SIGHUP` (the binary forwards it), `/-/reload`, and changes to the config file (its
//! directory is watched, which catches a ConfigMap's `..data` symlink swap; the file is also re-checked
//! every 10 s). A config that fails to load or apply leaves the running one in place and sets
//! `meridian_config_last_reload_successful` to 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meridian_core::runtime::{DEFAULT_DRAIN, Task};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::discovery::DiscoveryOptions;
use crate::metadata::MetadataStore;
use crate::receive::{self, ReceiveLimits, ReceiveMetrics};
use crate::remote::RemoteWrite;
use crate::scrape::ScrapeManager;
use meridian_core::labels::labels_json;
use meridian_core::promfmt::PromDuration;
use meridian_core::time::rfc3339;
use meridian_storeapi::leaf::{LeafStore, SeriesLimits};
use meridian_tsdb::db::{Db, DbOptions};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::{Shipper, ShipperOptions};

/// Default of `--store.grpc.series-max-concurrency` (Thanos' default).
pub const DEFAULT_SERIES_MAX_CONCURRENCY: usize = 20;

/// How to start an edge.
#[derive(Debug)]
pub struct AgentOptions {
    pub config_file: PathBuf,
    pub tsdb_path: PathBuf,
    pub db: DbOptions,
    /// Where the HTTP server listens (bound by the caller, so tests can use port 0).
    pub http_listener: TcpListener,
    pub http_tls: Option<Arc<meridian_pki::tls::server::ServerTls>>,
    /// The HTTP server's connection cap and read timeout.
    pub web: meridian_pki::serve::WebLimits,
    /// Where the StoreAPI (gRPC) listens; `None` serves no StoreAPI.
    pub grpc_listener: Option<TcpListener>,
    /// TLS (mTLS with a client CA) for the StoreAPI; its files are watched and reloaded.
    pub grpc_tls: Option<Arc<meridian_pki::tls::server::ServerTls>>,
    /// How often the gRPC TLS files are re-checked besides being watched.
    pub grpc_tls_reload_interval: Duration,
    /// Most StoreAPI `Series` calls served at once; more wait (Thanos'
    /// `--store.grpc.series-max-concurrency`, default 20). 0 = unlimited.
    pub grpc_series_max_concurrency: usize,
    /// Per-request StoreAPI `Series` limits (Thanos' `--store.limits.request-series` /
    /// `--store.limits.request-samples`, default unlimited).
    pub grpc_series_limits: SeriesLimits,
    pub discovery: DiscoveryOptions,
    pub receive: ReceiveLimits,
    /// Watch the config file and reload on change.
    pub watch_config: bool,
    /// Where finished blocks are uploaded; `None` ships nothing (retention then deletes freely).
    pub objstore: Option<Bucket>,
    pub shipper: ShipperOptions,
    /// How long shutdown waits for a running upload before abandoning it.
    pub shipper_shutdown_timeout: Duration,
    /// How long shutdown (and a reload that changes a queue) waits for remote-write queues to send
    /// what they hold (`--storage.remote.flush-deadline`).
    pub remote_flush_deadline: Duration,
    /// Agent mode (`--agent`): scrape, WAL, remote write; no blocks, StoreAPI or shipper.
    pub agent: Option<AgentMode>,
    /// The node's own external labels (`--label`), added to (and overriding) the config's.
    pub labels: meridian_core::labels::Labels,
    /// Receive mode: a hashring of receivers with tenants (see [`crate::receive::router`]).
    pub receive_mode: Option<ReceiveMode>,
    /// A second HTTP listener for remote write (Thanos' `--remote-write.address`); it serves the
    /// same endpoints, with the same TLS.
    pub remote_write_listener: Option<TcpListener>,
}

/// Agent mode's WAL retention (Prometheus' `--storage.agent.*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentMode {
    /// `--storage.agent.wal-truncate-frequency` (2h).
    pub truncate_frequency: Duration,
    /// `--storage.agent.retention.min-time` (5m): kept behind what every queue has sent.
    pub min_time: Duration,
    /// `--storage.agent.retention.max-time` (4h): nothing older is kept, sent or not.
    pub max_time: Duration,
}

impl Default for AgentMode {
    fn default() -> AgentMode {
        AgentMode {
            truncate_frequency: Duration::from_secs(2 * 3600),
            min_time: Duration::from_secs(300),
            max_time: Duration::from_secs(4 * 3600),
        }
    }
}

impl AgentOptions {
    /// Refuses modes that cannot go together.
    fn check_modes(&self) -> anyhow::Result<()> {
        if self.agent.is_some() && (self.grpc_listener.is_some() || self.objstore.is_some()) {
            anyhow::bail!("agent mode serves no StoreAPI and ships no blocks");
        }
        if self.agent.is_some() && self.receive_mode.is_some() {
            anyhow::bail!("agent mode cannot receive into a hashring: it stores no tenants");
        }
        Ok(())
    }

    /// Defaults for everything but the config file, the TSDB directory and the HTTP listener: no
    /// StoreAPI, no TLS, the system resolver, default receive limits, no config watcher.
    pub fn new(
        config_file: PathBuf,
        tsdb_path: PathBuf,
        http_listener: TcpListener,
    ) -> AgentOptions {
        AgentOptions {
            config_file,
            tsdb_path,
            db: DbOptions::default(),
            http_listener,
            http_tls: None,
            web: meridian_pki::serve::WebLimits::default(),
            grpc_listener: None,
            grpc_tls: None,
            grpc_tls_reload_interval: Duration::from_secs(60),
            grpc_series_max_concurrency: DEFAULT_SERIES_MAX_CONCURRENCY,
            grpc_series_limits: SeriesLimits::default(),
            discovery: DiscoveryOptions::default(),
            receive: ReceiveLimits::default(),
            watch_config: false,
            objstore: None,
            shipper: ShipperOptions::default(),
            shipper_shutdown_timeout: Duration::from_secs(30),
            remote_flush_deadline: crate::remote::DEFAULT_FLUSH_DEADLINE,
            agent: None,
            labels: meridian_core::labels::Labels::empty(),
            receive_mode: None,
            remote_write_listener: None,
        }
    }
}

/// The running shipper: its task and the two ways to end it.
pub(crate) struct ShipperTask {
    pub(crate) shipper: Arc<Shipper>,
    stop: CancellationToken,
    abandon: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl ShipperTask {
    /// Runs the shipper; `grace`: how long shutdown waits for a running upload.
    pub(crate) fn start(shipper: Arc<Shipper>, grace: Duration) -> ShipperTask {
        let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(shipper.clone().run(stop.clone(), abandon.clone()));
        ShipperTask {
            shipper,
            stop,
            abandon,
            task,
            grace,
        }
    }

    /// Stops it: a last cycle, abandoned if it outlasts the grace period.
    pub(crate) async fn finish(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(self.grace, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "shutdown: abandoning the running upload");
            self.abandon.cancel();
            let _ = self.task.await;
        }
    }
}

/// Reload bookkeeping, exposed as metrics.
#[derive(Debug, Clone, Default)]
struct ReloadMetrics {
    last_successful: Gauge,
    last_success_timestamp: Gauge,
}

impl ReloadMetrics {
    fn succeeded(&self) {
        self.last_successful.set(1);
        self.last_success_timestamp.set(now_secs());
    }
}

struct Shared {
    config_file: PathBuf,
    db: Arc<Db>,
    metadata: Arc<MetadataStore>,
    scrape: ScrapeManager,
    config: std::sync::Mutex<(Arc<Config>, String)>,
    reload_lock: AsyncMutex<()>,
    reload_metrics: ReloadMetrics,
    receive_metrics: ReceiveMetrics,
    receive_limits: ReceiveLimits,
    remote: Arc<RemoteWrite>,
    registry: Registry,
    ready: AtomicBool,
    receive: Option<ReceiveFront>,
    monitors: monitors::MonitorState,
}

/// A running edge.
pub struct Agent {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    stop: CancellationToken,
    http: tokio::task::JoinHandle<()>,
    /// The remote-write listener's server, with its address.
    http_rw: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    /// The StoreAPI server and the TLS watcher; stopped after everything that writes.
    grpc: Option<Task>,
    tls_watcher: Option<meridian_pki::tls::Watcher>,
    background: tokio::task::JoinSet<()>,
    shipper: Option<ShipperTask>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn log_config_warnings(cfg: &Config) {
    if !cfg.ignored_sections.is_empty() {
        tracing::warn!(
            sections = %cfg.ignored_sections.join(", "),
            "the edge accepts but does not act on these config sections"
        );
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
}

impl Agent {
    /// Loads the config (an error here is fatal), opens the TSDB, starts scraping and serving.
    pub async fn start(opts: AgentOptions) -> anyhow::Result<Agent> {
        let text = tokio::fs::read_to_string(&opts.config_file)
            .await
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", opts.config_file.display()))?;
        let cfg = Config::load(&opts.config_file)?;
        log_config_warnings(&cfg);
        opts.check_modes()?;
        let node_labels = cfg.external_labels.merged_with(&opts.labels);
        let path = opts.tsdb_path.clone();
        let mut dbo = opts.db.clone();
        if let Some(a) = opts.agent {
            dbo.agent = true;
            dbo.wal_hold_max_age = Some(a.max_time);
        }
        let db = Arc::new(tokio::task::spawn_blocking(move || Db::open(&path, dbo)).await??);
        let mut registry = Registry::default();
        db.metrics.register(&mut registry);
        meridian_core::process_metrics::register(&mut registry);
        let (reload_metrics, receive_metrics) = register_edge_metrics(&mut registry);
        let series_gate =
            meridian_storeapi::server::SeriesGate::new(opts.grpc_series_max_concurrency);
        if let Some(g) = &series_gate {
            g.register(&mut registry);
        }
        let shipper = start_shipper(
            opts.objstore.clone(),
            &db,
            &node_labels,
            &opts.shipper,
            &mut registry,
        )?;
        let metadata = Arc::new(MetadataStore::new());
        let remote = start_remote_write(
            &db,
            (&opts.tsdb_path, &opts.config_file),
            opts.remote_flush_deadline,
            &metadata,
            &mut registry,
            &cfg,
        )
        .await?;
        let scrape = ScrapeManager::new(db.clone(), metadata.clone(), opts.discovery.clone());
        scrape.register(&mut registry);
        scrape
            .apply(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", opts.config_file.display()))?;
        let edge_store: Arc<dyn meridian_storeapi::Store> = Arc::new(
            LeafStore::from_source(EdgeSource::new(&db, &metadata), node_labels.clone())
                .with_limits(opts.grpc_series_limits),
        );
        let ReceiveSetup {
            store,
            front: receive_front,
            watch: hashring_watch,
        } = receive_mode::setup(
            opts.receive_mode,
            edge_store,
            receive_mode::Context {
                tsdb_path: &opts.tsdb_path,
                db: &opts.db,
                node_labels: &node_labels,
                objstore: opts.objstore.as_ref(),
                shipper: &opts.shipper,
                shipper_grace: opts.shipper_shutdown_timeout,
                series_limits: opts.grpc_series_limits,
                metadata: &metadata,
                metrics: &receive_metrics,
            },
            &mut registry,
        )
        .await?;
        reload_metrics.succeeded();
        let shared = Arc::new(Shared {
            config_file: opts.config_file.clone(),
            db: db.clone(),
            metadata: metadata.clone(),
            scrape,
            config: std::sync::Mutex::new((Arc::new(cfg), text)),
            reload_lock: AsyncMutex::new(()),
            reload_metrics,
            receive_metrics,
            receive_limits: opts.receive,
            remote: remote.clone(),
            registry,
            ready: AtomicBool::new(false),
            receive: receive_front,
            monitors: monitors::MonitorState::new(&opts.discovery, &opts.tsdb_path),
        });
        shared.sync_monitors(&shared.current_config());
        let stop = CancellationToken::new();
        let http_addr = opts.http_listener.local_addr()?;
        let (http, http_rw) = serve_web(
            &shared,
            (opts.http_listener, opts.remote_write_listener),
            opts.http_tls,
            opts.web,
            &stop,
        )?;
        let (grpc, grpc_addr, tls_watcher) = match opts.grpc_listener {
            None => (None, None, None),
            Some(listener) => {
                let addr = listener.local_addr()?;
                let writer = shared.receive.as_ref().map(|f| {
                    Arc::new(f.receiver.clone()) as Arc<dyn meridian_storeapi::writer::RemoteWriter>
                });
                let options = meridian_storeapi::server::ServerOptions {
                    series_gate,
                    writer,
                };
                let tls = (opts.grpc_tls, opts.grpc_tls_reload_interval);
                let (task, watcher) = serve_storeapi(store, listener, tls.0, tls.1, options)?;
                (Some(task), Some(addr), watcher)
            }
        };
        let mut background = tokio::task::JoinSet::new();
        match opts.agent {
            Some(mode) => {
                background.spawn(truncate_agent_wal(db, remote, mode, stop.clone()));
            }
            None => {
                background.spawn(housekeeping(
                    db,
                    shipper.as_ref().map(|s| s.waker()),
                    stop.clone(),
                ));
            }
        }
        let shipper = shipper.map(|s| ShipperTask::start(s, opts.shipper_shutdown_timeout));
        if opts.watch_config {
            background.spawn(watch_config(shared.clone(), stop.clone()));
        }
        if let Some(front) = &shared.receive {
            receive_mode::spawn_background(front, hashring_watch, &mut background, &stop);
        }
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(http = %http_addr, grpc = ?grpc_addr, "edge started");
        Ok(Agent {
            shared,
            http_addr,
            grpc_addr,
            stop,
            http,
            http_rw,
            grpc,
            tls_watcher,
            background,
            shipper,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the remote-write listener listens, when there is one.
    pub fn remote_write_addr(&self) -> Option<SocketAddr> {
        self.http_rw.as_ref().map(|(a, _)| *a)
    }

    /// Where the StoreAPI listens, when it is served.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.shared.db
    }

    /// The metric metadata the StoreAPI serves (scraped and remote-written), by family.
    pub fn metadata(
        &self,
    ) -> std::collections::BTreeMap<String, Vec<meridian_core::series::MetricMeta>> {
        self.shared.metadata.all(std::time::Instant::now())
    }

    pub fn config(&self) -> Arc<Config> {
        self.shared.current_config()
    }

    /// Reloads the config file now (what SIGHUP does).
    pub async fn reload(&self) -> Result<(), String> {
        self.shared.reload(true).await.map(|_| ())
    }

    pub async fn targets(&self) -> crate::scrape::TargetsSnapshot {
        self.shared.scrape.targets().await
    }

    /// The receiver, in receive mode.
    pub fn receiver(&self) -> Option<&crate::receive::router::Receiver> {
        self.shared.receive.as_ref().map(|f| &f.receiver)
    }

    /// The shipper, when blocks are uploaded.
    pub fn shipper(&self) -> Option<&Arc<Shipper>> {
        self.shipper.as_ref().map(|s| &s.shipper)
    }

    /// Ordered shutdown: not ready, stop scraping (loops finish their current append), stop the HTTP
    /// server (in-flight remote writes complete), stop housekeeping; let the remote-write queues send
    /// what the WAL holds within the flush deadline; cut the blocks that are due (the
    /// rest of the head is in the WAL); let the shipper finish uploading within its grace period, then
    /// abandon the upload (it is redone from the start at the next start, and no `meta.json` of it
    /// exists); then stop the StoreAPI server (queries in flight finish) and the TLS watcher. The TSDB
    /// closes when the last handle goes.
    pub async fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        self.shared.monitors.root.cancel();
        self.shared.scrape.stop().await;
        self.stop.cancel();
        if tokio::time::timeout(DEFAULT_DRAIN, &mut self.http)
            .await
            .is_err()
        {
            tracing::warn!(drain = ?DEFAULT_DRAIN, "shutdown: HTTP server did not drain; aborted");
            self.http.abort();
        }
        if let Some((_, mut rw)) = self.http_rw.take()
            && tokio::time::timeout(DEFAULT_DRAIN, &mut rw).await.is_err()
        {
            tracing::warn!(drain = ?DEFAULT_DRAIN, "shutdown: remote-write server did not drain; aborted");
            rw.abort();
        }
        let background = async { while self.background.join_next().await.is_some() {} };
        if tokio::time::timeout(DEFAULT_DRAIN, background)
            .await
            .is_err()
        {
            tracing::warn!(drain = ?DEFAULT_DRAIN, "shutdown: housekeeping did not stop; aborted");
            self.background.abort_all();
        }
        // Everything scraped or received is in the WAL now: the queues send it within the flush
        // deadline.
        self.shared.remote.shutdown().await;
        if let Some(front) = &self.shared.receive {
            front.receiver.tenants().close().await;
        }
        let db = self.shared.db.clone();
        match tokio::task::spawn_blocking(move || db.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "shutdown: compaction failed"),
            Err(e) => tracing::error!(error = %e, "shutdown: compaction task failed"),
        }
        if let Some(s) = self.shipper.take() {
            s.finish().await;
        }
        if let Some(grpc) = self.grpc.take() {
            grpc.stop(DEFAULT_DRAIN).await;
        }
        if let Some(w) = self.tls_watcher.take() {
            w.stop().await;
        }
        tracing::info!("edge stopped");
    }
}

/// The shipper of the edge's own TSDB, when blocks go to a bucket.
fn start_shipper(
    objstore: Option<Bucket>,
    db: &Arc<Db>,
    labels: &meridian_core::labels::Labels,
    opts: &ShipperOptions,
    registry: &mut Registry,
) -> anyhow::Result<Option<Arc<Shipper>>> {
    let Some(bucket) = objstore else {
        return Ok(None);
    };
    let s = Shipper::new(bucket, db.clone(), labels.clone(), opts.clone())?;
    s.metrics.register(registry);
    tracing::info!(bucket = %s.bucket().description, "shipping blocks to object storage");
    Ok(Some(Arc::new(s)))
}

/// The edge's own metrics besides the TSDB's: reloads and remote-write receiving.
fn register_edge_metrics(registry: &mut Registry) -> (ReloadMetrics, ReceiveMetrics) {
    let reload_metrics = ReloadMetrics::default();
    registry.register(
        "meridian_config_last_reload_successful",
        "Whether the last configuration reload attempt was successful",
        reload_metrics.last_successful.clone(),
    );
    registry.register(
        "meridian_config_last_reload_success_timestamp_seconds",
        "Timestamp of the last successful configuration reload",
        reload_metrics.last_success_timestamp.clone(),
    );
    let receive_metrics = ReceiveMetrics::default();
    receive_metrics.register(registry);
    (reload_metrics, receive_metrics)
}

/// The HTTP server, and the remote-write listener's when there is one (same endpoints, same TLS),
/// until `stop`.
#[allow(clippy::type_complexity)]
fn serve_web(
    shared: &Arc<Shared>,
    (http, remote_write): (TcpListener, Option<TcpListener>),
    tls: Option<Arc<meridian_pki::tls::server::ServerTls>>,
    web: meridian_pki::serve::WebLimits,
    stop: &CancellationToken,
) -> anyhow::Result<(
    tokio::task::JoinHandle<()>,
    Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
)> {
    let http_rw = match remote_write {
        None => None,
        Some(l) => Some((
            l.local_addr()?,
            tokio::spawn(meridian_pki::serve::serve_http(
                l,
                tls.clone(),
                router(shared.clone()),
                web,
                stop.clone(),
            )),
        )),
    };
    let http = tokio::spawn(meridian_pki::serve::serve_http(
        http,
        tls,
        router(shared.clone()),
        web,
        stop.clone(),
    ));
    Ok((http, http_rw))
}

/// The StoreAPI server over `store` (TLS from `tls`, reloaded), as a task with its TLS watcher.
pub(crate) fn serve_storeapi(
    store: Arc<dyn meridian_storeapi::Store>,
    listener: TcpListener,
    tls: Option<Arc<meridian_pki::tls::server::ServerTls>>,
    tls_reload_interval: Duration,
    options: meridian_storeapi::server::ServerOptions,
) -> anyhow::Result<(Task, Option<meridian_pki::tls::Watcher>)> {
    let grpc_stop = CancellationToken::new();
    let shutdown = grpc_stop.clone().cancelled_owned();
    let spawned = meridian_storeapi::server::spawn_with(
        store,
        listener,
        tls,
        tls_reload_interval,
        options,
        shutdown,
    )?;
    Ok((
        Task::from_parts("StoreAPI server", grpc_stop, spawned.task),
        spawned.tls_watcher,
    ))
}

/// The remote-write queues, following the TSDB's WAL (which keeps what they have not sent), with
/// their metrics registered and `cfg`'s entries started.
async fn start_remote_write(
    db: &Arc<Db>,
    (tsdb_path, config_file): (&Path, &Path),
    flush_deadline: Duration,
    metadata: &Arc<MetadataStore>,
    registry: &mut Registry,
    cfg: &Config,
) -> anyhow::Result<Arc<RemoteWrite>> {
    let remote = Arc::new(RemoteWrite::new(
        db.wal_dir(),
        tsdb_path.join("remote-write"),
        flush_deadline,
        metadata.clone(),
        crate::remote::Inflow {
            highest_ms: {
                let db = db.clone();
                Arc::new(move || db.head_max_time())
            },
            appended: db.metrics.samples_appended.clone(),
        },
    ));
    remote.metrics.register(registry);
    registry.register(
        "prometheus_remote_storage_samples_in",
        "Samples in to remote storage, compare to samples out for queue managers.",
        db.metrics.samples_appended.clone(),
    );
    db.set_wal_readers(remote.wal_readers());
    remote
        .apply(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_file.display()))?;
    Ok(remote)
}

/// Dropping an agent without [`Agent::shutdown`] still stops its servers and housekeeping (scrape loops
/// end with the runtime).
impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.monitors.root.cancel();
        if let Some(s) = &self.shipper {
            s.abandon.cancel();
            s.stop.cancel();
        }
        if let Some(grpc) = &self.grpc {
            grpc.cancel();
        }
    }
}

impl Shared {
    fn current_config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reloads; with `force` false only when the file's text changed. Returns whether it applied.
    async fn reload(self: &Arc<Self>, force: bool) -> Result<bool, String> {
        let _guard = self.reload_lock.lock().await;
        let text = match tokio::fs::read_to_string(&self.config_file).await {
            Ok(t) => t,
            Err(e) => {
                self.reload_metrics.last_successful.set(0);
                return Err(format!("{}: cannot read: {e}", self.config_file.display()));
            }
        };
        if !force
            && self
                .config
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .1
                == text
        {
            return Ok(false);
        }
        let result = async {
            let cfg = Config::parse_with_env(&text, |k| std::env::var(k).ok())
                .map_err(|e| format!("{}: {}", self.config_file.display(), e.message))?;
            self.scrape.apply(&self.effective(&cfg)).await?;
            self.remote.apply(&cfg).await?;
            Ok::<Config, String>(cfg)
        }
        .await;
        match result {
            Ok(cfg) => {
                log_config_warnings(&cfg);
                self.sync_monitors(&cfg);
                if cfg.external_labels != self.current_config().external_labels {
                    tracing::warn!(
                        "global.external_labels changed: the StoreAPI keeps announcing the labels it started with until the edge restarts"
                    );
                }
                *self
                    .config
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(cfg), text);
                self.reload_metrics.succeeded();
                tracing::info!(file = %self.config_file.display(), "configuration reloaded");
                Ok(true)
            }
            Err(e) => {
                // Remember the text so an unchanged bad file is not retried every few seconds.
                self.config
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .1 = text;
                self.reload_metrics.last_successful.set(0);
                tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in effect");
                Err(e)
            }
        }
    }
}

mod housekeeping;
mod http;
mod monitors;
mod receive_mode;
mod source;

pub(crate) use source::EdgeSource;

pub use receive_mode::ReceiveMode;
use receive_mode::{ReceiveFront, ReceiveSetup};

pub(crate) use housekeeping::housekeeping;
use housekeeping::{truncate_agent_wal, watch_config};
pub(crate) use http::metrics_page;
use http::router;
