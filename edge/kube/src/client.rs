//! The API client: `api_server` with Prometheus' HTTP client settings, a `kubeconfig_file`, or the
//! pod's service account (in-cluster), as a `kubernetes_sd_configs` entry (or the `monitoring_resources`
//! section) describes it.
//!
//! Credentials that live in files (`bearer_token_file`, `authorization.credentials_file`,
//! `basic_auth.password_file`, the service-account token) are read for every request, so a rotated
//! bound token takes effect at the next request. client-go re-reads it once a minute; requests to the
//! API server are few (lists and long watches), so reading every time costs nothing and never sends a
//! token the server already stopped accepting.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use kube_client::Client;
use kube_client::client::ClientBuilder;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use meridian_core::http_config::{Auth, Authorization, BasicAuth, TlsConfig};
use meridian_core::net::dns::join_host_port;
use meridian_pki::http_client::authorization_header;

/// Where a pod finds its service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the API server is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApiSource {
    /// `api_server` with the HTTP client settings.
    Url {
        url: String,
        auth: AuthKey,
        tls: TlsKey,
        proxy_url: Option<String>,
    },
    /// `kubeconfig_file`: its current context.
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted token and CA).
    InCluster,
}

/// [`Auth`] as a hashable key (the registry shares one client per source).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthKey(pub String);

/// [`TlsConfig`] as a hashable key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsKey(pub String);

/// A resolved API client configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub source: ApiSource,
    pub auth: Auth,
    pub tls_config: TlsConfig,
}

/// The client settings as written (Prometheus' `kubernetes_sd_configs` keys).
#[derive(Debug, Clone, Default)]
pub struct ClientFields {
    pub api_server: Option<String>,
    pub kubeconfig_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub oauth2: bool,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
    pub proxy_url: Option<String>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
}

/// [`ClientFields`] from a raw config struct that has the same fields (`oauth2` an `Option`): the
/// `kubernetes_sd_configs` entry and the `monitoring_resources` section.
#[macro_export]
macro_rules! client_fields {
    ($r:expr) => {
        $crate::client::ClientFields {
            api_server: $r.api_server,
            kubeconfig_file: $r.kubeconfig_file,
            basic_auth: $r.basic_auth,
            authorization: $r.authorization,
            oauth2: $r.oauth2.is_some(),
            bearer_token: $r.bearer_token,
            bearer_token_file: $r.bearer_token_file,
            tls_config: $r.tls_config,
            proxy_url: $r.proxy_url,
            follow_redirects: $r.follow_redirects,
            enable_http2: $r.enable_http2,
        }
    };
}

impl ClientFields {
    /// Prometheus' checks (`discovery/kubernetes` `SDConfig.UnmarshalYAML`), with its messages;
    /// `section` starts each message.
    pub fn resolve(self, section: &str) -> Result<ClientConfig, String> {
        let custom_http = self.basic_auth.is_some()
            || self.authorization.is_some()
            || self.oauth2
            || self.bearer_token.is_some()
            || self.bearer_token_file.is_some()
            || self.tls_config.is_some()
            || self.proxy_url.is_some()
            || self.follow_redirects == Some(false)
            || self.enable_http2.is_some();
        if self.oauth2 {
            return Err(format!("{section}: oauth2 is not supported by Meridian"));
        }
        let auth = Auth::from_config(
            self.basic_auth.as_ref(),
            self.authorization.as_ref(),
            self.bearer_token.as_ref(),
            self.bearer_token_file.as_ref(),
        )
        .map_err(|e| format!("{section}: {e}"))?;
        let tls_config = self.tls_config.unwrap_or_default();
        let source = match (self.api_server, self.kubeconfig_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{section}: cannot use 'kubeconfig_file' and 'api_server' simultaneously"
                ));
            }
            (Some(url), None) => {
                check_url(section, "api_server", &url, &["http", "https"])?;
                if let Some(p) = &self.proxy_url {
                    check_url(section, "proxy_url", p, &["http", "https", "socks5"])?;
                }
                ApiSource::Url {
                    url: url.trim_end_matches('/').to_owned(),
                    auth: AuthKey(format!("{auth:?}")),
                    tls: TlsKey(format!("{tls_config:?}")),
                    proxy_url: self.proxy_url,
                }
            }
            (None, Some(path)) => {
                if custom_http {
                    return Err(format!(
                        "{section}: cannot use a custom HTTP client configuration together with 'kubeconfig_file'"
                    ));
                }
                ApiSource::Kubeconfig(path)
            }
            (None, None) => {
                if custom_http {
                    return Err(format!(
                        "{section}: to use custom HTTP client configuration please provide the 'api_server' URL explicitly"
                    ));
                }
                ApiSource::InCluster
            }
        };
        Ok(ClientConfig {
            source,
            auth,
            tls_config,
        })
    }
}

fn check_url(section: &str, field: &str, url: &str, schemes: &[&str]) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{section}: {field} {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some(s) if schemes.contains(&s) && uri.host().is_some() => Ok(()),
        _ => Err(format!(
            "{section}: {field} {url:?} must be an absolute URL with scheme {}",
            schemes.join(" or ")
        )),
    }
}

/// The client for `cfg` (`sa_dir`: the service-account directory for in-cluster use; `agent`: the
/// `User-Agent`, e.g. `Meridian-edge/0.1.0`).
pub async fn connect(cfg: &ClientConfig, sa_dir: &Path, agent: &str) -> Result<Client, String> {
    let (mut config, auth) = match &cfg.source {
        ApiSource::Url { url, proxy_url, .. } => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("api_server {url:?}: {e}"))?;
            let mut c = kube_client::Config::new(uri);
            apply_tls(&mut c, &cfg.tls_config)?;
            if let Some(p) = proxy_url {
                c.proxy_url = Some(p.parse().map_err(|e| format!("proxy_url {p:?}: {e}"))?);
            }
            (c, cfg.auth.clone())
        }
        ApiSource::Kubeconfig(path) => {
            let p = path.clone();
            let kc =
                tokio::task::spawn_blocking(move || kube_client::config::Kubeconfig::read_from(&p))
                    .await
                    .map_err(|e| format!("kubeconfig_file: {e}"))?
                    .map_err(|e| format!("kubeconfig_file {}: {e}", path.display()))?;
            let mut c = kube_client::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig_file {}: {e}", path.display()))?;
            // The kubeconfig's own credentials (token, client certificate, exec plugin) apply, but a
            // `tokenFile` is read here like every other credential file: per request and trimmed
            // (kube reads it once a minute and keeps a trailing newline, which the header refuses).
            let auth = match c.auth_info.token_file.take() {
                Some(f) => Auth::Header {
                    kind: "Bearer".into(),
                    credentials: None,
                    credentials_file: Some(f.into()),
                },
                None => Auth::None,
            };
            (c, auth)
        }
        ApiSource::InCluster => in_cluster(sa_dir, |k| std::env::var(k).ok())?,
    };
    config.headers.push((
        http::header::USER_AGENT,
        HeaderValue::from_str(agent).map_err(|e| format!("User-Agent {agent:?}: {e}"))?,
    ));
    let builder = ClientBuilder::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
    let builder = builder.with_layer(&tower::buffer::BufferLayer::new(1024));
    Ok(builder.with_layer(&AuthLayer(Arc::new(auth))).build())
}

/// client-go's `rest.InClusterConfig`: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the
/// service account's CA and token.
pub fn in_cluster(
    sa_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(kube_client::Config, Auth), String> {
    let (Some(host), Some(port)) = (
        env("KUBERNETES_SERVICE_HOST").filter(|s| !s.is_empty()),
        env("KUBERNETES_SERVICE_PORT").filter(|s| !s.is_empty()),
    ) else {
        return Err("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (or set api_server)".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))?;
    let url = format!("https://{}", join_host_port(&host, port));
    let mut c = kube_client::Config::new(url.parse().map_err(|e| format!("{url:?}: {e}"))?);
    let tls = TlsConfig {
        ca_file: Some(sa_dir.join("ca.crt")),
        ..TlsConfig::default()
    };
    apply_tls(&mut c, &tls)?;
    let token = sa_dir.join("token");
    if !token.exists() {
        return Err(format!(
            "in-cluster configuration: no service-account token at {}",
            token.display()
        ));
    }
    Ok((
        c,
        Auth::Header {
            kind: "Bearer".into(),
            credentials: None,
            credentials_file: Some(token),
        },
    ))
}

/// The pod's namespace, for `namespaces: {own_namespace: true}`.
pub fn own_namespace(sa_dir: &Path) -> Result<String, String> {
    let p = sa_dir.join("namespace");
    let s = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "could not determine the pod's namespace ({}): {e}",
            p.display()
        )
    })?;
    let s = s.trim();
    if s.is_empty() {
        return Err(format!(
            "could not read own namespace name ({} is empty)",
            p.display()
        ));
    }
    Ok(s.to_owned())
}

fn apply_tls(c: &mut kube_client::Config, t: &TlsConfig) -> Result<(), String> {
    if let Some(ca) = &t.ca_file {
        let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("tls_config.ca_file {}: {e}", ca.display()))?
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_config.ca_file {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls_config.ca_file {}: no certificate found",
                ca.display()
            ));
        }
        c.root_cert = Some(certs);
    }
    match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            c.auth_info.client_certificate = Some(cert.display().to_string());
            c.auth_info.client_key = Some(key.display().to_string());
        }
        (None, None) => {}
        _ => return Err("tls_config: cert_file and key_file must be given together".into()),
    }
    c.accept_invalid_certs = t.insecure_skip_verify;
    c.tls_server_name.clone_from(&t.server_name);
    Ok(())
}

/// Sets `Authorization` on every request from the configured credentials, read afresh.
#[derive(Debug, Clone)]
struct AuthLayer(Arc<Auth>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B, R> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is not ready; the ready one goes with this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if let Some(h) = authorization_header(&auth).await? {
                let mut v =
                    HeaderValue::from_str(&h).map_err(|e| format!("authorization header: {e}"))?;
                v.set_sensitive(true);
                req.headers_mut().insert(http::header::AUTHORIZATION, v);
            }
            inner.call(req).await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_needs_the_environment_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let e = in_cluster(dir.path(), |_| None).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
            _ => None,
        };
        let e = in_cluster(dir.path(), env).unwrap_err();
        assert!(e.contains("ca.crt"), "{e}");
        let e = own_namespace(dir.path()).unwrap_err();
        assert!(e.contains("namespace"), "{e}");
        std::fs::write(dir.path().join("namespace"), "monitoring\n").unwrap();
        assert_eq!(own_namespace(dir.path()).unwrap(), "monitoring");
    }
}
