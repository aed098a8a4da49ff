//! Time: timestamps, time modes and watermarks.
//!
//! Timestamps are integer ticks since the Unix epoch, in the pipeline's
//! [`TimeUnit`] (milliseconds or microseconds); never floats. The engine never
//! reads a clock: processing time enters as the `now` argument of the
//! `handle_*` calls, in the same unit.

/// A timestamp in ticks (ms or µs, see [`TimeUnit`]) since the Unix epoch.
pub type Timestamp = i64;

/// The unit of every timestamp and duration in a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Milliseconds since the epoch (the default).
    #[default]
    Millis,
    /// Microseconds since the epoch.
    Micros,
}

impl TimeUnit {
    /// Ticks in one millisecond.
    pub const fn per_milli(self) -> i64 {
        match self {
            TimeUnit::Millis => 1,
            TimeUnit::Micros => 1000,
        }
    }

    /// Converts a duration in milliseconds to ticks (saturating).
    pub const fn from_millis(self, ms: i64) -> i64 {
        ms.saturating_mul(self.per_milli())
    }

    /// The unit's short name (`ms` or `us`).
    pub const fn name(self) -> &'static str {
        match self {
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "us",
        }
    }
}

/// Which clock stamps a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeMode {
    /// The timestamp carried in the payload (the default). Deterministic under
    /// replay; watermarks come from bounded out-of-orderness.
    #[default]
    Event,
    /// The `now` passed to `handle_sample` (the driver's receipt time). A driver
    /// that journals the receipt time replays deterministically.
    Ingestion,
    /// The `now` passed to the engine when the sample is processed; windows
    /// also fire on `handle_time`. Not reproducible by replay.
    Processing,
}

/// "No event with a timestamp at or before this will come."
///
/// The engine's watermark is monotonic: it never moves back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// Events with timestamp `<= t` are complete.
    EventTime(Timestamp),
    /// No source has produced data yet (or all are idle and none ever
    /// advanced it): nothing is complete.
    Idle,
}

impl Watermark {
    /// The watermark as a timestamp, `i64::MIN` when idle.
    pub fn ts(self) -> Timestamp {
        match self {
            Watermark::EventTime(t) => t,
            Watermark::Idle => i64::MIN,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in month `m` of year `y` (proleptic Gregorian).
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The proleptic Gregorian date `(year, month, day)` of `z` days since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
