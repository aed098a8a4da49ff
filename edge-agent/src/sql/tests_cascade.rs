//! Cascaded windows: a query over a view that aggregates, Flink's
//! documented "Cascading Window Aggregation" over the `Bid` table first,
//! then rows by hand, `EXPLAIN`, and what `weir run` refuses.

use super::tests::run;
use super::tests_groups::{BID, BID_ROWS};
use super::*;

/// Flink's example: 5 minutes per supplier, then 10 minutes in all.
const CASCADE: &str = "CREATE VIEW window1 AS
SELECT window_start AS window_5mintumble_start, window_end AS window_5mintumble_end,
  window_time AS rowtime, SUM(price) AS partial_price
  FROM TABLE(
    TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY supplier_id, window_start, window_end, window_time;

SELECT window_start, window_end, SUM(partial_price) AS total_price
  FROM TABLE(
      TUMBLE(TABLE window1, DESCRIPTOR(rowtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;";

#[test]
fn flinks_cascading_window_aggregation() {
    // 5 minutes: supplier1 6 and supplier2 5 in [08:05, 08:10); supplier1
    // 1 and supplier2 3 in [08:10, 08:15); supplier2 6 in [08:15, 08:20).
    assert_eq!(
        run(&format!("{BID}{CASCADE}"), BID_ROWS),
        [
            "window_start,window_end,total_price",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00",
        ]
    );
    // The same as a WITH item and as a subquery.
    let with = CASCADE
        .replace("CREATE VIEW window1 AS\n", "WITH window1 AS (")
        .replace("window_time;\n", "window_time)\n");
    assert_eq!(
        run(&format!("{BID}{with}"), BID_ROWS),
        run(&format!("{BID}{CASCADE}"), BID_ROWS)
    );
}

#[test]
fn a_cascade_keeps_its_keys_and_exact_doubles() {
    // Per sensor: 1-second means, then the largest mean of each 2 seconds.
    let sql = "CREATE TABLE s (sensor STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'filesystem', 'format' = 'csv');
CREATE VIEW means (k, t, m, n) AS
  SELECT sensor, window_time, AVG(v), COUNT(*)
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
  GROUP BY sensor, window_start, window_end, window_time;
SELECT k, window_start, MAX(m) AS top, SUM(n) AS n, COUNT(*) AS windows
FROM TABLE(TUMBLE(TABLE means, DESCRIPTOR(t), INTERVAL '2' SECONDS))
GROUP BY k, window_start, window_end;";
    // a: [0, 1 s) 1/3 (1, 0, 0), [1, 2 s) 0.1; b: [1, 2 s) 2, [2, 3 s) 4.
    let rows = "a,1700000000000,1\na,1700000000100,0\na,1700000000200,0
a,1700000001000,0.1\nb,1700000001500,2\nb,1700000002000,4\n";
    let got = run(sql, rows);
    assert_eq!(
        got,
        [
            "k,window_start,top,n,windows",
            "a,2023-11-14 22:13:20.000,0.333333,4,2",
            "b,2023-11-14 22:13:20.000,2.000000,1,1",
            "b,2023-11-14 22:13:22.000,4.000000,1,1",
        ]
    );
    // The first query's DOUBLEs go on exact: a SUM of its means.
    let sum = sql.replace("MAX(m) AS top", "SUM(m) * 3 AS top");
    assert_eq!(run(&sum, rows)[1], "a,2023-11-14 22:13:20.000,1.300000,4,2");
    let p = parse("q.sql", &sql.replace("\nSELECT k,", "\nEXPLAIN SELECT k,")).unwrap();
    let e = &p.query.explain;
    assert!(
        e.starts_with("stage 1, view `means`")
            && e.contains("operator `means`: window tumbling, size 1000 ms")
            && e.contains("stage 2:\npipeline `query`")
            && e.contains("source `means`: fields [m, n], key `k`, time `t`"),
        "{e}"
    );
    let err = crate::sql::parse_for_run("q.sql", sql)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weir run does not run a cascade of windows yet"),
        "{err}"
    );
}

#[test]
fn a_cascade_needs_the_time_of_its_first_windows() {
    let e = parse(
        "q.sql",
        &format!(
            "{BID}CREATE VIEW w AS SELECT supplier_id, SUM(price) AS p
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY supplier_id, window_start, window_end;
SELECT window_start, SUM(p) AS t FROM TABLE(TUMBLE(TABLE w, DESCRIPTOR(rowtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("q.sql:8:1")
            && e.contains("gives no time attribute")
            && e.contains("window_time"),
        "{e}"
    );
}

/// A cascade whose first query writes many pipe blocks (12,000 second-long
/// windows): every row arrives, in order; and an input that fails halfway
/// fails the replay with its error.
#[test]
fn a_long_cascade_streams_through_the_pipe() {
    let sql = "CREATE TABLE s (sensor STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'filesystem', 'format' = 'csv');
CREATE VIEW secs (k, t, m, n) AS
  SELECT sensor, window_time, AVG(v), COUNT(*)
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
  GROUP BY sensor, window_start, window_end, window_time;
SELECT k, window_start, MAX(m) AS top, SUM(n) AS n, COUNT(*) AS windows
FROM TABLE(TUMBLE(TABLE secs, DESCRIPTOR(t), INTERVAL '10' SECONDS))
GROUP BY k, window_start, window_end;";
    const T0: i64 = 1_700_000_000_000;
    // 20 sensors, 10 readings a second each for 600 s; a reading's value
    // is its second, so each second's mean is the second itself.
    let mut input = String::new();
    for tenth in 0..6_000i64 {
        for k in 0..20 {
            input.push_str(&format!("s{k:02},{},{}\n", T0 + tenth * 100, tenth / 10));
        }
    }
    let rows = run(sql, &input);
    assert_eq!(rows.len(), 1 + 20 * 60);
    assert_eq!(rows[0], "k,window_start,top,n,windows");
    for (i, row) in rows[1..].iter().enumerate() {
        let (k, w) = (i / 60, i % 60);
        // T0 is 2023-11-14 22:13:20 UTC, 80,000 s into its day.
        let t = 80_000 + w * 10;
        let start = format!(
            "2023-11-14 {:02}:{:02}:{:02}.000",
            t / 3600,
            t / 60 % 60,
            t % 60
        );
        let top = w * 10 + 9;
        assert_eq!(row, &format!("s{k:02},{start},{top}.000000,100,10"));
    }
    let p = parse("q.sql", sql).unwrap();
    let failing = std::io::Read::chain(&input.as_bytes()[..200_000], Failing);
    let err = exec::replay(&p, failing, Vec::new(), |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert!(err.to_string().contains("disk gone"), "{err}");
}

struct Failing;

impl std::io::Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk gone"))
    }
}
