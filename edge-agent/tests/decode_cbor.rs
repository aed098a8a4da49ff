//! The CBOR decoder (paths over maps with text keys).

mod decode_util;

use decode_util::{cb, decoder, run, s};
use weir_core::time::TimeUnit::{Micros, Millis};

const CFG: &str = r#"
format = "cbor"
key = "device.id"
ts = "t"
fields = { value = "r.temp", hum = "r.hum" }
"#;

fn record(c: &mut decode_util::Cb, id: &str, t: i64, temp: f64, hum: i64) {
    c.map(3)
        .text("device")
        .map(1)
        .text("id")
        .text(id)
        .text("t")
        .int(t);
    c.text("r")
        .map(2)
        .text("temp")
        .f64(temp)
        .text("hum")
        .int(hum);
}

#[test]
fn one_map_and_an_array() {
    let d = decoder(CFG, &["value", "hum"], Millis);
    let mut c = cb();
    record(&mut c, "pump-1", 1_700_000_000_123, 21.5, 40);
    let r = run(&d, "", &c.done(), 0);
    assert_eq!(
        r.samples,
        vec![s("pump-1", 1_700_000_000_123, &[21.5, 40.0])]
    );

    c.array(2);
    record(&mut c, "a", 1, 1.0, -2);
    record(&mut c, "b", 2, 3.0, 4);
    let r = run(&d, "", &c.done(), 0);
    assert_eq!(
        r.samples,
        vec![s("a", 1, &[1.0, -2.0]), s("b", 2, &[3.0, 4.0])]
    );
}

#[test]
fn indefinite_lengths_tags_half_floats_and_skipped_items() {
    let d = decoder(CFG, &["value", "hum"], Micros);
    let mut c = cb();
    c.raw(&[0x9f]); // indefinite array
    c.raw(&[0xbf]); // indefinite map
    c.int(7).text("ignored: integer key"); // non-text keys are skipped
    c.bytes(b"k").array(2).int(1).int(2);
    c.text("skip")
        .raw(&[0x9f, 0x01, 0xbf, 0x61, 0x61, 0x02, 0xff, 0xff]);
    c.raw(&[0x7f, 0x62, b'd', b'e', 0x64, b'v', b'i', b'c', b'e', 0xff]); // "device" in chunks
    c.map(1)
        .text("id")
        .raw(&[0x7f, 0x61, b'a', 0x61, b'b', 0xff]);
    c.text("t").tag(1).int(1_700_000_000); // epoch seconds
    c.text("r")
        .map(2)
        .text("temp")
        .raw(&[0xf9, 0x3c, 0xcd])
        .text("hum")
        .f32(0.5);
    c.brk();
    c.map(3).text("device").map(1).text("id").int(-9);
    c.text("t").tag(0).text("2023-11-14T22:13:20.000001Z");
    c.text("r")
        .map(2)
        .text("temp")
        .tag(99)
        .int(3)
        .text("hum")
        .int(u64::MAX as i64 & i64::MAX);
    c.brk();
    let r = run(&d, "", &c.done(), 0);
    assert_eq!(r.result, Ok(()));
    assert_eq!(
        r.samples,
        vec![
            s("ab", 1_700_000_000_000_000, &[1.2001953125, 0.5]),
            s("-9", 1_700_000_000_000_001, &[3.0, i64::MAX as f64])
        ]
    );
}

#[test]
fn record_errors() {
    let d = decoder(CFG, &["value", "hum"], Millis);
    let mut c = cb();
    let good = |c: &mut decode_util::Cb| {
        c.text("t")
            .int(1)
            .text("r")
            .map(2)
            .text("temp")
            .f64(1.0)
            .text("hum")
            .int(2);
    };
    c.array(9);
    c.map(3).text("device").map(1).text("id").text("ok");
    good(&mut c);
    c.map(3).text("device").map(1).text("id").bytes(b"id");
    good(&mut c);
    c.map(3)
        .text("device")
        .map(1)
        .text("id")
        .text("x")
        .text("t")
        .f64(1.5);
    c.text("r").map(2).text("temp").f64(1.0).text("hum").int(2);
    c.map(3)
        .text("device")
        .map(1)
        .text("id")
        .text("x")
        .text("t")
        .int(1);
    c.text("r")
        .map(2)
        .text("temp")
        .f64(f64::NAN)
        .text("hum")
        .int(2);
    c.map(3)
        .text("device")
        .map(1)
        .text("id")
        .text("x")
        .text("t")
        .int(1);
    c.text("r")
        .map(2)
        .text("temp")
        .f32(f32::INFINITY)
        .text("hum")
        .int(2);
    c.map(3)
        .text("device")
        .map(1)
        .text("id")
        .text("x")
        .text("t")
        .int(1);
    c.text("r").map(2).text("temp").null().text("hum").int(2);
    c.map(3).text("device").array(0).text("t").int(1);
    c.text("r").map(2).text("temp").f64(1.0).text("hum").int(2);
    c.map(2)
        .text("device")
        .map(1)
        .text("id")
        .text("x")
        .text("t")
        .int(1);
    c.int(5);
    let r = run(&d, "", &c.done(), 0);
    assert_eq!(r.samples, vec![s("ok", 1, &[1.0, 2.0])]);
    assert_eq!(
        r.reasons(),
        vec![
            (1, "wrong_type"),
            (2, "wrong_type"),
            (3, "non_finite"),
            (4, "non_finite"),
            (5, "wrong_type"),
            (6, "wrong_type"),
            (7, "missing_field"),
            (8, "wrong_type"),
        ]
    );
    // -2^64 is a valid CBOR integer but not an i64: still a number (as
    // +2^64-1 is), with the precision of an f64.
    let d = decoder(
        "format = \"cbor\"\nkey_const = \"k\"\nts = \"t\"",
        &["v"],
        Millis,
    );
    let mut c = cb();
    c.map(2)
        .text("t")
        .int(0)
        .text("v")
        .raw(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let b = run(&d, "", &c.done(), 0);
    assert!(b.reasons().is_empty());
    assert_eq!(b.samples[0].2, [-18_446_744_073_709_551_616.0]);
    c.map(2)
        .text("t")
        .raw(&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .text("v")
        .int(1);
    assert_eq!(
        run(&d, "", &c.done(), 0).reasons(),
        [(0, "timestamp_out_of_range")]
    );
}

#[test]
fn message_errors() {
    let d = decoder(
        "format = \"cbor\"\nkey = \"k\"\nmax_records = 2\nmax_payload = 100",
        &["v"],
        Millis,
    );
    let mut c = cb();
    c.map(2).text("k").text("a").text("v").int(1);
    let ok = c.done();
    assert_eq!(run(&d, "", &ok, 0).samples.len(), 1);
    let mut trailing = ok.clone();
    trailing.push(0);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "malformed"),
        (ok[..ok.len() - 1].to_vec(), "malformed"),
        (trailing, "malformed"),
        (vec![0x01], "malformed"),
        (vec![0xff], "malformed"),
        (vec![0x1c], "malformed"),
        (vec![0xa1, 0x61, b'k', 0x62, 0xff, 0xfe], "malformed"), // bad UTF-8
        (vec![0xa1, 0x61, b'v', 0xf9, 0x3c], "malformed"),       // truncated half
        (vec![0x9f, 0xa0, 0xa0, 0xa0, 0xff], "too_many_records"),
        (
            vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "malformed",
        ),
        (vec![0xbf, 0x61, b'v', 0xff, 0xff], "malformed"), // break as a value
        (vec![0; 101], "oversized"),
    ];
    for (p, want) in cases {
        assert_eq!(run(&d, "", &p, 0).err(), want, "{p:02x?}");
    }
    // Deeply nested skipped values do not recurse.
    let d = decoder("format = \"cbor\"\nkey = \"k\"", &["v"], Millis);
    let mut c = cb();
    c.map(3).text("k").text("a").text("v").int(1).text("deep");
    for _ in 0..10_000 {
        c.raw(&[0x81, 0xbf, 0x00]);
    }
    c.int(0);
    for _ in 0..10_000 {
        c.brk();
    }
    assert_eq!(run(&d, "", &c.done(), 0).samples.len(), 1);
}
