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
use weir_core::expr::Value;
use weir_core::output::{Emission, Output, WindowResult};
use weir_core::spec::OperatorKind;

use super::output::SqlRow;
use crate::gateway::{CloudConfig, CloudEncoding};
use crate::pipeline_file::PipelineFile;
use crate::sql::ddl::SqlType;
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
    /// A SQL pipeline that publishes result rows: its name and query
    /// (window results reach the cloud as those rows, [`CloudOut::push_row`]).
    rows: Option<(String, Arc<crate::sql::Query>)>,
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
    /// A builder for `pf`'s operators; `staged_lsn` as read from the
    /// database ([`read_staged_lsn`]).
    pub fn new(gateway: &str, pf: &PipelineFile, staged_lsn: Lsn) -> CloudOut {
        let mut c = CloudOut {
            gateway: gateway.to_string(),
            ops: Vec::new(),
            rows: None,
            pending: Vec::new(),
            staged_lsn,
            seen_lsn: staged_lsn,
            replaying: false,
            skipped: 0,
        };
        c.set_pipeline(pf);
        c
    }

    /// A new pipeline's operator names and SQL query (after an update).
    pub fn set_pipeline(&mut self, pf: &PipelineFile) {
        self.rows = pf
            .sql
            .as_ref()
            .filter(|q| q.publishes_rows())
            .map(|q| (pf.spec.name.clone(), q.clone()));
        self.ops = pf
            .spec
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
                    text: Vec::new(),
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
                    text: Vec::new(),
                }
            }
            Output::Score(_) | Output::Late(_) => return,
        };
        self.pending.push(rec);
    }

    /// Adds the SQL result row `row` that window result `w` of `key`
    /// completed (emitted by journal record `lsn`, agent clock `now`): one
    /// record under the pipeline's name, the id as for a window, numeric and
    /// timestamp columns in `fields`, text and boolean ones in `text`
    /// (`docs/wire.md`); a flagged row is an alert. Names as published
    /// locally (a sink's column names).
    pub fn push_row(&mut self, w: &WindowResult, key: &str, row: &SqlRow, lsn: Lsn, now: i64) {
        if self.replaying && lsn <= self.staged_lsn {
            self.skipped += 1;
            return;
        }
        if self.rows.is_none() {
            return;
        }
        self.seen_lsn = self.seen_lsn.max(lsn);
        for row in std::iter::once(row).chain(&row.more) {
            self.push_one(w, key, row, lsn, now);
        }
    }

    /// One row of [`Uplink::push_row`].
    fn push_one(&mut self, w: &WindowResult, key: &str, row: &SqlRow, lsn: Lsn, now: i64) {
        let Some((op, q)) = &self.rows else { return };
        let sink = q.sink.as_ref().map_or(&[][..], |s| &s.columns[..]);
        let (mut fields, mut text) = (Vec::new(), Vec::new());
        for (i, (c, v)) in q.columns.iter().zip(&row.values).enumerate() {
            let name = sink.get(i).unwrap_or(&c.name).clone();
            match v {
                Value::Num(x) => fields.push((name, *x)),
                Value::Ts(t) => fields.push((name, *t as f64)),
                Value::Str(s) => text.push((name, s.clone())),
                Value::Bool(b) => text.push((name, b.to_string())),
                Value::Null if matches!(c.ty, SqlType::String | SqlType::Boolean) => {}
                Value::Null => fields.push((name, f64::NAN)),
            }
        }
        // Several key columns: the key as people read it, as on the gateway.
        let shown = q.shown_key(key);
        let key = &*shown;
        let (mut id, start, end) = match row.at {
            // A query without GROUP BY: a row per reading.
            Some(at) => (
                record_id(&self.gateway, op, key, at.ts, 0),
                at.start,
                at.end,
            ),
            None => (
                record_id(&self.gateway, op, key, w.start, 0),
                w.start,
                w.end,
            ),
        };
        if let Some(at) = row.at {
            id.push_str(&format!("/{lsn}"));
            if at.window_in_id {
                id.push_str(&format!("/{}", at.start));
            }
        } else if w.emission == Emission::Update {
            id.push_str(&format!("/u{lsn}"));
        }
        self.pending.push(OutputRecord {
            id,
            kind: if row.flagged {
                RecordKind::Alert
            } else {
                RecordKind::Window
            },
            key: key.to_string(),
            op: op.clone(),
            start,
            end,
            fields,
            anomaly: None,
            emitted_at: now,
            text,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::OutputFormat;
    use crate::run::output::OutputEncoder;

    /// A SQL query with `HAVING` and a text result column: the cloud gets
    /// the rows that pass, as the agent's drain hands them over (numbers in
    /// `fields`, text in `text`), and nothing for a window `HAVING` drops.
    #[test]
    fn sql_result_rows_reach_the_cloud_instead_of_raw_windows() {
        const T0: i64 = 1_700_000_000_000;
        let sql = "SET 'pipeline.name' = 'q';
CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT sensor, window_start, MAX(t) - MIN(t) AS spread,
       CASE WHEN AVG(t) > 80 THEN 'hot' ELSE 'ok' END AS state, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end
HAVING COUNT(*) >= 2;";
        let pf = crate::pipeline_file::parse("q.sql", sql).unwrap();
        let enc = OutputEncoder::for_pipeline("gw", "weir", OutputFormat::Json, &pf);
        let mut cloud = CloudOut::new("gw", &pf, 0);
        let mut engine = pf.spec.clone().build().unwrap();
        let mut out = Vec::new();
        let samples = [
            (0, 70.0),
            (500, 90.0),
            (1_000, 85.0),
            (2_000, 95.0),
            (9_000, 1.0),
        ];
        for (i, (dt, t)) in samples.into_iter().enumerate() {
            let lsn = i as Lsn + 1;
            engine
                .handle_sample(T0 + dt, 0, "p1", T0 + dt, &[t])
                .unwrap();
            while let Some(o) = engine.poll_output() {
                let row = enc.encode(&o, "p1", lsn, false, &mut out);
                match (&o, row) {
                    (Output::Window(w), Some(row)) => cloud.push_row(w, "p1", &row, lsn, 7),
                    (Output::Window(_), None) => {}
                    _ => cloud.push(&o, "p1", lsn, 7),
                }
            }
        }
        assert!(out.is_empty(), "windows = false: nothing published locally");
        // [T0, T0+1000) has two readings; the next two windows one each.
        assert_eq!(cloud.pending.len(), 1, "{:?}", cloud.pending);
        let r = &cloud.pending[0];
        assert_eq!(
            (r.id.as_str(), r.op.as_str(), r.kind, r.start, r.end),
            (
                "gw/q/p1/1700000000000",
                "q",
                RecordKind::Window,
                T0,
                T0 + 1_000
            )
        );
        assert_eq!(
            r.fields,
            [
                ("window_start".to_string(), T0 as f64),
                ("spread".to_string(), 20.0),
                ("n".to_string(), 2.0)
            ]
        );
        assert_eq!(
            r.text,
            [
                ("sensor".to_string(), "p1".to_string()),
                ("state".to_string(), "ok".to_string())
            ]
        );
        let back = OutputRecord::from_cbor(&r.to_cbor()).unwrap();
        assert_eq!(&back, r);
    }
}
