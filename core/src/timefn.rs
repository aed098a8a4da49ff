//! SQL's time functions over epoch milliseconds, in UTC and the proleptic
//! Gregorian calendar, as Flink (Calcite) computes them: `EXTRACT` and its
//! short forms (`HOUR(ts)`…), `TIMESTAMPDIFF`, `TIMESTAMPADD`,
//! `FLOOR`/`CEIL(ts TO unit)` and `DATE_FORMAT` with Java's
//! `SimpleDateFormat` letters.

use alloc::string::String;
use core::fmt::Write as _;

use crate::time::{civil_from_days, days_from_civil, days_in_month};

const DAY: i64 = 86_400_000;

/// A field or unit of a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeField {
    /// The year.
    Year,
    /// 1 to 4.
    Quarter,
    /// 1 to 12.
    Month,
    /// ISO 8601 week of the year, 1 to 53 (weeks start on Monday; week 1
    /// holds the year's first Thursday).
    Week,
    /// Day of the month, 1 to 31.
    Day,
    /// Day of the year, 1 to 366.
    DayOfYear,
    /// Day of the week, 1 (Sunday) to 7 (Saturday).
    DayOfWeek,
    /// 0 to 23.
    Hour,
    /// 0 to 59.
    Minute,
    /// 0 to 59 (whole seconds).
    Second,
    /// 0 to 999; as a unit, what `ts ± INTERVAL …` adds (not a name
    /// [`TimeField::parse`] takes: Flink's `EXTRACT(MILLISECOND …)` counts
    /// from the minute).
    Millisecond,
}

impl TimeField {
    /// The field named `name` (SQL's unit names, singular or plural, any
    /// case; `DOY`, `DOW`, `DAYOFMONTH`…).
    pub fn parse(name: &str) -> Option<TimeField> {
        let n = name.to_ascii_uppercase();
        let n = n.strip_suffix('S').unwrap_or(&n);
        Some(match n {
            "YEAR" => TimeField::Year,
            "QUARTER" => TimeField::Quarter,
            "MONTH" => TimeField::Month,
            "WEEK" => TimeField::Week,
            "DAY" | "DAYOFMONTH" => TimeField::Day,
            "DOY" | "DAYOFYEAR" => TimeField::DayOfYear,
            "DOW" | "DAYOFWEEK" => TimeField::DayOfWeek,
            "HOUR" => TimeField::Hour,
            "MINUTE" => TimeField::Minute,
            "SECOND" => TimeField::Second,
            _ => return None,
        })
    }

    /// The unit's length in milliseconds, for the units of fixed length.
    pub fn millis(self) -> Option<i64> {
        Some(match self {
            TimeField::Week => 7 * DAY,
            TimeField::Day => DAY,
            TimeField::Hour => 3_600_000,
            TimeField::Minute => 60_000,
            TimeField::Second => 1000,
            TimeField::Millisecond => 1,
            _ => return None,
        })
    }

    /// Months in the unit, for the calendar units.
    fn months(self) -> Option<i64> {
        match self {
            TimeField::Year => Some(12),
            TimeField::Quarter => Some(3),
            TimeField::Month => Some(1),
            _ => None,
        }
    }
}

/// `EXTRACT(field FROM ts)`.
pub fn extract(ts: i64, field: TimeField) -> i64 {
    let days = ts.div_euclid(DAY);
    let rem = ts.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    match field {
        TimeField::Year => y,
        TimeField::Quarter => i64::from((m - 1) / 3 + 1),
        TimeField::Month => i64::from(m),
        TimeField::Day => i64::from(d),
        TimeField::DayOfYear => days - days_from_civil(y, 1, 1) + 1,
        // 1970-01-01 was a Thursday (5 counting from Sunday = 1).
        TimeField::DayOfWeek => (days + 4).rem_euclid(7) + 1,
        TimeField::Week => iso_week(days),
        TimeField::Hour => rem / 3_600_000,
        TimeField::Minute => rem / 60_000 % 60,
        TimeField::Second => rem / 1000 % 60,
        TimeField::Millisecond => rem % 1000,
    }
}

/// The ISO 8601 week number of the day `days`.
fn iso_week(days: i64) -> i64 {
    // Monday = 0 … Sunday = 6; the week's Thursday decides its year.
    let wd = (days + 3).rem_euclid(7);
    let thursday = days - wd + 3;
    let (y, _, _) = civil_from_days(thursday);
    (thursday - days_from_civil(y, 1, 1)) / 7 + 1
}

/// `ts` plus `n` months, the day kept or cut to the month's last
/// (Calcite's `addMonths`), the time of day kept.
fn add_months(ts: i64, n: i64) -> Option<i64> {
    let days = ts.div_euclid(DAY);
    let rem = ts.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y
        .checked_mul(12)?
        .checked_add(i64::from(m) - 1)?
        .checked_add(n)?;
    let (y2, m2) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let d2 = d.min(days_in_month(y2, m2));
    days_from_civil(y2, m2, d2)
        .checked_mul(DAY)?
        .checked_add(rem)
}

/// `TIMESTAMPADD(unit, n, ts)`; `None` on overflow.
pub fn timestamp_add(unit: TimeField, n: i64, ts: i64) -> Option<i64> {
    match (unit.millis(), unit.months()) {
        (Some(ms), _) => n.checked_mul(ms)?.checked_add(ts),
        (None, Some(k)) => add_months(ts, n.checked_mul(k)?),
        // Day-of fields are no units to add.
        (None, None) => None,
    }
}

/// `TIMESTAMPDIFF(unit, a, b)`: whole units from `a` to `b`, negative if
/// `b` is earlier (truncated toward zero). Months as Calcite counts them:
/// the most whole months that, added to the earlier time, do not pass the
/// later one.
pub fn timestamp_diff(unit: TimeField, a: i64, b: i64) -> Option<i64> {
    if let Some(ms) = unit.millis() {
        return Some(b.checked_sub(a)? / ms);
    }
    let k = unit.months()?;
    let (lo, hi, sign) = if a <= b { (a, b, 1) } else { (b, a, -1) };
    let (y0, m0, _) = civil_from_days(lo.div_euclid(DAY));
    let (y1, m1, _) = civil_from_days(hi.div_euclid(DAY));
    // An estimate at most one too many, then down.
    let mut months = (y1 - y0) * 12 + i64::from(m1) - i64::from(m0);
    while months > 0 && add_months(lo, months)? > hi {
        months -= 1;
    }
    Some(sign * (months / k))
}

/// `FLOOR(ts TO unit)` (`up`: `CEIL`): the start of the unit that holds
/// `ts` (the end of it, unless `ts` is its start). Weeks are not floored
/// (`None`), nor day-of fields.
pub fn floor_to(ts: i64, unit: TimeField, up: bool) -> Option<i64> {
    let down = match unit {
        TimeField::Day
        | TimeField::Hour
        | TimeField::Minute
        | TimeField::Second
        | TimeField::Millisecond => {
            let ms = unit.millis()?;
            ts.div_euclid(ms) * ms
        }
        TimeField::Year | TimeField::Quarter | TimeField::Month => {
            let (y, m, _) = civil_from_days(ts.div_euclid(DAY));
            let m = match unit {
                TimeField::Year => 1,
                TimeField::Quarter => (m - 1) / 3 * 3 + 1,
                _ => m,
            };
            days_from_civil(y, m, 1).checked_mul(DAY)?
        }
        _ => return None,
    };
    if !up || down == ts {
        return Some(down);
    }
    match unit.months() {
        Some(k) => add_months(down, k),
        None => down.checked_add(unit.millis()?),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The first letter of `pattern` that [`date_format`] does not know (a
/// letter outside quotes), if any; or `'` for an unclosed quote.
pub fn bad_pattern_letter(pattern: &str) -> Option<char> {
    let mut quoted = false;
    for c in pattern.chars() {
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted && c.is_ascii_alphabetic() && !"yMdHhkKmsSaEDu".contains(c) {
            return Some(c);
        }
    }
    quoted.then_some('\'')
}

/// `DATE_FORMAT(ts, pattern)`, with the letters of Java's
/// `SimpleDateFormat` that a timestamp has: `y` (`yy`: two digits), `M`
/// (`MMM` `Jan`, `MMMM` `January`), `d`, `D` (day of year), `E` (`Mon`,
/// `EEEE` `Monday`), `u` (1 = Monday), `H`, `k` (1–24), `K` (0–11), `h`
/// (1–12), `a` (`AM`/`PM`), `m`, `s`, `S` (milliseconds); a run of a
/// number's letter is its least width, zero-padded. Text in single quotes
/// is copied, `''` is a quote; other characters are copied. Letters it
/// does not know are copied too ([`bad_pattern_letter`] finds them first).
pub fn date_format(ts: i64, pattern: &str) -> String {
    let days = ts.div_euclid(DAY);
    let rem = ts.rem_euclid(DAY);
    let (y, mo, d) = civil_from_days(days);
    let hour = rem / 3_600_000;
    let dow = (days + 4).rem_euclid(7) as usize;
    let mut out = String::new();
    let chars: alloc::vec::Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        if c == '\'' {
            if n >= 2 {
                // `''` is a quote; an odd run opens a quoted text after.
                for _ in 0..n / 2 {
                    out.push('\'');
                }
                i += n / 2 * 2;
                continue;
            }
            let mut j = i + 1;
            while j < chars.len() {
                if chars[j] == '\'' {
                    if chars.get(j + 1) == Some(&'\'') {
                        out.push('\'');
                        j += 2;
                        continue;
                    }
                    break;
                }
                out.push(chars[j]);
                j += 1;
            }
            i = j + 1;
            continue;
        }
        let num = |out: &mut String, v: i64| {
            let _ = write!(out, "{v:0n$}");
        };
        match c {
            'y' if n == 2 => num(&mut out, y.rem_euclid(100)),
            'y' => num(&mut out, y),
            'M' if n >= 4 => out.push_str(MONTHS[mo as usize - 1]),
            'M' if n == 3 => out.push_str(&MONTHS[mo as usize - 1][..3]),
            'M' => num(&mut out, i64::from(mo)),
            'd' => num(&mut out, i64::from(d)),
            'D' => num(&mut out, days - days_from_civil(y, 1, 1) + 1),
            'E' if n >= 4 => out.push_str(WEEKDAYS[dow]),
            'E' => out.push_str(&WEEKDAYS[dow][..3]),
            'u' => num(&mut out, (dow as i64 + 6) % 7 + 1),
            'H' => num(&mut out, hour),
            'k' => num(&mut out, if hour == 0 { 24 } else { hour }),
            'K' => num(&mut out, hour % 12),
            'h' => num(&mut out, if hour % 12 == 0 { 12 } else { hour % 12 }),
            'a' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'm' => num(&mut out, rem / 60_000 % 60),
            's' => num(&mut out, rem / 1000 % 60),
            'S' => num(&mut out, rem % 1000),
            _ => {
                for _ in 0..n {
                    out.push(c);
                }
            }
        }
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch ms of a UTC date and time.
    fn at(y: i64, m: u32, d: u32, h: i64, mi: i64, s: i64, ms: i64) -> i64 {
        days_from_civil(y, m, d) * DAY + h * 3_600_000 + mi * 60_000 + s * 1000 + ms
    }

    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn extract_fields_by_hand() {
        // 2020-04-15 08:05:07.123 was a Wednesday, day 106, ISO week 16.
        let t = at(2020, 4, 15, 8, 5, 7, 123);
        let got: alloc::vec::Vec<i64> = [
            TimeField::Year,
            TimeField::Quarter,
            TimeField::Month,
            TimeField::Week,
            TimeField::Day,
            TimeField::DayOfYear,
            TimeField::DayOfWeek,
            TimeField::Hour,
            TimeField::Minute,
            TimeField::Second,
        ]
        .iter()
        .map(|&f| extract(t, f))
        .collect();
        assert_eq!(got, [2020, 2, 4, 16, 15, 106, 4, 8, 5, 7]);
        // Before 1970, and ISO weeks at year ends: 2021-01-03 (a Sunday)
        // is in week 53 of 2020; 2024-12-30 (a Monday) in week 1 of 2025.
        assert_eq!(
            extract(at(1969, 12, 31, 23, 59, 59, 999), TimeField::Second),
            59
        );
        assert_eq!(
            extract(at(1969, 12, 31, 23, 0, 0, 0), TimeField::DayOfWeek),
            4
        );
        assert_eq!(extract(at(2021, 1, 3, 0, 0, 0, 0), TimeField::Week), 53);
        assert_eq!(extract(at(2024, 12, 30, 0, 0, 0, 0), TimeField::Week), 1);
        assert_eq!(
            extract(at(2024, 12, 31, 0, 0, 0, 0), TimeField::DayOfYear),
            366
        );
    }

    #[test]
    fn diff_and_add_as_calcite() {
        let a = at(2020, 1, 31, 10, 0, 0, 0);
        assert_eq!(
            timestamp_diff(TimeField::Month, a, at(2020, 2, 29, 9, 0, 0, 0)),
            Some(0)
        );
        assert_eq!(
            timestamp_diff(TimeField::Month, a, at(2020, 2, 29, 10, 0, 0, 0)),
            Some(1)
        );
        assert_eq!(
            timestamp_diff(TimeField::Month, a, at(2020, 3, 31, 9, 59, 0, 0)),
            Some(1)
        );
        assert_eq!(
            timestamp_diff(TimeField::Year, a, at(2023, 1, 31, 10, 0, 0, 0)),
            Some(3)
        );
        assert_eq!(
            timestamp_diff(TimeField::Quarter, at(2023, 1, 31, 10, 0, 0, 0), a),
            Some(-12)
        );
        assert_eq!(timestamp_diff(TimeField::Second, a, a - 1500), Some(-1));
        assert_eq!(timestamp_diff(TimeField::Day, a, a + 2 * DAY - 1), Some(1));
        assert_eq!(
            timestamp_add(TimeField::Month, 1, a),
            Some(at(2020, 2, 29, 10, 0, 0, 0))
        );
        assert_eq!(
            timestamp_add(TimeField::Year, -1, at(2020, 2, 29, 0, 0, 0, 0)),
            Some(at(2019, 2, 28, 0, 0, 0, 0))
        );
        assert_eq!(
            timestamp_add(TimeField::Hour, 25, a),
            Some(at(2020, 2, 1, 11, 0, 0, 0))
        );
        assert_eq!(timestamp_add(TimeField::DayOfWeek, 1, a), None);
    }

    #[test]
    fn floor_and_ceil_to_units() {
        let t = at(2020, 5, 15, 8, 5, 7, 123);
        assert_eq!(
            floor_to(t, TimeField::Hour, false),
            Some(at(2020, 5, 15, 8, 0, 0, 0))
        );
        assert_eq!(
            floor_to(t, TimeField::Hour, true),
            Some(at(2020, 5, 15, 9, 0, 0, 0))
        );
        assert_eq!(
            floor_to(t, TimeField::Quarter, false),
            Some(at(2020, 4, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            floor_to(t, TimeField::Quarter, true),
            Some(at(2020, 7, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            floor_to(t, TimeField::Year, true),
            Some(at(2021, 1, 1, 0, 0, 0, 0))
        );
        let day = at(2020, 5, 15, 0, 0, 0, 0);
        assert_eq!(floor_to(day, TimeField::Day, true), Some(day));
        assert_eq!(floor_to(-1, TimeField::Second, false), Some(-1000));
        assert_eq!(floor_to(t, TimeField::Week, false), None);
    }

    #[test]
    fn date_format_with_java_letters() {
        let t = at(2020, 4, 5, 8, 5, 7, 23);
        assert_eq!(
            date_format(t, "yyyy-MM-dd HH:mm:ss.SSS"),
            "2020-04-05 08:05:07.023"
        );
        assert_eq!(date_format(t, "yy/M/d H:m:s S"), "20/4/5 8:5:7 23");
        assert_eq!(
            date_format(t, "EEE, d MMM yyyy hh:mm a"),
            "Sun, 5 Apr 2020 08:05 AM"
        );
        assert_eq!(date_format(t, "EEEE MMMM D u k K"), "Sunday April 96 7 8 8");
        assert_eq!(
            date_format(t, "'week of' yyyy 'o''clock' ''"),
            "week of 2020 o'clock '"
        );
        assert_eq!(date_format(at(2020, 4, 5, 0, 0, 0, 0), "k h a"), "24 12 AM");
        assert_eq!(bad_pattern_letter("yyyy-MM-dd'T'HH"), None);
        assert_eq!(bad_pattern_letter("yyyy-MM-dd Z"), Some('Z'));
        assert_eq!(bad_pattern_letter("'open"), Some('\''));
    }
}
