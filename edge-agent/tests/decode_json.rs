//! The JSON decoder and the configuration checks.

mod decode_util;

use decode_util::{decoder, run, s};
use weir_agent::decode::{DecodeError, DecoderConfig, Format};
use weir_core::time::TimeUnit::{Micros, Millis};

const NESTED: &str = r#"
format = "json"
key = "device.id"
ts = "t"
fields = { value = "readings.temp", hum = "readings.hum" }
"#;

#[test]
fn nested_paths_one_object() {
    let d = decoder(NESTED, &["value", "hum"], Millis);
    let p = br#"{"device":{"id":"pump-1","fw":[1,2]},"t":1700000000123,"x":{"t":1},
               "readings":{"temp":21.5,"hum":40,"extra":{"deep":[{}]}}}"#;
    let r = run(&d, "any/topic", p, 0);
    assert_eq!(r.result, Ok(()));
    assert_eq!(
        r.samples,
        vec![s("pump-1", 1_700_000_000_123, &[21.5, 40.0])]
    );
    assert_eq!(r.records, 1);
}

#[test]
fn array_of_records_keeps_good_ones_and_reports_bad_ones() {
    let d = decoder(NESTED, &["value", "hum"], Millis);
    let p = br#"[
        {"device":{"id":"a"},"t":1,"readings":{"temp":1,"hum":2}},
        {"device":{"id":"b"},"t":2,"readings":{"temp":"hot","hum":2}},
        {"device":{"id":"c"},"t":3,"readings":{"hum":2}},
        {"device":{"id":"d"},"t":4.5,"readings":{"temp":1,"hum":2}},
        {"device":{"id":"e"},"t":"yesterday","readings":{"temp":1,"hum":2}},
        {"device":"f","t":6,"readings":{"temp":1,"hum":2}},
        {"device":{"id":[]},"t":7,"readings":{"temp":1,"hum":2}},
        {"t":8,"readings":{"temp":1,"hum":2}},
        {"device":{"id":"i"},"readings":{"temp":1,"hum":2}},
        {"device":{"id":"j"},"t":10,"readings":{"temp":true,"hum":2}},
        {"device":{"id":"k"},"t":11,"readings":{"temp":null,"hum":2}},
        42,
        {"device":{"id":"m"},"t":"2023-11-14T22:13:20.5+01:00","readings":{"temp":-0.25,"hum":1e3}}
    ]"#;
    let r = run(&d, "", p, 0);
    assert_eq!(r.result, Ok(()));
    assert_eq!(
        r.samples,
        vec![
            s("a", 1, &[1.0, 2.0]),
            s("m", 1_699_996_400_500, &[-0.25, 1000.0])
        ]
    );
    assert_eq!(
        r.reasons(),
        vec![
            (1, "wrong_type"),
            (2, "missing_field"),
            (3, "wrong_type"),
            (4, "timestamp_unparseable"),
            (5, "wrong_type"),
            (6, "wrong_type"),
            (7, "missing_field"),
            (8, "missing_field"),
            (9, "wrong_type"),
            (10, "wrong_type"),
            (11, "wrong_type"),
        ]
    );
    assert_eq!(r.records, 13);
    // Errors say what and where.
    let msg: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msg[0],
        "record 1: `readings.temp`: expected a number, found a string"
    );
    assert_eq!(msg[1], "record 2: `readings.temp` is missing");
    assert_eq!(
        msg[2],
        "record 3: `t`: expected an integer or an RFC 3339 string, found a float"
    );
    assert_eq!(
        msg[4],
        "record 5: `device`: expected an object/map, found a string"
    );
    assert!(msg[3].contains("`yesterday`"), "{}", msg[3]);
}

#[test]
fn key_from_topic_constant_and_integer_keys() {
    let d = decoder(
        "format = \"json\"\nkey_from_topic = 1\nts = \"ts\"",
        &["value"],
        Millis,
    );
    let r = run(&d, "plant/pump-7/telemetry", br#"{"ts":5,"value":1.5}"#, 0);
    assert_eq!(r.samples, vec![s("pump-7", 5, &[1.5])]);
    for topic in ["plant", "plant//x"] {
        let r = run(&d, topic, br#"{"ts":5,"value":1.5}"#, 0);
        assert_eq!(r.err(), "bad_topic");
    }
    let d = decoder(
        "format = \"json\"\nkey_const = \"boiler\"",
        &["value"],
        Millis,
    );
    let r = run(&d, "x", br#"{"value":2}"#, 777);
    assert_eq!(
        r.samples,
        vec![s("boiler", 777, &[2.0])],
        "no ts path: stamped with now"
    );
    let d = decoder(
        "format = \"json\"\nkey = \"id\"\nts = \"t\"",
        &["value"],
        Millis,
    );
    let r = run(&d, "x", br#"[{"id":17,"t":1,"value":2},{"id":-3,"t":1,"value":2},{"id":18446744073709551615,"t":1,"value":2}]"#, 0);
    let keys: Vec<&str> = r.samples.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(keys, ["17", "-3", "18446744073709551615"]);
}

#[test]
fn timestamp_units_and_strings() {
    let cases: &[(&str, &str, i64, &str)] = &[
        ("s", "1700000000", 1_700_000_000_000, "ms"),
        ("ms", "1700000000123", 1_700_000_000_123, "ms"),
        ("us", "1700000000123999", 1_700_000_000_123, "ms"),
        ("ns", "1700000000123999999", 1_700_000_000_123, "ms"),
        ("us", "-1", -1, "ms"),
        ("ms", "1700000000123", 1_700_000_000_123_000, "us"),
        ("us", "1700000000123456", 1_700_000_000_123_456, "us"),
        (
            "ms",
            "\"2023-11-14T22:13:20.123456Z\"",
            1_700_000_000_123_456,
            "us",
        ),
        (
            "ms",
            "\"2023-11-14T22:13:20.123456Z\"",
            1_700_000_000_123,
            "ms",
        ),
        (
            "ms",
            "\"2023-11-14T17:13:20-05:00\"",
            1_700_000_000_000,
            "ms",
        ),
    ];
    for (ts_unit, text, want, unit) in cases {
        let unit = if *unit == "ms" { Millis } else { Micros };
        let d = decoder(
            &format!("format = \"json\"\nkey_const = \"k\"\nts = \"t\"\nts_unit = \"{ts_unit}\""),
            &["v"],
            unit,
        );
        let r = run(&d, "", format!("{{\"t\":{text},\"v\":1}}").as_bytes(), 0);
        assert_eq!(r.samples, vec![s("k", *want, &[1.0])], "{ts_unit} {text}");
    }
    let d = decoder(
        "format = \"json\"\nkey_const = \"k\"\nts = \"t\"\nts_unit = \"s\"",
        &["v"],
        Micros,
    );
    for (text, reason) in [
        ("9223372036854775807", "timestamp_out_of_range"),
        ("18446744073709551615", "timestamp_out_of_range"),
        ("1.7e9", "wrong_type"),
        ("1700000000.0", "wrong_type"),
        ("\"1700000000\"", "timestamp_unparseable"),
        ("\"2023-11-14T22:13:20\"", "timestamp_unparseable"),
        ("\"9999-12-31T23:59:59Z\"", "ok"),
        ("false", "wrong_type"),
        ("{}", "wrong_type"),
    ] {
        let r = run(&d, "", format!("{{\"t\":{text},\"v\":1}}").as_bytes(), 0);
        let got = r.errors.first().map_or("ok", |e| e.reason());
        assert_eq!(got, reason, "{text}");
    }
}

#[test]
fn message_level_errors() {
    let mut cfg: DecoderConfig =
        toml::from_str("format = \"json\"\nkey = \"k\"\nmax_payload = 64\nmax_records = 3")
            .unwrap();
    let d = cfg.build(&["v".to_string()], Millis).unwrap();
    let one = br#"{"k":"a","v":1}"#;
    assert_eq!(run(&d, "", one, 0).samples.len(), 1);
    assert_eq!(run(&d, "", &[b' '; 65], 0).err(), "oversized");
    assert_eq!(
        run(&d, "", &[b' '; 65], 0).result,
        Err(DecodeError::Oversized { len: 65, max: 64 })
    );
    for bad in [
        &b""[..],
        b"{",
        b"nul",
        b"{\"k\":\"a\",\"v\":1} x",
        b"42",
        b"\"s\"",
        b"\xff\xfe",
        b"{\"v\":1e999}",
        b"[{\"k\":\"a\",\"v\":1},]",
    ] {
        let r = run(&d, "", bad, 0);
        assert_eq!(r.err(), "malformed", "{:?}", String::from_utf8_lossy(bad));
    }
    let four = br#"[{"k":"a","v":1},{"k":"a","v":1},{"k":"a","v":1},{}]"#;
    cfg.max_payload = 1 << 20;
    let d = cfg.build(&["v".to_string()], Millis).unwrap();
    assert_eq!(run(&d, "", four, 0).err(), "too_many_records");
    let three = br#"[{"k":"a","v":1},{"k":"a","v":1},{"k":"a","v":1}]"#;
    assert_eq!(run(&d, "", three, 0).result, Ok(()));
    // Deep nesting does not reach the stack: serde_json skips iteratively.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        run(&d, "", deep.as_bytes(), 0).reasons(),
        [(0, "wrong_type")]
    );
    // Unconfigured subtrees are skipped iteratively, at any depth.
    let deep = format!(
        "{{\"x\":{}1{},\"k\":\"a\",\"v\":1}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    assert_eq!(run(&d, "", deep.as_bytes(), 0).samples.len(), 1);
}

#[test]
fn a_batch_is_reused() {
    let d = decoder(NESTED, &["value", "hum"], Millis);
    let mut b = weir_agent::decode::Batch::new();
    let p = br#"[{"device":{"id":"a"},"t":1,"readings":{"temp":1,"hum":2}},{"device":{"id":"b"},"t":2,"readings":{"temp":3,"hum":4}}]"#;
    d.decode("", p, 0, &mut b).unwrap();
    assert_eq!(b.len(), 2);
    d.decode("", b"[", 0, &mut b).unwrap_err();
    assert!(b.is_empty());
    d.decode("", p, 0, &mut b).unwrap();
    let got: Vec<_> = b.iter().map(|s| (s.key, s.ts, s.values.to_vec())).collect();
    assert_eq!(
        got,
        vec![("a", 1, vec![1.0, 2.0]), ("b", 2, vec![3.0, 4.0])]
    );
}

#[test]
fn config_errors_say_what_to_change() {
    let build = |t: &str, fields: &[&str]| {
        let cfg: DecoderConfig = toml::from_str(t).unwrap();
        let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        cfg.build(&fields, Millis).err().map(|e| e.to_string())
    };
    let cases = [
        ("format = \"json\"", "say where the key is"),
        (
            "format = \"json\"\nkey = \"a\"\nkey_const = \"b\"",
            "only one of",
        ),
        (
            "format = \"json\"\nkey = \"a\"\nfields = { nope = \"x\" }",
            "not one of the source's fields",
        ),
        (
            "format = \"json\"\nkey = \"a\"\nts = \"a.b\"",
            "goes inside",
        ),
        ("format = \"json\"\nkey = \"a.b\"\nts = \"a\"", "overlaps"),
        ("format = \"json\"\nkey = \"v\"", "overlaps"),
        ("format = \"json\"\nkey = \"a..b\"", "empty segment"),
        ("format = \"json\"\nkey_const = \"\"", "empty"),
        (
            "format = \"json\"\nkey = \"k\"\nmax_records = 0",
            "max_records",
        ),
        ("format = \"senml_json\"\nkey = \"k\"", "record names"),
        ("format = \"senml_cbor\"\nts = \"t\"", "bt/t"),
        (
            "format = \"senml_json\"\nname_separators = \"\"",
            "name_separators",
        ),
    ];
    for (t, want) in cases {
        let got = build(t, &["v"]).unwrap_or_default();
        assert!(got.contains(want), "{t:?}: {got:?}");
    }
    // A JSON source may carry events alone (key and time); SenML may not.
    assert!(build("format = \"json\"\nkey = \"k\"", &[]).is_none());
    assert!(build("format = \"senml_json\"", &[]).is_some_and(|e| e.contains("no fields")));
    assert!(build("format = \"senml_json\"", &["v"]).is_none());
    assert!(toml::from_str::<DecoderConfig>("format = \"xml\"").is_err());
    assert!(toml::from_str::<DecoderConfig>("format = \"json\"\nkye = \"k\"").is_err());
    let c: DecoderConfig = toml::from_str("format = \"senml_cbor\"").unwrap();
    assert_eq!(c, DecoderConfig::new(Format::SenmlCbor));
    assert_eq!(
        (c.max_payload, c.max_records, c.name_separators.as_str()),
        (65536, 1000, ":/")
    );
}

#[test]
fn reasons_are_stable_snake_case() {
    for r in DecodeError::REASONS {
        assert!(
            r.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'),
            "{r}"
        );
    }
    let mut sorted = DecodeError::REASONS.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), DecodeError::REASONS.len());
}

/// Text values a SQL `WHERE` reads besides the key ([`DecoderConfig::texts`]):
/// a string as it is, an integer in decimal, a boolean as `true`/`false`,
/// absent or `null` as no value (SQL's `NULL`); a float, an array or an
/// object is a record error. The same for CBOR. `retain` keeps the texts
/// with their samples.
#[test]
fn text_values_are_read_per_record() {
    use weir_agent::decode::{Batch, DecoderConfig, Format};
    let build = |format| {
        let mut cfg = DecoderConfig::new(format);
        cfg.key = Some("id".into());
        cfg.ts = Some("t".into());
        cfg.texts = vec!["meta.site".into(), "ok".into()];
        cfg.build(&["v".into()], Millis).unwrap()
    };
    let json = build(Format::Json);
    let payload = br#"[
        {"id":"a","t":1,"v":1,"meta":{"site":"north"},"ok":true},
        {"id":"b","t":2,"v":2,"meta":{"site":7},"ok":false},
        {"id":"c","t":3,"v":3,"meta":{"site":null}},
        {"id":"d","t":4,"v":4},
        {"id":"e","t":5,"v":5,"meta":{"site":1.5}},
        {"id":"f","t":6,"v":6,"meta":{"site":"s\u00fcd"},"ok":"x"}
    ]"#;
    let mut b = Batch::new();
    json.decode("t", payload, 0, &mut b).unwrap();
    let texts = |b: &Batch| -> Vec<(String, Option<String>, Option<String>)> {
        (0..b.len())
            .map(|i| {
                let t = |j| b.text(i, j).map(str::to_string);
                (b.get(i).key.to_string(), t(0), t(1))
            })
            .collect()
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        texts(&b),
        [
            ("a".into(), some("north"), some("true")),
            ("b".into(), some("7"), some("false")),
            ("c".into(), None, None),
            ("d".into(), None, None),
            ("f".into(), some("süd"), some("x")),
        ]
    );
    assert_eq!(b.errors().len(), 1);
    assert_eq!(
        b.errors()[0].to_string(),
        "record 4: `meta.site`: expected a string, found a float"
    );
    // Dropping samples keeps each one's texts.
    assert_eq!(b.retain(|b, i| b.get(i).values[0] % 2.0 == 0.0), 2);
    assert_eq!(
        texts(&b),
        [
            ("b".into(), some("7"), some("false")),
            ("d".into(), None, None),
            ("f".into(), some("süd"), some("x")),
        ]
    );
    assert_eq!(b.get(1).values, &[4.0]);
    // Values computed from the texts go after each sample's fields.
    b.widen(2, |b, i, out| {
        out[0] = b.text(i, 0).map_or(-1.0, |t| t.len() as f64);
        out[1] = b.get(i).values[0] * 10.0;
    });
    let rows: Vec<Vec<f64>> = b.iter().map(|s| s.values.to_vec()).collect();
    assert_eq!(
        rows,
        [[2.0, 1.0, 20.0], [4.0, -1.0, 40.0], [6.0, 4.0, 60.0]]
    );
    assert_eq!(b.text(2, 0), Some("süd"));

    let cbor = build(Format::Cbor);
    let mut c = decode_util::cb();
    c.array(2);
    c.map(4)
        .text("id")
        .text("a")
        .text("t")
        .int(1)
        .text("v")
        .int(1);
    c.text("meta").map(1).text("site").text("north");
    c.map(4)
        .text("id")
        .text("b")
        .text("t")
        .int(2)
        .text("v")
        .int(2);
    c.text("ok").text("yes");
    cbor.decode("t", &c.done(), 0, &mut b).unwrap();
    assert_eq!(
        texts(&b),
        [
            ("a".into(), some("north"), None),
            ("b".into(), None, some("yes")),
        ]
    );
    // SenML records carry one value per name: no text columns.
    let mut cfg = DecoderConfig::new(Format::SenmlJson);
    cfg.texts = vec!["site".into()];
    let e = cfg.build(&["v".into()], Millis).unwrap_err();
    assert!(e.to_string().contains("JSON or CBOR"), "{e}");
}
