//! Thanos' config reloader (`thanos sidecar --reloader.*`): renders the Prometheus config template,
//! watches it and the rule directories, and tells Prometheus to reload when their contents change.
//!
//! Semantics followed: thanos v0.25.1 `pkg/reloader/reloader.go` (the version of seed 000, whose log
//! lines these are), with v0.42's bound on the first apply.
//! - **Render** (only with `--reloader.config-envsubst-file`): a gzip input (first bytes `1f 8b 08`) is
//!   decompressed; `$(VAR)` — that form only, names `[A-Za-z0-9_]+` — becomes the variable's value in
//!   one pass (values are not expanded again); an unset variable is an error and nothing is written.
//!   The output is written to `<out>.tmp` and renamed over `<out>`.
//! - **Hashes**: sha256 of `0xff, path, 0xff, bytes` of the config *input*, and one over every file
//!   under the rule directories (walked recursively in lexical order, symlinked files followed,
//!   symlinked directories not entered). A reload is sent when either differs from the last
//!   *successful* reload's; the first apply always reloads.
//! - **Reload**: `POST <prometheus.url>/-/reload`, success on 200 only; a failure is retried every
//!   `--reloader.retry-interval` until `--reloader.watch-interval` has passed since the apply began,
//!   then the next apply tries again (the hashes were not stored).
//! - **When**: at start (with a config file), on a file event, and `--reloader.watch-interval` after
//!   the last apply began. Events arriving meanwhile collapse into one.
//!
//! Two deliberate differences, both where Thanos misses changes its users expect picked up:
//! - The config file's *directory* is watched, not the file: a Kubernetes ConfigMap update swaps a
//!   symlink, which a watch on the file never reports (Thanos then waits for the 3-minute tick).
//! - Rule directories are matched after normalizing the path: Thanos drops every event of
//!   `--reloader.rule-dir=/etc/prometheus/rules/` (seed 000's form) because of the trailing slash.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The rendered config may not exceed this (a gzip input is read no further).
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Rule directories are walked this deep at most.
const MAX_DEPTH: usize = 32;
/// And hash this many files at most.
const MAX_FILES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ReloaderError {
    #[error("read file: {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read compressed config file: {0}")]
    Gzip(std::io::Error),
    #[error("config file {path}: rendered size exceeds {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("expand environment variables: found reference to unset environment variable {0:?}")]
    UnsetVariable(String),
    #[error("write file: {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("build hash: {path}: {source}")]
    Hash {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("build hash: {0}: more than {MAX_FILES} files or deeper than {MAX_DEPTH} levels")]
    TooManyFiles(PathBuf),
    #[error("add {path} to watcher: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("the reloader's file work failed: {0}")]
    Task(String),
}

/// What tells Prometheus to reload (the seam: HTTP now, a signal later).
#[async_trait::async_trait]
pub trait Trigger: Send + Sync + std::fmt::Debug {
    /// `Err`: the message Thanos logs after `trigger reload: `.
    async fn reload(&self) -> Result<(), String>;
}

/// `--reloader.*`.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_file: Option<PathBuf>,
    pub envsubst_file: Option<PathBuf>,
    pub rule_dirs: Vec<PathBuf>,
    pub watch_interval: Duration,
    pub retry_interval: Duration,
}

/// Thanos' reloader metrics (registered under the `thanos_sidecar_` prefix by the sidecar).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub reloads: Counter,
    pub reloads_failed: Counter,
    pub last_reload_successful: Gauge,
    pub last_reload_success_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub apply_operations: Counter,
    pub apply_operations_failed: Counter,
    pub watches: Gauge,
    pub watch_events: Counter,
    pub watch_errors: Counter,
}

impl Metrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "reloader_reloads",
            "Total number of reload requests.",
            self.reloads.clone(),
        );
        r.register(
            "reloader_reloads_failed",
            "Total number of reload requests that failed.",
            self.reloads_failed.clone(),
        );
        r.register(
            "reloader_last_reload_successful",
            "Whether the last reload attempt was successful",
            self.last_reload_successful.clone(),
        );
        r.register(
            "reloader_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful reload",
            self.last_reload_success_timestamp.clone(),
        );
        r.register(
            "reloader_config_apply_operations",
            "Total number of config apply operations.",
            self.apply_operations.clone(),
        );
        r.register(
            "reloader_config_apply_operations_failed",
            "Total number of config apply operations that failed.",
            self.apply_operations_failed.clone(),
        );
        r.register(
            "reloader_watches",
            "Number of resources watched by the reloader.",
            self.watches.clone(),
        );
        r.register(
            "reloader_watch_events",
            "Total number of events received by the reloader from the watcher.",
            self.watch_events.clone(),
        );
        r.register(
            "reloader_watch_errors",
            "Total number of errors received by the reloader from the watcher.",
            self.watch_errors.clone(),
        );
    }
}

/// Decompresses (when gzip) and expands `$(VAR)` through `lookup`.
pub fn render(
    path: &Path,
    input: &[u8],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, ReloaderError> {
    let plain;
    let text = if input.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(input)
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(ReloaderError::Gzip)?;
        plain = out;
        plain.as_slice()
    } else {
        input
    };
    let too_large = || ReloaderError::TooLarge {
        path: path.to_owned(),
    };
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(b"$(") {
            let name_len = text[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            let close = i + 2 + name_len;
            if name_len > 0 && text.get(close) == Some(&b')') {
                // The name is ASCII, so this cannot fail.
                let name = std::str::from_utf8(&text[i + 2..close]).unwrap_or_default();
                let value =
                    lookup(name).ok_or_else(|| ReloaderError::UnsetVariable(name.to_owned()))?;
                out.extend_from_slice(value.as_bytes());
                if out.len() as u64 > MAX_CONFIG_BYTES {
                    return Err(too_large());
                }
                i = close + 1;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    Ok(out)
}

fn hash_file(ctx: &mut aws_lc_rs::digest::Context, path: &Path, bytes: &[u8]) {
    ctx.update(&[0xff]);
    ctx.update(path.as_os_str().as_encoded_bytes());
    ctx.update(&[0xff]);
    ctx.update(bytes);
}

/// The hash of every file under `dirs`, in flag order, each walked from its resolved path.
pub fn hash_dirs(dirs: &[PathBuf]) -> Result<Vec<u8>, ReloaderError> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut files = 0usize;
    for dir in dirs {
        let root = std::fs::canonicalize(dir).map_err(|source| ReloaderError::Hash {
            path: dir.clone(),
            source,
        })?;
        walk(&root, 0, &mut ctx, &mut files)?;
    }
    Ok(ctx.finish().as_ref().to_vec())
}

fn walk(
    dir: &Path,
    depth: usize,
    ctx: &mut aws_lc_rs::digest::Context,
    files: &mut usize,
) -> Result<(), ReloaderError> {
    let hash_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ReloaderError::Hash { path, source }
    };
    if depth > MAX_DEPTH {
        return Err(ReloaderError::TooManyFiles(dir.to_owned()));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(hash_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(hash_err(dir))?;
    names.sort();
    for p in names {
        // Followed like Go's `os.Stat`: a symlink to a file is hashed, one to a directory skipped.
        let meta = std::fs::metadata(&p).map_err(hash_err(&p))?;
        if meta.is_dir() {
            let link = std::fs::symlink_metadata(&p).map_err(hash_err(&p))?;
            if !link.file_type().is_symlink() {
                walk(&p, depth + 1, ctx, files)?;
            }
            continue;
        }
        *files += 1;
        if *files > MAX_FILES {
            return Err(ReloaderError::TooManyFiles(dir.to_owned()));
        }
        let bytes = std::fs::read(&p).map_err(hash_err(&p))?;
        hash_file(ctx, &p, &bytes);
    }
    Ok(())
}

/// Renders the config (when an output is set) and hashes the input and the rule directories.
/// The config input's hash and the rule directories' (`None`: not configured).
type Hashes = (Option<Vec<u8>>, Option<Vec<u8>>);

fn prepare(opts: &Options, env: &Env) -> Result<Hashes, ReloaderError> {
    let cfg_hash = match &opts.config_file {
        None => None,
        Some(path) => {
            let input = read_bounded(path)?;
            if let Some(out) = &opts.envsubst_file {
                let rendered = render(path, &input, &**env)?;
                write_atomic(out, &rendered)?;
            }
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            hash_file(&mut ctx, path, &input);
            Some(ctx.finish().as_ref().to_vec())
        }
    };
    let dir_hash = if opts.rule_dirs.is_empty() {
        None
    } else {
        Some(hash_dirs(&opts.rule_dirs)?)
    };
    Ok((cfg_hash, dir_hash))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ReloaderError> {
    let read_err = |source| ReloaderError::Read {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(read_err)?;
    if out.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReloaderError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// Writes `<path>.tmp`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReloaderError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ReloaderError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Where `$(VAR)` values come from.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The reloader: [`Reloader::run`] until stopped.
pub struct Reloader {
    opts: Arc<Options>,
    env: Env,
    trigger: Arc<dyn Trigger>,
    metrics: Metrics,
    /// The hashes at the last successful reload.
    last: Option<Hashes>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("opts", &self.opts)
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(opts: Options, trigger: Arc<dyn Trigger>, metrics: Metrics) -> Reloader {
        Reloader {
            opts: Arc::new(opts),
            env: Arc::new(|k: &str| std::env::var(k).ok()),
            trigger,
            metrics,
            last: None,
        }
    }

    /// Takes `$(VAR)` values from `env` instead of the process environment.
    pub fn with_env(mut self, env: Env) -> Reloader {
        self.env = env;
        self
    }

    fn dirs_label(&self, sep: &str) -> String {
        let dirs: Vec<String> = self
            .opts
            .rule_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(sep)
    }

    /// Renders, hashes and, when something changed, reloads Prometheus, retrying until `deadline`.
    /// A render or hash error is returned; a reload that never succeeded is not (the next apply
    /// tries again). `false` when stopped meanwhile.
    pub async fn apply(
        &mut self,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<bool, ReloaderError> {
        let (opts, env) = (self.opts.clone(), self.env.clone());
        let hashes = tokio::task::spawn_blocking(move || prepare(&opts, &env))
            .await
            .map_err(|e| ReloaderError::Task(e.to_string()))??;
        if self.last.as_ref() == Some(&hashes) {
            return Ok(true);
        }
        loop {
            self.metrics.reloads.inc();
            match self.trigger.reload().await {
                Ok(()) => {
                    self.metrics.last_reload_successful.set(1);
                    self.metrics
                        .last_reload_success_timestamp
                        .set(meridian_core::time::now_ms() as f64 / 1000.0);
                    self.last = Some(hashes);
                    let show = |p: &Option<PathBuf>| {
                        p.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    };
                    tracing::info!(component = "reloader", cfg_in = %show(&self.opts.config_file), cfg_out = %show(&self.opts.envsubst_file), watched_dirs = %self.dirs_label(", "), "Reload triggered");
                    return Ok(true);
                }
                Err(e) => {
                    self.metrics.reloads_failed.inc();
                    self.metrics.last_reload_successful.set(0);
                    tracing::error!(component = "reloader", err = %format!("trigger reload: {e}"), "function failed. Retrying in next tick");
                    if Instant::now() + self.opts.retry_interval > deadline {
                        tracing::error!(component = "reloader", err = %format!("trigger reload: {e}"), "Failed to trigger reload. Retrying.");
                        return Ok(true);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(false),
                () = tokio::time::sleep(self.opts.retry_interval) => {}
            }
        }
    }

    /// The paths events are taken from: the config file's directory and the rule directories,
    /// normalized (see the module's notes).
    fn watched(&self) -> BTreeSet<PathBuf> {
        let norm = |p: &Path| -> PathBuf { p.components().collect() };
        let mut out = BTreeSet::new();
        if let Some(c) = &self.opts.config_file {
            let dir = c.parent().filter(|d| !d.as_os_str().is_empty());
            out.insert(norm(dir.unwrap_or(Path::new("."))));
        }
        out.extend(self.opts.rule_dirs.iter().map(|d| norm(d)));
        out
    }

    /// Runs until `stop`: the first apply (with a config file), then applies on events and every
    /// watch interval. Returns the first apply's error (the sidecar does not start without its
    /// config) or a watch setup error.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), ReloaderError> {
        if self.opts.config_file.is_none() && self.opts.rule_dirs.is_empty() {
            tracing::info!(component = "reloader", "nothing to be watched");
            stop.cancelled().await;
            return Ok(());
        }
        let interval = self.opts.watch_interval.max(Duration::from_millis(10));
        let mut began = Instant::now();
        if self.opts.config_file.is_some() && !self.apply(began + interval, &stop).await? {
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watched = self.watched();
        let watched_for_events = watched.clone();
        let events = self.metrics.watch_events.clone();
        let errors = self.metrics.watch_errors.clone();
        let mut watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(ev) => {
                    events.inc();
                    let relevant = ev.paths.iter().any(|p| {
                        p.parent().is_some_and(|d| watched_for_events.contains(d))
                            || watched_for_events.contains(p)
                    });
                    if relevant {
                        // Full: an apply is pending already, which will see this change too.
                        let _ = tx.try_send(());
                    }
                }
                Err(e) => {
                    errors.inc();
                    tracing::error!(component = "reloader", err = %e, "watch error");
                }
            })
            .map_err(|source| ReloaderError::Watch {
                path: PathBuf::new(),
                source,
            })?;
        for p in &watched {
            notify::Watcher::watch(&mut watcher, p, notify::RecursiveMode::NonRecursive).map_err(
                |source| ReloaderError::Watch {
                    path: p.clone(),
                    source,
                },
            )?;
        }
        self.metrics.watches.set(watched.len() as i64);
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        tracing::info!(component = "reloader", cfg = %show(&self.opts.config_file), out = %show(&self.opts.envsubst_file), dirs = %self.dirs_label(","), "started watching config file and directories for changes");
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = rx.recv() => {}
                () = tokio::time::sleep_until(began + interval) => {}
            }
            began = Instant::now();
            self.metrics.apply_operations.inc();
            match self.apply(began + interval, &stop).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.metrics.apply_operations_failed.inc();
                    tracing::error!(component = "reloader", err = %e, "apply error");
                }
            }
        }
    }
}

/// `POST <prometheus.url>/-/reload` (success: 200 only), as Thanos' `--reloader.method=http`.
#[derive(Debug)]
pub struct HttpTrigger {
    client: super::prom::PromClient,
}

/// How long one reload request may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpTrigger {
    pub fn new(client: super::prom::PromClient) -> HttpTrigger {
        HttpTrigger { client }
    }
}

#[async_trait::async_trait]
impl Trigger for HttpTrigger {
    async fn reload(&self) -> Result<(), String> {
        let url = self.client.url("/-/reload");
        let sent = tokio::time::timeout(
            RELOAD_TIMEOUT,
            self.client.send(http::Method::POST, "/-/reload"),
        );
        let status = match sent.await {
            Ok(Ok((s, _))) => s,
            Ok(Err(e)) => return Err(format!("reload request failed: Post {url:?}: {e}")),
            Err(_) => {
                return Err(format!(
                    "reload request failed: Post {url:?}: no answer within {RELOAD_TIMEOUT:?}"
                ));
            }
        };
        if status == http::StatusCode::OK {
            Ok(())
        } else {
            Err(format!(
                "received non-200 response: {} {}; have you set `--web.enable-lifecycle` Prometheus flag?",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn env(k: &str) -> Option<String> {
        match k {
            "POD_NAME" => Some("prometheus-0".into()),
            "LOOP" => Some("$(POD_NAME)".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn renders_only_the_kubernetes_form_in_one_pass() {
        let p = Path::new("t.yml");
        let got = render(
            p,
            b"replica: $(POD_NAME)\na: $POD_NAME ${POD_NAME} $() $(POD-NAME) $(LOOP)$(EMPTY)$(POD_NAME",
            &env,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "replica: prometheus-0\na: $POD_NAME ${POD_NAME} $() $(POD-NAME) $(POD_NAME)$(POD_NAME"
        );
        let e = render(p, b"x: $(NOPE)", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expand environment variables: found reference to unset environment variable \"NOPE\""
        );
    }

    #[test]
    fn gzip_input_is_decompressed_and_bounded() {
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let p = Path::new("t.yml.gz");
        assert_eq!(
            render(p, &gz(b"r: $(POD_NAME)"), &env).unwrap(),
            b"r: prometheus-0"
        );
        let bomb = gz(&vec![b'a'; MAX_CONFIG_BYTES as usize + 10]);
        assert!(matches!(
            render(p, &bomb, &env),
            Err(ReloaderError::TooLarge { .. })
        ));
        // Two bytes of the magic are not gzip.
        assert_eq!(render(p, &[0x1f, 0x8b], &env).unwrap(), [0x1f, 0x8b]);
    }

    #[test]
    fn the_rule_hash_follows_files_not_symlinked_directories() {
        let d = tempfile::tempdir().unwrap();
        let rules = d.path().join("rules");
        std::fs::create_dir_all(rules.join("sub")).unwrap();
        std::fs::write(rules.join("a.yml"), "groups: []").unwrap();
        let dirs = [rules.clone()];
        let h0 = hash_dirs(&dirs).unwrap();
        assert_eq!(hash_dirs(&dirs).unwrap(), h0, "stable");
        std::fs::write(rules.join("sub/b.yml"), "groups: []").unwrap();
        let h1 = hash_dirs(&dirs).unwrap();
        assert_ne!(h1, h0, "files in subdirectories count");
        std::fs::rename(rules.join("sub/b.yml"), rules.join("sub/c.yml")).unwrap();
        let h2 = hash_dirs(&dirs).unwrap();
        assert_ne!(h2, h1, "a rename counts");
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x.yml"), "x").unwrap();
        std::os::unix::fs::symlink(&other, rules.join("linked-dir")).unwrap();
        assert_eq!(
            hash_dirs(&dirs).unwrap(),
            h2,
            "symlinked directory not entered"
        );
        std::os::unix::fs::symlink(other.join("x.yml"), rules.join("linked.yml")).unwrap();
        let h3 = hash_dirs(&dirs).unwrap();
        assert_ne!(h3, h2, "symlinked file followed");
        std::fs::write(other.join("x.yml"), "y").unwrap();
        assert_ne!(hash_dirs(&dirs).unwrap(), h3, "through the link");
        std::fs::remove_file(other.join("x.yml")).unwrap();
        assert!(matches!(hash_dirs(&dirs), Err(ReloaderError::Hash { .. })));
    }

    #[derive(Debug, Default)]
    struct Fake {
        calls: AtomicUsize,
        fail_first: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Trigger for Fake {
        async fn reload(&self) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("reload request failed: refused".into());
            }
            Ok(())
        }
    }

    fn setup(d: &Path) -> Options {
        std::fs::create_dir_all(d.join("rules/")).unwrap();
        std::fs::write(
            d.join("prom.yml.tmpl"),
            "global: {external_labels: {replica: $(HOSTNAME_FOR_TEST)}}",
        )
        .unwrap();
        Options {
            config_file: Some(d.join("prom.yml.tmpl")),
            envsubst_file: Some(d.join("prom.yml")),
            // The trailing slash of seed 000's flag.
            rule_dirs: vec![PathBuf::from(format!("{}/", d.join("rules").display()))],
            watch_interval: Duration::from_secs(180),
            retry_interval: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_when_contents_change_and_retries_failures() {
        let d = tempfile::tempdir().unwrap();
        let opts = setup(d.path());
        let fake = Arc::new(Fake::default());
        let m = Metrics::default();
        let mut r = Reloader::new(opts.clone(), fake.clone(), m.clone()).with_env(test_env());
        let stop = CancellationToken::new();
        let deadline = || Instant::now() + Duration::from_secs(180);
        assert!(r.apply(deadline(), &stop).await.unwrap());
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "the first apply reloads"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("prom.yml")).unwrap(),
            "global: {external_labels: {replica: meridian-test-0}}"
        );
        r.apply(deadline(), &stop).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "nothing changed");
        // A rule file: reloaded, after two failures 5 s apart.
        std::fs::write(d.path().join("rules/r.yml"), "groups: []").unwrap();
        fake.fail_first.store(2, Ordering::SeqCst);
        let t0 = Instant::now();
        r.apply(deadline(), &stop).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!((m.reloads.get(), m.reloads_failed.get()), (4, 2));
        assert_eq!(m.last_reload_successful.get(), 1);
        // Failing past the deadline: given up, and the next apply tries again.
        std::fs::write(d.path().join("prom.yml.tmpl"), "global: {}").unwrap();
        fake.fail_first.store(100, Ordering::SeqCst);
        r.apply(Instant::now() + Duration::from_secs(12), &stop)
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 7, "at 0, 5 and 10 s");
        assert_eq!(m.last_reload_successful.get(), 0);
        fake.fail_first.store(0, Ordering::SeqCst);
        r.apply(deadline(), &stop).await.unwrap();
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            8,
            "retried at the next apply"
        );
        // An unset variable: an apply error, the old output kept.
        std::fs::write(
            d.path().join("prom.yml.tmpl"),
            "x: $(UNSET_FOR_RELOADER_TEST)",
        )
        .unwrap();
        assert!(matches!(
            r.apply(deadline(), &stop).await,
            Err(ReloaderError::UnsetVariable(_))
        ));
        assert_eq!(
            std::fs::read_to_string(d.path().join("prom.yml")).unwrap(),
            "global: {}"
        );
    }

    fn test_env() -> Env {
        Arc::new(|k: &str| (k == "HOSTNAME_FOR_TEST").then(|| "meridian-test-0".to_owned()))
    }

    #[tokio::test]
    async fn watches_the_template_and_rule_directories() {
        let d = tempfile::tempdir().unwrap();
        let mut opts = setup(d.path());
        opts.retry_interval = Duration::from_millis(20);
        let fake = Arc::new(Fake::default());
        let m = Metrics::default();
        let stop = CancellationToken::new();
        let r = Reloader::new(opts, fake.clone(), m.clone()).with_env(test_env());
        let task = tokio::spawn(r.run(stop.clone()));
        let wait_calls = |n: usize| {
            let fake = fake.clone();
            async move {
                for _ in 0..500 {
                    if fake.calls.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!(
                    "{n} reloads expected, saw {}",
                    fake.calls.load(Ordering::SeqCst)
                );
            }
        };
        wait_calls(1).await;
        // The watches are in place once the gauge is set.
        for _ in 0..500 {
            if m.watches.get() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            m.watches.get(),
            2,
            "the template's directory and the rule directory"
        );
        std::fs::write(
            d.path().join("prom.yml.tmpl"),
            "global: {scrape_interval: 7s}",
        )
        .unwrap();
        wait_calls(2).await;
        assert_eq!(
            std::fs::read_to_string(d.path().join("prom.yml")).unwrap(),
            "global: {scrape_interval: 7s}"
        );
        std::fs::write(d.path().join("rules/new.yml"), "groups: []").unwrap();
        wait_calls(3).await;
        assert!(m.watch_events.get() > 0 && m.apply_operations.get() >= 2);
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
