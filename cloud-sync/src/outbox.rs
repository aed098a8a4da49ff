//! The durable outbox: outputs waiting for the cloud broker's PUBACK, in the
//! agent's redb database.
//!
//! # Tables
//!
//! | table | key | value |
//! |---|---|---|
//! | `outbox_records` | `u64` sequence (from 1, monotonic, never reused) | the record's CBOR map ([`OutputRecord::to_cbor`]) |
//! | `outbox_windows` | `u64` sequence of each window record | `u64`: `kind << 32 \| accounted bytes` |
//! | `outbox_alerts` | `u64` sequence of every other record (alerts, status, drop reports) | likewise |
//! | `outbox_meta` | `&str` | `u64` counters: `next_seq`, `bytes`, `records`, `dropped_*`, `unreported_*`, `reports` |
//!
//! # Transactions
//!
//! [`Outbox::stage`] writes into the caller's [`redb::WriteTransaction`], so
//! the agent commits its outputs with the checkpoint (or journal group)
//! that produced them: after a crash either both are there or neither is.
//! The outbox keeps no state that a commit would have to confirm: counters
//! live in `outbox_meta`, inside the same transaction. An aborted
//! transaction leaves nothing behind.
//!
//! # Acknowledgements
//!
//! [`Outbox::ack_through`] is in memory: acknowledged records vanish from
//! [`Outbox::pending_from`] at once, and are deleted by the next
//! [`stage`](Outbox::stage) (in the agent's transaction, at no extra commit)
//! or by [`flush_acks`](Outbox::flush_acks) when nothing is being staged (a
//! non-durable commit: made durable by the next durable one). A durable
//! redb commit costs ~25–33 KB of flash, so there is never one per ack. A
//! crash before the deletion is durable publishes those records again;
//! consumers drop duplicates by [`OutputRecord::id`].
//!
//! # Disk budget
//!
//! Each record is accounted as its CBOR size plus [`ENTRY_OVERHEAD`] (the
//! redb file itself is larger: pages are 4 KiB and copy-on-write). When a
//! new record would take the outbox over [`OutboxConfig::budget_bytes`]:
//!
//! 1. acknowledged records are deleted first (they are not drops);
//! 2. then the oldest **windows** are dropped, oldest first;
//! 3. an alert, status or drop report may also drop the oldest alerts and
//!    status records once no window is left; a window never drops one:
//!    when only alerts are left, the new window itself is dropped;
//! 4. a record larger than the whole budget is dropped.
//!
//! Every drop is counted per kind, in total and as *unreported*;
//! [`Outbox::report_drops`] (the uplink calls it on every connection)
//! turns the unreported counts into one [`RecordKind::Dropped`] record.
//! A drop report that is itself dropped gives its counts back to the
//! unreported ones, so no drop goes unreported. A record dropped while in
//! flight counts as dropped even if its PUBACK arrives later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};

use crate::wire::{self, OutputRecord, RecordKind};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_records");
const WINDOWS: TableDefinition<u64, u64> = TableDefinition::new("outbox_windows");
const ALERTS: TableDefinition<u64, u64> = TableDefinition::new("outbox_alerts");
const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");

/// Bytes accounted per record besides its CBOR: the key, the index entry and
/// B-tree slack.
pub const ENTRY_OVERHEAD: u64 = 32;

/// An outbox error: which step failed, and redb's reason.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database refused.
    #[error("outbox: {what}: {source}")]
    Db {
        /// What the outbox was doing.
        what: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
}

trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, OutboxError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &'static str) -> Result<T, OutboxError> {
        self.map_err(|e| OutboxError::Db {
            what,
            source: e.into(),
        })
    }
}

/// How the outbox is set up.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// The gateway id (names the drop reports).
    pub gateway: String,
    /// Disk budget in accounted bytes (see the module docs).
    pub budget_bytes: u64,
}

impl OutboxConfig {
    /// A config for `gateway` with a budget of `budget_bytes`.
    pub fn new(gateway: impl Into<String>, budget_bytes: u64) -> OutboxConfig {
        OutboxConfig {
            gateway: gateway.into(),
            budget_bytes,
        }
    }
}

/// Records dropped, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Windows dropped.
    pub window: u64,
    /// Alerts dropped.
    pub alert: u64,
    /// Status records dropped.
    pub status: u64,
}

impl DropCounts {
    /// The sum.
    pub fn total(&self) -> u64 {
        self.window + self.alert + self.status
    }

    fn add(&mut self, kind: RecordKind) {
        match kind {
            RecordKind::Window => self.window += 1,
            RecordKind::Alert => self.alert += 1,
            RecordKind::Status | RecordKind::Dropped => self.status += 1,
        }
    }

    fn add_counts(&mut self, o: DropCounts) {
        self.window += o.window;
        self.alert += o.alert;
        self.status += o.status;
    }
}

/// What one [`Outbox::stage`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageReport {
    /// Sequence numbers given to the records kept (first, last).
    pub seqs: Option<(u64, u64)>,
    /// Records dropped by the budget policy in this call (old or new).
    pub dropped: DropCounts,
    /// Acknowledged records deleted in this call.
    pub deleted_acked: u64,
}

/// A record waiting for publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Its CBOR map, as stored.
    pub bytes: Vec<u8>,
}

impl PendingRecord {
    /// Decodes the record.
    ///
    /// # Errors
    /// [`wire::WireError`] if the stored bytes are damaged.
    pub fn record(&self) -> Result<OutputRecord, wire::WireError> {
        OutputRecord::from_cbor(&self.bytes)
    }
}

/// The outbox's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records stored (acknowledged ones not yet deleted included).
    pub records: u64,
    /// Their accounted bytes.
    pub bytes: u64,
    /// The sequence the next record gets.
    pub next_seq: u64,
    /// Acknowledged through this sequence (in memory).
    pub acked_through: u64,
    /// Dropped since the outbox was created.
    pub dropped: DropCounts,
    /// Dropped and not yet reported upstream.
    pub unreported: DropCounts,
    /// Drop reports made.
    pub reports: u64,
}

#[derive(Default)]
struct Meta {
    next_seq: u64,
    bytes: u64,
    records: u64,
    dropped: DropCounts,
    unreported: DropCounts,
    reports: u64,
}

const META_KEYS: [&str; 10] = [
    "next_seq",
    "bytes",
    "records",
    "dropped_window",
    "dropped_alert",
    "dropped_status",
    "unreported_window",
    "unreported_alert",
    "unreported_status",
    "reports",
];

impl Meta {
    fn load(t: &impl ReadableTable<&'static str, u64>) -> Result<Meta, OutboxError> {
        let mut v = [0u64; 10];
        for (i, k) in META_KEYS.iter().enumerate() {
            v[i] = t.get(*k).ctx("read outbox_meta")?.map_or(0, |g| g.value());
        }
        Ok(Meta {
            next_seq: v[0].max(1),
            bytes: v[1],
            records: v[2],
            dropped: DropCounts {
                window: v[3],
                alert: v[4],
                status: v[5],
            },
            unreported: DropCounts {
                window: v[6],
                alert: v[7],
                status: v[8],
            },
            reports: v[9],
        })
    }

    fn store(&self, t: &mut Table<'_, &'static str, u64>) -> Result<(), OutboxError> {
        let v = [
            self.next_seq,
            self.bytes,
            self.records,
            self.dropped.window,
            self.dropped.alert,
            self.dropped.status,
            self.unreported.window,
            self.unreported.alert,
            self.unreported.status,
            self.reports,
        ];
        for (k, x) in META_KEYS.iter().zip(v) {
            t.insert(*k, x).ctx("write outbox_meta")?;
        }
        Ok(())
    }

    fn count_drop(&mut self, kind: RecordKind, bytes: &[u8]) {
        if kind == RecordKind::Dropped {
            // Its counts go back to the unreported ones (see module docs).
            self.unreported.add_counts(report_counts(bytes));
        } else {
            self.dropped.add(kind);
            self.unreported.add(kind);
        }
    }
}

fn report_counts(bytes: &[u8]) -> DropCounts {
    let mut c = DropCounts::default();
    if let Ok(r) = OutputRecord::from_cbor(bytes) {
        for (n, v) in r.fields {
            let v = if v.is_finite() && v >= 0.0 {
                v as u64
            } else {
                0
            };
            match n.as_str() {
                "window" => c.window += v,
                "alert" => c.alert += v,
                "status" => c.status += v,
                _ => {}
            }
        }
    }
    c
}

fn pack(kind: RecordKind, size: u64) -> u64 {
    u64::from(kind.code()) << 32 | (size & 0xffff_ffff)
}

fn unpack(v: u64) -> (RecordKind, u64) {
    let kind = RecordKind::from_code(v >> 32).unwrap_or(RecordKind::Status);
    (kind, v & 0xffff_ffff)
}

struct Tables<'t> {
    records: Table<'t, u64, &'static [u8]>,
    windows: Table<'t, u64, u64>,
    alerts: Table<'t, u64, u64>,
    meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, OutboxError> {
        Ok(Tables {
            records: txn.open_table(RECORDS).ctx("open outbox_records")?,
            windows: txn.open_table(WINDOWS).ctx("open outbox_windows")?,
            alerts: txn.open_table(ALERTS).ctx("open outbox_alerts")?,
            meta: txn.open_table(META).ctx("open outbox_meta")?,
        })
    }

    /// Deletes every record with `seq <= through`; returns how many.
    fn delete_through(&mut self, through: u64, m: &mut Meta) -> Result<u64, OutboxError> {
        let mut n = 0;
        for idx in [&mut self.windows, &mut self.alerts] {
            loop {
                let first = idx
                    .first()
                    .ctx("read outbox index")?
                    .map(|(k, v)| (k.value(), v.value()));
                let Some((seq, packed)) = first else { break };
                if seq > through {
                    break;
                }
                idx.remove(seq).ctx("delete from outbox index")?;
                self.records.remove(seq).ctx("delete from outbox_records")?;
                let (_, size) = unpack(packed);
                m.bytes = m.bytes.saturating_sub(size);
                m.records = m.records.saturating_sub(1);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops the oldest record of one index; false when it is empty.
    fn evict_oldest(
        &mut self,
        windows: bool,
        m: &mut Meta,
        report: &mut DropCounts,
    ) -> Result<bool, OutboxError> {
        let idx = if windows {
            &mut self.windows
        } else {
            &mut self.alerts
        };
        let popped = idx
            .pop_first()
            .ctx("evict from outbox index")?
            .map(|(k, v)| (k.value(), v.value()));
        let Some((seq, packed)) = popped else {
            return Ok(false);
        };
        let (kind, size) = unpack(packed);
        let bytes = self
            .records
            .remove(seq)
            .ctx("evict from outbox_records")?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        m.bytes = m.bytes.saturating_sub(size);
        m.records = m.records.saturating_sub(1);
        m.count_drop(kind, &bytes);
        if kind != RecordKind::Dropped {
            report.add(kind);
        }
        Ok(true)
    }

    fn stage(
        &mut self,
        m: &mut Meta,
        budget: u64,
        recs: &[OutputRecord],
        rep: &mut StageReport,
    ) -> Result<(), OutboxError> {
        for r in recs {
            let bytes = r.to_cbor();
            let size = bytes.len() as u64 + ENTRY_OVERHEAD;
            let window = r.kind == RecordKind::Window;
            if size <= budget {
                while m.bytes + size > budget {
                    if !self.evict_oldest(true, m, &mut rep.dropped)?
                        && (window || !self.evict_oldest(false, m, &mut rep.dropped)?)
                    {
                        break;
                    }
                }
            }
            if m.bytes + size > budget {
                m.count_drop(r.kind, &bytes);
                if r.kind != RecordKind::Dropped {
                    rep.dropped.add(r.kind);
                }
                continue;
            }
            let seq = m.next_seq;
            m.next_seq += 1;
            self.records
                .insert(seq, bytes.as_slice())
                .ctx("insert into outbox_records")?;
            let idx = if window {
                &mut self.windows
            } else {
                &mut self.alerts
            };
            idx.insert(seq, pack(r.kind, size))
                .ctx("insert into outbox index")?;
            m.bytes += size;
            m.records += 1;
            rep.seqs = Some(match rep.seqs {
                None => (seq, seq),
                Some((a, _)) => (a, seq),
            });
        }
        Ok(())
    }
}

struct Inner {
    config: OutboxConfig,
    acked: AtomicU64,
    changed: tokio::sync::Notify,
}

/// The outbox. Cheap to clone: clones share the acknowledgement state, so
/// the agent stages through one handle and the uplink reads and
/// acknowledges through another.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.inner.config)
            .field("acked_through", &self.acked_through())
            .finish()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Outbox {
    /// Opens the outbox in `db`, creating its tables if needed (one commit).
    /// Everything stored is pending: acknowledgements do not survive a
    /// restart (see the module docs).
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn open(db: &Database, config: OutboxConfig) -> Result<Outbox, OutboxError> {
        let txn = db.begin_write().ctx("begin outbox open")?;
        {
            let t = Tables::open(&txn)?;
            drop(t);
        }
        txn.commit().ctx("commit outbox open")?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                config,
                acked: AtomicU64::new(0),
                changed: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.inner.config
    }

    /// Stages `records` in the caller's transaction, applying the budget
    /// policy, and deletes acknowledged records on the way. Call
    /// [`notify`](Outbox::notify) after the commit so the uplink looks at
    /// once (it also looks periodically).
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses (the transaction should then be
    /// aborted).
    pub fn stage(
        &self,
        txn: &WriteTransaction,
        records: &[OutputRecord],
    ) -> Result<StageReport, OutboxError> {
        let mut t = Tables::open(txn)?;
        let mut m = Meta::load(&t.meta)?;
        let mut rep = StageReport {
            deleted_acked: t.delete_through(self.acked_through(), &mut m)?,
            ..StageReport::default()
        };
        t.stage(&mut m, self.inner.config.budget_bytes, records, &mut rep)?;
        m.store(&mut t.meta)?;
        Ok(rep)
    }

    /// Stages `records` in a transaction of its own and commits it durably,
    /// then notifies the uplink. For standalone use; the agent stages with
    /// its checkpoint instead.
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn put(&self, db: &Database, records: &[OutputRecord]) -> Result<StageReport, OutboxError> {
        let txn = db.begin_write().ctx("begin outbox put")?;
        let rep = self.stage(&txn, records)?;
        txn.commit().ctx("commit outbox put")?;
        self.notify();
        Ok(rep)
    }

    /// Wakes the uplink: new records are committed.
    pub fn notify(&self) {
        self.inner.changed.notify_one();
    }

    /// Waits for [`notify`](Outbox::notify) (a notification sent while no
    /// one waits is kept for the next wait).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Up to `max` committed, unacknowledged records with `seq >= from`, in
    /// sequence order.
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn pending_from(
        &self,
        db: &Database,
        from: u64,
        max: usize,
    ) -> Result<Vec<PendingRecord>, OutboxError> {
        let txn = db.begin_read().ctx("begin outbox read")?;
        let t = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("open outbox_records"),
        };
        let start = from.max(self.acked_through().saturating_add(1));
        let mut out = Vec::new();
        for item in t.range(start..).ctx("read outbox_records")? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.ctx("read outbox_records")?;
            out.push(PendingRecord {
                seq: k.value(),
                bytes: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// Marks every record with `seq <= through` delivered. In memory; the
    /// deletion comes with the next [`stage`](Outbox::stage) or
    /// [`flush_acks`](Outbox::flush_acks). Never moves back.
    pub fn ack_through(&self, through: u64) {
        self.inner.acked.fetch_max(through, Ordering::AcqRel);
    }

    /// The highest sequence acknowledged so far (0: none).
    pub fn acked_through(&self) -> u64 {
        self.inner.acked.load(Ordering::Acquire)
    }

    /// Deletes acknowledged records in a transaction of its own with
    /// [`Durability::None`] (made durable by the next durable commit, e.g.
    /// the agent's). Does nothing, and commits nothing, when there is
    /// nothing to delete. Returns how many were deleted.
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn flush_acks(&self, db: &Database) -> Result<u64, OutboxError> {
        let through = self.acked_through();
        {
            let r = db.begin_read().ctx("begin outbox read")?;
            let t = match r.open_table(RECORDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e).ctx("open outbox_records"),
            };
            let first = t
                .first()
                .ctx("read outbox_records")?
                .map(|(k, _)| k.value());
            if first.is_none_or(|k| k > through) {
                return Ok(0);
            }
        }
        let mut txn = db.begin_write().ctx("begin outbox flush")?;
        txn.set_durability(Durability::None)
            .ctx("set outbox flush durability")?;
        let n = {
            let mut t = Tables::open(&txn)?;
            let mut m = Meta::load(&t.meta)?;
            let n = t.delete_through(through, &mut m)?;
            m.store(&mut t.meta)?;
            n
        };
        txn.commit().ctx("commit outbox flush")?;
        Ok(n)
    }

    /// Turns the unreported drop counts into one [`RecordKind::Dropped`]
    /// record (fields `window`, `alert`, `status`; id
    /// `<gateway>/outbox/dropped/<n>`), in a durable transaction of its own.
    /// Returns the counts reported, or `None` (and no commit) when nothing
    /// was dropped since the last report.
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn report_drops(&self, db: &Database) -> Result<Option<DropCounts>, OutboxError> {
        {
            let r = db.begin_read().ctx("begin outbox read")?;
            match r.open_table(META) {
                Ok(t) => {
                    if Meta::load(&t)?.unreported.total() == 0 {
                        return Ok(None);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e).ctx("open outbox_meta"),
            }
        }
        let txn = db.begin_write().ctx("begin outbox report")?;
        let counts = {
            let mut t = Tables::open(&txn)?;
            let mut m = Meta::load(&t.meta)?;
            let c = m.unreported;
            if c.total() == 0 {
                return Ok(None);
            }
            m.unreported = DropCounts::default();
            m.reports += 1;
            let rec = self.drop_report(c, m.reports);
            let mut rep = StageReport::default();
            t.stage(&mut m, self.inner.config.budget_bytes, &[rec], &mut rep)?;
            m.store(&mut t.meta)?;
            c
        };
        txn.commit().ctx("commit outbox report")?;
        self.notify();
        Ok(Some(counts))
    }

    fn drop_report(&self, c: DropCounts, n: u64) -> OutputRecord {
        let gw = &self.inner.config.gateway;
        OutputRecord {
            id: format!("{}/outbox/dropped/{n}", wire::escape(gw)),
            kind: RecordKind::Dropped,
            key: String::new(),
            op: "outbox".into(),
            start: 0,
            end: 0,
            fields: vec![
                ("window".into(), c.window as f64),
                ("alert".into(), c.alert as f64),
                ("status".into(), c.status as f64),
            ],
            anomaly: None,
            emitted_at: now_ms(),
            text: Vec::new(),
        }
    }

    /// The outbox's counters, as committed.
    ///
    /// # Errors
    /// [`OutboxError`] when redb refuses.
    pub fn stats(&self, db: &Database) -> Result<OutboxStats, OutboxError> {
        let r = db.begin_read().ctx("begin outbox read")?;
        let m = match r.open_table(META) {
            Ok(t) => Meta::load(&t)?,
            Err(redb::TableError::TableDoesNotExist(_)) => Meta::default(),
            Err(e) => return Err(e).ctx("open outbox_meta"),
        };
        Ok(OutboxStats {
            records: m.records,
            bytes: m.bytes,
            next_seq: m.next_seq.max(1),
            acked_through: self.acked_through(),
            dropped: m.dropped,
            unreported: m.unreported,
            reports: m.reports,
        })
    }
}
