#!/usr/bin/env bash
# Runs every decoder fuzz target for N seconds each (default 20).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz; uses the nightly toolchain if there is one, else stable
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags; stable ships
# the sanitizer runtimes). New inputs go to
# fuzz/corpus/<target> (ignored by git); the committed seeds in
# fuzz/seeds/<target> are read too. A crash leaves its input in
# fuzz/artifacts/<target> and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
if rustup run nightly rustc --version >/dev/null 2>&1; then
    tc=+nightly
else
    tc=+stable
    export RUSTC_BOOTSTRAP=1
fi
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo $tc fuzz list)
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    log="$(mktemp)"
    if cargo $tc fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^Done|stat::number_of_executed_units|DONE' "$log" || tail -3 "$log"
    else
        cat "$log"
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t"
        exit 1
    fi
done
