//! Loading and validating TLS material from PEM files. Every error names the file and the problem;
//! nothing is published until all of it checks out.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> TlsError {
        TlsError::Invalid {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The PEM section kinds in `bytes`, for error messages.
fn pem_kinds(bytes: &[u8]) -> Vec<String> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .map(|(k, _)| format!("{k:?}"))
        .collect()
}

/// Reads every certificate of a PEM file (a chain or a CA bundle); at least one is required.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        let kinds = pem_kinds(&bytes);
        return Err(TlsError::invalid(
            path,
            if kinds.is_empty() {
                "contains no PEM certificate".to_owned()
            } else {
                format!(
                    "contains no CERTIFICATE block (found {}): wrong file?",
                    kinds.join(", ")
                )
            },
        ));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let kinds = pem_kinds(&bytes);
        TlsError::invalid(
            path,
            if kinds.is_empty() {
                format!("contains no PEM private key ({e})")
            } else {
                format!(
                    "contains no PRIVATE KEY block (found {}): wrong file?",
                    kinds.join(", ")
                )
            },
        )
    })
}

/// Reads a CA bundle into a root store; every certificate must be usable as a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, c) in load_certs(path)?.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| TlsError::invalid(path, format!("certificate #{}: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Which side a certificate is for: decides the extended key usage checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A certificate and key that belong together, are valid now and (when the CA bundle holds the issuer)
/// chain to it.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    bundle: Option<(&Path, &RootCertStore)>,
    role: Role,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let provider = crate::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::invalid(key_path, format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(chain.clone(), signing);
    ck.keys_match().map_err(|e| {
        TlsError::invalid(
            key_path,
            format!(
                "private key does not match the certificate in {}: {e}",
                cert_path.display()
            ),
        )
    })?;
    check_validity(cert_path, &chain[0], SystemTime::now())?;
    if let Some((ca_path, roots)) = bundle {
        verify_chain(cert_path, ca_path, &chain, roots, role)?;
    }
    Ok(ck)
}

/// Refuses a certificate that is expired or not yet valid.
pub fn check_validity(
    path: &Path,
    cert: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::invalid(path, format!("cannot parse certificate: {e}")))?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let v = parsed.validity();
    if now > v.not_after.timestamp() {
        return Err(TlsError::invalid(
            path,
            format!("certificate expired at {}", v.not_after),
        ));
    }
    if now < v.not_before.timestamp() {
        return Err(TlsError::invalid(
            path,
            format!("certificate not valid before {}", v.not_before),
        ));
    }
    Ok(())
}

/// Verifies `chain` against `roots` for `role` — when the bundle holds the certificate's issuer. (A
/// server certificate issued by another CA than the one its clients are verified with is legitimate, so
/// an unrelated bundle is not an error.)
fn verify_chain(
    cert_path: &Path,
    ca_path: &Path,
    chain: &[CertificateDer<'static>],
    roots: &RootCertStore,
    role: Role,
) -> Result<(), TlsError> {
    let Ok((_, ee)) = x509_parser::parse_x509_certificate(&chain[0]) else {
        return Ok(());
    };
    let issuer = ee.issuer().as_raw();
    if !roots
        .roots
        .iter()
        .any(|a| a.subject.as_ref() == strip_sequence(issuer))
    {
        return Ok(());
    }
    let ee_cert = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| TlsError::invalid(cert_path, format!("cannot parse certificate: {e}")))?;
    let usage = match role {
        Role::Server => webpki::KeyUsage::server_auth(),
        Role::Client => webpki::KeyUsage::client_auth(),
    };
    let algs = crate::provider().signature_verification_algorithms;
    ee_cert
        .verify_for_usage(
            algs.all,
            &roots.roots,
            &chain[1..],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|e| {
            TlsError::invalid(
                cert_path,
                format!(
                    "does not verify against {} as a {} certificate: {e:?}",
                    ca_path.display(),
                    match role {
                        Role::Server => "server",
                        Role::Client => "client",
                    }
                ),
            )
        })?;
    Ok(())
}

/// A DER `Name` without its outer SEQUENCE header (how trust anchors store subjects).
fn strip_sequence(der: &[u8]) -> &[u8] {
    if der.len() < 2 || der[0] != 0x30 {
        return der;
    }
    let (len_bytes, len) = if der[1] < 0x80 {
        (0, der[1] as usize)
    } else {
        let n = (der[1] & 0x7f) as usize;
        let mut l = 0usize;
        for b in der.iter().skip(2).take(n) {
            l = (l << 8) | *b as usize;
        }
        (n, l)
    };
    der.get(2 + len_bytes..2 + len_bytes + len).unwrap_or(der)
}

/// Identities of a certificate for allow-lists: its DNS SANs, URI SANs and subject CN.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => out.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::URI(u) => out.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    for cn in c.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            out.push(s.to_owned());
        }
    }
    out
}
