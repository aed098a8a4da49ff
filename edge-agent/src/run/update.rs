//! Signed pipeline updates in `weir run` (`[updates]` in gateway.toml).
//!
//! # Where updates come from
//!
//! A connection of its own (client id `<client_id>-ctl`, clean session) to
//! the **cloud broker** when `[cloud]` is set — the fleet pushes through
//! it — or to the local broker otherwise (`via` overrides). It subscribes
//! to `weir/<gateway>/pipeline/set` at QoS 1 and publishes the status,
//! retained, on `weir/<gateway>/pipeline/status` (CBOR,
//! [`weir_cloud_sync::update::Status`]) on every connect and change. An
//! update that arrives while the agent is down is not queued (clean
//! session): the retained status shows the fleet which version runs, and
//! it pushes again.
//!
//! # What happens to an update
//!
//! The lifecycle is a state machine ([`Phase`], persisted as [`Stored`]):
//!
//! ```text
//!        offer ok           switch at a boundary       health check passes
//! Idle ───────────► Staged ─────────────────────► Checking ──────────────► Idle (applied)
//!   ▲                                                 │ health check fails
//!   └─────────────────────────────────────────────────┘ (rolled back)
//! ```
//!
//! 1. [`weir_cloud_sync::update::verify`] against the trusted keys (size,
//!    shape, key, signature, gateway, version above the **highest version
//!    ever accepted**, persisted: a rolled-back update is not accepted
//!    again), then [`crate::pipeline_file::parse`] and the checks `weir
//!    run` makes (MQTT sources). Any failure: status `rejected` with the
//!    reason (`bad_signature`, `unknown_key`, `not_newer`, `wrong_gateway`,
//!    `malformed`, `oversized`, `invalid_pipeline`, and `busy` while
//!    another update is in its health check); the running pipeline is
//!    untouched. The control link reads packets up to
//!    [`control_max_packet`] (4 × `max_bytes`, 16 MiB at least), so an
//!    oversized document gets its status and the link stays up; a larger
//!    one breaks the link unread and is reported as `oversized` all the
//!    same ([`Control::TooLarge`]).
//! 2. Accepted: `Staged` (text and version) and the new highest version
//!    are committed before the status says `staged`; a newer document
//!    replaces a staged one. At a checkpoint boundary (no open group,
//!    every local output acknowledged) the running engine's snapshot is
//!    restored into the new engine (operators whose id and state type
//!    match keep their state: reported as kept / reset), and the
//!    **checkpoint of the switch** is written: the running engine's state
//!    at the switch, and in the same transaction the new pipeline's text
//!    and version and `Checking` (version on trial, the pipeline to come
//!    back to, the switch position).
//! 3. Health check for `health_check`: it fails on more than `max_errors`
//!    bad inputs or engine rejects, or when readings arrived but the
//!    watermark did not advance. No checkpoint is written meanwhile (not
//!    even SIGTERM's final one), so the checkpoint of the switch stays the
//!    newest, and every message is kept as it came (table
//!    `agent_update_held`, written in its group's commit; journal mode).
//!    A restart in `Checking` runs the new pipeline from the checkpoint of
//!    the switch (the same state goes into it again), replays the journal,
//!    and starts the health check again, for its whole duration.
//!    Pass: `Idle`, status `applied`, held messages dropped, a checkpoint.
//!    Fail: the previous pipeline comes back with the state of the
//!    checkpoint of the switch, and the held messages are decoded by it
//!    again and journaled as new records, in one commit with `Idle`, the
//!    previous pipeline, status `rolled_back` and the range of the failed
//!    pipeline's journal records, which replay skips until a checkpoint
//!    covers it. A held message whose identity (under the pipeline that
//!    comes back) is in the dedupe ring of the checkpoint of the switch, or
//!    was taken again already, is a redelivery (the failed pipeline could
//!    not recognise it) and is dropped as a duplicate. So a failed update
//!    loses no reading and counts none twice (readings without a payload
//!    timestamp: at least once, as everywhere).
//!    Outputs are published again, with the same ids where both pipelines
//!    emit the same window.
//!
//! Limits: wired-sensor readings during a failed health check are not
//! held (they are lost to the rolled-back pipeline); messages larger than
//! [`HELD_MAX_BYTES`] are not held; topics the new pipeline unsubscribed
//! from are not received during the check; a rollback stages the
//! readings of the whole check in memory for its one commit (the held
//! messages themselves are read one at a time), so a long `health_check`
//! on a busy gateway costs memory at a rollback; messages redelivered
//! across the switch are recognised by the new pipeline only if it
//! decodes them to the same readings.
//!
//! # Persisted state (table `agent_pipeline` in the agent's redb file)
//!
//! | key | value |
//! |---|---|
//! | `version`, `text` | the pipeline an update installed (u64 BE, UTF-8); absent: the gateway's file |
//! | `status` | the last status (CBOR, as published) |
//! | `accepted` | the highest version ever accepted, u64 BE (absent: the running version) |
//! | `lifecycle` | [`Stored`]: absent idle; `[1][version u64 BE][text]` staged; `[2][version u64 BE][switch LSN u64 BE][0]` or `…[1][previous version u64 BE][previous text]` checking |
//! | `skip` | `[a u64 BE][b u64 BE]`: journal records `a < lsn ≤ b` belong to a rolled-back pipeline |
//!
//! Table `agent_update_held`: sequence (u64) → `[agent clock ms i64 BE]
//! [topic length u32 BE][topic][payload]`, only while an update is on
//! trial.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use weir_cloud_sync::update::{self, Status, UpdateRejection, UpdateResult};

use super::mqtt::{self, Link};
use crate::gateway::{GatewayConfig, UpdatesVia};
use crate::pipeline_file::PipelineFile;
use crate::store::{HookError, Lsn};

const PIPELINE: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_pipeline");

/// Messages that arrived while an update was on trial, as they came:
/// sequence number → `[now: i64 BE][topic length: u32 BE][topic][payload]`.
const HELD: TableDefinition<u64, &[u8]> = TableDefinition::new("agent_update_held");

/// Larger messages are not held for a rollback (they are logged).
pub const HELD_MAX_BYTES: usize = 1 << 20;

/// The pipeline an update installed, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// Its version.
    pub version: u64,
    /// Its text (TOML).
    pub text: String,
}

/// Where the update lifecycle stands, as persisted (key `lifecycle` of
/// table `agent_pipeline`; absent: [`Stored::Idle`]).
///
/// ```text
///            offer ok             switch (checkpoint)        verdict ok
///   Idle ──────────────► Staged ──────────────────► Checking ──────────► Idle (applied)
///     ▲                                                 │ verdict failed
///     └─────────────────────────────────────────────────┘ (rolled back)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// No update in flight.
    Idle,
    /// Verified, waiting for a checkpoint boundary.
    Staged {
        /// Its version.
        version: u64,
        /// Its text.
        text: String,
    },
    /// Switched; the health check runs. The newest checkpoint is the one
    /// written at the switch: the previous pipeline's state at `lsn`.
    Checking {
        /// The version on trial (the active pipeline).
        version: u64,
        /// What a rollback restores (`None`: the gateway's own file).
        previous: Option<Active>,
        /// The journal position of the switch.
        lsn: Lsn,
    },
}

impl Stored {
    /// `[0]` idle; `[1][version u64 BE][text]` staged;
    /// `[2][version u64 BE][lsn u64 BE][0]` checking with the gateway's
    /// file to come back to, or `…[1][previous version u64 BE][text]`.
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Stored::Idle => v.push(0),
            Stored::Staged { version, text } => {
                v.push(1);
                v.extend_from_slice(&version.to_be_bytes());
                v.extend_from_slice(text.as_bytes());
            }
            Stored::Checking {
                version,
                previous,
                lsn,
            } => {
                v.push(2);
                v.extend_from_slice(&version.to_be_bytes());
                v.extend_from_slice(&lsn.to_be_bytes());
                match previous {
                    None => v.push(0),
                    Some(a) => {
                        v.push(1);
                        v.extend_from_slice(&a.version.to_be_bytes());
                        v.extend_from_slice(a.text.as_bytes());
                    }
                }
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Stored> {
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let text_from =
            |i: usize| -> Option<String> { String::from_utf8(b.get(i..)?.to_vec()).ok() };
        match *b.first()? {
            0 if b.len() == 1 => Some(Stored::Idle),
            1 => Some(Stored::Staged {
                version: u64_at(1)?,
                text: text_from(9)?,
            }),
            2 => Some(Stored::Checking {
                version: u64_at(1)?,
                lsn: u64_at(9)?,
                previous: match *b.get(17)? {
                    0 if b.len() == 18 => None,
                    1 => Some(Active {
                        version: u64_at(18)?,
                        text: text_from(26)?,
                    }),
                    _ => return None,
                },
            }),
            _ => None,
        }
    }
}

/// What the agent's store holds about updates ([`load`]).
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// The pipeline an update installed (`None`: the gateway's file).
    pub active: Option<Active>,
    /// The last status.
    pub status: Option<Status>,
    /// The lifecycle (`None`: idle).
    pub stored: Option<Stored>,
    /// The highest version ever accepted (staged), 0 before the first.
    pub accepted: u64,
    /// Journal records `(a, b]` of a pipeline that was rolled back, not to
    /// be replayed (until a checkpoint covers `b`).
    pub skip: Option<(Lsn, Lsn)>,
    /// The next sequence number of a held message.
    pub held_next: u64,
}

/// Reads what the store holds about updates.
///
/// # Errors
/// redb's error, or a damaged record (named).
pub fn load(db: &redb::Database) -> Result<Persisted, String> {
    let r = db.begin_read().map_err(|e| e.to_string())?;
    let t = match r.open_table(PIPELINE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Persisted::default()),
        Err(e) => return Err(e.to_string()),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
        Ok(t.get(k)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_vec()))
    };
    let be = |v: Vec<u8>| v.try_into().ok().map(u64::from_be_bytes);
    let version = get("version")?.and_then(be);
    let accepted = get("accepted")?.and_then(be).unwrap_or(0);
    let skip = match get("skip")? {
        Some(b) if b.len() == 16 => Some((
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(b[8..].try_into().unwrap_or_default()),
        )),
        Some(_) => return Err("the rolled-back range record (`skip`) is damaged".into()),
        None => None,
    };
    let held_next = match r.open_table(HELD) {
        Ok(h) => h
            .last()
            .map_err(|e| e.to_string())?
            .map_or(0, |(k, _)| k.value() + 1),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.to_string()),
    };
    let text = get("text")?.and_then(|v| String::from_utf8(v).ok());
    let status = get("status")?.and_then(|v| Status::from_cbor(&v).ok());
    let stored = match get("lifecycle")? {
        Some(b) => {
            Some(Stored::decode(&b).ok_or("the update lifecycle record (`lifecycle`) is damaged")?)
        }
        None => None,
    };
    let active = match (version, text) {
        (Some(version), Some(text)) => Some(Active { version, text }),
        _ => None,
    };
    Ok(Persisted {
        active,
        status,
        stored,
        accepted,
        skip,
        held_next,
    })
}

/// Calls `f` on each message held during a health check, in the order
/// they came: `(agent clock ms, topic, payload)`, one at a time (not all in
/// memory). Damaged entries are skipped (logged). Returns how many `f` saw.
///
/// # Errors
/// redb's error (through `err`), or `f`'s.
pub fn for_each_held<E>(
    db: &redb::Database,
    err: impl Fn(String) -> E,
    mut f: impl FnMut(i64, String, Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    let r = db.begin_read().map_err(|e| err(e.to_string()))?;
    let t = match r.open_table(HELD) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(err(e.to_string())),
    };
    let mut n = 0;
    for e in t.iter().map_err(|e| err(e.to_string()))? {
        let (k, v) = e.map_err(|e| err(e.to_string()))?;
        match decode_held(v.value()) {
            Some((now, topic, payload)) => {
                f(now, topic, payload)?;
                n += 1;
            }
            None => tracing::warn!(seq = k.value(), "a held message is damaged: skipped"),
        }
    }
    Ok(n)
}

fn encode_held(now: i64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + topic.len() + payload.len());
    v.extend_from_slice(&now.to_be_bytes());
    v.extend_from_slice(&u32::try_from(topic.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(payload);
    v
}

fn decode_held(b: &[u8]) -> Option<(i64, String, Vec<u8>)> {
    let now = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(b.get(12..12usize.checked_add(len)?)?).ok()?;
    Some((now, topic.to_string(), b[12 + len..].to_vec()))
}

/// What the control connection reports.
#[derive(Debug)]
pub enum Control {
    /// (Re)connected: publish the status again.
    Connected,
    /// A document on `…/pipeline/set`.
    Doc(bytes::Bytes),
    /// A packet of this many bytes, above [`control_max_packet`], broke
    /// the connection (rumqttc refuses it before reading it).
    TooLarge(usize),
}

/// The control connection's incoming packet limit for documents of at most
/// `max_bytes`: 4 × `max_bytes`, at least 16 MiB, at most MQTT's own
/// maximum. A document up to it arrives and is rejected as `oversized`
/// with the link intact; a larger one breaks the connection (rumqttc reads
/// no further), is reported as `oversized` all the same, and the link
/// reconnects. The limit keeps a huge document from taking the gateway's
/// memory (the bundle's unit has `MemoryMax=256M`).
pub fn control_max_packet(max_bytes: usize) -> usize {
    max_bytes.saturating_mul(4).clamp(16 << 20, 256 << 20)
}

/// An update that passed verification and validation, waiting for a
/// checkpoint boundary.
#[derive(Debug)]
pub struct Staged {
    /// Its version.
    pub version: u64,
    /// Its text.
    pub text: String,
    /// The parsed pipeline.
    pub pf: PipelineFile,
}

/// A health check's baseline and deadline (not persisted: a restart starts
/// the check afresh, for its whole duration).
#[derive(Debug)]
struct Watch {
    deadline: Instant,
    errors0: u64,
    readings0: u64,
    watermark0: i64,
}

/// A switched update under its health check.
#[derive(Debug)]
pub struct Check {
    /// The version on trial.
    pub version: u64,
    /// What a rollback restores (`None`: the gateway's own file).
    pub previous: Option<Active>,
    /// The journal position of the switch, where the newest checkpoint is
    /// (the previous pipeline's state).
    pub lsn: Lsn,
    watch: Option<Watch>,
}

impl Check {
    /// An update switched to at journal position `lsn`; its health check
    /// starts with [`Updates::watch`].
    pub fn new(version: u64, previous: Option<Active>, lsn: Lsn) -> Check {
        Check {
            version,
            previous,
            lsn,
            watch: None,
        }
    }
}

/// The update lifecycle of a running agent ([`Stored`] is its persisted
/// form).
#[derive(Debug)]
pub enum Phase {
    /// No update in flight.
    Idle,
    /// Waiting for a checkpoint boundary.
    Staged(Staged),
    /// Switched; the health check runs.
    Checking(Check),
}

impl Phase {
    fn stored(&self) -> Stored {
        match self {
            Phase::Idle => Stored::Idle,
            Phase::Staged(s) => Stored::Staged {
                version: s.version,
                text: s.text.clone(),
            },
            Phase::Checking(c) => Stored::Checking {
                version: c.version,
                previous: c.previous.clone(),
                lsn: c.lsn,
            },
        }
    }
}

/// The update machinery of a running agent.
pub struct Updates {
    gateway: String,
    trusted: Vec<VerifyingKey>,
    max_bytes: usize,
    health_ms: u64,
    max_errors: u64,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Control>,
    task: tokio::task::JoinHandle<()>,
    topic_status: String,
    /// The gateway's own pipeline file (what a rollback to "no update"
    /// restores).
    pub file_pf: PipelineFile,
    /// The status as last set.
    pub status: Status,
    /// The highest version ever accepted: replay protection compares with
    /// it, not with the running version, which a rollback lowers.
    pub accepted: u64,
    /// The running pipeline's persisted form (`None`: the gateway's file).
    pub active: Option<Active>,
    /// Where the lifecycle stands.
    pub phase: Phase,
    /// The persisted state changed: write it with the next commit or
    /// checkpoint ([`Updates::persist_in`]).
    pub dirty: bool,
    /// Journal records `(a, b]` of a rolled-back pipeline, not to be
    /// replayed ([`Persisted::skip`]).
    pub skip: Option<(Lsn, Lsn)>,
    /// Held messages to write with the next commit (encoded).
    held: Vec<Vec<u8>>,
    held_next: u64,
    clear_held: bool,
}
impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Updates {
    /// Starts the control connection when `[updates]` names trusted keys;
    /// `None` otherwise. `persisted` as [`load`] read it; `file_pf` is the
    /// gateway's own pipeline.
    ///
    /// # Errors
    /// A key file cannot be read, or a TLS file.
    pub fn start(
        cfg: &GatewayConfig,
        persisted: Persisted,
        file_pf: PipelineFile,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<Option<Updates>, String> {
        let Persisted {
            active,
            status,
            stored,
            accepted,
            skip,
            held_next,
        } = persisted;
        let u = &cfg.updates;
        if u.trusted_keys.is_empty() {
            return Ok(None);
        }
        let trusted = u
            .trusted_keys
            .iter()
            .map(|p| crate::identity::load_verifying_key(p).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let broker = match (u.via, &cfg.cloud) {
            (UpdatesVia::Cloud, Some(c)) => &c.broker,
            _ => &cfg.broker,
        };
        let mut o: MqttOptions = mqtt::options(broker, Link::Output)?;
        o.set_client_id(format!("{}-ctl", broker.client_id));
        // Documents well above `max_bytes` still arrive and are rejected
        // as `oversized` with the link intact (a limit of 4 × max_bytes,
        // 1 MiB at least, broke the link on a 10 MB document, and a
        // retained one broke every reconnect).
        o.set_clean_session(true)
            .set_manual_acks(false)
            .set_max_packet_size(control_max_packet(u.max_bytes), broker.max_packet);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let set = format!("weir/{}/pipeline/set", cfg.id);
        let c2 = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.try_subscribe(set.clone(), QoS::AtLeastOnce);
                        if tx.send(Control::Connected).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == set => {
                        if tx.send(Control::Doc(p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(rumqttc::ConnectionError::MqttState(
                        rumqttc::StateError::Deserialization(
                            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
                        ),
                    )) => {
                        if tx.send(Control::TooLarge(n)).is_err() {
                            return;
                        }
                        // A retained one comes back on every connect.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::debug!("update link: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let version = active.as_ref().map_or(0, |a| a.version);
        metrics
            .pipeline_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
        let status = status.unwrap_or(Status {
            gateway: cfg.id.clone(),
            current_version: version,
            last_result: UpdateResult::None,
            reason: None,
            last_version: None,
            kept: Vec::new(),
            reset: Vec::new(),
            updated_at: now_ms(),
        });
        let mut dirty = false;
        let phase = match stored.unwrap_or(Stored::Idle) {
            Stored::Idle => Phase::Idle,
            Stored::Staged { version, text } => {
                let name = format!("staged pipeline update v{version}");
                match crate::pipeline_file::parse(&name, &text) {
                    Ok(pf) => {
                        tracing::info!(
                            version,
                            "an update staged before the restart waits for a checkpoint boundary"
                        );
                        Phase::Staged(Staged { version, text, pf })
                    }
                    Err(e) => {
                        // Validated when it came; this build reads it otherwise.
                        tracing::warn!(version, "the staged update no longer parses: {e}");
                        dirty = true;
                        Phase::Idle
                    }
                }
            }
            Stored::Checking {
                version,
                previous,
                lsn,
            } => Phase::Checking(Check {
                version,
                previous,
                lsn,
                watch: None,
            }),
        };
        let mut up = Updates {
            gateway: cfg.id.clone(),
            trusted,
            max_bytes: u.max_bytes,
            health_ms: u.health_ms,
            max_errors: u.max_errors,
            client,
            rx,
            task,
            topic_status: format!("weir/{}/pipeline/status", cfg.id),
            file_pf,
            status,
            accepted,
            active,
            phase,
            dirty,
            skip,
            held: Vec::new(),
            held_next,
            clear_held: false,
        };
        if dirty {
            up.set_status(
                UpdateResult::Rejected,
                Some("invalid_pipeline".into()),
                up.status.last_version,
                Vec::new(),
                Vec::new(),
            );
        }
        Ok(Some(up))
    }

    /// The next control event.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Control> {
        self.rx.recv().await
    }

    /// The running version (0: the gateway's file).
    pub fn version(&self) -> u64 {
        self.active.as_ref().map_or(0, |a| a.version)
    }

    /// Publishes the status, retained.
    pub fn publish_status(&self) {
        let _ = self.client.try_publish(
            self.topic_status.clone(),
            QoS::AtLeastOnce,
            true,
            self.status.to_cbor(),
        );
    }

    /// Sets the status (persisted with the next commit or checkpoint);
    /// [`Updates::publish_status`] publishes it.
    pub fn set_status(
        &mut self,
        result: UpdateResult,
        reason: Option<String>,
        last_version: Option<u64>,
        kept: Vec<String>,
        reset: Vec<String>,
    ) {
        self.status = Status {
            gateway: self.gateway.clone(),
            current_version: self.version(),
            last_result: result,
            reason,
            last_version,
            kept,
            reset,
            updated_at: now_ms(),
        };
        self.dirty = true;
    }

    /// Verifies and validates a document; on success it is staged (the
    /// caller persists, then publishes the status), replacing one staged
    /// before. While an update is on trial, a document is refused as
    /// `busy`.
    /// `runnable` applies `weir run`'s own checks to the parsed pipeline.
    ///
    /// # Errors
    /// Why it was rejected (the status says so already).
    pub fn offer(
        &mut self,
        doc: &[u8],
        runnable: impl Fn(&PipelineFile) -> Result<(), String>,
    ) -> Result<u64, UpdateRejection> {
        let r = update::verify(
            doc,
            &self.trusted,
            &self.gateway,
            self.accepted.max(self.version()),
            self.max_bytes,
        )
        .and_then(|v| {
            if let Phase::Checking(c) = &self.phase {
                return Err(UpdateRejection::Busy {
                    version: v.version,
                    on_trial: c.version,
                });
            }
            let pf = crate::pipeline_file::parse(
                &format!("pipeline update v{}", v.version),
                &v.pipeline,
            )
            .map_err(|e| UpdateRejection::InvalidPipeline(e.to_string()))?;
            runnable(&pf).map_err(UpdateRejection::InvalidPipeline)?;
            Ok((v, pf))
        });
        match r {
            Ok((v, pf)) => {
                let version = v.version;
                self.accepted = version;
                tracing::info!(
                    version,
                    key = v.key_id.as_str(),
                    "pipeline update verified; staged for the next checkpoint"
                );
                self.phase = Phase::Staged(Staged {
                    version,
                    text: v.pipeline,
                    pf,
                });
                self.set_status(
                    UpdateResult::Staged,
                    None,
                    Some(version),
                    Vec::new(),
                    Vec::new(),
                );
                Ok(version)
            }
            Err(e) => {
                self.reject(&e);
                Err(e)
            }
        }
    }

    /// A document too large to read ([`Control::TooLarge`]): rejected as
    /// `oversized`.
    pub fn too_large(&mut self, len: usize) {
        self.reject(&UpdateRejection::Oversized {
            len,
            max: self.max_bytes,
        });
    }

    /// Logs a rejection and publishes its status at once (nothing else
    /// changed; the status rides on the next commit).
    fn reject(&mut self, e: &UpdateRejection) {
        tracing::warn!(reason = e.reason(), "{e}");
        let last = match e {
            UpdateRejection::NotNewer { version, .. } | UpdateRejection::Busy { version, .. } => {
                Some(*version)
            }
            _ => None,
        };
        self.set_status(
            UpdateResult::Rejected,
            Some(e.reason().to_string()),
            last,
            Vec::new(),
            Vec::new(),
        );
        self.publish_status();
    }

    /// Whether an update is on trial (no checkpoints meanwhile: the newest
    /// one is the previous pipeline's, which a rollback restores).
    pub fn checking(&self) -> bool {
        matches!(self.phase, Phase::Checking(_))
    }

    /// Whether an update waits for a checkpoint boundary.
    pub fn staged(&self) -> bool {
        matches!(self.phase, Phase::Staged(_))
    }

    /// Starts (or, after a restart, starts again) the health check of the
    /// update on trial, from these counters.
    pub fn watch(&mut self, errors: u64, readings: u64, watermark: i64) {
        let health_ms = self.health_ms;
        if let Phase::Checking(c) = &mut self.phase {
            c.watch = Some(Watch {
                deadline: Instant::now() + Duration::from_millis(health_ms),
                errors0: errors,
                readings0: readings,
                watermark0: watermark,
            });
        }
    }

    /// The health check's verdict now: `None` while it runs (or when none
    /// runs), `Some(Ok)` passed, `Some(Err(reason))` failed.
    pub fn health_verdict(
        &self,
        errors: u64,
        readings: u64,
        watermark: i64,
    ) -> Option<Result<(), String>> {
        let Phase::Checking(Check { watch: Some(h), .. }) = &self.phase else {
            return None;
        };
        let bad = errors.saturating_sub(h.errors0);
        if bad > self.max_errors {
            return Some(Err(format!(
                "health_check: {bad} bad inputs or engine rejects (max {})",
                self.max_errors
            )));
        }
        if Instant::now() < h.deadline {
            return None;
        }
        if readings > h.readings0 && watermark <= h.watermark0 {
            return Some(Err(
                "health_check: readings arrived but the watermark did not advance".into(),
            ));
        }
        Some(Ok(()))
    }

    /// While an update is on trial, keeps a message as it came (written
    /// with the next commit) for a rollback to take again.
    pub fn hold(&mut self, now: i64, topic: &str, payload: &[u8]) {
        if !self.checking() {
            return;
        }
        if payload.len() > HELD_MAX_BYTES {
            tracing::warn!(
                topic,
                bytes = payload.len(),
                "a message of {} bytes during a health check is not kept for a rollback (limit {HELD_MAX_BYTES})",
                payload.len()
            );
            return;
        }
        self.held.push(encode_held(now, topic, payload));
    }

    /// Drops the held messages (with the next commit).
    pub fn clear_held(&mut self) {
        self.held.clear();
        self.clear_held = true;
    }

    /// Whether [`Updates::persist_in`] has something to write.
    pub fn needs_write(&self) -> bool {
        self.dirty || self.clear_held || !self.held.is_empty()
    }

    /// Writes the persisted state (active pipeline, status, highest
    /// accepted version, lifecycle, rolled-back range) when it changed, and
    /// the held messages, into `txn`: the transaction of a journal commit,
    /// or of a checkpoint covering the journal through `checkpoint`.
    ///
    /// # Errors
    /// redb's error.
    pub fn persist_in(
        &self,
        txn: &WriteTransaction,
        checkpoint: Option<Lsn>,
    ) -> Result<(), HookError> {
        if self.clear_held {
            txn.delete_table(HELD)?;
        } else if !self.held.is_empty() {
            let mut h = txn.open_table(HELD)?;
            for (i, m) in self.held.iter().enumerate() {
                h.insert(self.held_next + i as u64, &m[..])?;
            }
        }
        let covered = matches!((self.skip, checkpoint), (Some((_, b)), Some(c)) if c >= b);
        if !self.dirty && !covered {
            return Ok(());
        }
        let mut t = txn.open_table(PIPELINE)?;
        match (self.skip, covered) {
            (Some((a, b)), false) => {
                let mut v = a.to_be_bytes().to_vec();
                v.extend_from_slice(&b.to_be_bytes());
                t.insert("skip", &v[..])?;
            }
            _ => {
                t.remove("skip")?;
            }
        }
        if !self.dirty {
            return Ok(());
        }
        match &self.active {
            Some(a) => {
                t.insert("version", &a.version.to_be_bytes()[..])?;
                t.insert("text", a.text.as_bytes())?;
            }
            None => {
                t.remove("version")?;
                t.remove("text")?;
            }
        }
        t.insert("status", &self.status.to_cbor()[..])?;
        t.insert("accepted", &self.accepted.to_be_bytes()[..])?;
        match self.phase.stored() {
            Stored::Idle => {
                t.remove("lifecycle")?;
            }
            st => {
                t.insert("lifecycle", &st.encode()[..])?;
            }
        }
        Ok(())
    }

    /// The transaction [`Updates::persist_in`] wrote into (with
    /// `checkpoint` as there) is durable.
    pub fn persisted(&mut self, checkpoint: Option<Lsn>) {
        self.dirty = false;
        if self.clear_held {
            self.clear_held = false;
            self.held_next = 0;
        } else {
            self.held_next += self.held.len() as u64;
        }
        self.held.clear();
        if matches!((self.skip, checkpoint), (Some((_, b)), Some(c)) if c >= b) {
            self.skip = None;
        }
    }

    /// Disconnects the control link.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_records_round_trip_and_damage_is_refused() {
        let cases = [
            Stored::Idle,
            Stored::Staged {
                version: 3,
                text: "name = \"p\"\n".into(),
            },
            Stored::Checking {
                version: 4,
                previous: None,
                lsn: 77,
            },
            Stored::Checking {
                version: 5,
                previous: Some(Active {
                    version: 4,
                    text: "name = \"q\"\n".into(),
                }),
                lsn: 1 << 40,
            },
        ];
        for st in cases {
            let b = st.encode();
            assert_eq!(Stored::decode(&b), Some(st.clone()));
            // Every truncation of it is refused or reads as something
            // shorter, never a panic.
            for n in 0..b.len() {
                let _ = Stored::decode(&b[..n]);
            }
        }
        for bad in [&[][..], &[9], &[0, 0], &[2, 0, 0], &[1, 0xff]] {
            assert_eq!(Stored::decode(bad), None, "{bad:?}");
        }
        let mut b = Stored::Staged {
            version: 1,
            text: String::new(),
        }
        .encode();
        b.push(0xff);
        assert_eq!(Stored::decode(&b), None, "text that is not UTF-8");
    }

    #[test]
    fn held_messages_round_trip_and_damage_is_refused() {
        let b = encode_held(-5, "plant/s1/v", b"{\"v\":1}");
        assert_eq!(
            decode_held(&b),
            Some((-5, "plant/s1/v".to_string(), b"{\"v\":1}".to_vec()))
        );
        for n in 0..12 + "plant/s1/v".len() {
            assert_eq!(decode_held(&b[..n]), None, "{n}");
        }
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_held(&huge), None);
    }
}
