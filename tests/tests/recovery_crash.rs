//! `weir run` as a child process, SIGKILLed at random points while a
//! stream is published at QoS 1, restarted each time. At the end the
//! outputs, deduplicated by id, must equal an uninterrupted run's, id for
//! id and byte for byte: nothing lost, nothing counted twice.
//!
//! `WEIR_CRASH_KILLS` (default 20) sets the number of kills and
//! `WEIR_CRASH_SEED` the random seed (printed, to replay a failure);
//! `tests/soak.sh` runs many more.

use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn tail(path: &std::path::Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_counts_nothing_twice() {
    crash_test(kills(20), 1);
}

/// Messages of 10 readings each (a JSON array): a redelivered message is
/// recognised whole, and the journal's message boundaries survive replay.
#[test]
fn sigkill_with_packs_of_readings_loses_nothing_and_counts_nothing_twice() {
    crash_test(kills(10), 10);
}

fn kills(default: usize) -> usize {
    std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `kills` SIGKILLs while readings arrive `pack` to a message.
fn crash_test(kills: usize, pack: usize) {
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test: {kills} kills, {pack} readings a message, WEIR_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new(&format!("crash-{pack}"));
    let _mosq;
    let addr = if std::env::var_os("WEIR_CRASH_RUMQTTD").is_none() && have_mosquitto() {
        _mosq = Mosquitto::start(&dir.0);
        _mosq.addr()
    } else {
        weir_agent::demo::start_broker().expect("broker")
    };
    let gw = gateway_file(&dir.0, addr, "");
    let msgs = input(30_000 + kills * 500, 10, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    // The broker queues every message for the agent from the first one on.
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let packed: Vec<(String, Vec<u8>)> = msgs
        .chunks(pack)
        .map(|c| match c {
            [m] => (m.topic.clone(), m.payload.clone().into_bytes()),
            _ => {
                let body: Vec<&str> = c.iter().map(|m| m.payload.as_str()).collect();
                (
                    "plant/pack/v".into(),
                    format!("[{}]", body.join(",")).into_bytes(),
                )
            }
        })
        .collect();
    let publisher =
        std::thread::spawn(move || publish_raw(addr, packed.into_iter(), Duration::from_secs(300)));
    let mut last_log = dir.0.join("agent-0.log");
    for k in 0..kills {
        last_log = dir.0.join(format!("agent-{k}.log"));
        let agent = AgentProc::start(&gw, &last_log);
        // Kill after a few more outputs or a random time, whichever is first.
        let target = col.distinct() + 1 + rng.below(12) as usize;
        col.wait_for(target, Duration::from_millis(30 + rng.below(400)));
        std::thread::sleep(Duration::from_millis(rng.below(15)));
        agent.kill();
    }
    publisher.join().expect("publisher");
    let final_log = dir.0.join("agent-final.log");
    let agent = AgentProc::start(&gw, &final_log);
    // Its signal handlers are in place once it has recovered.
    agent.wait_log(&final_log, "connected", Duration::from_secs(60));
    let done = col.wait_for(expected.len(), Duration::from_secs(120));
    let status = agent.terminate(Duration::from_secs(30));
    if !done {
        panic!(
            "only {} of {} outputs after {kills} kills (seed {seed}); last killed agent's log:\n{}\nfinal agent's log:\n{}",
            col.distinct(),
            expected.len(),
            tail(&last_log),
            tail(&final_log)
        );
    }
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        tail(&final_log)
    );
    col.assert_matches(&expected);
    let dup = col.with(|s| s.duplicates);
    eprintln!(
        "crash test: {} outputs exactly as uninterrupted after {kills} SIGKILLs ({pack} readings a message); {dup} re-published copies dropped by id",
        expected.len()
    );
}
