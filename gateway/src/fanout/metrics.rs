//! What the fan-out records about the stores it asks (self-monitoring), as Thanos' querier does.

/// What the fan-out records about the stores it asks (self-monitoring).
#[derive(Debug)]
pub struct FanoutMetrics {
    /// Seconds per store call, by store address.
    pub store_duration: prometheus_client::metrics::family::Family<
        StoreLabel,
        prometheus_client::metrics::histogram::Histogram,
        fn() -> prometheus_client::metrics::histogram::Histogram,
    >,
    /// Failed store calls, by store address.
    pub store_errors: prometheus_client::metrics::family::Family<
        StoreLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Bytes of the series frames received (their protobuf encoding), by store address.
    pub store_bytes: prometheus_client::metrics::family::Family<
        StoreLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Series assembled from more than one store answer (replicas or copies merged).
    pub series_merged: prometheus_client::metrics::counter::Counter,
    /// Series answered, merged or not.
    pub series_total: prometheus_client::metrics::counter::Counter,
}

/// The `store` label of the per-store metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct StoreLabel {
    pub store: String,
}

pub(super) fn store_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for FanoutMetrics {
    fn default() -> FanoutMetrics {
        FanoutMetrics::new()
    }
}

impl FanoutMetrics {
    pub fn new() -> FanoutMetrics {
        FanoutMetrics {
            store_duration: prometheus_client::metrics::family::Family::new_with_constructor(
                store_histogram,
            ),
            store_errors: Default::default(),
            store_bytes: Default::default(),
            series_merged: Default::default(),
            series_total: Default::default(),
        }
    }

    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register_with_unit(
            "meridian_gateway_store_request_duration",
            "Time to a store's whole answer, by store address",
            prometheus_client::registry::Unit::Seconds,
            self.store_duration.clone(),
        );
        r.register(
            "meridian_gateway_store_request_errors",
            "Store calls that failed or timed out, by store address",
            self.store_errors.clone(),
        );
        r.register_with_unit(
            "meridian_gateway_store_series_received",
            "Bytes of the series frames received from a store (protobuf encoding), by store address",
            prometheus_client::registry::Unit::Bytes,
            self.store_bytes.clone(),
        );
        r.register(
            "meridian_gateway_dedup_series_merged",
            "Series assembled from more than one store answer (HA replicas or copies merged)",
            self.series_merged.clone(),
        );
        r.register(
            "meridian_gateway_fanout_series",
            "Series the fan-out answered",
            self.series_total.clone(),
        );
    }
}
