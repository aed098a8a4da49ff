#![no_main]
//! Fuzzes the gateway file parser (`gateway.toml`): any text gives a
//! config or an error with a place, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match weir_agent::gateway::parse("gateway.toml", text, std::path::Path::new("/nonexistent")) {
        Ok(g) => {
            assert!(!g.id.is_empty() && !g.id.contains(['/', '+', '#']));
            assert!(g.group_records >= 1);
        }
        Err(e) => {
            assert!(
                e.line <= text.lines().count() + 1,
                "error line beyond the text: {e}"
            );
        }
    }
});
