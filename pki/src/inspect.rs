//! Describing a certificate: subject, issuer, SANs, key usages, validity, fingerprint.

use std::fmt;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// What `meridian-pki inspect` prints.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub extended_key_usages: Vec<String>,
    pub is_ca: bool,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER certificate, colon-separated hex.
    pub fingerprint_sha256: String,
}

impl CertInfo {
    /// Whether `now` (Unix seconds) is after `notAfter`.
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }

    pub fn not_yet_valid_at(&self, now: i64) -> bool {
        now < self.not_before
    }
}

/// Describes the first certificate of a PEM file.
pub fn inspect_file(path: &Path) -> Result<CertInfo, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no PEM certificate ({e})", path.display()))?;
    inspect_der(&der).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn inspect_der(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            sans.push(match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(ip) => format!("IP:{}", fmt_ip(ip)),
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::RFC822Name(e) => format!("email:{e}"),
                other => format!("{other:?}"),
            });
        }
    }
    let mut ekus = Vec::new();
    if let Ok(Some(eku)) = c.extended_key_usage() {
        let e = eku.value;
        for (on, name) in [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
            (e.any, "any"),
        ] {
            if on {
                ekus.push(name.to_owned());
            }
        }
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let fingerprint_sha256 = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: c.raw_serial_as_string(),
        sans,
        extended_key_usages: ekus,
        is_ca: c.is_ca(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        fingerprint_sha256,
    })
}

fn fmt_ip(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:02x?}"),
    }
}

fn rfc3339(ts: i64) -> String {
    meridian_core::time::rfc3339_nanos(i128::from(ts) * 1_000_000_000)
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:     {}", self.subject)?;
        writeln!(f, "issuer:      {}", self.issuer)?;
        writeln!(f, "serial:      {}", self.serial)?;
        writeln!(f, "is CA:       {}", self.is_ca)?;
        writeln!(
            f,
            "SANs:        {}",
            if self.sans.is_empty() {
                "-".to_owned()
            } else {
                self.sans.join(", ")
            }
        )?;
        writeln!(
            f,
            "ext. usage:  {}",
            if self.extended_key_usages.is_empty() {
                "-".to_owned()
            } else {
                self.extended_key_usages.join(", ")
            }
        )?;
        writeln!(f, "not before:  {}", rfc3339(self.not_before))?;
        writeln!(f, "not after:   {}", rfc3339(self.not_after))?;
        write!(f, "SHA-256:     {}", self.fingerprint_sha256)
    }
}
