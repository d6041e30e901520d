#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz) on their seed corpus.
# Usage: scripts/fuzz.sh [SECONDS_EACH] [TARGET...]   (default: 10 s, every target)
# CI runs it for a few seconds each; for a long run: scripts/fuzz.sh 3600
# New inputs go to a scratch directory, so the seeds in fuzz/corpus stay as
# committed; a crash leaves its input in fuzz/artifacts/TARGET/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "Installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked --quiet
fi
# cargo fuzz passes -Z flags (sanitizer, coverage) that only nightly accepts;
# this machine's only toolchain is stable, and this lets it accept them.
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  (cd fuzz && cargo fuzz build --release "$target" 2>&1 | tail -1)
  log="$scratch/$target.log"
  if ! (cd fuzz && cargo fuzz run --release "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1); then
    tail -40 "$log"
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  echo "fuzz: $target: $runs executions in ${secs}s, no crash"
done
