//! Shared helpers of the decoder tests: a tiny CBOR writer written from
//! RFC 8949 §3 (independent of minicbor, which the decoder uses) and a
//! runner that flattens a batch for comparisons.
#![allow(dead_code)]

use weir_agent::decode::{Batch, DecodeError, Decoder, DecoderConfig};
use weir_core::time::TimeUnit;

/// A CBOR writer: call the item methods in order.
#[derive(Default)]
pub struct Cb(pub Vec<u8>);

impl Cb {
    pub fn head(&mut self, major: u8, n: u64) -> &mut Self {
        let m = major << 5;
        match n {
            0..=23 => self.0.push(m | n as u8),
            24..=0xff => self.0.extend([m | 24, n as u8]),
            0x100..=0xffff => {
                self.0.push(m | 25);
                self.0.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend((n as u32).to_be_bytes());
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend(n.to_be_bytes());
            }
        }
        self
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            self.head(0, v as u64)
        } else {
            self.head(1, (-1 - v) as u64)
        }
    }
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.head(3, s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(2, b.len() as u64);
        self.0.extend(b);
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.0.push(0xfb);
        self.0.extend(v.to_bits().to_be_bytes());
        self
    }
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.0.push(0xfa);
        self.0.extend(v.to_bits().to_be_bytes());
        self
    }
    pub fn array(&mut self, n: u64) -> &mut Self {
        self.head(4, n)
    }
    pub fn map(&mut self, n: u64) -> &mut Self {
        self.head(5, n)
    }
    pub fn tag(&mut self, t: u64) -> &mut Self {
        self.head(6, t)
    }
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.0.push(if b { 0xf5 } else { 0xf4 });
        self
    }
    pub fn null(&mut self) -> &mut Self {
        self.0.push(0xf6);
        self
    }
    /// Start of an indefinite array (0x9f) / map (0xbf); end with `brk`.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend(b);
        self
    }
    pub fn brk(&mut self) -> &mut Self {
        self.0.push(0xff);
        self
    }
    pub fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

pub fn cb() -> Cb {
    Cb::default()
}

/// Builds a decoder from TOML, for `fields`.
pub fn decoder(toml_text: &str, fields: &[&str], unit: TimeUnit) -> Decoder {
    let cfg: DecoderConfig = toml::from_str(toml_text).expect("config parses");
    let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    cfg.build(&fields, unit).expect("config builds")
}

pub type Sample = (String, i64, Vec<f64>);

/// Decodes and flattens: samples, record error reasons with their record.
pub struct Run {
    pub result: Result<(), DecodeError>,
    pub samples: Vec<Sample>,
    pub errors: Vec<DecodeError>,
    pub records: usize,
    pub ignored: usize,
}

impl Run {
    pub fn reasons(&self) -> Vec<(usize, &'static str)> {
        self.errors
            .iter()
            .map(|e| (e.record().unwrap(), e.reason()))
            .collect()
    }
    pub fn err(&self) -> &'static str {
        self.result
            .as_ref()
            .expect_err("expected a message error")
            .reason()
    }
}

pub fn run(d: &Decoder, topic: &str, payload: &[u8], now: i64) -> Run {
    let mut b = Batch::new();
    let result = d.decode(topic, payload, now, &mut b);
    check_batch(&b, &result);
    Run {
        samples: b
            .iter()
            .map(|s| (s.key.to_string(), s.ts, s.values.to_vec()))
            .collect(),
        errors: b.errors().to_vec(),
        records: b.records(),
        ignored: b.ignored(),
        result,
    }
}

/// Invariants of every decode, good or bad input.
pub fn check_batch(b: &Batch, result: &Result<(), DecodeError>) {
    if result.is_err() {
        assert!(
            b.is_empty() && b.errors().is_empty(),
            "a rejected message leaves nothing"
        );
    }
    for s in b.iter() {
        assert!(s.values.iter().all(|v| v.is_finite()), "{s:?}");
    }
    for e in b.errors() {
        let r = e.record().expect("record errors name their record");
        assert!(r < b.records().max(1), "{e} of {} records", b.records());
        assert!(weir_agent::decode::DecodeError::REASONS.contains(&e.reason()));
        let _ = e.to_string();
    }
    if let Err(e) = result {
        assert!(weir_agent::decode::DecodeError::REASONS.contains(&e.reason()));
        let _ = e.to_string();
    }
}

pub fn s(key: &str, ts: i64, v: &[f64]) -> Sample {
    (key.to_string(), ts, v.to_vec())
}
