//! The gateway's integration tests, in one binary (link time and disk): each module was a test binary.

mod bucket_store;
mod cache_props;
mod compact;
mod discovery_dns;
mod downsampled;
mod endpoint_set;
mod fanout_acceptance;
mod fanout_rules;
mod gateway_query;
mod http_api;
mod probe;
mod promql_props;
mod promqltest;
mod rules;
mod select_hints;
mod shared_cache;
mod support;
