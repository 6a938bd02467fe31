#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), one after the other, and fails
# on the first crash or failed property. Installs cargo-fuzz if missing. Uses the machine's
# toolchain with RUSTC_BOOTSTRAP=1 (for -Zsanitizer), so no nightly toolchain is needed.
# The targets reach the library's internals through `tower_signed_redirect::fuzzing`, which
# is compiled only with `--cfg fuzzing`: cargo fuzz passes it (do not use `--no-cfg-fuzzing`).
#
# usage: bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
SECONDS_EACH=${1:-60}
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build --target-dir target-ci
for target in location matcher signed_url layer; do
  out=$(cargo fuzz run "$target" --target-dir target-ci -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz $target: FAILED"
    exit 1
  }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' <<<"$out")
  cov=$(grep -o 'cov: [0-9]*' <<<"$out" | tail -1)
  echo "fuzz $target: ok, $runs runs in ${SECONDS_EACH}s, $cov"
done
