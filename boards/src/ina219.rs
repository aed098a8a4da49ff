//! INA219 current and bus-voltage monitor (Texas Instruments), over I2C.
//!
//! The driver reads the shunt-voltage and bus-voltage registers and computes
//! the current from the shunt resistance itself, so it needs no calibration
//! register and no rounding of its own. The INA219 has no id register:
//! [`Ina219::init`] writes the configuration and reads it back, which a
//! missing or different part fails.

use embedded_hal::i2c::I2c;

use crate::error::{I2cError, I2cFault, SensorError};
use crate::source::{Sensor, Values};

/// Register map (datasheet SBOS448G, 8.6).
pub mod reg {
    /// Configuration.
    pub const CONFIG: u8 = 0x00;
    /// Shunt voltage, signed, 10 µV per LSB.
    pub const SHUNT_VOLTAGE: u8 = 0x01;
    /// Bus voltage: bits 15:3 at 4 mV per LSB, bit 1 conversion ready,
    /// bit 0 math overflow.
    pub const BUS_VOLTAGE: u8 = 0x02;
}

/// Lowest I2C address (A1 = A0 = GND); 16 addresses up to 0x4F.
pub const ADDR_MIN: u8 = 0x40;
/// Highest I2C address.
pub const ADDR_MAX: u8 = 0x4F;

/// 32 V bus range, PGA ÷8 (±320 mV), 12-bit ADCs, shunt and bus
/// continuous: the power-on default, written explicitly.
pub const CONFIG_VALUE: u16 = 0x399F;

const OVF: u16 = 0x0001;
/// Full scale of the shunt ADC at PGA ÷8 (±320 mV at 10 µV).
const SHUNT_FULL_SCALE: i16 = 32_000;

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerReading {
    /// Bus voltage, V.
    pub bus_volts: f64,
    /// Current through the shunt, A.
    pub amps: f64,
}

/// An INA219 on an I2C bus.
#[derive(Debug)]
pub struct Ina219<I> {
    i2c: I,
    addr: u8,
    shunt_ohms: f64,
}

impl<I: I2c> Ina219<I> {
    /// The part at `addr` with a shunt of `shunt_ohms` (e.g. 0.1).
    pub fn new(i2c: I, addr: u8, shunt_ohms: f64) -> Self {
        Ina219 {
            i2c,
            addr,
            shunt_ohms,
        }
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    fn read16(&mut self, r: u8) -> Result<u16, I2cError<I>> {
        let mut b = [0u8; 2];
        self.i2c
            .write_read(self.addr, &[r], &mut b)
            .map_err(|e| SensorError::Bus(I2cFault(e)))?;
        Ok(u16::from_be_bytes(b))
    }

    /// Writes the configuration and reads it back.
    ///
    /// # Errors
    /// Bus errors; [`SensorError::Implausible`] if the read-back differs
    /// (another part at the address) or the shunt resistance is not
    /// positive.
    pub fn init(&mut self) -> Result<(), I2cError<I>> {
        if !(self.shunt_ohms.is_finite() && self.shunt_ohms > 0.0) {
            return Err(SensorError::Implausible(
                "INA219 shunt resistance must be positive",
            ));
        }
        let [hi, lo] = CONFIG_VALUE.to_be_bytes();
        self.i2c
            .write(self.addr, &[reg::CONFIG, hi, lo])
            .map_err(|e| SensorError::Bus(I2cFault(e)))?;
        if self.read16(reg::CONFIG)? != CONFIG_VALUE {
            return Err(SensorError::Implausible(
                "INA219 configuration did not read back: another part at this address?",
            ));
        }
        Ok(())
    }

    /// Bus voltage and current.
    ///
    /// # Errors
    /// Bus errors; [`SensorError::Implausible`] on math overflow or a shunt
    /// reading past full scale.
    pub fn measure(&mut self) -> Result<PowerReading, I2cError<I>> {
        let bus = self.read16(reg::BUS_VOLTAGE)?;
        if bus & OVF != 0 {
            return Err(SensorError::Implausible(
                "INA219 overflow: current beyond the shunt range",
            ));
        }
        let shunt = self.read16(reg::SHUNT_VOLTAGE)? as i16;
        if !(-SHUNT_FULL_SCALE..=SHUNT_FULL_SCALE).contains(&shunt) {
            return Err(SensorError::Implausible(
                "INA219 shunt voltage beyond full scale",
            ));
        }
        Ok(PowerReading {
            bus_volts: f64::from(bus >> 3) * 0.004,
            amps: f64::from(shunt) * 10e-6 / self.shunt_ohms,
        })
    }
}

impl<I: I2c> Sensor for Ina219<I> {
    type Error = I2cError<I>;
    /// V, A.
    const FIELDS: &'static [&'static str] = &["bus_voltage", "current"];

    fn init(&mut self) -> Result<(), Self::Error> {
        Ina219::init(self)
    }

    fn read(&mut self, out: &mut Values) -> Result<(), Self::Error> {
        let m = self.measure()?;
        let _ = out.push(m.bus_volts);
        let _ = out.push(m.amps);
        Ok(())
    }
}
