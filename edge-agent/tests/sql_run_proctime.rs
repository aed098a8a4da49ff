//! `PROCTIME()` in `weir run`: readings without a timestamp, stamped with
//! the gateway's clock on arrival, in processing-time windows that close
//! on that clock (a window fires when the clock passes its end, with no
//! later reading to carry it), the same after a crash that replays the
//! journal.

mod sql_run_util;

use weir_agent::run::agent_core::{Action, AgentCore};
use weir_agent::run::mqtt::Link;
use weir_agent::store::backend::SimDisk;
use weir_agent::store::{Store, StoreConfig};

const SQL: &str = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT sensor, window_start, window_end, COUNT(*) AS n, AVG(temp) AS mean
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(pt), INTERVAL '10' SECOND))
GROUP BY sensor, window_start, window_end;";

/// A multiple of 10 s: windows start at T0, T0 + 10 s, …
const T0: i64 = 1_780_000_000_000;

/// (ms after T0 it arrives, sensor, temp); no timestamp in the payload.
/// At least 100 ms apart: each message's group is committed (and the
/// message acknowledged) before the next arrives, so a crash between two
/// messages loses nothing the broker would redeliver (a redelivered
/// message would arrive later, and processing time would put it in the
/// window of its new arrival).
const ARRIVALS: &[(i64, &str, f64)] = &[
    (1_000, "a", 20.0),
    (2_500, "b", 30.0),
    (9_900, "a", 22.0),
    (10_000, "a", 40.0),
    (14_000, "b", 31.0),
];

/// An agent's core running `sql` on `disk`, both links connected.
fn open(sql: &str, disk: SimDisk) -> AgentCore<u64> {
    open_at(sql, disk, T0)
}

/// [`open`], the links connected at driver time `now`.
fn open_at(sql: &str, disk: SimDisk, now: i64) -> AgentCore<u64> {
    let pf = weir_agent::pipeline_file::parse("q.sql", sql).unwrap();
    assert_eq!(
        pf.spec.time.mode,
        weir_core::time::TimeMode::Processing,
        "PROCTIME() is processing time"
    );
    let store = Store::open_backend(disk, "d/weir.redb", StoreConfig::default()).unwrap();
    let mut core = AgentCore::open(sql_run_util::cfg(600_000), pf, store).unwrap();
    core.handle_connected(now, Link::Ingest, false).unwrap();
    core.handle_connected(now, Link::Output, false).unwrap();
    core
}

/// `sensor,start,end,n,mean` (times after T0) of each window published.
fn drain(core: &mut AgentCore<u64>, rows: &mut Vec<String>) {
    while let Some(a) = core.poll_action() {
        if let Action::Publish(e) = a {
            let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            // The query's columns are the window's own: the agent
            // publishes its envelope (`key`, `start`, `end`, aggregates).
            rows.push(format!(
                "{},{},{},{},{}",
                j["key"].as_str().unwrap(),
                j["start"].as_i64().unwrap() - T0,
                j["end"].as_i64().unwrap() - T0,
                j["count"],
                j["mean"]
            ));
            core.handle_puback();
        }
    }
}

/// Runs [`ARRIVALS`], then lets the clock run to T0 + 25 s ticking only
/// when the core asks ([`AgentCore::poll_timeout`]); with `crash_after`,
/// the process dies after that many messages and a new core replays its
/// journal. The rows published, and when the first window's came.
fn run(crash_after: Option<usize>) -> (Vec<String>, Option<i64>) {
    let mut disk = SimDisk::new();
    let mut core = open(SQL, disk.clone());
    let mut rows = Vec::new();
    for (i, (dt, sensor, temp)) in ARRIVALS.iter().enumerate() {
        let now = T0 + dt;
        if crash_after == Some(i) {
            core.handle_tick(now - 1).unwrap();
            drain(&mut core, &mut rows);
            drop(core);
            disk = SimDisk::from_image(disk.live());
            core = open(SQL, disk.clone());
            drain(&mut core, &mut rows);
        }
        // Deadlines that fall before this message's arrival come first
        // (a deadline that a tick does not clear would spin here).
        let mut ticks = 0;
        while let Some(t) = core.poll_timeout().filter(|t| *t < now) {
            ticks += 1;
            assert!(ticks < 100, "poll_timeout stays at {t} after ticks at it");
            core.handle_tick(t.max(T0)).unwrap();
            drain(&mut core, &mut rows);
        }
        let payload = format!(r#"{{"sensor":"{sensor}","temp":{temp}}}"#);
        core.handle_publish(now, "p/x", payload.as_bytes(), Some(i as u64))
            .unwrap();
        drain(&mut core, &mut rows);
    }
    // No more readings: the clock alone closes the windows.
    let mut first = None;
    let end = T0 + 25_000;
    let mut ticks = 0;
    while let Some(t) = core.poll_timeout().filter(|t| *t <= end) {
        ticks += 1;
        assert!(ticks < 100, "poll_timeout stays at {t} after ticks at it");
        let before = rows.len();
        core.handle_tick(t.max(T0 + 14_000)).unwrap();
        drain(&mut core, &mut rows);
        if rows.len() > before && first.is_none() {
            first = Some(t - T0);
        }
    }
    (rows, first)
}

#[test]
fn proctime_windows_group_by_arrival_and_close_on_the_clock() {
    let (mut rows, _) = run(None);
    rows.sort();
    rows.dedup();
    // By arrival: [0, 10 s) holds a's 20 and 22 and b's 30; [10 s, 20 s)
    // a's 40 (it arrived at 10 s exactly) and b's 31.
    assert_eq!(
        rows,
        [
            "a,0,10000,2,21.0",
            "a,10000,20000,1,40.0",
            "b,0,10000,1,30.0",
            "b,10000,20000,1,31.0",
        ]
    );
}

#[test]
fn the_last_window_closes_on_the_clock_without_another_reading() {
    // The second window's rows come once the clock passes 20 s, with no
    // reading after 14 s to carry them.
    let (rows, first) = run(None);
    let second: Vec<&String> = rows
        .iter()
        .filter(|r| r.contains(",10000,20000,"))
        .collect();
    assert_eq!(second.len(), 2, "{rows:?}");
    let t = first.expect("a window closed on the clock alone");
    assert!((20_000..=21_000).contains(&t), "closed at {t} ms after T0");
}

#[test]
fn a_crash_replays_the_journal_to_the_same_windows() {
    let (mut want, _) = run(None);
    want.sort();
    want.dedup();
    for crash in 1..ARRIVALS.len() {
        let (mut got, _) = run(Some(crash));
        got.sort();
        got.dedup();
        assert_eq!(got, want, "crash after {crash} messages");
    }
}

#[test]
fn rows_without_a_window_carry_their_arrival_time() {
    let sql = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, temp DOUBLE, pt AS PROCTIME())
  WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT sensor, pt, temp FROM s WHERE temp > 25;";
    let mut core = open(sql, SimDisk::new());
    let mut rows = Vec::new();
    for (i, (dt, sensor, temp)) in ARRIVALS.iter().enumerate() {
        let payload = format!(r#"{{"sensor":"{sensor}","temp":{temp}}}"#);
        core.handle_publish(T0 + dt, "p/x", payload.as_bytes(), Some(i as u64))
            .unwrap();
        core.handle_tick(T0 + dt + 50).unwrap();
        while let Some(a) = core.poll_action() {
            if let Action::Publish(e) = a {
                let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                rows.push(format!(
                    "{},{},{}",
                    j["sensor"].as_str().unwrap(),
                    j["pt"],
                    j["temp"]
                ));
                core.handle_puback();
            }
        }
    }
    let want: Vec<String> = ARRIVALS
        .iter()
        .filter(|a| a.2 > 25.0)
        .map(|(dt, s, t)| format!("{s},{},{t:?}", T0 + dt))
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn a_driver_clock_behind_the_journal_after_a_restart_loses_no_reading() {
    // Three readings, a crash, then the driver's clock restarts 5 s behind
    // the journal's, by more than a window (a gateway without a
    // battery-backed clock): the core's
    // time resumes from the journal's, so the next readings are stamped
    // after the journaled ones and counted, not dropped as late.
    let mut disk = SimDisk::new();
    let mut core = open(SQL, disk.clone());
    let mut rows = Vec::new();
    let reading = br#"{"sensor":"a","temp":1}"#;
    for (i, dt) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        core.handle_publish(T0 + dt, "p/x", reading, Some(i as u64))
            .unwrap();
        core.handle_tick(T0 + dt + 50).unwrap();
        drain(&mut core, &mut rows);
    }
    drop(core);
    disk = SimDisk::from_image(disk.live());
    // Reopened with the driver's clock 15 s behind: a window of that time
    // ended before the journal's readings.
    let behind = T0 - 15_000;
    let mut core = open_at(SQL, disk.clone(), behind);
    drain(&mut core, &mut rows);
    for (i, dt) in [0, 100, 200].into_iter().enumerate() {
        core.handle_publish(behind + dt, "p/x", reading, Some(10 + i as u64))
            .unwrap();
        core.handle_tick(behind + dt + 50).unwrap();
        drain(&mut core, &mut rows);
    }
    // The driver's clock catches up and passes the window's end.
    core.handle_tick(T0 + 20_000).unwrap();
    drain(&mut core, &mut rows);
    rows.sort();
    rows.dedup();
    assert_eq!(rows, ["a,0,10000,6,1.0"], "all six readings, once");
}
