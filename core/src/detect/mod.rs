//! Anomaly detectors, per key, bounded memory, no allocation per sample.
//!
//! - [`Detector`] (no allocator needed): one key's streaming detector,
//!   enum-dispatched — [`Kestrel`] (the default: multi-scale pattern
//!   surprise, anomaly likelihood and hard rules, ~5.6 KiB), [`EwmaDetector`],
//!   [`MadDetector`] (robust median/MAD), [`CusumDetector`] (change points).
//!   Each returns an anomaly score in `[0, 1]` per finite sample; an
//!   [`AlertGate`] (threshold, hysteresis, cool-down) turns scores into one
//!   alert per event.
//! - [`EwmaBaseline`]: W1's z-score of window means against an EWMA baseline.
//! - [`DetectorSpec`] / `DetectorState` (feature `alloc`): what the engine's
//!   operators are configured with and keep per key.
//!
//! Scores share one calibration: with `p` a tail probability under the
//! detector's own null model and `L = -log10 p`, `score = L / (L + 10)`
//! (p = 1e-4 ↔ 0.2857, p = 1e-10 ↔ 0.5); CUSUM reports `S / (2h)`.
//! Non-finite inputs return `None` and leave the state untouched. Detectors
//! count samples, not time: timestamps are checked (repeats and backwards
//! jumps are counted), never used in arithmetic, so gaps cannot corrupt state.

mod baseline;

pub use baseline::EwmaBaseline;

use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

pub mod calib;
pub mod cusum;
pub mod ewma;
pub mod gate;
pub mod kestrel;
pub mod knn;
pub mod mad;
pub mod multivariate;

pub use calib::PotTail;
pub use cusum::{CusumConfig, CusumDetector};
pub use ewma::{EwmaConfig, EwmaDetector};
pub use gate::{AlertEdge, AlertGate};
pub use kestrel::{Kestrel, KestrelConfig, KESTREL_BANDED, KESTREL_CALIBRATED};
pub use mad::{MadConfig, MadDetector};
pub use multivariate::{
    Contributions, Multivariate, MultivariateConfig, MAX_FIELDS, MULTIVARIATE_DEFAULT,
};

/// Which detector, with its parameters (all have sensible `Default`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DetectorConfig {
    /// Z-score against an EWMA baseline.
    Ewma(EwmaConfig),
    /// Robust median/MAD z-score.
    Mad(MadConfig),
    /// CUSUM change points.
    Cusum(CusumConfig),
    /// Kestrel, the default.
    Default(KestrelConfig),
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::Default(KestrelConfig::default())
    }
}

/// One detector instance for one key; enum dispatch, no trait objects, no alloc.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Detector {
    /// See [`EwmaDetector`].
    Ewma(EwmaDetector),
    /// See [`MadDetector`].
    Mad(MadDetector),
    /// See [`CusumDetector`].
    Cusum(CusumDetector),
    /// See [`Kestrel`].
    Kestrel(Kestrel),
}

impl Detector {
    /// A fresh detector for one key.
    pub fn new(cfg: &DetectorConfig) -> Self {
        match cfg {
            DetectorConfig::Ewma(c) => Detector::Ewma(EwmaDetector::new(c)),
            DetectorConfig::Mad(c) => Detector::Mad(MadDetector::new(c)),
            DetectorConfig::Cusum(c) => Detector::Cusum(CusumDetector::new(c)),
            DetectorConfig::Default(c) => Detector::Kestrel(Kestrel::new(c)),
        }
    }

    /// Feed one sample: `ts` in ms since epoch, value. Returns a score in `[0, 1]`.
    /// Non-finite value (or `|value| > MAX_ABS`) => returns `None` (caller
    /// counts it), state untouched.
    #[inline]
    pub fn update(&mut self, ts: i64, value: f64) -> Option<f64> {
        if !value.is_finite() || value.abs() > MAX_ABS {
            return None;
        }
        let s = match self {
            Detector::Ewma(d) => d.update(ts, value),
            Detector::Mad(d) => d.update(ts, value),
            Detector::Cusum(d) => d.update(ts, value),
            Detector::Kestrel(d) => d.update(ts, value),
        };
        Some(clamp01(s))
    }

    /// The detector's short name: `ewma`, `mad`, `cusum` or `kestrel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Detector::Ewma(_) => "ewma",
            Detector::Mad(_) => "mad",
            Detector::Cusum(_) => "cusum",
            Detector::Kestrel(_) => "kestrel",
        }
    }

    /// The shipped alert threshold for this detector's scores.
    pub fn default_threshold(&self) -> f64 {
        match self {
            Detector::Ewma(d) => d.cfg.threshold,
            Detector::Mad(d) => d.cfg.threshold,
            Detector::Cusum(d) => d.cfg.threshold,
            Detector::Kestrel(d) => d.cfg.threshold,
        }
    }

    /// Samples seen with a non-finite value are never passed to the inner
    /// detector (see [`Detector::update`]); this counts repeated or
    /// backwards timestamps seen by the inner detector.
    pub fn timestamp_anomalies(&self) -> u64 {
        match self {
            Detector::Ewma(d) => d.clock.bad_ts,
            Detector::Mad(d) => d.clock.bad_ts,
            Detector::Cusum(d) => d.clock.bad_ts,
            Detector::Kestrel(d) => d.clock.bad_ts,
        }
    }

    /// Snapshot as CBOR: `[kind, SNAPSHOT_VERSION, state]`; the state
    /// includes the detector's configuration, so a snapshot is self-contained.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(3)?;
        e.str(self.kind())?;
        e.u32(SNAPSHOT_VERSION)?;
        match self {
            Detector::Ewma(d) => d.encode(e),
            Detector::Mad(d) => d.encode(e),
            Detector::Cusum(d) => d.encode(e),
            Detector::Kestrel(d) => d.encode(e),
        }
    }

    /// Restore a snapshot written by [`Detector::encode`].
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 3)?;
        let kind = d.str()?;
        let version = d.u32()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DecError::message("unsupported snapshot version"));
        }
        match kind {
            "ewma" => Ok(Detector::Ewma(EwmaDetector::decode(d)?)),
            "mad" => Ok(Detector::Mad(MadDetector::decode(d)?)),
            "cusum" => Ok(Detector::Cusum(CusumDetector::decode(d)?)),
            "kestrel" => Ok(Detector::Kestrel(Kestrel::decode_version(d, version)?)),
            _ => Err(DecError::message("unknown detector kind")),
        }
    }
}

/// Version of the snapshot layout written by [`Detector::encode`].
///
/// 2: Kestrel's pattern memories keep their points once, one buffer per scale
/// ([`knn`]). Version 1 is still read (the same for `ewma`, `mad` and
/// `cusum`; Kestrel's banks are rebuilt into those buffers, losslessly for the
/// default configuration).
/// 3: Kestrel's calibration (flag, baseline, tails) as a 12th element.
pub const SNAPSHOT_VERSION: u32 = 3;

/// Largest accepted magnitude: beyond it a value is rejected like a
/// non-finite one, so squares and f32 pattern distances can never overflow.
pub const MAX_ABS: f64 = 1e15;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Tracks timestamps only to count repeats / backwards jumps.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Clock {
    /// Largest timestamp seen.
    pub last_ts: i64,
    /// Samples seen.
    pub seen: u64,
    /// Samples whose timestamp repeated or went backwards.
    pub bad_ts: u64,
}

impl Clock {
    #[inline]
    /// Records one sample's timestamp.
    pub fn tick(&mut self, ts: i64) {
        if self.seen > 0 && ts <= self.last_ts {
            self.bad_ts = self.bad_ts.saturating_add(1);
        }
        if self.seen == 0 || ts > self.last_ts {
            self.last_ts = ts;
        }
        self.seen = self.seen.saturating_add(1);
    }
    /// Writes the clock as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(3)?
            .i64(self.last_ts)?
            .u64(self.seen)?
            .u64(self.bad_ts)?;
        Ok(())
    }
    /// Reads a clock written by [`Clock::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 3)?;
        Ok(Clock {
            last_ts: d.i64()?,
            seen: d.u64()?,
            bad_ts: d.u64()?,
        })
    }
}

#[inline]
/// Clamps to [0, 1], NaN to 0.
pub fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Upper tail of the standard normal, P(Z > z).
#[inline]
pub fn norm_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z * core::f64::consts::FRAC_1_SQRT_2)
}

/// `-log10 P(Z > z)` for the standard normal, finite for any finite z.
#[inline]
pub fn norm_neglog10_sf(z: f64) -> f64 {
    if z < 30.0 {
        let p = norm_sf(z);
        if p > 0.0 {
            return -libm::log10(p);
        }
    }
    // Mills-ratio asymptote: ln Q(z) ~ -z^2/2 - ln(z sqrt(2 pi))
    (0.5 * z * z + libm::log(z * 2.506_628_274_631_000_5)) * core::f64::consts::LOG10_E
}

/// Non-saturating map of a surprise `L = -log10(p) >= 0` into [0, 1):
/// `L / (L + 10)`; p = 1e-10 maps to 0.5.
#[inline]
pub fn surprise_to_unit(l: f64) -> f64 {
    if l > 0.0 {
        l / (l + 10.0)
    } else {
        0.0
    }
}

/// Two-sided gaussian z-score as a score on the shared scale:
/// `L = -log10(2 P(Z > |z|))`, score `L / (L + 10)`.
#[inline]
pub fn z_to_score(z: f64) -> f64 {
    let a = libm::fabs(z);
    if a.is_nan() {
        return 0.0;
    }
    surprise_to_unit(norm_neglog10_sf(a) - core::f64::consts::LOG10_2)
}

pub(crate) fn expect_array(d: &mut Decoder<'_>, n: u64) -> Result<(), DecError> {
    match d.array()? {
        Some(m) if m == n => Ok(()),
        _ => Err(DecError::message("unexpected array length")),
    }
}

/// A fixed-size number stored little-endian in a CBOR byte string.
pub(crate) trait Le: Copy {
    const SIZE: usize;
    fn put(self, w: &mut [u8]);
    fn get(b: &[u8]) -> Self;
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn put(self, w: &mut [u8]) {
                w.copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le!(f64, f32, u32);

/// Encodes a slice of numbers as one CBOR byte string (little-endian):
/// compact, and decoded without per-element CBOR headers.
pub(crate) fn enc_blob<T: Le, W: Write>(
    e: &mut Encoder<W>,
    xs: &[T],
) -> Result<(), EncError<W::Error>> {
    e.bytes_len((xs.len() * T::SIZE) as u64)?;
    let mut buf = [0u8; 8];
    for &x in xs {
        x.put(&mut buf[..T::SIZE]);
        e.writer_mut()
            .write_all(&buf[..T::SIZE])
            .map_err(EncError::write)?;
    }
    Ok(())
}

/// Decodes a blob written by [`enc_blob`] into `out`, which must have
/// exactly the encoded length.
pub(crate) fn dec_blob<T: Le>(d: &mut Decoder<'_>, out: &mut [T]) -> Result<(), DecError> {
    let b = d.bytes()?;
    if b.len() != out.len() * T::SIZE {
        return Err(DecError::message("number blob length mismatch"));
    }
    for (o, c) in out.iter_mut().zip(b.chunks_exact(T::SIZE)) {
        *o = T::get(c);
    }
    Ok(())
}

/// A detector and its parameters, as an operator is configured with it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DetectorSpec {
    /// Flags a value more than `k` standard deviations from an exponentially
    /// weighted baseline of the key's earlier values (W1's rule, meant for
    /// window aggregates). See [`EwmaBaseline`].
    EwmaZ {
        /// Smoothing factor in (0, 1].
        alpha: f64,
        /// Threshold in standard deviations.
        k: f64,
        /// Values seen before a flag can be raised.
        warmup: u32,
    },
    /// A scoring [`Detector`] behind an [`AlertGate`]: the verdict's score is
    /// the detector's, its flag is set on the sample where the gate raises
    /// an alert (one per event).
    Scored {
        /// The detector.
        detector: DetectorConfig,
        /// Alert threshold on the score.
        threshold: f64,
        /// How far below the threshold the score must fall to re-arm.
        hysteresis: f64,
        /// Samples after an alert during which no new one is raised.
        cooldown: u32,
    },
    /// A [`Multivariate`] detector over several fields of one source (one
    /// machine) behind an [`AlertGate`] whose threshold is the detector's
    /// own (`config.threshold`, which also decides what the detector adapts
    /// to). The operator hands it all its fields at once
    /// ([`DetectorState::update_fields`]).
    Multivariate {
        /// The detector's parameters.
        config: MultivariateConfig,
        /// Fields per sample, `2..=MAX_FIELDS`.
        fields: u8,
        /// How far below the threshold the score must fall to re-arm.
        hysteresis: f64,
        /// Samples after an alert during which no new one is raised.
        cooldown: u32,
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

/// Cool-down of the shipped alert gate, in samples.
pub const DEFAULT_COOLDOWN: u32 = 50;

impl DetectorSpec {
    /// The default scoring detector, Kestrel, with its shipped threshold.
    pub fn kestrel() -> Self {
        DetectorSpec::scored(DetectorConfig::default())
    }

    /// A scoring detector with its shipped threshold and the default gate.
    pub fn scored(detector: DetectorConfig) -> Self {
        let threshold = Detector::new(&detector).default_threshold();
        DetectorSpec::Scored {
            detector,
            threshold,
            hysteresis: 0.0,
            cooldown: DEFAULT_COOLDOWN,
        }
    }

    /// The multivariate detector over `fields` fields with its shipped
    /// configuration and the default gate.
    pub fn multivariate(fields: u8) -> Self {
        DetectorSpec::Multivariate {
            config: MULTIVARIATE_DEFAULT,
            fields,
            hysteresis: 0.0,
            cooldown: DEFAULT_COOLDOWN,
        }
    }

    /// Fields per sample the detector reads at once: 1 except for
    /// [`DetectorSpec::Multivariate`].
    pub fn fields(&self) -> usize {
        match *self {
            DetectorSpec::Multivariate { fields, .. } => fields as usize,
            _ => 1,
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// What is out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        match *self {
            DetectorSpec::Multivariate {
                config,
                fields,
                hysteresis,
                ..
            } => {
                if !(2..=MAX_FIELDS).contains(&(fields as usize)) {
                    return Err("a multivariate detector reads 2 to 8 fields");
                }
                if config.learn < multivariate::MIN_LEARN {
                    return Err("multivariate learn must be at least 32 samples");
                }
                if !(config.forget >= 0.0 && config.forget < 0.5) {
                    return Err("multivariate forget must be in [0, 0.5)");
                }
                if !(config.beta > 0.0 && config.beta <= 1.0) {
                    return Err("multivariate beta must be in (0, 1]");
                }
                if !(config.threshold > 0.0 && config.threshold <= 1.0) {
                    return Err("threshold must be in (0, 1]");
                }
                if !(0.0..1.0).contains(&hysteresis) {
                    return Err("hysteresis must be in [0, 1)");
                }
            }
            DetectorSpec::EwmaZ { alpha, k, .. } => {
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err("ewma alpha must be in (0, 1]");
                }
                if !(k > 0.0 && k.is_finite()) {
                    return Err("ewma k must be positive");
                }
            }
            DetectorSpec::Scored {
                threshold,
                hysteresis,
                ..
            } => {
                if !(threshold > 0.0 && threshold <= 1.0) {
                    return Err("threshold must be in (0, 1]");
                }
                if !(0.0..1.0).contains(&hysteresis) {
                    return Err("hysteresis must be in [0, 1)");
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "alloc")]
pub use engine_state::DetectorState;

/// Estimated bytes of one key's detector state (boxed, as the engine keeps
/// it), for the keyed-state budget.
#[cfg(feature = "alloc")]
pub(crate) fn state_bytes(spec: &DetectorSpec) -> usize {
    let boxed = core::mem::size_of::<DetectorState>() + 16;
    match spec {
        DetectorSpec::EwmaZ { .. } => boxed,
        DetectorSpec::Scored { .. } => boxed + core::mem::size_of::<Detector>(),
        DetectorSpec::Multivariate { .. } => boxed + Multivariate::STATE_BYTES,
    }
}

#[cfg(feature = "alloc")]
mod engine_state {
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::String;

    use super::{
        AlertEdge, AlertGate, Contributions, Detector, DetectorSpec, EwmaBaseline, Multivariate,
        Verdict,
    };

    impl DetectorSpec {
        /// Fresh state for one key.
        pub fn new_state(&self) -> DetectorState {
            match *self {
                DetectorSpec::EwmaZ { alpha, k, warmup } => {
                    DetectorState::EwmaZ(EwmaBaseline::new(alpha, k, warmup))
                }
                DetectorSpec::Scored {
                    detector,
                    threshold,
                    hysteresis,
                    cooldown,
                } => DetectorState::Scored {
                    detector: Box::new(Detector::new(&detector)),
                    gate: AlertGate::new(threshold, hysteresis, cooldown),
                },
                DetectorSpec::Multivariate {
                    config,
                    fields,
                    hysteresis,
                    cooldown,
                } => DetectorState::Multivariate {
                    detector: Box::new(Multivariate::new(&config, fields as usize)),
                    gate: AlertGate::new(config.threshold, hysteresis, cooldown),
                },
            }
        }

        /// Names the meaning of the state, parameters included: snapshots
        /// keep detector state only when it is unchanged.
        pub fn state_type(&self) -> String {
            match self {
                DetectorSpec::EwmaZ { alpha, k, warmup } => {
                    format!("ewma_z/1 {alpha} {k} {warmup}")
                }
                DetectorSpec::Scored {
                    detector,
                    threshold,
                    hysteresis,
                    cooldown,
                } => {
                    format!("scored/1 {detector:?} {threshold} {hysteresis} {cooldown}")
                }
                DetectorSpec::Multivariate {
                    config,
                    fields,
                    hysteresis,
                    cooldown,
                } => {
                    format!("multivariate/1 {config:?} {fields} {hysteresis} {cooldown}")
                }
            }
        }
    }

    /// One key's detector state in the engine.
    #[derive(Clone, Debug, PartialEq)]
    pub enum DetectorState {
        /// See [`DetectorSpec::EwmaZ`].
        EwmaZ(EwmaBaseline),
        /// See [`DetectorSpec::Scored`].
        Scored {
            /// The detector (boxed: Kestrel holds ~5.6 KiB).
            detector: Box<Detector>,
            /// Its alert gate.
            gate: AlertGate,
        },
        /// See [`DetectorSpec::Multivariate`].
        Multivariate {
            /// The detector (boxed: ~1.2 KiB).
            detector: Box<Multivariate>,
            /// Its alert gate.
            gate: AlertGate,
        },
    }

    impl DetectorState {
        /// Scores one value; `None` for a non-finite value (state untouched).
        pub fn update(&mut self, ts: i64, x: f64) -> Option<Verdict> {
            if !x.is_finite() {
                return None;
            }
            match self {
                DetectorState::EwmaZ(b) => Some(b.update(x)),
                DetectorState::Scored { detector, gate } => {
                    let score = detector.update(ts, x)?;
                    let flag = gate.update(score) == Some(AlertEdge::Raised);
                    Some(Verdict { score, flag })
                }
                // reads all its fields at once: see update_fields
                DetectorState::Multivariate { .. } => None,
            }
        }

        /// Scores one sample of several fields (a multivariate detector;
        /// any other scores `xs[0]` alone, without contributions). `None`
        /// when the sample has the wrong number of fields or a value that is
        /// not finite: the state is untouched.
        pub fn update_fields(&mut self, ts: i64, xs: &[f64]) -> Option<(Verdict, Contributions)> {
            match self {
                DetectorState::Multivariate { detector, gate } => {
                    let score = detector.update(ts, xs)?;
                    let flag = gate.update(score) == Some(AlertEdge::Raised);
                    let c = Contributions::of(detector.contributions());
                    Some((Verdict { score, flag }, c))
                }
                _ => Some((self.update(ts, *xs.first()?)?, Contributions::default())),
            }
        }

        /// Writes the state as CBOR.
        ///
        /// # Errors
        /// Write errors of `e`.
        pub fn encode<W: minicbor::encode::Write>(
            &self,
            e: &mut minicbor::Encoder<W>,
        ) -> Result<(), minicbor::encode::Error<W::Error>> {
            match self {
                DetectorState::EwmaZ(b) => b.encode(e),
                DetectorState::Scored { detector, gate } => {
                    e.array(2)?;
                    detector.encode(e)?;
                    gate.encode(e)
                }
                DetectorState::Multivariate { detector, gate } => {
                    e.array(2)?;
                    detector.encode(e)?;
                    gate.encode(e)
                }
            }
        }

        /// Reads state written by [`DetectorState::encode`] for `spec`.
        ///
        /// # Errors
        /// Malformed input, or a detector of another kind than `spec`'s.
        pub fn decode(
            spec: &DetectorSpec,
            d: &mut minicbor::Decoder<'_>,
        ) -> Result<Self, minicbor::decode::Error> {
            match spec {
                DetectorSpec::EwmaZ { .. } => Ok(DetectorState::EwmaZ(EwmaBaseline::decode(d)?)),
                DetectorSpec::Scored { detector: cfg, .. } => {
                    if d.array()? != Some(2) {
                        return Err(minicbor::decode::Error::message(
                            "scored detector: expected array of 2",
                        ));
                    }
                    let detector = Detector::decode(d)?;
                    if detector.kind() != Detector::new(cfg).kind() {
                        return Err(minicbor::decode::Error::message(
                            "snapshot holds another detector kind",
                        ));
                    }
                    let gate = AlertGate::decode(d)?;
                    Ok(DetectorState::Scored {
                        detector: Box::new(detector),
                        gate,
                    })
                }
                DetectorSpec::Multivariate { config, fields, .. } => {
                    if d.array()? != Some(2) {
                        return Err(minicbor::decode::Error::message(
                            "multivariate detector: expected array of 2",
                        ));
                    }
                    let detector = Multivariate::decode(d)?;
                    if detector.cfg != *config || detector.fields() != *fields as usize {
                        return Err(minicbor::decode::Error::message(
                            "snapshot holds a multivariate detector of another shape",
                        ));
                    }
                    let gate = AlertGate::decode(d)?;
                    Ok(DetectorState::Multivariate {
                        detector: Box::new(detector),
                        gate,
                    })
                }
            }
        }
    }
}

/// The score and flag for one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Anomaly score in [0, 1].
    pub score: f64,
    /// Whether the value is anomalous: for [`DetectorSpec::EwmaZ`], beyond
    /// `k` standard deviations; for [`DetectorSpec::Scored`], the sample on
    /// which the alert gate raised an alert.
    pub flag: bool,
}
