//! Kestrel's pattern memories moved from copied embedding banks (detector
//! state format 1, ~25 KiB per key) to one buffer of points per scale (format 2, ~5.6 KiB).
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

/// Scores and per-scale surprises of the point-buffer layout are bit for bit those
/// of the bank layout: the hash of all 6,000 scores and `parts()` that the
/// format-1 code produced on `series()` (0x822d_fc31_9965_74ac), updated
/// when hard-rule scores became graded by distance (L = 100 x half-ranges
/// out, instead of 1) and a farther hard event escalates inside the
/// suppression window; the pattern memories are untouched by that change.
#[test]
fn point_buffers_score_like_the_bank_layout() {
    let mut d = kestrel();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &x) in series().iter().enumerate() {
        fnv(&mut h, d.update(ts(i), x).unwrap().to_bits());
        for p in parts(&d) {
            fnv(&mut h, p.to_bits());
        }
    }
    assert_eq!(h, 0x46bb_ce5b_694e_d674);
}

/// A format-1 snapshot restores into the point-buffer layout and continues exactly
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

/// The pattern memory against a reference model that keeps copies of the
/// last `capacity()` embeddings (the format-1 layout), for several strides,
/// blocks and both buffer sizes: the same surprise, bit for bit, also across
/// snapshots taken at every 97th sample.
mod knn_model {
    use std::collections::VecDeque;
    use weir_core::detect::knn::{Nn, BANK, EMB, POINTS_STRIDE1, POINTS_STRIDE2};

    struct Model {
        block: u32,
        stride: usize,
        cap: usize,
        points: Vec<f32>,
        bank: VecDeque<[f32; EMB]>,
        sum: f64,
        cnt: u32,
        mean: f64,
        count: u64,
        last_raw: f64,
    }

    impl Model {
        fn feed(&mut self, x: f64, active: bool, alpha: f64, floor: f64) -> f64 {
            self.sum += x;
            self.cnt += 1;
            if self.cnt < self.block {
                return self.last_raw;
            }
            let pt = self.sum / f64::from(self.cnt);
            (self.sum, self.cnt) = (0.0, 0);
            self.points.push(pt as f32);
            let p = self.points.len();
            if !self.bank.is_empty() && active {
                let cur = &self.points[p - EMB..];
                let mut best = f32::INFINITY;
                for e in &self.bank {
                    let mut a = 0.0f32;
                    for (b, c) in e.iter().zip(cur) {
                        let t = b - c;
                        a += t * t;
                    }
                    best = best.min(a);
                }
                let d = f64::from(best);
                if self.count == 0 {
                    self.mean = d;
                }
                self.count += 1;
                self.last_raw = libm::log1p(d / (self.mean + floor + 1e-300));
                self.mean += alpha * (d - self.mean);
            }
            if p >= 2 * EMB && p.is_multiple_of(self.stride) {
                let mut e = [0.0; EMB];
                e.copy_from_slice(&self.points[p - 2 * EMB..p - EMB]);
                self.bank.push_back(e);
                if self.bank.len() > self.cap {
                    self.bank.pop_front();
                }
            }
            self.last_raw
        }
    }

    fn run<const P: usize>(block: u32, stride: u32, seed: u64) {
        let mut nn = Nn::<P>::new(block, stride);
        let stride = stride as usize;
        let mut model = Model {
            block,
            stride,
            cap: nn.capacity(),
            points: Vec::new(),
            bank: VecDeque::new(),
            sum: 0.0,
            cnt: 0,
            mean: 0.0,
            count: 0,
            last_raw: 0.0,
        };
        let mut rng = super::Rng(seed);
        for i in 0..6000u32 {
            let x = (f64::from(i) / 37.0).sin() * 5.0 + rng.gauss();
            let active = i >= 100;
            let a = nn.feed(x, active, 0.001, 1e-6);
            let b = model.feed(x, active, 0.001, 1e-6);
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "P={P} block={block} stride={stride} i={i}"
            );
            if i % 97 == 0 {
                let mut buf = Vec::new();
                nn.encode(&mut minicbor::Encoder::new(&mut buf)).unwrap();
                let back = Nn::<P>::decode(&mut minicbor::Decoder::new(&buf)).unwrap();
                assert_eq!(back, nn, "P={P} stride={stride} i={i}");
                nn = back;
            }
        }
    }

    #[test]
    fn matches_a_bank_of_copies() {
        for stride in 1..=6 {
            for block in [1, 3] {
                run::<POINTS_STRIDE2>(block, stride, 10 + u64::from(stride));
                run::<POINTS_STRIDE1>(block, stride, 20 + u64::from(stride));
            }
        }
        assert_eq!(Nn::<POINTS_STRIDE2>::new(1, 2).capacity(), BANK);
        assert_eq!(Nn::<POINTS_STRIDE2>::new(1, 1).capacity(), BANK);
        assert_eq!(Nn::<POINTS_STRIDE1>::new(8, 1).capacity(), BANK);
        assert!(Nn::<POINTS_STRIDE1>::new(8, 2).capacity() < BANK);
    }
}
