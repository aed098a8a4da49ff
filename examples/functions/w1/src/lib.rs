//! W1 (docs/w1.md) as a keyed user function: per key, tumbling event-time
//! windows of `config.size` ms with count, mean, min, max and stddev, and a
//! flag when a window's mean is more than `k` standard deviations from an
//! EWMA baseline (`alpha`, `warmup`) of the key's earlier window means.
//!
//! Everything is computed here, in the guest, with the same arithmetic as
//! weir's native window operator (Welford's running mean and M2), so that
//! `examples/w1_wasm.toml` writes the same rows as `examples/w1.toml`.
//! Windows fire on event-time timers at `end - 1`; a sample whose window
//! has already fired is late and dropped, as natively.

use weir_guest::{Domain, Pod, Verdict};

/// Open windows a key may have at once (out-of-orderness / size + 2).
const MAX_OPEN: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct Win {
    start: i64,
    n: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct State {
    open: u64,
    wins: [Win; MAX_OPEN],
    seen: u64,
    base_mean: f64,
    base_var: f64,
}

// SAFETY: repr(C) structs of 8-byte fields: no padding, any bits valid.
unsafe impl Pod for State {}

const EMPTY: Win = Win {
    start: 0,
    n: 0,
    min: f64::INFINITY,
    max: f64::NEG_INFINITY,
    mean: 0.0,
    m2: 0.0,
};

/// The parameters, read once per instance.
#[derive(Clone, Copy)]
struct Params {
    size: i64,
    alpha: f64,
    k: f64,
    warmup: u64,
}

fn params() -> &'static Params {
    static P: std::sync::OnceLock<Params> = std::sync::OnceLock::new();
    P.get_or_init(|| Params {
        size: weir_guest::config_f64("size").unwrap_or(10_000.0) as i64,
        alpha: weir_guest::config_f64("alpha").unwrap_or(0.1),
        k: weir_guest::config_f64("k").unwrap_or(3.0),
        warmup: weir_guest::config_f64("warmup").unwrap_or(5.0) as u64,
    })
}

fn size() -> i64 {
    params().size
}

// The key's state is handed in and out in a buffer: no host call per
// reading for it.
weir_guest::keyed!(State, on_sample, on_timer);

/// A reading of the current key.
fn on_sample(state: &mut Option<State>, ts: i64, x: f64) {
    let size = size();
    let start = ts - ts.rem_euclid(size);
    if start + size - 1 <= weir_guest::watermark() {
        return; // its window has fired (or would have): late
    }
    let st = state.get_or_insert(State {
        open: 0,
        wins: [EMPTY; MAX_OPEN],
        seen: 0,
        base_mean: 0.0,
        base_var: 0.0,
    });
    let open = st.open as usize;
    let i = match st.wins[..open].iter().position(|w| w.start == start) {
        Some(i) => i,
        None => {
            if open == MAX_OPEN {
                panic!("too many open windows");
            }
            st.wins[open] = Win { start, ..EMPTY };
            st.open += 1;
            weir_guest::set_timer(start + size - 1, Domain::EventTime);
            open
        }
    };
    // Welford, exactly as weir_core::agg::Moments::push (tier Second).
    let w = &mut st.wins[i];
    let n1 = w.n as i64 as f64;
    w.n += 1;
    if x < w.min {
        w.min = x;
    }
    if x > w.max {
        w.max = x;
    }
    let n = n1 + 1.0;
    let delta = x - w.mean;
    let delta_n = delta / n;
    let term1 = delta * delta_n * n1;
    w.mean += delta_n;
    w.m2 += term1;
}

/// A window's timer: emit it, score its mean, forget it.
fn on_timer(state: &mut Option<State>, at: i64, _domain: Domain) {
    let Some(st) = state.as_mut() else {
        return;
    };
    let size = size();
    let open = st.open as usize;
    let Some(i) = st.wins[..open].iter().position(|w| w.start + size - 1 == at) else {
        return;
    };
    let w = st.wins[i];
    let n = w.n as f64;
    let var = w.m2 / n;
    let sd = (if var < 0.0 { 0.0 } else { var }).sqrt();
    let verdict = baseline(st, w.mean);
    weir_guest::emit_window(w.start, w.start + size, &[n, w.mean, w.min, w.max, sd], Some(verdict));
    st.wins.copy_within(i + 1..open, i);
    st.open -= 1;
}

/// The EWMA z-score baseline, exactly as weir_core's `EwmaBaseline`.
fn baseline(st: &mut State, x: f64) -> Verdict {
    let Params {
        alpha, k, warmup, ..
    } = *params();
    if st.seen == 0 {
        st.seen = 1;
        st.base_mean = x;
        st.base_var = 0.0;
        return Verdict {
            flag: false,
            score: 0.0,
        };
    }
    let d = x - st.base_mean;
    let sd = st.base_var.sqrt();
    let ad = if d < 0.0 { -d } else { d };
    let flag = st.seen >= warmup && ad > k * sd;
    let z = if sd > 0.0 {
        ad / sd
    } else if ad > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let score = if st.seen >= warmup {
        (z / (2.0 * k)).min(1.0)
    } else {
        0.0
    };
    st.base_mean += alpha * d;
    st.base_var = (1.0 - alpha) * (st.base_var + alpha * d * d);
    st.seen += 1;
    Verdict { flag, score }
}
