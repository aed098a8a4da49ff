//! SenML (RFC 8428) in JSON and CBOR, with the RFC's §5 examples.

mod decode_util;

use decode_util::{cb, decoder, run, s};
use weir_core::time::TimeUnit::{Micros, Millis};

const NOW: i64 = 1_800_000_000_000;

fn senml(fields: &[&str]) -> weir_agent::decode::Decoder {
    decoder("format = \"senml_json\"", fields, Millis)
}

/// RFC 8428 §5.1.1: a single datapoint. With the key from the topic the
/// whole name is the field name.
#[test]
fn rfc_5_1_1_single_datapoint() {
    let p = br#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#;
    let d = decoder(
        "format = \"senml_json\"\nkey_from_topic = 1\nfields = { temp = \"urn:dev:ow:10e2073a01080063\" }",
        &["temp"],
        Millis,
    );
    let r = run(&d, "sensors/room-1", p, NOW);
    assert_eq!(r.samples, vec![s("room-1", NOW, &[23.1])], "no time: now");
    // Split at the last ':' instead.
    let d = decoder(
        "format = \"senml_json\"\nfields = { temp = \"10e2073a01080063\" }",
        &["temp"],
        Millis,
    );
    assert_eq!(
        run(&d, "", p, NOW).samples,
        vec![s("urn:dev:ow", NOW, &[23.1])]
    );
}

/// §5.1.2: multiple datapoints of one device at one time → one sample.
#[test]
fn rfc_5_1_2_multiple_datapoints() {
    let p = br#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
     {"n":"current","u":"A","v":1.2}
    ]"#;
    let r = run(&senml(&["voltage", "current"]), "", p, NOW);
    assert_eq!(
        r.samples,
        vec![s("urn:dev:ow:10e2073a01080063", NOW, &[120.1, 1.2])]
    );
    assert_eq!((r.records, r.ignored), (2, 0));
}

const RFC_5_1_2_B: &[u8] = br#"[
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]"#;

/// §5.1.2, second example: a base time and relative times, exact to the
/// millisecond.
#[test]
fn rfc_5_1_2_current_over_five_seconds() {
    let key = "urn:dev:ow:10e2073a0108006";
    let r = run(&senml(&["current"]), "", RFC_5_1_2_B, NOW);
    let want: Vec<_> = (0..6)
        .map(|i| s(key, 1_276_020_071_001 + i * 1000, &[1.2 + i as f64 / 10.0]))
        .collect();
    assert_eq!(r.samples.len(), 6);
    for (g, w) in r.samples.iter().zip(&want) {
        assert_eq!((&g.0, g.1), (&w.0, w.1));
        assert!((g.2[0] - w.2[0]).abs() < 1e-12);
    }
    assert_eq!(r.ignored, 1, "voltage is not a field of this source");
    // In µs the same pack lands on whole milliseconds too.
    let d = decoder("format = \"senml_json\"", &["current"], Micros);
    assert_eq!(
        run(&d, "", RFC_5_1_2_B, NOW).samples[0].1,
        1_276_020_071_001_000
    );
    // With both fields, only the first time has both: the rest are incomplete.
    let r = run(&senml(&["voltage", "current"]), "", RFC_5_1_2_B, NOW);
    assert_eq!(r.samples, vec![s(key, 1_276_020_076_001, &[120.1, 1.7])]);
    assert_eq!(
        r.reasons(),
        [
            (1, "missing_field"),
            (2, "missing_field"),
            (3, "missing_field"),
            (4, "missing_field"),
            (5, "missing_field")
        ]
    );
    assert_eq!(r.errors[0].to_string(), "record 1: `voltage` is missing");
}

/// The same data resolved as §5.1.4 does it (full names, absolute times).
#[test]
fn resolved_form_of_5_1_2_decodes_the_same() {
    let p = br#"[
     {"n":"urn:dev:ow:10e2073a0108006:voltage","u":"V","t":1.276020076001e+09,"v":120.1},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020071001e+09,"v":1.2},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020072001e+09,"v":1.3},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020073001e+09,"v":1.4},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020074001e+09,"v":1.5},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020075001e+09,"v":1.6},
     {"n":"urn:dev:ow:10e2073a0108006:current","u":"A","t":1.276020076001e+09,"v":1.7}
   ]"#;
    let d = senml(&["voltage", "current"]);
    let (a, b) = (run(&d, "", p, NOW), run(&d, "", RFC_5_1_2_B, NOW));
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.reasons(), b.reasons());
}

/// §5.1.5: multiple data types: strings and data cannot be numbers,
/// booleans are 0/1, and only the source's fields are read.
#[test]
fn rfc_5_1_5_multiple_data_types() {
    let p = br#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfc-reader","vd":"aGkgCg"}
   ]"#;
    let r = run(&senml(&["temp", "open"]), "", p, NOW);
    assert_eq!(
        r.samples,
        vec![s("urn:dev:ow:10e2073a01080063", NOW, &[23.1, 0.0])]
    );
    assert_eq!(r.ignored, 2);
    let r = run(&senml(&["temp", "label"]), "", p, NOW);
    assert!(r.samples.is_empty());
    assert_eq!(
        r.reasons(),
        [(1, "wrong_type")],
        "the group is dropped once, not also as incomplete"
    );
}

/// §5.1.3: records told apart by unit only are the same field to this
/// decoder (documented limitation): lon and lat at one time collide.
#[test]
fn rfc_5_1_3_multiple_measurements_by_unit_collide() {
    let p = br#"[
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]"#;
    let d = decoder(
        "format = \"senml_json\"\nkey_from_topic = 0\nfields = { rh = \"urn:dev:ow:10e2073a01080063\" }",
        &["rh"],
        Millis,
    );
    let r = run(&d, "phone-1", p, NOW);
    assert_eq!(r.samples, vec![s("phone-1", 1_320_067_614_000, &[98.0])]);
    let dups = r
        .reasons()
        .iter()
        .filter(|e| e.1 == "duplicate_field")
        .count();
    assert_eq!(dups, 8);
}

/// §5.1.6: a collection of resources; the last record keeps the third's
/// base name and the first's base time.
#[test]
fn rfc_5_1_6_collection_of_resources() {
    let p = br#"[
     {"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":27.2},
     {"n":"humidity","u":"%RH","v":80},
     {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
     {"n":"humidity","u":"%RH","v":67}
   ]"#;
    let d = decoder(
        "format = \"senml_json\"\nname_separators = \"/\"",
        &["temperature", "humidity"],
        Millis,
    );
    let r = run(&d, "", p, NOW);
    let want = vec![
        s("2001:db8::2", 1_320_078_429_000, &[27.2, 80.0]),
        s("2001:db8::1", 1_320_078_429_000, &[12.3, 67.0]),
    ];
    assert_eq!(r.samples, want);
}

#[test]
fn versions_up_to_10_are_read() {
    let d = senml(&["a"]);
    let r = run(&d, "", br#"[{"bver":10,"n":"d/a","v":1}]"#, 0);
    assert_eq!(r.samples.len(), 1);
    for (p, want) in [
        (
            &br#"[{"bver":11,"n":"d/a","v":1}]"#[..],
            "unsupported_version",
        ),
        (
            br#"[{"n":"d/a","v":1},{"bver":18446744073709551615}]"#,
            "unsupported_version",
        ),
        (br#"[{"bver":"10","n":"d/a","v":1}]"#, "wrong_type"),
    ] {
        assert_eq!(run(&d, "", p, 0).err(), want);
    }
    let d = decoder("format = \"senml_cbor\"", &["a"], Millis);
    let mut c = cb();
    c.array(1)
        .map(3)
        .int(-1)
        .int(11)
        .int(0)
        .text("d/a")
        .int(2)
        .int(1);
    assert_eq!(run(&d, "", &c.done(), 0).err(), "unsupported_version");
}

/// §6: the §5.1.2 pack in CBOR (integer labels, a half float).
#[test]
fn rfc_6_cbor_representation() {
    let mut c = cb();
    c.array(2);
    c.map(4)
        .int(-2)
        .text("urn:dev:ow:10e2073a01080063:")
        .int(0)
        .text("voltage")
        .int(1)
        .text("V")
        .int(2)
        .f64(120.1);
    c.map(3)
        .int(0)
        .text("current")
        .int(1)
        .text("A")
        .int(2)
        .raw(&[0xf9, 0x3c, 0xcd]);
    let d = decoder("format = \"senml_cbor\"", &["voltage", "current"], Millis);
    let r = run(&d, "", &c.done(), NOW);
    assert_eq!(
        r.samples,
        vec![s(
            "urn:dev:ow:10e2073a01080063",
            NOW,
            &[120.1, 1.2001953125]
        )]
    );
}

#[test]
fn base_values_sums_booleans_and_relative_times() {
    let p = br#"[
      {"bn":"dev1/","bt":1700000000,"bv":100,"bs":1000,"n":"a","v":1},
      {"n":"b","s":5},
      {"n":"a","t":1.5,"v":-1},
      {"n":"b","t":1.5,"vb":true},
      {"bn":"dev2/","bt":0,"n":"a","t":-2.25,"v":0},
      {"n":"b","t":-2.25,"v":0}
    ]"#;
    let r = run(&senml(&["a", "b"]), "", p, NOW);
    assert_eq!(
        r.samples,
        vec![
            s("dev1", 1_700_000_000_000, &[101.0, 1005.0]),
            s("dev1", 1_700_000_001_500, &[99.0, 1.0]),
            s("dev2", NOW - 2250, &[100.0, 100.0]),
        ]
    );
    // 2^28 - 1 s is still relative; 2^28 s is absolute.
    let p = br#"[{"bn":"d/","n":"a","t":268435455,"v":1},{"n":"a","t":268435456,"v":2}]"#;
    let r = run(&senml(&["a"]), "", p, 0);
    assert_eq!(
        r.samples,
        vec![
            s("d", 268_435_455_000, &[1.0]),
            s("d", 268_435_456_000, &[2.0])
        ]
    );
    let r = run(&senml(&["a"]), "", p, 5);
    assert_eq!(
        r.samples,
        vec![
            s("d", 268_435_455_005, &[1.0]),
            s("d", 268_435_456_000, &[2.0])
        ]
    );
}

#[test]
fn seconds_round_to_the_nearest_tick_without_drift() {
    // bt and t are converted separately, then added: 0.1 + 0.2 is 300 ms.
    let p = br#"[{"bn":"d/","bt":1700000000.1,"n":"a","t":0.2,"v":1},{"n":"a","t":0.0004,"v":2},{"n":"a","t":0.0005,"v":3},{"n":"a","t":-0.0005,"v":4}]"#;
    let r = run(&senml(&["a"]), "", p, 0);
    let ts: Vec<i64> = r.samples.iter().map(|s| s.1).collect();
    assert_eq!(
        ts,
        [
            1_700_000_000_300,
            1_700_000_000_100,
            1_700_000_000_101,
            1_700_000_000_099
        ]
    );
    let d = decoder("format = \"senml_json\"", &["a"], Micros);
    let p = br#"[{"bn":"d/","bt":1700000000.000001,"n":"a","t":0.000002,"v":1}]"#;
    assert_eq!(run(&d, "", p, 0).samples[0].1, 1_700_000_000_000_003);
}

#[test]
fn grouping_in_long_packs_by_key_and_time() {
    // 40 devices × 2 fields, fields in separate halves of the pack, so the
    // group lookup has to find samples far back (the hashed index).
    let mut p = String::from("[");
    for f in ["a", "b"] {
        for dev in 0..40 {
            p.push_str(&format!(
                "{{\"n\":\"dev{dev}/{f}\",\"t\":{},\"v\":{dev}}},",
                1_700_000_000 + dev % 3
            ));
        }
    }
    p.pop();
    p.push(']');
    let r = run(&senml(&["a", "b"]), "", p.as_bytes(), 0);
    assert_eq!(r.result, Ok(()));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let want: Vec<_> = (0..40)
        .map(|d| {
            s(
                &format!("dev{d}"),
                (1_700_000_000 + d % 3) * 1000,
                &[d as f64, d as f64],
            )
        })
        .collect();
    assert_eq!(r.samples, want);
}

#[test]
fn record_errors() {
    let p = br#"[
      {"bn":"d/","bt":1700000000,"n":"a","v":1},
      {"n":"a","v":2},
      {"n":"a","t":1,"v":"x"},
      {"n":"nosep","v":1},
      {"bn":"","n":"plain","v":1},
      {"bn":"d/","n":"a","t":2},
      {"n":"a","t":"soon","v":1},
      {"n":5,"v":1},
      "not a record",
      {"n":"a","t":3,"vs":"text"},
      {"n":"a","t":4,"v":1e308,"bv":1e308},
      {"n":"a","t":1e300,"v":1},
      {"n":"a","t":5,"v":[1]},
      {"bv":0,"n":"a","t":6,"v":6},
      {"bn":"","n":"/a","t":7,"v":1},
      {"n":"d/","t":8,"v":1}
    ]"#;
    let r = run(&senml(&["a"]), "", p, 0);
    assert_eq!(r.samples, vec![s("d", 1_700_000_006_000, &[6.0])]);
    assert_eq!(
        r.reasons(),
        vec![
            (1, "duplicate_field"),
            (2, "wrong_type"),
            (4, "bad_name"),
            (5, "missing_field"),
            (6, "wrong_type"),
            (7, "wrong_type"),
            (8, "wrong_type"),
            (9, "wrong_type"),
            (10, "non_finite"),
            (11, "timestamp_out_of_range"),
            (12, "wrong_type"),
            (14, "bad_name"),
            (15, "bad_name"),
        ],
        "{:#?}",
        r.errors
    );
    assert_eq!(r.ignored, 1, "d/nosep is a field this source does not have");
    // bv + v overflowing is a bad value of that record only.
    let p = br#"[{"bn":"d/","n":"a","bv":1e308,"v":1e308}]"#;
    assert_eq!(run(&senml(&["a"]), "", p, 0).reasons(), [(0, "non_finite")]);
}

#[test]
fn message_errors() {
    let d = decoder("format = \"senml_json\"\nmax_records = 2", &["a"], Millis);
    for (p, want) in [
        (&br#"[{"bn":5,"n":"a","v":1}]"#[..], "wrong_type"),
        (
            br#"[{"n":"d/a","v":1},{"bt":"x","n":"d/a","v":1}]"#,
            "wrong_type",
        ),
        (
            br#"[{"bt":9.3e18,"n":"d/a","v":1}]"#,
            "timestamp_out_of_range",
        ),
        (br#"[{"n":"d/a","v":1,"xyz_":1}]"#, "unsupported_label"),
        (
            br#"[{"n":"d/a","v":1},{"n":"d/a","v":1},{"n":"d/a","v":1}]"#,
            "too_many_records",
        ),
        (br#"{"n":"d/a","v":1}"#, "malformed"),
        (br#"[{"n":"d/a","v":1}"#, "malformed"),
        (b"", "malformed"),
    ] {
        assert_eq!(
            run(&d, "", p, 0).err(),
            want,
            "{}",
            String::from_utf8_lossy(p)
        );
    }
    // Unknown labels that are not must-understand are read past.
    let r = run(
        &d,
        "",
        br#"[{"n":"d/a","v":1,"xyz":{"deep":[1]},"ut":5,"u":"m"}]"#,
        0,
    );
    assert_eq!(r.samples, vec![s("d", 0, &[1.0])]);
    // SenML CBOR: the same rules.
    let d = decoder("format = \"senml_cbor\"\nmax_records = 2", &["a"], Millis);
    let mut c = cb();
    c.array(1).map(2).int(0).text("d/a").text("q_").int(1);
    assert_eq!(run(&d, "", &c.done(), 0).err(), "unsupported_label");
    c.array(3).map(0).map(0).map(0);
    assert_eq!(run(&d, "", &c.done(), 0).err(), "too_many_records");
    c.map(0);
    assert_eq!(run(&d, "", &c.done(), 0).err(), "malformed");
    c.array(1).map(2).int(-2).int(5).int(0).text("a");
    assert_eq!(run(&d, "", &c.done(), 0).err(), "wrong_type");
}

#[test]
fn cbor_record_errors_and_key_from_topic() {
    let d = decoder(
        "format = \"senml_cbor\"\nkey_from_topic = 2",
        &["temp", "open"],
        Micros,
    );
    let mut c = cb();
    c.raw(&[0x9f]);
    c.map(3)
        .int(-3)
        .int(1_700_000_000)
        .int(0)
        .text("temp")
        .int(2)
        .f32(21.5);
    c.map(2).int(0).text("open").int(4).bool(true);
    c.map(3)
        .int(0)
        .text("temp")
        .int(6)
        .int(1)
        .int(2)
        .f64(f64::NAN);
    c.map(3)
        .int(0)
        .text("open")
        .int(6)
        .int(1)
        .int(3)
        .text("yes");
    c.array(0);
    c.map(3).int(0).text("temp").int(6).f64(2.5).int(5).int(7); // sum only
                                                                // t: tag 1 over 2500, no value
    c.map(2)
        .int(0)
        .text("open")
        .raw(&[0x06, 0xc1, 0x19, 0x09, 0xc4]);
    c.map(3)
        .int(0)
        .text("open")
        .int(6)
        .f64(2.5)
        .int(4)
        .bool(false);
    c.brk();
    let r = run(&d, "a/b/gw-9/c", &c.done(), 10);
    assert_eq!(r.result, Ok(()));
    let want = vec![
        s("gw-9", 1_700_000_000_000_000, &[21.5, 1.0]),
        s("gw-9", 1_700_000_002_500_000, &[7.0, 0.0]),
    ];
    assert_eq!(r.samples, want);
    let want = [
        (2, "non_finite"),
        (3, "wrong_type"),
        (4, "wrong_type"),
        (6, "missing_field"),
    ];
    assert_eq!(r.reasons(), want, "{:#?}", r.errors);
}

#[test]
fn two_fields_cannot_read_one_senml_name() {
    let cfg: weir_agent::decode::DecoderConfig =
        toml::from_str("format = \"senml_json\"\nfields = { a = \"temp\", b = \"temp\" }").unwrap();
    let e = cfg
        .build(
            &["a".to_string(), "b".to_string()],
            weir_core::time::TimeUnit::Millis,
        )
        .unwrap_err();
    assert!(e.0.contains("both read SenML name `temp`"), "{e}");
}
