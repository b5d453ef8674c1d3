//! A receiver's multi-tenant storage, as Thanos Receive's `MultiTSDB` (v0.25.1, with HEAD's idle
//! pruning): one TSDB per tenant under `<tsdb.path>/tenants/<tenant>`, each with its own external
//! labels and its own shipper, all served through one StoreAPI (one label set per tenant in `Info`).
//!
//! - **External labels** of a tenant: the hashring's `external_labels` for a hashring naming it
//!   exactly, overridden by the node's labels (`global.external_labels` and `--label`), overridden
//!   by `<tenant label>=<tenant>` (Thanos `multitsdb.go`: `ExtendSortedLabels`, the later wins).
//! - **Opening**: tenants found on disk at start; a tenant's first write opens its TSDB (one open
//!   at a time, on the blocking pool, so concurrent first writes wait for the same open, as HEAD's
//!   singleflight does).
//! - **Housekeeping**: each tenant's TSDB cuts blocks, applies retention and wakes its shipper,
//!   as the edge's own TSDB does.
//! - **Idle tenants**: a tenant with no write and no sample newer than the idle time (the TSDB
//!   retention, as Thanos) whose blocks are all uploaded (or with no bucket) is closed and its
//!   directory deleted (HEAD `pruneTSDB`; checked every minute rather than on Thanos' clock slots).
//! - **Bounds**: the tenant name is a directory name, so it must be a single path component of at
//!   most 255 bytes ([`validate_tenant`]); at most `max_tenants` tenants exist at once.
//!
//! Directory layout differs from Thanos' (`<tsdb.path>/<tenant>`): the edge's own TSDB already owns
//! `<tsdb.path>`, whose entries (`wal`, block ULIDs) a tenant name could collide with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_storeapi::Store;
use meridian_storeapi::leaf::{LeafStore, SeriesLimits};
use meridian_storeapi::multi::MultiStore;
use meridian_tsdb::db::{Db, DbOptions};
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::{Shipper, ShipperOptions};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::agent::{EdgeSource, ShipperTask, housekeeping};
use crate::metadata::MetadataStore;

/// How tenants are stored.
#[derive(Debug, Clone)]
pub struct TenantsOptions {
    /// `<tsdb.path>/tenants`.
    pub root: PathBuf,
    pub db: DbOptions,
    /// The node's external labels (`global.external_labels` and `--label`).
    pub node_labels: Labels,
    /// `--receive.tenant-label-name`.
    pub tenant_label: String,
    pub objstore: Option<Bucket>,
    pub shipper: ShipperOptions,
    pub shipper_grace: Duration,
    pub series_limits: SeriesLimits,
    /// Most tenants at once; a write for one more is refused (429).
    pub max_tenants: usize,
    /// A tenant idle this long is pruned (`None`: never).
    pub idle_after: Option<Duration>,
}

/// One tenant's TSDB and its tasks.
pub struct Tenant {
    pub name: String,
    pub db: Arc<Db>,
    pub labels: Labels,
    store: Arc<dyn Store>,
    stop: CancellationToken,
    housekeeping: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shipper: std::sync::Mutex<Option<ShipperTask>>,
    /// Wall-clock ms of the last write.
    last_write_ms: AtomicI64,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// Notes a write now (an idle tenant is one without).
    pub fn touch(&self) {
        self.last_write_ms
            .store(meridian_core::time::now_ms(), Ordering::Relaxed);
    }

    /// The shipper, when blocks are uploaded.
    pub fn shipper(&self) -> Option<Arc<Shipper>> {
        self.shipper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|s| s.shipper.clone())
    }

    /// Stops its tasks: housekeeping, then a last cut of the blocks that are due, then the shipper
    /// (within its grace period).
    async fn close(&self) {
        self.stop.cancel();
        let hk = self
            .housekeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = hk {
            let _ = h.await;
        }
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(tenant = %self.name, error = %e, "closing tenant: compaction failed")
            }
            Err(e) => {
                tracing::error!(tenant = %self.name, error = %e, "closing tenant: compaction task failed")
            }
        }
        let shipper = self
            .shipper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(s) = shipper {
            s.finish().await;
        }
    }
}

/// Checks a tenant name: one path component (no `/`, not `.` or `..`, no NUL), 1 to 255 bytes.
/// Thanos (HEAD `pkg/tenancy`) refuses names with `/`; the rest keeps the name a directory name.
pub fn validate_tenant(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 255 {
        return Err(format!(
            "tenant name must be 1 to 255 bytes, got {}",
            t.len()
        ));
    }
    if t == "." || t == ".." || t.contains(['/', '\0']) {
        return Err(format!(
            "tenant name {:?} is not valid: it must not be . or .. nor contain / or NUL",
            meridian_core::error::excerpt(t, 64)
        ));
    }
    Ok(())
}

/// Creates the tenants' root if needed and lists the tenant directories in it.
fn tenant_dirs(root: &std::path::Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(root)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", root.display()))?;
    let mut found = Vec::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        match e.file_name().into_string() {
            Ok(name) if validate_tenant(&name).is_ok() => found.push(name),
            _ => tracing::warn!(dir = %e.path().display(), "not a tenant directory; left alone"),
        }
    }
    Ok(found)
}

/// Every tenant's TSDB. See the module documentation.
pub struct Tenants {
    opts: TenantsOptions,
    map: RwLock<BTreeMap<String, Arc<Tenant>>>,
    opening: tokio::sync::Mutex<()>,
    store: Arc<MultiStore>,
    /// Members of `store` besides the tenants (the edge's own TSDB).
    fixed: Vec<Arc<dyn Store>>,
    metadata: Arc<MetadataStore>,
    pub count: Gauge,
    /// Set by [`Tenants::close`]: no tenant opens after it.
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("root", &self.opts.root)
            .field("tenants", &self.names())
            .finish_non_exhaustive()
    }
}

impl Tenants {
    /// Opens the tenants found under the root; `store` serves them next to `fixed`.
    pub async fn open(
        opts: TenantsOptions,
        store: Arc<MultiStore>,
        fixed: Vec<Arc<dyn Store>>,
        metadata: Arc<MetadataStore>,
        hashring_labels: impl Fn(&str) -> Labels,
    ) -> anyhow::Result<Arc<Tenants>> {
        let t = Arc::new(Tenants {
            opts,
            map: RwLock::new(BTreeMap::new()),
            opening: tokio::sync::Mutex::new(()),
            store,
            fixed,
            metadata,
            count: Gauge::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let root = t.opts.root.clone();
        let found = tokio::task::spawn_blocking(move || tenant_dirs(&root)).await??;
        for name in found {
            let labels = hashring_labels(&name);
            t.get(&name, labels).await?;
        }
        t.publish();
        Ok(t)
    }

    /// The tenants' names.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Tenant>>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Tenant>>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A tenant, if open.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.read().get(name).cloned()
    }

    /// The tenant's TSDB, opened (and served) on first use; `hashring_labels`: the external labels
    /// its hashring gives it.
    pub async fn get(&self, name: &str, hashring_labels: Labels) -> Result<Arc<Tenant>, Error> {
        if let Some(t) = self.tenant(name) {
            return Ok(t);
        }
        validate_tenant(name).map_err(Error::bad_data)?;
        let _one = self.opening.lock().await;
        if let Some(t) = self.tenant(name) {
            return Ok(t);
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the receiver is shutting down",
            ));
        }
        if self.read().len() >= self.opts.max_tenants {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "tenant {name:?} refused: this receiver holds its maximum of {} tenants (--receive.max-tenants)",
                    self.opts.max_tenants
                ),
            ));
        }
        let dir = self.opts.root.join(name);
        let dbo = self.opts.db.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&dir, dbo))
            .await
            .map_err(|e| Error::internal(format!("opening tenant {name:?}: {e}")))?
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Internal,
                    format!("opening tenant {name:?}'s TSDB"),
                    e,
                )
            })?;
        let db = Arc::new(db);
        let labels = hashring_labels
            .merged_with(&self.opts.node_labels)
            .merged_with(&Labels::from_pairs([(
                self.opts.tenant_label.as_str(),
                name,
            )]));
        let store: Arc<dyn Store> = Arc::new(
            LeafStore::from_source(
                EdgeSource {
                    db: db.clone(),
                    metadata: self.metadata.clone(),
                },
                labels.clone(),
            )
            .with_component("receive")
            .with_limits(self.opts.series_limits),
        );
        let shipper = match &self.opts.objstore {
            None => None,
            Some(bucket) => {
                let s = Shipper::new(
                    bucket.clone(),
                    db.clone(),
                    labels.clone(),
                    ShipperOptions {
                        source: "receive".into(),
                        ..self.opts.shipper.clone()
                    },
                )
                .map_err(|e| {
                    Error::with_source(ErrorKind::Internal, format!("tenant {name:?}: shipper"), e)
                })?;
                Some(Arc::new(s))
            }
        };
        let stop = CancellationToken::new();
        let hk = tokio::spawn(housekeeping(
            db.clone(),
            shipper.as_ref().map(|s| s.waker()),
            stop.clone(),
        ));
        let shipper = shipper.map(|s| ShipperTask::start(s, self.opts.shipper_grace));
        let t = Arc::new(Tenant {
            name: name.to_owned(),
            db,
            labels,
            store,
            stop,
            housekeeping: std::sync::Mutex::new(Some(hk)),
            shipper: std::sync::Mutex::new(shipper),
            last_write_ms: AtomicI64::new(meridian_core::time::now_ms()),
        });
        self.write().insert(name.to_owned(), t.clone());
        self.publish();
        tracing::info!(tenant = name, labels = %t.labels, "tenant TSDB opened");
        Ok(t)
    }

    /// Makes the StoreAPI serve the current tenants.
    fn publish(&self) {
        let tenants: Vec<Arc<dyn Store>> = self.read().values().map(|t| t.store.clone()).collect();
        self.count
            .set(i64::try_from(tenants.len()).unwrap_or(i64::MAX));
        let mut members = self.fixed.clone();
        members.extend(tenants);
        self.store.set_members(members);
    }

    /// Closes and deletes the tenants idle past `idle_after` (see the module documentation).
    pub async fn prune_idle(&self) {
        let Some(idle) = self.opts.idle_after else {
            return;
        };
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let now = meridian_core::time::now_ms();
        let candidates: Vec<Arc<Tenant>> = self
            .read()
            .values()
            .filter(|t| {
                now.saturating_sub(t.last_write_ms.load(Ordering::Relaxed)) > idle_ms
                    && now.saturating_sub(t.db.head_max_time()) > idle_ms
            })
            .cloned()
            .collect();
        for t in candidates {
            if let Some(s) = t.shipper()
                && !t.db.blocks().iter().all(|b| s.is_uploaded(&b.ulid))
            {
                continue;
            }
            let _one = self.opening.lock().await;
            // A write may have come meanwhile.
            if now.saturating_sub(t.last_write_ms.load(Ordering::Relaxed)) <= idle_ms {
                continue;
            }
            self.write().remove(&t.name);
            self.publish();
            t.close().await;
            let dir = t.db.dir().to_path_buf();
            drop(t);
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
                Ok(Ok(())) => tracing::info!("idle tenant pruned"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "pruning an idle tenant: cannot delete its directory")
                }
                Err(e) => tracing::error!(error = %e, "pruning an idle tenant failed"),
            }
        }
    }

    /// Closes every tenant (ordered shutdown: housekeeping, last block cut, shippers); the StoreAPI
    /// stops serving them, and each TSDB closes when its last reader is done.
    pub async fn close(&self) {
        let all: Vec<Arc<Tenant>> = {
            let _one = self.opening.lock().await;
            self.closed.store(true, Ordering::SeqCst);
            std::mem::take(&mut *self.write()).into_values().collect()
        };
        self.publish();
        for t in all {
            t.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_tenant;

    #[test]
    fn tenant_names_are_one_path_component() {
        for ok in ["default-tenant", "team-a", "a.b", "..x", "x y", "é"] {
            assert!(validate_tenant(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(256);
        for bad in ["", ".", "..", "a/b", "/", "../x", "a\0b", long.as_str()] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }
}
