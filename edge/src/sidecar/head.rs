//! The head's range read from Prometheus' WAL in the shared data directory (Beyond Thanos, whose
//! sidecar uses remote read for everything): a copy of the head kept by following the WAL
//! ([`meridian_tsdb::promwal::mirror`]), read again up to its end on every query and every 5 s in the
//! background. Remote read stays the way when there is no WAL to follow (`--tsdb.read-wal=false`, a
//! data directory not shared) or the WAL holds what the copy does not (native histograms,
//! tombstones, out-of-order samples): each such read is counted, the reason logged once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::runtime::Task;
use meridian_core::series::SourceChunk;
use meridian_tsdb::promwal::mirror::{HeadMirror, MirrorError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// How often the copy reads what Prometheus appended when no query asks.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(5);

type Reads = Family<Vec<(String, String)>, Counter>;

/// See the module documentation.
#[derive(Debug)]
pub struct HeadReader {
    mirror: Option<Arc<HeadMirror>>,
    reads: Reads,
    warned: AtomicBool,
}

impl HeadReader {
    /// Following the WAL under `tsdb_path` when given; remote read only otherwise.
    pub fn new(tsdb_path: Option<&Path>) -> HeadReader {
        HeadReader {
            mirror: tsdb_path.map(|p| Arc::new(HeadMirror::new(p))),
            reads: Reads::default(),
            warned: AtomicBool::new(false),
        }
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "meridian_sidecar_head_reads",
            "Reads of the head's range, by the way they took (wal: Prometheus' WAL followed in place; remote_read; http_api: label sets only).",
            self.reads.clone(),
        );
    }

    /// Counts one read of the head that took `via`.
    pub fn count(&self, via: &str) {
        self.reads
            .get_or_create(&vec![("via".to_owned(), via.to_owned())])
            .inc();
    }

    /// Reads of the head that took `via` so far.
    pub fn reads(&self, via: &str) -> u64 {
        self.reads
            .get_or_create(&vec![("via".to_owned(), via.to_owned())])
            .get()
    }

    /// The series matching `matchers` with samples in `[from, maxt]` from the WAL, data before
    /// `split` dropped for good; `None` when the WAL cannot answer (the caller uses Prometheus).
    pub async fn from_wal(
        &self,
        matchers: &[Matcher],
        from: i64,
        maxt: i64,
        with_data: bool,
        split: i64,
    ) -> Option<Vec<(Labels, Vec<SourceChunk>)>> {
        let mirror = self.mirror.clone()?;
        let matchers = matchers.to_vec();
        let got = tokio::task::spawn_blocking(move || {
            mirror.select(&matchers, from, maxt, with_data, split)
        })
        .await;
        match got {
            Ok(Ok(series)) => {
                self.count("wal");
                Some(series)
            }
            Ok(Err(e)) => {
                self.step_aside(&e);
                None
            }
            Err(e) => {
                tracing::warn!(err = %e, "reading Prometheus' WAL failed; remote read instead");
                None
            }
        }
    }

    fn step_aside(&self, e: &MirrorError) {
        match e {
            MirrorError::Unusable(_) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(err = %e, "the head's range is read through remote read from now on");
                }
            }
            _ => tracing::warn!(err = %e, "the head's range read through remote read this time"),
        }
    }

    /// Reads what Prometheus appended every 5 s, so a query finds little to read first.
    pub fn follow(self: &Arc<Self>) -> Option<Task> {
        let mirror = self.mirror.clone()?;
        let me = self.clone();
        Some(Task::spawn(
            "sidecar WAL follower",
            move |stop| async move {
                loop {
                    let m = mirror.clone();
                    match tokio::task::spawn_blocking(move || m.catch_up()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e @ MirrorError::Unusable(_))) => {
                            me.step_aside(&e);
                            return;
                        }
                        Ok(Err(e)) => tracing::debug!(err = %e, "following Prometheus' WAL"),
                        Err(e) => tracing::warn!(err = %e, "following Prometheus' WAL failed"),
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                    }
                }
            },
        ))
    }
}
