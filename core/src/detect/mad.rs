//! (2) Robust median / MAD over a bounded sliding window.
//!
//! `z = (x - median) / (1.4826 * MAD)` over the previous `window` samples
//! (the current sample is scored before it enters the window). When the MAD
//! is zero (quantised or mostly constant data) the scale falls back to the
//! mean absolute deviation around the median, then to a tiny relative floor.
//! A sorted copy of the window is maintained incrementally (binary search +
//! shift), so median and MAD cost O(window) memory moves, no sorting.

use super::{dec_blob, enc_blob, expect_array, z_to_score, Clock};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

/// Capacity of the window (compile-time bound; 2 KiB of f64).
pub const MAD_MAX: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
/// Parameters of [`MadDetector`].
pub struct MadConfig {
    /// Window length, clamped to `8..=MAD_MAX`.
    pub window: u32,
    /// Shipped alert threshold: two-sided gaussian tail p = 1e-5 (|z| ~ 4.4),
    /// i.e. L = 5, score 5/15.
    pub threshold: f64,
}

impl Default for MadConfig {
    fn default() -> Self {
        MadConfig {
            window: 256,
            threshold: 1.0 / 3.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
/// Robust z-score against the median and MAD of a bounded window of recent values.
pub struct MadDetector {
    /// Its parameters.
    pub cfg: MadConfig,
    pub(crate) clock: Clock,
    buf: [f64; MAD_MAX],
    /// The same values, kept sorted (rebuilt from `buf` on restore).
    sorted: [f64; MAD_MAX],
    len: u32,
    head: u32,
}

/// Index of the first element `>= x` in the sorted slice.
#[inline]
fn lower_bound(xs: &[f64], x: f64) -> usize {
    xs.partition_point(|&v| v < x)
}

impl MadDetector {
    /// A fresh detector.
    pub fn new(cfg: &MadConfig) -> Self {
        let mut cfg = *cfg;
        cfg.window = cfg.window.clamp(8, MAD_MAX as u32);
        MadDetector {
            cfg,
            clock: Clock::default(),
            buf: [0.0; MAD_MAX],
            sorted: [0.0; MAD_MAX],
            len: 0,
            head: 0,
        }
    }

    /// Feeds one finite value; returns its score on the shared scale.
    pub fn update(&mut self, ts: i64, x: f64) -> f64 {
        self.clock.tick(ts);
        let n = self.len as usize;
        let mut score = 0.0;
        if n >= (self.cfg.window as usize).min(32) {
            let s = &self.sorted[..n];
            let k = n / 2;
            let med = s[k];
            // k-th smallest |s_i - med|: merge the two sides of the median,
            // both already ordered by distance
            let (mut l, mut r) = (k as isize - 1, k);
            let mut mad = 0.0;
            for _ in 0..=k {
                let dl = if l >= 0 {
                    med - s[l as usize]
                } else {
                    f64::INFINITY
                };
                let dr = if r < n { s[r] - med } else { f64::INFINITY };
                if dl <= dr {
                    mad = dl;
                    l -= 1;
                } else {
                    mad = dr;
                    r += 1;
                }
            }
            let mut scale = 1.4826 * mad;
            if scale <= 0.0 {
                let sum_abs: f64 = s.iter().map(|v| libm::fabs(v - med)).sum();
                scale = 1.2533 * sum_abs / n as f64;
            }
            let floor = 1e-9 * (1.0 + libm::fabs(med));
            if scale < floor {
                scale = floor;
            }
            score = z_to_score((x - med) / scale);
        }
        let w = self.cfg.window as usize;
        if n == w {
            // drop the outgoing value from the sorted copy
            let old = self.buf[self.head as usize];
            let i = lower_bound(&self.sorted[..n], old);
            self.sorted.copy_within(i + 1..n, i);
        } else {
            self.len += 1;
        }
        let m = n.min(w - 1);
        let i = lower_bound(&self.sorted[..m], x);
        self.sorted.copy_within(i..m, i + 1);
        self.sorted[i] = x;
        self.buf[self.head as usize] = x;
        self.head = ((self.head as usize + 1) % w) as u32;
        score
    }

    fn rebuild_sorted(&mut self) {
        let n = self.len as usize;
        self.sorted = [0.0; MAD_MAX];
        self.sorted[..n].copy_from_slice(&self.buf[..n]);
        self.sorted[..n].sort_unstable_by(|a, b| a.total_cmp(b));
    }

    /// Writes the state (configuration included) as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(6)?;
        e.u32(self.cfg.window)?.f64(self.cfg.threshold)?;
        self.clock.encode(e)?;
        e.u32(self.len)?.u32(self.head)?;
        enc_blob(e, &self.buf[..self.len as usize])?;
        Ok(())
    }

    /// Reads state written by [`MadDetector::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 6)?;
        let window = d.u32()?;
        let threshold = d.f64()?;
        let mut me = MadDetector::new(&MadConfig { window, threshold });
        if me.cfg.window != window {
            return Err(DecError::message("mad window out of range"));
        }
        me.clock = Clock::decode(d)?;
        me.len = d.u32()?;
        me.head = d.u32()?;
        if me.len > window || me.head >= window {
            return Err(DecError::message("mad ring indices out of range"));
        }
        let n = me.len as usize;
        dec_blob(d, &mut me.buf[..n])?;
        if me.buf[..n].iter().any(|v| !v.is_finite()) {
            return Err(DecError::message("mad window holds a non-finite value"));
        }
        me.rebuild_sorted();
        Ok(me)
    }
}
