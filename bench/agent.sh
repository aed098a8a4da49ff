#!/usr/bin/env bash
# End-to-end benchmark of `weir run` through Debian's mosquitto on loopback:
# readings/s against the broker's own ceiling (same publisher, plain
# subscriber, same run), SenML packs of 100, peak RSS with 1,000 sensors,
# flash bytes per reading, recovery after SIGKILL, and the flash write budget
# (bytes per reading and ack wait with and without one, on a steady plant).
#   bash bench/agent.sh [--readings N] [--rounds R] [--recover-readings M]
#                       [--steady-rate R] [--steady-secs S] [--budget 2GiB]
#                       [--only-budget] [--only-senml] [--only-recovery]
#                       [--recover-rounds R] [--weir-compare PATH] [--no-board]
# --no-board skips the gateway build's RSS (saves a size-optimised static
# musl build; the others need rustup's $(uname -m)-unknown-linux-musl target).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
    echo "needs mosquitto: apt-get install mosquitto" >&2; exit 1; }
# The gateway build as `weir bundle` makes it (static musl, opt-level z,
# no unwind tables, identical functions folded), for this machine's
# architecture: a dynamically linked glibc build maps libc and ld.so too
# (~1.5 MiB) and allocates differently.
HOST_MUSL=$(uname -m)-unknown-linux-musl
board=(--weir-board "target/$HOST_MUSL/board/weir")
args=()
for a in "$@"; do
    if [ "$a" = --no-board ]; then board=(); else args+=("$a"); fi
done
cargo build --release -q --locked -p weir-agent --bin weir
# The binary a gateway runs (no demo broker, opt-level z), for its RSS.
if [ ${#board[@]} -gt 0 ]; then
    rustup target add "$HOST_MUSL" >/dev/null
    triple=$(tr 'a-z-' 'A-Z_' <<<"$HOST_MUSL")
    linker="CARGO_TARGET_${triple}_LINKER" cc="CC_${HOST_MUSL//-/_}"
    export "$linker=${!linker:-rust-lld}" "$cc=${!cc:-gcc}"   # gcc: for ring's C
    cargo rustc --profile board -q --locked -p weir-agent --bin weir --no-default-features --target "$HOST_MUSL" \
        -- -C "link-arg=-T$(realpath boards/no-unwind-tables.ld)" -C link-arg=--no-eh-frame-hdr -C link-arg=--icf=all
fi
cargo run --release -q --locked -p weir-e2e --example agent_bench -- \
    --weir target/release/weir "${board[@]}" "${args[@]}"
