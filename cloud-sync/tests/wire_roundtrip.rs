//! The envelope: CBOR and JSON round trips (property tests), garbage is an
//! error, never a panic.

use proptest::prelude::*;
use weir_cloud_sync::wire::{Anomaly, Batch, OutputRecord, RecordKind};

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::Window),
        Just(RecordKind::Alert),
        Just(RecordKind::Status),
        Just(RecordKind::Dropped),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64 / 100.0),
        Just(f64::NAN),
        Just(-0.0),
    ]
}

fn record() -> impl Strategy<Value = OutputRecord> {
    (
        "[a-z0-9/%]{0,20}",
        kind(),
        "\\PC{0,12}",
        "[a-z_]{0,8}",
        any::<i64>(),
        any::<i64>(),
        proptest::collection::btree_map("[a-z_]{1,10}", value(), 0..8),
        proptest::option::of((any::<bool>(), value())),
        any::<i64>(),
    )
        .prop_map(
            |(id, kind, key, op, start, end, fields, anomaly, emitted_at)| OutputRecord {
                id,
                text: Vec::new(),
                kind,
                key,
                op,
                start,
                end,
                fields: fields.into_iter().rev().collect(),
                anomaly: anomaly.map(|(flag, score)| Anomaly { flag, score }),
                emitted_at,
            },
        )
}

/// Equality that reads NaN as equal to NaN and, for JSON, any non-finite
/// value as NaN (JSON has neither).
fn same(a: &OutputRecord, b: &OutputRecord, json: bool) -> bool {
    let eq = |x: f64, y: f64| {
        if json && !x.is_finite() {
            y.is_nan()
        } else {
            x.to_bits() == y.to_bits()
        }
    };
    a.id == b.id
        && a.kind == b.kind
        && a.key == b.key
        && a.op == b.op
        && a.start == b.start
        && a.end == b.end
        && a.emitted_at == b.emitted_at
        && a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|((n, x), (m, y))| n == m && eq(*x, *y))
        && match (a.anomaly, b.anomaly) {
            (None, None) => true,
            (Some(x), Some(y)) => x.flag == y.flag && eq(x.score, y.score),
            _ => false,
        }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cbor_round_trips_bit_for_bit(recs in proptest::collection::vec(record(), 0..6), gw in "[a-z0-9-]{1,12}") {
        let b = Batch { gateway: gw, records: recs };
        let bytes = b.to_cbor();
        let back = Batch::from_cbor(&bytes).unwrap();
        prop_assert_eq!(&back.gateway, &b.gateway);
        prop_assert_eq!(back.records.len(), b.records.len());
        for (x, y) in b.records.iter().zip(&back.records) {
            prop_assert!(same(x, y, false), "{:?} != {:?}", x, y);
        }
        // Deterministic: decoding and encoding again gives the same bytes.
        prop_assert_eq!(back.to_cbor(), bytes);
    }

    #[test]
    fn json_round_trips(recs in proptest::collection::vec(record(), 0..6)) {
        let b = Batch { gateway: "gw1".into(), records: recs };
        let back = Batch::from_json(&b.to_json()).unwrap();
        prop_assert_eq!(back.records.len(), b.records.len());
        for (x, y) in b.records.iter().zip(&back.records) {
            prop_assert!(same(x, y, true), "{:?} != {:?}", x, y);
        }
        for r in &b.records {
            prop_assert!(same(r, &OutputRecord::from_json(&r.to_json()).unwrap(), true));
            prop_assert!(same(r, &OutputRecord::from_cbor(&r.to_cbor()).unwrap(), false));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Batch::from_cbor(&bytes);
        let _ = OutputRecord::from_cbor(&bytes);
        let _ = Batch::from_json(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn every_truncation_and_corruption_is_handled(rec in record(), at in any::<prop::sample::Index>(), x in any::<u8>()) {
        let bytes = Batch { gateway: "gw".into(), records: vec![rec] }.to_cbor();
        let i = at.index(bytes.len());
        prop_assert!(Batch::from_cbor(&bytes[..i]).is_err());
        let mut c = bytes.clone();
        c[i] = x;
        let _ = Batch::from_cbor(&c);
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // A batch claiming 2^63 records, and a record claiming 2^63 fields.
    let batch = [
        0xa3, 0x00, 0x01, 0x01, 0x60, 0x02, 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(Batch::from_cbor(&batch).is_err());
    let rec = [
        0xa1, 0x06, 0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(OutputRecord::from_cbor(&rec).is_err());
}

#[test]
fn repeated_and_missing_fields_are_errors() {
    let r = OutputRecord {
        id: "g/w/s/0".into(),
        kind: RecordKind::Window,
        key: "s".into(),
        op: "w".into(),
        start: 0,
        end: 10,
        fields: vec![("count".into(), 3.0)],
        anomaly: None,
        emitted_at: 11,
        text: Vec::new(),
    };
    let b = r.to_cbor();
    // Bump the map length by one and repeat key 0.
    let mut rep = b.clone();
    rep[0] += 1;
    rep.extend_from_slice(&[0x00, 0x61, b'x']);
    assert!(OutputRecord::from_cbor(&rep).is_err());
    // An unknown key is skipped (forward compatible).
    let mut unk = b.clone();
    unk[0] += 1;
    unk.extend_from_slice(&[0x18, 0x20, 0x63, b'n', b'e', b'w']);
    assert_eq!(OutputRecord::from_cbor(&unk).unwrap(), r);
    // Dropping the last key (9, emitted_at) leaves a record without it.
    let mut miss = b[..b.len() - 2].to_vec();
    miss[0] -= 1;
    assert!(OutputRecord::from_cbor(&miss).is_err());
    // Two fields with one name.
    let json = r#"{"id":"a","kind":"window","key":"s","op":"w","start":0,"end":1,"fields":{"x":1,"x":2},"emitted_at":2}"#;
    assert!(OutputRecord::from_json(json).is_err());
}

#[test]
fn the_documented_example_is_what_the_code_writes() {
    const HEX: &str = "a3000101636777310281aa00766777312f772f73312f31373030303030303030303030010002627331036177041b0000018bcfe56800051b0000018bcfe58f1006a465636f756e74fa43fa0000646d65616efa41ac0000636d6178fa41ba000066737464646576fb3fb999999999999a07f408fa3e000000091b0000018bcfe596e1";
    const JSON: &str = r#"{"v":1,"gateway":"gw1","records":[{"id":"gw1/w/s1/1700000000000","kind":"window","key":"s1","op":"w","start":1700000000000,"end":1700000010000,"fields":{"count":500.0,"mean":21.5,"max":23.25,"stddev":0.1},"anomaly":{"flag":false,"score":0.125},"emitted_at":1700000012001}]}"#;
    let doc = include_str!("../../docs/wire.md");
    assert!(
        doc.contains(HEX) && doc.contains(JSON),
        "docs/wire.md shows the example"
    );
    let b = Batch {
        gateway: "gw1".into(),
        records: vec![OutputRecord {
            id: weir_cloud_sync::wire::record_id("gw1", "w", "s1", 1_700_000_000_000, 0),
            kind: RecordKind::Window,
            key: "s1".into(),
            op: "w".into(),
            start: 1_700_000_000_000,
            end: 1_700_000_010_000,
            fields: vec![
                ("count".into(), 500.0),
                ("mean".into(), 21.5),
                ("max".into(), 23.25),
                ("stddev".into(), 0.1),
            ],
            anomaly: Some(Anomaly {
                flag: false,
                score: 0.125,
            }),
            emitted_at: 1_700_000_012_001,
            text: Vec::new(),
        }],
    };
    let hex: String = b.to_cbor().iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(hex, HEX);
    assert_eq!(b.to_json(), JSON);
    assert_eq!(Batch::from_json(JSON).unwrap(), b);
}

/// A SQL result row's text columns (key 10, JSON `text`) round-trip in
/// both forms, in their order; a record without any encodes as before
/// (no key 10), and a repeated name is an error.
#[test]
fn text_values_round_trip_and_are_absent_when_empty() {
    let mut r = OutputRecord {
        id: "g/q/p1/0".into(),
        kind: RecordKind::Alert,
        key: "p1".into(),
        op: "q".into(),
        start: 0,
        end: 1_000,
        fields: vec![("spread".into(), 20.0), ("n".into(), f64::NAN)],
        anomaly: None,
        emitted_at: 1_001,
        text: Vec::new(),
    };
    let plain = r.to_cbor();
    assert_eq!(plain[0], 0xa8, "eight keys without text");
    r.text = vec![
        ("state".into(), "hot".into()),
        ("hot".into(), "true".into()),
        ("a".into(), String::new()),
    ];
    let b = r.to_cbor();
    assert_eq!(b[0], 0xa9, "key 10 added");
    assert_eq!(&b[..plain.len()][1..], &plain[1..], "the rest unchanged");
    let back = OutputRecord::from_cbor(&b).unwrap();
    assert_eq!(back.text, r.text);
    let j = r.to_json();
    assert!(
        j.ends_with(r#""text":{"state":"hot","hot":"true","a":""}}"#),
        "{j}"
    );
    let back = OutputRecord::from_json(&j).unwrap();
    assert_eq!(back.text, r.text);
    assert!(back.fields[1].1.is_nan());
    let dup = j.replace(r#""a":"""#, r#""state":"x""#);
    assert!(OutputRecord::from_json(&dup).is_err(), "{dup}");
    let mut dup = b.clone();
    let at = dup.len() - 3; // the last value, "" (0x60), then rename "a" → "state"
    assert_eq!(&dup[at..], &[0x61, b'a', 0x60]);
    dup.truncate(at);
    dup.extend_from_slice(&[0x65, b's', b't', b'a', b't', b'e', 0x60]);
    assert!(OutputRecord::from_cbor(&dup).is_err());
}
