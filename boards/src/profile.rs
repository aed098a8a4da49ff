//! Board profiles: `boards/<name>/board.toml`.
//!
//! A profile says which target a gateway is built for, where its data lives,
//! how hard weir may write to its flash, which buses it has and which
//! sensors hang off them at what rate. Every error names the file, line and
//! column it is about and says what to do, like the pipeline file's.
//!
//! ```
//! let text = r#"
//! [board]
//! name = "bench"
//! target = "host"
//! data_dir = "weir-data"
//!
//! [durability]
//! flash = "ssd"
//!
//! [[bus]]
//! name = "sim0"
//! kind = "sim"
//!
//! [[sensor]]
//! name = "pump-1-vibration"
//! chip = "adxl345"
//! bus = "sim0"
//! address = 0x53
//! rate_hz = 100
//! "#;
//! let p = weir_boards::profile::parse("board.toml", text).unwrap();
//! assert_eq!(p.sensors[0].period_us, 10_000);
//! let bad = text.replace("0x53", "0x54");
//! let e = weir_boards::profile::parse("board.toml", &bad).unwrap_err();
//! assert_eq!((e.line, e.col), (18, 11));
//! assert!(e.to_string().starts_with("board.toml:18:11: error: adxl345 cannot be at address 0x54"));
//! ```

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::health::HealthConfig;

/// An error in a board profile: the one error type of every weir
/// configuration file ([`crate::config::ConfigError`]).
pub type ProfileError = crate::config::ConfigError;

/// A board profile, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardProfile {
    /// The file it was read from, for errors.
    pub file: String,
    /// The board's name (its folder under `boards/`).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// The Rust target triple to build for, or `host`.
    pub target: String,
    /// Where the journal, checkpoints and outbox live.
    pub data_dir: PathBuf,
    /// How weir treats the board's flash.
    pub durability: Durability,
    /// Bus-fault backoff and health thresholds, in milliseconds.
    pub health: HealthConfig,
    /// Buses, in file order.
    pub buses: Vec<Bus>,
    /// Sensors, in file order.
    pub sensors: Vec<SensorSpec>,
}

impl BoardProfile {
    /// The bus a sensor is on.
    pub fn bus_of(&self, s: &SensorSpec) -> &Bus {
        &self.buses[s.bus]
    }

    /// Checks that every sensor feeds a source of `pipeline` whose fields
    /// are the chip's, in order; returns each sensor's source index (what
    /// `Engine::handle_sample` takes). Wired readings are stamped in
    /// milliseconds: a pipeline in microseconds needs them scaled.
    ///
    /// # Errors
    /// A sensor's source is missing from the pipeline or has other fields;
    /// the error points at the sensor in the board file.
    pub fn check_pipeline(
        &self,
        pipeline: &weir_core::spec::PipelineSpec,
    ) -> Result<Vec<usize>, ProfileError> {
        self.sensors
            .iter()
            .map(|s| {
                let err = |msg: String, help: String| ProfileError {
                    file: self.file.clone(),
                    line: s.source_at.0,
                    col: s.source_at.1,
                    msg,
                    help,
                };
                let fields = s.chip.fields();
                let quoted = fields.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
                let Some(i) = pipeline.sources.iter().position(|p| p.name == s.source) else {
                    return Err(err(
                        format!("sensor `{}` feeds source `{}`, which pipeline `{}` does not have", s.name, s.source, pipeline.name),
                        format!("add [[source]] name = \"{}\" fields = [{quoted}] to the pipeline, or set this sensor's `source`", s.source),
                    ));
                };
                let have = &pipeline.sources[i].fields;
                if have.len() != fields.len() || have.iter().zip(fields).any(|(a, b)| a != b) {
                    return Err(err(
                        format!("source `{}` has fields {:?}; {} readings carry {:?}", s.source, have, s.chip.name(), fields),
                        format!("declare the source with fields = [{quoted}]"),
                    ));
                }
                Ok(i)
            })
            .collect()
    }
}

/// The storage the data directory is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    /// An SD card: slow small writes, wears out; no power-loss protection.
    Sd,
    /// Soldered eMMC: better, still wears.
    Emmc,
    /// An SSD (USB or NVMe).
    Ssd,
    /// tmpfs: nothing survives a reboot (host and tests only).
    Ram,
}

/// What is journalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Every acknowledged sample is journalled (group commit), then
    /// checkpoints: nothing acknowledged is lost.
    Journal,
    /// Checkpoints only, for QoS 0 sensors: a crash loses the samples since
    /// the last checkpoint.
    Checkpoints,
}

/// Durability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// The medium.
    pub flash: Flash,
    /// Journal or checkpoints only.
    pub mode: DurabilityMode,
    /// Longest a sample waits for its journal commit, ms.
    pub group_commit_ms: u64,
    /// Time between checkpoints, ms.
    pub checkpoint_interval_ms: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: u32,
    /// Most bytes the data directory may hold.
    pub disk_budget_bytes: u64,
}

/// A bus's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// I2C (`/dev/i2c-N`).
    I2c,
    /// SPI (`/dev/spidevB.C`).
    Spi,
    /// Simulated I2C parts (host only).
    Sim,
}

/// A bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Bus {
    /// Name sensors refer to.
    pub name: String,
    /// Kind.
    pub kind: BusKind,
    /// The device node (I2C, SPI).
    pub device: Option<PathBuf>,
    /// Clock, Hz.
    pub speed_hz: u32,
    /// SPI mode 0..=3 (SPI only).
    pub spi_mode: Option<u8>,
}

/// A sensor part this crate has a driver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// Accelerometer (vibration).
    Adxl345,
    /// Temperature, pressure, humidity.
    Bme280,
    /// Bus voltage and current.
    Ina219,
}

impl Chip {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Chip::Adxl345 => "adxl345",
            Chip::Bme280 => "bme280",
            Chip::Ina219 => "ina219",
        }
    }

    /// The fields a reading carries (the pipeline source's `fields`).
    pub fn fields(self) -> &'static [&'static str] {
        use crate::source::Sensor;
        type I = crate::regs::I2cRegs<crate::sim::SimI2c>;
        match self {
            Chip::Adxl345 => <crate::adxl345::Adxl345<I> as Sensor>::FIELDS,
            Chip::Bme280 => <crate::bme280::Bme280<I> as Sensor>::FIELDS,
            Chip::Ina219 => <crate::ina219::Ina219<crate::sim::SimI2c> as Sensor>::FIELDS,
        }
    }

    /// Valid I2C addresses.
    pub fn addresses(self) -> &'static [u8] {
        match self {
            Chip::Adxl345 => &[crate::adxl345::ADDR_LOW, crate::adxl345::ADDR_HIGH],
            Chip::Bme280 => &[crate::bme280::ADDR_LOW, crate::bme280::ADDR_HIGH],
            Chip::Ina219 => &[
                0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D,
                0x4E, 0x4F,
            ],
        }
    }

    /// The highest sample rate the driver's configuration supports, Hz.
    pub fn max_rate_hz(self) -> f64 {
        match self {
            // The agent polls on a millisecond clock; faster needs the
            // part's FIFO read in bursts, which the driver does not do.
            Chip::Adxl345 => 1000.0,
            // Normal mode with 62.5 ms standby: ~14 new results a second.
            Chip::Bme280 => 10.0,
            // Two 12-bit conversions of 532 µs each.
            Chip::Ina219 => 500.0,
        }
    }

    /// Whether the driver speaks SPI to this part.
    pub fn spi(self) -> bool {
        matches!(self, Chip::Adxl345 | Chip::Bme280)
    }
}

/// A sensor attached to a bus.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSpec {
    /// The key its readings carry (≤ 32 bytes).
    pub name: String,
    /// 1-based line and column of its `source` (or `name`) in the file.
    pub source_at: (usize, usize),
    /// The part.
    pub chip: Chip,
    /// Index into [`BoardProfile::buses`].
    pub bus: usize,
    /// I2C address (I2C and simulated buses).
    pub address: Option<u8>,
    /// Samples per second.
    pub rate_hz: f64,
    /// The sample period, µs (rounded to the nearest).
    pub period_us: i64,
    /// The pipeline source its readings enter as (default: the chip's name).
    pub source: String,
    /// ADXL345 range, g.
    pub range_g: Option<u8>,
    /// INA219 shunt resistance, Ω.
    pub shunt_ohms: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Amount {
    Int(i64),
    Str(String),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    target: Spanned<String>,
    data_dir: Spanned<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDurability {
    flash: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    group_commit: Option<Spanned<Amount>>,
    checkpoint_interval: Option<Spanned<Amount>>,
    keep_checkpoints: Option<Spanned<i64>>,
    disk_budget: Option<Spanned<Amount>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    unhealthy_after: Option<Spanned<i64>>,
    backoff_base: Option<Spanned<Amount>>,
    backoff_max: Option<Spanned<Amount>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawBus {
    name: Spanned<String>,
    kind: Spanned<String>,
    device: Option<Spanned<String>>,
    speed_hz: Option<Spanned<i64>>,
    spi_mode: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    name: Spanned<String>,
    chip: Spanned<String>,
    bus: Spanned<String>,
    address: Option<Spanned<i64>>,
    rate_hz: Spanned<f64>,
    source: Option<Spanned<String>>,
    range_g: Option<Spanned<i64>>,
    shunt_ohms: Option<Spanned<f64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    board: RawBoard,
    #[serde(default)]
    durability: RawDurability,
    #[serde(default)]
    health: RawHealth,
    #[serde(default, rename = "bus")]
    buses: Vec<RawBus>,
    #[serde(default, rename = "sensor")]
    sensors: Vec<RawSensor>,
}

/// Targets a board may name.
pub const TARGETS: &[&str] = &[
    "aarch64-unknown-linux-musl",
    "armv7-unknown-linux-musleabihf",
    "x86_64-unknown-linux-musl",
    "x86_64-unknown-linux-gnu",
    "host",
];

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
        help: impl Into<String>,
    ) -> ProfileError {
        let (line, col) = span.map_or((0, 0), |r| line_col(self.text, r.start));
        ProfileError {
            file: self.file.to_string(),
            line,
            col,
            msg: msg.into(),
            help: help.into(),
        }
    }

    /// A duration in ms: an integer (ms) or "250ms", "10s", "5m", "1h".
    fn ms(&self, v: &Spanned<Amount>, what: &str) -> Result<u64, ProfileError> {
        let help = format!(
            "write {what} as whole milliseconds or with a unit: \"250ms\", \"10s\", \"5m\", \"1h\""
        );
        match v.get_ref() {
            Amount::Int(n) => u64::try_from(*n)
                .map_err(|_| self.err(Some(v.span()), format!("{what} is negative ({n})"), help)),
            Amount::Str(s) => parse_unit(
                s,
                &[
                    ("ms", 1),
                    ("s", 1_000),
                    ("m", 60_000),
                    ("min", 60_000),
                    ("h", 3_600_000),
                ],
            )
            .ok_or_else(|| self.err(Some(v.span()), format!("`{s}` is not a duration"), help)),
        }
    }

    /// A size in bytes: an integer or "64MiB", "2GiB", "500MB".
    fn bytes(&self, v: &Spanned<Amount>, what: &str) -> Result<u64, ProfileError> {
        let help = format!("write {what} in bytes or with a unit: \"512MiB\", \"2GiB\", \"500MB\"");
        match v.get_ref() {
            Amount::Int(n) => u64::try_from(*n)
                .map_err(|_| self.err(Some(v.span()), format!("{what} is negative ({n})"), help)),
            Amount::Str(s) => parse_unit(
                s,
                &[
                    ("B", 1),
                    ("KiB", 1 << 10),
                    ("MiB", 1 << 20),
                    ("GiB", 1 << 30),
                    ("kB", 1_000),
                    ("MB", 1_000_000),
                    ("GB", 1_000_000_000),
                ],
            )
            .ok_or_else(|| self.err(Some(v.span()), format!("`{s}` is not a size"), help)),
        }
    }
}

/// `<digits><unit>` with the unit's multiplier from `units`.
fn parse_unit(s: &str, units: &[(&str, u64)]) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, u) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let (_, m) = units.iter().find(|(name, _)| *name == u.trim())?;
    n.checked_mul(*m)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |p| offset - p - 1) + 1;
    (line, col)
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Reads and validates `path`. Under a `boards/` folder
/// (`boards/<name>/board.toml`) the board's name must be its folder's; an
/// installed copy (`/etc/weir/board.toml` on a gateway) may live anywhere.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or describes an invalid
/// board; the error says where and what to do.
pub fn load(path: &Path) -> Result<BoardProfile, ProfileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read the board profile: {e}"),
        help: "boards live in boards/<name>/board.toml".into(),
    })?;
    let p = parse(&file, &text)?;
    let parent = path.parent();
    let in_boards = parent
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|g| g == "boards");
    let folder = parent
        .filter(|_| in_boards)
        .and_then(Path::file_name)
        .and_then(|f| f.to_str());
    if let Some(folder) =
        folder.filter(|f| path.file_name().is_some_and(|n| n == "board.toml") && *f != p.name)
    {
        let ctx = Ctx {
            file: &file,
            text: &text,
        };
        let raw: RawProfile =
            toml::from_str(&text).map_err(|e| ctx.err(e.span(), e.message().trim(), ""))?;
        return Err(ctx.err(
            Some(raw.board.name.span()),
            format!("board `{}` is in folder `{folder}`", p.name),
            format!(
                "name the board `{folder}`, or move the file to boards/{}/board.toml",
                p.name
            ),
        ));
    }
    Ok(p)
}

/// Parses and validates profile text; `file` names it in errors.
///
/// # Errors
/// See [`load`].
pub fn parse(file: &str, text: &str) -> Result<BoardProfile, ProfileError> {
    let ctx = Ctx { file, text };
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        ctx.err(
            e.span(),
            e.message().trim(),
            "see boards/README.md for the board profile format",
        )
    })?;
    let (target, data_dir) = parse_board(&ctx, &raw.board)?;
    let host = target == "host";
    let durability = parse_durability(&ctx, &raw.durability, host)?;
    let health = parse_health(&ctx, &raw.health)?;
    let mut buses = Vec::new();
    let mut bus_names = HashSet::new();
    for rb in &raw.buses {
        buses.push(parse_bus(&ctx, rb, host, &mut bus_names)?);
    }
    let mut sensors = Vec::new();
    let mut names = HashSet::new();
    let mut taken: HashSet<(usize, u8)> = HashSet::new();
    for rs in &raw.sensors {
        sensors.push(parse_sensor(&ctx, rs, &buses, &mut names, &mut taken)?);
    }
    Ok(BoardProfile {
        file: file.to_string(),
        name: raw.board.name.get_ref().clone(),
        description: raw.board.description.clone(),
        target,
        data_dir,
        durability,
        health,
        buses,
        sensors,
    })
}

/// `[board]`: the target and the data directory.
fn parse_board(ctx: &Ctx<'_>, b: &RawBoard) -> Result<(String, PathBuf), ProfileError> {
    if !valid_name(b.name.get_ref(), 64) {
        return Err(ctx.err(
            Some(b.name.span()),
            format!("`{}` is not a board name", b.name.get_ref()),
            "use letters, digits, '-', '_' (at most 64), as the folder under boards/",
        ));
    }
    let target = b.target.get_ref().clone();
    if !TARGETS.contains(&target.as_str()) {
        return Err(ctx.err(
            Some(b.target.span()),
            format!("unknown target `{target}`"),
            format!("use one of: {}", TARGETS.join(", ")),
        ));
    }
    let host = target == "host";
    let data_dir = PathBuf::from(b.data_dir.get_ref());
    if b.data_dir.get_ref().trim().is_empty() {
        return Err(ctx.err(
            Some(b.data_dir.span()),
            "data_dir is empty",
            "name the directory for the journal and checkpoints, e.g. \"/var/lib/weir\"",
        ));
    }
    if !host && !data_dir.is_absolute() {
        return Err(ctx.err(Some(b.data_dir.span()), format!("data_dir `{}` is relative", data_dir.display()), "a gateway's service starts in an unknown directory: use an absolute path such as \"/var/lib/weir\""));
    }
    Ok((target, data_dir))
}

/// `[durability]`: flash kind, mode and the write rates that follow from it.
fn parse_durability(
    ctx: &Ctx<'_>,
    d: &RawDurability,
    host: bool,
) -> Result<Durability, ProfileError> {
    let flash = match d.flash.as_ref().map(|f| f.get_ref().as_str()) {
        Some("sd") => Flash::Sd,
        Some("emmc") => Flash::Emmc,
        Some("ssd") => Flash::Ssd,
        Some("ram") => Flash::Ram,
        Some(o) => return Err(ctx.err(d.flash.as_ref().map(Spanned::span), format!("unknown flash `{o}`"), "use \"sd\", \"emmc\", \"ssd\" or \"ram\"")),
        None => return Err(ctx.err(None, "[durability] flash is missing", "say what the data directory is on: flash = \"sd\", \"emmc\", \"ssd\" or \"ram\"; the defaults for write rates follow from it")),
    };
    if flash == Flash::Ram && !host {
        return Err(ctx.err(
            d.flash.as_ref().map(Spanned::span),
            "flash = \"ram\" on a gateway loses every checkpoint at power-off",
            "use \"sd\", \"emmc\" or \"ssd\"; \"ram\" is for target = \"host\"",
        ));
    }
    let mode = match d.mode.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("journal") => DurabilityMode::Journal,
        Some("checkpoint") => DurabilityMode::Checkpoints,
        Some(o) => return Err(ctx.err(d.mode.as_ref().map(Spanned::span), format!("unknown durability mode `{o}`"), "use \"journal\" (nothing acknowledged is lost) or \"checkpoint\" (QoS 0 sensors; a crash loses what came after the last checkpoint)")),
    };
    let wears = matches!(flash, Flash::Sd | Flash::Emmc);
    let group_commit_ms = match &d.group_commit {
        Some(v) => ctx.ms(v, "group_commit")?,
        None if wears => 50,
        None => 10,
    };
    let checkpoint_interval_ms = match &d.checkpoint_interval {
        Some(v) => ctx.ms(v, "checkpoint_interval")?,
        None if wears => 300_000,
        None => 60_000,
    };
    if !(1..=1_000).contains(&group_commit_ms) {
        return Err(ctx.err(
            d.group_commit.as_ref().map(Spanned::span),
            format!("group_commit of {group_commit_ms} ms"),
            "use 1ms to 1s: it is how long an acknowledgement may wait",
        ));
    }
    if wears && group_commit_ms < 10 {
        return Err(ctx.err(
            d.group_commit.as_ref().map(Spanned::span),
            format!(
                "group_commit of {group_commit_ms} ms on {} flash",
                if flash == Flash::Sd { "SD" } else { "eMMC" }
            ),
            "each commit rewrites at least a flash page: use 10ms or more (50ms is the default)",
        ));
    }
    let min_ckpt = if wears { 30_000 } else { 1_000 };
    if checkpoint_interval_ms < min_ckpt {
        return Err(ctx.err(
            d.checkpoint_interval.as_ref().map(Spanned::span),
            format!(
                "checkpoint_interval of {checkpoint_interval_ms} ms is too frequent for this flash"
            ),
            format!(
                "use {}s or more: each checkpoint writes the whole engine state",
                min_ckpt / 1000
            ),
        ));
    }
    let keep_checkpoints = match &d.keep_checkpoints {
        None => 2,
        Some(k) if (1..=16).contains(k.get_ref()) => *k.get_ref() as u32,
        Some(k) => {
            return Err(ctx.err(
                Some(k.span()),
                format!("keep_checkpoints = {}", k.get_ref()),
                "keep 1 to 16 checkpoints (2 survives a torn latest one)",
            ))
        }
    };
    let disk_budget_bytes = match &d.disk_budget {
        Some(v) => ctx.bytes(v, "disk_budget")?,
        None => 256 << 20,
    };
    if disk_budget_bytes < 1 << 20 {
        return Err(ctx.err(
            d.disk_budget.as_ref().map(Spanned::span),
            format!("disk_budget of {disk_budget_bytes} bytes"),
            "give the data directory at least \"1MiB\"",
        ));
    }
    Ok(Durability {
        flash,
        mode,
        group_commit_ms,
        checkpoint_interval_ms,
        keep_checkpoints,
        disk_budget_bytes,
    })
}

/// `[health]`: when a sensor counts as unhealthy, and its retry backoff.
fn parse_health(ctx: &Ctx<'_>, h: &RawHealth) -> Result<HealthConfig, ProfileError> {
    let unhealthy_after = match &h.unhealthy_after {
        None => 5,
        Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            return Err(ctx.err(
                Some(n.span()),
                format!("unhealthy_after = {}", n.get_ref()),
                "use 1 to 1000 consecutive failures",
            ))
        }
    };
    let backoff_base = h
        .backoff_base
        .as_ref()
        .map_or(Ok(100), |v| ctx.ms(v, "backoff_base"))?;
    let backoff_max = h
        .backoff_max
        .as_ref()
        .map_or(Ok(30_000), |v| ctx.ms(v, "backoff_max"))?;
    if backoff_base == 0 {
        return Err(ctx.err(
            h.backoff_base.as_ref().map(Spanned::span),
            "backoff_base is zero",
            "retrying a failed bus at once only hammers it: use \"10ms\" or more",
        ));
    }
    if backoff_max < backoff_base {
        return Err(ctx.err(
            h.backoff_max.as_ref().map(Spanned::span),
            format!("backoff_max ({backoff_max} ms) is below backoff_base ({backoff_base} ms)"),
            "make backoff_max at least backoff_base",
        ));
    }
    Ok(HealthConfig {
        unhealthy_after,
        backoff_base: i64::try_from(backoff_base).unwrap_or(i64::MAX),
        backoff_max: i64::try_from(backoff_max).unwrap_or(i64::MAX),
    })
}

/// One `[[bus]]`.
fn parse_bus(
    ctx: &Ctx<'_>,
    rb: &RawBus,
    host: bool,
    bus_names: &mut HashSet<String>,
) -> Result<Bus, ProfileError> {
    let name = rb.name.get_ref();
    if !valid_name(name, 32) {
        return Err(ctx.err(
            Some(rb.name.span()),
            format!("`{name}` is not a bus name"),
            "use letters, digits, '-', '_' (at most 32)",
        ));
    }
    if !bus_names.insert(name.clone()) {
        return Err(ctx.err(
            Some(rb.name.span()),
            format!("bus `{name}` is defined twice"),
            "give each [[bus]] its own name",
        ));
    }
    let kind = match rb.kind.get_ref().as_str() {
        "i2c" => BusKind::I2c,
        "spi" => BusKind::Spi,
        "sim" => BusKind::Sim,
        o => {
            return Err(ctx.err(
                Some(rb.kind.span()),
                format!("unknown bus kind `{o}`"),
                "use \"i2c\", \"spi\" or \"sim\"",
            ))
        }
    };
    if kind == BusKind::Sim && !host {
        return Err(ctx.err(
            Some(rb.kind.span()),
            "a simulated bus on a gateway target",
            "simulated parts are for target = \"host\"; use \"i2c\" or \"spi\" with a device",
        ));
    }
    let device = match (&rb.device, kind) {
        (None, BusKind::Sim) => None,
        (Some(dv), BusKind::Sim) => {
            return Err(ctx.err(
                Some(dv.span()),
                "a simulated bus has no device",
                "remove `device`",
            ))
        }
        (None, _) => {
            return Err(ctx.err(
                Some(rb.name.span()),
                format!("bus `{name}` has no device"),
                if kind == BusKind::I2c {
                    "add device = \"/dev/i2c-1\" (the adapter number from `i2cdetect -l`)"
                } else {
                    "add device = \"/dev/spidev0.0\" (bus 0, chip select 0)"
                },
            ))
        }
        (Some(dv), k) => {
            let s = dv.get_ref();
            let ok = match k {
                BusKind::I2c => s
                    .strip_prefix("/dev/i2c-")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                _ => s
                    .strip_prefix("/dev/spidev")
                    .and_then(|r| r.split_once('.'))
                    .is_some_and(|(b, c)| {
                        !b.is_empty()
                            && !c.is_empty()
                            && (b.bytes().chain(c.bytes())).all(|x| x.is_ascii_digit())
                    }),
            };
            if !ok {
                let want = if k == BusKind::I2c {
                    "/dev/i2c-N"
                } else {
                    "/dev/spidevB.C"
                };
                return Err(ctx.err(
                    Some(dv.span()),
                    format!(
                        "`{s}` is not an {} device",
                        if k == BusKind::I2c { "I2C" } else { "SPI" }
                    ),
                    format!("use {want}"),
                ));
            }
            Some(PathBuf::from(s))
        }
    };
    let (default_speed, max_speed) = match kind {
        BusKind::Spi => (1_000_000, 50_000_000),
        _ => (100_000, 1_000_000),
    };
    let speed_hz = match &rb.speed_hz {
        None => default_speed,
        Some(s) if (1_000..=max_speed).contains(s.get_ref()) => *s.get_ref() as u32,
        Some(s) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("speed_hz = {} is out of range", s.get_ref()),
                format!("use 1000 to {max_speed} Hz (I2C: 100000 standard, 400000 fast mode)"),
            ))
        }
    };
    let spi_mode = match (&rb.spi_mode, kind) {
        (None, BusKind::Spi) => Some(0),
        (None, _) => None,
        (Some(m), BusKind::Spi) if (0..=3).contains(m.get_ref()) => Some(*m.get_ref() as u8),
        (Some(m), BusKind::Spi) => {
            return Err(ctx.err(
                Some(m.span()),
                format!("spi_mode = {}", m.get_ref()),
                "use 0, 1, 2 or 3",
            ))
        }
        (Some(m), _) => {
            return Err(ctx.err(
                Some(m.span()),
                "spi_mode on a bus that is not SPI",
                "remove spi_mode",
            ))
        }
    };
    Ok(Bus {
        name: name.clone(),
        kind,
        device,
        speed_hz,
        spi_mode,
    })
}

/// One `[[sensor]]`, on one of `buses`.
fn parse_sensor(
    ctx: &Ctx<'_>,
    rs: &RawSensor,
    buses: &[Bus],
    names: &mut HashSet<String>,
    taken: &mut HashSet<(usize, u8)>,
) -> Result<SensorSpec, ProfileError> {
    let name = rs.name.get_ref();
    if !valid_name(name, 32) {
        return Err(ctx.err(Some(rs.name.span()), format!("`{name}` is not a sensor name"), "use letters, digits, '-', '_', '.' (at most 32 bytes): it is the key its readings carry"));
    }
    if !names.insert(name.clone()) {
        return Err(ctx.err(
            Some(rs.name.span()),
            format!("sensor `{name}` is defined twice"),
            "sensor names are keys: give each its own",
        ));
    }
    let chip = match rs.chip.get_ref().as_str() {
        "adxl345" => Chip::Adxl345,
        "bme280" => Chip::Bme280,
        "ina219" => Chip::Ina219,
        o => return Err(ctx.err(Some(rs.chip.span()), format!("unknown chip `{o}`"), "use \"adxl345\" (vibration), \"bme280\" (temperature, pressure, humidity) or \"ina219\" (current)")),
    };
    let Some(bus) = buses.iter().position(|b| b.name == *rs.bus.get_ref()) else {
        let known: Vec<&str> = buses.iter().map(|b| b.name.as_str()).collect();
        return Err(ctx.err(
            Some(rs.bus.span()),
            format!("no bus named `{}`", rs.bus.get_ref()),
            if known.is_empty() {
                "add a [[bus]] with that name".to_string()
            } else {
                format!("use one of: {}", known.join(", "))
            },
        ));
    };
    let kind = buses[bus].kind;
    if kind == BusKind::Spi && !chip.spi() {
        return Err(ctx.err(
            Some(rs.bus.span()),
            format!(
                "{} is an I2C part; `{}` is an SPI bus",
                chip.name(),
                buses[bus].name
            ),
            "put it on an I2C bus",
        ));
    }
    if kind == BusKind::Spi && chip == Chip::Adxl345 && buses[bus].spi_mode != Some(3) {
        return Err(ctx.err(
            Some(rs.bus.span()),
            format!(
                "the ADXL345 needs SPI mode 3; bus `{}` is in mode {}",
                buses[bus].name,
                buses[bus].spi_mode.unwrap_or(0)
            ),
            "set spi_mode = 3 on that bus",
        ));
    }
    let address = match (&rs.address, kind) {
        (Some(a), BusKind::Spi) => {
            return Err(ctx.err(
                Some(a.span()),
                "an SPI part has no address",
                "remove `address`: the bus's device (chip select) picks the part",
            ))
        }
        (None, BusKind::Spi) => None,
        (None, _) => {
            return Err(ctx.err(
                Some(rs.name.span()),
                format!("sensor `{name}` on an I2C bus has no address"),
                format!(
                    "add address = {:#04x} (valid for {}: {})",
                    chip.addresses()[0],
                    chip.name(),
                    fmt_addrs(chip)
                ),
            ))
        }
        (Some(a), _) => {
            let ok = u8::try_from(*a.get_ref())
                .ok()
                .filter(|v| chip.addresses().contains(v));
            let Some(v) = ok else {
                return Err(ctx.err(
                    Some(a.span()),
                    format!("{} cannot be at address {:#04x}", chip.name(), a.get_ref()),
                    format!("use one of {} (set by its address pins)", fmt_addrs(chip)),
                ));
            };
            if !taken.insert((bus, v)) {
                return Err(ctx.err(Some(a.span()), format!("two sensors at address {v:#04x} on bus `{}`", buses[bus].name), "each part on a bus needs its own address: change the address pins, or use another bus"));
            }
            Some(v)
        }
    };
    let rate_hz = *rs.rate_hz.get_ref();
    if !(rate_hz.is_finite() && rate_hz > 0.0 && rate_hz <= chip.max_rate_hz()) {
        return Err(ctx.err(
            Some(rs.rate_hz.span()),
            format!("rate_hz = {rate_hz} for {}", chip.name()),
            format!("use more than 0 and at most {} Hz", chip.max_rate_hz()),
        ));
    }
    let period_us = (1e6 / rate_hz).round() as i64;
    let range_g = match (&rs.range_g, chip) {
        (None, Chip::Adxl345) => Some(16),
        (Some(r), Chip::Adxl345) if [2, 4, 8, 16].contains(r.get_ref()) => Some(*r.get_ref() as u8),
        (Some(r), Chip::Adxl345) => {
            return Err(ctx.err(
                Some(r.span()),
                format!("range_g = {}", r.get_ref()),
                "the ADXL345 has ranges of 2, 4, 8 and 16 g",
            ))
        }
        (Some(r), _) => {
            return Err(ctx.err(
                Some(r.span()),
                format!("range_g does not apply to {}", chip.name()),
                "remove it (it is for adxl345)",
            ))
        }
        (None, _) => None,
    };
    let shunt_ohms = match (&rs.shunt_ohms, chip) {
        (Some(s), Chip::Ina219) if s.get_ref().is_finite() && *s.get_ref() > 0.0 => {
            Some(*s.get_ref())
        }
        (Some(s), Chip::Ina219) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("shunt_ohms = {}", s.get_ref()),
                "give the shunt resistor's value in ohms, e.g. 0.1",
            ))
        }
        (None, Chip::Ina219) => {
            return Err(ctx.err(
                Some(rs.name.span()),
                format!("sensor `{name}` (ina219) has no shunt_ohms"),
                "add shunt_ohms = 0.1 (the value of the resistor on the board)",
            ))
        }
        (Some(s), _) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("shunt_ohms does not apply to {}", chip.name()),
                "remove it (it is for ina219)",
            ))
        }
        (None, _) => None,
    };
    let source = match &rs.source {
        Some(s) if valid_name(s.get_ref(), 64) => s.get_ref().clone(),
        Some(s) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("`{}` is not a source name", s.get_ref()),
                "name the pipeline [[source]] these readings enter as",
            ))
        }
        None => chip.name().to_string(),
    };
    let at = rs.source.as_ref().map_or(rs.name.span(), Spanned::span);
    Ok(SensorSpec {
        name: name.clone(),
        source_at: line_col(ctx.text, at.start),
        chip,
        bus,
        address,
        rate_hz,
        period_us,
        source,
        range_g,
        shunt_ohms,
    })
}

fn fmt_addrs(chip: Chip) -> String {
    let a = chip.addresses();
    if a.len() > 2 {
        format!("{:#04x}..={:#04x}", a[0], a[a.len() - 1])
    } else {
        a.iter()
            .map(|v| format!("{v:#04x}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
