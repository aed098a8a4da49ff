//! # weir-e2e
//!
//! End-to-end tests of the gateway agent against real brokers: rumqttd in
//! the test process (`weir_agent::demo::start_broker`), rumqttd in a child
//! process that can be killed (`weir-e2e-agent broker PORT`), and Debian's
//! `mosquitto`. The agent runs in-process ([`InProcAgent`]) or as a child
//! process ([`AgentProc`]) that the crash tests SIGKILL.
//!
//! The oracle is a count: the outputs received (deduplicated by id) must
//! equal, id for id and byte for byte, what an uninterrupted engine emits
//! for the same input ([`reference()`]), and no id may arrive with two
//! different payloads. Waits are on conditions with deadlines, never fixed
//! sleeps.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_agent::gateway::OutputFormat;
use weir_agent::run::output::OutputEncoder;

/// The pipeline of the end-to-end tests: JSON readings `{"k":…,"t":…,"v":…}`
/// on `plant/<key>/v`, 1 s tumbling windows with a 2 s bound.
pub const PIPELINE: &str = r#"
name = "e2e"
[[source]]
name = "s"
fields = ["v"]
max_out_of_orderness = "2s"
[source.mqtt]
topics = ["plant/+/v"]
qos = 1
decode = { format = "json", key = "k", ts = "t", ts_unit = "ms" }
[[window]]
id = "w"
source = "s"
field = "v"
kind = "tumbling"
size = "1s"
aggregates = ["count", "mean", "min", "max", "stddev"]
detect = { on = "mean", kind = "ewma_z", alpha = 0.1, k = 3.0, warmup = 5 }
"#;

/// The gateway id the tests use.
pub const GATEWAY: &str = "e2e";

/// A fresh temporary folder, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/weir-e2e-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("weir-e2e-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free loopback port (bound and released: another process could take
/// it in between, which is unlikely on a test machine).
///
/// Never the same port twice in one process: tests run in parallel, and
/// the kernel may hand a just-released port to the next bind.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until `cond` holds, checking every few ms, or panics with `what`
/// after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One input message.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// JSON payload.
    pub payload: String,
    /// Key, timestamp and value, as the decoder will read them.
    pub key: String,
    /// Event time, ms.
    pub ts: i64,
    /// The value.
    pub v: f64,
}

/// `n` readings over `keys` sensors, 1 ms apart, values a sine plus a
/// deterministic wobble with a spike now and then (so windows get flagged).
pub fn input(n: usize, keys: usize, t0: i64) -> Vec<Msg> {
    (0..n)
        .map(|i| {
            let key = format!("s{:02}", i % keys);
            let ts = t0 + i as i64;
            let mut v = 20.0 + (i as f64 / 3_000.0).sin() * 2.0 + ((i * 7919) % 101) as f64 / 100.0;
            if i % 9_973 == 0 && i > 0 {
                v += 40.0;
            }
            let v = (v * 1e4).round() / 1e4;
            Msg {
                topic: format!("plant/{key}/v"),
                payload: format!("{{\"k\":\"{key}\",\"t\":{ts},\"v\":{v}}}"),
                key,
                ts,
                v,
            }
        })
        .collect()
}

/// What an uninterrupted engine emits for `msgs`, in order, as the agent
/// would publish it: id → JSON payload (window results only, no end of
/// input: windows still open at the end are not emitted).
pub fn reference(pipeline: &str, msgs: &[Msg]) -> HashMap<String, Vec<u8>> {
    let pf = weir_agent::pipeline_file::parse("e2e.toml", pipeline).expect("pipeline");
    let enc = OutputEncoder::new(GATEWAY, "weir", OutputFormat::Json, &pf.spec);
    let mut engine = pf.spec.clone().build().expect("engine");
    let mut out = Vec::new();
    let mut map = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        // The clock follows the event time: the readings are neither
        // ahead of it (future guard) nor quiet for a key's idle timeout.
        let _ = engine.handle_sample(m.ts, 0, &m.key, m.ts, &[m.v]);
        while let Some(o) = engine.poll_output() {
            let key = match &o {
                weir_core::output::Output::Window(w) => engine.key_name(w.key).to_string(),
                _ => continue,
            };
            enc.encode(&o, &key, i as u64 + 1, true, &mut out);
        }
        for e in out.drain(..) {
            if e.channel == weir_agent::run::output::Channel::Windows {
                map.insert(e.id, e.payload);
            }
        }
    }
    map
}

/// Writes a `gateway.toml` for broker `addr` into `dir`, with `extra` lines
/// appended (TOML tables), and the test pipeline beside it.
pub fn gateway_file(dir: &Path, addr: SocketAddr, extra: &str) -> PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(dir.join("pipeline.toml"), PIPELINE).expect("write pipeline");
    let metrics = if extra.contains("[metrics]") {
        ""
    } else {
        "[metrics]\nlisten = \"\"\n"
    };
    let text = format!(
        "id = \"{GATEWAY}\"\npipeline = \"pipeline.toml\"\ndata_dir = \"data\"\n[broker]\nurl = \"mqtt://{addr}\"\nkeep_alive = \"5s\"\n[journal]\ngroup_commit = \"5ms\"\n[checkpoint]\ninterval = \"300ms\"\n{metrics}{extra}"
    );
    std::fs::write(&p, text).expect("write gateway.toml");
    p
}

fn client(addr: SocketAddr, id: &str, clean: bool) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(clean)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(100);
    Client::new(o, 1_000)
}

/// Gives client id `client_id` a persistent session subscribed to
/// `filter` (then disconnects), as a gateway that ran before would have:
/// the broker queues matching messages for it from now on.
pub fn precreate_session(addr: SocketAddr, client_id: &str, filter: &str) {
    let (c, mut conn) = client(addr, client_id, false);
    c.subscribe(filter, QoS::AtLeastOnce).expect("subscribe");
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev {
            break;
        }
    }
    c.disconnect().expect("disconnect");
    for ev in conn.iter() {
        if ev.is_err() {
            break;
        }
    }
}

/// Publishes every message at QoS 1 and returns once the broker has
/// acknowledged them all (reconnecting as needed; panics after `timeout`).
pub fn publish_all(addr: SocketAddr, msgs: &[Msg], timeout: Duration) {
    publish_raw(
        addr,
        msgs.iter()
            .map(|m| (m.topic.clone(), m.payload.clone().into_bytes())),
        timeout,
    )
}

/// Publishes `(topic, payload)` pairs at QoS 1; returns when all are acked.
pub fn publish_raw(
    addr: SocketAddr,
    msgs: impl Iterator<Item = (String, Vec<u8>)>,
    timeout: Duration,
) {
    let msgs: Vec<_> = msgs.collect();
    let id = format!("e2e-pub-{}-{}", std::process::id(), free_port());
    let (c, mut conn) = client(addr, &id, false);
    let n = msgs.len();
    let pubber = std::thread::spawn(move || {
        for (t, p) in msgs {
            if c.publish(t, QoS::AtLeastOnce, false, p).is_err() {
                return c;
            }
        }
        c
    });
    let end = Instant::now() + timeout;
    let mut acked = 0;
    let mut reconnects = 0;
    while acked < n {
        assert!(
            Instant::now() < end,
            "publisher: only {acked} of {n} acknowledged in {timeout:?}"
        );
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) if acked > 0 || reconnects > 0 => {
                reconnects += 1;
                eprintln!(
                    "publisher: reconnected (session_present {}) after {acked} acks",
                    c.session_present
                );
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                eprintln!("publisher: connection error: {e}");
                std::thread::sleep(Duration::from_millis(50))
            }
        }
    }
    let c = pubber.join().expect("publisher thread");
    let _ = c.disconnect();
}

/// What a [`Collector`] has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// id → payload of the first copy.
    pub by_id: HashMap<String, Vec<u8>>,
    /// Copies beyond the first (same payload).
    pub duplicates: u64,
    /// Ids seen with two different payloads.
    pub conflicts: Vec<String>,
    /// Messages received.
    pub messages: u64,
}

/// Subscribes to the agent's window outputs and collects them by id.
#[derive(Clone)]
pub struct Collector {
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

impl Collector {
    /// Connects to `addr` and subscribes to `filter` (a persistent session,
    /// so a broker that keeps sessions queues what comes while it is away).
    pub fn start(addr: SocketAddr, filter: &str) -> Collector {
        let seen: Arc<(Mutex<Seen>, Condvar)> = Default::default();
        let s2 = seen.clone();
        let id = format!("e2e-col-{}-{}", std::process::id(), free_port());
        let (c, mut conn) = client(addr, &id, false);
        let filter = filter.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _keep = c.clone();
            let mut ready = Some(ready_tx);
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: serde_json::Value = match serde_json::from_slice(&p.payload) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        let id = v["id"].as_str().unwrap_or("").to_string();
                        let (m, cv) = &*s2;
                        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
                        s.messages += 1;
                        match s.by_id.get(&id) {
                            Some(old) if *old == p.payload[..] => s.duplicates += 1,
                            Some(_) => s.conflicts.push(id),
                            None => {
                                s.by_id.insert(id, p.payload.to_vec());
                            }
                        }
                        cv.notify_all();
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("collector subscribed");
        Collector { seen }
    }

    /// Distinct ids seen so far.
    pub fn distinct(&self) -> usize {
        self.seen
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// Waits until at least `n` distinct ids arrived; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let (m, cv) = &*self.seen;
        let end = Instant::now() + timeout;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        while s.by_id.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Runs `f` on what was seen.
    pub fn with<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.seen.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Asserts the outputs equal `expected` exactly: every id present with
    /// the same bytes, none extra, no id with two payloads.
    pub fn assert_matches(&self, expected: &HashMap<String, Vec<u8>>) {
        self.with(|s| {
            assert!(
                s.conflicts.is_empty(),
                "ids with two different payloads: {:?}",
                &s.conflicts[..s.conflicts.len().min(5)]
            );
            let mut missing: Vec<_> = expected
                .keys()
                .filter(|k| !s.by_id.contains_key(*k))
                .collect();
            missing.sort();
            assert!(
                missing.is_empty(),
                "{} of {} outputs missing, e.g. {:?}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(5)]
            );
            let extra: Vec<_> = s
                .by_id
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .collect();
            assert!(
                extra.is_empty(),
                "{} unexpected outputs, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(5)]
            );
            let mut differ: Vec<_> = expected
                .iter()
                .filter(|(id, want)| s.by_id[*id] != **want)
                .map(|(id, want)| {
                    format!(
                        "{id}:\n  got  {}\n  want {}",
                        String::from_utf8_lossy(&s.by_id[id]),
                        String::from_utf8_lossy(want)
                    )
                })
                .collect();
            differ.sort();
            assert!(
                differ.is_empty(),
                "{} of {} outputs differ from an uninterrupted run:\n{}",
                differ.len(),
                expected.len(),
                differ[..differ.len().min(6)].join("\n")
            );
        })
    }
}

/// The agent binary (`weir` built in this package; cargo builds it for the
/// integration tests, beside their own binaries' `deps/` folder).
pub fn agent_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join("weir-e2e-agent");
    assert!(
        p.exists(),
        "{} is missing: run the tests with cargo test",
        p.display()
    );
    p
}

/// `weir run` as a child process, its output in `<dir>/agent-<n>.log`.
#[derive(Debug)]
pub struct AgentProc {
    /// The process.
    pub child: Child,
}

impl AgentProc {
    /// Starts `weir run --config <gateway>`.
    pub fn start(gateway: &Path, log: &Path) -> AgentProc {
        let out = std::fs::File::create(log).expect("agent log");
        let child = Command::new(agent_exe())
            .arg("run")
            .arg("--config")
            .arg(gateway)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start the agent");
        AgentProc { child }
    }

    /// Waits until the log at `log` contains `needle` (e.g. `connected`).
    pub fn wait_log(&self, log: &Path, needle: &str, timeout: Duration) {
        wait_until(timeout, &format!("`{needle}` in {}", log.display()), || {
            std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle))
        });
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status (panics after `timeout`).
    pub fn terminate(mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("the agent did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The agent in this process, on its own thread.
pub struct InProcAgent {
    /// Its handle (metrics, stop).
    pub handle: weir_agent::run::Handle,
    thread: std::thread::JoinHandle<Result<weir_agent::run::RunSummary, String>>,
}

impl std::fmt::Debug for InProcAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcAgent")
    }
}

impl InProcAgent {
    /// Loads `gateway` and runs the agent; returns once it has recovered.
    pub fn start(gateway: &Path) -> InProcAgent {
        let cfg = weir_agent::gateway::load(gateway).expect("gateway.toml");
        let pf = weir_agent::pipeline_file::load(&cfg.pipeline).expect("pipeline");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            weir_agent::run::run(cfg, pf, move |h| {
                let _ = tx.send(h);
            })
            .map_err(|e| e.to_string())
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("agent started");
        InProcAgent { handle, thread }
    }

    /// Waits until the broker has acknowledged more of the agent's
    /// subscriptions than `before` (`Metrics::subscribe_acks`): a broker
    /// without the agent's session drops what is published until then.
    pub fn wait_subscribed(&self, before: u64) {
        wait_until(Duration::from_secs(30), "the agent's subscription", || {
            self.metrics()
                .subscribe_acks
                .load(std::sync::atomic::Ordering::Relaxed)
                > before
        });
    }

    /// The agent's counters.
    pub fn metrics(&self) -> &weir_agent::run::metrics::Metrics {
        &self.handle.metrics
    }

    /// Stops it as on SIGTERM and returns its summary.
    pub fn stop(self) -> weir_agent::run::RunSummary {
        self.handle.stop();
        self.thread
            .join()
            .expect("agent thread")
            .expect("agent run")
    }
}

/// An in-process broker and a gateway folder (`TempDir::new(name)`) whose
/// pipeline is `sql` (`pipeline.sql`): the broker's address, the folder and
/// its gateway.toml.
pub fn sql_gateway(name: &str, sql: &str) -> (SocketAddr, TempDir, PathBuf) {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new(name);
    let gw = gateway_file(&dir.0, addr, "");
    std::fs::write(dir.0.join("pipeline.sql"), sql).expect("write pipeline.sql");
    let text = std::fs::read_to_string(&gw).expect("gateway.toml");
    std::fs::write(&gw, text.replace("pipeline.toml", "pipeline.sql")).expect("gateway.toml");
    (addr, dir, gw)
}

/// Wall-clock ms since the epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `weir run` in this process with the SQL pipeline `sql` against a
/// fresh rumqttd broker: collects `topics` from before the agent starts,
/// publishes `msgs`, waits until `expected` distinct outputs arrived on the
/// first topic and every reading is journaled, and stops the agent.
/// Returns the collectors, in the order of `topics`.
pub fn run_sql_agent(
    name: &str,
    sql: &str,
    topics: &[&str],
    msgs: &[Msg],
    expected: usize,
) -> Vec<Collector> {
    let (addr, _dir, gw) = sql_gateway(name, sql);
    let cols: Vec<Collector> = topics.iter().map(|t| Collector::start(addr, t)).collect();
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    publish_all(addr, msgs, Duration::from_secs(120));
    assert!(
        cols[0].wait_for(expected, Duration::from_secs(120)),
        "only {} of {expected} outputs arrived on {}",
        cols[0].distinct(),
        topics[0]
    );
    wait_until(Duration::from_secs(60), "every reading journaled", || {
        agent
            .metrics()
            .readings
            .load(std::sync::atomic::Ordering::Relaxed)
            == msgs.len() as u64
    });
    let s = agent.stop();
    assert_eq!(s.readings, msgs.len() as u64);
    cols
}

/// Builds examples/functions into `target` (a test's
/// `CARGO_TARGET_TMPDIR` folder); the W1 module's path, or `None`, with a
/// message, without the wasm32 target.
pub fn w1_module(target: &Path) -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !Path::new(&sysroot)
        .join("lib/rustlib/wasm32-unknown-unknown")
        .exists()
    {
        eprintln!("SKIPPED: rustup target add wasm32-unknown-unknown");
        return None;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/functions/Cargo.toml");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .current_dir(manifest.parent().expect("folder"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo");
    assert!(st.success(), "building examples/functions failed");
    Some(target.join("wasm32-unknown-unknown/release/weir_fn_w1.wasm"))
}

/// The gateway's retained pipeline statuses (`weir/<id>/pipeline/status`)
/// as they arrive.
#[derive(Clone)]
pub struct Statuses(Arc<(Mutex<Vec<weir_cloud_sync::update::Status>>, Condvar)>);

impl Statuses {
    /// Subscribes on the broker at `addr`; returns once subscribed.
    pub fn start(addr: SocketAddr) -> Statuses {
        let s = Statuses(Arc::default());
        let s2 = s.clone();
        let id = format!("e2e-status-{}-{}", std::process::id(), free_port());
        let (c, mut conn) = Client::new(MqttOptions::new(id, "127.0.0.1", addr.port()), 10);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _keep = c.clone();
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(
                            format!("weir/{GATEWAY}/pipeline/status"),
                            QoS::AtLeastOnce,
                        );
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let st = weir_cloud_sync::update::Status::from_cbor(&p.payload)
                            .expect("a CBOR status");
                        s2.0 .0.lock().unwrap().push(st);
                        s2.0 .1.notify_all();
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("status subscription");
        s
    }

    /// How many statuses have arrived.
    pub fn len(&self) -> usize {
        self.0 .0.lock().unwrap().len()
    }

    /// Whether none has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for a status after the first `from` that satisfies `f`.
    pub fn wait(
        &self,
        from: usize,
        what: &str,
        f: impl Fn(&weir_cloud_sync::update::Status) -> bool,
    ) -> weir_cloud_sync::update::Status {
        self.wait_n(from, 1, what, f)
    }

    /// Waits for `n` statuses after the first `from` that satisfy `f`;
    /// returns the first.
    pub fn wait_n(
        &self,
        from: usize,
        n: usize,
        what: &str,
        f: impl Fn(&weir_cloud_sync::update::Status) -> bool,
    ) -> weir_cloud_sync::update::Status {
        let end = Instant::now() + Duration::from_secs(30);
        let mut v = self.0 .0.lock().unwrap();
        loop {
            let mut hits = v.iter().skip(from).filter(|s| f(s));
            if let (Some(s), true) = (hits.clone().next(), hits.nth(n - 1).is_some()) {
                return s.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for a status: {what}; got {:?}",
                &v[from.min(v.len())..]
            );
            v = self.0 .1.wait_timeout(v, left).unwrap().0;
        }
    }
}

/// Debian's mosquitto as a child process on `port`, without persistence.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    conf: PathBuf,
}

/// Where Debian installs mosquitto.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether mosquitto is installed; in CI (`CI` set) its absence is an error.
pub fn have_mosquitto() -> bool {
    let ok = Path::new(MOSQUITTO).exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto is not installed (apt-get install mosquitto)"
        );
        eprintln!("skipping: {MOSQUITTO} is not installed (apt-get install mosquitto)");
    }
    ok
}

impl Mosquitto {
    /// Starts mosquitto on a free port with a config written to `dir`.
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n{}",
                std::env::var("WEIR_MOSQUITTO_LOG").map(|f| format!("log_type all\nlog_dest file {f}\n")).unwrap_or_default()
            ),
        )
        .expect("mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
        };
        m.restart();
        m
    }

    /// The broker address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (SIGKILL: no session survives, it has no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts it on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let addr = self.addr();
        wait_until(Duration::from_secs(10), "mosquitto to accept", || {
            // Ours, not another process on that port: it must still run.
            let alive = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()));
            assert!(
                alive,
                "mosquitto exited at start (port {} taken?)",
                self.port
            );
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the `openssl` command is there; in CI (`CI` set) its absence
/// is an error.
pub fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is not installed (apt-get install openssl)"
        );
        eprintln!("skipping: openssl is not installed (apt-get install openssl)");
    }
    ok
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client
/// certificate in `dir` with the `openssl` command (EC P-256, 2 days):
/// `ca.pem`, `server.{pem,key}`, `client.{pem,key}`.
pub fn tls_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "openssl {args:?} failed (is openssl installed?)");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let split = |s: String| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let args = split(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=weir-test-ca"
    ));
    run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, cn) in [("server", "127.0.0.1"), ("client", "weir-e2e")] {
        let req = split(format!(
            "req {ec} -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ));
        run(&req.iter().map(String::as_str).collect::<Vec<_>>());
        let sign = split(format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
        ));
        run(&sign.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // mosquitto started as root drops to its own user before it reads them.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for f in ["server.key", "server.pem", "ca.pem"] {
        let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
    }
}

impl Mosquitto {
    /// Starts mosquitto with `extra` config lines after a plain listener on
    /// a free port (e.g. a TLS listener); waits for the plain one.
    pub fn start_with(dir: &Path, extra: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            // `per_listener_settings` is global: it must come first. The
            // queue per client is raised from mosquitto's 1,000 so that a
            // debug-build agent on a loaded machine falls behind without the
            // broker dropping messages (a test failure that is not weir's).
            if let Some(rest) = extra.strip_prefix("per_listener_settings true\n") {
                format!("per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n{rest}")
            } else {
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n{extra}")
            },
        )
        .expect("mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
        };
        m.restart();
        m
    }
}
