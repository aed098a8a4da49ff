//! Snapshot anywhere (any time mode, TTL, eviction, custom timers) and
//! continue: identical to an uninterrupted run.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use weir_core::keys::KeyId;
use weir_core::prelude::*;
use weir_core::process::{Context, KeyedProcess, TimeDomain};
use weir_core::spec::{DetectSpec, OperatorKind, OperatorSpec, WindowSpec};

#[derive(Default)]
struct P {
    cnt: BTreeMap<KeyId, u32>,
}
impl KeyedProcess for P {
    fn state_type(&self) -> &str {
        "p/1"
    }
    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, _v: f64) {
        *self.cnt.entry(ctx.key()).or_default() += 1;
        ctx.register_event_timer(ts + 30);
        ctx.register_processing_timer(ctx.now() + 50);
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, d: TimeDomain) {
        let c = self.cnt.get(&ctx.key()).copied().unwrap_or(0);
        ctx.emit(at, c as f64, d as u32);
    }
    fn clear_key(&mut self, key: KeyId) {
        self.cnt.remove(&key);
    }
    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        e.map(self.cnt.len() as u64)?;
        for (k, v) in &self.cnt {
            e.u32(*k)?.u32(*v)?;
        }
        Ok(())
    }
    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        self.cnt.clear();
        for _ in 0..d.map()?.unwrap_or(0) {
            let k = d.u32()?;
            let v = d.u32()?;
            self.cnt.insert(k, v);
        }
        Ok(())
    }
}

fn mkspec(
    mode: u8,
    ttl: bool,
    evict: bool,
    maxk: usize,
    lateness: i64,
    perkey: u8,
) -> PipelineSpec {
    let win = |id: &str, kind| OperatorSpec {
        id: id.into(),
        source: "s".into(),
        field: "v".into(),
        kind: OperatorKind::Window(WindowSpec {
            kind,
            allowed_lateness: lateness,
            aggregates: vec![AggKind::Count, AggKind::Mean, AggKind::Max],
            detect: Some(DetectSpec {
                on: Some(AggKind::Mean),
                detector: DetectorSpec::default(),
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            }),
        }),
    };
    let b = PipelineBuilder::new("x")
        .source(
            SourceSpec::new("s", ["v"])
                .out_of_orderness(20)
                .idle_timeout(100),
        )
        .source(
            SourceSpec::new("t", ["v"])
                .out_of_orderness(5)
                .idle_timeout(60),
        )
        .process("proc", "s", "v", "p/1", || Box::new(P::default()))
        .detect(
            "det",
            "t",
            "v",
            DetectorSpec::EwmaZ {
                alpha: 0.3,
                k: 2.0,
                warmup: 2,
            },
        );
    let mut spec = b.spec();
    spec.operators
        .push(win("tum", WindowKind::Tumbling { size: 40 }));
    spec.operators
        .push(win("ses", WindowKind::Session { gap: 15 }));
    spec.operators
        .push(win("cnt", WindowKind::Count { size: 3 }));
    spec.operators.push(win(
        "sli",
        WindowKind::Sliding {
            size: 30,
            slide: 10,
        },
    ));
    let mut o = spec.operators[5].clone();
    o.id = "cnt_t".into();
    o.source = "t".into();
    spec.operators.push(o);
    spec.time.mode = match mode {
        0 => TimeMode::Event,
        1 => TimeMode::Ingestion,
        _ => TimeMode::Processing,
    };
    // 0: per-source watermarks; 1: per-key on `s`; 2: per-key on both.
    if perkey >= 1 {
        spec.sources[0].watermark = WatermarkMode::PerKey;
    }
    if perkey >= 2 {
        spec.sources[1].watermark = WatermarkMode::PerKey;
    }
    spec.state.ttl = ttl.then_some(80);
    spec.state.max_keys = maxk;
    spec.state.on_full = if evict {
        FullPolicy::EvictIdle
    } else {
        FullPolicy::RejectNew
    };

    spec
}

#[derive(Clone, Debug)]
enum Step {
    S(usize, u8, i64, i32),
    T(i64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0usize..2, 0u8..6, -30i64..40, -50i32..50).prop_map(|(s, k, d, v)| Step::S(s, k, d, v)),
            1 => (0i64..120).prop_map(Step::T),
        ],
        1..200,
    )
}

type Out = (u8, u16, KeyId, String, i64, i64, u64, u64);
fn drain_all(e: &mut Engine, v: &mut Vec<Out>) {
    while let Some(o) = e.poll_output() {
        v.push(match o {
            Output::Window(w) => (
                0,
                w.op,
                w.key,
                e.key_name(w.key).into(),
                w.start,
                w.end,
                w.values
                    .as_slice()
                    .iter()
                    .fold(0u64, |a, x| a.rotate_left(7) ^ x.to_bits()),
                w.emission as u64 * 10 + w.anomaly.map_or(0, |a| 1 + a.flag as u64),
            ),
            Output::Late(l) => (
                1,
                l.op,
                l.key,
                e.key_name(l.key).into(),
                l.ts,
                0,
                l.value.to_bits(),
                0,
            ),
            Output::Score(s) => (
                2,
                s.op,
                s.key,
                e.key_name(s.key).into(),
                s.ts,
                0,
                s.value.to_bits(),
                s.verdict.score.to_bits(),
            ),
            Output::Custom(c) => (
                3,
                c.op,
                c.key,
                e.key_name(c.key).into(),
                c.ts,
                c.tag as i64,
                c.value.to_bits(),
                0,
            ),
        });
    }
}

fn play(spec: &PipelineSpec, st: &[Step], cuts: &[usize]) -> Result<(Vec<Out>, Vec<u8>), String> {
    let mut e = spec.clone().build().unwrap();
    let mut out = Vec::new();
    let (mut now, mut ts) = (T0, T0);
    for (i, s) in st.iter().enumerate() {
        if cuts.contains(&i) {
            let b = e.snapshot().map_err(|x| format!("{x}"))?;
            let mut f = spec.clone().build().unwrap();
            f.restore(&b).map_err(|x| format!("restore at {i}: {x}"))?;
            let b2 = f.snapshot().unwrap();
            if b2 != b {
                return Err(format!("snapshot(restore(b)) != b at {i}"));
            }
            e = f;
        }
        match *s {
            Step::S(src, k, d, v) => {
                ts += 3;
                now += 2;
                let _ = e.handle_sample(now, src, &key_name(k), ts + d, &[v as f64]);
            }
            Step::T(dn) => {
                now += dn;
                e.handle_time(now);
            }
        }
        drain_all(&mut e, &mut out);
    }
    e.handle_end_of_input();
    drain_all(&mut e, &mut out);
    let es = e.stats();
    assert_eq!(es.accepted + es.rejected_total(), es.input);
    for i in 0..spec.operators.len() {
        let s = e.op_stats(i).unwrap();
        assert_eq!(s.on_time + s.updated + s.late, s.routed, "op {i}");
    }
    Ok((out, e.snapshot().unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn snapshot_anywhere(st in steps(), cuts in prop::collection::vec(0usize..200, 0..6), mode in 0u8..3, ttl: bool, evict: bool, maxk in 1usize..8, lateness in prop_oneof![Just(0i64), 1i64..60], perkey in 0u8..3) {
        let spec = mkspec(mode, ttl, evict, maxk, lateness, perkey);
        let a = play(&spec, &st, &[]).unwrap(); if st.len() > 150 { eprintln!("outs {} kinds {:?}", a.0.len(), (0..4).map(|k| a.0.iter().filter(|o| o.0 == k).count()).collect::<Vec<_>>()); }
        let b = play(&spec, &st, &cuts);
        prop_assert!(b.is_ok(), "{:?}", b.as_ref().err());
        let b = b.unwrap();
        prop_assert_eq!(a.0.len(), b.0.len());
        for (i, (x, y)) in a.0.iter().zip(&b.0).enumerate() { prop_assert_eq!(x, y, "output {}", i); }
        prop_assert!(a.1 == b.1, "final snapshots differ");
    }
}

// F9: a rejected sample still moves the engine's `now` (processing clock).
#[test]
fn rejected_sample_changes_now_and_fires_processing_timers_early() {
    let spec = PipelineBuilder::new("x")
        .source(SourceSpec::new("s", ["v"]))
        .process("proc", "s", "v", "p/1", || Box::new(P::default()))
        .spec();
    let mut e = spec.clone().build().unwrap();
    e.handle_sample(0, 0, "a", T0, &[1.0]).unwrap(); // processing timer at now + 50 = 50
    while e.poll_output().is_some() {}
    let before = e.snapshot().unwrap();
    assert_eq!(
        e.handle_sample(1_000_000, 0, "a", T0 + 1, &[f64::NAN]),
        Err(Reject::NonFinite)
    );
    let after = e.snapshot().unwrap();
    eprintln!("snapshot changed by a rejected sample: {}", before != after);
    e.handle_sample(10, 0, "a", T0 + 1, &[1.0]).unwrap(); // driver clock is 10; wm advances
    let mut fired = vec![];
    while let Some(o) = e.poll_output() {
        if let Output::Custom(c) = o {
            fired.push((c.ts, c.tag));
        }
    }
    eprintln!("fired at driver clock 10: {fired:?}");
    assert!(
        !fired.iter().any(|&(_, tag)| tag == 1),
        "processing timer at 50 fired at now = 10"
    );
}

#[derive(Default)]
struct Heartbeat {
    fires: u64,
}
impl KeyedProcess for Heartbeat {
    fn state_type(&self) -> &str {
        "hb/1"
    }
    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, _v: f64) {
        ctx.register_event_timer(ts + 1000);
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, _d: TimeDomain) {
        self.fires += 1;
        ctx.emit(at, self.fires as f64, 0);
        if self.fires < 100_000 {
            ctx.register_event_timer(at + 1000);
        } // periodic heartbeat
    }
    fn clear_key(&mut self, _key: KeyId) {}
    fn encode(
        &self,
        _e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        Ok(())
    }
    fn decode(&mut self, _d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        Ok(())
    }
}

// Suspicion: end of input fires re-registered event timers without bound.
#[test]
fn end_of_input_with_periodic_timer_terminates() {
    let mut e = PipelineBuilder::new("x")
        .source(SourceSpec::new("s", ["v"]))
        .process("hb", "s", "v", "hb/1", || Box::new(Heartbeat::default()))
        .build()
        .unwrap();
    e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    e.handle_end_of_input();
    let mut n = 0;
    while e.poll_output().is_some() {
        n += 1;
    }
    eprintln!("outputs at end of input: {n}");
    assert!(
        n < 100_000,
        "loops until the operator itself stops (or i64 overflow)"
    );
}
