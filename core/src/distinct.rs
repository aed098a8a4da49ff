//! Exact distinct counting for `count_distinct` (SQL `COUNT(DISTINCT x)`):
//! one bounded set of values per window.
//!
//! A [`DistinctSet`] holds each distinct value once, as the bits of the
//! `f64` (with `-0.0` taken as `0.0`, which it equals), sorted, so a lookup
//! is a binary search and the set encodes canonically. It holds at most
//! [`DISTINCT_CAP`] values: a window with more distinct values *overflows*,
//! frees its values and counts `NULL` (NaN) rather than a wrong number; the
//! operator counts such windows (`OpStats::distinct_overflow`).

use alloc::vec::Vec;

/// Distinct values one window keeps at most (8 KiB of values).
pub const DISTINCT_CAP: usize = 1024;

/// The distinct values of one window (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DistinctSet {
    /// Canonical bits, strictly increasing.
    vals: Vec<u64>,
    /// More than [`DISTINCT_CAP`] distinct values were seen.
    overflow: bool,
}

/// The bits a value is kept as: `-0.0` and `0.0` are one value.
#[inline]
fn canon(x: f64) -> u64 {
    if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

impl DistinctSet {
    /// An empty set.
    pub const fn new() -> Self {
        DistinctSet {
            vals: Vec::new(),
            overflow: false,
        }
    }

    /// Adds a value (the engine passes finite values only).
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.insert_bits(canon(x));
    }

    fn insert_bits(&mut self, b: u64) {
        if self.overflow {
            return;
        }
        if let Err(i) = self.vals.binary_search(&b) {
            if self.vals.len() >= DISTINCT_CAP {
                self.overflow = true;
                self.vals = Vec::new();
            } else {
                self.vals.insert(i, b);
            }
        }
    }

    /// Adds every value of `o` (a session window merged into another).
    pub fn merge(&mut self, o: &DistinctSet) {
        if o.overflow {
            self.overflow = true;
            self.vals = Vec::new();
            return;
        }
        for &b in &o.vals {
            self.insert_bits(b);
        }
    }

    /// The number of distinct values; NaN once the set overflowed.
    pub fn count(&self) -> f64 {
        if self.overflow {
            f64::NAN
        } else {
            self.vals.len() as f64
        }
    }

    /// Whether the set overflowed [`DISTINCT_CAP`].
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Writes `[overflow, [bits…]]`.
    ///
    /// # Errors
    /// The writer's.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(2)?
            .bool(self.overflow)?
            .array(self.vals.len() as u64)?;
        for &b in &self.vals {
            e.u64(b)?;
        }
        Ok(())
    }

    /// Reads a set written by [`DistinctSet::encode`], checking that it is
    /// one [`DistinctSet::encode`] can write.
    ///
    /// # Errors
    /// Bad CBOR, or values unsorted, repeated, past the cap, or beside an
    /// overflow.
    pub fn decode(d: &mut minicbor::Decoder<'_>) -> Result<Self, minicbor::decode::Error> {
        let bad = minicbor::decode::Error::message;
        if d.array()? != Some(2) {
            return Err(bad("distinct set: expected array of 2"));
        }
        let overflow = d.bool()?;
        let n = d.array()?.ok_or_else(|| bad("distinct set: indefinite"))?;
        if n > DISTINCT_CAP as u64 || (overflow && n > 0) {
            return Err(bad("distinct set: too many values"));
        }
        let mut vals = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let b = d.u64()?;
            if vals.last().is_some_and(|&l| l >= b) {
                return Err(bad("distinct set: values not strictly increasing"));
            }
            // -0.0 is kept as 0.0; the engine takes finite values only.
            if b == 1 << 63 || !f64::from_bits(b).is_finite() {
                return Err(bad("distinct set: a value it cannot hold"));
            }
            vals.push(b);
        }
        Ok(DistinctSet { vals, overflow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_value_once_and_zero_once() {
        let mut s = DistinctSet::new();
        for x in [1.0, 2.0, 1.0, -0.0, 0.0, 2.0, -1.5] {
            s.insert(x);
        }
        assert_eq!(s.count(), 4.0);
        let mut t = DistinctSet::new();
        for x in [2.0, 3.0] {
            t.insert(x);
        }
        s.merge(&t);
        assert_eq!(s.count(), 5.0);
    }

    #[test]
    fn overflows_to_nan_past_the_cap_and_round_trips() {
        let mut s = DistinctSet::new();
        for i in 0..DISTINCT_CAP {
            s.insert(i as f64);
        }
        s.insert(0.0);
        assert_eq!(s.count(), DISTINCT_CAP as f64);
        let mut buf = Vec::new();
        s.encode(&mut minicbor::Encoder::new(&mut buf)).unwrap();
        let back = DistinctSet::decode(&mut minicbor::Decoder::new(&buf)).unwrap();
        assert_eq!(back, s);
        s.insert(-1.0);
        assert!(s.overflowed() && s.count().is_nan());
        let mut t = DistinctSet::new();
        t.insert(5.0);
        t.merge(&s);
        assert!(t.count().is_nan());
        let mut buf = Vec::new();
        t.encode(&mut minicbor::Encoder::new(&mut buf)).unwrap();
        assert_eq!(
            DistinctSet::decode(&mut minicbor::Decoder::new(&buf)).unwrap(),
            t
        );
    }

    #[test]
    fn decode_refuses_what_encode_cannot_write() {
        let nan = f64::NAN.to_bits();
        for vals in [&[2u64, 1][..], &[1, 1], &[1 << 63], &[nan]] {
            let mut buf = Vec::new();
            let mut e = minicbor::Encoder::new(&mut buf);
            e.array(2).unwrap().bool(false).unwrap();
            e.array(vals.len() as u64).unwrap();
            for v in vals {
                e.u64(*v).unwrap();
            }
            assert!(DistinctSet::decode(&mut minicbor::Decoder::new(&buf)).is_err());
        }
    }
}
