//! The endpoint set: every StoreAPI endpoint the gateway asks, found through [`crate::discovery`], each
//! polled with `thanos.info.Info` so the fan-out knows its external labels, time range and capabilities.
//!
//! Endpoints come in **groups**, each with its own transport: the `--endpoint` flags use the
//! `--grpc-client-tls-*` flags, and every entry of the **endpoint config file** (`--endpoint.config-file`,
//! re-read when it changes) has its own TLS settings, server name for SNI included. A group's settings
//! apply to every endpoint DNS finds for it — what an nginx ingress routing by SNI needs, and what Thanos
//! cannot do (thanos-io/thanos#977). Without a `server_name`, each endpoint's own host name is used, so a
//! `dnssrvnoa+` group reaches every SRV target under its own name through one ingress address.
//!
//! ```yaml
//! - endpoints: ["dnssrvnoa+_grpc._tcp.edges.cluster-a.example.com"]
//!   tls_config:
//!     ca_file: /etc/meridian/ca.crt
//!     cert_file: /etc/meridian/gateway.crt
//!     key_file: /etc/meridian/gateway.key
//!     # server_name: edge.cluster-a.example.com   # default: each endpoint's host
//! - endpoints: ["edge.cluster-b.internal:10901"]   # no tls_config: plaintext
//! ```
//!
//! Health: an endpoint whose last `Info` failed is **unhealthy**; queries do not wait for it but name it
//! in a partial-response warning. After `--store.unhealthy-timeout` it is dropped from queries (it stays
//! in the stores view and is polled, so it comes back when it answers). Host names are resolved with the
//! gateway's resolver (`--dns.nameserver`) when connecting, too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
use meridian_core::error::{Error, ErrorKind};
use meridian_core::labels::Labels;
use meridian_core::net::dns::DnsResolver;
use meridian_pki::channel::{ChannelOptions, GrpcChannel};
use meridian_pki::tls::{ClientTls, ClientTlsFiles, Dial};
use meridian_storeapi::Store;
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::proto::thanos as pb;
use serde::Deserialize;
use serde_saphyr::Spanned;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discovery::{EndpointDiscovery, EndpointSpec};
use crate::fanout::{StoreMeta, StoreRef, StoreSet};

/// The group key of stores added with [`EndpointSet::add_local`].
const LOCAL_GROUP: usize = usize::MAX;

/// How to reach an endpoint: plaintext, or TLS with a client configuration and an optional server name
/// (SNI and verification) override.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    #[default]
    Plaintext,
    Tls {
        tls: Arc<ClientTls>,
        server_name: Option<String>,
    },
}

/// Endpoint specs sharing a transport.
#[derive(Debug, Clone)]
pub struct EndpointGroup {
    pub specs: Vec<EndpointSpec>,
    pub transport: Transport,
}

/// An endpoint config file that cannot be used; the message names the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint config {source_name}: {message}")]
pub struct EndpointConfigError {
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    endpoints: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    tls_config: Option<Spanned<TlsFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    ca_file: PathBuf,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    server_name: Option<String>,
}

/// Parses an endpoint config file's text: a list of groups (see the module documentation). Certificates
/// are loaded and checked here, so a bad file never replaces a good one. Relative paths are relative to
/// `base_dir`.
pub fn parse_endpoint_config(
    text: &str,
    source_name: &str,
    base_dir: &Path,
) -> Result<Vec<EndpointGroup>, EndpointConfigError> {
    let err = |message: String| EndpointConfigError {
        source_name: source_name.to_owned(),
        message,
    };
    let files: Vec<GroupFile> = if text.trim().is_empty() {
        vec![]
    } else {
        serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?
    };
    let mut groups = Vec::with_capacity(files.len());
    for (i, g) in files.into_iter().enumerate() {
        if g.endpoints.value.is_empty() {
            return Err(err(format!(
                "line {}: entry {} has an empty endpoints list",
                g.endpoints.referenced.line(),
                i + 1
            )));
        }
        let mut specs = Vec::with_capacity(g.endpoints.value.len());
        for s in &g.endpoints.value {
            let spec: EndpointSpec =
                s.value.parse().map_err(|e: crate::discovery::SpecError| {
                    err(format!(
                        "line {}: endpoints: {:?}: {}",
                        s.referenced.line(),
                        e.value,
                        e.reason
                    ))
                })?;
            specs.push(spec);
        }
        let transport = match g.tls_config {
            None => Transport::Plaintext,
            Some(t) => {
                let line = t.referenced.line();
                let f = t.value;
                let path = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
                let tls = ClientTls::load(
                    &format!("endpoint-group-{}", i + 1),
                    ClientTlsFiles {
                        ca: path(f.ca_file),
                        cert: f.cert_file.map(path),
                        key: f.key_file.map(path),
                    },
                )
                .map_err(|e| err(format!("line {line}: tls_config: {e}")))?;
                let server_name = f.server_name.filter(|s| !s.is_empty());
                // Checks the name now rather than at the first connection.
                tls.connector(server_name.as_deref())
                    .map_err(|e| err(format!("line {line}: tls_config: server_name: {e}")))?;
                Transport::Tls { tls, server_name }
            }
        };
        groups.push(EndpointGroup { specs, transport });
    }
    Ok(groups)
}

/// Tuning of the endpoint set.
#[derive(Debug, Clone)]
pub struct EndpointSetOptions {
    /// DNS refresh (`--store.sd-dns-interval`).
    pub dns_interval: Duration,
    /// `Info` polling, also how often the config file is checked.
    pub info_interval: Duration,
    pub info_timeout: Duration,
    /// Unhealthy endpoints are left out of queries after this (`--store.unhealthy-timeout`).
    pub unhealthy_timeout: Duration,
    pub connect_timeout: Duration,
    /// `--endpoint.config-file`.
    pub config_file: Option<PathBuf>,
    /// `--query.replica-label`, for the duplicate-external-labels warning.
    pub replica_labels: Vec<String>,
    /// How often metric metadata TYPEs are refreshed from endpoints that serve metadata.
    pub metadata_interval: Duration,
}

impl Default for EndpointSetOptions {
    fn default() -> EndpointSetOptions {
        EndpointSetOptions {
            dns_interval: Duration::from_secs(30),
            info_interval: Duration::from_secs(5),
            info_timeout: Duration::from_secs(5),
            unhealthy_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            config_file: None,
            replica_labels: vec![],
            metadata_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Status {
    meta: Option<StoreMeta>,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
    failing_since: Option<Instant>,
    types: HashMap<String, String>,
    types_fetched: Option<Instant>,
}

/// One endpoint of the set.
struct Endpoint {
    address: String,
    store: Arc<dyn Store>,
    status: Mutex<Status>,
}

impl Endpoint {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        // Updates are plain field assignments; a poisoned lock still holds a consistent status.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct State {
    /// The `--endpoint` group first, then the config file's.
    groups: Arc<Vec<EndpointGroup>>,
    config_text: Option<String>,
    config_error: Option<String>,
    /// By (group, address).
    endpoints: BTreeMap<(usize, String), Arc<Endpoint>>,
    /// Bumped when the groups change, so discovery is rebuilt.
    generation: u64,
    warned_duplicates: BTreeSet<String>,
}

/// The set of endpoints. See the module documentation.
pub struct EndpointSet {
    resolver: DnsResolver,
    /// Whether host names are resolved with `resolver` when connecting (`--dns.nameserver` given).
    own_dns: bool,
    flag_group: EndpointGroup,
    opts: EndpointSetOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSet").finish_non_exhaustive()
    }
}

impl EndpointSet {
    /// A set of the `--endpoint` group and, when configured, the config file's groups (read now: a bad
    /// file at start-up is an error).
    pub fn new(
        resolver: DnsResolver,
        own_dns: bool,
        flag_group: EndpointGroup,
        opts: EndpointSetOptions,
    ) -> Result<Arc<EndpointSet>, EndpointConfigError> {
        let mut groups = vec![flag_group.clone()];
        let mut config_text = None;
        if let Some(path) = &opts.config_file {
            let text = read_config(path)?;
            groups.extend(parse_endpoint_config(
                &text,
                &path.display().to_string(),
                base(path),
            )?);
            config_text = Some(text);
        }
        Ok(Arc::new(EndpointSet {
            resolver,
            own_dns,
            flag_group,
            opts,
            state: Mutex::new(State {
                groups: Arc::new(groups),
                config_text,
                config_error: None,
                endpoints: BTreeMap::new(),
                generation: 0,
                warned_duplicates: BTreeSet::new(),
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config file; a changed, valid file replaces the file's groups (their endpoints are
    /// reconnected with the new settings). An invalid file is logged and the previous groups stay.
    fn check_config(&self) {
        let Some(path) = &self.opts.config_file else {
            return;
        };
        let text = match read_config(path) {
            Ok(t) => t,
            Err(e) => {
                self.config_failed(e.to_string());
                return;
            }
        };
        if self.state().config_text.as_deref() == Some(text.as_str()) {
            return;
        }
        match parse_endpoint_config(&text, &path.display().to_string(), base(path)) {
            Ok(file_groups) => {
                let mut groups = vec![self.flag_group.clone()];
                groups.extend(file_groups);
                let mut st = self.state();
                st.groups = Arc::new(groups);
                st.config_text = Some(text);
                st.config_error = None;
                st.endpoints
                    .retain(|(g, _), _| *g == 0 || *g == LOCAL_GROUP);
                st.generation += 1;
                tracing::info!(file = %path.display(), "endpoint config reloaded");
            }
            Err(e) => {
                let mut st = self.state();
                // Remember the text so the same bad file is reported once.
                st.config_text = Some(text);
                drop(st);
                self.config_failed(e.to_string());
            }
        }
    }

    fn config_failed(&self, message: String) {
        tracing::error!(error = %message, "endpoint config not reloaded; keeping the previous one");
        self.state().config_error = Some(message);
    }

    /// The last config file error, if the file currently on disk could not be used.
    pub fn config_error(&self) -> Option<String> {
        self.state().config_error.clone()
    }

    fn dial(&self) -> Option<Dial> {
        if !self.own_dns {
            return None;
        }
        let resolver = self.resolver.clone();
        Some(Arc::new(
            move |host: String, port: u16| -> BoxFuture<'static, std::io::Result<TcpStream>> {
                let resolver = resolver.clone();
                Box::pin(async move { dial(&resolver, &host, port).await })
            },
        ))
    }

    fn channel(&self, address: &str, transport: &Transport) -> Result<GrpcChannel, String> {
        match transport {
            Transport::Tls { tls, server_name } => {
                let timeout = self.opts.connect_timeout;
                match self.dial() {
                    Some(d) => {
                        tls.channel_lazy_with_dial(address, server_name.as_deref(), timeout, d)
                    }
                    None => tls.channel_lazy(address, server_name.as_deref(), timeout),
                }
                .map_err(|e| e.to_string())
            }
            Transport::Plaintext => {
                let timeout = Some(self.opts.connect_timeout);
                match self.dial() {
                    None => GrpcChannel::plaintext_lazy(address, timeout),
                    Some(d) => {
                        let target: Uri = format!("http://{address}")
                            .parse()
                            .map_err(|e| format!("invalid endpoint address {address:?}: {e}"))?;
                        let options = ChannelOptions {
                            connect_timeout: timeout,
                            ..ChannelOptions::new(target.clone())
                        };
                        let connector = tower::service_fn(move |uri: Uri| {
                            let d = d.clone();
                            async move {
                                let host = uri
                                    .host()
                                    .unwrap_or_default()
                                    .trim_matches(['[', ']'])
                                    .to_owned();
                                let port = uri.port_u16().unwrap_or(80);
                                d(host, port).await.map(TokioIo::new)
                            }
                        });
                        GrpcChannel::lazy(target, options, connector)
                    }
                }
            }
        }
    }

    /// Resolves every group's specs and updates the endpoints: new ones are added (and asked for `Info`
    /// at the next poll), vanished ones removed. A failed lookup keeps that spec's last good answer.
    async fn refresh(&self, discovery: &mut (u64, Option<(EndpointDiscovery, Vec<usize>)>)) {
        let (generation, groups) = {
            let st = self.state();
            (st.generation, st.groups.clone())
        };
        if discovery.0 != generation || discovery.1.is_none() {
            let mut specs = Vec::new();
            let mut owner = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                for s in &group.specs {
                    specs.push(s.clone());
                    owner.push(g);
                }
            }
            *discovery = (
                generation,
                Some((EndpointDiscovery::new(self.resolver.clone(), specs), owner)),
            );
        }
        let Some((disc, owner)) = discovery.1.as_mut() else {
            return;
        };
        let (found, errors) = disc.refresh().await;
        for e in errors {
            tracing::warn!(error = %e, "endpoint discovery: keeping the last good answer");
        }
        let wanted: BTreeSet<(usize, String)> = found
            .into_iter()
            .map(|d| (owner[d.spec], d.address))
            .collect();
        let mut st = self.state();
        if st.generation != generation {
            return; // the config changed meanwhile; the next refresh uses it
        }
        st.endpoints
            .retain(|k, _| k.0 == LOCAL_GROUP || wanted.contains(k));
        for (g, address) in wanted {
            if st.endpoints.contains_key(&(g, address.clone())) {
                continue;
            }
            // An address already reached through an earlier group keeps that group's settings.
            if st.endpoints.keys().any(|(_, a)| *a == address) {
                continue;
            }
            let status = match self.channel(&address, &groups[g].transport) {
                Ok(channel) => {
                    let client = StoreClient::new(channel, address.clone());
                    let ep = Endpoint {
                        address: address.clone(),
                        store: Arc::new(client),
                        status: Mutex::new(Status::default()),
                    };
                    st.endpoints.insert((g, address.clone()), Arc::new(ep));
                    continue;
                }
                Err(e) => e,
            };
            tracing::error!(endpoint = %address, error = %status, "endpoint cannot be used");
        }
    }

    /// Adds a store living in this process (the bucket store): polled for `Info` and asked like any
    /// endpoint, under `name`, and never removed by discovery or config reloads.
    pub fn add_local(&self, name: &str, store: Arc<dyn Store>) {
        let ep = Endpoint {
            address: name.to_owned(),
            store,
            status: Mutex::new(Status::default()),
        };
        self.state()
            .endpoints
            .insert((LOCAL_GROUP, name.to_owned()), Arc::new(ep));
    }

    /// Asks every endpoint for `Info` (and, now and then, its metric metadata TYPEs).
    async fn poll(&self) {
        let endpoints: Vec<Arc<Endpoint>> = self.state().endpoints.values().cloned().collect();
        let timeout = self.opts.info_timeout;
        let metadata_interval = self.opts.metadata_interval;
        futures::future::join_all(endpoints.iter().map(|ep| async move {
            let answer = tokio::time::timeout(timeout, ep.store.info()).await;
            let now = Instant::now();
            let serves_metadata = {
                let mut st = ep.status();
                st.last_check = Some(SystemTime::now());
                match answer {
                    Ok(Ok(info)) => {
                        if st.last_error.is_some() || st.meta.is_none() {
                            tracing::info!(endpoint = %ep.address, component = %info.component_type, "endpoint healthy");
                        }
                        st.meta = Some(StoreMeta::from_info(&info));
                        st.last_error = None;
                        st.failing_since = None;
                    }
                    Ok(Err(e)) => fail(&mut st, &ep.address, now, e.message),
                    Err(_) => fail(
                        &mut st,
                        &ep.address,
                        now,
                        format!("no Info answer within {timeout:?}"),
                    ),
                }
                st.last_error.is_none()
                    && st.meta.as_ref().is_some_and(|m| m.serves_metadata)
                    && st
                        .types_fetched
                        .is_none_or(|t| now.duration_since(t) >= metadata_interval)
            };
            if serves_metadata {
                let types = tokio::time::timeout(timeout, metric_types(ep.store.as_ref())).await;
                let mut st = ep.status();
                st.types_fetched = Some(now);
                if let Ok(Ok(types)) = types {
                    st.types = types;
                }
            }
        }))
        .await;
        self.warn_duplicates();
    }

    /// Logs (once per label set) when healthy endpoints announce the same external labels and none of
    /// them is a replica label: their series would collide instead of being deduplicated.
    fn warn_duplicates(&self) {
        let mut seen: BTreeMap<Labels, Vec<String>> = BTreeMap::new();
        for s in self.stores() {
            let (Some(meta), None) = (&s.meta, &s.unhealthy) else {
                continue;
            };
            // A bucket store holds the same label sets as the edges whose uploads it serves: the
            // copies are meant to be joined, nothing to warn about.
            if meta.component_type == "store" {
                continue;
            }
            for ls in &meta.label_sets {
                seen.entry(ls.clone()).or_default().push(s.name.clone());
            }
        }
        let mut st = self.state();
        for (ls, names) in seen {
            if names.len() < 2 || self.opts.replica_labels.iter().any(|r| ls.has(r)) {
                continue;
            }
            let key = format!("{ls}");
            if st.warned_duplicates.insert(key) {
                tracing::warn!(
                    labels = %ls,
                    endpoints = ?names,
                    "endpoints announce the same external labels without a replica label \
                     (--query.replica-label); their series are merged as copies, not deduplicated"
                );
            }
        }
    }

    /// Discovers and polls until `stop`: DNS every `dns_interval` (and at once after a config change),
    /// `Info` and the config file every `info_interval`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut discovery = (0u64, None);
        let mut next_dns = Instant::now();
        loop {
            self.check_config();
            let generation = self.state().generation;
            if Instant::now() >= next_dns || discovery.0 != generation {
                self.refresh(&mut discovery).await;
                next_dns = Instant::now() + self.opts.dns_interval;
            }
            self.poll().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.opts.info_interval) => {}
            }
        }
    }

    /// One discovery and `Info` round, for start-up (the first queries see the endpoints) and tests.
    pub async fn refresh_now(&self) {
        let mut discovery = (u64::MAX, None);
        self.check_config();
        self.refresh(&mut discovery).await;
        self.poll().await;
    }

    /// The `/api/v1/stores` view, as Thanos Query answers it: endpoints by component type, each with
    /// name, last check, last error, label sets and time range.
    pub fn stores_view(&self) -> serde_json::Value {
        let endpoints: Vec<Arc<Endpoint>> = self.state().endpoints.values().cloned().collect();
        let mut by_type: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for ep in endpoints {
            let st = ep.status();
            let kind = st
                .meta
                .as_ref()
                .map(|m| m.component_type.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "unknown".into());
            let label_sets: Vec<serde_json::Value> = st
                .meta
                .iter()
                .flat_map(|m| m.label_sets.iter())
                .map(meridian_core::labels::labels_json)
                .collect();
            by_type.entry(kind).or_default().push(serde_json::json!({
                "name": ep.address,
                "lastCheck": meridian_core::time::rfc3339(st.last_check),
                "lastError": st.last_error,
                "labelSets": label_sets,
                "minTime": st.meta.as_ref().map_or(0, |m| m.min_time),
                "maxTime": st.meta.as_ref().map_or(0, |m| m.max_time),
            }));
        }
        serde_json::json!({"status": "success", "data": by_type})
    }
}

fn fail(st: &mut Status, address: &str, now: Instant, message: String) {
    if st.last_error.as_deref() != Some(message.as_str()) {
        tracing::warn!(endpoint = %address, error = %message, "endpoint unhealthy");
    }
    st.last_error = Some(message);
    st.failing_since.get_or_insert(now);
}

/// TYPE of every metric family an endpoint knows.
async fn metric_types(store: &dyn Store) -> Result<HashMap<String, String>, Error> {
    use pb::metric_metadata_response::Result as R;
    let mut stream = store
        .metric_metadata(pb::MetricMetadataRequest {
            limit: -1,
            ..Default::default()
        })
        .await?;
    let mut out = HashMap::new();
    while let Some(frame) = stream.next().await {
        if let Some(R::Metadata(md)) = frame?.result {
            for (name, entry) in md.metadata {
                if let Some(m) = entry.metas.first() {
                    out.insert(name, m.r#type.clone());
                }
            }
        }
    }
    Ok(out)
}

impl StoreSet for EndpointSet {
    fn stores(&self) -> Vec<StoreRef> {
        let endpoints: Vec<Arc<Endpoint>> = self.state().endpoints.values().cloned().collect();
        let now = Instant::now();
        endpoints
            .into_iter()
            .filter_map(|ep| {
                let st = ep.status();
                if st
                    .failing_since
                    .is_some_and(|t| now.duration_since(t) > self.opts.unhealthy_timeout)
                {
                    return None;
                }
                Some(StoreRef {
                    name: ep.address.clone(),
                    store: ep.store.clone(),
                    meta: st.meta.clone(),
                    unhealthy: st.last_error.clone(),
                })
            })
            .collect()
    }

    fn metric_type(&self, metric: &str) -> Option<String> {
        let endpoints: Vec<Arc<Endpoint>> = self.state().endpoints.values().cloned().collect();
        endpoints
            .iter()
            .find_map(|ep| ep.status().types.get(metric).cloned())
    }
}

fn read_config(path: &Path) -> Result<String, EndpointConfigError> {
    std::fs::read_to_string(path).map_err(|e| EndpointConfigError {
        source_name: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

fn base(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Connects to `host:port`, resolving `host` with `resolver` (A, then AAAA), trying each address.
async fn dial(resolver: &DnsResolver, host: &str, port: u16) -> std::io::Result<TcpStream> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        let s = TcpStream::connect((ip, port)).await?;
        let _ = s.set_nodelay(true);
        return Ok(s);
    }
    let mut ips = resolver.ips(host, false).await.unwrap_or_default();
    ips.extend(resolver.ips(host, true).await.unwrap_or_default());
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{host}: no A or AAAA records"),
    );
    for ip in ips {
        match TcpStream::connect((ip, port)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl From<EndpointConfigError> for Error {
    fn from(e: EndpointConfigError) -> Error {
        Error::new(ErrorKind::BadData, e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_file_errors_name_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = |text: &str| parse_endpoint_config(text, "endpoints.yaml", dir.path());
        let groups = p("- endpoints: [\"a:1\", \"dnssrvnoa+_grpc._tcp.x\"]\n").unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].specs.len(), 2);
        assert!(matches!(groups[0].transport, Transport::Plaintext));
        assert!(p("").unwrap().is_empty());
        for (text, want) in [
            (
                "- endpoints: []\n",
                "line 1: entry 1 has an empty endpoints list",
            ),
            (
                "- endpoints: [\"a:1\"]\n- endpoints:\n  - \"nope\"\n",
                "line 3: endpoints: \"nope\": missing port",
            ),
            ("- endpoints: [\"a:1\"]\n  tls: {}\n", "tls"),
            (
                "- endpoints: [\"a:1\"]\n  tls_config:\n    ca_file: missing.crt\n",
                "line 3: tls_config:",
            ),
        ] {
            let e = p(text).err().unwrap().to_string();
            assert!(e.starts_with("endpoint config endpoints.yaml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
