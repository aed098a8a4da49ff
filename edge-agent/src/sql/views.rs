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

use sqlparser::ast::{
    self, BinaryOperator, Expr as SExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, InTarget, Query, SelectItem, SetExpr, Spanned, TableFactor,
};
use sqlparser::tokenizer::Location;

use super::ddl::Table;
use super::dialect::TABLE_ARG;
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

/// What a view reads: its table, and each of its columns as an expression
/// over that table, and its condition over that table.
struct Resolved {
    /// The table.
    base: String,
    /// (column name, expression over the table).
    cols: Vec<(String, SExpr)>,
    /// The conditions of the view and of the views it reads, `AND`ed.
    filter: Option<SExpr>,
    /// The table's columns (names), to tell a column the view leaves out
    /// from a name that is not a column at all (`window_start`).
    base_cols: Vec<String>,
    /// The views read, outermost first.
    chain: Vec<String>,
}

fn loc(e: &impl Spanned, fallback: Location) -> Location {
    let l = e.span().start;
    if l.line == 0 {
        fallback
    } else {
        l
    }
}

fn iloc(id: &Ident, fallback: Location) -> Location {
    if id.span.start.line == 0 {
        fallback
    } else {
        id.span.start
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn and(a: Option<SExpr>, b: Option<SExpr>) -> Option<SExpr> {
    match (a, b) {
        (Some(a), Some(b)) => Some(SExpr::BinaryOp {
            left: Box::new(SExpr::Nested(Box::new(a))),
            op: BinaryOperator::And,
            right: Box::new(SExpr::Nested(Box::new(b))),
        }),
        (a, b) => a.or(b),
    }
}

/// The views a query sees: the file's, then its own `WITH` items (which
/// hide a view or table of the same name).
fn visible(q: &Query, views: &[View], at: Location) -> Err<Vec<View>> {
    let mut all = views.to_vec();
    if let Some(w) = &q.with {
        if w.recursive {
            return Err(SqlError::unsupported(
                at,
                "WITH RECURSIVE",
                "WITH v AS (SELECT … FROM t WHERE …)",
            ));
        }
        for c in &w.cte_tables {
            if c.materialized.is_some() || c.from.is_some() {
                return Err(SqlError::unsupported(
                    iloc(&c.alias.name, at),
                    "MATERIALIZED and FROM in a WITH item",
                    "WITH v AS (SELECT … FROM t WHERE …)",
                ));
            }
            all.retain(|v| !eq(&v.name, &c.alias.name.value));
            all.push(View {
                name: c.alias.name.value.clone(),
                columns: c.alias.columns.iter().map(|d| d.name.clone()).collect(),
                query: c.query.clone(),
                at: iloc(&c.alias.name, at),
            });
        }
    }
    Ok(all)
}

/// A query with its views dealt with ([`expand`]).
#[derive(Debug)]
pub enum Expanded {
    /// The query over tables only, and what was inlined, for `EXPLAIN`.
    Inlined(Query, Option<String>),
    /// The query reads a view that aggregates (`GROUP BY`): a cascade of
    /// two queries, the view's rows the input of `outer`, which reads them
    /// as a table named like the view. `views` are the views `inner` may
    /// read.
    Cascade {
        /// The query over the view.
        outer: Query,
        /// The view.
        inner: View,
        /// The views defined before it.
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
pub fn expand(q: &Query, views: &[View], tables: &[Table], at: Location) -> Err<Expanded> {
    let views = visible(q, views, at)?;
    let mut q = q.clone();
    q.with = None;
    Ok(match inline(&mut q, &views, tables, at)? {
        Inline::Nothing => Expanded::Inlined(q, None),
        Inline::View(r) => {
            let note = format!(
                "view {} over table `{}`: inlined (its columns are expressions over the table, its WHERE is ANDed to the query's)\n",
                r.chain
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(" over "),
                r.base
            );
            Expanded::Inlined(q, Some(note))
        }
        Inline::Cascade(v) => {
            let me = views.iter().position(|o| eq(&o.name, &v.name));
            let earlier = views[..me.unwrap_or(views.len())].to_vec();
            Expanded::Cascade {
                outer: q,
                inner: v,
                views: earlier,
            }
        }
    })
}

/// What [`inline`] did.
enum Inline {
    /// The query reads no view.
    Nothing,
    /// It read this view, now inlined.
    View(Box<Resolved>),
    /// It reads this view, which aggregates: left to a cascade.
    Cascade(View),
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

/// [`expand`] in place.
fn inline(q: &mut Query, views: &[View], tables: &[Table], at: Location) -> Err<Inline> {
    let SetExpr::Select(sel) = &mut *q.body else {
        return Ok(Inline::Nothing);
    };
    let [from] = &mut sel.from[..] else {
        return Ok(Inline::Nothing);
    };
    let view_of = |name: &str| views.iter().find(|v| eq(&v.name, name));
    // The view the query reads, by name in FROM or in a table function's
    // `TABLE v [PARTITION BY …]`.
    let r = match &mut from.relation {
        TableFactor::Table { name, .. } => {
            let Some(v) = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .and_then(|i| view_of(&i.value))
            else {
                return Ok(Inline::Nothing);
            };
            if aggregates(v) {
                return Ok(Inline::Cascade(v.clone()));
            }
            let r = resolve(v, views, tables, 0)?;
            *name = ast::ObjectName::from(vec![Ident::new(&r.base)]);
            r
        }
        // A subquery in FROM: a view of its own.
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias,
            sample: None,
        } => {
            let v = View {
                name: alias
                    .as_ref()
                    .map_or("subquery".to_string(), |a| a.name.value.clone()),
                columns: alias
                    .as_ref()
                    .map(|a| a.columns.iter().map(|c| c.name.clone()).collect())
                    .unwrap_or_default(),
                query: subquery.clone(),
                at: loc(&**subquery, at),
            };
            let cascade = aggregates(&v);
            let r = if cascade {
                None
            } else {
                Some(resolve(&v, views, tables, 0)?)
            };
            from.relation = TableFactor::Table {
                name: ast::ObjectName::from(vec![Ident::new(
                    r.as_ref().map_or(&v.name, |r| &r.base),
                )]),
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
            };
            match r {
                Some(r) => r,
                None => return Ok(Inline::Cascade(v)),
            }
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
            let Some(v) = items.first().and_then(|i| match i {
                SExpr::Identifier(id) => view_of(&id.value),
                _ => None,
            }) else {
                return Ok(Inline::Nothing);
            };
            if aggregates(v) {
                return Ok(Inline::Cascade(v.clone()));
            }
            let r = resolve(v, views, tables, 0)?;
            items[0] = SExpr::Identifier(Ident::new(&r.base));
            // PARTITION BY keys name columns.
            for k in items.iter_mut().skip(1) {
                *k = column_of(&r, k, at, "PARTITION BY by")?;
            }
            // DESCRIPTOR(…) names columns; the other arguments are values.
            for a in &mut list.args {
                match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    } if !matches!(e, SExpr::Prefixed { .. }) => {
                        *e = match e {
                            SExpr::Function(d)
                                if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") =>
                            {
                                let mut d = d.clone();
                                if let FunctionArguments::List(l) = &mut d.args {
                                    for c in &mut l.args {
                                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(c)) = c {
                                            *c = column_of(&r, c, at, "DESCRIPTOR of")?;
                                        }
                                    }
                                }
                                SExpr::Function(d)
                            }
                            _ => subst(&r, e, at)?,
                        }
                    }
                    _ => {}
                }
            }
            r
        }
        _ => return Ok(Inline::Nothing),
    };
    for item in &mut sel.projection {
        let new = match &*item {
            SelectItem::UnnamedExpr(e) => match e {
                SExpr::Identifier(id) => {
                    let s = subst(&r, e, at)?;
                    match &s {
                        SExpr::Identifier(b) if eq(&b.value, &id.value) => {
                            SelectItem::UnnamedExpr(s)
                        }
                        // A renamed or computed view column keeps its name.
                        _ => SelectItem::ExprWithAlias {
                            expr: s,
                            alias: id.clone(),
                        },
                    }
                }
                _ => SelectItem::UnnamedExpr(subst(&r, e, at)?),
            },
            SelectItem::ExprWithAlias { expr, alias } => SelectItem::ExprWithAlias {
                expr: subst(&r, expr, at)?,
                alias: alias.clone(),
            },
            other => other.clone(),
        };
        *item = new;
    }
    let selection = match &sel.selection {
        Some(e) => Some(subst(&r, e, at)?),
        None => None,
    };
    sel.selection = and(r.filter.clone(), selection);
    if let GroupByExpr::Expressions(v, _) = &mut sel.group_by {
        for e in v {
            *e = subst(&r, e, at)?;
        }
    }
    if let Some(h) = &mut sel.having {
        *h = subst(&r, h, at)?;
    }
    Ok(Inline::View(Box::new(r)))
}

/// A view's columns over its table, recursively through views it reads.
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
    let grouped =
        !matches!(&sel.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty());
    if grouped
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
        .map(|i| i.value.clone())
        .unwrap_or_default();
    // A view of the same name further up is the one it reads (a `WITH`
    // item named like a table reads the table).
    let me = views.iter().rposition(|o| std::ptr::eq(o, v));
    let earlier = &views[..me.unwrap_or(views.len())];
    let inner = match earlier.iter().rfind(|o| eq(&o.name, &inner_name)) {
        Some(o) => resolve(o, earlier, tables, depth + 1)?,
        None => {
            let Some(t) = tables.iter().find(|t| eq(&t.name, &inner_name)) else {
                return Err(SqlError::at(
                    loc(name, at),
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
                    .map(|n| (n.clone(), SExpr::Identifier(Ident::new(n))))
                    .collect(),
                filter: None,
                base_cols: names,
                chain: Vec::new(),
            }
        }
    };
    let mut cols: Vec<(String, SExpr)> = Vec::new();
    for (i, item) in sel.projection.iter().enumerate() {
        match item {
            SelectItem::Wildcard(_) => cols.extend(inner.cols.iter().cloned()),
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    SExpr::Identifier(id) => id.value.clone(),
                    SExpr::CompoundIdentifier(p) => {
                        p.last().map(|i| i.value.clone()).unwrap_or_default()
                    }
                    // Flink's name for an unnamed expression.
                    _ => format!("EXPR${i}"),
                };
                cols.push((name, subst_strict(&inner, e, at, &v.name)?));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                cols.push((
                    alias.value.clone(),
                    subst_strict(&inner, expr, at, &v.name)?,
                ));
            }
            other => {
                return Err(SqlError::unsupported(
                    loc(other, at),
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
        Some(e) => Some(subst_strict(&inner, e, at, &v.name)?),
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
fn column_of(r: &Resolved, e: &SExpr, at: Location, what: &str) -> Err<SExpr> {
    let s = subst(r, e, at)?;
    match s {
        SExpr::Identifier(_) => Ok(s),
        _ => Err(SqlError::unsupported(
            loc(e, at),
            &format!("{what} a view column that is an expression (`{e}`)"),
            "a view column that is a column of its table",
        )),
    }
}

/// `e` over the view's columns → over its table. A name that is not a view
/// column is left alone (`window_start`, a table function's result), unless
/// it is a column of the table the view leaves out.
fn subst(r: &Resolved, e: &SExpr, at: Location) -> Err<SExpr> {
    walk(
        e,
        at,
        &mut |id| match r.cols.iter().find(|c| eq(&c.0, &id.value)) {
            Some(c) => Ok(Some(c.1.clone())),
            None if r.base_cols.iter().any(|b| eq(b, &id.value)) => Err(SqlError::at(
                iloc(id, at),
                format!("the view has no column `{}`", id.value),
                format!(
                    "use one of: {}",
                    r.cols
                        .iter()
                        .map(|c| c.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None => Ok(None),
        },
    )
}

/// [`subst`] inside view `view`'s own definition: every name must be a
/// column of what it reads.
fn subst_strict(r: &Resolved, e: &SExpr, at: Location, view: &str) -> Err<SExpr> {
    walk(
        e,
        at,
        &mut |id| match r.cols.iter().find(|c| eq(&c.0, &id.value)) {
            Some(c) => Ok(Some(c.1.clone())),
            None => Err(SqlError::at(
                iloc(id, at),
                format!(
                    "view `{view}`: `{}` is not a column of what it reads",
                    id.value
                ),
                format!(
                    "use one of: {}",
                    r.cols
                        .iter()
                        .map(|c| c.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        },
    )
}

/// Rebuilds `e` with each column name replaced by what `map` gives (an
/// expression other than a name in parentheses, so precedence holds;
/// `None`: the name stays).
fn walk(e: &SExpr, at: Location, map: &mut dyn FnMut(&Ident) -> Err<Option<SExpr>>) -> Err<SExpr> {
    Ok(match e {
        SExpr::Identifier(id) => name(id, e, map)?,
        SExpr::CompoundIdentifier(p) => match p.last() {
            Some(id) => name(id, e, map)?,
            None => e.clone(),
        },
        SExpr::Value(_) | SExpr::Interval(_) | SExpr::TypedString { .. } => e.clone(),
        SExpr::Nested(x) => SExpr::Nested(b(x, at, map)?),
        SExpr::BinaryOp { left, op, right } => SExpr::BinaryOp {
            left: b(left, at, map)?,
            op: op.clone(),
            right: b(right, at, map)?,
        },
        SExpr::UnaryOp { op, expr } => SExpr::UnaryOp {
            op: *op,
            expr: b(expr, at, map)?,
        },
        SExpr::IsNull(x) => SExpr::IsNull(b(x, at, map)?),
        SExpr::IsNotNull(x) => SExpr::IsNotNull(b(x, at, map)?),
        SExpr::Between {
            expr,
            negated,
            low,
            high,
        } => SExpr::Between {
            expr: b(expr, at, map)?,
            negated: *negated,
            low: b(low, at, map)?,
            high: b(high, at, map)?,
        },
        SExpr::Like {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        } => SExpr::Like {
            negated: *negated,
            any: *any,
            expr: b(expr, at, map)?,
            pattern: b(pattern, at, map)?,
            escape_char: escape_char.clone(),
        },
        SExpr::In {
            expr,
            target: InTarget::List(list),
            negated,
            global,
        } => SExpr::In {
            expr: b(expr, at, map)?,
            target: InTarget::List(
                list.iter()
                    .map(|x| walk(x, at, map))
                    .collect::<Err<Vec<_>>>()?,
            ),
            negated: *negated,
            global: *global,
        },
        SExpr::Case {
            case_token,
            end_token,
            operand,
            conditions,
            else_result,
        } => SExpr::Case {
            case_token: case_token.clone(),
            end_token: end_token.clone(),
            operand: match operand.as_deref() {
                Some(x) => Some(b(x, at, map)?),
                None => None,
            },
            conditions: conditions
                .iter()
                .map(|c| {
                    Ok(ast::CaseWhen {
                        condition: walk(&c.condition, at, map)?,
                        result: walk(&c.result, at, map)?,
                    })
                })
                .collect::<Err<Vec<_>>>()?,
            else_result: match else_result.as_deref() {
                Some(x) => Some(b(x, at, map)?),
                None => None,
            },
        },
        SExpr::Cast {
            kind,
            expr,
            data_type,
            format,
        } => SExpr::Cast {
            kind: kind.clone(),
            expr: b(expr, at, map)?,
            data_type: data_type.clone(),
            format: format.clone(),
        },
        SExpr::Ceil { expr, field } => SExpr::Ceil {
            expr: b(expr, at, map)?,
            field: field.clone(),
        },
        SExpr::Floor { expr, field } => SExpr::Floor {
            expr: b(expr, at, map)?,
            field: field.clone(),
        },
        SExpr::Tuple(v) => SExpr::Tuple(
            v.iter()
                .map(|x| walk(x, at, map))
                .collect::<Err<Vec<_>>>()?,
        ),
        SExpr::GroupingSets(s) => SExpr::GroupingSets(sets(s, at, map)?),
        SExpr::Rollup(s) => SExpr::Rollup(sets(s, at, map)?),
        SExpr::Cube(s) => SExpr::Cube(sets(s, at, map)?),
        SExpr::Function(f) => {
            let mut f = f.clone();
            if let FunctionArguments::List(list) = &mut f.args {
                for a in &mut list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x))
                        | FunctionArg::Named {
                            arg: FunctionArgExpr::Expr(x),
                            ..
                        } => *x = walk(x, at, map)?,
                        _ => {}
                    }
                }
            }
            if let Some(x) = &mut f.filter {
                *x = b(x, at, map)?;
            }
            SExpr::Function(f)
        }
        other => {
            return Err(SqlError::unsupported(
                loc(other, at),
                &format!("`{other}` in a query over a view"),
                "the expressions of docs/sql.md; or write the query over the view's table",
            ))
        }
    })
}

/// [`walk`], boxed.
fn b(
    e: &SExpr,
    at: Location,
    map: &mut dyn FnMut(&Ident) -> Err<Option<SExpr>>,
) -> Err<Box<SExpr>> {
    walk(e, at, map).map(Box::new)
}

fn name(id: &Ident, e: &SExpr, map: &mut dyn FnMut(&Ident) -> Err<Option<SExpr>>) -> Err<SExpr> {
    Ok(match map(id)? {
        Some(x @ SExpr::Identifier(_)) => x,
        Some(x) => SExpr::Nested(Box::new(x)),
        None => e.clone(),
    })
}

fn sets(
    s: &[Vec<SExpr>],
    at: Location,
    map: &mut dyn FnMut(&Ident) -> Err<Option<SExpr>>,
) -> Err<Vec<Vec<SExpr>>> {
    s.iter()
        .map(|v| v.iter().map(|x| walk(x, at, map)).collect())
        .collect()
}
