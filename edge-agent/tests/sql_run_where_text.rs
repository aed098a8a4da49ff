//! A SQL `WHERE` on a STRING column that is not the key, in `weir run`:
//! [`AgentCore`] decodes the column from the JSON payload, drops the
//! readings `WHERE` does not keep before the journal, and publishes the
//! same windows as `weir replay` over the same rows. Virtual time, an
//! in-memory disk; a crash and a journal replay give the same windows.

mod sql_run_util;

use sql_run_util::{DDL, MESSAGES, T0};
use weir_agent::timefmt::{format_datetime_ms, parse_datetime_ms};

const QUERY: &str = "SELECT sensor, window_start, COUNT(*) AS n, SUM(temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE site = 'north' AND temp > 20
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// `COUNT(DISTINCT …)` of a number in `weir run` (the engine's exact set).
const DISTINCT: &str = "SELECT sensor, window_start, COUNT(*) AS n, COUNT(DISTINCT temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE site = 'north'
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// The rows a core published, as `sensor,window_start,n,x`, and the
/// readings it journaled.
fn run(sql: &str, crash_after: Option<usize>) -> (Vec<String>, u64) {
    sql_run_util::run(sql, crash_after, |j| {
        format!(
            "{},{},{},{}",
            j["sensor"].as_str().unwrap(),
            format_datetime_ms(j["window_start"].as_i64().unwrap()),
            j["n"],
            j["x"].as_f64().unwrap()
        )
    })
}

fn replay(sql: &str) -> Vec<String> {
    sql_run_util::replay(sql)
        .iter()
        .map(|l| {
            // Times and numbers as the agent's JSON gives them.
            let c: Vec<&str> = l.split(',').collect();
            let total: f64 = c[3].parse().unwrap();
            let start = parse_datetime_ms(c[1]).unwrap();
            format!("{},{},{},{total}", c[0], format_datetime_ms(start), c[2])
        })
        .collect()
}

/// The agent's rows, sorted, and replay's (without `d`'s window, which
/// only replay's end of input fires).
fn both(sql: &str) -> (Vec<String>, Vec<String>, u64) {
    let (mut rows, readings) = run(sql, None);
    rows.sort();
    let mut replayed = replay(sql);
    replayed.retain(|r| !r.starts_with("d,"));
    replayed.sort();
    (rows, replayed, readings)
}

#[test]
fn where_on_a_text_column_gives_replays_windows_in_run() {
    let (rows, replayed, readings) = both(&with_query(QUERY));
    // By hand: `a` [0, 1 s): 21 + 25 + 21; `b` [0, 1 s): 22.5 (19 is too
    // cold, the absent site is NULL); `a` [1 s, 2 s): 24 ('North'
    // differs); `c` is in the south.
    let want = [
        format!("a,{},3,67", format_datetime_ms(T0)),
        format!("a,{},1,24", format_datetime_ms(T0 + 1_000)),
        format!("b,{},1,22.5", format_datetime_ms(T0)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replayed, "weir run and weir replay differ");
    assert_eq!(readings, 6, "only the kept readings are journaled");
}

#[test]
fn count_distinct_gives_replays_windows_in_run() {
    let (rows, replayed, _) = both(&with_query(DISTINCT));
    // `a` [0, 1 s): 21, 25, 21; `b` [0, 1 s): 19, 22.5.
    let want = [
        format!("a,{},3,2", format_datetime_ms(T0)),
        format!("a,{},1,1", format_datetime_ms(T0 + 1_000)),
        format!("b,{},2,2", format_datetime_ms(T0)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replayed, "weir run and weir replay differ");
}

/// `COUNT(DISTINCT …)` of a STRING column besides the key: the agent
/// computes its keys from the decoded text before the journal.
const DISTINCT_SITES: &str = "SELECT sensor, window_start, COUNT(*) AS n, COUNT(DISTINCT site) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE temp > 20
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

fn with_query(q: &str) -> String {
    format!("{DDL}{q}")
}

#[test]
fn count_distinct_of_a_text_column_in_run() {
    let sql = with_query(DISTINCT_SITES);
    let (rows, mut replayed, _) = both(&sql);
    replayed.retain(|r| !r.starts_with("c,"));
    // `a` [0, 1 s): north, south; `b` [0, 1 s): an absent site (NULL, not
    // counted) and north; `a` [1 s, 2 s): North, north; `b` [1 s, 2 s): ''.
    let want = |b0: &str| {
        [
            format!("a,{},4,2", format_datetime_ms(T0)),
            format!("a,{},2,2", format_datetime_ms(T0 + 1_000)),
            format!("b,{},2,{b0}", format_datetime_ms(T0)),
            format!("b,{},1,1", format_datetime_ms(T0 + 1_000)),
        ]
    };
    assert_eq!(rows, want("1"));
    // A CSV file has no NULL text: replay reads the absent site as ''.
    assert_eq!(replayed, want("2"));
}

#[test]
fn a_journal_replay_after_a_crash_gives_the_same_windows() {
    for sql in [with_query(QUERY), with_query(DISTINCT_SITES)] {
        let (mut whole, _) = run(&sql, None);
        whole.sort();
        for at in 1..MESSAGES.len() {
            let (mut rows, _) = run(&sql, Some(at));
            rows.sort();
            rows.dedup();
            assert_eq!(rows, whole, "crash after {at} messages");
        }
    }
}
