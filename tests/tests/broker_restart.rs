//! The local broker restarted under a running agent, without persistence:
//! every session is gone. The agent reconnects, subscribes again,
//! re-publishes what it cannot prove was delivered (same ids), and counts
//! nothing twice. Also: the metrics endpoint while all this happens.

use std::io::{Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[test]
fn broker_restarted_without_sessions_loses_nothing_and_counts_nothing_twice() {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("restart");
    let mut mosq = Mosquitto::start(&dir.0);
    let addr = mosq.addr();
    let msgs = input(12_000, 6, T0);
    let expected = reference(PIPELINE, &msgs);
    let (a, b) = msgs.split_at(6_000);
    let gw = gateway_file(&dir.0, addr, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let agent = InProcAgent::start(&gw);
    let maddr = agent.handle.metrics_addr.expect("metrics address");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    agent.wait_subscribed(0);
    publish_all(addr, a, Duration::from_secs(60));
    let expected_a = reference(PIPELINE, a);
    assert!(col.wait_for(expected_a.len(), Duration::from_secs(60)));
    wait_until(Duration::from_secs(30), "the first half journaled", || {
        agent.metrics().readings.load(Relaxed) == a.len() as u64
    });
    let (status, _) = http_get(maddr, "/healthz");
    assert!(status.contains("200"), "{status}");

    let subscribed = agent.metrics().subscribe_acks.load(Relaxed);
    mosq.restart();
    wait_until(
        Duration::from_secs(30),
        "the agent to notice the lost sessions",
        || agent.metrics().sessions_lost.load(Relaxed) >= 2,
    );
    wait_until(Duration::from_secs(30), "the agent to reconnect", || {
        agent.metrics().connected.load(Relaxed) && agent.metrics().output_connected.load(Relaxed)
    });
    // A broker without our session drops what is published before our
    // subscription is back.
    agent.wait_subscribed(subscribed);
    // The collector lost its subscription too; it subscribes again on connect.
    let col2 = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    publish_all(addr, b, Duration::from_secs(60));
    let only_b: std::collections::HashMap<_, _> = expected
        .iter()
        .filter(|(k, _)| !expected_a.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        col2.wait_for(only_b.len(), Duration::from_secs(60)),
        "{} of {} outputs after the restart",
        col2.distinct(),
        only_b.len()
    );
    wait_until(Duration::from_secs(30), "everything journaled", || {
        agent.metrics().readings.load(Relaxed) == msgs.len() as u64
    });
    let (status, body) = http_get(maddr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(metric(&body, "weir_readings_total"), msgs.len() as f64);
    assert!(metric(&body, "weir_sessions_lost_total") >= 2.0);
    assert!(metric(&body, "weir_connects_total") >= 4.0);
    assert!(metric(&body, "weir_resident_memory_bytes") > 0.0);
    assert!(
        body.contains("weir_watermark_lag_seconds{source=\"s\"}"),
        "{body}"
    );
    let (status, _) = http_get(maddr, "/nope");
    assert!(status.contains("404"));
    let s = agent.stop();
    assert_eq!(s.readings, msgs.len() as u64, "nothing counted twice");
    // Everything after the restart arrived exactly as an uninterrupted run
    // has it; what came before, the first collector had.
    col.with(|s| {
        for (id, want) in &expected_a {
            assert_eq!(s.by_id.get(id), Some(want), "{id}");
        }
    });
    col2.with(|s| {
        assert!(s.conflicts.is_empty(), "{:?}", s.conflicts);
        for (id, want) in &only_b {
            assert_eq!(s.by_id.get(id), Some(want), "{id}");
        }
        for (id, got) in &s.by_id {
            assert_eq!(expected.get(id), Some(got), "re-published {id} differs");
        }
    });
}
