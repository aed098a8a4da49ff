//! Dropping redelivered messages.
//!
//! A QoS 1 message is acknowledged after the commit that holds it. If the
//! agent dies (or the connection drops) between that commit and the moment
//! the acknowledgement reaches the broker, the broker delivers the message
//! again, and its readings would be journaled twice. Packet ids do not tell
//! (rumqttd, for one, sends a redelivery with a fresh id and no DUP flag),
//! so the agent recognises messages by their readings: a reading is its
//! source, key, timestamp and values; a message is the sequence of its
//! readings ([`MessageHash`]: a message of one reading is that reading's
//! hash, so single-reading rings from before message identities still
//! match). The journal marks which records continue a message
//! (`Store::append_part`), so a replay rebuilds the same identities.
//!
//! The identities of the last [`WINDOW`] journaled messages are kept in a
//! ring (in memory, and in every checkpoint, so a crash right after a
//! checkpoint that truncated the journal still knows them). For the first
//! 4 × [`WINDOW`] messages after each (re)connect, the time in which a
//! broker redelivers, messages found in the ring are dropped, counted, and
//! remembered again (a redelivery whose acknowledgement is lost once more,
//! because the agent died again, stays recent). The guarantee holds while
//! the broker has fewer than [`WINDOW`] unacknowledged messages for the
//! agent that it journaled; mosquitto redelivers every unacknowledged one,
//! not only its in-flight window, so the agent stops taking messages while
//! [`WINDOW`] / 2 wait for their ack to be written.
//!
//! Readings without a payload timestamp are stamped with the agent clock on
//! arrival, so a redelivery is a different reading: for such sources the
//! promise is at-least-once across a crash in that short window.

/// Messages remembered (256 KiB of hashes; a checkpoint carries them).
pub const WINDOW: usize = 32_768;

/// The identity of a reading (64-bit FNV-1a over its parts).
pub fn reading_hash(source: u16, key: &str, ts: i64, values: &[f64]) -> u64 {
    const P: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(P);
        }
    };
    eat(&source.to_le_bytes());
    eat(&(key.len() as u32).to_le_bytes());
    eat(key.as_bytes());
    eat(&ts.to_le_bytes());
    for v in values {
        eat(&v.to_bits().to_le_bytes());
    }
    h
}

/// The identity of a message from the hashes of its readings, in order:
/// the hash itself for one reading, else 64-bit FNV-1a over the count and
/// the hashes. `None` without readings.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageHash {
    n: u32,
    first: u64,
    h: u64,
}

impl MessageHash {
    /// Adds the next reading's [`reading_hash`].
    #[inline]
    pub fn add(&mut self, reading: u64) {
        const P: u64 = 0x0000_0100_0000_01b3;
        if self.n == 0 {
            self.first = reading;
            self.h = 0xcbf2_9ce4_8422_2325;
        }
        for b in reading.to_le_bytes() {
            self.h ^= b as u64;
            self.h = self.h.wrapping_mul(P);
        }
        self.n += 1;
    }

    /// Readings added.
    pub fn readings(&self) -> u32 {
        self.n
    }

    /// The message's identity.
    pub fn finish(&self) -> Option<u64> {
        const P: u64 = 0x0000_0100_0000_01b3;
        match self.n {
            0 => None,
            1 => Some(self.first),
            n => {
                let mut h = self.h;
                for b in n.to_le_bytes() {
                    h ^= b as u64;
                    h = h.wrapping_mul(P);
                }
                Some(h)
            }
        }
    }
}

/// The ring of recent messages and the post-connect check.
#[derive(Debug, Default)]
pub struct Dedupe {
    ring: Vec<u64>,
    pos: usize,
    /// The ring at the last connect, sorted (256 KiB at most; a hash set of
    /// the same hashes would take about 2.3 times that).
    armed: Option<Vec<u64>>,
    messages_left: usize,
    inserted: u64,
}

impl Dedupe {
    /// Remembers a message's identity (journaled, or a duplicate seen again).
    #[inline]
    pub fn record(&mut self, h: u64) {
        self.inserted += 1;
        if self.ring.len() < WINDOW {
            self.ring.push(h);
        } else {
            self.ring[self.pos] = h;
            self.pos = (self.pos + 1) % WINDOW;
        }
    }

    /// Starts checking: the next 4 × [`WINDOW`] messages are compared with
    /// the identities remembered now.
    pub fn arm(&mut self) {
        let mut v = self.ring.clone();
        v.sort_unstable();
        self.armed = Some(v);
        self.messages_left = 4 * WINDOW;
    }

    /// Identities recorded so far, ever (an identity recorded when this
    /// was `n` is in the ring while it is below `n + WINDOW`).
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Whether checks are on (a message arrived within the window).
    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Counts one message against the window.
    pub fn message(&mut self) {
        if self.armed.is_some() {
            self.messages_left = self.messages_left.saturating_sub(1);
            if self.messages_left == 0 {
                self.armed = None;
            }
        }
    }

    /// Whether message `h` is a redelivery.
    #[inline]
    pub fn is_duplicate(&self, h: u64) -> bool {
        self.armed
            .as_ref()
            .is_some_and(|s| s.binary_search(&h).is_ok())
    }

    /// The remembered hashes, oldest first (for a checkpoint).
    pub fn export(&self) -> Vec<u64> {
        let (new, old) = self.ring.split_at(self.pos);
        [old, new].concat()
    }

    /// Takes the post-connect check and the insertion count, to
    /// [`resume`](Dedupe::resume) them after the ring is rebuilt from the
    /// checkpoint and journal while the connection stays up.
    pub fn keep(&mut self) -> Kept {
        Kept {
            armed: self.armed.take(),
            messages_left: self.messages_left,
            inserted: self.inserted,
        }
    }

    /// Puts back what [`keep`](Dedupe::keep) took.
    pub fn resume(&mut self, k: Kept) {
        self.armed = k.armed;
        self.messages_left = k.messages_left;
        self.inserted = k.inserted;
    }

    /// Forgets everything and remembers `hashes` (oldest first).
    pub fn import(&mut self, hashes: &[u64]) {
        self.ring.clear();
        self.pos = 0;
        self.armed = None;
        for &h in hashes {
            self.record(h);
        }
    }
}

/// What [`Dedupe::keep`] takes.
#[derive(Debug)]
pub struct Kept {
    armed: Option<Vec<u64>>,
    messages_left: usize,
    inserted: u64,
}

/// Agent checkpoint, `[b'W', 1, n: u32 LE, n × u64 LE hashes, engine
/// snapshot]`, of the engine's state appended to `record` (the store's
/// record, [`crate::store::Store::checkpoint_buffer`]): the ring is written
/// straight from memory and the snapshot encoded in place, so the state
/// is in memory once on its way to the store, not twice.
///
/// # Errors
/// As [`weir_core::engine::Engine::snapshot`]; `record` is then as it was.
pub fn encode_checkpoint_into(
    d: &Dedupe,
    engine: &weir_core::engine::Engine,
    record: &mut crate::store::CheckpointRecord,
) -> Result<(), weir_core::snapshot::SnapshotError> {
    let buf = record.snapshot_mut();
    let start = buf.len();
    buf.reserve(6 + d.ring.len() * 8);
    push_ring(d, buf);
    engine
        .snapshot_into(buf)
        .inspect_err(|_| buf.truncate(start))
}

fn push_ring(d: &Dedupe, v: &mut Vec<u8>) {
    v.extend_from_slice(&[b'W', 1]);
    v.extend_from_slice(&(d.ring.len() as u32).to_le_bytes());
    let (new, old) = d.ring.split_at(d.pos);
    for h in old.iter().chain(new) {
        v.extend_from_slice(&h.to_le_bytes());
    }
}

/// The agent checkpoint ([`encode_checkpoint_into`]'s format) of an
/// engine snapshot already taken, as a store record.
pub fn checkpoint_record(d: &Dedupe, engine: &[u8]) -> crate::store::CheckpointRecord {
    let mut r = crate::store::Store::checkpoint_buffer(6 + d.ring.len() * 8 + engine.len());
    push_ring(d, r.snapshot_mut());
    r.snapshot_mut().extend_from_slice(engine);
    r
}

/// Splits an agent checkpoint into the hashes and the engine snapshot.
pub fn decode_checkpoint(b: &[u8]) -> Option<(Vec<u64>, &[u8])> {
    if b.len() < 6 || b[..2] != [b'W', 1] {
        return None;
    }
    let n = u32::from_le_bytes(b[2..6].try_into().ok()?) as usize;
    let end = n.checked_mul(8)?.checked_add(6)?;
    if b.len() < end || n > WINDOW {
        return None;
    }
    let hashes = b[6..end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Some((hashes, &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_window_and_checkpoint() {
        let mut d = Dedupe::default();
        for i in 0..(WINDOW as i64 + 10) {
            d.record(reading_hash(0, "k", i, &[1.0]));
        }
        assert!(!d.is_duplicate(reading_hash(0, "k", 20, &[1.0])));
        d.arm();
        assert!(d.is_duplicate(reading_hash(0, "k", 20, &[1.0])));
        assert!(
            !d.is_duplicate(reading_hash(0, "k", 5, &[1.0])),
            "fell out of the ring"
        );
        assert!(!d.is_duplicate(reading_hash(0, "k", 20, &[1.5])));
        assert!(!d.is_duplicate(reading_hash(1, "k", 20, &[1.0])));
        let record = checkpoint_record(&d, b"engine");
        let bytes = record.snapshot();
        let (hs, rest) = decode_checkpoint(bytes).unwrap();
        assert_eq!(rest, b"engine");
        assert_eq!(hs, d.export(), "oldest first, as the ring wrapped");
        let mut e = Dedupe::default();
        e.import(&hs);
        e.arm();
        assert!(e.is_duplicate(reading_hash(0, "k", WINDOW as i64 + 9, &[1.0])));
        for _ in 0..4 * WINDOW - 1 {
            e.message();
        }
        assert!(e.armed(), "still within the post-connect window");
        e.message();
        assert!(!e.armed());
        assert!(
            decode_checkpoint(&bytes[..100]).is_none(),
            "hashes cut short"
        );
        assert!(decode_checkpoint(b"Wx").is_none());
    }

    /// The in-place encoding and the one from a snapshot already taken are
    /// byte for byte the documented format: the ring oldest first, then the
    /// engine's snapshot.
    #[test]
    fn a_checkpoint_encoded_in_place_is_the_copied_one() {
        let pf = crate::pipeline_file::parse(
            "t.toml",
            "name = \"t\"\n[[source]]\nname = \"s\"\nfields = [\"v\"]\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"1s\"\naggregates = [\"count\", \"mean\"]\n",
        )
        .unwrap();
        let mut engine = pf.spec.clone().build().unwrap();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            let _ = engine.handle_sample(0, 0, k, 1_000 + i as i64, &[i as f64]);
        }
        let mut d = Dedupe::default();
        for h in 0..(WINDOW as u64 + 7) {
            d.record(h * 31);
        }
        let mut copied = vec![b'W', 1];
        copied.extend_from_slice(&(WINDOW as u32).to_le_bytes());
        for h in d.export() {
            copied.extend_from_slice(&h.to_le_bytes());
        }
        copied.extend_from_slice(&engine.snapshot().unwrap());
        let mut rec = crate::store::Store::checkpoint_buffer(0);
        encode_checkpoint_into(&d, &engine, &mut rec).unwrap();
        assert!(rec.snapshot() == &copied[..], "in place == copied");
        let made = checkpoint_record(&d, &engine.snapshot().unwrap());
        assert!(made.snapshot() == &copied[..], "from a snapshot == copied");
    }
}
