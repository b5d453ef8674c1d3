//! The HTTP server loop both binaries use: plain TCP or TLS, a cap on open connections and a read
//! timeout, so idle or slow clients cannot exhaust file descriptors.
//!
//! The two limits follow Prometheus' flags (v2.42 `cmd/prometheus/main.go`):
//! - `--web.max-connections` (512): at most that many connections are open at once. Like Go's
//!   `netutil.LimitListener`, which Prometheus uses, the server stops *accepting* while the cap is
//!   reached: further clients wait in the kernel's listen backlog, costing this process no descriptor.
//! - `--web.read-timeout` (5m): Prometheus sets Go's `http.Server.ReadTimeout` (and so its idle
//!   timeout). Here a connection that has neither received nor sent a byte for that long while the
//!   server waits to read from it is closed: an idle keep-alive connection, a client that stalls in
//!   the middle of its headers or body. Unlike Go's deadline, a client that keeps trickling bytes is not
//!   cut off; the connection cap bounds what such clients can hold.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::server::ServerTls;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Prometheus' `--web.read-timeout` default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Prometheus' `--web.max-connections` default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Connection limits of an HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Close a connection idle this long while the server waits to read from it.
    pub read_timeout: Duration,
    /// Open connections at most; further clients wait to be accepted.
    pub max_connections: usize,
}

impl Default for WebLimits {
    fn default() -> WebLimits {
        WebLimits {
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` (TLS when `tls` is given) within `limits` until `stop`, then stops
/// accepting and lets the requests in flight finish.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    app: Router,
    limits: WebLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        // A slot first, then accept: while the cap is reached nothing is accepted.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, keep serving.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = permit;
            match tls {
                None => {
                    let _ = tcp.set_nodelay(true);
                    serve_connection(tcp, addr, app, limits.read_timeout, stop).await;
                }
                Some(tls) => {
                    if let Some(conn) = tls.handshake(tcp, addr).await {
                        serve_connection(conn, addr, app, limits.read_timeout, stop).await;
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection<I>(
    io: I,
    addr: SocketAddr,
    app: Router,
    read_timeout: Duration,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(IdleTimeout::new(io, read_timeout));
    let service = TowerToHyperService::new(app);
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, error = %e, "HTTP connection ended with an error");
    }
}

/// An I/O stream whose reads fail with `TimedOut` once nothing has been read or written for
/// `timeout`. The timer is only polled while the server waits for the client, so a slow handler does
/// not count against it.
struct IdleTimeout<I> {
    inner: I,
    timeout: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<I> IdleTimeout<I> {
    fn new(inner: I, timeout: Duration) -> IdleTimeout<I> {
        let now = Instant::now();
        IdleTimeout {
            inner,
            timeout,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// Whether the connection has been idle for the whole timeout; re-arms the timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.last_activity + self.timeout;
            if self.timer.deadline() != deadline {
                // Activity since the timer was armed: move it (lazily, not at every byte).
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if self.last_activity + self.timeout <= Instant::now() => {
                    return true;
                }
                Poll::Ready(()) => {}
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timeout (--web.read-timeout)",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.last_activity = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.last_activity = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `--web.read-timeout` and `--web.max-connections`, as Prometheus names them, for both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// Close a connection that has sent and received nothing for this long while the server waits
    /// for it (idle keep-alive, a client stalled in its request).
    #[arg(long = "web.read-timeout", value_name = "DURATION", default_value = "5m", value_parser = parse_read_timeout)]
    pub read_timeout: Duration,
    /// Maximum number of simultaneous HTTP connections; further clients wait to be accepted.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    pub max_connections: usize,
}

impl WebArgs {
    pub fn limits(&self) -> WebLimits {
        WebLimits {
            read_timeout: self.read_timeout,
            max_connections: self.max_connections,
        }
    }
}

fn parse_read_timeout(s: &str) -> Result<Duration, String> {
    let d = meridian_core::promfmt::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: the read timeout must be greater than 0s"));
    }
    Ok(d)
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: at least one connection must be allowed")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(
        limits: WebLimits,
        tls: Option<Arc<ServerTls>>,
    ) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let app = Router::new().route("/-/healthy", axum::routing::get(|| async { "Healthy\n" }));
        tokio::spawn(serve_http(listener, tls, app, limits, stop.clone()));
        (addr, stop)
    }

    /// Reads until the server closes the connection (or it is reset); the bytes read.
    async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    }

    const GET: &[u8] = b"GET /-/healthy HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_read_timeout() {
        let (addr, _stop) = start(WebLimits::default(), None).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let closed =
            tokio::time::timeout(Duration::from_secs(3600), read_to_close(&mut idle)).await;
        assert!(
            closed.is_ok(),
            "an idle connection was still open after an hour"
        );
        assert!(
            started.elapsed() >= DEFAULT_READ_TIMEOUT,
            "closed after {:?}",
            started.elapsed()
        );

        // A keep-alive connection that served a request is closed the same way once idle.
        let mut kept = TcpStream::connect(addr).await.expect("connect");
        kept.write_all(GET).await.expect("write");
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let closed =
            tokio::time::timeout(Duration::from_secs(3600), read_to_close(&mut kept)).await;
        assert!(
            closed.is_ok(),
            "an idle keep-alive connection was still open after an hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_stalled_in_its_headers_is_cut_off() {
        let (addr, _stop) = start(WebLimits::default(), None).await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /-/healthy HTTP/1.1\r\nhost:")
            .await
            .expect("write");
        let closed =
            tokio::time::timeout(Duration::from_secs(3600), read_to_close(&mut slow)).await;
        assert!(
            closed.is_ok(),
            "a stalled request held its connection for an hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_connection_cap_clients_wait_to_be_accepted() {
        let limits = WebLimits {
            max_connections: 2,
            ..WebLimits::default()
        };
        let (addr, _stop) = start(limits, None).await;
        let idle: Vec<TcpStream> =
            futures::future::join_all((0..2).map(|_| TcpStream::connect(addr)))
                .await
                .into_iter()
                .map(|c| c.expect("connect"))
                .collect();
        // Let the server accept both.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut third = TcpStream::connect(addr)
            .await
            .expect("connect (kernel backlog)");
        third.write_all(GET).await.expect("write");
        let mut buf = [0u8; 512];
        let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "a third connection was served past a cap of 2"
        );
        drop(idle);
        let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
            .await
            .expect("the waiting client is served once a slot is free")
            .expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    #[tokio::test]
    async fn tls_connections_have_the_same_read_timeout_and_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = crate::dev::DevPki::create(dir.path(), "edge.test").expect("pki");
        let limits = WebLimits {
            read_timeout: Duration::from_millis(300),
            max_connections: 1,
        };
        let (addr, _stop) = start(limits, Some(pki.server_tls().expect("server tls"))).await;
        crate::install_crypto_provider();
        let mut config = (*pki.client_tls(true).expect("client tls").config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("edge.test").expect("name");
        let mut first = connector
            .connect(
                name.clone(),
                TcpStream::connect(addr).await.expect("connect"),
            )
            .await
            .expect("handshake");
        first.write_all(GET).await.expect("write");
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // The one slot is taken: a second client is not even handshaken until the first is closed
        // for idling, then it is served.
        let second = tokio::spawn(async move {
            let mut s = connector
                .connect(name, TcpStream::connect(addr).await.expect("connect"))
                .await
                .expect("handshake");
            s.write_all(GET).await.expect("write");
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.expect("read");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let started = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut first)).await;
        assert!(
            closed.is_ok(),
            "an idle TLS connection outlived the read timeout"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
        let answer = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second client was served")
            .expect("task");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
