//! What `weir run` publishes: topics, deterministic ids and payloads.
//!
//! Pure: no I/O. Every output carries an id made only of what the engine's
//! input determines, so a restart that replays the journal publishes the
//! same ids with the same payloads and consumers drop the duplicates:
//!
//! | output | id |
//! |---|---|
//! | window result, first firing | `<gateway>/<op>/<key>/<window start>` |
//! | window update (allowed lateness) | `<gateway>/<op>/<key>/<window start>/u<lsn>` |
//! | flagged per-sample score | `<gateway>/<op>/<key>/<ts>/<lsn>` |
//! | custom operator result | `<gateway>/<op>/<key>/<ts>/<tag>/<lsn>` |
//!
//! `lsn` is the journal position of the record whose processing emitted the
//! output. JSON payloads are one object:
//! `{"id":…,"gateway":…,"op":…,"key":…,"start":…,"end":…,"emission":"final"|"update",
//! "<aggregate>":…,…,"anomaly":true|false,"score":…}` (windows) or
//! `{"id":…,"gateway":…,"op":…,"key":…,"ts":…,"value":…,"score":…,"anomaly":true}`
//! (scores); floats with 6 decimals, as `weir replay` writes them. CBOR
//! payloads are the same map.
//!
//! A SQL query with `HAVING` or computed result columns publishes its
//! result rows instead ([`crate::sql::stage`]): the operators' results for
//! one key and window joined into one row, dropped unless it passes
//! `HAVING`, with id `<gateway>/<pipeline>/<key>/<window start>` and
//! `{"id":…,"gateway":…,"op":<pipeline>,"key":…,"start":…,"end":…,
//! "emission":…,"<result column>":…,…}` (timestamps as epoch ms, `INT` /
//! `BIGINT` as integers, `NULL` as null); it is also an alert when one of
//! its detectors flagged the window.

use std::sync::{Arc, Mutex};

use weir_core::agg::AggKind;
use weir_core::expr::Value;
use weir_core::output::{Emission, Output, WindowResult};
use weir_core::spec::{OperatorKind, PipelineSpec, WindowKind};

use crate::gateway::OutputFormat;
use crate::numfmt::{push_f64, push_i64, push_u64};

/// A SQL result row of one key and window that passed `HAVING`: the
/// values of the query's result columns, and whether a detector flagged it.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow {
    /// A detector of the query flagged the window.
    pub flagged: bool,
    /// One value per result column, in the query's order.
    pub values: Vec<Value>,
    /// A row of a query without `GROUP BY` ([`crate::sql::Query::per_row`]):
    /// the reading's time and the row's span (its window's, or `[ts, ts +
    /// 1)`); its id is `…/<ts>/<lsn>`, one per reading.
    pub at: Option<RowAt>,
    /// The reading's rows in its other windows (a query without `GROUP
    /// BY` over `HOP` or `CUMULATE`), each with its own `at`.
    pub more: Vec<SqlRow>,
}

/// Where a row of a query without `GROUP BY` is ([`SqlRow::at`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowAt {
    /// The reading's time.
    pub ts: i64,
    /// The row's `start` in the envelope.
    pub start: i64,
    /// Its `end`.
    pub end: i64,
    /// The reading is in several windows: the id ends with `/<start>`.
    pub window_in_id: bool,
}

/// What kind of topic an output goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `<prefix>/<gateway>/windows/<key>`.
    Windows,
    /// `<prefix>/<gateway>/alerts/<key>`.
    Alerts,
}

/// One encoded output, ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The topic.
    pub topic: String,
    /// The id (also inside the payload).
    pub id: String,
    /// Where it goes.
    pub channel: Channel,
    /// The payload.
    pub payload: Vec<u8>,
}

struct OpNames {
    id: String,
    aggs: Vec<String>,
    count_first: bool,
}

/// Turns engine outputs into MQTT messages.
#[derive(Debug)]
pub struct OutputEncoder {
    gateway: String,
    prefix: String,
    format: OutputFormat,
    ops: Vec<OpNames>,
    /// A SQL query whose result rows are published instead of the
    /// operators' windows, with the pipeline's name and the join state.
    query: Option<SqlRows>,
}

/// The post-window stage of a SQL query in the agent.
#[derive(Debug)]
struct SqlRows {
    q: Arc<crate::sql::Query>,
    name: String,
    /// Windows of one row come from one record's outputs (see
    /// [`crate::sql::stage::Join`]); behind a lock because encoding
    /// takes `&self`.
    join: Mutex<crate::sql::stage::Join>,
}

impl std::fmt::Debug for OpNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// A topic level from a key: MQTT wildcards and separators become `_`.
pub fn topic_level(key: &str) -> String {
    let mut t = String::with_capacity(key.len());
    push_topic_level(&mut t, key);
    t
}

/// Appends [`topic_level`]`(key)` to `t` (a key without those characters
/// is copied whole).
fn push_topic_level(t: &mut String, key: &str) {
    if !key.bytes().any(|b| matches!(b, b'/' | b'+' | b'#' | 0)) {
        t.push_str(key);
        return;
    }
    t.extend(key.chars().map(|c| {
        if matches!(c, '/' | '+' | '#' | '\0') {
            '_'
        } else {
            c
        }
    }));
}

/// A JSON string: `"`, `\\` and control characters escaped, the rest
/// (UTF-8 included) copied in runs.
fn json_str(b: &mut Vec<u8>, s: &str) {
    b.reserve(s.len() + 2);
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if c == b'"' || c == b'\\' || c < 0x20 {
            b.extend_from_slice(&bytes[run..i]);
            match c {
                b'"' => b.extend_from_slice(b"\\\""),
                b'\\' => b.extend_from_slice(b"\\\\"),
                c => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    b.extend_from_slice(b"\\u00");
                    b.push(HEX[(c >> 4) as usize]);
                    b.push(HEX[(c & 15) as usize]);
                }
            }
            run = i + 1;
        }
    }
    b.extend_from_slice(&bytes[run..]);
    b.push(b'"');
}

/// A JSON number: 6 decimals, `null` for a non-finite value.
fn json_f64(b: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        push_f64(b, x);
    } else {
        b.extend_from_slice(b"null");
    }
}

enum Val<'a> {
    Str(&'a str),
    I(i64),
    F(f64),
    U(u64),
    B(bool),
    Null,
}

/// A tiny map writer for both formats.
struct MapOut<'b> {
    b: &'b mut Vec<u8>,
    format: OutputFormat,
    first: bool,
}

impl MapOut<'_> {
    fn field(&mut self, k: &str, v: Val<'_>) {
        match self.format {
            OutputFormat::Json => {
                self.b.push(if self.first { b'{' } else { b',' });
                json_str(self.b, k);
                self.b.push(b':');
                match v {
                    Val::Str(s) => json_str(self.b, s),
                    Val::I(i) => push_i64(self.b, i),
                    Val::U(u) => push_u64(self.b, u),
                    Val::F(f) => json_f64(self.b, f),
                    Val::B(x) => self.b.extend_from_slice(if x { b"true" } else { b"false" }),
                    Val::Null => self.b.extend_from_slice(b"null"),
                }
            }
            OutputFormat::Cbor => {
                let mut e = minicbor::Encoder::new(&mut *self.b);
                let r = e.str(k).and_then(|e| match v {
                    Val::Str(s) => e.str(s),
                    Val::I(i) => e.i64(i),
                    Val::U(u) => e.u64(u),
                    Val::F(f) => e.f64(f),
                    Val::B(x) => e.bool(x),
                    Val::Null => e.null(),
                });
                // Writing to a Vec cannot fail.
                debug_assert!(r.is_ok());
            }
        }
        self.first = false;
    }

    fn finish(self) {
        match self.format {
            OutputFormat::Json => {
                if self.first {
                    self.b.push(b'{');
                }
                self.b.push(b'}');
            }
            OutputFormat::Cbor => self.b.push(0xff),
        }
    }
}

/// The names a window operator's aggregates are published under: their
/// own, except that `rows` (SQL's `COUNT(*)`) is `count`, as a query
/// without `NULL`s counts the same, unless the operator has a `count` too.
pub fn agg_names(aggs: &[AggKind]) -> Vec<String> {
    let count = aggs.contains(&AggKind::Count);
    aggs.iter()
        .map(|a| match a {
            AggKind::Rows if !count => "count".to_string(),
            _ => a.to_string(),
        })
        .collect()
}

impl OutputEncoder {
    /// An encoder for `spec`'s operators.
    pub fn new(gateway: &str, prefix: &str, format: OutputFormat, spec: &PipelineSpec) -> Self {
        let ops = spec
            .operators
            .iter()
            .map(|o| match &o.kind {
                OperatorKind::Window(w) => OpNames {
                    id: o.id.clone(),
                    aggs: agg_names(&w.aggregates),
                    count_first: matches!(
                        w.aggregates.first(),
                        Some(AggKind::Count | AggKind::Rows)
                    ),
                },
                // A multivariate detector: its fields, to name contributors.
                OperatorKind::Detect(d) if !d.fields.is_empty() => OpNames {
                    id: o.id.clone(),
                    aggs: d.fields.clone(),
                    count_first: false,
                },
                // A custom operator's window rows (a keyed user function).
                OperatorKind::Process(p) => OpNames {
                    id: o.id.clone(),
                    aggs: p.columns.clone(),
                    count_first: p.columns.first().is_some_and(|c| c == "count"),
                },
                _ => OpNames {
                    id: o.id.clone(),
                    aggs: Vec::new(),
                    count_first: false,
                },
            })
            .collect();
        OutputEncoder {
            gateway: gateway.into(),
            prefix: prefix.into(),
            format,
            ops,
            query: None,
        }
    }

    /// An encoder for a loaded pipeline: a SQL query with `HAVING`,
    /// computed result columns or an mqtt sink publishes its result rows
    /// (on the sink's topic, under its column names, when it has one).
    pub fn for_pipeline(
        gateway: &str,
        prefix: &str,
        format: OutputFormat,
        pf: &crate::pipeline_file::PipelineFile,
    ) -> Self {
        let mut e = Self::new(gateway, prefix, format, &pf.spec);
        e.query = pf
            .sql
            .clone()
            .filter(|q| q.publishes_rows())
            .map(|q| SqlRows {
                q,
                name: pf.spec.name.clone(),
                join: Mutex::default(),
            });
        e
    }

    /// The topic prefix of this gateway's own outputs (`<prefix>/<gateway>/`).
    pub fn own_prefix(&self) -> String {
        format!("{}/{}/", self.prefix, self.gateway)
    }

    fn begin<'b>(&self, b: &'b mut Vec<u8>) -> MapOut<'b> {
        if self.format == OutputFormat::Cbor {
            b.push(0xbf); // map of indefinite length
        }
        MapOut {
            b,
            format: self.format,
            first: true,
        }
    }

    /// A window message's id (`gw/op/key/start`, `…/u<lsn>` for an update)
    /// and its payload opened with the envelope (`docs/wire.md`).
    fn window_head<'b>(
        &self,
        payload: &'b mut Vec<u8>,
        op: &str,
        key: &str,
        w: &WindowResult,
        lsn: u64,
    ) -> (String, MapOut<'b>) {
        let update = w.emission == Emission::Update;
        let mut id = Vec::with_capacity(self.gateway.len() + op.len() + key.len() + 48);
        for part in [&self.gateway, op, key] {
            id.extend_from_slice(part.as_bytes());
            id.push(b'/');
        }
        push_i64(&mut id, w.start);
        if update {
            id.extend_from_slice(b"/u");
            push_u64(&mut id, lsn);
        }
        let id = String::from_utf8(id).expect("names and decimal digits are UTF-8");
        let m = self.envelope(payload, &id, op, key, (w.start, w.end), update);
        (id, m)
    }

    /// `payload` opened with a window message's envelope (`docs/wire.md`):
    /// id, gateway, op, key, start, end, emission.
    fn envelope<'b>(
        &self,
        payload: &'b mut Vec<u8>,
        id: &str,
        op: &str,
        key: &str,
        (start, end): (i64, i64),
        update: bool,
    ) -> MapOut<'b> {
        let mut m = self.begin(payload);
        m.field("id", Val::Str(id));
        m.field("gateway", Val::Str(&self.gateway));
        m.field("op", Val::Str(op));
        m.field("key", Val::Str(key));
        m.field("start", Val::I(start));
        m.field("end", Val::I(end));
        m.field(
            "emission",
            Val::Str(if update { "update" } else { "final" }),
        );
        m
    }

    /// Encodes one output emitted while processing journal record `lsn`.
    /// `key` is the output's key name. Window results give one message on
    /// the windows channel (if `windows`) and, when flagged, one on the
    /// alerts channel; flagged scores and custom results one alert; other
    /// outputs (unflagged scores, late samples) none.
    ///
    /// For a pipeline that publishes SQL result rows
    /// ([`OutputEncoder::publishes_rows`]), returns the row a window result
    /// completed, if it passed `HAVING` (whether or not it was published
    /// locally): the cloud link sends that row too.
    pub fn encode(
        &self,
        o: &Output,
        key: &str,
        lsn: u64,
        windows: bool,
        out: &mut Vec<Encoded>,
    ) -> Option<SqlRow> {
        match o {
            Output::Window(w) if self.query.is_some() => {
                return self.encode_row(w, key, lsn, windows, out)
            }
            Output::Score(s) if self.query.as_ref().is_some_and(|q| q.q.scores) => {
                let w = crate::sql::stage::score_row(s);
                return self.encode_row(&w, key, lsn, windows, out);
            }
            Output::Window(w) => {
                let op = &self.ops[w.op as usize];
                let flagged = w.anomaly.is_some_and(|a| a.flag);
                if !windows && !flagged {
                    return None;
                }
                let mut payload = Vec::with_capacity(self.window_capacity(op, key));
                let (id, mut m) = self.window_head(&mut payload, &op.id, key, w, lsn);
                for (i, (name, v)) in op.aggs.iter().zip(w.values.as_slice()).enumerate() {
                    if i == 0 && op.count_first {
                        m.field(name, Val::U(*v as u64));
                    } else {
                        m.field(name, Val::F(*v));
                    }
                }
                if let Some(a) = w.anomaly {
                    m.field("anomaly", Val::B(a.flag));
                    m.field("score", Val::F(a.score));
                }
                m.finish();
                self.push_window(out, key, id, payload, flagged, windows);
            }
            Output::Score(s) if s.verdict.flag => {
                let op = &self.ops[s.op as usize];
                let id = format!("{}/{}/{}/{}/{}", self.gateway, op.id, key, s.ts, lsn);
                let mut payload = Vec::with_capacity(160);
                let mut m = self.begin(&mut payload);
                m.field("id", Val::Str(&id));
                m.field("gateway", Val::Str(&self.gateway));
                m.field("op", Val::Str(&op.id));
                m.field("key", Val::Str(key));
                m.field("ts", Val::I(s.ts));
                m.field("value", Val::F(s.value));
                m.field("score", Val::F(s.verdict.score));
                m.field("anomaly", Val::B(true));
                let shares = s.contributions.as_slice();
                if !shares.is_empty() && shares.len() == op.aggs.len() {
                    // a multivariate alert names the fields that drive it
                    let (rank, lead) = s.contributions.leading();
                    let top: Vec<&str> = rank[..lead]
                        .iter()
                        .map(|&i| op.aggs[i as usize].as_str())
                        .collect();
                    m.field("top", Val::Str(&top.join(",")));
                    for (name, c) in op.aggs.iter().zip(shares) {
                        m.field(&format!("contrib_{name}"), Val::F(*c as f64));
                    }
                }
                m.finish();
                out.push(Encoded {
                    topic: self.topic(Channel::Alerts, key),
                    id,
                    channel: Channel::Alerts,
                    payload,
                });
            }
            Output::Custom(c) => {
                let op = &self.ops[c.op as usize];
                let id = format!(
                    "{}/{}/{}/{}/{}/{}",
                    self.gateway, op.id, key, c.ts, c.tag, lsn
                );
                let mut payload = Vec::with_capacity(160);
                let mut m = self.begin(&mut payload);
                m.field("id", Val::Str(&id));
                m.field("gateway", Val::Str(&self.gateway));
                m.field("op", Val::Str(&op.id));
                m.field("key", Val::Str(key));
                m.field("ts", Val::I(c.ts));
                m.field("value", Val::F(c.value));
                m.field("tag", Val::U(c.tag as u64));
                m.finish();
                out.push(Encoded {
                    topic: self.topic(Channel::Alerts, key),
                    id,
                    channel: Channel::Alerts,
                    payload,
                });
            }
            Output::Score(_) | Output::Late(_) => {}
        }
        None
    }

    /// Whether window results become SQL result rows (see
    /// [`OutputEncoder::for_pipeline`]).
    pub fn publishes_rows(&self) -> bool {
        self.query.is_some()
    }

    /// `key` as people read it ([`crate::sql::Query::shown_key`]); the
    /// dashboard shows keys this way.
    pub fn shown_key<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        match &self.query {
            Some(q) => q.q.shown_key(key),
            None => std::borrow::Cow::Borrowed(key),
        }
    }

    /// A SQL query's result row, once every operator has given its window.
    fn encode_row(
        &self,
        w: &WindowResult,
        key: &str,
        lsn: u64,
        windows: bool,
        out: &mut Vec<Encoded>,
    ) -> Option<SqlRow> {
        let sq = self.query.as_ref()?;
        let q = &*sq.q;
        if let Some(r) = &q.per_row {
            return self.encode_per_row(sq, r, w, key, lsn, windows, out);
        }
        let mut join = sq.join.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Some((flagged, values))) = join.offer(q, key, w, |parts| {
            let flagged = q.flags.iter().any(|&op| parts.get(op).is_some_and(|p| p.1));
            let mut row = Vec::new();
            q.window_row(key, w.start, w.end, parts, &mut row);
            if !q.passes(&row) {
                return None;
            }
            let mut values = Vec::new();
            q.project(&row, &mut values);
            Some((flagged, values))
        }) else {
            return None;
        };
        drop(join);
        let row = SqlRow {
            flagged,
            values,
            at: None,
            more: Vec::new(),
        };
        if !windows && !flagged {
            return Some(row);
        }
        // Several key columns: ids and topics carry the key as people read
        // it (the row carries each column).
        let shown = q.shown_key(key);
        let key = &*shown;
        let mut payload = Vec::with_capacity(256);
        let (id, mut m) = self.window_head(&mut payload, &sq.name, key, w, lsn);
        self.row_fields(q, &row.values, &mut m);
        m.finish();
        self.push_window(out, key, id, payload, flagged, windows);
        Some(row)
    }

    /// A row of a query without `GROUP BY` from its [`crate::sql::rows::RowsOp`]
    /// output `w` (`[ts, ts + 1)`, the reading's fields): the reading's
    /// row `[key, ts, fields…, key columns…]`, in its tumbling window (if
    /// the query reads one), through the query's window `WHERE`, as one
    /// message with id `gw/name/key/ts/lsn`.
    #[allow(clippy::too_many_arguments)]
    fn encode_per_row(
        &self,
        sq: &SqlRows,
        r: &crate::sql::rows::PerRow,
        w: &WindowResult,
        key: &str,
        lsn: u64,
        windows: bool,
        out: &mut Vec<Encoded>,
    ) -> Option<SqlRow> {
        let q = &*sq.q;
        let ts = w.start;
        if let Some(over) = &r.over {
            return self.encode_over(sq, over, w, key, windows, out);
        }
        let mut row = Vec::with_capacity(2 + q.columns_in + q.texts + 3);
        row.push(Value::Str(key.to_string()));
        row.push(Value::Ts(ts));
        let vals = w.values.as_slice();
        row.extend((0..q.columns_in).map(|i| match vals.get(i) {
            Some(x) if !x.is_nan() => Value::Num(*x),
            _ => Value::Null,
        }));
        if q.groups.is_some() {
            row.extend(
                crate::sql::groups::values(key)
                    .take(q.texts)
                    .map(|v| v.map_or(Value::Null, |s| Value::Str(s.into_owned()))),
            );
        }
        // A reading in several windows (HOP, CUMULATE) is a row in each,
        // its id naming the window's start.
        let mut spans = Vec::with_capacity(1);
        r.each_window(ts, |b| spans.push(b));
        let several = matches!(
            r.windows,
            Some(WindowKind::Sliding { .. } | WindowKind::Cumulate { .. })
        );
        let shown = q.shown_key(key);
        let n = row.len();
        let mut rows: Vec<SqlRow> = Vec::new();
        for span in spans {
            row.truncate(n);
            let (start, end) = match span {
                Some((s, e)) => {
                    row.extend([Value::Ts(s), Value::Ts(e), Value::Ts(e - 1)]);
                    (s, e)
                }
                None => (ts, ts.saturating_add(1)),
            };
            if !r.filter.as_ref().is_none_or(|f| f.test(&row)) {
                continue;
            }
            let mut values = Vec::new();
            q.project(&row, &mut values);
            let at = RowAt {
                ts,
                start,
                end,
                window_in_id: several,
            };
            if windows {
                let key = &*shown;
                let mut id = format!("{}/{}/{key}/{ts}/{lsn}", self.gateway, sq.name);
                if several {
                    id.push_str(&format!("/{start}"));
                }
                self.push_row(sq, key, id, (start, end), &values, out);
            }
            rows.push(SqlRow {
                flagged: false,
                values,
                at: Some(at),
                more: Vec::new(),
            });
        }
        let mut rows = rows.into_iter();
        let mut first = rows.next()?;
        first.more = rows.collect();
        Some(first)
    }

    /// A row of an `OVER` aggregation from its operator's result `w`
    /// ([`crate::sql::over::OverOp`]), as one message with id
    /// `gw/name/key/ts/n` (`n`: its place among the key's rows of that
    /// time, which a journal replay gives again).
    fn encode_over(
        &self,
        sq: &SqlRows,
        over: &crate::sql::over::OverPlan,
        w: &WindowResult,
        key: &str,
        windows: bool,
        out: &mut Vec<Encoded>,
    ) -> Option<SqlRow> {
        let q = &*sq.q;
        let ts = w.start;
        let mut row = Vec::new();
        crate::sql::exec::over_row(q, over, key, w, &mut row);
        let peer = w
            .values
            .as_slice()
            .get(over.place())
            .map_or(0, |x| *x as u64);
        let mut values = Vec::new();
        q.project(&row, &mut values);
        if windows {
            let shown = q.shown_key(key);
            let key = &*shown;
            let id = format!("{}/{}/{key}/{ts}/{peer}", self.gateway, sq.name);
            self.push_row(sq, key, id, (ts, ts.saturating_add(1)), &values, out);
        }
        Some(SqlRow {
            flagged: false,
            values,
            at: Some(RowAt {
                ts,
                start: ts,
                end: ts.saturating_add(1),
                window_in_id: false,
            }),
            more: Vec::new(),
        })
    }

    /// Publishes a per-row result (a query without `GROUP BY`): the
    /// envelope with `id` and `span`, then the row's columns.
    fn push_row(
        &self,
        sq: &SqlRows,
        key: &str,
        id: String,
        span: (i64, i64),
        values: &[Value],
        out: &mut Vec<Encoded>,
    ) {
        let mut payload = Vec::with_capacity(256);
        let mut m = self.envelope(&mut payload, &id, &sq.name, key, span, false);
        self.row_fields(&sq.q, values, &mut m);
        m.finish();
        self.push_window(out, key, id, payload, false, true);
    }

    /// A result row's columns after the envelope, by name (the sink's
    /// column names for an `INSERT INTO` an mqtt sink).
    fn row_fields(&self, q: &crate::sql::Query, values: &[Value], m: &mut MapOut<'_>) {
        let sink_names = q.sink.as_ref().map(|s| &s.columns[..]).unwrap_or(&[]);
        for (i, (c, v)) in q.columns.iter().zip(values).enumerate() {
            let name = sink_names.get(i).unwrap_or(&c.name);
            let val = match v {
                Value::Null => Val::Null,
                Value::Bool(b) => Val::B(*b),
                Value::Str(s) => Val::Str(s),
                Value::Ts(t) => Val::I(*t),
                Value::Num(x)
                    if matches!(
                        c.ty,
                        crate::sql::ddl::SqlType::Int | crate::sql::ddl::SqlType::BigInt
                    ) && x.fract() == 0.0
                        && x.abs() < 9.0e15 =>
                {
                    Val::I(*x as i64)
                }
                Value::Num(x) => Val::F(*x),
            };
            m.field(name, val);
        }
    }

    /// Queues a window row's message: on the alerts topic when it is
    /// flagged, and on the windows topic when windows are published.
    fn push_window(
        &self,
        out: &mut Vec<Encoded>,
        key: &str,
        id: String,
        payload: Vec<u8>,
        flagged: bool,
        windows: bool,
    ) {
        if flagged {
            out.push(Encoded {
                topic: self.topic(Channel::Alerts, key),
                id: id.clone(),
                channel: Channel::Alerts,
                payload: payload.clone(),
            });
        }
        if windows {
            out.push(Encoded {
                topic: self.topic(Channel::Windows, key),
                id,
                channel: Channel::Windows,
                payload,
            });
        }
    }

    fn topic(&self, ch: Channel, key: &str) -> String {
        if let (Channel::Windows, Some(s)) =
            (ch, self.query.as_ref().and_then(|q| q.q.sink.as_ref()))
        {
            return s.topic.clone();
        }
        let kind = match ch {
            Channel::Windows => "windows",
            Channel::Alerts => "alerts",
        };
        let mut t = String::with_capacity(self.prefix.len() + self.gateway.len() + key.len() + 11);
        for part in [&self.prefix, &self.gateway, kind] {
            t.push_str(part);
            t.push('/');
        }
        push_topic_level(&mut t, key);
        t
    }

    /// Room for a window message's payload (the envelope, its values and
    /// the verdict), so that encoding it does not grow the buffer.
    fn window_capacity(&self, op: &OpNames, key: &str) -> usize {
        128 + 2 * (self.gateway.len() + op.id.len() + key.len())
            + op.aggs.iter().map(|a| a.len() + 24).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_is_published_as_count_unless_the_operator_has_a_count_too() {
        use AggKind::*;
        assert_eq!(agg_names(&[Rows, Mean]), ["count", "mean"]);
        assert_eq!(agg_names(&[Rows, Count, Sum]), ["rows", "count", "sum"]);
        assert_eq!(agg_names(&[Count, Max]), ["count", "max"]);
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        let mut b = Vec::new();
        json_str(&mut b, "pump \"7\"\\a\u{1}\n\u{1f}é→x");
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#""pump \"7\"\\a\u0001\u000a\u001fé→x""#
        );
        let back: String = serde_json::from_slice(&b).unwrap();
        assert_eq!(back, "pump \"7\"\\a\u{1}\n\u{1f}é→x");
        b.clear();
        json_str(&mut b, "");
        assert_eq!(b, b"\"\"");
        assert_eq!(topic_level("a/b+c#d\0é"), "a_b_c_d_é");
        assert_eq!(topic_level("pump-3"), "pump-3");
    }

    fn w1() -> crate::pipeline_file::PipelineFile {
        crate::pipeline_file::parse("w1.toml", include_str!("../../../examples/w1.toml")).unwrap()
    }

    fn windows(format: OutputFormat) -> Vec<Encoded> {
        let pf = w1();
        let enc = OutputEncoder::new("gw", "weir", format, &pf.spec);
        let mut engine = pf.spec.clone().build().unwrap();
        let mut out = Vec::new();
        for i in 0..30_000i64 {
            let v = if (20_000..20_010).contains(&i) {
                50.0
            } else {
                (i % 7) as f64
            };
            // The clock is the event time, as in replay (the future guard
            // checks one against the other).
            let t = 1_700_000_000_000 + i;
            engine.handle_sample(t, 0, "s/1", t, &[v]).unwrap();
            while let Some(o) = engine.poll_output() {
                let key = match &o {
                    Output::Window(w) => engine.key_name(w.key).to_string(),
                    _ => String::new(),
                };
                enc.encode(&o, &key, i as u64, true, &mut out);
            }
        }
        out
    }

    #[test]
    fn json_windows_parse_and_carry_ids() {
        let out = windows(OutputFormat::Json);
        assert!(out.len() >= 2);
        let first: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(out[0].topic, "weir/gw/windows/s_1");
        assert_eq!(first["id"], "gw/w1/s/1/1700000000000");
        assert_eq!(first["key"], "s/1");
        assert_eq!(first["count"], 10_000);
        assert_eq!(first["emission"], "final");
        assert!(first["mean"].is_number() && first["anomaly"].is_boolean());
    }

    #[test]
    fn cbor_is_the_same_map() {
        let j = windows(OutputFormat::Json);
        let c = windows(OutputFormat::Cbor);
        assert_eq!(j.len(), c.len());
        for (j, c) in j.iter().zip(&c) {
            assert_eq!(j.id, c.id);
            let mut d = minicbor::Decoder::new(&c.payload);
            assert_eq!(d.map().unwrap(), None);
            assert_eq!(d.str().unwrap(), "id");
            assert_eq!(d.str().unwrap(), j.id);
        }
    }

    /// A multivariate alert names the fields that drive it: on a bearing
    /// fault, vibration 1 and temperature.
    #[test]
    fn a_multivariate_alert_names_its_top_fields() {
        let pf = crate::pipeline_file::parse(
            "pump_health.toml",
            include_str!("../../../examples/pump_health.toml"),
        )
        .unwrap();
        let enc = OutputEncoder::new("gw", "weir", OutputFormat::Json, &pf.spec);
        let mut engine = pf.spec.clone().build().unwrap();
        let mut csv = Vec::new();
        crate::gen::Pump::new(2000, 1, crate::gen::PumpFault::Bearing)
            .write(&mut csv)
            .unwrap();
        let mut out = Vec::new();
        for line in std::str::from_utf8(&csv).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let ts: i64 = f[1].parse().unwrap();
            let v: Vec<f64> = f[2..10].iter().map(|x| x.parse().unwrap()).collect();
            engine.handle_sample(ts, 0, f[0], ts, &v).unwrap();
            while let Some(o) = engine.poll_output() {
                enc.encode(&o, f[0], 0, true, &mut out);
            }
        }
        assert!(!out.is_empty(), "no alert");
        for a in &out {
            assert_eq!(a.topic, "weir/gw/alerts/pump-1");
            let j: serde_json::Value = serde_json::from_slice(&a.payload).unwrap();
            let top = j["top"].as_str().unwrap();
            assert!(top.contains("vib1") || top.contains("temp"), "{j}");
            assert!(j["contrib_vib1"].is_number() && j["contrib_rpm"].is_number());
        }
    }

    /// A SQL query with WHERE on the key, HAVING and computed result
    /// columns over two operators: the agent publishes the joined rows that
    /// pass HAVING, result columns by name, values by hand.
    #[test]
    fn sql_rows_are_joined_filtered_and_projected() {
        const T0: i64 = 1_700_000_000_000;
        let sql = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE, h DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT sensor, window_start, MAX(t) - MIN(t) AS spread,
       CASE WHEN AVG(t) > 80 THEN 'hot' ELSE 'ok' END AS state,
       AVG(h) AS h_mean, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE sensor <> 'skip'
GROUP BY sensor, window_start, window_end
HAVING COUNT(*) >= 2;";
        let pf = crate::pipeline_file::parse("q.sql", sql).unwrap();
        assert_eq!(pf.spec.operators.len(), 2, "t and h: two operators");
        let q = pf.sql.clone().unwrap();
        for format in [OutputFormat::Json, OutputFormat::Cbor] {
            let enc = OutputEncoder::for_pipeline("gw", "weir", format, &pf);
            let mut engine = pf.spec.clone().build().unwrap();
            let mut out = Vec::new();
            let samples = [
                ("p1", 0, 70.0, 10.0),
                ("skip", 100, 1.0, 1.0),
                ("p2", 100, 50.0, 5.0),
                ("skip", 200, 2.0, 1.0),
                ("p1", 500, 90.0, 30.0),
                ("p1", 1000, 85.0, 1.0),
                ("p1", 1200, 95.0, 3.0),
                ("p1", 10_000, 1.0, 1.0),
            ];
            for (lsn, (key, dt, t, h)) in samples.into_iter().enumerate() {
                let ts = T0 + dt;
                q.before_engine(&pf.functions, 0, key, ts, &[t, h], |v| {
                    engine.handle_sample(ts, 0, key, ts, v).unwrap()
                });
                while let Some(o) = engine.poll_output() {
                    let key = match &o {
                        Output::Window(w) => engine.key_name(w.key).to_string(),
                        _ => String::new(),
                    };
                    enc.encode(&o, &key, lsn as u64, true, &mut out);
                }
            }
            // p2's window has one reading (HAVING drops it); `skip` never
            // reaches the engine.
            assert_eq!(engine.key_count(), 2);
            let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(
                ids,
                [format!("gw/q/p1/{T0}"), format!("gw/q/p1/{}", T0 + 1000)]
            );
            assert!(out.iter().all(|e| e.channel == Channel::Windows));
            if format == OutputFormat::Cbor {
                let mut d = minicbor::Decoder::new(&out[0].payload);
                assert_eq!(d.map().unwrap(), None);
                continue;
            }
            let rows: Vec<serde_json::Value> = out
                .iter()
                .map(|e| serde_json::from_slice(&e.payload).unwrap())
                .collect();
            let want = [
                serde_json::json!({"id": format!("gw/q/p1/{T0}"), "gateway": "gw", "op": "q",
                    "key": "p1", "start": T0, "end": T0 + 1000, "emission": "final",
                    "sensor": "p1", "window_start": T0, "spread": 20.0, "state": "ok",
                    "h_mean": 20.0, "n": 2}),
                serde_json::json!({"id": format!("gw/q/p1/{}", T0 + 1000), "gateway": "gw",
                    "op": "q", "key": "p1", "start": T0 + 1000, "end": T0 + 2000,
                    "emission": "final", "sensor": "p1", "window_start": T0 + 1000,
                    "spread": 10.0, "state": "hot", "h_mean": 2.0, "n": 2}),
            ];
            assert_eq!(rows, want);
            // Result columns in the query's order, after the envelope.
            let text = String::from_utf8(out[0].payload.clone()).unwrap();
            assert!(
                text.ends_with(r#""sensor":"p1","window_start":1700000000000,"spread":20.000000,"state":"ok","h_mean":20.000000,"n":2}"#),
                "{text}"
            );
        }
    }

    /// `INSERT INTO` an mqtt sink: each result row goes to the sink's topic
    /// under the sink's column names (by position, as in Flink), even
    /// without `HAVING` or computed columns; alerts keep their topic.
    #[test]
    fn rows_inserted_into_an_mqtt_sink_go_to_its_topic_under_its_column_names() {
        const T0: i64 = 1_700_000_000_000;
        let ddl = "CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
CREATE TABLE agg (device STRING, ws TIMESTAMP(3), hottest DOUBLE)
  WITH ('connector' = 'mqtt', 'topic' = 'plant/agg');
INSERT INTO agg
SELECT sensor, window_start, MAX(t)
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end;";
        let pf = crate::pipeline_file::parse("q.sql", ddl).unwrap();
        let enc = OutputEncoder::for_pipeline("gw", "weir", OutputFormat::Json, &pf);
        let mut engine = pf.spec.clone().build().unwrap();
        let mut out = Vec::new();
        for (lsn, (dt, t)) in [(0, 7.0), (300, 9.5), (2_500, 1.0)].into_iter().enumerate() {
            let ts = T0 + dt;
            engine.handle_sample(ts, 0, "p1", ts, &[t]).unwrap();
            while let Some(o) = engine.poll_output() {
                enc.encode(&o, "p1", lsn as u64, true, &mut out);
            }
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].topic, "plant/agg");
        let j: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"id": format!("gw/agg/p1/{T0}"), "gateway": "gw", "op": "agg",
                "key": "p1", "start": T0, "end": T0 + 1000, "emission": "final",
                "device": "p1", "ws": T0, "hottest": 9.5})
        );
        // A sink the source's subscription matches would feed the agent its
        // own rows; a wildcard or an envelope name cannot be published.
        for (from, to, says) in [
            (
                "'plant/agg'",
                "'p/agg'",
                "which the source's subscription 'p/+' matches",
            ),
            ("'plant/agg'", "'plant/+'", "cannot contain `+`"),
            ("hottest DOUBLE", "`end` DOUBLE", "a column `end`"),
        ] {
            let e = crate::pipeline_file::parse("q.sql", &ddl.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(says), "{to}: {e}");
            assert!(e.to_string().starts_with("q.sql:"), "{e}");
        }
    }
}
