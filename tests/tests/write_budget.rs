//! The flash write budget end to end: a budget a steady input exceeds
//! makes the agent commit less often — fewer syncs per reading than the
//! same input without a budget — while every reading is still journaled and
//! acknowledged, none twice, and no acknowledgement waits much longer than
//! `max_ack_delay`; and behind a broker that waits for acks (a small
//! in-flight window) the budget does not throttle ingest.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_agent::run::metrics::{AckWait, ACK_WAIT_BUCKETS};
use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;
const WARM: usize = 200;
const N: usize = 5_000;
/// Readings of the steady input, one every `PACE`.
const STEADY: usize = 1_000;
const PACE: Duration = Duration::from_millis(5);
const OFF: &str = "[storage]\nwrite_budget = \"off\"\n";
/// 1 MiB a day: anything the test writes is far over it.
const TIGHT: &str =
    "[storage]\nwrite_budget = \"1MiB\"\nmax_ack_delay = \"500ms\"\nwindow = \"5s\"\n";

struct Run {
    /// Store syncs per reading while the second batch went through.
    syncs_per_reading: f64,
    commit_interval_ms: u64,
    ack_wait: AckWait,
}

impl Run {
    /// Acknowledged messages whose group stayed open at most `s` seconds.
    fn acks_within(&self, s: f64) -> u64 {
        ACK_WAIT_BUCKETS
            .iter()
            .zip(self.ack_wait.counts)
            .filter(|(b, _)| **b <= s)
            .map(|(_, c)| c)
            .sum()
    }
}

/// Publishes at QoS 1, one message every `PACE` (a steady plant, not a
/// burst: a burst is batched by the commit's own latency anyway), and
/// returns once the broker has acknowledged all of them.
fn publish_steady(addr: SocketAddr, msgs: &[Msg]) {
    let mut o = rumqttc::MqttOptions::new(
        format!("budget-pub-{}", free_port()),
        "127.0.0.1",
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut conn) = rumqttc::Client::new(o, 100);
    let n = msgs.len();
    let acks = std::thread::spawn(move || {
        let mut acked = 0;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == n {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    let start = std::time::Instant::now();
    for (i, m) in msgs.iter().enumerate() {
        // The plant's pace (a workload shape, not a wait for the agent).
        let due = start + PACE * i as u32;
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        c.publish(
            m.topic.clone(),
            rumqttc::QoS::AtLeastOnce,
            false,
            m.payload.clone(),
        )
        .expect("publish");
    }
    acks.join().expect("publisher acks");
    let _ = c.disconnect();
}

/// WARM readings, then (once a budget has stretched the commits) `n` more,
/// steady or at once; checks that every one is journaled and acknowledged
/// once.
fn run(addr: SocketAddr, tag: &str, storage: &str, steady: bool) -> Run {
    let n = if steady { STEADY } else { N };
    let dir = TempDir::new(tag);
    let agent = InProcAgent::start(&gateway_file(&dir.0, addr, storage));
    agent.wait_subscribed(0);
    let m = agent.metrics();
    let msgs = input(WARM + n, 10, T0);
    publish_all(addr, &msgs[..WARM], Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the first batch journaled", || {
        m.readings.load(Relaxed) == WARM as u64
    });
    if storage != OFF {
        // The controller decides once a window (5 s) has passed.
        wait_until(
            Duration::from_secs(60),
            "the budget to stretch commits",
            || m.storage.lock().unwrap().commit_interval_ms == 500,
        );
    }
    let syncs0 = m.storage_syncs.load(Relaxed);
    let (c0, k0) = (m.commits.load(Relaxed), m.checkpoints.load(Relaxed));
    if steady {
        publish_steady(addr, &msgs[WARM..]);
    } else {
        publish_all(addr, &msgs[WARM..], Duration::from_secs(120));
    }
    let total = (WARM + n) as u64;
    wait_until(
        Duration::from_secs(120),
        "every reading journaled and acknowledged",
        || m.readings.load(Relaxed) == total && m.acks_written.load(Relaxed) == total,
    );
    let syncs = m.storage_syncs.load(Relaxed) - syncs0;
    let commits = m.commits.load(Relaxed) - c0;
    let ckpts = m.checkpoints.load(Relaxed) - k0;
    assert_eq!(
        m.acks.load(Relaxed),
        total,
        "every QoS 1 message acknowledged once"
    );
    assert_eq!(m.duplicates.load(Relaxed), 0);
    assert_eq!(m.dead_letters.load(Relaxed), 0);
    assert!(m.storage_bytes_written.load(Relaxed) > 0);
    let commit_interval_ms = m.storage.lock().unwrap().commit_interval_ms;
    let ack_wait = m.ack_wait.lock().unwrap().clone();
    let s = agent.stop();
    assert_eq!(s.readings, total, "readings in = readings journaled");
    eprintln!(
        "{tag}: {syncs} syncs ({commits} commits, {ckpts} checkpoints) for {n} readings, commit interval {commit_interval_ms} ms, ack waits {:?}",
        ack_wait.counts
    );
    Run {
        syncs_per_reading: syncs as f64 / n as f64,
        commit_interval_ms,
        ack_wait,
    }
}

#[test]
fn a_tight_budget_commits_less_often_and_still_acknowledges_everything() {
    if !have_mosquitto() {
        return;
    }
    // mosquitto lets 1,000 unacknowledged messages out to the agent (the
    // helper's max_inflight_messages): room for larger groups.
    let dir = TempDir::new("budget-mosq");
    let mosq = Mosquitto::start(&dir.0);
    let free = run(mosq.addr(), "budget-off", OFF, true);
    assert_eq!(free.commit_interval_ms, 5, "gateway_file's group commit");
    let tight = run(mosq.addr(), "budget-tight", TIGHT, true);
    assert_eq!(tight.commit_interval_ms, 500, "stretched to max_ack_delay");
    assert!(
        tight.syncs_per_reading * 4.0 < free.syncs_per_reading,
        "syncs per reading: {} with the budget, {} without",
        tight.syncs_per_reading,
        free.syncs_per_reading
    );
    assert_eq!(
        tight.acks_within(1.0),
        (WARM + STEADY) as u64,
        "no group stayed open much longer than max_ack_delay"
    );
}

#[test]
fn a_broker_waiting_for_acks_is_not_throttled_by_the_budget() {
    // rumqttd sends the agent about 100 messages, then waits for their
    // acks: holding the group open to max_ack_delay would cut ingest to
    // 100 messages per 500 ms and save no write.
    let addr = weir_agent::demo::start_broker().expect("broker");
    let tight = run(addr, "budget-waiting-broker", TIGHT, false);
    assert_eq!(tight.commit_interval_ms, 500);
    let quick = tight.acks_within(0.1);
    assert!(
        quick * 10 >= (WARM + N) as u64 * 9,
        "only {quick} of {} acknowledgements within 100 ms: {:?}",
        WARM + N,
        tight.ack_wait.counts
    );
}
