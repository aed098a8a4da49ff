//! Decoder throughput: readings per second for packs of 100 readings in each
//! format, beside a reference pass over the same bytes (serde_json into a
//! `Value` for JSON, minicbor's `skip` for CBOR).
//!
//!     cargo run --release -p weir-agent --example decode_bench [SECONDS_PER_CASE [FORMAT]]

use std::hint::black_box;
use std::time::{Duration, Instant};

use weir_agent::decode::{Batch, Decoder, DecoderConfig};
use weir_core::time::TimeUnit;

const PACK: usize = 100;
const MESSAGES: usize = 1000;

fn value(i: usize) -> f64 {
    // Typical sensor readings: a few significant digits.
    ((i * 7919) % 100_000) as f64 / 100.0 - 250.0
}

/// `MESSAGES` packs; each has 10 sensors × 10 times, one reading per record.
fn json_packs() -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|m| {
            let recs: Vec<String> = (0..PACK)
                .map(|r| {
                    let ts = 1_700_000_000_000 + (m * 10 + r % 10) as i64;
                    format!(
                        r#"{{"id":"gw1/sensor-{}","ts":{ts},"m":{{"value":{}}}}}"#,
                        r / 10,
                        value(m * PACK + r)
                    )
                })
                .collect();
            format!("[{}]", recs.join(",")).into_bytes()
        })
        .collect()
}

fn senml_json_packs() -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|m| {
            let mut recs = Vec::new();
            for r in 0..PACK {
                let v = value(m * PACK + r);
                let t = (r % 10) as f64 / 1000.0;
                recs.push(if r % 10 == 0 {
                    format!(
                        r#"{{"bn":"gw1/sensor-{}/","bt":{}.{:03},"n":"value","v":{v}}}"#,
                        r / 10,
                        1_700_000_000 + m / 100,
                        m % 100 * 10
                    )
                } else {
                    format!(r#"{{"n":"value","t":{t},"v":{v}}}"#)
                });
            }
            format!("[{}]", recs.join(",")).into_bytes()
        })
        .collect()
}

/// Minimal CBOR writer (definite lengths).
struct Cb(Vec<u8>);
impl Cb {
    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..=23 => self.0.push(m | n as u8),
            24..=0xff => self.0.extend([m | 24, n as u8]),
            0x100..=0xffff => {
                self.0.push(m | 25);
                self.0.extend((n as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend((n as u32).to_be_bytes())
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend(n.to_be_bytes())
            }
        }
    }
    fn int(&mut self, v: i64) {
        if v >= 0 {
            self.head(0, v as u64)
        } else {
            self.head(1, (-1 - v) as u64)
        }
    }
    fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.0.extend(s.as_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.push(0xfb);
        self.0.extend(v.to_bits().to_be_bytes());
    }
}

fn cbor_packs() -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|m| {
            let mut c = Cb(Vec::new());
            c.head(4, PACK as u64);
            for r in 0..PACK {
                c.head(5, 3);
                c.text("id");
                c.text(&format!("gw1/sensor-{}", r / 10));
                c.text("ts");
                c.int(1_700_000_000_000 + (m * 10 + r % 10) as i64);
                c.text("m");
                c.head(5, 1);
                c.text("value");
                c.f64(value(m * PACK + r));
            }
            c.0
        })
        .collect()
}

fn senml_cbor_packs() -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|m| {
            let mut c = Cb(Vec::new());
            c.head(4, PACK as u64);
            for r in 0..PACK {
                if r % 10 == 0 {
                    c.head(5, 4);
                    c.int(-2);
                    c.text(&format!("gw1/sensor-{}/", r / 10));
                    c.int(-3);
                    c.f64(1_700_000_000.0 + m as f64 / 100.0);
                } else {
                    c.head(5, 3);
                    c.int(6);
                    c.f64((r % 10) as f64 / 1000.0);
                }
                c.int(0);
                c.text("value");
                c.int(2);
                c.f64(value(m * PACK + r));
            }
            c.0
        })
        .collect()
}

fn decoder(toml_text: &str) -> Decoder {
    let cfg: DecoderConfig = toml::from_str(toml_text).expect("config");
    cfg.build(&["value".to_string()], TimeUnit::Millis)
        .expect("build")
}

/// Runs `f` over all messages until `budget` has passed; readings/s.
fn measure(budget: Duration, msgs: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> usize) -> (f64, usize) {
    let mut readings = 0usize;
    let mut check = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        for m in msgs {
            let n = f(black_box(m));
            readings += PACK;
            check += n;
        }
    }
    (readings as f64 / start.elapsed().as_secs_f64(), check)
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let only = std::env::args().nth(2);
    let generic = "key = \"id\"\nts = \"ts\"\nfields = { value = \"m.value\" }";
    let cases: [(&str, Vec<Vec<u8>>, Decoder, bool); 4] = [
        (
            "json",
            json_packs(),
            decoder(&format!("format = \"json\"\n{generic}")),
            true,
        ),
        (
            "cbor",
            cbor_packs(),
            decoder(&format!("format = \"cbor\"\n{generic}")),
            false,
        ),
        (
            "senml_json",
            senml_json_packs(),
            decoder("format = \"senml_json\"\nname_separators = \"/\""),
            true,
        ),
        (
            "senml_cbor",
            senml_cbor_packs(),
            decoder("format = \"senml_cbor\"\nname_separators = \"/\""),
            false,
        ),
    ];
    println!("packs of {PACK} readings, {MESSAGES} distinct messages, {secs} s per case");
    println!(
        "{:<11} {:>9} {:>16} {:>16} {:>7}",
        "format", "bytes/msg", "decode rd/s", "reference rd/s", "ratio"
    );
    let mut batch = Batch::new();
    for (name, msgs, d, is_json) in &cases {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        // Every message decodes to exactly PACK samples, no errors.
        for m in msgs {
            d.decode("t", m, 0, &mut batch).expect("decodes");
            assert_eq!((batch.len(), batch.errors().len()), (PACK, 0), "{name}");
        }
        let (rate, n) = measure(budget, msgs, |m| {
            d.decode("t", m, 0, &mut batch).expect("decodes");
            batch.len()
        });
        black_box(n);
        let (reference, n) = if *is_json {
            measure(budget, msgs, |m| {
                match serde_json::from_slice::<serde_json::Value>(m) {
                    Ok(serde_json::Value::Array(a)) => a.len(),
                    _ => 0,
                }
            })
        } else {
            measure(budget, msgs, |m| {
                let mut d = minicbor::Decoder::new(m);
                d.skip().map_or(0, |()| d.position())
            })
        };
        black_box(n);
        let bytes = msgs.iter().map(Vec::len).sum::<usize>() / msgs.len();
        let rname = if *is_json { "serde Value" } else { "cbor skip" };
        println!(
            "{name:<11} {bytes:>9} {:>16} {:>16} {:>6.2}x  (reference: {rname})",
            fmt(rate),
            fmt(reference),
            rate / reference
        );
    }
}

fn fmt(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}
