//! Nearest-neighbour pattern expert used by [`super::Kestrel`].
//!
//! The series (optionally block-averaged over `block` samples) is cut into
//! embeddings of the last `EMB` points. The squared distance from the current
//! embedding to the nearest of `BANK` stored past embeddings (one stored every
//! `stride` points, each stored only once it no longer overlaps the current
//! one) is divided by a slow EWMA of that distance: `raw = ln(1 + d / mean)`.

use super::{dec_blob, enc_blob, expect_array};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

/// Embedding length.
pub const EMB: usize = 8;
/// Stored past embeddings (8 KiB of f32).
pub const BANK: usize = 256;
const H: usize = 2 * EMB;

#[derive(Clone, Debug, PartialEq)]
/// Nearest-neighbour pattern memory at one time scale: a bank of past embeddings of block means.
pub struct Nn {
    block: u32,
    stride: u32,
    hist: [f32; H],
    hpos: u32,
    /// Stored embeddings, column-major (`bank[j][i]` = point j of entry i)
    /// so that the distance scan vectorises over entries.
    bank: [[f32; BANK]; EMB],
    bank_len: u32,
    bank_head: u32,
    block_cnt: u32,
    block_sum: f64,
    points: u64,
    mean: f64,
    count: u64,
    last_raw: f64,
}

impl Nn {
    /// An empty memory over blocks of `block` samples, storing one embedding every `stride` blocks.
    pub fn new(block: u32, stride: u32) -> Self {
        Nn {
            block: block.max(1),
            stride: stride.max(1),
            hist: [0.0; H],
            hpos: 0,
            bank: [[0.0; BANK]; EMB],
            bank_len: 0,
            bank_head: 0,
            block_cnt: 0,
            block_sum: 0.0,
            points: 0,
            mean: 0.0,
            count: 0,
            last_raw: 0.0,
        }
    }

    /// Feed one sample. Returns the surprise of the latest completed point
    /// (held between block boundaries). `active`: update the distance
    /// normaliser; `floor`: additive floor of the normaliser.
    #[inline]
    pub fn feed(&mut self, x: f64, active: bool, alpha: f64, floor: f64) -> f64 {
        self.block_sum += x;
        self.block_cnt += 1;
        if self.block_cnt < self.block {
            return self.last_raw;
        }
        let p = self.block_sum / self.block_cnt as f64;
        self.block_sum = 0.0;
        self.block_cnt = 0;
        self.points = self.points.saturating_add(1);
        self.hist[self.hpos as usize] = p as f32;
        self.hpos = ((self.hpos as usize + 1) % H) as u32;
        let base = self.hpos as usize; // oldest point
        let mut cur = [0.0f32; EMB];
        let mut old = [0.0f32; EMB];
        for j in 0..EMB {
            old[j] = self.hist[(base + j) % H];
            cur[j] = self.hist[(base + EMB + j) % H];
        }
        let nb = self.bank_len as usize;
        if nb > 0 && active {
            let mut acc = [0.0f32; BANK];
            for (row, &c) in self.bank.iter().zip(cur.iter()) {
                for (a, &b) in acc[..nb].iter_mut().zip(row[..nb].iter()) {
                    let t = b - c;
                    *a += t * t;
                }
            }
            let mut best = f32::INFINITY;
            for &a in &acc[..nb] {
                best = best.min(a);
            }
            let d = best as f64;
            if self.count == 0 {
                self.mean = d;
            }
            self.count = self.count.saturating_add(1);
            self.last_raw = libm::log1p(d / (self.mean + floor + 1e-300));
            self.mean += alpha * (d - self.mean);
        }
        if self.points >= H as u64 && self.points.is_multiple_of(self.stride as u64) {
            let h = self.bank_head as usize;
            for (row, &o) in self.bank.iter_mut().zip(old.iter()) {
                row[h] = o;
            }
            self.bank_head = ((self.bank_head as usize + 1) % BANK) as u32;
            if (self.bank_len as usize) < BANK {
                self.bank_len += 1;
            }
        }
        self.last_raw
    }

    /// Writes the memory as CBOR.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(6)?;
        enc_blob(
            e,
            &[
                self.block,
                self.stride,
                self.hpos,
                self.bank_len,
                self.bank_head,
                self.block_cnt,
            ],
        )?;
        e.array(2)?.u64(self.points)?.u64(self.count)?;
        enc_blob(e, &[self.block_sum, self.mean, self.last_raw])?;
        enc_blob(e, &self.hist)?;
        enc_blob(e, self.bank.as_flattened())?;
        e.null()?;
        Ok(())
    }

    /// Reads a memory written by [`Nn::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 6)?;
        let mut u = [0u32; 6];
        dec_blob(d, &mut u)?;
        let mut k = Nn::new(u[0], u[1]);
        if k.block != u[0] || k.stride != u[1] {
            return Err(DecError::message("nn parameters out of range"));
        }
        [_, _, k.hpos, k.bank_len, k.bank_head, k.block_cnt] = u;
        if k.hpos as usize >= H
            || k.bank_len as usize > BANK
            || k.bank_head as usize >= BANK
            || k.block_cnt >= k.block
        {
            return Err(DecError::message("nn indices out of range"));
        }
        expect_array(d, 2)?;
        k.points = d.u64()?;
        k.count = d.u64()?;
        let mut f = [0.0; 3];
        dec_blob(d, &mut f)?;
        [k.block_sum, k.mean, k.last_raw] = f;
        dec_blob(d, &mut k.hist)?;
        dec_blob(d, k.bank.as_flattened_mut())?;
        let finite = f.iter().all(|v| v.is_finite())
            && k.hist.iter().all(|v| v.is_finite())
            && k.bank.as_flattened().iter().all(|v| v.is_finite());
        if !finite {
            return Err(DecError::message("nn state holds a non-finite value"));
        }
        d.null()?;
        Ok(k)
    }
}
