//! Z-score against an exponentially weighted baseline.

use super::Verdict;

/// EWMA mean and variance of a key's earlier values; flags a value more than
/// `k` standard deviations away once `warmup` values have been seen.
///
/// Exactly W1's rule: the first value sets mean = x, var = 0; after that
/// d = x − mean, flag = seen ≥ warmup ∧ |d| > k·√var, then
/// mean += α·d, var = (1 − α)·(var + α·d²). `seen` counts earlier values.
/// The score is min(1, z / 2k) with z = |d| / √var, so the flag threshold
/// sits at 0.5.
#[derive(Clone, Debug, PartialEq)]
pub struct EwmaBaseline {
    alpha: f64,
    k: f64,
    warmup: u32,
    seen: u32,
    mean: f64,
    var: f64,
}

impl EwmaBaseline {
    /// A fresh baseline.
    pub fn new(alpha: f64, k: f64, warmup: u32) -> Self {
        EwmaBaseline {
            alpha,
            k,
            warmup,
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// Scores `x` against the baseline, then folds it in.
    pub fn update(&mut self, x: f64) -> Verdict {
        if self.seen == 0 {
            self.seen = 1;
            self.mean = x;
            self.var = 0.0;
            return Verdict {
                score: 0.0,
                flag: false,
            };
        }
        let d = x - self.mean;
        let sd = libm::sqrt(self.var);
        let ad = if d < 0.0 { -d } else { d };
        let flag = self.seen >= self.warmup && ad > self.k * sd;
        let z = if sd > 0.0 {
            ad / sd
        } else if ad > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        let score = if self.seen >= self.warmup {
            (z / (2.0 * self.k)).min(1.0)
        } else {
            0.0
        };
        self.mean += self.alpha * d;
        self.var = (1.0 - self.alpha) * (self.var + self.alpha * d * d);
        self.seen = self.seen.saturating_add(1);
        Verdict { score, flag }
    }

    /// Writes the state as CBOR.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(6)?
            .f64(self.alpha)?
            .f64(self.k)?
            .u32(self.warmup)?
            .u32(self.seen)?
            .f64(self.mean)?
            .f64(self.var)?;
        Ok(())
    }

    /// Reads state written by [`EwmaBaseline::encode`].
    pub fn decode(d: &mut minicbor::Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        if d.array()? != Some(6) {
            return Err(minicbor::decode::Error::message(
                "ewma baseline: expected array of 6",
            ));
        }
        Ok(EwmaBaseline {
            alpha: d.f64()?,
            k: d.f64()?,
            warmup: d.u32()?,
            seen: d.u32()?,
            mean: d.f64()?,
            var: d.f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_a_jump_after_warmup_only() {
        let mut b = EwmaBaseline::new(0.1, 3.0, 5);
        let xs = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0];
        for x in xs {
            assert!(!b.update(x).flag);
        }
        let v = b.update(20.0);
        assert!(v.flag);
        assert!((v.score - 1.0).abs() < 1e-12);
        let mut early = EwmaBaseline::new(0.1, 3.0, 5);
        early.update(10.0);
        early.update(10.1);
        assert!(!early.update(50.0).flag, "no flag during warm-up");
    }
}
