//! The pipeline description and the builder API that produces it.
//!
//! A [`PipelineSpec`] is plain data: sources, operators (each with a stable
//! `id`, Flink's uid) and keyed-state limits. The agent's TOML format maps
//! onto it one to one; Rust code builds it with [`PipelineBuilder`].
//! [`PipelineSpec::build`] validates it and returns a ready [`Engine`].
//!
//! [`Engine`]: crate::engine::Engine

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::agg::AggKind;
use crate::detect::DetectorSpec;
use crate::expr::Expr;
use crate::time::{TimeMode, TimeUnit};

/// Largest number of aggregates one window operator may emit.
pub const MAX_AGGS: usize = 16;
/// Largest number of windows one sample may fall into (sliding size / slide).
pub const MAX_WINDOWS_PER_SAMPLE: i64 = 64;

/// A whole pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    /// A name for logs and snapshots.
    pub name: String,
    /// Time mode, unit and plausible range.
    pub time: TimeSpec,
    /// Inputs, referenced by index in `Engine::handle_sample`.
    pub sources: Vec<SourceSpec>,
    /// Keyed operators; each reads one source.
    pub operators: Vec<OperatorSpec>,
    /// Limits on keyed state.
    pub state: StateSpec,
}

/// How samples are stamped and which timestamps are plausible.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSpec {
    /// Event (default), ingestion or processing time.
    pub mode: TimeMode,
    /// Milliseconds (default) or microseconds.
    pub unit: TimeUnit,
    /// Samples stamped before this are rejected (`TimestampOutOfRange`).
    /// Default: 2000-01-01.
    pub min_ts: i64,
    /// Samples stamped after this are rejected. Default: 2200-01-01.
    pub max_ts: i64,
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec::new(TimeUnit::Millis)
    }
}

impl TimeSpec {
    /// Event time in `unit` with the default plausible range.
    pub fn new(unit: TimeUnit) -> Self {
        TimeSpec {
            mode: TimeMode::Event,
            unit,
            min_ts: unit.from_millis(946_684_800_000),
            max_ts: unit.from_millis(7_258_118_400_000),
        }
    }
}

/// One input stream (an MQTT topic filter, a CSV file, a bus).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSpec {
    /// Unique name.
    pub name: String,
    /// Names of the numeric fields every sample of this source carries, in order.
    pub fields: Vec<String>,
    /// Bounded out-of-orderness (ticks): a sample up to this far behind the
    /// source's newest timestamp is on time; the source's watermark is
    /// `newest − bound − 1` (Flink's convention).
    pub max_out_of_orderness: i64,
    /// After this much processing time without a sample the source stops
    /// holding the watermark back (ticks). `None`: never idle.
    pub idle_timeout: Option<i64>,
    /// Samples stamped more than this ahead of the gateway clock (`now`) are
    /// rejected (`TooFarAhead`) instead of dragging the watermark forward.
    /// `None`: no guard (the builder's default; the pipeline file defaults
    /// to five minutes).
    pub max_ahead: Option<i64>,
    /// Which watermark decides when this source's windows fire.
    pub watermark: WatermarkMode,
    /// Stateless filter: a sample is kept only when this condition is
    /// `TRUE` over its fields ([`Expr::Col`]`(i)` is `fields[i]`). It runs
    /// after the sample was accepted, so a dropped sample still advances the
    /// source's watermark (as Flink's watermarks are generated at the
    /// source, before a filter); drops are counted in
    /// [`crate::engine::EngineStats::filtered`].
    pub filter: Option<Expr>,
    /// Stateless map: computed fields appended to `fields`, in order, after
    /// the filter. Computed field `j` may read the source's fields and the
    /// computed fields before it (`Col(fields.len() + i)`, `i < j`).
    /// Operators read a computed field by name like any other.
    pub compute: Vec<Computed>,
    /// Fields (by index over `fields`, then the computed fields) that may be
    /// `NULL` per operator, as SQL's aggregate inputs are: a sample whose
    /// nullable field is NaN (given, or a computed value that is not a
    /// finite number) still reaches every operator; a window operator reading
    /// that field opens or extends its window without aggregating the value
    /// (`count` leaves it out; `sum`, `min`, … of only `NULL`s are NaN), other
    /// operators skip it. Counted in
    /// [`crate::engine::EngineStats::null_computed`]. An infinite value is
    /// still refused (a given field) or drops the sample (a computed one).
    /// Empty by default.
    pub nullable: Vec<usize>,
}

/// A computed field of a source: `name = expr`.
///
/// A sample whose computed value is not a finite number (`NULL`, a boolean,
/// a string, an overflow) is dropped for every operator of the source and
/// counted in [`crate::engine::EngineStats::null_computed`], unless the
/// field is [`SourceSpec::nullable`].
#[derive(Clone, Debug, PartialEq)]
pub struct Computed {
    /// The field's name: distinct from the source's fields.
    pub name: String,
    /// Its expression over the fields (and the computed fields before it).
    pub expr: Expr,
}

/// Which watermark decides when a key's windows fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WatermarkMode {
    /// One watermark for the source: its newest timestamp on any key minus
    /// the bound (Flink's bounded out-of-orderness per partition). One
    /// device with a fast clock drags every key's watermark forward and one
    /// with a slow clock sees its samples dropped as late. The builder's
    /// default, and W1's rule.
    #[default]
    PerSource,
    /// Each key has its own bounded-out-of-orderness watermark (its own
    /// newest timestamp minus the bound), which decides when that key's
    /// windows fire and which of its samples are late; a key silent for the
    /// source's idle timeout (default [`DEFAULT_KEY_IDLE_MS`]) follows the
    /// engine's watermark until it sends again. The pipeline file's default.
    PerKey,
}

/// Idle timeout of a key under [`WatermarkMode::PerKey`] when its source sets
/// none, in milliseconds: after this much processing time without a sample
/// the key's windows fire as the engine's watermark passes them.
pub const DEFAULT_KEY_IDLE_MS: i64 = 60_000;

impl SourceSpec {
    /// A source with the given fields, no disorder allowed, never idle.
    pub fn new<I, S>(name: &str, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SourceSpec {
            name: name.to_string(),
            fields: fields.into_iter().map(Into::into).collect(),
            max_out_of_orderness: 0,
            idle_timeout: None,
            max_ahead: None,
            watermark: WatermarkMode::PerSource,
            filter: None,
            compute: Vec::new(),
            nullable: Vec::new(),
        }
    }

    /// Sets the filter (see [`SourceSpec::filter`]).
    pub fn filter(mut self, cond: Expr) -> Self {
        self.filter = Some(cond);
        self
    }

    /// Appends a computed field (see [`SourceSpec::compute`]).
    pub fn compute(mut self, name: &str, expr: Expr) -> Self {
        self.compute.push(Computed {
            name: name.to_string(),
            expr,
        });
        self
    }

    /// Whether the source has a filter or computed fields.
    pub fn has_stages(&self) -> bool {
        self.filter.is_some() || !self.compute.is_empty()
    }

    /// Position of a field, computed fields following the source's own.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f == name).or_else(|| {
            self.compute
                .iter()
                .position(|c| c.name == name)
                .map(|j| self.fields.len() + j)
        })
    }

    /// Sets the watermark mode.
    pub fn watermark(mut self, mode: WatermarkMode) -> Self {
        self.watermark = mode;
        self
    }

    /// Sets the out-of-orderness bound (ticks).
    pub fn out_of_orderness(mut self, ticks: i64) -> Self {
        self.max_out_of_orderness = ticks;
        self
    }

    /// Sets the idle timeout (ticks of processing time).
    pub fn idle_timeout(mut self, ticks: i64) -> Self {
        self.idle_timeout = Some(ticks);
        self
    }

    /// Sets the future guard (ticks ahead of `now`).
    pub fn max_ahead(mut self, ticks: i64) -> Self {
        self.max_ahead = Some(ticks);
        self
    }
}

/// One keyed operator.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorSpec {
    /// Stable id: state is matched by it across pipeline updates.
    pub id: String,
    /// The source it reads.
    pub source: String,
    /// The field of that source it reads.
    pub field: String,
    /// What it does.
    pub kind: OperatorKind,
}

/// The operator kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorKind {
    /// Window → aggregate (→ detect on a window aggregate).
    Window(WindowSpec),
    /// Per-sample anomaly scoring of the raw field.
    Detect(DetectSpec),
    /// A custom operator with timers ([`crate::process`]).
    Process(ProcessSpec),
}

/// A custom operator: its state type and how to make one.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSpec {
    /// Must equal what the instances' `state_type()` return.
    pub state_type: String,
    /// Makes instances.
    pub factory: crate::process::ProcessFactory,
    /// Names of the values of the window rows it emits
    /// ([`Context::emit_window`](crate::process::Context::emit_window)),
    /// for outputs that name them; empty if it emits none.
    pub columns: Vec<String>,
}

/// A window operator.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    /// Window shape.
    pub kind: WindowKind,
    /// How long after firing a window still accepts (and re-emits) late
    /// samples (ticks of event time). 0: late samples go to the late output.
    pub allowed_lateness: i64,
    /// Aggregates emitted per window, in this order.
    pub aggregates: Vec<AggKind>,
    /// Optional detector over one of the window's aggregates.
    pub detect: Option<DetectSpec>,
}

/// Window shapes. Sizes are in ticks, counts in samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// `[k·size, (k+1)·size)`, aligned to the epoch.
    Tumbling {
        /// Length.
        size: i64,
    },
    /// Windows of `size` starting every `slide` (aligned to the epoch).
    Sliding {
        /// Length.
        size: i64,
        /// Distance between starts.
        slide: i64,
    },
    /// Flink's cumulating windows: within each `[k·size, (k+1)·size)`
    /// (aligned to the epoch), the windows `[k·size, k·size + j·step)` for
    /// j = 1 … size / step, each firing at its own end.
    Cumulate {
        /// Distance between the ends.
        step: i64,
        /// The largest window.
        size: i64,
    },
    /// Per key, samples closer than `gap` form one session `[first, last + gap)`.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
    /// Every `size` samples of a key, in event-time order.
    Count {
        /// Samples per window.
        size: u64,
    },
}

/// Anomaly detection: which value, which detector, when to alert.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSpec {
    /// For a detector chained to a window: the aggregate it watches (must be
    /// one of the window's aggregates). Ignored for raw-sample detectors.
    pub on: Option<AggKind>,
    /// The detector and its parameters.
    pub detector: DetectorSpec,
    /// In which order a raw-sample detector sees a key's samples.
    pub order: SampleOrder,
    /// A multivariate detector's fields, in order, the operator's `field`
    /// first (2 to [`MAX_FIELDS`](crate::detect::MAX_FIELDS) distinct
    /// fields of its source, as many as the detector reads); empty for any
    /// other detector.
    pub fields: Vec<String>,
}

/// The order in which a per-sample detector sees a key's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SampleOrder {
    /// Event-time order: samples wait until the watermark passes them, so
    /// scores do not depend on arrival order within the bound; samples at or
    /// before the watermark go to the late output. The default.
    #[default]
    EventTime,
    /// Arrival order, at once, never late (as Flink's process functions):
    /// for inputs already in order, or when every row must be scored (NAB).
    Arrival,
}

/// What the engine does when a new key arrives and the key or byte budget
/// is full, once no unproven key is left to evict: a key that has not yet
/// completed a window of its own (see [`StateSpec`]) is always evicted
/// first, oldest admission first, whatever the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Reject the new key's samples (counted as `KeyBudget`). The default.
    #[default]
    RejectNew,
    /// Evict the least recently active key that holds no open window; reject
    /// if there is none.
    EvictIdle,
}

/// Default byte budget of keyed state: 64 MiB.
pub const DEFAULT_STATE_BYTES: usize = 64 << 20;

/// Limits on keyed state.
///
/// A key costs an estimate of its state ([`crate::engine::Engine::key_cost`]:
/// its name, the key table, per operator its open windows with their
/// aggregates and sketches, and its detector state) from the moment it is
/// admitted. A new key is admitted while `max_keys` and `max_bytes` both
/// allow it. When one does not, keys that have not completed a window of
/// their own (their samples span less than the shortest window plus its
/// source's bound) are evicted first, oldest admission first, with their
/// open windows; then `on_full` decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSpec {
    /// Most keys alive at once.
    pub max_keys: usize,
    /// Most bytes of keyed state alive at once, by the engine's estimate.
    pub max_bytes: usize,
    /// Forget a key (and its detector baseline) once the watermark is this far
    /// past its last sample and it has no open window. `None`: keep forever.
    pub ttl: Option<i64>,
    /// Policy when the budget is full and no unproven key is left.
    pub on_full: FullPolicy,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            max_keys: 100_000,
            max_bytes: DEFAULT_STATE_BYTES,
            ttl: None,
            on_full: FullPolicy::RejectNew,
        }
    }
}

/// Why a pipeline description is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Two sources or two operators share a name / id.
    Duplicate {
        /// `source` or `operator`.
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// An operator reads a source that does not exist.
    UnknownSource {
        /// Operator id.
        op: String,
        /// The missing source.
        source: String,
    },
    /// An operator reads a field its source does not declare.
    UnknownField {
        /// Operator id.
        op: String,
        /// The missing field.
        field: String,
    },
    /// A parameter is out of range; `what` says which and why.
    Invalid {
        /// Operator id, source name or `pipeline`.
        at: String,
        /// What is wrong and what is allowed.
        what: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Duplicate { what, name } => {
                write!(f, "{what} `{name}` is defined twice; names must be unique")
            }
            BuildError::UnknownSource { op, source } => {
                write!(f, "operator `{op}` reads source `{source}`, which is not defined")
            }
            BuildError::UnknownField { op, field } => write!(
                f,
                "operator `{op}` reads field `{field}`, which its source does not declare in `fields`"
            ),
            BuildError::Invalid { at, what } => write!(f, "`{at}`: {what}"),
        }
    }
}

impl core::error::Error for BuildError {}

impl PipelineSpec {
    /// Checks the description without building an engine.
    ///
    /// # Errors
    /// The first problem found, naming the operator or source.
    pub fn validate(&self) -> Result<(), BuildError> {
        let inv = |at: &str, what: String| BuildError::Invalid {
            at: at.to_string(),
            what,
        };
        if self.time.min_ts >= self.time.max_ts {
            return Err(inv("time", "min_ts must be below max_ts".into()));
        }
        if self.state.max_keys == 0 {
            return Err(inv("state", "max_keys must be at least 1".into()));
        }
        if self.state.max_bytes == 0 {
            return Err(inv("state", "memory must be at least 1 byte".into()));
        }
        if matches!(self.state.ttl, Some(t) if t <= 0) {
            return Err(inv("state", "ttl must be positive".into()));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(BuildError::Duplicate {
                    what: "source",
                    name: s.name.clone(),
                });
            }
            // A source of events alone (no value: SQL's `COUNT(*)` of a
            // table without a numeric column) has a computed field.
            if s.fields.is_empty() && s.compute.is_empty() {
                return Err(inv(&s.name, "a source needs at least one field".into()));
            }
            if s.max_out_of_orderness < 0 {
                return Err(inv(
                    &s.name,
                    "max_out_of_orderness must not be negative".into(),
                ));
            }
            if matches!(s.idle_timeout, Some(t) if t <= 0)
                || matches!(s.max_ahead, Some(t) if t < 0)
            {
                return Err(inv(
                    &s.name,
                    "idle_timeout must be positive and max_ahead not negative".into(),
                ));
            }
            validate_stages(s)?;
        }
        if self.operators.is_empty() {
            return Err(inv(
                "pipeline",
                "no operators: add at least one window or detect operator".into(),
            ));
        }
        for (i, op) in self.operators.iter().enumerate() {
            if op.id.is_empty() {
                return Err(inv("pipeline", "an operator has an empty id".into()));
            }
            if self.operators[..i].iter().any(|o| o.id == op.id) {
                return Err(BuildError::Duplicate {
                    what: "operator",
                    name: op.id.clone(),
                });
            }
            let Some(src) = self.sources.iter().find(|s| s.name == op.source) else {
                return Err(BuildError::UnknownSource {
                    op: op.id.clone(),
                    source: op.source.clone(),
                });
            };
            if src.field_index(&op.field).is_none() {
                return Err(BuildError::UnknownField {
                    op: op.id.clone(),
                    field: op.field.clone(),
                });
            }
            match &op.kind {
                OperatorKind::Window(w) => validate_window(&op.id, w)?,
                OperatorKind::Detect(d) => {
                    d.detector.validate().map_err(|e| inv(&op.id, e.into()))?;
                    validate_fields(op, d, src)?;
                }
                OperatorKind::Process(p) => {
                    if (p.factory.0)().state_type() != p.state_type {
                        return Err(inv(
                            &op.id,
                            "the factory's state_type() differs from the spec's state_type".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A multivariate detector's fields: as many as it reads, distinct, of its
/// source, its `field` first, read in arrival order; no other detector has
/// any.
fn validate_fields(op: &OperatorSpec, d: &DetectSpec, src: &SourceSpec) -> Result<(), BuildError> {
    let inv = |what: String| BuildError::Invalid {
        at: op.id.clone(),
        what,
    };
    let want = d.detector.fields();
    let multi = matches!(d.detector, DetectorSpec::Multivariate { .. });
    if !multi {
        if d.fields.is_empty() {
            return Ok(());
        }
        return Err(inv("only a multivariate detector reads `fields`".into()));
    }
    if d.fields.len() != want || d.fields.first() != Some(&op.field) {
        return Err(inv(alloc::format!(
            "the detector reads {want} fields; `fields` must list them, the operator's field first"
        )));
    }
    for (i, f) in d.fields.iter().enumerate() {
        if src.field_index(f).is_none() {
            return Err(BuildError::UnknownField {
                op: op.id.clone(),
                field: f.clone(),
            });
        }
        if d.fields[..i].contains(f) {
            return Err(inv(alloc::format!("field `{f}` is listed twice")));
        }
    }
    if d.order != SampleOrder::Arrival {
        return Err(inv(
            "a multivariate detector reads its samples in arrival order".into(),
        ));
    }
    Ok(())
}

/// Column references of the filter and computed fields must be in range,
/// computed names new.
fn validate_stages(s: &SourceSpec) -> Result<(), BuildError> {
    let inv = |what: String| BuildError::Invalid {
        at: s.name.clone(),
        what,
    };
    let n = s.fields.len();
    if let Some(c) = s.filter.as_ref().and_then(Expr::max_col) {
        if c as usize >= n {
            return Err(inv(alloc::format!(
                "the filter reads column {c}, but the source has {n} fields"
            )));
        }
    }
    for (j, c) in s.compute.iter().enumerate() {
        if c.name.is_empty() {
            return Err(inv("a computed field has an empty name".into()));
        }
        if s.fields.contains(&c.name) || s.compute[..j].iter().any(|o| o.name == c.name) {
            return Err(BuildError::Duplicate {
                what: "field",
                name: c.name.clone(),
            });
        }
        if let Some(col) = c.expr.max_col() {
            if col as usize >= n + j {
                return Err(inv(alloc::format!(
                    "computed field {} reads column {col}: it may read the {n} fields and the computed fields before it",
                    c.name
                )));
            }
        }
    }
    if n + s.compute.len() > u16::MAX as usize {
        return Err(inv("too many fields".into()));
    }
    if let Some(f) = s.nullable.iter().find(|&&f| f >= n + s.compute.len()) {
        return Err(inv(alloc::format!(
            "nullable field {f}: the source has {} fields",
            n + s.compute.len()
        )));
    }
    Ok(())
}

fn validate_window(id: &str, w: &WindowSpec) -> Result<(), BuildError> {
    let inv = |what: &str| BuildError::Invalid {
        at: id.to_string(),
        what: what.to_string(),
    };
    match w.kind {
        WindowKind::Tumbling { size } if size <= 0 => {
            return Err(inv("window size must be positive"))
        }
        WindowKind::Sliding { size, slide } => {
            if size <= 0 || slide <= 0 || slide > size {
                return Err(inv("sliding window needs 0 < slide <= size"));
            }
            if size / slide > MAX_WINDOWS_PER_SAMPLE {
                return Err(inv("sliding window size / slide must be at most 64"));
            }
        }
        WindowKind::Cumulate { step, size } => {
            if step <= 0 || size <= 0 || size % step != 0 {
                return Err(inv(
                    "cumulating window needs 0 < step and size a multiple of step",
                ));
            }
            if size / step > MAX_WINDOWS_PER_SAMPLE {
                return Err(inv("cumulating window size / step must be at most 64"));
            }
        }
        WindowKind::Session { gap } if gap <= 0 => return Err(inv("session gap must be positive")),
        WindowKind::Count { size: 0 } => return Err(inv("count window size must be at least 1")),
        _ => {}
    }
    if w.allowed_lateness < 0 {
        return Err(inv("allowed_lateness must not be negative"));
    }
    if w.aggregates
        .iter()
        .any(|a| matches!(a, AggKind::Percentile(p) if !(0.0..=100.0).contains(p)))
    {
        return Err(inv("a percentile must be between 0 and 100"));
    }
    if w.aggregates.is_empty() || w.aggregates.len() > MAX_AGGS {
        return Err(inv("a window needs between 1 and 16 aggregates"));
    }
    if let Some(d) = &w.detect {
        let Some(on) = d.on else {
            return Err(inv(
                "a detector on a window needs `on`: the aggregate it watches, e.g. \"mean\"",
            ));
        };
        if !w.aggregates.contains(&on) {
            return Err(inv(
                "the detector's `on` aggregate must be one of the window's aggregates",
            ));
        }
        if matches!(d.detector, DetectorSpec::Multivariate { .. }) || !d.fields.is_empty() {
            return Err(inv(
                "a detector on a window watches one aggregate: make a multivariate detector a [[detect]] of its own",
            ));
        }
        d.detector.validate().map_err(inv)?;
    }
    Ok(())
}

/// Builds a [`PipelineSpec`] in the style of a DataStream program:
///
/// ```
/// use weir_core::prelude::*;
/// let engine = PipelineBuilder::new("pumps")
///     .source(SourceSpec::new("vibration", ["rms"]).out_of_orderness(2_000))
///     .window("rms_10s", "vibration", "rms", WindowKind::Tumbling { size: 10_000 })
///     .aggregate([AggKind::Count, AggKind::Mean, AggKind::Max])
///     .detect(AggKind::Mean, DetectorSpec::default())
///     .done()
///     .build()
///     .unwrap();
/// assert_eq!(engine.spec().operators.len(), 1);
/// ```
#[derive(Debug)]
pub struct PipelineBuilder {
    spec: PipelineSpec,
}

impl PipelineBuilder {
    /// An empty event-time pipeline in milliseconds.
    pub fn new(name: &str) -> Self {
        PipelineBuilder {
            spec: PipelineSpec {
                name: name.to_string(),
                time: TimeSpec::default(),
                sources: Vec::new(),
                operators: Vec::new(),
                state: StateSpec::default(),
            },
        }
    }

    /// Sets the time mode, unit and range.
    pub fn time(mut self, time: TimeSpec) -> Self {
        self.spec.time = time;
        self
    }

    /// Sets keyed-state limits.
    pub fn state(mut self, state: StateSpec) -> Self {
        self.spec.state = state;
        self
    }

    /// Adds a source.
    pub fn source(mut self, source: SourceSpec) -> Self {
        self.spec.sources.push(source);
        self
    }

    /// Starts a window operator `id` over `source.field`, keyed by sensor.
    pub fn window(self, id: &str, source: &str, field: &str, kind: WindowKind) -> WindowBuilder {
        WindowBuilder {
            parent: self,
            op: OperatorSpec {
                id: id.to_string(),
                source: source.to_string(),
                field: field.to_string(),
                kind: OperatorKind::Window(WindowSpec {
                    kind,
                    allowed_lateness: 0,
                    aggregates: Vec::new(),
                    detect: None,
                }),
            },
        }
    }

    /// Adds a per-sample detector `id` over `source.field`, keyed by sensor.
    pub fn detect(mut self, id: &str, source: &str, field: &str, detector: DetectorSpec) -> Self {
        self.spec.operators.push(OperatorSpec {
            id: id.to_string(),
            source: source.to_string(),
            field: field.to_string(),
            kind: OperatorKind::Detect(DetectSpec {
                on: None,
                detector,
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            }),
        });
        self
    }

    /// Adds a multivariate detector `id` over several fields of `source`
    /// (one machine), keyed by sensor, with the shipped configuration; it
    /// reads in arrival order.
    pub fn detect_fields(mut self, id: &str, source: &str, fields: &[&str]) -> Self {
        self.spec.operators.push(OperatorSpec {
            id: id.to_string(),
            source: source.to_string(),
            field: fields.first().map_or_else(String::new, |f| f.to_string()),
            kind: OperatorKind::Detect(DetectSpec {
                on: None,
                detector: DetectorSpec::multivariate(fields.len().min(255) as u8),
                order: SampleOrder::Arrival,
                fields: fields.iter().map(|f| f.to_string()).collect(),
            }),
        });
        self
    }

    /// Adds a custom operator `id` over `source.field`, keyed by sensor;
    /// `make` builds an instance whose `state_type()` is `state_type`.
    pub fn process<F>(
        mut self,
        id: &str,
        source: &str,
        field: &str,
        state_type: &str,
        make: F,
    ) -> Self
    where
        F: Fn() -> alloc::boxed::Box<dyn crate::process::KeyedProcess> + Send + Sync + 'static,
    {
        self.spec.operators.push(OperatorSpec {
            id: id.to_string(),
            source: source.to_string(),
            field: field.to_string(),
            kind: OperatorKind::Process(ProcessSpec {
                state_type: state_type.to_string(),
                factory: crate::process::ProcessFactory(alloc::sync::Arc::new(make)),
                columns: Vec::new(),
            }),
        });
        self
    }

    /// The description, unvalidated.
    pub fn spec(self) -> PipelineSpec {
        self.spec
    }

    /// Validates and builds the engine.
    ///
    /// # Errors
    /// See [`PipelineSpec::validate`].
    pub fn build(self) -> Result<crate::engine::Engine, BuildError> {
        self.spec.build()
    }
}

/// Configures one window operator; [`WindowBuilder::done`] returns to the pipeline.
#[derive(Debug)]
pub struct WindowBuilder {
    parent: PipelineBuilder,
    op: OperatorSpec,
}

impl WindowBuilder {
    fn w(&mut self) -> &mut WindowSpec {
        match &mut self.op.kind {
            OperatorKind::Window(w) => w,
            _ => unreachable!("WindowBuilder always holds a window"),
        }
    }

    /// Appends aggregates.
    pub fn aggregate<I: IntoIterator<Item = AggKind>>(mut self, aggs: I) -> Self {
        self.w().aggregates.extend(aggs);
        self
    }

    /// Keeps fired windows updatable for `ticks` of event time.
    pub fn allowed_lateness(mut self, ticks: i64) -> Self {
        self.w().allowed_lateness = ticks;
        self
    }

    /// Chains a detector over aggregate `on` of every fired window.
    pub fn detect(mut self, on: AggKind, detector: DetectorSpec) -> Self {
        self.w().detect = Some(DetectSpec {
            on: Some(on),
            detector,
            order: SampleOrder::EventTime,
            fields: Vec::new(),
        });
        self
    }

    /// Finishes the operator.
    pub fn done(mut self) -> PipelineBuilder {
        self.parent.spec.operators.push(self.op);
        self.parent
    }
}
