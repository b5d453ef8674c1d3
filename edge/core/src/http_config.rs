//! The client side of Prometheus' HTTP configuration (`prometheus/common` `config.HTTPClientConfig`):
//! `basic_auth`, `authorization`, `bearer_token(_file)` and `tls_config`, as scrape jobs and
//! Alertmanager configurations write them. Plain data; the TLS client itself is built by
//! `meridian_pki::http_client`.

use std::path::PathBuf;

use serde::Deserialize;

/// `basic_auth:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `authorization:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: String,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

fn default_auth_type() -> String {
    "Bearer".into()
}

/// `tls_config:`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// How the scrape request authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// `Authorization: <kind> <credentials>` (`bearer_token(_file)` is kind `Bearer`).
    Header {
        kind: String,
        credentials: Option<String>,
        credentials_file: Option<PathBuf>,
    },
}

impl Auth {
    /// Prometheus' `basic_auth` / `authorization` / `bearer_token(_file)` of an HTTP client config,
    /// checked as Prometheus checks them (at most one way, at most one source of the secret).
    pub fn from_config(
        basic: Option<&BasicAuth>,
        authorization: Option<&Authorization>,
        bearer_token: Option<&String>,
        bearer_token_file: Option<&PathBuf>,
    ) -> Result<Auth, String> {
        Ok(
            match (basic, authorization, bearer_token, bearer_token_file) {
                (Some(_), Some(_), _, _) | (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
                    return Err("at most one of basic_auth, authorization and bearer_token(_file) may be set".into());
                }
                (_, Some(_), Some(_), _) | (_, Some(_), _, Some(_)) | (_, _, Some(_), Some(_)) => {
                    return Err("at most one of authorization, bearer_token and bearer_token_file may be set".into());
                }
                (Some(b), None, None, None) => {
                    if b.password.is_some() && b.password_file.is_some() {
                        return Err(
                            "basic_auth: at most one of password and password_file may be set"
                                .into(),
                        );
                    }
                    Auth::Basic {
                        username: b.username.clone(),
                        password: b.password.clone(),
                        password_file: b.password_file.clone(),
                    }
                }
                (None, Some(a), None, None) => {
                    if a.credentials.is_some() && a.credentials_file.is_some() {
                        return Err("authorization: at most one of credentials and credentials_file may be set".into());
                    }
                    if a.kind.eq_ignore_ascii_case("basic") {
                        return Err("authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into());
                    }
                    Auth::Header {
                        kind: a.kind.clone(),
                        credentials: a.credentials.clone(),
                        credentials_file: a.credentials_file.clone(),
                    }
                }
                (None, None, token, file) if token.is_some() || file.is_some() => Auth::Header {
                    kind: "Bearer".into(),
                    credentials: token.cloned(),
                    credentials_file: file.cloned(),
                },
                _ => Auth::None,
            },
        )
    }
}
