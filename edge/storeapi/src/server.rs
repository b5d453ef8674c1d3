//! Serves any [`Store`] over gRPC: `thanos.Store`, `thanos.info.Info` and `thanos.Metadata` (and, for a
//! receiver, `thanos.WriteableStore`).
//!
//! The adapter owns the wire-only parts of the contract, so implementations do not repeat them:
//! `response_batch_size` batching, the `limit` cap (a second line of defence behind the store's own), error
//! mapping, and message sizes. Streams are pulled by tonic as the client reads, which gives backpressure;
//! when the client goes away tonic drops the stream and with it the store's work.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use super::{MAX_MESSAGE_SIZE, SeriesFrame, Store};
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How the StoreAPI server admits calls.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Admission control of `Series` calls; `None` admits every call at once.
    pub series_gate: Option<SeriesGate>,
    /// Also serve `thanos.WriteableStore/RemoteWrite` (a receiver).
    pub writer: Option<Arc<dyn crate::writer::RemoteWriter>>,
}

/// Thanos' store gateway gate (`--store.grpc.series-max-concurrency`, Thanos `pkg/gate`): at most
/// `max` `Series` calls run at once, each from its arrival until its response stream ends or is
/// dropped (client gone); further calls wait, in arrival order (tokio's semaphore is fair). A call
/// whose client goes away while it waits leaves the queue.
#[derive(Clone, Debug)]
pub struct SeriesGate {
    sem: Arc<Semaphore>,
    max: usize,
    in_flight: Gauge,
    waiting: Gauge,
}

impl SeriesGate {
    /// A gate admitting `max` concurrent calls; `None` for 0 (unlimited).
    pub fn new(max: usize) -> Option<SeriesGate> {
        let max = max.min(Semaphore::MAX_PERMITS);
        (max > 0).then(|| SeriesGate {
            sem: Arc::new(Semaphore::new(max)),
            max,
            in_flight: Gauge::default(),
            waiting: Gauge::default(),
        })
    }

    /// Registers the gate's gauges (names after Thanos' `gate_queries_in_flight` / `_max`).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        let max = Gauge::<i64>::default();
        max.set(i64::try_from(self.max).unwrap_or(i64::MAX));
        r.register(
            "meridian_storeapi_series_gate_queries_max",
            "Most StoreAPI Series calls served at once (--store.grpc.series-max-concurrency)",
            max,
        );
        r.register(
            "meridian_storeapi_series_gate_queries_in_flight",
            "StoreAPI Series calls being served",
            self.in_flight.clone(),
        );
        r.register(
            "meridian_storeapi_series_gate_queries_waiting",
            "StoreAPI Series calls waiting for a slot",
            self.waiting.clone(),
        );
    }

    /// Calls being served.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Calls waiting for a slot.
    pub fn waiting(&self) -> i64 {
        self.waiting.get()
    }

    /// Waits for a slot; the slot is held until the guard is dropped.
    async fn enter(&self) -> Result<GateGuard, Status> {
        struct Waiting(Gauge);
        impl Drop for Waiting {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.waiting.inc();
        let w = Waiting(self.waiting.clone());
        let permit = self
            .sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the StoreAPI server is shutting down"))?;
        drop(w);
        self.in_flight.inc();
        Ok(GateGuard {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }
}

/// A `Series` call's slot in the gate.
struct GateGuard {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// The gRPC services for `store`, ready for a tonic server (plaintext or TLS incoming).
pub fn routes(store: Arc<dyn Store>) -> tonic::service::Routes {
    routes_with(store, ServerOptions::default())
}

/// [`routes`] with options.
pub fn routes_with(store: Arc<dyn Store>, opts: ServerOptions) -> tonic::service::Routes {
    let writer = opts.writer.clone();
    let adapter = Adapter { store, opts };
    let routes = tonic::service::Routes::new(
        pb::store_server::StoreServer::new(adapter.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
    )
    .add_service(
        infopb::info_server::InfoServer::new(adapter.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
    )
    .add_service(
        pb::metadata_server::MetadataServer::new(adapter)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
    );
    match writer {
        Some(w) => routes.add_service(crate::writer::service(w)),
        None => routes,
    }
}

/// Serves `store` on a plaintext TCP listener until `shutdown` resolves.
pub async fn serve_tcp(
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_tcp_with(store, listener, ServerOptions::default(), shutdown).await
}

/// [`serve_tcp`] with options.
pub async fn serve_tcp_with(
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_routes(routes_with(store, opts))
        // Without TCP_NODELAY a small answer written in two segments waits for the client's delayed
        // ACK (Nagle): ~40 ms added to every plaintext StoreAPI call (issue 25).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Serves `store` on any stream of connections (e.g. `meridian_pki::tls::TlsIncoming` for mTLS) until
/// `shutdown` resolves.
pub async fn serve_incoming<S, IO, E>(
    store: Arc<dyn Store>,
    incoming: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    serve_incoming_with(store, incoming, ServerOptions::default(), shutdown).await
}

/// [`serve_incoming`] with options.
pub async fn serve_incoming_with<S, IO, E>(
    store: Arc<dyn Store>,
    incoming: S,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    tonic::transport::Server::builder()
        .add_routes(routes_with(store, opts))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// A StoreAPI server task, plaintext or TLS (then with the watcher that reloads its certificates).
#[derive(Debug)]
pub struct Spawned {
    pub task: tokio::task::JoinHandle<()>,
    pub tls_watcher: Option<meridian_pki::tls::Watcher>,
}

/// Spawns the StoreAPI server for `store` on `listener`, over TLS when `tls` is given (its files are
/// re-checked every `reload_interval`), until `shutdown` resolves. Server errors are logged.
pub fn spawn(
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<meridian_pki::tls::ServerTls>>,
    reload_interval: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Spawned> {
    spawn_with(
        store,
        listener,
        tls,
        reload_interval,
        ServerOptions::default(),
        shutdown,
    )
}

/// [`spawn`] with options.
pub fn spawn_with(
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<meridian_pki::tls::ServerTls>>,
    reload_interval: std::time::Duration,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Spawned> {
    let log = |r: Result<(), tonic::transport::Error>| {
        if let Err(e) = r {
            tracing::error!(error = %e, "StoreAPI server failed");
        }
    };
    Ok(match tls {
        None => Spawned {
            task: tokio::spawn(async move {
                log(serve_tcp_with(store, listener, opts, shutdown).await)
            }),
            tls_watcher: None,
        },
        Some(tls) => {
            let watcher = meridian_pki::tls::watch(tls.clone(), reload_interval)
                .map_err(std::io::Error::other)?;
            let incoming = meridian_pki::tls::TlsIncoming::new(tls, listener)?;
            Spawned {
                task: tokio::spawn(async move {
                    log(serve_incoming_with(store, incoming.into_stream(), opts, shutdown).await)
                }),
                tls_watcher: Some(watcher),
            }
        }
    })
}

#[derive(Clone)]
struct Adapter {
    store: Arc<dyn Store>,
    opts: ServerOptions,
}

/// Turns a store's frames into wire frames: batches of up to `batch` series when `batch > 0`, at most
/// `limit` series when `limit > 0`. A warning flushes the pending batch first so frame order is kept.
fn wire_frames(
    frames: super::SeriesStream,
    batch: usize,
    limit: usize,
) -> FrameStream<pb::SeriesResponse> {
    use pb::series_response::Result as R;
    struct St {
        frames: super::SeriesStream,
        pending: Vec<pb::Series>,
        queued: Option<pb::SeriesResponse>,
        sent: usize,
        done: bool,
    }
    let frame = |r: R| pb::SeriesResponse { result: Some(r) };
    let st = St {
        frames,
        pending: Vec::new(),
        queued: None,
        sent: 0,
        done: false,
    };
    Box::pin(futures::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(q) = st.queued.take() {
                return Some((Ok(q), st));
            }
            if st.done {
                if st.pending.is_empty() {
                    return None;
                }
                let series = std::mem::take(&mut st.pending);
                return Some((Ok(frame(R::Batch(pb::SeriesBatch { series }))), st));
            }
            match st.frames.next().await {
                None => st.done = true,
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.clear();
                    return Some((Err(Status::from(e)), st));
                }
                Some(Ok(SeriesFrame::Warning(w))) => {
                    if st.pending.is_empty() {
                        return Some((Ok(frame(R::Warning(w))), st));
                    }
                    st.queued = Some(frame(R::Warning(w)));
                    let series = std::mem::take(&mut st.pending);
                    return Some((Ok(frame(R::Batch(pb::SeriesBatch { series }))), st));
                }
                Some(Ok(SeriesFrame::Series(s))) => {
                    st.sent += 1;
                    if limit > 0 && st.sent >= limit {
                        // Stop pulling: dropping the store's stream ends its work.
                        st.done = true;
                        st.frames = Box::pin(futures::stream::empty());
                    }
                    if batch == 0 {
                        return Some((Ok(frame(R::Series(s))), st));
                    }
                    st.pending.push(s);
                    if st.pending.len() >= batch {
                        let series = std::mem::take(&mut st.pending);
                        return Some((Ok(frame(R::Batch(pb::SeriesBatch { series }))), st));
                    }
                }
            }
        }
    }))
}

#[tonic::async_trait]
impl pb::store_server::Store for Adapter {
    type SeriesStream = FrameStream<pb::SeriesResponse>;

    async fn series(
        &self,
        request: Request<pb::SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let req = request.into_inner();
        let batch = usize::try_from(req.response_batch_size).unwrap_or(0);
        let limit = usize::try_from(req.limit).unwrap_or(0);
        // Admission first: a waiting call holds nothing but its request. When its client goes away
        // tonic drops this future, and with it the place in the queue.
        let slot = match &self.opts.series_gate {
            Some(g) => Some(g.enter().await?),
            None => None,
        };
        let frames = self.store.series(req).await?;
        let frames = wire_frames(frames, batch, limit);
        Ok(Response::new(match slot {
            None => frames,
            // The slot is held until the response stream ends or is dropped.
            Some(slot) => Box::pin(frames.map(move |f| {
                let _held = &slot;
                f
            })),
        }))
    }

    async fn label_names(
        &self,
        request: Request<pb::LabelNamesRequest>,
    ) -> Result<Response<pb::LabelNamesResponse>, Status> {
        Ok(Response::new(
            self.store.label_names(request.into_inner()).await?,
        ))
    }

    async fn label_values(
        &self,
        request: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::LabelValuesResponse>, Status> {
        Ok(Response::new(
            self.store.label_values(request.into_inner()).await?,
        ))
    }
}

#[tonic::async_trait]
impl infopb::info_server::Info for Adapter {
    async fn info(
        &self,
        _request: Request<infopb::InfoRequest>,
    ) -> Result<Response<infopb::InfoResponse>, Status> {
        Ok(Response::new(self.store.info().await?))
    }
}

#[tonic::async_trait]
impl pb::metadata_server::Metadata for Adapter {
    type MetricMetadataStream = FrameStream<pb::MetricMetadataResponse>;

    async fn metric_metadata(
        &self,
        request: Request<pb::MetricMetadataRequest>,
    ) -> Result<Response<Self::MetricMetadataStream>, Status> {
        let frames = self.store.metric_metadata(request.into_inner()).await?;
        Ok(Response::new(Box::pin(
            frames.map(|r| r.map_err(Status::from)),
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meridian_core::error::Error;

    fn series(n: usize) -> super::super::SeriesStream {
        let frames: Vec<_> = (0..n)
            .map(|i| {
                Ok(SeriesFrame::Series(pb::Series {
                    labels: meridian_core::labels::Labels::from_pairs([("i", i.to_string())]),
                    chunks: vec![],
                }))
            })
            .collect();
        Box::pin(futures::stream::iter(frames))
    }

    async fn collect(s: FrameStream<pb::SeriesResponse>) -> Vec<String> {
        use pb::series_response::Result as R;
        s.map(|r| match r.unwrap().result.unwrap() {
            R::Series(_) => "s".to_string(),
            R::Batch(b) => format!("b{}", b.series.len()),
            R::Warning(w) => format!("w:{w}"),
            R::Hints(_) => "h".to_string(),
        })
        .collect()
        .await
    }

    #[tokio::test]
    async fn batching_limits_and_warnings() {
        assert_eq!(collect(wire_frames(series(3), 0, 0)).await, ["s", "s", "s"]);
        assert_eq!(
            collect(wire_frames(series(5), 2, 0)).await,
            ["b2", "b2", "b1"]
        );
        assert_eq!(collect(wire_frames(series(5), 2, 3)).await, ["b2", "b1"]);
        assert_eq!(collect(wire_frames(series(5), 0, 2)).await, ["s", "s"]);
        let with_warning: super::super::SeriesStream = Box::pin(series(3).chain(
            futures::stream::iter([Ok(SeriesFrame::Warning("x".into()))]),
        ));
        assert_eq!(
            collect(wire_frames(with_warning, 2, 0)).await,
            ["b2", "b1", "w:x"]
        );
        let failing: super::super::SeriesStream = Box::pin(series(1).chain(futures::stream::iter(
            [Err(Error::limit("too many series"))],
        )));
        let out: Vec<_> = wire_frames(failing, 0, 0).collect().await;
        assert!(out[0].is_ok());
        assert_eq!(
            out[1].as_ref().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }
}
