//! pki's integration tests, in one binary (link time and disk): each module was a test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod channel;
mod cli;
mod mtls;

/// The in-memory store both suites serve: external label `cluster="a"`, one series `up` with one sample.
fn up_store() -> meridian_storeapi::memstore::MemStore {
    let store = meridian_storeapi::memstore::MemStore::new(meridian_core::Labels::from_pairs([(
        "cluster", "a",
    )]));
    store
        .append(
            &meridian_core::Labels::from_pairs([("__name__", "up")]),
            &[meridian_core::Sample::new(1000, 1.0)],
        )
        .expect("append");
    store
}
