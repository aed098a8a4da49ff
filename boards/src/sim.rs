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

/// A simulated part on [`SimI2c`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SimPart {
    /// An accelerometer.
    Adxl345(SimAdxl345),
}

impl SimPart {
    fn addr(&self) -> u8 {
        match self {
            SimPart::Adxl345(p) => p.addr,
        }
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

    /// Adds an ADXL345 (a fifth part is ignored: the bus holds four).
    pub fn with_adxl345(mut self, p: SimAdxl345) -> Self {
        let _ = self.parts.push(Slot {
            part: SimPart::Adxl345(p),
            nack_next: 0,
            unplugged: false,
        });
        self
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
                match &mut s.part {
                    SimPart::Adxl345(p) => p.power_cycle(),
                }
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
            match (&mut slot.part, op) {
                (SimPart::Adxl345(p), Operation::Write(b)) => p.write(b),
                (SimPart::Adxl345(p), Operation::Read(b)) => p.read(b),
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
