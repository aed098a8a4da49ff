#![no_main]
//! Fuzzes snapshot restore with arbitrary bytes: an error or a consistent
//! engine, never a panic, and a restored engine keeps working.

use libfuzzer_sys::fuzz_target;
use weir_core::prelude::*;

fn spec() -> PipelineSpec {
    let mut s = PipelineBuilder::new("fuzz")
        .source(SourceSpec::new("s", ["v"]).out_of_orderness(30))
        .window("t", "s", "v", WindowKind::Tumbling { size: 40 })
        .aggregate([AggKind::Count, AggKind::Mean, AggKind::Percentile(90.0)])
        .allowed_lateness(20)
        .detect(AggKind::Mean, DetectorSpec::default())
        .done()
        .window("ses", "s", "v", WindowKind::Session { gap: 15 })
        .aggregate([AggKind::Count, AggKind::Kurtosis])
        .done()
        .window("cnt", "s", "v", WindowKind::Count { size: 5 })
        .aggregate([AggKind::Sum])
        .done()
        .detect("z", "s", "v", DetectorSpec::kestrel())
        .spec();
    s.state.ttl = Some(500);
    s
}

fuzz_target!(|data: &[u8]| {
    let mut e = spec().build().unwrap();
    if e.restore(data).is_ok() {
        // Whatever was restored must keep working.
        for i in 0..5 {
            let _ = e.handle_sample(i, 0, &format!("k{i}"), 1_700_000_000_000 + i, &[i as f64]);
        }
        e.handle_end_of_input();
        while e.poll_output().is_some() {}
        let again = e.snapshot().expect("drained");
        let mut f = spec().build().unwrap();
        f.restore(&again)
            .expect("a snapshot of a restored engine restores");
    }
});
