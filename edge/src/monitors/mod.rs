//! ServiceMonitors and PodMonitors read by the edge itself: the `monitoring_resources` section selects
//! them as a `Prometheus` resource's selectors would, and each selected endpoint becomes the scrape job
//! prometheus-operator would generate ([`generate`]). No operator, no generated Secret, no
//! config-reloader: a change reaches the scrape manager within [`BATCH`] of the watch event.
//!
//! A resource that cannot be used (a field Meridian does not support, a Secret key that is not there, a
//! job the scrape configuration's checks refuse) is left out with one warning naming it and the field,
//! logged again only when the problem changes; the other resources keep working. Secrets and ConfigMaps
//! are read with a `get` per generation (no list or watch of Secrets is needed), and everything is
//! generated again every [`RESYNC`] so a rotated Secret is picked up.

mod assets;
mod check;
pub mod generate;
mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube_client::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::generate::{AssetStore, Context, Generated, Node};
use crate::config::{GlobalConfig, ScrapeConfig, resolve_generated_job};
use meridian_core::promfmt::PromDuration;
use meridian_kube::informer::Registry;
use meridian_kube::monitoring::{Endpoint, PodMonitor, ServiceMonitor};
use meridian_kube::resources::{MonitoringResources, Namespaces};
use meridian_kube::selected::Selected;

/// How long changes are collected before the jobs are generated again.
pub const BATCH: Duration = Duration::from_millis(200);
/// How often everything is generated again without a change (Secrets are not watched).
pub const RESYNC: Duration = Duration::from_secs(60);

/// The jobs generated from the selected resources, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneratedJobs {
    pub jobs: Vec<ScrapeConfig>,
    /// The same jobs as the operator's YAML (for `/api/v1/status/config`).
    pub yaml: Vec<Node>,
    /// Jobs whose TLS files were rewritten with new contents in this pass (a rotated Secret): their
    /// HTTP clients are built again though their configuration did not change.
    pub refresh: Vec<String>,
}

/// Everything one watcher needs.
#[derive(Debug, Clone)]
pub struct Watch {
    pub cfg: MonitoringResources,
    /// The file's `global`, the jobs inherit from it.
    pub global: GlobalConfig,
    /// The file's own job names (a generated job may not reuse one).
    pub file_jobs: Vec<String>,
    pub registry: Arc<Registry>,
    pub sa_dir: PathBuf,
    /// Where TLS material from Secrets is written.
    pub cert_dir: PathBuf,
}

impl PartialEq for Watch {
    fn eq(&self, o: &Watch) -> bool {
        self.cfg == o.cfg
            && self.global == o.global
            && self.file_jobs == o.file_jobs
            && self.sa_dir == o.sa_dir
            && self.cert_dir == o.cert_dir
    }
}

/// The global the generated jobs inherit: the file's, with the section's interval and timeout.
fn generated_global(w: &Watch) -> GlobalConfig {
    let mut g = w.global.clone();
    g.scrape_interval = PromDuration(w.cfg.scrape_interval);
    g.scrape_timeout = w.cfg.scrape_timeout.map(PromDuration);
    g
}

/// Runs until `stop`, keeping `tx` holding the jobs of the selected resources.
pub async fn run(w: Watch, tx: watch::Sender<GeneratedJobs>, stop: CancellationToken) {
    let cfg = &w.cfg;
    let client = match w.registry.client(&cfg.client.source) {
        Some(c) => c,
        None => match meridian_kube::client::connect(
            &cfg.client,
            &w.sa_dir,
            crate::discovery::kubernetes::USER_AGENT,
        )
        .await
        {
            Ok(c) => w.registry.put_client(&cfg.client.source, c),
            Err(e) => {
                tracing::error!(error = %e, "monitoring_resources: no API client; no ServiceMonitor or PodMonitor is read");
                return;
            }
        },
    };
    let needs_own = [&cfg.service_monitors, &cfg.pod_monitors]
        .iter()
        .any(|s| s.as_ref().is_some_and(|s| s.namespaces == Namespaces::Own));
    let own = if needs_own {
        match cfg.own_namespace(&w.sa_dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "monitoring_resources: no ServiceMonitor or PodMonitor is read");
                return;
            }
        }
    } else {
        String::new()
    };
    let source = &cfg.client.source;
    let sms: Option<Selected<ServiceMonitor>> = cfg
        .service_monitors
        .as_ref()
        .map(|s| Selected::new(&w.registry, source, &client, s, &own));
    let pms: Option<Selected<PodMonitor>> = cfg
        .pod_monitors
        .as_ref()
        .map(|s| Selected::new(&w.registry, source, &client, s, &own));
    for ok in [
        match &sms {
            Some(s) => s.synced(&stop).await,
            None => true,
        },
        match &pms {
            Some(s) => s.synced(&stop).await,
            None => true,
        },
    ] {
        if !ok {
            return;
        }
    }
    let mut changes = futures::stream::select_all(
        sms.iter()
            .map(Selected::changes)
            .chain(pms.iter().map(Selected::changes)),
    );
    let mut reported: HashMap<String, String> = HashMap::new();
    let global = generated_global(&w);
    loop {
        let sm = sms.as_ref().map(Selected::objects).unwrap_or_default();
        let pm = pms.as_ref().map(Selected::objects).unwrap_or_default();
        let assets = read_assets(&client, &sm, &pm).await;
        let ctx = Context {
            cfg,
            assets: &assets,
            cert_dir: &w.cert_dir,
        };
        let (out, problems) = generate_all(&w, &global, &ctx, &sm, &pm).await;
        for (name, e) in &problems {
            if reported.get(name) != Some(e) {
                tracing::warn!(resource = %name, reason = "InvalidConfiguration", "monitoring_resources: {name} skipped: {e}");
            }
        }
        for name in reported.keys() {
            if !problems.contains_key(name) {
                tracing::info!(resource = %name, "monitoring_resources: {name} is used again");
            }
        }
        reported = problems;
        tx.send_if_modified(|cur| {
            if *cur == out {
                false
            } else {
                *cur = out;
                true
            }
        });
        tokio::select! {
            () = stop.cancelled() => return,
            c = changes.next() => if c.is_none() { return; },
            () = tokio::time::sleep(RESYNC) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(BATCH) => {}
        }
    }
}

/// One pass: every selected resource's jobs, checked; the problems by resource.
async fn generate_all(
    w: &Watch,
    global: &GlobalConfig,
    ctx: &Context<'_>,
    sm: &[Arc<ServiceMonitor>],
    pm: &[Arc<PodMonitor>],
) -> (GeneratedJobs, HashMap<String, String>) {
    let mut problems: HashMap<String, String> = HashMap::new();
    let mut candidates: Vec<(String, Accepted)> = Vec::new();
    let mut so_far = GeneratedJobs::default();
    let all = sm
        .iter()
        .map(|m| {
            (
                resource_name("ServiceMonitor", &m.metadata),
                m.unsupported(),
                generate::service_monitor(ctx, m),
            )
        })
        .chain(pm.iter().map(|m| {
            (
                resource_name("PodMonitor", &m.metadata),
                m.unsupported(),
                generate::pod_monitor(ctx, m),
            )
        }));
    for (name, unsupported, generated) in all {
        match accept(w, global, &so_far, unsupported, generated) {
            Ok(a) => {
                so_far.jobs.extend(a.0.iter().cloned());
                candidates.push((name, a));
            }
            Err(e) => {
                problems.insert(name, e);
            }
        }
    }
    // TLS files are written and every job's HTTP client built (its TLS material read) off the
    // async workers; a resource whose client cannot be built is refused like any other problem.
    let dir = w.cert_dir.clone();
    let checked = tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .map(|(name, a)| {
                let r = finish(&dir, &a);
                (name, a, r)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut out = GeneratedJobs::default();
    for (name, (jobs, yaml, _), r) in checked {
        match r {
            Ok(rewritten) => {
                if rewritten {
                    out.refresh.extend(jobs.iter().map(|j| j.job_name.clone()));
                }
                out.jobs.extend(jobs);
                out.yaml.extend(yaml);
            }
            Err(e) => {
                problems.insert(name, e);
            }
        }
    }
    (out, problems)
}

/// `ServiceMonitor default/example-app`.
fn resource_name(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

type Accepted = (Vec<ScrapeConfig>, Vec<Node>, Vec<(PathBuf, Vec<u8>)>);

/// One resource's jobs, checked as jobs of a file are; any problem refuses the whole resource.
fn accept(
    w: &Watch,
    global: &GlobalConfig,
    so_far: &GeneratedJobs,
    unsupported: Vec<String>,
    generated: Result<Generated, String>,
) -> Result<Accepted, String> {
    if let Some(f) = unsupported.first() {
        return Err(format!("{f}: not supported by Meridian"));
    }
    let generated = generated?;
    let mut jobs: Vec<ScrapeConfig> = Vec::new();
    for (i, node) in generated.jobs.iter().enumerate() {
        let text = serde_saphyr::to_string(node).map_err(|e| format!("job {i}: {e}"))?;
        let mut prior: Vec<ScrapeConfig> = so_far.jobs.clone();
        prior.extend(jobs.iter().cloned());
        let (job, _warnings) =
            resolve_generated_job(&text, global, &prior).map_err(|e| endpoint_field(&e, i))?;
        if w.file_jobs.contains(&job.job_name) {
            return Err(format!(
                "job {:?} is also a job of the configuration file",
                job.job_name
            ));
        }
        jobs.push(job);
    }
    Ok((jobs, generated.jobs, generated.files))
}

/// A job's error, with the endpoint it came from.
fn endpoint_field(e: &str, i: usize) -> String {
    // `scrape_configs (job "…", line N): …` names a line of generated YAML, which the user never saw.
    let msg = e.split_once("): ").map_or(e, |(_, m)| m);
    format!("endpoint {i}: {msg}")
}

/// Reads the Secrets and ConfigMaps the monitors refer to (one `get` each).
async fn read_assets(
    client: &Client,
    sm: &[Arc<ServiceMonitor>],
    pm: &[Arc<PodMonitor>],
) -> AssetStore {
    let mut secrets: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut maps: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut note = |ns: &str, e: &Endpoint| {
        let mut sec = |name: &str| {
            secrets.insert((ns.to_owned(), name.to_owned()), ());
        };
        if let Some(b) = &e.bearer_token_secret {
            sec(&b.name);
        }
        if let Some(a) = e
            .authorization
            .as_ref()
            .and_then(|a| a.credentials.as_ref())
        {
            sec(&a.name);
        }
        if let Some(b) = &e.basic_auth {
            for s in [&b.username, &b.password].into_iter().flatten() {
                sec(&s.name);
            }
        }
        if let Some(t) = &e.tls_config {
            for x in [&t.ca, &t.cert].into_iter().flatten() {
                if let Some(s) = &x.secret {
                    sec(&s.name);
                }
                if let Some(c) = &x.config_map {
                    maps.insert((ns.to_owned(), c.name.clone()), ());
                }
            }
            if let Some(k) = &t.key_secret {
                sec(&k.name);
            }
        }
    };
    for m in sm {
        let ns = m.metadata.namespace.as_deref().unwrap_or("");
        m.spec.endpoints.iter().for_each(|e| note(ns, e));
    }
    for m in pm {
        let ns = m.metadata.namespace.as_deref().unwrap_or("");
        m.spec
            .pod_metrics_endpoints
            .iter()
            .for_each(|e| note(ns, e));
    }
    let mut store = AssetStore::default();
    for (ns, name) in secrets.into_keys() {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        match api.get_opt(&name).await {
            Ok(Some(s)) => {
                let data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .chain(
                        s.string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    )
                    .collect();
                store.secrets.insert((ns, name), data);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(secret = %format!("{ns}/{name}"), error = %e, "monitoring_resources: cannot read a Secret");
            }
        }
    }
    for (ns, name) in maps.into_keys() {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        match api.get_opt(&name).await {
            Ok(Some(c)) => {
                let data: BTreeMap<String, Vec<u8>> = c
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .chain(
                        c.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    )
                    .collect();
                store.config_maps.insert((ns, name), data);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(config_map = %format!("{ns}/{name}"), error = %e, "monitoring_resources: cannot read a ConfigMap");
            }
        }
    }
    store
}

/// Writes a resource's TLS files that changed (mode 0600, through a temporary file and a rename), then
/// builds each job's HTTP client as the scrape manager will. Returns whether a file that existed was
/// rewritten with new contents.
fn finish(dir: &Path, a: &Accepted) -> Result<bool, String> {
    let (jobs, _, files) = a;
    if !files.is_empty() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut rewritten = false;
    for (path, data) in files {
        match std::fs::read(path) {
            Ok(old) if old == *data => continue,
            Ok(_) => rewritten = true,
            Err(_) => {}
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut f = o.open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for (i, j) in jobs.iter().enumerate() {
        crate::scrape::http::HttpClient::new(j).map_err(|e| format!("endpoint {i}: {e}"))?;
    }
    Ok(rewritten)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_jobs_inherit_the_sections_interval_and_timeout() {
        let file = crate::config::Config::parse(
            "global:\n  scrape_interval: 1h\n  sample_limit: 7\nmonitoring_resources:\n  namespace: x\n  scrapeInterval: 15s\n  scrapeTimeout: 5s\n",
        )
        .unwrap();
        let w = Watch {
            cfg: file.monitoring_resources.clone().unwrap(),
            global: file.global.clone(),
            file_jobs: Vec::new(),
            registry: Arc::new(Registry::default()),
            sa_dir: PathBuf::new(),
            cert_dir: PathBuf::new(),
        };
        let g = generated_global(&w);
        let (job, _) = resolve_generated_job("job_name: j\n", &g, &[]).unwrap();
        assert_eq!(job.scrape_interval, Duration::from_secs(15));
        assert_eq!(job.scrape_timeout, Duration::from_secs(5));
        assert_eq!(job.sample_limit, 7, "the file's global limits still apply");
        let (job, _) =
            resolve_generated_job("job_name: j\nscrape_interval: 1m\n", &g, &[]).unwrap();
        assert_eq!(job.scrape_interval, Duration::from_secs(60));
    }

    #[test]
    fn a_rotated_secret_rewrites_its_file_and_asks_for_new_clients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("certs").join("0_default_tls_ca");
        let a = |data: &[u8]| -> Accepted {
            (Vec::new(), Vec::new(), vec![(path.clone(), data.to_vec())])
        };
        let certs = dir.path().join("certs");
        assert!(
            !finish(&certs, &a(b"one")).unwrap(),
            "a new file is not a rotation"
        );
        assert!(!finish(&certs, &a(b"one")).unwrap(), "unchanged");
        assert!(finish(&certs, &a(b"two")).unwrap(), "rotated");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
