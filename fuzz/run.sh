#!/usr/bin/env bash
# Runs every decoder fuzz target for N seconds each (default 20).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Builds the targets with cargo itself, with the coverage instrumentation
# cargo-fuzz uses (libFuzzer's sanitizer-coverage, `--cfg fuzzing`, debug
# assertions and overflow checks), so it needs neither cargo-fuzz nor a
# nightly toolchain; `cargo fuzz run <target>` works on the same crate too.
# The decoders are safe Rust, so the fuzzers look for panics, hangs and
# memory blow-ups; WEIR_FUZZ_SANITIZER=address adds AddressSanitizer (a
# nightly flag: uses nightly if installed, else RUSTC_BOOTSTRAP=1 on stable,
# which ships the sanitizer runtimes). New inputs go to fuzz/corpus/<target>
# (ignored by git); the committed seeds in fuzz/seeds/<target> are read too.
# A crash leaves its input in fuzz/artifacts/<target> and makes this script
# fail.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^weir-fuzz$')
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
tc=()
if [ "${WEIR_FUZZ_SANITIZER:-none}" = address ]; then
    flags+=" -Zsanitizer=address"
    if rustup run nightly rustc --version >/dev/null 2>&1; then
        tc=(+nightly)
    else
        export RUSTC_BOOTSTRAP=1
    fi
fi
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
echo "== build ${#targets[@]} fuzz targets ($host, sanitizer ${WEIR_FUZZ_SANITIZER:-none})"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
RUSTFLAGS="$flags" cargo "${tc[@]}" build -q --release --target "$host" "${bins[@]}"

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    log="$(mktemp)"
    if "target/$host/release/$t" "corpus/$t" "seeds/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^Done|stat::number_of_executed_units|DONE' "$log" || tail -3 "$log"
    else
        cat "$log"
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t"
        exit 1
    fi
    rm -f "$log"
done
