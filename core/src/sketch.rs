//! Bounded-memory, mergeable quantile sketch for window aggregates.
//!
//! [`QuantileSketch<N>`] is a DDSketch (Masson, Rim, Lee: "DDSketch: A Fast
//! and Fully-Mergeable Quantile Sketch with Relative-Error Guarantees", VLDB
//! 2019) with two *collapsing* dense stores of at most `N` buckets each, one
//! for positive and one for negative values, plus a zero count. It never
//! allocates: `N` is part of the type, and the module needs only `core`,
//! `libm` and `minicbor`.
//!
//! # Buckets
//!
//! With `γ = (1 + α) / (1 − α)`, a value `x` with `|x| ≥ f64::MIN_POSITIVE`
//! goes to key `k = ⌈log_γ |x|⌉`, i.e. bucket `(γ^(k−1), γ^k]`, which is
//! reported as `2·γ^k / (γ + 1)`. Every point of the bucket is within a
//! relative distance `α` of that value. Zeros and subnormals
//! (`|x| < f64::MIN_POSITIVE`) go to the zero count and are reported as `0.0`.
//!
//! # Rank convention and error bound
//!
//! Let `n = count()` and let `x_0 ≤ x_1 ≤ … ≤ x_(n−1)` be the inserted
//! (finite) values, sorted. For `q ∈ [0, 1]` the exact q-quantile is
//! `x_q = x_r` with the 0-based rank `r = ⌈q · (n − 1)⌉` (computed in `f64`);
//! `q = 0` is the minimum and `q = 1` the maximum. [`QuantileSketch::quantile`]
//! returns the representative of the bucket that holds `x_r`, so, while the
//! sketch has not collapsed ([`QuantileSketch::collapsed`] is `false`):
//!
//! ```text
//! |v − x_q| ≤ α · |x_q|          for every q ∈ [0, 1]
//! ```
//!
//! and `v` has the sign of `x_q`; if `|x_q| < f64::MIN_POSITIVE` then `v = 0.0`
//! (an absolute error below `2.3e−308`). The only slack is floating-point
//! rounding in `log`/`exp`, a relative excess of at most about `2e−13` even at
//! the ends of the `f64` range. In particular `quantile(0.0)` and
//! `quantile(1.0)` are within `α` of the exact min and max (the caller tracks
//! those exactly). The bound is per quantile and does not depend on `n`.
//!
//! # Collapsing (what `N` costs)
//!
//! Each store holds a window of at most `N` consecutive keys. `N` buckets
//! cover a ratio of `γ^N ≈ e^(2αN)` between its largest and smallest
//! magnitude. When a value (or a merge) would stretch a store past `N` keys,
//! the *lowest* keys are collapsed, exactly like the paper's "collapsing
//! lowest dense store": the window is moved so its top is the highest key
//! seen and every key below the window is added to its lowest bucket `B`.
//! The negative store is the mirror image in value order: it collapses the
//! *most negative* values (largest `|x|`) into its bucket nearest to them.
//! Either way, collapsed values only ever move *up* in value order, and only
//! into the lowest retained bucket of their store. Consequences:
//!
//! * The guarantee above still holds for every `q` whose exact quantile `x_q`
//!   was not itself collapsed, i.e. `x_q ≤ 0` or `x_q` above the positive
//!   collapse floor, and `x_q ≥ 0` or `x_q` at or above the negative collapse
//!   floor ([`QuantileSketch::collapse_floors`] returns both). For
//!   non-negative data: **every quantile above the collapsed mass keeps the α
//!   guarantee**; in particular the upper quantiles do.
//! * For a `q` whose `x_q` was collapsed, the estimate is the lowest retained
//!   bucket of that store, so `x_q ≤ v`: it over-estimates and has no relative
//!   bound.
//! * The final state depends only on the multiset of inserted values, not on
//!   insertion or merge order, so merging sketches gives exactly the sketch
//!   of the union, collapsed or not.
//!
//! # Memory
//!
//! `size_of::<QuantileSketch<N>>() = 16·N + 64` bytes (`u64` counts). The
//! default, [`DefaultSketch`] = `QuantileSketch<124>`, is exactly 2048 bytes
//! (checked at compile time). With [`DEFAULT_ALPHA`] = 0.02 its stores each
//! span a ratio of ≈143× before collapsing; other choices for `N = 124`:
//!
//! | α     | range per store without collapsing |
//! |-------|------------------------------------|
//! | 0.005 | ≈3.5×                              |
//! | 0.01  | ≈12×                               |
//! | 0.02  | ≈143×                              |
//! | 0.05  | ≈2.4·10⁵×                          |
//!
//! 2% keeps p50…p99.9 of a typical latency or sensor distribution (tails
//! within two decades of the maximum) inside the guarantee, which 1% at the
//! same memory does not.
//!
//! # Wire format (CBOR, version 1)
//!
//! `[1, alpha: f64, N: uint, zero_count: uint, negative_store, positive_store]`
//! with `store = [collapsed: bool, base_key: int, [count: uint; len]]`,
//! `len ≤ N`, `counts[i]` being the count of key `base_key + i`. The negative
//! store's keys are `−⌈log_γ |x|⌉`. Non-empty stores have non-zero first and
//! last counts; an empty store is `[false, 0, []]`. The total count is not
//! sent, it is the sum. At most [`QuantileSketch::MAX_ENCODED_LEN`] bytes.
//!
//! # Example
//!
//! ```
//! use weir_core::sketch::DefaultSketch;
//! let mut a = DefaultSketch::new(0.02);
//! let mut b = DefaultSketch::new(0.02);
//! for i in 1..=1000 {
//!     a.insert(i as f64);
//!     b.insert(-(i as f64));
//! }
//! a.merge(&b).unwrap();
//! assert_eq!(a.count(), 2000);
//! let p99 = a.quantile(0.99).unwrap(); // exact: 980
//! assert!((p99 - 980.0).abs() <= 0.02 * 980.0);
//! ```

use core::f64::consts::{LN_2, SQRT_2};
use core::fmt;

use minicbor::{decode, encode, Decoder, Encoder};

/// Smallest accepted relative accuracy α.
///
/// Below it, bucket keys grow past what `f64` arithmetic resolves cleanly and
/// `N` buckets would span a useless range (`e^(2αN)`).
pub const MIN_ALPHA: f64 = 1e-9;

/// Relative accuracy used by [`Default`]: 2%.
pub const DEFAULT_ALPHA: f64 = 0.02;

/// Buckets per store in [`DefaultSketch`], chosen so that it is 2 KiB.
pub const DEFAULT_CAPACITY: usize = 124;

/// The 2 KiB sketch: 124 buckets per sign.
pub type DefaultSketch = QuantileSketch<DEFAULT_CAPACITY>;

const _: () = assert!(core::mem::size_of::<DefaultSketch>() <= 2048);

const FORMAT_VERSION: u8 = 1;

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

/// A window of at most `N` consecutive keys that collapses its lowest keys.
#[derive(Clone, Debug)]
struct Store<const N: usize> {
    /// `counts[i]` counts key `base + i` for `i < len`; slots `≥ len` are 0.
    /// When `len > 0`, `counts[0]` and `counts[len - 1]` are non-zero.
    counts: [u64; N],
    /// Key of `counts[0]`; 0 when empty.
    base: i64,
    len: u32,
    /// Keys below `base` have been folded into `counts[0]`. Then `len == N`.
    collapsed: bool,
}

impl<const N: usize> PartialEq for Store<N> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.collapsed == other.collapsed
            && (self.len == 0 || self.base == other.base)
            && self.live() == other.live()
    }
}

impl<const N: usize> Store<N> {
    const EMPTY: Self = Self {
        counts: [0; N],
        base: 0,
        len: 0,
        collapsed: false,
    };

    fn live(&self) -> &[u64] {
        &self.counts[..self.len as usize]
    }

    /// Highest key held; only meaningful when non-empty.
    fn top(&self) -> i64 {
        self.base + i64::from(self.len) - 1
    }

    fn sum(&self) -> u64 {
        self.live().iter().fold(0, |a, &c| a.saturating_add(c))
    }

    /// Moves the window so that it covers `lo..=hi` (`lo ≤ hi`, `hi − lo < N`)
    /// and everything already held, collapsing the lowest keys into the new
    /// lowest bucket if that spans more than `N` keys. The caller then adds
    /// the counts of `lo..=hi`, sending keys below `base` to slot 0.
    fn make_room(&mut self, lo: i64, hi: i64) {
        let cap = N as i64;
        let old_len = self.len as usize;
        let (min, top) = if old_len == 0 {
            (lo, hi)
        } else {
            (self.base.min(lo), self.top().max(hi))
        };
        let mut new_base = min;
        if top - min >= cap {
            new_base = top - cap + 1;
            self.collapsed = true;
        }
        if old_len > 0 {
            if new_base > self.base {
                let shift = new_base - self.base;
                if shift >= old_len as i64 {
                    let folded = self.sum();
                    self.counts[..old_len].fill(0);
                    self.counts[0] = folded;
                } else {
                    let d = shift as usize;
                    let folded = self.counts[..=d]
                        .iter()
                        .fold(0u64, |a, &c| a.saturating_add(c));
                    self.counts.copy_within(d..old_len, 0);
                    self.counts[0] = folded;
                    self.counts[old_len - d..old_len].fill(0);
                }
            } else if new_base < self.base {
                // Fits: the new span is at most N, so d + old_len ≤ N.
                let d = (self.base - new_base) as usize;
                self.counts.copy_within(0..old_len, d);
                self.counts[..d].fill(0);
            }
        }
        self.base = new_base;
        self.len = (top - new_base + 1) as u32;
    }

    /// Adds `c` to `key`, or to the lowest bucket if `key` is below the window.
    fn bump(&mut self, key: i64, c: u64) {
        let slot = (key.max(self.base) - self.base) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(c);
    }

    fn add(&mut self, key: i64, c: u64) {
        self.make_room(key, key);
        self.bump(key, c);
    }

    fn merge(&mut self, other: &Self) {
        if other.len == 0 {
            return;
        }
        self.make_room(other.base, other.top());
        for (key, &c) in (other.base..).zip(other.live()) {
            if c != 0 {
                self.bump(key, c);
            }
        }
        self.collapsed |= other.collapsed;
    }

    fn encode<W: encode::Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        e.array(3)?
            .bool(self.collapsed)?
            .i64(self.base)?
            .array(u64::from(self.len))?;
        for &c in self.live() {
            e.u64(c)?;
        }
        Ok(())
    }

    /// Decodes a store whose keys must lie in `min_key..=max_key`; returns it
    /// with the sum of its counts.
    fn decode(
        d: &mut Decoder<'_>,
        min_key: i64,
        max_key: i64,
    ) -> Result<(Self, u64), decode::Error> {
        expect_array(d, 3)?;
        let collapsed = d.bool()?;
        let at = d.position();
        let base = d.i64()?;
        let len = match d.array()? {
            Some(len) if len <= N as u64 => len as usize,
            _ => {
                return Err(invalid(
                    "bucket array longer than N or of indefinite length",
                    at,
                ))
            }
        };
        let mut store = Self::EMPTY;
        let mut sum = 0u64;
        for slot in store.counts[..len].iter_mut() {
            *slot = d.u64()?;
            sum = sum
                .checked_add(*slot)
                .ok_or_else(|| invalid("bucket counts overflow u64", at))?;
        }
        if len == 0 {
            if collapsed || base != 0 {
                return Err(invalid("empty store must be [false, 0, []]", at));
            }
            return Ok((store, sum));
        }
        if store.counts[0] == 0 || store.counts[len - 1] == 0 {
            return Err(invalid("first and last bucket counts must be non-zero", at));
        }
        if base < min_key || base > max_key - (len as i64 - 1) {
            return Err(invalid(
                "bucket keys outside the range of f64 for this alpha",
                at,
            ));
        }
        if collapsed && len != N {
            return Err(invalid("a collapsed store must use all N buckets", at));
        }
        store.base = base;
        store.len = len as u32;
        store.collapsed = collapsed;
        Ok((store, sum))
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

/// Bounded-memory, mergeable quantile sketch with relative error α.
///
/// See the [module documentation](self) for the error bound, the rank
/// convention, collapsing and the wire format. `N ≥ 1` is the number of
/// buckets per sign; the value is `16·N + 64` bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileSketch<const N: usize> {
    /// Keys `−⌈log_γ |x|⌉`, so key order is value order and collapsing the
    /// lowest keys collapses the most negative values.
    neg: Store<N>,
    /// Keys `⌈log_γ x⌉`.
    pos: Store<N>,
    zero: u64,
    /// Always `zero + Σ neg + Σ pos`.
    count: u64,
    alpha: f64,
    ln_gamma: f64,
}

impl<const N: usize> Default for QuantileSketch<N> {
    /// An empty sketch with [`DEFAULT_ALPHA`].
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA)
    }
}

impl<const N: usize> QuantileSketch<N> {
    /// Upper bound on the size of [`encode`](Self::encode)'s output, in bytes
    /// (2280 for [`DefaultSketch`]); reached by a full sketch with huge counts.
    pub const MAX_ENCODED_LEN: usize = {
        // array(6), version, f64 alpha, N, zero count
        let header = 1 + 1 + 9 + cbor_uint_len(N as u64) + 9;
        // array(3), bool, base key, array(len), counts
        let store = 1 + 1 + 9 + cbor_uint_len(N as u64) + 9 * N;
        header + 2 * store
    };

    const CAPACITY_OK: () = assert!(
        N >= 1 && N as u64 <= u32::MAX as u64,
        "QuantileSketch needs 1 <= N <= u32::MAX"
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
        match Self::try_new(alpha) {
            Ok(sketch) => sketch,
            Err(_) => panic!("QuantileSketch alpha must be in [1e-9, 1)"),
        }
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
        Ok(Self {
            neg: Store::EMPTY,
            pos: Store::EMPTY,
            zero: 0,
            count: 0,
            alpha,
            ln_gamma: ln_gamma(alpha),
        })
    }

    /// Adds one value. Returns `false`, changing nothing, if `x` is NaN or
    /// infinite (or if the sketch already holds `u64::MAX` values).
    pub fn insert(&mut self, x: f64) -> bool {
        if !x.is_finite() || self.count == u64::MAX {
            return false;
        }
        let magnitude = libm::fabs(x);
        if magnitude < f64::MIN_POSITIVE {
            self.zero += 1;
        } else if x > 0.0 {
            self.pos.add(self.key(magnitude), 1);
        } else {
            self.neg.add(-self.key(magnitude), 1);
        }
        self.count += 1;
        true
    }

    /// Adds all values of `other`. The result equals the sketch of both
    /// inputs inserted into one sketch, collapsing included.
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
        self.zero += other.zero;
        self.neg.merge(&other.neg);
        self.pos.merge(&other.pos);
        self.count = count;
        Ok(())
    }

    /// Estimate of the q-quantile (rank `⌈q·(n − 1)⌉`, 0-based), within the
    /// module's error bound. `None` if the sketch is empty or `q` is not in
    /// `[0, 1]` (NaN included).
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

    /// Whether either store has collapsed, so that some quantiles (those at
    /// or below the collapsed mass, see [`collapse_floors`](Self::collapse_floors))
    /// no longer have the α guarantee. Stays `true` until [`clear`](Self::clear).
    pub fn collapsed(&self) -> bool {
        self.neg.collapsed || self.pos.collapsed
    }

    /// Where collapsing voided the guarantee, as `(negative, positive)`.
    ///
    /// * `negative = Some(t)` (`t < 0`): values below `t` were collapsed; a
    ///   quantile whose exact value is `< t` is over-estimated.
    /// * `positive = Some(t)` (`t > 0`): positive values `≤ t` were collapsed;
    ///   a quantile whose exact value is in `(0, t]` is over-estimated.
    ///
    /// Every other quantile keeps the α bound. `None` means that store has not
    /// collapsed. The thresholds are bucket edges, exact up to rounding.
    pub fn collapse_floors(&self) -> (Option<f64>, Option<f64>) {
        let edge = |key: i64| libm::exp(key as f64 * self.ln_gamma);
        (
            self.neg.collapsed.then(|| -edge(-self.neg.base)),
            self.pos.collapsed.then(|| edge(self.pos.base - 1)),
        )
    }

    /// Empties the sketch, keeping α. Clears the collapsed flag.
    pub fn clear(&mut self) {
        self.neg = Store::EMPTY;
        self.pos = Store::EMPTY;
        self.zero = 0;
        self.count = 0;
    }

    /// Writes the sketch as CBOR (format in the module documentation), at
    /// most [`MAX_ENCODED_LEN`](Self::MAX_ENCODED_LEN) bytes.
    ///
    /// # Errors
    ///
    /// Only those of the writer, e.g. a full buffer.
    pub fn encode<W: encode::Write>(
        &self,
        e: &mut Encoder<W>,
    ) -> Result<(), encode::Error<W::Error>> {
        e.array(6)?
            .u8(FORMAT_VERSION)?
            .f64(self.alpha)?
            .u64(N as u64)?
            .u64(self.zero)?;
        self.neg.encode(e)?;
        self.pos.encode(e)
    }

    /// Reads a sketch written by [`encode`](Self::encode) with the same `N`.
    ///
    /// # Errors
    ///
    /// Truncated or malformed CBOR, another format version, a different `N`,
    /// an invalid alpha, bucket keys no finite `f64` can produce, a
    /// non-canonical store, or counts whose sum overflows `u64`. Never panics.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, decode::Error> {
        expect_array(d, 6)?;
        let at = d.position();
        if d.u8()? != FORMAT_VERSION {
            return Err(invalid("unsupported quantile sketch format version", at));
        }
        let at = d.position();
        let mut sketch =
            Self::try_new(d.f64()?).map_err(|_| invalid("alpha must be in [1e-9, 1)", at))?;
        let at = d.position();
        if d.u64()? != N as u64 {
            return Err(invalid(
                "quantile sketch has a different bucket capacity N",
                at,
            ));
        }
        let zero = d.u64()?;
        // One key of slack on each side in case libm's log is not monotone.
        let min_key = sketch.key(f64::MIN_POSITIVE) - 1;
        let max_key = sketch.key(f64::MAX) + 1;
        let (neg, neg_sum) = Store::decode(d, -max_key, -min_key)?;
        let (pos, pos_sum) = Store::decode(d, min_key, max_key)?;
        sketch.count = zero
            .checked_add(neg_sum)
            .and_then(|c| c.checked_add(pos_sum))
            .ok_or_else(|| invalid("total count overflows u64", at))?;
        sketch.zero = zero;
        sketch.neg = neg;
        sketch.pos = pos;
        Ok(sketch)
    }

    /// Key of a magnitude `m ≥ f64::MIN_POSITIVE`: `⌈log_γ m⌉`.
    fn key(&self, magnitude: f64) -> i64 {
        libm::ceil(libm::log(magnitude) / self.ln_gamma) as i64
    }

    /// Representative magnitude of a key: `2γ^k/(γ + 1) = γ^(k − ½)/cosh(ln γ / 2)`,
    /// computed in log space so that it cannot overflow for large γ. Clamping to
    /// the normal range only moves it towards every value the bucket can hold.
    fn value(&self, key: i64) -> f64 {
        let half = 0.5 * self.ln_gamma;
        let ln_cosh = half + libm::log1p(libm::exp(-2.0 * half)) - LN_2;
        libm::exp((key as f64 - 0.5) * self.ln_gamma - ln_cosh).clamp(f64::MIN_POSITIVE, f64::MAX)
    }
}

impl<C, const N: usize> minicbor::Encode<C> for QuantileSketch<N> {
    fn encode<W: encode::Write>(
        &self,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        QuantileSketch::encode(self, e)
    }
}

impl<'b, C, const N: usize> minicbor::Decode<'b, C> for QuantileSketch<N> {
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

    /// Float slack: log/exp rounding, far below any real violation.
    fn tolerance(alpha: f64) -> f64 {
        alpha * (1.0 + 1e-9) + 2e-13
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

    fn build<const N: usize>(alpha: f64, data: &[f64]) -> QuantileSketch<N> {
        let mut s = QuantileSketch::<N>::new(alpha);
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

    /// Whether the exact value `x` was collapsed, decided in key space.
    fn lost_guarantee<const N: usize>(s: &QuantileSketch<N>, x: f64) -> bool {
        if x >= f64::MIN_POSITIVE {
            s.pos.collapsed && s.key(x) < s.pos.base
        } else if x <= -f64::MIN_POSITIVE {
            s.neg.collapsed && -s.key(-x) < s.neg.base
        } else {
            false
        }
    }

    /// Checks every grid quantile against a sorted-vector reference; returns
    /// the worst relative error seen among the guaranteed ones.
    fn check<const N: usize>(s: &QuantileSketch<N>, data: &[f64]) -> f64 {
        let mut sorted = data.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(s.count(), sorted.len() as u64);
        assert_eq!(
            s.count(),
            s.zero + s.neg.live().iter().sum::<u64>() + s.pos.live().iter().sum::<u64>()
        );
        if sorted.is_empty() {
            assert_eq!(s.quantile(0.5), None);
            return 0.0;
        }
        let n = sorted.len();
        let mut worst: f64 = 0.0;
        for q in q_grid() {
            let rank = (q * (n - 1) as f64).ceil() as usize;
            let exact = sorted[rank];
            let v = s.quantile(q).expect("non-empty sketch");
            if lost_guarantee(s, exact) {
                assert!(v >= exact, "collapsed q={q}: {v} < exact {exact}");
                continue;
            }
            if exact.abs() < f64::MIN_POSITIVE {
                assert_eq!(v, 0.0, "q={q} exact={exact}");
                continue;
            }
            let err = (v - exact).abs() / exact.abs();
            assert!(
                err <= tolerance(s.alpha()),
                "q={q} rank={rank} exact={exact} got={v} rel err={err} alpha={}",
                s.alpha()
            );
            worst = worst.max(err);
        }
        worst
    }

    fn distributions(rng: &mut Rng) -> Vec<(&'static str, Vec<f64>)> {
        let n = 5000;
        let mut d = Vec::new();
        d.push(("uniform", (0..n).map(|_| rng.unit() * 1000.0).collect()));
        d.push((
            "lognormal",
            (0..n).map(|_| (rng.normal() * 2.5).exp()).collect(),
        ));
        d.push((
            "pareto",
            (0..n).map(|_| rng.unit().powf(-1.0 / 1.1)).collect(),
        ));
        d.push((
            "negative",
            (0..n).map(|_| -(rng.normal() * 1.5 + 3.0).exp()).collect(),
        ));
        d.push(("mixed sign", (0..n).map(|_| rng.normal() * 100.0).collect()));
        d.push((
            "with zeros",
            (0..n)
                .map(|i| if i % 3 == 0 { 0.0 } else { rng.normal() })
                .collect(),
        ));
        d.push(("constant", std::vec![42.5; 1000]));
        d.push(("constant negative", std::vec![-7.0; 10]));
        d.push(("n=1", std::vec![3.0]));
        d.push(("n=1 zero", std::vec![0.0]));
        d.push(("n=2", std::vec![-1e-3, 5e6]));
        d.push(("n=3", std::vec![1.0, 1.0, 2.0]));
        d.push((
            "extremes",
            std::vec![
                f64::MAX,
                -f64::MAX,
                f64::MIN_POSITIVE,
                -f64::MIN_POSITIVE,
                1.0
            ],
        ));
        d.push(("subnormal", std::vec![5e-324, -1e-310, 0.0, -0.0, 1e-300]));
        d.push(("empty", Vec::new()));
        d
    }

    #[test]
    fn bound_holds_across_distributions_without_collapse() {
        let mut rng = Rng(1);
        for (name, data) in distributions(&mut rng) {
            for alpha in [0.01, 0.02, 0.05, 0.3, 0.9] {
                let s = build::<2048>(alpha, &data);
                if name != "extremes" {
                    assert!(!s.collapsed(), "{name} alpha={alpha} collapsed");
                }
                check(&s, &data);
            }
        }
    }

    #[test]
    fn bound_holds_for_default_sketch_collapsed_or_not() {
        let mut rng = Rng(2);
        for (_, data) in distributions(&mut rng) {
            for alpha in [0.001, 0.01, DEFAULT_ALPHA, 0.05] {
                check(&build::<DEFAULT_CAPACITY>(alpha, &data), &data);
            }
        }
    }

    #[test]
    fn bound_is_tight_and_the_check_can_fail() {
        let mut rng = Rng(3);
        let data: Vec<f64> = (0..20_000).map(|_| 1.0 + rng.unit() * 99.0).collect();
        // The estimates really use most of the allowed error...
        let worst = check(&build::<512>(0.01, &data), &data);
        assert!(worst > 0.009, "worst relative error {worst}");
        // ...so a coarser sketch must break the finer bound somewhere.
        let coarse = build::<512>(0.05, &data);
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        let violated = q_grid().into_iter().any(|q| {
            let exact = sorted[(q * (sorted.len() - 1) as f64).ceil() as usize];
            (coarse.quantile(q).unwrap() - exact).abs() > tolerance(0.01) * exact
        });
        assert!(violated);
    }

    #[test]
    fn rank_convention_is_ceil_of_q_times_n_minus_one() {
        let s = build::<1024>(0.001, &[10.0, 20.0, 30.0, 40.0, 50.0]);
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
        s.insert(1.0);
        for q in [-0.0001, 1.0001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(s.quantile(q), None, "q={q}");
        }
        assert!(s.quantile(-0.0).is_some());
    }

    #[test]
    fn insert_rejects_non_finite_without_change() {
        let mut s = build::<32>(0.02, &[1.0, -2.0, 0.0]);
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
        let mut s = build::<8>(0.02, &[1.0]);
        s.count = u64::MAX;
        s.pos.counts[0] = u64::MAX;
        let before = s.clone();
        assert!(!s.insert(1.0));
        assert_eq!(
            s.merge(&build::<8>(0.02, &[2.0])),
            Err(SketchError::CountOverflow)
        );
        assert_eq!(s, before);
    }

    #[test]
    fn merge_equals_single_sketch() {
        let mut rng = Rng(4);
        for (name, data) in distributions(&mut rng) {
            for parts in [2, 3, 7] {
                let mut pieces: Vec<DefaultSketch> =
                    (0..parts).map(|_| DefaultSketch::new(0.02)).collect();
                for &x in &data {
                    let i = rng.below(parts);
                    pieces[i].insert(x);
                }
                let mut merged = DefaultSketch::new(0.02);
                for p in &pieces {
                    merged.merge(p).unwrap();
                }
                let whole = build::<DEFAULT_CAPACITY>(0.02, &data);
                assert_eq!(merged, whole, "{name} in {parts} parts");
                for q in q_grid() {
                    assert_eq!(merged.quantile(q), whole.quantile(q), "{name} q={q}");
                }
            }
        }
    }

    #[test]
    fn merge_rejects_alpha_mismatch_without_change() {
        let mut a = build::<16>(0.01, &[1.0, 2.0]);
        let before = a.clone();
        let err = a.merge(&build::<16>(0.02, &[3.0])).unwrap_err();
        assert_eq!(err, SketchError::AlphaMismatch);
        assert_eq!(a, before);
        let msg = std::format!("{err}");
        assert!(msg.contains("different alpha"), "{msg}");
        let _: &dyn core::error::Error = &err;
    }

    fn log_uniform(rng: &mut Rng, n: usize, lo_exp: f64, hi_exp: f64) -> Vec<f64> {
        (0..n)
            .map(|_| 10f64.powf(lo_exp + (hi_exp - lo_exp) * rng.unit()))
            .collect()
    }

    #[test]
    fn collapsing_huge_range_keeps_upper_quantiles() {
        let mut rng = Rng(5);
        let pos = log_uniform(&mut rng, 10_000, -300.0, 300.0);
        let neg: Vec<f64> = log_uniform(&mut rng, 10_000, -300.0, 300.0)
            .into_iter()
            .map(|x| -x)
            .collect();
        let mixed: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        for (name, data) in [("positive", &pos), ("negative", &neg), ("mixed", &mixed)] {
            for alpha in [0.01, 0.02] {
                let s = build::<DEFAULT_CAPACITY>(alpha, data);
                assert!(s.collapsed(), "{name}");
                check(&s, data);
                let mut sorted = data.clone();
                sorted.sort_by(f64::total_cmp);
                for q in [0.999, 0.9999, 1.0] {
                    let exact = sorted[(q * (sorted.len() - 1) as f64).ceil() as usize];
                    let v = s.quantile(q).unwrap();
                    if exact > 0.0 {
                        assert!(!lost_guarantee(&s, exact), "{name} q={q}");
                    }
                    if name != "mixed" || exact > 0.0 {
                        assert!(
                            (v - exact).abs() <= tolerance(alpha) * exact.abs(),
                            "{name} q={q}"
                        );
                    }
                }
                // Every value is finite and ordered.
                let qs: Vec<f64> = q_grid()
                    .into_iter()
                    .map(|q| s.quantile(q).unwrap())
                    .collect();
                assert!(qs.iter().all(|v| v.is_finite()));
            }
        }
        // Negative store: the values nearest zero (the upper quantiles) keep the bound.
        let s = build::<DEFAULT_CAPACITY>(0.02, &neg);
        let (nf, pf) = s.collapse_floors();
        assert!(pf.is_none());
        let nf = nf.unwrap();
        assert!(nf < 0.0 && nf > -1e300);
    }

    #[test]
    fn collapse_floors_match_key_space() {
        let mut rng = Rng(6);
        let data = log_uniform(&mut rng, 2000, -50.0, 50.0);
        let mut data2: Vec<f64> = data.iter().map(|x| -x).collect();
        data2.extend(&data);
        let s = build::<DEFAULT_CAPACITY>(0.02, &data2);
        let (nf, pf) = s.collapse_floors();
        let (nf, pf) = (nf.unwrap(), pf.unwrap());
        assert!(lost_guarantee(&s, pf * (1.0 - 1e-9)));
        assert!(!lost_guarantee(&s, pf * (1.0 + 1e-9)));
        assert!(lost_guarantee(&s, nf * (1.0 + 1e-9)));
        assert!(!lost_guarantee(&s, nf * (1.0 - 1e-9)));
        assert_eq!(DefaultSketch::new(0.02).collapse_floors(), (None, None));
    }

    #[test]
    fn collapse_is_order_independent() {
        let mut rng = Rng(7);
        let mut data = log_uniform(&mut rng, 3000, -20.0, 20.0);
        let a = build::<DEFAULT_CAPACITY>(0.02, &data);
        data.sort_by(f64::total_cmp);
        let b = build::<DEFAULT_CAPACITY>(0.02, &data);
        data.reverse();
        let c = build::<DEFAULT_CAPACITY>(0.02, &data);
        assert!(a.collapsed());
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn tiny_capacity_never_panics() {
        let mut rng = Rng(8);
        let data: Vec<f64> = (0..2000)
            .map(|_| rng.normal() * 10f64.powf(rng.unit() * 600.0 - 300.0))
            .collect();
        for alpha in [MIN_ALPHA, 0.02, 0.999_999] {
            let s1 = build::<1>(alpha, &data);
            let s2 = build::<2>(alpha, &data);
            check(&s1, &data);
            check(&s2, &data);
        }
    }

    #[test]
    fn clear_resets_but_keeps_alpha() {
        let mut rng = Rng(9);
        let data = log_uniform(&mut rng, 1000, -100.0, 100.0);
        let mut s = build::<DEFAULT_CAPACITY>(0.05, &data);
        assert!(s.collapsed());
        s.clear();
        assert_eq!(s, DefaultSketch::new(0.05));
        assert!(!s.collapsed());
        assert_eq!(s.alpha(), 0.05);
        assert_eq!(s.quantile(0.5), None);
    }

    #[test]
    fn default_sketch_is_2_kib() {
        assert_eq!(core::mem::size_of::<DefaultSketch>(), 2048);
        assert_eq!(core::mem::size_of::<QuantileSketch<10>>(), 16 * 10 + 64);
    }

    #[test]
    fn new_is_const_and_ln_gamma_is_accurate() {
        const S: DefaultSketch = DefaultSketch::new(DEFAULT_ALPHA);
        static T: QuantileSketch<4> = QuantileSketch::new(0.5);
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
                QuantileSketch::<8>::try_new(bad).err(),
                Some(SketchError::InvalidAlpha),
                "{bad}"
            );
        }
        assert!(QuantileSketch::<8>::try_new(MIN_ALPHA).is_ok());
        assert!(QuantileSketch::<8>::try_new(1.0 - f64::EPSILON / 2.0).is_ok());
    }

    #[test]
    #[should_panic(expected = "alpha")]
    fn new_panics_on_invalid_alpha() {
        let _ = DefaultSketch::new(0.0);
    }

    fn to_bytes<const N: usize>(s: &QuantileSketch<N>) -> Vec<u8> {
        let mut buf = std::vec![0u8; QuantileSketch::<N>::MAX_ENCODED_LEN];
        let mut cursor = minicbor::encode::write::Cursor::new(&mut buf[..]);
        s.encode(&mut Encoder::new(&mut cursor))
            .expect("buffer of MAX_ENCODED_LEN suffices");
        let len = cursor.position();
        buf.truncate(len);
        buf
    }

    fn from_bytes<const N: usize>(bytes: &[u8]) -> Result<QuantileSketch<N>, decode::Error> {
        QuantileSketch::<N>::decode(&mut Decoder::new(bytes))
    }

    /// What must hold for anything `decode` accepts.
    fn assert_sane<const N: usize>(s: &QuantileSketch<N>) {
        assert!(alpha_is_valid(s.alpha()));
        let sum = s.zero + s.neg.live().iter().sum::<u64>() + s.pos.live().iter().sum::<u64>();
        assert_eq!(s.count(), sum);
        if s.count() > 0 {
            for q in [0.0, 0.5, 1.0] {
                assert!(s.quantile(q).unwrap().is_finite());
            }
        }
        let again: QuantileSketch<N> = from_bytes(&to_bytes(s)).unwrap();
        assert_eq!(&again, s);
    }

    fn samples() -> Vec<DefaultSketch> {
        let mut rng = Rng(10);
        let mut out = std::vec![DefaultSketch::new(0.02)];
        for (_, data) in distributions(&mut rng) {
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
            let mut buf = [0u8; DefaultSketch::MAX_ENCODED_LEN];
            minicbor::encode(&s, &mut buf[..]).unwrap();
            assert_eq!(&buf[..bytes.len()], &bytes[..]);
            let via_trait: DefaultSketch = minicbor::decode(&bytes).unwrap();
            assert_eq!(via_trait, s);
        }
    }

    #[test]
    fn max_encoded_len_is_an_upper_bound() {
        let mut s = DefaultSketch::new(MIN_ALPHA);
        for store in [&mut s.neg, &mut s.pos] {
            store.counts = [u64::MAX / 1024; DEFAULT_CAPACITY];
            store.len = DEFAULT_CAPACITY as u32;
            store.collapsed = true;
        }
        s.neg.base = -s.key(f64::MAX);
        s.pos.base = s.key(f64::MAX) - DEFAULT_CAPACITY as i64 + 1;
        s.zero = u64::MAX / 1024;
        s.count = s.zero * (2 * DEFAULT_CAPACITY as u64 + 1);
        let bytes = to_bytes(&s);
        assert_eq!(bytes.len(), DefaultSketch::MAX_ENCODED_LEN);
        assert_eq!(DefaultSketch::MAX_ENCODED_LEN, 2280);
        assert_eq!(from_bytes::<DEFAULT_CAPACITY>(&bytes).unwrap(), s);
        let mut small = [0u8; 100];
        assert!(s.encode(&mut Encoder::new(&mut small[..])).is_err());
    }

    #[test]
    fn decode_rejects_every_truncation() {
        for s in samples() {
            let bytes = to_bytes(&s);
            for cut in 0..bytes.len() {
                assert!(
                    from_bytes::<DEFAULT_CAPACITY>(&bytes[..cut]).is_err(),
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
            for _ in 0..400 {
                let mut evil = bytes.clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(evil.len());
                    evil[i] ^= 1 << rng.below(8);
                }
                tried += 1;
                match from_bytes::<DEFAULT_CAPACITY>(&evil) {
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
            if let Ok(s) = from_bytes::<DEFAULT_CAPACITY>(&bytes) {
                assert_sane(&s);
            }
            // Garbage after a plausible header.
            let mut framed = std::vec![0x86, 0x01, 0xfb];
            framed.extend(0.02f64.to_be_bytes());
            framed.extend([0x18, 124]);
            framed.extend(&bytes);
            if let Ok(s) = from_bytes::<DEFAULT_CAPACITY>(&framed) {
                assert_sane(&s);
            }
        }
    }

    /// Hand-rolled encoding, to forge inputs `encode` would never write.
    fn forge(
        version: u8,
        alpha: f64,
        n: u64,
        zero: u64,
        neg: (bool, i64, &[u64]),
        pos: (bool, i64, &[u64]),
    ) -> Vec<u8> {
        let mut buf = std::vec![0u8; 8192];
        let mut cursor = minicbor::encode::write::Cursor::new(&mut buf[..]);
        let mut e = Encoder::new(&mut cursor);
        e.array(6)
            .unwrap()
            .u8(version)
            .unwrap()
            .f64(alpha)
            .unwrap()
            .u64(n)
            .unwrap()
            .u64(zero)
            .unwrap();
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
        let len = cursor.position();
        buf.truncate(len);
        buf
    }

    #[test]
    fn decode_rejects_inconsistent_input() {
        const E: (bool, i64, &[u64]) = (false, 0, &[]);
        let ok = |b: Vec<u8>| from_bytes::<8>(&b).is_ok();
        // The forger is right: a valid sketch passes and matches.
        let good = forge(1, 0.02, 8, 3, (false, -5, &[1, 0, 2]), (false, 10, &[4]));
        let s = from_bytes::<8>(&good).unwrap();
        assert_eq!(s.count(), 10);
        assert_eq!(good, to_bytes(&s));
        // Wrong N, both ways.
        assert!(!ok(forge(1, 0.02, 9, 0, E, E)));
        assert!(from_bytes::<DEFAULT_CAPACITY>(&to_bytes(&build::<64>(0.02, &[1.0]))).is_err());
        assert!(from_bytes::<64>(&to_bytes(&build::<DEFAULT_CAPACITY>(0.02, &[1.0]))).is_err());
        // Bad alpha and version.
        for alpha in [0.0, -0.02, 1.0, 2.0, 1e-12, f64::NAN, f64::INFINITY] {
            assert!(!ok(forge(1, alpha, 8, 0, E, E)), "alpha {alpha}");
        }
        assert!(!ok(forge(2, 0.02, 8, 0, E, E)));
        // Non-canonical stores.
        assert!(!ok(forge(1, 0.02, 8, 0, E, (false, 3, &[0, 1]))));
        assert!(!ok(forge(1, 0.02, 8, 0, E, (false, 3, &[1, 0]))));
        assert!(!ok(forge(1, 0.02, 8, 0, E, (true, 0, &[]))));
        assert!(!ok(forge(1, 0.02, 8, 0, E, (false, 7, &[]))));
        assert!(!ok(forge(1, 0.02, 8, 0, E, (true, 3, &[1, 1]))));
        assert!(!ok(forge(1, 0.02, 8, 0, (false, 0, &[1; 9]), E)));
        // Keys no f64 can produce, including overflow-prone extremes.
        for base in [i64::MIN, i64::MAX, 100_000, -100_000] {
            assert!(
                !ok(forge(1, 0.02, 8, 0, E, (false, base, &[1]))),
                "base {base}"
            );
            assert!(
                !ok(forge(1, 0.02, 8, 0, (false, base, &[1]), E)),
                "base {base}"
            );
        }
        assert!(ok(forge(1, 0.02, 8, 0, E, (false, 17_000, &[1]))));
        assert!(!ok(forge(
            1,
            0.02,
            8,
            0,
            E,
            (false, 17_800, &[1, 0, 0, 0, 0, 0, 0, 1])
        )));
        // Counts that overflow u64.
        assert!(!ok(forge(1, 0.02, 8, u64::MAX, E, (false, 0, &[1]))));
        assert!(!ok(forge(1, 0.02, 8, 0, E, (false, 0, &[u64::MAX, 1]))));
        assert!(ok(forge(1, 0.02, 8, u64::MAX, E, E)));
    }

    #[test]
    fn module_doc_example() {
        let mut a = DefaultSketch::new(0.02);
        let mut b = DefaultSketch::new(0.02);
        for i in 1..=1000 {
            a.insert(f64::from(i));
            b.insert(-f64::from(i));
        }
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 2000);
        let p99 = a.quantile(0.99).unwrap(); // exact: 980
        assert!((p99 - 980.0).abs() <= 0.02 * 980.0);
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e6..1e6f64,
            (0.0..1.0f64).prop_map(|u| 10f64.powf(u * 40.0 - 20.0)),
            (0.0..1.0f64).prop_map(|u| -(10f64.powf(u * 40.0 - 20.0))),
            Just(0.0),
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn prop_bound_merge_and_round_trip(
            data in proptest::collection::vec(value_strategy(), 0..400),
            split in proptest::collection::vec(any::<bool>(), 400),
            alpha in prop_oneof![Just(0.01), Just(0.02), 0.001..0.2f64],
        ) {
            let whole = build::<DEFAULT_CAPACITY>(alpha, &data);
            check(&whole, &data);
            let wide = build::<4096>(alpha, &data);
            check(&wide, &data);

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

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(s) = from_bytes::<4>(&bytes) {
                assert_sane(&s);
            }
        }
    }
}
