//! Behavioural tests of the detectors on synthetic series.

use weir_core::detect::{
    AlertEdge, AlertGate, CusumConfig, Detector, DetectorConfig, EwmaConfig, KestrelConfig,
    MadConfig,
};

// ---------------------------------------------------------------- helpers

/// Deterministic splitmix64 + Box-Muller gaussian generator.
struct Rng(u64);
impl Rng {
    fn u01(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let (a, b) = (self.u01(), self.u01());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }
}

const T0: i64 = 1_400_000_000_000;
const DT: i64 = 300_000; // 5 minutes

fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.gauss()).collect()
}

fn all_configs() -> [DetectorConfig; 6] {
    [
        DetectorConfig::Ewma(EwmaConfig::default()),
        DetectorConfig::Mad(MadConfig::default()),
        DetectorConfig::Cusum(CusumConfig::default()),
        DetectorConfig::Default(KestrelConfig::default()),
        DetectorConfig::Default(weir_core::detect::KESTREL_CALIBRATED),
        DetectorConfig::Default(KESTREL_BANDED),
    ]
}

/// Run a detector behind an alert gate at its shipped threshold; return the
/// indices where an alert was raised.
fn raised(cfg: &DetectorConfig, xs: &[f64]) -> Vec<usize> {
    let mut d = Detector::new(cfg);
    let mut g = AlertGate::new(d.default_threshold(), 0.05, 50);
    let mut out = vec![];
    for (i, &x) in xs.iter().enumerate() {
        if let Some(s) = d.update(T0 + i as i64 * DT, x) {
            assert!((0.0..=1.0).contains(&s), "score {s} out of range");
            if g.update(s) == Some(AlertEdge::Raised) {
                out.push(i);
            }
        }
    }
    out
}

/// First alert at or after `onset`, with the delay; also the number of
/// alerts raised in the quiet stretch [QUIET, onset).
fn detect(cfg: &DetectorConfig, xs: &[f64], onset: usize) -> (Option<usize>, usize) {
    let r = raised(cfg, xs);
    let before = r.iter().filter(|&&i| (QUIET..onset).contains(&i)).count();
    (r.iter().find(|&&i| i >= onset).map(|&i| i - onset), before)
}

/// Anomalies start here; the 3000 samples before it must stay nearly quiet
/// (at most 3 alerts: ~1 per 1000 samples this early in a pure-noise series).
const ONSET: usize = 6000;
const QUIET: usize = 3000;
const LEN: usize = 7000;
const KESTREL: DetectorConfig = DetectorConfig::Default(KESTREL_DEFAULT);
use weir_core::detect::kestrel::KESTREL_DEFAULT;
use weir_core::detect::KESTREL_BANDED;

// ---------------------------------------------------------------- default detector

#[test]
fn kestrel_default_matches_const() {
    assert_eq!(KestrelConfig::default(), KESTREL_DEFAULT);
}

#[test]
fn kestrel_detects_spike_within_1_sample() {
    let mut xs = noise(LEN, 1);
    xs[ONSET] += 12.0;
    let (delay, before) = detect(&KESTREL, &xs, ONSET);
    assert_eq!(delay, Some(0), "spike not flagged on the spot");
    assert!(before <= 3, "{before} alerts before the spike");
}

#[test]
fn kestrel_detects_level_shift_within_30_samples() {
    let mut xs = noise(LEN, 2);
    for x in &mut xs[ONSET..] {
        *x += 4.0;
    }
    let (delay, before) = detect(&KESTREL, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 30), "delay {delay:?}");
    assert!(before <= 3, "{before} alerts before the shift");
}

#[test]
fn kestrel_detects_slow_drift_within_300_samples() {
    let mut xs = noise(LEN, 3);
    for (i, x) in xs[ONSET..].iter_mut().enumerate() {
        *x += 0.01 * i as f64; // one sigma per 100 samples
    }
    let (delay, before) = detect(&KESTREL, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 300), "delay {delay:?}");
    assert!(before <= 3, "{before} alerts before the drift");
}

#[test]
fn kestrel_detects_variance_change_within_50_samples() {
    let mut xs = noise(LEN, 4);
    for x in &mut xs[ONSET..] {
        *x *= 4.0;
    }
    let (delay, before) = detect(&KESTREL, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 50), "delay {delay:?}");
    assert!(before <= 3, "{before} alerts before the change");
}

#[test]
fn kestrel_detects_flatline_within_20_samples() {
    // a noisy daily-like cycle, then the sensor freezes at its last reading
    let mut r = Rng(5);
    let mut xs: Vec<f64> = (0..LEN)
        .map(|i| 20.0 + 5.0 * (i as f64 * 2.0 * std::f64::consts::PI / 288.0).sin() + r.gauss())
        .collect();
    let stuck = xs[ONSET - 1];
    for x in &mut xs[ONSET..] {
        *x = stuck;
    }
    let (delay, before) = detect(&KESTREL, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 20), "delay {delay:?}");
    assert!(before <= 3, "{before} alerts before the freeze");
}

#[test]
fn kestrel_gaussian_noise_alert_rate_below_1_per_5000() {
    let n = 200_000;
    let xs = noise(n, 6);
    let r = raised(&KESTREL, &xs);
    // bound: fewer than 1 alert per 5,000 samples (40 over 200k)
    assert!(r.len() < n / 5000, "{} alerts in {n} samples", r.len());
}

// ---------------------------------------------------------------- simple detectors

#[test]
fn ewma_and_mad_detect_spike_within_1_sample() {
    for cfg in [
        DetectorConfig::Ewma(EwmaConfig::default()),
        DetectorConfig::Mad(MadConfig::default()),
    ] {
        let mut xs = noise(LEN, 7);
        xs[ONSET] += 12.0;
        let (delay, _) = detect(&cfg, &xs, ONSET);
        assert_eq!(delay, Some(0), "{cfg:?}");
    }
}

#[test]
fn cusum_detects_small_level_shift_and_drift() {
    let cfg = DetectorConfig::Cusum(CusumConfig::default());
    // 1.5 sigma shift: well inside the noise for point detectors
    let mut xs = noise(LEN, 8);
    for x in &mut xs[ONSET..] {
        *x += 1.5;
    }
    let (delay, _) = detect(&cfg, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 20), "shift delay {delay:?}");
    let mut xs = noise(LEN, 9);
    for (i, x) in xs[ONSET..].iter_mut().enumerate() {
        *x += 0.005 * i as f64;
    }
    let (delay, _) = detect(&cfg, &xs, ONSET);
    assert!(delay.is_some_and(|d| d <= 300), "drift delay {delay:?}");
}

#[test]
fn simple_detectors_noise_alert_rates() {
    let n = 100_000;
    let xs = noise(n, 10);
    for (cfg, max) in [
        (DetectorConfig::Ewma(EwmaConfig::default()), n / 2000),
        (DetectorConfig::Mad(MadConfig::default()), n / 2000),
        (DetectorConfig::Cusum(CusumConfig::default()), n / 2000),
    ] {
        let r = raised(&cfg, &xs);
        assert!(r.len() < max, "{cfg:?}: {} alerts", r.len());
    }
}

// ---------------------------------------------------------------- robustness

fn snapshot(d: &Detector) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    d.encode(&mut e).expect("encode");
    e.into_writer()
}

#[test]
fn non_finite_values_are_skipped_without_touching_state() {
    let xs = noise(1500, 11);
    for cfg in all_configs() {
        let mut a = Detector::new(&cfg);
        let mut b = Detector::new(&cfg);
        for (i, &x) in xs.iter().enumerate() {
            let ts = T0 + i as i64 * DT;
            if i % 97 == 0 {
                let before = snapshot(&a);
                assert_eq!(a.update(ts, f64::NAN), None);
                assert_eq!(a.update(ts, f64::INFINITY), None);
                assert_eq!(a.update(ts, f64::NEG_INFINITY), None);
                assert_eq!(before, snapshot(&a), "{} state changed by NaN", a.kind());
            }
            let sa = a.update(ts, x).unwrap();
            let sb = b.update(ts, x).unwrap();
            assert_eq!(sa.to_bits(), sb.to_bits(), "{}", a.kind());
        }
    }
}

#[test]
fn gaps_repeats_and_backwards_timestamps_do_not_break_scores() {
    let xs = noise(LEN, 12);
    for cfg in all_configs() {
        let mut d = Detector::new(&cfg);
        let mut ts = T0;
        let mut max_ts = i64::MIN;
        let mut bad = 0;
        for (i, &x) in xs.iter().enumerate() {
            ts += match i % 50 {
                0 => 86_400_000 * 30, // a 30-day gap
                1 | 2 => 0,           // repeated timestamp
                3 => -DT * 10,        // jumps backwards
                _ => DT,
            };
            if i > 0 && ts <= max_ts {
                bad += 1;
            }
            max_ts = max_ts.max(ts);
            let s = d.update(ts, x).expect("finite");
            assert!(s.is_finite() && (0.0..=1.0).contains(&s));
        }
        assert!(bad > 100);
        assert_eq!(d.timestamp_anomalies(), bad, "{}", d.kind());
        // out-of-range magnitudes are rejected like non-finite values ...
        assert_eq!(d.update(ts, 1e300), None);
        assert_eq!(d.update(ts, -1e16), None);
        // ... extreme but accepted ones keep the state usable
        for v in [1e14, -1e14, 0.0, 5e-324, 1.0] {
            let s = d.update(ts, v).unwrap();
            assert!((0.0..=1.0).contains(&s), "{} {v} -> {s}", d.kind());
        }
        for &x in &xs[..500] {
            let s = d.update(ts, x).unwrap();
            assert!((0.0..=1.0).contains(&s));
        }
    }
}

#[test]
fn snapshot_restore_mid_series_is_bit_identical() {
    let mut xs = noise(6000, 13);
    xs[3500] += 9.0;
    for x in &mut xs[4500..] {
        *x += 3.0;
    }
    for cfg in all_configs() {
        for cut in [10usize, 300, 2999] {
            let mut a = Detector::new(&cfg);
            for (i, &x) in xs[..cut].iter().enumerate() {
                a.update(T0 + i as i64 * DT, x);
            }
            let bytes = snapshot(&a);
            let mut dec = minicbor::Decoder::new(&bytes);
            let mut b = Detector::decode(&mut dec).expect("decode");
            assert_eq!(a, b, "{} restored state differs", a.kind());
            for (i, &x) in xs.iter().enumerate().skip(cut) {
                let ts = T0 + i as i64 * DT;
                let sa = a.update(ts, x).unwrap();
                let sb = b.update(ts, x).unwrap();
                assert_eq!(sa.to_bits(), sb.to_bits(), "{} diverged at {i}", a.kind());
            }
        }
    }
}

#[test]
fn decode_rejects_garbage_without_panicking() {
    let mut d = Detector::new(&DetectorConfig::default());
    for (i, x) in noise(3000, 14).into_iter().enumerate() {
        d.update(T0 + i as i64 * DT, x);
    }
    let bytes = snapshot(&d);
    for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
        let mut dec = minicbor::Decoder::new(&bytes[..cut]);
        assert!(Detector::decode(&mut dec).is_err());
    }
    // unknown kind
    let mut dec = minicbor::Decoder::new(&[0x83, 0x63, b'f', b'o', b'o', 0x01, 0x00]);
    assert!(Detector::decode(&mut dec).is_err());
    // unknown version
    let mut bad = bytes.clone();
    let pos = 2 + "kestrel".len();
    assert_eq!(bad[pos], 0x03);
    bad[pos] = 0x04;
    assert!(Detector::decode(&mut minicbor::Decoder::new(&bad)).is_err());
    // a flipped byte deep inside must not panic (it may or may not decode)
    for i in (0..bytes.len()).step_by(97) {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        if let Ok(mut d) = Detector::decode(&mut minicbor::Decoder::new(&b)) {
            for i in 0..600 {
                let s = d.update(T0 + i * DT, (i % 17) as f64).unwrap();
                assert!((0.0..=1.0).contains(&s));
            }
        }
    }
}

#[test]
fn sizes_stay_within_64_kib() {
    assert!(core::mem::size_of::<Detector>() <= 64 * 1024);
}

// ---------------------------------------------------------------- alert gate

#[test]
fn alert_gate_hysteresis_and_cooldown() {
    let mut g = AlertGate::new(0.5, 0.1, 5);
    assert_eq!(g.update(0.6), Some(AlertEdge::Raised));
    assert_eq!(g.update(0.7), None); // still active
    assert_eq!(g.update(0.45), None); // above threshold - hysteresis
    assert_eq!(g.update(0.39), Some(AlertEdge::Cleared));
    // within cool-down (4 samples since raise); odds 3 < 2 x odds(0.7) = 4.67
    assert_eq!(g.update(0.75), None);
    assert_eq!(g.update(0.75), Some(AlertEdge::Raised)); // 6th sample
    assert_eq!(g.raised_count(), 2);
    // snapshot round trip keeps the phase
    let mut e = minicbor::Encoder::new(Vec::new());
    g.encode(&mut e).unwrap();
    let bytes = e.into_writer();
    let h = AlertGate::decode(&mut minicbor::Decoder::new(&bytes)).unwrap();
    assert_eq!(g, h);
    // NaN neither raises nor clears
    assert_eq!(g.update(f64::NAN), None);
    assert!(g.is_active());
}

#[test]
fn alert_gate_much_stronger_score_breaks_cooldown() {
    let mut g = AlertGate::new(0.2857, 0.0, 50);
    assert_eq!(g.update(0.3), Some(AlertEdge::Raised)); // odds 0.43
    assert_eq!(g.update(0.0), Some(AlertEdge::Cleared));
    for _ in 0..10 {
        assert_eq!(g.update(0.0), None);
    }
    assert_eq!(g.update(0.4), None); // odds 0.67 < 2 x 0.43
    assert_eq!(g.update(0.0), None);
    assert_eq!(g.update(0.5), Some(AlertEdge::Raised)); // odds 1 >= 0.86
    assert_eq!(g.update(0.0), Some(AlertEdge::Cleared));
    // a hard-rule score (1) breaks any cool-down but a hard-rule peak's
    assert_eq!(g.update(1.0), Some(AlertEdge::Raised));
    assert_eq!(g.update(0.0), Some(AlertEdge::Cleared));
    assert_eq!(g.update(1.0), None);
    assert_eq!(g.raised_count(), 3);
}

#[test]
fn alert_gate_reads_its_old_six_element_state() {
    // written before the cool-down break: raised 3 samples ago, cleared
    let mut e = minicbor::Encoder::new(Vec::new());
    e.array(6).unwrap();
    e.f64(0.5).unwrap().f64(0.0).unwrap().u32(10).unwrap();
    e.bool(false).unwrap().u32(3).unwrap().u64(1).unwrap();
    let bytes = e.into_writer();
    let mut g = AlertGate::decode(&mut minicbor::Decoder::new(&bytes)).unwrap();
    assert_eq!(g.raised_count(), 1);
    // its cool-down holds even against a hard-rule score, as before
    for _ in 0..6 {
        assert_eq!(g.update(1.0), None);
    }
    assert_eq!(g.update(1.0), Some(AlertEdge::Raised)); // 10 since the raise
}

#[test]
fn kestrel_spike_right_after_a_false_alarm_is_raised() {
    // issue 15: a 30 sigma spike 21 samples after a false alarm was hidden by
    // the false alarm's cool-down
    let cfg = DetectorConfig::Default(KestrelConfig::default());
    let mut checked = 0;
    for seed in 1..20 {
        let xs = noise(6000, seed);
        let Some(&fa) = raised(&cfg, &xs).iter().find(|&&i| i > 1000) else {
            continue;
        };
        let mut ys = xs.clone();
        ys[fa + 21] = 30.0;
        assert!(
            raised(&cfg, &ys).contains(&(fa + 21)),
            "seed {seed}: spike at {} after a false alarm at {fa} not raised",
            fa + 21
        );
        checked += 1;
    }
    assert!(checked >= 3, "too few false alarms to test with: {checked}");
}

// ---------------------------------------------------------------- banded Kestrel (issue 15)

/// Raises of a detector behind a gate with no hysteresis (as alarm_bench).
fn raised_h0(cfg: &DetectorConfig, xs: &[f64]) -> Vec<usize> {
    let mut d = Detector::new(cfg);
    let mut g = AlertGate::new(d.default_threshold(), 0.0, 50);
    let mut out = vec![];
    for (i, &x) in xs.iter().enumerate() {
        let s = d.update(T0 + i as i64 * DT, x).unwrap();
        if g.update(s) == Some(AlertEdge::Raised) {
            out.push(i);
        }
    }
    out
}

#[test]
fn banded_ranks_every_sample_below_its_threshold_as_kestrel_does() {
    // NAB's sweep must see Kestrel's own ordering: below the threshold the
    // banded score is threshold x Kestrel's score, sample for sample
    let mut xs = noise(8000, 21);
    for x in &mut xs[5000..] {
        *x += 3.0;
    }
    let mut k = Detector::new(&KESTREL);
    let b_cfg = DetectorConfig::Default(KESTREL_BANDED);
    let mut b = Detector::new(&b_cfg);
    let t = b.default_threshold();
    assert_eq!(t, 5.0 / 15.0);
    let mut lifted = 0;
    for (i, &x) in xs.iter().enumerate() {
        let ts = T0 + i as i64 * DT;
        let sk = k.update(ts, x).unwrap();
        let sb = b.update(ts, x).unwrap();
        if sb < t {
            assert_eq!(sb, t * sk.min(0.999_999), "sample {i}");
        } else {
            lifted += 1;
        }
    }
    assert!(
        lifted >= 1,
        "the level shift was never lifted to the threshold"
    );
}

#[test]
fn banded_white_noise_at_most_5_false_alarms_per_100k() {
    let cfg = DetectorConfig::Default(KESTREL_BANDED);
    let n: usize = (1..=10)
        .map(|seed| raised_h0(&cfg, &noise(10_000, 100 + seed)).len())
        .sum();
    assert!(n <= 5, "{n} false alarms in 100,000 samples");
}

#[test]
fn banded_finds_spike_shift_noise_and_drift_within_100_samples() {
    let cfg = DetectorConfig::Default(KESTREL_BANDED);
    for seed in 1..=3 {
        for fault in ["spike10", "shift3", "noise3x", "drift"] {
            let mut xs = noise(6000, 200 + seed);
            for (i, x) in xs.iter_mut().enumerate().skip(5000) {
                match fault {
                    "spike10" if i == 5000 => *x += 10.0,
                    "shift3" => *x += 3.0,
                    "noise3x" => *x *= 3.0,
                    "drift" => *x += 0.03 * (i - 5000) as f64,
                    _ => {}
                }
            }
            let r = raised_h0(&cfg, &xs);
            assert!(
                r.iter().any(|&i| (5000..5100).contains(&i)),
                "seed {seed}: {fault} not raised within 100 samples: {r:?}"
            );
        }
    }
}

#[test]
fn banded_much_larger_event_during_an_alert_is_raised() {
    // a 3 sigma shift is raised; a 30 sigma spike 30 samples later, inside
    // the gate's cool-down and the banding's excursion, still raises
    let cfg = DetectorConfig::Default(KESTREL_BANDED);
    let mut xs = noise(6000, 31);
    for x in &mut xs[5000..] {
        *x += 3.0;
    }
    let first = *raised_h0(&cfg, &xs)
        .iter()
        .find(|&&i| i >= 5000)
        .expect("shift raised");
    xs[first + 30] = 33.0;
    assert!(
        raised_h0(&cfg, &xs).contains(&(first + 30)),
        "spike at {} after the raise at {first} not raised",
        first + 30
    );
}
