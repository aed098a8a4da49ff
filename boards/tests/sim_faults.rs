//! Fault injection on the simulated bus, through the real drivers: a part
//! that is unplugged turns unhealthy in status and metrics and comes back;
//! a part that browned out (lost its configuration) is re-initialised.
//! Virtual time only.

use weir_boards::adxl345::{Adxl345, Adxl345Config};
use weir_boards::bme280::Bme280;
use weir_boards::health::{write_prometheus, HealthConfig};
use weir_boards::ina219::Ina219;
use weir_boards::regs::I2cRegs;
use weir_boards::sim::{SimAdxl345, SimBme280, SimI2c, SimIna219};
use weir_boards::source::{Sensor, SensorSource};
use weir_core::seam::{Source, SourceErrorKind};

const CFG: HealthConfig = HealthConfig {
    unhealthy_after: 3,
    backoff_base: 10,
    backoff_max: 80,
};

/// Polls at every due time until `until`; returns (good reads, errors by kind).
fn drive<S: Sensor>(src: &mut SensorSource<S>, until: i64) -> (u32, Vec<SourceErrorKind>) {
    let (mut ok, mut errs) = (0, vec![]);
    while let Some(t) = src.poll_timeout().filter(|t| *t < until) {
        match src.poll_read(t) {
            Ok(Some(_)) => ok += 1,
            Ok(None) => unreachable!("polled when due"),
            Err(e) => errs.push(weir_core::seam::SourceError::kind(&e)),
        }
    }
    (ok, errs)
}

fn bus_of<S>(
    src: &mut SensorSource<Adxl345<I2cRegs<SimI2c>>>,
    f: impl FnOnce(&mut SimI2c) -> S,
) -> S {
    f(src.sensor_mut().bus_mut().bus_mut())
}

#[test]
fn unplugged_accelerometer_goes_unhealthy_in_metrics_and_recovers() {
    let bus = SimI2c::new().with(SimAdxl345::new(0x53, 9));
    let acc = Adxl345::new(I2cRegs::new(bus, 0x53), Adxl345Config::default());
    let mut src = SensorSource::new(acc, "vib".try_into().unwrap(), 10, 0, CFG);
    assert_eq!(drive(&mut src, 100), (10, vec![]));

    bus_of(&mut src, |b| b.set_unplugged(0x53, true));
    let (ok, errs) = drive(&mut src, 1_000);
    assert_eq!(ok, 0);
    assert!(errs.iter().all(|k| *k == SourceErrorKind::Nack), "{errs:?}");
    // Retries at 100, 110, 130, 170, 250, then every 80 ms until 1000.
    assert_eq!(errs.len(), 5 + (1_000 - 250 - 1) / 80);
    let st = src.status();
    assert!(!st.healthy);
    let mut text = String::new();
    write_prometheus(&mut text, [("vib", st)].into_iter()).unwrap();
    assert!(
        text.contains("weir_sensor_healthy{sensor=\"vib\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "weir_sensor_faults_total{{sensor=\"vib\",kind=\"nack\"}} {}",
            errs.len()
        )),
        "{text}"
    );

    // Plugged back in: power-cycled, so re-initialised on the next try.
    bus_of(&mut src, |b| b.set_unplugged(0x53, false));
    let (ok, errs) = drive(&mut src, 2_000);
    assert!(errs.is_empty(), "{errs:?}");
    assert!(ok >= 90, "{ok}");
    assert!(src.status().healthy);
    assert_eq!(src.status().became_unhealthy, 1);
}

#[test]
fn brownout_without_a_bus_error_is_caught_by_data_ready_and_reinit() {
    let bus = SimI2c::new().with(SimAdxl345::new(0x53, 9));
    let acc = Adxl345::new(I2cRegs::new(bus, 0x53), Adxl345Config::default());
    let mut src = SensorSource::new(acc, "vib".try_into().unwrap(), 10, 0, CFG);
    drive(&mut src, 50);
    // Power dips between two reads: the part comes back in standby.
    bus_of(&mut src, |b| {
        b.set_unplugged(0x53, true);
        b.set_unplugged(0x53, false);
    });
    let (ok, errs) = drive(&mut src, 100);
    assert_eq!(
        errs,
        [SourceErrorKind::Timeout],
        "one 'not ready', then re-init"
    );
    assert_eq!(
        ok, 4,
        "fails at 50, reads at the retry (60), then 70, 80, 90"
    );
    assert!(src.status().healthy);
}

#[test]
fn bme280_power_cycle_reinitialises_and_nacks_are_counted() {
    let bus = SimI2c::new().with(SimBme280::new(0x77, 4));
    let mut src = SensorSource::new(
        Bme280::new(I2cRegs::new(bus, 0x77)),
        "env".try_into().unwrap(),
        1_000,
        0,
        CFG,
    );
    let r = src.poll_read(0).unwrap().unwrap();
    assert!((r.values[0] - 25.0).abs() < 2.0, "{:?}", r.values);
    let b = src.sensor_mut().bus_mut().bus_mut();
    b.set_unplugged(0x77, true);
    b.set_unplugged(0x77, false);
    // Sleep mode after power-up: the ADC holds its reset value.
    assert_eq!(
        src.poll_read(1_000).unwrap_err(),
        weir_boards::SensorError::NotReady
    );
    src.sensor_mut().bus_mut().bus_mut().nack_next(0x77, 2);
    assert_eq!(
        drive(&mut src, 1_031),
        (0, vec![SourceErrorKind::Nack, SourceErrorKind::Nack])
    );
    assert!(!src.status().healthy, "three in a row");
    let t = src.poll_timeout().unwrap();
    assert!(src.poll_read(t).unwrap().is_some());
    let f = src.status().faults;
    assert_eq!((f.timeout, f.nack, f.total()), (1, 2, 3));
}

#[test]
fn ina219_reads_through_the_sim_and_counts_a_missing_part() {
    let bus = SimI2c::new().with(SimIna219::new(0x41, 2));
    // Wrong address: every try NACKs.
    let mut src = SensorSource::new(
        Ina219::new(bus.clone(), 0x40, 0.1),
        "cur".try_into().unwrap(),
        100,
        0,
        CFG,
    );
    let (ok, errs) = drive(&mut src, 1_000);
    assert_eq!(ok, 0);
    assert!(errs.len() > 5 && errs.iter().all(|k| *k == SourceErrorKind::Nack));
    let mut src = SensorSource::new(
        Ina219::new(bus, 0x41, 0.1),
        "cur".try_into().unwrap(),
        100,
        0,
        CFG,
    );
    let r = src.poll_read(0).unwrap().unwrap();
    assert!(
        (r.values[0] - 12.0).abs() < 0.01 && (r.values[1] - 0.5).abs() < 0.06,
        "{:?}",
        r.values
    );
}
