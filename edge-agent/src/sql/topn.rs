//! Window Top-N and window deduplication: the first rows of each window by
//! an order, as Flink writes them.
//!
//! ```sql
//! SELECT * FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end
//!                                ORDER BY price DESC) AS rownum
//!   FROM (SELECT window_start, window_end, supplier_id, SUM(price) AS price
//!         FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
//!         GROUP BY window_start, window_end, supplier_id)
//! ) WHERE rownum <= 3;
//! ```
//!
//! The query inside (`SELECT …` without the `ROW_NUMBER()` column) is
//! compiled as any query; its result rows, as `weir replay` writes them,
//! are grouped by the `PARTITION BY` columns (which hold `window_start`
//! and `window_end`, as Flink requires), and each group keeps its first
//! `n` rows by the `ORDER BY` columns (ties in the order the rows came).
//! Once the input ends the groups are written in the order they first
//! appeared, each in `rownum` order, under the outer `SELECT`'s columns.
//! Memory holds `n` rows per window. `weir run` and the live shell refuse
//! it: their streams do not end (Flink emits a window's rows when the
//! watermark passes its end).

use std::io::{self, Write};

use sqlparser::ast::{self, Expr as SExpr, SelectItem, SetExpr, TableFactor};
use sqlparser::tokenizer::Location;

use super::exec::{compare_sort, row_ends, sort_cells, split_csv, SortCell};
use super::plan::{loc_of, Query, SortKey};
use super::{Err, SqlError};
use crate::replay::push_text;

/// A Top-N over a query's result rows ([`Query::top_n`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TopN {
    /// The result columns that make a group.
    pub partition: Vec<usize>,
    /// The order within a group.
    pub order: Vec<SortKey>,
    /// Rows kept per group.
    pub n: u64,
    /// The columns written: a result column, or `None` for the row number.
    pub output: Vec<Option<usize>>,
    /// Their names.
    pub names: Vec<String>,
}

/// The parts of a Top-N query before the query inside it is compiled.
pub(super) struct Pattern {
    window: ast::WindowSpec,
    n: u64,
    rownum: String,
    /// The outer select list: `None` for `*`.
    outer: Option<Vec<(String, String)>>,
    /// The columns the query inside names over a subquery it reads (what
    /// the outer `*` gives before the row number); `None`: all of them.
    inner: Option<Vec<String>>,
    at: Location,
}

fn is_row_number(item: &SelectItem) -> Option<(&ast::Function, String)> {
    let (e, alias) = match item {
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
        SelectItem::UnnamedExpr(e) => (e, None),
        _ => return None,
    };
    match e {
        SExpr::Function(f) if f.name.to_string().eq_ignore_ascii_case("ROW_NUMBER") => {
            Some((f, alias.unwrap_or_else(|| "EXPR$0".into())))
        }
        _ => None,
    }
}

/// `q` split into the query inside a Top-N and its pattern, or `q` as it
/// is when it is not one.
pub(super) fn split(
    q: ast::Query,
    views: &[super::views::View],
    at: Location,
) -> Err<(ast::Query, Option<Pattern>)> {
    let SetExpr::Select(outer) = &*q.body else {
        return Ok((q, None));
    };
    let [from] = &outer.from[..] else {
        return Ok((q, None));
    };
    let TableFactor::Derived { subquery, .. } = &from.relation else {
        return Ok((q, None));
    };
    let SetExpr::Select(inner) = &*subquery.body else {
        return Ok((q, None));
    };
    let Some(pos) = inner
        .projection
        .iter()
        .position(|i| is_row_number(i).is_some())
    else {
        return Ok((q, None));
    };
    let at = loc_of(&outer.select_token.0, at);
    let how = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY x DESC) AS rownum FROM …) WHERE rownum <= 3";
    let (f, rownum) = is_row_number(&inner.projection[pos]).expect("found");
    let Some(ast::WindowType::WindowSpec(window)) = &f.over else {
        return Err(SqlError::unsupported(
            at,
            "ROW_NUMBER() without an inline OVER (PARTITION BY … ORDER BY …)",
            how,
        ));
    };
    if !from.joins.is_empty()
        || outer.group_by != ast::GroupByExpr::Expressions(vec![], vec![])
        || outer.having.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
    {
        return Err(SqlError::unsupported(
            at,
            "a Top-N query with joins, GROUP BY, HAVING, ORDER BY or LIMIT around it",
            how,
        ));
    }
    let n =
        match &outer.selection {
            Some(w) => rows_kept(w, &rownum).ok_or_else(|| {
                SqlError::unsupported(
                    loc_of(w, at),
                    &format!("WHERE {w} around ROW_NUMBER()"),
                    &format!(
                        "WHERE {rownum} <= n (window Top-N) or {rownum} = 1 (window deduplication)"
                    ),
                )
            })?,
            None => return Err(SqlError::unsupported(
                at,
                "ROW_NUMBER() without WHERE rownum <= n (a row number over every row of a window)",
                how,
            )),
        };
    let outer_cols = match &outer.projection[..] {
        [SelectItem::Wildcard(_)] => None,
        items => {
            let mut cols = Vec::new();
            for item in items {
                let (e, alias) = match item {
                    SelectItem::UnnamedExpr(e) => (e, None),
                    SelectItem::ExprWithAlias { expr, alias } => (expr, Some(&alias.value)),
                    other => {
                        return Err(SqlError::unsupported(
                            loc_of(other, at),
                            &format!("`{other}` around a Top-N"),
                            "name the inner query's columns (or *) in the outer SELECT",
                        ))
                    }
                };
                let name = match e {
                    SExpr::Identifier(id) => id.value.clone(),
                    SExpr::CompoundIdentifier(v) => {
                        v.last().map_or(String::new(), |i| i.value.clone())
                    }
                    other => {
                        return Err(SqlError::unsupported(
                            loc_of(other, at),
                            &format!("the expression `{other}` around a Top-N"),
                            "compute it inside: the outer SELECT of a Top-N names columns",
                        ))
                    }
                };
                let shown = alias.cloned().unwrap_or_else(|| name.clone());
                cols.push((name, shown));
            }
            Some(cols)
        }
    };
    let window = window.clone();
    // The query inside, without its ROW_NUMBER() column.
    let mut inner_q = (**subquery).clone();
    if let SetExpr::Select(s) = &mut *inner_q.body {
        s.projection.remove(pos);
    }
    // `SELECT *, ROW_NUMBER() … FROM (a window aggregation)` (or its
    // columns by name): the Top-N is over the aggregation's rows; the
    // names are what `*` gives outside.
    let mut inner_cols = None;
    if let (SetExpr::Select(s), [only]) = (&*inner_q.body, &inner.from[..]) {
        let plain = s.selection.is_none()
            && s.having.is_none()
            && s.group_by == ast::GroupByExpr::Expressions(vec![], vec![])
            && only.joins.is_empty();
        let names: Option<Vec<String>> = s
            .projection
            .iter()
            .map(|i| match i {
                SelectItem::UnnamedExpr(SExpr::Identifier(id)) => Some(Some(id.value.clone())),
                SelectItem::Wildcard(_) => Some(None),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| match &v[..] {
                [None] => Some(Vec::new()),
                _ => v.into_iter().collect(),
            });
        // What it reads: a subquery, or a view or `WITH` query (without
        // column names of its own) by name.
        let read: Option<ast::Query> = match &only.relation {
            TableFactor::Derived { subquery: sub, .. } => Some((**sub).clone()),
            TableFactor::Table { name, .. } => {
                let name = name.to_string();
                let cte = q.with.as_ref().and_then(|w| {
                    w.cte_tables.iter().find(|c| {
                        c.alias.name.value.eq_ignore_ascii_case(&name) && c.alias.columns.is_empty()
                    })
                });
                match cte {
                    Some(c) => Some((*c.query).clone()),
                    None => views
                        .iter()
                        .find(|v| v.name.eq_ignore_ascii_case(&name) && v.columns.is_empty())
                        .map(|v| (*v.query).clone()),
                }
            }
            _ => None,
        };
        if let (true, Some(names), Some(read)) = (plain, names, read) {
            if !names.is_empty() {
                inner_cols = Some(names);
            }
            inner_q = read;
        }
    }
    // The outer query's `WITH` stays visible inside.
    if inner_q.with.is_none() {
        inner_q.with = q.with.clone();
    }
    Ok((
        inner_q,
        Some(Pattern {
            window,
            n,
            rownum,
            outer: outer_cols,
            inner: inner_cols,
            at,
        }),
    ))
}

/// `rownum <= n`, `rownum < n`, `rownum = 1` (and mirrored): the rows kept.
fn rows_kept(w: &SExpr, rownum: &str) -> Option<u64> {
    let SExpr::BinaryOp { left, op, right } = w else {
        return None;
    };
    let is_rownum =
        |e: &SExpr| matches!(e, SExpr::Identifier(id) if id.value.eq_ignore_ascii_case(rownum));
    let num = |e: &SExpr| match e {
        SExpr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    };
    use ast::BinaryOperator as B;
    let (op, n) = if is_rownum(left) {
        (op.clone(), num(right)?)
    } else if is_rownum(right) {
        let flipped = match op {
            B::GtEq => B::LtEq,
            B::Gt => B::Lt,
            B::Eq => B::Eq,
            _ => return None,
        };
        (flipped, num(left)?)
    } else {
        return None;
    };
    match op {
        B::LtEq => Some(n),
        B::Lt => Some(n.saturating_sub(1)),
        B::Eq if n == 1 => Some(1),
        _ => None,
    }
}

impl Pattern {
    /// The Top-N over `q`'s result columns (the query inside, compiled).
    pub(super) fn resolve(self, q: &Query) -> Err<TopN> {
        let at = self.at;
        let col = |name: &str| {
            q.columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
        };
        let names = || {
            q.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut partition = Vec::new();
        for p in &self.window.partition_by {
            let name = match p {
                SExpr::Identifier(id) => id.value.clone(),
                other => other.to_string(),
            };
            let Some(c) = col(&name) else {
                return Err(SqlError::at(
                    loc_of(p, at),
                    format!("PARTITION BY {name}: not a column of the query inside"),
                    format!("partition by its columns: {}", names()),
                ));
            };
            partition.push(c);
        }
        let has = |n: &str| {
            partition
                .iter()
                .any(|&c| q.columns[c].name.eq_ignore_ascii_case(n))
        };
        if !has("window_start") || !has("window_end") {
            return Err(SqlError::unsupported(
                at,
                "a Top-N that is not per window (Flink's unbounded Top-N updates its rows as they come)",
                "PARTITION BY window_start, window_end[, …] over a window aggregation or a window TVF",
            ));
        }
        if self.window.window_frame.is_some() {
            return Err(SqlError::unsupported(
                at,
                "a frame in ROW_NUMBER()'s OVER",
                "OVER (PARTITION BY window_start, window_end ORDER BY …)",
            ));
        }
        if self.window.order_by.is_empty() {
            return Err(SqlError::at(
                at,
                "ROW_NUMBER() needs an ORDER BY in its OVER",
                "OVER (PARTITION BY window_start, window_end ORDER BY price DESC)",
            ));
        }
        let order = super::plan::order_of(
            &ast::OrderBy {
                kind: ast::OrderByKind::Expressions(self.window.order_by.clone()),
                interpolate: None,
            },
            &q.columns,
            at,
        )?;
        let (output, names) = match &self.outer {
            None => {
                let mut out: Vec<Option<usize>> = Vec::new();
                let mut shown = Vec::new();
                match &self.inner {
                    None => {
                        out.extend((0..q.columns.len()).map(Some));
                        shown.extend(q.columns.iter().map(|c| c.name.clone()));
                    }
                    Some(cols) => {
                        for name in cols {
                            let Some(c) = col(name) else {
                                return Err(SqlError::at(
                                    at,
                                    format!("`{name}` is not a column of the query it reads"),
                                    format!("use one of: {}", names()),
                                ));
                            };
                            out.push(Some(c));
                            shown.push(q.columns[c].name.clone());
                        }
                    }
                }
                out.push(None);
                shown.push(self.rownum.clone());
                (out, shown)
            }
            Some(cols) => {
                let mut out = Vec::new();
                let mut shown = Vec::new();
                for (name, alias) in cols {
                    if name.eq_ignore_ascii_case(&self.rownum) {
                        out.push(None);
                    } else {
                        let Some(c) = col(name) else {
                            return Err(SqlError::at(
                                at,
                                format!("`{name}` is not a column of the query inside the Top-N"),
                                format!("use one of: {}, {}", names(), self.rownum),
                            ));
                        };
                        out.push(Some(c));
                    }
                    shown.push(alias.clone());
                }
                (out, shown)
            }
        };
        Ok(TopN {
            partition,
            order,
            n: self.n,
            output,
            names,
        })
    }
}

/// One group's kept rows: (sort cells, arrival, the row's cells).
type Kept = Vec<(Vec<Option<SortCell>>, u64, Vec<String>)>;

/// A writer that takes `weir replay`'s CSV result rows of the query inside
/// a Top-N and keeps each group's first rows ([`TopNWriter::finish`]
/// writes them).
pub struct TopNWriter<'q> {
    t: &'q TopN,
    q: &'q Query,
    /// The part of a row not yet complete (it starts at a row's start,
    /// where no quote is open).
    buf: Vec<u8>,
    header: bool,
    /// Groups by their partition cells, in order of first appearance.
    groups: Vec<(Vec<String>, Kept)>,
    index: std::collections::HashMap<Vec<String>, usize>,
    seq: u64,
}

impl<'q> TopNWriter<'q> {
    /// A writer for `t` over `q`'s result rows.
    pub fn new(t: &'q TopN, q: &'q Query) -> Self {
        TopNWriter {
            t,
            q,
            buf: Vec::new(),
            header: true,
            groups: Vec::new(),
            index: Default::default(),
            seq: 0,
        }
    }

    fn row(&mut self, line: &[u8]) {
        if std::mem::take(&mut self.header) {
            return;
        }
        let cells = split_csv(String::from_utf8_lossy(line).trim_end_matches(['\n', '\r']));
        let part: Vec<String> = self
            .t
            .partition
            .iter()
            .map(|&c| cells.get(c).cloned().unwrap_or_default())
            .collect();
        let key = sort_cells(&cells, &self.t.order, self.q);
        let g = match self.index.get(&part) {
            Some(&g) => g,
            None => {
                self.groups.push((part.clone(), Vec::new()));
                self.index.insert(part, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let kept = &mut self.groups[g].1;
        let seq = self.seq;
        self.seq += 1;
        // Ties keep their arrival order: a new row goes after its equals.
        let at = kept.partition_point(|(k, _, _)| compare_sort(&self.t.order, k, &key).is_le());
        if (at as u64) < self.t.n {
            kept.insert(at, (key, seq, cells));
            kept.truncate(self.t.n as usize);
        }
    }

    /// Writes the header and each group's rows, in `rownum` order, to
    /// `out`; returns how many rows.
    pub fn finish(mut self, out: &mut dyn Write) -> io::Result<u64> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.row(&rest);
        }
        let mut b = Vec::new();
        for (i, name) in self.t.names.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_text(&mut b, name);
        }
        b.push(b'\n');
        let mut rows = 0;
        for (_, kept) in &self.groups {
            for (r, (_, _, cells)) in kept.iter().enumerate() {
                for (i, o) in self.t.output.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    match o {
                        Some(c) => push_text(&mut b, cells.get(*c).map_or("", String::as_str)),
                        None => b.extend_from_slice((r + 1).to_string().as_bytes()),
                    }
                }
                b.push(b'\n');
                rows += 1;
            }
            out.write_all(&b)?;
            b.clear();
        }
        out.write_all(&b)?;
        out.flush()?;
        Ok(rows)
    }
}

impl Write for TopNWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.buf);
        let mut quoted = false;
        let ends: Vec<usize> = row_ends(&buf, &mut quoted).collect();
        let mut start = 0;
        for e in ends {
            self.row(&buf[start..=e]);
            start = e + 1;
        }
        self.buf = buf[start..].to_vec();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
