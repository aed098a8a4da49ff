//! Anomaly detectors, per key, bounded memory, no allocation per sample.
//!
//! [`DetectorSpec`] names a detector and its parameters; [`DetectorState`]
//! is one key's state. Every detector yields a [`Verdict`]: a score in
//! [0, 1] and a flag (score crossed the detector's threshold).

mod baseline;

pub use baseline::EwmaBaseline;

/// A detector and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DetectorSpec {
    /// Flags a value more than `k` standard deviations from an exponentially
    /// weighted baseline of the key's earlier values (W1's rule).
    EwmaZ {
        /// Smoothing factor in (0, 1].
        alpha: f64,
        /// Threshold in standard deviations.
        k: f64,
        /// Values seen before a flag can be raised.
        warmup: u32,
    },
}

impl Default for DetectorSpec {
    fn default() -> Self {
        DetectorSpec::EwmaZ {
            alpha: 0.1,
            k: 3.0,
            warmup: 5,
        }
    }
}

impl DetectorSpec {
    /// Checks the parameters.
    ///
    /// # Errors
    /// What is out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        match *self {
            DetectorSpec::EwmaZ { alpha, k, .. } => {
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err("ewma alpha must be in (0, 1]");
                }
                if !(k > 0.0 && k.is_finite()) {
                    return Err("ewma k must be positive");
                }
            }
        }
        Ok(())
    }

    /// Fresh state for one key.
    pub fn new_state(&self) -> DetectorState {
        match *self {
            DetectorSpec::EwmaZ { alpha, k, warmup } => {
                DetectorState::EwmaZ(EwmaBaseline::new(alpha, k, warmup))
            }
        }
    }

    /// A short name that changes when the state's meaning changes; snapshots
    /// keep detector state only when it matches.
    pub fn state_type(&self) -> &'static str {
        match self {
            DetectorSpec::EwmaZ { .. } => "ewma_z/1",
        }
    }
}

/// The score and flag for one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Anomaly score in [0, 1].
    pub score: f64,
    /// Whether the value is anomalous at the detector's threshold.
    pub flag: bool,
}

/// One key's detector state.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectorState {
    /// See [`DetectorSpec::EwmaZ`].
    EwmaZ(EwmaBaseline),
}

impl DetectorState {
    /// Scores one value; `None` for a non-finite value (state untouched).
    pub fn update(&mut self, _ts: i64, x: f64) -> Option<Verdict> {
        if !x.is_finite() {
            return None;
        }
        Some(match self {
            DetectorState::EwmaZ(b) => b.update(x),
        })
    }

    /// Writes the state as CBOR.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        match self {
            DetectorState::EwmaZ(b) => b.encode(e),
        }
    }

    /// Reads state written by [`DetectorState::encode`] for `spec`.
    pub fn decode(
        spec: &DetectorSpec,
        d: &mut minicbor::Decoder<'_>,
    ) -> Result<Self, minicbor::decode::Error> {
        match spec {
            DetectorSpec::EwmaZ { .. } => Ok(DetectorState::EwmaZ(EwmaBaseline::decode(d)?)),
        }
    }
}
