#![no_main]
//! Fuzzes the journal's chunk decoder with damaged bytes: an error, never a
//! panic.

use libfuzzer_sys::fuzz_target;
use weir_agent::store::codec::BatchDecoder;

fuzz_target!(|data: &[u8]| {
    let Ok(mut d) = BatchDecoder::new(data) else {
        return;
    };
    let mut values = Vec::new();
    for _ in 0..=d.count() {
        match d.next_record(&mut values) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
