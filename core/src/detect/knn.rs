//! Nearest-neighbour pattern expert used by [`super::Kestrel`].
//!
//! The series (optionally block-averaged over `block` samples) is cut into
//! embeddings of the last `EMB` points. The squared distance from the current
//! embedding to the nearest of at most `BANK` stored past embeddings (one
//! stored every `stride` points, each stored only once it no longer overlaps
//! the current one) is divided by a slow EWMA of that distance:
//! `raw = ln(1 + d / mean)`.
//!
//! # Memory
//!
//! Stored embeddings are windows of one series, so they overlap: 256
//! embeddings of 8 points taken every 2nd point span only 526 points. [`Nn`]
//! keeps those points once, in `P` `f32`, instead of 256 × 8 copies (8 KiB
//! per scale). The buffer is split into `stride` phases of `L = P / stride`
//! slots; point `p` (1-based) lives in phase `p % stride` at slot
//! `p / stride − off`, so point `i` of consecutive embeddings is contiguous
//! in one phase and the distance scan is one vectorised pass per point of
//! the embedding. When phase 0 reaches the end, every phase drops its oldest
//! [`SPARE`] points (`off += SPARE`, one `memmove` per `SPARE` points), so at
//! least `L − SPARE` points per phase are always kept. The bank holds
//! `min(BANK, L − SPARE − 1 − ⌊15 / stride⌋)` embeddings: all 256 with
//! [`POINTS_STRIDE1`] at stride 1 and [`POINTS_STRIDE2`] at strides 1 and 2.
//! Distances are summed in the same order as over a copied bank, so scores
//! are bit for bit those of the 8 KiB-per-scale layout (state format 1).

use super::{dec_blob, enc_blob, expect_array};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

/// Embedding length.
pub const EMB: usize = 8;
/// Most stored past embeddings.
pub const BANK: usize = 256;
/// Points a phase drops at once when it is full.
pub const SPARE: usize = 32;
/// Capacity (points) that keeps all `BANK` embeddings at stride 1.
pub const POINTS_STRIDE1: usize = BANK + 2 * EMB + SPARE;
/// Capacity (points) that keeps all `BANK` embeddings at strides 1 and 2.
pub const POINTS_STRIDE2: usize = 2 * (BANK + EMB + SPARE);
const H: u64 = 2 * EMB as u64;

#[derive(Clone, Debug, PartialEq)]
/// Nearest-neighbour pattern memory at one time scale over a buffer of `P`
/// block means (see the module docs for the layout).
pub struct Nn<const P: usize> {
    block: u32,
    stride: u32,
    /// Slots per phase: `P / stride`.
    slots: u32,
    /// Most embeddings the buffer can serve at this stride.
    cap: u32,
    buf: [f32; P],
    /// Points dropped per phase (`p / stride − off` is the slot of `p`);
    /// follows from `points`.
    off: u64,
    /// Phase and slot of the latest point, kept to spare divisions.
    at_phase: u32,
    at_slot: u32,
    /// The latest `EMB` points, oldest first (0 before there were any).
    cur: [f32; EMB],
    bank_len: u32,
    block_cnt: u32,
    block_sum: f64,
    points: u64,
    mean: f64,
    count: u64,
    last_raw: f64,
}

impl<const P: usize> Nn<P> {
    const P_OK: () = assert!(P >= 2 * EMB + SPARE + 2 && P <= u32::MAX as usize);

    /// Bytes of state (the points and their counters), `size_of::<Self>()`.
    pub const STATE_BYTES: usize = core::mem::size_of::<Self>();

    /// An empty memory over blocks of `block` samples, storing one embedding
    /// every `stride` blocks (`stride` is clamped to `1..=P/(SPARE + 2)`).
    pub fn new(block: u32, stride: u32) -> Self {
        let () = Self::P_OK;
        let stride = stride.clamp(1, (P / (SPARE + 2)) as u32);
        let slots = P as u32 / stride;
        let cap = (slots - SPARE as u32 - 1)
            .saturating_sub(15 / stride)
            .min(BANK as u32);
        Nn {
            block: block.max(1),
            stride,
            slots,
            cap,
            buf: [0.0; P],
            off: 0,
            at_phase: 0,
            at_slot: 0,
            cur: [0.0; EMB],
            bank_len: 0,
            block_cnt: 0,
            block_sum: 0.0,
            points: 0,
            mean: 0.0,
            count: 0,
            last_raw: 0.0,
        }
    }

    /// Most embeddings this memory compares against (256 for the defaults).
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Index of point `p` (1-based), if it is still kept.
    fn idx(&self, p: u64) -> Option<usize> {
        let (s, m) = (u64::from(self.stride), u64::from(self.slots));
        let slot = (p / s).checked_sub(self.off).filter(|&t| t < m)?;
        Some(((p % s) * m + slot) as usize)
    }

    /// `off` after `points` points: phase 0 drops `SPARE` points each time
    /// its slot would reach `slots`, i.e. at `p / stride = slots + i·SPARE`.
    fn off_after(&self, points: u64) -> u64 {
        let t = points / u64::from(self.stride);
        let m = u64::from(self.slots);
        if t < m {
            0
        } else {
            ((t - m) / SPARE as u64 + 1) * SPARE as u64
        }
    }

    /// Embeddings stored after `points` points: one per multiple of `stride`
    /// in `16..=points`.
    fn stored_after(&self, points: u64) -> u64 {
        let s = u64::from(self.stride);
        if points < H {
            0
        } else {
            points / s - (H - 1) / s
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
        let pt = self.block_sum / self.block_cnt as f64;
        self.block_sum = 0.0;
        self.block_cnt = 0;
        self.points = self.points.saturating_add(1);
        let p = self.points;
        let m = self.slots as usize;
        self.at_phase += 1;
        if self.at_phase == self.stride {
            self.at_phase = 0;
            self.at_slot += 1;
            if self.at_slot == self.slots {
                // Every phase drops its oldest SPARE points.
                for phase in self.buf[..m * self.stride as usize].chunks_exact_mut(m) {
                    phase.copy_within(SPARE.., 0);
                }
                self.at_slot -= SPARE as u32;
                self.off += SPARE as u64;
            }
        }
        let pt = pt as f32;
        self.buf[self.at_phase as usize * m + self.at_slot as usize] = pt;
        self.cur.copy_within(1.., 0);
        self.cur[EMB - 1] = pt;
        let nb = self.bank_len as usize;
        if nb > 0 && active {
            // nb > 0: an embedding was stored at every multiple of the
            // stride in 16..p, so p >= 17 and the newest one is (p − 1) / s.
            let s = self.stride as usize;
            let m_lo = (p - 1) / s as u64 + 1 - nb as u64;
            // Point j of embedding m is point s·m − 15 + j; over
            // m_lo..m_lo+nb these are consecutive slots of one phase.
            let first = s as u64 * m_lo - 15;
            let mut phase = (first % s as u64) as usize;
            let mut slot = (first / s as u64 - self.off) as usize;
            let mut acc = [0.0f32; BANK];
            for &c in &self.cur {
                let at = phase * m + slot;
                for (a, &b) in acc[..nb].iter_mut().zip(&self.buf[at..at + nb]) {
                    let t = b - c;
                    *a += t * t;
                }
                phase += 1;
                if phase == s {
                    phase = 0;
                    slot += 1;
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
        if p >= H && self.at_phase == 0 && self.bank_len < self.cap {
            self.bank_len += 1;
        }
        self.last_raw
    }

    /// Writes the memory as CBOR (state format 2):
    /// `[u32 LE [block, stride, bank_len, block_cnt], [points, count],
    /// f64 LE [block_sum, mean, last_raw], f32 LE points (P values, the layout of the module docs)]`.
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        e.array(4)?;
        enc_blob(e, &[self.block, self.stride, self.bank_len, self.block_cnt])?;
        e.array(2)?.u64(self.points)?.u64(self.count)?;
        enc_blob(e, &[self.block_sum, self.mean, self.last_raw])?;
        enc_blob(e, &self.buf)
    }

    /// Reads a memory written by [`Nn::encode`].
    ///
    /// # Errors
    /// Malformed or inconsistent input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        expect_array(d, 4)?;
        let mut u = [0u32; 4];
        dec_blob(d, &mut u)?;
        let mut k = Self::decode_params(u[0], u[1], u[3])?;
        k.bank_len = u[2];
        k.decode_counters(d)?;
        dec_blob(d, &mut k.buf)?;
        if !k.buf.iter().all(|v| v.is_finite()) {
            return Err(DecError::message("nn state holds a non-finite value"));
        }
        if k.bank_len > k.cap || u64::from(k.bank_len) > k.stored_after(k.points) {
            return Err(DecError::message("nn bank length out of range"));
        }
        k.derive_cursor();
        Ok(k)
    }

    /// Reads a memory written in state format 1 (a copied bank of 256 × 8
    /// points and a 16-point history) and rebuilds the points from it. Lossless
    /// whenever the buffer serves the old bank's length (the defaults);
    /// otherwise the newest [`capacity`](Self::capacity) embeddings are kept.
    ///
    /// # Errors
    /// Malformed or inconsistent input.
    pub fn decode_v1(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        const OLD_BANK: usize = 256;
        expect_array(d, 6)?;
        let mut u = [0u32; 6];
        dec_blob(d, &mut u)?;
        let [block, stride, hpos, bank_len, bank_head, block_cnt] = u;
        let mut k = Self::decode_params(block, stride, block_cnt)?;
        k.decode_counters(d)?;
        let mut hist = [0.0f32; 2 * EMB];
        dec_blob(d, &mut hist)?;
        let mut bank = [[0.0f32; OLD_BANK]; EMB];
        dec_blob(d, bank.as_flattened_mut())?;
        d.null()?;
        let finite = hist
            .iter()
            .chain(bank.as_flattened())
            .all(|v| v.is_finite());
        if !finite {
            return Err(DecError::message("nn state holds a non-finite value"));
        }
        let p = k.points;
        if u64::from(hpos) != p % H
            || bank_len as usize > OLD_BANK
            || bank_head as usize >= OLD_BANK
            || u64::from(bank_len) > k.stored_after(p)
        {
            return Err(DecError::message("nn indices out of range"));
        }
        // The newest old embedding was stored at the last multiple of the
        // stride <= p; slot bank_head − 1 − j holds the j-th newest.
        let s = u64::from(k.stride);
        let m_hi = p / s;
        k.bank_len = bank_len.min(k.cap);
        k.off = k.off_after(p);
        for j in (0..k.bank_len as usize).rev() {
            let slot = (bank_head as usize + OLD_BANK - 1 - j) % OLD_BANK;
            let first = s * (m_hi - j as u64) - 15;
            for (i, row) in bank.iter().enumerate() {
                if let Some(at) = k.idx(first + i as u64) {
                    k.buf[at] = row[slot];
                }
            }
        }
        // hist[(q − 1) % 16] is point q, for the last 16 points.
        for q in p.saturating_sub(H - 1).max(1)..=p {
            if let Some(at) = k.idx(q) {
                k.buf[at] = hist[((q - 1) % H) as usize];
            }
        }
        k.derive_cursor();
        Ok(k)
    }

    /// Sets `off`, the cursor and `cur`, which follow from `points` and the buffer.
    fn derive_cursor(&mut self) {
        let s = u64::from(self.stride);
        let p = self.points;
        self.off = self.off_after(p);
        self.at_phase = (p % s) as u32;
        self.at_slot = (p / s - self.off) as u32;
        for j in 0..EMB {
            // Point p − 7 + j, or 0 before the first point.
            let q = (p + j as u64)
                .checked_sub(EMB as u64 - 1)
                .filter(|&q| q >= 1);
            self.cur[j] = q.and_then(|q| self.idx(q)).map_or(0.0, |i| self.buf[i]);
        }
    }

    fn decode_params(block: u32, stride: u32, block_cnt: u32) -> Result<Self, DecError> {
        let k = Self::new(block, stride);
        if k.block != block || k.stride != stride {
            return Err(DecError::message("nn parameters out of range"));
        }
        if block_cnt >= k.block {
            return Err(DecError::message("nn indices out of range"));
        }
        Ok(Nn { block_cnt, ..k })
    }

    fn decode_counters(&mut self, d: &mut Decoder<'_>) -> Result<(), DecError> {
        expect_array(d, 2)?;
        self.points = d.u64()?;
        // 2^62 points is beyond any gateway's life; the bound keeps the
        // index arithmetic of `feed` far from overflow.
        if self.points > 1 << 62 {
            return Err(DecError::message("nn point count out of range"));
        }
        self.count = d.u64()?;
        let mut f = [0.0f64; 3];
        dec_blob(d, &mut f)?;
        if !f.iter().all(|v| v.is_finite()) {
            return Err(DecError::message("nn state holds a non-finite value"));
        }
        [self.block_sum, self.mean, self.last_raw] = f;
        Ok(())
    }
}
