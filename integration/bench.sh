#!/usr/bin/env bash
# Meridian's side-by-side benchmark command: Prometheus 2.42 and Meridian on the same data. Builds the
# release binaries, then runs, one after the other (never in parallel: each measures CPU time):
#   side_by_side          real processes: remote-write ingest per core, memory per active series,
#                         bytes per sample on disk, PromQL latency through the gateway over mTLS,
#                         cached-query latency;
#   promql_vs_prometheus  the engine in process over 24 h of data (1,068 comparisons);
#   cache_vs_prometheus   the results cache over 24 h;
#   head_memory           head memory per active series at 100k series;
#   query_latency         the fixed cost per small query through the gateway (mTLS and plaintext);
#   gateway_vs_prometheus the compliance queries through the gateway on 20k series x 24 h (~35 min);
#   remote_write_agent    agent mode vs Prometheus 2.42 --agent: 1,000 targets x 1,000 series, CPU,
#                         RSS, catch-up after a 5-minute receiver outage (~22 min);
#   sidecar_vs_prometheus the sidecar beside Prometheus 2.42 vs Prometheus itself, 10k series x 24 h;
#   receive_ingest        remote-write ingest of a 3-receiver hashring at RF=1 and RF=3 vs one edge.
#   compact_downsampled   the compactor vs Prometheus 2.42's compaction on 30 d x 1k series x 2
#                         replicas; a 30-day query at 1 h step on raw, 5m and 1h data (~15 min).
# Needs what ./integration/test.sh installs (Debian's prometheus) and the compliance query list at
# ../shared/conformance/compliance/promql-test-queries.yml. Results: BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked
for b in side_by_side promql_vs_prometheus cache_vs_prometheus head_memory query_latency gateway_vs_prometheus remote_write_agent sidecar_vs_prometheus receive_ingest compact_downsampled; do
  echo "== $b"
  cargo bench --locked -p meridian-integration --bench "$b"
done
