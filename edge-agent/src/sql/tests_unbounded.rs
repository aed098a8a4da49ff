//! Aggregations without a window: `GROUP BY sensor` over a plain table and
//! aggregates without `GROUP BY` give Flink's final result over a bounded
//! input, one row per group once the input ends (late rows included: a
//! regular aggregation has no window to be late for).

use super::tests_groups::{BID, BID_ROWS};
use super::tests_rows::replay;
use super::*;

#[test]
fn sums_counts_and_having_over_the_whole_input() {
    let rows = replay(
        &format!(
            "{BID}SELECT supplier_id, COUNT(*) AS n, SUM(price) AS total, AVG(price) AS mean
             FROM Bid GROUP BY supplier_id HAVING SUM(price) > 5;"
        ),
        BID_ROWS,
    );
    let mut got = rows[1..].to_vec();
    got.sort();
    assert_eq!(rows[0], "supplier_id,n,total,mean");
    // supplier1: 4 + 2 + 1; supplier2: 5 + 3 + 6.
    assert_eq!(
        got,
        ["supplier1,3,7.00,2.333333", "supplier2,3,14.00,4.666667"]
    );
    // Aggregates without GROUP BY: one row; WHERE before them.
    let rows = replay(
        &format!("{BID}SELECT COUNT(*) AS n, MIN(price) AS lo, SUM(price) * 2 AS twice FROM Bid WHERE item <> 'F';"),
        BID_ROWS,
    );
    assert_eq!(rows, ["n,lo,twice", "5,1.00,30.00"]);
}

#[test]
fn a_row_behind_the_watermark_still_counts() {
    // 08:01 comes after 08:17 (the watermark is at 08:16:59): a window
    // would drop it as late, a regular aggregation counts it.
    let input = format!("{BID_ROWS}2020-04-15 08:01:00,10.00,G,supplier1\n");
    let rows = replay(
        &format!("{BID}SELECT supplier_id, COUNT(*) AS n FROM Bid GROUP BY supplier_id;"),
        &input,
    );
    let mut got = rows[1..].to_vec();
    got.sort();
    assert_eq!(got, ["supplier1,4", "supplier2,3"]);
}

#[test]
fn weir_run_and_window_columns_refuse_it_by_name() {
    let p = parse(
        "q.sql",
        &format!("{BID}SELECT supplier_id, COUNT(*) FROM Bid GROUP BY supplier_id;"),
    )
    .unwrap();
    assert!(p.is_unbounded());
    let e = p.agent_can_run().unwrap_err();
    assert!(e.contains("without a window"), "{e}");
    let e = parse(
        "q.sql",
        &format!("{BID}SELECT supplier_id, window_start, COUNT(*) FROM Bid GROUP BY supplier_id;"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("window_start"), "{e}");
    // A window query is not one.
    let p = parse(
        "q.sql",
        &format!("{BID}SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) GROUP BY window_start, window_end;"),
    )
    .unwrap();
    assert!(!p.is_unbounded());
}

#[test]
fn select_distinct_is_a_group_by_of_its_columns() {
    // Over the whole input: each supplier once, at the end.
    let rows = replay(
        &format!("{BID}SELECT DISTINCT supplier_id AS s FROM Bid WHERE price > 1.5;"),
        BID_ROWS,
    );
    let mut got = rows[1..].to_vec();
    got.sort();
    assert_eq!(
        (rows[0].as_str(), got),
        ("s", vec!["supplier1".to_string(), "supplier2".into()])
    );
    // Over a window TVF: each supplier once per window (window_end is
    // grouped too, as a window aggregation needs).
    let rows = replay(
        &format!("{BID}SELECT DISTINCT supplier_id, window_start FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES));"),
        BID_ROWS,
    );
    let mut got = rows[1..].to_vec();
    got.sort();
    assert_eq!(
        got,
        [
            "supplier1,2020-04-15 08:00:00.000",
            "supplier1,2020-04-15 08:10:00.000",
            "supplier2,2020-04-15 08:00:00.000",
            "supplier2,2020-04-15 08:10:00.000",
        ]
    );
    let msg = |sql: &str| {
        parse("q.sql", &format!("{BID}{sql}"))
            .unwrap_err()
            .to_string()
    };
    let e = msg("SELECT DISTINCT price FROM Bid;");
    assert!(
        e.contains("cannot group by `price`")
            && e.contains("SELECT DISTINCT groups by its columns"),
        "{e}"
    );
    let e = msg("SELECT DISTINCT * FROM Bid;");
    assert!(e.contains("SELECT DISTINCT *"), "{e}");
    let e = msg("SELECT DISTINCT UPPER(item) FROM Bid;");
    assert!(e.contains("over the expression `UPPER(item)`"), "{e}");
}
