//! Peaks-over-threshold calibration: a detector's own nonconformity values
//! turned into tail probabilities, per key, in O(1) memory.
//!
//! [`PotTail`] follows one stream of nonconformity values `x >= 0` (higher =
//! stranger). It tracks a high quantile `u` of the stream (level `1 - Q`,
//! stochastic approximation, step proportional to the stream's own scale)
//! and the exceedances `y = x - u` by exponentially weighted first and second
//! moments; a generalised Pareto distribution fitted to them by the method of
//! moments, or Hill's estimate `E ln(x / u)` when larger (moments alone
//! underestimate a heavy tail with a short memory; Hill errs on the safe,
//! heavy side), shape clipped to `[0, XI_MAX]` (never a bounded tail, so a
//! value beyond the data is improbable, not impossible), gives
//!
//! ```text
//! P(X > x) = Q (1 + xi (x - u) / sigma)^(-1 / xi)      x > u
//! ```
//!
//! (exponential at `xi = 0`) and `Q^(x / u)` below `u`. Until
//! [`PotTail::WARM`] exceedances and [`PotTail::MIN_N`] samples have been
//! seen the tail is not trusted and
//! the probability is floored at `1 / (n + 1)`, the smallest tail
//! probability `n` exchangeable samples can certify. 56 bytes.

use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

use super::{dec_blob, enc_blob};

/// Tail level: `u` is the `1 - Q` quantile of the stream.
const Q: f64 = 0.02;
/// Largest fitted shape (moments need `xi < 1/2`).
const XI_MAX: f64 = 0.45;
/// Weight of the Hill estimate (biased high on light tails).
const HILL_WEIGHT: f64 = 1.0;
/// Smallest fitted shape (exponential): never a bounded tail.
const XI_MIN: f64 = 0.0;
/// Forgetting rate of the exceedance moments (per exceedance): about the
/// last 1/ALPHA_EXC exceedances, i.e. ~2,500 samples at Q = 0.02.
const ALPHA_EXC: f64 = 0.02;
/// Forgetting rate of the stream's scale (per sample).
const ALPHA_SCALE: f64 = 0.002;
/// Quantile step as a fraction of the scale.
const STEP: f64 = 0.05;

/// A generalised-Pareto tail of one nonconformity stream (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PotTail {
    /// Current threshold (the `1 - Q` quantile estimate).
    u: f64,
    /// Mean of the stream (for the step's scale).
    scale: f64,
    /// EW mean of the excesses over `u`.
    m1: f64,
    /// EW mean of the squared excesses.
    m2: f64,
    /// EW mean of `ln(x / u)` over exceedances (Hill's shape estimate).
    hill: f64,
    /// Samples seen.
    n: u64,
    /// Exceedances seen.
    k: u64,
}

impl PotTail {
    /// Exceedances before the fitted tail is trusted.
    pub const WARM: u64 = 20;
    /// Samples before the fitted tail is trusted (`WARM / Q`).
    pub const MIN_N: u64 = 1000;

    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples seen.
    pub fn seen(&self) -> u64 {
        self.n
    }

    /// The tail probability `P(X >= x)` under the model fitted so far
    /// (call before [`PotTail::learn`] with the same value: a value is
    /// judged against its past).
    pub fn p(&self, x: f64) -> f64 {
        let x = if x.is_finite() { x.max(0.0) } else { f64::MAX };
        let floor = 1.0 / (self.n as f64 + 1.0);
        if self.k < Self::WARM || self.n < Self::MIN_N || self.u.is_nan() || self.u <= 0.0 {
            // not enough tail yet: only what n exchangeable samples certify
            return floor.max(if self.u > 0.0 && x <= self.u { Q } else { 0.0 });
        }
        let p = if x <= self.u {
            libm::pow(Q, x / self.u)
        } else {
            let (xi, sigma) = self.gpd();
            let y = x - self.u;
            if xi < 1e-6 {
                Q * libm::exp(-y / sigma)
            } else {
                Q * libm::pow(1.0 + xi * y / sigma, -1.0 / xi)
            }
        };
        p.clamp(1e-300, 1.0)
    }

    /// `-log10` of [`PotTail::p`], finite.
    pub fn surprise(&self, x: f64) -> f64 {
        -libm::log10(self.p(x))
    }

    /// Shape and scale of the fitted generalised Pareto distribution.
    fn gpd(&self) -> (f64, f64) {
        let m = self.m1.max(1e-12);
        let var = (self.m2 - m * m).max(1e-24);
        let r = m * m / var;
        // the larger of the moment and Hill estimates: moments alone
        // underestimate a heavy tail's shape with a short memory
        let xi = (0.5 * (1.0 - r))
            .max(HILL_WEIGHT * self.hill)
            .clamp(XI_MIN, XI_MAX);
        let sigma = (m * (1.0 - xi)).max(1e-12);
        (xi, sigma)
    }

    /// Adds one value of the stream.
    pub fn learn(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let x = x.max(0.0);
        self.n = self.n.saturating_add(1);
        let a = (1.0 / self.n as f64).max(ALPHA_SCALE);
        self.scale += a * (x - self.scale);
        if self.n == 1 {
            self.u = x;
            return;
        }
        if x > self.u {
            let y = x - self.u;
            self.k = self.k.saturating_add(1);
            let b = (1.0 / self.k as f64).max(ALPHA_EXC);
            self.m1 += b * (y - self.m1);
            self.m2 += b * (y * y - self.m2);
            if self.u > 0.0 {
                self.hill += b * (libm::log(x / self.u) - self.hill);
            }
            // a far outlier moves the quantile by one step, not by its size
            self.u += STEP * (self.scale + self.m1).max(1e-12) * (1.0 - Q);
        } else {
            self.u -= STEP * (self.scale + self.m1).max(1e-12) * Q;
            if self.u < 0.0 {
                self.u = 0.0;
            }
        }
    }

    /// Writes the model as CBOR (one byte string).
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        enc_blob(
            e,
            &[
                self.u,
                self.scale,
                self.m1,
                self.m2,
                self.hill,
                self.n as f64,
                self.k as f64,
            ],
        )
    }

    /// Reads a model written by [`PotTail::encode`].
    ///
    /// # Errors
    /// Malformed input or non-finite / negative values.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        let mut f = [0.0f64; 7];
        dec_blob(d, &mut f)?;
        if !f.iter().all(|v| v.is_finite() && *v >= 0.0) {
            return Err(DecError::message("tail model holds a bad value"));
        }
        Ok(PotTail {
            u: f[0],
            scale: f[1],
            m1: f[2],
            m2: f[3],
            hill: f[4],
            n: f[5] as u64,
            k: f[6] as u64,
        })
    }
}

/// Samples within which a calibrated-rare change and a Kestrel raise
/// count as one event (banded Kestrel, issue 15).
pub const PAIR: u32 = 100;
/// Inside an excursion a lifted score must have this many times the odds
/// of the last one (as [`super::AlertGate::BREAK_ODDS`]).
pub const BAND_RISE: f64 = 2.0;

/// Change stages and the banding of banded Kestrel (`kind =
/// "kestrel_banded"`, issue 15): a two-sided CUSUM (k = 1/2) of residuals
/// against a slow baseline, clipped at 3 sigma (level shifts, drift), and a
/// one-sided CUSUM of the standardized `ln z^2` (more noise), each read as a
/// tail probability through Siegmund's average run length (p = 1 / ARL).
/// Autocorrelation is measured: the level stage's residuals are scaled by
/// how much more an EWMA of them (rate 0.05) varies than it would for
/// independent ones, the variance stage's by the lag-1 autocorrelation; the
/// baseline's scale follows 5x slower than its level. 112 B.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stages {
    m: f64,
    v: f64,
    up: f64,
    down: f64,
    var: f64,
    c1: f64,
    c0: f64,
    zl: f64,
    sm: f64,
    sv: f64,
    /// Peak calibrated score of the current calibrated-rare excursion.
    u_peak: f64,
    /// Score of the last lifted sample (0 = re-armed).
    peak: f64,
    n: u64,
    /// Samples since Kestrel raised, since the composite was rare.
    since_k: u32,
    since_u: u32,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            m: 0.0,
            v: 0.0,
            up: 0.0,
            down: 0.0,
            var: 0.0,
            c1: 0.0,
            c0: 1.0,
            zl: 0.0,
            sm: 0.0,
            sv: 0.05 / 1.95,
            u_peak: 0.0,
            peak: 0.0,
            n: 0,
            since_k: u32::MAX,
            since_u: u32::MAX,
        }
    }
}

impl Stages {
    /// Feeds one value; returns the larger of the two stages' surprises
    /// (`-log10 p`, 0 until 500 samples).
    pub fn update(&mut self, x: f64) -> f64 {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.m = x;
            return 0.0;
        }
        let a = (1.0 / self.n as f64).max(0.01);
        let sd = libm::sqrt(self.v).max(1e-9);
        let z = ((x - self.m) / sd).clamp(-50.0, 50.0);
        let rho = (self.c1 / self.c0.max(1e-12)).clamp(0.0, 0.99);
        if self.n < 60 {
            self.learn(a, x, z);
            return 0.0;
        }
        let zc = z.clamp(-3.0, 3.0);
        const B: f64 = 0.05;
        self.sm += B * (zc - self.sm);
        let f = libm::sqrt(B / (2.0 - B) / self.sv.max(1e-12)).min(1.0);
        let zc = zc * f;
        self.up = (self.up + zc - 0.5).max(0.0);
        self.down = (self.down - zc - 0.5).max(0.0);
        let r2 = rho * rho;
        let u = (libm::log(z * z + 1e-12) + 1.27) / 2.22 * libm::sqrt((1.0 - r2) / (1.0 + r2));
        self.var = (self.var + u.min(6.0) - 0.5).max(0.0);
        let cm = self.up.max(self.down);
        // Siegmund: CUSUM (k = 1/2) average run length to h
        let arl = |s: f64, sides: f64| {
            let h = s + 1.166;
            ((libm::exp(h) - 1.0 - h) / 0.5 / sides).max(1.0)
        };
        let lm = libm::log10(arl(cm, 2.0));
        let lv = libm::log10(arl(self.var, 1.0));
        self.learn(a, x, z);
        self.sv += 0.001 * (self.sm * self.sm - self.sv);
        if self.n < 500 {
            return 0.0;
        }
        lm.max(lv)
    }

    fn learn(&mut self, a: f64, x: f64, z: f64) {
        let d = x - self.m;
        self.m += a * d;
        let av = (a * 0.2).max(1.0 / self.n as f64).min(a);
        self.v = (1.0 - av) * (self.v + av * d * d);
        self.c1 += a * (z * self.zl - self.c1);
        self.c0 += a * (z * z - self.c0);
        self.zl = z;
    }

    /// Banding: `plain` (Kestrel's score) is mapped to `t x plain` in
    /// [0, t); a sample is lifted to the calibrated score `u` (>= t) when it
    /// is calibrated-rare and Kestrel agrees: it raised (`plain >= raise`)
    /// within [`PAIR`] samples, or its likelihood is elevated now
    /// (`plain >= elevated`); once per excursion unless the odds at least
    /// double ([`BAND_RISE`]).
    pub fn band(&mut self, plain: f64, u: f64, t: f64, raise: f64, elevated: f64) -> f64 {
        let k = plain.min(0.999_999);
        self.since_k = self.since_k.saturating_add(1);
        self.since_u = self.since_u.saturating_add(1);
        let k_ev = k >= raise;
        if k_ev {
            self.since_k = 0;
        }
        if u >= t {
            if self.since_u > PAIR {
                self.u_peak = 0.0;
            }
            self.since_u = 0;
            self.u_peak = self.u_peak.max(u);
        }
        let both =
            (k_ev && self.since_u <= PAIR) || (u >= t && (self.since_k <= PAIR || k >= elevated));
        let odds = |s: f64| s / (1.0 - s);
        let lifted =
            if both && (self.peak == 0.0 || odds(self.u_peak) >= BAND_RISE * odds(self.peak)) {
                self.peak = self.u_peak;
                self.u_peak
            } else {
                if self.since_u > PAIR && self.since_k > PAIR {
                    self.peak = 0.0;
                }
                0.0
            };
        (t * k).max(lifted)
    }

    /// Writes the state as CBOR (one byte string).
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        enc_blob(
            e,
            &[
                self.m,
                self.v,
                self.up,
                self.down,
                self.var,
                self.c1,
                self.c0,
                self.zl,
                self.sm,
                self.sv,
                self.u_peak,
                self.peak,
                self.n as f64,
                self.since_k as f64,
                self.since_u as f64,
            ],
        )
    }

    /// Reads a state written by [`Stages::encode`].
    ///
    /// # Errors
    /// Malformed input or non-finite values.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        let mut f = [0.0f64; 15];
        dec_blob(d, &mut f)?;
        if !f.iter().all(|v| v.is_finite()) || f[1] < 0.0 || f[12..].iter().any(|v| *v < 0.0) {
            return Err(DecError::message("change stages hold a bad value"));
        }
        let [m, v, up, down, var, c1, c0, zl, sm, sv, u_peak, peak, n, since_k, since_u] = f;
        Ok(Stages {
            m,
            v,
            up,
            down,
            var,
            c1,
            c0,
            zl,
            sm,
            sv,
            u_peak,
            peak,
            n: n as u64,
            since_k: since_k as u32,
            since_u: since_u as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn u01(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Fitted on exponential and Pareto samples, the model's tail
    /// probabilities at 1e-3 and 1e-5 are never optimistic by more than a
    /// factor of 3 (that would raise false alarms), and conservative by at
    /// most a factor of 15 (the Hill shape is biased high on light tails).
    #[test]
    fn tail_probabilities_match_known_laws() {
        for (name, inv) in [
            ("exp", (|u: f64| -libm::log(u)) as fn(f64) -> f64),
            ("pareto3", |u: f64| libm::pow(u, -1.0 / 3.0) - 1.0),
        ] {
            let mut t = PotTail::new();
            let mut r = Rng(42);
            for _ in 0..200_000 {
                t.learn(inv(1.0 - r.u01()));
            }
            for p in [1e-3, 1e-5] {
                let est = t.p(inv(p));
                assert!(
                    est > p / 3.0 && est < p * 15.0,
                    "{name}: p {p} estimated {est}"
                );
            }
        }
    }

    #[test]
    fn young_model_certifies_no_more_than_its_sample_count() {
        let mut t = PotTail::new();
        for i in 0..50 {
            t.learn((i % 7) as f64);
        }
        assert!(t.p(1e9) >= 1.0 / 51.0);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut t = PotTail::new();
        let mut r = Rng(7);
        for _ in 0..5000 {
            t.learn(r.u01() * 3.0);
        }
        let mut buf = alloc::vec::Vec::new();
        t.encode(&mut Encoder::new(&mut buf)).unwrap();
        let back = PotTail::decode(&mut Decoder::new(&buf)).unwrap();
        assert_eq!(back, t);
    }
}
