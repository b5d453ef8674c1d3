//! `meridian-gateway`: the central query gateway. So far it can probe StoreAPI endpoints.

use clap::{Parser, Subcommand};

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
    /// Ask StoreAPI endpoints what they serve (thanos.info.Info) and print it.
    Probe {
        /// Endpoint address host:port; repeatable.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        #[command(flatten)]
        tls: meridian_pki::tls::args::GrpcClientTlsArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    meridian_pki::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { endpoints, tls } => {
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
    }
}
