//! # weir-boards
//!
//! What weir needs to know about the hardware it runs on: board profiles
//! (`boards/<name>/board.toml`: target, data directory, durability, buses,
//! sensors) and sensors wired to the gateway, read through `embedded-hal`
//! 1.0 drivers and offered to the engine as [`weir_core::seam::Source`]s.
//!
//! ## Layout
//! - [`regs`]: 8-bit register access over I2C or SPI.
//! - [`adxl345`], [`bme280`], [`ina219`]: small drivers (accelerometer,
//!   temperature/pressure/humidity, current/voltage).
//! - [`source`]: [`source::SensorSource`], a driver sampled at a fixed
//!   period on the gateway clock, with faults counted, retried with
//!   backoff and turned into health ([`health`]).
//! - [`sim`]: simulated parts behind a simulated I2C bus, for the `sim`
//!   board, tests and the microcontroller example.
//! - `profile` (feature `std`): the board profile parser and validator.
//! - `wired` (feature `std`): a profile's sensors opened as one `Vec` of
//!   sources for the agent.
//! - `linux` (feature `linux`): `/dev/i2c-*` and `/dev/spidev*` buses.
//!
//! Without default features the crate is `no_std` and allocation-free.
//!
//! ## Example
//! ```
//! use weir_boards::adxl345::{Adxl345, Adxl345Config};
//! use weir_boards::health::HealthConfig;
//! use weir_boards::regs::I2cRegs;
//! use weir_boards::sim::{SimAdxl345, SimI2c};
//! use weir_boards::source::SensorSource;
//! use weir_core::seam::Source;
//!
//! let bus = SimI2c::new().with_adxl345(SimAdxl345::new(0x53, 7));
//! let acc = Adxl345::new(I2cRegs::new(bus, 0x53), Adxl345Config::default());
//! let mut src = SensorSource::new(acc, "pump-1".try_into().unwrap(), 10, 0, HealthConfig::DEFAULT_MS);
//! let r = src.poll_read(0).unwrap().unwrap();
//! assert_eq!((r.key.as_str(), r.ts, r.values.len()), ("pump-1", 0, 3));
//! assert_eq!(src.poll_timeout(), Some(10));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]

pub mod adxl345;
pub mod bme280;
#[cfg(feature = "std")]
pub mod config;
pub mod error;
pub mod health;
pub mod ina219;
pub mod regs;
pub mod sim;
pub mod source;

#[cfg(feature = "linux")]
pub mod linux;
#[cfg(feature = "std")]
pub mod profile;
#[cfg(feature = "std")]
pub mod wired;

pub use error::SensorError;
