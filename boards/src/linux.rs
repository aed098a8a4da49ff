//! Real buses on a Linux gateway through `linux-embedded-hal`: I2C adapters
//! (`/dev/i2c-N`) and SPI devices (`/dev/spidevB.C`), configured from a
//! profile's [`Bus`].
//!
//! The kernel reports I2C faults as errno values; `linux-embedded-hal` maps
//! `ENXIO`/`ENODEV` to a NACK and `EIO`/`EBUSY`/`EAGAIN` to bus errors, so
//! those are counted by kind. `embedded-hal` has no timeout kind: an adapter
//! timeout (`ETIMEDOUT`, e.g. a part stretching the clock too long) is
//! counted as `other`. Timeouts the drivers see themselves (no data ready)
//! are counted as `timeout`.

use std::io;

use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
pub use linux_embedded_hal::{I2cdev, SpidevDevice};

use crate::profile::{Bus, BusKind};

fn no_device(bus: &Bus) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("bus `{}` has no device node", bus.name),
    )
}

/// Opens an I2C adapter. Several sensors may each open the same adapter:
/// the kernel serialises transfers.
///
/// # Errors
/// The device node cannot be opened (missing, no permission), or `bus` is
/// not an I2C bus.
pub fn open_i2c(bus: &Bus) -> io::Result<I2cdev> {
    if bus.kind != BusKind::I2c {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bus `{}` is not I2C", bus.name),
        ));
    }
    let dev = bus.device.as_ref().ok_or_else(|| no_device(bus))?;
    I2cdev::new(dev).map_err(io::Error::other)
}

/// Opens and configures an SPI device: 8-bit words, the bus's clock and
/// mode.
///
/// # Errors
/// The device node cannot be opened or configured, or `bus` is not SPI.
pub fn open_spi(bus: &Bus) -> io::Result<SpidevDevice> {
    if bus.kind != BusKind::Spi {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bus `{}` is not SPI", bus.name),
        ));
    }
    let dev = bus.device.as_ref().ok_or_else(|| no_device(bus))?;
    let mut spi =
        SpidevDevice::open(dev).map_err(|e| io::Error::new(e.inner().kind(), e.to_string()))?;
    let mode = match bus.spi_mode.unwrap_or(0) {
        0 => SpiModeFlags::SPI_MODE_0,
        1 => SpiModeFlags::SPI_MODE_1,
        2 => SpiModeFlags::SPI_MODE_2,
        _ => SpiModeFlags::SPI_MODE_3,
    };
    let opts = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(bus.speed_hz)
        .mode(mode)
        .build();
    spi.configure(&opts)?;
    Ok(spi)
}
