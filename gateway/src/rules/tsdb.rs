//! The gateway's own TSDB (the edge's TSDB library) for recording rules' output and `ALERTS` /
//! `ALERTS_FOR_STATE`: written through its WAL (so it survives a restart), cut into blocks and pruned
//! by retention in the background, and served over the StoreAPI with the gateway's external labels —
//! the fan-out asks it like any store, so recorded series are queryable through the gateway.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_storeapi::Store;
use meridian_storeapi::leaf::LeafStore;
use meridian_tsdb::db::{Db, DbOptions, DbSource};
use tokio_util::sync::CancellationToken;

use super::RuleSink;

/// The rule TSDB and its store.
#[derive(Clone)]
pub struct RuleTsdb {
    db: Arc<Db>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for RuleTsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleTsdb").finish_non_exhaustive()
    }
}

impl RuleTsdb {
    /// Opens (or creates) the TSDB in `dir` (`--data-dir`), replaying its WAL.
    pub fn open(
        dir: &Path,
        external_labels: Labels,
        retention: Duration,
    ) -> Result<RuleTsdb, Error> {
        let opts = DbOptions {
            retention_time: Some(retention.as_millis() as i64),
            ..DbOptions::default()
        };
        let db = Arc::new(Db::open(dir, opts).map_err(|e| {
            let message = format!("--data-dir {}: {e}", dir.display());
            Error::with_source(ErrorKind::Internal, message, e)
        })?);
        let store: Arc<dyn Store> = Arc::new(
            LeafStore::from_source(DbSource(db.clone()), external_labels).with_component("rule"),
        );
        Ok(RuleTsdb { db, store })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Cuts blocks and applies retention every `every` until `stop`, then once more.
    pub async fn housekeeping(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            let db = self.db.clone();
            let r = tokio::task::spawn_blocking(move || {
                db.compact()?;
                db.apply_retention()?;
                db.refresh_metrics();
                Ok::<(), meridian_tsdb::db::DbError>(())
            })
            .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "rule TSDB housekeeping failed"),
                Err(e) => tracing::error!(error = %e, "rule TSDB housekeeping task failed"),
            }
            if stopping {
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl RuleSink for RuleTsdb {
    async fn write(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut app = db.appender();
            let mut first_error = None;
            for (l, t, v) in &samples {
                if let Err(e) = app.add(l, *t, *v) {
                    first_error.get_or_insert_with(|| {
                        Error::with_source(
                            ErrorKind::Internal,
                            format!("rule output not stored: {l}: {e}"),
                            e,
                        )
                    });
                }
            }
            app.commit().map_err(|e| {
                Error::with_source(
                    ErrorKind::Internal,
                    format!("rule output not stored: {e}"),
                    e,
                )
            })?;
            first_error.map_or(Ok(()), Err)
        })
        .await
        .map_err(|e| Error::internal(format!("rule output writer failed: {e}")))?
    }
}
