//! What the engine emits.

use crate::detect::Verdict;
use crate::keys::KeyId;
use crate::spec::MAX_AGGS;

/// Whether a window result is its first (on-time) firing or an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emission {
    /// The watermark passed the window's end: the first, complete result.
    OnTime,
    /// A late sample within the allowed lateness changed an emitted window
    /// (or opened one that was already due). Replaces the earlier result.
    Update,
}

/// The aggregates of one window, in the operator's order.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AggValues {
    vals: [f64; MAX_AGGS],
    len: u8,
}

impl AggValues {
    pub(crate) fn push(&mut self, v: f64) {
        if (self.len as usize) < MAX_AGGS {
            self.vals[self.len as usize] = v;
            self.len += 1;
        }
    }

    /// The first [`MAX_AGGS`] values of `v`.
    pub fn from_slice(v: &[f64]) -> Self {
        let mut a = AggValues::default();
        for &x in v {
            a.push(x);
        }
        a
    }

    /// The values, aligned with the operator's `aggregates`.
    pub fn as_slice(&self) -> &[f64] {
        &self.vals[..self.len as usize]
    }
}

/// One window's result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowResult {
    /// Index of the operator in the pipeline's `operators`.
    pub op: u16,
    /// The key; resolve with `Engine::key_name` before the next `handle_*` call.
    pub key: KeyId,
    /// Window start (inclusive).
    pub start: i64,
    /// Window end (exclusive).
    pub end: i64,
    /// First firing or update.
    pub emission: Emission,
    /// The aggregates.
    pub values: AggValues,
    /// The chained detector's verdict on this window (on-time firings only).
    pub anomaly: Option<Verdict>,
}

/// A sample that came after its window was closed for good.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LateSample {
    /// Operator index.
    pub op: u16,
    /// Key.
    pub key: KeyId,
    /// The sample's timestamp.
    pub ts: i64,
    /// The value the operator reads.
    pub value: f64,
}

/// A per-sample anomaly score from a detect operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreResult {
    /// Operator index.
    pub op: u16,
    /// Key.
    pub key: KeyId,
    /// The sample's timestamp.
    pub ts: i64,
    /// The sample's value (a multivariate detector's: its first field's).
    pub value: f64,
    /// Score and flag.
    pub verdict: Verdict,
    /// A multivariate detector's per-field contributions to the score, in
    /// the order of its fields; empty for a single-field detector.
    pub contributions: crate::detect::Contributions,
}

/// A result emitted by a custom operator ([`crate::process`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CustomResult {
    /// Operator index.
    pub op: u16,
    /// Key.
    pub key: KeyId,
    /// Timestamp chosen by the operator.
    pub ts: i64,
    /// Value chosen by the operator.
    pub value: f64,
    /// Tag chosen by the operator.
    pub tag: u32,
}

/// Everything an engine emits, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// A window fired or was updated.
    Window(WindowResult),
    /// A sample scored by a detect operator.
    Score(ScoreResult),
    /// The late side output.
    Late(LateSample),
    /// A custom operator's result.
    Custom(CustomResult),
}
