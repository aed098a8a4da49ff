//! Custom keyed operators with event-time and processing-time timers.
//!
//! Implement [`KeyedProcess`] and add it with
//! [`PipelineBuilder::process`](crate::spec::PipelineBuilder::process). The
//! engine hands it each sample of its source field, keyed, and calls it back
//! on its timers: an event-time timer fires when the watermark reaches its
//! time, a processing-time timer when the driver's clock (`now`) does.
//! Timers are per key and deduplicated; their order is (time, key id).
//! State lives in the operator; the engine snapshots it through
//! [`KeyedProcess::encode`] / [`KeyedProcess::decode`] together with the
//! timers.
//!
//! ```
//! use weir_core::prelude::*;
//! use weir_core::process::{Context, KeyedProcess, TimeDomain};
//! use weir_core::keys::KeyId;
//!
//! /// Alerts when a value stays above 80 for 10 s of event time.
//! #[derive(Default)]
//! struct Overheat { since: std::collections::BTreeMap<KeyId, i64> }
//!
//! impl KeyedProcess for Overheat {
//!     fn state_type(&self) -> &str { "overheat/1" }
//!     fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, v: f64) {
//!         if v > 80.0 {
//!             if !self.since.contains_key(&ctx.key()) {
//!                 self.since.insert(ctx.key(), ts);
//!                 ctx.register_event_timer(ts + 10_000);
//!             }
//!         } else {
//!             self.since.remove(&ctx.key());
//!         }
//!     }
//!     fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, _: TimeDomain) {
//!         if self.since.get(&ctx.key()).is_some_and(|s| s + 10_000 == at) {
//!             ctx.emit(at, 1.0, 0);
//!         }
//!     }
//!     fn clear_key(&mut self, key: KeyId) { self.since.remove(&key); }
//!     fn encode(&self, e: &mut minicbor::Encoder<&mut Vec<u8>>) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
//!         e.map(self.since.len() as u64)?;
//!         for (k, t) in &self.since { e.u32(*k)?.i64(*t)?; }
//!         Ok(())
//!     }
//!     fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
//!         self.since.clear();
//!         for _ in 0..d.map()?.unwrap_or(0) { let k = d.u32()?; self.since.insert(k, d.i64()?); }
//!         Ok(())
//!     }
//! }
//!
//! let mut engine = PipelineBuilder::new("heat")
//!     .source(SourceSpec::new("temp", ["c"]))
//!     .process("overheat", "temp", "c", "overheat/1", || Box::new(Overheat::default()))
//!     .build()
//!     .unwrap();
//! let t0 = 1_700_000_000_000;
//! for i in 0..30 {
//!     engine.handle_sample(t0, 0, "motor-1", t0 + i * 1000, &[if i >= 5 { 90.0 } else { 20.0 }]).unwrap();
//! }
//! let alerts: Vec<_> = std::iter::from_fn(|| engine.poll_output()).collect();
//! assert_eq!(alerts.len(), 1);
//! ```

use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::keys::KeyId;
use crate::output::{CustomResult, Output};

/// Which clock a timer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the driver's clock (`now`) reaches it.
    ProcessingTime,
}

/// Pending timers of one custom operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timers {
    pub(crate) event: BTreeSet<(i64, KeyId)>,
    pub(crate) processing: BTreeSet<(i64, KeyId)>,
}

/// What a custom operator may do from a callback.
pub struct Context<'a> {
    op: u16,
    key: KeyId,
    watermark: i64,
    now: i64,
    values: &'a [f64],
    room: usize,
    timers: &'a mut Timers,
    out: &'a mut VecDeque<Output>,
}

impl<'a> Context<'a> {
    fn new(
        op: u16,
        key: KeyId,
        (watermark, now): (i64, i64),
        (values, room): (&'a [f64], usize),
        timers: &'a mut Timers,
        out: &'a mut VecDeque<Output>,
    ) -> Self {
        Context {
            op,
            key,
            watermark,
            now,
            values,
            room,
            timers,
            out,
        }
    }
}

impl Context<'_> {
    /// The key being handled.
    pub fn key(&self) -> KeyId {
        self.key
    }

    /// The current watermark (`i64::MIN` before any).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The driver's clock.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// In `on_sample`: every field of the sample (its source's fields and
    /// computed fields, in order; the operator's own is among them, a
    /// nullable field's NULL a NaN). Empty in `on_timer`.
    pub fn values(&self) -> &[f64] {
        self.values
    }

    /// In `on_sample`: the bytes the keyed-state budget has left
    /// ([`StateSpec::max_bytes`](crate::spec::StateSpec::max_bytes) less
    /// [`Engine::state_bytes`](crate::engine::Engine::state_bytes), which
    /// counts every operator's [`KeyedProcess::state_bytes`]). An operator
    /// that keeps rows lets go of old ones, or refuses the sample, rather
    /// than grow past it. `usize::MAX` in `on_timer` (a timer moves state,
    /// it does not add samples).
    pub fn state_room(&self) -> usize {
        self.room
    }

    /// Calls `on_timer` for this key once the watermark reaches `at`.
    pub fn register_event_timer(&mut self, at: i64) {
        self.timers.event.insert((at, self.key));
    }

    /// Calls `on_timer` for this key once `now` reaches `at`.
    pub fn register_processing_timer(&mut self, at: i64) {
        self.timers.processing.insert((at, self.key));
    }

    /// Removes a timer registered earlier (no-op if absent).
    pub fn delete_timer(&mut self, at: i64, domain: TimeDomain) {
        match domain {
            TimeDomain::EventTime => self.timers.event.remove(&(at, self.key)),
            TimeDomain::ProcessingTime => self.timers.processing.remove(&(at, self.key)),
        };
    }

    /// Emits a window row for this key, as a window operator would: its
    /// bounds, up to [`MAX_AGGS`](crate::spec::MAX_AGGS) values (more are
    /// dropped) and an optional detector verdict. It goes wherever window
    /// results go (outputs, sinks, the replay CSV) as an on-time firing.
    pub fn emit_window(
        &mut self,
        start: i64,
        end: i64,
        values: &[f64],
        anomaly: Option<crate::detect::Verdict>,
    ) {
        let mut vals = crate::output::AggValues::default();
        for v in values {
            vals.push(*v);
        }
        self.out
            .push_back(Output::Window(crate::output::WindowResult {
                op: self.op,
                key: self.key,
                start,
                end,
                emission: crate::output::Emission::OnTime,
                values: vals,
                anomaly,
            }));
    }

    /// Emits a result for this key: a timestamp, a value and a tag of the
    /// operator's choosing.
    pub fn emit(&mut self, ts: i64, value: f64, tag: u32) {
        self.out.push_back(Output::Custom(CustomResult {
            op: self.op,
            key: self.key,
            ts,
            value,
            tag,
        }));
    }
}

/// A custom keyed operator.
pub trait KeyedProcess: Send {
    /// Names the meaning of the state; state is restored into a changed
    /// pipeline only when this and the operator id match.
    fn state_type(&self) -> &str;
    /// A sample of the operator's field for `ctx.key()`. Samples at or before
    /// the watermark go to the late output instead.
    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, value: f64);
    /// A timer of `ctx.key()` fired.
    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, domain: TimeDomain);
    /// Forget a key (TTL or budget eviction).
    fn clear_key(&mut self, key: KeyId);
    /// Whether samples at or behind the watermark still come to
    /// [`KeyedProcess::on_sample`] (default: no, they go to the late
    /// output). An operator that keeps its own windows says yes, and
    /// decides itself whether a sample is too late, as a window operator
    /// does (a window accepts samples until it fires).
    fn sees_late(&self) -> bool {
        false
    }
    /// Whether the key holds state that must keep it alive (default: no).
    fn holds_state(&self, _key: KeyId) -> bool {
        false
    }
    /// The estimated bytes of one key's state at most, its rows aside
    /// (what [`KeyedProcess::state_bytes`] counts): charged to every key
    /// from its admission ([`Engine::key_cost`](crate::engine::Engine::key_cost)).
    /// Default 64, a guess.
    fn key_bytes(&self) -> usize {
        64
    }
    /// Bytes of state held now beyond [`KeyedProcess::key_bytes`] a key,
    /// e.g. the rows an operator keeps: counted in
    /// [`Engine::state_bytes`](crate::engine::Engine::state_bytes), so in
    /// the budget that admits new keys and in [`Context::state_room`]
    /// (default: none).
    fn state_bytes(&self) -> usize {
        0
    }
    /// Writes all state (the engine writes the timers).
    ///
    /// # Errors
    /// Encoding errors of `e`.
    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>>;
    /// Replaces all state with what [`KeyedProcess::encode`] wrote.
    ///
    /// # Errors
    /// Malformed input; must not panic.
    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error>;
}

type Factory = dyn Fn() -> Box<dyn KeyedProcess> + Send + Sync;

/// Makes a fresh instance of a custom operator (a pipeline may be built many
/// times: on restore, on update).
#[derive(Clone)]
pub struct ProcessFactory(pub Arc<Factory>);

impl fmt::Debug for ProcessFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessFactory")
    }
}

impl PartialEq for ProcessFactory {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

pub(crate) struct ProcessOp {
    pub(crate) op: u16,
    pub(crate) f: Box<dyn KeyedProcess>,
    pub(crate) timers: Timers,
    /// Per-key watermarks: event timers fire from `advance_key`.
    pub(crate) per_key: bool,
    pub(crate) stats: crate::window::OpStats,
}

impl ProcessOp {
    pub(crate) fn on_sample(
        &mut self,
        key: KeyId,
        ts: i64,
        (x, values): (f64, &[f64]),
        (wm, now): (i64, i64),
        room: usize,
        out: &mut VecDeque<Output>,
    ) {
        self.stats.routed += 1;
        if ts <= wm && !self.f.sees_late() {
            self.stats.late += 1;
            out.push_back(Output::Late(crate::output::LateSample {
                op: self.op,
                key,
                ts,
                value: x,
            }));
            return;
        }
        self.stats.on_time += 1;
        let mut ctx = Context::new(
            self.op,
            key,
            (wm, now),
            (values, room),
            &mut self.timers,
            out,
        );
        self.f.on_sample(&mut ctx, ts, x);
    }

    /// Fires event timers up to `wm` and processing timers up to `now`.
    pub(crate) fn advance(&mut self, wm: i64, now: i64, out: &mut VecDeque<Output>) {
        loop {
            let ev = self.timers.event.first().copied().filter(|(t, _)| *t <= wm);
            let pr = self
                .timers
                .processing
                .first()
                .copied()
                .filter(|(t, _)| *t <= now);
            let (at, key, domain) = match (ev, pr) {
                (Some(e), Some(p)) if p < e => (p.0, p.1, TimeDomain::ProcessingTime),
                (Some(e), _) => (e.0, e.1, TimeDomain::EventTime),
                (None, Some(p)) => (p.0, p.1, TimeDomain::ProcessingTime),
                (None, None) => break,
            };
            match domain {
                TimeDomain::EventTime => self.timers.event.remove(&(at, key)),
                TimeDomain::ProcessingTime => self.timers.processing.remove(&(at, key)),
            };
            self.fire(key, at, domain, (wm, now), out);
        }
    }

    /// Calls `on_timer` for `key`'s timer at `at` (removed already).
    fn fire(
        &mut self,
        key: KeyId,
        at: i64,
        domain: TimeDomain,
        clocks: (i64, i64),
        out: &mut VecDeque<Output>,
    ) {
        self.stats.fired += 1;
        let mut ctx = Context::new(
            self.op,
            key,
            clocks,
            (&[], usize::MAX),
            &mut self.timers,
            out,
        );
        self.f.on_timer(&mut ctx, at, domain);
    }

    /// Per-key watermarks: fires `key`'s event timers up to `wm` (its own
    /// watermark), in time order, including timers they register.
    pub(crate) fn advance_key(
        &mut self,
        key: KeyId,
        wm: i64,
        now: i64,
        out: &mut VecDeque<Output>,
    ) {
        while let Some(at) = self
            .timers
            .event
            .range(..=(wm, KeyId::MAX))
            .find(|t| t.1 == key)
            .map(|t| t.0)
        {
            self.timers.event.remove(&(at, key));
            self.fire(key, at, TimeDomain::EventTime, (wm, now), out);
        }
    }

    /// End of input: fires every event timer pending now (the watermark
    /// is at the end of time), but not the timers those callbacks register,
    /// so a periodic timer cannot run forever.
    pub(crate) fn flush(&mut self, now: i64, out: &mut VecDeque<Output>) {
        let pending: Vec<(i64, KeyId)> = self.timers.event.iter().copied().collect();
        for (at, key) in pending {
            if self.timers.event.remove(&(at, key)) {
                self.fire(key, at, TimeDomain::EventTime, (i64::MAX, now), out);
            }
        }
    }

    pub(crate) fn is_empty(&self, key: KeyId) -> bool {
        !self.f.holds_state(key)
            && !self.timers.event.iter().any(|t| t.1 == key)
            && !self.timers.processing.iter().any(|t| t.1 == key)
    }

    pub(crate) fn clear_key(&mut self, key: KeyId) {
        self.f.clear_key(key);
        self.timers.event.retain(|t| t.1 != key);
        self.timers.processing.retain(|t| t.1 != key);
    }
}
