//! The agent against rumqttd in this process: every reading published at
//! QoS 1 is accounted for, bad input is counted and dead-lettered without
//! stalling the good input around it, and an agent may start before its
//! broker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

fn run_and_check(addr: SocketAddr, dir: &TempDir, n: usize, keys: usize) {
    let msgs = input(n, keys, T0);
    let expected = reference(PIPELINE, &msgs);
    assert!(expected.len() > 50, "the input must fire windows");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gateway_file(&dir.0, addr, ""));
    agent.wait_subscribed(0);
    publish_all(addr, &msgs, Duration::from_secs(120));
    assert!(
        col.wait_for(expected.len(), Duration::from_secs(120)),
        "only {} of {} outputs arrived",
        col.distinct(),
        expected.len()
    );
    wait_until(Duration::from_secs(60), "every reading journaled", || {
        agent.metrics().readings.load(Relaxed) == n as u64
    });
    let m = agent.metrics();
    assert_eq!(m.rejected.load(Relaxed), 0);
    assert_eq!(m.dead_letters.load(Relaxed), 0);
    let s = agent.stop();
    assert_eq!(s.readings, n as u64, "readings in = readings journaled");
    assert!(
        s.final_checkpoint,
        "SIGTERM-style stop writes a final checkpoint"
    );
    col.assert_matches(&expected);
}

#[test]
fn every_qos1_reading_is_accounted_for() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("ingest");
    run_and_check(addr, &dir, 20_000, 10);
}

#[test]
fn an_agent_started_before_its_broker_connects_when_it_comes() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = TempDir::new("before-broker");
    let agent = InProcAgent::start(&gateway_file(&dir.0, addr, ""));
    // It keeps retrying with backoff; nothing listens yet.
    wait_until(
        Duration::from_secs(10),
        "a failed connection attempt",
        || agent.metrics().connection_errors.load(Relaxed) >= 1,
    );
    assert!(!agent.metrics().connected.load(Relaxed));
    weir_agent::demo::start_broker_at(addr).expect("broker");
    wait_until(Duration::from_secs(30), "the agent to connect", || {
        agent.metrics().connected.load(Relaxed)
    });
    agent.wait_subscribed(0);
    let msgs = input(5_000, 5, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    publish_all(addr, &msgs, Duration::from_secs(60));
    assert!(col.wait_for(expected.len(), Duration::from_secs(60)));
    agent.stop();
    col.assert_matches(&expected);
}

/// A corpus of bad input, each kind with its expected reason.
fn corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let big = format!(
        "{{\"k\":\"s00\",\"t\":{T0},\"v\":1.0,\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    vec![
        ("malformed", "plant/s00/v".into(), b"{not json".to_vec()),
        ("malformed", "plant/s01/v".into(), vec![0xff, 0xfe, 0x00]),
        ("malformed", "plant/s00/v".into(), b"".to_vec()),
        (
            "wrong_type",
            "plant/s00/v".into(),
            format!("{{\"k\":\"s00\",\"t\":{T0},\"v\":\"hot\"}}").into_bytes(),
        ),
        (
            "wrong_type",
            "plant/s00/v".into(),
            format!("{{\"k\":\"s00\",\"t\":{T0}.5,\"v\":1}}").into_bytes(),
        ),
        (
            "missing_field",
            "plant/s00/v".into(),
            format!("{{\"k\":\"s00\",\"t\":{T0}}}").into_bytes(),
        ),
        (
            "missing_field",
            "plant/s00/v".into(),
            b"{\"k\":\"s00\",\"v\":2.0}".to_vec(),
        ),
        ("oversized", "plant/s00/v".into(), big.into_bytes()),
        (
            "timestamp_out_of_range",
            "plant/s00/v".into(),
            b"{\"k\":\"s00\",\"t\":9223372036854775807,\"v\":1}".to_vec(),
        ),
        (
            "unknown_topic",
            "legacy/s00/v".into(),
            b"{\"k\":\"s00\",\"t\":1,\"v\":1}".to_vec(),
        ),
    ]
}

#[test]
fn bad_input_is_counted_dead_lettered_and_does_not_stall_good_input() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("bad-input");
    // A subscription left in the agent's persistent session by an older
    // pipeline: its messages reach the agent, and no source claims them.
    precreate_session(addr, &format!("weir-{GATEWAY}"), "legacy/#");
    let good = input(6_000, 6, T0);
    let expected = reference(PIPELINE, &good);
    let bad = corpus();
    // Interleave: a bad message after every 500 good ones, the corpus twice.
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    let mut b = bad.iter().cycle();
    for (i, m) in good.iter().enumerate() {
        all.push((m.topic.clone(), m.payload.clone().into_bytes()));
        if i % 300 == 299 {
            let (_, t, p) = b.next().expect("cycle");
            all.push((t.clone(), p.clone()));
        }
    }
    let n_bad = good.len() / 300;
    // Decoded fine, journaled, then refused by the engine.
    let engine_rejects = bad
        .iter()
        .cycle()
        .take(n_bad)
        .filter(|b| b.0 == "timestamp_out_of_range")
        .count() as u64;
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gateway_file(&dir.0, addr, ""));
    // The session holds only `legacy/#`: what is published before the
    // agent's own subscription is acknowledged would be dropped.
    agent.wait_subscribed(0);
    publish_raw(addr, all.into_iter(), Duration::from_secs(60));
    assert!(
        col.wait_for(expected.len(), Duration::from_secs(60)),
        "good input stalled"
    );
    wait_until(Duration::from_secs(30), "every message handled", || {
        agent.metrics().readings.load(Relaxed) == good.len() as u64 + engine_rejects
            && agent.metrics().dead_letters.load(Relaxed) == n_bad as u64
    });
    let m = agent.metrics();
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (reason, _, _) in bad.iter().cycle().take(n_bad) {
        *want.entry(reason).or_default() += 1;
    }
    for (reason, n) in &want {
        assert_eq!(
            m.bad_total(reason),
            *n,
            "count of `{reason}`:\n{}",
            m.render()
        );
    }
    assert_eq!(m.rejected.load(Relaxed), engine_rejects);
    let text = m.render();
    assert!(
        text.contains("weir_bad_input_total{topic=\"legacy/s00/v\",reason=\"unknown_topic\"}"),
        "{text}"
    );
    agent.stop();
    col.assert_matches(&expected);
    // The dead letters are on disk, with topic and reason.
    let store = weir_agent::store::StoreConfig::default()
        .build(dir.0.join("data/weir.redb"))
        .expect("store");
    let dead = store.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), n_bad);
    // Topics are delivered per subscription, so compare as multisets.
    let mut got: Vec<_> = dead
        .iter()
        .map(|(_, d)| (d.reason.clone(), d.topic.clone(), d.payload.clone()))
        .collect();
    let mut want: Vec<_> = bad
        .iter()
        .cycle()
        .take(n_bad)
        .map(|(r, t, p)| (r.to_string(), t.clone(), p[..p.len().min(256)].to_vec()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
