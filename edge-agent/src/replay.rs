//! `weir replay`: a CSV file through a pipeline, as fast as it goes.
//!
//! Rows are decoded with the source's CSV mapping and offered to the engine
//! with the row's own timestamp as the clock (`now`), so a replay is
//! deterministic: the same file and pipeline always give the same bytes.
//! Bad rows are counted, reported with their line numbers, and skipped.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::time::{Duration, Instant};

use weir_core::detect::DetectorSpec;
use weir_core::engine::Engine;
use weir_core::engine::Reject;
use weir_core::output::{Emission, Output};
use weir_core::spec::{DetectSpec, OperatorKind};

use crate::numfmt::{
    self, digits_value, eight_digits, eq_bytes, not_digits, push_f64, push_i64, push_u64,
};
use crate::pipeline_file::{Column, CsvMapping, PipelineFile, TsFormat};
use crate::timefmt::{format_datetime_ms, parse_datetime_ms};

/// Longest input line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a row could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowError {
    /// Fewer or more columns than the mapping.
    ColumnCount,
    /// The timestamp column does not parse in the configured format.
    BadTimestamp,
    /// A value column is not a number.
    BadNumber,
    /// Not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// A field that starts with `"` has no closing quote on its line, or
    /// text follows its closing quote.
    BadQuote,
    /// Decoded, but refused by the engine.
    Rejected(Reject),
    /// The source's scalar user function at this index (among the
    /// source's scalar functions) failed or is disabled; its dead letter
    /// says why (`crate::functions`).
    Function(u16),
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::ColumnCount => f.write_str("wrong number of columns"),
            RowError::BadTimestamp => {
                f.write_str("timestamp does not parse in the configured format")
            }
            RowError::BadNumber => f.write_str("value is not a number"),
            RowError::NotUtf8 => f.write_str("row is not valid UTF-8"),
            RowError::TooLong => f.write_str("row longer than 64 KiB"),
            RowError::BadQuote => f.write_str(
                "a quoted field is not closed on its line, or text follows its closing quote",
            ),
            RowError::Rejected(r) => write!(f, "rejected: {r}"),
            RowError::Function(i) => write!(f, "scalar function #{i} of the source failed"),
        }
    }
}

/// One bad row, for reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line number in the input.
    pub line: u64,
    /// What was wrong.
    pub error: RowError,
}

/// Counts from one replay.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Data rows read (header excluded).
    pub rows: u64,
    /// Rows that could not be decoded or were rejected, by kind.
    pub bad_rows: u64,
    /// Window results written (on-time firings).
    pub windows: u64,
    /// Window updates written.
    pub updates: u64,
    /// Windows or samples flagged anomalous.
    pub flagged: u64,
    /// Per-sample scores written.
    pub scores: u64,
    /// Samples sent to the late output.
    pub late: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} rows in {:.3} s ({:.2} M rows/s): {} windows, {} updates, {} scores, {} flagged, {} late, {} bad rows",
            self.rows,
            secs,
            self.rows as f64 / secs / 1e6,
            self.windows,
            self.updates,
            self.scores,
            self.flagged,
            self.late,
            self.bad_rows
        )
    }
}

/// Where [`replay_with`] sends what the engine emits, and which decoded
/// samples it lets in: the TOML output (`key,start,end,aggregates…`) or a
/// SQL query's result rows ([`crate::sql::exec`]).
pub trait Results {
    /// Whether a decoded sample goes into the engine (a SQL `WHERE`);
    /// `texts` holds the row's [`Column::Text`] columns. It may fill in
    /// `values` the CSV mapping has no column for (computed fields).
    #[inline(always)]
    fn keep(&mut self, _key: &str, _ts: i64, _values: &mut [f64], _texts: &TextFields<'_>) -> bool {
        true
    }

    /// Offers a kept sample to the engine: by default into `source` under
    /// the row's key (a SQL query with several key columns or grouping
    /// sets builds its keys from `texts`).
    ///
    /// # Errors
    /// The engine's refusal.
    #[inline(always)]
    fn feed(
        &mut self,
        engine: &mut Engine,
        source: usize,
        key: &str,
        ts: i64,
        values: &[f64],
        _texts: &TextFields<'_>,
    ) -> Result<(), weir_core::engine::Reject> {
        engine.handle_sample(ts, source, key, ts, values)
    }

    /// Appends what `o` becomes to `buf` and counts it in `sum`.
    fn write(&mut self, engine: &Engine, o: &Output, sum: &mut Summary, buf: &mut Vec<u8>);

    /// Appends to `buf` (and counts in `sum`) the rows made outside the
    /// engine's outputs since the last call (a SQL query without `GROUP
    /// BY`, whose rows are its samples); called once per block of input,
    /// before the block's output is written.
    fn drain(&mut self, _sum: &mut Summary, _buf: &mut Vec<u8>) {}
}

/// The output of a TOML pipeline (`docs/pipeline.md`).
struct Writer {
    engine_ops: Vec<OpInfo>,
    prefix_op: bool,
    ts_format: TsFormat,
    /// The last window bounds written, and their text `start,end`.
    span: ((i64, i64), Vec<u8>),
}

struct OpInfo {
    id: String,
    anomaly_col: bool,
    update_col: bool,
    /// Write the first aggregate (count) as an integer.
    count_first: bool,
    /// A multivariate detector's shipped threshold: its rows are
    /// `ts,anomaly_score,alarm,contrib_<field>…`.
    alarm_at: Option<f64>,
}

impl Results for Writer {
    #[inline]
    fn write(&mut self, engine: &Engine, o: &Output, sum: &mut Summary, b: &mut Vec<u8>) {
        match o {
            Output::Window(w) => {
                let info = &self.engine_ops[w.op as usize];
                if self.prefix_op {
                    b.extend_from_slice(info.id.as_bytes());
                    b.push(b',');
                }
                push_text(b, engine.key_name(w.key));
                b.push(b',');
                if (w.start, w.end) != self.span.0 {
                    // Windows fire in batches with the same bounds.
                    self.span.0 = (w.start, w.end);
                    self.span.1.clear();
                    push_i64(&mut self.span.1, w.start);
                    self.span.1.push(b',');
                    push_i64(&mut self.span.1, w.end);
                }
                b.extend_from_slice(&self.span.1);
                for (i, v) in w.values.as_slice().iter().enumerate() {
                    b.push(b',');
                    if i == 0 && info.count_first {
                        push_u64(b, *v as u64);
                    } else {
                        push_f64(b, *v);
                    }
                }
                if info.anomaly_col {
                    let flag = w.anomaly.is_some_and(|a| a.flag);
                    b.extend_from_slice(if flag { b",true" } else { b",false" });
                    sum.flagged += flag as u64;
                }
                if info.update_col {
                    b.extend_from_slice(if w.emission == Emission::Update {
                        b",update"
                    } else {
                        b",final"
                    });
                }
                b.push(b'\n');
                match w.emission {
                    Emission::OnTime => sum.windows += 1,
                    Emission::Update => sum.updates += 1,
                }
            }
            Output::Score(s) if self.engine_ops[s.op as usize].alarm_at.is_some() => {
                let at = self.engine_ops[s.op as usize].alarm_at.unwrap_or(1.0);
                write_multivariate(self, engine, s, at, b);
                sum.scores += 1;
                sum.flagged += s.verdict.flag as u64;
            }
            Output::Score(s) => {
                score_head(self, engine, s, b);
                b.extend_from_slice(s.value.to_string().as_bytes());
                b.push(b',');
                push_f64(b, s.verdict.score);
                b.push(b'\n');
                sum.scores += 1;
                sum.flagged += s.verdict.flag as u64;
            }
            Output::Late(_) => sum.late += 1,
            Output::Custom(c) => {
                b.extend_from_slice(self.engine_ops[c.op as usize].id.as_bytes());
                b.push(b',');
                push_text(b, engine.key_name(c.key));
                b.push(b',');
                push_i64(b, c.ts);
                b.push(b',');
                push_f64(b, c.value);
                b.push(b',');
                push_u64(b, c.tag as u64);
                b.push(b'\n');
            }
        }
    }
}

/// The start of a score row: `[op,key,]ts,` (the operator and key with
/// several operators), the time in the source's format.
fn score_head(w: &Writer, engine: &Engine, s: &weir_core::output::ScoreResult, b: &mut Vec<u8>) {
    if w.prefix_op {
        b.extend_from_slice(w.engine_ops[s.op as usize].id.as_bytes());
        b.push(b',');
        push_text(b, engine.key_name(s.key));
        b.push(b',');
    }
    match w.ts_format {
        TsFormat::Datetime => b.extend_from_slice(format_datetime_ms(s.ts).as_bytes()),
        _ => push_i64(b, s.ts),
    }
    b.push(b',');
}

/// A multivariate detector's row: `[op,key,]ts,anomaly_score,alarm`, then
/// one contribution per field. `alarm` is 1 when the score reaches the
/// shipped threshold `at` (whatever the alert gate's cool-down).
#[cold]
fn write_multivariate(
    w: &Writer,
    engine: &Engine,
    s: &weir_core::output::ScoreResult,
    at: f64,
    b: &mut Vec<u8>,
) {
    score_head(w, engine, s, b);
    push_f64(b, s.verdict.score);
    b.extend_from_slice(if s.verdict.score >= at { b",1" } else { b",0" });
    for c in s.contributions.as_slice() {
        b.push(b',');
        push_f64(b, *c as f64);
    }
    b.push(b'\n');
}

/// A value column: a number, surrounding spaces allowed, or with `nulls`
/// ([`CsvMapping::nulls`]) a `NULL` cell, given as a NaN. A field that
/// parses is ASCII, so only the others are checked for UTF-8.
#[inline(always)]
fn parse_field(line: Line<'_>, r: Range<usize>, nulls: Option<&str>) -> Result<f64, RowError> {
    match numfmt::parse_f64(&line.bytes[r.clone()]) {
        Some(v) if !v.is_nan() => Ok(v),
        _ => parse_trimmed(line, r, nulls),
    }
}

#[cold]
#[inline(never)]
fn parse_trimmed(line: Line<'_>, r: Range<usize>, nulls: Option<&str>) -> Result<f64, RowError> {
    let s = line.str(r)?.trim();
    match nulls {
        // A NaN would pass for NULL there: a written-out one is refused.
        Some(lit) if s.is_empty() || (!lit.is_empty() && s == lit.trim()) => Ok(f64::NAN),
        Some(_) => s
            .parse()
            .ok()
            .filter(|v: &f64| !v.is_nan())
            .ok_or(RowError::BadNumber),
        None => s.parse().map_err(|_| RowError::BadNumber),
    }
}

#[inline(always)]
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return std::str::from_utf8(b).ok()?.parse().ok();
    }
    let mut v: i64 = 0;
    // Eight digits at a time (a millisecond timestamp has 13).
    let mut chunks = digits.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
        v = v * 100_000_000 + eight_digits(w)? as i64;
    }
    for &c in chunks.remainder() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i64;
    }
    Some(if neg { -v } else { v })
}

/// The first comma in `b`, eight bytes at a time.
#[inline(always)]
fn find_comma(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(w) = b.get(i..i + 8) {
        let m = eq_bytes(u64::from_le_bytes(w.try_into().unwrap_or_default()), b',');
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b',').map(|p| i + p)
}

/// The first comma in `b` if it comes before the first newline.
#[inline(always)]
fn find_comma_in_line(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let m = eq_bytes(w, b',') | eq_bytes(w, b'\n');
        if m != 0 {
            let at = i + (m.trailing_zeros() / 8) as usize;
            return (b[at] == b',').then_some(at);
        }
        i += 8;
    }
    let at = i + b[i..].iter().position(|&c| c == b',' || c == b'\n')?;
    (b[at] == b',').then_some(at)
}

/// The 1 to 18 digits from `from` up to a comma, as a number, and where
/// that comma is; `None` if they are not that.
#[inline(always)]
fn digits_to_comma(b: &[u8], from: usize) -> Option<(i64, usize)> {
    /// `10^n` for the digits of a part word.
    const POW10: [i64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
    let mut v: i64 = 0;
    let mut i = from;
    // A word at a time: eight digits, or the digits before the first byte
    // that is not one (moved to the top of the word, '0's below them).
    // Wrapping: the value only counts with at most 18 digits.
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let other = not_digits(w);
        if other == 0 {
            v = v
                .wrapping_mul(100_000_000)
                .wrapping_add(digits_value(w) as i64);
            i += 8;
            continue;
        }
        let n = (other.trailing_zeros() / 8) as usize;
        if n > 0 {
            let top = (w << (8 * (8 - n))) | (0x3030_3030_3030_3030 >> (8 * n));
            v = v
                .wrapping_mul(POW10[n])
                .wrapping_add(digits_value(top) as i64);
            i += n;
        }
        let n = i - from;
        return (n > 0 && n <= 18 && b.get(i) == Some(&b',')).then_some((v, i));
    }
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(d as i64);
        i += 1;
    }
    let n = i - from;
    (n > 0 && n <= 18 && b.get(i) == Some(&b',')).then_some((v, i))
}

/// One input line (without its newline) and, when the block it was read in
/// is valid UTF-8, the same line as text: then a field needs no UTF-8 check
/// of its own. Lines of a block that is not valid UTF-8 check each field
/// they use, so a bad byte only spoils the row (and the column) it is in.
#[derive(Clone, Copy)]
struct Line<'l> {
    bytes: &'l [u8],
    text: Option<&'l str>,
}

impl<'l> Line<'l> {
    /// Field `r` (byte offsets in the line) as text.
    #[inline(always)]
    fn str(self, r: Range<usize>) -> Result<&'l str, RowError> {
        match self.text {
            Some(t) => t.get(r).ok_or(RowError::NotUtf8),
            None => std::str::from_utf8(&self.bytes[r]).map_err(|_| RowError::NotUtf8),
        }
    }
}

/// The text columns of one row ([`Column::Text`]), for [`Results::keep`].
pub struct TextFields<'a> {
    line: Line<'a>,
    ranges: &'a [Range<usize>],
}

impl<'a> TextFields<'a> {
    /// Text column `i`; `None` if it is missing or not UTF-8.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        self.line.str(self.ranges.get(i)?.clone()).ok()
    }
}

struct Decoder<'m> {
    map: &'m CsvMapping,
    simple: bool,
    unit_per_ms: i64,
    values: Vec<f64>,
    /// Where the row's text columns are, by their index.
    texts: Vec<Range<usize>>,
    /// The line being decoded is an [`unquote`]d copy: its last field may
    /// hold commas.
    unquoted: bool,
    /// The last row [`requoted`] read, unquoted, and its separators.
    copy: Vec<u8>,
    copy_commas: Vec<usize>,
}

impl<'m> Decoder<'m> {
    /// The decoder of source `source`'s CSV mapping.
    fn new(pf: &'m PipelineFile, source: usize) -> Self {
        let map = &pf.csv[source];
        let nfields = pf.spec.sources[source].fields.len();
        Decoder {
            map,
            simple: map.columns == [Column::Key, Column::Ts, Column::Field(0)] && nfields == 1,
            unit_per_ms: pf.spec.time.unit.per_milli(),
            values: vec![0.0; nfields],
            texts: vec![
                0..0;
                map.columns
                    .iter()
                    .filter(|c| matches!(c, Column::Text(_)))
                    .count()
            ],
            unquoted: false,
            copy: Vec::new(),
            copy_commas: Vec::new(),
        }
    }

    /// Decodes one line (without its newline) whose first commas, up to one
    /// fewer than the mapping has columns, are at `commas`; gives the key's
    /// byte range in the line, if the mapping has a key column.
    #[inline]
    fn decode(
        &mut self,
        line: &mut Line<'_>,
        commas: &[usize],
    ) -> Result<(Option<Range<usize>>, i64), RowError> {
        if let Some(b) = line.bytes.strip_suffix(b"\r") {
            line.bytes = b;
            line.text = line.text.map(|t| &t[..b.len()]);
        }
        let l = *line;
        let bytes = l.bytes;
        if self.simple {
            // The common layout `key,ts,value`: no column loop.
            let [c1, c2] = commas[..] else {
                return Err(RowError::ColumnCount);
            };
            let ts = self.ts(l, c1 + 1..c2)?;
            let v = c2 + 1..bytes.len();
            self.values[0] = parse_field(l, v.clone(), self.map.nulls.as_deref()).map_err(|e| {
                if !self.unquoted && bytes[v].contains(&b',') {
                    RowError::ColumnCount
                } else {
                    e
                }
            })?;
            return Ok((Some(0..c1), ts));
        }
        let mut key = None;
        let mut ts = None;
        let mut at = 0;
        let n = self.map.columns.len();
        for (i, col) in self.map.columns.iter().enumerate() {
            let field = if i + 1 == n {
                // A stray comma in the last column makes its parse fail; the
                // column count is checked only then, off the hot path.
                at..bytes.len()
            } else {
                let p = *commas.get(i).ok_or(RowError::ColumnCount)?;
                let f = at..p;
                at = p + 1;
                f
            };
            // (An unquoted last field may hold commas.)
            let last = i + 1 == n && !self.unquoted;
            let miscount = |e: RowError| {
                if last && bytes[field.clone()].contains(&b',') {
                    RowError::ColumnCount
                } else {
                    e
                }
            };
            match col {
                Column::Key => {
                    if last && bytes[field.clone()].contains(&b',') {
                        return Err(RowError::ColumnCount);
                    }
                    key = Some(field)
                }
                Column::Ts => ts = Some(self.ts(l, field.clone()).map_err(miscount)?),
                Column::Field(k) => {
                    self.values[*k] = parse_field(l, field.clone(), self.map.nulls.as_deref())
                        .map_err(miscount)?
                }
                Column::Skip => {}
                Column::Text(t) => {
                    if last && bytes[field.clone()].contains(&b',') {
                        return Err(RowError::ColumnCount);
                    }
                    if let Some(r) = self.texts.get_mut(*t) {
                        *r = field;
                    }
                }
            }
        }
        Ok((key, ts.ok_or(RowError::BadTimestamp)?))
    }

    /// A line of the `key,ts,value` layout in its plain form, which the
    /// general path decodes the same way: a non-empty ASCII key, a
    /// millisecond timestamp of at most 18 digits and a number. Gives the
    /// key's end, the timestamp and the value; `None` for any other line.
    #[inline(always)]
    fn plain(&self, line: &[u8]) -> Option<(usize, i64, f64)> {
        let (c1, ts, c2) = self.plain_head(line, find_comma)?;
        // A NaN goes the general way, which knows whether it may be NULL.
        let value = numfmt::parse_f64(&line[c2 + 1..]).filter(|v| !v.is_nan())?;
        Some((c1, ts, value))
    }

    /// The plain layout's key and timestamp at the start of `b`: the key
    /// ends at the comma `comma` finds. Gives that comma, the timestamp and
    /// the comma after it.
    #[inline(always)]
    fn plain_head(
        &self,
        b: &[u8],
        comma: impl Fn(&[u8]) -> Option<usize>,
    ) -> Option<(usize, i64, usize)> {
        if !self.simple || self.map.timestamp != TsFormat::Millis {
            return None;
        }
        let c1 = comma(b)?;
        let key = &b[..c1];
        // A key in quotes goes the general way, which unquotes it.
        if key.is_empty() || key[0] == b'"' || !key.is_ascii() {
            return None;
        }
        // Digits cannot run past a line's newline.
        let (v, c2) = digits_to_comma(b, c1 + 1)?;
        Some((c1, v.checked_mul(self.unit_per_ms)?, c2))
    }

    /// [`Decoder::plain`] for the line at the start of `b` (complete lines,
    /// each ending in a newline), whose end is found as it is parsed: gives
    /// the line's length too. `None` wherever `plain` might decode the line
    /// in another way (a number `str::parse` takes in another form, say):
    /// the caller then finds the line's end and asks `plain`.
    #[inline(always)]
    fn plain_line(&self, b: &[u8]) -> Option<(usize, (usize, i64, f64))> {
        let (c1, ts, c2) = self.plain_head(b, find_comma_in_line)?;
        let (value, len) = numfmt::parse_decimal_nl(&b[c2 + 1..])?;
        Some((c2 + 1 + len, (c1, ts, value)))
    }

    #[inline(always)]
    fn ts(&self, line: Line<'_>, r: Range<usize>) -> Result<i64, RowError> {
        let field = &line.bytes[r.clone()];
        let scale = |v: i64, num: i64, den: i64| {
            v.checked_mul(num)
                .map(|x| x / den)
                .ok_or(RowError::BadTimestamp)
        };
        match self.map.timestamp {
            TsFormat::Millis => scale(
                parse_i64(field).ok_or(RowError::BadTimestamp)?,
                self.unit_per_ms,
                1,
            ),
            TsFormat::Seconds => scale(
                parse_i64(field).ok_or(RowError::BadTimestamp)?,
                1000 * self.unit_per_ms,
                1,
            ),
            TsFormat::Micros => scale(
                parse_i64(field).ok_or(RowError::BadTimestamp)?,
                self.unit_per_ms,
                1000,
            ),
            TsFormat::Datetime => {
                let s = line.str(r)?;
                scale(
                    parse_datetime_ms(s).ok_or(RowError::BadTimestamp)?,
                    self.unit_per_ms,
                    1,
                )
            }
        }
    }
}

/// Marks the branch that calls it as rarely taken, so that the loop over
/// rows keeps its common path together (`std::hint::cold_path` needs Rust
/// 1.95; weir builds with 1.90).
#[cold]
#[inline(never)]
fn cold() {}

/// Lets a decoded row into the engine if `w` keeps it: its key (`key` for
/// a mapping without a key column), the source's scalar functions, then
/// [`Results::feed`].
#[inline(always)]
fn admit<S: Results>(
    (w, engine): (&mut S, &mut Engine),
    (values, texts): (&mut [f64], &[Range<usize>]),
    row: Line<'_>,
    decoded: Result<(Option<Range<usize>>, i64), RowError>,
    key: &str,
    (scalars, no_scalars): (&mut crate::functions::Scalars, bool),
    source: usize,
) -> Result<(), RowError> {
    let (k, ts) = decoded?;
    let key = k.map_or(Ok(key), |k| row.str(k))?;
    let fields = TextFields {
        line: row,
        ranges: texts,
    };
    if !w.keep(key, ts, values, &fields) {
        engine.count_filtered();
        return Ok(());
    }
    if !no_scalars {
        scalars
            .apply(ts, values)
            .map_err(|i| RowError::Function(i as u16))?;
    }
    w.feed(engine, source, key, ts, values, &fields)
        .map_err(RowError::Rejected)
}

/// [`admit`] for a row with a quote: decoded from its [`unquote`]d copy,
/// as a CSV file with quotes (RFC 4180) reads (a `"` inside a field that
/// does not start with one is text, so such a row decodes as it is). Out of line, so that
/// the loop over rows stays as it is.
#[cold]
#[inline(never)]
fn requoted<S: Results>(
    dec: &mut Decoder<'_>,
    line: &[u8],
    to: (&mut S, &mut Engine),
    key: &str,
    scalars: (&mut crate::functions::Scalars, bool),
    source: usize,
) -> Result<(), RowError> {
    let want = dec.map.columns.len().saturating_sub(1);
    let mut copy = std::mem::take(&mut dec.copy);
    let mut commas = std::mem::take(&mut dec.copy_commas);
    let res = unquote(line, &mut copy, &mut commas, want).and_then(|extra| {
        // More fields than columns: only a skipped last column takes them
        // (as it does in a row without quotes).
        if extra && dec.map.columns.last() != Some(&Column::Skip) {
            return Err(RowError::ColumnCount);
        }
        let mut row = Line {
            bytes: &copy,
            text: std::str::from_utf8(&copy).ok(),
        };
        dec.unquoted = true;
        let decoded = dec.decode(&mut row, &commas);
        dec.unquoted = false;
        admit(
            to,
            (&mut dec.values, &dec.texts),
            row,
            decoded,
            key,
            scalars,
            source,
        )
    });
    dec.copy = copy;
    dec.copy_commas = commas;
    res
}

/// `line`'s fields into `out` without their quotes, joined by commas, and
/// the positions of those commas (at most `want`) into `commas`. A field
/// that starts with `"` ends at the next `"` not doubled (`""` inside it is
/// one `"`) and may hold commas; a field that does not is taken as it is
/// (a `"` inside it included), as Flink's csv format reads them. A quoted
/// field cannot span lines.
///
/// Fields past the `want + 1`-th are joined to it, commas included, as
/// the last column of an unquoted row spans to the line's end: gives
/// whether there were any.
///
/// # Errors
/// [`RowError::BadQuote`] for a quoted field not closed on the line or
/// followed by anything but a comma.
fn unquote(
    line: &[u8],
    out: &mut Vec<u8>,
    commas: &mut Vec<usize>,
    want: usize,
) -> Result<bool, RowError> {
    let mut extra = false;
    out.clear();
    commas.clear();
    let mut i = 0;
    loop {
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match line.get(i) {
                    None => return Err(RowError::BadQuote),
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                        out.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            match line.get(i) {
                None | Some(b',') => {}
                // `\r` before the newline is taken off later, as for any row.
                Some(b'\r') if i + 1 == line.len() => {}
                Some(_) => return Err(RowError::BadQuote),
            }
        } else {
            let end = memchr::memchr(b',', &line[i..]).map_or(line.len(), |e| i + e);
            out.extend_from_slice(&line[i..end]);
            i = end;
        }
        match line.get(i) {
            Some(b',') => {
                if commas.len() == want {
                    extra = true;
                } else {
                    commas.push(out.len());
                }
                out.push(b',');
                i += 1;
            }
            Some(b'\r') => {
                out.push(b'\r');
                return Ok(extra);
            }
            _ => return Ok(extra),
        }
    }
}

/// The separators of CSV rows, `,` and `\n`, in order, found with the
/// `memchr` crate's vector search (a byte-by-byte search costs several
/// instructions a byte, eight bytes a word about two).
enum Seps<'b> {
    /// Newlines only (the plain layout finds its own commas).
    Lines(memchr::Memchr<'b>),
    /// Commas and newlines.
    All(memchr::Memchr2<'b>),
}

impl<'b> Seps<'b> {
    fn new(b: &'b [u8], commas: bool) -> Self {
        match commas {
            false => Seps::Lines(memchr::memchr_iter(b'\n', b)),
            true => Seps::All(memchr::memchr2_iter(b',', b'\n', b)),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        match self {
            Seps::Lines(it) => it.next(),
            Seps::All(it) => it.next(),
        }
    }
}

/// Runs `input` through `pf`'s pipeline reading source `source` (index),
/// writes results to `out`, and calls `on_bad` for each bad row.
///
/// # Errors
/// I/O errors of `input` or `out`. Bad rows are not errors.
pub fn replay<R: Read, W: Write>(
    pf: &PipelineFile,
    source: usize,
    input: R,
    out: W,
    on_bad: impl FnMut(&BadRow, &[u8]),
) -> io::Result<(Summary, Engine)> {
    let ops: Vec<OpInfo> = pf
        .spec
        .operators
        .iter()
        .map(|o| match &o.kind {
            OperatorKind::Window(w) => OpInfo {
                id: o.id.clone(),
                anomaly_col: w.detect.is_some(),
                update_col: w.allowed_lateness > 0,
                count_first: matches!(
                    w.aggregates.first(),
                    Some(weir_core::agg::AggKind::Count | weir_core::agg::AggKind::Rows)
                ),
                alarm_at: None,
            },
            OperatorKind::Detect(DetectSpec {
                detector: DetectorSpec::Multivariate { config, .. },
                ..
            }) => OpInfo {
                id: o.id.clone(),
                anomaly_col: false,
                update_col: false,
                count_first: false,
                alarm_at: Some(config.threshold),
            },
            _ => match pf.functions.keyed(&o.id).map(|d| &d.kind) {
                Some(crate::functions::Kind::Keyed { columns, flag, .. }) => OpInfo {
                    id: o.id.clone(),
                    anomaly_col: *flag,
                    update_col: false,
                    count_first: columns.first().is_some_and(|c| c == "count"),
                    alarm_at: None,
                },
                _ => OpInfo {
                    id: o.id.clone(),
                    anomaly_col: false,
                    update_col: false,
                    count_first: false,
                    alarm_at: None,
                },
            },
        })
        .collect();
    let only_scores = pf.spec.operators.len() == 1
        && matches!(pf.spec.operators[0].kind, OperatorKind::Detect(_));
    let mut w = Writer {
        engine_ops: ops,
        prefix_op: pf.spec.operators.len() > 1,
        ts_format: pf.csv[source].timestamp,
        span: ((0, 0), b"0,0".to_vec()),
    };
    let mut header: Vec<u8> = if only_scores {
        b"timestamp,value,anomaly_score\n".to_vec()
    } else {
        Vec::new()
    };
    if let (true, OperatorKind::Detect(d)) = (only_scores, &pf.spec.operators[0].kind) {
        if !d.fields.is_empty() {
            header = b"timestamp,anomaly_score,alarm".to_vec();
            for f in &d.fields {
                header.extend_from_slice(b",contrib_");
                header.extend_from_slice(f.as_bytes());
            }
            header.push(b'\n');
        }
    }
    replay_with(pf, source, input, out, &header, &mut w, on_bad)
}

/// [`replay`] with another output: `header` is written first, then what
/// `results` makes of each engine output; samples `results` does not
/// [`keep`](Results::keep) never reach the engine.
///
/// # Errors
/// I/O errors of `input` or `out`. Bad rows are not errors.
#[inline(never)]
pub fn replay_with<R: Read, W: Write, S: Results>(
    pf: &PipelineFile,
    source: usize,
    mut input: R,
    mut out: W,
    header: &[u8],
    w: &mut S,
    mut on_bad: impl FnMut(&BadRow, &[u8]),
) -> io::Result<(Summary, Engine)> {
    let started = Instant::now();
    let mut engine = pf
        .spec
        .clone()
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut dec = Decoder::new(pf, source);
    let (map, simple) = (dec.map, dec.simple);
    let mut scalars = pf.functions.scalars(source);
    // Without functions, no call per row.
    let no_scalars = scalars.is_empty();
    let mut obuf: Vec<u8> = Vec::with_capacity(1 << 17);
    obuf.extend_from_slice(header);
    let mut sum = Summary::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0usize;
    let mut line_no = 0u64;
    let mut skip_header = map.header;
    let mut eof = false;
    let mut overlong = false;
    // A row's first commas, as many as split its columns.
    let want = map.columns.len().saturating_sub(1);
    let mut commas: Vec<usize> = Vec::with_capacity(want);
    while !eof {
        let n = input.read(&mut buf[filled..])?;
        if n == 0 {
            eof = true;
            if filled > 0 && buf[filled - 1] != b'\n' {
                buf[filled] = b'\n';
                filled += 1;
            }
        }
        filled += n;
        // Complete lines are checked for UTF-8 once, as one block, rather
        // than field by field: `valid` is how far from `base` `text` reaches.
        let end = buf[..filled]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        let (mut base, mut valid, mut text) = (0, 0, "");
        let mut pos = 0;
        // The plain layout finds its own commas (`Decoder::plain`).
        let mut seps = Seps::new(&buf[..end], !simple);
        loop {
            // The next separator; in the plain layout, the next line's end,
            // found as the line is parsed where it can be.
            let (sep, plain) = if simple {
                if pos >= end {
                    break;
                }
                match dec.plain_line(&buf[pos..end]) {
                    Some((len, p)) => (pos + len, Some(p)),
                    None => {
                        cold();
                        let Some(i) = memchr::memchr(b'\n', &buf[pos..end]) else {
                            break;
                        };
                        (pos + i, dec.plain(&buf[pos..pos + i]))
                    }
                }
            } else {
                match seps.next() {
                    Some(sep) => (sep, None),
                    None => break,
                }
            };
            if buf[sep] == b',' {
                if commas.len() < want {
                    commas.push(sep - pos);
                }
                continue;
            }
            let nl = sep - pos;
            let line = &buf[pos..sep];
            if simple && plain.is_none() {
                cold();
                // Off the plain path: this line's commas, as the general
                // path finds them.
                for (i, &c) in line.iter().enumerate() {
                    if c == b',' && commas.len() < want {
                        commas.push(i);
                    }
                }
            }
            if sep > valid {
                cold();
                // From the start of this line (a character boundary: lines
                // end in an ASCII newline) up to the first bad byte, if any.
                let block = &buf[pos..end];
                text = match std::str::from_utf8(block) {
                    Ok(t) => t,
                    Err(e) => std::str::from_utf8(&block[..e.valid_up_to()]).unwrap_or(""),
                };
                base = pos;
                valid = pos + text.len();
            }
            let mut row = Line {
                bytes: line,
                text: if sep <= valid {
                    text.get(pos - base..pos - base + nl)
                } else {
                    None
                },
            };
            pos = sep + 1;
            let row_commas = &commas[..];
            'row: {
                line_no += 1;
                if overlong {
                    cold();
                    overlong = false;
                    sum.rows += 1;
                    sum.bad_rows += 1;
                    on_bad(
                        &BadRow {
                            line: line_no,
                            error: RowError::TooLong,
                        },
                        b"",
                    );
                    break 'row;
                }
                if skip_header {
                    cold();
                    skip_header = false;
                    break 'row;
                }
                if line.is_empty() || line == b"\r" {
                    cold();
                    break 'row;
                }
                sum.rows += 1;
                let res = 'res: {
                    let decoded = match plain {
                        Some((c1, ts, v)) => {
                            dec.values[0] = v;
                            Ok((Some(0..c1), ts))
                        }
                        None => {
                            let d = dec.decode(&mut row, row_commas);
                            // A row with a quote anywhere (a quoted comma
                            // shifts every field after it, whichever column
                            // it is in) is read unquoted, out of this loop.
                            if memchr::memchr(b'"', line).is_some() {
                                break 'res requoted(
                                    &mut dec,
                                    line,
                                    (w, &mut engine),
                                    &map.key,
                                    (&mut scalars, no_scalars),
                                    source,
                                );
                            }
                            d
                        }
                    };
                    admit(
                        (w, &mut engine),
                        (&mut dec.values, &dec.texts),
                        row,
                        decoded,
                        &map.key,
                        (&mut scalars, no_scalars),
                        source,
                    )
                };
                if let Err(error) = res {
                    cold();
                    sum.bad_rows += 1;
                    on_bad(
                        &BadRow {
                            line: line_no,
                            error,
                        },
                        line,
                    );
                }
                while let Some(o) = engine.poll_output() {
                    w.write(&engine, &o, &mut sum, &mut obuf);
                }
                if obuf.len() >= 1 << 16 {
                    cold();
                    out.write_all(&obuf)?;
                    obuf.clear();
                }
            }
            commas.clear();
        }
        // What this block's rows gave goes out now: a live input (`weir
        // sql` over a broker) sends a block as it arrives, and its rows must
        // not wait for the next one.
        w.drain(&mut sum, &mut obuf);
        if !obuf.is_empty() {
            out.write_all(&obuf)?;
            obuf.clear();
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        if filled == buf.len() - 1 || (filled >= MAX_LINE && !eof) {
            // A line longer than the limit: drop what we have of it.
            filled = 0;
            overlong = true;
        }
    }
    engine.handle_end_of_input();
    while let Some(o) = engine.poll_output() {
        w.write(&engine, &o, &mut sum, &mut obuf);
    }
    out.write_all(&obuf)?;
    out.flush()?;
    sum.elapsed = started.elapsed();
    Ok((sum, engine))
}

/// `s` as a CSV field: in quotes (a quote doubled) when it holds a comma,
/// a quote or a line break.
pub fn push_text(b: &mut Vec<u8>, s: &str) {
    // Bytes, not a `char` pattern: several times fewer instructions; the
    // four bytes that need quotes are all at most `,`, so most bytes take
    // one comparison.
    if s.bytes()
        .any(|c| c <= b',' && matches!(c, b',' | b'"' | b'\n' | b'\r'))
    {
        b.push(b'"');
        b.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        b.push(b'"');
    } else {
        b.extend_from_slice(s.as_bytes());
    }
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pipeline: &str, input: &[u8]) -> (Summary, Vec<(u64, RowError)>, String) {
        let pf = crate::pipeline_file::parse("t.toml", pipeline).unwrap();
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let (sum, _) = replay(&pf, 0, input, &mut out, |b, _| bad.push((b.line, b.error))).unwrap();
        (sum, bad, String::from_utf8(out).unwrap())
    }

    const W1: &str = include_str!("../../examples/w1.toml");

    /// What the general path makes of `line`: key range, timestamp, value.
    fn general(
        dec: &mut Decoder<'_>,
        line: &[u8],
    ) -> Result<(Option<Range<usize>>, i64, f64), RowError> {
        let commas: Vec<usize> = line
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b',')
            .map(|(i, _)| i)
            .take(2)
            .collect();
        let mut row = Line {
            bytes: line,
            text: std::str::from_utf8(line).ok(),
        };
        let (key, ts) = dec.decode(&mut row, &commas)?;
        Ok((key, ts, dec.values[0]))
    }

    #[test]
    fn w1_rows_take_the_plain_path() {
        let pf = crate::pipeline_file::parse("t.toml", W1).unwrap();
        let dec = Decoder::new(&pf, 0);
        assert_eq!(
            dec.plain(b"s0197,1700000000033,-21.8924"),
            Some((5, 1700000000033, -21.8924))
        );
        for line in [
            &b"s0197,1700000000033,21.8924\r"[..],
            b"s\xc3\xa9,1700000000033,21.8924",
            b",1700000000033,21.8924",
            b"s1,-1700000000033,21.8924",
            b"s1,1700000000033,21.8924,",
            b"s1,17000000000331234567,2",
            b"s1,1700000000033, 2",
        ] {
            assert_eq!(dec.plain(line), None, "{}", String::from_utf8_lossy(line));
            let block = [line, b"\ns1,1,2\n"].concat();
            assert_eq!(
                dec.plain_line(&block),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // In place, in a block of lines: the line's end comes with it.
        let block = b"s0197,1700000000033,-21.8924\ns1,1,2\n";
        assert_eq!(
            dec.plain_line(block),
            Some((28, (5, 1700000000033, -21.8924)))
        );
        // A key does not reach into the next line, nor a value.
        assert_eq!(dec.plain_line(b"s0197\ns1,1,2\n"), None);
        assert_eq!(dec.plain_line(b"s0197,1,\n2\n"), None);
        assert_eq!(dec.plain_line(b"s0197,1,2"), None);
    }

    proptest::proptest! {
        #[test]
        fn a_line_parsed_in_place_is_the_line_found_first(
            lines in proptest::collection::vec(
                "[sé,0-9 .\r-]{0,6},[0-9a,-]{0,20},[-0-9.e ,\r]{0,12}|[a-z0-9,.]{0,8}", 1..4),
        ) {
            // plain_line on a block of lines: where it decodes the first
            // line, it ends where that line ends and agrees with plain.
            let pf = crate::pipeline_file::parse("t.toml", W1).unwrap();
            let dec = Decoder::new(&pf, 0);
            let block = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            let b = block.as_bytes();
            let first = b.iter().position(|&c| c == b'\n').unwrap();
            if let Some((len, (c1, ts, v))) = dec.plain_line(b) {
                proptest::prop_assert_eq!(len, first);
                let (c1b, tsb, vb) = dec.plain(&b[..first]).unwrap();
                proptest::prop_assert_eq!((c1, ts, v.to_bits()), (c1b, tsb, vb.to_bits()));
            }
        }

        #[test]
        fn the_plain_path_decodes_as_the_general_path(
            line in "[sé,0-9 .\r-]{0,6},[0-9a,-]{0,20},[-0-9.e ,\r]{0,12}"
        ) {
            let pf = crate::pipeline_file::parse("t.toml", W1).unwrap();
            let mut dec = Decoder::new(&pf, 0);
            let line = line.as_bytes();
            if let Some((c1, ts, v)) = dec.plain(line) {
                let (key, ts2, v2) = general(&mut dec, line).unwrap();
                proptest::prop_assert_eq!(key, Some(0..c1));
                proptest::prop_assert_eq!(ts, ts2);
                proptest::prop_assert_eq!(v.to_bits(), v2.to_bits());
            }
        }

        #[test]
        fn digits_to_comma_reads_the_digits_up_to_a_comma(
            pre in "[0-9a-z,]{0,9}",
            digits in "[0-9]{0,20}",
            rest in "[0-9,:.\\xfa-\\xff a-]{0,12}",
        ) {
            // Byte by byte: 1 to 18 digits from `pre`'s end, then a comma.
            let line = format!("{pre}{digits}{rest}");
            let b = line.as_bytes();
            let from = pre.len();
            let n = b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
            let want = (n > 0 && n <= 18 && b.get(from + n) == Some(&b','))
                .then(|| (line[from..from + n].parse::<i64>().unwrap(), from + n));
            proptest::prop_assert_eq!(digits_to_comma(b, from), want, "{:?}", line);
        }

        #[test]
        fn integers_parse_as_std(s in "-?[0-9]{0,20}|[0-9:/ .a-]{0,20}") {
            let want = s.parse::<i64>().ok().filter(|_| !s.starts_with('+'));
            proptest::prop_assert_eq!(parse_i64(s.as_bytes()), want, "{}", s);
        }
    }

    /// Fields in quotes, as RFC 4180 writes them: a comma or a doubled
    /// quote inside, a quoted number; a quote inside an unquoted field is
    /// text. A key with a comma or quote is written back in quotes.
    #[test]
    fn quoted_fields_read_as_csv_files_write_them() {
        let input = b"s1,1700000000000,1.0\n\
            \"s,2\",1700000000001,2.0\n\
            \"s\"\"3\",1700000000002,3.0\n\
            s1,\"1700000000003\",\"4.5\"\n\
            q\"x,1700000000004,5.0\n\
            \"open,1700000000005,6.0\n\
            \"s1\"x,1700000000006,7.0\n\
            \"s1\",1700000000007,8.0,\"extra\"\n\
            \"s1\",1700000000008,9.0\r\n\
            \"s,2\",1700000000009,\"\"\n";
        let (sum, bad, out) = run(W1, input);
        assert_eq!(sum.rows, 10);
        assert_eq!(
            bad,
            [
                (6, RowError::BadQuote),
                (7, RowError::BadQuote),
                (8, RowError::ColumnCount),
                (10, RowError::BadNumber),
            ]
        );
        let mut rows: Vec<&str> = out.lines().collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                "\"q\"\"x\",1700000000000,1700000010000,1,5.000000,5.000000,5.000000,0.000000,false",
                "\"s\"\"3\",1700000000000,1700000010000,1,3.000000,3.000000,3.000000,0.000000,false",
                "\"s,2\",1700000000000,1700000010000,1,2.000000,2.000000,2.000000,0.000000,false",
                "s1,1700000000000,1700000010000,3,4.833333,1.000000,9.000000,3.274480,false",
            ]
        );
        // The general layout (a skipped column, columns in another order).
        let general = W1.replace(
            r#"columns = ["key", "ts", "value"]"#,
            r#"columns = ["ts", "key", "_", "value"]"#,
        );
        assert_ne!(general, W1);
        let input = b"1700000000000,\"a,b\",\"x,\"\"y\",1.0\n\
            1700000000001,\"a,x,2.0\n\
            \"1700000000002\",\"a,b\",,3.0\n";
        let (sum, bad, out) = run(&general, input);
        assert_eq!((sum.rows, bad), (3, vec![(2, RowError::BadQuote)]));
        assert_eq!(
            out,
            "\"a,b\",1700000000000,1700000010000,2,2.000000,1.000000,3.000000,1.000000,false\n"
        );
        // A quoted comma in a skipped column shifts nothing (it used to
        // shift the value after it); fields past a skipped last column are
        // taken by it, quotes or not.
        let skips = W1.replace(
            r#"columns = ["key", "ts", "value"]"#,
            r#"columns = ["key", "ts", "_", "_", "value", "_"]"#,
        );
        let input = b"k,1700000000000,\"a,b\",3.5,1.0,z\n\
            \"k\",1700000000001,x,3.5,2.0,z,y\n\
            k,1700000000002,x,3.5,3.0,z,y\n";
        let (sum, bad, out) = run(&skips, input);
        assert_eq!((sum.rows, bad), (3, vec![]));
        assert_eq!(
            out,
            "k,1700000000000,1700000010000,3,2.000000,1.000000,3.000000,0.816497,false\n"
        );
        // A quoted value with a comma in it is not a number (not a column
        // too many).
        let (_, bad, _) = run(
            W1,
            b"k,1700000000000,\"1,5\"\n\"k\",1700000000001,\"1,5\"\n",
        );
        assert_eq!(bad, [(1, RowError::BadNumber), (2, RowError::BadNumber)]);
    }

    #[test]
    fn a_bad_utf8_byte_spoils_only_its_own_row() {
        let mut input = Vec::new();
        input.extend_from_slice(b"s1,1700000000000,1.0\n");
        input.extend_from_slice(b"s\xff,1700000000001,2.0\n");
        input.extend_from_slice(b"s1,1700000000002,2\xc3\n");
        input.extend_from_slice(b"s1,17000000\xe2\x82,3.0\n");
        input.extend_from_slice("s\u{e9},1700000000003,4.0\r\n".as_bytes());
        input.extend_from_slice(b"s1,1700000000004,5.0\r\n");
        input.extend_from_slice(b"s1,1700000000005,6.0,\xff\n");
        input.extend_from_slice(b"s1,1700000000006,7.0");
        let (sum, bad, out) = run(W1, &input);
        assert_eq!(sum.rows, 8);
        assert_eq!(
            bad,
            [
                (2, RowError::NotUtf8),
                (3, RowError::NotUtf8),
                (4, RowError::BadTimestamp),
                (7, RowError::ColumnCount),
            ]
        );
        assert_eq!(
            out,
            "s1,1700000000000,1700000010000,3,4.333333,1.000000,7.000000,2.494438,false\n\
             s\u{e9},1700000000000,1700000010000,1,4.000000,4.000000,4.000000,0.000000,false\n"
        );
    }

    #[test]
    fn a_bad_utf8_byte_in_a_skipped_column_is_no_error() {
        let pipeline = W1.replace(
            r#"columns = ["key", "ts", "value"]"#,
            r#"columns = ["key", "_", "ts", "value"]"#,
        );
        let input = b"s1,\xff\xfe,1700000000000,1.0\ns2,x,1700000000000,2\xff\ns3,\xc3\xa9,1700000000000,3.0\n";
        let (sum, bad, out) = run(&pipeline, input);
        assert_eq!(sum.rows, 3);
        assert_eq!(bad, [(2, RowError::NotUtf8)]);
        assert_eq!(out.lines().count(), 2, "{out}");
    }
}
