//! Per-key watermarks: each key's own bounded-out-of-orderness watermark
//! decides when its windows fire; idle keys follow the engine's watermark.

mod common;

use common::*;
use proptest::prelude::*;
use weir_core::prelude::*;

fn per_key(kind: WindowKind, bound: i64) -> PipelineSpec {
    let mut s = spec(kind, bound, 0);
    s.sources[0].watermark = WatermarkMode::PerKey;
    s
}

fn rows_of(e: &mut Engine, rows: &mut Vec<Row>) -> u64 {
    let mut late = 0;
    drain(e, rows, &mut late);
    late
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]
    /// Disorder within the bound: per-key watermarks give the reference
    /// model's windows, none late, as per-source ones do.
    #[test]
    fn any_order_within_bound_matches_the_reference((in_order, arrival) in stream(), kind in kinds()) {
        let (rows, late, e) = run(&per_key(kind, BOUND), &arrival);
        prop_assert_eq!(late, 0);
        let st = e.op_stats(0).unwrap();
        prop_assert_eq!(st.on_time + st.updated + st.late, st.routed);
        assert_same_windows(rows, reference(kind, &in_order));
    }

    /// Each key shifted by its own clock offset (minutes apart): per-key
    /// watermarks still give the reference model's windows, none late.
    #[test]
    fn keys_with_skewed_clocks_match_the_reference((in_order, arrival) in stream(), kind in kinds(), skew in prop::collection::vec(-600_000i64..600_000, 4)) {
        let shift = |evs: &[Ev]| -> Vec<Ev> {
            evs.iter().map(|e| Ev { ts: e.ts + skew[e.key as usize], ..*e }).collect()
        };
        // The gateway clock is the unskewed time.
        let mut e = per_key(kind, BOUND).build().unwrap();
        let (mut rows, mut late) = (Vec::new(), 0);
        for ev in &arrival {
            let ts = ev.ts + skew[ev.key as usize];
            e.handle_sample(ev.ts, 0, &key_name(ev.key), ts, &[ev.v]).unwrap();
            drain(&mut e, &mut rows, &mut late);
        }
        e.handle_end_of_input();
        drain(&mut e, &mut rows, &mut late);
        prop_assert_eq!(late, 0);
        assert_same_windows(rows, reference(kind, &shift(&in_order)));
    }
}

#[test]
fn a_racing_key_neither_drags_nor_drops_the_others() {
    let mut e = per_key(WindowKind::Tumbling { size: 1_000 }, 100)
        .build()
        .unwrap();
    let mut rows = Vec::new();
    // One device 4 minutes fast, one 10 minutes slow.
    e.handle_sample(T0, 0, "fast", T0 + 240_000, &[1.0])
        .unwrap();
    let mut late = rows_of(&mut e, &mut rows);
    for i in 0..50 {
        let t = T0 + i * 100;
        e.handle_sample(t, 0, "ok", t, &[1.0]).unwrap();
        e.handle_sample(t, 0, "slow", t - 600_000, &[1.0]).unwrap();
        late += rows_of(&mut e, &mut rows);
    }
    assert_eq!(late, 0);
    let fired = |k: &str| rows.iter().filter(|r| r.key == k).count();
    // 4.9 s of data, bound 0.1 s: windows ending by 4.8 s have fired.
    assert_eq!(fired("ok"), 4, "{rows:?}");
    assert_eq!(fired("slow"), 4, "{rows:?}");
    assert_eq!(fired("fast"), 0);
    // The engine's watermark is the per-source one, dragged by `fast`.
    assert!(e.watermark().ts() > T0 + 200_000);
}

#[test]
fn an_idle_key_follows_the_engine_watermark_and_is_late_only_behind_it() {
    let mut s = per_key(WindowKind::Tumbling { size: 1_000 }, 0);
    s.sources[0].idle_timeout = Some(10_000);
    let mut e = s.build().unwrap();
    let mut rows = Vec::new();
    e.handle_sample(T0, 0, "quiet", T0 + 500, &[1.0]).unwrap();
    assert_eq!(e.poll_timeout(), Some(T0 + 10_001));
    let mut late = 0;
    for i in 1..=30 {
        let t = T0 + i * 1_000;
        e.handle_sample(t, 0, "busy", t, &[1.0]).unwrap();
        late += rows_of(&mut e, &mut rows);
        let quiet = rows.iter().filter(|r| r.key == "quiet").count();
        // Its window waits for its own data until the key is idle.
        assert_eq!(quiet, usize::from(i > 10), "at {i}");
    }
    // Back with a sample behind the engine's watermark: late; ahead: on time.
    e.handle_sample(T0 + 31_000, 0, "quiet", T0 + 1_500, &[1.0])
        .unwrap();
    late += rows_of(&mut e, &mut rows);
    assert_eq!(late, 1);
    e.handle_sample(T0 + 31_000, 0, "quiet", T0 + 30_500, &[1.0])
        .unwrap();
    late += rows_of(&mut e, &mut rows);
    assert_eq!(late, 1);
}

#[test]
fn handle_time_fires_idle_keys_without_new_samples() {
    let mut s = per_key(WindowKind::Tumbling { size: 1_000 }, 0);
    s.sources[0].idle_timeout = Some(5_000);
    let mut e = s.build().unwrap();
    let mut rows = Vec::new();
    e.handle_sample(T0, 0, "a", T0 + 100, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "b", T0 + 3_000, &[1.0]).unwrap();
    rows_of(&mut e, &mut rows);
    assert!(rows.is_empty());
    let due = e.poll_timeout().unwrap();
    e.handle_time(due - 1);
    rows_of(&mut e, &mut rows);
    assert!(rows.is_empty());
    e.handle_time(due);
    rows_of(&mut e, &mut rows);
    // `a` is idle and follows the engine watermark (b's: T0 + 2999).
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].key, "a");
    // Nothing moves: no look is due again.
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_per_source_snapshot_restores_into_per_key_without_refiring() {
    // Version-1 and per-source snapshots carry one watermark: every key
    // starts from it, so nothing already fired fires again.
    let s = spec(WindowKind::Tumbling { size: 1_000 }, 0, 0);
    let mut e = s.clone().build().unwrap();
    let mut rows = Vec::new();
    for i in 0..5 {
        e.handle_sample(T0, 0, "a", T0 + i * 400, &[1.0]).unwrap();
    }
    rows_of(&mut e, &mut rows);
    let fired = rows.len();
    let snap = e.snapshot().unwrap();
    let mut f = per_key(WindowKind::Tumbling { size: 1_000 }, 0)
        .build()
        .unwrap();
    f.restore(&snap).unwrap();
    // A sample in a fired window is late, not a new window.
    f.handle_sample(T0, 0, "a", T0 + 100, &[1.0]).unwrap();
    assert_eq!(rows_of(&mut f, &mut rows), 1);
    f.handle_end_of_input();
    rows_of(&mut f, &mut rows);
    assert_eq!(rows.len(), fired + 1);
    // And back: per-key windows get their timers again.
    let mut g = per_key(WindowKind::Tumbling { size: 1_000 }, 0)
        .build()
        .unwrap();
    g.restore(&snap).unwrap();
    g.handle_sample(T0, 0, "a", T0 + 2_100, &[1.0]).unwrap();
    rows_of(&mut g, &mut rows);
    let snap2 = g.snapshot().unwrap();
    let mut h = s.build().unwrap();
    h.restore(&snap2).unwrap();
    h.handle_sample(T0, 0, "a", T0 + 3_000, &[1.0]).unwrap();
    let before = rows.len();
    rows_of(&mut h, &mut rows);
    assert_eq!(rows.len(), before + 1, "{rows:?}");
}
