//! A SQL query without `GROUP BY` in `weir run`: [`AgentCore`] publishes
//! one message per reading that passes `WHERE` (id `gw/q/<key>/<ts>/<lsn>`),
//! with the same rows as `weir replay` over the same readings, at once
//! (no window waits for the watermark). Virtual time, an in-memory disk;
//! after a crash and a journal replay, a row published twice has the
//! same id and payload, and none is lost.

mod sql_run_util;

use std::collections::{BTreeMap, BTreeSet};

use sql_run_util::{DDL, MESSAGES, T0};
use weir_agent::timefmt::format_datetime_ms;

/// Two text columns (a composite key in the journal), the epoch column and
/// an expression.
const ROWS: &str =
    "SELECT sensor, site, ts, temp * 2 AS t2 FROM s WHERE temp > 21 AND site = 'north';";

/// One text column (the key) over a tumbling window.
const TUMBLED: &str = "SELECT sensor, window_start, temp
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE temp < 30 AND window_start > TIMESTAMP '2026-05-28 20:26:39';";

/// The messages a core published: id → (row, start, end), and how many
/// messages there were (ids may repeat after a crash).
fn run(
    sql: &str,
    crash_after: Option<usize>,
    row: fn(&serde_json::Value) -> String,
) -> (BTreeMap<String, String>, usize) {
    let (msgs, _) = sql_run_util::run(sql, crash_after, |j| {
        format!(
            "{}|{}|{}|{}",
            j["id"].as_str().unwrap(),
            row(j),
            j["start"],
            j["end"]
        )
    });
    let mut by_id = BTreeMap::new();
    for m in &msgs {
        let (id, rest) = m.split_once('|').unwrap();
        if let Some(old) = by_id.insert(id.to_string(), rest.to_string()) {
            assert_eq!(old, rest, "one id, two messages");
        }
    }
    (by_id, msgs.len())
}

fn rows_row(j: &serde_json::Value) -> String {
    format!(
        "{},{},{},{:.6}",
        j["sensor"].as_str().unwrap(),
        j["site"].as_str().unwrap(),
        j["ts"].as_i64().unwrap(),
        j["t2"].as_f64().unwrap()
    )
}

fn tumbled_row(j: &serde_json::Value) -> String {
    format!(
        "{},{}.000,{:.6}",
        j["sensor"].as_str().unwrap(),
        format_datetime_ms(j["window_start"].as_i64().unwrap()),
        j["temp"].as_f64().unwrap()
    )
}

#[test]
fn each_reading_that_passes_where_is_a_message_with_replays_row() {
    let sql = format!("{DDL}{ROWS}");
    let (got, n) = run(&sql, None, rows_row);
    assert_eq!(n, got.len(), "each row once");
    let rows: Vec<&str> = got.values().map(|v| v.split('|').next().unwrap()).collect();
    let mut want = sql_run_util::replay(&sql);
    want.sort();
    let mut rows_sorted: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    rows_sorted.sort();
    assert_eq!(rows_sorted, want);
    assert_eq!(want.len(), 3, "{want:?}");
    for (id, v) in &got {
        // gw/q/<sensor,site>/<ts>/<lsn>, start the reading's time.
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts[..2], ["gw", "q"], "{id}");
        let fields: Vec<&str> = v.split('|').collect();
        let ts: i64 = fields[1].parse().unwrap();
        assert_eq!(parts[3], fields[1], "{id}");
        assert_eq!(fields[2].parse::<i64>().unwrap(), ts + 1);
        // The composite key, in the table's column order.
        assert!(parts[2].ends_with(",north"), "{id}");
        assert!(ts >= T0);
    }
}

#[test]
fn a_crash_and_a_journal_replay_give_the_same_messages() {
    for sql in [format!("{DDL}{ROWS}"), format!("{DDL}{TUMBLED}")] {
        let row = if sql.contains("TUMBLE") {
            tumbled_row
        } else {
            rows_row
        };
        // The rows, one per id (an id's lsn counts the crashed run's
        // extra ticks, so ids differ between the runs, not rows).
        let rows = |m: BTreeMap<String, String>| {
            let mut v: Vec<String> = m.into_values().collect();
            v.sort();
            v
        };
        let clean = rows(run(&sql, None, row).0);
        assert!(!clean.is_empty());
        for crash in 1..MESSAGES.len() {
            let crashed = rows(run(&sql, Some(crash), row).0);
            assert_eq!(crashed, clean, "crash after message {crash}");
        }
    }
}

#[test]
fn a_tumbling_window_gives_each_row_its_window_at_once() {
    let sql = format!("{DDL}{TUMBLED}");
    let (got, _) = run(&sql, None, tumbled_row);
    let rows: BTreeSet<String> = got
        .values()
        .map(|v| v.split('|').next().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = sql_run_util::replay(&sql).into_iter().collect();
    assert_eq!(rows, want);
    assert!(want.len() >= 4, "{want:?}");
    for v in got.values() {
        // The envelope's span is the row's window.
        let f: Vec<&str> = v.split('|').collect();
        let (start, end): (i64, i64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert_eq!(end - start, 1000, "{v}");
        assert_eq!(start % 1000, 0, "{v}");
    }
}

/// A table of events without a numeric column: `COUNT(*)` per key and
/// window counts them in `weir run` as in `weir replay`.
#[test]
fn events_without_a_numeric_column_are_counted() {
    let sql = "SET 'pipeline.name' = 'q';
CREATE TABLE doors (door STRING, state STRING, ts BIGINT,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT door, window_start, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE doors, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE state = 'open'
GROUP BY door, window_start, window_end;";
    let events = [
        ("d1", "open", 0),
        ("d1", "closed", 100),
        ("d2", "open", 200),
        ("d1", "open", 900),
        ("d1", "open", 1_500),
        ("d2", "closed", 2_600),
        // Kept: moves the watermark past the windows above (replay fires
        // its own window too, at the end of the input).
        ("d3", "open", 5_000),
    ];
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|(d, s, dt)| {
            format!(r#"{{"door":"{d}","state":"{s}","ts":{}}}"#, T0 + dt).into_bytes()
        })
        .collect();
    let csv: String = events
        .iter()
        .map(|(d, s, dt)| format!("{d},{s},{}\n", T0 + dt))
        .collect();
    let mut want = sql_run_util::replay_csv(sql, &csv);
    want.retain(|r| !r.starts_with("d3,"));
    want.sort();
    assert_eq!(want.len(), 3, "{want:?}");
    assert!(
        want.iter()
            .any(|r| r.starts_with("d1,") && r.ends_with(",2")),
        "{want:?}"
    );
    for crash in [None, Some(2)] {
        let (rows, _) = sql_run_util::run_payloads(sql, &payloads, crash, |j| {
            // Window messages of a TOML pipeline: `key`, `start`, `count`.
            format!(
                "{},{}.000,{}",
                j["key"].as_str().unwrap(),
                format_datetime_ms(j["start"].as_i64().unwrap()),
                j["count"]
            )
        });
        let mut rows: Vec<String> = rows
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        rows.sort();
        assert_eq!(rows, want, "crash {crash:?}");
    }
}

/// Rows of events without a numeric column, in `weir run`.
#[test]
fn rows_of_events_without_a_numeric_column() {
    let sql = "SET 'pipeline.name' = 'q';
CREATE TABLE doors (door STRING, state STRING, ts BIGINT,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT door, state, rowtime FROM doors WHERE state <> 'closed';";
    let events = [
        ("d1", "open", 0),
        ("d1", "closed", 100),
        ("d2", "ajar", 200),
    ];
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|(d, s, dt)| {
            format!(r#"{{"door":"{d}","state":"{s}","ts":{}}}"#, T0 + dt).into_bytes()
        })
        .collect();
    let csv: String = events
        .iter()
        .map(|(d, s, dt)| format!("{d},{s},{}\n", T0 + dt))
        .collect();
    let want = sql_run_util::replay_csv(sql, &csv);
    assert_eq!(want.len(), 2, "{want:?}");
    let (rows, _) = sql_run_util::run_payloads(sql, &payloads, None, |j| {
        format!(
            "{},{},{}",
            j["door"].as_str().unwrap(),
            j["state"].as_str().unwrap(),
            weir_agent::sql::exec::format_ts(j["rowtime"].as_i64().unwrap())
        )
    });
    assert_eq!(rows, want);
}

/// Over HOP a reading is a row in each of its windows, each its own
/// message (id `…/<ts>/<lsn>/<window start>`), as `weir replay` gives them.
#[test]
fn a_hopping_window_gives_a_row_per_window() {
    let sql = format!(
        "{DDL}SELECT sensor, window_start, window_end, temp
FROM TABLE(HOP(TABLE s, DESCRIPTOR(rowtime), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND))
WHERE temp > 22;"
    );
    let row = |j: &serde_json::Value| {
        format!(
            "{},{},{},{:.6}",
            j["sensor"].as_str().unwrap(),
            weir_agent::sql::exec::format_ts(j["window_start"].as_i64().unwrap()),
            weir_agent::sql::exec::format_ts(j["window_end"].as_i64().unwrap()),
            j["temp"].as_f64().unwrap()
        )
    };
    let want: BTreeSet<String> = sql_run_util::replay(&sql).into_iter().collect();
    assert!(want.len() >= 8, "{want:?}");
    for crash in [None, Some(3)] {
        let (got, _) = run(&sql, crash, row);
        let rows: BTreeSet<String> = got
            .values()
            .map(|v| v.split('|').next().unwrap().to_string())
            .collect();
        assert_eq!(rows, want, "crash {crash:?}");
        // A message per row and window.
        assert_eq!(got.len(), want.len());
        for (id, v) in &got {
            let start = v.split('|').nth(1).unwrap();
            assert!(id.ends_with(&format!("/{start}")), "{id}: {v}");
        }
    }
}

/// `OVER` aggregates: a moving average of each sensor's last three
/// readings, their count and the reading before, a row per reading once
/// the watermark passes it.
const OVER: &str = "SELECT sensor, ts, temp, AVG(temp) OVER w AS avg3, COUNT(*) OVER w AS n,
  LAG(temp, 1, 0) OVER w AS prev
FROM s WHERE temp < 45
WINDOW w AS (PARTITION BY sensor ORDER BY rowtime ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);";

fn over_row(j: &serde_json::Value) -> String {
    format!(
        "{},{},{:.6},{:.6},{},{:.6}",
        j["sensor"].as_str().unwrap(),
        j["ts"].as_i64().unwrap(),
        j["temp"].as_f64().unwrap(),
        j["avg3"].as_f64().unwrap(),
        j["n"].as_i64().unwrap(),
        j["prev"].as_f64().unwrap()
    )
}

#[test]
fn over_aggregates_publish_replays_rows_once_the_watermark_passes_them() {
    let sql = format!("{DDL}{OVER}");
    let (clean, n) = run(&sql, None, over_row);
    assert_eq!(n, clean.len(), "each row once");
    // The last readings (4.9 s, 5 s) hold the watermark at 3.999 s: their
    // rows wait (weir replay's end of input gives them).
    let want: Vec<String> = sql_run_util::replay(&sql)
        .into_iter()
        .filter(|r| r.split(',').nth(1).unwrap().parse::<i64>().unwrap() < T0 + 4_000)
        .collect();
    let mut rows: Vec<String> = clean
        .values()
        .map(|v| v.split('|').next().unwrap().to_string())
        .collect();
    rows.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(rows, want_sorted);
    assert!(want.len() >= 8, "{want:?}");
    for (id, v) in &clean {
        // gw/q/<sensor>/<ts>/<place among the sensor's rows of that time>.
        let parts: Vec<&str> = id.split('/').collect();
        let f: Vec<&str> = v.split('|').collect();
        assert_eq!(
            parts[..3],
            ["gw", "q", f[0].split(',').next().unwrap()],
            "{id}"
        );
        assert_eq!(parts[3], f[1], "{id}");
        assert_eq!(parts[4], "0", "{id}");
    }
    // A crash after any message, and the journal's replay, publish the
    // same ids with the same rows: none lost, none with two payloads.
    for crash in 1..MESSAGES.len() {
        let (crashed, _) = run(&sql, Some(crash), over_row);
        assert_eq!(crashed, clean, "crash after message {crash}");
    }
}

/// Readings of one sensor at one time (peers), as JSON payloads of `s`.
fn tied_payloads() -> Vec<Vec<u8>> {
    let msg = |m: &[(&str, i64, f64)]| {
        let recs: Vec<String> = m
            .iter()
            .map(|(s, dt, t)| {
                format!(
                    r#"{{"sensor":"{s}","meta":{{"site":"n"}},"ts":{},"temp":{t}}}"#,
                    T0 + dt
                )
            })
            .collect();
        format!("[{}]", recs.join(",")).into_bytes()
    };
    vec![
        msg(&[("a", 0, 21.0), ("a", 0, 22.0)]),
        msg(&[("a", 500, 23.0)]),
        msg(&[("a", 500, 24.0), ("b", 600, 29.0)]),
        msg(&[("a", 1_000, 25.0)]),
        msg(&[("a", 2_000, 26.0)]),
        msg(&[("a", 3_000, 27.0)]),
        msg(&[("a", 5_000, 28.0)]),
        msg(&[("a", 9_000, 29.0)]),
    ]
}

#[test]
fn over_rows_of_one_time_have_their_own_ids_across_checkpoints_and_crashes() {
    // Two readings of a sensor at one time are two rows (ids ending /0
    // and /1); with checkpoints between messages and a crash after any
    // message, every id comes with one payload and the rows are a clean
    // run's, for ROWS and RANGE frames.
    for frame in [
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW",
    ] {
        let sql = format!(
            "{DDL}SELECT sensor, ts, temp, SUM(temp) OVER w AS s, LAG(temp, 1, 0) OVER w AS prev FROM s
             WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"
        );
        let row = |j: &serde_json::Value| {
            format!(
                "{}|{},{},{:.6},{:.6},{:.6}",
                j["id"].as_str().unwrap(),
                j["sensor"].as_str().unwrap(),
                j["ts"].as_i64().unwrap(),
                j["temp"].as_f64().unwrap(),
                j["s"].as_f64().unwrap(),
                j["prev"].as_f64().unwrap()
            )
        };
        let by_id = |msgs: Vec<String>| {
            let mut m = BTreeMap::new();
            for r in msgs {
                let (id, rest) = r.split_once('|').unwrap();
                if let Some(old) = m.insert(id.to_string(), rest.to_string()) {
                    assert_eq!(old, rest, "{frame}: one id, two payloads");
                }
            }
            m
        };
        let payloads = tied_payloads();
        let (clean, _) = sql_run_util::run_checkpointed(&sql, &payloads, None, Some(150), row);
        let clean = by_id(clean);
        assert!(
            clean.contains_key(&format!("gw/q/a/{T0}/1")),
            "{frame}: {clean:?}"
        );
        assert!(
            clean.contains_key(&format!("gw/q/a/{}/1", T0 + 500)),
            "{frame}: {clean:?}"
        );
        for crash in 1..payloads.len() {
            let (crashed, _) =
                sql_run_util::run_checkpointed(&sql, &payloads, Some(crash), Some(150), row);
            assert_eq!(
                by_id(crashed),
                clean,
                "{frame}: crash after message {crash}"
            );
        }
    }
}
