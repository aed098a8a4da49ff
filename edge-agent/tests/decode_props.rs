//! Property tests: samples encoded by independent encoders (serde_json's
//! serializer, the test's own CBOR writer, hand-built SenML packs) decode to
//! the same samples; no input, random or a mutated valid payload, panics or
//! breaks the batch invariants.

mod decode_util;

use decode_util::{cb, check_batch, decoder, Sample};
use proptest::prelude::*;
use weir_agent::decode::{Batch, Decoder};
use weir_core::time::TimeUnit::Millis;

const KEYS: [&str; 6] = ["dev-1", "ü:ñ/7", "q\"b\\s", "tab\there", "a:b", "x"];

/// Samples with distinct (key, ts), ts in ms between 2001 and 2033.
fn samples() -> impl Strategy<Value = Vec<Sample>> {
    let finite = any::<f64>().prop_filter("finite", |v| v.is_finite());
    prop::collection::vec(
        (
            0..KEYS.len(),
            1_000_000_000_000i64..2_000_000_000_000,
            finite.clone(),
            finite,
        ),
        0..40,
    )
    .prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|(k, ts, ..)| seen.insert((*k, *ts)))
            .map(|(k, ts, a, b)| (KEYS[k].to_string(), ts, vec![a, b]))
            .collect()
    })
}

fn decoders() -> [Decoder; 4] {
    let paths = "key = \"id\"\nts = \"ts\"\nfields = { a = \"m.a\", b = \"m.b\" }";
    [
        decoder(&format!("format = \"json\"\n{paths}"), &["a", "b"], Millis),
        decoder(&format!("format = \"cbor\"\n{paths}"), &["a", "b"], Millis),
        decoder(
            "format = \"senml_json\"\nname_separators = \"/\"",
            &["a", "b"],
            Millis,
        ),
        decoder(
            "format = \"senml_cbor\"\nname_separators = \"/\"",
            &["a", "b"],
            Millis,
        ),
    ]
}

fn rfc3339(ms: i64) -> String {
    // weir's calendar formatter gives `YYYY-MM-DD HH:MM:SS[.fff]`, UTC.
    format!("{}Z", weir_agent::timefmt::format_datetime_ms(ms))
}

fn json(s: &[Sample], strings: bool) -> Vec<u8> {
    let recs: Vec<serde_json::Value> = s
        .iter()
        .enumerate()
        .map(|(i, (k, ts, v))| {
            let ts = if strings && i % 2 == 0 { serde_json::json!(rfc3339(*ts)) } else { serde_json::json!(ts) };
            serde_json::json!({"noise": [1, {"x": null}], "id": k, "ts": ts, "m": {"b": v[1], "a": v[0]}})
        })
        .collect();
    serde_json::to_vec(&recs).unwrap()
}

fn cbor(s: &[Sample]) -> Vec<u8> {
    let mut c = cb();
    c.array(s.len() as u64);
    for (k, ts, v) in s {
        c.map(3).text("id").text(k).text("ts").int(*ts);
        c.text("m").map(2).text("a").f64(v[0]).text("b").f64(v[1]);
    }
    c.done()
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `interleave`: all `a` records, then all `b` records (grouping across the
/// pack); otherwise each sample's two records are adjacent, in `b`, `a`
/// order when `swap`.
fn senml_json(s: &[Sample], interleave: bool, swap: bool) -> Vec<u8> {
    let num = |v: f64| serde_json::to_string(&v).unwrap();
    let name = |k: &str| serde_json::to_string(&format!("{k}/")).unwrap();
    let mut recs = Vec::new();
    if interleave {
        for f in [0, 1] {
            for (k, ts, v) in s {
                let n = ["a", "b"][f];
                recs.push(format!(
                    r#"{{"bn":{},"bt":{},"n":"{n}","v":{}}}"#,
                    name(k),
                    secs(*ts),
                    num(v[f])
                ));
            }
        }
    } else {
        for (k, ts, v) in s {
            let (f0, f1) = if swap { (1, 0) } else { (0, 1) };
            let (n0, n1) = (["a", "b"][f0], ["a", "b"][f1]);
            recs.push(format!(
                r#"{{"bn":{},"bt":{},"t":{},"n":"{n0}","u":"m","v":{}}}"#,
                name(k),
                ts / 1000,
                secs(ts % 1000),
                num(v[f0])
            ));
            recs.push(format!(
                r#"{{"n":"{n1}","t":{},"v":{}}}"#,
                secs(ts % 1000),
                num(v[f1])
            ));
        }
    }
    format!("[{}]", recs.join(",")).into_bytes()
}

fn senml_cbor(s: &[Sample]) -> Vec<u8> {
    let mut c = cb();
    c.array(2 * s.len() as u64);
    for (k, ts, v) in s {
        c.map(4)
            .int(-2)
            .text(&format!("{k}/"))
            .int(-3)
            .f64(*ts as f64 / 1000.0);
        c.int(0).text("a").int(2).f64(v[0]);
        c.map(2).int(0).text("b").int(2).f64(v[1]);
    }
    c.done()
}

fn decode(
    d: &Decoder,
    p: &[u8],
) -> (
    Result<(), weir_agent::decode::DecodeError>,
    Vec<Sample>,
    Batch,
) {
    let mut b = Batch::new();
    let r = d.decode("t", p, 0, &mut b);
    check_batch(&b, &r);
    let got = b
        .iter()
        .map(|s| (s.key.to_string(), s.ts, s.values.to_vec()))
        .collect();
    (r, got, b)
}

fn payloads(s: &[Sample], flags: (bool, bool, bool)) -> [Vec<u8>; 4] {
    [
        json(s, flags.0),
        cbor(s),
        senml_json(s, flags.1, flags.2),
        senml_cbor(s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(s in samples(), flags in any::<(bool, bool, bool)>()) {
        let ds = decoders();
        for (d, p) in ds.iter().zip(payloads(&s, flags)) {
            let (r, got, b) = decode(d, &p);
            prop_assert_eq!(r, Ok(()), "{:?}", d.format());
            prop_assert!(b.errors().is_empty(), "{:?}: {:?}", d.format(), b.errors());
            prop_assert_eq!(&got, &s, "{:?}", d.format());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(p in prop::collection::vec(any::<u8>(), 0..600)) {
        for d in decoders() {
            let _ = decode(&d, &p);
        }
    }

    #[test]
    fn mutated_payloads_never_panic(
        s in samples(),
        flags in any::<(bool, bool, bool)>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
    ) {
        let ds = decoders();
        for mut p in payloads(&s, flags) {
            for (at, op, byte) in &edits {
                if p.is_empty() {
                    p.push(*byte);
                    continue;
                }
                let i = at.index(p.len());
                match op {
                    0 => p[i] ^= 1 << (byte % 8),
                    1 => { p.remove(i); }
                    2 => p.insert(i, *byte),
                    _ => p[i] = *byte,
                }
            }
            // Every decoder on every mutated payload: cross-format bytes too.
            for d in &ds {
                let _ = decode(d, &p);
            }
        }
    }
}
