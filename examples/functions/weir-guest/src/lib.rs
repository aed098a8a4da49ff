//! The guest side of weir's user functions (docs/functions.md): safe
//! wrappers over the host calls a module may import (module `weir`).
//!
//! A crate of type `cdylib`, built with
//! `cargo build --target wasm32-unknown-unknown --release`, becomes a
//! module weir loads from a pipeline's `[[function]]` table.
//!
//! **Scalar functions** need nothing from this crate: export
//! `#[unsafe(no_mangle)] pub extern "C" fn name(a: f64, …) -> f64`.
//!
//! **Keyed functions** export `weir_on_sample(ts: i64, value: f64)` and,
//! to use timers, `weir_on_timer(at: i64, domain: i32)`. Each call is for
//! one key; the key's state lives in the host (it is checkpointed with the
//! engine and survives crashes and module updates) and is read with
//! [`load`] and replaced with [`store`]. Anything else a module keeps in
//! its own memory is scratch: the host may start the instance afresh (after
//! a failed call, on restart).
//!
//! A panic aborts (build with `panic = "abort"`): the call traps, and the
//! host counts it and dead-letters the reading.
//!
//! A call is all-or-nothing: if it traps, runs out of fuel or asks for
//! something invalid, none of its state writes, timers or emits happen.

/// The raw host imports.
pub mod sys {
    #[link(wasm_import_module = "weir")]
    extern "C" {
        /// Length of the current key's state.
        pub fn state_len() -> i32;
        /// Copies up to `cap` bytes of the key's state to `ptr`; returns how many.
        pub fn state_read(ptr: *mut u8, cap: i32) -> i32;
        /// Replaces the key's state with `len` bytes at `ptr` (0 clears it).
        pub fn state_write(ptr: *const u8, len: i32);
        /// Length of the function's config text (`name=value` lines).
        pub fn config_len() -> i32;
        /// Copies up to `cap` bytes of the config text to `ptr`; returns how many.
        pub fn config_read(ptr: *mut u8, cap: i32) -> i32;
        /// The driver's clock (processing time).
        pub fn now() -> i64;
        /// The current watermark (`i64::MIN` before any).
        pub fn watermark() -> i64;
        /// The engine's id of the current key.
        pub fn key_id() -> i32;
        /// Calls `weir_on_timer(at, 0)` when the watermark reaches `at`.
        pub fn timer_event(at: i64);
        /// Calls `weir_on_timer(at, 1)` when the clock reaches `at`.
        pub fn timer_processing(at: i64);
        /// Deletes a timer (domain 0 event time, 1 processing time).
        pub fn timer_delete(at: i64, domain: i32);
        /// Emits a result: timestamp, value, tag.
        pub fn emit(ts: i64, value: f64, tag: i32);
        /// Emits a window row of `n` f64 at `ptr`; flag -1 no verdict, 0
        /// not flagged, 1 flagged; `score` the verdict's score.
        pub fn emit_window(start: i64, end: i64, ptr: *const f64, n: i32, flag: i32, score: f64);
    }
}

/// Which clock a timer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// The watermark (event time).
    EventTime,
    /// The driver's clock (processing time).
    ProcessingTime,
}

impl Domain {
    /// From the `domain` argument of `weir_on_timer`.
    pub fn from_raw(d: i32) -> Domain {
        if d == 0 {
            Domain::EventTime
        } else {
            Domain::ProcessingTime
        }
    }
}

/// Plain data that can be stored as a key's state: `Copy`, no pointers,
/// every bit pattern valid (integers, floats, arrays and `#[repr(C)]`
/// structs of them).
///
/// # Safety
/// Implement only for such types.
pub unsafe trait Pod: Copy + 'static {}

unsafe impl Pod for u8 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}
unsafe impl Pod for i32 {}
unsafe impl Pod for i64 {}
unsafe impl Pod for f64 {}
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// The current key's state, or `None` if it has none (or a state of
/// another size, e.g. written by an older version of the module).
pub fn load<T: Pod>() -> Option<T> {
    let n = core::mem::size_of::<T>();
    // SAFETY: host calls on this instance's own memory; T is Pod.
    unsafe {
        if sys::state_len() as usize != n {
            return None;
        }
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        let got = sys::state_read(v.as_mut_ptr() as *mut u8, n as i32);
        (got as usize == n).then(|| v.assume_init())
    }
}

/// Replaces the current key's state.
pub fn store<T: Pod>(v: &T) {
    // SAFETY: reads size_of::<T>() bytes of a valid T.
    unsafe { sys::state_write(v as *const T as *const u8, core::mem::size_of::<T>() as i32) }
}

/// Clears the current key's state (the key may then be evicted).
pub fn clear() {
    // SAFETY: a zero-length write.
    unsafe { sys::state_write(core::ptr::null(), 0) }
}

/// The state as raw bytes into `buf`; returns its length (it may be longer
/// than `buf`).
pub fn load_bytes(buf: &mut [u8]) -> usize {
    // SAFETY: writes at most buf.len() bytes into buf.
    unsafe {
        let n = sys::state_len() as usize;
        sys::state_read(buf.as_mut_ptr(), buf.len() as i32);
        n
    }
}

/// Replaces the state with raw bytes.
pub fn store_bytes(b: &[u8]) {
    // SAFETY: reads b.
    unsafe { sys::state_write(b.as_ptr(), b.len() as i32) }
}

/// Registers a timer for the current key.
pub fn set_timer(at: i64, domain: Domain) {
    // SAFETY: plain values.
    unsafe {
        match domain {
            Domain::EventTime => sys::timer_event(at),
            Domain::ProcessingTime => sys::timer_processing(at),
        }
    }
}

/// Deletes a timer of the current key.
pub fn delete_timer(at: i64, domain: Domain) {
    // SAFETY: plain values.
    unsafe { sys::timer_delete(at, (domain == Domain::ProcessingTime) as i32) }
}

/// Emits a result for the current key (an alert, a score, …).
pub fn emit(ts: i64, value: f64, tag: u32) {
    // SAFETY: plain values.
    unsafe { sys::emit(ts, value, tag as i32) }
}

/// A detector's verdict on a window row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Whether the window is anomalous.
    pub flag: bool,
    /// A score in [0, 1].
    pub score: f64,
}

/// Emits a window row for the current key (at most 16 values), with an
/// optional verdict.
pub fn emit_window(start: i64, end: i64, values: &[f64], verdict: Option<Verdict>) {
    let (f, s) = match verdict {
        None => (-1, 0.0),
        Some(v) => (v.flag as i32, v.score),
    };
    // SAFETY: reads values.
    unsafe { sys::emit_window(start, end, values.as_ptr(), values.len() as i32, f, s) }
}

/// The driver's clock.
pub fn now() -> i64 {
    if FAST.load(Relaxed) {
        return NOW.load(Relaxed);
    }
    // SAFETY: no arguments.
    unsafe { sys::now() }
}

/// The watermark (`i64::MIN` before any).
pub fn watermark() -> i64 {
    if FAST.load(Relaxed) {
        return WM.load(Relaxed);
    }
    // SAFETY: no arguments.
    unsafe { sys::watermark() }
}

use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};

// The call in progress of a [`keyed!`] function (wasm32 is single-threaded:
// these are plain loads and stores).
static FAST: AtomicBool = AtomicBool::new(false);
static WM: AtomicI64 = AtomicI64::new(i64::MIN);
static NOW: AtomicI64 = AtomicI64::new(0);
static BUF: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(0);

/// A keyed function whose state is a [`Pod`] `T` handed in and out by the
/// host in a buffer, with no host call per reading for it (the fast path):
///
/// ```ignore
/// weir_guest::keyed!(State, on_sample, on_timer);
/// fn on_sample(st: &mut Option<State>, ts: i64, value: f64) { … }
/// fn on_timer(st: &mut Option<State>, at: i64, domain: weir_guest::Domain) { … }
/// ```
///
/// `st` is the key's state (`None` if it has none, or one of another size);
/// what it holds when the function returns is stored (`None` clears it).
/// Timers, emits, [`watermark`] and [`now`] work as elsewhere.
#[macro_export]
macro_rules! keyed {
    ($state:ty, $on_sample:path, $on_timer:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_state_buf(cap: i32) -> i32 {
            $crate::__state_buf(cap)
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_on_sample_state(ts: i64, v: f64, wm: i64, now: i64, len: i32) -> i32 {
            $crate::__run::<$state>(wm, now, len, |s| $on_sample(s, ts, v))
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_on_timer_state(at: i64, d: i32, wm: i64, now: i64, len: i32) -> i32 {
            $crate::__run::<$state>(wm, now, len, |s| {
                $on_timer(s, at, $crate::Domain::from_raw(d))
            })
        }
    };
}

#[doc(hidden)]
pub fn __state_buf(cap: i32) -> i32 {
    let cap = cap.max(0) as usize;
    let buf: &'static mut [u8] = Vec::leak(vec![0u8; cap]);
    BUF.store(buf.as_mut_ptr() as usize, Relaxed);
    CAP.store(cap, Relaxed);
    buf.as_mut_ptr() as i32
}

#[doc(hidden)]
pub fn __run<T: Pod>(wm: i64, now: i64, len: i32, f: impl FnOnce(&mut Option<T>)) -> i32 {
    let n = core::mem::size_of::<T>();
    let buf = BUF.load(Relaxed) as *mut T;
    if n > CAP.load(Relaxed) {
        panic!("the state type is larger than the host's state limit");
    }
    FAST.store(true, Relaxed);
    WM.store(wm, Relaxed);
    NOW.store(now, Relaxed);
    // SAFETY: BUF holds CAP >= n bytes; T is Pod (any bits valid).
    let mut st = (len as usize == n).then(|| unsafe { buf.read_unaligned() });
    f(&mut st);
    FAST.store(false, Relaxed);
    match st {
        // SAFETY: as above.
        Some(v) => unsafe {
            buf.write_unaligned(v);
            n as i32
        },
        None => 0,
    }
}

/// The function's `config` table as `name=value` lines (read once per
/// instance; the config cannot change while an instance lives).
pub fn config_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        // SAFETY: host calls; writes at most n bytes into a buffer of n.
        unsafe {
            let n = sys::config_len().max(0) as usize;
            let mut buf = vec![0u8; n];
            let got = sys::config_read(buf.as_mut_ptr(), n as i32).max(0) as usize;
            buf.truncate(got);
            String::from_utf8(buf).unwrap_or_default()
        }
    })
}

/// A number from the function's `config` table, by name. Functions called
/// per reading should read their parameters once (e.g. into a `OnceLock`).
pub fn config_f64(name: &str) -> Option<f64> {
    config_text().lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}
