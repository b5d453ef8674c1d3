//! A gRPC client channel: one HTTP/2 connection (plaintext or TLS) driven by `h2` directly, made on
//! first use and again after it is lost.
//!
//! Why not tonic's `Channel`: every call through it crosses four tasks before the caller sees an
//! answer — tower's `Buffer` worker, hyper's dispatch into its connection task, and a task hyper
//! spawns per request to wait for the response headers — and on a small machine each hop is a thread
//! wake-up (issue 25 measured the gateway's fetch at 0.25–0.28 ms where a loopback `Series` call from a
//! current-thread client takes 0.11 ms). Here the caller's task opens the stream itself, and the one
//! connection task wakes it when frames arrive. Tonic's generated clients take this channel as their
//! transport (it is a `tower::Service` over `http::Request`); `h2` is the same crate hyper and tonic
//! drive, with hyper 1.x's client defaults (windows, frame and header sizes, no server push).
//!
//! What a StoreAPI client needs and nothing more: unary and server-streaming calls (a request body is
//! sent whole, then the response is awaited), HTTP/2 keep-alive pings while calls are open (as hyper's
//! `keep_alive_while_idle(false)`: an idle connection is not pinged), a connect timeout, and an
//! `:authority` override for ingresses that route by it.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

/// hyper 1.x's HTTP/2 client defaults, which tonic's channel used.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// hyper's default wait for a keep-alive PONG.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const USER_AGENT: &str = concat!("meridian/", env!("CARGO_PKG_VERSION"));

/// A byte stream a connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type Connect = Box<dyn Fn() -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> + Send + Sync>;

/// How a channel connects and keeps its connection.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// `:scheme` and `:authority` of every request (tonic's `Endpoint::origin`).
    pub origin: Uri,
    pub connect_timeout: Option<Duration>,
    /// A PING this often while calls are open; no PONG within `keep_alive_timeout` drops the
    /// connection (its calls fail as `Unavailable`).
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_timeout: Duration,
}

impl ChannelOptions {
    /// Connects to `origin`'s authority: no timeout, no keep-alive.
    pub fn new(origin: Uri) -> ChannelOptions {
        ChannelOptions {
            origin,
            connect_timeout: None,
            keep_alive_interval: None,
            keep_alive_timeout: KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// A cheap-to-clone handle on one HTTP/2 connection to a gRPC server.
#[derive(Clone)]
pub struct GrpcChannel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcChannel")
            .field("origin", &self.inner.authority)
            .finish_non_exhaustive()
    }
}

struct Inner {
    scheme: Scheme,
    authority: Authority,
    connect: Connect,
    connect_timeout: Option<Duration>,
    keep_alive: Option<(Duration, Duration)>,
    live: Mutex<Option<Live>>,
    /// One connection attempt at a time; callers that arrive meanwhile use its result.
    connecting: tokio::sync::Mutex<()>,
}

/// The current connection: its request handle, and whether its task has ended.
#[derive(Clone)]
struct Live {
    send: h2::client::SendRequest<Bytes>,
    state: Arc<ConnState>,
}

#[derive(Debug, Default)]
struct ConnState {
    gone: AtomicBool,
    /// Calls whose response is not yet finished (keep-alive pings only while this is non-zero).
    open: AtomicUsize,
}

impl GrpcChannel {
    /// A channel that connects through `connector` (called with `target`) on its first call.
    pub fn lazy<C>(
        target: Uri,
        options: ChannelOptions,
        connector: C,
    ) -> Result<GrpcChannel, String>
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
        C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        C::Future: Send,
    {
        let connect: Connect = Box::new(move || {
            let mut c = connector.clone();
            let target = target.clone();
            Box::pin(async move {
                let io = c
                    .ready()
                    .await
                    .map_err(std::io::Error::other)?
                    .call(target)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Box::new(TokioIo::new(io)) as Box<dyn Io>)
            })
        });
        GrpcChannel::with_connect(options, connect)
    }

    /// A plaintext channel to `host:port` (TCP_NODELAY set).
    pub fn plaintext_lazy(
        address: &str,
        connect_timeout: Option<Duration>,
    ) -> Result<GrpcChannel, String> {
        let origin: Uri = format!("http://{address}")
            .parse()
            .map_err(|e| format!("invalid endpoint address {address:?}: {e}"))?;
        let address = address.to_owned();
        let connect: Connect = Box::new(move || {
            let address = address.clone();
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(address.as_str()).await?;
                tcp.set_nodelay(true)?;
                Ok(Box::new(tcp) as Box<dyn Io>)
            })
        });
        let options = ChannelOptions {
            connect_timeout,
            ..ChannelOptions::new(origin)
        };
        GrpcChannel::with_connect(options, connect)
    }

    fn with_connect(options: ChannelOptions, connect: Connect) -> Result<GrpcChannel, String> {
        let parts = options.origin.clone().into_parts();
        let authority = parts
            .authority
            .ok_or_else(|| format!("no host:port in {}", options.origin))?;
        Ok(GrpcChannel {
            inner: Arc::new(Inner {
                scheme: parts.scheme.unwrap_or(Scheme::HTTP),
                authority,
                connect,
                connect_timeout: options.connect_timeout,
                keep_alive: options
                    .keep_alive_interval
                    .map(|every| (every, options.keep_alive_timeout)),
                live: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Connects now, if not connected (a lazy channel otherwise connects on its first call).
    pub async fn connect(&self) -> Result<(), Status> {
        self.inner.live().await.map(|_| ())
    }
}

impl Inner {
    fn current(&self) -> Option<Live> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref()
            .filter(|l| !l.state.gone.load(Ordering::Acquire))
            .cloned()
    }

    async fn live(&self) -> Result<Live, Status> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let _one = self.connecting.lock().await;
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let unavailable =
            |what: String| Status::unavailable(format!("connecting to {}: {what}", self.authority));
        let io = match self.connect_timeout {
            Some(d) => tokio::time::timeout(d, (self.connect)())
                .await
                .map_err(|_| unavailable(format!("no connection within {d:?}")))?,
            None => (self.connect)().await,
        }
        .map_err(|e| unavailable(e.to_string()))?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let state = Arc::new(ConnState::default());
        tokio::spawn(drive(
            conn,
            state.clone(),
            self.keep_alive,
            self.authority.to_string(),
        ));
        let live = Live { send, state };
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        Ok(live)
    }

    /// A connection ready for one more stream. A connection that refuses new streams (GOAWAY, or
    /// closing) is replaced once: nothing was sent on it yet.
    async fn ready(&self) -> Result<(Live, h2::client::SendRequest<Bytes>), Status> {
        let mut retried = false;
        loop {
            let live = self.live().await?;
            match live.send.clone().ready().await {
                Ok(send) => return Ok((live, send)),
                Err(e) => {
                    live.state.gone.store(true, Ordering::Release);
                    if retried {
                        return Err(status_from_h2(e));
                    }
                    retried = true;
                }
            }
        }
    }

    async fn call(
        self: Arc<Self>,
        req: Request<tonic::body::Body>,
    ) -> Result<Response<ResponseBody>, Status> {
        let (live, mut send) = self.ready().await?;
        let (mut parts, body) = req.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        parts.uri =
            Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;
        if !parts.headers.contains_key(http::header::USER_AGENT) {
            parts.headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
        }
        let eos = body.is_end_stream();
        let (response, mut stream) = send
            .send_request(Request::from_parts(parts, ()), eos)
            .map_err(status_from_h2)?;
        let open = OpenCall::new(live.state.clone());
        if !eos {
            send_body(body, &mut stream).await?;
        }
        let (parts, recv) = response.await.map_err(status_from_h2)?.into_parts();
        Ok(Response::from_parts(
            parts,
            ResponseBody {
                recv,
                data_done: false,
                done: false,
                _open: open,
            },
        ))
    }
}

/// Sends a request body whole, within the stream's flow-control window.
async fn send_body(
    body: tonic::body::Body,
    stream: &mut h2::SendStream<Bytes>,
) -> Result<(), Status> {
    let mut body = std::pin::pin!(body);
    loop {
        match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => {
                return stream.send_data(Bytes::new(), true).map_err(status_from_h2);
            }
            Some(Err(e)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(e);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    while !data.is_empty() {
                        stream.reserve_capacity(data.len());
                        let granted = poll_fn(|cx| stream.poll_capacity(cx))
                            .await
                            .ok_or_else(|| Status::unavailable("stream closed while sending"))?
                            .map_err(status_from_h2)?;
                        let chunk = data.split_to(granted.min(data.len()));
                        stream.send_data(chunk, false).map_err(status_from_h2)?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return stream.send_trailers(trailers).map_err(status_from_h2);
                    }
                }
            },
        }
    }
}

/// Drives one connection until it ends, pinging while calls are open.
async fn drive(
    mut conn: h2::client::Connection<Box<dyn Io>, Bytes>,
    state: Arc<ConnState>,
    keep_alive: Option<(Duration, Duration)>,
    peer: String,
) {
    let ping = conn.ping_pong();
    let mut conn = std::pin::pin!(conn);
    match (keep_alive, ping) {
        (Some((every, wait)), Some(mut ping)) => loop {
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "gRPC connection ended");
                    }
                    break;
                }
                () = tokio::time::sleep(every) => {
                    if state.open.load(Ordering::Acquire) == 0 {
                        continue;
                    }
                    let pong = tokio::time::timeout(wait, ping.ping(h2::Ping::opaque()));
                    tokio::select! {
                        r = &mut conn => {
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "gRPC connection ended");
                            }
                            break;
                        }
                        r = pong => match r {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(%peer, error = %e, "gRPC keep-alive ping failed; dropping the connection");
                                break;
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "no keep-alive PONG within {wait:?}; dropping the connection");
                                break;
                            }
                        }
                    }
                }
            }
        },
        _ => {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "gRPC connection ended");
            }
        }
    }
    state.gone.store(true, Ordering::Release);
}

/// Counts a call as open until its response body is dropped.
#[derive(Debug)]
struct OpenCall(Arc<ConnState>);

impl OpenCall {
    fn new(state: Arc<ConnState>) -> OpenCall {
        state.open.fetch_add(1, Ordering::AcqRel);
        OpenCall(state)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body: DATA frames (flow-control capacity given back as they are handed on), then
/// trailers.
#[derive(Debug)]
pub struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
    done: bool,
    _open: OpenCall,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Giving capacity back can only fail once the stream is gone; the next poll says so.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status_from_h2(e))));
                }
                None => self.data_done = true,
            }
        }
        let r = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        Poll::Ready(match r {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(status_from_h2(e))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// An `h2` error as the status tonic gives it (tonic 0.14 `Status::from_h2_error`, and `Unavailable`
/// for I/O errors as for its hyper transport).
fn status_from_h2(e: h2::Error) -> Status {
    let code = if e.is_io() {
        Code::Unavailable
    } else {
        match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(h2::Reason::CANCEL) => Code::Cancelled,
            Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            Some(_) => Code::Internal,
            None if e.is_go_away() || e.is_remote() => Code::Unavailable,
            None => Code::Unknown,
        }
    };
    Status::new(code, format!("h2 protocol error: {e}"))
}

impl Service<Request<tonic::body::Body>> for GrpcChannel {
    type Response = Response<ResponseBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.inner.clone().call(req))
    }
}
