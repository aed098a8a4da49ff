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
//! 1. [`weir_cloud_sync::update::verify`] against the trusted keys (size,
//!    shape, key, signature, gateway, version above the running one), then
//!    [`crate::pipeline_file::parse`] and the checks `weir run` makes
//!    (MQTT sources). Any failure: status `rejected` with the reason
//!    (`bad_signature`, `unknown_key`, `not_newer`, `wrong_gateway`,
//!    `malformed`, `oversized`, `invalid_pipeline`); the running pipeline
//!    is untouched.
//! 2. Accepted: staged until a checkpoint boundary (no open group, every
//!    local output acknowledged), then the running engine's snapshot is
//!    restored into the new engine (operators whose id and state type match
//!    keep their state: reported as kept / reset), and a checkpoint is
//!    written whose transaction also holds the new pipeline text and
//!    version (table `agent_pipeline`): from then on a restart runs it.
//! 3. Health check for `health_check`: it fails on more than `max_errors`
//!    bad inputs or engine rejects, or when readings arrived but the
//!    watermark did not advance. Checkpoints wait meanwhile, so the journal
//!    still holds everything since the switch. Pass: status `applied`.
//!    Fail: the previous pipeline comes back with the snapshot from just
//!    before the switch, the journal since the switch is replayed through
//!    it (outputs published again, same ids where both pipelines emit the
//!    same window), its text and version are persisted with the next
//!    checkpoint, status `rolled_back`. Messages the new pipeline could
//!    not decode were dead-lettered and are not replayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use weir_cloud_sync::update::{self, Status, UpdateRejection, UpdateResult};

use super::mqtt::{self, Link};
use crate::gateway::{GatewayConfig, UpdatesVia};
use crate::pipeline_file::PipelineFile;
use crate::store::{HookError, Lsn};

const PIPELINE: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_pipeline");

/// The pipeline an update installed, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// Its version.
    pub version: u64,
    /// Its text (TOML).
    pub text: String,
}

/// The persisted pipeline and last status, if an update ever ran.
///
/// # Errors
/// redb's error.
pub fn load_active(db: &redb::Database) -> Result<(Option<Active>, Option<Status>), redb::Error> {
    let r = db.begin_read()?;
    let t = match r.open_table(PIPELINE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, None)),
        Err(e) => return Err(e.into()),
    };
    let version = t
        .get("version")?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes));
    let text = t
        .get("text")?
        .and_then(|v| String::from_utf8(v.value().to_vec()).ok());
    let status = t
        .get("status")?
        .and_then(|v| Status::from_cbor(v.value()).ok());
    let active = match (version, text) {
        (Some(version), Some(text)) => Some(Active { version, text }),
        _ => None,
    };
    Ok((active, status))
}

/// What the control connection reports.
#[derive(Debug)]
pub enum Control {
    /// (Re)connected: publish the status again.
    Connected,
    /// A document on `…/pipeline/set`.
    Doc(Vec<u8>),
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

/// What a rollback restores.
#[derive(Debug)]
pub struct Previous {
    /// The pipeline.
    pub pf: PipelineFile,
    /// Its persisted form (`None`: the gateway's own file).
    pub active: Option<Active>,
    /// The engine snapshot from just before the switch.
    pub snapshot: Vec<u8>,
    /// The journal position of the switch.
    pub lsn: Lsn,
}

/// A health check in progress.
#[derive(Debug)]
pub struct Health {
    deadline: Instant,
    errors0: u64,
    readings0: u64,
    watermark0: i64,
    /// What comes back on failure.
    pub previous: Previous,
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
    /// The status as published.
    pub status: Status,
    /// The running pipeline's persisted form (`None`: the gateway's file).
    pub active: Option<Active>,
    /// Persist `active` and `status` with the next checkpoint.
    pub persist: bool,
    /// An accepted update waiting for a checkpoint boundary.
    pub staged: Option<Staged>,
    /// The health check of the last switch.
    pub health: Option<Health>,
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
    /// `None` otherwise. `active`/`status` as persisted ([`load_active`]).
    ///
    /// # Errors
    /// A key file cannot be read, or a TLS file.
    pub fn start(
        cfg: &GatewayConfig,
        active: Option<Active>,
        status: Option<Status>,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<Option<Updates>, String> {
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
        // `mqtt::options` lets in packets up to MQTT's own maximum (256
        // MiB): a document above `max_bytes` arrives and is rejected as
        // `oversized` with a status. A smaller packet limit here made
        // rumqttc drop the connection on a large document, and a retained
        // one then broke every reconnect, losing the updates after it.
        o.set_clean_session(true).set_manual_acks(false);
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
                        if tx.send(Control::Doc(p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
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
        Ok(Some(Updates {
            gateway: cfg.id.clone(),
            trusted,
            max_bytes: u.max_bytes,
            health_ms: u.health_ms,
            max_errors: u.max_errors,
            client,
            rx,
            task,
            topic_status: format!("weir/{}/pipeline/status", cfg.id),
            status,
            active,
            persist: false,
            staged: None,
            health: None,
        }))
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

    /// Sets and publishes the status.
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
        self.publish_status();
    }

    /// Verifies and validates a document; on success it is staged.
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
            self.version(),
            self.max_bytes,
        )
        .and_then(|v| {
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
                tracing::info!(
                    version,
                    key = v.key_id.as_str(),
                    "pipeline update verified; staged for the next checkpoint"
                );
                self.staged = Some(Staged {
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
                tracing::warn!(reason = e.reason(), "{e}");
                let last = match &e {
                    UpdateRejection::NotNewer { version, .. } => Some(*version),
                    _ => None,
                };
                self.set_status(
                    UpdateResult::Rejected,
                    Some(e.reason().to_string()),
                    last,
                    Vec::new(),
                    Vec::new(),
                );
                Err(e)
            }
        }
    }

    /// Starts the health check of a switch.
    pub fn watch(&mut self, previous: Previous, errors: u64, readings: u64, watermark: i64) {
        self.health = Some(Health {
            deadline: Instant::now() + Duration::from_millis(self.health_ms),
            errors0: errors,
            readings0: readings,
            watermark0: watermark,
            previous,
        });
    }

    /// The health check's verdict now: `None` while it runs (or when none
    /// runs), `Some(Ok)` passed, `Some(Err(reason))` failed.
    pub fn health_verdict(
        &self,
        errors: u64,
        readings: u64,
        watermark: i64,
    ) -> Option<Result<(), String>> {
        let h = self.health.as_ref()?;
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

    /// Writes the persisted pipeline and status into `txn` (with a
    /// checkpoint).
    ///
    /// # Errors
    /// redb's error.
    pub fn persist_in(&self, txn: &WriteTransaction) -> Result<(), HookError> {
        let mut t = txn.open_table(PIPELINE)?;
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
        Ok(())
    }

    /// Disconnects the control link.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        self.task.abort();
    }
}
