//! (4) Kestrel: the default detector.
//!
//! A streaming, heap-free detector (about 5.6 KiB of state, [`Kestrel::STATE_BYTES`]) in four stages:
//!
//! 1. **Multi-scale pattern surprise** (in the spirit of KNN-CAD / ARTime,
//!    see [`super::knn`]): at three time scales — raw samples, means of
//!    `block2` samples and means of `block3` samples — the last 8 points form
//!    an embedding whose squared distance to the nearest of 256 stored past
//!    embeddings is divided by a slow EWMA of that distance;
//!    `raw = sum_k w_k ln(1 + ratio_k)` (weights 1, `w2`, `w3`).
//! 2. **Anomaly likelihood** (after Numenta's HTM post-processing): the short
//!    moving average of `raw` is compared with the long-run distribution of
//!    that average (exponentially weighted mean / variance); the upper
//!    gaussian tail `p` of the z-value gives the surprise `L = -log10 p` and
//!    the score `L / (L + 10)` (non-saturating; p = 1e-4 maps to 0.2857).
//! 3. **Hard rules** that score near 1 (`L = 100 x` the distance from the
//!    range centre in half-ranges, 0.909 just outside): a value outside the range seen so far
//!    (widened by `spatial_tol` of its width; as in NAB's HTM detector), the
//!    EWMA-smoothed series leaving its own seen range while the likelihood z
//!    is at least `smooth_z` (level shifts inside the raw range), and a stuck
//!    sensor (a run of identical values at least
//!    `flat_min` long and twice the longest run completed before).
//! 4. **Peak suppression**: after a reported peak (likelihood z >=
//!    `mask_floor`, or a hard rule), for `rest` samples a peak must exceed
//!    `rise` times the held z to be reported (others read 0); after that, a
//!    new report also needs the likelihood to have dropped below
//!    `mask_floor` in between (re-arming). One event gives one spike instead
//!    of a plateau.
//!
//! 5. **Calibration** (only with `calibrated`, [`KESTREL_CALIBRATED`],
//!    issue 15): the reported surprise is re-judged by peaks-over-threshold
//!    tails of the key's own past ([`super::calib::PotTail`]) of the
//!    likelihood z and of the value's and smoothed value's distance from a
//!    slow baseline: common surprises are demoted to their calibrated value,
//!    rare ones kept, and a calibrated extreme value or level (p < 1e-5)
//!    raises on its own, once per excursion. The shipped threshold then
//!    reads as a tail probability of 1e-5 per sample.
//!
//! Nothing is scored before `learn` samples. Detectors are sample-indexed;
//! timestamps are only checked (see `Clock`), never used in arithmetic.

use super::calib::{PotTail, Stages};
use super::knn::{Nn, POINTS_STRIDE1, POINTS_STRIDE2};
use super::{clamp01, norm_neglog10_sf, surprise_to_unit, Clock};
use super::{dec_blob, enc_blob, expect_array};
use minicbor::decode::Error as DecError;
use minicbor::encode::{Error as EncError, Write};
use minicbor::{Decoder, Encoder};

/// Longest short-term averaging window.
pub const SHORT_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
/// Parameters of [`Kestrel`]; [`KESTREL_DEFAULT`] is the shipped, global configuration.
pub struct KestrelConfig {
    /// Samples observed (range, memory) before anything is scored.
    pub learn: u32,
    /// Store one embedding every `stride` samples (memory = BANK * stride).
    pub stride: u32,
    /// Block length of the second (coarse) nearest-neighbour expert.
    pub block2: u32,
    /// Store one coarse embedding every `stride2` blocks.
    pub stride2: u32,
    /// Weight of the coarse expert (0: off).
    pub w2: f64,
    /// Block length of the third (coarsest) expert.
    pub block3: u32,
    /// Weight of the third expert (0: off).
    pub w3: f64,
    /// Rate of the EWMA that normalises the nearest-neighbour distance.
    pub nn_alpha: f64,
    /// Relative floor of the distance normaliser (fraction of the range).
    pub nn_floor: f64,
    /// Short moving-average length of the raw surprise (1..=SHORT_MAX).
    pub short: u32,
    /// Rate of the long-run mean/variance of the averaged surprise.
    pub long_alpha: f64,
    /// Samples of likelihood statistics needed before scoring.
    pub like_warmup: u32,
    /// Floor of the long-run standard deviation.
    pub min_sigma: f64,
    /// Spatial rule tolerance as a fraction of the seen range (<0: off).
    pub spatial_tol: f64,
    /// Rate of the EWMA-smoothed series used by the second spatial rule.
    pub smooth_alpha: f64,
    /// Tolerance of the smoothed spatial rule (<0: off).
    pub smooth_tol: f64,
    /// The smoothed spatial rule fires only while the likelihood z >= this.
    pub smooth_z: f64,
    /// Stuck-sensor rule: a run of identical values at least this long and at
    /// least twice the longest run completed so far scores 1 (0: off).
    pub flat_min: u32,
    /// Suppression window after a reported peak (samples).
    pub rest: u32,
    /// Inside the window a likelihood z must exceed `rise` times the held peak.
    pub rise: f64,
    /// Likelihood z-values at or above this start a suppression window.
    pub mask_floor: f64,
    /// Shipped alert threshold: likelihood tail p = 1e-4, i.e.
    /// L = 4, score = 4 / 14 (calibrated: p = 1e-5, 5 / 15).
    pub threshold: f64,
    /// Calibrated alarms (issue 15, [`KESTREL_CALIBRATED`]): every reported
    /// surprise is re-judged against peaks-over-threshold tails of the key's
    /// own past (see [`super::calib`]), and a calibrated extreme value or
    /// level of the value raises on its own.
    pub calibrated: bool,
    /// Banded alarms (issue 15, [`KESTREL_BANDED`], needs `calibrated`):
    /// Kestrel's own score ranks every sample below the threshold, and only
    /// a calibrated-rare event that Kestrel agrees with reaches it (see
    /// [`Stages::band`]).
    pub banded: bool,
}

/// Suppression value of a hard-rule event, above any likelihood z.
const HARD: f64 = 1e12;
/// Surprise `L` per half-range of distance of a hard-rule event (score
/// `L / (L + 10)`: 0.909 just outside the range, 0.99 ten half-ranges out).
const HARD_SURPRISE: f64 = 100.0;

/// Calibrated surprise at the calibrated shipped threshold (tail p = 1e-5).
const CAL_L: f64 = 5.0;
/// Values of a calibrated surprise at or above this are not learned.
const LEARN_L: f64 = 4.0;
/// Rate of the slow baseline of the value.
const BASE_ALPHA: f64 = 0.001;

/// Shipped threshold: the score of a likelihood tail probability of 1e-4.
pub const KESTREL_THRESHOLD: f64 = 4.0 / 14.0;

/// The shipped default configuration.
pub const KESTREL_DEFAULT: KestrelConfig = KestrelConfig {
    learn: 150,
    stride: 2,
    block2: 8,
    stride2: 1,
    w2: 3.0,
    block3: 32,
    w3: 2.0,
    nn_alpha: 0.001,
    nn_floor: 1e-4,
    short: 8,
    long_alpha: 0.0005,
    like_warmup: 100,
    min_sigma: 0.02,
    spatial_tol: 0.05,
    smooth_alpha: 0.1,
    smooth_tol: 0.0,
    smooth_z: 1.0,
    flat_min: 16,
    rest: 40,
    rise: 1.5,
    mask_floor: 1.0,
    threshold: KESTREL_THRESHOLD,
    calibrated: false,
    banded: false,
};

/// Shipped threshold of calibrated Kestrel: tail probability 1e-5 per sample.
pub const KESTREL_CAL_THRESHOLD: f64 = 5.0 / 15.0;

/// Kestrel with calibrated alarms (`kind = "kestrel_calibrated"`): the
/// shipped threshold is a tail probability of 1e-5 per sample under the
/// key's own past.
pub const KESTREL_CALIBRATED: KestrelConfig = KestrelConfig {
    threshold: KESTREL_CAL_THRESHOLD,
    calibrated: true,
    ..KESTREL_DEFAULT
};

/// Banded Kestrel (`kind = "kestrel_banded"`, issue 15): Kestrel's ranking
/// below the shipped threshold (`threshold x` Kestrel's score), calibrated
/// alarms at and above it (tail probability 1e-5 per sample under the key's
/// past, from calibrated Kestrel and two change stages, see [`Stages`]).
pub const KESTREL_BANDED: KestrelConfig = KestrelConfig {
    threshold: KESTREL_CAL_THRESHOLD,
    calibrated: true,
    banded: true,
    ..KESTREL_DEFAULT
};

impl Default for KestrelConfig {
    fn default() -> Self {
        KESTREL_DEFAULT
    }
}

#[derive(Clone, Debug, PartialEq)]
/// The default detector: multi-scale pattern surprise, anomaly likelihood, hard rules and peak suppression (see the module docs).
pub struct Kestrel {
    /// Its parameters.
    pub cfg: KestrelConfig,
    pub(crate) clock: Clock,
    n: u64,
    vmin: f64,
    vmax: f64,
    sm: f64,
    smin: f64,
    smax: f64,
    last_x: f64,
    run: u64,
    longest_run: u64,
    run_flagged: bool,
    // nearest-neighbour expert
    nn1: Nn<POINTS_STRIDE2>,
    nn2: Nn<POINTS_STRIDE1>,
    nn3: Nn<POINTS_STRIDE1>,
    // likelihood
    short_buf: [f64; SHORT_MAX],
    short_sum: f64,
    short_len: u32,
    short_head: u32,
    lmean: f64,
    lvar: f64,
    lcount: u64,
    // suppression
    hold_val: f64,
    hold_until: u64,
    armed: bool,
    /// Diagnostics: last [surprise at scale 1, 2, 3, spatial/stuck flag].
    parts: [f64; 4],
    /// Calibration (issue 15): tails of the likelihood z, of the value's
    /// distance from its range centre and of the smoothed series' distance.
    tails: [PotTail; 3],
    /// Slow baseline of the value (mean, variance) for the extremity tails.
    base: [f64; 2],
    /// An extremity excursion is being reported (until it re-arms).
    ext_on: bool,
    /// Change stages and banding (only with `banded`).
    stages: Stages,
}

// The memory target per key of issue 15 (it was 25,552 B with copied banks).
const _: () = assert!(Kestrel::STATE_BYTES <= 8 * 1024);

impl Kestrel {
    /// Bytes of state per key, `size_of::<Kestrel>()`: three pattern memories
    /// (592, 304 and 304 `f32` of points, see [`super::knn`]) and the rest.
    pub const STATE_BYTES: usize = core::mem::size_of::<Self>();

    /// A fresh detector.
    pub fn new(cfg: &KestrelConfig) -> Self {
        let mut cfg = *cfg;
        cfg.short = cfg.short.clamp(1, SHORT_MAX as u32);
        cfg.stride = cfg.stride.max(1);
        cfg.learn = cfg.learn.max(2);
        Kestrel {
            cfg,
            clock: Clock::default(),
            n: 0,
            vmin: 0.0,
            vmax: 0.0,
            sm: 0.0,
            smin: 0.0,
            smax: 0.0,
            last_x: 0.0,
            run: 0,
            longest_run: 0,
            run_flagged: false,
            nn1: Nn::new(1, cfg.stride),
            nn2: Nn::new(cfg.block2, cfg.stride2),
            nn3: Nn::new(cfg.block3, 1),
            short_buf: [0.0; SHORT_MAX],
            short_sum: 0.0,
            short_len: 0,
            short_head: 0,
            lmean: 0.0,
            lvar: 0.0,
            lcount: 0,
            hold_val: 0.0,
            hold_until: 0,
            armed: true,
            parts: [0.0; 4],
            tails: [PotTail::new(); 3],
            base: [0.0; 2],
            ext_on: false,
            stages: Stages::default(),
        }
    }

    /// Diagnostics: the pattern surprise at the three time scales and the
    /// spatial/stuck-sensor flag of the last sample.
    pub fn parts(&self) -> [f64; 4] {
        self.parts
    }

    /// Feeds one finite value; returns its score on the shared scale (0 while learning).
    pub fn update(&mut self, ts: i64, x: f64) -> f64 {
        let (plain, cal) = self.score(ts, x);
        let c = &self.cfg;
        if !c.calibrated {
            return plain;
        }
        if !c.banded {
            return cal;
        }
        let l = self.stages.update(x);
        let u = clamp01(cal).max(surprise_to_unit(l));
        // Kestrel agrees: it raised (its own threshold), or its likelihood
        // z is at least its suppression floor now
        let elevated = surprise_to_unit(norm_neglog10_sf(c.mask_floor));
        self.stages
            .band(clamp01(plain), u, c.threshold, KESTREL_THRESHOLD, elevated)
    }

    /// Kestrel's plain score and (with `calibrated`) its calibrated one.
    fn score(&mut self, ts: i64, x: f64) -> (f64, f64) {
        self.clock.tick(ts);
        self.n = self.n.saturating_add(1);
        let c = self.cfg;
        if self.n == 1 {
            self.vmin = x;
            self.vmax = x;
            self.sm = x;
            self.smin = x;
            self.smax = x;
        }
        // spatial rule against the range seen before this sample
        let range = self.vmax - self.vmin;
        let tol = c.spatial_tol * range;
        let spatial = c.spatial_tol >= 0.0
            && range > 0.0
            && self.n > c.learn as u64
            && (x > self.vmax + tol || x < self.vmin - tol);
        // how far out: distance from the range's centre in half-ranges
        let dist = if spatial {
            libm::fabs(x - 0.5 * (self.vmax + self.vmin)) / (0.5 * range)
        } else {
            1.0
        };
        if x < self.vmin {
            self.vmin = x;
        }
        if x > self.vmax {
            self.vmax = x;
        }
        // the same rule on the EWMA-smoothed series (level shifts in range)
        self.sm += c.smooth_alpha * (x - self.sm);
        let srange = self.smax - self.smin;
        let stol = c.smooth_tol * srange;
        // extremity of the value and of the smoothed series against a slow
        // baseline, in its standard deviations (tails 1 and 2)
        let bsd = libm::sqrt(self.base[1]);
        let (ext, sext) = if bsd > 0.0 {
            (
                libm::fabs(x - self.base[0]) / bsd,
                libm::fabs(self.sm - self.base[0]) / bsd,
            )
        } else {
            (0.0, 0.0)
        };
        let ba = (1.0 / self.n as f64).max(BASE_ALPHA);
        let bd = x - self.base[0];
        self.base[0] += ba * bd;
        self.base[1] = (1.0 - ba) * (self.base[1] + ba * bd * bd);
        let sp_smooth = c.smooth_tol >= 0.0
            && srange > 0.0
            && self.n > c.learn as u64
            && (self.sm > self.smax + stol || self.sm < self.smin - stol);
        if self.sm < self.smin {
            self.smin = self.sm;
        }
        if self.sm > self.smax {
            self.smax = self.sm;
        }
        // stuck sensor: an unusually long run of identical values
        if self.n > 1 && x == self.last_x {
            self.run = self.run.saturating_add(1);
        } else {
            self.longest_run = self.longest_run.max(self.run);
            self.run = 1;
            self.run_flagged = false;
        }
        self.last_x = x;
        let stuck = c.flat_min > 0
            && !self.run_flagged
            && self.n > c.learn as u64
            && self.run >= (c.flat_min as u64).max(self.longest_run.saturating_mul(2));
        if stuck {
            self.run_flagged = true;
        }

        // pattern surprise at three time scales (1, block2, block3 samples)
        let active = self.n.saturating_add(20) >= c.learn as u64;
        let r = self.vmax - self.vmin;
        let floor = (c.nn_floor * r) * (c.nn_floor * r) * 8.0;
        let r1 = self.nn1.feed(x, active, c.nn_alpha, floor);
        let r2 = if c.w2 > 0.0 {
            self.nn2.feed(x, active, c.nn_alpha, floor)
        } else {
            0.0
        };
        let r3 = if c.w3 > 0.0 {
            self.nn3.feed(x, active, c.nn_alpha, floor)
        } else {
            0.0
        };
        let raw = r1 + c.w2 * r2 + c.w3 * r3;
        self.parts[0] = r1;
        self.parts[1] = r2;
        self.parts[2] = r3;
        self.parts[3] = 0.0;
        if self.n <= c.learn as u64 {
            return (0.0, 0.0);
        }

        // short moving average
        let cap = c.short as usize;
        if (self.short_len as usize) == cap {
            self.short_sum -= self.short_buf[self.short_head as usize];
        } else {
            self.short_len += 1;
        }
        self.short_buf[self.short_head as usize] = raw;
        self.short_head = ((self.short_head as usize + 1) % cap) as u32;
        self.short_sum += raw;
        let m = self.short_sum / self.short_len as f64;

        // anomaly likelihood against the long-run distribution of m
        let mut z = 0.0;
        if self.lcount >= c.like_warmup as u64 {
            let sd = libm::sqrt(self.lvar).max(c.min_sigma);
            z = (m - self.lmean) / sd;
        }
        self.lcount = self.lcount.saturating_add(1);
        let la = (1.0 / self.lcount as f64).max(c.long_alpha);
        let dm = m - self.lmean;
        self.lmean += la * dm;
        self.lvar = (1.0 - la) * (self.lvar + la * dm * dm);

        // peak suppression, in likelihood z units (hard rules = HARD + distance):
        // inside the window only an escalation (> rise x held peak) passes;
        // after it, a new report also needs the likelihood to have fallen
        // below `mask_floor` since the last report (re-armed), so a long
        // plateau is reported once, not once per window.
        // hard rules; the smoothed-range rule needs a mildly elevated
        // likelihood too (its bare records are mostly noise)
        let smooth = sp_smooth && z >= c.smooth_z;
        self.parts[3] = if spatial {
            1.0
        } else if smooth {
            2.0
        } else if stuck {
            4.0
        } else {
            0.0
        };
        let spatial = spatial || stuck || smooth;
        // hard rules hold HARD + their distance (1 for the stuck and smoothed
        // rules): inside the window a hard event passes when it is `rise`
        // times farther out than the held one (an old snapshot's infinite
        // hold never passes, as before)
        let s = if spatial { HARD + dist } else { z.max(0.0) };
        // calibrated surprises, each judged against its own past
        let (l_like, [l_dist, l_smooth], ext_score) = if c.calibrated {
            self.calibrate(z, ext, sext)
        } else {
            (0.0, [0.0; 2], 0.0)
        };
        if s < c.mask_floor {
            self.armed = true;
        }
        let in_window = self.n < self.hold_until;
        let escalates = if s >= HARD && self.hold_val >= HARD {
            s - HARD > (self.hold_val - HARD) * c.rise
        } else {
            s > self.hold_val * c.rise
        };
        if escalates || (!in_window && self.armed) {
            if s >= c.mask_floor {
                self.hold_val = s;
                self.hold_until = self.n.saturating_add(c.rest as u64);
                self.armed = false;
            } else {
                self.hold_val = 0.0;
            }
            // a tail probability under the key's own past (see `calib`)
            let raw = match self.parts[3] as u32 {
                0 => norm_neglog10_sf(s),
                4 => HARD_SURPRISE,
                // graded just below 1 by distance (L = 100 x dist), so a far
                // stronger event can break an alert gate's cool-down
                _ => HARD_SURPRISE * dist,
            };
            let plain = surprise_to_unit(raw);
            if !c.calibrated {
                return (plain, 0.0);
            }
            // a surprise the key's past makes common is demoted to its
            // calibrated value; a rare one keeps the larger of the two
            let cal = match self.parts[3] as u32 {
                0 => l_like,
                4 => HARD_SURPRISE,
                1 => l_like.max(l_dist),
                _ => l_like.max(l_smooth),
            };
            let l = if cal >= CAL_L {
                raw.max(cal)
            } else {
                raw.min(cal)
            };
            (plain, surprise_to_unit(l).max(ext_score))
        } else {
            (0.0, ext_score)
        }
    }

    /// Calibration (issue 15): the surprises of the likelihood `z`, of the
    /// value's extremity `ext` and of the smoothed series' `sext` under the
    /// key's own past tails, then learns them; returns those surprises
    /// (`-log10 p`) and the score of a calibrated extreme excursion
    /// (reported once per excursion, 0 otherwise).
    fn calibrate(&mut self, z: f64, ext: f64, sext: f64) -> (f64, [f64; 2], f64) {
        let like_ready = self.lcount > self.cfg.like_warmup as u64;
        let l_like = self.tails[0].surprise(z.max(0.0));
        let l_dist = self.tails[1].surprise(ext);
        let l_smooth = self.tails[2].surprise(sext);
        // values already improbable (p < 1e-4) are not learned: a
        // developing fault must not widen the tail it is judged against
        if like_ready && l_like < LEARN_L {
            self.tails[0].learn(z.max(0.0));
        }
        if l_dist < LEARN_L {
            self.tails[1].learn(ext);
        }
        if l_smooth < LEARN_L {
            self.tails[2].learn(sext);
        }
        // a calibrated extreme value or level raises on its own, once per
        // excursion (re-armed below CAL_L - 1)
        let l_ext = l_dist.max(l_smooth);
        let ext_score = if l_ext >= CAL_L && !self.ext_on {
            self.ext_on = true;
            surprise_to_unit(l_ext)
        } else {
            if l_ext < CAL_L - 1.0 {
                self.ext_on = false;
            }
            0.0
        };
        (l_like, [l_dist, l_smooth], ext_score)
    }

    /// Writes the state (configuration included) as CBOR (about 5.5 KB).
    pub fn encode<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), EncError<W::Error>> {
        let c = &self.cfg;
        // banded: a 13th item, the change stages (older builds refuse it)
        e.array(if c.banded { 13 } else { 12 })?;
        enc_blob(
            e,
            &[
                c.nn_alpha,
                c.nn_floor,
                c.w2,
                c.w3,
                c.long_alpha,
                c.min_sigma,
                c.spatial_tol,
                c.smooth_alpha,
                c.smooth_tol,
                c.smooth_z,
                c.rise,
                c.mask_floor,
                c.threshold,
            ],
        )?;
        enc_blob(
            e,
            &[
                c.learn,
                c.stride,
                c.block2,
                c.stride2,
                c.block3,
                c.flat_min,
                c.short,
                c.like_warmup,
                c.rest,
            ],
        )?;
        self.clock.encode(e)?;
        enc_blob(e, &[self.short_len, self.short_head])?;
        e.array(7)?
            .u64(self.run)?
            .u64(self.longest_run)?
            .bool(self.run_flagged)?
            .bool(self.armed)?
            .u64(self.n)?
            .u64(self.lcount)?
            .u64(self.hold_until)?;
        enc_blob(
            e,
            &[
                self.vmin,
                self.vmax,
                self.sm,
                self.smin,
                self.smax,
                self.last_x,
                self.short_sum,
                self.lmean,
                self.lvar,
                self.hold_val,
            ],
        )?;
        enc_blob(e, &self.parts)?;
        enc_blob(e, &self.short_buf)?;
        self.nn1.encode(e)?;
        self.nn2.encode(e)?;
        self.nn3.encode(e)?;
        // version 3: calibration
        e.array(4)?.bool(c.calibrated)?.bool(self.ext_on)?;
        enc_blob(e, &self.base)?;
        e.array(3)?;
        for t in &self.tails {
            t.encode(e)?;
        }
        if c.banded {
            self.stages.encode(e)?;
        }
        Ok(())
    }

    /// Reads state written by [`Kestrel::encode`].
    ///
    /// # Errors
    /// Malformed input.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecError> {
        Self::decode_version(d, super::SNAPSHOT_VERSION)
    }

    /// Reads state written in detector snapshot format `version`: 2 (this
    /// build), or 1, whose copied embedding banks are rebuilt into point buffers
    /// (see [`Nn::decode_v1`]).
    ///
    /// # Errors
    /// Malformed input or an unknown version.
    pub fn decode_version(d: &mut Decoder<'_>, version: u32) -> Result<Self, DecError> {
        if !(1..=super::SNAPSHOT_VERSION).contains(&version) {
            return Err(DecError::message("unsupported kestrel state version"));
        }
        // version 3 has 12 items, 13 with banding (the change stages)
        let banded = match d.array()? {
            Some(11) if version < 3 => false,
            Some(12) if version >= 3 => false,
            Some(13) if version >= 3 => true,
            _ => return Err(DecError::message("unexpected array length")),
        };
        let mut f = [0.0; 13];
        dec_blob(d, &mut f)?;
        let mut u = [0u32; 9];
        dec_blob(d, &mut u)?;
        let cfg = KestrelConfig {
            nn_alpha: f[0],
            nn_floor: f[1],
            w2: f[2],
            w3: f[3],
            long_alpha: f[4],
            min_sigma: f[5],
            spatial_tol: f[6],
            smooth_alpha: f[7],
            smooth_tol: f[8],
            smooth_z: f[9],
            rise: f[10],
            mask_floor: f[11],
            threshold: f[12],
            learn: u[0],
            stride: u[1],
            block2: u[2],
            stride2: u[3],
            block3: u[4],
            flat_min: u[5],
            short: u[6],
            like_warmup: u[7],
            rest: u[8],
            calibrated: false,
            banded: false,
        };
        let mut k = Kestrel::new(&cfg);
        if k.cfg != cfg {
            return Err(DecError::message("kestrel config out of range"));
        }
        k.clock = Clock::decode(d)?;
        let mut v = [0u32; 2];
        dec_blob(d, &mut v)?;
        [k.short_len, k.short_head] = v;
        let bad = k.short_len > cfg.short || k.short_head >= cfg.short;
        if bad {
            return Err(DecError::message("kestrel indices out of range"));
        }
        expect_array(d, 7)?;
        k.run = d.u64()?;
        k.longest_run = d.u64()?;
        k.run_flagged = d.bool()?;
        k.armed = d.bool()?;
        k.n = d.u64()?;
        k.lcount = d.u64()?;
        k.hold_until = d.u64()?;
        let mut s = [0.0f64; 10];
        dec_blob(d, &mut s)?;
        if !s.iter().all(|v| v.is_finite()) {
            return Err(DecError::message("kestrel state holds a non-finite value"));
        }
        [
            k.vmin,
            k.vmax,
            k.sm,
            k.smin,
            k.smax,
            k.last_x,
            k.short_sum,
            k.lmean,
            k.lvar,
            k.hold_val,
        ] = s;
        dec_blob(d, &mut k.parts)?;
        dec_blob(d, &mut k.short_buf)?;
        if !k.short_buf.iter().all(|v| v.is_finite()) {
            return Err(DecError::message("kestrel state holds a non-finite value"));
        }
        if version == 1 {
            k.nn1 = Nn::decode_v1(d)?;
            k.nn2 = Nn::decode_v1(d)?;
            k.nn3 = Nn::decode_v1(d)?;
        } else {
            k.nn1 = Nn::decode(d)?;
            k.nn2 = Nn::decode(d)?;
            k.nn3 = Nn::decode(d)?;
        }
        if version >= 3 {
            expect_array(d, 4)?;
            k.cfg.calibrated = d.bool()?;
            k.ext_on = d.bool()?;
            dec_blob(d, &mut k.base)?;
            if !k.base.iter().all(|v| v.is_finite()) || k.base[1] < 0.0 {
                return Err(DecError::message("kestrel state holds a non-finite value"));
            }
            expect_array(d, 3)?;
            for t in &mut k.tails {
                *t = PotTail::decode(d)?;
            }
        }
        if banded {
            if !k.cfg.calibrated {
                return Err(DecError::message(
                    "banded kestrel state without calibration",
                ));
            }
            k.cfg.banded = true;
            k.stages = Stages::decode(d)?;
        }
        Ok(k)
    }
}
