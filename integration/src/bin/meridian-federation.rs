//! `meridian-federation`: starts a complete local Meridian federation on loopback (README command 1,
//! through `./integration/federation.sh`, which builds the binaries first). Ctrl-C stops it in order.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use meridian_integration::federation::{Federation, Options};

#[derive(Parser)]
#[command(
    name = "meridian-federation",
    version,
    about = "Start a local Meridian federation: 2 clusters × 2 edges, DNS SRV, mTLS, a gateway."
)]
struct Cli {
    /// State directory (certificates, configs, TSDBs, the bucket, logs); kept between runs.
    #[arg(long = "data-dir", default_value = "target/meridian-federation")]
    data_dir: PathBuf,
    /// Delete the state directory first.
    #[arg(long)]
    fresh: bool,
    /// The gateway's HTTP address: the Grafana datasource URL (port 0: any free port).
    #[arg(long = "gateway.http-address", default_value = "127.0.0.1:10902")]
    gateway_http: SocketAddr,
    /// Directory of the meridian-edge and meridian-gateway binaries (default: this binary's).
    #[arg(long = "bin-dir")]
    bin_dir: Option<PathBuf>,
    /// Edge block range: how soon blocks are cut and shipped to the bucket.
    #[arg(long = "tsdb.min-block-duration", default_value = "2h", value_parser = duration)]
    block_duration: String,
    #[arg(long = "scrape-interval", default_value = "5s", value_parser = duration)]
    scrape_interval: String,
    /// Log filter for the components (their logs go to <data-dir>/logs).
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

/// A Prometheus duration (`30s`, `2h`, `1h30m`), checked here so a bad value is named before anything
/// starts rather than in a component's log.
fn duration(s: &str) -> Result<String, String> {
    meridian_core::promfmt::PromDuration::parse(s).map(|_| s.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    meridian_pki::install_crypto_provider();
    let cli = Cli::parse();
    let bin_dir = meridian_integration::federation::bin_dir_or_own(cli.bin_dir)?;
    if cli.fresh && cli.data_dir.exists() {
        std::fs::remove_dir_all(&cli.data_dir)
            .with_context(|| format!("removing {}", cli.data_dir.display()))?;
    }
    let mut options = Options::new(bin_dir, std::path::absolute(&cli.data_dir)?);
    options.gateway_http = cli.gateway_http;
    options.block_duration = cli.block_duration;
    options.scrape_interval = cli.scrape_interval;
    options.log_level = cli.log_level;
    println!("starting: certificates, DNS, demo exporters, 4 edges, the gateway...");
    let fed = Federation::start(options).await?;
    print!("{}", fed.banner());
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!();
    fed.stop(|s| println!("{s}")).await?;
    println!("stopped cleanly");
    Ok(())
}
