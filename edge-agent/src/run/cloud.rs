//! The cloud link of `weir run`: outputs bound for the cloud broker go into
//! the [`weir_cloud_sync::outbox`] in the store's own redb transactions,
//! and the [`weir_cloud_sync::uplink`] publishes them.
//!
//! # When an output is staged
//!
//! The agent commits a group, *then* computes it, so an output is known
//! only after the commit of the records that produced it. It waits in
//! memory ([`CloudOut`]) and is staged in the **next** store transaction:
//! the next group commit, the next checkpoint, or (when no data comes) a
//! commit of its own on the agent's timer. The same transaction records
//! `staged_lsn`, the journal position through which every output is in the
//! outbox. A crash before that transaction loses only outputs the journal
//! can produce again; a crash after it cannot stage them twice:
//!
//! **During journal replay, outputs emitted by records at or below
//! `staged_lsn` are skipped** (they are in the outbox already); those above
//! it are staged again. So the outbox never holds the same output twice;
//! the cloud may still receive a batch twice (a PUBACK lost with the
//! connection, an acknowledgement not yet durable at a crash), always under
//! the same ids, which consumers drop.
//!
//! A rollback after a failed pipeline update replays through the previous
//! pipeline without skipping: its outputs for the health-check window are
//! staged (same ids where both pipelines emit the same window).
//!
//! # Ids
//!
//! [`weir_cloud_sync::wire::record_id`]: `gw/op/key/window_start` for a
//! window's first firing, `…/u<lsn>` for an update; flagged per-sample
//! scores `gw/op/key/ts/<lsn>`; custom results `gw/op/key/ts/<tag>/<lsn>`
//! (components escaped as in `docs/wire.md`, so a key with `/` reads
//! `%2F` here where the local topic id keeps it).

use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};
use weir_cloud_sync::outbox::{Outbox, OutboxConfig, OutboxStats};
use weir_cloud_sync::uplink::{
    Bandwidth, Encoding, TlsFiles, Uplink, UplinkConfig, UplinkCounters,
};
use weir_cloud_sync::wire::{record_id, Anomaly, OutputRecord, RecordKind};
use weir_core::output::{Emission, Output};
use weir_core::spec::{OperatorKind, PipelineSpec};

use crate::gateway::{CloudConfig, CloudEncoding};
use crate::store::{HookError, Lsn, Store};

/// The agent's own table beside the outbox's: `staged_lsn`.
const CLOUD_META: TableDefinition<&str, u64> = TableDefinition::new("agent_cloud");
const STAGED_LSN: &str = "staged_lsn";

/// Outputs waiting for the next store transaction, built from engine
/// outputs. Pure: no I/O.
#[derive(Debug)]
pub struct CloudOut {
    gateway: String,
    ops: Vec<(String, Vec<String>)>,
    pending: Vec<OutputRecord>,
    /// Every output of records ≤ this is in the outbox (durable or in an
    /// open transaction's view).
    staged_lsn: Lsn,
    /// Highest LSN whose outputs are in `pending` or staged.
    seen_lsn: Lsn,
    /// Replaying the journal: skip outputs of records ≤ `staged_lsn`.
    replaying: bool,
    /// Outputs skipped during replay (already in the outbox).
    pub skipped: u64,
}

impl CloudOut {
    /// A builder for `spec`'s operators; `staged_lsn` as read from the
    /// database ([`read_staged_lsn`]).
    pub fn new(gateway: &str, spec: &PipelineSpec, staged_lsn: Lsn) -> CloudOut {
        let mut c = CloudOut {
            gateway: gateway.to_string(),
            ops: Vec::new(),
            pending: Vec::new(),
            staged_lsn,
            seen_lsn: staged_lsn,
            replaying: false,
            skipped: 0,
        };
        c.set_pipeline(spec);
        c
    }

    /// A new pipeline's operator names (after an update).
    pub fn set_pipeline(&mut self, spec: &PipelineSpec) {
        self.ops = spec
            .operators
            .iter()
            .map(|o| match &o.kind {
                OperatorKind::Window(w) => (
                    o.id.clone(),
                    w.aggregates.iter().map(|a| a.to_string()).collect(),
                ),
                OperatorKind::Detect(d) => (o.id.clone(), d.fields.clone()),
                _ => (o.id.clone(), Vec::new()),
            })
            .collect();
    }

    /// Starts (`true`) or ends a journal replay, which skips outputs already
    /// staged. Starting drops what is pending: the replay produces it again.
    pub fn set_replaying(&mut self, on: bool) {
        if on {
            self.pending.clear();
            self.seen_lsn = self.staged_lsn;
        }
        self.replaying = on;
    }

    /// Outputs waiting for a transaction.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one engine output emitted by journal record `lsn` (agent clock
    /// `now`), if it is bound for the cloud: window results (flagged ones
    /// as alerts), flagged scores, custom results.
    pub fn push(&mut self, o: &Output, key: &str, lsn: Lsn, now: i64) {
        if self.replaying && lsn <= self.staged_lsn {
            self.skipped += 1;
            return;
        }
        self.seen_lsn = self.seen_lsn.max(lsn);
        let gw = &self.gateway;
        let rec = match o {
            Output::Window(w) => {
                let Some((op, names)) = self.ops.get(w.op as usize) else {
                    return;
                };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut r = OutputRecord::from_window(gw, op, key, w, &names, 0, now);
                if w.emission == Emission::Update {
                    r.id.push_str(&format!("/u{lsn}"));
                }
                r
            }
            Output::Score(s) if s.verdict.flag => {
                let Some((op, names)) = self.ops.get(s.op as usize) else {
                    return;
                };
                let mut fields = vec![("value".into(), s.value)];
                // a multivariate alert: each field's share of the score
                for (name, c) in names.iter().zip(s.contributions.as_slice()) {
                    fields.push((format!("contrib_{name}"), *c as f64));
                }
                OutputRecord {
                    id: format!("{}/{lsn}", record_id(gw, op, key, s.ts, 0)),
                    kind: RecordKind::Alert,
                    key: key.to_string(),
                    op: op.clone(),
                    start: s.ts,
                    end: s.ts,
                    fields,
                    anomaly: Some(Anomaly {
                        flag: true,
                        score: s.verdict.score,
                    }),
                    emitted_at: now,
                }
            }
            Output::Custom(c) => {
                let Some((op, _)) = self.ops.get(c.op as usize) else {
                    return;
                };
                OutputRecord {
                    id: format!("{}/{}/{lsn}", record_id(gw, op, key, c.ts, 0), c.tag),
                    kind: RecordKind::Alert,
                    key: key.to_string(),
                    op: op.clone(),
                    start: c.ts,
                    end: c.ts,
                    fields: vec![("value".into(), c.value), ("tag".into(), c.tag as f64)],
                    anomaly: None,
                    emitted_at: now,
                }
            }
            Output::Score(_) | Output::Late(_) => return,
        };
        self.pending.push(rec);
    }

    /// Marks that the engine has processed every record through `lsn`
    /// (outputs or not), so the next staging covers it.
    pub fn processed(&mut self, lsn: Lsn) {
        if !(self.replaying && lsn <= self.staged_lsn) {
            self.seen_lsn = self.seen_lsn.max(lsn);
        }
    }

    /// Whether the next transaction has anything to write. Records that
    /// emitted nothing do not move `staged_lsn` on their own (that would
    /// cost a page write per commit): replaying them emits nothing either.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Stages the pending outputs and `staged_lsn` in `txn`.
    ///
    /// # Errors
    /// The outbox or the table write failed (abort the transaction).
    pub fn stage(&self, outbox: &Outbox, txn: &WriteTransaction) -> Result<(), HookError> {
        if !self.pending.is_empty() {
            outbox.stage(txn, &self.pending)?;
        }
        let mut t = txn.open_table(CLOUD_META)?;
        t.insert(STAGED_LSN, self.seen_lsn)?;
        Ok(())
    }

    /// The transaction [`stage`](CloudOut::stage) wrote into committed.
    pub fn staged(&mut self) {
        self.pending.clear();
        self.staged_lsn = self.seen_lsn;
    }
}

/// `staged_lsn` as committed (0 on a new database).
///
/// # Errors
/// redb's error.
pub fn read_staged_lsn(db: &redb::Database) -> Result<Lsn, redb::Error> {
    let r = db.begin_read()?;
    match r.open_table(CLOUD_META) {
        Ok(t) => Ok(t.get(STAGED_LSN)?.map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The outbox and the uplink, on the store's database.
pub struct CloudLink {
    db: Arc<redb::Database>,
    /// The outbox (stage through it in the store's transactions).
    pub outbox: Outbox,
    uplink: Option<Uplink>,
}

impl std::fmt::Debug for CloudLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudLink").finish_non_exhaustive()
    }
}

/// The uplink's configuration from `[cloud]`.
pub fn uplink_config(gateway: &str, c: &CloudConfig) -> UplinkConfig {
    let b = &c.broker;
    let mut u = UplinkConfig::new(gateway, b.host.clone(), b.port);
    u.client_id = b.client_id.clone();
    u.topic = c.topic.clone();
    u.tls = b.tls.then(|| TlsFiles {
        ca: b.ca.clone().unwrap_or_default(),
        client_cert: b.cert.clone(),
        client_key: b.key.clone(),
        alpn: None,
    });
    u.credentials = b
        .username
        .clone()
        .map(|n| (n, b.password.clone().unwrap_or_default()));
    u.keep_alive = Duration::from_millis(b.keep_alive_ms);
    u.max_batch_records = c.batch_records;
    u.max_batch_bytes = c.batch_bytes;
    u.max_inflight = c.inflight;
    u.bandwidth = c.bandwidth.map(|(bytes_per_sec, burst_bytes)| Bandwidth {
        bytes_per_sec,
        burst_bytes,
    });
    u.backoff_min = Duration::from_millis(c.backoff_min_ms);
    u.backoff_max = Duration::from_millis(c.backoff_max_ms);
    u.encoding = match c.encoding {
        CloudEncoding::Cbor => Encoding::Cbor,
        CloudEncoding::Json => Encoding::Json,
    };
    u
}

impl CloudLink {
    /// Opens the outbox in the store's database (sharing it: the store
    /// stops compacting) and reads `staged_lsn`.
    ///
    /// # Errors
    /// A message naming the database file.
    pub fn open(gateway: &str, c: &CloudConfig, store: &Store) -> Result<(CloudLink, Lsn), String> {
        let db = store.database().clone();
        let path = store.path().display();
        let outbox = Outbox::open(&db, OutboxConfig::new(gateway, c.budget_bytes))
            .map_err(|e| format!("{path}: {e}"))?;
        let lsn = read_staged_lsn(&db).map_err(|e| format!("{path}: read staged_lsn: {e}"))?;
        Ok((
            CloudLink {
                db,
                outbox,
                uplink: None,
            },
            lsn,
        ))
    }

    /// Starts the uplink (inside the tokio runtime).
    ///
    /// # Errors
    /// A TLS file cannot be read, or the configuration cannot work.
    pub fn start(&mut self, config: UplinkConfig) -> Result<(), String> {
        let u = Uplink::start(config, self.db.clone(), self.outbox.clone())
            .map_err(|e| e.to_string())?;
        self.uplink = Some(u);
        Ok(())
    }

    /// The uplink's counters and the outbox's stats now.
    pub fn snapshot(&self) -> Option<(UplinkCounters, OutboxStats)> {
        let u = self.uplink.as_ref()?;
        let s = self.outbox.stats(&self.db).ok()?;
        Some((u.counters(), s))
    }

    /// Stops the uplink (unacknowledged records stay in the outbox).
    pub async fn shutdown(&mut self) {
        if let Some(u) = self.uplink.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), u.shutdown()).await;
        }
    }
}
