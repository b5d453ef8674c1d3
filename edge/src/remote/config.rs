//! `remote_write:` entries, with Prometheus v2.42's defaults and checks (`config/config.go`:
//! `DefaultRemoteWriteConfig`, `DefaultQueueConfig`, `DefaultMetadataConfig`, `RemoteWriteConfig`'s
//! `UnmarshalYAML`, and the HTTP client fields of `prometheus/common` v0.39).
//!
//! Not supported, refused with their name: `sigv4`, `oauth2`, `send_native_histograms: true` (the
//! edge stores no native histograms yet). `send_exemplars` is accepted (the edge stores no exemplars,
//! so there is nothing to send). `follow_redirects` and `enable_http2` are accepted; writes go over
//! HTTP/1.1 without redirects.
//!
//! A queue's `remote_name` is its `name`, or else the first 6 hex digits of an MD5 over its URL and
//! queue settings. Prometheus hashes the entry's Go YAML marshalling, which cannot be reproduced byte
//! for byte here, so unnamed queues get other names than in Prometheus: name queues whose metrics
//! matter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use meridian_core::http_config::{Auth, Authorization, BasicAuth, TlsConfig};
use meridian_core::promfmt::PromDuration;
use meridian_core::relabel::RelabelConfig;

/// `queue_config:` (defaults of v2.42 `DefaultQueueConfig`; `retry_on_http_429` defaults to false).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub capacity: usize,
    pub max_shards: usize,
    pub min_shards: usize,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: PromDuration,
    pub min_backoff: PromDuration,
    pub max_backoff: PromDuration,
    pub retry_on_http_429: bool,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            capacity: 2500,
            max_shards: 200,
            min_shards: 1,
            max_samples_per_send: 500,
            batch_send_deadline: PromDuration(Duration::from_secs(5)),
            min_backoff: PromDuration(Duration::from_millis(30)),
            max_backoff: PromDuration(Duration::from_secs(5)),
            retry_on_http_429: false,
        }
    }
}

/// `metadata_config:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub send: bool,
    pub send_interval: PromDuration,
    pub max_samples_per_send: usize,
}

impl Default for MetadataConfig {
    fn default() -> MetadataConfig {
        MetadataConfig {
            send: true,
            send_interval: PromDuration(Duration::from_secs(60)),
            max_samples_per_send: 500,
        }
    }
}

/// One `remote_write:` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteWrite {
    url: Option<Spanned<String>>,
    name: Option<String>,
    remote_timeout: Option<PromDuration>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    send_exemplars: bool,
    #[serde(default)]
    send_native_histograms: bool,
    #[serde(default)]
    queue_config: QueueConfig,
    #[serde(default)]
    metadata_config: MetadataConfig,
    sigv4: Option<IgnoredAny>,
    oauth2: Option<IgnoredAny>,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    tls_config: TlsConfig,
    proxy_url: Option<String>,
    proxy_connect_header: Option<IgnoredAny>,
    follow_redirects: Option<bool>,
    enable_http2: Option<bool>,
}

/// One resolved `remote_write:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    /// The `remote_name` label: `name`, or a hash (see the module documentation).
    pub name: String,
    pub url: http::Uri,
    /// Where the entry is written (for messages).
    pub line: u64,
    pub remote_timeout: Duration,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub write_relabel_configs: Vec<RelabelConfig>,
    pub auth: Auth,
    pub tls_config: TlsConfig,
    /// `host:port` of an HTTP proxy.
    pub proxy_url: Option<http::Uri>,
    pub queue: QueueConfig,
    pub metadata: MetadataConfig,
}

impl RemoteWriteConfig {
    /// The URL as the `url` label shows it (the password of a URL's user info replaced, as Go's
    /// `URL.Redacted`).
    pub fn url_label(&self) -> String {
        let s = self.url.to_string();
        match self.url.authority().map(|a| a.as_str()) {
            Some(a) if a.contains('@') => {
                let userinfo = &a[..a.rfind('@').unwrap_or(0)];
                match userinfo.split_once(':') {
                    Some((user, _)) => s.replacen(userinfo, &format!("{user}:xxxxx"), 1),
                    None => s,
                }
            }
            _ => s,
        }
    }

    /// A key that stays the same while the entry keeps its name and URL (names the queue's progress
    /// file).
    pub fn progress_key(&self) -> String {
        use md5::Digest;
        let digest = md5::Md5::digest(format!("{}\n{}", self.name, self.url).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Headers the entry may not set (v2.42 `reservedHeaders`, compared in lower case).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Resolves every entry in order (`index`: its position, for messages without a line).
pub(crate) fn resolve_all(raw: Vec<RawRemoteWrite>) -> Result<Vec<RemoteWriteConfig>, String> {
    let mut out: Vec<RemoteWriteConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let c = resolve(r, i)?;
        if let Some(prev) = out.iter().find(|p| p.name == c.name) {
            return Err(format!(
                "remote_write (line {}): found multiple remote write configs with name {:?} (also at line {})",
                c.line, c.name, prev.line
            ));
        }
        out.push(c);
    }
    Ok(out)
}

fn resolve(r: RawRemoteWrite, index: usize) -> Result<RemoteWriteConfig, String> {
    let Some(url) = r.url else {
        return Err(format!(
            "remote_write entry {}: url for remote_write is empty",
            index + 1
        ));
    };
    let line = url.referenced.line();
    let at = format!("remote_write (url {:?}, line {line})", url.value);
    let uri: http::Uri = url.value.parse().map_err(|e| format!("{at}: url: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{at}: url must be an absolute http:// or https:// URL"
        ));
    }
    if r.sigv4.is_some() {
        return Err(format!("{at}: sigv4 is not supported"));
    }
    if r.oauth2.is_some() {
        return Err(format!("{at}: oauth2 is not supported"));
    }
    if r.proxy_connect_header.is_some() {
        return Err(format!("{at}: proxy_connect_header is not supported"));
    }
    if r.send_native_histograms {
        return Err(format!(
            "{at}: send_native_histograms is not supported (the edge stores no native histograms)"
        ));
    }
    let _ = (r.send_exemplars, r.follow_redirects, r.enable_http2);
    let mut headers = Vec::with_capacity(r.headers.len());
    for (k, v) in &r.headers {
        let lower = k.to_ascii_lowercase();
        if lower == "authorization" {
            return Err(format!(
                "{at}: authorization header must be changed via the basic_auth, authorization, oauth2, or sigv4 parameter"
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{at}: {k} is a reserved header. It must not be changed"
            ));
        }
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("{at}: headers: {k:?}: {e}"))?;
        let value =
            http::HeaderValue::from_str(v).map_err(|e| format!("{at}: headers: {k}: {e}"))?;
        headers.push((name, value));
    }
    let auth = Auth::from_config(
        r.basic_auth.as_ref(),
        r.authorization.as_ref(),
        r.bearer_token.as_ref(),
        r.bearer_token_file.as_ref(),
    )
    .map_err(|e| format!("{at}: {e}"))?;
    let proxy_url = crate::config::parse_proxy_url(&at, r.proxy_url.as_deref())?;
    let q = &r.queue_config;
    for (v, field) in [
        (q.capacity, "capacity"),
        (q.max_shards, "max_shards"),
        (q.min_shards, "min_shards"),
        (q.max_samples_per_send, "max_samples_per_send"),
    ] {
        if v == 0 {
            return Err(format!("{at}: queue_config.{field} must be greater than 0"));
        }
    }
    if q.min_shards > q.max_shards {
        return Err(format!(
            "{at}: queue_config.min_shards ({}) is greater than max_shards ({})",
            q.min_shards, q.max_shards
        ));
    }
    if q.batch_send_deadline.0.is_zero() {
        return Err(format!(
            "{at}: queue_config.batch_send_deadline must be greater than 0"
        ));
    }
    if q.min_backoff > q.max_backoff {
        return Err(format!(
            "{at}: queue_config.min_backoff ({}) is greater than max_backoff ({})",
            q.min_backoff, q.max_backoff
        ));
    }
    let m = &r.metadata_config;
    if m.send && (m.send_interval.0.is_zero() || m.max_samples_per_send == 0) {
        return Err(format!(
            "{at}: metadata_config.send_interval and max_samples_per_send must be greater than 0"
        ));
    }
    let remote_timeout = r.remote_timeout.map_or(Duration::from_secs(30), |d| d.0);
    if remote_timeout.is_zero() {
        return Err(format!("{at}: remote_timeout must be greater than 0"));
    }
    let name = match r.name {
        Some(n) if !n.is_empty() => n,
        _ => {
            use md5::Digest;
            let digest =
                md5::Md5::digest(format!("{}\n{:?}", url.value, r.queue_config).as_bytes());
            digest.iter().take(3).map(|b| format!("{b:02x}")).collect()
        }
    };
    Ok(RemoteWriteConfig {
        name,
        url: uri,
        line,
        remote_timeout,
        headers,
        write_relabel_configs: r.write_relabel_configs,
        auth,
        tls_config: r.tls_config,
        proxy_url,
        queue: r.queue_config,
        metadata: r.metadata_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<RemoteWriteConfig>, String> {
        let raw: Vec<RawRemoteWrite> = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        resolve_all(raw)
    }

    #[test]
    fn defaults_are_prometheus_2_42s() {
        let c = parse("- url: http://r:9090/api/v1/write\n").unwrap();
        let c = &c[0];
        assert_eq!(c.remote_timeout, Duration::from_secs(30));
        assert_eq!(c.queue, QueueConfig::default());
        assert_eq!(c.queue.capacity, 2500);
        assert_eq!(c.queue.max_shards, 200);
        assert_eq!(c.queue.max_samples_per_send, 500);
        assert!(!c.queue.retry_on_http_429);
        assert!(c.metadata.send);
        assert_eq!(c.name.len(), 6);
        assert_eq!(c.line, 1);
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for (yaml, want) in [
            ("- name: a\n", "url for remote_write is empty"),
            ("- url: ftp://x/\n", "absolute http"),
            (
                "- url: http://x/\n  headers: {Authorization: x}\n",
                "authorization header",
            ),
            (
                "- url: http://x/\n  headers: {User-Agent: x}\n",
                "User-Agent is a reserved header",
            ),
            ("- url: http://x/\n  sigv4: {}\n", "sigv4"),
            (
                "- url: http://x/\n  queue_config: {min_shards: 5, max_shards: 2}\n",
                "min_shards (5) is greater than max_shards (2)",
            ),
            (
                "- url: http://x/\n  queue_config: {capacityy: 5}\n",
                "capacityy",
            ),
            (
                "- {url: http://x/, name: a}\n- {url: http://y/, name: a}\n",
                "multiple remote write configs with name \"a\"",
            ),
            (
                "- url: http://x/\n  bearer_token: a\n  basic_auth: {username: u}\n",
                "at most one",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn url_label_redacts_the_password() {
        let c = parse("- url: http://u:secret@x:1/w\n").unwrap();
        assert_eq!(c[0].url_label(), "http://u:xxxxx@x:1/w");
    }
}
