//! A running gateway: the endpoint set (discovery and `Info` polling), the fan-out, its StoreAPI server
//! (plaintext or mTLS) and the HTTP server. Every task is owned here and stopped in order by
//! [`Gateway::shutdown`]: HTTP first, then gRPC (in-flight calls finish), then the endpoint set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_edge::discovery::dns::DnsResolver;
use meridian_edge::storeapi::Store;
use meridian_pki::tls::ServerTls;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiOptions};
use crate::endpoints::{EndpointGroup, EndpointSet, EndpointSetOptions};
use crate::fanout::{Fanout, FanoutOptions};

/// Everything a gateway is started with.
pub struct GatewayOptions {
    pub flag_group: EndpointGroup,
    /// `--dns.nameserver`; `None` = the system resolver.
    pub dns_server: Option<SocketAddr>,
    /// Longest time a DNS answer is cached (`--dns.ttl-cap`).
    pub dns_ttl_cap: Duration,
    pub endpoints: EndpointSetOptions,
    pub fanout: FanoutOptions,
    pub grpc_listener: TcpListener,
    pub grpc_tls: Option<Arc<ServerTls>>,
    pub grpc_tls_reload_interval: Duration,
    pub http_listener: TcpListener,
    /// TLS (and mTLS) for the HTTP server (`--http.tls-config-file`).
    pub http_tls: Option<Arc<ServerTls>>,
    pub api: ApiOptions,
}

/// A started gateway.
pub struct Gateway {
    endpoints: Arc<EndpointSet>,
    fanout: Arc<Fanout>,
    api: Arc<Api>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    set_stop: CancellationToken,
    set_task: JoinHandle<()>,
    grpc_stop: CancellationToken,
    grpc_task: JoinHandle<()>,
    http_stop: CancellationToken,
    http_task: JoinHandle<()>,
    tls_watcher: Option<meridian_pki::tls::Watcher>,
}

impl Gateway {
    /// Starts everything; the endpoints are discovered and asked for `Info` once before this returns,
    /// so the first queries see them.
    pub async fn start(opts: GatewayOptions) -> anyhow::Result<Gateway> {
        let resolver = DnsResolver::with_ttl_cap(opts.dns_server, opts.dns_ttl_cap)?;
        let endpoints = EndpointSet::new(
            resolver,
            opts.dns_server.is_some(),
            opts.flag_group,
            opts.endpoints,
        )?;
        endpoints.refresh_now().await;
        let fanout = Arc::new(Fanout::new(endpoints.clone(), opts.fanout));

        let set_stop = CancellationToken::new();
        let set_task = tokio::spawn(endpoints.clone().run(set_stop.clone()));

        let grpc_addr = opts.grpc_listener.local_addr()?;
        let grpc_stop = CancellationToken::new();
        let shutdown = grpc_stop.clone().cancelled_owned();
        let store: Arc<dyn Store> = fanout.clone();
        let spawned = meridian_edge::storeapi::server::spawn(
            store,
            opts.grpc_listener,
            opts.grpc_tls,
            opts.grpc_tls_reload_interval,
            shutdown,
        )?;
        let (grpc_task, tls_watcher) = (spawned.task, spawned.tls_watcher);

        let http_addr = opts.http_listener.local_addr()?;
        let http_stop = CancellationToken::new();
        let view = endpoints.clone();
        let http_tls_metrics = opts.http_tls.clone();
        let api = Arc::new(Api::new(
            fanout.clone(),
            Arc::new(move || view.stores_view()),
            opts.api,
            |r| {
                if let Some(tls) = &http_tls_metrics {
                    tls.metrics().register(r);
                }
            },
        ));
        let app = crate::api::router(api.clone());
        let stop = http_stop.clone();
        let http_task = match opts.http_tls {
            None => tokio::spawn(meridian_edge::agent::serve_http(
                opts.http_listener,
                app,
                stop,
            )),
            Some(tls) => {
                let incoming =
                    meridian_pki::tls::server::TlsIncoming::new(tls, opts.http_listener)?;
                tokio::spawn(meridian_edge::agent::serve_http(incoming, app, stop))
            }
        };
        tracing::info!(grpc = %grpc_addr, http = %http_addr, "gateway started");
        Ok(Gateway {
            endpoints,
            fanout,
            api,
            grpc_addr,
            http_addr,
            set_stop,
            set_task,
            grpc_stop,
            grpc_task,
            http_stop,
            http_task,
            tls_watcher,
        })
    }

    pub fn endpoints(&self) -> &Arc<EndpointSet> {
        &self.endpoints
    }

    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops HTTP, then gRPC, then discovery, waiting for each.
    pub async fn shutdown(self) {
        self.http_stop.cancel();
        let _ = self.http_task.await;
        self.grpc_stop.cancel();
        let _ = self.grpc_task.await;
        self.set_stop.cancel();
        let _ = self.set_task.await;
        if let Some(w) = self.tls_watcher {
            w.stop().await;
        }
        tracing::info!("gateway stopped");
    }
}
