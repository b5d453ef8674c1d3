//! The edge's integration tests, in one binary (link time and disk): each module was a test binary.

mod crash;
mod dns_sd;
mod ingest_process;
mod kubernetes_sd;
mod promtool_parse;
mod receive_tenants;
mod reloader;
mod remote_read;
mod remote_write;
mod remote_write_process;
mod scrape_proxy;
mod scrape_tls;
mod shipper;
mod sidecar_acceptance;
mod sidecar_process;
mod sidecar_prom;
mod support;
mod tsdb_acceptance;
