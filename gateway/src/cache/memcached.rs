//! The memcached backend: servers from `addresses` (static, `dns+`, `dnssrv+`, `dnssrvnoa+`, resolved
//! again every `dns_provider_update_interval`), a key's server chosen by **jump consistent hash**
//! (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014) over the sorted
//! server list, as Thanos' `memcachedJumpHashSelector` does (pkg/cacheutil, v0.39: xxhash64 of the
//! key), so gateways with the same server list agree on where a key lives, and a server added or
//! removed moves only its share of the keys.
//!
//! Each server has a small pool of connections (Shopify's `async-memcached` client, whose cut-off
//! operations close their connection instead of leaving a reply unread): at most
//! `max_idle_connections` are kept idle. Reads are `get` of up to `max_get_multi_batch_size` keys per
//! command, `max_get_multi_concurrency` commands at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_memcached::{AsciiProtocol, Client};
use bytes::Bytes;
use futures::StreamExt;
use meridian_core::runtime::Task;
use tokio::sync::watch;

use super::config::MemcachedConfig;
use super::shared::{Backend, BackendError};
use crate::discovery::{Discovered, EndpointDiscovery};

/// Jump consistent hash: the bucket in `0..buckets` of `key`.
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    let n = i64::try_from(buckets).unwrap_or(i64::MAX);
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        {
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
    }
    usize::try_from(b).unwrap_or(0)
}

/// The server of `key` among `servers` (sorted).
pub fn pick<'a>(servers: &'a [String], key: &str) -> Option<&'a String> {
    if servers.is_empty() {
        return None;
    }
    servers.get(jump_hash(
        xxhash_rust::xxh64::xxh64(key.as_bytes(), 0),
        servers.len(),
    ))
}

/// One server's idle connections.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Client>>,
}

/// The memcached backend.
pub struct Memcached {
    servers: watch::Receiver<Vec<Discovered>>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    cfg: MemcachedConfig,
    /// Re-resolves the addresses; stopped when the backend goes.
    discovery: Task,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.discovery.cancel();
    }
}

impl std::fmt::Debug for Memcached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memcached")
            .field("servers", &*self.servers.borrow())
            .finish_non_exhaustive()
    }
}

impl Memcached {
    /// Starts resolving `cfg.addresses` (the first answer is awaited, so a static list is ready at
    /// once; names that do not resolve leave the cache without servers — every read a miss — until
    /// they do).
    pub async fn new(cfg: MemcachedConfig, discovery: EndpointDiscovery) -> Memcached {
        let (tx, rx) = watch::channel(Vec::new());
        let mut discovery = discovery;
        let (first, errors) = discovery.refresh().await;
        for e in errors {
            tracing::warn!(error = %e, "memcached addresses");
        }
        tx.send_replace(first);
        let interval = cfg.dns_provider_update_interval;
        let task = Task::spawn("memcached discovery", move |stop| async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(interval) => discovery.run(interval, tx, stop).await,
            }
        });
        Memcached {
            servers: rx,
            pools: Mutex::new(HashMap::new()),
            cfg,
            discovery: task,
        }
    }

    fn server_list(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .servers
            .borrow()
            .iter()
            .map(|d| d.address.clone())
            .collect();
        s.sort();
        s.dedup();
        s
    }

    fn pool(&self, server: &str) -> Arc<Pool> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.entry(server.to_owned()).or_default().clone()
    }

    async fn connection(&self, server: &str, pool: &Pool) -> Result<Client, BackendError> {
        let idle = pool
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(c) = idle.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        tokio::time::timeout(self.cfg.timeout, Client::new(format!("tcp://{server}")))
            .await
            .map_err(|_| BackendError(format!("memcached {server}: connect timed out")))?
            .map_err(|e| BackendError(format!("memcached {server}: connect: {e}")))
    }

    fn give_back(&self, pool: &Pool, c: Client) {
        if c.is_closed() {
            return;
        }
        let mut idle = pool
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.cfg.max_idle_connections {
            idle.push(c);
        }
    }

    /// Keys grouped by server, in batches of `max_get_multi_batch_size` (0: one batch per server).
    fn batches(&self, keys: &[String]) -> Vec<(String, Vec<String>)> {
        let servers = self.server_list();
        let mut by_server: HashMap<&String, Vec<String>> = HashMap::new();
        for k in keys {
            if let Some(s) = pick(&servers, k) {
                by_server.entry(s).or_default().push(k.clone());
            }
        }
        let size = match self.cfg.max_get_multi_batch_size {
            0 => usize::MAX,
            n => n,
        };
        let mut out = Vec::new();
        for (server, keys) in by_server {
            if keys.len() <= size {
                out.push((server.clone(), keys));
                continue;
            }
            for chunk in keys.chunks(size) {
                out.push((server.clone(), chunk.to_vec()));
            }
        }
        out
    }
}

fn mc_err(server: &str, op: &str, e: &async_memcached::Error) -> BackendError {
    BackendError(format!("memcached {server}: {op}: {e}"))
}

#[async_trait::async_trait]
impl Backend for Memcached {
    fn kind(&self) -> &'static str {
        "memcached"
    }

    async fn get_multi(&self, keys: &[String]) -> Result<HashMap<String, Bytes>, BackendError> {
        let batches = self.batches(keys);
        let results: Vec<Result<Vec<async_memcached::Value>, BackendError>> =
            futures::stream::iter(batches.into_iter().map(|(server, keys)| async move {
                let pool = self.pool(&server);
                let mut c = self.connection(&server, &pool).await?;
                let r = c.get_multi(&keys).await;
                self.give_back(&pool, c);
                match r {
                    Ok(values) => Ok(values),
                    // A `get` of keys none of which is stored answers only `END`.
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                        Ok(Vec::new())
                    }
                    Err(e) => Err(mc_err(&server, "get", &e)),
                }
            }))
            // 0: no limit (Thanos); the batches are bounded by the keys anyway.
            .buffer_unordered(match self.cfg.max_get_multi_concurrency {
                0 => usize::MAX,
                n => n,
            })
            .collect()
            .await;
        let mut out = HashMap::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(values) => {
                    for v in values {
                        if let (Ok(k), Some(data)) = (String::from_utf8(v.key), v.data) {
                            out.insert(k, Bytes::from(data));
                        }
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // One server down costs its keys only: what the others answered is kept.
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                tracing::debug!(error = %e, "memcached: a server failed; its keys are misses");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    async fn set_multi(
        &self,
        items: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let servers = self.server_list();
        let mut by_server: HashMap<&String, Vec<(&str, &[u8])>> = HashMap::new();
        for (k, v) in items {
            if let Some(s) = pick(&servers, k) {
                by_server.entry(s).or_default().push((k.as_str(), &v[..]));
            }
        }
        // Memcached reads an expiration above 30 days as a Unix time: Thanos' 24 h default is far below.
        let ttl = i64::try_from(ttl.as_secs().min(30 * 24 * 3600)).unwrap_or(0);
        for (server, kv) in by_server {
            let pool = self.pool(server);
            let mut c = self.connection(server, &pool).await?;
            let r = c.set_multi(&kv, Some(ttl), None).await;
            self.give_back(&pool, c);
            let answers = r.map_err(|e| mc_err(server, "set", &e))?;
            if let Some((k, Err(e))) = answers.into_iter().find(|(_, r)| r.is_err()) {
                return Err(BackendError(format!("memcached {server}: set {k}: {e}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_is_the_published_algorithm() {
        // Known answers published with other implementations (python-jump-consistent-hash's README,
        // a TypeScript port's tests).
        assert_eq!(jump_hash(256, 1024), 520);
        assert_eq!(jump_hash(10_863_919_174_838_991, 11), 6);
        assert_eq!(jump_hash(2_016_238_256_797_177_309, 11), 3);
        assert_eq!(jump_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_hash(0, 1), 0);
    }

    #[test]
    fn adding_a_server_moves_only_its_share() {
        let servers =
            |n: usize| -> Vec<String> { (0..n).map(|i| format!("10.0.0.{i}:11211")).collect() };
        let (three, four) = (servers(3), servers(4));
        let keys: Vec<String> = (0..4000).map(|i| format!("key-{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| pick(&three, k) != pick(&four, k))
            .count();
        // A quarter of the keys go to the new server; none moves between the old ones.
        assert!((800..1200).contains(&moved), "{moved}");
        for k in &keys {
            let (a, b) = (pick(&three, k).unwrap(), pick(&four, k).unwrap());
            assert!(a == b || b == &four[3]);
        }
    }
}
