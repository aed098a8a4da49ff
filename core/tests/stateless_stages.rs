//! Per-source filter and computed fields: rows by hand. A filtered sample
//! still advances the watermark; computed fields feed operators by name.

use weir_core::expr::{BinOp, Expr};
use weir_core::prelude::*;

/// (key, start, end, aggregates) of every fired window.
fn drain(e: &mut Engine, rows: &mut Vec<(String, i64, i64, Vec<f64>)>) {
    while let Some(o) = e.poll_output() {
        if let Output::Window(w) = o {
            let key = e.key_name(w.key).to_string();
            rows.push((key, w.start - T0, w.end - T0, w.values.as_slice().to_vec()));
        }
    }
}

fn gt(col: u16, v: f64) -> Expr {
    Expr::bin(BinOp::Gt, Expr::Col(col), Expr::num(v))
}

/// The tests' epoch (a multiple of the window size); times below are offsets.
const T0: i64 = 1_700_000_000_000;

/// Offers a sample at offset `ts` (the gateway clock reads the same).
fn put(e: &mut Engine, key: &str, ts: i64, v: &[f64]) {
    e.handle_sample(T0 + ts, 0, key, T0 + ts, v).unwrap();
}

fn pipeline(src: SourceSpec, field: &str) -> PipelineSpec {
    PipelineBuilder::new("p")
        .source(src)
        .window("w", "s", field, WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Count, AggKind::Sum])
        .done()
        .spec()
}

#[test]
fn a_filtered_sample_advances_the_watermark_but_reaches_no_operator() {
    let src = SourceSpec::new("s", ["v"]).filter(gt(0, 10.0));
    let mut e = pipeline(src, "v").build().unwrap();
    let mut rows = Vec::new();
    for (ts, v) in [(100, 20.0), (500, 5.0), (700, 30.0)] {
        put(&mut e, "a", ts, &[v]);
    }
    drain(&mut e, &mut rows);
    assert!(rows.is_empty());
    // Dropped by the filter, yet it moves the watermark past [0, 1000).
    put(&mut e, "a", 1_500, &[1.0]);
    drain(&mut e, &mut rows);
    assert_eq!(rows, vec![("a".to_string(), 0, 1_000, vec![2.0, 50.0])]);
    let st = e.stats();
    assert_eq!((st.input, st.accepted, st.filtered), (4, 4, 2));
    e.handle_end_of_input();
    drain(&mut e, &mut rows);
    assert_eq!(
        rows.len(),
        1,
        "the window of the filtered sample never opened"
    );
}

#[test]
fn a_filtered_sample_advances_its_keys_watermark() {
    let src = SourceSpec::new("s", ["v"])
        .filter(gt(0, 10.0))
        .watermark(WatermarkMode::PerKey);
    let mut e = pipeline(src, "v").build().unwrap();
    let mut rows = Vec::new();
    put(&mut e, "a", 100, &[20.0]);
    put(&mut e, "a", 1_200, &[0.0]);
    drain(&mut e, &mut rows);
    assert_eq!(rows, vec![("a".to_string(), 0, 1_000, vec![1.0, 20.0])]);
    assert_eq!(e.stats().filtered, 1);
}

#[test]
fn computed_fields_feed_operators_by_name() {
    // f = v * 1.8 + 32; g = f - v (reads the computed field before it).
    let f = Expr::bin(
        BinOp::Add,
        Expr::bin(BinOp::Mul, Expr::Col(0), Expr::num(1.8)),
        Expr::num(32.0),
    );
    let g = Expr::bin(BinOp::Sub, Expr::Col(1), Expr::Col(0));
    let src = SourceSpec::new("s", ["v"]).compute("f", f).compute("g", g);
    let spec = PipelineBuilder::new("p")
        .source(src)
        .window("wf", "s", "f", WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Sum])
        .done()
        .window("wg", "s", "g", WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Sum])
        .done()
        .spec();
    let mut e = spec.build().unwrap();
    put(&mut e, "a", 10, &[0.0]);
    put(&mut e, "a", 20, &[100.0]);
    e.handle_end_of_input();
    let mut rows = Vec::new();
    drain(&mut e, &mut rows);
    rows.sort_by(|a, b| a.3[0].total_cmp(&b.3[0]));
    // f: 32 + 212 = 244; g: 32 + 112 = 144.
    assert_eq!(rows[0].3, vec![144.0]);
    assert_eq!(rows[1].3, vec![244.0]);
}

#[test]
fn a_null_computed_value_drops_the_sample_and_is_counted() {
    let q = Expr::bin(BinOp::Div, Expr::num(1.0), Expr::Col(0));
    let src = SourceSpec::new("s", ["v"]).compute("inv", q);
    let mut e = pipeline(src, "inv").build().unwrap();
    put(&mut e, "a", 10, &[0.0]);
    put(&mut e, "a", 20, &[4.0]);
    e.handle_end_of_input();
    let mut rows = Vec::new();
    drain(&mut e, &mut rows);
    assert_eq!(rows, vec![("a".to_string(), 0, 1_000, vec![1.0, 0.25])]);
    assert_eq!((e.stats().null_computed, e.stats().filtered), (1, 0));
}

/// Two operators, over `v` and over the nullable `inv = 1 / v`: `inv`'s
/// `NULL` is left out of its own aggregates only.
fn nullable_pipeline(src: SourceSpec) -> PipelineSpec {
    PipelineBuilder::new("p")
        .source(src)
        .window("wv", "s", "v", WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Count])
        .done()
        .window("wi", "s", "inv", WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Count, AggKind::Sum, AggKind::Min, AggKind::Mean])
        .done()
        .spec()
}

/// (operator, key, start, aggregates), sorted.
fn drain_ops(e: &mut Engine) -> Vec<(u16, String, i64, Vec<f64>)> {
    let mut rows = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Window(w) = o {
            let key = e.key_name(w.key).to_string();
            rows.push((w.op, key, w.start - T0, w.values.as_slice().to_vec()));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    rows
}

/// NaN compares unequal: `None` stands for it.
fn nan_as_none(
    rows: Vec<(u16, String, i64, Vec<f64>)>,
) -> Vec<(u16, String, i64, Vec<Option<f64>>)> {
    rows.into_iter()
        .map(|(o, k, s, v)| {
            (
                o,
                k,
                s,
                v.into_iter().map(|x| (!x.is_nan()).then_some(x)).collect(),
            )
        })
        .collect()
}

#[test]
fn a_nullable_computed_null_skips_only_its_own_aggregates() {
    let q = Expr::bin(BinOp::Div, Expr::num(1.0), Expr::Col(0));
    let mut src = SourceSpec::new("s", ["v"]).compute("inv", q);
    src.nullable = vec![1];
    let spec = nullable_pipeline(src);
    let mut e = spec.clone().build().unwrap();
    put(&mut e, "a", 10, &[0.0]);
    put(&mut e, "a", 20, &[4.0]);
    // A window where `inv` is NULL for every sample still fires, after a
    // snapshot and restore in its middle (its window is open, empty).
    put(&mut e, "a", 1_010, &[0.0]);
    let mut rows = drain_ops(&mut e);
    let mut e2 = spec.build().unwrap();
    e2.restore(&e.snapshot().unwrap()).unwrap();
    e2.handle_end_of_input();
    rows.extend(drain_ops(&mut e2));
    rows.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let a = || "a".to_string();
    assert_eq!(
        nan_as_none(rows),
        vec![
            (0, a(), 0, vec![Some(2.0)]),
            (0, a(), 1_000, vec![Some(1.0)]),
            (
                1,
                a(),
                0,
                vec![Some(1.0), Some(0.25), Some(0.25), Some(0.25)]
            ),
            (1, a(), 1_000, vec![Some(0.0), None, None, None]),
        ]
    );
    assert_eq!((e.stats().null_computed, e.stats().accepted), (2, 3));
    assert_eq!(e2.stats().null_computed, 0, "not kept in snapshots");
}

#[test]
fn a_nullable_given_nan_is_null_and_other_nans_are_refused() {
    let mut src = SourceSpec::new("s", ["v", "inv"]);
    src.nullable = vec![1];
    let mut e = nullable_pipeline(src).build().unwrap();
    put(&mut e, "a", 10, &[1.0, f64::NAN]);
    put(&mut e, "a", 20, &[2.0, 0.5]);
    let r = e.handle_sample(T0 + 30, 0, "a", T0 + 30, &[f64::NAN, 1.0]);
    assert_eq!(r, Err(Reject::NonFinite), "`v` is not nullable");
    let r = e.handle_sample(T0 + 40, 0, "a", T0 + 40, &[1.0, f64::INFINITY]);
    assert_eq!(r, Err(Reject::NonFinite), "an infinity is not NULL");
    e.handle_end_of_input();
    assert_eq!(
        nan_as_none(drain_ops(&mut e)),
        vec![
            (0, "a".to_string(), 0, vec![Some(2.0)]),
            (
                1,
                "a".to_string(),
                0,
                vec![Some(1.0), Some(0.5), Some(0.5), Some(0.5)]
            ),
        ]
    );
    assert_eq!(e.stats().null_computed, 1);
    let mut bad = SourceSpec::new("s", ["v", "inv"]);
    bad.nullable = vec![2];
    assert!(nullable_pipeline(bad).build().is_err());
}

#[test]
fn validation_catches_bad_columns_and_names() {
    let bad_filter = SourceSpec::new("s", ["v"]).filter(gt(1, 0.0));
    let err = pipeline(bad_filter, "v").build().unwrap_err().to_string();
    assert!(err.contains("filter reads column 1"), "{err}");
    // A computed field may not read itself or later ones.
    let self_ref = SourceSpec::new("s", ["v"]).compute("f", Expr::Col(1));
    assert!(pipeline(self_ref, "f").build().is_err());
    let dup = SourceSpec::new("s", ["v"]).compute("v", Expr::Col(0));
    assert!(pipeline(dup, "v").build().is_err());
    let unknown = SourceSpec::new("s", ["v"]).compute("f", Expr::Col(0));
    assert!(pipeline(unknown, "nope").build().is_err());
}

#[test]
fn stages_stay_after_a_snapshot_restore() {
    let src = SourceSpec::new("s", ["v"]).filter(gt(0, 10.0));
    let spec = pipeline(src, "v");
    let mut e = spec.clone().build().unwrap();
    put(&mut e, "a", 100, &[20.0]);
    let snap = e.snapshot().unwrap();
    let mut r = spec.build().unwrap();
    r.restore(&snap).unwrap();
    put(&mut r, "a", 200, &[1.0]);
    put(&mut r, "a", 300, &[11.0]);
    r.handle_end_of_input();
    let mut rows = Vec::new();
    drain(&mut r, &mut rows);
    assert_eq!(rows, vec![("a".to_string(), 0, 1_000, vec![2.0, 31.0])]);
}

#[test]
fn a_window_of_nulls_only_leaves_its_detector_baseline_alone() {
    let q = Expr::bin(BinOp::Div, Expr::num(1.0), Expr::Col(0));
    let mut src = SourceSpec::new("s", ["v"]).compute("inv", q);
    src.nullable = vec![1];
    let ewma = DetectorSpec::EwmaZ {
        alpha: 0.5,
        k: 3.0,
        warmup: 2,
    };
    let mut e = PipelineBuilder::new("p")
        .source(src)
        .window("w", "s", "inv", WindowKind::Tumbling { size: 1_000 })
        .aggregate([AggKind::Mean])
        .detect(AggKind::Mean, ewma)
        .done()
        .build()
        .unwrap();
    // Means 1, 0.5, 1, then a window of NULLs only (its NaN mean is not
    // scored: DetectorState::update skips non-finite values), then 100.
    for (i, v) in [1.0, 2.0, 1.0, 0.0, 0.01].into_iter().enumerate() {
        put(&mut e, "a", i as i64 * 1_000 + 10, &[v]);
    }
    e.handle_end_of_input();
    let mut flags = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Window(w) = o {
            flags.push((w.start - T0, w.anomaly.map(|a| a.flag)));
        }
    }
    assert_eq!(
        flags,
        [
            (0, Some(false)),
            (1_000, Some(false)),
            (2_000, Some(false)),
            (3_000, None),
            (4_000, Some(true)),
        ]
    );
}

/// `rows` (SQL's `COUNT(*)`) counts every sample that reached the
/// operator, those whose value is `NULL` too; `count` leaves them out.
/// The NULL count survives a snapshot taken while the window is open and
/// adds up when session windows merge.
#[test]
fn rows_counts_null_samples_that_count_leaves_out() {
    let spec_of = |kind: WindowKind| {
        let mut src = SourceSpec::new("s", ["v"]);
        src.nullable = vec![0];
        PipelineBuilder::new("p")
            .source(src)
            .window("w", "s", "v", kind)
            .aggregate([AggKind::Rows, AggKind::Count, AggKind::Sum])
            .done()
            .spec()
    };
    let nan = f64::NAN;
    // Tumbling: [0, 1 s) gets 2, NULL, NULL, 3; [1, 2 s) NULL only.
    let spec = spec_of(WindowKind::Tumbling { size: 1_000 });
    let mut e = spec.clone().build().unwrap();
    put(&mut e, "a", 10, &[2.0]);
    put(&mut e, "a", 20, &[nan]);
    put(&mut e, "a", 30, &[nan]);
    let mut r = spec.build().unwrap();
    r.restore(&e.snapshot().unwrap()).unwrap();
    put(&mut r, "a", 40, &[3.0]);
    put(&mut r, "a", 1_010, &[nan]);
    r.handle_end_of_input();
    assert_eq!(
        nan_as_none(drain_ops(&mut r)),
        vec![
            (0, "a".into(), 0, vec![Some(4.0), Some(2.0), Some(5.0)]),
            (0, "a".into(), 1_000, vec![Some(1.0), Some(0.0), None]),
        ]
    );
    // Sessions with a 100 ms gap: a NULL at 0 and one at 150 open two
    // sessions that 3.0 at 75 merges into one.
    let mut spec = spec_of(WindowKind::Session { gap: 100 });
    spec.sources[0].max_out_of_orderness = 1_000;
    let mut s = spec.build().unwrap();
    put(&mut s, "a", 0, &[nan]);
    put(&mut s, "a", 150, &[nan]);
    put(&mut s, "a", 75, &[3.0]);
    s.handle_end_of_input();
    assert_eq!(
        nan_as_none(drain_ops(&mut s)),
        vec![(0, "a".into(), 0, vec![Some(3.0), Some(1.0), Some(3.0)])]
    );
}
