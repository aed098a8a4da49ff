//! Detector throughput, one core, beside a reference run in the same
//! process: a plain inline EWMA z-score loop over the same samples.
//!
//! `cargo run --release -p weir-core --example detect_bench [-- SAMPLES]`
//!
//! Input: 100 synthetic sensors (sine + gaussian noise + rare spikes and
//! level shifts), one detector instance per sensor, as on a gateway.

// A benchmark measures wall time: the sans-IO clock ban is for the library.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use weir_core::detect::{
    AlertGate, CusumConfig, CusumDetector, Detector, DetectorConfig, EwmaConfig, EwmaDetector,
    Kestrel, KestrelConfig, MadConfig, MadDetector,
};

struct Rng(u64);
impl Rng {
    fn u01(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let (a, b) = (1.0 - self.u01(), self.u01());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000_000);
    let sensors = 100;
    let per = n / sensors;
    let mut rng = Rng(7);
    let series: Vec<Vec<f64>> = (0..sensors)
        .map(|s| {
            let mut level = 20.0 + s as f64 % 7.0;
            (0..per)
                .map(|i| {
                    if rng.u01() < 1e-4 {
                        level += 5.0 * rng.gauss();
                    }
                    let spike = if rng.u01() < 1e-4 { 30.0 } else { 0.0 };
                    level + (i as f64 / 50.0).sin() * 3.0 + 0.3 * rng.gauss() + spike
                })
                .collect()
        })
        .collect();
    let total = (per * sensors) as f64;

    let t = Instant::now();
    let mut acc = 0.0f64;
    for v in &series {
        let (mut m, mut var) = (v[0], 0.0f64);
        for &x in v {
            let d = x - m;
            acc += d / (var + 1e-12).sqrt();
            m += 0.01 * d;
            var = 0.99 * (var + 0.01 * d * d);
        }
    }
    black_box(acc);
    let reference = total / t.elapsed().as_secs_f64();
    println!(
        "{:<9} {:>13.0} samples/s  (plain EWMA z-score loop)",
        "reference", reference
    );

    for (name, cfg) in [
        ("ewma", DetectorConfig::Ewma(EwmaConfig::default())),
        ("mad", DetectorConfig::Mad(MadConfig::default())),
        ("cusum", DetectorConfig::Cusum(CusumConfig::default())),
        ("kestrel", DetectorConfig::Default(KestrelConfig::default())),
    ] {
        let t = Instant::now();
        let mut alerts = 0u64;
        for v in &series {
            let mut d = Detector::new(&cfg);
            let mut g = AlertGate::new(d.default_threshold(), 0.0, 50);
            for (i, &x) in v.iter().enumerate() {
                let s = d
                    .update(1_700_000_000_000 + i as i64 * 1000, x)
                    .unwrap_or(0.0);
                alerts += g.update(s).is_some() as u64;
            }
        }
        let rate = total / t.elapsed().as_secs_f64();
        println!(
            "{name:<9} {rate:>13.0} samples/s  ratio to reference {:.4}  ({alerts} gate edges)",
            rate / reference
        );
    }
    println!(
        "size_of: Detector {} B (Kestrel {} B, MadDetector {} B, EwmaDetector {} B, CusumDetector {} B), AlertGate {} B; {} samples",
        core::mem::size_of::<Detector>(),
        core::mem::size_of::<Kestrel>(),
        core::mem::size_of::<MadDetector>(),
        core::mem::size_of::<EwmaDetector>(),
        core::mem::size_of::<CusumDetector>(),
        core::mem::size_of::<AlertGate>(),
        total as u64
    );
}
