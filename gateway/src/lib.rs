//! Meridian gateway library: [`discovery`] finds endpoints (static, DNS, DNS SRV), [`endpoints`] keeps the
//! endpoint set (per-group TLS, `Info` polling, health), [`fanout`] asks the stores and merges their
//! answers ([`dedup`] merges HA replicas), [`queryable`] is the seam the PromQL engine reads through,
//! [`api`] serves HTTP and [`app`] runs it all. [`probe`] asks one endpoint for its `Info`.

pub mod alerting;
pub mod api;
pub mod app;
pub mod bucket;
pub mod cache;
pub mod compact;
pub mod dedup;
pub mod discovery;
pub mod endpoints;
pub mod fanout;
pub mod metrics;
pub mod promql;
pub mod queryable;
pub mod rules;

use std::time::Duration;

pub use endpoints::Transport;
use meridian_core::error::{Error, ErrorKind, Result};
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::{Store, labels_from_proto};

/// What an endpoint announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub address: String,
    pub component_type: String,
    pub label_sets: Vec<String>,
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    pub supports_without_replica_labels: bool,
    pub serves_metadata: bool,
}

/// Asks one endpoint for its `Info`.
pub async fn probe(address: &str, transport: &Transport) -> Result<EndpointInfo> {
    let client = match transport {
        Transport::Plaintext => StoreClient::connect_plaintext(address).await?,
        Transport::Tls { tls, server_name } => {
            let channel = tls
                .channel(address, server_name.as_deref(), Duration::from_secs(10))
                .await
                .map_err(|e| Error::new(ErrorKind::Unavailable, e.to_string()))?;
            StoreClient::new(channel, address)
        }
    };
    let info = client
        .info()
        .await
        .map_err(|e| e.context(format!("store {address}")))?;
    Ok(EndpointInfo {
        address: address.to_owned(),
        component_type: info.component_type,
        label_sets: info
            .label_sets
            .iter()
            .map(|ls| labels_from_proto(&ls.labels).to_string())
            .collect(),
        min_time: info.store.as_ref().map(|s| s.min_time),
        max_time: info.store.as_ref().map(|s| s.max_time),
        supports_without_replica_labels: info
            .store
            .as_ref()
            .is_some_and(|s| s.supports_without_replica_labels),
        serves_metadata: info.metric_metadata.is_some(),
    })
}
