//! The keyed window operator: assigns samples to windows, keeps their
//! aggregates, fires them when the watermark passes their end, keeps them
//! updatable for the allowed lateness, and sends later samples to the late
//! output.
//!
//! Time windows (tumbling, sliding, session) accept samples in any order and
//! are decided by the watermark at arrival. Count windows count samples in
//! event-time order: samples wait in a buffer until the watermark passes
//! them, so the result does not depend on arrival order either.

use alloc::collections::{BTreeMap, BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;

use strength_reduce::StrengthReducedU64;

use alloc::boxed::Box;

use crate::agg::{AggKind, Moments, Tier};
use crate::detect::{DetectorSpec, DetectorState, Verdict};
use crate::distinct::{DistinctSet, DISTINCT_CAP};
use crate::keys::KeyId;
use crate::output::{AggValues, Emission, LateSample, Output, WindowResult};
use crate::sketch::DefaultSketch;
use crate::spec::{WindowKind, WindowSpec};

/// One open window of one key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OpenWindow {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) emitted: bool,
    /// An earlier version of this (session) window was emitted: its next
    /// firing is an update, not an on-time result.
    pub(crate) superseded: bool,
    pub(crate) m: Moments,
    /// Samples whose value was `NULL` (a NaN): in `rows`, not in `m`.
    pub(crate) nulls: u32,
    /// Present only when the operator emits percentiles.
    pub(crate) q: Option<Box<DefaultSketch>>,
    /// Present only when the operator counts distinct values.
    pub(crate) d: Option<Box<DistinctSet>>,
}

impl OpenWindow {
    fn new(start: i64, end: i64, emitted: bool, sketch: bool, distinct: bool) -> Self {
        OpenWindow {
            start,
            end,
            emitted,
            superseded: false,
            m: Moments::new(),
            nulls: 0,
            q: sketch.then(Box::default),
            d: distinct.then(Box::default),
        }
    }

    /// Adds a sample's value; a NaN is SQL's `NULL` input (a nullable
    /// field, [`crate::spec::SourceSpec::nullable`]): the sample opens or
    /// extends the window but no aggregate takes it in.
    #[inline(always)]
    fn add(&mut self, x: f64, tier: Tier) {
        if x.is_nan() {
            self.nulls = self.nulls.saturating_add(1);
            return;
        }
        self.m.push(x, tier);
        if let Some(q) = self.q.as_mut() {
            q.insert(x);
        }
        if let Some(d) = self.d.as_mut() {
            d.insert(x);
        }
    }

    fn merge(&mut self, o: &OpenWindow) {
        self.m.merge(&o.m);
        self.nulls = self.nulls.saturating_add(o.nulls);
        if let (Some(a), Some(b)) = (self.q.as_mut(), o.q.as_ref()) {
            // Same alpha by construction: merge cannot fail.
            let _ = a.merge(b);
        }
        if let (Some(a), Some(b)) = (self.d.as_mut(), o.d.as_ref()) {
            a.merge(b);
        }
    }

    /// The value of aggregate `a` over this window.
    #[inline(always)]
    fn value(&self, a: AggKind) -> f64 {
        match a {
            AggKind::Percentile(p) => self
                .q
                .as_ref()
                .and_then(|q| q.quantile(p / 100.0))
                .unwrap_or(f64::NAN),
            AggKind::CountDistinct => self.d.as_ref().map_or(f64::NAN, |d| d.count()),
            AggKind::Rows => self.m.n as f64 + f64::from(self.nulls),
            // Only NULL inputs: SQL's SUM is NULL (COUNT stays 0).
            AggKind::Sum if self.m.n == 0 => f64::NAN,
            _ => self.m.get(a),
        }
    }

    #[inline]
    fn fire_at(&self) -> i64 {
        self.end.saturating_sub(1)
    }
}

/// Per-key state of a window operator.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct KeyState {
    pub(crate) windows: Vec<OpenWindow>,
    // Boxed: keeps the per-key entry small (and the entries of all keys in
    // cache) on the per-sample path, which never touches the detector.
    pub(crate) detector: Option<Box<DetectorState>>,
}

/// A sample waiting for the watermark (count windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pending {
    pub(crate) ts: i64,
    pub(crate) key: KeyId,
    pub(crate) bits: u64,
}

/// Samples waiting for their own key's watermark (per-key watermarks), by
/// key, then time, then value bits; equal samples are counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct KeyedPending {
    map: BTreeMap<(KeyId, i64, u64), u32>,
}

impl KeyedPending {
    pub(crate) fn push(&mut self, p: Pending) {
        *self.map.entry((p.key, p.ts, p.bits)).or_insert(0) += 1;
    }

    /// Removes the key's samples stamped at or before `wm`, in time order.
    pub(crate) fn take_upto(&mut self, key: KeyId, wm: i64) -> Vec<Pending> {
        let mut v = Vec::new();
        let due: Vec<((KeyId, i64, u64), u32)> = self
            .map
            .range((key, i64::MIN, 0)..=(key, wm, u64::MAX))
            .map(|(k, n)| (*k, *n))
            .collect();
        for ((key, ts, bits), n) in due {
            self.map.remove(&(key, ts, bits));
            for _ in 0..n {
                v.push(Pending { ts, key, bits });
            }
        }
        v
    }

    /// Removes every sample, by key then time.
    pub(crate) fn take_all(&mut self) -> Vec<Pending> {
        let mut v = Vec::new();
        for ((key, ts, bits), n) in core::mem::take(&mut self.map) {
            for _ in 0..n {
                v.push(Pending { ts, key, bits });
            }
        }
        v
    }

    pub(crate) fn has_key(&self, key: KeyId) -> bool {
        self.map
            .range((key, i64::MIN, 0)..=(key, i64::MAX, u64::MAX))
            .next()
            .is_some()
    }

    pub(crate) fn remove_key(&mut self, key: KeyId) {
        let _ = self.take_upto(key, i64::MAX);
    }

    /// Every sample, each as often as it was pushed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Pending> + '_ {
        self.map.iter().flat_map(|(&(key, ts, bits), &n)| {
            core::iter::repeat_n(Pending { ts, key, bits }, n as usize)
        })
    }
}

/// Where an operator's samples wait for the watermark: one heap ordered by
/// time (one watermark for all keys), or per key (per-key watermarks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_or_late(
    per_key: bool,
    stats: &mut OpStats,
    pending: &mut BinaryHeap<Reverse<Pending>>,
    kpending: &mut KeyedPending,
    op: u16,
    p: Pending,
    out: &mut VecDeque<Output>,
    wm: i64,
) {
    if per_key {
        if p.ts <= wm {
            stats.late += 1;
            out.push_back(Output::Late(LateSample {
                op,
                key: p.key,
                ts: p.ts,
                value: f64::from_bits(p.bits),
            }));
        } else {
            stats.on_time += 1;
            kpending.push(p);
        }
    } else {
        buffer_in_time_order(
            stats,
            pending,
            op,
            p.key,
            p.ts,
            f64::from_bits(p.bits),
            wm,
            out,
        );
    }
}

/// Buffers a sample until the watermark passes it (operators that see
/// samples in event-time order), or sends it to the late output if the
/// watermark already has.
#[allow(clippy::too_many_arguments)]
pub(crate) fn buffer_in_time_order(
    stats: &mut OpStats,
    pending: &mut BinaryHeap<Reverse<Pending>>,
    op: u16,
    key: KeyId,
    ts: i64,
    x: f64,
    wm: i64,
    out: &mut VecDeque<Output>,
) {
    if ts <= wm {
        stats.late += 1;
        out.push_back(Output::Late(LateSample {
            op,
            key,
            ts,
            value: x,
        }));
    } else {
        stats.on_time += 1;
        pending.push(Reverse(Pending {
            ts,
            key,
            bits: x.to_bits(),
        }));
    }
}

/// Counters of one operator. `on_time + late == routed` always holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Samples routed to the operator.
    pub routed: u64,
    /// Samples that entered a window before it fired (or, for count windows,
    /// before the watermark passed them).
    pub on_time: u64,
    /// Samples that updated an already fired window within allowed lateness.
    pub updated: u64,
    /// Samples later than that, sent to the late output.
    pub late: u64,
    /// Windows emitted on time.
    pub fired: u64,
    /// Update emissions of fired windows.
    pub updates: u64,
    /// Windows flagged by the chained detector.
    pub flagged: u64,
    /// Window emissions whose `count_distinct` is NaN because the window
    /// held more than [`DISTINCT_CAP`] distinct values. Not in snapshots:
    /// counted since the engine was built or restored.
    pub distinct_overflow: u64,
}

pub(crate) struct WindowOp {
    pub(crate) op: u16,
    /// Tumbling size or sliding slide, as a multiply-shift divisor: window
    /// assignment is on every sample's path and a hardware divide is slow.
    align: Option<StrengthReducedU64>,
    pub(crate) kind: WindowKind,
    pub(crate) lateness: i64,
    pub(crate) aggs: Vec<AggKind>,
    pub(crate) tier: Tier,
    sketch: bool,
    distinct: bool,
    pub(crate) detect: Option<(AggKind, DetectorSpec)>,
    pub(crate) keys: Vec<KeyState>,
    /// fire time → keys, in registration order.
    pub(crate) timers: BTreeMap<i64, Vec<KeyId>>,
    /// Earliest of `timers` and `purges` (i64::MAX if none).
    pub(crate) next_timer: i64,
    /// purge time (fire time + allowed lateness) → keys. Kept apart from the
    /// fire timers so purges never reorder firings.
    pub(crate) purges: BTreeMap<i64, Vec<KeyId>>,
    spare: Vec<Vec<KeyId>>,
    pub(crate) pending: BinaryHeap<Reverse<Pending>>,
    /// Per-key watermarks: each key's windows fire from `advance_key`; no
    /// timers are registered and count windows wait in `kpending`.
    pub(crate) per_key: bool,
    pub(crate) kpending: KeyedPending,
    pub(crate) stats: OpStats,
}

impl WindowOp {
    pub(crate) fn new(op: u16, spec: &WindowSpec, per_key: bool) -> Self {
        let tier = spec
            .aggregates
            .iter()
            .map(|a| a.tier())
            .max()
            .unwrap_or(Tier::Basic);
        let tier = match &spec.detect {
            Some(d) => tier.max(d.on.map_or(Tier::Basic, |a| a.tier())),
            None => tier,
        };
        let align = match spec.kind {
            WindowKind::Tumbling { size } => Some(StrengthReducedU64::new(size as u64)),
            WindowKind::Sliding { slide, .. } => Some(StrengthReducedU64::new(slide as u64)),
            WindowKind::Cumulate { size, .. } => Some(StrengthReducedU64::new(size as u64)),
            _ => None,
        };
        WindowOp {
            op,
            align,
            kind: spec.kind,
            lateness: spec.allowed_lateness,
            aggs: spec.aggregates.clone(),
            tier,
            sketch: spec
                .aggregates
                .iter()
                .any(|a| matches!(a, AggKind::Percentile(_))),
            distinct: spec.aggregates.contains(&AggKind::CountDistinct),
            detect: spec
                .detect
                .as_ref()
                .and_then(|d| d.on.map(|on| (on, d.detector))),
            keys: Vec::new(),
            timers: BTreeMap::new(),
            next_timer: i64::MAX,
            purges: BTreeMap::new(),
            spare: Vec::new(),
            pending: BinaryHeap::new(),
            per_key,
            kpending: KeyedPending::default(),
            stats: OpStats::default(),
        }
    }

    #[inline]
    fn key_state(&mut self, key: KeyId) -> &mut KeyState {
        let k = key as usize;
        if k >= self.keys.len() {
            self.keys.resize_with(k + 1, KeyState::default);
        }
        &mut self.keys[k]
    }

    pub(crate) fn has_sketch(&self) -> bool {
        self.sketch
    }

    pub(crate) fn has_distinct(&self) -> bool {
        self.distinct
    }

    pub(crate) fn is_empty(&self, key: KeyId) -> bool {
        self.keys
            .get(key as usize)
            .is_none_or(|k| k.windows.is_empty())
            && !self.pending.iter().any(|p| p.0.key == key)
            && !self.kpending.has_key(key)
    }

    /// Forgets a key: its windows, detector state and waiting samples.
    pub(crate) fn clear_key(&mut self, key: KeyId) {
        if let Some(k) = self.keys.get_mut(key as usize) {
            // Its windows' timers go too (a key evicted on probation may
            // hold open windows): a timer must name a live key.
            let lateness = self.lateness;
            if matches!(self.kind, WindowKind::Session { .. }) && !k.windows.is_empty() {
                // A session's earlier fire times stay registered as it
                // grows (until the watermark passes them): look everywhere.
                for map in [&mut self.timers, &mut self.purges] {
                    map.retain(|_, v| {
                        v.retain(|&x| x != key);
                        !v.is_empty()
                    });
                }
            }
            for w in &k.windows {
                for (map, at) in [
                    (&mut self.timers, w.fire_at()),
                    (&mut self.purges, w.fire_at().saturating_add(lateness)),
                ] {
                    if let Some(v) = map.get_mut(&at) {
                        v.retain(|&x| x != key);
                        if v.is_empty() {
                            map.remove(&at);
                        }
                    }
                }
            }
            *k = KeyState::default();
            self.reset_next_timer();
        }
        if self.pending.iter().any(|p| p.0.key == key) {
            self.pending.retain(|p| p.0.key != key);
        }
        self.kpending.remove_key(key);
    }

    /// Estimated bytes of one key's state at most, for the state budget:
    /// the windows a key keeps open at once with a bound of `bound`, their
    /// sketches, and the chained detector.
    pub(crate) fn key_cost(spec: &WindowSpec, bound: i64) -> usize {
        use core::mem::size_of;
        let ceil = |a: i64, b: i64| (a.saturating_add(b - 1) / b).max(0) as usize;
        let hold = bound.saturating_add(spec.allowed_lateness);
        let open = match spec.kind {
            WindowKind::Tumbling { size } => 1 + ceil(hold, size),
            WindowKind::Sliding { size, slide } => ceil(size, slide) + ceil(hold, slide),
            WindowKind::Cumulate { size, step } => ceil(size, step) * (1 + ceil(hold, size)),
            WindowKind::Session { .. } => 2,
            WindowKind::Count { .. } => 1,
        }
        .min(4096);
        let sketch = spec
            .aggregates
            .iter()
            .any(|a| matches!(a, AggKind::Percentile(_)));
        // A distinct set at its bound: the most it holds.
        let distinct = spec.aggregates.contains(&AggKind::CountDistinct);
        let per_window = size_of::<OpenWindow>()
            + if sketch {
                size_of::<DefaultSketch>()
            } else {
                0
            }
            + if distinct {
                size_of::<DistinctSet>() + DISTINCT_CAP * size_of::<u64>()
            } else {
                0
            };
        let det = spec
            .detect
            .as_ref()
            .map_or(0, |d| crate::detect::state_bytes(&d.detector));
        size_of::<KeyState>() + open * per_window + det
    }

    fn register(&mut self, at: i64, key: KeyId) {
        if self.per_key {
            return;
        }
        let spare = &mut self.spare;
        self.timers
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(key);
        if at < self.next_timer {
            self.next_timer = at;
        }
    }

    fn register_purge(&mut self, at: i64, key: KeyId) {
        if self.per_key {
            return;
        }
        self.purges.entry(at).or_default().push(key);
        if at < self.next_timer {
            self.next_timer = at;
        }
    }

    /// Registers the fire and purge timers of every open window, in key
    /// order: after a restore of windows kept under per-key watermarks.
    pub(crate) fn rebuild_timers(&mut self) {
        self.timers.clear();
        self.purges.clear();
        if let WindowKind::Count { .. } = self.kind {
            return;
        }
        let lateness = self.lateness;
        for k in 0..self.keys.len() {
            let at: Vec<(bool, i64)> = self.keys[k]
                .windows
                .iter()
                .map(|w| (w.emitted, w.fire_at()))
                .collect();
            for (emitted, fire_at) in at {
                if !emitted {
                    self.register(fire_at, k as KeyId);
                }
                if emitted || lateness > 0 {
                    self.register_purge(fire_at.saturating_add(lateness), k as KeyId);
                }
            }
        }
    }

    /// Recomputes `next_timer` from both maps.
    pub(crate) fn reset_next_timer(&mut self) {
        let f = self.timers.first_key_value().map_or(i64::MAX, |(t, _)| *t);
        let p = self.purges.first_key_value().map_or(i64::MAX, |(t, _)| *t);
        self.next_timer = f.min(p);
    }

    /// Routes one accepted sample; `wm` is the watermark before it.
    #[inline(always)]
    pub(crate) fn on_sample(
        &mut self,
        key: KeyId,
        ts: i64,
        x: f64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) {
        self.stats.routed += 1;
        if let WindowKind::Tumbling { .. } = self.kind {
            // Most samples fall into the key's newest window: if it holds
            // ts and has not fired, it is the one (tumbling windows do not
            // overlap), and an unfired window cannot be late.
            if let Some(w) = self
                .keys
                .get_mut(key as usize)
                .and_then(|k| k.windows.last_mut())
            {
                if ts >= w.start && ts < w.end && !w.emitted {
                    w.add(x, self.tier);
                    self.stats.on_time += 1;
                    return;
                }
            }
        }
        self.place(key, ts, x, wm, out);
    }

    /// Every other sample: out of line, so the common case above stays
    /// small enough to inline into the engine's per-sample path.
    #[inline(never)]
    fn place(&mut self, key: KeyId, ts: i64, x: f64, wm: i64, out: &mut VecDeque<Output>) {
        match self.kind {
            WindowKind::Tumbling { size } => {
                let start = self.align_down(ts, size);
                self.add(key, start, start.saturating_add(size), ts, x, wm, out);
            }
            WindowKind::Sliding { size, slide } => {
                let last = self.align_down(ts, slide);
                // The first multiple of slide above ts - size: the earliest
                // window that still contains ts.
                let mut start = self
                    .align_down(ts.saturating_sub(size), slide)
                    .saturating_add(slide)
                    .min(last);
                let mut any_on_time = false;
                let mut all_late = true;
                while start <= last {
                    match self.add_inner(key, start, start.saturating_add(size), x, wm, out) {
                        Placed::OnTime => {
                            any_on_time = true;
                            all_late = false;
                        }
                        Placed::Updated => all_late = false,
                        Placed::Late => {}
                    }
                    match start.checked_add(slide) {
                        Some(s) => start = s,
                        None => break,
                    }
                }
                self.count_placement(any_on_time, all_late, key, ts, x, out);
            }
            WindowKind::Cumulate { step, size } => self.cumulate(key, ts, x, step, size, wm, out),
            WindowKind::Session { gap } => self.session(key, ts, x, gap, wm, out),
            WindowKind::Count { .. } => {
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
    }

    /// Every cumulating window that holds `ts`: those of its `size`-aligned
    /// period that end after it.
    #[allow(clippy::too_many_arguments)]
    fn cumulate(
        &mut self,
        key: KeyId,
        ts: i64,
        x: f64,
        step: i64,
        size: i64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) {
        let start = self.align_down(ts, size);
        let last = start.saturating_add(size);
        let mut end = start.saturating_add((ts - start) / step * step + step);
        let (mut any_on_time, mut all_late) = (false, true);
        while end <= last {
            match self.add_inner(key, start, end, x, wm, out) {
                Placed::OnTime => {
                    any_on_time = true;
                    all_late = false;
                }
                Placed::Updated => all_late = false,
                Placed::Late => {}
            }
            match end.checked_add(step) {
                Some(e) => end = e,
                None => break,
            }
        }
        self.count_placement(any_on_time, all_late, key, ts, x, out);
    }

    /// `ts` rounded down to a multiple of `step` (the divisor in `align`).
    #[inline(always)]
    fn align_down(&self, ts: i64, step: i64) -> i64 {
        match &self.align {
            Some(d) if ts >= 0 => ts - (ts as u64 % *d) as i64,
            _ => ts.saturating_sub(ts.rem_euclid(step)),
        }
    }

    #[inline(always)]
    fn count_placement(
        &mut self,
        on_time: bool,
        late: bool,
        key: KeyId,
        ts: i64,
        x: f64,
        out: &mut VecDeque<Output>,
    ) {
        if late {
            self.stats.late += 1;
            out.push_back(Output::Late(LateSample {
                op: self.op,
                key,
                ts,
                value: x,
            }));
        } else if on_time {
            self.stats.on_time += 1;
        } else {
            self.stats.updated += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn add(
        &mut self,
        key: KeyId,
        start: i64,
        end: i64,
        ts: i64,
        x: f64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) {
        let placed = self.add_inner(key, start, end, x, wm, out);
        self.count_placement(
            placed == Placed::OnTime,
            placed == Placed::Late,
            key,
            ts,
            x,
            out,
        );
    }

    #[inline(always)]
    fn add_inner(
        &mut self,
        key: KeyId,
        start: i64,
        end: i64,
        x: f64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) -> Placed {
        let fire_at = end - 1;
        if wm >= fire_at.saturating_add(self.lateness) {
            return Placed::Late;
        }
        let tier = self.tier;
        if let Some(ks) = self.keys.get_mut(key as usize) {
            // Cumulating windows share a start: match the end too.
            if let Some(i) = ks
                .windows
                .iter()
                .position(|w| w.start == start && w.end == end)
            {
                let w = &mut ks.windows[i];
                w.add(x, tier);
                if !w.emitted {
                    return Placed::OnTime;
                }
                self.emit_at(key, i, Emission::Update, out);
                return Placed::Updated;
            }
        }
        self.open_window(key, start, end, x, wm, out)
    }

    #[inline(never)]
    fn open_window(
        &mut self,
        key: KeyId,
        start: i64,
        end: i64,
        x: f64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) -> Placed {
        let fire_at = end - 1;
        let purge_at = fire_at.saturating_add(self.lateness);
        let fired = wm >= fire_at;
        let mut w = OpenWindow::new(start, end, fired, self.sketch, self.distinct);
        w.add(x, self.tier);
        let windows = &mut self.key_state(key).windows;
        if windows.capacity() == 0 {
            // A key of a tumbling window holds one or two (the next opens
            // before the last fires); a first `push` would make room for
            // four, ~200 bytes a key unused (0.2 MiB with 1,000 sensors).
            windows.reserve_exact(2);
        }
        windows.push(w);
        if fired {
            // A late firing of a window that had no data when it was due:
            // emitted from where it is kept (no copy of it, or its sketch).
            let i = windows.len() - 1;
            self.emit_at(key, i, Emission::Update, out);
        } else {
            self.register(fire_at, key);
        }
        if purge_at != fire_at {
            self.register_purge(purge_at, key);
        }
        if fired {
            Placed::Updated
        } else {
            Placed::OnTime
        }
    }

    fn session(
        &mut self,
        key: KeyId,
        ts: i64,
        x: f64,
        gap: i64,
        wm: i64,
        out: &mut VecDeque<Output>,
    ) {
        let end = ts.saturating_add(gap);
        let (tier, sketch, lateness) = (self.tier, self.sketch, self.lateness);
        let distinct = self.distinct;
        let ks = self.key_state(key);
        // A sample joining a retained session updates it; otherwise its own
        // session decides whether it is late. Sessions that touch merge (a
        // sample exactly `gap` after the last one joins it), as Flink's
        // `TimeWindow::intersects` has it.
        let joins = ks.windows.iter().any(|w| w.start <= end && ts <= w.end);
        if !joins && wm >= end.saturating_sub(1).saturating_add(lateness) {
            self.stats.late += 1;
            out.push_back(Output::Late(LateSample {
                op: self.op,
                key,
                ts,
                value: x,
            }));
            return;
        }
        let mut merged = OpenWindow::new(ts, end, false, sketch, distinct);
        merged.add(x, tier);
        let mut i = 0;
        while i < ks.windows.len() {
            let w = &ks.windows[i];
            if w.start <= merged.end && merged.start <= w.end {
                let w = ks.windows.swap_remove(i);
                merged.start = merged.start.min(w.start);
                merged.end = merged.end.max(w.end);
                merged.emitted |= w.emitted;
                merged.superseded |= w.superseded;
                // Merge into the older session's state, so the order of
                // summation is the order of arrival.
                let mut older = w;
                older.merge(&merged);
                merged.m = older.m;
                merged.nulls = older.nulls;
                merged.q = older.q;
                merged.d = older.d;
            } else {
                i += 1;
            }
        }
        let fire_at = merged.fire_at();
        // Any part already emitted: what comes next replaces it.
        merged.superseded |= merged.emitted;
        let due = wm >= fire_at;
        merged.emitted = due;
        let as_update = merged.superseded || due;
        ks.windows.push(merged);
        ks.windows.sort_unstable_by_key(|w| w.start);
        let at = ks
            .windows
            .iter()
            .position(|w| w.fire_at() == fire_at)
            .unwrap_or(0);
        if as_update {
            self.stats.updated += 1;
        } else {
            self.stats.on_time += 1;
        }
        if due {
            // Due already (first seen late, or bridged into a due session):
            // emitted at once, as an update.
            self.emit_at(key, at, Emission::Update, out);
        } else {
            self.register(fire_at, key);
        }
        if lateness > 0 || due {
            self.register_purge(fire_at.saturating_add(lateness), key);
        }
    }

    /// Fires and purges everything due at or before `wm`.
    pub(crate) fn advance(&mut self, wm: i64, out: &mut VecDeque<Output>) {
        while self.timers.first_key_value().is_some_and(|(t, _)| *t <= wm) {
            let Some((t, mut keys)) = self.timers.pop_first() else {
                break;
            };
            for &key in &keys {
                self.on_timer(key, t, out);
            }
            keys.clear();
            self.spare.push(keys);
        }
        while self.purges.first_key_value().is_some_and(|(t, _)| *t <= wm) {
            let Some((t, keys)) = self.purges.pop_first() else {
                break;
            };
            let lateness = self.lateness;
            for key in keys {
                if let Some(ks) = self.keys.get_mut(key as usize) {
                    ks.windows
                        .retain(|w| !(w.emitted && w.fire_at().saturating_add(lateness) <= t));
                }
            }
        }
        self.reset_next_timer();
        if let WindowKind::Count { size } = self.kind {
            while let Some(Reverse(p)) = self.pending.peek().copied() {
                if p.ts > wm {
                    break;
                }
                self.pending.pop();
                self.count_push(p, size, out);
            }
        }
    }

    fn count_push(&mut self, p: Pending, size: u64, out: &mut VecDeque<Output>) {
        let tier = self.tier;
        let (sketch, distinct) = (self.sketch, self.distinct);
        let ks = self.key_state(p.key);
        if ks.windows.is_empty() {
            ks.windows
                .push(OpenWindow::new(p.ts, p.ts, false, sketch, distinct));
        }
        let w = &mut ks.windows[0];
        w.add(f64::from_bits(p.bits), tier);
        w.end = p.ts.saturating_add(1);
        if w.m.n >= size {
            let w = ks.windows.pop().expect("count window present");
            self.emit(p.key, &w, Emission::OnTime, out);
        }
    }

    /// Per-key watermarks: `key`'s watermark reached `wm`. Fires its due
    /// windows (by end), purges those past their allowed lateness, and
    /// counts its waiting samples (count windows).
    pub(crate) fn advance_key(&mut self, key: KeyId, wm: i64, out: &mut VecDeque<Output>) {
        if let WindowKind::Count { size } = self.kind {
            for p in self.kpending.take_upto(key, wm) {
                self.count_push(p, size, out);
            }
            return;
        }
        let lateness = self.lateness;
        let Some(ks) = self.keys.get_mut(key as usize) else {
            return;
        };
        if ks.windows.iter().any(|w| !w.emitted && w.fire_at() <= wm) {
            let mut due: Vec<usize> = (0..ks.windows.len())
                .filter(|&i| !ks.windows[i].emitted && ks.windows[i].fire_at() <= wm)
                .collect();
            due.sort_unstable_by_key(|&i| (ks.windows[i].end, ks.windows[i].start));
            for i in due {
                let w = &mut self.keys[key as usize].windows[i];
                w.emitted = true;
                let e = if w.superseded {
                    Emission::Update
                } else {
                    Emission::OnTime
                };
                self.emit_at(key, i, e, out);
            }
        }
        self.keys[key as usize]
            .windows
            .retain(|w| !(w.emitted && w.fire_at().saturating_add(lateness) <= wm));
    }

    /// End of input: everything fires, count windows emit what they hold.
    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        if self.per_key {
            if let WindowKind::Count { size } = self.kind {
                for p in self.kpending.take_all() {
                    self.count_push(p, size, out);
                }
            } else {
                for key in 0..self.keys.len() {
                    self.advance_key(key as KeyId, i64::MAX, out);
                }
            }
        }
        self.advance(i64::MAX, out);
        if let WindowKind::Count { .. } = self.kind {
            for key in 0..self.keys.len() {
                if let Some(w) = self.keys[key].windows.pop() {
                    self.emit(key as KeyId, &w, Emission::OnTime, out);
                }
            }
        }
    }

    fn on_timer(&mut self, key: KeyId, t: i64, out: &mut VecDeque<Output>) {
        let lateness = self.lateness;
        let Some(ks) = self.keys.get_mut(key as usize) else {
            return;
        };
        let mut due: heapless::Vec<usize, 64> = heapless::Vec::new();
        for (i, w) in ks.windows.iter().enumerate() {
            if !w.emitted && w.fire_at() == t {
                let _ = due.push(i);
            }
        }
        let emission = |w: &OpenWindow| {
            if w.superseded {
                Emission::Update
            } else {
                Emission::OnTime
            }
        };
        if due.len() == 1 && lateness == 0 {
            // The common case: one window due, gone once fired.
            let w = ks.windows.remove(due[0]);
            let parts = Parts {
                op: self.op,
                aggs: &self.aggs,
                detect: &self.detect,
                stats: &mut self.stats,
            };
            parts.emit(key, &w, &mut ks.detector, emission(&w), out);
            return;
        }
        // Fire the windows due at t (in order of end), then purge.
        due.sort_unstable_by_key(|&i| ks.windows[i].end);
        for &i in &due {
            let w = &mut self.keys[key as usize].windows[i];
            w.emitted = true;
            let e = emission(w);
            self.emit_at(key, i, e, out);
        }
        if lateness == 0 {
            let ks = &mut self.keys[key as usize];
            ks.windows.retain(|w| !(w.emitted && w.fire_at() <= t));
        }
    }

    /// Emits a window that is not (or no longer) in the key's state.
    fn emit(&mut self, key: KeyId, w: &OpenWindow, emission: Emission, out: &mut VecDeque<Output>) {
        let k = key as usize;
        if k >= self.keys.len() {
            self.keys.resize_with(k + 1, KeyState::default);
        }
        let parts = Parts {
            op: self.op,
            aggs: &self.aggs,
            detect: &self.detect,
            stats: &mut self.stats,
        };
        parts.emit(key, w, &mut self.keys[k].detector, emission, out);
    }

    /// Emits window `i` of `key` in place (no copy of the window).
    fn emit_at(&mut self, key: KeyId, i: usize, emission: Emission, out: &mut VecDeque<Output>) {
        let ks = &mut self.keys[key as usize];
        let parts = Parts {
            op: self.op,
            aggs: &self.aggs,
            detect: &self.detect,
            stats: &mut self.stats,
        };
        parts.emit(key, &ks.windows[i], &mut ks.detector, emission, out);
    }
}

/// The parts of a window operator that emitting a window needs, borrowed
/// apart from the key state that holds the window.
struct Parts<'a> {
    op: u16,
    aggs: &'a [AggKind],
    detect: &'a Option<(AggKind, DetectorSpec)>,
    stats: &'a mut OpStats,
}

impl Parts<'_> {
    #[inline]
    fn emit(
        self,
        key: KeyId,
        w: &OpenWindow,
        detector: &mut Option<Box<DetectorState>>,
        emission: Emission,
        out: &mut VecDeque<Output>,
    ) {
        let mut values = AggValues::default();
        for &a in self.aggs {
            values.push(w.value(a));
        }
        if w.d.as_ref().is_some_and(|d| d.overflowed()) {
            self.stats.distinct_overflow += 1;
        }
        let mut anomaly = None;
        if emission == Emission::OnTime {
            self.stats.fired += 1;
            if let Some((on, spec)) = self.detect {
                let det = detector.get_or_insert_with(|| Box::new(spec.new_state()));
                anomaly = det.update(w.start, w.value(*on));
                if matches!(anomaly, Some(Verdict { flag: true, .. })) {
                    self.stats.flagged += 1;
                }
            }
        } else {
            self.stats.updates += 1;
        }
        out.push_back(Output::Window(WindowResult {
            op: self.op,
            key,
            start: w.start,
            end: w.end,
            emission,
            values,
            anomaly,
        }));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    OnTime,
    Updated,
    Late,
}
