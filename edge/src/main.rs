//! `meridian-edge`: the per-cluster agent. So far it offers the TSDB inspection tools; scraping, the local
//! TSDB, the shipper and the StoreAPI server arrive with their issues.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_edge::chunkenc::{Encoding, XorIterator};
use meridian_edge::tsdb::chunks::Segment;

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
    /// Inspect TSDB files.
    #[command(subcommand)]
    Tsdb(TsdbCommand),
}

#[derive(Subcommand)]
enum TsdbCommand {
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
        Command::Tsdb(TsdbCommand::Chunks { file, samples }) => dump_chunks(&file, samples),
    }
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
