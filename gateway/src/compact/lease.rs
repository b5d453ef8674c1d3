//! The compactor's lease: one object in the bucket, taken with a conditional put, so a second
//! compactor on the same bucket (and the same `--selector.relabel-config` shard) waits instead of
//! compacting the same blocks twice. Thanos has none: its docs ask for a singleton.
//!
//! The object `meridian-compactor-lease-<shard>.json` (`<shard>` = XXH64 of the selector, `all`
//! without one; not a block directory, so readers ignore it) holds `{"holder", "expires_ms"}`.
//! - **Take**: create it only if absent (`If-None-Match: *` on S3, an atomic link on a filesystem).
//! - **Held by another** until `expires_ms`: wait. After that it is taken over with a put conditional
//!   on the ETag read (`If-Match`); where the store cannot (a filesystem bucket), by delete-then-create
//!   and reading it back, so of two takers at most one finds its own name.
//! - **Renewed** before each pass and every third of the TTL during one; a renewal that finds
//!   another holder stops the pass at the next compaction.
//! - **Released** (deleted) when the compactor stops.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use meridian_core::time::Clock;

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    holder: String,
    expires_ms: i64,
}

/// Whether this compactor holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Held { expires_ms: i64 },
    HeldBy { holder: String, expires_ms: i64 },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    holder: String,
    ttl_ms: i64,
    clock: Clock,
}

impl Lease {
    /// A lease for the shard `selector` (the `--selector.relabel-config` text, empty for all).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        selector: &str,
        holder: String,
        ttl_ms: i64,
        clock: Clock,
    ) -> Lease {
        let shard = if selector.trim().is_empty() {
            "all".to_owned()
        } else {
            format!("{:016x}", xxhash_rust::xxh64::xxh64(selector.as_bytes(), 0))
        };
        Lease {
            store,
            path: ObjectPath::from(format!("meridian-compactor-lease-{shard}.json")),
            holder,
            ttl_ms,
            clock,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn path(&self) -> &ObjectPath {
        &self.path
    }

    fn body(&self) -> (PutPayload, i64) {
        let expires_ms = self.clock.now_ms().saturating_add(self.ttl_ms);
        let b = Body {
            holder: self.holder.clone(),
            expires_ms,
        };
        (
            PutPayload::from(serde_json::to_vec(&b).unwrap_or_default()),
            expires_ms,
        )
    }

    /// Takes or renews the lease, or says who holds it.
    pub async fn acquire(&self) -> Result<LeaseState, object_store::Error> {
        let (payload, expires_ms) = self.body();
        match self
            .store
            .put_opts(&self.path, payload, PutMode::Create.into())
            .await
        {
            Ok(_) => return Ok(LeaseState::Held { expires_ms }),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let got = match self.store.get(&self.path).await {
            Ok(g) => g,
            // Released in between: try again next time.
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(LeaseState::HeldBy {
                    holder: String::new(),
                    expires_ms: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await?;
        // An unreadable lease counts as expired.
        let current = serde_json::from_slice::<Body>(&bytes).unwrap_or(Body {
            holder: String::new(),
            expires_ms: 0,
        });
        if current.holder != self.holder && current.expires_ms > self.clock.now_ms() {
            return Ok(LeaseState::HeldBy {
                holder: current.holder,
                expires_ms: current.expires_ms,
            });
        }
        self.replace(version).await
    }

    /// Replaces the lease read at `version` with ours.
    async fn replace(&self, version: UpdateVersion) -> Result<LeaseState, object_store::Error> {
        let (payload, expires_ms) = self.body();
        let conditional = PutOptions::from(PutMode::Update(version));
        match self
            .store
            .put_opts(&self.path, payload.clone(), conditional)
            .await
        {
            Ok(_) => return Ok(LeaseState::Held { expires_ms }),
            Err(object_store::Error::Precondition { .. }) => return self.read_holder().await,
            Err(object_store::Error::NotImplemented { .. }) => {}
            Err(e) => return Err(e),
        }
        // No conditional update here: delete, create, and read back.
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        match self
            .store
            .put_opts(&self.path, payload, PutMode::Create.into())
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => self.read_holder().await,
            Err(e) => Err(e),
        }
    }

    async fn read_holder(&self) -> Result<LeaseState, object_store::Error> {
        let bytes = match self.store.get(&self.path).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(LeaseState::HeldBy {
                    holder: String::new(),
                    expires_ms: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let b = serde_json::from_slice::<Body>(&bytes).unwrap_or(Body {
            holder: String::new(),
            expires_ms: 0,
        });
        Ok(if b.holder == self.holder {
            LeaseState::Held {
                expires_ms: b.expires_ms,
            }
        } else {
            LeaseState::HeldBy {
                holder: b.holder,
                expires_ms: b.expires_ms,
            }
        })
    }

    /// Deletes the lease if it is still ours.
    pub async fn release(&self) -> Result<(), object_store::Error> {
        if matches!(self.read_holder().await?, LeaseState::Held { .. }) {
            match self.store.delete(&self.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    async fn two_compactors(store: Arc<dyn ObjectStore>) {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let clock = {
            let now = now.clone();
            Clock::from_fn(move || now.load(Ordering::SeqCst))
        };
        let a = Lease::new(store.clone(), "", "a".into(), 60_000, clock.clone());
        let b = Lease::new(store.clone(), "", "b".into(), 60_000, clock.clone());
        assert_eq!(
            a.acquire().await.unwrap(),
            LeaseState::Held {
                expires_ms: 1_060_000
            }
        );
        assert_eq!(
            b.acquire().await.unwrap(),
            LeaseState::HeldBy {
                holder: "a".into(),
                expires_ms: 1_060_000
            }
        );
        // a renews; b still waits.
        now.store(1_030_000, Ordering::SeqCst);
        assert!(matches!(
            a.acquire().await.unwrap(),
            LeaseState::Held {
                expires_ms: 1_090_000
            }
        ));
        assert!(matches!(
            b.acquire().await.unwrap(),
            LeaseState::HeldBy { .. }
        ));
        // a stops renewing (killed): b takes over once it expires, and a then finds it lost.
        now.store(1_090_001, Ordering::SeqCst);
        assert!(matches!(
            b.acquire().await.unwrap(),
            LeaseState::Held { .. }
        ));
        assert!(matches!(
            a.read_holder().await.unwrap(),
            LeaseState::HeldBy { ref holder, .. } if holder == "b"
        ));
        // Another shard has its own lease.
        let c = Lease::new(store.clone(), "- action: keep\n", "c".into(), 60_000, clock);
        assert!(matches!(
            c.acquire().await.unwrap(),
            LeaseState::Held { .. }
        ));
        // a's release leaves b's lease alone; b's removes it.
        a.release().await.unwrap();
        assert!(matches!(
            b.read_holder().await.unwrap(),
            LeaseState::Held { .. }
        ));
        b.release().await.unwrap();
        assert!(matches!(
            a.acquire().await.unwrap(),
            LeaseState::Held { .. }
        ));
    }

    #[tokio::test]
    async fn one_holder_at_a_time_on_a_filesystem_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        two_compactors(fs).await;
        // The in-memory store has conditional updates (ETags), as S3 does.
        two_compactors(Arc::new(object_store::memory::InMemory::new())).await;
    }
}
