//! `weir sql`: an interactive shell in the manner of Flink's SQL client.
//!
//! Statements end with `;` and may span lines. `CREATE TABLE` and `SET`
//! are kept for the session; a `SELECT` (or `INSERT INTO … SELECT`) runs at
//! once over the source table's `'path'` file and prints its rows as a
//! table (Flink's "tableau" result mode), or over an mqtt table's topics on
//! the live broker, printing rows as their windows fire until `LIMIT n`
//! rows or Ctrl-C ([`super::live`]); `EXPLAIN` prints the plan. Also:
//! `SHOW TABLES | VIEWS | FUNCTIONS`, `DESCRIBE t`, `HELP`, `QUIT` / `EXIT`.

use std::io::{self, BufRead, Write};
use std::path::Path;

use super::{live, plan, statements, Statement};

/// Splits complete statements (ending in `;` outside quotes and `--`
/// comments) off the front of `buf`; what is left is an unfinished one.
fn take_statements(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quote, mut comment, mut start) = (None::<char>, false, 0);
    let bytes: Vec<(usize, char)> = buf.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '`' {
            quote = Some(c);
        } else if c == '-' && bytes.get(i + 1).is_some_and(|n| n.1 == '-') {
            comment = true;
        } else if c == ';' {
            let s = buf[start..at].trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            start = at + 1;
        }
        i += 1;
    }
    *buf = buf[start..].to_string();
    out
}

/// The broker a live query reads when neither `weir sql --broker` nor
/// `SET 'weir.sql.broker'` names one.
pub const DEFAULT_BROKER: &str = "mqtt://localhost:1883";

/// The session: statements kept across queries.
struct Session<'i> {
    /// The broker of live queries (`SET 'weir.sql.broker'`).
    broker: String,
    /// Login and TLS files for it (`weir sql --config gateway.toml`).
    login: Option<&'i crate::gateway::BrokerConfig>,
    /// Ctrl-C during a live query.
    int: &'i live::Interrupt,
    /// Each kept statement with the text it was read from and its place
    /// among that text's statements: a query compiles statements read
    /// again from their text (the syntax tree is not cloned: its `Clone`
    /// is large code).
    kept: Vec<(String, usize, Statement)>,
}

const HELP: &str = "Statements (end each with ;):
  CREATE TABLE t (...) WITH (...)   register a table for this session
  SET 'key' = 'value'               pipeline.name, weir.state.max-keys, table.exec.state.ttl,
                                    weir.sql.broker (mqtt://HOST:PORT, for mqtt tables)
  SELECT ... / INSERT INTO ...      run over the source table's 'path' and print the rows,
                                    or over an mqtt table's topics on the broker, printing
                                    rows as windows fire (LIMIT n or Ctrl-C ends it)
  EXPLAIN SELECT ...                print the plan
  SHOW TABLES | VIEWS | FUNCTIONS   list what this session created
  DESCRIBE t                        a table's columns, types and watermark
  HELP                              this text
  QUIT / EXIT                       leave
The supported Flink SQL is listed in docs/sql.md.";

impl Session<'_> {
    /// Runs one statement; `Ok(false)` ends the session.
    fn run(&mut self, text: &str, out: &mut dyn Write) -> io::Result<bool> {
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match word.as_str() {
            "QUIT" | "EXIT" => return Ok(false),
            "HELP" => {
                writeln!(out, "{HELP}")?;
                return Ok(true);
            }
            "SHOW" => {
                self.show(text, out)?;
                return Ok(true);
            }
            "DESCRIBE" | "DESC" => {
                self.describe(text, out)?;
                return Ok(true);
            }
            _ => {}
        }
        let parsed = match super::on_big_stack(|| statements(text)) {
            Ok(v) => v,
            Err(e) => {
                error(out, e.line, e.col, &e.msg, &e.help)?;
                return Ok(true);
            }
        };
        for (i, s) in parsed.into_iter().enumerate() {
            match s {
                Statement::CreateTable(ref t) => {
                    let exists = self.kept.iter().any(|(_, _, k)| {
                        matches!(k, Statement::CreateTable(o) if o.name.eq_ignore_ascii_case(&t.name))
                    });
                    if exists {
                        error(
                            out,
                            0,
                            0,
                            &format!("table `{}` already exists", t.name),
                            "give the new table another name",
                        )?;
                        continue;
                    }
                    self.kept.push((text.to_string(), i, s));
                    writeln!(out, "[INFO] Execute statement succeeded.")?;
                }
                Statement::Set(ref k, ref v, _) if k == "weir.sql.broker" => {
                    self.broker = v.clone();
                    writeln!(out, "[INFO] Execute statement succeeded.")?;
                }
                Statement::Set(..)
                | Statement::CreateFunction { .. }
                | Statement::CreateView(_) => {
                    self.kept.push((text.to_string(), i, s));
                    writeln!(out, "[INFO] Execute statement succeeded.")?;
                }
                q @ Statement::Query { .. } => {
                    let kept = &self.kept;
                    let compiled = super::on_big_stack(move || {
                        let mut all: Vec<Statement> = kept
                            .iter()
                            .filter_map(|(t, i, _)| statements(t).ok()?.into_iter().nth(*i))
                            .collect();
                        all.push(q);
                        plan::compile(all)
                    })
                    .and_then(|mut p| {
                        // Modules are relative to the working directory.
                        super::attach_functions("./shell.sql", &mut p).map(|()| p)
                    });
                    match compiled {
                        Ok(p) => self.query(&p, out)?,
                        Err(e) => error(out, e.line, e.col, &e.msg, &e.help)?,
                    }
                }
            }
        }
        Ok(true)
    }

    /// `SHOW TABLES`, `SHOW VIEWS`, `SHOW FUNCTIONS` (the created ones).
    fn show(&self, text: &str, out: &mut dyn Write) -> io::Result<()> {
        let what: Vec<String> = words(text).skip(1).map(str::to_ascii_uppercase).collect();
        let kind = match what.as_slice() {
            [w] if w == "TABLES" => "table",
            [w] if w == "VIEWS" => "view",
            [w] if w == "FUNCTIONS" => "function",
            _ => {
                return error(
                    out,
                    0,
                    0,
                    &format!("`{}` is not supported", text.trim().trim_end_matches(';')),
                    "SHOW TABLES, SHOW VIEWS or SHOW FUNCTIONS (the functions created in this session; the built-in ones are in docs/sql.md)",
                )
            }
        };
        let names: Vec<&str> = self
            .kept
            .iter()
            .filter_map(|(_, _, s)| match s {
                Statement::CreateTable(t) => Some(("table", t.name.as_str())),
                Statement::CreateView(v) => Some(("view", v.name.as_str())),
                Statement::CreateFunction { name, .. } => Some(("function", name.as_str())),
                _ => None,
            })
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .collect();
        for n in &names {
            writeln!(out, "{n}")?;
        }
        writeln!(out, "{} {kind}(s)", names.len())
    }

    /// `DESCRIBE t` / `DESC t`: a table's columns as Flink's client shows
    /// them (name, type, nullability, extras, watermark).
    fn describe(&self, text: &str, out: &mut dyn Write) -> io::Result<()> {
        let name = words(text).nth(1).unwrap_or("").trim_matches('`');
        let table = self.kept.iter().find_map(|(_, _, s)| match s {
            Statement::CreateTable(t) if t.name.eq_ignore_ascii_case(name) => Some(t),
            _ => None,
        });
        let Some(t) = table else {
            return error(
                out,
                0,
                0,
                &format!("no table `{name}` in this session"),
                "SHOW TABLES lists them; DESCRIBE takes a table created with CREATE TABLE",
            );
        };
        let mut rows = vec![["name", "type", "null", "extras", "watermark"]
            .map(String::from)
            .to_vec()];
        for (i, c) in t.columns.iter().enumerate() {
            if t.rowtime
                .as_ref()
                .is_some_and(|r| r.proctime && r.column == i)
            {
                rows.push(
                    [
                        &c.name,
                        "TIMESTAMP_LTZ(3) NOT NULL *PROCTIME*",
                        "FALSE",
                        "AS PROCTIME()",
                        "",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                continue;
            }
            let rt = t
                .rowtime
                .as_ref()
                .filter(|r| r.column == i && r.epoch_precision.is_none());
            rows.push(vec![
                c.name.clone(),
                match rt {
                    Some(_) => format!("{} *ROWTIME*", c.ty.name()),
                    None => c.ty.name(),
                },
                "TRUE".into(),
                String::new(),
                rt.map_or(String::new(), |r| watermark_text(&r.name, r.delay_ms)),
            ]);
        }
        if let Some(r) = t.rowtime.as_ref().filter(|r| !r.proctime) {
            if let Some(p) = r.epoch_precision {
                rows.push(vec![
                    r.name.clone(),
                    "TIMESTAMP_LTZ(3) *ROWTIME*".into(),
                    "TRUE".into(),
                    format!("AS TO_TIMESTAMP_LTZ(`{}`, {p})", t.columns[r.column].name),
                    watermark_text(&r.name, r.delay_ms),
                ]);
            }
        }
        table_rows(out, &rows)?;
        writeln!(out, "{} row(s) in set", rows.len() - 1)
    }

    fn query(&self, p: &super::SqlPipeline, out: &mut dyn Write) -> io::Result<()> {
        if p.explain {
            return write!(out, "{}", p.query.explain);
        }
        let Some(path) = &p.input_path else {
            let src = p.inner.as_deref().unwrap_or(p);
            if let Some(Some(m)) = src.pipeline.mqtt.first() {
                return live::run(p, m, &self.broker, self.login, self.int, out);
            }
            return error(
                out,
                0,
                0,
                "the source table has no 'path' to read",
                "give the filesystem table 'path' = 'file.csv', or read an mqtt table on the broker",
            );
        };
        let file = match std::fs::File::open(Path::new(path)) {
            Ok(f) => f,
            Err(e) => {
                return error(
                    out,
                    0,
                    0,
                    &format!("cannot open {path}: {e}"),
                    "check the table's 'path' (relative to where weir sql runs)",
                )
            }
        };
        let mut csv = Vec::new();
        let mut bad = 0u64;
        let (sum, _) = super::exec::replay(p, io::BufReader::new(file), &mut csv, |_, _| bad += 1)?;
        let text = String::from_utf8_lossy(&csv);
        tableau(out, &text)?;
        writeln!(
            out,
            "{} row(s) in set ({} input rows, {} bad, {} late)",
            sum.windows, sum.rows, bad, sum.late
        )
    }
}

pub(super) fn error(
    out: &mut dyn Write,
    line: u64,
    col: u64,
    msg: &str,
    help: &str,
) -> io::Result<()> {
    if line > 0 {
        writeln!(out, "[ERROR] {line}:{col}: {msg}")?;
    } else {
        writeln!(out, "[ERROR] {msg}")?;
    }
    if !help.is_empty() {
        writeln!(out, "  help: {help}")?;
    }
    Ok(())
}

/// The words of a statement without its closing `;`.
fn words(text: &str) -> std::str::SplitWhitespace<'_> {
    text.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .split_whitespace()
}

/// A watermark as Flink's `DESCRIBE` shows it: `` `rowtime` - INTERVAL … ``.
fn watermark_text(rowtime: &str, delay_ms: i64) -> String {
    if delay_ms == 0 {
        return format!("`{rowtime}`");
    }
    let (n, unit) = match delay_ms {
        d if d % 3_600_000 == 0 => (d / 3_600_000, "HOUR"),
        d if d % 60_000 == 0 => (d / 60_000, "MINUTE"),
        d if d % 1000 == 0 => (d / 1000, "SECOND"),
        d => (d, "MILLISECOND"),
    };
    format!("`{rowtime}` - INTERVAL '{n}' {unit}")
}

/// CSV result text as a bordered table (quoted fields are shown as written).
fn tableau(out: &mut dyn Write, csv: &str) -> io::Result<()> {
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    table_rows(out, &rows)
}

/// Rows (the first is the header) as a bordered table, cells right-aligned.
fn table_rows<S: AsRef<str>>(out: &mut dyn Write, rows: &[Vec<S>]) -> io::Result<()> {
    let Some(head) = rows.first() else {
        return Ok(());
    };
    let mut width: Vec<usize> = head.iter().map(|h| h.as_ref().chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.as_ref().chars().count());
            }
        }
    }
    let rule: String = width
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    writeln!(out, "{rule}")?;
    for (n, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = r.get(i).map_or("", |c| c.as_ref());
            line.push_str(&format!("| {c:>w$} "));
        }
        writeln!(out, "{line}|")?;
        if n == 0 {
            writeln!(out, "{rule}")?;
        }
    }
    writeln!(out, "{rule}")
}

/// Runs statements from `input` until it ends or `QUIT`; with `prompt`,
/// shows Flink's `Flink SQL>` prompt (and `>` on continuation lines).
///
/// # Errors
/// I/O errors of `input` or `out`. SQL errors are printed and the session
/// goes on.
pub fn run<R: BufRead, W: Write>(input: R, out: W, prompt: bool) -> io::Result<()> {
    run_with(
        input,
        out,
        prompt,
        DEFAULT_BROKER,
        None,
        &live::Interrupt::default(),
    )
}

/// [`run`], live queries reading `broker` (until `SET 'weir.sql.broker'`)
/// with `login`'s user, password and TLS files, ended by `int` (the
/// caller's Ctrl-C handler).
///
/// # Errors
/// As [`run`].
pub fn run_with<R: BufRead, W: Write>(
    input: R,
    mut out: W,
    prompt: bool,
    broker: &str,
    login: Option<&crate::gateway::BrokerConfig>,
    int: &live::Interrupt,
) -> io::Result<()> {
    let mut session = Session {
        broker: broker.to_string(),
        login,
        int,
        kept: Vec::new(),
    };
    let mut buf = String::new();
    if prompt {
        write!(out, "Flink SQL> ")?;
        out.flush()?;
    }
    for line in input.lines() {
        buf.push_str(&line?);
        buf.push('\n');
        for stmt in take_statements(&mut buf) {
            if !session.run(&stmt, &mut out)? {
                return out.flush();
            }
        }
        if prompt {
            write!(
                out,
                "{}",
                if buf.trim().is_empty() {
                    "Flink SQL> "
                } else {
                    "> "
                }
            )?;
            out.flush()?;
        }
    }
    if !buf.trim().is_empty() {
        session.run(buf.trim(), &mut out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let mut b = "SET 'a;b' = 'c'; -- x; y\nSELECT `q;` FROM t;\nSELECT 1".to_string();
        let v = take_statements(&mut b);
        assert_eq!(v, ["SET 'a;b' = 'c'", "-- x; y\nSELECT `q;` FROM t"]);
        assert_eq!(b, "\nSELECT 1");
    }

    #[test]
    fn a_session_creates_queries_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("weir-sql-shell-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("bid.csv");
        std::fs::write(
            &data,
            "2020-04-15 08:05:00,4.00,C\n2020-04-15 08:07:00,2.00,A\n2020-04-15 08:09:00,5.00,D\n2020-04-15 08:11:00,3.00,B\n",
        )
        .unwrap();
        let script = format!(
            "CREATE TABLE Bid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
SHOW TABLES;
SELECT window_start, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;
SELECT nope FROM Bid;
CREATE TABLE Bid (x INT) WITH ('connector' = 'mqtt');
QUIT;
SHOW TABLES;
",
            data.display()
        );
        let mut out = Vec::new();
        run(script.as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let want = "[INFO] Execute statement succeeded.
Bid
1 table(s)
+-------------------------+-------+
|            window_start | total |
+-------------------------+-------+
| 2020-04-15 08:00:00.000 | 11.00 |
| 2020-04-15 08:10:00.000 |  3.00 |
+-------------------------+-------+
2 row(s) in set (4 input rows, 0 bad, 0 late)
";
        assert!(out.starts_with(want), "{out}");
        let rest = &out[want.len()..];
        assert!(rest.starts_with("[ERROR] "), "{rest}");
        assert!(rest.contains("table `Bid` already exists"), "{rest}");
        // Nothing after QUIT ran.
        assert_eq!(rest.matches("table(s)").count(), 0, "{rest}");
    }

    #[test]
    fn describe_and_show_list_what_the_session_created() {
        let script = "CREATE TABLE s (sensor STRING, ts BIGINT, `value` DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND)
  WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
CREATE VIEW hot AS SELECT sensor, rowtime, `value` FROM s WHERE `value` > 80;
DESCRIBE s;
SHOW VIEWS;
SHOW FUNCTIONS;
DESC nope;
SHOW DATABASES;
";
        let mut out = Vec::new();
        run(script.as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let want = "[INFO] Execute statement succeeded.
[INFO] Execute statement succeeded.
+---------+----------------------------+------+------------------------------+---------------------------------+
|    name |                       type | null |                       extras |                       watermark |
+---------+----------------------------+------+------------------------------+---------------------------------+
|  sensor |                     STRING | TRUE |                              |                                 |
|      ts |                     BIGINT | TRUE |                              |                                 |
|   value |                     DOUBLE | TRUE |                              |                                 |
| rowtime | TIMESTAMP_LTZ(3) *ROWTIME* | TRUE | AS TO_TIMESTAMP_LTZ(`ts`, 3) | `rowtime` - INTERVAL '2' SECOND |
+---------+----------------------------+------+------------------------------+---------------------------------+
4 row(s) in set
hot
1 view(s)
0 function(s)
[ERROR] no table `nope` in this session
";
        assert!(out.starts_with(want), "{out}");
        assert!(out.contains("`SHOW DATABASES` is not supported"), "{out}");
    }
}
