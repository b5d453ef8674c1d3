//! Meridian edge: the per-cluster binary's machinery — scrape (discovery, HTTP, parsing), remote-write
//! receive, metadata, the agent that wires them to the TSDB, the shipper and the StoreAPI.
//!
//! The shared model lives in `meridian-core`, the TSDB and the bucket layout in `meridian-tsdb`, the
//! StoreAPI in `meridian-storeapi`; the gateway depends on those, never on this crate.

pub mod agent;
pub mod config;
pub mod discovery;
pub mod metadata;
pub mod monitors;
pub mod receive;
pub mod remote;
pub mod scrape;
pub mod sidecar;
