//! The sensors of a board profile, opened and ready to poll: what the agent
//! drives. Each is a [`crate::source::SensorSource`] behind one object-safe
//! type, so sensors of different chips and buses sit in one `Vec`.
//!
//! ```
//! use weir_core::seam::Source;
//! let p = weir_boards::profile::load(std::path::Path::new(concat!(
//!     env!("CARGO_MANIFEST_DIR"), "/sim/board.toml"))).unwrap();
//! let mut sensors = weir_boards::wired::open(&p, 0).unwrap();
//! let r = sensors[0].poll_read(0).unwrap().unwrap();
//! assert_eq!((r.key.as_str(), r.values.len()), ("pump-1-vibration", 3));
//! ```

use std::fmt;

use weir_core::seam::{Reading, Source, SourceError, SourceErrorKind};

use crate::adxl345::{Adxl345, Adxl345Config};
use crate::bme280::Bme280;
use crate::health::{HealthConfig, SensorStatus};
use crate::ina219::Ina219;
use crate::profile::{BoardProfile, BusKind, Chip, SensorSpec};
use crate::regs::I2cRegs;
use crate::sim::{SimAdxl345, SimBme280, SimI2c, SimIna219};
use crate::source::{Sensor, SensorSource};

/// A failed read, with its kind and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiredError {
    /// The kind, for counters and health.
    pub kind: SourceErrorKind,
    /// What the driver said.
    pub msg: String,
}

impl fmt::Display for WiredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for WiredError {}

impl SourceError for WiredError {
    fn kind(&self) -> SourceErrorKind {
        self.kind
    }
}

/// A sensor could not be opened (the device node is missing, or this build
/// cannot drive its bus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// The sensor's name.
    pub sensor: String,
    /// What went wrong and what to do.
    pub msg: String,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sensor `{}`: {}", self.sensor, self.msg)
    }
}

impl std::error::Error for OpenError {}

trait DynSource: Send {
    fn poll_read(&mut self, now: i64) -> Result<Option<Reading>, WiredError>;
    fn poll_timeout(&self) -> Option<i64>;
    fn status(&self) -> SensorStatus;
}

impl<S> DynSource for SensorSource<S>
where
    S: Sensor + Send,
    S::Error: fmt::Display,
{
    // The source is scheduled in µs so that periods such as 2.5 ms (400 Hz)
    // keep their rate; the agent's clock and the readings are in ms.
    fn poll_read(&mut self, now: i64) -> Result<Option<Reading>, WiredError> {
        match Source::poll_read(self, now.saturating_mul(1000)) {
            Ok(Some(mut r)) => {
                r.ts = now;
                Ok(Some(r))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(WiredError {
                kind: e.kind(),
                msg: e.to_string(),
            }),
        }
    }

    fn poll_timeout(&self) -> Option<i64> {
        // Round up: polling at the floor would find nothing due yet.
        Source::poll_timeout(self)
            .map(|us| us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0))
    }

    fn status(&self) -> SensorStatus {
        SensorSource::status(self)
    }
}

/// One opened sensor of a profile. Time is in milliseconds; the schedule
/// keeps the profile's period in µs, so a 400 Hz sensor polled on a ms
/// clock still gets 400 readings a second.
pub struct WiredSensor {
    name: String,
    chip: Chip,
    source: String,
    inner: Box<dyn DynSource>,
}

impl fmt::Debug for WiredSensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WiredSensor")
            .field("name", &self.name)
            .field("chip", &self.chip)
            .field("status", &self.inner.status())
            .finish()
    }
}

impl WiredSensor {
    /// The sensor's name (the key its readings carry).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipeline source its readings enter as.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The fields of its readings.
    pub fn fields(&self) -> &'static [&'static str] {
        self.chip.fields()
    }

    /// Health and fault counters.
    pub fn status(&self) -> SensorStatus {
        self.inner.status()
    }
}

impl Source for WiredSensor {
    type Error = WiredError;

    fn poll_read(&mut self, now: i64) -> Result<Option<Reading>, WiredError> {
        self.inner.poll_read(now)
    }

    fn poll_timeout(&self) -> Option<i64> {
        self.inner.poll_timeout()
    }
}

/// Writes the sensors' health as Prometheus text
/// ([`crate::health::write_prometheus`]).
///
/// # Errors
/// Only those of `out`.
pub fn write_metrics<W: fmt::Write>(out: &mut W, sensors: &[WiredSensor]) -> fmt::Result {
    crate::health::write_prometheus(out, sensors.iter().map(|s| (s.name(), s.status())))
}

fn boxed<S>(s: &SensorSpec, sensor: S, start: i64, health: HealthConfig) -> Box<dyn DynSource>
where
    S: Sensor + Send + 'static,
    S::Error: fmt::Display,
{
    // Names are validated to ≤ 32 bytes by the profile parser.
    let key = heapless::String::try_from(s.name.as_str()).unwrap_or_default();
    let us = |ms: i64| ms.saturating_mul(1000);
    let health = HealthConfig {
        backoff_base: us(health.backoff_base),
        backoff_max: us(health.backoff_max),
        ..health
    };
    Box::new(SensorSource::new(
        sensor,
        key,
        s.period_us.max(1),
        us(start),
        health,
    ))
}

/// Opens every sensor of `profile`, first reads due at `start` (ms).
///
/// # Errors
/// A sensor's bus cannot be opened; the error names the sensor.
pub fn open(profile: &BoardProfile, start: i64) -> Result<Vec<WiredSensor>, OpenError> {
    profile
        .sensors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let inner = match profile.bus_of(s).kind {
                BusKind::Sim => open_sim(s, i as u64, start, profile.health)?,
                BusKind::I2c | BusKind::Spi => open_linux(profile, s, start)?,
            };
            Ok(WiredSensor {
                name: s.name.clone(),
                chip: s.chip,
                source: s.source.clone(),
                inner,
            })
        })
        .collect()
}

fn adxl_cfg(s: &SensorSpec) -> Adxl345Config {
    Adxl345Config {
        range_g: s.range_g.unwrap_or(16),
        rate_hz: s.rate_hz,
    }
}

fn open_sim(
    s: &SensorSpec,
    seed: u64,
    start: i64,
    health: HealthConfig,
) -> Result<Box<dyn DynSource>, OpenError> {
    // Each simulated sensor gets a bus of its own: the parts do not
    // interact, and the sources need not share one.
    let addr = s.address.unwrap_or(0);
    let seed = seed + 1;
    Ok(match s.chip {
        Chip::Adxl345 => {
            let mut part = SimAdxl345::new(addr, seed);
            part.rate = s.rate_hz;
            let bus = SimI2c::new().with(part);
            boxed(
                s,
                Adxl345::new(I2cRegs::new(bus, addr), adxl_cfg(s)),
                start,
                health,
            )
        }
        Chip::Bme280 => {
            let bus = SimI2c::new().with(SimBme280::new(addr, seed));
            boxed(s, Bme280::new(I2cRegs::new(bus, addr)), start, health)
        }
        Chip::Ina219 => {
            let shunt = s.shunt_ohms.unwrap_or(0.1);
            let mut part = SimIna219::new(addr, seed);
            part.shunt_ohms = shunt;
            let bus = SimI2c::new().with(part);
            boxed(s, Ina219::new(bus, addr, shunt), start, health)
        }
    })
}

#[cfg(not(feature = "linux"))]
fn open_linux(
    _p: &BoardProfile,
    s: &SensorSpec,
    _start: i64,
) -> Result<Box<dyn DynSource>, OpenError> {
    Err(OpenError {
        sensor: s.name.clone(),
        msg: "this build has no Linux I2C/SPI support: build weir-boards with --features linux"
            .into(),
    })
}

#[cfg(feature = "linux")]
fn open_linux(
    p: &BoardProfile,
    s: &SensorSpec,
    start: i64,
) -> Result<Box<dyn DynSource>, OpenError> {
    use crate::linux;
    use crate::regs::SpiRegs;

    let bus = p.bus_of(s);
    let fail = |e: std::io::Error| {
        OpenError {
        sensor: s.name.clone(),
        msg: format!(
            "cannot open {}: {e} (is the bus enabled, e.g. dtparam=i2c_arm=on / spi=on, and may weir read it?)",
            bus.device.as_deref().unwrap_or(std::path::Path::new("?")).display()
        ),
    }
    };
    let h = p.health;
    let addr = s.address.unwrap_or(0);
    Ok(match (bus.kind, s.chip) {
        (BusKind::Spi, Chip::Adxl345) => {
            let dev = linux::open_spi(bus).map_err(fail)?;
            boxed(
                s,
                Adxl345::new(SpiRegs::adxl345(dev), adxl_cfg(s)),
                start,
                h,
            )
        }
        (BusKind::Spi, Chip::Bme280) => {
            let dev = linux::open_spi(bus).map_err(fail)?;
            boxed(s, Bme280::new(SpiRegs::bme280(dev)), start, h)
        }
        (_, Chip::Adxl345) => {
            let dev = linux::open_i2c(bus).map_err(fail)?;
            boxed(
                s,
                Adxl345::new(I2cRegs::new(dev, addr), adxl_cfg(s)),
                start,
                h,
            )
        }
        (_, Chip::Bme280) => {
            let dev = linux::open_i2c(bus).map_err(fail)?;
            boxed(s, Bme280::new(I2cRegs::new(dev, addr)), start, h)
        }
        (_, Chip::Ina219) => {
            let dev = linux::open_i2c(bus).map_err(fail)?;
            boxed(
                s,
                Ina219::new(dev, addr, s.shunt_ohms.unwrap_or(0.1)),
                start,
                h,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_board_sensors_read_and_report_health() {
        let p = crate::profile::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sim/board.toml"
        )))
        .unwrap();
        let mut sensors = open(&p, 1_000).unwrap();
        let names: Vec<_> = sensors.iter().map(|s| (s.name(), s.source())).collect();
        assert_eq!(
            names,
            [
                ("pump-1-vibration", "vibration"),
                ("pump-2-vibration", "vibration"),
                ("cabinet-env", "environment"),
                ("pump-1-current", "power"),
            ]
        );
        assert_eq!(sensors[0].fields(), ["x", "y", "z"]);
        let mut n = [0; 4];
        for now in (1_000..3_000).step_by(5) {
            for (i, s) in sensors.iter_mut().enumerate() {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    let r = s.poll_read(now).unwrap().unwrap();
                    assert_eq!(r.ts, now);
                    let v = r.values.as_slice();
                    let ok = match i {
                        // Gravity on z, within the simulated vibration and noise.
                        0 | 1 => (v[2] - 9.80665).abs() < 0.5,
                        // 25 °C ± the drift, about 1006.5 hPa, some humidity.
                        2 => {
                            (v[0] - 25.0).abs() < 2.0
                                && (v[1] - 100_653.0).abs() < 100.0
                                && v[2] > 10.0
                                && v[2] < 90.0
                        }
                        // 12 V, 0.5 A ± ripple.
                        _ => (v[0] - 12.0).abs() < 0.01 && (v[1] - 0.5).abs() < 0.06,
                    };
                    assert!(ok, "{}: {v:?}", s.name());
                    n[i] += 1;
                }
            }
        }
        assert_eq!(
            n,
            [200, 200, 2, 20],
            "100, 100, 1 and 10 Hz for two seconds"
        );
        assert!(sensors.iter().all(|s| s.status().healthy));
    }

    #[test]
    fn fractional_periods_keep_their_rate_on_a_millisecond_clock() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sim/board.toml"))
            .unwrap()
            .replacen(
                "rate_hz = 100\nrange_g = 4",
                "rate_hz = 400\nrange_g = 4",
                1,
            );
        let p = crate::profile::parse("sim.toml", &text).unwrap();
        assert_eq!(p.sensors[0].period_us, 2_500);
        let mut s = open(&p, 0).unwrap().swap_remove(0);
        let mut ts = vec![];
        let mut now = 0;
        while now < 1_000 {
            if let Some(r) = s.poll_read(now).unwrap() {
                ts.push(r.ts);
            }
            now = s.poll_timeout().unwrap().max(now + 1);
        }
        assert_eq!(ts.len(), 400);
        assert_eq!(&ts[..5], [0, 3, 5, 8, 10], "due at 0, 2.5, 5, 7.5, 10 ms");
    }

    #[test]
    fn gateway_buses_need_the_linux_feature_or_a_device() {
        let p = crate::profile::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rpi4/board.toml"
        )))
        .unwrap();
        // Without the feature: a clear message; with it, /dev/spidev0.0 does
        // not exist on a build host.
        let e = open(&p, 0).unwrap_err();
        assert_eq!(e.sensor, "pump-1-vibration");
        assert!(
            e.msg.contains("--features linux") || e.msg.contains("/dev/spidev0.0"),
            "{e}"
        );
    }
}
