//! Several key columns and grouping sets (`super::groups`): Flink's
//! documented `GROUPING SETS` / `ROLLUP` / `CUBE` examples over the `Bid`
//! table, hand-computed rows, `EXPLAIN`, and errors.

use super::*;

/// Flink's `Bid` table from the window aggregation documentation.
pub(super) const BID: &str = "CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  supplier_id STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv');
";

/// Its rows, as Flink's documentation lists them.
pub(super) const BID_ROWS: &str = "2020-04-15 08:05:00,4.00,C,supplier1
2020-04-15 08:07:00,2.00,A,supplier1
2020-04-15 08:09:00,5.00,D,supplier2
2020-04-15 08:11:00,3.00,B,supplier2
2020-04-15 08:13:00,1.00,E,supplier1
2020-04-15 08:17:00,6.00,F,supplier2
";

/// Plants (INT) and lines (STRING), epoch milliseconds (1700000000000 is
/// 2023-11-14 22:13:20).
const M: &str = "CREATE TABLE m (plant INT, line STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'filesystem', 'format' = 'csv');
";

const M_ROWS: &str = "1,a,1700000001000,2
1,a,1700000002000,4
1,b,1700000003000,10
2,a,1700000004000,1
2,a,1700000005000,3
12,a,1700000006000,7
3,c,1700000007000,5
25,a,1700000008000,9
";

/// The header and the rows in the order weir writes them.
fn run(sql: &str, input: &str) -> Vec<String> {
    let p = parse("q.sql", sql).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let mut bad = Vec::new();
    exec::replay(&p, input.as_bytes(), &mut out, |b, _| bad.push(b.clone())).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows[1..].sort();
    rows
}

const W1: &str = "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000";
const W2: &str = "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000";

fn flinks_grouping_sets_rows() -> Vec<String> {
    // Flink's documented result, (NULL) as an empty field.
    let mut rows = vec!["window_start,window_end,supplier_id,total_price".to_string()];
    for (w, s, t) in [
        (W1, "", "11.00"),
        (W1, "supplier2", "5.00"),
        (W1, "supplier1", "6.00"),
        (W2, "", "10.00"),
        (W2, "supplier2", "9.00"),
        (W2, "supplier1", "1.00"),
    ] {
        rows.push(format!("{w},{s},{t}"));
    }
    sorted(rows)
}

#[test]
fn grouping_sets_and_rollup_as_flink_documents_them() {
    let q = |g: &str| {
        run(
            &format!(
                "{BID}SELECT window_start, window_end, supplier_id, SUM(price) AS total_price
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end, {g};"
            ),
            BID_ROWS,
        )
    };
    let gs = q("GROUPING SETS ((supplier_id), ())");
    assert_eq!(sorted(gs.clone()), flinks_grouping_sets_rows());
    // Within a window, the sets' rows in the order the sets are listed.
    assert_eq!(gs[3], format!("{W1},,11.00"));
    assert_eq!(gs[6], format!("{W2},,10.00"));
    assert_eq!(
        sorted(q("ROLLUP (supplier_id)")),
        flinks_grouping_sets_rows()
    );
}

#[test]
fn cube_over_two_columns() {
    let rows = sorted(run(
        &format!(
            "{BID}SELECT window_start, window_end, supplier_id, item, SUM(price) AS total_price
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end, CUBE (supplier_id, item);"
        ),
        BID_ROWS,
    ));
    // By hand: (supplier, item) is one bid each; (supplier), (item), ().
    let mut want = vec!["window_start,window_end,supplier_id,item,total_price".to_string()];
    for (w, s, i, t) in [
        (W1, "supplier1", "C", "4.00"),
        (W1, "supplier1", "A", "2.00"),
        (W1, "supplier2", "D", "5.00"),
        (W1, "supplier1", "", "6.00"),
        (W1, "supplier2", "", "5.00"),
        (W1, "", "C", "4.00"),
        (W1, "", "A", "2.00"),
        (W1, "", "D", "5.00"),
        (W1, "", "", "11.00"),
        (W2, "supplier2", "B", "3.00"),
        (W2, "supplier1", "E", "1.00"),
        (W2, "supplier2", "F", "6.00"),
        (W2, "supplier2", "", "9.00"),
        (W2, "supplier1", "", "1.00"),
        (W2, "", "B", "3.00"),
        (W2, "", "E", "1.00"),
        (W2, "", "F", "6.00"),
        (W2, "", "", "10.00"),
    ] {
        want.push(format!("{w},{s},{i},{t}"));
    }
    assert_eq!(rows, sorted(want));
}

#[test]
fn several_key_columns_in_any_order_with_their_types() {
    let rows = sorted(run(
        &format!(
            "{M}SELECT plant, line, window_start, plant * 10 AS p10, COUNT(*) AS n, AVG(v) AS m
FROM TABLE(TUMBLE(TABLE m, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))
WHERE line <> 'c' AND plant < 20
GROUP BY line, window_start, plant, window_end
HAVING plant > 1 OR line = 'a';"
        ),
        M_ROWS,
    ));
    // By hand: (1,a) 2 rows mean 3; (1,b) fails HAVING; (2,a) 2 rows mean
    // 2; (12,a) 1 row; (3,c) and (25,a) fail WHERE.
    let t0 = "2023-11-14 22:13:20.000";
    assert_eq!(
        rows,
        [
            "plant,line,window_start,p10,n,m".to_string(),
            format!("1,a,{t0},10,2,3.000000"),
            format!("12,a,{t0},120,1,7.000000"),
            format!("2,a,{t0},20,2,2.000000"),
        ]
    );
}

#[test]
fn sessions_partitioned_by_two_columns() {
    let q = |p: &str| {
        format!(
            "{M}SELECT plant, line, window_start, window_end, COUNT(*) AS n
FROM TABLE(SESSION(TABLE m PARTITION BY {p}, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY plant, line, window_start, window_end;"
        )
    };
    let rows = sorted(run(&q("(plant, line)"), M_ROWS));
    // By hand: rows of one (plant, line) at most 1 s apart are one session.
    let t = |s: u32| format!("2023-11-14 22:13:2{s}.000");
    let mut want = vec!["plant,line,window_start,window_end,n".to_string()];
    for (p, l, s, e, n) in [
        (1, "a", 1, 3, 2),
        (1, "b", 3, 4, 1),
        (2, "a", 4, 6, 2),
        (12, "a", 6, 7, 1),
        (3, "c", 7, 8, 1),
        (25, "a", 8, 9, 1),
    ] {
        want.push(format!("{p},{l},{},{},{n}", t(s), t(e)));
    }
    assert_eq!(rows, sorted(want));
    let e = parse("q.sql", &q("(plant)")).unwrap_err().to_string();
    assert!(
        e.contains("PARTITION BY and GROUP BY name different keys"),
        "{e}"
    );
}

#[test]
fn explain_names_the_sets_sources_and_operators() {
    let p = parse(
        "q.sql",
        &format!(
            "{BID}EXPLAIN SELECT window_start, window_end, supplier_id, item, SUM(price) AS s, MAX(price) AS m
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end, supplier_id, ROLLUP (item);"
        ),
    )
    .unwrap();
    let e = &p.query.explain;
    assert!(
        e.contains("key (`supplier_id`, `item`) as one composite key"),
        "{e}"
    );
    assert!(
        e.contains("(supplier_id, item) `Bid@supplier_id+item`, (supplier_id) `Bid@supplier_id`"),
        "{e}"
    );
    let ids: Vec<(&str, &str)> = p
        .pipeline
        .spec
        .operators
        .iter()
        .map(|o| (o.id.as_str(), o.source.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("query@supplier_id+item", "Bid@supplier_id+item"),
            ("query@supplier_id", "Bid@supplier_id")
        ]
    );
}

#[test]
fn unsupported_grouping_is_refused_by_name() {
    let q = |g: &str, w: &str| {
        let sql = format!(
            "{M}SELECT window_start, window_end, COUNT(*) AS n
FROM TABLE({w})
GROUP BY window_start, window_end, {g};"
        );
        parse("q.sql", &sql).unwrap_err().to_string()
    };
    let tumble = "TUMBLE(TABLE m, DESCRIPTOR(rowtime), INTERVAL '1' SECOND)";
    let e = q("ROLLUP (plant), CUBE (line)", tumble);
    assert!(e.contains("two GROUPING SETS / ROLLUP / CUBE"), "{e}");
    assert!(e.contains("q.sql:7:"), "{e}");
    let e = q("GROUPING SETS ((plant), (plant))", tumble);
    assert!(e.contains("the same grouping set twice"), "{e}");
    let e = q("GROUPING SETS ((v), ())", tumble);
    assert!(e.contains("cannot group by `v` (DOUBLE)"), "{e}");
    let e = parse(
        "q.sql",
        &format!(
            "{M}SELECT window_start, GROUPING(line) AS g, COUNT(*) AS n
FROM TABLE({tumble}) GROUP BY window_start, window_end, ROLLUP (plant);"
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`line` in GROUPING is not a GROUP BY key column"),
        "{e}"
    );
    let e = q(
        "plant, ROLLUP (line)",
        "SESSION(TABLE m PARTITION BY plant, DESCRIPTOR(rowtime), INTERVAL '1' SECOND)",
    );
    assert!(e.contains("over SESSION windows is not supported"), "{e}");
    // weir run takes several key columns from JSON, not from SenML (whose
    // records carry no text fields).
    let sql = |format: &str| {
        format!(
            "{}SELECT plant, line, window_start, window_end, COUNT(*) AS n
FROM TABLE({tumble}) GROUP BY window_start, window_end, plant, line;",
            M.replace(
                "'connector' = 'filesystem', 'format' = 'csv'",
                &format!("'connector' = 'mqtt', 'topic' = 'p/+', 'format' = '{format}'")
            )
        )
    };
    parse_for_run("q.sql", &sql("json")).unwrap();
    let e = parse_for_run("q.sql", &sql("senml-json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weir run does not take several GROUP BY key columns"),
        "{e}"
    );
}

#[test]
fn grouping_and_grouping_id_tell_the_sets_apart() {
    let rows = sorted(run(
        &format!(
            "{BID}SELECT window_start, supplier_id, item, GROUPING(supplier_id) AS gs,
       GROUPING_ID(supplier_id, item) AS gid, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end, CUBE (supplier_id, item)
  HAVING GROUPING_ID(supplier_id, item) > 0 AND COUNT(*) > 1;"
        ),
        BID_ROWS,
    ));
    // By hand: (supplier1) has 2 bids in the first window, (supplier2) 2
    // in the second, () 3 in each; the item sets hold one bid each.
    let (w1, w2) = ("2020-04-15 08:00:00.000", "2020-04-15 08:10:00.000");
    assert_eq!(
        rows,
        [
            "window_start,supplier_id,item,gs,gid,n".to_string(),
            format!("{w1},,,1,3,3"),
            format!("{w1},supplier1,,0,1,2"),
            format!("{w2},,,1,3,3"),
            format!("{w2},supplier2,,0,1,2"),
        ]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// `CUBE (a, b)` against a group-by model: per 10 s window and each of
    /// the sets (a, b), (a), (b), (), the count and sum of the rows.
    #[test]
    fn cube_matches_a_group_by_model(
        mut rows in proptest::collection::vec((0u8..3, 0u8..3, 0i64..40_000, -5i32..5), 1..60)
    ) {
        // In time order: a row behind the watermark would be late.
        rows.sort_by_key(|r| r.2);
        let t0 = 1_700_000_000_000i64;
        let input: String = rows
            .iter()
            .map(|(a, b, t, v)| format!("k{a},{b},{},{v}\n", t0 + t))
            .collect();
        let sql = "CREATE TABLE t (a STRING, b INT, ts BIGINT, v INT,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'filesystem', 'format' = 'csv');
SELECT a, b, CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n, SUM(v) AS s
FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, CUBE (a, b);";
        let got = sorted(run(sql, &input));
        let mut model = std::collections::BTreeMap::new();
        for (a, b, t, v) in &rows {
            let ws = (t0 + t) / 10_000 * 10_000;
            for (ka, kb) in [(true, true), (true, false), (false, true), (false, false)] {
                let a = if ka { format!("k{a}") } else { String::new() };
                let b = if kb { b.to_string() } else { String::new() };
                let e = model.entry((a, b, ws)).or_insert((0, 0));
                e.0 += 1;
                e.1 += v;
            }
        }
        let mut want = vec!["a,b,ws,n,s".to_string()];
        want.extend(model.iter().map(|((a, b, ws), (n, s))| format!("{a},{b},{ws},{n},{s}")));
        proptest::prop_assert_eq!(got, sorted(want));
    }
}
