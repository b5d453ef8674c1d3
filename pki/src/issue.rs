//! Issuing a CA and server/client certificates with explicit validity and key usages.
//!
//! rcgen's default validity (1975–4096) is never used: every certificate gets `not_before` a few minutes
//! in the past (clock skew) and `not_after` from the requested number of days.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Why issuing failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

fn rc(context: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Invalid(format!("{context}: {e}"))
}

/// Key algorithms for new keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    #[default]
    #[value(name = "P-256", alias = "p256")]
    P256,
    #[value(name = "P-384", alias = "p384")]
    P384,
    #[value(name = "Ed25519", alias = "ed25519")]
    Ed25519,
    /// RSA 2048 with SHA-256.
    #[value(name = "RSA", alias = "rsa")]
    Rsa,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair, PkiError> {
        let alg = match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa => &rcgen::PKCS_RSA_SHA256,
        };
        KeyPair::generate_for(alg).map_err(rc("generating a key"))
    }
}

/// A validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From five minutes ago (tolerates clock skew between machines) to `days` from now. Refuses 0
    /// days (a certificate that expires as it is issued) and an end past 9999-12-31T23:59:59Z, the last
    /// instant an X.509 certificate can express (RFC 5280 §4.1.2.5.2).
    pub fn days(days: u32) -> Result<Validity, PkiError> {
        if days == 0 {
            return Err(PkiError::Invalid(
                "--days 0: a certificate must be valid for at least one day".into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        // 9999-12-31T23:59:59Z.
        let last = OffsetDateTime::from_unix_timestamp(253_402_300_799).ok();
        let not_after = now
            .checked_add(Duration::days(i64::from(days)))
            .filter(|t| last.is_some_and(|last| *t <= last))
            .ok_or_else(|| {
                PkiError::Invalid(format!(
                    "--days {days}: the certificate would end after 9999-12-31, the last date X.509 can express"
                ))
            })?;
        Ok(Validity {
            not_before: now - Duration::minutes(5),
            not_after,
        })
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth: an edge's gRPC server, an ingress.
    Server,
    /// clientAuth: the gateway, nginx's upstream connection.
    Client,
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PkiError::Invalid("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&bytes))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new self-signed CA.
pub fn new_ca(
    common_name: &str,
    key_type: KeyType,
    validity: Validity,
) -> Result<Issued, PkiError> {
    let key = key_type.generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = validity.not_before;
    p.not_after = validity.not_after;
    p.serial_number = Some(serial()?);
    let cert = p.self_signed(&key).map_err(rc("signing the CA"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf certificate signed by `ca`.
pub fn issue(
    ca: &Issued,
    usage: Usage,
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
    key_type: KeyType,
    validity: Validity,
) -> Result<Issued, PkiError> {
    if name.is_empty() {
        return Err(PkiError::Invalid("--name must not be empty".into()));
    }
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rc("reading the CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(rc("reading the CA certificate"))?;
    let key = key_type.generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(name);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = match key_type {
        KeyType::Rsa => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
        _ => vec![KeyUsagePurpose::DigitalSignature],
    };
    p.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let mut sans = Vec::new();
    // A client's name is its identity for allow-lists; put it in a SAN when it is a valid DNS name.
    let mut names: Vec<&str> = dns.iter().map(String::as_str).collect();
    if usage == Usage::Client && !names.contains(&name) {
        names.insert(0, name);
    }
    for d in names {
        match d.to_owned().try_into() {
            Ok(ia5) => sans.push(SanType::DnsName(ia5)),
            Err(e) if usage == Usage::Client && d == name => {
                tracing::debug!(name = d, error = %e, "client name is not a DNS name; CN only");
            }
            Err(e) => return Err(PkiError::Invalid(format!("invalid DNS name {d:?}: {e}"))),
        }
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    if usage == Usage::Server && sans.is_empty() {
        return Err(PkiError::Invalid(
            "a server certificate needs at least one --dns or --ip".into(),
        ));
    }
    p.subject_alt_names = sans;
    p.not_before = validity.not_before;
    p.not_after = validity.not_after;
    p.serial_number = Some(serial()?);
    p.use_authority_key_identifier_extension = true;
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(rc("signing the certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads a CA from `dir/ca.crt` and `dir/ca.key`.
pub fn read_ca(dir: &Path) -> Result<Issued, PkiError> {
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
    };
    Ok(Issued {
        cert_pem: read("ca.crt")?,
        key_pem: read("ca.key")?,
    })
}

/// A P-256 leaf certificate signed by `ca`, written as `<dir>/<name>.crt` and `<dir>/<name>.key`
/// (replacing existing files): what tests and local setups issue over and over.
pub fn issue_into(
    dir: &Path,
    ca: &Issued,
    usage: Usage,
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
    validity: Validity,
) -> Result<Issued, PkiError> {
    let leaf = issue(ca, usage, name, dns, ips, KeyType::P256, validity)?;
    write_pair(dir, name, &leaf, true)?;
    Ok(leaf)
}

/// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (mode 0600), refusing to overwrite unless `force`.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    issued: &Issued,
    force: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    if !force {
        for p in [&crt, &key] {
            if p.exists() {
                return Err(PkiError::Exists(p.clone()));
            }
        }
    }
    write_private(&key, issued.key_pem.as_bytes()).map_err(io(&key))?;
    std::fs::write(&crt, issued.cert_pem.as_bytes()).map_err(io(&crt))?;
    Ok((crt, key))
}

/// Writes a file readable by its owner only (created 0600 before any byte is written).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open; tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}
