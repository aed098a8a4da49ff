//! Views and `WITH`: a query over a view gives the rows, and builds the
//! plan, of the same query written over the view's table by hand; views
//! over views; the legacy group window over a view; errors.

use super::tests::{run, t};
use super::tests_nulls::{ROWS, S};
use super::*;

/// The query over view `warm`, whose columns are `k, t, f, v`.
const OVER_WARM: &str = "SELECT k, window_start, COUNT(*) AS n, AVG(f) AS avg_f, MAX(v) AS mv
FROM TABLE(TUMBLE(TABLE warm, DESCRIPTOR(t), INTERVAL '5' SECONDS))
WHERE v < 8
GROUP BY k, window_start, window_end;";

/// The same query over `s`, by hand.
const BY_HAND: &str = "SELECT sensor AS k, window_start, COUNT(*) AS n,
  AVG(temp * 1.8 + 32) AS avg_f, MAX(vib) AS mv
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
WHERE temp > 12 AND vib < 8
GROUP BY sensor, window_start, window_end;";

fn same_as_by_hand(sql: &str) {
    let want = run(&format!("{S}{BY_HAND}"), ROWS);
    // temp > 12 and vib < 8: a 08:00:01 (25 °C), 02 (15), 04 (30); b 07 (22).
    assert_eq!(
        want,
        [
            "k,window_start,n,avg_f,mv".to_string(),
            format!("a,{},3,74.000000,4.000000", t("00")),
            format!("b,{},1,71.600000,6.000000", t("05")),
        ]
    );
    assert_eq!(run(sql, ROWS), want, "{sql}");
    let a = parse("q.sql", sql).unwrap();
    let b = parse("q.sql", &format!("{S}{BY_HAND}")).unwrap();
    assert_eq!(
        a.pipeline.spec, b.pipeline.spec,
        "the same plan, so the same state"
    );
}

#[test]
fn a_view_with_renamed_and_computed_columns_and_a_where() {
    same_as_by_hand(&format!(
        "{S}CREATE TEMPORARY VIEW warm (k, t, f, v) AS
  SELECT sensor, ts, temp * 1.8 + 32, vib FROM s WHERE temp > 12;
{OVER_WARM}"
    ));
}

#[test]
fn a_with_item_is_a_view_of_its_query() {
    same_as_by_hand(&format!(
        "{S}WITH warm AS (
  SELECT sensor AS k, ts AS t, temp * 1.8 + 32 AS f, vib AS v FROM s WHERE temp > 12)
{OVER_WARM}"
    ));
    // A WITH item over a view, with a column list.
    same_as_by_hand(&format!(
        "{S}CREATE VIEW positive AS SELECT * FROM s WHERE temp > 12;
WITH warm (k, t, f, v) AS (SELECT sensor, ts, temp * 1.8 + 32, vib FROM positive)
{OVER_WARM}"
    ));
}

#[test]
fn views_over_views_and_the_legacy_group_window() {
    let sql = format!(
        "{S}CREATE VIEW running AS SELECT * FROM s WHERE status = 'run';
CREATE VIEW hot AS SELECT sensor, ts, temp AS c FROM running WHERE temp > 24;
SELECT sensor, TUMBLE_START(ts, INTERVAL '5' SECOND) AS ws, COUNT(*) AS n, MIN(c)
FROM hot GROUP BY sensor, TUMBLE(ts, INTERVAL '5' SECOND);"
    );
    let e = parse("q.sql", &sql).unwrap().query.explain;
    assert!(
        e.contains("view `hot` over `running` over table `s`: inlined"),
        "{e}"
    );
    // Running and above 24 °C: a 08:00:01 (25) and 04 (30) only.
    assert_eq!(
        run(&sql, ROWS),
        [
            "sensor,ws,n,EXPR$3".to_string(),
            format!("a,{},2,25.000000", t("00")),
        ]
    );
}

#[test]
fn views_that_cannot_be_inlined_say_why() {
    let err = |sql: &str| {
        parse("q.sql", &format!("{S}{sql}"))
            .unwrap_err()
            .to_string()
    };
    let over = |view: &str| {
        err(&format!(
            "{view}\nSELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE v, DESCRIPTOR(ts), INTERVAL '5' SECONDS)) GROUP BY window_start, window_end;"
        ))
    };
    // A view that aggregates is a cascade's first query: it needs a window.
    let e = over("CREATE VIEW v AS SELECT sensor, COUNT(*) AS n FROM s GROUP BY sensor;");
    assert!(
        e.contains("q.sql:9:1") && e.contains("aggregates without a window"),
        "{e}"
    );
    let e = over("CREATE VIEW v AS SELECT ts, nope FROM s;");
    assert!(
        e.contains("view `v`: `nope` is not a column of what it reads"),
        "{e}"
    );
    let e = over("CREATE VIEW v AS SELECT ts FROM nothing;");
    assert!(e.contains("which is no table or view"), "{e}");
    let e = over("CREATE VIEW s AS SELECT ts FROM s;");
    assert!(e.contains("`s` is already a table or view"), "{e}");
    // The view leaves `vib` out: the query may not read it.
    let e = err("CREATE VIEW v AS SELECT sensor, ts, temp FROM s;
SELECT window_start, MAX(vib) AS m FROM TABLE(TUMBLE(TABLE v, DESCRIPTOR(ts), INTERVAL '5' SECONDS)) GROUP BY window_start, window_end;");
    assert!(
        e.contains("q.sql:10:26") && e.contains("the view has no column `vib`"),
        "{e}"
    );
    // Its time column as an expression is no time attribute.
    let e = over("CREATE VIEW v (ts, x) AS SELECT CAST(ts AS TIMESTAMP(3)), temp FROM s;");
    assert!(e.contains("is not supported"), "{e}");
}

#[test]
fn a_subquery_in_from_is_a_view_of_its_own() {
    let q = |from: &str| {
        format!(
            "{S}SELECT sensor, TUMBLE_START(ts, INTERVAL '5' SECOND) AS ws, COUNT(*) AS n
FROM {from} GROUP BY sensor, TUMBLE(ts, INTERVAL '5' SECOND);"
        )
    };
    // Running: a 08:00:01 and 04, b 07.
    let want = [
        "sensor,ws,n".to_string(),
        format!("a,{},2", t("00")),
        format!("b,{},1", t("05")),
    ];
    assert_eq!(
        run(&q("(SELECT * FROM s WHERE status = 'run') AS r"), ROWS),
        want
    );
    let e = parse(
        "q.sql",
        &q("(SELECT sensor, COUNT(*) AS c FROM s GROUP BY sensor)"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("aggregates without a window"), "{e}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// The table's numeric columns and the names a view may give them.
    const COLS: [&str; 2] = ["temp", "vib"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A view that renames (even swaps) and scales the numeric columns
        /// and filters on one of them gives, for any aggregate of any view
        /// column and any threshold, the rows of the query written over
        /// the table by hand.
        #[test]
        fn a_view_is_its_query_written_by_hand(
            swap in any::<bool>(),
            scale in prop::sample::select(vec![1.0, 2.5, -1.0]),
            agg in prop::sample::select(vec!["SUM", "MIN", "MAX", "AVG", "COUNT"]),
            read_first in any::<bool>(),
            threshold in 0u8..30,
            filter_vib in any::<bool>(),
        ) {
            // View columns x, y: x = COLS[a] * scale, y = COLS[b].
            let (a, b) = if swap { (1, 0) } else { (0, 1) };
            let view = format!(
                "CREATE VIEW v (k, t, x, y) AS SELECT sensor, ts, {} * {scale:?}, {} FROM s WHERE {} > {threshold};\n",
                COLS[a], COLS[b], COLS[usize::from(filter_vib)]
            );
            let (col, base) = if read_first {
                ("x", format!("{} * {scale:?}", COLS[a]))
            } else {
                ("y", COLS[b].to_string())
            };
            let q = |from: &str, key: &str, arg: &str, filter: &str| {
                format!(
                    "SELECT {key} AS k, window_start, {agg}({arg}) AS r, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE {from}, DESCRIPTOR({}), INTERVAL '5' SECONDS))
{filter}GROUP BY {key}, window_start, window_end;",
                    if from == "v" { "t" } else { "ts" }
                )
            };
            let over_view = format!("{S}{view}{}", q("v", "k", col, ""));
            let by_hand = format!(
                "{S}{}",
                q("s", "sensor", &base, &format!("WHERE {} > {threshold}\n", COLS[usize::from(filter_vib)]))
            );
            prop_assert_eq!(run(&over_view, ROWS), run(&by_hand, ROWS));
        }
    }
}
