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
use crate::expr::{Expr, Value};
use crate::keys::{KeyHint, KeyId, KeyTable};
use crate::output::{Output, ScoreResult};
use crate::process::ProcessOp;
use crate::spec::{FullPolicy, OperatorKind, PipelineSpec, WatermarkMode, WindowKind};
use crate::time::{TimeMode, Watermark};
use crate::window::{wait_or_late, KeyedPending, OpStats, Pending, WindowOp};
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

/// Why a key was evicted. Every eviction is counted in
/// [`EngineStats::evictions`] under its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eviction {
    /// The budget was full and the key had not completed a window of its
    /// own: its open windows went with it.
    Unproven,
    /// The budget was full and `on_full = evict_idle` chose it (least
    /// recently active, no open window).
    Idle,
    /// Its TTL ran out.
    Ttl,
}

impl Eviction {
    /// Every reason, in counter order.
    pub const ALL: [Eviction; 3] = [Eviction::Unproven, Eviction::Idle, Eviction::Ttl];

    /// A stable snake_case name, for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Unproven => "unproven",
            Eviction::Idle => "idle",
            Eviction::Ttl => "ttl",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Engine-wide counters. `accepted + Σ rejected == input` always holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Samples offered to `handle_sample`.
    pub input: u64,
    /// Samples that reached the operators.
    pub accepted: u64,
    /// Rejections by reason, indexed as [`Reject::ALL`].
    pub rejected: [u64; 7],
    /// Keys evicted, all reasons.
    pub keys_evicted: u64,
    /// Evictions by reason, indexed as [`Eviction::ALL`].
    pub evictions: [u64; 3],
    /// Accepted samples dropped by their source's filter (they advanced the
    /// watermark but reached no operator). Not kept in snapshots.
    pub filtered: u64,
    /// Accepted samples with a computed field that was not a finite number
    /// (see [`crate::spec::Computed`]), dropped, or with a `NULL` (NaN)
    /// [`crate::spec::SourceSpec::nullable`] field, which went on to the
    /// operators as `NULL`. Not kept in snapshots.
    pub null_computed: u64,
}

impl EngineStats {
    /// Evictions of one reason.
    pub fn evicted(&self, e: Eviction) -> u64 {
        self.evictions[e.index()]
    }

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

/// One key's own watermark on a source with per-key watermarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyWm {
    /// Newest timestamp of the key (`i64::MIN`: none yet).
    pub(crate) max_ts: i64,
    /// Its watermark: monotonic, at least `max_ts − bound − 1`, raised to
    /// the engine's watermark while the key is idle.
    pub(crate) wm: i64,
    /// The driver's clock at its last sample (`i64::MIN`: none yet).
    pub(crate) last_now: i64,
}

impl KeyWm {
    pub(crate) const NEW: KeyWm = KeyWm {
        max_ts: i64::MIN,
        wm: i64::MIN,
        last_now: i64::MIN,
    };
}

pub(crate) struct DetectOp {
    pub(crate) op: u16,
    pub(crate) arrival: bool,
    pub(crate) spec: DetectorSpec,
    pub(crate) states: Vec<Option<DetectorState>>,
    pub(crate) pending: BinaryHeap<Reverse<Pending>>,
    pub(crate) per_key: bool,
    pub(crate) kpending: KeyedPending,
    pub(crate) stats: OpStats,
    /// A multivariate detector's fields (indexes into the source's
    /// values); empty for a single-field one. Such an operator reads in
    /// arrival order (validated).
    pub(crate) fields: Vec<usize>,
}

impl DetectOp {
    fn on_sample(
        &mut self,
        key: KeyId,
        ts: i64,
        x: f64,
        values: &[f64],
        wm: i64,
        out: &mut VecDeque<Output>,
    ) {
        self.stats.routed += 1;
        if !self.fields.is_empty() {
            self.stats.on_time += 1;
            self.score_fields(key, ts, values, out);
        } else if self.arrival {
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
            let p = Pending {
                ts,
                key,
                bits: x.to_bits(),
            };
            wait_or_late(
                self.per_key,
                &mut self.stats,
                &mut self.pending,
                &mut self.kpending,
                self.op,
                p,
                out,
                wm,
            );
        }
    }

    fn advance_key(&mut self, key: KeyId, wm: i64, out: &mut VecDeque<Output>) {
        for p in self.kpending.take_upto(key, wm) {
            self.score(p, out);
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
                contributions: Default::default(),
            }));
        }
    }

    /// Scores one sample of a multivariate detector, all its fields at
    /// once. The engine admits only samples with every field finite, so a
    /// sample the detector refuses (a magnitude beyond `MAX_ABS`) is the
    /// only kind skipped: routed but not fired.
    #[cold]
    fn score_fields(&mut self, key: KeyId, ts: i64, values: &[f64], out: &mut VecDeque<Output>) {
        let mut xs = [0.0; crate::detect::MAX_FIELDS];
        let n = self.fields.len().min(xs.len());
        for (x, &f) in xs.iter_mut().zip(&self.fields) {
            *x = values.get(f).copied().unwrap_or(f64::NAN);
        }
        let k = key as usize;
        if k >= self.states.len() {
            self.states.resize_with(k + 1, || None);
        }
        let st = self.states[k].get_or_insert_with(|| self.spec.new_state());
        if let Some((verdict, contributions)) = st.update_fields(ts, &xs[..n]) {
            self.stats.fired += 1;
            if verdict.flag {
                self.stats.flagged += 1;
            }
            out.push_back(Output::Score(ScoreResult {
                op: self.op,
                key,
                ts,
                value: xs[0],
                verdict,
                contributions,
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
            Op::Detect(d) => !d.pending.iter().any(|p| p.0.key == key) && !d.kpending.has_key(key),
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
                if d.pending.iter().any(|p| p.0.key == key) {
                    d.pending.retain(|p| p.0.key != key);
                }
                d.kpending.remove_key(key);
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
    /// Several sources, some with an idle timeout: check idleness as `now` moves.
    idle_sources: bool,
    /// Some source has per-key watermarks: scan for idle keys as `now` moves.
    any_per_key: bool,
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
    /// Per-key watermarks.
    per_key: bool,
    /// A key of a per-key source is idle after this much processing time.
    key_idle: i64,
    /// The source has a filter or computed fields ([`Engine::staged`]).
    staged: bool,
    /// Some given field is nullable ([`crate::spec::SourceSpec::nullable`]).
    nullable: bool,
}

/// A source's stateless stages, built from its filter and computed fields,
/// with buffers reused from sample to sample (no allocation per sample).
struct Stages {
    filter: Option<Expr>,
    compute: Vec<Expr>,
    /// The row the expressions read: fields, then computed fields.
    row: Vec<Value>,
    /// The values the operators read: fields, then computed fields.
    vals: Vec<f64>,
    /// Per computed field: whether it is nullable.
    nullable: Vec<bool>,
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
    /// Per-key watermarks by source, then key id (empty for per-source).
    pub(crate) kwm: Vec<Vec<KeyWm>>,
    /// The `now` at which idle keys are next looked for (`i64::MAX`: none).
    pub(crate) idle_due: i64,
    /// The `now` of the last look, and whether it found idle keys.
    pub(crate) last_scan: i64,
    pub(crate) idle_keys: bool,
    /// Shortest time between two looks: a quarter of the shortest key idle
    /// timeout.
    scan_gap: i64,
    /// Estimated bytes of a key's state, its name aside.
    key_cost: usize,
    /// A key is proven once its samples span this many ticks.
    probation_span: i64,
    /// Per source: its filter and computed fields, if any.
    stages: Vec<Option<Stages>>,
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
        // Per-key watermarks mean nothing in processing time (every sample
        // is stamped by the one clock).
        let per_key: Vec<bool> = self
            .sources
            .iter()
            .map(|s| s.watermark == WatermarkMode::PerKey && self.time.mode != TimeMode::Processing)
            .collect();
        let mut routes = alloc::vec![Vec::new(); self.sources.len()];
        let mut ops = Vec::with_capacity(self.operators.len());
        for (i, op) in self.operators.iter().enumerate() {
            let si = self
                .sources
                .iter()
                .position(|s| s.name == op.source)
                .expect("validated");
            let fi = self.sources[si].field_index(&op.field).expect("validated");
            routes[si].push((i as u16, fi));
            ops.push(match &op.kind {
                OperatorKind::Window(w) => Op::Window(WindowOp::new(i as u16, w, per_key[si])),
                OperatorKind::Detect(d) => Op::Detect(DetectOp {
                    op: i as u16,
                    arrival: d.order == crate::spec::SampleOrder::Arrival,
                    spec: d.detector,
                    states: Vec::new(),
                    pending: BinaryHeap::new(),
                    per_key: per_key[si],
                    kpending: KeyedPending::default(),
                    stats: OpStats::default(),
                    fields: d
                        .fields
                        .iter()
                        .map(|f| self.sources[si].field_index(f).expect("validated"))
                        .collect(),
                }),
                OperatorKind::Process(p) => Op::Process(ProcessOp {
                    op: i as u16,
                    f: (p.factory.0)(),
                    timers: Default::default(),
                    per_key: per_key[si],
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
            idle_sources: self.sources.len() > 1
                && self.sources.iter().any(|s| s.idle_timeout.is_some()),
            any_per_key: per_key.iter().any(|p| *p),
        };
        let default_idle = self.time.unit.from_millis(crate::spec::DEFAULT_KEY_IDLE_MS);
        let src_rt: Vec<SrcRt> = self
            .sources
            .iter()
            .zip(&per_key)
            .map(|(s, &per_key)| SrcRt {
                nfields: s.fields.len(),
                bound: s.max_out_of_orderness,
                max_ahead: s.max_ahead,
                tracks_idle: s.idle_timeout.is_some(),
                per_key,
                key_idle: s.idle_timeout.unwrap_or(default_idle),
                staged: s.has_stages(),
                nullable: s.nullable.iter().any(|&f| f < s.fields.len()),
            })
            .collect();
        let stages = self
            .sources
            .iter()
            .map(|s| {
                s.has_stages().then(|| {
                    let n = s.fields.len() + s.compute.len();
                    Stages {
                        filter: s.filter.clone(),
                        compute: s.compute.iter().map(|c| c.expr.clone()).collect(),
                        row: alloc::vec![Value::Null; n],
                        vals: alloc::vec![0.0; n],
                        nullable: (0..s.compute.len())
                            .map(|j| s.nullable.contains(&(s.fields.len() + j)))
                            .collect(),
                    }
                })
            })
            .collect();
        let key_cost = key_cost(&self, &per_key);
        let scan_gap = src_rt
            .iter()
            .filter(|s| s.per_key)
            .map(|s| (s.key_idle / 4).max(1))
            .min()
            .unwrap_or(i64::MAX);
        let probation_span = probation_span(&self);
        let max_bound = self
            .sources
            .iter()
            .map(|s| s.max_out_of_orderness)
            .max()
            .unwrap_or(0);
        Ok(Engine {
            max_bound,
            hot,
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
            kwm: alloc::vec![Vec::new(); src_rt.len()],
            idle_due: i64::MAX,
            last_scan: i64::MIN,
            idle_keys: false,
            scan_gap,
            key_cost,
            probation_span,
            src_rt,
            stages,
        })
    }
}

/// Estimated bytes of one key's state, its name aside: the key table's
/// entries, per-key watermarks, and each operator's state for the key.
fn key_cost(spec: &PipelineSpec, per_key: &[bool]) -> usize {
    use core::mem::size_of;
    // The map slot (name box, id, control byte), the name's slot, last and
    // first timestamps, admission, proven flag, and a probation entry. (Not
    // the key's 8-byte hint stamp, added later: charging it would change
    // which keys a budget admits, and a journal written before it would
    // replay differently.)
    let mut c = size_of::<(alloc::boxed::Box<str>, KeyId)>()
        + 1
        + size_of::<Option<alloc::boxed::Box<str>>>()
        + 3 * 8
        + 1
        + 2 * size_of::<(u64, KeyId)>();
    c += per_key.iter().filter(|p| **p).count() * size_of::<KeyWm>();
    for op in &spec.operators {
        let bound = spec
            .sources
            .iter()
            .find(|s| s.name == op.source)
            .map_or(0, |s| s.max_out_of_orderness);
        c += match &op.kind {
            OperatorKind::Window(w) => WindowOp::key_cost(w, bound),
            OperatorKind::Detect(d) => {
                size_of::<Option<DetectorState>>() + crate::detect::state_bytes(&d.detector)
                    - size_of::<DetectorState>()
            }
            // A custom operator keeps its own state: its estimate.
            OperatorKind::Process(p) => (p.factory.0)().key_bytes(),
        };
    }
    c
}

/// How far a key's samples must span before it counts as having completed
/// a window: the shortest time window (size, slide or gap) plus its
/// source's bound; one tick without time windows.
fn probation_span(spec: &PipelineSpec) -> i64 {
    spec.operators
        .iter()
        .filter_map(|op| {
            let OperatorKind::Window(w) = &op.kind else {
                return None;
            };
            let len = match w.kind {
                WindowKind::Tumbling { size } => size,
                WindowKind::Sliding { slide, .. } => slide,
                WindowKind::Cumulate { step, .. } => step,
                WindowKind::Session { gap } => gap,
                WindowKind::Count { .. } => return None,
            };
            let bound = spec
                .sources
                .iter()
                .find(|s| s.name == op.source)
                .map_or(0, |s| s.max_out_of_orderness);
            Some(len.saturating_add(bound))
        })
        .min()
        .unwrap_or(1)
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

    /// Counts a sample that a filter outside the engine dropped (a SQL
    /// `WHERE` that reads the key or a text column, applied before the
    /// engine) as input and [`EngineStats::filtered`]. Nothing else
    /// changes: the sample does not advance the watermark.
    pub fn count_filtered(&mut self) {
        self.stats.input += 1;
        self.stats.filtered += 1;
    }

    /// Counters of operator `op` (index in the pipeline's `operators`).
    pub fn op_stats(&self, op: usize) -> Option<OpStats> {
        self.ops.get(op).map(|o| *o.stats())
    }

    /// Live keys.
    pub fn key_count(&self) -> usize {
        self.keys.live()
    }

    /// Whether source `i` has per-key watermarks.
    pub(crate) fn source_per_key(&self, i: usize) -> bool {
        self.src_rt.get(i).is_some_and(|s| s.per_key)
    }

    /// Live keys that have not yet completed a window of their own (the
    /// first to be evicted when the budget is full).
    pub fn unproven_keys(&self) -> usize {
        self.keys.probation.len()
    }

    /// The latest driver clock (`now`) it was handed, `i64::MIN` before
    /// any; a snapshot keeps it. A driver whose clock went back across a
    /// restart resumes from it (processing time never goes back).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The estimated bytes of one key's state, its name aside (see
    /// [`crate::spec::StateSpec`]).
    pub fn key_cost(&self) -> usize {
        self.key_cost
    }

    /// The estimated bytes of all keyed state: every live key at
    /// [`Engine::key_cost`] plus its name, and what custom operators hold
    /// beyond that ([`KeyedProcess::state_bytes`](crate::process::KeyedProcess::state_bytes):
    /// the rows they keep, which they hold within the budget through
    /// [`Context::state_room`](crate::process::Context::state_room)).
    /// Never above `StateSpec::max_bytes` except by one key's growth into
    /// windows it did not hold at admission.
    pub fn state_bytes(&self) -> usize {
        let held: usize = self
            .ops
            .iter()
            .map(|o| match o {
                Op::Process(p) => p.f.state_bytes(),
                _ => 0,
            })
            .sum();
        (self.keys.live() * self.key_cost + self.keys.name_bytes).saturating_add(held)
    }

    /// The `now` at which [`Engine::handle_time`] next has work, if any: a
    /// source or a key going idle, a custom operator's processing-time
    /// timer and, in processing-time mode, whatever the watermark that
    /// `now` brings passes (a window's end or purge, a sample waiting in a
    /// count window or an in-order detector, an event-time timer, the TTL
    /// sweep). A driver that journals clock ticks needs one only then; a
    /// `handle_time` before it changes nothing but the clock.
    pub fn poll_timeout(&self) -> Option<i64> {
        let mut t = if self.hot.any_per_key {
            self.idle_due
        } else {
            i64::MAX
        };
        for (s, spec) in self.sources.iter().zip(&self.spec.sources) {
            if let (Some(to), false, Some(_)) = (spec.idle_timeout, s.idle, s.max_ts) {
                t = t.min(s.last_now.saturating_add(to).saturating_add(1));
            }
        }
        // The earliest event time the watermark must reach for something
        // to fire (only time moves it under processing time).
        let mut wm_due = i64::MAX;
        let ahead = |at: i64| if at > self.wm { at } else { i64::MAX };
        for op in &self.ops {
            match op {
                Op::Window(w) => {
                    wm_due = wm_due.min(ahead(w.next_timer));
                    if let Some(Reverse(p)) = w.pending.peek() {
                        wm_due = wm_due.min(ahead(p.ts));
                    }
                }
                Op::Detect(d) => {
                    if let Some(Reverse(p)) = d.pending.peek() {
                        wm_due = wm_due.min(ahead(p.ts));
                    }
                }
                Op::Process(p) => {
                    if let Some(&(at, _)) = p.timers.processing.first() {
                        t = t.min(at);
                    }
                    if !p.per_key {
                        if let Some(&(at, _)) = p.timers.event.first() {
                            wm_due = wm_due.min(ahead(at));
                        }
                    }
                }
            }
        }
        if self.hot.processing {
            if self.spec.state.ttl.is_some() && self.keys.live() > 0 {
                wm_due = wm_due.min(ahead(self.next_sweep));
            }
            if wm_due != i64::MAX {
                // The first `now` whose watermark (`watermark_of(now,
                // max_bound)`) reaches `wm_due`.
                t = t.min(wm_due.saturating_add(self.max_bound).saturating_add(1));
            }
        }
        (t != i64::MAX).then_some(t)
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
        self.handle(now, source, key, None, ts, values)
    }

    /// [`Engine::handle_sample`] with a [`KeyHint`] the caller keeps for
    /// `key`: when the key is still live under the id the hint remembers,
    /// the engine takes that id without looking the name up (a lookup
    /// misses the cache up to three times per sample when keys are many);
    /// otherwise it looks the name up and fills the hint. Same effects and
    /// result as [`Engine::handle_sample`]. The hint must have been filled
    /// by this engine for this `key` (or be empty).
    ///
    /// # Errors
    /// As [`Engine::handle_sample`].
    #[inline(always)]
    pub fn handle_sample_hinted(
        &mut self,
        now: i64,
        source: usize,
        key: &str,
        hint: &mut KeyHint,
        ts: i64,
        values: &[f64],
    ) -> Result<(), Reject> {
        self.handle(now, source, key, Some(hint), ts, values)
    }

    /// [`Engine::admit`], counted in the engine's statistics.
    #[inline(always)]
    fn handle(
        &mut self,
        now: i64,
        source: usize,
        key: &str,
        hint: Option<&mut KeyHint>,
        ts: i64,
        values: &[f64],
    ) -> Result<(), Reject> {
        self.stats.input += 1;
        match self.admit(now, source, key, hint, ts, values) {
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
        hint: Option<&mut KeyHint>,
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
        let mut nulls = false;
        if values.iter().any(|v| !v.is_finite()) {
            if !src.nullable || !self.null_inputs(source, values) {
                return refuse(Reject::NonFinite);
            }
            nulls = true;
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
        let per_key = src.per_key;
        let staged = src.staged;
        let kid = match hint {
            Some(h) => match self.keys.hinted(h) {
                Some(k) => {
                    debug_assert_eq!(self.keys.name(k), Some(key), "a hint of another key");
                    k
                }
                None => {
                    let k = match self.keys.get(key) {
                        Some(k) => k,
                        None => self.new_key(key, ts)?,
                    };
                    *h = self.keys.hint(k);
                    k
                }
            },
            None => match self.keys.get(key) {
                Some(k) => k,
                None => self.new_key(key, ts)?,
            },
        };
        // Accepted from here on: only now may the sample change state.
        if nulls {
            self.stats.null_computed += 1;
        }
        if now > self.now {
            self.now = now;
            if hot.idle_sources {
                self.mark_idle(now);
            }
        }
        let k = kid as usize;
        if ts > self.keys.last_ts[k] {
            self.keys.last_ts[k] = ts;
            if !self.keys.proven[k] {
                self.keys.try_prove(kid, self.probation_span);
            }
        }
        let wm = self.wm;
        let routes = &self.routes[source];
        if staged {
            self.staged(now, source, kid, ts, values, per_key, wm);
        } else if per_key {
            self.route_per_key(now, source, kid, ts, Some(values));
        } else if let [(op, field)] = routes[..] {
            // One operator reads this source: no loop.
            self.route(op, kid, ts, values, field, wm);
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
        if hot.any_per_key && now >= self.idle_due {
            self.scan_idle_keys(now);
        }
        Ok(())
    }

    /// Whether every value of `values` that is not finite is a NaN in a
    /// nullable field of `source` (SQL's `NULL` aggregate input).
    #[cold]
    #[inline(never)]
    fn null_inputs(&self, source: usize, values: &[f64]) -> bool {
        let nullable = &self.spec.sources[source].nullable;
        values
            .iter()
            .enumerate()
            .all(|(i, v)| v.is_finite() || (v.is_nan() && nullable.contains(&i)))
    }

    /// Runs an accepted sample through its source's filter and computed
    /// fields, then routes what passes. A dropped sample has still advanced
    /// the watermark (the caller does that in any case).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn staged(
        &mut self,
        now: i64,
        source: usize,
        kid: KeyId,
        ts: i64,
        values: &[f64],
        per_key: bool,
        wm: i64,
    ) {
        let Some(mut st) = self.stages[source].take() else {
            return;
        };
        let n = values.len();
        for (r, v) in st.row.iter_mut().zip(values) {
            // A NaN is a nullable field's NULL (admit refuses any other).
            *r = if v.is_nan() {
                Value::Null
            } else {
                Value::Num(*v)
            };
        }
        let keep = st.filter.as_ref().is_none_or(|f| f.test(&st.row[..n]));
        let mut ok = keep;
        let mut nulls = false;
        if keep {
            st.vals[..n].copy_from_slice(values);
            for j in 0..st.compute.len() {
                match st.compute[j].eval(&st.row[..n + j]) {
                    Value::Num(x) if x.is_finite() => {
                        st.row[n + j] = Value::Num(x);
                        st.vals[n + j] = x;
                    }
                    // SQL's NULL aggregate input: on to the operators.
                    _ if st.nullable[j] => {
                        st.row[n + j] = Value::Null;
                        st.vals[n + j] = f64::NAN;
                        nulls = true;
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        if !keep {
            self.stats.filtered += 1;
        } else if (!ok || nulls) && !values.iter().any(|v| v.is_nan()) {
            // (A sample with a NULL given field was counted in admit.)
            self.stats.null_computed += 1;
        }
        if per_key {
            // A dropped sample still advances its key's watermark.
            self.route_per_key(now, source, kid, ts, ok.then_some(&st.vals[..]));
        } else if ok {
            self.route_all(source, kid, ts, &st.vals, wm);
        }
        self.stages[source] = Some(st);
    }

    /// Routes a sample of a per-key source: against its key's own
    /// watermark, which it may then advance.
    #[inline(never)]
    /// `values: None`: a sample its source's filter dropped, which only
    /// advances the key's watermark.
    fn route_per_key(
        &mut self,
        now: i64,
        source: usize,
        kid: KeyId,
        ts: i64,
        values: Option<&[f64]>,
    ) {
        let SrcRt {
            bound, key_idle, ..
        } = self.src_rt[source];
        let k = kid as usize;
        if k >= self.kwm[source].len() {
            self.kwm[source].resize(k + 1, KeyWm::NEW);
        }
        let mut st = self.kwm[source][k];
        // Back from idleness: first take what the engine's watermark passed
        // meanwhile, as a scan would have.
        if st.last_now != i64::MIN && now.saturating_sub(st.last_now) > key_idle && self.wm > st.wm
        {
            st.wm = self.wm;
            self.kwm[source][k] = st;
            self.advance_key(source, kid, st.wm);
        }
        if let Some(values) = values {
            for i in 0..self.routes[source].len() {
                let (op, field) = self.routes[source][i];
                self.route(op, kid, ts, values, field, st.wm);
            }
        }
        st.max_ts = st.max_ts.max(ts);
        st.last_now = st.last_now.max(now);
        let w = watermark_of(st.max_ts, bound).max(st.wm);
        let moved = w > st.wm;
        st.wm = w;
        self.kwm[source][k] = st;
        if moved {
            self.advance_key(source, kid, w);
        }
        self.idle_due = self
            .idle_due
            .min(now.saturating_add(key_idle).saturating_add(1));
    }

    /// Key `kid` of per-key source `source` reached watermark `wm`.
    fn advance_key(&mut self, source: usize, kid: KeyId, wm: i64) {
        for i in 0..self.routes[source].len() {
            let (op, _) = self.routes[source][i];
            match &mut self.ops[op as usize] {
                Op::Window(w) => w.advance_key(kid, wm, &mut self.out),
                Op::Detect(d) => d.advance_key(kid, wm, &mut self.out),
                Op::Process(p) => p.advance_key(kid, wm, self.now, &mut self.out),
            }
        }
    }

    /// Raises the watermark of every key idle at `now` to the engine's,
    /// firing what that passes, and schedules the next scan: when the next
    /// active key would turn idle, at most every quarter idle timeout.
    #[cold]
    #[inline(never)]
    fn scan_idle_keys(&mut self, now: i64) {
        let wm = self.wm;
        let mut next = i64::MAX;
        let mut any_idle = false;
        for s in 0..self.kwm.len() {
            if !self.src_rt[s].per_key {
                continue;
            }
            let idle = self.src_rt[s].key_idle;
            for k in 0..self.kwm[s].len() {
                let st = self.kwm[s][k];
                if st.last_now == i64::MIN || self.keys.names[k].is_none() {
                    continue;
                }
                if now.saturating_sub(st.last_now) > idle {
                    any_idle = true;
                    if wm > st.wm {
                        self.kwm[s][k].wm = wm;
                        self.advance_key(s, k as KeyId, wm);
                    }
                } else {
                    next = next.min(st.last_now.saturating_add(idle).saturating_add(1));
                }
            }
        }
        self.last_scan = now;
        self.idle_keys = any_idle;
        self.idle_due = if next == i64::MAX {
            i64::MAX
        } else {
            next.max(now.saturating_add(self.scan_gap))
        };
    }

    /// Routes a sample to every operator reading its source.
    fn route_all(&mut self, source: usize, kid: KeyId, ts: i64, values: &[f64], wm: i64) {
        for i in 0..self.routes[source].len() {
            let (op, field) = self.routes[source][i];
            self.route(op, kid, ts, values, field, wm);
        }
    }

    /// Hands value `field` of `values` to operator `op` (a multivariate
    /// detector reads several of them).
    #[inline(always)]
    fn route(&mut self, op: u16, kid: KeyId, ts: i64, values: &[f64], field: usize, wm: i64) {
        let x = values[field];
        match &mut self.ops[op as usize] {
            // A NaN (a nullable field's NULL) opens the window, unaggregated.
            Op::Window(w) => w.on_sample(kid, ts, x, wm, &mut self.out),
            Op::Process(_) | Op::Detect(_) if x.is_nan() => {}
            Op::Process(_) => self.route_process(op, kid, ts, (x, values), wm),
            Op::Detect(d) => d.on_sample(kid, ts, x, values, wm, &mut self.out),
        }
    }

    /// Hands a sample to custom operator `op`, with the state budget's room.
    #[inline(never)]
    fn route_process(&mut self, op: u16, kid: KeyId, ts: i64, xv: (f64, &[f64]), wm: i64) {
        let room = self.spec.state.max_bytes.saturating_sub(self.state_bytes());
        if let Op::Process(p) = &mut self.ops[op as usize] {
            p.on_sample(kid, ts, xv, (wm, self.now), room, &mut self.out);
        }
    }

    /// Whether a key named `key` fits the budget with `live` keys of
    /// `bytes` estimated bytes.
    fn fits(&self, key: &str, live: usize, bytes: usize) -> bool {
        live < self.spec.state.max_keys
            && bytes.saturating_add(self.key_cost + key.len()) <= self.spec.state.max_bytes
    }

    fn new_key(&mut self, key: &str, ts: i64) -> Result<KeyId, Reject> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Reject::BadKey);
        }
        if !self.fits(key, self.keys.live(), self.state_bytes()) {
            self.make_room(key)?;
        }
        let id = self.keys.insert(key, ts, self.stats.input);
        for t in &mut self.kwm {
            if let Some(st) = t.get_mut(id as usize) {
                *st = KeyWm::NEW;
            }
        }
        Ok(id)
    }

    /// Evicts unproven keys, oldest admission first, then (`evict_idle`)
    /// idle ones, until `key` fits.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, key: &str) -> Result<(), Reject> {
        if self.spec.state.on_full == FullPolicy::RejectNew {
            // Refuse without evicting when even the unproven keys' room
            // would not do: a refused sample changes nothing.
            let n = self.keys.probation.len();
            let room = n * self.key_cost + self.keys.unproven_name_bytes();
            if !self.fits(key, self.keys.live() - n, self.state_bytes() - room) {
                return Err(Reject::KeyBudget);
            }
        }
        while !self.fits(key, self.keys.live(), self.state_bytes()) {
            if let Some(v) = self.keys.oldest_unproven() {
                self.evict(v, Eviction::Unproven);
                continue;
            }
            if self.spec.state.on_full == FullPolicy::RejectNew {
                return Err(Reject::KeyBudget);
            }
            let victim = (0..self.keys.names.len() as KeyId)
                .filter(|&k| {
                    self.keys.names[k as usize].is_some() && self.ops.iter().all(|o| o.is_empty(k))
                })
                .min_by_key(|&k| self.keys.last_ts[k as usize]);
            match victim {
                Some(v) => self.evict(v, Eviction::Idle),
                None => return Err(Reject::KeyBudget),
            }
        }
        Ok(())
    }

    fn evict(&mut self, key: KeyId, why: Eviction) {
        for op in &mut self.ops {
            op.clear_key(key);
        }
        self.keys.remove(key);
        self.stats.keys_evicted += 1;
        self.stats.evictions[why.index()] += 1;
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
                    let wm = if p.per_key { i64::MIN } else { self.wm };
                    p.advance(wm, now, &mut self.out);
                }
            }
        }
        if self.hot.any_per_key && now >= self.idle_due {
            self.scan_idle_keys(now);
        }
    }

    /// End of a finite input: the watermark goes to the end of time, every
    /// window fires and every buffered sample is processed.
    pub fn handle_end_of_input(&mut self) {
        self.wm = i64::MAX;
        for op in &mut self.ops {
            match op {
                Op::Window(w) => w.flush(&mut self.out),
                Op::Detect(d) => {
                    for p in d.kpending.take_all() {
                        d.score(p, &mut self.out);
                    }
                    d.advance(i64::MAX, &mut self.out)
                }
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
                Op::Process(p) => {
                    // Per-key: event timers wait for their key's watermark.
                    let wm = if p.per_key { i64::MIN } else { wm };
                    p.advance(wm, self.now, &mut self.out)
                }
            }
        }
        if self.idle_keys {
            // Idle keys follow this watermark: look at them again, at most
            // every `scan_gap`.
            self.idle_due = self
                .idle_due
                .min(self.last_scan.saturating_add(self.scan_gap));
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
                        self.evict(k, Eviction::Ttl);
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
