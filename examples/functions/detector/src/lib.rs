//! A custom detector as a keyed user function (docs/functions.md):
//!
//! - a **jump** alert (tag 1) when a reading differs from the key's
//!   previous one by more than `config.max_jump`;
//! - a **stale** alert (tag 2) when a key sends nothing for `config.stale_ms`
//!   of processing time (a processing-time timer, re-armed by each reading).
//!
//! The previous reading and the armed timer are the key's state, held by
//! the host and checkpointed with the engine.

use weir_guest::{Domain, Pod};

#[repr(C)]
#[derive(Clone, Copy)]
struct State {
    prev: f64,
    timer: i64,
}

// SAFETY: two 8-byte plain fields, no padding.
unsafe impl Pod for State {}

/// A reading of the current key.
#[unsafe(no_mangle)]
pub extern "C" fn weir_on_sample(ts: i64, value: f64) {
    let max_jump = weir_guest::config_f64("max_jump").unwrap_or(10.0);
    let stale = weir_guest::config_f64("stale_ms").unwrap_or(60_000.0) as i64;
    let mut st = weir_guest::load::<State>().unwrap_or(State {
        prev: value,
        timer: 0,
    });
    if (value - st.prev).abs() > max_jump {
        weir_guest::emit(ts, value - st.prev, 1);
    }
    st.prev = value;
    if st.timer != 0 {
        weir_guest::delete_timer(st.timer, Domain::ProcessingTime);
    }
    st.timer = weir_guest::now() + stale;
    weir_guest::set_timer(st.timer, Domain::ProcessingTime);
    weir_guest::store(&st);
}

/// The stale timer fired: nothing came for `stale_ms`.
#[unsafe(no_mangle)]
pub extern "C" fn weir_on_timer(at: i64, _domain: i32) {
    if let Some(mut st) = weir_guest::load::<State>() {
        if st.timer == at {
            weir_guest::emit(at, st.prev, 2);
            st.timer = 0;
            weir_guest::store(&st);
        }
    }
}
