//! Remote-write metrics, named and labelled as Prometheus v2.42 names them
//! (`storage/remote/queue_manager.go`, `write.go`, `tsdb/wlog/watcher.go`): every queue's series carry
//! `remote_name` and `url`; a queue removed by a reload takes its series with it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A queue's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub remote_name: String,
    pub url: String,
}

/// The WAL watcher's label (`consumer`: the queue's name).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

/// v2.42 `sent_batch_duration_seconds`: `prometheus.DefBuckets` plus 25, 60, 120, 300.
fn batch_duration() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
    ])
}

type Counters = Family<QueueLabels, Counter>;
type Gauges = Family<QueueLabels, Gauge>;
type FloatGauges = Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// Every queue's metrics, registered once.
#[derive(Clone)]
pub struct Metrics {
    pub samples: Counters,
    pub samples_failed: Counters,
    pub samples_retried: Counters,
    pub samples_dropped: Counters,
    pub samples_pending: Gauges,
    pub enqueue_retries: Counters,
    pub bytes: Counters,
    pub metadata: Counters,
    pub metadata_failed: Counters,
    pub metadata_retried: Counters,
    pub metadata_bytes: Counters,
    pub shards: Gauges,
    pub shards_min: Gauges,
    pub shards_max: Gauges,
    pub shards_desired: FloatGauges,
    pub shard_capacity: Gauges,
    pub max_samples_per_send: Gauges,
    pub highest_sent: FloatGauges,
    pub batch_duration: Family<QueueLabels, Histogram, fn() -> Histogram>,
    pub watcher_records: Family<Vec<(String, String)>, Counter>,
    pub watcher_segment: Family<ConsumerLabels, Gauge>,
    /// Samples the WAL lost before a queue read them (segments deleted past the hold limit).
    pub watcher_skipped_segments: Family<ConsumerLabels, Counter>,
    pub highest_timestamp_in: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            samples: Family::default(),
            samples_failed: Family::default(),
            samples_retried: Family::default(),
            samples_dropped: Family::default(),
            samples_pending: Family::default(),
            enqueue_retries: Family::default(),
            bytes: Family::default(),
            metadata: Family::default(),
            metadata_failed: Family::default(),
            metadata_retried: Family::default(),
            metadata_bytes: Family::default(),
            shards: Family::default(),
            shards_min: Family::default(),
            shards_max: Family::default(),
            shards_desired: Family::default(),
            shard_capacity: Family::default(),
            max_samples_per_send: Family::default(),
            highest_sent: Family::default(),
            batch_duration: Family::new_with_constructor(batch_duration),
            watcher_records: Family::default(),
            watcher_segment: Family::default(),
            watcher_skipped_segments: Family::default(),
            highest_timestamp_in: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers under Prometheus' names (`prometheus-client` adds `_total` to counters).
    pub fn register(&self, r: &mut Registry) {
        let rs = "prometheus_remote_storage";
        let c = |r: &mut Registry, name: &str, help: &str, m: &Counters| {
            r.register(format!("{rs}_{name}"), help, m.clone());
        };
        c(
            r,
            "samples",
            "Total number of samples sent to remote storage.",
            &self.samples,
        );
        c(
            r,
            "samples_failed",
            "Total number of samples which failed on send to remote storage, non-recoverable errors.",
            &self.samples_failed,
        );
        c(
            r,
            "samples_retried",
            "Total number of samples which failed on send to remote storage but were retried because the send error was recoverable.",
            &self.samples_retried,
        );
        c(
            r,
            "samples_dropped",
            "Total number of samples which were dropped after being read from the WAL before being sent via remote write, either via relabelling or unintentionally because of an unknown reference ID.",
            &self.samples_dropped,
        );
        c(
            r,
            "enqueue_retries",
            "Total number of times enqueue has failed because a shards queue was full.",
            &self.enqueue_retries,
        );
        c(
            r,
            "bytes",
            "The total number of bytes of data (not metadata) sent by the queue after compression. Note that when exemplars over remote write is enabled the exemplars included in a remote write request count towards this metric.",
            &self.bytes,
        );
        c(
            r,
            "metadata",
            "Total number of metadata entries sent to remote storage.",
            &self.metadata,
        );
        c(
            r,
            "metadata_failed",
            "Total number of metadata entries which failed on send to remote storage, non-recoverable errors.",
            &self.metadata_failed,
        );
        c(
            r,
            "metadata_retried",
            "Total number of metadata entries which failed on send to remote storage but were retried because the send error was recoverable.",
            &self.metadata_retried,
        );
        c(
            r,
            "metadata_bytes",
            "The total number of bytes of metadata sent by the queue after compression.",
            &self.metadata_bytes,
        );
        let g = |r: &mut Registry, name: &str, help: &str, m: &Gauges| {
            r.register(format!("{rs}_{name}"), help, m.clone());
        };
        g(
            r,
            "samples_pending",
            "The number of samples pending in the queues shards to be sent to the remote storage.",
            &self.samples_pending,
        );
        g(
            r,
            "shards",
            "The number of shards used for parallel sending to the remote storage.",
            &self.shards,
        );
        g(
            r,
            "shards_min",
            "The minimum number of shards that the queue is allowed to run.",
            &self.shards_min,
        );
        g(
            r,
            "shards_max",
            "The maximum number of shards that the queue is allowed to run.",
            &self.shards_max,
        );
        g(
            r,
            "shard_capacity",
            "The capacity of each shard of the queue used for parallel sending to the remote storage.",
            &self.shard_capacity,
        );
        g(
            r,
            "max_samples_per_send",
            "The maximum number of samples to be sent, in a single request, to the remote storage. Note that, when sending of exemplars over remote write is enabled, exemplars count towards this limt.",
            &self.max_samples_per_send,
        );
        r.register(
            format!("{rs}_shards_desired"),
            "The number of shards that the queues shard calculation wants to run based on the rate of samples in vs. samples out.",
            self.shards_desired.clone(),
        );
        r.register(
            format!("{rs}_queue_highest_sent_timestamp_seconds"),
            "Timestamp from a WAL sample, the highest timestamp successfully sent by this queue, in seconds since epoch.",
            self.highest_sent.clone(),
        );
        r.register(
            format!("{rs}_sent_batch_duration_seconds"),
            "Duration of send calls to the remote storage.",
            self.batch_duration.clone(),
        );
        r.register(
            format!("{rs}_highest_timestamp_in_seconds"),
            "Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.",
            self.highest_timestamp_in.clone(),
        );
        r.register(
            "prometheus_wal_watcher_records_read",
            "Number of records read by the WAL watcher from the WAL.",
            self.watcher_records.clone(),
        );
        r.register(
            "prometheus_wal_watcher_current_segment",
            "Current segment the WAL watcher is reading records from.",
            self.watcher_segment.clone(),
        );
        r.register(
            "meridian_wal_watcher_skipped_segments",
            "WAL segments deleted before the queue read them (released past the WAL hold limit): their samples were not sent.",
            self.watcher_skipped_segments.clone(),
        );
    }

    /// Removes a stopped queue's series.
    pub fn remove(&self, l: &QueueLabels) {
        for f in [
            &self.samples,
            &self.samples_failed,
            &self.samples_retried,
            &self.samples_dropped,
            &self.enqueue_retries,
            &self.bytes,
            &self.metadata,
            &self.metadata_failed,
            &self.metadata_retried,
            &self.metadata_bytes,
        ] {
            f.remove(l);
        }
        for f in [
            &self.samples_pending,
            &self.shards,
            &self.shards_min,
            &self.shards_max,
            &self.shard_capacity,
            &self.max_samples_per_send,
        ] {
            f.remove(l);
        }
        self.shards_desired.remove(l);
        self.highest_sent.remove(l);
        self.batch_duration.remove(l);
        let consumer = ConsumerLabels {
            consumer: l.remote_name.clone(),
        };
        self.watcher_segment.remove(&consumer);
        self.watcher_skipped_segments.remove(&consumer);
    }
}
