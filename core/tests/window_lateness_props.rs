//! Any arrival order within the bound matches the reference model with
//! allowed lateness > 0 too, for every window kind (sliding sizes need not be
//! multiples of the slide).

mod common;
use common::*;
use proptest::prelude::*;

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
