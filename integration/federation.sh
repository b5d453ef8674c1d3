#!/usr/bin/env bash
# Meridian's run command: builds the binaries and starts a complete local federation on loopback
# (2 clusters × 2 edge replicas, DNS SRV discovery, mTLS, the gateway at http://127.0.0.1:10902).
# Flags go to meridian-federation (`--help`); Ctrl-C stops everything in order.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test command's build, so the two commands share one: `cargo test` resolves features with the
# test-only dependencies (tokio's `test-util`, the StoreAPI acceptance suite, ...) and a plain
# `cargo build` without them, which after the test command recompiled every dependency (issue 23).
cargo test --workspace --tests --no-run --locked
target="${CARGO_TARGET_DIR:-target}"
exec "$target/debug/meridian-federation" "$@"
