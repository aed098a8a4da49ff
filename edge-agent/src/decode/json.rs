//! JSON records found by dot paths. One streaming pass with serde_json:
//! configured paths are read, everything else is skipped without building
//! a value tree.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Batch, Ctx, DecodeError, Decoder, Plan, Scalar, Scratch};

pub(crate) fn decode(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    payload: &[u8],
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let mut st = State {
        dec,
        ctx,
        out,
        fail: None,
    };
    let r = (&mut st).deserialize(&mut de).and_then(|()| de.end());
    match (r, st.fail) {
        (_, Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(malformed(e)),
    }
}

pub(crate) fn malformed(e: serde_json::Error) -> DecodeError {
    DecodeError::Malformed {
        format: "JSON",
        detail: e.to_string(),
    }
}

struct State<'a, 'c> {
    dec: &'a Decoder,
    ctx: &'a Ctx<'c>,
    out: &'a mut Batch,
    /// A message-level error raised inside serde (which only carries text).
    fail: Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for &mut State<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut State<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.dec.check_records(1).map_err(|e| self.fail(e))?;
        self.out.scratch.reset(self.dec.slot_count(), 0);
        walk_map(&self.dec.plan, &mut self.out.scratch, 0, map)?;
        self.dec.finish_record(self.ctx, self.out);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.out.scratch.reset(self.dec.slot_count(), i);
            let seed = NodeSeed {
                plan: &self.dec.plan,
                sc: &mut self.out.scratch,
                node: 0,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            self.dec.check_records(i + 1).map_err(|e| self.fail(e))?;
            self.dec.finish_record(self.ctx, self.out);
            i += 1;
        }
    }
}

impl State<'_, '_> {
    fn fail<E: de::Error>(&mut self, e: DecodeError) -> E {
        self.fail = Some(e);
        E::custom("rejected")
    }
}

/// Reads one object at trie node `node` into the scratch slots.
fn walk_map<'de, A: MapAccess<'de>>(
    plan: &Plan,
    sc: &mut Scratch,
    node: usize,
    mut map: A,
) -> Result<(), A::Error> {
    while let Some(k) = map.next_key_seed(KeySeed)? {
        match plan.child(node, &k) {
            None => {
                map.next_value::<IgnoredAny>()?;
            }
            Some(c) => match plan.nodes[c].target {
                Some(t) => {
                    let v = map.next_value_seed(ScalarSeed(sc))?;
                    sc.slots[t.slot()] = v;
                }
                None => map.next_value_seed(NodeSeed {
                    plan,
                    sc: &mut *sc,
                    node: c,
                })?,
            },
        }
    }
    Ok(())
}

/// An interior trie node: expects an object.
struct NodeSeed<'a> {
    plan: &'a Plan,
    sc: &'a mut Scratch,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl NodeSeed<'_> {
    fn wrong<E>(self, found: &'static str) -> Result<(), E> {
        self.sc.wrong_node(&self.plan.nodes[self.node].path, found);
        Ok(())
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_map(self.plan, self.sc, self.node, map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.wrong("an array")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.wrong("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.wrong("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.wrong("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.wrong("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.wrong("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.wrong("null")
    }
}

/// An object key, borrowed from the payload when it has no escapes.
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Any JSON value as a [`Scalar`]; strings go to the scratch text, arrays
/// and objects are skipped and named.
pub(crate) struct ScalarSeed<'a>(pub(crate) &'a mut Scratch);

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(self.0.push_str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an object"))
    }
}
