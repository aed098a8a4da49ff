//! Queries without `GROUP BY`: each row as it comes.
//!
//! `SELECT … FROM t [WHERE …]` and Flink's window TVF without an
//! aggregation, `SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime),
//! INTERVAL '10' MINUTES))`, which gives each row once per window it falls
//! in, with that window's `window_start`, `window_end` and `window_time`.
//! As in Flink (its aligned window table function), a row goes out when
//! it comes: nothing waits for the watermark and nothing is late, and no
//! state is kept. `TUMBLE`, `HOP` and `CUMULATE` are row-wise; `SESSION`
//! needs the session's end, so it is refused here.
//!
//! The row a result column reads is the sample row (`[key, rowtime,
//! fields…, texts…]`, as `WHERE` reads it before the engine) followed by
//! the window's three bounds. The STRING and BOOLEAN columns the query
//! reads are the reading's key (several: a composite key, as several
//! `GROUP BY` columns are), because `weir run` journals a reading's key,
//! time and numbers only.
//!
//! `weir replay` and `weir sql` write the rows from the decoded samples
//! (`super::exec`), without the engine. `weir run` feeds the engine, whose
//! one operator, [`RowsOp`], hands each sample on at once; the agent makes
//! the rows from those outputs (`crate::run::output`).

use std::fmt::Write as _;

use sqlparser::ast::{self, SelectItem};
use sqlparser::tokenizer::Location;
use weir_core::expr::Expr;
use weir_core::keys::KeyId;
use weir_core::prelude::*;
use weir_core::process::{Context, KeyedProcess, ProcessFactory, TimeDomain};
use weir_core::spec::{OperatorKind, OperatorSpec, ProcessSpec};

use super::ddl::Table;
use super::plan::{
    csv_mapping, explain_results, mqtt_source, result_name, settings, sink_of, source_options,
    unique_names, Ctx, Query, ResultColumn, Scope, Sink, Window, ROW_LAG, ROW_OVER, ROW_WINDOW,
};
use super::{Err, SqlError, SqlPipeline};
use crate::pipeline_file::PipelineFile;

/// How a query without `GROUP BY` makes its rows ([`Query::per_row`]).
#[derive(Debug, Clone)]
pub struct PerRow {
    /// The window TVF's windows (tumbling, sliding or cumulating); `None`:
    /// each row once, without window columns.
    pub windows: Option<WindowKind>,
    /// `WHERE` when it reads a window column (`window_start > …`), over
    /// the sample row and the window's bounds, tested per window; one that
    /// does not is the query's [`Query::filter`], tested before.
    pub filter: Option<Expr>,
    /// `OVER` aggregates (`super::over`): each row comes from the engine
    /// once the watermark passes it, its values the sample's fields, then
    /// the aggregates (which the row reads after its text columns), then
    /// its place among rows of the same key and time.
    pub over: Option<super::over::OverPlan>,
    /// Inside a window Top-N (`super::topn`): the watermark's delay; a
    /// row whose window the watermark passed (`end - 1 <= newest - delay
    /// - 1`) is late and left out, as Flink's window rank drops it.
    pub drop_late: Option<i64>,
}

impl PerRow {
    /// Calls `f` with each window a row at `ts` falls in, in the order
    /// Flink's window assigners give them (`HOP`: the latest start first;
    /// `CUMULATE`: the earliest end first), or once with `None` without a
    /// window.
    pub fn each_window(&self, ts: i64, mut f: impl FnMut(Option<(i64, i64)>)) {
        let start_of = |size: i64| ts - ts.rem_euclid(size);
        match self.windows {
            None => f(None),
            Some(WindowKind::Tumbling { size }) => {
                let s = start_of(size);
                f(Some((s, s.saturating_add(size))));
            }
            Some(WindowKind::Sliding { size, slide }) => {
                let mut s = start_of(slide);
                while s > ts.saturating_sub(size) {
                    f(Some((s, s.saturating_add(size))));
                    s = s.saturating_sub(slide);
                }
            }
            Some(WindowKind::Cumulate { step, size }) => {
                let s = start_of(size);
                let last = s.saturating_add(size);
                let mut e = start_of(step).saturating_add(step);
                while e <= last {
                    f(Some((s, e)));
                    if e == i64::MAX {
                        break;
                    }
                    e = e.saturating_add(step);
                }
            }
            // Refused when compiled.
            Some(WindowKind::Session { .. } | WindowKind::Count { .. }) => {}
        }
    }
}

/// The names `SELECT *` gives: the table's columns in order, then a
/// computed time attribute (`rowtime AS TO_TIMESTAMP_LTZ(ts, 3)`), then
/// the window TVF's `window_start`, `window_end`, `window_time`.
fn star_columns(table: &Table, windowed: bool) -> Vec<String> {
    let mut names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    if let Some(rt) = &table.rowtime {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&rt.name)) {
            names.push(rt.name.clone());
        }
    }
    if windowed {
        names.extend(["window_start", "window_end", "window_time"].map(String::from));
    }
    names
}

/// The state type of [`RowsOp`].
pub const ROWS_STATE: &str = "weir/rows/1";

/// The engine operator of a query without `GROUP BY` in `weir run`: each
/// sample, at once and never late, as a window result `[ts, ts + 1)`
/// whose values are the sample's fields ([`Context::values`]); the agent
/// makes the query's rows from it. No state. (`weir replay` writes the
/// rows from the samples themselves and feeds the engine nothing.)
#[derive(Debug, Default)]
pub struct RowsOp;

impl KeyedProcess for RowsOp {
    fn state_type(&self) -> &str {
        ROWS_STATE
    }

    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, _value: f64) {
        let values = weir_core::output::AggValues::from_slice(ctx.values());
        ctx.emit_window(ts, ts.saturating_add(1), values.as_slice(), None);
    }

    fn on_timer(&mut self, _: &mut Context<'_>, _: i64, _: TimeDomain) {}

    fn clear_key(&mut self, _: KeyId) {}

    fn sees_late(&self) -> bool {
        true
    }

    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        e.null()?;
        Ok(())
    }

    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        d.skip()
    }
}

/// `WHERE` and the result columns of a query without `GROUP BY`, compiled
/// over `cx` (`WHERE` with its text).
type SelectList = (Option<(Expr, String)>, Vec<(ResultColumn, String)>);

fn select_list(
    cx: &mut Ctx<'_>,
    sel: &ast::Select,
    table: &Table,
    windowed: bool,
    at: Location,
) -> Err<SelectList> {
    let filter = match &sel.selection {
        Some(w) => {
            let (e, t) = cx.expr(w, Scope::Row)?;
            cx.boolean(t, w, at)?;
            Some((e, w.to_string()))
        }
        None => None,
    };
    let mut columns: Vec<(ResultColumn, String)> = Vec::new();
    for (i, item) in sel.projection.iter().enumerate() {
        let (e, alias) = match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for name in star_columns(table, windowed) {
                    let (expr, ty) = cx.column(&ast::Ident::new(&name), Scope::Row)?;
                    let c = ResultColumn {
                        name: name.clone(),
                        ty,
                        expr,
                    };
                    columns.push((c, name));
                }
                continue;
            }
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            other => {
                return Err(SqlError::unsupported(
                    super::plan::loc_of(other, at),
                    &format!("`{other}` in the SELECT list"),
                    "name each result column: SELECT sensor, v * 1.8 + 32 AS f",
                ))
            }
        };
        let (expr, ty) = cx.expr(e, Scope::Row)?;
        let name = result_name(e, alias, i);
        columns.push((ResultColumn { name, ty, expr }, e.to_string()));
    }
    unique_names(&columns, at)?;
    if let Some(u) = cx.udfs.first() {
        return Err(SqlError::unsupported(
            u.at,
            &format!("the user function {} in a query without GROUP BY", u.name),
            "call it under an aggregate of a window query (AVG(f(v))), or as a keyed table function",
        ));
    }
    if !cx.computed.is_empty() {
        return Err(SqlError::unsupported(
            at,
            "an aggregate's FILTER in a query without GROUP BY",
            "WHERE for the rows a query without GROUP BY gives",
        ));
    }
    Ok((filter, columns))
}

/// A `SELECT` without `GROUP BY` or `HAVING` over `table` (through
/// `window`, a window TVF, if any).
#[allow(clippy::too_many_arguments)]
pub(super) fn compile(
    tables: &[Table],
    sets: &[(String, String, Location)],
    funcs: &[(String, String, Location)],
    explain: bool,
    insert: Option<(String, Location)>,
    sel: &ast::Select,
    table: &Table,
    window: Option<&Window>,
    at: Location,
) -> Err<SqlPipeline> {
    if let Some(w) = window {
        if matches!(
            w.kind,
            WindowKind::Session { .. } | WindowKind::Count { .. }
        ) {
            return Err(SqlError::unsupported(
                at,
                "a SESSION window TVF without GROUP BY (each row with its session's bounds, known only once the session ends)",
                "an aggregation over the sessions: … GROUP BY window_start, window_end[, key], or TUMBLE / HOP / CUMULATE without GROUP BY",
            ));
        }
    }
    let rt = table.rowtime.as_ref().expect("checked by the caller");
    let windowed = window.is_some();
    // The STRING and BOOLEAN columns the query reads key its rows (one as
    // the reading's key, several as a composite key, as several GROUP BY
    // columns are): `weir run` journals a reading's key, not its other
    // text columns.
    let (read, over) = {
        let mut cx = Ctx::rows(table, funcs, windowed, (None, &[]), at);
        cx.named_windows = &sel.named_window;
        select_list(&mut cx, sel, table, windowed, at)?;
        let mut read = cx.texts;
        read.sort_unstable();
        (read, cx.over)
    };
    // OVER aggregates are keyed by their PARTITION BY columns, the only
    // text columns such a query may read.
    let read = match &over {
        None => read,
        Some(w) => {
            if let Some(&c) = read.iter().find(|c| !w.partition.contains(c)) {
                return Err(SqlError::unsupported(
                    at,
                    &format!(
                        "reading the column `{}`, which is not in the OVER window's PARTITION BY",
                        table.columns[c].name
                    ),
                    "read only the PARTITION BY columns of the STRING and BOOLEAN ones in a query with OVER, or add the column to PARTITION BY",
                ));
            }
            let mut p = w.partition.clone();
            p.sort_unstable();
            if p.len() > 8 {
                return Err(SqlError::unsupported(
                    at,
                    "PARTITION BY more than 8 columns",
                    "PARTITION BY at most 8 STRING or BOOLEAN columns",
                ));
            }
            p
        }
    };
    let (key, keys, groups) = match read[..] {
        [] => (None, Vec::new(), None),
        [k] => (Some(k), Vec::new(), None),
        _ if read.len() <= 8 => {
            let g = super::groups::Groups::of(table, &read, None, at)?;
            (None, read, g)
        }
        // More than a composite key holds: replay reads them as text
        // columns (`weir run` refuses the query).
        _ => (None, Vec::new(), None),
    };
    let mut cx = Ctx::rows(table, funcs, windowed, (key, &keys), at);
    cx.named_windows = &sel.named_window;
    let (filter, mut columns) = select_list(&mut cx, sel, table, windowed, at)?;
    // The window's bounds, or the OVER aggregates, follow the sample row.
    let nf = cx.fields.len();
    let base = 2 + (nf + cx.texts.len()) as u16;
    let nslots = cx.slots.len() as u16;
    let place = |e: &Expr| {
        e.map_cols(&|c| {
            Some(if (ROW_WINDOW..ROW_WINDOW + 3).contains(&c) {
                base + (c - ROW_WINDOW)
            } else if (ROW_OVER..ROW_LAG).contains(&c) {
                base + (c - ROW_OVER)
            } else if c >= ROW_LAG {
                base + nslots + (c - ROW_LAG)
            } else {
                c
            })
        })
        .expect("every column maps")
    };
    let field_names: Vec<String> = cx
        .fields
        .iter()
        .map(|&c| table.columns[c].name.clone())
        .collect();
    let over = match cx.over.take() {
        None => None,
        Some(_) if rt.proctime => {
            return Err(super::plan::proctime_refused(
                rt,
                "OVER aggregations over a PROCTIME() table",
            ))
        }
        Some(w) => {
            let aggs: Vec<_> = cx
                .slots
                .iter()
                .map(|&(k, f)| (k, (f < nf).then_some(f)))
                .collect();
            if nf + aggs.len() + cx.lags.len() + 1 > weir_core::spec::MAX_AGGS {
                return Err(SqlError::unsupported(
                    at,
                    &format!(
                        "{} numeric columns and {} OVER aggregates and LAGs in one query",
                        nf,
                        aggs.len() + cx.lags.len()
                    ),
                    &format!(
                        "at most {} numeric columns and aggregates together: declare only the columns the query reads",
                        weir_core::spec::MAX_AGGS - 1
                    ),
                ));
            }
            let plan = super::over::OverPlan {
                state: format!(
                    "{} {} [{}] {}",
                    super::over::OVER_STATE,
                    w.frame,
                    field_names.join(","),
                    over_results(&aggs, &cx.lags, &field_names)
                ),
                frame: w.frame,
                aggs,
                lags: cx.lags.clone(),
                fields: nf,
            };
            Some((w, plan))
        }
    };
    for (c, _) in &mut columns {
        c.expr = place(&c.expr);
    }
    // A WHERE that reads no window column is the query's filter before
    // the engine (in `weir run`, on the decoded reading when it reads a
    // text column); one that does is tested per window.
    let (filter, row_filter) = match filter.map(|f| (place(&f.0), f.1)) {
        Some((e, s)) if e.max_col().is_some_and(|c| c >= base) => (None, Some((e, s))),
        other => (other, None),
    };
    let (name, state) = settings(sets, insert.as_ref())?;
    let source_name = table.name.clone();
    // The engine's operator hands each sample on whole; it reads a
    // constant field, so that no NULL column keeps a sample from it.
    let mut source = SourceSpec::new(&source_name, field_names.iter().cloned())
        .compute(ROW_FIELD, Expr::num(1.0));
    source.nullable = (0..nf).collect();
    source.max_out_of_orderness = rt.delay_ms;
    source_options(table, &mut source)?;
    let spec = PipelineSpec {
        name: name.clone(),
        time: super::plan::time_of(rt),
        sources: vec![source],
        operators: vec![OperatorSpec {
            id: name.clone(),
            source: source_name.clone(),
            field: ROW_FIELD.into(),
            kind: OperatorKind::Process(match &over {
                None => ProcessSpec {
                    state_type: ROWS_STATE.into(),
                    factory: ProcessFactory(std::sync::Arc::new(|| Box::new(RowsOp))),
                    columns: field_names.clone(),
                },
                Some((_, plan)) => {
                    let plan = plan.clone();
                    ProcessSpec {
                        state_type: plan.state.clone(),
                        factory: ProcessFactory(std::sync::Arc::new(move || {
                            Box::new(super::over::OverOp::new(plan.clone()))
                        })),
                        columns: field_names.clone(),
                    }
                }
            }),
        }],
        state,
    };
    spec.validate()
        .map_err(|e| SqlError::at(at, e.to_string(), "fix the query as described"))?;
    let (csv, input_path) = csv_mapping(table, key, &cx.fields, &cx.texts)?;
    let texts: Vec<String> = cx
        .texts
        .iter()
        .map(|&c| table.columns[c].name.clone())
        .collect();
    let mqtt = mqtt_source(table, key, &field_names, &texts)?;
    let sink = sink_of(tables, insert, columns.len())?;
    let sink_topic = sink.as_ref().and_then(Sink::topic_of);
    let mut ex = String::new();
    let _ = writeln!(
        ex,
        "pipeline `{name}` ({}, ms; {})",
        super::plan::time_mode_text(rt),
        if over.is_some() {
            "keyed state: the OVER frames"
        } else {
            "no state"
        }
    );
    let _ = writeln!(
        ex,
        "source `{source_name}`: fields [{}], key {}, time `{}`",
        field_names.join(", "),
        match (&groups, key) {
            (Some(_), _) => format!(
                "({}) as one composite key",
                texts
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Some(k)) => format!("`{}`", table.columns[k].name),
            (None, None) if texts.is_empty() => "(none: one group)".to_string(),
            (None, None) => format!("(none; text columns {})", texts.join(", ")),
        },
        rt.name
    );
    match window {
        Some(w) => {
            let _ = writeln!(
                ex,
                "rows: each row as it comes, once per window {} it falls in, with the window's bounds (no watermark wait, nothing late)",
                w.desc
            );
        }
        None => match &over {
            None => {
                let _ = writeln!(ex, "rows: each row as it comes (no window, no state)");
            }
            Some((w, plan)) => {
                let _ = writeln!(
                    ex,
                    "over: [{}] per row over (PARTITION BY {} ORDER BY {} {}); each row once the watermark passes it, in time order per partition (late rows dropped)",
                    over_results(&plan.aggs, &plan.lags, &field_names),
                    if w.partition.is_empty() {
                        "nothing: one partition".to_string()
                    } else {
                        w.partition
                            .iter()
                            .map(|&c| table.columns[c].name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    rt.name,
                    w.frame
                );
            }
        },
    }
    if let Some((_, s)) = filter.as_ref().or(row_filter.as_ref()) {
        let _ = writeln!(ex, "filter (on each row): {s}");
    }
    explain_results(&mut ex, &columns, sink.as_ref());
    Ok(SqlPipeline {
        pipeline: PipelineFile {
            spec,
            csv: vec![csv],
            mqtt: vec![mqtt],
            functions: Default::default(),
            sql: None,
        },
        query: Query {
            filter: filter.map(|f| f.0),
            texts: cx.texts.len(),
            columns_in: nf,
            computed: Vec::new(),
            computed_fn: Vec::new(),
            post: Vec::new(),
            functions: Default::default(),
            keyed: key.is_some(),
            ops: vec![0],
            groups,
            scores: false,
            per_row: Some(PerRow {
                windows: window.map(|w| w.kind),
                filter: row_filter.map(|f| f.0),
                over: over.map(|o| o.1),
                drop_late: None,
            }),
            limit: None,
            top_n: None,
            order: Vec::new(),
            slots: Vec::new(),
            flags: Vec::new(),
            having: None,
            columns: columns.into_iter().map(|c| c.0).collect(),
            explain: ex,
            at,
            sink: sink_topic,
        },
        explain,
        input_path,
        sink,
        udfs: Vec::new(),
        keyed: None,
        inner: None,
    })
}

/// An `OVER` query's aggregates and `LAG`s by name, `mean(v), count(*),
/// lag(v, 1)` (a default after the offset when there is one): what EXPLAIN
/// shows and the operator's state type holds.
fn over_results(
    aggs: &[(AggKind, Option<usize>)],
    lags: &[(usize, u64, f64)],
    fields: &[String],
) -> String {
    let mut out = Vec::new();
    for (k, f) in aggs {
        out.push(match f {
            Some(f) => format!("{k}({})", fields[*f]),
            None => format!("{k}(*)"),
        });
    }
    for (f, n, d) in lags {
        out.push(if d.is_nan() {
            format!("lag({}, {n})", fields[*f])
        } else {
            format!("lag({}, {n}, {d})", fields[*f])
        });
    }
    out.join(", ")
}

/// The constant field [`RowsOp`] reads.
const ROW_FIELD: &str = "_row";
