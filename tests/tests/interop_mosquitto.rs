//! The same end-to-end checks against Debian's mosquitto: every QoS 1
//! reading accounted for, and a restarted agent receives nothing twice.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

#[test]
fn mosquitto_every_reading_once_across_a_restart() {
    every_reading_once_across_a_restart(4);
}

/// The same over MQTT 5 (`[broker] protocol = 5`: clean start off, a
/// session that never expires, manual acks).
#[test]
fn mqtt5_every_reading_once_across_a_restart() {
    every_reading_once_across_a_restart(5);
}

fn every_reading_once_across_a_restart(protocol: u8) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new(&format!("mosq-v{protocol}"));
    let mosq = Mosquitto::start(&dir.0);
    let addr = mosq.addr();
    let msgs = input(12_000, 8, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let gw = gateway_file(&dir.0, addr, "");
    let text = std::fs::read_to_string(&gw).unwrap().replacen(
        "keep_alive = \"5s\"",
        &format!("keep_alive = \"5s\"\nprotocol = {protocol}"),
        1,
    );
    std::fs::write(&gw, text).unwrap();
    let (a, b) = msgs.split_at(6_000);
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    publish_all(addr, a, Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the first half journaled", || {
        agent.metrics().readings.load(Relaxed) == a.len() as u64
    });
    let s = agent.stop();
    assert_eq!(s.readings, a.len() as u64);
    let agent = InProcAgent::start(&gw);
    publish_all(addr, b, Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the second half journaled", || {
        agent.metrics().readings.load(Relaxed) >= b.len() as u64
    });
    assert!(col.wait_for(expected.len(), Duration::from_secs(60)));
    // Redeliveries of the first half, if any (under load a few acks of the
    // first agent can miss the broker), are dropped by the dedupe ring:
    // the count below is what proves nothing was journaled twice.
    let redelivered = agent.metrics().duplicates.load(Relaxed);
    let s = agent.stop();
    assert_eq!(
        s.readings,
        b.len() as u64,
        "nothing of the first half journaled again ({redelivered} redelivered readings dropped)"
    );
    col.assert_matches(&expected);
}
