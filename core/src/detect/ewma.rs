//! (1) z-score against an exponentially weighted baseline (EWMA mean/var).
//!
//! The residual of each sample against the baseline *before* the sample is
//! folded in gives `z = (x - mean) / sd`; the score is the two-sided gaussian
//! tail of `z` on the shared `-log10(p)/10` scale.

use super::{dec_blob, enc_blob, expect_array, z_to_score, Clock};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

#[derive(Clone, Copy, Debug, PartialEq)]
/// Parameters of [`EwmaDetector`].
pub struct EwmaConfig {
    /// Smoothing factor of mean and variance (0 < alpha < 1).
    pub alpha: f64,
    /// Samples before any non-zero score.
    pub warmup: u32,
    /// Shipped alert threshold: two-sided gaussian tail p = 1e-5 (|z| ~ 4.4),
    /// i.e. L = 5, score 5/15.
    pub threshold: f64,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            alpha: 0.01,
            warmup: 100,
            threshold: 1.0 / 3.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
/// Z-score of each value against an exponentially weighted mean and variance.
pub struct EwmaDetector {
    /// Its parameters.
    pub cfg: EwmaConfig,
    pub(crate) clock: Clock,
    n: u64,
    mean: f64,
    var: f64,
}

impl EwmaDetector {
    /// A fresh detector.
    pub fn new(cfg: &EwmaConfig) -> Self {
        let mut cfg = *cfg;
        if !(cfg.alpha > 0.0 && cfg.alpha < 1.0) {
            cfg.alpha = EwmaConfig::default().alpha;
        }
        EwmaDetector {
            cfg,
            clock: Clock::default(),
            n: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    #[inline]
    /// Feeds one finite value; returns its score on the shared scale.
    pub fn update(&mut self, ts: i64, x: f64) -> f64 {
        self.clock.tick(ts);
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.mean = x;
            self.var = 0.0;
            return 0.0;
        }
        let d = x - self.mean;
        // tiny floor relative to the level keeps a constant series finite
        let floor = 1e-12 * (1.0 + self.mean * self.mean);
        let z = d / libm::sqrt(self.var + floor);
        // during warm-up use a faster rate so the baseline settles
        let a = if self.n <= self.cfg.warmup as u64 {
            (1.0 / self.n as f64).max(self.cfg.alpha)
        } else {
            self.cfg.alpha
        };
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        if self.n <= self.cfg.warmup as u64 {
            0.0
        } else {
            z_to_score(z)
        }
    }

    /// Writes the state (configuration included) as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(4)?;
        enc_blob(e, &[self.cfg.alpha, self.cfg.threshold])?;
        e.u32(self.cfg.warmup)?;
        self.clock.encode(e)?;
        e.array(3)?.u64(self.n)?.f64(self.mean)?.f64(self.var)?;
        Ok(())
    }

    /// Reads state written by [`EwmaDetector::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 4)?;
        let mut c = [0.0; 2];
        dec_blob(d, &mut c)?;
        let warmup = d.u32()?;
        let clock = Clock::decode(d)?;
        expect_array(d, 3)?;
        let me = EwmaDetector {
            cfg: EwmaConfig {
                alpha: c[0],
                threshold: c[1],
                warmup,
            },
            clock,
            n: d.u64()?,
            mean: d.f64()?,
            var: d.f64()?,
        };
        if !(me.mean.is_finite() && me.var.is_finite()) {
            return Err(DecError::message("ewma state holds a non-finite value"));
        }
        Ok(me)
    }
}
