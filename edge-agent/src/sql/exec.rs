//! A SQL query's result rows, as CSV: a header of the result column names,
//! then one row per window that passes `HAVING`. Timestamps are written
//! `YYYY-MM-DD HH:MM:SS.sss` (UTC), BIGINT/INT as integers, DECIMAL(p, s)
//! with `s` decimals, DOUBLE with 6, BOOLEAN as `true`/`false`, NULL as
//! an empty field; strings are quoted when they hold `,`, `"` or a newline.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use weir_core::engine::{Engine, Reject};
use weir_core::expr::Value;
use weir_core::output::{Output, WindowResult};

use super::ddl::SqlType;
use super::plan::{Query, SortKey, END, KEY, START, WTIME};
use super::stage::Join;
use super::SqlPipeline;
use crate::numfmt::{push_f64, push_i64};
use crate::replay::{push_text, BadRow, Results, Summary, TextFields};
use crate::timefmt::format_datetime_ms;

/// [`Results`] for a compiled query.
pub struct Rows<'q> {
    q: &'q Query,
    sample: Vec<Value>,
    row: Vec<Value>,
    /// Joins the operators' results of one key and window into a row.
    join: Join,
    /// Every result column reads one value of the window row as it is and
    /// there is no HAVING: rows are written cell by cell from this plan,
    /// without building a row (`None`: rows are built and evaluated).
    direct: Option<Vec<Cell>>,
    /// The direct plan is the operator's window row as it is (key, bounds,
    /// values in order, flag): written as the TOML writer writes a window.
    plain: Option<Plain>,
    /// The last window bounds written by `plain`, and their text.
    span: ((i64, i64), Vec<u8>),
    /// The last timestamps formatted (windows of many keys share them).
    ts_cache: [(i64, [u8; 23]); 2],
    /// The slot of `ts_cache` the next new timestamp replaces.
    ts_next: usize,
    /// No filter and no computed fields: every sample is kept as it is.
    keep_all: bool,
    /// A grouping set's composite key ([`Query::groups`]).
    key: String,
    /// Where a kept sample goes (read once per sample: kept here rather
    /// than behind `q`).
    to: Feed<'q>,
    /// A query without `GROUP BY`: its rows written since the last
    /// [`Results::drain`], and how many.
    pending: (Vec<u8>, u64),
    /// Rows inside a window Top-N ([`super::rows::PerRow::drop_late`]):
    /// the newest time seen, and the rows left out as late since the last
    /// drain.
    newest: i64,
    late: u64,
    /// DOUBLEs as shortest round-trip decimals, not 6 decimals
    /// ([`Rows::exact`]).
    exact: bool,
}

impl<'q> Rows<'q> {
    /// Result rows of `q`.
    pub fn new(q: &'q Query) -> Self {
        let direct =
            if q.having.is_none() && q.groups.is_none() && q.post.is_empty() && q.per_row.is_none()
            {
                q.columns.iter().map(|c| Cell::of(q, c)).collect()
            } else {
                None
            };
        let plain = direct.as_deref().and_then(|c| Plain::of(q, c));
        Rows {
            q,
            sample: Vec::new(),
            row: Vec::new(),
            join: Join::default(),
            direct,
            plain,
            span: ((i64::MIN, i64::MIN), Vec::new()),
            ts_cache: [(i64::MIN, [0; 23]); 2],
            ts_next: 0,
            keep_all: !q.filters_before_engine(),
            key: String::new(),
            to: match (&q.per_row, &q.groups) {
                (Some(r), _) if r.over.is_none() => Feed::Rows(r),
                (_, Some(g)) => Feed::Groups(g),
                _ => Feed::Engine,
            },
            pending: (Vec::new(), 0),
            newest: i64::MIN,
            late: 0,
            exact: false,
        }
    }

    /// Writes DOUBLEs as shortest round-trip decimals, which read back as
    /// the same numbers: a cascade's first query, whose rows are the
    /// second's input.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self.direct = None;
        self.plain = None;
        self
    }

    /// The CSV header line.
    pub fn header(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, c) in self.q.columns.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_text(&mut b, &c.name);
        }
        b.push(b'\n');
        b
    }

    /// Writes `ts` as `YYYY-MM-DD HH:MM:SS.sss` through a small cache: a
    /// window's start and end, which take turns in the slots (a slot by
    /// parity would hold only one of two even bounds).
    #[inline]
    fn push_ts(&mut self, b: &mut Vec<u8>, ts: i64) {
        let slot = if self.ts_cache[0].0 == ts {
            0
        } else if self.ts_cache[1].0 == ts {
            1
        } else {
            let slot = self.ts_next;
            self.ts_next ^= 1;
            self.ts_cache[slot] = (ts, ts_bytes(ts));
            slot
        };
        b.extend_from_slice(&self.ts_cache[slot].1);
    }

    fn emit(
        &mut self,
        key: &str,
        w: &WindowResult,
        parts: &[(&[f64], bool)],
        sum: &mut Summary,
        b: &mut Vec<u8>,
    ) {
        let q = self.q;
        for &op in &q.flags {
            sum.flagged += parts[op].1 as u64;
        }
        if let Some(p) = self.plain {
            sum.windows += 1;
            self.emit_plain(p, key, w, parts[p.op], b);
            return;
        }
        // Taken out for the loop, so that `push_ts` can borrow the rest.
        if let Some(cells) = self.direct.take() {
            sum.windows += 1;
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                match *cell {
                    Cell::Key => push_text(b, key),
                    Cell::Start => self.push_ts(b, w.start),
                    Cell::End => self.push_ts(b, w.end),
                    Cell::WindowTime => self.push_ts(b, w.end - 1),
                    Cell::Float(op, v) => match parts[op].0.get(v) {
                        Some(&x) if !x.is_nan() => push_f64(b, x),
                        _ => {}
                    },
                    Cell::Value(op, v, ty) => match parts[op].0.get(v) {
                        Some(&x) if !x.is_nan() => push_value(b, &Value::Num(x), ty),
                        _ => {}
                    },
                    Cell::Flag(op) => {
                        b.extend_from_slice(if parts[op].1 { b"true" } else { b"false" })
                    }
                    Cell::Empty => {}
                }
            }
            self.direct = Some(cells);
            b.push(b'\n');
            return;
        }
        let mut row = std::mem::take(&mut self.row);
        q.window_row(key, w.start, w.end, parts, &mut row);
        if q.passes(&row) {
            sum.windows += 1;
            self.write_row(&row, b);
        }
        self.row = row;
    }

    /// Writes the result columns over `row` as one CSV line.
    fn write_row(&mut self, row: &[Value], b: &mut Vec<u8>) {
        for (i, c) in self.q.columns.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            match c.expr.eval(row) {
                Value::Ts(t) => self.push_ts(b, t),
                Value::Num(x) if self.exact && c.ty == SqlType::Double && x.is_finite() => {
                    b.extend_from_slice(x.to_string().as_bytes())
                }
                v => push_value(b, &v, c.ty),
            }
        }
        b.push(b'\n');
    }

    /// A query without `GROUP BY`: the kept sample (in `self.sample`, at
    /// `ts`) as a result row, once per window it falls in, into
    /// `self.pending`.
    #[cold]
    #[inline(never)]
    fn row_out(&mut self, r: &super::rows::PerRow, ts: i64) {
        let mut row = std::mem::take(&mut self.sample);
        let mut out = std::mem::take(&mut self.pending.0);
        let n = row.len();
        let mut written = 0;
        let wm = match r.drop_late {
            Some(delay) if self.newest != i64::MIN => {
                self.newest.saturating_sub(delay).saturating_sub(1)
            }
            _ => i64::MIN,
        };
        let mut late = 0;
        r.each_window(ts, |w| {
            row.truncate(n);
            if w.is_some_and(|(_, end)| end.saturating_sub(1) <= wm) {
                late += 1;
                return;
            }
            if let Some((start, end)) = w {
                row.extend([Value::Ts(start), Value::Ts(end), Value::Ts(end - 1)]);
            }
            if r.filter.as_ref().is_none_or(|f| f.test(&row)) {
                written += 1;
                self.write_row(&row, &mut out);
            }
        });
        row.truncate(n);
        self.sample = row;
        self.pending.0 = out;
        self.pending.1 += written;
        self.newest = self.newest.max(ts);
        // A row late for every window it falls in counts once.
        self.late += (late > 0 && written == 0) as u64;
    }
}

impl Rows<'_> {
    /// A row of an `OVER` aggregation from its operator's result `w`
    /// ([`super::over::OverOp`]): the sample row `[key, ts, fields…, key
    /// columns…]` followed by the aggregates.
    fn over_out(
        &mut self,
        over: &super::over::OverPlan,
        key: &str,
        w: &WindowResult,
        sum: &mut Summary,
        b: &mut Vec<u8>,
    ) {
        let mut row = std::mem::take(&mut self.row);
        over_row(self.q, over, key, w, &mut row);
        sum.windows += 1;
        self.write_row(&row, b);
        self.row = row;
    }
}

/// The row an `OVER` aggregation's result `w` for `key` stands for: `[key,
/// ts, fields…, key columns…, aggregates…]` (what the query's columns
/// read), into `row`. `weir replay` and `weir run` both make it here.
pub fn over_row(
    q: &Query,
    over: &super::over::OverPlan,
    key: &str,
    w: &WindowResult,
    row: &mut Vec<Value>,
) {
    let num = |i: usize| match w.values.as_slice().get(i) {
        Some(x) if !x.is_nan() => Value::Num(*x),
        _ => Value::Null,
    };
    row.clear();
    row.push(Value::Str(key.to_string()));
    row.push(Value::Ts(w.start));
    row.extend((0..q.columns_in).map(num));
    if q.groups.is_some() {
        row.extend(
            super::groups::values(key)
                .take(q.texts)
                .map(|v| v.map_or(Value::Null, |s| Value::Str(s.into_owned()))),
        );
    }
    row.extend(over.results().map(num));
}

/// Where [`Rows`] sends a kept sample.
#[derive(Clone, Copy)]
enum Feed<'q> {
    /// Into the engine, under its key.
    Engine,
    /// Into each grouping set's source, under the set's key.
    Groups(&'q super::groups::Groups),
    /// Nowhere: it is a result row ([`Query::per_row`]).
    Rows(&'q super::rows::PerRow),
}

impl Rows<'_> {
    /// Writes a [`Plain`] row: the same steps as the TOML writer's.
    #[inline]
    fn emit_plain(
        &mut self,
        p: Plain,
        key: &str,
        w: &WindowResult,
        (values, flag): (&[f64], bool),
        b: &mut Vec<u8>,
    ) {
        match p.key {
            Some(true) => {
                push_text(b, key);
                b.push(b',');
            }
            Some(false) => b.push(b','),
            None => {}
        }
        if (w.start, w.end) != self.span.0 {
            // Windows fire in batches with the same bounds.
            self.span.0 = (w.start, w.end);
            self.span.1.clear();
            self.span.1.extend_from_slice(&ts_bytes(w.start));
            self.span.1.push(b',');
            self.span.1.extend_from_slice(&ts_bytes(w.end));
        }
        b.extend_from_slice(&self.span.1);
        for i in 0..p.values {
            b.push(b',');
            match values.get(i) {
                Some(&x) if x.is_nan() => {}
                Some(&x) if p.ints >> i & 1 == 1 => push_value(b, &Value::Num(x), SqlType::BigInt),
                Some(&x) => push_f64(b, x),
                None => {}
            }
        }
        if p.flag {
            b.extend_from_slice(if flag { b",true" } else { b",false" });
        }
        b.push(b'\n');
    }
}

/// A direct plan that is one operator's window row as the operator made
/// it: the key (or NULL, or no key column), `window_start, window_end`, the operator's first
/// `values` values in order, then its flag if `flag`.
#[derive(Clone, Copy)]
struct Plain {
    op: usize,
    /// The first column: the key (`Some(true)`), NULL (`Some(false)`), or
    /// `window_start` (`None`).
    key: Option<bool>,
    values: usize,
    /// Bit `i`: value `i` is an INT or BIGINT column.
    ints: u64,
    flag: bool,
}

impl Plain {
    fn of(q: &Query, cells: &[Cell]) -> Option<Plain> {
        let (key, rest) = match cells {
            [Cell::Key, Cell::Start, Cell::End, rest @ ..] => (Some(true), rest),
            [Cell::Empty, Cell::Start, Cell::End, rest @ ..] if !q.keyed => (Some(false), rest),
            [Cell::Start, Cell::End, rest @ ..] => (None, rest),
            _ => return None,
        };
        let (rest, flag) = match rest {
            [rest @ .., Cell::Flag(op)] => (rest, Some(*op)),
            _ => (rest, None),
        };
        let op = match (rest.first(), flag) {
            (Some(Cell::Float(op, _) | Cell::Value(op, _, _)), _) => *op,
            (None, Some(op)) => op,
            _ => return None,
        };
        let mut ints = 0u64;
        for (i, c) in rest.iter().enumerate() {
            match *c {
                Cell::Float(o, v) if o == op && v == i => {}
                Cell::Value(o, v, SqlType::Int | SqlType::BigInt)
                    if o == op && v == i && i < 64 =>
                {
                    ints |= 1 << i
                }
                _ => return None,
            }
        }
        if flag.is_some_and(|f| f != op) {
            return None;
        }
        Some(Plain {
            op,
            key,
            values: rest.len(),
            ints,
            flag: flag.is_some(),
        })
    }
}

/// One cell of a row written without building the row ([`Rows`]'s plan).
#[derive(Clone, Copy)]
enum Cell {
    Key,
    Start,
    End,
    WindowTime,
    /// A DOUBLE aggregate: value `.1` of operator `.0`'s window.
    Float(usize, usize),
    /// Any other number type (integers, DECIMAL).
    Value(usize, usize, SqlType),
    /// Operator `.0`'s detector flag.
    Flag(usize),
    /// Nothing (NULL): the key of an unkeyed query, a column past the
    /// window's values.
    Empty,
}

impl Cell {
    /// The cell of result column `c`; `None` unless it reads one value of
    /// the window row as it is.
    fn of(q: &Query, c: &super::plan::ResultColumn) -> Option<Cell> {
        let weir_core::expr::Expr::Col(col) = c.expr else {
            return None;
        };
        Some(match col {
            KEY if q.keyed => Cell::Key,
            KEY => Cell::Empty,
            START => Cell::Start,
            END => Cell::End,
            WTIME => Cell::WindowTime,
            other => {
                let i = (other - 4) as usize;
                match (q.slots.get(i), q.flags.get(i.wrapping_sub(q.slots.len()))) {
                    (Some(&(op, v)), _) if matches!(c.ty, SqlType::Double) => Cell::Float(op, v),
                    (Some(&(op, v)), _) => Cell::Value(op, v, c.ty),
                    (None, Some(&op)) => Cell::Flag(op),
                    (None, None) => Cell::Empty,
                }
            }
        })
    }
}

impl Results for Rows<'_> {
    #[inline(always)]
    fn keep(&mut self, key: &str, ts: i64, values: &mut [f64], texts: &TextFields<'_>) -> bool {
        // Inlined up to here: without a WHERE, no call per sample.
        self.keep_all
            || self
                .q
                .keep_sample(key, ts, values, |i| texts.get(i), &mut self.sample)
    }

    #[inline(always)]
    fn feed(
        &mut self,
        engine: &mut Engine,
        source: usize,
        key: &str,
        ts: i64,
        values: &[f64],
        texts: &TextFields<'_>,
    ) -> Result<(), Reject> {
        match self.to {
            Feed::Engine => engine.handle_sample(ts, source, key, ts, values),
            Feed::Groups(g) => {
                // Into each grouping set's source, keyed by its columns
                // (the first text columns).
                for set in 0..g.sets.len() {
                    g.key(set, |j| texts.get(j), &mut self.key);
                    engine.handle_sample(ts, source + set, &self.key, ts, values)?;
                }
                Ok(())
            }
            Feed::Rows(r) => {
                self.row_out(r, ts);
                Ok(())
            }
        }
    }

    fn drain(&mut self, sum: &mut Summary, b: &mut Vec<u8>) {
        sum.late += std::mem::take(&mut self.late);
        if self.pending.1 > 0 || !self.pending.0.is_empty() {
            sum.windows += std::mem::take(&mut self.pending.1);
            b.append(&mut self.pending.0);
        }
    }

    fn write(&mut self, engine: &Engine, o: &Output, sum: &mut Summary, b: &mut Vec<u8>) {
        match o {
            Output::Window(w) => {
                let key = engine.key_name(w.key);
                if let Some(over) = self.q.per_row.as_ref().and_then(|r| r.over.as_ref()) {
                    self.over_out(over, key, w, sum, b);
                    return;
                }
                if let [op] = self.q.ops[..] {
                    // One operator: its window is the row, nothing to join.
                    if self.q.groups.is_none() {
                        if w.op as usize == op {
                            let flag = w.anomaly.is_some_and(|a| a.flag);
                            self.emit(key, w, &[(w.values.as_slice(), flag)], sum, b);
                        }
                        return;
                    }
                }
                // Taken out for the call, so that `emit` can borrow the rest.
                let mut join = std::mem::take(&mut self.join);
                join.offer(self.q, key, w, |parts| self.emit(key, w, parts, sum, b));
                self.join = join;
            }
            Output::Score(s) if self.q.scores => {
                let w = super::stage::score_row(s);
                self.write(engine, &Output::Window(w), sum, b);
            }
            // Every operator sees the same late sample: count it once.
            Output::Late(l) if self.q.ops.first() == Some(&(l.op as usize)) => sum.late += 1,
            _ => {}
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.sss`, UTC.
pub fn format_ts(ms: i64) -> String {
    let b = ts_bytes(ms);
    match std::str::from_utf8(&b) {
        Ok(s) if (0..=9999).contains(&year_of(ms)) => s.to_string(),
        _ => {
            let mut s = format_datetime_ms(ms);
            if !s.contains('.') {
                s.push_str(".000");
            }
            s
        }
    }
}

fn year_of(ms: i64) -> i64 {
    crate::timefmt::civil_from_days(ms.div_euclid(86_400_000)).0
}

/// `YYYY-MM-DD HH:MM:SS.sss` for years 0 to 9999 (others: see [`format_ts`]).
fn ts_bytes(ms: i64) -> [u8; 23] {
    let (y, mo, d) = crate::timefmt::civil_from_days(ms.div_euclid(86_400_000));
    let rem = ms.rem_euclid(86_400_000);
    let mut b = *b"0000-00-00 00:00:00.000";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, mo as u64);
    put(8, 2, d as u64);
    put(11, 2, (rem / 3_600_000) as u64);
    put(14, 2, (rem / 60_000 % 60) as u64);
    put(17, 2, (rem / 1000 % 60) as u64);
    put(20, 3, (rem % 1000) as u64);
    b
}

fn push_value(b: &mut Vec<u8>, v: &Value, ty: SqlType) {
    match v {
        Value::Null => {}
        Value::Bool(x) => b.extend_from_slice(if *x { b"true" } else { b"false" }),
        Value::Str(s) => push_text(b, s),
        Value::Ts(t) => b.extend_from_slice(format_ts(*t).as_bytes()),
        Value::Num(x) => match ty {
            // By casts rather than `fract` (a library call on baseline x86-64).
            SqlType::Int | SqlType::BigInt if x.abs() < 9.0e15 && (*x as i64) as f64 == *x => {
                push_i64(b, *x as i64)
            }
            // Rounded as Flink rounds to a DECIMAL's scale (half up, on
            // the decimal the double reads as), then printed exactly.
            SqlType::Decimal(s) if x.is_finite() => {
                let r = weir_core::expr::round_decimal(*x, s.into(), false);
                b.extend_from_slice(format!("{:.*}", s as usize, r).as_bytes())
            }
            _ => push_f64(b, *x),
        },
    }
}

/// Runs `input` through a compiled SQL pipeline and writes its result rows
/// as CSV to `out`.
///
/// # Errors
/// I/O errors of `input` or `out`. Bad rows are not errors: `on_bad` sees them.
///
/// A cascade ([`SqlPipeline::inner`]) runs its first query over `input` on
/// a thread of its own, its rows (their DOUBLEs exact) piped into the
/// second, so memory stays bounded whatever the input's length; the
/// summary counts the input's rows and bad rows, the second query's
/// windows, and the late rows of both; the engine is the second's.
pub fn replay<R: Read + Send, W: Write>(
    p: &SqlPipeline,
    mut input: R,
    mut out: W,
    mut on_bad: impl FnMut(&BadRow, &[u8]) + Send,
) -> io::Result<(Summary, Engine)> {
    // Through trait objects: one copy of the replay loop serves every
    // caller and both stages of a cascade (it reads and writes in blocks).
    #[cfg(feature = "host-tools")]
    if let Some(t) = &p.query.top_n {
        // A window Top-N: each window's first rows, once the input ends.
        let mut w = super::topn::TopNWriter::new(t, &p.query);
        let (mut sum, engine) = replay_dyn(p, &mut input, &mut w, &mut on_bad)?;
        sum.windows = w.finish(&mut out)?;
        return Ok((sum, engine));
    }
    if !p.query.order.is_empty() {
        // ORDER BY: every row, sorted once the input ends, then the LIMIT.
        let mut rows = Vec::new();
        let (mut sum, engine) = replay_dyn(p, &mut input, &mut rows, &mut on_bad)?;
        sum.windows = write_sorted(&rows, &p.query, &mut out)?;
        return Ok((sum, engine));
    }
    let Some(n) = p.query.limit else {
        return replay_dyn(p, &mut input, &mut out, &mut on_bad);
    };
    // `LIMIT n`: the rows after the first n are not written, and the input
    // ends at the next block once they are out.
    let done = AtomicBool::new(false);
    let mut input = UntilDone {
        inner: input,
        done: &done,
    };
    let mut out = Limited {
        inner: out,
        left: n,
        header: true,
        quoted: false,
        done: &done,
    };
    if n == 0 {
        done.store(true, Relaxed);
    }
    // Once the rows are out, the input ends mid-block: its last line may
    // be cut short, and what comes after the limit is not reported.
    let mut after = 0u64;
    let mut bad = |b: &BadRow, line: &[u8]| {
        if done.load(Relaxed) {
            after += 1;
        } else {
            on_bad(b, line);
        }
    };
    let (mut sum, engine) = replay_dyn(p, &mut input, &mut out, &mut bad)?;
    sum.windows = sum.windows.min(n);
    sum.bad_rows -= after;
    Ok((sum, engine))
}

/// A cell's place in the order: `NULL` (an empty cell that is not a
/// `STRING`), a number, or text (timestamps as written sort as text).
#[derive(PartialEq, PartialOrd)]
pub(super) enum SortCell {
    Num(f64),
    Text(String),
}

/// Writes the header of the CSV result `text` and its rows sorted by
/// `q.order` (stable: rows that tie keep the order they fired in), at most
/// `q.limit` of them; returns how many rows.
fn write_sorted(text: &[u8], q: &Query, out: &mut dyn Write) -> io::Result<u64> {
    let mut lines = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for i in row_ends(text, &mut quoted) {
        lines.push(&text[start..=i]);
        start = i + 1;
    }
    let Some((header, rows)) = lines.split_first() else {
        return Ok(0);
    };
    out.write_all(header)?;
    let mut keyed: Vec<(Vec<Option<SortCell>>, &[u8])> = rows
        .iter()
        .map(|r| {
            let cells = split_csv(String::from_utf8_lossy(r).trim_end_matches('\n'));
            (sort_cells(&cells, &q.order, q), *r)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| compare_sort(&q.order, a, b));
    let n = q.limit.map_or(keyed.len(), |n| keyed.len().min(n as usize));
    for (_, r) in &keyed[..n] {
        out.write_all(r)?;
    }
    out.flush()?;
    Ok(n as u64)
}

/// A CSV row's `cells` as `keys` sort them (over `q`'s result columns).
pub(super) fn sort_cells(cells: &[String], keys: &[SortKey], q: &Query) -> Vec<Option<SortCell>> {
    keys.iter()
        .map(|k| {
            let c = cells.get(k.column).map(String::as_str).unwrap_or("");
            match q.columns[k.column].ty {
                SqlType::String => Some(SortCell::Text(c.to_string())),
                _ if c.is_empty() => None,
                SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Decimal(_) => {
                    c.parse().ok().map(SortCell::Num)
                }
                // false < true, as the words sort.
                SqlType::Boolean | SqlType::Timestamp | SqlType::TimestampLtz => {
                    Some(SortCell::Text(c.to_string()))
                }
            }
        })
        .collect()
}

/// The order of two rows' [`sort_cells`] under `keys`.
pub(super) fn compare_sort(
    keys: &[SortKey],
    a: &[Option<SortCell>],
    b: &[Option<SortCell>],
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if k.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if k.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

/// The positions of the newlines of `buf` that end a CSV row (not those
/// inside a quoted field); `quoted` says whether a quote is open, before
/// and after.
pub(super) fn row_ends<'b>(
    buf: &'b [u8],
    quoted: &'b mut bool,
) -> impl Iterator<Item = usize> + 'b {
    buf.iter().enumerate().filter_map(move |(i, &c)| match c {
        b'"' => {
            *quoted = !*quoted;
            None
        }
        b'\n' if !*quoted => Some(i),
        _ => None,
    })
}

/// The cells of a CSV line, quotes removed.
pub(super) fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().expect("one").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().expect("one").push(c),
        }
    }
    cells
}

/// An input that ends once `done` is set ([`Limited`]).
struct UntilDone<'a, R> {
    inner: R,
    done: &'a AtomicBool,
}

impl<R: Read> Read for UntilDone<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done.load(Relaxed) {
            return Ok(0);
        }
        self.inner.read(buf)
    }
}

/// CSV output cut after the header and `left` rows (a newline inside a
/// quoted field does not end a row); then `done` is set and the rest is
/// dropped.
struct Limited<'a, W> {
    inner: W,
    left: u64,
    header: bool,
    quoted: bool,
    done: &'a AtomicBool,
}

impl<W: Write> Write for Limited<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.done.load(Relaxed) && !self.header {
            return Ok(buf.len());
        }
        let mut cut = buf.len();
        for i in row_ends(buf, &mut self.quoted) {
            if self.header {
                self.header = false;
            } else {
                self.left = self.left.saturating_sub(1);
            }
            if self.left == 0 {
                self.done.store(true, Relaxed);
                cut = i + 1;
                break;
            }
        }
        self.inner.write_all(&buf[..cut])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn replay_dyn(
    p: &SqlPipeline,
    input: &mut (dyn Read + Send),
    out: &mut dyn Write,
    on_bad: &mut (dyn FnMut(&BadRow, &[u8]) + Send),
) -> io::Result<(Summary, Engine)> {
    let Some(first) = &p.inner else {
        let mut rows = Rows::new(&p.query);
        let header = rows.header();
        return replay_one(&p.pipeline, input, out, &header, &mut rows, on_bad);
    };
    // The first query's rows, in blocks of at most 64 KiB, 4 in flight.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (s1, s2) = std::thread::scope(|scope| {
        let stage1 = std::thread::Builder::new()
            .name("weir-cascade".into())
            .spawn_scoped(scope, move || {
                let mut rows = Rows::new(&first.query).exact();
                let header = rows.header();
                let mut pipe = PipeWriter(tx);
                replay_one(
                    &first.pipeline,
                    input,
                    &mut pipe,
                    &header,
                    &mut rows,
                    on_bad,
                )
                .map(|(s, _)| s)
            })?;
        let mut rows = Rows::new(&p.query);
        let header = rows.header();
        let mut ignore = |_: &BadRow, _: &[u8]| {};
        let ignore: &mut dyn FnMut(&BadRow, &[u8]) = &mut ignore;
        // The first query's rows parse: a bad one (a NULL time) is counted.
        let mut pipe = PipeReader::new(rx);
        let s2 = replay_one(&p.pipeline, &mut pipe, out, &header, &mut rows, ignore);
        // The reader goes first: a second query that stopped on an error
        // makes the first one's writes fail rather than wait.
        drop(pipe);
        let s1 = stage1
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        io::Result::Ok((s1, s2))
    })?;
    // The first query's error (its input) explains the second's.
    let s1 = s1?;
    let (mut s2, engine) = s2?;
    s2.bad_rows += s1.bad_rows;
    s2.rows = s1.rows;
    s2.late += s1.late;
    Ok((s2, engine))
}

/// The one instantiation of the replay loop for SQL (trait objects).
fn replay_one(
    pf: &crate::pipeline_file::PipelineFile,
    input: &mut dyn Read,
    out: &mut dyn Write,
    header: &[u8],
    rows: &mut Rows<'_>,
    on_bad: &mut dyn FnMut(&BadRow, &[u8]),
) -> io::Result<(Summary, Engine)> {
    crate::replay::replay_with(pf, 0, input, out, header, rows, on_bad)
}

/// The writing end of the pipe between a cascade's queries.
struct PipeWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.0.send(buf.to_vec()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the cascade's second query stopped",
                )
            })?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end: end of input once the first query is done.
pub(super) struct PipeReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    /// Reads the blocks `rx` gives, in order, until its senders are gone.
    pub(super) fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        PipeReader {
            rx,
            block: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            match self.rx.recv() {
                Ok(b) => (self.block, self.pos) = (b, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `sql` over `input`, written by `rows` as `replay` does.
    fn rows_of(sql: &str, input: &str, general: bool) -> (bool, String) {
        let p = super::super::parse("q.sql", sql).unwrap_or_else(|e| panic!("{e}"));
        let mut rows = Rows::new(&p.query);
        let plain = rows.plain.is_some();
        if general {
            rows.plain = None;
        }
        let header = rows.header();
        let mut out = Vec::new();
        let mut input = input.as_bytes();
        let mut bad = |b: &BadRow, l: &[u8]| panic!("{b:?}: {}", String::from_utf8_lossy(l));
        replay_one(
            &p.pipeline,
            &mut input,
            &mut out,
            &header,
            &mut rows,
            &mut bad,
        )
        .unwrap();
        (plain, String::from_utf8(out).unwrap())
    }

    const TABLE: &str = "CREATE TABLE t (k STRING, ts BIGINT, v DOUBLE,
        rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt - INTERVAL '1' SECOND)
        WITH ('connector' = 'filesystem', 'path' = 'x.csv', 'format' = 'csv');";

    /// Keys that need quotes, a one-sample window (STDDEV_SAMP is NULL),
    /// an integer column, a flag: the plain writer and the cell-by-cell
    /// writer give the same bytes.
    #[test]
    fn plain_rows_are_the_cell_plan_rows() {
        // 2020-04-15 08:00:00 UTC and after (the engine refuses 1970).
        let input: String = [
            ("a", 1000, "1.5"),
            ("\"b,1\"", 1500, "2"),
            ("\"q\"\"x\"", 2000, "-3.25"),
            ("a", 2500, "4"),
            ("a", 12000, "1"),
            ("\"b,1\"", 13000, "7"),
            ("a", 30000, "0"),
        ]
        .iter()
        .map(|(k, t, v)| format!("{k},{},{v}\n", 1_586_937_600_000i64 + t))
        .collect();
        let input = input.as_str();
        let queries = [
            // W1's shape: key, bounds, an integer, doubles, a flag.
            "SELECT k, window_start, window_end, COUNT(*) AS n, AVG(v) AS m, \
             STDDEV_SAMP(v) AS s, EWMA_Z(AVG(v), 0.5, 0.1, 1) AS a",
            "SELECT k, window_start, window_end, SUM(v) AS s, COUNT(v) AS n",
            "SELECT window_start, window_end, MAX(v) AS mx",
            // Not the operator's order: written cell by cell.
            "SELECT window_start, k, window_end, COUNT(*) AS n",
        ];
        for (i, sel) in queries.into_iter().enumerate() {
            let keys = if sel.contains(" k,") { "k, " } else { "" };
            let sql = format!(
                "{TABLE} {sel} FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rt), INTERVAL '10' SECOND)) \
                 GROUP BY {keys}window_start, window_end;"
            );
            let (plain, fast) = rows_of(&sql, input, false);
            let (_, slow) = rows_of(&sql, input, true);
            assert_eq!(plain, i < 3, "{sel}: written as a plain row");
            assert_eq!(fast, slow, "{sel}");
            assert!(fast.lines().count() >= 3, "{fast}");
            if i == 0 {
                assert!(
                    fast.contains("\n\"q\"\"x\",2020-04-15 08:00:00.000,"),
                    "{fast}"
                );
                assert!(fast.contains(",1,-3.250000,,false\n"), "{fast}");
            }
        }
    }
}
