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
        Command::Tsdb(TsdbCommand::Chunks { file, samples }) => dump_chunks(&file, samples),
        Command::Tsdb(TsdbCommand::StressAppend {
            dir,
            series,
            step_ms,
            block_range_ms,
        }) => stress_append(&dir, series, step_ms, block_range_ms),
    }
}

/// Start of the stress data, ms (a multiple of any block range used).
const STRESS_START: i64 = 1_700_006_400_000;

fn stress_append(
    dir: &std::path::Path,
    series: usize,
    step_ms: i64,
    block_range_ms: i64,
) -> anyhow::Result<()> {
    use meridian_edge::tsdb::db::{Db, DbOptions};
    use meridian_edge::{Labels, Matcher};
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
