#![no_main]
//! Fuzzes the pipeline file parser: any text gives a pipeline or an error
//! with a place, never a panic; a pipeline it accepts builds an engine.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match weir_agent::pipeline_file::parse("fuzz.toml", text) {
        Ok(pf) => {
            pf.spec.build().expect("a validated pipeline builds");
        }
        Err(e) => {
            assert!(
                e.line <= text.lines().count() + 1,
                "error line beyond the text: {e}"
            );
        }
    }
});
