//! The cloud link of `weir run` against real brokers: the agent's outputs
//! reach a second ("cloud") broker through the redb outbox, exactly once by
//! id, in order per key, across link outages, a cloud broker restarted
//! without persistence, SIGKILLs with a full outbox, and a disk budget.
//!
//! The link is cut with a TCP proxy the test controls (a cellular drop as
//! the agent sees it), so the test's cloud consumer can stay subscribed
//! while the agent cannot reach the broker.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_cloud_sync::wire::{Batch, OutputRecord, RecordKind};
use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

/// A TCP forwarder to `upstream` that can refuse and cut connections.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr, open: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("proxy addr");
        let open = Arc::new(AtomicBool::new(open));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = s.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(u) = TcpStream::connect(upstream) else {
                    let _ = s.shutdown(Shutdown::Both);
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(s.try_clone().unwrap());
                list.push(u.try_clone().unwrap());
                drop(list);
                for (mut a, mut b) in [(s.try_clone().unwrap(), u.try_clone().unwrap()), (u, s)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match a.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if b.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, open, conns }
    }

    /// Refuses new connections and cuts the live ones.
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// What the cloud consumer has seen.
#[derive(Default)]
struct CloudSeen {
    /// id → first copy.
    by_id: HashMap<String, OutputRecord>,
    /// Ids in first-arrival order.
    order: Vec<String>,
    duplicates: u64,
    conflicts: Vec<String>,
    /// Drop reports' counts summed (window, alert, status).
    reported_drops: [u64; 3],
}

/// Subscribes to the gateway's uplink topic and decodes its batches.
#[derive(Clone)]
struct CloudCol {
    seen: Arc<(Mutex<CloudSeen>, Condvar)>,
    subscribed: Arc<AtomicU64>,
}

impl CloudCol {
    fn start(addr: SocketAddr) -> CloudCol {
        let seen: Arc<(Mutex<CloudSeen>, Condvar)> = Arc::default();
        let subscribed = Arc::new(AtomicU64::new(0));
        let (s2, sub2) = (seen.clone(), subscribed.clone());
        let id = format!("e2e-cloud-{}-{}", std::process::id(), free_port());
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20);
        let (c, mut conn) = Client::new(o, 100);
        std::thread::spawn(move || {
            let _keep = c.clone();
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(format!("weir/{GATEWAY}/up"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sub2.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let b = Batch::from_cbor(&p.payload).expect("a CBOR batch");
                        assert_eq!(b.gateway, GATEWAY);
                        let (m, cv) = &*s2;
                        let mut s = m.lock().unwrap();
                        for r in b.records {
                            if r.kind == RecordKind::Dropped {
                                if !s.by_id.contains_key(&r.id) {
                                    for (i, (_, v)) in r.fields.iter().enumerate().take(3) {
                                        s.reported_drops[i] += *v as u64;
                                    }
                                    s.by_id.insert(r.id.clone(), r);
                                }
                                continue;
                            }
                            match s.by_id.get(&r.id) {
                                Some(old) if *old == r => s.duplicates += 1,
                                Some(_) => s.conflicts.push(r.id.clone()),
                                None => {
                                    s.order.push(r.id.clone());
                                    s.by_id.insert(r.id.clone(), r);
                                }
                            }
                        }
                        cv.notify_all();
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let col = CloudCol { seen, subscribed };
        col.wait_subscribed(1);
        col
    }

    fn wait_subscribed(&self, n: u64) {
        wait_until(
            Duration::from_secs(20),
            "the cloud consumer to subscribe",
            || self.subscribed.load(Ordering::SeqCst) >= n,
        );
    }

    fn with<R>(&self, f: impl FnOnce(&CloudSeen) -> R) -> R {
        f(&self.seen.0.lock().unwrap())
    }

    /// Waits until `cond` holds on what was seen; false on timeout.
    fn wait(&self, timeout: Duration, mut cond: impl FnMut(&CloudSeen) -> bool) -> bool {
        let (m, cv) = &*self.seen;
        let end = Instant::now() + timeout;
        let mut s = m.lock().unwrap();
        while !cond(&s) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
        true
    }

    fn outputs(&self) -> usize {
        self.with(|s| s.order.len())
    }
}

fn cloud_table(proxy: &Proxy, extra: &str) -> String {
    format!(
        "[cloud]\nurl = \"mqtt://{}\"\nbackoff_min = \"20ms\"\nbackoff_max = \"200ms\"\nbatch_records = 40\n{extra}",
        proxy.addr
    )
}

/// Every expected window arrived once by id with the reference's count and
/// mean, nothing else, and per key in window order.
fn assert_exact(col: &CloudCol, expected: &HashMap<String, Vec<u8>>) {
    col.with(|s| {
        assert!(
            s.conflicts.is_empty(),
            "ids with two different records: {:?}",
            &s.conflicts[..s.conflicts.len().min(5)]
        );
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !s.by_id.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} outputs missing, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        );
        let extra: Vec<_> = s
            .order
            .iter()
            .filter(|k| !expected.contains_key(*k))
            .collect();
        assert!(
            extra.is_empty(),
            "unexpected outputs: {:?}",
            &extra[..extra.len().min(5)]
        );
        for (id, payload) in expected {
            let want: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let got = &s.by_id[id];
            let field = |n: &str| got.fields.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
            assert_eq!(field("count"), want["count"].as_f64(), "{id}: count");
            let (g, w) = (field("mean").unwrap(), want["mean"].as_f64().unwrap());
            assert!((g - w).abs() < 1e-5, "{id}: mean {g} vs {w}");
        }
        let mut last: HashMap<&str, i64> = HashMap::new();
        for id in &s.order {
            let r = &s.by_id[id];
            let prev = last.insert(&r.key, r.start);
            assert!(
                prev.is_none_or(|p| p < r.start),
                "key {}: window {} arrived after {prev:?}",
                r.key,
                r.start
            );
        }
    })
}

fn cloud_stats(
    a: &InProcAgent,
) -> Option<(
    weir_cloud_sync::uplink::UplinkCounters,
    weir_cloud_sync::outbox::OutboxStats,
)> {
    *a.metrics().cloud.lock().unwrap()
}

#[test]
fn cloud_broker_down_and_restarted_mid_stream_delivers_every_output_once_in_order() {
    let dir = TempDir::new("cloud-down");
    let local = weir_agent::demo::start_broker().expect("local broker");
    let mut mosq = have_mosquitto().then(|| Mosquitto::start(&dir.0));
    let cloud = match &mosq {
        Some(m) => m.addr(),
        None => weir_agent::demo::start_broker().expect("cloud broker"),
    };
    let proxy = Proxy::start(cloud, true);
    let gw = gateway_file(&dir.0, local, &cloud_table(&proxy, ""));
    let msgs = input(24_000, 8, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = CloudCol::start(cloud);
    precreate_session(local);
    let agent = InProcAgent::start(&gw);
    let third = msgs.len() / 3;
    publish_all(local, &msgs[..third], Duration::from_secs(60));
    assert!(
        col.wait(Duration::from_secs(20), |s| !s.order.is_empty()),
        "no output reached the cloud"
    );
    // The link goes down with batches in flight; the broker restarts
    // without persistence (it forgets everything it had).
    proxy.close();
    if let Some(m) = &mut mosq {
        m.restart();
        col.wait_subscribed(2);
    }
    let before = col.outputs();
    publish_all(local, &msgs[third..], Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "every window computed", || {
        agent.metrics().windows.load(Ordering::Relaxed) >= expected.len() as u64
    });
    let stats = cloud_stats(&agent);
    proxy.open();
    assert!(
        col.wait(Duration::from_secs(30), |s| expected.keys().all(|k| s.by_id.contains_key(k))),
        "only {} of {} outputs reached the cloud (had {before} when the link went down); stats {stats:?}",
        col.outputs(),
        expected.len()
    );
    assert_exact(&col, &expected);
    wait_until(
        Duration::from_secs(10),
        "the metrics to show the reconnect",
        || cloud_stats(&agent).is_some_and(|(u, _)| u.connection_errors >= 1 && u.connects >= 2),
    );
    let (u, o) = cloud_stats(&agent).expect("cloud metrics");
    assert_eq!(o.dropped.total(), 0);
    let text = agent.metrics().render();
    assert!(text.contains("weir_cloud_acked_records_total"), "{text}");
    agent.stop();
    eprintln!(
        "cloud link: {} outputs, each once by id, after an outage ({} had arrived before it); {} republished, {} copies dropped by id",
        expected.len(),
        before,
        u.republished_records,
        col.with(|s| s.duplicates)
    );
}

/// Gives the agent's client id a persistent session subscribed to the
/// sensor topics, so the broker queues for it while it is dead.
fn precreate_session(addr: SocketAddr) {
    let mut o = MqttOptions::new(format!("weir-{GATEWAY}"), "127.0.0.1", addr.port());
    o.set_clean_session(false);
    let (c, mut conn) = Client::new(o, 10);
    c.subscribe("plant/+/v", QoS::AtLeastOnce).unwrap();
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev {
            break;
        }
    }
    c.disconnect().unwrap();
    for ev in conn.iter() {
        if ev.is_err() {
            break;
        }
    }
}

#[test]
fn sigkill_with_a_full_outbox_loses_nothing_and_repeats_only_ids() {
    let dir = TempDir::new("cloud-kill");
    let local = weir_agent::demo::start_broker().expect("local broker");
    let cloud = weir_agent::demo::start_broker().expect("cloud broker");
    let proxy = Proxy::start(cloud, false);
    // A bandwidth cap makes the upload take about a second, so the second
    // SIGKILL lands in the middle of it.
    let gw = gateway_file(
        &dir.0,
        local,
        &cloud_table(&proxy, "bandwidth = 16000\nburst = 2048\n"),
    );
    let msgs = input(16_000, 8, T0);
    let expected = reference(PIPELINE, &msgs);
    let local_col = Collector::start(local, &format!("weir/{GATEWAY}/windows/#"));
    let col = CloudCol::start(cloud);
    precreate_session(local);
    // 1: the link is down; every output goes to the outbox; SIGKILL.
    let log = dir.0.join("agent-1.log");
    let a = AgentProc::start(&gw, &log);
    publish_all(local, &msgs, Duration::from_secs(60));
    assert!(
        local_col.wait_for(expected.len(), Duration::from_secs(60)),
        "local outputs"
    );
    a.kill();
    assert_eq!(col.outputs(), 0, "the link was down");
    // 2: the link is up; SIGKILL in the middle of the upload.
    proxy.open();
    let log = dir.0.join("agent-2.log");
    let a = AgentProc::start(&gw, &log);
    col.wait(Duration::from_secs(30), |s| !s.order.is_empty());
    a.kill();
    let mid = col.outputs();
    // 3: restarted, it finishes.
    let log = dir.0.join("agent-3.log");
    let a = AgentProc::start(&gw, &log);
    a.wait_log(&log, "connected", Duration::from_secs(30));
    assert!(
        mid < expected.len(),
        "the second agent was killed mid-upload"
    );
    let done = col.wait(Duration::from_secs(30), |s| {
        expected.keys().all(|k| s.by_id.contains_key(k))
    });
    let status = a.terminate(Duration::from_secs(20));
    assert!(
        done,
        "only {} of {} outputs; log:\n{}",
        col.outputs(),
        expected.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(status.success(), "{status}");
    assert_exact(&col, &expected);
    eprintln!(
        "cloud kill: {} outputs exactly once by id after SIGKILLs with a full outbox ({mid} before the second kill); {} copies dropped by id",
        expected.len(),
        col.with(|s| s.duplicates)
    );
}

#[test]
fn disk_budget_keeps_alerts_drops_oldest_windows_and_counts_every_drop() {
    let dir = TempDir::new("cloud-budget");
    let local = weir_agent::demo::start_broker().expect("local broker");
    let cloud = weir_agent::demo::start_broker().expect("cloud broker");
    let proxy = Proxy::start(cloud, false);
    let gw = gateway_file(&dir.0, local, &cloud_table(&proxy, "budget = 8192\n"));
    // Two windows of one sensor shifted by +50: alerts the budget must keep.
    let mut msgs = input(30_000, 6, T0);
    for m in &mut msgs {
        let w = (m.ts - T0) / 1_000;
        if m.key == "s01" && (w == 12 || w == 22) {
            m.v += 50.0;
            m.payload = format!("{{\"k\":\"{}\",\"t\":{},\"v\":{}}}", m.key, m.ts, m.v);
        }
    }
    let expected = reference(PIPELINE, &msgs);
    let flagged: Vec<&String> = expected
        .iter()
        .filter(|(_, p)| serde_json::from_slice::<serde_json::Value>(p).unwrap()["anomaly"] == true)
        .map(|(id, _)| id)
        .collect();
    assert!(!flagged.is_empty(), "the shifted windows are flagged");
    let col = CloudCol::start(cloud);
    precreate_session(local);
    let agent = InProcAgent::start(&gw);
    publish_all(local, &msgs, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(30),
        "every output staged or dropped",
        || {
            cloud_stats(&agent)
                .is_some_and(|(_, o)| o.records + o.dropped.total() >= expected.len() as u64)
        },
    );
    let (_, before) = cloud_stats(&agent).unwrap();
    assert!(
        before.dropped.window > 0,
        "the budget was not reached: {before:?}"
    );
    assert_eq!(before.dropped.alert, 0, "{before:?}");
    proxy.open();
    // Everything kept arrives, and the drop reports account for the rest.
    let ok = col.wait(Duration::from_secs(30), |s| {
        s.order.len() as u64 + s.reported_drops.iter().sum::<u64>() == expected.len() as u64
    });
    let (_, after) = cloud_stats(&agent).unwrap();
    assert!(
        ok,
        "delivered {} + reported drops {:?} != {} outputs; outbox {after:?}",
        col.outputs(),
        col.with(|s| s.reported_drops),
        expected.len()
    );
    col.with(|s| {
        assert!(s.conflicts.is_empty());
        assert_eq!(s.reported_drops[0], after.dropped.window, "reported = counted");
        assert_eq!(s.reported_drops[1], 0);
        let delivered_windows: Vec<&OutputRecord> = s.by_id.values().filter(|r| r.kind == RecordKind::Window).collect();
        let alerts = s.by_id.values().filter(|r| r.kind == RecordKind::Alert).count();
        assert_eq!(alerts, flagged.len(), "every alert is kept");
        for id in &flagged {
            assert_eq!(s.by_id[*id].kind, RecordKind::Alert, "{id}");
        }
        let dropped: Vec<&String> = expected.keys().filter(|k| !s.by_id.contains_key(*k)).collect();
        assert_eq!(dropped.len() as u64, after.dropped.window, "every missing output is a counted drop");
        // The oldest windows went first.
        let start = |id: &str| id.rsplit('/').next().unwrap().parse::<i64>().unwrap();
        let newest_dropped = dropped.iter().map(|id| start(id)).max().unwrap();
        let oldest_kept = delivered_windows.iter().map(|r| r.start).min().unwrap();
        assert!(newest_dropped <= oldest_kept, "dropped a window of {newest_dropped} but kept one of {oldest_kept}");
        eprintln!(
            "cloud budget: {} outputs, {} delivered ({alerts} alerts, all kept), {} oldest windows dropped and reported",
            expected.len(),
            s.order.len(),
            dropped.len()
        );
    });
    agent.stop();
}
