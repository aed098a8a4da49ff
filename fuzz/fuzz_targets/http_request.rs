#![no_main]
//! Fuzzes the dashboard's request parser (anyone who can reach the
//! listener writes its input): any bytes give a request, never a panic,
//! and the decoded path never grows.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = String::from_utf8_lossy(data);
    let r = weir_agent::run::web::Request::parse(&head);
    assert!(r.path.len() <= head.len());
    assert!(r.query.len() <= head.len());
    let _ = weir_agent::run::web::is_web(&r.path);
});
