//! `DecoderConfig::nulls` (a SQL table's nullable columns): a field that
//! is absent or `null` (JSON, CBOR), or missing from a SenML group, is a
//! NaN (`NULL`) in the sample instead of a record error; anything else
//! stays an error. Without it, the same payloads give the errors.

use weir_agent::decode::{Batch, DecoderConfig};
use weir_core::time::TimeUnit;

const NOW: i64 = 1_800_000_000_000;

/// (key, ts, values with NaN as `None`), and the errors' reasons.
type Got = (Vec<(String, i64, Vec<Option<f64>>)>, Vec<&'static str>);

fn decode(config: &str, nulls: bool, payload: &[u8]) -> Got {
    let mut cfg: DecoderConfig = toml::from_str(config).unwrap();
    cfg.nulls = nulls;
    let d = cfg
        .build(&["temp".into(), "hum".into()], TimeUnit::Millis)
        .unwrap();
    let mut b = Batch::new();
    d.decode("t", payload, NOW, &mut b).unwrap();
    let samples = b
        .iter()
        .map(|s| {
            let v = s.values.iter().map(|x| (!x.is_nan()).then_some(*x));
            (s.key.to_string(), s.ts, v.collect())
        })
        .collect();
    (samples, b.errors().iter().map(|e| e.reason()).collect())
}

#[test]
fn absent_and_null_json_fields_are_null_only_with_nulls() {
    let cfg = "format = \"json\"\nkey = \"k\"\nts = \"t\"";
    let p = br#"[{"k":"a","t":1,"temp":20.5,"hum":null},{"k":"a","t":2},
        {"k":"b","t":3,"temp":"hot","hum":1},{"k":"b","t":4,"temp":1,"hum":40}]"#;
    let (samples, errors) = decode(cfg, true, p);
    assert_eq!(
        samples,
        [
            ("a".into(), 1, vec![Some(20.5), None]),
            ("a".into(), 2, vec![None, None]),
            ("b".into(), 4, vec![Some(1.0), Some(40.0)]),
        ]
    );
    assert_eq!(errors, ["wrong_type"], "a string is not NULL");
    let (samples, errors) = decode(cfg, false, p);
    assert_eq!(samples, [("b".into(), 4, vec![Some(1.0), Some(40.0)])]);
    assert_eq!(errors, ["wrong_type", "missing_field", "wrong_type"]);
}

#[test]
fn a_field_missing_from_a_senml_group_is_null_only_with_nulls() {
    let cfg = "format = \"senml_json\"";
    let p = br#"[{"bn":"a/","bt":1800000000,"n":"temp","v":21},
        {"n":"hum","v":40,"t":1},{"n":"temp","v":22,"t":1}]"#;
    let (samples, errors) = decode(cfg, true, p);
    assert_eq!(
        samples,
        [
            ("a".into(), 1_800_000_000_000, vec![Some(21.0), None]),
            ("a".into(), 1_800_000_001_000, vec![Some(22.0), Some(40.0)]),
        ]
    );
    assert!(errors.is_empty(), "{errors:?}");
    let (samples, errors) = decode(cfg, false, p);
    assert_eq!(samples.len(), 1);
    assert_eq!(errors, ["missing_field"]);
}
