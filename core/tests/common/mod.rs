//! Shared helpers for the engine tests: a reference model and a runner.
#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use weir_core::prelude::*;
use weir_core::spec::{OperatorKind, OperatorSpec, WindowSpec};

pub const T0: i64 = 1_700_000_000_000;

/// One input sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ev {
    pub key: u8,
    pub ts: i64,
    pub v: f64,
}

pub fn key_name(k: u8) -> String {
    format!("k{k}")
}

/// A window result with the key resolved, comparable across runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub op: u16,
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub update: bool,
    pub vals: Vec<f64>,
    pub flag: Option<bool>,
}

impl Row {
    /// Everything, floats as bits (so NaN equals NaN).
    pub fn bits(&self) -> (u16, &str, i64, i64, bool, Vec<u64>, Option<bool>) {
        (
            self.op,
            &self.key,
            self.start,
            self.end,
            self.update,
            self.vals.iter().map(|v| v.to_bits()).collect(),
            self.flag,
        )
    }
}

pub const AGGS: [AggKind; 5] = [
    AggKind::Count,
    AggKind::Mean,
    AggKind::Min,
    AggKind::Max,
    AggKind::Stddev,
];

pub fn spec(kind: WindowKind, bound: i64, lateness: i64) -> PipelineSpec {
    PipelineSpec {
        name: "t".into(),
        time: TimeSpec::default(),
        sources: vec![SourceSpec::new("s", ["v"]).out_of_orderness(bound)],
        operators: vec![OperatorSpec {
            id: "w".into(),
            source: "s".into(),
            field: "v".into(),
            kind: OperatorKind::Window(WindowSpec {
                kind,
                allowed_lateness: lateness,
                aggregates: AGGS.to_vec(),
                detect: None,
            }),
        }],
        state: StateSpec::default(),
    }
}

pub fn drain(e: &mut Engine, rows: &mut Vec<Row>, late: &mut u64) {
    while let Some(o) = e.poll_output() {
        match o {
            Output::Window(w) => rows.push(Row {
                op: w.op,
                key: e.key_name(w.key).to_string(),
                start: w.start,
                end: w.end,
                update: w.emission == Emission::Update,
                vals: w.values.as_slice().to_vec(),
                flag: w.anomaly.map(|a| a.flag),
            }),
            Output::Late(_) => *late += 1,
            Output::Custom(c) => rows.push(Row {
                op: c.op,
                key: e.key_name(c.key).to_string(),
                start: c.ts,
                end: c.ts,
                update: false,
                vals: vec![c.value, c.tag as f64],
                flag: None,
            }),
            Output::Score(s) => rows.push(Row {
                op: s.op,
                key: e.key_name(s.key).to_string(),
                start: s.ts,
                end: s.ts,
                update: false,
                vals: vec![s.value, s.verdict.score],
                flag: Some(s.verdict.flag),
            }),
        }
    }
}

/// Runs events through a fresh engine to the end of input.
pub fn run(spec: &PipelineSpec, evs: &[Ev]) -> (Vec<Row>, u64, Engine) {
    let mut e = spec.clone().build().unwrap();
    let mut rows = Vec::new();
    let mut late = 0;
    for ev in evs {
        let _ = e.handle_sample(ev.ts, 0, &key_name(ev.key), ev.ts, &[ev.v]);
        drain(&mut e, &mut rows, &mut late);
    }
    e.handle_end_of_input();
    drain(&mut e, &mut rows, &mut late);
    (rows, late, e)
}

fn stats(vs: &[f64]) -> Vec<f64> {
    let n = vs.len() as f64;
    let mean = vs.iter().sum::<f64>() / n;
    let var = vs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let min = vs.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    vec![n, mean, min, max, var.sqrt()]
}

/// The reference model: sort by time, group by window, aggregate two-pass.
pub fn reference(kind: WindowKind, evs: &[Ev]) -> Vec<Row> {
    let mut groups: BTreeMap<(String, i64, i64), Vec<f64>> = BTreeMap::new();
    // Count windows may share a span: they are kept in a list.
    let mut counted: Vec<((String, i64, i64), Vec<f64>)> = Vec::new();
    let mut by_key: BTreeMap<u8, Vec<Ev>> = BTreeMap::new();
    for e in evs {
        by_key.entry(e.key).or_default().push(*e);
    }
    for (k, mut es) in by_key {
        es.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.v.to_bits().cmp(&b.v.to_bits())));
        let name = key_name(k);
        match kind {
            WindowKind::Tumbling { size } => {
                for e in &es {
                    let s = e.ts.div_euclid(size) * size;
                    groups
                        .entry((name.clone(), s, s + size))
                        .or_default()
                        .push(e.v);
                }
            }
            WindowKind::Sliding { size, slide } => {
                for e in &es {
                    let mut s = e.ts.div_euclid(slide) * slide;
                    while s + size > e.ts {
                        groups
                            .entry((name.clone(), s, s + size))
                            .or_default()
                            .push(e.v);
                        s -= slide;
                    }
                }
            }
            WindowKind::Cumulate { step, size } => {
                for e in &es {
                    let s = e.ts.div_euclid(size) * size;
                    let mut end = s + step;
                    while end <= s + size {
                        if end > e.ts {
                            groups.entry((name.clone(), s, end)).or_default().push(e.v);
                        }
                        end += step;
                    }
                }
            }
            WindowKind::Session { gap } => {
                let mut cur: Option<(i64, i64, Vec<f64>)> = None;
                for e in &es {
                    match &mut cur {
                        Some((_, last, vs)) if e.ts - *last <= gap => {
                            *last = e.ts;
                            vs.push(e.v);
                        }
                        _ => {
                            if let Some((f, l, vs)) = cur.take() {
                                groups.insert((name.clone(), f, l + gap), vs);
                            }
                            cur = Some((e.ts, e.ts, vec![e.v]));
                        }
                    }
                }
                if let Some((f, l, vs)) = cur {
                    groups.insert((name.clone(), f, l + gap), vs);
                }
            }
            WindowKind::Count { size } => {
                for chunk in es.chunks(size as usize) {
                    let vs: Vec<f64> = chunk.iter().map(|e| e.v).collect();
                    counted.push((
                        (name.clone(), chunk[0].ts, chunk[chunk.len() - 1].ts + 1),
                        vs,
                    ));
                }
            }
        }
    }
    groups
        .into_iter()
        .chain(counted)
        .map(|((key, start, end), vs)| Row {
            op: 0,
            key,
            start,
            end,
            update: false,
            vals: stats(&vs),
            flag: None,
        })
        .collect()
}

/// Sorts rows and compares them with a relative tolerance on floats.
pub fn assert_same_windows(mut got: Vec<Row>, mut want: Vec<Row>) {
    let ord =
        |a: &Row, b: &Row| (a.op, &a.key, a.start, a.end).cmp(&(b.op, &b.key, b.start, b.end));
    got.sort_by(ord);
    want.sort_by(ord);
    assert_eq!(
        got.len(),
        want.len(),
        "window count differs\n got: {got:?}\nwant: {want:?}"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.key, g.start, g.end), (&w.key, w.start, w.end));
        for (i, (a, b)) in g.vals.iter().zip(&w.vals).enumerate() {
            let tol = 1e-9 * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{} [{},{}) agg {i}: {a} vs {b}",
                g.key,
                g.start,
                g.end
            );
        }
    }
}

/// Out-of-orderness bound of the arrival-order property tests.
pub const BOUND: i64 = 50;

/// Events on a base clock, and an arrival order within the bound: sorted by
/// ts + jitter, jitter in [0, BOUND] (a lag of exactly the bound is on time).
pub fn stream() -> impl Strategy<Value = (Vec<Ev>, Vec<Ev>)> {
    prop::collection::vec((0u8..4, 0i64..15, -1000i32..1000, 0i64..=BOUND), 1..250).prop_map(
        |raw| {
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
        },
    )
}

/// Every window kind; sliding sizes need not be multiples of the slide.
pub fn kinds() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..200).prop_map(|size| WindowKind::Tumbling { size }),
        (1i64..40, 0i64..120).prop_map(|(slide, extra)| WindowKind::Sliding {
            size: (slide + extra).min(slide * 64),
            slide
        }),
        (1i64..60).prop_map(|gap| WindowKind::Session { gap }),
        (1u64..12).prop_map(|size| WindowKind::Count { size }),
        (1i64..40, 1i64..=64).prop_map(|(step, n)| WindowKind::Cumulate {
            step,
            size: step * n
        }),
    ]
}
