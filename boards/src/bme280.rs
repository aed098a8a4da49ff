//! BME280 temperature, pressure and humidity sensor (Bosch), over I2C or
//! SPI.
//!
//! Normal mode, oversampling ×1 on all three, filter off, 62.5 ms standby:
//! the part measures on its own, a read fetches the latest result in one
//! burst. Compensation is the datasheet's integer code (32-bit temperature
//! and humidity, 64-bit pressure), so results are exact and need no FPU.

use crate::error::SensorError;
use crate::regs::RegisterBus;
use crate::source::{Sensor, Values};

/// Register map (datasheet 1.6, section 5.3).
pub mod reg {
    /// Chip id, reads 0x60.
    pub const ID: u8 = 0xD0;
    /// Soft reset (write 0xB6).
    pub const RESET: u8 = 0xE0;
    /// Calibration block 1: T1..T3, P1..P9, (0xA0 unused), H1.
    pub const CALIB00: u8 = 0x88;
    /// Calibration block 2: H2..H6.
    pub const CALIB26: u8 = 0xE1;
    /// Humidity oversampling (takes effect on the next `CTRL_MEAS` write).
    pub const CTRL_HUM: u8 = 0xF2;
    /// Status: bit 3 measuring, bit 0 NVM copying.
    pub const STATUS: u8 = 0xF3;
    /// Temperature/pressure oversampling and mode.
    pub const CTRL_MEAS: u8 = 0xF4;
    /// Standby time, filter.
    pub const CONFIG: u8 = 0xF5;
    /// Pressure MSB; pressure (20 bit), temperature (20 bit), humidity (16 bit) follow.
    pub const PRESS_MSB: u8 = 0xF7;
}

/// What [`reg::ID`] holds on a BME280 (a BMP280 has no humidity: 0x58).
pub const CHIP_ID: u8 = 0x60;
/// I2C address with SDO low.
pub const ADDR_LOW: u8 = 0x76;
/// I2C address with SDO high.
pub const ADDR_HIGH: u8 = 0x77;

/// `CTRL_HUM`: humidity oversampling ×1.
pub const CTRL_HUM_VALUE: u8 = 0b001;
/// `CTRL_MEAS`: temperature ×1, pressure ×1, normal mode.
pub const CTRL_MEAS_VALUE: u8 = (0b001 << 5) | (0b001 << 2) | 0b11;
/// `CONFIG`: standby 62.5 ms, filter off.
pub const CONFIG_VALUE: u8 = 0b001 << 5;

/// The value the ADC registers hold before the first measurement.
const ADC_SKIPPED_20: i32 = 0x80000;
const ADC_SKIPPED_16: i32 = 0x8000;

/// Factory calibration, as read from the part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the datasheet's names
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Decodes the two calibration blocks (26 bytes from 0x88, 7 from 0xE1).
    pub fn from_bytes(a: &[u8; 26], b: &[u8; 7]) -> Self {
        let u = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([a[i], a[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            h1: a[25],
            h2: i16::from_le_bytes([b[0], b[1]]),
            h3: b[2],
            // 12-bit signed values split across nibbles.
            h4: (i16::from(b[3] as i8) << 4) | i16::from(b[4] & 0x0f),
            h5: (i16::from(b[5] as i8) << 4) | i16::from(b[4] >> 4),
            h6: b[6] as i8,
        }
    }

    /// `t_fine` and the temperature in 0.01 °C (datasheet 4.2.3). Computed
    /// in 64 bits: the datasheet's 32-bit code gives the same results for a
    /// real part, and a corrupt calibration cannot overflow.
    pub fn temperature(&self, adc_t: i32) -> (i32, i32) {
        let (adc_t, t1) = (i64::from(adc_t), i64::from(self.t1));
        let var1 = (((adc_t >> 3) - (t1 << 1)) * i64::from(self.t2)) >> 11;
        let d = (adc_t >> 4) - t1;
        let var2 = (((d * d) >> 12) * i64::from(self.t3)) >> 14;
        let t_fine = (var1 + var2).clamp(i64::from(i32::MIN / 8), i64::from(i32::MAX / 8));
        // In range after the clamp.
        let t_fine = t_fine as i32;
        (t_fine, (t_fine * 5 + 128) >> 8)
    }

    /// Pressure in Pa · 256 (Q24.8); `None` if the calibration would divide
    /// by zero or overflow (it does neither on a real part).
    pub fn pressure(&self, t_fine: i32, adc_p: i32) -> Option<u32> {
        let c = |v: i16| i64::from(v);
        let var1 = i64::from(t_fine) - 128_000;
        let var2 = var1.checked_mul(var1)?.checked_mul(c(self.p6))?;
        let var2 = var2
            .checked_add(var1.checked_mul(c(self.p5))?.checked_mul(1 << 17)?)?
            .checked_add(c(self.p4) << 35)?;
        let var1 = (var1.checked_mul(var1)?.checked_mul(c(self.p3))? >> 8)
            .checked_add(var1.checked_mul(c(self.p2))?.checked_mul(1 << 12)?)?;
        let var1 = (1i64 << 47)
            .checked_add(var1)?
            .checked_mul(i64::from(self.p1))?
            >> 33;
        if var1 == 0 {
            return None;
        }
        let p = 1_048_576 - i64::from(adc_p);
        let p = ((p << 31).checked_sub(var2)?.checked_mul(3125)?) / var1;
        let q = p >> 13;
        let var1 = c(self.p9).checked_mul(q)?.checked_mul(q)? >> 25;
        let var2 = c(self.p8).checked_mul(p)? >> 19;
        let p = (p.checked_add(var1)?.checked_add(var2)? >> 8).checked_add(c(self.p7) << 4)?;
        u32::try_from(p).ok()
    }

    /// Relative humidity in %RH · 1024 (Q22.10), in 64 bits as
    /// [`Calibration::temperature`].
    pub fn humidity(&self, t_fine: i32, adc_h: i32) -> u32 {
        let (h1, h2, h3) = (i64::from(self.h1), i64::from(self.h2), i64::from(self.h3));
        let (h4, h5, h6) = (i64::from(self.h4), i64::from(self.h5), i64::from(self.h6));
        let v = i64::from(t_fine) - 76_800;
        let a = ((i64::from(adc_h) << 14) - (h4 << 20) - h5 * v + 16_384) >> 15;
        let b = (((((v * h6) >> 10) * (((v * h3) >> 11) + 32_768)) >> 10) + 2_097_152) * h2 + 8192;
        let v = a.saturating_mul(b >> 14);
        let v =
            v.saturating_sub(((((v >> 15).saturating_mul(v >> 15)) >> 7).saturating_mul(h1)) >> 4);
        // Clamped to 0..=100 %RH · 2^22: fits.
        (v.clamp(0, 419_430_400) >> 12) as u32
    }
}

/// A BME280 on a register bus.
#[derive(Debug)]
pub struct Bme280<B> {
    bus: B,
    calib: Option<Calibration>,
}

/// One compensated measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// °C.
    pub temperature: f64,
    /// Pa.
    pub pressure: f64,
    /// %RH.
    pub humidity: f64,
}

impl<B: RegisterBus> Bme280<B> {
    /// The part on `bus`; nothing is sent until [`Bme280::init`].
    pub fn new(bus: B) -> Self {
        Bme280 { bus, calib: None }
    }

    /// The bus.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Gives the bus back.
    pub fn release(self) -> B {
        self.bus
    }

    /// The calibration read by the last successful [`Bme280::init`].
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calib.as_ref()
    }

    /// Checks the chip id, reads the calibration, configures and starts
    /// normal mode.
    ///
    /// # Errors
    /// Bus errors; [`SensorError::ChipId`] for another part (a BMP280 has
    /// 0x58); [`SensorError::Implausible`] for a calibration of all zeros
    /// or ones (a bus that reads nothing).
    pub fn init(&mut self) -> Result<(), SensorError<B::Error>> {
        self.calib = None;
        let mut id = [0u8];
        self.bus
            .read_regs(reg::ID, &mut id)
            .map_err(SensorError::Bus)?;
        if id[0] != CHIP_ID {
            return Err(SensorError::ChipId {
                expected: CHIP_ID,
                found: id[0],
            });
        }
        let mut a = [0u8; 26];
        let mut b = [0u8; 7];
        let bus = &mut self.bus;
        bus.read_regs(reg::CALIB00, &mut a)
            .and_then(|()| bus.read_regs(reg::CALIB26, &mut b))
            .map_err(SensorError::Bus)?;
        let c = Calibration::from_bytes(&a, &b);
        if c.t1 == 0 || c.t1 == 0xffff || c.p1 == 0 || c.p1 == 0xffff {
            return Err(SensorError::Implausible("BME280 calibration is blank"));
        }
        bus.write_reg(reg::CTRL_HUM, CTRL_HUM_VALUE)
            .and_then(|()| bus.write_reg(reg::CONFIG, CONFIG_VALUE))
            .and_then(|()| bus.write_reg(reg::CTRL_MEAS, CTRL_MEAS_VALUE))
            .map_err(SensorError::Bus)?;
        self.calib = Some(c);
        Ok(())
    }

    /// The latest measurement.
    ///
    /// # Errors
    /// Bus errors; [`SensorError::NotReady`] before the first conversion
    /// (or without [`Bme280::init`]); [`SensorError::Implausible`] for
    /// values outside the part's operating range (−40…85 °C, 300…1100 hPa).
    pub fn measure(&mut self) -> Result<Measurement, SensorError<B::Error>> {
        let Some(c) = self.calib else {
            return Err(SensorError::NotReady);
        };
        let mut d = [0u8; 8];
        self.bus
            .read_regs(reg::PRESS_MSB, &mut d)
            .map_err(SensorError::Bus)?;
        let adc20 = |i: usize| {
            (i32::from(d[i]) << 12) | (i32::from(d[i + 1]) << 4) | (i32::from(d[i + 2]) >> 4)
        };
        let (adc_p, adc_t) = (adc20(0), adc20(3));
        let adc_h = (i32::from(d[6]) << 8) | i32::from(d[7]);
        if adc_t == ADC_SKIPPED_20 || adc_p == ADC_SKIPPED_20 || adc_h == ADC_SKIPPED_16 {
            return Err(SensorError::NotReady);
        }
        let (t_fine, t) = c.temperature(adc_t);
        let temperature = f64::from(t) / 100.0;
        if !(-40.0..=85.0).contains(&temperature) {
            return Err(SensorError::Implausible(
                "BME280 temperature outside -40..85 °C",
            ));
        }
        let pressure = c
            .pressure(t_fine, adc_p)
            .map(|p| f64::from(p) / 256.0)
            .ok_or(SensorError::Implausible(
                "BME280 pressure calibration divides by zero",
            ))?;
        if !(30_000.0..=110_000.0).contains(&pressure) {
            return Err(SensorError::Implausible(
                "BME280 pressure outside 300..1100 hPa",
            ));
        }
        let humidity = f64::from(c.humidity(t_fine, adc_h)) / 1024.0;
        Ok(Measurement {
            temperature,
            pressure,
            humidity,
        })
    }
}

impl<B: RegisterBus> Sensor for Bme280<B> {
    type Error = SensorError<B::Error>;
    /// °C, Pa, %RH.
    const FIELDS: &'static [&'static str] = &["temperature", "pressure", "humidity"];

    fn init(&mut self) -> Result<(), Self::Error> {
        Bme280::init(self)
    }

    fn read(&mut self, out: &mut Values) -> Result<(), Self::Error> {
        let m = self.measure()?;
        for v in [m.temperature, m.pressure, m.humidity] {
            let _ = out.push(v);
        }
        Ok(())
    }
}
