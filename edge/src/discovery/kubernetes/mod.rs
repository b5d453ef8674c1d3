//! `kubernetes_sd_configs`: targets from the Kubernetes API, for the roles `node`, `pod`, `service`,
//! `endpoints`, `endpointslice` and `ingress`, with the targets and `__meta_kubernetes_*` labels of
//! Prometheus 2.42 (`discovery/kubernetes`), judged against its recorded output by
//! `../shared/conformance/kubernetes-sd`.
//!
//! - [`config`]: the YAML and Prometheus' checks.
//! - [`client`]: the API client (api_server, kubeconfig, in-cluster; credentials read per request).
//! - [`informer`]: list + watch per (server, resource, namespace, selectors), shared by every job.
//! - [`render`], [`endpoints`]: objects to target groups.
//!
//! A provider renders a group again whenever an object it depends on changes, with Prometheus'
//! dependencies: a Service change re-renders its Endpoints (and the EndpointSlices naming it); a Node
//! change re-renders, with `attach_metadata: {node: true}`, the Pods and endpoints on it. A Pod change
//! does not re-render endpoints, as in 2.42. Rendering is a pure function of the stores, so a render
//! triggered twice is harmless. Changes are batched for [`BATCH`] and the complete set is sent.

pub mod config;
mod endpoints;
mod render;

pub use meridian_kube::{client, informer};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{Endpoints as K8sEndpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use self::config::{KubernetesSdConfig, Role};
use self::endpoints::{Lookup, endpoints_group, endpointslice_group, slice_service_name};
use self::informer::{Informer, Registry};
use self::render::{ingress_group, node_group, pod_group, pod_node_name, service_group, source_of};
use super::{TargetGroup, Update, send_if_changed};

/// The edge's `User-Agent` towards the API server.
pub const USER_AGENT: &str = concat!("Meridian-edge/", env!("CARGO_PKG_VERSION"));

/// How long changes are collected before the job's targets are recomputed (Prometheus' discovery
/// manager waits 5 s; the issue asks for changes to reach the scrape manager within a second).
pub const BATCH: Duration = Duration::from_millis(200);

/// Which informer a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Pod(usize),
    Service(usize),
    Endpoints(usize),
    Slice(usize),
    Ingress(usize),
    Node,
}

/// One change announcement, or `None` when the subscriber fell behind (render everything).
type Notice = (From, Option<Arc<str>>);

/// The informers one provider reads, per namespace (index `i` is the same namespace in every list).
#[derive(Default)]
struct Sources {
    namespaces: Vec<String>,
    pods: Vec<Arc<Informer<Pod>>>,
    services: Vec<Arc<Informer<Service>>>,
    endpoints: Vec<Arc<Informer<K8sEndpoints>>>,
    slices: Vec<Arc<Informer<EndpointSlice>>>,
    ingresses: Vec<Arc<Informer<Ingress>>>,
    /// The node role's nodes, or the nodes of `attach_metadata`.
    nodes: Option<Arc<Informer<Node>>>,
}

/// One `kubernetes_sd_configs` entry of a job.
#[derive(Debug)]
pub struct KubernetesSd {
    cfg: KubernetesSdConfig,
    registry: Arc<Registry>,
    sa_dir: PathBuf,
}

impl KubernetesSd {
    pub fn new(cfg: KubernetesSdConfig, registry: Arc<Registry>) -> KubernetesSd {
        KubernetesSd {
            cfg,
            registry,
            sa_dir: PathBuf::from(client::SERVICE_ACCOUNT_DIR),
        }
    }

    pub async fn run(self, provider: usize, tx: mpsc::Sender<Update>, stop: CancellationToken) {
        let client = match self.registry.client(&self.cfg.client.source) {
            Some(c) => c,
            None => match client::connect(&self.cfg.client, &self.sa_dir, USER_AGENT).await {
                Ok(c) => self.registry.put_client(&self.cfg.client.source, c),
                Err(e) => {
                    tracing::error!(error = %e, role = self.cfg.role.as_str(), "kubernetes_sd: no API client; this provider finds no targets");
                    return;
                }
            },
        };
        let namespaces = match self.namespaces() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "kubernetes_sd: this provider finds no targets");
                return;
            }
        };
        let src = self.sources(&client, namespaces);
        for ok in [
            all_synced(&src.pods, &stop).await,
            all_synced(&src.services, &stop).await,
            all_synced(&src.endpoints, &stop).await,
            all_synced(&src.slices, &stop).await,
            all_synced(&src.ingresses, &stop).await,
            match &src.nodes {
                Some(n) => n.synced(&stop).await,
                None => true,
            },
        ] {
            if !ok {
                return;
            }
        }
        // Subscribed before the full render: nothing that changes after it is missed.
        let mut notices = subscribe(&src);
        let mut groups: BTreeMap<String, TargetGroup> = BTreeMap::new();
        let mut sent = None;
        self.render_all(&src, &mut groups);
        if !send_if_changed(&tx, provider, &mut sent, groups.values().cloned().collect()).await {
            return;
        }
        loop {
            let first = tokio::select! {
                n = notices.next() => n,
                () = stop.cancelled() => return,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH;
            loop {
                tokio::select! {
                    n = notices.next() => match n {
                        Some(n) => batch.push(n),
                        None => return,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = stop.cancelled() => return,
                }
            }
            if batch.iter().any(|(_, k)| k.is_none()) {
                self.render_all(&src, &mut groups);
            } else {
                self.render_changes(&src, &batch, &mut groups);
            }
            if !send_if_changed(&tx, provider, &mut sent, groups.values().cloned().collect()).await
            {
                return;
            }
        }
    }

    /// The namespaces to watch; `[""]` (all) when none are named.
    fn namespaces(&self) -> Result<Vec<String>, String> {
        let mut names = self.cfg.namespaces.names.clone();
        if self.cfg.namespaces.own_namespace {
            names.push(client::own_namespace(&self.sa_dir)?);
        }
        if matches!(self.cfg.role, Role::Node) || names.is_empty() {
            return Ok(vec![String::new()]);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The informers this role reads (Prometheus' `Discovery.Run`).
    fn sources(&self, client: &kube_client::Client, namespaces: Vec<String>) -> Sources {
        let r = &self.registry;
        let s = &self.cfg.client.source;
        let sel = |role| self.cfg.selector(role);
        let mut src = Sources::default();
        for ns in &namespaces {
            let pods = |src: &mut Sources| {
                let (l, f) = sel(Role::Pod);
                src.pods.push(r.informer(s, client, ns, l, f));
            };
            let services = |src: &mut Sources| {
                let (l, f) = sel(Role::Service);
                src.services.push(r.informer(s, client, ns, l, f));
            };
            match self.cfg.role {
                Role::Pod => pods(&mut src),
                Role::Service => services(&mut src),
                Role::Endpoints => {
                    let (l, f) = sel(Role::Endpoints);
                    src.endpoints.push(r.informer(s, client, ns, l, f));
                    services(&mut src);
                    pods(&mut src);
                }
                Role::EndpointSlice => {
                    let (l, f) = sel(Role::EndpointSlice);
                    src.slices.push(r.informer(s, client, ns, l, f));
                    services(&mut src);
                    pods(&mut src);
                }
                Role::Ingress => {
                    let (l, f) = sel(Role::Ingress);
                    src.ingresses.push(r.informer(s, client, ns, l, f));
                }
                Role::Node => {}
            }
        }
        let with_nodes = self.cfg.role == Role::Node
            || (self.cfg.attach_metadata.node
                && matches!(
                    self.cfg.role,
                    Role::Pod | Role::Endpoints | Role::EndpointSlice
                ));
        if with_nodes {
            let (l, f) = sel(Role::Node);
            src.nodes = Some(r.informer(s, client, "", l, f));
        }
        src.namespaces = namespaces;
        src
    }

    fn attach_nodes(&self) -> bool {
        self.cfg.attach_metadata.node && self.cfg.role != Role::Node
    }

    fn render_all(&self, src: &Sources, groups: &mut BTreeMap<String, TargetGroup>) {
        groups.clear();
        let mut put = |g: Option<TargetGroup>| {
            if let Some(g) = g {
                groups.insert(g.source.clone(), g);
            }
        };
        match self.cfg.role {
            Role::Node => {
                for n in src.nodes.iter().flat_map(|i| i.all()) {
                    put(node_group(&n));
                }
            }
            Role::Pod => {
                for p in src.pods.iter().flat_map(|i| i.all()) {
                    put(Some(self.pod(src, &p)));
                }
            }
            Role::Service => {
                for s in src.services.iter().flat_map(|i| i.all()) {
                    put(Some(service_group(&s)));
                }
            }
            Role::Ingress => {
                for x in src.ingresses.iter().flat_map(|i| i.all()) {
                    put(Some(ingress_group(&x)));
                }
            }
            Role::Endpoints => {
                for (i, inf) in src.endpoints.iter().enumerate() {
                    for e in inf.all() {
                        put(Some(endpoints_group(&e, &self.lookup(src, i))));
                    }
                }
            }
            Role::EndpointSlice => {
                for (i, inf) in src.slices.iter().enumerate() {
                    for e in inf.all() {
                        put(Some(endpointslice_group(&e, &self.lookup(src, i))));
                    }
                }
            }
        }
    }

    fn pod(&self, src: &Sources, p: &Pod) -> TargetGroup {
        let node_name = pod_node_name(p);
        let node = self
            .attach_nodes()
            .then(|| (node_name, src.nodes.as_ref().and_then(|n| n.get(node_name))));
        match &node {
            Some((name, n)) => pod_group(p, Some((name, n.as_deref()))),
            None => pod_group(p, None),
        }
    }

    fn lookup<'a>(&'a self, src: &'a Sources, i: usize) -> NsLookup<'a> {
        NsLookup {
            src,
            i,
            nodes: self.attach_nodes(),
        }
    }

    /// Re-renders the groups the batch's changes touch.
    fn render_changes(
        &self,
        src: &Sources,
        batch: &[Notice],
        groups: &mut BTreeMap<String, TargetGroup>,
    ) {
        // (namespace index, object key) of the role's own objects to render again.
        let mut dirty: BTreeSet<(usize, String)> = BTreeSet::new();
        for (from, key) in batch {
            let Some(key) = key else { continue };
            let key = key.to_string();
            match (self.cfg.role, *from) {
                (Role::Node, From::Node)
                | (Role::Pod, From::Pod(_))
                | (Role::Service, From::Service(_))
                | (Role::Ingress, From::Ingress(_)) => {
                    let i = match from {
                        From::Pod(i) | From::Service(i) | From::Ingress(i) => *i,
                        _ => 0,
                    };
                    dirty.insert((i, key));
                }
                (Role::Endpoints, From::Endpoints(i) | From::Service(i)) => {
                    dirty.insert((i, key));
                }
                (Role::EndpointSlice, From::Slice(i)) => {
                    dirty.insert((i, key));
                }
                (Role::EndpointSlice, From::Service(_)) => {
                    // Prometheus 2.42 matches slices to the Service by name only.
                    let svc = key.rsplit('/').next().unwrap_or("");
                    for (i, inf) in src.slices.iter().enumerate() {
                        for s in inf.all() {
                            if slice_service_name(&s) == Some(svc) {
                                dirty.insert((i, meridian_kube::informer::key(&s.metadata)));
                            }
                        }
                    }
                }
                (Role::Pod, From::Node) => {
                    for (i, inf) in src.pods.iter().enumerate() {
                        for p in inf.all() {
                            if pod_node_name(&p) == key {
                                dirty.insert((i, meridian_kube::informer::key(&p.metadata)));
                            }
                        }
                    }
                }
                (Role::Endpoints, From::Node) => {
                    for (i, inf) in src.endpoints.iter().enumerate() {
                        for e in inf.all() {
                            if endpoints::endpoints_nodes(&e).contains(&key) {
                                dirty.insert((i, meridian_kube::informer::key(&e.metadata)));
                            }
                        }
                    }
                }
                (Role::EndpointSlice, From::Node) => {
                    for (i, inf) in src.slices.iter().enumerate() {
                        for s in inf.all() {
                            if endpoints::endpointslice_nodes(&s).contains(&key) {
                                dirty.insert((i, meridian_kube::informer::key(&s.metadata)));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for (i, key) in dirty {
            let source = source_of(self.cfg.role, &key);
            let g = match self.cfg.role {
                Role::Node => src
                    .nodes
                    .as_ref()
                    .and_then(|n| n.get(&key))
                    .and_then(|n| node_group(&n)),
                Role::Pod => src
                    .pods
                    .get(i)
                    .and_then(|p| p.get(&key))
                    .map(|p| self.pod(src, &p)),
                Role::Service => src
                    .services
                    .get(i)
                    .and_then(|s| s.get(&key))
                    .map(|s| service_group(&s)),
                Role::Ingress => src
                    .ingresses
                    .get(i)
                    .and_then(|s| s.get(&key))
                    .map(|s| ingress_group(&s)),
                Role::Endpoints => src
                    .endpoints
                    .get(i)
                    .and_then(|s| s.get(&key))
                    .map(|e| endpoints_group(&e, &self.lookup(src, i))),
                Role::EndpointSlice => src
                    .slices
                    .get(i)
                    .and_then(|s| s.get(&key))
                    .map(|e| endpointslice_group(&e, &self.lookup(src, i))),
            };
            match g {
                Some(g) => {
                    groups.insert(source, g);
                }
                None => {
                    groups.remove(&source);
                }
            }
        }
    }
}

/// The lookups of one namespace's endpoints render.
struct NsLookup<'a> {
    src: &'a Sources,
    i: usize,
    nodes: bool,
}

impl Lookup for NsLookup<'_> {
    fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.src.pods.get(self.i)?.get(&format!("{ns}/{name}"))
    }

    fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        self.src.services.get(self.i)?.get(&format!("{ns}/{name}"))
    }

    fn node(&self, name: &str) -> Option<Option<Arc<Node>>> {
        if !self.nodes {
            return None;
        }
        Some(self.src.nodes.as_ref().and_then(|n| n.get(name)))
    }
}

async fn all_synced<K: informer::Object>(
    list: &[Arc<Informer<K>>],
    stop: &CancellationToken,
) -> bool {
    for i in list {
        if !i.synced(stop).await {
            return false;
        }
    }
    true
}

fn subscribe(src: &Sources) -> SelectAll<BoxStream<'static, Notice>> {
    fn stream<K: informer::Object>(inf: &Informer<K>, from: From) -> BoxStream<'static, Notice> {
        BroadcastStream::new(inf.subscribe())
            .map(move |r| match r {
                Ok(k) => (from, Some(k)),
                Err(BroadcastStreamRecvError::Lagged(_)) => (from, None),
            })
            .boxed()
    }
    let mut all = SelectAll::new();
    for (i, x) in src.pods.iter().enumerate() {
        all.push(stream(x, From::Pod(i)));
    }
    for (i, x) in src.services.iter().enumerate() {
        all.push(stream(x, From::Service(i)));
    }
    for (i, x) in src.endpoints.iter().enumerate() {
        all.push(stream(x, From::Endpoints(i)));
    }
    for (i, x) in src.slices.iter().enumerate() {
        all.push(stream(x, From::Slice(i)));
    }
    for (i, x) in src.ingresses.iter().enumerate() {
        all.push(stream(x, From::Ingress(i)));
    }
    if let Some(n) = &src.nodes {
        all.push(stream(n, From::Node));
    }
    all
}
