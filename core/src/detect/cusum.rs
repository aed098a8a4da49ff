//! (3) Two-sided CUSUM change-point detector for level shifts and drifts.
//!
//! Standardised residuals `z = (x - mu) / sd` against a slowly adapting
//! baseline (clipped to `+-z_clip` so that single spikes do not trip it)
//! feed the classic Page CUSUM recursions
//! `S+ = max(0, S+ + z - k)`, `S- = max(0, S- - z - k)`.
//! The score is `max(S+, S-) / (2 h)` clamped to [0, 1], so the shipped
//! threshold 0.5 is the textbook decision interval `S >= h`. With k = 0.5 and
//! h = 8 the in-control average run length of a gaussian series is in the
//! ~1e4 samples range. After an alarm the baseline
//! jumps to a fast EWMA of the recent level and both sums restart, so a
//! persistent shift raises one alarm, then the detector re-arms.

use super::{dec_blob, enc_blob, expect_array, Clock};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

#[derive(Clone, Copy, Debug, PartialEq)]
/// Parameters of [`CusumDetector`].
pub struct CusumConfig {
    /// Allowance k in standard deviations (half the shift to detect).
    pub k: f64,
    /// Decision interval h in standard deviations.
    pub h: f64,
    /// Baseline adaptation rate (mean and variance).
    pub alpha: f64,
    /// Rate of the fast level tracker used to re-baseline after an alarm.
    pub fast_alpha: f64,
    /// Residual clip, in standard deviations.
    pub z_clip: f64,
    /// Samples used to learn the first baseline (score 0 meanwhile).
    pub warmup: u32,
    /// Shipped alert threshold on the score (0.5 <=> S >= h).
    pub threshold: f64,
}

impl Default for CusumConfig {
    fn default() -> Self {
        CusumConfig {
            k: 0.5,
            h: 8.0,
            alpha: 0.002,
            fast_alpha: 0.1,
            z_clip: 4.0,
            warmup: 100,
            threshold: 0.5,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
/// Two-sided CUSUM (Page) change-point detector on standardised values.
pub struct CusumDetector {
    /// Its parameters.
    pub cfg: CusumConfig,
    pub(crate) clock: Clock,
    n: u64,
    mu: f64,
    var: f64,
    fast: f64,
    s_hi: f64,
    s_lo: f64,
}

impl CusumDetector {
    /// A fresh detector.
    pub fn new(cfg: &CusumConfig) -> Self {
        CusumDetector {
            cfg: *cfg,
            clock: Clock::default(),
            n: 0,
            mu: 0.0,
            var: 0.0,
            fast: 0.0,
            s_hi: 0.0,
            s_lo: 0.0,
        }
    }

    /// Feeds one finite value; returns the score `S / (2h)` (clamped by the caller).
    pub fn update(&mut self, ts: i64, x: f64) -> f64 {
        self.clock.tick(ts);
        self.n = self.n.saturating_add(1);
        let c = self.cfg;
        if self.n == 1 {
            self.mu = x;
            self.fast = x;
            return 0.0;
        }
        self.fast += c.fast_alpha * (x - self.fast);
        let floor = 1e-12 * (1.0 + self.mu * self.mu);
        let sd = libm::sqrt(self.var + floor);
        let z = ((x - self.mu) / sd).clamp(-c.z_clip, c.z_clip);
        if self.n <= c.warmup as u64 {
            let a = 1.0 / self.n as f64;
            let d = x - self.mu;
            self.mu += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
            return 0.0;
        }
        self.s_hi = (self.s_hi + z - c.k).max(0.0);
        self.s_lo = (self.s_lo - z - c.k).max(0.0);
        let s = self.s_hi.max(self.s_lo);
        let score = s / (2.0 * c.h);
        // baseline adapts with the clipped residual
        let d = z * sd;
        self.mu += c.alpha * d;
        self.var = (1.0 - c.alpha) * (self.var + c.alpha * d * d);
        if s >= c.h {
            // alarm: re-baseline on the recent level, restart the sums
            self.mu = self.fast;
            self.s_hi = 0.0;
            self.s_lo = 0.0;
        }
        score
    }

    /// Writes the state (configuration included) as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        let c = &self.cfg;
        e.array(5)?;
        enc_blob(e, &[c.k, c.h, c.alpha, c.fast_alpha, c.z_clip, c.threshold])?;
        e.u32(c.warmup)?;
        self.clock.encode(e)?;
        e.u64(self.n)?;
        enc_blob(e, &[self.mu, self.var, self.fast, self.s_hi, self.s_lo])?;
        Ok(())
    }

    /// Reads state written by [`CusumDetector::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 5)?;
        let mut c = [0.0; 6];
        dec_blob(d, &mut c)?;
        let warmup = d.u32()?;
        let clock = Clock::decode(d)?;
        let n = d.u64()?;
        let mut s = [0.0f64; 5];
        dec_blob(d, &mut s)?;
        if !s.iter().all(|v| v.is_finite()) {
            return Err(DecError::message("cusum state holds a non-finite value"));
        }
        Ok(CusumDetector {
            cfg: CusumConfig {
                k: c[0],
                h: c[1],
                alpha: c[2],
                fast_alpha: c[3],
                z_clip: c[4],
                threshold: c[5],
                warmup,
            },
            clock,
            n,
            mu: s[0],
            var: s[1],
            fast: s[2],
            s_hi: s[3],
            s_lo: s[4],
        })
    }
}
