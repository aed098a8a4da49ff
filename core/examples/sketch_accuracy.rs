//! Worst relative error of the window percentiles (`sketch::DefaultSketch`)
//! against exact quantiles, per distribution, over sizes 10..100k and the
//! quantiles 0, 0.1 %, 1 %, 5 %, 10 %, …, 90 %, 95 %, 99 %, 99.9 %, 100 %.
//! The exact q-quantile is the sorted value at 0-based rank ⌈q·(n − 1)⌉.
//!
//! Also prints the sketch's memory (inline + heap) at n = 100k and the
//! insert speed.
//!
//!     cargo run --release -p weir-core --example sketch_accuracy

// A benchmark measures wall time; the ban protects the engine, not this.
#![allow(clippy::disallowed_methods)]

use weir_core::sketch::DefaultSketch;

type Dist = (&'static str, fn(&mut Rng) -> f64);

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn distributions() -> Vec<Dist> {
    vec![
        ("uniform [0, 1000)", |r| r.unit() * 1000.0),
        ("normal N(0, 1)", |r| r.normal()),
        ("normal N(20, 2)", |r| 20.0 + 2.0 * r.normal()),
        ("lognormal s=0.5", |r| (0.5 * r.normal()).exp()),
        ("lognormal s=1.5", |r| (1.5 * r.normal()).exp()),
        ("lognormal s=3", |r| (3.0 * r.normal()).exp()),
        ("log-uniform 4 decades", |r| {
            10f64.powf(4.0 * r.unit() - 2.0)
        }),
        ("log-uniform 6 decades", |r| {
            10f64.powf(6.0 * r.unit() - 3.0)
        }),
        ("log-uniform 10 decades", |r| {
            10f64.powf(10.0 * r.unit() - 5.0)
        }),
        ("log-uniform 12 decades", |r| {
            10f64.powf(12.0 * r.unit() - 6.0)
        }),
        ("mix: 1/4 zeros, +- log-uniform 12 dec.", |r| {
            let u = r.unit();
            let m = 10f64.powf(12.0 * r.unit() - 6.0);
            if u < 0.25 {
                0.0
            } else if u < 0.5 {
                -m
            } else {
                m
            }
        }),
        ("constant 42.5", |_| 42.5),
    ]
}

fn main() {
    let qs = [
        0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0,
    ];
    println!(
        "| distribution | worst relative error | at (n, q) | worst at p50 | bytes at n = 100k |"
    );
    println!("|---|---:|---|---:|---:|");
    for (name, f) in distributions() {
        let (mut worst, mut at, mut p50, mut bytes) = (0.0f64, (0usize, 0.0f64), 0.0f64, 0);
        for n in [10usize, 100, 1_000, 10_000, 100_000] {
            let mut rng = Rng(n as u64 ^ 0x5eed);
            let data: Vec<f64> = (0..n).map(|_| f(&mut rng)).collect();
            let mut s = DefaultSketch::default();
            for &x in &data {
                s.insert(x);
            }
            bytes = memory(&s);
            let mut sorted = data;
            sorted.sort_by(f64::total_cmp);
            for q in qs {
                let exact = sorted[(q * (n - 1) as f64).ceil() as usize];
                let v = s.quantile(q).expect("non-empty");
                let err = if exact == 0.0 {
                    if v == 0.0 {
                        0.0
                    } else {
                        f64::INFINITY
                    }
                } else {
                    (v - exact).abs() / exact.abs()
                };
                if q == 0.5 {
                    p50 = p50.max(err);
                }
                if err > worst {
                    (worst, at) = (err, (n, q));
                }
            }
        }
        println!(
            "| {name} | {:.3} % | n = {}, q = {} | {:.3} % | {bytes} |",
            worst * 100.0,
            at.0,
            at.1,
            p50 * 100.0
        );
    }
    let mut rng = Rng(7);
    let data: Vec<f64> = (0..1_000_000).map(|_| (1.5 * rng.normal()).exp()).collect();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut s = DefaultSketch::default();
        for &x in &data {
            s.insert(std::hint::black_box(x));
        }
        std::hint::black_box(s.quantile(0.5));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "insert: {:.1} ns per value (lognormal s=1.5, 1 M values, best of 5)",
        best * 1e9 / data.len() as f64
    );
}

/// Inline size plus heap.
fn memory(s: &DefaultSketch) -> usize {
    std::mem::size_of_val(s) + s.heap_bytes()
}
