//! Fast, exact number formatting for CSV output, and parsing for CSV input.
//!
//! Floats are written rounded to 6 decimals, exactly as Rust's `{:.6}`
//! would (round half to even on the exact binary value), but about ten
//! times faster: the common case scales by 10⁶ and rounds in integer
//! arithmetic, and any value whose scaled fraction lies too close to a
//! rounding boundary falls back to `{:.6}` itself.
//!
//! Floats are read by [`parse_f64`], which gives exactly what
//! `str::parse::<f64>` gives: the usual sensor reading (`[-]digits[.digits]`,
//! at most 15 significant digits) is one integer and one correctly rounded
//! division, anything else goes to `str::parse`.

use std::io::Write;

/// Appends `x` with 6 decimals (`NaN`, `inf`, `-inf` for non-finite values).
pub fn push_f64(out: &mut Vec<u8>, x: f64) {
    // 2^52: the scaled value and its unit in the last place are exact here.
    const LIMIT: f64 = 4_503_599_627_370_496.0;
    let scaled = x * 1e6;
    if scaled.is_finite() && scaled.abs() < LIMIT {
        // Truncation and the fraction by casts (exact below 2^52), not
        // `trunc`/`round`, which are library calls on baseline x86-64.
        let t = scaled as i64;
        let frac = (scaled - t as f64).abs();
        let a = scaled.abs();
        let ulp = f64::from_bits(a.to_bits() + 1) - a;
        // The product is within half an ulp of x·10⁶: only a fraction within
        // an ulp of .5 could round differently from the exact value. Those
        // (a mean over 8 or 16 readings of 4 decimals ends in a 5 at the 7th)
        // are rounded on the exact value, in integers.
        let v = if (frac - 0.5).abs() > ulp {
            // Rounded half away from zero, as `round` (never exactly .5 here).
            match frac > 0.5 {
                false => t,
                true if scaled < 0.0 => t - 1,
                true => t + 1,
            }
        } else {
            match scaled_exact(x) {
                Some(v) => v,
                None => {
                    let _ = write!(out, "{x:.6}");
                    return;
                }
            }
        };
        // A negative x never rounds to a positive v, and -0.0 and the
        // negatives that round to zero print as `-0.000000`, as `{:.6}`.
        let neg = x.is_sign_negative() as usize;
        let a = v.unsigned_abs();
        let (ip, f) = (a / 1_000_000, (a % 1_000_000) as usize);
        let n = digits(ip);
        // '.' and the 6 decimals, in a register.
        let frac = b'.' as u64
            | (pair16(f / 10_000) as u64) << 8
            | (pair16(f / 100 % 100) as u64) << 24
            | (pair16(f % 100) as u64) << 40;
        if n <= 8 {
            // Sign, digits and decimals put together in registers and
            // stored once: bytes written one by one into a buffer and then
            // copied in wider moves stall the copy (no store forwarding).
            let mut w = (b'-' as u128) * neg as u128;
            w |= (digit_word(ip, n) as u128) << (8 * neg);
            w |= (frac as u128) << (8 * (neg + n));
            push_prefix(out, &w.to_le_bytes(), neg + n + 7);
            return;
        }
        // sign, at most 16 integer digits (|v| < 2^52), '.', 6 decimals
        let mut buf = [b'-'; 24];
        put_digits(&mut buf[..neg + n], ip);
        buf[neg + n..neg + n + 7].copy_from_slice(&frac.to_le_bytes()[..7]);
        push_prefix(out, &buf, neg + n + 7);
        return;
    }
    let _ = write!(out, "{x:.6}");
}

/// `x·10⁶` rounded to the nearest integer on the exact binary value of `x`
/// (`None` for an exact tie, which `{:.6}` settles, and for values whose
/// scaled form has no fraction bits to look at: those are never near .5).
#[inline(never)]
fn scaled_exact(x: f64) -> Option<i64> {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = bits & ((1 << 52) - 1);
    // |x| = m · 2^e exactly
    let (m, e) = match biased {
        0 => (mantissa, -1074),
        _ => (mantissa | 1 << 52, biased - 1075),
    };
    // m·10⁶ < 2^73; the fraction bits are the low -e bits.
    let shift = u32::try_from(-e).ok().filter(|s| (1..=120).contains(s))?;
    let big = m as u128 * 1_000_000;
    let (int, rem, half) = (big >> shift, big & ((1 << shift) - 1), 1u128 << (shift - 1));
    let r = match rem.cmp(&half) {
        std::cmp::Ordering::Less => int,
        std::cmp::Ordering::Greater => int + 1,
        std::cmp::Ordering::Equal => return None,
    };
    let r = i64::try_from(r).ok()?;
    Some(if x.is_sign_negative() { -r } else { r })
}

/// `10^i`, exact in `f64` for `i ≤ 22`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses `b` as a float, exactly as `str::parse::<f64>` would (the same
/// value, bit for bit, and `None` where it gives an error).
#[inline(always)]
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    match parse_decimal(b) {
        Some(v) => Some(v),
        None => parse_f64_slow(b),
    }
}

#[cold]
#[inline(never)]
fn parse_f64_slow(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The value of eight ASCII digits read as a little-endian word, `None`
/// if one is not a digit (the SWAR method of Lemire's fast_float).
#[inline(always)]
pub(crate) fn eight_digits(w: u64) -> Option<u64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // Each byte is 0x30..=0x39: its high nibble is 3, and adding 6 does not
    // carry into it.
    if (w & HIGH) | ((w.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    Some(digits_value(w))
}

/// Non-zero bits in the bytes of `w` that are not ASCII digits; exact up
/// to and including the first such byte (a carry out of a byte ≥ 0xFA, not
/// a digit itself, can only touch the bytes after it).
#[inline(always)]
pub(crate) fn not_digits(w: u64) -> u64 {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    ((w & HIGH) ^ ZEROS) | ((w.wrapping_add(0x0606_0606_0606_0606) & HIGH) ^ ZEROS)
}

/// The value of eight ASCII digits read as a little-endian word (every
/// byte a digit: see [`eight_digits`]).
#[inline(always)]
pub(crate) fn digits_value(w: u64) -> u64 {
    let v = w - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = (v & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))
        >> 32;
    v & 0xFFFF_FFFF
}

/// 0x80 in each byte of `x` that equals `c`, 0 elsewhere (exact: no carry
/// crosses a byte).
#[inline(always)]
pub(crate) fn eq_bytes(x: u64, c: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let t = x ^ (0x0101_0101_0101_0101 * c as u64);
    !(((t & LOW7) + LOW7) | t | LOW7)
}

/// A number in [`parse_decimal`]'s form followed by a newline, at the
/// start of `b`: its value (what `parse_decimal` gives for the bytes before
/// the newline) and the newline's index. `None` for anything else.
#[inline(always)]
pub(crate) fn parse_decimal_nl(b: &[u8]) -> Option<(f64, usize)> {
    let (v, i) = decimal_prefix(b)?;
    (b.get(i) == Some(&b'\n')).then_some((v, i))
}

/// `[-]digits[.digits]`, at most 19 bytes after the sign, whose digits, read
/// as one integer `m`, are at most 2^53: then `m` and `10^decimals` are exact
/// doubles and one IEEE division rounds their quotient correctly, as
/// `str::parse` does (Clinger's fast path). `None` for anything else.
#[inline(always)]
fn parse_decimal(b: &[u8]) -> Option<f64> {
    let (v, i) = decimal_prefix(b)?;
    (i == b.len()).then_some(v)
}

/// The `[-]digits[.digits]` at the start of `b` (at most 19 bytes after the
/// sign, digits read as one integer at most 2^53, at least one digit on
/// each side of a point) and where it stops; `None` if `b` does not start
/// with one.
#[inline(always)]
fn decimal_prefix(b: &[u8]) -> Option<(f64, usize)> {
    /// The digits from `i` on, folded into `m`: where they stop and `m`.
    #[inline(always)]
    fn digits(b: &[u8], mut i: usize, mut m: u64) -> (usize, u64) {
        // Wrapping: `m` only counts with at most 19 digits (checked below).
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            m = m.wrapping_mul(10).wrapping_add(d as u64);
            i += 1;
        }
        (i, m)
    }
    let neg = b.first() == Some(&b'-');
    let start = neg as usize;
    let (mut i, mut m) = digits(b, start, 0);
    if i == start {
        return None;
    }
    let mut decimals = 0;
    if b.get(i) == Some(&b'.') {
        let first = i + 1;
        (i, m) = digits(b, first, m);
        decimals = i - first;
        if decimals == 0 {
            return None;
        }
    }
    if i - start > 19 || m > 1 << 53 {
        return None;
    }
    let v = m as f64 / POW10[decimals];
    Some((if neg { -v } else { v }, i))
}

/// `00` to `99`.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// The two digits of `n < 100`.
#[inline(always)]
fn pair(n: usize) -> &'static [u8] {
    &PAIRS[2 * n..2 * n + 2]
}

/// The two digits of `n < 100` as the bytes of a little-endian `u16`.
#[inline(always)]
fn pair16(n: usize) -> u16 {
    u16::from_le_bytes([PAIRS[2 * n], PAIRS[2 * n + 1]])
}

/// The `n <= 8` digits of `v < 10ⁿ` ([`digits`]), in order in the bytes
/// of a little-endian `u64` (the first digit in its lowest byte).
#[inline(always)]
fn digit_word(mut v: u64, n: usize) -> u64 {
    let mut w = 0u64;
    let mut i = n;
    while v >= 100 {
        i -= 2;
        w |= (pair16((v % 100) as usize) as u64) << (8 * i);
        v /= 100;
    }
    if v >= 10 {
        w | (pair16(v as usize) as u64) << (8 * (i - 2))
    } else {
        w | (b'0' as u64 + v) << (8 * (i - 1))
    }
}

/// The number of decimal digits of `v` (1 for 0).
#[inline(always)]
fn digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes `v` in decimal into the whole of `buf`, right-aligned; `buf` is
/// [`digits`]`(v)` long (or longer, and then its start is left alone).
#[inline(always)]
fn put_digits(buf: &mut [u8], mut v: u64) {
    // Two digits a step: half the divisions of a digit-by-digit loop.
    let mut i = buf.len();
    while v >= 100 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(pair((v % 100) as usize));
        v /= 100;
    }
    if v >= 10 {
        buf[i - 2..i].copy_from_slice(pair(v as usize));
    } else {
        buf[i - 1] = b'0' + v as u8;
    }
}

/// Appends the first `n` bytes of `buf`. The whole fixed-size buffer is
/// copied (a few vector moves, where a copy of `n` bytes is a call to
/// `memcpy`) and the tail cut off again.
#[inline(always)]
fn push_prefix<const N: usize>(out: &mut Vec<u8>, buf: &[u8; N], n: usize) {
    let len = out.len();
    out.extend_from_slice(buf);
    out.truncate(len + n);
}

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let n = digits(v);
    if n <= 8 {
        push_prefix(out, &digit_word(v, n).to_le_bytes(), n);
        return;
    }
    let mut buf = [0u8; 24];
    put_digits(&mut buf[..n], v);
    push_prefix(out, &buf, n);
}

/// Appends a signed integer in decimal.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(x: f64) -> String {
        let mut v = Vec::new();
        push_f64(&mut v, x);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn matches_std_on_edge_cases() {
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.0000005,
            0.0000015,
            2.5e-7,
            -2.5e-7,
            123456.1234565,
            1e11,
            1e13,
            -1e300,
            f64::MIN_POSITIVE,
            21.8924,
            0.1 + 0.2,
        ] {
            assert_eq!(f(x), format!("{x:.6}"), "{x}");
        }
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "inf");
        let mut v = Vec::new();
        push_i64(&mut v, i64::MIN);
        assert_eq!(String::from_utf8(v).unwrap(), i64::MIN.to_string());
    }

    fn std_parse(s: &str) -> Option<u64> {
        s.parse::<f64>().ok().map(f64::to_bits)
    }

    fn fast_parse(s: &str) -> Option<u64> {
        parse_f64(s.as_bytes()).map(f64::to_bits)
    }

    #[test]
    fn parse_matches_std_on_edge_cases() {
        for s in [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "21.8924",
            "-21.8924",
            "0.1",
            "0.3",
            "9007199254740992",
            "9007199254740993",
            "900719925474099.3",
            "123456789012345678",
            "1234567890123456789",
            "0.000000000000000000001",
            "0.0000000000000000000001",
            "1.",
            ".5",
            "-",
            "",
            "+1.5",
            "1e5",
            "1.5e-3",
            " 1",
            "1 ",
            "1..2",
            "1.2.3",
            "--1",
            "inf",
            "NaN",
            "-inf",
            "1,5",
            "0x10",
            "00012.50",
            "99999999999999999999",
        ] {
            assert_eq!(fast_parse(s), std_parse(s), "{s:?}");
        }
        assert!(parse_f64(b"\xff1").is_none());
    }

    proptest! {
        #[test]
        fn parse_matches_std_on_decimals(
            neg in any::<bool>(),
            int in "[0-9]{1,12}",
            frac in proptest::option::of("[0-9]{0,10}"),
        ) {
            let s = format!("{}{int}{}", if neg { "-" } else { "" },
                frac.map_or(String::new(), |f| format!(".{f}")));
            prop_assert_eq!(fast_parse(&s), std_parse(&s), "{}", s);
        }

        #[test]
        fn parse_matches_std_on_printed_floats(x in proptest::num::f64::ANY, d in 0usize..20) {
            for s in [x.to_string(), format!("{x:.d$}"), format!("{x:e}")] {
                prop_assert_eq!(fast_parse(&s), std_parse(&s), "{}", s);
            }
        }

        #[test]
        fn parse_matches_std_on_any_text(s in "[-+0-9.eE]{0,24}") {
            prop_assert_eq!(fast_parse(&s), std_parse(&s), "{}", s);
        }

        #[test]
        fn matches_std_fmt(x in proptest::num::f64::ANY) {
            prop_assert_eq!(f(x), format!("{x:.6}"));
        }

        #[test]
        fn a_number_before_a_newline_parses_as_the_number_alone(
            s in "-?[0-9]{0,21}(\\.[0-9]{0,21})?|[-+0-9.eE]{0,10}",
            rest in "[0-9,.\n]{0,4}",
        ) {
            let line = format!("{s}\n{rest}");
            let got = parse_decimal_nl(line.as_bytes()).map(|(v, i)| (v.to_bits(), i));
            let want = parse_decimal(s.as_bytes()).map(|v| (v.to_bits(), s.len()));
            prop_assert_eq!(got, want, "{:?}", line);
        }

        #[test]
        fn matches_std_fmt_near_ties(
            sum in -100_000_000i64..100_000_000,
            n in prop::sample::select(vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 3.0, 7.0]),
            odd in 0u64..1_000_000,
            shift in 1i32..40,
        ) {
            // Means of readings with 4 decimals end in a 5 at the 7th
            // decimal; (2k+1)·5⁶/2^j is an exact tie at the 7th.
            let mean = sum as f64 / 1e4 / n;
            let tie = (2 * odd + 1) as f64 * 15_625.0 / 2f64.powi(shift);
            for x in [mean, -mean, tie, -tie] {
                prop_assert_eq!(f(x), format!("{x:.6}"));
            }
        }

        #[test]
        fn appended_values_follow_what_is_there(
            x in proptest::num::f64::ANY,
            y in -1e6f64..1e6,
            u in any::<u64>(),
            i in any::<i64>(),
        ) {
            // Each value is written after the bytes already in the buffer
            // and leaves nothing behind it.
            let mut b = b"row:".to_vec();
            push_f64(&mut b, x);
            b.push(b',');
            push_u64(&mut b, u);
            b.push(b',');
            push_f64(&mut b, y);
            b.push(b',');
            push_i64(&mut b, i);
            let want = format!("row:{x:.6},{u},{y:.6},{i}");
            prop_assert_eq!(String::from_utf8(b).unwrap(), want);
        }

        #[test]
        fn integers_match_std(v in any::<u64>(), i in any::<i64>(), d in 0u32..20) {
            let mut b = Vec::new();
            for u in [v, v / 10u64.pow(d), d as u64] {
                b.clear();
                push_u64(&mut b, u);
                prop_assert_eq!(String::from_utf8(b.clone()).unwrap(), u.to_string());
            }
            b.clear();
            push_i64(&mut b, i);
            prop_assert_eq!(String::from_utf8(b).unwrap(), i.to_string());
        }

        #[test]
        fn matches_std_fmt_on_sensor_like_values(i in -10_000_000_000i64..10_000_000_000, d in 0u32..8) {
            let x = i as f64 / 10f64.powi(d as i32);
            prop_assert_eq!(f(x), format!("{x:.6}"));
        }
    }
}
