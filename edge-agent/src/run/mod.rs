//! `weir run`: the gateway agent.
//!
//! One rule makes "nothing acknowledged is lost, nothing counted twice"
//! hold by construction (docs/agent.md): **commit, then compute, then
//! acknowledge**.
//!
//! ```text
//! MQTT poller task ──events──► ingest loop:
//!                                decode (bad → counter + dead letter)
//!                                store.append(sample, now)          staged
//!                                … until group_records or group_commit
//!                                store.commit()                     durable
//!                                engine.handle_* in journal order
//!                                outputs → local broker (QoS 1, deterministic ids)
//!                                ack the group's messages, in order
//! ```
//!
//! A checkpoint (engine snapshot + journal position) is written every
//! `[checkpoint] interval`, but only once the broker has acknowledged every
//! output published before it: outputs after a checkpoint can always be
//! produced again from the journal, so a crash or a broker that lost our
//! session re-publishes them (same ids) instead of losing them.
//!
//! Start (and a broker that comes back without our session) = restore the
//! last checkpoint, replay the journal after it through the engine, publish
//! what it emits, subscribe.

pub mod agent_core;
pub mod budget;
pub mod cloud;
pub mod dash;
pub mod dedupe;
pub mod metrics;
pub mod mqtt;
pub mod output;
pub mod update;
pub mod web;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt::{AckToken, Client, Incoming};
use tokio::sync::mpsc;
use weir_core::engine::Engine;
use weir_core::output::Output;
use weir_core::seam::CheckpointStore;
use weir_core::spec::OperatorKind;
use weir_core::time::TimeMode;

use crate::decode::{Batch, Decoder};
use crate::gateway::GatewayConfig;
use crate::pipeline_file::PipelineFile;
use crate::store::{
    DeadLetter, DurabilityMode, Lsn, Sample, Store, StoreConfig, StoreError, TICK_SOURCE,
};
use metrics::Metrics;
use mqtt::{Link, MqttEvent};
use output::{Encoded, OutputEncoder};

/// Why `weir run` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The journal or checkpoint store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint could not be restored into this pipeline.
    #[error("{path}: the checkpoint does not restore into pipeline `{pipeline}`: {detail}; move the data directory aside to start fresh")]
    Restore {
        /// The store file.
        path: String,
        /// The pipeline name.
        pipeline: String,
        /// What the engine said.
        detail: String,
    },
    /// The pipeline cannot run under `weir run`.
    #[error("{0}")]
    Config(String),
    /// I/O (data directory, metrics socket).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a finished run did (for tests and the demo).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Readings journaled.
    pub readings: u64,
    /// Outputs published.
    pub published: u64,
    /// Journal records replayed at start.
    pub replayed: u64,
    /// Whether the final checkpoint was written.
    pub final_checkpoint: bool,
}

/// A running agent's handles for whoever started it.
#[derive(Clone)]
pub struct Handle {
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    /// Asks the agent to stop as on SIGTERM: finish the open group, write a
    /// final checkpoint, disconnect.
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// The open group commit.
#[derive(Default)]
struct Group {
    /// Messages to acknowledge after the commit, in receive order, each
    /// with its place in the dedupe ring ([`dedupe::Dedupe::inserted`]).
    acks: Vec<(AckToken, u64)>,
    /// Topics of the group's messages (index = `Rec::msg`).
    topics: Vec<(String, bytes::Bytes)>,
    /// Its journaled records (`Rec::msg` indexes `topics`).
    staged: agent_core::Staged,
    opened: Option<Instant>,
    /// The arrival of its last message (the write budget's quiet rule).
    last: Option<Instant>,
}

impl Group {
    fn clear(&mut self) {
        self.acks.clear();
        self.topics.clear();
        self.staged.clear();
        self.opened = None;
        self.last = None;
    }
}

/// Outputs on their way to the broker.
struct Emitter {
    enc: OutputEncoder,
    windows: bool,
    queue: VecDeque<Encoded>,
    scratch: Vec<Encoded>,
    /// Publishes handed to the current client / acknowledged by the broker.
    published: u64,
    acked: u64,
    /// Outputs bound for the cloud outbox (`[cloud]`).
    cloud: Option<cloud::CloudOut>,
}

impl Emitter {
    /// Drains the engine's outputs emitted while processing record `lsn`
    /// (agent clock `now`).
    fn drain(&mut self, engine: &mut Engine, lsn: Lsn, now: i64, m: &Metrics) {
        while let Some(o) = engine.poll_output() {
            let key = match &o {
                Output::Window(w) => {
                    m.windows.fetch_add(1, Relaxed);
                    if w.anomaly.is_some_and(|a| a.flag) {
                        m.alerts.fetch_add(1, Relaxed);
                    }
                    let key = engine.key_name(w.key);
                    m.dash.window(&self.enc.shown_key(key), w, now);
                    key
                }
                Output::Score(s) => {
                    if s.verdict.flag {
                        m.alerts.fetch_add(1, Relaxed);
                    }
                    let key = engine.key_name(s.key);
                    m.dash.score(&self.enc.shown_key(key), s, now);
                    key
                }
                Output::Custom(c) => engine.key_name(c.key),
                Output::Late(_) => {
                    m.late.fetch_add(1, Relaxed);
                    continue;
                }
            };
            let row = self
                .enc
                .encode(&o, key, lsn, self.windows, &mut self.scratch);
            self.queue.extend(self.scratch.drain(..));
            if let Some(c) = &mut self.cloud {
                match (&o, row) {
                    // A SQL query's window results reach the cloud as its
                    // result rows (none while a row waits for its other
                    // operators, or when HAVING drops it).
                    (Output::Window(w), Some(row)) => c.push_row(w, key, &row, lsn, now),
                    (Output::Window(_), None) if self.enc.publishes_rows() => {}
                    _ => c.push(&o, key, lsn, now),
                }
            }
        }
        if let Some(c) = &mut self.cloud {
            c.processed(lsn);
        }
    }

    /// Hands queued outputs to the output client until its channel is full.
    fn flush(&mut self, client: &Client, m: &Metrics) {
        while let Some(e) = self.queue.pop_front() {
            match client.try_publish(e.topic, e.payload) {
                Ok(()) => {
                    self.published += 1;
                    m.published.fetch_add(1, Relaxed);
                }
                Err((topic, payload)) => {
                    self.queue.push_front(Encoded {
                        topic,
                        id: e.id,
                        channel: e.channel,
                        payload,
                    });
                    return;
                }
            }
        }
    }
}

/// Hands queued acknowledgements to the ingest client, in order.
fn flush_acks(
    acks: &mut VecDeque<(AckToken, u64)>,
    fifo: &mut VecDeque<u64>,
    client: &Client,
    m: &Metrics,
) {
    while let Some((p, n)) = acks.front() {
        // Headroom in rumqttc's request queue for subscriptions.
        if fifo.len() + 64 >= INGEST_REQUESTS || !client.try_ack(p) {
            return;
        }
        fifo.push_back(*n);
        acks.pop_front();
        m.acks.fetch_add(1, Relaxed);
    }
}

/// Most identities recorded in the dedupe ring since the oldest message
/// whose ack is not yet written ([`Agent::ack_debt`]; QoS 0 messages,
/// wired readings and duplicates move the ring too). At it the loop stops
/// taking messages until acks are written: everything the broker may
/// redeliver after a crash is then among the last [`dedupe::WINDOW`]
/// identities, which the ring remembers.
const MAX_ACK_DEBT: u64 = dedupe::WINDOW as u64 / 2;

/// A decoded MQTT reading of source `src` as the journal stores it.
fn journal_sample(src: usize, now: i64, s: crate::decode::SampleRef<'_>) -> Sample<'_> {
    Sample {
        source: src as u16,
        key: s.key,
        ts: s.ts,
        now,
        values: s.values,
    }
}

/// Logs a bad-input line at most once per 10 s per (topic, reason).
#[derive(Default)]
struct LogLimiter {
    last: HashMap<(String, &'static str), (Instant, u64)>,
}

impl LogLimiter {
    fn log(&mut self, topic: &str, reason: &'static str, detail: &str) {
        if self.last.len() > 10_000 {
            self.last.clear();
        }
        let now = Instant::now();
        let e = self
            .last
            .entry((topic.to_string(), reason))
            .or_insert((now - Duration::from_secs(3600), 0));
        if now.duration_since(e.0) >= Duration::from_secs(10) {
            let suppressed = std::mem::take(&mut e.1);
            e.0 = now;
            if suppressed > 0 {
                tracing::warn!(topic, reason, suppressed, "bad input: {detail}");
            } else {
                tracing::warn!(topic, reason, "bad input: {detail}");
            }
        } else {
            e.1 += 1;
        }
    }
}

/// The agent's clock: wall-clock ms since the epoch, never going back.
#[derive(Default)]
struct AgentClock {
    last: i64,
}

impl AgentClock {
    fn now(&mut self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last = self.last.max(wall);
        self.last
    }
}

/// A group closes at `group_records` messages, or at this many times as
/// many records: packs (SenML, arrays) carry many readings a message, and
/// a group cut at `group_records` readings would pay a commit (an fsync)
/// every few dozen messages. Staged journal bytes (1 MiB) bound it too.
pub(crate) const PACK_RECORDS: usize = 16;

/// The records that close a group of `group_records` messages.
pub(crate) fn pack_records(group_records: usize) -> usize {
    group_records.saturating_mul(PACK_RECORDS)
}

/// Most events taken from the poller per loop turn before the loop looks
/// at its timers again.
const EVENTS_PER_TURN: usize = 512;
/// Requests (acks, subscriptions) queued in rumqttc for the ingest client;
/// the rest wait in the agent's own queue as 4-byte tokens, not as
/// rumqttc requests of ~100 bytes each. rumqttc writes one a turn of its
/// loop, so a deeper queue writes no faster: at 4,096 its queue held
/// 0.25 MiB of acks under the benchmark's flood.
const INGEST_REQUESTS: usize = 1024;
/// While paused on the ack debt, QoS 0 messages beyond this many held
/// events are dropped (counted as overload drops).
const HELD_QOS0: usize = 4096;

/// Slots of the side queue kept once it is empty again (the rest are
/// freed: a pause's peak is not held for the rest of the run).
const HELD_KEEP: usize = 512;

/// Slots the side queue grows by when full (288 KiB).
const HELD_STEP: usize = 4096;

/// Payload bytes of a held event.
fn held_len(ev: &(Link, MqttEvent)) -> usize {
    match &ev.1 {
        MqttEvent::Publish(p) => p.payload.len(),
        _ => 0,
    }
}

struct Agent {
    cfg: GatewayConfig,
    pf: PipelineFile,
    store: Store,
    engine: Engine,
    em: Emitter,
    decoders: Vec<Option<Decoder>>,
    /// (filter, source index, QoS)
    routes: Vec<(String, usize, u8)>,
    topic_cache: HashMap<String, Option<usize>>,
    own_prefix: String,
    batch: Batch,
    group: Group,
    metrics: Arc<Metrics>,
    /// Subscriptions and acknowledgements.
    ingest: Client,
    /// Outputs.
    out: Client,
    tx: mqtt::EventTx,
    rx: mpsc::Receiver<(Link, MqttEvent)>,
    /// Events taken off `rx` while paused on the ack debt (so the pollers,
    /// which write the acks, never wait on a full channel), handled first.
    held: VecDeque<(Link, MqttEvent)>,
    /// Payload bytes in `held`.
    held_bytes: usize,
    /// Shedding QoS 1 messages until the ingest link reconnects. `held`
    /// holds at most `[broker] max_held` payload bytes
    /// ([`crate::gateway::DEFAULT_MAX_HELD`]): a broker may send far more
    /// than its in-flight window (mosquitto 2.0 sent a paused agent 140,000
    /// unacknowledged SenML packs, 357 MB), so past it a pause sheds QoS 1
    /// messages (neither journaled nor acknowledged: the broker still owes
    /// them) and every later one until the ingest link reconnects and the
    /// broker redelivers them in order, once the acks of what was taken
    /// are written. Memory stays bounded; nothing is lost or reordered.
    shedding: bool,
    /// The reconnect that ends shedding was asked for.
    shed_reconnect: bool,
    pollers: Vec<tokio::task::JoinHandle<()>>,
    ingest_once: bool,
    out_once: bool,
    /// Acknowledgements waiting for the ingest client.
    acks: VecDeque<(AckToken, u64)>,
    /// Ack debt per acknowledgement handed to the client, until written.
    ack_fifo: VecDeque<u64>,
    /// `Metrics::acks_written` as far as `ack_fifo` has been reaped.
    acks_seen: u64,
    /// A checkpoint waiting for its outputs' acknowledgements.
    pending_ckpt: agent_core::CheckpointGate,
    last_ckpt: Instant,
    /// Checkpoint at the next chance, whatever the interval (after a
    /// recovery that replayed records).
    checkpoint_soon: bool,
    clock: AgentClock,
    /// Per source: the agent clock at its last sample, for idleness ticks.
    source_last_now: Vec<Option<i64>>,
    /// Per source: the newest event time processed.
    source_newest: Vec<Option<i64>>,
    idle_timeouts: Vec<Option<i64>>,
    processing_time: bool,
    limiter: LogLimiter,
    /// Highest LSN the engine has processed.
    processed: Lsn,
    dedupe: dedupe::Dedupe,
    /// The outbox and uplink (`[cloud]`).
    cloud: Option<cloud::CloudLink>,
    /// Signed pipeline updates (`[updates]`).
    updates: Option<update::Updates>,
    /// The flash write budget: the commit and checkpoint intervals in use.
    budget: budget::Budget,
}

/// Opens the store in the data directory.
fn open_store(cfg: &GatewayConfig) -> Result<Store, RunError> {
    crate::fsutil::create_dir_all(&cfg.data_dir, 0o750).map_err(|e| RunError::Io {
        what: format!("cannot create data directory {}", cfg.data_dir.display()),
        source: e,
    })?;
    let sc = StoreConfig {
        mode: cfg.durability,
        dead_letters_keep: cfg.dead_letters,
        // The journal is written once and read back only on recovery: a
        // small page cache keeps the agent's memory low (12 MB target).
        // A checkpoint's truncation reads every chunk it removes (a 4 KiB
        // leaf each) and its record is one run of pages: with 1 MiB, the
        // cache held ~1.6 MiB at a checkpoint, the agent's peak.
        cache_bytes: 256 << 10,
        ..StoreConfig::default()
    };
    Ok(sc.build(cfg.data_dir.join("weir.redb"))?)
}

/// The ingest channel: kept across in-process restarts after a storage
/// fault, so the wired-sensor thread keeps its sender.
type Channel = (mqtt::EventTx, mpsc::Receiver<(Link, MqttEvent)>);

impl Agent {
    fn new(
        cfg: GatewayConfig,
        pf: PipelineFile,
        metrics: Arc<Metrics>,
        chan: &mut Option<Channel>,
    ) -> Result<Agent, RunError> {
        let store = open_store(&cfg)?;
        // A pipeline installed by an update runs instead of the file's.
        let persisted = update::load(store.database()).map_err(|e| {
            RunError::Config(format!(
                "{}: read the update state: {e}",
                store.path().display()
            ))
        })?;
        let file_pf = pf.clone();
        let pf = match &persisted.active {
            Some(a) if !cfg.updates.trusted_keys.is_empty() => {
                let name = format!(
                    "{} (pipeline update v{})",
                    store.path().display(),
                    a.version
                );
                tracing::info!(
                    version = a.version,
                    "running the pipeline installed by an update"
                );
                crate::pipeline_file::parse(&name, &a.text)
                    .map_err(|e| RunError::Config(e.to_string()))?
            }
            _ => pf,
        };
        metrics.dash.set_pipeline(
            &pf.spec,
            match &persisted.active {
                Some(a) if !cfg.updates.trusted_keys.is_empty() => dash::PipelineInfo {
                    name: pf.spec.name.clone(),
                    version: a.version,
                    origin: "signed update".into(),
                    text: a.text.clone(),
                },
                _ => dash::PipelineInfo {
                    name: pf.spec.name.clone(),
                    version: 0,
                    origin: cfg.pipeline.display().to_string(),
                    text: std::fs::read_to_string(&cfg.pipeline).unwrap_or_default(),
                },
            },
        );
        let updates = update::Updates::start(&cfg, persisted, file_pf, metrics.clone())
            .map_err(|e| RunError::Config(format!("{}: [updates]: {e}", cfg.file)))?;
        let (decoders, routes) = routes_of(&pf);
        if routes.is_empty() && cfg.board.is_none() {
            return Err(RunError::Config(format!(
                "{}: no source has a [source.mqtt] table, so `weir run` has nothing to subscribe to; add topics and a decoder (docs/pipeline.md)",
                cfg.pipeline.display()
            )));
        }
        let (cloud, cloud_out) = match &cfg.cloud {
            Some(c) => {
                let (mut link, staged) =
                    cloud::CloudLink::open(&cfg.id, c, &store).map_err(RunError::Config)?;
                link.start(cloud::uplink_config(&cfg.id, c))
                    .map_err(|e| RunError::Config(format!("{}: [cloud]: {e}", cfg.file)))?;
                (Some(link), Some(cloud::CloudOut::new(&cfg.id, &pf, staged)))
            }
            None => (None, None),
        };
        let engine = pf
            .spec
            .clone()
            .build()
            .map_err(|e| RunError::Config(format!("{}: {e}", cfg.pipeline.display())))?;
        let enc = OutputEncoder::for_pipeline(&cfg.id, &cfg.prefix, cfg.output_format, &pf);
        let own_prefix = enc.own_prefix();
        let tx = chan.as_ref().expect("a channel to build on").0.clone();
        let (ingest, p1) = mqtt::connect(
            &cfg.broker,
            Link::Ingest,
            INGEST_REQUESTS,
            metrics.clone(),
            tx.clone(),
        )
        .map_err(RunError::Config)?;
        let (out, p2) = mqtt::connect(
            &cfg.broker,
            Link::Output,
            65_536,
            metrics.clone(),
            tx.clone(),
        )
        .map_err(RunError::Config)?;
        *metrics.mode.lock().unwrap_or_else(|e| e.into_inner()) = match cfg.durability {
            DurabilityMode::Journal => "journal",
            DurabilityMode::Checkpoint => "checkpoint",
        };
        let idle_timeouts = pf.spec.sources.iter().map(|s| s.idle_timeout).collect();
        let processing_time = pf.spec.time.mode == TimeMode::Processing
            || pf
                .spec
                .operators
                .iter()
                .any(|o| matches!(o.kind, OperatorKind::Process(_)));
        *metrics.sources.lock().unwrap_or_else(|e| e.into_inner()) = pf
            .spec
            .sources
            .iter()
            .map(|s| (s.name.clone(), None, 0))
            .collect();
        // Nothing fails from here on: the channel is the agent's.
        let (tx, rx) = chan.take().expect("checked above");
        Ok(Agent {
            budget: budget::for_agent(&cfg, &store),
            source_last_now: vec![None; pf.spec.sources.len()],
            source_newest: vec![None; pf.spec.sources.len()],
            idle_timeouts,
            processing_time,
            em: Emitter {
                enc,
                windows: cfg.publish_windows,
                queue: VecDeque::new(),
                scratch: Vec::new(),
                published: 0,
                acked: 0,
                cloud: cloud_out,
            },
            cloud,
            updates,
            cfg,
            pf,
            store,
            engine,
            decoders,
            routes,
            topic_cache: HashMap::new(),
            own_prefix,
            batch: Batch::new(),
            group: Group::default(),
            metrics,
            ingest,
            out,
            tx,
            rx,
            held: VecDeque::new(),
            held_bytes: 0,
            shedding: false,
            shed_reconnect: false,
            pollers: vec![p1, p2],
            ingest_once: false,
            out_once: false,
            acks: VecDeque::new(),
            ack_fifo: VecDeque::new(),
            acks_seen: 0,
            pending_ckpt: agent_core::CheckpointGate::default(),
            last_ckpt: Instant::now(),
            checkpoint_soon: false,
            clock: AgentClock::default(),
            limiter: LogLimiter::default(),
            processed: 0,
            dedupe: dedupe::Dedupe::default(),
        })
    }

    /// Restores the last checkpoint and replays the journal after it,
    /// queueing what the engine emits for publishing.
    fn recover(&mut self) -> Result<u64, RunError> {
        let (mut engine, upto, report) =
            agent_core::restore_latest(&self.store, &self.pf, &mut self.dedupe)?;
        for (id, outcome) in report.iter().flat_map(|r| &r.operators) {
            tracing::info!(operator = id.as_str(), ?outcome, "restored operator state");
        }
        for id in report.iter().flat_map(|r| &r.dropped) {
            tracing::warn!(
                operator = id.as_str(),
                "state of an operator no longer in the pipeline was dropped"
            );
        }
        if let Some(c) = &mut self.em.cloud {
            c.set_replaying(true);
        }
        // Records of a pipeline that failed its health check, taken again
        // under the one rolled back to after them: not for this engine.
        let skip = self.updates.as_ref().and_then(|u| u.skip);
        if let Some((a, b)) = skip.filter(|(_, b)| *b > upto) {
            tracing::info!(
                after = a,
                through = b,
                "replay skips the journal records of a rolled-back pipeline"
            );
        }
        let (em, metrics) = (&mut self.em, &self.metrics);
        let (n, last) = agent_core::replay_journal(
            &self.store,
            upto,
            skip,
            &mut engine,
            &self.pf,
            &mut self.dedupe,
            |engine, lsn, now| em.drain(engine, lsn, now, metrics),
        )?;
        self.engine = engine;
        // A gateway without a battery-backed clock may start behind the
        // time it journaled: the agent's clock never goes back, even
        // across a restart (processing-time windows and ticks rely on it).
        self.clock.last = self.clock.last.max(self.engine.now());
        if let Some(c) = &mut self.em.cloud {
            c.set_replaying(false);
        }
        // In checkpoint mode there is no journal: positions continue after the checkpoint.
        self.processed = last.max(self.store.committed_lsn());
        self.metrics.replayed.fetch_add(n, Relaxed);
        self.publish_gauges();
        if n > 0 {
            // A checkpoint as soon as the replayed outputs are acknowledged,
            // not one interval after this start: an agent restarting faster
            // than its checkpoint interval (a crash loop) would otherwise
            // never trim the journal, and replay all of it at every start.
            self.checkpoint_soon = true;
        }
        Ok(n)
    }

    fn subscribe(&mut self) {
        for (filter, _, qos) in &self.routes {
            if let Err(e) = self.ingest.try_subscribe(filter, *qos) {
                tracing::error!(
                    filter = filter.as_str(),
                    "cannot queue the subscription: {e}"
                );
            }
        }
    }

    /// The broker lost the output connection's session, and with it every
    /// output in flight: replace the client (nothing stale may reach the
    /// new session), then replay everything since the last durable
    /// checkpoint and publish it again (consumers drop duplicates by id).
    fn output_session_lost(&mut self) -> Result<(), RunError> {
        self.metrics.sessions_lost.fetch_add(1, Relaxed);
        tracing::warn!("the broker lost our output session: re-publishing every output since the last checkpoint");
        self.pollers[1].abort();
        let (out, p2) = mqtt::connect(
            &self.cfg.broker,
            Link::Output,
            65_536,
            self.metrics.clone(),
            self.tx.clone(),
        )
        .map_err(RunError::Config)?;
        self.out = out;
        self.pollers[1] = p2;
        self.out_once = false;
        self.commit_group()?;
        self.em.queue.clear();
        self.em.published = 0;
        self.em.acked = 0;
        self.pending_ckpt.clear();
        if self.cfg.durability == DurabilityMode::Journal {
            // The ring comes back the same (the group is committed); the
            // ingest link's post-connect check must stay as it was.
            let kept = self.dedupe.keep();
            self.recover()?;
            self.dedupe.resume(kept);
        } else {
            tracing::warn!("durability = \"checkpoint\": outputs in flight with the lost session are not re-published (no journal to replay)");
        }
        Ok(())
    }

    fn route(&mut self, topic: &str) -> Option<usize> {
        route_cached(&self.routes, &mut self.topic_cache, topic)
    }

    fn dead(
        &mut self,
        topic: &str,
        reason: &'static str,
        detail: String,
        payload: &[u8],
        now: i64,
    ) {
        self.metrics.count_bad(topic, reason);
        self.limiter.log(topic, reason, &detail);
        let d = DeadLetter {
            now,
            topic: topic.to_string(),
            reason: reason.to_string(),
            detail,
            payload: payload[..payload.len().min(crate::store::PAYLOAD_KEPT)].to_vec(),
        };
        self.metrics.remember_dead(&d);
        self.store.stage_dead_letter(&d);
    }

    /// Decodes one message into the open group.
    fn on_publish(&mut self, p: Incoming) -> Result<(), RunError> {
        let now = self.clock.now();
        self.metrics.messages.fetch_add(1, Relaxed);
        self.metrics
            .payload_bytes
            .fetch_add(p.payload.len() as u64, Relaxed);
        self.take_message(p, now, None)
    }

    /// While an update is on trial (journal mode), keeps the message as
    /// it came, with the group's commit: a rollback takes it again under
    /// the pipeline that comes back ([`update::Updates::hold`]).
    fn hold(&mut self, now: i64, p: &Incoming, rerun: bool) {
        if rerun || self.cfg.durability != DurabilityMode::Journal {
            return;
        }
        if let Some(u) = &mut self.updates {
            u.hold(now, &p.topic, &p.payload);
        }
    }

    /// Decodes one message into the open group. `rerun`: a message held
    /// during a failed health check, taken again after the rollback, with
    /// the identities it must not repeat: those of the ring at the switch
    /// (a redelivery of a message taken before it, which the failed
    /// pipeline could not recognise) and those of the messages taken again
    /// before it. The ring itself is not checked: the failed pipeline
    /// recorded the identities of the held messages it could decode.
    fn take_message(
        &mut self,
        p: Incoming,
        now: i64,
        mut rerun: Option<&mut HashSet<u64>>,
    ) -> Result<(), RunError> {
        let held = rerun.is_some();
        let arrived = Instant::now();
        if self.group.opened.is_none() {
            self.group.opened = Some(arrived);
            self.budget.on_group_opened(arrived);
            if self.processing_time || self.idle_timeouts.iter().any(Option::is_some) {
                self.stage_tick(now)?;
            }
        }
        self.group.last = Some(arrived);
        let msg = self.group.topics.len() as u32;
        if p.topic.starts_with(&self.own_prefix) {
            // Our own outputs, matched by a wide filter: not sensor input.
            if let Some(t) = p.ack {
                self.group.acks.push((t, self.dedupe.inserted()));
            }
            return Ok(());
        }
        let Some(src) = self.route(&p.topic) else {
            self.hold(now, &p, held);
            let detail = "no source's topic filters match this topic".to_string();
            self.dead(&p.topic, "unknown_topic", detail, &p.payload, now);
            if let Some(t) = p.ack {
                self.group.acks.push((t, self.dedupe.inserted()));
            }
            return Ok(());
        };
        let Some(dec) = &self.decoders[src] else {
            self.hold(now, &p, held);
            if let Some(t) = p.ack {
                self.group.acks.push((t, self.dedupe.inserted()));
            }
            return Ok(());
        };
        let mut batch = std::mem::take(&mut self.batch);
        let has_ts = dec.has_timestamp();
        let mut dup = false;
        match dec.decode(&p.topic, &p.payload, now, &mut batch) {
            Err(e) => {
                self.dead(&p.topic, e.reason(), e.to_string(), &p.payload, now);
            }
            Ok(()) => {
                agent_core::filter_decoded(&mut self.engine, &self.pf, &mut batch);
                let errors: Vec<_> = batch.errors().to_vec();
                for e in errors {
                    self.dead(&p.topic, e.reason(), e.to_string(), &p.payload, now);
                }
                // The message's identity: its readings the journal holds
                // (the same records a replay sees).
                let (id, duplicate) =
                    agent_core::identify(&mut self.dedupe, src, now, &batch, has_ts && !held);
                let repeated = match (&mut rerun, id) {
                    (Some(seen), Some(h)) if has_ts => !seen.insert(h),
                    _ => false,
                };
                if repeated || duplicate {
                    dup = true;
                    self.metrics
                        .duplicates
                        .fetch_add(batch.len() as u64, Relaxed);
                } else {
                    let mut cont = false;
                    for s in batch.iter() {
                        match self.store.append_part(&journal_sample(src, now, s), cont) {
                            Ok(lsn) => {
                                cont = true;
                                self.group
                                    .staged
                                    .push(lsn, msg, &journal_sample(src, now, s));
                            }
                            Err(StoreError::Sample(e)) => {
                                let t = p.topic.clone();
                                self.dead(&t, "too_large", e.to_string(), &p.payload, now);
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        self.batch = batch;
        if !dup {
            self.hold(now, &p, held);
        }
        // Kept for a dead letter should the engine refuse a reading; a copy
        // of the first bytes, so the group does not pin read buffers.
        let kept = p.payload.len().min(crate::store::PAYLOAD_KEPT);
        self.group.topics.push((
            p.topic.clone(),
            bytes::Bytes::copy_from_slice(&p.payload[..kept]),
        ));
        if let Some(t) = p.ack {
            // Its identity is the last one recorded (if it has one).
            let pos = self.dedupe.inserted().saturating_sub(1);
            self.group.acks.push((t, pos));
        }
        Ok(())
    }

    /// Stages a clock tick (journaled, so replay sees the same ticks).
    fn stage_tick(&mut self, now: i64) -> Result<(), RunError> {
        let tick = Sample {
            source: TICK_SOURCE,
            key: "",
            ts: now,
            now,
            values: &[],
        };
        let lsn = self.store.append(&tick)?;
        self.group.staged.push(lsn, u32::MAX, &tick);
        Ok(())
    }

    /// Closes the group: commit, compute, acknowledge.
    fn commit_group(&mut self) -> Result<(), RunError> {
        if self.group.staged.is_empty()
            && self.group.acks.is_empty()
            && self.group.opened.is_none()
            && !self.updates_dirty()
        {
            return Ok(());
        }
        let before = self.store.stats();
        self.commit_store()?;
        let after = self.store.stats();
        self.metrics
            .commits
            .fetch_add(after.commits - before.commits, Relaxed);
        self.metrics
            .journal_bytes
            .fetch_add(after.journal_bytes - before.journal_bytes, Relaxed);
        let g = std::mem::take(&mut self.group);
        if let Some(t) = g.opened {
            self.metrics
                .observe_ack_wait(t.elapsed(), g.acks.len() as u64);
        }
        let mut readings = 0u64;
        let (last_now, newest) = (&mut self.source_last_now, &mut self.source_newest);
        let (em, metrics, topics) = (&mut self.em, &self.metrics, &g.topics);
        let mut processed = self.processed;
        let mut refused = Vec::new();
        g.staged
            .compute(&mut self.engine, &self.pf, |engine, r, s, verdict| {
                if r.source != TICK_SOURCE {
                    readings += 1;
                    if let Some(t) = last_now.get_mut(r.source as usize) {
                        *t = Some(r.now);
                    }
                    if let Some(t) = newest.get_mut(r.source as usize) {
                        *t = Some(t.map_or(r.ts, |x| x.max(r.ts)));
                    }
                }
                if let Err(rej) = verdict {
                    metrics.rejected.fetch_add(1, Relaxed);
                    let (topic, payload) = topics.get(r.msg as usize).cloned().unwrap_or_default();
                    let detail = format!("key `{}`, ts {}: {rej}", s.key, r.ts);
                    refused.push((topic, rej.name(), detail, payload, r.now));
                }
                em.drain(engine, r.lsn, r.now, metrics);
                processed = r.lsn;
            });
        self.processed = processed;
        for (topic, reason, detail, payload, now) in refused {
            self.dead(&topic, reason, detail, &payload, now);
        }
        self.metrics.readings.fetch_add(readings, Relaxed);
        self.acks.extend(g.acks);
        let mut g2 = Group {
            acks: Vec::new(),
            ..Group::default()
        };
        // Keep the buffers' capacity.
        g2.topics = g.topics;
        g2.staged = g.staged;
        g2.clear();
        self.group = g2;
        self.publish_gauges();
        // After the compute: the acks go out next.
        self.budget.on_group_committed(Instant::now());
        Ok(())
    }

    fn cloud_dirty(&self) -> bool {
        self.em.cloud.as_ref().is_some_and(|c| c.dirty())
    }

    fn updates_dirty(&self) -> bool {
        self.updates.as_ref().is_some_and(|u| u.needs_write())
    }

    /// A journal commit (staged samples, if any) that also stages the
    /// pending cloud outputs (journal mode) and writes the update state
    /// when it changed, in the same transaction.
    fn commit_store(&mut self) -> Result<(), RunError> {
        let cloud = self.cfg.durability == DurabilityMode::Journal && self.cloud_dirty();
        let upd = self.updates_dirty();
        if !cloud && !upd {
            self.store.commit()?;
            return Ok(());
        }
        let (link, co, u) = (&self.cloud, &self.em.cloud, &self.updates);
        self.store.commit_with(|txn| {
            if let (true, Some(link), Some(co)) = (cloud, link, co) {
                co.stage(&link.outbox, txn)?;
            }
            if let Some(u) = u {
                u.persist_in(txn, None)?;
            }
            Ok(())
        })?;
        if let (true, Some(link), Some(co)) = (cloud, &self.cloud, &mut self.em.cloud) {
            co.staged();
            link.outbox.notify();
        }
        if let Some(u) = &mut self.updates {
            u.persisted(None);
        }
        Ok(())
    }

    /// Makes the update state durable now (a commit of its own, or with
    /// the open group).
    fn persist_updates(&mut self) -> Result<(), RunError> {
        if self.group.opened.is_some() || !self.group.staged.is_empty() {
            self.commit_group()
        } else {
            self.commit_store()
        }
    }

    /// Copies the uplink's counters and the outbox's stats into the metrics.
    fn cloud_metrics(&self) {
        if let Some(snap) = self.cloud.as_ref().and_then(|c| c.snapshot()) {
            *self.metrics.cloud.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        }
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.set_state(&self.engine);
        m.storage_bytes_written
            .store(self.store.lifetime_bytes_written(), Relaxed);
        m.storage_syncs
            .store(self.store.io().syncs.load(Relaxed), Relaxed);
        m.watermark.store(
            match self.engine.watermark() {
                weir_core::time::Watermark::EventTime(t) => t,
                _ => i64::MIN,
            },
            Relaxed,
        );
        m.now.store(self.clock.last, Relaxed);
        let mut src = m.sources.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, newest) in src.iter_mut().zip(&self.source_newest) {
            slot.1 = *newest;
        }
    }

    /// A timer tick with no group open: journal a tick only when it will
    /// change something (a source or key going idle, a processing-time
    /// window or timer due).
    fn on_timer(&mut self) -> Result<(), RunError> {
        let now = self.clock.now();
        // The engine says when a tick changes something (a key or source
        // going idle, a processing-time deadline); the agent's own check
        // covers sources the engine has not seen yet.
        let due = self.engine.poll_timeout().is_some_and(|t| now >= t)
            || self
                .idle_timeouts
                .iter()
                .zip(&self.source_last_now)
                .enumerate()
                .any(|(i, (t, last))| match (t, last) {
                    (Some(t), Some(l)) => now - l > *t && !self.engine.source_idle(i),
                    _ => false,
                });
        if due && self.group.opened.is_none() {
            self.group.opened = Some(Instant::now());
            self.stage_tick(now)?;
            self.commit_group()?;
        }
        // No data came to carry the cloud outputs: a commit of their own
        // (journal mode; checkpoint mode stages them with checkpoints).
        if self.group.opened.is_none()
            && self.cfg.durability == DurabilityMode::Journal
            && self.cloud_dirty()
        {
            self.commit_store()?;
        }
        self.cloud_metrics();
        Ok(())
    }

    /// When the engine next has work on a clock tick
    /// ([`Engine::poll_timeout`]), while no group is open (a group's
    /// commit feeds the engine its records, and its deadline is looked at
    /// again after). `None`: nothing until data comes.
    fn engine_deadline(&mut self) -> Option<Instant> {
        if self.group.opened.is_some() {
            return None;
        }
        let t = self.engine.poll_timeout()?;
        let wait = t.saturating_sub(self.clock.now());
        Some(Instant::now() + Duration::from_millis(wait.max(0) as u64))
    }

    /// When the open group is due (`None`: no group open).
    fn commit_deadline(&self) -> Option<Instant> {
        let opened = self.group.opened?;
        let last = self.group.last.unwrap_or(opened);
        Some(
            self.budget
                .commit_deadline(opened, last, self.group.topics.len()),
        )
    }

    /// Tells the write budget what the store has written; it may change
    /// the commit and checkpoint intervals (`run::budget`).
    fn budget_tick(&mut self) {
        let written = self.store.io().bytes_written.load(Relaxed);
        let decided = self.budget.decisions();
        if self.budget.handle_written(self.clock.now(), written) {
            let iv = self.budget.intervals();
            tracing::info!(
                commit_ms = iv.commit_ms,
                group_records = iv.group_records,
                checkpoint_ms = iv.checkpoint_ms,
                rate_bytes_per_s = self.budget.rate().unwrap_or(0.0).round(),
                "write budget: intervals changed"
            );
        }
        if self.budget.over_budget() && self.budget.decisions() > decided {
            tracing::warn!(
                rate_bytes_per_s = self.budget.rate().unwrap_or(0.0).round(),
                "write budget: over budget at max_ack_delay; the input writes more than the budget allows"
            );
        }
        budget::publish(
            &self.budget,
            self.store.lifetime_bytes_written(),
            &self.metrics,
        );
        self.publish_gauges();
    }

    /// Starts a checkpoint when one is due, and writes it once the broker
    /// has acknowledged every output published before it.
    fn maybe_checkpoint(&mut self, force: bool) -> Result<bool, RunError> {
        // During an update's health check the checkpoint of the switch
        // stays the newest (a rollback restores it into the previous
        // pipeline, a restart into the new one): no new checkpoints.
        let watching = self.updates.as_ref().is_some_and(|u| u.checking());
        if !self.pending_ckpt.is_pending()
            && !watching
            && (force
                || self.checkpoint_soon
                || self.last_ckpt.elapsed()
                    >= Duration::from_millis(self.budget.intervals().checkpoint_ms))
            && self.group.staged.is_empty()
        {
            // Encoded in place in the store's record (the last one's size
            // and an eighth more reserved): one copy of the state in memory.
            let last = self.metrics.checkpoint_bytes.load(Relaxed) as usize;
            let mut snap = Store::checkpoint_buffer(last + last / 8 + 1024);
            dedupe::encode_checkpoint_into(&self.dedupe, &self.engine, &mut snap)
                .map_err(|e| RunError::Config(format!("snapshot failed: {e}")))?;
            let mark = self.em.published + self.em.queue.len() as u64;
            self.pending_ckpt.take(self.processed, snap, mark);
            self.last_ckpt = Instant::now();
            self.checkpoint_soon = false;
        }
        let Some((upto, snap)) = self.pending_ckpt.ready(self.em.acked) else {
            return Ok(false);
        };
        let t0 = Instant::now();
        let snap_len = snap.snapshot().len();
        // The store takes the record as it is.
        self.store.put_record(upto, snap)?;
        {
            let (link, co, upd) = (&self.cloud, &self.em.cloud, &self.updates);
            self.store.sync_with(|txn| {
                if let (Some(link), Some(co)) = (link, co) {
                    co.stage(&link.outbox, txn)?;
                }
                if let Some(u) = upd {
                    u.persist_in(txn, Some(upto))?;
                }
                Ok(())
            })?;
        }
        if let (Some(link), Some(co)) = (&self.cloud, &mut self.em.cloud) {
            co.staged();
            link.outbox.notify();
        }
        if let Some(u) = &mut self.updates {
            u.persisted(Some(upto));
        }
        let m = &self.metrics;
        m.checkpoints.fetch_add(1, Relaxed);
        m.checkpoint_us
            .store(t0.elapsed().as_micros() as u64, Relaxed);
        m.checkpoint_bytes.store(snap_len as u64, Relaxed);
        if let Ok(len) = self.store.file_len() {
            m.store_file_bytes.store(len, Relaxed);
        }
        Ok(true)
    }

    /// Starts shedding QoS 1 messages (`[broker] max_held`).
    fn start_shedding(&mut self) {
        if !self.shedding {
            tracing::warn!(
                "ingest overloaded: {} MiB held while acks are written; QoS 1 messages are left to the broker until a reconnect",
                self.held_bytes >> 20
            );
        }
        self.shedding = true;
    }

    /// Whether `ev`, just taken off the channel, is shed: a QoS 1 message
    /// while shedding. The ingest link's reconnect ends shedding: what
    /// comes after it is the broker's redelivery, in order.
    fn sheds(&mut self, ev: &(Link, MqttEvent)) -> bool {
        match ev {
            (Link::Ingest, MqttEvent::Connected { .. }) => {
                self.shedding = false;
                self.shed_reconnect = false;
                false
            }
            (Link::Ingest, MqttEvent::Publish(p)) if self.shedding && p.qos > 0 => {
                self.metrics.shed.fetch_add(1, Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Identities recorded in the dedupe ring since the oldest message
    /// whose acknowledgement is not written yet (0 without one). Below
    /// [`dedupe::WINDOW`] that message is still in the ring, and so is
    /// every later one: whatever the broker may redeliver is recognised.
    fn ack_debt(&self) -> u64 {
        let oldest = self
            .ack_fifo
            .front()
            .or(self.acks.front().map(|(_, p)| p))
            .or(self.group.acks.first().map(|(_, p)| p));
        oldest.map_or(0, |p| self.dedupe.inserted().saturating_sub(*p))
    }

    fn held_gauges(&self) {
        let m = &self.metrics;
        m.held_messages.store(self.held.len() as u64, Relaxed);
        m.held_bytes.store(self.held_bytes as u64, Relaxed);
        m.held_bytes_peak.fetch_max(self.held_bytes as u64, Relaxed);
    }

    /// Settles acknowledgements rumqttc has written.
    fn reap_acks(&mut self) {
        let written = self.metrics.acks_written.load(Relaxed);
        while self.acks_seen < written {
            if self.ack_fifo.pop_front().is_none() {
                break;
            }
            self.acks_seen += 1;
        }
        self.acks_seen = written.max(self.acks_seen);
    }

    /// The ingest connection dropped: acknowledgements not yet written
    /// must not reach a new connection (rumqttd gives redeliveries new
    /// packet ids, so a stale ack could acknowledge an uncommitted
    /// message). The broker redelivers; dedupe drops the copies.
    fn forget_acks(&mut self) {
        self.acks.clear();
        self.group.acks.clear();
        self.ack_fifo.clear();
        self.acks_seen = self.metrics.acks_written.load(Relaxed);
    }

    fn on_event(&mut self, (link, ev): (Link, MqttEvent)) -> Result<(), RunError> {
        match (link, ev) {
            (_, MqttEvent::Publish(p)) => {
                self.on_publish(p)?;
                // Close the group on size, or on time even while events keep
                // coming (a flood of duplicates or bad input adds no records
                // but must still be acknowledged).
                let iv = self.budget.intervals();
                let due = self.commit_deadline().is_some_and(|d| Instant::now() >= d);
                // Messages: those journaled and those only acknowledged
                // (duplicates, bad input).
                let messages = self.group.topics.len().max(self.group.acks.len());
                if due
                    || agent_core::group_full(
                        messages,
                        self.group.staged.len(),
                        self.store.staged_bytes(),
                        iv.group_records,
                    )
                {
                    self.commit_group()?;
                }
            }
            (Link::Output, MqttEvent::PubAck) => {
                self.em.acked += 1;
                self.metrics.published_acked.fetch_add(1, Relaxed);
            }
            (Link::Ingest, MqttEvent::PubAck) => {}
            (Link::Output, MqttEvent::Connected { session_present }) => {
                if self.out_once && !session_present {
                    return self.output_session_lost();
                }
                self.out_once = true;
            }
            (Link::Ingest, MqttEvent::Connected { session_present }) => {
                if self.ingest_once && !session_present {
                    // Whatever the broker held for us is gone; nothing to
                    // replay on our side (what we have is journaled).
                    self.metrics.sessions_lost.fetch_add(1, Relaxed);
                    tracing::warn!("the broker lost our ingest session: messages it had queued for us are gone");
                }
                self.ingest_once = true;
                // A broker redelivers unacknowledged messages first.
                self.dedupe.arm();
                tracing::info!(
                    broker = format!("{}:{}", self.cfg.broker.host, self.cfg.broker.port),
                    session_present,
                    "connected"
                );
                self.subscribe();
                self.metrics.ready.store(true, Relaxed);
            }
            (Link::Ingest, MqttEvent::Disconnected(e)) => {
                // Acknowledgements for the old connection must not reach a
                // new one: rumqttd, for one, gives redeliveries new packet
                // ids, so a stale ack could acknowledge an uncommitted
                // message. The broker redelivers; dedupe drops the copies.
                self.forget_acks();
                tracing::warn!("broker connection (ingest): {e}; retrying");
            }
            (Link::Output, MqttEvent::Disconnected(e)) => {
                tracing::warn!("broker connection (outputs): {e}; retrying");
            }
            (_, MqttEvent::Wired(src, r)) => {
                self.on_wired(src, &r)?;
                if self.group.staged.len() >= self.budget.intervals().group_records {
                    self.commit_group()?;
                }
            }
        }
        Ok(())
    }

    /// A reading of a sensor wired to the gateway: journaled like an MQTT
    /// sample (there is nothing to acknowledge; a crash loses at most the
    /// open group, as for QoS 0).
    fn on_wired(&mut self, src: usize, r: &weir_core::seam::Reading) -> Result<(), RunError> {
        let now = self.clock.now();
        self.metrics.wired_readings.fetch_add(1, Relaxed);
        if self.group.opened.is_none() {
            self.group.opened = Some(Instant::now());
            if self.processing_time || self.idle_timeouts.iter().any(Option::is_some) {
                self.stage_tick(now)?;
            }
        }
        self.group.last = Some(Instant::now());
        let key = r.key.as_str();
        let sample = Sample {
            source: src as u16,
            key,
            ts: r.ts,
            now,
            values: &r.values,
        };
        self.dedupe
            .record(dedupe::reading_hash(src as u16, key, r.ts, &r.values));
        let lsn = self.store.append(&sample)?;
        let msg = self.group.topics.len() as u32;
        self.group
            .topics
            .push((format!("wired/{key}"), bytes::Bytes::new()));
        self.group.staged.push(lsn, msg, &sample);
        Ok(())
    }

    async fn main_loop(
        &mut self,
        stop: &tokio::sync::Notify,
        signals: &mut Signals,
    ) -> Result<(), RunError> {
        let tick_ms = self
            .idle_timeouts
            .iter()
            .flatten()
            .map(|t| (*t / 4).clamp(50, 1_000) as u64)
            .min()
            .unwrap_or(1_000)
            .min(self.cfg.checkpoint_ms);
        let mut ticker = tokio::time::interval(Duration::from_millis(tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sigterm = signals.recv();
        tokio::pin!(sigterm);
        loop {
            if self.ack_debt() < MAX_ACK_DEBT && !self.held.is_empty() {
                // What was taken off the channel during a pause, in order.
                for _ in 0..EVENTS_PER_TURN {
                    if self.ack_debt() >= MAX_ACK_DEBT {
                        break;
                    }
                    match self.held.pop_front() {
                        Some(ev) => {
                            self.held_bytes -= held_len(&ev);
                            self.on_event(ev)?
                        }
                        None => break,
                    }
                }
                if self.held.is_empty() {
                    // A pause can hold ~16,000 events (72 bytes a slot,
                    // 1.2 MiB); the slots are not kept for the next one.
                    self.held.shrink_to(HELD_KEEP);
                }
                self.held_gauges();
                // Signals and timers get their turn.
                tokio::task::yield_now().await;
            } else {
                let deadline = self.commit_deadline();
                let engine_at = self.engine_deadline();
                let engine_due = async {
                    match engine_at {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let commit_due = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let flush_soon = async {
                    if self.em.queue.is_empty() && self.acks.is_empty() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.notified() => break,
                    _ = &mut sigterm => break,
                    ev = self.rx.recv(), if self.ack_debt() < MAX_ACK_DEBT => {
                        let Some(ev) = ev else { break };
                        if !self.sheds(&ev) {
                            self.on_event(ev)?;
                        }
                        for _ in 0..EVENTS_PER_TURN {
                            if self.ack_debt() >= MAX_ACK_DEBT {
                                break;
                            }
                            match self.rx.try_recv() {
                                Ok(ev) if self.sheds(&ev) => {}
                                Ok(ev) => self.on_event(ev)?,
                                Err(_) => break,
                            }
                        }
                    }
                    // Paused on the ack debt: wait for rumqttc to write acks
                    // (or for the connection to drop, which cancels them).
                    _ = tokio::time::sleep(Duration::from_millis(1)), if self.ack_debt() >= MAX_ACK_DEBT => {
                        // Keep the channel moving: a poller waiting to hand over
                        // an event cannot write the acks this pause waits for.
                        while let Ok(ev) = self.rx.try_recv() {
                            if let (Link::Ingest, MqttEvent::Publish(p)) = &ev {
                                if p.qos == 0 && self.held.len() >= HELD_QOS0 {
                                    self.metrics.overload_drops.fetch_add(1, Relaxed);
                                    continue;
                                }
                                if p.qos > 0 && self.held_bytes + p.payload.len() > self.cfg.broker.max_held {
                                    self.start_shedding();
                                }
                            }
                            if self.sheds(&ev) {
                                continue;
                            }
                            self.held_bytes += held_len(&ev);
                            if self.held.len() == self.held.capacity() {
                                // In steps, not doubling: 16,385 events
                                // took 32,768 slots (2.4 MiB).
                                self.held.reserve_exact(HELD_STEP);
                            }
                            self.held.push_back(ev);
                        }
                        self.held_gauges();
                        if self.group.opened.is_some() {
                            self.commit_group()?;
                        }
                        if !self.metrics.connected.load(Relaxed) {
                            self.forget_acks();
                        }
                    }
                    _ = commit_due => self.commit_group()?,
                    // A processing-time window or timer, a source or key
                    // going idle: one tick, journaled and committed.
                    _ = engine_due => self.on_timer()?,
                    Some(c) = control(&mut self.updates) => self.on_control(c)?,
                    _ = ticker.tick() => {
                        self.budget_tick();
                        self.on_timer()?;
                        self.update_tick()?;
                        self.maybe_checkpoint(false)?;
                    }
                    _ = flush_soon => {}
                }
            }
            flush_acks(
                &mut self.acks,
                &mut self.ack_fifo,
                &self.ingest,
                &self.metrics,
            );
            self.reap_acks();
            if self.shedding && !self.shed_reconnect && self.held.is_empty() && self.ack_debt() == 0
            {
                // Everything taken is processed and its acks are written:
                // a new connection has the broker redeliver the rest.
                self.shed_reconnect = true;
                self.metrics.shed_reconnects.fetch_add(1, Relaxed);
                tracing::info!("reconnecting ingest to have the shed messages redelivered");
                self.ingest.disconnect().await;
            }
            self.em.flush(&self.out, &self.metrics);
            // Between groups (the engine has seen every committed record):
            // start a due checkpoint, or write one whose outputs are acked.
            if self.group.staged.is_empty() {
                self.maybe_checkpoint(false)?;
            }
        }
        Ok(())
    }

    /// SIGTERM: finish the open group, publish, wait (bounded) for the
    /// broker's acknowledgements, write a final checkpoint, disconnect.
    async fn shutdown(&mut self) -> Result<bool, RunError> {
        tracing::info!("stopping: final commit and checkpoint");
        // Held messages are not acknowledged (the broker redelivers them);
        // held acks of outputs count.
        self.held_bytes = 0;
        for ev in std::mem::take(&mut self.held) {
            match ev {
                (Link::Output, MqttEvent::PubAck) => {
                    self.em.acked += 1;
                    self.metrics.published_acked.fetch_add(1, Relaxed);
                }
                // Never redelivered: journal them with the final commit.
                (_, MqttEvent::Wired(..)) => self.on_event(ev)?,
                (Link::Ingest, MqttEvent::Disconnected(_)) => self.forget_acks(),
                _ => {}
            }
        }
        self.commit_group()?;
        // An update on trial keeps the checkpoint of its switch (a rollback
        // after the restart restores it and replays the journal after it).
        let checking = self.updates.as_ref().is_some_and(|u| u.checking());
        if !checking {
            self.pending_ckpt.clear();
        }
        let mut written = self.maybe_checkpoint(true)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Until the checkpoint is written and every ack is on the wire (an
        // ack left behind would have the broker redeliver that message).
        let acks_out = |a: &Agent| {
            a.acks.is_empty()
                && a.metrics.acks_written.load(Relaxed) >= a.metrics.acks.load(Relaxed)
        };
        while !((written || checking) && acks_out(self)) && Instant::now() < deadline {
            flush_acks(
                &mut self.acks,
                &mut self.ack_fifo,
                &self.ingest,
                &self.metrics,
            );
            self.reap_acks();
            self.em.flush(&self.out, &self.metrics);
            if !written && self.maybe_checkpoint(false)? {
                written = true;
            }
            if (written || checking) && acks_out(self) {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(5), self.rx.recv()).await {
                Ok(Some((Link::Output, MqttEvent::PubAck))) => {
                    self.em.acked += 1;
                    self.metrics.published_acked.fetch_add(1, Relaxed);
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        if checking {
            tracing::info!("an update is on trial: no final checkpoint; its health check resumes at the next start");
        } else if !written {
            tracing::warn!(
                published = self.em.published,
                acked = self.em.acked,
                queued = self.em.queue.len(),
                "the broker did not acknowledge every output in time: no final checkpoint; the journal covers it"
            );
        }
        if self.cloud_dirty() {
            self.commit_store()?;
        }
        self.cloud_metrics();
        if let Some(c) = &mut self.cloud {
            c.shutdown().await;
        }
        if let Some(u) = &mut self.updates {
            u.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ingest.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.out.disconnect()).await;
        // Until the broker closes both connections (it does on DISCONNECT):
        // a socket closed with unread data sends a reset, and a reset makes
        // the broker's kernel discard what the broker has not read yet, the
        // last acks among it (the next start then sees redeliveries).
        // Messages read meanwhile are not acknowledged; the broker keeps them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut open = [
            self.metrics.connected.load(Relaxed),
            self.metrics.output_connected.load(Relaxed),
        ];
        while open.iter().any(|o| *o) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((link, MqttEvent::Disconnected(_)))) => open[link as usize] = false,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        Ok(written)
    }
}

/// The next event of the update link (pending forever without one).
async fn control(u: &mut Option<update::Updates>) -> Option<update::Control> {
    match u {
        Some(u) => u.recv().await,
        None => std::future::pending().await,
    }
}

/// The source a topic goes to: the first route whose filter matches it,
/// remembered per topic (at most 10,000 topics, then forgotten at once).
fn route_cached(
    routes: &[(String, usize, u8)],
    cache: &mut HashMap<String, Option<usize>>,
    topic: &str,
) -> Option<usize> {
    if let Some(r) = cache.get(topic) {
        return *r;
    }
    let r = routes
        .iter()
        .find(|(f, _, _)| mqtt::filter_matches(f, topic))
        .map(|r| r.1);
    if cache.len() >= 10_000 {
        cache.clear();
    }
    cache.insert(topic.to_string(), r);
    r
}

/// The decoders and topic routes of a pipeline's MQTT sources.
#[allow(clippy::type_complexity)]
fn routes_of(pf: &PipelineFile) -> (Vec<Option<Decoder>>, Vec<(String, usize, u8)>) {
    let mut decoders = Vec::new();
    let mut routes = Vec::new();
    for (i, m) in pf.mqtt.iter().enumerate() {
        match m {
            Some(m) => {
                for t in &m.topics {
                    routes.push((t.clone(), i, m.qos));
                }
                decoders.push(Some(m.decoder.clone()));
            }
            None => decoders.push(None),
        }
    }
    (decoders, routes)
}

impl Agent {
    fn on_control(&mut self, c: update::Control) -> Result<(), RunError> {
        let Some(u) = &mut self.updates else {
            return Ok(());
        };
        match c {
            update::Control::Connected => u.publish_status(),
            update::Control::TooLarge(n) => {
                u.too_large(n);
                *self
                    .metrics
                    .updates
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry("rejected")
                    .or_default() += 1;
            }
            update::Control::Doc(doc) => {
                let r = u.offer(&doc, |pf| {
                    if routes_of(pf).1.is_empty() {
                        Err("no source has a [source.mqtt] table: `weir run` would have nothing to subscribe to".into())
                    } else {
                        pf.spec.clone().build().map(|_| ()).map_err(|e| e.to_string())
                    }
                });
                if r.is_err() {
                    *self
                        .metrics
                        .updates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry("rejected")
                        .or_default() += 1;
                } else {
                    // Staged is durable before it is announced.
                    self.persist_updates()?;
                    if let Some(u) = &self.updates {
                        u.publish_status();
                    }
                }
                self.update_tick()?;
            }
        }
        Ok(())
    }

    fn health_inputs(&self) -> (u64, u64, i64) {
        let m = &self.metrics;
        let wm = match self.engine.watermark() {
            weir_core::time::Watermark::EventTime(t) => t,
            _ => i64::MIN,
        };
        // User functions' failed calls count as bad inputs too.
        let errors = m.dead_letters.load(Relaxed) + self.pf.functions.failures();
        (errors, m.readings.load(Relaxed), wm)
    }

    /// After recovery: an update that was on trial when the agent stopped
    /// runs its health check again, from now and for its whole duration.
    fn resume_update(&mut self) {
        let (errors, readings, wm) = self.health_inputs();
        if let Some(u) = self.updates.as_mut().filter(|u| u.checking()) {
            tracing::info!(
                version = u.version(),
                "an update was on trial when the agent stopped: its health check starts again"
            );
            u.watch(errors, readings, wm);
        }
    }

    /// Applies a staged update at a checkpoint boundary, and judges a
    /// running health check.
    fn update_tick(&mut self) -> Result<(), RunError> {
        let Some(u) = &self.updates else {
            return Ok(());
        };
        let (errors, readings, wm) = self.health_inputs();
        match u.health_verdict(errors, readings, wm) {
            Some(Ok(())) => self.apply()?,
            Some(Err(reason)) => self.roll_back(reason)?,
            None => {}
        }
        let boundary = self.group.staged.is_empty()
            && !self.pending_ckpt.is_pending()
            && self.em.queue.is_empty()
            && self.em.acked >= self.em.published;
        let ready = self.updates.as_ref().is_some_and(|u| u.staged());
        if boundary && ready {
            self.switch()?;
        }
        Ok(())
    }

    /// The health check passed: the update on trial stays.
    fn apply(&mut self) -> Result<(), RunError> {
        use weir_cloud_sync::update::UpdateResult;
        let Some(u) = &mut self.updates else {
            return Ok(());
        };
        u.phase = update::Phase::Idle;
        u.clear_held();
        let (kept, reset) = (u.status.kept.clone(), u.status.reset.clone());
        let v = u.version();
        u.set_status(UpdateResult::Applied, None, Some(v), kept, reset);
        *self
            .metrics
            .updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry("applied")
            .or_default() += 1;
        tracing::info!(version = v, "pipeline update passed its health check");
        self.persist_updates()?;
        if let Some(u) = &self.updates {
            u.publish_status();
        }
        self.maybe_checkpoint(true)?;
        Ok(())
    }

    /// Installs `pf` as the running pipeline with `engine` (decoders,
    /// routes, encoders, subscriptions).
    fn install(&mut self, pf: PipelineFile, engine: Engine, text: String) {
        let (decoders, routes) = routes_of(&pf);
        for (f, _, _) in &self.routes {
            if !routes.iter().any(|r| &r.0 == f) {
                let _ = self.ingest.try_unsubscribe(f);
            }
        }
        self.decoders = decoders;
        self.routes = routes;
        self.topic_cache.clear();
        self.em.enc = OutputEncoder::for_pipeline(
            &self.cfg.id,
            &self.cfg.prefix,
            self.cfg.output_format,
            &pf,
        );
        if let Some(c) = &mut self.em.cloud {
            c.set_pipeline(&pf);
        }
        self.idle_timeouts = pf.spec.sources.iter().map(|s| s.idle_timeout).collect();
        self.source_last_now = vec![None; pf.spec.sources.len()];
        self.processing_time = pf.spec.time.mode == TimeMode::Processing
            || pf
                .spec
                .operators
                .iter()
                .any(|o| matches!(o.kind, OperatorKind::Process(_)));
        *self
            .metrics
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = pf
            .spec
            .sources
            .iter()
            .map(|s| (s.name.clone(), None, 0))
            .collect();
        self.metrics.dash.set_pipeline(
            &pf.spec,
            dash::PipelineInfo {
                name: pf.spec.name.clone(),
                version: self.metrics.pipeline_version.load(Relaxed),
                origin: if self.metrics.pipeline_version.load(Relaxed) == 0 {
                    self.cfg.pipeline.display().to_string()
                } else {
                    "signed update".into()
                },
                text,
            },
        );
        self.engine = engine;
        self.pf = pf;
        self.subscribe();
    }

    /// The staged update becomes the running pipeline, keeping the state of
    /// matching operators. The checkpoint of the switch holds the running
    /// engine's state, and in its transaction the new pipeline and the
    /// `Checking` phase: a restart runs the new pipeline from it (restoring
    /// the same state into it) and resumes the health check, and a rollback
    /// restores it into the previous pipeline.
    fn switch(&mut self) -> Result<(), RunError> {
        use weir_cloud_sync::update::UpdateResult;
        let snap = match self.engine.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("update waits: snapshot failed: {e}");
                return Ok(());
            }
        };
        let u = self.updates.as_mut().expect("checked");
        let update::Phase::Staged(staged) = std::mem::replace(&mut u.phase, update::Phase::Idle)
        else {
            return Ok(());
        };
        let mut engine = staged
            .pf
            .spec
            .clone()
            .build()
            .map_err(|e| RunError::Config(e.to_string()))?;
        let report = match engine.restore(&snap) {
            Ok(r) => r,
            Err(e) => {
                u.set_status(
                    UpdateResult::Rejected,
                    Some("invalid_pipeline".into()),
                    Some(staged.version),
                    Vec::new(),
                    Vec::new(),
                );
                tracing::warn!(
                    "update v{} rejected: the running state does not restore into it: {e}",
                    staged.version
                );
                self.persist_updates()?;
                if let Some(u) = &self.updates {
                    u.publish_status();
                }
                return Ok(());
            }
        };
        let (mut kept, mut reset) = (Vec::new(), Vec::new());
        for (id, o) in &report.operators {
            match o {
                weir_core::snapshot::OpRestore::Kept
                | weir_core::snapshot::OpRestore::KeptWindows => kept.push(id.clone()),
                _ => reset.push(id.clone()),
            }
        }
        let previous = u.active.take();
        u.active = Some(update::Active {
            version: staged.version,
            text: staged.text.clone(),
        });
        u.phase =
            update::Phase::Checking(update::Check::new(staged.version, previous, self.processed));
        u.set_status(
            UpdateResult::Staged,
            None,
            Some(staged.version),
            kept.clone(),
            reset.clone(),
        );
        // At a boundary every output is acknowledged: written at once.
        let mark = self.em.published + self.em.queue.len() as u64;
        self.pending_ckpt.take(
            self.processed,
            dedupe::checkpoint_record(&self.dedupe, &snap),
            mark,
        );
        self.maybe_checkpoint(false)?;
        self.metrics.pipeline_version.store(staged.version, Relaxed);
        tracing::info!(
            version = staged.version,
            ?kept,
            ?reset,
            "pipeline update applied; health check running"
        );
        self.install(staged.pf, engine, staged.text);
        let (errors, readings, wm) = self.health_inputs();
        if let Some(u) = &mut self.updates {
            u.watch(errors, readings, wm);
            u.publish_status();
        }
        self.publish_gauges();
        Ok(())
    }

    /// The health check failed: the previous pipeline comes back with the
    /// state of the checkpoint written at the switch, and the journal after
    /// it is replayed through it.
    fn roll_back(&mut self, reason: String) -> Result<(), RunError> {
        use weir_cloud_sync::update::UpdateResult;
        self.commit_group()?;
        let u = self.updates.as_mut().expect("checked");
        let update::Phase::Checking(check) = std::mem::replace(&mut u.phase, update::Phase::Idle)
        else {
            return Ok(());
        };
        let failed = u.version();
        tracing::warn!(
            version = failed,
            reason = reason.as_str(),
            "pipeline update failed its health check: rolling back"
        );
        let prev_pf = match &check.previous {
            None => u.file_pf.clone(),
            Some(a) => crate::pipeline_file::parse(
                &format!(
                    "{} (pipeline update v{})",
                    self.store.path().display(),
                    a.version
                ),
                &a.text,
            )
            .map_err(|e| RunError::Config(e.to_string()))?,
        };
        let restore_err = |detail: String| RunError::Restore {
            path: self.store.path().display().to_string(),
            pipeline: prev_pf.spec.name.clone(),
            detail,
        };
        let (mut seen, snap): (HashSet<u64>, _) = match self.store.latest()? {
            Some((upto, ckpt)) if upto == check.lsn => dedupe::decode_checkpoint(ckpt)
                .map(|(ring, snap)| (ring.into_iter().collect(), snap.to_vec()))
                .ok_or_else(|| restore_err("not an agent checkpoint".into()))?,
            other => {
                return Err(restore_err(format!(
                    "the newest checkpoint ({:?}) is not the one of the switch at {}",
                    other.map(|o| o.0),
                    check.lsn
                )))
            }
        };
        let mut engine = prev_pf
            .spec
            .clone()
            .build()
            .map_err(|e| RunError::Config(e.to_string()))?;
        engine
            .restore(&snap)
            .map_err(|e| restore_err(e.to_string()))?;
        let u = self.updates.as_mut().expect("checked");
        u.active = check.previous;
        u.clear_held();
        if self.cfg.durability == DurabilityMode::Journal {
            // The failed pipeline's records: never replayed into this one.
            u.skip = Some((check.lsn, self.store.committed_lsn()));
        }
        u.set_status(
            UpdateResult::RolledBack,
            Some(reason),
            Some(failed),
            Vec::new(),
            Vec::new(),
        );
        self.metrics.pipeline_version.store(u.version(), Relaxed);
        *self
            .metrics
            .updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry("rolled_back")
            .or_default() += 1;
        let text = self
            .updates
            .as_ref()
            .and_then(|u| u.active.as_ref())
            .map(|a| a.text.clone())
            .unwrap_or_else(|| std::fs::read_to_string(&self.cfg.pipeline).unwrap_or_default());
        self.install(prev_pf, engine, text);
        // The messages of the health check, taken again in the order they
        // came, journaled as new records in one commit together with the
        // rolled-back state: a crash leaves either the trial (which then
        // resumes) or all of this.
        let n = match self.cfg.durability {
            DurabilityMode::Journal => {
                let db = self.store.database().clone();
                let path = self.store.path().display().to_string();
                update::for_each_held(
                    &db,
                    |e| RunError::Config(format!("{path}: read the held messages: {e}")),
                    |now, topic, payload| {
                        let p = Incoming {
                            topic,
                            payload: payload.into(),
                            qos: 0,
                            ack: None,
                        };
                        self.take_message(p, now, Some(&mut seen))
                    },
                )?
            }
            DurabilityMode::Checkpoint => 0,
        };
        self.commit_group()?;
        tracing::info!(
            messages = n,
            "rolled back; the messages of the health check went through the previous pipeline again"
        );
        if let Some(u) = &self.updates {
            u.publish_status();
        }
        self.pending_ckpt.clear();
        self.maybe_checkpoint(true)?;
        self.publish_gauges();
        Ok(())
    }
}

/// Loads a board profile, checks its sensors against the pipeline's
/// sources, and opens them (first reads due now).
fn open_board(
    path: &std::path::Path,
    pf: &PipelineFile,
) -> Result<Vec<(usize, weir_boards::wired::WiredSensor)>, RunError> {
    let profile = weir_boards::profile::load(path).map_err(|e| RunError::Config(e.to_string()))?;
    profile
        .check_pipeline(&pf.spec)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let now = AgentClock::default().now();
    let sensors =
        weir_boards::wired::open(&profile, now).map_err(|e| RunError::Config(e.to_string()))?;
    let mut out = Vec::new();
    for s in sensors {
        let Some(i) = pf.spec.sources.iter().position(|x| x.name == s.source()) else {
            return Err(RunError::Config(format!(
                "{}: sensor `{}` feeds source `{}`, which the pipeline does not have",
                path.display(),
                s.name(),
                s.source()
            )));
        };
        tracing::info!(
            sensor = s.name(),
            source = s.source(),
            "wired sensor opened"
        );
        out.push((i, s));
    }
    Ok(out)
}

/// The wired sensors' driver (a thread of its own: bus reads block):
/// polls each sensor when it is due, on the gateway clock, and hands the
/// readings to the ingest loop. Faults are counted and backed off by the
/// sensor's health tracking (`weir_boards::health`), never fatal.
fn poll_wired(
    mut sensors: Vec<(usize, weir_boards::wired::WiredSensor)>,
    tx: mqtt::EventTx,
    metrics: Arc<Metrics>,
) {
    use weir_core::seam::Source;
    let mut clock = AgentClock::default();
    let mut last_health = Instant::now() - Duration::from_secs(10);
    loop {
        let now = clock.now();
        let mut next = now + 100;
        for (src, s) in sensors.iter_mut() {
            // A bounded catch-up: a stalled bus must not spin here.
            for _ in 0..64 {
                match s.poll_timeout() {
                    Some(t) if t <= now => {}
                    Some(t) => {
                        next = next.min(t);
                        break;
                    }
                    None => break,
                }
                match s.poll_read(now) {
                    Ok(Some(r)) => {
                        let ev = MqttEvent::Wired(*src, Box::new(r));
                        if tx.blocking_send((Link::Ingest, ev)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(sensor = s.name(), "read failed: {e}");
                        break;
                    }
                }
            }
        }
        if last_health.elapsed() >= Duration::from_secs(1) {
            last_health = Instant::now();
            let list: Vec<_> = sensors.iter().map(|(_, s)| s).collect();
            let mut text = String::new();
            let owned: Vec<&weir_boards::wired::WiredSensor> = list;
            let _ = weir_boards::health::write_prometheus(
                &mut text,
                owned.iter().map(|s| (s.name(), s.status())),
            );
            *metrics
                .wired_health
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = text;
        }
        if tx.is_closed() {
            return;
        }
        let wait = (next - clock.now()).clamp(1, 100) as u64;
        std::thread::sleep(Duration::from_millis(wait));
    }
}

/// Gives the page its gateway id, limits and token (made and kept in
/// `token_file` when none is given).
fn dashboard_setup(cfg: &GatewayConfig, metrics: &Metrics) {
    let d = &metrics.dash;
    *d.gateway.lock().unwrap_or_else(|e| e.into_inner()) = cfg.id.clone();
    d.configure(dash::DashConfig {
        max_series: cfg.dashboard.max_series,
    });
    d.loopback
        .store(cfg.metrics.is_none_or(|a| a.ip().is_loopback()), Relaxed);
    if cfg.metrics.is_none() {
        return; // no listener, no page
    }
    let token = match &cfg.dashboard.token {
        Some(t) => Some(t.clone()),
        None => match dashboard_token(&cfg.dashboard.token_file) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    file = %cfg.dashboard.token_file.display(),
                    "no dashboard token ({e}): alerts cannot be acknowledged on the page"
                );
                None
            }
        },
    };
    *d.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
}

/// Reads the token file, or makes one (32 random hex digits, 0600).
fn dashboard_token(path: &std::path::Path) -> std::io::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 16 {
            return Ok(t);
        }
    }
    let mut raw = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
    let t: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::fsutil::write_atomic(path, format!("{t}\n").as_bytes(), 0o600)?;
    Ok(t)
}

/// The first pause after a storage fault; it doubles up to
/// [`FAULT_BACKOFF_MAX`] while the fault lasts.
const FAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest pause between attempts to open the store again.
const FAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a storage error calls for.
enum FaultAction {
    /// Close the store, wait, open it again (a full or failing device).
    Retry,
    /// Move the damaged store aside and start a new one.
    MoveAside,
}

fn storage_action(e: &RunError) -> Option<FaultAction> {
    let RunError::Store(e) = e else { return None };
    match e.fault() {
        crate::store::Fault::Full | crate::store::Fault::Io => Some(FaultAction::Retry),
        crate::store::Fault::Damaged => Some(FaultAction::MoveAside),
        _ => match e {
            // Our own earlier handle not yet released (an uplink task
            // still closing): wait and try again.
            StoreError::Db { source, .. }
                if matches!(**source, redb::Error::DatabaseAlreadyOpen) =>
            {
                Some(FaultAction::Retry)
            }
            _ => None,
        },
    }
}

/// Says once that the store failed, then waits (doubling `backoff`) for a
/// stop, a signal or the next attempt. Returns `false` when asked to stop.
async fn storage_pause(
    metrics: &Metrics,
    e: &RunError,
    backoff: &mut Duration,
    stop: &tokio::sync::Notify,
    signals: &mut Signals,
) -> bool {
    metrics.storage_faults.fetch_add(1, Relaxed);
    let reason = e.to_string();
    let first = metrics
        .storage_fault
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(reason.clone())
        .is_none();
    if first {
        tracing::error!(
            "storage failed: {reason}; not acknowledging input (the broker keeps it), retrying              with backoff until the store works again"
        );
    } else {
        tracing::debug!(
            retry_in_ms = backoff.as_millis() as u64,
            "storage still failing: {reason}"
        );
    }
    let wait = *backoff;
    *backoff = (*backoff * 2).min(FAULT_BACKOFF_MAX);
    tokio::select! {
        _ = stop.notified() => false,
        _ = signals.recv() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Clears the storage fault once an agent is running again; returns
/// whether there was one.
fn storage_recovered(metrics: &Metrics) -> bool {
    let was = metrics
        .storage_fault
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(reason) = &was {
        tracing::warn!("storage works again (it failed with: {reason}); resuming input");
    }
    was.is_some()
}

/// Renames a store that fails its checks to `weir.redb.damaged-<UTC time>`
/// beside it (the name made durable), so the next open starts a new one.
fn move_store_aside(
    cfg: &GatewayConfig,
    e: &RunError,
    metrics: &Metrics,
) -> Result<std::path::PathBuf, RunError> {
    let from = cfg.data_dir.join("weir.redb");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let stamp: String = crate::timefmt::format_datetime_ms(stamp)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let to = cfg.data_dir.join(format!("weir.redb.damaged-{stamp}"));
    crate::fsutil::rename_durable(&from, &to).map_err(|source| RunError::Io {
        what: format!(
            "the store is damaged ({e}) and cannot be moved aside to {}",
            to.display()
        ),
        source,
    })?;
    metrics.stores_moved_aside.fetch_add(1, Relaxed);
    tracing::error!(
        "the store failed its checks ({e}); moved it to {} and started a new one: what it          held and the broker no longer keeps is lost (`weir check --store` reads the old one)",
        to.display()
    );
    Ok(to)
}

impl Agent {
    /// Stops everything that holds the store or a connection (after a
    /// storage fault): the pollers (unwritten acks die with them, so the
    /// broker redelivers), the uplink and the update link. Returns the
    /// channel, emptied but for wired readings, which are never redelivered.
    async fn teardown(mut self) -> (Channel, Vec<(Link, MqttEvent)>) {
        for p in &self.pollers {
            p.abort();
        }
        for p in std::mem::take(&mut self.pollers) {
            let _ = p.await;
        }
        if let Some(c) = &mut self.cloud {
            c.shutdown().await;
        }
        if let Some(u) = &mut self.updates {
            u.shutdown().await;
        }
        let mut wired: Vec<_> = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(_, ev)| matches!(ev, MqttEvent::Wired(..)))
            .collect();
        while let Ok(ev) = self.rx.try_recv() {
            if matches!(ev.1, MqttEvent::Wired(..)) {
                wired.push(ev);
            }
        }
        self.metrics.connected.store(false, Relaxed);
        self.metrics.output_connected.store(false, Relaxed);
        let Agent { tx, rx, .. } = self;
        ((tx, rx), wired)
    }
}

/// SIGTERM and SIGINT, registered up front.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT or [`Handle::stop`]; `on_start`
/// receives the handle once recovery is done. Blocks the calling thread
/// (a current-thread tokio runtime of its own: small and predictable).
///
/// # Errors
/// A store that cannot be opened or written, a checkpoint that does not
/// restore, a pipeline without MQTT sources, a metrics address in use.
pub fn run(
    cfg: GatewayConfig,
    pf: PipelineFile,
    on_start: impl FnOnce(Handle),
) -> Result<RunSummary, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Io {
            what: "cannot start the runtime".into(),
            source: e,
        })?;
    rt.block_on(run_async(cfg, pf, on_start))
}

/// [`run`] inside an existing tokio runtime.
///
/// # Errors
/// As [`run`].
pub async fn run_async(
    cfg: GatewayConfig,
    pf: PipelineFile,
    on_start: impl FnOnce(Handle),
) -> Result<RunSummary, RunError> {
    // Installed first: a SIGTERM during recovery stops the agent cleanly
    // once recovery is done, instead of killing it.
    let signals = Signals::install();
    let metrics = Arc::new(Metrics::default());
    dashboard_setup(&cfg, &metrics);
    let mut metrics_addr = None;
    let http = match cfg.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| RunError::Io {
                what: format!("{}: cannot listen for metrics on {addr} (is another weir running? set [metrics] listen)", cfg.file),
                source: e,
            })?;
            let bound = l.local_addr().map_or(addr, |a| a);
            metrics_addr = Some(bound);
            tracing::info!(addr = %bound, "metrics on /metrics, /healthz, /deadletters");
            Some(tokio::spawn(metrics::serve(l, metrics.clone())))
        }
        None => None,
    };
    let t0 = Instant::now();
    let mut board = match &cfg.board {
        Some(path) => Some(open_board(path, &pf)?),
        None => None,
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut signals = signals;
    let mut on_start = Some(on_start);
    let mut chan: Option<Channel> = Some(mpsc::channel(mqtt::EVENT_QUEUE));
    // Wired readings taken off the channel when a storage fault restarted
    // the agent: they are never redelivered, so the next agent gets them.
    let mut carried: Vec<(Link, MqttEvent)> = Vec::new();
    let mut backoff = FAULT_BACKOFF_MIN;
    let mut replayed = 0;
    let mut moved_aside: Option<String> = None;
    let result: Result<RunSummary, RunError> = loop {
        let built = match Agent::new(cfg.clone(), pf.clone(), metrics.clone(), &mut chan) {
            Ok(mut a) => match a.recover() {
                Ok(n) => {
                    // An update's health check that a stop interrupted
                    // goes on (or rolls back).
                    a.resume_update();
                    Ok((a, n))
                }
                Err(e) => {
                    let (ch, wired) = a.teardown().await;
                    chan = Some(ch);
                    carried.extend(wired);
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let (mut agent, n) = match built {
            Ok(x) => x,
            Err(e) => match storage_action(&e) {
                Some(FaultAction::MoveAside) => {
                    let to = move_store_aside(&cfg, &e, &metrics)?;
                    moved_aside = Some(format!("{e}; moved to {}", to.display()));
                    continue;
                }
                Some(FaultAction::Retry) => {
                    if !storage_pause(&metrics, &e, &mut backoff, &stop, &mut signals).await {
                        break Ok(RunSummary::default());
                    }
                    continue;
                }
                None => break Err(e),
            },
        };
        replayed += n;
        if let Some(why) = moved_aside.take() {
            let now = agent.clock.now();
            agent.dead("$weir/store", "store_damaged", why, b"", now);
        }
        for ev in carried.drain(..) {
            agent.held.push_back(ev);
        }
        if storage_recovered(&metrics) {
            backoff = FAULT_BACKOFF_MIN;
        }
        if let Some(sensors) = board.take() {
            let tx = agent.tx.clone();
            let m = metrics.clone();
            std::thread::Builder::new()
                .name("weir-wired".into())
                .spawn(move || poll_wired(sensors, tx, m))
                .map_err(|e| RunError::Io {
                    what: "cannot start the wired-sensor thread".into(),
                    source: e,
                })?;
        }
        tracing::info!(
            replayed = n,
            ms = t0.elapsed().as_millis() as u64,
            gateway = agent.cfg.id.as_str(),
            "recovered"
        );
        if let Some(f) = on_start.take() {
            f(Handle {
                metrics: metrics.clone(),
                metrics_addr,
                stop: stop.clone(),
            });
        }
        let res = agent.main_loop(&stop, &mut signals).await;
        match res {
            Ok(()) => {
                let final_checkpoint = agent.shutdown().await;
                agent.pollers.iter().for_each(|p| p.abort());
                match final_checkpoint {
                    Ok(fc) => {
                        break Ok(RunSummary {
                            final_checkpoint: fc,
                            ..RunSummary::default()
                        })
                    }
                    Err(e) if storage_action(&e).is_some() => {
                        // The broker keeps what was not acknowledged.
                        tracing::error!("the final checkpoint failed: {e}");
                        break Ok(RunSummary::default());
                    }
                    Err(e) => break Err(e),
                }
            }
            Err(e) => {
                let action = storage_action(&e);
                let (ch, wired) = agent.teardown().await;
                carried = wired;
                chan = Some(ch);
                match action {
                    Some(FaultAction::MoveAside) => {
                        let to = move_store_aside(&cfg, &e, &metrics)?;
                        moved_aside = Some(format!("{e}; moved to {}", to.display()));
                    }
                    Some(FaultAction::Retry) => {
                        if !storage_pause(&metrics, &e, &mut backoff, &stop, &mut signals).await {
                            break Ok(RunSummary::default());
                        }
                    }
                    None => break Err(e),
                }
            }
        }
    };
    let result = result.map(|summary| RunSummary {
        readings: metrics.readings.load(Relaxed),
        published: metrics.published.load(Relaxed),
        replayed,
        ..summary
    });
    if let Some(h) = http {
        h.abort();
    }
    result
}
