//! The StoreAPI's integration tests, in one binary (link time and disk).

mod proto_wire;
mod storeapi_acceptance;
