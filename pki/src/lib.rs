//! Meridian pki: certificate authority tooling and the TLS library used by the edge and the gateway.
//!
//! Every Meridian binary and test harness calls [`install_crypto_provider`] first: aws-lc-rs is the only
//! rustls crypto provider in the build, installed explicitly so no dependency can pick another one.

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Idempotent; returns `true` when this call
/// installed it.
pub fn install_crypto_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
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
