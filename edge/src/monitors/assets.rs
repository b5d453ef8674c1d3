//! What a monitor refers to outside itself: Secrets and ConfigMaps (read beforehand into an
//! [`AssetStore`]), written into a job as the operator writes them (credentials inline, TLS material as
//! files named `<0|1>_<namespace>_<name>_<key>`), and the section's API client as the operator writes a
//! `Prometheus` resource's `apiserverConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::SecretKeySelector;

use super::generate::Context;
use super::yaml::{MapBuilder, Node, map, s};
use meridian_core::http_config::Auth;
use meridian_kube::client::ApiSource;
use meridian_kube::monitoring::{SecretOrConfigMap, TlsConfig};
use meridian_kube::resources::MonitoringResources;

/// Secrets and ConfigMaps a monitor refers to, read beforehand.
pub trait Assets {
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>>;
    fn config_map(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>>;
}

/// A map of Secrets' and ConfigMaps' data by `(namespace, name)`.
#[derive(Debug, Default)]
pub struct AssetStore {
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Assets for AssetStore {
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|d| d.get(key))
            .cloned()
    }

    fn config_map(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        self.config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|d| d.get(key))
            .cloned()
    }
}

pub(super) struct Gen<'a, 'b> {
    pub(super) ctx: &'a Context<'b>,
    pub(super) ns: &'a str,
    pub(super) files: Vec<(PathBuf, Vec<u8>)>,
}

impl Gen<'_, '_> {
    pub(super) fn secret(&self, sel: &SecretKeySelector, field: &str) -> Result<String, String> {
        let v = self
            .ctx
            .assets
            .secret(self.ns, &sel.name, &sel.key)
            .ok_or_else(|| {
                format!(
                    "{field}: key {:?} of Secret {}/{} not found",
                    sel.key, self.ns, sel.name
                )
            })?;
        String::from_utf8(v).map_err(|_| {
            format!(
                "{field}: key {:?} of Secret {}/{} is not UTF-8",
                sel.key, self.ns, sel.name
            )
        })
    }

    /// Writes a Secret's or a ConfigMap's key as a TLS file; returns its path.
    fn tls_file(&mut self, sel: &SecretOrConfigMap, field: &str) -> Result<Node, String> {
        let (from, name, key, data) = match (&sel.secret, &sel.config_map) {
            (Some(sk), _) => (
                0,
                &sk.name,
                &sk.key,
                self.ctx.assets.secret(self.ns, &sk.name, &sk.key),
            ),
            (None, Some(cm)) => (
                1,
                &cm.name,
                &cm.key,
                self.ctx.assets.config_map(self.ns, &cm.name, &cm.key),
            ),
            (None, None) => return Err(format!("{field}: neither secret nor configMap is set")),
        };
        let what = if from == 0 { "Secret" } else { "ConfigMap" };
        let data = data.ok_or_else(|| {
            format!(
                "{field}: key {key:?} of {what} {}/{name} not found",
                self.ns
            )
        })?;
        let path = self
            .ctx
            .cert_dir
            .join(format!("{from}_{}_{name}_{key}", self.ns));
        let node = s(&path.display().to_string());
        self.files.push((path, data));
        Ok(node)
    }

    pub(super) fn tls(&mut self, t: &TlsConfig, field: &str) -> Result<Node, String> {
        let mut m = MapBuilder::default();
        m.opt("insecure_skip_verify", t.insecure_skip_verify, Node::Bool);
        if let Some(ca) = &t.ca
            && (ca.secret.is_some() || ca.config_map.is_some())
        {
            let f = self.tls_file(ca, &format!("{field}.ca"))?;
            m.put("ca_file", f);
        }
        if let Some(cert) = &t.cert
            && (cert.secret.is_some() || cert.config_map.is_some())
        {
            let f = self.tls_file(cert, &format!("{field}.cert"))?;
            m.put("cert_file", f);
        }
        if let Some(k) = &t.key_secret {
            let sel = SecretOrConfigMap {
                secret: Some(k.clone()),
                config_map: None,
            };
            let f = self.tls_file(&sel, &format!("{field}.keySecret"))?;
            m.put("key_file", f);
        }
        if let Some(n) = t.server_name.as_deref().filter(|n| !n.is_empty()) {
            m.put("server_name", s(n));
        }
        m.opt("min_version", t.min_version.as_deref(), s);
        m.opt("max_version", t.max_version.as_deref(), s);
        m.opt("ca_file", t.ca_file.as_deref().filter(|f| !f.is_empty()), s);
        m.opt(
            "cert_file",
            t.cert_file.as_deref().filter(|f| !f.is_empty()),
            s,
        );
        m.opt(
            "key_file",
            t.key_file.as_deref().filter(|f| !f.is_empty()),
            s,
        );
        Ok(m.done())
    }

    pub(super) fn basic_auth(
        &self,
        b: &meridian_kube::monitoring::BasicAuth,
        field: &str,
    ) -> Result<Node, String> {
        let get = |sel: &Option<SecretKeySelector>, part: &str| match sel {
            Some(sel) => self.secret(sel, &format!("{field}.{part}")),
            None => Ok(String::new()),
        };
        Ok(map([
            ("username", Node::Str(get(&b.username, "username")?)),
            ("password", Node::Str(get(&b.password, "password")?)),
        ]))
    }

    pub(super) fn authorization(
        &self,
        a: &meridian_kube::monitoring::SafeAuthorization,
        field: &str,
    ) -> Result<Node, String> {
        let kind = a.kind.as_deref().unwrap_or("").trim();
        let mut m = MapBuilder::default();
        m.put("type", s(if kind.is_empty() { "Bearer" } else { kind }));
        if let Some(c) = &a.credentials {
            m.put(
                "credentials",
                Node::Str(self.secret(c, &format!("{field}.credentials"))?),
            );
        }
        Ok(m.done())
    }
}

/// The section's API client as `kubernetes_sd_configs` keys (the operator's `apiserverConfig`).
pub(super) fn api_client(cfg: &MonitoringResources, m: &mut MapBuilder) {
    match &cfg.client.source {
        ApiSource::InCluster => {}
        ApiSource::Kubeconfig(p) => m.put("kubeconfig_file", s(&p.display().to_string())),
        ApiSource::Url { url, proxy_url, .. } => {
            m.put("api_server", s(url));
            match &cfg.client.auth {
                Auth::None => {}
                Auth::Basic {
                    username,
                    password,
                    password_file,
                } => {
                    let mut b = MapBuilder::default();
                    b.put("username", s(username));
                    b.opt("password", password.as_deref(), s);
                    b.opt(
                        "password_file",
                        password_file.as_ref().map(|p| p.display().to_string()),
                        Node::Str,
                    );
                    m.put("basic_auth", b.done());
                }
                Auth::Header {
                    kind,
                    credentials,
                    credentials_file,
                } => {
                    let mut b = MapBuilder::default();
                    b.put("type", s(kind));
                    b.opt("credentials", credentials.as_deref(), s);
                    b.opt(
                        "credentials_file",
                        credentials_file.as_ref().map(|p| p.display().to_string()),
                        Node::Str,
                    );
                    m.put("authorization", b.done());
                }
            }
            let t = &cfg.client.tls_config;
            let mut b = MapBuilder::default();
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            b.opt("ca_file", path(&t.ca_file), Node::Str);
            b.opt("cert_file", path(&t.cert_file), Node::Str);
            b.opt("key_file", path(&t.key_file), Node::Str);
            b.opt("server_name", t.server_name.as_deref(), s);
            if t.insecure_skip_verify {
                b.put("insecure_skip_verify", Node::Bool(true));
            }
            if !b.0.is_empty() {
                m.put("tls_config", b.done());
            }
            m.opt("proxy_url", proxy_url.as_deref(), s);
        }
    }
}
