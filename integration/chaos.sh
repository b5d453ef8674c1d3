#!/usr/bin/env bash
# Chaos and soak runs over a local federation of real processes (issue 22; RELIABILITY.md):
#
#   ./integration/chaos.sh chaos [--duration 10m] [--seed N]
#   ./integration/chaos.sh soak [--duration 30m] [--every 30s] [--window 5m]
#
# Needs dnsmasq (Debian's dnsmasq-base) and moto_server (PyPI moto[server]), which the test command
# installs. State and logs: target/meridian-chaos.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test command's build, so the two commands share one: `cargo test` resolves features with the
# test-only dependencies (tokio's `test-util`, the StoreAPI acceptance suite, ...) and a plain
# `cargo build` without them, which after the test command recompiled every dependency (issue 23).
cargo test --workspace --tests --no-run --locked
exec target/debug/meridian-chaos "$@"
