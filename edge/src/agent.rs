//! The running edge: TSDB, scrape manager, remote-write receiver, HTTP server, configuration reloads and
//! TSDB housekeeping, with one owner for every task and an ordered shutdown.
//!
//! HTTP endpoints (one port): `/metrics`, `/-/healthy`, `/-/ready`, `POST|PUT /-/reload`,
//! `POST /api/v1/write` and `/api/v1/receive` (remote write), `GET /api/v1/targets` (Prometheus' shape).
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
use crate::scrape::ScrapeManager;
use meridian_core::labels::labels_json;
use meridian_core::promfmt::PromDuration;
use meridian_core::series::{SeriesSource, SourceSeries};
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
}

impl AgentOptions {
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
        }
    }
}

/// The running shipper: its task and the two ways to end it.
struct ShipperTask {
    shipper: Arc<Shipper>,
    stop: CancellationToken,
    abandon: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

/// What the edge's StoreAPI serves: the TSDB's series and the metadata scrapes and remote writes
/// brought.
struct EdgeSource {
    db: Arc<Db>,
    metadata: Arc<MetadataStore>,
}

impl SeriesSource for EdgeSource {
    fn select(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
    ) -> meridian_core::error::Result<Vec<SourceSeries>> {
        Ok(self.db.select(matchers, mint, maxt, with_data)?)
    }

    fn select_sorted(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
        with_data: bool,
        relabel: meridian_core::series::Relabel,
    ) -> meridian_core::error::Result<Box<dyn meridian_core::series::SeriesCursor>> {
        Ok(Box::new(
            self.db.cursor(matchers, mint, maxt, with_data, relabel),
        ))
    }

    fn time_range(&self) -> (i64, i64) {
        // The head is live: samples keep arriving after this answer, and a gateway asks a store only
        // when its announced range overlaps the query. As Thanos' sidecar and Receive do, the edge
        // announces no end (else samples written after the last `Info` are skipped without a warning
        // until the next one), and, before it holds any data, no start either.
        let (min, _) = self.db.time_range();
        (if min == i64::MAX { i64::MIN } else { min }, i64::MAX)
    }

    fn cheap_cost(
        &self,
        matchers: &[meridian_core::matcher::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Option<meridian_core::series::SelectCost> {
        self.db.cheap_cost(matchers, mint, maxt)
    }

    fn metadata(
        &self,
    ) -> Option<std::collections::BTreeMap<String, Vec<meridian_core::series::MetricMeta>>> {
        Some(self.metadata.all(std::time::Instant::now()))
    }

    fn serves_metadata(&self) -> bool {
        true
    }
}

/// Reload bookkeeping, exposed as metrics.
#[derive(Debug, Clone, Default)]
struct ReloadMetrics {
    last_successful: Gauge,
    last_success_timestamp: Gauge,
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
    registry: Registry,
    ready: AtomicBool,
}

/// A running edge.
pub struct Agent {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    stop: CancellationToken,
    http: tokio::task::JoinHandle<()>,
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
        let path = opts.tsdb_path.clone();
        let dbo = opts.db.clone();
        let db = Arc::new(tokio::task::spawn_blocking(move || Db::open(&path, dbo)).await??);
        let mut registry = Registry::default();
        db.metrics.register(&mut registry);
        meridian_core::process_metrics::register(&mut registry);
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
        receive_metrics.register(&mut registry);
        let series_gate =
            meridian_storeapi::server::SeriesGate::new(opts.grpc_series_max_concurrency);
        if let Some(g) = &series_gate {
            g.register(&mut registry);
        }
        let shipper = match opts.objstore {
            None => None,
            Some(bucket) => {
                let s = Shipper::new(
                    bucket,
                    db.clone(),
                    cfg.external_labels.clone(),
                    opts.shipper.clone(),
                )?;
                s.metrics.register(&mut registry);
                tracing::info!(bucket = %s.bucket().description, "shipping blocks to object storage");
                Some(Arc::new(s))
            }
        };
        let metadata = Arc::new(MetadataStore::new());
        let scrape = ScrapeManager::new(db.clone(), metadata.clone(), opts.discovery.clone());
        scrape.register(&mut registry);
        scrape
            .apply(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", opts.config_file.display()))?;
        reload_metrics.last_successful.set(1);
        reload_metrics.last_success_timestamp.set(now_secs());
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
            registry,
            ready: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let http_addr = opts.http_listener.local_addr()?;
        let app = router(shared.clone());
        let http_stop = stop.clone();
        let http = tokio::spawn(meridian_pki::serve::serve_http(
            opts.http_listener,
            opts.http_tls,
            app,
            opts.web,
            http_stop,
        ));
        let (mut grpc, mut grpc_addr, mut tls_watcher) = (None, None, None);
        if let Some(listener) = opts.grpc_listener {
            grpc_addr = Some(listener.local_addr()?);
            let external = shared.current_config().external_labels.clone();
            let store: Arc<dyn meridian_storeapi::Store> = Arc::new(
                LeafStore::from_source(
                    EdgeSource {
                        db: db.clone(),
                        metadata: metadata.clone(),
                    },
                    external,
                )
                .with_limits(opts.grpc_series_limits),
            );
            let grpc_stop = CancellationToken::new();
            let shutdown = grpc_stop.clone().cancelled_owned();
            let spawned = meridian_storeapi::server::spawn_with(
                store,
                listener,
                opts.grpc_tls,
                opts.grpc_tls_reload_interval,
                meridian_storeapi::server::ServerOptions { series_gate },
                shutdown,
            )?;
            tls_watcher = spawned.tls_watcher;
            let task = spawned.task;
            grpc = Some(Task::from_parts("StoreAPI server", grpc_stop, task));
        }
        let mut background = tokio::task::JoinSet::new();
        background.spawn(housekeeping(
            db,
            shipper.as_ref().map(|s| s.waker()),
            stop.clone(),
        ));
        let shipper = shipper.map(|s| {
            let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
            let task = tokio::spawn(s.clone().run(stop.clone(), abandon.clone()));
            ShipperTask {
                shipper: s,
                stop,
                abandon,
                task,
                grace: opts.shipper_shutdown_timeout,
            }
        });
        if opts.watch_config {
            background.spawn(watch_config(shared.clone(), stop.clone()));
        }
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(http = %http_addr, grpc = ?grpc_addr, "edge started");
        Ok(Agent {
            shared,
            http_addr,
            grpc_addr,
            stop,
            http,
            grpc,
            tls_watcher,
            background,
            shipper,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
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

    /// The shipper, when blocks are uploaded.
    pub fn shipper(&self) -> Option<&Arc<Shipper>> {
        self.shipper.as_ref().map(|s| &s.shipper)
    }

    /// Ordered shutdown: not ready, stop scraping (loops finish their current append), stop the HTTP
    /// server (in-flight remote writes complete), stop housekeeping; cut the blocks that are due (the
    /// rest of the head is in the WAL); let the shipper finish uploading within its grace period, then
    /// abandon the upload (it is redone from the start at the next start, and no `meta.json` of it
    /// exists); then stop the StoreAPI server (queries in flight finish) and the TLS watcher. The TSDB
    /// closes when the last handle goes.
    pub async fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        self.shared.scrape.stop().await;
        self.stop.cancel();
        if tokio::time::timeout(DEFAULT_DRAIN, &mut self.http)
            .await
            .is_err()
        {
            tracing::warn!(drain = ?DEFAULT_DRAIN, "shutdown: HTTP server did not drain; aborted");
            self.http.abort();
        }
        let background = async { while self.background.join_next().await.is_some() {} };
        if tokio::time::timeout(DEFAULT_DRAIN, background)
            .await
            .is_err()
        {
            tracing::warn!(drain = ?DEFAULT_DRAIN, "shutdown: housekeeping did not stop; aborted");
            self.background.abort_all();
        }
        let db = self.shared.db.clone();
        match tokio::task::spawn_blocking(move || db.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "shutdown: compaction failed"),
            Err(e) => tracing::error!(error = %e, "shutdown: compaction task failed"),
        }
        if let Some(mut s) = self.shipper.take() {
            s.stop.cancel();
            if tokio::time::timeout(s.grace, &mut s.task).await.is_err() {
                tracing::warn!(grace = ?s.grace, "shutdown: abandoning the running upload");
                s.abandon.cancel();
                let _ = s.task.await;
            }
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

/// Dropping an agent without [`Agent::shutdown`] still stops its servers and housekeeping (scrape loops
/// end with the runtime).
impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
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
    async fn reload(&self, force: bool) -> Result<bool, String> {
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
            self.scrape.apply(&cfg).await?;
            Ok::<Config, String>(cfg)
        }
        .await;
        match result {
            Ok(cfg) => {
                log_config_warnings(&cfg);
                if cfg.external_labels != self.current_config().external_labels {
                    tracing::warn!(
                        "global.external_labels changed: the StoreAPI keeps announcing the labels it started with until the edge restarts"
                    );
                }
                *self
                    .config
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(cfg), text);
                self.reload_metrics.last_successful.set(1);
                self.reload_metrics.last_success_timestamp.set(now_secs());
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

/// Compaction, retention and TSDB gauges, once a minute (and once at start); new blocks wake the
/// shipper.
async fn housekeeping(
    db: Arc<Db>,
    shipper: Option<Arc<tokio::sync::Notify>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let db = db.clone();
        let r = tokio::task::spawn_blocking(move || {
            let new = db.compact()?;
            db.apply_retention()?;
            db.refresh_metrics();
            Ok::<bool, meridian_tsdb::db::DbError>(!new.is_empty())
        })
        .await;
        match r {
            Ok(Ok(new_blocks)) => {
                if let (true, Some(w)) = (new_blocks, &shipper) {
                    w.notify_one();
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "TSDB housekeeping failed"),
            Err(e) => tracing::error!(error = %e, "TSDB housekeeping task failed"),
        }
    }
}

async fn watch_config(shared: Arc<Shared>, stop: CancellationToken) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let dir = shared
        .config_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watcher = meridian_core::fswatch::watcher(move |_| {
        let _ = tx.try_send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; checking every 10s");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = rx.recv() => {
                // Let an editor's write or a symlink swap finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let _ = shared.reload(false).await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.receive_limits.max_body_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/-/healthy",
            get(|| async { "Meridian edge is Healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/receive", post(remote_write))
        .route("/api/v1/targets", get(targets))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "Meridian edge is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn reload(State(s): State<Arc<Shared>>) -> Response {
    match s.reload(true).await {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn remote_write(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let Err(a) = receive::check_headers(h(header::CONTENT_TYPE), h(header::CONTENT_ENCODING)) {
        s.receive_metrics
            .requests
            .get_or_create(&receive::CodeLabel { code: a.status })
            .inc();
        return answer(a);
    }
    let shared = s.clone();
    let res = tokio::task::spawn_blocking(move || {
        receive::write(
            &shared.db,
            &shared.metadata,
            &body,
            shared.receive_limits,
            &shared.receive_metrics,
        )
    })
    .await;
    match res {
        Ok(a) => answer(a),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn answer(a: receive::Answer) -> Response {
    let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if a.status >= 400 {
        tracing::debug!(status = a.status, message = %a.message, "remote write refused");
    }
    (code, a.message).into_response()
}

#[derive(serde::Deserialize)]
struct TargetsQuery {
    state: Option<String>,
}

/// `GET /api/v1/targets`, as Prometheus answers it.
async fn targets(State(s): State<Arc<Shared>>, Query(q): Query<TargetsQuery>) -> Response {
    let state = q.state.as_deref().unwrap_or("any");
    if !matches!(state, "any" | "active" | "dropped") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "status": "error", "errorType": "bad_data",
                "error": format!("invalid state {state:?}: use active, dropped or any"),
            })),
        )
            .into_response();
    }
    let snap = s.scrape.targets().await;
    let mut active = Vec::new();
    if state != "dropped" {
        for a in &snap.active {
            let h = &a.health;
            let health = match (&h.last_scrape, &h.last_error) {
                (None, _) => "unknown",
                (Some(_), None) => "up",
                (Some(_), Some(_)) => "down",
            };
            active.push(serde_json::json!({
                "discoveredLabels": labels_json(&a.target.discovered),
                "labels": labels_json(&a.target.public_labels()),
                "scrapePool": a.pool,
                "scrapeUrl": a.url,
                "globalUrl": a.url,
                // A scrape whose samples were partly refused (e.g. out of bounds) is up, with the
                // refusal as its error text.
                "lastError": h.last_error.clone().or_else(|| h.last_warning.clone()).unwrap_or_default(),
                "lastScrape": rfc3339(h.last_scrape),
                "lastScrapeDuration": h.last_duration.as_secs_f64(),
                "health": health,
                "scrapeInterval": PromDuration::format(a.target.interval),
                "scrapeTimeout": PromDuration::format(a.target.timeout),
            }));
        }
    }
    let mut dropped = Vec::new();
    if state != "active" {
        for (_, d) in &snap.dropped {
            dropped.push(serde_json::json!({ "discoveredLabels": labels_json(&d.discovered) }));
        }
    }
    axum::Json(serde_json::json!({
        "status": "success",
        "data": { "activeTargets": active, "droppedTargets": dropped },
    }))
    .into_response()
}
