//! Meridian pki: certificate authority tooling and the TLS library used by the edge and the gateway.
//!
//! Every Meridian binary and test harness calls [`install_crypto_provider`] first: aws-lc-rs is the only
//! rustls crypto provider in the build, installed explicitly so no dependency can pick another one.

use std::sync::Arc;

pub mod channel;
pub mod dev;
pub mod http_client;
pub mod inspect;
pub mod issue;
pub mod k8s;
pub mod serve;
pub mod tls;

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Idempotent; returns `true` when this call
/// installed it.
pub fn install_crypto_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
}

/// The crypto provider every TLS configuration of Meridian is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn provider_is_aws_lc_rs() {
        super::install_crypto_provider();
        let p = rustls::crypto::CryptoProvider::get_default();
        assert!(p.is_some());
        // A second call is harmless.
        assert!(!super::install_crypto_provider());
    }
}
