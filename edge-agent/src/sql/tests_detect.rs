//! Detector table functions (`TABLE(KESTREL(TABLE t PARTITION BY k, …))`):
//! the rows are the scores of the TOML `[[detect]]` with the same kind and
//! parameters, sample for sample; `EXPLAIN`, expressions, `WHERE`, errors.

use super::*;

const DDL: &str = "CREATE TABLE s (sensor STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv');
";

/// Two pumps, a second apart, a spike on pump-2, rows a little out of
/// order (within the 5 s bound) and one late row.
fn input() -> String {
    let mut rows = Vec::new();
    let mut x: u64 = 7;
    for i in 0..1500i64 {
        for (k, off) in [("pump-1", 0), ("pump-2", 7)] {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.6;
            let spike = if k == "pump-2" && i == 1000 {
                15.0
            } else {
                0.0
            };
            let v = (i as f64 / 20.0).sin() * 2.0 + noise + spike;
            rows.push(format!("{k},{},{v:.4}", 1_700_000_000_000 + i * 1000 + off));
        }
    }
    for j in (0..rows.len() - 3).step_by(97) {
        rows.swap(j, j + 2);
    }
    // Ten seconds behind pump-1's newest: late.
    rows.insert(2000, "pump-1,1700000990000,0.5".to_string());
    rows.join("\n") + "\n"
}

/// (ts, score) of every row of `sql`, sorted by time, and the flagged ones.
fn sql_scores(sql: &str, input: &str) -> (Vec<(i64, String)>, usize) {
    let p = parse("q.sql", &format!("{DDL}{sql}")).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("sensor,rowtime,v,score,anomaly"));
    let mut rows: Vec<(i64, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                crate::timefmt::parse_datetime_ms(f[1]).expect("a time"),
                f[3].to_string(),
            )
        })
        .collect();
    rows.sort();
    (rows, sum.flagged as usize)
}

/// The TOML `[[detect]]` twin's (ts, score), sorted by time.
fn toml_scores(kind: &str, params: &str, input: &str) -> (Vec<(i64, String)>, usize) {
    let toml = format!(
        "name = \"t\"\n[[source]]\nname = \"s\"\nfields = [\"v\"]\nmax_out_of_orderness = \"5s\"\n\
         [[detect]]\nid = \"{kind}\"\nsource = \"s\"\nfield = \"v\"\nkind = \"{kind}\"\n{params}"
    );
    let pf = crate::pipeline_file::parse("t.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) =
        crate::replay::replay(&pf, 0, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut rows: Vec<(i64, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[2].to_string())
        })
        .collect();
    rows.sort();
    (rows, sum.flagged as usize)
}

#[test]
fn every_detector_gives_the_scores_of_its_toml_twin() {
    let input = input();
    for (f, params_sql, params_toml) in [
        ("KESTREL", "", ""),
        ("kestrel_banded", "", ""),
        ("KESTREL_CALIBRATED", "", ""),
        ("EWMA", ", threshold => 0.2", "threshold = 0.2\n"),
        (
            "MAD",
            ", cooldown => 10, hysteresis => 0.05",
            "cooldown = 10\nhysteresis = 0.05\n",
        ),
        ("CUSUM", "", ""),
    ] {
        let sql = format!(
            "SELECT sensor, rowtime, v, score, anomaly FROM TABLE({f}(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v){params_sql}));"
        );
        let (rows, flagged) = sql_scores(&sql, &input);
        let (twin, twin_flagged) = toml_scores(&f.to_ascii_lowercase(), params_toml, &input);
        // 3,000 on-time rows; the late one reaches neither.
        assert_eq!(rows.len(), 3000, "{f}");
        assert_eq!(rows, twin, "{f}");
        assert_eq!(flagged, twin_flagged, "{f}");
        if f == "KESTREL" {
            assert!(flagged >= 1, "the spike is flagged");
        }
    }
}

#[test]
fn rows_take_expressions_where_and_select_star() {
    let input = input();
    let p = parse(
        "q.sql",
        &format!(
            "{DDL}SELECT *, ROUND(score * 100) AS pct FROM TABLE(KESTREL(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v))) WHERE anomaly OR score > 0.5;"
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("sensor,rowtime,v,score,anomaly,pct"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(!rows.is_empty());
    for r in &rows {
        let score: f64 = r[3].parse().unwrap();
        assert!(r[4] == "true" || score > 0.5, "{r:?}");
        assert_eq!(
            r[5].parse::<f64>().unwrap(),
            (score * 100.0).round(),
            "{r:?}"
        );
    }
    // The spike: pump-2 at 1,000 s.
    assert!(rows
        .iter()
        .any(|r| r[0] == "pump-2" && r[1] == "2023-11-14 22:30:00.007" && r[4] == "true"));
}

#[test]
fn explain_names_the_detector_operator() {
    let p = parse(
        "q.sql",
        &format!("{DDL}EXPLAIN SELECT sensor, score FROM TABLE(CUSUM(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v), threshold => 0.7));"),
    )
    .unwrap();
    let ex = &p.query.explain;
    assert!(ex.contains("operator `cusum`: detector"), "{ex}");
    assert!(ex.contains("threshold: 0.7"), "{ex}");
    assert!(ex.contains("[sensor, rowtime, v, score, anomaly]"), "{ex}");
    assert_eq!(p.pipeline.spec.operators.len(), 1);
    assert_eq!(p.pipeline.spec.operators[0].id, "cusum");
}

#[test]
fn detector_errors_say_what_and_where() {
    let e = |q: &str| {
        parse("q.sql", &format!("{DDL}{q}"))
            .unwrap_err()
            .to_string()
    };
    let m = e("SELECT * FROM TABLE(KESTREL(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v), alpha => 0.1));");
    assert!(
        m.contains("q.sql:5:") && m.contains("takes no argument `alpha`"),
        "{m}"
    );
    let m = e("SELECT * FROM TABLE(MAD(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v), cooldown => -1));");
    assert!(m.contains("must be a number"), "{m}");
    let m = e("SELECT * FROM TABLE(EWMA(TABLE s, DESCRIPTOR(rowtime), DESCRIPTOR(v)));");
    assert!(m.contains("PARTITION BY"), "{m}");
    let m = e("SELECT * FROM TABLE(EWMA(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v), COLUMNS => DESCRIPTOR(a)));");
    assert!(m.contains("takes no argument `COLUMNS`"), "{m}");
    let m = e("SELECT sensor, COUNT(*) FROM TABLE(EWMA(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v))) GROUP BY sensor;");
    assert!(m.contains("GROUP BY or HAVING"), "{m}");
}

#[test]
fn the_example_compiles_for_the_agent() {
    let p = parse("kestrel.sql", include_str!("../../../examples/kestrel.sql"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(p.agent_can_run().is_ok());
    let op = &p.pipeline.spec.operators[0];
    assert_eq!(
        (op.id.as_str(), op.field.as_str()),
        ("kestrel_banded", "rms")
    );
    let sink = p.query.sink.as_ref().expect("the alerts sink");
    assert_eq!(sink.topic, "plant/alerts");
    assert_eq!(sink.columns, ["pump", "at_ms", "rms", "score"]);
    assert!(p.query.scores && p.query.having.is_some());
}

/// `SELECT *` over a view names the columns after the view's, and the rows
/// are those of the query over the table.
#[test]
fn select_star_over_a_view_takes_the_views_names() {
    let input = input();
    let rows = |q: &str| {
        let p = parse("q.sql", &format!("{DDL}{q}")).unwrap();
        let mut out = Vec::new();
        exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
        String::from_utf8(out).unwrap()
    };
    let table = rows("SELECT *, score > 0.5 AS high FROM TABLE(KESTREL(TABLE s PARTITION BY sensor, DESCRIPTOR(rowtime), DESCRIPTOR(v)));");
    let view = rows("CREATE VIEW pumps (pump, t, level) AS SELECT sensor, rowtime, v FROM s;
SELECT *, score > 0.5 AS high FROM TABLE(KESTREL(TABLE pumps PARTITION BY pump, DESCRIPTOR(t), DESCRIPTOR(level)));");
    let (th, tb) = table.split_once('\n').unwrap();
    let (vh, vb) = view.split_once('\n').unwrap();
    assert_eq!(th, "sensor,rowtime,v,score,anomaly,high");
    assert_eq!(vh, "pump,t,level,score,anomaly,high");
    assert_eq!(tb, vb);
    assert!(tb.lines().count() > 2000);
}
