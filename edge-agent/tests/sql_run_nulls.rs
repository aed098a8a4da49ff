//! NULL aggregate inputs in `weir run` (Flink: each aggregate leaves its
//! own `NULL`s out, `COUNT(*)` counts every row): [`AgentCore`] computes
//! an aggregated expression that reads a text column from the decoded
//! reading before the journal, the others from the journal record (or in
//! the engine), and publishes the same rows as `weir replay`, with `NULL`
//! where a window had no non-`NULL` input. Virtual time, an in-memory
//! disk; a crash and a journal replay give the same rows.

mod sql_run_util;

use sql_run_util::{DDL, MESSAGES, T0};
use weir_agent::timefmt::{format_datetime_ms, parse_datetime_ms};

/// (`HAVING` makes `weir run` publish rows by column name.)
/// Expressions computed before the engine: `x` and `y` read `site` (at
/// ingest, journaled), `z` only `temp` (from the journal record).
const TEXT: &str = "SELECT sensor, window_start, COUNT(*) AS n,
  COUNT(CASE WHEN site = 'north' THEN 1 END) AS x,
  AVG(CASE WHEN site = 'north' THEN temp END) AS y,
  MIN(CASE WHEN temp > 35 THEN temp END) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// Expressions computed in the engine (they read only `temp`).
const NUMERIC: &str = "SELECT sensor, window_start, COUNT(*) AS n,
  COUNT(CASE WHEN temp > 35 THEN 1 END) AS x,
  SUM(CASE WHEN temp > 35 THEN temp END) AS y,
  MAX(CASE WHEN temp > 35 THEN temp END) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// A JSON number or `null` as a row field: 6 decimals, or `NULL`.
fn field(v: &serde_json::Value) -> String {
    v.as_f64().map_or("NULL".to_string(), |x| format!("{x:.6}"))
}

/// The rows a core published, as `sensor,window_start,n,x,y,z`, sorted,
/// each once.
fn run(sql: &str, crash_after: Option<usize>) -> Vec<String> {
    let (mut rows, _) = sql_run_util::run(sql, crash_after, |j| {
        format!(
            "{},{},{},{},{},{}",
            j["sensor"].as_str().unwrap(),
            format_datetime_ms(j["window_start"].as_i64().unwrap()),
            j["n"],
            j["x"],
            field(&j["y"]),
            field(&j["z"]),
        )
    });
    rows.sort();
    rows.dedup();
    rows
}

/// `weir replay`'s rows over the same readings, without `c`'s and `d`'s
/// windows, which only its end of input fires.
fn replay(sql: &str) -> Vec<String> {
    as_run(&sql_run_util::replay(sql), &["c,", "d,"])
}

/// `weir replay`'s CSV rows `sensor,window_start,n,x,y,z` as [`run`] gives
/// them (6 decimals, `NULL` for an empty field), sorted, without the rows
/// of the keys `skip` starts.
fn as_run(lines: &[String], skip: &[&str]) -> Vec<String> {
    let num = |s: &str| {
        if s.is_empty() {
            "NULL".to_string()
        } else {
            format!("{:.6}", s.parse::<f64>().unwrap())
        }
    };
    let mut rows: Vec<String> = lines
        .iter()
        .filter(|l| !skip.iter().any(|k| l.starts_with(k)))
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let start = parse_datetime_ms(c[1]).unwrap();
            let (y, z) = (num(c[4]), num(c[5]));
            format!(
                "{},{},{},{},{y},{z}",
                c[0],
                format_datetime_ms(start),
                c[2],
                c[3]
            )
        })
        .collect();
    rows.sort();
    rows
}

fn at(dt: i64) -> String {
    format_datetime_ms(T0 + dt)
}

#[test]
fn nulls_of_expressions_over_text_are_left_out_in_run() {
    let sql = format!("{DDL}{TEXT}");
    let rows = run(&sql, None);
    // By hand: `a` [0, 1 s): north 21, south 30, north 25, north 21; `b`
    // [0, 1 s): north 19, an absent site (NULL) 40, north 22.5; `a` [1 s,
    // 2 s): 'North' 50, north 24; `b` [1 s, 2 s): '' 30. `z`: above 35.
    let want = [
        format!("a,{},4,3,22.333333,NULL", at(0)),
        format!("a,{},2,1,24.000000,50.000000", at(1_000)),
        format!("b,{},3,2,20.750000,40.000000", at(0)),
        format!("b,{},1,0,NULL,NULL", at(1_000)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn nulls_of_expressions_in_the_engine_are_left_out_in_run() {
    let sql = format!("{DDL}{NUMERIC}");
    let rows = run(&sql, None);
    let want = [
        format!("a,{},4,0,NULL,NULL", at(0)),
        format!("a,{},2,1,50.000000,50.000000", at(1_000)),
        format!("b,{},3,1,40.000000,40.000000", at(0)),
        format!("b,{},1,0,NULL,NULL", at(1_000)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn a_journal_replay_after_a_crash_gives_the_same_rows() {
    for q in [TEXT, NUMERIC] {
        let sql = format!("{DDL}{q}");
        let whole = run(&sql, None);
        for after in 1..MESSAGES.len() {
            assert_eq!(
                run(&sql, Some(after)),
                whole,
                "crash after {after} messages"
            );
        }
    }
}

/// Input NULLs in `weir run`, as Flink's json format reads them: a field
/// that is absent or `null` is `NULL`, left out of its aggregates, counted
/// by `COUNT(*)`, through the journal and a crash; a record whose every
/// field is `NULL` still makes a row. `weir replay` reads the same
/// readings from CSV with empty cells and gives the same rows.
#[test]
fn absent_and_null_json_fields_are_null_inputs_in_run() {
    let sql = format!(
        "{DDL}SELECT sensor, window_start, COUNT(*) AS n, COUNT(temp) AS x,
  SUM(temp) AS y, MAX(temp) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;"
    );
    // (sensor, ms after T0, temp as JSON: "" for absent).
    let msgs: &[&[(&str, i64, &str)]] = &[
        &[("a", 0, "21.5"), ("a", 100, "null")],
        &[("a", 200, ""), ("b", 300, "null")],
        &[("a", 400, "3"), ("b", 1_200, "")],
        &[("c", 5_000, "1")],
    ];
    let payloads: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let recs: Vec<String> = m
                .iter()
                .map(|(k, dt, t)| {
                    let temp = if t.is_empty() {
                        String::new()
                    } else {
                        format!(r#","temp":{t}"#)
                    };
                    format!(r#"{{"sensor":"{k}","ts":{}{temp}}}"#, T0 + dt)
                })
                .collect();
            format!("[{}]", recs.join(",")).into_bytes()
        })
        .collect();
    let row = |j: &serde_json::Value| {
        format!(
            "{},{},{},{},{},{}",
            j["sensor"].as_str().unwrap(),
            format_datetime_ms(j["window_start"].as_i64().unwrap()),
            j["n"],
            j["x"],
            field(&j["y"]),
            field(&j["z"]),
        )
    };
    let rows = |crash: Option<usize>| {
        let (mut r, readings) = sql_run_util::run_payloads(&sql, &payloads, crash, row);
        r.sort();
        r.dedup();
        (r, readings)
    };
    let (whole, readings) = rows(None);
    assert_eq!(readings, 7, "every record is a reading, NULL or not");
    let want = [
        format!("a,{},4,2,24.500000,21.500000", at(0)),
        format!("b,{},1,0,NULL,NULL", at(0)),
        format!("b,{},1,0,NULL,NULL", at(1_000)),
    ];
    assert_eq!(whole, want);
    for after in 1..payloads.len() {
        assert_eq!(rows(Some(after)).0, whole, "crash after {after} messages");
    }
    // weir replay over the same readings: `site` empty, temp an empty cell.
    let mut csv = String::new();
    for (k, dt, t) in msgs.iter().flat_map(|m| m.iter()) {
        let t = if *t == "null" { "" } else { t };
        csv.push_str(&format!("{k},,{},{t}\n", T0 + dt));
    }
    let replayed = as_run(&sql_run_util::replay_csv(&sql, &csv), &["c,"]);
    assert_eq!(replayed, whole, "weir run and weir replay differ");
}
