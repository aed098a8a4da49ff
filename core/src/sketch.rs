//! Bounded-memory, mergeable quantile sketch for window aggregates.
//!
//! [`QuantileSketch`] is a DDSketch (Masson, Rim, Lee: "DDSketch: A Fast
//! and Fully-Mergeable Quantile Sketch with Relative-Error Guarantees", VLDB
//! 2019) with two dense bucket stores, one for positive and one for negative
//! values, plus a zero count. Each store holds at most `N` consecutive
//! buckets; when a value (or a merge) would stretch a store past `N`, the
//! sketch **collapses uniformly** (UDDSketch: Epicoco, Melle, Cafaro, Pulimeno,
//! Morleo, "UDDSketch: Accurate Tracking of Quantiles in Data Streams", IEEE
//! Access 2020): every pair of adjacent buckets is merged, which squares γ,
//! and the sketch says so ([`QuantileSketch::relative_accuracy`]). Every
//! quantile keeps a stated relative bound, always; none is left without one.
//!
//! Two stores ([`Bins`]): [`ArrayBins<N>`] (inline, no allocator; `N` is part
//! of the type) and, with the `alloc` feature, [`VecBins<N>`], which grows
//! with the range of the data and never past `N`. The window engine uses
//! [`DefaultSketch`] = `QuantileSketch<VecBins<768>>`.
//!
//! # Buckets
//!
//! With `γ = (1 + α) / (1 − α)`, a value `x` with `|x| ≥ f64::MIN_POSITIVE`
//! has the level-0 key `k = ⌈log_γ |x|⌉`, i.e. bucket `(γ^(k−1), γ^k]`. After
//! `c` uniform collapses (level `c`) the key is `⌈k / 2^c⌉`, the bucket
//! `(γ_c^(k−1), γ_c^k]` with `γ_c = γ^(2^c)`, reported as `2·γ_c^k / (γ_c + 1)`.
//! Every point of the bucket is within a relative distance
//! `α_c = (γ_c − 1)/(γ_c + 1) = tanh(2^c · atanh α)` of that value
//! (α_1 = 2α/(1 + α²) ≈ 3.998 % for α = 2 %). Keys are always computed at
//! level 0 and shifted as integers, so a value lands in the same bucket
//! whether it came before or after a collapse. Zeros and subnormals
//! (`|x| < f64::MIN_POSITIVE`) go to the zero count and are reported as `0.0`;
//! NaN and ±∞ are refused by [`QuantileSketch::insert`], changing nothing.
//!
//! # Rank convention and error bound
//!
//! Let `n = count()` and let `x_0 ≤ x_1 ≤ … ≤ x_(n−1)` be the inserted
//! (finite) values, sorted. For `q ∈ [0, 1]` the exact q-quantile is
//! `x_q = x_r` with the 0-based rank `r = ⌈q · (n − 1)⌉` (computed in `f64`);
//! `q = 0` is the minimum and `q = 1` the maximum. [`QuantileSketch::quantile`]
//! returns the representative of the bucket that holds `x_r`, so, with
//! `a = relative_accuracy()` (= α until the first collapse):
//!
//! ```text
//! |v − x_q| ≤ a · |x_q|          for every q ∈ [0, 1]
//! ```
//!
//! and `v` has the sign of `x_q`; if `|x_q| < f64::MIN_POSITIVE` then `v = 0.0`
//! (an absolute error below `2.3e−308`). The only slack is floating-point
//! rounding in `log`/`exp`, a relative excess of at most about `2e−13`. The
//! bound is per quantile and does not depend on `n`.
//!
//! # When it collapses (what `N` buys)
//!
//! A store of `N` buckets at level 0 holds any set of magnitudes whose ratio
//! max/min is at most `γ^(N−1)`, i.e. `(N − 1)·ln γ / ln 10` decades per sign
//! (positive and negative values have their own store). The level after any
//! sequence of inserts and merges is the smallest `c` at which both stores
//! fit, so the state depends only on the multiset of values: merging gives
//! exactly the sketch of the union, and a sketch collapses only if its data
//! really spans more than that range. With α = 2 %:
//!
//! | sketch | `N` | α = 2 % kept over (per sign) | then | worst-case size |
//! |---|---:|---|---|---:|
//! | [`DefaultSketch`] (`alloc`) | 768 | 13.3 decades | 4 % to 26.6, 8 % to 53 decades, … | 12,392 B |
//! | [`SmallSketch`] (no allocator) | 123 | 2.1 decades | 4 % to 4.2, 8 % to 8.5, 16 % to 17 decades, … | 2,040 B |
//!
//! (`N` buckets at level `c` span `(N − 1)·2^c·ln γ / ln 10` decades; the
//! whole normal `f64` range, 616 decades, needs level 6 with 768 buckets:
//! a ≈ 86 %, still a bound, and said.)
//!
//! # Memory
//!
//! `size_of::<QuantileSketch<ArrayBins<N>>>() = 16·N + 72` bytes (`u64`
//! counts; 2,040 B for [`SmallSketch`]). A [`DefaultSketch`] is 104 bytes
//! inline plus `8 ×` the buckets its stores span (a store's capacity starts
//! at 32 buckets and grows by half, capped at `N`), at most
//! `2 × 768 × 8 = 12,288` bytes on the heap: values within one decade of one
//! sign (58 buckets) cost 680 bytes in all; [`QuantileSketch::heap_bytes`]
//! reports it. Measured at n = 100k (`examples/sketch_accuracy.rs`): 360 B
//! for N(20, 2) or a constant, 2.8 KB for uniform [0, 1000), 6.2 KB for
//! 12 decades of one sign, 12.4 KB for 12 decades of both.
//!
//! # Wire format (CBOR, version 2)
//!
//! `[2, alpha: f64, N: uint, level: uint, zero_count: uint, negative_store,
//! positive_store]` with `store = [base_key: int, [count: uint; len]]`,
//! `len ≤ N`, `counts[i]` being the count of key `base_key + i` at `level`.
//! The negative store's keys are `−⌈k / 2^level⌉` for level-0 magnitude key
//! `k`, so its key order is value order. Non-empty stores have non-zero first
//! and last counts; an empty store is `[0, []]`. The total count is the sum.
//! At most [`QuantileSketch::MAX_ENCODED_LEN`] bytes.
//!
//! Version 1 (`[1, alpha, N, zero_count, [collapsed, base, counts],
//! [collapsed, base, counts]]`, level 0, lowest-bucket collapsing) is still
//! read, by any `N`: its buckets are re-inserted, so a sketch narrower than
//! the new `N` comes back bucket for bucket. A version-1 store that had
//! collapsed keeps its folded mass in its lowest bucket: its lowest quantiles
//! are over-estimated as they were before the upgrade (format 1 had no bound
//! for them). That can only concern windows open across the upgrade.
//!
//! # Example
//!
//! ```
//! use weir_core::sketch::SmallSketch;
//! let mut a = SmallSketch::new(0.02);
//! let mut b = SmallSketch::new(0.02);
//! for i in 1..=1000 {
//!     a.insert(i as f64);
//!     b.insert(-(i as f64));
//! }
//! a.merge(&b).unwrap();
//! assert_eq!(a.count(), 2000);
//! // 1..1000 spans 3 decades: more than 124 buckets hold at 2 %, so the
//! // sketch collapsed once and now promises 4 %.
//! let bound = a.relative_accuracy();
//! assert!(bound > 0.039 && bound < 0.04);
//! let p99 = a.quantile(0.99).unwrap(); // exact: 980
//! assert!((p99 - 980.0).abs() <= bound * 980.0);
//! ```

use core::f64::consts::{LN_2, SQRT_2};
use core::fmt;

use minicbor::{decode, encode, Decoder, Encoder};

/// Smallest accepted relative accuracy α.
///
/// Below it, bucket keys grow past what `f64` arithmetic resolves cleanly.
pub const MIN_ALPHA: f64 = 1e-9;

/// Relative accuracy used by [`Default`]: 2%.
pub const DEFAULT_ALPHA: f64 = 0.02;

/// Buckets per store in [`DefaultSketch`]: α = 2 % over 13.3 decades.
pub const DEFAULT_CAPACITY: usize = 768;

/// Buckets per store in [`SmallSketch`], chosen so that it is 2 KiB.
pub const SMALL_CAPACITY: usize = 123;

/// The window engine's sketch: up to 768 buckets per sign, on the heap,
/// allocated as the data's range needs them (at most 12,288 bytes).
#[cfg(feature = "alloc")]
pub type DefaultSketch = QuantileSketch<VecBins<DEFAULT_CAPACITY>>;

/// The no-allocator sketch: 123 buckets per sign inline, 2,040 bytes.
pub type SmallSketch = QuantileSketch<ArrayBins<SMALL_CAPACITY>>;

const _: () = assert!(core::mem::size_of::<SmallSketch>() <= 2048);

const FORMAT_VERSION: u8 = 2;

/// Highest collapse level: beyond 62 halvings every key is 0 or ±1.
const MAX_LEVEL: u32 = 62;

/// Error from [`QuantileSketch::merge`] and [`QuantileSketch::try_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SketchError {
    /// The sketches were built with different α, so their buckets do not line up.
    AlphaMismatch,
    /// α is outside `[MIN_ALPHA, 1)` or is NaN.
    InvalidAlpha,
    /// The merged count would exceed `u64::MAX`.
    CountOverflow,
}

impl fmt::Display for SketchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlphaMismatch => {
                "quantile sketches have different alpha and cannot be merged; \
                 build every sketch of one aggregate with the same alpha"
            }
            Self::InvalidAlpha => "quantile sketch alpha must be in [1e-9, 1)",
            Self::CountOverflow => "merged quantile sketch would count more than u64::MAX values",
        })
    }
}

impl core::error::Error for SketchError {}

/// `ln γ = ln((1 + α) / (1 − α)) = 2·atanh(α)`, usable in `const` context.
const fn ln_gamma(alpha: f64) -> f64 {
    if alpha <= 0.5 {
        2.0 * atanh_series(alpha)
    } else {
        // 1 − α is exact here (Sterbenz), and γ ≥ 3.
        ln_at_least_one((1.0 + alpha) / (1.0 - alpha))
    }
}

/// `atanh(s) = s + s³/3 + s⁵/5 + …`, for `|s| ≤ 0.5` (about 28 terms at most).
const fn atanh_series(s: f64) -> f64 {
    let s2 = s * s;
    let mut power = s;
    let mut divisor = 1.0;
    let mut sum = 0.0;
    let mut i = 0;
    while i < 64 {
        let next = sum + power / divisor;
        if next == sum {
            break;
        }
        sum = next;
        power *= s2;
        divisor += 2.0;
        i += 1;
    }
    sum
}

/// Natural log for finite `x ≥ 1`: exact halving to `m ∈ (√2/2, √2]`, then
/// `ln m = 2·atanh((m − 1)/(m + 1))` with `|(m − 1)/(m + 1)| < 0.18`.
const fn ln_at_least_one(x: f64) -> f64 {
    let mut m = x;
    let mut e = 0.0;
    while m > SQRT_2 {
        m *= 0.5;
        e += 1.0;
    }
    e * LN_2 + 2.0 * atanh_series((m - 1.0) / (m + 1.0))
}

/// Bytes CBOR needs for an unsigned integer or a length.
const fn cbor_uint_len(n: u64) -> usize {
    if n < 24 {
        1
    } else if n <= u8::MAX as u64 {
        2
    } else if n <= u16::MAX as u64 {
        3
    } else if n <= u32::MAX as u64 {
        5
    } else {
        9
    }
}

const fn alpha_is_valid(alpha: f64) -> bool {
    // NaN fails both comparisons.
    alpha >= MIN_ALPHA && alpha < 1.0
}

mod sealed {
    pub trait Sealed {}
}

/// Storage of one store's bucket counts: [`ArrayBins`] or [`VecBins`].
///
/// Sealed; the methods are the sketch's business.
pub trait Bins: sealed::Sealed + Clone + fmt::Debug {
    /// Most buckets per store (`N`).
    const CAPACITY: usize;
    #[doc(hidden)]
    const EMPTY: Self;
    #[doc(hidden)]
    fn live(&self) -> &[u64];
    #[doc(hidden)]
    fn live_mut(&mut self) -> &mut [u64];
    /// Sets the number of live buckets to `len ≤ CAPACITY`; new ones are 0,
    /// dropped ones must already be 0.
    #[doc(hidden)]
    fn set_len(&mut self, len: usize);
    /// Bytes held outside the value itself.
    #[doc(hidden)]
    fn heap_bytes(&self) -> usize;
}

/// `N` bucket counts inline: no allocator, `8·N + 8` bytes.
#[derive(Clone, Debug)]
pub struct ArrayBins<const N: usize> {
    /// Slots `≥ len` are 0.
    counts: [u64; N],
    len: u32,
}

impl<const N: usize> sealed::Sealed for ArrayBins<N> {}

impl<const N: usize> Bins for ArrayBins<N> {
    const CAPACITY: usize = N;
    const EMPTY: Self = Self {
        counts: [0; N],
        len: 0,
    };
    fn live(&self) -> &[u64] {
        &self.counts[..self.len as usize]
    }
    fn live_mut(&mut self) -> &mut [u64] {
        &mut self.counts[..self.len as usize]
    }
    fn set_len(&mut self, len: usize) {
        let old = self.len as usize;
        if len < old {
            self.counts[len..old].fill(0);
        }
        self.len = len as u32;
    }
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// Up to `N` bucket counts on the heap, allocated as the store's key range
/// grows (by half again, capped at `N`): `8 ×` capacity bytes.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub struct VecBins<const N: usize>(alloc::vec::Vec<u64>);

#[cfg(feature = "alloc")]
impl<const N: usize> sealed::Sealed for VecBins<N> {}

#[cfg(feature = "alloc")]
impl<const N: usize> Bins for VecBins<N> {
    const CAPACITY: usize = N;
    const EMPTY: Self = Self(alloc::vec::Vec::new());
    fn live(&self) -> &[u64] {
        &self.0
    }
    fn live_mut(&mut self) -> &mut [u64] {
        &mut self.0
    }
    fn set_len(&mut self, len: usize) {
        let cap = self.0.capacity();
        if len > cap {
            let want = len.max(cap + cap / 2).max(32).min(N);
            self.0.reserve_exact(want - self.0.len());
        }
        self.0.resize(len, 0);
    }
    fn heap_bytes(&self) -> usize {
        self.0.capacity() * 8
    }
}

/// One store: the counts of the consecutive keys `base..base + len`.
#[derive(Clone, Debug)]
struct Store<B> {
    /// When non-empty, the first and last counts are non-zero.
    bins: B,
    /// Key of the first count; 0 when empty.
    base: i64,
}

impl<B: Bins> PartialEq for Store<B> {
    fn eq(&self, other: &Self) -> bool {
        self.live() == other.live() && (self.live().is_empty() || self.base == other.base)
    }
}

impl<B: Bins> Store<B> {
    const EMPTY: Self = Self {
        bins: B::EMPTY,
        base: 0,
    };

    fn live(&self) -> &[u64] {
        self.bins.live()
    }

    fn len(&self) -> usize {
        self.live().len()
    }

    /// Adds `c` to `key` if the store can hold it without exceeding
    /// `CAPACITY` keys; returns `false`, changing nothing, otherwise.
    #[inline]
    fn try_add(&mut self, key: i64, c: u64) -> bool {
        let len = self.len() as i64;
        let slot = key.wrapping_sub(self.base);
        if len > 0 && (0..len).contains(&slot) {
            let n = &mut self.bins.live_mut()[slot as usize];
            *n = n.saturating_add(c);
            return true;
        }
        let (lo, hi) = if len == 0 {
            (key, key)
        } else {
            (self.base.min(key), (self.base + len - 1).max(key))
        };
        // i128: keys of distant stores cannot overflow the span.
        if i128::from(hi) - i128::from(lo) >= B::CAPACITY as i128 {
            return false;
        }
        let old = len as usize;
        self.bins.set_len((hi - lo + 1) as usize);
        if lo < self.base && old > 0 {
            let d = (self.base - lo) as usize;
            let counts = self.bins.live_mut();
            counts.copy_within(0..old, d);
            counts[..d].fill(0);
        }
        self.base = lo;
        let n = &mut self.bins.live_mut()[(key - lo) as usize];
        *n = n.saturating_add(c);
        true
    }

    /// Merges adjacent keys: `key → ⌈key/2⌉` (`up`) or `⌊key/2⌋`.
    fn halve(&mut self, up: bool) {
        let len = self.len();
        if len == 0 {
            return;
        }
        let half = |k: i64| {
            if up {
                (k + 1).div_euclid(2)
            } else {
                k.div_euclid(2)
            }
        };
        let base = self.base;
        let new_base = half(base);
        let counts = self.bins.live_mut();
        // The new slot of slot i is at most i, so one forward pass suffices.
        for i in 1..len {
            let j = (half(base + i as i64) - new_base) as usize;
            if j != i {
                counts[j] = counts[j].saturating_add(counts[i]);
                counts[i] = 0;
            }
        }
        self.bins
            .set_len((half(base + len as i64 - 1) - new_base + 1) as usize);
        self.base = new_base;
    }
}

fn invalid(msg: &'static str, at: usize) -> decode::Error {
    decode::Error::message(msg).at(at)
}

fn expect_array(d: &mut Decoder<'_>, len: u64) -> Result<(), decode::Error> {
    let at = d.position();
    match d.array()? {
        Some(n) if n == len => Ok(()),
        _ => Err(invalid("unexpected array length in quantile sketch", at)),
    }
}

/// Reads `[count; len]` with `len ≤ cap`; returns the counts' position and
/// sum, leaving them in `out` through `push`.
fn decode_counts(
    d: &mut Decoder<'_>,
    cap: usize,
    mut push: impl FnMut(u64),
) -> Result<(usize, u64), decode::Error> {
    let at = d.position();
    let len = match d.array()? {
        Some(len) if len <= cap as u64 => len as usize,
        _ => {
            return Err(invalid(
                "bucket array longer than N or of indefinite length",
                at,
            ))
        }
    };
    let mut sum = 0u64;
    let mut first_last = (0u64, 0u64);
    for i in 0..len {
        let c = d.u64()?;
        sum = sum
            .checked_add(c)
            .ok_or_else(|| invalid("bucket counts overflow u64", at))?;
        if i == 0 {
            first_last.0 = c;
        }
        first_last.1 = c;
        push(c);
    }
    if len > 0 && (first_last.0 == 0 || first_last.1 == 0) {
        return Err(invalid("first and last bucket counts must be non-zero", at));
    }
    Ok((len, sum))
}

/// Bounded-memory, mergeable quantile sketch with a stated relative error.
///
/// See the [module documentation](self) for the error bound, the rank
/// convention, collapsing, memory and the wire format. `B` is the bucket
/// storage: [`ArrayBins<N>`] or [`VecBins<N>`], `N ≥ 2` buckets per sign.
#[derive(Clone, Debug)]
pub struct QuantileSketch<B: Bins> {
    /// Keys `−⌈k / 2^level⌉`, so key order is value order.
    neg: Store<B>,
    /// Keys `⌈k / 2^level⌉`.
    pos: Store<B>,
    zero: u64,
    /// Always `zero + Σ neg + Σ pos`.
    count: u64,
    alpha: f64,
    /// `ln γ` at level 0.
    ln_gamma: f64,
    /// Uniform collapses so far.
    level: u32,
}

impl<B: Bins> PartialEq for QuantileSketch<B> {
    fn eq(&self, other: &Self) -> bool {
        self.alpha.to_bits() == other.alpha.to_bits()
            && self.level == other.level
            && self.zero == other.zero
            && self.count == other.count
            && self.neg == other.neg
            && self.pos == other.pos
    }
}

impl<B: Bins> Default for QuantileSketch<B> {
    /// An empty sketch with [`DEFAULT_ALPHA`].
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA)
    }
}

impl<B: Bins> QuantileSketch<B> {
    /// Upper bound on the size of [`encode`](Self::encode)'s output, in bytes.
    pub const MAX_ENCODED_LEN: usize = {
        // array(7), version, f64 alpha, N, level, zero count
        let header = 1 + 1 + 9 + cbor_uint_len(B::CAPACITY as u64) + 2 + 9;
        // array(2), base key, array(len), counts
        let store = 1 + 9 + cbor_uint_len(B::CAPACITY as u64) + 9 * B::CAPACITY;
        header + 2 * store
    };

    const CAPACITY_OK: () = assert!(
        B::CAPACITY >= 2 && B::CAPACITY as u64 <= u32::MAX as u64,
        "QuantileSketch needs 2 <= N <= u32::MAX"
    );

    /// An empty sketch with relative accuracy `alpha`.
    ///
    /// Valid `alpha` is in the open interval `(0, 1)`, restricted in practice
    /// to `[MIN_ALPHA, 1)` = `[1e-9, 1)`. Usable in `const` and `static`
    /// initialisers.
    ///
    /// # Panics
    ///
    /// If `alpha` is NaN or outside `[MIN_ALPHA, 1)` (a compile error in
    /// `const` context). Use [`try_new`](Self::try_new) for untrusted input.
    pub const fn new(alpha: f64) -> Self {
        if !alpha_is_valid(alpha) {
            panic!("QuantileSketch alpha must be in [1e-9, 1)");
        }
        Self::empty(alpha)
    }

    /// Like [`new`](Self::new), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`SketchError::InvalidAlpha`] if `alpha` is NaN or outside `[MIN_ALPHA, 1)`.
    pub const fn try_new(alpha: f64) -> Result<Self, SketchError> {
        let () = Self::CAPACITY_OK;
        if !alpha_is_valid(alpha) {
            return Err(SketchError::InvalidAlpha);
        }
        Ok(Self::empty(alpha))
    }

    const fn empty(alpha: f64) -> Self {
        let () = Self::CAPACITY_OK;
        Self {
            neg: Store::EMPTY,
            pos: Store::EMPTY,
            zero: 0,
            count: 0,
            alpha,
            ln_gamma: ln_gamma(alpha),
            level: 0,
        }
    }

    /// Adds one value. Returns `false`, changing nothing, if `x` is NaN or
    /// infinite (or if the sketch already holds `u64::MAX` values).
    #[inline]
    pub fn insert(&mut self, x: f64) -> bool {
        if !x.is_finite() || self.count == u64::MAX {
            return false;
        }
        let magnitude = libm::fabs(x);
        if magnitude < f64::MIN_POSITIVE {
            self.zero += 1;
        } else {
            self.add(x > 0.0, self.key(magnitude), 0, 1);
        }
        self.count += 1;
        true
    }

    /// Adds `c` to the bucket of magnitude key `k` given at `level`
    /// (`≤ self.level`), collapsing until the store can hold it.
    fn add(&mut self, positive: bool, k: i64, level: u32, c: u64) {
        loop {
            let shift = self.level - level;
            let added = if positive {
                // ⌈k / 2^shift⌉
                self.pos.try_add(-((-k) >> shift), c)
            } else {
                // −⌈k / 2^shift⌉ = ⌊−k / 2^shift⌋
                self.neg.try_add((-k) >> shift, c)
            };
            if added {
                return;
            }
            self.collapse();
        }
    }

    /// One uniform collapse: γ → γ², both stores.
    fn collapse(&mut self) {
        debug_assert!(self.level < MAX_LEVEL);
        self.level += 1;
        self.pos.halve(true);
        self.neg.halve(false);
    }

    /// Adds all values of `other`. The result equals the sketch of both
    /// inputs inserted into one sketch, collapses included.
    ///
    /// # Errors
    ///
    /// Changes nothing and returns [`SketchError::AlphaMismatch`] if the alphas
    /// differ, or [`SketchError::CountOverflow`] if the total count would
    /// exceed `u64::MAX`.
    pub fn merge(&mut self, other: &Self) -> Result<(), SketchError> {
        if self.alpha.to_bits() != other.alpha.to_bits() {
            return Err(SketchError::AlphaMismatch);
        }
        let count = self
            .count
            .checked_add(other.count)
            .ok_or(SketchError::CountOverflow)?;
        while self.level < other.level {
            self.collapse();
        }
        let at = other.level;
        for (key, &c) in (other.pos.base..).zip(other.pos.live()) {
            if c != 0 {
                self.add(true, key, at, c);
            }
        }
        for (key, &c) in (other.neg.base..).zip(other.neg.live()) {
            if c != 0 {
                // A negative store key is −(magnitude key) at its level.
                self.add(false, -key, at, c);
            }
        }
        self.zero += other.zero;
        self.count = count;
        Ok(())
    }

    /// Estimate of the q-quantile (rank `⌈q·(n − 1)⌉`, 0-based), within
    /// [`relative_accuracy`](Self::relative_accuracy). `None` if the sketch
    /// is empty or `q` is not in `[0, 1]` (NaN included).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let last = self.count - 1;
        let r = libm::ceil(q * last as f64);
        let rank = if r >= last as f64 { last } else { r as u64 };

        let mut seen = 0u64;
        for (key, &c) in (self.neg.base..).zip(self.neg.live()) {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(-self.value(-key));
            }
        }
        seen = seen.saturating_add(self.zero);
        if seen > rank {
            return Some(0.0);
        }
        for (key, &c) in (self.pos.base..).zip(self.pos.live()) {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(self.value(key));
            }
        }
        None // unreachable: count is the sum of all buckets
    }

    /// Number of values inserted (including merged-in ones).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The relative accuracy α this sketch was built with.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The bound every quantile has now: α before the first collapse, then
    /// `tanh(2^c · atanh α)` after `c` collapses (module docs).
    pub fn relative_accuracy(&self) -> f64 {
        if self.level == 0 {
            self.alpha
        } else {
            libm::tanh(0.5 * self.level_ln_gamma())
        }
    }

    /// Uniform collapses so far (0: the bound is α).
    pub fn collapses(&self) -> u32 {
        self.level
    }

    /// Whether the sketch has collapsed, i.e. its bound is coarser than α.
    pub fn collapsed(&self) -> bool {
        self.level > 0
    }

    /// Bytes held on the heap (0 for [`ArrayBins`]); the sketch's memory is
    /// `size_of_val(self) + heap_bytes()`.
    pub fn heap_bytes(&self) -> usize {
        self.neg.bins.heap_bytes() + self.pos.bins.heap_bytes()
    }

    /// Empties the sketch, keeping α (and any heap it holds). The bound is α
    /// again.
    pub fn clear(&mut self) {
        self.neg.bins.set_len(0);
        self.pos.bins.set_len(0);
        self.neg.base = 0;
        self.pos.base = 0;
        self.zero = 0;
        self.count = 0;
        self.level = 0;
    }

    /// Writes the sketch as CBOR (format 2, module documentation), at most
    /// [`MAX_ENCODED_LEN`](Self::MAX_ENCODED_LEN) bytes.
    ///
    /// # Errors
    ///
    /// Only those of the writer, e.g. a full buffer.
    pub fn encode<W: encode::Write>(
        &self,
        e: &mut Encoder<W>,
    ) -> Result<(), encode::Error<W::Error>> {
        e.array(7)?
            .u8(FORMAT_VERSION)?
            .f64(self.alpha)?
            .u64(B::CAPACITY as u64)?
            .u32(self.level)?
            .u64(self.zero)?;
        for store in [&self.neg, &self.pos] {
            e.array(2)?.i64(store.base)?.array(store.len() as u64)?;
            for &c in store.live() {
                e.u64(c)?;
            }
        }
        Ok(())
    }

    /// Reads a sketch written by [`encode`](Self::encode) with the same `N`
    /// (format 2), or a format-1 sketch of any `N` (module documentation).
    ///
    /// # Errors
    ///
    /// Truncated or malformed CBOR, an unknown format version, a different `N`
    /// (format 2), an invalid alpha or level, bucket keys no finite `f64` can
    /// produce, a non-canonical store, or counts whose sum overflows `u64`.
    /// Never panics.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, decode::Error> {
        let at = d.position();
        let version = match d.array()? {
            Some(7) => 2,
            Some(6) => 1,
            _ => return Err(invalid("unexpected array length in quantile sketch", at)),
        };
        let at = d.position();
        if d.u8()? != version {
            return Err(invalid("unsupported quantile sketch format version", at));
        }
        let at = d.position();
        let mut sketch =
            Self::try_new(d.f64()?).map_err(|_| invalid("alpha must be in [1e-9, 1)", at))?;
        let at = d.position();
        let n = d.u64()?;
        // One key of slack on each side in case libm's log is not monotone.
        let min_key = sketch.key(f64::MIN_POSITIVE) - 1;
        let max_key = sketch.key(f64::MAX) + 1;
        if version == 1 {
            sketch.decode_v1(d, n, min_key, max_key)?;
            return Ok(sketch);
        }
        if n != B::CAPACITY as u64 {
            return Err(invalid(
                "quantile sketch has a different bucket capacity N",
                at,
            ));
        }
        let at = d.position();
        let level = d.u32()?;
        if level > MAX_LEVEL {
            return Err(invalid("quantile sketch level out of range", at));
        }
        sketch.level = level;
        let zero = d.u64()?;
        let mut total = zero;
        // Keys at this level: ⌈k / 2^level⌉ for k in min_key..=max_key.
        let up = |k: i64| -((-k) >> level);
        for positive in [false, true] {
            expect_array(d, 2)?;
            let at = d.position();
            let base = d.i64()?;
            let store = if positive {
                &mut sketch.pos
            } else {
                &mut sketch.neg
            };
            let mut counts = Store::<B>::EMPTY;
            counts.bins.set_len(0);
            let mut i = 0usize;
            let (len, sum) = decode_counts(d, B::CAPACITY, |c| {
                counts.bins.set_len(i + 1);
                counts.bins.live_mut()[i] = c;
                i += 1;
            })?;
            let (lo, hi) = if positive {
                (up(min_key), up(max_key))
            } else {
                (-up(max_key), -up(min_key))
            };
            if len == 0 {
                if base != 0 {
                    return Err(invalid("empty store must be [0, []]", at));
                }
            } else if base < lo || base > hi - (len as i64 - 1) {
                return Err(invalid(
                    "bucket keys outside the range of f64 for this alpha",
                    at,
                ));
            }
            store.bins = counts.bins;
            store.base = if len == 0 { 0 } else { base };
            total = total
                .checked_add(sum)
                .ok_or_else(|| invalid("total count overflows u64", at))?;
        }
        sketch.zero = zero;
        sketch.count = total;
        Ok(sketch)
    }

    /// The rest of a format-1 sketch (after `[1, alpha, N`): its level-0
    /// buckets are added one by one.
    fn decode_v1(
        &mut self,
        d: &mut Decoder<'_>,
        n: u64,
        min_key: i64,
        max_key: i64,
    ) -> Result<(), decode::Error> {
        let at = d.position();
        if n == 0 || n > u64::from(u32::MAX) {
            return Err(invalid("format-1 sketch capacity out of range", at));
        }
        let zero = d.u64()?;
        let mut total = zero;
        for positive in [false, true] {
            expect_array(d, 3)?;
            let at = d.position();
            let collapsed = d.bool()?;
            let base = d.i64()?;
            let mut added: u64 = 0;
            let mut key = base;
            let mut err = None;
            let (len, sum) = decode_counts(d, n as usize, |c| {
                if err.is_none() {
                    // Store keys of format 1: −k for negatives.
                    let k = if positive { key } else { key.wrapping_neg() };
                    if c != 0 {
                        if (min_key..=max_key).contains(&k) {
                            self.add(positive, k, 0, c);
                            added += c;
                        } else {
                            err = Some("bucket keys outside the range of f64 for this alpha");
                        }
                    }
                }
                key = key.wrapping_add(1);
            })?;
            if let Some(msg) = err {
                return Err(invalid(msg, at));
            }
            if len == 0 && (collapsed || base != 0) {
                return Err(invalid("empty store must be [false, 0, []]", at));
            }
            if collapsed && len as u64 != n {
                return Err(invalid("a collapsed store must use all N buckets", at));
            }
            debug_assert_eq!(added, sum);
            total = total
                .checked_add(sum)
                .ok_or_else(|| invalid("total count overflows u64", at))?;
        }
        self.zero = zero;
        self.count = total;
        Ok(())
    }

    /// Level-0 key of a magnitude `m ≥ f64::MIN_POSITIVE`: `⌈log_γ m⌉`.
    #[inline]
    fn key(&self, magnitude: f64) -> i64 {
        libm::ceil(libm::log(magnitude) / self.ln_gamma) as i64
    }

    /// `ln γ_c = 2^c · ln γ`.
    fn level_ln_gamma(&self) -> f64 {
        libm::ldexp(self.ln_gamma, self.level as i32)
    }

    /// Representative magnitude of a key at the current level:
    /// `2γ_c^k/(γ_c + 1) = γ_c^(k − ½)/cosh(ln γ_c / 2)`, computed in log space
    /// so that it cannot overflow for large γ_c. Clamping to the normal range
    /// only moves it towards every value the bucket can hold.
    fn value(&self, key: i64) -> f64 {
        let ln_gamma = self.level_ln_gamma();
        let half = 0.5 * ln_gamma;
        let ln_cosh = half + libm::log1p(libm::exp(-2.0 * half)) - LN_2;
        libm::exp((key as f64 - 0.5) * ln_gamma - ln_cosh).clamp(f64::MIN_POSITIVE, f64::MAX)
    }
}

impl<C, B: Bins> minicbor::Encode<C> for QuantileSketch<B> {
    fn encode<W: encode::Write>(
        &self,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        QuantileSketch::encode(self, e)
    }
}

impl<'b, C, B: Bins> minicbor::Decode<'b, C> for QuantileSketch<B> {
    fn decode(d: &mut Decoder<'b>, _ctx: &mut C) -> Result<Self, decode::Error> {
        QuantileSketch::decode(d)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    type Fixed<const N: usize> = QuantileSketch<ArrayBins<N>>;

    /// Float slack: log/exp rounding, far below any real violation.
    fn tolerance(bound: f64) -> f64 {
        bound * (1.0 + 1e-9) + 2e-13
    }

    /// splitmix64: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in (0, 1).
        fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos()
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }

    fn build<B: Bins>(alpha: f64, data: &[f64]) -> QuantileSketch<B> {
        let mut s = QuantileSketch::<B>::new(alpha);
        for &x in data {
            assert!(s.insert(x));
        }
        s
    }

    fn q_grid() -> Vec<f64> {
        let mut g: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
        g.extend([0.001, 0.005, 0.125, 0.333, 0.995, 0.999, 0.9999]);
        g
    }

    fn sum_of_buckets<B: Bins>(s: &QuantileSketch<B>) -> u64 {
        s.zero + s.neg.live().iter().sum::<u64>() + s.pos.live().iter().sum::<u64>()
    }

    /// Checks every grid quantile against a sorted-vector reference (the
    /// value at rank ⌈q·(n − 1)⌉) within the sketch's stated bound; returns
    /// the worst relative error.
    fn check<B: Bins>(s: &QuantileSketch<B>, data: &[f64]) -> f64 {
        let mut sorted = data.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(s.count(), sorted.len() as u64);
        assert_eq!(s.count(), sum_of_buckets(s));
        if sorted.is_empty() {
            assert_eq!(s.quantile(0.5), None);
            return 0.0;
        }
        let n = sorted.len();
        let bound = s.relative_accuracy();
        let mut worst: f64 = 0.0;
        for q in q_grid() {
            let rank = (q * (n - 1) as f64).ceil() as usize;
            let exact = sorted[rank];
            let v = s.quantile(q).expect("non-empty sketch");
            if exact.abs() < f64::MIN_POSITIVE {
                assert_eq!(v, 0.0, "q={q} exact={exact}");
                continue;
            }
            let err = (v - exact).abs() / exact.abs();
            assert!(
                err <= tolerance(bound),
                "q={q} rank={rank} exact={exact} got={v} rel err={err} bound={bound} level={}",
                s.collapses()
            );
            worst = worst.max(err);
        }
        worst
    }

    fn log_uniform(rng: &mut Rng, n: usize, lo_exp: f64, hi_exp: f64) -> Vec<f64> {
        (0..n)
            .map(|_| 10f64.powf(lo_exp + (hi_exp - lo_exp) * rng.unit()))
            .collect()
    }

    /// The distributions of issue 15, at size `n`.
    fn distributions(rng: &mut Rng, n: usize) -> Vec<(&'static str, Vec<f64>)> {
        let mut d = Vec::new();
        d.push(("uniform", (0..n).map(|_| rng.unit() * 1000.0).collect()));
        d.push(("normal", (0..n).map(|_| rng.normal()).collect()));
        d.push((
            "normal 20 +- 2",
            (0..n).map(|_| 20.0 + 2.0 * rng.normal()).collect(),
        ));
        for (name, sigma) in [
            ("lognormal 0.5", 0.5),
            ("lognormal 1", 1.0),
            ("lognormal 1.5", 1.5),
            ("lognormal 2", 2.0),
            ("lognormal 3", 3.0),
        ] {
            d.push((name, (0..n).map(|_| (rng.normal() * sigma).exp()).collect()));
        }
        for (name, decades) in [
            ("log-uniform 4", 4.0),
            ("log-uniform 6", 6.0),
            ("log-uniform 10", 10.0),
            ("log-uniform 12", 12.0),
        ] {
            d.push((name, log_uniform(rng, n, -decades / 2.0, decades / 2.0)));
        }
        d.push((
            "mixture: zeros, negatives, 12 decades",
            (0..n)
                .map(|i| match i % 4 {
                    0 => 0.0,
                    1 => -(rng.normal() * 2.0).exp(),
                    _ => 10f64.powf(12.0 * rng.unit() - 6.0),
                })
                .collect(),
        ));
        d.push((
            "mixture: -0.0, subnormals, pareto",
            (0..n)
                .map(|i| match i % 5 {
                    0 => -0.0,
                    1 => 5e-324,
                    _ => rng.unit().powf(-1.0 / 1.1),
                })
                .collect(),
        ));
        d.push(("constant", std::vec![42.5; n]));
        d.push(("constant negative", std::vec![-7.0; n]));
        d
    }

    fn edge_cases() -> Vec<(&'static str, Vec<f64>)> {
        std::vec![
            ("n=1", std::vec![3.0]),
            ("n=1 zero", std::vec![0.0]),
            ("n=2", std::vec![-1e-3, 5e6]),
            ("n=3", std::vec![1.0, 1.0, 2.0]),
            (
                "extremes",
                std::vec![
                    f64::MAX,
                    -f64::MAX,
                    f64::MIN_POSITIVE,
                    -f64::MIN_POSITIVE,
                    1.0
                ],
            ),
            ("subnormal", std::vec![5e-324, -1e-310, 0.0, -0.0, 1e-300]),
            ("empty", Vec::new()),
        ]
    }

    const SIZES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];

    /// The promise of issue 15: α = 2 % for every quantile of every listed
    /// distribution at every size, with no collapse (each sign spans at most
    /// 12 decades).
    #[test]
    fn default_sketch_keeps_two_percent_across_distributions_and_sizes() {
        for n in SIZES {
            let mut rng = Rng(n as u64);
            for (name, data) in distributions(&mut rng, n) {
                let s: DefaultSketch = build(DEFAULT_ALPHA, &data);
                assert_eq!(s.collapses(), 0, "{name} n={n}");
                assert_eq!(s.relative_accuracy(), DEFAULT_ALPHA);
                let worst = check(&s, &data);
                assert!(worst <= tolerance(DEFAULT_ALPHA), "{name} n={n}");
            }
        }
    }

    /// 12 decades is a floor, not a target: 13.3 decades per sign still fit.
    #[test]
    fn default_sketch_spans_thirteen_decades_per_sign() {
        let mut rng = Rng(21);
        let mut data = log_uniform(&mut rng, 20_000, -6.6, 6.6);
        data.extend([10f64.powf(-6.6), 10f64.powf(6.6)]);
        data.extend(data.clone().iter().map(|x| -x));
        let s: DefaultSketch = build(DEFAULT_ALPHA, &data);
        assert_eq!(s.collapses(), 0);
        check(&s, &data);
        // One more decade collapses it once; the bound becomes 2α/(1+α²).
        data.push(1e8);
        let s: DefaultSketch = build(DEFAULT_ALPHA, &data);
        assert_eq!(s.collapses(), 1);
        let a1 = 2.0 * DEFAULT_ALPHA / (1.0 + DEFAULT_ALPHA * DEFAULT_ALPHA);
        assert!((s.relative_accuracy() - a1).abs() < 1e-15);
        check(&s, &data);
    }

    /// The no-allocator sketch collapses sooner but states its bound, and
    /// meets it, for every distribution.
    #[test]
    fn small_sketch_meets_its_stated_bound() {
        for n in [10, 1_000, 20_000] {
            let mut rng = Rng(100 + n as u64);
            for (name, data) in distributions(&mut rng, n).into_iter().chain(edge_cases()) {
                for alpha in [0.001, 0.01, DEFAULT_ALPHA, 0.05, 0.5] {
                    let s: SmallSketch = build(alpha, &data);
                    check(&s, &data);
                    if s.collapses() == 0 {
                        assert_eq!(s.relative_accuracy(), alpha, "{name}");
                    } else {
                        assert!(s.relative_accuracy() > alpha, "{name}");
                    }
                }
            }
        }
        // 12 decades at 2 %: level 3 (2.1 decades × 8 ≥ 12), bound ≈ 15.9 %.
        let mut rng = Rng(5);
        let mut data = log_uniform(&mut rng, 5_000, -6.0, 6.0);
        data.extend([1e-6, 1e6]);
        let s: SmallSketch = build(DEFAULT_ALPHA, &data);
        assert_eq!(s.collapses(), 3);
        assert!((s.relative_accuracy() - libm::tanh(8.0 * libm::atanh(0.02))).abs() < 1e-12);
        check(&s, &data);
    }

    #[test]
    fn edge_cases_and_wide_alphas_keep_the_bound() {
        for (_, data) in edge_cases() {
            for alpha in [MIN_ALPHA, 0.01, 0.02, 0.3, 0.9, 0.999_999] {
                check(&build::<VecBins<DEFAULT_CAPACITY>>(alpha, &data), &data);
                check(&build::<ArrayBins<2>>(alpha, &data), &data);
                check(&build::<ArrayBins<3>>(alpha, &data), &data);
            }
        }
        // The whole f64 range, both signs, in the smallest sketch.
        let mut rng = Rng(8);
        let data: Vec<f64> = (0..2000)
            .map(|_| rng.normal() * 10f64.powf(rng.unit() * 600.0 - 300.0))
            .collect();
        for alpha in [MIN_ALPHA, 0.02, 0.999_999] {
            let s = build::<ArrayBins<2>>(alpha, &data);
            assert!(s.collapses() > 0 && s.collapses() <= MAX_LEVEL);
            check(&s, &data);
            check(&build::<VecBins<DEFAULT_CAPACITY>>(alpha, &data), &data);
        }
    }

    /// The level is the smallest at which both stores fit, computed here
    /// from the sorted data alone.
    #[test]
    fn level_is_the_smallest_that_fits() {
        fn span(keys: &[i64], level: u32) -> i64 {
            let up = |k: i64| -((-k) >> level);
            match (keys.iter().min(), keys.iter().max()) {
                (Some(&lo), Some(&hi)) => up(hi) - up(lo) + 1,
                _ => 0,
            }
        }
        let mut rng = Rng(9);
        for decades in [1.0, 2.0, 2.2, 3.0, 5.0, 9.0, 20.0, 40.0, 100.0] {
            let mut data = log_uniform(&mut rng, 500, 0.0, decades);
            data.extend(
                log_uniform(&mut rng, 100, 0.0, decades / 3.0)
                    .iter()
                    .map(|x| -x),
            );
            let s = build::<ArrayBins<64>>(0.02, &data);
            let pos: Vec<i64> = data
                .iter()
                .filter(|x| **x > 0.0)
                .map(|&x| s.key(x))
                .collect();
            let neg: Vec<i64> = data
                .iter()
                .filter(|x| **x < 0.0)
                .map(|&x| s.key(-x))
                .collect();
            let want = (0..=MAX_LEVEL)
                .find(|&c| span(&pos, c) <= 64 && span(&neg, c) <= 64)
                .unwrap();
            assert_eq!(s.collapses(), want, "{decades} decades");
            check(&s, &data);
        }
    }

    #[test]
    fn bound_is_tight_and_the_check_can_fail() {
        let mut rng = Rng(3);
        let data: Vec<f64> = (0..20_000).map(|_| 1.0 + rng.unit() * 99.0).collect();
        // The estimates really use most of the allowed error...
        let worst = check(&build::<ArrayBins<512>>(0.01, &data), &data);
        assert!(worst > 0.009, "worst relative error {worst}");
        // ...so a coarser sketch must break the finer bound somewhere.
        let coarse = build::<ArrayBins<512>>(0.05, &data);
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        let violated = q_grid().into_iter().any(|q| {
            let exact = sorted[(q * (sorted.len() - 1) as f64).ceil() as usize];
            (coarse.quantile(q).unwrap() - exact).abs() > tolerance(0.01) * exact
        });
        assert!(violated);
        // And a collapsed sketch really is coarser than α: its stated bound
        // is needed.
        let s = build::<ArrayBins<16>>(0.01, &data);
        assert!(s.collapses() > 0);
        let violated = q_grid().into_iter().any(|q| {
            let exact = sorted[(q * (sorted.len() - 1) as f64).ceil() as usize];
            (s.quantile(q).unwrap() - exact).abs() > tolerance(0.01) * exact
        });
        assert!(violated);
    }

    #[test]
    fn rank_convention_is_ceil_of_q_times_n_minus_one() {
        let s = build::<ArrayBins<1024>>(0.001, &[10.0, 20.0, 30.0, 40.0, 50.0]);
        assert!(!s.collapsed());
        let near =
            |q: f64, want: f64| (s.quantile(q).unwrap() - want).abs() <= tolerance(0.001) * want;
        assert!(near(0.0, 10.0));
        assert!(near(0.2, 20.0)); // ⌈0.8⌉ = 1
        assert!(near(0.25, 20.0)); // ⌈1.0⌉ = 1
        assert!(near(0.26, 30.0)); // ⌈1.04⌉ = 2
        assert!(near(0.5, 30.0));
        assert!(near(0.76, 50.0)); // ⌈3.04⌉ = 4
        assert!(near(1.0, 50.0));
    }

    #[test]
    fn empty_sketch_and_bad_q_give_none() {
        let mut s = DefaultSketch::default();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.count(), 0);
        assert_eq!(s.heap_bytes(), 0);
        s.insert(1.0);
        for q in [-0.0001, 1.0001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(s.quantile(q), None, "q={q}");
        }
        assert!(s.quantile(-0.0).is_some());
    }

    #[test]
    fn insert_rejects_non_finite_without_change() {
        let mut s = build::<ArrayBins<32>>(0.02, &[1.0, -2.0, 0.0]);
        let before = s.clone();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!s.insert(x));
        }
        assert_eq!(s, before);
        assert!(s.insert(f64::MAX));
        assert_eq!(s.count(), 4);
    }

    #[test]
    fn full_count_rejects_inserts_and_merges() {
        let mut s = build::<ArrayBins<8>>(0.02, &[1.0]);
        s.count = u64::MAX;
        s.pos.bins.counts[0] = u64::MAX;
        let before = s.clone();
        assert!(!s.insert(1.0));
        assert_eq!(
            s.merge(&build::<ArrayBins<8>>(0.02, &[2.0])),
            Err(SketchError::CountOverflow)
        );
        assert_eq!(s, before);
    }

    #[test]
    fn merge_equals_single_sketch_collapsed_or_not() {
        let mut rng = Rng(4);
        let mut sets = distributions(&mut rng, 3000);
        sets.extend(edge_cases());
        let mut wide = log_uniform(&mut rng, 3000, -40.0, 40.0);
        wide.extend(log_uniform(&mut rng, 300, -3.0, 3.0).iter().map(|x| -x));
        sets.push(("wide", wide));
        for (name, data) in sets {
            for parts in [2, 3, 7] {
                let mut pieces: Vec<DefaultSketch> =
                    (0..parts).map(|_| DefaultSketch::new(0.02)).collect();
                let mut small: Vec<SmallSketch> =
                    (0..parts).map(|_| SmallSketch::new(0.02)).collect();
                for &x in &data {
                    let i = rng.below(parts);
                    pieces[i].insert(x);
                    small[i].insert(x);
                }
                let mut merged = DefaultSketch::new(0.02);
                let mut merged_small = SmallSketch::new(0.02);
                for (p, q) in pieces.iter().zip(&small) {
                    merged.merge(p).unwrap();
                    merged_small.merge(q).unwrap();
                }
                let whole: DefaultSketch = build(0.02, &data);
                assert_eq!(merged, whole, "{name} in {parts} parts");
                let whole_small: SmallSketch = build(0.02, &data);
                assert_eq!(merged_small, whole_small, "{name} in {parts} parts");
                for q in q_grid() {
                    assert_eq!(merged.quantile(q), whole.quantile(q), "{name} q={q}");
                }
            }
        }
    }

    #[test]
    fn collapse_is_order_independent() {
        let mut rng = Rng(7);
        let mut data = log_uniform(&mut rng, 3000, -20.0, 20.0);
        data.extend(log_uniform(&mut rng, 3000, -20.0, 20.0).iter().map(|x| -x));
        let a: SmallSketch = build(0.02, &data);
        data.sort_by(f64::total_cmp);
        let b: SmallSketch = build(0.02, &data);
        data.reverse();
        let c: SmallSketch = build(0.02, &data);
        assert!(a.collapsed());
        assert_eq!(a, b);
        assert_eq!(a, c);
        check(&a, &data);
    }

    #[test]
    fn merge_rejects_alpha_mismatch_without_change() {
        let mut a = build::<ArrayBins<16>>(0.01, &[1.0, 2.0]);
        let before = a.clone();
        let err = a.merge(&build::<ArrayBins<16>>(0.02, &[3.0])).unwrap_err();
        assert_eq!(err, SketchError::AlphaMismatch);
        assert_eq!(a, before);
        let msg = std::format!("{err}");
        assert!(msg.contains("different alpha"), "{msg}");
        let _: &dyn core::error::Error = &err;
    }

    #[test]
    fn clear_resets_but_keeps_alpha() {
        let mut rng = Rng(9);
        let data = log_uniform(&mut rng, 1000, -100.0, 100.0);
        let mut s: DefaultSketch = build(0.05, &data);
        assert!(s.collapsed());
        s.clear();
        assert_eq!(s, DefaultSketch::new(0.05));
        assert!(!s.collapsed());
        assert_eq!(s.relative_accuracy(), 0.05);
        assert_eq!(s.quantile(0.5), None);
    }

    /// Memory is bounded by N per sign, and a narrow sketch stays small.
    #[test]
    fn memory_is_bounded_and_grows_with_the_range() {
        assert_eq!(
            core::mem::size_of::<SmallSketch>(),
            16 * SMALL_CAPACITY + 72
        );
        assert_eq!(core::mem::size_of::<Fixed<10>>(), 16 * 10 + 72);
        let mut rng = Rng(10);
        // One decade: about 58 buckets.
        let narrow: DefaultSketch = build(0.02, &log_uniform(&mut rng, 10_000, 1.0, 2.0));
        assert!(narrow.heap_bytes() <= 8 * 90, "{}", narrow.heap_bytes());
        let mut all = log_uniform(&mut rng, 50_000, -300.0, 300.0);
        all.extend(all.clone().iter().map(|x| -x));
        let full: DefaultSketch = build(0.02, &all);
        assert!(full.heap_bytes() <= 2 * 8 * DEFAULT_CAPACITY);
        assert!(full.heap_bytes() >= 2 * 8 * (DEFAULT_CAPACITY / 2));
        check(&full, &all);
        assert!(
            core::mem::size_of::<DefaultSketch>() + 2 * 8 * DEFAULT_CAPACITY <= 12_400,
            "documented worst case"
        );
    }

    #[test]
    fn new_is_const_and_ln_gamma_is_accurate() {
        const S: SmallSketch = SmallSketch::new(DEFAULT_ALPHA);
        static T: Fixed<4> = QuantileSketch::new(0.5);
        assert_eq!(S.alpha(), DEFAULT_ALPHA);
        assert_eq!(T.count(), 0);
        for alpha in [
            MIN_ALPHA,
            1e-6,
            0.001,
            0.01,
            0.02,
            0.1,
            0.4999,
            0.5,
            0.5001,
            0.9,
            0.999_999_9,
            1.0 - f64::EPSILON,
        ] {
            let reference = 2.0 * libm::atanh(alpha);
            let got = ln_gamma(alpha);
            assert!(
                ((got - reference) / reference).abs() < 1e-15,
                "alpha={alpha}: {got} vs {reference}"
            );
        }
    }

    #[test]
    fn try_new_validates_alpha() {
        for bad in [0.0, -0.01, 1.0, 1.5, 1e-10, f64::NAN, f64::INFINITY] {
            assert_eq!(
                Fixed::<8>::try_new(bad).err(),
                Some(SketchError::InvalidAlpha),
                "{bad}"
            );
        }
        assert!(Fixed::<8>::try_new(MIN_ALPHA).is_ok());
        assert!(Fixed::<8>::try_new(1.0 - f64::EPSILON / 2.0).is_ok());
    }

    #[test]
    #[should_panic(expected = "alpha")]
    fn new_panics_on_invalid_alpha() {
        let _ = DefaultSketch::new(0.0);
    }

    fn to_bytes<B: Bins>(s: &QuantileSketch<B>) -> Vec<u8> {
        let mut buf = std::vec![0u8; QuantileSketch::<B>::MAX_ENCODED_LEN];
        let mut cursor = minicbor::encode::write::Cursor::new(&mut buf[..]);
        s.encode(&mut Encoder::new(&mut cursor))
            .expect("buffer of MAX_ENCODED_LEN suffices");
        let len = cursor.position();
        buf.truncate(len);
        buf
    }

    fn from_bytes<B: Bins>(bytes: &[u8]) -> Result<QuantileSketch<B>, decode::Error> {
        QuantileSketch::<B>::decode(&mut Decoder::new(bytes))
    }

    /// What must hold for anything `decode` accepts.
    fn assert_sane<B: Bins>(s: &QuantileSketch<B>) {
        assert!(alpha_is_valid(s.alpha()));
        assert_eq!(s.count(), sum_of_buckets(s));
        assert!(s.neg.len() <= B::CAPACITY && s.pos.len() <= B::CAPACITY);
        if s.count() > 0 {
            for q in [0.0, 0.5, 1.0] {
                assert!(s.quantile(q).unwrap().is_finite());
            }
        }
        let again: QuantileSketch<B> = from_bytes(&to_bytes(s)).unwrap();
        assert_eq!(&again, s);
        let mut more = s.clone();
        more.insert(1.5);
        more.insert(-1e300);
        more.merge(s).ok();
    }

    fn samples() -> Vec<DefaultSketch> {
        let mut rng = Rng(10);
        let mut out = std::vec![DefaultSketch::new(0.02)];
        for (_, data) in distributions(&mut rng, 500).into_iter().chain(edge_cases()) {
            out.push(build(0.02, &data));
        }
        let mut wide = log_uniform(&mut rng, 3000, -300.0, 300.0);
        wide.extend(
            log_uniform(&mut rng, 3000, -300.0, 300.0)
                .iter()
                .map(|x| -x),
        );
        wide.push(0.0);
        out.push(build(0.02, &wide));
        out.push(build(0.999, &wide));
        out
    }

    #[test]
    fn encode_decode_round_trip_is_exact() {
        for s in samples() {
            let bytes = to_bytes(&s);
            assert!(bytes.len() <= DefaultSketch::MAX_ENCODED_LEN);
            let back: DefaultSketch = from_bytes(&bytes).unwrap();
            assert_eq!(back, s);
            assert_eq!(to_bytes(&back), bytes);
            for q in q_grid() {
                assert_eq!(
                    back.quantile(q).map(f64::to_bits),
                    s.quantile(q).map(f64::to_bits)
                );
            }
            // The trait impls agree with the inherent methods.
            let mut buf = std::vec![0u8; DefaultSketch::MAX_ENCODED_LEN];
            minicbor::encode(&s, &mut buf[..]).unwrap();
            assert_eq!(&buf[..bytes.len()], &bytes[..]);
            let via_trait: DefaultSketch = minicbor::decode(&bytes).unwrap();
            assert_eq!(via_trait, s);
        }
    }

    #[test]
    fn max_encoded_len_is_an_upper_bound() {
        let mut s = Fixed::<DEFAULT_CAPACITY>::new(MIN_ALPHA);
        s.level = MAX_LEVEL;
        for store in [&mut s.neg, &mut s.pos] {
            store.bins.set_len(DEFAULT_CAPACITY);
            store.bins.live_mut().fill(u64::MAX / 2048);
        }
        // Most negative keys the decoder accepts, as long CBOR ints.
        s.level = 0;
        s.neg.base = -s.key(f64::MAX);
        s.pos.base = s.key(f64::MAX) - DEFAULT_CAPACITY as i64 + 1;
        s.level = 40;
        s.zero = u64::MAX / 2048;
        s.count = s.zero * (2 * DEFAULT_CAPACITY as u64 + 1);
        let bytes = to_bytes(&s);
        assert!(bytes.len() <= Fixed::<DEFAULT_CAPACITY>::MAX_ENCODED_LEN);
        assert!(bytes.len() + 40 >= Fixed::<DEFAULT_CAPACITY>::MAX_ENCODED_LEN);
        let mut small = [0u8; 100];
        assert!(s.encode(&mut Encoder::new(&mut small[..])).is_err());
    }

    #[test]
    fn decode_rejects_every_truncation() {
        for s in samples() {
            let bytes = to_bytes(&s);
            for cut in 0..bytes.len() {
                assert!(
                    from_bytes::<VecBins<DEFAULT_CAPACITY>>(&bytes[..cut]).is_err(),
                    "cut at {cut} of {}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn decode_survives_byte_flips() {
        let mut rng = Rng(11);
        let (mut rejected, mut tried) = (0, 0);
        for s in samples() {
            let bytes = to_bytes(&s);
            for _ in 0..200 {
                let mut evil = bytes.clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(evil.len());
                    evil[i] ^= 1 << rng.below(8);
                }
                tried += 1;
                match from_bytes::<VecBins<DEFAULT_CAPACITY>>(&evil) {
                    Ok(t) => assert_sane(&t),
                    Err(_) => rejected += 1,
                }
            }
        }
        assert!(
            rejected * 4 > tried,
            "only {rejected} of {tried} flips rejected"
        );
    }

    #[test]
    fn decode_survives_garbage() {
        let mut rng = Rng(12);
        for _ in 0..20_000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Ok(s) = from_bytes::<ArrayBins<8>>(&bytes) {
                assert_sane(&s);
            }
            // Garbage after plausible headers of both versions.
            for head in [[0x87u8, 0x02], [0x86, 0x01]] {
                let mut framed = head.to_vec();
                framed.push(0xfb);
                framed.extend(0.02f64.to_be_bytes());
                framed.push(0x08);
                framed.extend(&bytes);
                if let Ok(s) = from_bytes::<ArrayBins<8>>(&framed) {
                    assert_sane(&s);
                }
            }
        }
    }

    /// Hand-rolled format-2 encoding, to forge inputs `encode` never writes.
    fn forge(
        alpha: f64,
        n: u64,
        level: u32,
        zero: u64,
        neg: (i64, &[u64]),
        pos: (i64, &[u64]),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf);
        e.array(7).unwrap().u8(2).unwrap().f64(alpha).unwrap();
        e.u64(n).unwrap().u32(level).unwrap().u64(zero).unwrap();
        for (base, counts) in [neg, pos] {
            e.array(2).unwrap().i64(base).unwrap();
            e.array(counts.len() as u64).unwrap();
            for &c in counts {
                e.u64(c).unwrap();
            }
        }
        buf
    }

    /// Hand-rolled format-1 encoding (what the 124-bucket sketch wrote).
    fn forge_v1(
        alpha: f64,
        n: u64,
        zero: u64,
        neg: (bool, i64, &[u64]),
        pos: (bool, i64, &[u64]),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf);
        e.array(6).unwrap().u8(1).unwrap().f64(alpha).unwrap();
        e.u64(n).unwrap().u64(zero).unwrap();
        for (collapsed, base, counts) in [neg, pos] {
            e.array(3)
                .unwrap()
                .bool(collapsed)
                .unwrap()
                .i64(base)
                .unwrap();
            e.array(counts.len() as u64).unwrap();
            for &c in counts {
                e.u64(c).unwrap();
            }
        }
        buf
    }

    #[test]
    fn decode_rejects_inconsistent_input() {
        const E: (i64, &[u64]) = (0, &[]);
        let ok = |b: Vec<u8>| from_bytes::<ArrayBins<8>>(&b).is_ok();
        // The forger is right: a valid sketch passes and matches.
        let good = forge(0.02, 8, 1, 3, (-5, &[1, 0, 2]), (10, &[4]));
        let s = from_bytes::<ArrayBins<8>>(&good).unwrap();
        assert_eq!(s.count(), 10);
        assert_eq!(s.collapses(), 1);
        assert_eq!(good, to_bytes(&s));
        // Wrong N, both ways.
        assert!(!ok(forge(0.02, 9, 0, 0, E, E)));
        assert!(
            from_bytes::<ArrayBins<64>>(&to_bytes(&build::<ArrayBins<8>>(0.02, &[1.0]))).is_err()
        );
        // Bad alpha, version and level.
        for alpha in [0.0, -0.02, 1.0, 2.0, 1e-12, f64::NAN, f64::INFINITY] {
            assert!(!ok(forge(alpha, 8, 0, 0, E, E)), "alpha {alpha}");
        }
        let mut v3 = forge(0.02, 8, 0, 0, E, E);
        v3[1] = 3;
        assert!(!ok(v3));
        assert!(!ok(forge(0.02, 8, MAX_LEVEL + 1, 0, E, E)));
        assert!(ok(forge(0.02, 8, MAX_LEVEL, 0, E, (0, &[1]))));
        // Non-canonical stores.
        assert!(!ok(forge(0.02, 8, 0, 0, E, (3, &[0, 1]))));
        assert!(!ok(forge(0.02, 8, 0, 0, E, (3, &[1, 0]))));
        assert!(!ok(forge(0.02, 8, 0, 0, E, (7, &[]))));
        assert!(!ok(forge(0.02, 8, 0, 0, (0, &[1; 9]), E)));
        // Keys no f64 can produce at that level, including overflow-prone extremes.
        for base in [i64::MIN, i64::MAX, 100_000, -100_000] {
            assert!(!ok(forge(0.02, 8, 0, 0, E, (base, &[1]))), "base {base}");
            assert!(!ok(forge(0.02, 8, 0, 0, (base, &[1]), E)), "base {base}");
        }
        assert!(ok(forge(0.02, 8, 0, 0, E, (17_000, &[1]))));
        assert!(!ok(forge(0.02, 8, 1, 0, E, (17_000, &[1]))));
        assert!(ok(forge(0.02, 8, 1, 0, E, (8_500, &[1]))));
        // Counts that overflow u64.
        assert!(!ok(forge(0.02, 8, 0, u64::MAX, E, (0, &[1]))));
        assert!(!ok(forge(0.02, 8, 0, 0, E, (0, &[u64::MAX, 1]))));
        assert!(ok(forge(0.02, 8, 0, u64::MAX, E, E)));
        // Format 1: the same checks, any N.
        const F: (bool, i64, &[u64]) = (false, 0, &[]);
        assert!(ok(forge_v1(
            0.02,
            124,
            3,
            (false, -5, &[1, 0, 2]),
            (false, 10, &[4])
        )));
        assert!(!ok(forge_v1(0.02, 124, 0, F, (false, 3, &[0, 1]))));
        assert!(!ok(forge_v1(0.02, 124, 0, F, (true, 0, &[]))));
        assert!(!ok(forge_v1(0.02, 124, 0, F, (true, 3, &[1, 1]))));
        assert!(!ok(forge_v1(0.02, 2, 0, F, (false, 3, &[1, 1, 1]))));
        assert!(!ok(forge_v1(0.02, 124, 0, F, (false, 100_000, &[1]))));
        assert!(!ok(forge_v1(0.02, 124, 0, (false, i64::MAX, &[1]), F)));
        assert!(!ok(forge_v1(0.02, 124, u64::MAX, F, (false, 0, &[1]))));
    }

    /// Format 1 as the previous code wrote it (fixtures written by the
    /// 124-bucket, lowest-collapsing sketch at commit 63832b3).
    #[test]
    fn format_1_sketches_still_restore() {
        struct R(u64);
        impl R {
            fn unit(&mut self) -> f64 {
                let mut r = Rng(self.0);
                let u = r.unit();
                self.0 = r.0;
                u
            }
        }
        // (a) 1.5 decades, signs and zeros: the sketch comes back bucket for bucket.
        let mut r = R(1);
        let a: Vec<f64> = (0..3000)
            .map(|i| {
                let m = 10f64.powf(1.5 * r.unit());
                match i % 3 {
                    0 => m,
                    1 => -m,
                    _ => 0.0,
                }
            })
            .collect();
        let bytes = include_bytes!("../tests/fixtures/sketch_v1_a.cbor");
        let restored: DefaultSketch = from_bytes(bytes).unwrap();
        let fresh: DefaultSketch = build(0.02, &a);
        assert_eq!(restored, fresh);
        let small: SmallSketch = from_bytes(bytes).unwrap();
        assert_eq!(small, build::<ArrayBins<SMALL_CAPACITY>>(0.02, &a));
        // (b) 6 decades: format 1 had collapsed its lowest buckets. The count
        // and the quantiles above the folded mass are kept.
        let mut r = R(2);
        let b: Vec<f64> = (0..3000)
            .map(|_| 10f64.powf(6.0 * r.unit() - 3.0))
            .collect();
        let restored: DefaultSketch =
            from_bytes(include_bytes!("../tests/fixtures/sketch_v1_b.cbor")).unwrap();
        assert_eq!(restored.count(), 3000);
        assert_eq!(restored.collapses(), 0);
        let mut sorted = b.clone();
        sorted.sort_by(f64::total_cmp);
        let exact = |q: f64| sorted[(q * 2999.0_f64).ceil() as usize];
        for q in [0.9, 0.99, 1.0] {
            let v = restored.quantile(q).unwrap();
            assert!((v - exact(q)).abs() <= tolerance(0.02) * exact(q), "q={q}");
        }
        // The median was in the folded mass (format 1 kept 2.15 decades):
        // still over-estimated, as before the upgrade.
        assert!(restored.quantile(0.5).unwrap() > 2.0 * exact(0.5));
    }

    #[test]
    fn module_doc_example() {
        let mut a = SmallSketch::new(0.02);
        let mut b = SmallSketch::new(0.02);
        for i in 1..=1000 {
            a.insert(f64::from(i));
            b.insert(-f64::from(i));
        }
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 2000);
        let bound = a.relative_accuracy();
        assert!(bound > 0.039 && bound < 0.04);
        let p99 = a.quantile(0.99).unwrap(); // exact: 980
        assert!((p99 - 980.0).abs() <= bound * 980.0);
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e6..1e6f64,
            (0.0..1.0f64).prop_map(|u| 10f64.powf(u * 40.0 - 20.0)),
            (0.0..1.0f64).prop_map(|u| -(10f64.powf(u * 40.0 - 20.0))),
            (0.0..1.0f64).prop_map(|u| 10f64.powf(u * 12.0 - 6.0)),
            Just(0.0),
            Just(-0.0),
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Against a sorted-vector model: every quantile within the stated
        /// bound, merge of any split == one sketch, exact round trip.
        #[test]
        fn prop_bound_merge_and_round_trip(
            data in proptest::collection::vec(value_strategy(), 0..400),
            split in proptest::collection::vec(any::<bool>(), 400),
            alpha in prop_oneof![Just(0.01), Just(0.02), 0.001..0.2f64],
        ) {
            let whole: DefaultSketch = build(alpha, &data);
            check(&whole, &data);
            let small: SmallSketch = build(alpha, &data);
            check(&small, &data);
            check(&build::<ArrayBins<4096>>(alpha, &data), &data);

            let mut a = DefaultSketch::new(alpha);
            let mut b = DefaultSketch::new(alpha);
            for (x, left) in data.iter().zip(&split) {
                if *left { a.insert(*x); } else { b.insert(*x); }
            }
            a.merge(&b).unwrap();
            prop_assert_eq!(&a, &whole);

            let back: DefaultSketch = from_bytes(&to_bytes(&whole)).unwrap();
            prop_assert_eq!(back, whole);
        }

        /// Values within 12 decades per sign keep α = 2 % in the default sketch.
        #[test]
        fn prop_twelve_decades_keep_alpha(
            data in proptest::collection::vec(
                (0.0..1.0f64, any::<bool>()).prop_map(|(u, neg)| {
                    let m = 10f64.powf(u * 12.0 - 3.0);
                    if neg { -m } else { m }
                }),
                1..2000,
            ),
        ) {
            let s: DefaultSketch = build(DEFAULT_ALPHA, &data);
            prop_assert_eq!(s.collapses(), 0);
            check(&s, &data);
        }

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(s) = from_bytes::<ArrayBins<4>>(&bytes) {
                assert_sane(&s);
            }
        }
    }
}
