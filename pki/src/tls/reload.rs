//! Hot reload of TLS material: a directory watch (Kubernetes swaps a `..data` symlink inside the mounted
//! directory, so the directories, not the files, are watched) plus a periodic check. Material is
//! validated before it is published; refused material leaves the old in use.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::material::TlsError;

/// Something whose TLS material can be reloaded from files.
pub trait Reloadable: Send + Sync + 'static {
    /// Re-reads the files; publishes new material when it changed and is valid. `Ok(true)` when new
    /// material was published.
    fn reload(&self) -> Result<bool, TlsError>;
    /// The files to watch.
    fn paths(&self) -> Vec<PathBuf>;
    /// A name for log lines.
    fn name(&self) -> &str;
}

/// A configuration that lives in a [`Live`] holder; every such type is [`Reloadable`].
pub(crate) trait LiveBacked {
    type Config;
    fn live(&self) -> &Live<Self::Config>;
}

impl<T> Reloadable for T
where
    T: LiveBacked + Send + Sync + 'static,
{
    fn reload(&self) -> Result<bool, TlsError> {
        self.live().reload()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.live().paths()
    }

    fn name(&self) -> &str {
        self.live().name()
    }
}

/// Owns the watch task; dropping it (or [`Watcher::stop`]) stops watching.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Stops the watch and waits for the task to end.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts watching `target`'s files: reload on change (debounced) and every `period`.
pub fn watch(target: Arc<dyn Reloadable>, period: Duration) -> Result<Watcher, TlsError> {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let mut fs_watcher = meridian_core::fswatch::watcher(move |_| {
        let _ = ev_tx.send(());
    })
    .map_err(|e| TlsError::Config(format!("cannot start file watcher: {e}")))?;
    let dirs: BTreeSet<PathBuf> = target
        .paths()
        .iter()
        .filter_map(|p| {
            p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_owned()
                }
            })
        })
        .collect();
    for d in &dirs {
        fs_watcher
            .watch(d, notify::RecursiveMode::NonRecursive)
            .map_err(|e| TlsError::Config(format!("cannot watch {}: {e}", d.display())))?;
    }
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        // The notify watcher lives as long as this task.
        let _fs_watcher = fs_watcher;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                ev = ev_rx.recv() => {
                    if ev.is_none() {
                        break;
                    }
                    // Debounce: a symlink swap or an editor save is several events.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while ev_rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
            let t = target.clone();
            let name = target.name().to_owned();
            match tokio::task::spawn_blocking(move || t.reload()).await {
                Ok(Ok(true)) => tracing::info!(tls = %name, "TLS material reloaded"),
                Ok(Ok(false)) => {}
                // Logged (once per bad content) and counted by the reloadable itself.
                Ok(Err(_)) => {}
                Err(e) => tracing::error!(tls = %name, error = %e, "TLS reload task failed"),
            }
        }
    });
    Ok(Watcher {
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// A configuration built from files, published behind an `ArcSwap` and rebuilt when the files change.
/// New material is built (and so validated) completely before it replaces the old; refused material is
/// logged once per distinct content and counted.
pub(crate) struct Live<C> {
    name: String,
    paths: Vec<PathBuf>,
    config: arc_swap::ArcSwap<C>,
    state: std::sync::Mutex<ReloadState>,
    metrics: super::TlsMetrics,
    build: Box<dyn Fn() -> Result<(C, i64), TlsError> + Send + Sync>,
}

impl<C> Live<C> {
    /// Builds the first configuration; an error here is fatal at start-up. `build` returns the
    /// configuration and the certificate's `notAfter` (Unix seconds, 0 when there is none).
    pub(crate) fn new(
        name: &str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<(C, i64), TlsError> + Send + Sync + 'static,
    ) -> Result<Live<C>, TlsError> {
        let fp = fingerprint(&paths);
        let (config, not_after) = build()?;
        let metrics = super::TlsMetrics::default();
        metrics.cert_not_after.set(not_after);
        Ok(Live {
            name: name.to_owned(),
            paths,
            config: arc_swap::ArcSwap::from_pointee(config),
            state: std::sync::Mutex::new(ReloadState::new(fp)),
            metrics,
            build: Box::new(build),
        })
    }

    pub(crate) fn current(&self) -> Arc<C> {
        self.config.load_full()
    }

    pub(crate) fn metrics(&self) -> &super::TlsMetrics {
        &self.metrics
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.paths.clone()
    }

    pub(crate) fn reload(&self) -> Result<bool, TlsError> {
        let fp = fingerprint(&self.paths);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.changed(fp) {
            return Ok(false);
        }
        match (self.build)() {
            Ok((config, not_after)) => {
                self.config.store(Arc::new(config));
                state.published(fp);
                self.metrics.reloads.inc();
                self.metrics.cert_not_after.set(not_after);
                Ok(true)
            }
            Err(e) => {
                state.refused(fp);
                self.metrics.reload_failures.inc();
                tracing::warn!(tls = %self.name, error = %e, "new TLS material refused; keeping the current one");
                Err(e)
            }
        }
    }
}

/// Tracks what was loaded last, so unchanged files cost no rebuild and refused content is logged once.
#[derive(Debug, Default)]
pub(crate) struct ReloadState {
    current: u64,
    last_refused: Option<u64>,
}

impl ReloadState {
    pub(crate) fn new(fingerprint: u64) -> ReloadState {
        ReloadState {
            current: fingerprint,
            last_refused: None,
        }
    }

    /// Whether content with this fingerprint needs a rebuild.
    pub(crate) fn changed(&self, fingerprint: u64) -> bool {
        fingerprint != self.current && Some(fingerprint) != self.last_refused
    }

    pub(crate) fn published(&mut self, fingerprint: u64) {
        self.current = fingerprint;
        self.last_refused = None;
    }

    pub(crate) fn refused(&mut self, fingerprint: u64) {
        self.last_refused = Some(fingerprint);
    }
}

/// A fingerprint of the files' contents (missing files count as empty).
pub(crate) fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for p in paths {
        use std::hash::Hash;
        p.hash(&mut h);
        std::fs::read(p).unwrap_or_default().hash(&mut h);
    }
    std::hash::Hasher::finish(&h)
}
