//! The HTTP side of one remote-write queue: POSTs a snappy-compressed `WriteRequest` with Prometheus'
//! headers (v2.42 `storage/remote/client.go`) over a kept-alive HTTP/1.1 connection per shard, and
//! sorts the answer into sent, retry (network errors, 5xx, 429 when `retry_on_http_429`) and drop
//! (every other status).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use super::config::RemoteWriteConfig;
use crate::scrape::http::Dialer;
use meridian_core::http_config::Auth;
use meridian_pki::http_client::{authorization_header, tls_client_config};

/// Why a write was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying; `retry_after` when the server said how long to wait.
    #[error("{message}")]
    Recoverable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: the batch is dropped. `status`: the HTTP status, when one came.
    #[error("{message}")]
    NonRecoverable {
        message: String,
        status: Option<u16>,
    },
}

/// The error body is quoted up to this many bytes (v2.42 `maxErrMsgLen`).
const MAX_ERR_MSG_LEN: usize = 1024;

/// One queue's client.
#[derive(Debug)]
pub struct WriteClient {
    dialer: Dialer,
    /// `host:port` to connect to and the `Host` header.
    authority: String,
    /// The request target: the path, or the absolute URL through a plain-HTTP proxy.
    target: String,
    auth: Auth,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    timeout: Duration,
    retry_on_429: bool,
}

/// A kept-alive connection, owned by one shard.
#[derive(Debug, Default)]
pub struct Conn(Option<SendRequest<Full<Bytes>>>);

impl WriteClient {
    pub fn new(cfg: &RemoteWriteConfig) -> Result<WriteClient, String> {
        let https = cfg.url.scheme_str() == Some("https");
        let authority = crate::scrape::http::authority(&cfg.url);
        let path = cfg
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let proxy = cfg
            .proxy_url
            .as_ref()
            .and_then(|u| Some(format!("{}:{}", u.host()?, u.port_u16().unwrap_or(80))));
        let target = if proxy.is_some() && !https {
            format!("http://{authority}{path}")
        } else {
            path
        };
        let tls = if https {
            Some(
                tls_client_config(&cfg.tls_config)
                    .map_err(|e| format!("remote_write {}: tls_config: {e}", cfg.name))?,
            )
        } else {
            None
        };
        Ok(WriteClient {
            dialer: Dialer {
                tls,
                server_name: cfg.tls_config.server_name.clone(),
                proxy,
            },
            authority,
            target,
            auth: cfg.auth.clone(),
            headers: cfg.headers.clone(),
            timeout: cfg.remote_timeout,
            retry_on_429: cfg.queue.retry_on_http_429,
        })
    }

    /// Sends one compressed `WriteRequest` within `remote_timeout`.
    pub async fn store(&self, conn: &mut Conn, body: Bytes) -> Result<(), WriteError> {
        match tokio::time::timeout(self.timeout, self.store_inner(conn, body)).await {
            Ok(r) => r,
            Err(_) => {
                conn.0 = None;
                Err(WriteError::Recoverable {
                    message: format!(
                        "context deadline exceeded (remote_timeout {:?})",
                        self.timeout
                    ),
                    retry_after: None,
                })
            }
        }
    }

    async fn store_inner(&self, conn: &mut Conn, body: Bytes) -> Result<(), WriteError> {
        let recoverable = |message: String| WriteError::Recoverable {
            message,
            retry_after: None,
        };
        let auth = authorization_header(&self.auth).await.map_err(|message| {
            WriteError::NonRecoverable {
                message,
                status: None,
            }
        })?;
        let mut req = http::Request::post(self.target.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                http::header::USER_AGENT,
                concat!("Meridian-edge/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(a) = &auth {
            req = req.header(http::header::AUTHORIZATION, a.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| WriteError::NonRecoverable {
                message: format!("invalid request: {e}"),
                status: None,
            })?;
        let reusable = match conn.0.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            conn.0 = None;
            let s = self
                .dialer
                .connect::<Full<Bytes>>(&self.authority)
                .await
                .map_err(|e| recoverable(e.to_string()))?;
            conn.0 = Some(s);
        }
        let Some(sender) = conn.0.as_mut() else {
            return Err(recoverable(format!("no connection to {}", self.authority)));
        };
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                conn.0 = None;
                return Err(recoverable(format!("Post {:?}: {e}", self.target)));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The body is read (bounded) so the connection can be reused.
        let text = match Limited::new(resp.into_body(), 64 << 10).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                conn.0 = None;
                Bytes::new()
            }
        };
        if status.is_success() {
            return Ok(());
        }
        let first_line = String::from_utf8_lossy(&text[..text.len().min(MAX_ERR_MSG_LEN)])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let message = format!(
            "server returned HTTP status {} {}: {first_line}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        if status.is_server_error() || (status.as_u16() == 429 && self.retry_on_429) {
            Err(WriteError::Recoverable {
                message,
                retry_after,
            })
        } else {
            Err(WriteError::NonRecoverable {
                message,
                status: Some(status.as_u16()),
            })
        }
    }
}

/// Protobuf encoding of `prometheus.WriteRequest` (remote write 1.0), by hand: each series' labels
/// are encoded once, when its series record is read, and copied into every request that carries it.
pub mod wire {
    /// `prometheus.Label` entries of one series, each as `TimeSeries.labels` (field 1).
    pub fn encode_labels<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut label = Vec::new();
        for (n, v) in labels {
            label.clear();
            put_bytes(&mut label, 1, n.as_bytes());
            put_bytes(&mut label, 2, v.as_bytes());
            put_bytes(&mut out, 1, &label);
        }
        out
    }

    /// Appends one `WriteRequest.timeseries` entry (field 1) holding `labels` (from
    /// [`encode_labels`]) and one sample.
    pub fn put_series_sample(out: &mut Vec<u8>, labels: &[u8], t: i64, v: f64) {
        let sample_len = 1 + 8 + 1 + varint_len(t as u64);
        let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
        out.push(0x0a);
        put_varint(out, series_len as u64);
        out.extend_from_slice(labels);
        out.push(0x12);
        put_varint(out, sample_len as u64);
        out.push(0x09);
        out.extend_from_slice(&v.to_le_bytes());
        out.push(0x10);
        put_varint(out, t as u64);
    }

    fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
        out.push(field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn put_varint(out: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            out.push(x as u8 | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    fn varint_len(x: u64) -> usize {
        (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use meridian_storeapi::proto::prometheus::WriteRequest;
    use prost::Message;

    /// The hand encoding decodes as the generated message.
    #[test]
    fn hand_encoding_is_the_protobuf_message() {
        let a = encode_labels([("__name__", "up"), ("job", "x")].into_iter());
        let b = encode_labels([("__name__", "m"), ("v", &*"é".repeat(100))].into_iter());
        let mut buf = Vec::new();
        put_series_sample(&mut buf, &a, 1_700_000_000_123, 1.5);
        put_series_sample(&mut buf, &b, -5, f64::NAN);
        put_series_sample(&mut buf, &a, 0, -0.0);
        let w = WriteRequest::decode(&buf[..]).unwrap();
        assert_eq!(w.timeseries.len(), 3);
        assert_eq!(w.timeseries[0].labels[1].name, "job");
        assert_eq!(w.timeseries[0].samples[0].timestamp, 1_700_000_000_123);
        assert_eq!(w.timeseries[0].samples[0].value, 1.5);
        assert_eq!(w.timeseries[1].labels[1].value, "é".repeat(100));
        assert_eq!(w.timeseries[1].samples[0].timestamp, -5);
        assert!(w.timeseries[1].samples[0].value.is_nan());
        assert_eq!(
            w.timeseries[2].samples[0].value.to_bits(),
            (-0.0f64).to_bits()
        );
    }
}
