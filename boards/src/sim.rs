//! Simulated parts on a simulated I2C bus: the `sim` board, tests, and a
//! placeholder bus for the microcontroller example. The real drivers run
//! unchanged against them, register by register.
//!
//! Each part is a register file that answers the protocol its datasheet
//! describes; data registers are refreshed from a deterministic signal on
//! each burst read. Faults are injected per part: NACK the next `n`
//! transactions, or unplug it.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

/// A deterministic noise generator (xorshift64*), seeded.
#[derive(Clone, Copy, Debug)]
struct Noise(u64);

impl Noise {
    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // Uniform in [-1, 1).
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A simulated ADXL345: a vibration of `freq` Hz and `amp` g on x and y, 1 g
/// on z, plus noise; one sample per burst read, at `rate` Hz of signal time.
#[derive(Clone, Debug)]
pub struct SimAdxl345 {
    addr: u8,
    regs: [u8; 64],
    ptr: u8,
    n: u64,
    noise: Noise,
    /// Vibration frequency, Hz.
    pub freq: f64,
    /// Vibration amplitude, g.
    pub amp: f64,
    /// Signal sample rate, Hz.
    pub rate: f64,
}

impl SimAdxl345 {
    /// A part at `addr` with noise from `seed`; 23 Hz, 0.5 g, sampled at
    /// 100 Hz (23 Hz does not alias to a constant at common sample rates).
    pub fn new(addr: u8, seed: u64) -> Self {
        let mut regs = [0u8; 64];
        regs[0] = crate::adxl345::DEVICE_ID;
        SimAdxl345 {
            addr,
            regs,
            ptr: 0,
            n: 0,
            noise: Noise(seed | 1),
            freq: 23.0,
            amp: 0.5,
            rate: 100.0,
        }
    }

    fn measuring(&self) -> bool {
        self.regs[crate::adxl345::reg::POWER_CTL as usize] & 0x08 != 0
    }

    fn refresh(&mut self) {
        let t = self.n as f64 / self.rate;
        self.n += 1;
        let phase = 2.0 * core::f64::consts::PI * self.freq * t;
        // Cheap sine, good enough for a simulation and free of libm.
        let s = sin_approx(phase);
        let c = sin_approx(phase + core::f64::consts::FRAC_PI_2);
        let g = [self.amp * s, self.amp * c, 1.0];
        for (i, v) in g.iter().enumerate() {
            let lsb = ((v + 0.01 * self.noise.next_unit()) * 256.0) as i16;
            let [lo, hi] = lsb.to_le_bytes();
            let at = crate::adxl345::reg::DATAX0 as usize + 2 * i;
            self.regs[at] = lo;
            self.regs[at + 1] = hi;
        }
    }

    /// Simulates a brown-out: the part forgets its configuration.
    pub fn power_cycle(&mut self) {
        let mut fresh = Self::new(self.addr, 1);
        fresh.noise = self.noise;
        fresh.n = self.n;
        (fresh.freq, fresh.amp, fresh.rate) = (self.freq, self.amp, self.rate);
        *self = fresh;
    }

    fn read(&mut self, buf: &mut [u8]) {
        use crate::adxl345::reg;
        if self.ptr == reg::INT_SOURCE {
            self.regs[reg::INT_SOURCE as usize] = if self.measuring() { 0x80 } else { 0 };
        }
        if self.ptr == reg::DATAX0 && self.measuring() {
            self.refresh();
        }
        for b in buf {
            *b = self.regs[(self.ptr & 0x3f) as usize];
            self.ptr = self.ptr.wrapping_add(1);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some((&r, vals)) = bytes.split_first() {
            self.ptr = r;
            for v in vals {
                // DEVID is read-only.
                if self.ptr & 0x3f != 0 {
                    self.regs[(self.ptr & 0x3f) as usize] = *v;
                }
                self.ptr = self.ptr.wrapping_add(1);
            }
        }
    }
}

/// sin(x) by range reduction and a 7th-order Taylor polynomial (error
/// below 2e-4 on [−π/2, π/2]).
fn sin_approx(x: f64) -> f64 {
    use core::f64::consts::{PI, TAU};
    let mut x = x - TAU * ((x / TAU) as i64) as f64;
    if x > PI {
        x -= TAU;
    } else if x < -PI {
        x += TAU;
    }
    if x > PI / 2.0 {
        x = PI - x;
    } else if x < -PI / 2.0 {
        x = -PI - x;
    }
    let x2 = x * x;
    x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0)))
}

/// The datasheet's worked-example calibration (T1..P9), humidity words of
/// a real part: with it, raw 519888 reads 25.08 °C and raw 415148 about
/// 1006.5 hPa.
const BME280_CALIB: ([u16; 12], [u8; 8]) = (
    [
        27504, 26435, 64536, 36477, 54851, 3024, 2855, 140, 65529, 15500, 50936, 6000,
    ],
    // H1 (at 0xA1), then H2..H6 at 0xE1..0xE7.
    [75, 0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 30],
);

/// A simulated BME280: a temperature that drifts slowly around 25 °C,
/// pressure and humidity with noise; data registers hold the reset value
/// until normal mode is set.
#[derive(Clone, Debug)]
pub struct SimBme280 {
    addr: u8,
    regs: [u8; 256],
    ptr: u8,
    n: u64,
    noise: Noise,
}

impl SimBme280 {
    /// A part at `addr` with noise from `seed`.
    pub fn new(addr: u8, seed: u64) -> Self {
        let mut regs = [0u8; 256];
        regs[crate::bme280::reg::ID as usize] = crate::bme280::CHIP_ID;
        let (words, h) = BME280_CALIB;
        for (i, w) in words.iter().enumerate() {
            let at = crate::bme280::reg::CALIB00 as usize + 2 * i;
            regs[at..at + 2].copy_from_slice(&w.to_le_bytes());
        }
        regs[0xA1] = h[0];
        regs[0xE1..0xE8].copy_from_slice(&h[1..]);
        // Reset values of the data registers: 0x80000 / 0x8000.
        regs[0xF7..0xFF].copy_from_slice(&[0x80, 0, 0, 0x80, 0, 0, 0x80, 0]);
        SimBme280 {
            addr,
            regs,
            ptr: 0,
            n: 0,
            noise: Noise(seed | 1),
        }
    }

    fn normal_mode(&self) -> bool {
        self.regs[crate::bme280::reg::CTRL_MEAS as usize] & 0b11 == 0b11
    }

    fn refresh(&mut self) {
        let drift = sin_approx(self.n as f64 / 600.0);
        self.n += 1;
        let t = (519_888.0 + 3_000.0 * drift + 20.0 * self.noise.next_unit()) as u32;
        let p = (415_148.0 + 50.0 * self.noise.next_unit()) as u32;
        let h = (30_000.0 + 100.0 * self.noise.next_unit()) as u16;
        let [h_hi, h_lo] = h.to_be_bytes();
        let d = [
            (p >> 12) as u8,
            (p >> 4) as u8,
            ((p & 0xf) << 4) as u8,
            (t >> 12) as u8,
            (t >> 4) as u8,
            ((t & 0xf) << 4) as u8,
            h_hi,
            h_lo,
        ];
        self.regs[0xF7..0xFF].copy_from_slice(&d);
    }

    fn read(&mut self, buf: &mut [u8]) {
        if self.ptr == crate::bme280::reg::PRESS_MSB && self.normal_mode() {
            self.refresh();
        }
        for b in buf {
            *b = self.regs[self.ptr as usize];
            self.ptr = self.ptr.wrapping_add(1);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some((&r, vals)) = bytes.split_first() {
            self.ptr = r;
            for v in vals {
                // Only the control registers are writable.
                if (0xF2..=0xF5).contains(&self.ptr) {
                    self.regs[self.ptr as usize] = *v;
                }
                self.ptr = self.ptr.wrapping_add(1);
            }
        }
    }

    fn power_cycle(&mut self) {
        let mut fresh = Self::new(self.addr, 1);
        (fresh.noise, fresh.n) = (self.noise, self.n);
        *self = fresh;
    }
}

/// A simulated INA219 on a shunt of `shunt_ohms`: a load of `amps` (with a
/// ripple) at `volts`.
#[derive(Clone, Debug)]
pub struct SimIna219 {
    addr: u8,
    regs: [u16; 6],
    ptr: u8,
    n: u64,
    noise: Noise,
    /// Mean load current, A.
    pub amps: f64,
    /// Bus voltage, V.
    pub volts: f64,
    /// Shunt resistance, Ω.
    pub shunt_ohms: f64,
}

impl SimIna219 {
    /// A part at `addr` with noise from `seed`: 0.5 A at 12 V on 0.1 Ω.
    pub fn new(addr: u8, seed: u64) -> Self {
        SimIna219 {
            addr,
            regs: [crate::ina219::CONFIG_VALUE, 0, 0, 0, 0, 0],
            ptr: 0,
            n: 0,
            noise: Noise(seed | 1),
            amps: 0.5,
            volts: 12.0,
            shunt_ohms: 0.1,
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        use crate::ina219::reg;
        if self.ptr == reg::BUS_VOLTAGE {
            let ripple = 0.05 * sin_approx(self.n as f64 / 5.0) + 0.005 * self.noise.next_unit();
            self.n += 1;
            let shunt = ((self.amps + ripple) * self.shunt_ohms / 10e-6) as i16;
            self.regs[reg::SHUNT_VOLTAGE as usize] = shunt as u16;
            self.regs[reg::BUS_VOLTAGE as usize] = (((self.volts / 0.004) as u16) << 3) | 0x2;
        }
        let v = self.regs.get(self.ptr as usize).copied().unwrap_or(0);
        for (b, x) in buf.iter_mut().zip(v.to_be_bytes().iter().cycle()) {
            *b = *x;
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        match *bytes {
            [r] => self.ptr = r,
            [r, hi, lo, ..] => {
                self.ptr = r;
                if r == crate::ina219::reg::CONFIG || r == 5 {
                    self.regs[r as usize] = u16::from_be_bytes([hi, lo]);
                }
            }
            _ => {}
        }
    }
}

/// A simulated part on [`SimI2c`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SimPart {
    /// An accelerometer.
    Adxl345(SimAdxl345),
    /// An environment sensor.
    Bme280(SimBme280),
    /// A current monitor.
    Ina219(SimIna219),
}

impl SimPart {
    fn addr(&self) -> u8 {
        match self {
            SimPart::Adxl345(p) => p.addr,
            SimPart::Bme280(p) => p.addr,
            SimPart::Ina219(p) => p.addr,
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        match self {
            SimPart::Adxl345(p) => p.read(buf),
            SimPart::Bme280(p) => p.read(buf),
            SimPart::Ina219(p) => p.read(buf),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        match self {
            SimPart::Adxl345(p) => p.write(bytes),
            SimPart::Bme280(p) => p.write(bytes),
            SimPart::Ina219(p) => p.write(bytes),
        }
    }

    fn power_cycle(&mut self) {
        match self {
            SimPart::Adxl345(p) => p.power_cycle(),
            SimPart::Bme280(p) => p.power_cycle(),
            SimPart::Ina219(p) => {
                let keep = p.clone();
                *p = SimIna219 {
                    amps: keep.amps,
                    volts: keep.volts,
                    shunt_ohms: keep.shunt_ohms,
                    ..SimIna219::new(keep.addr, 1)
                };
            }
        }
    }
}

impl From<SimAdxl345> for SimPart {
    fn from(p: SimAdxl345) -> Self {
        SimPart::Adxl345(p)
    }
}

impl From<SimBme280> for SimPart {
    fn from(p: SimBme280) -> Self {
        SimPart::Bme280(p)
    }
}

impl From<SimIna219> for SimPart {
    fn from(p: SimIna219) -> Self {
        SimPart::Ina219(p)
    }
}

#[derive(Clone, Debug)]
struct Slot {
    part: SimPart,
    nack_next: u32,
    unplugged: bool,
}

/// A simulated I2C bus with up to 4 parts. Unknown addresses, unplugged
/// parts and injected faults answer with a NACK.
#[derive(Clone, Debug, Default)]
pub struct SimI2c {
    parts: heapless::Vec<Slot, 4>,
    /// Transactions seen, for tests.
    pub transactions: u64,
}

impl SimI2c {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a part (a fifth part is ignored: the bus holds four).
    pub fn with(mut self, part: impl Into<SimPart>) -> Self {
        let _ = self.parts.push(Slot {
            part: part.into(),
            nack_next: 0,
            unplugged: false,
        });
        self
    }

    /// Adds an ADXL345.
    pub fn with_adxl345(self, p: SimAdxl345) -> Self {
        self.with(p)
    }

    fn slot(&mut self, addr: u8) -> Option<&mut Slot> {
        self.parts.iter_mut().find(|s| s.part.addr() == addr)
    }

    /// NACKs the next `n` transactions to `addr`.
    pub fn nack_next(&mut self, addr: u8, n: u32) {
        if let Some(s) = self.slot(addr) {
            s.nack_next = n;
        }
    }

    /// Unplugs (`true`) or replugs the part at `addr`; a replugged part has
    /// been power-cycled.
    pub fn set_unplugged(&mut self, addr: u8, unplugged: bool) {
        if let Some(s) = self.slot(addr) {
            if s.unplugged && !unplugged {
                s.part.power_cycle();
            }
            s.unplugged = unplugged;
        }
    }

    /// The part at `addr`.
    pub fn part_mut(&mut self, addr: u8) -> Option<&mut SimPart> {
        self.slot(addr).map(|s| &mut s.part)
    }
}

impl ErrorType for SimI2c {
    type Error = ErrorKind;
}

impl I2c for SimI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.transactions += 1;
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let slot = self.slot(address).ok_or(nack)?;
        if slot.unplugged {
            return Err(nack);
        }
        if slot.nack_next > 0 {
            slot.nack_next -= 1;
            return Err(nack);
        }
        for op in operations {
            match op {
                Operation::Write(b) => slot.part.write(b),
                Operation::Read(b) => slot.part.read(b),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_approximation_is_close() {
        for i in -100..100 {
            let x = f64::from(i) * 0.37;
            assert!((sin_approx(x) - x.sin()).abs() < 2e-4, "x = {x}");
        }
    }

    #[test]
    fn unknown_address_nacks() {
        let mut bus = SimI2c::new().with_adxl345(SimAdxl345::new(0x53, 1));
        let mut b = [0u8];
        assert_eq!(
            bus.write_read(0x1d, &[0], &mut b),
            Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
        );
        bus.write_read(0x53, &[0], &mut b).unwrap();
        assert_eq!(b[0], 0xe5);
    }
}
