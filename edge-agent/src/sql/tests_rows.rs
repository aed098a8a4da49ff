//! Queries without `GROUP BY`: Flink's window TVFs without an aggregation
//! (its documentation's `SELECT * FROM TABLE(TUMBLE(TABLE Bid, …))`, each
//! row with its window's bounds, once per window) and plain `SELECT …
//! FROM t WHERE …`, rows in input order, as they come.

use super::tests_groups::{BID, BID_ROWS};
use super::*;

/// Flink's times as weir writes them: `08:05` is `2020-04-15 08:05:00.000`.
fn at(hm: &str) -> String {
    format!("2020-04-15 {hm}:00.000")
}

/// The output of `weir replay` (header, then rows in the order written),
/// checking that the summary counts the rows written and nothing is bad.
pub(super) fn replay(sql: &str, input: &str) -> Vec<String> {
    let p = parse("q.sql", sql).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(sum.windows as usize + 1, lines.len(), "{text}");
    lines
}

/// A Bid row with one window, as Flink prints it.
fn bid_row(time: &str, rest: &str, start: &str, end: &str) -> String {
    let (e, last) = end.split_once(':').unwrap();
    let before: u32 = last.parse().unwrap();
    let wt = if before == 0 {
        format!("2020-04-15 {:02}:59:59.999", e.parse::<u32>().unwrap() - 1)
    } else {
        format!("2020-04-15 {e}:{:02}:59.999", before - 1)
    };
    format!("{},{rest},{},{},{wt}", at(time), at(start), at(end))
}

#[test]
fn tumble_without_group_by_gives_each_row_with_its_window() {
    // Flink's documentation: SELECT * FROM TABLE(TUMBLE(TABLE Bid,
    // DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)).
    let rows = replay(
        &format!(
            "{BID}SELECT * FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES));"
        ),
        BID_ROWS,
    );
    assert_eq!(
        rows,
        [
            "bidtime,price,item,supplier_id,window_start,window_end,window_time".to_string(),
            bid_row("08:05", "4.00,C,supplier1", "08:00", "08:10"),
            bid_row("08:07", "2.00,A,supplier1", "08:00", "08:10"),
            bid_row("08:09", "5.00,D,supplier2", "08:00", "08:10"),
            bid_row("08:11", "3.00,B,supplier2", "08:10", "08:20"),
            bid_row("08:13", "1.00,E,supplier1", "08:10", "08:20"),
            bid_row("08:17", "6.00,F,supplier2", "08:10", "08:20"),
        ]
    );
}

#[test]
fn hop_and_cumulate_give_a_row_per_window_in_flinks_order() {
    let hop = replay(
        &format!(
            "{BID}SELECT item, window_start, window_end FROM TABLE(
               HOP(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES, INTERVAL '10' MINUTES));"
        ),
        BID_ROWS,
    );
    // Each row in two windows, the later start first (Flink's sliding
    // assigner).
    let w = |item: &str, s: &str, e: &str| format!("{item},{},{}", at(s), at(e));
    assert_eq!(
        hop[1..],
        [
            w("C", "08:05", "08:15"),
            w("C", "08:00", "08:10"),
            w("A", "08:05", "08:15"),
            w("A", "08:00", "08:10"),
            w("D", "08:05", "08:15"),
            w("D", "08:00", "08:10"),
            w("B", "08:10", "08:20"),
            w("B", "08:05", "08:15"),
            w("E", "08:10", "08:20"),
            w("E", "08:05", "08:15"),
            w("F", "08:15", "08:25"),
            w("F", "08:10", "08:20"),
        ]
    );
    let cum = replay(
        &format!(
            "{BID}SELECT item, window_start, window_end FROM TABLE(
               CUMULATE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '2' MINUTES, INTERVAL '10' MINUTES))
             WHERE item IN ('C', 'B');"
        ),
        BID_ROWS,
    );
    // Every cumulating window that holds the row, the smallest first.
    assert_eq!(
        cum[1..],
        [
            w("C", "08:00", "08:06"),
            w("C", "08:00", "08:08"),
            w("C", "08:00", "08:10"),
            w("B", "08:10", "08:12"),
            w("B", "08:10", "08:14"),
            w("B", "08:10", "08:16"),
            w("B", "08:10", "08:18"),
            w("B", "08:10", "08:20"),
        ]
    );
}

const M: &str = "CREATE TABLE m (plant INT, line STRING, ts BIGINT, v DOUBLE, ok BOOLEAN,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv');
";

/// Out of order on purpose: the row at …05 s comes after the one at …08 s.
const M_ROWS: &str = "1,a,1700000001000,2,true
1,b,1700000008000,10,false
2,a,1700000005000,,true
12,a,1700000006000,7,false
3,\"c,d\",1700000007000,5,true
";

#[test]
fn a_query_without_a_window_gives_its_rows_as_they_come() {
    // SELECT *: the columns in order, the computed time attribute last.
    let all = replay(&format!("{M}SELECT * FROM m;"), M_ROWS);
    assert_eq!(
        all,
        [
            "plant,line,ts,v,ok,rowtime",
            "1,a,1700000001000,2.000000,true,2023-11-14 22:13:21.000",
            "1,b,1700000008000,10.000000,false,2023-11-14 22:13:28.000",
            // A NULL (an empty cell) stays NULL; a row far behind the
            // newest is not late: nothing waits for the watermark.
            "2,a,1700000005000,,true,2023-11-14 22:13:25.000",
            "12,a,1700000006000,7.000000,false,2023-11-14 22:13:26.000",
            "3,\"c,d\",1700000007000,5.000000,true,2023-11-14 22:13:27.000",
        ]
    );
    // WHERE over a text, a number and the epoch column; expressions.
    let some = replay(
        &format!(
            "{M}SELECT plant + 1 AS p, UPPER(line) AS l, v * 2 AS dv, ts / 1000 AS secs,
                    CASE WHEN v > 6 THEN 'high' ELSE 'low' END AS band
             FROM m WHERE line <> 'b' AND (v > 4 OR v IS NULL) AND ts >= 1700000005000 AND NOT ok IS NULL;"
        ),
        M_ROWS,
    );
    assert_eq!(
        some,
        [
            "p,l,dv,secs,band",
            "3,A,,1700000005,low",
            "13,A,14.000000,1700000006,high",
            "4,\"C,D\",10.000000,1700000007,low",
        ]
    );
    // A BOOLEAN column as the whole condition.
    let ok = replay(&format!("{M}SELECT plant FROM m WHERE ok;"), M_ROWS);
    assert_eq!(ok, ["plant", "1", "2", "3"]);
}

#[test]
fn rows_take_where_on_the_window_order_by_and_limit() {
    let late = replay(
        &format!(
            "{BID}SELECT item, price FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
             WHERE window_start = TIMESTAMP '2020-04-15 08:10:00';"
        ),
        BID_ROWS,
    );
    assert_eq!(late, ["item,price", "B,3.00", "E,1.00", "F,6.00"]);
    let top = replay(
        &format!("{BID}SELECT item, price FROM Bid ORDER BY price DESC LIMIT 2;"),
        BID_ROWS,
    );
    assert_eq!(top, ["item,price", "F,6.00", "D,5.00"]);
    let first = replay(&format!("{BID}SELECT item FROM Bid LIMIT 2;"), BID_ROWS);
    assert_eq!(first, ["item", "C", "A"]);
}

#[test]
fn every_row_of_a_long_input_comes_out_once() {
    // Many blocks of input: each block's rows are written with it.
    let n = 150_000u64;
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!(
            "{},x,{},{},true\n",
            i % 7,
            1_700_000_000_000 + i,
            i
        ));
    }
    let p = parse(
        "q.sql",
        &format!("{M}SELECT plant, v FROM m WHERE plant = 3;"),
    )
    .unwrap();
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let want: Vec<u64> = (0..n).filter(|i| i % 7 == 3).collect();
    assert_eq!(sum.rows, n);
    assert_eq!(sum.windows, want.len() as u64);
    let got: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (p, v) = l.split_once(',').unwrap();
            assert_eq!(p, "3");
            v.parse::<f64>().unwrap() as u64
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn queries_without_group_by_say_what_they_cannot_do() {
    let msg = |sql: &str| parse("q.sql", sql).unwrap_err().to_string();
    let e = msg(&format!(
        "{BID}SELECT * FROM TABLE(SESSION(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES));"
    ));
    assert!(e.contains("SESSION window TVF without GROUP BY"), "{e}");
    let e = msg(&format!(
        "{BID}SELECT AVG(price) FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES));"
    ));
    assert!(
        e.contains("an aggregate (AVG) in a query without GROUP BY"),
        "{e}"
    );
    assert!(e.contains("GROUP BY window_start, window_end"), "{e}");
    let e = msg(&format!("{BID}SELECT item, item FROM Bid;"));
    assert!(e.contains("two result columns are named `item`"), "{e}");
    let e = msg(&format!("{BID}SELECT colour FROM Bid;"));
    assert!(e.contains("no column `colour`"), "{e}");
    // weir run takes them, over HOP too (a row per window).
    let p = parse("q.sql", &format!("{BID}SELECT * FROM Bid WHERE price > 2;")).unwrap();
    p.agent_can_run().unwrap();
    let p = parse(
        "q.sql",
        &format!("{BID}SELECT * FROM TABLE(HOP(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES, INTERVAL '10' MINUTES));"),
    )
    .unwrap();
    p.agent_can_run().unwrap();
    // EXPLAIN says how rows are made.
    let p = parse(
        "q.sql",
        &format!("{BID}EXPLAIN SELECT item FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) WHERE price > 2;"),
    )
    .unwrap();
    assert!(
        p.query
            .explain
            .contains("rows: each row as it comes, once per window"),
        "{}",
        p.query.explain
    );
    assert!(
        p.query.explain.contains("filter (on each row): price > 2"),
        "{}",
        p.query.explain
    );
}

#[test]
fn a_window_aggregation_reads_the_epoch_column_the_time_is_computed_from() {
    let rows = replay(
        &format!(
            "{M}SELECT window_start, COUNT(*) AS n
             FROM TABLE(TUMBLE(TABLE m, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))
             WHERE ts >= 1700000005000
             GROUP BY window_start, window_end;"
        ),
        "1,a,1700000001000,2,true\n1,a,1700000005000,2,true\n1,a,1700000007000,2,true\n",
    );
    assert_eq!(rows, ["window_start,n", "2023-11-14 22:13:00.000,2"]);
}

/// `window_start,window_end,window_time` as weir writes them.
fn bounds(start: &str, end: &str, time: &str) -> String {
    format!("{},{},2020-04-15 {time}", at(start), at(end))
}

#[test]
fn star_over_a_view_or_a_subquery_is_its_columns() {
    let view =
        "CREATE VIEW hot AS SELECT item, price * 10 AS p10, bidtime FROM Bid WHERE price > 2;\n";
    let rows = replay(&format!("{BID}{view}SELECT * FROM hot;"), BID_ROWS);
    assert_eq!(
        rows,
        [
            "item,p10,bidtime".to_string(),
            format!("C,40.00,{}", at("08:05")),
            format!("D,50.00,{}", at("08:09")),
            format!("B,30.00,{}", at("08:11")),
            format!("F,60.00,{}", at("08:17")),
        ]
    );
    let rows = replay(
        &format!("{BID}{view}SELECT * FROM TABLE(TUMBLE(TABLE hot, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) WHERE p10 > 35;"),
        BID_ROWS,
    );
    assert_eq!(
        rows[0],
        "item,p10,bidtime,window_start,window_end,window_time"
    );
    assert_eq!(
        rows[1..],
        [
            format!(
                "C,40.00,{},{}",
                at("08:05"),
                bounds("08:00", "08:10", "08:09:59.999")
            ),
            format!(
                "D,50.00,{},{}",
                at("08:09"),
                bounds("08:00", "08:10", "08:09:59.999")
            ),
            format!(
                "F,60.00,{},{}",
                at("08:17"),
                bounds("08:10", "08:20", "08:19:59.999")
            ),
        ]
    );
    let rows = replay(
        &format!("{BID}SELECT *, 1 AS one FROM (SELECT item AS it, bidtime AS t FROM Bid) WHERE it < 'C';"),
        BID_ROWS,
    );
    assert_eq!(
        rows,
        [
            "it,t,one".to_string(),
            format!("A,{},1", at("08:07")),
            format!("B,{},1", at("08:11")),
        ]
    );
}

#[test]
fn the_rows_operator_checkpoints_and_restores() {
    // weir run's engine for a query without GROUP BY: each sample comes
    // out at once as `[ts, ts + 1)` with its fields; a checkpoint holds no
    // state and restores into a new engine that goes on the same way.
    let p = parse(
        "q.sql",
        &format!("{M}SELECT plant, v, line FROM m WHERE v > 1;"),
    )
    .unwrap();
    let spec = &p.pipeline.spec;
    let mut a = spec.clone().build().unwrap();
    let t0 = 1_700_000_000_000;
    a.handle_sample(t0, 0, "a", t0, &[1.0, 5.0]).unwrap();
    let first: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    assert_eq!(first.len(), 1, "{first:?}");
    let weir_core::output::Output::Window(w) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!((w.start, w.end), (t0, t0 + 1));
    // The fields, then the constant the operator reads.
    assert_eq!(w.values.as_slice(), [1.0, 5.0, 1.0]);
    let snap = a.snapshot().unwrap();
    let mut b = spec.clone().build().unwrap();
    b.restore(&snap).unwrap();
    // Late for a window, not for a row: it still comes out.
    b.handle_sample(t0, 0, "a", t0 - 60_000, &[2.0, f64::NAN])
        .unwrap();
    let next: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(
        matches!(&next[..], [weir_core::output::Output::Window(w)] if w.start == t0 - 60_000 && w.values.as_slice()[0] == 2.0 && w.values.as_slice()[1].is_nan()),
        "{next:?}"
    );
}
