//! `CREATE TABLE` and `SET`: read token by token with the parser's building
//! blocks (`parse_identifier`, `parse_data_type`, `parse_expr`), since the
//! generic dialect rejects computed columns and `WATERMARK FOR`.

use sqlparser::ast::{self, DateTimeField, Expr, Spanned};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use super::{Err, SqlError};

/// A column type, as Flink names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SqlType {
    /// `STRING` / `VARCHAR(n)`.
    String,
    /// `BOOLEAN`.
    Boolean,
    /// `INT`.
    Int,
    /// `BIGINT`.
    BigInt,
    /// `DOUBLE` / `FLOAT`.
    Double,
    /// `DECIMAL(p, s)`: held as a double; results keep `s` decimals.
    Decimal(u8),
    /// `TIMESTAMP(3)`.
    Timestamp,
    /// `TIMESTAMP_LTZ(3)`.
    TimestampLtz,
}

impl SqlType {
    /// Whether values are numbers.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Decimal(_)
        )
    }

    /// Whether values are timestamps.
    pub fn is_time(self) -> bool {
        matches!(self, SqlType::Timestamp | SqlType::TimestampLtz)
    }

    /// Flink's name.
    pub fn name(self) -> String {
        match self {
            SqlType::String => "STRING".into(),
            SqlType::Boolean => "BOOLEAN".into(),
            SqlType::Int => "INT".into(),
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Double => "DOUBLE".into(),
            SqlType::Decimal(s) => format!("DECIMAL(38, {s})"),
            SqlType::Timestamp => "TIMESTAMP(3)".into(),
            SqlType::TimestampLtz => "TIMESTAMP_LTZ(3)".into(),
        }
    }
}

/// A physical column.
#[derive(Clone, Debug)]
pub struct Column {
    /// Name (case kept; matched case-insensitively).
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Where it is declared.
    pub at: Location,
}

/// Where the event time comes from.
#[derive(Clone, Debug)]
pub struct Rowtime {
    /// The time attribute's name (`rowtime`, or the physical column's).
    pub name: String,
    /// The physical column holding it.
    pub column: usize,
    /// Epoch number precision (0: seconds, 3: milliseconds) when computed
    /// with `TO_TIMESTAMP_LTZ(col, p)`; `None` for a TIMESTAMP column.
    pub epoch_precision: Option<u8>,
    /// `WATERMARK FOR … AS rowtime - INTERVAL …`: the delay in ms.
    pub delay_ms: i64,
    /// Where the watermark is declared.
    pub at: Location,
    /// `name AS PROCTIME()`: processing time, the gateway's clock when a
    /// row arrives (`column` is a column of the table that no payload or
    /// file fills: each row's arrival time).
    pub proctime: bool,
}

/// A `CREATE TABLE`.
#[derive(Clone, Debug)]
pub struct Table {
    /// The table's name.
    pub name: String,
    /// Physical columns in order.
    pub columns: Vec<Column>,
    /// The event-time attribute, if the table declares a watermark.
    pub rowtime: Option<Rowtime>,
    /// `WITH` options, keys lower-cased, with where each value is.
    pub options: Vec<(String, String, Location)>,
    /// Where the statement starts.
    pub at: Location,
}

impl Table {
    /// A physical column by name (case-insensitive).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// An option's value and place.
    pub fn option(&self, key: &str) -> Option<(&str, Location)> {
        self.options
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v.as_str(), *l))
    }
}

/// Most columns a table may declare.
pub const MAX_COLUMNS: usize = 1000;

fn here(p: &Parser) -> Location {
    p.peek_token_ref().span.start
}

/// Parses the rest of `CREATE TABLE` (the keywords are consumed).
pub fn create_table(p: &mut Parser, at: Location) -> Result<Table, SqlError> {
    if p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]) {
        // Accepted and meaningless: a pipeline file is read whole.
    }
    let name = p.parse_identifier().map_err(SqlError::parser)?.value;
    p.expect_token(&Token::LParen).map_err(SqlError::parser)?;
    let mut t = Table {
        name,
        columns: Vec::new(),
        rowtime: None,
        options: Vec::new(),
        at,
    };
    // Computed columns with the place they are declared at among the
    // physical ones.
    let mut computed: Vec<(String, Expr, Location, usize)> = Vec::new();
    let mut watermark: Option<(String, Expr, Location)> = None;
    loop {
        let loc = here(p);
        let is_watermark = matches!(&p.peek_token_ref().token,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("WATERMARK"));
        if is_watermark {
            p.next_token();
            p.expect_keyword(Keyword::FOR).map_err(SqlError::parser)?;
            let col = p.parse_identifier().map_err(SqlError::parser)?.value;
            p.expect_keyword(Keyword::AS).map_err(SqlError::parser)?;
            let e = p.parse_expr().map_err(SqlError::parser)?;
            if watermark.is_some() {
                return Err(SqlError::at(
                    loc,
                    "a table has one WATERMARK",
                    "remove the second WATERMARK FOR clause",
                ));
            }
            watermark = Some((col, e, loc));
        } else if p.parse_keyword(Keyword::PRIMARY) || p.parse_keyword(Keyword::CONSTRAINT) {
            return Err(SqlError::unsupported(
                loc,
                "PRIMARY KEY / CONSTRAINT",
                "the key is the GROUP BY column of the query",
            ));
        } else {
            let id = p.parse_identifier().map_err(SqlError::parser)?;
            if p.parse_keyword(Keyword::AS) {
                let e = p.parse_expr().map_err(SqlError::parser)?;
                computed.push((id.value, e, loc, t.columns.len()));
            } else {
                let dt = p.parse_data_type().map_err(SqlError::parser)?;
                let ty = data_type(&dt, loc)?;
                // Nullability and comments change nothing here.
                let _ = p.parse_keywords(&[Keyword::NOT, Keyword::NULL])
                    || p.parse_keyword(Keyword::NULL);
                if p.parse_keyword(Keyword::COMMENT) {
                    p.parse_literal_string().map_err(SqlError::parser)?;
                }
                if t.columns.len() >= MAX_COLUMNS {
                    return Err(SqlError::unsupported(
                        loc,
                        &format!("a table of more than {MAX_COLUMNS} columns"),
                        "declare only the columns the pipeline reads",
                    ));
                }
                if t.column(&id.value).is_some() {
                    return Err(SqlError::at(
                        loc,
                        format!("column `{}` is declared twice", id.value),
                        "give each column its own name",
                    ));
                }
                t.columns.push(Column {
                    name: id.value,
                    ty,
                    at: loc,
                });
            }
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(SqlError::parser)?;
        break;
    }
    if p.parse_keyword(Keyword::COMMENT) {
        p.parse_literal_string().map_err(SqlError::parser)?;
    }
    if p.peek_keyword(Keyword::PARTITIONED) {
        return Err(SqlError::unsupported(
            here(p),
            "PARTITIONED BY",
            "a table without partitions",
        ));
    }
    let with_at = here(p);
    if !p.parse_keyword(Keyword::WITH) {
        return Err(SqlError::at(
            with_at,
            format!("table `{}` has no WITH (...) options", t.name),
            "add WITH ('connector' = 'filesystem', 'path' = 'in.csv', 'format' = 'csv') or WITH ('connector' = 'mqtt', 'topic' = 'sensors/+/temp', 'format' = 'json')",
        ));
    }
    p.expect_token(&Token::LParen).map_err(SqlError::parser)?;
    loop {
        let kloc = here(p);
        let k = p.parse_literal_string().map_err(SqlError::parser)?;
        p.expect_token(&Token::Eq).map_err(SqlError::parser)?;
        let vloc = here(p);
        let v = p.parse_literal_string().map_err(SqlError::parser)?;
        let k = k.to_ascii_lowercase();
        if t.options.iter().any(|(o, _, _)| *o == k) {
            return Err(SqlError::at(
                kloc,
                format!("option '{k}' is given twice"),
                "keep one",
            ));
        }
        t.options.push((k, v, vloc));
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(SqlError::parser)?;
        break;
    }
    for (name, e, loc, at) in computed {
        if is_proctime(&e) {
            proctime(&mut t, (name, at), watermark.as_ref(), loc)?;
            continue;
        }
        let Some((col, prec)) = epoch_call(&e) else {
            return Err(SqlError::unsupported(
                loc,
                &format!("the computed column `{name} AS {e}`"),
                "`rowtime AS TO_TIMESTAMP_LTZ(epoch_column, 3)` (or precision 0 for seconds), `pt AS PROCTIME()`; compute other values in the SELECT list",
            ));
        };
        let Some(ci) = t.column(&col) else {
            return Err(SqlError::at(
                loc,
                format!("`{col}` is not a column of `{}`", t.name),
                "name a physical BIGINT column holding epoch milliseconds",
            ));
        };
        if !matches!(t.columns[ci].ty, SqlType::Int | SqlType::BigInt) {
            return Err(SqlError::at(
                loc,
                format!(
                    "TO_TIMESTAMP_LTZ needs an INT or BIGINT column; `{col}` is {}",
                    t.columns[ci].ty.name()
                ),
                "declare the epoch column as BIGINT",
            ));
        }
        let Some((wcol, _, _)) = &watermark else {
            return Err(SqlError::at(
                loc,
                format!("the computed column `{name}` is not a time attribute: the table has no WATERMARK FOR {name}"),
                format!("add WATERMARK FOR {name} AS {name} - INTERVAL '2' SECOND"),
            ));
        };
        if !wcol.eq_ignore_ascii_case(&name) {
            return Err(SqlError::unsupported(
                loc,
                &format!("a computed column `{name}` other than the watermarked time attribute"),
                "compute values in the SELECT list",
            ));
        }
        t.rowtime = Some(Rowtime {
            name,
            column: ci,
            epoch_precision: Some(prec),
            delay_ms: 0,
            at: loc,
            proctime: false,
        });
    }
    match watermark {
        // A sink, or a source the query will reject with its own message.
        None => {}
        Some((col, e, loc)) => {
            if t.rowtime.is_none() {
                let Some(ci) = t.column(&col) else {
                    return Err(SqlError::at(
                        loc,
                        format!("WATERMARK FOR `{col}`: no such column"),
                        "name a TIMESTAMP(3) / TIMESTAMP_LTZ(3) column or a computed TO_TIMESTAMP_LTZ column",
                    ));
                };
                if !t.columns[ci].ty.is_time() {
                    return Err(SqlError::at(
                        loc,
                        format!("WATERMARK FOR `{col}`: the column is {}, not a timestamp", t.columns[ci].ty.name()),
                        format!("declare it TIMESTAMP(3), or add `rowtime AS TO_TIMESTAMP_LTZ({col}, 3)` and put the watermark on rowtime"),
                    ));
                }
                t.rowtime = Some(Rowtime {
                    name: t.columns[ci].name.clone(),
                    column: ci,
                    epoch_precision: None,
                    delay_ms: 0,
                    at: loc,
                    proctime: false,
                });
            }
            let rt = t.rowtime.as_mut().expect("set above");
            rt.at = loc;
            rt.delay_ms = watermark_delay(&e, &rt.name, loc)?;
        }
    }
    Ok(t)
}

/// `PROCTIME()`.
fn is_proctime(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    let no_args = match &f.args {
        ast::FunctionArguments::None => true,
        ast::FunctionArguments::List(l) => l.args.is_empty(),
        ast::FunctionArguments::Subquery(_) => false,
    };
    no_args && f.name.to_string().eq_ignore_ascii_case("PROCTIME")
}

/// `name AS PROCTIME()` declared before physical column `at`: the
/// table's time attribute is the arrival time, a `TIMESTAMP_LTZ(3)`
/// column (in its declared place, as `SELECT *` lists it) that no payload
/// fills.
fn proctime(
    t: &mut Table,
    (name, at): (String, usize),
    watermark: Option<&(String, Expr, Location)>,
    loc: Location,
) -> Result<(), SqlError> {
    if let Some((col, _, wloc)) = watermark {
        return Err(SqlError::unsupported(
            *wloc,
            &format!("WATERMARK FOR `{col}` in a table with a PROCTIME() column"),
            "one time attribute per table: event time (WATERMARK FOR rowtime …) or processing time (pt AS PROCTIME()), not both",
        ));
    }
    if t.rowtime.is_some() || t.column(&name).is_some() {
        return Err(SqlError::at(
            loc,
            format!("`{name} AS PROCTIME()`: the table has a time attribute or a column of that name already"),
            "declare one PROCTIME() column, under a name of its own",
        ));
    }
    // No other column index is kept yet (a second time attribute is
    // refused above), so the insert moves none.
    t.columns.insert(
        at,
        Column {
            name: name.clone(),
            ty: SqlType::TimestampLtz,
            at: loc,
        },
    );
    t.rowtime = Some(Rowtime {
        name,
        column: at,
        epoch_precision: Some(3),
        delay_ms: 0,
        at: loc,
        proctime: true,
    });
    Ok(())
}

/// `TO_TIMESTAMP_LTZ(col, p)` → (col, p).
fn epoch_call(e: &Expr) -> Option<(String, u8)> {
    let Expr::Function(f) = e else { return None };
    if !f.name.to_string().eq_ignore_ascii_case("TO_TIMESTAMP_LTZ") {
        return None;
    }
    let ast::FunctionArguments::List(l) = &f.args else {
        return None;
    };
    let args: Vec<&Expr> = l
        .args
        .iter()
        .filter_map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let [Expr::Identifier(c), Expr::Value(v)] = args[..] else {
        return None;
    };
    let ast::Value::Number(n, _) = &v.value else {
        return None;
    };
    match n.as_str() {
        "0" => Some((c.value.clone(), 0)),
        "3" => Some((c.value.clone(), 3)),
        _ => None,
    }
}

fn watermark_delay(e: &Expr, rowtime: &str, loc: Location) -> Result<i64, SqlError> {
    let bad = || {
        SqlError::unsupported(
            loc,
            &format!("the watermark expression `{e}`"),
            &format!("`{rowtime} - INTERVAL '2' SECOND` (a bounded delay) or `{rowtime}`"),
        )
    };
    match e {
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case(rowtime) => Ok(0),
        Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Minus,
            right,
        } => match (&**left, &**right) {
            (Expr::Identifier(i), Expr::Interval(iv)) if i.value.eq_ignore_ascii_case(rowtime) => {
                interval_ms(iv, right.span().start)
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// An `INTERVAL 'n' UNIT` in milliseconds.
pub fn interval_ms(iv: &ast::Interval, loc: Location) -> Result<i64, SqlError> {
    let loc = if loc.line == 0 {
        iv.value.span().start
    } else {
        loc
    };
    let unit_ms: f64 = match &iv.leading_field {
        Some(DateTimeField::Millisecond | DateTimeField::Milliseconds) => 1.0,
        Some(DateTimeField::Second | DateTimeField::Seconds) => 1e3,
        Some(DateTimeField::Minute | DateTimeField::Minutes) => 60e3,
        Some(DateTimeField::Hour | DateTimeField::Hours) => 3600e3,
        Some(DateTimeField::Day | DateTimeField::Days) => 86400e3,
        Some(f) => {
            return Err(SqlError::unsupported(
                loc,
                &format!("an interval in {f}"),
                "INTERVAL 'n' SECOND / MINUTE / HOUR / DAY (or MILLISECOND)",
            ))
        }
        None => {
            return Err(SqlError::at(
                loc,
                "an INTERVAL needs a unit",
                "write INTERVAL '10' SECOND",
            ))
        }
    };
    if iv.last_field.is_some() {
        return Err(SqlError::unsupported(
            loc,
            "an interval with a range (… TO …)",
            "INTERVAL 'n' SECOND / MINUTE / HOUR / DAY",
        ));
    }
    let text = match &*iv.value {
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            ast::Value::Number(n, _) => n.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let n: f64 = text.trim().parse().map_err(|_| {
        SqlError::at(
            loc,
            format!(
                "`{text}` is not a number of {}",
                iv.leading_field
                    .as_ref()
                    .map_or(String::new(), |f| f.to_string())
            ),
            "write INTERVAL '10' SECOND",
        )
    })?;
    let ms = n * unit_ms;
    if !(0.0..=9.0e15).contains(&ms) || ms.fract() != 0.0 {
        return Err(SqlError::at(
            loc,
            format!("the interval `{text}` is not a whole, non-negative number of milliseconds"),
            "use a whole number of milliseconds, e.g. INTERVAL '500' MILLISECOND",
        ));
    }
    Ok(ms as i64)
}

/// Maps a parsed data type onto the supported ones.
fn data_type(dt: &ast::DataType, loc: Location) -> Result<SqlType, SqlError> {
    let s = dt.to_string().to_ascii_uppercase().replace(' ', "");
    let ty = match s.as_str() {
        "STRING" | "TEXT" => SqlType::String,
        _ if s.starts_with("VARCHAR") || s.starts_with("CHAR") => SqlType::String,
        "BOOLEAN" | "BOOL" => SqlType::Boolean,
        "INT" | "INTEGER" | "SMALLINT" | "TINYINT" => SqlType::Int,
        "BIGINT" => SqlType::BigInt,
        "DOUBLE" | "FLOAT" | "REAL" | "DOUBLEPRECISION" => SqlType::Double,
        "TIMESTAMP(3)" | "TIMESTAMP" => SqlType::Timestamp,
        "TIMESTAMP_LTZ(3)" | "TIMESTAMP_LTZ" | "TIMESTAMP(3)WITHLOCALTIMEZONE" => {
            SqlType::TimestampLtz
        }
        _ if s.starts_with("DECIMAL") || s.starts_with("NUMERIC") => {
            let scale = s
                .split_once(',')
                .and_then(|(_, r)| r.trim_end_matches(')').parse::<u8>().ok())
                .unwrap_or(0);
            SqlType::Decimal(scale.min(18))
        }
        _ => return Err(SqlError::unsupported(
            loc,
            &format!("the type {dt}"),
            "STRING, BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL(p, s), TIMESTAMP(3) or TIMESTAMP_LTZ(3)",
        )),
    };
    Ok(ty)
}

/// Parses the rest of `SET 'key' = 'value'` (the keyword is consumed).
pub fn set(p: &mut Parser) -> Err<(String, String, Location)> {
    let kloc = here(p);
    let key = p.parse_literal_string().map_err(SqlError::parser)?;
    p.expect_token(&Token::Eq).map_err(SqlError::parser)?;
    let v = p.parse_literal_string().map_err(SqlError::parser)?;
    Ok((key, v, kloc))
}
