//! The uplink against real brokers (rumqttd in-process, Debian's mosquitto
//! as a child process), through a link the test can cut: outages, a broker
//! restart without persistence, the disk budget during an outage.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::net::{free_port, have_mosquitto, start_rumqttd, Link, Mosquitto};
use common::{alert, window, TempDb};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use weir_cloud_sync::outbox::{DropCounts, Outbox, OutboxConfig, ENTRY_OVERHEAD};
use weir_cloud_sync::uplink::{Bandwidth, Uplink, UplinkConfig};
use weir_cloud_sync::wire::{Batch, OutputRecord, RecordKind};

const TOPIC: &str = "weir/gw1/up";
const WAIT: Duration = Duration::from_secs(30);

/// A QoS 1 subscriber on `port`; returns once the broker has confirmed the
/// subscription. Records arrive on the channel in arrival order; the
/// channel closes when the connection fails.
async fn consumer(port: u16) -> mpsc::UnboundedReceiver<OutputRecord> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut o = MqttOptions::new(
        format!("consumer-{}-{n}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 16);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut sub_tx = Some(sub_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = sub_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let b = Batch::from_cbor(&p.payload).expect("a valid batch");
                    assert_eq!(b.gateway, "gw1");
                    for r in b.records {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    timeout(WAIT, sub_rx)
        .await
        .expect("subscribed in time")
        .unwrap();
    rx
}

/// Everything received, in arrival order, with the distinct ids.
#[derive(Default)]
struct Seen {
    all: Vec<OutputRecord>,
    ids: HashSet<String>,
}

impl Seen {
    /// Receives until `done` holds (bounded by [`WAIT`]).
    async fn until(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<OutputRecord>,
        done: impl Fn(&Seen) -> bool,
    ) {
        let r = timeout(WAIT, async {
            while !done(self) {
                match rx.recv().await {
                    Some(r) => {
                        self.ids.insert(r.id.clone());
                        self.all.push(r);
                    }
                    None => return false,
                }
            }
            true
        })
        .await;
        assert_eq!(
            r,
            Ok(true),
            "condition not reached; {} distinct received",
            self.ids.len()
        );
    }

    /// Takes whatever is already queued, without waiting.
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<OutputRecord>) {
        while let Ok(r) = rx.try_recv() {
            self.ids.insert(r.id.clone());
            self.all.push(r);
        }
    }

    /// The first arrival of each id, in arrival order: what a consumer that
    /// drops duplicates by id keeps.
    fn deduplicated(&self) -> Vec<&OutputRecord> {
        let mut first = HashSet::new();
        self.all
            .iter()
            .filter(|r| first.insert(r.id.clone()))
            .collect()
    }
}

fn config(port: u16) -> UplinkConfig {
    let mut c = UplinkConfig::new("gw1", "127.0.0.1", port);
    c.backoff_min = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c.poll_interval = Duration::from_millis(50);
    c.max_batch_records = 50;
    c
}

fn stream(n: u32) -> Vec<OutputRecord> {
    (0..n).map(|i| window(i % 10, i64::from(i / 10))).collect()
}

fn put_chunks(ob: &Outbox, db: &redb::Database, recs: &[OutputRecord]) {
    for c in recs.chunks(100) {
        ob.put(db, c).unwrap();
    }
}

async fn wait_link(up: &Uplink, connected: bool) {
    let mut w = up.watch();
    timeout(WAIT, w.wait_for(|s| s.connected == connected))
        .await
        .expect("link state in time")
        .unwrap();
}

async fn wait_acked(up: &Uplink, through: u64) {
    let mut w = up.watch();
    timeout(WAIT, w.wait_for(|s| s.acked_through >= through))
        .await
        .expect("acknowledged in time")
        .unwrap();
}

fn assert_delivered_once_in_key_order(seen: &Seen, sent: &[OutputRecord]) {
    let dedup = seen.deduplicated();
    assert_eq!(dedup.len(), sent.len(), "every record, once by id");
    let by_id: HashMap<&str, &OutputRecord> = sent.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut last_start: HashMap<&str, i64> = HashMap::new();
    for r in dedup {
        assert_eq!(
            by_id.get(r.id.as_str()),
            Some(&r),
            "nothing invented or altered"
        );
        if let Some(prev) = last_start.insert(r.key.as_str(), r.start) {
            assert!(
                prev < r.start,
                "key {} out of order: {prev} then {}",
                r.key,
                r.start
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_outage_mid_stream_delivers_everything_once_in_key_order() {
    let broker = start_rumqttd();
    let link = Link::start(broker).await;
    let mut rx = consumer(broker).await;
    let tmp = TempDb::new("outage");
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let up = Uplink::start(config(link.port), db.clone(), ob.clone()).unwrap();
    let recs = stream(3000);
    let mut seen = Seen::default();

    put_chunks(&ob, &db, &recs[..1000]);
    seen.until(&mut rx, |s| s.ids.len() >= 200).await;
    link.cut();
    wait_link(&up, false).await;
    // The stream goes on while the cloud is away.
    put_chunks(&ob, &db, &recs[1000..2000]);
    assert!(ob.stats(&db).unwrap().records >= 1000);
    link.restore();
    put_chunks(&ob, &db, &recs[2000..]);
    seen.until(&mut rx, |s| s.ids.len() >= recs.len()).await;
    wait_acked(&up, 3000).await;

    assert_delivered_once_in_key_order(&seen, &recs);
    let c = up.counters();
    assert!(c.connection_errors >= 1 && c.connects >= 2, "{c:?}");
    assert!(
        c.published_records >= 3000 && c.acked_records >= 3000,
        "{c:?}"
    );
    assert_eq!(c.dropped, DropCounts::default());
    assert!(c.bytes_sent > 0);
    up.shutdown().await;
    // Acknowledged records are deleted with the next flush.
    let left = ob.stats(&db).unwrap().records;
    assert_eq!(ob.flush_acks(&db).unwrap(), left);
    assert_eq!(ob.stats(&db).unwrap().records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_without_session_loses_nothing_in_flight() {
    if !have_mosquitto() {
        return;
    }
    let port = free_port();
    let m = Mosquitto::start(port);
    let link = Link::start(port).await;
    let mut rx1 = consumer(port).await;
    let tmp = TempDb::new("restart");
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let mut cfg = config(link.port);
    cfg.max_batch_records = 20;
    let up = Uplink::start(cfg, db.clone(), ob.clone()).unwrap();
    let recs = stream(3000);
    put_chunks(&ob, &db, &recs[..1500]);
    let mut seen = Seen::default();
    seen.until(&mut rx1, |s| s.ids.len() >= 300).await;

    // The broker freezes (publishes pile up unacknowledged), dies with them
    // in flight and comes back empty. The link stays cut until the new
    // subscriber is in place (a broker keeps nothing for a subscriber that
    // is not there).
    m.pause();
    put_chunks(&ob, &db, &recs[1500..]);
    let mut w = up.watch();
    timeout(WAIT, w.wait_for(|s| s.sent_through > s.acked_through + 40))
        .await
        .expect("publishes in flight")
        .unwrap();
    m.kill();
    link.cut();
    wait_link(&up, false).await;
    let acked_at_kill = up.state().acked_through;
    assert!(acked_at_kill < 3000);
    let _m2 = Mosquitto::start(port);
    let mut rx2 = consumer(port).await;
    seen.drain(&mut rx1);
    link.restore();
    seen.until(&mut rx2, |s| s.ids.len() >= recs.len()).await;
    wait_acked(&up, 3000).await;

    assert_delivered_once_in_key_order(&seen, &recs);
    let c = up.counters();
    assert!(
        c.republished_records > 0,
        "in-flight batches went again: {c:?}"
    );
    assert!(c.connection_errors >= 1, "{c:?}");
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_during_an_outage_keeps_alerts_and_reports_drops_exactly() {
    let broker = start_rumqttd();
    let link = Link::start(broker).await;
    link.cut();
    let mut rx = consumer(broker).await;
    let tmp = TempDb::new("budget");
    let db = Arc::new(tmp.open());
    let w = window(0, 0).to_cbor().len() as u64 + ENTRY_OVERHEAD;
    let a = alert(0, 0).to_cbor().len() as u64 + ENTRY_OVERHEAD;
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 20 * w)).unwrap();
    let up = Uplink::start(config(link.port), db.clone(), ob.clone()).unwrap();

    // Offline from the start: 50 windows and 5 alerts into room for 20
    // windows.
    let windows: Vec<_> = (0..50).map(|i| window(i % 5, i64::from(i / 5))).collect();
    let alerts: Vec<_> = (0..5).map(|i| alert(7, i)).collect();
    put_chunks(&ob, &db, &windows);
    ob.put(&db, &alerts).unwrap();
    let pushed_out = (5 * a).div_ceil(w);
    let expected = DropCounts {
        window: 30 + pushed_out,
        alert: 0,
        status: 0,
    };
    let st = ob.stats(&db).unwrap();
    assert_eq!(st.dropped, expected);
    assert_eq!(st.unreported, expected);
    assert!(up.counters().connection_errors >= 1 || !up.state().connected);
    assert_eq!(up.counters().published_records, 0);

    link.restore();
    let kept: Vec<&OutputRecord> = windows[expected.window as usize..]
        .iter()
        .chain(&alerts)
        .collect();
    let mut seen = Seen::default();
    seen.until(&mut rx, |s| {
        kept.iter().all(|r| s.ids.contains(&r.id))
            && s.all.iter().any(|r| r.kind == RecordKind::Dropped)
    })
    .await;
    let report = seen
        .all
        .iter()
        .find(|r| r.kind == RecordKind::Dropped)
        .unwrap();
    assert_eq!(report.id, "gw1/outbox/dropped/1");
    assert_eq!(
        report.fields,
        vec![
            ("window".into(), expected.window as f64),
            ("alert".into(), 0.0),
            ("status".into(), 0.0)
        ]
    );
    // The oldest windows were the ones dropped, and they never went out.
    for r in &windows[..expected.window as usize] {
        assert!(!seen.ids.contains(&r.id), "{} was dropped", r.id);
    }
    let st = ob.stats(&db).unwrap();
    assert_eq!(st.unreported, DropCounts::default());
    assert_eq!(st.dropped, expected);
    assert_eq!(up.counters().dropped, expected);
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_holds() {
    let broker = start_rumqttd();
    let mut rx = consumer(broker).await;
    let tmp = TempDb::new("bandwidth");
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let mut cfg = config(broker);
    cfg.max_batch_records = 10;
    cfg.bandwidth = Some(Bandwidth {
        bytes_per_sec: 50_000,
        burst_bytes: 4096,
    });
    let recs = stream(300);
    put_chunks(&ob, &db, &recs);
    let started = std::time::Instant::now();
    let up = Uplink::start(cfg, db.clone(), ob.clone()).unwrap();
    let mut seen = Seen::default();
    seen.until(&mut rx, |s| s.ids.len() >= recs.len()).await;
    let took = started.elapsed().as_secs_f64();
    let c = up.counters();
    // Everything past the first burst went at the rate at most.
    let floor = (c.bytes_sent - 4096) as f64 / 50_000.0;
    assert!(
        took >= floor * 0.95,
        "{took:.3} s for {} bytes",
        c.bytes_sent
    );
    assert!(
        took < floor * 3.0 + 2.0,
        "far slower than the cap: {took:.3} s"
    );
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_republishes_everything_unacknowledged() {
    let broker = start_rumqttd();
    let link = Link::start(broker).await;
    let mut rx = consumer(broker).await;
    let tmp = TempDb::new("process-restart");
    let recs = stream(1000);
    let mut seen = Seen::default();
    {
        // First life: half goes out, then the cloud is away while the rest
        // is staged, then the process stops (rumqttc keeps nothing).
        let db = Arc::new(tmp.open());
        let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
        let up = Uplink::start(config(link.port), db.clone(), ob.clone()).unwrap();
        put_chunks(&ob, &db, &recs[..500]);
        wait_acked(&up, 500).await;
        link.cut();
        wait_link(&up, false).await;
        put_chunks(&ob, &db, &recs[500..]);
        up.shutdown().await;
    }
    seen.until(&mut rx, |s| s.ids.len() >= 500).await;
    link.restore();
    // Second life: acknowledgements were in memory, so the first 500 may go
    // again (the same ids); the other 500 must.
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    assert!(ob.stats(&db).unwrap().records >= 500);
    let up = Uplink::start(config(link.port), db.clone(), ob.clone()).unwrap();
    seen.until(&mut rx, |s| s.ids.len() >= recs.len()).await;
    assert_delivered_once_in_key_order(&seen, &recs);
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_publish_is_skipped_not_a_stall() {
    let broker = start_rumqttd();
    let mut rx = consumer(broker).await;
    let tmp = TempDb::new("oversized");
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let mut cfg = config(broker);
    cfg.max_batch_bytes = 4096;
    let mut huge = window(1, 5);
    huge.key = "k".repeat(20_000);
    huge.id = "gw1/w/huge/0".into();
    let mut recs = stream(20);
    recs.insert(10, huge);
    ob.put(&db, &recs).unwrap();
    let up = Uplink::start(cfg, db.clone(), ob.clone()).unwrap();
    let mut seen = Seen::default();
    seen.until(&mut rx, |s| s.ids.len() >= 20).await;
    wait_acked(&up, 21).await;
    assert!(!seen.ids.contains("gw1/w/huge/0"));
    let c = up.counters();
    assert_eq!(c.oversized_records, 1, "{c:?}");
    assert_eq!(c.connection_errors, 0, "{c:?}");
    up.shutdown().await;
}
