//! `OVER` aggregations: an aggregate over the rows before each row.
//!
//! ```sql
//! SELECT sensor, rowtime, v,
//!        AVG(v) OVER w AS avg_10s,
//!        v - MIN(v) OVER w AS above_min
//! FROM s
//! WINDOW w AS (PARTITION BY sensor ORDER BY rowtime
//!              RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)
//! ```
//!
//! As Flink's over aggregation (its `RowTime*PrecedingFunction`s): every
//! input row gives one result row, once the watermark passes its time, in
//! time order per partition (ties in the order they came); a row behind
//! the watermark is late and dropped. The frame is the partition's rows
//! `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (the row and the `n` before
//! it), `RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW` (the rows at
//! most that much older, the row's peers, rows of the same time, included)
//! or `UNBOUNDED PRECEDING` (all rows so far); without a frame, Flink's
//! default `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`. Every
//! `OVER` aggregate of a query uses the same window, as Flink requires.
//!
//! The engine's operator is [`OverOp`]: keyed by the `PARTITION BY`
//! columns, it holds the rows waiting for the watermark and the frame, and
//! emits each row as a window result `[ts, ts + 1)` whose values are the
//! row's fields, then each aggregate, then the row's place among its peers
//! (which names it: two rows of one time are two results). `weir replay`
//! and `weir run` make the query's rows from those results.

use std::collections::VecDeque;

use sqlparser::ast::{self, Expr as SExpr, NamedWindowExpr, WindowFrameBound, WindowFrameUnits};
use sqlparser::tokenizer::Location;
use weir_core::agg::{AggKind, Moments, Tier};
use weir_core::keys::KeyId;
use weir_core::process::{Context, KeyedProcess, TimeDomain};

use super::ddl::Table;
use super::plan::{ident_name, loc_of};
use super::{Err, SqlError};

/// The frame of an `OVER` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW`, in ms.
    Range(i64),
    /// `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`.
    RowsUnbounded,
    /// `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` (the default).
    RangeUnbounded,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Rows(n) => write!(f, "ROWS BETWEEN {n} PRECEDING AND CURRENT ROW"),
            Frame::Range(ms) => write!(
                f,
                "RANGE BETWEEN INTERVAL '{ms}' MILLISECOND PRECEDING AND CURRENT ROW"
            ),
            Frame::RowsUnbounded => f.write_str("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
            Frame::RangeUnbounded => {
                f.write_str("RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW")
            }
        }
    }
}

/// An `OVER` window as a query gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The `PARTITION BY` columns (the table's STRING or BOOLEAN columns).
    pub partition: Vec<usize>,
    /// The frame.
    pub frame: Frame,
}

/// The window of `over` (inline, or named in the query's `WINDOW` clause,
/// `named`), over `table`, whose time attribute it must be ordered by.
pub(super) fn window_of(
    over: &ast::WindowType,
    named: &[ast::NamedWindowDefinition],
    table: &Table,
    at: Location,
) -> Err<Window> {
    let mut spec = match over {
        ast::WindowType::WindowSpec(s) => s,
        ast::WindowType::NamedWindow(id) => lookup(id, named, at)?,
    };
    // `WINDOW w2 AS w1`: at most a few steps.
    for _ in 0..8 {
        match &spec.window_name {
            Some(id) if spec.partition_by.is_empty() && spec.order_by.is_empty() => {
                spec = lookup(id, named, at)?
            }
            _ => break,
        }
    }
    if spec.window_name.is_some() {
        return Err(SqlError::unsupported(
            at,
            "a window that refines a named window",
            "one WINDOW w AS (PARTITION BY … ORDER BY rowtime …) and OVER w",
        ));
    }
    let rt = table.rowtime.as_ref().expect("checked by the caller");
    let mut partition = Vec::new();
    for p in &spec.partition_by {
        let ci = ident_name(p).and_then(|id| table.column(&id.value));
        match ci {
            Some(c) if !table.columns[c].ty.is_numeric() => {
                if !partition.contains(&c) {
                    partition.push(c)
                }
            }
            Some(c) => {
                return Err(SqlError::unsupported(
                    loc_of(p, at),
                    &format!(
                        "PARTITION BY the numeric column `{}`",
                        table.columns[c].name
                    ),
                    "PARTITION BY a STRING or BOOLEAN column (declare a device number as STRING)",
                ))
            }
            None => {
                return Err(SqlError::at(
                    loc_of(p, at),
                    format!("PARTITION BY `{p}`: not a column of `{}`", table.name),
                    "PARTITION BY one or more of the table's STRING columns",
                ))
            }
        }
    }
    let by_time = match &spec.order_by[..] {
        [o] => {
            ident_name(&o.expr).is_some_and(|n| n.value.eq_ignore_ascii_case(&rt.name))
                && matches!(o.options.sort, None | Some(ast::OrderBySort::Asc))
        }
        _ => false,
    };
    if !by_time {
        return Err(SqlError::at(
            spec.order_by.first().map_or(at, |o| loc_of(&o.expr, at)),
            format!(
                "an OVER window must be ordered by the time attribute, ascending: ORDER BY {}",
                rt.name
            ),
            format!("write OVER (PARTITION BY … ORDER BY {} …)", rt.name),
        ));
    }
    let frame = match &spec.window_frame {
        None => Frame::RangeUnbounded,
        Some(f) => frame_of(f, at)?,
    };
    Ok(Window { partition, frame })
}

fn lookup<'a>(
    id: &ast::Ident,
    named: &'a [ast::NamedWindowDefinition],
    at: Location,
) -> Err<&'a ast::WindowSpec> {
    let def = named
        .iter()
        .find(|d| d.0.value.eq_ignore_ascii_case(&id.value));
    match def.map(|d| &d.1) {
        Some(NamedWindowExpr::WindowSpec(s)) => Ok(s),
        Some(NamedWindowExpr::NamedWindow(other)) => lookup(other, named, at),
        None => Err(SqlError::at(
            super::plan::ident_loc(id, at),
            format!("no window named `{}`", id.value),
            format!(
                "define it after FROM and WHERE: WINDOW {} AS (PARTITION BY … ORDER BY rowtime …)",
                id.value
            ),
        )),
    }
}

fn frame_of(f: &ast::WindowFrame, at: Location) -> Err<Frame> {
    let hint = "ROWS BETWEEN 10 PRECEDING AND CURRENT ROW, or RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW";
    if !matches!(f.end_bound, None | Some(WindowFrameBound::CurrentRow)) {
        return Err(SqlError::unsupported(
            at,
            "an OVER frame that does not end at the current row (FOLLOWING, or n PRECEDING as its end)",
            hint,
        ));
    }
    let rows = match f.units {
        WindowFrameUnits::Rows => true,
        WindowFrameUnits::Range => false,
        WindowFrameUnits::Groups => {
            return Err(SqlError::unsupported(at, "GROUPS frames", hint));
        }
    };
    Ok(match (&f.start_bound, rows) {
        (WindowFrameBound::Preceding(None), true) => Frame::RowsUnbounded,
        (WindowFrameBound::Preceding(None), false) => Frame::RangeUnbounded,
        (WindowFrameBound::CurrentRow, true) => Frame::Rows(0),
        (WindowFrameBound::CurrentRow, false) => Frame::Range(0),
        (WindowFrameBound::Preceding(Some(e)), true) => {
            match super::plan::literal_count(e) {
                Some(n) => Frame::Rows(n),
                None => {
                    return Err(SqlError::at(
                        loc_of(&**e, at),
                        format!("ROWS … PRECEDING takes a whole number of rows, found `{e}`"),
                        "write ROWS BETWEEN 10 PRECEDING AND CURRENT ROW",
                    ))
                }
            }
        }
        (WindowFrameBound::Preceding(Some(e)), false) => match &**e {
            SExpr::Interval(iv) => {
                let ms = super::ddl::interval_ms(iv, loc_of(&**e, at))?;
                if ms < 0 {
                    return Err(SqlError::at(
                        loc_of(&**e, at),
                        "a RANGE frame's interval must not be negative",
                        "write RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW",
                    ));
                }
                Frame::Range(ms)
            }
            other => {
                return Err(SqlError::at(
                    loc_of(other, at),
                    format!("RANGE … PRECEDING over the time attribute takes an interval, found `{other}`"),
                    "write RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW, or ROWS BETWEEN n PRECEDING AND CURRENT ROW",
                ))
            }
        },
        (WindowFrameBound::Following(_), _) => {
            return Err(SqlError::unsupported(
                at,
                "an OVER frame that starts after the current row",
                hint,
            ));
        }
    })
}

/// The state type of [`OverOp`].
pub const OVER_STATE: &str = "weir/over/1";

/// What [`OverOp`] computes: the frame, the aggregates (kind and field;
/// `None`: `COUNT(*)`, every row) and how many of the sample's fields a
/// result carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OverPlan {
    /// The frame.
    pub frame: Frame,
    /// Each aggregate: its kind and the field it reads.
    pub aggs: Vec<(AggKind, Option<usize>)>,
    /// Each `LAG`: the field, the offset in rows, the value when there is
    /// no such row (NaN: NULL). A result carries them after the
    /// aggregates.
    pub lags: Vec<(usize, u64, f64)>,
    /// The sample's fields a result carries, first.
    pub fields: usize,
    /// Its state type: [`OVER_STATE`] and the plan, so that an update that
    /// changes the frame, the aggregates or the columns does not restore
    /// state laid out for another plan.
    pub state: String,
}

impl OverPlan {
    /// Where a result's values hold its aggregates, then its `LAG`s
    /// (after the sample's fields).
    pub fn results(&self) -> std::ops::Range<usize> {
        self.fields..self.place()
    }

    /// Where a result's values hold the row's place among its key's rows
    /// of that time (the last value).
    pub fn place(&self) -> usize {
        self.fields + self.aggs.len() + self.lags.len()
    }
}

/// One partition's rows (one key).
#[derive(Debug, Default, Clone, PartialEq)]
struct Part {
    /// Rows waiting for the watermark, in (time, arrival) order: (time,
    /// fields). (A sorted vector: rows mostly come in time order, so an
    /// insert lands at or near the end.)
    pending: Vec<(i64, Vec<f64>)>,
    /// A bounded frame's rows, in time order.
    frame: VecDeque<(i64, Vec<f64>)>,
    /// An unbounded frame's moments, per field, and its row count.
    acc: Vec<Moments>,
    rows: u64,
    /// The partition's last rows (as many as the largest `LAG` offset
    /// reaches), in order.
    history: VecDeque<Vec<f64>>,
}

/// The engine operator of an `OVER` aggregation (see the module's docs).
///
/// A partition's bounded state (its slot, the `LAG` history, an unbounded
/// frame's moments) is charged to its key from admission
/// ([`KeyedProcess::key_bytes`]); its rows (pending and a bounded
/// frame's) count in the keyed-state budget as they come
/// ([`KeyedProcess::state_bytes`]): when a row finds no room
/// ([`Context::state_room`]), its partition's oldest frame rows leave the
/// frame early (the aggregates then cover fewer rows than the frame says),
/// and with none to let go the row is dropped without a result; both are
/// counted and logged. A new key is refused once the rows fill the budget
/// (the engine's `KeyBudget` reject).
#[derive(Debug)]
pub struct OverOp {
    plan: OverPlan,
    /// Partitions by key, sorted (a key is added once, looked up often).
    parts: Vec<(KeyId, Part)>,
    /// How much of the moments the aggregates need.
    tier: Tier,
    /// How many of a partition's last rows `LAG` reads (0: none kept).
    history: u64,
    /// The estimated bytes of every partition's pending and frame rows
    /// ([`OverOp::part_bytes`]).
    bytes: usize,
    /// Frame rows let go early, and rows refused, for the state budget.
    let_go: u64,
    refused: u64,
}

impl OverOp {
    /// An operator computing `plan`.
    pub fn new(plan: OverPlan) -> Self {
        // The moments the aggregates read, and no more (M3 and M4 only
        // for KURTOSIS).
        let tier = plan
            .aggs
            .iter()
            .map(|a| a.0.tier())
            .max()
            .unwrap_or(Tier::Basic);
        let history = plan.lags.iter().map(|l| l.1 + 1).max().unwrap_or(0);
        OverOp {
            plan,
            parts: Vec::new(),
            tier,
            history,
            bytes: 0,
            let_go: 0,
            refused: 0,
        }
    }

    /// The estimated bytes of a row kept: its slot, its values and the
    /// allocator's header.
    fn row_bytes(&self) -> usize {
        std::mem::size_of::<(i64, Vec<f64>)>() + 16 + 8 * self.plan.fields
    }

    /// The estimated bytes of a partition's pending and frame rows.
    fn part_bytes(&self, p: &Part) -> usize {
        (p.pending.len() + p.frame.len()) * self.row_bytes()
    }

    /// Says (at 1, 2, 4, … times) that the state budget cut a frame short
    /// or refused a row.
    fn budget_full(&self, n: u64) {
        if n.is_power_of_two() {
            tracing::warn!(
                frame_rows_let_go = self.let_go,
                rows_refused = self.refused,
                "OVER ({}): the keyed-state budget is full: a partition's oldest frame rows \
                 leave its frame early (its aggregates cover fewer rows) and a row with no \
                 room is dropped without a result; raise SET 'weir.state.memory', shorten \
                 the frame or bound the keys",
                self.plan.frame
            );
        }
    }

    /// The aggregates over `rows` (a bounded frame) or the running moments.
    fn values_of(&self, part: &Part, out: &mut Vec<f64>) {
        let bounded = matches!(self.plan.frame, Frame::Rows(_) | Frame::Range(_));
        let mut per_field: Vec<(usize, Moments)> = Vec::new();
        for &(kind, field) in &self.plan.aggs {
            let Some(f) = field else {
                out.push(if bounded {
                    part.frame.len() as f64
                } else {
                    part.rows as f64
                });
                continue;
            };
            let m = if bounded {
                match per_field.iter().find(|p| p.0 == f) {
                    Some(p) => p.1,
                    None => {
                        let mut m = Moments::new();
                        for (_, row) in &part.frame {
                            match row.get(f) {
                                Some(x) if !x.is_nan() => m.push(*x, self.tier),
                                _ => {}
                            }
                        }
                        per_field.push((f, m));
                        m
                    }
                }
            } else {
                part.acc.get(f).copied().unwrap_or_default()
            };
            out.push(match kind {
                AggKind::Count | AggKind::Rows => m.n as f64,
                // Flink: NULL over no value (SUM too).
                _ if m.n == 0 => f64::NAN,
                k => m.get(k),
            });
        }
        // LAG: from the newest row added (under RANGE, the last of the
        // time's peers: they share it, as Flink's LAG over RANGE gives).
        for &(field, offset, default) in &self.plan.lags {
            let n = part.history.len() as u64;
            out.push(if offset < n {
                let row = &part.history[(n - 1 - offset) as usize];
                row.get(field).copied().unwrap_or(f64::NAN)
            } else {
                default
            });
        }
    }

    /// Keeps `row` in the partition's history for `LAG`.
    fn remember(&self, part: &mut Part, row: &[f64]) {
        if self.history == 0 {
            return;
        }
        part.history.push_back(row.to_vec());
        while part.history.len() as u64 > self.history {
            part.history.pop_front();
        }
    }

    /// Emits `rows` (peers of one time), the first `first` among its
    /// time's rows.
    /// The aggregates are the frame's, the same for every peer: computed
    /// once.
    fn emit(&self, ctx: &mut Context<'_>, part: &Part, rows: &[(i64, Vec<f64>)], first: usize) {
        let mut results = Vec::with_capacity(self.plan.aggs.len() + self.plan.lags.len());
        self.values_of(part, &mut results);
        let mut vals = Vec::with_capacity(self.plan.place() + 1);
        for (i, (ts, row)) in rows.iter().enumerate() {
            vals.clear();
            vals.extend((0..self.plan.fields).map(|f| row.get(f).copied().unwrap_or(f64::NAN)));
            vals.extend_from_slice(&results);
            vals.push((first + i) as f64);
            ctx.emit_window(*ts, ts.saturating_add(1), &vals, None);
        }
    }

    /// Adds `row` to an unbounded frame's moments.
    fn accumulate(&self, part: &mut Part, row: &[f64]) {
        if part.acc.len() < row.len() {
            part.acc.resize(row.len(), Moments::new());
        }
        for (m, &x) in part.acc.iter_mut().zip(row) {
            if !x.is_nan() {
                m.push(x, self.tier);
            }
        }
        part.rows += 1;
    }
}

impl KeyedProcess for OverOp {
    fn state_type(&self) -> &str {
        &self.plan.state
    }

    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, _value: f64) {
        let key = ctx.key();
        let found = self.parts.binary_search_by_key(&key, |p| p.0);
        // Within the state budget: the partition's oldest frame rows leave
        // early to make room; with none left, the row is refused.
        let need = self.row_bytes();
        let mut room = ctx.state_room();
        if let Ok(i) = found {
            // A frame row is the size of the row to come.
            while room < need && self.parts[i].1.frame.pop_front().is_some() {
                room = room.saturating_add(need);
                self.bytes -= need;
                self.let_go += 1;
                self.budget_full(self.let_go);
            }
        }
        if room < need {
            self.refused += 1;
            self.budget_full(self.refused);
            return;
        }
        let n = self.plan.fields.min(ctx.values().len());
        let row = ctx.values()[..n].to_vec();
        let i = found.unwrap_or_else(|i| {
            self.parts.insert(i, (key, Part::default()));
            i
        });
        self.bytes += need;
        let pending = &mut self.parts[i].1.pending;
        let at = pending.partition_point(|r| r.0 <= ts);
        pending.insert(at, (ts, row));
        ctx.register_event_timer(ts);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, domain: TimeDomain) {
        if domain != TimeDomain::EventTime {
            return;
        }
        let Ok(slot) = self.parts.binary_search_by_key(&ctx.key(), |p| p.0) else {
            return;
        };
        let mut part = std::mem::take(&mut self.parts[slot].1);
        self.bytes -= self.part_bytes(&part);
        // The rows the watermark passed, in time order (ties as they came).
        let n = part.pending.partition_point(|r| r.0 <= at);
        let due: Vec<(i64, Vec<f64>)> = part.pending.drain(..n).collect();
        let mut i = 0;
        while i < due.len() {
            let t = due[i].0;
            let j = i + due[i..].iter().take_while(|r| r.0 == t).count();
            let peers = &due[i..j];
            i = j;
            if self.plan.frame == Frame::RangeUnbounded
                || matches!(self.plan.frame, Frame::Range(_))
            {
                for r in peers {
                    self.remember(&mut part, &r.1);
                }
            }
            match self.plan.frame {
                Frame::RowsUnbounded => {
                    for (k, r) in peers.iter().enumerate() {
                        self.accumulate(&mut part, &r.1);
                        self.remember(&mut part, &r.1);
                        self.emit(ctx, &part, std::slice::from_ref(r), k);
                    }
                }
                Frame::RangeUnbounded => {
                    for r in peers {
                        self.accumulate(&mut part, &r.1);
                    }
                    self.emit(ctx, &part, peers, 0);
                }
                Frame::Rows(n) => {
                    for (k, r) in peers.iter().enumerate() {
                        self.remember(&mut part, &r.1);
                        part.frame.push_back(r.clone());
                        while part.frame.len() as u64 > n.saturating_add(1) {
                            part.frame.pop_front();
                        }
                        self.emit(ctx, &part, std::slice::from_ref(r), k);
                    }
                }
                Frame::Range(ms) => {
                    part.frame.extend(peers.iter().cloned());
                    let oldest = t.saturating_sub(ms);
                    while part.frame.front().is_some_and(|r| r.0 < oldest) {
                        part.frame.pop_front();
                    }
                    self.emit(ctx, &part, peers, 0);
                }
            }
        }
        // Rows of the same key for peers: the index restarts per time.
        self.bytes += self.part_bytes(&part);
        self.parts[slot].1 = part;
    }

    fn clear_key(&mut self, key: KeyId) {
        if let Ok(i) = self.parts.binary_search_by_key(&key, |p| p.0) {
            self.bytes -= self.part_bytes(&self.parts[i].1);
            self.parts.remove(i);
        }
    }

    fn key_bytes(&self) -> usize {
        let history =
            self.history as usize * (std::mem::size_of::<Vec<f64>>() + 16 + 8 * self.plan.fields);
        let moments = match self.plan.frame {
            Frame::RowsUnbounded | Frame::RangeUnbounded => {
                self.plan.fields * std::mem::size_of::<Moments>()
            }
            _ => 0,
        };
        std::mem::size_of::<(KeyId, Part)>() + history + moments
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn holds_state(&self, key: KeyId) -> bool {
        let i = self.parts.binary_search_by_key(&key, |p| p.0);
        i.ok().map(|i| &self.parts[i].1).is_some_and(|p| {
            !p.pending.is_empty() || !p.frame.is_empty() || p.rows > 0 || !p.history.is_empty()
        })
    }

    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        fn rows<'a>(
            e: &mut minicbor::Encoder<&mut Vec<u8>>,
            rows: impl ExactSizeIterator<Item = &'a (i64, Vec<f64>)>,
        ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.array(rows.len() as u64)?;
            for (ts, vals) in rows {
                e.array(1 + vals.len() as u64)?.i64(*ts)?;
                for v in vals {
                    e.f64(*v)?;
                }
            }
            Ok(())
        }
        e.map(self.parts.len() as u64)?;
        for (k, p) in self.parts.iter() {
            e.u32(*k)?.array(5)?;
            rows(e, p.pending.iter())?;
            rows(e, p.frame.iter())?;
            e.array(p.acc.len() as u64)?;
            for m in &p.acc {
                m.encode(e)?;
            }
            e.u64(p.rows)?;
            e.array(p.history.len() as u64)?;
            for row in &p.history {
                e.array(row.len() as u64)?;
                for v in row {
                    e.f64(*v)?;
                }
            }
        }
        Ok(())
    }

    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        fn rows(
            d: &mut minicbor::Decoder<'_>,
        ) -> Result<Vec<(i64, Vec<f64>)>, minicbor::decode::Error> {
            let n = d.array()?.unwrap_or(0);
            let mut out = Vec::new();
            for _ in 0..n {
                let len = d.array()?.unwrap_or(0);
                if len == 0 {
                    return Err(minicbor::decode::Error::message("over: a row without time"));
                }
                let ts = d.i64()?;
                let mut vals = Vec::new();
                for _ in 1..len {
                    vals.push(d.f64()?);
                }
                out.push((ts, vals));
            }
            Ok(out)
        }
        self.parts.clear();
        self.bytes = 0;
        let n = d.map()?.unwrap_or(0);
        for _ in 0..n {
            let k = d.u32()?;
            if d.array()? != Some(5) {
                return Err(minicbor::decode::Error::message(
                    "over: expected a partition of 5",
                ));
            }
            let pending = rows(d)?;
            if pending.windows(2).any(|w| w[0].0 > w[1].0) {
                return Err(minicbor::decode::Error::message(
                    "over: pending rows out of order",
                ));
            }
            let frame = rows(d)?.into();
            let mut acc = Vec::new();
            for _ in 0..d.array()?.unwrap_or(0) {
                acc.push(Moments::decode(d)?);
            }
            let rows = d.u64()?;
            let mut history = VecDeque::new();
            for _ in 0..d.array()?.unwrap_or(0) {
                let mut row = Vec::new();
                for _ in 0..d.array()?.unwrap_or(0) {
                    row.push(d.f64()?);
                }
                history.push_back(row);
            }
            if self.parts.last().is_some_and(|p| p.0 >= k) {
                return Err(minicbor::decode::Error::message("over: keys out of order"));
            }
            let part = Part {
                pending,
                frame,
                acc,
                rows,
                history,
            };
            self.bytes += self.part_bytes(&part);
            self.parts.push((k, part));
        }
        Ok(())
    }
}
