//! The dead-letter table: the newest bad messages, for `weir deadletters`.
//!
//! Records are staged in memory and written with the next journal commit
//! (or checkpoint), so bad input costs no extra flash commits. The table is
//! a ring: `deadletters` maps a sequence number to one record, and the
//! oldest records beyond [`super::StoreConfig::dead_letters_keep`] are
//! removed in the same transaction.
//!
//! A record is `[1u8][now: i64 LE][topic: u16 LE len + bytes][reason: u8
//! len + bytes][detail: u16 LE len + bytes][payload: u16 LE len + bytes]`,
//! the payload cut to its first [`PAYLOAD_KEPT`] bytes.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};

/// Sequence number → record.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("deadletters");

/// Payload bytes kept per dead letter.
pub const PAYLOAD_KEPT: usize = 256;

const VERSION: u8 = 1;

/// One bad message (or record of a message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The agent clock when it arrived, ms since the epoch.
    pub now: i64,
    /// The MQTT topic.
    pub topic: String,
    /// A stable reason (`malformed`, `non_finite`, `unknown_topic`, …).
    pub reason: String,
    /// What exactly was wrong.
    pub detail: String,
    /// The first bytes of the payload.
    pub payload: Vec<u8>,
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl DeadLetter {
    /// Encodes it (long fields cut).
    pub fn encode(&self) -> Vec<u8> {
        let topic = cut(&self.topic, 1024);
        let reason = cut(&self.reason, 64);
        let detail = cut(&self.detail, 1024);
        let payload = &self.payload[..self.payload.len().min(PAYLOAD_KEPT)];
        let mut v = Vec::with_capacity(16 + topic.len() + detail.len() + payload.len());
        v.push(VERSION);
        v.extend_from_slice(&self.now.to_le_bytes());
        v.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        v.extend_from_slice(topic.as_bytes());
        v.push(reason.len() as u8);
        v.extend_from_slice(reason.as_bytes());
        v.extend_from_slice(&(detail.len() as u16).to_le_bytes());
        v.extend_from_slice(detail.as_bytes());
        v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Decodes a record; `None` if it is damaged.
    pub fn decode(b: &[u8]) -> Option<DeadLetter> {
        let mut r = b;
        let mut take = |n: usize| -> Option<&[u8]> {
            if r.len() < n {
                return None;
            }
            let (h, t) = r.split_at(n);
            r = t;
            Some(h)
        };
        if take(1)? != [VERSION] {
            return None;
        }
        let now = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let n = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let topic = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = take(1)?[0] as usize;
        let reason = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let detail = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let payload = take(n)?.to_vec();
        Some(DeadLetter {
            now,
            topic,
            reason,
            detail,
            payload,
        })
    }
}

impl Store {
    /// Stages a dead letter for the next commit or checkpoint. Beyond
    /// [`super::StoreConfig::dead_letters_keep`] staged records, the oldest
    /// staged one is dropped (a storm of bad input cannot grow memory).
    pub fn stage_dead_letter(&mut self, d: &DeadLetter) {
        if self.config.dead_letters_keep == 0 {
            return;
        }
        if self.dead_staged.len() >= self.config.dead_letters_keep {
            self.dead_staged.pop_front();
        }
        self.dead_staged.push_back(d.encode());
        self.stats.dead_letters += 1;
    }

    /// Writes staged dead letters in `txn` and trims the ring to `keep`;
    /// the caller clears `staged` once `txn` commits.
    pub(super) fn write_dead_letters(
        txn: &redb::WriteTransaction,
        path: &std::path::Path,
        keep: usize,
        staged: &std::collections::VecDeque<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if staged.is_empty() {
            return Ok(());
        }
        let mut t = txn
            .open_table(DEAD_LETTERS)
            .map_err(StoreError::db(path, "open dead-letter table"))?;
        let mut next = t
            .last()
            .map_err(StoreError::db(path, "read dead letters"))?
            .map_or(0, |(k, _)| k.value() + 1);
        for rec in staged {
            t.insert(next, &rec[..])
                .map_err(StoreError::db(path, "write dead letter"))?;
            next += 1;
        }
        let keep = keep as u64;
        if next > keep {
            let horizon = next - keep;
            t.retain_in(..horizon, |_, _| false)
                .map_err(StoreError::db(path, "trim dead letters"))?;
        }
        Ok(())
    }

    /// The dead letters on disk, oldest first, with their sequence numbers
    /// (staged ones are not included). Damaged records are skipped.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn dead_letters(&self) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let path = &self.path;
        let txn = self
            .db
            .begin_read()
            .map_err(StoreError::db(path, "begin read"))?;
        let t = match txn.open_table(DEAD_LETTERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::db(path, "open dead-letter table")(e)),
        };
        let mut out = Vec::new();
        for e in t
            .iter()
            .map_err(StoreError::db(path, "read dead letters"))?
        {
            let (k, v) = e.map_err(StoreError::db(path, "read dead letters"))?;
            if let Some(d) = DeadLetter::decode(v.value()) {
                out.push((k.value(), d));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let d = DeadLetter {
            now: 1_700_000_000_000,
            topic: "plant/p1/vib".into(),
            reason: "malformed".into(),
            detail: "not valid JSON: expected value at line 1 column 1".into(),
            payload: vec![b'x'; 1000],
        };
        let b = d.encode();
        let back = DeadLetter::decode(&b).unwrap();
        assert_eq!(back.payload.len(), PAYLOAD_KEPT);
        assert_eq!(
            (back.now, &back.topic[..], &back.reason[..]),
            (d.now, &d.topic[..], "malformed")
        );
        for i in 0..b.len() {
            assert!(DeadLetter::decode(&b[..i]).is_none());
        }
    }
}
