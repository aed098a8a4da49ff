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
//! `kestrel_b` is banded Kestrel (`kind = "kestrel_banded"`: Kestrel's
//! ranking below the threshold, calibrated alarms at 5/15 = p 1e-5).
//! `composite` is a prototype that is not a detector kind (see
//! [`Composite`]; docs/detectors.md has why it is not shipped).
//!
//! `alarm_bench nab NAB_DIR OUT [kestrel_banded|composite]` writes a prototype's
//! scores over NAB's series in the scorer's layout instead, then runs the
//! shared scorer on them (`$SCORER`, default `../shared/eval/nab_score.py`)
//! at its best threshold and at the shipped 5/15;
//! `alarm_bench dump NAB_DIR FILE` writes Kestrel's non-zero scores and
//! rule (index, score, `parts()[3]`) on the bench's series and NAB's.
//!
//! Faults: white noise with one fault at sample 5,000 — a 10 sigma spike,
//! a 3 sigma level shift, 3x the noise, a drift of 0.03 sigma per sample.
//! Detected = an alert raised within 100 samples of the onset; printed:
//! detection rate and mean delay (samples) of the detected runs.

use weir_core::detect::{
    surprise_to_unit, AlertEdge, AlertGate, CusumConfig, Detector, DetectorConfig, EwmaConfig,
    KestrelConfig, MadConfig, DEFAULT_COOLDOWN, KESTREL_BANDED, KESTREL_CALIBRATED,
};

/// Prototype (bench only, issue 15 part B): calibrated Kestrel plus two
/// change detectors on residuals standardized against a slow EWMA baseline
/// — a two-sided CUSUM of the (clipped) residuals for level shifts and
/// drift, a one-sided CUSUM of `ln z^2` for more noise — each turned into a
/// tail probability by Siegmund's average run length (one alarm in ARL
/// samples ~ p = 1 / ARL); the score is the largest stage's, so the shipped
/// threshold (p = 1e-5, 5/15) means a tail probability for every stage.
/// Autocorrelation is measured, not assumed: the level stage's residuals
/// are scaled by how much more an EWMA of them varies than it would for
/// independent ones, the variance stage's by the lag-1 autocorrelation.
struct Composite {
    k: Detector,
    m: f64,
    v: f64,
    n: u64,
    up: f64,
    down: f64,
    var: f64,
    c1: f64,
    c0: f64,
    zl: f64,
    sm: f64,
    sv: f64,
}

impl Composite {
    fn new() -> Self {
        Composite {
            k: Detector::new(&DetectorConfig::Default(KESTREL_CALIBRATED)),
            m: 0.0,
            v: 0.0,
            n: 0,
            up: 0.0,
            down: 0.0,
            var: 0.0,
            c1: 0.0,
            c0: 1.0,
            zl: 0.0,
            sm: 0.0,
            sv: 0.05 / 1.95,
        }
    }
    fn update(&mut self, ts: i64, x: f64) -> f64 {
        let sk = self.k.update(ts, x).unwrap_or(0.0);
        self.n += 1;
        if self.n == 1 {
            self.m = x;
            return sk;
        }
        let a = (1.0 / self.n as f64).max(0.01);
        let sd = self.v.sqrt().max(1e-9);
        let z = ((x - self.m) / sd).clamp(-50.0, 50.0);
        // lag-1 autocorrelation of the residuals (for the variance stage)
        let rho = (self.c1 / self.c0.max(1e-12)).clamp(0.0, 0.99);
        if self.n < 60 {
            self.learn(a, x, z);
            return sk;
        }
        // clipped (Huber): a heavy-tailed sample moves the mean stage by
        // at most 3 sigma; spikes are Kestrel's. Scaled to the residuals'
        // own variability at the stage's horizon: an EWMA of z (rate B)
        // has variance B / (2 - B) for independent residuals; measured
        // larger (autocorrelation, an unmodelled season), z counts less
        let zc = z.clamp(-3.0, 3.0);
        const B: f64 = 0.05;
        self.sm += B * (zc - self.sm);
        let f = (B / (2.0 - B) / self.sv.max(1e-12)).sqrt().min(1.0);
        let zc = zc * f;
        self.up = (self.up + zc - 0.5).max(0.0);
        self.down = (self.down - zc - 0.5).max(0.0);
        // variance stage on ln z^2 (robust to heavy tails), standardized
        // for N(0,1) (mean -1.27, sd 2.22), long-run scaled by rho^2
        let r2 = rho * rho;
        let u = (libm::log(z * z + 1e-12) + 1.27) / 2.22 * ((1.0 - r2) / (1.0 + r2)).sqrt();
        self.var = (self.var + u.min(6.0) - 0.5).max(0.0);
        let cm = self.up.max(self.down);
        // Siegmund: CUSUM (k = 1/2) average run length to h; one alarm in
        // ARL samples ~ a tail probability of 1 / ARL (two-sided: / 2)
        let arl = |s: f64, sides: f64| {
            let h = s + 1.166;
            ((h.exp() - 1.0 - h) / 0.5 / sides).max(1.0)
        };
        let lm = arl(cm, 2.0).log10();
        let lv = arl(self.var, 1.0).log10();
        // the baseline always follows (freezing it on suspicion locks a
        // wandering signal out); the stages hold what moves faster
        self.learn(a, x, z);
        // always learnt, slowly (gating it on suspicion locks a wandering
        // signal out): over a fault's first 100 samples it moves ~10 %
        self.sv += 0.001 * (self.sm * self.sm - self.sv);
        if self.n < 500 {
            return sk;
        }
        sk.max(surprise_to_unit(lm)).max(surprise_to_unit(lv))
    }

    fn learn(&mut self, a: f64, x: f64, z: f64) {
        let d = x - self.m;
        self.m += a * d;
        // the scale follows 5x slower than the level: a noisier machine
        // is not absorbed before the variance stage has seen it
        let av = (a * 0.2).max(1.0 / self.n as f64).min(a);
        self.v = (1.0 - av) * (self.v + av * d * d);
        self.c1 += a * (z * self.zl - self.c1);
        self.c0 += a * (z * z - self.c0);
        self.zl = z;
    }
}

fn raises_composite(v: &[f64]) -> Vec<usize> {
    let mut d = Composite::new();
    let mut g = AlertGate::new(5.0 / 15.0, 0.0, DEFAULT_COOLDOWN);
    let mut out = Vec::new();
    for (i, &x) in v.iter().enumerate() {
        let s = d.update(1_700_000_000_000 + i as i64 * 60_000, x);
        if g.update(s) == Some(AlertEdge::Raised) {
            out.push(i);
        }
    }
    out
}

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
fn raises(cfg: &Option<DetectorConfig>, v: &[f64]) -> Vec<usize> {
    let Some(cfg) = cfg else {
        return raises_composite(v);
    };
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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("nab") {
        let which = args.get(4).map(String::as_str).unwrap_or("kestrel_banded");
        nab(&args[2], &args[3], which);
        return score_nab(&args[3]);
    }
    if args.get(1).map(String::as_str) == Some("dump") {
        return dump(&args[2], &args[3]);
    }
    let runs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dets = [
        ("ewma", Some(DetectorConfig::Ewma(EwmaConfig::default()))),
        ("mad", Some(DetectorConfig::Mad(MadConfig::default()))),
        ("cusum", Some(DetectorConfig::Cusum(CusumConfig::default()))),
        (
            "kestrel",
            Some(DetectorConfig::Default(KestrelConfig::default())),
        ),
        (
            "kestrel_c",
            Some(DetectorConfig::Default(KESTREL_CALIBRATED)),
        ),
        ("kestrel_b", Some(DetectorConfig::Default(KESTREL_BANDED))),
        // the prototype (see `Composite`)
        ("composite", None),
    ];
    println!(
        "state per key: kestrel / kestrel_c / kestrel_b {} B, mad {} B, cusum {} B, ewma {} B",
        weir_core::detect::Kestrel::STATE_BYTES,
        std::mem::size_of::<weir_core::detect::MadDetector>(),
        std::mem::size_of::<weir_core::detect::CusumDetector>(),
        std::mem::size_of::<weir_core::detect::EwmaDetector>(),
    );
    println!(
        "prototype per key: composite {} B",
        std::mem::size_of::<Composite>()
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

/// `alarm_bench nab NAB_DIR OUT [kestrel_banded|composite]`: a prototype's scores over NAB's series
/// into the scorer's layout (`OUT/weir/<category>/weir_<name>.csv`,
/// `timestamp,value,anomaly_score`, one row per input row).
fn nab(dir: &str, out: &str, which: &str) {
    for cat in std::fs::read_dir(format!("{dir}/data")).unwrap() {
        let cat = cat.unwrap().path();
        let name = cat.file_name().unwrap().to_string_lossy().to_string();
        std::fs::create_dir_all(format!("{out}/weir/{name}")).unwrap();
        for f in std::fs::read_dir(&cat).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let mut c = Composite::new();
            let mut kb = Detector::new(&DetectorConfig::Default(KESTREL_BANDED));
            let mut o = String::from("timestamp,value,anomaly_score\n");
            for (i, line) in text.lines().skip(1).enumerate() {
                let (ts, v) = line.split_once(',').unwrap();
                let x: f64 = v.trim().parse().unwrap();
                let t = 1_700_000_000_000 + i as i64 * 60_000;
                let s = if which == "composite" {
                    c.update(t, x)
                } else {
                    kb.update(t, x).unwrap_or(0.0)
                };
                o.push_str(&format!("{ts},{v},{s:.6}\n"));
            }
            let base = f.file_name().unwrap().to_string_lossy().to_string();
            std::fs::write(format!("{out}/weir/{name}/weir_{base}"), o).unwrap();
        }
    }
}

/// `alarm_bench dump NAB_DIR OUT`: Kestrel's non-zero scores (index, score,
/// rule) on the bench's series and NAB's, for analysis.
fn dump(dir: &str, out: &str) {
    use std::fmt::Write as _;
    let mut o = String::from("set,name,seed,len,i,score,rule\n");
    let mut run = |set: &str, name: &str, seed: u64, v: &[f64]| {
        let mut d = weir_core::detect::Kestrel::new(&KestrelConfig::default());
        for (i, &x) in v.iter().enumerate() {
            let s = d.update(1_700_000_000_000 + i as i64 * 60_000, x);
            if s > 0.0 {
                writeln!(
                    o,
                    "{set},{name},{seed},{},{i},{s:.6},{}",
                    v.len(),
                    d.parts()[3]
                )
                .unwrap();
            }
        }
    };
    for b in ["white", "ar0.9", "ar0.95", "seasonal", "student3"] {
        for s in 0..20 {
            run("benign", b, s + 1, &benign(b, s + 1));
        }
    }
    for f in ["spike10", "shift3", "noise3x", "drift"] {
        for s in 0..20 {
            run("fault", f, s + 1, &faulty(f, s + 1));
        }
    }
    for cat in std::fs::read_dir(format!("{dir}/data")).unwrap() {
        let cat = cat.unwrap().path();
        for f in std::fs::read_dir(&cat).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let v: Vec<f64> = text
                .lines()
                .skip(1)
                .map(|l| l.split_once(',').unwrap().1.trim().parse().unwrap())
                .collect();
            let name = format!(
                "{}/{}",
                cat.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            run("nab", &name, 0, &v);
        }
    }
    std::fs::write(out, o).unwrap();
}

/// Runs the shared NAB scorer (`$SCORER`, default
/// `../shared/eval/nab_score.py`, needs numpy and pandas) on `OUT/weir`
/// at its best threshold and at the prototypes' shipped one, if present.
fn score_nab(out: &str) {
    let scorer = std::env::var("SCORER").unwrap_or_else(|_| "../shared/eval/nab_score.py".into());
    if !std::path::Path::new(&scorer).exists() {
        println!("wrote {out}/weir; no scorer at {scorer}");
        return;
    }
    for thr in [None, Some(5.0 / 15.0)] {
        let mut c = std::process::Command::new("python3");
        c.arg(&scorer).arg("--results").arg(format!("{out}/weir"));
        if let Some(t) = thr {
            c.arg("--threshold").arg(format!("{t}"));
        }
        match thr {
            None => println!("== NAB, best threshold"),
            Some(t) => println!("== NAB, shipped threshold {t:.4}"),
        }
        if let Err(e) = c.status() {
            println!("scorer failed: {e}");
        }
    }
}
