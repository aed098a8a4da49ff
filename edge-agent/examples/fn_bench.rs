//! User-function micro-benchmarks (bench/functions.sh): the per-call cost
//! of a scalar WebAssembly function against the same code native, in the
//! same process, and the resident memory of one instance of a module.
//!
//!   fn_bench UNIT_WASM W1_WASM [CALLS]
//!
//! Prints ns per call native and in WebAssembly, their ratio, and the RSS
//! growth per W1 instance (averaged over 200 instances that each ran).

use std::hint::black_box;
use std::time::Instant;

use weir_agent::functions::host::{Compiled, Limits};

#[inline(never)]
fn c_to_f(c: f64) -> f64 {
    c * 1.8 + 32.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fn_bench UNIT_WASM W1_WASM [CALLS]");
        std::process::exit(2);
    }
    let unit = std::fs::read(&args[1]).expect("read unit module");
    let w1 = std::fs::read(&args[2]).expect("read w1 module");
    let calls: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let xs: Vec<f64> = (0..1024).map(|i| i as f64 * 0.37 - 50.0).collect();

    let c = Compiled::new(&unit, Limits::default(), Vec::new()).expect("compile");
    let mut inst = c.instantiate().expect("instantiate");
    let f = inst.func("c_to_f").expect("export c_to_f");
    let mut best_n = f64::MAX;
    let mut best_w = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = 0.0;
        for i in 0..calls {
            acc += c_to_f(black_box(xs[i & 1023]));
        }
        black_box(acc);
        best_n = best_n.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut acc2 = 0.0;
        for i in 0..calls {
            acc2 += inst.call_scalar(&f, &[xs[i & 1023]]).expect("call");
        }
        black_box(acc2);
        best_w = best_w.min(t.elapsed().as_secs_f64());
        assert_eq!(acc, acc2, "the module and native disagree");
    }
    let (nn, nw) = (best_n * 1e9 / calls as f64, best_w * 1e9 / calls as f64);
    println!(
        "scalar c_to_f: native {nn:.2} ns/call, WebAssembly {nw:.1} ns/call ({:.1}x native, {:.1} ns overhead per call)",
        nw / nn,
        nw - nn
    );

    let c = Compiled::new(&w1, Limits::default(), b"size=10000\n".to_vec()).expect("compile w1");
    let before = rss_kib();
    let mut live = Vec::new();
    for k in 0..200 {
        let mut i = c.instantiate().expect("instantiate w1");
        i.call_sample(1_700_000_000_000 + k, 1.0).expect("call");
        live.push(i);
    }
    let after = rss_kib();
    println!(
        "W1 module: {} bytes; RSS per live instance {:.0} KiB (200 instances, each after one call)",
        w1.len(),
        (after.saturating_sub(before)) as f64 / 200.0
    );
}
