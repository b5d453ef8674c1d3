//! `meridian-gateway compact`: Thanos' compactor flags (`cmd/thanos/compact.go`, v0.25.1) and the
//! process: passes over the bucket (once, or every `--wait-interval` with `--wait`), `/metrics`,
//! `/-/healthy` and `/-/ready` on `--http-address`, a halt that keeps the process up (as Thanos does,
//! so the `halted` gauge can be alerted on), and a stop that lets the pass in flight finish its step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_core::promfmt::parse_duration;
use tokio_util::sync::CancellationToken;

use meridian_core::runtime::Task;

use super::lease::{Lease, LeaseState};
use super::merge::DedupFunc;
use super::metrics::CompactMetrics;
use super::run::{CompactError, CompactOptions, Compactor};

/// The flags.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Thanos objstore YAML file of the bucket.
    #[arg(long = "objstore.config-file", value_name = "FILE")]
    pub objstore_config_file: Option<PathBuf>,
    /// The objstore YAML itself.
    #[arg(
        long = "objstore.config",
        value_name = "YAML",
        conflicts_with = "objstore_config_file"
    )]
    pub objstore_config: Option<String>,
    /// Where blocks are downloaded and built.
    #[arg(long = "data-dir", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Keep running: a pass every --wait-interval (without it: one pass, then exit).
    #[arg(long = "wait", short = 'w')]
    pub wait: bool,
    #[arg(long = "wait-interval", default_value = "5m", value_parser = parse_duration)]
    pub wait_interval: Duration,
    /// Blocks younger than this (by their ULID) are left alone, unless the compactor made them.
    #[arg(long = "consistency-delay", default_value = "30m", value_parser = parse_duration)]
    pub consistency_delay: Duration,
    /// Time between a block's deletion mark and its deletion.
    #[arg(long = "delete-delay", default_value = "48h", value_parser = parse_duration)]
    pub delete_delay: Duration,
    /// How long raw blocks are kept (0d: forever).
    #[arg(long = "retention.resolution-raw", default_value = "0d", value_parser = parse_duration)]
    pub retention_raw: Duration,
    /// How long 5m blocks are kept (0d: forever).
    #[arg(long = "retention.resolution-5m", default_value = "0d", value_parser = parse_duration)]
    pub retention_5m: Duration,
    /// How long 1h blocks are kept (0d: forever).
    #[arg(long = "retention.resolution-1h", default_value = "0d", value_parser = parse_duration)]
    pub retention_1h: Duration,
    /// External labels telling HA replicas apart: their blocks are merged into one stream
    /// (irreversible). Repeatable, or comma-separated.
    #[arg(long = "deduplication.replica-label", value_delimiter = ',')]
    pub replica_labels: Vec<String>,
    /// "" (one sample per timestamp, for identical replicas) or "penalty" (the gateway's HA
    /// deduplication, for Prometheus/edge pairs).
    #[arg(long = "deduplication.func", default_value = "")]
    pub dedup_func: DedupFunc,
    /// Streams compacted at once.
    #[arg(long = "compact.concurrency", default_value = "1")]
    pub concurrency: usize,
    /// Accepted for Thanos' command lines: vertical compaction is always on here (overlaps are
    /// merged, never a halt).
    #[arg(long = "compact.enable-vertical-compaction", hide = true)]
    pub enable_vertical: bool,
    /// Blocks downsampled at once.
    #[arg(long = "downsample.concurrency", default_value = "1")]
    pub downsample_concurrency: usize,
    /// Do not downsample.
    #[arg(long = "downsampling.disable")]
    pub downsampling_disable: bool,
    /// The largest index a compaction may write (KB/MB/GB, powers of 1024): a compaction whose
    /// sources' indexes add up to 85 % of it marks its biggest source `no-compact` instead.
    #[arg(long = "compact.block-max-index-size", default_value = "64GB", value_parser = meridian_core::promfmt::parse_base2_bytes, hide = true)]
    pub max_index_size: u64,
    /// Relabel configs over each block's external labels: the compactor works on the blocks they keep.
    #[arg(long = "selector.relabel-config-file", value_name = "FILE")]
    pub selector_file: Option<PathBuf>,
    #[arg(
        long = "selector.relabel-config",
        value_name = "YAML",
        conflicts_with = "selector_file"
    )]
    pub selector: Option<String>,
    /// How long the compactor's lease in the bucket lasts without renewal (renewed every third of it):
    /// a second compactor on the bucket waits for it, and takes over this long after the holder died.
    #[arg(long = "compact.lease-duration", default_value = "5m", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// meta.json files fetched at once.
    #[arg(long = "block-meta-fetch-concurrency", default_value = "32")]
    pub meta_fetch_concurrency: usize,
    /// Where /metrics and the health endpoints are served.
    #[arg(long = "http-address", default_value = "0.0.0.0:10902")]
    pub http_address: SocketAddr,
    #[arg(long = "log.level", default_value = "info")]
    pub log_level: String,
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    pub log_format: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl CompactArgs {
    /// The options, checked as Thanos checks them.
    pub fn options(&self) -> anyhow::Result<CompactOptions> {
        const H40: i64 = 40 * 3_600_000;
        const D10: i64 = 10 * 24 * 3_600_000;
        let retention_ms = [
            ms(self.retention_raw),
            ms(self.retention_5m),
            ms(self.retention_1h),
        ];
        if !self.downsampling_disable {
            if retention_ms[0] != 0 && retention_ms[0] < H40 {
                anyhow::bail!(
                    "--retention.resolution-raw must be at least 40h while downsampling is enabled (raw blocks are downsampled once they span 40h)"
                );
            }
            if retention_ms[1] != 0 && retention_ms[1] < D10 {
                anyhow::bail!(
                    "--retention.resolution-5m must be at least 10d while downsampling is enabled"
                );
            }
        }
        if self.dedup_func == DedupFunc::Penalty && self.replica_labels.is_empty() {
            anyhow::bail!(
                "--deduplication.func=penalty needs at least one --deduplication.replica-label"
            );
        }
        if self.concurrency == 0 {
            anyhow::bail!("--compact.concurrency must be at least 1");
        }
        let selector =
            crate::bucket::read_selector(self.selector_file.as_deref(), self.selector.as_deref())?;
        Ok(CompactOptions {
            data_dir: self.data_dir.clone(),
            consistency_delay_ms: ms(self.consistency_delay),
            delete_delay_ms: ms(self.delete_delay),
            retention_ms,
            replica_labels: self.replica_labels.clone(),
            dedup_func: self.dedup_func,
            concurrency: self.concurrency,
            selector,
            meta_fetch_concurrency: self.meta_fetch_concurrency,
            downsampling: !self.downsampling_disable,
            max_index_bytes: self.max_index_size,
            downsample_concurrency: self.downsample_concurrency.max(1),
            ..CompactOptions::default()
        })
    }

    fn bucket(&self) -> anyhow::Result<meridian_tsdb::objstore::Bucket> {
        crate::bucket::open_objstore(
            self.objstore_config_file.as_deref(),
            self.objstore_config.as_deref(),
        )?
        .ok_or_else(|| {
            anyhow::anyhow!("no bucket: give --objstore.config-file or --objstore.config")
        })
    }
}

/// Runs the compactor until `stop` resolves (with `--wait`) or one pass is done.
pub async fn run(
    args: CompactArgs,
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let opts = args.options()?;
    let bucket = args.bucket()?;
    let metrics = Arc::new(CompactMetrics::default());
    let compactor = Arc::new(Compactor::new(bucket, opts, metrics.clone()));
    let listener = tokio::net::TcpListener::bind(&args.http_address)
        .await
        .with_context(|| format!("--http-address {}", args.http_address))?;
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    meridian_core::process_metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route("/-/healthy", axum::routing::get(|| async { "OK\n" }))
        .route("/-/ready", axum::routing::get(|| async { "Ready\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = crate::metrics::encode_text(&registry).unwrap_or_default();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(meridian_pki::serve::serve_http(
        listener,
        None,
        app,
        meridian_pki::serve::WebLimits::default(),
        http_stop.clone(),
    ));
    let lease = Arc::new(Lease::new(
        compactor.bucket_store(),
        &crate::bucket::selector_text(args.selector_file.as_deref(), args.selector.as_deref())?,
        holder_name(),
        ms(args.lease_duration),
        meridian_core::time::Clock::system(),
    ));
    let (held_tx, held) = tokio::sync::watch::channel(false);
    let renew = Task::spawn("compactor lease", {
        let lease = lease.clone();
        let metrics = metrics.clone();
        let every = args.lease_duration / 3;
        move |stop| keep_lease(lease, metrics, held_tx, every, stop)
    });
    let passes = CancellationToken::new();
    // Not spawned: the pass borrows the compactor, and a stop must let it finish its step.
    let work = loop_passes(&compactor, held, args.wait, args.wait_interval, &passes);
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r,
        () = stop => {
            // The step in flight (a download, a merge, an upload) ends; the pass stops after it.
            passes.cancel();
            match tokio::time::timeout(DRAIN, &mut work).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("the compaction in flight did not end within {DRAIN:?}; abandoned (the bucket stays consistent)");
                    Ok(())
                }
            }
        }
    };
    renew.stop(Duration::from_secs(5)).await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, lease = %lease.path(), "could not release the compactor lease; it expires by itself");
    }
    http_stop.cancel();
    let _ = http.await;
    result
}

/// How long a stop waits for the compaction in flight.
const DRAIN: Duration = Duration::from_secs(60);

/// This process's name in the lease: host, pid and a random suffix.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    // A ULID's last characters are random.
    let ulid = meridian_tsdb::block::new_ulid(0);
    format!("{host}/{}/{}", std::process::id(), &ulid[18..])
}

/// Takes and renews the lease every `every`, publishing whether it is held.
async fn keep_lease(
    lease: Arc<Lease>,
    metrics: Arc<CompactMetrics>,
    held: tokio::sync::watch::Sender<bool>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut last_other = String::new();
    loop {
        let now_held = match lease.acquire().await {
            Ok(LeaseState::Held { .. }) => {
                if !*held.borrow() {
                    tracing::info!(lease = %lease.path(), holder = %lease.holder(), "compactor lease taken");
                }
                last_other.clear();
                true
            }
            Ok(LeaseState::HeldBy { holder, expires_ms }) => {
                if holder != last_other {
                    tracing::warn!(lease = %lease.path(), %holder, expires_ms, "another compactor holds the lease: waiting");
                    last_other = holder;
                }
                false
            }
            Err(e) => {
                // Not knowing is not holding.
                tracing::warn!(error = %e, lease = %lease.path(), "could not renew the compactor lease");
                false
            }
        };
        metrics.lease_held.set(i64::from(now_held));
        held.send_replace(now_held);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn loop_passes(
    compactor: &Compactor,
    mut held: tokio::sync::watch::Receiver<bool>,
    wait: bool,
    interval: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        // Only with the lease; a pass stops at its next compaction when the lease is lost.
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = held.wait_for(|h| *h) => if r.is_err() { return Ok(()) },
        }
        let pass_stop = stop.child_token();
        let lost = {
            let mut held = held.clone();
            let pass_stop = pass_stop.clone();
            tokio::spawn(async move {
                if held.wait_for(|h| !*h).await.is_ok() {
                    tracing::warn!("compactor lease lost: stopping the pass");
                }
                pass_stop.cancel();
            })
        };
        let outcome = compactor.pass(&pass_stop).await;
        lost.abort();
        match outcome {
            Ok(r) => tracing::info!(
                compactions = r.compactions,
                downsamples = r.downsamples,
                marked = r.marked_for_deletion,
                deleted = r.deleted,
                aborted_uploads_deleted = r.partial_deleted,
                "compaction pass done"
            ),
            Err(CompactError::Halt(why)) => {
                compactor.metrics().halted.set(1);
                tracing::error!(error = %why, "compactor halted: the block needs an operator (mark it no-compact or delete it), then restart");
                if !wait {
                    anyhow::bail!("{why}");
                }
                // Halted: stay up for the metrics, do nothing more.
                std::future::pending::<()>().await;
            }
            Err(e @ CompactError::Retry(_)) => {
                if !wait {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "compaction pass failed; retrying after the wait interval");
            }
        }
        if !wait {
            return Ok(());
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}
