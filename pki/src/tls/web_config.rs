//! `--http.tls-config-file`: TLS for HTTP servers in the format of Prometheus' web configuration file
//! (`tls_server_config`), so an existing `web.yml` works unchanged:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default)
//!   client_ca_file: ca.crt
//!   client_allowed_sans: [gateway]
//!   min_version: TLS12                             # TLS12 (default) or TLS13
//! ```
//!
//! Relative paths are relative to the file. Unknown keys are errors with their line and column;
//! `http_server_config` and `basic_auth_users` are recognised and refused by name (not supported yet).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{ServerTls, ServerTlsFiles, ServerTlsOptions, TlsError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfig {
    tls_server_config: Option<TlsServerConfig>,
    http_server_config: Option<serde::de::IgnoredAny>,
    basic_auth_users: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

/// Loads the HTTP TLS configuration; `Ok(None)` when the file has no `tls_server_config`.
pub fn load_web_config(path: &Path) -> Result<Option<Arc<ServerTls>>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let cfg: WebConfig =
        serde_saphyr::from_str(&text).map_err(|e| TlsError::invalid(path, e.to_string()))?;
    if cfg.http_server_config.is_some() || cfg.basic_auth_users.is_some() {
        return Err(TlsError::invalid(
            path,
            "http_server_config and basic_auth_users are not supported; only tls_server_config",
        ));
    }
    let Some(tls) = cfg.tls_server_config else {
        return Ok(None);
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let client_ca = match tls.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => None,
        "RequireAndVerifyClientCert" => {
            Some(rel(tls.client_ca_file.as_deref().ok_or_else(|| {
                TlsError::invalid(
                    path,
                    "client_auth_type RequireAndVerifyClientCert needs client_ca_file",
                )
            })?))
        }
        other => {
            return Err(TlsError::invalid(
                path,
                format!(
                    "client_auth_type {other:?} is not supported (use NoClientCert or RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    for (key, v) in [
        ("min_version", &tls.min_version),
        ("max_version", &tls.max_version),
    ] {
        if let Some(v) = v
            && v != "TLS12"
            && v != "TLS13"
        {
            return Err(TlsError::invalid(
                path,
                format!("{key} {v:?}: only TLS12 and TLS13 are offered"),
            ));
        }
    }
    let only13 = tls.min_version.as_deref() == Some("TLS13");
    if only13 && tls.max_version.as_deref() == Some("TLS12") {
        return Err(TlsError::invalid(
            path,
            "min_version TLS13 is above max_version TLS12",
        ));
    }
    ServerTls::load(
        "http",
        ServerTlsFiles {
            cert: rel(&tls.cert_file),
            key: rel(&tls.key_file),
            client_ca,
        },
        ServerTlsOptions {
            allowed_clients: tls.client_allowed_sans,
            versions: match (tls.min_version.as_deref(), tls.max_version.as_deref()) {
                (Some("TLS13"), _) => super::server::Versions::Tls13,
                (_, Some("TLS12")) => super::server::Versions::Tls12,
                _ => super::server::Versions::Tls12And13,
            },
            ..Default::default()
        },
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, text).unwrap();
        load_web_config(&p)
    }

    #[test]
    fn errors_name_the_problem() {
        let e = cfg("tls_server_config:\n  cert_file: a\n  key_file: b\n  cert_fiel: c\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cert_fiel") && e.contains("web.yml"), "{e}");
        assert!(
            e.contains("line 4") || e.contains("4:3") || e.contains(":4:"),
            "no position: {e}"
        );
        let e = cfg("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequestClientCert\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("RequestClientCert"), "{e}");
        let e = cfg("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_ca_file"), "{e}");
        let e = cfg("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("TLS11"), "{e}");
        let e = cfg("basic_auth_users:\n  admin: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("basic_auth_users"), "{e}");
        // Missing certificate files are named.
        let e = cfg("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.crt"), "{e}");
        assert!(cfg("{}\n").unwrap().is_none());
    }
}
