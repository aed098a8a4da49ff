//! Outputs per second through outbox + uplink to a loopback rumqttd, beside
//! a plain rumqttc publisher of the same payloads in the same run, and bytes
//! on the wire per aggregate, CBOR against JSON.
//!
//! ```text
//! cargo run --release -p weir-cloud-sync --example outbox_bench [-- RECORDS]
//! ```
//!
//! The records are W1 window outputs (1,000 sensors; count, mean, min, max,
//! stddev and the detector's verdict). The outbox side includes staging:
//! records are put in durable commits of 1,000 (as the agent's checkpoint
//! interval would) while the uplink publishes batches of 500 with 8 in
//! flight. The plain side publishes the same batch payloads with the same
//! window of 8 QoS 1 messages in flight and nothing on disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use weir_cloud_sync::outbox::{Outbox, OutboxConfig};
use weir_cloud_sync::uplink::{Uplink, UplinkConfig};
use weir_cloud_sync::wire::{self, record_id, Anomaly, Batch, OutputRecord, RecordKind};

const BATCH: usize = 500;
const INFLIGHT: usize = 8;

fn record(i: u64) -> OutputRecord {
    let sensor = i % 1000;
    let k = (i / 1000) as i64;
    let start = 1_700_000_000_000 + k * 10_000;
    let key = format!("s{sensor:04}");
    let x = (i as f64 * 0.618_033_988_75).fract();
    OutputRecord {
        id: record_id("gw1", "w1", &key, start, 0),
        kind: RecordKind::Window,
        key,
        op: "w1".into(),
        start,
        end: start + 10_000,
        fields: vec![
            ("count".into(), 10.0),
            ("mean".into(), 20.0 + x),
            ("min".into(), 18.0 + x / 3.0),
            ("max".into(), 22.0 + x / 7.0),
            ("stddev".into(), 0.5 + x / 11.0),
        ],
        anomaly: Some(Anomaly {
            flag: false,
            score: x / 13.0,
        }),
        emitted_at: start + 12_001,
        text: Vec::new(),
    }
}

fn start_rumqttd() -> u16 {
    // Bind :0, read the port, close it, give it to rumqttd (which does not
    // report what it bound): a small race, fine for a benchmark.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 64 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rumqttd did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    port
}

/// Publishes every payload with QoS 1, at most `INFLIGHT` unacknowledged,
/// and returns when the last PUBACK is in.
async fn plain(port: u16, payloads: &[Vec<u8>]) -> Duration {
    let mut o = MqttOptions::new("plain-bench", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(64);
    let (client, mut el) = AsyncClient::new(o, INFLIGHT + 16);
    // Wait for the connection before timing.
    loop {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = el.poll().await {
            break;
        }
    }
    let t = Instant::now();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < payloads.len() {
        while sent < payloads.len() && sent - acked < INFLIGHT {
            client
                .try_publish(
                    "bench/plain",
                    QoS::AtLeastOnce,
                    false,
                    payloads[sent].clone(),
                )
                .expect("request queue");
            sent += 1;
        }
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) | Ok(_) => {}
            Err(e) => panic!("plain publisher: {e}"),
        }
    }
    t.elapsed()
}

async fn through_outbox(port: u16, recs: &[OutputRecord]) -> (Duration, u64) {
    let dir = std::env::temp_dir().join(format!("weir-outbox-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = Arc::new(redb::Database::create(dir.join("bench.redb")).expect("redb"));
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 34)).expect("outbox");
    let mut cfg = UplinkConfig::new("gw1", "127.0.0.1", port);
    cfg.max_batch_records = BATCH;
    cfg.max_batch_bytes = 1 << 20;
    cfg.max_inflight = INFLIGHT as u16;
    let up = Uplink::start(cfg, db.clone(), ob.clone()).expect("uplink");
    let mut w = up.watch();
    w.wait_for(|s| s.connected).await.expect("connected");
    let t = Instant::now();
    let staging = {
        let (db, ob, recs) = (db.clone(), ob.clone(), recs.to_vec());
        tokio::task::spawn_blocking(move || {
            for c in recs.chunks(1000) {
                ob.put(&db, c).expect("put");
            }
        })
    };
    let n = recs.len() as u64;
    w.wait_for(|s| s.acked_through >= n)
        .await
        .expect("all acknowledged");
    let took = t.elapsed();
    staging.await.expect("staging");
    let bytes = up.counters().bytes_sent;
    up.shutdown().await;
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    (took, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let recs: Vec<OutputRecord> = (0..n).map(record).collect();
    let encoded: Vec<Vec<u8>> = recs.iter().map(OutputRecord::to_cbor).collect();
    let payloads: Vec<Vec<u8>> = encoded
        .chunks(BATCH)
        .map(|c| wire::encode_batch_raw("gw1", c.iter().map(Vec::as_slice)))
        .collect();

    // Bytes on the wire per aggregate record, batched and alone.
    let cbor_batched: usize = payloads.iter().map(Vec::len).sum();
    let json_batched: usize = recs
        .chunks(BATCH)
        .map(|c| {
            Batch {
                gateway: "gw1".into(),
                records: c.to_vec(),
            }
            .to_json()
            .len()
        })
        .sum();
    let one = Batch {
        gateway: "gw1".into(),
        records: vec![recs[1].clone()],
    };
    println!(
        "bytes per aggregate (W1 window: 5 aggregates + verdict, id {} chars):",
        recs[0].id.len()
    );
    println!(
        "  batched by {BATCH}: CBOR {:.1} B, JSON {:.1} B (JSON/CBOR {:.2}x)",
        cbor_batched as f64 / n as f64,
        json_batched as f64 / n as f64,
        json_batched as f64 / cbor_batched as f64
    );
    println!(
        "  one per message:  CBOR {} B, JSON {} B",
        one.to_cbor().len(),
        one.to_json().len()
    );

    // Staging alone: durable commits of 1,000 records, no uplink.
    let staged = {
        let dir = std::env::temp_dir().join(format!("weir-outbox-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = redb::Database::create(dir.join("stage.redb")).expect("redb");
        let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 34)).expect("outbox");
        let t = Instant::now();
        for c in recs.chunks(1000) {
            ob.put(&db, c).expect("put");
        }
        let took = t.elapsed();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
        took
    };
    println!(
        "staging alone (durable commits of 1,000): {:.0} outputs/s",
        n as f64 / staged.as_secs_f64()
    );

    let port = start_rumqttd();
    // Warm up both paths once, then alternate.
    let _ = plain(port, &payloads[..payloads.len().min(20)]).await;
    let mut plain_rates = Vec::new();
    let mut outbox_rates = Vec::new();
    for round in 0..3 {
        let p = plain(port, &payloads).await;
        let (o, bytes) = through_outbox(port, &recs).await;
        let pr = n as f64 / p.as_secs_f64();
        let or = n as f64 / o.as_secs_f64();
        println!(
            "round {round}: plain {pr:>10.0} outputs/s ({:.3} s), outbox+uplink {or:>10.0} outputs/s ({:.3} s, {:.1} B/output on the wire), ratio {:.2}",
            p.as_secs_f64(),
            o.as_secs_f64(),
            bytes as f64 / n as f64,
            or / pr
        );
        plain_rates.push(pr);
        outbox_rates.push(or);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (pm, om) = (med(&mut plain_rates), med(&mut outbox_rates));
    println!(
        "median of 3, {n} outputs: plain publisher {pm:.0} outputs/s, outbox+uplink {om:.0} outputs/s, ratio {:.2}",
        om / pm
    );
}
