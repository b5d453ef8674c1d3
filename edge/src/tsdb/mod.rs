//! The edge's storage, in Prometheus' TSDB formats. So far: chunk segment files.

pub mod block;
pub mod chunks;
pub mod index;
pub mod postings;
pub mod wal;
