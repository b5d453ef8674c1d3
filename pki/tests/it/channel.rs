//! The gRPC channel (`meridian_pki::channel`): it reconnects after losing its server, bounds connecting,
//! and drops a connection whose peer stops answering keep-alive pings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_pki::channel::{ChannelOptions, GrpcChannel};
use meridian_storeapi::Store;
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::proto::thanos as pb;
use meridian_testkit::FaultProxy;
use tokio::net::TcpListener;

/// Serves the store on `listener` until the returned sender is dropped or fired.
fn serve(
    listener: TcpListener,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(meridian_storeapi::server::serve_tcp(
        Arc::new(crate::up_store()),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    (tx, task)
}

async fn series_count(c: &StoreClient) -> meridian_core::error::Result<usize> {
    use futures::StreamExt;
    let req = pb::SeriesRequest {
        min_time: 0,
        max_time: 10_000,
        matchers: vec![pb::LabelMatcher {
            r#type: pb::label_matcher::Type::Eq as i32,
            name: "__name__".into(),
            value: "up".into(),
        }],
        ..Default::default()
    };
    let mut n = 0;
    let mut s = c.series(req).await?;
    while let Some(f) = s.next().await {
        f?;
        n += 1;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, task) = serve(listener);
    let channel =
        GrpcChannel::plaintext_lazy(&addr.to_string(), Some(Duration::from_secs(5))).unwrap();
    let client = StoreClient::new(channel, addr.to_string());
    assert_eq!(series_count(&client).await.unwrap(), 1);
    client.info().await.unwrap();

    // The server goes away: calls fail as unavailable, not hang.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let e = client.info().await.unwrap_err();
    assert_eq!(e.kind, meridian_core::error::ErrorKind::Unavailable, "{e}");

    // It comes back on the same port: the next call connects again.
    let (_stop, _task) = serve(TcpListener::bind(addr).await.unwrap());
    assert_eq!(series_count(&client).await.unwrap(), 1);
}

#[tokio::test]
async fn connecting_is_bounded_by_the_connect_timeout() {
    let target: http::Uri = "http://192.0.2.1:10901".parse().unwrap();
    let options = ChannelOptions {
        connect_timeout: Some(Duration::from_millis(100)),
        ..ChannelOptions::new(target.clone())
    };
    // A connector that never finishes (a SYN nobody answers, a TLS handshake that stalls).
    let never = tower::service_fn(|_: http::Uri| {
        futures::future::pending::<std::io::Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>>>(
        )
    });
    let channel = GrpcChannel::lazy(target, options, never).unwrap();
    let started = std::time::Instant::now();
    let e = channel.connect().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("no connection within 100ms"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _task) = serve(listener);
    let proxy = FaultProxy::start(&addr.to_string());
    let target: http::Uri = format!("http://{}", proxy.addr).parse().unwrap();
    let keep_alive = |every: Option<Duration>| ChannelOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        keep_alive_interval: every,
        keep_alive_timeout: Duration::from_millis(300),
        ..ChannelOptions::new(target.clone())
    };
    let dial = tower::service_fn(|uri: http::Uri| async move {
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
    });
    let pinging = StoreClient::new(
        GrpcChannel::lazy(
            target.clone(),
            keep_alive(Some(Duration::from_millis(100))),
            dial,
        )
        .unwrap(),
        "pinging",
    );
    let silent = StoreClient::new(
        GrpcChannel::lazy(target.clone(), keep_alive(None), dial).unwrap(),
        "silent",
    );
    assert_eq!(series_count(&pinging).await.unwrap(), 1);
    assert_eq!(series_count(&silent).await.unwrap(), 1);

    // Nothing moves any more: the pinging channel gives up on its open call within interval + timeout;
    // the one without keep-alive is still waiting well after that (the negative control).
    proxy.stall();
    let (with_pings, without) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), series_count(&pinging)),
        tokio::time::timeout(Duration::from_secs(2), series_count(&silent)),
    );
    let e = with_pings.expect("keep-alive ended the call").unwrap_err();
    assert_eq!(e.kind, meridian_core::error::ErrorKind::Unavailable, "{e}");
    assert!(
        without.is_err(),
        "the call without keep-alive ended: {without:?}"
    );

    // Service resumes: a new connection answers.
    proxy.resume();
    assert_eq!(series_count(&pinging).await.unwrap(), 1);
}
