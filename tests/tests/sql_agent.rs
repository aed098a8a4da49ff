//! `weir run` with a Flink SQL pipeline: the agent subscribes to the MQTT
//! table's topic, decodes with the table's columns, and publishes the
//! windows an uninterrupted engine computes for the same plan.

use std::collections::HashMap;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

/// The source table every test here reads: the readings of
/// `weir_e2e::input` on `plant/+/v` (a macro, so that constants can
/// `concat!` it).
macro_rules! source {
    () => {
        "SET 'pipeline.name' = 'w';
CREATE TABLE s (
  k STRING, t BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(t, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'plant/+/v', 'qos' = '1', 'format' = 'json');
"
    };
}

/// The end-to-end pipeline (`weir_e2e::PIPELINE`) in SQL.
const SQL: &str = concat!(
    source!(),
    "SELECT k, window_start, window_end, COUNT(*) AS n, AVG(v) AS mean, MIN(v) AS lo,
       MAX(v) AS hi, STDDEV_POP(v) AS sd, EWMA_Z(AVG(v), 0.1, 3.0, 5) AS anomaly
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
"
);

#[test]
fn the_agent_runs_a_sql_pipeline() {
    // The SQL builds the TOML pipeline's operators (names aside): COUNT(*)
    // is `rows` (NULLs included) where the TOML says `count`, with the
    // same state, so an update from one to the other keeps it.
    let sql = weir_agent::pipeline_file::parse("p.sql", SQL).expect("sql");
    let toml = weir_agent::pipeline_file::parse("p.toml", PIPELINE).expect("toml");
    let mut kind = sql.spec.operators[0].kind.clone();
    if let weir_core::spec::OperatorKind::Window(w) = &mut kind {
        assert_eq!(w.aggregates[0], weir_core::agg::AggKind::Rows);
        w.aggregates[0] = weir_core::agg::AggKind::Count;
    }
    assert_eq!(kind, toml.spec.operators[0].kind);
    assert_eq!(sql.spec.operators[0].id, toml.spec.operators[0].id);
    let state = |p: &weir_agent::pipeline_file::PipelineFile| {
        weir_core::snapshot::state_type(&p.spec.time, &p.spec.operators[0])
    };
    assert_eq!(state(&sql), state(&toml));

    let msgs = input(20_000, 4, T0);
    let expected = reference(SQL, &msgs);
    assert!(expected.len() > 20, "the input must fire windows");
    let windows = format!("weir/{GATEWAY}/windows/#");
    let col = run_sql_agent("sql-agent", SQL, &[&windows], &msgs, expected.len());
    let col = &col[0];
    col.assert_matches(&expected);
}

/// A `WHERE` over a numeric column and an aggregate over an expression, in
/// the agent: both run in the engine (filter and computed field).
const SQL_WHERE: &str = concat!(
    source!(),
    "SELECT k, window_start, window_end, COUNT(*) AS n, MAX(v) AS hi,
       MAX(v * 1.8 + 32) AS hi_f
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE v < 21.5
GROUP BY k, window_start, window_end;
"
);

#[test]
fn the_agent_runs_a_sql_where_in_the_engine() {
    let sql = weir_agent::pipeline_file::parse("p.sql", SQL_WHERE).expect("sql");
    assert!(sql.spec.sources[0].filter.is_some());
    assert_eq!(sql.spec.sources[0].compute.len(), 1);

    let msgs = input(20_000, 4, T0);
    let expected = reference(SQL_WHERE, &msgs);
    // By hand: the same query without WHERE over the readings it keeps
    // gives the same windows; the engine's filter may fire more of them
    // (a dropped reading still advances the watermark), never fewer.
    let kept: Vec<Msg> = msgs.iter().filter(|m| m.v < 21.5).cloned().collect();
    assert!(kept.len() < msgs.len() * 9 / 10 && kept.len() > msgs.len() / 10);
    let by_hand = reference(&SQL_WHERE.replace("WHERE v < 21.5\n", ""), &kept);
    assert!(by_hand.len() > 20, "the input must fire windows");
    for (id, payload) in &by_hand {
        assert_eq!(expected.get(id), Some(payload), "window {id}");
    }
    assert!(expected.len() >= by_hand.len());

    let windows = format!("weir/{GATEWAY}/windows/#");
    let col = run_sql_agent(
        "sql-agent-where",
        SQL_WHERE,
        &[&windows],
        &msgs,
        expected.len(),
    );
    let col = &col[0];
    col.assert_matches(&expected);
}

/// A `WHERE` on the key, `HAVING` and computed result columns, in the
/// agent: the key filter runs on journal records before the engine, the
/// rest on window results before they are published, result columns by
/// name.
const SQL_HAVING: &str = concat!(
    source!(),
    "SELECT k AS sensor, window_start, MAX(v) - MIN(v) AS spread,
       CASE WHEN AVG(v) > 21 THEN 'hot' ELSE 'ok' END AS state, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE k <> 's03'
GROUP BY k, window_start, window_end
HAVING MAX(v) - MIN(v) > 1.3;
"
);

#[test]
fn the_agent_runs_sql_having_and_computed_columns() {
    let pf = weir_agent::pipeline_file::parse("p.sql", SQL_HAVING).expect("weir run takes it");
    assert!(pf.sql.is_some());

    let msgs = input(20_000, 4, T0);
    // Which windows fire: the engine on the readings the WHERE keeps.
    let kept: Vec<Msg> = msgs.iter().filter(|m| m.key != "s03").cloned().collect();
    let plain = concat!(
        source!(),
        "SELECT k, window_start, window_end, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
"
    );
    let fired = reference(plain, &kept);
    // The rows' values by hand: (key, window start) → readings.
    let mut groups: std::collections::BTreeMap<(String, i64), Vec<f64>> = Default::default();
    for m in &kept {
        let start = m.ts - m.ts.rem_euclid(1000);
        groups.entry((m.key.clone(), start)).or_default().push(m.v);
    }
    let mut expected: HashMap<String, serde_json::Value> = HashMap::new();
    let mut dropped = 0;
    for ((key, start), vs) in &groups {
        let id = format!("{GATEWAY}/w/{key}/{start}");
        if !fired.contains_key(&id) {
            continue;
        }
        let max = vs.iter().cloned().fold(f64::MIN, f64::max);
        let min = vs.iter().cloned().fold(f64::MAX, f64::min);
        let mean = vs.iter().sum::<f64>() / vs.len() as f64;
        if max - min <= 1.3 {
            dropped += 1;
            continue;
        }
        expected.insert(
            id.clone(),
            serde_json::json!({
                "id": id, "gateway": GATEWAY, "op": "w", "key": key,
                "start": start, "end": start + 1000, "emission": "final",
                "sensor": key, "window_start": start, "spread": max - min,
                "state": if mean > 21.0 { "hot" } else { "ok" }, "n": vs.len(),
            }),
        );
    }
    assert!(
        expected.len() > 10 && dropped > 10,
        "HAVING must keep and drop windows: {} kept, {dropped} dropped",
        expected.len()
    );
    let states: std::collections::HashSet<&str> = expected
        .values()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 2, "both CASE branches: {states:?}");

    let windows = format!("weir/{GATEWAY}/windows/#");
    let col = run_sql_agent(
        "sql-agent-having",
        SQL_HAVING,
        &[&windows],
        &msgs,
        expected.len(),
    );
    let col = &col[0];
    let got = col.with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), expected.len(), "no more rows than HAVING keeps");
    for (id, want) in &expected {
        let payload = got.get(id).unwrap_or_else(|| panic!("row {id} missing"));
        let g: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let (gm, wm) = (g.as_object().unwrap(), want.as_object().unwrap());
        assert_eq!(
            gm.keys().collect::<Vec<_>>(),
            wm.keys().collect::<Vec<_>>(),
            "{id}: the envelope and the result columns, by name"
        );
        for (k, w) in wm {
            match (w.as_f64(), g[k].as_f64()) {
                (Some(w), Some(x)) if k == "spread" => {
                    assert!((w - x).abs() < 1e-6, "{id}: spread {x}, by hand {w}")
                }
                _ => assert_eq!(&g[k], w, "{id}: {k}"),
            }
        }
    }
}

/// `INSERT INTO` an mqtt sink: `weir run` publishes each result row on the
/// sink's topic, under the sink's column names (by position, as Flink maps
/// an `INSERT`), and nothing on its own windows topic.
#[test]
fn the_agent_publishes_rows_inserted_into_an_mqtt_sink() {
    let ddl = source!();
    let sql = format!(
        "{ddl}CREATE TABLE agg (sensor STRING, ws BIGINT, readings BIGINT)
  WITH ('connector' = 'mqtt', 'topic' = 'cloud/agg');
INSERT INTO agg
SELECT k, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;"
    );
    let plain = format!(
        "{ddl}SELECT k, window_start, window_end, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;"
    );
    let msgs = input(8_000, 4, T0);
    let fired = reference(&plain, &msgs);
    assert!(fired.len() > 10, "the input must fire windows");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        let start = m.ts - m.ts.rem_euclid(1000);
        *counts
            .entry(format!("{GATEWAY}/w/{}/{start}", m.key))
            .or_default() += 1;
    }

    let windows = format!("weir/{GATEWAY}/windows/#");
    let cols = run_sql_agent(
        "sql-agent-sink",
        &sql,
        &["cloud/agg", &windows],
        &msgs,
        fired.len(),
    );
    let (col, own) = (&cols[0], &cols[1]);
    assert_eq!(own.distinct(), 0, "nothing on the windows topic");
    let got = col.with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), fired.len());
    for id in fired.keys() {
        let payload = got.get(id).unwrap_or_else(|| panic!("row {id} missing"));
        let g: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let start = g["start"].as_i64().unwrap();
        assert_eq!(g["sensor"], g["key"], "{id}");
        assert_eq!(g["ws"].as_i64(), Some(start), "{id}");
        assert_eq!(g["readings"].as_u64(), Some(counts[id] as u64), "{id}");
        assert!(g.get("n").is_none() && g.get("k").is_none(), "{id}: {g}");
    }
}

/// A keyed WebAssembly function called from SQL as a table function, under
/// `weir run`: the W1 guest computes the end-to-end pipeline's 1 s windows
/// and the agent publishes one message per window (its operator named after
/// the function), with the values of the native pipeline.
#[test]
fn the_agent_runs_a_keyed_function_called_as_a_table_function() {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions");
    let Some(module) = w1_module(&target) else {
        return;
    };
    let sql = format!(
        concat!(
            source!(),
            "CREATE FUNCTION w1 AS '{}' LANGUAGE WASM;
SELECT k, window_start, window_end, `count`, mean, `min`, `max`, stddev, anomaly
FROM TABLE(w1(TABLE s PARTITION BY k, DESCRIPTOR(rowtime), DESCRIPTOR(v),
  COLUMNS => DESCRIPTOR(`count`, mean, `min`, `max`, stddev), FLAG => TRUE, SEES_LATE => TRUE,
  size => 1000, alpha => 0.1, k => 3.0, warmup => 5));
"
        ),
        module.display()
    );
    let msgs = input(6_000, 4, T0);
    let native = reference(PIPELINE, &msgs);
    assert!(native.len() > 10, "the input must fire windows");
    let windows = format!("weir/{GATEWAY}/windows/#");
    let cols = run_sql_agent("sql-agent-keyed", &sql, &[&windows], &msgs, native.len());
    let got = cols[0].with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), native.len(), "one row per native window");
    for (id, want) in &native {
        // The function's operator is named after it: `w1`, not `w`.
        let id = id.replacen("/w/", "/w1/", 1);
        let g: serde_json::Value =
            serde_json::from_slice(got.get(&id).unwrap_or_else(|| panic!("{id} missing"))).unwrap();
        let w: serde_json::Value = serde_json::from_slice(want).unwrap();
        for f in ["count", "mean", "min", "max", "stddev"] {
            let (a, b) = (g[f].as_f64(), w[f].as_f64());
            assert!(
                matches!((a, b), (Some(a), Some(b)) if (a - b).abs() < 1e-6),
                "{id}: {f} {a:?}, native {b:?}"
            );
        }
    }
}

/// A detector table function under `weir run`: one row per reading the
/// `WHERE` keeps (a score over 0.05 or an alert), published with the
/// score the engine computes for the same plan.
#[test]
fn the_agent_publishes_a_detector_table_function_s_rows() {
    let sql = concat!(
        source!(),
        "SELECT k, rowtime, v, score, anomaly
FROM TABLE(KESTREL(TABLE s PARTITION BY k, DESCRIPTOR(rowtime), DESCRIPTOR(v)))
WHERE anomaly OR score > 0.05;
"
    );
    let pf = weir_agent::pipeline_file::parse("p.sql", sql).expect("weir run takes it");
    let msgs = input(20_000, 4, T0);
    // The engine's scores for the same plan.
    let mut engine = pf.spec.clone().build().expect("engine");
    let mut expected: HashMap<String, (f64, bool)> = HashMap::new();
    let mut scored = 0;
    for m in &msgs {
        let _ = engine.handle_sample(m.ts, 0, &m.key, m.ts, &[m.v]);
        while let Some(o) = engine.poll_output() {
            if let weir_core::output::Output::Score(s) = o {
                scored += 1;
                if s.verdict.flag || s.verdict.score > 0.05 {
                    let key = engine.key_name(s.key);
                    expected.insert(
                        format!("{GATEWAY}/w/{key}/{}", s.ts),
                        (s.verdict.score, s.verdict.flag),
                    );
                }
            }
        }
    }
    assert!(
        !expected.is_empty() && expected.len() < scored,
        "WHERE keeps some rows and drops others: {} of {scored}",
        expected.len()
    );
    let windows = format!("weir/{GATEWAY}/windows/#");
    let cols = run_sql_agent(
        "sql-agent-detector",
        sql,
        &[&windows],
        &msgs,
        expected.len(),
    );
    let got = cols[0].with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), expected.len(), "one row per kept reading");
    for (id, (score, flag)) in &expected {
        let payload = got.get(id).unwrap_or_else(|| panic!("row {id} missing"));
        let g: serde_json::Value = serde_json::from_slice(payload).unwrap();
        // JSON doubles have 6 decimals.
        assert!(
            (g["score"].as_f64().unwrap() - score).abs() <= 5e-7,
            "{id}: {g}"
        );
        assert_eq!(g["anomaly"].as_bool(), Some(*flag), "{id}: {g}");
        assert_eq!(g["k"], g["key"], "{id}: {g}");
        assert!(
            g["rowtime"].as_i64().is_some() && g["v"].as_f64().is_some(),
            "{g}"
        );
    }
}

/// A query without `GROUP BY` under `weir run`, inserted into an mqtt
/// sink: one message per reading that passes `WHERE`, at once (ids
/// `gw/w/<key>/<ts>/<lsn>`), with the reading's columns and an expression.
#[test]
fn the_agent_publishes_each_row_of_a_query_without_group_by() {
    let sql = concat!(
        source!(),
        "CREATE TABLE hot (sensor STRING, at_ms BIGINT, v DOUBLE, f DOUBLE)
  WITH ('connector' = 'mqtt', 'topic' = 'cloud/hot');
INSERT INTO hot SELECT k, t, v, v * 1.8 + 32 FROM s WHERE v > 22.5;
"
    );
    let msgs = input(8_000, 4, T0);
    let mut expected: HashMap<(String, i64), f64> = HashMap::new();
    for m in msgs.iter().filter(|m| m.v > 22.5) {
        expected.insert((m.key.clone(), m.ts), m.v);
    }
    assert!(expected.len() > 10 && expected.len() < msgs.len() / 2);
    let cols = run_sql_agent("sql-agent-rows", sql, &["cloud/hot"], &msgs, expected.len());
    let got = cols[0].with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), expected.len(), "one row per kept reading");
    let mut seen = std::collections::HashSet::new();
    for (id, payload) in &got {
        let g: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let (k, t) = (g["sensor"].as_str().unwrap(), g["at_ms"].as_i64().unwrap());
        let v = expected
            .get(&(k.to_string(), t))
            .unwrap_or_else(|| panic!("{id}: not a kept reading: {g}"));
        assert!((g["v"].as_f64().unwrap() - v).abs() <= 5e-7, "{g}");
        assert!(
            (g["f"].as_f64().unwrap() - (v * 1.8 + 32.0)).abs() <= 5e-6,
            "{g}"
        );
        assert!(id.starts_with(&format!("{GATEWAY}/w/{k}/{t}/")), "{id}");
        assert_eq!(g["start"].as_i64(), Some(t), "{g}");
        assert!(seen.insert((k.to_string(), t)), "{id}: twice");
    }
}

/// `OVER` under `weir run`, inserted into an mqtt sink: a moving average
/// of each sensor's last five readings, one message per reading once the
/// watermark passes it (ids `gw/w/<key>/<ts>/0`), every reading the
/// watermark passed once, none twice.
#[test]
fn the_agent_publishes_an_over_aggregation_per_reading() {
    let sql = concat!(
        source!(),
        "CREATE TABLE smooth (sensor STRING, at_ms BIGINT, v DOUBLE, avg5 DOUBLE, n BIGINT)
  WITH ('connector' = 'mqtt', 'topic' = 'cloud/smooth');
INSERT INTO smooth
SELECT k, t, v, AVG(v) OVER w, COUNT(*) OVER w FROM s
WINDOW w AS (PARTITION BY k ORDER BY rowtime ROWS BETWEEN 4 PRECEDING AND CURRENT ROW);
"
    );
    let msgs = input(6_000, 4, T0);
    // The watermark after the last reading: newest − 2 s − 1 ms.
    let wm = msgs.iter().map(|m| m.ts).max().unwrap() - 2_001;
    let mut last: HashMap<String, Vec<f64>> = HashMap::new();
    let mut expected: HashMap<(String, i64), (f64, f64, i64)> = HashMap::new();
    for m in &msgs {
        let recent = last.entry(m.key.clone()).or_default();
        recent.push(m.v);
        let frame = &recent[recent.len().saturating_sub(5)..];
        let avg = frame.iter().sum::<f64>() / frame.len() as f64;
        if m.ts <= wm {
            expected.insert((m.key.clone(), m.ts), (m.v, avg, frame.len() as i64));
        }
    }
    let cols = run_sql_agent(
        "sql-agent-over",
        sql,
        &["cloud/smooth"],
        &msgs,
        expected.len(),
    );
    let got = cols[0].with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        s.by_id.clone()
    });
    assert_eq!(got.len(), expected.len(), "one row per reading");
    for (id, payload) in &got {
        let g: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let (k, t) = (g["sensor"].as_str().unwrap(), g["at_ms"].as_i64().unwrap());
        let (v, avg, n) = expected
            .get(&(k.to_string(), t))
            .unwrap_or_else(|| panic!("{id}: not a reading the watermark passed: {g}"));
        assert!((g["v"].as_f64().unwrap() - v).abs() <= 5e-7, "{g}");
        assert!((g["avg5"].as_f64().unwrap() - avg).abs() <= 5e-6, "{g}");
        assert_eq!(g["n"].as_i64(), Some(*n), "{g}");
        assert_eq!(id, &format!("{GATEWAY}/w/{k}/{t}/0"));
    }
}

/// `PROCTIME()` under `weir run`: readings stamped on arrival by the
/// agent's clock, in 1-second processing-time windows that the clock
/// closes (the last window with no reading after it): every reading is
/// counted once, in windows of the time the agent ran.
#[test]
fn the_agent_closes_proctime_windows_on_its_clock() {
    let sql = "SET 'pipeline.name' = 'w';
CREATE TABLE s (k STRING, v DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'mqtt', 'topic' = 'plant/+/v', 'qos' = '1', 'format' = 'json');
SELECT k, window_start, window_end, COUNT(*) AS n, MAX(v) AS hi
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";
    let msgs = input(3_000, 4, T0);
    let (addr, _dir, gw) = sql_gateway("sql-agent-proctime", sql);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    let started = wall_ms();
    publish_all(addr, &msgs, Duration::from_secs(120));
    // The clock alone closes the last windows: no reading follows.
    wait_until(
        Duration::from_secs(60),
        "every reading in a closed window",
        || col.with(counted_windows) >= msgs.len() as i64,
    );
    let ended = wall_ms();
    agent.stop();
    col.with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        assert_eq!(counted_windows(s), msgs.len() as i64, "each reading once");
        for p in s.by_id.values() {
            let g: serde_json::Value = serde_json::from_slice(p).unwrap();
            let (start, end) = (g["start"].as_i64().unwrap(), g["end"].as_i64().unwrap());
            assert_eq!(end - start, 1_000, "{g}");
            assert_eq!(start % 1_000, 0, "{g}");
            // Windows of the agent's clock, not of the payloads' `t`.
            assert!(start > started - 2_000 && end <= ended + 1_000, "{g}");
        }
    });
}

/// A gateway whose wall clock starts behind the journal (no battery-backed
/// clock, before NTP): the agent's clock resumes from the journal's, so
/// readings are stamped after the journaled ones and counted, not dropped
/// as behind processing time.
#[test]
fn a_clock_behind_the_journal_resumes_from_it() {
    let sql = "SET 'pipeline.name' = 'w';
CREATE TABLE s (k STRING, v DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'mqtt', 'topic' = 'plant/+/v', 'qos' = '1', 'format' = 'json');
SELECT k, window_start, window_end, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";
    let (addr, dir, gw) = sql_gateway("sql-agent-proctime-clock", sql);
    // Three readings journaled by a clock 3 s ahead of this one.
    let ahead = wall_ms() + 3_000;
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    {
        let mut store = weir_agent::store::StoreConfig::default()
            .build(dir.0.join("data/weir.redb"))
            .unwrap();
        for i in 0..3 {
            let s = weir_agent::store::Sample {
                source: 0,
                key: "s00",
                ts: ahead + i,
                now: ahead + i,
                values: &[1.0],
            };
            store.append(&s).unwrap();
        }
        store.commit().unwrap();
    }
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    let msgs = input(200, 2, T0);
    publish_all(addr, &msgs, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(60),
        "every reading in a closed window",
        || col.with(counted_windows) >= 203,
    );
    agent.stop();
    col.with(|s| {
        assert_eq!(
            counted_windows(s),
            203,
            "the journaled readings and the new ones, once"
        );
        for p in s.by_id.values() {
            let g: serde_json::Value = serde_json::from_slice(p).unwrap();
            let start = g["start"].as_i64().unwrap();
            assert!(
                start >= ahead - ahead % 1_000,
                "a window before the journal's clock: {g}"
            );
        }
    });
}

/// The readings counted in the windows `s` collected (their `count`s).
fn counted_windows(s: &Seen) -> i64 {
    s.by_id
        .values()
        .map(|p| {
            let g: serde_json::Value = serde_json::from_slice(p).unwrap();
            g["count"].as_i64().unwrap()
        })
        .sum()
}
