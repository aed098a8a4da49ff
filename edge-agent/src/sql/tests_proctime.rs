//! `PROCTIME()`: a processing-time attribute (the gateway's clock on
//! arrival) for tables whose readings carry no time of their own; what it
//! compiles to, and what is refused with it, by name.

use super::*;
use weir_core::time::TimeMode;

const DDL: &str = "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
";

fn compile(query: &str) -> SqlPipeline {
    parse("q.sql", &format!("{DDL}{query}")).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(sql: &str) -> String {
    parse("q.sql", sql)
        .err()
        .unwrap_or_else(|| panic!("accepted: {sql}"))
        .to_string()
}

#[test]
fn window_aggregations_over_proctime_run_on_processing_time() {
    for q in [
        "SELECT sensor, window_start, AVG(temp) AS mean
         FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '10' SECOND))
         GROUP BY sensor, window_start, window_end;",
        "SELECT sensor, TUMBLE_START(pt, INTERVAL '10' SECOND) AS ws, COUNT(*) AS n
         FROM s GROUP BY sensor, TUMBLE(pt, INTERVAL '10' SECOND);",
        "SELECT sensor, window_end, MAX(temp) AS top
         FROM TABLE(HOP(TABLE s, DESCRIPTOR(pt), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
         GROUP BY sensor, window_start, window_end;",
        // Rows without a window: stamped, filtered, passed on.
        "SELECT sensor, pt, temp FROM s WHERE temp > 50;",
    ] {
        let p = compile(q);
        assert_eq!(p.pipeline.spec.time.mode, TimeMode::Processing, "{q}");
        let m = p.pipeline.mqtt[0].as_ref().expect("an mqtt source");
        // A reading without a time is stamped with the arrival clock; a
        // `ts` field in the payload is not the time attribute.
        let mut batch = crate::decode::Batch::new();
        m.decoder
            .decode(
                "p/x",
                br#"{"sensor":"a","temp":1.5,"ts":5}"#,
                1_780_000_000_123,
                &mut batch,
            )
            .unwrap();
        assert_eq!(batch.len(), 1, "{q}: {:?}", batch.errors());
        assert_eq!(batch.get(0).ts, 1_780_000_000_123, "{q}");
        assert!(p.file_refusal().is_some(), "{q}");
    }
    let p = compile(
        "EXPLAIN SELECT sensor, window_start, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '1' MINUTE))
         GROUP BY sensor, window_start, window_end;",
    );
    assert!(
        p.query.explain.contains("(processing time, ms;"),
        "{}",
        p.query.explain
    );
    assert!(
        p.query.explain.contains("time `pt` = PROCTIME()"),
        "{}",
        p.query.explain
    );
    // Event time stays event time, and reads files.
    let e = parse(
        "q.sql",
        "CREATE TABLE f (sensor STRING, ts BIGINT, v DOUBLE, rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
           WATERMARK FOR rowtime AS rowtime) WITH ('connector' = 'filesystem', 'format' = 'csv');
         SELECT sensor, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE f, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
         GROUP BY sensor, window_start, window_end;",
    )
    .unwrap();
    assert_eq!(e.pipeline.spec.time.mode, TimeMode::Event);
    assert!(e.file_refusal().is_none());
}

#[test]
fn proctime_is_refused_where_it_cannot_mean_anything_with_the_reason() {
    let q = "SELECT sensor, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '1' SECOND))
             GROUP BY sensor, window_start, window_end;";
    for (sql, says) in [
        (
            format!(
                "CREATE TABLE s (sensor STRING, ts TIMESTAMP(3), temp DOUBLE, pt AS PROCTIME(),
                   WATERMARK FOR ts AS ts) WITH ('connector' = 'mqtt', 'topic' = 'p', 'format' = 'json');\n{q}"
            ),
            "one time attribute per table",
        ),
        (
            format!(
                "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME(), pt2 AS PROCTIME())
                   WITH ('connector' = 'mqtt', 'topic' = 'p', 'format' = 'json');\n{q}"
            ),
            "declare one PROCTIME() column",
        ),
        (
            format!(
                "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
                   WITH ('connector' = 'mqtt', 'topic' = 'p', 'format' = 'json', 'timestamp.path' = 't');\n{q}"
            ),
            "'timestamp.path' in a table whose time is PROCTIME()",
        ),
        (
            format!(
                "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
                   WITH ('connector' = 'mqtt', 'topic' = 'p', 'format' = 'json', 'weir.watermark' = 'per-key');\n{q}"
            ),
            "'weir.watermark' in a table whose time is PROCTIME()",
        ),
        (
            format!(
                "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
                   WITH ('connector' = 'mqtt', 'topic' = 'p', 'format' = 'senml-json');\n{q}"
            ),
            "PROCTIME() over SenML",
        ),
        (
            format!(
                "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
                   WITH ('connector' = 'filesystem', 'path' = 's.csv', 'format' = 'csv');\n{q}"
            ),
            "a filesystem table whose time is PROCTIME()",
        ),
        (
            format!(
                "{DDL}SELECT sensor, AVG(temp) OVER (PARTITION BY sensor ORDER BY pt) AS a FROM s;"
            ),
            "OVER aggregations over a PROCTIME() table",
        ),
        (
            format!(
                "{DDL}SELECT * FROM TABLE(KESTREL(TABLE s PARTITION BY sensor, DESCRIPTOR(pt), DESCRIPTOR(temp)));"
            ),
            "over a PROCTIME() table",
        ),
        (
            format!(
                "{DDL}SELECT sensor, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
                 GROUP BY sensor, window_start, window_end;"
            ),
            "use DESCRIPTOR(pt)",
        ),
    ] {
        let e = refused(&sql);
        assert!(e.contains(says), "{sql}\n→ {e}");
    }
}

#[test]
fn the_shell_describes_a_proctime_column_and_refuses_a_file_read_by_it() {
    let script = "CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'filesystem', 'path' = 'nowhere.csv', 'format' = 'csv');
DESCRIBE s;
SELECT sensor, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '1' SECOND))
  GROUP BY sensor, window_start, window_end;
";
    let mut out = Vec::new();
    shell::run(script.as_bytes(), &mut out, false).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("|     pt | TIMESTAMP_LTZ(3) NOT NULL *PROCTIME* | FALSE | AS PROCTIME() |"),
        "{out}"
    );
    assert!(out.contains("3 row(s) in set"), "{out}");
    assert!(
        out.contains("a filesystem table whose time is PROCTIME()"),
        "{out}"
    );
}

#[test]
fn select_star_lists_a_proctime_column_where_it_is_declared() {
    let p = parse(
        "q.sql",
        "CREATE TABLE s (pt AS PROCTIME(), sensor STRING, temp DOUBLE)
           WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
         SELECT * FROM s;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = p.query.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pt", "sensor", "temp"]);
}
