//! Turning a cache configuration into the shared cache it names (memcached, Redis), or nothing for
//! `IN-MEMORY` (whose sizes the caller applies to its own process-local cache).

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_core::net::dns::DnsResolver;

use super::config::{Backend, CacheConfig};
use super::shared::{SharedCache, SharedMetrics, SharedOptions};
use crate::discovery::{EndpointDiscovery, EndpointSpec};

/// The shared cache `cfg` names, as cache `name`; `None` for `IN-MEMORY`. Memcached starts with the
/// servers its addresses resolve to now (none is not an error: reads miss until some resolve);
/// Redis must answer its first connection within `dial_timeout`.
pub async fn connect(
    name: &'static str,
    cfg: &CacheConfig,
    dns_server: Option<SocketAddr>,
    metrics: &Arc<SharedMetrics>,
) -> anyhow::Result<Option<Arc<SharedCache>>> {
    for key in &cfg.ignored {
        tracing::warn!(
            cache = name,
            key,
            "cache config: accepted, has no effect in Meridian"
        );
    }
    let (backend, opts): (Arc<dyn super::shared::Backend>, SharedOptions) = match &cfg.backend {
        Backend::InMemory { .. } => return Ok(None),
        Backend::Memcached(m) => {
            let specs = m
                .addresses
                .iter()
                .map(|a| {
                    a.parse::<EndpointSpec>().map_err(|e| {
                        anyhow::anyhow!("{name} cache: addresses: {a:?}: {}", e.reason)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let resolver =
                DnsResolver::new(dns_server).map_err(|e| anyhow::anyhow!("{name} cache: {e}"))?;
            let discovery = EndpointDiscovery::new(resolver, specs);
            let opts = SharedOptions {
                timeout: m.timeout,
                max_item_size: m.max_item_size,
                ttl: cfg.expiration,
                max_async_concurrency: m.max_async_concurrency,
                max_async_buffer_size: m.max_async_buffer_size,
            };
            (
                Arc::new(super::memcached::Memcached::new((**m).clone(), discovery).await),
                opts,
            )
        }
        Backend::Redis(r) => {
            let opts = SharedOptions {
                timeout: r.read_timeout.max(r.write_timeout),
                max_item_size: 0,
                ttl: cfg.expiration,
                max_async_concurrency: r.max_async_concurrency,
                max_async_buffer_size: r.max_async_buffer_size,
            };
            let redis = super::redis::Redis::connect((**r).clone())
                .await
                .map_err(|e| anyhow::anyhow!("{name} cache: {e}"))?;
            (Arc::new(redis), opts)
        }
    };
    Ok(Some(SharedCache::new(name, backend, opts, metrics.clone())))
}
