//! Extreme values through the public API never panic, and snapshots taken
//! after every step restore.

mod common;
use common::*;
use proptest::prelude::*;
use weir_core::prelude::*;

fn ext() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(i64::MIN + 1),
        Just(i64::MAX - 1),
        Just(0),
        Just(-1),
        Just(1),
        any::<i64>(),
        -1000i64..1000
    ]
}
fn pos() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MAX),
        Just(1),
        Just(i64::MAX / 64),
        Just(i64::MAX / 2 + 1),
        1i64..1000,
        1i64..=i64::MAX
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn no_panics(kindsel in 0u8..4, a in pos(), b in pos(), lat in prop_oneof![Just(0i64), pos()], bound in prop_oneof![Just(0i64), pos()],
                 ttl in prop::option::of(pos()), idle in prop::option::of(pos()), ahead in prop::option::of(prop_oneof![Just(0i64), pos()]),
                 mode in 0u8..3, perkey in 0u8..3, evs in prop::collection::vec((0u8..3, ext(), ext(), any::<bool>()), 1..40)) {
        let kind = match kindsel {
            0 => WindowKind::Tumbling { size: a },
            1 => { let (s, l) = if a >= b { (a, b) } else { (b, a) }; let l = l.max(s / 64 + 1).min(s); WindowKind::Sliding { size: s, slide: l } }
            2 => WindowKind::Session { gap: a },
            _ => WindowKind::Count { size: (a as u64 % 5) + 1 },
        };
        let mut s = spec(kind, bound, lat);
        s.time.min_ts = i64::MIN; s.time.max_ts = i64::MAX;
        s.time.mode = match mode { 0 => TimeMode::Event, 1 => TimeMode::Ingestion, _ => TimeMode::Processing };
        s.state.ttl = ttl; s.state.max_keys = 2; s.state.on_full = FullPolicy::EvictIdle;
        s.sources[0].idle_timeout = idle; s.sources[0].max_ahead = ahead;
        if perkey > 0 { s.sources[0].watermark = WatermarkMode::PerKey; }
        s.sources.push(s.sources[0].clone()); s.sources[1].name = "s2".into();
        if perkey == 2 { s.sources[1].watermark = WatermarkMode::PerSource; }
        if let weir_core::spec::OperatorKind::Window(w) = &mut s.operators[0].kind { w.aggregates.push(AggKind::Percentile(50.0)); }
        let mut o = s.operators[0].clone(); o.id = "w2".into(); o.source = "s2".into(); s.operators.push(o);
        let mut e = match s.clone().build() { Ok(e) => e, Err(_) => return Ok(()) };
        for (k, now, ts, t) in evs {
            if t { e.handle_time(now); } else { let _ = e.handle_sample(now, (k % 2) as usize, &key_name(k), ts, &[1.0]); }
            while e.poll_output().is_some() {}
            let b = e.snapshot().unwrap();
            let mut f = s.clone().build().unwrap();
            f.restore(&b).unwrap();
            e = f;
        }
        e.handle_end_of_input();
        while e.poll_output().is_some() {}
    }
}

#[test]
fn percentiles_outside_0_to_100_are_refused() {
    for p in [f64::NAN, -5.0, 150.0, f64::INFINITY] {
        let mut s = spec(WindowKind::Tumbling { size: 10 }, 0, 0);
        if let weir_core::spec::OperatorKind::Window(w) = &mut s.operators[0].kind {
            w.aggregates = vec![AggKind::Percentile(p)];
        }
        assert!(s.build().is_err(), "p{p} accepted");
    }
}
