//! Key interning with a budget: sensor names become dense `KeyId`s so that
//! per-key operator state lives in plain vectors.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::hash::{Hash, Hasher};

/// A dense id for a live key. Ids of evicted keys are reused only after the
/// output queue has been drained, so an id in a pending output stays valid.
pub type KeyId = u32;

/// A caller's memo of the id one key has in one engine, so that a driver
/// that already knows its keys by number (the agent's journal dictionary)
/// spares the engine a lookup by name per sample
/// ([`Engine::handle_sample_hinted`](crate::engine::Engine::handle_sample_hinted)).
/// It is checked against a stamp the engine gives the key when it is
/// admitted (and again when a checkpoint is restored into it), so a key
/// evicted since, or an id reused by another key, is looked up by name
/// again. A hint belongs to the engine that filled it, and to one key
/// name. `KeyHint::default()` is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyHint {
    id: KeyId,
    /// The key's stamp when the hint was filled; 0 for none (no key has 0).
    stamp: u64,
}

/// FxHash: a fast, non-cryptographic hash. Keys come from the gateway's own
/// sensors; the key budget bounds the table, so hash flooding is bounded too.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    h: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, w: u64) {
        self.h = (self.h.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail_word(rest));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

/// The 1 to 7 bytes of `rest` as a little-endian word padded with zeros,
/// from two overlapping loads: copying them into a buffer first costs a
/// `memcpy` call on every key lookup.
#[inline(always)]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    let u32_at = |i: usize| {
        rest.get(i..i + 4).map_or(0, |w| {
            u32::from_le_bytes(w.try_into().unwrap_or_default()) as u64
        })
    };
    if n >= 4 {
        // Bytes n−4..4 are in both halves, at the same place: `|` keeps them.
        u32_at(0) | u32_at(n - 4) << (8 * (n - 4))
    } else {
        rest[0] as u64
            | (rest[n / 2] as u64) << (8 * (n / 2))
            | (rest[n - 1] as u64) << (8 * (n - 1))
    }
}

/// name → id. A raw table rather than a map, so a lookup compares names
/// inline (`same_name`) instead of calling `memcmp` for a few bytes.
type Map = hashbrown::HashTable<(Box<str>, KeyId)>;

/// FxHash of a name, rotated so that its well-mixed high bits pick the
/// bucket: the table takes the bucket from the low bits, and a product's low
/// bits depend only on its input's low bits, so names like `s0000`…`s0999`
/// clustered and a lookup probed 1.55 groups on average.
#[inline(always)]
fn hash_name(name: &str) -> u64 {
    let mut h = FxHasher::default();
    name.hash(&mut h);
    h.finish().rotate_left(26)
}

/// `a == b` for names: names up to 16 bytes (the usual sensor id) compare
/// as two overlapping words, without a call.
#[inline(always)]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    let w4 = |s: &[u8], i: usize| {
        s.get(i..i + 4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    match n {
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => a == b,
    }
}

/// Live keys: name ↔ id, first and last event time per key, and the keys
/// on probation (admitted, not yet proven by completing a window).
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    map: Map,
    pub(crate) names: Vec<Option<Box<str>>>,
    pub(crate) last_ts: Vec<i64>,
    /// Event time of the key's first sample.
    pub(crate) first_ts: Vec<i64>,
    /// Admission order: the engine's input counter when the key arrived.
    pub(crate) admitted: Vec<u64>,
    /// Whether the key has completed a window of its own.
    pub(crate) proven: Vec<bool>,
    /// Unproven live keys by admission: evicted first when the budget is full.
    pub(crate) probation: BTreeSet<(u64, KeyId)>,
    /// Bytes of the live keys' names.
    pub(crate) name_bytes: usize,
    /// Bytes of the unproven keys' names.
    unproven_bytes: usize,
    pub(crate) free: Vec<KeyId>,
    pub(crate) pending_free: Vec<KeyId>,
    /// Names of evicted keys whose ids are pending release: outputs still
    /// queued may name them.
    retired: Vec<(KeyId, Box<str>)>,
    /// Per id: the live key's stamp (from `last_stamp`, never reused), 0
    /// for a free id. What a [`KeyHint`] is checked against.
    stamps: Vec<u64>,
    last_stamp: u64,
}

impl KeyTable {
    #[inline(always)]
    pub(crate) fn get(&self, name: &str) -> Option<KeyId> {
        self.map
            .find(hash_name(name), |(k, _)| {
                same_name(k.as_bytes(), name.as_bytes())
            })
            .map(|&(_, id)| id)
    }

    /// The id `hint` remembers, if its key is still live under it.
    #[inline(always)]
    pub(crate) fn hinted(&self, hint: &KeyHint) -> Option<KeyId> {
        let live = hint.stamp != 0 && self.stamps.get(hint.id as usize) == Some(&hint.stamp);
        live.then_some(hint.id)
    }

    /// A hint for the live key `id`.
    #[inline(always)]
    pub(crate) fn hint(&self, id: KeyId) -> KeyHint {
        KeyHint {
            id,
            stamp: self.stamps.get(id as usize).copied().unwrap_or(0),
        }
    }

    fn next_stamp(&mut self) -> u64 {
        self.last_stamp += 1;
        self.last_stamp
    }

    pub(crate) fn live(&self) -> usize {
        self.map.len()
    }

    /// Inserts a new key whose first sample is stamped `ts`, admitted as
    /// number `seq` (caller has checked the budget). It starts on probation.
    pub(crate) fn insert(&mut self, name: &str, ts: i64, seq: u64) -> KeyId {
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(name.into());
                id
            }
            None => {
                self.names.push(Some(name.into()));
                self.stamps.push(0);
                self.last_ts.push(i64::MIN);
                self.first_ts.push(ts);
                self.admitted.push(seq);
                self.proven.push(false);
                (self.names.len() - 1) as KeyId
            }
        };
        let i = id as usize;
        self.stamps[i] = self.next_stamp();
        self.last_ts[i] = i64::MIN;
        self.first_ts[i] = ts;
        self.admitted[i] = seq;
        self.proven[i] = false;
        self.probation.insert((seq, id));
        self.name_bytes += name.len();
        self.unproven_bytes += name.len();
        Self::put(&mut self.map, name.into(), id);
        id
    }

    /// Ends the probation of `id` if its samples now span `span` ticks.
    #[cold]
    #[inline(never)]
    pub(crate) fn try_prove(&mut self, id: KeyId, span: i64) {
        let i = id as usize;
        if self.last_ts[i].saturating_sub(self.first_ts[i]) >= span {
            self.proven[i] = true;
            self.probation.remove(&(self.admitted[i], id));
            self.unproven_bytes -= self.names[i].as_ref().map_or(0, |n| n.len());
        }
    }

    /// Bytes of the unproven keys' names.
    pub(crate) fn unproven_name_bytes(&self) -> usize {
        self.unproven_bytes
    }

    /// The unproven key admitted first, if any.
    pub(crate) fn oldest_unproven(&self) -> Option<KeyId> {
        self.probation.first().map(|&(_, k)| k)
    }

    /// Rebuilds the probation set after a restore.
    pub(crate) fn rebuild_probation(&mut self) {
        self.probation.clear();
        self.name_bytes = 0;
        self.unproven_bytes = 0;
        for (i, n) in self.names.iter().enumerate() {
            if let Some(n) = n {
                self.name_bytes += n.len();
                if !self.proven[i] {
                    self.probation.insert((self.admitted[i], i as KeyId));
                    self.unproven_bytes += n.len();
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, id: KeyId) {
        if let Some(name) = self.names[id as usize].take() {
            if let Ok(e) = self.map.find_entry(hash_name(&name), |(k, _)| **k == *name) {
                e.remove();
            }
            self.stamps[id as usize] = 0;
            self.name_bytes -= name.len();
            if !self.proven[id as usize] {
                self.probation.remove(&(self.admitted[id as usize], id));
                self.unproven_bytes -= name.len();
            }
            self.pending_free.push(id);
            self.retired.push((id, name));
        }
    }

    /// Outputs referring to pending ids have been drained: allow reuse.
    pub(crate) fn release_pending(&mut self) {
        self.free.append(&mut self.pending_free);
        self.retired.clear();
    }

    pub(crate) fn name(&self, id: KeyId) -> Option<&str> {
        match self.names.get(id as usize).and_then(|n| n.as_deref()) {
            Some(n) => Some(n),
            None => self
                .retired
                .iter()
                .rev()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| &**n),
        }
    }

    /// Maps `name` to `id`, replacing an earlier id of the same name.
    fn put(map: &mut Map, name: Box<str>, id: KeyId) {
        let h = hash_name(&name);
        match map.entry(h, |(k, _)| *k == name, |(k, _)| hash_name(k)) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = id,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((name, id));
            }
        }
    }

    /// Rebuilds the map after `names` was restored, with new stamps: no
    /// hint from before the restore is taken.
    pub(crate) fn reindex(&mut self) {
        self.map.clear();
        self.stamps.clear();
        for i in 0..self.names.len() {
            let stamp = match &self.names[i] {
                Some(n) => {
                    Self::put(&mut self.map, n.clone(), i as KeyId);
                    self.next_stamp()
                }
                None => 0,
            };
            self.stamps.push(stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_word_pads_with_zeros() {
        let bytes = [0x81u8, 2, 0xf3, 4, 5, 0xa6, 7];
        for n in 1..=7 {
            let mut buf = [0u8; 8];
            buf[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(
                super::tail_word(&bytes[..n]),
                u64::from_le_bytes(buf),
                "{n}"
            );
        }
    }

    use super::*;

    #[test]
    fn same_name_is_byte_equality() {
        let names: Vec<Vec<u8>> = (0..=20usize)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
                let mut v = alloc::vec![base.clone()];
                for i in 0..n {
                    let mut m = base.clone();
                    m[i] ^= 1;
                    v.push(m);
                }
                v
            })
            .collect();
        for a in &names {
            for b in &names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn ids_survive_removal_and_reindex() {
        let mut t = KeyTable::default();
        let a = t.insert("pump-1", 0, 0);
        let b = t.insert("pump-2/bearing-temperature", 0, 1);
        assert_eq!(t.get("pump-1"), Some(a));
        assert_eq!(t.get("pump-2/bearing-temperature"), Some(b));
        t.remove(a);
        assert_eq!(t.get("pump-1"), None);
        assert_eq!(t.live(), 1);
        t.reindex();
        assert_eq!(t.get("pump-2/bearing-temperature"), Some(b));
        assert_eq!(t.get("pump-1"), None);
    }
}
