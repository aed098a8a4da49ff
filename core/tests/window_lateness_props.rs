//! Any arrival order within the bound matches the reference model with
//! allowed lateness > 0 too, for every window kind (sliding sizes need not be
//! multiples of the slide).

mod common;
use common::*;
use proptest::prelude::*;
use weir_core::prelude::*;

const BOUND: i64 = 50;

fn stream() -> impl Strategy<Value = (Vec<Ev>, Vec<Ev>)> {
    prop::collection::vec((0u8..4, 0i64..15, -1000i32..1000, 0i64..BOUND), 1..250).prop_map(|raw| {
        let mut base = T0;
        let mut evs = Vec::new();
        let mut jit = Vec::new();
        for (k, step, v, j) in &raw {
            base += step;
            evs.push(Ev {
                key: *k,
                ts: base,
                v: *v as f64 / 8.0,
            });
            jit.push(*j);
        }
        let in_order = evs.clone();
        let mut idx: Vec<usize> = (0..evs.len()).collect();
        idx.sort_by_key(|&i| (evs[i].ts + jit[i], i));
        let arrival = idx.into_iter().map(|i| evs[i]).collect();
        (in_order, arrival)
    })
}

fn kinds() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..200).prop_map(|size| WindowKind::Tumbling { size }),
        (1i64..40, 0i64..120).prop_map(|(slide, extra)| WindowKind::Sliding {
            size: (slide + extra).min(slide * 64),
            slide
        }),
        (1i64..60).prop_map(|gap| WindowKind::Session { gap }),
        (1u64..12).prop_map(|size| WindowKind::Count { size }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn any_order_with_lateness((in_order, arrival) in stream(), kind in kinds(), lateness in 1i64..200) {
        let spec = spec(kind, BOUND, lateness);
        let want = reference(kind, &in_order);
        let (b, late_b, eb) = run(&spec, &arrival);
        prop_assert_eq!(late_b, 0);
        prop_assert!(b.iter().all(|r| !r.update));
        assert_same_windows(b, want);
        let st = eb.op_stats(0).unwrap();
        prop_assert_eq!(st.on_time + st.updated + st.late, st.routed);
    }
}
