#!/usr/bin/env bash
# Builds boards/mcu-example for thumbv7em-none-eabihf (it must link), runs
# its host tests, and prints flash and RAM use. Installs only the rust target
# and llvm-tools.
#
#   bash boards/mcu-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=thumbv7em-none-eabihf
MANIFEST=boards/mcu-example/Cargo.toml
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rustup target add "$TARGET" >/dev/null
rustup component add llvm-tools >/dev/null 2>&1 || true

echo "== mcu-example: host tests"
cargo test --locked -q --manifest-path "$MANIFEST"
echo "== mcu-example: clippy for $TARGET"
cargo clippy --locked -q --manifest-path "$MANIFEST" --release --target "$TARGET" --lib --bins -- -D warnings
echo "== mcu-example: release build for $TARGET"
cargo build --locked -q --manifest-path "$MANIFEST" --release --target "$TARGET"
BIN="$CARGO_TARGET_DIR/$TARGET/release/mcu-example"
SIZE="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-size"
if [ -x "$SIZE" ]; then
    "$SIZE" -A "$BIN" | awk '
        /^\.(vector_table|text|rodata)/ { flash += $2 }
        /^\.data/ { flash += $2; ram += $2 }
        /^\.(bss|uninit)/ { ram += $2 }
        END { printf "flash: %d bytes (vector table + text + rodata + data)\nstatic RAM: %d bytes (data + bss; the node itself lives on the stack)\n", flash, ram }'
else
    echo "llvm-size not found; install with: rustup component add llvm-tools" >&2
    ls -l "$BIN"
fi
