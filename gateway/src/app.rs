//! A running gateway: the endpoint set (discovery and `Info` polling), the fan-out, its StoreAPI server
//! (plaintext or mTLS) and the HTTP server. Every task is owned here and stopped in order by
//! [`Gateway::shutdown`]: HTTP first, then gRPC (in-flight calls finish), then the endpoint set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::net::dns::DnsResolver;
use meridian_core::runtime::{DEFAULT_DRAIN, Task};
use meridian_pki::tls::ServerTls;
use meridian_storeapi::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiOptions};
use crate::bucket::BucketStore;
use crate::cache::shared::SharedCache;
use crate::endpoints::{EndpointGroup, EndpointSet, EndpointSetOptions};
use crate::fanout::{Fanout, FanoutOptions, QueryOptions};
use crate::rules::tsdb::RuleTsdb;
use crate::rules::{EvalContext, FanoutSink, RuleManager, RulesOptions};

/// Everything a gateway is started with.
#[derive(Debug)]
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
    /// The HTTP server's connection cap and read timeout (`--web.*`).
    pub web: meridian_pki::serve::WebLimits,
    /// A bucket store inside the gateway (`--objstore.config-file`), asked like any endpoint.
    pub bucket: Option<Arc<BucketStore>>,
    /// Rule evaluation (`--rule-file`).
    pub rules: Option<RulesOptions>,
    pub api: ApiOptions,
}

impl GatewayOptions {
    /// Defaults for everything but the `--endpoint` group and the listeners: the system resolver,
    /// default endpoint set, fan-out and API options, no TLS, no bucket store.
    pub fn new(
        flag_group: EndpointGroup,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
    ) -> GatewayOptions {
        GatewayOptions {
            flag_group,
            dns_server: None,
            dns_ttl_cap: Duration::from_secs(5),
            endpoints: EndpointSetOptions::default(),
            fanout: FanoutOptions::default(),
            grpc_listener,
            grpc_tls: None,
            grpc_tls_reload_interval: Duration::from_secs(60),
            http_listener,
            http_tls: None,
            web: meridian_pki::serve::WebLimits::default(),
            bucket: None,
            rules: None,
            api: ApiOptions::default(),
        }
    }
}

/// How long queued shared-cache writes may take at shutdown (a cache is an optimisation: a short
/// drain).
const CACHE_DRAIN: Duration = Duration::from_secs(2);

/// A started gateway.
#[derive(Debug)]
pub struct Gateway {
    endpoints: Arc<EndpointSet>,
    fanout: Arc<Fanout>,
    api: Arc<Api>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    set: Task,
    grpc: Task,
    http: Task,
    tls_watcher: Option<meridian_pki::tls::Watcher>,
    bucket: Option<Task>,
    rules: Option<(Arc<RuleManager>, Task)>,
    notifier: Option<Task>,
    router: Option<Task>,
    /// Shared caches (results, bucket index and chunks): their queued writes drain last.
    caches: Vec<Arc<SharedCache>>,
}

/// Syncs `store` until the first sync succeeds (retrying with backoff), then every sync interval.
fn run_bucket(store: Arc<BucketStore>, first_done: bool) -> Task {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        while !first_done && !store.is_ready() {
            match store.sync().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "first bucket sync failed");
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
        store.run(token).await;
    });
    Task::from_parts("bucket sync", stop, task)
}

/// What rule evaluation reads and writes through: the fan-out, the rule TSDB, the alert sinks.
fn rule_context(
    r: &crate::rules::RulesOptions,
    fanout: &Arc<Fanout>,
    tsdb: &RuleTsdb,
    engine_opts: crate::promql::EngineOptions,
    notifier: &Option<Arc<crate::alerting::notifier::Notifier>>,
    router: &Option<Arc<crate::alerting::dispatch::Router>>,
) -> EvalContext {
    let view = fanout.clone();
    EvalContext {
        engine: crate::promql::Engine::new(engine_opts),
        queryable: Arc::new(move |strategy| {
            Arc::new(view.querier(QueryOptions {
                dedup: true,
                partial_response: Some(strategy),
                ..QueryOptions::default()
            })) as Arc<dyn crate::queryable::Queryable>
        }),
        sink: Arc::new(tsdb.clone()),
        alerts: {
            let mut sinks = r.alert_sinks.clone();
            if let Some(n) = &notifier {
                sinks.push(n.clone());
            }
            if let Some(r) = &router {
                sinks.push(r.clone());
            }
            (!sinks.is_empty()).then(|| Arc::new(FanoutSink(sinks)) as _)
        },
        external_labels: r
            .external_labels
            .iter()
            .map(|l| (l.name.to_owned(), l.value.to_owned()))
            .collect(),
        external_url: r.external_url.clone(),
        default_partial_response: r.partial_response,
        resend_delay: r.resend_delay,
        for_outage_tolerance: r.for_outage_tolerance,
        for_grace_period: r.for_grace_period,
    }
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
        let bucket = match &opts.bucket {
            Some(store) => {
                // The first sync before the first query, so history is there from the start.
                let first = store.sync().await;
                if let Err(e) = &first {
                    tracing::warn!(error = %e, "first bucket sync failed; retrying in the background");
                }
                endpoints.add_local(&format!("bucket {}", store.description()), store.clone());
                Some(run_bucket(store.clone(), first.is_ok()))
            }
            None => None,
        };
        let engine_opts = opts.api.engine.clone();
        let rule_tsdb = match &opts.rules {
            Some(r) => {
                let (dir, labels, retention) =
                    (r.data_dir.clone(), r.external_labels.clone(), r.retention);
                let t =
                    tokio::task::spawn_blocking(move || RuleTsdb::open(&dir, labels, retention))
                        .await??;
                endpoints.add_local("rules", t.store());
                Some(t)
            }
            None => None,
        };
        endpoints.refresh_now().await;
        let fanout = Arc::new(Fanout::new(endpoints.clone(), opts.fanout));

        let set_stop = CancellationToken::new();
        let set_task = tokio::spawn(endpoints.clone().run(set_stop.clone()));

        let grpc_addr = opts.grpc_listener.local_addr()?;
        let grpc_stop = CancellationToken::new();
        let shutdown = grpc_stop.clone().cancelled_owned();
        let store: Arc<dyn Store> = fanout.clone();
        let spawned = meridian_storeapi::server::spawn(
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
        let bucket_metrics = opts.bucket.as_ref().map(|b| b.metrics().clone());
        let notifier = opts.rules.as_ref().and_then(|r| r.notifier.clone());
        let notifier_metrics = notifier.as_ref().map(|n| n.metrics.clone());
        let router = opts.rules.as_ref().and_then(|r| r.router.clone());
        let router_metrics = router.as_ref().map(|r| r.metrics().clone());
        let caches: Vec<Arc<SharedCache>> = opts
            .api
            .cache
            .shared
            .iter()
            .cloned()
            .chain(opts.bucket.iter().flat_map(|b| b.shared_caches()))
            .collect();
        let cache_metrics = caches.first().map(|c| c.metrics().clone());
        let api = Arc::new(Api::new(
            fanout.clone(),
            Arc::new(move || view.stores_view()),
            opts.api,
            |r| {
                if let Some(tls) = &http_tls_metrics {
                    tls.metrics().register(r);
                }
                if let Some(m) = &bucket_metrics {
                    m.register(r);
                }
                if let Some(m) = &notifier_metrics {
                    m.register(r);
                }
                if let Some(m) = &router_metrics {
                    m.register(r);
                }
                if let Some(m) = &cache_metrics {
                    m.register(r);
                }
            },
        ));
        let app = crate::api::router(api.clone());
        let stop = http_stop.clone();
        let http_task = tokio::spawn(meridian_pki::serve::serve_http(
            opts.http_listener,
            opts.http_tls,
            app,
            opts.web,
            stop,
        ));
        let rules = match (opts.rules, rule_tsdb) {
            (Some(r), Some(tsdb)) => {
                let ctx = rule_context(&r, &fanout, &tsdb, engine_opts, &notifier, &router);
                let manager = RuleManager::new(
                    r.files.clone(),
                    r.eval_interval,
                    ctx,
                    Arc::new(meridian_core::time::now_ms),
                )?;
                manager.start();
                manager.watch();
                if let Some(res) = r.resources.clone() {
                    manager.watch_resources(res);
                }
                api.set_rules(manager.clone());
                let stop = CancellationToken::new();
                let task = tokio::spawn(tsdb.housekeeping(Duration::from_secs(60), stop.clone()));
                Some((manager, Task::from_parts("rule housekeeping", stop, task)))
            }
            _ => None,
        };
        let notifier = notifier.map(|n| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(n.run(stop.clone()));
            Task::from_parts("notifier", stop, task)
        });
        let router = router.map(|r| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(r.run(stop.clone()));
            Task::from_parts("alert router", stop, task)
        });
        tracing::info!(grpc = %grpc_addr, http = %http_addr, "gateway started");
        Ok(Gateway {
            endpoints,
            fanout,
            api,
            grpc_addr,
            http_addr,
            set: Task::from_parts("set", set_stop, set_task),
            grpc: Task::from_parts("grpc", grpc_stop, grpc_task),
            http: Task::from_parts("http", http_stop, http_task),
            tls_watcher,
            bucket,
            rules,
            notifier,
            router,
            caches,
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

    /// The rule manager, when rules are evaluated.
    pub fn rules(&self) -> Option<&Arc<RuleManager>> {
        self.rules.as_ref().map(|(m, _)| m)
    }

    /// Stops rule evaluation (its TSDB cut once more), then HTTP, then gRPC, then discovery, waiting
    /// for each.
    pub async fn shutdown(self) {
        if let Some((m, housekeeping)) = self.rules {
            m.stop().await;
            housekeeping.stop(DEFAULT_DRAIN).await;
        }
        // Alerts of the last evaluations are sent before the servers close.
        if let Some(n) = self.notifier {
            n.stop(DEFAULT_DRAIN).await;
        }
        if let Some(r) = self.router {
            r.stop(DEFAULT_DRAIN).await;
        }
        self.http.stop(DEFAULT_DRAIN).await;
        self.grpc.stop(DEFAULT_DRAIN).await;
        self.set.stop(DEFAULT_DRAIN).await;
        if let Some(b) = self.bucket {
            b.stop(DEFAULT_DRAIN).await;
        }
        for c in &self.caches {
            c.stop(CACHE_DRAIN).await;
        }
        if let Some(w) = self.tls_watcher {
            w.stop().await;
        }
        tracing::info!("gateway stopped");
    }
}

/// A bucket store on its own (`meridian-gateway store`): the StoreAPI (plaintext or mTLS) and an HTTP
/// server with `/-/healthy`, `/-/ready` (after the first sync) and `/metrics`. Ready before the first
/// sync ends is never claimed; the sync runs in the background, so start-up itself reads nothing.
#[derive(Debug)]
pub struct StoreGateway {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc: Task,
    http: Task,
    tls_watcher: Option<meridian_pki::tls::Watcher>,
    sync: Task,
    store: Arc<BucketStore>,
}

impl StoreGateway {
    pub fn start(
        store: Arc<BucketStore>,
        grpc_listener: TcpListener,
        grpc_tls: Option<Arc<ServerTls>>,
        grpc_tls_reload_interval: Duration,
        http_listener: TcpListener,
        web: meridian_pki::serve::WebLimits,
    ) -> anyhow::Result<StoreGateway> {
        let sync = run_bucket(store.clone(), false);
        let grpc_addr = grpc_listener.local_addr()?;
        let grpc_stop = CancellationToken::new();
        let spawned = meridian_storeapi::server::spawn(
            store.clone(),
            grpc_listener,
            grpc_tls,
            grpc_tls_reload_interval,
            grpc_stop.clone().cancelled_owned(),
        )?;
        let http_addr = http_listener.local_addr()?;
        let http_stop = CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        store.metrics().register(&mut registry);
        if let Some(c) = store.shared_caches().first() {
            c.metrics().register(&mut registry);
        }
        meridian_core::process_metrics::register(&mut registry);
        let registry = Arc::new(registry);
        let ready = store.clone();
        let observed = store.clone();
        let app = axum::Router::new()
            .route("/-/healthy", axum::routing::get(|| async { "OK\n" }))
            .route(
                "/-/ready",
                axum::routing::get(move || {
                    let ready = ready.is_ready();
                    async move {
                        if ready {
                            (axum::http::StatusCode::OK, "Ready\n")
                        } else {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "Not ready: the first bucket sync has not completed\n",
                            )
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    observed.observe_caches();
                    let text = crate::metrics::encode_text(&registry).unwrap_or_default();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                    }
                }),
            );
        let http_task = tokio::spawn(meridian_pki::serve::serve_http(
            http_listener,
            None,
            app,
            web,
            http_stop.clone(),
        ));
        tracing::info!(grpc = %grpc_addr, http = %http_addr, bucket = %store.description(), "bucket store started");
        Ok(StoreGateway {
            grpc_addr,
            http_addr,
            grpc: Task::from_parts("grpc", grpc_stop, spawned.task),
            http: Task::from_parts("http", http_stop, http_task),
            tls_watcher: spawned.tls_watcher,
            sync,
            store,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops HTTP, then gRPC (in-flight calls finish), then the sync loop.
    pub async fn shutdown(self) {
        self.http.stop(DEFAULT_DRAIN).await;
        self.grpc.stop(DEFAULT_DRAIN).await;
        self.sync.stop(DEFAULT_DRAIN).await;
        for c in self.store.shared_caches() {
            c.stop(CACHE_DRAIN).await;
        }
        if let Some(w) = self.tls_watcher {
            w.stop().await;
        }
        tracing::info!("bucket store stopped");
    }
}
