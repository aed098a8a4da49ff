//! SenML packs (RFC 8428) in JSON and CBOR. Both front ends fill the same
//! per-record label slots; [`resolve`] applies base fields, resolves names
//! and times, and groups records into samples (semantics in the module docs
//! of [`super`]).

use minicbor::data::Type;
use minicbor::Decoder as Cbor;

use super::cbor::{self, Fail, Items};
use super::scan::Scan;
use super::time::{secs_f64_to_ticks, ticks_per_sec};
use super::{clip, Batch, Ctx, DecodeError, Decoder, Scalar, Scratch};

const BN: usize = 0;
const BT: usize = 1;
const BV: usize = 2;
const BS: usize = 3;
const N: usize = 4;
const T: usize = 5;
const V: usize = 6;
const VB: usize = 7;
const S: usize = 8;
const BVER: usize = 9;
const SLOTS: usize = 10;

/// The SenML version RFC 8428 defines; a pack of a later one is refused.
const VERSION: i64 = 10;

/// What a label means to this decoder.
enum Label {
    Slot(usize),
    /// `vs` or `vd`: a value we cannot use as a number.
    NonNumeric,
    /// Known and not needed (`u`, `bu`, `ut`, extensions).
    Skip,
    /// Unknown must-understand label.
    MustUnderstand,
}

fn text_label(l: &[u8]) -> Label {
    match l {
        b"bn" => Label::Slot(BN),
        b"bt" => Label::Slot(BT),
        b"bv" => Label::Slot(BV),
        b"bs" => Label::Slot(BS),
        b"n" => Label::Slot(N),
        b"t" => Label::Slot(T),
        b"v" => Label::Slot(V),
        b"vb" => Label::Slot(VB),
        b"s" => Label::Slot(S),
        b"bver" => Label::Slot(BVER),
        b"vs" | b"vd" => Label::NonNumeric,
        [.., b'_'] => Label::MustUnderstand,
        _ => Label::Skip,
    }
}

/// RFC 8428 §6, table 6.
fn int_label(l: i64) -> Label {
    match l {
        -2 => Label::Slot(BN),
        -3 => Label::Slot(BT),
        -5 => Label::Slot(BV),
        -6 => Label::Slot(BS),
        0 => Label::Slot(N),
        6 => Label::Slot(T),
        2 => Label::Slot(V),
        4 => Label::Slot(VB),
        5 => Label::Slot(S),
        -1 => Label::Slot(BVER),
        3 | 8 => Label::NonNumeric,
        _ => Label::Skip,
    }
}

/// Base values carried from record to record.
struct Base {
    /// `bt` in ticks.
    bt: i64,
    bv: f64,
    bs: f64,
}

impl Base {
    fn new(sc: &mut Scratch) -> Self {
        sc.bn.clear();
        Base {
            bt: 0,
            bv: 0.0,
            bs: 0.0,
        }
    }
}

fn secs_to_ticks(s: Scalar, tps: i64, rec: usize, at: &str) -> Result<i64, DecodeError> {
    let oor = || DecodeError::TimestampOutOfRange {
        record: rec,
        at: at.into(),
    };
    match s {
        Scalar::Absent => Ok(0),
        Scalar::Int(v) | Scalar::EpochSecs(v) => v.checked_mul(tps).ok_or_else(oor),
        Scalar::UInt(_) => Err(oor()),
        Scalar::Float(f) if !f.is_finite() => Err(DecodeError::NonFinite {
            record: rec,
            at: at.into(),
        }),
        Scalar::Float(f) => secs_f64_to_ticks(f, if tps == 1000 { Ms } else { Us }).ok_or_else(oor),
        s => Err(DecodeError::WrongType {
            record: rec,
            at: at.into(),
            expected: "a number",
            found: s.type_name(),
        }),
    }
}

use weir_core::time::TimeUnit::{Micros as Us, Millis as Ms};

fn base_number(s: Scalar, rec: usize, at: &str, into: &mut f64) -> Result<(), DecodeError> {
    match s {
        Scalar::Absent => Ok(()),
        s => match s.number() {
            Some(v) if v.is_finite() => {
                *into = v;
                Ok(())
            }
            Some(_) => Err(DecodeError::NonFinite {
                record: rec,
                at: at.into(),
            }),
            None => Err(DecodeError::WrongType {
                record: rec,
                at: at.into(),
                expected: "a number",
                found: s.type_name(),
            }),
        },
    }
}

/// Applies one record's labels. `Err` rejects the whole message; record
/// errors go to `out`.
fn resolve(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    base: &mut Base,
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let rec = out.scratch.record;
    out.records = rec + 1;
    let sc = &mut out.scratch;
    if let Some(label) = sc.must_understand.take() {
        return Err(DecodeError::UnsupportedLabel { record: rec, label });
    }
    if let Some(e) = sc.err.take() {
        out.error(e);
        return Ok(());
    }
    let tps = ticks_per_sec(dec.unit);
    match sc.slots[BVER] {
        Scalar::Absent => {}
        // RFC 8428 §4.4: a later version MUST NOT be used.
        Scalar::Int(v) if v > VERSION => {
            return Err(DecodeError::UnsupportedVersion {
                record: rec,
                version: v,
            })
        }
        Scalar::Int(_) => {}
        Scalar::UInt(v) => {
            return Err(DecodeError::UnsupportedVersion {
                record: rec,
                version: i64::try_from(v).unwrap_or(i64::MAX),
            })
        }
        s => {
            return Err(DecodeError::WrongType {
                record: rec,
                at: "bver".into(),
                expected: "an integer",
                found: s.type_name(),
            })
        }
    }
    match sc.slots[BN] {
        Scalar::Absent => {}
        Scalar::Str(a, b) => {
            sc.bn.clear();
            sc.bn.push_str(&sc.text[a..b]);
        }
        s => {
            return Err(DecodeError::WrongType {
                record: rec,
                at: "bn".into(),
                expected: "a string",
                found: s.type_name(),
            })
        }
    }
    if sc.slots[BT] != Scalar::Absent {
        base.bt = secs_to_ticks(sc.slots[BT], tps, rec, "bt")?;
    }
    base_number(sc.slots[BV], rec, "bv", &mut base.bv)?;
    base_number(sc.slots[BS], rec, "bs", &mut base.bs)?;

    sc.name.clear();
    sc.name.push_str(&sc.bn);
    match sc.slots[N] {
        Scalar::Absent => {}
        Scalar::Str(a, b) => sc.name.push_str(&sc.text[a..b]),
        s => {
            let e = DecodeError::WrongType {
                record: rec,
                at: "n".into(),
                expected: "a string",
                found: s.type_name(),
            };
            out.error(e);
            return Ok(());
        }
    }
    if sc.name.is_empty() {
        out.error(DecodeError::MissingField {
            record: rec,
            at: "n".into(),
        });
        return Ok(());
    }
    // `None`: the key is `ctx.key` and the whole name is the field name.
    let (key, field) = match ctx.key {
        Some(_) => (None, 0..sc.name.len()),
        None => match sc.name.rfind(|c| dec.separators.contains(c)) {
            Some(p) => {
                let q = p + sc.name[p..].chars().next().map_or(1, char::len_utf8);
                if p == 0 || q == sc.name.len() {
                    let name = clip(&sc.name);
                    out.error(DecodeError::BadName { record: rec, name });
                    return Ok(());
                }
                (Some(0..p), q..sc.name.len())
            }
            None => {
                let name = clip(&sc.name);
                out.error(DecodeError::BadName { record: rec, name });
                return Ok(());
            }
        },
    };
    let field_name = &sc.name[field];
    let Some(f) = dec.names.iter().position(|n| n == field_name) else {
        out.ignored += 1;
        return Ok(());
    };

    let t = match secs_to_ticks(sc.slots[T], tps, rec, "t") {
        Ok(t) => t,
        Err(e) => {
            out.error(e);
            return Ok(());
        }
    };
    let oor = || DecodeError::TimestampOutOfRange {
        record: rec,
        at: "t".into(),
    };
    let ts = match base.bt.checked_add(t) {
        // RFC 8428 §4.5.3: below 2^28 s the time is relative to now.
        Some(ts) if ts < (1i64 << 28) * tps => ctx.now.checked_add(ts).ok_or_else(oor),
        Some(ts) => Ok(ts),
        None => Err(oor()),
    };
    let ts = match ts {
        Ok(ts) => ts,
        Err(e) => {
            out.error(e);
            return Ok(());
        }
    };

    let num = |s: Scalar, at: &'static str, add: f64| match s.number() {
        Some(v) if (v + add).is_finite() => Ok(v + add),
        Some(_) => Err(DecodeError::NonFinite {
            record: rec,
            at: at.into(),
        }),
        None => Err(DecodeError::WrongType {
            record: rec,
            at: at.into(),
            expected: "a number",
            found: s.type_name(),
        }),
    };
    let value = if sc.slots[V] != Scalar::Absent {
        num(sc.slots[V], "v", base.bv)
    } else if sc.slots[VB] != Scalar::Absent {
        match sc.slots[VB] {
            Scalar::Bool(b) => Ok(if b { 1.0 } else { 0.0 }),
            s => Err(DecodeError::WrongType {
                record: rec,
                at: "vb".into(),
                expected: "a boolean",
                found: s.type_name(),
            }),
        }
    } else if sc.has_vs {
        Err(DecodeError::WrongType {
            record: rec,
            at: "vs/vd".into(),
            expected: "a number (v) or a boolean (vb)",
            found: "a string or data value",
        })
    } else if sc.slots[S] != Scalar::Absent {
        num(sc.slots[S], "s", base.bs)
    } else {
        Err(DecodeError::MissingField {
            record: rec,
            at: "v".into(),
        })
    };

    let g = match key {
        None => out.group(ctx.key.unwrap_or_default(), ts, rec),
        Some(k) => {
            let name = std::mem::take(&mut out.scratch.name);
            let g = out.group(&name[k], ts, rec);
            out.scratch.name = name;
            g
        }
    };
    match value {
        Ok(v) => {
            if !out.set(g, f, v) {
                out.poison(g);
                out.error(DecodeError::DuplicateField {
                    record: rec,
                    field: dec.fields[f].as_str().into(),
                });
            }
        }
        Err(e) => {
            out.poison(g);
            out.error(e);
        }
    }
    Ok(())
}

// ---- JSON -------------------------------------------------------------

/// Reads the pack with the byte scanner, record by record, resolving each
/// record before the next is read (so a rejected record stops the scan).
pub(crate) fn decode_json(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    payload: &[u8],
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let mut s = Scan::new(payload);
    s.expect(b'[', "expected a SenML pack (an array of records)")?;
    let mut base = Base::new(&mut out.scratch);
    if !s.empty(b']') {
        let mut i = 0;
        loop {
            out.scratch.reset(SLOTS, i);
            record_json(&mut s, &mut out.scratch)?;
            dec.check_records(i + 1)?;
            resolve(dec, ctx, &mut base, out)?;
            i += 1;
            if !s.more(b']')? {
                break;
            }
        }
    }
    s.end()?;
    out.finish_groups(&dec.fields, dec.nulls);
    Ok(())
}

fn record_json(s: &mut Scan<'_>, sc: &mut Scratch) -> Result<(), DecodeError> {
    if !s.eat(b'{') {
        let found = match s.scalar(sc)? {
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) => "a number",
            Scalar::Str(..) => "a string",
            other => other.type_name(),
        };
        sc.wrong_node("", found);
        return Ok(());
    }
    if s.empty(b'}') {
        return Ok(());
    }
    loop {
        let label = match s.plain_key()? {
            Some(k) => {
                let label = text_label(k);
                if let Label::MustUnderstand = label {
                    let k = std::str::from_utf8(k).unwrap_or_default();
                    sc.must_understand.get_or_insert_with(|| clip(k));
                }
                label
            }
            // Escapes: decoded into the scratch text, then dropped.
            None => {
                let mark = sc.text.len();
                let (a, b) = s.key(&mut sc.text)?;
                let label = text_label(&sc.text.as_bytes()[a..b]);
                if let Label::MustUnderstand = label {
                    sc.must_understand
                        .get_or_insert_with(|| clip(&sc.text[a..b]));
                }
                sc.text.truncate(mark);
                label
            }
        };
        match label {
            Label::Slot(i) => sc.slots[i] = s.scalar(sc)?,
            Label::NonNumeric => {
                sc.has_vs = true;
                s.skip()?;
            }
            Label::Skip | Label::MustUnderstand => s.skip()?,
        }
        if !s.more(b'}')? {
            return Ok(());
        }
    }
}

// ---- CBOR -------------------------------------------------------------

pub(crate) fn decode_cbor(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    payload: &[u8],
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let mut d = Cbor::new(payload);
    let r = (|| -> Result<(), Fail> {
        match d.datatype()? {
            Type::Array | Type::ArrayIndef => {}
            t => {
                return Err(cbor::malformed(&format!(
                    "expected a SenML pack (an array of records), found {t}"
                )))
            }
        }
        let mut base = Base::new(&mut out.scratch);
        let mut items = Items::new(&mut d)?;
        let mut i = 0;
        while items.next(&mut d)? {
            dec.check_records(i + 1)?;
            out.scratch.reset(SLOTS, i);
            record_cbor(&mut d, &mut out.scratch)?;
            resolve(dec, ctx, &mut base, out)?;
            i += 1;
        }
        cbor::end(&d)
    })();
    r.map_err(Fail::into_error)?;
    out.finish_groups(&dec.fields, dec.nulls);
    Ok(())
}

fn record_cbor(d: &mut Cbor<'_>, sc: &mut Scratch) -> Result<(), Fail> {
    match d.datatype()? {
        Type::Map | Type::MapIndef => {}
        t => {
            let found = match t {
                Type::Array | Type::ArrayIndef => "an array",
                _ => "not a map",
            };
            sc.wrong_node("", found);
            d.skip()?;
            return Ok(());
        }
    }
    let mut items = Items::map(d)?;
    while items.next(d)? {
        let label = match d.datatype()? {
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64
            | Type::Int => i64::try_from(i128::from(d.int()?)).map_or(Label::Skip, int_label),
            Type::String => {
                let l = d.str()?;
                match text_label(l.as_bytes()) {
                    Label::MustUnderstand => {
                        sc.must_understand.get_or_insert_with(|| clip(l));
                        Label::Skip
                    }
                    // RFC 8428 §6: CBOR uses integer labels for these; a
                    // text "v" is an unknown extension, not a value.
                    _ => Label::Skip,
                }
            }
            _ => {
                d.skip()?;
                Label::Skip
            }
        };
        match label {
            Label::Slot(i) => sc.slots[i] = cbor::scalar(d, sc)?,
            Label::NonNumeric => {
                sc.has_vs = true;
                d.skip()?;
            }
            Label::Skip | Label::MustUnderstand => d.skip()?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
