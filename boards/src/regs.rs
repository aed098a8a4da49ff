//! Register access over I2C or SPI, so one driver serves both buses.

use embedded_hal::i2c::I2c;
use embedded_hal::spi::{Operation, SpiDevice};

use crate::error::{BusErrorKind, I2cFault, SpiFault};

/// A device's 8-bit register file, reached over some bus.
pub trait RegisterBus {
    /// The bus error.
    type Error: BusErrorKind;

    /// Reads `buf.len()` consecutive registers starting at `reg`.
    ///
    /// # Errors
    /// The bus transaction failed.
    fn read_regs(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes one register.
    ///
    /// # Errors
    /// The bus transaction failed.
    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Self::Error>;
}

/// Registers behind an I2C address: write the register number, then read
/// (repeated start); the device increments the address itself.
#[derive(Debug)]
pub struct I2cRegs<I> {
    i2c: I,
    addr: u8,
}

impl<I: I2c> I2cRegs<I> {
    /// The device at 7-bit address `addr` on `i2c`.
    pub fn new(i2c: I, addr: u8) -> Self {
        I2cRegs { i2c, addr }
    }

    /// The bus.
    pub fn bus_mut(&mut self) -> &mut I {
        &mut self.i2c
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

impl<I: I2c> RegisterBus for I2cRegs<I> {
    type Error = I2cFault<I::Error>;

    fn read_regs(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.i2c
            .write_read(self.addr, &[reg], buf)
            .map_err(I2cFault)
    }

    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Self::Error> {
        self.i2c.write(self.addr, &[reg, value]).map_err(I2cFault)
    }
}

/// Registers behind an SPI device: bit 7 of the address byte set for a read,
/// plus a chip-specific "multiple bytes" bit for burst reads (bit 6 on the
/// ADXL345; none on the BME280, which always increments).
#[derive(Debug)]
pub struct SpiRegs<S> {
    spi: S,
    multi: u8,
}

impl<S: SpiDevice> SpiRegs<S> {
    /// The ADXL345's SPI protocol (read bit 7, multi-byte bit 6; SPI mode 3).
    pub fn adxl345(spi: S) -> Self {
        SpiRegs { spi, multi: 0x40 }
    }

    /// The BME280's SPI protocol (read bit 7, writes with bit 7 clear).
    pub fn bme280(spi: S) -> Self {
        SpiRegs { spi, multi: 0 }
    }

    /// Gives the device back.
    pub fn release(self) -> S {
        self.spi
    }
}

impl<S: SpiDevice> RegisterBus for SpiRegs<S> {
    type Error = SpiFault<S::Error>;

    fn read_regs(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), Self::Error> {
        let multi = if buf.len() > 1 { self.multi } else { 0 };
        // With a multi-byte bit, only 6 bits are left for the register.
        let reg = if self.multi != 0 {
            reg & 0x3f
        } else {
            reg & 0x7f
        };
        let addr = [0x80 | multi | reg];
        self.spi
            .transaction(&mut [Operation::Write(&addr), Operation::Read(buf)])
            .map_err(SpiFault)
    }

    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Self::Error> {
        self.spi.write(&[reg & 0x7f, value]).map_err(SpiFault)
    }
}
