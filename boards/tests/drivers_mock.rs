//! Register-level tests of the drivers against `embedded-hal-mock`: the
//! exact transactions a part sees, and every error path.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as T};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as S};
use weir_boards::adxl345::{Adxl345, Adxl345Config};
use weir_boards::bme280::{Bme280, Calibration};
use weir_boards::health::HealthConfig;
use weir_boards::ina219::Ina219;
use weir_boards::regs::{I2cRegs, SpiRegs};
use weir_boards::source::SensorSource;
use weir_boards::SensorError;
use weir_core::seam::{Source, SourceError, SourceErrorKind};

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

// ---------------------------------------------------------------- ADXL345

const A: u8 = 0x53;

fn adxl_init() -> Vec<T> {
    vec![
        T::write_read(A, vec![0x00], vec![0xE5]),
        T::write(A, vec![0x2C, 0x0B]), // 100 Hz sample → 200 Hz ODR
        T::write(A, vec![0x31, 0x08 | 0x03]),
        T::write(A, vec![0x2D, 0x08]),
        T::write_read(A, vec![0x2D], vec![0x08]),
    ]
}

fn adxl(bus: &I2cMock) -> Adxl345<I2cRegs<I2cMock>> {
    Adxl345::new(I2cRegs::new(bus.clone(), A), Adxl345Config::default())
}

#[test]
fn adxl345_init_configures_rate_range_and_measure_mode() {
    let mut bus = I2cMock::new(&adxl_init());
    adxl(&bus).init().unwrap();
    bus.done();
}

#[test]
fn adxl345_rate_codes_follow_the_datasheet_table() {
    let code = |hz: f64| {
        Adxl345Config {
            range_g: 2,
            rate_hz: hz,
        }
        .rate_code()
    };
    assert_eq!(code(1.0), 6); // 6.25 Hz
    assert_eq!(code(50.0), 10); // 100 Hz
    assert_eq!(code(100.0), 11); // 200 Hz
    assert_eq!(code(1600.0), 15); // 3200 Hz
    assert_eq!(code(10_000.0), 15); // capped
}

#[test]
fn adxl345_all_ones_from_a_floating_bus_is_not_a_sample() {
    // Data line stuck high: INT_SOURCE, the data and the id all read 0xFF.
    let mut bus = I2cMock::new(&[
        T::write_read(A, vec![0x30], vec![0xFF]),
        T::write_read(A, vec![0x32], vec![0xFF; 6]),
        T::write_read(A, vec![0x00], vec![0xFF]),
        // A real -1 LSB sample from a part that still answers is kept.
        T::write_read(A, vec![0x30], vec![0x80]),
        T::write_read(A, vec![0x32], vec![0xFF; 6]),
        T::write_read(A, vec![0x00], vec![0xE5]),
    ]);
    let mut d = adxl(&bus);
    assert!(matches!(
        d.read_raw(),
        Err(SensorError::ChipId { found: 0xFF, .. })
    ));
    assert_eq!(d.read_raw().unwrap(), [-1, -1, -1]);
    bus.done();
}

#[test]
fn adxl345_reads_little_endian_axes_in_g() {
    let mut bus = I2cMock::new(&[
        T::write_read(A, vec![0x30], vec![0x83]),
        // x = -256 (0xFF00), y = 128, z = 512
        T::write_read(A, vec![0x32], vec![0x00, 0xFF, 0x80, 0x00, 0x00, 0x02]),
    ]);
    assert_eq!(adxl(&bus).read_g().unwrap(), [-1.0, 0.5, 2.0]);
    bus.done();
}

#[test]
fn adxl345_wrong_chip_id_is_implausible_and_stops_init() {
    let mut bus = I2cMock::new(&[T::write_read(A, vec![0x00], vec![0xFF])]);
    let e = adxl(&bus).init().unwrap_err();
    assert_eq!(
        e,
        SensorError::ChipId {
            expected: 0xE5,
            found: 0xFF
        }
    );
    assert_eq!(e.kind(), SourceErrorKind::Implausible);
    bus.done();
}

#[test]
fn adxl345_measure_bit_that_does_not_stick_is_implausible() {
    let mut ex = adxl_init();
    ex[4] = T::write_read(A, vec![0x2D], vec![0x00]);
    let mut bus = I2cMock::new(&ex);
    assert_eq!(
        adxl(&bus).init().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    bus.done();
}

#[test]
fn adxl345_nack_on_write_is_reported_as_nack() {
    let mut bus = I2cMock::new(&[
        T::write_read(A, vec![0x00], vec![0xE5]),
        T::write(A, vec![0x2C, 0x0B]).with_error(NACK),
    ]);
    assert_eq!(adxl(&bus).init().unwrap_err().kind(), SourceErrorKind::Nack);
    bus.done();
}

#[test]
fn adxl345_no_data_ready_is_a_timeout() {
    let mut bus = I2cMock::new(&[T::write_read(A, vec![0x30], vec![0x00])]);
    let e = adxl(&bus).read_raw().unwrap_err();
    assert_eq!(e, SensorError::NotReady);
    assert_eq!(e.kind(), SourceErrorKind::Timeout);
    bus.done();
}

#[test]
fn adxl345_value_outside_the_range_is_implausible() {
    // ±2 g full resolution is 10 bits: 512 LSB is one past the top.
    let mut bus = I2cMock::new(&[
        T::write_read(A, vec![0x30], vec![0x80]),
        T::write_read(A, vec![0x32], vec![0, 0, 0, 0x02, 0, 0]),
    ]);
    let mut acc = Adxl345::new(
        I2cRegs::new(bus.clone(), A),
        Adxl345Config {
            range_g: 2,
            rate_hz: 10.0,
        },
    );
    assert_eq!(
        acc.read_raw().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    bus.done();
}

#[test]
fn adxl345_bus_error_and_arbitration_loss_are_bus_faults() {
    for err in [ErrorKind::Bus, ErrorKind::ArbitrationLoss] {
        let mut bus = I2cMock::new(&[
            T::write_read(A, vec![0x30], vec![0x80]),
            T::write_read(A, vec![0x32], vec![0; 6]).with_error(err),
        ]);
        assert_eq!(
            adxl(&bus).read_raw().unwrap_err().kind(),
            SourceErrorKind::Bus
        );
        bus.done();
    }
}

#[test]
fn adxl345_over_spi_uses_read_and_multibyte_bits() {
    let mut spi = SpiMock::new(&[
        S::transaction_start(),
        S::write_vec(vec![0x80]), // read DEVID
        S::read_vec(vec![0xE5]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0x2C, 0x0B]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0x31, 0x0B]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0x2D, 0x08]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0x80 | 0x2D]),
        S::read_vec(vec![0x08]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0x80 | 0x30]),
        S::read_vec(vec![0x80]),
        S::transaction_end(),
        S::transaction_start(),
        S::write_vec(vec![0xC0 | 0x32]), // burst: read + multi-byte
        S::read_vec(vec![0, 1, 0, 0, 0, 0]),
        S::transaction_end(),
    ]);
    let mut acc = Adxl345::new(SpiRegs::adxl345(spi.clone()), Adxl345Config::default());
    acc.init().unwrap();
    assert_eq!(acc.read_g().unwrap(), [1.0, 0.0, 0.0]);
    spi.done();
}

#[test]
fn adxl345_source_recovers_after_a_brownout_by_reinitialising() {
    // Reads fine, then the part browns out (standby: no DATA_READY), the
    // source backs off, re-initialises and reads again.
    let mut ex = adxl_init();
    ex.push(T::write_read(A, vec![0x30], vec![0x80]));
    ex.push(T::write_read(A, vec![0x32], vec![0, 0, 0, 0, 0, 1]));
    ex.push(T::write_read(A, vec![0x30], vec![0x00]));
    ex.extend(adxl_init());
    ex.push(T::write_read(A, vec![0x30], vec![0x80]));
    ex.push(T::write_read(A, vec![0x32], vec![0, 0, 0, 0, 0, 1]));
    let mut bus = I2cMock::new(&ex);
    let cfg = HealthConfig {
        unhealthy_after: 3,
        backoff_base: 50,
        backoff_max: 1000,
    };
    let mut src = SensorSource::new(adxl(&bus), "vib".try_into().unwrap(), 10, 0, cfg);
    let r = src.poll_read(0).unwrap().unwrap();
    assert!(
        (r.values[2] - 9.80665).abs() < 1e-12,
        "z in m/s²: {:?}",
        r.values
    );
    assert_eq!(
        src.poll_read(10).unwrap_err().kind(),
        SourceErrorKind::Timeout
    );
    assert_eq!(src.poll_timeout(), Some(60));
    assert_eq!(src.poll_read(59).unwrap(), None);
    let r = src.poll_read(60).unwrap().unwrap();
    assert_eq!(r.ts, 60);
    assert_eq!(src.status().faults.timeout, 1);
    assert!(src.status().healthy);
    bus.done();
}

// ---------------------------------------------------------------- BME280

const B: u8 = 0x76;

/// The calibration of the datasheet's worked example (BMP280 datasheet
/// 3.12 / BME280 application note), with humidity words from a real part.
fn calib_bytes() -> ([u8; 26], [u8; 7]) {
    let words: [u16; 12] = [
        27504,
        26435,
        (-1000i16) as u16,
        36477,
        (-10685i16) as u16,
        3024,
        2855,
        140,
        (-7i16) as u16,
        15500,
        (-14600i16) as u16,
        6000,
    ];
    let mut a = [0u8; 26];
    for (i, w) in words.iter().enumerate() {
        a[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    a[25] = 75; // H1
                // H2 = 362, H3 = 0, H4 = 313 (0x139), H5 = 50 (0x032), H6 = 30
    let b = [0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 30];
    (a, b)
}

fn bme_init() -> Vec<T> {
    let (a, b) = calib_bytes();
    vec![
        T::write_read(B, vec![0xD0], vec![0x60]),
        T::write_read(B, vec![0x88], a.to_vec()),
        T::write_read(B, vec![0xE1], b.to_vec()),
        T::write(B, vec![0xF2, 0x01]),
        T::write(B, vec![0xF5, 0x20]),
        T::write(B, vec![0xF4, 0x27]),
    ]
}

/// 20-bit ADC values into the register burst layout.
fn bme_data(adc_p: u32, adc_t: u32, adc_h: u16) -> Vec<u8> {
    let [h_hi, h_lo] = adc_h.to_be_bytes();
    vec![
        (adc_p >> 12) as u8,
        (adc_p >> 4) as u8,
        ((adc_p & 0xf) << 4) as u8,
        (adc_t >> 12) as u8,
        (adc_t >> 4) as u8,
        ((adc_t & 0xf) << 4) as u8,
        h_hi,
        h_lo,
    ]
}

#[test]
fn bme280_calibration_decodes_the_split_humidity_nibbles() {
    let (a, b) = calib_bytes();
    let c = Calibration::from_bytes(&a, &b);
    assert_eq!((c.t1, c.t2, c.t3), (27504, 26435, -1000));
    assert_eq!((c.p1, c.p2, c.p9), (36477, -10685, 6000));
    assert_eq!(
        (c.h1, c.h2, c.h3, c.h4, c.h5, c.h6),
        (75, 362, 0, 313, 50, 30)
    );
    // Negative H4/H5: the high byte carries the sign.
    let c = Calibration::from_bytes(&a, &[0, 0, 0, 0xFF, 0x2F, 0xFE, 0]);
    assert_eq!((c.h4, c.h5), (-16 + 0xF, -32 + 0x2));
}

#[test]
fn bme280_matches_the_datasheet_worked_example() {
    let (a, b) = calib_bytes();
    let c = Calibration::from_bytes(&a, &b);
    let (t_fine, t) = c.temperature(519_888);
    assert_eq!(t, 2508, "25.08 °C");
    assert_eq!(t_fine, 128_422);
    let p = f64::from(c.pressure(t_fine, 415_148).unwrap()) / 256.0;
    assert!((p - 100_653.27).abs() < 0.5, "pressure {p} Pa");
}

/// The datasheet's floating-point humidity formula (4.2.3), as a reference.
fn humidity_reference(c: &Calibration, t_fine: i32, adc_h: i32) -> f64 {
    let v = f64::from(t_fine) - 76800.0;
    let mut h = (f64::from(adc_h) - (f64::from(c.h4) * 64.0 + f64::from(c.h5) / 16384.0 * v))
        * (f64::from(c.h2) / 65536.0
            * (1.0 + f64::from(c.h6) / 67108864.0 * v * (1.0 + f64::from(c.h3) / 67108864.0 * v)));
    h *= 1.0 - f64::from(c.h1) * h / 524288.0;
    h.clamp(0.0, 100.0)
}

#[test]
fn bme280_integer_humidity_agrees_with_the_float_reference() {
    let (a, b) = calib_bytes();
    let c = Calibration::from_bytes(&a, &b);
    let mut checked = 0;
    for adc_t in [400_000, 519_888, 600_000] {
        let (t_fine, _) = c.temperature(adc_t);
        for adc_h in (20_000..40_000).step_by(997) {
            let got = f64::from(c.humidity(t_fine, adc_h)) / 1024.0;
            let want = humidity_reference(&c, t_fine, adc_h);
            assert!((got - want).abs() < 0.05, "adc_h {adc_h}: {got} vs {want}");
            checked += usize::from(want > 0.0 && want < 100.0);
        }
    }
    assert!(
        checked > 20,
        "the sweep must cover unclamped values, covered {checked}"
    );
}

#[test]
fn bme280_reads_a_compensated_measurement() {
    let mut ex = bme_init();
    ex.push(T::write_read(
        B,
        vec![0xF7],
        bme_data(415_148, 519_888, 30_000),
    ));
    let mut bus = I2cMock::new(&ex);
    let mut s = Bme280::new(I2cRegs::new(bus.clone(), B));
    s.init().unwrap();
    let m = s.measure().unwrap();
    assert_eq!(m.temperature, 25.08);
    assert!((m.pressure - 100_653.27).abs() < 0.5);
    assert!(m.humidity > 0.0 && m.humidity < 100.0, "{}", m.humidity);
    bus.done();
}

#[test]
fn bme280_error_paths() {
    // A BMP280 answers 0x58.
    let mut bus = I2cMock::new(&[T::write_read(B, vec![0xD0], vec![0x58])]);
    let e = Bme280::new(I2cRegs::new(bus.clone(), B))
        .init()
        .unwrap_err();
    assert_eq!(
        e,
        SensorError::ChipId {
            expected: 0x60,
            found: 0x58
        }
    );
    bus.done();

    // Blank calibration.
    let mut bus = I2cMock::new(&[
        T::write_read(B, vec![0xD0], vec![0x60]),
        T::write_read(B, vec![0x88], vec![0; 26]),
        T::write_read(B, vec![0xE1], vec![0; 7]),
    ]);
    let e = Bme280::new(I2cRegs::new(bus.clone(), B))
        .init()
        .unwrap_err();
    assert_eq!(e.kind(), SourceErrorKind::Implausible);
    bus.done();

    // Not initialised: no bus traffic, not ready.
    let mut bus = I2cMock::new(&[]);
    let e = Bme280::new(I2cRegs::new(bus.clone(), B))
        .measure()
        .unwrap_err();
    assert_eq!(e.kind(), SourceErrorKind::Timeout);
    bus.done();

    // Before the first conversion the ADC holds 0x80000: not ready.
    let mut ex = bme_init();
    ex.push(T::write_read(
        B,
        vec![0xF7],
        bme_data(0x80000, 0x80000, 0x8000),
    ));
    // An implausible temperature (adc_t near full scale is > 85 °C).
    ex.push(T::write_read(
        B,
        vec![0xF7],
        bme_data(415_148, 1_000_000, 30_000),
    ));
    // A NACK in the middle of a burst.
    ex.push(T::write_read(B, vec![0xF7], vec![0; 8]).with_error(NACK));
    let mut bus = I2cMock::new(&ex);
    let mut s = Bme280::new(I2cRegs::new(bus.clone(), B));
    s.init().unwrap();
    assert_eq!(s.measure().unwrap_err(), SensorError::NotReady);
    assert_eq!(
        s.measure().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    assert_eq!(s.measure().unwrap_err().kind(), SourceErrorKind::Nack);
    bus.done();
}

#[test]
fn bme280_over_spi_clears_bit7_on_writes_and_sets_it_on_reads() {
    let (a, b) = calib_bytes();
    let rd = |r: u8, v: Vec<u8>| {
        vec![
            S::transaction_start(),
            S::write_vec(vec![0x80 | r]),
            S::read_vec(v),
            S::transaction_end(),
        ]
    };
    let wr = |r: u8, v: u8| {
        vec![
            S::transaction_start(),
            S::write_vec(vec![r & 0x7f, v]),
            S::transaction_end(),
        ]
    };
    let mut ex = Vec::new();
    ex.extend(rd(0xD0, vec![0x60]));
    ex.extend(rd(0x88, a.to_vec()));
    ex.extend(rd(0xE1, b.to_vec()));
    ex.extend(wr(0xF2, 0x01));
    ex.extend(wr(0xF5, 0x20));
    ex.extend(wr(0xF4, 0x27));
    ex.extend(rd(0xF7, bme_data(415_148, 519_888, 30_000)));
    let mut spi = SpiMock::new(&ex);
    let mut s = Bme280::new(SpiRegs::bme280(spi.clone()));
    s.init().unwrap();
    assert_eq!(s.measure().unwrap().temperature, 25.08);
    spi.done();
}

#[test]
fn bme280_corrupt_calibration_never_panics() {
    // Every calibration word at an extreme, every ADC value at an extreme:
    // errors or values, never an overflow panic (tests run with overflow checks).
    for fill in [0x00u8, 0x7f, 0x80, 0xff, 0x55] {
        let a = [fill; 26];
        let b = [fill; 7];
        let c = Calibration::from_bytes(&a, &b);
        for adc in [0, 1, 0x7ffff, 0xfffff] {
            let (t_fine, _) = c.temperature(adc);
            let _ = c.pressure(t_fine, adc);
            let _ = c.humidity(t_fine, adc & 0xffff);
        }
    }
}

// ---------------------------------------------------------------- INA219

const I: u8 = 0x40;

fn ina_init() -> Vec<T> {
    vec![
        T::write(I, vec![0x00, 0x39, 0x9F]),
        T::write_read(I, vec![0x00], vec![0x39, 0x9F]),
    ]
}

#[test]
fn ina219_init_writes_and_verifies_the_configuration() {
    let mut bus = I2cMock::new(&ina_init());
    Ina219::new(bus.clone(), I, 0.1).init().unwrap();
    bus.done();
}

#[test]
fn ina219_computes_current_from_the_shunt_voltage() {
    // Bus 12.000 V = 3000 LSB << 3, conversion ready; shunt 5.00 mV = 500 LSB.
    let bus_reg = (3000u16 << 3) | 0x2;
    let mut bus = I2cMock::new(&[
        T::write_read(I, vec![0x02], bus_reg.to_be_bytes().to_vec()),
        T::write_read(I, vec![0x01], 500i16.to_be_bytes().to_vec()),
        T::write_read(I, vec![0x02], bus_reg.to_be_bytes().to_vec()),
        T::write_read(I, vec![0x01], (-250i16).to_be_bytes().to_vec()),
    ]);
    let mut p = Ina219::new(bus.clone(), I, 0.1);
    let m = p.measure().unwrap();
    assert!((m.bus_volts - 12.0).abs() < 1e-9);
    assert!((m.amps - 0.05).abs() < 1e-12, "{}", m.amps);
    assert!(
        (p.measure().unwrap().amps + 0.025).abs() < 1e-12,
        "reverse current is negative"
    );
    bus.done();
}

#[test]
fn ina219_error_paths() {
    // Read-back mismatch: another part at the address.
    let mut bus = I2cMock::new(&[
        T::write(I, vec![0x00, 0x39, 0x9F]),
        T::write_read(I, vec![0x00], vec![0xFF, 0xFF]),
    ]);
    assert_eq!(
        Ina219::new(bus.clone(), I, 0.1).init().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    bus.done();

    // A zero shunt is refused before touching the bus.
    let mut bus = I2cMock::new(&[]);
    assert_eq!(
        Ina219::new(bus.clone(), I, 0.0).init().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    bus.done();

    // Math overflow flag; shunt past full scale; NACK.
    let mut bus = I2cMock::new(&[
        T::write_read(I, vec![0x02], vec![0x00, 0x01]),
        T::write_read(I, vec![0x02], vec![0x00, 0x02]),
        T::write_read(I, vec![0x01], 32_001i16.to_be_bytes().to_vec()),
        T::write_read(I, vec![0x02], vec![0, 0]).with_error(NACK),
    ]);
    let mut p = Ina219::new(bus.clone(), I, 0.1);
    assert_eq!(
        p.measure().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    assert_eq!(
        p.measure().unwrap_err().kind(),
        SourceErrorKind::Implausible
    );
    assert_eq!(p.measure().unwrap_err().kind(), SourceErrorKind::Nack);
    bus.done();
}

#[test]
fn ina219_that_keeps_nacking_turns_unhealthy_then_recovers() {
    let mut ex = Vec::new();
    for _ in 0..3 {
        ex.push(T::write(I, vec![0x00, 0x39, 0x9F]).with_error(NACK));
    }
    ex.extend(ina_init());
    ex.push(T::write_read(I, vec![0x02], vec![0x5D, 0xC2]));
    ex.push(T::write_read(I, vec![0x01], vec![0x00, 0x64]));
    let mut bus = I2cMock::new(&ex);
    let cfg = HealthConfig {
        unhealthy_after: 3,
        backoff_base: 100,
        backoff_max: 250,
    };
    let mut src = SensorSource::new(
        Ina219::new(bus.clone(), I, 0.1),
        "pump-1-current".try_into().unwrap(),
        1000,
        0,
        cfg,
    );
    let mut times = vec![];
    for _ in 0..3 {
        let now = src.poll_timeout().unwrap();
        times.push(now);
        assert_eq!(
            src.poll_read(now).unwrap_err().kind(),
            SourceErrorKind::Nack
        );
    }
    assert_eq!(times, [0, 100, 300]);
    assert!(!src.status().healthy);
    assert_eq!(src.status().faults.nack, 3);
    assert_eq!(src.poll_timeout(), Some(550), "backoff capped at 250");
    let r = src.poll_read(550).unwrap().unwrap();
    assert_eq!(r.values.len(), 2);
    assert!(src.status().healthy);
    bus.done();
}
