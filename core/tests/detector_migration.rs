//! Kestrel's pattern memories moved from copied embedding banks (detector
//! state format 1, ~25 KiB per key) to rings of points (format 2, ~5 KiB).
//! The fixture `kestrel_v1_at_4003.cbor` was written by the format-1 code
//! (commit 63832b3) after the first 4,003 samples of `series()`.

use weir_core::detect::{Detector, DetectorConfig, Kestrel, KestrelConfig};

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

/// Daily sine (288 samples), N(0, 1) noise, a +15 spike every 997 samples.
fn series() -> Vec<f64> {
    let mut r = Rng(2026);
    (0..6000)
        .map(|i| {
            let base = 10.0 * (2.0 * std::f64::consts::PI * f64::from(i) / 288.0).sin() + r.gauss();
            if i % 997 == 500 {
                base + 15.0
            } else {
                base
            }
        })
        .collect()
}

const FIXTURE: &[u8] = include_bytes!("fixtures/kestrel_v1_at_4003.cbor");
const CUT: usize = 4003;

fn ts(i: usize) -> i64 {
    1_400_000_000_000 + i as i64 * 300_000
}

fn kestrel() -> Detector {
    Detector::new(&DetectorConfig::Default(KestrelConfig::default()))
}

fn parts(d: &Detector) -> [f64; 4] {
    match d {
        Detector::Kestrel(k) => k.parts(),
        _ => unreachable!("a Kestrel"),
    }
}

fn fnv(h: &mut u64, v: u64) {
    for b in v.to_le_bytes() {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Scores and per-scale surprises of the ring layout are bit for bit those
/// of the bank layout: the hash of all 6,000 scores and `parts()` that the
/// format-1 code produced on `series()`.
#[test]
fn ring_layout_scores_like_the_bank_layout() {
    let mut d = kestrel();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &x) in series().iter().enumerate() {
        fnv(&mut h, d.update(ts(i), x).unwrap().to_bits());
        for p in parts(&d) {
            fnv(&mut h, p.to_bits());
        }
    }
    assert_eq!(h, 0x822d_fc31_9965_74ac);
}

/// A format-1 snapshot restores into the ring layout and continues exactly
/// as an uninterrupted run.
#[test]
fn format_1_snapshot_restores_and_continues_bit_for_bit() {
    let xs = series();
    let mut restored = Detector::decode(&mut minicbor::Decoder::new(FIXTURE)).unwrap();
    let mut twin = kestrel();
    for (i, &x) in xs[..CUT].iter().enumerate() {
        twin.update(ts(i), x).unwrap();
    }
    for (i, &x) in xs.iter().enumerate().skip(CUT) {
        let a = restored.update(ts(i), x).unwrap();
        let b = twin.update(ts(i), x).unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "sample {i}");
        let (pa, pb) = (parts(&restored), parts(&twin));
        assert_eq!(pa.map(f64::to_bits), pb.map(f64::to_bits), "sample {i}");
    }
    // The migrated state re-encodes in format 2, several times smaller.
    let mut buf = Vec::new();
    restored
        .encode(&mut minicbor::Encoder::new(&mut buf))
        .unwrap();
    assert!(
        buf.len() * 4 < FIXTURE.len(),
        "{} vs {}",
        buf.len(),
        FIXTURE.len()
    );
    let again = Detector::decode(&mut minicbor::Decoder::new(&buf)).unwrap();
    assert_eq!(again, restored);
}

/// Every truncation of the format-1 fixture, and corrupted indices, are
/// rejected without a panic.
#[test]
fn format_1_decode_rejects_truncation_and_bad_indices() {
    for cut in (0..FIXTURE.len())
        .step_by(11)
        .chain(FIXTURE.len() - 64..FIXTURE.len())
    {
        assert!(Detector::decode(&mut minicbor::Decoder::new(&FIXTURE[..cut])).is_err());
    }
    let mut any_rejected = false;
    for i in (0..FIXTURE.len()).step_by(97) {
        let mut evil = FIXTURE.to_vec();
        evil[i] ^= 0x5a;
        match Detector::decode(&mut minicbor::Decoder::new(&evil)) {
            Ok(mut d) => {
                for (j, x) in series().iter().enumerate().take(300) {
                    let s = d.update(ts(CUT + j), *x).unwrap();
                    assert!((0.0..=1.0).contains(&s));
                }
            }
            Err(_) => any_rejected = true,
        }
    }
    assert!(any_rejected);
}

#[test]
fn detector_state_is_at_most_8_kib() {
    let bytes = core::mem::size_of::<Detector>();
    assert!(bytes <= 8 * 1024, "{bytes}");
    assert_eq!(Kestrel::STATE_BYTES, core::mem::size_of::<Kestrel>());
}
