//! ADXL345 three-axis accelerometer (Analog Devices), for vibration, over
//! I2C or SPI.
//!
//! Full-resolution mode (256 LSB/g at every range), measurement mode, an
//! output data rate of at least twice the sample rate. A read checks
//! `DATA_READY` first: a part that lost power sits in standby and never sets
//! it, which shows up as [`SensorError::NotReady`] and makes the source
//! re-initialise it.
//!
//! ```
//! use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
//! use weir_boards::adxl345::{Adxl345, Adxl345Config};
//! use weir_boards::regs::I2cRegs;
//!
//! let mut bus = Mock::new(&[
//!     T::write_read(0x53, vec![0x30], vec![0x80]),             // DATA_READY
//!     T::write_read(0x53, vec![0x32], vec![0, 0, 0, 0, 0, 1]), // z = 256 LSB
//! ]);
//! let mut acc = Adxl345::new(I2cRegs::new(bus.clone(), 0x53), Adxl345Config::default());
//! let [x, y, z] = acc.read_g().unwrap();
//! assert_eq!((x, y, z), (0.0, 0.0, 1.0));
//! bus.done();
//! ```

use crate::error::SensorError;
use crate::regs::RegisterBus;
use crate::source::{Sensor, Values};

/// Register map (datasheet rev. G, table 19).
pub mod reg {
    /// Device id, reads 0xE5.
    pub const DEVID: u8 = 0x00;
    /// Output data rate and power mode.
    pub const BW_RATE: u8 = 0x2C;
    /// Power-saving features; bit 3 = measure.
    pub const POWER_CTL: u8 = 0x2D;
    /// Interrupt source; bit 7 = data ready.
    pub const INT_SOURCE: u8 = 0x30;
    /// Data format: bit 3 = full resolution, bits 1:0 = range.
    pub const DATA_FORMAT: u8 = 0x31;
    /// X-axis data 0; X, Y, Z follow as little-endian 16-bit words.
    pub const DATAX0: u8 = 0x32;
}

/// What [`reg::DEVID`] holds.
pub const DEVICE_ID: u8 = 0xE5;
/// I2C address with ALT ADDRESS low.
pub const ADDR_LOW: u8 = 0x53;
/// I2C address with ALT ADDRESS high.
pub const ADDR_HIGH: u8 = 0x1D;
/// Standard gravity, m/s² per g.
pub const G: f64 = 9.806_65;

const MEASURE: u8 = 0x08;
const FULL_RES: u8 = 0x08;
const DATA_READY: u8 = 0x80;

/// Range and output data rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adxl345Config {
    /// Full-scale range in g: 2, 4, 8 or 16 (others round up, at most 16).
    pub range_g: u8,
    /// The rate samples are taken at, in Hz; the part runs at least twice as
    /// fast (at most 3200 Hz).
    pub rate_hz: f64,
}

impl Default for Adxl345Config {
    /// ±16 g, 100 Hz.
    fn default() -> Self {
        Adxl345Config {
            range_g: 16,
            rate_hz: 100.0,
        }
    }
}

impl Adxl345Config {
    /// `DATA_FORMAT` range bits.
    fn range_bits(&self) -> u8 {
        match self.range_g {
            0..=2 => 0,
            3..=4 => 1,
            5..=8 => 2,
            _ => 3,
        }
    }

    /// `BW_RATE` rate code: ODR = 3200 Hz / 2^(15 − code), the smallest
    /// code 6..=15 whose ODR is at least twice `rate_hz`.
    pub fn rate_code(&self) -> u8 {
        let mut code = 6u8;
        while code < 15 && 3200.0 / f64::from(1u32 << (15 - code)) < 2.0 * self.rate_hz {
            code += 1;
        }
        code
    }

    /// Largest magnitude a full-resolution sample can have (LSB).
    fn limit(&self) -> i16 {
        512 << self.range_bits()
    }
}

/// An ADXL345 on a register bus.
#[derive(Debug)]
pub struct Adxl345<B> {
    bus: B,
    cfg: Adxl345Config,
}

impl<B: RegisterBus> Adxl345<B> {
    /// The part on `bus`; nothing is sent until [`Adxl345::init`].
    pub fn new(bus: B, cfg: Adxl345Config) -> Self {
        Adxl345 { bus, cfg }
    }

    /// The bus.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Gives the bus back.
    pub fn release(self) -> B {
        self.bus
    }

    fn read1(&mut self, r: u8) -> Result<u8, SensorError<B::Error>> {
        let mut b = [0u8];
        self.bus.read_regs(r, &mut b).map_err(SensorError::Bus)?;
        Ok(b[0])
    }

    /// Checks the device id, sets rate and range, starts measuring, and
    /// reads `POWER_CTL` back.
    ///
    /// # Errors
    /// Bus errors; [`SensorError::ChipId`] if the id is not 0xE5;
    /// [`SensorError::Implausible`] if the measure bit does not stick.
    pub fn init(&mut self) -> Result<(), SensorError<B::Error>> {
        let id = self.read1(reg::DEVID)?;
        if id != DEVICE_ID {
            return Err(SensorError::ChipId {
                expected: DEVICE_ID,
                found: id,
            });
        }
        let bus = &mut self.bus;
        bus.write_reg(reg::BW_RATE, self.cfg.rate_code())
            .and_then(|()| bus.write_reg(reg::DATA_FORMAT, FULL_RES | self.cfg.range_bits()))
            .and_then(|()| bus.write_reg(reg::POWER_CTL, MEASURE))
            .map_err(SensorError::Bus)?;
        if self.read1(reg::POWER_CTL)? & MEASURE == 0 {
            return Err(SensorError::Implausible(
                "ADXL345 did not enter measurement mode",
            ));
        }
        Ok(())
    }

    /// One raw sample (LSB, 256 per g).
    ///
    /// # Errors
    /// Bus errors; [`SensorError::NotReady`] if no new sample is ready;
    /// [`SensorError::Implausible`] for a value outside the configured range;
    /// [`SensorError::ChipId`] if an all-ones sample comes from a bus on
    /// which the part no longer answers with its id (a floating data line).
    pub fn read_raw(&mut self) -> Result<[i16; 3], SensorError<B::Error>> {
        if self.read1(reg::INT_SOURCE)? & DATA_READY == 0 {
            return Err(SensorError::NotReady);
        }
        let mut b = [0u8; 6];
        self.bus
            .read_regs(reg::DATAX0, &mut b)
            .map_err(SensorError::Bus)?;
        // A bus whose data line floats high reads 0xFF everywhere, which
        // passes for data-ready and a -1 LSB sample: ask the part who it is.
        if b == [0xFF; 6] {
            let id = self.read1(reg::DEVID)?;
            if id != DEVICE_ID {
                return Err(SensorError::ChipId {
                    expected: DEVICE_ID,
                    found: id,
                });
            }
        }
        let xyz = [
            i16::from_le_bytes([b[0], b[1]]),
            i16::from_le_bytes([b[2], b[3]]),
            i16::from_le_bytes([b[4], b[5]]),
        ];
        let lim = self.cfg.limit();
        if xyz.iter().any(|v| *v < -lim || *v >= lim) {
            return Err(SensorError::Implausible(
                "ADXL345 sample outside the configured range",
            ));
        }
        Ok(xyz)
    }

    /// One sample in g.
    ///
    /// # Errors
    /// See [`Adxl345::read_raw`].
    pub fn read_g(&mut self) -> Result<[f64; 3], SensorError<B::Error>> {
        Ok(self.read_raw()?.map(|v| f64::from(v) / 256.0))
    }
}

impl<B: RegisterBus> Sensor for Adxl345<B> {
    type Error = SensorError<B::Error>;
    /// Acceleration in m/s².
    const FIELDS: &'static [&'static str] = &["x", "y", "z"];

    fn init(&mut self) -> Result<(), Self::Error> {
        Adxl345::init(self)
    }

    fn read(&mut self, out: &mut Values) -> Result<(), Self::Error> {
        for v in self.read_g()? {
            // Capacity 8 > 3: cannot fail.
            let _ = out.push(v * G);
        }
        Ok(())
    }
}
