#![no_main]
//! Fuzzes the SQL front end: any text gives a pipeline or an error with a
//! place, never a panic; a pipeline it accepts builds an engine and runs a
//! few rows.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match weir_agent::sql::parse("fuzz.sql", text) {
        Ok(p) => {
            p.pipeline.spec.clone().build().expect("a validated pipeline builds");
            let rows = b"a,1700000000000,1.5\nb,1700000001000,-2\n2020-04-15 08:05:00,4.00,C\n";
            let mut out = Vec::new();
            weir_agent::sql::exec::replay(&p, &rows[..], &mut out, |_, _| {})
                .expect("replay into memory");
        }
        Err(e) => {
            assert!(
                e.line <= text.lines().count() + 1,
                "error line beyond the text: {e}"
            );
        }
    }
});
