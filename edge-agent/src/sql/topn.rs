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

#[cfg(feature = "host-tools")]
use std::io::{self, Write};

use sqlparser::ast::{self, Expr as SExpr, SelectItem, SetExpr, TableFactor};
use sqlparser::tokenizer::Location;

#[cfg(feature = "host-tools")]
use super::exec::{compare_sort, row_ends, sort_cells, split_csv, SortCell};
#[cfg(feature = "host-tools")]
use super::plan::loc_of;
use super::plan::{Query, SortKey};
use super::{Err, SqlError};
#[cfg(feature = "host-tools")]
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
    /// Window deduplication keeping the last row (one row, by a time
    /// column descending): a row of the same time replaces the one kept,
    /// as Flink's deduplication does; otherwise ties keep the first.
    pub ties_last: bool,
}

#[cfg(feature = "host-tools")]
/// The parts of a Top-N query before the query inside it is compiled
/// (names only: the syntax tree is moved, never cloned, whose derived
/// `Clone` would weigh on the gateway binary).
pub(super) struct Pattern {
    /// `PARTITION BY` names, where each is.
    partition: Vec<(String, Location)>,
    /// `ORDER BY` names: (name, DESC, NULLS FIRST given), where each is.
    order: Vec<(String, bool, Option<bool>, Location)>,
    /// A frame was given (refused).
    framed: bool,
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

#[cfg(feature = "host-tools")]
fn name_of(e: &SExpr) -> String {
    super::plan::ident_name(e).map_or_else(|| e.to_string(), |i| i.value.clone())
}

#[cfg(feature = "host-tools")]
/// What the query inside a Top-N reads, when it only names its columns:
/// a subquery, or a `WITH` query or view (without column names of its
/// own) by name.
enum Reads {
    Subquery,
    With(usize),
    View(usize),
}

#[cfg(feature = "host-tools")]
/// `q` split into the query inside a Top-N and its pattern, or `q` as it
/// is when it is not one. A view the Top-N reads by name is taken out of
/// `views` (its query becomes the query inside).
pub(super) fn split(
    q: ast::Query,
    views: &mut Vec<super::views::View>,
    at: Location,
) -> Err<(ast::Query, Option<Pattern>)> {
    let Some((pattern, pos, reads)) = pattern_of(&q, views, at)? else {
        return Ok((q, None));
    };
    // Moved out of `q`: the query inside, without its ROW_NUMBER() column.
    let ast::Query { body, mut with, .. } = q;
    let SetExpr::Select(outer) = *body else {
        unreachable!("checked by pattern_of")
    };
    let TableFactor::Derived { subquery, .. } =
        outer.from.into_iter().next().expect("one").relation
    else {
        unreachable!("checked by pattern_of")
    };
    let mut inner_q = *subquery;
    if let SetExpr::Select(s) = &mut *inner_q.body {
        s.projection.remove(pos);
    }
    let read = |inner_q: ast::Query, with: &mut Option<ast::With>, views: &mut Vec<_>| match reads {
        None => inner_q,
        Some(Reads::Subquery) => {
            let SetExpr::Select(s) = *inner_q.body else {
                unreachable!("checked by pattern_of")
            };
            let TableFactor::Derived { subquery, .. } =
                s.from.into_iter().next().expect("one").relation
            else {
                unreachable!("checked by pattern_of")
            };
            *subquery
        }
        Some(Reads::With(i)) => {
            let w = with.as_mut().expect("checked by pattern_of");
            *w.cte_tables.remove(i).query
        }
        Some(Reads::View(i)) => {
            let v: super::views::View = views.remove(i);
            *v.query
        }
    };
    let mut inner_q = read(inner_q, &mut with, views);
    // The outer query's `WITH` stays visible inside.
    if inner_q.with.is_none() {
        inner_q.with = with;
    }
    Ok((inner_q, Some(pattern)))
}

#[cfg(feature = "host-tools")]
/// Whether `q` is a Top-N: its pattern, the place of the `ROW_NUMBER()`
/// column in the query inside, and what that query reads when it only
/// names columns of it.
fn pattern_of(
    q: &ast::Query,
    views: &[super::views::View],
    at: Location,
) -> Err<Option<(Pattern, usize, Option<Reads>)>> {
    let SetExpr::Select(outer) = &*q.body else {
        return Ok(None);
    };
    let [from] = &outer.from[..] else {
        return Ok(None);
    };
    let TableFactor::Derived { subquery, .. } = &from.relation else {
        return Ok(None);
    };
    let SetExpr::Select(inner) = &*subquery.body else {
        return Ok(None);
    };
    let Some(pos) = inner
        .projection
        .iter()
        .position(|i| is_row_number(i).is_some())
    else {
        return Ok(None);
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
        || !super::plan::no_group_by(&outer.group_by)
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
                if super::plan::ident_name(e).is_none() {
                    return Err(SqlError::unsupported(
                        loc_of(e, at),
                        &format!("the expression `{e}` around a Top-N"),
                        "compute it inside: the outer SELECT of a Top-N names columns",
                    ));
                }
                let name = name_of(e);
                let shown = alias.cloned().unwrap_or_else(|| name.clone());
                cols.push((name, shown));
            }
            Some(cols)
        }
    };
    let partition = window
        .partition_by
        .iter()
        .map(|p| (name_of(p), loc_of(p, at)))
        .collect();
    let mut order = Vec::new();
    for o in &window.order_by {
        let desc = match &o.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(ast::OrderBySort::Using(_)) => {
                return Err(SqlError::unsupported(
                    loc_of(&o.expr, at),
                    "ORDER BY … USING",
                    how,
                ))
            }
        };
        order.push((
            name_of(&o.expr),
            desc,
            o.options.nulls_first,
            loc_of(&o.expr, at),
        ));
    }
    // `SELECT *, ROW_NUMBER() … FROM (a window aggregation)` (or its
    // columns by name): the Top-N is over the aggregation's rows; the
    // names are what `*` gives outside.
    let mut inner_cols = None;
    let mut reads = None;
    if let [only] = &inner.from[..] {
        let plain = inner.selection.is_none()
            && inner.having.is_none()
            && super::plan::no_group_by(&inner.group_by)
            && only.joins.is_empty();
        let mut names = Some(Vec::new());
        for (i, item) in inner.projection.iter().enumerate() {
            match item {
                _ if i == pos => {}
                SelectItem::UnnamedExpr(SExpr::Identifier(id)) => {
                    if let Some(v) = names.as_mut() {
                        v.push(id.value.clone())
                    }
                }
                SelectItem::Wildcard(_) if inner.projection.len() == 2 => {}
                _ => names = None,
            }
        }
        let by_name = match &only.relation {
            TableFactor::Derived { .. } => Some(Reads::Subquery),
            TableFactor::Table { name, .. } => {
                let name = name.to_string();
                let cte = q.with.as_ref().and_then(|w| {
                    w.cte_tables.iter().position(|c| {
                        c.alias.name.value.eq_ignore_ascii_case(&name) && c.alias.columns.is_empty()
                    })
                });
                match cte {
                    Some(i) => Some(Reads::With(i)),
                    None => views
                        .iter()
                        .position(|v| v.name.eq_ignore_ascii_case(&name) && v.columns.is_empty())
                        .map(Reads::View),
                }
            }
            _ => None,
        };
        if let (true, Some(names), Some(r)) = (plain, names, by_name) {
            if !names.is_empty() {
                inner_cols = Some(names);
            }
            reads = Some(r);
        }
    }
    Ok(Some((
        Pattern {
            partition,
            order,
            framed: window.window_frame.is_some(),
            n,
            rownum,
            outer: outer_cols,
            inner: inner_cols,
            at,
        },
        pos,
        reads,
    )))
}

#[cfg(feature = "host-tools")]
/// `rownum <= n`, `rownum < n`, `rownum = 1` (and mirrored): the rows kept.
fn rows_kept(w: &SExpr, rownum: &str) -> Option<u64> {
    use ast::BinaryOperator as B;
    let SExpr::BinaryOp { left, op, right } = w else {
        return None;
    };
    let is_rownum =
        |e: &SExpr| matches!(e, SExpr::Identifier(id) if id.value.eq_ignore_ascii_case(rownum));
    let num = super::plan::literal_count;
    // (at most, strictly) with rownum on the left.
    let (le, n) = match (is_rownum(left), is_rownum(right), op) {
        (true, _, B::LtEq) | (_, true, B::GtEq) => {
            (Some(true), num(if is_rownum(left) { right } else { left })?)
        }
        (true, _, B::Lt) | (_, true, B::Gt) => (
            Some(false),
            num(if is_rownum(left) { right } else { left })?,
        ),
        (true, _, B::Eq) | (_, true, B::Eq) => {
            (None, num(if is_rownum(left) { right } else { left })?)
        }
        _ => return None,
    };
    match le {
        Some(true) => Some(n),
        Some(false) => Some(n.saturating_sub(1)),
        None if n == 1 => Some(1),
        None => None,
    }
}

#[cfg(feature = "host-tools")]
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
        for (name, l) in &self.partition {
            let Some(c) = col(name) else {
                return Err(SqlError::at(
                    *l,
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
        if self.framed {
            return Err(SqlError::unsupported(
                at,
                "a frame in ROW_NUMBER()'s OVER",
                "OVER (PARTITION BY window_start, window_end ORDER BY …)",
            ));
        }
        if self.order.is_empty() {
            return Err(SqlError::at(
                at,
                "ROW_NUMBER() needs an ORDER BY in its OVER",
                "OVER (PARTITION BY window_start, window_end ORDER BY price DESC)",
            ));
        }
        let mut order = Vec::new();
        for (name, desc, nulls_first, l) in &self.order {
            let Some(column) = col(name) else {
                return Err(SqlError::at(
                    *l,
                    format!("ORDER BY {name}: not a result column"),
                    format!("order by a column of the query inside: {}", names()),
                ));
            };
            // Flink: NULLs first ascending, last descending, unless given.
            order.push(SortKey {
                column,
                desc: *desc,
                nulls_first: nulls_first.unwrap_or(!*desc),
            });
        }
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
        let ties_last = self.n == 1
            && matches!(&order[..], [k] if k.desc
                && matches!(q.columns[k.column].ty, super::ddl::SqlType::Timestamp | super::ddl::SqlType::TimestampLtz));
        Ok(TopN {
            partition,
            order,
            n: self.n,
            output,
            names,
            ties_last,
        })
    }
}

#[cfg(feature = "host-tools")]
/// One group's kept rows: (sort cells, arrival, the row's cells).
type Kept = Vec<(Vec<Option<SortCell>>, u64, Vec<String>)>;

#[cfg(feature = "host-tools")]
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

#[cfg(feature = "host-tools")]
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
        let ties_last = self.t.ties_last;
        let at = kept.partition_point(|(k, _, _)| {
            let o = compare_sort(&self.t.order, k, &key);
            if ties_last {
                o.is_lt()
            } else {
                o.is_le()
            }
        });
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

#[cfg(feature = "host-tools")]
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

/// A gateway build (without `host-tools`) has no window Top-N: `weir run`
/// refuses one anyway (its input does not end), and the live shell too.
#[cfg(not(feature = "host-tools"))]
pub(super) enum Pattern {}

#[cfg(not(feature = "host-tools"))]
impl Pattern {
    pub(super) fn resolve(self, _q: &Query) -> Err<TopN> {
        match self {}
    }
}

/// [`split`] of a gateway build: a Top-N is refused by name.
#[cfg(not(feature = "host-tools"))]
pub(super) fn split(
    q: ast::Query,
    _views: &mut Vec<super::views::View>,
    at: Location,
) -> Err<(ast::Query, Option<Pattern>)> {
    let top_n = match &*q.body {
        SetExpr::Select(outer) => outer.from.iter().any(|f| match &f.relation {
            TableFactor::Derived { subquery, .. } => match &*subquery.body {
                SetExpr::Select(inner) => {
                    inner.projection.iter().any(|i| is_row_number(i).is_some())
                }
                _ => false,
            },
            _ => false,
        }),
        _ => false,
    };
    if top_n {
        return Err(SqlError::unsupported(
            at,
            "a window Top-N in a gateway build (weir run refuses one: its input does not end)",
            "weir replay or weir sql over a recording on a workstation build",
        ));
    }
    Ok((q, None))
}
