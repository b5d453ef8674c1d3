//! The TSDB's integration tests, in one binary (link time and disk).

mod promtool_blocks;
mod promtool_chunks;
