#!/bin/sh
# Builds the example user functions to WebAssembly and copies them to
# examples/functions/wasm/ (where examples/*.toml look for them).
# Needs: rustup target add wasm32-unknown-unknown
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo build --manifest-path "$here/Cargo.toml" --target wasm32-unknown-unknown --release
mkdir -p "$here/wasm"
for m in unit detector w1; do
    cp "$here/target/wasm32-unknown-unknown/release/weir_fn_$m.wasm" "$here/wasm/$m.wasm"
done
ls -l "$here/wasm"
