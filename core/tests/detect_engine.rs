//! Detectors inside the engine: a raw-sample detect operator gives exactly
//! the bare detector's scores and its alert gate's raises, per key, and NaN
//! samples are rejected and counted without touching detector state.

use weir_core::detect::{AlertEdge, AlertGate, Detector, DetectorConfig, DetectorSpec};
use weir_core::prelude::*;

#[test]
fn engine_scores_equal_the_bare_detector() {
    let mut engine = PipelineBuilder::new("k")
        .source(SourceSpec::new("s", ["v"]))
        .detect("kestrel", "s", "v", DetectorSpec::kestrel())
        .build()
        .unwrap();
    let mut bare: Vec<(Detector, AlertGate)> = (0..3)
        .map(|_| {
            let d = Detector::new(&DetectorConfig::default());
            let g = AlertGate::new(
                d.default_threshold(),
                0.0,
                weir_core::detect::DEFAULT_COOLDOWN,
            );
            (d, g)
        })
        .collect();
    let t0 = 1_700_000_000_000i64;
    let mut got = Vec::new();
    let mut want = Vec::new();
    let mut nan = 0;
    for i in 0..3_000i64 {
        let k = (i % 3) as usize;
        let mut v = 10.0 + ((i / 3) as f64 / 20.0).sin() + (k as f64);
        if i == 2_400 {
            v += 40.0; // a spike on key 0
        }
        if i % 500 == 7 {
            v = f64::NAN;
        }
        let ts = t0 + i * 1000;
        match engine.handle_sample(ts, 0, &format!("k{k}"), ts, &[v]) {
            Ok(()) => {
                let (d, g) = &mut bare[k];
                let s = d.update(ts, v).unwrap();
                want.push((k, ts, s.to_bits(), g.update(s) == Some(AlertEdge::Raised)));
            }
            Err(Reject::NonFinite) => nan += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        while let Some(o) = engine.poll_output() {
            if let Output::Score(s) = o {
                let k: usize = engine.key_name(s.key)[1..].parse().unwrap();
                got.push((k, s.ts, s.verdict.score.to_bits(), s.verdict.flag));
            }
        }
    }
    engine.handle_end_of_input();
    while let Some(o) = engine.poll_output() {
        if let Output::Score(s) = o {
            let k: usize = engine.key_name(s.key)[1..].parse().unwrap();
            got.push((k, s.ts, s.verdict.score.to_bits(), s.verdict.flag));
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got.len(), 3_000 - nan);
    assert_eq!(got, want);
    assert!(
        got.iter().any(|g| g.0 == 0 && g.3),
        "the spike raised an alert on key 0"
    );
    assert_eq!(engine.stats().rejected(Reject::NonFinite), nan as u64);
}
