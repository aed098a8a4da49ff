//! The agent's ingest rules as a sans-IO state machine: **commit, then
//! compute, then acknowledge**, checkpoints only behind acknowledged
//! outputs, re-publishing after a lost output session, and recognising
//! redeliveries after a reconnect or a crash.
//!
//! [`AgentCore`] owns the journal [`Store`] (on any redb
//! [`StorageBackend`](redb::StorageBackend): a file in `weir run`, a
//! [`SimDisk`](crate::store::backend::SimDisk) that loses power in the
//! simulation tests), the [`Engine`], the output encoder and the dedupe
//! ring. It never opens a socket or reads a clock: the driver hands it
//! broker events and the time, and carries out what it asks for.
//!
//! Store writes are calls, not actions: the store is already behind redb's
//! backend seam, which is where the simulation injects crashes and power
//! cuts, and a write that fails is returned as an error: the driver then
//! stops (as a crash does) and reopens.
//!
//! Call order, as in quinn-proto:
//!
//! 1. [`AgentCore::open`]: restore the latest checkpoint, replay the
//!    journal after it (its outputs are queued for publishing).
//! 2. Feed events: [`AgentCore::handle_connected`],
//!    [`AgentCore::handle_lost`], [`AgentCore::handle_publish`],
//!    [`AgentCore::handle_puback`], and [`AgentCore::handle_tick`] when
//!    [`AgentCore::poll_timeout`] is reached (any earlier tick is harmless).
//! 3. After each, drain [`AgentCore::poll_action`] and carry the actions
//!    out in order: publishes on the output link, acknowledgements on the
//!    ingest link (dropped, not delayed, if that connection is gone),
//!    subscriptions.
//!
//! The invariants it keeps (docs/agent.md):
//! - a message's acknowledgement is released only after the journal commit
//!   that holds its readings, and after the engine processed them;
//! - a checkpoint is written only once every output published before it
//!   was acknowledged by the broker, so a crash or a lost output session
//!   can re-publish (same ids) everything after it from the journal;
//! - a message redelivered after a reconnect or a restart is recognised by
//!   its identity (the dedupe ring, rebuilt from checkpoint + journal) and
//!   acknowledged without being counted again.
//!
//! `weir run`'s `Agent` (`super`) does not drive this core yet, but runs
//! its code for four rules: `restore_latest` + `replay_journal`
//! (recovery), `CheckpointGate` (checkpoints behind acknowledged
//! outputs), `identify` (a message's identity and the redelivery
//! verdict) and `Staged` (a group's records, computed in journal order
//! once their commit returned), so the simulation tests run what `weir
//! run` runs for them. When a group closes and its acknowledgements, the
//! ack-debt pause, the update lifecycle, the cloud outbox, wired sensors and the write budget
//! are still the `Agent`'s own (docs/design.md says what moves next).

use std::collections::{HashMap, VecDeque};

use weir_core::engine::{Engine, Reject};
use weir_core::keys::KeyHint;
use weir_core::output::Output;
use weir_core::seam::CheckpointStore;
use weir_core::spec::OperatorKind;
use weir_core::time::TimeMode;

use super::dedupe;
use super::mqtt::Link;
use super::output::{Encoded, OutputEncoder};
use super::RunError;
use crate::decode::{Batch, Decoder};
use crate::gateway::OutputFormat;
use crate::pipeline_file::PipelineFile;
use crate::store::{
    CheckpointRecord, DeadLetter, DurabilityMode, Lsn, Sample, Store, StoreError, TICK_SOURCE,
};

/// How the core groups commits and spaces checkpoints. All times are in
/// the driver's clock (ms), the one it passes to every `handle_*`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The gateway id (in output topics and ids).
    pub gateway: String,
    /// The output topic prefix.
    pub prefix: String,
    /// The output payload format.
    pub format: OutputFormat,
    /// Publish window results (not only alerts).
    pub publish_windows: bool,
    /// A group is committed at most this long after its first message.
    pub commit_ms: i64,
    /// … or once it holds this many messages (or 16 times as many
    /// records: packs).
    pub group_records: usize,
    /// A checkpoint is started this long after the previous one.
    pub checkpoint_ms: i64,
}

/// What the driver must do, in the order the core asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<T> {
    /// Publish an output (QoS 1) on the output link.
    Publish(Encoded),
    /// Acknowledge an ingest message on the connection it came from.
    Ack(T),
    /// Subscribe the ingest link to a topic filter.
    Subscribe {
        /// The filter.
        filter: String,
        /// Its QoS.
        qos: u8,
    },
    /// A checkpoint covering the journal through `upto` is durable.
    Checkpointed {
        /// The last LSN it covers.
        upto: Lsn,
    },
    /// Bad input, kept as a dead letter (staged with the next checkpoint).
    DeadLetter(DeadLetter),
}

/// What the core counted since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Messages handed in.
    pub messages: u64,
    /// Readings processed by the engine after their commit.
    pub readings: u64,
    /// Readings of messages recognised as redeliveries.
    pub duplicates: u64,
    /// Journal records replayed (at open and after a lost output session).
    pub replayed: u64,
    /// Group commits.
    pub commits: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Output sessions the broker lost.
    pub sessions_lost: u64,
    /// Outputs handed out for publishing.
    pub published: u64,
    /// Publish acknowledgements received.
    pub pubacks: u64,
}

/// A record of the open group, processed after its commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec {
    /// Its journal position.
    pub(super) lsn: Lsn,
    /// Its source ([`TICK_SOURCE`] for a clock tick).
    pub(super) source: u16,
    /// The message it came in (the driver's index into its own list).
    pub(super) msg: u32,
    key: (u32, u32),
    /// Its event time.
    pub(super) ts: i64,
    /// The driver's clock when it was staged.
    pub(super) now: i64,
    vals: (u32, u32),
}

/// The records of the open group commit: journaled (staged in the store)
/// and waiting for the commit, after which [`Staged::compute`] feeds them
/// to the engine. Keys are kept once per run of one key (a pack's
/// readings), values in one buffer, so a warm group allocates nothing.
/// `weir run`'s `Agent` and [`AgentCore`] stage and compute through it.
#[derive(Debug, Default)]
pub(super) struct Staged {
    recs: Vec<Rec>,
    keys: String,
    vals: Vec<f64>,
}

impl Staged {
    /// Adds the record journaled at `lsn` from message `msg`.
    pub(super) fn push(&mut self, lsn: Lsn, msg: u32, sample: &Sample<'_>) {
        // A pack's readings share their key: kept once.
        let key = match self.recs.last() {
            Some(r) if &self.keys[r.key.0 as usize..r.key.1 as usize] == sample.key => r.key,
            _ => {
                let k0 = self.keys.len() as u32;
                self.keys.push_str(sample.key);
                (k0, self.keys.len() as u32)
            }
        };
        let v0 = self.vals.len() as u32;
        self.vals.extend_from_slice(sample.values);
        self.recs.push(Rec {
            lsn,
            source: sample.source,
            msg,
            key,
            ts: sample.ts,
            now: sample.now,
            vals: (v0, self.vals.len() as u32),
        });
    }

    /// Records staged.
    pub(super) fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether no record is staged.
    pub(super) fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Forgets the records, keeping the buffers.
    pub(super) fn clear(&mut self) {
        self.recs.clear();
        self.keys.clear();
        self.vals.clear();
    }

    /// **Compute**, once the commit that holds the records returned: feeds
    /// each to the engine in journal order ([`feed_hinted`], the engine's
    /// key id looked up once per run of one key), then calls
    /// `after(engine, record, sample, verdict)`, where the caller
    /// dead-letters a refused record and drains the engine's outputs
    /// (stamped with the record's LSN) before the next record is fed.
    pub(super) fn compute(
        &self,
        engine: &mut Engine,
        pf: &PipelineFile,
        mut after: impl FnMut(&mut Engine, &Rec, &Sample<'_>, Result<(), Reject>),
    ) {
        let mut hint = (KeyHint::default(), (u32::MAX, u32::MAX));
        for r in &self.recs {
            let s = Sample {
                source: r.source,
                key: &self.keys[r.key.0 as usize..r.key.1 as usize],
                ts: r.ts,
                now: r.now,
                values: &self.vals[r.vals.0 as usize..r.vals.1 as usize],
            };
            if hint.1 != r.key {
                hint = (KeyHint::default(), r.key);
            }
            let verdict = feed_hinted(engine, pf, &s, &mut hint.0);
            after(engine, r, &s, verdict);
        }
    }
}

/// Whether the open group closes now on its size, whatever its deadline:
/// `group_records` messages (acknowledgements), `PACK_RECORDS` times as
/// many records (SenML packs), or 1 MiB of journal staged. The driver
/// closes it on its deadline as well, and `weir run` on the write
/// budget's rules.
pub(super) fn group_full(
    messages: usize,
    records: usize,
    staged_bytes: usize,
    group_records: usize,
) -> bool {
    messages >= group_records
        || records >= super::pack_records(group_records)
        || staged_bytes >= 1 << 20
}

/// The open group commit.
#[derive(Debug)]
struct Group<T> {
    acks: Vec<T>,
    staged: Staged,
    messages: usize,
    /// When its first message came (driver clock).
    opened: Option<i64>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            acks: Vec::new(),
            staged: Staged::default(),
            messages: 0,
            opened: None,
        }
    }
}

/// A checkpoint taken, waiting for the outputs before it to be acked.
#[derive(Debug)]
struct Pending {
    upto: Lsn,
    snapshot: CheckpointRecord,
    /// Outputs handed out before it (`published` when it was taken).
    mark: u64,
}

/// The rule "a checkpoint only behind acknowledged outputs": a checkpoint
/// taken when `mark` outputs had been handed out on the output session is
/// released for writing only once the broker has acknowledged as many on
/// that session. So every output after the newest durable checkpoint can
/// be produced again from the journal. [`AgentCore`] and `weir run` both
/// checkpoint through it.
#[derive(Debug, Default)]
pub(super) struct CheckpointGate {
    pending: Option<Pending>,
}

impl CheckpointGate {
    /// Takes a checkpoint of the journal through `upto` (`snapshot`: the
    /// engine and the dedupe ring), behind the first `mark` outputs.
    pub(super) fn take(&mut self, upto: Lsn, snapshot: CheckpointRecord, mark: u64) {
        self.pending = Some(Pending {
            upto,
            snapshot,
            mark,
        });
    }

    /// Whether a checkpoint is waiting for acknowledgements.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Forgets the waiting checkpoint (a lost output session restarts the
    /// count of acknowledgements; a stop or a rollback takes a new one).
    pub(super) fn clear(&mut self) {
        self.pending = None;
    }

    /// The waiting checkpoint `(upto, snapshot)`, handed out once `acked`
    /// outputs of the session cover its mark.
    pub(super) fn ready(&mut self, acked: u64) -> Option<(Lsn, CheckpointRecord)> {
        match &self.pending {
            Some(p) if acked >= p.mark => self.pending.take().map(|p| (p.upto, p.snapshot)),
            _ => None,
        }
    }
}

/// The agent's ingest rules, sans-IO. `T` is the driver's acknowledgement
/// token (rumqttc's publish, a packet id in the simulation).
pub struct AgentCore<T> {
    cfg: CoreConfig,
    pf: PipelineFile,
    store: Store,
    engine: Engine,
    enc: OutputEncoder,
    scratch: Vec<Encoded>,
    decoders: Vec<Option<Decoder>>,
    /// (filter, source index, QoS)
    routes: Vec<(String, usize, u8)>,
    topic_cache: HashMap<String, Option<usize>>,
    own_prefix: String,
    batch: Batch,
    dedupe: dedupe::Dedupe,
    group: Group<T>,
    actions: VecDeque<Action<T>>,
    /// Outputs handed out / acknowledged on the current output session.
    published: u64,
    acked: u64,
    pending: CheckpointGate,
    /// When the last checkpoint was started (`None`: not since open).
    last_ckpt: Option<i64>,
    checkpoint_soon: bool,
    /// The last checkpoint's snapshot bytes (to size the next one's buffer).
    last_snap: usize,
    /// The latest `now` handed in, or the engine's restored clock: the
    /// core's time never goes back, even when the driver's does (a
    /// gateway without a battery-backed clock, restarted).
    clock: i64,
    /// Highest LSN the engine has processed.
    processed: Lsn,
    ingest_once: bool,
    output_once: bool,
    processing_time: bool,
    stats: CoreStats,
}

impl<T> std::fmt::Debug for AgentCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCore")
            .field("store", &self.store)
            .field("processed", &self.processed)
            .field("published", &self.published)
            .field("acked", &self.acked)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Offers one journal record to the engine (through a SQL query's stage
/// before the engine and the source's scalar user functions, if it has
/// any: `crate::sql::stage`, `crate::functions`), on ingest and on replay
/// alike.
pub(super) fn feed(
    engine: &mut Engine,
    pf: &PipelineFile,
    s: &Sample<'_>,
) -> Result<(), weir_core::engine::Reject> {
    feed_with(engine, pf, s, None)
}

/// [`feed`] with the engine's [`KeyHint`] for the record's key (the
/// journal replay keeps one per key of the store's dictionary): the engine
/// then skips looking the key up by name
/// ([`Engine::handle_sample_hinted`]). Same effects as [`feed`].
pub(super) fn feed_hinted(
    engine: &mut Engine,
    pf: &PipelineFile,
    s: &Sample<'_>,
    hint: &mut KeyHint,
) -> Result<(), weir_core::engine::Reject> {
    feed_with(engine, pf, s, Some(hint))
}

#[inline(always)]
fn feed_with(
    engine: &mut Engine,
    pf: &PipelineFile,
    s: &Sample<'_>,
    hint: Option<&mut KeyHint>,
) -> Result<(), weir_core::engine::Reject> {
    let fns = &pf.functions;
    // Grouping sets: the record (keyed by the full composite key) goes
    // into every set's source, keyed by the set's columns.
    let sets = pf
        .sql
        .as_deref()
        .and_then(|q| q.groups.as_ref())
        .filter(|g| g.sets.len() > 1);
    let offer = |engine: &mut Engine, v: &[f64]| match (sets, hint) {
        (Some(g), _) => {
            let vals: Vec<_> = crate::sql::groups::values(s.key).collect();
            let mut key = String::with_capacity(s.key.len());
            for set in 0..g.sets.len() {
                g.key(set, |j| vals.get(j).and_then(|v| v.as_deref()), &mut key);
                engine.handle_sample(s.now, s.source as usize + set, &key, s.ts, v)?;
            }
            Ok(())
        }
        (None, Some(h)) => engine.handle_sample_hinted(s.now, s.source as usize, s.key, h, s.ts, v),
        (None, None) => engine.handle_sample(s.now, s.source as usize, s.key, s.ts, v),
    };
    if s.source == TICK_SOURCE {
        engine.handle_time(s.now);
        Ok(())
    } else if let Some(q) = pf.sql.as_deref().filter(|q| q.filters_before_engine()) {
        q.before_engine(fns, s.source as usize, s.key, s.ts, s.values, |v| {
            offer(engine, v)
        })
        .unwrap_or_else(|| {
            engine.count_filtered();
            Ok(())
        })
    } else {
        fns.with_values(s.source as usize, s.ts, s.values, |v| offer(engine, v))
    }
}

/// Stages a decoded message for a SQL query that reads a text column
/// besides the key, before its readings are journaled or identified (the
/// journal holds no such column): `WHERE` drops the readings it does not
/// keep (`Query::keep_decoded`), counted as filtered by the engine, on
/// ingest only; the computed fields that read the column are computed
/// and journaled after the readings' fields
/// (`Query::computed_at_ingest`). A replay of the journal sees the kept
/// readings with those fields.
pub(super) fn filter_decoded(engine: &mut Engine, pf: &PipelineFile, batch: &mut Batch) {
    let Some(q) = pf.sql.as_deref().filter(|q| q.stages_at_ingest()) else {
        return;
    };
    let mut row = Vec::new();
    if q.filters_at_ingest() {
        let dropped = batch.retain(|b, i| {
            let s = b.get(i);
            q.keep_decoded(s.key, s.ts, s.values, |j| b.text(i, j), &mut row)
        });
        for _ in 0..dropped {
            engine.count_filtered();
        }
    }
    batch.widen(q.ingest_computed().count(), |b, i, out| {
        let s = b.get(i);
        q.computed_at_ingest(s.key, s.ts, s.values, |j| b.text(i, j), &mut row, out);
    });
    // Several key columns: the reading's key is their composite, every
    // column present; each grouping set's key is taken from it when the
    // record is fed ([`feed`]).
    if let Some(g) = &q.groups {
        batch.rekey(|b, i, out| g.full_key(|j| b.text(i, j), out));
    }
}

/// Records the identity of a decoded message of source `src` (the hash of
/// its readings the journal can hold: the records a replay sees) and says
/// whether it is a redelivery. It is looked up in the ring only when
/// `checkable` (its readings carry payload timestamps) and while the ring
/// is armed after a connect. Returns the identity (`None` without one)
/// and the verdict.
pub(super) fn identify(
    dedupe: &mut dedupe::Dedupe,
    src: usize,
    now: i64,
    batch: &Batch,
    checkable: bool,
) -> (Option<u64>, bool) {
    let checking = dedupe.armed() && checkable;
    dedupe.message();
    let mut id = dedupe::MessageHash::default();
    for s in batch.iter() {
        let j = Sample {
            source: src as u16,
            key: s.key,
            ts: s.ts,
            now,
            values: s.values,
        };
        if Store::fits(&j) {
            id.add(dedupe::reading_hash(src as u16, s.key, s.ts, s.values));
        }
    }
    let id = id.finish();
    if let Some(h) = id {
        dedupe.record(h);
    }
    (id, checking && id.is_some_and(|h| dedupe.is_duplicate(h)))
}

/// Restores the newest checkpoint of `store` into a fresh engine of `pf`,
/// and its dedupe ring into `dedupe` (emptied first). Returns the engine,
/// the LSN the checkpoint covers (0 without one) and the engine's restore
/// report. `weir run` and [`AgentCore`] both start (and restart after a
/// lost output session) here.
///
/// # Errors
/// [`RunError::Config`] for a pipeline that does not build,
/// [`RunError::Restore`] for a checkpoint that does not restore into it,
/// [`RunError::Store`] when the store cannot be read.
pub(super) fn restore_latest(
    store: &Store,
    pf: &PipelineFile,
    dedupe: &mut dedupe::Dedupe,
) -> Result<(Engine, Lsn, Option<weir_core::snapshot::RestoreReport>), RunError> {
    let mut engine = pf
        .spec
        .clone()
        .build()
        .map_err(|e| RunError::Config(e.to_string()))?;
    dedupe.import(&[]);
    let Some((upto, ckpt)) = store.latest()? else {
        return Ok((engine, 0, None));
    };
    let restore_err = |detail: String| RunError::Restore {
        path: store.path().display().to_string(),
        pipeline: pf.spec.name.clone(),
        detail,
    };
    let (hashes, snap) = dedupe::decode_checkpoint(ckpt)
        .ok_or_else(|| restore_err("not an agent checkpoint (no dedupe ring header)".into()))?;
    dedupe.import(&hashes);
    let report = engine
        .restore(snap)
        .map_err(|e| restore_err(e.to_string()))?;
    Ok((engine, upto, Some(report)))
}

/// Replays the journal after `upto` through `engine`, rebuilding into
/// `dedupe` the identities of the messages it holds (a record that does
/// not continue a message closes the one before it, as on ingest).
/// Records in `skip` (`(after, through]`: those of a pipeline rolled back
/// since) count for identities but are not fed. `emit(engine, lsn, now)`
/// drains the engine after each record fed. Returns the records read and
/// the last LSN read (`upto` if none).
///
/// Only the last [`dedupe::WINDOW`] identities stay in the ring, so the
/// readings of messages far from the journal's end are not hashed
/// ([`Identities`]): the ring ends as if every message had been.
///
/// # Errors
/// [`RunError::Store`] when the journal cannot be read.
pub(super) fn replay_journal(
    store: &Store,
    upto: Lsn,
    skip: Option<(Lsn, Lsn)>,
    engine: &mut Engine,
    pf: &PipelineFile,
    dedupe: &mut dedupe::Dedupe,
    mut emit: impl FnMut(&mut Engine, Lsn, i64),
) -> Result<(u64, Lsn), RunError> {
    let mut n = 0u64;
    let mut last = upto;
    let mut ids = Identities::new(store.next_lsn().saturating_sub(1));
    // The engine's id of each dictionary key, as a hint: a lookup by name
    // per record cost several cache misses with many keys. Sized once (the
    // dictionary does not grow during a replay): grown a key at a time, the
    // vector's reallocations moved glibc's mmap threshold and the replay's
    // peak RSS rose by 4-6 MiB.
    let mut hints = vec![KeyHint::default(); store.dict_len()];
    let mut replay = store.replay_from(upto)?;
    while let Some((lsn, s, cont, key_id)) = replay.next_keyed()? {
        if s.source != TICK_SOURCE {
            ids.part(lsn, cont, || {
                dedupe::reading_hash(s.source, s.key, s.ts, s.values)
            });
        }
        if !skip.is_some_and(|(a, b)| lsn > a && lsn <= b) {
            let hint = key_id.and_then(|id| hints.get_mut(id as usize));
            let _ = match hint.filter(|_| s.source != TICK_SOURCE) {
                Some(h) => feed_hinted(engine, pf, &s, h),
                None => feed(engine, pf, &s),
            };
            emit(engine, lsn, s.now);
        }
        last = lsn;
        n += 1;
    }
    drop(replay);
    ids.finish(store, dedupe)?;
    Ok((n, last))
}

/// The message identities of a journal replay, in two passes. The first
/// pass hashes a message's readings only once the journal's end is near
/// (its remaining records, at the mean message size so far, are within
/// 1.5 × [`dedupe::WINDOW`] messages) and keeps the first LSN of the
/// messages before that; [`Identities::finish`] reads again the few of
/// those that still belong to the last [`dedupe::WINDOW`]. Which messages
/// are hashed in the first pass is a guess that costs only time when
/// wrong: the ring is the same either way.
#[derive(Debug)]
struct Identities {
    /// The journal's last LSN.
    end: Lsn,
    /// Records and messages begun so far (not ticks).
    records: u64,
    messages: u64,
    /// Hashing from now on (it never stops once it starts, and starts only
    /// as a message begins: the open message is hashed if this is set).
    hashing: bool,
    /// The open message's first LSN, and its hash while `hashing`.
    open: Option<Lsn>,
    cur: dedupe::MessageHash,
    /// The first LSNs of unhashed messages, then the identities of hashed
    /// ones, oldest first, each at most [`dedupe::WINDOW`] long.
    deferred: std::collections::VecDeque<Lsn>,
    hashed: std::collections::VecDeque<u64>,
    /// Messages dropped from either (older than the ring can hold).
    gone: u64,
}

impl Identities {
    fn new(end: Lsn) -> Self {
        Identities {
            end,
            records: 0,
            messages: 0,
            hashing: false,
            open: None,
            cur: dedupe::MessageHash::default(),
            deferred: Default::default(),
            hashed: Default::default(),
            gone: 0,
        }
    }

    /// A journal record at `lsn` (not a tick); `hash` gives its reading's
    /// identity when it is wanted.
    #[inline]
    fn part(&mut self, lsn: Lsn, cont: bool, hash: impl FnOnce() -> u64) {
        if !cont || self.open.is_none() {
            self.close();
            if !self.hashing {
                let mean = (self.records / self.messages.max(1)).max(1);
                let ahead = self.end.saturating_sub(lsn) + 1;
                self.hashing = ahead / mean <= (dedupe::WINDOW + dedupe::WINDOW / 2) as u64;
            }
            self.open = Some(lsn);
            self.messages += 1;
        }
        self.records += 1;
        if self.hashing {
            self.cur.add(hash());
        }
    }

    fn close(&mut self) {
        match self.open.take() {
            Some(_) if self.hashing => {
                if let Some(h) = self.cur.finish() {
                    self.hashed.push_back(h);
                    if self.hashed.len() > dedupe::WINDOW {
                        self.hashed.pop_front();
                        self.gone += 1;
                    }
                }
                self.cur = dedupe::MessageHash::default();
            }
            Some(first) => {
                self.deferred.push_back(first);
                if self.deferred.len() > dedupe::WINDOW {
                    self.deferred.pop_front();
                    self.gone += 1;
                }
            }
            None => {}
        }
    }

    /// Records every message's identity in `dedupe`, in journal order:
    /// those the ring cannot hold as placeholders it overwrites, then the
    /// last [`dedupe::WINDOW`], reading again the unhashed ones among them.
    fn finish(mut self, store: &Store, dedupe: &mut dedupe::Dedupe) -> Result<(), RunError> {
        self.close();
        let total = self.gone + (self.deferred.len() + self.hashed.len()) as u64;
        let keep = total.min(dedupe::WINDOW as u64) as usize;
        // Never more hashed than kept: both are at most the window.
        let again = keep - self.hashed.len();
        for _ in 0..total - keep as u64 {
            dedupe.record(0);
        }
        if again > 0 {
            // The same rule again, hashing every message, for `again` of them.
            let first = self.deferred[self.deferred.len() - again];
            let mut ids = Identities {
                hashing: true,
                ..Identities::new(self.end)
            };
            let mut replay = store.replay_from(first - 1)?;
            while let Some((lsn, s, cont)) = replay.next_part()? {
                if s.source == TICK_SOURCE {
                    continue;
                }
                if !cont && ids.messages == again as u64 {
                    break;
                }
                ids.part(lsn, cont, || {
                    dedupe::reading_hash(s.source, s.key, s.ts, s.values)
                });
            }
            ids.close();
            for &h in &ids.hashed {
                dedupe.record(h);
            }
        }
        for &h in &self.hashed {
            dedupe.record(h);
        }
        Ok(())
    }
}

impl<T> AgentCore<T> {
    /// Builds the core on an open store: restores the latest checkpoint and
    /// replays the journal after it; the outputs of the replay wait in
    /// [`AgentCore::poll_action`].
    ///
    /// # Errors
    /// [`RunError::Config`] for a pipeline without MQTT sources or that does
    /// not build, [`RunError::Restore`] for a checkpoint of another
    /// pipeline, [`RunError::Store`] when the journal cannot be read.
    pub fn open(cfg: CoreConfig, pf: PipelineFile, store: Store) -> Result<Self, RunError> {
        let (decoders, routes) = super::routes_of(&pf);
        if routes.is_empty() {
            return Err(RunError::Config(format!(
                "pipeline `{}`: no source has a [source.mqtt] table, nothing to subscribe to",
                pf.spec.name
            )));
        }
        let engine = pf
            .spec
            .clone()
            .build()
            .map_err(|e| RunError::Config(e.to_string()))?;
        let enc = OutputEncoder::for_pipeline(&cfg.gateway, &cfg.prefix, cfg.format, &pf);
        let own_prefix = enc.own_prefix();
        let processing_time = pf.spec.time.mode == TimeMode::Processing
            || pf
                .spec
                .operators
                .iter()
                .any(|o| matches!(o.kind, OperatorKind::Process(_)))
            || pf.spec.sources.iter().any(|s| s.idle_timeout.is_some());
        let mut core = AgentCore {
            cfg,
            pf,
            store,
            engine,
            enc,
            scratch: Vec::new(),
            decoders,
            routes,
            topic_cache: HashMap::new(),
            own_prefix,
            batch: Batch::new(),
            dedupe: dedupe::Dedupe::default(),
            group: Group::default(),
            actions: VecDeque::new(),
            published: 0,
            acked: 0,
            pending: CheckpointGate::default(),
            last_ckpt: None,
            checkpoint_soon: false,
            last_snap: 0,
            processed: 0,
            clock: i64::MIN,
            ingest_once: false,
            output_once: false,
            processing_time,
            stats: CoreStats::default(),
        };
        core.recover()?;
        Ok(core)
    }

    /// Restores the last checkpoint and replays the journal after it,
    /// queueing what the engine emits for publishing.
    fn recover(&mut self) -> Result<u64, RunError> {
        let (mut engine, upto, _) = restore_latest(&self.store, &self.pf, &mut self.dedupe)?;
        let mut outs = Vec::new();
        let (enc, windows) = (&self.enc, self.cfg.publish_windows);
        let (n, last) = replay_journal(
            &self.store,
            upto,
            None,
            &mut engine,
            &self.pf,
            &mut self.dedupe,
            |engine, lsn, _| drain(engine, enc, windows, lsn, &mut outs),
        )?;
        self.engine = engine;
        self.clock = self.clock.max(self.engine.now());
        for e in outs {
            self.publish(e);
        }
        self.processed = last.max(self.store.committed_lsn());
        self.stats.replayed += n;
        if n > 0 {
            // Trim the journal soon: a crash loop faster than the interval
            // would otherwise replay an ever longer journal.
            self.checkpoint_soon = true;
        }
        Ok(n)
    }

    /// The driver's `now`, never behind a time the core has seen.
    fn clock(&mut self, now: i64) -> i64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    fn publish(&mut self, e: Encoded) {
        self.published += 1;
        self.stats.published += 1;
        self.actions.push_back(Action::Publish(e));
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action<T>> {
        self.actions.pop_front()
    }

    /// When [`AgentCore::handle_tick`] has work to do (driver clock, ms):
    /// the open group's commit, the next checkpoint, or the engine's next
    /// timer (a source or key going idle). `None`: nothing until an event.
    pub fn poll_timeout(&self) -> Option<i64> {
        let commit = self.group.opened.map(|t| t + self.cfg.commit_ms);
        let ckpt = match (self.pending.is_pending(), self.last_ckpt) {
            (true, _) => None,
            (false, _) if self.checkpoint_soon => Some(i64::MIN),
            (false, Some(t)) => Some(t.saturating_add(self.cfg.checkpoint_ms)),
            (false, None) => None,
        };
        // While a group is open the engine's timers wait for its commit
        // (a tick then would only be staged behind it): reporting them
        // would have a driver tick in a loop until the commit is due.
        let engine = match self.group.opened {
            Some(_) => None,
            None => self.engine.poll_timeout(),
        };
        [commit, ckpt, engine].into_iter().flatten().min()
    }

    /// Counters since open.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// The store (read-only: positions, the checkpoint).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Gives the store back (the driver closing down, or a test crashing).
    pub fn into_store(self) -> Store {
        self.store
    }

    /// Highest LSN the engine has processed.
    pub fn processed(&self) -> Lsn {
        self.processed
    }

    /// A link (re)connected. On the ingest link the core subscribes and
    /// arms the redelivery check; an output session the broker lost
    /// (`session_present == false` after the first connect) had outputs in
    /// flight: everything after the last checkpoint is published again.
    /// The driver must then drop every publish it took from
    /// [`AgentCore::poll_action`] and has not handed to the broker
    /// (`weir run` replaces the output client): the acknowledgement count
    /// starts again from zero, and a stale publish acknowledged on the new
    /// session would let a checkpoint pass an output not yet acknowledged.
    ///
    /// # Errors
    /// A store error while committing or replaying.
    pub fn handle_connected(
        &mut self,
        now: i64,
        link: Link,
        session_present: bool,
    ) -> Result<(), RunError> {
        let now = self.clock(now);
        match link {
            Link::Ingest => {
                if self.ingest_once && !session_present {
                    tracing::warn!("the broker lost our ingest session");
                }
                self.ingest_once = true;
                // A broker redelivers unacknowledged messages first.
                self.dedupe.arm();
                for (filter, _, qos) in &self.routes {
                    self.actions.push_back(Action::Subscribe {
                        filter: filter.clone(),
                        qos: *qos,
                    });
                }
            }
            Link::Output => {
                if self.output_once && !session_present {
                    self.output_session_lost(now)?;
                }
                self.output_once = true;
            }
        }
        Ok(())
    }

    /// The broker lost the output session and every output in flight:
    /// replay everything since the last durable checkpoint and publish it
    /// again (consumers drop duplicates by id).
    fn output_session_lost(&mut self, now: i64) -> Result<(), RunError> {
        self.stats.sessions_lost += 1;
        self.commit_group(now)?;
        self.actions.retain(|a| !matches!(a, Action::Publish(_)));
        self.published = 0;
        self.acked = 0;
        self.pending.clear();
        if self.store.mode() == DurabilityMode::Journal {
            let kept = self.dedupe.keep();
            self.recover()?;
            self.dedupe.resume(kept);
        }
        Ok(())
    }

    /// A link dropped. Acknowledgements not yet released for the ingest
    /// connection are forgotten (a broker may give redeliveries new packet
    /// ids, so a stale ack could acknowledge another message); the broker
    /// redelivers and the dedupe ring recognises what was committed.
    pub fn handle_lost(&mut self, link: Link) {
        if link == Link::Ingest {
            self.group.acks.clear();
            self.actions.retain(|a| !matches!(a, Action::Ack(_)));
        }
    }

    /// The broker acknowledged one output (they are acknowledged in order).
    pub fn handle_puback(&mut self) {
        self.acked += 1;
        self.stats.pubacks += 1;
    }

    fn route(&mut self, topic: &str) -> Option<usize> {
        super::route_cached(&self.routes, &mut self.topic_cache, topic)
    }

    fn dead(&mut self, topic: &str, reason: &str, detail: String, payload: &[u8], now: i64) {
        let d = DeadLetter {
            now,
            topic: topic.to_string(),
            reason: reason.to_string(),
            detail,
            payload: payload[..payload.len().min(crate::store::PAYLOAD_KEPT)].to_vec(),
        };
        self.store.stage_dead_letter(&d);
        self.actions.push_back(Action::DeadLetter(d));
    }

    /// One ingest message at driver time `now`; `ack` is its token (QoS 1)
    /// or `None` (QoS 0). It joins the open group; its acknowledgement is
    /// released after the group's commit and compute.
    ///
    /// # Errors
    /// A store error (the driver stops: what is not committed is redelivered).
    pub fn handle_publish(
        &mut self,
        now: i64,
        topic: &str,
        payload: &[u8],
        ack: Option<T>,
    ) -> Result<(), RunError> {
        let now = self.clock(now);
        self.stats.messages += 1;
        if self.group.opened.is_none() {
            self.group.opened = Some(now);
            if self.processing_time {
                self.stage_tick(now)?;
            }
        }
        self.group.messages += 1;
        self.take(now, topic, payload)?;
        if let Some(t) = ack {
            self.group.acks.push(t);
        }
        let full = group_full(
            self.group.messages,
            self.group.staged.len(),
            self.store.staged_bytes(),
            self.cfg.group_records,
        );
        if full || now >= self.group.opened.unwrap_or(now) + self.cfg.commit_ms {
            self.commit_group(now)?;
        }
        Ok(())
    }

    /// Decodes a message and stages its readings (or counts it a duplicate).
    fn take(&mut self, now: i64, topic: &str, payload: &[u8]) -> Result<(), RunError> {
        if topic.starts_with(&self.own_prefix) {
            return Ok(());
        }
        let Some(src) = self.route(topic) else {
            let detail = "no source's topic filters match this topic".to_string();
            self.dead(topic, "unknown_topic", detail, payload, now);
            return Ok(());
        };
        let Some(dec) = &self.decoders[src] else {
            return Ok(());
        };
        let has_ts = dec.has_timestamp();
        let mut batch = std::mem::take(&mut self.batch);
        let r = dec.decode(topic, payload, now, &mut batch);
        let result = match r {
            Err(e) => {
                self.dead(topic, e.reason(), e.to_string(), payload, now);
                Ok(())
            }
            Ok(()) => {
                filter_decoded(&mut self.engine, &self.pf, &mut batch);
                self.stage_batch(now, src, has_ts, topic, payload, &batch)
            }
        };
        self.batch = batch;
        result
    }

    fn stage_batch(
        &mut self,
        now: i64,
        src: usize,
        has_ts: bool,
        topic: &str,
        payload: &[u8],
        batch: &Batch,
    ) -> Result<(), RunError> {
        for e in batch.errors().to_vec() {
            self.dead(topic, e.reason(), e.to_string(), payload, now);
        }
        let (_, duplicate) = identify(&mut self.dedupe, src, now, batch, has_ts);
        if duplicate {
            self.stats.duplicates += batch.len() as u64;
            return Ok(());
        }
        let mut cont = false;
        for s in batch.iter() {
            let j = Sample {
                source: src as u16,
                key: s.key,
                ts: s.ts,
                now,
                values: s.values,
            };
            match self.store.append_part(&j, cont) {
                Ok(lsn) => {
                    cont = true;
                    self.group.staged.push(lsn, 0, &j);
                }
                Err(StoreError::Sample(e)) => {
                    self.dead(topic, "too_large", e.to_string(), payload, now);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Stages a clock tick (journaled, so replay sees the same ticks).
    fn stage_tick(&mut self, now: i64) -> Result<(), RunError> {
        let s = Sample {
            source: TICK_SOURCE,
            key: "",
            ts: now,
            now,
            values: &[],
        };
        let lsn = self.store.append(&s)?;
        self.group.staged.push(lsn, 0, &s);
        Ok(())
    }

    /// Closes the group: commit, compute, acknowledge.
    fn commit_group(&mut self, now: i64) -> Result<(), RunError> {
        if self.group.opened.is_none() && self.group.staged.is_empty() && self.group.acks.is_empty()
        {
            return Ok(());
        }
        self.store.commit()?;
        self.stats.commits += 1;
        let mut g = std::mem::take(&mut self.group);
        let mut outs = std::mem::take(&mut self.scratch);
        let (enc, publish_windows) = (&self.enc, self.cfg.publish_windows);
        let (stats, store, actions) = (&mut self.stats, &mut self.store, &mut self.actions);
        let mut processed = self.processed;
        g.staged
            .compute(&mut self.engine, &self.pf, |engine, r, s, verdict| {
                if r.source != TICK_SOURCE {
                    stats.readings += 1;
                }
                if let Err(rej) = verdict {
                    let d = DeadLetter {
                        now,
                        topic: format!("source/{}", r.source),
                        reason: rej.name().to_string(),
                        detail: format!("key `{}`, ts {}: {rej}", s.key, r.ts),
                        payload: Vec::new(),
                    };
                    store.stage_dead_letter(&d);
                    actions.push_back(Action::DeadLetter(d));
                }
                drain(engine, enc, publish_windows, r.lsn, &mut outs);
                processed = r.lsn;
            });
        self.processed = processed;
        for e in outs.drain(..) {
            self.publish(e);
        }
        self.scratch = outs;
        for t in g.acks.drain(..) {
            self.actions.push_back(Action::Ack(t));
        }
        // Keep the buffers' capacity.
        g.staged.clear();
        g.messages = 0;
        g.opened = None;
        self.group = g;
        Ok(())
    }

    /// Time passed: commits a due group, journals a tick when the engine
    /// has a timer due, starts a due checkpoint and writes one whose
    /// outputs are all acknowledged.
    ///
    /// # Errors
    /// A store error (the driver stops and reopens).
    pub fn handle_tick(&mut self, now: i64) -> Result<(), RunError> {
        let now = self.clock(now);
        if self.last_ckpt.is_none() {
            self.last_ckpt = Some(now);
        }
        if self
            .group
            .opened
            .is_some_and(|t| now >= t + self.cfg.commit_ms)
        {
            self.commit_group(now)?;
        }
        if self.group.opened.is_none() && self.engine.poll_timeout().is_some_and(|t| now >= t) {
            self.group.opened = Some(now);
            self.stage_tick(now)?;
            self.commit_group(now)?;
        }
        self.maybe_checkpoint(now, false)?;
        Ok(())
    }

    /// Commits the open group and writes a final checkpoint if every
    /// output is acknowledged (a graceful stop). Returns whether it did.
    ///
    /// # Errors
    /// A store error.
    pub fn handle_stop(&mut self, now: i64) -> Result<bool, RunError> {
        let now = self.clock(now);
        self.commit_group(now)?;
        self.pending.clear();
        self.maybe_checkpoint(now, true)
    }

    /// Starts a checkpoint when one is due, and writes it once the broker
    /// has acknowledged every output published before it.
    fn maybe_checkpoint(&mut self, now: i64, force: bool) -> Result<bool, RunError> {
        let due = force
            || self.checkpoint_soon
            || self
                .last_ckpt
                .is_some_and(|t| now >= t.saturating_add(self.cfg.checkpoint_ms));
        if !self.pending.is_pending() && due && self.group.staged.is_empty() {
            let mut snap = Store::checkpoint_buffer(self.last_snap + self.last_snap / 8 + 1024);
            dedupe::encode_checkpoint_into(&self.dedupe, &self.engine, &mut snap)
                .map_err(|e| RunError::Config(format!("snapshot failed: {e}")))?;
            self.last_snap = snap.snapshot().len();
            self.pending.take(self.processed, snap, self.published);
            self.last_ckpt = Some(now);
            self.checkpoint_soon = false;
        }
        let Some((upto, snapshot)) = self.pending.ready(self.acked) else {
            return Ok(false);
        };
        self.store.put_record(upto, snapshot)?;
        self.store.sync()?;
        self.stats.checkpoints += 1;
        self.actions.push_back(Action::Checkpointed { upto });
        Ok(true)
    }
}

/// Drains the engine's outputs emitted while processing record `lsn`.
fn drain(
    engine: &mut Engine,
    enc: &OutputEncoder,
    windows: bool,
    lsn: Lsn,
    out: &mut Vec<Encoded>,
) {
    while let Some(o) = engine.poll_output() {
        let key = match &o {
            Output::Window(w) => engine.key_name(w.key),
            Output::Score(s) => engine.key_name(s.key),
            Output::Custom(c) => engine.key_name(c.key),
            Output::Late(_) => continue,
        };
        enc.encode(&o, key, lsn, windows, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    /// The ring a replay that hashes every message builds (the rule
    /// [`Identities`] must reproduce).
    fn every_message(store: &Store, dedupe: &mut dedupe::Dedupe) {
        let mut replay = store.replay_from(0).unwrap();
        let mut id = dedupe::MessageHash::default();
        while let Some((_, s, cont)) = replay.next_part().unwrap() {
            if s.source == TICK_SOURCE {
                continue;
            }
            if !cont {
                if let Some(h) = id.finish() {
                    dedupe.record(h);
                }
                id = dedupe::MessageHash::default();
            }
            id.add(dedupe::reading_hash(s.source, s.key, s.ts, s.values));
        }
        if let Some(h) = id.finish() {
            dedupe.record(h);
        }
    }

    /// Journals `layout` (runs of `(messages, readings each)`, a tick
    /// between runs) and compares the ring of a replay with the ring of
    /// hashing every message, after the same checkpoint ring.
    fn same_ring(name: &str, layout: &[(usize, usize)]) {
        let dir =
            std::env::temp_dir().join(format!("weir-identities-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = Store::open(dir.join("weir.redb"), StoreConfig::default()).unwrap();
        let mut ts = 0i64;
        for (run, &(messages, readings)) in layout.iter().enumerate() {
            for m in 0..messages {
                for r in 0..readings {
                    ts += 1;
                    let key = format!("s{}", (m + run) % 97);
                    let values = [(ts % 13) as f64];
                    let s = Sample {
                        source: 0,
                        key: &key,
                        ts,
                        now: ts,
                        values: &values,
                    };
                    store.append_part(&s, r > 0).unwrap();
                }
            }
            let tick = Sample {
                source: TICK_SOURCE,
                key: "",
                ts,
                now: ts,
                values: &[],
            };
            store.append(&tick).unwrap();
            store.commit().unwrap();
        }
        let pf = crate::pipeline_file::parse(
            "t.toml",
            "name = \"t\"\n[[source]]\nname = \"s\"\nfields = [\"v\"]\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"1s\"\naggregates = [\"count\"]\n",
        )
        .unwrap();
        let checkpoint: Vec<u64> = (1..=500).collect();
        let mut want = dedupe::Dedupe::default();
        want.import(&checkpoint);
        every_message(&store, &mut want);
        let mut got = dedupe::Dedupe::default();
        got.import(&checkpoint);
        let mut engine = pf.spec.clone().build().unwrap();
        let (n, _) =
            replay_journal(&store, 0, None, &mut engine, &pf, &mut got, |_, _, _| {}).unwrap();
        let records: usize = layout.iter().map(|(m, r)| m * r + 1).sum();
        assert_eq!(n, records as u64, "{name}");
        assert_eq!(got.inserted(), want.inserted(), "{name}");
        assert!(got.export() == want.export(), "{name}: rings differ");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_replay_rebuilds_the_ring_of_hashing_every_message() {
        let w = dedupe::WINDOW;
        // Fewer messages than the ring holds: all hashed on the first pass.
        same_ring("short", &[(1_000, 1), (50, 20)]);
        // Single readings: hashing starts near the end, nothing is read twice.
        same_ring("singles", &[(w * 3, 1)]);
        // Packs at the end mislead the guess (made on single readings):
        // most of the last window's messages are read again.
        same_ring("packs-last", &[(w * 2, 1), (2_000, 100)]);
        // Packs, then single readings.
        same_ring("packs-first", &[(3_000, 50), (w + 7, 1), (10, 3)]);
    }
}
