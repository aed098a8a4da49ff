//! The serde_json SenML JSON decoder the byte scanner replaced, kept as the
//! oracle of the differential test in `tests.rs`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::super::json::{self, KeySeed, ScalarSeed};
use super::{
    clip, resolve, text_label, Base, Batch, Ctx, DecodeError, Decoder, Label, Scratch, SLOTS,
};

pub(super) fn decode_json(
    dec: &Decoder,
    ctx: &Ctx<'_>,
    payload: &[u8],
    out: &mut Batch,
) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let mut st = Pack {
        dec,
        ctx,
        out,
        fail: None,
    };
    let r = (&mut st).deserialize(&mut de).and_then(|()| de.end());
    match (r, st.fail) {
        (_, Some(e)) => Err(e),
        (Ok(()), None) => {
            st.out.finish_groups(&dec.fields, dec.nulls);
            Ok(())
        }
        (Err(e), None) => Err(json::malformed(e)),
    }
}

struct Pack<'a, 'c> {
    dec: &'a Decoder,
    ctx: &'a Ctx<'c>,
    out: &'a mut Batch,
    fail: Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for &mut Pack<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for &mut Pack<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SenML pack (an array of records)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut base = Base::new(&mut self.out.scratch);
        let mut i = 0;
        loop {
            self.out.scratch.reset(SLOTS, i);
            if seq
                .next_element_seed(RecordSeed(&mut self.out.scratch))?
                .is_none()
            {
                return Ok(());
            }
            let r = self
                .dec
                .check_records(i + 1)
                .and_then(|()| resolve(self.dec, self.ctx, &mut base, self.out));
            if let Err(e) = r {
                self.fail = Some(e);
                return Err(de::Error::custom("rejected"));
            }
            i += 1;
        }
    }
}

struct RecordSeed<'a>(&'a mut Scratch);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RecordSeed<'_> {
    fn wrong<E>(self, found: &'static str) -> Result<(), E> {
        self.0.wrong_node("", found);
        Ok(())
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SenML record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sc = self.0;
        while let Some(k) = map.next_key_seed(KeySeed)? {
            match text_label(k.as_bytes()) {
                Label::Slot(i) => sc.slots[i] = map.next_value_seed(ScalarSeed(&mut *sc))?,
                Label::NonNumeric => {
                    sc.has_vs = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Label::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
                Label::MustUnderstand => {
                    sc.must_understand.get_or_insert_with(|| clip(&k));
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
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
