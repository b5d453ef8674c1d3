//! The compactor (`meridian-gateway compact`, issue 29): what Thanos' compactor does to a bucket —
//! compaction of each stream's blocks into larger ones, offline deduplication, downsampling,
//! retention and marks — as Thanos v0.25.1 plans and names it, so a bucket can be shared with Thanos.
//!
//! - [`plan`]: the streams (Thanos' group key) and which blocks of a stream compact next.

pub mod plan;
