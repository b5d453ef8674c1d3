//! The HTTP client a scrape job uses: `scheme`, `basic_auth`, `authorization` / `bearer_token(_file)`,
//! `tls_config` (CA, client certificate, `server_name`, `insecure_skip_verify`), redirects, gzip, the body
//! size limit, and Prometheus' request headers. Each scrape loop keeps its own HTTP/1.1 connection alive
//! between scrapes, as Prometheus' per-pool transport does.
//!
//! Credential files (`password_file`, `credentials_file`, `bearer_token_file`) are read at every scrape, so
//! rotated tokens take effect without a reload, as in Prometheus.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::parse::SCRAPE_ACCEPT_HEADER;
use crate::config::ScrapeConfig;
use meridian_core::http_config::Auth;
use meridian_pki::http_client::{authorization_header, host_only, tls_client_config};

/// Why a scrape request failed (the message becomes the target's `lastError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Connect(String),
    #[error("server returned HTTP status {0}")]
    Status(String),
    #[error("body size limit exceeded ({0} bytes)")]
    TooLarge(u64),
    #[error("context deadline exceeded (scrape_timeout {0:?})")]
    Timeout(Duration),
    #[error("{0}")]
    Other(String),
}

/// A successful response.
#[derive(Debug)]
pub struct Response {
    pub content_type: String,
    pub body: Bytes,
}

/// A job's client; cheap to share between its scrape loops.
#[derive(Debug)]
pub struct HttpClient {
    https: bool,
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
    auth: Auth,
    follow_redirects: bool,
    body_limit: u64,
    user_agent: String,
    /// The formats asked for, in order: protobuf first when the job scrapes native histograms.
    accept: &'static str,
    /// `proxy_url`: `host:port` of an HTTP proxy.
    proxy: Option<String>,
}

/// A kept-alive connection, owned by one scrape loop.
#[derive(Debug, Default)]
pub struct Conn {
    inner: Option<(String, SendRequest<Empty<Bytes>>)>,
}

impl HttpClient {
    pub fn new(cfg: &ScrapeConfig) -> Result<HttpClient, String> {
        let https = cfg.scheme == "https";
        let t = &cfg.tls_config;
        let needs_tls = https;
        let tls = if needs_tls {
            Some(tls_client_config(t)?)
        } else {
            None
        };
        Ok(HttpClient {
            https,
            tls,
            server_name: t.server_name.clone(),
            auth: cfg.auth.clone(),
            follow_redirects: cfg.follow_redirects,
            body_limit: cfg.body_size_limit,
            user_agent: format!("Meridian-edge/{}", env!("CARGO_PKG_VERSION")),
            accept: if cfg.native_histograms {
                super::protobuf::NATIVE_ACCEPT_HEADER
            } else {
                SCRAPE_ACCEPT_HEADER
            },
            proxy: cfg.proxy_url.as_ref().and_then(|u| {
                let host = u.host()?;
                Some(format!("{host}:{}", u.port_u16().unwrap_or(80)))
            }),
        })
    }

    async fn authorization(&self) -> Result<Option<String>, HttpError> {
        authorization_header(&self.auth)
            .await
            .map_err(HttpError::Other)
    }

    /// GETs `host` + `path_and_query` within `timeout`.
    pub async fn get(
        &self,
        conn: &mut Conn,
        host: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        match tokio::time::timeout(timeout, self.get_inner(conn, host, path_and_query, timeout))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                // The connection may be mid-response: never reuse it.
                conn.inner = None;
                Err(HttpError::Timeout(timeout))
            }
        }
    }

    async fn get_inner(
        &self,
        conn: &mut Conn,
        host: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let auth = self.authorization().await?;
        let mut host = host.to_owned();
        let mut path = path_and_query.to_owned();
        for _redirect in 0..10 {
            // Through a proxy, plain HTTP requests carry the absolute URL (RFC 9112 absolute-form).
            let target = match &self.proxy {
                Some(_) if !self.https => format!("http://{host}{path}"),
                _ => path.clone(),
            };
            let mut req = http::Request::get(target.as_str())
                .header(http::header::HOST, host.as_str())
                .header(http::header::ACCEPT, self.accept)
                .header(http::header::ACCEPT_ENCODING, "gzip")
                .header(http::header::USER_AGENT, self.user_agent.as_str())
                .header(
                    "X-Prometheus-Scrape-Timeout-Seconds",
                    format!("{}", timeout.as_secs_f64()),
                );
            if let Some(a) = &auth {
                req = req.header(http::header::AUTHORIZATION, a.as_str());
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| HttpError::Other(format!("invalid request: {e}")))?;
            let sender = self.connection(conn, &host).await?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    conn.inner = None;
                    return Err(HttpError::Connect(format!("request to {host} failed: {e}")));
                }
            };
            let status = resp.status();
            if status.is_redirection() && self.follow_redirects {
                let loc = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| HttpError::Status(format!("{status} without Location")))?
                    .to_owned();
                drain(resp.into_body()).await;
                let scheme = if self.https { "https://" } else { "http://" };
                if let Some(rest) = loc.strip_prefix(scheme) {
                    let (h, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    host = h.to_owned();
                    path = if p.is_empty() { "/".into() } else { p.into() };
                } else if loc.starts_with('/') {
                    path = loc;
                } else {
                    return Err(HttpError::Other(format!(
                        "redirect to {loc:?} is not followed (only same-scheme redirects are)"
                    )));
                }
                continue;
            }
            if !status.is_success() {
                drain(resp.into_body()).await;
                let reason = status.canonical_reason().unwrap_or("");
                return Err(HttpError::Status(format!("{} {reason}", status.as_u16())));
            }
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let gzip = resp
                .headers()
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let limit = if self.body_limit == 0 {
                usize::MAX
            } else {
                usize::try_from(self.body_limit).unwrap_or(usize::MAX)
            };
            let body = match Limited::new(resp.into_body(), limit).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    conn.inner = None;
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        return Err(HttpError::TooLarge(self.body_limit));
                    }
                    return Err(HttpError::Connect(format!("reading body: {e}")));
                }
            };
            let body = if gzip {
                let mut out = Vec::with_capacity(body.len() * 4);
                let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
                flate2::read::GzDecoder::new(&body[..])
                    .take(cap)
                    .read_to_end(&mut out)
                    .map_err(|e| HttpError::Other(format!("gzip: {e}")))?;
                if out.len() > limit {
                    return Err(HttpError::TooLarge(self.body_limit));
                }
                Bytes::from(out)
            } else {
                body
            };
            return Ok(Response { content_type, body });
        }
        Err(HttpError::Other("stopped after 10 redirects".into()))
    }

    async fn connection<'c>(
        &self,
        conn: &'c mut Conn,
        host: &str,
    ) -> Result<&'c mut SendRequest<Empty<Bytes>>, HttpError> {
        let mut reusable = matches!(&conn.inner, Some((h, s)) if h == host && !s.is_closed());
        if reusable && let Some((_, s)) = conn.inner.as_mut() {
            // A kept-alive connection the server closed in the meantime fails here, not mid-request.
            reusable = s.ready().await.is_ok();
        }
        if !reusable {
            conn.inner = None;
            let sender = self.connect(host).await?;
            conn.inner = Some((host.to_owned(), sender));
        }
        match conn.inner.as_mut() {
            Some((_, s)) => Ok(s),
            None => Err(HttpError::Connect(format!("no connection to {host}"))),
        }
    }

    async fn connect(&self, host: &str) -> Result<SendRequest<Empty<Bytes>>, HttpError> {
        Dialer {
            tls: self.tls.clone(),
            server_name: self.server_name.clone(),
            proxy: self.proxy.clone(),
        }
        .connect(host)
        .await
    }
}

/// `host:port` of a URL for [`Dialer::connect`] and the `Host` header: the scheme's port when none
/// is given, an IPv6 address in brackets.
pub fn authority(url: &http::Uri) -> String {
    let https = url.scheme_str() == Some("https");
    let host = url.host().unwrap_or("localhost");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens HTTP/1.1 connections: TCP (through an HTTP proxy when set: a `CONNECT` tunnel for TLS),
/// then TLS when configured. Shared by scrapes and remote write.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub tls: Option<Arc<ClientConfig>>,
    /// `tls_config.server_name`; default: the host.
    pub server_name: Option<String>,
    /// `host:port` of an HTTP proxy.
    pub proxy: Option<String>,
}

impl Dialer {
    /// A connection to `host` (`host:port`) for requests with bodies of type `B`.
    pub async fn connect<B>(&self, host: &str) -> Result<SendRequest<B>, HttpError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let dial = self.proxy.as_deref().unwrap_or(host);
        let mut tcp = TcpStream::connect(dial)
            .await
            .map_err(|e| HttpError::Connect(format!("dial tcp {dial}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if self.proxy.is_some() && self.tls.is_some() {
            connect_tunnel(&mut tcp, host).await?;
        }
        if let Some(tls) = &self.tls {
            let name = self.server_name.clone().unwrap_or_else(|| host_only(host));
            let sn = ServerName::try_from(name.clone())
                .map_err(|e| HttpError::Connect(format!("invalid server name {name:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(sn, tcp)
                .await
                .map_err(|e| HttpError::Connect(format!("TLS handshake with {host}: {e}")))?;
            handshake(TokioIo::new(stream)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

/// Opens a `CONNECT` tunnel to `host` through the proxy on `tcp`.
async fn connect_tunnel(tcp: &mut TcpStream, host: &str) -> Result<(), HttpError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| HttpError::Connect(format!("proxy CONNECT {host}: {e}")))?;
    // The response head, read byte by byte so nothing of the tunnel is consumed; bounded.
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 8192 {
            return Err(HttpError::Connect(format!(
                "proxy CONNECT {host}: response head too long"
            )));
        }
        let n = tcp
            .read(&mut b)
            .await
            .map_err(|e| HttpError::Connect(format!("proxy CONNECT {host}: {e}")))?;
        if n == 0 {
            return Err(HttpError::Connect(format!(
                "proxy CONNECT {host}: connection closed"
            )));
        }
        head.push(b[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if !code.starts_with('2') {
        return Err(HttpError::Connect(format!(
            "proxy CONNECT {host}: {status_line}"
        )));
    }
    Ok(())
}

async fn handshake<T, B>(io: T) -> Result<SendRequest<B>, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Connect(format!("HTTP handshake: {e}")))?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn drain(body: hyper::body::Incoming) {
    let _ = Limited::new(body, 64 * 1024).collect().await;
}

/// Go's `url.Values.Encode`: keys sorted, `QueryEscape` on keys and values.
pub fn encode_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let esc = |s: &str| {
        let mut o = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    o.push(b as char);
                }
                b' ' => o.push('+'),
                _ => o.push_str(&format!("%{b:02X}")),
            }
        }
        o
    };
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding_is_go_s() {
        let q = encode_query(&[
            ("module".into(), "http 2xx".into()),
            ("a".into(), "x/y&z".into()),
        ]);
        assert_eq!(q, "a=x%2Fy%26z&module=http+2xx");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_only("a.b:9100"), "a.b");
        assert_eq!(host_only("[::1]:9100"), "::1");
        assert_eq!(host_only("a.b"), "a.b");
    }
}
