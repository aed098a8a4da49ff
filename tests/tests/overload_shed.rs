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
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("overload-shed");
    let mosq = Mosquitto::start(&dir.0);
    let addr = mosq.addr();
    let gw = gateway_file(&dir.0, addr, "");
    // Groups close on time (1 s), not on size: acknowledgements wait, the
    // ack debt passes its bound and ingest pauses with the backlog coming.
    let text = std::fs::read_to_string(&gw)
        .unwrap()
        .replacen(
            "keep_alive = \"5s\"",
            "keep_alive = \"5s\"\nmax_held = \"4KiB\"",
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
        "backlog of {} KiB: {shed} messages shed, {reconnects} reconnects, at most {peak} bytes held",
        bytes >> 10
    );
    let largest = msgs.iter().map(|m| m.payload.len()).max().unwrap_or(0);
    assert!(
        peak <= 4096 + largest,
        "held {peak} bytes at once, over max_held (4 KiB) and one message"
    );
    assert_eq!(s.readings, want, "every reading counted once");
    assert!(
        shed > 0 && reconnects > 0,
        "a {} KiB backlog behind 1 s groups must overflow 4 KiB of held messages",
        bytes >> 10
    );
}
