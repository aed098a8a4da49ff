//! The output envelope: what a gateway sends to the cloud (`docs/wire.md`).
//!
//! One MQTT message carries one [`Batch`] of [`OutputRecord`]s, as CBOR
//! (compact, deterministic: the same batch is always the same bytes) or as
//! JSON for people. Both decoders check every byte and return a
//! [`WireError`] on bad input; neither panics.
//!
//! CBOR layout (integer map keys; unknown keys are skipped on decode so a
//! newer gateway can add fields):
//!
//! | batch key | field | type |
//! |---|---|---|
//! | 0 | format version, `1` | uint |
//! | 1 | gateway id | text |
//! | 2 | records | array of record maps |
//!
//! | record key | field | type |
//! |---|---|---|
//! | 0 | id | text |
//! | 1 | kind: 0 window, 1 alert, 2 status, 3 dropped | uint |
//! | 2 | key (sensor) | text |
//! | 3 | operator id | text |
//! | 4 | window start, ms since the epoch | int |
//! | 5 | window end (exclusive), ms | int |
//! | 6 | fields, name → value, in the operator's order | map text → float |
//! | 7 | anomaly flag (with 8, or neither) | bool |
//! | 8 | anomaly score in \[0, 1\] | float |
//! | 9 | emitted at, ms since the epoch (gateway clock) | int |
//! | 10 | text values, name → text (a SQL result row's `STRING` and `BOOLEAN` columns); only when there are any | map text → text |

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cbor;

/// The envelope's format version (batch key 0).
pub const WIRE_VERSION: u64 = 1;

/// A decode error: what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not the CBOR this module writes.
    #[error("wire CBOR: {0}")]
    Cbor(String),
    /// The JSON is not the form this module writes.
    #[error("wire JSON: {0}")]
    Json(String),
    /// Well-formed, but a field is missing, repeated or out of range.
    #[error("wire: {what} (byte {at})")]
    Invalid {
        /// What was wrong.
        what: String,
        /// Byte offset in the input (0 for JSON).
        at: usize,
    },
}

impl From<minicbor::decode::Error> for WireError {
    fn from(e: minicbor::decode::Error) -> Self {
        WireError::Cbor(e.to_string())
    }
}

/// What an output record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A window's aggregates (CBOR 0).
    Window,
    /// An alert: a window (or sample) the detector flagged (CBOR 1). The
    /// outbox keeps alerts before windows when its budget is reached.
    Alert,
    /// A gateway status record (CBOR 2).
    Status,
    /// How many records the outbox dropped since the last report, per kind
    /// (CBOR 3; fields `window`, `alert`, `status`).
    Dropped,
}

impl RecordKind {
    /// The CBOR code (record key 1).
    pub fn code(self) -> u8 {
        match self {
            RecordKind::Window => 0,
            RecordKind::Alert => 1,
            RecordKind::Status => 2,
            RecordKind::Dropped => 3,
        }
    }

    /// The kind of a CBOR code, if it is one.
    pub fn from_code(c: u64) -> Option<RecordKind> {
        Some(match c {
            0 => RecordKind::Window,
            1 => RecordKind::Alert,
            2 => RecordKind::Status,
            3 => RecordKind::Dropped,
            _ => return None,
        })
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Window => "window",
            RecordKind::Alert => "alert",
            RecordKind::Status => "status",
            RecordKind::Dropped => "dropped",
        }
    }
}

/// A detector's verdict carried by a record.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Whether the detector flagged it.
    pub flag: bool,
    /// The anomaly score in \[0, 1\].
    pub score: f64,
}

/// One output bound for the cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRecord {
    /// Deterministic id (see [`record_id`]): a restart re-emits the same
    /// output under the same id, so consumers drop duplicates by it.
    pub id: String,
    /// What it is.
    pub kind: RecordKind,
    /// The key (sensor id); empty for gateway-wide records.
    pub key: String,
    /// The operator id from the pipeline file; empty when none.
    pub op: String,
    /// Window start, ms since the epoch (0 when not a window).
    pub start: i64,
    /// Window end (exclusive), ms since the epoch.
    pub end: i64,
    /// Named values in the operator's order (aggregates, or counters).
    pub fields: Vec<(String, f64)>,
    /// The detector's verdict, when one ran.
    pub anomaly: Option<Anomaly>,
    /// When the gateway emitted it, ms since the epoch (its wall clock).
    pub emitted_at: i64,
    /// Named text values (a SQL result row's `STRING` and `BOOLEAN`
    /// columns, booleans as `true`/`false`); empty for everything else,
    /// and then not encoded at all (CBOR key 10, JSON `text`).
    pub text: Vec<(String, String)>,
}

/// Many records in one MQTT message.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The gateway that sent it.
    pub gateway: String,
    /// The records, in outbox order (sequence order).
    pub records: Vec<OutputRecord>,
}

fn escape_component(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// One id component, escaped as in [`record_id`].
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_component(&mut out, s);
    out
}

/// The deterministic id of a window output:
/// `gateway/op/key/start` for the first firing and `…/start/uN` for its
/// N-th update (N ≥ 1). `%` and `/` inside a component are written `%25`
/// and `%2F`, so two different outputs never share an id.
pub fn record_id(gateway: &str, op: &str, key: &str, start: i64, update: u32) -> String {
    let mut id = String::with_capacity(gateway.len() + op.len() + key.len() + 24);
    escape_component(&mut id, gateway);
    id.push('/');
    escape_component(&mut id, op);
    id.push('/');
    escape_component(&mut id, key);
    id.push('/');
    id.push_str(&start.to_string());
    if update > 0 {
        id.push_str("/u");
        id.push_str(&update.to_string());
    }
    id
}

impl OutputRecord {
    /// A record from an engine window result. `names` are the operator's
    /// aggregate names (aligned with `w.values`); `update` counts this
    /// window's updates so far (0 for the on-time firing), as the agent
    /// tracks it. A window its detector flagged is an
    /// [`Alert`](RecordKind::Alert), so the outbox keeps it before plain
    /// windows; otherwise a [`Window`](RecordKind::Window).
    pub fn from_window(
        gateway: &str,
        op: &str,
        key: &str,
        w: &weir_core::output::WindowResult,
        names: &[&str],
        update: u32,
        emitted_at: i64,
    ) -> OutputRecord {
        let anomaly = w.anomaly.map(|v| Anomaly {
            flag: v.flag,
            score: v.score,
        });
        let kind = if anomaly.is_some_and(|a| a.flag) {
            RecordKind::Alert
        } else {
            RecordKind::Window
        };
        OutputRecord {
            id: record_id(gateway, op, key, w.start, update),
            kind,
            key: key.to_string(),
            op: op.to_string(),
            start: w.start,
            end: w.end,
            fields: names
                .iter()
                .zip(w.values.as_slice())
                .map(|(n, v)| (n.to_string(), *v))
                .collect(),
            anomaly,
            emitted_at,
            text: Vec::new(),
        }
    }

    /// Appends the record's CBOR map to `out`.
    pub fn encode_cbor_into(&self, out: &mut Vec<u8>) {
        let n = 8 + if self.anomaly.is_some() { 2 } else { 0 } + u64::from(!self.text.is_empty());
        cbor::map(out, n);
        cbor::uint(out, 0);
        cbor::text(out, &self.id);
        cbor::uint(out, 1);
        cbor::uint(out, u64::from(self.kind.code()));
        cbor::uint(out, 2);
        cbor::text(out, &self.key);
        cbor::uint(out, 3);
        cbor::text(out, &self.op);
        cbor::uint(out, 4);
        cbor::int(out, self.start);
        cbor::uint(out, 5);
        cbor::int(out, self.end);
        cbor::uint(out, 6);
        cbor::map(out, self.fields.len() as u64);
        for (name, v) in &self.fields {
            cbor::text(out, name);
            cbor::float(out, *v);
        }
        if let Some(a) = self.anomaly {
            cbor::uint(out, 7);
            cbor::bool(out, a.flag);
            cbor::uint(out, 8);
            cbor::float(out, a.score);
        }
        cbor::uint(out, 9);
        cbor::int(out, self.emitted_at);
        if !self.text.is_empty() {
            cbor::uint(out, 10);
            cbor::map(out, self.text.len() as u64);
            for (name, v) in &self.text {
                cbor::text(out, name);
                cbor::text(out, v);
            }
        }
    }

    /// The record alone as CBOR (what the outbox stores).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 16 * self.fields.len());
        self.encode_cbor_into(&mut out);
        out
    }

    /// Decodes one record map (as written by [`OutputRecord::to_cbor`]).
    ///
    /// # Errors
    /// [`WireError`] when the bytes are not one complete record.
    pub fn from_cbor(bytes: &[u8]) -> Result<OutputRecord, WireError> {
        let mut d = minicbor::Decoder::new(bytes);
        let r = decode_record(&mut d)?;
        trailing(&d, bytes)?;
        Ok(r)
    }

    /// The JSON form of the record alone.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (string keys, no maps with
        // non-string keys); fall back to an empty object rather than panic.
        serde_json::to_string(&JsonRecord::from(self)).unwrap_or_else(|_| "{}".into())
    }

    /// Decodes the JSON form of one record.
    ///
    /// # Errors
    /// [`WireError::Json`] on bad JSON or a missing field.
    pub fn from_json(s: &str) -> Result<OutputRecord, WireError> {
        let j: JsonRecord = serde_json::from_str(s).map_err(|e| WireError::Json(e.to_string()))?;
        Ok(j.into())
    }
}

fn invalid(what: impl Into<String>, at: usize) -> WireError {
    WireError::Invalid {
        what: what.into(),
        at,
    }
}

fn trailing(d: &minicbor::Decoder<'_>, bytes: &[u8]) -> Result<(), WireError> {
    if d.position() != bytes.len() {
        return Err(invalid(
            format!("{} trailing bytes", bytes.len() - d.position()),
            d.position(),
        ));
    }
    Ok(())
}

fn definite(len: Option<u64>, what: &str, at: usize) -> Result<u64, WireError> {
    len.ok_or_else(|| invalid(format!("{what} of indefinite length"), at))
}

fn decode_record(d: &mut minicbor::Decoder<'_>) -> Result<OutputRecord, WireError> {
    let at = d.position();
    let n = definite(d.map()?, "record map", at)?;
    let mut seen = 0u16;
    let mut id = None;
    let mut kind = None;
    let mut key = None;
    let mut op = None;
    let mut start = None;
    let mut end = None;
    let mut fields = None;
    let mut flag = None;
    let mut score = None;
    let mut emitted_at = None;
    let mut text = Vec::new();
    for _ in 0..n {
        let kat = d.position();
        let k = d.u64()?;
        if k < 16 {
            if seen & (1 << k) != 0 {
                return Err(invalid(format!("record key {k} repeated"), kat));
            }
            seen |= 1 << k;
        }
        match k {
            0 => id = Some(d.str()?.to_string()),
            1 => {
                let p = d.position();
                let c = d.u64()?;
                kind = Some(
                    RecordKind::from_code(c)
                        .ok_or_else(|| invalid(format!("unknown record kind {c}"), p))?,
                );
            }
            2 => key = Some(d.str()?.to_string()),
            3 => op = Some(d.str()?.to_string()),
            4 => start = Some(d.i64()?),
            5 => end = Some(d.i64()?),
            6 => {
                let p = d.position();
                let m = definite(d.map()?, "fields map", p)?;
                // Never trust a declared length for an allocation.
                let mut fs: Vec<(String, f64)> = Vec::with_capacity(m.min(64) as usize);
                for _ in 0..m {
                    let np = d.position();
                    let name = d.str()?;
                    if fs.iter().any(|(n, _)| n == name) {
                        return Err(invalid(format!("field {name:?} repeated"), np));
                    }
                    fs.push((name.to_string(), d.f64()?));
                }
                fields = Some(fs);
            }
            7 => flag = Some(d.bool()?),
            8 => score = Some(d.f64()?),
            9 => emitted_at = Some(d.i64()?),
            10 => {
                let p = d.position();
                let m = definite(d.map()?, "text map", p)?;
                text = Vec::with_capacity(m.min(64) as usize);
                for _ in 0..m {
                    let np = d.position();
                    let name = d.str()?;
                    if text.iter().any(|(n, _): &(String, String)| n == name) {
                        return Err(invalid(format!("text {name:?} repeated"), np));
                    }
                    text.push((name.to_string(), d.str()?.to_string()));
                }
            }
            _ => d.skip()?,
        }
    }
    let need = |name: &str| invalid(format!("record without {name}"), at);
    let anomaly = match (flag, score) {
        (Some(flag), Some(score)) => Some(Anomaly { flag, score }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "anomaly flag (7) and score (8) must come together",
                at,
            ))
        }
    };
    Ok(OutputRecord {
        id: id.ok_or_else(|| need("id (0)"))?,
        kind: kind.ok_or_else(|| need("kind (1)"))?,
        key: key.ok_or_else(|| need("key (2)"))?,
        op: op.ok_or_else(|| need("op (3)"))?,
        start: start.ok_or_else(|| need("start (4)"))?,
        end: end.ok_or_else(|| need("end (5)"))?,
        fields: fields.ok_or_else(|| need("fields (6)"))?,
        anomaly,
        emitted_at: emitted_at.ok_or_else(|| need("emitted_at (9)"))?,
        text,
    })
}

/// Writes a batch whose records are already CBOR-encoded (one record map
/// each, as the outbox stores them): the outbox → uplink path concatenates
/// stored bytes without decoding them.
pub fn encode_batch_raw<'a>(
    gateway: &str,
    records: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    cbor::map(&mut out, 3);
    cbor::uint(&mut out, 0);
    cbor::uint(&mut out, WIRE_VERSION);
    cbor::uint(&mut out, 1);
    cbor::text(&mut out, gateway);
    cbor::uint(&mut out, 2);
    cbor::array(&mut out, records.len() as u64);
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// Bytes of the batch head before the records: what
/// [`encode_batch_raw`] adds to the sum of the records' sizes.
pub fn batch_overhead(gateway: &str, records: usize) -> usize {
    let mut out = Vec::new();
    cbor::map(&mut out, 3);
    cbor::uint(&mut out, 0);
    cbor::uint(&mut out, WIRE_VERSION);
    cbor::uint(&mut out, 1);
    cbor::text(&mut out, gateway);
    cbor::uint(&mut out, 2);
    cbor::array(&mut out, records as u64);
    out.len()
}

impl Batch {
    /// The CBOR form (what the uplink publishes).
    pub fn to_cbor(&self) -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = self.records.iter().map(OutputRecord::to_cbor).collect();
        encode_batch_raw(&self.gateway, encoded.iter().map(Vec::as_slice))
    }

    /// Decodes a CBOR batch.
    ///
    /// # Errors
    /// [`WireError`] on anything but one complete batch of version 1.
    pub fn from_cbor(bytes: &[u8]) -> Result<Batch, WireError> {
        let mut d = minicbor::Decoder::new(bytes);
        let at = d.position();
        let n = definite(d.map()?, "batch map", at)?;
        let mut version = None;
        let mut gateway = None;
        let mut records = None;
        for _ in 0..n {
            let kat = d.position();
            match d.u64()? {
                0 if version.is_none() => version = Some(d.u64()?),
                1 if gateway.is_none() => gateway = Some(d.str()?.to_string()),
                2 if records.is_none() => {
                    let p = d.position();
                    let len = definite(d.array()?, "records array", p)?;
                    let mut rs = Vec::with_capacity(len.min(1024) as usize);
                    for _ in 0..len {
                        rs.push(decode_record(&mut d)?);
                    }
                    records = Some(rs);
                }
                k @ 0..=2 => return Err(invalid(format!("batch key {k} repeated"), kat)),
                _ => d.skip()?,
            }
        }
        match version {
            Some(WIRE_VERSION) => {}
            Some(v) => return Err(invalid(format!("unsupported batch version {v}"), at)),
            None => return Err(invalid("batch without version (0)", at)),
        }
        trailing(&d, bytes)?;
        Ok(Batch {
            gateway: gateway.ok_or_else(|| invalid("batch without gateway (1)", at))?,
            records: records.ok_or_else(|| invalid("batch without records (2)", at))?,
        })
    }

    /// The JSON form, for people and JSON-only consumers.
    pub fn to_json(&self) -> String {
        let j = JsonBatch {
            v: WIRE_VERSION,
            gateway: self.gateway.clone(),
            records: self.records.iter().map(JsonRecord::from).collect(),
        };
        serde_json::to_string(&j).unwrap_or_else(|_| "{}".into())
    }

    /// The JSON form, indented.
    pub fn to_json_pretty(&self) -> String {
        let j = JsonBatch {
            v: WIRE_VERSION,
            gateway: self.gateway.clone(),
            records: self.records.iter().map(JsonRecord::from).collect(),
        };
        serde_json::to_string_pretty(&j).unwrap_or_else(|_| "{}".into())
    }

    /// Decodes the JSON form.
    ///
    /// # Errors
    /// [`WireError`] on bad JSON, a missing field or another version.
    pub fn from_json(s: &str) -> Result<Batch, WireError> {
        let j: JsonBatch = serde_json::from_str(s).map_err(|e| WireError::Json(e.to_string()))?;
        if j.v != WIRE_VERSION {
            return Err(invalid(format!("unsupported batch version {}", j.v), 0));
        }
        Ok(Batch {
            gateway: j.gateway,
            records: j.records.into_iter().map(Into::into).collect(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct JsonBatch {
    v: u64,
    gateway: String,
    records: Vec<JsonRecord>,
}

#[derive(Serialize, Deserialize)]
struct JsonRecord {
    id: String,
    kind: RecordKind,
    key: String,
    op: String,
    start: i64,
    end: i64,
    fields: JsonFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anomaly: Option<JsonAnomaly>,
    emitted_at: i64,
    #[serde(default, skip_serializing_if = "JsonText::is_empty")]
    text: JsonText,
}

/// Text values as a JSON object in the record's order.
#[derive(Default)]
struct JsonText(Vec<(String, String)>);

impl JsonText {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of names to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<JsonText, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, String>()? {
                    if out.iter().any(|(n, _)| *n == k) {
                        return Err(serde::de::Error::custom(format!("text {k:?} repeated")));
                    }
                    out.push((k, v));
                }
                Ok(JsonText(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Serialize, Deserialize)]
struct JsonAnomaly {
    flag: bool,
    score: Option<f64>,
}

/// JSON has no NaN or infinity: a non-finite value is written `null` and
/// read back as NaN.
fn json_num(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Fields as a JSON object in the record's order (serde_json's own map
/// would sort the names).
struct JsonFields(Vec<(String, f64)>);

impl Serialize for JsonFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, &json_num(*v))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for JsonFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of field names to numbers or null")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<JsonFields, A::Error> {
                let mut out: Vec<(String, f64)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Option<f64>>()? {
                    if out.iter().any(|(n, _)| *n == k) {
                        return Err(serde::de::Error::custom(format!("field {k:?} repeated")));
                    }
                    out.push((k, v.unwrap_or(f64::NAN)));
                }
                Ok(JsonFields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl From<&OutputRecord> for JsonRecord {
    fn from(r: &OutputRecord) -> Self {
        JsonRecord {
            id: r.id.clone(),
            kind: r.kind,
            key: r.key.clone(),
            op: r.op.clone(),
            start: r.start,
            end: r.end,
            fields: JsonFields(r.fields.clone()),
            anomaly: r.anomaly.map(|a| JsonAnomaly {
                flag: a.flag,
                score: json_num(a.score),
            }),
            emitted_at: r.emitted_at,
            text: JsonText(r.text.clone()),
        }
    }
}

impl From<JsonRecord> for OutputRecord {
    fn from(j: JsonRecord) -> Self {
        OutputRecord {
            id: j.id,
            kind: j.kind,
            key: j.key,
            op: j.op,
            start: j.start,
            end: j.end,
            fields: j.fields.0,
            anomaly: j.anomaly.map(|a| Anomaly {
                flag: a.flag,
                score: a.score.unwrap_or(f64::NAN),
            }),
            emitted_at: j.emitted_at,
            text: j.text.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_escape_separators() {
        assert_eq!(record_id("gw1", "w", "s1", 10_000, 0), "gw1/w/s1/10000");
        assert_eq!(record_id("gw1", "w", "s1", -5, 2), "gw1/w/s1/-5/u2");
        assert_ne!(
            record_id("g", "a/b", "c", 0, 0),
            record_id("g", "a", "b/c", 0, 0)
        );
        assert_eq!(record_id("g", "a%/", "k", 0, 0), "g/a%25%2F/k/0");
    }
}
