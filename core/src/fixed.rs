//! Keyed tumbling windows with fixed capacity, for targets without an
//! allocator (a sensor node on a Cortex-M).
//!
//! Capacity is part of the type: `FixedTumbling<KEYS, OPEN>` holds at most
//! `KEYS` keys with at most `OPEN` open windows each; a key's slot is freed
//! only by [`FixedTumbling::forget`]. A sample that would
//! need more is handed back in [`Refused`] and counted, never dropped
//! silently and never a panic. The semantics are the engine's: watermark =
//! largest timestamp − bound − 1; a window `[s, s + size)` fires when the
//! watermark reaches `s + size − 1`; a sample whose window already fired is
//! late. An optional EWMA z-score baseline per key flags fired windows.
//!
//! ```
//! use weir_core::fixed::FixedTumbling;
//! let mut w: FixedTumbling<4, 2> = FixedTumbling::new(1_000, 100);
//! let mut first = None;
//! for i in 0..25 {
//!     w.push(7, i * 100, 1.0).unwrap();
//!     // Poll after each push: open windows hold slots until drained.
//!     while let Some(win) = w.poll() {
//!         first.get_or_insert(win);
//!     }
//! }
//! let first = first.unwrap();
//! assert_eq!((first.key, first.start, first.moments.n), (7, 0, 10));
//! ```

use crate::agg::{Moments, Tier};
use crate::detect::{EwmaBaseline, Verdict};

/// Why a sample was not taken. The sample comes back with the reason.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Refused {
    /// Its window has already fired.
    Late(i64, f64),
    /// The value is NaN or infinite.
    NonFinite(i64, f64),
    /// A new key, but all `KEYS` slots are taken.
    KeysFull(u32, i64, f64),
    /// The key already has `OPEN` windows open.
    WindowsFull(u32, i64, f64),
}

/// Counters; `accepted + late + non_finite + keys_full + windows_full` is
/// the number of `push` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedStats {
    /// Samples added to a window.
    pub accepted: u64,
    /// Late samples.
    pub late: u64,
    /// NaN / infinite samples.
    pub non_finite: u64,
    /// Samples refused for lack of a key slot.
    pub keys_full: u64,
    /// Samples refused for lack of a window slot.
    pub windows_full: u64,
    /// Windows emitted.
    pub fired: u64,
}

/// A fired window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedWindow {
    /// The key.
    pub key: u32,
    /// Start (inclusive).
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
    /// Count, mean, M2, min, max… ([`Moments::get`] derives the aggregates).
    pub moments: Moments,
    /// The baseline's verdict on the window mean, if a baseline is set.
    pub anomaly: Option<Verdict>,
}

impl FixedWindow {
    /// The largest encoding [`FixedWindow::encode_cbor`] can produce.
    pub const MAX_CBOR: usize = 96;

    /// Writes the window as a CBOR map into `buf`: `{"k": key, "s": start,
    /// "e": end, "n": count, "mean", "min", "max", "sd", "a": anomaly flag}`.
    /// Returns the number of bytes written.
    ///
    /// # Errors
    /// `buf` is too small ([`FixedWindow::MAX_CBOR`] bytes always suffice).
    pub fn encode_cbor(
        &self,
        buf: &mut [u8],
    ) -> Result<usize, minicbor::encode::Error<minicbor::encode::write::EndOfSlice>> {
        let mut e = minicbor::Encoder::new(minicbor::encode::write::Cursor::new(buf));
        let m = &self.moments;
        e.map(9)?
            .str("k")?
            .u32(self.key)?
            .str("s")?
            .i64(self.start)?
            .str("e")?
            .i64(self.end)?
            .str("n")?
            .u64(m.n)?
            .str("mean")?
            .f64(m.get(crate::agg::AggKind::Mean))?
            .str("min")?
            .f64(m.min)?
            .str("max")?
            .f64(m.max)?
            .str("sd")?
            .f64(m.get(crate::agg::AggKind::Stddev))?
            .str("a")?
            .bool(self.anomaly.is_some_and(|a| a.flag))?;
        Ok(e.into_writer().position())
    }
}

#[derive(Clone, Debug)]
struct Slot<const OPEN: usize> {
    key: u32,
    windows: heapless::Vec<(i64, Moments), OPEN>,
    baseline: Option<EwmaBaseline>,
}

/// Keyed tumbling windows in fixed memory. See the module docs.
#[derive(Clone, Debug)]
pub struct FixedTumbling<const KEYS: usize, const OPEN: usize> {
    size: i64,
    bound: i64,
    wm: i64,
    slots: heapless::Vec<Slot<OPEN>, KEYS>,
    baseline: Option<(f64, f64, u32)>,
    stats: FixedStats,
}

impl<const KEYS: usize, const OPEN: usize> FixedTumbling<KEYS, OPEN> {
    /// Windows of `size` ticks, watermark bound `bound` ticks.
    ///
    /// # Panics
    /// If `size` is not positive or `bound` is negative (a programming error
    /// in firmware, caught at start).
    pub const fn new(size: i64, bound: i64) -> Self {
        assert!(
            size > 0 && bound >= 0,
            "size must be positive and bound not negative"
        );
        FixedTumbling {
            size,
            bound,
            wm: i64::MIN,
            slots: heapless::Vec::new(),
            baseline: None,
            stats: FixedStats {
                accepted: 0,
                late: 0,
                non_finite: 0,
                keys_full: 0,
                windows_full: 0,
                fired: 0,
            },
        }
    }

    /// Flags windows whose mean is more than `k` standard deviations from an
    /// EWMA (`alpha`) baseline of the key's earlier means, after `warmup`.
    pub const fn with_baseline(mut self, alpha: f64, k: f64, warmup: u32) -> Self {
        self.baseline = Some((alpha, k, warmup));
        self
    }

    /// Counters.
    pub fn stats(&self) -> FixedStats {
        self.stats
    }

    /// Adds a sample. Due windows are then available from [`Self::poll`].
    ///
    /// # Errors
    /// The sample, handed back, with the reason it was refused.
    pub fn push(&mut self, key: u32, ts: i64, x: f64) -> Result<(), Refused> {
        if !x.is_finite() {
            self.stats.non_finite += 1;
            return Err(Refused::NonFinite(ts, x));
        }
        let start = ts.saturating_sub(ts.rem_euclid(self.size));
        if self.wm >= start.saturating_add(self.size) - 1 {
            self.stats.late += 1;
            return Err(Refused::Late(ts, x));
        }
        let idx = match self.slots.iter().position(|s| s.key == key) {
            Some(i) => i,
            None => {
                let baseline = self.baseline.map(|(a, k, w)| EwmaBaseline::new(a, k, w));
                if self
                    .slots
                    .push(Slot {
                        key,
                        windows: heapless::Vec::new(),
                        baseline,
                    })
                    .is_err()
                {
                    self.stats.keys_full += 1;
                    return Err(Refused::KeysFull(key, ts, x));
                }
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[idx];
        match slot.windows.iter_mut().find(|(s, _)| *s == start) {
            Some((_, m)) => m.push(x, Tier::Fourth),
            None => {
                let mut m = Moments::new();
                m.push(x, Tier::Fourth);
                if slot.windows.push((start, m)).is_err() {
                    self.stats.windows_full += 1;
                    return Err(Refused::WindowsFull(key, ts, x));
                }
            }
        }
        self.stats.accepted += 1;
        // As the engine: an event exactly `bound` behind the largest is on time.
        let cand = ts.saturating_sub(self.bound).saturating_sub(1);
        if cand > self.wm {
            self.wm = cand;
        }
        Ok(())
    }

    /// Frees the slot of a key that holds no open window (a sensor removed
    /// from the node), so another key can take it. Returns whether it did.
    pub fn forget(&mut self, key: u32) -> bool {
        match self
            .slots
            .iter()
            .position(|s| s.key == key && s.windows.is_empty())
        {
            Some(i) => {
                self.slots.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// End of input: every open window becomes due.
    pub fn flush(&mut self) {
        self.wm = i64::MAX;
    }

    /// The next due window (earliest end first, then key slot order).
    pub fn poll(&mut self) -> Option<FixedWindow> {
        let mut best: Option<(usize, usize, i64)> = None;
        for (si, s) in self.slots.iter().enumerate() {
            for (wi, (start, _)) in s.windows.iter().enumerate() {
                let end = start.saturating_add(self.size);
                if end - 1 <= self.wm && best.is_none_or(|(_, _, e)| end < e) {
                    best = Some((si, wi, end));
                }
            }
        }
        let (si, wi, end) = best?;
        let slot = &mut self.slots[si];
        let (start, moments) = slot.windows.swap_remove(wi);
        let anomaly = slot
            .baseline
            .as_mut()
            .map(|b| b.update(moments.get(crate::agg::AggKind::Mean)));
        self.stats.fired += 1;
        Some(FixedWindow {
            key: slot.key,
            start,
            end,
            moments,
            anomaly,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_containers_hand_the_sample_back() {
        let mut w: FixedTumbling<2, 1> = FixedTumbling::new(10, 0);
        w.push(1, 0, 1.0).unwrap();
        w.push(2, 1, 1.0).unwrap();
        assert_eq!(w.push(3, 2, 5.0), Err(Refused::KeysFull(3, 2, 5.0)));
        // Key 1 already has [0,10) open; [10,20) would be its second window.
        // The watermark is 1, so [0,10) is not yet due.
        assert_eq!(w.push(1, 12, 2.0), Err(Refused::WindowsFull(1, 12, 2.0)));
        assert!(matches!(w.push(1, 3, f64::NAN), Err(Refused::NonFinite(3, x)) if x.is_nan()));
        let s = w.stats();
        assert_eq!(
            (s.accepted, s.keys_full, s.windows_full, s.non_finite),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn the_largest_window_fits_max_cbor() {
        let mut m = Moments::new();
        m.push(f64::MAX, Tier::Fourth);
        m.n = u64::MAX;
        let w = FixedWindow {
            key: u32::MAX,
            start: i64::MIN,
            end: i64::MAX,
            moments: m,
            anomaly: None,
        };
        let mut buf = [0u8; FixedWindow::MAX_CBOR];
        assert!(w.encode_cbor(&mut buf).is_ok());
    }

    #[test]
    fn matches_engine_semantics_and_flags_a_jump() {
        let mut w: FixedTumbling<4, 2> = FixedTumbling::new(100, 20).with_baseline(0.1, 3.0, 5);
        let mut fired = 0;
        let mut flagged = 0;
        for i in 0..2_000i64 {
            let v = if (1500..1600).contains(&i) {
                50.0
            } else {
                10.0 + (i % 7) as f64 * 0.1
            };
            w.push(0, i * 10 - (i % 3), v).unwrap();
            while let Some(win) = w.poll() {
                fired += 1;
                assert_eq!(win.end - win.start, 100);
                flagged += win.anomaly.unwrap().flag as u32;
                let mut buf = [0u8; FixedWindow::MAX_CBOR];
                let n = win.encode_cbor(&mut buf).unwrap();
                assert!(n > 20 && n <= FixedWindow::MAX_CBOR);
            }
        }
        w.flush();
        while w.poll().is_some() {
            fired += 1;
        }
        assert_eq!(fired, 200);
        assert!(flagged >= 1, "the jump to 50 is flagged");
        assert_eq!(w.stats().late, 0);
        assert_eq!(w.stats().accepted, 2_000);
    }
}
