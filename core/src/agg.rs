//! Incremental aggregates over a window.
//!
//! [`Moments`] keeps count, sum, min, max, max |x| and the central moments up
//! to the fourth (Welford/Pébay updates, Chan's formulas to merge), so every
//! scalar aggregate weir offers is derived from one fixed-size, mergeable
//! state. [`Tier`] lets an operator skip the higher moments it does not need:
//! the cheapest tier is a handful of adds per sample.

use core::fmt;

/// One aggregate an operator can emit for a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggKind {
    /// Number of samples whose value is not `NULL` (SQL's `COUNT(x)`).
    Count,
    /// Number of samples, those whose value is `NULL` included (SQL's
    /// `COUNT(*)`; a nullable field, [`crate::spec::SourceSpec::nullable`]);
    /// written `rows`. Without `NULL`s it equals `Count`.
    Rows,
    /// Sum of values (summed in arrival order).
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean (Welford).
    Mean,
    /// Population standard deviation (divides by n).
    Stddev,
    /// Sample standard deviation (divides by n - 1; NaN for n < 2).
    StddevSample,
    /// Population variance.
    Variance,
    /// Root mean square, sqrt(Σx²/n).
    Rms,
    /// Peak-to-peak, max - min.
    PeakToPeak,
    /// Pearson kurtosis n·M4/M2² (3 for a normal distribution, NaN when the
    /// window is constant). Impulsive vibration (bearing faults) raises it.
    Kurtosis,
    /// Crest factor, max|x| / RMS (√2 for a pure sine).
    CrestFactor,
    /// Approximate p-th percentile (p in [0, 100]) from a bounded sketch (see
    /// [`crate::sketch`]); written `p95`, `p99.9` in pipeline files.
    Percentile(f64),
    /// Number of distinct values, exact up to a bound per window (SQL's
    /// `COUNT(DISTINCT x)`; `crate::distinct`); written `count_distinct`.
    CountDistinct,
}

/// How much per-sample work the aggregates of an operator need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// count, sum, min, max.
    Basic,
    /// plus mean and M2 (Welford).
    Second,
    /// plus M3 and M4.
    Fourth,
}

impl AggKind {
    /// The tier this aggregate needs.
    pub fn tier(self) -> Tier {
        match self {
            AggKind::Count
            | AggKind::Rows
            | AggKind::Sum
            | AggKind::Min
            | AggKind::Max
            | AggKind::PeakToPeak
            | AggKind::CountDistinct => Tier::Basic,
            AggKind::Kurtosis => Tier::Fourth,
            _ => Tier::Second,
        }
    }

    /// Parses an aggregate name as written in a pipeline file: `count`, `rows`, `sum`,
    /// `min`, `max`, `mean`, `stddev`, `stddev_sample`, `variance`, `rms`,
    /// `p2p`, `kurtosis`, `crest`, and quantiles as `p50`, `p99`, `p99.9`.
    pub fn parse(name: &str) -> Option<AggKind> {
        Some(match name {
            "count" => AggKind::Count,
            "rows" => AggKind::Rows,
            "count_distinct" => AggKind::CountDistinct,
            "sum" => AggKind::Sum,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "mean" => AggKind::Mean,
            "stddev" => AggKind::Stddev,
            "stddev_sample" => AggKind::StddevSample,
            "variance" => AggKind::Variance,
            "rms" => AggKind::Rms,
            "p2p" | "peak_to_peak" => AggKind::PeakToPeak,
            "kurtosis" => AggKind::Kurtosis,
            "crest" | "crest_factor" => AggKind::CrestFactor,
            _ => {
                let pct: f64 = name.strip_prefix('p')?.parse().ok()?;
                if !(0.0..=100.0).contains(&pct)
                    || !name[1..].starts_with(|c: char| c.is_ascii_digit())
                {
                    return None;
                }
                AggKind::Percentile(pct)
            }
        })
    }
}

impl fmt::Display for AggKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AggKind::Count => "count",
            AggKind::Rows => "rows",
            AggKind::CountDistinct => "count_distinct",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Mean => "mean",
            AggKind::Stddev => "stddev",
            AggKind::StddevSample => "stddev_sample",
            AggKind::Variance => "variance",
            AggKind::Rms => "rms",
            AggKind::PeakToPeak => "p2p",
            AggKind::Kurtosis => "kurtosis",
            AggKind::CrestFactor => "crest",
            AggKind::Percentile(p) => return write!(f, "p{p}"),
        };
        f.write_str(s)
    }
}

/// Mergeable running moments of a stream of finite values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub n: u64,
    /// Plain sum, in arrival order.
    pub sum: f64,
    /// Minimum (+inf when empty).
    pub min: f64,
    /// Maximum (-inf when empty).
    pub max: f64,
    /// Running mean (tier `Second` and up).
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Third central moment sum (tier `Fourth`).
    pub m3: f64,
    /// Fourth central moment sum (tier `Fourth`).
    pub m4: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self::new()
    }
}

impl Moments {
    /// Empty moments.
    pub const fn new() -> Self {
        Moments {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            m3: 0.0,
            m4: 0.0,
        }
    }

    /// Adds one finite value, doing the work of `tier`.
    #[inline(always)]
    pub fn push(&mut self, x: f64, tier: Tier) {
        // Through i64: a single instruction on x86-64, unlike u64 → f64.
        let n1 = self.n as i64 as f64;
        self.n += 1;
        self.sum += x;
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        if tier == Tier::Basic {
            return;
        }
        let n = n1 + 1.0;
        let delta = x - self.mean;
        let delta_n = delta / n;
        let term1 = delta * delta_n * n1;
        self.mean += delta_n;
        if tier == Tier::Fourth {
            let delta_n2 = delta_n * delta_n;
            self.m4 += term1 * delta_n2 * (n * n - 3.0 * n + 3.0) + 6.0 * delta_n2 * self.m2
                - 4.0 * delta_n * self.m3;
            self.m3 += term1 * delta_n * (n - 2.0) - 3.0 * delta_n * self.m2;
        }
        self.m2 += term1;
    }

    /// Merges `other` into `self` (Chan et al. / Pébay pairwise formulas).
    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let na = self.n as f64;
        let nb = o.n as f64;
        let n = na + nb;
        let d = o.mean - self.mean;
        let d2 = d * d;
        let m2 = self.m2 + o.m2 + d2 * na * nb / n;
        let m3 = self.m3
            + o.m3
            + d2 * d * na * nb * (na - nb) / (n * n)
            + 3.0 * d * (na * o.m2 - nb * self.m2) / n;
        let m4 = self.m4
            + o.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6.0 * d2 * (na * na * o.m2 + nb * nb * self.m2) / (n * n)
            + 4.0 * d * (na * o.m3 - nb * self.m3) / n;
        self.mean += d * nb / n;
        self.m2 = m2;
        self.m3 = m3;
        self.m4 = m4;
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Population variance (NaN when empty).
    pub fn variance(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let v = self.m2 / self.n as f64;
        if v < 0.0 {
            0.0
        } else {
            v
        }
    }

    /// The value of a scalar aggregate (NaN where undefined; `Percentile`
    /// and `CountDistinct` are not scalar and yield NaN here).
    #[inline]
    pub fn get(&self, kind: AggKind) -> f64 {
        let n = self.n as f64;
        if self.n == 0 {
            return if matches!(kind, AggKind::Count | AggKind::Rows | AggKind::Sum) {
                0.0
            } else {
                f64::NAN
            };
        }
        match kind {
            // Moments see no NULLs: the window adds its own (`OpenWindow`).
            AggKind::Count | AggKind::Rows => n,
            AggKind::Sum => self.sum,
            AggKind::Min => self.min,
            AggKind::Max => self.max,
            AggKind::Mean => self.mean,
            AggKind::Variance => self.variance(),
            AggKind::Stddev => libm::sqrt(self.variance()),
            AggKind::StddevSample => {
                if self.n < 2 {
                    f64::NAN
                } else {
                    libm::sqrt((self.m2 / (n - 1.0)).max(0.0))
                }
            }
            AggKind::Rms => self.rms(),
            AggKind::PeakToPeak => self.max - self.min,
            AggKind::Kurtosis => {
                if self.m2 <= 0.0 {
                    f64::NAN
                } else {
                    n * self.m4 / (self.m2 * self.m2)
                }
            }
            AggKind::CrestFactor => {
                let r = self.rms();
                if r > 0.0 {
                    self.max.abs().max(self.min.abs()) / r
                } else {
                    f64::NAN
                }
            }
            AggKind::Percentile(_) | AggKind::CountDistinct => f64::NAN,
        }
    }

    fn rms(&self) -> f64 {
        let n = self.n as f64;
        let sumsq = self.m2 + n * self.mean * self.mean;
        libm::sqrt((sumsq / n).max(0.0))
    }

    /// Writes the moments as a CBOR array.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(8)?
            .u64(self.n)?
            .f64(self.sum)?
            .f64(self.min)?
            .f64(self.max)?
            .f64(self.mean)?
            .f64(self.m2)?
            .f64(self.m3)?
            .f64(self.m4)?;
        Ok(())
    }

    /// Reads moments written by [`Moments::encode`].
    pub fn decode(d: &mut minicbor::Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        if d.array()? != Some(8) {
            return Err(minicbor::decode::Error::message(
                "moments: expected array of 8",
            ));
        }
        Ok(Moments {
            n: d.u64()?,
            sum: d.f64()?,
            min: d.f64()?,
            max: d.f64()?,
            mean: d.f64()?,
            m2: d.f64()?,
            m3: d.f64()?,
            m4: d.f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn naive(xs: &[f64]) -> (f64, f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let m2: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
        let m4: f64 = xs.iter().map(|x| (x - mean).powi(4)).sum();
        (mean, m2 / n, n * m4 / (m2 * m2))
    }

    #[test]
    fn moments_match_two_pass_and_merge_matches_push() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 / 7.0 + 1e6)
            .collect();
        let mut m = Moments::new();
        for &x in &xs {
            m.push(x, Tier::Fourth);
        }
        let (mean, var, kurt) = naive(&xs);
        assert!((m.get(AggKind::Mean) - mean).abs() < 1e-6);
        assert!((m.get(AggKind::Variance) - var).abs() / var < 1e-9);
        assert!((m.get(AggKind::Kurtosis) - kurt).abs() < 1e-6);
        let (a, b) = xs.split_at(377);
        let (mut ma, mut mb) = (Moments::new(), Moments::new());
        a.iter().for_each(|&x| ma.push(x, Tier::Fourth));
        b.iter().for_each(|&x| mb.push(x, Tier::Fourth));
        ma.merge(&mb);
        for k in [
            AggKind::Mean,
            AggKind::Variance,
            AggKind::Kurtosis,
            AggKind::Rms,
        ] {
            let (x, y) = (ma.get(k), m.get(k));
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{k}: {x} vs {y}");
        }
        assert_eq!(ma.n, 1000);
        assert_eq!(ma.get(AggKind::Min), m.get(AggKind::Min));
    }

    #[test]
    fn sine_has_crest_sqrt2_and_kurtosis_1_5() {
        let mut m = Moments::new();
        for i in 0..10_000 {
            m.push(
                libm::sin(i as f64 * core::f64::consts::TAU / 100.0),
                Tier::Fourth,
            );
        }
        assert!((m.get(AggKind::CrestFactor) - core::f64::consts::SQRT_2).abs() < 1e-3);
        assert!((m.get(AggKind::Kurtosis) - 1.5).abs() < 1e-3);
    }

    #[test]
    fn parse_names_round_trip() {
        for n in [
            "count", "mean", "stddev", "p2p", "kurtosis", "crest", "p99", "p99.9", "p50",
        ] {
            let k = AggKind::parse(n).unwrap();
            assert_eq!(AggKind::parse(&k.to_string()), Some(k), "{n}");
        }
        assert_eq!(AggKind::parse("p101"), None);
        assert_eq!(AggKind::parse("p-1"), None);
        assert_eq!(AggKind::parse("median"), None);
    }

    #[test]
    fn empty_and_constant_windows_do_not_divide_by_zero_silently() {
        let m = Moments::new();
        assert_eq!(m.get(AggKind::Count), 0.0);
        assert!(m.get(AggKind::Mean).is_nan());
        let mut c = Moments::new();
        c.push(5.0, Tier::Fourth);
        c.push(5.0, Tier::Fourth);
        assert_eq!(c.get(AggKind::Stddev), 0.0);
        assert!(c.get(AggKind::Kurtosis).is_nan());
        assert_eq!(c.get(AggKind::StddevSample), 0.0);
    }
}
