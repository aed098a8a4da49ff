//! Versioned CBOR snapshots of a whole engine, and restore with state
//! migration by operator id.
//!
//! The layout (format version 1) is documented field by field in
//! `docs/design.md`. Restoring into a changed pipeline keeps the state of
//! every operator whose `id` and state type still match, resets the others,
//! and reports both ([`RestoreReport`]).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::fmt::Write as _;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::agg::Moments;
use crate::detect::DetectorState;
use crate::distinct::DistinctSet;
use crate::engine::{Engine, EngineStats, KeyWm, Op};
use crate::keys::KeyId;
use crate::sketch::DefaultSketch;
use crate::spec::{OperatorKind, OperatorSpec, WindowKind};
use crate::window::{KeyState, KeyedPending, OpStats, OpenWindow, Pending};

/// Leading magic string of every snapshot.
pub const MAGIC: &str = "weir-snapshot";
/// The format version this build writes. It also reads version 1 (before
/// per-key watermarks and key probation; see `docs/design.md`).
pub const VERSION: u32 = 2;

type EncErr = minicbor::encode::Error<core::convert::Infallible>;

/// Why a snapshot could not be taken or restored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Outputs are still queued: drain `poll_output` first.
    OutputsPending,
    /// Not a weir snapshot, or written by an unknown format version.
    Version {
        /// The version found (0 if the magic was wrong).
        found: u32,
    },
    /// The bytes are not valid CBOR of the expected shape.
    Decode(String),
    /// Well-formed but inconsistent (e.g. a key id that does not exist).
    Corrupt(&'static str),
    /// `restore` was called on an engine that has already processed input.
    NotFresh,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::OutputsPending => {
                f.write_str("outputs are still queued: drain poll_output before snapshot")
            }
            SnapshotError::Version { found } => {
                write!(
                    f,
                    "unsupported snapshot format version {found} (this build reads {VERSION})"
                )
            }
            SnapshotError::Decode(e) => write!(f, "snapshot is not valid: {e}"),
            SnapshotError::Corrupt(e) => write!(f, "snapshot is inconsistent: {e}"),
            SnapshotError::NotFresh => f.write_str("restore needs a freshly built engine"),
        }
    }
}

impl core::error::Error for SnapshotError {}

impl From<minicbor::decode::Error> for SnapshotError {
    fn from(e: minicbor::decode::Error) -> Self {
        let mut s = String::new();
        let _ = write!(s, "{e}");
        SnapshotError::Decode(s)
    }
}

/// What happened to one operator's state on restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpRestore {
    /// State carried over.
    Kept,
    /// Windows carried over, detector baselines reset (detector changed).
    KeptWindows,
    /// Same id, but the state type changed: started empty.
    Reset {
        /// The snapshot's state type.
        was: String,
        /// The pipeline's state type.
        now: String,
    },
    /// No state for this id in the snapshot: started empty.
    New,
}

/// Per-operator outcome of a restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// `(operator id, outcome)` in pipeline order.
    pub operators: Vec<(String, OpRestore)>,
    /// Ids present in the snapshot but not in the pipeline (state dropped).
    pub dropped: Vec<String>,
}

/// The state type of an operator: state is kept across a pipeline change
/// only when this string is unchanged. It names the time unit and mode too:
/// windows built in milliseconds mean nothing in microseconds.
pub fn state_type(time: &crate::spec::TimeSpec, op: &OperatorSpec) -> String {
    let mut s = String::new();
    let _ = write!(s, "{} {:?} ", time.unit.name(), time.mode);
    match &op.kind {
        OperatorKind::Window(w) => {
            let _ = match w.kind {
                WindowKind::Tumbling { size } => write!(s, "window/1 tumbling {size}"),
                WindowKind::Sliding { size, slide } => write!(s, "window/1 sliding {size} {slide}"),
                WindowKind::Cumulate { step, size } => {
                    write!(s, "window/1 cumulate {step} {size}")
                }
                WindowKind::Session { gap } => write!(s, "window/1 session {gap}"),
                WindowKind::Count { size } => write!(s, "window/1 count {size}"),
            };
            let tier = w.aggregates.iter().map(|a| a.tier()).max();
            let _ = write!(
                s,
                " lateness {} tier {:?} field {}",
                w.allowed_lateness, tier, op.field
            );
            if w.aggregates
                .iter()
                .any(|a| matches!(a, crate::agg::AggKind::Percentile(_)))
            {
                s.push_str(" sketch");
            }
            if w.aggregates.contains(&crate::agg::AggKind::CountDistinct) {
                s.push_str(" distinct");
            }
        }
        OperatorKind::Detect(d) => {
            let _ = write!(s, "detect/1 {:?} field {}", d.order, op.field);
            if !d.fields.is_empty() {
                let _ = write!(s, " fields {}", d.fields.join(","));
            }
        }
        OperatorKind::Process(p) => {
            let _ = write!(s, "process/1 {} field {}", p.state_type, op.field);
        }
    }
    s
}

fn detector_type(op: &OperatorSpec) -> Option<String> {
    match &op.kind {
        OperatorKind::Window(w) => w.detect.as_ref().map(|d| d.detector.state_type()),
        OperatorKind::Detect(d) => Some(d.detector.state_type()),
        OperatorKind::Process(_) => None,
    }
}

/// A window operator's timer map, time → keys in registration order.
fn enc_timer_map(
    e: &mut Encoder<&mut Vec<u8>>,
    m: &alloc::collections::BTreeMap<i64, Vec<KeyId>>,
) -> Result<(), EncErr> {
    e.array(m.len() as u64)?;
    for (t, keys) in m {
        e.array(2)?.i64(*t)?.array(keys.len() as u64)?;
        for k in keys {
            e.u32(*k)?;
        }
    }
    Ok(())
}

fn dec_timer_map(
    d: &mut Decoder<'_>,
    names: &[Option<alloc::boxed::Box<str>>],
) -> Result<alloc::collections::BTreeMap<i64, Vec<KeyId>>, SnapshotError> {
    let mut m = alloc::collections::BTreeMap::new();
    for _ in 0..array_len(d)? {
        expect_array(d, 2)?;
        let t = d.i64()?;
        let mut keys = Vec::new();
        for _ in 0..array_len(d)? {
            let k = d.u32()?;
            if !names.get(k as usize).is_some_and(|n| n.is_some()) {
                return Err(SnapshotError::Corrupt("timer refers to an unknown key"));
            }
            keys.push(k);
        }
        m.insert(t, keys);
    }
    Ok(m)
}

fn enc_timers(
    e: &mut Encoder<&mut Vec<u8>>,
    t: &alloc::collections::BTreeSet<(i64, KeyId)>,
) -> Result<(), EncErr> {
    e.array(t.len() as u64)?;
    for (at, k) in t {
        e.array(2)?.i64(*at)?.u32(*k)?;
    }
    Ok(())
}

fn dec_timers(
    d: &mut Decoder<'_>,
    names: &[Option<alloc::boxed::Box<str>>],
) -> Result<alloc::collections::BTreeSet<(i64, KeyId)>, SnapshotError> {
    let mut t = alloc::collections::BTreeSet::new();
    for _ in 0..array_len(d)? {
        expect_array(d, 2)?;
        let at = d.i64()?;
        let k = d.u32()?;
        if !names.get(k as usize).is_some_and(|n| n.is_some()) {
            return Err(SnapshotError::Corrupt("timer refers to an unknown key"));
        }
        t.insert((at, k));
    }
    Ok(t)
}

fn opt_i64(e: &mut Encoder<&mut Vec<u8>>, v: Option<i64>) -> Result<(), EncErr> {
    match v {
        Some(v) => e.i64(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn enc_stats(e: &mut Encoder<&mut Vec<u8>>, s: &OpStats) -> Result<(), EncErr> {
    e.array(7)?
        .u64(s.routed)?
        .u64(s.on_time)?
        .u64(s.updated)?
        .u64(s.late)?
        .u64(s.fired)?
        .u64(s.updates)?
        .u64(s.flagged)?;
    Ok(())
}

fn dec_stats(d: &mut Decoder<'_>) -> Result<OpStats, SnapshotError> {
    expect_array(d, 7)?;
    Ok(OpStats {
        routed: d.u64()?,
        on_time: d.u64()?,
        updated: d.u64()?,
        late: d.u64()?,
        fired: d.u64()?,
        updates: d.u64()?,
        flagged: d.u64()?,
        distinct_overflow: 0,
    })
}

fn enc_pending(
    e: &mut Encoder<&mut Vec<u8>>,
    p: &alloc::collections::BinaryHeap<Reverse<Pending>>,
    kp: &KeyedPending,
) -> Result<(), EncErr> {
    let mut v: Vec<Pending> = p.iter().map(|r| r.0).chain(kp.iter()).collect();
    v.sort_unstable();
    e.array(v.len() as u64)?;
    for p in v {
        e.array(3)?.i64(p.ts)?.u32(p.key)?.u64(p.bits)?;
    }
    Ok(())
}

fn dec_pending(
    d: &mut Decoder<'_>,
    names: &[Option<alloc::boxed::Box<str>>],
) -> Result<alloc::collections::BinaryHeap<Reverse<Pending>>, SnapshotError> {
    let n = array_len(d)?;
    let mut h = alloc::collections::BinaryHeap::new();
    for _ in 0..n {
        expect_array(d, 3)?;
        let p = Pending {
            ts: d.i64()?,
            key: d.u32()?,
            bits: d.u64()?,
        };
        if !names.get(p.key as usize).is_some_and(|n| n.is_some()) {
            return Err(SnapshotError::Corrupt(
                "pending sample refers to an unknown key",
            ));
        }
        h.push(Reverse(p));
    }
    Ok(h)
}

fn expect_array(d: &mut Decoder<'_>, n: u64) -> Result<(), SnapshotError> {
    match d.array()? {
        Some(m) if m == n => Ok(()),
        _ => Err(SnapshotError::Corrupt("unexpected array length")),
    }
}

fn array_len(d: &mut Decoder<'_>) -> Result<u64, SnapshotError> {
    let n = d
        .array()?
        .ok_or(SnapshotError::Corrupt("indefinite array"))?;
    // Every element takes at least one byte: a larger count is a lie.
    if n > d.input().len() as u64 {
        return Err(SnapshotError::Corrupt("array longer than the snapshot"));
    }
    Ok(n)
}

fn opt_i64_dec(d: &mut Decoder<'_>) -> Result<Option<i64>, SnapshotError> {
    if d.datatype()? == Type::Null {
        d.null()?;
        Ok(None)
    } else {
        Ok(Some(d.i64()?))
    }
}

impl Engine {
    /// Serialises the whole engine state.
    ///
    /// # Errors
    /// [`SnapshotError::OutputsPending`] if outputs are still queued: a
    /// snapshot is taken between calls, with the queue drained, so that it
    /// and the outputs already handed out describe the same point.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = Vec::with_capacity(256 + self.keys.names.len() * 64);
        self.snapshot_into(&mut buf)?;
        Ok(buf)
    }

    /// [`Engine::snapshot`] appended to `buf`, for a caller that frames it
    /// (a checkpoint record with its header first) without copying it
    /// again. On an error `buf` is as it was.
    ///
    /// # Errors
    /// As [`Engine::snapshot`].
    pub fn snapshot_into(&self, buf: &mut Vec<u8>) -> Result<(), SnapshotError> {
        if self.has_output() {
            return Err(SnapshotError::OutputsPending);
        }
        let start = buf.len();
        let encoded = self.encode(&mut Encoder::new(&mut *buf));
        if encoded.is_err() {
            buf.truncate(start);
            return Err(SnapshotError::Corrupt("encode"));
        }
        Ok(())
    }

    fn encode(&self, e: &mut Encoder<&mut Vec<u8>>) -> Result<(), EncErr> {
        e.array(13)?
            .str(MAGIC)?
            .u32(VERSION)?
            .str(&self.spec.name)?;
        e.i64(self.now)?.i64(self.wm)?.i64(self.next_sweep)?;
        let s = &self.stats;
        e.array(3 + s.rejected.len() as u64 + s.evictions.len() as u64)?
            .u64(s.input)?
            .u64(s.accepted)?
            .u64(s.keys_evicted)?;
        for r in s.rejected.iter().chain(&s.evictions) {
            e.u64(*r)?;
        }
        e.array(self.sources.len() as u64)?;
        for (i, (st, sp)) in self.sources.iter().zip(&self.spec.sources).enumerate() {
            e.array(5)?.str(&sp.name)?;
            opt_i64(e, st.max_ts)?;
            e.i64(st.last_now)?.bool(st.idle)?;
            if self.source_per_key(i) {
                let live: Vec<(usize, &KeyWm)> = self.kwm[i]
                    .iter()
                    .enumerate()
                    .filter(|(k, w)| **w != KeyWm::NEW && self.keys.names[*k].is_some())
                    .collect();
                e.array(live.len() as u64)?;
                for (k, w) in live {
                    e.array(4)?
                        .u32(k as u32)?
                        .i64(w.max_ts)?
                        .i64(w.wm)?
                        .i64(w.last_now)?;
                }
            } else {
                e.null()?;
            }
        }
        let k = &self.keys;
        e.array(k.names.len() as u64)?;
        for (i, n) in k.names.iter().enumerate() {
            match n {
                Some(n) => e
                    .array(5)?
                    .str(n)?
                    .i64(k.last_ts[i])?
                    .i64(k.first_ts[i])?
                    .u64(k.admitted[i])?
                    .bool(k.proven[i])?,
                None => e.null()?,
            };
        }
        e.array(k.free.len() as u64)?;
        for f in &k.free {
            e.u32(*f)?;
        }
        e.array(k.pending_free.len() as u64)?;
        for f in &k.pending_free {
            e.u32(*f)?;
        }
        e.array(self.ops.len() as u64)?;
        for (op, spec) in self.ops.iter().zip(&self.spec.operators) {
            e.array(4)?
                .str(&spec.id)?
                .str(&state_type(&self.spec.time, spec))?;
            match detector_type(spec) {
                Some(t) => e.str(&t)?,
                None => e.null()?,
            };
            match op {
                Op::Window(w) => {
                    e.array(5)?;
                    enc_stats(e, &w.stats)?;
                    enc_timer_map(e, &w.timers)?;
                    let live: Vec<(usize, &KeyState)> = w
                        .keys
                        .iter()
                        .enumerate()
                        .filter(|(_, k)| !k.windows.is_empty() || k.detector.is_some())
                        .collect();
                    e.array(live.len() as u64)?;
                    for (id, ks) in live {
                        e.array(3)?.u32(id as u32)?.array(ks.windows.len() as u64)?;
                        for win in &ks.windows {
                            // A distinct set is a seventh element, written
                            // only by operators that count distinct values;
                            // the count of NULL samples follows, only when
                            // there are any.
                            e.array(6 + u64::from(win.d.is_some()) + u64::from(win.nulls > 0))?
                                .i64(win.start)?
                                .i64(win.end)?
                                .bool(win.emitted)?
                                .bool(win.superseded)?;
                            win.m.encode(e)?;
                            match &win.q {
                                Some(q) => q.encode(e)?,
                                None => {
                                    e.null()?;
                                }
                            }
                            if let Some(set) = &win.d {
                                set.encode(e)?;
                            }
                            if win.nulls > 0 {
                                e.u32(win.nulls)?;
                            }
                        }
                        match &ks.detector {
                            Some(det) => det.encode(e)?,
                            None => {
                                e.null()?;
                            }
                        }
                    }
                    enc_pending(e, &w.pending, &w.kpending)?;
                    enc_timer_map(e, &w.purges)?;
                }
                Op::Detect(dop) => {
                    e.array(3)?;
                    enc_stats(e, &dop.stats)?;
                    let live: Vec<(usize, &DetectorState)> = dop
                        .states
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                        .collect();
                    e.array(live.len() as u64)?;
                    for (id, st) in live {
                        e.array(2)?.u32(id as u32)?;
                        st.encode(e)?;
                    }
                    enc_pending(e, &dop.pending, &dop.kpending)?;
                }
                Op::Process(p) => {
                    e.array(4)?;
                    enc_stats(e, &p.stats)?;
                    enc_timers(e, &p.timers.event)?;
                    enc_timers(e, &p.timers.processing)?;
                    p.f.encode(e)?;
                }
            }
        }
        e.array(3)?
            .i64(self.idle_due)?
            .i64(self.last_scan)?
            .bool(self.idle_keys)?;
        Ok(())
    }

    /// Loads a snapshot into this freshly built engine. Operators are matched
    /// by id; state is kept where the state type matches (see [`state_type`]).
    /// Sources are matched by name. Keys, watermark and counters come back.
    ///
    /// # Errors
    /// [`SnapshotError::NotFresh`] if the engine has seen input; a decode,
    /// version or consistency error for bad bytes (the engine is then left
    /// fresh). Never panics on any input.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<RestoreReport, SnapshotError> {
        if self.stats.input != 0 || self.key_count() != 0 || self.has_output() {
            return Err(SnapshotError::NotFresh);
        }
        let fresh = self
            .spec
            .clone()
            .build()
            .map_err(|_| SnapshotError::Corrupt("pipeline"))?;
        match self.decode(&mut Decoder::new(bytes)) {
            Ok(r) => Ok(r),
            Err(e) => {
                *self = fresh;
                Err(e)
            }
        }
    }

    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<RestoreReport, SnapshotError> {
        let items = d.array()?;
        if d.str().ok() != Some(MAGIC) {
            return Err(SnapshotError::Version { found: 0 });
        }
        let version = d.u32()?;
        // Version 1 wrote 12 items under a header of 11.
        match (version, items) {
            (1, Some(11)) | (2, Some(13)) => {}
            (1 | 2, _) => return Err(SnapshotError::Corrupt("unexpected array length")),
            _ => return Err(SnapshotError::Version { found: version }),
        }
        let v1 = version == 1;
        let _name = d.str()?;
        self.now = d.i64()?;
        self.wm = d.i64()?;
        self.next_sweep = d.i64()?;
        let n = array_len(d)?;
        let nev = if v1 { 0 } else { self.stats.evictions.len() };
        if n != (3 + self.stats.rejected.len() + nev) as u64 {
            return Err(SnapshotError::Corrupt("counters"));
        }
        let mut stats = EngineStats {
            input: d.u64()?,
            accepted: d.u64()?,
            keys_evicted: d.u64()?,
            ..Default::default()
        };
        for r in stats.rejected.iter_mut() {
            *r = d.u64()?;
        }
        for r in stats.evictions.iter_mut().take(nev) {
            *r = d.u64()?;
        }
        self.stats = stats;
        // Per source: its per-key watermarks, if it had them.
        let mut key_wms: Vec<Option<Vec<(KeyId, KeyWm)>>> = alloc::vec![None; self.sources.len()];
        for _ in 0..array_len(d)? {
            expect_array(d, if v1 { 4 } else { 5 })?;
            let name = d.str()?;
            let max_ts = opt_i64_dec(d)?;
            let last_now = d.i64()?;
            let idle = d.bool()?;
            let mut kw = None;
            if !v1 {
                if d.datatype()? == Type::Null {
                    d.null()?;
                } else {
                    let mut v = Vec::new();
                    for _ in 0..array_len(d)? {
                        expect_array(d, 4)?;
                        let k = d.u32()?;
                        let w = KeyWm {
                            max_ts: d.i64()?,
                            wm: d.i64()?,
                            last_now: d.i64()?,
                        };
                        v.push((k, w));
                    }
                    kw = Some(v);
                }
            }
            if let Some(i) = self.source_index(name) {
                self.sources[i].max_ts = max_ts;
                self.sources[i].last_now = last_now;
                self.sources[i].idle = idle;
                key_wms[i] = kw;
            }
        }
        let nk = array_len(d)? as usize;
        let mut names = Vec::with_capacity(nk);
        let mut last_ts = Vec::with_capacity(nk);
        let mut first_ts = Vec::with_capacity(nk);
        let mut admitted = Vec::with_capacity(nk);
        let mut proven = Vec::with_capacity(nk);
        for i in 0..nk {
            if d.datatype()? == Type::Null {
                d.null()?;
                names.push(None);
                last_ts.push(i64::MIN);
                first_ts.push(i64::MIN);
                admitted.push(0);
                proven.push(true);
            } else {
                expect_array(d, if v1 { 2 } else { 5 })?;
                let name = d.str()?;
                if name.is_empty() || name.len() > crate::engine::MAX_KEY_LEN {
                    return Err(SnapshotError::Corrupt("bad key name"));
                }
                names.push(Some(name.into()));
                let last = d.i64()?;
                last_ts.push(last);
                if v1 {
                    // Keys of a version 1 snapshot have been around: proven.
                    first_ts.push(last);
                    admitted.push(i as u64);
                    proven.push(true);
                } else {
                    first_ts.push(d.i64()?);
                    admitted.push(d.u64()?);
                    proven.push(d.bool()?);
                }
            }
        }
        let mut free = Vec::new();
        let mut pending_free = Vec::new();
        let mut listed = alloc::vec![false; nk];
        for list in [&mut free, &mut pending_free] {
            for _ in 0..array_len(d)? {
                let id = d.u32()?;
                if id as usize >= nk || names[id as usize].is_some() {
                    return Err(SnapshotError::Corrupt("free list names a live key"));
                }
                if core::mem::replace(&mut listed[id as usize], true) {
                    return Err(SnapshotError::Corrupt("a free id is listed twice"));
                }
                list.push(id);
            }
        }
        if names.iter().zip(&listed).any(|(n, l)| n.is_none() && !l) {
            return Err(SnapshotError::Corrupt(
                "a free id is missing from the free lists",
            ));
        }
        self.keys.names = names;
        self.keys.last_ts = last_ts;
        self.keys.first_ts = first_ts;
        self.keys.admitted = admitted;
        self.keys.proven = proven;
        self.keys.free = free;
        self.keys.pending_free = pending_free;
        self.keys.reindex();
        self.keys.rebuild_probation();
        if self.keys.live() != self.keys.names.iter().filter(|n| n.is_some()).count() {
            return Err(SnapshotError::Corrupt("duplicate key names"));
        }
        let live = |k: KeyId, names: &[Option<alloc::boxed::Box<str>>]| {
            names.get(k as usize).is_some_and(|n| n.is_some())
        };
        let was_per_key: Vec<bool> = key_wms.iter().map(Option::is_some).collect();
        for (i, kw) in key_wms.into_iter().enumerate() {
            if !self.source_per_key(i) {
                continue;
            }
            let table = &mut self.kwm[i];
            table.clear();
            match kw {
                Some(v) => {
                    for (k, w) in v {
                        if !live(k, &self.keys.names) {
                            return Err(SnapshotError::Corrupt(
                                "a key watermark refers to an unknown key",
                            ));
                        }
                        let k = k as usize;
                        if k >= table.len() {
                            table.resize(k + 1, KeyWm::NEW);
                        }
                        table[k] = w;
                    }
                }
                None => {
                    // Written with one watermark for the source: every key
                    // starts at it (everything before it has fired).
                    table.resize(self.keys.names.len(), KeyWm::NEW);
                    for (k, n) in self.keys.names.iter().enumerate() {
                        if n.is_some() {
                            table[k] = KeyWm {
                                max_ts: i64::MIN,
                                wm: self.wm,
                                last_now: self.now,
                            };
                        }
                    }
                }
            }
        }

        let mut report = RestoreReport::default();
        let mut seen = alloc::vec![false; self.ops.len()];
        for _ in 0..array_len(d)? {
            expect_array(d, 4)?;
            let id = d.str()?.to_string();
            let stype = d.str()?.to_string();
            let dtype = if d.datatype()? == Type::Null {
                d.null()?;
                None
            } else {
                Some(d.str()?.to_string())
            };
            let idx = self.spec.operators.iter().position(|o| o.id == id);
            let Some(idx) = idx.filter(|&i| !seen[i]) else {
                report.dropped.push(id);
                d.skip()?;
                continue;
            };
            seen[idx] = true;
            let spec = self.spec.operators[idx].clone();
            let now_type = state_type(&self.spec.time, &spec);
            if now_type != stype {
                report.operators.push((
                    id,
                    OpRestore::Reset {
                        was: stype,
                        now: now_type,
                    },
                ));
                d.skip()?;
                continue;
            }
            let keep_det = dtype == detector_type(&spec);
            let det_spec = match &spec.kind {
                OperatorKind::Window(w) => w.detect.as_ref().map(|x| x.detector),
                OperatorKind::Detect(x) => Some(x.detector),
                OperatorKind::Process(_) => None,
            };
            match &mut self.ops[idx] {
                Op::Window(w) => {
                    expect_array(d, 5)?;
                    w.stats = dec_stats(d)?;
                    w.timers = dec_timer_map(d, &self.keys.names)?;
                    for _ in 0..array_len(d)? {
                        expect_array(d, 3)?;
                        let k = d.u32()?;
                        if !live(k, &self.keys.names) {
                            return Err(SnapshotError::Corrupt(
                                "window state refers to an unknown key",
                            ));
                        }
                        let mut ks = KeyState::default();
                        for _ in 0..array_len(d)? {
                            let len = array_len(d)?;
                            let base = 6 + u64::from(w.has_distinct());
                            if len != base && len != base + 1 {
                                return Err(SnapshotError::Corrupt(
                                    "window distinct set does not match the operator",
                                ));
                            }
                            let start = d.i64()?;
                            let end = d.i64()?;
                            let emitted = d.bool()?;
                            let superseded = d.bool()?;
                            let m = Moments::decode(d)?;
                            if start > end {
                                return Err(SnapshotError::Corrupt("window ends before it starts"));
                            }
                            let q = if d.datatype()? == Type::Null {
                                d.null()?;
                                None
                            } else {
                                Some(alloc::boxed::Box::new(DefaultSketch::decode(d)?))
                            };
                            if q.is_some() != w.has_sketch() {
                                return Err(SnapshotError::Corrupt(
                                    "window sketch does not match the operator",
                                ));
                            }
                            let dset = if w.has_distinct() {
                                Some(alloc::boxed::Box::new(DistinctSet::decode(d)?))
                            } else {
                                None
                            };
                            let nulls = if len > base { d.u32()? } else { 0 };
                            ks.windows.push(OpenWindow {
                                start,
                                end,
                                emitted,
                                superseded,
                                m,
                                nulls,
                                q,
                                d: dset,
                            });
                        }
                        if d.datatype()? == Type::Null {
                            d.null()?;
                        } else {
                            match (keep_det, &det_spec) {
                                (true, Some(ds)) => {
                                    ks.detector =
                                        Some(alloc::boxed::Box::new(DetectorState::decode(ds, d)?))
                                }
                                _ => d.skip()?,
                            }
                        }
                        let k = k as usize;
                        if k >= w.keys.len() {
                            w.keys.resize_with(k + 1, KeyState::default);
                        }
                        w.keys[k] = ks;
                    }
                    w.pending = dec_pending(d, &self.keys.names)?;
                    w.purges = dec_timer_map(d, &self.keys.names)?;
                    let src = self.spec.sources.iter().position(|s| s.name == spec.source);
                    let was = src.is_some_and(|i| was_per_key[i]);
                    if w.per_key {
                        // Per-key windows fire from their key's watermark.
                        w.timers.clear();
                        w.purges.clear();
                        for p in core::mem::take(&mut w.pending) {
                            w.kpending.push(p.0);
                        }
                    } else if was {
                        w.rebuild_timers();
                    }
                    w.reset_next_timer();
                }
                Op::Detect(dop) => {
                    expect_array(d, 3)?;
                    dop.stats = dec_stats(d)?;
                    for _ in 0..array_len(d)? {
                        expect_array(d, 2)?;
                        let k = d.u32()?;
                        if !live(k, &self.keys.names) {
                            return Err(SnapshotError::Corrupt(
                                "detector state refers to an unknown key",
                            ));
                        }
                        let k = k as usize;
                        if k >= dop.states.len() {
                            dop.states.resize_with(k + 1, || None);
                        }
                        if keep_det {
                            dop.states[k] = Some(DetectorState::decode(&dop.spec, d)?);
                        } else {
                            d.skip()?;
                        }
                    }
                    dop.pending = dec_pending(d, &self.keys.names)?;
                    if dop.per_key {
                        for p in core::mem::take(&mut dop.pending) {
                            dop.kpending.push(p.0);
                        }
                    }
                }
                Op::Process(p) => {
                    expect_array(d, 4)?;
                    p.stats = dec_stats(d)?;
                    p.timers.event = dec_timers(d, &self.keys.names)?;
                    p.timers.processing = dec_timers(d, &self.keys.names)?;
                    p.f.decode(d)?;
                }
            }
            let outcome = if keep_det {
                OpRestore::Kept
            } else {
                OpRestore::KeptWindows
            };
            report.operators.push((id, outcome));
        }
        for (i, op) in self.spec.operators.iter().enumerate() {
            if !seen[i] {
                report.operators.push((op.id.clone(), OpRestore::New));
            }
        }
        if v1 {
            self.idle_due = i64::MAX;
            self.last_scan = i64::MIN;
            self.idle_keys = false;
        } else {
            expect_array(d, 3)?;
            self.idle_due = d.i64()?;
            self.last_scan = d.i64()?;
            self.idle_keys = d.bool()?;
        }

        let order = |id: &str| self.spec.operators.iter().position(|o| o.id == id);
        report.operators.sort_by_key(|(id, _)| order(id));
        Ok(report)
    }
}
