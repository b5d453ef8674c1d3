//! The Prometheus the sidecar sits beside, through its HTTP API (the calls of Thanos'
//! `pkg/promclient`, v0.25.1): its external labels from `/api/v1/status/config`, and the oldest
//! sample it holds from its own `prometheus_tsdb_lowest_timestamp_seconds`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::scrape::http::Dialer;
use meridian_core::http_config::Auth;
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::series::MetricMeta;

/// Answers larger than this are refused (a Prometheus config or `/metrics` page is far smaller).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("GET {url}: {message}")]
    Request { url: String, message: String },
    #[error("GET {url}: status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: {message}")]
    Answer { url: String, message: String },
}

/// A client of one Prometheus (`--prometheus.url`).
#[derive(Debug, Clone)]
pub struct PromClient {
    dialer: Dialer,
    authority: String,
    scheme: String,
    /// The URL's path without a trailing slash ("" for the root).
    base: String,
    auth: Auth,
}

impl PromClient {
    pub fn new(url: &http::Uri, dialer: Dialer, auth: Auth) -> PromClient {
        PromClient {
            authority: crate::scrape::http::authority(url),
            scheme: url.scheme_str().unwrap_or("http").to_owned(),
            base: url.path().trim_end_matches('/').to_owned(),
            dialer,
            auth,
        }
    }

    /// The whole URL of `path` (for messages).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}{path}", self.scheme, self.authority, self.base)
    }

    /// `<method> <base><path>` with `headers` and `body`, on a new connection; the answer with its
    /// body still streaming.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let auth = meridian_pki::http_client::authorization_header(&self.auth).await?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::HOST, self.authority.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("Meridian-sidecar/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = auth {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let mut conn = self
            .dialer
            .connect::<Full<Bytes>>(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        conn.send_request(req).await.map_err(|e| e.to_string())
    }

    /// `<method> <base><path>` without a body, on a new connection; the status and the body (up to
    /// 64 MiB).
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let resp = self.request(method, path, &[], Bytes::new()).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET <base><path>`; the body of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Bytes, PromError> {
        let url = self.url(path);
        let (status, body) = self
            .send(http::Method::GET, path)
            .await
            .map_err(|message| PromError::Request {
                url: url.clone(),
                message,
            })?;
        if status != http::StatusCode::OK {
            return Err(PromError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        Ok(body)
    }

    /// `global.external_labels` of the running config (`/api/v1/status/config`).
    pub async fn external_labels(&self) -> Result<Labels, PromError> {
        let path = "/api/v1/status/config";
        let body = self.get(path).await?;
        external_labels_of(&body).map_err(|message| PromError::Answer {
            url: self.url(path),
            message,
        })
    }

    /// The oldest sample's time (ms) from `prometheus_tsdb_lowest_timestamp_seconds` on `/metrics`;
    /// `i64::MIN` while Prometheus holds no sample (it reports the largest int64 then), as Thanos.
    pub async fn lowest_timestamp_ms(&self) -> Result<i64, PromError> {
        let body = self.get("/metrics").await?;
        lowest_timestamp_of(&body).map_err(|message| PromError::Answer {
            url: self.url("/metrics"),
            message,
        })
    }

    /// The `data` of a successful Prometheus API answer to `GET <path>`.
    async fn api<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, PromError> {
        let body = self.get(path).await?;
        api_data(&body).map_err(|message| PromError::Answer {
            url: self.url(path),
            message,
        })
    }

    /// The label sets of the series `matchers` select with samples in `[start, end]`
    /// (`/api/v1/series`); their own labels, without external labels.
    pub async fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, PromError> {
        let path = format!(
            "/api/v1/series?match[]={}&start={}&end={}",
            selector(matchers),
            api_time(start),
            api_time(end)
        );
        let sets: Vec<BTreeMap<String, String>> = self.api(&path).await?;
        Ok(sets.into_iter().map(Labels::from_pairs).collect())
    }

    /// Label names in `[start, end]` (`/api/v1/labels`), of the series `matchers` select (all
    /// series when empty).
    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, PromError> {
        let mut path = format!(
            "/api/v1/labels?start={}&end={}",
            api_time(start),
            api_time(end)
        );
        if !matchers.is_empty() {
            path.push_str(&format!("&match[]={}", selector(matchers)));
        }
        self.api(&path).await
    }

    /// Values of label `name` in `[start, end]` (`/api/v1/label/<name>/values`), among the series
    /// `matchers` select (all series when empty).
    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, PromError> {
        let mut path = format!(
            "/api/v1/label/{}/values?start={}&end={}",
            encode(name),
            api_time(start),
            api_time(end)
        );
        if !matchers.is_empty() {
            path.push_str(&format!("&match[]={}", selector(matchers)));
        }
        self.api(&path).await
    }

    /// TYPE/HELP/UNIT by metric family (`/api/v1/metadata`), of `metric` when not empty, at most
    /// `limit` families when positive.
    pub async fn metadata(
        &self,
        metric: &str,
        limit: i32,
    ) -> Result<BTreeMap<String, Vec<MetricMeta>>, PromError> {
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(rename = "type")]
            kind: String,
            help: String,
            unit: String,
        }
        let mut path = format!("/api/v1/metadata?limit={limit}");
        if !metric.is_empty() {
            path.push_str(&format!("&metric={}", encode(metric)));
        }
        let all: BTreeMap<String, Vec<Meta>> = self.api(&path).await?;
        Ok(all
            .into_iter()
            .map(|(name, metas)| {
                let metas = metas
                    .into_iter()
                    .map(|m| MetricMeta {
                        kind: m.kind,
                        help: m.help,
                        unit: m.unit,
                    })
                    .collect();
                (name, metas)
            })
            .collect())
    }

    /// Prometheus' command-line flags (`/api/v1/status/flags`).
    pub async fn flags(&self) -> Result<BTreeMap<String, String>, PromError> {
        self.api("/api/v1/status/flags").await
    }

    /// Prometheus' version (`/api/v1/status/buildinfo`).
    pub async fn version(&self) -> Result<String, PromError> {
        #[derive(serde::Deserialize)]
        struct BuildInfo {
            version: String,
        }
        let b: BuildInfo = self.api("/api/v1/status/buildinfo").await?;
        Ok(b.version)
    }

    /// Whether Prometheus answers `/-/ready` with 200.
    pub async fn ready(&self) -> bool {
        matches!(self.send(http::Method::GET, "/-/ready").await, Ok((s, _)) if s == http::StatusCode::OK)
    }
}

/// A query-string value, percent-encoded.
fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// `{a="b",c=~"d"}`, percent-encoded for a query string.
fn selector(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    encode(&format!("{{{}}}", inner.join(",")))
}

/// A time for the API (seconds with milliseconds), clamped to the years 1 to 9999 that Prometheus'
/// own `minTime`/`maxTime` span.
fn api_time(ms: i64) -> String {
    let ms = ms.clamp(-62_135_596_800_000, 253_402_300_799_000);
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    format!("{secs}.{frac:03}")
}

/// `data` of `{"status":"success","data":...}`; the error and its type otherwise.
fn api_data<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    #[derive(serde::Deserialize)]
    struct Answer<T> {
        status: String,
        data: Option<T>,
        #[serde(default, rename = "errorType")]
        error_type: String,
        #[serde(default)]
        error: String,
    }
    let a: Answer<T> =
        serde_json::from_slice(body).map_err(|e| format!("not an API answer: {e}"))?;
    match (a.status.as_str(), a.data) {
        ("success", Some(d)) => Ok(d),
        (s, _) => Err(format!("status {s:?}: {}: {}", a.error_type, a.error)),
    }
}

#[derive(serde::Deserialize)]
struct ConfigData {
    yaml: String,
}

/// Only what the sidecar reads of Prometheus' config; the rest is Prometheus' business.
#[derive(serde::Deserialize, Default)]
struct PartialConfig {
    #[serde(default)]
    global: PartialGlobal,
}

#[derive(serde::Deserialize, Default)]
struct PartialGlobal {
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
}

fn external_labels_of(body: &[u8]) -> Result<Labels, String> {
    let data: ConfigData = api_data(body)?;
    let cfg: PartialConfig = serde_saphyr::from_str(&data.yaml)
        .map_err(|e| format!("data.yaml: global.external_labels: {e}"))?;
    Ok(Labels::from_pairs(cfg.global.external_labels))
}

fn lowest_timestamp_of(body: &[u8]) -> Result<i64, String> {
    const NAME: &str = "prometheus_tsdb_lowest_timestamp_seconds";
    let text = std::str::from_utf8(body).map_err(|e| format!("not text: {e}"))?;
    let value = text
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(NAME)?;
            // The bare name: not a longer name, no labels.
            rest.starts_with(' ').then(|| rest.trim())
        })
        .ok_or_else(|| format!("{NAME} not found"))?;
    let secs: f64 = value
        .split(' ')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{NAME} value {value:?}: {e}"))?;
    // An empty TSDB reports math.MaxInt64 / 1000 (v2.42 `tsdb/db.go`, the head's min time then).
    if secs >= i64::MAX as f64 / 1000.0 {
        return Ok(i64::MIN);
    }
    // Rounded: the gauge is milliseconds / 1000 as a float.
    Ok((secs * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn answers_are_read_or_refused_by_what_is_wrong() {
        let body = br#"{"status":"success","data":{"yaml":"global:\n  scrape_interval: 15s\n  external_labels:\n    cluster: a\n    replica: prometheus-0\nscrape_configs: []\n"}}"#;
        assert_eq!(
            external_labels_of(body).unwrap(),
            Labels::from_pairs([("cluster", "a"), ("replica", "prometheus-0")])
        );
        let none = br#"{"status":"success","data":{"yaml":"global:\n  scrape_interval: 15s\n"}}"#;
        assert!(external_labels_of(none).unwrap().is_empty());
        assert!(
            external_labels_of(br#"{"status":"error"}"#)
                .unwrap_err()
                .contains("\"error\"")
        );
        let m = b"# HELP x\nprometheus_tsdb_lowest_timestamp_seconds_x 5\nprometheus_tsdb_lowest_timestamp_seconds 1.7000000001e+09\n";
        assert_eq!(lowest_timestamp_of(m).unwrap(), 1_700_000_000_100);
        let empty = b"prometheus_tsdb_lowest_timestamp_seconds 9.223372036854776e+15\n";
        assert_eq!(lowest_timestamp_of(empty).unwrap(), i64::MIN);
        assert!(
            lowest_timestamp_of(b"up 1\n")
                .unwrap_err()
                .contains("not found")
        );
    }
}
