//! The pipeline file (TOML) and its mapping onto [`PipelineSpec`].
//!
//! Every error names the file, line and column it is about and says what to
//! do. The format is documented in `docs/pipeline.md`.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use weir_core::agg::AggKind;
use weir_core::detect::{
    CusumConfig, DetectorConfig, DetectorSpec, EwmaConfig, KestrelConfig, MadConfig,
    KESTREL_BANDED, KESTREL_CALIBRATED, MAX_FIELDS, MULTIVARIATE_DEFAULT,
};
use weir_core::prelude::*;
use weir_core::spec::{DetectSpec, OperatorKind, OperatorSpec, SampleOrder, WindowSpec};
use weir_core::BuildError;

/// A pipeline file, parsed and validated.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// The engine's description.
    pub spec: PipelineSpec,
    /// How each source's CSV rows map onto samples (for `weir replay`).
    pub csv: Vec<CsvMapping>,
    /// Each source's MQTT subscription and payload decoder (for `weir run`),
    /// `None` for a source without an `mqtt` table.
    pub mqtt: Vec<Option<MqttSource>>,
    /// User functions in WebAssembly (`[[function]]`, docs/functions.md).
    pub functions: crate::functions::Functions,
    /// A SQL pipeline's query around the engine (`WHERE` on the key or
    /// time, `HAVING`, result columns) for `weir run`: `crate::sql::stage`.
    pub sql: Option<std::sync::Arc<crate::sql::Query>>,
}

/// Where a source's samples come from over MQTT.
#[derive(Debug, Clone)]
pub struct MqttSource {
    /// Topic filters (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// Subscription QoS: 0 or 1.
    pub qos: u8,
    /// The payload decoder, built for the source's fields and time unit.
    pub decoder: crate::decode::Decoder,
}

/// Checks an MQTT topic filter: non-empty, `+` only as a whole level, `#`
/// only as the whole last level, no NUL.
///
/// # Errors
/// What is wrong with the filter.
pub fn check_topic_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    if f.contains('\0') {
        return Err("a topic filter cannot contain NUL".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "`#` must be a whole level and the last one (in `{f}`)"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("`+` must be a whole level (in `{f}`)"));
        }
    }
    Ok(())
}

/// Checks an MQTT topic name to publish on: non-empty, no wildcard, no
/// NUL, not a `$` topic.
///
/// # Errors
/// What is wrong with the name.
pub fn check_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("a topic cannot be empty".into());
    }
    if t.contains(['+', '#', '\0']) {
        return Err("a topic to publish on cannot contain `+`, `#` or NUL".into());
    }
    if t.starts_with('$') {
        return Err("`$` topics belong to the broker".into());
    }
    Ok(())
}

/// What one CSV column holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// The key (sensor id).
    Key,
    /// The timestamp.
    Ts,
    /// A numeric field, by index in the source's `fields`.
    Field(usize),
    /// Ignored.
    Skip,
    /// A text column a SQL `WHERE` reads (by position among the mapping's
    /// text columns); it does not reach the engine.
    Text(usize),
}

/// How timestamps are written in an input file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TsFormat {
    /// Integer seconds since the epoch.
    Seconds,
    /// Integer milliseconds.
    Millis,
    /// Integer microseconds.
    Micros,
    /// `YYYY-MM-DD HH:MM:SS[.fff]`, UTC.
    Datetime,
}

/// Mapping of one source's CSV rows.
#[derive(Debug, Clone)]
pub struct CsvMapping {
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Skip the first line.
    pub header: bool,
    /// Timestamp format.
    pub timestamp: TsFormat,
    /// Key used when no column holds one.
    pub key: String,
    /// SQL tables: a numeric cell that is empty (spaces aside), or equal
    /// to this text when it is not empty (`'csv.null-literal'`), is `NULL`
    /// (a NaN for the engine, whose field is nullable), not a bad row; a
    /// `NaN` written out is still not a number. `None` (TOML pipelines):
    /// every numeric cell must be a number.
    pub nulls: Option<String>,
}

pub use weir_boards::config::ConfigError;

/// A duration as written: a number of ticks or a string with a unit.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub(crate) enum DurationValue {
    Int(i64),
    Str(String),
}

pub(crate) type Dur = Spanned<DurationValue>;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawTime {
    mode: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    max_keys: Option<Spanned<i64>>,
    memory: Option<Spanned<SizeValue>>,
    ttl: Option<Dur>,
    on_full: Option<Spanned<String>>,
}

/// A size as written: bytes, or a string with a unit (`"64MiB"`).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum SizeValue {
    Int(i64),
    Str(String),
}

/// Default future guard of a source: `max_ahead = "5m"`.
pub const DEFAULT_MAX_AHEAD: &str = "5m";
/// Default key TTL: `ttl = "1d"`.
pub const DEFAULT_TTL: &str = "1d";

/// The least keyed-state budget (`[state] memory`, SQL's
/// `SET 'weir.state.memory'`): 64 KiB.
pub const MIN_STATE_MEMORY: usize = 1 << 16;

/// Parses `"64MiB"`, `"512KiB"`, `"1GiB"`, `"1000"` (bytes).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, u) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let mul: usize = match u.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    columns: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    header: bool,
    timestamp: Option<Spanned<String>>,
    key: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    fields: Spanned<Vec<String>>,
    max_out_of_orderness: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_ahead: Option<Dur>,
    watermark: Option<Spanned<String>>,
    filter: Option<Spanned<String>>,
    #[serde(default)]
    compute: Vec<RawCompute>,
    csv: Option<RawCsv>,
    mqtt: Option<RawMqtt>,
}

/// `[[source.compute]]`: a computed field.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCompute {
    name: Spanned<String>,
    expr: Spanned<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    topics: Spanned<Vec<Spanned<String>>>,
    qos: Option<Spanned<u8>>,
    decode: Spanned<crate::decode::DecoderConfig>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    on: Option<Spanned<String>>,
    kind: Spanned<String>,
    alpha: Option<f64>,
    k: Option<f64>,
    warmup: Option<u32>,
    threshold: Option<f64>,
    hysteresis: Option<f64>,
    cooldown: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    id: Spanned<String>,
    source: Spanned<String>,
    field: Spanned<String>,
    kind: Spanned<String>,
    size: Option<Dur>,
    slide: Option<Dur>,
    step: Option<Dur>,
    gap: Option<Dur>,
    allowed_lateness: Option<Dur>,
    aggregates: Spanned<Vec<Spanned<String>>>,
    detect: Option<RawDetector>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawDetect {
    id: Spanned<String>,
    order: Option<Spanned<String>>,
    source: Spanned<String>,
    field: Option<Spanned<String>>,
    fields: Option<Spanned<Vec<Spanned<String>>>>,
    kind: Spanned<String>,
    learn: Option<Spanned<u32>>,
    forget: Option<Spanned<f64>>,
    beta: Option<Spanned<f64>>,
    alpha: Option<f64>,
    k: Option<f64>,
    warmup: Option<u32>,
    threshold: Option<f64>,
    hysteresis: Option<f64>,
    cooldown: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Option<String>,
    #[serde(default)]
    time: RawTime,
    #[serde(default)]
    state: RawState,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default, rename = "window")]
    windows: Vec<RawWindow>,
    #[serde(default, rename = "detect")]
    detects: Vec<RawDetect>,
    #[serde(default, rename = "function")]
    functions: Vec<crate::functions::RawFunction>,
    #[serde(default)]
    modules: crate::functions::RawModules,
}

/// A file being parsed, for located errors.
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

/// A source's `filter` and `compute` (see docs/pipeline.md), compiled by
/// the SQL layer's expression compiler.
fn stages(ctx: &Ctx<'_>, s: &RawSource, spec: &mut SourceSpec) -> Result<(), ConfigError> {
    let compile = |text: &Spanned<String>, fields: &[String], condition: bool| {
        crate::sql::plan::scalar_over_fields(text.get_ref(), fields, condition).map_err(|e| {
            // The error's place within the string, from the string's place.
            let (line, col) = line_col(ctx.text, text.span().start);
            let (line, col) = match e.line {
                0 => (line, col),
                1 => (line, col + e.col as usize),
                l => (line + l as usize - 1, e.col as usize),
            };
            ConfigError {
                file: ctx.file.to_string(),
                line,
                col,
                msg: format!("in this expression: {}", e.msg),
                help: e.help,
            }
        })
    };
    if let Some(f) = &s.filter {
        spec.filter = Some(compile(f, &spec.fields, true)?);
    }
    let mut names = spec.fields.clone();
    for c in &s.compute {
        let name = c.name.get_ref();
        if name.is_empty() || names.contains(name) {
            return Err(ctx.err(
                Some(c.name.span()),
                format!("the computed field `{name}` is empty or already a field"),
                "give each computed field a new name",
            ));
        }
        let e = compile(&c.expr, &names, false)?;
        names.push(name.clone());
        spec.compute.push(weir_core::spec::Computed {
            name: name.clone(),
            expr: e,
        });
    }
    Ok(())
}

impl Ctx<'_> {
    pub(crate) fn err(
        &self,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = match span {
            Some(r) => line_col(self.text, r.start),
            None => (0, 0),
        };
        ConfigError {
            file: self.file.to_string(),
            line,
            col,
            msg: msg.into(),
            help: help.into(),
        }
    }

    /// A duration that `"off"` turns off; `default` when absent.
    fn duration_or_off(
        &self,
        d: Option<&Dur>,
        default: &str,
        unit: TimeUnit,
        what: &str,
    ) -> Result<Option<i64>, ConfigError> {
        match d {
            Some(d) if matches!(d.get_ref(), DurationValue::Str(s) if s == "off") => Ok(None),
            Some(d) => self.duration(d, unit, what).map(Some),
            None => Ok(Some(parse_duration(default, unit).unwrap_or(i64::MAX))),
        }
    }

    pub(crate) fn duration(&self, d: &Dur, unit: TimeUnit, what: &str) -> Result<i64, ConfigError> {
        let bad = |m: String| {
            self.err(
                Some(d.span()),
                m,
                format!("write {what} as a whole number of {} or with a unit: \"250ms\", \"10s\", \"5m\", \"1h\", \"1d\" (\"us\" for microseconds)", unit.name()),
            )
        };
        match d.get_ref() {
            DurationValue::Int(v) if *v >= 0 => Ok(*v),
            DurationValue::Int(v) => Err(bad(format!("{what} is negative ({v})"))),
            DurationValue::Str(s) => {
                parse_duration(s, unit).ok_or_else(|| bad(format!("`{s}` is not a duration")))
            }
        }
    }
}

/// Parses `"10s"`, `"250ms"`, `"5m"`, `"1h"`, `"1d"`, `"20us"` into ticks of `unit`.
pub fn parse_duration(s: &str, unit: TimeUnit) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, u) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let micros: i64 = match u.trim() {
        "us" | "µs" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    let total = n.checked_mul(micros)?;
    match unit {
        TimeUnit::Micros => Some(total),
        TimeUnit::Millis if total % 1000 == 0 => Some(total / 1000),
        TimeUnit::Millis => None,
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |p| offset - p - 1) + 1;
    (line, col)
}

/// Detector parameters as written in a `[[detect]]` or `detect = {…}` table.
struct DetParams<'a> {
    kind: &'a Spanned<String>,
    alpha: Option<f64>,
    k: Option<f64>,
    warmup: Option<u32>,
    threshold: Option<f64>,
    hysteresis: Option<f64>,
    cooldown: Option<u32>,
}

/// The configuration of a per-sample scoring detector kind (`kestrel`,
/// `kestrel_calibrated`, `kestrel_banded`, `ewma`, `mad`, `cusum`), as a
/// TOML `[[detect]]` and SQL's detector table functions name them.
pub(crate) fn scoring_config(kind: &str) -> Option<DetectorConfig> {
    Some(match kind {
        "kestrel" => DetectorConfig::Default(KestrelConfig::default()),
        "kestrel_calibrated" => DetectorConfig::Default(KESTREL_CALIBRATED),
        "kestrel_banded" => DetectorConfig::Default(KESTREL_BANDED),
        "ewma" => DetectorConfig::Ewma(EwmaConfig::default()),
        "mad" => DetectorConfig::Mad(MadConfig::default()),
        "cusum" => DetectorConfig::Cusum(CusumConfig::default()),
        _ => return None,
    })
}

fn detector(ctx: &Ctx, p: &DetParams) -> Result<DetectorSpec, ConfigError> {
    let kind = p.kind;
    let scored = |cfg: DetectorConfig| {
        let DetectorSpec::Scored {
            detector,
            threshold,
            hysteresis,
            cooldown,
        } = DetectorSpec::scored(cfg)
        else {
            unreachable!("scored() builds Scored")
        };
        DetectorSpec::Scored {
            detector,
            threshold: p.threshold.unwrap_or(threshold),
            hysteresis: p.hysteresis.unwrap_or(hysteresis),
            cooldown: p.cooldown.unwrap_or(cooldown),
        }
    };
    let only_ewma_z = p.alpha.is_some() || p.k.is_some() || p.warmup.is_some();
    let spec = match kind.get_ref().as_str() {
        "ewma_z" => {
            if p.threshold.is_some() || p.hysteresis.is_some() || p.cooldown.is_some() {
                return Err(ctx.err(
                    Some(kind.span()),
                    "ewma_z takes alpha, k and warmup, not threshold/hysteresis/cooldown",
                    "use k (standard deviations) to set how far is anomalous",
                ));
            }
            let DetectorSpec::EwmaZ {
                alpha: a0,
                k: k0,
                warmup: w0,
            } = DetectorSpec::default()
            else {
                unreachable!("the default detector spec is EwmaZ")
            };
            DetectorSpec::EwmaZ {
                alpha: p.alpha.unwrap_or(a0),
                k: p.k.unwrap_or(k0),
                warmup: p.warmup.unwrap_or(w0),
            }
        }
        "kestrel" | "kestrel_calibrated" | "kestrel_banded" | "ewma" | "mad" | "cusum"
            if only_ewma_z =>
        {
            return Err(ctx.err(Some(kind.span()), format!("{} takes threshold, hysteresis and cooldown; alpha, k and warmup belong to ewma_z", kind.get_ref()), "remove alpha/k/warmup: scoring detectors use one global configuration"));
        }
        k if scoring_config(k).is_some() => scored(scoring_config(k).expect("a scoring kind")),
        "multivariate" => {
            return Err(ctx.err(
                Some(kind.span()),
                "a multivariate detector watches several fields of a source, not a window's aggregate",
                "make it a [[detect]] of its own with fields = [\"vib\", \"current\", …]",
            ))
        }
        other => {
            return Err(ctx.err(
                Some(kind.span()),
                format!("unknown detector kind `{other}`"),
                "use one of: kestrel (the default), kestrel_banded, kestrel_calibrated, ewma, mad, cusum, ewma_z, multivariate (with `fields`)",
            ))
        }
    };
    spec.validate()
        .map_err(|e| ctx.err(Some(kind.span()), e, "fix the detector's parameters"))?;
    Ok(spec)
}

/// A `[[detect]]` of kind `multivariate`: `fields` (2 to `MAX_FIELDS`
/// distinct fields of its source) instead of `field`, `learn`, `forget`,
/// `beta`, `threshold`, `hysteresis`, `cooldown`; arrival order.
fn multivariate(
    ctx: &Ctx,
    d: &RawDetect,
    sources: &[SourceSpec],
) -> Result<OperatorSpec, ConfigError> {
    let kind = d.kind.span();
    if let Some(f) = &d.field {
        let msg = if d.fields.is_some() {
            "`field` and `fields` are both given"
        } else {
            "a multivariate detector reads `fields`, not `field`"
        };
        return Err(ctx.err(
            Some(f.span()),
            msg,
            "list the machine's fields once: fields = [\"vib\", \"current\", …]",
        ));
    }
    let Some(fields) = &d.fields else {
        return Err(ctx.err(
            Some(kind),
            format!("multivariate detector `{}` needs `fields`", d.id.get_ref()),
            "list 2 to 8 fields of its source: fields = [\"vib\", \"current\", …]",
        ));
    };
    let names = fields.get_ref();
    if !(2..=MAX_FIELDS).contains(&names.len()) {
        return Err(ctx.err(
            Some(fields.span()),
            format!(
                "a multivariate detector reads 2 to {MAX_FIELDS} fields, not {}",
                names.len()
            ),
            "list the fields of one machine; split a larger machine into several detectors",
        ));
    }
    let src = sources.iter().find(|s| &s.name == d.source.get_ref());
    for (i, f) in names.iter().enumerate() {
        if names[..i].iter().any(|g| g.get_ref() == f.get_ref()) {
            return Err(ctx.err(
                Some(f.span()),
                format!("field `{}` is listed twice", f.get_ref()),
                "list each field once",
            ));
        }
        if let Some(src) = src {
            if src.field_index(f.get_ref()).is_none() {
                return Err(ctx.err(
                    Some(f.span()),
                    format!("source `{}` has no field `{}`", src.name, f.get_ref()),
                    format!(
                        "use fields listed in the source's `fields`: {}",
                        src.fields.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(o) = &d.order {
        if o.get_ref() != "arrival" {
            return Err(ctx.err(
                Some(o.span()),
                "a multivariate detector reads its samples in arrival order",
                "remove `order` (or write order = \"arrival\")",
            ));
        }
    }
    if d.alpha.is_some() || d.k.is_some() || d.warmup.is_some() {
        return Err(ctx.err(
            Some(kind),
            "alpha, k and warmup belong to ewma_z",
            "a multivariate detector takes learn, forget, beta, threshold, hysteresis and cooldown",
        ));
    }
    let mut config = MULTIVARIATE_DEFAULT;
    if let Some(l) = &d.learn {
        config.learn = *l.get_ref();
    }
    if let Some(f) = &d.forget {
        config.forget = *f.get_ref();
    }
    if let Some(b) = &d.beta {
        config.beta = *b.get_ref();
    }
    if let Some(t) = d.threshold {
        config.threshold = t;
    }
    let DetectorSpec::Multivariate {
        hysteresis,
        cooldown,
        ..
    } = DetectorSpec::multivariate(names.len() as u8)
    else {
        unreachable!("multivariate() builds Multivariate")
    };
    let spec = DetectorSpec::Multivariate {
        config,
        fields: names.len() as u8,
        hysteresis: d.hysteresis.unwrap_or(hysteresis),
        cooldown: d.cooldown.unwrap_or(cooldown),
    };
    spec.validate().map_err(|e| {
        ctx.err(
            Some(kind),
            e,
            "fix the detector's parameters (docs/detectors.md)",
        )
    })?;
    Ok(OperatorSpec {
        id: d.id.get_ref().clone(),
        source: d.source.get_ref().clone(),
        field: names[0].get_ref().clone(),
        kind: OperatorKind::Detect(DetectSpec {
            on: None,
            detector: spec,
            order: SampleOrder::Arrival,
            fields: names.iter().map(|f| f.get_ref().clone()).collect(),
        }),
    })
}

/// Reads and validates a pipeline file.
///
/// # Errors
/// The file cannot be read, is not valid TOML, or describes an invalid
/// pipeline; the error says where.
pub fn load(path: &Path) -> Result<PipelineFile, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read the pipeline file: {e}"),
        help: "check the path passed with --pipeline".into(),
    })?;
    parse(&file, &text)
}

/// Parses and validates pipeline text; `file` names it in errors. SQL
/// text (a `.sql` file, or text starting with a SQL statement) goes to
/// [`crate::sql::parse_for_run`].
///
/// # Errors
/// See [`load`].
pub fn parse(file: &str, text: &str) -> Result<PipelineFile, ConfigError> {
    if crate::sql::looks_like_sql(file, text) {
        return crate::sql::parse_for_run(file, text);
    }
    let ctx = Ctx { file, text };
    let raw: RawPipeline = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        ctx.err(
            e.span(),
            msg,
            "see docs/pipeline.md for the pipeline format",
        )
    })?;
    let time = time_spec(&ctx, &raw.time)?;
    let unit = time.unit;
    let state = state_spec(&ctx, &raw.state, unit)?;
    let mut sources = Vec::new();
    let mut csv = Vec::new();
    let mut mqtt = Vec::new();
    for s in &raw.sources {
        let (spec, c, m) = source(&ctx, s, unit)?;
        sources.push(spec);
        csv.push(c);
        mqtt.push(m);
    }
    let mut operators = Vec::new();
    for w in &raw.windows {
        operators.push(window_op(&ctx, w, unit)?);
    }
    for d in &raw.detects {
        operators.push(detect_op(&ctx, d, &sources)?);
    }
    // User functions: scalar ones add a field to their source, keyed ones
    // an operator (crate::functions).
    let functions = crate::functions::wire(
        &ctx,
        &raw.functions,
        &mut sources,
        &mut operators,
        &raw.modules,
        &|m| crate::functions::read_module(file, m),
    )?;
    let spec = PipelineSpec {
        name: raw.name.clone().unwrap_or_else(|| "pipeline".into()),
        time,
        sources,
        operators,
        state,
    };
    spec.validate().map_err(|e| build_error(&ctx, &raw, &e))?;
    Ok(PipelineFile {
        spec,
        csv,
        mqtt,
        functions,
        sql: None,
    })
}

/// `[time]`: the unit and the time mode.
fn time_spec(ctx: &Ctx<'_>, t: &RawTime) -> Result<TimeSpec, ConfigError> {
    let unit = match t.unit.as_ref().map(|u| u.get_ref().as_str()) {
        None | Some("ms") => TimeUnit::Millis,
        Some("us") => TimeUnit::Micros,
        Some(o) => {
            let sp = t.unit.as_ref().map(|u| u.span());
            return Err(ctx.err(
                sp,
                format!("unknown time unit `{o}`"),
                "use \"ms\" or \"us\"",
            ));
        }
    };
    let mut time = TimeSpec::new(unit);
    time.mode = match t.mode.as_ref().map(|u| u.get_ref().as_str()) {
        None | Some("event") => TimeMode::Event,
        Some("ingestion") => TimeMode::Ingestion,
        Some("processing") => TimeMode::Processing,
        Some(o) => {
            let sp = t.mode.as_ref().map(|u| u.span());
            return Err(ctx.err(
                sp,
                format!("unknown time mode `{o}`"),
                "use \"event\", \"ingestion\" or \"processing\"",
            ));
        }
    };
    Ok(time)
}

/// `[state]`: the key and byte budgets, the TTL and the policy when full.
fn state_spec(ctx: &Ctx<'_>, st: &RawState, unit: TimeUnit) -> Result<StateSpec, ConfigError> {
    let mut state = StateSpec::default();
    if let Some(m) = &st.max_keys {
        if *m.get_ref() < 1 {
            return Err(ctx.err(
                Some(m.span()),
                "max_keys must be at least 1",
                "set a positive key budget",
            ));
        }
        state.max_keys = *m.get_ref() as usize;
    }
    state.ttl = ctx
        .duration_or_off(st.ttl.as_ref(), DEFAULT_TTL, unit, "ttl")?
        .map(|t| t.max(1));
    if let Some(m) = &st.memory {
        let bytes = match m.get_ref() {
            SizeValue::Int(n) => usize::try_from(*n).ok(),
            SizeValue::Str(s) => parse_size(s),
        };
        state.max_bytes = match bytes {
            Some(b) if b >= MIN_STATE_MEMORY => b,
            _ => {
                return Err(ctx.err(
                    Some(m.span()),
                    "memory is not a size of at least 64KiB",
                    "write the keyed-state budget as bytes or with a unit: \"64MiB\", \"512KiB\", \"1GiB\"",
                ))
            }
        };
    }
    if let Some(p) = &st.on_full {
        state.on_full = match p.get_ref().as_str() {
            "reject" => FullPolicy::RejectNew,
            "evict_idle" => FullPolicy::EvictIdle,
            o => {
                return Err(ctx.err(
                    Some(p.span()),
                    format!("unknown policy `{o}`"),
                    "use \"reject\" or \"evict_idle\"",
                ))
            }
        };
    }
    Ok(state)
}

/// One `[[source]]`: its spec, its CSV mapping and its MQTT subscription.
fn source(
    ctx: &Ctx<'_>,
    s: &RawSource,
    unit: TimeUnit,
) -> Result<(SourceSpec, CsvMapping, Option<MqttSource>), ConfigError> {
    let mut spec = SourceSpec::new(s.name.get_ref(), s.fields.get_ref().iter().cloned());
    if let Some(d) = &s.max_out_of_orderness {
        spec.max_out_of_orderness = ctx.duration(d, unit, "max_out_of_orderness")?;
    }
    if let Some(d) = &s.idle_timeout {
        spec.idle_timeout = Some(ctx.duration(d, unit, "idle_timeout")?);
    }
    spec.max_ahead =
        ctx.duration_or_off(s.max_ahead.as_ref(), DEFAULT_MAX_AHEAD, unit, "max_ahead")?;
    spec.watermark = match s.watermark.as_ref().map(|w| w.get_ref().as_str()) {
        None | Some("per-key") => WatermarkMode::PerKey,
        Some("per-source") => WatermarkMode::PerSource,
        Some(o) => {
            return Err(ctx.err(
                s.watermark.as_ref().map(|w| w.span()),
                format!("unknown watermark `{o}`"),
                "use \"per-key\" (the default: each key's own watermark fires its windows) or \"per-source\"",
            ))
        }
    };
    if spec.fields.is_empty() {
        return Err(ctx.err(
            Some(s.fields.span()),
            "a source needs at least one field",
            "list the numeric fields, e.g. fields = [\"value\"]",
        ));
    }
    stages(ctx, s, &mut spec)?;
    let csv = csv_mapping(ctx, s, unit)?;
    let mqtt = match &s.mqtt {
        None => None,
        Some(m) => Some(mqtt_source(ctx, m, &spec.fields, unit)?),
    };
    Ok((spec, csv, mqtt))
}

/// One `[[window]]` operator.
fn window_op(ctx: &Ctx<'_>, w: &RawWindow, unit: TimeUnit) -> Result<OperatorSpec, ConfigError> {
    let need = |d: &Option<Dur>, what: &str| -> Result<i64, ConfigError> {
        match d {
            Some(d) => ctx.duration(d, unit, what),
            None => Err(ctx.err(
                Some(w.kind.span()),
                format!("a {} window needs `{what}`", w.kind.get_ref()),
                format!("add {what} = \"10s\" (for example) to this window"),
            )),
        }
    };
    let kind = match w.kind.get_ref().as_str() {
        "tumbling" => WindowKind::Tumbling {
            size: need(&w.size, "size")?,
        },
        "sliding" => WindowKind::Sliding {
            size: need(&w.size, "size")?,
            slide: need(&w.slide, "slide")?,
        },
        "session" => WindowKind::Session {
            gap: need(&w.gap, "gap")?,
        },
        "cumulate" => WindowKind::Cumulate {
            step: need(&w.step, "step")?,
            size: need(&w.size, "size")?,
        },
        "count" => match w.size.as_ref().map(|s| s.get_ref()) {
            Some(DurationValue::Int(n)) if *n > 0 => WindowKind::Count { size: *n as u64 },
            _ => {
                return Err(ctx.err(
                    Some(w.kind.span()),
                    "a count window needs `size`, a positive number of samples",
                    "add size = 100 (for example)",
                ))
            }
        },
        o => {
            return Err(ctx.err(
                Some(w.kind.span()),
                format!("unknown window kind `{o}`"),
                "use \"tumbling\", \"sliding\", \"cumulate\", \"session\" or \"count\"",
            ))
        }
    };
    let mut aggregates = Vec::new();
    for a in w.aggregates.get_ref() {
        match AggKind::parse(a.get_ref()) {
            Some(k) => aggregates.push(k),
            None => return Err(ctx.err(Some(a.span()), format!("unknown aggregate `{}`", a.get_ref()), "use count, sum, min, max, mean, stddev, stddev_sample, variance, rms, p2p, kurtosis, crest, or a percentile such as p95 / p99.9")),
        }
    }
    let detect = match &w.detect {
        None => None,
        Some(d) => {
            let on = match &d.on {
                Some(on) => Some(AggKind::parse(on.get_ref()).ok_or_else(|| {
                    ctx.err(
                        Some(on.span()),
                        format!("unknown aggregate `{}`", on.get_ref()),
                        "`on` names one of the window's aggregates, e.g. \"mean\"",
                    )
                })?),
                None => None,
            };
            Some(DetectSpec {
                on,
                detector: detector(
                    ctx,
                    &DetParams {
                        kind: &d.kind,
                        alpha: d.alpha,
                        k: d.k,
                        warmup: d.warmup,
                        threshold: d.threshold,
                        hysteresis: d.hysteresis,
                        cooldown: d.cooldown,
                    },
                )?,
                order: SampleOrder::EventTime,
                fields: Vec::new(),
            })
        }
    };
    let allowed_lateness = match &w.allowed_lateness {
        Some(d) => ctx.duration(d, unit, "allowed_lateness")?,
        None => 0,
    };
    Ok(OperatorSpec {
        id: w.id.get_ref().clone(),
        source: w.source.get_ref().clone(),
        field: w.field.get_ref().clone(),
        kind: OperatorKind::Window(WindowSpec {
            kind,
            allowed_lateness,
            aggregates,
            detect,
        }),
    })
}

/// One `[[detect]]` operator (`sources`: the pipeline's, for a
/// multivariate detector's fields).
fn detect_op(
    ctx: &Ctx<'_>,
    d: &RawDetect,
    sources: &[SourceSpec],
) -> Result<OperatorSpec, ConfigError> {
    if d.kind.get_ref() == "multivariate" {
        return multivariate(ctx, d, sources);
    }
    if let Some(f) = &d.fields {
        return Err(ctx.err(
            Some(f.span()),
            format!("a {} detector reads one field", d.kind.get_ref()),
            "write `field = \"…\"`, or use kind = \"multivariate\" for several fields of one machine",
        ));
    }
    if let Some(sp) = [
        d.learn.as_ref().map(|x| x.span()),
        d.forget.as_ref().map(|x| x.span()),
        d.beta.as_ref().map(|x| x.span()),
    ]
    .into_iter()
    .flatten()
    .next()
    {
        return Err(ctx.err(
            Some(sp),
            "learn, forget and beta belong to kind = \"multivariate\"",
            "remove them, or use kind = \"multivariate\" with `fields`",
        ));
    }
    let Some(field) = &d.field else {
        return Err(ctx.err(
            Some(d.id.span()),
            format!(
                "detector `{}` needs `field`: the field it watches",
                d.id.get_ref()
            ),
            "add `field = \"…\"`, a field of its source",
        ));
    };
    let order = match d.order.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("event_time") => SampleOrder::EventTime,
        Some("arrival") => SampleOrder::Arrival,
        Some(o) => {
            let sp = d.order.as_ref().map(|x| x.span());
            return Err(ctx.err(
                sp,
                format!("unknown order `{o}`"),
                "use \"event_time\" (the default) or \"arrival\"",
            ));
        }
    };
    let det = detector(
        ctx,
        &DetParams {
            kind: &d.kind,
            alpha: d.alpha,
            k: d.k,
            warmup: d.warmup,
            threshold: d.threshold,
            hysteresis: d.hysteresis,
            cooldown: d.cooldown,
        },
    )?;
    Ok(OperatorSpec {
        id: d.id.get_ref().clone(),
        source: d.source.get_ref().clone(),
        field: field.get_ref().clone(),
        kind: OperatorKind::Detect(DetectSpec {
            on: None,
            detector: det,
            order,
            fields: Vec::new(),
        }),
    })
}

fn mqtt_source(
    ctx: &Ctx,
    m: &RawMqtt,
    fields: &[String],
    unit: TimeUnit,
) -> Result<MqttSource, ConfigError> {
    if m.topics.get_ref().is_empty() {
        return Err(ctx.err(
            Some(m.topics.span()),
            "an mqtt source needs at least one topic filter",
            "add topics = [\"sensors/+/vibration\"] (for example)",
        ));
    }
    for t in m.topics.get_ref() {
        check_topic_filter(t.get_ref()).map_err(|e| {
            ctx.err(
                Some(t.span()),
                e,
                "write filters like sensors/+/temp or plant/#",
            )
        })?;
    }
    let qos = match &m.qos {
        None => 1,
        Some(q) if *q.get_ref() <= 1 => *q.get_ref(),
        Some(q) => {
            return Err(ctx.err(
                Some(q.span()),
                format!("qos {} is not supported", q.get_ref()),
                "use qos = 1 (acknowledged after the journal commit) or 0",
            ))
        }
    };
    let decoder = m.decode.get_ref().build(fields, unit).map_err(|e| {
        ctx.err(
            Some(m.decode.span()),
            e.to_string(),
            "see the decode table's keys in docs/pipeline.md",
        )
    })?;
    Ok(MqttSource {
        topics: m
            .topics
            .get_ref()
            .iter()
            .map(|t| t.get_ref().clone())
            .collect(),
        qos,
        decoder,
    })
}

fn csv_mapping(ctx: &Ctx, s: &RawSource, unit: TimeUnit) -> Result<CsvMapping, ConfigError> {
    let fields = s.fields.get_ref();
    let default_ts = match unit {
        TimeUnit::Millis => TsFormat::Millis,
        TimeUnit::Micros => TsFormat::Micros,
    };
    let Some(c) = &s.csv else {
        let mut columns = vec![Column::Key, Column::Ts];
        columns.extend((0..fields.len()).map(Column::Field));
        return Ok(CsvMapping {
            columns,
            header: false,
            timestamp: default_ts,
            key: s.name.get_ref().clone(),
            nulls: None,
        });
    };
    let timestamp = match c.timestamp.as_ref().map(|t| t.get_ref().as_str()) {
        None => default_ts,
        Some("s") => TsFormat::Seconds,
        Some("ms") => TsFormat::Millis,
        Some("us") => TsFormat::Micros,
        Some("datetime") => TsFormat::Datetime,
        Some(o) => {
            return Err(ctx.err(
                c.timestamp.as_ref().map(|t| t.span()),
                format!("unknown timestamp format `{o}`"),
                "use \"s\", \"ms\", \"us\" or \"datetime\" (YYYY-MM-DD HH:MM:SS, UTC)",
            ))
        }
    };
    let columns = match &c.columns {
        None => {
            let mut v = vec![Column::Key, Column::Ts];
            v.extend((0..fields.len()).map(Column::Field));
            v
        }
        Some(cols) => {
            let mut v = Vec::new();
            for name in cols.get_ref() {
                v.push(match name.as_str() {
                    "key" => Column::Key,
                    "ts" => Column::Ts,
                    "_" => Column::Skip,
                    f => match fields.iter().position(|x| x == f) {
                        Some(i) => Column::Field(i),
                        None => {
                            return Err(ctx.err(
                                Some(cols.span()),
                                format!(
                                "column `{f}` is neither key, ts, _ nor one of the source's fields"
                            ),
                                "name each column key, ts, _ (skip) or a field from `fields`",
                            ))
                        }
                    },
                });
            }
            if v.iter().filter(|c| **c == Column::Ts).count() != 1 {
                return Err(ctx.err(
                    Some(cols.span()),
                    "the columns need exactly one `ts`",
                    "mark the timestamp column as \"ts\"",
                ));
            }
            for (i, f) in fields.iter().enumerate() {
                if !v.contains(&Column::Field(i)) {
                    return Err(ctx.err(
                        Some(cols.span()),
                        format!("field `{f}` has no column"),
                        "add the field's name to `columns`",
                    ));
                }
            }
            v
        }
    };
    Ok(CsvMapping {
        columns,
        header: c.header,
        timestamp,
        key: c.key.clone().unwrap_or_else(|| s.name.get_ref().clone()),
        nulls: None,
    })
}

fn build_error(ctx: &Ctx, raw: &RawPipeline, e: &BuildError) -> ConfigError {
    let op_span = |id: &str, which: &str| -> Option<Range<usize>> {
        for w in &raw.windows {
            if w.id.get_ref() == id {
                return Some(match which {
                    "source" => w.source.span(),
                    "field" => w.field.span(),
                    _ => w.id.span(),
                });
            }
        }
        for d in &raw.detects {
            if d.id.get_ref() == id {
                return Some(match which {
                    "source" => d.source.span(),
                    "field" => d
                        .field
                        .as_ref()
                        .map(|f| f.span())
                        .or_else(|| d.fields.as_ref().map(|f| f.span()))
                        .unwrap_or_else(|| d.id.span()),
                    _ => d.id.span(),
                });
            }
        }
        raw.sources
            .iter()
            .find(|s| s.name.get_ref() == id)
            .map(|s| s.name.span())
    };
    let (span, help) = match e {
        BuildError::Duplicate { what, name } => {
            let span = if *what == "source" {
                raw.sources
                    .iter()
                    .filter(|s| s.name.get_ref() == name)
                    .nth(1)
                    .map(|s| s.name.span())
            } else {
                let ids = raw
                    .windows
                    .iter()
                    .map(|w| &w.id)
                    .chain(raw.detects.iter().map(|d| &d.id));
                ids.filter(|i| i.get_ref() == name).nth(1).map(|i| i.span())
            };
            (span, "give each a unique name; operator ids are how state is matched across updates, so keep existing ones")
        }
        BuildError::UnknownSource { op, .. } => (
            op_span(op, "source"),
            "name a source defined with [[source]]",
        ),
        BuildError::UnknownField { op, .. } => (
            op_span(op, "field"),
            "use a field listed in the source's `fields`",
        ),
        BuildError::Invalid { at, .. } => (op_span(at, "id"), "fix the value as described"),
        _ => (None, ""),
    };
    ctx.err(span, e.to_string(), help)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: &str = include_str!("../../examples/w1.toml");

    #[test]
    fn w1_example_parses() {
        let p = parse("w1.toml", W1).unwrap();
        assert_eq!(p.spec.operators.len(), 1);
        assert_eq!(p.spec.sources[0].max_out_of_orderness, 2000);
    }

    fn err(text: &str) -> ConfigError {
        parse("p.toml", text).unwrap_err()
    }

    #[test]
    fn calibrated_kestrel_ships_its_tail_threshold() {
        let nab = include_str!("../../examples/nab.toml");
        for (kind, config) in [
            ("kestrel_calibrated", KESTREL_CALIBRATED),
            ("kestrel_banded", KESTREL_BANDED),
        ] {
            let p = parse(
                "nab.toml",
                &nab.replace("kind = \"kestrel\"", &format!("kind = \"{kind}\"")),
            )
            .unwrap();
            let OperatorKind::Detect(d) = &p.spec.operators[0].kind else {
                panic!("not a detect operator");
            };
            let DetectorSpec::Scored {
                detector,
                threshold,
                ..
            } = d.detector
            else {
                panic!("not a scored detector");
            };
            assert_eq!(detector, DetectorConfig::Default(config), "{kind}");
            assert_eq!(threshold, 5.0 / 15.0, "{kind}");
        }
        let e = err(&nab.replace("kind = \"kestrel\"", "kind = \"kestrel_calibrate\""));
        assert!(e.help.contains("kestrel_calibrated"), "{e}");
    }

    #[test]
    fn the_pump_example_parses_into_a_multivariate_detector() {
        let p = parse("p.toml", include_str!("../../examples/pump_health.toml")).unwrap();
        let OperatorKind::Detect(d) = &p.spec.operators[0].kind else {
            panic!("not a detect operator");
        };
        assert_eq!(d.fields.len(), 8);
        assert_eq!(d.order, SampleOrder::Arrival);
        assert_eq!(p.spec.operators[0].field, "flow");
        assert_eq!(d.detector, DetectorSpec::multivariate(8));
    }

    #[test]
    fn multivariate_errors_say_where_and_what_to_do() {
        // line 6: fields; line 7: kind
        let base = "[[source]]\nname = \"s\"\nfields = [\"a\", \"b\", \"c\"]\n[[detect]]\nid = \"m\"\nfields = [\"a\", \"b\"]\nkind = \"multivariate\"\nsource = \"s\"\n";
        let p = parse("p.toml", base).unwrap();
        let OperatorKind::Detect(d) = &p.spec.operators[0].kind else {
            panic!("not a detect operator");
        };
        assert_eq!(d.fields, ["a", "b"]);
        let with = |old: &str, new: &str| err(&base.replace(old, new));
        let e = with("[\"a\", \"b\"]", "[\"a\"]");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.msg.contains("2 to 8 fields, not 1"), "{e}");
        let nine = (0..9)
            .map(|i| format!("\"f{i}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let e = with("[\"a\", \"b\"]", &format!("[{nine}]"));
        assert!(e.msg.contains("not 9"), "{e}");
        let e = with("[\"a\", \"b\"]", "[\"a\", \"zz\"]");
        assert_eq!(e.line, 6, "{e}");
        assert!(
            e.msg.contains("no field `zz`") && e.help.contains("a, b, c"),
            "{e}"
        );
        let e = with("[\"a\", \"b\"]", "[\"a\", \"a\"]");
        assert!(e.msg.contains("twice"), "{e}");
        let e = with(
            "kind = \"multivariate\"",
            "kind = \"multivariate\"\nfield = \"a\"",
        );
        assert_eq!(e.line, 8, "{e}");
        assert!(e.msg.contains("both"), "{e}");
        let e = with("fields = [\"a\", \"b\"]", "field = \"a\"");
        assert!(e.msg.contains("reads `fields`"), "{e}");
        let e = with("fields = [\"a\", \"b\"]\n", "");
        assert!(e.msg.contains("needs `fields`"), "{e}");
        let e = with(
            "kind = \"multivariate\"",
            "kind = \"multivariate\"\norder = \"event_time\"",
        );
        assert_eq!(e.line, 8, "{e}");
        assert!(e.msg.contains("arrival"), "{e}");
        let e = with(
            "kind = \"multivariate\"",
            "kind = \"multivariate\"\nlearn = 5",
        );
        assert_eq!(e.line, 7, "{e}");
        assert!(e.msg.contains("learn"), "{e}");
        let e = with("kind = \"multivariate\"", "kind = \"kestrel\"");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.help.contains("multivariate"), "{e}");
        let e = err(&base
            .replace("fields = [\"a\", \"b\"]", "field = \"a\"")
            .replace("kind = \"multivariate\"", "kind = \"kestrel\"\nlearn = 500"));
        assert!(e.msg.contains("belong to"), "{e}");
        let e = with(
            "kind = \"multivariate\"",
            "kind = \"multivariate\"\nk = 3.0",
        );
        assert!(e.msg.contains("ewma_z"), "{e}");
        let text = base.replace(
            "kind = \"multivariate\"",
            "kind = \"multivariate\"\nlearn = 600\nforget = 0.0\nbeta = 0.2\nthreshold = 0.4\ncooldown = 10",
        );
        let p = parse("p.toml", &text).unwrap();
        let OperatorKind::Detect(d) = &p.spec.operators[0].kind else {
            panic!("not a detect operator");
        };
        let DetectorSpec::Multivariate {
            config, cooldown, ..
        } = d.detector
        else {
            panic!("not multivariate");
        };
        assert_eq!(
            (
                config.learn,
                config.forget,
                config.beta,
                config.threshold,
                cooldown
            ),
            (600, 0.0, 0.2, 0.4, 10)
        );
    }

    #[test]
    fn errors_point_at_the_line() {
        let base = "[[source]]\nname = \"s\"\nfields = [\"v\"]\n\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"count\"]\n";
        assert!(parse("p.toml", base).is_ok());
        let e = err(&base.replace("source = \"s\"\nfield", "source = \"nope\"\nfield"));
        assert_eq!((e.line, e.msg.contains("nope")), (7, true), "{e}");
        let e = err(&base.replace("\"count\"", "\"count\", \"median\""));
        assert_eq!(e.line, 11, "{e}");
        assert!(e.help.contains("p95"));
        let e = err(&base.replace("\"10s\"", "\"10 parsecs\""));
        assert_eq!(e.line, 10, "{e}");
        let e = err(&base.replace("kind = \"tumbling\"", "kind = \"tumbling\"\nsizee = 3"));
        assert_eq!(e.line, 10, "{e}");
        let e = err(&base.replace("field = \"v\"\nkind", "field = \"x\"\nkind"));
        assert_eq!(e.line, 8, "{e}");
        let e = err(&format!("{base}\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"count\"\nsize = 5\naggregates = [\"count\"]\n"));
        assert_eq!(e.line, 14, "{e}");
        let e = err("[[source]\nname = 1");
        assert_eq!(e.line, 1, "{e}");
        assert!(e.to_string().starts_with("p.toml:1:"), "{e}");
    }

    /// `filter` and `[[source.compute]]` compile to the engine source's
    /// stages; a window reads a computed field by name; rows by hand.
    #[test]
    fn filter_and_computed_fields_from_toml() {
        let text = "[[source]]\nname = \"s\"\nfields = [\"c\", \"h\"]\nfilter = \"h < 90 AND c > -40\"\n[[source.compute]]\nname = \"f\"\nexpr = \"c * 1.8 + 32\"\n[[source.compute]]\nname = \"g\"\nexpr = \"ROUND(f) - c\"\n\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"g\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"count\", \"sum\"]\n";
        let p = parse("p.toml", text).unwrap_or_else(|e| panic!("{e}"));
        let src = &p.spec.sources[0];
        assert!(src.filter.is_some());
        let names: Vec<&str> = src.compute.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["f", "g"]);
        // key,ts,c,h (epoch ms): the second row is filtered (h = 95), and
        // so is the last (c = -50).
        let csv = "a,1767225601000,10,50\na,1767225602000,20,95\na,1767225603000,0,40\na,1767225615000,-50,40\n";
        let mut out = Vec::new();
        let (_, engine) = crate::replay::replay(&p, 0, csv.as_bytes(), &mut out, |b, _| {
            panic!("bad row {b:?}")
        })
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        // g = round(c * 1.8 + 32) - c: 50 - 10 = 40 and 32 - 0 = 32.
        assert!(out.lines().any(|l| l.ends_with(",2,72.000000")), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(engine.stats().filtered, 2);
    }

    #[test]
    fn bad_stage_expressions_point_into_the_string() {
        let base = "[[source]]\nname = \"s\"\nfields = [\"v\"]\nfilter = \"v > 1\"\n\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"count\"]\n";
        assert!(parse("p.toml", base).is_ok());
        let e = err(&base.replace("v > 1", "v > x"));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.msg.contains("no column `x`"), "{e}");
        let e = err(&base.replace("v > 1", "v + 1"));
        assert!(e.msg.contains("not BOOLEAN"), "{e}");
        let e = err(&base.replace("v > 1", "v > 1 1"));
        assert!(e.msg.contains("after the expression"), "{e}");
        let e = err(&base.replace(
            "filter = \"v > 1\"",
            "[[source.compute]]\nname = \"v\"\nexpr = \"v * 2\"",
        ));
        assert!(e.msg.contains("already a field"), "{e}");
        let e = err(&base.replace(
            "filter = \"v > 1\"",
            "[[source.compute]]\nname = \"d\"\nexpr = \"v > 2\"",
        ));
        assert!(e.msg.contains("not a number"), "{e}");
        // A window over a field no source computes.
        let e = err(&base.replace("field = \"v\"", "field = \"d\""));
        assert!(e.msg.contains('d'), "{e}");
    }

    #[test]
    fn mqtt_sources_are_checked_with_places() {
        let base = "[[source]]\nname = \"s\"\nfields = [\"temp\"]\n[source.mqtt]\ntopics = [\"plant/+/temp\"]\ndecode = { format = \"json\", key = \"id\", ts = \"t\" }\n\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"temp\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"mean\"]\n";
        let p = parse("p.toml", base).unwrap();
        let m = p.mqtt[0].as_ref().unwrap();
        assert_eq!(
            (m.topics.clone(), m.qos),
            (vec!["plant/+/temp".to_string()], 1)
        );
        let e = err(&base.replace("plant/+/temp", "plant/t+/temp"));
        assert_eq!(e.line, 5, "{e}");
        let e = err(&base.replace("plant/+/temp", "plant/#/temp"));
        assert_eq!(e.line, 5, "{e}");
        let e = err(&base.replace("format = \"json\"", "format = \"xml\""));
        assert_eq!(e.line, 6, "{e}");
        let e = err(&base.replace("key = \"id\", ", ""));
        assert_eq!(e.line, 6, "{e}");
        assert!(e.msg.contains("key"), "{e}");
        let e = err(&base.replace("topics = [", "qos = 2\ntopics = ["));
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn topic_filters() {
        for ok in ["a", "a/b", "+", "#", "a/+/c", "a/#", "+/+/#", "/a"] {
            assert!(check_topic_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b#", "a/#/c", "a+/b", "a/+b", "a\0b"] {
            assert!(check_topic_filter(bad).is_err(), "{bad:?}");
        }
    }

    /// Defect 6 of issue 11: with the defaults of `examples/demo.toml` (no
    /// `max_ahead`), one reading stamped 50 years ahead of the gateway clock
    /// must be refused, and the next real readings must still be windowed.
    #[test]
    fn a_reading_from_the_future_is_refused_by_default() {
        let p = parse("demo.toml", include_str!("../../examples/demo.toml")).unwrap();
        let mut e = p.spec.build().unwrap();
        let now0 = 1_780_000_000_000i64;
        let year = 365 * 86_400_000i64;
        let r = e.handle_sample(now0, 0, "pump-9", now0 + 50 * year, &[0.5, 40.0]);
        assert_eq!(r, Err(Reject::TooFarAhead));
        for i in 0..10 {
            let t = now0 + 1 + i * 3_000;
            e.handle_sample(t, 0, "pump-1", t, &[0.5, 40.0]).unwrap();
        }
        e.handle_end_of_input();
        let outs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
        let late = outs.iter().filter(|o| matches!(o, Output::Late(_))).count();
        assert_eq!(late, 0, "{outs:?}");
        assert_eq!(e.stats().rejected(Reject::TooFarAhead), 1);
        // Switched off, the guard lets it through.
        let off = include_str!("../../examples/demo.toml").replace(
            "idle_timeout = \"30s\"",
            "idle_timeout = \"30s\"\nmax_ahead = \"off\"",
        );
        let p = parse("demo.toml", &off).unwrap();
        assert_eq!(p.spec.sources[0].max_ahead, None);
        let p = parse("demo.toml", include_str!("../../examples/demo.toml")).unwrap();
        assert_eq!(p.spec.sources[0].max_ahead, Some(300_000));
    }

    fn drain(e: &mut Engine) -> Vec<Output> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    fn windows_of(e: &Engine, outs: &[Output], key: &str) -> usize {
        outs.iter()
            .filter(|o| matches!(o, Output::Window(w) if e.key_name(w.key) == key))
            .count()
    }

    /// Defect 6 of issue 11: with the file's defaults, a device whose clock
    /// races (inside the future guard) or lags neither drags the others'
    /// windows forward nor loses its own readings as late.
    #[test]
    fn one_racing_or_lagging_device_does_not_move_the_others() {
        let p = parse("demo.toml", include_str!("../../examples/demo.toml")).unwrap();
        let mut e = p.spec.build().unwrap();
        let now0 = 1_780_000_000_000i64;
        // pump-9's clock runs 4 minutes fast.
        e.handle_sample(now0, 0, "pump-9", now0 + 240_000, &[0.5, 40.0])
            .unwrap();
        let mut outs = drain(&mut e);
        for i in 0..10 {
            let t = now0 + 1 + i * 3_000;
            e.handle_sample(t, 0, "pump-1", t, &[0.5, 40.0]).unwrap();
            // pump-8's clock runs 10 minutes slow.
            e.handle_sample(t, 0, "pump-8", t - 600_000, &[0.5, 40.0])
                .unwrap();
            outs.extend(drain(&mut e));
        }
        let late = outs.iter().filter(|o| matches!(o, Output::Late(_))).count();
        assert_eq!(late, 0, "{outs:?}");
        // Both fired windows by their own progress (two operators each).
        assert!(windows_of(&e, &outs, "pump-1") >= 4, "{outs:?}");
        assert!(windows_of(&e, &outs, "pump-8") >= 4, "{outs:?}");
    }

    /// Defect 6 of issue 11: a silent source without `idle_timeout` must not
    /// stop the windows of another.
    #[test]
    fn a_silent_source_does_not_stop_the_others() {
        let text = "[[source]]\nname = \"a\"\nfields = [\"v\"]\nmax_out_of_orderness = \"1s\"\n\n[[source]]\nname = \"b\"\nfields = [\"v\"]\n\n[[window]]\nid = \"wa\"\nsource = \"a\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"count\"]\n\n[[window]]\nid = \"wb\"\nsource = \"b\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"10s\"\naggregates = [\"count\"]\n";
        let mut e = parse("p.toml", text).unwrap().spec.build().unwrap();
        let now0 = 1_780_000_000_000i64;
        e.handle_sample(now0, 1, "b-1", now0, &[1.0]).unwrap();
        let mut outs = Vec::new();
        for i in 0..60 {
            let t = now0 + i * 1_000;
            e.handle_sample(t, 0, "a-1", t, &[1.0]).unwrap();
            outs.extend(drain(&mut e));
        }
        assert!(windows_of(&e, &outs, "a-1") >= 5, "{outs:?}");
    }

    /// Defect 5 of issue 11: with the default state settings, a flood of
    /// fake ids must not lock a new real sensor out.
    #[test]
    fn a_flood_of_fake_ids_does_not_lock_out_a_new_sensor() {
        let p = parse("demo.toml", include_str!("../../examples/demo.toml")).unwrap();
        let mut e = p.spec.build().unwrap();
        let now0 = 1_780_000_000_000i64;
        for i in 0..120_000i64 {
            let t = now0 + i;
            let _ = e.handle_sample(t, 0, &format!("fake-{i}"), t, &[0.1, 20.0]);
            while e.poll_output().is_some() {}
        }
        let refused = e.stats().rejected(Reject::KeyBudget);
        let mut outs = Vec::new();
        for j in 0..30 {
            let t = now0 + 200_000 + j * 1_000;
            e.handle_sample(t, 0, "pump-new", t, &[0.5, 40.0]).unwrap();
            outs.extend(drain(&mut e));
        }
        assert_eq!(e.stats().rejected(Reject::KeyBudget), refused);
        assert!(windows_of(&e, &outs, "pump-new") >= 2, "{outs:?}");
    }

    #[test]
    fn key_costs_of_the_examples() {
        let cost = |t: &str| parse("p.toml", t).unwrap().spec.build().unwrap().key_cost();
        let (w1, demo, nab) = (
            cost(W1),
            cost(include_str!("../../examples/demo.toml")),
            cost(include_str!("../../examples/nab.toml")),
        );
        // Kestrel is 5,728 B a key (docs/detectors.md); sketches grow with
        // the data's range, so their estimate is what they start with.
        assert!(w1 < 1024, "{w1}");
        assert!((512..16 << 10).contains(&demo), "{demo}");
        assert!((5_728..12 << 10).contains(&nab), "{nab}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s", TimeUnit::Millis), Some(10_000));
        assert_eq!(parse_duration("250us", TimeUnit::Millis), None);
        assert_eq!(parse_duration("250us", TimeUnit::Micros), Some(250));
        assert_eq!(parse_duration("2h", TimeUnit::Millis), Some(7_200_000));
        assert_eq!(parse_duration("s", TimeUnit::Millis), None);
        assert_eq!(parse_duration("99999999999999999d", TimeUnit::Micros), None);
    }
}
