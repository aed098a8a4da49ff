//! `LIMIT n`: the first `n` result rows in the order they fire (Flink's
//! streaming `LIMIT` without `ORDER BY`), the input read no further than
//! the block that gave them; `ORDER BY` over a bounded input (all rows,
//! sorted once it ends, `NULL`s placed as Flink places them); what is
//! refused.

use super::tests_groups::{BID, BID_ROWS};
use super::*;

const HOP: &str = "SELECT window_start, window_end, SUM(price) AS total
  FROM TABLE(HOP(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES, INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end";

/// The output of `weir replay` (header and rows, as they fire) and the
/// input rows it read.
fn replay(sql: &str, input: &str) -> (Vec<String>, u64) {
    let p = parse("q.sql", sql).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(sum.windows as usize + 1, text.lines().count(), "{text}");
    (text.lines().map(String::from).collect(), sum.rows)
}

#[test]
fn limit_keeps_the_first_rows_in_the_order_they_fire() {
    let (all, _) = replay(&format!("{BID}{HOP};"), BID_ROWS);
    assert_eq!(all.len(), 5, "{all:?}");
    for n in 0..=5 {
        let (rows, _) = replay(&format!("{BID}{HOP} LIMIT {n};"), BID_ROWS);
        assert_eq!(rows, all[..=n.min(4)], "LIMIT {n}");
    }
    // More than there are: all of them.
    assert_eq!(replay(&format!("{BID}{HOP} LIMIT 100;"), BID_ROWS).0, all);
    // LIMIT ALL is no limit.
    assert_eq!(replay(&format!("{BID}{HOP} LIMIT ALL;"), BID_ROWS).0, all);
    // EXPLAIN says so.
    let p = parse("q.sql", &format!("{BID}EXPLAIN {HOP} LIMIT 3;")).unwrap();
    assert!(
        p.query.explain.contains("limit: the first 3 result row(s)"),
        "{}",
        p.query.explain
    );
}

#[test]
fn a_limit_stops_reading_the_input() {
    // 300,000 readings a second apart (over 10 MiB): the first minute's
    // window fires after a few rows, in the first block read.
    let mut input = String::new();
    for i in 0..300_000u64 {
        input.push_str(&format!(
            "2020-04-15 {:02}:{:02}:{:02},1.00,A,s\n",
            8 + i / 3600 % 16,
            i / 60 % 60,
            i % 60
        ));
    }
    let q = "SELECT window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '1' MINUTE))
  GROUP BY window_start, window_end LIMIT 2;";
    let (rows, read) = replay(&format!("{BID}{q}"), &input);
    assert_eq!(
        rows,
        [
            "window_start,n",
            "2020-04-15 08:00:00.000,60",
            "2020-04-15 08:01:00.000,60"
        ]
    );
    assert!(read < 100_000, "read {read} rows for two windows");
}

#[test]
fn a_cascade_limits_its_second_query() {
    let sql = format!(
        "{BID}CREATE VIEW v AS SELECT window_time AS rowtime, SUM(price) AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY window_start, window_end, window_time;
SELECT window_start, SUM(s) AS total
  FROM TABLE(TUMBLE(TABLE v, DESCRIPTOR(rowtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end LIMIT 1;"
    );
    assert_eq!(
        replay(&sql, BID_ROWS).0,
        ["window_start,total", "2020-04-15 08:00:00.000,11.00"]
    );
    let view = sql
        .replace("window_time;\n", "window_time LIMIT 1;\n")
        .replace(" LIMIT 1;\"", ";");
    let e = parse("q.sql", &view).unwrap_err().to_string();
    assert!(
        e.contains("LIMIT or ORDER BY in the first query of a cascade"),
        "{e}"
    );
}

#[test]
fn offsets_and_odd_limits_are_refused_and_weir_run_refuses_any() {
    for (tail, says) in [
        (" LIMIT 2 OFFSET 1", "OFFSET"),
        (" LIMIT 1, 2", "syntax error"),
        (" ORDER BY nope", "ORDER BY nope: not a result column"),
        (" ORDER BY 4", "ORDER BY 4: not a result column"),
        (" ORDER BY total + 1", "not a result column"),
        (" FETCH FIRST 2 ROWS ONLY", "FETCH"),
        (" LIMIT -1", "not a row count"),
        (" LIMIT 'x'", "not a row count"),
        (" LIMIT 1.5", "not a row count"),
    ] {
        let e = parse("q.sql", &format!("{BID}{HOP}{tail};"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{tail}: {e}");
        assert!(e.starts_with("q.sql:"), "{tail}: {e}");
    }
    let mqtt = BID.replace(
        "'connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv'",
        "'connector' = 'mqtt', 'topic' = 'bids/+', 'format' = 'json'",
    );
    assert_ne!(mqtt, BID);
    assert!(parse_for_run("q.sql", &format!("{mqtt}{HOP};")).is_ok());
    let e = parse_for_run("q.sql", &format!("{mqtt}{HOP} LIMIT 3;"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("weir run does not take LIMIT 3"), "{e}");
    let e = parse_for_run("q.sql", &format!("{mqtt}{HOP} ORDER BY total;"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("weir run does not take ORDER BY"), "{e}");
}

#[test]
fn order_by_sorts_every_row_once_the_input_ends() {
    let (all, _) = replay(&format!("{BID}{HOP};"), BID_ROWS);
    // HOP rows as they fire: 08:00 11, 08:05 15, 08:10 10, 08:15 6 (and
    // 07:55 4): by total, descending, then the first three.
    let q = |tail: &str| replay(&format!("{BID}{HOP}{tail};"), BID_ROWS).0;
    let mut by_total = all[1..].to_vec();
    by_total.sort_by(|a, b| {
        let t = |r: &String| r.rsplit(',').next().unwrap().parse::<f64>().unwrap();
        t(b).partial_cmp(&t(a)).unwrap()
    });
    assert_eq!(q(" ORDER BY total DESC")[1..], by_total[..]);
    assert_eq!(q(" ORDER BY 3 DESC")[1..], by_total[..]);
    assert_eq!(q(" ORDER BY total DESC LIMIT 3")[1..], by_total[..3]);
    assert_eq!(q(" ORDER BY total DESC LIMIT 3")[0], all[0]);
    // Numbers sort as numbers (11.00 after 4.00 ascending), times as times.
    let asc = q(" ORDER BY TOTAL ASC");
    let mut up = by_total.clone();
    up.reverse();
    assert_eq!(asc[1..], up[..]);
    assert_eq!(q(" ORDER BY window_end DESC")[1], all[all.len() - 1]);
    // Several keys, ties kept in firing order; EXPLAIN says so.
    let p = parse(
        "q.sql",
        &format!("{BID}EXPLAIN {HOP} ORDER BY window_start DESC, total;"),
    )
    .unwrap();
    assert!(
        p.query.explain.contains(
            "order: all result rows, sorted by window_start DESC NULLS LAST, total ASC NULLS FIRST"
        ),
        "{}",
        p.query.explain
    );
}

#[test]
fn nulls_sort_first_ascending_and_last_descending_as_in_flink() {
    // MAX over the suppliers' CASE: NULL where no bid of supplier2 is over 3.
    let q = |tail: &str| {
        replay(
            &format!(
                "{BID}SELECT window_start, MAX(CASE WHEN supplier_id = 'supplier2' AND price > 3 THEN price END) AS m
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY window_start, window_end{tail};"
            ),
            BID_ROWS,
        )
        .0
    };
    let m = |rows: Vec<String>| -> Vec<String> {
        rows[1..]
            .iter()
            .map(|r| r.split(',').nth(1).unwrap().to_string())
            .collect()
    };
    // Windows 08:05 (D 5.00), 08:10 (B 3.00: not over 3), 08:15 (F 6.00).
    assert_eq!(m(q("")), ["5.00", "", "6.00"]);
    assert_eq!(m(q(" ORDER BY m")), ["", "5.00", "6.00"]);
    assert_eq!(m(q(" ORDER BY m DESC")), ["6.00", "5.00", ""]);
    assert_eq!(m(q(" ORDER BY m NULLS LAST")), ["5.00", "6.00", ""]);
    assert_eq!(m(q(" ORDER BY m DESC NULLS FIRST")), ["", "6.00", "5.00"]);
}
