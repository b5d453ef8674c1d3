//! Command-line flags for TLS, named as Thanos names them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions, TlsError};

/// `--grpc-server-tls-*`: TLS for the gRPC (StoreAPI) server. Without a certificate the server is
/// plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcServerTlsArgs {
    /// TLS certificate (chain) for the gRPC server; enables TLS.
    #[arg(
        long = "grpc-server-tls-cert",
        id = "grpc-server-tls-cert",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// TLS private key for the gRPC server.
    #[arg(
        long = "grpc-server-tls-key",
        id = "grpc-server-tls-key",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// CA bundle to verify client certificates with; enables mTLS (client certificate required).
    #[arg(
        long = "grpc-server-tls-client-ca",
        id = "grpc-server-tls-client-ca",
        value_name = "FILE"
    )]
    pub client_ca: Option<PathBuf>,
    /// Only allow clients whose certificate has this DNS/URI SAN or CN (repeatable).
    #[arg(
        long = "grpc-server-tls-allowed-client",
        id = "grpc-server-tls-allowed-client",
        value_name = "IDENTITY"
    )]
    pub allowed_clients: Vec<String>,
    /// How often TLS files are re-checked, besides watching them.
    #[arg(long = "grpc-server-tls-reload-interval", id = "grpc-server-tls-reload-interval", value_name = "DURATION", default_value = "1m", value_parser = meridian_core::promfmt::parse_duration)]
    pub reload_interval: Duration,
}

impl GrpcServerTlsArgs {
    /// The server TLS configuration, or `None` for plaintext. Inconsistent flags are an error naming them.
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        match (&self.cert, &self.key) {
            (None, None) => {
                if self.client_ca.is_some() {
                    return Err(TlsError::Config(
                        "--grpc-server-tls-client-ca needs --grpc-server-tls-cert and --grpc-server-tls-key".into(),
                    ));
                }
                Ok(None)
            }
            (Some(cert), Some(key)) => ServerTls::load(
                "grpc-server",
                ServerTlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca.clone(),
                },
                ServerTlsOptions {
                    allowed_clients: self.allowed_clients.clone(),
                    ..Default::default()
                },
            )
            .map(Some),
            (Some(_), None) => Err(TlsError::Config(
                "--grpc-server-tls-cert needs --grpc-server-tls-key".into(),
            )),
            (None, Some(_)) => Err(TlsError::Config(
                "--grpc-server-tls-key needs --grpc-server-tls-cert".into(),
            )),
        }
    }
}

/// `--grpc-client-tls-*`: TLS for gRPC clients (the gateway's connections to edges).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcClientTlsArgs {
    /// Use TLS when talking to gRPC servers.
    #[arg(long = "grpc-client-tls-secure", id = "grpc-client-tls-secure")]
    pub secure: bool,
    /// Client certificate for mTLS.
    #[arg(
        long = "grpc-client-tls-cert",
        id = "grpc-client-tls-cert",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// Client private key for mTLS.
    #[arg(
        long = "grpc-client-tls-key",
        id = "grpc-client-tls-key",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// CA bundle to verify server certificates with.
    #[arg(
        long = "grpc-client-tls-ca",
        id = "grpc-client-tls-ca",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// Server name to verify and send as SNI (default: the endpoint's host).
    #[arg(
        long = "grpc-client-server-name",
        id = "grpc-client-server-name",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
}

impl GrpcClientTlsArgs {
    /// The client TLS configuration, or `None` for plaintext.
    pub fn load(&self) -> Result<Option<Arc<ClientTls>>, TlsError> {
        if !self.secure {
            if self.cert.is_some() || self.key.is_some() || self.ca.is_some() {
                return Err(TlsError::Config(
                    "--grpc-client-tls-cert/-key/-ca given without --grpc-client-tls-secure".into(),
                ));
            }
            return Ok(None);
        }
        let Some(ca) = &self.ca else {
            return Err(TlsError::Config(
                "--grpc-client-tls-secure needs --grpc-client-tls-ca (system roots are not used)"
                    .into(),
            ));
        };
        ClientTls::load(
            "grpc-client",
            ClientTlsFiles {
                ca: ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
        )
        .map(Some)
    }
}

/// `--http.tls-config-file`: TLS (and mTLS) for HTTP servers, in Prometheus' web configuration format.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpTlsArgs {
    /// Prometheus-format web configuration file with a `tls_server_config` section.
    #[arg(long = "http.tls-config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

impl HttpTlsArgs {
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        match &self.config_file {
            Some(p) => super::load_web_config(p),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_flags_are_named() {
        let a = GrpcServerTlsArgs {
            cert: Some("x".into()),
            ..Default::default()
        };
        let e = a.load().unwrap_err().to_string();
        assert!(e.contains("--grpc-server-tls-key"), "{e}");
        let c = GrpcClientTlsArgs {
            secure: true,
            ..Default::default()
        };
        let e = c.load().unwrap_err().to_string();
        assert!(e.contains("--grpc-client-tls-ca"), "{e}");
    }
}
