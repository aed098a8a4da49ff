//! Window Top-N and window deduplication: Flink's documented examples over
//! the `Bid` table, rows as Flink prints them, and what is refused.

use super::tests_groups::{BID, BID_ROWS};
use super::*;

/// `weir replay`'s output (header first), checking the summary counts its
/// rows.
fn replay(sql: &str) -> Vec<String> {
    let p = parse("q.sql", &format!("{BID}{sql}")).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, BID_ROWS.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(sum.windows as usize + 1, lines.len(), "{text}");
    lines
}

fn at(hm: &str) -> String {
    format!("2020-04-15 {hm}:00.000")
}

#[test]
fn window_top_n_after_a_window_aggregation_gives_flinks_rows() {
    // Flink's documentation (Window Top-N, "following after Window
    // Aggregation"): the top 3 suppliers by sales per 10 minutes.
    let rows = replay(
        "SELECT *
  FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) as rownum
    FROM (
      SELECT window_start, window_end, supplier_id, SUM(price) as price, COUNT(*) as cnt
      FROM TABLE(
        TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
      GROUP BY window_start, window_end, supplier_id
    )
  ) WHERE rownum <= 3;",
    );
    let w = |s: &str, e: &str, rest: &str| format!("{},{},{rest}", at(s), at(e));
    assert_eq!(
        rows,
        [
            "window_start,window_end,supplier_id,price,cnt,rownum".to_string(),
            w("08:00", "08:10", "supplier1,6.00,2,1"),
            w("08:00", "08:10", "supplier2,5.00,1,2"),
            w("08:10", "08:20", "supplier2,9.00,2,1"),
            w("08:10", "08:20", "supplier1,1.00,1,2"),
        ]
    );
}

#[test]
fn window_top_n_reads_a_view_or_a_with_query_by_name() {
    let agg = "SELECT window_start, window_end, supplier_id, SUM(price) AS price, COUNT(*) AS cnt
      FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
      GROUP BY window_start, window_end, supplier_id";
    let top = "SELECT * FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rownum
        FROM agg) WHERE rownum <= 1;";
    let w = |s: &str, e: &str, rest: &str| format!("{},{},{rest}", at(s), at(e));
    let want = [
        "window_start,window_end,supplier_id,price,cnt,rownum".to_string(),
        w("08:00", "08:10", "supplier1,6.00,2,1"),
        w("08:10", "08:20", "supplier2,9.00,2,1"),
    ];
    assert_eq!(
        replay(&format!("CREATE TEMPORARY VIEW agg AS {agg};\n{top}")),
        want
    );
    assert_eq!(replay(&format!("WITH agg AS ({agg})\n{top}")), want);
    // Its columns by name: what the outer `*` gives.
    let rows = replay(&format!(
        "WITH agg AS ({agg})
         SELECT * FROM (SELECT supplier_id, price, window_start, window_end,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price) AS r FROM agg)
         WHERE r <= 1;"
    ));
    assert_eq!(
        rows,
        [
            "supplier_id,price,window_start,window_end,r".to_string(),
            format!("supplier2,5.00,{},{},1", at("08:00"), at("08:10")),
            format!("supplier1,1.00,{},{},1", at("08:10"), at("08:20")),
        ]
    );
}

/// Flink's documented Top-N over the rows of a 10-minute TUMBLE, ordered
/// by `order`, `n` rows per window.
fn tvf_top(order: &str, n: u32) -> String {
    format!(
        "SELECT *
  FROM (
    SELECT bidtime, price, item, supplier_id, window_start, window_end,
      ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY {order}) AS rownum
    FROM TABLE(
      TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  ) WHERE rownum <= {n};"
    )
}

#[test]
fn window_top_n_after_a_window_tvf_gives_flinks_rows() {
    // Flink's documentation ("following after Window TVF"): the top 3
    // items by price per 10 minutes.
    let rows = replay(&tvf_top("price DESC", 3));
    let r = |t: &str, rest: &str, s: &str, e: &str, n: u32| {
        format!("{},{rest},{},{},{n}", at(t), at(s), at(e))
    };
    assert_eq!(
        rows,
        [
            "bidtime,price,item,supplier_id,window_start,window_end,rownum".to_string(),
            r("08:09", "5.00,D,supplier2", "08:00", "08:10", 1),
            r("08:05", "4.00,C,supplier1", "08:00", "08:10", 2),
            r("08:07", "2.00,A,supplier1", "08:00", "08:10", 3),
            r("08:17", "6.00,F,supplier2", "08:10", "08:20", 1),
            r("08:11", "3.00,B,supplier2", "08:10", "08:20", 2),
            r("08:13", "1.00,E,supplier1", "08:10", "08:20", 3),
        ]
    );
}

#[test]
fn window_deduplication_keeps_each_windows_last_row() {
    // Flink's documentation (Window Deduplication): the last row of each
    // 10-minute window.
    let rows = replay(&tvf_top("bidtime DESC", 1));
    assert_eq!(
        rows[1..],
        [
            format!(
                "{},5.00,D,supplier2,{},{},1",
                at("08:09"),
                at("08:00"),
                at("08:10")
            ),
            format!(
                "{},6.00,F,supplier2,{},{},1",
                at("08:17"),
                at("08:10"),
                at("08:20")
            ),
        ]
    );
}

#[test]
fn a_top_n_per_window_and_key_names_its_columns_and_keeps_ties_in_order() {
    // The cheapest item per supplier and window (`rownum = 1`), columns
    // named and renamed outside; rows that tie keep the order they came.
    let rows = replay(
        "SELECT supplier_id AS s, item, rownum AS r FROM (
           SELECT item, supplier_id, window_start, window_end, price,
             ROW_NUMBER() OVER (PARTITION BY window_start, window_end, supplier_id ORDER BY price) AS rownum
           FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '20' MINUTES))
         ) WHERE rownum = 1;",
    );
    assert_eq!(rows, ["s,item,r", "supplier1,E,1", "supplier2,B,1"]);
    let rows = replay(
        "SELECT item, rownum FROM (
           SELECT item, window_start, window_end, supplier_id,
             ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY supplier_id) AS rownum
           FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '20' MINUTES))
         ) WHERE rownum < 4;",
    );
    assert_eq!(rows, ["item,rownum", "C,1", "A,2", "E,3"]);
}

#[test]
fn top_n_queries_say_what_they_cannot_do() {
    let msg = |sql: &str| {
        parse("q.sql", &format!("{BID}{sql}"))
            .unwrap_err()
            .to_string()
    };
    let inner = "FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))";
    let cases = [
        (
            format!("SELECT * FROM (SELECT item, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price) AS rn {inner}) WHERE rn <= 2;"),
            "not per window",
        ),
        (
            format!("SELECT * FROM (SELECT item, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price) AS rn {inner});"),
            "without WHERE rownum <= n",
        ),
        (
            format!("SELECT * FROM (SELECT item, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price) AS rn {inner}) WHERE rn > 2;"),
            "WHERE rn > 2 around ROW_NUMBER()",
        ),
        (
            format!("SELECT * FROM (SELECT item, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY colour) AS rn {inner}) WHERE rn <= 2;"),
            "ORDER BY colour: not a result column",
        ),
        (
            format!("SELECT item, price * 2 FROM (SELECT item, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price) AS rn {inner}) WHERE rn <= 2;"),
            "the expression `price * 2` around a Top-N",
        ),
    ];
    for (sql, want) in cases {
        let e = msg(&sql);
        assert!(e.contains(want), "{sql}\n{e}");
    }
    // weir run refuses it by name; EXPLAIN says what it does.
    let p = parse(
        "q.sql",
        &format!("{BID}EXPLAIN SELECT * FROM (SELECT item, price, window_start, window_end, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rn {inner}) WHERE rn <= 2;"),
    )
    .unwrap();
    assert!(
        p.query
            .explain
            .contains("top-N: per (window_start, window_end), the first 2 rows by price DESC"),
        "{}",
        p.query.explain
    );
    let e = p.agent_can_run().unwrap_err();
    assert!(e.contains("does not run a window Top-N"), "{e}");
}

#[test]
fn deduplication_keeps_the_last_of_tied_rows_and_late_rows_are_left_out() {
    let run = |sql: &str, input: &str| {
        let p = parse("q.sql", &format!("{BID}{sql}")).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        let (sum, _) =
            exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
        (String::from_utf8(out).unwrap(), sum.late)
    };
    // Two rows at 08:09: Flink's deduplication keeps the later one.
    let input = "2020-04-15 08:05:00,4.00,C,supplier1
2020-04-15 08:09:00,5.00,D,supplier2
2020-04-15 08:09:00,7.00,X,supplier2
";
    let (text, _) = run(&tvf_top("bidtime DESC", 1), input);
    assert!(text.lines().nth(1).unwrap().contains(",7.00,X,"), "{text}");
    // Ascending keeps the first; a Top-N by price keeps ties as they came.
    let (text, _) = run(&tvf_top("bidtime", 1), input);
    assert!(text.lines().nth(1).unwrap().contains(",4.00,C,"), "{text}");
    // 08:06 comes once 08:21 moved the watermark past the first window's
    // end: Flink's window rank drops it as late.
    let input = "2020-04-15 08:05:00,4.00,C,supplier1
2020-04-15 08:07:00,2.00,A,supplier1
2020-04-15 08:21:00,3.00,B,supplier2
2020-04-15 08:06:00,0.50,LATE,supplier2
";
    let (text, late) = run(&tvf_top("price", 1), input);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains(",2.00,A,"), "{text}");
    assert_eq!(late, 1);
}
