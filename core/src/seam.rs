//! The seams between the sans-IO engine and the world: where samples come
//! from ([`Source`]), where state is kept ([`CheckpointStore`]) and what time
//! it is ([`Clock`]). Implementations live outside `weir-core` (the agent's
//! redb store, the boards' sensor drivers); small in-memory ones live here
//! for tests.

use core::fmt;

/// One reading from a source: a key, a timestamp and up to 8 values, in
/// fixed capacity (no allocator needed).
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The key (sensor id).
    pub key: heapless::String<32>,
    /// Timestamp in the pipeline's unit.
    pub ts: i64,
    /// Values, in the order of the source's fields.
    pub values: heapless::Vec<f64, 8>,
}

/// What went wrong reading a source, in a form every source shares
/// (embedded-hal's I2C errors do the same with `ErrorKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// The device did not acknowledge (absent, wrong address, unpowered).
    Nack,
    /// The bus reported an error (arbitration, overrun, electrical).
    Bus,
    /// The device did not answer in time.
    Timeout,
    /// The device answered, but with a value that cannot be right
    /// (out of the physical range, wrong chip id, stuck register).
    Implausible,
    /// Anything else.
    Other,
}

impl fmt::Display for SourceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceErrorKind::Nack => "no acknowledge",
            SourceErrorKind::Bus => "bus error",
            SourceErrorKind::Timeout => "timeout",
            SourceErrorKind::Implausible => "implausible value",
            SourceErrorKind::Other => "other error",
        })
    }
}

/// An error of a [`Source`].
pub trait SourceError: fmt::Debug {
    /// The kind, for counters and health.
    fn kind(&self) -> SourceErrorKind;
}

/// A poll-based, fallible source of readings (a sensor on a bus, a
/// simulated sensor). The driver calls [`Source::poll_read`] when
/// [`Source::poll_timeout`] says it is due.
pub trait Source {
    /// The error type.
    type Error: SourceError;

    /// Reads if a reading is due at `now` (the driver's clock, in the
    /// pipeline's unit); `Ok(None)` when nothing is due.
    ///
    /// # Errors
    /// The read failed; the source stays usable and may be polled again.
    fn poll_read(&mut self, now: i64) -> Result<Option<Reading>, Self::Error>;

    /// When the source next wants to be polled (`None`: whenever).
    fn poll_timeout(&self) -> Option<i64>;
}

/// A monotonic, infallible 64-bit clock, passed in, never global.
pub trait Clock {
    /// Now, in the pipeline's unit. Never goes back.
    fn now(&self) -> i64;
}

/// A clock for tests: it moves only when told to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockClock {
    t: i64,
}

impl MockClock {
    /// A clock reading `t`.
    pub const fn new(t: i64) -> Self {
        MockClock { t }
    }

    /// Moves the clock forward by `d` (saturating; negative `d` is ignored).
    pub fn advance(&mut self, d: i64) {
        self.t = self.t.saturating_add(d.max(0));
    }
}

impl Clock for MockClock {
    fn now(&self) -> i64 {
        self.t
    }
}

/// A narrow byte-level store for checkpoints (snapshots plus the input
/// position they cover).
///
/// Contract: after `sync()` returns `Ok`, the last checkpoint `put` before
/// it survives a crash or power loss; a checkpoint `put` but not yet synced
/// may or may not survive, and if it does not, the previous synced one is
/// what [`CheckpointStore::latest`] returns. A checkpoint is never seen torn:
/// `latest` returns a whole `put`, or an earlier one.
pub trait CheckpointStore {
    /// The error type.
    type Error: fmt::Debug;

    /// Stages a checkpoint: `snapshot` bytes covering input up to and
    /// including position `upto`.
    ///
    /// # Errors
    /// The store could not take it; the previous checkpoint stands.
    fn put(&mut self, upto: u64, snapshot: &[u8]) -> Result<(), Self::Error>;

    /// Makes everything `put` so far durable.
    ///
    /// # Errors
    /// Nothing new is durable; the previous durable checkpoint stands.
    fn sync(&mut self) -> Result<(), Self::Error>;

    /// The newest checkpoint that is visible: `(upto, snapshot)`.
    ///
    /// # Errors
    /// The store cannot be read.
    fn latest(&self) -> Result<Option<(u64, &[u8])>, Self::Error>;
}

#[cfg(feature = "alloc")]
pub use mem::MemStore;

#[cfg(feature = "alloc")]
mod mem {
    use alloc::vec::Vec;

    use super::CheckpointStore;

    /// An in-memory [`CheckpointStore`] that models a crash: it keeps a
    /// "live" image (what `latest` sees) and a "durable" one (what survives
    /// [`MemStore::crash`]).
    #[derive(Clone, Debug, Default)]
    pub struct MemStore {
        live: Option<(u64, Vec<u8>)>,
        durable: Option<(u64, Vec<u8>)>,
        /// Number of `sync` calls, for tests.
        pub syncs: u64,
    }

    impl MemStore {
        /// An empty store.
        pub fn new() -> Self {
            Self::default()
        }

        /// Loses everything not synced, as a power cut would.
        pub fn crash(&mut self) {
            self.live = self.durable.clone();
        }
    }

    impl CheckpointStore for MemStore {
        type Error = core::convert::Infallible;

        fn put(&mut self, upto: u64, snapshot: &[u8]) -> Result<(), Self::Error> {
            self.live = Some((upto, snapshot.to_vec()));
            Ok(())
        }

        fn sync(&mut self) -> Result<(), Self::Error> {
            self.durable = self.live.clone();
            self.syncs += 1;
            Ok(())
        }

        fn latest(&self) -> Result<Option<(u64, &[u8])>, Self::Error> {
            Ok(self.live.as_ref().map(|(u, b)| (*u, b.as_slice())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_clock_only_moves_forward() {
        let mut c = MockClock::new(10);
        c.advance(5);
        c.advance(-100);
        assert_eq!(c.now(), 15);
        c.advance(i64::MAX);
        assert_eq!(c.now(), i64::MAX);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn mem_store_loses_unsynced_checkpoints_on_crash() {
        let mut s = MemStore::new();
        s.put(1, b"one").unwrap();
        s.sync().unwrap();
        s.put(2, b"two").unwrap();
        assert_eq!(s.latest().unwrap(), Some((2, &b"two"[..])));
        s.crash();
        assert_eq!(s.latest().unwrap(), Some((1, &b"one"[..])));
    }
}
