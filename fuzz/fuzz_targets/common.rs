//! Shared by the decoder targets: decoders built once, a batch reused across
//! inputs (as the agent does), and the invariants every decode must keep.

use std::cell::RefCell;

use weir_agent::decode::{Batch, DecodeError, Decoder, DecoderConfig};
use weir_core::time::TimeUnit;

/// Decoders for one format: paths/names in the payload, key from the topic,
/// and a microsecond pipeline.
pub fn decoders(format: &str) -> Vec<Decoder> {
    let generic = format == "json" || format == "cbor";
    let configs = if generic {
        vec![
            "key = \"id\"\nts = \"ts\"\nfields = { a = \"m.a\", b = \"m.b\" }",
            "key_from_topic = 1\nts = \"t\"\nts_unit = \"s\"",
            "key = \"d.id\"\nts = \"d.t\"\nts_unit = \"ns\"\nmax_records = 4",
        ]
    } else {
        vec![
            "",
            "key_from_topic = 1\nfields = { a = \"temp\" }",
            "max_records = 4\nname_separators = \"/\"",
        ]
    };
    let mut out = Vec::new();
    for (i, extra) in configs.iter().enumerate() {
        let text = format!("format = \"{format}\"\n{extra}");
        let cfg: DecoderConfig = toml::from_str(&text).expect("config");
        let unit = if i == 2 {
            TimeUnit::Micros
        } else {
            TimeUnit::Millis
        };
        let fields = ["a".to_string(), "b".to_string()];
        out.push(cfg.build(&fields, unit).expect("build"));
    }
    out
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::new());
}

pub fn run(decoders: &[Decoder], data: &[u8]) {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        for (i, d) in decoders.iter().enumerate() {
            for now in [1_800_000_000_000, i64::MAX - 1000, i64::MIN + 1000] {
                let r = d.decode("site/dev-1/x", data, now, &mut b);
                check(&b, &r, i);
            }
        }
    });
}

fn check(b: &Batch, r: &Result<(), DecodeError>, i: usize) {
    if let Err(e) = r {
        assert!(b.is_empty() && b.errors().is_empty());
        assert!(DecodeError::REASONS.contains(&e.reason()));
        let _ = e.to_string();
    }
    for s in b.iter() {
        assert_eq!(s.values.len(), 2);
        assert!(s.values.iter().all(|v| v.is_finite()), "decoder {i}: {s:?}");
    }
    for e in b.errors() {
        assert!(
            e.record().is_some_and(|r| r < b.records()),
            "decoder {i}: {e:?} of {}",
            b.records()
        );
        assert!(DecodeError::REASONS.contains(&e.reason()));
        let _ = e.to_string();
    }
}
