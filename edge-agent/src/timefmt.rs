//! Calendar timestamps (`2014-04-10 07:15:00`, UTC) ↔ milliseconds since
//! the epoch, without a time-zone database: input timestamps are UTC.

pub(crate) use weir_core::time::{civil_from_days, days_from_civil, days_in_month};

pub(crate) fn num(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32))
}

/// Seconds since the epoch of the `YYYY-MM-DD?HH:MM:SS` that starts `b`,
/// UTC; the character between date and time is the caller's to check.
pub(crate) fn civil_seconds(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y as i64, mo)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    Some(((days * 24 + h as i64) * 60 + mi as i64) * 60 + sec as i64)
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff][Z]` (or with `T`) as UTC milliseconds.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let b = b.strip_suffix(b"Z").unwrap_or(b);
    if b.len() < 19 || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    let secs = civil_seconds(b)?;
    let mut ms = 0i64;
    if b.len() > 19 {
        let frac = b[19..].strip_prefix(b".")?;
        if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut v = 0i64;
        for i in 0..3 {
            v = v * 10 + frac.get(i).map_or(0, |c| (c - b'0') as i64);
        }
        ms = v;
    }
    Some(secs * 1000 + ms)
}

/// Formats UTC milliseconds as `YYYY-MM-DD HH:MM:SS` (with `.fff` when the
/// milliseconds are not zero).
pub fn format_datetime_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, f) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if f == 0 {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{f:03}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_points() {
        assert_eq!(parse_datetime_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_datetime_ms("2014-04-10 07:15:00"),
            Some(1_397_114_100_000)
        );
        assert_eq!(
            parse_datetime_ms("2000-02-29T12:00:00.5Z"),
            Some(951_825_600_500)
        );
        assert_eq!(parse_datetime_ms("2001-02-29 00:00:00"), None);
        assert_eq!(parse_datetime_ms("2014-04-10 7:15:00"), None);
        assert_eq!(parse_datetime_ms("garbage"), None);
    }

    #[test]
    fn round_trip_over_centuries() {
        let mut t = -2_208_988_800_000i64; // 1900
        while t < 7_258_118_400_000 {
            let s = format_datetime_ms(t);
            assert_eq!(parse_datetime_ms(&s), Some(t), "{s}");
            t += 86_400_000 * 37 + 3_723_456;
        }
    }
}
