//! A SQL `WHERE` on a STRING column that is not the key, in `weir run`:
//! [`AgentCore`] decodes the column from the JSON payload, drops the
//! readings `WHERE` does not keep before the journal, and publishes the
//! same windows as `weir replay` over the same rows. Virtual time, an
//! in-memory disk; a crash and a journal replay give the same windows.

use weir_agent::gateway::OutputFormat;
use weir_agent::run::agent_core::{Action, AgentCore, CoreConfig};
use weir_agent::run::mqtt::Link;
use weir_agent::store::backend::SimDisk;
use weir_agent::store::{Store, StoreConfig};
use weir_agent::timefmt::{format_datetime_ms, parse_datetime_ms};

const SQL: &str = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, site STRING, ts BIGINT, temp DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json',
        'fields.site.path' = 'meta.site');
SELECT sensor, window_start, COUNT(*) AS n, SUM(temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE site = 'north' AND temp > 20
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

/// `COUNT(DISTINCT …)` of a number in `weir run` (the engine's exact set).
const DISTINCT: &str = "SELECT sensor, window_start, COUNT(*) AS n, COUNT(DISTINCT temp) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE site = 'north'
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

/// The rows a core published, as `sensor,window_start,n,x`.
fn drain(core: &mut AgentCore<u64>, rows: &mut Vec<String>) {
    while let Some(a) = core.poll_action() {
        if let Action::Publish(e) = a {
            let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            rows.push(format!(
                "{},{},{},{}",
                j["sensor"].as_str().unwrap(),
                format_datetime_ms(j["window_start"].as_i64().unwrap()),
                j["n"],
                j["x"].as_f64().unwrap()
            ));
            core.handle_puback();
        }
    }
}

/// Runs the messages through an agent; with `crash_after`, the process
/// dies after that many messages and a new core replays its journal
/// before the rest (it may publish a window twice: at least once).
fn run(sql: &str, crash_after: Option<usize>) -> (Vec<String>, u64) {
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
        core.handle_publish(now, "p/x", &payload(m), Some(i as u64))
            .unwrap();
        drain(&mut core, &mut rows);
    }
    now += 1_000;
    core.handle_tick(now).unwrap();
    drain(&mut core, &mut rows);
    (rows, core.stats().readings)
}

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
    String::from_utf8(out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            // Times and numbers as the agent's JSON gives them.
            let c: Vec<&str> = l.split(',').collect();
            let total: f64 = c[3].parse().unwrap();
            let start = parse_datetime_ms(c[1]).unwrap();
            format!("{},{},{},{total}", c[0], format_datetime_ms(start), c[2])
        })
        .collect()
}

/// The agent's rows, sorted, and replay's (without `d`'s window, which
/// only replay's end of input fires).
fn both(sql: &str) -> (Vec<String>, Vec<String>, u64) {
    let (mut rows, readings) = run(sql, None);
    rows.sort();
    let mut replayed = replay(sql);
    replayed.retain(|r| !r.starts_with("d,"));
    replayed.sort();
    (rows, replayed, readings)
}

#[test]
fn where_on_a_text_column_gives_replays_windows_in_run() {
    let (rows, replayed, readings) = both(SQL);
    // By hand: `a` [0, 1 s): 21 + 25 + 21; `b` [0, 1 s): 22.5 (19 is too
    // cold, the absent site is NULL); `a` [1 s, 2 s): 24 ('North'
    // differs); `c` is in the south.
    let want = [
        format!("a,{},3,67", format_datetime_ms(T0)),
        format!("a,{},1,24", format_datetime_ms(T0 + 1_000)),
        format!("b,{},1,22.5", format_datetime_ms(T0)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replayed, "weir run and weir replay differ");
    assert_eq!(readings, 6, "only the kept readings are journaled");
}

#[test]
fn count_distinct_gives_replays_windows_in_run() {
    let (rows, replayed, _) = both(&with_query(DISTINCT));
    // `a` [0, 1 s): 21, 25, 21; `b` [0, 1 s): 19, 22.5.
    let want = [
        format!("a,{},3,2", format_datetime_ms(T0)),
        format!("a,{},1,1", format_datetime_ms(T0 + 1_000)),
        format!("b,{},2,2", format_datetime_ms(T0)),
    ];
    assert_eq!(rows, want);
    assert_eq!(rows, replayed, "weir run and weir replay differ");
}

/// `COUNT(DISTINCT …)` of a STRING column besides the key: the agent
/// computes its keys from the decoded text before the journal.
const DISTINCT_SITES: &str = "SELECT sensor, window_start, COUNT(*) AS n, COUNT(DISTINCT site) AS x
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE temp > 20
GROUP BY sensor, window_start, window_end HAVING COUNT(*) > 0;";

fn with_query(q: &str) -> String {
    SQL.replace(&SQL[SQL.find("SELECT").unwrap()..], q)
}

#[test]
fn count_distinct_of_a_text_column_in_run() {
    let sql = with_query(DISTINCT_SITES);
    let (rows, mut replayed, _) = both(&sql);
    replayed.retain(|r| !r.starts_with("c,"));
    // `a` [0, 1 s): north, south; `b` [0, 1 s): an absent site (NULL, not
    // counted) and north; `a` [1 s, 2 s): North, north; `b` [1 s, 2 s): ''.
    let want = |b0: &str| {
        [
            format!("a,{},4,2", format_datetime_ms(T0)),
            format!("a,{},2,2", format_datetime_ms(T0 + 1_000)),
            format!("b,{},2,{b0}", format_datetime_ms(T0)),
            format!("b,{},1,1", format_datetime_ms(T0 + 1_000)),
        ]
    };
    assert_eq!(rows, want("1"));
    // A CSV file has no NULL text: replay reads the absent site as ''.
    assert_eq!(replayed, want("2"));
}

#[test]
fn a_journal_replay_after_a_crash_gives_the_same_windows() {
    for sql in [SQL.to_string(), with_query(DISTINCT_SITES)] {
        let (mut whole, _) = run(&sql, None);
        whole.sort();
        for at in 1..MESSAGES.len() {
            let (mut rows, _) = run(&sql, Some(at));
            rows.sort();
            rows.dedup();
            assert_eq!(rows, whole, "crash after {at} messages");
        }
    }
}
