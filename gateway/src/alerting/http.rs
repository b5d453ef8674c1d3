//! The HTTP client alerts leave by: to Alertmanagers and to webhooks, plain or over TLS, with
//! Prometheus' `http_config` (`tls_config`, `basic_auth`, `authorization`, `bearer_token(_file)`).
//!
//! The TLS and authorization pieces are the edge scraper's (`meridian_edge::scrape::http`), so both
//! read `tls_config` the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meridian_core::http_config::{Auth, Authorization, BasicAuth, TlsConfig};
use meridian_pki::http_client::{authorization_header, host_only, tls_client_config};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Deserialize;

/// Prometheus' `http_config` (`common/config.HTTPClientConfig`), the parts a POST of alerts uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// Accepted: POSTs of alerts are not redirected.
    pub follow_redirects: Option<bool>,
    /// Accepted: alerts go over HTTP/1.1.
    pub enable_http2: Option<bool>,
    /// Refused.
    pub proxy_url: Option<String>,
}

/// A client for one `http_config`, its TLS material loaded (so a bad certificate is an error at start,
/// naming the file).
#[derive(Clone)]
pub struct HttpClient {
    config: HttpConfig,
    auth: Auth,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PartialEq for HttpClient {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            config: HttpConfig::default(),
            auth: Auth::None,
            tls: None,
        }
    }
}

/// A failed POST: the HTTP status when an answer came.
#[derive(Debug, Clone)]
pub struct PostError {
    pub status: Option<u16>,
    pub message: String,
}

fn neterr(message: String) -> PostError {
    PostError {
        status: None,
        message,
    }
}

impl HttpClient {
    /// Checks `config` and loads its TLS material when `https` is to be used.
    pub fn new(config: HttpConfig, https: bool) -> Result<HttpClient, String> {
        if let Some(p) = &config.proxy_url {
            return Err(format!("proxy_url {p:?}: proxies are not supported"));
        }
        let auth = Auth::from_config(
            config.basic_auth.as_ref(),
            config.authorization.as_ref(),
            config.bearer_token.as_ref(),
            config.bearer_token_file.as_ref(),
        )?;
        let tls = if https {
            Some(tls_client_config(&config.tls_config)?)
        } else {
            None
        };
        Ok(HttpClient { config, auth, tls })
    }

    /// POSTs a JSON body within `timeout`; any status but 2xx is an error.
    pub async fn post(&self, url: &str, body: Bytes, timeout: Duration) -> Result<(), PostError> {
        tokio::time::timeout(timeout, self.post_inner(url, body))
            .await
            .map_err(|_| neterr(format!("timed out after {timeout:?}")))?
    }

    async fn post_inner(&self, url: &str, body: Bytes) -> Result<(), PostError> {
        let uri: http::Uri = url.parse().map_err(|e| neterr(format!("{url}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(neterr(format!("{url}: the scheme must be http or https"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| neterr(format!("{url}: missing host")))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let auth = authorization_header(&self.auth).await.map_err(neterr)?;
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| neterr(format!("dial tcp {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut req = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("Meridian/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = &auth {
            req = req.header(http::header::AUTHORIZATION, a.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| neterr(e.to_string()))?;
        if https {
            let tls = match &self.tls {
                Some(t) => t.clone(),
                // A plain `http_config` given for an https URL: the system roots.
                None => tls_client_config(&TlsConfig::default()).map_err(neterr)?,
            };
            let name = self
                .config
                .tls_config
                .server_name
                .clone()
                .unwrap_or_else(|| host_only(&authority));
            let sn = ServerName::try_from(name.clone())
                .map_err(|e| neterr(format!("invalid server name {name:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(sn, tcp)
                .await
                .map_err(|e| neterr(format!("TLS handshake with {authority}: {e}")))?;
            send(TokioIo::new(stream), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    }
}

async fn send<T>(io: T, req: http::Request<Full<Bytes>>) -> Result<(), PostError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| neterr(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| neterr(e.to_string()))?;
    let status = resp.status();
    let text = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    driver.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError {
            status: Some(status.as_u16()),
            message: format!(
                "{status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ),
        })
    }
}
