//! Meridian TSDB: Prometheus' storage formats (head, WAL, chunk segments, blocks, index) with one
//! housekeeping loop, and the Thanos bucket layout (object storage configuration, block upload with
//! `meta.json` last, the shipper). It depends on `meridian-core` only: the StoreAPI serves it through
//! the series-source seam (`meridian_core::series`).

pub mod block;
pub mod blockwriter;
pub mod bounds;
pub mod chunks;
pub mod db;
pub mod head;
pub mod index;
pub mod listing;
pub mod marks;
pub mod mmap;
pub mod objstore;
pub mod postings;
pub mod promwal;
pub mod shipper;
pub mod wal;

/// A hasher for keys that are already well distributed or dense integers (series references, label
/// hashes): one multiplication (Fibonacci hashing) instead of SipHash on the append path.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix_bytes(self.0, bytes);
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(FIB);
    }
}

const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(FIB);
    }
    h
}

/// Hashes a series reference to itself in the low bits, so that `HashMap` (hashbrown picks the bucket
/// from the low bits) puts consecutive references in consecutive buckets; the top 7 bits, which
/// hashbrown keeps as the control tag, are mixed so probes still tell entries apart. For maps read in
/// reference order (a WAL reader's series cache): the walk stays mostly sequential in memory. Only
/// locality depends on hashbrown's layout; lookups are correct with any.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix_bytes(self.0, bytes);
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x ^ (x.wrapping_mul(FIB) & 0xFE00_0000_0000_0000);
    }
}

pub type RefMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<RefHasher>>;
