//! An agent that restarts faster than its checkpoint interval (a crash
//! loop: a bad sensor, a MemoryMax kill, a flaky power supply) must not
//! replay an ever-growing journal: after a recovery that replayed records
//! it checkpoints as soon as the replayed outputs are acknowledged, so the
//! next start replays only what came after.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

fn http_metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `replayed=N` of the agent's "recovered" log line, and its metrics
/// address.
fn started(log: &Path) -> (u64, SocketAddr) {
    let text = std::fs::read_to_string(log).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in\n{text}"));
    let replayed = text
        .lines()
        .filter(|l| l.contains("recovered"))
        .find_map(|l| l.split("replayed=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no replayed= in\n{text}"));
    (replayed, addr)
}

#[test]
fn a_crash_loop_does_not_grow_the_journal_replayed_at_start() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("crash-loop");
    let gw = gateway_file(&dir.0, addr, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let text = std::fs::read_to_string(&gw)
        .unwrap()
        .replace("interval = \"300ms\"", "interval = \"1h\"");
    std::fs::write(&gw, text).unwrap();
    let msgs = input(3_000, 4, T0);

    // Life 1: ingest, then SIGKILL long before the first checkpoint.
    let log1 = dir.0.join("agent-1.log");
    let a1 = AgentProc::start(&gw, &log1);
    a1.wait_log(&log1, "recovered", Duration::from_secs(30));
    let (_, m1) = started(&log1);
    wait_until(Duration::from_secs(30), "the subscription", || {
        http_metric(m1, "weir_subscribe_acks_total").is_some_and(|v| v >= 1.0)
    });
    publish_all(addr, &msgs, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "everything journaled", || {
        http_metric(m1, "weir_readings_total") == Some(msgs.len() as f64)
    });
    a1.kill();

    // Life 2 replays it all, and checkpoints soon (not in an hour).
    let log2 = dir.0.join("agent-2.log");
    let a2 = AgentProc::start(&gw, &log2);
    a2.wait_log(&log2, "recovered", Duration::from_secs(30));
    let (replayed, m2) = started(&log2);
    assert_eq!(replayed, msgs.len() as u64);
    wait_until(
        Duration::from_secs(30),
        "a checkpoint after the replay",
        || http_metric(m2, "weir_checkpoints_total").is_some_and(|v| v >= 1.0),
    );
    a2.kill();

    // Life 3 replays nothing that life 2 had checkpointed.
    let log3 = dir.0.join("agent-3.log");
    let a3 = AgentProc::start(&gw, &log3);
    a3.wait_log(&log3, "recovered", Duration::from_secs(30));
    let (replayed, _) = started(&log3);
    a3.kill();
    assert!(
        replayed < msgs.len() as u64 / 10,
        "life 3 replayed {replayed} of {} records: the journal was not trimmed",
        msgs.len()
    );
}
