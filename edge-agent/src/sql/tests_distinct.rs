//! `COUNT(DISTINCT x)` in windowed aggregates (Flink: the distinct non-NULL
//! values per window and group): hand-computed rows over TUMBLE, HOP (a
//! value in two windows), CUMULATE, SESSION and the legacy group windows,
//! NULLs left out, a checkpoint and restore in the middle of a window, and
//! errors.

use super::tests::{run, t};
use super::*;

const R: &str = "CREATE TABLE r (
  ts TIMESTAMP(3),
  sensor STRING,
  site STRING,
  v DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'r.csv', 'format' = 'csv');
";

/// 08:00:00 + seconds, sensor, site, v. `-0` equals `0`.
const ROWS: &str = "2020-04-15 08:00:01,a,north,1
2020-04-15 08:00:02,a,south,2
2020-04-15 08:00:03,b,north,1
2020-04-15 08:00:04,a,north,1
2020-04-15 08:00:06,b,east,3
2020-04-15 08:00:07,a,north,2
2020-04-15 08:00:11,b,west,0
2020-04-15 08:00:12,b,west,-0
";

fn rows(query: &str) -> Vec<String> {
    run(&format!("{R}{query}"), ROWS)
}

#[test]
fn tumble_counts_distinct_numbers_and_strings() {
    let got = rows(
        "SELECT window_start, COUNT(DISTINCT v) AS dv, COUNT(DISTINCT site) AS ds, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        got,
        [
            "window_start,dv,ds,n".to_string(),
            format!("{},2,2,4", t("00")),
            format!("{},2,2,2", t("05")),
            format!("{},1,1,2", t("10")),
        ]
    );
    // Per key.
    let got = rows(
        "SELECT sensor, window_start, COUNT(DISTINCT v) AS dv, COUNT(DISTINCT site) AS ds
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
  GROUP BY sensor, window_start, window_end;",
    );
    assert_eq!(
        got[1..],
        [
            format!("a,{},2,2", t("00")),
            format!("b,{},2,2", t("00")),
            format!("b,{},1,1", t("10")),
        ]
    );
}

#[test]
fn hop_counts_a_value_in_each_of_its_windows() {
    let got = rows(
        "SELECT window_start, window_end, COUNT(DISTINCT v) AS dv, COUNT(DISTINCT site) AS ds
  FROM TABLE(HOP(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))
  GROUP BY window_start, window_end;",
    );
    // v = 3 and `east` (08:00:06) are in [0, 10) and [5, 15).
    assert_eq!(
        got[1..],
        [
            format!("2020-04-15 07:59:55.000,{},2,2", t("05")),
            format!("{},{},3,3", t("00"), t("10")),
            format!("{},{},3,3", t("05"), t("15")),
            format!("{},{},1,1", t("10"), t("20")),
        ]
    );
}

#[test]
fn cumulate_session_and_legacy_windows_count_distinct() {
    let got = rows(
        "SELECT window_start, window_end, COUNT(DISTINCT v) AS dv
  FROM TABLE(CUMULATE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        got[1..],
        [
            format!("{},{},2", t("00"), t("05")),
            format!("{},{},3", t("00"), t("10")),
            format!("{},{},1", t("10"), t("15")),
            format!("{},{},1", t("10"), t("20")),
        ]
    );
    // Sessions of `b` (gap 4 s): 08:00:03 and 08:00:06 merge; 11 and 12.
    let got = rows(
        "SELECT sensor, window_start, window_end, COUNT(DISTINCT v) AS dv, COUNT(DISTINCT site) AS ds
  FROM TABLE(SESSION(TABLE r PARTITION BY sensor, DESCRIPTOR(ts), INTERVAL '4' SECONDS))
  GROUP BY sensor, window_start, window_end;",
    );
    assert_eq!(
        got[1..],
        [
            format!("a,{},{},2,2", t("01"), t("11")),
            format!("b,{},{},2,2", t("03"), t("10")),
            format!("b,{},{},1,1", t("11"), t("16")),
        ]
    );
    let got = rows(
        "SELECT TUMBLE_START(ts, INTERVAL '5' SECOND) AS ws, COUNT(DISTINCT v) AS dv
  FROM r GROUP BY TUMBLE(ts, INTERVAL '5' SECOND);",
    );
    assert_eq!(
        got[1..],
        [
            format!("{},2", t("00")),
            format!("{},2", t("05")),
            format!("{},1", t("10")),
        ]
    );
}

/// Flink leaves NULL out of `COUNT(DISTINCT …)`: a window of NULLs only
/// counts 0.
#[test]
fn nulls_are_not_counted() {
    let got = rows(
        "SELECT window_start, COUNT(DISTINCT CASE WHEN v > 1 THEN site END) AS warm_sites,
       COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        got[1..],
        [
            format!("{},1,4", t("00")),
            format!("{},2,2", t("05")),
            format!("{},0,2", t("10")),
        ]
    ); // A numeric expression through its text: NULL left out, samples kept.
    let got = rows(
        "SELECT window_start, COUNT(DISTINCT CAST(CASE WHEN v > 1 THEN v END AS STRING)) AS warm,
       COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;",
    );
    assert_eq!(
        got[1..],
        [
            format!("{},1,4", t("00")),
            format!("{},2,2", t("05")),
            format!("{},0,2", t("10")),
        ]
    );
}

/// The window's distinct values are in the engine's snapshot: a restore in
/// the middle of a window counts on from them.
#[test]
fn a_checkpoint_in_the_middle_of_a_window_keeps_its_distinct_values() {
    let p = parse(
        "q.sql",
        &format!(
            "{R}SELECT window_start, COUNT(DISTINCT v) AS dv
  FROM TABLE(HOP(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS, INTERVAL '10' SECONDS))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    let t0 = crate::timefmt::parse_datetime_ms("2020-04-15 08:00:00").unwrap();
    let samples = [
        (1, 1.0),
        (2, 2.0),
        (3, 1.0),
        (6, 3.0),
        (7, 2.0),
        (8, 1.0),
        (30, 9.0),
    ];
    let run = |cut: Option<usize>| {
        let mut e = p.pipeline.spec.clone().build().unwrap();
        let mut out = Vec::new();
        for (i, (s, v)) in samples.iter().enumerate() {
            if cut == Some(i) {
                let snap = e.snapshot().unwrap();
                e = p.pipeline.spec.clone().build().unwrap();
                e.restore(&snap).unwrap();
            }
            let ts = t0 + s * 1000;
            e.handle_sample(ts, 0, "r", ts, &[*v]).unwrap();
            while let Some(o) = e.poll_output() {
                if let weir_core::output::Output::Window(w) = o {
                    out.push((w.start - t0, w.values.as_slice().to_vec()));
                }
            }
        }
        out
    };
    let whole = run(None);
    // [-5, 5): {1, 2}; [0, 10): {1, 2, 3}; [5, 15): {3, 2, 1}.
    let dv: Vec<(i64, f64)> = whole.iter().map(|(s, v)| (*s, v[v.len() - 1])).collect();
    assert_eq!(dv, [(-5_000, 2.0), (0, 3.0), (5_000, 3.0)]);
    for cut in 1..samples.len() {
        assert_eq!(run(Some(cut)), whole, "restored before sample {cut}");
    }
}

#[test]
fn distinct_in_other_aggregates_is_refused_naming_count_distinct() {
    let e = parse(
        "q.sql",
        &format!(
            "{R}SELECT window_start, SUM(DISTINCT v) AS s
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DISTINCT in SUM") && e.contains("COUNT(DISTINCT column)"),
        "{e}"
    );
}

/// `weir run` counts numbers, the key's text and other text columns (their
/// keys computed before the journal).
#[test]
fn weir_run_takes_count_distinct_of_numbers_and_text() {
    let q = |agg: &str| {
        parse(
            "q.sql",
            &format!(
                "{R}SELECT window_start, {agg} AS d
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;"
            ),
        )
        .unwrap()
    };
    for ok in [
        "COUNT(DISTINCT v)",
        "COUNT(DISTINCT v * 2)",
        "COUNT(DISTINCT site)",
    ] {
        assert!(
            q(ok).agent_can_run().is_ok(),
            "{ok}: {:?}",
            q(ok).agent_can_run()
        );
    }
    let site = q("COUNT(DISTINCT site)").query;
    assert!(site.stages_at_ingest() && !site.filters_at_ingest());
    assert_eq!(site.ingest_computed().collect::<Vec<_>>(), [0]);
    let keyed = parse(
        "q.sql",
        &format!(
            "{R}SELECT sensor, window_start, COUNT(DISTINCT sensor) AS d
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY sensor, window_start, window_end;"
        ),
    )
    .unwrap();
    assert!(keyed.agent_can_run().is_ok());
}

/// A window with more distinct values than a window keeps counts `NULL`,
/// not a wrong number, and the operator counts it.
#[test]
fn a_window_past_the_bound_counts_null_and_is_counted() {
    let cap = weir_core::distinct::DISTINCT_CAP;
    let mut input = String::new();
    for i in 0..=cap {
        // Window [0, 5 s): cap + 1 values; [5 s, 10 s): two.
        input.push_str(&format!("2020-04-15 08:00:01,a,north,{i}\n"));
    }
    input.push_str("2020-04-15 08:00:06,a,north,1\n2020-04-15 08:00:07,a,north,2\n");
    let p = parse(
        "q.sql",
        &format!(
            "{R}SELECT window_start, COUNT(DISTINCT v) AS dv, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
  GROUP BY window_start, window_end;"
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    let (_, engine) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..],
        [
            format!("{},,{}", t("00"), cap + 1),
            format!("{},2,2", t("05"))
        ]
    );
    assert_eq!(engine.op_stats(0).unwrap().distinct_overflow, 1);
}
