//! Property tests: for every window kind, any arrival order within the
//! out-of-orderness bound gives the results of the reference model (sort by
//! time, group by window), and nothing is late.

mod common;

use common::*;
use proptest::prelude::*;
use weir_core::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn any_order_within_bound_matches_the_reference((in_order, arrival) in stream(), kind in kinds()) {
        let spec = spec(kind, BOUND, 0);
        let want = reference(kind, &in_order);
        let (a, late_a, ea) = run(&spec, &in_order);
        let (b, late_b, eb) = run(&spec, &arrival);
        prop_assert_eq!(late_a, 0);
        prop_assert_eq!(late_b, 0);
        assert_same_windows(a, want.clone());
        assert_same_windows(b, want);
        for e in [&ea, &eb] {
            let st = e.op_stats(0).unwrap();
            prop_assert_eq!(st.routed, in_order.len() as u64);
            prop_assert_eq!(st.on_time + st.updated + st.late, st.routed);
        }
    }

    /// Beyond the bound, samples may be late, but every one is counted once:
    /// on time + updated + late = routed, accepted + rejected = input.
    #[test]
    fn conservation_with_arbitrary_disorder(
        raw in prop::collection::vec((0u8..4, -300i64..300, -50i32..50), 1..300),
        kind in kinds(),
        lateness in prop_oneof![Just(0i64), 1i64..100],
    ) {
        let evs: Vec<Ev> = raw.iter().enumerate().map(|(i, (k, d, v))| Ev { key: *k, ts: T0 + i as i64 * 3 + d, v: *v as f64 }).collect();
        let spec = spec(kind, 20, lateness);
        let (rows, late, e) = run(&spec, &evs);
        let st = e.op_stats(0).unwrap();
        prop_assert_eq!(st.routed, evs.len() as u64);
        prop_assert_eq!(st.on_time + st.updated + st.late, st.routed);
        prop_assert_eq!(late, st.late);
        let es = e.stats();
        prop_assert_eq!(es.accepted + es.rejected_total(), es.input);
        prop_assert_eq!(es.input, evs.len() as u64);
        // Every on-time window's count sums to the samples that entered on
        // time, for tumbling windows (each sample in exactly one window).
        if let WindowKind::Tumbling { .. } = kind {
            if lateness == 0 {
                let total: f64 = rows.iter().filter(|r| !r.update).map(|r| r.vals[0]).sum();
                prop_assert_eq!(total as u64, st.on_time + st.updated);
            }
        }
    }
}

#[test]
fn late_samples_update_within_lateness_then_go_to_the_late_output() {
    let spec = spec(WindowKind::Tumbling { size: 10 }, 0, 5);
    let mut e = spec.build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    let t = T0;
    for (ts, v) in [(t, 1.0), (t + 9, 2.0), (t + 10, 3.0)] {
        e.handle_sample(ts, 0, "a", ts, &[v]).unwrap();
        drain(&mut e, &mut rows, &mut late);
    }
    // Window [t, t+10) fired at wm = t+10 >= t+9.
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].vals[0], 2.0);
    // Still within lateness (wm = t+10 < t+9+5): an update.
    e.handle_sample(t + 10, 0, "a", t + 3, &[4.0]).unwrap();
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 2);
    assert!(rows[1].update);
    assert_eq!(rows[1].vals[0], 3.0);
    // Move the watermark past the lateness horizon: the next one is late.
    e.handle_sample(t + 20, 0, "a", t + 20, &[5.0]).unwrap();
    drain(&mut e, &mut rows, &mut late);
    e.handle_sample(t + 20, 0, "a", t + 4, &[6.0]).unwrap();
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(late, 1);
    let st = e.op_stats(0).unwrap();
    assert_eq!(
        (st.on_time, st.updated, st.late, st.fired, st.updates),
        (4, 1, 1, 2, 1)
    );
}

#[test]
fn idle_source_stops_holding_the_watermark() {
    let mut spec = spec(WindowKind::Tumbling { size: 1000 }, 0, 0);
    spec.sources
        .push(SourceSpec::new("quiet", ["v"]).idle_timeout(5_000));
    spec.sources[0].idle_timeout = Some(5_000);
    let mut e = spec.clone().build().unwrap();
    let mut rows = Vec::new();
    let mut late = 0;
    e.handle_sample(T0, 1, "q", T0, &[1.0]).unwrap();
    for i in 0..=10 {
        let t = T0 + i * 500;
        e.handle_sample(t, 0, "a", t, &[1.0]).unwrap();
        drain(&mut e, &mut rows, &mut late);
    }
    assert!(
        rows.is_empty(),
        "within its idle timeout the quiet source holds the watermark"
    );
    assert!(!e.source_idle(1));
    // The driver's clock passes the timeout with the next sample: idle.
    e.handle_sample(T0 + 5_500, 0, "a", T0 + 5_500, &[1.0])
        .unwrap();
    drain(&mut e, &mut rows, &mut late);
    assert!(e.source_idle(1));
    assert_eq!(
        rows.len(),
        5,
        "windows up to the active source's watermark fire"
    );
    // handle_time alone does it too, for a driver whose sources all went quiet.
    let mut e2 = spec.clone().build().unwrap();
    e2.handle_sample(T0, 1, "q", T0, &[1.0]).unwrap();
    e2.handle_sample(T0 + 3_000, 0, "a", T0 + 3_000, &[1.0])
        .unwrap();
    e2.handle_time(T0 + 5_001);
    assert!(e2.source_idle(1));
    let (mut rows2, mut late2) = (Vec::new(), 0);
    drain(&mut e2, &mut rows2, &mut late2);
    assert_eq!(
        rows2.len(),
        0,
        "a's window [T0+3000, T0+4000) is not complete at watermark T0+2999"
    );
}

#[test]
fn future_guard_rejects_instead_of_dragging_the_watermark() {
    let mut spec = spec(WindowKind::Tumbling { size: 1000 }, 0, 0);
    spec.sources[0].max_ahead = Some(60_000);
    let mut e = spec.build().unwrap();
    assert_eq!(
        e.handle_sample(T0, 0, "a", T0 + 3_600_000, &[1.0]),
        Err(Reject::TooFarAhead)
    );
    assert_eq!(e.watermark(), Watermark::Idle);
    e.handle_sample(T0, 0, "a", T0 + 1, &[1.0]).unwrap();
    assert_eq!(e.watermark(), Watermark::EventTime(T0), "max - bound - 1");
    assert_eq!(e.stats().rejected(Reject::TooFarAhead), 1);
}

#[test]
fn processing_time_stamps_with_now_and_fires_on_handle_time() {
    let mut spec = spec(WindowKind::Tumbling { size: 1000 }, 0, 0);
    spec.time.mode = TimeMode::Processing;
    let mut e = spec.build().unwrap();
    let mut rows = Vec::new();
    let mut late = 0;
    e.handle_sample(T0 + 10, 0, "a", 42, &[1.0]).unwrap(); // payload ts ignored
    e.handle_sample(T0 + 20, 0, "a", 43, &[3.0]).unwrap();
    e.handle_time(T0 + 1_000);
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].start, rows[0].vals[0], rows[0].vals[1]),
        (T0, 2.0, 2.0)
    );
}

#[test]
fn a_window_first_seen_after_it_was_due_fires_at_once_as_an_update() {
    let spec = spec(WindowKind::Tumbling { size: 10 }, 0, 5);
    let mut e = spec.build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    e.handle_sample(T0, 0, "a", T0 + 9, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "a", T0 + 10, &[1.0]).unwrap(); // wm = T0 + 9 = fire time of [T0, T0+10)
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 1);
    e.handle_sample(T0, 0, "b", T0 + 2, &[7.0]).unwrap(); // b's window is already due
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(
        rows.len(),
        2,
        "emitted at once, not at some later watermark"
    );
    assert_eq!(
        (rows[1].key.as_str(), rows[1].update, rows[1].vals[0]),
        ("b", true, 1.0)
    );
}

proptest! {
    /// Percentiles stay within the sketch's relative error bound α = 2 % of
    /// the exact value at rank ⌈q·(n−1)⌉, for every window, with values
    /// spread over 12 decades of either sign (the default sketch keeps α
    /// over 13.3 decades per sign; beyond that it collapses uniformly and
    /// states a coarser bound, which the sketch's own tests cover).
    #[test]
    fn percentiles_within_the_documented_bound(mags in prop::collection::vec((0.0f64..1.0, any::<bool>()), 1..400), size in 5i64..80) {
        let vals: Vec<f64> = mags.iter().map(|(u, neg)| {
            let m = 10f64.powf(12.0 * u - 6.0);
            if *neg { -m } else { m }
        }).collect();
        let mut s = spec(WindowKind::Tumbling { size }, 0, 0);
        if let weir_core::spec::OperatorKind::Window(w) = &mut s.operators[0].kind {
            w.aggregates = vec![AggKind::Count, AggKind::Percentile(0.0), AggKind::Percentile(50.0), AggKind::Percentile(99.0), AggKind::Percentile(100.0)];
        }
        let evs: Vec<Ev> = vals.iter().enumerate().map(|(i, v)| Ev { key: 0, ts: T0 + i as i64, v: *v }).collect();
        let (rows, _, _) = run(&s, &evs);
        for r in rows {
            let mut xs: Vec<f64> = evs.iter().filter(|e| e.ts >= r.start && e.ts < r.end).map(|e| e.v).collect();
            xs.sort_by(f64::total_cmp);
            prop_assert_eq!(xs.len() as f64, r.vals[0]);
            for (i, q) in [0.0, 0.5, 0.99, 1.0].iter().enumerate() {
                let exact = xs[(q * (xs.len() - 1) as f64).ceil() as usize];
                let got = r.vals[i + 1];
                prop_assert!((got - exact).abs() <= 0.02 * exact.abs() * (1.0 + 1e-9) + 1e-12, "q{} got {} exact {}", q, got, exact);
            }
        }
    }
}
