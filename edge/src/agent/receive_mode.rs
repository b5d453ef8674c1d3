//! Receive mode's part of the edge: the tenants' storage behind the StoreAPI, the receiver, and
//! the hashring file to follow.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::labels::Labels;
use meridian_storeapi::Store;
use meridian_storeapi::leaf::SeriesLimits;
use meridian_storeapi::multi::MultiStore;
use meridian_tsdb::db::DbOptions;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::ShipperOptions;
use prometheus_client::registry::Registry;

use crate::metadata::MetadataStore;
use crate::receive::ReceiveMetrics;
use crate::receive::router::{HashringMetrics, HashringSource, Receiver};
use crate::receive::tenants::{Tenants, TenantsOptions};

/// How a receiver in a hashring is set up (Thanos Receive's flags).
#[derive(Debug)]
pub struct ReceiveMode {
    /// The hashrings (`None`: no hashring, every write stored here).
    pub rings: Option<crate::receive::hashring::Hashrings>,
    /// The hashring file to follow, with the text `rings` came from.
    pub hashring_file: Option<(crate::receive::router::HashringSource, String)>,
    pub receiver: crate::receive::router::ReceiverOptions,
    /// `--receive.tenant-header` (THANOS-TENANT).
    pub tenant_header: String,
    /// `--receive.tenant-label-name` (tenant_id).
    pub tenant_label: String,
    /// `--receive.replica-header` (THANOS-REPLICA).
    pub replica_header: String,
    /// `--receive.max-tenants`.
    pub max_tenants: usize,
}

/// The receive side of the HTTP server in receive mode.
pub(crate) struct ReceiveFront {
    pub(crate) receiver: crate::receive::router::Receiver,
    pub(crate) tenant_header: String,
    pub(crate) default_tenant: String,
    pub(crate) replica_header: String,
}

/// What the rest of the edge shares with the tenants.
pub(super) struct Context<'a> {
    pub(super) tsdb_path: &'a Path,
    pub(super) db: &'a DbOptions,
    pub(super) node_labels: &'a Labels,
    pub(super) objstore: Option<&'a Bucket>,
    pub(super) shipper: &'a ShipperOptions,
    pub(super) shipper_grace: Duration,
    pub(super) series_limits: SeriesLimits,
    pub(super) metadata: &'a Arc<MetadataStore>,
    pub(super) metrics: &'a ReceiveMetrics,
}

/// What receive mode adds: the store the StoreAPI serves, the HTTP side, the hashring file to follow.
pub(super) struct ReceiveSetup {
    pub(super) store: Arc<dyn Store>,
    pub(super) front: Option<ReceiveFront>,
    pub(super) watch: Option<(HashringSource, String, HashringMetrics)>,
}

/// Without receive mode the StoreAPI serves the edge's own TSDB; with it, that and every tenant's
/// (opened from disk now, and on first write later).
pub(super) async fn setup(
    mode: Option<ReceiveMode>,
    edge_store: Arc<dyn Store>,
    cx: Context<'_>,
    registry: &mut Registry,
) -> anyhow::Result<ReceiveSetup> {
    let Some(mode) = mode else {
        return Ok(ReceiveSetup {
            store: edge_store,
            front: None,
            watch: None,
        });
    };
    let multi = Arc::new(MultiStore::new("receive", Some(edge_store.clone())));
    let rings = mode.rings.clone();
    let tenants = Tenants::open(
        TenantsOptions {
            root: cx.tsdb_path.join("tenants"),
            db: cx.db.clone(),
            node_labels: cx.node_labels.clone(),
            tenant_label: mode.tenant_label.clone(),
            objstore: cx.objstore.cloned(),
            shipper: cx.shipper.clone(),
            shipper_grace: cx.shipper_grace,
            series_limits: cx.series_limits,
            max_tenants: mode.max_tenants,
            // As Thanos: a tenant with nothing newer than the retention is pruned.
            idle_after: cx
                .db
                .retention_time
                .and_then(|ms| u64::try_from(ms).ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        },
        multi.clone(),
        vec![edge_store],
        cx.metadata.clone(),
        |t| {
            rings
                .as_ref()
                .map(|r| r.tenant_labels(t))
                .unwrap_or_else(Labels::empty)
        },
    )
    .await?;
    let default_tenant = mode.receiver.default_tenant.clone();
    let receiver = Receiver::new(mode.receiver, mode.rings, tenants, cx.metrics.clone());
    receiver.register(registry);
    let watch = mode.hashring_file.map(|(source, text)| {
        let m = HashringMetrics::default();
        m.loaded(&text);
        m.register(registry);
        (source, text, m)
    });
    Ok(ReceiveSetup {
        store: multi,
        front: Some(ReceiveFront {
            receiver,
            tenant_header: mode.tenant_header,
            default_tenant,
            replica_header: mode.replica_header,
        }),
        watch,
    })
}

/// Receive mode's background tasks: following the hashring file, pruning idle tenants.
pub(super) fn spawn_background(
    front: &ReceiveFront,
    watch: Option<(HashringSource, String, HashringMetrics)>,
    background: &mut tokio::task::JoinSet<()>,
    stop: &tokio_util::sync::CancellationToken,
) {
    if let Some((source, text, metrics)) = watch {
        background.spawn(crate::receive::router::watch_hashrings(
            front.receiver.clone(),
            source,
            text,
            metrics,
            stop.clone(),
        ));
    }
    background.spawn(super::housekeeping::prune_tenants(
        front.receiver.tenants().clone(),
        stop.clone(),
    ));
}
