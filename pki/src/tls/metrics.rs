//! TLS self-metrics: reloads, refused reloads, failed handshakes, certificate expiry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default, Clone)]
pub struct TlsMetrics {
    /// New material published.
    pub reloads: Counter,
    /// New material refused (the old stays in use).
    pub reload_failures: Counter,
    /// Handshakes that failed or timed out (server side).
    pub handshake_failures: Counter,
    /// `notAfter` of the certificate in use, Unix seconds.
    pub cert_not_after: Gauge,
}

impl TlsMetrics {
    /// Registers the metrics, e.g. under a sub-registry labelled with the side (`grpc_server`, ...).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "meridian_tls_reloads",
            "TLS material reloads that published new material",
            self.reloads.clone(),
        );
        registry.register(
            "meridian_tls_reload_failures",
            "TLS material reloads refused because the new material was invalid; the old stays in use",
            self.reload_failures.clone(),
        );
        registry.register(
            "meridian_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            self.handshake_failures.clone(),
        );
        registry.register(
            "meridian_tls_certificate_not_after_seconds",
            "Expiry (notAfter) of the certificate in use, as Unix seconds",
            self.cert_not_after.clone(),
        );
    }
}
