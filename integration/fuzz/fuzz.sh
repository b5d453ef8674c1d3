#!/usr/bin/env bash
# Fuzzes Meridian's inputs with AFL++ on the stable toolchain (cargo-afl), one target after another.
#
#   integration/fuzz/fuzz.sh [--execs N] [--jobs J] [--resume] [target ...]
#
# Each target runs until N executions (default 10,000,000), J targets at a time (default 1); with
# --resume a target continues its last run in target/fuzz/<target> (corpus and execution count) instead
# of starting from the seeds. Findings go to
# target/fuzz/<target>/default/{crashes,hangs}; a summary line per target is printed from AFL's
# fuzzer_stats (executions, speed, corpus, crashes, hangs, time). Exits 1 when any target crashed or hung.
# Targets: promql exposition remote_write relabel storeapi index chunks (see src/lib.rs). Inputs that
# once crashed a target belong in seeds/<target>/, where the test suite replays them.
set -euo pipefail
cd "$(dirname "$0")/../.."

execs=10000000
jobs=1
targets=()
while (($#)); do
  case "$1" in
    --execs) execs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --resume) export AFL_AUTORESUME=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(promql exposition remote_write relabel storeapi index chunks)

if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl 0.18.2 (crates.io; builds AFL++)"
  cargo install --locked cargo-afl --version 0.18.2
fi
echo "== building the targets with AFL++ instrumentation (release)"
CARGO_TARGET_DIR=target/afl cargo afl build --release --locked -p meridian-fuzz --features afl
bin=target/afl/release/meridian-fuzz

export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
run_one() {
  local t=$1 out=target/fuzz/$1
  mkdir -p "$out"
  # -E: stop after that many executions; -t: a run over 2 s is a hang; -m none: the targets bound their
  # own memory (the test is that they do); -c -: no CMPLOG build (two instances would want it only once).
  cargo afl fuzz -i "integration/fuzz/seeds/$t" -o "$out" -E "$execs" -t 2000 -m none -c - \
    -- "$bin" "$t" >"$out/afl.log" 2>&1 || true
  local s="$out/default/fuzzer_stats"
  if [ ! -f "$s" ]; then
    echo "$t: afl-fuzz did not start; see $out/afl.log"; return
  fi
  awk -F' *: *' -v t="$t" '
    { v[$1] = $2 }
    END { printf "%s: %s executions, %s/s, corpus %s, crashes %s, hangs %s, %s s\n", t, v["execs_done"],
          v["execs_per_sec"], v["corpus_count"], v["saved_crashes"], v["saved_hangs"], v["run_time"] }' "$s"
}
export -f run_one
export execs bin
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}' | tee target/fuzz-summary.txt
if grep -Eq 'crashes [1-9]|hangs [1-9]|did not start' target/fuzz-summary.txt; then
  echo "== findings: see target/fuzz/<target>/default/{crashes,hangs}"
  exit 1
fi
