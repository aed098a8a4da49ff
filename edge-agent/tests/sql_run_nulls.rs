//! NULL aggregate inputs in `weir run` (Flink: each aggregate leaves its
//! own `NULL`s out, `COUNT(*)` counts every row): [`AgentCore`] computes
//! an aggregated expression that reads a text column from the decoded
//! reading before the journal, the others from the journal record (or in
//! the engine), and publishes the same rows as `weir replay`, with `NULL`
//! where a window had no non-`NULL` input. Virtual time, an in-memory
//! disk; a crash and a journal replay give the same rows.

use weir_agent::gateway::OutputFormat;
use weir_agent::run::agent_core::{Action, AgentCore, CoreConfig};
use weir_agent::run::mqtt::Link;
use weir_agent::store::backend::SimDisk;
use weir_agent::store::{Store, StoreConfig};
use weir_agent::timefmt::{format_datetime_ms, parse_datetime_ms};

const DDL: &str = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, site STRING, ts BIGINT, temp DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json',
        'fields.site.path' = 'meta.site');
";

/// (`HAVING` makes `weir run` publish rows by column name.)
/// Expressions computed before the engine: `x` and `y` read `site` (at
/// ingest, journaled), `z` only `temp` (from the journal record).
const TEXT: &str = "SELECT sensor, window_start, COUNT(*) AS n,
  COUNT(CASE WHEN site = 'north' THEN 1 END) AS x,
  AVG(CASE WHEN site = 'north' THEN temp END) AS y,
  MIN(CASE WHEN temp > 35 THEN temp END) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// Expressions computed in the engine (they read only `temp`).
const NUMERIC: &str = "SELECT sensor, window_start, COUNT(*) AS n,
  COUNT(CASE WHEN temp > 35 THEN 1 END) AS x,
  SUM(CASE WHEN temp > 35 THEN temp END) AS y,
  MAX(CASE WHEN temp > 35 THEN temp END) AS z
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

const T0: i64 = 1_780_000_000_000;

/// (sensor, site (`None`: absent), ms after T0, temp).
type Reading = (&'static str, Option<&'static str>, i64, f64);

/// Readings in arrival order, grouped in messages (one JSON array each).
const MESSAGES: &[&[Reading]] = &[
    &[("a", Some("north"), 0, 21.0)],
    &[
        ("a", Some("south"), 100, 30.0),
        ("a", Some("north"), 200, 25.0),
    ],
    &[
        ("b", Some("north"), 300, 19.0),
        ("a", Some("north"), 350, 21.0),
    ],
    &[("b", None, 400, 40.0), ("b", Some("north"), 500, 22.5)],
    &[("a", Some("North"), 1_100, 50.0)],
    &[
        ("a", Some("north"), 1_200, 24.0),
        ("b", Some(""), 1_300, 30.0),
    ],
    &[("c", Some("south"), 4_900, 99.0)],
    // Kept: its time moves the watermark past the windows above.
    &[("d", Some("north"), 5_000, 21.0)],
];

fn payload(m: &[Reading]) -> Vec<u8> {
    let recs: Vec<String> = m
        .iter()
        .map(|(sensor, site, dt, temp)| {
            let meta = site.map_or("{}".to_string(), |s| format!(r#"{{"site":"{s}"}}"#));
            format!(
                r#"{{"sensor":"{sensor}","meta":{meta},"ts":{},"temp":{temp}}}"#,
                T0 + dt
            )
        })
        .collect();
    format!("[{}]", recs.join(",")).into_bytes()
}

fn cfg() -> CoreConfig {
    CoreConfig {
        gateway: "gw".into(),
        prefix: "weir".into(),
        format: OutputFormat::Json,
        publish_windows: true,
        commit_ms: 50,
        group_records: 100,
        checkpoint_ms: 600_000,
    }
}

/// A JSON number or `null` as a row field: 6 decimals, or `NULL`.
fn field(v: &serde_json::Value) -> String {
    v.as_f64().map_or("NULL".to_string(), |x| format!("{x:.6}"))
}

/// The rows a core published, as `sensor,window_start,n,x,y,z`.
fn drain(core: &mut AgentCore<u64>, rows: &mut Vec<String>) {
    while let Some(a) = core.poll_action() {
        if let Action::Publish(e) = a {
            let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            rows.push(format!(
                "{},{},{},{},{},{}",
                j["sensor"].as_str().unwrap(),
                format_datetime_ms(j["window_start"].as_i64().unwrap()),
                j["n"],
                j["x"],
                field(&j["y"]),
                field(&j["z"]),
            ));
            core.handle_puback();
        }
    }
}

/// Runs the messages through an agent; with `crash_after`, the process
/// dies after that many messages and a new core replays its journal
/// before the rest (it may publish a row twice: at least once).
fn run(sql: &str, crash_after: Option<usize>) -> Vec<String> {
    let pf = weir_agent::pipeline_file::parse("q.sql", sql).unwrap();
    let mut disk = SimDisk::new();
    let open = |disk: SimDisk| {
        let store = Store::open_backend(disk, "d/weir.redb", StoreConfig::default()).unwrap();
        let mut core = AgentCore::open(cfg(), pf.clone(), store).unwrap();
        core.handle_connected(T0, Link::Ingest, false).unwrap();
        core.handle_connected(T0, Link::Output, false).unwrap();
        core
    };
    let mut core = open(disk.clone());
    let mut rows = Vec::new();
    let mut now = T0;
    for (i, m) in MESSAGES.iter().enumerate() {
        if crash_after == Some(i) {
            now += 60;
            core.handle_tick(now).unwrap();
            drain(&mut core, &mut rows);
            drop(core);
            disk = SimDisk::from_image(disk.live());
            core = open(disk.clone());
            drain(&mut core, &mut rows);
        }
        now += 100;
        core.handle_publish(now, "p/x", &payload(m), Some(i as u64))
            .unwrap();
        drain(&mut core, &mut rows);
    }
    now += 1_000;
    core.handle_tick(now).unwrap();
    drain(&mut core, &mut rows);
    rows.sort();
    rows.dedup();
    rows
}

/// `weir replay`'s rows over the same readings, without `c`'s and `d`'s
/// windows, which only its end of input fires.
fn replay(sql: &str) -> Vec<String> {
    let p = weir_agent::sql::parse("q.sql", sql).unwrap();
    let mut csv = String::new();
    for (sensor, site, dt, temp) in MESSAGES.iter().flat_map(|m| m.iter()) {
        csv.push_str(&format!(
            "{sensor},{},{},{temp}\n",
            site.unwrap_or(""),
            T0 + dt
        ));
    }
    let mut out = Vec::new();
    let mut bad = 0;
    weir_agent::sql::exec::replay(&p, csv.as_bytes(), &mut out, |_, _| bad += 1).unwrap();
    assert_eq!(bad, 0);
    let num = |s: &str| {
        if s.is_empty() {
            "NULL".to_string()
        } else {
            format!("{:.6}", s.parse::<f64>().unwrap())
        }
    };
    let mut rows: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("c,") && !l.starts_with("d,"))
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let start = parse_datetime_ms(c[1]).unwrap();
            let (y, z) = (num(c[4]), num(c[5]));
            format!(
                "{},{},{},{},{y},{z}",
                c[0],
                format_datetime_ms(start),
                c[2],
                c[3]
            )
        })
        .collect();
    rows.sort();
    rows
}

fn at(dt: i64) -> String {
    format_datetime_ms(T0 + dt)
}

#[test]
fn nulls_of_expressions_over_text_are_left_out_in_run() {
    let sql = format!("{DDL}{TEXT}");
    let rows = run(&sql, None);
    // By hand: `a` [0, 1 s): north 21, south 30, north 25, north 21; `b`
    // [0, 1 s): north 19, an absent site (NULL) 40, north 22.5; `a` [1 s,
    // 2 s): 'North' 50, north 24; `b` [1 s, 2 s): '' 30. `z`: above 35.
    let want = [
        format!("a,{},4,3,22.333333,NULL", at(0)),
        format!("a,{},2,1,24.000000,50.000000", at(1_000)),
        format!("b,{},3,2,20.750000,40.000000", at(0)),
        format!("b,{},1,0,NULL,NULL", at(1_000)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn nulls_of_expressions_in_the_engine_are_left_out_in_run() {
    let sql = format!("{DDL}{NUMERIC}");
    let rows = run(&sql, None);
    let want = [
        format!("a,{},4,0,NULL,NULL", at(0)),
        format!("a,{},2,1,50.000000,50.000000", at(1_000)),
        format!("b,{},3,1,40.000000,40.000000", at(0)),
        format!("b,{},1,0,NULL,NULL", at(1_000)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replay(&sql), "weir run and weir replay differ");
}

#[test]
fn a_journal_replay_after_a_crash_gives_the_same_rows() {
    for q in [TEXT, NUMERIC] {
        let sql = format!("{DDL}{q}");
        let whole = run(&sql, None);
        for after in 1..MESSAGES.len() {
            assert_eq!(
                run(&sql, Some(after)),
                whole,
                "crash after {after} messages"
            );
        }
    }
}
