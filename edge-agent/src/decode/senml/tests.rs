//! The byte scanner against the serde_json decoder it replaced: the same
//! samples, record errors and counts, and the same message error (its kind;
//! `Malformed` messages differ in wording).

use proptest::prelude::*;
use weir_core::time::TimeUnit;

use super::super::{Batch, Ctx, DecodeError, Decoder, DecoderConfig};

const NOW: i64 = 1_765_000_000_000;

fn decoder(extra: &str) -> Decoder {
    let cfg: DecoderConfig =
        toml::from_str(&format!("format = \"senml_json\"\n{extra}")).expect("config parses");
    cfg.build(&["a".into(), "b".into()], TimeUnit::Millis)
        .expect("config builds")
}

/// What a decode gave, flattened for comparison. Floats print by their
/// shortest round-trip form, so equal text means equal bits.
#[derive(Debug, PartialEq)]
struct Outcome {
    result: Result<(), String>,
    samples: Vec<String>,
    errors: Vec<String>,
    records: usize,
    ignored: usize,
}

fn kind(e: &DecodeError) -> String {
    match e {
        DecodeError::Malformed { format, .. } => format!("Malformed({format})"),
        e => format!("{e:?}"),
    }
}

fn run(dec: &Decoder, payload: &[u8], oracle: bool) -> Outcome {
    let mut out = Batch::new();
    let width = dec.fields.len();
    out.begin(width, dec.texts);
    let ctx = Ctx {
        now: NOW,
        key: None,
    };
    let r = if oracle {
        super::oracle::decode_json(dec, &ctx, payload, &mut out)
    } else {
        super::decode_json(dec, &ctx, payload, &mut out)
    };
    if r.is_err() {
        out.begin(width, dec.texts);
    }
    Outcome {
        result: r.as_ref().map_err(kind).copied(),
        samples: out
            .iter()
            .map(|s| format!("{} {} {:?}", s.key, s.ts, s.values))
            .collect(),
        errors: out.errors().iter().map(|e| format!("{e:?}")).collect(),
        records: out.records(),
        ignored: out.ignored(),
    }
}

fn same(payload: &[u8]) -> Result<Outcome, TestCaseError> {
    let mut first = None;
    for extra in ["name_separators = \"/\"", "max_records = 3"] {
        let dec = decoder(extra);
        let new = run(&dec, payload, false);
        let old = run(&dec, payload, true);
        prop_assert_eq!(&new, &old, "payload {:?}", String::from_utf8_lossy(payload));
        first.get_or_insert(new);
    }
    Ok(first.expect("two decoders"))
}

fn check(payload: &[u8]) -> Outcome {
    same(payload).unwrap_or_else(|e| panic!("{e}"))
}

// ---- hand-picked cases --------------------------------------------------

#[test]
fn decode_escaped_labels_match() {
    let o = check(
        br#"[{"\u0062n":"k/","\u006e":"a","\u0076":1.5,"b\u0074":1700000000},{"n":"\u0062","v":2}]"#,
    );
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.samples, ["k 1700000000000 [1.5, 2.0]"], "{o:?}");
}

#[test]
fn decode_deep_nesting_is_skipped_without_recursion() {
    let depth = 100_000;
    for (open, close) in [("[", "]"), ("{\"x\":", "}")] {
        let deep = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let pack = format!(r#"[{{"bn":"k/","n":"a","v":1,"zz":{deep}}}]"#);
        assert_eq!(check(pack.as_bytes()).result, Ok(()));
        let pack = format!(r#"[{{"bn":"k/","n":"a","v":{deep}}}]"#);
        assert_eq!(check(pack.as_bytes()).errors.len(), 1);
        let pack = format!(r#"[{deep}]"#);
        assert_eq!(check(pack.as_bytes()).errors.len(), 1);
        let pack = format!(r#"[{{"zz":{deep}]"#);
        assert_eq!(check(pack.as_bytes()).result, Err("Malformed(JSON)".into()));
    }
}

#[test]
fn decode_tricky_inputs_match_serde_json() {
    let cases: &[&[u8]] = &[
        b"",
        b" ",
        b"[]",
        b" [ ] ",
        b"[] x",
        b"[],",
        b"[,]",
        b"[{},]",
        b"[{}]",
        b"[{,}]",
        b"[{\"n\":\"k/a\",}]",
        b"[{\"n\" \"k/a\"}]",
        b"[{\"n\":\"k/a\" \"v\":1}]",
        b"[{n:1}]",
        b"{}",
        b"\"x\"",
        b"[1, true, null, \"s\", [1,[2]], {\"a\":{}}]",
        b"[{\"n\":\"k/a\",\"v\":01}]",
        b"[{\"n\":\"k/a\",\"v\":-}]",
        b"[{\"n\":\"k/a\",\"v\":1.}]",
        b"[{\"n\":\"k/a\",\"v\":.5}]",
        b"[{\"n\":\"k/a\",\"v\":+1}]",
        b"[{\"n\":\"k/a\",\"v\":1e}]",
        b"[{\"n\":\"k/a\",\"v\":1e+}]",
        b"[{\"n\":\"k/a\",\"v\":-0}]",
        b"[{\"n\":\"k/a\",\"v\":-0.0}]",
        b"[{\"n\":\"k/a\",\"v\":1e400}]",
        b"[{\"n\":\"k/a\",\"v\":-1e400}]",
        b"[{\"n\":\"k/a\",\"zz\":1e400}]",
        b"[{\"n\":\"k/a\",\"v\":1e-400}]",
        b"[{\"n\":\"k/a\",\"v\":0e99999999999999999999}]",
        b"[{\"n\":\"k/a\",\"v\":1e99999999999999999999}]",
        b"[{\"n\":\"k/a\",\"v\":1e-99999999999999999999}]",
        b"[{\"n\":\"k/a\",\"v\":18446744073709551615}]",
        b"[{\"n\":\"k/a\",\"v\":18446744073709551616}]",
        b"[{\"n\":\"k/a\",\"v\":-9223372036854775808}]",
        b"[{\"n\":\"k/a\",\"v\":-9223372036854775809}]",
        b"[{\"n\":\"k/a\",\"v\":-18446744073709551616}]",
        b"[{\"n\":\"k/a\",\"v\":9007199254740993}]",
        b"[{\"n\":\"k/a\",\"v\":3.141592653589793238462643383279502884197}]",
        b"[{\"n\":\"k/a\",\"v\":2.2250738585072011e-308}]",
        b"[{\"n\":\"k/a\",\"v\":1.7976931348623157e308}]",
        b"[{\"n\":\"k/a\",\"v\":1.7976931348623159e308}]",
        b"[{\"n\":\"k/a\",\"v\":123456789012345678901234567890e-30}]",
        b"[{\"n\":\"k/a\",\"v\":0.000000000000000000000000000001e30}]",
        b"[{\"n\":\"k/a\",\"v\":true}]",
        b"[{\"n\":\"k/a\",\"vb\":true}]",
        b"[{\"n\":\"k/a\",\"vb\":tru}]",
        b"[{\"n\":\"k/a\",\"vs\":\"x\"}]",
        b"[{\"n\":\"k/a\",\"v\":1,\"v\":2}]",
        b"[{\"n\":\"k/a\",\"n\":\"k/b\",\"v\":2}]",
        b"[{\"n\":\"k/a\",\"v\":1,\"x_\":2,\"y_\":3}]",
        b"[{\"n\":\"k/a\",\"v\":1,\"x_\":2},{\"n\":\"k/a\",\"v\":1}] trailing",
        b"[{\"n\":\"k/a\",\"v\":1},{\"n\":\"k/a\",\"v\":1},{\"n\":\"k/b\",\"v\":1},{\"n\":\"k/b\",\"v\":1}]",
        b"[{\"bver\":11,\"n\":\"k/a\",\"v\":1}]",
        b"[{\"bver\":1e1,\"n\":\"k/a\",\"v\":1}]",
        b"[{\"n\":\"k/\\u00fc\",\"v\":1}]",
        b"[{\"n\":\"k/\\uD83D\\uDE00\",\"v\":1}]",
        b"[{\"n\":\"k/\\uD83D\",\"v\":1}]",
        b"[{\"n\":\"k/\\uDE00\",\"v\":1}]",
        b"[{\"n\":\"k/\\uD83D\\u0041\",\"v\":1}]",
        b"[{\"n\":\"k/\\uD83D\\n\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\\uD83D\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\\uZZZZ\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\\u12\"}]",
        b"[{\"n\":\"k/a\",\"u\":\"\\x\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\xff\",\"v\":1}]",
        b"[{\"n\":\"k/\xff\",\"v\":1}]",
        b"[{\"n\":\"k/\xc3\",\"v\":1}]",
        b"[{\"n\":\"k/\xc3\\n\",\"v\":1}]",
        b"[{\"n\":\"k/\xed\xa0\x80\",\"v\":1}]",
        b"[{\"n\":\"k/a\x01\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\x01\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"u\":\"\x7f\",\"v\":1}]",
        b"[{\"\xff\":1,\"n\":\"k/a\",\"v\":1}]",
        b"[{\"n\":\"k/a\",\"v\":{\"\xff\":1}}]",
        b"[{\"n\":\"k/a\",\"v\":{\"x\":\"\xff\"}}]",
        b"[{\"n\":\"k/a\",\"v\":{\"x\":{\"\xff\":1}}}]",
        b"[{\"n\":\"k/a\",\"v\":[\"\xff\"]}]",
        b"[{\"n\":\"k/a\",\"v\":{\"x\":1e400}}]",
        b"[\"\xff\"]",
        b"[1e400]",
        b"[[1e400]]",
        b"[{\"n\":\"k/a\",\"v\":1}\xef\xbb\xbf]",
        b"\xef\xbb\xbf[]",
        b"[{\"n\":\"k/a\",\"v\":1}]\x0c",
        b"[{\"n\":\"k/a\",\"v\":1}]\x00",
        b"[{\"n\":\"k/a\",\"v\":[1,]}]",
        b"[{\"n\":\"k/a\",\"zz\":[1,]}]",
        b"[{\"n\":\"k/a\",\"zz\":{\"a\":1,}}]",
        b"[{\"n\":\"k/a\",\"zz\":{\"a\" 1}}]",
        b"[{\"n\":\"k/a\",\"zz\":{1:1}}]",
        b"[{\"n\":\"k/a\",\"zz\":[}]}]",
        b"[{\"n\":\"k/a\",\"zz\":nul}]",
        b"[{\"n\":\"k/a\",\"zz\":-01}]",
        b"[{\"n\":\"k/a\",\"zz\":-a}]",
        b"[{\"n\":\"k/a\",\"zz\":1.e3}]",
        b"[{\"n\":\"k/a\"",
        b"[{\"n\":\"k/a",
        b"[{\"n\":\"k/a\\",
        b"[{\"n\":\"k/a\\u00",
        b"[{\"n\":\"k/a\",\"zz\":[[[[",
        b"[{\"n\":\"k/a\",\"zz\":\"\\u00",
        b"[{\"n\":\"k/a\",\"v\":1",
        b"[{\"n\":\"k/a\",\"v\":1}",
        b"[{\"n\":\"k/a\",\"v\":1},",
    ];
    for c in cases {
        check(c);
    }
}

// ---- generated packs ----------------------------------------------------

/// A JSON value, rendered with generated whitespace.
#[derive(Clone, Debug)]
enum J {
    /// A number, string or literal, as bytes (possibly invalid).
    Raw(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(Vec<u8>, J)>),
}

const WS: [&[u8]; 6] = [b"", b"", b" ", b"\n", b"\t\r ", b"  "];

fn render(j: &J, ws: &[u8], k: &mut usize, out: &mut Vec<u8>) {
    let sp = |out: &mut Vec<u8>, k: &mut usize| {
        if !ws.is_empty() {
            out.extend_from_slice(WS[usize::from(ws[*k % ws.len()]) % WS.len()]);
            *k += 1;
        }
    };
    match j {
        J::Raw(b) => out.extend_from_slice(b),
        J::Arr(v) => {
            out.push(b'[');
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                sp(out, k);
                render(e, ws, k, out);
                sp(out, k);
            }
            out.push(b']');
        }
        J::Obj(v) => {
            out.push(b'{');
            for (i, (key, e)) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                sp(out, k);
                out.push(b'"');
                out.extend_from_slice(key);
                out.push(b'"');
                sp(out, k);
                out.push(b':');
                sp(out, k);
                render(e, ws, k, out);
                sp(out, k);
            }
            out.push(b'}');
        }
    }
}

fn number() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(vec![
        "0",
        "-0",
        "-0.0",
        "1e400",
        "-1e400",
        "1e-400",
        "0e99999999999999999999",
        "1e99999999999999999999",
        "1e-99999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "9007199254740993",
        "2.2250738585072011e-308",
        "4.9e-324",
        "2.4703282292062328e-324",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "0.1",
        "0.30000000000000004",
        "1700000000.123",
        "1e22",
        "1e23",
        "123456789012345e-22",
        "1234567890123456e-22",
        "9007199254740992e22",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    let built = (
        any::<bool>(),
        prop_oneof![Just(String::from("0")), "[1-9][0-9]{0,24}"],
        prop::option::of("[0-9]{1,24}"),
        prop::option::of(("[eE]", "[+-]?", "[0-9]{1,4}")),
    )
        .prop_map(|(neg, int, frac, exp)| {
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            if let Some((e, sign, d)) = exp {
                s.push_str(&e);
                s.push_str(&sign);
                s.push_str(&d);
            }
            s.into_bytes()
        });
    prop_oneof![
        3 => built,
        2 => special,
        1 => any::<i64>().prop_map(|v| v.to_string().into_bytes()),
        1 => any::<u64>().prop_map(|v| v.to_string().into_bytes()),
        2 => any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (-1000i32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:03}").into_bytes()),
    ]
}

/// String contents (between the quotes), sometimes invalid.
fn string_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"a"[..],
        b"b",
        b"k",
        b"/",
        b"_",
        b"x y",
        b"\\\"",
        b"\\\\",
        b"\\/",
        b"\\b\\f\\n\\r\\t",
        b"\\u0062",
        b"\\u00FC",
        b"\\u00fc",
        b"\\uD83D\\uDE00",
        b"\xc3\xbc",
        b"\xf0\x9f\x98\x80",
        b"\\uD800",
        b"\\uDC00",
        b"\\uD800\\u0041",
        b"\\u12",
        b"\\x",
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\x01",
        b"\x7f",
    ]);
    prop::collection::vec(piece, 0..5).prop_map(|v| v.concat())
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            &b"a"[..], b"b", b"k/a", b"k/b", b"k/", b"j/", b"\\u0061", b"k\\/", b"\\u006B/",
            b"\xc3\xbc/", b"", b"c",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => string_body(),
    ]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::sample::select(vec![
            &b"bn"[..], b"bt", b"bv", b"bs", b"n", b"t", b"v", b"vb", b"s", b"bver", b"vs",
            b"vd", b"u", b"bu", b"ut", b"zz", b"x_", b"\\u0062n", b"\\u006e", b"\\u0076",
            b"b\\u0074", b"\\u0076s", b"x\\u005f", b"",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => string_body(),
    ]
}

fn quoted(b: Vec<u8>) -> Vec<u8> {
    let mut q = Vec::with_capacity(b.len() + 2);
    q.push(b'"');
    q.extend(b);
    q.push(b'"');
    q
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        3 => number().prop_map(J::Raw),
        2 => string_body().prop_map(|b| J::Raw(quoted(b))),
        1 => prop::sample::select(vec![&b"true"[..], b"false", b"null"])
            .prop_map(|b| J::Raw(b.to_vec())),
    ]
}

fn any_value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// A value that suits the label most of the time.
fn entry() -> impl Strategy<Value = (Vec<u8>, J)> {
    (
        key(),
        0..10u8,
        any_value(),
        number(),
        name(),
        any::<bool>(),
        0..700usize,
    )
        .prop_map(|(k, pick, any, num, name, b, depth)| {
            let v = match (pick, &k[..]) {
                (0, _) => any,
                // Deeper than the skipper keeps inline.
                (1, _) if depth > 500 => J::Raw(
                    format!("{}{}", "[{\"x\":".repeat(depth / 2), "}]".repeat(depth / 2))
                        .into_bytes(),
                ),
                (_, b"n" | b"bn" | b"\\u0062n" | b"\\u006e") => J::Raw(quoted(name)),
                (_, b"vb") => J::Raw(if b {
                    b"true".to_vec()
                } else {
                    b"false".to_vec()
                }),
                (_, b"bver") => J::Raw(format!("{}", pick + 5).into_bytes()),
                _ => J::Raw(num),
            };
            (k, v)
        })
}

fn record() -> impl Strategy<Value = J> {
    prop_oneof![
        12 => prop::collection::vec(entry(), 0..7).prop_map(J::Obj),
        1 => any_value(),
    ]
}

/// Byte edits: (kind, where as a fraction of the length, byte).
type Mutation = (u8, u16, u8);

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    const BYTES: &[u8] = b"{}[],:\"\\ 0-1e.+ntu\x00\x1f\x7f\xff\xc3";
    for &(kind, at, byte) in muts {
        let at = usize::from(at) * (b.len() + 1) / (usize::from(u16::MAX) + 1);
        let byte = BYTES[usize::from(byte) % BYTES.len()];
        match kind % 4 {
            0 if at < b.len() => b[at] = byte,
            1 => b.insert(at, byte),
            2 if at < b.len() => {
                b.remove(at);
            }
            3 => b.truncate(at),
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn decode_scanner_matches_serde_json(
        recs in prop::collection::vec(record(), 0..6),
        ws in prop::collection::vec(any::<u8>(), 0..8),
        muts in prop_oneof![
            2 => Just(Vec::new()),
            3 => prop::collection::vec(any::<Mutation>(), 1..4),
        ],
    ) {
        let mut payload = Vec::new();
        let mut k = 0;
        render(&J::Arr(recs), &ws, &mut k, &mut payload);
        let payload = mutate(payload, &muts);
        same(&payload)?;
    }
}

/// Numbers near the fast path's edges: up to 20 digits, a point anywhere,
/// exponents around ±22.
fn near_fast_path() -> impl Strategy<Value = Vec<u8>> {
    (
        "[1-9][0-9]{0,19}",
        0..21usize,
        prop::option::of(-30i32..30),
        any::<bool>(),
    )
        .prop_map(|(d, point, exp, neg)| {
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            if point == 0 || point >= d.len() {
                s.push_str(&d);
            } else {
                s.push_str(&d[..point]);
                s.push('.');
                s.push_str(&d[point..]);
            }
            if let Some(e) = exp {
                s.push_str(&format!("e{e}"));
            }
            s.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// One value read by the scanner and by serde_json's `ScalarSeed`.
    #[test]
    fn decode_scanner_scalars_match_serde_json(
        text in prop_oneof![near_fast_path(), number(), string_body().prop_map(quoted)],
    ) {
        use serde::de::DeserializeSeed;
        let mut sc = super::super::Scratch::default();
        let mut s = super::super::scan::Scan::new(&text);
        let new = s.scalar(&mut sc).and_then(|v| s.end().map(|()| v));
        let new = new.map(|v| (v, sc.str(v).to_owned())).map_err(|e| kind(&e));
        let mut sc = super::super::Scratch::default();
        let mut de = serde_json::Deserializer::from_slice(&text);
        let old = super::super::json::ScalarSeed(&mut sc)
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v));
        let old = old
            .map(|v| (v, sc.str(v).to_owned()))
            .map_err(|e| kind(&super::super::json::malformed(e)));
        prop_assert_eq!(
            format!("{new:?}"),
            format!("{old:?}"),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
    }
}
