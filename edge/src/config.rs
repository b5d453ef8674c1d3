//! The edge's configuration: Prometheus' own YAML schema (`prometheus.yml`), so a cluster's existing scrape
//! configuration moves over unchanged.
//!
//! - `global`, `scrape_configs` and `remote_write` are acted on. `rule_files`, `alerting`, `remote_read`,
//!   `storage`, `tracing`, `runtime` and `otlp` are accepted and named in a start-up warning
//!   ([`Config::ignored_sections`]); any other key is an error with its line and column.
//! - `$(VAR)` is replaced from the environment before parsing, as Thanos' config reloader does
//!   (`replica: $(POD_NAME)`); an undefined variable is an error naming it and its line.
//! - Defaults and checks follow Prometheus (`config/config.go`): a job inherits interval, timeout and limits
//!   from `global`; its timeout defaults to the smaller of the global timeout and its interval; a timeout
//!   above the interval, a duplicate job name or an invalid label name is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use crate::discovery::kubernetes::config::{KubernetesSdConfig, RawKubernetesSdConfig};
use meridian_core::error::ConfigError;
use meridian_core::http_config::{Auth, Authorization, BasicAuth, TlsConfig};
use meridian_core::labels::Labels;
use meridian_core::promfmt::{PromDuration, parse_base2_bytes as parse_size};
use meridian_core::relabel::{RelabelConfig, is_valid_label_name};
use meridian_kube::resources::{MonitoringResources, RawMonitoringResources};

/// `global:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub scrape_interval: PromDuration,
    pub scrape_timeout: Option<PromDuration>,
    pub evaluation_interval: PromDuration,
    pub external_labels: BTreeMap<String, String>,
    pub query_log_file: Option<String>,
    pub body_size_limit: Option<String>,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub target_limit: u64,
    pub keep_dropped_targets: u64,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: PromDuration(Duration::from_secs(60)),
            scrape_timeout: None,
            evaluation_interval: PromDuration(Duration::from_secs(60)),
            external_labels: BTreeMap::new(),
            query_log_file: None,
            body_size_limit: None,
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            target_limit: 0,
            keep_dropped_targets: 0,
        }
    }
}

/// `static_configs:` entry.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "five_minutes")]
    pub refresh_interval: PromDuration,
}

fn five_minutes() -> PromDuration {
    PromDuration(Duration::from_secs(300))
}

fn thirty_seconds() -> PromDuration {
    PromDuration(Duration::from_secs(30))
}

/// The record type of `dns_sd_configs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DnsRecordType {
    #[default]
    #[serde(rename = "SRV")]
    Srv,
    #[serde(rename = "A")]
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "MX")]
    Mx,
    #[serde(rename = "NS")]
    Ns,
}

/// `dns_sd_configs:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSdConfig {
    pub names: Vec<String>,
    #[serde(rename = "type", default)]
    pub record_type: DnsRecordType,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "thirty_seconds")]
    pub refresh_interval: PromDuration,
}

/// One `scrape_configs:` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrapeConfig {
    job_name: Spanned<String>,
    #[serde(default)]
    honor_labels: bool,
    #[serde(default = "yes")]
    honor_timestamps: bool,
    #[serde(default)]
    track_timestamps_staleness: bool,
    scrape_interval: Option<PromDuration>,
    scrape_timeout: Option<PromDuration>,
    #[serde(default = "default_path")]
    metrics_path: String,
    #[serde(default = "default_scheme")]
    scheme: String,
    #[serde(default)]
    params: BTreeMap<String, Vec<String>>,
    body_size_limit: Option<String>,
    sample_limit: Option<u64>,
    label_limit: Option<u64>,
    label_name_length_limit: Option<u64>,
    label_value_length_limit: Option<u64>,
    target_limit: Option<u64>,
    keep_dropped_targets: Option<u64>,
    scrape_native_histograms: Option<bool>,
    always_scrape_classic_histograms: Option<bool>,
    /// Prometheus 2.x's name of `always_scrape_classic_histograms`.
    scrape_classic_histograms: Option<bool>,
    native_histogram_bucket_limit: Option<u64>,
    native_histogram_min_bucket_factor: Option<f64>,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    tls_config: TlsConfig,
    #[serde(default = "yes")]
    follow_redirects: bool,
    #[serde(default = "yes")]
    enable_http2: bool,
    proxy_url: Option<String>,
    #[serde(default)]
    static_configs: Vec<StaticConfig>,
    #[serde(default)]
    file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    dns_sd_configs: Vec<DnsSdConfig>,
    #[serde(default)]
    kubernetes_sd_configs: Vec<RawKubernetesSdConfig>,
    #[serde(default)]
    relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    metric_relabel_configs: Vec<RelabelConfig>,
}

fn yes() -> bool {
    true
}
fn default_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}

/// One scrape job, with everything inherited from `global` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    pub job_name: String,
    /// Where the job is defined (for messages).
    pub line: u64,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    /// 0 = unlimited.
    pub body_size_limit: u64,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub target_limit: u64,
    /// `scrape_native_histograms`: negotiate the protobuf format and keep native histograms.
    pub native_histograms: bool,
    /// `always_scrape_classic_histograms` (2.x: `scrape_classic_histograms`).
    pub classic_histograms: bool,
    /// `native_histogram_bucket_limit` (0 = none).
    pub native_histogram_bucket_limit: u64,
    /// `native_histogram_min_bucket_factor` (at most 1 = none).
    pub native_histogram_min_bucket_factor: f64,
    pub auth: Auth,
    pub tls_config: TlsConfig,
    pub follow_redirects: bool,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub dns_sd_configs: Vec<DnsSdConfig>,
    pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    /// `proxy_url`: scrapes go through this HTTP proxy (absolute-form requests for `http`, `CONNECT`
    /// tunnels for `https`).
    pub proxy_url: Option<http::Uri>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: GlobalConfig,
    pub external_labels: Labels,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub remote_write: Vec<crate::remote::config::RemoteWriteConfig>,
    /// `monitoring_resources:`: ServiceMonitors and PodMonitors read from the Kubernetes API.
    pub monitoring_resources: Option<MonitoringResources>,
    /// Sections present that the edge accepts but does not act on.
    pub ignored_sections: Vec<&'static str>,
    /// Other things worth a warning at load (per job).
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: GlobalConfig,
    #[serde(default)]
    scrape_configs: Vec<RawScrapeConfig>,
    rule_files: Option<IgnoredAny>,
    alerting: Option<IgnoredAny>,
    #[serde(default)]
    remote_write: Vec<crate::remote::config::RawRemoteWrite>,
    monitoring_resources: Option<RawMonitoringResources>,
    remote_read: Option<IgnoredAny>,
    storage: Option<IgnoredAny>,
    tracing: Option<IgnoredAny>,
    runtime: Option<IgnoredAny>,
    otlp: Option<IgnoredAny>,
}

/// Replaces `$(NAME)` with the environment variable `NAME` (letters, digits, `_`), as Thanos' reloader
/// does; `$(` not followed by a name and `)` is left as written.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with(')') {
            let name = &after[..name_len];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    let line = text[..text.len() - rest.len() + i].matches('\n').count() + 1;
                    return Err(format!(
                        "line {line}: environment variable {name:?} referenced as $({name}) is not set"
                    ));
                }
            }
            rest = &after[name_len + 1..];
        } else {
            out.push_str("$(");
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Loads a file, substituting `$(VAR)` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse_with_env(&text, |k| std::env::var(k).ok()).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            message: e.message,
        })
    }

    /// Parses text without environment substitution.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, |_| None)
    }

    pub fn parse_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: "config".into(),
            message,
        };
        let text = expand_env(text, env).map_err(err)?;
        // An empty file is a valid (empty) Prometheus config.
        let raw: RawConfig = if text.trim().is_empty() {
            serde_saphyr::from_str("{}").map_err(|e| err(e.to_string()))?
        } else {
            serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?
        };
        Config::resolve(raw).map_err(err)
    }

    fn resolve(raw: RawConfig) -> Result<Config, String> {
        let mut ignored = Vec::new();
        let mut warnings = Vec::new();
        for (present, name) in [
            (raw.rule_files.is_some(), "rule_files"),
            (raw.alerting.is_some(), "alerting"),
            (raw.remote_read.is_some(), "remote_read"),
            (raw.storage.is_some(), "storage"),
            (raw.tracing.is_some(), "tracing"),
            (raw.runtime.is_some(), "runtime"),
            (raw.otlp.is_some(), "otlp"),
        ] {
            if present {
                ignored.push(name);
            }
        }
        let g = raw.global;
        let (global_timeout, global_body_limit) = check_global(&g)?;
        let monitoring_resources = raw
            .monitoring_resources
            .map(RawMonitoringResources::resolve)
            .transpose()?;
        let mut all_external = g.external_labels.clone();
        if let Some(m) = &monitoring_resources {
            if m.rules.is_some() {
                warnings.push("monitoring_resources.ruleSelector: the edge does not evaluate rules; give this section to the gateway (--rule.monitoring-resources-file) to evaluate the selected PrometheusRules".to_owned());
            }
            for (k, v) in &m.external_labels {
                if let Some(prev) = all_external.insert(k.clone(), v.clone())
                    && prev != *v
                {
                    return Err(format!(
                        "monitoring_resources.externalLabels: {k:?} is also in global.external_labels with another value ({prev:?})"
                    ));
                }
            }
        }
        let external_labels =
            Labels::from_pairs(all_external.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut jobs: Vec<ScrapeConfig> = Vec::new();
        for r in raw.scrape_configs {
            let job = resolve_job(
                r,
                &g,
                global_timeout,
                global_body_limit,
                &jobs,
                &mut warnings,
            )?;
            jobs.push(job);
        }
        let remote_write = crate::remote::config::resolve_all(raw.remote_write)?;
        Ok(Config {
            global: g,
            external_labels,
            scrape_configs: jobs,
            remote_write,
            monitoring_resources,
            ignored_sections: ignored,
            warnings,
        })
    }
}

/// Scrape jobs generated from ServiceMonitors and PodMonitors: `text` is one job's YAML; `global` is the
/// file's `global` with the `monitoring_resources` section's `scrapeInterval` and `scrapeTimeout`, as
/// the operator writes them into the `global` of the configuration it generates. The job goes through
/// the same checks as a job of the file.
pub fn resolve_generated_job(
    text: &str,
    global: &GlobalConfig,
    jobs: &[ScrapeConfig],
) -> Result<(ScrapeConfig, Vec<String>), String> {
    let (timeout, body_limit) = check_global(global)?;
    let raw: RawScrapeConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    let job = resolve_job(raw, global, timeout, body_limit, jobs, &mut warnings)?;
    Ok((job, warnings))
}

/// The global section's checks; returns the default scrape timeout and body size limit of jobs.
fn check_global(g: &GlobalConfig) -> Result<(Duration, u64), String> {
    let global_timeout = match g.scrape_timeout {
        Some(t) if t > g.scrape_interval => {
            return Err(format!(
                "global: scrape_timeout ({t}) is greater than scrape_interval ({})",
                g.scrape_interval
            ));
        }
        Some(t) => t.0,
        None => Duration::from_secs(10).min(g.scrape_interval.0),
    };
    if g.scrape_interval.0.is_zero() {
        return Err("global: scrape_interval must be greater than 0".into());
    }
    for (name, value) in &g.external_labels {
        if !is_valid_label_name(name) {
            return Err(format!(
                "global.external_labels: {name:?} is not a valid label name"
            ));
        }
        if value.is_empty() {
            return Err(format!(
                "global.external_labels: {name:?} has an empty value"
            ));
        }
    }
    let global_body_limit = match &g.body_size_limit {
        Some(s) => parse_size(s).map_err(|e| format!("global.body_size_limit: {e}"))?,
        None => 0,
    };
    Ok((global_timeout, global_body_limit))
}

/// One job with everything inherited from `global` resolved (`jobs`: the jobs before it, for duplicate
/// names).
fn resolve_job(
    r: RawScrapeConfig,
    g: &GlobalConfig,
    global_timeout: Duration,
    global_body_limit: u64,
    jobs: &[ScrapeConfig],
    warnings: &mut Vec<String>,
) -> Result<ScrapeConfig, String> {
    let job = r.job_name.value.clone();
    let line = r.job_name.referenced.line();
    let at = format!("scrape_configs (job {job:?}, line {line})");
    if job.is_empty() {
        return Err(format!("{at}: job_name is empty"));
    }
    if let Some(prev) = jobs.iter().find(|j| j.job_name == job) {
        return Err(format!(
            "{at}: job_name {job:?} is already used at line {}",
            prev.line
        ));
    }
    let interval = r.scrape_interval.map_or(g.scrape_interval.0, |d| d.0);
    if interval.is_zero() {
        return Err(format!("{at}: scrape_interval must be greater than 0"));
    }
    let timeout = match r.scrape_timeout {
        Some(t) => t.0,
        None => global_timeout.min(interval),
    };
    if timeout.is_zero() {
        return Err(format!("{at}: scrape_timeout must be greater than 0"));
    }
    if timeout > interval {
        return Err(format!(
            "{at}: scrape_timeout ({}) is greater than scrape_interval ({})",
            PromDuration(timeout),
            PromDuration(interval)
        ));
    }
    if r.scheme != "http" && r.scheme != "https" {
        return Err(format!(
            "{at}: scheme {:?} is not supported (http or https)",
            r.scheme
        ));
    }
    if !r.metrics_path.starts_with('/') {
        return Err(format!(
            "{at}: metrics_path {:?} must start with '/'",
            r.metrics_path
        ));
    }
    let proxy_url = parse_proxy_url(&at, r.proxy_url.as_deref())?;
    let auth = Auth::from_config(
        r.basic_auth.as_ref(),
        r.authorization.as_ref(),
        r.bearer_token.as_ref(),
        r.bearer_token_file.as_ref(),
    )
    .map_err(|e| format!("{at}: {e}"))?;
    check_target_sources(&at, &r)?;
    let kubernetes_sd_configs = r
        .kubernetes_sd_configs
        .iter()
        .map(|k| k.clone().resolve().map_err(|e| format!("{at}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if r.track_timestamps_staleness {
        warnings.push(format!(
                "{at}: track_timestamps_staleness is ignored (series with explicit timestamps get no stale markers)"
            ));
    }
    let body_size_limit = match &r.body_size_limit {
        Some(s) => parse_size(s).map_err(|e| format!("{at}: body_size_limit: {e}"))?,
        None => global_body_limit,
    };
    let _ = r.enable_http2;
    if r.always_scrape_classic_histograms.is_some() && r.scrape_classic_histograms.is_some() {
        return Err(format!(
            "{at}: always_scrape_classic_histograms and scrape_classic_histograms (its Prometheus 2 name) are both set"
        ));
    }
    let factor = r.native_histogram_min_bucket_factor.unwrap_or(0.0);
    if !(factor.is_finite() && factor >= 0.0) {
        return Err(format!(
            "{at}: native_histogram_min_bucket_factor must be a finite number of at least 0, got {factor}"
        ));
    }
    Ok(ScrapeConfig {
        native_histograms: r.scrape_native_histograms.unwrap_or(false),
        classic_histograms: r
            .always_scrape_classic_histograms
            .or(r.scrape_classic_histograms)
            .unwrap_or(false),
        native_histogram_bucket_limit: r.native_histogram_bucket_limit.unwrap_or(0),
        native_histogram_min_bucket_factor: factor,
        job_name: job,
        line,
        honor_labels: r.honor_labels,
        honor_timestamps: r.honor_timestamps,
        scrape_interval: interval,
        scrape_timeout: timeout,
        metrics_path: r.metrics_path,
        scheme: r.scheme,
        params: r.params,
        body_size_limit,
        sample_limit: r.sample_limit.unwrap_or(g.sample_limit),
        label_limit: r.label_limit.unwrap_or(g.label_limit),
        label_name_length_limit: r
            .label_name_length_limit
            .unwrap_or(g.label_name_length_limit),
        label_value_length_limit: r
            .label_value_length_limit
            .unwrap_or(g.label_value_length_limit),
        target_limit: r.target_limit.unwrap_or(g.target_limit),
        auth,
        tls_config: r.tls_config,
        follow_redirects: r.follow_redirects,
        static_configs: r.static_configs,
        file_sd_configs: r.file_sd_configs,
        dns_sd_configs: r.dns_sd_configs,
        kubernetes_sd_configs,
        proxy_url,
        relabel_configs: r.relabel_configs,
        metric_relabel_configs: r.metric_relabel_configs,
    })
}

/// A `proxy_url` (scrape jobs, remote write): an `http://` URL with a host; `at` names the place.
pub(crate) fn parse_proxy_url(at: &str, p: Option<&str>) -> Result<Option<http::Uri>, String> {
    let Some(p) = p else { return Ok(None) };
    let uri: http::Uri = p
        .parse()
        .map_err(|e| format!("{at}: proxy_url {p:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{at}: proxy_url {p:?} must be an http:// URL (the edge speaks HTTP proxies only)"
        ));
    }
    Ok(Some(uri))
}

/// `static_configs`, `file_sd_configs` and `dns_sd_configs` of a job, checked as Prometheus checks them.
fn check_target_sources(at: &str, r: &RawScrapeConfig) -> Result<(), String> {
    for sc in &r.static_configs {
        for name in sc.labels.keys() {
            if !is_valid_label_name(name) {
                return Err(format!(
                    "{at}: static_configs label {name:?} is not a valid label name"
                ));
            }
        }
        for t in &sc.targets {
            if t.contains('/') {
                return Err(format!(
                    "{at}: target {t:?} is not a valid host:port (no scheme or path here; use scheme and metrics_path)"
                ));
            }
        }
    }
    for f in &r.file_sd_configs {
        for p in &f.files {
            let base = Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            let ok = [".json", ".yml", ".yaml"]
                .iter()
                .any(|ext| base.ends_with(ext));
            if !ok {
                return Err(format!(
                    "{at}: file_sd_configs file {p:?} must end in .json, .yml or .yaml"
                ));
            }
        }
    }
    for d in &r.dns_sd_configs {
        if d.names.is_empty() {
            return Err(format!("{at}: dns_sd_configs needs at least one name"));
        }
        match d.record_type {
            DnsRecordType::Srv => {}
            DnsRecordType::A | DnsRecordType::Aaaa if d.port == 0 => {
                return Err(format!("{at}: dns_sd_configs of type A/AAAA need a port"));
            }
            DnsRecordType::A | DnsRecordType::Aaaa => {}
            DnsRecordType::Mx | DnsRecordType::Ns => {
                return Err(format!(
                    "{at}: dns_sd_configs type MX/NS is not supported (SRV, A or AAAA)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_resources_section() {
        let c = Config::parse(
            "global:\n  external_labels: {cluster: a}\nmonitoring_resources:\n  namespace: monitoring\n  serviceMonitorSelector: {}\n  externalLabels: {region: eu, cluster: a}\n  scrapeInterval: 15s\n  scrapeTimeout: 5s\n  ruleSelector: {}\n",
        )
        .unwrap();
        assert_eq!(
            c.external_labels,
            Labels::from_pairs([("cluster", "a"), ("region", "eu")])
        );
        let m = c.monitoring_resources.as_ref().unwrap();
        assert_eq!(m.scrape_interval, Duration::from_secs(15));
        assert_eq!(m.scrape_timeout, Some(Duration::from_secs(5)));
        assert!(
            c.warnings.iter().any(|w| w.contains("ruleSelector")),
            "{:?}",
            c.warnings
        );
        let e = Config::parse(
            "global:\n  external_labels: {cluster: a}\nmonitoring_resources:\n  externalLabels: {cluster: b}\n",
        )
        .unwrap_err();
        assert!(
            e.message.contains("monitoring_resources.externalLabels"),
            "{}",
            e.message
        );
        let e = Config::parse("monitoring_resources:\n  serviceMonitorSelecter: {}\n").unwrap_err();
        assert!(
            e.message.contains("serviceMonitorSelecter"),
            "{}",
            e.message
        );
        // A Prometheus file without the section is what it was.
        assert!(
            Config::parse("global: {}\n")
                .unwrap()
                .monitoring_resources
                .is_none()
        );
    }

    /// Issue 23: the file takes the one duration grammar (`meridian_core::promfmt`) and the one size
    /// parser, as the flags do.
    #[test]
    fn durations_and_sizes_in_the_file_use_the_shared_parsers() {
        let job = |global: &str| {
            format!(
                "global:\n{global}\nscrape_configs:\n  - job_name: a\n    static_configs: [{{targets: [\"x:1\"]}}]\n"
            )
        };
        let e = Config::parse(&job("  scrape_interval: 30s1m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("30s1m"), "{e}");
        let c = Config::parse(&job("  scrape_interval: 1m30s\n  body_size_limit: 1KB")).unwrap();
        assert_eq!(c.scrape_configs[0].scrape_interval, Duration::from_secs(90));
        assert_eq!(c.scrape_configs[0].body_size_limit, 1024);
        let e = Config::parse(&job("  body_size_limit: 10XB"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("body_size_limit") && e.contains("XB"), "{e}");
    }

    #[test]
    fn defaults_and_inheritance() {
        let c = Config::parse(
            "global:\n  scrape_interval: 5s\n  external_labels: {cluster: a}\nscrape_configs:\n  - job_name: x\n    static_configs: [{targets: ['h:1']}]\n  - job_name: y\n    scrape_interval: 1m\n",
        )
        .unwrap();
        let x = &c.scrape_configs[0];
        assert_eq!(x.scrape_interval, Duration::from_secs(5));
        assert_eq!(x.scrape_timeout, Duration::from_secs(5));
        assert_eq!(x.metrics_path, "/metrics");
        assert!(x.honor_timestamps);
        assert_eq!(c.scrape_configs[1].scrape_timeout, Duration::from_secs(5));
        assert_eq!(c.external_labels.get("cluster"), Some("a"));
        assert_eq!(x.line, 5);
        let empty = Config::parse("").unwrap();
        assert_eq!(empty.global.scrape_interval.0, Duration::from_secs(60));
    }

    #[test]
    fn ignored_sections_are_named() {
        let c = Config::parse(
            "rule_files: [a.yml]\nalerting: {alertmanagers: []}\nremote_write: [{url: 'http://x'}]\n",
        )
        .unwrap();
        assert_eq!(c.ignored_sections, ["rule_files", "alerting"]);
        assert_eq!(c.remote_write[0].url, "http://x");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                "scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n",
                "scrape_intervall",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n",
                "line 3",
            ),
            ("globall: {}\n", "globall"),
            (
                "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
                "already used at line 2",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
                "greater than scrape_interval",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 5x\n",
                "unknown unit \"x\" in duration \"5x\"",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs: [{action: hashmod, target_label: x}]\n",
                "modulus",
            ),
            ("global:\n  external_labels: {\"a-b\": x}\n", "\"a-b\""),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['http://h:1/metrics']}]\n",
                "not a valid host:port",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u}\n    bearer_token: t\n",
                "at most one",
            ),
        ];
        for (y, want) in cases {
            let e = Config::parse(y).unwrap_err().to_string();
            assert!(e.contains(want), "{y}\n=> {e}");
        }
    }

    #[test]
    fn env_substitution() {
        let env = |k: &str| (k == "POD_NAME").then(|| "edge-0".to_string());
        let c = Config::parse_with_env(
            "global:\n  external_labels:\n    replica: $(POD_NAME)\n    x: $(\n",
            env,
        )
        .unwrap();
        assert_eq!(c.external_labels.get("replica"), Some("edge-0"));
        assert_eq!(c.external_labels.get("x"), Some("$("));
        let e = Config::parse_with_env("global:\n  external_labels:\n    r: $(NOPE)\n", env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("\"NOPE\""), "{e}");
    }

    #[test]
    fn sizes() {}
}
