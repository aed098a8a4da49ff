//! Bad input and full state: every outcome is counted, nothing panics,
//! and the good samples around the bad ones are processed.

mod common;

use common::*;
use weir_core::prelude::*;

#[test]
fn non_finite_and_absurd_timestamps_are_rejected_and_counted() {
    let mut e = spec(WindowKind::Tumbling { size: 100 }, 10, 0)
        .build()
        .unwrap();
    let bad: [(i64, f64, Reject); 6] = [
        (T0, f64::NAN, Reject::NonFinite),
        (T0, f64::INFINITY, Reject::NonFinite),
        (T0, f64::NEG_INFINITY, Reject::NonFinite),
        (i64::MIN, 1.0, Reject::TimestampOutOfRange),
        (i64::MAX, 1.0, Reject::TimestampOutOfRange),
        (-1, 1.0, Reject::TimestampOutOfRange),
    ];
    for (i, (ts, v, why)) in bad.iter().enumerate() {
        assert_eq!(
            e.handle_sample(T0, 0, "a", *ts, &[*v]),
            Err(*why),
            "case {i}"
        );
        e.handle_sample(T0, 0, "a", T0 + i as i64, &[1.0]).unwrap();
    }
    assert_eq!(
        e.handle_sample(T0, 0, "a", T0, &[1.0, 2.0]),
        Err(Reject::FieldCount)
    );
    assert_eq!(
        e.handle_sample(T0, 7, "a", T0, &[1.0]),
        Err(Reject::UnknownSource)
    );
    assert_eq!(e.handle_sample(T0, 0, "", T0, &[1.0]), Err(Reject::BadKey));
    assert_eq!(
        e.handle_sample(T0, 0, &"k".repeat(300), T0, &[1.0]),
        Err(Reject::BadKey)
    );
    let st = *e.stats();
    assert_eq!(st.input, 16);
    assert_eq!(st.accepted, 6);
    assert_eq!(st.rejected(Reject::NonFinite), 3);
    assert_eq!(st.rejected(Reject::TimestampOutOfRange), 3);
    assert_eq!(st.accepted + st.rejected_total(), st.input);
    assert_eq!(e.watermark(), Watermark::EventTime(T0 + 5 - 10 - 1));
    e.handle_end_of_input();
    let mut rows = Vec::new();
    let mut late = 0;
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].vals[0], 6.0, "the good samples all landed");
}

#[test]
fn extreme_timestamps_with_an_open_range_do_not_panic() {
    for kind in [
        WindowKind::Tumbling { size: 7 },
        WindowKind::Sliding { size: 21, slide: 7 },
        WindowKind::Session { gap: 1_000 },
        WindowKind::Count { size: 2 },
    ] {
        let mut s = spec(kind, i64::MAX, i64::MAX);
        s.time.min_ts = i64::MIN;
        s.time.max_ts = i64::MAX;
        s.state.ttl = Some(i64::MAX);
        let mut e = s.build().unwrap();
        for ts in [i64::MIN, i64::MAX, 0, -1, i64::MIN + 1, i64::MAX - 1, 1] {
            e.handle_sample(ts, 0, "a", ts, &[1.0]).unwrap();
            e.handle_time(ts);
            while e.poll_output().is_some() {}
        }
        e.handle_end_of_input();
        while e.poll_output().is_some() {}
        let st = e.op_stats(0).unwrap();
        assert_eq!(st.on_time + st.updated + st.late, 7, "{kind:?}");
    }
}

#[test]
fn key_budget_reject_policy_counts_and_keeps_existing_keys() {
    let mut s = spec(WindowKind::Tumbling { size: 100 }, 0, 0);
    s.state.max_keys = 3;
    let mut e = s.build().unwrap();
    // Three keys complete a window of their own: proven, they are kept.
    for k in 0..3 {
        let key = format!("k{k}");
        e.handle_sample(T0, 0, &key, T0 + k, &[1.0]).unwrap();
        e.handle_sample(T0, 0, &key, T0 + 100 + k, &[1.0]).unwrap();
    }
    assert_eq!(e.unproven_keys(), 0);
    for k in 3..10 {
        let r = e.handle_sample(T0, 0, &format!("k{k}"), T0 + 200 + k, &[1.0]);
        assert_eq!(r, Err(Reject::KeyBudget), "key {k}");
    }
    assert_eq!(e.key_count(), 3);
    assert_eq!(e.stats().rejected(Reject::KeyBudget), 7);
    assert_eq!(e.stats().keys_evicted, 0);
    e.handle_sample(T0, 0, "k1", T0 + 220, &[1.0]).unwrap();
}

#[test]
fn key_budget_evicts_unproven_keys_first_oldest_first() {
    let mut s = spec(WindowKind::Tumbling { size: 100 }, 0, 0);
    s.state.max_keys = 3;
    let mut e = s.build().unwrap();
    e.handle_sample(T0, 0, "real", T0, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "real", T0 + 100, &[1.0]).unwrap();
    for k in 0..10 {
        e.handle_sample(T0, 0, &format!("fake{k}"), T0 + 101 + k, &[1.0])
            .unwrap();
        while e.poll_output().is_some() {}
    }
    assert_eq!(e.key_count(), 3);
    assert_eq!(e.stats().evicted(Eviction::Unproven), 8);
    assert_eq!(e.stats().rejected(Reject::KeyBudget), 0);
    // The proven key stayed, with the newest two fakes.
    e.handle_sample(T0, 0, "real", T0 + 150, &[1.0]).unwrap();
    assert_eq!(e.key_count(), 3);
    assert_eq!(e.unproven_keys(), 2);
}

#[test]
fn key_budget_evict_policy_evicts_only_keys_without_open_windows() {
    let mut s = spec(WindowKind::Tumbling { size: 100 }, 0, 0);
    s.state.max_keys = 2;
    s.state.on_full = FullPolicy::EvictIdle;
    let mut e = s.build().unwrap();
    // Proven keys (their samples span a window), each with an open window.
    e.handle_sample(T0, 0, "a", T0 - 100, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "b", T0 - 99, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "b", T0 + 1, &[1.0]).unwrap();
    while e.poll_output().is_some() {}
    // Both hold open windows: nothing to evict.
    assert_eq!(
        e.handle_sample(T0, 0, "c", T0 + 2, &[1.0]),
        Err(Reject::KeyBudget)
    );
    // Fire a's and b's windows, then c evicts the least recent (a).
    e.handle_sample(T0, 0, "b", T0 + 250, &[1.0]).unwrap();
    while e.poll_output().is_some() {}
    e.handle_sample(T0, 0, "c", T0 + 251, &[1.0]).unwrap();
    assert_eq!(e.stats().keys_evicted, 1);
    assert_eq!(e.stats().evicted(Eviction::Idle), 1);
    assert_eq!(e.key_count(), 2);
}

#[test]
fn ttl_forgets_quiet_keys_and_their_baselines() {
    let mut s = spec(WindowKind::Tumbling { size: 10 }, 0, 0);
    s.state.ttl = Some(1_000);
    let mut e = s.build().unwrap();
    e.handle_sample(T0, 0, "quiet", T0, &[1.0]).unwrap();
    for i in 0..300 {
        e.handle_sample(T0, 0, "busy", T0 + i * 10, &[1.0]).unwrap();
        while e.poll_output().is_some() {}
    }
    assert_eq!(e.key_count(), 1);
    assert_eq!(e.stats().keys_evicted, 1);
}
