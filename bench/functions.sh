#!/usr/bin/env bash
# User functions in WebAssembly (docs/functions.md), in one run:
# - per-call cost of a scalar function (c_to_f) in wasmi against the same
#   code native, same process (edge-agent/examples/fn_bench.rs);
# - W1 computed by the keyed W1 guest (examples/w1_wasm.toml) against
#   native W1 (examples/w1.toml): `weir replay` on the same file,
#   alternating, best of R runs each, and the same rows checked;
# - RSS per live W1 instance; the board binary's size (wasmi included).
#
#   bash bench/functions.sh [EVENTS] [RUNS]   (default 2000000 events, 3 runs)
# Needs: rustup target add wasm32-unknown-unknown
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
R=${2:-3}
DIR=${BENCH_DIR:-$(mktemp -d)}
examples/functions/build.sh >/dev/null
cargo build --release -q -p weir-agent --bin weir --example fn_bench
WEIR=target/release/weir
target/release/examples/fn_bench examples/functions/wasm/unit.wasm examples/functions/wasm/w1.wasm
IN="$DIR/w1_$N.csv"
[ -f "$IN" ] || "$WEIR" gen w1 --events "$N" --seed 1 -o "$IN"
best_n=999999; best_w=999999
for i in $(seq "$R"); do
  n=$("$WEIR" replay -p examples/w1.toml -i "$IN" -o "$DIR/native.out" 2>&1)
  w=$("$WEIR" replay -p examples/w1_wasm.toml -i "$IN" -o "$DIR/wasm.out" 2>&1)
  tn=$(sed -n 's/.* rows in \([0-9.]*\) s.*/\1/p' <<<"$n" | head -1)
  tw=$(sed -n 's/.* rows in \([0-9.]*\) s.*/\1/p' <<<"$w" | head -1)
  best_n=$(python3 -c "print(min($best_n, $tn))")
  best_w=$(python3 -c "print(min($best_w, $tw))")
  echo "run $i: native ${tn}s  wasm ${tw}s"
done
cmp -s <(sort "$DIR/native.out") <(sort "$DIR/wasm.out") || { echo "FAIL: W1 native and W1 in WebAssembly wrote different rows"; exit 1; }
python3 - "$N" "$best_n" "$best_w" "$(wc -l < "$DIR/native.out")" <<'PY'
import sys
n, tn, tw, win = sys.argv[1:]
n, tn, tw = int(n), float(tn), float(tw)
print(f"W1 {n} events: native {n/tn/1e6:.2f} M events/s, WebAssembly {n/tw/1e6:.2f} M events/s, ratio {tn/tw:.3f}; {win} windows, same rows")
PY
cargo build --profile board -q -p weir-agent --bin weir --no-default-features
python3 -c "import os; s=os.path.getsize('target/board/weir'); print(f'board binary (opt-level z, wasmi included): {s} bytes = {s/1e6:.2f} MB')"
