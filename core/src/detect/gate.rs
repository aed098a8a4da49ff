//! Alert gate: threshold + hysteresis + cool-down, so one fault = one alert.

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
/// at sample i + cooldown at the earliest) — unless the score is much
/// stronger than the peak of the previous alert: inside the cool-down a
/// score whose odds `s / (1 - s)` are at least [`AlertGate::BREAK_ODDS`]
/// times the previous peak's raises at once (on the shared score scale
/// `L / (L + 10)` the odds are `L / 10`, so this is a tail probability at
/// least squared), so an earlier false alarm cannot hide a real fault.
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
    /// Highest score since the last raise (1 after an old snapshot: no break).
    peak: f64,
}

/// Odds `s / (1 - s)` of a score (infinite at 1).
fn odds(s: f64) -> f64 {
    if s >= 1.0 {
        f64::INFINITY
    } else {
        s / (1.0 - s)
    }
}

impl AlertGate {
    /// Inside the cool-down, a score whose odds are at least this multiple of
    /// the previous alert's peak odds raises anyway.
    pub const BREAK_ODDS: f64 = 2.0;

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
            peak: 0.0,
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
            self.peak = self.peak.max(score);
            if score < self.threshold - self.hysteresis {
                self.active = false;
                return Some(AlertEdge::Cleared);
            }
            None
        } else if score >= self.threshold
            && (self.since_raise >= self.cooldown
                || (self.peak < 1.0 && odds(score) >= Self::BREAK_ODDS * odds(self.peak)))
        {
            self.active = true;
            self.since_raise = 0;
            self.peak = score;
            self.raised = self.raised.saturating_add(1);
            Some(AlertEdge::Raised)
        } else {
            None
        }
    }

    /// Writes the gate's state as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(7)?
            .f64(self.threshold)?
            .f64(self.hysteresis)?
            .u32(self.cooldown)?
            .bool(self.active)?
            .u32(self.since_raise)?
            .u64(self.raised)?
            .f64(self.peak)?;
        Ok(())
    }

    /// Reads state written by [`AlertGate::encode`], or the 6-element state
    /// written before the cool-down break (its peak reads as 1: that alert's
    /// cool-down runs out as before).
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        let n = match d.array()? {
            Some(n @ (6 | 7)) => n,
            _ => return Err(DecError::message("unexpected array length")),
        };
        Ok(AlertGate {
            threshold: d.f64()?,
            hysteresis: d.f64()?,
            cooldown: d.u32()?,
            active: d.bool()?,
            since_raise: d.u32()?,
            raised: d.u64()?,
            peak: if n == 7 { d.f64()? } else { 1.0 },
        })
    }
}
