//! Remote write out of the edge (Prometheus' `remote_write:`): one queue per entry follows the edge's
//! WAL and sends what it holds — in agent mode the edge's only output.
//!
//! - `config`: the entries, with v2.42's defaults and checks.
//! - `queue`: the WAL watcher, progress file and dynamic sharding of one queue.
//! - `series`: the series cache (labels by WAL reference), collected after checkpoints.
//! - `batch`: samples encoded once, as they are read, and cut into requests.
//! - `shard`: batching, sending with retries, progress marks.
//! - `client`: the HTTP request and how answers are sorted (sent / retry / drop); the hand-written
//!   protobuf encoding.
//! - `metadata`: `metadata_config`.
//! - `metrics`: Prometheus' metric names.
//!
//! A reload keeps the queues whose entry (and the external labels) did not change, restarts changed
//! ones (flushing within the flush deadline; the new queue resumes from the old one's progress), and
//! removes the others (their progress is forgotten).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metadata::MetadataStore;
use meridian_core::labels::Labels;
use meridian_tsdb::db::WalReaders;

pub mod batch;
pub mod client;
pub mod config;
pub mod metadata;
pub mod metrics;
pub mod queue;
pub mod series;
pub mod shard;

use queue::QueueHandle;

/// Default of `--storage.remote.flush-deadline` (v2.42).
pub const DEFAULT_FLUSH_DEADLINE: Duration = Duration::from_secs(60);

struct Running {
    queue: QueueHandle,
    metadata_stop: CancellationToken,
    metadata: Option<tokio::task::JoinHandle<()>>,
}

/// The segments the queues still need, for the TSDB's truncation.
#[derive(Default)]
struct Hold(std::sync::Mutex<Vec<Arc<dyn Fn() -> u64 + Send + Sync>>>);

impl WalReaders for Hold {
    fn keep_from(&self) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|f| f())
            .min()
    }
}

/// What comes into the storage, as the shard calculation measures it (Prometheus' `samplesIn` and
/// highest received timestamp, taken at append, not where the queues have read to: a queue held back
/// by an outage reads nothing, yet it falls behind).
#[derive(Clone)]
pub struct Inflow {
    /// The newest sample time appended (ms; `i64::MIN` before any).
    pub highest_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Samples appended.
    pub appended: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Inflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflow").finish_non_exhaustive()
    }
}

/// Every queue of the edge.
pub struct RemoteWrite {
    inflow: Inflow,
    wal_dir: PathBuf,
    progress_dir: PathBuf,
    flush_deadline: Duration,
    metadata: Arc<MetadataStore>,
    pub metrics: metrics::Metrics,
    queues: tokio::sync::Mutex<Vec<Running>>,
    hold: Arc<Hold>,
}

impl std::fmt::Debug for RemoteWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWrite")
            .field("wal_dir", &self.wal_dir)
            .finish_non_exhaustive()
    }
}

impl RemoteWrite {
    /// Queues following `wal_dir`, keeping their progress files in `progress_dir`.
    pub fn new(
        wal_dir: PathBuf,
        progress_dir: PathBuf,
        flush_deadline: Duration,
        metadata: Arc<MetadataStore>,
        inflow: Inflow,
    ) -> RemoteWrite {
        RemoteWrite {
            inflow,
            wal_dir,
            progress_dir,
            flush_deadline,
            metadata,
            metrics: metrics::Metrics::default(),
            queues: tokio::sync::Mutex::new(Vec::new()),
            hold: Arc::new(Hold::default()),
        }
    }

    /// What the TSDB must ask before truncating its WAL.
    pub fn wal_readers(&self) -> Arc<dyn WalReaders> {
        self.hold.clone()
    }

    /// Starts, restarts and stops queues to match `cfg`. Every new entry is checked (its TLS material
    /// loaded) before anything changes.
    pub async fn apply(&self, cfg: &Config) -> Result<(), String> {
        for c in &cfg.remote_write {
            client::WriteClient::new(c)?;
        }
        if !cfg.remote_write.is_empty() {
            std::fs::create_dir_all(&self.progress_dir)
                .map_err(|e| format!("{}: {e}", self.progress_dir.display()))?;
        }
        let mut queues = self.queues.lock().await;
        let old = std::mem::take(&mut *queues);
        let wanted: Vec<(Arc<config::RemoteWriteConfig>, Labels)> = cfg
            .remote_write
            .iter()
            .map(|c| (Arc::new(c.clone()), cfg.external_labels.clone()))
            .collect();
        let mut keep = Vec::new();
        for r in old {
            let same = wanted
                .iter()
                .any(|(c, e)| **c == *r.queue.cfg && *e == r.queue.external);
            let renewed = wanted
                .iter()
                .any(|(c, _)| c.progress_key() == r.queue.cfg.progress_key());
            if same {
                keep.push(r);
                continue;
            }
            r.metadata_stop.cancel();
            if let Some(t) = r.metadata {
                let _ = t.await;
            }
            let labels = r.queue.labels.clone();
            if renewed {
                r.queue.stop(self.flush_deadline).await;
            } else {
                r.queue.remove().await;
            }
            self.metrics.remove(&labels);
        }
        for (c, external) in wanted {
            if keep
                .iter()
                .any(|r| *r.queue.cfg == *c && r.queue.external == external)
            {
                continue;
            }
            let queue = QueueHandle::start(
                c.clone(),
                external,
                self.wal_dir.clone(),
                &self.progress_dir,
                &self.metrics,
                self.inflow.clone(),
            )
            .await?;
            let metadata_stop = CancellationToken::new();
            let metadata = metadata::spawn(
                c,
                self.metadata.clone(),
                &self.metrics,
                &queue.labels,
                metadata_stop.clone(),
            )?;
            keep.push(Running {
                queue,
                metadata_stop,
                metadata,
            });
        }
        *self
            .hold
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keep
            .iter()
            .map(|r| {
                let k = r.queue.keep_from_handle();
                Arc::new(move || k.load(std::sync::atomic::Ordering::Acquire))
                    as Arc<dyn Fn() -> u64 + Send + Sync>
            })
            .collect();
        *queues = keep;
        Ok(())
    }

    /// Flushes every queue within the flush deadline (they run concurrently), then stops them.
    pub async fn shutdown(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().await);
        let deadline = self.flush_deadline;
        let mut stops = tokio::task::JoinSet::new();
        for r in queues {
            r.metadata_stop.cancel();
            if let Some(t) = r.metadata {
                let _ = t.await;
            }
            stops.spawn(r.queue.stop(deadline));
        }
        while stops.join_next().await.is_some() {}
    }

    /// The lowest of the queues' highest sent timestamps (ms): what agent mode's truncation keeps
    /// behind (v2.42 `LowestSentTimestamp`; a queue that has sent nothing counts as 0). `None`
    /// without queues.
    pub async fn lowest_sent_ms(&self) -> Option<i64> {
        self.queues
            .lock()
            .await
            .iter()
            .map(|r| r.queue.highest_sent_ms().unwrap_or(0))
            .min()
    }

    /// Names of the running queues.
    pub async fn queue_names(&self) -> Vec<String> {
        self.queues
            .lock()
            .await
            .iter()
            .map(|r| r.queue.cfg.name.clone())
            .collect()
    }
}
