//! Caches: the results cache of range queries and label answers ([`results`]), and the shared-cache
//! tier several gateways use together ([`shared`]: the [`shared::Backend`] seam, timeouts, metrics and
//! asynchronous writes; backends [`memcached`], [`redis`] and [`inmemory`]), configured in Thanos'
//! cache configuration format ([`config`]); range-query pieces as stored there ([`codec`]).
//!
//! The bucket store's caches (index-headers, postings, series, chunks) live with the bucket store
//! (`crate::bucket`) and use the same shared tier when `--index-cache.config` or
//! `--store.caching-bucket.config` name one.

pub mod codec;
pub mod config;
pub mod connect;
pub mod inmemory;
pub mod memcached;
pub mod redis;
pub mod results;
pub mod shared;

pub use results::{
    CacheMetrics, CacheOptions, CachedBody, Outcome, RangeAnswer, ResultLabel, ResultsCache,
};
