//! The uplink: publishes the outbox to the cloud broker (MQTT 3.1.1, QoS 1)
//! and acknowledges records in the outbox only after the broker's PUBACK.
//!
//! Two tokio tasks: the *driver* polls rumqttc's [`EventLoop`] (and nothing
//! else, so the event loop is never cancelled mid-write) and forwards
//! connection events; the *publisher* reads the outbox, batches records
//! into [`crate::wire`] envelopes and publishes them with the
//! [`AsyncClient`], within a window of `max_inflight` unacknowledged
//! batches and the bandwidth cap.
//!
//! # Sessions and republishing
//!
//! The outbox is the session. The uplink connects with a clean session and,
//! on every CONNACK, drops whatever rumqttc kept from the last connection
//! and publishes again from the first unacknowledged record. That covers
//! what rumqttc does not: it drops in-flight QoS 1 publishes when the broker
//! comes back without the session (`session_present == false`), and keeps
//! nothing across a process restart. To make the cut exact, the driver
//! waits after a connection error until the publisher has stopped, then
//! empties rumqttc's request queue ([`EventLoop::clean`]) before
//! reconnecting: no publish of the old connection reaches the new one, so
//! PUBACKs are matched to batches without guessing. The cost: after a
//! reconnect up to `max_inflight` batches that the broker did receive are
//! sent again; consumers drop duplicates by record id.
//!
//! A batch's records are acknowledged in the outbox when its PUBACK has come
//! and every earlier batch's has too (acknowledgements are a prefix).
//!
//! Reconnects back off exponentially (`backoff_min` doubling to
//! `backoff_max`) with jitter (each delay drawn from \[d/2, d\]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use redb::Database;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::outbox::{DropCounts, Outbox, PendingRecord};
use crate::wire::{self, Batch, OutputRecord};

/// An uplink setup error: what, and which file.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A TLS file could not be read.
    #[error("uplink: cannot read {what} {path}: {source}")]
    TlsFile {
        /// Which file (server CA, client certificate, client key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("uplink: {0}")]
    Config(String),
}

/// TLS to the cloud broker (rustls, ring provider). Works the same against
/// any broker that speaks MQTT over TLS: no vendor code.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) that signed the server's.
    pub ca: PathBuf,
    /// PEM client certificate (chain) for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// ALPN protocols (e.g. `x-amzn-mqtt-ca` for AWS IoT Core on port 443).
    pub alpn: Option<Vec<Vec<u8>>>,
}

/// How batches are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// CBOR envelope (default; `docs/wire.md`).
    Cbor,
    /// The JSON form, for consumers that only read JSON.
    Json,
}

/// A bandwidth cap for metered links: a token bucket on published bytes
/// (payload and topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained rate.
    pub bytes_per_sec: u64,
    /// Bucket size: how much may go at once after a quiet period. A batch
    /// larger than the bucket goes when the bucket is full.
    pub burst_bytes: u64,
}

/// The uplink's configuration. [`UplinkConfig::new`] fills in defaults.
#[derive(Clone, Debug)]
pub struct UplinkConfig {
    /// This gateway's id (in every envelope).
    pub gateway: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (default `weir-<gateway>`).
    pub client_id: String,
    /// Topic batches go to (default `weir/<gateway>/up`).
    pub topic: String,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsFiles>,
    /// MQTT username and password.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive (default 30 s).
    pub keep_alive: Duration,
    /// Records per batch at most (default 500).
    pub max_batch_records: usize,
    /// Payload bytes per batch at most (default 64 KiB). rumqttc's packet
    /// limit (10 KiB by default) is raised to fit a batch (4× for JSON); a
    /// record too large for it even alone is skipped and counted in
    /// [`UplinkCounters::oversized_records`].
    pub max_batch_bytes: usize,
    /// Unacknowledged batches at most (default 8).
    pub max_inflight: u16,
    /// Bandwidth cap (default none).
    pub bandwidth: Option<Bandwidth>,
    /// First reconnect delay (default 500 ms).
    pub backoff_min: Duration,
    /// Largest reconnect delay (default 60 s).
    pub backoff_max: Duration,
    /// How often the outbox is looked at without a notification (default 1 s).
    pub poll_interval: Duration,
    /// Acknowledged records are deleted in the agent's next stage; when
    /// nothing is staged for this long, the uplink deletes them itself
    /// (default 10 s).
    pub flush_acks_after: Duration,
    /// Envelope encoding (default CBOR).
    pub encoding: Encoding,
}

impl UplinkConfig {
    /// Defaults for `gateway` publishing to `host:port`.
    pub fn new(gateway: impl Into<String>, host: impl Into<String>, port: u16) -> UplinkConfig {
        let gateway = gateway.into();
        UplinkConfig {
            client_id: format!("weir-{gateway}"),
            topic: format!("weir/{gateway}/up"),
            gateway,
            host: host.into(),
            port,
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(30),
            max_batch_records: 500,
            max_batch_bytes: 64 * 1024,
            max_inflight: 8,
            bandwidth: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            flush_acks_after: Duration::from_secs(10),
            encoding: Encoding::Cbor,
        }
    }
}

/// The uplink's counters, for the agent's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Records published (republished ones included).
    pub published_records: u64,
    /// Batches published.
    pub published_batches: u64,
    /// Records the broker acknowledged (a record in a batch sent twice and
    /// acknowledged twice counts twice).
    pub acked_records: u64,
    /// Batches acknowledged.
    pub acked_batches: u64,
    /// Records published again after a reconnect (in this process).
    pub republished_records: u64,
    /// Payload and topic bytes handed to the connection.
    pub bytes_sent: u64,
    /// Connection errors (failed connects and dropped connections).
    pub connection_errors: u64,
    /// Successful connects.
    pub connects: u64,
    /// Records skipped because even alone they exceed the packet limit
    /// (`max_batch_bytes`); they are acknowledged in the outbox.
    pub oversized_records: u64,
    /// Records the outbox dropped under its budget, since it was created.
    pub dropped: DropCounts,
}

#[derive(Default)]
struct Counters {
    published_records: AtomicU64,
    published_batches: AtomicU64,
    acked_records: AtomicU64,
    acked_batches: AtomicU64,
    republished_records: AtomicU64,
    bytes_sent: AtomicU64,
    connection_errors: AtomicU64,
    connects: AtomicU64,
    oversized_records: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The state of the link to the cloud broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Connected (CONNACK received, no error since).
    pub connected: bool,
    /// Highest outbox sequence acknowledged by the broker.
    pub acked_through: u64,
    /// Highest outbox sequence handed to the connection (0 after a
    /// reconnect until the first publish); above `acked_through` while
    /// publishes are in flight.
    pub sent_through: u64,
    /// Connection errors so far (as [`UplinkCounters::connection_errors`]).
    pub errors: u64,
}

/// A running uplink. Dropping it stops its tasks.
pub struct Uplink {
    counters: Arc<Counters>,
    state: watch::Receiver<LinkState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    db: Arc<Database>,
    outbox: Outbox,
    client: AsyncClient,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// Installs rustls' ring provider as the process default, once. Harmless
/// when another part of the process installed one first.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, UplinkError> {
    std::fs::read(path).map_err(|source| UplinkError::TlsFile {
        what,
        path: path.clone(),
        source,
    })
}

/// The largest MQTT packet the uplink sends: a full batch (JSON is up to
/// ~2.6× its CBOR size, hence the factor) plus the topic and fixed header.
fn packet_limit(c: &UplinkConfig) -> usize {
    let factor = match c.encoding {
        Encoding::Cbor => 1,
        Encoding::Json => 4,
    };
    (c.max_batch_bytes.saturating_mul(factor) + c.topic.len() + 64).max(10 * 1024)
}

fn mqtt_options(c: &UplinkConfig) -> Result<MqttOptions, UplinkError> {
    if c.max_batch_records == 0 || c.max_inflight == 0 {
        return Err(UplinkError::Config(
            "max_batch_records and max_inflight must be at least 1".into(),
        ));
    }
    if c.bandwidth.is_some_and(|b| b.bytes_per_sec == 0) {
        return Err(UplinkError::Config("bandwidth of 0 bytes/s".into()));
    }
    let mut o = MqttOptions::new(c.client_id.clone(), c.host.clone(), c.port);
    o.set_keep_alive(c.keep_alive.max(Duration::from_secs(1)));
    o.set_clean_session(true);
    let packet = packet_limit(c);
    o.set_max_packet_size(packet, packet);
    // More packet ids than batches in flight, so that ids rarely collide
    // when a broker acknowledges out of order.
    o.set_inflight(c.max_inflight.saturating_mul(4).max(16));
    if let Some((u, p)) = &c.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &c.tls {
        install_crypto_provider();
        let ca = read("server CA file", &t.ca)?;
        let client_auth = match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => {
                Some((read("client certificate", cert)?, read("client key", key)?))
            }
            (None, None) => None,
            _ => {
                return Err(UplinkError::Config(
                    "mutual TLS needs both a client certificate and its key".into(),
                ))
            }
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: t.alpn.clone(),
            client_auth,
        }));
    }
    Ok(o)
}

impl Uplink {
    /// Starts the uplink's tasks on the current tokio runtime. The first
    /// connection is attempted at once; failures are retried forever with
    /// backoff and counted in [`UplinkCounters::connection_errors`].
    ///
    /// # Errors
    /// [`UplinkError`] when a TLS file cannot be read or the configuration
    /// cannot work.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn`).
    pub fn start(
        config: UplinkConfig,
        db: Arc<Database>,
        outbox: Outbox,
    ) -> Result<Uplink, UplinkError> {
        let opts = mqtt_options(&config)?;
        let (client, eventloop) = AsyncClient::new(opts, usize::from(config.max_inflight) + 16);
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (state_tx, state) = watch::channel(LinkState {
            connected: false,
            acked_through: outbox.acked_through(),
            sent_through: 0,
            errors: 0,
        });
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(
            eventloop,
            ev_tx,
            counters.clone(),
            shutdown_rx.clone(),
            Backoff::new(config.backoff_min, config.backoff_max),
        ));
        let publisher = Publisher {
            bucket: config.bandwidth.map(Bucket::new),
            cfg: config,
            db: db.clone(),
            outbox: outbox.clone(),
            client: client.clone(),
            counters: counters.clone(),
            state: state_tx,
            connected: false,
            next_seq: 1,
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
            collided: None,
            window: BTreeMap::new(),
            high_water: 0,
            last_flush: Instant::now(),
        };
        let publisher = tokio::spawn(publisher.run(ev_rx, shutdown_rx));
        Ok(Uplink {
            counters,
            state,
            shutdown,
            tasks: vec![driver, publisher],
            db,
            outbox,
            client,
        })
    }

    /// The counters now (the drop counts are read from the outbox).
    pub fn counters(&self) -> UplinkCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UplinkCounters {
            published_records: get(&c.published_records),
            published_batches: get(&c.published_batches),
            acked_records: get(&c.acked_records),
            acked_batches: get(&c.acked_batches),
            republished_records: get(&c.republished_records),
            bytes_sent: get(&c.bytes_sent),
            connection_errors: get(&c.connection_errors),
            connects: get(&c.connects),
            oversized_records: get(&c.oversized_records),
            dropped: self
                .outbox
                .stats(&self.db)
                .map(|s| s.dropped)
                .unwrap_or_default(),
        }
    }

    /// The link state now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// A receiver of link state changes (connects, disconnects, acks), to
    /// wait on a condition instead of polling.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Stops the uplink: sends DISCONNECT when connected and waits for the
    /// tasks. Unacknowledged records stay in the outbox.
    pub async fn shutdown(mut self) {
        let _ = self.client.try_disconnect();
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the driver tells the publisher.
enum Ev {
    /// Connected; the new connection starts with nothing in flight.
    Up,
    /// The connection failed or dropped; reply once publishing has stopped.
    Down(oneshot::Sender<()>),
    /// rumqttc wrote the next queued publish with this packet id.
    Sent(u16),
    /// The next queued publish waits for this packet id to be acknowledged.
    Collision(u16),
    /// The broker acknowledged this packet id.
    PubAck(u16),
}

struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay, drawn from [d/2, d], and d doubles up to max.
    fn delay(&mut self) -> Duration {
        // xorshift64: jitter needs no cryptographic randomness.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }
}

/// Drops everything rumqttc holds from the last connection: publishes
/// queued before the publisher stopped, in-flight ones, a held-back
/// colliding one, and **buffered events** — a read that ends in an error
/// can leave PUBACKs of the dead connection queued, which would otherwise be
/// matched to the new connection's packet ids.
fn forget_connection(el: &mut EventLoop) {
    if el.network.is_none() {
        el.clean();
    }
    el.pending.clear();
    el.state.events.clear();
    el.state.collision = None;
}

async fn drive(
    mut el: EventLoop,
    tx: mpsc::UnboundedSender<Ev>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
    mut backoff: Backoff,
) {
    loop {
        let r = tokio::select! {
            r = el.poll() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let ev = match r {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // Whatever the broker kept, nothing of the last connection
                // is sent again by rumqttc: the outbox republishes.
                forget_connection(&mut el);
                backoff.reset();
                add(&counters.connects, 1);
                Ev::Up
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => Ev::PubAck(a.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ev::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => Ev::Collision(pkid),
            Ok(_) => continue,
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(e) => {
                add(&counters.connection_errors, 1);
                tracing::warn!(error = %e, "cloud uplink: connection error; reconnecting with backoff");
                let (ack, stopped) = oneshot::channel();
                if tx.send(Ev::Down(ack)).is_err() {
                    return;
                }
                let _ = stopped.await;
                let d = backoff.delay();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                forget_connection(&mut el);
                continue;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// A token bucket in bytes.
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(b: Bandwidth) -> Bucket {
        let cap = b.burst_bytes.max(1) as f64;
        Bucket {
            rate: b.bytes_per_sec as f64,
            cap,
            tokens: cap,
            at: Instant::now(),
        }
    }

    /// Takes `n` bytes, or says how long to wait first.
    fn take(&mut self, n: usize) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.cap);
        self.at = now;
        let need = (n as f64).min(self.cap);
        if self.tokens >= need {
            self.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate)
                .max(Duration::from_millis(1)))
        }
    }
}

struct Sent {
    first: u64,
    n: u64,
    bytes: u64,
}

struct Publisher {
    cfg: UplinkConfig,
    db: Arc<Database>,
    outbox: Outbox,
    client: AsyncClient,
    counters: Arc<Counters>,
    state: watch::Sender<LinkState>,
    bucket: Option<Bucket>,
    connected: bool,
    /// The next sequence to publish.
    next_seq: u64,
    /// Handed to rumqttc, packet id not known yet (in order).
    unassigned: VecDeque<Sent>,
    /// Written with a packet id, waiting for the PUBACK.
    by_pkid: HashMap<u16, VecDeque<Sent>>,
    collided: Option<(u16, Sent)>,
    /// Batches in flight by first sequence: (last, records, acked).
    window: BTreeMap<u64, (u64, u64, bool)>,
    /// The highest sequence ever published by this process.
    high_water: u64,
    last_flush: Instant,
}

impl Publisher {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Ev>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let outbox = self.outbox.clone();
        loop {
            let wait = if self.connected {
                let w = self.fill();
                self.set_state();
                w
            } else {
                None
            };
            let tick = wait.unwrap_or(self.cfg.poll_interval);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => return,
                },
                _ = outbox.changed() => {}
                _ = tokio::time::sleep(tick) => self.maybe_flush(),
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    fn reset(&mut self) {
        self.unassigned.clear();
        self.by_pkid.clear();
        self.collided = None;
        self.window.clear();
        self.next_seq = self.outbox.acked_through() + 1;
    }

    fn set_state(&self) {
        let s = LinkState {
            connected: self.connected,
            acked_through: self.outbox.acked_through(),
            sent_through: self.next_seq.saturating_sub(1),
            errors: self.counters.connection_errors.load(Ordering::Relaxed),
        };
        self.state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Up => {
                self.connected = true;
                self.reset();
                // The link is back: report what the budget dropped meanwhile.
                match self.outbox.report_drops(&self.db) {
                    Ok(Some(c)) => tracing::warn!(
                        windows = c.window,
                        alerts = c.alert,
                        status = c.status,
                        "cloud uplink: the outbox budget dropped records; reporting upstream"
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cloud uplink: cannot stage the drop report")
                    }
                }
            }
            Ev::Down(stopped) => {
                self.connected = false;
                self.reset();
                let _ = stopped.send(());
            }
            Ev::Sent(pkid) => {
                let s = match self.collided.take() {
                    Some((p, s)) if p == pkid => Some(s),
                    other => {
                        self.collided = other;
                        self.unassigned.pop_front()
                    }
                };
                if let Some(s) = s {
                    add(&self.counters.bytes_sent, s.bytes);
                    self.by_pkid.entry(pkid).or_default().push_back(s);
                }
            }
            Ev::Collision(pkid) => {
                if let Some(s) = self.unassigned.pop_front() {
                    self.collided = Some((pkid, s));
                }
            }
            Ev::PubAck(pkid) => {
                let Some(s) = self.by_pkid.get_mut(&pkid).and_then(VecDeque::pop_front) else {
                    return;
                };
                add(&self.counters.acked_batches, 1);
                add(&self.counters.acked_records, s.n);
                if let Some(e) = self.window.get_mut(&s.first) {
                    e.2 = true;
                }
                self.advance_acks();
                // A steady stream of events would starve the tick.
                self.maybe_flush();
            }
        }
        self.set_state();
    }

    /// Acknowledges in the outbox the prefix of batches whose PUBACK is in.
    fn advance_acks(&mut self) {
        let mut through = None;
        while let Some(e) = self.window.first_entry() {
            if !e.get().2 {
                break;
            }
            through = Some(e.get().0);
            e.remove();
        }
        if let Some(t) = through {
            self.outbox.ack_through(t);
        }
    }

    fn maybe_flush(&mut self) {
        if self.last_flush.elapsed() < self.cfg.flush_acks_after {
            return;
        }
        self.last_flush = Instant::now();
        if let Err(e) = self.outbox.flush_acks(&self.db) {
            tracing::warn!(error = %e, "cloud uplink: cannot delete acknowledged records");
        }
    }

    fn encode(&self, recs: &[PendingRecord]) -> Vec<u8> {
        match self.cfg.encoding {
            Encoding::Cbor => {
                wire::encode_batch_raw(&self.cfg.gateway, recs.iter().map(|p| p.bytes.as_slice()))
            }
            Encoding::Json => Batch {
                gateway: self.cfg.gateway.clone(),
                records: recs
                    .iter()
                    .filter_map(|p| p.record().ok())
                    .collect::<Vec<OutputRecord>>(),
            }
            .to_json()
            .into_bytes(),
        }
    }

    /// Publishes while the window and the bandwidth allow; returns how long
    /// to wait for tokens, if that is what stopped it.
    fn fill(&mut self) -> Option<Duration> {
        while self.window.len() < usize::from(self.cfg.max_inflight) {
            let mut recs =
                match self
                    .outbox
                    .pending_from(&self.db, self.next_seq, self.cfg.max_batch_records)
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "cloud uplink: cannot read the outbox");
                        return None;
                    }
                };
            if recs.is_empty() {
                return None;
            }
            let mut size = wire::batch_overhead(&self.cfg.gateway, recs.len());
            let mut take = 0;
            for r in &recs {
                if take > 0 && size + r.bytes.len() > self.cfg.max_batch_bytes {
                    break;
                }
                size += r.bytes.len();
                take += 1;
            }
            recs.truncate(take);
            let mut payload = self.encode(&recs);
            let limit = packet_limit(&self.cfg) - 16;
            if payload.len() + self.cfg.topic.len() > limit && take > 1 {
                take = 1;
                recs.truncate(1);
                payload = self.encode(&recs);
            }
            if payload.len() + self.cfg.topic.len() > limit {
                // One record larger than any packet the uplink may send
                // would block the outbox forever: skip it, loudly.
                let seq = recs[0].seq;
                tracing::error!(
                    seq,
                    bytes = payload.len(),
                    "cloud uplink: record too large to publish; skipped"
                );
                add(&self.counters.oversized_records, 1);
                self.window.insert(seq, (seq, 1, true));
                self.next_seq = seq + 1;
                self.advance_acks();
                continue;
            }
            let wire_bytes = payload.len() + self.cfg.topic.len();
            if let Some(b) = &mut self.bucket {
                if let Err(wait) = b.take(wire_bytes) {
                    return Some(wait);
                }
            }
            let first = recs[0].seq;
            let last = recs[take - 1].seq;
            if let Err(e) =
                self.client
                    .try_publish(self.cfg.topic.clone(), QoS::AtLeastOnce, false, payload)
            {
                tracing::debug!(error = %e, "cloud uplink: request queue full");
                return Some(Duration::from_millis(5));
            }
            let n = take as u64;
            let again = recs.iter().filter(|r| r.seq <= self.high_water).count() as u64;
            add(&self.counters.published_records, n);
            add(&self.counters.published_batches, 1);
            add(&self.counters.republished_records, again);
            self.high_water = self.high_water.max(last);
            self.unassigned.push_back(Sent {
                first,
                n,
                bytes: wire_bytes as u64,
            });
            self.window.insert(first, (last, n, false));
            self.next_seq = last + 1;
        }
        None
    }
}
