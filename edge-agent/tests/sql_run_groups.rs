//! Several `GROUP BY` key columns and grouping sets in `weir run`: the
//! agent's core makes each reading's composite key from the decoded text
//! columns before the journal, feeds every grouping set's operators from
//! it, and publishes the same rows as `weir replay` over the same readings,
//! before and after a crash that replays the journal; ids and topics carry
//! the key as people read it.

mod sql_run_util;

use sql_run_util::{DDL, MESSAGES, T0};
use weir_agent::timefmt::{format_datetime_ms, parse_datetime_ms};

const TWO_KEYS: &str = "SELECT sensor, site, window_start, COUNT(*) AS n, SUM(temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, site, window_start, window_end;";

const ROLLUP: &str = "SELECT sensor, site, window_start, COUNT(*) AS n, SUM(temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE temp < 90
GROUP BY window_start, window_end, ROLLUP (sensor, site);";

fn text(v: &serde_json::Value) -> String {
    // NULL reads as the empty CSV cell replay writes for it.
    v.as_str().unwrap_or_default().to_string()
}

/// The rows a core published, as `sensor,site,window_start,n,x`, with
/// each message's id and topic.
fn run(sql: &str, crash_after: Option<usize>) -> Vec<String> {
    sql_run_util::run(sql, crash_after, |j| {
        format!(
            "{},{},{},{},{}",
            text(&j["sensor"]),
            text(&j["site"]),
            format_datetime_ms(j["window_start"].as_i64().unwrap()),
            j["n"],
            j["x"].as_f64().unwrap()
        )
    })
    .0
}

/// Replay's rows of the windows the agent fires (its watermark stops
/// before the last two readings' windows), in the agent's form.
fn replay(sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = sql_run_util::replay(sql)
        .iter()
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let start = parse_datetime_ms(c[2]).unwrap();
            let x: f64 = c[4].parse().unwrap();
            (start < T0 + 4_000).then(|| {
                format!(
                    "{},{},{},{},{x}",
                    c[0],
                    c[1],
                    format_datetime_ms(start),
                    c[3]
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn two_key_columns_give_replays_rows_in_run() {
    let sql = format!("{DDL}{TWO_KEYS}");
    let mut rows = run(&sql, None);
    rows.sort();
    let t = |dt: i64| format_datetime_ms(T0 + dt);
    // By hand: `a` north [0, 1 s): 21 + 25 + 21; `a` south: 30; `b`
    // north: 19 + 22.5; `b` without a site (read as ''): 40; [1 s, 2 s):
    // `a` North 50, `a` north 24, `b` '' 30.
    let mut want = [
        format!("a,North,{},1,50", t(1_000)),
        format!("a,north,{},1,24", t(1_000)),
        format!("a,north,{},3,67", t(0)),
        format!("a,south,{},1,30", t(0)),
        format!("b,,{},1,30", t(1_000)),
        format!("b,,{},1,40", t(0)),
        format!("b,north,{},2,41.5", t(0)),
    ];
    want.sort();
    assert_eq!(rows, want);
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn a_rollup_gives_replays_rows_in_run() {
    let sql = format!("{DDL}{ROLLUP}");
    let mut rows = run(&sql, None);
    rows.sort();
    let t = |dt: i64| format_datetime_ms(T0 + dt);
    // The subtotals per sensor (site NULL) and the window's total (both
    // NULL) beside the rows of both columns.
    for r in [
        format!(",,{},7,178.5", t(0)),
        format!(",,{},3,104", t(1_000)),
        format!("a,,{},4,97", t(0)),
        format!("b,,{},3,81.5", t(0)),
        format!("a,north,{},3,67", t(0)),
    ] {
        assert!(rows.contains(&r), "{r} not in {rows:#?}");
    }
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn a_journal_replay_after_a_crash_gives_the_same_rows() {
    // Each message whole: a subtotal's NULL and an empty site differ.
    let run = |sql: &str, at| sql_run_util::run(sql, at, |j| j.to_string()).0;
    for sql in [format!("{DDL}{TWO_KEYS}"), format!("{DDL}{ROLLUP}")] {
        let mut whole = run(&sql, None);
        whole.sort();
        for at in 1..MESSAGES.len() {
            let mut rows = run(&sql, Some(at));
            rows.sort();
            rows.dedup();
            assert_eq!(rows, whole, "crash after {at} messages");
        }
    }
}

#[test]
fn ids_and_topics_carry_the_key_as_people_read_it() {
    let sql = format!("{DDL}{ROLLUP}");
    let (seen, _) = sql_run_util::run(&sql, None, |j| j["id"].as_str().unwrap().to_string());
    let id = |k: &str| format!("gw/q/{k}/{T0}");
    for k in ["a,north", "a,south", "a,*", "b,north", "b,", "b,*", "*,*"] {
        assert!(seen.contains(&id(k)), "{} not in {seen:#?}", id(k));
    }
    assert!(seen.iter().all(|i| !i.contains('\u{1f}')), "{seen:?}");
}

#[test]
fn senml_tables_are_refused_with_several_key_columns() {
    let ddl = "CREATE TABLE s (sensor STRING, site STRING, ts BIGINT, temp DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rowtime AS rowtime)
  WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'senml-json');
";
    let e = weir_agent::sql::parse_for_run("q.sql", &format!("{ddl}{TWO_KEYS}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("SenML"), "{e}");
    assert!(weir_agent::sql::parse_for_run("q.sql", &format!("{DDL}{TWO_KEYS}")).is_ok());
}
