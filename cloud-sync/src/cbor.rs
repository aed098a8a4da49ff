//! A small deterministic CBOR writer (RFC 8949 §4.2 core deterministic
//! encoding: shortest heads, definite lengths, shortest exact float).
//!
//! Writing to a `Vec` cannot fail, so these functions return nothing; reading
//! goes through `minicbor::Decoder`, which checks every byte.

/// Writes a head: major type `major` (0..=7) with argument `arg`, shortest form.
pub(crate) fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
    head(out, 0, v);
}

pub(crate) fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, 0, v as u64);
    } else {
        // -1 - v, computed without overflow for i64::MIN.
        head(out, 1, !(v as u64));
    }
}

pub(crate) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn array(out: &mut Vec<u8>, len: u64) {
    head(out, 4, len);
}

pub(crate) fn map(out: &mut Vec<u8>, len: u64) {
    head(out, 5, len);
}

pub(crate) fn bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xf5 } else { 0xf4 });
}

/// A float as f32 when that keeps every bit of the value (NaN included),
/// else as f64. (No f16: every decoder reads f32 without extra features.)
pub(crate) fn float(out: &mut Vec<u8>, v: f64) {
    let narrow = v as f32;
    if f64::from(narrow).to_bits() == v.to_bits() {
        out.push(0xfa);
        out.extend_from_slice(&narrow.to_bits().to_be_bytes());
    } else {
        out.push(0xfb);
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    #[test]
    fn heads_are_shortest_and_agree_with_minicbor() {
        for v in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let b = enc(|o| uint(o, v));
            assert_eq!(minicbor::Decoder::new(&b).u64().unwrap(), v);
        }
        for v in [0i64, -1, -24, -25, -256, -257, i64::MIN, i64::MAX] {
            let b = enc(|o| int(o, v));
            assert_eq!(minicbor::Decoder::new(&b).i64().unwrap(), v);
        }
        assert_eq!(enc(|o| uint(o, 500)), [0x19, 0x01, 0xf4]);
    }

    #[test]
    fn floats_keep_every_bit() {
        for v in [0.0, -0.0, 1.5, 0.1, 1e300, f64::NAN, f64::INFINITY, 21.1234] {
            let b = enc(|o| float(o, v));
            let back = minicbor::Decoder::new(&b).f64().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        }
        assert_eq!(enc(|o| float(o, 1.5)).len(), 5);
        assert_eq!(enc(|o| float(o, 0.1)).len(), 9);
    }
}
