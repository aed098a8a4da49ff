#!/usr/bin/env bash
# W1 benchmark: `weir replay` against a hand-written single-purpose loop
# (edge-agent/examples/w1_loop.rs) on the same file, in the same run,
# alternating, best of R runs each. Prints events/s, the ratio, peak RSS,
# the number of windows, and checks that both wrote the same bytes.
#
#   bash bench/w1.sh [EVENTS] [RUNS]     (default 10000000 events, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}
R=${2:-5}
DIR=${BENCH_DIR:-$(mktemp -d)}
cargo build --release -q -p weir-agent --bin weir --example w1_loop
WEIR=target/release/weir
LOOP=target/release/examples/w1_loop
IN="$DIR/w1_$N.csv"
[ -f "$IN" ] || "$WEIR" gen w1 --events "$N" --seed 1 -o "$IN"
best_w=999999; best_l=999999; rss_w=0; rss_l=0
for i in $(seq "$R"); do
  # Each prints "... rows in S s ..." and "peak RSS K KiB" on stderr.
  w=$("$WEIR" replay -p examples/w1.toml -i "$IN" -o "$DIR/weir.out" 2>&1)
  l=$("$LOOP" "$IN" "$DIR/loop.out" 2>&1)
  tw=$(sed -n 's/.* rows in \([0-9.]*\) s.*/\1/p' <<<"$w" | head -1)
  tl=$(sed -n 's/.* rows in \([0-9.]*\) s.*/\1/p' <<<"$l" | head -1)
  rss_w=$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' <<<"$w" | head -1)
  rss_l=$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' <<<"$l" | head -1)
  best_w=$(python3 -c "print(min($best_w, $tw))")
  best_l=$(python3 -c "print(min($best_l, $tl))")
  echo "run $i: weir ${tw}s  loop ${tl}s"
done
cmp -s "$DIR/weir.out" "$DIR/loop.out" || { echo "FAIL: weir and the loop wrote different results"; exit 1; }
windows=$(wc -l < "$DIR/weir.out")
flagged=$(grep -c ',true$' "$DIR/weir.out" || true)
python3 - "$N" "$best_w" "$best_l" "$rss_w" "$rss_l" "$windows" "$flagged" <<'PY'
import sys
n, tw, tl, rw, rl, win, fl = sys.argv[1:]
n, tw, tl = int(n), float(tw), float(tl)
print(f"W1 {n} events: weir replay {n/tw/1e6:.2f} M events/s, hand-written loop {n/tl/1e6:.2f} M events/s, ratio {tl/tw:.3f}")
print(f"peak RSS: weir {int(rw)/1024:.1f} MiB, loop {int(rl)/1024:.1f} MiB; windows {win} ({fl} flagged); outputs identical")
PY
