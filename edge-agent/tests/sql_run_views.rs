//! A query over a view in `weir run` ([`AgentCore`], virtual time, an
//! in-memory disk): the view's `WHERE` on a text column runs before the
//! journal and its computed column in the engine, exactly as in the same
//! query written over the table, through a crash and a journal replay; and
//! `weir replay` gives the same rows.

mod sql_run_util;

use sql_run_util::DDL;

const OVER_VIEW: &str = "CREATE VIEW north (sensor, rowtime, temp_f) AS
  SELECT sensor, rowtime, temp * 1.8 + 32 FROM s WHERE site = 'north';
SELECT sensor, window_start, COUNT(*) AS n, MAX(temp_f) AS m
FROM TABLE(TUMBLE(TABLE north, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

const BY_HAND: &str = "SELECT sensor, window_start, COUNT(*) AS n, MAX(temp * 1.8 + 32) AS m
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE site = 'north'
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

fn rows(sql: &str, crash_after: Option<usize>) -> Vec<String> {
    let (mut r, _) = sql_run_util::run(sql, crash_after, |j| {
        format!(
            "{},{},{},{}",
            j["sensor"], j["window_start"], j["n"], j["m"]
        )
    });
    r.sort();
    r.dedup();
    r
}

#[test]
fn a_query_over_a_view_runs_as_the_query_over_its_table() {
    let view = format!("{DDL}{OVER_VIEW}");
    let hand = format!("{DDL}{BY_HAND}");
    let want = rows(&hand, None);
    // a [0, 1 s): north 21, 25, 21 (°F 69.8, 77, 69.8); b: north 19, 22.5;
    // a [1 s, 2 s): north 24 ('North' is another site).
    assert_eq!(want.len(), 3, "{want:?}");
    assert!(want[0].contains(",3,77.0"), "{want:?}");
    assert_eq!(rows(&view, None), want);
    for after in 1..sql_run_util::MESSAGES.len() {
        assert_eq!(rows(&view, Some(after)), want, "crash after {after}");
    }
    assert_eq!(sql_run_util::replay(&view), sql_run_util::replay(&hand));
}
