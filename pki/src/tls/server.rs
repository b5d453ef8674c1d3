//! Server-side TLS / mTLS: a reloadable `rustls::ServerConfig`, and an acceptor that feeds tonic
//! (`serve_with_incoming`) and axum (`axum::serve`) with handshaken connections.
//!
//! TLS 1.3 and 1.2 only; ALPN `h2` and `http/1.1`; with a client CA, a client certificate is required and
//! verified (the bundle may hold several CAs during rotation), then optionally checked against an
//! allow-list of identities. Handshakes have a timeout; failures are logged with the peer address and
//! the reason, and counted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::material::{Role, TlsError, identities, load_certified_key, load_roots};
use super::metrics::TlsMetrics;
use super::reload::{Live, LiveBacked};

/// Where the server's material lives.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle for client certificates; `None` = TLS without client authentication.
    pub client_ca: Option<PathBuf>,
}

/// TLS versions a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// TLS 1.3 preferred, 1.2 accepted.
    #[default]
    Tls12And13,
    Tls13,
    Tls12,
}

/// How the server uses it.
#[derive(Debug, Clone)]
pub struct ServerTlsOptions {
    /// Client identities (DNS/URI SAN or CN) allowed after verification; empty = any verified client.
    pub allowed_clients: Vec<String>,
    pub handshake_timeout: Duration,
    pub alpn: Vec<Vec<u8>>,
    pub versions: Versions,
}

impl Default for ServerTlsOptions {
    fn default() -> ServerTlsOptions {
        ServerTlsOptions {
            allowed_clients: vec![],
            handshake_timeout: Duration::from_secs(10),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            versions: Versions::default(),
        }
    }
}

/// A server's TLS configuration, hot-reloadable.
pub struct ServerTls {
    files: ServerTlsFiles,
    handshake_timeout: Duration,
    live: Live<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Loads and validates the material; an error here is fatal at start-up.
    pub fn load(
        name: &str,
        files: ServerTlsFiles,
        opts: ServerTlsOptions,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let handshake_timeout = opts.handshake_timeout;
        let (f, o) = (files.clone(), opts);
        let live = Live::new(name, paths(&files), move || build(&f, &o))?;
        Ok(Arc::new(ServerTls {
            files,
            handshake_timeout,
            live,
        }))
    }

    /// The configuration new connections use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.live.current()
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    pub fn metrics(&self) -> &TlsMetrics {
        self.live.metrics()
    }

    /// Handshakes `tcp` (from `addr`) within the handshake timeout. A failure or time-out is logged
    /// with the peer and the reason, counted, and answered `None`.
    pub async fn handshake(&self, tcp: TcpStream, addr: SocketAddr) -> Option<TlsConn> {
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        let timeout = self.handshake_timeout();
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let identities = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(identities)
                    .unwrap_or_default();
                Some(TlsConn {
                    stream,
                    peer: PeerInfo {
                        remote_addr: addr,
                        identities,
                    },
                })
            }
            Ok(Err(e)) => {
                self.metrics().handshake_failures.inc();
                tracing::warn!(tls = %self.name(), peer = %addr, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics().handshake_failures.inc();
                tracing::warn!(tls = %self.name(), peer = %addr, timeout = ?timeout, "TLS handshake timed out");
                None
            }
        }
    }

    fn name(&self) -> &str {
        self.live.name()
    }
}

fn paths(files: &ServerTlsFiles) -> Vec<PathBuf> {
    let mut p = vec![files.cert.clone(), files.key.clone()];
    p.extend(files.client_ca.clone());
    p
}

fn build(files: &ServerTlsFiles, opts: &ServerTlsOptions) -> Result<(ServerConfig, i64), TlsError> {
    let provider = crate::provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match opts.versions {
        Versions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls13 => &[&rustls::version::TLS13],
        Versions::Tls12 => &[&rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?;
    let (builder, roots) = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .map_err(|e| TlsError::invalid(ca, format!("unusable client CA bundle: {e}")))?;
            let verifier: Arc<dyn ClientCertVerifier> = if opts.allowed_clients.is_empty() {
                verifier
            } else {
                Arc::new(AllowList {
                    inner: verifier,
                    allowed: opts.allowed_clients.clone(),
                })
            };
            (
                builder.with_client_cert_verifier(verifier),
                Some((ca.clone(), roots)),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let ck = load_certified_key(
        &files.cert,
        &files.key,
        roots.as_ref().map(|(p, r)| (p.as_path(), r.as_ref())),
        Role::Server,
    )?;
    let not_after = not_after(&ck.cert[0]);
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(Arc::new(ck))));
    config.alpn_protocols = opts.alpn.clone();
    Ok((config, not_after))
}

pub(crate) fn not_after(cert: &CertificateDer<'_>) -> i64 {
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0)
}

impl LiveBacked for ServerTls {
    type Config = ServerConfig;

    fn live(&self) -> &Live<ServerConfig> {
        &self.live
    }
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Verifies the client certificate, then requires one of its identities to be allowed.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let ids = identities(end_entity);
        if ids.iter().any(|i| self.allowed.contains(i)) {
            Ok(ok)
        } else {
            Err(rustls::Error::General(format!(
                "client identity {ids:?} is not in the allow-list"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Who is on the other end of a TLS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// Identities (DNS/URI SANs, CN) of the verified client certificate; empty without one.
    pub identities: Vec<String>,
}

/// A server-side TLS connection, usable by tonic and axum.
#[derive(Debug)]
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl TlsConn {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Handshaken connections from a listener. The accept loop runs in a task owned by this value: dropping
/// it stops accepting (and aborts handshakes in flight).
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsConn>,
    local_addr: SocketAddr,
}

impl TlsIncoming {
    /// Starts accepting on `listener`, handshaking with the current configuration of `tls`.
    pub fn new(tls: Arc<ServerTls>, listener: TcpListener) -> std::io::Result<TlsIncoming> {
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(tls, listener, tx));
        Ok(TlsIncoming { rx, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The stream of connections for `tonic::transport::Server::serve_with_incoming`.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsConn, std::io::Error>> + Send + 'static {
        use futures::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.rx).map(Ok)
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => {
                let addr = c.peer.remote_addr;
                (c, addr)
            }
            // The accept loop only ends when this receiver is gone, so this is unreachable in
            // practice; never return a bogus connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(tls: Arc<ServerTls>, listener: TcpListener, tx: mpsc::Sender<TlsConn>) {
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = tx.closed() => break,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, keep serving.
                    tracing::warn!(tls = %tls.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let tx = tx.clone();
        let tls = tls.clone();
        handshakes.spawn(async move {
            if let Some(conn) = tls.handshake(tcp, addr).await {
                let _ = tx.send(conn).await;
            }
        });
    }
}
