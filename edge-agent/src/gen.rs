//! `weir gen`: deterministic synthetic inputs.
//!
//! W1 (see `docs/w1.md`): 1,000 sensors; event i has base time
//! t0 + i ms and timestamp base − U{0..1999}, so disorder stays strictly
//! inside the 2 s watermark bound; value = per-sensor sine + gaussian noise +
//! rare spikes. All maths through `libm`, so every platform writes the same
//! bytes for the same seed.

use std::io::{self, Write};

use crate::numfmt::{push_i64, push_u64};

/// SplitMix64: small, fast, good enough for test data, and fully specified.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
    }
}

/// W1 parameters.
#[derive(Clone, Debug)]
pub struct W1 {
    /// Number of events.
    pub events: u64,
    /// Seed.
    pub seed: u64,
    /// Number of sensors.
    pub sensors: u64,
    /// Base time of the first event (ms).
    pub t0: i64,
    /// Maximum disorder (ms, exclusive).
    pub disorder: u64,
}

impl W1 {
    /// The reference workload: 1,000 sensors, 2 s disorder.
    pub fn new(events: u64, seed: u64) -> Self {
        W1 {
            events,
            seed,
            sensors: 1000,
            t0: 1_700_000_000_000,
            disorder: 2000,
        }
    }

    /// Writes the CSV (`sensor,ts_ms,value`, no header).
    ///
    /// # Errors
    /// Write errors of `out`.
    pub fn write<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let mut rng = SplitMix64::new(self.seed);
        let mut buf = Vec::with_capacity(1 << 16);
        for i in 0..self.events {
            let s = rng.below(self.sensors);
            let ts = self.t0 + i as i64 - rng.below(self.disorder.max(1)) as i64;
            let period = 60_000.0 + (s % 13) as f64 * 10_000.0;
            let phase = (s % 17) as f64 * 0.37;
            let base = 20.0
                + (s % 10) as f64
                + (1.0 + (s % 7) as f64 * 0.5)
                    * libm::sin(core::f64::consts::TAU * ts as f64 / period + phase);
            let sigma = 0.1 + (s % 5) as f64 * 0.05;
            let mut v = base + sigma * rng.gaussian();
            if rng.below(10_000) == 0 {
                let sign = if rng.below(2) == 0 { -1.0 } else { 1.0 };
                v += sign * (5.0 + 5.0 * rng.next_f64()) * (1.0 + (s % 7) as f64 * 0.5);
            }
            buf.push(b's');
            let mut id = [b'0'; 4];
            let mut n = s;
            for d in id.iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            buf.extend_from_slice(&id);
            buf.push(b',');
            push_i64(&mut buf, ts);
            buf.push(b',');
            // 4 decimals, rounded half away from zero on the scaled value.
            let scaled = libm::round(v * 10_000.0) as i64;
            if scaled < 0 {
                buf.push(b'-');
            }
            let a = scaled.unsigned_abs();
            push_u64(&mut buf, a / 10_000);
            buf.push(b'.');
            let f = a % 10_000;
            buf.extend_from_slice(&[
                b'0' + (f / 1000) as u8,
                b'0' + (f / 100 % 10) as u8,
                b'0' + (f / 10 % 10) as u8,
                b'0' + (f % 10) as u8,
            ]);
            buf.push(b'\n');
            if buf.len() > (1 << 16) - 64 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_within_the_bound() {
        let mut a = Vec::new();
        W1::new(20_000, 7).write(&mut a).unwrap();
        let mut b = Vec::new();
        W1::new(20_000, 7).write(&mut b).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        W1::new(20_000, 8).write(&mut c).unwrap();
        assert_ne!(a, c);
        let text = String::from_utf8(a).unwrap();
        let mut max = i64::MIN;
        let mut sensors = std::collections::HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 3);
            assert!(f[0].len() == 5 && f[0].starts_with('s'));
            sensors.insert(f[0].to_string());
            let ts: i64 = f[1].parse().unwrap();
            assert!(ts > max.saturating_sub(2000), "disorder beyond the bound");
            max = max.max(ts);
            let v: f64 = f[2].parse().unwrap();
            assert!(v.is_finite() && f[2].split('.').nth(1).unwrap().len() == 4);
        }
        assert_eq!(sensors.len(), 1000);
    }
}
