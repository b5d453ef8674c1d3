//! `meridian-chaos`: chaos and soak runs over a local federation of real processes (issue 22; see
//! `meridian_integration::chaos` and RELIABILITY.md). Run through `./integration/chaos.sh`, which
//! builds the binaries first.
//!
//!   meridian-chaos chaos [--duration 10m] [--seed N]   kill -9 / restart a component every 20–40 s
//!   meridian-chaos soak [--duration 30m] [--every 30s]  load without faults; RSS, fds, threads, tasks

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_integration::chaos::{self, ChaosOptions};

#[derive(Parser)]
#[command(
    name = "meridian-chaos",
    version,
    about = "Chaos and soak runs over a local Meridian federation."
)]
struct Cli {
    /// State directory (deleted first): certificates, TSDBs, logs.
    #[arg(long = "data-dir", default_value = "target/meridian-chaos")]
    data_dir: PathBuf,
    /// Directory of the meridian-edge and meridian-gateway binaries (default: this binary's).
    #[arg(long = "bin-dir")]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Faults under load; exits 1 when an acknowledged sample was lost, an answer was wrong without a
    /// warning, or a bucket block is not whole or not there once.
    Chaos {
        #[arg(long, default_value = "10m", value_parser = duration)]
        duration: Duration,
        /// Seed of the fault schedule (printed, so a run can be repeated).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Load without faults; prints per process the mean and slope per hour of RSS, descriptors,
    /// threads and tokio tasks, and writes every sample to <data-dir>/soak.csv.
    Soak {
        #[arg(long, default_value = "30m", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value = "30s", value_parser = duration)]
        every: Duration,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    meridian_edge::config::PromDuration::parse(s)
        .map(|d| d.0)
        .map_err(|e| format!("{s:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    meridian_pki::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let bin_dir = meridian_integration::federation::bin_dir_or_own(cli.bin_dir)?;
    if cli.data_dir.exists() {
        std::fs::remove_dir_all(&cli.data_dir)
            .with_context(|| format!("removing {}", cli.data_dir.display()))?;
    }
    let setup = chaos::Setup::start(bin_dir, cli.data_dir.clone()).await?;
    match cli.command {
        Command::Chaos { duration, seed } => {
            let seed = seed.unwrap_or_else(|| rand::random::<u64>() >> 1);
            println!("chaos for {duration:?}, seed {seed}");
            let opts = ChaosOptions {
                duration,
                seed,
                ..ChaosOptions::default()
            };
            let mut setup = setup;
            let report =
                chaos::run_chaos(&mut setup.fed, &setup.proxy, &setup.bucket, &opts).await?;
            println!("{report}");
            setup.stop().await;
            Ok(if report.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Soak { duration, every } => {
            println!("soak for {duration:?}, sampling every {every:?}");
            let (series, stats) = chaos::run_soak(&setup.fed, duration, every).await?;
            let mut csv = String::from("process,seconds,rss_bytes,fds,threads,tasks\n");
            for (name, points) in &series {
                for (t, u) in points {
                    csv.push_str(&format!(
                        "{name},{t:.0},{},{},{},{}\n",
                        u.rss_bytes,
                        u.fds,
                        u.threads,
                        u.tasks.map(|x| x.to_string()).unwrap_or_default()
                    ));
                }
            }
            let path = cli.data_dir.join("soak.csv");
            std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
            println!("{}", chaos::soak_table(&series));
            println!(
                "load: {} writes acknowledged, {} queries complete, {} wrong; samples in {}",
                stats.writes_acked.load(std::sync::atomic::Ordering::SeqCst),
                stats
                    .queries_complete
                    .load(std::sync::atomic::Ordering::SeqCst),
                stats
                    .queries_wrong
                    .load(std::sync::atomic::Ordering::SeqCst),
                path.display()
            );
            setup.stop().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
