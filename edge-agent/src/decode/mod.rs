//! Payload decoders: the bytes of one MQTT message → samples for the engine
//! (`Engine::handle_sample(now, source, key, ts, values)`). Pure: no I/O, no
//! clock (processing time comes in as `now`), no panics on any input.
//!
//! ## Formats
//! - `json`: an object (one record) or an array of objects (one record
//!   each). Key, timestamp and each field are found by a dot path
//!   (`device.id`): object keys only, no array indexes.
//! - `cbor`: the same over CBOR maps with text keys (RFC 8949).
//! - `senml_json`, `senml_cbor`: SenML packs (RFC 8428), see below.
//!
//! ## Configuration
//! [`DecoderConfig`] is plain data (serde); TOML shape:
//! ```toml
//! format = "json"            # json | cbor | senml_json | senml_cbor
//! key = "device.id"          # or key_from_topic = 1, or key_const = "pump-1"
//! ts = "t"                   # omit: the sample is stamped with `now`
//! ts_unit = "ms"             # s | ms (default) | us | ns: integer timestamps
//! fields = { value = "readings.temp" }  # pipeline field → path (default: its name)
//! max_payload = 65536        # bytes, checked first
//! max_records = 1000         # records per message
//! name_separators = ":/"     # SenML only: key/field split of a record name
//! ```
//! [`DecoderConfig::build`] checks it against the source's `fields` and the
//! pipeline's [`TimeUnit`] and gives a [`Decoder`].
//!
//! ## Values and timestamps (JSON, CBOR)
//! - A field must be a number (integers above 2^53 lose precision as `f64`);
//!   anything else is `wrong_type`, NaN/±inf (CBOR floats) `non_finite`.
//! - A key is a string or an integer (written in decimal). An empty key is
//!   passed on: the engine rejects it as `bad_key`.
//! - A JSON object key given twice: for a value on a path, the last one
//!   counts; for an object on a path, the objects are read together (a
//!   field found in either counts) and a scalar repeated as an object is
//!   `wrong_type`. Senders that repeat keys get no stronger promise.
//! - A timestamp is an integer in `ts_unit` (converted to the pipeline unit;
//!   a coarser unit floors, so a sample never moves later), or an RFC 3339
//!   string with an offset (`Z` or `±hh:mm`; extra fraction digits are
//!   truncated). CBOR also takes tag 1 (epoch seconds) over an integer, and
//!   tag 0 over a string. A float timestamp is `wrong_type`: never silently
//!   rounded.
//!
//! ## SenML
//! - Base fields `bn`, `bt`, `bv`, `bs` apply to their record and every later
//!   one until changed; `bu`, `u`, `ut` are read past. A bad base field
//!   rejects the whole message (every later record depends on it); so do a
//!   label ending in `_` (must-understand) and a `bver` above 10
//!   (RFC 8428 §4.4).
//! - Name: `bn + n`. With `key_from_topic`/`key_const` the whole name is the
//!   field name; otherwise the name is split at its last `name_separators`
//!   character: key before it, field name after it
//!   (`urn:dev:ow:10e2073a01080063:temp` → key `urn:dev:ow:10e2073a01080063`,
//!   field `temp`). The field name is matched against `fields` (pipeline
//!   field → SenML name, default the field's own name); a record whose name
//!   matches no field is skipped and counted in [`Batch::ignored`]. Records
//!   are told apart by name only: two records that differ only in unit
//!   (RFC 8428 §5.1.3's lon/lat) are the same field. Names are not checked
//!   against the RFC's character set.
//! - Time: `bt + t` seconds; each of `bt` and `t` is converted to ticks
//!   separately (integers exactly, floats rounded to the nearest tick, ties
//!   away from zero), then added, so a pack's relative times never drift.
//!   A resolved time below 2^28 s (including 0, negative or absent) is
//!   relative to `now`, as RFC 8428 §4.5.3 says.
//! - Value: `bv + v`, else `vb` (true → 1.0, false → 0.0), else `bs + s`.
//!   `vs`/`vd` without `v` is `wrong_type`; nothing is `missing_field`.
//! - One field per record: records with the same key and resolved time are
//!   grouped into one sample, in order of first appearance. A group that
//!   lacks one of the source's fields is a `missing_field` error (reported at
//!   the group's first record); a field given twice for one key and time is
//!   `duplicate_field` and drops the group.
//!
//! ## Errors
//! [`Decoder::decode`] returns `Err` when the message as a whole is bad
//! (oversized, malformed, too many records, bad topic, bad SenML base field):
//! nothing from it is used. Otherwise each bad record leaves one error in
//! [`Batch::errors`] and the good records are samples. Each error has a
//! stable [`DecodeError::reason`] for counters. A dead-letter record of a
//! message with record errors should keep the payload and the errors: its
//! good records have been used.
//!
//! ## Example
//! ```
//! use weir_agent::decode::{Batch, DecoderConfig};
//! use weir_core::time::TimeUnit;
//!
//! let cfg: DecoderConfig = toml::from_str(r#"format = "senml_json""#).unwrap();
//! let dec = cfg.build(&["temp".into(), "hum".into()], TimeUnit::Millis).unwrap();
//! let mut batch = Batch::new(); // reuse it for every message
//! let payload = br#"[{"bn":"dev7/","bt":1700000000,"n":"temp","v":21.5},
//!                    {"n":"hum","v":40},
//!                    {"n":"temp","t":1,"v":"warm"}]"#;
//! let now = 1_700_000_000_500;
//! dec.decode("site/gw-1/senml", payload, now, &mut batch).unwrap();
//! let s = batch.get(0);
//! assert_eq!((s.key, s.ts, s.values), ("dev7", 1_700_000_000_000, &[21.5, 40.0][..]));
//! // then, per sample: engine.handle_sample(now, "sensors", s.key, s.ts, s.values)
//! assert_eq!(batch.len(), 1);
//! assert_eq!(batch.errors()[0].reason(), "wrong_type");
//! assert_eq!(batch.errors()[0].to_string(), "record 2: `v`: expected a number, found a string");
//! ```

mod cbor;
mod json;
mod scan;
mod senml;
mod time;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;
use weir_core::time::TimeUnit;

pub use time::TsUnit;

/// A payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A JSON object, or an array of them.
    Json,
    /// A CBOR map with text keys, or an array of them.
    Cbor,
    /// SenML (RFC 8428) in JSON.
    SenmlJson,
    /// SenML (RFC 8428) in CBOR, with the RFC's integer labels.
    SenmlCbor,
}

impl Format {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cbor => "cbor",
            Format::SenmlJson => "senml_json",
            Format::SenmlCbor => "senml_cbor",
        }
    }
}

fn default_max_payload() -> usize {
    64 * 1024
}
fn default_max_records() -> usize {
    1000
}
fn default_separators() -> String {
    ":/".into()
}

/// How a source's payloads are decoded (see the [module docs](self) for the
/// TOML shape and the semantics).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// The payload format.
    pub format: Format,
    /// Dot path of the key (JSON, CBOR).
    #[serde(default)]
    pub key: Option<String>,
    /// Take the key from this `/`-separated segment of the topic (0-based).
    #[serde(default)]
    pub key_from_topic: Option<usize>,
    /// Use this key for every sample.
    #[serde(default)]
    pub key_const: Option<String>,
    /// Dot path of the timestamp (JSON, CBOR); without it samples are
    /// stamped with `now`.
    #[serde(default)]
    pub ts: Option<String>,
    /// Unit of integer timestamps in the payload (JSON, CBOR).
    #[serde(default)]
    pub ts_unit: TsUnit,
    /// Pipeline field → dot path (JSON, CBOR) or SenML name (SenML). A field
    /// not listed is looked up by its own name.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Larger payloads are rejected before parsing.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Messages with more records are rejected.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// SenML: characters at which a record name splits into key and field.
    #[serde(default = "default_separators")]
    pub name_separators: String,
    /// Dot paths of text values read per record besides the key (JSON,
    /// CBOR): a SQL `WHERE` on a STRING column ([`Batch::text`]). Set by
    /// the SQL front end, not in TOML.
    #[serde(skip)]
    pub texts: Vec<String>,
    /// A field that is absent or `null` (JSON, CBOR), or missing from a
    /// SenML group, is `NULL`: a NaN in the sample, for a source whose
    /// fields are nullable (`SourceSpec::nullable`), where it would
    /// otherwise be `missing_field` or `wrong_type`. Set by the SQL front
    /// end (Flink's `NULL` columns), not in TOML.
    #[serde(skip)]
    pub nulls: bool,
}

impl DecoderConfig {
    /// A configuration with defaults and no key: set one before building.
    pub fn new(format: Format) -> Self {
        DecoderConfig {
            format,
            key: None,
            key_from_topic: None,
            key_const: None,
            ts: None,
            ts_unit: TsUnit::default(),
            fields: BTreeMap::new(),
            max_payload: default_max_payload(),
            max_records: default_max_records(),
            name_separators: default_separators(),
            texts: Vec::new(),
            nulls: false,
        }
    }

    /// Checks the configuration against the source's `fields` (in the order
    /// the engine expects them) and the pipeline's time unit.
    ///
    /// # Errors
    /// A [`DecoderConfigError`] that says what to change.
    pub fn build(&self, fields: &[String], unit: TimeUnit) -> Result<Decoder, DecoderConfigError> {
        let err = |m: String| Err(DecoderConfigError(m));
        let senml = matches!(self.format, Format::SenmlJson | Format::SenmlCbor);
        // A JSON or CBOR source may carry events alone (key and time: a
        // SQL table without a numeric column); SenML records are values.
        if fields.is_empty() && senml {
            return err("the source has no fields".into());
        }
        if fields.len() > 64 {
            return err(format!("{} fields; at most 64 per source", fields.len()));
        }
        if let Some(f) = self.fields.keys().find(|f| !fields.contains(f)) {
            return err(format!(
                "`fields` maps `{f}`, which is not one of the source's fields {fields:?}"
            ));
        }
        let given = [
            self.key.is_some(),
            self.key_from_topic.is_some(),
            self.key_const.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return err("give only one of key, key_from_topic, key_const".into());
        }
        let key = match (&self.key, self.key_from_topic, &self.key_const) {
            (Some(_), ..) if senml => return err(
                "SenML keys come from record names: use key_from_topic or key_const, or neither"
                    .into(),
            ),
            (Some(_), ..) => KeyFrom::Path,
            (_, Some(i), _) => KeyFrom::Topic(i),
            (.., Some(c)) if c.is_empty() => return err("key_const is empty".into()),
            (.., Some(c)) => KeyFrom::Const(c.clone()),
            _ if senml => KeyFrom::Name,
            _ => return err(
                "say where the key is: key = \"path\", key_from_topic = N or key_const = \"name\""
                    .into(),
            ),
        };
        if senml && self.ts.is_some() {
            return err("SenML times come from bt/t: remove `ts`".into());
        }
        if self.max_records == 0 {
            return err("max_records must be at least 1".into());
        }
        if senml && key == KeyFrom::Name && self.name_separators.is_empty() {
            return err(
                "name_separators is empty: records could not be split into key and field".into(),
            );
        }
        let mut plan = Plan {
            nodes: vec![Node::default()],
            paths: Vec::new(),
        };
        let mut names = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let p = self.fields.get(f).unwrap_or(f);
            if senml {
                names.push(p.clone());
            } else {
                plan.insert(p, Target::Field(i))?;
            }
        }
        if let Some(i) = (1..names.len()).find(|&i| names[..i].contains(&names[i])) {
            let j = names[..i].iter().position(|n| *n == names[i]).unwrap_or(0);
            return err(format!(
                "fields `{}` and `{}` both read SenML name `{}`: each field needs its own name",
                fields[j], fields[i], names[i]
            ));
        }
        if senml && !self.texts.is_empty() {
            return err(
                "SenML records carry one value per name: text columns are read from JSON or CBOR records only"
                    .into(),
            );
        }
        if !senml {
            for (i, p) in self.texts.iter().enumerate() {
                plan.insert(p, Target::Text(2 + fields.len() + i))?;
            }
            if let Some(k) = &self.key {
                plan.insert(k, Target::Key)?;
            }
            if let Some(t) = &self.ts {
                plan.insert(t, Target::Ts)?;
            }
        }
        Ok(Decoder {
            format: self.format,
            unit,
            ts_unit: self.ts_unit,
            key,
            has_ts: self.ts.is_some(),
            fields: fields.to_vec(),
            texts: self.texts.len(),
            nulls: self.nulls,
            names,
            plan,
            separators: self.name_separators.clone(),
            max_payload: self.max_payload,
            max_records: self.max_records,
        })
    }
}

/// A [`DecoderConfig`] that cannot work; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecoderConfigError(pub String);

/// Why a message or a record could not be decoded. Record indexes are
/// 0-based positions in the message (an array element, a SenML record).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is larger than `max_payload`.
    #[error("payload of {len} bytes is over the limit of {max} bytes")]
    Oversized {
        /// Payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON / CBOR at all, or not of the expected shape at the top.
    #[error("not valid {format}: {detail}")]
    Malformed {
        /// `JSON` or `CBOR`.
        format: &'static str,
        /// The parser's message, with its position.
        detail: String,
    },
    /// More records than `max_records`.
    #[error("more than {max} records in one message")]
    TooManyRecords {
        /// The limit.
        max: usize,
    },
    /// `key_from_topic` names a segment the topic does not have (or an empty one).
    #[error("topic `{topic}` has no segment {index} to take the key from")]
    BadTopic {
        /// The topic.
        topic: String,
        /// The configured segment.
        index: usize,
    },
    /// A value of the wrong type.
    #[error("record {record}: `{at}`: expected {expected}, found {found}")]
    WrongType {
        /// Record index.
        record: usize,
        /// Path or SenML label.
        at: Box<str>,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// A configured path or a needed label is absent.
    #[error("record {record}: `{at}` is missing")]
    MissingField {
        /// Record index.
        record: usize,
        /// Path, SenML label or pipeline field.
        at: Box<str>,
    },
    /// NaN or ±infinity.
    #[error("record {record}: `{at}` is not finite")]
    NonFinite {
        /// Record index.
        record: usize,
        /// Path or SenML label.
        at: Box<str>,
    },
    /// A timestamp string that is not RFC 3339 with an offset.
    #[error("record {record}: `{at}`: `{text}` is not an RFC 3339 time with an offset (or send an integer)")]
    TimestampUnparseable {
        /// Record index.
        record: usize,
        /// Path.
        at: Box<str>,
        /// The text (at most 64 bytes of it).
        text: Box<str>,
    },
    /// A timestamp that does not fit 64-bit ticks of the pipeline unit.
    #[error("record {record}: `{at}`: timestamp out of range")]
    TimestampOutOfRange {
        /// Record index.
        record: usize,
        /// Path or SenML label.
        at: Box<str>,
    },
    /// SenML: the same field twice for one key and time.
    #[error("record {record}: field `{field}` given twice for the same key and time")]
    DuplicateField {
        /// Record index (the second one).
        record: usize,
        /// Pipeline field.
        field: Box<str>,
    },
    /// SenML: a name with no key/field separator, or an empty part.
    #[error("record {record}: SenML name `{name}` does not split into key and field at `name_separators`")]
    BadName {
        /// Record index.
        record: usize,
        /// The resolved name (at most 64 bytes of it).
        name: Box<str>,
    },
    /// SenML: a must-understand label (ending in `_`) this decoder does not know.
    #[error("record {record}: unknown must-understand SenML label `{label}`")]
    UnsupportedLabel {
        /// Record index.
        record: usize,
        /// The label.
        label: Box<str>,
    },
    /// SenML: a `bver` above 10, the version RFC 8428 defines.
    #[error(
        "record {record}: SenML version {version} is newer than 10, the one this decoder reads"
    )]
    UnsupportedVersion {
        /// Record index.
        record: usize,
        /// The version.
        version: i64,
    },
}

impl DecodeError {
    /// Every [`reason`](Self::reason), for registering counters up front.
    pub const REASONS: [&'static str; 13] = [
        "oversized",
        "malformed",
        "too_many_records",
        "bad_topic",
        "wrong_type",
        "missing_field",
        "non_finite",
        "timestamp_unparseable",
        "timestamp_out_of_range",
        "duplicate_field",
        "bad_name",
        "unsupported_label",
        "unsupported_version",
    ];

    /// A stable snake_case name for counters and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::TooManyRecords { .. } => "too_many_records",
            DecodeError::BadTopic { .. } => "bad_topic",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::NonFinite { .. } => "non_finite",
            DecodeError::TimestampUnparseable { .. } => "timestamp_unparseable",
            DecodeError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            DecodeError::DuplicateField { .. } => "duplicate_field",
            DecodeError::BadName { .. } => "bad_name",
            DecodeError::UnsupportedLabel { .. } => "unsupported_label",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }

    /// The record the error is about, if it is about one.
    pub fn record(&self) -> Option<usize> {
        match self {
            DecodeError::Oversized { .. }
            | DecodeError::Malformed { .. }
            | DecodeError::TooManyRecords { .. }
            | DecodeError::BadTopic { .. } => None,
            DecodeError::WrongType { record, .. }
            | DecodeError::MissingField { record, .. }
            | DecodeError::NonFinite { record, .. }
            | DecodeError::TimestampUnparseable { record, .. }
            | DecodeError::TimestampOutOfRange { record, .. }
            | DecodeError::DuplicateField { record, .. }
            | DecodeError::BadName { record, .. }
            | DecodeError::UnsupportedLabel { record, .. }
            | DecodeError::UnsupportedVersion { record, .. } => Some(*record),
        }
    }
}

/// At most 64 bytes of outside text for an error message, cut at a char
/// boundary.
pub(crate) fn clip(s: &str) -> Box<str> {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyFrom {
    Path,
    Topic(usize),
    Const(String),
    /// SenML: from the record name.
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Key,
    Ts,
    Field(usize),
    /// A text value, by its slot (after the fields').
    Text(usize),
}

impl Target {
    /// Index in [`Scratch::slots`] (generic decoders).
    fn slot(self) -> usize {
        match self {
            Target::Key => 0,
            Target::Ts => 1,
            Target::Field(i) => 2 + i,
            Target::Text(s) => s,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub(crate) children: Vec<(Box<str>, usize)>,
    pub(crate) target: Option<Target>,
    /// The dot path to here, for errors.
    pub(crate) path: Box<str>,
}

/// The configured paths as a trie, so one pass over a document fills every
/// slot and skips everything else unparsed.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) nodes: Vec<Node>,
    /// Path of each slot, for errors.
    paths: Vec<(Target, Box<str>)>,
}

impl Plan {
    fn insert(&mut self, path: &str, t: Target) -> Result<(), DecoderConfigError> {
        let bad = |m: &str| Err(DecoderConfigError(format!("path `{path}`: {m}")));
        if path.split('.').any(str::is_empty) {
            return bad("empty segment; write paths as `a.b.c`");
        }
        let mut n = 0;
        for seg in path.split('.') {
            if self.nodes[n].target.is_some() {
                return bad("goes inside another configured path");
            }
            n = match self.child(n, seg) {
                Some(c) => c,
                None => {
                    self.nodes.push(Node {
                        path: if n == 0 {
                            seg.into()
                        } else {
                            format!("{}.{seg}", self.nodes[n].path).into()
                        },
                        ..Node::default()
                    });
                    let c = self.nodes.len() - 1;
                    self.nodes[n].children.push((seg.into(), c));
                    c
                }
            };
        }
        if self.nodes[n].target.is_some() || !self.nodes[n].children.is_empty() {
            return bad("overlaps another configured path");
        }
        self.nodes[n].target = Some(t);
        self.paths.push((t, path.into()));
        Ok(())
    }

    pub(crate) fn child(&self, node: usize, key: &str) -> Option<usize> {
        self.nodes[node]
            .children
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, c)| *c)
    }

    fn path(&self, t: Target) -> Box<str> {
        self.paths
            .iter()
            .find(|(x, _)| *x == t)
            .map_or_else(|| "?".into(), |(_, p)| p.clone())
    }
}

/// One leaf value as found in the payload, before validation. Strings live
/// in [`Scratch::text`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) enum Scalar {
    #[default]
    Absent,
    Int(i64),
    /// Above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(usize, usize),
    Bool(bool),
    /// CBOR tag 1 over an integer.
    EpochSecs(i64),
    /// Anything else, by name ("null", "an array", …).
    Other(&'static str),
}

impl Scalar {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Scalar::Absent => "nothing",
            Scalar::Int(_) | Scalar::UInt(_) | Scalar::EpochSecs(_) => "an integer",
            Scalar::Float(_) => "a float",
            Scalar::Str(..) => "a string",
            Scalar::Bool(_) => "a boolean",
            Scalar::Other(t) => t,
        }
    }

    /// Any number as `f64` (`None` for non-numbers).
    pub(crate) fn number(self) -> Option<f64> {
        match self {
            Scalar::Int(v) | Scalar::EpochSecs(v) => Some(v as f64),
            Scalar::UInt(v) => Some(v as f64),
            Scalar::Float(v) => Some(v),
            _ => None,
        }
    }
}

/// Per-record working space, reused across records and messages.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) slots: Vec<Scalar>,
    pub(crate) text: String,
    /// The first error found while walking the record.
    pub(crate) err: Option<DecodeError>,
    pub(crate) record: usize,
    /// SenML: the current base name and the resolved name.
    pub(crate) bn: String,
    pub(crate) name: String,
    /// SenML: a `vs` or `vd` label was present.
    pub(crate) has_vs: bool,
    /// SenML: an unknown must-understand label.
    pub(crate) must_understand: Option<Box<str>>,
}

impl Scratch {
    pub(crate) fn reset(&mut self, n: usize, record: usize) {
        self.slots.clear();
        self.slots.resize(n, Scalar::Absent);
        self.text.clear();
        self.err = None;
        self.record = record;
        self.has_vs = false;
        self.must_understand = None;
    }

    pub(crate) fn str(&self, s: Scalar) -> &str {
        Self::slice(&self.text, s)
    }

    fn slice(text: &str, s: Scalar) -> &str {
        match s {
            Scalar::Str(a, b) => &text[a..b],
            _ => "",
        }
    }

    pub(crate) fn push_str(&mut self, s: &str) -> Scalar {
        let a = self.text.len();
        self.text.push_str(s);
        Scalar::Str(a, self.text.len())
    }

    /// Notes a type error at a trie node (an object expected), keeping the first.
    pub(crate) fn wrong_node(&mut self, path: &str, found: &'static str) {
        if self.err.is_none() {
            self.err = Some(DecodeError::WrongType {
                record: self.record,
                at: if path.is_empty() {
                    "(record)".into()
                } else {
                    path.into()
                },
                expected: "an object/map",
                found,
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (usize, usize),
    /// [`fnv`] of the key (SenML grouping only).
    hash: u64,
    ts: i64,
    /// Bit i: field i is set.
    seen: u64,
    record: usize,
    poisoned: bool,
}

/// Decoded samples of one message, reused across messages so that decoding
/// does not allocate once the buffers have grown.
#[derive(Debug, Default)]
pub struct Batch {
    width: usize,
    entries: Vec<Entry>,
    keys: String,
    /// `width` values per entry.
    values: Vec<f64>,
    /// Text values per entry ([`Batch::text`]).
    ntexts: usize,
    /// `ntexts` ranges of `text` per entry; `NULL_TEXT` for none.
    text_at: Vec<(u32, u32)>,
    text: String,
    /// Scratch of [`Batch::widen`].
    extra: Vec<f64>,
    errors: Vec<DecodeError>,
    records: usize,
    ignored: usize,
    /// (key hash, ts) → entry, for SenML grouping in long packs.
    index: HashMap<(u64, i64), usize, BuildHasherDefault<MixHasher>>,
    indexed: usize,
    pub(crate) scratch: Scratch,
}

/// One decoded sample, borrowed from a [`Batch`]. `values` are in the order
/// of the source's `fields`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef<'a> {
    /// The key (sensor id).
    pub key: &'a str,
    /// Timestamp in the pipeline's unit.
    pub ts: i64,
    /// One value per source field.
    pub values: &'a [f64],
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`th sample, in payload order.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> SampleRef<'_> {
        let e = &self.entries[i];
        SampleRef {
            key: &self.keys[e.key.0..e.key.1],
            ts: e.ts,
            values: &self.values[i * self.width..(i + 1) * self.width],
        }
    }

    /// The samples, in payload order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SampleRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Text value `j` of sample `i` (the decoder's configured text paths,
    /// [`DecoderConfig::texts`]): `None` when the record has none there
    /// or `null` (SQL's `NULL`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn text(&self, i: usize, j: usize) -> Option<&str> {
        if j >= self.ntexts {
            return None;
        }
        let (a, b) = self.text_at[i * self.ntexts + j];
        (a != NULL_TEXT).then(|| &self.text[a as usize..b as usize])
    }

    /// Keeps the samples for which `keep(batch, i)` is true, in order;
    /// returns how many were dropped. Keeps the buffers.
    pub fn retain(&mut self, mut keep: impl FnMut(&Batch, usize) -> bool) -> usize {
        let (w, t) = (self.width, self.ntexts);
        let n = self.entries.len();
        let mut k = 0;
        for i in 0..n {
            if !keep(self, i) {
                continue;
            }
            if k != i {
                self.entries[k] = self.entries[i];
                self.values.copy_within(i * w..(i + 1) * w, k * w);
                self.text_at.copy_within(i * t..(i + 1) * t, k * t);
            }
            k += 1;
        }
        self.entries.truncate(k);
        self.values.truncate(k * w);
        self.text_at.truncate(k * t);
        self.index.clear();
        self.indexed = 0;
        n - k
    }

    /// Appends `k` values to every sample's, which `fill(batch, i, out)`
    /// writes for sample `i` (SQL fields computed from the text columns
    /// before the journal); later [`Batch::get`]s include them. Keeps the
    /// buffers.
    pub fn widen(&mut self, k: usize, mut fill: impl FnMut(&Batch, usize, &mut [f64])) {
        if k == 0 {
            return;
        }
        let (w, n) = (self.width, self.entries.len());
        let nw = w + k;
        self.values.resize(n * nw, f64::NAN);
        // From the last sample down: a move never lands on one not moved.
        for i in (0..n).rev() {
            self.values.copy_within(i * w..(i + 1) * w, i * nw);
        }
        self.width = nw;
        let mut extra = std::mem::take(&mut self.extra);
        extra.clear();
        extra.resize(k, f64::NAN);
        for i in 0..n {
            fill(self, i, &mut extra);
            self.values[i * nw + w..(i + 1) * nw].copy_from_slice(&extra);
        }
        self.extra = extra;
    }

    /// Gives every sample the key `key(batch, i, out)` writes into `out`
    /// (cleared first): SQL's composite key of several `GROUP BY` columns,
    /// made from the text columns before the journal.
    pub fn rekey(&mut self, mut key: impl FnMut(&Batch, usize, &mut String)) {
        let mut keys = String::with_capacity(self.keys.len() * 2);
        let mut ranges = Vec::with_capacity(self.entries.len());
        let mut k = String::new();
        for i in 0..self.entries.len() {
            k.clear();
            key(self, i, &mut k);
            let a = keys.len();
            keys.push_str(&k);
            ranges.push((a, keys.len()));
        }
        for (e, r) in self.entries.iter_mut().zip(ranges) {
            e.key = r;
            e.hash = fnv(&keys[r.0..r.1]);
        }
        self.keys = keys;
    }

    /// Errors of single records; the other records are samples.
    pub fn errors(&self) -> &[DecodeError] {
        &self.errors
    }

    /// Records in the message (JSON/CBOR objects, SenML records).
    pub fn records(&self) -> usize {
        self.records
    }

    /// SenML records skipped because their name matches no source field.
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.values.clear();
        self.text_at.clear();
        self.text.clear();
        self.errors.clear();
        self.records = 0;
        self.ignored = 0;
        self.index.clear();
        self.indexed = 0;
    }

    fn begin(&mut self, width: usize, ntexts: usize) {
        self.clear();
        self.width = width;
        self.ntexts = ntexts;
    }

    pub(crate) fn error(&mut self, e: DecodeError) {
        self.errors.push(e);
    }

    fn key_range(&mut self, key: &str) -> (usize, usize) {
        // Packs usually repeat one key: share its bytes.
        if let Some(e) = self.entries.last() {
            if &self.keys[e.key.0..e.key.1] == key {
                return e.key;
            }
        }
        let a = self.keys.len();
        self.keys.push_str(key);
        (a, self.keys.len())
    }

    fn key_of(&self, e: usize) -> &str {
        let k = self.entries[e].key;
        &self.keys[k.0..k.1]
    }

    /// Finds or opens the sample for `(key, ts)` (SenML grouping).
    pub(crate) fn group(&mut self, key: &str, ts: i64, record: usize) -> usize {
        let n = self.entries.len();
        if n > 0 && self.entries[n - 1].ts == ts && self.key_of(n - 1) == key {
            return n - 1;
        }
        let h = fnv(key);
        let found = if n <= 16 {
            (0..n)
                .rev()
                .find(|&i| self.entries[i].ts == ts && self.key_of(i) == key)
        } else {
            if self.indexed == 0 {
                for i in 0..n {
                    self.index
                        .insert((self.entries[i].hash, self.entries[i].ts), i);
                }
                self.indexed = n;
            }
            match self.index.get(&(h, ts)) {
                Some(&i) if self.key_of(i) == key => Some(i),
                // A hash collision replaced the entry: fall back to a scan.
                Some(_) => (0..n)
                    .rev()
                    .find(|&i| self.entries[i].ts == ts && self.key_of(i) == key),
                None => None,
            }
        };
        if let Some(i) = found {
            return i;
        }
        let key = self.key_range(key);
        self.entries.push(Entry {
            key,
            hash: h,
            ts,
            seen: 0,
            record,
            poisoned: false,
        });
        self.values.resize(self.values.len() + self.width, f64::NAN);
        if self.indexed > 0 {
            self.index.insert((h, ts), n);
            self.indexed += 1;
        }
        n
    }

    /// Sets field `f` of sample `i`; `false` if it was already set.
    pub(crate) fn set(&mut self, i: usize, f: usize, v: f64) -> bool {
        let e = &mut self.entries[i];
        if e.seen & (1 << f) != 0 {
            return false;
        }
        e.seen |= 1 << f;
        self.values[i * self.width + f] = v;
        true
    }

    pub(crate) fn poison(&mut self, i: usize) {
        self.entries[i].poisoned = true;
    }

    /// Ends SenML grouping: drops poisoned groups, reports and drops
    /// incomplete ones, or with `nulls` ([`DecoderConfig::nulls`]) gives
    /// their missing fields a NaN (`NULL`).
    pub(crate) fn finish_groups(&mut self, fields: &[String], nulls: bool) {
        let full = if self.width == 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        };
        let w = self.width;
        let mut keep = 0;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if e.poisoned {
                continue;
            }
            if e.seen != full && nulls {
                for f in (0..w).filter(|f| e.seen & (1 << f) == 0) {
                    self.values[i * w + f] = f64::NAN;
                }
            } else if e.seen != full {
                let missing = (0..w).find(|f| e.seen & (1 << f) == 0).unwrap_or(0);
                self.errors.push(DecodeError::MissingField {
                    record: e.record,
                    at: fields[missing].as_str().into(),
                });
                continue;
            }
            if keep != i {
                self.entries[keep] = e;
                self.values.copy_within(i * w..(i + 1) * w, keep * w);
            }
            keep += 1;
        }
        self.entries.truncate(keep);
        self.values.truncate(keep * w);
        self.index.clear();
        self.indexed = 0;
    }

    /// Appends a complete sample (JSON/CBOR records).
    fn push(&mut self, key: &str, ts: i64, record: usize) -> usize {
        let key = self.key_range(key);
        self.entries.push(Entry {
            key,
            hash: 0,
            ts,
            seen: u64::MAX,
            record,
            poisoned: false,
        });
        self.values.resize(self.values.len() + self.width, f64::NAN);
        self.text_at
            .resize(self.text_at.len() + self.ntexts, (NULL_TEXT, NULL_TEXT));
        self.entries.len() - 1
    }
}

/// A text range that stands for no value.
const NULL_TEXT: u32 = u32::MAX;

/// A cheap hasher for the grouping index, whose keys are already hashes
/// and timestamps (FxHash's mixing step). Collisions only cost a scan.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a message shares across its records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) now: i64,
    /// The key from the topic or the config, if not from the payload.
    pub(crate) key: Option<&'a str>,
}

/// A built decoder for one source. Stateless between messages: share it.
#[derive(Debug, Clone)]
pub struct Decoder {
    format: Format,
    unit: TimeUnit,
    ts_unit: TsUnit,
    key: KeyFrom,
    has_ts: bool,
    fields: Vec<String>,
    /// Text values per record ([`DecoderConfig::texts`]).
    texts: usize,
    /// [`DecoderConfig::nulls`].
    nulls: bool,
    /// SenML name of each field.
    names: Vec<String>,
    plan: Plan,
    separators: String,
    max_payload: usize,
    max_records: usize,
}

impl Decoder {
    /// The payload format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether readings carry their own time (a `ts` path, or SenML
    /// times) rather than being stamped on arrival.
    pub fn has_timestamp(&self) -> bool {
        self.has_ts || matches!(self.format, Format::SenmlJson | Format::SenmlCbor)
    }

    /// Decodes one message into `out` (cleared first). `now` is the driver's
    /// clock in the pipeline unit: the timestamp when the config has no `ts`
    /// path, and the reference of relative SenML times.
    ///
    /// # Errors
    /// A [`DecodeError`] when the whole message is unusable; `out` is then
    /// empty. Bad single records are in [`Batch::errors`] instead.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        now: i64,
        out: &mut Batch,
    ) -> Result<(), DecodeError> {
        out.begin(self.fields.len(), self.texts);
        if payload.len() > self.max_payload {
            return Err(DecodeError::Oversized {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let key = match &self.key {
            KeyFrom::Topic(i) => match topic.split('/').nth(*i) {
                Some(s) if !s.is_empty() => Some(s),
                _ => {
                    return Err(DecodeError::BadTopic {
                        topic: topic.into(),
                        index: *i,
                    })
                }
            },
            KeyFrom::Const(c) => Some(c.as_str()),
            KeyFrom::Path | KeyFrom::Name => None,
        };
        let ctx = Ctx { now, key };
        let r = match self.format {
            Format::Json => json::decode(self, &ctx, payload, out),
            Format::Cbor => cbor::decode(self, &ctx, payload, out),
            Format::SenmlJson => senml::decode_json(self, &ctx, payload, out),
            Format::SenmlCbor => senml::decode_cbor(self, &ctx, payload, out),
        };
        if r.is_err() {
            let (w, t) = (out.width, out.ntexts);
            out.begin(w, t);
        }
        r
    }

    /// Checks the record count as records are met.
    pub(crate) fn check_records(&self, n: usize) -> Result<(), DecodeError> {
        if n > self.max_records {
            Err(DecodeError::TooManyRecords {
                max: self.max_records,
            })
        } else {
            Ok(())
        }
    }

    /// Slots per record for the generic decoders.
    pub(crate) fn slot_count(&self) -> usize {
        2 + self.fields.len() + self.texts
    }

    /// Turns the filled slots of one JSON/CBOR record into a sample or an
    /// error in `out`.
    pub(crate) fn finish_record(&self, ctx: &Ctx<'_>, out: &mut Batch) {
        let rec = out.scratch.record;
        out.records = out.records.max(rec + 1);
        if let Some(e) = out.scratch.err.take() {
            out.errors.push(e);
            return;
        }
        let sc = &out.scratch;
        let at = |t: Target| self.plan.path(t);
        let key = match ctx.key {
            Some(_) => KeyVal::Ctx,
            None => match sc.slots[0] {
                Scalar::Str(a, b) => KeyVal::Scratch(a, b),
                Scalar::Int(v) | Scalar::EpochSecs(v) => KeyVal::Int(v as i128),
                Scalar::UInt(v) => KeyVal::Int(v as i128),
                Scalar::Absent => {
                    return out.errors.push(DecodeError::MissingField {
                        record: rec,
                        at: at(Target::Key),
                    })
                }
                s => {
                    return out.errors.push(DecodeError::WrongType {
                        record: rec,
                        at: at(Target::Key),
                        expected: "a string or an integer",
                        found: s.type_name(),
                    })
                }
            },
        };
        let ts = if !self.has_ts {
            ctx.now
        } else {
            let s = sc.slots[1];
            let t = match s {
                Scalar::Int(v) => time::int_to_ticks(v, self.ts_unit, self.unit),
                Scalar::EpochSecs(v) => time::int_to_ticks(v, TsUnit::Seconds, self.unit),
                Scalar::UInt(_) => None,
                Scalar::Str(..) => match time::parse_rfc3339(sc.str(s), self.unit) {
                    Some(t) => Some(t),
                    None => {
                        let text = clip(sc.str(s));
                        return out.errors.push(DecodeError::TimestampUnparseable {
                            record: rec,
                            at: at(Target::Ts),
                            text,
                        });
                    }
                },
                Scalar::Absent => {
                    return out.errors.push(DecodeError::MissingField {
                        record: rec,
                        at: at(Target::Ts),
                    })
                }
                s => {
                    return out.errors.push(DecodeError::WrongType {
                        record: rec,
                        at: at(Target::Ts),
                        expected: "an integer or an RFC 3339 string",
                        found: s.type_name(),
                    })
                }
            };
            match t {
                Some(t) => t,
                None => {
                    return out.errors.push(DecodeError::TimestampOutOfRange {
                        record: rec,
                        at: at(Target::Ts),
                    })
                }
            }
        };
        for f in 0..self.fields.len() {
            let s = sc.slots[Target::Field(f).slot()];
            let e = match s.number() {
                Some(v) if v.is_finite() => continue,
                Some(_) => DecodeError::NonFinite {
                    record: rec,
                    at: at(Target::Field(f)),
                },
                // NULL: a NaN below.
                None if self.nulls && matches!(s, Scalar::Absent | Scalar::Other("null")) => {
                    continue
                }
                None if s == Scalar::Absent => DecodeError::MissingField {
                    record: rec,
                    at: at(Target::Field(f)),
                },
                None => DecodeError::WrongType {
                    record: rec,
                    at: at(Target::Field(f)),
                    expected: "a number",
                    found: s.type_name(),
                },
            };
            return out.errors.push(e);
        }
        for j in 0..self.texts {
            let t = Target::Text(2 + self.fields.len() + j);
            match sc.slots[t.slot()] {
                Scalar::Absent
                | Scalar::Other("null")
                | Scalar::Str(..)
                | Scalar::Int(_)
                | Scalar::UInt(_)
                | Scalar::Bool(_) => {}
                s => {
                    return out.errors.push(DecodeError::WrongType {
                        record: rec,
                        at: at(t),
                        expected: "a string",
                        found: s.type_name(),
                    })
                }
            }
        }
        let i = match key {
            KeyVal::Ctx => out.push(ctx.key.unwrap_or_default(), ts, rec),
            KeyVal::Scratch(a, b) => {
                let text = std::mem::take(&mut out.scratch.text);
                let i = out.push(&text[a..b], ts, rec);
                out.scratch.text = text;
                i
            }
            KeyVal::Int(v) => {
                let mut buf = [0u8; 24];
                out.push(fmt_int(v, &mut buf), ts, rec)
            }
        };
        let w = self.fields.len();
        for f in 0..w {
            let v = out.scratch.slots[Target::Field(f).slot()]
                .number()
                .unwrap_or(f64::NAN);
            out.values[i * w + f] = v;
        }
        for j in 0..self.texts {
            let s = out.scratch.slots[2 + w + j];
            let a = out.text.len();
            match s {
                Scalar::Str(..) => {
                    let text = std::mem::take(&mut out.scratch.text);
                    out.text.push_str(Scratch::slice(&text, s));
                    out.scratch.text = text;
                }
                Scalar::Int(v) => {
                    let mut buf = [0u8; 24];
                    out.text.push_str(fmt_int(v as i128, &mut buf));
                }
                Scalar::UInt(v) => {
                    let mut buf = [0u8; 24];
                    out.text.push_str(fmt_int(v as i128, &mut buf));
                }
                Scalar::Bool(b) => out.text.push_str(if b { "true" } else { "false" }),
                _ => continue,
            }
            // Payloads are at most `max_payload` bytes: far below 4 GiB.
            out.text_at[i * self.texts + j] = (a as u32, out.text.len() as u32);
        }
    }
}

/// Where a generic record's key is.
enum KeyVal {
    Ctx,
    Scratch(usize, usize),
    /// Written in decimal.
    Int(i128),
}

fn fmt_int(v: i128, buf: &mut [u8; 24]) -> &str {
    use std::io::Write;
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "{v}");
    let n = c.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}
