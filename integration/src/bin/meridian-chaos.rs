//! `meridian-chaos`: chaos and soak runs over a local federation of real processes (issue 22; see
//! `meridian_integration::chaos` and RELIABILITY.md). Run through `./integration/chaos.sh`, which
//! builds the binaries first.
//!
//!   meridian-chaos chaos [--duration 10m] [--seed N]   kill -9 / restart a component every 20–40 s
//!   meridian-chaos soak [--duration 30m] [--every 30s] [--window 5m]
//!                                                       load without faults; RSS, fds, threads, tasks

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
    /// Load without faults over a bounded window of data; prints per process the mean, slope and
    /// projected rise of RSS, descriptors, threads and tokio tasks after the first third, writes
    /// every sample to <data-dir>/soak.csv, and exits 1 when one rises past its bound.
    Soak {
        #[arg(long, default_value = "30m", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value = "30s", value_parser = duration)]
        every: Duration,
        /// The data held: edges' --tsdb.retention and the gateway's --min-time=-<window>. At least
        /// 3m: the reader asks for the last 2 minutes and expects every acknowledged sample in them.
        #[arg(long, default_value = "5m", value_parser = window)]
        window: String,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    meridian_core::promfmt::PromDuration::parse(s)
        .map(|d| d.0)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn window(s: &str) -> Result<String, String> {
    let d = duration(s)?;
    if d < Duration::from_secs(180) {
        return Err(format!(
            "{s:?}: at least 3m (the reader checks the last 2 minutes of acknowledged samples)"
        ));
    }
    Ok(s.to_owned())
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
    let window = match &cli.command {
        Command::Soak { window, .. } => Some(window.as_str()),
        Command::Chaos { .. } => None,
    };
    let setup = chaos::Setup::start(bin_dir, cli.data_dir.clone(), window).await?;
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
        Command::Soak {
            duration,
            every,
            window,
        } => {
            println!("soak for {duration:?}, sampling every {every:?}, holding {window} of data");
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
            let (table, upward) = chaos::soak_table(&series, &chaos::SoakBounds::default());
            println!("{table}");
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
            let wrong = stats
                .queries_wrong
                .load(std::sync::atomic::Ordering::SeqCst);
            let mut upward = upward;
            if wrong > 0 {
                upward.push(format!(
                    "{wrong} answers lacked acknowledged samples: {:?}",
                    stats.wrong.lock().map(|w| w.clone()).unwrap_or_default()
                ));
            }
            if upward.is_empty() {
                println!("PASSED: no upward trend, every answer right");
                Ok(std::process::ExitCode::SUCCESS)
            } else {
                println!("FAILED:\n  {}", upward.join("\n  "));
                Ok(std::process::ExitCode::FAILURE)
            }
        }
    }
}
