//! The bucket store's self-metrics: blocks, syncs, object-storage requests and bytes by what they
//! read, and its process-local caches' lookups and sizes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// The bucket store's self-metrics.
#[derive(Debug, Default)]
pub struct BucketMetrics {
    pub blocks_loaded: Gauge,
    pub syncs: Counter,
    pub sync_failures: Counter,
    /// Block directories skipped at sync (no meta.json yet, unreadable, downsampled, filtered).
    pub blocks_ignored: Gauge,
    pub requests: Family<KindLabel, Counter>,
    pub fetched_bytes: Family<KindLabel, Counter>,
    pub cache_requests: Family<CacheLabel, Counter>,
    pub cache_bytes: Family<CacheNameLabel, Gauge>,
}

/// What a GET read: `meta`, `index`, `chunks`, or a `list`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct CacheLabel {
    pub cache: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct CacheNameLabel {
    pub cache: &'static str,
}

impl BucketMetrics {
    pub(crate) fn get(&self, kind: &'static str) {
        self.requests.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn fetched(&self, kind: &'static str, bytes: u64) {
        self.fetched_bytes
            .get_or_create(&KindLabel { kind })
            .inc_by(bytes);
    }

    pub(crate) fn cache(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_requests
            .get_or_create(&CacheLabel { cache, result })
            .inc();
    }

    /// GET (and LIST/HEAD) requests sent so far, all kinds.
    pub fn requests_total(&self) -> u64 {
        ["meta", "index", "chunks", "list"]
            .iter()
            .map(|kind| self.requests.get_or_create(&KindLabel { kind }).get())
            .sum()
    }

    /// Bytes fetched so far, all kinds.
    pub fn fetched_total(&self) -> u64 {
        ["meta", "index", "chunks"]
            .iter()
            .map(|kind| self.fetched_bytes.get_or_create(&KindLabel { kind }).get())
            .sum()
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_bucket_store_blocks_loaded",
            "Blocks the bucket store serves",
            self.blocks_loaded.clone(),
        );
        r.register(
            "meridian_bucket_store_blocks_ignored",
            "Block directories skipped at the last sync (no meta.json yet, unreadable, downsampled or filtered out)",
            self.blocks_ignored.clone(),
        );
        r.register(
            "meridian_bucket_store_syncs",
            "Bucket syncs",
            self.syncs.clone(),
        );
        r.register(
            "meridian_bucket_store_sync_failures",
            "Bucket syncs that failed",
            self.sync_failures.clone(),
        );
        r.register(
            "meridian_bucket_store_requests",
            "Requests to object storage by what they read",
            self.requests.clone(),
        );
        r.register_with_unit(
            "meridian_bucket_store_fetched",
            "Bytes read from object storage by what they held",
            prometheus_client::registry::Unit::Bytes,
            self.fetched_bytes.clone(),
        );
        r.register(
            "meridian_bucket_store_cache_requests",
            "Bucket store cache lookups by cache and result",
            self.cache_requests.clone(),
        );
        r.register_with_unit(
            "meridian_bucket_store_cache_size",
            "Bytes held by the bucket store caches",
            prometheus_client::registry::Unit::Bytes,
            self.cache_bytes.clone(),
        );
    }
}
