//! `meridian-gateway`: the central query gateway. `query` finds the edges (static, DNS, DNS SRV), asks
//! them over (m)TLS and serves the merged, deduplicated view over the StoreAPI and HTTP; `probe` asks
//! endpoints what they serve.

/// mimalloc rather than glibc malloc: the StoreAPI paths allocate per series on one thread and free
/// on another, where glibc's arena locks contend (issue 25 profile). `no_thp`: with transparent huge
/// pages mimalloc's arenas are backed by 2 MiB pages, which more than doubled the resident memory of
/// an idle `meridian-gateway store` on 1,000 blocks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use bucket_args::BucketArgs;
use clap::{Parser, Subcommand};
use meridian_core::promfmt::{parse_base2_bytes, parse_duration};
use meridian_gateway::cache::connect::connect;
use meridian_gateway::cache::shared::SharedMetrics;
use meridian_gateway::discovery::EndpointSpec;
use meridian_gateway::endpoints::{EndpointGroup, EndpointSetOptions};
use meridian_gateway::fanout::{FanoutOptions, Limits};
use meridian_storeapi::partial::PartialResponse;

mod bucket_args;

#[derive(Parser)]
#[command(
    name = "meridian-gateway",
    version,
    about = "Meridian gateway: one Prometheus view of many clusters."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the query gateway: discover endpoints, fan out, deduplicate, serve.
    Query(Box<QueryArgs>),
    /// Serve the blocks of an object storage bucket over the StoreAPI on its own (Thanos' store
    /// gateway), for installations that shard history across instances.
    Store(Box<StoreArgs>),
    /// Compact, deduplicate and apply retention to a bucket's blocks (Thanos' compactor).
    Compact(Box<meridian_gateway::compact::args::CompactArgs>),
    /// Run PromQL test scripts (Prometheus' promqltest format) against the engine and report run, passed,
    /// failed and skipped cases (with reasons); exit status 1 when a case fails.
    Promqltest {
        /// `.test` files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print every failure (default: the first 50).
        #[arg(long)]
        all: bool,
    },
    /// Check rule files as `promtool check rules` does; exit status 1 when one is refused.
    CheckRules {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask StoreAPI endpoints what they serve (thanos.info.Info) and print it.
    Probe {
        /// Endpoint address host:port; repeatable.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        #[command(flatten)]
        tls: meridian_pki::tls::args::GrpcClientTlsArgs,
    },
}

/// Rule evaluation flags (Thanos Ruler's names).
#[derive(clap::Args)]
struct RuleArgs {
    /// Rule file (Prometheus format); globs allowed; repeatable. Reloaded on SIGHUP, `POST /-/reload`
    /// and file change.
    #[arg(long = "rule-file", value_name = "FILE")]
    rule_files: Vec<String>,
    /// PrometheusRules from the Kubernetes API: a file holding an edge's `monitoring_resources` section
    /// (`ruleSelector`, `ruleNamespaceSelector`, `evaluationInterval`, the API client).
    #[arg(long = "rule.monitoring-resources-file", value_name = "FILE")]
    rule_resources: Option<PathBuf>,
    /// Evaluation interval of groups without their own.
    #[arg(long = "eval-interval", default_value = "1m", value_parser = parse_duration)]
    eval_interval: Duration,
    /// Directory of the TSDB holding recorded series and ALERTS.
    #[arg(long = "data-dir", default_value = "data")]
    data_dir: PathBuf,
    /// External label of the rule TSDB and of sent alerts, `name="value"`; repeatable.
    #[arg(long = "label", value_name = "NAME=\"VALUE\"")]
    labels: Vec<String>,
    /// How long the rule TSDB keeps data.
    #[arg(long = "tsdb.retention", default_value = "48h", value_parser = parse_duration)]
    retention: Duration,
    /// The base of alerts' generatorURL (the gateway's external address).
    #[arg(long = "alert.query-url", default_value = "")]
    query_url: String,
    /// Minimum time between two sends of the same alert.
    #[arg(long = "resend-delay", default_value = "1m", value_parser = parse_duration)]
    resend_delay: Duration,
    /// Shortest time an alert restored after a restart still waits before firing.
    #[arg(long = "for-grace-period", default_value = "10m", value_parser = parse_duration)]
    for_grace_period: Duration,
    /// Longest downtime after which the `for` state is still restored.
    #[arg(long = "for-outage-tolerance", default_value = "1h", value_parser = parse_duration)]
    for_outage_tolerance: Duration,
    /// Alertmanager to send alerts to: http://host:port[/prefix], with dns+ or dnssrv+ in front for
    /// discovery; repeatable. Alerts go to every Alertmanager found.
    #[arg(long = "alertmanagers.url", value_name = "URL")]
    alertmanager_urls: Vec<String>,
    /// Alertmanagers config file (Thanos' format: static_configs, file_sd_configs, scheme, path_prefix,
    /// timeout, api_version).
    #[arg(long = "alertmanagers.config-file", value_name = "FILE")]
    alertmanager_config: Option<PathBuf>,
    /// Timeout of one send to one Alertmanager.
    #[arg(long = "alertmanagers.send-timeout", default_value = "10s", value_parser = parse_duration)]
    alertmanager_timeout: Duration,
    /// Alerts waiting to be sent; beyond it the oldest are dropped (and counted).
    #[arg(
        long = "alertmanagers.notification-queue-capacity",
        default_value = "10000"
    )]
    queue_capacity: usize,
    /// Label removed from alerts before sending (the replica label, so HA evaluators' alerts are one);
    /// repeatable.
    #[arg(long = "alert.label-drop", value_name = "NAME")]
    label_drop: Vec<String>,
    /// File of alert_relabel_configs (a YAML list of Prometheus relabel configs) applied to alerts
    /// before sending.
    #[arg(long = "alert.relabel-config-file", value_name = "FILE")]
    relabel_config: Option<PathBuf>,
    /// Alertmanager configuration (route, receivers with webhook_configs, inhibit_rules) for the
    /// native router: alerts are grouped and sent to webhooks without an Alertmanager.
    #[arg(long = "alert.routing-config-file", value_name = "FILE")]
    routing_config: Option<PathBuf>,
}

impl RuleArgs {
    /// `--label name="value"` values as external labels.
    fn external_labels(&self) -> anyhow::Result<meridian_core::labels::Labels> {
        let mut pairs = Vec::new();
        for l in &self.labels {
            let Some((name, value)) = l.split_once('=') else {
                anyhow::bail!("--label {l:?}: want name=\"value\"");
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if !meridian_core::relabel::is_valid_label_name(name) {
                anyhow::bail!("--label {l:?}: {name:?} is not a valid label name");
            }
            pairs.push((name.to_owned(), value.to_owned()));
        }
        Ok(meridian_core::labels::Labels::from_pairs(pairs))
    }

    fn notifier(
        &self,
        external_labels: meridian_core::labels::Labels,
        dns_server: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<Option<std::sync::Arc<meridian_gateway::alerting::notifier::Notifier>>>
    {
        use meridian_gateway::alerting::notifier::{self, NotifierOptions};
        let mut sets = Vec::new();
        for u in &self.alertmanager_urls {
            sets.push(
                notifier::parse_url(u, self.alertmanager_timeout).map_err(anyhow::Error::msg)?,
            );
        }
        if let Some(f) = &self.alertmanager_config {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--alertmanagers.config-file {}", f.display()))?;
            sets.extend(
                notifier::parse_config(&text, self.alertmanager_timeout)
                    .map_err(anyhow::Error::msg)?,
            );
        }
        if sets.is_empty() {
            return Ok(None);
        }
        let mut o = NotifierOptions::new(sets);
        o.external_labels = external_labels;
        o.label_drop = self.label_drop.clone();
        o.queue_capacity = self.queue_capacity;
        o.dns_server = dns_server;
        o.relabel = self.relabel()?;
        Ok(Some(notifier::Notifier::new(o)))
    }

    /// `--alert.relabel-config-file`.
    fn relabel(&self) -> anyhow::Result<Vec<meridian_core::relabel::RelabelConfig>> {
        let Some(f) = &self.relabel_config else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--alert.relabel-config-file {}", f.display()))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--alert.relabel-config-file {}: {e}", f.display()))
    }

    /// The native router of `--alert.routing-config-file`.
    fn router(
        &self,
        external_labels: meridian_core::labels::Labels,
    ) -> anyhow::Result<Option<std::sync::Arc<meridian_gateway::alerting::dispatch::Router>>> {
        use meridian_gateway::alerting::{dispatch, route};
        let Some(f) = &self.routing_config else {
            return Ok(None);
        };
        let config = route::load(f).context("--alert.routing-config-file")?;
        let mut o = dispatch::RouterOptions::new(config);
        o.external_labels = external_labels;
        o.label_drop = self.label_drop.clone();
        o.relabel = self.relabel()?;
        o.external_url = self.query_url.clone();
        Ok(Some(dispatch::Router::new(o)))
    }

    fn options(
        &self,
        dns_server: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<Option<meridian_gateway::rules::RulesOptions>> {
        if self.rule_files.is_empty() && self.rule_resources.is_none() {
            if !self.alertmanager_urls.is_empty()
                || self.alertmanager_config.is_some()
                || self.routing_config.is_some()
            {
                anyhow::bail!(
                    "--alertmanagers.url, --alertmanagers.config-file and \
                     --alert.routing-config-file need --rule-file or --rule.monitoring-resources-file"
                );
            }
            return Ok(None);
        }
        let mut o = meridian_gateway::rules::RulesOptions::new(
            self.rule_files.clone(),
            self.data_dir.clone(),
        );
        o.eval_interval = self.eval_interval;
        o.external_labels = self.external_labels()?;
        o.retention = self.retention;
        o.external_url = self.query_url.clone();
        o.resend_delay = self.resend_delay;
        o.for_grace_period = self.for_grace_period;
        o.for_outage_tolerance = self.for_outage_tolerance;
        o.notifier = self.notifier(o.external_labels.clone(), dns_server)?;
        o.router = self.router(o.external_labels.clone())?;
        if let Some(f) = &self.rule_resources {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--rule.monitoring-resources-file {}", f.display()))?;
            let m = meridian_kube::resources::MonitoringResources::parse(&text).map_err(|e| {
                anyhow::anyhow!("--rule.monitoring-resources-file {}: {e}", f.display())
            })?;
            o.resources = Some(m);
        }
        Ok(Some(o))
    }
}

fn check_rules(files: &[PathBuf]) -> anyhow::Result<()> {
    let (report, ok) = meridian_gateway::rules::file::check_report(files);
    print!("{report}");
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

#[derive(clap::Args)]
struct StoreArgs {
    /// StoreAPI listen address (ComponentType "store").
    #[arg(long = "grpc-address", default_value = "0.0.0.0:10901")]
    grpc_address: String,
    /// HTTP listen address: /-/healthy, /-/ready (after the first sync) and /metrics.
    #[arg(long = "http-address", default_value = "0.0.0.0:10902")]
    http_address: String,
    #[command(flatten)]
    web: meridian_pki::serve::WebArgs,
    #[command(flatten)]
    grpc_tls: meridian_pki::tls::args::GrpcServerTlsArgs,
    #[command(flatten)]
    bucket: BucketArgs,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
    /// Log format: logfmt-like text or one JSON object per line.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    log_format: String,
}

#[derive(clap::Args)]
struct QueryArgs {
    #[command(flatten)]
    rules: RuleArgs,
    /// StoreAPI listen address (the gateway serves the merged view, ComponentType "query").
    #[arg(long = "grpc-address", default_value = "0.0.0.0:10901")]
    grpc_address: String,
    /// HTTP listen address.
    #[arg(long = "http-address", default_value = "0.0.0.0:10902")]
    http_address: String,
    #[command(flatten)]
    web: meridian_pki::serve::WebArgs,
    #[command(flatten)]
    grpc_tls: meridian_pki::tls::args::GrpcServerTlsArgs,
    /// TLS settings for --endpoint (the config file's entries have their own).
    #[command(flatten)]
    client_tls: meridian_pki::tls::args::GrpcClientTlsArgs,
    /// Endpoint: host:port, dns+host:port, dnssrv+_grpc._tcp.name or dnssrvnoa+_grpc._tcp.name;
    /// repeatable.
    #[arg(long = "endpoint", value_name = "SPEC")]
    endpoints: Vec<EndpointSpec>,
    /// YAML file of endpoint groups, each with its own TLS settings (server name for SNI included);
    /// re-read when it changes.
    #[arg(long = "endpoint.config-file", value_name = "FILE")]
    endpoint_config: Option<PathBuf>,
    /// DNS server for discovery and for connecting (host:port); default: /etc/resolv.conf.
    #[arg(long = "dns.nameserver", value_name = "HOST:PORT")]
    dns_nameserver: Option<SocketAddr>,
    /// Longest time a DNS answer is cached, whatever its TTL.
    #[arg(long = "dns.ttl-cap", default_value = "5s", value_parser = parse_duration)]
    dns_ttl_cap: Duration,
    /// How often DNS endpoints are resolved again.
    #[arg(long = "store.sd-dns-interval", default_value = "30s", value_parser = parse_duration)]
    dns_interval: Duration,
    /// Endpoints failing Info longer than this are left out of queries.
    #[arg(long = "store.unhealthy-timeout", default_value = "5m", value_parser = parse_duration)]
    unhealthy_timeout: Duration,
    /// Per-store answer timeout (0s = only the query deadline).
    #[arg(long = "store.response-timeout", default_value = "0s", value_parser = parse_duration)]
    response_timeout: Duration,
    /// How often endpoints are asked for Info.
    #[arg(long = "endpoint.info-interval", default_value = "5s", value_parser = parse_duration, hide = true)]
    info_interval: Duration,
    /// Label that tells HA replicas apart; repeatable. Queries deduplicate over it.
    #[arg(long = "query.replica-label", value_name = "LABEL")]
    replica_labels: Vec<String>,
    /// Partial response: a failing store is a warning (true/warn, the default) or fails the query
    /// (false/abort).
    #[arg(long = "query.partial-response", value_name = "warn|abort", num_args = 0..=1,
          default_value = "warn", default_missing_value = "warn")]
    partial_response: PartialResponse,
    /// Same as --query.partial-response=abort.
    #[arg(long = "no-query.partial-response")]
    no_partial_response: bool,
    /// Most series a query may fetch from stores (0 = unlimited).
    #[arg(long = "store.limits.request-series", default_value = "0")]
    limit_series: u64,
    /// Most samples a query may fetch from stores, counted as chunks arrive (0 = --query.max-samples: a
    /// query may not fetch more raw samples than it may hold, so one query cannot take the process
    /// while its data is still arriving).
    #[arg(long = "store.limits.request-samples", default_value = "0")]
    limit_samples: u64,
    /// Most bytes (labels and chunks) a query may fetch from stores (0 = unlimited).
    #[arg(long = "store.limits.request-bytes", default_value = "0")]
    limit_bytes: u64,
    /// TLS (and mTLS) for the HTTP API, in Prometheus' web configuration format.
    #[command(flatten)]
    http_tls: meridian_pki::tls::args::HttpTlsArgs,
    /// Longest a query may run (a request's `timeout` can only shorten it); waiting for a slot
    /// (`--query.max-concurrent`) counts.
    #[arg(long = "query.timeout", default_value = "2m", value_parser = parse_positive_duration)]
    query_timeout: Duration,
    /// Most samples a query may load into memory at once (every step of every series it holds).
    #[arg(long = "query.max-samples", default_value = "50000000")]
    query_max_samples: usize,
    /// Queries evaluated at once; further queries wait for a slot within their timeout.
    #[arg(long = "query.max-concurrent", default_value = "20", value_parser = clap::value_parser!(u32).range(1..))]
    query_max_concurrent: u32,
    /// Longest query text accepted (bytes; KB, MB, KiB, MiB suffixes; 0 = unlimited).
    #[arg(long = "query.max-length", default_value = "128KiB", value_parser = parse_base2_bytes)]
    query_max_length: u64,
    /// How far back a vector selector looks for a sample.
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = parse_duration)]
    lookback_delta: Duration,
    /// A query without `max_source_resolution` reads downsampled data up to step/5 (`auto`).
    #[arg(long = "query.auto-downsampling")]
    auto_downsampling: bool,
    /// Grow the lookback delta to 1h for queries that may read data coarser than it.
    #[arg(long = "query.dynamic-lookback-delta", default_value_t = true, action = clap::ArgAction::Set)]
    dynamic_lookback_delta: bool,
    /// Subquery resolution when a subquery gives none.
    #[arg(long = "query.default-evaluation-interval", default_value = "1m", value_parser = parse_positive_duration)]
    default_evaluation_interval: Duration,
    /// Range queries are split into pieces of this length, each cached on its own.
    #[arg(long = "query-range.split-interval", default_value = "24h", value_parser = parse_duration)]
    split_interval: Duration,
    /// Pieces of range queries newer than this are not cached (data may still arrive).
    #[arg(long = "query-range.max-freshness", default_value = "1m", value_parser = parse_duration)]
    max_freshness: Duration,
    /// Memory for the results cache (bytes; KB, MB, GB, KiB, MiB, GiB suffixes); 0 disables it.
    #[arg(long = "query-range.response-cache-max-size", default_value = "256MiB", value_parser = parse_base2_bytes)]
    cache_max_size: u64,
    /// How long label and series answers are cached.
    #[arg(long = "query.labels-cache-ttl", default_value = "10s", value_parser = parse_duration)]
    labels_cache_ttl: Duration,
    /// The range-query results cache in Thanos' cache config format: IN-MEMORY (max_size), or
    /// MEMCACHED / REDIS shared by every gateway that names it.
    #[arg(long = "query-range.response-cache-config-file", value_name = "FILE")]
    response_cache_config_file: Option<PathBuf>,
    /// The results cache config itself (YAML).
    #[arg(
        long = "query-range.response-cache-config",
        value_name = "YAML",
        conflicts_with = "response_cache_config_file"
    )]
    response_cache_config: Option<String>,
    /// History from object storage, served by a bucket store inside the gateway.
    #[command(flatten)]
    bucket: BucketArgs,
    /// Largest HTTP request body accepted (bytes; KB, MB, KiB, MiB suffixes).
    #[arg(long = "http.max-request-body-size", default_value = "8MiB", value_parser = parse_base2_bytes)]
    max_body: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
    /// Log format: logfmt-like text or one JSON object per line.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    log_format: String,
}

/// A duration flag that must be longer than zero (a zero query timeout would time out every query, a
/// zero subquery step would never end).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than 0s"));
    }
    Ok(d)
}

fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    meridian_pki::install_crypto_provider();
    let matches = Cli::command().get_matches();
    let flags = flag_values(&matches);
    let cli = Cli::from_arg_matches(&matches)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Query(args) => rt.block_on(query(*args, flags)),
        Command::Store(args) => rt.block_on(store(*args)),
        Command::Compact(args) => rt.block_on(async move {
            init_logging(&args.log_level, &args.log_format)?;
            let stop = StopSignal::install()?;
            meridian_gateway::compact::args::run(*args, stop.wait()).await
        }),
        Command::Probe { endpoints, tls } => rt.block_on(probe(endpoints, tls)),
        Command::Promqltest { paths, all } => rt.block_on(promqltest(paths, all)),
        Command::CheckRules { files } => check_rules(&files),
    }
}

/// Every flag of the subcommand with its value (defaults included), for `/api/v1/status/flags`.
fn flag_values(matches: &clap::ArgMatches) -> Vec<(String, String)> {
    use clap::CommandFactory;
    let Some((name, sub)) = matches.subcommand() else {
        return vec![];
    };
    let cmd = Cli::command();
    let Some(sc) = cmd.find_subcommand(name) else {
        return vec![];
    };
    let mut out = Vec::new();
    for arg in sc.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let value = sub
            .get_raw(arg.get_id().as_str())
            .map(|vals| {
                vals.map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        out.push((long.to_owned(), value));
    }
    out.sort();
    out
}

fn init_logging(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    if format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(())
}

/// SIGTERM and SIGINT, registered before anything is served: a signal sent as soon as the process
/// answers (a supervisor stopping what it just started) then stops it gracefully, where the default
/// disposition would kill it.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> anyhow::Result<StopSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignal {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

async fn store(args: StoreArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level, &args.log_format)?;
    let stop = StopSignal::install()?;
    let cache_metrics = std::sync::Arc::new(SharedMetrics::default());
    let Some(store) = args.bucket.open(None, &cache_metrics).await? else {
        anyhow::bail!("no bucket: give --objstore.config-file or --objstore.config");
    };
    let grpc_listener = tokio::net::TcpListener::bind(&args.grpc_address)
        .await
        .with_context(|| format!("--grpc-address {}", args.grpc_address))?;
    let http_listener = tokio::net::TcpListener::bind(&args.http_address)
        .await
        .with_context(|| format!("--http-address {}", args.http_address))?;
    let running = meridian_gateway::app::StoreGateway::start(
        store,
        grpc_listener,
        args.grpc_tls.load()?,
        args.grpc_tls.reload_interval,
        http_listener,
        args.web.limits(),
    )?;
    stop.wait().await;
    running.shutdown().await;
    Ok(())
}

async fn query(args: QueryArgs, flags: Vec<(String, String)>) -> anyhow::Result<()> {
    init_logging(&args.log_level, &args.log_format)?;
    let stop = StopSignal::install()?;
    // SIGHUP reloads the rules; registered now, so that one during start-up (or without rules) is not
    // the default action, exit.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let cache_metrics = std::sync::Arc::new(SharedMetrics::default());
    let bucket = args
        .bucket
        .open(args.dns_nameserver, &cache_metrics)
        .await?;
    let rules = args.rules.options(args.dns_nameserver)?;
    let mut cache = meridian_gateway::cache::CacheOptions {
        max_bytes: args.cache_max_size,
        split_interval: args.split_interval,
        max_freshness: args.max_freshness,
        labels_ttl: args.labels_cache_ttl,
        shared: None,
    };
    if let Some(c) = meridian_gateway::cache::config::CacheConfig::from_flags(
        args.response_cache_config_file.as_deref(),
        args.response_cache_config.as_deref(),
        "--query-range.response-cache-config",
        meridian_gateway::cache::config::Role::ResponseCache,
    )? {
        if let meridian_gateway::cache::config::Backend::InMemory { max_size, .. } = &c.backend {
            // Thanos' frontend makes no cache of an IN-MEMORY config without a size.
            cache.max_bytes = max_size.unwrap_or(0);
        }
        cache.shared = connect("query-range", &c, args.dns_nameserver, &cache_metrics).await?;
    }
    if args.endpoints.is_empty()
        && args.endpoint_config.is_none()
        && bucket.is_none()
        && rules.is_none()
    {
        anyhow::bail!(
            "no stores: give --endpoint, --endpoint.config-file or --objstore.config-file"
        );
    }
    let transport = match args.client_tls.load()? {
        Some(tls) => meridian_gateway::Transport::Tls {
            tls,
            server_name: args.client_tls.server_name.clone(),
        },
        None => meridian_gateway::Transport::Plaintext,
    };
    let grpc_listener = tokio::net::TcpListener::bind(&args.grpc_address)
        .await
        .with_context(|| format!("--grpc-address {}", args.grpc_address))?;
    let http_listener = tokio::net::TcpListener::bind(&args.http_address)
        .await
        .with_context(|| format!("--http-address {}", args.http_address))?;
    let config_yaml = match &args.endpoint_config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("--endpoint.config-file {}", p.display()))?,
        None => String::new(),
    };
    let partial_response = if args.no_partial_response {
        PartialResponse::Abort
    } else {
        args.partial_response
    };
    let gateway = meridian_gateway::app::Gateway::start(meridian_gateway::app::GatewayOptions {
        flag_group: EndpointGroup {
            specs: args.endpoints,
            transport,
        },
        dns_server: args.dns_nameserver,
        dns_ttl_cap: args.dns_ttl_cap,
        endpoints: EndpointSetOptions {
            dns_interval: args.dns_interval,
            info_interval: args.info_interval,
            unhealthy_timeout: args.unhealthy_timeout,
            config_file: args.endpoint_config,
            replica_labels: args.replica_labels.clone(),
            ..Default::default()
        },
        fanout: FanoutOptions {
            store_timeout: (!args.response_timeout.is_zero()).then_some(args.response_timeout),
            partial_response,
            replica_labels: args.replica_labels,
            limits: Limits {
                series: args.limit_series,
                samples: fetch_samples_limit(args.limit_samples, args.query_max_samples),
                bytes: args.limit_bytes,
            },
        },
        grpc_listener,
        grpc_tls: args.grpc_tls.load()?,
        grpc_tls_reload_interval: args.grpc_tls.reload_interval,
        http_listener,
        http_tls: args.http_tls.load()?,
        web: args.web.limits(),
        bucket,
        rules,
        api: meridian_gateway::api::ApiOptions {
            engine: meridian_gateway::promql::EngineOptions {
                lookback_delta: args.lookback_delta,
                default_subquery_step: args.default_evaluation_interval,
                max_samples: args.query_max_samples,
                timeout: args.query_timeout,
                max_query_length: usize::try_from(args.query_max_length).unwrap_or(usize::MAX),
            },
            cache,
            flags,
            config_yaml,
            max_body_bytes: usize::try_from(args.max_body).unwrap_or(usize::MAX),
            max_concurrent_queries: usize::try_from(args.query_max_concurrent).unwrap_or(1),
            auto_downsampling: args.auto_downsampling,
            dynamic_lookback_delta: args.dynamic_lookback_delta,
        },
    })
    .await?;
    let rules = gateway.rules().cloned();
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Some(rules) = &rules {
                let _ = rules.reload().await;
            }
        }
    });
    stop.wait().await;
    reloader.abort();
    gateway.shutdown().await;
    Ok(())
}

async fn promqltest(paths: Vec<PathBuf>, all: bool) -> anyhow::Result<()> {
    use meridian_gateway::promql::promqltest;
    let mut report = promqltest::Report::default();
    for p in paths {
        if p.is_dir() {
            report.merge(promqltest::run_dir(&p).await?);
        } else {
            let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            let name = p.display().to_string();
            report.merge(promqltest::run_script(&text, &name).await);
        }
    }
    print!("{}", report.summary(if all { usize::MAX } else { 50 }, all));
    if !report.failures.is_empty() {
        anyhow::bail!("{} case(s) failed", report.failures.len());
    }
    Ok(())
}

async fn probe(
    endpoints: Vec<String>,
    tls: meridian_pki::tls::args::GrpcClientTlsArgs,
) -> anyhow::Result<()> {
    let transport = match tls.load()? {
        Some(client) => meridian_gateway::Transport::Tls {
            tls: client,
            server_name: tls.server_name.clone(),
        },
        None => meridian_gateway::Transport::Plaintext,
    };
    let mut failed = 0;
    for e in endpoints {
        match meridian_gateway::probe(&e, &transport).await {
            Ok(info) => println!("{info:#?}"),
            Err(err) => {
                failed += 1;
                eprintln!("{e}: {err}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} endpoint(s) failed");
    }
    Ok(())
}

/// The samples a query may fetch from stores: `--store.limits.request-samples`, or when it is 0,
/// `--query.max-samples` (Prometheus refuses a query whose selectors load more samples than that).
fn fetch_samples_limit(request_samples: u64, query_max_samples: usize) -> u64 {
    if request_samples > 0 {
        request_samples
    } else {
        u64::try_from(query_max_samples).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    /// Issue 22, item 5: with every flag at its default a query could fetch without bound before
    /// the samples limit looked at what it had loaded.
    #[test]
    fn fetching_is_bounded_by_default() {
        assert_eq!(super::fetch_samples_limit(0, 50_000_000), 50_000_000);
        assert_eq!(super::fetch_samples_limit(1_000, 50_000_000), 1_000);
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Issue 22, item 17: a zero query timeout or subquery step was accepted.
    #[test]
    fn zero_query_durations_are_refused_naming_the_flag() {
        use clap::Parser;
        for flag in ["--query.timeout", "--query.default-evaluation-interval"] {
            for value in ["0s", "0ms"] {
                let args = [
                    "meridian-gateway",
                    "query",
                    "--endpoint",
                    "127.0.0.1:1",
                    flag,
                    value,
                ];
                let e = match super::Cli::try_parse_from(args) {
                    Ok(_) => panic!("{flag} {value} was accepted"),
                    Err(e) => e.to_string(),
                };
                assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
                assert!(e.contains("must be longer than 0s"), "{e}");
            }
        }
        let e = super::Cli::try_parse_from([
            "meridian-gateway",
            "query",
            "--endpoint",
            "127.0.0.1:1",
            "--query.max-concurrent",
            "0",
        ]);
        assert!(e.is_err(), "--query.max-concurrent 0 was accepted");
        let ok = [
            "meridian-gateway",
            "query",
            "--endpoint",
            "127.0.0.1:1",
            "--query.timeout",
            "1s",
        ];
        assert!(super::Cli::try_parse_from(ok).is_ok());
    }

    /// Issue 23: one size parser (Thanos' base-2 `KB`) and one duration grammar behind every flag.
    #[test]
    fn sizes_are_base2_and_durations_follow_prometheus() {
        use clap::Parser;
        let store = |extra: &[&str]| {
            let mut args = vec!["meridian-gateway", "store", "--objstore.config", "x"];
            args.extend_from_slice(extra);
            super::Cli::try_parse_from(args)
        };
        let Ok(super::Cli {
            command: super::Command::Store(a),
        }) = store(&["--index-cache-size=1KB", "--chunk-cache-size=2MB"])
        else {
            panic!("store flags refused");
        };
        assert_eq!(a.bucket.index_cache_size, 1024);
        assert_eq!(a.bucket.chunk_cache_size, 2 << 20);
        let e = store(&["--index-cache-size=1024"])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("unit is required")));
        let e = store(&["--sync-block-duration=30s1m"])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("30s1m")));
        let query = |flag: &str| {
            super::Cli::try_parse_from([
                "meridian-gateway",
                "query",
                "--endpoint",
                "127.0.0.1:1",
                flag,
            ])
        };
        for flag in [
            "--query.timeout=30s1m",
            "--query.lookback-delta=1h1h",
            "--store.response-timeout=1.5s",
            "--dns.ttl-cap=10",
        ] {
            assert!(query(flag).is_err(), "{flag} was accepted");
        }
        assert!(query("--query.timeout=1m30s").is_ok());
    }
}
