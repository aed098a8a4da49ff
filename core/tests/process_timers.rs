//! Custom operators: event-time and processing-time timers fire at the
//! right moment, deterministically, and survive snapshot/restore.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use weir_core::keys::KeyId;
use weir_core::prelude::*;
use weir_core::process::{Context, KeyedProcess, TimeDomain};

/// Alerts (tag 1) when a key stays above 50 for HOLD of event time, and
/// reports a stale key (tag 2) after STALE of processing time without data.
#[derive(Default)]
struct Watch {
    above_since: BTreeMap<KeyId, i64>,
    last_now: BTreeMap<KeyId, i64>,
}

const HOLD: i64 = 100;
const STALE: i64 = 1_000;

impl KeyedProcess for Watch {
    fn state_type(&self) -> &str {
        "watch/1"
    }
    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, v: f64) {
        let k = ctx.key();
        if let Some(old) = self.last_now.insert(k, ctx.now()) {
            ctx.delete_timer(old + STALE, TimeDomain::ProcessingTime);
        }
        ctx.register_processing_timer(ctx.now() + STALE);
        if v > 50.0 {
            if let std::collections::btree_map::Entry::Vacant(e) = self.above_since.entry(k) {
                e.insert(ts);
                ctx.register_event_timer(ts + HOLD);
            }
        } else if let Some(since) = self.above_since.remove(&k) {
            ctx.delete_timer(since + HOLD, TimeDomain::EventTime);
        }
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, domain: TimeDomain) {
        match domain {
            TimeDomain::EventTime => {
                if self.above_since.get(&ctx.key()) == Some(&(at - HOLD)) {
                    ctx.emit(at, 1.0, 1);
                }
            }
            TimeDomain::ProcessingTime => ctx.emit(at, 0.0, 2),
        }
    }
    fn clear_key(&mut self, key: KeyId) {
        self.above_since.remove(&key);
        self.last_now.remove(&key);
    }
    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        e.array(2)?;
        for m in [&self.above_since, &self.last_now] {
            e.map(m.len() as u64)?;
            for (k, v) in m {
                e.u32(*k)?.i64(*v)?;
            }
        }
        Ok(())
    }
    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        d.array()?;
        for m in [&mut self.above_since, &mut self.last_now] {
            m.clear();
            for _ in 0..d.map()?.unwrap_or(0) {
                let k = d.u32()?;
                m.insert(k, d.i64()?);
            }
        }
        Ok(())
    }
}

fn watch_spec() -> PipelineSpec {
    PipelineBuilder::new("watch")
        .source(SourceSpec::new("s", ["v"]).out_of_orderness(10))
        .process("watch", "s", "v", "watch/1", || Box::new(Watch::default()))
        .spec()
}

#[test]
fn event_timer_fires_when_the_watermark_passes_and_is_cancelled_by_a_drop() {
    let mut e = watch_spec().build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    // Key a: above from T0 for 200 → alert at T0 + 100 once wm >= T0+100.
    // Key b: above at T0, drops at T0 + 50 → no alert.
    for i in 0..=30 {
        let t = T0 + i * 10;
        e.handle_sample(T0, 0, "a", t, &[60.0]).unwrap();
        e.handle_sample(T0, 0, "b", t, &[if i < 5 { 60.0 } else { 10.0 }])
            .unwrap();
        drain(&mut e, &mut rows, &mut late);
        let alerts: Vec<&Row> = rows.iter().filter(|r| r.vals[1] == 1.0).collect();
        // wm = t - 10 - 1; the timer at T0+100 fires once t >= T0 + 111.
        assert_eq!(alerts.len(), (t >= T0 + 111) as usize, "at t = {}", t - T0);
    }
    assert!(rows.iter().all(|r| r.key == "a"));
}

#[test]
fn processing_timers_fire_on_handle_time() {
    let mut e = watch_spec().build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    e.handle_sample(5_000, 0, "a", T0, &[1.0]).unwrap();
    e.handle_sample(5_500, 0, "a", T0 + 1, &[1.0]).unwrap();
    assert_eq!(e.poll_timeout(), Some(6_500), "the processing timer is due");
    e.handle_time(6_499);
    drain(&mut e, &mut rows, &mut late);
    assert!(
        rows.is_empty(),
        "the first timer was replaced, the second is due at 6500"
    );
    e.handle_time(6_500);
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].start, rows[0].vals[1]), (6_500, 2.0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn timers_and_state_survive_restore(
        raw in prop::collection::vec((0u8..3, 0i64..30, 0u8..2, 0i64..400), 1..200),
        cut in 0usize..200,
    ) {
        let spec = watch_spec();
        let steps: Vec<(u8, i64, f64, i64)> = {
            let mut t = T0;
            let mut now = 0;
            raw.iter().map(|(k, dt, hi, dn)| { t += dt; now += dn; (*k, t, if *hi == 1 { 60.0 } else { 1.0 }, now) }).collect()
        };
        let play = |cut: Option<usize>| {
            let mut e = spec.clone().build().unwrap();
            let (mut rows, mut late) = (Vec::new(), 0);
            for (i, (k, t, v, now)) in steps.iter().enumerate() {
                if Some(i) == cut {
                    let b = e.snapshot().unwrap();
                    e = spec.clone().build().unwrap();
                    e.restore(&b).unwrap();
                }
                let _ = e.handle_sample(*now, 0, &key_name(*k), *t, &[*v]);
                e.handle_time(*now);
                drain(&mut e, &mut rows, &mut late);
            }
            e.handle_end_of_input();
            drain(&mut e, &mut rows, &mut late);
            rows.iter().map(|r| r.bits()).map(|(a, b, c, d, e, f, g)| (a, b.to_string(), c, d, e, f, g)).collect::<Vec<_>>()
        };
        prop_assert_eq!(play(None), play(Some(cut)));
    }
}

/// Keeps every value it is handed, while the state budget has room.
#[derive(Default)]
struct Keeper {
    kept: BTreeMap<KeyId, Vec<f64>>,
    refused: u64,
}

impl KeyedProcess for Keeper {
    fn state_type(&self) -> &str {
        "keeper/1"
    }
    fn on_sample(&mut self, ctx: &mut Context<'_>, _ts: i64, v: f64) {
        if ctx.state_room() < 8 {
            self.refused += 1;
            return;
        }
        self.kept.entry(ctx.key()).or_default().push(v);
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: i64, _: TimeDomain) {}
    fn clear_key(&mut self, key: KeyId) {
        self.kept.remove(&key);
    }
    fn state_bytes(&self) -> usize {
        self.kept.values().map(|v| v.len() * 8).sum()
    }
    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        e.map(0)?;
        Ok(())
    }
    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        d.map()?;
        Ok(())
    }
}

#[test]
fn a_custom_operators_rows_count_in_the_state_budget() {
    // What an operator reports it holds is part of the engine's state
    // bytes: it sees the room left, and new keys find none once it is full.
    let mut s = PipelineBuilder::new("keep")
        .source(SourceSpec::new("s", ["v"]).out_of_orderness(10))
        .process("keep", "s", "v", "keeper/1", || Box::new(Keeper::default()))
        .spec();
    s.state.max_bytes = 64 << 10;
    let mut e = s.build().unwrap();
    let base = {
        e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
        e.state_bytes() - 8
    };
    for i in 1..20_000 {
        e.handle_sample(T0, 0, "a", T0 + i, &[1.0]).unwrap();
        assert!(e.state_bytes() <= 64 << 10, "{}", e.state_bytes());
    }
    // Every value that found room is counted: the budget is full.
    let kept = (e.state_bytes() - base) / 8;
    assert!(
        e.state_bytes() > (64 << 10) - 8,
        "{} bytes",
        e.state_bytes()
    );
    assert!((7_000..8_192).contains(&kept), "{kept} values kept");
    assert!(matches!(
        e.handle_sample(T0, 0, "b", T0 + 20_000, &[1.0]),
        Err(Reject::KeyBudget)
    ));
}
