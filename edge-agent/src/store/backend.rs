//! What lies below redb: the file the store lives in, counted, and two
//! stand-ins for tests that break it.
//!
//! - [`CountingBackend`] wraps the real file (redb's `FileBackend`) and
//!   counts what the store writes to the device ([`IoCounters`]): the
//!   write budget and `weir_storage_bytes_written_total` read it.
//! - [`SimDisk`] is an in-memory disk with a *durable* and a *live* image:
//!   `sync_data` makes the live image durable, and [`SimDisk::power_cut`]
//!   returns what a power cut leaves: every 512-byte sector written since
//!   the last sync is, at random, the new one or the old one (a torn
//!   page), and a length change since the last sync may or may not
//!   survive. [`SimDisk::set_faults`] injects a full disk (ENOSPC from a
//!   capacity), I/O errors on write, read or sync, and short writes.
//!
//! redb latches the first I/O error: every later operation of that
//! `Database` fails with `PreviousIo` until it is dropped and opened again
//! (which repairs it). So the agent's answer to any storage fault is to
//! close the store and open it again, after a pause (docs/agent.md).

use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{BackendError, StorageBackend};

/// Bytes and calls that reached the device through a [`CountingBackend`].
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Bytes passed to `write` (redb's pages and headers).
    pub bytes_written: AtomicU64,
    /// `write` calls.
    pub writes: AtomicU64,
    /// `sync_data` calls (each an `fdatasync`).
    pub syncs: AtomicU64,
    /// I/O errors returned by the device (any operation).
    pub errors: AtomicU64,
}

/// A [`StorageBackend`] that counts what goes through it to `inner`.
#[derive(Debug)]
pub struct CountingBackend<B> {
    inner: B,
    counters: Arc<IoCounters>,
}

impl<B: StorageBackend> CountingBackend<B> {
    /// Wraps `inner`; the counters are shared with whoever holds `counters`.
    pub fn new(inner: B, counters: Arc<IoCounters>) -> Self {
        CountingBackend { inner, counters }
    }

    fn count<T>(&self, r: Result<T, io::Error>) -> Result<T, io::Error> {
        if r.is_err() {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        r
    }
}

impl<B: StorageBackend> StorageBackend for CountingBackend<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.count(self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.count(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.count(self.inner.set_len(len))
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.counters.syncs.fetch_add(1, Relaxed);
        self.count(self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.counters.writes.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Relaxed);
        self.count(self.inner.write(offset, data))
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    // Locks go straight through: without them two agents could open one
    // store.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// The sector a power cut tears at: each one written since the last sync
/// is either wholly new or wholly old afterwards.
pub const SECTOR: usize = 512;

/// Faults a [`SimDisk`] injects. All off by default.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The disk holds at most this many bytes: a `set_len` or `write`
    /// beyond it fails with ENOSPC (`StorageFull`), as a full card does.
    pub capacity: Option<u64>,
    /// Fail the `n`th next `write` (0 = the next one) with EIO.
    pub fail_write_in: Option<u64>,
    /// Write only this many bytes of the failing write before the error
    /// (a short write), instead of none.
    pub short_write: Option<usize>,
    /// Fail the next `sync_data` with EIO (the data may or may not have
    /// reached the medium: a later power cut decides).
    pub fail_sync: bool,
    /// Fail every `read` with EIO.
    pub fail_reads: bool,
}

#[derive(Default)]
struct Disk {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Sector indices written since the last sync (sorted on use).
    dirty: Vec<u64>,
    faults: Faults,
    writes: u64,
    syncs: u64,
}

/// An in-memory disk that can lose power. Clones share the disk, so a test
/// keeps one to cut the power while redb owns the other.
#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>);

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.lock();
        f.debug_struct("SimDisk")
            .field("len", &d.live.len())
            .field("dirty_sectors", &d.dirty.len())
            .finish_non_exhaustive()
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error ({what})"))
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// A disk whose durable and live images are `image` (what a power cut
    /// left, or a damaged file).
    pub fn from_image(image: Vec<u8>) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(Disk {
            live: image.clone(),
            durable: image,
            ..Disk::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The live image (what reads see now).
    pub fn live(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// `write` and `sync_data` calls so far.
    pub fn ops(&self) -> (u64, u64) {
        let d = self.lock();
        (d.writes, d.syncs)
    }

    /// What a power cut now leaves on the medium: the durable image with
    /// each sector written since the last sync taken, at random (`seed`),
    /// whole from the live image or left as it was; the length is the
    /// durable or the live one, at random. The disk itself is unchanged.
    pub fn power_cut(&self, seed: u64) -> Vec<u8> {
        let d = self.lock();
        let mut rng = crate::gen::SplitMix64::new(seed);
        let len = if rng.below(2) == 0 {
            d.durable.len()
        } else {
            d.live.len()
        };
        let mut img = d.durable.clone();
        img.resize(len, 0);
        let mut dirty = d.dirty.clone();
        dirty.sort_unstable();
        dirty.dedup();
        // Sometimes nothing unsynced survives, sometimes all of it, mostly
        // a mix: the three cases a real cut produces.
        let keep = match rng.below(4) {
            0 => 0,
            1 => 4,
            _ => 2,
        };
        for s in dirty {
            let lo = s as usize * SECTOR;
            if lo >= len || rng.below(4) >= keep {
                continue;
            }
            let hi = (lo + SECTOR).min(len).min(d.live.len());
            if lo < hi {
                img[lo..hi].copy_from_slice(&d.live[lo..hi]);
            }
        }
        img
    }

    fn mark(d: &mut Disk, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / SECTOR as u64;
        let last = (offset + len - 1) / SECTOR as u64;
        d.dirty.extend(first..=last);
    }
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Disk")
    }
}

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let d = self.lock();
        if d.faults.fail_reads {
            return Err(eio("read"));
        }
        let end = offset as usize + out.len();
        if end > d.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&d.live[offset as usize..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut d = self.lock();
        if d.faults.capacity.is_some_and(|c| len > c) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let old = d.live.len() as u64;
        d.live.resize(len as usize, 0);
        if len > old {
            Self::mark(&mut d, old, len - old);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut d = self.lock();
        d.syncs += 1;
        if std::mem::take(&mut d.faults.fail_sync) {
            return Err(eio("fsync"));
        }
        d.durable = d.live.clone();
        d.dirty.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut d = self.lock();
        d.writes += 1;
        let end = offset + data.len() as u64;
        let mut n = data.len();
        let mut err = None;
        if d.faults.capacity.is_some_and(|c| end > c) {
            n = d.faults.capacity.map_or(0, |c| c.saturating_sub(offset)) as usize;
            err = Some(io::Error::from(io::ErrorKind::StorageFull));
        }
        match d.faults.fail_write_in {
            Some(0) => {
                d.faults.fail_write_in = None;
                n = d.faults.short_write.unwrap_or(0).min(n);
                err = Some(eio("write"));
            }
            Some(k) => d.faults.fail_write_in = Some(k - 1),
            None => {}
        }
        let n = n.min(data.len());
        let stop = offset as usize + n;
        if stop > d.live.len() {
            d.live.resize(stop, 0);
        }
        d.live[offset as usize..stop].copy_from_slice(&data[..n]);
        Self::mark(&mut d, offset, n as u64);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_tears_at_sectors() {
        let disk = SimDisk::new();
        disk.write(0, &[1; 2048]).unwrap();
        disk.sync_data().unwrap();
        disk.write(0, &[2; 2048]).unwrap();
        let mut saw_mixed = false;
        for seed in 0..64 {
            let img = disk.power_cut(seed);
            assert_eq!(img.len(), 2048);
            for s in img.chunks(SECTOR) {
                assert!(s.iter().all(|&b| b == s[0]), "a sector is torn inside");
            }
            saw_mixed |= img[0] != img[2047];
        }
        assert!(saw_mixed, "no cut mixed old and new sectors");
        disk.sync_data().unwrap();
        assert!(disk.power_cut(7).iter().all(|&b| b == 2));
    }

    #[test]
    fn a_full_disk_says_storage_full_and_keeps_what_fit() {
        let disk = SimDisk::new();
        disk.set_faults(Faults {
            capacity: Some(1000),
            ..Faults::default()
        });
        assert_eq!(
            disk.set_len(4096).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        let e = disk.write(900, &[9; 200]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.live().len(), 1000);
    }

    #[test]
    fn a_short_write_writes_a_prefix_then_fails() {
        let disk = SimDisk::new();
        disk.set_faults(Faults {
            fail_write_in: Some(1),
            short_write: Some(10),
            ..Faults::default()
        });
        disk.write(0, &[1; 100]).unwrap();
        assert!(disk.write(100, &[2; 100]).is_err());
        assert_eq!(disk.live().len(), 110);
        disk.write(110, &[3; 10]).unwrap();
    }
}
