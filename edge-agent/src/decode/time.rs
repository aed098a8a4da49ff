//! Timestamp conversions: integer payload units → pipeline ticks, RFC 3339
//! strings → ticks, SenML seconds → ticks. All integer arithmetic, checked:
//! an overflow is an error, never a wrapped time.

use crate::timefmt::{civil_seconds, num};
use serde::Deserialize;
use weir_core::time::TimeUnit;

/// The unit of integer timestamps in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TsUnit {
    /// Seconds since the epoch.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds since the epoch (the default).
    #[default]
    #[serde(rename = "ms")]
    Millis,
    /// Microseconds since the epoch.
    #[serde(rename = "us")]
    Micros,
    /// Nanoseconds since the epoch.
    #[serde(rename = "ns")]
    Nanos,
}

/// Ticks of `unit` in one second.
pub(crate) fn ticks_per_sec(unit: TimeUnit) -> i64 {
    1000 * unit.per_milli()
}

/// Converts an integer timestamp in `from` to ticks of `to`. Going to a
/// coarser unit floors (`div_euclid`), so 1999 µs is 1 ms and −1 µs is −1 ms:
/// a sample never moves later than it was stamped.
pub(crate) fn int_to_ticks(v: i64, from: TsUnit, to: TimeUnit) -> Option<i64> {
    let tps = ticks_per_sec(to); // 1e3 or 1e6
    match from {
        TsUnit::Seconds => v.checked_mul(tps),
        TsUnit::Millis => v.checked_mul(tps / 1000),
        TsUnit::Micros => Some(if tps >= 1_000_000 {
            v
        } else {
            v.div_euclid(1_000_000 / tps)
        }),
        TsUnit::Nanos => Some(v.div_euclid(1_000_000_000 / tps)),
    }
}

/// Converts SenML seconds (a float) to ticks, rounding to the nearest tick
/// (ties away from zero). The whole seconds and the fraction are scaled
/// apart, so a decimal with no more fractional digits than the unit resolves
/// (3 for ms, 6 for µs) lands exactly on its tick up to 2^33 s (year 2242):
/// the fraction's float error is far below half a tick.
pub(crate) fn secs_f64_to_ticks(s: f64, unit: TimeUnit) -> Option<i64> {
    let tps = ticks_per_sec(unit) as f64;
    if s.abs() < 4.0e15 {
        // The same as below by casts (`trunc` and `round` are library
        // calls on baseline x86-64): the whole seconds and the fraction
        // are exact, the fraction's ticks rounded half away from zero.
        let whole = s as i64;
        let y = (s - whole as f64) * tps;
        let t = y as i64;
        let d = y - t as f64;
        let r = t + i64::from(d >= 0.5) - i64::from(d <= -0.5);
        return whole.checked_mul(tps as i64)?.checked_add(r);
    }
    let whole = s.trunc();
    let x = whole * tps + ((s - whole) * tps).round();
    // `i64::MAX as f64` is 2^63 exactly: anything at or beyond it does not fit.
    if x.is_finite() && x >= i64::MIN as f64 && x < i64::MAX as f64 {
        Some(x as i64)
    } else {
        None
    }
}

/// Parses an RFC 3339 date-time (`2026-11-24T18:08:47.123Z`,
/// `2026-11-24T19:08:47+01:00`; `t`/space for `T` and `z` for `Z` are
/// accepted, as RFC 3339 §5.6 allows) into ticks of `unit`. The offset is
/// required: a time without one is ambiguous. Fractional digits beyond the
/// unit are truncated (up to 9 are accepted); a leap second `:60` counts as
/// the next minute's first second.
pub(crate) fn parse_rfc3339(s: &str, unit: TimeUnit) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let secs = civil_seconds(b)?;
    let mut rest = &b[19..];
    let mut frac_ns = 0i64;
    if let Some(f) = rest.strip_prefix(b".") {
        let n = f.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        for i in 0..9 {
            frac_ns = frac_ns * 10 + f.get(i).filter(|_| i < n).map_or(0, |c| (c - b'0') as i64);
        }
        rest = &f[n..];
    }
    let offset_min: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh @ .., b':', om1, om2] if oh.len() == 2 => {
            let (oh, om) = (num(oh)?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = (oh * 60 + om) as i64;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let secs = secs - offset_min * 60;
    let tps = ticks_per_sec(unit);
    secs.checked_mul(tps)?
        .checked_add(frac_ns / (1_000_000_000 / tps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimeUnit::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z", Millis), Some(0));
        assert_eq!(
            parse_rfc3339("2014-04-10T07:15:00Z", Millis),
            Some(1_397_114_100_000)
        );
        assert_eq!(
            parse_rfc3339("2014-04-10T09:15:00+02:00", Millis),
            Some(1_397_114_100_000)
        );
        assert_eq!(
            parse_rfc3339("2014-04-10t02:15:00-05:00", Millis),
            Some(1_397_114_100_000)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29 12:00:00.5z", Millis),
            Some(951_825_600_500)
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00.123456789Z", Micros),
            Some(123_456)
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00.123456789Z", Millis),
            Some(123)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z", Millis), Some(-1));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z", Millis),
            parse_rfc3339("2017-01-01T00:00:00Z", Millis)
        );
        for bad in [
            "2014-04-10T07:15:00",
            "2014-04-10T07:15:00+0200",
            "2014-04-10T07:15:00.Z",
            "2014-04-10T07:15:00.1234567891Z",
            "2001-02-29T00:00:00Z",
            "2014-04-10T24:00:00Z",
            "2014-04-10T07:15:00+24:00",
            "2014-4-10T07:15:00Z",
            "garbage",
            "",
            "2014-04-10T07:15:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad, Millis), None, "{bad}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(int_to_ticks(1999, TsUnit::Micros, Millis), Some(1));
        assert_eq!(int_to_ticks(-1, TsUnit::Micros, Millis), Some(-1));
        assert_eq!(int_to_ticks(5, TsUnit::Seconds, Micros), Some(5_000_000));
        assert_eq!(int_to_ticks(5, TsUnit::Millis, Micros), Some(5000));
        assert_eq!(int_to_ticks(5_999_999, TsUnit::Nanos, Millis), Some(5));
        assert_eq!(int_to_ticks(5_999, TsUnit::Nanos, Micros), Some(5));
        assert_eq!(int_to_ticks(i64::MAX, TsUnit::Seconds, Millis), None);
    }

    #[test]
    fn senml_seconds_round_to_the_tick() {
        assert_eq!(
            secs_f64_to_ticks(1.276020076001e9, Millis),
            Some(1_276_020_076_001)
        );
        assert_eq!(
            secs_f64_to_ticks(1.276020076000001e9, Micros),
            Some(1_276_020_076_000_001)
        );
        assert_eq!(secs_f64_to_ticks(-0.5, Millis), Some(-500));
        assert_eq!(secs_f64_to_ticks(f64::NAN, Millis), None);
        assert_eq!(secs_f64_to_ticks(1e300, Millis), None);
        // every ms of a day in 2026, written with 3 decimals, lands on its tick
        let base = 1_795_000_000i64;
        for ms in (0..86_400_000i64).step_by(997) {
            let s = format!("{}.{:03}", base + ms / 1000, ms % 1000);
            let x: f64 = s.parse().unwrap();
            assert_eq!(secs_f64_to_ticks(x, Millis), Some(base * 1000 + ms), "{s}");
        }
        assert_eq!(secs_f64_to_ticks(-1.0625, Millis), Some(-1063));
        assert_eq!(secs_f64_to_ticks(0.0004999, Millis), Some(0));
    }

    proptest::proptest! {
        /// The conversion by casts gives what `trunc` and `round` give,
        /// wherever the scaled value is exact (below 2^53 ticks).
        #[test]
        fn seconds_by_casts_as_by_rounding(
            bits in proptest::prelude::any::<u64>(),
            ms in -4_000_000_000_000i64..4_000_000_000_000,
            micros in proptest::prelude::any::<bool>(),
        ) {
            let unit = if micros { Micros } else { Millis };
            let tps = ticks_per_sec(unit) as f64;
            for s in [f64::from_bits(bits), ms as f64 / 1000.0 + 0.0004, ms as f64 / 1000.0] {
                let whole = s.trunc();
                let x = whole * tps + ((s - whole) * tps).round();
                if x.is_finite() && x.abs() < 9.0e15 {
                    proptest::prop_assert_eq!(secs_f64_to_ticks(s, unit), Some(x as i64), "{}", s);
                }
            }
        }
    }
}
