//! The Prometheus the sidecar sits beside, through its HTTP API (the calls of Thanos'
//! `pkg/promclient`, v0.25.1): its external labels from `/api/v1/status/config`, and the oldest
//! sample it holds from its own `prometheus_tsdb_lowest_timestamp_seconds`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use crate::scrape::http::Dialer;
use meridian_core::http_config::Auth;
use meridian_core::labels::Labels;

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
#[derive(Debug)]
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

    /// `<method> <base><path>` without a body, on a new connection; the status and the body (up to
    /// 64 MiB).
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let auth = meridian_pki::http_client::authorization_header(&self.auth).await?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::HOST, self.authority.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("Meridian-sidecar/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = auth {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let mut conn = self
            .dialer
            .connect::<Empty<Bytes>>(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
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
}

#[derive(serde::Deserialize)]
struct ConfigAnswer {
    status: String,
    data: Option<ConfigData>,
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
    let a: ConfigAnswer =
        serde_json::from_slice(body).map_err(|e| format!("not a config answer: {e}"))?;
    let data = match (a.status.as_str(), a.data) {
        ("success", Some(d)) => d,
        (s, _) => return Err(format!("status {s:?} without the config")),
    };
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
