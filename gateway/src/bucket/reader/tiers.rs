//! The bucket store's caches in a shared tier (`--index-cache.config` and
//! `--store.caching-bucket.config` of type `MEMCACHED` or `REDIS`): postings lists and series entries
//! in the index cache, chunks in the chunk cache, so store gateways (and restarts of one) share what
//! any of them read from the bucket. Each read that misses the process-local cache asks the shared
//! tier with one multi-get before going to the bucket; what the bucket answered is written back
//! asynchronously.
//!
//! Values are the bytes as read from the block (a postings list as little-endian `u32`s, a series
//! entry, a chunk after its encoding byte), in an envelope with the full key
//! ([`crate::cache::shared::envelope`]); stored keys are short (`mb1:P:<block>:<hash>`,
//! `mb1:S:<block>:<id>`, `mb1:C:<block>:<ref>`), as Thanos' `P:`/`S:` keys are.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Caches;
use crate::cache::shared::{envelope, open_envelope};

fn postings_keys(ulid: &str, name: &str, value: &str) -> (String, String) {
    let logical = format!("P\0{ulid}\0{name}\0{value}");
    let hash = xxhash_rust::xxh3::xxh3_128(format!("{name}\0{value}").as_bytes());
    (format!("mb1:P:{ulid}:{hash:032x}"), logical)
}

fn series_keys(ulid: &str, id: u32) -> (String, String) {
    (format!("mb1:S:{ulid}:{id}"), format!("S\0{ulid}\0{id}"))
}

fn chunk_keys(ulid: &str, r: u64) -> (String, String) {
    (format!("mb1:C:{ulid}:{r}"), format!("C\0{ulid}\0{r}"))
}

/// Reads `wanted` (stored key, logical key) from a tier: the payloads found, by position.
async fn read(
    tier: &crate::cache::shared::SharedCache,
    wanted: &[(String, String)],
) -> HashMap<usize, Bytes> {
    tier.get_keyed(wanted, open_envelope).await
}

fn postings_bytes(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn postings_from(b: &[u8]) -> Option<Vec<u32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A label name and value (a postings list's key within a block).
type LabelPair = (String, String);

/// A key that names its block (so a block's entries can be forgotten).
pub(super) trait BlockKey {
    fn block(&self) -> &Arc<str>;
}

impl BlockKey for (Arc<str>, String, String) {
    fn block(&self) -> &Arc<str> {
        &self.0
    }
}

impl<T> BlockKey for (Arc<str>, T) {
    fn block(&self) -> &Arc<str> {
        &self.0
    }
}

/// A process-local cache, or none when a shared tier holds its items (Thanos' configured index cache
/// replaces the in-memory one; a zero-sized local cache would still be asked and written for nothing).
pub(super) struct Local<K, V>(Option<moka::sync::Cache<K, V>>);

impl<K, V> std::fmt::Debug for Local<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Local(on)"
        } else {
            "Local(off)"
        })
    }
}

impl<K, V> Local<K, V>
where
    K: BlockKey + std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new(
        enabled: bool,
        build: impl FnOnce() -> moka::sync::Cache<K, V>,
    ) -> Local<K, V> {
        Local(enabled.then(build))
    }

    /// The cached value, counted as a hit or miss of cache `name` (nothing counted when off).
    pub(super) fn lookup(
        &self,
        key: &K,
        metrics: &crate::bucket::BucketMetrics,
        name: &'static str,
    ) -> Option<V> {
        let c = self.0.as_ref()?;
        let hit = c.get(key);
        metrics.cache(name, hit.is_some());
        hit
    }

    pub(super) fn insert(&self, key: K, value: V) {
        if let Some(c) = &self.0 {
            c.insert(key, value);
        }
    }

    pub(super) fn weighted_size(&self) -> u64 {
        self.0.as_ref().map_or(0, moka::sync::Cache::weighted_size)
    }

    /// Drops the entries of block `ulid`.
    pub(super) fn forget_block(&self, ulid: &Arc<str>) -> Option<moka::PredicateError> {
        let u = ulid.clone();
        self.0
            .as_ref()?
            .invalidate_entries_if(move |k: &K, _| *k.block() == u)
            .err()
    }
}

impl Caches {
    /// Postings lists of `want` found in the shared index cache: moved from `want` into `lists`.
    pub(super) async fn shared_postings(
        &self,
        ulid: &Arc<str>,
        want: &mut Vec<((String, String), usize)>,
        lists: &mut HashMap<(String, String), Arc<Vec<u32>>>,
    ) {
        let Some(tier) = &self.shared_index else {
            return;
        };
        let keys: Vec<(String, String)> = want
            .iter()
            .map(|((n, v), _)| postings_keys(ulid, n, v))
            .collect();
        let mut found = read(tier, &keys).await;
        let mut rest = Vec::with_capacity(want.len());
        for (i, w) in want.drain(..).enumerate() {
            match found.remove(&i).and_then(|b| postings_from(&b)) {
                Some(list) => {
                    let list = Arc::new(list);
                    self.postings
                        .insert((ulid.clone(), w.0.0.clone(), w.0.1.clone()), list.clone());
                    lists.insert(w.0, list);
                }
                None => rest.push(w),
            }
        }
        *want = rest;
    }

    /// Writes postings lists read from the bucket to the shared index cache.
    pub(super) fn share_postings(&self, ulid: &str, read: &[(LabelPair, Arc<Vec<u32>>)]) {
        if let Some(tier) = &self.shared_index {
            tier.set(
                read.iter()
                    .map(|((n, v), list)| {
                        let (stored, logical) = postings_keys(ulid, n, v);
                        (stored, envelope(&logical, &postings_bytes(list)))
                    })
                    .collect(),
            );
        }
    }

    /// Series entries of `missing` (position, ID) found in the shared index cache, by position; the
    /// rest stay in `missing`.
    pub(super) async fn shared_series(
        &self,
        ulid: &str,
        missing: &mut Vec<(usize, u32)>,
    ) -> Vec<(usize, u32, Bytes)> {
        let Some(tier) = &self.shared_index else {
            return Vec::new();
        };
        let keys: Vec<(String, String)> = missing
            .iter()
            .map(|(_, id)| series_keys(ulid, *id))
            .collect();
        let mut found = read(tier, &keys).await;
        let mut out = Vec::new();
        let mut rest = Vec::with_capacity(missing.len());
        for (i, (pos, id)) in missing.drain(..).enumerate() {
            match found.remove(&i) {
                Some(b) => out.push((pos, id, b)),
                None => rest.push((pos, id)),
            }
        }
        *missing = rest;
        out
    }

    /// Writes series entries (exactly their bytes) read from the bucket to the shared index cache.
    pub(super) fn share_series(&self, ulid: &str, read: Vec<(u32, Bytes)>) {
        if let Some(tier) = &self.shared_index {
            tier.set(
                read.into_iter()
                    .map(|(id, entry)| {
                        let (stored, logical) = series_keys(ulid, id);
                        (stored, envelope(&logical, &entry))
                    })
                    .collect(),
            );
        }
    }

    /// Chunks (encoding byte, then the chunk) found in the shared chunk cache, by reference.
    pub(super) async fn shared_chunks(&self, ulid: &Arc<str>, refs: &[u64]) -> HashMap<u64, Bytes> {
        let Some(tier) = &self.shared_chunks else {
            return HashMap::new();
        };
        let keys: Vec<(String, String)> = refs.iter().map(|r| chunk_keys(ulid, *r)).collect();
        read(tier, &keys)
            .await
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| {
                self.chunks.insert((ulid.clone(), refs[i]), b.clone());
                (refs[i], b)
            })
            .collect()
    }

    /// Writes chunks read from the bucket to the shared chunk cache.
    pub(super) fn share_chunks(&self, ulid: &str, read: Vec<(u64, Bytes)>) {
        if let Some(tier) = &self.shared_chunks {
            tier.set(
                read.into_iter()
                    .map(|(r, c)| {
                        let (stored, logical) = chunk_keys(ulid, r);
                        (stored, envelope(&logical, &c))
                    })
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_fit_memcached_and_postings_round_trip() {
        let (stored, _) = postings_keys(
            "01HZZZZZZZZZZZZZZZZZZZZZZZ",
            &"n".repeat(300),
            &"v".repeat(300),
        );
        assert!(stored.len() < 250, "{stored}");
        let list = vec![0, 7, u32::MAX];
        assert_eq!(postings_from(&postings_bytes(&list)).unwrap(), list);
        assert!(postings_from(&[1, 2, 3]).is_none());
    }
}
