#!/usr/bin/env bash
# Crash soak: the SIGKILL test again and again with many kills each time.
#   bash tests/soak.sh [ROUNDS] [KILLS]      # default 10 rounds of 200 kills
# A failure prints its WEIR_CRASH_SEED; rerun with it to replay the kills.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
kills="${2:-200}"
cargo test -q --locked -p weir-e2e --test recovery_crash --no-run
for r in $(seq "$rounds"); do
    echo "== soak round $r/$rounds: $kills kills"
    log="$(mktemp)"
    if WEIR_CRASH_KILLS="$kills" cargo test -q --locked -p weir-e2e --test recovery_crash -- --nocapture >"$log" 2>&1; then
        grep -E '^crash test' "$log" || true
    else
        cat "$log"; echo "soak: round $r failed"; exit 1
    fi
    rm -f "$log"
done
echo "soak: $rounds rounds of $kills kills passed"
