//! `--prometheus.http-client(-file)`: Thanos' HTTP client YAML (`pkg/httpconfig`/`clientconfig`,
//! v0.25.1): `basic_auth`, `bearer_token(_file)`, `proxy_url`, `tls_config`, `transport_config`.
//! Unknown keys are errors with their line and column. `transport_config` tunes Go's connection
//! pool; its keys are checked and have no effect here (the sidecar opens a connection per request
//! to the Prometheus on the same pod).

use std::path::PathBuf;

use serde::Deserialize;

use super::prom::PromClient;
use crate::scrape::http::Dialer;
use meridian_core::http_config::{Auth, BasicAuth, TlsConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClientConfig {
    basic_auth: Option<BasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    proxy_url: Option<String>,
    tls_config: TlsConfig,
    #[allow(dead_code)]
    transport_config: Option<RawTransport>,
}

/// Go's `http.Transport` settings, as Thanos names them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code)]
struct RawTransport {
    max_idle_conns: Option<i64>,
    max_idle_conns_per_host: Option<i64>,
    idle_conn_timeout: Option<i64>,
    response_header_timeout: Option<i64>,
    expect_continue_timeout: Option<i64>,
    max_conns_per_host: Option<i64>,
    disable_compression: Option<bool>,
    tls_handshake_timeout: Option<i64>,
    dial_timeout: Option<i64>,
}

/// A client of the Prometheus at `url` configured by `yaml` (empty: plain HTTP, no auth);
/// `source` names the flag or file in errors.
pub fn prom_client(url: &http::Uri, yaml: &str, source: &str) -> Result<PromClient, String> {
    let raw: RawClientConfig = if yaml.trim().is_empty() {
        RawClientConfig::default()
    } else {
        serde_saphyr::from_str(yaml).map_err(|e| format!("{source}: {e}"))?
    };
    let auth = Auth::from_config(
        raw.basic_auth.as_ref(),
        None,
        raw.bearer_token.as_ref(),
        raw.bearer_token_file.as_ref(),
    )
    .map_err(|e| format!("{source}: {e}"))?;
    let proxy = match &raw.proxy_url {
        None => None,
        Some(p) => {
            let u: http::Uri = p
                .parse()
                .map_err(|e| format!("{source}: proxy_url {p:?}: {e}"))?;
            Some(crate::scrape::http::authority(&u))
        }
    };
    let tls = match url.scheme_str() {
        Some("https") => Some(
            meridian_pki::http_client::tls_client_config(&raw.tls_config)
                .map_err(|e| format!("{source}: {e}"))?,
        ),
        Some("http") => None,
        other => {
            return Err(format!(
                "--prometheus.url {url}: scheme {other:?} is not http or https"
            ));
        }
    };
    Ok(PromClient::new(
        url,
        Dialer {
            tls,
            server_name: raw.tls_config.server_name.clone(),
            proxy,
        },
        auth,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn thanos_client_yaml_is_read_and_unknown_keys_refused() {
        let url: http::Uri = "http://localhost:9090".parse().unwrap();
        prom_client(&url, "", "--prometheus.http-client").unwrap();
        prom_client(
            &url,
            "basic_auth: {username: u, password: p}\ntransport_config: {dial_timeout: 5000000000}\n",
            "f.yml",
        )
        .unwrap();
        let e = prom_client(&url, "tls_config: {}\nbearer_tokn: x\n", "f.yml").unwrap_err();
        assert!(
            e.starts_with("f.yml") && e.contains("bearer_tokn") && e.contains('2'),
            "{e}"
        );
        let e = prom_client(&url, "bearer_token: a\nbearer_token_file: b\n", "f.yml").unwrap_err();
        assert!(e.contains("at most one"), "{e}");
        let e = prom_client(&"ftp://x".parse().unwrap(), "", "f").unwrap_err();
        assert!(e.contains("scheme"), "{e}");
    }
}
