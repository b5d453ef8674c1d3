//! The Alertmanager sender (Prometheus' `notifier` package, Thanos Ruler's `--alertmanagers.*` flags).
//!
//! Alerts are queued (bounded: when full, the oldest are dropped and counted), then sent in batches of
//! at most 64 to **every** Alertmanager discovered — an HA Alertmanager cluster deduplicates them — as
//! `POST <scheme>://<address><path_prefix>/api/v2/alerts`. Before queueing, each alert gets the external
//! labels it does not have, loses the `--alert.label-drop` labels (so HA rule evaluators, which differ
//! only by their replica label, send identical alerts), and goes through `alert_relabel_configs`
//! (which may drop it).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_core::labels::Labels;
use meridian_core::net::dns::DnsResolver;
use meridian_core::promfmt::PromDuration;
use meridian_core::relabel::RelabelConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{HttpClient, HttpConfig};
use super::rfc3339_ms;
use crate::discovery::{EndpointDiscovery, EndpointSpec};
use crate::rules::{AlertSink, OutAlert};

/// Most alerts in one request (Prometheus' `maxBatchSize` is 256; Thanos sends 64 at a time).
pub const MAX_BATCH: usize = 64;

/// One set of Alertmanagers sharing scheme, path prefix and timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSet {
    /// `host:port`, `dns+host:port`, `dnssrv+name` (Thanos' lookup prefixes).
    pub specs: Vec<EndpointSpec>,
    /// Files of `file_sd_configs` (targets `host:port`), read at every refresh.
    pub files: Vec<PathBuf>,
    pub scheme: String,
    pub path_prefix: String,
    pub timeout: Duration,
    /// `http_config`: TLS and authentication.
    pub http: HttpClient,
}

/// `--alertmanagers.url`: `[dns+|dnssrv+]http[s]://host[:port][/prefix]`.
pub fn parse_url(value: &str, timeout: Duration) -> Result<AlertmanagerSet, String> {
    let err = |reason: &str| format!("--alertmanagers.url {value:?}: {reason}");
    let (lookup, url) = match value.split_once('+') {
        Some((l, rest)) if !l.contains("://") => (Some(l), rest),
        _ => (None, value),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("want scheme://host:port[/path]"))?;
    if scheme != "http" && scheme != "https" {
        return Err(err(&format!("scheme {scheme:?} is not http or https")));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(err("missing host"));
    }
    let with_port = |h: &str| {
        if h.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            h.to_owned()
        } else {
            format!("{h}:{}", if scheme == "https" { 443 } else { 80 })
        }
    };
    let spec_text = match lookup {
        None => with_port(host),
        Some("dns") => format!("dns+{}", with_port(host)),
        Some(l @ ("dnssrv" | "dnssrvnoa")) => format!("{l}+{host}"),
        Some(other) => {
            return Err(err(&format!(
                "unknown lookup {other:?}: use dns+ or dnssrv+"
            )));
        }
    };
    let spec: EndpointSpec = spec_text
        .parse()
        .map_err(|e: crate::discovery::SpecError| err(&e.reason))?;
    Ok(AlertmanagerSet {
        specs: vec![spec],
        files: vec![],
        scheme: scheme.to_owned(),
        path_prefix: path.trim_end_matches('/').to_owned(),
        timeout,
        http: HttpClient::new(HttpConfig::default(), scheme == "https").map_err(|e| err(&e))?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    alertmanagers: Vec<RawSet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    #[serde(default)]
    static_configs: Vec<String>,
    #[serde(default)]
    file_sd_configs: Vec<RawFileSd>,
    #[serde(default = "http")]
    scheme: String,
    #[serde(default)]
    path_prefix: String,
    timeout: Option<PromDuration>,
    #[serde(default = "v2")]
    api_version: String,
    #[serde(default)]
    http_config: HttpConfig,
}

fn http() -> String {
    "http".into()
}

fn v2() -> String {
    "v2".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSd {
    files: Vec<String>,
    /// Accepted; the files are read again at every discovery refresh (30 s).
    #[allow(dead_code)]
    refresh_interval: Option<PromDuration>,
}

/// `--alertmanagers.config-file` (Thanos' format).
pub fn parse_config(text: &str, default_timeout: Duration) -> Result<Vec<AlertmanagerSet>, String> {
    let raw: RawConfig =
        serde_saphyr::from_str(text).map_err(|e| format!("--alertmanagers.config-file: {e}"))?;
    let mut out = Vec::new();
    for (i, s) in raw.alertmanagers.into_iter().enumerate() {
        let at = format!("--alertmanagers.config-file: alertmanagers[{i}]");
        if s.api_version != "v2" {
            return Err(format!(
                "{at}: api_version {:?}: only v2 is supported (Alertmanager ≥ 0.16)",
                s.api_version
            ));
        }
        if s.scheme != "http" && s.scheme != "https" {
            return Err(format!("{at}: scheme {:?} is not http or https", s.scheme));
        }
        let http = HttpClient::new(s.http_config, s.scheme == "https")
            .map_err(|e| format!("{at}.http_config: {e}"))?;
        let specs = s
            .static_configs
            .iter()
            .map(|v| {
                v.parse::<EndpointSpec>()
                    .map_err(|e| format!("{at}.static_configs: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let files = s
            .file_sd_configs
            .iter()
            .flat_map(|f| f.files.iter().map(PathBuf::from))
            .collect();
        out.push(AlertmanagerSet {
            specs,
            files,
            scheme: s.scheme,
            path_prefix: s.path_prefix.trim_end_matches('/').to_owned(),
            timeout: s.timeout.map_or(default_timeout, |d| d.0),
            http,
        });
    }
    Ok(out)
}

/// Sender settings.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    pub sets: Vec<AlertmanagerSet>,
    pub external_labels: Labels,
    /// `--alert.label-drop`.
    pub label_drop: Vec<String>,
    /// `alert_relabel_configs` (`--alert.relabel-config-file`).
    pub relabel: Vec<RelabelConfig>,
    /// `--alertmanagers.notification-queue-capacity` (10,000).
    pub queue_capacity: usize,
    /// `--dns.nameserver`.
    pub dns_server: Option<SocketAddr>,
    /// How often discovery runs again (30 s).
    pub refresh_interval: Duration,
}

impl NotifierOptions {
    pub fn new(sets: Vec<AlertmanagerSet>) -> NotifierOptions {
        NotifierOptions {
            sets,
            external_labels: Labels::empty(),
            label_drop: vec![],
            relabel: vec![],
            queue_capacity: 10_000,
            dns_server: None,
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// Sender metrics (Prometheus' names with Meridian's prefix).
#[derive(Debug, Default, Clone)]
pub struct NotifierMetrics {
    pub sent: Family<AmLabel, Counter>,
    pub errors: Family<AmLabel, Counter>,
    pub dropped: Counter,
    pub queue_length: Gauge,
    pub alertmanagers: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct AmLabel {
    pub alertmanager: String,
}

impl NotifierMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "meridian_notifications_sent",
            "Alerts sent, by Alertmanager.",
            self.sent.clone(),
        );
        r.register(
            "meridian_notifications_errors",
            "Alerts whose sending failed, by Alertmanager.",
            self.errors.clone(),
        );
        r.register(
            "meridian_notifications_dropped",
            "Alerts dropped: queue full or no Alertmanager.",
            self.dropped.clone(),
        );
        r.register(
            "meridian_notifications_queue_length",
            "Alerts waiting to be sent.",
            self.queue_length.clone(),
        );
        r.register(
            "meridian_notifications_alertmanagers_discovered",
            "Alertmanagers alerts are sent to.",
            self.alertmanagers.clone(),
        );
    }
}

/// The sender: an [`AlertSink`] for the rule evaluator.
#[derive(Debug)]
pub struct Notifier {
    opts: NotifierOptions,
    queue: Mutex<VecDeque<serde_json::Value>>,
    more: Notify,
    /// Discovered Alertmanager URLs (the `/api/v2/alerts` endpoint of each) with their timeout.
    targets: Mutex<Vec<(String, Duration, HttpClient)>>,
    /// `None` when no resolver could be built (logged once; static addresses still work).
    resolver: Option<DnsResolver>,
    pub metrics: NotifierMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Notifier {
    pub fn new(opts: NotifierOptions) -> Arc<Notifier> {
        let resolver = DnsResolver::new(opts.dns_server)
            .inspect_err(|e| tracing::warn!(error = %e, "alertmanager discovery: no DNS resolver"))
            .ok();
        Arc::new(Notifier {
            resolver,
            opts,
            queue: Mutex::new(VecDeque::new()),
            more: Notify::new(),
            targets: Mutex::new(Vec::new()),
            metrics: NotifierMetrics::default(),
        })
    }

    /// The labels an alert is sent with, or `None` when relabeling drops it.
    pub fn process_labels(&self, labels: &Labels) -> Option<Labels> {
        super::process_labels(
            labels,
            &self.opts.external_labels,
            &self.opts.label_drop,
            &self.opts.relabel,
        )
    }

    /// Alertmanager URLs currently sent to.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.targets)
            .iter()
            .map(|(u, _, _)| u.clone())
            .collect()
    }

    /// Resolves every set once.
    pub async fn refresh(&self) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        let mut out = Vec::new();
        for set in &self.opts.sets {
            let mut specs = set.specs.clone();
            for f in &set.files {
                let Ok(text) = tokio::fs::read_to_string(f).await else {
                    tracing::warn!(file = %f.display(), "alertmanager file_sd: cannot read");
                    continue;
                };
                match meridian_core::targetgroup::parse_file(f, &text) {
                    Ok(groups) => {
                        for g in groups {
                            for t in g.targets {
                                if let Some(Ok(spec)) =
                                    t.get("__address__").map(str::parse::<EndpointSpec>)
                                {
                                    specs.push(spec);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "alertmanager file_sd")
                    }
                }
            }
            let mut d = EndpointDiscovery::new(resolver.clone(), specs);
            let (found, errors) = d.refresh().await;
            for e in errors {
                tracing::warn!(error = %e, "alertmanager discovery");
            }
            for f in found {
                out.push((
                    format!(
                        "{}://{}{}/api/v2/alerts",
                        set.scheme, f.address, set.path_prefix
                    ),
                    set.timeout,
                    set.http.clone(),
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        self.metrics.alertmanagers.set(out.len() as i64);
        *lock(&self.targets) = out;
    }

    /// Discovers and sends until `stop`; what is queued then is sent once more before returning.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut refresh = tokio::time::interval(self.opts.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.send_all().await;
                    return;
                }
                _ = refresh.tick() => self.refresh().await,
                () = self.more.notified() => self.send_all().await,
            }
        }
    }

    /// Sends everything queued, batch by batch.
    async fn send_all(&self) {
        loop {
            let batch: Vec<serde_json::Value> = {
                let mut q = lock(&self.queue);
                let n = q.len().min(MAX_BATCH);
                let b = q.drain(..n).collect();
                self.metrics.queue_length.set(q.len() as i64);
                b
            };
            if batch.is_empty() {
                return;
            }
            let targets = lock(&self.targets).clone();
            if targets.is_empty() {
                self.metrics.dropped.inc_by(batch.len() as u64);
                tracing::warn!(alerts = batch.len(), "no Alertmanager to send alerts to");
                continue;
            }
            let body = Bytes::from(serde_json::Value::Array(batch.clone()).to_string());
            let sends = targets.iter().map(|(url, timeout, http)| {
                let body = body.clone();
                async move { (url, http.post(url, body, *timeout).await) }
            });
            for (url, r) in futures::future::join_all(sends).await {
                let label = AmLabel {
                    alertmanager: url.clone(),
                };
                match r {
                    Ok(()) => {
                        self.metrics
                            .sent
                            .get_or_create(&label)
                            .inc_by(batch.len() as u64);
                    }
                    Err(e) => {
                        self.metrics
                            .errors
                            .get_or_create(&label)
                            .inc_by(batch.len() as u64);
                        tracing::warn!(alertmanager = %url, error = %e.message, "sending alerts failed");
                    }
                }
            }
        }
    }
}

impl AlertSink for Notifier {
    fn send(&self, alerts: Vec<OutAlert>) {
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            let Some(labels) = self.process_labels(&a.labels) else {
                continue;
            };
            out.push(serde_json::json!({
                "labels": meridian_core::labels::labels_json(&labels),
                "annotations": a.annotations,
                "startsAt": rfc3339_ms(a.starts_at),
                "endsAt": rfc3339_ms(a.ends_at),
                "generatorURL": a.generator_url,
            }));
        }
        if out.is_empty() {
            return;
        }
        {
            let mut q = lock(&self.queue);
            q.extend(out);
            let over = q.len().saturating_sub(self.opts.queue_capacity);
            if over > 0 {
                q.drain(..over);
                self.metrics.dropped.inc_by(over as u64);
                tracing::warn!(dropped = over, "alert queue full: oldest alerts dropped");
            }
            self.metrics.queue_length.set(q.len() as i64);
        }
        self.more.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_config() {
        let s = parse_url(
            "dnssrv+http://_web._tcp.am.monitoring/prefix/",
            Duration::from_secs(10),
        )
        .expect("url");
        assert_eq!(
            s.specs,
            vec![EndpointSpec::DnsSrv("_web._tcp.am.monitoring".into())]
        );
        assert_eq!(s.path_prefix, "/prefix");
        let s = parse_url("http://127.0.0.1:9093", Duration::from_secs(10)).expect("url");
        assert_eq!(s.specs, vec![EndpointSpec::Static("127.0.0.1:9093".into())]);
        assert!(parse_url("ftp://x:1", Duration::from_secs(1)).is_err());
        assert_eq!(
            parse_url("https://am.example", Duration::from_secs(1))
                .unwrap()
                .specs,
            vec![EndpointSpec::Static("am.example:443".into())]
        );
        assert!(parse_url("dnsx+http://x:1", Duration::from_secs(1)).is_err());
        let sets = parse_config(
            "alertmanagers:\n- static_configs: ['dns+am:9093']\n  scheme: http\n  timeout: 5s\n  path_prefix: /am\n",
            Duration::from_secs(10),
        )
        .expect("config");
        assert_eq!(sets[0].timeout, Duration::from_secs(5));
        let e = parse_config(
            "alertmanagers:\n- static_configs: []\n  api_version: v1\n",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("api_version"), "{e}");
        let e =
            parse_config("alertmanagers:\n- statics: []\n", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("statics"), "{e}");
    }

    #[test]
    fn labels_get_external_labels_then_drop_then_relabel() {
        let mut o = NotifierOptions::new(vec![]);
        o.external_labels =
            Labels::from_pairs([("cluster", "eu"), ("replica", "a"), ("severity", "x")]);
        o.label_drop = vec!["replica".into()];
        o.relabel = vec![
            RelabelConfig::parse_yaml("source_labels: [severity]\nregex: none\naction: drop\n")
                .expect("relabel"),
        ];
        let n = Notifier::new(o);
        let l = n
            .process_labels(&Labels::from_pairs([
                ("alertname", "A"),
                ("severity", "page"),
            ]))
            .expect("kept");
        assert_eq!(
            l,
            Labels::from_pairs([("alertname", "A"), ("cluster", "eu"), ("severity", "page")])
        );
        assert!(
            n.process_labels(&Labels::from_pairs([
                ("alertname", "A"),
                ("severity", "none")
            ]))
            .is_none()
        );
    }
}
