//! Shared informers: one list + watch per (API server, resource, namespace, selectors), whatever
//! number of jobs ask for it, as client-go's shared informers give Prometheus.
//!
//! An informer keeps the objects it has seen and announces the key (`namespace/name`) of every object
//! that changed. It is built on `kube-runtime`'s watcher, which lists with `resourceVersion=0`, watches
//! from the list's version, resumes from the last version (bookmarks included) when a watch ends, relists
//! on `410 Gone` and backs off on errors. A relist replaces the store only when it is complete and
//! announces only what differs, so targets do not flap across a reconnect.
//!
//! An informer lives as long as one subscriber holds it; the registry keeps only weak references.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock, Weak};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_client::{Api, Client, Resource};
use kube_runtime::WatchStreamExt;
use kube_runtime::watcher::{self, Event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::client::ApiSource;

/// How many change announcements a slow subscriber may fall behind before it re-renders everything.
const CHANGES_CAPACITY: usize = 4096;

/// An object kind an informer can hold.
pub trait Object:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The API of this kind in `namespace` (`""`: all namespaces).
    fn api(client: Client, namespace: &str) -> Api<Self>;
}

macro_rules! namespaced {
    ($($t:ty),*) => {$(
        impl Object for $t {
            fn api(client: Client, namespace: &str) -> Api<Self> {
                if namespace.is_empty() {
                    Api::all(client)
                } else {
                    Api::namespaced(client, namespace)
                }
            }
        }
    )*};
}

namespaced!(
    k8s_openapi::api::core::v1::Secret,
    crate::monitoring::ServiceMonitor,
    crate::monitoring::PodMonitor,
    crate::monitoring::PrometheusRule,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::networking::v1::Ingress
);

macro_rules! cluster_wide {
    ($($t:ty),*) => {$(
        impl Object for $t {
            fn api(client: Client, _namespace: &str) -> Api<Self> {
                Api::all(client)
            }
        }
    )*};
}

cluster_wide!(
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::Namespace
);

/// `namespace/name` (or `name` for cluster-wide objects), client-go's store key.
pub fn key(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}

struct Shared<K> {
    store: RwLock<HashMap<String, Arc<K>>>,
    changes: broadcast::Sender<Arc<str>>,
    synced: watch::Sender<bool>,
}

/// A subscriber's handle on a shared informer.
pub struct Informer<K> {
    shared: Arc<Shared<K>>,
    stop: CancellationToken,
}

impl<K> Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer").finish_non_exhaustive()
    }
}

impl<K> Drop for Informer<K> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl<K: Object> Informer<K> {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.changes.subscribe()
    }

    /// Waits until the first list is complete; `false` when `stop` came first.
    pub async fn synced(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.shared.synced.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| *s) => r.is_ok(),
            () = stop.cancelled() => false,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.shared
            .store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Every object (cloned references), for full renders and scans.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.shared
            .store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InformerKey {
    source: ApiSource,
    plural: String,
    namespace: String,
    label: String,
    field: String,
}

/// Watch events by `event` (add, update, delete) and `role` (the resource), as Prometheus'
/// `prometheus_sd_kubernetes_events_total`.
type Events = Family<Vec<(String, String)>, Counter>;

/// The informers and API clients of every Kubernetes provider of the process.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<ApiSource, Client>>,
    informers: Mutex<HashMap<InformerKey, Weak<dyn Any + Send + Sync>>>,
    events: Events,
}

impl Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("kubernetes::Registry")
            .finish_non_exhaustive()
    }
}

/// What the registry hands out: the informer handle shared by every subscriber.
type Handle<K> = Arc<Informer<K>>;

impl Registry {
    /// Registers `prometheus_sd_kubernetes_events_total`.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "prometheus_sd_kubernetes_events",
            "The number of Kubernetes events handled, by event (add, update, delete) and role (resource)",
            self.events.clone(),
        );
    }

    pub fn client(&self, source: &ApiSource) -> Option<Client> {
        self.lock_clients().get(source).cloned()
    }

    pub fn put_client(&self, source: &ApiSource, client: Client) -> Client {
        self.lock_clients()
            .entry(source.clone())
            .or_insert(client)
            .clone()
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<ApiSource, Client>> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The informer for `K` in `namespace` (`""`: all namespaces) with these selectors, started when
    /// nobody holds it yet.
    pub fn informer<K: Object>(
        &self,
        source: &ApiSource,
        client: &Client,
        namespace: &str,
        label: &str,
        field: &str,
    ) -> Handle<K> {
        let key = InformerKey {
            source: source.clone(),
            plural: K::plural(&()).into_owned(),
            namespace: namespace.to_owned(),
            label: label.to_owned(),
            field: field.to_owned(),
        };
        let mut map = self
            .informers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(h) = map
            .get(&key)
            .and_then(Weak::upgrade)
            .and_then(|a| a.downcast::<Informer<K>>().ok())
        {
            return h;
        }
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let shared = Arc::new(Shared {
            store: RwLock::new(HashMap::new()),
            changes,
            synced: watch::Sender::new(false),
        });
        let stop = CancellationToken::new();
        let api = K::api(client.clone(), namespace);
        // Lists with resourceVersion=0 and no limit, as client-go's reflector: the API server answers
        // from its watch cache (kube drops resourceVersion=0 when a page size is set).
        let mut wc = watcher::Config::default().any_semantic();
        wc.page_size = None;
        if !label.is_empty() {
            wc = wc.labels(label);
        }
        if !field.is_empty() {
            wc = wc.fields(field);
        }
        let what = format!(
            "{}{}",
            key.plural,
            if namespace.is_empty() {
                String::new()
            } else {
                format!(" in {namespace}")
            }
        );
        let events = Counters::new(&self.events, &key.plural);
        tokio::spawn(run(api, wc, shared.clone(), stop.clone(), what, events));
        let handle = Arc::new(Informer { shared, stop });
        let erased: Arc<dyn Any + Send + Sync> = handle.clone();
        map.insert(key, Arc::downgrade(&erased));
        handle
    }
}

/// One informer's event counters.
struct Counters {
    add: Counter,
    update: Counter,
    delete: Counter,
}

impl Counters {
    fn new(f: &Events, role: &str) -> Counters {
        let c = |event: &str| {
            f.get_or_create(&vec![
                ("event".to_owned(), event.to_owned()),
                ("role".to_owned(), role.to_owned()),
            ])
            .clone()
        };
        Counters {
            add: c("add"),
            update: c("update"),
            delete: c("delete"),
        }
    }
}

/// The watch loop of one informer; ends when its last handle is dropped.
async fn run<K: Object>(
    api: Api<K>,
    wc: watcher::Config,
    shared: Arc<Shared<K>>,
    stop: CancellationToken,
    what: String,
    events: Counters,
) {
    let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
    // The objects of a list in progress; replaces the store when complete.
    let mut listing: Option<HashMap<String, Arc<K>>> = None;
    let mut failing = false;
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            () = stop.cancelled() => return,
        };
        match ev {
            None => return,
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(resource = %what, error = %e, "kubernetes: list/watch failed; retrying with backoff");
                }
                failing = true;
            }
            Some(Ok(ev)) => {
                // `Init` comes before the list is even asked for: only data shows it works again.
                if failing && !matches!(ev, Event::Init) {
                    tracing::info!(resource = %what, "kubernetes: list/watch works again");
                    failing = false;
                }
                match ev {
                    Event::Init => listing = Some(HashMap::new()),
                    Event::InitApply(o) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(key(o.meta()), Arc::new(o));
                        }
                    }
                    Event::InitDone => {
                        let new = listing.take().unwrap_or_default();
                        let changed = {
                            let mut store = shared
                                .store
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let mut changed: Vec<String> = store
                                .keys()
                                .filter(|k| !new.contains_key(*k))
                                .cloned()
                                .collect();
                            for (k, o) in &new {
                                let same = store.get(k).is_some_and(|old| {
                                    old.meta().resource_version == o.meta().resource_version
                                });
                                if !same {
                                    changed.push(k.clone());
                                }
                            }
                            *store = new;
                            changed
                        };
                        events.add.inc_by(changed.len() as u64);
                        for k in changed {
                            let _ = shared.changes.send(k.into());
                        }
                        shared.synced.send_replace(true);
                    }
                    Event::Apply(o) => {
                        let k = key(o.meta());
                        let old = shared
                            .store
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(k.clone(), Arc::new(o));
                        if old.is_some() {
                            &events.update
                        } else {
                            &events.add
                        }
                        .inc();
                        let _ = shared.changes.send(k.into());
                    }
                    Event::Delete(o) => {
                        let k = key(o.meta());
                        shared
                            .store
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&k);
                        events.delete.inc();
                        let _ = shared.changes.send(k.into());
                    }
                }
            }
        }
    }
}
