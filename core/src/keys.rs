//! Key interning with a budget: sensor names become dense `KeyId`s so that
//! per-key operator state lives in plain vectors.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::{BuildHasherDefault, Hasher};

/// A dense id for a live key. Ids of evicted keys are reused only after the
/// output queue has been drained, so an id in a pending output stays valid.
pub type KeyId = u32;

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
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
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

type Map = hashbrown::HashMap<Box<str>, KeyId, BuildHasherDefault<FxHasher>>;

/// Live keys: name ↔ id, last event time per key.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    map: Map,
    pub(crate) names: Vec<Option<Box<str>>>,
    pub(crate) last_ts: Vec<i64>,
    pub(crate) free: Vec<KeyId>,
    pub(crate) pending_free: Vec<KeyId>,
    /// Names of evicted keys whose ids are pending release: outputs still
    /// queued may name them.
    retired: Vec<(KeyId, Box<str>)>,
}

impl KeyTable {
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<KeyId> {
        self.map.get(name).copied()
    }

    pub(crate) fn live(&self) -> usize {
        self.map.len()
    }

    /// Inserts a new key (caller has checked the budget).
    pub(crate) fn insert(&mut self, name: &str) -> KeyId {
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(name.into());
                id
            }
            None => {
                self.names.push(Some(name.into()));
                self.last_ts.push(i64::MIN);
                (self.names.len() - 1) as KeyId
            }
        };
        self.last_ts[id as usize] = i64::MIN;
        self.map.insert(name.into(), id);
        id
    }

    pub(crate) fn remove(&mut self, id: KeyId) {
        if let Some(name) = self.names[id as usize].take() {
            self.map.remove(&name);
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

    /// Rebuilds the map after `names` was restored.
    pub(crate) fn reindex(&mut self) {
        self.map.clear();
        for (i, n) in self.names.iter().enumerate() {
            if let Some(n) = n {
                self.map.insert(n.clone(), i as KeyId);
            }
        }
    }
}
