//! Signed pipeline updates under `weir run`, through a real broker (the
//! local one: no `[cloud]`): bad documents are all rejected with the right
//! reason and the running pipeline untouched (also oversized ones, up to
//! and beyond the control link's packet bound, with the link intact for
//! the next update); a good update keeps window state across the switch;
//! an update that fails its health check is rolled back and every reading
//! sent meanwhile is counted by the pipeline that comes back; a SIGKILL or
//! SIGTERM during a health check resumes it after the restart; a
//! rolled-back version is never accepted again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_agent::identity;
use weir_cloud_sync::update::{self, UpdateResult};
use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

struct Setup {
    _dir: TempDir,
    gw: std::path::PathBuf,
    addr: SocketAddr,
    agent: InProcAgent,
    status: Statuses,
}

fn setup(name: &str, extra: &str) -> Setup {
    let dir = TempDir::new(name);
    let addr = weir_agent::demo::start_broker().expect("broker");
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key(1).verifying_key()).unwrap(),
    )
    .unwrap();
    let gw = gateway_file(
        &dir.0,
        addr,
        &format!("[updates]\ntrusted_keys = [\"fleet.pub\"]\nmax_bytes = 65536\n{extra}"),
    );
    let status = Statuses::start(addr);
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    status.wait(0, "the initial status", |s| s.current_version == 0);
    Setup {
        _dir: dir,
        gw,
        addr,
        agent,
        status,
    }
}

fn push(addr: SocketAddr, doc: Vec<u8>) {
    publish_raw(
        addr,
        std::iter::once((format!("weir/{GATEWAY}/pipeline/set"), doc)),
        Duration::from_secs(10),
    );
}

fn gw() -> Vec<String> {
    vec![GATEWAY.to_string()]
}

#[test]
fn bad_updates_are_rejected_with_their_reason_and_change_nothing() {
    let s = setup("upd-reject", "");
    let good = update::sign(&key(1), PIPELINE, 2, &gw());
    let mut tampered = good.clone();
    let at = tampered
        .windows(3)
        .position(|w| w == b"e2e")
        .expect("pipeline name in the document");
    tampered[at + 2] = b'f';
    let big = format!("{PIPELINE}\n# {}\n", "x".repeat(70_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad_signature", tampered),
        ("unknown_key", update::sign(&key(2), PIPELINE, 2, &gw())),
        (
            "wrong_gateway",
            update::sign(&key(1), PIPELINE, 2, &["other".to_string()]),
        ),
        ("malformed", b"not an update".to_vec()),
        ("oversized", update::sign(&key(1), &big, 2, &gw())),
        (
            "invalid_pipeline",
            update::sign(&key(1), "name = 1\n", 2, &gw()),
        ),
        ("not_newer", update::sign(&key(1), PIPELINE, 0, &gw())),
    ];
    let msgs = input(6_000, 4, T0);
    publish_all(s.addr, &msgs[..3_000], Duration::from_secs(30));
    for (reason, doc) in cases {
        let from = s.status.len();
        push(s.addr, doc);
        let st = s
            .status
            .wait(from, reason, |st| st.last_result == UpdateResult::Rejected);
        assert_eq!(st.reason.as_deref(), Some(reason));
        assert_eq!(
            st.current_version, 0,
            "{reason}: the running pipeline is untouched"
        );
    }
    publish_all(s.addr, &msgs[3_000..], Duration::from_secs(30));
    let m = s.agent.metrics();
    wait_until(Duration::from_secs(10), "the stream processed", || {
        m.readings.load(std::sync::atomic::Ordering::Relaxed) >= 6_000
    });
    assert_eq!(
        m.pipeline_version
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(m
        .render()
        .contains("weir_pipeline_updates_total{result=\"rejected\"} 7"));
    s.agent.stop();
}

#[test]
fn a_good_update_keeps_window_state_and_a_replay_of_it_is_refused() {
    let s = setup("upd-apply", "health_check = \"200ms\"\n");
    let col = Collector::start(s.addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(12_000, 4, T0);
    let expected = reference(PIPELINE, &msgs);
    // v2 keeps window `w` (same id, same state type) and adds `w2`.
    let v2 = format!(
        "{PIPELINE}\n[[window]]\nid = \"w2\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"2s\"\naggregates = [\"count\"]\n"
    );
    let doc = update::sign(&key(1), &v2, 2, &gw());
    // Half the stream, then the update in the middle of open windows.
    publish_all(s.addr, &msgs[..6_000], Duration::from_secs(30));
    wait_until(Duration::from_secs(10), "half the stream", || {
        s.agent
            .metrics()
            .readings
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6_000
    });
    let from = s.status.len();
    push(s.addr, doc.clone());
    let st = s.status.wait(from, "applied", |st| {
        st.last_result == UpdateResult::Applied
    });
    assert_eq!(st.current_version, 2);
    assert_eq!(st.kept, vec!["w".to_string()]);
    assert_eq!(st.reset, vec!["w2".to_string()]);
    publish_all(s.addr, &msgs[6_000..], Duration::from_secs(30));
    // Window counts carry on across the switch: `w`'s outputs are exactly
    // an uninterrupted run's.
    wait_until(Duration::from_secs(20), "every window of `w`", || {
        col.with(|seen| expected.keys().all(|k| seen.by_id.contains_key(k)))
    });
    col.with(|seen| {
        for (id, want) in &expected {
            assert_eq!(&seen.by_id[id], want, "{id}");
        }
        assert!(
            seen.by_id
                .keys()
                .any(|k| k.starts_with(&format!("{GATEWAY}/w2/"))),
            "the new operator runs"
        );
    });
    let from = s.status.len();
    push(s.addr, doc);
    let st = s.status.wait(from, "replay refused", |st| {
        st.last_result == UpdateResult::Rejected
    });
    assert_eq!(st.reason.as_deref(), Some("not_newer"));
    assert_eq!(st.current_version, 2);
    s.agent.stop();
}

#[test]
fn an_update_that_fails_its_health_check_is_rolled_back() {
    let s = setup("upd-rollback", "health_check = \"10s\"\nmax_errors = 20\n");
    let col = Collector::start(s.addr, &format!("weir/{GATEWAY}/windows/#"));
    // v2 reads the timestamp from a field the sensors do not send: every
    // message is a decode error.
    let v2 = PIPELINE.replace("ts = \"t\"", "ts = \"time\"");
    assert_ne!(v2, PIPELINE);
    let msgs = input(9_000, 3, T0);
    publish_all(s.addr, &msgs[..3_000], Duration::from_secs(30));
    let from = s.status.len();
    push(s.addr, update::sign(&key(1), &v2, 2, &gw()));
    s.status.wait(from, "staged", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    publish_all(s.addr, &msgs[3_000..3_100], Duration::from_secs(30));
    let st = s.status.wait(from, "rolled back", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    assert_eq!(st.current_version, 0);
    assert_eq!(st.last_version, Some(2));
    assert!(
        st.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("health_check"),
        "{st:?}"
    );
    // The old pipeline runs again: later windows come out.
    let before = col.distinct();
    publish_all(s.addr, &msgs[3_100..], Duration::from_secs(30));
    assert!(
        col.wait_for(before + 3, Duration::from_secs(20)),
        "the previous pipeline produces outputs again"
    );
    assert_eq!(
        s.agent
            .metrics()
            .pipeline_version
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    s.agent.stop();
}

/// A pipeline that fails its health check: it reads the timestamp from a
/// field the sensors do not send, so every message is a decode error.
fn failing_v2() -> String {
    let v2 = PIPELINE.replace("ts = \"t\"", "ts = \"time\"");
    assert_ne!(v2, PIPELINE);
    v2
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_rolled_back_update_is_refused_when_replayed_even_after_a_restart() {
    let s = setup("upd-replay-rb", "health_check = \"10s\"\nmax_errors = 20\n");
    let doc = update::sign(&key(1), &failing_v2(), 2, &gw());
    let msgs = input(200, 2, T0);
    let from = s.status.len();
    push(s.addr, doc.clone());
    s.status.wait(from, "switched to v2", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    // Another update while v2 is on trial is refused, and says why.
    let from2 = s.status.len();
    push(s.addr, update::sign(&key(1), PIPELINE, 3, &gw()));
    let st = s
        .status
        .wait(from2, "busy", |st| st.last_result == UpdateResult::Rejected);
    assert_eq!(st.reason.as_deref(), Some("busy"), "{st:?}");
    assert_eq!(st.current_version, 2);
    publish_all(s.addr, &msgs[..100], Duration::from_secs(30));
    s.status.wait(from, "rolled back", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    // The same signed bytes again: rollback lowered the running version,
    // but v2 was accepted once and must never be again.
    let from = s.status.len();
    push(s.addr, doc.clone());
    let st = s.status.wait(from, "the replay refused", |st| {
        st.last_result != UpdateResult::RolledBack
    });
    assert_eq!(st.last_result, UpdateResult::Rejected, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("not_newer"));
    assert_eq!(st.current_version, 0);
    let Setup {
        _dir,
        gw: gw_file,
        addr,
        agent,
        status,
    } = s;
    agent.stop();
    let from = status.len();
    let agent = InProcAgent::start(&gw_file);
    // Its control link is subscribed once it has published its status.
    status.wait(from, "the status after the restart", |_| true);
    let pushed = now_ms();
    let from = status.len();
    push(addr, doc);
    let st = status.wait(from, "the replay refused after a restart", |st| {
        st.updated_at >= pushed
    });
    assert_eq!(st.last_result, UpdateResult::Rejected, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("not_newer"));
    assert_eq!(st.current_version, 0);
    assert_eq!(
        agent
            .metrics()
            .pipeline_version
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    agent.stop();
}

#[test]
fn readings_sent_during_a_failed_health_check_are_counted_after_the_rollback() {
    let s = setup("upd-rb-count", "health_check = \"10s\"\nmax_errors = 20\n");
    let col = Collector::start(s.addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(9_000, 3, T0);
    let expected = reference(PIPELINE, &msgs);
    publish_all(s.addr, &msgs[..3_000], Duration::from_secs(30));
    let from = s.status.len();
    push(s.addr, update::sign(&key(1), &failing_v2(), 2, &gw()));
    s.status.wait(from, "switched to v2", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    // Every one of these is a decode error under v2.
    publish_all(s.addr, &msgs[3_000..3_300], Duration::from_secs(30));
    s.status.wait(from, "rolled back", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    publish_all(s.addr, &msgs[3_300..], Duration::from_secs(30));
    // Counting: every window of the whole stream, as an uninterrupted run
    // of the first pipeline emits it, the readings of the failed health
    // check included.
    wait_until(Duration::from_secs(20), "every window", || {
        col.with(|seen| expected.keys().all(|k| seen.by_id.contains_key(k)))
    });
    col.assert_matches(&expected);
    s.agent.stop();
}

/// SIGKILL (or SIGTERM) while an update that will fail runs its health
/// check: after the restart the check resumes and the update is rolled
/// back, the status says so, and every reading is counted once by the
/// pipeline rolled back to, those of the health check on either side of
/// the restart included.
fn restart_during_a_failing_health_check(sigterm: bool) {
    let dir = TempDir::new(if sigterm { "upd-term" } else { "upd-kill" });
    let addr = weir_agent::demo::start_broker().expect("broker");
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key(1).verifying_key()).unwrap(),
    )
    .unwrap();
    let gw_file = gateway_file(
        &dir.0,
        addr,
        "[updates]\ntrusted_keys = [\"fleet.pub\"]\nhealth_check = \"10s\"\nmax_errors = 20\n",
    );
    // The broker queues the readings for the agent while it is down.
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(6_000, 3, T0);
    let expected = reference(PIPELINE, &msgs);
    let status = Statuses::start(addr);
    let log0 = dir.0.join("agent-0.log");
    let agent = AgentProc::start(&gw_file, &log0);
    status.wait(0, "the initial status", |st| st.current_version == 0);
    publish_all(addr, &msgs[..1_000], Duration::from_secs(30));
    let from = status.len();
    push(addr, update::sign(&key(1), &failing_v2(), 2, &gw()));
    status.wait(from, "switched to v2", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    // Fewer bad messages than `max_errors`: the check still runs.
    publish_all(addr, &msgs[1_000..1_010], Duration::from_secs(30));
    if sigterm {
        agent.wait_log(&log0, "health check running", Duration::from_secs(10));
        assert!(agent.terminate(Duration::from_secs(30)).success());
    } else {
        agent.kill();
    }
    let from = status.len();
    let log1 = dir.0.join("agent-1.log");
    let agent = AgentProc::start(&gw_file, &log1);
    publish_all(addr, &msgs[1_010..1_100], Duration::from_secs(30));
    let st = status.wait(from, "rolled back after the restart", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    assert_eq!(st.current_version, 0, "{st:?}");
    assert_eq!(st.last_version, Some(2));
    assert!(
        st.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("health_check"),
        "{st:?}"
    );
    if sigterm {
        assert!(agent.terminate(Duration::from_secs(30)).success());
    } else {
        agent.kill();
    }
    // And it stays rolled back across another restart.
    let from = status.len();
    let log2 = dir.0.join("agent-2.log");
    let agent = AgentProc::start(&gw_file, &log2);
    let st = status.wait(from, "the status after the next restart", |_| true);
    assert_eq!(st.last_result, UpdateResult::RolledBack, "{st:?}");
    assert_eq!(st.current_version, 0, "{st:?}");
    publish_all(addr, &msgs[1_100..], Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "every window", || {
        col.with(|seen| expected.keys().all(|k| seen.by_id.contains_key(k)))
    });
    col.assert_matches(&expected);
    assert!(agent.terminate(Duration::from_secs(30)).success());
}

#[test]
fn sigkill_during_a_failing_health_check_resumes_it_and_rolls_back() {
    restart_during_a_failing_health_check(false);
}

#[test]
fn sigterm_during_a_failing_health_check_resumes_it_and_rolls_back() {
    restart_during_a_failing_health_check(true);
}

/// Publishes `payload` (retained or not) at QoS 1 and waits for the
/// broker's ack.
fn publish_big(addr: SocketAddr, topic: &str, payload: Vec<u8>, retain: bool) {
    let id = format!("e2e-big-{}-{}", std::process::id(), free_port());
    let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
    o.set_max_packet_size(64 << 20, 64 << 20);
    let (c, mut conn) = Client::new(o, 10);
    c.publish(topic, QoS::AtLeastOnce, retain, payload)
        .expect("publish");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < end, "the broker did not ack the document");
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Err(e)) => panic!("publisher: {e}"),
            _ => {}
        }
    }
    let _ = c.disconnect();
}

#[test]
fn a_10_mb_retained_document_is_reported_oversized_and_later_updates_still_apply() {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("upd-oversized");
    let mosq = Mosquitto::start(&dir.0);
    let addr = mosq.addr();
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key(1).verifying_key()).unwrap(),
    )
    .unwrap();
    let gw_file = gateway_file(
        &dir.0,
        addr,
        "[updates]\ntrusted_keys = [\"fleet.pub\"]\nhealth_check = \"200ms\"\n",
    );
    let status = Statuses::start(addr);
    let agent = InProcAgent::start(&gw_file);
    status.wait(0, "the initial status", |st| st.current_version == 0);
    let big = format!("{PIPELINE}\n# {}\n", "x".repeat(10 << 20));
    let from = status.len();
    publish_big(
        addr,
        &format!("weir/{GATEWAY}/pipeline/set"),
        update::sign(&key(1), &big, 1, &gw()),
        true,
    );
    let st = status.wait(from, "oversized", |st| {
        st.last_result == UpdateResult::Rejected
    });
    assert_eq!(st.reason.as_deref(), Some("oversized"), "{st:?}");
    // The link is intact: an update published right after is applied.
    let from = status.len();
    push(addr, update::sign(&key(1), PIPELINE, 2, &gw()));
    let st = status.wait(from, "the next update applied", |st| {
        st.last_result == UpdateResult::Applied
    });
    assert_eq!(st.current_version, 2);
    assert!(agent
        .metrics()
        .render()
        .contains("weir_pipeline_updates_total{result=\"rejected\"} 1"));
    // Clear the retained document (an empty one, itself refused).
    let from = status.len();
    publish_big(
        addr,
        &format!("weir/{GATEWAY}/pipeline/set"),
        Vec::new(),
        true,
    );
    let st = status.wait(from, "the empty document refused", |st| {
        st.last_result == UpdateResult::Rejected
    });
    assert_eq!(st.reason.as_deref(), Some("malformed"), "{st:?}");
    // Above the link's packet limit (16 MiB here) the document is not read:
    // it breaks the connection, and is reported as oversized all the same.
    let huge = format!("{PIPELINE}\n# {}\n", "x".repeat(20 << 20));
    let from = status.len();
    publish_big(
        addr,
        &format!("weir/{GATEWAY}/pipeline/set"),
        update::sign(&key(1), &huge, 3, &gw()),
        false,
    );
    let st = status.wait(from, "oversized above the packet limit", |st| {
        st.last_result == UpdateResult::Rejected
    });
    assert_eq!(st.reason.as_deref(), Some("oversized"), "{st:?}");
    // The link comes back (the status is published again on connect) and
    // takes the next update.
    status.wait_n(from, 2, "the link back", |s| s == &st);
    let from = status.len();
    push(addr, update::sign(&key(1), PIPELINE, 4, &gw()));
    let st = status.wait(from, "the update after it applied", |st| {
        st.last_result == UpdateResult::Applied
    });
    assert_eq!(st.current_version, 4);
    assert!(agent
        .metrics()
        .render()
        .contains("weir_pipeline_updates_total{result=\"rejected\"} 3"));
    agent.stop();
}

#[test]
fn a_failed_update_rolls_back_to_the_previous_update_across_a_sigkill() {
    let dir = TempDir::new("upd-rb-to-update");
    let addr = weir_agent::demo::start_broker().expect("broker");
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key(1).verifying_key()).unwrap(),
    )
    .unwrap();
    let gw_file = gateway_file(
        &dir.0,
        addr,
        "[updates]\ntrusted_keys = [\"fleet.pub\"]\nhealth_check = \"2s\"\nmax_errors = 20\n",
    );
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(6_000, 3, T0);
    let expected = reference(PIPELINE, &msgs);
    let status = Statuses::start(addr);
    let log0 = dir.0.join("agent-0.log");
    let agent = AgentProc::start(&gw_file, &log0);
    status.wait(0, "the initial status", |st| st.current_version == 0);
    publish_all(addr, &msgs[..1_000], Duration::from_secs(30));
    // v2 keeps `w` and adds `w2`; no readings during its check: it passes.
    let v2 = format!(
        "{PIPELINE}\n[[window]]\nid = \"w2\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"2s\"\naggregates = [\"count\"]\n"
    );
    let from = status.len();
    push(addr, update::sign(&key(1), &v2, 2, &gw()));
    status.wait(from, "v2 applied", |st| {
        st.last_result == UpdateResult::Applied && st.current_version == 2
    });
    // v3 is v2 with the timestamp field the sensors do not send.
    let v3 = v2.replace("ts = \"t\"", "ts = \"time\"");
    let from = status.len();
    push(addr, update::sign(&key(1), &v3, 3, &gw()));
    status.wait(from, "switched to v3", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 3
    });
    publish_all(addr, &msgs[1_000..1_010], Duration::from_secs(30));
    agent.kill();
    let from = status.len();
    let log1 = dir.0.join("agent-1.log");
    let agent = AgentProc::start(&gw_file, &log1);
    publish_all(addr, &msgs[1_010..1_100], Duration::from_secs(30));
    let st = status.wait(from, "rolled back to v2", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    assert_eq!(st.current_version, 2, "{st:?}");
    assert_eq!(st.last_version, Some(3));
    agent.kill();
    let from = status.len();
    let log2 = dir.0.join("agent-2.log");
    let agent = AgentProc::start(&gw_file, &log2);
    let st = status.wait(from, "the status after the next restart", |_| true);
    assert_eq!(
        (st.last_result, st.current_version),
        (UpdateResult::RolledBack, 2),
        "{st:?}"
    );
    let w2_before = col.with(|s| s.by_id.keys().filter(|k| k.contains("/w2/")).count());
    publish_all(addr, &msgs[1_100..], Duration::from_secs(30));
    // `w` kept its state through v2, v3 and the rollback: exactly an
    // uninterrupted run's windows; `w2` (v2's) runs again.
    wait_until(Duration::from_secs(30), "every window of `w`", || {
        col.with(|seen| expected.keys().all(|k| seen.by_id.contains_key(k)))
    });
    col.with(|seen| {
        assert!(seen.conflicts.is_empty(), "{:?}", seen.conflicts);
        for (id, want) in &expected {
            assert_eq!(&seen.by_id[id], want, "{id}");
        }
        let w2 = seen.by_id.keys().filter(|k| k.contains("/w2/")).count();
        assert!(w2 > w2_before, "v2's `w2` runs after the rollback");
    });
    assert!(agent.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_good_update_killed_during_its_health_check_is_applied_after_the_restart() {
    let dir = TempDir::new("upd-kill-apply");
    let addr = weir_agent::demo::start_broker().expect("broker");
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key(1).verifying_key()).unwrap(),
    )
    .unwrap();
    let gw_file = gateway_file(
        &dir.0,
        addr,
        "[updates]\ntrusted_keys = [\"fleet.pub\"]\nhealth_check = \"2s\"\n",
    );
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(6_000, 3, T0);
    let expected = reference(PIPELINE, &msgs);
    let status = Statuses::start(addr);
    let log0 = dir.0.join("agent-0.log");
    let agent = AgentProc::start(&gw_file, &log0);
    status.wait(0, "the initial status", |st| st.current_version == 0);
    publish_all(addr, &msgs[..2_000], Duration::from_secs(30));
    let v2 = format!(
        "{PIPELINE}\n[[window]]\nid = \"w2\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"2s\"\naggregates = [\"count\"]\n"
    );
    let from = status.len();
    push(addr, update::sign(&key(1), &v2, 2, &gw()));
    status.wait(from, "switched to v2", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    publish_all(addr, &msgs[2_000..2_500], Duration::from_secs(30));
    agent.kill();
    let from = status.len();
    let log1 = dir.0.join("agent-1.log");
    let agent = AgentProc::start(&gw_file, &log1);
    publish_all(addr, &msgs[2_500..], Duration::from_secs(30));
    let st = status.wait(from, "applied after the restart", |st| {
        st.last_result == UpdateResult::Applied
    });
    assert_eq!(st.current_version, 2, "{st:?}");
    assert_eq!(st.kept, vec!["w".to_string()]);
    // `w` kept its state through the switch and the restart.
    wait_until(Duration::from_secs(30), "every window of `w`", || {
        col.with(|seen| expected.keys().all(|k| seen.by_id.contains_key(k)))
    });
    col.with(|seen| {
        assert!(seen.conflicts.is_empty(), "{:?}", seen.conflicts);
        for (id, want) in &expected {
            assert_eq!(&seen.by_id[id], want, "{id}");
        }
    });
    assert!(agent.terminate(Duration::from_secs(30)).success());
}
