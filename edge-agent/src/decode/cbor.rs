//! CBOR records found by dot paths over maps with text keys. One pass with
//! minicbor's decoder; unconfigured values are skipped (minicbor's `skip`
//! does not recurse, so nesting depth cannot exhaust the stack).

use minicbor::data::Type;
use minicbor::decode::Error as CborError;
use minicbor::Decoder as Cbor;

use super::{Batch, Ctx, DecodeError, Decoder, Plan, Scalar, Scratch};

/// A failure while walking CBOR: malformed bytes or a message-level error.
pub(crate) enum Fail {
    Cbor(CborError),
    Msg(DecodeError),
}

impl From<CborError> for Fail {
    fn from(e: CborError) -> Self {
        Fail::Cbor(e)
    }
}

impl From<DecodeError> for Fail {
    fn from(e: DecodeError) -> Self {
        Fail::Msg(e)
    }
}

impl Fail {
    pub(crate) fn into_error(self) -> DecodeError {
        match self {
            Fail::Cbor(e) => DecodeError::Malformed {
                format: "CBOR",
                detail: e.to_string(),
            },
            Fail::Msg(e) => e,
        }
    }
}

pub(crate) fn malformed(detail: &str) -> Fail {
    Fail::Msg(DecodeError::Malformed {
        format: "CBOR",
        detail: detail.into(),
    })
}

pub(crate) fn decode(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    payload: &[u8],
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let mut d = Cbor::new(payload);
    let r = (|| -> Result<(), Fail> {
        match d.datatype()? {
            Type::Map | Type::MapIndef => {
                out.scratch.reset(dec.slot_count(), 0);
                walk(&dec.plan, &mut out.scratch, &mut d, 0)?;
                dec.finish_record(ctx, out);
            }
            Type::Array | Type::ArrayIndef => {
                let mut items = Items::new(&mut d)?;
                let mut i = 0;
                while items.next(&mut d)? {
                    dec.check_records(i + 1)?;
                    out.scratch.reset(dec.slot_count(), i);
                    walk(&dec.plan, &mut out.scratch, &mut d, 0)?;
                    dec.finish_record(ctx, out);
                    i += 1;
                }
            }
            t => {
                return Err(malformed(&format!(
                    "expected a map or an array of maps, found {t}"
                )))
            }
        }
        end(&d)
    })();
    r.map_err(Fail::into_error)
}

/// Trailing bytes after the top-level item are malformed input.
pub(crate) fn end(d: &Cbor<'_>) -> Result<(), Fail> {
    if d.position() == d.input().len() {
        Ok(())
    } else {
        Err(malformed(&format!("trailing bytes at {}", d.position())))
    }
}

/// Walks the elements of a definite or indefinite array or map.
pub(crate) struct Items {
    left: Option<u64>,
}

impl Items {
    /// Opens an array (`d` at an array header).
    pub(crate) fn new(d: &mut Cbor<'_>) -> Result<Self, Fail> {
        Ok(Items { left: d.array()? })
    }

    /// Opens a map (`d` at a map header); each `next` is one key/value pair.
    pub(crate) fn map(d: &mut Cbor<'_>) -> Result<Self, Fail> {
        Ok(Items { left: d.map()? })
    }

    /// Whether another element follows (consumes the break of an indefinite one).
    pub(crate) fn next(&mut self, d: &mut Cbor<'_>) -> Result<bool, Fail> {
        match &mut self.left {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if d.datatype()? == Type::Break {
                    d.set_position(d.position() + 1);
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }
}

fn walk(plan: &Plan, sc: &mut Scratch, d: &mut Cbor<'_>, node: usize) -> Result<(), Fail> {
    match d.datatype()? {
        Type::Map | Type::MapIndef => {}
        t => {
            sc.wrong_node(&plan.nodes[node].path, type_name(t));
            d.skip()?;
            return Ok(());
        }
    }
    let mut items = Items::map(d)?;
    while items.next(d)? {
        let child = match d.datatype()? {
            Type::String => plan.child(node, d.str()?),
            Type::StringIndef => {
                let mut k = String::new();
                for part in d.str_iter()? {
                    k.push_str(part?);
                }
                plan.child(node, &k)
            }
            _ => {
                d.skip()?;
                None
            }
        };
        match child {
            None => d.skip()?,
            Some(c) => match plan.nodes[c].target {
                Some(t) => sc.slots[t.slot()] = scalar(d, sc)?,
                None => walk(plan, sc, d, c)?,
            },
        }
    }
    Ok(())
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Bool => "a boolean",
        Type::Null => "null",
        Type::Undefined => "undefined",
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => "an integer",
        Type::F16 | Type::F32 | Type::F64 => "a float",
        Type::Bytes | Type::BytesIndef => "bytes",
        Type::String | Type::StringIndef => "a string",
        Type::Array | Type::ArrayIndef => "an array",
        Type::Map | Type::MapIndef => "a map",
        Type::Tag => "a tag",
        _ => "a simple value",
    }
}

/// Reads any CBOR item as a [`Scalar`]; containers and bytes are skipped
/// and named. Tags are read past, except tag 1 over an integer (epoch
/// seconds).
pub(crate) fn scalar(d: &mut Cbor<'_>, sc: &mut Scratch) -> Result<Scalar, Fail> {
    let mut epoch = false;
    while d.datatype()? == Type::Tag {
        epoch = u64::from(d.tag()?) == 1;
    }
    let s = match d.datatype()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let v = d.u64()?;
            i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int)
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            let v = i128::from(d.int()?);
            // Below -2^63: still a number (precision is lost beyond 2^53, as
            // for the largest positive integers).
            i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int)
        }
        Type::F16 => {
            let p = d.position();
            let b = d
                .input()
                .get(p + 1..p + 3)
                .ok_or_else(|| malformed("truncated half float"))?;
            d.set_position(p + 3);
            Scalar::Float(f16_to_f64(u16::from_be_bytes([b[0], b[1]])))
        }
        Type::F32 | Type::F64 => Scalar::Float(d.f64()?),
        Type::Bool => Scalar::Bool(d.bool()?),
        Type::String => {
            let s = d.str()?;
            sc.push_str(s)
        }
        Type::StringIndef => {
            let a = sc.text.len();
            for part in d.str_iter()? {
                sc.text.push_str(part?);
            }
            Scalar::Str(a, sc.text.len())
        }
        Type::Break => return Err(malformed(&format!("unexpected break at {}", d.position()))),
        t => {
            d.skip()?;
            Scalar::Other(type_name(t))
        }
    };
    Ok(match s {
        Scalar::Int(v) if epoch => Scalar::EpochSecs(v),
        s => s,
    })
}

/// IEEE 754 half → double (exact).
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f64;
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + mant) * 2f64.powi(e - 25),
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f64;

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333_251_953_125);
        assert_eq!(f16_to_f64(0x0001), 5.960_464_477_539_063e-8);
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
    }
}
