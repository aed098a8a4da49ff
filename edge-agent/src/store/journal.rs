//! The ingest journal: staging, group commit, replay and truncation.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};

use super::codec::{BatchDecoder, BatchEncoder, CodecError, KeyRef, Sample};
use super::{DurabilityMode, Lsn, Store, StoreError, JOURNAL, KEYS};

/// Where the staged chunks of the open group commit live: one arena, so a
/// batch costs no allocation once warm.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Sealed chunks: first LSN, byte range in `bytes`.
    pub chunks: Vec<(Lsn, usize, usize)>,
    /// Concatenated sealed chunk values.
    pub bytes: Vec<u8>,
    /// The chunk being filled.
    pub enc: BatchEncoder,
    /// First LSN of the chunk being filled.
    pub open_first: Lsn,
}

impl Store {
    /// Stages one sample for the next [`Store::commit`] and returns the
    /// position (LSN) it was given. LSNs start at 1 and have no gaps.
    ///
    /// Nothing is durable until `commit` returns. In
    /// [`DurabilityMode::Checkpoint`] the sample is only counted: it gets a
    /// position and is never written.
    ///
    /// # Errors
    /// [`StoreError::Sample`] if the sample breaks the format's limits (key
    /// over 1 KiB, more than 255 values); nothing is staged then.
    pub fn append(&mut self, sample: &Sample<'_>) -> Result<Lsn, StoreError> {
        self.append_part(sample, false)
    }

    /// Whether `sample` is within the format's limits ([`Store::append`]
    /// refuses it otherwise).
    pub fn fits(sample: &Sample<'_>) -> bool {
        BatchEncoder::check(sample).is_ok()
    }

    /// As [`Store::append`]; `cont` marks a sample that continues the
    /// message of the sample appended before it (the readings of one MQTT
    /// message), which [`Replay::next_part`] tells again.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_part(&mut self, sample: &Sample<'_>, cont: bool) -> Result<Lsn, StoreError> {
        BatchEncoder::check(sample).map_err(StoreError::Sample)?;
        let lsn = self.next_lsn;
        if self.config.mode == DurabilityMode::Checkpoint {
            self.next_lsn += 1;
            return Ok(lsn);
        }
        if self.staged.enc.len() >= self.config.max_chunk_bytes {
            self.seal_chunk();
        }
        if self.staged.enc.is_empty() {
            self.staged.open_first = lsn;
        }
        let key = if self.last_key.1 != u32::MAX && self.last_key.0 == sample.key {
            KeyRef::Id(self.last_key.1)
        } else {
            let id = match self.dict.get(sample.key) {
                Some(&id) => Some(id),
                None if (self.names.len() as u64) < self.config.max_dict_keys as u64 => {
                    let id = self.names.len() as u32;
                    self.names.push(sample.key.into());
                    self.dict.insert(sample.key.into(), id);
                    Some(id)
                }
                None => None,
            };
            match id {
                Some(id) => {
                    self.last_key.0.clear();
                    self.last_key.0.push_str(sample.key);
                    self.last_key.1 = id;
                    KeyRef::Id(id)
                }
                None => KeyRef::Inline(sample.key),
            }
        };
        self.staged.enc.push_part(key, sample, cont);
        self.next_lsn += 1;
        Ok(lsn)
    }

    fn seal_chunk(&mut self) {
        let st = &mut self.staged;
        let first = st.open_first;
        let bytes = &mut st.bytes;
        let chunks = &mut st.chunks;
        st.enc.finish(|b| {
            let start = bytes.len();
            bytes.extend_from_slice(b);
            chunks.push((first, start, bytes.len()));
        });
    }

    /// Records staged and not yet committed.
    pub fn staged_records(&self) -> u64 {
        self.next_lsn - 1 - self.committed_lsn
    }

    /// Encoded bytes staged and not yet committed (for a batch-size bound).
    pub fn staged_bytes(&self) -> usize {
        self.staged.bytes.len() + self.staged.enc.len()
    }

    /// Makes every staged sample durable in one redb transaction (one
    /// `fsync`: the group commit) and returns the last LSN it holds: every
    /// sample up to it survives a crash or power loss, so the MQTT messages
    /// that carried them may be acknowledged. With nothing staged, returns
    /// the last committed LSN and writes nothing.
    ///
    /// In [`DurabilityMode::Checkpoint`] nothing is written and the last
    /// assigned position is returned: it is **not** durable (only a
    /// checkpoint covering it is).
    ///
    /// # Errors
    /// [`StoreError::Db`]: the transaction failed and nothing staged is
    /// durable; the staged samples stay staged, but after an I/O error the
    /// store should be dropped and opened again (redb refuses further
    /// writes), and the unacknowledged messages redelivered.
    pub fn commit(&mut self) -> Result<Lsn, StoreError> {
        self.commit_inner(None)
    }

    /// [`Store::commit`] with `hook` run inside the commit's write
    /// transaction: what it writes is durable together with the journal
    /// records, or not at all. The transaction is written even when no
    /// sample is staged (the hook's writes alone), and in
    /// [`DurabilityMode::Checkpoint`] too (then it holds only the hook's
    /// writes and the dead letters).
    ///
    /// # Errors
    /// As `commit`; [`StoreError::Hook`] when the hook fails (the
    /// transaction is aborted, the samples stay staged).
    pub fn commit_with(
        &mut self,
        hook: impl FnOnce(&redb::WriteTransaction) -> Result<(), super::HookError>,
    ) -> Result<Lsn, StoreError> {
        let mut hook = Some(hook);
        let mut f = |txn: &redb::WriteTransaction| match hook.take() {
            Some(h) => h(txn),
            None => Ok(()),
        };
        self.commit_inner(Some(&mut f))
    }

    #[allow(clippy::type_complexity)]
    fn commit_inner(
        &mut self,
        mut hook: Option<&mut dyn FnMut(&redb::WriteTransaction) -> Result<(), super::HookError>>,
    ) -> Result<Lsn, StoreError> {
        let journal_mode = self.config.mode == DurabilityMode::Journal;
        if !journal_mode && hook.is_none() {
            self.committed_lsn = self.next_lsn - 1;
            return Ok(self.committed_lsn);
        }
        if journal_mode {
            self.seal_chunk();
        }
        let new_keys = if journal_mode {
            self.persisted_keys..self.names.len()
        } else {
            self.persisted_keys..self.persisted_keys
        };
        if self.staged.chunks.is_empty()
            && new_keys.is_empty()
            && self.dead_staged.is_empty()
            && hook.is_none()
        {
            return Ok(self.committed_lsn);
        }
        let path = &self.path;
        let txn = self
            .db
            .begin_write()
            .map_err(StoreError::db(path, "begin journal commit"))?;
        {
            let mut journal = txn
                .open_table(JOURNAL)
                .map_err(StoreError::db(path, "open journal table"))?;
            for &(first, s, e) in &self.staged.chunks {
                journal
                    .insert(first, &self.staged.bytes[s..e])
                    .map_err(StoreError::db(path, "insert journal batch"))?;
            }
        }
        if !new_keys.is_empty() {
            let mut keys = txn
                .open_table(KEYS)
                .map_err(StoreError::db(path, "open key table"))?;
            for id in new_keys.clone() {
                keys.insert(id as u32, self.names[id].as_bytes())
                    .map_err(StoreError::db(path, "insert key"))?;
            }
        }
        Self::write_dead_letters(&txn, path, self.config.dead_letters_keep, &self.dead_staged)?;
        if let Some(h) = hook.as_mut() {
            h(&txn).map_err(|source| StoreError::Hook {
                path: path.clone(),
                op: "journal commit hook",
                source,
            })?;
        }
        txn.commit()
            .map_err(StoreError::db(path, "commit journal batch"))?;
        self.dead_staged.clear();
        self.stats.commits += 1;
        self.stats.chunks += self.staged.chunks.len() as u64;
        self.stats.journal_bytes += self.staged.bytes.len() as u64;
        self.staged.chunks.clear();
        self.staged.bytes.clear();
        self.persisted_keys = new_keys.end;
        self.committed_lsn = self.next_lsn - 1;
        Ok(self.committed_lsn)
    }

    /// Reads the journal after position `after` (usually the latest
    /// checkpoint's `upto`), in LSN order, as committed.
    ///
    /// ```no_run
    /// # fn f(store: &weir_agent::store::Store) -> Result<(), weir_agent::store::StoreError> {
    /// let mut replay = store.replay_from(0)?;
    /// while let Some((lsn, sample)) = replay.next_record()? {
    ///     println!("{lsn} {} {} {:?}", sample.key, sample.ts, sample.values);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StoreError::TruncatedAway`] if records after `after` were truncated;
    /// database errors. Damaged batches are reported by
    /// [`Replay::next_record`].
    pub fn replay_from(&self, after: Lsn) -> Result<Replay<'_>, StoreError> {
        let path = &self.path;
        if after < self.truncated {
            return Err(StoreError::TruncatedAway {
                path: path.clone(),
                after,
                truncated: self.truncated,
            });
        }
        let txn = self
            .db
            .begin_read()
            .map_err(StoreError::db(path, "begin replay"))?;
        let table = txn
            .open_table(JOURNAL)
            .map_err(StoreError::db(path, "open journal table"))?;
        // The chunk holding `after + 1` starts at or before it.
        let start = table
            .range(..=after.saturating_add(1))
            .map_err(StoreError::db(path, "seek journal"))?
            .next_back()
            .transpose()
            .map_err(StoreError::db(path, "seek journal"))?
            .map_or(0, |(k, _)| k.value());
        let range = table
            .range(start..)
            .map_err(StoreError::db(path, "read journal"))?;
        Ok(Replay {
            store: self,
            range,
            _table: table,
            _txn: txn,
            expected: after.saturating_add(1),
            skip_to: after.saturating_add(1),
            buf: Vec::new(),
            recs: Vec::new(),
            vals: Vec::new(),
            next: 0,
            first: 0,
            started: false,
        })
    }

    /// Removes journal batches whose every record is at or before `lsn`
    /// (a batch that straddles `lsn` stays; replay skips its head). Durable
    /// when it returns. [`CheckpointStore::sync`](weir_core::seam::CheckpointStore::sync)
    /// does this itself, in the checkpoint's transaction.
    ///
    /// # Errors
    /// [`StoreError::Db`]; nothing was removed.
    pub fn truncate_through(&mut self, lsn: Lsn) -> Result<(), StoreError> {
        if lsn > self.committed_lsn {
            // Past the durable end: LSNs would no longer be contiguous.
            return Err(StoreError::CheckpointAhead {
                upto: lsn,
                last: self.committed_lsn,
            });
        }
        let path = &self.path;
        let txn = self
            .db
            .begin_write()
            .map_err(StoreError::db(path, "begin truncation"))?;
        let removed = Self::truncate_in(&txn, path, lsn, self.committed_lsn)?;
        if lsn > self.truncated {
            super::write_truncated(&txn, path, lsn)?;
        }
        txn.commit()
            .map_err(StoreError::db(path, "commit truncation"))?;
        self.stats.chunks_truncated += removed;
        self.truncated = self.truncated.max(lsn);
        Ok(())
    }

    /// Removes, in `txn`, the chunks that end at or before `lsn`; returns
    /// how many.
    pub(super) fn truncate_in(
        txn: &redb::WriteTransaction,
        path: &Path,
        lsn: Lsn,
        committed: Lsn,
    ) -> Result<u64, StoreError> {
        let mut journal = txn
            .open_table(JOURNAL)
            .map_err(StoreError::db(path, "open journal table"))?;
        // A chunk ends where the next begins; the last one at `committed`.
        let mut keys = Vec::new();
        for e in journal
            .range(..=lsn.saturating_add(1))
            .map_err(StoreError::db(path, "scan journal"))?
        {
            keys.push(e.map_err(StoreError::db(path, "scan journal"))?.0.value());
        }
        let after = journal
            .range(lsn.saturating_add(2)..)
            .map_err(StoreError::db(path, "scan journal"))?
            .next()
            .transpose()
            .map_err(StoreError::db(path, "scan journal"))?
            .map(|(k, _)| k.value());
        let mut removed = 0;
        for (i, &k) in keys.iter().enumerate() {
            let end = match keys.get(i + 1).copied().or(after) {
                Some(next) => next - 1,
                None => committed,
            };
            if end <= lsn {
                journal
                    .remove(k)
                    .map_err(StoreError::db(path, "remove journal batch"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[derive(Clone, Copy, Debug)]
enum KeySlot {
    Dict(u32),
    Inline(usize, usize),
}

#[derive(Clone, Copy, Debug)]
struct Rec {
    source: u16,
    key: KeySlot,
    ts: i64,
    now: i64,
    vstart: usize,
    vlen: usize,
    cont: bool,
}

/// A replay of the journal, a batch at a time; from
/// [`Store::replay_from`]. It holds a redb read transaction: drop it before
/// writing much, or the pages it sees cannot be reused.
pub struct Replay<'s> {
    store: &'s Store,
    range: redb::Range<'static, u64, &'static [u8]>,
    _table: redb::ReadOnlyTable<u64, &'static [u8]>,
    _txn: redb::ReadTransaction,
    expected: Lsn,
    skip_to: Lsn,
    buf: Vec<u8>,
    recs: Vec<Rec>,
    vals: Vec<f64>,
    next: usize,
    first: Lsn,
    started: bool,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Replay<'_> {
    /// The next record after the starting point and its LSN; `None` at the
    /// end of the journal. A batch is checked whole (CRC, every field, every
    /// key id) before its first record is handed out.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a damaged batch, [`StoreError::Gap`] if
    /// LSNs are missing, [`StoreError::Db`]. The records handed out before
    /// the error are sound; the replay should not be continued.
    pub fn next_record(&mut self) -> Result<Option<(Lsn, Sample<'_>)>, StoreError> {
        Ok(self.next_part()?.map(|(lsn, s, _)| (lsn, s)))
    }

    /// As [`next_record`](Replay::next_record), with whether the record
    /// continues the message of the record before it
    /// ([`Store::append_part`]; always false in journals written before the
    /// format had the bit).
    ///
    /// # Errors
    /// As [`next_record`](Replay::next_record).
    pub fn next_part(&mut self) -> Result<Option<(Lsn, Sample<'_>, bool)>, StoreError> {
        Ok(self.next_keyed()?.map(|(lsn, s, cont, _)| (lsn, s, cont)))
    }

    /// As [`next_part`](Replay::next_part), with the id of the record's key
    /// in the store's key dictionary (`None` for a key stored inline): one
    /// id always names the same key, so a replay can keep per-key memos by
    /// it (the engine's `KeyHint`s) instead of looking names up.
    ///
    /// # Errors
    /// As [`next_record`](Replay::next_record).
    #[inline]
    #[allow(clippy::type_complexity)]
    pub fn next_keyed(
        &mut self,
    ) -> Result<Option<(Lsn, Sample<'_>, bool, Option<u32>)>, StoreError> {
        while self.next == self.recs.len() {
            if !self.load_next()? {
                return Ok(None);
            }
        }
        let r = self.recs[self.next];
        let lsn = self.first + self.next as u64;
        self.next += 1;
        let (key, id) = match r.key {
            KeySlot::Dict(id) => (&*self.store.names[id as usize], Some(id)),
            KeySlot::Inline(s, e) => {
                // Checked when the batch was decoded.
                (
                    std::str::from_utf8(&self.buf[s..e]).unwrap_or_default(),
                    None,
                )
            }
        };
        Ok(Some((
            lsn,
            Sample {
                source: r.source,
                key,
                ts: r.ts,
                now: r.now,
                values: &self.vals[r.vstart..r.vstart + r.vlen],
            },
            r.cont,
            id,
        )))
    }

    /// Loads the next chunk that has records at or after `skip_to`.
    fn load_next(&mut self) -> Result<bool, StoreError> {
        let path = &self.store.path;
        let Some(entry) = self.range.next() else {
            return Ok(false);
        };
        let (k, v) = entry.map_err(StoreError::db(path, "read journal"))?;
        let first = k.value();
        let corrupt = |source| StoreError::Corrupt {
            path: path.clone(),
            lsn: first,
            source,
        };
        self.buf.clear();
        self.buf.extend_from_slice(v.value());
        self.recs.clear();
        self.vals.clear();
        self.next = 0;
        self.first = first;
        let mut dec = BatchDecoder::new(&self.buf).map_err(corrupt)?;
        let count = dec.count() as u64;
        let misplaced = if self.started {
            first != self.expected
        } else {
            first > self.expected
        };
        if misplaced || first.checked_add(count).is_none() {
            return Err(StoreError::Gap {
                path: path.clone(),
                expected: self.expected,
                found: first,
            });
        }
        let mut vals = Vec::new();
        let base = self.buf.as_ptr() as usize;
        let mut index = 0u32;
        while let Some(r) = dec.next_record(&mut vals).map_err(corrupt)? {
            let key = match r.key {
                KeyRef::Id(id) => {
                    if id as usize >= self.store.names.len() {
                        return Err(corrupt(CodecError::UnknownKey { record: index, id }));
                    }
                    KeySlot::Dict(id)
                }
                KeyRef::Inline(s) => {
                    let start = s.as_ptr() as usize - base;
                    KeySlot::Inline(start, start + s.len())
                }
            };
            self.recs.push(Rec {
                source: r.source,
                key,
                ts: r.ts,
                now: r.now,
                vstart: self.vals.len(),
                vlen: vals.len(),
                cont: r.cont,
            });
            self.vals.extend_from_slice(&vals);
            index += 1;
        }
        self.expected = first + count;
        self.started = true;
        // Skip the head of a chunk that straddles the starting point.
        if first < self.skip_to {
            self.next = ((self.skip_to - first) as usize).min(self.recs.len());
        }
        Ok(true)
    }
}
