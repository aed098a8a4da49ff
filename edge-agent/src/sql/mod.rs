//! Flink SQL pipelines: `CREATE TABLE`, `SET`, `INSERT INTO … SELECT`,
//! `SELECT` and `EXPLAIN`, compiled onto the same [`PipelineSpec`] a TOML
//! pipeline builds (`docs/sql.md` lists what is supported).
//!
//! - [`dialect`]: Flink's lexical rules on `sqlparser`, plus `TABLE t` as a
//!   table-valued function's argument.
//! - [`ddl`]: `CREATE TABLE` (computed time attribute, `WATERMARK FOR`,
//!   `WITH` options) and `SET`.
//! - [`plan`]: a query → engine operators + the stateless parts around
//!   them (`WHERE` before the engine, `HAVING` and the projection after).
//! - [`exec`]: result rows as CSV (`weir replay`).
//! - [`shell`]: `weir sql`, an interactive shell like Flink's SQL client.
//!
//! Every error names `file:line:column` and what to do; an unsupported
//! construct says so and names the nearest supported one.
//!
//! [`PipelineSpec`]: weir_core::spec::PipelineSpec

pub mod ddl;
pub mod dialect;
pub mod exec;
pub mod groups;
pub mod live;
pub mod over;
pub mod plan;
pub mod rows;
pub mod shell;
pub mod stage;
pub mod topn;
pub mod views;

use std::path::Path;

use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::pipeline_file::{ConfigError, PipelineFile};

pub use plan::{Query, ResultColumn};

/// A SQL error with its place in the text (file name added by [`parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    /// 1-based line, 0 if unknown.
    pub line: u64,
    /// 1-based column.
    pub col: u64,
    /// What is wrong.
    pub msg: String,
    /// What to do.
    pub help: String,
}

pub(crate) type Err<T> = Result<T, SqlError>;

impl SqlError {
    /// An error at `loc`.
    pub fn at(loc: Location, msg: impl Into<String>, help: impl Into<String>) -> Self {
        SqlError {
            line: loc.line,
            col: loc.column,
            msg: msg.into(),
            help: help.into(),
        }
    }

    /// "`what` is not supported"; `nearest` is the closest supported construct.
    pub fn unsupported(loc: Location, what: &str, nearest: &str) -> Self {
        SqlError::at(
            loc,
            format!("{what} is not supported"),
            format!("the nearest supported construct: {nearest} (see docs/sql.md)"),
        )
    }

    /// A parser error; its message ends in `at Line: L, Column: C`.
    pub fn parser(e: ParserError) -> Self {
        let text = match e {
            ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
            ParserError::RecursionLimitExceeded => {
                return SqlError {
                    line: 0,
                    col: 0,
                    msg: "the statement nests too deeply".into(),
                    help: "split the expression; at most 50 levels of nesting".into(),
                }
            }
        };
        let (msg, line, col) = match text.rsplit_once(" at Line: ") {
            Some((m, pos)) => {
                let mut it = pos.split(", Column: ");
                let line = it.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
                let col = it.next().and_then(|c| c.trim().parse().ok()).unwrap_or(0);
                (m.to_string(), line, col)
            }
            None => (text, 0, 0),
        };
        SqlError {
            line,
            col,
            msg: format!("syntax error: {msg}"),
            help: "see docs/sql.md for the supported Flink SQL".into(),
        }
    }

    fn into_config(self, file: &str) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: self.line as usize,
            col: self.col as usize,
            msg: self.msg,
            help: self.help,
        }
    }
}

/// A SQL pipeline file, parsed and compiled.
#[derive(Debug, Clone)]
pub struct SqlPipeline {
    /// The engine's description, CSV mapping and MQTT subscription, as a
    /// TOML pipeline file gives them.
    pub pipeline: PipelineFile,
    /// The query around the engine: filter, result columns, HAVING.
    pub query: Query,
    /// The statement was `EXPLAIN …`.
    pub explain: bool,
    /// The input file the source table names (`'path'`), if any.
    pub input_path: Option<String>,
    /// The sink table of `INSERT INTO`, if any.
    pub sink: Option<plan::Sink>,
    /// Calls of user functions, each a field computed before the engine.
    pub udfs: Vec<plan::UdfUse>,
    /// A keyed user function called as the query's table function: its
    /// operator is the pipeline's.
    pub keyed: Option<plan::KeyedUse>,
    /// A cascade's first query (the query reads a view that aggregates):
    /// its result rows are this pipeline's input ([`exec::replay`]); the
    /// input file is the first query's.
    pub inner: Option<Box<SqlPipeline>>,
}

/// Whether `path` names a SQL pipeline (by its `.sql` extension).
pub fn is_sql(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
}

/// Reads and compiles a SQL pipeline file.
///
/// # Errors
/// The file cannot be read or the SQL is invalid or unsupported; the error
/// says where and what to do.
pub fn load(path: &Path) -> Result<SqlPipeline, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read the pipeline file: {e}"),
        help: "check the path passed with --pipeline".into(),
    })?;
    parse(&file, &text)
}

/// Parses and compiles SQL text; `file` names it in errors.
///
/// # Errors
/// See [`load`].
pub fn parse(file: &str, text: &str) -> Result<SqlPipeline, ConfigError> {
    let r = on_big_stack(|| statements(text).and_then(plan::compile));
    let mut p = r.map_err(|e| e.into_config(file))?;
    let embedded = embedded_modules(text);
    attach_functions_with(file, &embedded, &mut p).map_err(|e| e.into_config(file))?;
    Ok(p)
}

/// The line `weir functions embed` appends for each module of a SQL
/// pipeline: `-- weir:module sha256=<hex> base64=<bytes> <name>` (a
/// comment, so the text still runs on Flink).
pub const MODULE_LINE: &str = "-- weir:module ";

/// Modules embedded in SQL text: name → (sha256, base64).
fn embedded_modules(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let r = l.trim_start().strip_prefix(MODULE_LINE)?;
            let (sha, r) = r.strip_prefix("sha256=")?.split_once(' ')?;
            let (b64, name) = r.strip_prefix("base64=")?.split_once(' ')?;
            Some((name.trim().to_string(), sha.to_string(), b64.to_string()))
        })
        .collect()
}

/// Compiles the user functions a query calls (`CREATE FUNCTION`), their
/// modules read relative to `file`, into the pipeline.
///
/// # Errors
/// A module that cannot be read or is not a scalar `f(f64…) -> f64`.
pub(crate) fn attach_functions(file: &str, p: &mut SqlPipeline) -> Err<()> {
    attach_functions_with(file, &[], p)
}

/// Compiles the user functions a query calls (`CREATE FUNCTION`), their
/// modules read relative to `file`, into the pipeline.
///
/// # Errors
/// A module that cannot be read or is not a scalar `f(f64…) -> f64`.
fn attach_functions_with(
    file: &str,
    embedded: &[(String, String, String)],
    p: &mut SqlPipeline,
) -> Err<()> {
    let module = |name: &str, at: Location| -> Err<Vec<u8>> {
        Ok(match embedded.iter().find(|m| m.0 == name) {
            Some((_, sha, b64)) => {
                let b = crate::functions::base64_decode(b64).map_err(|e| {
                    SqlError::at(at, format!("embedded module `{name}`: {e}"), "embed it again with `weir functions embed`")
                })?;
                if crate::functions::sha256_hex(&b) != *sha {
                    return Err(SqlError::at(
                        at,
                        format!("embedded module `{name}` does not match its sha256"),
                        "the module's bytes were changed: embed it again with `weir functions embed`",
                    ));
                }
                b
            }
            None => crate::functions::read_module(file, name).map_err(|e| {
                SqlError::at(at, e, "the module path is relative to the SQL file (or embed it with `weir functions embed`)")
            })?,
        })
    };
    let mut defs = Vec::new();
    if let Some(k) = &p.keyed {
        let bytes = module(&k.module, k.at)?;
        let d = crate::functions::keyed_def(&k.name, &k.module, bytes, 0, k.args.clone())
            .map_err(|e| SqlError::at(k.at, e, "see docs/functions.md"))?;
        let spec = &mut p.pipeline.spec;
        spec.operators.clear();
        spec.operators
            .extend(crate::functions::keyed_operator(&d, &k.source, &k.field));
        spec.validate()
            .map_err(|e| SqlError::at(k.at, e.to_string(), "fix the query as described"))?;
        defs.push(d);
    }
    for u in &p.udfs {
        let bytes = module(&u.module, u.at)?;
        let d = crate::functions::scalar_def(
            &u.id,
            &u.module,
            bytes,
            u.source,
            &u.name,
            u.args.clone(),
            u.output,
        )
        .map_err(|e| SqlError::at(u.at, e, "see docs/functions.md"))?;
        defs.push(d);
    }
    p.pipeline.functions = crate::functions::Functions::from_defs(defs);
    p.query.functions = p.pipeline.functions.clone();
    Ok(())
}

/// Parsing and planning walk the syntax tree recursively (and so does
/// dropping it): they run on a thread of their own with a stack that holds
/// the deepest tree the limits allow ([`MAX_OPERATORS`], the parser's
/// nesting limit) whatever the caller's stack.
pub(crate) fn on_big_stack<T: Send>(f: impl FnOnce() -> Err<T> + Send) -> Err<T> {
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("weir-sql".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(s, f)
        {
            // A panic is a bug: passed on as it is, not hidden in an error.
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(e) => Err(SqlError::at(
                Location { line: 0, column: 0 },
                format!("cannot start the SQL compiler thread: {e}"),
                "retry with more memory available",
            )),
        }
    })
}

/// Stack of the parsing thread (reserved address space, touched only as deep
/// as a statement nests).
const PARSE_STACK: usize = 32 << 20;

/// Whether pipeline text is SQL: `file` ends in `.sql`, or the first word
/// after `--` comments is CREATE, SET, INSERT, SELECT or EXPLAIN (so a
/// signed update carrying SQL text is recognised without a file name).
pub fn looks_like_sql(file: &str, text: &str) -> bool {
    if is_sql(Path::new(file)) {
        return true;
    }
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        match rest.strip_prefix("--") {
            Some(r) => rest = r.split_once('\n').map_or("", |x| x.1),
            None => break,
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let after = rest[word.len()..].chars().next();
    matches!(
        word.to_ascii_uppercase().as_str(),
        "CREATE" | "SET" | "INSERT" | "SELECT" | "EXPLAIN"
    ) && after.is_some_and(char::is_whitespace)
}

/// Envelope fields of the agent's window messages (`run/output.rs`): a
/// result column the agent publishes by name must not take one of them.
pub const ENVELOPE: [&str; 7] = ["id", "gateway", "op", "key", "start", "end", "emission"];

/// Parses SQL text for `weir run` and signed updates: the engine's plan,
/// with the query around it ([`PipelineFile::sql`]): the agent applies a
/// `WHERE` or aggregated expression on the key or the time before the
/// engine, and `HAVING` and computed result columns to window results
/// before it publishes them ([`stage`]). What it cannot apply is refused
/// rather than ignored (see [`SqlPipeline::agent_can_run`]).
///
/// # Errors
/// As [`parse`], and a query `weir run` cannot apply.
pub fn parse_for_run(file: &str, text: &str) -> Result<PipelineFile, ConfigError> {
    let p = parse(file, text)?;
    if let Err((msg, help)) = p.agent_check() {
        return Err(SqlError::at(p.query.at, msg, help).into_config(file));
    }
    let mut pf = p.pipeline;
    if p.query.publishes_rows() || p.query.filters_before_engine() {
        pf.sql = Some(std::sync::Arc::new(p.query));
    }
    Ok(pf)
}

impl SqlPipeline {
    /// Why the query cannot read a file, if it cannot: its time is
    /// `PROCTIME()`, the moment a row arrives, which over a file is when
    /// weir reads it (`weir replay --input` over an mqtt table; a
    /// filesystem table by `PROCTIME()` does not compile).
    pub fn file_refusal(&self) -> Option<&'static str> {
        let src = self.inner.as_deref().unwrap_or(self);
        (src.pipeline.spec.time.mode == weir_core::time::TimeMode::Processing).then_some(
            "the query's time is PROCTIME(), the moment a row arrives: over a file that is when weir reads it, \
             so its windows would only say how fast weir reads; run it with `weir run` (or the live shell) over MQTT, \
             or give the file's table its time column: rowtime AS TO_TIMESTAMP_LTZ(ts, 3) with a WATERMARK",
        )
    }

    /// Whether `weir run` can apply the whole query. The agent journals
    /// the key, the time and the numeric columns, and applies a `WHERE`
    /// that reads another text column before the journal, so an
    /// aggregated expression that reads one runs in `weir replay` and
    /// `weir sql` only; a result column the agent
    /// publishes by name must not be named like a field of its envelope.
    ///
    /// # Errors
    /// What it cannot apply, where, and what to do.
    pub fn agent_can_run(&self) -> Result<(), String> {
        self.agent_check()
            .map_err(|(msg, help)| format!("{msg}; {help}"))
    }

    /// An aggregation without a window (`GROUP BY sensor` over a plain
    /// table, or aggregates without `GROUP BY`): its rows come once the
    /// input ends.
    pub fn is_unbounded(&self) -> bool {
        self.pipeline.spec.operators.iter().any(|o| {
            matches!(
                &o.kind,
                weir_core::spec::OperatorKind::Window(w)
                    if w.kind == weir_core::spec::WindowKind::Tumbling { size: plan::UNBOUNDED }
            )
        })
    }

    /// [`SqlPipeline::agent_can_run`]: what is wrong and what to do.
    fn agent_check(&self) -> Result<(), (String, String)> {
        if let Some(first) = &self.inner {
            return Err((
                format!(
                    "weir run does not run a cascade of windows yet (the query reads view `{}`, which aggregates); weir replay, weir sql and weir check do",
                    first.pipeline.spec.name
                ),
                "run the view's query on the gateway and the query over its rows where they are published (the cloud)".into(),
            ));
        }
        let q = &self.query;
        if self.is_unbounded() {
            return Err((
                "weir run does not run an aggregation without a window (GROUP BY without TUMBLE/HOP/CUMULATE/SESSION, or aggregates without GROUP BY): its rows come once the input ends, and a gateway's input does not".into(),
                "aggregate over windows: FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE)) … GROUP BY window_start, window_end[, key]".into(),
            ));
        }
        if q.top_n.is_some() {
            return Err((
                "weir run does not run a window Top-N (ROW_NUMBER() … WHERE rownum <= n) yet: weir writes its rows once the input ends, and a gateway's input does not".into(),
                "publish every window's rows (drop the ROW_NUMBER()) and rank them where they are collected; weir replay and weir sql run the Top-N over recordings".into(),
            ));
        }
        if q.per_row.is_some() {
            if q.texts > 0 && q.groups.is_none() {
                return Err((
                    "weir run keys a query without GROUP BY by the STRING and BOOLEAN columns it reads (at most 8), and this one reads more".into(),
                    "read at most 8 STRING or BOOLEAN columns".into(),
                ));
            }
            if q.columns_in + 1 > weir_core::spec::MAX_AGGS {
                return Err((
                    format!("weir run gives rows of at most {} numeric columns in a query without GROUP BY; the table has {}", weir_core::spec::MAX_AGGS - 1, q.columns_in),
                    "declare only the columns the query reads in the table".into(),
                ));
            }
        }
        if !q.order.is_empty() {
            return Err((
                "weir run does not take ORDER BY: a gateway's query runs for as long as readings come, and its rows go out as windows fire (weir replay and weir sql over files sort them)".into(),
                "remove the ORDER BY; rows of one key come in window order".into(),
            ));
        }
        if let Some(n) = q.limit {
            return Err((
                format!("weir run does not take LIMIT {n}: a gateway's query runs for as long as readings come (weir replay and weir sql take it)"),
                "remove the LIMIT".into(),
            ));
        }
        let senml = self.pipeline.mqtt.iter().flatten().any(|m| {
            matches!(
                m.decoder.format(),
                crate::decode::Format::SenmlJson | crate::decode::Format::SenmlCbor
            )
        });
        if q.groups.is_some() && senml {
            return Err((
                "weir run does not take several GROUP BY key columns or GROUPING SETS / ROLLUP / CUBE over SenML payloads (their key columns would be text fields, which SenML records do not carry)".into(),
                "the nearest supported construct: GROUP BY window_start, window_end and one key column (the SenML name), or a 'format' = 'json' table".into(),
            ));
        }
        // The agent reads text columns before the journal, for WHERE and
        // the computed fields that read them over the sample alone.
        let row = 2 + q.columns_in + q.texts;
        if q.ingest_computed().any(|j| {
            q.computed[j]
                .max_col()
                .is_some_and(|c| usize::from(c) >= row)
        }) {
            return Err((
                "weir run does not apply an aggregated expression that reads both a STRING or BOOLEAN column other than the GROUP BY key and another aggregated expression (weir replay applies it)".into(),
                "the nearest supported construct: an expression over the table's columns only (see docs/sql.md)".into(),
            ));
        }
        if let Some(s) = &q.sink {
            if let Some(c) = s
                .columns
                .iter()
                .find(|c| ENVELOPE.iter().any(|e| c.eq_ignore_ascii_case(e)))
            {
                return Err((
                    format!(
                        "sink `{}` has a column `{c}`, the name of a field of the agent's window message ({})",
                        s.table,
                        ENVELOPE.join(", ")
                    ),
                    format!("rename the sink's column, e.g. `{c}_`"),
                ));
            }
            let mut topics = self.pipeline.mqtt.iter().flatten().flat_map(|m| &m.topics);
            if let Err(e) = crate::pipeline_file::check_topic_name(&s.topic) {
                return Err((
                    format!("sink `{}`: 'topic' = '{}': {e}", s.table, s.topic),
                    "give the sink a topic name without wildcards, e.g. 'plant/aggregates'".into(),
                ));
            }
            if let Some(f) = topics.find(|f| crate::run::mqtt::filter_matches(f, &s.topic)) {
                return Err((
                    format!(
                        "sink `{}` publishes on '{}', which the source's subscription '{f}' matches: weir run would read its own results",
                        s.table, s.topic
                    ),
                    "choose a sink topic outside the source's topic filters".into(),
                ));
            }
        } else if q.projects() {
            if let Some(c) = q
                .columns
                .iter()
                .find(|c| ENVELOPE.iter().any(|e| c.name.eq_ignore_ascii_case(e)))
            {
                return Err((
                    format!(
                        "result column `{}` has the name of a field of the agent's window message ({})",
                        c.name,
                        ENVELOPE.join(", ")
                    ),
                    format!("rename it with AS, e.g. AS `{}_`", c.name),
                ));
            }
        }
        Ok(())
    }
}

/// One statement of a pipeline file.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE TABLE`.
    CreateTable(ddl::Table),
    /// `SET 'key' = 'value'`.
    Set(String, String, Location),
    /// `CREATE FUNCTION name AS 'module.wasm' LANGUAGE WASM`: a user
    /// function (docs/functions.md), a scalar one in expressions or a keyed
    /// one as the query's table function.
    CreateFunction {
        /// Its name in the query.
        name: String,
        /// The module file, relative to the SQL file.
        module: String,
        /// Where the statement starts.
        at: Location,
    },
    /// `CREATE [OR REPLACE] [TEMPORARY] VIEW [IF NOT EXISTS] name [(cols)]
    /// AS query`: inlined into the query that reads it ([`views`]).
    CreateView(views::View),
    /// `[EXPLAIN] [INSERT INTO sink] query`.
    Query {
        /// `EXPLAIN` in front.
        explain: bool,
        /// The `INSERT INTO` target and where it is named.
        insert: Option<(String, Location)>,
        /// The query.
        query: Box<sqlparser::ast::Query>,
        /// Where the statement starts.
        at: Location,
    },
}

/// Most operators in one statement. A chain `a + b + c …` parses into a
/// tree as deep as it is long, and everything that walks the tree (the
/// planner, printing, dropping it) recurses: the limit keeps that within a
/// small stack. Nesting with parentheses is limited by the parser (50).
pub const MAX_OPERATORS: usize = 256;

fn check_operators(tokens: &[TokenWithSpan]) -> Err<()> {
    let mut n = 0;
    for t in tokens {
        let op = match &t.token {
            Token::SemiColon => {
                n = 0;
                continue;
            }
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::LIKE
                    | Keyword::IN
                    | Keyword::BETWEEN
            ),
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Period => false,
            _ => true,
        };
        if op {
            n += 1;
            if n > MAX_OPERATORS {
                return Err(SqlError::at(
                    t.span.start,
                    format!("more than {MAX_OPERATORS} operators in one statement"),
                    "simplify the statement",
                ));
            }
        }
    }
    Ok(())
}

/// Splits `text` into statements and parses each.
///
/// # Errors
/// The first syntax error, or a statement weir does not run.
pub fn statements(text: &str) -> Err<Vec<Statement>> {
    let dialect = dialect::WeirDialect;
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::at(
                e.location,
                format!("syntax error: {}", e.message),
                "see docs/sql.md for the supported Flink SQL",
            )
        })?;
    check_operators(&tokens)?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        let tok = p.peek_token();
        if tok.token == Token::EOF {
            break;
        }
        let at = tok.span.start;
        if p.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]) {
            out.push(Statement::CreateTable(ddl::create_table(&mut p, at)?));
        } else if p.parse_keywords(&[Keyword::CREATE, Keyword::FUNCTION]) {
            let name = p.parse_identifier().map_err(SqlError::parser)?.value;
            p.expect_keyword(Keyword::AS).map_err(SqlError::parser)?;
            let module = p.parse_literal_string().map_err(SqlError::parser)?;
            p.expect_keyword(Keyword::LANGUAGE)
                .map_err(SqlError::parser)?;
            let l = p.peek_token_ref().span.start;
            let lang = p.parse_identifier().map_err(SqlError::parser)?.value;
            if !lang.eq_ignore_ascii_case("WASM") {
                return Err(SqlError::unsupported(
                    l,
                    &format!("LANGUAGE {lang}"),
                    "LANGUAGE WASM: a WebAssembly module (docs/functions.md)",
                ));
            }
            out.push(Statement::CreateFunction { name, module, at });
        } else if let Some(v) = create_view(&mut p, at)? {
            out.push(Statement::CreateView(v));
        } else if p.parse_keyword(Keyword::SET) {
            let (k, v, l) = ddl::set(&mut p)?;
            out.push(Statement::Set(k, v, l));
        } else {
            let explain = p.parse_keyword(Keyword::EXPLAIN);
            if explain {
                let _ = p.parse_keywords(&[Keyword::PLAN, Keyword::FOR]);
            }
            let at = p.peek_token_ref().span.start;
            let insert = if p.parse_keywords(&[Keyword::INSERT, Keyword::INTO]) {
                let l = p.peek_token_ref().span.start;
                let name = p.parse_identifier().map_err(SqlError::parser)?.value;
                if p.peek_token_ref().token == Token::LParen {
                    return Err(SqlError::unsupported(
                        p.peek_token_ref().span.start,
                        "a column list after INSERT INTO",
                        "INSERT INTO sink SELECT … with the columns in the sink's order",
                    ));
                }
                Some((name, l))
            } else {
                None
            };
            let starts_query = matches!(&p.peek_token_ref().token,
                Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH))
                || p.peek_token_ref().token == Token::LParen;
            if !starts_query {
                let t = p.peek_token();
                return Err(SqlError::unsupported(
                    t.span.start,
                    &format!("the statement starting with `{}`", t.token),
                    "CREATE TABLE, CREATE VIEW, SET, SELECT, INSERT INTO … SELECT, EXPLAIN",
                ));
            }
            let query = p.parse_query().map_err(SqlError::parser)?;
            out.push(Statement::Query {
                explain,
                insert,
                query,
                at,
            });
        }
        let t = p.peek_token();
        if t.token != Token::EOF && t.token != Token::SemiColon {
            return Err(SqlError::at(
                t.span.start,
                format!("syntax error: expected `;` or the end, found `{}`", t.token),
                "end each statement with `;`",
            ));
        }
    }
    Ok(out)
}

/// `CREATE [OR REPLACE] [TEMPORARY] VIEW [IF NOT EXISTS] name [(cols)] AS
/// query`, if the next tokens start one (nothing is consumed otherwise).
fn create_view(p: &mut Parser, at: Location) -> Err<Option<views::View>> {
    let is_view = matches!(&p.peek_token_ref().token, Token::Word(w) if w.keyword == Keyword::CREATE)
        && (1..=4).any(|i| {
            matches!(&p.peek_nth_token_ref(i).token,
                Token::Word(w) if w.keyword == Keyword::VIEW)
        });
    if !is_view {
        return Ok(None);
    }
    p.expect_keyword(Keyword::CREATE)
        .map_err(SqlError::parser)?;
    let _ = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    let _ = p.parse_keyword(Keyword::TEMPORARY);
    p.expect_keyword(Keyword::VIEW).map_err(SqlError::parser)?;
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_identifier().map_err(SqlError::parser)?;
    let columns = if p.consume_token(&Token::LParen) {
        let c = p
            .parse_comma_separated(Parser::parse_identifier)
            .map_err(SqlError::parser)?;
        p.expect_token(&Token::RParen).map_err(SqlError::parser)?;
        c
    } else {
        Vec::new()
    };
    p.expect_keyword(Keyword::AS).map_err(SqlError::parser)?;
    let query = p.parse_query().map_err(SqlError::parser)?;
    Ok(Some(views::View {
        name: name.value,
        columns,
        query,
        at,
    }))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cascade;
#[cfg(test)]
mod tests_detect;
#[cfg(test)]
mod tests_distinct;
#[cfg(test)]
mod tests_groups;
#[cfg(test)]
mod tests_limit;
#[cfg(test)]
mod tests_nulls;
#[cfg(test)]
mod tests_over;
#[cfg(test)]
mod tests_proctime;
#[cfg(test)]
mod tests_rows;
#[cfg(test)]
mod tests_topn;
#[cfg(test)]
mod tests_unbounded;
#[cfg(test)]
mod tests_views;
