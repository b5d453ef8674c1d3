//! The edge's storage, in Prometheus' TSDB formats. So far: chunk segment files.

pub mod block;
pub mod chunks;
pub mod db;
pub mod head;
pub mod index;
pub mod postings;
pub mod wal;
