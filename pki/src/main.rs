//! `meridian-pki`: issues the CA and certificates for Meridian's mTLS, inspects certificates, and writes
//! the Kubernetes Secrets an ingress and the gateway need.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use meridian_pki::k8s;

#[derive(Parser)]
#[command(
    name = "meridian-pki",
    version,
    about = "Meridian pki: CA and certificates for mTLS."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA: <dir>/ca.crt and <dir>/ca.key (0600).
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "Meridian CA")]
        cn: String,
        #[arg(long, value_enum, default_value_t = KeyType::P256)]
        key_type: KeyType,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA in --dir: <dir>/<name>.crt and <dir>/<name>.key.
    Issue {
        #[arg(value_enum)]
        kind: Kind,
        /// Certificate name (CN, and file name).
        #[arg(long)]
        name: String,
        /// DNS subject alternative name (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP subject alternative name (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Directory holding ca.crt/ca.key; the certificate is written there too.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = KeyType::P256)]
        key_type: KeyType,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Describe a certificate; exits non-zero when it is expired or not yet valid.
    Inspect { file: PathBuf },
    /// Write Kubernetes Secret manifests for certificates issued in --dir.
    K8sSecrets {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[arg(long, default_value = "monitoring")]
        namespace: String,
        /// Server certificate names: one `<name>-tls` TLS Secret each (ingress or edge).
        #[arg(long = "server")]
        servers: Vec<String>,
        /// Client certificate names: one `<name>-client-tls` Secret each, with ca.crt (gateway, nginx
        /// upstream).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Name of the CA Secret (key ca.crt), for `auth-tls-secret`.
        #[arg(long, default_value = "meridian-ca")]
        ca_secret: String,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Server,
    Client,
}

fn main() -> ExitCode {
    meridian_pki::install_crypto_provider();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian-pki: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init {
            dir,
            cn,
            key_type,
            days,
            force,
        } => {
            let ca = issue::new_ca(&cn, key_type, Validity::days(days)?)?;
            let (crt, key) = issue::write_pair(&dir, "ca", &ca, force)?;
            println!("wrote {} and {}", crt.display(), key.display());
        }
        Command::Issue {
            kind,
            name,
            dns,
            ips,
            dir,
            key_type,
            days,
            force,
        } => {
            let ca = issue::read_ca(&dir)?;
            let usage = match kind {
                Kind::Server => Usage::Server,
                Kind::Client => Usage::Client,
            };
            let leaf = issue::issue(
                &ca,
                usage,
                &name,
                &dns,
                &ips,
                key_type,
                Validity::days(days)?,
            )?;
            let (crt, key) = issue::write_pair(&dir, &name, &leaf, force)?;
            println!("wrote {} and {}", crt.display(), key.display());
        }
        Command::Inspect { file } => {
            let info = meridian_pki::inspect::inspect_file(&file).map_err(anyhow::Error::msg)?;
            println!("{info}");
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            if info.expired_at(now) {
                eprintln!("{}: EXPIRED", file.display());
                return Ok(ExitCode::FAILURE);
            }
            if info.not_yet_valid_at(now) {
                eprintln!("{}: NOT YET VALID", file.display());
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::K8sSecrets {
            dir,
            namespace,
            servers,
            clients,
            ca_secret,
            out,
        } => {
            let read = |f: String| {
                let p = dir.join(&f);
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            };
            let ca = read("ca.crt".into())?;
            let mut secrets = vec![k8s::Secret {
                name: ca_secret,
                tls: false,
                data: vec![("ca.crt".into(), ca.clone())],
            }];
            for s in servers {
                secrets.push(k8s::Secret {
                    name: format!("{s}-tls"),
                    tls: true,
                    data: vec![
                        ("tls.crt".into(), read(format!("{s}.crt"))?),
                        ("tls.key".into(), read(format!("{s}.key"))?),
                        ("ca.crt".into(), ca.clone()),
                    ],
                });
            }
            for c in clients {
                secrets.push(k8s::Secret {
                    name: format!("{c}-client-tls"),
                    tls: true,
                    data: vec![
                        ("tls.crt".into(), read(format!("{c}.crt"))?),
                        ("tls.key".into(), read(format!("{c}.key"))?),
                        ("ca.crt".into(), ca.clone()),
                    ],
                });
            }
            let yaml = k8s::render(&namespace, &secrets);
            match out {
                Some(p) => {
                    std::fs::write(&p, yaml).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{yaml}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
