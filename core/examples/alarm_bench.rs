//! False alarms and fault detection of every detector at its shipped
//! threshold, on a seeded generator of benign and faulty signals.
//!
//! `cargo run --release -p weir-core --example alarm_bench [-- RUNS]`
//!
//! Benign: 10 runs (default) of 10,000 samples each of white gaussian noise,
//! AR(1) with phi = 0.9 and 0.95, a daily sinusoid (1,440 samples a period,
//! amplitude 3 sigma) plus noise, and Student-t noise with nu = 3. Every
//! detector feeds an [`AlertGate`] (threshold = its shipped threshold,
//! hysteresis 0, cool-down 50, as `weir` runs it); a raised alert is a false
//! alarm. Printed: false alarms per 100,000 samples.
//!
//! `kestrel_c` is Kestrel with calibrated alarms (`kind =
//! "kestrel_calibrated"`, threshold = tail probability 1e-5 per sample).
//!
//! Faults: white noise with one fault at sample 5,000 — a 10 sigma spike,
//! a 3 sigma level shift, 3x the noise, a drift of 0.03 sigma per sample.
//! Detected = an alert raised within 100 samples of the onset; printed:
//! detection rate and mean delay (samples) of the detected runs.

use weir_core::detect::{
    AlertEdge, AlertGate, CusumConfig, Detector, DetectorConfig, EwmaConfig, KestrelConfig,
    MadConfig, DEFAULT_COOLDOWN, KESTREL_CALIBRATED,
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
    fn student3(&mut self) -> f64 {
        let chi: f64 = (0..3).map(|_| self.gauss().powi(2)).sum();
        // unit variance: var(t_3) = 3
        self.gauss() / (chi / 3.0).sqrt() / 3f64.sqrt()
    }
}

const LEN: usize = 10_000;
const ONSET: usize = 5_000;
const WITHIN: usize = 100;

fn benign(kind: &str, seed: u64) -> Vec<f64> {
    let mut r = Rng(seed);
    let mut y = 0.0;
    (0..LEN)
        .map(|i| match kind {
            "white" => 10.0 + r.gauss(),
            "ar0.9" | "ar0.95" => {
                let phi: f64 = if kind == "ar0.9" { 0.9 } else { 0.95 };
                y = phi * y + (1.0 - phi * phi).sqrt() * r.gauss();
                10.0 + y
            }
            "seasonal" => {
                10.0 + 3.0 * (std::f64::consts::TAU * i as f64 / 1440.0).sin() + r.gauss()
            }
            "student3" => 10.0 + r.student3(),
            _ => unreachable!(),
        })
        .collect()
}

fn faulty(kind: &str, seed: u64) -> Vec<f64> {
    let mut r = Rng(seed ^ 0x5eed);
    (0..LEN)
        .map(|i| {
            let e = r.gauss();
            let after = i >= ONSET;
            10.0 + match kind {
                "spike10" if i == ONSET => e + 10.0,
                "shift3" if after => e + 3.0,
                "noise3x" if after => 3.0 * e,
                "drift" if after => e + 0.03 * (i - ONSET) as f64,
                _ => e,
            }
        })
        .collect()
}

/// Alert raises of one detector over one series, as sample indices.
fn raises(cfg: &DetectorConfig, v: &[f64]) -> Vec<usize> {
    let mut d = Detector::new(cfg);
    let mut g = AlertGate::new(d.default_threshold(), 0.0, DEFAULT_COOLDOWN);
    let mut out = Vec::new();
    for (i, &x) in v.iter().enumerate() {
        let s = d
            .update(1_700_000_000_000 + i as i64 * 60_000, x)
            .unwrap_or(0.0);
        if g.update(s) == Some(AlertEdge::Raised) {
            out.push(i);
        }
    }
    out
}

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let dets = [
        ("ewma", DetectorConfig::Ewma(EwmaConfig::default())),
        ("mad", DetectorConfig::Mad(MadConfig::default())),
        ("cusum", DetectorConfig::Cusum(CusumConfig::default())),
        ("kestrel", DetectorConfig::Default(KestrelConfig::default())),
        ("kestrel_c", DetectorConfig::Default(KESTREL_CALIBRATED)),
    ];
    println!(
        "state per key: kestrel / kestrel_c {} B, mad {} B, cusum {} B, ewma {} B",
        weir_core::detect::Kestrel::STATE_BYTES,
        std::mem::size_of::<weir_core::detect::MadDetector>(),
        std::mem::size_of::<weir_core::detect::CusumDetector>(),
        std::mem::size_of::<weir_core::detect::EwmaDetector>(),
    );
    let benigns = ["white", "ar0.9", "ar0.95", "seasonal", "student3"];
    let faults = ["spike10", "shift3", "noise3x", "drift"];
    println!("false alarms per 100k samples ({runs} x {LEN} samples each)");
    print!("{:<10}", "detector");
    for b in benigns {
        print!(" {b:>9}");
    }
    println!();
    for (name, cfg) in &dets {
        print!("{name:<10}");
        for b in benigns {
            let n: usize = (0..runs)
                .map(|s| raises(cfg, &benign(b, s + 1)).len())
                .sum();
            print!(
                " {:>9.1}",
                n as f64 * 100_000.0 / (runs as f64 * LEN as f64)
            );
        }
        println!();
    }
    println!("faults at sample {ONSET}: detected within {WITHIN} samples (rate, mean delay)");
    print!("{:<10}", "detector");
    for f in faults {
        print!(" {f:>14}");
    }
    println!();
    for (name, cfg) in &dets {
        print!("{name:<10}");
        for f in faults {
            let mut hit = 0usize;
            let mut delay = 0usize;
            for s in 0..runs {
                let r = raises(cfg, &faulty(f, s + 1));
                if let Some(&i) = r.iter().find(|&&i| (ONSET..ONSET + WITHIN).contains(&i)) {
                    hit += 1;
                    delay += i - ONSET;
                }
            }
            let mean = if hit > 0 {
                delay as f64 / hit as f64
            } else {
                f64::NAN
            };
            print!(" {:>6.2} {:>7.1}", hit as f64 / runs as f64, mean);
        }
        println!();
    }
}
