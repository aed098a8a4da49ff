//! Multivariate machine-health detector: several fields of one machine,
//! scored by how far a sample lies from the learnt healthy joint behaviour.
//!
//! Per key, for a vector of `d <= MAX_FIELDS` fields:
//!
//! 1. **Learning** (`learn` samples, scored 0): the mean and covariance of
//!    all of them, exactly (Welford); in the second half each sample is
//!    first judged out of sample under the model of the samples before it
//!    (refactored every 16 samples), so the finite-sample and model error
//!    (autocorrelation, slow wandering, non-gaussian fields) is measured, not
//!    assumed: `inflate = mean out-of-sample D^2 / d`.
//! 2. **Scoring**: `D^2 = (x - m)' S^-1 (x - m)` (Hotelling's T^2 over all
//!    principal components, with a ridge of `RIDGE` x the diagonal), divided
//!    by `inflate`, smoothed by an EWMA of rate `beta` (MEWMA-style: a fault
//!    that persists accumulates, a single noisy sample does not). Under the
//!    healthy model the smoothed statistic is about `c chi2_nu` with
//!    `c = beta / (2 - beta)`, `nu = d (2 - beta) / beta`; its upper tail
//!    `p` (Wilson–Hilferty) gives `L = -log10 p` and the shared score
//!    `L / (L + 10)`. The shipped threshold is p = 1e-5 (score 5/15), as
//!    for calibrated Kestrel.
//! 3. **Per-field contributions**: `c_i = (x_i - m_i) (S^-1 (x - m))_i`, which
//!    sum to `D^2`; reported as fractions of `D^2` (negative parts as 0).
//! 4. **Adaptation**: after learning, the mean and covariance follow the
//!    machine with forgetting factor `1 - forget`, but only from samples
//!    scoring below the threshold, so a developing fault is not absorbed.
//!
//! Memory per key is O(MAX_FIELDS^2), fixed (~1.2 KiB, [`Multivariate::STATE_BYTES`]);
//! no heap, no_std; CBOR snapshots ([`Multivariate::encode`]). Non-finite
//! inputs leave the state untouched.

// small dense matrices read best indexed
#![allow(clippy::needless_range_loop)]

use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

use super::{dec_blob, enc_blob, expect_array, surprise_to_unit, Clock};

/// Largest number of fields of one multivariate detector.
pub const MAX_FIELDS: usize = 8;

/// Fewest learning samples: a shorter `learn` is raised to this.
pub const MIN_LEARN: u32 = 4 * MAX_FIELDS as u32;

/// Numbers in a snapshot: inflation sum, inflation, smoothed statistic,
/// mean, contributions, covariance and its factor.
const STATE_NUMBERS: usize = 3 + 2 * MAX_FIELDS + 2 * MAX_FIELDS * MAX_FIELDS;

/// Ridge added to the covariance's diagonal, relative to it.
const RIDGE: f64 = 1e-3;

/// Parameters of [`Multivariate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultivariateConfig {
    /// Samples learnt before anything is scored (SKAB's protocol: 400).
    pub learn: u32,
    /// Forgetting rate of the mean and covariance after learning.
    pub forget: f64,
    /// Rate of the EWMA of the distance.
    pub beta: f64,
    /// Shipped alert threshold on the score (p = 1e-5: 5/15).
    pub threshold: f64,
}

/// The shipped configuration.
pub const MULTIVARIATE_DEFAULT: MultivariateConfig = MultivariateConfig {
    learn: 400,
    forget: 0.001,
    beta: 0.1,
    threshold: 5.0 / 15.0,
};

impl Default for MultivariateConfig {
    fn default() -> Self {
        MULTIVARIATE_DEFAULT
    }
}

/// Per-field contributions to one score, as fractions of `D^2` in
/// `[0, 1]`, in the detector's field order (all 0 while learning, and for a
/// single-field detector, which has none).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Contributions {
    n: u8,
    share: [f32; MAX_FIELDS],
}

impl Contributions {
    /// Copies the first `MAX_FIELDS` of `c`.
    pub fn of(c: &[f64]) -> Self {
        let mut share = [0.0f32; MAX_FIELDS];
        let n = c.len().min(MAX_FIELDS);
        for (s, v) in share.iter_mut().zip(&c[..n]) {
            *s = *v as f32;
        }
        Contributions { n: n as u8, share }
    }

    /// The shares, one per field (empty for a single-field detector).
    pub fn as_slice(&self) -> &[f32] {
        &self.share[..self.n as usize]
    }

    /// Field indexes by decreasing share (ties: lower index first); only
    /// the first `as_slice().len()` entries count.
    pub fn ranked(&self) -> [u8; MAX_FIELDS] {
        let mut idx = [0u8; MAX_FIELDS];
        for (i, v) in idx.iter_mut().enumerate() {
            *v = i as u8;
        }
        let n = self.n as usize;
        // insertion sort: at most 8 fields
        for i in 1..n {
            let mut j = i;
            while j > 0 && self.share[idx[j] as usize] > self.share[idx[j - 1] as usize] {
                idx.swap(j, j - 1);
                j -= 1;
            }
        }
        idx
    }

    /// The leading contributors, the ones an alert names: the fields by
    /// decreasing share until together they hold 80 % of `D^2`, at most
    /// three. Gives the ranked indexes and how many lead (0 when there are
    /// no shares).
    pub fn leading(&self) -> ([u8; MAX_FIELDS], usize) {
        let idx = self.ranked();
        let mut sum = 0.0f32;
        let mut k = 0;
        while k < (self.n as usize).min(3) && sum < 0.8 {
            sum += self.share[idx[k] as usize];
            k += 1;
        }
        (idx, k)
    }
}

/// The multivariate detector for one key (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Multivariate {
    /// Its parameters.
    pub cfg: MultivariateConfig,
    /// Fields per sample.
    d: usize,
    pub(crate) clock: Clock,
    n: u64,
    mean: [f64; MAX_FIELDS],
    /// Covariance (Welford sums while learning the first half), row-major.
    cov: [f64; MAX_FIELDS * MAX_FIELDS],
    /// Cholesky factor of the (ridged) covariance, lower, row-major.
    chol: [f64; MAX_FIELDS * MAX_FIELDS],
    inflate_sum: f64,
    inflate: f64,
    smooth: f64,
    contrib: [f64; MAX_FIELDS],
}

impl Multivariate {
    /// Bytes of state per key.
    pub const STATE_BYTES: usize = core::mem::size_of::<Self>();

    /// A fresh detector for `fields` fields (clamped to 1..=MAX_FIELDS).
    pub fn new(cfg: &MultivariateConfig, fields: usize) -> Self {
        let mut cfg = *cfg;
        cfg.learn = cfg.learn.max(MIN_LEARN);
        Multivariate {
            cfg,
            d: fields.clamp(1, MAX_FIELDS),
            clock: Clock::default(),
            n: 0,
            mean: [0.0; MAX_FIELDS],
            cov: [0.0; MAX_FIELDS * MAX_FIELDS],
            chol: [0.0; MAX_FIELDS * MAX_FIELDS],
            inflate_sum: 0.0,
            inflate: 1.0,
            smooth: 0.0,
            contrib: [0.0; MAX_FIELDS],
        }
    }

    /// Fields per sample.
    pub fn fields(&self) -> usize {
        self.d
    }

    /// Samples with a repeated or backwards timestamp.
    pub fn timestamp_anomalies(&self) -> u64 {
        self.clock.bad_ts
    }

    /// Per-field contributions to the last score, fractions of `D^2` in
    /// `[0, 1]` (0 while learning); the first [`Multivariate::fields`] count.
    pub fn contributions(&self) -> &[f64] {
        &self.contrib[..self.d]
    }

    /// Feeds one sample of [`Multivariate::fields`] values. Returns the
    /// score in `[0, 1]` (0 while learning), or `None` when the slice has the
    /// wrong length or a value is not finite (state untouched).
    pub fn update(&mut self, ts: i64, x: &[f64]) -> Option<f64> {
        let d = self.d;
        if x.len() != d || x.iter().any(|v| !v.is_finite() || v.abs() > super::MAX_ABS) {
            return None;
        }
        self.clock.tick(ts);
        self.n = self.n.saturating_add(1);
        let half = (self.cfg.learn / 2) as u64;
        let learn = self.cfg.learn as u64;
        if self.n <= learn {
            // from the second half on, first judge the sample under the
            // model of the samples before (out of sample), then learn it
            if self.n > half {
                self.inflate_sum += self.distance(x);
            }
            // Welford: mean and co-moment sums over all learning samples
            let k = self.n as f64;
            let mut dx = [0.0; MAX_FIELDS];
            for i in 0..d {
                dx[i] = x[i] - self.mean[i];
                self.mean[i] += dx[i] / k;
            }
            for i in 0..d {
                for j in 0..d {
                    self.cov[i * MAX_FIELDS + j] += dx[i] * (x[j] - self.mean[j]);
                }
            }
            if self.n >= half && self.n % 16 == half % 16 || self.n == learn {
                // the model so far (covariance = co-moments / (n - 1))
                let saved = self.cov;
                let k1 = (k - 1.0).max(1.0);
                for v in &mut self.cov[..] {
                    *v /= k1;
                }
                self.factor();
                if self.n < learn {
                    self.cov = saved;
                }
            }
            if self.n == learn {
                let m = self.inflate_sum / (learn - half) as f64;
                self.inflate = (m / d as f64).max(1.0);
                self.smooth = d as f64;
            }
            self.contrib = [0.0; MAX_FIELDS];
            return Some(0.0);
        }
        let d2 = self.distance(x);
        let b = self.cfg.beta.clamp(1e-4, 1.0);
        self.smooth += b * (d2 / self.inflate - self.smooth);
        let score = surprise_to_unit(self.surprise(self.smooth));
        if score < self.cfg.threshold {
            self.adapt(x);
        }
        Some(score)
    }

    /// `-log10` of the healthy model's upper tail of the smoothed statistic.
    fn surprise(&self, s: f64) -> f64 {
        let b = self.cfg.beta.clamp(1e-4, 1.0);
        let c = b / (2.0 - b);
        let nu = self.d as f64 * (2.0 - b) / b;
        // Wilson–Hilferty: (chi2_nu / nu)^(1/3) ~ N(1 - 2/(9 nu), 2/(9 nu))
        let v = 2.0 / (9.0 * nu);
        let z = (libm::cbrt((s / c / nu).max(0.0)) - (1.0 - v)) / libm::sqrt(v);
        super::norm_neglog10_sf(z).max(0.0)
    }

    /// Squared Mahalanobis distance of `x`; fills the contributions.
    fn distance(&mut self, x: &[f64]) -> f64 {
        let d = self.d;
        let mut r = [0.0; MAX_FIELDS];
        for i in 0..d {
            r[i] = x[i] - self.mean[i];
        }
        // w = S^-1 r by two triangular solves with the Cholesky factor L
        let l = &self.chol;
        let mut y = [0.0; MAX_FIELDS];
        for i in 0..d {
            let mut s = r[i];
            for j in 0..i {
                s -= l[i * MAX_FIELDS + j] * y[j];
            }
            y[i] = s / l[i * MAX_FIELDS + i];
        }
        let mut w = [0.0; MAX_FIELDS];
        for i in (0..d).rev() {
            let mut s = y[i];
            for j in i + 1..d {
                s -= l[j * MAX_FIELDS + i] * w[j];
            }
            w[i] = s / l[i * MAX_FIELDS + i];
        }
        let mut d2 = 0.0;
        for i in 0..d {
            d2 += r[i] * w[i];
        }
        let d2 = if d2.is_finite() { d2.max(0.0) } else { 0.0 };
        for i in 0..d {
            let c = r[i] * w[i];
            self.contrib[i] = if d2 > 0.0 {
                (c / d2).clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        d2
    }

    /// Follows the healthy machine slowly (forgetting factor).
    fn adapt(&mut self, x: &[f64]) {
        let a = self.cfg.forget;
        if !(a > 0.0 && a < 1.0) {
            return;
        }
        let d = self.d;
        let mut dx = [0.0; MAX_FIELDS];
        for i in 0..d {
            dx[i] = x[i] - self.mean[i];
            self.mean[i] += a * dx[i];
        }
        for i in 0..d {
            for j in 0..d {
                let c = &mut self.cov[i * MAX_FIELDS + j];
                *c = (1.0 - a) * (*c + a * dx[i] * dx[j]);
            }
        }
        // refactor every 16 samples: the covariance moves slowly
        if self.n.is_multiple_of(16) {
            self.factor();
        }
    }

    /// Cholesky factor of the covariance plus a ridge; a degenerate field
    /// (constant while learning) gets unit variance instead.
    fn factor(&mut self) {
        let d = self.d;
        let mut a = [0.0; MAX_FIELDS * MAX_FIELDS];
        let mut avg = 0.0;
        for i in 0..d {
            avg += self.cov[i * MAX_FIELDS + i].max(0.0);
        }
        let floor = (avg / d as f64 * 1e-9).max(1e-300);
        for i in 0..d {
            for j in 0..d {
                a[i * MAX_FIELDS + j] = self.cov[i * MAX_FIELDS + j];
            }
            let v = &mut a[i * MAX_FIELDS + i];
            *v = if *v > floor { *v * (1.0 + RIDGE) } else { 1.0 };
        }
        let l = &mut self.chol;
        *l = [0.0; MAX_FIELDS * MAX_FIELDS];
        for i in 0..d {
            for j in 0..=i {
                let mut s = a[i * MAX_FIELDS + j];
                for k in 0..j {
                    s -= l[i * MAX_FIELDS + k] * l[j * MAX_FIELDS + k];
                }
                if i == j {
                    // the ridge keeps this positive; guard against rounding
                    let diag = a[i * MAX_FIELDS + i];
                    l[i * MAX_FIELDS + i] = libm::sqrt(s.max(diag * 1e-6));
                } else {
                    l[i * MAX_FIELDS + j] = s / l[j * MAX_FIELDS + j];
                }
            }
        }
    }

    /// Writes the state (configuration included) as CBOR:
    /// `[d, clock, n, [learn, forget, beta, threshold], numbers]`.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(5)?.u32(self.d as u32)?;
        self.clock.encode(e)?;
        e.u64(self.n)?;
        enc_blob(
            e,
            &[
                self.cfg.learn as f64,
                self.cfg.forget,
                self.cfg.beta,
                self.cfg.threshold,
            ],
        )?;
        let mut v = [0.0f64; STATE_NUMBERS];
        v[0] = self.inflate_sum;
        v[1] = self.inflate;
        v[2] = self.smooth;
        let mut at = 3;
        for src in [
            &self.mean[..],
            &self.contrib[..],
            &self.cov[..],
            &self.chol[..],
        ] {
            v[at..at + src.len()].copy_from_slice(src);
            at += src.len();
        }
        enc_blob(e, &v[..at])
    }

    /// Reads state written by [`Multivariate::encode`].
    ///
    /// # Errors
    /// Malformed input, a field count outside `1..=MAX_FIELDS`, or a
    /// non-finite number.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 5)?;
        let fields = d.u32()? as usize;
        if !(1..=MAX_FIELDS).contains(&fields) {
            return Err(DecError::message("multivariate: field count out of range"));
        }
        let clock = Clock::decode(d)?;
        let n = d.u64()?;
        let mut c = [0.0f64; 4];
        dec_blob(d, &mut c)?;
        if !c.iter().all(|x| x.is_finite() && *x >= 0.0) || c[0] > u32::MAX as f64 {
            return Err(DecError::message("multivariate: bad configuration"));
        }
        let cfg = MultivariateConfig {
            learn: c[0] as u32,
            forget: c[1],
            beta: c[2],
            threshold: c[3],
        };
        let mut m = Multivariate::new(&cfg, fields);
        if m.cfg != cfg || m.d != fields {
            return Err(DecError::message(
                "multivariate: configuration out of range",
            ));
        }
        m.clock = clock;
        m.n = n;
        let mut v = [0.0f64; STATE_NUMBERS];
        dec_blob(d, &mut v)?;
        if !v.iter().all(|x| x.is_finite()) {
            return Err(DecError::message("multivariate: non-finite state"));
        }
        m.inflate_sum = v[0];
        m.inflate = v[1];
        m.smooth = v[2];
        let mut at = 3;
        for dst in [
            &mut m.mean[..],
            &mut m.contrib[..],
            &mut m.cov[..],
            &mut m.chol[..],
        ] {
            let k = dst.len();
            dst.copy_from_slice(&v[at..at + k]);
            at += k;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn gauss(&mut self) -> f64 {
            let mut u = || {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            libm::sqrt(-2.0 * libm::log(a)) * libm::cos(core::f64::consts::TAU * b)
        }
    }

    /// Two strongly correlated fields: a sample that keeps each field inside
    /// its own range but breaks the correlation is flagged and blamed on
    /// the fields, a healthy stretch is not.
    #[test]
    fn broken_correlation_is_flagged_in_range() {
        let cfg = MultivariateConfig::default();
        let mut m = Multivariate::new(&cfg, 3);
        let mut r = Rng(9);
        let mut healthy_max = 0.0f64;
        for i in 0..3000 {
            let l = r.gauss();
            let x = [l + 0.1 * r.gauss(), 2.0 * l + 0.1 * r.gauss(), r.gauss()];
            let s = m.update(i, &x).unwrap();
            if i < 400 {
                assert_eq!(s, 0.0);
            }
            healthy_max = healthy_max.max(s);
        }
        // 2,600 healthy samples: nothing near a tail probability of 1e-6
        assert!(healthy_max < 6.0 / 16.0, "healthy max {healthy_max}");
        let mut hit = None;
        for i in 0..50 {
            let l = r.gauss();
            // field 1 no longer follows field 0 (each stays within +-3 sigma)
            let x = [l + 0.1 * r.gauss(), -2.0 * l + 0.1 * r.gauss(), r.gauss()];
            let s = m.update(3000 + i, &x).unwrap();
            if s >= cfg.threshold && hit.is_none() {
                hit = Some(i);
                let c = m.contributions();
                assert!(c[2] < c[0] + c[1], "blamed the wrong field: {c:?}");
            }
        }
        assert!(hit.is_some_and(|i| i < 20), "{hit:?}");
    }

    #[test]
    fn snapshot_restores_and_continues_bit_for_bit() {
        let mut r = Rng(3);
        let mut xs = alloc::vec::Vec::new();
        for _ in 0..1200 {
            let l = r.gauss();
            xs.push([l, 0.5 * l + 0.2 * r.gauss(), r.gauss(), 3.0 + r.gauss()]);
        }
        for cut in [5usize, 250, 700] {
            let mut a = Multivariate::new(&MultivariateConfig::default(), 4);
            for (i, x) in xs[..cut].iter().enumerate() {
                a.update(i as i64, x);
            }
            let mut buf = alloc::vec::Vec::new();
            a.encode(&mut Encoder::new(&mut buf)).unwrap();
            let mut b = Multivariate::decode(&mut Decoder::new(&buf)).unwrap();
            assert_eq!(a, b);
            for (i, x) in xs.iter().enumerate().skip(cut) {
                let (sa, sb) = (a.update(i as i64, x), b.update(i as i64, x));
                assert_eq!(sa.map(f64::to_bits), sb.map(f64::to_bits));
            }
            for k in [0, 1, buf.len() / 2, buf.len() - 1] {
                assert!(Multivariate::decode(&mut Decoder::new(&buf[..k])).is_err());
            }
        }
    }

    #[test]
    fn bad_input_leaves_state_untouched() {
        let mut m = Multivariate::new(&MultivariateConfig::default(), 2);
        for i in 0..500 {
            m.update(i, &[i as f64 % 7.0, (i * 3) as f64 % 11.0]);
        }
        let before = m.clone();
        assert_eq!(m.update(1, &[f64::NAN, 1.0]), None);
        assert_eq!(m.update(1, &[1.0]), None);
        assert_eq!(m.update(1, &[1.0, 2.0, 3.0]), None);
        assert_eq!(m, before);
        // a constant field does not break the factorisation
        let mut c = Multivariate::new(&MultivariateConfig::default(), 2);
        for i in 0..1000 {
            let s = c.update(i, &[5.0, (i % 13) as f64]).unwrap();
            assert!((0.0..=1.0).contains(&s));
        }
    }
}
