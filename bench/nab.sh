#!/usr/bin/env bash
# Scores weir's default detector (Kestrel, examples/nab.toml) on the Numenta
# Anomaly Benchmark: runs `weir replay` over all 58 series into the scorer's
# layout OUT/weir/<category>/weir_<name>.csv, then the shared scorer at its
# best threshold and at the threshold the detector ships with.
#
#   bash bench/nab.sh [OUT]        (needs python3 with numpy and pandas)
#   KIND=kestrel_banded bash bench/nab.sh [OUT]   (guard: best >= 72.79)
#   KIND=kestrel_calibrated bash bench/nab.sh [OUT]   (reports, no guard)
set -euo pipefail
cd "$(dirname "$0")/.."
NAB=${NAB:-../shared/datasets/nab}
SCORER=${SCORER:-../shared/eval/nab_score.py}
OUT=${1:-$(mktemp -d)}
KIND=${KIND:-kestrel}
SHIPPED=0.2857142857142857   # Kestrel's threshold: likelihood tail p = 1e-4
PIPELINE=examples/nab.toml
if [ "$KIND" != kestrel ]; then
  SHIPPED=0.3333333333333333  # calibrated and banded: tail p = 1e-5 per sample
  PIPELINE=$(mktemp)
  sed "s/^kind = \"kestrel\"/kind = \"$KIND\"/" examples/nab.toml > "$PIPELINE"
fi
cargo build --release -q -p weir-agent --bin weir
rm -rf "$OUT/weir"
n=0
for f in "$NAB"/data/*/*.csv; do
  cat=$(basename "$(dirname "$f")")
  mkdir -p "$OUT/weir/$cat"
  target/release/weir replay -p "$PIPELINE" -i "$f" -o "$OUT/weir/$cat/weir_$(basename "$f")" 2>/dev/null
  rows_in=$(($(awk "END {print NR}" "$f") - 1))
  rows_out=$(($(awk "END {print NR}" "$OUT/weir/$cat/weir_$(basename "$f")") - 1))
  [ "$rows_in" = "$rows_out" ] || { echo "FAIL: $f: $rows_in rows in, $rows_out out"; exit 1; }
  n=$((n + 1))
done
echo "scored $n series into $OUT/weir"
echo "== best threshold (NAB's protocol: optimistic)"
python3 "$SCORER" --results "$OUT/weir" | tee "$OUT/best.txt"
echo "== shipped threshold $SHIPPED"
python3 "$SCORER" --results "$OUT/weir" --threshold "$SHIPPED" | tee "$OUT/shipped.txt"
# Guard against regression (issue 15): standard profile >= 72.79 at the best
# threshold, >= 71.36 at the shipped one (the figures before issue 15).
std() { awk '$1 == "weir" && NF == 4 { print $2 }' "$1"; }
# kestrel_banded ranks like Kestrel below its threshold: its best-threshold
# score must not fall below Kestrel's (its shipped one is calibrated, not
# NAB-tuned: reported, not guarded)
if [ "$KIND" = kestrel_banded ]; then
  python3 - "$(std "$OUT/best.txt")" <<'PY'
import sys
best = float(sys.argv[1])
print(f"NAB standard (kestrel_banded): best {best:.2f} (target >= 72.79)")
sys.exit(0 if best >= 72.79 else 1)
PY
  exit
fi
[ "$KIND" = kestrel ] || exit 0
python3 - "$(std "$OUT/best.txt")" "$(std "$OUT/shipped.txt")" <<'PY'
import sys
best, shipped = map(float, sys.argv[1:])
print(f"NAB standard: best {best:.2f} (target >= 72.79), shipped {shipped:.2f} (target >= 71.36)")
sys.exit(0 if best >= 72.79 and shipped >= 71.36 else 1)
PY
