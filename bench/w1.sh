#!/usr/bin/env bash
# W1 benchmark: `weir replay` with examples/w1.toml and with examples/w1.sql
# against the shared single-purpose W1 loop (../shared/bench/w1-reference,
# built here into target/w1-reference; never copied into the project) on
# the same file, in the same run, alternating, best of R runs each.
# Prints events/s and the ratios, peak RSS, and checks that all three give
# the same windows (sorted; floats within 5e-7: the reference writes
# shortest round-trip floats, weir 6 decimals; SQL datetimes read as
# epoch ms).
#
#   bash bench/w1.sh [EVENTS] [RUNS]     (default 10000000 events, 5 runs)
#
# Last runs (10 M events, 5 runs, shared 2-core VM, other builds running):
# TOML 0.744, 0.851 and 0.815, SQL 0.688, 0.795 and 0.775 (before the one-pass decoder,
# exact fast float parsing and the SQL timestamp cache: 0.61-0.67 and
# 0.57-0.60). Wall times swing by 2x on that machine; for a change, count
# instructions instead: valgrind --tool=callgrind on 1 M events gives
# 1007 (TOML) and 1086 (SQL) per event, the reference 815 (was 1284, 1407).
# Cache misses matter as much (1,000 keys, ~10 samples a window): under
# cachegrind (500 k events) weir has 8.4 D1 misses per event, the reference
# 3.5. Tried and dropped, no gain in wall time: key names inline in the key
# table's slots (8.4 -> 7.2 misses, +1-4% instructions) and a key's first
# two windows inline in its state (no fewer misses, +3% instructions).
#   W1_REFERENCE=DIR  where the reference's Cargo.toml is
#                     (default ../shared/bench/w1-reference)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}
R=${2:-5}
DIR=${BENCH_DIR:-$(mktemp -d)}
REF_SRC=${W1_REFERENCE:-../shared/bench/w1-reference}
[ -f "$REF_SRC/Cargo.toml" ] || { echo "no W1 reference at $REF_SRC (set W1_REFERENCE)"; exit 2; }
cargo build --release -q -p weir-agent --bin weir
cargo build --release -q --locked --manifest-path "$REF_SRC/Cargo.toml" --target-dir target/w1-reference
WEIR=target/release/weir
REF=target/w1-reference/release
IN="$DIR/w1_$N.csv"
[ -f "$IN" ] || "$REF/w1gen" "$N" "$IN" 42 > /dev/null
secs() { sed -n 's/.* rows in \([0-9.]*\) s.*/\1/p' <<<"$1" | head -1; }
rss() { sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' <<<"$1" | head -1; }
best_t=999999; best_s=999999; best_r=999999; rss_t=0; rss_s=0
for i in $(seq "$R"); do
  r=$("$REF/w1" full "$IN" "$DIR/ref.out")
  t=$("$WEIR" replay -p examples/w1.toml -i "$IN" -o "$DIR/toml.out" 2>&1)
  s=$("$WEIR" replay -p examples/w1.sql -i "$IN" -o "$DIR/sql.out" 2>&1)
  tr=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['elapsed_s'])" "$r")
  tt=$(secs "$t"); ts=$(secs "$s"); rss_t=$(rss "$t"); rss_s=$(rss "$s")
  best_r=$(python3 -c "print(min($best_r, $tr))")
  best_t=$(python3 -c "print(min($best_t, $tt))")
  best_s=$(python3 -c "print(min($best_s, $ts))")
  echo "run $i: reference ${tr}s  weir toml ${tt}s  weir sql ${ts}s"
done
python3 - "$N" "$best_r" "$best_t" "$best_s" "$rss_t" "$rss_s" "$DIR" <<'PY'
import sys, datetime
n, tr, tt, ts, rt, rs, d = sys.argv[1:]
n, tr, tt, ts = int(n), float(tr), float(tt), float(ts)

def ms(x):
    if x.isdigit():
        return int(x)
    t = datetime.datetime.strptime(x, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1000)

def rows(path, header):
    out = []
    with open(path) as f:
        if header:
            h = f.readline().strip()
            want = "sensor,window_start,window_end,count,mean,min,max,stddev,anomaly"
            assert h == want, f"{path}: header {h!r}, want {want!r}"
        for line in f:
            c = line.rstrip("\n").split(",")
            out.append((c[0], ms(c[1]), ms(c[2]), int(c[3]), *map(float, c[4:8]), c[8]))
    out.sort(key=lambda r: (r[0], r[1]))
    return out

ref = rows(f"{d}/ref.out", False)
for name, header in (("toml", False), ("sql", True)):
    got = rows(f"{d}/{name}.out", header)
    assert len(got) == len(ref), f"{name}: {len(got)} windows, reference {len(ref)}"
    for a, b in zip(got, ref):
        assert a[:4] == b[:4] and a[8] == b[8], f"{name}: {a} vs reference {b}"
        assert all(abs(x - y) <= 5e-7 + 1e-12 * max(1.0, abs(y)) for x, y in zip(a[4:8], b[4:8])), f"{name}: {a} vs reference {b}"
flagged = sum(r[8] == "true" for r in ref)
print(f"W1 {n} events: reference {n/tr/1e6:.2f} M events/s, weir toml {n/tt/1e6:.2f} M events/s "
      f"(ratio {tr/tt:.3f}), weir sql {n/ts/1e6:.2f} M events/s (ratio {tr/ts:.3f})")
print(f"peak RSS: toml {int(rt)/1024:.1f} MiB, sql {int(rs)/1024:.1f} MiB; "
      f"windows {len(ref)} ({flagged} flagged); all three equal")
PY
