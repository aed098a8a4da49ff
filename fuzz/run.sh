#!/usr/bin/env bash
# Runs every decoder fuzz target for N seconds each (default 20).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz and a nightly toolchain. New inputs go to
# fuzz/corpus/<target> (ignored by git); the committed seeds in
# fuzz/seeds/<target> are read too. A crash leaves its input in
# fuzz/artifacts/<target> and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
