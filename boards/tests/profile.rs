//! Board profiles: the shipped boards load, and each mistake is reported at
//! its line and column with what to do.

use std::path::Path;

use weir_boards::profile::{self, BusKind, Chip, DurabilityMode, Flash};

fn board(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .join("board.toml")
}

#[test]
fn rpi4_profile_loads() {
    let p = profile::load(&board("rpi4")).unwrap();
    assert_eq!(p.name, "rpi4");
    assert_eq!(p.target, "aarch64-unknown-linux-musl");
    assert_eq!(p.data_dir, Path::new("/var/lib/weir"));
    assert_eq!(p.durability.flash, Flash::Sd);
    assert_eq!(p.durability.mode, DurabilityMode::Journal);
    assert_eq!(
        (
            p.durability.group_commit_ms,
            p.durability.checkpoint_interval_ms
        ),
        (50, 300_000)
    );
    assert_eq!(p.durability.disk_budget_bytes, 1 << 30);
    assert_eq!(p.health.unhealthy_after, 5);
    assert_eq!((p.health.backoff_base, p.health.backoff_max), (100, 30_000));
    let kinds: Vec<_> = p
        .buses
        .iter()
        .map(|b| (b.kind, b.speed_hz, b.spi_mode))
        .collect();
    assert_eq!(
        kinds,
        [
            (BusKind::I2c, 400_000, None),
            (BusKind::Spi, 5_000_000, Some(3))
        ]
    );
    let s: Vec<_> = p
        .sensors
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.chip,
                p.bus_of(s).name.as_str(),
                s.address,
                s.period_us,
            )
        })
        .collect();
    assert_eq!(
        s,
        [
            ("pump-1-vibration", Chip::Adxl345, "spi0", None, 2_500),
            ("cabinet-env", Chip::Bme280, "i2c1", Some(0x76), 1_000_000),
            ("pump-1-current", Chip::Ina219, "i2c1", Some(0x40), 100_000),
        ]
    );
    assert_eq!(p.sensors[2].shunt_ohms, Some(0.1));
    assert_eq!(p.sensors[0].source, "vibration");
    assert_eq!(
        Chip::Bme280.fields(),
        ["temperature", "pressure", "humidity"]
    );
}

#[test]
fn sim_profile_loads() {
    let p = profile::load(&board("sim")).unwrap();
    assert_eq!((p.name.as_str(), p.target.as_str()), ("sim", "host"));
    assert!(p.data_dir.is_relative());
    assert_eq!(p.buses[0].kind, BusKind::Sim);
    assert_eq!(p.sensors.len(), 4);
    assert_eq!(p.sensors[0].range_g, Some(4));
    assert_eq!(p.sensors[1].range_g, Some(16), "default range");
}

#[test]
fn a_board_in_the_wrong_folder_is_named() {
    let top = std::env::temp_dir().join(format!("weir-boards-test-{}", std::process::id()));
    let dir = top.join("boards").join("rpi5");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("board.toml");
    std::fs::copy(board("rpi4"), &path).unwrap();
    let e = profile::load(&path).unwrap_err();
    // An installed copy outside boards/ (a gateway's /etc/weir/board.toml).
    let installed = top.join("etc-weir");
    std::fs::create_dir_all(&installed).unwrap();
    std::fs::copy(board("rpi4"), installed.join("board.toml")).unwrap();
    let p = profile::load(&installed.join("board.toml"));
    std::fs::remove_dir_all(&top).unwrap();
    assert_eq!((e.line, e.col), (6, 8), "{e}");
    assert!(e.msg.contains("board `rpi4` is in folder `rpi5`"), "{e}");
    assert_eq!(p.unwrap().name, "rpi4");
}

#[test]
fn a_missing_file_says_where_boards_live() {
    let e = profile::load(Path::new("/nonexistent/board.toml")).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(
        e.to_string().contains("cannot read the board profile"),
        "{e}"
    );
    assert!(e.help.contains("boards/<name>/board.toml"));
}

const BASE: &str = r#"[board]
name = "t"
target = "aarch64-unknown-linux-musl"
data_dir = "/var/lib/weir"

[durability]
flash = "sd"

[[bus]]
name = "i2c1"
kind = "i2c"
device = "/dev/i2c-1"

[[bus]]
name = "spi0"
kind = "spi"
device = "/dev/spidev0.0"
spi_mode = 3

[[sensor]]
name = "vib"
chip = "adxl345"
bus = "spi0"
rate_hz = 800

[[sensor]]
name = "cur"
chip = "ina219"
bus = "i2c1"
address = 0x40
rate_hz = 10
shunt_ohms = 0.1
"#;

#[test]
fn the_base_profile_is_valid() {
    let p = profile::parse("t.toml", BASE).unwrap();
    assert_eq!(p.durability.checkpoint_interval_ms, 300_000, "SD default");
    assert_eq!(p.durability.group_commit_ms, 50, "SD default");
    assert_eq!(p.durability.keep_checkpoints, 2);
    assert_eq!(p.sensors[0].period_us, 1250);
}

/// `(replace this, with that, expected line, column, message part, help part)`.
const CASES: &[(&str, &str, usize, usize, &str, &str)] = &[
    ("target = \"aarch64-unknown-linux-musl\"", "target = \"riscv\"", 3, 10, "unknown target `riscv`", "aarch64-unknown-linux-musl"),
    ("\"/var/lib/weir\"", "\"var/weir\"", 4, 12, "data_dir `var/weir` is relative", "absolute path"),
    ("flash = \"sd\"", "flash = \"floppy\"", 7, 9, "unknown flash `floppy`", "emmc"),
    ("flash = \"sd\"", "flash = \"ram\"", 7, 9, "loses every checkpoint", "target = \"host\""),
    ("flash = \"sd\"", "flash = \"sd\"\ncheckpoint_interval = \"5s\"", 8, 23, "too frequent", "30s or more"),
    ("flash = \"sd\"", "flash = \"sd\"\ngroup_commit = 2", 8, 16, "group_commit of 2 ms on SD flash", "10ms or more"),
    ("flash = \"sd\"", "flash = \"sd\"\ngroup_commit = \"fast\"", 8, 16, "`fast` is not a duration", "\"250ms\""),
    ("flash = \"sd\"", "flash = \"sd\"\ndisk_budget = \"12 parsecs\"", 8, 15, "is not a size", "\"512MiB\""),
    ("flash = \"sd\"", "flash = \"sd\"\nmode = \"yolo\"", 8, 8, "unknown durability mode `yolo`", "checkpoint"),
    ("flash = \"sd\"", "flash = \"sd\"\nkeep_checkpoints = 0", 8, 20, "keep_checkpoints = 0", "1 to 16"),
    ("flash = \"sd\"", "flash = \"sd\"\nflash_wear = true", 8, 1, "unknown field `flash_wear`", ""),
    ("[durability]\nflash = \"sd\"\n", "[health]\nbackoff_base = \"1s\"\nbackoff_max = \"100ms\"\n[durability]\nflash = \"sd\"\n", 8, 15, "backoff_max (100 ms) is below backoff_base (1000 ms)", "at least backoff_base"),
    ("kind = \"i2c\"", "kind = \"can\"", 11, 8, "unknown bus kind `can`", "\"i2c\""),
    ("kind = \"i2c\"", "kind = \"sim\"", 11, 8, "a simulated bus on a gateway target", "target = \"host\""),
    ("device = \"/dev/i2c-1\"", "device = \"/dev/ttyS0\"", 12, 10, "`/dev/ttyS0` is not an I2C device", "/dev/i2c-N"),
    ("device = \"/dev/spidev0.0\"", "device = \"/dev/spidev0\"", 17, 10, "is not an SPI device", "/dev/spidevB.C"),
    ("name = \"spi0\"", "name = \"i2c1\"", 15, 8, "bus `i2c1` is defined twice", ""),
    ("spi_mode = 3", "spi_mode = 0", 23, 7, "needs SPI mode 3", "spi_mode = 3"),
    ("spi_mode = 3", "spi_mode = 7", 18, 12, "spi_mode = 7", "0, 1, 2 or 3"),
    ("chip = \"adxl345\"", "chip = \"mpu6050\"", 22, 8, "unknown chip `mpu6050`", "adxl345"),
    ("bus = \"spi0\"", "bus = \"spi1\"", 23, 7, "no bus named `spi1`", "i2c1, spi0"),
    ("rate_hz = 800", "rate_hz = 5000", 24, 11, "rate_hz = 5000 for adxl345", "at most 1000 Hz"),
    ("rate_hz = 800", "rate_hz = 0", 24, 11, "rate_hz = 0", "more than 0"),
    ("rate_hz = 800", "rate_hz = 800\naddress = 0x53", 25, 11, "an SPI part has no address", "chip select"),
    ("rate_hz = 800", "rate_hz = 800\nrange_g = 3", 25, 11, "range_g = 3", "2, 4, 8 and 16 g"),
    ("address = 0x40", "address = 0x76", 30, 11, "ina219 cannot be at address 0x76", "0x40..=0x4f"),
    ("address = 0x40\n", "", 27, 8, "sensor `cur` on an I2C bus has no address", "address = 0x40"),
    ("shunt_ohms = 0.1", "shunt_ohms = -1.0", 32, 14, "shunt_ohms = -1", "ohms"),
    ("shunt_ohms = 0.1", "shunt_ohms = 0.1\nrange_g = 2", 33, 11, "range_g does not apply to ina219", "remove it"),
    ("name = \"cur\"", "name = \"vib\"", 27, 8, "sensor `vib` is defined twice", "keys"),
    ("name = \"cur\"", "name = \"a-sensor-name-far-too-long-for-a-key\"", 27, 8, "is not a sensor name", "32 bytes"),
    ("bus = \"spi0\"", "bus = \"i2c1\"\naddress = 0x53", 0, 0, "", ""),
    ("shunt_ohms = 0.1\n", "shunt_ohms = 0.1\n[[sensor]]\nname = \"cur2\"\nchip = \"ina219\"\nbus = \"spi0\"\nrate_hz = 1\nshunt_ohms = 1.0\n", 36, 7, "ina219 is an I2C part", "I2C bus"),
    ("shunt_ohms = 0.1\n", "shunt_ohms = 0.1\n[[sensor]]\nname = \"cur2\"\nchip = \"ina219\"\nbus = \"i2c1\"\naddress = 0x40\nrate_hz = 1\nshunt_ohms = 1.0\n", 37, 11, "two sensors at address 0x40 on bus `i2c1`", "own address"),
];

#[test]
fn each_mistake_is_reported_where_it_is() {
    for &(from, to, line, col, msg, help) in CASES {
        assert!(BASE.contains(from), "case does not apply: {from}");
        let text = BASE.replacen(from, to, 1);
        let r = profile::parse("t.toml", &text);
        if line == 0 {
            // Mutations that stay valid (an I2C accelerometer).
            r.unwrap_or_else(|e| panic!("{to}: {e}"));
            continue;
        }
        let e = r.expect_err(to);
        assert_eq!((e.line, e.col), (line, col), "{to}:\n{e}");
        assert!(
            e.msg.contains(msg),
            "{to}: message {:?} lacks {msg:?}",
            e.msg
        );
        assert!(
            e.help.contains(help),
            "{to}: help {:?} lacks {help:?}",
            e.help
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("t.toml:{line}:{col}: error: ")),
            "{shown}"
        );
    }
}

#[test]
fn flash_is_required_and_says_why() {
    let text = BASE.replace("[durability]\nflash = \"sd\"\n", "");
    let e = profile::parse("t.toml", &text).unwrap_err();
    assert!(e.msg.contains("flash is missing"), "{e}");
    assert!(e.help.contains("write rates"), "{e}");
}

#[test]
fn invalid_toml_is_located() {
    let e = profile::parse("t.toml", "[board]\nname = \n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.help.contains("boards/README.md"));
}

#[test]
fn sensors_are_checked_against_the_pipeline_sources() {
    use weir_core::spec::{PipelineSpec, SourceSpec, StateSpec, TimeSpec};
    use weir_core::time::TimeUnit;
    let p = profile::load(&board("sim")).unwrap();
    let mut spec = PipelineSpec {
        name: "gateway".into(),
        time: TimeSpec::new(TimeUnit::Millis),
        sources: vec![
            SourceSpec::new("power", ["bus_voltage", "current"]),
            SourceSpec::new("vibration", ["x", "y", "z"]),
            SourceSpec::new("environment", ["temperature", "pressure", "humidity"]),
        ],
        operators: vec![],
        state: StateSpec::default(),
    };
    assert_eq!(p.check_pipeline(&spec).unwrap(), [1, 1, 2, 0]);

    spec.sources[2].fields.swap(0, 1);
    let e = p.check_pipeline(&spec).unwrap_err();
    // cabinet-env's `source = "environment"` line in boards/sim/board.toml.
    assert_eq!((e.line, e.col), (49, 10), "{e}");
    assert!(
        e.msg
            .contains("bme280 readings carry [\"temperature\", \"pressure\", \"humidity\"]"),
        "{e}"
    );

    spec.sources[2].fields.swap(0, 1);
    spec.sources.remove(0);
    let e = p.check_pipeline(&spec).unwrap_err();
    assert!(
        e.msg
            .contains("feeds source `power`, which pipeline `gateway` does not have"),
        "{e}"
    );
    assert!(
        e.help.contains("fields = [\"bus_voltage\", \"current\"]"),
        "{e}"
    );
    assert!(e.to_string().starts_with(&format!("{}:", p.file)), "{e}");
}
