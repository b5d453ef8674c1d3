//! `meridian-gateway`: the central query gateway. `query` finds the edges (static, DNS, DNS SRV), asks
//! them over (m)TLS and serves the merged, deduplicated view over the StoreAPI and HTTP; `probe` asks
//! endpoints what they serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_gateway::discovery::EndpointSpec;
use meridian_gateway::endpoints::{EndpointGroup, EndpointSetOptions};
use meridian_gateway::fanout::{FanoutOptions, Limits, PartialResponse};
use meridian_pki::tls::args::parse_duration;

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
    /// Ask StoreAPI endpoints what they serve (thanos.info.Info) and print it.
    Probe {
        /// Endpoint address host:port; repeatable.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        #[command(flatten)]
        tls: meridian_pki::tls::args::GrpcClientTlsArgs,
    },
}

#[derive(clap::Args)]
struct QueryArgs {
    /// StoreAPI listen address (the gateway serves the merged view, ComponentType "query").
    #[arg(long = "grpc-address", default_value = "0.0.0.0:10901")]
    grpc_address: String,
    /// HTTP listen address.
    #[arg(long = "http-address", default_value = "0.0.0.0:10902")]
    http_address: String,
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
    /// Most samples a query may fetch from stores (0 = unlimited).
    #[arg(long = "store.limits.request-samples", default_value = "0")]
    limit_samples: u64,
    /// Most bytes (labels and chunks) a query may fetch from stores (0 = unlimited).
    #[arg(long = "store.limits.request-bytes", default_value = "0")]
    limit_bytes: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    meridian_pki::install_crypto_provider();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Query(args) => rt.block_on(query(*args)),
        Command::Probe { endpoints, tls } => rt.block_on(probe(endpoints, tls)),
        Command::Promqltest { paths, all } => rt.block_on(promqltest(paths, all)),
    }
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if args.endpoints.is_empty() && args.endpoint_config.is_none() {
        anyhow::bail!("no endpoints: give --endpoint or --endpoint.config-file");
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
                samples: args.limit_samples,
                bytes: args.limit_bytes,
            },
        },
        grpc_listener,
        grpc_tls: args.grpc_tls.load()?,
        grpc_tls_reload_interval: args.grpc_tls.reload_interval,
        http_listener,
    })
    .await?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
