//! The checks a monitor's endpoint passes before its job is generated: the operator's
//! `Endpoint.Validate` (one way to authenticate, TLS pairs, proxy settings) and each relabeling as the
//! scrape configuration's checks see it, refused with the field's path.

use meridian_kube::monitoring::{Endpoint, RelabelConfig, SecretOrConfigMap};

use super::generate::user_relabelings;

/// The operator's `Endpoint.Validate` checks that the scrape configuration's own checks would not
/// catch in these words (`pkg/apis/monitoring/v1`, v0.93.0).
pub(super) fn check_endpoint(ep: &Endpoint, field: &str) -> Result<(), String> {
    check_relabelings(&ep.relabelings, &format!("{field}.relabelings"))?;
    check_relabelings(
        &ep.metric_relabelings,
        &format!("{field}.metricRelabelings"),
    )?;
    let auths: Vec<&str> = [
        ("authorization", ep.authorization.is_some()),
        ("basicAuth", ep.basic_auth.is_some()),
        (
            "bearerTokenSecret",
            ep.bearer_token_secret
                .as_ref()
                .is_some_and(|b| !b.name.is_empty()),
        ),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    if auths.len() > 1 {
        return Err(format!(
            "{field}: {} cannot be configured at the same time",
            auths.join(" and ")
        ));
    }
    if let Some(a) = &ep.authorization {
        if a.kind
            .as_deref()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("basic"))
        {
            return Err(format!(
                "{field}.authorization.type: authorization type cannot be set to \"basic\", use \"basicAuth\" instead"
            ));
        }
        if a.credentials.is_none() {
            return Err(format!(
                "{field}.authorization.credentials: 'authorization' credentials are required"
            ));
        }
    }
    if let Some(t) = &ep.tls_config {
        let has = |o: &Option<SecretOrConfigMap>| {
            o.as_ref()
                .is_some_and(|x| x.secret.is_some() || x.config_map.is_some())
        };
        let file = |o: &Option<String>| o.as_deref().is_some_and(|f| !f.is_empty());
        for (both, a, b) in [
            (has(&t.ca) && file(&t.ca_file), "ca", "caFile"),
            (has(&t.cert) && file(&t.cert_file), "cert", "certFile"),
            (
                t.key_secret.is_some() && file(&t.key_file),
                "keySecret",
                "keyFile",
            ),
        ] {
            if both {
                return Err(format!(
                    "{field}.tlsConfig: cannot specify both '{b}' and '{a}'"
                ));
            }
        }
        let cert = has(&t.cert) || file(&t.cert_file);
        let key = t.key_secret.is_some() || file(&t.key_file);
        if cert != key {
            return Err(format!(
                "{field}.tlsConfig: a client certificate and its key must be given together"
            ));
        }
        for o in [&t.ca, &t.cert].into_iter().flatten() {
            if o.secret.is_some() && o.config_map.is_some() {
                return Err(format!(
                    "{field}.tlsConfig: cannot specify both Secret and ConfigMap"
                ));
            }
        }
    }
    if ep.no_proxy.is_some() && ep.proxy_url.is_none() {
        return Err(format!(
            "{field}.noProxy: if noProxy is configured, proxyUrl must also be configured"
        ));
    }
    if ep.proxy_from_environment == Some(true) && ep.proxy_url.is_some() {
        return Err(format!(
            "{field}.proxyFromEnvironment: if proxyFromEnvironment is configured, proxyUrl must not be configured"
        ));
    }
    Ok(())
}

/// Each relabeling as the scrape configuration's checks see it, refused with its path
/// (`spec.endpoints[0].relabelings[2]: …`).
fn check_relabelings(rc: &[RelabelConfig], field: &str) -> Result<(), String> {
    for (j, c) in rc.iter().enumerate() {
        let mut v = Vec::new();
        user_relabelings(std::slice::from_ref(c), &mut v);
        let json = serde_json::to_value(&v[0]).map_err(|e| format!("{field}[{j}]: {e}"))?;
        serde_json::from_value::<meridian_core::relabel::RelabelConfig>(json)
            .map_err(|e| format!("{field}[{j}]: {e}"))?;
    }
    Ok(())
}
