//! `weir gen`: deterministic synthetic inputs.
//!
//! Pump (see [`Pump`]): one simulated pump's 8 channels at 1 Hz with one
//! injected multi-sensor fault, labelled, for the multivariate detector
//! (`examples/pump_health.toml`).
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

/// A multi-sensor fault of [`Pump`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PumpFault {
    /// Inlet pressure drops, both vibrations rise and get noisier, flow
    /// drops 3 % and gets noisier.
    Cavitation,
    /// Vibration 1 ramps to +6 sd and temperature to +2 °C over 300
    /// samples; current +1 %.
    Bearing,
    /// Flow freezes at its onset value while the load moves on; outlet
    /// pressure overreacts.
    Valve,
}

impl std::str::FromStr for PumpFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cavitation" => Ok(PumpFault::Cavitation),
            "bearing" => Ok(PumpFault::Bearing),
            "valve" => Ok(PumpFault::Valve),
            o => Err(format!(
                "unknown fault `{o}`: use cavitation, bearing or valve"
            )),
        }
    }
}

/// The pump's channels, in CSV order.
pub const PUMP_FIELDS: [&str; 8] = [
    "flow", "p_in", "p_out", "current", "vib1", "vib2", "temp", "rpm",
];

/// One simulated pump (the model of `core/examples/pump_bench.rs`): 8
/// channels driven by a slowly wandering load (AR(1), φ = 0.99), each with
/// its own noise; temperature lags the load. A fault runs over
/// `onset..onset + length`.
#[derive(Clone, Debug)]
pub struct Pump {
    /// Samples (1 s apart).
    pub samples: u64,
    /// Seed.
    pub seed: u64,
    /// The fault.
    pub fault: PumpFault,
    /// First faulty sample.
    pub onset: u64,
    /// Faulty samples.
    pub length: u64,
    /// Time of the first sample (ms).
    pub t0: i64,
}

impl Pump {
    /// `samples` samples with the fault over the third quarter.
    pub fn new(samples: u64, seed: u64, fault: PumpFault) -> Self {
        Pump {
            samples,
            seed,
            fault,
            onset: samples / 2,
            length: samples / 4,
            t0: 1_700_000_000_000,
        }
    }

    /// Writes the CSV: a header `pump,ts,flow,…,rpm,fault`, then one row a
    /// second, `fault` 1 on faulty samples. Key `pump-1`.
    ///
    /// # Errors
    /// Write errors of `out`.
    pub fn write<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let mut r = SplitMix64::new(self.seed);
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(b"pump,ts");
        for f in PUMP_FIELDS {
            buf.push(b',');
            buf.extend_from_slice(f.as_bytes());
        }
        buf.extend_from_slice(b",fault\n");
        let (mut l, mut lt, mut l_onset) = (0.0f64, 0.0f64, 0.0f64);
        let end = self.onset.saturating_add(self.length);
        for i in 0..self.samples {
            l = 0.99 * l + libm::sqrt(1.0 - 0.99 * 0.99) * 0.1 * r.gaussian();
            lt += 0.02 * (l - lt);
            let load = 1.0 + l;
            let mut e = [0.0; 8];
            for v in &mut e {
                *v = r.gaussian();
            }
            let mut x = [
                10.0 * load + 0.2 * e[0],
                1.0 - 0.05 * load + 0.02 * e[1],
                3.0 + 2.0 * load + 0.05 * e[2],
                5.0 + 3.0 * load + 0.1 * e[3],
                0.5 + 0.1 * load + 0.05 * e[4],
                0.4 + 0.08 * load + 0.05 * e[5],
                40.0 + 5.0 * (1.0 + lt) + 0.2 * e[6],
                1450.0 + 20.0 * load + 2.0 * e[7],
            ];
            if i == self.onset {
                l_onset = l;
            }
            let on = (self.onset..end).contains(&i);
            if on {
                let k = ((i - self.onset) as f64 / 300.0).min(1.0);
                match self.fault {
                    PumpFault::Cavitation => {
                        x[1] -= 0.03;
                        x[4] += 0.05 + 0.05 * e[4];
                        x[5] += 0.05 + 0.05 * e[5];
                        x[0] = x[0] * 0.97 + 0.2 * e[0];
                    }
                    PumpFault::Bearing => {
                        x[4] += 0.3 * k;
                        x[6] += 2.0 * k;
                        x[3] *= 1.01;
                    }
                    PumpFault::Valve => {
                        x[0] = 10.0 * (1.0 + l_onset) + 0.2 * e[0];
                        x[2] += 3.0 * (l - l_onset);
                    }
                }
            }
            buf.extend_from_slice(b"pump-1,");
            push_i64(&mut buf, self.t0 + i as i64 * 1000);
            for v in x {
                buf.push(b',');
                push_fixed4(&mut buf, v);
            }
            buf.extend_from_slice(if on { b",1\n" } else { b",0\n" });
            if buf.len() > (1 << 16) - 256 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)
    }
}

/// `v` with 4 decimals, rounded half away from zero on the scaled value.
fn push_fixed4(buf: &mut Vec<u8>, v: f64) {
    let scaled = libm::round(v * 10_000.0) as i64;
    if scaled < 0 {
        buf.push(b'-');
    }
    let a = scaled.unsigned_abs();
    push_u64(buf, a / 10_000);
    buf.push(b'.');
    let f = a % 10_000;
    buf.extend_from_slice(&[
        b'0' + (f / 1000) as u8,
        b'0' + (f / 100 % 10) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
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
