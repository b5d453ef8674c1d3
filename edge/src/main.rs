//! `meridian-edge`: the per-cluster agent. `run` scrapes (Prometheus config), receives remote write and
//! keeps the local TSDB; `tsdb` inspects TSDB files.

/// mimalloc rather than glibc malloc: the StoreAPI paths allocate per series on one thread and free
/// on another, where glibc's arena locks contend (issue 25 profile). `no_thp`: with transparent huge
/// pages mimalloc's arenas are backed by 2 MiB pages, which more than doubled the resident memory of
/// an idle `meridian-gateway store` on 1,000 blocks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_core::chunkenc::{Encoding, XorIterator};
use meridian_tsdb::chunks::Segment;

#[derive(Parser)]
#[command(
    name = "meridian-edge",
    version,
    about = "Meridian edge: scrape, store, ship, serve."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge: scrape the targets of a Prometheus config, receive remote write, store locally.
    Run(Box<RunArgs>),
    /// Run beside an existing Prometheus, as `thanos sidecar` does: serve it over the StoreAPI,
    /// ship its blocks, render and reload its config.
    Sidecar(Box<SidecarArgs>),
    /// Inspect TSDB files.
    #[command(subcommand)]
    Tsdb(TsdbCommand),
}

/// `thanos sidecar`'s flags (v0.25.1 names and defaults), and the StoreAPI limits `run` has.
#[derive(clap::Args)]
struct SidecarArgs {
    /// URL of the Prometheus beside it.
    #[arg(
        long = "prometheus.url",
        value_name = "URL",
        default_value = "http://localhost:9090"
    )]
    prometheus_url: http::Uri,
    /// How long to wait for Prometheus to answer at start-up.
    #[arg(long = "prometheus.ready_timeout", value_name = "DURATION", default_value = "10m", value_parser = meridian_core::promfmt::parse_duration)]
    prometheus_ready_timeout: std::time::Duration,
    /// HTTP client configuration for Prometheus, Thanos' YAML, inline.
    #[arg(
        long = "prometheus.http-client",
        value_name = "YAML",
        conflicts_with = "prometheus_http_client_file"
    )]
    prometheus_http_client: Option<String>,
    /// HTTP client configuration for Prometheus, Thanos' YAML, as a file.
    #[arg(long = "prometheus.http-client-file", value_name = "FILE")]
    prometheus_http_client_file: Option<PathBuf>,
    /// The most bytes of one remote-read answer from Prometheus a query may take.
    #[arg(long = "prometheus.remote-read.max-bytes", value_name = "SIZE", default_value = "1GiB", value_parser = meridian_core::promfmt::parse_base2_bytes)]
    remote_read_max_bytes: u64,
    /// Prometheus' data directory (`--storage.tsdb.path` of Prometheus).
    #[arg(long = "tsdb.path", value_name = "DIR", default_value = "./data")]
    tsdb_path: PathBuf,
    /// Answer the head's range from Prometheus' WAL in `--tsdb.path` (the data directory shared)
    /// instead of remote read; remote read remains for what the WAL cannot answer.
    #[arg(long = "tsdb.read-wal", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tsdb_read_wal: bool,
    /// Listen address of the StoreAPI (gRPC).
    #[arg(
        long = "grpc-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10901"
    )]
    grpc_address: String,
    #[command(flatten)]
    grpc_tls: meridian_pki::tls::args::GrpcServerTlsArgs,
    /// Listen address of the HTTP server (metrics, health, readiness).
    #[arg(
        long = "http-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10902"
    )]
    http_address: String,
    #[command(flatten)]
    http_tls: meridian_pki::tls::args::HttpTlsArgs,
    #[command(flatten)]
    web: meridian_pki::serve::WebArgs,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// Also upload blocks Prometheus compacted (level above 1).
    #[arg(long = "shipper.upload-compacted")]
    shipper_upload_compacted: bool,
    /// How long shutdown waits for a running upload.
    #[arg(long = "shipper.shutdown-timeout", value_name = "DURATION", default_value = "30s", value_parser = meridian_core::promfmt::parse_duration)]
    shipper_shutdown_timeout: std::time::Duration,
    /// Serve only data after this time: RFC 3339, or a duration relative to now (`-2h`).
    #[arg(long = "min-time", value_name = "TIME", value_parser = parse_time_or_duration)]
    min_time: Option<i64>,
    /// Config file to watch and render into `--reloader.config-envsubst-file`.
    #[arg(long = "reloader.config-file", value_name = "FILE")]
    reloader_config_file: Option<PathBuf>,
    /// Output of the rendered config (`$(VAR)` taken from the environment).
    #[arg(long = "reloader.config-envsubst-file", value_name = "FILE")]
    reloader_envsubst_file: Option<PathBuf>,
    /// Rule directory to watch (repeatable).
    #[arg(long = "reloader.rule-dir", value_name = "DIR")]
    reloader_rule_dirs: Vec<PathBuf>,
    /// Apply changes at least this often, events or not.
    #[arg(long = "reloader.watch-interval", value_name = "DURATION", default_value = "3m", value_parser = meridian_core::promfmt::parse_duration)]
    reloader_watch_interval: std::time::Duration,
    /// Time between attempts of a failed reload.
    #[arg(long = "reloader.retry-interval", value_name = "DURATION", default_value = "5s", value_parser = meridian_core::promfmt::parse_duration)]
    reloader_retry_interval: std::time::Duration,
    #[command(flatten)]
    store_limits: StoreLimitArgs,
    /// Log level filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

/// The StoreAPI's concurrency and per-request limits (Thanos' flags), for `run` and `sidecar`.
#[derive(clap::Args)]
struct StoreLimitArgs {
    /// Most StoreAPI Series calls served at once; further calls wait for a slot (Thanos'
    /// flag of the same name). 0 = unlimited.
    #[arg(long = "store.grpc.series-max-concurrency", value_name = "N", default_value_t = meridian_edge::agent::DEFAULT_SERIES_MAX_CONCURRENCY)]
    series_max_concurrency: usize,
    /// Most series one StoreAPI Series call may return; a call over it fails with
    /// RESOURCE_EXHAUSTED. 0 = unlimited.
    #[arg(
        long = "store.limits.request-series",
        value_name = "N",
        default_value_t = 0
    )]
    request_series_limit: usize,
    /// Most samples one StoreAPI Series call may return, counted as chunks of up to 120 samples (as
    /// Thanos does); a call over it fails with RESOURCE_EXHAUSTED. 0 = unlimited.
    #[arg(
        long = "store.limits.request-samples",
        value_name = "N",
        default_value_t = 0
    )]
    request_samples_limit: usize,
}

impl StoreLimitArgs {
    fn limits(&self) -> meridian_storeapi::leaf::SeriesLimits {
        meridian_storeapi::leaf::SeriesLimits {
            max_series: self.request_series_limit,
            max_samples: self.request_samples_limit,
        }
    }
}

/// Object storage for blocks (Thanos' objstore YAML), for `run` and `sidecar`.
#[derive(clap::Args)]
struct ObjstoreArgs {
    /// Object storage for finished blocks, as a file in Thanos' objstore YAML format.
    #[arg(
        long = "objstore.config-file",
        value_name = "FILE",
        conflicts_with = "objstore_config"
    )]
    objstore_config_file: Option<PathBuf>,
    /// Object storage for finished blocks, Thanos' objstore YAML given inline.
    #[arg(long = "objstore.config", value_name = "YAML")]
    objstore_config: Option<String>,
}

impl ObjstoreArgs {
    fn bucket(&self) -> anyhow::Result<Option<meridian_tsdb::objstore::Bucket>> {
        Ok(match (&self.objstore_config_file, &self.objstore_config) {
            (Some(f), _) => Some(meridian_tsdb::objstore::Bucket::from_file(f)?),
            (None, Some(text)) => Some(meridian_tsdb::objstore::Bucket::parse(
                text,
                "--objstore.config",
            )?),
            (None, None) => None,
        })
    }
}

/// Thanos' `model.TimeOrDurationValue`: an RFC 3339 time, or a signed duration from now.
fn parse_time_or_duration(s: &str) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| format!("{s:?}: out of range"));
    }
    let (sign, d) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let d = meridian_core::promfmt::parse_duration(d)
        .map_err(|e| format!("{s:?} is neither an RFC 3339 time nor a duration: {e}"))?;
    let ms = i64::try_from(d.as_millis()).map_err(|_| format!("{s:?}: out of range"))?;
    Ok(meridian_core::time::now_ms().saturating_add(sign * ms))
}

#[derive(clap::Args)]
struct RunArgs {
    /// Prometheus configuration file (global, scrape_configs); `$(VAR)` is taken from the environment.
    #[arg(long = "config.file", value_name = "FILE")]
    config_path: PathBuf,
    /// TSDB directory.
    #[arg(long = "tsdb.path", value_name = "DIR", default_value = "data")]
    tsdb_path: PathBuf,
    /// Blocks ending more than this before the newest block's end are deleted (once uploaded, when a
    /// shipper runs); measured from the data, as Prometheus does, not from the wall clock.
    #[arg(long = "tsdb.retention", value_name = "DURATION", default_value = "15d", value_parser = parse_ms)]
    tsdb_retention: i64,
    /// Listen address of the HTTP server (metrics, health, reload, remote write, targets).
    #[arg(
        long = "http-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10902"
    )]
    http_address: String,
    #[command(flatten)]
    http_tls: meridian_pki::tls::args::HttpTlsArgs,
    #[command(flatten)]
    web: meridian_pki::serve::WebArgs,
    /// Listen address of the StoreAPI (gRPC); `none` serves no StoreAPI.
    #[arg(
        long = "grpc-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10901"
    )]
    grpc_address: String,
    #[command(flatten)]
    grpc_tls: meridian_pki::tls::args::GrpcServerTlsArgs,
    #[command(flatten)]
    store_limits: StoreLimitArgs,
    /// DNS server for dns_sd_configs (default: the system resolver).
    #[arg(long = "dns.server", value_name = "IP:PORT")]
    dns_server: Option<std::net::SocketAddr>,
    /// Largest accepted remote-write body (compressed), bytes.
    #[arg(long = "receive.max-body-bytes", default_value_t = 32 << 20)]
    receive_max_body_bytes: usize,
    #[command(flatten)]
    receive: meridian_edge::receive::args::ReceiveArgs,
    /// A second listener for remote write only (Thanos Receive's port, 19291 there); by default
    /// remote write is served on --http-address alone.
    #[arg(long = "remote-write.address", value_name = "HOST:PORT")]
    remote_write_address: Option<String>,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// How long shutdown waits for a running upload before abandoning it (it is redone at the next
    /// start).
    #[arg(long = "shipper.shutdown-timeout", value_name = "DURATION", default_value = "30s", value_parser = meridian_core::promfmt::parse_duration)]
    shipper_shutdown_timeout: std::time::Duration,
    /// Time range of each block the TSDB cuts (Prometheus' `--storage.tsdb.min-block-duration`); keep
    /// the default 2h outside tests.
    #[arg(long = "tsdb.min-block-duration", value_name = "DURATION", default_value = "2h", value_parser = parse_ms, hide = true)]
    tsdb_block_duration: i64,
    /// Do not watch the config file for changes (SIGHUP and /-/reload still work).
    #[arg(long = "config.no-watch")]
    no_watch: bool,
    /// Log level filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
    /// How long to wait flushing remote-write samples on shutdown or config reload.
    #[arg(long = "storage.remote.flush-deadline", value_name = "DURATION", default_value = "1m", value_parser = meridian_core::promfmt::parse_duration)]
    remote_flush_deadline: std::time::Duration,
    /// Outside agent mode: WAL segments a remote-write queue has not sent are kept at most this long
    /// past their last write (then deleted with the head's truncation, and counted lost).
    #[arg(long = "storage.remote.wal-max-hold", value_name = "DURATION", default_value = "6h", value_parser = meridian_core::promfmt::parse_duration)]
    remote_wal_max_hold: std::time::Duration,
    /// Agent mode (Prometheus' `--agent`): scrape into a WAL and remote-write it; no blocks, no
    /// StoreAPI, no shipper.
    #[arg(long = "agent")]
    agent: bool,
    /// Agent mode's data directory.
    #[arg(
        long = "storage.agent.path",
        value_name = "DIR",
        default_value = "data-agent/"
    )]
    agent_path: PathBuf,
    /// Agent mode: data kept in the WAL behind what every queue has sent.
    #[arg(long = "storage.agent.retention.min-time", value_name = "DURATION", default_value = "5m", value_parser = meridian_core::promfmt::parse_duration)]
    agent_min_time: std::time::Duration,
    /// Agent mode: data older than this leaves the WAL, sent or not.
    #[arg(long = "storage.agent.retention.max-time", value_name = "DURATION", default_value = "4h", value_parser = meridian_core::promfmt::parse_duration)]
    agent_max_time: std::time::Duration,
    /// Agent mode: how often the WAL is truncated.
    #[arg(long = "storage.agent.wal-truncate-frequency", value_name = "DURATION", default_value = "2h", value_parser = meridian_core::promfmt::parse_duration, hide = true)]
    agent_truncate_frequency: std::time::Duration,
    /// Agent mode: WAL segment size (0: 128MB; else between 10MB and 256MB).
    #[arg(long = "storage.agent.wal-segment-size", value_name = "SIZE", default_value = "0", value_parser = parse_segment_size, hide = true)]
    agent_segment_size: u64,
    /// Accepted for Prometheus compatibility; the edge's WAL is not compressed.
    #[arg(long = "storage.agent.wal-compression", hide = true)]
    _agent_wal_compression: bool,
    /// Accepted for Prometheus compatibility; the data directory is always locked.
    #[arg(long = "storage.agent.no-lockfile", hide = true)]
    _agent_no_lockfile: bool,
}

/// Prometheus' `--storage.agent.wal-segment-size`: 0 means 128MB, else 10MB..=256MB.
fn parse_segment_size(s: &str) -> Result<u64, String> {
    let n = meridian_core::promfmt::parse_base2_bytes(s)?;
    match n {
        0 => Ok(meridian_tsdb::wal::SEGMENT_SIZE),
        n if (10 << 20..=256 << 20).contains(&n) => Ok(n),
        n => Err(format!(
            "{n} bytes: the WAL segment size must be between 10MB and 256MB"
        )),
    }
}

fn parse_ms(s: &str) -> Result<i64, String> {
    let d = meridian_core::promfmt::parse_duration(s)?;
    i64::try_from(d.as_millis()).map_err(|_| format!("duration {s:?} is too long"))
}

#[derive(Subcommand)]
enum TsdbCommand {
    /// Append batches to a TSDB forever (until killed), printing `acked <t>` after each commit. Used by
    /// the crash-safety test; compacts every few batches so crashes also hit block writes.
    #[command(hide = true)]
    StressAppend {
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        series: usize,
        #[arg(long, default_value_t = 60_000)]
        step_ms: i64,
        #[arg(long, default_value_t = 600_000)]
        block_range_ms: i64,
    },
    /// List the chunks of a chunk segment file (`<block>/chunks/000001`) and, with --samples, their samples.
    Chunks {
        /// The segment file.
        file: PathBuf,
        /// Also print every sample.
        #[arg(long)]
        samples: bool,
    },
}

fn main() -> anyhow::Result<()> {
    meridian_pki::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Sidecar(args) => sidecar(*args),
        Command::Tsdb(TsdbCommand::Chunks { file, samples }) => dump_chunks(&file, samples),
        Command::Tsdb(TsdbCommand::StressAppend {
            dir,
            series,
            step_ms,
            block_range_ms,
        }) => stress_append(&dir, series, step_ms, block_range_ms),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    use meridian_edge::agent::{Agent, AgentOptions};
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Signal handlers first: a SIGHUP during start-up must not take the default action (exit).
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let http_tls = args.http_tls.load()?;
        let listener = tokio::net::TcpListener::bind(&args.http_address)
            .await
            .with_context(|| format!("--http-address {}", args.http_address))?;
        let grpc_tls = args.grpc_tls.load()?;
        let grpc_listener = if args.grpc_address == "none" || args.agent {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&args.grpc_address)
                    .await
                    .with_context(|| format!("--grpc-address {}", args.grpc_address))?,
            )
        };
        let objstore = args.objstore.bucket()?;
        let (labels, receive_mode) = args.receive.mode()?;
        let remote_write_listener = match &args.remote_write_address {
            None => None,
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("--remote-write.address {a}"))?,
            ),
        };
        let mode = args.agent.then(|| meridian_edge::agent::AgentMode {
            truncate_frequency: args.agent_truncate_frequency,
            min_time: args.agent_min_time,
            // As Prometheus: a maximum below the minimum is raised to it.
            max_time: args.agent_max_time.max(args.agent_min_time),
        });
        let agent = Agent::start(AgentOptions {
            config_file: args.config_path,
            tsdb_path: if args.agent {
                args.agent_path
            } else {
                args.tsdb_path
            },
            db: meridian_tsdb::db::DbOptions {
                retention_time: Some(args.tsdb_retention),
                block_range: args.tsdb_block_duration,
                wal_segment_size: if args.agent {
                    args.agent_segment_size
                } else {
                    meridian_tsdb::wal::SEGMENT_SIZE
                },
                wal_hold_max_age: Some(args.remote_wal_max_hold),
                ..Default::default()
            },
            http_listener: listener,
            http_tls,
            web: args.web.limits(),
            grpc_listener,
            grpc_tls,
            grpc_tls_reload_interval: args.grpc_tls.reload_interval,
            grpc_series_max_concurrency: args.store_limits.series_max_concurrency,
            grpc_series_limits: args.store_limits.limits(),
            discovery: meridian_edge::discovery::DiscoveryOptions {
                dns_server: args.dns_server,
                ..Default::default()
            },
            receive: meridian_edge::receive::ReceiveLimits {
                max_body_bytes: args.receive_max_body_bytes,
                ..Default::default()
            },
            watch_config: !args.no_watch,
            objstore,
            shipper: Default::default(),
            shipper_shutdown_timeout: args.shipper_shutdown_timeout,
            remote_flush_deadline: args.remote_flush_deadline,
            agent: mode,
            labels,
            receive_mode,
            remote_write_listener,
        })
        .await?;
        // Printed for scripts and tests that start us on port 0.
        {
            // Best effort: whoever started us may have closed our stdout; that is no reason to exit.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http listening on {}", agent.http_addr());
            if let Some(g) = agent.grpc_addr() {
                let _ = writeln!(out, "grpc listening on {g}");
            }
            if let Some(r) = agent.remote_write_addr() {
                let _ = writeln!(out, "remote-write listening on {r}");
            }
            let _ = out.flush();
        }
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = agent.reload().await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        agent.shutdown().await;
        Ok(())
    })
}

fn sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    use meridian_edge::sidecar::{client_config, reloader, run};
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let (yaml, source) = match (
        &args.prometheus_http_client,
        &args.prometheus_http_client_file,
    ) {
        (Some(y), _) => (y.clone(), "--prometheus.http-client".to_owned()),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .with_context(|| format!("--prometheus.http-client-file {}", f.display()))?,
            f.display().to_string(),
        ),
        (None, None) => (String::new(), String::new()),
    };
    let prometheus = client_config::prom_client(&args.prometheus_url, &yaml, &source)
        .map_err(anyhow::Error::msg)?;
    let objstore = args.objstore.bucket()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let http_listener = tokio::net::TcpListener::bind(&args.http_address)
            .await
            .with_context(|| format!("--http-address {}", args.http_address))?;
        let grpc_listener = tokio::net::TcpListener::bind(&args.grpc_address)
            .await
            .with_context(|| format!("--grpc-address {}", args.grpc_address))?;
        let mut sidecar = run::Sidecar::start(run::SidecarOptions {
            prometheus,
            ready_timeout: args.prometheus_ready_timeout,
            tsdb_path: args.tsdb_path,
            http_listener,
            http_tls: args.http_tls.load()?,
            web: args.web.limits(),
            grpc_listener,
            grpc_tls: args.grpc_tls.load()?,
            grpc_tls_reload_interval: args.grpc_tls.reload_interval,
            series_max_concurrency: args.store_limits.series_max_concurrency,
            series_limits: args.store_limits.limits(),
            objstore,
            upload_compacted: args.shipper_upload_compacted,
            shipper_shutdown_timeout: args.shipper_shutdown_timeout,
            min_time: args.min_time.unwrap_or(i64::MIN),
            reloader: reloader::Options {
                config_file: args.reloader_config_file,
                envsubst_file: args.reloader_envsubst_file,
                rule_dirs: args.reloader_rule_dirs,
                watch_interval: args.reloader_watch_interval,
                retry_interval: args.reloader_retry_interval,
            },
            max_read_bytes: usize::try_from(args.remote_read_max_bytes).unwrap_or(usize::MAX),
            read_wal: args.tsdb_read_wal,
        })
        .await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http listening on {}", sidecar.http_addr());
            let _ = writeln!(out, "grpc listening on {}", sidecar.grpc_addr());
            let _ = out.flush();
        }
        let ended = tokio::select! {
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
            r = sidecar.reloader_ended() => r.and_then(|()| Err(anyhow::anyhow!("the reloader stopped"))),
        };
        sidecar.shutdown().await;
        ended
    })
}

/// Start of the stress data, ms (a multiple of any block range used).
const STRESS_START: i64 = 1_700_006_400_000;

fn stress_append(
    dir: &std::path::Path,
    series: usize,
    step_ms: i64,
    block_range_ms: i64,
) -> anyhow::Result<()> {
    use meridian_core::{Labels, Matcher};
    use meridian_tsdb::db::{Db, DbOptions};
    use std::io::Write;
    let db = Db::open(
        dir,
        DbOptions {
            block_range: block_range_ms,
            retention_time: None,
            ..Default::default()
        },
    )?;
    let last = db
        .samples(&[Matcher::equal("__name__", "stress")], i64::MIN, i64::MAX)?
        .iter()
        .filter_map(|(_, s)| s.last().map(|x| x.t))
        .max();
    let labels: Vec<Labels> = (0..series)
        .map(|i| Labels::from_pairs([("__name__", "stress".to_string()), ("i", i.to_string())]))
        .collect();
    let mut t = last.map_or(STRESS_START, |l| l + step_ms);
    let mut out = std::io::stdout().lock();
    for batch in 0..1_000_000u64 {
        let mut app = db.appender();
        for (i, l) in labels.iter().enumerate() {
            app.add(l, t, stress_value(t, i))?;
        }
        app.commit()?;
        writeln!(out, "acked {t}")?;
        out.flush()?;
        if batch % 5 == 4 {
            db.compact()?;
        }
        t += step_ms;
    }
    Ok(())
}

/// The value the stress writer stores for series `i` at `t` (the crash test checks it).
pub fn stress_value(t: i64, i: usize) -> f64 {
    (t / 1000) as f64 + i as f64 / 64.0
}

fn dump_chunks(file: &std::path::Path, samples: bool) -> anyhow::Result<()> {
    let seg = Segment::open(file)?;
    let mut total = 0usize;
    for chunk in seg.chunks() {
        let chunk = chunk.with_context(|| format!("reading {}", file.display()))?;
        if chunk.encoding != Encoding::Xor {
            println!(
                "offset={} encoding={:?} bytes={}",
                chunk.offset,
                chunk.encoding,
                chunk.data.len()
            );
            continue;
        }
        let mut it = XorIterator::new(chunk.data)
            .with_context(|| format!("chunk at offset {}", chunk.offset))?;
        let all: Vec<_> = it.by_ref().collect();
        if let Some(e) = it.err() {
            anyhow::bail!("chunk at offset {}: {e}", chunk.offset);
        }
        total += all.len();
        let (first, last) = (all.first().map(|s| s.t), all.last().map(|s| s.t));
        println!(
            "offset={} encoding=XOR samples={} bytes={} min_time={} max_time={}",
            chunk.offset,
            all.len(),
            chunk.data.len(),
            first.unwrap_or_default(),
            last.unwrap_or_default()
        );
        if samples {
            for s in all {
                println!("  {} {}", s.t, s.v);
            }
        }
    }
    println!("total samples: {total}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Issue 23: duration flags take Prometheus' grammar, the one `prometheus.yml` takes.
    #[test]
    fn duration_flags_take_the_prometheus_grammar() {
        let parse = |flag: &str| {
            super::Cli::try_parse_from(["meridian-edge", "run", "--config.file=p.yml", flag])
        };
        for flag in ["--tsdb.retention=30s1m", "--shipper.shutdown-timeout=1.5s"] {
            let e = parse(flag).err().map(|e| e.to_string());
            assert!(
                e.is_some_and(|e| e.contains(flag.split('=').nth(1).unwrap_or_default())),
                "{flag}"
            );
        }
        assert!(parse("--tsdb.retention=1w2d").is_ok());
    }

    /// `--label` takes Thanos' `name="value"` with a Go-quoted value; seed 003's flags parse.
    #[test]
    fn label_flags_are_go_quoted() {
        assert_eq!(
            meridian_edge::receive::args::parse_label_flag(r#"replica="thanos-receive-0""#)
                .unwrap(),
            ("replica".to_owned(), "thanos-receive-0".to_owned())
        );
        assert_eq!(
            meridian_edge::receive::args::parse_label_flag(r#"receive="true""#)
                .unwrap()
                .1,
            "true"
        );
        for bad in ["replica=thanos", "replica", r#"0x="a""#, r#"a="b"#] {
            assert!(
                meridian_edge::receive::args::parse_label_flag(bad).is_err(),
                "{bad}"
            );
        }
        let cli = super::Cli::try_parse_from([
            "meridian-edge",
            "run",
            "--config.file=p.yml",
            r#"--label=replica="r0""#,
            r#"--label=receive="true""#,
            "--receive.hashrings-file=/etc/thanos/thanos-receive-hashrings",
            "--receive.local-endpoint=thanos-receive-0.thanos-receive:10901",
            "--remote-write.address=0.0.0.0:19291",
            "--tsdb.retention=2h",
        ]);
        let Ok(super::Cli {
            command: super::Command::Run(args),
        }) = cli
        else {
            panic!("seed 003's flags do not parse");
        };
        assert_eq!(args.receive.labels.len(), 2);
    }
}
