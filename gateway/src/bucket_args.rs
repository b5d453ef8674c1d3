//! The bucket flags of `store` and `query` (Thanos' names): the objstore, sync, block selection,
//! per-request limits, and the caches — process-local sizes, or the index cache and caching bucket
//! configs that name a shared memcached or Redis.

use std::path::PathBuf;
use std::time::Duration;

use meridian_core::promfmt::{parse_base2_bytes, parse_duration};
use meridian_gateway::bucket::{
    BucketLimits, BucketStore, BucketStoreOptions, StoreTime, parse_store_time,
};
use meridian_gateway::cache::connect::connect;
use meridian_gateway::cache::shared::SharedMetrics;

/// The bucket store's flags (Thanos store gateway names), shared by `query` and `store`.
#[derive(clap::Args)]
pub(crate) struct BucketArgs {
    /// Thanos objstore YAML file of the bucket whose blocks are served (the edges' uploads).
    #[arg(long = "objstore.config-file", value_name = "FILE")]
    objstore_config_file: Option<PathBuf>,
    /// The objstore YAML itself (instead of a file).
    #[arg(
        long = "objstore.config",
        value_name = "YAML",
        conflicts_with = "objstore_config_file"
    )]
    objstore_config: Option<String>,
    /// How often the bucket is listed for new and deleted blocks.
    #[arg(long = "sync-block-duration", default_value = "3m", value_parser = parse_duration)]
    sync_interval: Duration,
    /// meta.json files fetched at once during a sync.
    #[arg(long = "block-meta-fetch-concurrency", default_value = "32")]
    meta_fetch_concurrency: usize,
    /// Memory for index-headers, postings and series read from the bucket (bytes; KiB, MiB, GiB...).
    #[arg(long = "index-cache-size", default_value = "250MiB", value_parser = parse_base2_bytes)]
    pub(crate) index_cache_size: u64,
    /// Memory for chunks read from the bucket.
    #[arg(long = "chunk-cache-size", default_value = "500MiB", value_parser = parse_base2_bytes)]
    pub(crate) chunk_cache_size: u64,
    /// Index cache (postings, series) in Thanos' cache config format: IN-MEMORY (max_size), or
    /// MEMCACHED / REDIS shared with other store gateways.
    #[arg(long = "index-cache.config-file", value_name = "FILE")]
    index_cache_config_file: Option<PathBuf>,
    /// The index cache config itself (YAML).
    #[arg(
        long = "index-cache.config",
        value_name = "YAML",
        conflicts_with = "index_cache_config_file"
    )]
    index_cache_config: Option<String>,
    /// Chunk cache in Thanos' caching bucket config format (type, config; the subrange and
    /// metafile keys are accepted and have no effect: chunks are cached whole).
    #[arg(long = "store.caching-bucket.config-file", value_name = "FILE")]
    caching_bucket_config_file: Option<PathBuf>,
    /// The caching bucket config itself (YAML).
    #[arg(
        long = "store.caching-bucket.config",
        value_name = "YAML",
        conflicts_with = "caching_bucket_config_file"
    )]
    caching_bucket_config: Option<String>,
    /// Serve only blocks ending after this time: RFC 3339, or a duration relative to now (-2w, -36h),
    /// which moves with the clock (resolved again at every sync).
    #[arg(long = "min-time", value_name = "TIME", value_parser = parse_store_time)]
    min_time: Option<StoreTime>,
    /// Serve only blocks starting before this time: RFC 3339, or a duration relative to now.
    #[arg(long = "max-time", value_name = "TIME", value_parser = parse_store_time)]
    max_time: Option<StoreTime>,
    /// Relabel configs applied to each block's external labels; blocks they drop are not served.
    #[arg(long = "selector.relabel-config-file", value_name = "FILE")]
    selector_file: Option<PathBuf>,
    /// The relabel configs themselves (YAML).
    #[arg(
        long = "selector.relabel-config",
        value_name = "YAML",
        conflicts_with = "selector_file"
    )]
    selector: Option<String>,
    /// Most series one request may touch in the bucket (0 = unlimited).
    #[arg(long = "store.grpc.touched-series-limit", default_value = "0")]
    touched_series_limit: u64,
    /// Most samples one request may read from the bucket (0 = unlimited).
    #[arg(long = "store.grpc.series-sample-limit", default_value = "0")]
    series_sample_limit: u64,
    /// Most bytes one request may download from the bucket (0 = unlimited).
    #[arg(long = "store.grpc.downloaded-bytes-limit", default_value = "0", value_parser = parse_base2_bytes)]
    downloaded_bytes_limit: u64,
    /// A block marked for deletion is served until its mark is this old (a block a compacted block
    /// replaces is dropped at once).
    #[arg(long = "ignore-deletion-marks-delay", default_value = "24h", value_parser = parse_duration)]
    ignore_deletion_marks_delay: Duration,
}

impl BucketArgs {
    /// The bucket store these flags describe, its shared caches connected; `None` without an objstore
    /// config.
    pub(crate) async fn open(
        &self,
        dns_server: Option<std::net::SocketAddr>,
        cache_metrics: &std::sync::Arc<SharedMetrics>,
    ) -> anyhow::Result<Option<std::sync::Arc<BucketStore>>> {
        use meridian_gateway::cache::config::{Backend, CacheConfig, Role};
        let index = CacheConfig::from_flags(
            self.index_cache_config_file.as_deref(),
            self.index_cache_config.as_deref(),
            "--index-cache.config",
            Role::IndexCache,
        )?;
        let chunks = CacheConfig::from_flags(
            self.caching_bucket_config_file.as_deref(),
            self.caching_bucket_config.as_deref(),
            "--store.caching-bucket.config",
            Role::CachingBucket,
        )?;
        let Some(bucket) = meridian_gateway::bucket::open_objstore(
            self.objstore_config_file.as_deref(),
            self.objstore_config.as_deref(),
        )?
        else {
            return Ok(None);
        };
        let selector = meridian_gateway::bucket::read_selector(
            self.selector_file.as_deref(),
            self.selector.as_deref(),
        )?;
        let opts = BucketStoreOptions {
            sync_interval: self.sync_interval,
            meta_fetch_concurrency: self.meta_fetch_concurrency,
            index_cache_bytes: self.index_cache_size,
            chunk_cache_bytes: self.chunk_cache_size,
            min_time: self.min_time.unwrap_or(StoreTime::At(i64::MIN)),
            max_time: self.max_time.unwrap_or(StoreTime::At(i64::MAX)),
            selector,
            limits: BucketLimits {
                series: self.touched_series_limit,
                samples: self.series_sample_limit,
                bytes: self.downloaded_bytes_limit,
            },
            ignore_deletion_marks_delay: self.ignore_deletion_marks_delay,
            ..Default::default()
        };
        let mut opts = opts;
        // IN-MEMORY configs size the process-local caches; the others are shared.
        if let Some(Backend::InMemory {
            max_size: Some(n), ..
        }) = index.as_ref().map(|c| &c.backend)
        {
            opts.index_cache_bytes = *n;
        }
        if let Some(Backend::InMemory {
            max_size: Some(n), ..
        }) = chunks.as_ref().map(|c| &c.backend)
        {
            opts.chunk_cache_bytes = *n;
        }
        if let Some(c) = &index {
            opts.shared_index = connect("index", c, dns_server, cache_metrics).await?;
        }
        if let Some(c) = &chunks {
            opts.shared_chunks = connect("chunks", c, dns_server, cache_metrics).await?;
        }
        Ok(Some(std::sync::Arc::new(BucketStore::new(bucket, opts))))
    }
}
