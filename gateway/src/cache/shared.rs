//! The shared-cache seam: a byte store several gateways reach ([`Backend`]: memcached, Redis, or a
//! process-local in-memory one), and [`SharedCache`], the only way the gateway uses one.
//!
//! A shared cache may be down, slow or full; none of that may fail or stall a query. So:
//! - every read is bounded by the backend's `timeout` and a failed or late read is a **miss** (counted
//!   in `errors`), never an error;
//! - writes are **asynchronous**: queued (at most `max_async_buffer_size` batches) and written by at
//!   most `max_async_concurrency` workers; a full queue drops the write (counted), as Thanos'
//!   `asyncOperationProcessor` does (pkg/cacheutil, v0.39);
//! - items larger than `max_item_size` are not written (memcached would refuse them anyway);
//! - the caller checks what it reads (values carry their full key), so a collision or a foreign value
//!   under our key is a miss, never a wrong answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use meridian_core::runtime::Task;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;

/// Why a backend operation failed (connection refused, protocol error, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl BackendError {
    pub fn new(e: impl std::fmt::Display) -> BackendError {
        BackendError(e.to_string())
    }
}

/// A byte store shared by gateways.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// `memcached`, `redis` or `in-memory` (the metrics' `backend` label).
    fn kind(&self) -> &'static str;
    /// The values found for `keys` (missing keys are absent).
    async fn get_multi(&self, keys: &[String]) -> Result<HashMap<String, Bytes>, BackendError>;
    /// Stores `items`, each for `ttl`.
    async fn set_multi(&self, items: &[(String, Bytes)], ttl: Duration)
    -> Result<(), BackendError>;
}

/// How a [`SharedCache`] treats its backend (Thanos' client settings of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedOptions {
    /// Bound of one read or write (`timeout`, Redis' `read_timeout`).
    pub timeout: Duration,
    /// Items above this are not written (`max_item_size`; 0: no limit).
    pub max_item_size: u64,
    /// How long items live (`expiration`, `validity`).
    pub ttl: Duration,
    /// Writers working at once (`max_async_concurrency`).
    pub max_async_concurrency: usize,
    /// Write batches that may wait (`max_async_buffer_size`).
    pub max_async_buffer_size: usize,
}

impl Default for SharedOptions {
    fn default() -> SharedOptions {
        SharedOptions {
            timeout: Duration::from_millis(500),
            max_item_size: 1 << 20,
            ttl: Duration::from_secs(24 * 3600),
            max_async_concurrency: 20,
            max_async_buffer_size: 10_000,
        }
    }
}

/// `name` (which cache) and `backend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheLabels {
    pub name: &'static str,
    pub backend: &'static str,
}

/// `name`, `backend` and `operation` (`get`, `set`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    pub name: &'static str,
    pub backend: &'static str,
    pub operation: &'static str,
}

/// `name`, `backend` and why a write was not made (`queue-full`, `too-large`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SkipLabels {
    pub name: &'static str,
    pub backend: &'static str,
    pub reason: &'static str,
}

fn operation_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ])
}

/// Metrics of every shared cache of a process, by cache and backend.
#[derive(Debug)]
pub struct SharedMetrics {
    /// Keys asked for.
    pub requests: Family<CacheLabels, Counter>,
    /// Keys found with a value the caller could use.
    pub hits: Family<CacheLabels, Counter>,
    /// Keys not found, found unusable, or lost to an error or timeout.
    pub misses: Family<CacheLabels, Counter>,
    /// Failed or timed-out operations.
    pub errors: Family<OperationLabels, Counter>,
    /// Items written.
    pub writes: Family<CacheLabels, Counter>,
    /// Writes not made.
    pub skipped: Family<SkipLabels, Counter>,
    /// Operation latency.
    pub latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl Default for SharedMetrics {
    fn default() -> SharedMetrics {
        SharedMetrics {
            requests: Family::default(),
            hits: Family::default(),
            misses: Family::default(),
            errors: Family::default(),
            writes: Family::default(),
            skipped: Family::default(),
            latency: Family::new_with_constructor(operation_histogram),
        }
    }
}

impl SharedMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_cache_requests",
            "Keys asked of a shared cache, by cache and backend",
            self.requests.clone(),
        );
        r.register(
            "meridian_cache_hits",
            "Keys a shared cache answered with a usable value",
            self.hits.clone(),
        );
        r.register(
            "meridian_cache_misses",
            "Keys a shared cache did not answer (absent, unusable, or lost to an error or timeout)",
            self.misses.clone(),
        );
        r.register(
            "meridian_cache_errors",
            "Shared cache operations that failed or timed out (each a miss, never a failed query)",
            self.errors.clone(),
        );
        r.register(
            "meridian_cache_writes",
            "Items written to a shared cache",
            self.writes.clone(),
        );
        r.register(
            "meridian_cache_writes_skipped",
            "Writes to a shared cache not made: the write queue was full, or the item too large",
            self.skipped.clone(),
        );
        r.register_with_unit(
            "meridian_cache_operation_duration",
            "Latency of shared cache operations",
            prometheus_client::registry::Unit::Seconds,
            self.latency.clone(),
        );
    }
}

/// A backend as the gateway uses it: bounded, measured, never failing.
pub struct SharedCache {
    name: &'static str,
    backend: Arc<dyn Backend>,
    opts: SharedOptions,
    metrics: Arc<SharedMetrics>,
    queue: mpsc::Sender<Vec<(String, Bytes)>>,
    writer: Mutex<Option<Task>>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl SharedCache {
    /// Wraps `backend` for the cache called `name` (`query-range`, `index`, `chunks`) and starts its
    /// writer (needs a Tokio runtime; stopped by [`SharedCache::stop`], or when dropped).
    pub fn new(
        name: &'static str,
        backend: Arc<dyn Backend>,
        opts: SharedOptions,
        metrics: Arc<SharedMetrics>,
    ) -> Arc<SharedCache> {
        let (tx, rx) = mpsc::channel(opts.max_async_buffer_size.max(1));
        let writer = Task::spawn("shared cache writer", {
            let backend = backend.clone();
            let metrics = metrics.clone();
            move |stop| write_queue(name, backend, opts, metrics, rx, stop)
        });
        Arc::new(SharedCache {
            name,
            backend,
            opts,
            metrics,
            queue: tx,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    pub fn options(&self) -> &SharedOptions {
        &self.opts
    }

    pub fn metrics(&self) -> &Arc<SharedMetrics> {
        &self.metrics
    }

    fn labels(&self) -> CacheLabels {
        CacheLabels {
            name: self.name,
            backend: self.backend.kind(),
        }
    }

    fn op(&self, operation: &'static str) -> OperationLabels {
        OperationLabels {
            name: self.name,
            backend: self.backend.kind(),
            operation,
        }
    }

    /// The values found for `keys` that `decode` accepts: whatever the backend answered within the
    /// timeout, nothing when it failed. `decode` checks a value (its full key, its format) and turns it
    /// into what the caller keeps; a value it refuses is a miss.
    pub async fn get<T>(
        &self,
        keys: &[String],
        decode: impl Fn(&str, &Bytes) -> Option<T>,
    ) -> HashMap<String, T> {
        if keys.is_empty() {
            return HashMap::new();
        }
        let labels = self.labels();
        self.metrics
            .requests
            .get_or_create(&labels)
            .inc_by(keys.len() as u64);
        let started = Instant::now();
        let r = tokio::time::timeout(self.opts.timeout, self.backend.get_multi(keys)).await;
        self.metrics
            .latency
            .get_or_create(&self.op("get"))
            .observe(started.elapsed().as_secs_f64());
        let found = match r {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                self.failed("get", &e.0);
                HashMap::new()
            }
            Err(_) => {
                self.failed("get", "timed out");
                HashMap::new()
            }
        };
        let mut out = HashMap::with_capacity(found.len());
        for (k, v) in found {
            match decode(&k, &v) {
                Some(t) => {
                    out.insert(k, t);
                }
                None => {
                    tracing::debug!(
                        cache = self.name,
                        key = k,
                        "shared cache value not usable: a miss"
                    );
                }
            }
        }
        self.metrics
            .hits
            .get_or_create(&labels)
            .inc_by(out.len() as u64);
        self.metrics
            .misses
            .get_or_create(&labels)
            .inc_by(keys.len().saturating_sub(out.len()) as u64);
        out
    }

    /// [`SharedCache::get`] of `wanted` pairs (stored key, logical key): `decode(logical, value)`
    /// checks each value against its logical key; the accepted ones by position in `wanted`.
    pub async fn get_keyed<T>(
        &self,
        wanted: &[(String, String)],
        decode: impl Fn(&str, &Bytes) -> Option<T>,
    ) -> HashMap<usize, T> {
        let stored: Vec<String> = wanted.iter().map(|(s, _)| s.clone()).collect();
        let by_key: HashMap<&str, usize> = stored
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let found = self
            .get(&stored, |k, v| decode(&wanted[*by_key.get(k)?].1, v))
            .await;
        found
            .into_iter()
            .filter_map(|(k, v)| Some((*by_key.get(k.as_str())?, v)))
            .collect()
    }

    fn failed(&self, operation: &'static str, why: &str) {
        tracing::debug!(
            cache = self.name,
            backend = self.backend.kind(),
            operation,
            why,
            "shared cache operation failed"
        );
        self.metrics.errors.get_or_create(&self.op(operation)).inc();
    }

    /// Queues `items` for writing; returns at once. Items over `max_item_size` are left out; a full
    /// queue drops the batch. Both are counted.
    pub fn set(&self, items: Vec<(String, Bytes)>) {
        let limit = self.opts.max_item_size;
        let before = items.len();
        let items: Vec<(String, Bytes)> = items
            .into_iter()
            .filter(|(k, v)| limit == 0 || (k.len() + v.len()) as u64 <= limit)
            .collect();
        self.skip("too-large", before - items.len());
        if items.is_empty() {
            return;
        }
        let n = items.len();
        if self.queue.try_send(items).is_err() {
            self.skip("queue-full", n);
        }
    }

    fn skip(&self, reason: &'static str, n: usize) {
        if n > 0 {
            self.metrics
                .skipped
                .get_or_create(&SkipLabels {
                    name: self.name,
                    backend: self.backend.kind(),
                    reason,
                })
                .inc_by(n as u64);
        }
    }

    /// Stops the writer: queued writes get `drain` to finish.
    pub async fn stop(&self, drain: Duration) {
        let task = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(t) = task {
            t.stop(drain).await;
        }
    }
}

impl Drop for SharedCache {
    fn drop(&mut self) {
        if let Some(t) = self.writer.get_mut().ok().and_then(|w| w.take()) {
            t.cancel();
        }
    }
}

/// The writer: at most `max_async_concurrency` writes at once; after `stop`, what is queued is
/// still written (the owner bounds that with its drain deadline).
async fn write_queue(
    name: &'static str,
    backend: Arc<dyn Backend>,
    opts: SharedOptions,
    metrics: Arc<SharedMetrics>,
    mut rx: mpsc::Receiver<Vec<(String, Bytes)>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let batches = async_stream_of(&mut rx, stop);
    batches
        .for_each_concurrent(opts.max_async_concurrency.max(1), |items| {
            let backend = backend.clone();
            let metrics = metrics.clone();
            async move {
                let op = OperationLabels {
                    name,
                    backend: backend.kind(),
                    operation: "set",
                };
                let started = Instant::now();
                let r =
                    tokio::time::timeout(opts.timeout, backend.set_multi(&items, opts.ttl)).await;
                metrics
                    .latency
                    .get_or_create(&op)
                    .observe(started.elapsed().as_secs_f64());
                let why = match r {
                    Ok(Ok(())) => {
                        metrics
                            .writes
                            .get_or_create(&CacheLabels {
                                name,
                                backend: backend.kind(),
                            })
                            .inc_by(items.len() as u64);
                        return;
                    }
                    Ok(Err(e)) => e.0,
                    Err(_) => "timed out".to_owned(),
                };
                tracing::debug!(
                    cache = name,
                    backend = backend.kind(),
                    why,
                    "shared cache write failed"
                );
                metrics.errors.get_or_create(&op).inc();
            }
        })
        .await;
}

/// The queue as a stream that ends when it is closed, or after `stop` once it is empty.
fn async_stream_of(
    rx: &mut mpsc::Receiver<Vec<(String, Bytes)>>,
    stop: tokio_util::sync::CancellationToken,
) -> impl futures::Stream<Item = Vec<(String, Bytes)>> + '_ {
    futures::stream::unfold((rx, stop), |(rx, stop)| async move {
        let next = if stop.is_cancelled() {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                m = rx.recv() => m,
                () = stop.cancelled() => rx.try_recv().ok(),
            }
        };
        next.map(|m| (m, (rx, stop)))
    })
}

/// A value with its full logical key in front (a little-endian `u32` length, the key, the payload),
/// so a reader can tell its own value from another key's (a collision of the stored key's hash).
pub fn envelope(logical: &str, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(4 + logical.len() + payload.len());
    v.extend_from_slice(
        &u32::try_from(logical.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    v.extend_from_slice(logical.as_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// The payload of `v` if it is an [`envelope`] of `logical`.
pub fn open_envelope(logical: &str, v: &Bytes) -> Option<Bytes> {
    let len = usize::try_from(u32::from_le_bytes(v.get(..4)?.try_into().ok()?)).ok()?;
    let key = v.get(4..4usize.checked_add(len)?)?;
    (key == logical.as_bytes()).then(|| v.slice(4 + len..))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_check_their_key() {
        let v = envelope("P\0a\0b", b"xyz");
        assert_eq!(
            open_envelope("P\0a\0b", &v).unwrap(),
            Bytes::from_static(b"xyz")
        );
        assert!(open_envelope("P\0a\0c", &v).is_none());
        assert!(open_envelope("P\0a\0b", &v.slice(..5)).is_none());
        assert!(open_envelope("x", &Bytes::from_static(b"\xff\xff\xff\xff")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_backend_is_a_miss_within_the_timeout() {
        #[derive(Debug)]
        struct Slow;
        #[async_trait::async_trait]
        impl Backend for Slow {
            fn kind(&self) -> &'static str {
                "slow"
            }
            async fn get_multi(
                &self,
                _: &[String],
            ) -> Result<HashMap<String, Bytes>, BackendError> {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(HashMap::new())
            }
            async fn set_multi(
                &self,
                _: &[(String, Bytes)],
                _: Duration,
            ) -> Result<(), BackendError> {
                Err(BackendError::new("full"))
            }
        }
        let metrics = Arc::new(SharedMetrics::default());
        let c = SharedCache::new(
            "t",
            Arc::new(Slow),
            SharedOptions::default(),
            metrics.clone(),
        );
        let started = tokio::time::Instant::now();
        let got = c.get(&["a".to_owned()], |_, v| Some(v.clone())).await;
        assert!(got.is_empty());
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        let l = CacheLabels {
            name: "t",
            backend: "slow",
        };
        assert_eq!(metrics.misses.get_or_create(&l).get(), 1);
        let op = OperationLabels {
            name: "t",
            backend: "slow",
            operation: "get",
        };
        assert_eq!(metrics.errors.get_or_create(&op).get(), 1);
        // A failing write is counted, not raised; an oversized one is not attempted.
        c.set(vec![("k".into(), Bytes::from_static(b"v"))]);
        c.set(vec![("big".into(), Bytes::from(vec![0u8; 2 << 20]))]);
        c.stop(Duration::from_secs(1)).await;
        let set = OperationLabels {
            name: "t",
            backend: "slow",
            operation: "set",
        };
        assert_eq!(metrics.errors.get_or_create(&set).get(), 1);
        let skipped = SkipLabels {
            name: "t",
            backend: "slow",
            reason: "too-large",
        };
        assert_eq!(metrics.skipped.get_or_create(&skipped).get(), 1);
    }
}
