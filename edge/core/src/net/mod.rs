//! Network helpers without TLS (TLS lives in `meridian-pki`).

pub mod dns;
