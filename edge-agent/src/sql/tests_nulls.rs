//! NULL aggregate inputs, as Flink treats them: each aggregate leaves its
//! own `NULL`s out (`COUNT(x)` counts the others, `COUNT(*)` every row,
//! `SUM`/`AVG`/`MIN`/`MAX` of only `NULL`s are `NULL`), and a window whose
//! expression is `NULL` for every sample still gives its row. Hand-computed
//! rows over TUMBLE, HOP (a sample in two windows), CUMULATE, SESSION, the
//! legacy group windows and grouping sets; expressions computed in the
//! engine and before it (reading a text column).

use super::tests::{run, t};
use super::*;
use weir_core::agg::AggKind;
use weir_core::spec::OperatorKind;

pub(super) const S: &str = "CREATE TABLE s (
  ts TIMESTAMP(3),
  sensor STRING,
  status STRING,
  temp DOUBLE,
  vib DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');
";

/// 08:00:00 + seconds, sensor, status, temp, vib.
pub(super) const ROWS: &str = "2020-04-15 08:00:01,a,run,25,1
2020-04-15 08:00:02,a,idle,15,2
2020-04-15 08:00:03,b,idle,10,3
2020-04-15 08:00:04,a,run,30,4
2020-04-15 08:00:06,a,idle,10,5
2020-04-15 08:00:07,b,run,22,6
2020-04-15 08:00:12,b,idle,21,8
";

fn rows(query: &str) -> Vec<String> {
    run(&format!("{S}{query}"), ROWS)
}

/// `temp > 20`'s vib: NULL for a, 08:00:02 and 06, and b, 03.
const WARM: &str = "CASE WHEN temp > 20 THEN vib END";

fn q(select: &str, from: &str, group: &str) -> Vec<String> {
    let sql = format!("SELECT {select} FROM {from} GROUP BY {group};");
    rows(&sql.replace("$W", WARM))
}

fn tumble(secs: u32) -> String {
    format!("TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '{secs}' SECONDS))")
}

#[test]
fn each_aggregate_leaves_its_own_nulls_out() {
    let got = q(
        "sensor, window_start, COUNT(*) AS n, COUNT(CASE WHEN temp > 20 THEN 1 END) AS warm,
    COUNT($W) AS cw, SUM($W) AS s, AVG($W) AS a, MIN($W) AS lo, MAX($W) AS hi",
        &tumble(5),
        "sensor, window_start, window_end",
    );
    // a [0, 5 s): vib 1 and 4 are warm, 2 is not; a [5, 10 s) and b [0,
    // 5 s): no warm sample, yet a row (COUNT 0, the others NULL).
    assert_eq!(
        got,
        [
            "sensor,window_start,n,warm,cw,s,a,lo,hi".to_string(),
            format!("a,{},3,2,2,5.000000,2.500000,1.000000,4.000000", t("00")),
            format!("a,{},1,0,0,,,,", t("05")),
            format!("b,{},1,0,0,,,,", t("00")),
            format!("b,{},1,1,1,6.000000,6.000000,6.000000,6.000000", t("05")),
            format!("b,{},1,1,1,8.000000,8.000000,8.000000,8.000000", t("10")),
        ]
    );
}

#[test]
fn an_expression_over_a_text_column_leaves_its_nulls_out() {
    // Computed before the engine (it reads `status`).
    let got = q(
        "sensor, window_start, COUNT(*) AS n, COUNT(CASE WHEN status = 'run' THEN 1 END) AS runs,
    AVG(CASE WHEN status = 'run' THEN vib END) AS a, MAX(CASE WHEN status = 'run' THEN temp END) AS hi",
        &tumble(5),
        "sensor, window_start, window_end",
    );
    assert_eq!(
        got,
        [
            "sensor,window_start,n,runs,a,hi".to_string(),
            format!("a,{},3,2,2.500000,30.000000", t("00")),
            format!("a,{},1,0,,", t("05")),
            format!("b,{},1,0,,", t("00")),
            format!("b,{},1,1,6.000000,22.000000", t("05")),
            format!("b,{},1,0,,", t("10")),
        ]
    );
}

#[test]
fn hop_and_cumulate_windows_of_nulls_only_still_give_rows() {
    // Warm above 24: vib 1 (08:00:01) and 4 (04); each sample is in two
    // hopping windows.
    let warm = "CASE WHEN temp > 24 THEN vib END";
    let sel = format!(
        "window_start, COUNT(*) AS n, COUNT({warm}) AS warm, SUM({warm}) AS s, SUM(vib) AS all_vib"
    );
    let got = q(
        &sel,
        "TABLE(HOP(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))",
        "window_start, window_end",
    );
    assert_eq!(
        got,
        [
            "window_start,n,warm,s,all_vib".to_string(),
            "2020-04-15 07:59:55.000,4,2,5.000000,10.000000".to_string(),
            format!("{},6,2,5.000000,21.000000", t("00")),
            format!("{},3,0,,19.000000", t("05")),
            format!("{},1,0,,8.000000", t("10")),
        ]
    );
    let got = q(
        &sel.replacen("window_start", "window_start, window_end", 1),
        "TABLE(CUMULATE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))",
        "window_start, window_end",
    );
    assert_eq!(
        got[1..],
        [
            format!("{},{},4,2,5.000000,10.000000", t("00"), t("05")),
            format!("{},{},6,2,5.000000,21.000000", t("00"), t("10")),
            format!("{},{},1,0,,8.000000", t("10"), t("15")),
            format!("{},{},1,0,,8.000000", t("10"), t("20")),
        ]
    );
}

#[test]
fn a_null_sample_still_extends_the_session() {
    // Gap 3 s. a: 01, 02, 04, 06 in one session [01, 09), the last one
    // not warm; b: 03 (not warm), 07, 12 each alone.
    let got = q(
        "sensor, window_start, window_end, COUNT(*) AS n, COUNT($W) AS warm, MAX($W) AS hi",
        "TABLE(SESSION(TABLE s PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '3' SECONDS))",
        "sensor, window_start, window_end",
    );
    assert_eq!(
        got[1..],
        [
            format!("a,{},{},4,2,4.000000", t("01"), t("09")),
            format!("b,{},{},1,0,", t("03"), t("06")),
            format!("b,{},{},1,1,6.000000", t("07"), t("10")),
            format!("b,{},{},1,1,8.000000", t("12"), t("15")),
        ]
    );
}

#[test]
fn legacy_group_windows_and_grouping_sets_leave_nulls_out() {
    let got = q(
        "sensor, TUMBLE_START(ts, INTERVAL '5' SECOND) AS ws, COUNT(*) AS n, SUM($W) AS s",
        "s",
        "sensor, TUMBLE(ts, INTERVAL '5' SECOND)",
    );
    assert_eq!(
        got[1..],
        [
            format!("a,{},3,5.000000", t("00")),
            format!("a,{},1,", t("05")),
            format!("b,{},1,", t("00")),
            format!("b,{},1,6.000000", t("05")),
            format!("b,{},1,8.000000", t("10")),
        ]
    );
    let got = q(
        "sensor, window_start, COUNT(*) AS n, COUNT($W) AS warm, SUM($W) AS s",
        &tumble(5),
        "window_start, window_end, ROLLUP (sensor)",
    );
    assert_eq!(
        got[1..],
        [
            format!(",{},4,2,5.000000", t("00")),
            format!(",{},2,1,6.000000", t("05")),
            format!(",{},1,1,8.000000", t("10")),
            format!("a,{},3,2,5.000000", t("00")),
            format!("a,{},1,0,", t("05")),
            format!("b,{},1,0,", t("00")),
            format!("b,{},1,1,6.000000", t("05")),
            format!("b,{},1,1,8.000000", t("10")),
        ]
    );
}

#[test]
fn having_and_projections_over_null_aggregates_are_three_valued() {
    // NOT (NULL > 5) is NULL: the windows without a warm sample fail.
    let got = q(
        "sensor, window_start, MAX($W) AS hi",
        &tumble(5),
        "sensor, window_start, window_end HAVING NOT (MAX($W) > 5)",
    );
    assert_eq!(got[1..], [format!("a,{},4.000000", t("00"))]);
    let got = q(
        "sensor, window_start, COALESCE(SUM($W), 0) AS s, AVG($W) IS NULL AS none,
    SUM($W) + COUNT(*) AS plus",
        &tumble(5),
        "sensor, window_start, window_end HAVING COUNT($W) = 0 OR COUNT(*) > 2",
    );
    assert_eq!(
        got,
        [
            "sensor,window_start,s,none,plus".to_string(),
            format!("a,{},5.000000,false,8.000000", t("00")),
            format!("a,{},0.000000,true,", t("05")),
            format!("b,{},0.000000,true,", t("00")),
        ]
    );
}

#[test]
fn count_star_counts_rows_on_the_first_aggregated_field() {
    let plan = |select: &str| {
        let sql = format!(
            "{S}SELECT {select} FROM {} GROUP BY window_start, window_end;",
            tumble(5)
        );
        let p = parse("q.sql", &sql).unwrap_or_else(|e| panic!("{e}"));
        let ops: Vec<(String, Vec<AggKind>)> = p
            .pipeline
            .spec
            .operators
            .iter()
            .map(|o| match &o.kind {
                OperatorKind::Window(w) => (o.id.clone(), w.aggregates.clone()),
                _ => panic!("a window operator"),
            })
            .collect();
        (
            ops,
            p.pipeline.spec.sources[0].nullable.clone(),
            p.query.explain,
        )
    };
    // COUNT(*) is `rows` (NULLs included) on the operator of whichever
    // field the other aggregates read, even one that may be NULL: one
    // operator, named as the query, so its id and state stay across an
    // update.
    let (ops, nullable, _) = plan("COUNT(*) AS n, AVG(temp * 1.8 + 32) AS f");
    assert_eq!(ops, [("query".into(), vec![AggKind::Rows, AggKind::Mean])]);
    assert_eq!(nullable, [0, 1, 2], "temp, vib (columns), then expr0");
    let (ops, _, explain) = plan("COUNT(*) AS n, AVG(CASE WHEN temp > 20 THEN vib END) AS a");
    assert_eq!(ops, [("query".into(), vec![AggKind::Rows, AggKind::Mean])]);
    assert!(
        explain.contains(
            "field `expr0` (computed in the engine; a NULL is left out of its aggregates): "
        ),
        "{explain}"
    );
    let (ops, _, _) =
        plan("COUNT(*) AS n, SUM(vib) AS v, AVG(CASE WHEN temp > 20 THEN vib END) AS a");
    assert_eq!(
        ops,
        [
            ("query_vib".into(), vec![AggKind::Rows, AggKind::Sum]),
            ("query_expr0".into(), vec![AggKind::Mean]),
        ]
    );
}

#[test]
fn count_distinct_of_a_numeric_expression_leaves_its_nulls_out() {
    let got = q(
        "sensor, window_start, COUNT(*) AS n, COUNT(DISTINCT $W) AS d",
        &tumble(5),
        "sensor, window_start, window_end",
    );
    assert_eq!(
        got[1..],
        [
            format!("a,{},3,2", t("00")),
            format!("a,{},1,0", t("05")),
            format!("b,{},1,0", t("00")),
            format!("b,{},1,1", t("05")),
            format!("b,{},1,1", t("10")),
        ]
    );
}

#[test]
fn every_aggregate_of_nulls_only_is_null() {
    let got = q(
        "sensor, window_start, STDDEV_POP($W) AS sd, VAR_SAMP($W) AS vs, RMS($W) AS r,
    P2P($W) AS p, APPROX_PERCENTILE($W, 0.5) AS med, KURTOSIS($W) AS k, CREST($W) AS c",
        &tumble(5),
        "sensor, window_start, window_end",
    );
    assert_eq!(got[2], format!("a,{},,,,,,,", t("05")));
    assert_eq!(got[3], format!("b,{},,,,,,,", t("00")));
}

/// Input NULLs, as Flink's csv format reads them (since 1.18): an empty
/// numeric cell (spaces aside) and the `'csv.null-literal'` are `NULL`; a
/// written-out `NaN` is still a bad row, not a `NULL`.
#[test]
fn empty_cells_and_the_null_literal_are_null_inputs() {
    let sql = S.replace(
        "'format' = 'csv'",
        "'format' = 'csv', 'csv.null-literal' = 'NULL'",
    ) + "SELECT sensor, window_start, COUNT(*) AS n, COUNT(temp) AS ct, SUM(temp) AS st,
    AVG(vib) AS av, COUNT(vib) AS cv, COALESCE(SUM(temp), -1) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
WHERE vib IS NULL OR vib < 6
GROUP BY sensor, window_start, window_end;";
    let input = "2020-04-15 08:00:01,a,run,25,1
2020-04-15 08:00:02,a,run,,2
2020-04-15 08:00:03,a,idle,10,
2020-04-15 08:00:04,a,run, , 
2020-04-15 08:00:06,a,idle,NULL,5
2020-04-15 08:00:07,a,idle,30,7
2020-04-15 08:00:07,b,run,,
";
    assert_eq!(
        run(&sql, input),
        [
            "sensor,window_start,n,ct,st,av,cv,z".to_string(),
            // Rows 1-4: temp 25, NULL, 10, NULL; vib 1, 2, NULL, NULL.
            format!("a,{},4,2,35.000000,1.500000,2,35.000000", t("00")),
            // The NULL literal, then vib 7 fails WHERE.
            format!("a,{},1,0,,5.000000,1,-1.000000", t("05")),
            // Every value NULL: still a row (WHERE's IS NULL keeps it).
            format!("b,{},1,0,,,0,-1.000000", t("05")),
        ]
    );
    // A written-out NaN is a bad row; without the option `NULL` is too.
    let p = parse("q.sql", &(S.to_string() + "SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '5' SECONDS)) GROUP BY window_start, window_end;")).unwrap();
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let input = "2020-04-15 08:00:01,a,run,NaN,1\n2020-04-15 08:00:02,a,run,NULL,1\n2020-04-15 08:00:03,a,run,,1\n";
    let (sum, _) =
        exec::replay(&p, input.as_bytes(), &mut out, |b, _| bad.push(b.clone())).unwrap();
    let bad: Vec<(u64, crate::replay::RowError)> = bad.iter().map(|b| (b.line, b.error)).collect();
    use crate::replay::RowError::BadNumber;
    assert_eq!(bad, [(1, BadNumber), (2, BadNumber)]);
    assert_eq!(sum.bad_rows, 2);
    assert_eq!(String::from_utf8(out).unwrap(), format!("n\n1\n"));
}
