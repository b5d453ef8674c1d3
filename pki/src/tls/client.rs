//! Client-side TLS / mTLS for gRPC: a reloadable `rustls::ClientConfig` (CA bundle, optional client
//! certificate) and a tonic connector with a per-endpoint server name, so the gateway can reach
//! `edge-0.cluster-a.example` through an ingress at another address (SNI and certificate verification both
//! use the override).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::channel::{ChannelOptions, GrpcChannel};

use super::material::{Role, TlsError, load_certified_key, load_roots};
use super::metrics::TlsMetrics;
use super::reload::{Live, LiveBacked};
use super::server::not_after;

/// Where the client's material lives.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// CA bundle that server certificates must chain to.
    pub ca: PathBuf,
    /// Client certificate and key, for mTLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A client's TLS configuration, hot-reloadable.
pub struct ClientTls {
    files: ClientTlsFiles,
    live: Live<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish()
    }
}

fn paths(files: &ClientTlsFiles) -> Vec<PathBuf> {
    let mut p = vec![files.ca.clone()];
    p.extend(files.cert.clone());
    p.extend(files.key.clone());
    p
}

fn build(files: &ClientTlsFiles) -> Result<(ClientConfig, i64), TlsError> {
    let provider = crate::provider();
    let roots = load_roots(&files.ca)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?
        .with_root_certificates(roots.clone());
    let (mut config, not_after) = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let ck = load_certified_key(cert, key, Some((&files.ca, &roots)), Role::Client)?;
            let na = not_after(&ck.cert[0]);
            let chain = ck.cert.clone();
            let key_der = super::material::load_key(key)?;
            (
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::invalid(key, format!("client certificate: {e}")))?,
                na,
            )
        }
        (None, None) => (builder.with_no_client_auth(), 0),
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::Config(
                "a client certificate needs both a certificate and a key file".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, not_after))
}

impl ClientTls {
    /// Loads and validates the material; an error here is fatal at start-up.
    pub fn load(name: &str, files: ClientTlsFiles) -> Result<Arc<ClientTls>, TlsError> {
        let f = files.clone();
        let live = Live::new(name, paths(&files), move || build(&f))?;
        Ok(Arc::new(ClientTls { files, live }))
    }

    /// The configuration new connections use.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.live.current()
    }

    pub fn metrics(&self) -> &TlsMetrics {
        self.live.metrics()
    }

    /// A tonic connector for `address` (`host:port`), presenting `server_name` (default: the host) for SNI
    /// and certificate verification.
    pub fn connector(
        self: &Arc<Self>,
        server_name: Option<&str>,
    ) -> Result<TlsConnector, TlsError> {
        let server_name = server_name
            .map(|s| {
                ServerName::try_from(s.to_owned())
                    .map_err(|e| TlsError::Config(format!("invalid server name {s:?}: {e}")))
            })
            .transpose()?;
        Ok(TlsConnector {
            source: Source::Reloadable(self.clone()),
            server_name,
            dial: None,
        })
    }

    /// A lazily connecting gRPC channel to `address` over TLS (reconnects use the current material).
    pub fn channel_lazy(
        self: &Arc<Self>,
        address: &str,
        server_name: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<GrpcChannel, TlsError> {
        let (target, options) = endpoint(address, server_name, connect_timeout)?;
        GrpcChannel::lazy(target, options, self.connector(server_name)?).map_err(TlsError::Config)
    }

    /// Like [`ClientTls::channel_lazy`], but TCP connections are made by `dial` (the gateway resolves
    /// host names through its own DNS servers); the host name still goes into SNI and verification.
    pub fn channel_lazy_with_dial(
        self: &Arc<Self>,
        address: &str,
        server_name: Option<&str>,
        connect_timeout: Duration,
        dial: Dial,
    ) -> Result<GrpcChannel, TlsError> {
        let (target, options) = endpoint(address, server_name, connect_timeout)?;
        let mut connector = self.connector(server_name)?;
        connector.dial = Some(dial);
        GrpcChannel::lazy(target, options, connector).map_err(TlsError::Config)
    }

    /// A connected gRPC channel to `address` over TLS.
    pub async fn channel(
        self: &Arc<Self>,
        address: &str,
        server_name: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<GrpcChannel, ConnectError> {
        let channel = self.channel_lazy(address, server_name, connect_timeout)?;
        channel
            .connect()
            .await
            .map_err(|source| ConnectError::Connect {
                address: address.to_owned(),
                source,
            })?;
        Ok(channel)
    }
}

/// A TLS channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("connecting to {address}: {}", source.message())]
    Connect {
        address: String,
        source: tonic::Status,
    },
}

/// Where to connect (`http://address`, what the connector is called with) and the channel's options.
/// With a server name override, requests carry it as `:authority` too (as grpc-go does): an ingress
/// that verifies client certificates refuses a request whose authority differs from the SNI name
/// (nginx answers 421 Misdirected Request).
fn endpoint(
    address: &str,
    server_name: Option<&str>,
    connect_timeout: Duration,
) -> Result<(Uri, ChannelOptions), TlsError> {
    let target: Uri = format!("http://{address}")
        .parse()
        .map_err(|e| TlsError::Config(format!("invalid endpoint address {address:?}: {e}")))?;
    let origin = match server_name {
        Some(name) => format!("https://{name}")
            .parse()
            .map_err(|e| TlsError::Config(format!("invalid server name {name:?}: {e}")))?,
        None => target.clone(),
    };
    let options = ChannelOptions {
        connect_timeout: Some(connect_timeout),
        keep_alive_interval: Some(Duration::from_secs(30)),
        ..ChannelOptions::new(origin)
    };
    Ok((target, options))
}

impl LiveBacked for ClientTls {
    type Config = ClientConfig;

    fn live(&self) -> &Live<ClientConfig> {
        &self.live
    }
}

/// Opens the TCP connection to `(host, port)` for a connector; the default is the system resolver.
pub type Dial =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// Connects TCP, then TLS with the current client configuration. A `tower::Service<Uri>` for tonic.
#[derive(Clone)]
pub struct TlsConnector {
    source: Source,
    server_name: Option<ServerName<'static>>,
    dial: Option<Dial>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("custom_dial", &self.dial.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Source {
    Reloadable(Arc<ClientTls>),
    Fixed(Arc<ClientConfig>),
}

impl TlsConnector {
    /// A connector with a fixed configuration (no reload, no validation of its material).
    pub fn from_config(
        config: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> TlsConnector {
        TlsConnector {
            source: Source::Fixed(config),
            server_name,
            dial: None,
        }
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = match &self.source {
            Source::Reloadable(tls) => tls.config(),
            Source::Fixed(c) => c.clone(),
        };
        let server_name = self.server_name.clone();
        let dial = self.dial.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("no port in {uri}")))?;
            let name = match server_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("invalid server name {host:?}: {e}")))?,
            };
            let tcp = match dial {
                Some(dial) => dial(host, port).await?,
                None => TcpStream::connect((host.as_str(), port)).await?,
            };
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
