//! The engine: sources and watermarks, keys, operators, outputs.
//!
//! # Call order
//! 1. Build it from a [`PipelineSpec`] ([`PipelineSpec::build`]) or restore
//!    it from a snapshot ([`Engine::restore`]).
//! 2. Feed it: [`Engine::handle_sample`] for each sample, [`Engine::handle_time`]
//!    whenever the driver's clock moves (idleness, processing time),
//!    [`Engine::handle_end_of_input`] when a finite input ends.
//! 3. After each `handle_*` call, drain [`Engine::poll_output`] until `None`.
//!    Key ids in outputs stay valid until the next `handle_*` call after the
//!    queue was drained.
//! 4. [`Engine::snapshot`] between calls, with the queue drained.
//!
//! The same sequence of calls always yields the same outputs: the engine
//! reads no clock and no randomness.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use crate::detect::{DetectorSpec, DetectorState};
use crate::keys::{KeyId, KeyTable};
use crate::output::{Output, ScoreResult};
use crate::process::ProcessOp;
use crate::spec::{FullPolicy, OperatorKind, PipelineSpec};
use crate::time::{TimeMode, Watermark};
use crate::window::{buffer_in_time_order, OpStats, Pending, WindowOp};
use alloc::collections::BinaryHeap;
use core::cmp::Reverse;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Why a sample was rejected at the engine's door. Every rejection is
/// counted in [`EngineStats::rejected`] under its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// The source index is not in the pipeline.
    UnknownSource,
    /// The sample carries a different number of values than the source's fields.
    FieldCount,
    /// A value is NaN or infinite.
    NonFinite,
    /// The timestamp is outside the pipeline's plausible range.
    TimestampOutOfRange,
    /// Stamped further ahead of the gateway clock than the source allows.
    TooFarAhead,
    /// A new key arrived with the key budget full.
    KeyBudget,
    /// The key is empty or longer than [`MAX_KEY_LEN`].
    BadKey,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 7] = [
        Reject::UnknownSource,
        Reject::FieldCount,
        Reject::NonFinite,
        Reject::TimestampOutOfRange,
        Reject::TooFarAhead,
        Reject::KeyBudget,
        Reject::BadKey,
    ];

    /// A stable snake_case name, for counters and dead-letter records.
    pub fn name(self) -> &'static str {
        match self {
            Reject::UnknownSource => "unknown_source",
            Reject::FieldCount => "field_count",
            Reject::NonFinite => "non_finite",
            Reject::TimestampOutOfRange => "timestamp_out_of_range",
            Reject::TooFarAhead => "too_far_ahead",
            Reject::KeyBudget => "key_budget",
            Reject::BadKey => "bad_key",
        }
    }

    fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reject::UnknownSource => "no such source in the pipeline",
            Reject::FieldCount => "wrong number of values for the source's fields",
            Reject::NonFinite => "a value is NaN or infinite",
            Reject::TimestampOutOfRange => "timestamp outside the pipeline's plausible range",
            Reject::TooFarAhead => "timestamp too far ahead of the gateway clock",
            Reject::KeyBudget => "key budget full: new key refused",
            Reject::BadKey => "key empty or too long",
        })
    }
}

impl core::error::Error for Reject {}

/// Engine-wide counters. `accepted + Σ rejected == input` always holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Samples offered to `handle_sample`.
    pub input: u64,
    /// Samples that reached the operators.
    pub accepted: u64,
    /// Rejections by reason, indexed as [`Reject::ALL`].
    pub rejected: [u64; 7],
    /// Keys evicted by TTL or by the `evict_idle` budget policy.
    pub keys_evicted: u64,
}

impl EngineStats {
    /// Rejections of one reason.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()]
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceState {
    pub(crate) max_ts: Option<i64>,
    pub(crate) last_now: i64,
    pub(crate) idle: bool,
}

pub(crate) struct DetectOp {
    pub(crate) op: u16,
    pub(crate) arrival: bool,
    pub(crate) spec: DetectorSpec,
    pub(crate) states: Vec<Option<DetectorState>>,
    pub(crate) pending: BinaryHeap<Reverse<Pending>>,
    pub(crate) stats: OpStats,
}

impl DetectOp {
    fn on_sample(&mut self, key: KeyId, ts: i64, x: f64, wm: i64, out: &mut VecDeque<Output>) {
        self.stats.routed += 1;
        if self.arrival {
            self.stats.on_time += 1;
            self.score(
                Pending {
                    ts,
                    key,
                    bits: x.to_bits(),
                },
                out,
            );
        } else {
            buffer_in_time_order(
                &mut self.stats,
                &mut self.pending,
                self.op,
                key,
                ts,
                x,
                wm,
                out,
            );
        }
    }

    fn advance(&mut self, wm: i64, out: &mut VecDeque<Output>) {
        while let Some(Reverse(p)) = self.pending.peek().copied() {
            if p.ts > wm {
                break;
            }
            self.pending.pop();
            self.score(p, out);
        }
    }

    fn score(&mut self, p: Pending, out: &mut VecDeque<Output>) {
        let k = p.key as usize;
        if k >= self.states.len() {
            self.states.resize_with(k + 1, || None);
        }
        let x = f64::from_bits(p.bits);
        let st = self.states[k].get_or_insert_with(|| self.spec.new_state());
        if let Some(verdict) = st.update(p.ts, x) {
            self.stats.fired += 1;
            if verdict.flag {
                self.stats.flagged += 1;
            }
            out.push_back(Output::Score(ScoreResult {
                op: self.op,
                key: p.key,
                ts: p.ts,
                value: x,
                verdict,
            }));
        }
    }
}

// Few operators per pipeline, looked up by index on every sample: boxing
// the large variant would add a pointer chase on the hot path.
#[allow(clippy::large_enum_variant)]
// An explicit tag: telling the variants apart from a niche inside the
// window operator costs a 128-bit compare on every sample.
#[repr(u8)]
pub(crate) enum Op {
    Window(WindowOp),
    Detect(DetectOp),
    Process(ProcessOp),
}

impl Op {
    pub(crate) fn stats(&self) -> &OpStats {
        match self {
            Op::Window(w) => &w.stats,
            Op::Detect(d) => &d.stats,
            Op::Process(p) => &p.stats,
        }
    }

    fn is_empty(&self, key: KeyId) -> bool {
        match self {
            Op::Window(w) => w.is_empty(key),
            Op::Detect(d) => !d.pending.iter().any(|p| p.0.key == key),
            Op::Process(p) => p.is_empty(key),
        }
    }

    fn clear_key(&mut self, key: KeyId) {
        match self {
            Op::Window(w) => w.clear_key(key),
            Op::Detect(d) => {
                if let Some(s) = d.states.get_mut(key as usize) {
                    *s = None;
                }
            }
            Op::Process(p) => p.clear_key(key),
        }
    }
}

/// Settings read on every sample, copied out of the spec.
#[derive(Clone, Copy, Debug)]
struct Hot {
    min_ts: i64,
    max_ts: i64,
    event_time: bool,
    processing: bool,
    single_source: bool,
    /// Per-key last timestamps are needed only for TTL and eviction.
    track_last_ts: bool,
    /// Several sources, some with an idle timeout: check idleness as `now` moves.
    idle_sources: bool,
}

/// Per-source constants, copied out of the spec.
#[derive(Clone, Copy, Debug)]
struct SrcRt {
    nfields: usize,
    bound: i64,
    /// `None`: no future guard.
    max_ahead: Option<i64>,
    /// Idleness is tracked only when the source has an idle timeout.
    tracks_idle: bool,
}

/// Refusals are rare: kept out of line so the accepting path stays tight.
#[cold]
#[inline(never)]
fn refuse(r: Reject) -> Result<(), Reject> {
    Err(r)
}

/// The watermark a source with largest timestamp `max_ts` and bound
/// `bound` allows: every event at or before it has arrived. As Flink's
/// bounded out-of-orderness, an event exactly `bound` behind the largest
/// timestamp is still on time, and so is a repeated timestamp at bound 0.
#[inline]
pub fn watermark_of(max_ts: i64, bound: i64) -> i64 {
    max_ts.saturating_sub(bound).saturating_sub(1)
}

/// A running pipeline. See the module docs for the call order.
pub struct Engine {
    /// Largest out-of-orderness bound of any source (processing time).
    max_bound: i64,
    hot: Hot,
    src_rt: Vec<SrcRt>,
    pub(crate) spec: PipelineSpec,
    pub(crate) keys: KeyTable,
    pub(crate) sources: Vec<SourceState>,
    /// source → (operator index, field index)
    routes: Vec<Vec<(u16, usize)>>,
    pub(crate) ops: Vec<Op>,
    out: VecDeque<Output>,
    pub(crate) wm: i64,
    pub(crate) now: i64,
    pub(crate) stats: EngineStats,
    pub(crate) next_sweep: i64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("pipeline", &self.spec.name)
            .field("keys", &self.keys.live())
            .field("watermark", &self.watermark())
            .field("stats", &self.stats)
            .finish()
    }
}

impl PipelineSpec {
    /// Validates the description and builds an engine for it.
    ///
    /// # Errors
    /// See [`PipelineSpec::validate`].
    pub fn build(self) -> Result<Engine, crate::spec::BuildError> {
        self.validate()?;
        let mut routes = alloc::vec![Vec::new(); self.sources.len()];
        let mut ops = Vec::with_capacity(self.operators.len());
        for (i, op) in self.operators.iter().enumerate() {
            let si = self
                .sources
                .iter()
                .position(|s| s.name == op.source)
                .expect("validated");
            let fi = self.sources[si]
                .fields
                .iter()
                .position(|f| *f == op.field)
                .expect("validated");
            routes[si].push((i as u16, fi));
            ops.push(match &op.kind {
                OperatorKind::Window(w) => Op::Window(WindowOp::new(i as u16, w)),
                OperatorKind::Detect(d) => Op::Detect(DetectOp {
                    op: i as u16,
                    arrival: d.order == crate::spec::SampleOrder::Arrival,
                    spec: d.detector,
                    states: Vec::new(),
                    pending: BinaryHeap::new(),
                    stats: OpStats::default(),
                }),
                OperatorKind::Process(p) => Op::Process(ProcessOp {
                    op: i as u16,
                    f: (p.factory.0)(),
                    timers: Default::default(),
                    stats: OpStats::default(),
                }),
            });
        }
        let sources = alloc::vec![SourceState { max_ts: None, last_now: i64::MIN, idle: false }; self.sources.len()];
        let hot = Hot {
            min_ts: self.time.min_ts,
            max_ts: self.time.max_ts,
            event_time: self.time.mode == TimeMode::Event,
            processing: self.time.mode == TimeMode::Processing,
            single_source: self.sources.len() == 1,
            track_last_ts: self.state.ttl.is_some() || self.state.on_full == FullPolicy::EvictIdle,
            idle_sources: self.sources.len() > 1
                && self.sources.iter().any(|s| s.idle_timeout.is_some()),
        };
        let src_rt = self
            .sources
            .iter()
            .map(|s| SrcRt {
                nfields: s.fields.len(),
                bound: s.max_out_of_orderness,
                max_ahead: s.max_ahead,
                tracks_idle: s.idle_timeout.is_some(),
            })
            .collect();
        let max_bound = self
            .sources
            .iter()
            .map(|s| s.max_out_of_orderness)
            .max()
            .unwrap_or(0);
        Ok(Engine {
            max_bound,
            hot,
            src_rt,
            spec: self,
            keys: KeyTable::default(),
            sources,
            routes,
            ops,
            out: VecDeque::new(),
            wm: i64::MIN,
            now: i64::MIN,
            stats: EngineStats::default(),
            next_sweep: i64::MIN,
        })
    }
}

impl Engine {
    /// The pipeline this engine runs.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Index of a source by name, for [`Engine::handle_sample`].
    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.spec.sources.iter().position(|s| s.name == name)
    }

    /// The current watermark.
    pub fn watermark(&self) -> Watermark {
        if self.wm == i64::MIN {
            Watermark::Idle
        } else {
            Watermark::EventTime(self.wm)
        }
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Counters of operator `op` (index in the pipeline's `operators`).
    pub fn op_stats(&self, op: usize) -> Option<OpStats> {
        self.ops.get(op).map(|o| *o.stats())
    }

    /// Live keys.
    pub fn key_count(&self) -> usize {
        self.keys.live()
    }

    /// The name of a key id found in an output.
    pub fn key_name(&self, key: KeyId) -> &str {
        self.keys.name(key).unwrap_or("")
    }

    /// Whether source `i` is currently idle (not holding the watermark back).
    pub fn source_idle(&self, i: usize) -> bool {
        self.sources
            .get(i)
            .is_none_or(|s| s.idle || s.max_ts.is_none())
    }

    /// Offers one sample from source `source`, with the driver's clock at `now`.
    ///
    /// `values` must match the source's `fields`. The sample is classified
    /// against the watermark as it was before it, then may advance the
    /// watermark, which can fire windows. Drain [`Engine::poll_output`] after.
    ///
    /// # Errors
    /// The reason the sample was refused; it is counted and nothing changes.
    #[inline(always)]
    pub fn handle_sample(
        &mut self,
        now: i64,
        source: usize,
        key: &str,
        ts: i64,
        values: &[f64],
    ) -> Result<(), Reject> {
        self.stats.input += 1;
        match self.admit(now, source, key, ts, values) {
            Ok(()) => {
                self.stats.accepted += 1;
                Ok(())
            }
            Err(r) => {
                self.stats.rejected[r.index()] += 1;
                Err(r)
            }
        }
    }

    #[inline(always)]
    fn admit(
        &mut self,
        now: i64,
        source: usize,
        key: &str,
        ts: i64,
        values: &[f64],
    ) -> Result<(), Reject> {
        if !self.keys.pending_free.is_empty() && self.out.is_empty() {
            self.keys.release_pending();
        }
        let hot = self.hot;
        let Some(src) = self.src_rt.get(source) else {
            return refuse(Reject::UnknownSource);
        };
        if values.len() != src.nfields {
            return refuse(Reject::FieldCount);
        }
        if values.iter().any(|v| !v.is_finite()) {
            return refuse(Reject::NonFinite);
        }
        let ts = if hot.event_time { ts } else { now };
        if ts < hot.min_ts || ts > hot.max_ts {
            return refuse(Reject::TimestampOutOfRange);
        }
        if let Some(ahead) = src.max_ahead {
            if ts > now.saturating_add(ahead) {
                return refuse(Reject::TooFarAhead);
            }
        }
        let bound = src.bound;
        let tracks_idle = src.tracks_idle;
        let kid = match self.keys.get(key) {
            Some(k) => k,
            None => self.new_key(key)?,
        };
        // Accepted from here on: only now may the sample change state.
        if now > self.now {
            self.now = now;
            if hot.idle_sources {
                self.mark_idle(now);
            }
        }
        if hot.track_last_ts {
            let k = kid as usize;
            if ts > self.keys.last_ts[k] {
                self.keys.last_ts[k] = ts;
            }
        }
        let wm = self.wm;
        let routes = &self.routes[source];
        if let [(op, field)] = routes[..] {
            // One operator reads this source: no loop.
            self.route(op, kid, ts, values[field], wm);
        } else {
            self.route_all(source, kid, ts, values, wm);
        }
        let s = &mut self.sources[source];
        if tracks_idle {
            s.last_now = now;
            s.idle = false;
        }
        if s.max_ts.is_none_or(|m| ts > m) {
            s.max_ts = Some(ts);
        }
        let cand = if hot.single_source {
            watermark_of(ts, bound)
        } else {
            self.combined_watermark()
        };
        if cand > self.wm || hot.processing {
            self.advance(cand.max(self.wm));
        }
        Ok(())
    }

    /// Routes a sample to every operator reading its source.
    fn route_all(&mut self, source: usize, kid: KeyId, ts: i64, values: &[f64], wm: i64) {
        for i in 0..self.routes[source].len() {
            let (op, field) = self.routes[source][i];
            self.route(op, kid, ts, values[field], wm);
        }
    }

    /// Hands one value to operator `op`.
    #[inline(always)]
    fn route(&mut self, op: u16, kid: KeyId, ts: i64, x: f64, wm: i64) {
        match &mut self.ops[op as usize] {
            Op::Window(w) => w.on_sample(kid, ts, x, wm, &mut self.out),
            Op::Process(p) => p.on_sample(kid, ts, x, wm, self.now, &mut self.out),
            Op::Detect(d) => d.on_sample(kid, ts, x, wm, &mut self.out),
        }
    }

    fn new_key(&mut self, key: &str) -> Result<KeyId, Reject> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Reject::BadKey);
        }
        if self.keys.live() >= self.spec.state.max_keys {
            if self.spec.state.on_full == FullPolicy::RejectNew {
                return Err(Reject::KeyBudget);
            }
            let victim = (0..self.keys.names.len() as KeyId)
                .filter(|&k| {
                    self.keys.names[k as usize].is_some() && self.ops.iter().all(|o| o.is_empty(k))
                })
                .min_by_key(|&k| self.keys.last_ts[k as usize]);
            match victim {
                Some(v) => self.evict(v),
                None => return Err(Reject::KeyBudget),
            }
        }
        Ok(self.keys.insert(key))
    }

    fn evict(&mut self, key: KeyId) {
        for op in &mut self.ops {
            op.clear_key(key);
        }
        self.keys.remove(key);
        self.stats.keys_evicted += 1;
    }

    fn combined_watermark(&self) -> i64 {
        let mut wm = i64::MAX;
        let mut any = false;
        for (s, spec) in self.sources.iter().zip(&self.spec.sources) {
            if let (Some(m), false) = (s.max_ts, s.idle) {
                wm = wm.min(watermark_of(m, spec.max_out_of_orderness));
                any = true;
            }
        }
        if any {
            wm
        } else {
            self.wm
        }
    }

    /// Marks sources idle whose last sample is older than their idle
    /// timeout at `now`; says whether any changed.
    fn mark_idle(&mut self, now: i64) -> bool {
        let mut changed = false;
        for (s, spec) in self.sources.iter_mut().zip(&self.spec.sources) {
            if let Some(t) = spec.idle_timeout {
                if !s.idle && s.max_ts.is_some() && now.saturating_sub(s.last_now) > t {
                    s.idle = true;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Moves the driver's clock: marks sources idle after their timeout (so
    /// they stop holding the watermark back) and, in processing-time mode,
    /// advances the watermark to `now`.
    pub fn handle_time(&mut self, now: i64) {
        if self.out.is_empty() {
            self.keys.release_pending();
        }
        if now > self.now {
            self.now = now;
        }
        let changed = self.mark_idle(now);
        let cand = match self.spec.time.mode {
            TimeMode::Processing => watermark_of(now, self.max_bound),
            _ if changed => self.combined_watermark(),
            _ => self.wm,
        };
        if cand > self.wm {
            self.advance(cand);
        } else {
            // Processing-time timers of custom operators.
            for op in &mut self.ops {
                if let Op::Process(p) = op {
                    p.advance(self.wm, now, &mut self.out);
                }
            }
        }
    }

    /// End of a finite input: the watermark goes to the end of time, every
    /// window fires and every buffered sample is processed.
    pub fn handle_end_of_input(&mut self) {
        self.wm = i64::MAX;
        for op in &mut self.ops {
            match op {
                Op::Window(w) => w.flush(&mut self.out),
                Op::Detect(d) => d.advance(i64::MAX, &mut self.out),
                Op::Process(p) => p.flush(self.now, &mut self.out),
            }
        }
    }

    fn advance(&mut self, wm: i64) {
        self.wm = wm;
        for op in &mut self.ops {
            match op {
                Op::Window(w) => {
                    if w.next_timer <= wm || !w.pending.is_empty() {
                        w.advance(wm, &mut self.out)
                    }
                }
                Op::Detect(d) => d.advance(wm, &mut self.out),
                Op::Process(p) => p.advance(wm, self.now, &mut self.out),
            }
        }
        if let Some(ttl) = self.spec.state.ttl {
            if wm >= self.next_sweep {
                self.next_sweep = wm.saturating_add((ttl / 4).max(1));
                let horizon = wm.saturating_sub(ttl);
                for k in 0..self.keys.names.len() as KeyId {
                    if self.keys.names[k as usize].is_some()
                        && self.keys.last_ts[k as usize] < horizon
                        && self.ops.iter().all(|o| o.is_empty(k))
                    {
                        self.evict(k);
                    }
                }
            }
        }
    }

    /// The next output, in emission order.
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether outputs are waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }
}
