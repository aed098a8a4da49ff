//! Alert gate: threshold + hysteresis + cool-down, so one fault = one alert.

use super::expect_array;
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

/// Edge emitted by [`AlertGate::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertEdge {
    /// The score crossed the threshold: an alert starts.
    Raised,
    /// The score fell below threshold − hysteresis: the alert ends.
    Cleared,
}

/// Raises when `score >= threshold` (and the cool-down since the last raise
/// has elapsed), clears when `score < threshold - hysteresis`. While raised
/// nothing new is emitted; a new raise needs a clear first and at least
/// `cooldown` samples since the previous raise (raise at sample i, next raise
/// at sample i + cooldown at the earliest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertGate {
    /// Score at or above which an alert is raised.
    pub threshold: f64,
    /// How far below the threshold the score must fall to clear.
    pub hysteresis: f64,
    /// Samples after a raise during which no new alert is raised.
    pub cooldown: u32,
    active: bool,
    since_raise: u32,
    raised: u64,
}

impl AlertGate {
    /// A gate with the given threshold, hysteresis and cool-down (samples).
    pub fn new(threshold: f64, hysteresis: f64, cooldown: u32) -> Self {
        AlertGate {
            threshold,
            hysteresis: if hysteresis.is_finite() && hysteresis > 0.0 {
                hysteresis
            } else {
                0.0
            },
            cooldown,
            active: false,
            since_raise: u32::MAX,
            raised: 0,
        }
    }

    /// Whether an alert is currently raised (not cleared).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Number of alerts raised so far.
    pub fn raised_count(&self) -> u64 {
        self.raised
    }

    /// Feeds one score; returns the edge it causes, if any.
    pub fn update(&mut self, score: f64) -> Option<AlertEdge> {
        self.since_raise = self.since_raise.saturating_add(1);
        if score.is_nan() {
            return None;
        }
        if self.active {
            if score < self.threshold - self.hysteresis {
                self.active = false;
                return Some(AlertEdge::Cleared);
            }
            None
        } else if score >= self.threshold && self.since_raise >= self.cooldown {
            self.active = true;
            self.since_raise = 0;
            self.raised = self.raised.saturating_add(1);
            Some(AlertEdge::Raised)
        } else {
            None
        }
    }

    /// Writes the gate's state as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(6)?
            .f64(self.threshold)?
            .f64(self.hysteresis)?
            .u32(self.cooldown)?
            .bool(self.active)?
            .u32(self.since_raise)?
            .u64(self.raised)?;
        Ok(())
    }

    /// Reads state written by [`AlertGate::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 6)?;
        Ok(AlertGate {
            threshold: d.f64()?,
            hysteresis: d.f64()?,
            cooldown: d.u32()?,
            active: d.bool()?,
            since_raise: d.u32()?,
            raised: d.u64()?,
        })
    }
}
