//! SQL front end tests: Flink's documented window TVF examples (the `Bid`
//! table), hand-computed rows, W1 against its TOML twin, and errors.

use super::*;
use weir_core::agg::AggKind;

/// Flink's `Bid` table from the windowing TVF documentation.
const BID_DDL: &str = "CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv');
";

/// Its rows, as Flink's documentation lists them.
const BID_ROWS: &str = "2020-04-15 08:05:00,4.00,C
2020-04-15 08:07:00,2.00,A
2020-04-15 08:09:00,5.00,D
2020-04-15 08:11:00,3.00,B
2020-04-15 08:13:00,1.00,E
2020-04-15 08:17:00,6.00,F
";

/// The header and the rows of `weir replay` over `input`, the rows sorted;
/// no bad row.
pub(super) fn run(sql: &str, input: &str) -> Vec<String> {
    let p = parse("q.sql", sql).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let mut bad = Vec::new();
    exec::replay(&p, input.as_bytes(), &mut out, |b, _| bad.push(b.clone())).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Rows of different keys fire in key order, not the documentation's.
    lines[1..].sort();
    lines
}

/// `2020-04-15 08:00:<s>.000`, a time as weir writes it.
pub(super) fn t(s: &str) -> String {
    format!("2020-04-15 08:00:{s}.000")
}

fn bid(query: &str) -> Vec<String> {
    run(&format!("{BID_DDL}{query}"), BID_ROWS)
}

fn err(sql: &str) -> ConfigError {
    parse("q.sql", sql).unwrap_err()
}

#[test]
fn tumble_as_flink_documents_it() {
    let rows = bid("SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(
    TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows,
        [
            "window_start,window_end,total_price",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00",
        ]
    );
}

#[test]
fn hop_as_flink_documents_it() {
    let rows = bid("SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(
    HOP(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES, INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows,
        [
            "window_start,window_end,total_price",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00",
            "2020-04-15 08:05:00.000,2020-04-15 08:15:00.000,15.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00",
            "2020-04-15 08:15:00.000,2020-04-15 08:25:00.000,6.00",
        ]
    );
}

#[test]
fn hop_with_named_arguments() {
    let rows = bid("SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(
    HOP(DATA => TABLE Bid, TIMECOL => DESCRIPTOR(bidtime), SLIDE => INTERVAL '5' MINUTES, SIZE => INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[2],
        "2020-04-15 08:05:00.000,2020-04-15 08:15:00.000,15.00"
    );
}

#[test]
fn cumulate_as_flink_documents_it() {
    let rows = bid("SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(
    CUMULATE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '2' MINUTES, INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows,
        [
            "window_start,window_end,total_price",
            "2020-04-15 08:00:00.000,2020-04-15 08:06:00.000,4.00",
            "2020-04-15 08:00:00.000,2020-04-15 08:08:00.000,6.00",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:12:00.000,3.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:14:00.000,4.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:16:00.000,4.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:18:00.000,10.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00",
        ]
    );
}

#[test]
fn session_without_and_with_partition() {
    // Gaps between bids are all under 5 minutes: one session, 08:05 to
    // 08:17 + 5 min.
    let rows = bid("SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(SESSION(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows[1..],
        ["2020-04-15 08:05:00.000,2020-04-15 08:22:00.000,21.00"]
    );
    // Every item bids once: one session per item, [bidtime, bidtime + 5 min).
    let rows = bid(
        "SELECT window_start, window_end, item, SUM(price) AS total_price
  FROM TABLE(SESSION(TABLE Bid PARTITION BY item, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  GROUP BY item, window_start, window_end;",
    );
    assert_eq!(
        rows,
        [
            "window_start,window_end,item,total_price",
            "2020-04-15 08:05:00.000,2020-04-15 08:10:00.000,C,4.00",
            "2020-04-15 08:07:00.000,2020-04-15 08:12:00.000,A,2.00",
            "2020-04-15 08:09:00.000,2020-04-15 08:14:00.000,D,5.00",
            "2020-04-15 08:11:00.000,2020-04-15 08:16:00.000,B,3.00",
            "2020-04-15 08:13:00.000,2020-04-15 08:18:00.000,E,1.00",
            "2020-04-15 08:17:00.000,2020-04-15 08:22:00.000,F,6.00",
        ]
    );
}

#[test]
fn tumble_grouped_by_a_key() {
    let rows = bid(
        "SELECT window_start, window_end, item, SUM(price) AS total_price
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end, item;",
    );
    assert_eq!(
        rows[1..],
        [
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,A,2.00",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,C,4.00",
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,D,5.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,B,3.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,E,1.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,F,6.00",
        ]
    );
}

#[test]
fn legacy_group_window_gives_the_tvf_rows() {
    let rows = bid(
        "SELECT TUMBLE_START(bidtime, INTERVAL '10' MINUTE) AS window_start,
       TUMBLE_END(bidtime, INTERVAL '10' MINUTE) AS window_end,
       SUM(price) AS total_price
  FROM Bid
  GROUP BY TUMBLE(bidtime, INTERVAL '10' MINUTE);",
    );
    assert_eq!(
        rows[1..],
        [
            "2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00",
            "2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00",
        ]
    );
}

#[test]
fn every_aggregate_by_hand() {
    let rows = bid(
        "SELECT window_start, COUNT(*) AS n, COUNT(price) AS np, SUM(price) AS s, AVG(price) AS a,
       MIN(price) AS lo, MAX(price) AS hi, STDDEV_POP(price) AS sp, STDDEV_SAMP(price) AS ss,
       VAR_POP(price) AS vp, VAR_SAMP(price) AS vs, RMS(price) AS r, P2P(price) AS pp,
       CREST(price) AS c, KURTOSIS(price) AS k, APPROX_PERCENTILE(price, 0.5) AS med
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        rows[0],
        "window_start,n,np,s,a,lo,hi,sp,ss,vp,vs,r,pp,c,k,med"
    );
    assert_eq!(rows.len(), 3);
    // Window 08:00–08:10 holds 4, 2, 5; 08:10–08:20 holds 3, 1, 6.
    for (row, xs) in rows[1..].iter().zip([[4.0f64, 2.0, 5.0], [3.0, 1.0, 6.0]]) {
        let v: Vec<f64> = row.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
        let n = xs.len() as f64;
        let sum: f64 = xs.iter().sum();
        let mean = sum / n;
        let m2: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
        let m4: f64 = xs.iter().map(|x| (x - mean).powi(4)).sum();
        let lo = xs.iter().cloned().fold(f64::MAX, f64::min);
        let hi = xs.iter().cloned().fold(f64::MIN, f64::max);
        let rms = (xs.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
        let want = [
            n,
            n,
            sum,
            mean,
            lo,
            hi,
            (m2 / n).sqrt(),
            (m2 / (n - 1.0)).sqrt(),
            m2 / n,
            m2 / (n - 1.0),
            rms,
            hi - lo,
            hi / rms,
            n * m4 / (m2 * m2),
        ];
        for (i, w) in want.iter().enumerate() {
            assert!(
                (v[i] - w).abs() < 1e-5,
                "{row}: column {i}: {} vs {w}",
                v[i]
            );
        }
        // The sketch's median of three values: the middle one, within
        // the sketch's relative error.
        let mut sorted = xs;
        sorted.sort_by(f64::total_cmp);
        assert!((v[14] - sorted[1]).abs() <= 0.04 * sorted[1], "{row}");
    }
    // Integers print as integers, DECIMAL(10, 2) sums and extremes with two
    // decimals, doubles with six.
    assert!(
        rows[1].starts_with("2020-04-15 08:00:00.000,3,3,11.00,3.666667,2.00,5.00,"),
        "{}",
        rows[1]
    );
}

#[test]
fn aggregate_filter_clause_leaves_the_other_rows_out() {
    // Window 08:00: C 4.00, A 2.00, D 5.00; window 08:10: B 3.00, E 1.00,
    // F 6.00. HAVING drops the second (E is under 2).
    let rows = bid(
        "SELECT window_start, COUNT(*) FILTER (WHERE price > 2) AS n,
       SUM(price) FILTER (WHERE item <> 'D') AS s,
       MAX(price) FILTER (WHERE price > 10) AS none,
       COUNT(DISTINCT item) FILTER (WHERE price >= 3) AS d,
       AVG(price) FILTER (WHERE item IN ('A', 'C')) AS a
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end
  HAVING COUNT(*) FILTER (WHERE price < 2) = 0;",
    );
    assert_eq!(
        rows,
        [
            "window_start,n,s,none,d,a",
            "2020-04-15 08:00:00.000,2,6.00,,2,3.000000",
        ]
    );
    let e = err(&format!(
        "{BID_DDL}SELECT window_start, ABS(MAX(price)) FILTER (WHERE price > 2) AS x
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
    ));
    assert!(e.msg.contains("not an aggregate"), "{e}");
}

#[test]
fn time_functions_by_hand() {
    // 2020-04-15 was a Wednesday (DAYOFWEEK 4, counting from Sunday).
    let rows = bid(
        "SELECT window_start, DATE_FORMAT(window_start, 'EEE d MMM yyyy, HH:mm') AS f,
       EXTRACT(DOW FROM window_start) AS dow, HOUR(window_end) AS h, MINUTE(window_end) AS mi,
       TIMESTAMPDIFF(MINUTE, window_start, window_end) AS len,
       window_end - INTERVAL '1' SECOND AS last_second, FLOOR(window_start TO HOUR) AS fh,
       TIMESTAMPADD(MONTH, -2, window_start) AS back,
       COUNT(*) FILTER (WHERE MINUTE(bidtime) > 8) AS late_bids
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE EXTRACT(YEAR FROM bidtime) = 2020
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        rows,
        [
            "window_start,f,dow,h,mi,len,last_second,fh,back,late_bids",
            "2020-04-15 08:00:00.000,\"Wed 15 Apr 2020, 08:00\",4,8,10,10,\
             2020-04-15 08:09:59.000,2020-04-15 08:00:00.000,2020-02-15 08:00:00.000,1",
            "2020-04-15 08:10:00.000,\"Wed 15 Apr 2020, 08:10\",4,8,20,10,\
             2020-04-15 08:19:59.000,2020-04-15 08:00:00.000,2020-02-15 08:10:00.000,3",
        ]
    );
    // A TIMESTAMP literal: A (08:07) and D (08:09), then B, E and F.
    let rows = bid("SELECT window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE bidtime >= TIMESTAMP '2020-04-15 08:07:00'
  GROUP BY window_start, window_end
  HAVING window_start < TIMESTAMP '2020-04-15 08:05:00.000' OR COUNT(*) > 2;");
    assert_eq!(
        rows,
        [
            "window_start,n",
            "2020-04-15 08:00:00.000,2",
            "2020-04-15 08:10:00.000,3"
        ]
    );
    for (bad, says) in [
        ("TIMESTAMP '2020-04-15'", "not a timestamp"),
        ("DATE_FORMAT(window_start, 'yyyy Q')", "`Q`"),
        ("EXTRACT(MILLISECOND FROM window_start)", "not supported"),
        (
            "TIMESTAMPDIFF(FORTNIGHT, window_start, window_end)",
            "not a unit of time",
        ),
        ("HOUR(COUNT(*))", "not a timestamp"),
    ] {
        let e = err(&format!(
            "{BID_DDL}SELECT {bad} AS x
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ));
        assert!(e.msg.contains(says), "{bad}: {e}");
    }
}

#[test]
fn where_before_windowing_and_having_after() {
    let rows = bid("SELECT window_start, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE price > 2 AND NOT price = 1
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows[1..],
        [
            "2020-04-15 08:00:00.000,9.00",
            "2020-04-15 08:10:00.000,9.00"
        ]
    );
    let rows = bid("SELECT window_end, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end
  HAVING SUM(price) > 10.5;");
    assert_eq!(rows[1..], ["2020-04-15 08:10:00.000,11.00"]);
    // A condition on the key column, with LIKE and IN.
    let rows = bid("SELECT item, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE item LIKE 'A%' OR item IN ('E', 'F')
  GROUP BY window_start, window_end, item;");
    assert_eq!(rows[1..], ["A,2.00", "E,1.00", "F,6.00"]);
    // A condition on a STRING column that is not the key.
    let rows = bid("SELECT window_start, SUM(price) AS total, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE item <> 'D' AND item NOT LIKE 'F%'
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows[1..],
        [
            "2020-04-15 08:00:00.000,6.00,2",
            "2020-04-15 08:10:00.000,4.00,2"
        ]
    );
}

#[test]
fn projection_expressions() {
    let rows = bid("SELECT window_start,
       SUM(price) * 2 AS twice,
       CASE WHEN COUNT(*) > 2 THEN 'busy' ELSE 'quiet' END AS load,
       CAST(MAX(price) AS INT) AS top,
       ROUND(AVG(price), 1) AS avg1,
       ABS(MIN(price) - MAX(price)) AS spread,
       SQRT(POWER(MAX(price), 2)) AS same_max,
       LN(1) AS zero,
       COALESCE(NULL, MIN(price)) AS lo,
       MAX(price) >= 6 OR MIN(price) BETWEEN 1 AND 2 AS flagged,
       window_end
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows,
        [
            "window_start,twice,load,top,avg1,spread,same_max,zero,lo,flagged,window_end",
            // ROUND(AVG(DECIMAL(10, 2)), 1) is a DECIMAL(38, 1), as in Flink.
            "2020-04-15 08:00:00.000,22.00,busy,5,3.7,3.00,5.000000,0.000000,2.00,true,2020-04-15 08:10:00.000",
            "2020-04-15 08:10:00.000,20.00,busy,6,3.3,5.00,6.000000,0.000000,1.00,true,2020-04-15 08:20:00.000",
        ]
    );
}

#[test]
fn aggregates_over_expressions() {
    // Window 08:00–08:10 holds 4, 2, 5; 08:10–08:20 holds 3, 1, 6.
    let rows = bid("SELECT window_start, SUM(price * 2) AS twice, MAX(ABS(price - 4)) AS far,
       AVG(CASE WHEN item = 'A' THEN 1 ELSE 0 END) AS share_a, SUM(price) AS s, SUM(price * 2) + 1 AS again
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(
        rows,
        [
            "window_start,twice,far,share_a,s,again",
            // DECIMAL(10, 2) times an integer stays DECIMAL with 2 decimals.
            // share_a averages an INT: an INT in Flink, 1/3 → 0.
            "2020-04-15 08:00:00.000,22.00,2.00,0,11.00,23.00",
            "2020-04-15 08:10:00.000,20.00,3.00,0,10.00,21.00",
        ]
    );
    let p = parse(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT SUM(price * 2) AS a, MAX(price * 2) AS b, MIN(price) AS c
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    // One computed field for the repeated expression, in the engine; one
    // operator each.
    let src = &p.pipeline.spec.sources[0];
    assert_eq!(src.fields, ["price"]);
    let computed: Vec<&str> = src.compute.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(computed, ["expr0"]);
    assert!(p.query.computed.is_empty());
    assert!(p.agent_can_run().is_ok(), "{:?}", p.agent_can_run());
    let ids: Vec<&str> = p
        .pipeline
        .spec
        .operators
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(ids, ["query_expr0", "query_price"]);
}

/// A `WHERE` over numeric columns is the engine source's filter: a sample it
/// drops still advances the watermark (as in Flink, whose watermarks are
/// generated at the source), so a sample behind it is late.
#[test]
fn where_on_numbers_runs_in_the_engine_after_the_watermark() {
    let sql = format!(
        "{BID_DDL}SELECT window_start, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE price > 1
  GROUP BY window_start, window_end;"
    );
    let p = parse("q.sql", &sql).unwrap();
    assert!(p.query.filter.is_none());
    assert!(p.pipeline.spec.sources[0].filter.is_some());
    assert!(p.agent_can_run().is_ok(), "{:?}", p.agent_can_run());
    assert!(
        p.query.explain.contains("filter (in the engine"),
        "{}",
        p.query.explain
    );
    // 08:15 (filtered out) moves the watermark past 08:10: 08:07 is late.
    let rows = run(
        &sql,
        "2020-04-15 08:05:00,4.00,C\n2020-04-15 08:15:00,0.50,X\n2020-04-15 08:07:00,2.00,A\n",
    );
    assert_eq!(rows, ["window_start,total", "2020-04-15 08:00:00.000,4.00"]);
    // Without the filter the late sample is dropped all the same.
    let (sum, engine) = {
        let mut out = Vec::new();
        exec::replay(
            &p,
            "2020-04-15 08:05:00,4.00,C\n2020-04-15 08:15:00,0.50,X\n2020-04-15 08:07:00,2.00,A\n"
                .as_bytes(),
            &mut out,
            |_, _| {},
        )
        .unwrap()
    };
    assert_eq!(sum.late, 1);
    assert_eq!(engine.stats().filtered, 1);
}

/// A `WHERE` or an aggregated expression that reads the key, the time or a
/// text column runs on samples before the engine, which sees only numeric
/// fields. `weir run` applies such a `WHERE`, and computes such an
/// aggregated expression, before its journal.
#[test]
fn where_on_text_stays_before_the_engine() {
    let p = parse(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT window_start, SUM(price) AS total
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE item <> 'D' AND price > 1
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    assert!(p.query.filter.is_some());
    assert!(p.pipeline.spec.sources[0].filter.is_none());
    // `item` is not the GROUP BY key: the agent reads it before the journal.
    assert!(p.agent_can_run().is_ok(), "{:?}", p.agent_can_run());
    assert!(p.query.filters_at_ingest());
    let p = parse(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT window_start, SUM(CASE WHEN item = 'A' THEN price ELSE 0 END) AS a
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    assert_eq!(p.query.computed.len(), 1);
    assert!(p.pipeline.spec.sources[0].compute.is_empty());
    // The agent computes it before the journal.
    assert!(p.agent_can_run().is_ok(), "{:?}", p.agent_can_run());
    assert_eq!(p.query.ingest_computed().count(), 1);
    let rows = bid(
        "SELECT window_start, SUM(CASE WHEN item = 'A' THEN price ELSE 0 END) AS a
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        rows,
        [
            "window_start,a",
            // CASE of a DECIMAL(10, 2) and an INT is a DECIMAL (Flink's
            // least restrictive type), and so is its SUM: 2 decimals.
            "2020-04-15 08:00:00.000,2.00",
            "2020-04-15 08:10:00.000,0.00",
        ]
    );
}

/// HAVING and computed result columns run in `weir run` too: the agent
/// gets the query's stage with the plan.
#[test]
fn weir_run_takes_having_and_computed_columns() {
    let sql = format!(
        "{BID_DDL}SELECT window_start, SUM(price) + 1 AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end HAVING COUNT(*) > 1;"
    );
    let p = parse("q.sql", &sql).unwrap();
    assert!(p.agent_can_run().is_ok(), "{:?}", p.agent_can_run());
    let pf = parse_for_run("q.sql", &sql).unwrap();
    let q = pf.sql.expect("the agent gets the query");
    assert!(q.projects() && !q.filters_before_engine());
    // A plain query keeps the agent's window messages.
    let pf = parse_for_run(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT window_start, SUM(price) AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    assert!(pf.sql.is_none());
    // A result column named like a field of the envelope is refused, where
    // the SELECT is, with what to do.
    let e = parse_for_run(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT window_start, SUM(price) * 2 AS `start`
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap_err();
    assert_eq!((e.line, e.col), (7, 1), "{e}");
    assert!(e.msg.contains("`start`") && e.help.contains("AS"), "{e}");
}

#[test]
fn unnamed_columns_get_flinks_names() {
    let rows = bid("SELECT window_start, SUM(price) + 1, COUNT(*)
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(rows[0], "window_start,EXPR$1,EXPR$2");
    assert_eq!(rows[1], "2020-04-15 08:00:00.000,12.00,3");
}

#[test]
fn where_reads_boolean_columns() {
    let ddl = "CREATE TABLE pumps (
  pump STRING, ts BIGINT, ok BOOLEAN, temp DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime
) WITH ('connector' = 'filesystem', 'format' = 'csv');
SELECT COUNT(*) AS n, MAX(temp) AS hot
  FROM TABLE(TUMBLE(TABLE pumps, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
  WHERE NOT ok
  GROUP BY window_start, window_end;";
    let rows = run(
        ddl,
        "p1,1700000000000,true,50\np2,1700000000100,false,60\np1,1700000000500,FALSE,55\np1,1700000000600,maybe,99\n",
    );
    assert_eq!(rows, ["n,hot", "2,60.000000"]);
}

#[test]
fn aggregates_of_two_columns_join_into_one_row() {
    let ddl = "CREATE TABLE pumps (
  pump STRING, ts BIGINT, temp DOUBLE, rpm INT,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0.5' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv');
SELECT pump, window_start, MAX(temp) AS hot, AVG(rpm) AS rpm, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE pumps, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
  GROUP BY pump, window_start, window_end;";
    let rows = run(
        ddl,
        "p1,1700000000000,50.0,1000\np2,1700000000100,60.0,2000\np1,1700000000500,55.0,1200\np1,1700000001000,40.0,900\n",
    );
    assert_eq!(
        rows,
        [
            // AVG of an INT is an INT, as in Flink.
            "pump,window_start,hot,rpm,n",
            "p1,2023-11-14 22:13:20.000,55.000000,1100,2",
            "p1,2023-11-14 22:13:21.000,40.000000,900,1",
            "p2,2023-11-14 22:13:20.000,60.000000,2000,1",
        ]
    );
    let p = parse("q.sql", ddl).unwrap();
    let ids: Vec<&str> = p
        .pipeline
        .spec
        .operators
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(ids, ["query_temp", "query_rpm"]);
}

/// `spec` as its TOML twin builds it. A SQL column may be `NULL`, so its
/// fields are nullable and `COUNT(*)` is `rows` (NULLs included) where the
/// TOML file says `count`; the operators, their ids and their state types
/// are the same (`rows` is a basic aggregate as `count` is), so an update
/// from one to the other keeps the state.
fn as_toml_builds_it(spec: &weir_core::spec::PipelineSpec) -> weir_core::spec::PipelineSpec {
    let mut spec = spec.clone();
    for s in &mut spec.sources {
        let given = s.fields.len();
        assert!((0..given).all(|f| s.nullable.contains(&f)), "{s:?}");
        s.nullable.retain(|&f| f >= given);
    }
    for o in &mut spec.operators {
        if let weir_core::spec::OperatorKind::Window(w) = &mut o.kind {
            for a in &mut w.aggregates {
                if *a == AggKind::Rows {
                    *a = AggKind::Count;
                }
            }
        }
    }
    spec
}

#[test]
fn w1_sql_builds_the_plan_of_w1_toml() {
    let sql = parse("w1.sql", include_str!("../../../examples/w1.sql")).unwrap();
    let toml =
        crate::pipeline_file::parse("w1.toml", include_str!("../../../examples/w1.toml")).unwrap();
    assert_eq!(as_toml_builds_it(&sql.pipeline.spec), toml.spec);
    let cols: Vec<&str> = sql.query.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        cols,
        [
            "sensor",
            "window_start",
            "window_end",
            "count",
            "mean",
            "min",
            "max",
            "stddev",
            "anomaly"
        ]
    );
}

#[test]
fn w1_sql_gives_the_windows_of_w1_toml() {
    let mut csv = Vec::new();
    crate::gen::W1::new(60_000, 7).write(&mut csv).unwrap();
    let sql = parse("w1.sql", include_str!("../../../examples/w1.sql")).unwrap();
    let toml =
        crate::pipeline_file::parse("w1.toml", include_str!("../../../examples/w1.toml")).unwrap();
    let mut a = Vec::new();
    let (sa, _) = exec::replay(&sql, &csv[..], &mut a, |_, _| {}).unwrap();
    let mut b = Vec::new();
    let (sb, _) = crate::replay::replay(&toml, 0, &csv[..], &mut b, |_, _| {}).unwrap();
    assert_eq!(
        (sa.windows, sa.flagged, sa.late),
        (sb.windows, sb.flagged, sb.late)
    );
    assert!(sa.windows > 5_000 && sa.flagged > 0, "{sa}");
    let a = String::from_utf8(a).unwrap();
    let b = String::from_utf8(b).unwrap();
    let mut la = a.lines();
    assert_eq!(
        la.next(),
        Some("sensor,window_start,window_end,count,mean,min,max,stddev,anomaly")
    );
    // The TOML output writes epoch ms; rewrite it the SQL way.
    let lb: Vec<String> = b
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let ts = |s: &str| exec::format_ts(s.parse().unwrap());
            format!("{},{},{},{}", f[0], ts(f[1]), ts(f[2]), f[3..].join(","))
        })
        .collect();
    assert_eq!(la.map(String::from).collect::<Vec<_>>(), lb);
}

#[test]
fn explain_prints_the_plan() {
    let p = parse(
        "w1.sql",
        &include_str!("../../../examples/w1.sql").replace("\nSELECT", "\nEXPLAIN SELECT"),
    )
    .unwrap();
    assert!(p.explain);
    let e = &p.query.explain;
    assert!(e.contains("operator `w1`: window tumbling, size 10000 ms over `value`, aggregates [rows, mean, min, max, stddev]"), "{e}");
    assert!(e.contains("watermark = newest - 2000 ms - 1"), "{e}");
    assert!(
        e.contains("anomaly BOOLEAN = EWMA_Z(AVG(`value`), 0.1, 3.0, 5)"),
        "{e}"
    );
}

#[test]
fn mqtt_tables_build_a_decoder_and_sinks_are_checked() {
    let sql = "CREATE TABLE temps (
  device STRING, t BIGINT, celsius DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(t, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'plant/+/temp', 'qos' = '1', 'format' = 'json',
        'fields.celsius.path' = 'v.c');
CREATE TABLE alerts (device STRING, window_end TIMESTAMP(3), hot DOUBLE)
  WITH ('connector' = 'mqtt', 'topic' = 'plant/alerts');
INSERT INTO alerts
SELECT device, window_end, MAX(celsius) FROM TABLE(TUMBLE(TABLE temps, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))
GROUP BY device, window_start, window_end HAVING MAX(celsius) > 80;";
    let p = parse("q.sql", sql).unwrap();
    let m = p.pipeline.mqtt[0].as_ref().unwrap();
    assert_eq!(
        (m.topics.clone(), m.qos),
        (vec!["plant/+/temp".to_string()], 1)
    );
    let mut batch = crate::decode::Batch::new();
    m.decoder
        .decode(
            "plant/p1/temp",
            br#"{"device":"p1","t":1700000000000,"v":{"c":81.5}}"#,
            0,
            &mut batch,
        )
        .unwrap();
    assert_eq!(batch.len(), 1);
    let s = batch.get(0);
    assert_eq!(
        (s.key, s.ts, s.values),
        ("p1", 1_700_000_000_000, &[81.5][..])
    );
    let sink = p.sink.unwrap();
    assert_eq!(
        (sink.name.as_str(), sink.topic.as_deref()),
        ("alerts", Some("plant/alerts"))
    );
    assert_eq!(p.pipeline.spec.operators[0].id, "alerts");
    let e = err(&sql.replace(
        "(device STRING, window_end TIMESTAMP(3), hot DOUBLE)",
        "(device STRING)",
    ));
    assert_eq!((e.line, e.col), (9, 13), "{e}");
}

#[test]
fn errors_point_at_the_place_and_say_what_to_do() {
    let base = format!(
        "{BID_DDL}SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
    );
    assert!(parse("q.sql", &base).is_ok());
    let e = err(&base.replace("SUM(price)", "SUM(prize)"));
    assert_eq!((e.line, e.col), (7, 38), "{e}");
    assert!(e.to_string().starts_with("q.sql:7:38: error:"), "{e}");
    let e = err(&base.replace(
        "TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)",
        "TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES, INTERVAL '1' MINUTES)",
    ));
    assert!(
        e.msg.contains("OFFSET") && e.msg.contains("not supported") && e.help.contains("aligned"),
        "{e}"
    );
    assert_eq!(e.line, 8, "{e}");
    let e = err(&base.replace("TUMBLE(TABLE", "SLIDE(TABLE"));
    assert!(
        e.msg.contains("SLIDE") && e.help.contains("CUMULATE"),
        "{e}"
    );
    let e = err(&base.replace("SUM(price) AS", "item AS"));
    assert!(e.msg.contains("neither grouped nor aggregated"), "{e}");
    assert_eq!((e.line, e.col), (7, 34), "{e}");
    let e = err(&base.replace("GROUP BY window_start, window_end", "GROUP BY window_start"));
    assert!(e.help.contains("window_end"), "{e}");
    let e = err(&base.replace("SUM(price)", "SUM(item)"));
    assert!(e.msg.contains("not a numeric column"), "{e}");
    let e = err(&base.replace("SUM(price)", "SUM(item || 'x')"));
    assert!(e.msg.contains("STRING"), "{e}");
    let e = err(&base.replace("SUM(price)", "SUM(price) & 1"));
    assert!(e.msg.contains("not supported"), "{e}");
    let e = err(&base.replace("SUM(price)", "MEDIAN(price)"));
    assert!(
        e.msg.contains("MEDIAN") && e.help.contains("APPROX_PERCENTILE"),
        "{e}"
    );
    let e = err(&base.replace(
        "FROM TABLE",
        "FROM Bid b JOIN Bid c ON b.item = c.item, TABLE",
    ));
    assert!(e.msg.contains("not supported"), "{e}");
    let e = err(&base.replace("INTERVAL '10' MINUTES", "INTERVAL '10' MONTH"));
    assert!(e.msg.contains("not supported"), "{e}");
    let e = err(&base.replace("SELECT", "SELEC"));
    assert_eq!(e.line, 7, "{e}");
    let e = err(&base.replace(
        "WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND",
        "WATERMARK FOR bidtime AS bidtime * 2",
    ));
    assert_eq!((e.line, e.col), (5, 3), "{e}");
    let e = err(&base.replace("'format' = 'csv'", "'format' = 'avro'"));
    assert!(e.msg.contains("avro") && e.help.contains("csv"), "{e}");
    let e = err(&base.replace("price > 0", "").replace(
        "GROUP BY window_start, window_end;",
        "GROUP BY window_start, window_end ORDER BY MAX(price);",
    ));
    assert!(
        e.msg.contains("ORDER BY MAX(price): not a result column"),
        "{e}"
    );
    assert!(e.help.contains("by name or position"), "{e}");
    let e = err(&base.replace(
        "GROUP BY window_start, window_end;",
        "GROUP BY window_start, window_end; SELECT 1;",
    ));
    assert!(e.msg.contains("second query"), "{e}");
    let e = err(&base.replace(
        "SUM(price) AS total_price",
        "SUM(price) AS total_price, item = 1 AS x",
    ));
    assert!(e.msg.contains("neither grouped"), "{e}");
    let e = err(&base.replace("price DECIMAL(10, 2)", "price GEOMETRY"));
    assert!(e.msg.contains("GEOMETRY"), "{e}");
}

#[test]
fn long_expressions_up_to_the_limit_compile() {
    // 250 additions (and a few other operators in the statement) fit.
    let rows = bid(&format!(
        "SELECT window_start, SUM(price) {} AS x FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTE)) GROUP BY window_start, window_end",
        "+ 1 ".repeat(250)
    ));
    assert_eq!(rows[1], "2020-04-15 08:00:00.000,261.00");
    let e = err(&format!(
        "{BID_DDL}SELECT SUM(price) {} AS x FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTE)) GROUP BY window_start, window_end",
        "+ 1 ".repeat(300)
    ));
    assert!(e.msg.contains("operators"), "{e}");
    assert_eq!(e.line, 7, "{e}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for text in [
        "",
        ";;;",
        "CREATE TABLE",
        "CREATE TABLE t (",
        "SELECT",
        "SELECT * FROM",
        "SELECT TABLE x",
        "SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE))",
        "SELECT 1 FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(), INTERVAL 'x' SECOND)) GROUP BY window_start, window_end",
        "SET 'a' = ",
        "DROP TABLE x",
        &"(".repeat(500),
        &format!("SELECT {}1", "-".repeat(400)),
        &format!(
            "{BID_DDL}SELECT SUM(price) {} AS x FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end",
            "+ 1 ".repeat(20_000)
        ),
    ] {
        assert!(parse("q.sql", text).is_err(), "{text}");
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "(",
        ")",
        ",",
        ";",
        "'",
        "`",
        "TABLE",
        "TUMBLE",
        "HOP",
        "SESSION",
        "DESCRIPTOR",
        "INTERVAL '1' SECOND",
        "GROUP BY",
        "WHERE",
        "HAVING",
        "SELECT",
        "AS",
        "NULL",
        "-",
        "*",
        "CASE WHEN",
        "END",
        "COUNT(*)",
        "EWMA_Z(",
        "PARTITION BY",
        "1e400",
        "-0",
        "window_start",
        "window_end",
        "item",
        "price",
        "\n",
        " ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Edited SQL gives a pipeline or an error with a place in the
        /// text, never a panic; a pipeline it accepts runs rows.
        #[test]
        fn edited_sql_never_panics(
            base in 0usize..2,
            at in 0usize..2000,
            cut in 0usize..40,
            piece in 0usize..PIECES.len(),
        ) {
            let texts = [
                include_str!("../../../examples/w1.sql").to_string(),
                format!("{BID_DDL}SELECT window_start, item, SUM(price) * 2 AS s, CASE WHEN COUNT(*) > 1 THEN 'a' END AS c
  FROM TABLE(SESSION(TABLE Bid PARTITION BY item, DESCRIPTOR(bidtime), INTERVAL '5' MINUTES))
  WHERE price > 1 GROUP BY item, window_start, window_end HAVING MAX(price) < 6;"),
            ];
            let t = &texts[base];
            let mut at = at.min(t.len());
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(t.len());
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            let text = format!("{}{}{}", &t[..at], PIECES[piece], &t[end..]);
            match parse("q.sql", &text) {
                Ok(p) => {
                    p.pipeline.spec.clone().build().unwrap();
                    let mut out = Vec::new();
                    exec::replay(&p, &b"a,1700000000000,1.5\n2020-04-15 08:05:00,4.00,C\n"[..], &mut out, |_, _| {}).unwrap();
                }
                Err(e) => prop_assert!(e.line <= text.lines().count() + 1, "{e}"),
            }
        }
    }
}

#[test]
fn cumulate_compiles_to_the_toml_plan() {
    let sql = parse(
        "q.sql",
        &format!(
            "{BID_DDL}SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(CUMULATE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '2' MINUTES, INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    let toml = crate::pipeline_file::parse(
        "q.toml",
        r#"name = "query"
[[source]]
name = "Bid"
fields = ["price"]
max_out_of_orderness = "1s"
watermark = "per-source"
csv = { columns = ["ts", "price", "_"], timestamp = "datetime" }

[[window]]
id = "query"
source = "Bid"
field = "price"
kind = "cumulate"
step = "2m"
size = "10m"
aggregates = ["sum"]
"#,
    )
    .unwrap();
    assert_eq!(as_toml_builds_it(&sql.pipeline.spec), toml.spec);
    assert_eq!(sql.pipeline.csv[0].columns, toml.csv[0].columns);
    assert_eq!(sql.pipeline.csv[0].timestamp, toml.csv[0].timestamp);
}

#[test]
fn source_options_set_the_watermark_mode_future_guard_and_idleness() {
    let q = "SELECT window_start, window_end, SUM(price) AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;";
    let with = |opts: &str| {
        let ddl = BID_DDL.replace("'format' = 'csv'", &format!("'format' = 'csv'{opts}"));
        assert!(
            opts.is_empty() || ddl != BID_DDL,
            "the DDL carries the options"
        );
        parse("q.sql", &format!("{ddl}{q}"))
    };
    // Defaults: Flink's table watermark, the gateway's future guard, a key TTL.
    let p = with("").unwrap();
    let s = &p.pipeline.spec.sources[0];
    assert_eq!(s.watermark, weir_core::spec::WatermarkMode::PerSource);
    assert_eq!(s.max_ahead, Some(300_000));
    assert_eq!(s.idle_timeout, None);
    assert_eq!(p.pipeline.spec.state.ttl, Some(86_400_000));
    let p = with(", 'weir.watermark' = 'per-key', 'weir.max-ahead' = 'off', 'scan.watermark.idle-timeout' = '30 s'").unwrap();
    let s = &p.pipeline.spec.sources[0];
    assert_eq!(s.watermark, weir_core::spec::WatermarkMode::PerKey);
    assert_eq!(s.max_ahead, None);
    assert_eq!(s.idle_timeout, Some(30_000));
    let e = with(", 'weir.watermark' = 'per-device'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("per-device") && e.contains("per-key"), "{e}");
    let e = with(", 'weir.max-ahead' = 'soon'").unwrap_err().to_string();
    assert!(e.contains("weir.max-ahead"), "{e}");
}

/// `weir run`'s stage before the engine: a `WHERE` on the key (string
/// equality, `<>`, `LIKE`, `IN`), on each journal record.
#[test]
fn where_on_the_key_runs_before_the_engine_in_weir_run() {
    let ddl = "CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
";
    let kept = |cond: &str, key: &str, ts: i64, t: f64| -> bool {
        let sql = format!(
            "{ddl}SELECT sensor, window_start, window_end, AVG(t) AS m
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE {cond}
GROUP BY sensor, window_start, window_end;"
        );
        let pf = parse_for_run("q.sql", &sql).unwrap_or_else(|e| panic!("{cond}: {e}"));
        let q = pf.sql.expect("a WHERE on the key runs before the engine");
        assert!(q.filters_before_engine() && !q.projects());
        assert!(pf.spec.sources[0].filter.is_none());
        q.before_engine(&pf.functions, 0, key, ts, &[t], |v| {
            assert_eq!(v, [t]);
        })
        .is_some()
    };
    assert!(kept("sensor = 'p1'", "p1", 0, 1.0));
    assert!(!kept("sensor = 'p1'", "p10", 0, 1.0));
    assert!(kept("sensor <> 'p1'", "p2", 0, 1.0));
    assert!(!kept("sensor <> 'p1'", "p1", 0, 1.0));
    assert!(kept("sensor LIKE 'pump-%'", "pump-7", 0, 1.0));
    assert!(!kept("sensor LIKE 'pump-%'", "fan-7", 0, 1.0));
    assert!(kept("sensor NOT LIKE 'pump-_'", "pump-17", 0, 1.0));
    assert!(kept("sensor IN ('a', 'b')", "b", 0, 1.0));
    assert!(!kept("sensor IN ('a', 'b')", "c", 0, 1.0));
    assert!(!kept("sensor NOT IN ('a', 'b')", "a", 0, 1.0));
    // The key with a numeric column.
    assert!(kept("sensor = 'a' AND t > 2", "a", 0, 3.0));
    assert!(!kept("sensor = 'a' AND t > 2", "a", 0, 1.0));
}

/// An aggregate over an expression that reads the key runs before the
/// engine in `weir run` as in `weir replay`.
#[test]
fn aggregated_expressions_on_the_key_run_before_the_engine_in_weir_run() {
    let sql = "CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT sensor, window_start, window_end,
       SUM(CASE WHEN sensor LIKE 'a%' THEN t ELSE 0 END) AS a
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end;";
    let pf = parse_for_run("q.sql", sql).unwrap();
    let q = pf.sql.clone().unwrap();
    let got = |key: &str| q.before_engine(&pf.functions, 0, key, 0, &[2.5], |v| v.to_vec());
    assert_eq!(got("a1"), Some(vec![2.5, 2.5]));
    assert_eq!(got("b1"), Some(vec![2.5, 0.0]));
}

/// A join, a view or a named subquery: refused with the nearest query
/// weir takes.
#[test]
fn joins_point_to_one_query_over_one_table_and_views_are_inlined() {
    let two = format!(
        "{BID_DDL}CREATE TABLE Ask (asktime TIMESTAMP(3), item STRING, ask DOUBLE,
  WATERMARK FOR asktime AS asktime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'ask.csv', 'format' = 'csv');
"
    );
    let e = err(&format!(
        "{two}SELECT window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) b
  JOIN Ask a ON b.item = a.item
  GROUP BY window_start, window_end;"
    ))
    .to_string();
    assert!(
        e.contains("JOIN is not supported") && e.contains("one table with both columns"),
        "{e}"
    );
    // A view (or WITH item) is inlined: Flink's Bid over a view of its
    // cheap bids, the rows of the same WHERE by hand (a 10-minute window).
    let by_hand = bid("SELECT window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE price < 3
  GROUP BY window_start, window_end;");
    assert_eq!(
        by_hand,
        [
            "window_start,n",
            "2020-04-15 08:00:00.000,1",
            "2020-04-15 08:10:00.000,1"
        ]
    );
    for view in [
        "CREATE VIEW cheap AS SELECT * FROM Bid WHERE price < 3;\n",
        "WITH cheap AS (SELECT * FROM Bid WHERE price < 3)\n",
    ] {
        let q = bid(&format!(
            "{view}SELECT window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE cheap, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
        ));
        assert_eq!(q, by_hand, "{view}");
    }
}

/// Rounding as Flink rounds a DOUBLE (on the decimal it reads as, half
/// up), the functions that are other expressions, and the rest of Flink's
/// numeric functions; every value worked out by hand.
#[test]
fn rounding_and_more_functions() {
    let ddl = "CREATE TABLE s (
  ts TIMESTAMP(3),
  sensor STRING,
  v DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
";
    // The double nearest 2.675 lies below it: rounded on its binary value
    // it would be 2.67; Flink (BigDecimal.valueOf) gives 2.68. Same for 1.005.
    let rows = run(
        &format!(
            "{ddl}SELECT sensor,
       ROUND(MAX(v), 2) AS r, TRUNCATE(MAX(v), 2) AS tr, CAST(MAX(v) AS DECIMAL(10, 2)) AS d,
       ROUND(MIN(v), 2) AS r2, ROUND(MAX(v)) AS r0, FLOOR(MAX(v)) AS f,
       SIGN(MIN(v) - MAX(v)) AS sg, MOD(COUNT(*), 2) AS m, MOD(7, -3) AS m2,
       GREATEST(MIN(v), 2) AS g, LEAST(MAX(v), 2, 5) AS l,
       IF(MAX(v) > 2, 'hi', 'lo') AS i, NULLIF(COUNT(*), 2) AS nn, IFNULL(NULLIF(COUNT(*), 3), -1) AS inn,
       LOG(2, 8) AS lg, LOG2(8) AS l2, LOG(E()) AS ln1, DEGREES(PI()) AS deg,
       ROUND(SIN(RADIANS(30)), 4) AS s30, ATAN2(1, 1) * 4 AS pi, ROUND(COS(0) + TAN(0) + TANH(0), 3) AS one
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY sensor, window_start, window_end;"
        ),
        "2020-04-15 08:00:01,a,2.675\n2020-04-15 08:00:02,a,1.005\n",
    );
    assert_eq!(
        rows,
        [
            "sensor,r,tr,d,r2,r0,f,sg,m,m2,g,l,i,nn,inn,lg,l2,ln1,deg,s30,pi,one",
            "a,2.680000,2.670000,2.68,1.010000,3.000000,2.000000,-1.000000,0,1,2.000000,2.000000,hi,,2,3.000000,3.000000,1.000000,180.000000,0.500000,3.141593,1.000000",
        ]
    );
    let e = err(&format!(
        "{ddl}SELECT MOD(MAX(v)) FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"
    ));
    assert!(
        e.to_string().contains("wrong number of arguments to MOD"),
        "{e}"
    );
    let e = err(&format!(
        "{ddl}SELECT FOO(MAX(v)) FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"
    ));
    assert!(e.to_string().contains("GREATEST"), "{e}");
}

/// Flink's `AVG`, `STDDEV_*` and `VAR_*` of an `INT` are `INT`s computed in
/// integers (Calcite's reduction, truncating divisions); worked by hand.
#[test]
fn integer_averages_are_integers_as_in_flink() {
    let ddl = "CREATE TABLE s (
  ts TIMESTAMP(3),
  sensor STRING,
  v INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
";
    let rows = run(
        &format!(
            "{ddl}SELECT sensor, AVG(v) AS a, SUM(v) AS s, STDDEV_POP(v) AS sp, STDDEV_SAMP(v) AS ss,
       VAR_POP(v) AS vp, VAR_SAMP(v) AS vs, AVG(CAST(v AS DOUBLE)) AS ad
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY sensor, window_start, window_end;"
        ),
        "2020-04-15 08:00:01,a,1\n2020-04-15 08:00:02,a,2\n2020-04-15 08:00:03,a,-4\n\
         2020-04-15 08:00:01,b,5\n2020-04-15 08:00:01,c,3\n2020-04-15 08:00:02,c,4\n",
    );
    // a: Σx = -1, Σx² = 21, n = 3: AVG -1/3 → 0; (21 - 1/3) = 21 - 0;
    //    VAR_POP 21/3 = 7, VAR_SAMP 21/2 = 10, √7 → 2, √10 → 3.
    // b: one row: VAR_POP (25 - 25/1)/1 = 0, the sample forms NULL.
    // c: Σx = 7, Σx² = 25, n = 2: AVG 7/2 → 3; 25 - 49/2 = 25 - 24 = 1;
    //    VAR_POP 1/2 → 0, VAR_SAMP 1, √0 = 0, √1 = 1.
    assert_eq!(
        rows,
        [
            "sensor,a,s,sp,ss,vp,vs,ad",
            "a,0,-1,2,3,7,10,-0.333333",
            "b,5,5,0,,0,,5.000000",
            "c,3,7,0,1,0,1,3.500000",
        ]
    );
}

/// `EWMA_Z` watches the engine's mean of an `INT` column (weir's own
/// detector), though `AVG` of it is Flink's integer.
#[test]
fn a_detector_watches_the_mean_of_an_integer_column() {
    let ddl = "CREATE TABLE s (
  ts TIMESTAMP(3),
  sensor STRING,
  v INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
";
    let q = |agg: &str| {
        run(
            &format!(
                "{ddl}SELECT sensor, window_start, {agg} AS a, EWMA_Z({agg}, 0.5, 1.0, 1) AS odd
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' SECOND))
  GROUP BY sensor, window_start, window_end;"
            ),
            "2020-04-15 08:00:01,a,1\n2020-04-15 08:00:01.5,a,2\n2020-04-15 08:00:02,a,1\n\
             2020-04-15 08:00:03,a,1\n2020-04-15 08:00:04,a,9\n",
        )
    };
    // Means 1.5, 1, 1, 9; AVG of the INT shows 1, 1, 1, 9.
    let ints = q("AVG(v)");
    let doubles = q("AVG(CAST(v AS DOUBLE))");
    let flags = |rows: &[String]| {
        rows.iter()
            .map(|r| r.rsplit(',').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(flags(&ints), flags(&doubles));
    assert_eq!(flags(&ints).last().map(String::as_str), Some("true"));
    let means: Vec<&str> = ints[1..]
        .iter()
        .map(|r| r.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(means, ["1", "1", "1", "9"]);
}

/// `AVG` of a `DECIMAL(p, s)` is Flink's `DECIMAL(38, max(6, s))`: the
/// exact sum over the count, rounded half up. 0.03 / 32 is 0.0009375
/// exactly; the double nearest 0.03, over 32, lies below it (0.000937 if
/// rounded on the binary value).
#[test]
fn decimal_averages_round_as_flink_does() {
    let ddl = "CREATE TABLE s (
  ts TIMESTAMP(3),
  sensor STRING,
  price DECIMAL(10, 2),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
";
    let mut input = String::from("2020-04-15 08:00:01,a,0.03\n");
    for i in 0..31 {
        input.push_str(&format!("2020-04-15 08:00:02.{i:03},a,0.00\n"));
    }
    input.push_str(
        "2020-04-15 08:00:01,b,4.00\n2020-04-15 08:00:02,b,2.00\n2020-04-15 08:00:03,b,5.00\n",
    );
    let rows = run(
        &format!(
            "{ddl}SELECT sensor, AVG(price) AS a, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY sensor, window_start, window_end;"
        ),
        &input,
    );
    assert_eq!(rows, ["sensor,a,n", "a,0.000938,32", "b,3.666667,3"]);
}

#[test]
fn cast_to_string_writes_each_type_as_flink_does() {
    // Flink: a DOUBLE as Java's Double.toString, a DECIMAL with its scale,
    // an integer without a point, a timestamp with its milliseconds, a
    // boolean in capitals.
    let rows = bid("SELECT CAST(window_start AS STRING) AS ws, CAST(SUM(price) AS STRING) AS total,
       CAST(CAST(SUM(price) AS DOUBLE) AS VARCHAR) AS d, CAST(COUNT(*) AS STRING) AS n,
       CAST(SUM(price) * 1000000 AS DOUBLE) AS big, CAST(CAST(SUM(price) * 1000000 AS DOUBLE) AS STRING) AS bigs,
       CAST(COUNT(*) > 2 AS VARCHAR(3)) AS many, CAST(CAST(SUM(price) AS DOUBLE) / 100000 AS STRING) AS small
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end
  HAVING CAST(COUNT(*) AS STRING) = '3';");
    assert_eq!(
        rows,
        [
            "ws,total,d,n,big,bigs,many,small",
            "2020-04-15 08:00:00.000,11.00,11.0,3,11000000.000000,1.1E7,TRU,1.1E-4",
            "2020-04-15 08:10:00.000,10.00,10.0,3,10000000.000000,1.0E7,TRU,1.0E-4",
        ]
    );
}

#[test]
fn string_functions_as_in_flink() {
    // On the key and a text column, in WHERE and in the result columns.
    use super::tests_groups::{BID as SBID, BID_ROWS as SBID_ROWS};
    let rows = run(
        &format!(
            "{SBID}SELECT UPPER(supplier_id) AS s, CONCAT(supplier_id, '/', LOWER('X')) AS c,
       supplier_id || '!' AS bang, CHAR_LENGTH(supplier_id) AS n,
       SUBSTRING(supplier_id FROM 2 FOR 3) AS sub, SUBSTRING(supplier_id, -1) AS last1,
       SUBSTR(supplier_id, 0, 2) AS first2, REPLACE(supplier_id, 'supplier', 's') AS r,
       TRIM(BOTH 's' FROM supplier_id) AS t, TRIM(LEADING 'su' FROM supplier_id) AS lt,
       TRIM(TRAILING '12' FROM supplier_id) AS tt, TRIM('  a ') AS sp, COUNT(*) AS k
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE UPPER(item) <> 'E' AND CHAR_LENGTH(CONCAT(item, supplier_id)) = 10
  GROUP BY supplier_id, window_start, window_end
  HAVING SUBSTRING(supplier_id, 9) = '1';"
        ),
        SBID_ROWS,
    );
    assert_eq!(
        rows,
        [
            "s,c,bang,n,sub,last1,first2,r,t,lt,tt,sp,k",
            "SUPPLIER1,supplier1/x,supplier1!,9,upp,1,su,s1,upplier1,pplier1,supplier,a,2",
        ]
    );
    let e = err(&format!(
        "{BID_DDL}SELECT UPPER(MAX(price)) AS u FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) GROUP BY window_start, window_end;"
    ))
    .to_string();
    assert!(e.contains("`MAX(price)` is a DECIMAL"), "{e}");
    assert!(e.contains("CAST(MAX(price) AS STRING)"), "{e}");
}

#[test]
fn quoted_csv_fields_are_one_field_each() {
    // Flink's csv format reads `"…"` as one field: an item named with a
    // comma, a doubled quote, a quoted time and price.
    let input = "\"2020-04-15 08:05:00\",4.00,\"C, large\"
2020-04-15 08:07:00,\"2.00\",A
2020-04-15 08:09:00,5.00,\"say \"\"D\"\"\"
2020-04-15 08:11:00,3.00,\"C, large\"
";
    let rows = run(
        &format!(
            "{BID_DDL}SELECT item, window_start, COUNT(*) AS n, SUM(price) AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE item <> 'A'
  GROUP BY item, window_start, window_end;"
        ),
        input,
    );
    assert_eq!(
        rows,
        [
            "item,window_start,n,s",
            "\"C, large\",2020-04-15 08:00:00.000,1,4.00",
            "\"C, large\",2020-04-15 08:10:00.000,1,3.00",
            "\"say \"\"D\"\"\",2020-04-15 08:00:00.000,1,5.00",
        ]
    );
}

#[test]
fn group_by_without_an_aggregate_lists_the_groups() {
    // Flink: the distinct (window, key) groups. Window 08:00 has C, A, D;
    // 08:10 has B, E, F.
    let rows = bid("SELECT window_start, window_end, item
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY item, window_start, window_end;");
    let t = |m: &str| format!("2020-04-15 08:{m}:00.000");
    let mut want = vec!["window_start,window_end,item".to_string()];
    for (w, items) in [("00", "ACD"), ("10", "BEF")] {
        let end = if w == "00" { "10" } else { "20" };
        for i in items.chars() {
            want.push(format!("{},{},{i}", t(w), t(end)));
        }
    }
    let mut got = rows.clone();
    got[1..].sort();
    want[1..].sort();
    assert_eq!(got, want);
    let rows = bid("SELECT window_start
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;");
    assert_eq!(rows, ["window_start", &t("00"), &t("10")]);
}

#[test]
fn a_session_tvf_without_group_by_says_it_is_unsupported() {
    // TUMBLE, HOP and CUMULATE without GROUP BY give rows (tests_rows.rs);
    // a session's bounds are known only once it ends.
    let e = err(&format!(
        "{BID_DDL}SELECT * FROM TABLE(SESSION(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES));"
    ));
    assert!(
        e.msg.contains("without GROUP BY") && e.msg.contains("not supported"),
        "{e}"
    );
    assert!(e.help.contains("GROUP BY window_start, window_end"), "{e}");
    assert_eq!(e.line, 7, "{e}");
}

#[test]
fn csv_options_weir_cannot_honour_are_refused_not_ignored() {
    let ddl = |opts: &str| {
        BID_DDL.replace("'format' = 'csv')", &format!("'format' = 'csv', {opts})"))
            + "SELECT window_start, SUM(price) AS s
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  GROUP BY window_start, window_end;"
    };
    // Flink's defaults, written out: the same rows as without them.
    let q = ddl(
        "'csv.field-delimiter' = ',', 'csv.quote-character' = '\"', \
                 'csv.ignore-parse-errors' = 'true', 'csv.allow-comments' = 'false'",
    );
    assert_ne!(q, ddl(""));
    assert_eq!(
        run(&q, BID_ROWS),
        [
            "window_start,s",
            "2020-04-15 08:00:00.000,11.00",
            "2020-04-15 08:10:00.000,10.00"
        ]
    );
    for (opt, says) in [
        ("'csv.field-delimiter' = ';'", "'csv.field-delimiter' = ','"),
        (
            "'csv.allow-comments' = 'true'",
            "'csv.allow-comments' = 'false'",
        ),
        (
            "'csv.escape-character' = '\\'",
            "the csv option 'csv.escape-character'",
        ),
    ] {
        let e = err(&ddl(opt));
        assert!(e.to_string().contains("not supported"), "{opt}: {e}");
        assert!(e.to_string().contains(says), "{opt}: {e}");
        assert_eq!(e.line, 6, "{opt}: {e}");
    }
}
