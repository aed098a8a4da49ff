//! A backlog larger than the agent's memory for held messages: the broker
//! (Debian's mosquitto) queued readings for the agent's session while
//! it was away and sends them all at once when it connects, far beyond its
//! in-flight window. The agent holds at most `[broker] max_held` of them
//! while it waits for its acknowledgements to be written, leaves the rest
//! unacknowledged, reconnects, and the broker redelivers them: every
//! reading is counted exactly once, and the shedding is counted.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

#[test]
fn a_backlog_beyond_max_held_is_shed_and_redelivered_not_lost() {
    let Some((shed, reconnects, peak, largest)) = backlog(4) else {
        return;
    };
    assert!(
        shed > 0 && reconnects > 0,
        "a backlog behind 1 s groups must overflow 4 KiB of held messages"
    );
    assert!(
        peak <= 4096 + largest,
        "held {peak} bytes at once, over max_held (4 KiB) and one message"
    );
}

/// The same over MQTT 5. The agent asks for a receive maximum below its
/// ack debt's bound, but mosquitto 2.0.11 sends an offline session's
/// queue past it (its log showed 41,918 messages out to the agent
/// unacknowledged, against a receive maximum of 8,192 and
/// `max_inflight_messages 1000`): the bound on held messages is what
/// holds memory, with either protocol.
#[test]
fn over_mqtt5_too() {
    let Some((shed, reconnects, peak, largest)) = backlog(5) else {
        return;
    };
    assert!(shed > 0 && reconnects > 0);
    assert!(peak <= 4096 + largest, "held {peak} bytes at once");
}

/// Queues 40,000 readings for the agent's session, starts it (`protocol`
/// 4 or 5, `max_held = "4KiB"`, 1 s groups) and checks that every reading
/// is counted once. Returns (messages shed, reconnects, peak held bytes,
/// largest payload), or `None` without mosquitto.
fn backlog(protocol: u8) -> Option<(u64, u64, usize, usize)> {
    if !have_mosquitto() {
        return None;
    }
    let dir = TempDir::new(&format!("overload-shed-v{protocol}"));
    let mosq = Mosquitto::start(&dir.0);
    let addr = mosq.addr();
    let gw = gateway_file(&dir.0, addr, "");
    // Groups close on time (1 s), not on size: acknowledgements wait, the
    // ack debt passes its bound and ingest pauses with the backlog coming.
    let text = std::fs::read_to_string(&gw)
        .unwrap()
        .replacen(
            "keep_alive = \"5s\"",
            &format!("keep_alive = \"5s\"\nmax_held = \"4KiB\"\nprotocol = {protocol}"),
            1,
        )
        .replacen(
            "group_commit = \"5ms\"",
            "group_commit = \"1s\"\ngroup_records = 100000",
            1,
        );
    std::fs::write(&gw, text).unwrap();
    // The session the agent had before it went away.
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let msgs = input(40_000, 8, 1_700_000_000_000);
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    publish_all(addr, &msgs, Duration::from_secs(120));
    let agent = InProcAgent::start(&gw);
    let want = msgs.len() as u64;
    wait_until(Duration::from_secs(120), "every reading journaled", || {
        agent.metrics().readings.load(Relaxed) >= want
    });
    let m = agent.metrics();
    let (shed, reconnects) = (m.shed.load(Relaxed), m.shed_reconnects.load(Relaxed));
    let peak = m.held_bytes_peak.load(Relaxed) as usize;
    let s = agent.stop();
    eprintln!(
        "MQTT {protocol}: a backlog of {} KiB: {shed} messages shed, {reconnects} reconnects, at most {peak} bytes held",
        bytes >> 10
    );
    assert_eq!(s.readings, want, "every reading counted once");
    let largest = msgs.iter().map(|m| m.payload.len()).max().unwrap_or(0);
    Some((shed, reconnects, peak, largest))
}
