//! `meridian-pki`: issues the CA and certificates for Meridian's mTLS.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "meridian-pki",
    version,
    about = "Meridian pki: CA and certificates for mTLS."
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    meridian_pki::install_crypto_provider();
    let _cli = Cli::parse();
    Ok(())
}
