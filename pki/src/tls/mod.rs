//! The TLS library used by the edge and the gateway: server and client configurations with mTLS, hot
//! reload, and plumbing for tonic and axum. Flag names follow Thanos ([`args`]).

pub mod args;
pub mod client;
pub mod material;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod web_config;

pub use client::{ClientTls, ClientTlsFiles, ConnectError, Dial, TlsConnector};
pub use material::{Role, TlsError};
pub use metrics::TlsMetrics;
pub use reload::{Reloadable, Watcher, watch};
pub use server::{
    PeerInfo, ServerTls, ServerTlsFiles, ServerTlsOptions, TlsConn, TlsIncoming, Versions,
};
pub use web_config::load_web_config;
