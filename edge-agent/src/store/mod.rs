//! The durable ingest journal and checkpoint store, in one redb file on the
//! data directory. Pure storage: no MQTT, no clock, no threads. The agent
//! decides when a group commit is closed (batch size or a deadline on its
//! clock) and acknowledges QoS 1 messages up to the LSN
//! [`Store::commit`] returns.
//!
//! ```
//! use weir_agent::store::{Sample, StoreConfig};
//! use weir_core::seam::CheckpointStore;
//!
//! let dir = std::env::temp_dir().join(format!("weir-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("weir.redb");
//! let mut store = StoreConfig::default().build(&path).unwrap();
//! for i in 0..10 {
//!     let sample = Sample { source: 0, key: "s0001", ts: 1_000 + i, now: 1_050 + i, values: &[21.5] };
//!     store.append(&sample).unwrap();
//! }
//! assert_eq!(store.commit().unwrap(), 10); // ack everything up to LSN 10
//! store.put(6, b"engine snapshot covering LSN 1..=6").unwrap();
//! store.sync().unwrap(); // checkpoint + truncation, one transaction
//! drop(store);
//!
//! let store = StoreConfig::default().build(&path).unwrap();
//! let (upto, _snapshot) = store.latest().unwrap().unwrap();
//! let mut replay = store.replay_from(upto).unwrap();
//! let mut n = 0;
//! while let Some((lsn, s)) = replay.next_record().unwrap() {
//!     assert_eq!((s.ts, s.now), (1_000 + lsn as i64 - 1, 1_050 + lsn as i64 - 1));
//!     n += 1;
//! }
//! assert_eq!(n, 4); // LSN 7..=10
//! # drop(replay); drop(store); std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! # On-disk layout (format 1)
//!
//! One redb database (redb 4, 4 KiB pages, copy-on-write B-trees, two
//! commit slots with checksums), three tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `journal` | `u64`: LSN of the chunk's first record | one chunk: many records (below) |
//! | `keys` | `u32`: key id | `&str`: the key (sensor id) |
//! | `meta` | `&str`: `"checkpoint"` | `[1u8][upto: u64 LE][crc32: u32 LE][snapshot bytes]`; the CRC covers byte 0, `upto` and the snapshot |
//! | | `"truncated"` | `u64 LE`: every LSN ≤ this may have been removed |
//! | | `"bytes_written"` | `u64 LE`: device bytes this store has written over its life, as of the last checkpoint (optional) |
//!
//! A **chunk** (journal value) is
//! `[version = 1][record]…[count: u32 LE][crc32: u32 LE]`, the CRC-32
//! (IEEE) over everything before it. A **record** is
//! `source: varint`, `key: varint` (`id << 1`, or `len << 1 | 1` followed
//! by the UTF-8 bytes when the dictionary is full), `ts: zigzag varint` of
//! the difference to the previous record's `ts` in the chunk (the first to
//! 0), `now: zigzag varint` likewise (the driver's clock at ingest, so
//! replay calls `handle_sample` with the same `now`), `n: varint` values, then each value as a varint
//! `zigzag(m) << 4 | k` when the `f64` is bit-for-bit `m / 10^k`
//! (`k ≤ 9`, `|m| < 2^52`: what a decimal payload parses to), or `15`
//! followed by the 8 raw bytes. Varints are LEB128.
//!
//! A W1 reading (`s0123,1700000000123,21.1234`, 28 bytes of CSV) takes
//! 11 bytes as a record (source 1, key id 2, ts delta 2, now delta 1,
//! count 1, value 4), 10.8 bytes on average with the chunk framing. Keys go to the `keys` dictionary the first time
//! they are seen (up to [`StoreConfig::max_dict_keys`], then inline), in the
//! same transaction as the first chunk that uses them; ids are never
//! reused or removed.
//!
//! A commit writes the staged records as chunks of at most
//! [`StoreConfig::max_chunk_bytes`] (a chunk may overshoot by one record),
//! each under its first LSN.
//!
//! # Invariants
//!
//! - LSNs start at 1 and have no gaps: the journal holds a contiguous run
//!   `truncated + 1 ..= committed` (possibly with a chunk straddling
//!   `truncated`); each chunk's key is the previous chunk's key plus its
//!   count. Replay checks this and reports [`StoreError::Gap`].
//! - A checkpoint's `upto` is ≤ the last committed LSN when it was put (journal
//!   mode; a checkpoint covering staged records would outlive them in a
//!   crash and their redelivered messages would count twice); the
//!   next LSN after opening is `max(last journal LSN, truncated, upto) + 1`.
//! - `truncated ≤` the latest durable checkpoint's `upto` when truncation
//!   happens through [`CheckpointStore::sync`] (the normal path).
//!
//! # What is durable when
//!
//! - [`DurabilityMode::Journal`] (default): after [`Store::commit`] returns
//!   `Ok(lsn)`, every record up to `lsn` survives a crash or power loss
//!   (redb's `Durability::Immediate`: data pages, then the commit slot, then
//!   `fsync`). Staged records not yet committed are lost; their messages
//!   were not acknowledged, so the broker redelivers them.
//! - [`DurabilityMode::Checkpoint`]: no per-sample writes. Only checkpoints
//!   are durable; **a crash loses every sample since the last checkpoint**
//!   (up to one checkpoint interval of input, and the outputs they would
//!   have produced). Use it for QoS 0 sensors, which the broker never
//!   redelivers anyway, and for flash that must be spared.
//! - A checkpoint ([`CheckpointStore::put`] then [`CheckpointStore::sync`])
//!   is written together with the truncation of the journal through its
//!   `upto` in one durable transaction: after a crash either both happened
//!   or neither, and [`CheckpointStore::latest`] never shows a torn
//!   snapshot (redb's commit, plus our CRC on top).
//! - Restart: open, take [`CheckpointStore::latest`], restore the engine
//!   from it, then [`Store::replay_from`] its `upto`.
//!
//! # Power loss and torn writes
//!
//! redb writes new pages copy-on-write and never overwrites live ones; a
//! commit then writes the inactive commit slot (with a checksum) and flips
//! the primary bit in the god byte, then `fsync`s. A torn commit leaves a
//! slot whose checksum fails, and open falls back to the previous commit.
//! After an unclean shutdown, open runs redb's repair: it walks every page
//! of the committed trees to check checksums and rebuild the allocator
//! state, so its time grows with the file (tens of ms for a 10 MB journal;
//! another reason to truncate behind checkpoints). The chunk and
//! checkpoint CRCs are a second line against bit rot or outside
//! tampering: a damaged chunk is an error ([`StoreError::Corrupt`]) that
//! names the LSN, never a panic. The SD card is assumed to honour `fsync`
//! (cheap cards that acknowledge writes from a volatile cache can lose the
//! last commits whatever software does).
//!
//! # Flash wear
//!
//! A durable commit costs a fixed overhead plus its chunks. Traced through
//! a counting `StorageBackend`: a commit appending three 3.9 KB chunks to a
//! journal of ~3,000 chunks writes 9 pages of 4 KiB (three leaves, the
//! journal's branch path, the table tree's root, two system-tree pages)
//! and the 320-byte header, then one `fsync`; about 28 KB besides the
//! chunks. So device bytes per reading ≈ `28 KB / batch + ~11 B` (less
//! when chunks fill their pages), and the target of 1.5× the payload (42 B
//! for a 28-byte W1 reading) needs batches of about 1,000 or more. Measured by `examples/store_bench.rs`
//! (`/proc/self/io` `write_bytes`, ext4, 1 M W1 readings):
//!
//! | batch | journal B/reading | × payload | plain CSV file, `sync_data` per batch |
//! |---|---|---|---|
//! | 250 | 130.0 | 4.64× | 44.4 B (1.58×) |
//! | 1,000 | 41.1 | 1.47× | 32.1 B (1.15×) |
//! | 2,000 | 26.6 | 0.95× | 30.0 B (1.07×) |
//! | 4,000 | 19.6 | 0.70× | 29.0 B (1.04×) |
//!
//! Chunks are kept under one page ([`StoreConfig::max_chunk_bytes`]) because
//! a larger value gets a power-of-two run of pages of its own (a 9.8 KB
//! batch as one value wrote 44.7 B/reading instead of 41.0).
//!
//! A checkpoint writes its snapshot once per interval (a 1.5 MB snapshot
//! cost 2.1 MB of writes: the snapshot's pages plus the freed ones'
//! bookkeeping); [`DurabilityMode::Checkpoint`] writes nothing else.
//! Compaction ([`Store::maybe_compact`], run by `sync` after the
//! truncation) rewrites live pages and is done only when the file exceeds
//! [`StoreConfig::compact_above_bytes`] and has grown by half since the
//! last compaction, so a journal that is truncated in time never triggers
//! it: redb reuses freed pages in place. redb compacts only through
//! `&mut Database`: while the database is shared ([`Store::database`],
//! e.g. with the cloud uplink) compaction is skipped, logged and counted in
//! [`StoreStats::compactions_skipped`].
//!
//! Every byte the store hands the device is counted ([`Store::io`]), and
//! the running total over the store's life is written to `meta`
//! (`"bytes_written"`) with each checkpoint, in the checkpoint's own
//! transaction (no extra commit; [`Store::lifetime_bytes_written`]). It
//! counts this file, not the card: a fresh data directory starts at 0,
//! and what was written since the last checkpoint before a crash is not
//! counted (at most one checkpoint interval's writes). A file from before
//! the counter starts at 0; older builds ignore the key. The agent's
//! write budget (`weir_agent::run::budget`) and its metrics read both.
//!
//! # Sharing the transaction
//!
//! [`Store::commit_with`] and [`Store::sync_with`] run a caller's hook
//! inside the journal commit's or the checkpoint's write transaction, so
//! what the hook writes (the agent's cloud outbox, its active pipeline)
//! becomes durable together with the journal records or the checkpoint,
//! or not at all.
//!
//! # Recovery time
//!
//! Open + latest checkpoint (1.5 MB, the size of a 10k-key snapshot) +
//! replay of a 1 M-record journal: 54–74 ms after a clean close, 73–117 ms
//! after a crash (redb's repair walks the 17 MB file), page cache warm. A cold SD
//! card adds the time to read the file once (~0.5 s at 35 MB/s).

pub mod backend;
pub mod codec;
mod dead;
mod journal;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use weir_core::seam::CheckpointStore;

pub use codec::{crc32, CodecError, Sample, MAX_KEY_LEN, MAX_VALUES};
pub use dead::{DeadLetter, DEAD_LETTERS, PAYLOAD_KEPT};
pub use journal::Replay;

/// The `source` of a journal record that is a clock tick, not a sample:
/// replay calls `Engine::handle_time(now)` for it (idleness, processing
/// time and timers then replay exactly). Its key is empty, its values none.
pub const TICK_SOURCE: u16 = u16::MAX;

/// A journal position: the sequence number of a sample, from 1, no gaps.
/// 0 means "before the first sample".
pub type Lsn = u64;

/// The journal: first LSN of a chunk → chunk.
pub const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// The key dictionary: id → key.
pub const KEYS: TableDefinition<u32, &[u8]> = TableDefinition::new("keys");
/// Checkpoint and truncation point.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const CHECKPOINT_KEY: &str = "checkpoint";
const TRUNCATED_KEY: &str = "truncated";
const LIFETIME_KEY: &str = "bytes_written";
const CHECKPOINT_VERSION: u8 = 1;
/// Bytes before the snapshot in a checkpoint record: format version, `upto`
/// (u64 LE), CRC-32 (LE) of the rest.
pub const CHECKPOINT_HEADER: usize = 13;

/// How much ingest is made durable (the config's `durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Every committed batch is durable; QoS 1 messages are acknowledged
    /// after the commit that holds them. Nothing acknowledged is lost.
    #[default]
    Journal,
    /// No per-sample journal; only checkpoints are durable. A crash loses
    /// everything since the last checkpoint.
    Checkpoint,
}

impl fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurabilityMode::Journal => "journal",
            DurabilityMode::Checkpoint => "checkpoint",
        })
    }
}

impl FromStr for DurabilityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "journal" => Ok(DurabilityMode::Journal),
            "checkpoint" => Ok(DurabilityMode::Checkpoint),
            _ => Err(format!(
                "unknown durability mode `{s}`: expected `journal` or `checkpoint`"
            )),
        }
    }
}

/// Settings of a [`Store`]; [`StoreConfig::build`] opens it.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Journal or checkpoints only.
    pub mode: DurabilityMode,
    /// redb's page cache, in bytes (default 16 MiB; redb's own default is
    /// 1 GiB, too much for a gateway).
    pub cache_bytes: usize,
    /// Close a chunk once it reaches this many bytes (default 3,900). A
    /// chunk this size fills one 4 KiB leaf page; a larger redb value gets
    /// its own power-of-two run of pages, so a 10 KB batch as one value
    /// writes 16 KB (measured: 44.7 against 41.0 bytes per reading at
    /// batches of 1,000).
    pub max_chunk_bytes: usize,
    /// Most keys in the persistent dictionary; keys beyond it are stored
    /// inline in each record (default 65,536).
    pub max_dict_keys: u32,
    /// Compact the file after a checkpoint when it is larger than this
    /// (default 64 MiB); `u64::MAX` never compacts.
    pub compact_above_bytes: u64,
    /// Dead letters kept in the `deadletters` ring (default 1,000; 0 keeps none).
    pub dead_letters_keep: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            mode: DurabilityMode::Journal,
            cache_bytes: 16 << 20,
            max_chunk_bytes: 3_900,
            max_dict_keys: 65_536,
            compact_above_bytes: 64 << 20,
            dead_letters_keep: 1_000,
        }
    }
}

impl StoreConfig {
    /// Opens (or creates) the store at `path`. See [`Store::open`].
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn build(self, path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open(path, self)
    }
}

/// An error of the store, saying what failed and on which file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed (I/O, a full disk, a file that is not a redb database).
    #[error("{}: {op}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// redb's error (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// A journal chunk is damaged.
    #[error(
        "{}: journal chunk at LSN {lsn} is damaged ({source}); samples from there on cannot be \
         replayed: restore from the last checkpoint or move the file aside",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// First LSN of the chunk.
        lsn: Lsn,
        /// What is wrong with it.
        #[source]
        source: CodecError,
    },
    /// The key dictionary or the truncation point is damaged.
    #[error(
        "{}: the store's metadata is damaged ({what}); move the file aside to start empty",
        path.display()
    )]
    CorruptMeta {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The stored checkpoint is damaged.
    #[error(
        "{}: the stored checkpoint is damaged ({what}); move the file aside to start empty",
        path.display()
    )]
    CorruptCheckpoint {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// LSNs are missing from the journal.
    #[error("{}: journal gap: expected LSN {expected}, found a chunk at {found}", path.display())]
    Gap {
        /// The database file.
        path: PathBuf,
        /// The LSN that should come next.
        expected: Lsn,
        /// The first LSN of the chunk found instead.
        found: Lsn,
    },
    /// Replay asked for records that were truncated.
    #[error(
        "{}: cannot replay after LSN {after}: the journal was truncated through {truncated}",
        path.display()
    )]
    TruncatedAway {
        /// The database file.
        path: PathBuf,
        /// Where replay was asked to start.
        after: Lsn,
        /// The truncation point.
        truncated: Lsn,
    },
    /// A checkpoint claims to cover positions not yet assigned.
    #[error("checkpoint upto {upto} is past the last assigned LSN {last}")]
    CheckpointAhead {
        /// The `upto` given.
        upto: Lsn,
        /// The last LSN assigned.
        last: Lsn,
    },
    /// A checkpoint would go back behind the journal's truncation point:
    /// replay from it would miss records.
    #[error("checkpoint upto {upto} is behind the journal's truncation point {truncated}")]
    CheckpointBehind {
        /// The `upto` given.
        upto: Lsn,
        /// Where the journal was truncated.
        truncated: Lsn,
    },
    /// A sample breaks the format's limits.
    #[error("sample cannot be journaled: {0}")]
    Sample(#[source] CodecError),
    /// The hook of [`Store::commit_with`] or [`Store::sync_with`] failed;
    /// the transaction was aborted.
    #[error("{}: {op}: {source}", path.display())]
    Hook {
        /// The database file.
        path: PathBuf,
        /// Which transaction.
        op: &'static str,
        /// The hook's error.
        #[source]
        source: HookError,
    },
}

/// The error a transaction hook returns.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What kind of trouble a [`StoreError`] is, for deciding what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The file system is full (ENOSPC, a quota): retry once space returns.
    Full,
    /// The device failed a read, write or `fsync` (EIO, a short write, a
    /// pulled card): close the store, wait, open it again.
    Io,
    /// The store's content is damaged beyond redb's repair (checksums,
    /// format): move it aside and start a new one.
    Damaged,
    /// Anything else (misuse, a locked file, a sample too large).
    Other,
}

/// Whether `e` is a device fault that closing, waiting and opening the
/// store again can cure ([`Fault::Full`] or [`Fault::Io`]).
pub fn is_storage_fault(e: &StoreError) -> bool {
    matches!(e.fault(), Fault::Full | Fault::Io)
}

impl StoreError {
    /// What kind of trouble this is.
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Db { source, .. } => match &**source {
                redb::Error::Io(e) => {
                    if e.kind() == std::io::ErrorKind::StorageFull
                        || e.kind() == std::io::ErrorKind::QuotaExceeded
                        || e.raw_os_error() == Some(28)
                    {
                        Fault::Full
                    } else {
                        Fault::Io
                    }
                }
                redb::Error::PreviousIo | redb::Error::DatabaseClosed => Fault::Io,
                redb::Error::Corrupted(_)
                | redb::Error::UpgradeRequired(_)
                | redb::Error::RepairAborted => Fault::Damaged,
                _ => Fault::Other,
            },
            StoreError::Corrupt { .. }
            | StoreError::CorruptMeta { .. }
            | StoreError::CorruptCheckpoint { .. }
            | StoreError::Gap { .. } => Fault::Damaged,
            StoreError::Hook { source, .. } => {
                // The outbox's and the update state's writes go through the
                // same transaction: their redb errors are the store's.
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
                while let Some(e) = cur {
                    if let Some(io) = e.downcast_ref::<std::io::Error>() {
                        return if io.kind() == std::io::ErrorKind::StorageFull {
                            Fault::Full
                        } else {
                            Fault::Io
                        };
                    }
                    if let Some(r) = e.downcast_ref::<redb::Error>() {
                        return StoreError::Db {
                            path: PathBuf::new(),
                            op: "",
                            source: Box::new(clone_redb_kind(r)),
                        }
                        .fault();
                    }
                    if let Some(r) = e.downcast_ref::<redb::StorageError>() {
                        if matches!(
                            r,
                            redb::StorageError::Io(_) | redb::StorageError::PreviousIo
                        ) {
                            return Fault::Io;
                        }
                    }
                    if let Some(r) = e.downcast_ref::<redb::CommitError>() {
                        if matches!(r, redb::CommitError::Storage(_)) {
                            return Fault::Io;
                        }
                    }
                    cur = e.source();
                }
                Fault::Other
            }
            _ => Fault::Other,
        }
    }
}

/// Enough of a redb error to classify it (redb errors are not `Clone`).
fn clone_redb_kind(e: &redb::Error) -> redb::Error {
    match e {
        redb::Error::Io(io) => redb::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        redb::Error::PreviousIo => redb::Error::PreviousIo,
        redb::Error::Corrupted(m) => redb::Error::Corrupted(m.clone()),
        redb::Error::RepairAborted => redb::Error::RepairAborted,
        _ => redb::Error::Unsupported,
    }
}

impl StoreError {
    fn db<E: Into<redb::Error>>(path: &Path, op: &'static str) -> impl FnOnce(E) -> StoreError {
        let path = path.to_path_buf();
        move |e| StoreError::Db {
            path,
            op,
            source: Box::new(e.into()),
        }
    }
}

/// Counters, for metrics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable journal commits.
    pub commits: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Chunk bytes written (before redb's overhead).
    pub journal_bytes: u64,
    /// Chunks removed behind checkpoints.
    pub chunks_truncated: u64,
    /// Checkpoints made durable.
    pub checkpoints: u64,
    /// Compactions run.
    pub compactions: u64,
    /// Compactions that failed after a checkpoint (the file stays larger).
    pub compaction_failures: u64,
    /// Compactions skipped because the database was shared.
    pub compactions_skipped: u64,
    /// Dead letters staged.
    pub dead_letters: u64,
}

/// The journal and checkpoint store. See the [module docs](self) for the
/// layout and the durability contract.
///
/// Call order: [`Store::open`]; [`CheckpointStore::latest`] and
/// [`Store::replay_from`] to recover; then [`Store::append`] per sample,
/// [`Store::commit`] per group commit, and every checkpoint interval
/// [`CheckpointStore::put`] + [`CheckpointStore::sync`].
pub struct Store {
    io: Arc<backend::IoCounters>,
    /// Device bytes written over the store's life before this open.
    lifetime_base: u64,
    db: Arc<redb::Database>,
    path: PathBuf,
    config: StoreConfig,
    dict: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// The dictionary id of the last key appended (`u32::MAX`: none): a
    /// pack's readings share their key, and the dictionary only grows.
    last_key: (String, u32),
    persisted_keys: usize,
    staged: journal::Staged,
    next_lsn: Lsn,
    committed_lsn: Lsn,
    truncated: Lsn,
    /// The newest durable checkpoint's position.
    checkpoint_lsn: Option<Lsn>,
    /// Its snapshot, read from the file when [`CheckpointStore::latest`]
    /// asks for it (at open, for the restore): not held in memory between
    /// checkpoints, where it would cost its size (the dedupe ring and the
    /// engine's state: ~450 KB at 1,000 keys) for nothing.
    checkpoint: std::cell::OnceCell<Option<(Lsn, Vec<u8>)>>,
    /// A staged checkpoint: its position and its record as it will be
    /// written ([`frame_checkpoint`]: header, then the snapshot).
    pending: Option<(Lsn, Vec<u8>)>,
    compacted_len: u64,
    stats: StoreStats,
    dead_staged: std::collections::VecDeque<Vec<u8>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("mode", &self.config.mode)
            .field("next_lsn", &self.next_lsn)
            .field("committed_lsn", &self.committed_lsn)
            .field("truncated", &self.truncated)
            .field("checkpoint", &self.checkpoint_lsn)
            .finish_non_exhaustive()
    }
}

fn write_truncated(txn: &redb::WriteTransaction, path: &Path, lsn: Lsn) -> Result<(), StoreError> {
    let mut meta = txn
        .open_table(META)
        .map_err(StoreError::db(path, "open meta table"))?;
    meta.insert(TRUNCATED_KEY, &lsn.to_le_bytes()[..])
        .map_err(StoreError::db(path, "write truncation point"))?;
    Ok(())
}

/// Fills in the header of a record made by [`Store::checkpoint_buffer`]:
/// version, `upto`, then the CRC of the rest.
fn frame_checkpoint(upto: Lsn, v: &mut [u8]) {
    v[0] = CHECKPOINT_VERSION;
    v[1..9].copy_from_slice(&upto.to_le_bytes());
    let crc = checkpoint_crc(v);
    v[9..13].copy_from_slice(&crc.to_le_bytes());
}

fn checkpoint_crc(v: &[u8]) -> u32 {
    // Over everything but the CRC field itself (without copying the
    // snapshot: it is the size of the agent's state).
    codec::crc32_resume(crc32(&v[..9]), &v[CHECKPOINT_HEADER..])
}

fn decode_checkpoint(path: &Path, v: &[u8]) -> Result<(Lsn, Vec<u8>), StoreError> {
    let bad = |what| StoreError::CorruptCheckpoint {
        path: path.to_path_buf(),
        what,
    };
    if v.len() < CHECKPOINT_HEADER {
        return Err(bad("shorter than its header"));
    }
    if v[0] != CHECKPOINT_VERSION {
        return Err(bad("unknown format version"));
    }
    let stored = u32::from_le_bytes(v[9..13].try_into().expect("4 bytes"));
    if stored != checkpoint_crc(v) {
        return Err(bad("checksum mismatch"));
    }
    let upto = u64::from_le_bytes(v[1..9].try_into().expect("8 bytes"));
    Ok((upto, v[CHECKPOINT_HEADER..].to_vec()))
}

/// Narrows a store created 0644 by an older weir to 0600 (best effort: a
/// file owned by someone else stays as it is).
fn restrict_mode(file: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = file.metadata() {
        if m.permissions().mode() & 0o077 != 0 {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// A checkpoint record on its way to the store: room for the header
/// ([`CHECKPOINT_HEADER`] bytes, filled in by [`Store::put_record`]), then
/// the snapshot. Made only by [`Store::checkpoint_buffer`], so a snapshot
/// without that room cannot be passed for one.
#[derive(Debug)]
pub struct CheckpointRecord(Vec<u8>);

impl CheckpointRecord {
    /// The buffer to append the snapshot to (it holds the header's room
    /// first: append only).
    pub fn snapshot_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The snapshot appended so far.
    pub fn snapshot(&self) -> &[u8] {
        &self.0[CHECKPOINT_HEADER..]
    }
}

impl Store {
    /// Opens the store at `path`, creating the file and its tables if
    /// needed, and loads the key dictionary, the latest checkpoint and the
    /// journal's end. After an unclean shutdown redb repairs the file first.
    ///
    /// # Errors
    /// [`StoreError::Db`] (cannot create or open, not a redb file, locked by
    /// another process), [`StoreError::CorruptCheckpoint`],
    /// [`StoreError::Corrupt`] if the last journal chunk is damaged.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, StoreError> {
        let path = path.as_ref();
        let io_err = |op| StoreError::db(path, op);
        if !path.exists() {
            Store::create(path, &config)?;
        }
        // Created 0600 (it holds every reading), and the new name is made
        // durable in its directory before anything is written to it.
        let (file, _created) =
            crate::fsutil::open_or_create(path, 0o600).map_err(io_err("create database file"))?;
        restrict_mode(&file);
        let backend = redb::backends::FileBackend::new(file)
            .map_err(StoreError::db(path, "open database"))?;
        Store::open_backend(backend, path, config)
    }

    /// Makes a new, empty store at `path` as a whole: initialised (redb's
    /// header and weir's tables, committed durably) under a temporary name
    /// beside it, then renamed into place and the rename made durable. A
    /// crash or power cut while a gateway creates its store therefore
    /// leaves either no store or a complete one, never a file without a
    /// valid header that no later start could open; a temporary file left
    /// by such a crash is replaced by the next attempt.
    fn create(path: &Path, config: &StoreConfig) -> Result<(), StoreError> {
        let io_err = |op| StoreError::db(path, op);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = crate::fsutil::parent_of(path).join(format!(".{name}.new"));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove an unfinished new database file")(e)),
        }
        let (file, _) =
            crate::fsutil::open_or_create(&tmp, 0o600).map_err(io_err("create database file"))?;
        restrict_mode(&file);
        let backend = redb::backends::FileBackend::new(file)
            .map_err(StoreError::db(path, "open database"))?;
        drop(Store::open_backend(backend, &tmp, config.clone())?);
        crate::fsutil::rename_durable(&tmp, path).map_err(io_err("rename the new database file"))
    }

    /// Opens the store on any redb [`StorageBackend`](redb::StorageBackend)
    /// (tests: [`backend::SimDisk`]); `path` names it in errors. Writes are
    /// counted ([`Store::io`]).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_backend(
        backend: impl redb::StorageBackend,
        path: impl AsRef<Path>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = &path;
        let io = Arc::new(backend::IoCounters::default());
        let db = redb::Builder::new()
            .set_cache_size(config.cache_bytes)
            .create_with_backend(backend::CountingBackend::new(backend, io.clone()))
            .map_err(StoreError::db(p, "open database"))?;
        {
            // Creates the tables of a new file (a no-op commit otherwise).
            let txn = db
                .begin_write()
                .map_err(StoreError::db(p, "begin opening transaction"))?;
            txn.open_table(JOURNAL)
                .map_err(StoreError::db(p, "create journal table"))?;
            txn.open_table(KEYS)
                .map_err(StoreError::db(p, "create key table"))?;
            txn.open_table(META)
                .map_err(StoreError::db(p, "create meta table"))?;
            txn.commit()
                .map_err(StoreError::db(p, "commit opening transaction"))?;
        }
        let txn = db.begin_read().map_err(StoreError::db(p, "begin read"))?;
        let keys = txn
            .open_table(KEYS)
            .map_err(StoreError::db(p, "open key table"))?;
        let mut names: Vec<Box<str>> = Vec::new();
        for e in keys.iter().map_err(StoreError::db(p, "read keys"))? {
            let (id, k) = e.map_err(StoreError::db(p, "read keys"))?;
            if id.value() as usize != names.len() {
                return Err(StoreError::CorruptMeta {
                    path: path.clone(),
                    what: "key dictionary ids are not dense",
                });
            }
            // Stored as bytes: redb would panic on a damaged `&str`.
            let name = std::str::from_utf8(k.value()).map_err(|_| StoreError::CorruptMeta {
                path: path.clone(),
                what: "a key in the dictionary is not UTF-8",
            })?;
            names.push(name.into());
        }
        let dict = names
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        let meta = txn
            .open_table(META)
            .map_err(StoreError::db(p, "open meta table"))?;
        let checkpoint = match meta
            .get(CHECKPOINT_KEY)
            .map_err(StoreError::db(p, "read checkpoint"))?
        {
            Some(v) => Some(decode_checkpoint(p, v.value())?),
            None => None,
        };
        let truncated = match meta
            .get(TRUNCATED_KEY)
            .map_err(StoreError::db(p, "read truncation point"))?
        {
            Some(v) => {
                u64::from_le_bytes(v.value().try_into().map_err(|_| StoreError::CorruptMeta {
                    path: path.clone(),
                    what: "truncation point is not 8 bytes",
                })?)
            }
            None => 0,
        };
        let lifetime_base = match meta
            .get(LIFETIME_KEY)
            .map_err(StoreError::db(p, "read the lifetime byte count"))?
        {
            Some(v) => {
                u64::from_le_bytes(v.value().try_into().map_err(|_| StoreError::CorruptMeta {
                    path: path.clone(),
                    what: "the lifetime byte count is not 8 bytes",
                })?)
            }
            None => 0,
        };
        // LSNs count samples: anything near u64::MAX is damage, not history.
        const MAX_LSN: u64 = 1 << 62;
        if truncated > MAX_LSN {
            return Err(StoreError::CorruptMeta {
                path: path.clone(),
                what: "truncation point out of range",
            });
        }
        let journal = txn
            .open_table(JOURNAL)
            .map_err(StoreError::db(p, "open journal table"))?;
        let last = match journal
            .last()
            .map_err(StoreError::db(p, "read journal end"))?
        {
            Some((k, v)) => {
                let n = codec::batch_count(v.value()).map_err(|source| StoreError::Corrupt {
                    path: path.clone(),
                    lsn: k.value(),
                    source,
                })?;
                match k.value().checked_add(n as u64 - 1) {
                    Some(last) if last <= MAX_LSN => last,
                    _ => {
                        return Err(StoreError::Corrupt {
                            path: path.clone(),
                            lsn: k.value(),
                            source: codec::CodecError::Empty,
                        })
                    }
                }
            }
            None => 0,
        };
        drop((keys, meta, journal, txn));
        let committed = last
            .max(truncated)
            .max(checkpoint.as_ref().map_or(0, |c| c.0));
        let compacted_len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok(Store {
            io,
            lifetime_base,
            db: Arc::new(db),
            path,
            config,
            dict,
            last_key: (String::new(), u32::MAX),
            persisted_keys: names.len(),
            names,
            staged: journal::Staged::default(),
            next_lsn: committed + 1,
            committed_lsn: committed,
            truncated,
            checkpoint_lsn: checkpoint.as_ref().map(|c| c.0),
            checkpoint: std::cell::OnceCell::from(checkpoint),
            pending: None,
            compacted_len,
            stats: StoreStats::default(),
            dead_staged: Default::default(),
        })
    }

    /// The newest durable checkpoint, read from the file (checked as at
    /// open).
    fn read_checkpoint(&self) -> Result<Option<(Lsn, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_read()
            .map_err(StoreError::db(p, "begin reading the checkpoint"))?;
        let meta = txn
            .open_table(META)
            .map_err(StoreError::db(p, "open meta table"))?;
        let v = meta
            .get(CHECKPOINT_KEY)
            .map_err(StoreError::db(p, "read checkpoint"))?;
        v.map(|v| decode_checkpoint(p, v.value())).transpose()
    }

    /// What the store wrote to the device since it was opened (bytes,
    /// writes, fsyncs, errors), shared: the counters keep counting.
    pub fn io(&self) -> &Arc<backend::IoCounters> {
        &self.io
    }

    /// Device bytes this store has written over its life: the count
    /// stored with the last checkpoint before this open, plus
    /// [`Store::io`] since (see the module docs, "Flash wear").
    pub fn lifetime_bytes_written(&self) -> u64 {
        self.lifetime_base.saturating_add(
            self.io
                .bytes_written
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb database, to share with components that keep their own
    /// tables in the same file (the cloud outbox). While a clone is alive,
    /// compaction is skipped (see the module docs).
    pub fn database(&self) -> &Arc<redb::Database> {
        &self.db
    }

    /// The durability mode.
    pub fn mode(&self) -> DurabilityMode {
        self.config.mode
    }

    /// The LSN the next [`Store::append`] will give.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The last LSN made durable by [`Store::commit`] (in checkpoint mode:
    /// the last position passed through `commit`).
    pub fn committed_lsn(&self) -> Lsn {
        self.committed_lsn
    }

    /// Every LSN at or before this may have been removed from the journal.
    pub fn truncated_through(&self) -> Lsn {
        self.truncated
    }

    /// Keys in the dictionary.
    pub fn dict_len(&self) -> usize {
        self.names.len()
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// An empty checkpoint record with room for `snapshot_len` bytes of
    /// snapshot: append the snapshot to [`CheckpointRecord::snapshot_mut`],
    /// then hand the record to [`Store::put_record`]. The snapshot is then
    /// never copied on its way to the store.
    pub fn checkpoint_buffer(snapshot_len: usize) -> CheckpointRecord {
        let mut v = Vec::with_capacity(CHECKPOINT_HEADER + snapshot_len);
        v.resize(CHECKPOINT_HEADER, 0);
        CheckpointRecord(v)
    }

    /// [`CheckpointStore::put`] of a record made by
    /// [`Store::checkpoint_buffer`] (taken, not copied).
    ///
    /// # Errors
    /// As `put`: [`StoreError::CheckpointAhead`] if `upto` is past the last
    /// LSN given by [`Store::append`] (in journal mode, the last committed
    /// one); [`StoreError::CheckpointBehind`] if it is before the
    /// journal's truncation point.
    pub fn put_record(&mut self, upto: Lsn, record: CheckpointRecord) -> Result<(), StoreError> {
        let mut record = record.0;
        // In journal mode a checkpoint may only cover committed records: one
        // covering staged records would outlive them in a crash, and their
        // redelivered messages would then be counted twice.
        let last = match self.config.mode {
            DurabilityMode::Journal => self.committed_lsn,
            DurabilityMode::Checkpoint => self.next_lsn - 1,
        };
        if upto > last {
            return Err(StoreError::CheckpointAhead { upto, last });
        }
        if upto < self.truncated {
            return Err(StoreError::CheckpointBehind {
                upto,
                truncated: self.truncated,
            });
        }
        frame_checkpoint(upto, &mut record);
        self.pending = Some((upto, record));
        Ok(())
    }

    /// The file's size, in bytes.
    ///
    /// # Errors
    /// The file cannot be stat'ed.
    pub fn file_len(&self) -> Result<u64, StoreError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| StoreError::Db {
                path: self.path.clone(),
                op: "stat database file",
                source: Box::new(redb::Error::Io(e)),
            })
    }

    /// Compacts the file if it is larger than
    /// [`StoreConfig::compact_above_bytes`] and at least 1.5× its size after
    /// the last compaction (so a journal that stays large is not rewritten
    /// every time). Returns whether it compacted. [`CheckpointStore::sync`]
    /// calls it after truncating; compaction rewrites live pages, so it
    /// costs flash writes and time proportional to the live data.
    ///
    /// # Errors
    /// [`StoreError::Db`]; the file is as before or partly compacted, and
    /// sound either way.
    pub fn maybe_compact(&mut self) -> Result<bool, StoreError> {
        let len = self.file_len()?;
        if len <= self.config.compact_above_bytes
            || len.saturating_mul(2) < self.compacted_len.saturating_mul(3)
        {
            return Ok(false);
        }
        self.compact()
    }

    /// Compacts the file now. Returns `false`, and does nothing, while the
    /// database is shared ([`Store::database`]): redb compacts only through
    /// `&mut Database`.
    ///
    /// # Errors
    /// [`StoreError::Db`], as [`Store::maybe_compact`].
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        let Some(db) = Arc::get_mut(&mut self.db) else {
            self.stats.compactions_skipped += 1;
            tracing::info!(
                file = %self.path.display(),
                "compaction skipped: the database is shared (cloud outbox); the file stays larger"
            );
            return Ok(false);
        };
        // Each call moves what it can; a few rounds reach the fixed point.
        for _ in 0..8 {
            if !db
                .compact()
                .map_err(StoreError::db(&self.path, "compact"))?
            {
                break;
            }
        }
        self.stats.compactions += 1;
        self.compacted_len = self.file_len()?;
        Ok(true)
    }

    /// [`CheckpointStore::sync`] with `hook` run inside the checkpoint's
    /// write transaction (before its commit): what the hook writes is
    /// durable exactly when the checkpoint is. Returns whether a checkpoint
    /// was written; without a staged checkpoint nothing is written and the
    /// hook is not called.
    ///
    /// # Errors
    /// As `sync`; [`StoreError::Hook`] when the hook fails (the transaction
    /// is aborted and the checkpoint stays staged).
    pub fn sync_with(
        &mut self,
        hook: impl FnOnce(&redb::WriteTransaction) -> Result<(), HookError>,
    ) -> Result<bool, StoreError> {
        let Some((upto, record)) = self.pending.take() else {
            return Ok(false);
        };
        let path = &self.path;
        let result = (|| {
            let txn = self
                .db
                .begin_write()
                .map_err(StoreError::db(path, "begin checkpoint"))?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(StoreError::db(path, "open meta table"))?;
                meta.insert(CHECKPOINT_KEY, &record[..])
                    .map_err(StoreError::db(path, "write checkpoint"))?;
            }
            let removed = Self::truncate_in(&txn, path, upto, self.committed_lsn)?;
            Self::write_dead_letters(&txn, path, self.config.dead_letters_keep, &self.dead_staged)?;
            if upto > self.truncated {
                write_truncated(&txn, path, upto)?;
            }
            {
                // As of the start of this transaction: its own pages count
                // with the next checkpoint.
                let lifetime = self.lifetime_bytes_written();
                let mut meta = txn
                    .open_table(META)
                    .map_err(StoreError::db(path, "open meta table"))?;
                meta.insert(LIFETIME_KEY, &lifetime.to_le_bytes()[..])
                    .map_err(StoreError::db(path, "write the lifetime byte count"))?;
            }
            hook(&txn).map_err(|source| StoreError::Hook {
                path: path.clone(),
                op: "checkpoint hook",
                source,
            })?;
            txn.commit()
                .map_err(StoreError::db(path, "commit checkpoint"))?;
            Ok::<_, StoreError>(removed)
        })();
        let removed = match result {
            Ok(r) => r,
            Err(e) => {
                self.pending = Some((upto, record));
                return Err(e);
            }
        };
        self.dead_staged.clear();
        self.stats.checkpoints += 1;
        self.stats.chunks_truncated += removed;
        self.truncated = self.truncated.max(upto);
        self.checkpoint_lsn = Some(upto);
        // Read back from the file if `latest` asks (a rollback's restore).
        self.checkpoint = std::cell::OnceCell::new();
        drop(record);
        // The checkpoint is durable: a failed compaction leaves a sound,
        // larger file, and must not read as "nothing new is durable".
        if self.maybe_compact().is_err() {
            self.stats.compaction_failures += 1;
        }
        Ok(true)
    }
}

impl CheckpointStore for Store {
    type Error = StoreError;

    /// Stages a checkpoint in memory; [`CheckpointStore::latest`] sees it
    /// at once, a crash before `sync` loses it.
    ///
    /// # Errors
    /// [`StoreError::CheckpointAhead`] if `upto` is past the last LSN given
    /// by [`Store::append`]; [`StoreError::CheckpointBehind`] if it is before
    /// the journal's truncation point.
    fn put(&mut self, upto: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        let mut record = Self::checkpoint_buffer(snapshot.len());
        record.snapshot_mut().extend_from_slice(snapshot);
        self.put_record(upto, record)
    }

    /// Writes the staged checkpoint and truncates the journal through its
    /// `upto`, in one durable transaction; then compacts if the file is
    /// past its bound ([`Store::maybe_compact`]). Staged journal records
    /// stay staged.
    ///
    /// # Errors
    /// [`StoreError::Db`]: the previous checkpoint stands (the new one stays
    /// staged and visible to `latest`). A failed compaction after the
    /// checkpoint is durable is not an error: it is counted in
    /// `StoreStats::compaction_failures` and the file stays larger.
    fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_with(|_| Ok(())).map(|_| ())
    }

    fn latest(&self) -> Result<Option<(u64, &[u8])>, StoreError> {
        if let Some((upto, record)) = &self.pending {
            return Ok(Some((*upto, &record[CHECKPOINT_HEADER..])));
        }
        if self.checkpoint.get().is_none() {
            let read = self.read_checkpoint()?;
            let _ = self.checkpoint.set(read);
        }
        Ok(self
            .checkpoint
            .get()
            .and_then(Option::as_ref)
            .map(|(u, s)| (*u, s.as_slice())))
    }
}
