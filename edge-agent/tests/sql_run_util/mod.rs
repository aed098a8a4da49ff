//! Shared by the `weir run` SQL tests (`sql_run_where_text`,
//! `sql_run_nulls`): a table with a text column at a JSON path, the
//! readings both tests send (in messages, in arrival order), an
//! [`AgentCore`] on an in-memory disk that runs them (optionally crashing
//! and replaying its journal), and `weir replay` over the same readings.
#![allow(dead_code)]

use weir_agent::gateway::OutputFormat;
use weir_agent::run::agent_core::{Action, AgentCore, CoreConfig};
use weir_agent::run::mqtt::Link;
use weir_agent::store::backend::SimDisk;
use weir_agent::store::{Store, StoreConfig};

/// The source table: `site` is read from the payload's `meta.site`.
pub const DDL: &str = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, site STRING, ts BIGINT, temp DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json',
        'fields.site.path' = 'meta.site');
";

pub const T0: i64 = 1_780_000_000_000;

/// (sensor, site (`None`: absent), ms after T0, temp).
pub type Reading = (&'static str, Option<&'static str>, i64, f64);

/// Readings in arrival order, grouped in messages (one JSON array each).
pub const MESSAGES: &[&[Reading]] = &[
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

/// The agent's settings in these tests: commits 50 ms after a group's
/// first message, checkpoints every `checkpoint_ms`.
pub fn cfg(checkpoint_ms: i64) -> CoreConfig {
    CoreConfig {
        gateway: "gw".into(),
        prefix: "weir".into(),
        format: OutputFormat::Json,
        publish_windows: true,
        commit_ms: 50,
        group_records: 100,
        checkpoint_ms,
    }
}

/// Runs [`MESSAGES`] through an agent and gives the rows it published,
/// each made by `row` from the JSON output, in the order published, and
/// the readings it journaled. With `crash_after`, the process dies after
/// that many messages and a new core replays its journal before the rest
/// (it may publish a row twice: at least once).
pub fn run(
    sql: &str,
    crash_after: Option<usize>,
    row: impl Fn(&serde_json::Value) -> String,
) -> (Vec<String>, u64) {
    let payloads: Vec<Vec<u8>> = MESSAGES.iter().map(|m| payload(m)).collect();
    run_payloads(sql, &payloads, crash_after, row)
}

/// [`run`] over these payloads (each published on `p/x`) instead of
/// [`MESSAGES`].
pub fn run_payloads(
    sql: &str,
    payloads: &[Vec<u8>],
    crash_after: Option<usize>,
    row: impl Fn(&serde_json::Value) -> String,
) -> (Vec<String>, u64) {
    run_checkpointed(sql, payloads, crash_after, None, row)
}

/// [`run_payloads`], checkpointing every `checkpoint_ms` (`None`: never in
/// a run this short), with a clock tick after each message so that
/// checkpoints are taken between them.
pub fn run_checkpointed(
    sql: &str,
    payloads: &[Vec<u8>],
    crash_after: Option<usize>,
    checkpoint_ms: Option<i64>,
    row: impl Fn(&serde_json::Value) -> String,
) -> (Vec<String>, u64) {
    let pf = weir_agent::pipeline_file::parse("q.sql", sql).unwrap();
    let mut disk = SimDisk::new();
    let open = |disk: SimDisk| {
        let store = Store::open_backend(disk, "d/weir.redb", StoreConfig::default()).unwrap();
        let cfg = cfg(checkpoint_ms.unwrap_or(600_000));
        let mut core = AgentCore::open(cfg, pf.clone(), store).unwrap();
        core.handle_connected(T0, Link::Ingest, false).unwrap();
        core.handle_connected(T0, Link::Output, false).unwrap();
        core
    };
    let drain = |core: &mut AgentCore<u64>, rows: &mut Vec<String>| {
        while let Some(a) = core.poll_action() {
            if let Action::Publish(e) = a {
                let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                rows.push(row(&j));
                core.handle_puback();
            }
        }
    };
    let mut core = open(disk.clone());
    let mut rows = Vec::new();
    let mut now = T0;
    for (i, m) in payloads.iter().enumerate() {
        if crash_after == Some(i) {
            // Committed, then the process dies: the disk keeps its image.
            now += 60;
            core.handle_tick(now).unwrap();
            drain(&mut core, &mut rows);
            drop(core);
            disk = SimDisk::from_image(disk.live());
            core = open(disk.clone());
            drain(&mut core, &mut rows);
        }
        now += 100;
        core.handle_publish(now, "p/x", m, Some(i as u64)).unwrap();
        drain(&mut core, &mut rows);
        if checkpoint_ms.is_some() {
            now += 100;
            core.handle_tick(now).unwrap();
            drain(&mut core, &mut rows);
        }
    }
    now += 1_000;
    core.handle_tick(now).unwrap();
    drain(&mut core, &mut rows);
    if checkpoint_ms.is_some() && crash_after.is_none() {
        assert!(core.stats().checkpoints > 0, "no checkpoint was taken");
    }
    (rows, core.stats().readings)
}

/// `weir replay`'s CSV rows (header left out) over [`MESSAGES`], an
/// absent site read as `''` (a CSV file has no NULL text); no bad row.
pub fn replay(sql: &str) -> Vec<String> {
    let mut csv = String::new();
    for (sensor, site, dt, temp) in MESSAGES.iter().flat_map(|m| m.iter()) {
        csv.push_str(&format!(
            "{sensor},{},{},{temp}\n",
            site.unwrap_or(""),
            T0 + dt
        ));
    }
    replay_csv(sql, &csv)
}

/// `weir replay`'s CSV rows (header left out) over `csv`; no bad row.
pub fn replay_csv(sql: &str, csv: &str) -> Vec<String> {
    let p = weir_agent::sql::parse("q.sql", sql).unwrap();
    let mut out = Vec::new();
    let mut bad = 0;
    weir_agent::sql::exec::replay(&p, csv.as_bytes(), &mut out, |_, _| bad += 1).unwrap();
    assert_eq!(bad, 0);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}
