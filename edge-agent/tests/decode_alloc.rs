//! Once a batch has grown, decoding good messages does not allocate.

mod decode_util;

use std::alloc::System;

use decode_util::cb;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use weir_agent::decode::{Batch, Decoder, DecoderConfig, Format};
use weir_core::time::TimeUnit::Millis;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A decoder that also reads the text at `m.site` (a SQL `WHERE` on a
/// STRING column), for JSON and CBOR.
fn decoder(toml_text: &str, fields: &[&str], unit: weir_core::time::TimeUnit) -> Decoder {
    let mut cfg: DecoderConfig = toml::from_str(toml_text).unwrap();
    if !toml_text.contains("senml") {
        cfg.texts = vec!["m.site".into()];
    }
    let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    cfg.build(&fields, unit).unwrap()
}

#[test]
fn steady_state_decoding_does_not_allocate() {
    let generic = "key = \"id\"\nts = \"ts\"\nfields = { a = \"m.a\", b = \"m.b\" }";
    let json = decoder(
        &format!("format = \"json\"\n{generic}"),
        &["a", "b"],
        Millis,
    );
    let cbor = decoder(
        &format!("format = \"cbor\"\n{generic}"),
        &["a", "b"],
        Millis,
    );
    let sj = decoder("format = \"senml_json\"", &["a", "b"], Millis);
    let sc = decoder("format = \"senml_cbor\"", &["a", "b"], Millis);

    let mut recs = Vec::new();
    let mut senml = Vec::new();
    let mut c = cb();
    let mut s = cb();
    c.array(60);
    s.array(120);
    for i in 0..60 {
        let (id, ts) = (format!("dev-{}", i % 7), 1_700_000_000_000i64 + i);
        let site = format!("s{}", i % 3);
        recs.push(format!(
            r#"{{"id":"{id}","ts":{ts},"m":{{"a":{i}.5,"b":-{i},"site":"{site}"}}}}"#
        ));
        senml.push(format!(
            r#"{{"bn":"{id}:","bt":{}.{:03},"n":"a","v":{i}.5}},{{"n":"b","v":-{i}}}"#,
            ts / 1000,
            ts % 1000
        ));
        c.map(3)
            .text("id")
            .text(&id)
            .text("ts")
            .int(ts)
            .text("m")
            .map(3)
            .text("a")
            .f64(i as f64)
            .text("b")
            .int(-i)
            .text("site")
            .text(&site);
        s.map(4)
            .int(-2)
            .text(&format!("{id}:"))
            .int(-3)
            .f64(ts as f64 / 1000.0)
            .int(0)
            .text("a")
            .int(2)
            .f64(i as f64);
        s.map(2).int(0).text("b").int(2).int(-i);
    }
    let cases = [
        (&json, format!("[{}]", recs.join(",")).into_bytes()),
        (&cbor, c.done()),
        (&sj, format!("[{}]", senml.join(",")).into_bytes()),
        (&sc, s.done()),
    ];
    let mut batch = Batch::new();
    for (d, p) in &cases {
        d.decode("t", p, 0, &mut batch).unwrap();
        assert_eq!(
            (batch.len(), batch.errors().len()),
            (60, 0),
            "{:?}",
            d.format()
        );
        if !matches!(d.format(), Format::SenmlJson | Format::SenmlCbor) {
            assert_eq!(batch.text(59, 0), Some("s2"));
        }
    }
    // The counter is process-wide: another thread (libtest's own, when the
    // machine is loaded) may allocate during a measurement. A decoder that
    // allocates does so in every attempt, so the fewest of a few attempts
    // still catches it.
    for (d, p) in &cases {
        let fewest = (0..5)
            .map(|_| {
                let region = Region::new(GLOBAL);
                for _ in 0..10 {
                    d.decode("t", p, 0, &mut batch).unwrap();
                }
                let st = region.change();
                st.allocations + st.reallocations
            })
            .min()
            .unwrap_or_default();
        assert_eq!(
            fewest,
            0,
            "{:?}: {fewest} allocations in 10 decodes",
            d.format()
        );
        assert_eq!(batch.len(), 60);
    }
}
