//! Snapshot at random points, restore into a fresh engine, continue: the
//! outputs are identical to an uninterrupted run, bit for bit and in order.
//! Restoring into a changed pipeline keeps state by operator id.

mod common;

use common::*;
use proptest::prelude::*;
use weir_core::detect::DetectorSpec;
use weir_core::prelude::*;
use weir_core::snapshot::{OpRestore, SnapshotError};
use weir_core::spec::{DetectSpec, OperatorKind, OperatorSpec, WindowSpec};

fn full_spec() -> PipelineSpec {
    let win = |id: &str, kind, lateness, detect: bool| OperatorSpec {
        id: id.into(),
        source: "s".into(),
        field: "v".into(),
        kind: OperatorKind::Window(WindowSpec {
            kind,
            allowed_lateness: lateness,
            aggregates: vec![
                AggKind::Count,
                AggKind::Mean,
                AggKind::Stddev,
                AggKind::Kurtosis,
                AggKind::Max,
                AggKind::Percentile(90.0),
            ],
            detect: detect.then(|| DetectSpec {
                on: Some(AggKind::Mean),
                detector: DetectorSpec::default(),
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            }),
        }),
    };
    let mut spec = spec(WindowKind::Tumbling { size: 40 }, 30, 0);
    spec.operators = vec![
        win("tumble", WindowKind::Tumbling { size: 40 }, 25, true),
        win(
            "slide",
            WindowKind::Sliding {
                size: 60,
                slide: 20,
            },
            0,
            false,
        ),
        win("session", WindowKind::Session { gap: 15 }, 10, true),
        win("count", WindowKind::Count { size: 7 }, 0, false),
        OperatorSpec {
            id: "raw".into(),
            source: "s".into(),
            field: "v".into(),
            kind: OperatorKind::Detect(DetectSpec {
                on: None,
                detector: DetectorSpec::EwmaZ {
                    alpha: 0.2,
                    k: 2.0,
                    warmup: 3,
                },
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            }),
        },
        OperatorSpec {
            id: "kestrel".into(),
            source: "s".into(),
            field: "v".into(),
            kind: OperatorKind::Detect(DetectSpec {
                on: None,
                detector: DetectorSpec::kestrel(),
                order: SampleOrder::Arrival,
                fields: Vec::new(),
            }),
        },
    ];
    spec.state.ttl = Some(500);
    spec.state.max_keys = 5;
    spec.state.on_full = FullPolicy::EvictIdle;
    spec
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0u8..7, -60i64..40, -100i32..100), 1..400).prop_map(|raw| {
        raw.iter()
            .enumerate()
            .map(|(i, (k, d, v))| Ev {
                key: *k,
                ts: T0 + i as i64 * 4 + d,
                v: *v as f64 / 3.0,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn restore_continues_identically(evs in events(), cuts in prop::collection::vec(0usize..400, 0..5)) {
        let spec = full_spec();
        let (want, want_late, _) = run(&spec, &evs);
        let mut e = spec.clone().build().unwrap();
        let (mut got, mut late) = (Vec::new(), 0);
        for (i, ev) in evs.iter().enumerate() {
            if cuts.contains(&i) {
                let bytes = e.snapshot().unwrap();
                let mut fresh = spec.clone().build().unwrap();
                let report = fresh.restore(&bytes).unwrap();
                prop_assert!(report.operators.iter().all(|(_, o)| *o == OpRestore::Kept));
                prop_assert_eq!(fresh.snapshot().unwrap(), bytes, "restore then snapshot is the identity");
                e = fresh;
            }
            let _ = e.handle_sample(ev.ts, 0, &key_name(ev.key), ev.ts, &[ev.v]);
            drain(&mut e, &mut got, &mut late);
        }
        e.handle_end_of_input();
        drain(&mut e, &mut got, &mut late);
        prop_assert_eq!(late, want_late);
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.bits(), w.bits());
        }
    }

    #[test]
    fn restore_never_panics_on_damaged_bytes(evs in events(), flips in prop::collection::vec((0usize..10_000, any::<u8>()), 1..8), cut in 0usize..10_000) {
        let spec = full_spec();
        let (_, _, mut e) = run(&spec, &evs[..evs.len() / 2]);
        while e.poll_output().is_some() {}
        let mut bytes = e.snapshot().unwrap();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] ^= b;
        }
        let mut fresh = spec.clone().build().unwrap();
        if fresh.restore(&bytes).is_ok() {
            for k in 0..7u8 {
                let _ = fresh.handle_sample(T0, 0, &key_name(k), T0 + 1_000_000, &[2.0]);
            }
            fresh.handle_end_of_input();
            while fresh.poll_output().is_some() {}
        }
        let mut fresh = spec.clone().build().unwrap();
        let _ = fresh.restore(&bytes[..cut % (bytes.len() + 1)]);
        // Whatever happened, the engine still works, for old keys too.
        for k in 0..7u8 {
            for i in 0..3 {
                let _ = fresh.handle_sample(T0, 0, &key_name(k), T0 + 1_000_000 + i, &[i as f64]);
            }
        }
        let _ = fresh.handle_sample(T0, 0, "x", T0 + 1_000_000, &[1.0]);
        fresh.handle_end_of_input();
        while fresh.poll_output().is_some() {}
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let evs: Vec<Ev> = (0..200)
        .map(|i| Ev {
            key: (i % 7) as u8,
            ts: T0 + i * 5 - (i % 9) * 7,
            v: i as f64,
        })
        .collect();
    let mut spec = full_spec();
    // Every byte of the engine's own structure; Kestrel's ~5.6 KB per key is
    // covered by sampled cuts below.
    spec.operators.retain(|o| o.id != "kestrel");
    let (_, _, e) = run(&spec, &evs[..150]);
    let bytes = e.snapshot().unwrap();
    for n in 0..bytes.len() {
        let mut fresh = spec.clone().build().unwrap();
        assert!(
            fresh.restore(&bytes[..n]).is_err(),
            "truncation at {n} accepted"
        );
    }
    let spec = full_spec();
    let (_, _, e) = run(&spec, &evs[..150]);
    let bytes = e.snapshot().unwrap();
    for n in (0..bytes.len()).step_by(331) {
        let mut fresh = spec.clone().build().unwrap();
        assert!(
            fresh.restore(&bytes[..n]).is_err(),
            "truncation at {n} accepted"
        );
    }
}

#[test]
fn restore_into_a_changed_pipeline_keeps_matching_state() {
    let evs: Vec<Ev> = (0..100)
        .map(|i| Ev {
            key: (i % 3) as u8,
            ts: T0 + i * 3,
            v: (i % 11) as f64,
        })
        .collect();
    let spec = full_spec();
    let (_, _, e) = run(&spec, &evs[..0]);
    drop(e);
    let mut e = spec.clone().build().unwrap();
    for ev in &evs {
        e.handle_sample(ev.ts, 0, &key_name(ev.key), ev.ts, &[ev.v])
            .unwrap();
        while e.poll_output().is_some() {}
    }
    let bytes = e.snapshot().unwrap();

    let mut changed = spec.clone();
    // "slide" changes its window size: state type changes, state resets.
    if let OperatorKind::Window(w) = &mut changed.operators[1].kind {
        w.kind = WindowKind::Sliding {
            size: 80,
            slide: 20,
        };
    }
    // "session" changes its detector: windows kept, baselines reset.
    if let OperatorKind::Window(w) = &mut changed.operators[2].kind {
        w.detect = Some(DetectSpec {
            on: Some(AggKind::Max),
            detector: DetectorSpec::EwmaZ {
                alpha: 0.5,
                k: 3.0,
                warmup: 5,
            },
            order: SampleOrder::EventTime,
            fields: Vec::new(),
        });
    }
    // "count" is removed; "fresh" is new.
    changed.operators.remove(3);
    let mut newop = changed.operators[0].clone();
    newop.id = "fresh".into();
    changed.operators.push(newop);

    let mut r = changed.build().unwrap();
    let report = r.restore(&bytes).unwrap();
    let outcome = |id: &str| {
        report
            .operators
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    assert_eq!(outcome("tumble"), OpRestore::Kept);
    assert!(matches!(outcome("slide"), OpRestore::Reset { .. }));
    assert_eq!(
        outcome("session"),
        OpRestore::KeptWindows,
        "detector parameters changed: baselines reset, windows kept"
    );
    assert_eq!(outcome("raw"), OpRestore::Kept);
    assert_eq!(outcome("fresh"), OpRestore::New);
    assert_eq!(report.dropped, vec!["count".to_string()]);
    // Tumbling windows carry on: the open window's count continues.
    assert_eq!(r.key_count(), 3);
    r.handle_end_of_input();
    let mut tumble_total = 0.0;
    while let Some(o) = r.poll_output() {
        if let Output::Window(w) = o {
            if w.op == 0 {
                tumble_total += w.values.as_slice()[0];
            }
        }
    }
    assert!(
        tumble_total > 0.0,
        "open tumbling windows survived the update"
    );
}

#[test]
fn snapshot_refuses_with_outputs_pending_and_restore_needs_a_fresh_engine() {
    let spec = full_spec();
    let mut e = spec.clone().build().unwrap();
    for i in 0..100 {
        e.handle_sample(T0 + i * 10, 0, "a", T0 + i * 10, &[1.0])
            .unwrap();
    }
    assert_eq!(e.snapshot(), Err(SnapshotError::OutputsPending));
    while e.poll_output().is_some() {}
    let bytes = e.snapshot().unwrap();
    assert_eq!(e.restore(&bytes), Err(SnapshotError::NotFresh));
    let mut wrong = bytes.clone();
    wrong[14] = 0x02; // version 1 -> 2
    assert!(matches!(
        spec.build().unwrap().restore(&wrong),
        Err(SnapshotError::Version { .. })
    ));
}
