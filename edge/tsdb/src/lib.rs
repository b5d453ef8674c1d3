//! Meridian TSDB: Prometheus' storage formats (head, WAL, chunk segments, blocks, index) with one
//! housekeeping loop, and the Thanos bucket layout (object storage configuration, block upload with
//! `meta.json` last, the shipper). It depends on `meridian-core` only: the StoreAPI serves it through
//! the series-source seam (`meridian_core::series`).

pub mod block;
pub mod bounds;
pub mod chunks;
pub mod db;
pub mod head;
pub mod index;
pub mod mmap;
pub mod objstore;
pub mod postings;
pub mod shipper;
pub mod wal;

/// A hasher for keys that are already well distributed or dense integers (series references, label
/// hashes): one multiplication (Fibonacci hashing) instead of SipHash on the append path.
#[derive(Default, Clone, Copy)]
pub(crate) struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type RefMap<V> =
    std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<RefHasher>>;
