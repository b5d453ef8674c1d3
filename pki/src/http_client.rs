//! The TLS and authorization side of an HTTP client configured as Prometheus configures one
//! (`tls_config`, `basic_auth`, `authorization`): used by the edge's scraper and the gateway's
//! Alertmanager client, so both read the same YAML the same way.

use std::sync::Arc;

use base64::Engine;
use meridian_core::http_config::{Auth, TlsConfig};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A rustls client configuration from Prometheus' `tls_config` (aws-lc-rs; the system roots unless
/// `ca_file` is given).
pub fn tls_client_config(t: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls_config: {e}"))?;
    let builder = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(crate::provider())))
    } else {
        let roots = match &t.ca_file {
            Some(ca) => crate::tls::material::load_roots(ca)
                .map_err(|e| format!("tls_config.ca_file: {e}"))?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let certs = crate::tls::material::load_certs(c)
                .map_err(|e| format!("tls_config.cert_file: {e}"))?;
            let key = crate::tls::material::load_key(k)
                .map_err(|e| format!("tls_config.key_file: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls_config: cert_file/key_file: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err("tls_config: cert_file and key_file must be given together".into());
        }
    };
    Ok(Arc::new(config))
}

/// The `Authorization` header value of `auth` (secrets in files are read at every call, so rotated
/// files take effect), or `None`.
pub async fn authorization_header(auth: &Auth) -> Result<Option<String>, String> {
    let read = |p: &std::path::Path| {
        let p = p.to_owned();
        async move {
            tokio::fs::read_to_string(&p)
                .await
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
    };
    Ok(match auth {
        Auth::None => None,
        Auth::Basic {
            username,
            password,
            password_file,
        } => {
            let pw = match (password, password_file) {
                (_, Some(f)) => read(f).await?,
                (Some(p), None) => p.clone(),
                (None, None) => String::new(),
            };
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{pw}"));
            Some(format!("Basic {enc}"))
        }
        Auth::Header {
            kind,
            credentials,
            credentials_file,
        } => {
            let c = match (credentials, credentials_file) {
                (_, Some(f)) => read(f).await?,
                (Some(c), None) => c.clone(),
                (None, None) => String::new(),
            };
            Some(format!("{kind} {c}"))
        }
    })
}

/// The host of `host:port` (IPv6 brackets removed).
pub fn host_only(addr: &str) -> String {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => addr.to_owned(),
    }
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        let _ = roots.add(c);
    }
    roots
}

/// `insecure_skip_verify`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
