//! Fast, exact number formatting for CSV output.
//!
//! Floats are written rounded to 6 decimals, exactly as Rust's `{:.6}`
//! would (round half to even on the exact binary value), but about ten
//! times faster: the common case scales by 10⁶ and rounds in integer
//! arithmetic, and any value whose scaled fraction lies too close to a
//! rounding boundary falls back to `{:.6}` itself.

use std::io::Write;

/// Appends `x` with 6 decimals (`NaN`, `inf`, `-inf` for non-finite values).
pub fn push_f64(out: &mut Vec<u8>, x: f64) {
    // 2^52: the scaled value and its unit in the last place are exact here.
    const LIMIT: f64 = 4_503_599_627_370_496.0;
    let scaled = x * 1e6;
    if scaled.is_finite() && scaled.abs() < LIMIT {
        let r = scaled.round();
        let frac = (scaled - scaled.trunc()).abs();
        let a = scaled.abs();
        let ulp = f64::from_bits(a.to_bits() + 1) - a;
        // The product is within half an ulp of x·10⁶: only a fraction within
        // an ulp of .5 could round differently from the exact value.
        if (frac - 0.5).abs() > ulp {
            let v = r as i64;
            if v == 0 && x.is_sign_negative() && x != 0.0 {
                out.extend_from_slice(b"-0.000000");
                return;
            }
            if v < 0 || (v == 0 && x.is_sign_negative()) {
                out.push(b'-');
            }
            let a = v.unsigned_abs();
            push_u64(out, a / 1_000_000);
            out.push(b'.');
            let f = a % 1_000_000;
            let mut buf = [b'0'; 6];
            let mut f2 = f;
            for i in (0..6).rev() {
                buf[i] = b'0' + (f2 % 10) as u8;
                f2 /= 10;
            }
            out.extend_from_slice(&buf);
            return;
        }
    }
    let _ = write!(out, "{x:.6}");
}

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
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

    proptest! {
        #[test]
        fn matches_std_fmt(x in proptest::num::f64::ANY) {
            prop_assert_eq!(f(x), format!("{x:.6}"));
        }

        #[test]
        fn matches_std_fmt_on_sensor_like_values(i in -10_000_000_000i64..10_000_000_000, d in 0u32..8) {
            let x = i as f64 / 10f64.powi(d as i32);
            prop_assert_eq!(f(x), format!("{x:.6}"));
        }
    }
}
