//! The multivariate detector inside the engine: one operator reads several
//! fields of a sample at once and gives exactly the bare detector's scores,
//! contributions and alert raises per key; a sample missing a value is
//! rejected and counted without touching the state; snapshots restore it
//! bit for bit; the spec refuses what it cannot run.

use weir_core::detect::{
    AlertEdge, AlertGate, DetectorSpec, Multivariate, DEFAULT_COOLDOWN, MULTIVARIATE_DEFAULT,
};
use weir_core::prelude::*;
use weir_core::spec::{DetectSpec, OperatorKind, SampleOrder};

struct Rng(u64);
impl Rng {
    fn gauss(&mut self) -> f64 {
        let mut u = || {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }
}

/// Source fields `a, noise, b, c`; the detector reads `c, a, b`, so field
/// order and indexes are not the trivial ones.
fn engine() -> Engine {
    PipelineBuilder::new("m")
        .source(SourceSpec::new("s", ["a", "noise", "b", "c"]))
        .detect_fields("health", "s", &["c", "a", "b"])
        .build()
        .unwrap()
}

/// Key `k` sample `i`: `a` and `b` move together, `c` on its own; on key 0
/// from sample 1,500 `b` stops following `a` (each stays in its range).
fn sample(r: &mut Rng, k: usize, i: i64) -> [f64; 4] {
    let l = r.gauss();
    let a = 10.0 + l + 0.1 * r.gauss();
    let mut b = 20.0 + 2.0 * l + 0.1 * r.gauss();
    if k == 0 && i >= 1_500 {
        b = 20.0 - 2.0 * l + 0.1 * r.gauss();
    }
    [a, r.gauss(), b, 5.0 + r.gauss() + k as f64]
}

type Row = (usize, i64, u64, bool, Vec<u32>);

fn drain(e: &mut Engine, rows: &mut Vec<Row>) {
    while let Some(o) = e.poll_output() {
        if let Output::Score(s) = o {
            let k: usize = e.key_name(s.key)[1..].parse().unwrap();
            let c = s.contributions.as_slice().iter().map(|c| c.to_bits());
            rows.push((
                k,
                s.ts,
                s.verdict.score.to_bits(),
                s.verdict.flag,
                c.collect(),
            ));
        }
    }
}

#[test]
fn engine_scores_equal_the_bare_detector() {
    let mut e = engine();
    let mut bare: Vec<(Multivariate, AlertGate)> = (0..2)
        .map(|_| {
            (
                Multivariate::new(&MULTIVARIATE_DEFAULT, 3),
                AlertGate::new(MULTIVARIATE_DEFAULT.threshold, 0.0, DEFAULT_COOLDOWN),
            )
        })
        .collect();
    let mut r = Rng(11);
    let t0 = 1_700_000_000_000i64;
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let mut missing = 0;
    for i in 0..4_000i64 {
        let k = (i % 2) as usize;
        let mut x = sample(&mut r, k, i / 2);
        if i % 700 == 3 {
            x[2] = f64::NAN; // a reading without `b`
        }
        let ts = t0 + i * 500;
        match e.handle_sample(ts, 0, &format!("k{k}"), ts, &x) {
            Ok(()) => {
                let (d, g) = &mut bare[k];
                let s = d.update(ts, &[x[3], x[0], x[2]]).unwrap();
                let c = d.contributions().iter().map(|c| (*c as f32).to_bits());
                let raised = g.update(s) == Some(AlertEdge::Raised);
                want.push((k, ts, s.to_bits(), raised, c.collect()));
            }
            Err(Reject::NonFinite) => missing += 1,
            Err(o) => panic!("unexpected {o}"),
        }
        drain(&mut e, &mut got);
    }
    assert!(missing > 0);
    assert_eq!(e.stats().rejected(Reject::NonFinite), missing);
    assert_eq!(got.len() as u64, 4_000 - missing);
    assert_eq!(got, want);
    // the broken correlation on key 0 raised an alert, blamed on a and b
    let first = got.iter().find(|g| g.3).expect("an alert");
    assert_eq!(first.0, 0);
    let c: Vec<f32> = first.4.iter().map(|b| f32::from_bits(*b)).collect();
    assert!(c[1] + c[2] > c[0], "blamed the wrong field: {c:?}");
    assert!(
        !got.iter().any(|g| g.0 == 1 && g.3),
        "a healthy key alerted"
    );
}

#[test]
fn snapshot_restores_bit_for_bit_through_the_engine() {
    let mut r = Rng(5);
    let t0 = 1_700_000_000_000i64;
    let rows: Vec<(usize, i64, [f64; 4])> = (0..3_000i64)
        .map(|i| {
            let k = (i % 2) as usize;
            (k, t0 + i * 500, sample(&mut r, k, i / 2))
        })
        .collect();
    let mut whole = engine();
    let mut want = Vec::new();
    for (k, ts, x) in &rows {
        whole
            .handle_sample(*ts, 0, &format!("k{k}"), *ts, x)
            .unwrap();
        drain(&mut whole, &mut want);
    }
    for cut in [1usize, 300, 900, 2_999] {
        let mut a = engine();
        let mut got = Vec::new();
        for (k, ts, x) in &rows[..cut] {
            a.handle_sample(*ts, 0, &format!("k{k}"), *ts, x).unwrap();
            drain(&mut a, &mut got);
        }
        let bytes = a.snapshot().unwrap();
        let mut b = engine();
        b.restore(&bytes).unwrap();
        assert_eq!(b.snapshot().unwrap(), bytes, "cut {cut}");
        for (k, ts, x) in &rows[cut..] {
            b.handle_sample(*ts, 0, &format!("k{k}"), *ts, x).unwrap();
            drain(&mut b, &mut got);
        }
        assert_eq!(got, want, "cut {cut}");
    }
}

#[test]
fn the_spec_refuses_what_it_cannot_run() {
    let build = |fields: &[&str], f: &dyn Fn(&mut DetectSpec)| {
        let mut spec = PipelineBuilder::new("m")
            .source(SourceSpec::new("s", ["a", "b", "c"]))
            .detect_fields("health", "s", fields)
            .spec();
        if let OperatorKind::Detect(d) = &mut spec.operators[0].kind {
            f(d);
        }
        spec.build().map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(build(&["a", "b"], &|_| ()).is_ok());
    let e = build(&["a"], &|_| ()).unwrap_err();
    assert!(e.contains("2 to 8 fields"), "{e}");
    let e = build(&["a", "zz"], &|_| ()).unwrap_err();
    assert!(e.contains("zz"), "{e}");
    let e = build(&["a", "b", "a"], &|_| ()).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    let e = build(&["a", "b"], &|d| d.order = SampleOrder::EventTime).unwrap_err();
    assert!(e.contains("arrival"), "{e}");
    let e = build(&["a", "b"], &|d| d.fields.truncate(1)).unwrap_err();
    assert!(e.contains("fields"), "{e}");
    let e = build(&["a", "b"], &|d| d.detector = DetectorSpec::kestrel()).unwrap_err();
    assert!(e.contains("only a multivariate"), "{e}");
    let e = build(&["a", "b"], &|d| {
        if let DetectorSpec::Multivariate { config, .. } = &mut d.detector {
            config.learn = 10;
        }
    })
    .unwrap_err();
    assert!(e.contains("learn"), "{e}");
}
