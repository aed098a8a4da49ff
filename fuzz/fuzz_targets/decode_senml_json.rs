#![no_main]
//! Fuzzes the `senml_json` decoder: no panic, no broken batch invariant.

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_agent::decode::Decoder;

static DECODERS: OnceLock<Vec<Decoder>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    common::run(
        DECODERS.get_or_init(|| common::decoders("senml_json")),
        data,
    );
});
