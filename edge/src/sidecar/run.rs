//! The running sidecar (`meridian-edge sidecar`): wiring, start-up checks and ordered shutdown, as
//! Thanos' `cmd/thanos/sidecar.go` (v0.25.1) runs them.
//!
//! Start: Prometheus is asked for its version, external labels and oldest sample every 2 s until it
//! answers or `--prometheus.ready_timeout` passes; without external labels the sidecar refuses to
//! start (they keep clusters and replicas apart). With a bucket, Prometheus' flags are checked: its
//! own compaction must be off (min = max block duration), or the blocks the shipper uploads would be
//! compacted under it. Then the HTTP server (metrics, health, readiness), the StoreAPI, the
//! heartbeat (external labels and oldest sample every 30 s, `thanos_sidecar_prometheus_up`), the
//! follower of Prometheus' WAL (unless `--tsdb.read-wal=false`), the reloader and the shipper.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::blocks::{PromBlocks, ShippedBlocks};
use super::head::HeadReader;
use super::prom::PromClient;
use super::reloader::{self, HttpTrigger, Reloader};
use super::store::{PromState, SidecarStore};
use crate::agent::{ShipperTask, metrics_page, serve_storeapi};
use meridian_core::runtime::{DEFAULT_DRAIN, Task};
use meridian_storeapi::leaf::SeriesLimits;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::{Shipper, ShipperOptions};

/// How often Prometheus is asked again while the sidecar starts (Thanos: 2 s).
const START_RETRY: Duration = Duration::from_secs(2);
/// How often the external labels and the oldest sample are read again (Thanos: 30 s).
const HEARTBEAT: Duration = Duration::from_secs(30);
/// One heartbeat's time limit (Thanos: 5 s).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `meridian-edge sidecar` was given.
#[derive(Debug)]
pub struct SidecarOptions {
    pub prometheus: PromClient,
    pub ready_timeout: Duration,
    pub tsdb_path: PathBuf,
    pub http_listener: TcpListener,
    pub http_tls: Option<Arc<meridian_pki::tls::ServerTls>>,
    pub web: meridian_pki::serve::WebLimits,
    pub grpc_listener: TcpListener,
    pub grpc_tls: Option<Arc<meridian_pki::tls::ServerTls>>,
    pub grpc_tls_reload_interval: Duration,
    pub series_max_concurrency: usize,
    pub series_limits: SeriesLimits,
    pub objstore: Option<Bucket>,
    pub upload_compacted: bool,
    pub shipper_shutdown_timeout: Duration,
    pub min_time: i64,
    pub reloader: reloader::Options,
    pub max_read_bytes: usize,
    /// Answer the head's range from Prometheus' WAL under `tsdb_path` (`--tsdb.read-wal`).
    pub read_wal: bool,
}

/// The sidecar's gauges of its Prometheus (Thanos' names).
#[derive(Debug, Clone, Default)]
struct PromMetrics {
    up: Gauge,
    last_heartbeat: Gauge<f64, std::sync::atomic::AtomicU64>,
}

struct Shared {
    registry: Registry,
    ready: AtomicBool,
}

/// See the module documentation.
pub struct Sidecar {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    http: Task,
    grpc: Task,
    tls_watcher: Option<meridian_pki::tls::Watcher>,
    heartbeat: Task,
    wal_follower: Option<Task>,
    reloader: tokio::task::JoinHandle<Result<(), reloader::ReloaderError>>,
    shipper: Option<ShipperTask>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("http", &self.http_addr)
            .field("grpc", &self.grpc_addr)
            .finish_non_exhaustive()
    }
}

/// Thanos' words for a Prometheus without external labels.
const NO_EXTERNAL_LABELS: &str = "no external labels configured on Prometheus server, uniquely identifying external labels must be configured; see https://thanos.io/tip/thanos/storage.md#external-labels for details.";

/// Asks Prometheus until it answers with external labels or `timeout` passes. Unlike Thanos, which
/// gives up at the first answer without labels, an answer without them is asked again too: the
/// reloader, running meanwhile, may be about to give Prometheus the config that has them.
async fn first_contact(
    prom: &PromClient,
    state: &PromState,
    timeout: Duration,
) -> anyhow::Result<meridian_core::labels::Labels> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last_try = tokio::time::Instant::now() + START_RETRY > deadline;
        match state.refresh(prom).await {
            Ok(labels) if !labels.is_empty() => return Ok(labels),
            Ok(_) if last_try => anyhow::bail!(NO_EXTERNAL_LABELS),
            Ok(_) => {
                tracing::warn!("Prometheus has no external labels (yet); retrying");
            }
            Err(e) if last_try => {
                anyhow::bail!(
                    "Prometheus did not answer within --prometheus.ready_timeout={timeout:?}: {e}"
                );
            }
            Err(e) => {
                tracing::warn!(err = %e, "failed to fetch initial external labels. Is Prometheus running? Retrying");
            }
        }
        tokio::time::sleep(START_RETRY).await;
    }
}

/// Refuses a bucket when Prometheus compacts its own blocks (Thanos' check; Prometheus ≥ 3.9 may
/// instead delay compaction with `--storage.tsdb.delay-compact-file.path`).
async fn check_compaction_off(prom: &PromClient) -> anyhow::Result<()> {
    let flags = prom.flags().await?;
    if flags
        .get("storage.tsdb.delay-compact-file.path")
        .is_some_and(|p| !p.is_empty())
    {
        return Ok(());
    }
    let min = flags.get("storage.tsdb.min-block-duration");
    let max = flags.get("storage.tsdb.max-block-duration");
    if min.is_none() || min != max {
        anyhow::bail!(
            "found that TSDB Max time is {} and Min time is {}. Compaction needs to be disabled (storage.tsdb.min-block-duration = storage.tsdb.max-block-duration)",
            max.map_or("unset", String::as_str),
            min.map_or("unset", String::as_str)
        );
    }
    Ok(())
}

/// The shipper of Prometheus' blocks when a bucket is configured (after checking that Prometheus
/// does not compact them), its metrics registered.
async fn start_shipper(
    prom: &PromClient,
    objstore: Option<Bucket>,
    tsdb_path: &std::path::Path,
    upload_compacted: bool,
    labels: meridian_core::labels::Labels,
    registry: &mut Registry,
) -> anyhow::Result<Option<Arc<Shipper>>> {
    let Some(bucket) = objstore else {
        tracing::info!("no supported bucket was configured, uploads will be disabled");
        return Ok(None);
    };
    check_compaction_off(prom).await?;
    let local = Arc::new(ShippedBlocks {
        dir: tsdb_path.to_owned(),
        upload_compacted,
    });
    let s = Shipper::over(bucket, local, labels, ShipperOptions::default())?;
    s.metrics.register(registry);
    tracing::info!(bucket = %s.bucket().description, "starting sidecar uploads");
    Ok(Some(Arc::new(s)))
}

impl Sidecar {
    /// Starts the reloader first, as Thanos runs it beside the wait for Prometheus: the config it
    /// renders may be what gives Prometheus its external labels.
    pub async fn start(opts: SidecarOptions) -> anyhow::Result<Sidecar> {
        let prom = Arc::new(opts.prometheus);
        let stop = CancellationToken::new();
        let reload_metrics = reloader::Metrics::default();
        let mut reloader = tokio::spawn(
            Reloader::new(
                opts.reloader,
                Arc::new(HttpTrigger::new((*prom).clone())),
                reload_metrics.clone(),
            )
            .run(stop.clone()),
        );
        let state = Arc::new(PromState::default());
        let labels = tokio::select! {
            r = first_contact(&prom, &state, opts.ready_timeout) => r,
            r = &mut reloader => Err(match r {
                Ok(Ok(())) => anyhow::anyhow!("the reloader stopped"),
                Ok(Err(e)) => e.into(),
                Err(e) => anyhow::anyhow!("reloader task failed: {e}"),
            }),
        };
        let labels = match labels {
            Ok(l) => l,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        tracing::info!(external_labels = %labels, "successfully loaded prometheus external labels");
        let mut registry = Registry::default();
        meridian_core::process_metrics::register(&mut registry);
        let prom_metrics = PromMetrics::default();
        prom_metrics.up.set(1);
        prom_metrics
            .last_heartbeat
            .set(meridian_core::time::now_ms() as f64 / 1000.0);
        let thanos = registry.sub_registry_with_prefix("thanos_sidecar");
        thanos.register(
            "prometheus_up",
            "Boolean indicator whether the sidecar can reach its Prometheus peer.",
            prom_metrics.up.clone(),
        );
        thanos.register(
            "last_heartbeat_success_time_seconds",
            "Timestamp of the last successful heartbeat in seconds.",
            prom_metrics.last_heartbeat.clone(),
        );
        reload_metrics.register(thanos);
        let shipper = match start_shipper(
            &prom,
            opts.objstore,
            &opts.tsdb_path,
            opts.upload_compacted,
            labels,
            &mut registry,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        let head_reader = Arc::new(HeadReader::new(
            opts.read_wal.then_some(opts.tsdb_path.as_path()),
        ));
        head_reader.register(&mut registry);
        let store = SidecarStore::new(
            prom.clone(),
            Arc::new(PromBlocks::new(opts.tsdb_path.clone())),
            state.clone(),
            head_reader.clone(),
            opts.min_time,
            opts.series_limits,
            opts.max_read_bytes,
        );
        let series_gate = meridian_storeapi::server::SeriesGate::new(opts.series_max_concurrency);
        if let Some(g) = &series_gate {
            g.register(&mut registry);
        }
        let grpc_addr = opts.grpc_listener.local_addr()?;
        let (grpc, tls_watcher) = serve_storeapi(
            Arc::new(store),
            opts.grpc_listener,
            opts.grpc_tls,
            opts.grpc_tls_reload_interval,
            meridian_storeapi::server::ServerOptions {
                series_gate,
                writer: None,
            },
        )?;
        let shared = Arc::new(Shared {
            registry,
            ready: AtomicBool::new(true),
        });
        let http_addr = opts.http_listener.local_addr()?;
        let http = Task::spawn("sidecar HTTP server", |http_stop| {
            meridian_pki::serve::serve_http(
                opts.http_listener,
                opts.http_tls,
                router(shared.clone()),
                opts.web,
                http_stop,
            )
        });
        let heartbeat = {
            let (prom, state, shared) = (prom.clone(), state.clone(), shared.clone());
            let shipper = shipper.clone();
            Task::spawn("sidecar heartbeat", move |stop| async move {
                heartbeat(
                    &prom,
                    &state,
                    &shared,
                    prom_metrics,
                    shipper.as_deref(),
                    stop,
                )
                .await;
            })
        };
        let wal_follower = head_reader.follow();
        let shipper = shipper.map(|s| ShipperTask::start(s, opts.shipper_shutdown_timeout));
        tracing::info!(http = %http_addr, grpc = %grpc_addr, "sidecar started");
        Ok(Sidecar {
            http_addr,
            grpc_addr,
            shared,
            stop,
            http,
            grpc,
            tls_watcher,
            heartbeat,
            wal_follower,
            reloader,
            shipper,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Resolves when the reloader ends on its own: its first apply failed or its watches could not
    /// be set up (Thanos' sidecar exits then too). Resolves with `Ok` only when it was stopped.
    pub async fn reloader_ended(&mut self) -> anyhow::Result<()> {
        match (&mut self.reloader).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(anyhow::anyhow!("reloader task failed: {e}")),
        }
    }

    /// Not ready; HTTP, heartbeat and reloader stopped; a last upload within its grace; then the
    /// StoreAPI.
    pub async fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        self.stop.cancel();
        self.http.stop(DEFAULT_DRAIN).await;
        self.heartbeat.stop(DEFAULT_DRAIN).await;
        if let Some(t) = self.wal_follower.take() {
            t.stop(DEFAULT_DRAIN).await;
        }
        if !self.reloader.is_finished()
            && tokio::time::timeout(DEFAULT_DRAIN, &mut self.reloader)
                .await
                .is_err()
        {
            self.reloader.abort();
        }
        if let Some(s) = self.shipper.take() {
            s.finish().await;
        }
        self.grpc.stop(DEFAULT_DRAIN).await;
        if let Some(w) = self.tls_watcher.take() {
            w.stop().await;
        }
        tracing::info!("sidecar stopped");
    }
}

/// Every 30 s: external labels and the oldest sample again (also the shipper's labels); readiness
/// and `prometheus_up` follow whether Prometheus answered.
async fn heartbeat(
    prom: &PromClient,
    state: &PromState,
    shared: &Shared,
    metrics: PromMetrics,
    shipper: Option<&Shipper>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, state.refresh(prom)).await {
            Ok(Ok(labels)) => {
                metrics.up.set(1);
                metrics
                    .last_heartbeat
                    .set(meridian_core::time::now_ms() as f64 / 1000.0);
                shared.ready.store(true, Ordering::SeqCst);
                if let Some(s) = shipper {
                    s.set_external_labels(labels);
                }
            }
            Ok(Err(e)) => {
                metrics.up.set(0);
                shared.ready.store(false, Ordering::SeqCst);
                tracing::warn!(err = %e, "heartbeat failed");
            }
            Err(_) => {
                metrics.up.set(0);
                shared.ready.store(false, Ordering::SeqCst);
                tracing::warn!(timeout = ?HEARTBEAT_TIMEOUT, "heartbeat failed: Prometheus did not answer in time");
            }
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move { metrics_page(&s.registry) }),
        )
        .route(
            "/-/healthy",
            get(|| async { "Meridian sidecar is Healthy.\n" }),
        )
        .route("/-/ready", get(ready))
        .with_state(shared)
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "Meridian sidecar is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}
