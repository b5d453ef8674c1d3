//! A receiver in a hashring: routes each remote-write request's series to the nodes that own them,
//! writes its own share into the tenant's TSDB, forwards the rest over gRPC
//! (`thanos.WriteableStore/RemoteWrite`, mTLS when configured), and answers from the per-series
//! write quorum ([`super::route`]).
//!
//! Modes, as Thanos Receive's `determineMode` (v0.25.1 `cmd/thanos/receive.go`):
//! - hashring and `--receive.local-endpoint`: router and ingestor; a forwarded request (replica > 0)
//!   is routed to the one replica it names;
//! - hashring only: router; the incoming replica is ignored (a router never stores);
//! - no hashring: ingestor; everything is stored here and the replica is ignored.
//!
//! Every write of a request runs as its own task bounded by `--receive-forward-timeout` (5 s); the
//! answer is given as soon as every series reached its quorum or can no longer, and the other writes
//! finish in the background (a third replica still gets its copy), as Thanos does. A peer that
//! answers `Unavailable` (or cannot be reached) is backed off exponentially from 100 ms to 5 s
//! (Thanos HEAD `--receive-forward-max-backoff`); writes to it fail at once meanwhile. A hashring
//! change clears the backoffs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_pki::channel::GrpcChannel;
use meridian_pki::tls::client::ClientTls;
use meridian_storeapi::proto::prometheus::TimeSeries;
use meridian_storeapi::proto::thanos as pb;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;

use super::hashring::{Algorithm, Hashrings, series_hash_of};
use super::route::{Outcome, Tally, plan};
use super::tenants::{Tenants, validate_tenant};
use super::{ReceiveMetrics, ResultLabel, store_series};

/// Backoff of a peer that answered `Unavailable`: first and largest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a receiver routes and forwards.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// `--receive.local-endpoint`: this node's address in the hashring.
    pub local_endpoint: Option<String>,
    /// `--receive-forward-timeout`: bounds every write of a request.
    pub forward_timeout: Duration,
    /// TLS for forwarding (`--remote-write.client-tls-*`) and the server name to verify.
    pub client_tls: Option<(Arc<ClientTls>, Option<String>)>,
    pub connect_timeout: Duration,
    /// Largest forwarded request sent or accepted.
    pub max_message_bytes: usize,
    /// `--receive.default-tenant-id`, for gRPC requests naming no tenant.
    pub default_tenant: String,
}

struct Peer {
    channel: GrpcChannel,
    /// Until when writes fail at once, and the next wait.
    backoff: Option<(Instant, Duration)>,
}

struct Inner {
    opts: ReceiverOptions,
    rings: RwLock<Option<Arc<Hashrings>>>,
    tenants: Arc<Tenants>,
    peers: Mutex<HashMap<String, Peer>>,
    metrics: ReceiveMetrics,
    forwards: Family<ResultLabel, Counter>,
}

/// A receiver. See the module documentation.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("local_endpoint", &self.inner.opts.local_endpoint)
            .finish_non_exhaustive()
    }
}

/// The remote-write status of an error (Thanos Receive's answers: 409 conflict, 503 unavailable,
/// 400 bad request, 413 too large, 429 over a limit, 500 otherwise).
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Conflict => 409,
        ErrorKind::Unavailable | ErrorKind::Timeout => 503,
        ErrorKind::BadData => 400,
        ErrorKind::LimitExceeded => 429,
        _ => 500,
    }
}

fn result_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Stored => "stored",
        Outcome::Conflict(_) => "conflict",
        Outcome::Unavailable(_) => "unavailable",
        Outcome::Invalid(_) => "invalid",
        Outcome::Failed(_) => "failed",
    }
}

impl Receiver {
    /// A receiver over `tenants`, routing by `rings` (`None`: no hashring, everything local).
    pub fn new(
        opts: ReceiverOptions,
        rings: Option<Hashrings>,
        tenants: Arc<Tenants>,
        metrics: ReceiveMetrics,
    ) -> Receiver {
        Receiver {
            inner: Arc::new(Inner {
                opts,
                rings: RwLock::new(rings.map(Arc::new)),
                tenants,
                peers: Mutex::new(HashMap::new()),
                metrics,
                forwards: Family::default(),
            }),
        }
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_receive_forward_requests",
            "Writes of routed remote-write requests to hashring nodes (this one included), by result: stored, conflict, unavailable, invalid, failed",
            self.inner.forwards.clone(),
        );
        r.register(
            "meridian_receive_tenants",
            "Tenants whose TSDB is open on this receiver",
            self.inner.tenants.count.clone(),
        );
    }

    pub fn tenants(&self) -> &Arc<Tenants> {
        &self.inner.tenants
    }

    fn rings(&self) -> Option<Arc<Hashrings>> {
        self.inner
            .rings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Routes by a new hashring configuration from now on (and forgets the peers' backoffs).
    pub fn set_rings(&self, rings: Hashrings) {
        *self
            .inner
            .rings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(rings));
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in peers.values_mut() {
            p.backoff = None;
        }
    }

    /// The external labels the hashring gives `tenant`.
    pub fn hashring_labels(&self, tenant: &str) -> Labels {
        self.rings()
            .map(|r| r.tenant_labels(tenant))
            .unwrap_or_else(Labels::empty)
    }

    /// Writes one request of `tenant`; `replica`: the 1-based replica a forwarded request carries
    /// (0: not yet replicated). `Ok` when every series reached its write quorum.
    pub async fn write(
        &self,
        tenant: &str,
        series: Vec<TimeSeries>,
        replica: u64,
    ) -> Result<(), Error> {
        validate_tenant(tenant).map_err(Error::bad_data)?;
        if series.is_empty() {
            return Ok(());
        }
        let Some(rings) = self.rings() else {
            return match self.write_local(tenant, series).await {
                Outcome::Stored => Ok(()),
                o => Err(outcome_error(o)),
            };
        };
        // A router that stores nothing itself never takes a replica number from a request.
        let replica = if self.inner.opts.local_endpoint.is_none() {
            0
        } else {
            replica
        };
        let mut buf = Vec::new();
        let hashes: Vec<u64> = series
            .iter()
            .map(|ts| {
                series_hash_of(
                    tenant,
                    ts.labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str())),
                    &mut buf,
                )
            })
            .collect();
        let routes = plan(&rings, tenant, &hashes, replica).map_err(|e| {
            let kind = match e.status() {
                400 => ErrorKind::BadData,
                _ => ErrorKind::Internal,
            };
            Error::new(kind, e.to_string())
        })?;
        let writes = if replica == 0 { rings.replication } else { 1 };
        let mut tally = Tally::new(series.len(), writes);
        // A request routed whole to this node (a forwarded copy, or RF=1 landing home) is written
        // here and now.
        if routes.len() == 1
            && let Some((endpoint, _)) = routes.keys().next()
            && self.inner.opts.local_endpoint.as_deref() == Some(endpoint.as_str())
        {
            let idx: Vec<usize> = (0..series.len()).collect();
            let outcome = self.write_local(tenant, series).await;
            self.count(&outcome);
            tally.record(&idx, &outcome);
            return answer(&tally);
        }
        // Each series is moved into its last write and cloned for the others.
        let mut uses = vec![0usize; series.len()];
        for idx in routes.values() {
            for &i in idx {
                uses[i] += 1;
            }
        }
        let mut series: Vec<Option<TimeSeries>> = series.into_iter().map(Some).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(routes.len().max(1));
        let timeout = self.inner.opts.forward_timeout;
        for ((endpoint, n), idx) in routes {
            let sub: Vec<TimeSeries> = idx
                .iter()
                .map(|&i| {
                    uses[i] -= 1;
                    if uses[i] == 0 {
                        series[i].take().unwrap_or_default()
                    } else {
                        series[i].clone().unwrap_or_default()
                    }
                })
                .collect();
            let (me, tx, tenant) = (self.clone(), tx.clone(), tenant.to_owned());
            tokio::spawn(async move {
                let local = me.inner.opts.local_endpoint.as_deref() == Some(endpoint.as_str());
                let work = async {
                    if local {
                        me.write_local(&tenant, sub).await
                    } else {
                        me.forward(&endpoint, &tenant, sub, n as u64 + 1).await
                    }
                };
                let outcome = tokio::time::timeout(timeout, work)
                    .await
                    .unwrap_or_else(|_| {
                        Outcome::Unavailable(format!(
                            "writing to endpoint {endpoint}: no answer within {timeout:?}"
                        ))
                    });
                me.count(&outcome);
                let _ = tx.send((idx, outcome)).await;
            });
        }
        drop(tx);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some((idx, o)) => {
                        tally.record(&idx, &o);
                        if tally.decided() {
                            break;
                        }
                    }
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        answer(&tally)
    }

    fn count(&self, outcome: &Outcome) {
        self.inner
            .forwards
            .get_or_create(&ResultLabel {
                result: result_name(outcome),
            })
            .inc();
    }

    /// Stores series into the tenant's TSDB (opened on first use).
    async fn write_local(&self, tenant: &str, series: Vec<TimeSeries>) -> Outcome {
        let t = match self
            .inner
            .tenants
            .get(tenant, self.hashring_labels(tenant))
            .await
        {
            Ok(t) => t,
            Err(e) if e.kind == ErrorKind::BadData => return Outcome::Invalid(e.message),
            Err(e) if e.kind == ErrorKind::Unavailable => {
                return Outcome::Unavailable(format!("writing locally: {}", e.message));
            }
            Err(e) => return Outcome::Failed(format!("writing locally: {}", e.message)),
        };
        t.touch();
        let metrics = self.inner.metrics.clone();
        let res = tokio::task::spawn_blocking(move || store_series(&t.db, &series, &metrics)).await;
        match res {
            Ok(a) if a.status < 300 => Outcome::Stored,
            // Refused samples (out of order, duplicate, out of bounds, bad labels) are conflicts,
            // as in Thanos: the rest of the batch is stored.
            Ok(a) if a.status == 400 => {
                Outcome::Conflict(format!("writing locally: {}", a.message))
            }
            Ok(a) => Outcome::Failed(format!("writing locally: {}", a.message)),
            Err(e) => Outcome::Failed(format!("writing locally: {e}")),
        }
    }

    /// The channel to a peer, or why it is not tried now.
    fn peer(&self, endpoint: &str) -> Result<GrpcChannel, Outcome> {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = peers.get(endpoint) {
            if let Some((until, _)) = p.backoff
                && Instant::now() < until
            {
                return Err(Outcome::Unavailable(format!(
                    "backing off forward request for endpoint {endpoint}: target not available"
                )));
            }
            return Ok(p.channel.clone());
        }
        let o = &self.inner.opts;
        let channel = match &o.client_tls {
            Some((tls, server_name)) => tls
                .channel_lazy(endpoint, server_name.as_deref(), o.connect_timeout)
                .map_err(|e| e.to_string()),
            None => GrpcChannel::plaintext_lazy(endpoint, Some(o.connect_timeout)),
        }
        .map_err(|e| Outcome::Failed(format!("endpoint {endpoint}: {e}")))?;
        peers.insert(
            endpoint.to_owned(),
            Peer {
                channel: channel.clone(),
                backoff: None,
            },
        );
        Ok(channel)
    }

    fn peer_result(&self, endpoint: &str, unavailable: bool) {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = peers.get_mut(endpoint) {
            p.backoff = unavailable.then(|| {
                let wait = p
                    .backoff
                    .map_or(BACKOFF_MIN, |(_, w)| (w * 2).min(BACKOFF_MAX));
                (Instant::now() + wait, wait)
            });
        }
    }

    /// Sends series to a peer as replica `replica` (1-based).
    async fn forward(
        &self,
        endpoint: &str,
        tenant: &str,
        series: Vec<TimeSeries>,
        replica: u64,
    ) -> Outcome {
        let channel = match self.peer(endpoint) {
            Ok(c) => c,
            Err(o) => return o,
        };
        let max = self.inner.opts.max_message_bytes;
        let mut client = pb::writeable_store_client::WriteableStoreClient::new(channel)
            .max_encoding_message_size(max)
            .max_decoding_message_size(max);
        let req = pb::WriteRequest {
            timeseries: series,
            tenant: tenant.to_owned(),
            replica: i64::try_from(replica).unwrap_or(i64::MAX),
        };
        let why = |s: &tonic::Status| {
            format!("forwarding request to endpoint {endpoint}: {}", s.message())
        };
        match client.remote_write(req).await {
            Ok(_) => {
                self.peer_result(endpoint, false);
                Outcome::Stored
            }
            Err(s) => {
                tracing::debug!(endpoint, code = ?s.code(), message = s.message(), "forward failed");
                let unavailable = s.code() == tonic::Code::Unavailable;
                self.peer_result(endpoint, unavailable);
                match s.code() {
                    tonic::Code::AlreadyExists => Outcome::Conflict(why(&s)),
                    tonic::Code::Unavailable => Outcome::Unavailable(why(&s)),
                    tonic::Code::InvalidArgument => Outcome::Invalid(why(&s)),
                    _ => Outcome::Failed(why(&s)),
                }
            }
        }
    }
}

/// The request's answer from its series' outcomes.
fn answer(tally: &Tally) -> Result<(), Error> {
    match tally.answer() {
        (200, _) => Ok(()),
        (status, message) => Err(Error::new(
            match status {
                503 => ErrorKind::Unavailable,
                409 => ErrorKind::Conflict,
                400 => ErrorKind::BadData,
                _ => ErrorKind::Internal,
            },
            message,
        )),
    }
}

/// The error a single write's outcome stands for.
fn outcome_error(o: Outcome) -> Error {
    match o {
        Outcome::Stored => Error::internal("stored"),
        Outcome::Conflict(m) => Error::new(ErrorKind::Conflict, m),
        Outcome::Unavailable(m) => Error::new(ErrorKind::Unavailable, m),
        Outcome::Invalid(m) => Error::bad_data(m),
        Outcome::Failed(m) => Error::internal(m),
    }
}

#[async_trait::async_trait]
impl meridian_storeapi::writer::RemoteWriter for Receiver {
    async fn remote_write(&self, req: pb::WriteRequest) -> meridian_core::error::Result<()> {
        let tenant = if req.tenant.is_empty() {
            self.inner.opts.default_tenant.clone()
        } else {
            req.tenant
        };
        let replica = u64::try_from(req.replica).map_err(|_| {
            Error::bad_data(format!(
                "request replica {} is negative: it is 1-based, 0 for a request not yet replicated",
                req.replica
            ))
        })?;
        self.write(&tenant, req.timeseries, replica).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.opts.max_message_bytes
    }
}

/// Where the hashring configuration comes from, for reloads.
#[derive(Debug, Clone)]
pub struct HashringSource {
    /// `--receive.hashrings-file`.
    pub file: PathBuf,
    pub algorithm: Algorithm,
    pub replication: usize,
    /// `--receive.hashrings-file-refresh-interval`.
    pub refresh: Duration,
}

impl HashringSource {
    /// Reads and builds the file's hashrings.
    pub fn load(&self) -> Result<(Hashrings, String), String> {
        let text = std::fs::read_to_string(&self.file)
            .map_err(|e| format!("{}: cannot read: {e}", self.file.display()))?;
        let rings = super::hashring::parse(&text)
            .and_then(|c| Hashrings::build(c, self.algorithm, self.replication))
            .map_err(|e| format!("{}: {e}", self.file.display()))?;
        Ok((rings, text))
    }
}

/// Follows the hashring file (watched, and re-read every refresh interval): a changed file that
/// loads replaces the routing; one that does not is logged and counted, and the last good one stays
/// (Thanos' `ConfigWatcher`).
pub async fn watch_hashrings(
    receiver: Receiver,
    source: HashringSource,
    mut current: String,
    metrics: HashringMetrics,
    stop: CancellationToken,
) {
    let dir = meridian_core::fswatch::parent_dir(&source.file);
    let (_watcher, mut rx) = meridian_core::fswatch::watch_dir(&dir, "hashring file's");
    let mut tick = tokio::time::interval(source.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = rx.recv() => {
                // Let an editor's write or a ConfigMap's symlink swap finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let loaded = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || source.load())
                .await
                .unwrap_or_else(|e| Err(format!("reading the hashring file failed: {e}")))
        };
        match loaded {
            Ok((_, text)) if text == current => {}
            Ok((rings, text)) => {
                receiver.set_rings(rings);
                metrics.loaded(&text);
                current = text;
                tracing::info!(file = %source.file.display(), "hashring configuration reloaded");
            }
            Err(e) => {
                metrics.file_errors.inc();
                tracing::error!(error = %e, "failed to load the hashring file; the previous hashrings stay in effect");
            }
        }
    }
}

/// Hashring reload metrics (Thanos' `thanos_receive_config_*` and `hashrings_file_errors_total`).
#[derive(Debug, Clone, Default)]
pub struct HashringMetrics {
    /// A hash of the loaded file's text (48 bits of its XXH64, exact as a float; Thanos takes 48
    /// bits of a SHA-256): it changes when a new configuration is in effect.
    pub config_hash: prometheus_client::metrics::gauge::Gauge,
    pub last_reload_successful: prometheus_client::metrics::gauge::Gauge,
    pub last_reload_success_timestamp: prometheus_client::metrics::gauge::Gauge,
    pub file_errors: Counter,
}

impl HashringMetrics {
    /// Records `text` as the configuration in effect.
    pub fn loaded(&self, text: &str) {
        let h = xxhash_rust::xxh64::xxh64(text.as_bytes(), 0) >> 16;
        self.config_hash.set(i64::try_from(h).unwrap_or(0));
        self.last_reload_successful.set(1);
        self.last_reload_success_timestamp
            .set(meridian_core::time::now_ms() / 1000);
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_receive_config_hash",
            "Hash of the hashring configuration in effect",
            self.config_hash.clone(),
        );
        r.register(
            "meridian_receive_config_last_reload_successful",
            "Whether the last hashring configuration load was successful",
            self.last_reload_successful.clone(),
        );
        r.register(
            "meridian_receive_config_last_reload_success_timestamp_seconds",
            "When the hashring configuration was last loaded",
            self.last_reload_success_timestamp.clone(),
        );
        r.register(
            "meridian_receive_hashrings_file_errors",
            "Failed loads of the hashring file",
            self.file_errors.clone(),
        );
    }
}
