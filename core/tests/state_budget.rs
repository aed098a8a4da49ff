//! Keyed state under a flood of fake ids: new real sensors still get in,
//! and the byte budget holds.

mod common;

use common::*;
use weir_core::prelude::*;

/// A flood of one-reading fake ids with the default state settings
/// (key table smaller here, so the test is quick), then a new real sensor.
fn flood_then_real(mut s: PipelineSpec, fakes: i64) -> (Engine, usize) {
    s.state.max_keys = 1_000;
    let mut e = s.build().unwrap();
    for i in 0..fakes {
        let t = T0 + i;
        let _ = e.handle_sample(t, 0, &format!("fake-{i}"), t, &[1.0]);
        while e.poll_output().is_some() {}
    }
    let mut windows = 0;
    for j in 0..60 {
        let t = T0 + fakes + 10_000 + j * 100;
        e.handle_sample(t, 0, "real-sensor", t, &[2.0]).unwrap();
        while let Some(o) = e.poll_output() {
            if let Output::Window(w) = o {
                if e.key_name(w.key) == "real-sensor" {
                    windows += 1;
                }
            }
        }
    }
    (e, windows)
}

#[test]
fn a_flood_of_fake_ids_does_not_lock_out_a_new_sensor() {
    let (e, windows) = flood_then_real(spec(WindowKind::Tumbling { size: 1_000 }, 100, 0), 20_000);
    assert!(windows >= 4, "{windows}");
    assert_eq!(e.stats().rejected(Reject::KeyBudget), 0);
}

#[test]
fn the_byte_budget_holds_under_a_flood_and_counts_each_key_s_detector() {
    use weir_core::detect::{DetectorConfig, KestrelConfig};
    let mut s = spec(WindowKind::Tumbling { size: 1_000 }, 100, 0);
    if let weir_core::spec::OperatorKind::Window(w) = &mut s.operators[0].kind {
        w.aggregates.push(AggKind::Percentile(95.0));
        w.detect = Some(weir_core::spec::DetectSpec {
            on: Some(AggKind::Mean),
            detector: DetectorSpec::scored(DetectorConfig::Default(KestrelConfig::default())),
            order: SampleOrder::EventTime,
            fields: Vec::new(),
        });
    }
    // Kestrel's state (5,728 B) and the windows with their sketches.
    let cost = s.clone().build().unwrap().key_cost();
    assert!(cost > 5_728, "{cost}");
    s.state.max_bytes = 2 << 20;
    s.state.max_keys = usize::MAX;
    let mut e = s.build().unwrap();
    let most = (2 << 20) / cost;
    for i in 0..5_000i64 {
        let t = T0 + i;
        e.handle_sample(t, 0, &format!("fake-{i}"), t, &[1.0])
            .unwrap();
        while e.poll_output().is_some() {}
        assert!(e.state_bytes() <= 2 << 20, "{} at {i}", e.state_bytes());
        assert!(e.key_count() <= most);
    }
    assert!(e.key_count() >= most - 1, "{} of {most}", e.key_count());
    assert_eq!(
        e.stats().evicted(Eviction::Unproven),
        5_000 - e.key_count() as u64
    );
    assert_eq!(e.unproven_keys(), e.key_count());
    // A real sensor still gets in and, once proven, outlives the flood.
    let mut windows = 0;
    for j in 0..40 {
        let t = T0 + 20_000 + j * 100;
        e.handle_sample(t, 0, "real", t, &[1.0]).unwrap();
        for k in 0..5 {
            let f = format!("late-fake-{j}-{k}");
            e.handle_sample(t, 0, &f, t, &[1.0]).unwrap();
        }
        while let Some(o) = e.poll_output() {
            if matches!(o, Output::Window(w) if e.key_name(w.key) == "real") {
                windows += 1;
            }
        }
        assert!(e.state_bytes() <= 2 << 20);
    }
    assert!(windows >= 2, "{windows}");
    assert_eq!(e.stats().rejected(Reject::KeyBudget), 0);
}

#[test]
fn reject_policy_refuses_without_evicting_when_only_proven_keys_are_left() {
    let mut s = spec(WindowKind::Tumbling { size: 100 }, 0, 0);
    s.state.max_keys = 2;
    let mut e = s.build().unwrap();
    for k in ["a", "b"] {
        e.handle_sample(T0, 0, k, T0, &[1.0]).unwrap();
        e.handle_sample(T0, 0, k, T0 + 100, &[1.0]).unwrap();
    }
    assert_eq!(
        e.handle_sample(T0, 0, "c", T0 + 101, &[1.0]),
        Err(Reject::KeyBudget)
    );
    while e.poll_output().is_some() {}
    assert_eq!(e.key_count(), 2);
    assert_eq!(e.stats().keys_evicted, 0);
}
