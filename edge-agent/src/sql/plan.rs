//! A query → the engine's operators and the stateless parts around them.
//!
//! The window aggregation becomes window operators of a
//! [`PipelineSpec`] (one per aggregated column; their results for the same
//! key and window are joined into one row). `WHERE` and expressions under
//! aggregates become the source's filter and computed fields in the engine
//! (or, when they read the key, the time or a text column, which the engine
//! does not see, run on samples before it); `HAVING` and the `SELECT` list
//! expressions run over the joined window row after it ([`weir_core::expr`]).
//!
//! The window row a result expression reads: `[key, window_start,
//! window_end, window_time, aggregate slots…, detector flags…]`; the sample
//! row `WHERE` reads: `[key, rowtime, fields…]`.

use std::fmt::Write as _;

use sqlparser::ast::{
    self, BinaryOperator as B, Expr as SExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, SelectItem, SetExpr, Spanned, TableFactor, UnaryOperator,
};
use sqlparser::tokenizer::Location;
use weir_core::agg::AggKind;
use weir_core::detect::DetectorSpec;
use weir_core::expr::{BinOp, CastTo, Expr, Func, StrFrom, Value};
use weir_core::prelude::*;
use weir_core::spec::{DetectSpec, OperatorKind, OperatorSpec, SampleOrder, WindowSpec};
use weir_core::timefn::{bad_pattern_letter, TimeField};

use super::ddl::{SqlType, Table};
use super::{dialect::TABLE_ARG, Err, SqlError, SqlPipeline, Statement};
use crate::decode::{DecoderConfig, Format, TsUnit};
use crate::pipeline_file::{
    check_topic_filter, Column, CsvMapping, MqttSource, PipelineFile, TsFormat,
};

/// Window row positions.
pub const KEY: u16 = 0;
/// `window_start`.
pub const START: u16 = 1;
/// `window_end`.
pub const END: u16 = 2;
/// `window_time` (`window_end - 1 ms`).
pub const WTIME: u16 = 3;
const SLOTS: u16 = 4;
/// Placeholder base for detector flags until the slot count is known.
const FLAG_BASE: u16 = 30_000;
/// Placeholder base for computed field `j` in the sample row until the
/// number of text columns is known.
const COMPUTED_BASE: u16 = 20_000;
/// Placeholder base for a user function's result in the window row until
/// the slot and flag counts are known.
const POST_BASE: u16 = 25_000;
/// Most distinct aggregates in one query (16 per column, a few columns).
const MAX_SLOTS: usize = 256;
/// The field of `COUNT(*)` until the other aggregates are known.
const ANY_FIELD: usize = usize::MAX;

/// One result column.
#[derive(Debug, Clone)]
pub struct ResultColumn {
    /// Its name (the alias, the column's name or Flink's `EXPR$n`).
    pub name: String,
    /// Its type.
    pub ty: SqlType,
    /// How it is computed from the window row.
    pub expr: Expr,
}

/// The `INSERT INTO` target.
#[derive(Debug, Clone)]
pub struct Sink {
    /// The table's name.
    pub name: String,
    /// `'connector'`.
    pub connector: String,
    /// `'topic'` of an mqtt sink.
    pub topic: Option<String>,
    /// `'path'` of a filesystem sink.
    pub path: Option<String>,
    /// The sink's column names.
    pub columns: Vec<String>,
    /// Where the `INSERT INTO` names it.
    pub at: Location,
}

impl Sink {
    /// Where `weir run` publishes rows for an mqtt sink with a `'topic'`.
    pub fn topic_of(&self) -> Option<SinkTopic> {
        (self.connector == "mqtt").then_some(())?;
        Some(SinkTopic {
            table: self.name.clone(),
            topic: self.topic.clone()?,
            columns: self.columns.clone(),
            at: self.at,
        })
    }
}

/// The query around the engine.
#[derive(Debug, Clone)]
pub struct Query {
    /// `WHERE`, over `[key, rowtime, fields…]`, when it reads the key, the
    /// time or a text column: samples it does not keep never reach the
    /// engine. A `WHERE` over numeric fields only is the engine source's
    /// filter instead ([`SourceSpec::filter`]) and this is `None`.
    pub filter: Option<Expr>,
    /// How many text columns follow the fields in the sample row `filter`
    /// reads.
    pub texts: usize,
    /// How many of the source's fields are read from columns; the rest are
    /// `computed`.
    pub columns_in: usize,
    /// Expressions under aggregates, over the sample row, computed before
    /// the engine into the fields after the first `columns_in`, when one of
    /// them reads the key, the time or a text column. Otherwise they are the
    /// engine source's computed fields ([`SourceSpec::compute`]) and this is
    /// empty.
    pub computed: Vec<Expr>,
    /// Whether the query groups by a key column (else every sample has the
    /// same key and `KEY` is `NULL`).
    pub keyed: bool,
    /// The engine operators (indices) whose windows make one row.
    pub ops: Vec<usize>,
    /// Aggregate slot → (position in `ops`, value index in that operator).
    pub slots: Vec<(usize, usize)>,
    /// Detector flag → position in `ops`.
    pub flags: Vec<usize>,
    /// `HAVING`, over the window row.
    pub having: Option<Expr>,
    /// The result columns.
    pub columns: Vec<ResultColumn>,
    /// What `EXPLAIN` prints.
    pub explain: String,
    /// Where the `SELECT` is.
    pub at: Location,
    /// `INSERT INTO` an mqtt sink: its `'topic'` and column names. `weir
    /// run` publishes each result row there, under the sink's column names
    /// (Flink maps an `INSERT` by position), instead of on its windows
    /// topic.
    pub sink: Option<SinkTopic>,
    /// Per computed field: the function source id of the user function
    /// that fills it (`crate::functions`), or `None` for an expression.
    pub computed_fn: Vec<Option<usize>>,
    /// User functions over the window row (`HAVING`, result columns):
    /// (function source id, arguments), their results appended to the row
    /// after the detector flags.
    pub post: Vec<(usize, Vec<Expr>)>,
    /// The pipeline's user functions (set when they are compiled).
    pub functions: crate::functions::Functions,
    /// Several key columns or grouping sets: the composite key before the
    /// engine, the key columns and their grouping bits (`GROUPING(col)`)
    /// after the detector flags in the window row
    /// (then `KEY` is `NULL`, and [`Query::ops`] holds each set's
    /// operators in turn, sets in order).
    pub groups: Option<super::groups::Groups>,
    /// A detector table function (`TABLE(KESTREL(TABLE t PARTITION BY k,
    /// …))`): its operator's per-sample scores are the rows, each taken as
    /// a window result ([`super::stage::score_row`]): `window_start` the
    /// sample's time, values `[value, score]`, the flag the alert.
    pub scores: bool,
    /// A query without `GROUP BY` ([`super::rows`]): each sample that
    /// passes its `WHERE` is a result row at once, once per window it
    /// falls in over a window TVF; the engine gets no sample.
    pub per_row: Option<super::rows::PerRow>,
    /// `LIMIT n`: the query ends after its first `n` result rows (`weir
    /// replay`, `weir sql`; `weir run` refuses it).
    pub limit: Option<u64>,
    /// A window Top-N around the query (`super::topn`): its rows grouped
    /// per window and cut to the first `n` by an order once the input
    /// ends (`weir replay`, `weir sql` over files).
    pub top_n: Option<super::topn::TopN>,
    /// `ORDER BY`: the result rows sorted by these keys once the input
    /// ends (`weir replay`, `weir sql` over files; `weir run` and the live
    /// shell refuse it).
    pub order: Vec<SortKey>,
}

/// One `ORDER BY` key: a result column, its direction and where `NULL`s go
/// (Flink's default: first ascending, last descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// The result column's position.
    pub column: usize,
    /// `DESC`.
    pub desc: bool,
    /// `NULL`s before the values.
    pub nulls_first: bool,
}

/// Where `weir run` publishes a query's result rows: [`Query::sink`].
#[derive(Debug, Clone, PartialEq)]
pub struct SinkTopic {
    /// The sink table's name.
    pub table: String,
    /// The sink's `'topic'`.
    pub topic: String,
    /// The sink's column names, one per result column.
    pub columns: Vec<String>,
    /// Where the `INSERT INTO` names the sink.
    pub at: Location,
}

pub(super) struct Window {
    pub(super) kind: WindowKind,
    pub(super) desc: String,
}

#[derive(PartialEq, Clone, Copy)]
pub(super) enum Scope {
    /// `WHERE`: a sample's columns.
    Row,
    /// `SELECT` / `HAVING`: group keys, window columns, aggregates.
    Group,
}

pub(super) struct Ctx<'t> {
    table: &'t Table,
    /// Physical columns that are fields, in order.
    pub(super) fields: Vec<usize>,
    key: Option<usize>,
    /// Several key columns or grouping sets: the key columns (the first
    /// text columns of the sample row).
    keys: Vec<usize>,
    /// STRING columns `WHERE` reads besides the key, in order of use.
    pub(super) texts: Vec<usize>,
    /// Expressions under aggregates, computed per sample before the engine
    /// into the fields after the columns: (expression, type, SQL text).
    pub(super) computed: Vec<(Expr, SqlType, String)>,
    legacy: bool,
    /// (aggregate, field position) per slot.
    pub(super) slots: Vec<(AggKind, usize)>,
    /// (field position, aggregate watched, detector) per flag.
    flags: Vec<(usize, AggKind, DetectorSpec)>,
    at: Location,
    /// `CREATE FUNCTION`s: (name, module, where).
    funcs: &'t [(String, String, Location)],
    /// Their calls (before the engine and over window rows).
    pub(super) udfs: Vec<UdfUse>,
    /// Calls over the window row: (function source id, arguments).
    post: Vec<(usize, Vec<Expr>)>,
    /// A table function's result columns (name, position in its row,
    /// type): what `SELECT` and `WHERE` read instead of groups and
    /// aggregates; empty for a window aggregation.
    row_cols: Vec<(String, u16, SqlType)>,
    /// A query without `GROUP BY` (`super::rows`): `Some(true)` over a
    /// window TVF, whose `window_start`, `window_end` and `window_time`
    /// the sample row reads at [`ROW_WINDOW`]`..+3`.
    per_row: Option<bool>,
    /// A query without `GROUP BY` with `OVER` aggregates: their window
    /// (one per query, as in Flink), and the query's `WINDOW` clause.
    pub(super) over: Option<super::over::Window>,
    pub(super) named_windows: &'t [ast::NamedWindowDefinition],
    /// Compiling an `OVER` aggregate as its plain aggregate.
    over_ok: bool,
    /// `LAG(x, offset, default)` calls over that window: (field, offset,
    /// default), read at [`ROW_LAG`]` + i`.
    pub(super) lags: Vec<(usize, u64, f64)>,
}

/// Placeholder columns of a per-row query's window bounds (`window_start`,
/// `window_end`, `window_time`) until the sample row's length is known.
pub(super) const ROW_WINDOW: u16 = 40_000;

/// Placeholder columns of a per-row query's `OVER` aggregates (its slots),
/// until the sample row's length is known.
pub(super) const ROW_OVER: u16 = 41_000;

/// The window of an aggregation without one: every plausible time falls
/// in `[0, UNBOUNDED)`, which fires only at the end of the input.
pub(super) const UNBOUNDED: i64 = 1 << 62;

/// Whether `name` (upper case) is an aggregate function (or `EWMA_Z`,
/// a detector over one).
fn is_aggregate(name: &str) -> bool {
    matches!(
        name,
        "COUNT"
            | "SUM"
            | "AVG"
            | "MIN"
            | "MAX"
            | "STDDEV_POP"
            | "STDDEV_SAMP"
            | "STDDEV"
            | "VAR_POP"
            | "VAR_SAMP"
            | "VARIANCE"
            | "RMS"
            | "KURTOSIS"
            | "CREST"
            | "P2P"
            | "APPROX_PERCENTILE"
            | "EWMA_Z"
    )
}

/// Whether a `GROUP BY` is empty (by shape: comparing syntax trees
/// would link their derived `PartialEq`, heavy on the gateway binary).
pub(super) fn no_group_by(g: &GroupByExpr) -> bool {
    matches!(g, GroupByExpr::Expressions(v, m) if v.is_empty() && m.is_empty())
}

/// Whether `e` calls an aggregate (not over an `OVER` window).
fn has_aggregate(e: &SExpr) -> bool {
    let any = |v: &[&SExpr]| v.iter().any(|e| has_aggregate(e));
    match e {
        SExpr::Function(f) => {
            let agg = is_aggregate(&fname(f)) && fname(f) != "EWMA_Z";
            (agg && f.over.is_none()) || args_of(f).iter().any(|a| has_aggregate(a.1))
        }
        SExpr::BinaryOp { left, right, .. } => any(&[left, right]),
        SExpr::UnaryOp { expr, .. }
        | SExpr::Nested(expr)
        | SExpr::Cast { expr, .. }
        | SExpr::IsNull(expr)
        | SExpr::IsNotNull(expr)
        | SExpr::IsTrue(expr)
        | SExpr::IsFalse(expr)
        | SExpr::Floor { expr, .. }
        | SExpr::Ceil { expr, .. }
        | SExpr::Extract { expr, .. } => has_aggregate(expr),
        SExpr::Between {
            expr, low, high, ..
        } => any(&[expr, low, high]),
        SExpr::In {
            expr,
            target: ast::InTarget::List(list),
            ..
        } => has_aggregate(expr) || list.iter().any(has_aggregate),
        SExpr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand.as_deref().is_some_and(has_aggregate)
                || else_result.as_deref().is_some_and(has_aggregate)
                || conditions
                    .iter()
                    .any(|c| has_aggregate(&c.condition) || has_aggregate(&c.result))
        }
        _ => false,
    }
}

/// Placeholder columns of a per-row query's `LAG` calls, after its `OVER`
/// aggregates.
pub(super) const ROW_LAG: u16 = 42_000;

/// Where `e` starts, or `fallback` for a node without a place.
pub(super) fn loc_of(e: &impl Spanned, fallback: Location) -> Location {
    let l = e.span().start;
    if l.line == 0 {
        fallback
    } else {
        l
    }
}

/// Where `id` is, or `fallback` for a name without a place.
pub(super) fn ident_loc(id: &ast::Ident, fallback: Location) -> Location {
    if id.span.start.line == 0 {
        fallback
    } else {
        id.span.start
    }
}

/// The name an identifier (or the last part of a dotted one) gives.
pub(super) fn ident_name(e: &SExpr) -> Option<&ast::Ident> {
    match e {
        SExpr::Identifier(i) => Some(i),
        SExpr::CompoundIdentifier(v) => v.last(),
        _ => None,
    }
}

/// The unnamed and named arguments of a call, named ones by upper-case name.
fn args_of(f: &ast::Function) -> Vec<(Option<String>, &SExpr)> {
    let mut out = Vec::new();
    if let FunctionArguments::List(l) = &f.args {
        for a in &l.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => out.push((None, e)),
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => out.push((Some(name.value.to_ascii_uppercase()), e)),
                _ => {}
            }
        }
    }
    out
}

fn is_star(f: &ast::Function) -> bool {
    matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 1
        && matches!(l.args[0], FunctionArg::Unnamed(FunctionArgExpr::Wildcard)))
}

fn fname(f: &ast::Function) -> String {
    f.name.to_string().to_ascii_uppercase()
}

/// `EXTRACT`'s short forms: `HOUR(ts)` is `EXTRACT(HOUR FROM ts)`.
const EXTRACT_FUNCS: [&str; 10] = [
    "YEAR",
    "QUARTER",
    "MONTH",
    "WEEK",
    "DAYOFYEAR",
    "DAYOFMONTH",
    "DAYOFWEEK",
    "HOUR",
    "MINUTE",
    "SECOND",
];

const FUNCS: &str = "ABS, SQRT, POWER, LN, LOG, LOG2, LOG10, EXP, ROUND, TRUNCATE, FLOOR, CEIL, SIGN, MOD, SIN, COS, TAN, COT, ASIN, ACOS, ATAN, ATAN2, SINH, COSH, TANH, DEGREES, RADIANS, PI, E, GREATEST, LEAST, COALESCE, IFNULL, NULLIF, IF, CAST, UPPER, LOWER, CONCAT (||), CHAR_LENGTH, SUBSTRING, TRIM, REPLACE, EXTRACT, YEAR … SECOND, TIMESTAMPDIFF, TIMESTAMPADD, DATE_FORMAT, FLOOR/CEIL(ts TO unit); aggregates COUNT, SUM, AVG, MIN, MAX, STDDEV_POP, STDDEV_SAMP, VAR_POP, VAR_SAMP, RMS, KURTOSIS, CREST, P2P, APPROX_PERCENTILE; detector EWMA_Z";

impl<'t> Ctx<'t> {
    /// The context of a query without `GROUP BY` over `table` (no key:
    /// every numeric column but the time is a field), `windowed` over a
    /// window TVF.
    /// `key` is the reading's key column, or `keys` its composite key's
    /// columns (read as the first text columns).
    pub(super) fn rows(
        table: &'t Table,
        funcs: &'t [(String, String, Location)],
        windowed: bool,
        (key, keys): (Option<usize>, &[usize]),
        at: Location,
    ) -> Self {
        let rt = table.rowtime.as_ref().map(|r| r.column);
        Ctx {
            table,
            fields: (0..table.columns.len())
                .filter(|&i| Some(i) != rt && table.columns[i].ty.is_numeric())
                .collect(),
            key,
            keys: keys.to_vec(),
            texts: keys.to_vec(),
            computed: Vec::new(),
            legacy: false,
            slots: Vec::new(),
            flags: Vec::new(),
            at,
            funcs,
            udfs: Vec::new(),
            post: Vec::new(),
            row_cols: Vec::new(),
            per_row: Some(windowed),
            over: None,
            named_windows: &[],
            over_ok: false,
            lags: Vec::new(),
        }
    }
}

impl Ctx<'_> {
    pub(super) fn column(&mut self, id: &ast::Ident, scope: Scope) -> Err<(Expr, SqlType)> {
        let at = ident_loc(id, self.at);
        let t = self.table;
        let name = id.value.as_str();
        let rt = t.rowtime.as_ref().expect("checked by the caller");
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if scope == Scope::Group && !self.row_cols.is_empty() {
            return match self.row_cols.iter().find(|c| is(&c.0)) {
                Some(c) => Ok((Expr::Col(c.1), c.2)),
                None => Err(SqlError::at(
                    at,
                    format!("the table function gives no column `{name}`"),
                    format!(
                        "use one of: {}",
                        self.row_cols
                            .iter()
                            .map(|c| c.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            };
        }
        if scope == Scope::Group {
            if !self.legacy {
                if is("window_start") {
                    return Ok((Expr::Col(START), SqlType::Timestamp));
                }
                if is("window_end") {
                    return Ok((Expr::Col(END), SqlType::Timestamp));
                }
                if is("window_time") {
                    return Ok((Expr::Col(WTIME), SqlType::Timestamp));
                }
            }
            if let Some(k) = self.key {
                if is(&t.columns[k].name) {
                    return Ok((Expr::Col(KEY), t.columns[k].ty));
                }
            }
            if let Some(i) = self.keys.iter().position(|&c| is(&t.columns[c].name)) {
                let ty = t.columns[self.keys[i]].ty;
                return Ok((Expr::Col(super::groups::KEYS_BASE + i as u16), ty));
            }
            return Err(SqlError::at(
                at,
                format!("column `{name}` is neither grouped nor aggregated"),
                "add it to GROUP BY or use it inside an aggregate such as AVG(…)",
            ));
        }
        if is(&rt.name) {
            return Ok((Expr::Col(1), SqlType::Timestamp));
        }
        if self.per_row == Some(true) {
            let bounds = ["window_start", "window_end", "window_time"];
            if let Some(b) = bounds.iter().position(|b| is(b)) {
                return Ok((Expr::Col(ROW_WINDOW + b as u16), SqlType::Timestamp));
            }
        }
        let Some(ci) = t.column(name) else {
            return Err(SqlError::at(
                at,
                format!("`{}` has no column `{name}`", t.name),
                format!(
                    "use one of: {}",
                    t.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if Some(ci) == self.key {
            if t.columns[ci].ty == SqlType::Boolean {
                // A query without GROUP BY keys its rows by a BOOLEAN
                // column it reads (its only text column).
                return Ok((
                    Expr::Cast(Box::new(Expr::Col(KEY)), CastTo::Bool),
                    SqlType::Boolean,
                ));
            }
            return Ok((Expr::Col(KEY), t.columns[ci].ty));
        }
        if let (true, Some(p)) = (ci == rt.column, rt.epoch_precision) {
            // The epoch number the time attribute is computed from: the
            // sample's time in its unit.
            let ms = Expr::Cast(Box::new(Expr::Col(1)), CastTo::Int);
            let x = match p {
                0 => Expr::Cast(
                    Box::new(Expr::bin(BinOp::Div, ms, Expr::num(1000.0))),
                    CastTo::Int,
                ),
                _ => ms,
            };
            return Ok((x, t.columns[ci].ty));
        }
        if let Some(i) = self.keys.iter().position(|&c| c == ci) {
            // Key columns are read as text, before the other text columns.
            let col = Expr::Col(2 + (self.fields.len() + i) as u16);
            let ty = t.columns[ci].ty;
            return Ok(match ty {
                SqlType::String => (col, ty),
                SqlType::Boolean => (Expr::Cast(Box::new(col), CastTo::Bool), ty),
                _ => (Expr::Cast(Box::new(col), CastTo::Int), ty),
            });
        }
        if let Some(p) = self.fields.iter().position(|&f| f == ci) {
            return Ok((Expr::Col(2 + p as u16), t.columns[ci].ty));
        }
        let ty = t.columns[ci].ty;
        if !matches!(ty, SqlType::String | SqlType::Boolean) {
            return Err(SqlError::unsupported(
                at,
                &format!(
                    "reading the {} column `{name}` in WHERE",
                    t.columns[ci].ty.name()
                ),
                "a condition on a STRING, BOOLEAN, numeric or time column",
            ));
        }
        let ti = match self.texts.iter().position(|&c| c == ci) {
            Some(i) => i,
            None => {
                self.texts.push(ci);
                self.texts.len() - 1
            }
        };
        let col = Expr::Col(2 + (self.fields.len() + ti) as u16);
        Ok(if ty == SqlType::Boolean {
            // Read as text: `true` / `false` (anything else is NULL).
            (Expr::Cast(Box::new(col), CastTo::Bool), ty)
        } else {
            (col, ty)
        })
    }

    /// The field an aggregate reads: a numeric column, or an expression
    /// over the sample computed before the engine (a new field).
    fn field_of(&mut self, e: &SExpr) -> Err<usize> {
        let at = loc_of(e, self.at);
        let Some(id) = ident_name(e) else {
            let text = e.to_string();
            if let Some(f) = self.computed_field(&text) {
                return Ok(f);
            }
            if let Some(f) = self.udf_call(e)? {
                return Ok(f);
            }
            let (x, t) = self.expr(e, Scope::Row)?;
            aggregable(t, e, at)?;
            return self.push_computed(x, t, text, at);
        };
        let ci = self.table.column(&id.value).ok_or_else(|| {
            SqlError::at(
                at,
                format!("`{}` has no column `{}`", self.table.name, id.value),
                "aggregate a numeric column of the table",
            )
        })?;
        self.fields.iter().position(|&f| f == ci).ok_or_else(|| {
            SqlError::at(
                at,
                format!(
                    "`{}` is {}, not a numeric column that can be aggregated",
                    id.value,
                    self.table.columns[ci].ty.name()
                ),
                "aggregate an INT, BIGINT, DOUBLE or DECIMAL column",
            )
        })
    }

    /// The field an aggregate with `FILTER (WHERE cond)` reads: `CASE WHEN
    /// cond THEN e END` computed per sample (`e` `None`: `COUNT(*)`'s 1),
    /// `NULL` where `cond` does not hold.
    fn field_where(&mut self, e: Option<&SExpr>, cond: &SExpr, at: Location) -> Err<usize> {
        let text = match e {
            Some(e) => format!("{e} FILTER (WHERE {cond})"),
            None => format!("* FILTER (WHERE {cond})"),
        };
        if let Some(f) = self.computed_field(&text) {
            return Ok(f);
        }
        let (x, t) = match e {
            Some(e) => {
                let (x, t) = self.expr(e, Scope::Row)?;
                aggregable(t, e, at)?;
                (x, t)
            }
            None => (Expr::num(1.0), SqlType::Int),
        };
        let x = self.only_where(x, cond, at)?;
        self.push_computed(x, t, text, at)
    }

    /// `CASE WHEN cond THEN x END`: `x` on the samples where `cond` (a
    /// row condition) holds, `NULL` on the others.
    fn only_where(&mut self, x: Expr, cond: &SExpr, at: Location) -> Err<Expr> {
        let (c, ct) = self.expr(cond, Scope::Row)?;
        self.boolean(ct, cond, at)?;
        Ok(Expr::Case(vec![(c, x)], None))
    }

    /// The computed field whose SQL text is `text`, if the query has one.
    fn computed_field(&self, text: &str) -> Option<usize> {
        self.computed
            .iter()
            .position(|c| c.2 == text)
            .map(|j| self.fields.len() + j)
    }

    /// Adds a field computed per sample before the engine (at most 16).
    fn push_computed(&mut self, x: Expr, t: SqlType, text: String, at: Location) -> Err<usize> {
        if self.computed.len() >= 16 {
            return Err(SqlError::unsupported(
                at,
                "more than 16 aggregated expressions",
                "at most 16 expressions under aggregates",
            ));
        }
        self.computed.push((x, t, text));
        Ok(self.fields.len() + self.computed.len() - 1)
    }

    /// A call of a created function whose arguments are numeric columns:
    /// a new field, computed by the function before the engine.
    fn udf_call(&mut self, e: &SExpr) -> Err<Option<usize>> {
        let SExpr::Function(f) = e else {
            return Ok(None);
        };
        let name = f.name.to_string();
        let Some(def) = self.funcs.iter().find(|d| d.0.eq_ignore_ascii_case(&name)) else {
            return Ok(None);
        };
        let at = loc_of(e, self.at);
        let mut args = Vec::new();
        for (n, a) in args_of(f) {
            if n.is_some() {
                return Err(SqlError::unsupported(
                    at,
                    &format!("a named argument of user function `{name}`"),
                    "arguments by position: f(v, w)",
                ));
            }
            // A numeric column, or an expression computed first.
            args.push(self.field_of(a)?);
        }
        // A placeholder the query leaves at 0: the function fills it in.
        let output = self.push_computed(Expr::num(0.0), SqlType::Double, e.to_string(), at)?;
        self.udfs.push(UdfUse {
            id: format!("{}#{}", def.0, self.udfs.len()),
            name: def.0.clone(),
            module: def.1.clone(),
            args,
            output,
            at,
            source: 1 + self.udfs.len(),
        });
        Ok(Some(output))
    }

    /// `GROUPING(a)` (1 in the rows of a grouping set that does not group
    /// by `a`, else 0) and `GROUPING_ID(a, b, …)` (those bits, the first
    /// argument's the highest), from the window row's grouping bits
    /// ([`super::groups::Groups::split`]).
    fn grouping(&mut self, f: &ast::Function, at: Location) -> Err<(Expr, SqlType)> {
        let n = self.keys.len() as u16;
        let mut x: Option<Expr> = None;
        for (_, a) in args_of(f) {
            let is = |c: usize| {
                ident_name(a)
                    .is_some_and(|id| self.table.columns[c].name.eq_ignore_ascii_case(&id.value))
            };
            let bit = match self.keys.iter().position(|&c| is(c)) {
                Some(i) => Expr::Col(super::groups::KEYS_BASE + n + i as u16),
                // The one key column of a query without grouping sets.
                None if self.key.is_some_and(is) => Expr::num(0.0),
                None => {
                    return Err(SqlError::at(
                        loc_of(a, at),
                        format!("`{a}` in {} is not a GROUP BY key column", fname(f)),
                        "pass key columns of GROUP BY: GROUPING(supplier_id)",
                    ))
                }
            };
            x = Some(match x {
                None => bit,
                Some(h) => Expr::Bin(
                    BinOp::Add,
                    Box::new(Expr::Bin(BinOp::Mul, Box::new(h), Box::new(Expr::num(2.0)))),
                    Box::new(bit),
                ),
            });
        }
        let x = x.ok_or_else(|| {
            SqlError::at(
                at,
                format!("{} needs key columns", fname(f)),
                "write GROUPING(supplier_id)",
            )
        })?;
        Ok((x, SqlType::BigInt))
    }

    /// The type of field `f` (a column or a computed expression).
    fn field_ty(&self, f: usize) -> SqlType {
        match self.fields.get(f) {
            Some(&c) => self.table.columns[c].ty,
            None => self.computed[f - self.fields.len()].1,
        }
    }

    /// The engine's name of field `f`.
    fn field_name(&self, f: usize) -> String {
        match self.fields.get(f) {
            Some(&c) => self.table.columns[c].name.clone(),
            None => format!("expr{}", f - self.fields.len()),
        }
    }

    fn slot(&mut self, agg: AggKind, field: usize, at: Location) -> Err<u16> {
        if self.slots.len() >= MAX_SLOTS && !self.slots.contains(&(agg, field)) {
            return Err(SqlError::unsupported(
                at,
                &format!("more than {MAX_SLOTS} different aggregates in one query"),
                "at most 16 aggregates per column",
            ));
        }
        Ok(self.slot_unchecked(agg, field))
    }

    fn slot_unchecked(&mut self, agg: AggKind, field: usize) -> u16 {
        let i = match self.slots.iter().position(|s| *s == (agg, field)) {
            Some(i) => i,
            None => {
                self.slots.push((agg, field));
                self.slots.len() - 1
            }
        };
        if self.per_row.is_some() {
            ROW_OVER + i as u16
        } else {
            SLOTS + i as u16
        }
    }

    /// An aggregate with `OVER` in a query without `GROUP BY`: its slots
    /// (at [`ROW_OVER`]) are what [`super::over::OverOp`] computes per row.
    fn over_aggregate(&mut self, f: &ast::Function, at: Location) -> Err<(Expr, SqlType)> {
        self.same_window(f, at)?;
        let name = fname(f);
        let computed = self.computed.len();
        self.over_ok = true;
        let r = self.aggregate_as(f, at, true);
        self.over_ok = false;
        let r = r?;
        let Some(r) = r else {
            return Err(SqlError::at(
                at,
                format!("{name} is not an aggregate"),
                "AVG, SUM, COUNT, MIN, MAX, STDDEV_*, VAR_* … OVER w",
            ));
        };
        if self.computed.len() > computed {
            return Err(SqlError::unsupported(
                at,
                &format!("an expression, FILTER or DISTINCT in {name}(…) OVER"),
                "an aggregate of a column: compute the expression in a view (WITH t AS (SELECT …, v * 2 AS v2 …)) and aggregate its column",
            ));
        }
        if self
            .slots
            .iter()
            .any(|s| matches!(s.0, AggKind::Percentile(_) | AggKind::CountDistinct))
        {
            return Err(SqlError::unsupported(
                at,
                &format!(
                    "{name}(…) over an OVER window (as APPROX_PERCENTILE or COUNT(DISTINCT …))"
                ),
                "COUNT, SUM, AVG, MIN, MAX, STDDEV_*, VAR_*, RMS, KURTOSIS, CREST, P2P … OVER w",
            ));
        }
        Ok(r)
    }

    /// The window `f` is over, which must be the query's one.
    fn same_window(&mut self, f: &ast::Function, at: Location) -> Err<()> {
        let over = f.over.as_ref().expect("checked by the caller");
        let w = super::over::window_of(over, self.named_windows, self.table, at)?;
        match &self.over {
            None => self.over = Some(w),
            Some(o) if *o == w => {}
            Some(_) => {
                return Err(SqlError::unsupported(
                    at,
                    "OVER aggregates over different windows in one query",
                    "one window for all of them, as Flink requires: WINDOW w AS (PARTITION BY … ORDER BY rowtime …) and AGG(x) OVER w",
                ))
            }
        }
        Ok(())
    }

    /// `LAG(x [, offset [, default]]) OVER w`: `x` at the row `offset`
    /// (1) before the current one in its partition, `default` (NULL) when
    /// there is none. The other window functions are refused by name.
    fn over_function(&mut self, f: &ast::Function, at: Location) -> Err<(Expr, SqlType)> {
        let name = fname(f);
        if name == "ROW_NUMBER" {
            return Err(SqlError::unsupported(
                at,
                "ROW_NUMBER() outside a window Top-N",
                "a window Top-N: SELECT * FROM (SELECT …, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY x DESC) AS rownum FROM …) WHERE rownum <= 3",
            ));
        }
        if name != "LAG" {
            return Err(SqlError::unsupported(
                at,
                &format!(
                    "{name}() OVER (LEAD needs later rows; the ranking and value functions are not built)"
                ),
                "LAG(x) OVER w, or aggregates OVER w (docs/sql.md, OVER aggregations)",
            ));
        }
        self.same_window(f, at)?;
        let args = args_of(f);
        if args.is_empty() || args.len() > 3 || args.iter().any(|a| a.0.is_some()) {
            return Err(SqlError::at(
                at,
                "LAG takes a column, then optionally an offset and a default",
                "write LAG(v), LAG(v, 2) or LAG(v, 1, 0.0)",
            ));
        }
        let offset = match args.get(1) {
            None => 1,
            Some((_, e)) => match literal_num(e) {
                Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 1000.0 => n as u64,
                _ => {
                    return Err(SqlError::at(
                        loc_of(*e, at),
                        format!(
                        "LAG's offset must be a whole number of rows from 0 to 1000, found `{e}`"
                    ),
                        "write LAG(v, 2)",
                    ))
                }
            },
        };
        let default = match args.get(2) {
            None => f64::NAN,
            Some((_, SExpr::Value(v))) if matches!(v.value, ast::Value::Null) => f64::NAN,
            Some((_, e)) => match literal_num(e) {
                Some(x) => x,
                None => {
                    return Err(SqlError::at(
                        loc_of(*e, at),
                        format!("LAG's default must be a number or NULL, found `{e}`"),
                        "write LAG(v, 1, 0.0), or COALESCE(LAG(v), v) for the row's own value",
                    ))
                }
            },
        };
        if let Some(id) = ident_name(args[0].1) {
            if let Some(c) = self.table.column(&id.value) {
                let ty = self.table.columns[c].ty;
                if !ty.is_numeric() {
                    return Err(SqlError::unsupported(
                        loc_of(args[0].1, at),
                        &format!(
                            "LAG of the {} column `{}` (weir keeps a reading's numbers for it)",
                            ty.name(),
                            id.value
                        ),
                        "LAG of a numeric column: LAG(temp) OVER w",
                    ));
                }
                if matches!(ty, SqlType::Int | SqlType::BigInt)
                    && default.is_finite()
                    && default.fract() != 0.0
                {
                    return Err(SqlError::at(
                        loc_of(args[2].1, at),
                        format!(
                            "LAG's default {default} is not a whole number, and `{}` is {}",
                            id.value,
                            ty.name()
                        ),
                        "give a default of the column's type: LAG(n, 1, 0)",
                    ));
                }
            }
        }
        let computed = self.computed.len();
        let field = self.field_of(args[0].1)?;
        if self.computed.len() > computed {
            return Err(SqlError::unsupported(
                at,
                "an expression in LAG(…)",
                "LAG of a column: compute the expression in a view and take its column's LAG",
            ));
        }
        let ty = self.field_ty(field);
        let i = match self
            .lags
            .iter()
            .position(|l| l.0 == field && l.1 == offset && l.2.to_bits() == default.to_bits())
        {
            Some(i) => i,
            None => {
                self.lags.push((field, offset, default));
                self.lags.len() - 1
            }
        };
        Ok((Expr::Col(ROW_LAG + i as u16), ty))
    }

    /// An aggregate call, or `None` if `f` is not one.
    fn aggregate(&mut self, f: &ast::Function, at: Location) -> Err<Option<(Expr, SqlType)>> {
        self.aggregate_as(f, at, true)
    }

    /// [`Ctx::aggregate`]; `integral`: an `AVG`, `STDDEV_*` or `VAR_*` of
    /// an integer column is Flink's integer expression (a detector watches
    /// the engine's own aggregate instead).
    fn aggregate_as(
        &mut self,
        f: &ast::Function,
        at: Location,
        integral: bool,
    ) -> Err<Option<(Expr, SqlType)>> {
        let name = fname(f);
        let agg = match name.as_str() {
            "COUNT" => AggKind::Count,
            "SUM" => AggKind::Sum,
            "AVG" => AggKind::Mean,
            "MIN" => AggKind::Min,
            "MAX" => AggKind::Max,
            "STDDEV_POP" => AggKind::Stddev,
            "STDDEV_SAMP" | "STDDEV" => AggKind::StddevSample,
            "VAR_POP" => AggKind::Variance,
            "VAR_SAMP" | "VARIANCE" => AggKind::StddevSample,
            "RMS" => AggKind::Rms,
            "KURTOSIS" => AggKind::Kurtosis,
            "CREST" => AggKind::CrestFactor,
            "P2P" => AggKind::PeakToPeak,
            "APPROX_PERCENTILE" => AggKind::Percentile(0.0),
            _ => return Ok(None),
        };
        if f.over.is_some() && !self.over_ok {
            return Err(SqlError::unsupported(
                at,
                "an OVER aggregate beside GROUP BY or plain aggregates",
                "OVER aggregates alone, in a query without GROUP BY (SELECT k, v, AVG(v) OVER w FROM t WINDOW w AS (…)), or a window TVF with GROUP BY window_start, window_end",
            ));
        }
        let distinct = matches!(&f.args, FunctionArguments::List(l)
            if l.duplicate_treatment == Some(ast::DuplicateTreatment::Distinct));
        if distinct && name != "COUNT" {
            return Err(SqlError::unsupported(
                at,
                &format!("DISTINCT in {name}(…)"),
                &format!("COUNT(DISTINCT column), or a plain {name}(column)"),
            ));
        }
        if matches!(&f.args, FunctionArguments::List(l) if !l.clauses.is_empty()) {
            return Err(SqlError::unsupported(
                at,
                &format!("clauses in {name}(…)"),
                &format!("a plain {name}(column) or COUNT(DISTINCT column)"),
            ));
        }
        // `agg(x) FILTER (WHERE c)` aggregates the computed field `CASE
        // WHEN c THEN x END`: the rows that fail `c` are NULL inputs, which
        // every aggregate leaves out (Flink's semantics); `COUNT(*)` counts
        // a 1 ([`Ctx::field_where`]).
        let filter = f.filter.as_deref();
        if distinct {
            return self.count_distinct(f, filter, at).map(Some);
        }
        let args = args_of(f);
        if let (Some(cond), true) = (filter, name == "COUNT" && is_star(f)) {
            let c = self.field_where(None, cond, at)?;
            let c = self.slot(AggKind::Count, c, at)?;
            return Ok(Some((Expr::Col(c), SqlType::BigInt)));
        }
        if name == "COUNT" && is_star(f) {
            // COUNT(*): the rows (NULLs included) of whichever field the
            // other aggregates use (resolved once they are all known).
            let c = self.slot(AggKind::Rows, ANY_FIELD, at)?;
            return Ok(Some((Expr::Col(c), SqlType::BigInt)));
        }
        let want = if name == "APPROX_PERCENTILE" { 2 } else { 1 };
        if args.len() != want || args.iter().any(|a| a.0.is_some()) {
            return Err(SqlError::at(
                at,
                format!("{name} takes {want} argument(s)"),
                if want == 2 {
                    "write APPROX_PERCENTILE(column, 0.95)".to_string()
                } else {
                    format!("write {name}(column)")
                },
            ));
        }
        let field = match filter {
            Some(cond) => self.field_where(Some(args[0].1), cond, at)?,
            None => self.field_of(args[0].1)?,
        };
        let ty = self.field_ty(field);
        let agg = match agg {
            AggKind::Percentile(_) => {
                let p = literal_num(args[1].1).filter(|p| (0.0..=1.0).contains(p));
                let Some(p) = p else {
                    return Err(SqlError::at(
                        loc_of(args[1].1, at),
                        "the percentile must be a number between 0 and 1",
                        "write APPROX_PERCENTILE(column, 0.95) for the 95th percentile",
                    ));
                };
                AggKind::Percentile(p * 100.0)
            }
            a => a,
        };
        if integral
            && matches!(ty, SqlType::Int | SqlType::BigInt)
            && matches!(
                agg,
                AggKind::Mean | AggKind::Stddev | AggKind::StddevSample | AggKind::Variance
            )
        {
            return self.integral_average(&name, field, ty, at).map(Some);
        }
        if let (true, SqlType::Decimal(s), AggKind::Mean) = (integral, ty, agg) {
            // Flink: DECIMAL(38, max(6, s)), the exact sum (the double sum
            // rounded to its s decimals) over the count, rounded half up.
            let n = Expr::Col(self.slot(AggKind::Count, field, at)?);
            let sum = Expr::Col(self.slot(AggKind::Sum, field, at)?);
            let exact = Expr::Call(Func::Round, vec![sum, Expr::num(f64::from(s))]);
            return Ok(Some((
                Expr::bin(BinOp::Div, exact, n),
                SqlType::Decimal(s.max(6)),
            )));
        }
        let col = Expr::Col(self.slot(agg, field, at)?);
        let out_ty = match (agg, ty) {
            (AggKind::Count, _) => SqlType::BigInt,
            (AggKind::Sum | AggKind::Min | AggKind::Max | AggKind::PeakToPeak, t) => t,
            _ => SqlType::Double,
        };
        let expr = if matches!(name.as_str(), "VAR_SAMP" | "VARIANCE") {
            Expr::bin(BinOp::Mul, col.clone(), col)
        } else {
            col
        };
        Ok(Some((expr, out_ty)))
    }

    /// `AVG`, `STDDEV_*` and `VAR_*` of an `INT` or `BIGINT` argument, as
    /// Flink computes them: of the argument's type, in integers. `AVG` is
    /// `SUM / COUNT`; the others are Calcite's reduction,
    /// `(SUM(x²) − SUM(x)² / n) / n` (`n − 1` for the sample forms, `NULL`
    /// for one row) with integer divisions, and its square root cast back
    /// to the type (truncated). `SUM(x²)` is the engine's variance times
    /// `n` plus `SUM(x)² / n`, rounded to the integer it is.
    fn integral_average(
        &mut self,
        name: &str,
        field: usize,
        ty: SqlType,
        at: Location,
    ) -> Err<(Expr, SqlType)> {
        let trunc = |e: Expr| Expr::Cast(Box::new(e), CastTo::Int);
        let n = Expr::Col(self.slot(AggKind::Count, field, at)?);
        let sum = Expr::Col(self.slot(AggKind::Sum, field, at)?);
        if name == "AVG" {
            return Ok((trunc(Expr::bin(BinOp::Div, sum, n)), ty));
        }
        let var = Expr::Col(self.slot(AggKind::Variance, field, at)?);
        let sq = Expr::bin(BinOp::Mul, sum.clone(), sum);
        let sumsq = Expr::Call(
            Func::Round,
            vec![Expr::bin(
                BinOp::Add,
                Expr::bin(BinOp::Mul, var, n.clone()),
                Expr::bin(BinOp::Div, sq.clone(), n.clone()),
            )],
        );
        let diff = Expr::bin(
            BinOp::Sub,
            sumsq,
            trunc(Expr::bin(BinOp::Div, sq, n.clone())),
        );
        let sample = matches!(name, "STDDEV_SAMP" | "STDDEV" | "VAR_SAMP" | "VARIANCE");
        let denominator = if sample {
            Expr::bin(BinOp::Sub, n, Expr::num(1.0))
        } else {
            n
        };
        let v = trunc(Expr::bin(BinOp::Div, diff, denominator));
        Ok(match name {
            "STDDEV_POP" | "STDDEV_SAMP" | "STDDEV" => (trunc(Expr::Call(Func::Sqrt, vec![v])), ty),
            _ => (v, ty),
        })
    }

    /// `COUNT(DISTINCT x)`: the distinct values of `x` in the window and
    /// group, `NULL` not counted (Flink). A numeric `x` is counted as it
    /// is; a STRING or BOOLEAN one through its [`Func::DistinctKey`],
    /// computed before the engine, whose `NULL` (-1) the `MIN` of the same
    /// field reveals and the count leaves out.
    fn count_distinct(
        &mut self,
        f: &ast::Function,
        filter: Option<&SExpr>,
        at: Location,
    ) -> Err<(Expr, SqlType)> {
        let usage = "write COUNT(DISTINCT column)";
        let args = args_of(f);
        if is_star(f) || args.len() != 1 || args[0].0.is_some() {
            return Err(SqlError::at(
                at,
                "COUNT(DISTINCT …) takes one column or expression",
                usage,
            ));
        }
        let arg = args[0].1;
        let text = match filter {
            Some(cond) => format!("DISTINCT_KEY({arg}) FILTER (WHERE {cond})"),
            None => format!("DISTINCT_KEY({arg})"),
        };
        let field = match self.computed_field(&text) {
            Some(f) => f,
            None => {
                let ty = match ident_name(arg).and_then(|id| self.table.column(&id.value)) {
                    Some(ci) => self.table.columns[ci].ty,
                    None => self.expr(arg, Scope::Row)?.1,
                };
                if ty.is_numeric() {
                    let f = match filter {
                        Some(cond) => self.field_where(Some(arg), cond, at)?,
                        None => self.field_of(arg)?,
                    };
                    return Ok((
                        Expr::Col(self.slot(AggKind::CountDistinct, f, at)?),
                        SqlType::BigInt,
                    ));
                }
                let (mut x, _) = self.expr(arg, Scope::Row)?;
                if let Some(cond) = filter {
                    x = self.only_where(x, cond, at)?;
                }
                let key = Expr::Call(Func::DistinctKey, vec![x]);
                self.push_computed(key, SqlType::Double, text, at)?
            }
        };
        let n = Expr::Col(self.slot(AggKind::CountDistinct, field, at)?);
        // A text's NULL is the key -1: then MIN is negative.
        let min = Expr::Col(self.slot(AggKind::Min, field, at)?);
        let has_null = Expr::Case(
            vec![(Expr::bin(BinOp::Lt, min, Expr::num(0.0)), Expr::num(1.0))],
            Some(Box::new(Expr::num(0.0))),
        );
        Ok((Expr::bin(BinOp::Sub, n, has_null), SqlType::BigInt))
    }

    fn detector(&mut self, f: &ast::Function, at: Location) -> Err<(Expr, SqlType)> {
        let args = args_of(f);
        let usage = "write EWMA_Z(AVG(value)) or EWMA_Z(AVG(value), alpha, k, warmup), e.g. EWMA_Z(AVG(value), 0.1, 3.0, 5)";
        if args.is_empty() || args.len() > 4 || args.len() == 2 || args.len() == 3 {
            return Err(SqlError::at(
                at,
                "EWMA_Z takes an aggregate and optionally alpha, k and warmup",
                usage,
            ));
        }
        let SExpr::Function(inner) = args[0].1 else {
            return Err(SqlError::at(
                loc_of(args[0].1, at),
                "EWMA_Z watches an aggregate of the window",
                usage,
            ));
        };
        let Some((Expr::Col(c), _)) = self.aggregate_as(inner, loc_of(args[0].1, at), false)?
        else {
            return Err(SqlError::at(
                loc_of(args[0].1, at),
                "EWMA_Z watches one plain aggregate (not VAR_SAMP)",
                usage,
            ));
        };
        let (on, field) = self.slots[(c - SLOTS) as usize];
        let DetectorSpec::EwmaZ {
            mut alpha,
            mut k,
            mut warmup,
        } = DetectorSpec::default()
        else {
            unreachable!("the default detector is EwmaZ")
        };
        if args.len() == 4 {
            let nums: Vec<Option<f64>> = args[1..].iter().map(|a| literal_num(a.1)).collect();
            match nums[..] {
                [Some(a), Some(kk), Some(w)]
                    if w >= 0.0 && w.fract() == 0.0 && w <= u32::MAX as f64 =>
                {
                    (alpha, k, warmup) = (a, kk, w as u32);
                }
                _ => return Err(SqlError::at(
                    at,
                    "EWMA_Z's alpha, k and warmup must be number literals (warmup a whole number)",
                    usage,
                )),
            }
        }
        let spec = DetectorSpec::EwmaZ { alpha, k, warmup };
        spec.validate()
            .map_err(|e| SqlError::at(at, format!("EWMA_Z: {e}"), usage))?;
        if self.flags.iter().any(|fl| fl.0 == field) {
            return Err(SqlError::unsupported(
                at,
                "two detectors on the same column",
                "one EWMA_Z per aggregated column",
            ));
        }
        self.flags.push((field, on, spec));
        Ok((
            Expr::Col(FLAG_BASE + self.flags.len() as u16 - 1),
            SqlType::Boolean,
        ))
    }

    /// `left op right` (an arithmetic, comparison or boolean operator).
    fn binary(
        &mut self,
        left: &SExpr,
        op: &B,
        right: &SExpr,
        scope: Scope,
        at: Location,
    ) -> Err<(Expr, SqlType)> {
        let num = |t: SqlType, side: &SExpr| numeric(t, side, at);
        let (a, ta) = self.expr(left, scope)?;
        if let (B::Plus | B::Minus, SExpr::Interval(iv), true) = (op, right, ta.is_time()) {
            // `ts ± INTERVAL …`: a timestamp of the same type.
            let ms = super::ddl::interval_ms(iv, loc_of(right, at))?;
            let n = if matches!(op, B::Minus) { -ms } else { ms };
            return Ok((
                Expr::Call(
                    Func::TimestampAdd(TimeField::Millisecond),
                    vec![Expr::num(n as f64), a],
                ),
                ta,
            ));
        }
        let (b, tb) = self.expr(right, scope)?;
        if let B::StringConcat = op {
            text_arg(ta, left, at)?;
            text_arg(tb, right, at)?;
            return Ok((Expr::Call(Func::Concat, vec![a, b]), SqlType::String));
        }
        let bop = match op {
            B::Plus => BinOp::Add,
            B::Minus => BinOp::Sub,
            B::Multiply => BinOp::Mul,
            B::Divide => BinOp::Div,
            B::Modulo => BinOp::Mod,
            B::Eq => BinOp::Eq,
            B::NotEq => BinOp::Ne,
            B::Lt => BinOp::Lt,
            B::LtEq => BinOp::Le,
            B::Gt => BinOp::Gt,
            B::GtEq => BinOp::Ge,
            B::And => BinOp::And,
            B::Or => BinOp::Or,
            _ => {
                return Err(SqlError::unsupported(
                    at,
                    &format!("the operator {op}"),
                    "+ - * / %, = <> < <= > >=, AND, OR",
                ))
            }
        };
        Ok(match bop {
            BinOp::And | BinOp::Or => {
                self.boolean(ta, left, at)?;
                self.boolean(tb, right, at)?;
                (Expr::bin(bop, a, b), SqlType::Boolean)
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let class = |t: SqlType| {
                    if t.is_numeric() {
                        0
                    } else if t.is_time() {
                        1
                    } else if t == SqlType::String {
                        2
                    } else {
                        3
                    }
                };
                if class(ta) != class(tb) {
                    return Err(SqlError::at(
                            at,
                            format!("cannot compare {} with {}", ta.name(), tb.name()),
                            "compare values of the same kind; CAST(… AS DOUBLE) or CAST(… AS STRING) converts",
                        ));
                }
                (Expr::bin(bop, a, b), SqlType::Boolean)
            }
            _ => {
                num(ta, left)?;
                num(tb, right)?;
                let int = |t: SqlType| matches!(t, SqlType::Int | SqlType::BigInt);
                let ty = match (ta, tb) {
                    (x, y) if int(x) && int(y) => SqlType::BigInt,
                    (SqlType::Decimal(p), SqlType::Decimal(q))
                        if matches!(bop, BinOp::Add | BinOp::Sub) =>
                    {
                        SqlType::Decimal(p.max(q))
                    }
                    (SqlType::Decimal(p), y) | (y, SqlType::Decimal(p))
                        if int(y) && matches!(bop, BinOp::Add | BinOp::Sub | BinOp::Mul) =>
                    {
                        SqlType::Decimal(p)
                    }
                    _ => SqlType::Double,
                };
                let e = Expr::bin(bop, a, b);
                // Flink divides integers as integers.
                if ty == SqlType::BigInt && bop == BinOp::Div {
                    (Expr::Cast(Box::new(e), CastTo::Int), ty)
                } else {
                    (e, ty)
                }
            }
        })
    }

    pub(super) fn expr(&mut self, e: &SExpr, scope: Scope) -> Err<(Expr, SqlType)> {
        let at = loc_of(e, self.at);
        let num = |t: SqlType, side: &SExpr| numeric(t, side, at);
        Ok(match e {
            SExpr::Identifier(_) | SExpr::CompoundIdentifier(_) => {
                self.column(ident_name(e).expect("an identifier"), scope)?
            }
            SExpr::Nested(x) => self.expr(x, scope)?,
            SExpr::TypedString(ts) if matches!(ts.data_type, ast::DataType::Timestamp(..)) => {
                // `TIMESTAMP '2020-04-15 08:05:00'`: a constant.
                let ms = match &ts.value.value {
                    ast::Value::SingleQuotedString(t) => crate::timefmt::parse_datetime_ms(t),
                    _ => None,
                };
                let Some(ms) = ms else {
                    return Err(SqlError::at(at, format!("`{e}` is not a timestamp"), "write TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.sss]'"));
                };
                (Expr::Lit(Value::Ts(ms)), SqlType::Timestamp)
            }
            SExpr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => {
                    let x: f64 = n.parse().map_err(|_| {
                        SqlError::at(at, format!("`{n}` is not a number"), "write a decimal number")
                    })?;
                    let ty = if n.contains(['.', 'e', 'E']) {
                        SqlType::Double
                    } else {
                        SqlType::Int
                    };
                    (Expr::num(x), ty)
                }
                ast::Value::SingleQuotedString(s) => (Expr::Lit(Value::Str(s.clone())), SqlType::String),
                ast::Value::Boolean(b) => (Expr::Lit(Value::Bool(*b)), SqlType::Boolean),
                ast::Value::Null => (Expr::Lit(Value::Null), SqlType::Double),
                _ => return Err(SqlError::unsupported(at, &format!("the literal {v}"), "numbers, 'strings', TRUE, FALSE, NULL")),
            },
            SExpr::UnaryOp { op, expr } => {
                let (x, t) = self.expr(expr, scope)?;
                match op {
                    UnaryOperator::Minus => {
                        num(t, expr)?;
                        (Expr::Neg(Box::new(x)), t)
                    }
                    UnaryOperator::Plus => {
                        num(t, expr)?;
                        (x, t)
                    }
                    UnaryOperator::Not => {
                        self.boolean(t, expr, at)?;
                        (Expr::Not(Box::new(x)), SqlType::Boolean)
                    }
                    _ => return Err(SqlError::unsupported(at, &format!("the operator {op}"), "-, NOT")),
                }
            }
            SExpr::BinaryOp { left, op, right } => self.binary(left, op, right, scope, at)?,
            SExpr::IsNull(x) | SExpr::IsNotNull(x) => {
                let (x, _) = self.expr(x, scope)?;
                (
                    Expr::IsNull(Box::new(x), matches!(e, SExpr::IsNotNull(_))),
                    SqlType::Boolean,
                )
            }
            SExpr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let (x, t) = self.expr(expr, scope)?;
                if t != SqlType::String {
                    return Err(SqlError::at(at, format!("LIKE needs a STRING, `{expr}` is {}", t.name()), "use LIKE on a STRING column"));
                }
                let SExpr::Value(ast::ValueWithSpan { value: ast::Value::SingleQuotedString(p), .. }) = &**pattern else {
                    return Err(SqlError::unsupported(loc_of(&**pattern, at), "a LIKE pattern that is not a string literal", "LIKE 'pump-%'"));
                };
                (Expr::Like(Box::new(x), p.clone(), *negated), SqlType::Boolean)
            }
            // Built from comparisons, without copying the syntax tree.
            SExpr::Between { expr, negated, low, high } => {
                let (ge, _) = self.binary(expr, &B::GtEq, low, scope, at)?;
                let (le, _) = self.binary(expr, &B::LtEq, high, scope, at)?;
                let x = Expr::bin(BinOp::And, ge, le);
                (if *negated { Expr::Not(Box::new(x)) } else { x }, SqlType::Boolean)
            }
            SExpr::In { expr, target: ast::InTarget::List(list), negated, global: false } if !list.is_empty() => {
                let mut acc: Option<Expr> = None;
                for v in list {
                    let (eq, _) = self.binary(expr, &B::Eq, v, scope, at)?;
                    acc = Some(match acc {
                        None => eq,
                        Some(a) => Expr::bin(BinOp::Or, a, eq),
                    });
                }
                let x = acc.expect("non-empty list");
                (if *negated { Expr::Not(Box::new(x)) } else { x }, SqlType::Boolean)
            }
            SExpr::Case { operand, conditions, else_result, .. } => {
                let mut whens = Vec::new();
                let mut ty: Option<SqlType> = None;
                for c in conditions {
                    let (ce, ct) = match operand {
                        Some(op) => self.binary(op, &B::Eq, &c.condition, scope, at)?,
                        None => self.expr(&c.condition, scope)?,
                    };
                    self.boolean(ct, &c.condition, at)?;
                    let (re, rt) = self.expr(&c.result, scope)?;
                    ty = Some(merge_ty(ty, rt, &c.result, at)?);
                    whens.push((ce, re));
                }
                let otherwise = match else_result {
                    Some(x) => {
                        let (re, rt) = self.expr(x, scope)?;
                        ty = Some(merge_ty(ty, rt, x, at)?);
                        Some(Box::new(re))
                    }
                    None => None,
                };
                (Expr::Case(whens, otherwise), ty.unwrap_or(SqlType::Double))
            }
            SExpr::Cast { expr, data_type, format: None, .. } => {
                let (x, from) = self.expr(expr, scope)?;
                let s = data_type.to_string().to_ascii_uppercase();
                let text = CastTo::Str(match from {
                    SqlType::Int | SqlType::BigInt => StrFrom::Int,
                    SqlType::Double => StrFrom::Double,
                    SqlType::Decimal(s) => StrFrom::Decimal(s),
                    SqlType::Timestamp | SqlType::TimestampLtz => StrFrom::TimestampMs,
                    SqlType::String | SqlType::Boolean => StrFrom::Any,
                });
                let (to, ty) = match s.as_str() {
                    "DOUBLE" | "FLOAT" => (CastTo::Double, SqlType::Double),
                    "INT" | "INTEGER" => (CastTo::Int, SqlType::Int),
                    "BIGINT" => (CastTo::Int, SqlType::BigInt),
                    "BOOLEAN" => (CastTo::Bool, SqlType::Boolean),
                    "STRING" => (text, SqlType::String),
                    _ if s.starts_with("VARCHAR") => {
                        // Flink (1.15+) cuts a VARCHAR(n) cast to n
                        // characters; VARCHAR alone is STRING.
                        let cast = Expr::Cast(Box::new(x), text);
                        let n = s.trim_start_matches("VARCHAR").trim().trim_start_matches('(').trim_end_matches(')').trim().parse::<u32>().ok();
                        return Ok(match n {
                            Some(n) => (Expr::Call(Func::Substring, vec![cast, Expr::num(1.0), Expr::num(f64::from(n))]), SqlType::String),
                            None => (cast, SqlType::String),
                        });
                    }
                    _ if s.starts_with("DECIMAL") => {
                        let scale = s.split_once(',').and_then(|(_, r)| r.trim().trim_end_matches(')').parse::<u8>().ok()).unwrap_or(0);
                        (CastTo::Decimal(scale.min(18)), SqlType::Decimal(scale.min(18)))
                    }
                    _ => return Err(SqlError::unsupported(at, &format!("CAST to {data_type}"), "CAST to DOUBLE, DECIMAL(p, s), INT, BIGINT, BOOLEAN or STRING")),
                };
                (Expr::Cast(Box::new(x), to), ty)
            }
            SExpr::Substring { expr, substring_from, substring_for, .. } => {
                let (x, t) = self.expr(expr, scope)?;
                text_arg(t, expr, at)?;
                let mut xs = vec![x];
                let from = substring_from.as_deref().ok_or_else(|| {
                    SqlError::at(at, "SUBSTRING without a start", "SUBSTRING(s FROM 2 FOR 3) or SUBSTRING(s, 2, 3)")
                })?;
                for a in std::iter::once(from).chain(substring_for.as_deref()) {
                    let (x, t) = self.expr(a, scope)?;
                    num(t, a)?;
                    xs.push(x);
                }
                (Expr::Call(Func::Substring, xs), SqlType::String)
            }
            SExpr::Trim { expr, trim_where, trim_what, trim_characters: None } => {
                let (x, t) = self.expr(expr, scope)?;
                text_arg(t, expr, at)?;
                let chars = match trim_what.as_deref() {
                    Some(w) => {
                        let (c, ct) = self.expr(w, scope)?;
                        text_arg(ct, w, at)?;
                        c
                    }
                    None => Expr::Lit(Value::Str(" ".into())),
                };
                let side = match trim_where {
                    None | Some(ast::TrimWhereField::Both) => 0.0,
                    Some(ast::TrimWhereField::Leading) => 1.0,
                    Some(ast::TrimWhereField::Trailing) => 2.0,
                };
                (Expr::Call(Func::Trim, vec![x, chars, Expr::num(side)]), SqlType::String)
            }
            SExpr::Ceil { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) }
            | SExpr::Floor { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
                let (x, t) = self.expr(expr, scope)?;
                num(t, expr)?;
                let f = if matches!(e, SExpr::Ceil { .. }) { Func::Ceil } else { Func::Floor };
                // Flink: the argument's type, a DECIMAL's scale 0.
                let t = if let SqlType::Decimal(_) = t { SqlType::Decimal(0) } else { t };
                (Expr::Call(f, vec![x]), t)
            }
            SExpr::Ceil { expr, field: ast::CeilFloorKind::DateTimeField(unit) }
            | SExpr::Floor { expr, field: ast::CeilFloorKind::DateTimeField(unit) } => {
                let up = matches!(e, SExpr::Ceil { .. });
                let (x, t) = self.time_expr(expr, scope, at)?;
                let Some(u) = TimeField::parse(&unit.to_string()).filter(|u| !matches!(u, TimeField::Week | TimeField::DayOfYear | TimeField::DayOfWeek)) else {
                    return Err(SqlError::unsupported(at, &format!("FLOOR/CEIL to {unit}"), "FLOOR(ts TO YEAR | QUARTER | MONTH | DAY | HOUR | MINUTE | SECOND)"));
                };
                (Expr::Call(Func::FloorTime(u, up), vec![x]), t)
            }
            SExpr::Extract { field, expr, .. } => {
                let (x, _) = self.time_expr(expr, scope, at)?;
                let Some(u) = TimeField::parse(&field.to_string()) else {
                    return Err(SqlError::unsupported(at, &format!("EXTRACT({field} FROM …)"), "EXTRACT(YEAR | QUARTER | MONTH | WEEK | DAY | DOY | DOW | HOUR | MINUTE | SECOND FROM ts)"));
                };
                (Expr::Call(Func::Extract(u), vec![x]), SqlType::BigInt)
            }
            SExpr::Function(f) => {
                if scope == Scope::Group {
                    if let Some(r) = self.aggregate(f, at)? {
                        return Ok(r);
                    }
                    if fname(f) == "EWMA_Z" {
                        return self.detector(f, at);
                    }
                    if matches!(fname(f).as_str(), "GROUPING" | "GROUPING_ID") {
                        return self.grouping(f, at);
                    }
                    if self.legacy {
                        match fname(f).as_str() {
                            "TUMBLE_START" | "HOP_START" | "SESSION_START" => return Ok((Expr::Col(START), SqlType::Timestamp)),
                            "TUMBLE_END" | "HOP_END" | "SESSION_END" => return Ok((Expr::Col(END), SqlType::Timestamp)),
                            "TUMBLE_ROWTIME" | "HOP_ROWTIME" | "SESSION_ROWTIME" => return Ok((Expr::Col(WTIME), SqlType::Timestamp)),
                            _ => {}
                        }
                    }
                } else if self.is_aggregate_name(f) && self.per_row == Some(false) && f.over.is_some() {
                    return self.over_aggregate(f, at);
                } else if f.over.is_some() && self.per_row == Some(false) && matches!(fname(f).as_str(), "LAG" | "LEAD" | "ROW_NUMBER" | "RANK" | "DENSE_RANK" | "FIRST_VALUE" | "LAST_VALUE") {
                    return self.over_function(f, at);
                } else if self.is_aggregate_name(f) && self.per_row.is_some() {
                    return Err(SqlError::at(at, format!("an aggregate ({}) in a query without GROUP BY", fname(f)), "aggregate over windows: … FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end[, key]"));
                } else if self.is_aggregate_name(f) {
                    return Err(SqlError::at(at, format!("an aggregate ({}) in WHERE", fname(f)), "filter on aggregates with HAVING"));
                }
                let name = fname(f);
                if f.filter.is_some() {
                    return Err(SqlError::at(
                        at,
                        format!("FILTER (WHERE …) after {name}(…), which is not an aggregate"),
                        "FILTER goes after an aggregate: COUNT(*) FILTER (WHERE v > 3)",
                    ));
                }
                if let Some(def) = self.funcs.iter().find(|d| d.0.eq_ignore_ascii_case(&name)) {
                    let def = def.clone();
                    if scope == Scope::Row {
                        // A field computed before the engine, read from
                        // the sample row after the text columns.
                        let p = self.field_of(e)?;
                        let j = p - self.fields.len();
                        return Ok((Expr::Col(COMPUTED_BASE + j as u16), SqlType::Double));
                    }
                    let mut xs = Vec::new();
                    for (n, a) in args_of(f) {
                        let (x, t) = self.expr(a, scope)?;
                        if n.is_some() {
                            return Err(SqlError::unsupported(at, &format!("a named argument of user function `{name}`"), "arguments by position: f(v, w)"));
                        }
                        num(t, a)?;
                        xs.push(x);
                    }
                    if self.post.len() >= 16 {
                        return Err(SqlError::unsupported(at, "more than 16 user function calls over window rows", "at most 16"));
                    }
                    let source = 1 + self.udfs.len();
                    self.udfs.push(UdfUse {
                        id: format!("{}#{}", def.0, self.udfs.len()),
                        name: def.0.clone(),
                        module: def.1.clone(),
                        args: (0..xs.len()).collect(),
                        output: xs.len(),
                        at,
                        source,
                    });
                    self.post.push((source, xs));
                    return Ok((Expr::Col(POST_BASE + self.post.len() as u16 - 1), SqlType::Double));
                }
                let args = args_of(f);
                if args.iter().any(|a| a.0.is_some()) {
                    return Err(SqlError::at(at, format!("a named argument of {name}"), "arguments by position: see docs/sql.md"));
                }
                let wrong = || SqlError::at(at, format!("wrong number of arguments to {name}"), "see docs/sql.md for each function's arguments");
                // Functions that are other expressions (Flink's rules).
                match (name.as_str(), &args[..]) {
                    ("PI", []) => return Ok((Expr::num(std::f64::consts::PI), SqlType::Double)),
                    ("E", []) => return Ok((Expr::num(std::f64::consts::E), SqlType::Double)),
                    ("PI" | "E", _) => return Err(wrong()),
                    ("MOD", [(_, a), (_, b)]) => return self.binary(a, &B::Modulo, b, scope, at),
                    ("IF", [(_, c), (_, a), (_, b)]) => {
                        let (ce, ct) = self.expr(c, scope)?;
                        self.boolean(ct, c, at)?;
                        let (ae, ta) = self.expr(a, scope)?;
                        let (be, tb) = self.expr(b, scope)?;
                        let ty = merge_ty(Some(ta), tb, b, at)?;
                        return Ok((Expr::Case(vec![(ce, ae)], Some(Box::new(be))), ty));
                    }
                    ("NULLIF", [(_, a), (_, b)]) => {
                        let (ae, ta) = self.expr(a, scope)?;
                        let (be, tb) = self.expr(b, scope)?;
                        merge_ty(Some(ta), tb, b, at)?;
                        let same = Expr::bin(BinOp::Eq, ae.clone(), be);
                        return Ok((Expr::Case(vec![(same, Expr::Lit(Value::Null))], Some(Box::new(ae))), ta));
                    }
                    ("MOD" | "IF" | "NULLIF", _) => return Err(wrong()),
                    (n, [(_, a)]) if EXTRACT_FUNCS.contains(&n) => {
                        let (x, _) = self.time_expr(a, scope, at)?;
                        let u = TimeField::parse(&name).ok_or_else(wrong)?;
                        return Ok((Expr::Call(Func::Extract(u), vec![x]), SqlType::BigInt));
                    }
                    ("TIMESTAMPDIFF", [(_, u), (_, a), (_, b)]) => {
                        let u = self.time_unit(u, at)?;
                        let (xa, _) = self.time_expr(a, scope, at)?;
                        let (xb, _) = self.time_expr(b, scope, at)?;
                        return Ok((Expr::Call(Func::TimestampDiff(u), vec![xa, xb]), SqlType::Int));
                    }
                    ("TIMESTAMPADD", [(_, u), (_, n), (_, ts)]) => {
                        let u = self.time_unit(u, at)?;
                        let (xn, tn) = self.expr(n, scope)?;
                        numeric(tn, n, at)?;
                        let (xt, tt) = self.time_expr(ts, scope, at)?;
                        return Ok((Expr::Call(Func::TimestampAdd(u), vec![xn, xt]), tt));
                    }
                    ("DATE_FORMAT", [(_, a), (_, p)]) => {
                        let (x, _) = self.time_expr(a, scope, at)?;
                        let (xp, tp) = self.expr(p, scope)?;
                        text_arg(tp, p, at)?;
                        if let Expr::Lit(Value::Str(pattern)) = &xp {
                            if let Some(c) = bad_pattern_letter(pattern) {
                                return Err(SqlError::at(
                                    loc_of(*p, at),
                                    format!("DATE_FORMAT's pattern `{pattern}` has `{c}`, which weir does not format"),
                                    "use the letters y M d D E u H k K h a m s S (Java's SimpleDateFormat), text in single quotes",
                                ));
                            }
                        }
                        return Ok((Expr::Call(Func::DateFormat, vec![x, xp]), SqlType::String));
                    }
                    (n, _) if EXTRACT_FUNCS.contains(&n) || matches!(n, "TIMESTAMPDIFF" | "TIMESTAMPADD" | "DATE_FORMAT") => return Err(wrong()),
                    _ => {}
                }
                // String functions: STRING arguments (positions and
                // lengths are numbers), `NULL` for any `NULL`.
                let text_fn = match name.as_str() {
                    "UPPER" => Some((Func::Upper, 1..=1)),
                    "LOWER" => Some((Func::Lower, 1..=1)),
                    "CONCAT" => Some((Func::Concat, 1..=64)),
                    "CHAR_LENGTH" | "CHARACTER_LENGTH" => Some((Func::CharLength, 1..=1)),
                    "REPLACE" => Some((Func::Replace, 3..=3)),
                    _ => None,
                };
                if let Some((func, arity)) = text_fn {
                    if !arity.contains(&args.len()) {
                        return Err(wrong());
                    }
                    let mut xs = Vec::new();
                    for (_, a) in &args {
                        let (x, t) = self.expr(a, scope)?;
                        text_arg(t, a, at)?;
                        xs.push(x);
                    }
                    let ty = if func == Func::CharLength { SqlType::Int } else { SqlType::String };
                    return Ok((Expr::Call(func, xs), ty));
                }
                let func = match name.as_str() {
                    "ABS" => Func::Abs,
                    "TRUNCATE" => Func::Truncate,
                    "SIGN" => Func::Sign,
                    "LOG2" => Func::Log2,
                    "LOG" => Func::Log,
                    "SIN" => Func::Sin,
                    "COS" => Func::Cos,
                    "TAN" => Func::Tan,
                    "COT" => Func::Cot,
                    "ASIN" => Func::Asin,
                    "ACOS" => Func::Acos,
                    "ATAN" => Func::Atan,
                    "ATAN2" => Func::Atan2,
                    "SINH" => Func::Sinh,
                    "COSH" => Func::Cosh,
                    "TANH" => Func::Tanh,
                    "DEGREES" => Func::Degrees,
                    "RADIANS" => Func::Radians,
                    "GREATEST" => Func::Greatest,
                    "LEAST" => Func::Least,
                    "IFNULL" => Func::Coalesce,
                    "SQRT" => Func::Sqrt,
                    "POWER" => Func::Power,
                    "LN" => Func::Ln,
                    "LOG10" => Func::Log10,
                    "EXP" => Func::Exp,
                    "ROUND" => Func::Round,
                    "FLOOR" => Func::Floor,
                    "CEIL" | "CEILING" => Func::Ceil,
                    "COALESCE" => Func::Coalesce,
                    _ => return Err(SqlError::unsupported(at, &format!("the function {name}"), FUNCS)),
                };
                let arity_ok = match func {
                    Func::Power | Func::Atan2 => args.len() == 2,
                    Func::Coalesce if name == "IFNULL" => args.len() == 2,
                    Func::Round | Func::Truncate | Func::Log => args.len() == 1 || args.len() == 2,
                    Func::Coalesce | Func::Greatest | Func::Least => !args.is_empty(),
                    _ => args.len() == 1,
                };
                if !arity_ok {
                    return Err(wrong());
                }
                let mut xs = Vec::new();
                let mut ty = None;
                for (_, a) in &args {
                    let (x, t) = self.expr(a, scope)?;
                    let null = matches!(a, SExpr::Value(v) if v.value == ast::Value::Null);
                    if matches!(func, Func::Coalesce | Func::Greatest | Func::Least) {
                        if func != Func::Coalesce {
                            num(t, a)?;
                        }
                        if !null {
                            ty = Some(merge_ty(ty, t, a, at)?);
                        }
                    } else {
                        num(t, a)?;
                        ty.get_or_insert(t);
                    }
                    xs.push(x);
                }
                let ty = match func {
                    Func::Coalesce | Func::Abs | Func::Sign | Func::Greatest | Func::Least => {
                        ty.unwrap_or(SqlType::Double)
                    }
                    // Flink's ROUND and TRUNCATE keep their argument's type;
                    // a DECIMAL's scale becomes the digits kept.
                    Func::Round | Func::Truncate => match ty {
                        Some(SqlType::Decimal(s)) => {
                            let digits = match args.get(1) {
                                None => Some(0),
                                Some((_, SExpr::Value(v))) => match &v.value {
                                    ast::Value::Number(n, _) => n.parse::<u8>().ok(),
                                    _ => None,
                                },
                                Some(_) => None,
                            };
                            SqlType::Decimal(digits.map_or(s, |d| d.min(s)))
                        }
                        t => t.unwrap_or(SqlType::Double),
                    },
                    Func::Floor | Func::Ceil => match ty {
                        Some(SqlType::Decimal(_)) => SqlType::Decimal(0),
                        t => t.unwrap_or(SqlType::Double),
                    },
                    _ => SqlType::Double,
                };
                (Expr::Call(func, xs), ty)
            }
            _ => {
                return Err(SqlError::unsupported(
                    at,
                    &format!("the expression `{e}`"),
                    "arithmetic, comparisons, AND/OR/NOT, CASE, CAST, LIKE, BETWEEN, IN (…), IS NULL and the functions in docs/sql.md",
                ))
            }
        })
    }

    fn is_aggregate_name(&self, f: &ast::Function) -> bool {
        is_aggregate(&fname(f))
    }

    /// `e` compiled, which must be a timestamp ([`time_arg`]'s error
    /// otherwise, at `at`).
    fn time_expr(&mut self, e: &SExpr, scope: Scope, at: Location) -> Err<(Expr, SqlType)> {
        let (x, t) = self.expr(e, scope)?;
        time_arg(t, e, at)?;
        Ok((x, t))
    }

    /// The unit argument of `TIMESTAMPDIFF` / `TIMESTAMPADD` (`SECOND`,
    /// `MINUTE`, `HOUR`, `DAY`, `WEEK`, `MONTH`, `QUARTER`, `YEAR`).
    fn time_unit(&self, e: &SExpr, at: Location) -> Err<TimeField> {
        ident_name(e)
            .and_then(|id| TimeField::parse(&id.value))
            .filter(|u| {
                u.millis().is_some()
                    || matches!(u, TimeField::Year | TimeField::Quarter | TimeField::Month)
            })
            .ok_or_else(|| {
                SqlError::at(
                    loc_of(e, at),
                    format!("`{e}` is not a unit of time"),
                    "write SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR",
                )
            })
    }

    pub(super) fn boolean(&self, t: SqlType, e: &SExpr, at: Location) -> Err<()> {
        if t == SqlType::Boolean {
            Ok(())
        } else {
            Err(SqlError::at(
                loc_of(e, at),
                format!("`{e}` is {}, not BOOLEAN", t.name()),
                "write a condition, e.g. temp > 80",
            ))
        }
    }
}

/// A string function's argument must be a `STRING`.
fn text_arg(t: SqlType, e: &SExpr, at: Location) -> Err<()> {
    if t == SqlType::String {
        return Ok(());
    }
    Err(SqlError::at(
        loc_of(e, at),
        format!("`{e}` is a {}, not a STRING", t.name()),
        format!("CAST({e} AS STRING) first"),
    ))
}

/// `Ok` if `t`, the type of `e`, is a timestamp.
fn time_arg(t: SqlType, e: &SExpr, at: Location) -> Err<()> {
    if t.is_time() {
        return Ok(());
    }
    Err(SqlError::at(
        loc_of(e, at),
        format!("`{e}` is {}, not a timestamp", t.name()),
        "give a TIMESTAMP(3) or TIMESTAMP_LTZ(3): window_start, window_end, the rowtime column, TO_TIMESTAMP_LTZ(ms, 3)",
    ))
}

/// `Ok` if `t`, the type of `e`, is a number an aggregate can take.
fn aggregable(t: SqlType, e: &SExpr, at: Location) -> Err<()> {
    if t.is_numeric() {
        return Ok(());
    }
    Err(SqlError::at(
        at,
        format!("`{e}` is {}, not a number to aggregate", t.name()),
        "aggregate a numeric expression",
    ))
}

/// `Ok` if `t`, the type of operand `side`, is a number.
fn numeric(t: SqlType, side: &SExpr, at: Location) -> Err<()> {
    if t.is_numeric() {
        Ok(())
    } else {
        Err(SqlError::at(
            loc_of(side, at),
            format!("`{side}` is {}, not a number", t.name()),
            "use numeric operands, or CAST(… AS DOUBLE)",
        ))
    }
}

fn merge_ty(a: Option<SqlType>, b: SqlType, e: &SExpr, at: Location) -> Err<SqlType> {
    match a {
        None => Ok(b),
        Some(a) if a == b => Ok(a),
        // Flink's least restrictive type: INT < BIGINT < DECIMAL < DOUBLE.
        Some(a) if a.is_numeric() && b.is_numeric() => Ok(match (a, b) {
            (SqlType::Double, _) | (_, SqlType::Double) => SqlType::Double,
            (SqlType::Decimal(p), SqlType::Decimal(q)) => SqlType::Decimal(p.max(q)),
            (SqlType::Decimal(p), _) | (_, SqlType::Decimal(p)) => SqlType::Decimal(p),
            (SqlType::Int | SqlType::BigInt, SqlType::Int | SqlType::BigInt) => SqlType::BigInt,
            _ => SqlType::Double,
        }),
        Some(a) => Err(SqlError::at(
            loc_of(e, at),
            format!("`{e}` is {}, the other branches are {}", b.name(), a.name()),
            "give every branch the same type (CAST converts)",
        )),
    }
}

/// A whole number written as it is (`LIMIT 10`, `ROWS 3 PRECEDING`,
/// `rownum <= 3`).
pub(super) fn literal_count(e: &SExpr) -> Option<u64> {
    match e {
        SExpr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

fn literal_num(e: &SExpr) -> Option<f64> {
    match e {
        SExpr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        SExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => literal_num(expr).map(|x| -x),
        _ => None,
    }
}

fn interval_arg(e: &SExpr, at: Location, what: &str) -> Err<i64> {
    match e {
        SExpr::Interval(iv) => super::ddl::interval_ms(iv, loc_of(e, at)),
        _ => Err(SqlError::at(
            loc_of(e, at),
            format!("the {what} must be an interval, found `{e}`"),
            "write INTERVAL '10' SECOND",
        )),
    }
}

/// Moves the placeholder columns of user-function results over the window
/// row (`POST_BASE..FLAG_BASE`) to their places after the row's `base`
/// columns.
fn place_post(e: &mut Expr, base: u16) {
    *e = e
        .map_cols(&|c| {
            Some(if (POST_BASE..FLAG_BASE).contains(&c) {
                base + (c - POST_BASE)
            } else {
                c
            })
        })
        .expect("every column maps");
}

/// Replaces detector placeholders once the slot count is known.
fn place_flags(e: &mut Expr, nslots: u16) {
    match e {
        Expr::Col(c) if *c >= FLAG_BASE => *c = SLOTS + nslots + (*c - FLAG_BASE),
        Expr::Neg(x)
        | Expr::Not(x)
        | Expr::IsNull(x, _)
        | Expr::Like(x, _, _)
        | Expr::Cast(x, _) => place_flags(x, nslots),
        Expr::Bin(_, a, b) => {
            place_flags(a, nslots);
            place_flags(b, nslots);
        }
        Expr::Case(w, o) => {
            for (c, r) in w {
                place_flags(c, nslots);
                place_flags(r, nslots);
            }
            if let Some(o) = o {
                place_flags(o, nslots);
            }
        }
        Expr::Call(_, xs) => xs.iter_mut().for_each(|x| place_flags(x, nslots)),
        Expr::Lit(_) | Expr::Col(_) => {}
    }
}

/// The window of a TVF call `TUMBLE(TABLE t, DESCRIPTOR(c), …)`: table
/// name, time column, window.
/// A table function's `TABLE name [PARTITION BY key]` argument: the
/// table's name and the partition key.
fn table_arg(data: &SExpr, at: Location, name: &str) -> Err<(String, Option<ast::Ident>)> {
    let (n, keys) = table_arg_keys(data, at, name)?;
    if keys.len() > 1 {
        return Err(SqlError::unsupported(
            loc_of(data, at),
            "PARTITION BY several columns",
            "PARTITION BY one key column",
        ));
    }
    Ok((n, keys.into_iter().next()))
}

/// [`table_arg`] with any number of partition keys.
fn table_arg_keys(data: &SExpr, at: Location, name: &str) -> Err<(String, Vec<ast::Ident>)> {
    Ok(match data {
        SExpr::Prefixed { prefix, value } if prefix.value == TABLE_ARG => match &**value {
            SExpr::Tuple(items) => {
                let n = items
                    .first()
                    .and_then(ident_name)
                    .map(|i| i.value.clone())
                    .unwrap_or_default();
                (
                    n,
                    items
                        .iter()
                        .skip(1)
                        .filter_map(ident_name)
                        .cloned()
                        .collect(),
                )
            }
            _ => {
                return Err(SqlError::at(
                    loc_of(data, at),
                    format!("{name}'s first argument must be `TABLE name`"),
                    "write TABLE sensors",
                ))
            }
        },
        _ => {
            return Err(SqlError::at(
                loc_of(data, at),
                format!("{name}'s first argument must be `TABLE name`, found `{data}`"),
                "write TABLE sensors",
            ))
        }
    })
}

/// The columns of `DESCRIPTOR(a, b, …)`.
fn descriptor(e: &SExpr) -> Option<Vec<&ast::Ident>> {
    match e {
        SExpr::Function(d) if fname(d) == "DESCRIPTOR" => args_of(d)
            .into_iter()
            .map(|(n, c)| if n.is_none() { ident_name(c) } else { None })
            .collect(),
        _ => None,
    }
}

fn tvf(f: &ast::Function, at: Location) -> Err<(String, Option<String>, Vec<ast::Ident>, Window)> {
    let name = fname(f);
    let args = args_of(f);
    let named = args.iter().any(|a| a.0.is_some());
    let pick = |pos: usize, key: &str| -> Option<&SExpr> {
        if named {
            args.iter()
                .find(|a| a.0.as_deref() == Some(key))
                .map(|a| a.1)
        } else {
            args.get(pos).map(|a| a.1)
        }
    };
    let need = |pos: usize, key: &str| {
        pick(pos, key).ok_or_else(|| {
            SqlError::at(
                at,
                format!("{name} is missing its {} argument", key.to_ascii_lowercase()),
                "write TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '10' SECOND); HOP(TABLE t, DESCRIPTOR(rowtime), slide, size); SESSION(TABLE t PARTITION BY key, DESCRIPTOR(rowtime), gap)",
            )
        })
    };
    let data = need(0, "DATA")?;
    let (table, partition) = table_arg_keys(data, at, &name)?;
    let timecol = need(1, "TIMECOL")?;
    let col = match timecol {
        SExpr::Function(d) if fname(d) == "DESCRIPTOR" => match args_of(d).as_slice() {
            [(None, c)] => ident_name(c).map(|i| i.value.clone()),
            _ => None,
        },
        _ => None,
    };
    let Some(col) = col else {
        return Err(SqlError::at(
            loc_of(timecol, at),
            format!("{name}'s second argument must be DESCRIPTOR(time_column)"),
            "write DESCRIPTOR(rowtime)",
        ));
    };
    let offset_pos = match name.as_str() {
        "TUMBLE" => 3,
        "HOP" | "CUMULATE" => 4,
        _ => 3,
    };
    if pick(offset_pos, "OFFSET").is_some() {
        return Err(SqlError::unsupported(
            at,
            "a window OFFSET",
            "windows aligned to the epoch (no offset)",
        ));
    }
    let window = match name.as_str() {
        "TUMBLE" => {
            let size = interval_arg(need(2, "SIZE")?, at, "size")?;
            Window {
                kind: WindowKind::Tumbling { size },
                desc: format!("tumbling, size {size} ms"),
            }
        }
        "HOP" => {
            let slide = interval_arg(need(2, "SLIDE")?, at, "slide")?;
            let size = interval_arg(need(3, "SIZE")?, at, "size")?;
            Window {
                kind: WindowKind::Sliding { size, slide },
                desc: format!("sliding (HOP), size {size} ms, slide {slide} ms"),
            }
        }
        "SESSION" => {
            let gap = interval_arg(need(2, "GAP")?, at, "gap")?;
            Window {
                kind: WindowKind::Session { gap },
                desc: format!("session, gap {gap} ms"),
            }
        }
        "CUMULATE" => {
            let step = interval_arg(need(2, "STEP")?, at, "step")?;
            let size = interval_arg(need(3, "SIZE")?, at, "size")?;
            Window {
                kind: WindowKind::Cumulate { step, size },
                desc: format!("cumulating, step {step} ms, size {size} ms"),
            }
        }
        _ => {
            return Err(SqlError::unsupported(
                at,
                &format!("the table function {name}"),
                "TUMBLE, HOP, CUMULATE, SESSION",
            ));
        }
    };
    Ok((table, Some(col), partition, window))
}

/// A legacy group window `TUMBLE(rowtime, INTERVAL …)` in GROUP BY.
fn legacy_window(f: &ast::Function, at: Location) -> Err<Option<(String, Window)>> {
    let name = fname(f);
    let args = args_of(f);
    let col = || {
        args.first()
            .and_then(|a| ident_name(a.1))
            .map(|i| i.value.clone())
            .ok_or_else(|| {
                SqlError::at(
                    at,
                    format!("{name}'s first argument is the time attribute"),
                    format!("write {name}(rowtime, INTERVAL '10' SECOND)"),
                )
            })
    };
    let iv = |i: usize, what: &str| match args.get(i) {
        Some(a) => interval_arg(a.1, at, what),
        None => Err(SqlError::at(
            at,
            format!("{name} is missing its {what}"),
            format!("write {name}(rowtime, INTERVAL '10' SECOND)"),
        )),
    };
    Ok(Some(match name.as_str() {
        "TUMBLE" => {
            let size = iv(1, "size")?;
            (
                col()?,
                Window {
                    kind: WindowKind::Tumbling { size },
                    desc: format!("tumbling, size {size} ms"),
                },
            )
        }
        "HOP" => {
            let slide = iv(1, "slide")?;
            let size = iv(2, "size")?;
            (
                col()?,
                Window {
                    kind: WindowKind::Sliding { size, slide },
                    desc: format!("sliding (HOP), size {size} ms, slide {slide} ms"),
                },
            )
        }
        "SESSION" => {
            let gap = iv(1, "gap")?;
            (
                col()?,
                Window {
                    kind: WindowKind::Session { gap },
                    desc: format!("session, gap {gap} ms"),
                },
            )
        }
        _ => return Ok(None),
    }))
}

/// Compiles a file's statements.
pub fn compile(stmts: Vec<Statement>) -> Err<SqlPipeline> {
    let mut tables: Vec<Table> = Vec::new();
    let mut sets: Vec<(String, String, Location)> = Vec::new();
    let mut funcs: Vec<(String, String, Location)> = Vec::new();
    let mut views: Vec<super::views::View> = Vec::new();
    let mut query = None;
    for s in stmts {
        match s {
            Statement::CreateView(v) => {
                let taken = tables.iter().any(|t| t.name.eq_ignore_ascii_case(&v.name))
                    || views.iter().any(|o| o.name.eq_ignore_ascii_case(&v.name));
                if taken {
                    return Err(SqlError::at(
                        v.at,
                        format!("`{}` is already a table or view", v.name),
                        "give each table and view its own name",
                    ));
                }
                views.push(v)
            }
            Statement::CreateTable(t) => {
                if tables.iter().any(|o| o.name.eq_ignore_ascii_case(&t.name))
                    || views.iter().any(|o| o.name.eq_ignore_ascii_case(&t.name))
                {
                    return Err(SqlError::at(
                        t.at,
                        format!("table `{}` is created twice", t.name),
                        "give each table its own name",
                    ));
                }
                tables.push(t)
            }
            Statement::Set(k, v, l) => sets.push((k, v, l)),
            Statement::CreateFunction { name, module, at } => {
                if funcs
                    .iter()
                    .any(|f: &(String, String, Location)| f.0.eq_ignore_ascii_case(&name))
                {
                    return Err(SqlError::at(
                        at,
                        format!("function `{name}` is created twice"),
                        "give each function its own name",
                    ));
                }
                funcs.push((name, module, at));
            }
            Statement::Query { at, .. } if query.is_some() => {
                return Err(SqlError::unsupported(
                    at,
                    "a second query in one file",
                    "one INSERT INTO / SELECT per pipeline file",
                ));
            }
            q @ Statement::Query { .. } => query = Some(q),
        }
    }
    let Some(Statement::Query {
        explain,
        insert,
        query: q,
        at,
    }) = query
    else {
        return Err(SqlError::at(
            Location { line: 0, column: 0 },
            "the file has no query",
            "add INSERT INTO sink SELECT … or a SELECT … FROM TABLE(TUMBLE(…)) GROUP BY window_start, window_end",
        ));
    };
    let (q, top_n) = super::topn::split(*q, &mut views, at)?;
    let mut p = compile_expanded(tables, sets, funcs, views, explain, insert, q, at)?;
    if let Some(t) = top_n {
        if p.query.limit.is_some() || !p.query.order.is_empty() {
            return Err(SqlError::unsupported(
                at,
                "ORDER BY or LIMIT inside a window Top-N",
                "the Top-N's own order: ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY …) … WHERE rownum <= n",
            ));
        }
        let t = t.resolve(&p.query)?;
        let delay = p
            .pipeline
            .spec
            .sources
            .first()
            .map_or(0, |s| s.max_out_of_orderness);
        if let Some(r) = p.query.per_row.as_mut() {
            r.drop_late = Some(delay);
        }
        p.query.explain.push_str(&format!(
            "top-N: per ({}), the first {} rows by {}, once the input ends\n",
            t.partition
                .iter()
                .map(|&c| p.query.columns[c].name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            t.n,
            t.order
                .iter()
                .map(|k| format!(
                    "{}{}",
                    p.query.columns[k.column].name,
                    if k.desc { " DESC" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        p.query.top_n = Some(t);
    }
    Ok(p)
}

/// [`compile`]'s query, its views expanded (inlined, or a cascade).
#[allow(clippy::too_many_arguments)]
fn compile_expanded(
    tables: Vec<Table>,
    sets: Vec<(String, String, Location)>,
    funcs: Vec<(String, String, Location)>,
    views: Vec<super::views::View>,
    explain: bool,
    insert: Option<(String, Location)>,
    q: ast::Query,
    at: Location,
) -> Err<SqlPipeline> {
    match super::views::expand(q, views, &tables, at)? {
        super::views::Expanded::Inlined(q, inlined, star) => {
            let mut p = compile_query(&tables, &sets, &funcs, explain, insert, &q, at)?;
            if let Some(note) = inlined {
                p.query.explain.push_str(&note);
            }
            if let Some(star) = star {
                let mut names: Vec<&mut String> =
                    p.query.columns.iter_mut().map(|c| &mut c.name).collect();
                star.apply(&mut names);
            }
            Ok(p)
        }
        super::views::Expanded::Cascade {
            outer,
            inner,
            views,
        } => {
            let super::views::View {
                name,
                columns,
                query,
                at: vat,
            } = inner;
            let first = cascade_first(&tables, &sets, &funcs, views, *query, &name, vat)?;
            let table = rows_table(&first, &name, &columns, vat)?;
            let mut p = compile_query(&[table], &sets, &funcs, explain, insert, &outer, at)?;
            p.query.explain = format!(
                "stage 1, view `{name}` (its rows are stage 2's table `{name}`, read in the order they fire; watermark = newest - 1 ms):\n{}stage 2:\n{}",
                first.query.explain, p.query.explain
            );
            p.input_path = first.input_path.clone();
            p.inner = Some(Box::new(first));
            Ok(p)
        }
    }
}

/// The first query of a cascade: `q`, view `name`'s (defined at `at`), over
/// tables and the views `views` (which it may read, inlined), under the
/// view's name.
fn cascade_first(
    tables: &[Table],
    sets: &[(String, String, Location)],
    funcs: &[(String, String, Location)],
    views: Vec<super::views::View>,
    q: ast::Query,
    name: &str,
    at: Location,
) -> Err<SqlPipeline> {
    let q = match super::views::expand(q, views, tables, at)? {
        super::views::Expanded::Inlined(q, _, _) => q,
        super::views::Expanded::Cascade { inner, .. } => {
            return Err(SqlError::unsupported(
                inner.at,
                &format!(
                    "view `{}` over the aggregating view `{}` (a cascade of three queries)",
                    name, inner.name
                ),
                "two queries: a view that aggregates a table, and the query over it",
            ))
        }
    };
    let mut sets = sets.to_vec();
    sets.push(("pipeline.name".into(), name.to_string(), at));
    let first = compile_query(tables, &sets, funcs, false, None, &q, at)?;
    if first.query.limit.is_some() || !first.query.order.is_empty() {
        return Err(SqlError::unsupported(
            at,
            &format!("view `{name}`: LIMIT or ORDER BY in the first query of a cascade"),
            "LIMIT and ORDER BY on the query that reads the view",
        ));
    }
    if first.keyed.is_some() || first.query.scores || first.query.groups.is_some() {
        return Err(SqlError::unsupported(
            at,
            &format!(
                "view `{}`: a table function or grouping sets in the first query of a cascade",
                name
            ),
            "a view that aggregates a window TVF: SELECT key, window_time AS rowtime, SUM(x) AS s FROM TABLE(TUMBLE(…)) GROUP BY key, window_start, window_end, window_time",
        ));
    }
    Ok(first)
}

/// The table a cascade's second query reads: the first query's result
/// columns (named by view `v`'s column list if it has one), as `weir
/// replay` writes them (a header line, then CSV), with the column that is
/// the first query's `window_time` as the time attribute (a watermark
/// right behind the newest row, which comes in the order windows fire).
fn rows_table(first: &SqlPipeline, name: &str, names: &[ast::Ident], at: Location) -> Err<Table> {
    if first.is_unbounded() {
        return Err(SqlError::unsupported(
            at,
            &format!("a query over view `{name}`, which aggregates without a window (its rows come only once the input ends, without a time attribute)"),
            "window the view (FROM TABLE(TUMBLE(…)) … GROUP BY window_start, window_end, … with window_time AS rowtime), or run its aggregation alone",
        ));
    }
    let cols = &first.query.columns;
    if !names.is_empty() && names.len() != cols.len() {
        return Err(SqlError::at(
            at,
            format!(
                "view `{}` names {} columns, its query gives {}",
                name,
                names.len(),
                cols.len()
            ),
            "name as many columns as the query selects",
        ));
    }
    let columns: Vec<super::ddl::Column> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| super::ddl::Column {
            name: names
                .get(i)
                .map_or_else(|| c.name.clone(), |n| n.value.clone()),
            ty: c.ty,
            at,
        })
        .collect();
    let Some(rt) = cols.iter().position(|c| matches!(c.expr, Expr::Col(WTIME))) else {
        return Err(SqlError::at(
            at,
            format!(
                "view `{}` aggregates but gives no time attribute for the query over it",
                name
            ),
            "select window_time in the view (window_time AS rowtime, and GROUP BY … window_time) and window the query over it by that column",
        ));
    };
    Ok(Table {
        name: name.to_string(),
        rowtime: Some(super::ddl::Rowtime {
            name: columns[rt].name.clone(),
            column: rt,
            epoch_precision: None,
            delay_ms: 0,
            at,
            proctime: false,
        }),
        columns,
        options: [
            ("connector", "filesystem"),
            ("format", "csv"),
            ("csv.ignore-first-line", "true"),
        ]
        .iter()
        .map(|(k, val)| (k.to_string(), val.to_string(), at))
        .collect(),
        at,
    })
}

/// The pipeline's time: event time, or processing time over a
/// `PROCTIME()` attribute (windows close on the gateway's clock).
pub(super) fn time_of(rt: &super::ddl::Rowtime) -> TimeSpec {
    let mut t = TimeSpec::new(TimeUnit::Millis);
    if rt.proctime {
        t.mode = weir_core::time::TimeMode::Processing;
    }
    t
}

/// `what` is refused over a `PROCTIME()` table: it reads rows in event-time
/// order.
pub(super) fn proctime_refused(rt: &super::ddl::Rowtime, what: &str) -> SqlError {
    SqlError::unsupported(
        rt.at,
        what,
        "a table with event time (rowtime AS TO_TIMESTAMP_LTZ(ts, 3) and a WATERMARK), or window aggregations over PROCTIME()",
    )
}

/// `EXPLAIN`'s name of the pipeline's time.
pub(super) fn time_mode_text(rt: &super::ddl::Rowtime) -> &'static str {
    if rt.proctime {
        "processing time"
    } else {
        "event time"
    }
}

/// `EXPLAIN`'s time attribute and watermark.
pub(super) fn time_text(rt: &super::ddl::Rowtime) -> String {
    if rt.proctime {
        format!(
            "time `{}` = PROCTIME() (the gateway's clock on arrival; windows close on it)",
            rt.name
        )
    } else {
        format!(
            "time `{}`, watermark = newest - {} ms - 1",
            rt.name, rt.delay_ms
        )
    }
}

/// The `SET` options: the pipeline's name (default: the sink's, else
/// `query`) and its state limits.
pub(super) fn settings(
    sets: &[(String, String, Location)],
    insert: Option<&(String, Location)>,
) -> Err<(String, StateSpec)> {
    let mut name = insert.map_or_else(|| "query".to_string(), |i| i.0.clone());
    let mut state = StateSpec {
        ttl: crate::pipeline_file::parse_duration(
            crate::pipeline_file::DEFAULT_TTL,
            TimeUnit::Millis,
        ),
        ..StateSpec::default()
    };
    for (k, v, l) in sets {
        let bad = |what: &str| {
            SqlError::at(
                *l,
                format!("'{k}' = '{v}': {what}"),
                "see docs/sql.md for the SET options",
            )
        };
        match k.as_str() {
            "pipeline.name" => name = v.clone(),
            "weir.state.max-keys" => {
                state.max_keys = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("not a positive number"))?
            }
            "weir.state.memory" => {
                state.max_bytes = crate::pipeline_file::parse_size(v.trim())
                    .filter(|b| *b >= crate::pipeline_file::MIN_STATE_MEMORY)
                    .ok_or_else(|| bad("not a size of at least 64KiB such as '64MiB'"))?
            }
            "table.exec.state.ttl" if v.trim() == "0" || v.trim().eq_ignore_ascii_case("off") => {
                state.ttl = None
            }
            "table.exec.state.ttl" => {
                state.ttl = Some(
                    crate::pipeline_file::parse_duration(&v.replace(' ', ""), TimeUnit::Millis)
                        .filter(|t| *t > 0)
                        .ok_or_else(|| bad("not a duration such as 1h"))?,
                )
            }
            _ => {
                return Err(SqlError::unsupported(
                    *l,
                    &format!("SET '{k}'"),
                    "SET 'pipeline.name', 'weir.state.max-keys', 'weir.state.memory', 'table.exec.state.ttl'",
                ))
            }
        }
    }
    Ok((name, state))
}

/// The end of `EXPLAIN`: the result columns with their expressions, and
/// the sink.
pub(super) fn explain_results(
    ex: &mut String,
    columns: &[(ResultColumn, String)],
    sink: Option<&Sink>,
) {
    let _ = writeln!(ex, "result columns:");
    for (c, s) in columns {
        let _ = writeln!(ex, "  {} {} = {s}", c.name, c.ty.name());
    }
    if let Some(s) = sink {
        let _ = writeln!(ex, "sink `{}` ({})", s.name, s.connector);
    }
}

/// The `INSERT INTO` target, checked against the `ncols` result columns.
pub(super) fn sink_of(
    tables: &[Table],
    insert: Option<(String, Location)>,
    ncols: usize,
) -> Err<Option<Sink>> {
    Ok(match insert {
        None => None,
        Some((s, l)) => {
            let Some(t) = tables.iter().find(|t| t.name.eq_ignore_ascii_case(&s)) else {
                return Err(SqlError::at(
                    l,
                    format!("no table `{s}` to insert into"),
                    "create the sink with CREATE TABLE … WITH ('connector' = 'mqtt', 'topic' = …)",
                ));
            };
            if t.columns.len() != ncols {
                return Err(SqlError::at(
                    l,
                    format!(
                        "`{s}` has {} columns, the query gives {}",
                        t.columns.len(),
                        ncols
                    ),
                    "select one value per sink column, in the sink's order",
                ));
            }
            let connector = t
                .option("connector")
                .map(|c| c.0.to_string())
                .unwrap_or_default();
            Some(Sink {
                name: t.name.clone(),
                connector,
                topic: t.option("topic").map(|x| x.0.to_string()),
                path: t.option("path").map(|x| x.0.to_string()),
                columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                at: l,
            })
        }
    })
}

/// A call of a user function under an aggregate: a field computed before
/// the engine by a scalar WebAssembly function.
#[derive(Clone, Debug)]
pub struct UdfUse {
    /// The function's id in the pipeline (`name#n`).
    pub id: String,
    /// The name created (and the export called).
    pub name: String,
    /// The module file.
    pub module: String,
    /// Field positions of the arguments.
    pub args: Vec<usize>,
    /// Field position of the result.
    pub output: usize,
    /// Where the call is.
    pub at: Location,
    /// Its own source id among the pipeline's functions (ids from 1: a SQL
    /// pipeline's source 0 has no per-source scalar functions; the query's
    /// stages call each function by this id, in order).
    pub source: usize,
}

/// A query with its `ORDER BY` ([`Query::order`]) and `LIMIT`
/// ([`Query::limit`]) around its `SELECT` ([`compile_select`]).
fn compile_query(
    tables: &[Table],
    sets: &[(String, String, Location)],
    funcs: &[(String, String, Location)],
    explain: bool,
    insert: Option<(String, Location)>,
    q: &ast::Query,
    at: Location,
) -> Err<SqlPipeline> {
    if q.fetch.is_some() {
        return Err(SqlError::unsupported(
            at,
            "FETCH",
            "LIMIT n for the first n rows",
        ));
    }
    let limit = limit_of(q.limit_clause.as_ref(), at)?;
    let mut p = compile_select(tables, sets, funcs, explain, insert, q, at)?;
    if let Some(o) = &q.order_by {
        p.query.order = order_of(o, &p.query.columns, at)?;
        let keys: Vec<String> = p
            .query
            .order
            .iter()
            .map(|k| {
                format!(
                    "{} {} NULLS {}",
                    p.query.columns[k.column].name,
                    if k.desc { "DESC" } else { "ASC" },
                    if k.nulls_first { "FIRST" } else { "LAST" }
                )
            })
            .collect();
        p.query.explain.push_str(&format!(
            "order: all result rows, sorted by {} once the input ends\n",
            keys.join(", ")
        ));
    }
    if let Some(n) = limit {
        p.query.explain.push_str(&format!(
            "limit: the first {n} result row(s){}\n",
            if q.order_by.is_some() {
                " of the sorted rows"
            } else {
                ", then the query ends"
            }
        ));
    }
    p.query.limit = limit;
    Ok(p)
}

/// A result column's name, as Flink names it: its alias, else the
/// column's name, else `EXPR$<position>` (`i`, from 0).
pub(super) fn result_name(e: &SExpr, alias: Option<String>, i: usize) -> String {
    alias.unwrap_or_else(|| match ident_name(e) {
        Some(id) => id.value.clone(),
        None => format!("EXPR${i}"),
    })
}

/// Refuses two result columns with the same name (case-insensitive).
pub(super) fn unique_names(columns: &[(ResultColumn, String)], at: Location) -> Err<()> {
    for (i, (c, _)) in columns.iter().enumerate() {
        if columns[..i]
            .iter()
            .any(|(o, _)| o.name.eq_ignore_ascii_case(&c.name))
        {
            return Err(SqlError::at(
                at,
                format!("two result columns are named `{}`", c.name),
                "give them different aliases with AS",
            ));
        }
    }
    Ok(())
}

/// `ORDER BY` over the result columns, by name (or alias) or position.
fn order_of(o: &ast::OrderBy, columns: &[ResultColumn], at: Location) -> Err<Vec<SortKey>> {
    let how = "ORDER BY result columns by name or position, e.g. ORDER BY total DESC, 1";
    let ast::OrderByKind::Expressions(exprs) = &o.kind else {
        return Err(SqlError::unsupported(at, "ORDER BY ALL", how));
    };
    exprs
        .iter()
        .map(|e| {
            let l = loc_of(&e.expr, at);
            if e.with_fill.is_some() {
                return Err(SqlError::unsupported(l, "WITH FILL", how));
            }
            let desc = match &e.options.sort {
                None | Some(ast::OrderBySort::Asc) => false,
                Some(ast::OrderBySort::Desc) => true,
                Some(ast::OrderBySort::Using(_)) => {
                    return Err(SqlError::unsupported(l, "ORDER BY … USING", how))
                }
            };
            let column = match &e.expr {
                SExpr::Identifier(id) => columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(&id.value)),
                SExpr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|&i| (1..=columns.len()).contains(&i))
                        .map(|i| i - 1),
                    _ => None,
                },
                _ => None,
            };
            let Some(column) = column else {
                return Err(SqlError::at(
                    l,
                    format!("ORDER BY {}: not a result column", e.expr),
                    format!(
                        "{how}; the result columns: {}",
                        columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            Ok(SortKey {
                column,
                desc,
                // Flink's default null collation: NULL is the lowest.
                nulls_first: e.options.nulls_first.unwrap_or(!desc),
            })
        })
        .collect()
}

/// `LIMIT n` (Flink's: the first `n` rows, in the order they come).
fn limit_of(l: Option<&ast::LimitClause>, at: Location) -> Err<Option<u64>> {
    let Some(l) = l else { return Ok(None) };
    let (limit, offset) = match l {
        ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        } if limit_by.is_empty() => (limit.as_ref(), offset.is_some()),
        ast::LimitClause::LimitOffset { .. } => (None, true),
        ast::LimitClause::OffsetCommaLimit { .. } => (None, true),
    };
    if offset {
        return Err(SqlError::unsupported(
            at,
            "OFFSET (or LIMIT BY) in a streaming query",
            "LIMIT n: the first n result rows",
        ));
    }
    let Some(e) = limit else {
        // LIMIT ALL
        return Ok(None);
    };
    literal_count(e).map(Some).ok_or_else(|| {
        SqlError::at(
            loc_of(e, at),
            format!("LIMIT {e}: not a row count"),
            "write LIMIT and a whole number of rows, e.g. LIMIT 10",
        )
    })
}

/// `SELECT DISTINCT a, b FROM …` as `SELECT a, b FROM … GROUP BY a, b`
/// (over a window TVF with both window bounds, as a window aggregation
/// needs them, `bound` the one it adds): the same rows, each once, a
/// window's when it fires, a whole input's at its end. The group
/// expressions, by reference (the syntax tree is not cloned: its derived
/// `Clone` would weigh on the gateway binary).
fn distinct_group<'s>(
    sel: &'s ast::Select,
    bound: &'s mut Option<SExpr>,
    at: Location,
) -> Err<Vec<&'s SExpr>> {
    let how = "SELECT DISTINCT over columns by name: SELECT DISTINCT sensor, site FROM t";
    if !no_group_by(&sel.group_by) || sel.having.is_some() {
        return Err(SqlError::unsupported(
            at,
            "SELECT DISTINCT with GROUP BY or HAVING",
            how,
        ));
    }
    let mut group = Vec::new();
    for item in &sel.projection {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            other => {
                return Err(SqlError::unsupported(
                    loc_of(other, at),
                    &format!("SELECT DISTINCT {other}"),
                    how,
                ))
            }
        };
        if ident_name(e).is_none() || has_aggregate(e) {
            return Err(SqlError::unsupported(
                loc_of(e, at),
                &format!("SELECT DISTINCT over the expression `{e}`"),
                how,
            ));
        }
        group.push(e);
    }
    let named = |n: &str| {
        group
            .iter()
            .any(|e| ident_name(e).is_some_and(|i| i.value.eq_ignore_ascii_case(n)))
    };
    let (start, end) = (named("window_start"), named("window_end"));
    if start != end {
        let missing = if start { "window_end" } else { "window_start" };
        group.push(bound.insert(SExpr::Identifier(ast::Ident::new(missing))));
    }
    Ok(group)
}

fn compile_select(
    tables: &[Table],
    sets: &[(String, String, Location)],
    funcs: &[(String, String, Location)],
    explain: bool,
    insert: Option<(String, Location)>,
    q: &ast::Query,
    at: Location,
) -> Err<SqlPipeline> {
    let SetExpr::Select(sel) = &*q.body else {
        return Err(SqlError::unsupported(
            at,
            "UNION / INTERSECT / EXCEPT / VALUES / nested queries",
            "a single SELECT",
        ));
    };
    let at = loc_of(&sel.select_token.0, at);
    let mut bound = None;
    let distinct = match &sel.distinct {
        Some(ast::Distinct::Distinct) => Some(distinct_group(sel, &mut bound, at)?),
        _ => None,
    };
    if matches!(sel.distinct, Some(ast::Distinct::On(_)))
        || sel.top.is_some()
        || sel.into.is_some()
        || !sel.lateral_views.is_empty()
        || sel.prewhere.is_some()
        || sel.qualify.is_some()
        || !sel.cluster_by.is_empty()
        || !sel.distribute_by.is_empty()
        || !sel.sort_by.is_empty()
    {
        return Err(SqlError::unsupported(
            at,
            "DISTINCT / TOP / INTO / QUALIFY / WINDOW / CLUSTER BY and similar clauses",
            "SELECT … FROM … WHERE … GROUP BY … HAVING …",
        ));
    }
    let [from] = &sel.from[..] else {
        return Err(SqlError::unsupported(
            at,
            "a query over several tables (or none)",
            "one table or one window TVF in FROM; aggregates of several columns of one table are joined per key and window (SELECT AVG(t), MAX(h) …)",
        ));
    };
    if !from.joins.is_empty() {
        return Err(SqlError::unsupported(
            loc_of(&from.joins[0].relation, at),
            "JOIN",
            "one table with both columns (one topic filter, both fields in the payload): aggregates of several columns of one table are joined per key and window (SELECT AVG(t), MAX(h) …)",
        ));
    }
    // A keyed user function called as a table function.
    if let TableFactor::TableFunction {
        expr: SExpr::Function(f),
        ..
    } = &from.relation
    {
        let n = f.name.to_string();
        if let Some(def) = funcs.iter().find(|d| d.0.eq_ignore_ascii_case(&n)) {
            return table_function(tables, sets, funcs, def, None, explain, insert, sel, f, at);
        }
        let kind = n.to_ascii_lowercase();
        if let Some(b) = DETECTOR_TFS.iter().find(|d| **d == kind) {
            let def = (n.clone(), String::new(), loc_of(f, at));
            return table_function(
                tables,
                sets,
                funcs,
                &def,
                Some(b),
                explain,
                insert,
                sel,
                f,
                at,
            );
        }
    }
    let group: Vec<&SExpr> = match &sel.group_by {
        _ if distinct.is_some() => distinct.unwrap_or_default(),
        GroupByExpr::Expressions(v, m) if m.is_empty() => v.iter().collect(),
        _ => {
            return Err(SqlError::unsupported(
                at,
                "GROUP BY ALL / WITH ROLLUP / WITH CUBE",
                "GROUP BY window_start, window_end, ROLLUP (a, b) / CUBE (a, b) / GROUPING SETS ((a), ())",
            ))
        }
    };
    // The window and the table.
    let (tname, tcol, partition, mut window, legacy) = match &from.relation {
        TableFactor::TableFunction {
            expr: SExpr::Function(f),
            ..
        } => {
            let (t, c, p, w) = tvf(f, loc_of(f, at))?;
            (t, c, p, Some(w), false)
        }
        TableFactor::Table {
            name, args: None, ..
        } => (
            name.0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.clone())
                .unwrap_or_default(),
            None,
            Vec::new(),
            None,
            true,
        ),
        other => {
            return Err(SqlError::unsupported(
                loc_of(other, at),
                &format!("FROM {other}"),
                "FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))",
            ));
        }
    };
    let Some(table) = tables.iter().find(|t| t.name.eq_ignore_ascii_case(&tname)) else {
        return Err(SqlError::at(
            at,
            format!("no table `{tname}`"),
            "create it first with CREATE TABLE … WITH (…)",
        ));
    };
    let Some(rt) = &table.rowtime else {
        return Err(SqlError::at(table.at, format!("table `{}` has no WATERMARK: weir runs on event time", table.name), "add `WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND` on a TIMESTAMP(3) column, or a computed `rowtime AS TO_TIMESTAMP_LTZ(ts, 3)` first"));
    };
    let rt_matches = |c: &str| c.eq_ignore_ascii_case(&rt.name);
    if let Some(c) = &tcol {
        if !rt_matches(c) {
            return Err(SqlError::at(
                at,
                format!(
                    "DESCRIPTOR({c}) is not the time attribute of `{}`",
                    table.name
                ),
                format!("use DESCRIPTOR({})", rt.name),
            ));
        }
    }
    // GROUP BY.
    let key_col = |g: &SExpr| -> Err<usize> {
        let gat = loc_of(g, at);
        let Some(id) = ident_name(g) else {
            return Err(SqlError::unsupported(
                gat,
                &format!("GROUP BY `{g}`"),
                "GROUP BY window_start, window_end and key columns",
            ));
        };
        let n = id.value.as_str();
        let Some(ci) = table.column(n) else {
            return Err(SqlError::at(
                gat,
                format!("`{}` has no column `{n}`", table.name),
                "group by a column of the table",
            ));
        };
        if !matches!(
            table.columns[ci].ty,
            SqlType::String | SqlType::Int | SqlType::BigInt
        ) || ci == rt.column
        {
            return Err(SqlError::at(
                gat,
                format!("cannot group by `{n}` ({})", table.columns[ci].ty.name()),
                "group by a STRING, INT or BIGINT id column (SELECT DISTINCT groups by its columns)",
            ));
        }
        Ok(ci)
    };
    // The plain key columns, and the grouping sets' columns.
    let mut keys: Vec<usize> = Vec::new();
    let mut grouping: Option<(Vec<Vec<usize>>, Location)> = None;
    let (mut has_start, mut has_end) = (false, false);
    for g in &group {
        let gat = loc_of(*g, at);
        if let SExpr::Function(f) = g {
            if legacy {
                if let Some((c, w)) = legacy_window(f, gat)? {
                    if !rt_matches(&c) {
                        return Err(SqlError::at(
                            gat,
                            format!("`{c}` is not the time attribute of `{}`", table.name),
                            format!("group by {}({}, …)", fname(f), rt.name),
                        ));
                    }
                    if window.is_some() {
                        return Err(SqlError::unsupported(
                            gat,
                            "two group windows",
                            "one TUMBLE / HOP / SESSION",
                        ));
                    }
                    window = Some(w);
                    continue;
                }
            }
        }
        if let Some(sets) = super::groups::expand(g) {
            if grouping.is_some() {
                return Err(SqlError::unsupported(
                    gat,
                    "two GROUPING SETS / ROLLUP / CUBE in one GROUP BY",
                    "one of them, e.g. GROUPING SETS ((a, b), (a), ())",
                ));
            }
            let mut out = Vec::new();
            for set in sets {
                let mut cols = Vec::new();
                for e in set {
                    let ci = key_col(e)?;
                    if !cols.contains(&ci) {
                        cols.push(ci);
                    }
                }
                out.push(cols);
            }
            grouping = Some((out, gat));
            continue;
        }
        let n = ident_name(g).map_or("", |id| id.value.as_str());
        if !legacy && n.eq_ignore_ascii_case("window_start") {
            has_start = true;
        } else if !legacy && n.eq_ignore_ascii_case("window_end") {
            has_end = true;
        } else if !legacy && n.eq_ignore_ascii_case("window_time") {
        } else {
            let ci = key_col(g)?;
            if !keys.contains(&ci) {
                keys.push(ci);
            }
        }
    }
    let aggregates = sel.projection.iter().any(|i| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => has_aggregate(e),
        _ => false,
    });
    if group.is_empty() && sel.having.is_none() && !(legacy && window.is_none() && aggregates) {
        // No aggregation: each row as it comes (with its windows' bounds
        // over a window TVF).
        let window = window.as_ref();
        return super::rows::compile(tables, sets, funcs, explain, insert, sel, table, window, at);
    }
    if let Some(w) = sel.named_window.first() {
        return Err(SqlError::unsupported(
            ident_loc(&w.0, at),
            "a WINDOW clause (OVER aggregation) in a query with GROUP BY or plain aggregates",
            "OVER aggregates in a query without GROUP BY: SELECT k, v, AVG(v) OVER w FROM t WINDOW w AS (PARTITION BY k ORDER BY rowtime …)",
        ));
    }
    // A GROUP BY without a window (or aggregates without GROUP BY): one
    // group per key over the whole input, a window that ends only with it
    // (Flink's final result of an unbounded aggregation over a bounded
    // input).
    let window = window.unwrap_or(Window {
        kind: WindowKind::Tumbling { size: UNBOUNDED },
        desc: "unbounded: one group per key for the whole input, its row once the input ends"
            .into(),
    });
    if !(legacy || has_start && has_end) {
        return Err(SqlError::at(
            at,
            "a window aggregation must group by both window_start and window_end",
            "write GROUP BY window_start, window_end[, key]",
        ));
    }
    let mut pcols = Vec::new();
    for p in &partition {
        let ci = table.column(&p.value).ok_or_else(|| {
            SqlError::at(
                ident_loc(p, at),
                format!("`{}` has no column `{}`", table.name, p.value),
                "partition by the key column",
            )
        })?;
        if !keys.is_empty() && !keys.contains(&ci) {
            return Err(SqlError::at(
                ident_loc(p, at),
                "PARTITION BY and GROUP BY name different keys",
                "partition and group by the same columns",
            ));
        }
        pcols.push(ci);
    }
    if !partition.is_empty() && keys.is_empty() {
        keys = pcols;
    } else if !partition.is_empty() && keys.iter().any(|k| !pcols.contains(k)) {
        return Err(SqlError::at(
            at,
            "PARTITION BY and GROUP BY name different keys",
            "partition and group by the same columns",
        ));
    } else if let (WindowKind::Session { .. }, false, false, true) =
        (window.kind, keys.is_empty(), legacy, partition.is_empty())
    {
        // Flink would merge sessions across keys; weir's sessions are per key.
        let k: Vec<&str> = keys
            .iter()
            .map(|&k| table.columns[k].name.as_str())
            .collect();
        return Err(SqlError::at(
            at,
            "a SESSION window grouped by a key needs PARTITION BY that key",
            format!(
                "write SESSION(TABLE {} PARTITION BY ({}), …)",
                table.name,
                k.join(", ")
            ),
        ));
    }
    if let (WindowKind::Session { .. }, Some((_, gat))) = (window.kind, &grouping) {
        return Err(SqlError::unsupported(
            *gat,
            "GROUPING SETS / ROLLUP / CUBE over SESSION windows",
            "SESSION(TABLE t PARTITION BY (a, b), …) with GROUP BY window_start, window_end, a, b",
        ));
    }
    let groups = super::groups::Groups::of(table, &keys, grouping, at)?;
    let key = match &groups {
        None => keys.first().copied(),
        Some(_) => None,
    };
    let gkeys: Vec<usize> = groups.as_ref().map_or(Vec::new(), |g| {
        g.cols.iter().filter_map(|c| table.column(&c.0)).collect()
    });
    let fields: Vec<usize> = (0..table.columns.len())
        .filter(|&i| {
            i != rt.column
                && Some(i) != key
                && !gkeys.contains(&i)
                && table.columns[i].ty.is_numeric()
        })
        .collect();
    let mut cx = Ctx {
        table,
        fields,
        key,
        keys: gkeys.clone(),
        texts: gkeys,
        computed: Vec::new(),
        legacy,
        slots: Vec::new(),
        flags: Vec::new(),
        at,
        funcs,
        udfs: Vec::new(),
        post: Vec::new(),
        row_cols: Vec::new(),
        per_row: None,
        over: None,
        named_windows: &[],
        over_ok: false,
        lags: Vec::new(),
    };
    let filter = match &sel.selection {
        Some(w) => {
            let (e, t) = cx.expr(w, Scope::Row)?;
            cx.boolean(t, w, at)?;
            Some((e, w.to_string()))
        }
        None => None,
    };
    let mut columns = Vec::new();
    for (i, item) in sel.projection.iter().enumerate() {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            other => {
                return Err(SqlError::unsupported(
                    loc_of(other, at),
                    &format!("`{other}` in the SELECT list"),
                    "name each result column: SELECT window_start, window_end, AVG(v) AS mean",
                ))
            }
        };
        let (x, ty) = cx.expr(e, Scope::Group)?;
        let name = result_name(e, alias, i);
        columns.push((ResultColumn { name, ty, expr: x }, e.to_string()));
    }
    let having = match &sel.having {
        Some(h) => {
            let (e, t) = cx.expr(h, Scope::Group)?;
            cx.boolean(t, h, at)?;
            Some((e, h.to_string()))
        }
        None => None,
    };
    unique_names(&columns, at)?;
    if cx.slots.is_empty() {
        // No aggregate (`SELECT key, window_start, window_end … GROUP BY`:
        // which keys had rows in which windows): a window holds at least
        // one row, so a row count that is not written makes the windows.
        cx.slot_unchecked(AggKind::Rows, ANY_FIELD);
    }
    if cx.fields.is_empty() && cx.computed.is_empty() {
        // A table of events without a numeric column (`COUNT(*)` of door
        // openings): the rows are counted on a constant the engine
        // computes.
        cx.push_computed(Expr::num(1.0), SqlType::Int, "1".into(), at)?;
    }
    let (name, state) = settings(sets, insert.as_ref())?;
    // COUNT(*) counts every row that passed WHERE: it is `rows` (NULLs
    // included) on an operator every such row reaches, a column's or an
    // expression's (a NULL reaches it as a NULL input), not a user
    // function's (its failure drops the row); failing those, on the first
    // column, an operator of its own.
    let nf = cx.fields.len();
    let first = cx
        .slots
        .iter()
        .map(|s| s.1)
        .filter(|f| *f != ANY_FIELD)
        .find(|&f| f < nf || !cx.udfs.iter().any(|u| u.output == f))
        .unwrap_or(0);
    for s in &mut cx.slots {
        if s.1 == ANY_FIELD {
            s.1 = first;
        }
    }
    for f in &mut cx.flags {
        if f.0 == ANY_FIELD {
            f.0 = first;
        }
    }
    // One operator per aggregated field, in order of first use.
    let mut op_fields: Vec<usize> = Vec::new();
    for (_, f) in &cx.slots {
        if !op_fields.contains(f) {
            op_fields.push(*f);
        }
    }
    let source_name = table.name.clone();
    let mut operators = Vec::new();
    let mut slot_place = vec![(0, 0); cx.slots.len()];
    for (pos, f) in op_fields.iter().enumerate() {
        let mut aggregates = Vec::new();
        for (si, (a, sf)) in cx.slots.iter().enumerate() {
            if sf == f {
                slot_place[si] = (pos, aggregates.len());
                aggregates.push(*a);
            }
        }
        let detect = cx
            .flags
            .iter()
            .find(|fl| fl.0 == *f)
            .map(|(_, on, d)| DetectSpec {
                on: Some(*on),
                detector: *d,
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            });
        let field = cx.field_name(*f);
        operators.push(OperatorSpec {
            id: if op_fields.len() == 1 {
                name.clone()
            } else {
                format!("{name}_{field}")
            },
            source: source_name.clone(),
            field,
            kind: OperatorKind::Window(WindowSpec {
                kind: window.kind,
                allowed_lateness: 0,
                aggregates,
                detect,
            }),
        });
    }
    if operators.iter().any(|o| matches!(&o.kind, OperatorKind::Window(w) if w.aggregates.len() > weir_core::spec::MAX_AGGS)) {
        return Err(SqlError::unsupported(at, "more than 16 aggregates of one column", "at most 16 aggregates per column"));
    }
    // Each grouping set runs its own operators on its own source.
    let nsets = groups.as_ref().map_or(1, |g| g.sets.len());
    let set_id = |s: usize, id: &str| match &groups {
        Some(g) => format!("{id}{}", g.suffix(s)),
        None => id.to_string(),
    };
    if nsets > 1 {
        operators = (0..nsets)
            .flat_map(|s| {
                operators.iter().map(move |o| OperatorSpec {
                    id: set_id(s, &o.id),
                    source: set_id(s, &o.source),
                    ..o.clone()
                })
            })
            .collect();
    }
    let flags: Vec<usize> = cx
        .flags
        .iter()
        .map(|fl| {
            op_fields
                .iter()
                .position(|f| *f == fl.0)
                .expect("flag field has an operator")
        })
        .collect();
    let nslots = cx.slots.len() as u16;
    let nflags = cx.flags.len() as u16;
    let nkeys = cx.keys.len() as u16;
    let post_at = |e: &mut Expr| {
        place_flags(e, nslots);
        super::groups::place_keys(e, SLOTS + nslots + nflags, 2 * nkeys);
        place_post(e, SLOTS + nslots + nflags + 2 * nkeys);
    };
    for (c, _) in &mut columns {
        post_at(&mut c.expr);
    }
    let having = having.map(|(mut e, s)| {
        post_at(&mut e);
        (e, s)
    });
    let mut post = std::mem::take(&mut cx.post);
    for (_, args) in &mut post {
        args.iter_mut().for_each(&post_at);
    }
    // Computed fields in the sample row come after the text columns.
    let row_base = 2 + (cx.fields.len() + cx.texts.len()) as u16;
    let row_at = |e: &Expr| {
        e.map_cols(&|c| {
            Some(if (COMPUTED_BASE..POST_BASE).contains(&c) {
                row_base + (c - COMPUTED_BASE)
            } else {
                c
            })
        })
        .expect("every column maps")
    };
    let field_names: Vec<String> = (0..cx.fields.len() + cx.computed.len())
        .map(|f| cx.field_name(f))
        .collect();
    // WHERE and the expressions under aggregates run in the engine, as the
    // source's filter and computed fields, when they read only numeric
    // fields (the engine sees no key, time or text column): the sample row
    // `[key, rowtime, fields…]` becomes the engine's `[fields…]`.
    let nf = cx.fields.len();
    let lower = |e: &Expr| e.map_cols(&|c| (c >= 2 && usize::from(c - 2) < nf).then(|| c - 2));
    let engine_filter = filter.as_ref().and_then(|f| lower(&f.0));
    // A user function fills its field before the engine: then every
    // computed field stays there, in one place.
    let engine_compute: Option<Vec<Expr>> =
        if cx.udfs.iter().all(|u| post.iter().any(|p| p.0 == u.source)) {
            cx.computed.iter().map(|c| lower(&c.0)).collect()
        } else {
            None
        };
    let mut source = match &engine_compute {
        Some(exprs) => {
            let mut s = SourceSpec::new(&source_name, field_names[..nf].iter().cloned());
            for (name, e) in field_names[nf..].iter().zip(exprs) {
                s = s.compute(name, e.clone());
            }
            s
        }
        None => SourceSpec::new(&source_name, field_names.iter().cloned()),
    };
    source.filter = engine_filter.clone();
    // A column's NULL (an empty CSV cell, an absent or `null` JSON field)
    // and an aggregated expression's are left out of their own aggregates
    // only (Flink); a user function's field is not nullable: its failure
    // (a NaN) is still refused.
    source.nullable = (0..nf)
        .chain(
            (0..cx.computed.len())
                .filter(|&j| {
                    engine_compute.is_some()
                        || !cx
                            .udfs
                            .iter()
                            .any(|u| u.output == nf + j && !post.iter().any(|p| p.0 == u.source))
                })
                .map(|j| nf + j),
        )
        .collect();
    source.max_out_of_orderness = rt.delay_ms;
    source_options(table, &mut source)?;
    let spec = PipelineSpec {
        name: name.clone(),
        time: time_of(rt),
        sources: (0..nsets)
            .map(|s| SourceSpec {
                name: set_id(s, &source.name),
                ..source.clone()
            })
            .collect(),
        operators,
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
    let mqtt = mqtt_source(table, key, &field_names[..cx.fields.len()], &texts)?;
    let sink = sink_of(tables, insert, columns.len())?;
    let sink_topic = sink.as_ref().and_then(Sink::topic_of);
    let mut ex = String::new();
    let _ = writeln!(
        ex,
        "pipeline `{name}` ({}, ms; state: at most {} keys{})",
        time_mode_text(rt),
        spec.state.max_keys,
        spec.state
            .ttl
            .map_or(String::new(), |t| format!(", ttl {t} ms"))
    );
    let _ = writeln!(
        ex,
        "source `{source_name}`: fields [{}], key {}, {}",
        field_names.join(", "),
        match (&groups, key) {
            (Some(g), _) => format!(
                "({}) as one composite key",
                g.cols
                    .iter()
                    .map(|c| format!("`{}`", c.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Some(k)) => format!("`{}`", table.columns[k].name),
            (None, None) => "(none: one group)".to_string(),
        },
        time_text(rt)
    );
    if let Some(g) = groups.as_ref().filter(|_| nsets > 1) {
        let _ = writeln!(
            ex,
            "grouping sets (a source and its operators each; other key columns NULL): {}",
            (0..nsets)
                .map(|s| format!("{} `{}`", g.label(s), set_id(s, &source_name)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some((_, s)) = &filter {
        let at = if engine_filter.is_some() {
            "in the engine, after the watermark"
        } else {
            "on samples, before the engine: it reads a key, time or text column"
        };
        let _ = writeln!(ex, "filter ({at}): {s}");
    }
    for (j, c) in cx.computed.iter().enumerate() {
        let at = if engine_compute.is_some() {
            "computed in the engine"
        } else {
            "computed before the engine"
        };
        let null = if spec.sources[0].nullable.contains(&(nf + j)) {
            "; a NULL is left out of its aggregates"
        } else {
            ""
        };
        let _ = writeln!(ex, "field `{}` ({at}{null}): {}", field_names[nf + j], c.2);
    }
    for o in &spec.operators {
        if let OperatorKind::Window(w) = &o.kind {
            let aggs: Vec<String> = w
                .aggregates
                .iter()
                .map(|a| format!("{a:?}").to_ascii_lowercase())
                .collect();
            let _ = write!(
                ex,
                "operator `{}`: window {} over `{}`, aggregates [{}]",
                o.id,
                window.desc,
                o.field,
                aggs.join(", ")
            );
            if let Some(d) = &w.detect {
                let _ = write!(
                    ex,
                    ", detect {:?} on {:?}",
                    d.detector,
                    d.on.expect("window detectors watch an aggregate")
                );
            }
            ex.push('\n');
        }
    }
    if let Some((_, s)) = &having {
        let _ = writeln!(ex, "having (on window rows, after the engine): {s}");
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
            filter: filter
                .map(|f| row_at(&f.0))
                .filter(|_| engine_filter.is_none()),
            texts: cx.texts.len(),
            columns_in: cx.fields.len(),
            computed: match engine_compute {
                Some(_) => Vec::new(),
                None => cx.computed.iter().map(|c| row_at(&c.0)).collect(),
            },
            computed_fn: match engine_compute {
                Some(_) => Vec::new(),
                None => (0..cx.computed.len())
                    .map(|j| {
                        let f = cx.fields.len() + j;
                        cx.udfs
                            .iter()
                            .find(|u| u.output == f && !post.iter().any(|p| p.0 == u.source))
                            .map(|u| u.source)
                    })
                    .collect(),
            },
            post,
            functions: Default::default(),
            keyed: key.is_some(),
            ops: (0..op_fields.len() * nsets).collect(),
            groups,
            scores: false,
            per_row: None,
            limit: None,
            top_n: None,
            order: Vec::new(),
            slots: slot_place,
            flags,
            having: having.map(|h| h.0),
            columns: columns.into_iter().map(|c| c.0).collect(),
            explain: ex,
            at,
            sink: sink_topic,
        },
        explain,
        input_path,
        sink,
        udfs: cx.udfs,
        keyed: None,
        inner: None,
    })
}

/// A keyed user function called as a table function (`CREATE FUNCTION f
/// AS 'module.wasm' LANGUAGE WASM`; `FROM TABLE(f(TABLE t PARTITION BY
/// key, DESCRIPTOR(rowtime), DESCRIPTOR(field), COLUMNS => DESCRIPTOR(…),
/// FLAG => TRUE, SEES_LATE => TRUE, name => value …))`): its operator is
/// added when the module is compiled (`super::attach_functions`), the same
/// operator a keyed `[[function]]` table with id `f` builds.
#[derive(Clone, Debug)]
pub struct KeyedUse {
    /// The function's name: its id and operator id.
    pub name: String,
    /// The module file.
    pub module: String,
    /// The source table's name.
    pub source: String,
    /// The field it reads.
    pub field: String,
    /// Field, columns, flag, late samples and config.
    pub args: crate::functions::KeyedArgs,
    /// Where the call is.
    pub at: Location,
}

/// The named arguments of a keyed table function that are not config.
const TF_ARGS: [&str; 6] = ["DATA", "TIMECOL", "FIELD", "COLUMNS", "FLAG", "SEES_LATE"];

/// weir's scoring detectors as table functions (the TOML `[[detect]]`
/// kinds): one row per sample, `[key, rowtime, field, score, anomaly]`.
const DETECTOR_TFS: [&str; 6] = [
    "kestrel",
    "kestrel_banded",
    "kestrel_calibrated",
    "ewma",
    "mad",
    "cusum",
];

/// How a detector table function is called.
const DETECTOR_FORM: &str = "FROM TABLE(KESTREL(TABLE t PARTITION BY key, DESCRIPTOR(rowtime), DESCRIPTOR(field) [, threshold => 0.3, hysteresis => 0.05, cooldown => 50])) (docs/sql.md)";

const TF_FORM: &str = "FROM TABLE(f(TABLE t PARTITION BY key, DESCRIPTOR(rowtime), DESCRIPTOR(field), COLUMNS => DESCRIPTOR(a, b), FLAG => TRUE, name => value …)) (docs/sql.md)";

/// A config value: a number, string or boolean literal, as written.
fn config_value(e: &SExpr) -> Option<String> {
    match e {
        SExpr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(n.to_string()),
            ast::Value::SingleQuotedString(x) => Some(x.clone()),
            ast::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        SExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match &**expr {
            SExpr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => Some(format!("-{n}")),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn table_function(
    tables: &[Table],
    sets: &[(String, String, Location)],
    funcs: &[(String, String, Location)],
    def: &(String, String, Location),
    builtin: Option<&'static str>,
    explain: bool,
    insert: Option<(String, Location)>,
    sel: &ast::Select,
    f: &ast::Function,
    at: Location,
) -> Err<SqlPipeline> {
    let fat = loc_of(f, at);
    let fname = def.0.clone();
    if !matches!(&sel.group_by, GroupByExpr::Expressions(v, m) if v.is_empty() && m.is_empty())
        || sel.having.is_some()
    {
        return Err(SqlError::unsupported(
            at,
            &format!("GROUP BY or HAVING over the rows of table function `{fname}`"),
            "its rows as they are, filtered with WHERE (the function keeps its own windows)",
        ));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(SqlError::at(
            fat,
            format!("`{fname}` needs its arguments"),
            format!("write {TF_FORM}"),
        ));
    };
    let mut data = None;
    let mut timecol = None;
    let mut field = None;
    let mut columns: Vec<String> = Vec::new();
    let mut flag = false;
    let mut sees_late = false;
    let mut config: Vec<(String, String)> = Vec::new();
    // A detector's threshold, hysteresis and cooldown.
    let mut det: (Option<f64>, Option<f64>, Option<f64>) = (None, None, None);
    let mut positional = 0;
    for a in &list.args {
        let (name, e) = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (None, e),
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } => (Some(name), e),
            other => {
                return Err(SqlError::unsupported(
                    loc_of(other, fat),
                    &format!("the argument `{other}` of table function `{fname}`"),
                    TF_FORM,
                ))
            }
        };
        let eat = loc_of(e, fat);
        let role = match name {
            None => {
                positional += 1;
                match positional {
                    1 => "DATA".to_string(),
                    2 => "TIMECOL".to_string(),
                    3 => "FIELD".to_string(),
                    _ => return Err(SqlError::at(
                        eat,
                        format!("`{fname}` takes three arguments by position (table, time, field)"),
                        "name the others: COLUMNS => DESCRIPTOR(…), FLAG => TRUE, size => 10000",
                    )),
                }
            }
            Some(n) => {
                let up = n.value.to_ascii_uppercase();
                if builtin.is_some() {
                    if ["DATA", "TIMECOL", "FIELD"].contains(&up.as_str()) {
                        up
                    } else {
                        let v = literal_num(e).filter(|v| v.is_finite() && *v >= 0.0);
                        let slot = match up.as_str() {
                            "THRESHOLD" => &mut det.0,
                            "HYSTERESIS" => &mut det.1,
                            "COOLDOWN" => &mut det.2,
                            _ => {
                                return Err(SqlError::at(
                                    eat,
                                    format!("detector `{fname}` takes no argument `{}`", n.value),
                                    format!("write {DETECTOR_FORM}"),
                                ))
                            }
                        };
                        let Some(v) = v else {
                            return Err(SqlError::at(
                                eat,
                                format!("`{}` of `{fname}` must be a number ≥ 0", n.value),
                                format!("write {DETECTOR_FORM}"),
                            ));
                        };
                        if slot.replace(v).is_some() {
                            return Err(SqlError::at(
                                eat,
                                format!("`{}` is given twice", n.value),
                                "give it once",
                            ));
                        }
                        continue;
                    }
                } else if TF_ARGS.contains(&up.as_str()) {
                    up
                } else {
                    // The guest's config, `name=value`.
                    let Some(v) = config_value(e) else {
                        return Err(SqlError::at(
                            eat,
                            format!("config `{}` of `{fname}` is not a number, string or boolean literal", n.value),
                            "write name => 10000, name => 'text' or name => TRUE",
                        ));
                    };
                    if config.iter().any(|c| c.0 == n.value) {
                        return Err(SqlError::at(
                            eat,
                            format!("config `{}` is given twice", n.value),
                            "give it once",
                        ));
                    }
                    config.push((n.value.clone(), v));
                    continue;
                }
            }
        };
        let slot_taken = match role.as_str() {
            "DATA" => data.replace(e).is_some(),
            "TIMECOL" => timecol.replace(e).is_some(),
            "FIELD" => field.replace(e).is_some(),
            "COLUMNS" => {
                let Some(c) = descriptor(e) else {
                    return Err(SqlError::at(
                        eat,
                        "COLUMNS must be DESCRIPTOR(name, …)",
                        "write COLUMNS => DESCRIPTOR(`count`, mean)",
                    ));
                };
                columns = c.into_iter().map(|i| i.value.clone()).collect();
                false
            }
            _ => {
                let SExpr::Value(v) = e else {
                    return Err(SqlError::at(
                        eat,
                        format!("{role} must be TRUE or FALSE"),
                        format!("write {role} => TRUE"),
                    ));
                };
                let ast::Value::Boolean(b) = v.value else {
                    return Err(SqlError::at(
                        eat,
                        format!("{role} must be TRUE or FALSE"),
                        format!("write {role} => TRUE"),
                    ));
                };
                if role == "FLAG" {
                    flag = b;
                } else {
                    sees_late = b;
                }
                false
            }
        };
        if slot_taken {
            return Err(SqlError::at(
                eat,
                format!(
                    "`{fname}` is given its {} argument twice",
                    role.to_ascii_lowercase()
                ),
                format!("write {TF_FORM}"),
            ));
        }
    }
    let missing = |what: &str| {
        SqlError::at(
            fat,
            format!("table function `{fname}` is missing its {what} argument"),
            format!("write {TF_FORM}"),
        )
    };
    let data = data.ok_or_else(|| missing("table"))?;
    let (tname, partition) = table_arg(data, fat, &fname)?;
    let Some(table) = tables.iter().find(|t| t.name.eq_ignore_ascii_case(&tname)) else {
        return Err(SqlError::at(
            loc_of(data, fat),
            format!("no table `{tname}`"),
            "create it first with CREATE TABLE … WITH (…)",
        ));
    };
    let Some(rt) = &table.rowtime else {
        return Err(SqlError::at(
            table.at,
            format!(
                "table `{}` has no WATERMARK: weir runs on event time",
                table.name
            ),
            "add `WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND`",
        ));
    };
    if rt.proctime {
        return Err(proctime_refused(
            rt,
            "a per-row detector or table function over a PROCTIME() table",
        ));
    }
    let timecol = timecol.ok_or_else(|| missing("time (DESCRIPTOR(rowtime))"))?;
    match descriptor(timecol).as_deref() {
        Some([c]) if c.value.eq_ignore_ascii_case(&rt.name) => {}
        _ => {
            return Err(SqlError::at(
                loc_of(timecol, fat),
                format!(
                "`{fname}`'s second argument must be DESCRIPTOR({}), the time attribute of `{}`",
                rt.name, table.name
            ),
                format!("write DESCRIPTOR({})", rt.name),
            ))
        }
    }
    let Some(p) = partition else {
        return Err(SqlError::at(
            loc_of(data, fat),
            format!(
                "keyed function `{fname}` needs the key: TABLE {} PARTITION BY key",
                table.name
            ),
            format!("write TABLE {} PARTITION BY <id column>", table.name),
        ));
    };
    let key = match table.column(&p.value) {
        Some(ci)
            if ci != rt.column
                && matches!(
                    table.columns[ci].ty,
                    SqlType::String | SqlType::Int | SqlType::BigInt
                ) =>
        {
            ci
        }
        _ => {
            return Err(SqlError::at(
                ident_loc(&p, fat),
                format!(
                    "`{}` is not a STRING, INT or BIGINT column of `{}`",
                    p.value, table.name
                ),
                "partition by the id column",
            ))
        }
    };
    let fields: Vec<usize> = (0..table.columns.len())
        .filter(|&i| i != rt.column && i != key && table.columns[i].ty.is_numeric())
        .collect();
    let field_e = field.ok_or_else(|| missing("field (DESCRIPTOR(column))"))?;
    let read = match descriptor(field_e).as_deref() {
        Some([c]) => fields
            .iter()
            .position(|&fi| table.columns[fi].name.eq_ignore_ascii_case(&c.value)),
        _ => None,
    };
    let Some(read) = read else {
        return Err(SqlError::at(
            loc_of(field_e, fat),
            format!("`{fname}`'s third argument must be DESCRIPTOR(c) of a numeric column of `{}` (a keyed function reads one)", table.name),
            format!(
                "use one of: {}",
                fields.iter().map(|&i| table.columns[i].name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    if columns.is_empty() && builtin.is_none() {
        return Err(SqlError::unsupported(
            fat,
            &format!("table function `{fname}` without COLUMNS (its plain emits)"),
            "the window rows it emits, named: COLUMNS => DESCRIPTOR(`count`, mean, …)",
        ));
    }
    // Its row: [key, window_start, window_end, window_time, columns…, flag];
    // a detector's: [key, rowtime, field, score, anomaly], one per sample.
    let keycol = &table.columns[key];
    let mut row_cols = vec![(keycol.name.clone(), KEY, keycol.ty)];
    if builtin.is_some() {
        columns = vec![table.columns[fields[read]].name.clone(), "score".into()];
        flag = true;
        row_cols.push((rt.name.clone(), START, SqlType::Timestamp));
    } else {
        row_cols.extend([
            ("window_start".to_string(), START, SqlType::Timestamp),
            ("window_end".to_string(), END, SqlType::Timestamp),
            ("window_time".to_string(), WTIME, SqlType::Timestamp),
        ]);
    }
    for (i, c) in columns.iter().enumerate() {
        // A first `count` is an integer, as in a TOML pipeline's rows.
        let ty = if i == 0 && c.eq_ignore_ascii_case("count") {
            SqlType::BigInt
        } else {
            SqlType::Double
        };
        row_cols.push((c.clone(), SLOTS + i as u16, ty));
    }
    let ncols = columns.len() as u16;
    if flag {
        row_cols.push(("anomaly".to_string(), SLOTS + ncols, SqlType::Boolean));
    }
    for (i, c) in row_cols.iter().enumerate() {
        if row_cols[..i].iter().any(|o| o.0.eq_ignore_ascii_case(&c.0)) {
            return Err(SqlError::at(
                fat,
                format!("two columns of `{fname}` are named `{}`", c.0),
                if builtin.is_some() {
                    "a detector's rows have the columns key, time, field, score, anomaly: rename the table's column"
                } else {
                    "rename one in COLUMNS"
                },
            ));
        }
    }
    let mut cx = Ctx {
        table,
        fields: fields.clone(),
        key: Some(key),
        keys: Vec::new(),
        texts: Vec::new(),
        computed: Vec::new(),
        legacy: false,
        slots: Vec::new(),
        flags: Vec::new(),
        at,
        funcs,
        udfs: Vec::new(),
        post: Vec::new(),
        row_cols: row_cols.clone(),
        per_row: None,
        over: None,
        named_windows: &[],
        over_ok: false,
        lags: Vec::new(),
    };
    let no_aggregates = |cx: &Ctx, e: &dyn std::fmt::Display, l: Location| {
        if cx.slots.is_empty() && cx.flags.is_empty() && cx.computed.is_empty() {
            Ok(())
        } else {
            Err(SqlError::unsupported(
                l,
                &format!(
                    "an aggregate or detector over the rows of table function `{fname}` (`{e}`)"
                ),
                "its columns as they are, or expressions over them",
            ))
        }
    };
    let mut out: Vec<(ResultColumn, String)> = Vec::new();
    for (i, item) in sel.projection.iter().enumerate() {
        let (e, alias) = match item {
            SelectItem::Wildcard(_) => {
                for c in &row_cols {
                    out.push((
                        ResultColumn {
                            name: c.0.clone(),
                            ty: c.2,
                            expr: Expr::Col(c.1),
                        },
                        c.0.clone(),
                    ));
                }
                continue;
            }
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            other => {
                return Err(SqlError::unsupported(
                    loc_of(other, at),
                    &format!("`{other}` in the SELECT list"),
                    "SELECT * or the function's columns by name",
                ))
            }
        };
        let (x, ty) = cx.expr(e, Scope::Group)?;
        no_aggregates(&cx, e, loc_of(e, at))?;
        let name = result_name(e, alias, i);
        out.push((ResultColumn { name, ty, expr: x }, e.to_string()));
    }
    unique_names(&out, at)?;
    // WHERE filters the function's rows (its input is the whole table).
    let filter = match &sel.selection {
        Some(w) => {
            let (e, t) = cx.expr(w, Scope::Group)?;
            no_aggregates(&cx, w, loc_of(w, at))?;
            cx.boolean(t, w, at)?;
            Some((e, w.to_string()))
        }
        None => None,
    };
    let nflags = u16::from(flag);
    let post_at = |e: &mut Expr| place_post(e, SLOTS + ncols + nflags);
    for (c, _) in &mut out {
        post_at(&mut c.expr);
    }
    let filter = filter.map(|(mut e, s)| {
        post_at(&mut e);
        (e, s)
    });
    let mut post = std::mem::take(&mut cx.post);
    for (_, args) in &mut post {
        args.iter_mut().for_each(&post_at);
    }
    let (name, state) = settings(sets, insert.as_ref())?;
    let field_names: Vec<String> = fields
        .iter()
        .map(|&i| table.columns[i].name.clone())
        .collect();
    let mut source = SourceSpec::new(&table.name, field_names.iter().cloned());
    source.max_out_of_orderness = rt.delay_ms;
    source_options(table, &mut source)?;
    // A detector's operator: the one a TOML `[[detect]]` with this id and
    // kind builds (event-time order). A user function's, once its module
    // is compiled.
    let mut operators = Vec::new();
    if let Some(kind) = builtin {
        let DetectorSpec::Scored {
            detector,
            threshold,
            hysteresis,
            cooldown,
        } = DetectorSpec::scored(
            crate::pipeline_file::scoring_config(kind).expect("a scoring kind"),
        )
        else {
            unreachable!("scored() builds Scored")
        };
        let detector = DetectorSpec::Scored {
            detector,
            threshold: det.0.unwrap_or(threshold),
            hysteresis: det.1.unwrap_or(hysteresis),
            cooldown: det.2.map_or(cooldown, |c| c as u32),
        };
        detector
            .validate()
            .map_err(|e| SqlError::at(fat, e.to_string(), format!("write {DETECTOR_FORM}")))?;
        operators.push(OperatorSpec {
            id: kind.to_string(),
            source: table.name.clone(),
            field: field_names[read].clone(),
            kind: OperatorKind::Detect(DetectSpec {
                on: None,
                detector,
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            }),
        });
    }
    let spec = PipelineSpec {
        name: name.clone(),
        time: time_of(rt),
        sources: vec![source],
        operators,
        state,
    };
    let (csv, input_path) = csv_mapping(table, Some(key), &fields, &[])?;
    let mqtt = mqtt_source(table, Some(key), &field_names, &[])?;
    let sink = sink_of(tables, insert, out.len())?;
    let mut ex = String::new();
    let _ = writeln!(
        ex,
        "pipeline `{name}` (event time, ms; state: at most {} keys{})",
        spec.state.max_keys,
        spec.state
            .ttl
            .map_or(String::new(), |t| format!(", ttl {t} ms"))
    );
    let _ = writeln!(
        ex,
        "source `{}`: fields [{}], key `{}`, time `{}`, watermark = newest - {} ms - 1",
        table.name,
        field_names.join(", "),
        keycol.name,
        rt.name,
        rt.delay_ms
    );
    let mut sorted = config.clone();
    sorted.sort();
    if let Some(OperatorKind::Detect(d)) = spec.operators.first().map(|o| &o.kind) {
        let _ = writeln!(
            ex,
            "operator `{}`: detector {:?} over `{}`, per key, event-time order (late samples to the late output); one row per sample [{}]",
            spec.operators[0].id,
            d.detector,
            field_names[read],
            row_cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(", ")
        );
    } else {
        let _ = writeln!(
            ex,
            "operator `{fname}`: keyed WebAssembly function '{}' over `{}`, window rows [{}]{}{}{}",
            def.1,
            field_names[read],
            columns.join(", "),
            if flag { " with a flag" } else { "" },
            if sees_late { ", sees late samples" } else { "" },
            if sorted.is_empty() {
                String::new()
            } else {
                format!(
                    ", config {}",
                    sorted
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
    }
    if let Some((_, s)) = &filter {
        let _ = writeln!(ex, "where (on the function's rows): {s}");
    }
    explain_results(&mut ex, &out, sink.as_ref());
    Ok(SqlPipeline {
        pipeline: PipelineFile {
            spec,
            csv: vec![csv],
            mqtt: vec![mqtt],
            functions: Default::default(),
            sql: None,
        },
        query: Query {
            filter: None,
            texts: 0,
            columns_in: fields.len(),
            computed: Vec::new(),
            computed_fn: Vec::new(),
            post,
            functions: Default::default(),
            keyed: true,
            groups: None,
            scores: builtin.is_some(),
            per_row: None,
            limit: None,
            top_n: None,
            order: Vec::new(),
            ops: vec![0],
            slots: (0..columns.len()).map(|i| (0, i)).collect(),
            flags: if flag { vec![0] } else { Vec::new() },
            having: filter.map(|f| f.0),
            columns: out.into_iter().map(|c| c.0).collect(),
            explain: ex,
            at,
            sink: sink.as_ref().and_then(Sink::topic_of),
        },
        explain,
        input_path,
        sink,
        udfs: cx.udfs,
        keyed: builtin.is_none().then(|| KeyedUse {
            name: fname.clone(),
            module: def.1.clone(),
            source: table.name.clone(),
            field: field_names[read].clone(),
            args: crate::functions::KeyedArgs {
                field: read,
                columns,
                flag,
                sees_late,
                config,
            },
            at: fat,
        }),
        inner: None,
    })
}

/// Compiles one scalar expression over a source's numeric fields with the
/// SQL compiler (Flink SQL's syntax, operators and functions, as in
/// `WHERE`): the TOML pipeline's `filter` (`condition: true`, which must be
/// BOOLEAN) and computed fields (a number). [`Expr::Col`]`(i)` reads
/// `fields[i]`.
///
/// # Errors
/// A syntax error, an unknown column or function, or the wrong type, at the
/// line and column within `text`.
pub fn scalar_over_fields(text: &str, fields: &[String], condition: bool) -> Err<Expr> {
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let start = Location { line: 1, column: 1 };
    let dialect = super::dialect::WeirDialect;
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::at(
                e.location,
                format!("syntax error: {}", e.message),
                "write a Flink SQL expression, e.g. temp > 80 AND hum < 90",
            )
        })?;
    super::check_operators(&tokens)?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let e = p.parse_expr().map_err(SqlError::parser)?;
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::at(
            next.span.start,
            format!("unexpected `{}` after the expression", next.token),
            "write one expression",
        ));
    }
    let table = Table {
        name: "the source".into(),
        columns: fields
            .iter()
            .map(|f| super::ddl::Column {
                name: f.clone(),
                ty: SqlType::Double,
                at: start,
            })
            .collect(),
        // A name no identifier matches: the time is not a column here.
        rowtime: Some(super::ddl::Rowtime {
            name: "\u{0}".into(),
            column: 0,
            epoch_precision: None,
            delay_ms: 0,
            at: start,
            proctime: false,
        }),
        options: Vec::new(),
        at: start,
    };
    let mut cx = Ctx {
        table: &table,
        fields: (0..fields.len()).collect(),
        key: None,
        keys: Vec::new(),
        texts: Vec::new(),
        computed: Vec::new(),
        legacy: false,
        slots: Vec::new(),
        flags: Vec::new(),
        funcs: &[],
        udfs: Vec::new(),
        post: Vec::new(),
        row_cols: Vec::new(),
        per_row: None,
        over: None,
        named_windows: &[],
        over_ok: false,
        lags: Vec::new(),
        at: start,
    };
    let (x, t) = cx.expr(&e, Scope::Row)?;
    if condition {
        cx.boolean(t, &e, start)?;
    } else if !t.is_numeric() {
        return Err(SqlError::at(
            start,
            format!("`{e}` is {}, not a number", t.name()),
            "compute a number, e.g. temp * 1.8 + 32",
        ));
    }
    // The sample row is [key, time, fields…]: the engine's is [fields…].
    x.map_cols(&|c| c.checked_sub(2)).ok_or_else(|| {
        SqlError::at(
            start,
            format!("`{e}` reads something other than the source's fields"),
            "read only the source's numeric fields",
        )
    })
}

pub(super) fn csv_mapping(
    t: &Table,
    key: Option<usize>,
    fields: &[usize],
    texts: &[usize],
) -> Err<(CsvMapping, Option<String>)> {
    let rt = t.rowtime.as_ref().expect("checked");
    let conn = t.option("connector");
    let path = match conn {
        Some(("filesystem", l)) if rt.proctime => {
            return Err(SqlError::unsupported(
                l,
                "a filesystem table whose time is PROCTIME()",
                "give the file's table its time column (rowtime AS TO_TIMESTAMP_LTZ(ts, 3) with a WATERMARK); PROCTIME() is for mqtt tables, whose rows arrive as the gateway runs",
            ))
        }
        Some(("filesystem", _)) => {
            match t.option("format") {
                Some(("csv", _)) => {}
                Some((f, l)) => {
                    return Err(SqlError::unsupported(
                        l,
                        &format!("the filesystem format '{f}'"),
                        "'format' = 'csv'",
                    ))
                }
                None => {
                    return Err(SqlError::at(
                        t.at,
                        "a filesystem table needs 'format'",
                        "add 'format' = 'csv'",
                    ))
                }
            }
            t.option("path").map(|p| p.0.to_string())
        }
        Some(("mqtt", _)) => None,
        Some((c, l)) => {
            return Err(SqlError::unsupported(
                l,
                &format!("the connector '{c}'"),
                "'connector' = 'filesystem' (CSV) or 'mqtt'",
            ))
        }
        None => {
            return Err(SqlError::at(
                t.at,
                format!("table `{}` has no 'connector' option", t.name),
                "add 'connector' = 'filesystem' or 'mqtt'",
            ))
        }
    };
    let columns = (0..t.columns.len())
        .map(|i| {
            if Some(i) == key {
                Column::Key
            } else if i == rt.column {
                Column::Ts
            } else if let Some(p) = fields.iter().position(|&f| f == i) {
                Column::Field(p)
            } else if let Some(p) = texts.iter().position(|&f| f == i) {
                Column::Text(p)
            } else {
                Column::Skip
            }
        })
        .collect();
    let timestamp = match rt.epoch_precision {
        Some(0) => TsFormat::Seconds,
        Some(_) => TsFormat::Millis,
        None => TsFormat::Datetime,
    };
    csv_options(t)?;
    let header = match t.option("csv.ignore-first-line") {
        None | Some(("false", _)) => false,
        Some(("true", _)) => true,
        Some((v, l)) => {
            return Err(SqlError::at(
                l,
                format!("'csv.ignore-first-line' = '{v}'"),
                "use 'true' or 'false'",
            ))
        }
    };
    Ok((
        CsvMapping {
            columns,
            header,
            timestamp,
            key: t.name.clone(),
            // An empty cell is NULL, as in Flink's csv format (since 1.18).
            nulls: Some(
                t.option("csv.null-literal")
                    .map_or(String::new(), |l| l.0.to_string()),
            ),
        },
        path,
    ))
}

/// Checks the table's `csv.*` options (Flink's csv format) that are not
/// read elsewhere: those whose one value weir reads as Flink does are
/// accepted, any other value or option is refused rather than ignored (a
/// `';'` delimiter ignored would make every row a bad row).
fn csv_options(t: &Table) -> Err<()> {
    for (k, v, l) in &t.options {
        let Some(opt) = k.strip_prefix("csv.") else {
            continue;
        };
        let fixed = match opt {
            "ignore-first-line" | "null-literal" => continue,
            // Bad rows are skipped, counted and reported either way
            // (Flink fails the job on one unless this is 'true').
            "ignore-parse-errors" if matches!(v.as_str(), "true" | "false") => continue,
            "field-delimiter" => ",",
            "quote-character" => "\"",
            "allow-comments" | "disable-quote-character" => "false",
            _ => {
                return Err(SqlError::unsupported(
                    *l,
                    &format!("the csv option '{k}'"),
                    "'csv.ignore-first-line', 'csv.null-literal', 'csv.ignore-parse-errors', \
                     'csv.field-delimiter' = ',', 'csv.quote-character' = '\"'",
                ))
            }
        };
        if v != fixed {
            return Err(SqlError::unsupported(
                *l,
                &format!("'{k}' = '{v}'"),
                &format!("'{k}' = '{fixed}' (or leave it out)"),
            ));
        }
    }
    Ok(())
}

/// The table's mqtt source: `fields` the numeric columns the engine reads,
/// `texts` the STRING columns a `WHERE` reads besides the key.
pub(super) fn mqtt_source(
    t: &Table,
    key: Option<usize>,
    fields: &[String],
    texts: &[String],
) -> Err<Option<MqttSource>> {
    if t.option("connector").map(|c| c.0) != Some("mqtt") {
        return Ok(None);
    }
    let rt = t.rowtime.as_ref().expect("checked");
    let Some((topics, tl)) = t.option("topic") else {
        return Err(SqlError::at(
            t.at,
            "an mqtt table needs 'topic'",
            "add 'topic' = 'plant/+/temp' (several filters separated by ';')",
        ));
    };
    let topics: Vec<String> = topics.split(';').map(|s| s.trim().to_string()).collect();
    for f in &topics {
        check_topic_filter(f)
            .map_err(|e| SqlError::at(tl, e, "write filters like sensors/+/temp or plant/#"))?;
    }
    let qos = match t.option("qos") {
        None | Some(("1", _)) => 1,
        Some(("0", _)) => 0,
        Some((q, l)) => {
            return Err(SqlError::unsupported(
                l,
                &format!("'qos' = '{q}'"),
                "'qos' = '1' (acknowledged after the journal commit) or '0'",
            ))
        }
    };
    let format = match t.option("format") {
        Some(("json", _)) => Format::Json,
        Some(("cbor", _)) => Format::Cbor,
        Some(("senml-json", _)) => Format::SenmlJson,
        Some(("senml-cbor", _)) => Format::SenmlCbor,
        Some((f, l)) => {
            return Err(SqlError::unsupported(
                l,
                &format!("the format '{f}'"),
                "'json', 'cbor', 'senml-json' or 'senml-cbor'",
            ))
        }
        None => {
            return Err(SqlError::at(
                t.at,
                "an mqtt table needs 'format'",
                "add 'format' = 'json'",
            ))
        }
    };
    let mut cfg = DecoderConfig::new(format);
    let senml = matches!(format, Format::SenmlJson | Format::SenmlCbor);
    let opt = |k: &str| t.option(k).map(|v| v.0.to_string());
    if let Some(level) = t.option("key.topic-level") {
        cfg.key_from_topic = Some(level.0.parse().map_err(|_| {
            SqlError::at(
                level.1,
                "'key.topic-level' must be a level number",
                "e.g. '1' for the second level of plant/pump-1/temp",
            )
        })?);
    } else if let Some(k) = opt("key.path") {
        cfg.key = Some(k);
    } else if let Some(k) = opt("key.const") {
        cfg.key_const = Some(k);
    } else if !senml {
        match key {
            Some(k) => cfg.key = Some(t.columns[k].name.clone()),
            None => cfg.key_const = Some(t.name.clone()),
        }
    }
    if rt.proctime {
        if let Some((o, l)) = [
            "timestamp.path",
            "timestamp.unit",
            "weir.watermark",
            "scan.watermark.idle-timeout",
        ]
        .iter()
        .find_map(|o| t.option(o).map(|v| (o, v.1)))
        {
            return Err(SqlError::at(
                l,
                format!("'{o}' in a table whose time is PROCTIME(): its rows are stamped on arrival and have no watermark"),
                format!("drop '{o}', or declare the payload's time as the time attribute: rowtime AS TO_TIMESTAMP_LTZ(ts, 3) with a WATERMARK"),
            ));
        }
        if senml {
            return Err(SqlError::unsupported(
                rt.at,
                "PROCTIME() over SenML ('format' = 'senml-json' or 'senml-cbor')",
                "SenML records carry their own time (bt and t, a missing one meaning now): declare `rowtime AS TO_TIMESTAMP_LTZ(ts, 3)` with a WATERMARK, or read 'json'/'cbor' by PROCTIME()",
            ));
        }
        // Stamped with the gateway's clock on arrival.
        cfg.ts = None;
    } else if !senml {
        cfg.ts = Some(opt("timestamp.path").unwrap_or_else(|| t.columns[rt.column].name.clone()));
    } else {
        cfg.ts = opt("timestamp.path");
    }
    cfg.ts_unit = match (opt("timestamp.unit").as_deref(), rt.epoch_precision) {
        (Some("s"), _) | (None, Some(0)) => TsUnit::Seconds,
        (Some("ms"), _) | (None, _) => TsUnit::Millis,
        (Some("us"), _) => TsUnit::Micros,
        (Some("ns"), _) => TsUnit::Nanos,
        (Some(u), _) => {
            return Err(SqlError::at(
                t.option("timestamp.unit").expect("given").1,
                format!("unknown timestamp unit '{u}'"),
                "use 's', 'ms', 'us' or 'ns'",
            ))
        }
    };
    for f in fields {
        if let Some(p) = opt(&format!("fields.{}.path", f.to_ascii_lowercase())) {
            cfg.fields.insert(f.clone(), p);
        }
    }
    if !senml {
        cfg.texts = texts
            .iter()
            .map(|f| {
                opt(&format!("fields.{}.path", f.to_ascii_lowercase())).unwrap_or_else(|| f.clone())
            })
            .collect();
    }
    // An absent or null field is NULL, as in Flink's json format.
    cfg.nulls = true;
    let decoder = cfg
        .build(fields, TimeUnit::Millis)
        .map_err(|e| SqlError::at(t.at, e.to_string(), "see the mqtt options in docs/sql.md"))?;
    Ok(Some(MqttSource {
        topics,
        qos,
        decoder,
    }))
}

/// The source table's weir options: `'weir.watermark'` (`per-source`, the
/// default and Flink's table watermark, or `per-key`), `'weir.max-ahead'`
/// (the future guard against the gateway clock, default `5m`, `off`) and
/// `'scan.watermark.idle-timeout'` (Flink's name: a source silent that long
/// stops holding the watermark back).
pub(super) fn source_options(table: &Table, source: &mut SourceSpec) -> Result<(), SqlError> {
    use weir_core::spec::WatermarkMode;
    let dur = |v: &str, l: Location, what: &str| {
        crate::pipeline_file::parse_duration(&v.replace(' ', ""), TimeUnit::Millis)
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                SqlError::at(
                    l,
                    format!("'{what}' = '{v}': not a duration such as 5m"),
                    "write a duration such as '30s', '5m' or '1h' (or 'off')",
                )
            })
    };
    source.max_ahead = crate::pipeline_file::parse_duration(
        crate::pipeline_file::DEFAULT_MAX_AHEAD,
        TimeUnit::Millis,
    );
    if let Some((v, l)) = table.option("weir.max-ahead") {
        source.max_ahead = if v.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            Some(dur(v, l, "weir.max-ahead")?)
        };
    }
    if let Some((v, l)) = table.option("scan.watermark.idle-timeout") {
        source.idle_timeout = Some(dur(v, l, "scan.watermark.idle-timeout")?);
    }
    if let Some((v, l)) = table.option("weir.watermark") {
        source.watermark = match v.trim() {
            "per-source" => WatermarkMode::PerSource,
            "per-key" => WatermarkMode::PerKey,
            _ => {
                return Err(SqlError::at(
                    l,
                    format!("'weir.watermark' = '{v}': not a watermark mode"),
                    "write 'per-source' (Flink's table watermark, the default) or 'per-key' (one per device)",
                ))
            }
        };
    } else {
        source.watermark = WatermarkMode::PerSource;
    }
    Ok(())
}
