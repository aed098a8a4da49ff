//! Views (`CREATE [TEMPORARY] VIEW v [(cols)] AS SELECT …`) and `WITH v AS
//! (SELECT …)`, inlined into the query that reads them.
//!
//! A view is a projection and a filter of one table (or of another view):
//! `SELECT col, expr AS name, … FROM t [WHERE cond]`, with no `HAVING` or
//! `DISTINCT`. (A view that aggregates is the first query of a cascade,
//! [`Expanded::Cascade`], compiled on its own.) A query over it is rewritten, before
//! it is planned, into the same query over the table: each of the view's
//! columns becomes its expression, the view's `WHERE` is `AND`ed in front
//! of the query's, and a result column that read a renamed view column
//! keeps the view's name. The plan is then exactly the one of the query
//! written over the table by hand, so its state and operator ids are too.
//!
//! Nothing of the syntax tree is cloned: the tree's derived `Clone` would
//! bring sqlparser's whole `Statement` into the gateway's binary (42 KB).
//! The query and the views are rewritten in place, and an expression that
//! goes in several places is written as SQL text and read back.

use sqlparser::ast::{
    self, BinaryOperator, Expr as SExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, InTarget, Query, SelectItem, SetExpr, TableFactor,
};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Tokenizer};

use super::ddl::Table;
use super::dialect::{WeirDialect, TABLE_ARG};
use super::plan::{ident_loc, loc_of};
use super::{Err, SqlError};

/// Views may be defined over views this deep.
const MAX_DEPTH: usize = 16;

/// A view: `CREATE VIEW` or an item of a query's `WITH`.
#[derive(Debug, Clone)]
pub struct View {
    /// Its name.
    pub name: String,
    /// Its column names, when given after the name (`v (a, b)`).
    pub columns: Vec<Ident>,
    /// Its query.
    pub query: Box<Query>,
    /// Where it is defined.
    pub at: Location,
}

/// What a view reads: its table, each of its columns as an expression over
/// that table, and its condition over that table (expressions as SQL text).
struct Resolved {
    /// The table.
    base: String,
    /// (column name, expression over the table).
    cols: Vec<(String, String)>,
    /// The conditions of the view and of the views it reads, `AND`ed.
    filter: Option<String>,
    /// The table's columns (names), to tell a column the view leaves out
    /// from a name that is not a column at all (`window_start`).
    base_cols: Vec<String>,
    /// The views read, outermost first.
    chain: Vec<String>,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Reads back an expression written by [`std::fmt::Display`], without
/// places (errors in it fall back to the statement's).
fn read(text: &str, at: Location) -> Err<SExpr> {
    let bad = |e: String| {
        SqlError::at(
            at,
            format!("cannot read back a view's expression `{text}`: {e}"),
            "write the view's expression into the query over its table",
        )
    };
    let mut tokens = Tokenizer::new(&WeirDialect, text)
        .tokenize_with_location()
        .map_err(|e| bad(e.to_string()))?;
    for t in &mut tokens {
        t.span = Span::empty();
    }
    Parser::new(&WeirDialect)
        .with_tokens_with_locations(tokens)
        .parse_expr()
        .map_err(|e| bad(e.to_string()))
}

fn and(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("({a}) AND ({b})")),
        (a, b) => a.or(b),
    }
}

/// The result columns a table function's `SELECT *` expands to over a
/// view: named after the table's columns by the planner, renamed here
/// after the view's.
#[derive(Debug, Default)]
pub struct StarNames {
    /// The `*`'s place in the `SELECT` list.
    pub at: usize,
    /// Items in the `SELECT` list.
    pub items: usize,
    /// (table column, the view's name for it).
    pub names: Vec<(String, String)>,
}

impl StarNames {
    /// Renames the columns the `*` gave, among `names` (all result columns).
    pub fn apply(&self, names: &mut [&mut String]) {
        let count = (names.len() + 1).saturating_sub(self.items);
        for n in names.iter_mut().skip(self.at).take(count) {
            if let Some((_, v)) = self.names.iter().find(|(t, _)| eq(t, n)) {
                **n = v.clone();
            }
        }
    }
}

/// A query with its views dealt with ([`expand`]).
#[derive(Debug)]
pub enum Expanded {
    /// The query over tables only, what was inlined (for `EXPLAIN`), and
    /// the names of a table function's `SELECT *` over a view.
    Inlined(Query, Option<String>, Option<StarNames>),
    /// The query reads a view that aggregates (`GROUP BY`): a cascade of
    /// two queries, the view's rows the input of `outer`, which reads them
    /// as a table named like the view.
    Cascade {
        /// The query over the view.
        outer: Query,
        /// The view.
        inner: View,
        /// The views defined before it, which it may read.
        views: Vec<View>,
    },
}

/// Rewrites `q` to read tables only (see the module docs), and says which
/// views it inlined, for `EXPLAIN`. A query that reads no view comes back
/// as it is, without its `WITH`; one that reads a view that aggregates
/// comes back as a cascade.
///
/// # Errors
/// A view that is not a projection and filter of one table, a column a
/// view does not have, a view that reads itself.
pub fn expand(mut q: Query, mut views: Vec<View>, tables: &[Table], at: Location) -> Err<Expanded> {
    // The query's own WITH items hide a view or table of the same name.
    if let Some(w) = q.with.take() {
        if w.recursive {
            return Err(SqlError::unsupported(
                at,
                "WITH RECURSIVE",
                "WITH v AS (SELECT … FROM t WHERE …)",
            ));
        }
        for c in w.cte_tables {
            let vat = ident_loc(&c.alias.name, at);
            if c.materialized.is_some() || c.from.is_some() {
                return Err(SqlError::unsupported(
                    vat,
                    "MATERIALIZED and FROM in a WITH item",
                    "WITH v AS (SELECT … FROM t WHERE …)",
                ));
            }
            views.retain(|v| !eq(&v.name, &c.alias.name.value));
            views.push(View {
                name: c.alias.name.value,
                columns: c.alias.columns.into_iter().map(|d| d.name).collect(),
                query: c.query,
                at: vat,
            });
        }
    }
    Ok(match inline(&mut q, &views, tables, at)? {
        Inline::Nothing => Expanded::Inlined(q, None, None),
        Inline::View(r, star) => {
            let note = format!(
                "view {} over table `{}`: inlined (its columns are expressions over the table, its WHERE is ANDed to the query's)\n",
                r.chain
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(" over "),
                r.base
            );
            Expanded::Inlined(q, Some(note), star)
        }
        Inline::CascadeAt(i) => {
            let inner = views.remove(i);
            views.truncate(i);
            Expanded::Cascade {
                outer: q,
                inner,
                views,
            }
        }
        Inline::Cascade(inner) => Expanded::Cascade {
            outer: q,
            inner: *inner,
            views,
        },
    })
}

/// What [`inline`] did.
enum Inline {
    /// The query reads no view.
    Nothing,
    /// It read this view, now inlined (and a table function's `*` over it).
    View(Box<Resolved>, Option<StarNames>),
    /// It reads the view at this index, which aggregates: left to a cascade.
    CascadeAt(usize),
    /// It reads this subquery, which aggregates: left to a cascade.
    Cascade(Box<View>),
}

/// Whether view `v` aggregates (a cascade's first query).
fn aggregates(v: &View) -> bool {
    match &*v.query.body {
        SetExpr::Select(sel) => {
            !matches!(&sel.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
        }
        _ => false,
    }
}

/// A plain table reference.
fn table_named(name: &str) -> TableFactor {
    TableFactor::Table {
        name: ast::ObjectName::from(vec![Ident::new(name)]),
        alias: None,
        args: None,
        with_hints: Vec::new(),
        version: None,
        with_ordinality: false,
        partitions: Vec::new(),
        json_path: None,
        sample: None,
        index_directives: Vec::new(),
        inheritance: None,
    }
}

/// [`expand`] in place.
fn inline(q: &mut Query, views: &[View], tables: &[Table], at: Location) -> Err<Inline> {
    let SetExpr::Select(sel) = &mut *q.body else {
        return Ok(Inline::Nothing);
    };
    let [from] = &mut sel.from[..] else {
        return Ok(Inline::Nothing);
    };
    let index_of = |name: &str| views.iter().rposition(|v| eq(&v.name, name));
    let mut tf = false;
    // A query without GROUP BY gives rows: its `*` is the view's columns
    // (then a window TVF's bounds), expanded here.
    let window_tvf = matches!(&from.relation, TableFactor::TableFunction { expr: SExpr::Function(f), .. }
        if ["TUMBLE", "HOP", "CUMULATE", "SESSION"].iter().any(|w| eq(&f.name.to_string(), w)));
    let per_row = matches!(&sel.group_by, GroupByExpr::Expressions(v, _) if v.is_empty())
        && sel.having.is_none();
    // The view the query reads, by name in FROM or in a table function's
    // `TABLE v [PARTITION BY …]`, or a subquery in FROM.
    let r = match &mut from.relation {
        TableFactor::Table { name, .. } => {
            let Some(i) = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .and_then(|id| index_of(&id.value))
            else {
                return Ok(Inline::Nothing);
            };
            if aggregates(&views[i]) {
                return Ok(Inline::CascadeAt(i));
            }
            let r = resolve(&views[i], views, tables, 0)?;
            *name = ast::ObjectName::from(vec![Ident::new(&r.base)]);
            r
        }
        TableFactor::Derived {
            lateral: false,
            sample: None,
            ..
        } => {
            let TableFactor::Derived {
                subquery, alias, ..
            } = std::mem::replace(&mut from.relation, table_named("subquery"))
            else {
                unreachable!("matched above")
            };
            let qat = loc_of(&*subquery, at);
            let (name, columns) = match alias {
                Some(a) => (
                    a.name.value,
                    a.columns.into_iter().map(|c| c.name).collect(),
                ),
                None => ("subquery".to_string(), Vec::new()),
            };
            let v = View {
                name,
                columns,
                query: subquery,
                at: qat,
            };
            if aggregates(&v) {
                from.relation = table_named(&v.name);
                return Ok(Inline::Cascade(Box::new(v)));
            }
            let r = resolve(&v, views, tables, 0)?;
            from.relation = table_named(&r.base);
            r
        }
        TableFactor::TableFunction {
            expr: SExpr::Function(f),
            ..
        } => {
            let FunctionArguments::List(list) = &mut f.args else {
                return Ok(Inline::Nothing);
            };
            let table = list.args.iter_mut().find_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(SExpr::Prefixed { prefix, value }))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(SExpr::Prefixed { prefix, value }),
                    ..
                } if prefix.value == TABLE_ARG => match &mut **value {
                    SExpr::Tuple(items) => Some(items),
                    _ => None,
                },
                _ => None,
            });
            let Some(items) = table else {
                return Ok(Inline::Nothing);
            };
            let Some(i) = items.first().and_then(|i| match i {
                SExpr::Identifier(id) => index_of(&id.value),
                _ => None,
            }) else {
                return Ok(Inline::Nothing);
            };
            if aggregates(&views[i]) {
                return Ok(Inline::CascadeAt(i));
            }
            let r = resolve(&views[i], views, tables, 0)?;
            items[0] = SExpr::Identifier(Ident::new(&r.base));
            // PARTITION BY keys name columns.
            for k in items.iter_mut().skip(1) {
                column_of(&r, k, at, "PARTITION BY by")?;
            }
            // DESCRIPTOR(…) names columns; the other arguments are values.
            for a in &mut list.args {
                match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    } => match e {
                        SExpr::Prefixed { .. } => {}
                        SExpr::Function(d)
                            if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") =>
                        {
                            if let FunctionArguments::List(l) = &mut d.args {
                                for c in &mut l.args {
                                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(c)) = c {
                                        column_of(&r, c, at, "DESCRIPTOR of")?;
                                    }
                                }
                            }
                        }
                        _ => subst(&r, e, at, None)?,
                    },
                    _ => {}
                }
            }
            tf = true;
            r
        }
        _ => return Ok(Inline::Nothing),
    };
    // A table function's `*` is planned over the table: its columns are
    // renamed after the view's plain columns.
    let stars: Vec<usize> = (sel.projection.iter().enumerate())
        .filter(|(_, i)| matches!(i, SelectItem::Wildcard(_)))
        .map(|(i, _)| i)
        .collect();
    let star = match stars[..] {
        [pos] if tf && !(window_tvf && per_row) => {
            let mut names = Vec::new();
            for (view, text) in &r.cols {
                if let Ok(SExpr::Identifier(id)) = read(text, at) {
                    if !eq(&id.value, view) {
                        names.push((id.value, view.clone()));
                    }
                }
            }
            Some(StarNames {
                at: pos,
                items: sel.projection.len(),
                names,
            })
        }
        _ => None,
    };
    for item in &mut sel.projection {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let id = match e {
                    SExpr::Identifier(id) => Some(id.clone()),
                    _ => None,
                };
                subst(&r, e, at, None)?;
                if let Some(id) = id {
                    // A renamed or computed view column keeps its name.
                    if !matches!(&*e, SExpr::Identifier(b) if eq(&b.value, &id.value)) {
                        let expr = std::mem::replace(e, SExpr::Identifier(id.clone()));
                        *item = SelectItem::ExprWithAlias { expr, alias: id };
                    }
                }
            }
            SelectItem::ExprWithAlias { expr, .. } => subst(&r, expr, at, None)?,
            _ => {}
        }
    }
    if per_row && (!tf || window_tvf) && !stars.is_empty() {
        let mut items = Vec::new();
        for item in std::mem::take(&mut sel.projection) {
            if !matches!(item, SelectItem::Wildcard(_)) {
                items.push(item);
                continue;
            }
            for (name, e) in &r.cols {
                let expr = read(e, at)?;
                items.push(match &expr {
                    SExpr::Identifier(id) if eq(&id.value, name) => SelectItem::UnnamedExpr(expr),
                    _ => SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::new(name),
                    },
                });
            }
            if window_tvf {
                for w in ["window_start", "window_end", "window_time"] {
                    items.push(SelectItem::UnnamedExpr(SExpr::Identifier(Ident::new(w))));
                }
            }
        }
        sel.projection = items;
    }
    if let Some(e) = &mut sel.selection {
        subst(&r, e, at, None)?;
    }
    if let Some(f) = &r.filter {
        let view_where = read(f, at)?;
        sel.selection = Some(match sel.selection.take() {
            Some(w) => SExpr::BinaryOp {
                left: Box::new(SExpr::Nested(Box::new(view_where))),
                op: BinaryOperator::And,
                right: Box::new(SExpr::Nested(Box::new(w))),
            },
            None => view_where,
        });
    }
    if let GroupByExpr::Expressions(v, _) = &mut sel.group_by {
        for e in v {
            subst(&r, e, at, None)?;
        }
    }
    if let Some(h) = &mut sel.having {
        subst(&r, h, at, None)?;
    }
    Ok(Inline::View(Box::new(r), star))
}

/// A view's columns over its table, recursively through views it reads
/// (those before it in `views`).
fn resolve(v: &View, views: &[View], tables: &[Table], depth: usize) -> Err<Resolved> {
    if depth >= MAX_DEPTH {
        return Err(SqlError::at(
            v.at,
            format!(
                "view `{}` reads itself, or views nest more than {MAX_DEPTH} deep",
                v.name
            ),
            "define each view over a table or an earlier view",
        ));
    }
    let q = &v.query;
    let at = v.at;
    let cascade = || {
        SqlError::unsupported(
            at,
            &format!(
                "view `{}`: HAVING, DISTINCT, a join, a window TVF without GROUP BY, or reading a view that aggregates",
                v.name
            ),
            "a view that selects and filters one table (CREATE VIEW v AS SELECT sensor, ts, temp * 1.8 + 32 AS temp_f FROM t WHERE …), or one that aggregates a window TVF, read by the query itself (a cascade)",
        )
    };
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Err(cascade());
    }
    let SetExpr::Select(sel) = &*q.body else {
        return Err(cascade());
    };
    if aggregates(v)
        || sel.having.is_some()
        || sel.distinct.is_some()
        || sel.top.is_some()
        || sel.qualify.is_some()
        || !sel.named_window.is_empty()
        || !sel.lateral_views.is_empty()
    {
        return Err(cascade());
    }
    let [from] = &sel.from[..] else {
        return Err(cascade());
    };
    if !from.joins.is_empty() {
        return Err(cascade());
    }
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return Err(cascade());
    };
    let inner_name = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.as_str())
        .unwrap_or_default();
    // A view of the same name further up is the one it reads (a `WITH`
    // item named like a table reads the table).
    let me = views.iter().rposition(|o| std::ptr::eq(o, v));
    let earlier = &views[..me.unwrap_or(views.len())];
    let inner = match earlier.iter().rposition(|o| eq(&o.name, inner_name)) {
        Some(i) => resolve(&earlier[i], earlier, tables, depth + 1)?,
        None => {
            let Some(t) = tables.iter().find(|t| eq(&t.name, inner_name)) else {
                return Err(SqlError::at(
                    loc_of(name, at),
                    format!(
                        "view `{}` reads `{inner_name}`, which is no table or view",
                        v.name
                    ),
                    "create the table (or the view) before the view that reads it",
                ));
            };
            let mut names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
            if let Some(rt) = &t.rowtime {
                if !names.iter().any(|n| eq(n, &rt.name)) {
                    names.push(rt.name.clone());
                }
            }
            Resolved {
                base: t.name.clone(),
                cols: names
                    .iter()
                    .map(|n| (n.clone(), format!("`{}`", n.replace('`', "``"))))
                    .collect(),
                filter: None,
                base_cols: names,
                chain: Vec::new(),
            }
        }
    };
    // An expression of the view over what it reads, as text over the table.
    let over = |e: &SExpr| -> Err<String> {
        let mut x = read(&e.to_string(), at)?;
        subst(&inner, &mut x, at, Some(&v.name))?;
        Ok(x.to_string())
    };
    let mut cols: Vec<(String, String)> = Vec::new();
    for (i, item) in sel.projection.iter().enumerate() {
        match item {
            SelectItem::Wildcard(_) => {
                cols.extend(inner.cols.iter().map(|(n, e)| (n.clone(), e.clone())))
            }
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    SExpr::Identifier(id) => id.value.clone(),
                    SExpr::CompoundIdentifier(p) => {
                        p.last().map(|i| i.value.clone()).unwrap_or_default()
                    }
                    // Flink's name for an unnamed expression.
                    _ => format!("EXPR${i}"),
                };
                cols.push((name, over(e)?));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                cols.push((alias.value.clone(), over(expr)?));
            }
            other => {
                return Err(SqlError::unsupported(
                    loc_of(other, at),
                    &format!("`{other}` in a view"),
                    "columns, `*` and `expression AS name`",
                ))
            }
        }
    }
    if !v.columns.is_empty() {
        if v.columns.len() != cols.len() {
            return Err(SqlError::at(
                at,
                format!(
                    "view `{}` names {} columns, its query gives {}",
                    v.name,
                    v.columns.len(),
                    cols.len()
                ),
                "name as many columns as the query selects",
            ));
        }
        for (c, n) in cols.iter_mut().zip(&v.columns) {
            c.0 = n.value.clone();
        }
    }
    if let Some(d) = cols
        .iter()
        .enumerate()
        .find(|(i, c)| cols[..*i].iter().any(|o| eq(&o.0, &c.0)))
    {
        return Err(SqlError::at(
            at,
            format!("view `{}` has two columns named `{}`", v.name, d.1 .0),
            "rename one with AS",
        ));
    }
    let own = match &sel.selection {
        Some(e) => Some(over(e)?),
        None => None,
    };
    let mut chain = vec![v.name.clone()];
    chain.extend(inner.chain);
    Ok(Resolved {
        base: inner.base,
        cols,
        filter: and(inner.filter, own),
        base_cols: inner.base_cols,
        chain,
    })
}

/// `e` (a `PARTITION BY` key or a `DESCRIPTOR` column) as the table's
/// column it names.
fn column_of(r: &Resolved, e: &mut SExpr, at: Location, what: &str) -> Err<()> {
    let was = e.to_string();
    let l = loc_of(&*e, at);
    subst(r, e, at, None)?;
    match e {
        SExpr::Identifier(_) => Ok(()),
        _ => Err(SqlError::unsupported(
            l,
            &format!("{what} a view column that is an expression (`{was}`)"),
            "a view column that is a column of its table",
        )),
    }
}

/// `e` over the view's columns → over its table, in place. In a query over
/// the view (`inside` is `None`), a name that is not a view column is left
/// alone (`window_start`, a table function's result), unless it is a column
/// of the table the view leaves out; inside view `v`'s own definition
/// (`inside` is `Some(v)`), every name must be a column of what it reads.
fn subst(r: &Resolved, e: &mut SExpr, at: Location, inside: Option<&str>) -> Err<()> {
    walk(e, at, &mut |id| {
        if let Some(c) = r.cols.iter().find(|c| eq(&c.0, &id.value)) {
            return Ok(Some(read(&c.1, at)?));
        }
        let msg = match inside {
            Some(view) => format!(
                "view `{view}`: `{}` is not a column of what it reads",
                id.value
            ),
            None if r.base_cols.iter().any(|b| eq(b, &id.value)) => {
                format!("the view has no column `{}`", id.value)
            }
            None => return Ok(None),
        };
        let names: Vec<&str> = r.cols.iter().map(|c| c.0.as_str()).collect();
        Err(SqlError::at(
            ident_loc(id, at),
            msg,
            format!("use one of: {}", names.join(", ")),
        ))
    })
}

/// The column-name replacer [`walk`] calls: `None` keeps the name.
type Map<'m> = dyn FnMut(&Ident) -> Err<Option<SExpr>> + 'm;

/// Replaces, in place, each column name in `e` with what `map` gives (an
/// expression other than a name in parentheses, so precedence holds).
fn walk(e: &mut SExpr, at: Location, map: &mut Map<'_>) -> Err<()> {
    match e {
        SExpr::Identifier(id) => {
            if let Some(x) = map(id)? {
                *e = nest(x);
            }
        }
        SExpr::CompoundIdentifier(p) => {
            if let Some(x) = match p.last() {
                Some(id) => map(id)?,
                None => None,
            } {
                *e = nest(x);
            }
        }
        SExpr::Value(_) | SExpr::TypedString { .. } => {}
        SExpr::Interval(i) => walk(&mut i.value, at, map)?,
        SExpr::Nested(x)
        | SExpr::IsNull(x)
        | SExpr::IsNotNull(x)
        | SExpr::UnaryOp { expr: x, .. }
        | SExpr::Cast { expr: x, .. }
        | SExpr::Ceil { expr: x, .. }
        | SExpr::Floor { expr: x, .. } => walk(x, at, map)?,
        SExpr::BinaryOp { left, right, .. } => {
            walk(left, at, map)?;
            walk(right, at, map)?;
        }
        SExpr::Between {
            expr, low, high, ..
        } => {
            walk(expr, at, map)?;
            walk(low, at, map)?;
            walk(high, at, map)?;
        }
        SExpr::Like { expr, pattern, .. } => {
            walk(expr, at, map)?;
            walk(pattern, at, map)?;
        }
        SExpr::In {
            expr,
            target: InTarget::List(list),
            ..
        } => {
            walk(expr, at, map)?;
            for x in list {
                walk(x, at, map)?;
            }
        }
        SExpr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            if let Some(x) = operand {
                walk(x, at, map)?;
            }
            for c in conditions {
                walk(&mut c.condition, at, map)?;
                walk(&mut c.result, at, map)?;
            }
            if let Some(x) = else_result {
                walk(x, at, map)?;
            }
        }
        SExpr::Tuple(v) => {
            for x in v {
                walk(x, at, map)?;
            }
        }
        SExpr::GroupingSets(s) | SExpr::Rollup(s) | SExpr::Cube(s) => {
            for x in s.iter_mut().flatten() {
                walk(x, at, map)?;
            }
        }
        SExpr::Function(f) => {
            if let FunctionArguments::List(list) = &mut f.args {
                for a in &mut list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x))
                        | FunctionArg::Named {
                            arg: FunctionArgExpr::Expr(x),
                            ..
                        } => walk(x, at, map)?,
                        _ => {}
                    }
                }
            }
            if let Some(x) = &mut f.filter {
                walk(x, at, map)?;
            }
        }
        other => {
            return Err(SqlError::unsupported(
                loc_of(&*other, at),
                &format!("`{other}` in a query over a view"),
                "the expressions of docs/sql.md; or write the query over the view's table",
            ))
        }
    }
    Ok(())
}

/// A replacement for a name: in parentheses unless it is a name.
fn nest(x: SExpr) -> SExpr {
    match x {
        SExpr::Identifier(_) => x,
        _ => SExpr::Nested(Box::new(x)),
    }
}
