//! A throw-away PKI in one directory — a CA, one server certificate and one client certificate (P-256) —
//! for tests, benchmarks and local setups that need real mTLS without running the `meridian-pki` CLI.
//! Files: `ca.crt`/`ca.key`, `server.crt`/`server.key`, `client.crt`/`client.key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::issue::{self, KeyType, PkiError, Usage, Validity};
use crate::tls::{
    ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions, TlsError,
};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    /// The DNS name in the server certificate (clients verify against it, e.g. as SNI).
    pub server_name: String,
}

impl DevPki {
    /// Issues the CA (valid 2 days) and the two leaf certificates (1 day) into `dir`.
    pub fn create(dir: &Path, server_name: &str) -> Result<DevPki, PkiError> {
        let ca = issue::new_ca("meridian-dev-ca", KeyType::P256, Validity::days(2)?)?;
        issue::write_pair(dir, "ca", &ca, true)?;
        issue::issue_into(
            dir,
            &ca,
            Usage::Server,
            "server",
            &[server_name.to_owned()],
            &[],
            Validity::days(1)?,
        )?;
        issue::issue_into(
            dir,
            &ca,
            Usage::Client,
            "client",
            &[],
            &[],
            Validity::days(1)?,
        )?;
        Ok(DevPki {
            dir: dir.to_owned(),
            server_name: server_name.to_owned(),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Server TLS requiring client certificates from the CA (mTLS).
    pub fn server_tls(&self) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::load(
            "server",
            ServerTlsFiles {
                cert: self.path("server.crt"),
                key: self.path("server.key"),
                client_ca: Some(self.path("ca.crt")),
            },
            ServerTlsOptions::default(),
        )
    }

    /// Client TLS with the client certificate; `with_cert` false gives an anonymous client.
    pub fn client_tls(&self, with_cert: bool) -> Result<Arc<ClientTls>, TlsError> {
        ClientTls::load(
            if with_cert { "client" } else { "anonymous" },
            ClientTlsFiles {
                ca: self.path("ca.crt"),
                cert: with_cert.then(|| self.path("client.crt")),
                key: with_cert.then(|| self.path("client.key")),
            },
        )
    }
}
