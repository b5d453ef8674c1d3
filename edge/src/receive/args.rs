//! Thanos Receive's command-line flags on `meridian-edge run`, and the receive mode they ask for.

use std::path::PathBuf;

/// Thanos Receive's flags (v0.25.1 names and defaults; `--receive.hashrings-algorithm` from later
/// versions). Any of `--receive.hashrings-file`, `--receive.hashrings` or `--receive.local-endpoint`
/// makes the edge a receiver: remote writes are routed over the hashring and stored per tenant.
#[derive(clap::Args, Debug)]
pub struct ReceiveArgs {
    /// The node's external labels, `name="value"` (the value Go-quoted, as Thanos takes it);
    /// repeatable. Added to (and overriding) the config's `global.external_labels`.
    #[arg(long = "label", value_name = "KEY=\"VALUE\"", value_parser = parse_label_flag)]
    pub labels: Vec<(String, String)>,
    /// Thanos' hashring JSON file; reloaded when it changes.
    #[arg(
        long = "receive.hashrings-file",
        value_name = "FILE",
        conflicts_with = "hashrings"
    )]
    pub hashrings_file: Option<PathBuf>,
    /// Thanos' hashring JSON, inline (not reloaded).
    #[arg(long = "receive.hashrings", value_name = "JSON")]
    pub hashrings: Option<String>,
    /// How often the hashring file is re-read besides being watched.
    #[arg(long = "receive.hashrings-file-refresh-interval", value_name = "DURATION", default_value = "5m", value_parser = meridian_core::promfmt::parse_duration)]
    pub hashrings_refresh: std::time::Duration,
    /// The routing algorithm of hashrings that name none: hashmod or ketama.
    #[arg(
        long = "receive.hashrings-algorithm",
        value_name = "ALGORITHM",
        default_value = "hashmod"
    )]
    pub algorithm: crate::receive::hashring::Algorithm,
    /// This node's address in the hashring (its gRPC address as the other nodes reach it).
    #[arg(long = "receive.local-endpoint", value_name = "HOST:PORT")]
    pub local_endpoint: Option<String>,
    /// How many nodes store each series.
    #[arg(long = "receive.replication-factor", default_value_t = 1)]
    pub replication_factor: usize,
    /// HTTP header naming the tenant of a remote-write request.
    #[arg(long = "receive.tenant-header", default_value = "THANOS-TENANT")]
    pub tenant_header: String,
    /// Tenant of requests that name none.
    #[arg(long = "receive.default-tenant-id", default_value = "default-tenant")]
    pub default_tenant: String,
    /// External label naming each tenant's TSDB.
    #[arg(long = "receive.tenant-label-name", default_value = "tenant_id")]
    pub tenant_label: String,
    /// HTTP header carrying the replica number of a forwarded request.
    #[arg(long = "receive.replica-header", default_value = "THANOS-REPLICA")]
    pub replica_header: String,
    /// Most tenants one receiver holds; writes for more are refused (429).
    #[arg(long = "receive.max-tenants", default_value_t = 1000)]
    pub max_tenants: usize,
    /// Bounds every write of a routed request (local or forwarded).
    #[arg(long = "receive-forward-timeout", value_name = "DURATION", default_value = "5s", value_parser = meridian_core::promfmt::parse_duration)]
    pub forward_timeout: std::time::Duration,
    /// CA bundle verifying the other receivers' certificates (forwarding over TLS).
    #[arg(long = "remote-write.client-tls-ca", value_name = "FILE")]
    pub client_tls_ca: Option<PathBuf>,
    /// Client certificate presented to the other receivers (mTLS).
    #[arg(long = "remote-write.client-tls-cert", value_name = "FILE")]
    pub client_tls_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long = "remote-write.client-tls-key", value_name = "FILE")]
    pub client_tls_key: Option<PathBuf>,
    /// Server name verified in the other receivers' certificates (default: the endpoint's host).
    #[arg(long = "remote-write.client-server-name", value_name = "NAME")]
    pub client_server_name: Option<String>,
}

/// `--label name="value"`: the value in Go's quoted form (`strconv.Unquote`), as Thanos parses it.
pub fn parse_label_flag(s: &str) -> Result<(String, String), String> {
    let (name, quoted) = s
        .split_once('=')
        .ok_or_else(|| format!("--label {s:?}: expected name=\"value\""))?;
    if !meridian_core::relabel::is_valid_label_name(name) {
        return Err(format!("--label {s:?}: {name:?} is not a valid label name"));
    }
    let value = meridian_core::promfmt::go_unquote(quoted)
        .map_err(|e| format!("--label {s:?}: the value must be Go-quoted (\"value\"): {e}"))?;
    Ok((name.to_owned(), value))
}

impl ReceiveArgs {
    /// The node's labels and the receive mode, when one is asked for.
    pub fn mode(
        &self,
    ) -> anyhow::Result<(
        meridian_core::labels::Labels,
        Option<crate::agent::ReceiveMode>,
    )> {
        use crate::receive::hashring::{self, Hashrings};
        use crate::receive::router::{HashringSource, ReceiverOptions};
        let labels = meridian_core::labels::Labels::from_pairs(
            self.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        if self.hashrings_file.is_none()
            && self.hashrings.is_none()
            && self.local_endpoint.is_none()
        {
            return Ok((labels, None));
        }
        if self.replication_factor == 0 {
            anyhow::bail!("--receive.replication-factor must be at least 1");
        }
        if !meridian_core::relabel::is_valid_label_name(&self.tenant_label) {
            anyhow::bail!(
                "--receive.tenant-label-name {:?} is not a valid label name",
                self.tenant_label
            );
        }
        crate::receive::tenants::validate_tenant(&self.default_tenant)
            .map_err(|e| anyhow::anyhow!("--receive.default-tenant-id: {e}"))?;
        let (rings, hashring_file) = match (&self.hashrings_file, &self.hashrings) {
            (Some(file), _) => {
                let source = HashringSource {
                    file: file.clone(),
                    algorithm: self.algorithm,
                    replication: self.replication_factor,
                    refresh: self.hashrings_refresh,
                };
                let (rings, text) = source.load().map_err(|e| {
                    anyhow::anyhow!("failed to validate hashring configuration file: {e}")
                })?;
                (Some(rings), Some((source, text)))
            }
            (None, Some(text)) => {
                let rings = hashring::parse(text)
                    .and_then(|c| Hashrings::build(c, self.algorithm, self.replication_factor))
                    .map_err(|e| anyhow::anyhow!("--receive.hashrings: {e}"))?;
                (Some(rings), None)
            }
            (None, None) => (None, None),
        };
        let client_tls = match &self.client_tls_ca {
            None => {
                if self.client_tls_cert.is_some() || self.client_tls_key.is_some() {
                    anyhow::bail!(
                        "--remote-write.client-tls-cert/-key need --remote-write.client-tls-ca"
                    );
                }
                None
            }
            Some(ca) => Some((
                meridian_pki::tls::client::ClientTls::load(
                    "remote-write-client",
                    meridian_pki::tls::client::ClientTlsFiles {
                        ca: ca.clone(),
                        cert: self.client_tls_cert.clone(),
                        key: self.client_tls_key.clone(),
                    },
                )?,
                self.client_server_name.clone(),
            )),
        };
        Ok((
            labels,
            Some(crate::agent::ReceiveMode {
                rings,
                hashring_file,
                receiver: ReceiverOptions {
                    local_endpoint: self.local_endpoint.clone(),
                    forward_timeout: self.forward_timeout,
                    client_tls,
                    connect_timeout: std::time::Duration::from_secs(5),
                    max_message_bytes: 256 << 20,
                    default_tenant: self.default_tenant.clone(),
                },
                tenant_header: self.tenant_header.clone(),
                tenant_label: self.tenant_label.clone(),
                replica_header: self.replica_header.clone(),
                max_tenants: self.max_tenants,
            }),
        ))
    }
}
