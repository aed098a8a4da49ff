#!/usr/bin/env bash
# End-to-end benchmark of `weir run` through Debian's mosquitto on loopback:
# readings/s against the broker's own ceiling (same publisher, plain
# subscriber, same run), SenML packs of 100, peak RSS with 1,000 sensors,
# flash bytes per reading, recovery after SIGKILL, and the flash write budget
# (bytes per reading and ack wait with and without one, on a steady plant).
#   bash bench/agent.sh [--readings N] [--rounds R] [--recover-readings M]
#                       [--steady-rate R] [--steady-secs S] [--budget 2GiB]
#                       [--only-budget] [--only-senml] [--no-board]
# --no-board skips the gateway build's RSS (saves a size-optimised build).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
    echo "needs mosquitto: apt-get install mosquitto" >&2; exit 1; }
board=(--weir-board target/board/weir)
args=()
for a in "$@"; do
    if [ "$a" = --no-board ]; then board=(); else args+=("$a"); fi
done
cargo build --release -q --locked -p weir-agent --bin weir
# The binary a gateway runs (no demo broker, opt-level z), for its RSS.
[ ${#board[@]} -eq 0 ] || cargo build --profile board -q --locked -p weir-agent --bin weir --no-default-features
cargo run --release -q --locked -p weir-e2e --example agent_bench -- \
    --weir target/release/weir "${board[@]}" "${args[@]}"
