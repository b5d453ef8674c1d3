//! The StoreAPI's integration tests, in one binary (link time and disk).

mod label_reads;
mod nodelay;
mod proto_wire;
mod series_wire;
mod storeapi_acceptance;
mod trim;
