//! The flash write budget (`[storage]` in gateway.toml): a sans-IO
//! controller that lengthens group commits and checkpoint intervals while
//! the store writes faster than the card's daily budget allows, and
//! shortens them again when the rate falls back.
//!
//! Why this works: a durable commit costs ~28 KB of tree pages besides its
//! records (`weir_agent::store`, "Flash wear"), so at a steady input the
//! bytes written per second are roughly `commits/s × 28 KB + readings/s ×
//! ~11 B`, and fewer, larger commits write less. The price is the
//! acknowledgement delay: a QoS 1 message waits for the commit that holds
//! it, so the stretched commit interval is capped at `max_ack_delay`.
//!
//! The rule, once per `window` of the agent's clock:
//! - `rate` = device bytes written in the window / its length, from the
//!   store's counters ([`crate::store::backend::IoCounters`]); everything
//!   the store writes counts (commits, checkpoints, compaction, outbox).
//! - Over the budget (`rate > budget / 86,400 s`): the stretch `s` becomes
//!   `s × rate / (0.8 × budget rate)`, capped so the commit interval stays
//!   within `max_ack_delay`. Writes are mostly per-commit overhead, so that
//!   aims at 80 % of the budget; where they are not (large records), the
//!   next window stretches again.
//! - Below half the budget: `s` shrinks by the same proportion, never
//!   below 1 (the configured intervals). Predicting the new rate as if all
//!   writes were commit overhead over-estimates it, so the step back does
//!   not overshoot the budget. A window without writes (no input) returns
//!   to the configured intervals at once: when input comes back, at most
//!   one window is spent over the budget before the next decision.
//! - In between: no change (the band keeps it from oscillating).
//!
//! With stretch `s`, the group commit interval is `group_commit × s` (at
//! most `max_ack_delay`), the records that close a group early
//! `group_records × s` (at most [`MAX_GROUP_RECORDS`], below the agent's
//! ack-debt pause) and the checkpoint interval `interval × s` (at most an
//! hour, or the configured interval if that is longer: the journal since
//! the last checkpoint is what a restart replays).
//!
//! # A broker that waits for acknowledgements
//!
//! A broker sends a subscriber only so many unacknowledged QoS 1 messages
//! (its in-flight window: mosquitto's `max_inflight_messages`, rumqttd's
//! `max_inflight_count`), then waits for acks. A group held open past that
//! point saves no write, and cuts ingest to `window / commit interval`
//! messages a second (measured with rumqttd: 100 messages per 500 ms
//! group, 50× slower than unbudgeted). So a stretched group also closes
//! once its messages have stopped for 8 mean gaps between them (and at
//! least the configured `group_commit` and 20 ms; the group must hold 8
//! messages or more to tell their gap) — but only while the agent has
//! seen the broker waiting: the first message after a commit came within
//! `max(group_commit, 10 ms)` of it ([`Budget::on_group_opened`]). A
//! plant that publishes in bursts (every sensor on the second) makes that
//! happen by chance now and then and costs one early commit when it does.
//!
//! Call order: [`Budget::new`] with the configured intervals and the
//! store's byte count; [`Budget::handle_written`] with the agent clock and
//! the byte count whenever convenient (the agent's timer: once a second or
//! more often), at least once after [`Budget::poll_timeout`]; then read
//! [`Budget::intervals`]. Nothing here reads a clock.
//!
//! ```
//! use weir_agent::gateway::StorageConfig;
//! use weir_agent::run::budget::{Budget, Intervals};
//!
//! let cfg = StorageConfig { write_budget: Some(86_400_000), window_ms: 10_000, ..Default::default() }; // 1 kB/s
//! let base = Intervals { commit_ms: 50, group_records: 2_000, checkpoint_ms: 60_000 };
//! let mut b = Budget::new(&cfg, base, 0, 0);
//! b.handle_written(10_000, 100_000_000); // 10 MB/s: far over
//! assert_eq!(b.intervals().commit_ms, 5_000); // stretched to max_ack_delay
//! b.handle_written(20_000, 100_000_000); // nothing written since
//! assert_eq!(b.intervals(), base);
//! ```

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::gateway::{GatewayConfig, StorageConfig};
use crate::run::metrics::{Metrics, StorageGauges};
use crate::store::Store;

/// The aim after stretching, as a share of the budget rate.
const TARGET: f64 = 0.8;
/// Below this share of the budget rate the intervals shorten again.
const LOW: f64 = 0.5;
/// Most records a stretched group holds before it closes early: below
/// the agent's pause on its acknowledgement debt (16,384 messages), so
/// the size trigger, not the pause, closes a flooded group.
pub const MAX_GROUP_RECORDS: usize = 12_000;
/// The longest a stretched checkpoint interval gets, ms (unless the
/// configured one is longer).
pub const MAX_CHECKPOINT_MS: u64 = 3_600_000;
const DAY_MS: f64 = 86_400_000.0;
/// A stretched group whose messages stopped for this many mean gaps is
/// closed early while the broker waits for acks (`e^-8`: a steady random
/// input almost never pauses that long).
const QUIET_GAPS: u32 = 8;
/// The shortest "prompt" arrival after a commit that counts as a broker
/// waiting for acks.
const PROMPT_MIN: Duration = Duration::from_millis(10);
/// The quiet rule needs this many messages in the group to estimate their
/// gap (a broker's in-flight window is larger: mosquitto's default is 20).
const QUIET_MIN_MESSAGES: usize = 8;
/// The shortest quiet that closes a group (scheduling and TCP jitter).
const QUIET_MIN: Duration = Duration::from_millis(20);

/// The intervals the agent runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Longest wait before a group commit, ms.
    pub commit_ms: u64,
    /// Records (or messages) that close a group early.
    pub group_records: usize,
    /// Time between checkpoints, ms.
    pub checkpoint_ms: u64,
}

/// The controller. See the [module docs](self) for the rule.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Bytes per ms the budget allows; `None`: no budget.
    allowed: Option<f64>,
    endurance: u64,
    warn_days: u64,
    window_ms: u64,
    max_ack_delay_ms: u64,
    base: Intervals,
    stretch: f64,
    max_stretch: f64,
    start: (i64, u64),
    rate: Option<f64>,
    over: bool,
    decisions: u64,
    /// The first message after the last commit came promptly: the broker
    /// was waiting for our acks.
    flow_limited: bool,
    committed_at: Option<Instant>,
}

impl Budget {
    /// A controller at the configured intervals `base`; `now` is the agent
    /// clock (ms) and `written` the store's device byte count.
    pub fn new(cfg: &StorageConfig, base: Intervals, now: i64, written: u64) -> Budget {
        let unit = base.commit_ms.max(1) as f64;
        Budget {
            allowed: cfg.write_budget.map(|b| b as f64 / DAY_MS),
            endurance: cfg.endurance_bytes,
            warn_days: cfg.warn_days,
            window_ms: cfg.window_ms.max(1),
            max_ack_delay_ms: cfg.max_ack_delay_ms.max(base.commit_ms),
            base,
            stretch: 1.0,
            max_stretch: (cfg.max_ack_delay_ms as f64 / unit).max(1.0),
            start: (now, written),
            rate: None,
            over: false,
            decisions: 0,
            flow_limited: false,
            committed_at: None,
        }
    }

    /// The store has written `written` bytes in all (a counter that only
    /// grows) by agent time `now`. Decides when a window has passed;
    /// returns whether the intervals changed.
    pub fn handle_written(&mut self, now: i64, written: u64) -> bool {
        let (t0, b0) = self.start;
        if now < t0 || written < b0 {
            // A new counter (the store was opened again): start over.
            self.start = (now, written);
            return false;
        }
        let elapsed = (now - t0) as u64;
        if elapsed < self.window_ms {
            return false;
        }
        let rate = (written - b0) as f64 / elapsed as f64;
        self.start = (now, written);
        self.rate = Some(rate);
        self.decisions += 1;
        let before = self.intervals();
        if let Some(allowed) = self.allowed {
            if rate > allowed {
                self.over = self.stretch >= self.max_stretch;
                self.stretch =
                    (self.stretch * rate / (TARGET * allowed)).clamp(1.0, self.max_stretch);
            } else {
                self.over = false;
                if rate < LOW * allowed {
                    self.stretch =
                        (self.stretch * rate / (TARGET * allowed)).clamp(1.0, self.stretch);
                }
            }
        }
        self.intervals() != before
    }

    /// When the current window ends (agent time, ms): call
    /// [`Budget::handle_written`] at or after it.
    pub fn poll_timeout(&self) -> i64 {
        self.start.0.saturating_add(self.window_ms as i64)
    }

    /// The intervals to run with now.
    pub fn intervals(&self) -> Intervals {
        let b = self.base;
        let s = self.stretch;
        if s <= 1.0 {
            return b;
        }
        let commit_ms = ((b.commit_ms.max(1) as f64 * s).round() as u64)
            .clamp(b.commit_ms, self.max_ack_delay_ms);
        let group_records = ((b.group_records as f64 * s).round() as usize)
            .clamp(b.group_records, b.group_records.max(MAX_GROUP_RECORDS));
        let checkpoint_ms = ((b.checkpoint_ms as f64 * s).round() as u64)
            .clamp(b.checkpoint_ms, b.checkpoint_ms.max(MAX_CHECKPOINT_MS));
        Intervals {
            commit_ms,
            group_records,
            checkpoint_ms,
        }
    }

    /// A group was committed at `now` (its acks handed to the client).
    pub fn on_group_committed(&mut self, now: Instant) {
        self.committed_at = Some(now);
    }

    /// The first message of a new group arrived at `now`.
    pub fn on_group_opened(&mut self, now: Instant) {
        if let Some(c) = self.committed_at.take() {
            let prompt = Duration::from_millis(self.base.commit_ms).max(PROMPT_MIN);
            self.flow_limited = now.saturating_duration_since(c) <= prompt;
        }
    }

    /// When a group must be committed: `opened` and `last` are the
    /// arrivals of its first and last message, `n` its messages. The
    /// commit interval after `opened`, or earlier when the broker waits
    /// for acks and the messages have stopped (see the module docs).
    pub fn commit_deadline(&self, opened: Instant, last: Instant, n: usize) -> Instant {
        let iv = self.intervals();
        let full = opened + Duration::from_millis(iv.commit_ms);
        if !self.flow_limited || iv.commit_ms <= self.base.commit_ms || n < QUIET_MIN_MESSAGES {
            return full;
        }
        let gap = last.saturating_duration_since(opened) / (n as u32 - 1);
        let quiet = (gap * QUIET_GAPS)
            .max(Duration::from_millis(self.base.commit_ms))
            .max(QUIET_MIN);
        full.min(last + quiet)
    }

    /// Windows decided so far.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// The factor the intervals are stretched by (1: as configured).
    pub fn stretch(&self) -> f64 {
        self.stretch
    }

    /// Bytes per second written over the last full window (`None` before
    /// the first window has passed).
    pub fn rate(&self) -> Option<f64> {
        self.rate.map(|r| r * 1e3)
    }

    /// Whether the last window was over the budget although the intervals
    /// were already stretched as far as `max_ack_delay` allows: the budget
    /// cannot be met at this input rate.
    pub fn over_budget(&self) -> bool {
        self.over
    }

    /// Days until the card's endurance is used up, at the last window's
    /// rate, given `lifetime` bytes written so far: infinite while nothing
    /// is written, 0 once the endurance is spent, `None` before the first
    /// window.
    pub fn card_life_days(&self, lifetime: u64) -> Option<f64> {
        let rate = self.rate?;
        let left = self.endurance.saturating_sub(lifetime) as f64;
        Some(if left == 0.0 {
            0.0
        } else if rate <= 0.0 {
            f64::INFINITY
        } else {
            left / (rate * DAY_MS)
        })
    }

    /// A warning for `/healthz` when the predicted card life is shorter
    /// than `warn_days`.
    pub fn life_warning(&self, lifetime: u64) -> Option<String> {
        let days = self.card_life_days(lifetime)?;
        if self.warn_days == 0 || days >= self.warn_days as f64 {
            return None;
        }
        let rate = self.rate().unwrap_or(0.0);
        Some(format!(
            "predicted card life {days:.0} days is below warn_days {}: {:.1} MB a day written, {:.3} TB of the card's {:.3} TB endurance used",
            self.warn_days,
            rate * 86_400.0 / 1e6,
            lifetime as f64 / 1e12,
            self.endurance as f64 / 1e12,
        ))
    }
}

/// The agent's controller: its configured intervals, its store's count.
pub fn for_agent(cfg: &GatewayConfig, store: &Store) -> Budget {
    let base = Intervals {
        commit_ms: cfg.group_commit_ms,
        group_records: cfg.group_records,
        checkpoint_ms: cfg.checkpoint_ms,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Budget::new(
        &cfg.storage,
        base,
        now,
        store.io().bytes_written.load(Relaxed),
    )
}

/// Copies the controller's state into the agent's metrics (`lifetime`:
/// [`Store::lifetime_bytes_written`]).
pub fn publish(b: &Budget, lifetime: u64, m: &Metrics) {
    let iv = b.intervals();
    let g = StorageGauges {
        commit_interval_ms: iv.commit_ms,
        checkpoint_interval_ms: iv.checkpoint_ms,
        budget_bytes_per_day: b.allowed.map(|a| (a * DAY_MS).round() as u64),
        rate: b.rate(),
        card_life_days: b.card_life_days(lifetime),
        over_budget: b.over_budget(),
        warning: b.life_warning(lifetime),
    };
    *m.storage.lock().unwrap_or_else(|e| e.into_inner()) = g;
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Intervals = Intervals {
        commit_ms: 50,
        group_records: 2_000,
        checkpoint_ms: 300_000,
    };

    /// A store under a steady input, on virtual time: each commit writes
    /// 28 KB of overhead plus 11 bytes a reading, each checkpoint 200 KB.
    struct Plant {
        now: i64,
        written: u64,
        /// Readings per second.
        per_s: f64,
        pending: f64,
        group_opened: Option<i64>,
        last_ckpt: i64,
        commits: u64,
        max_group_wait: i64,
    }

    impl Plant {
        fn new(per_s: f64) -> Plant {
            Plant {
                now: 0,
                written: 0,
                per_s,
                pending: 0.0,
                group_opened: None,
                last_ckpt: 0,
                commits: 0,
                max_group_wait: 0,
            }
        }

        /// Runs for `ms` in 10 ms steps with the controller's intervals,
        /// telling it the byte count every second.
        fn run(&mut self, b: &mut Budget, ms: i64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 10;
                let iv = b.intervals();
                let before = self.pending;
                self.pending += self.per_s / 100.0;
                if self.pending.floor() > before.floor() && self.group_opened.is_none() {
                    self.group_opened = Some(self.now);
                }
                if let Some(t) = self.group_opened {
                    if self.now - t >= iv.commit_ms as i64
                        || self.pending >= iv.group_records as f64
                    {
                        let n = self.pending.floor();
                        self.written += 28_000 + 11 * n as u64;
                        self.pending -= n;
                        self.commits += 1;
                        self.max_group_wait = self.max_group_wait.max(self.now - t);
                        self.group_opened = None;
                    }
                }
                if self.now - self.last_ckpt >= iv.checkpoint_ms as i64 {
                    self.written += 200_000;
                    self.last_ckpt = self.now;
                }
                if self.now % 1_000 == 0 {
                    b.handle_written(self.now, self.written);
                }
            }
        }

        /// Bytes a day at the rate of the next `ms`.
        fn daily(&mut self, b: &mut Budget, ms: i64) -> f64 {
            let w0 = self.written;
            self.run(b, ms);
            (self.written - w0) as f64 * DAY_MS / ms as f64
        }
    }

    fn cfg(budget: Option<u64>) -> StorageConfig {
        StorageConfig {
            write_budget: budget,
            window_ms: 60_000,
            ..StorageConfig::default()
        }
    }

    #[test]
    fn over_budget_stretches_commits_then_returns_when_the_rate_falls() {
        const GIB: u64 = 1 << 30;
        let mut b = Budget::new(&cfg(Some(2 * GIB)), BASE, 0, 0);
        let mut plant = Plant::new(1_000.0);
        // Unbudgeted, 20 commits a second write ~48 GB a day.
        let free = plant.daily(&mut b, 59_000);
        assert!(free > 40e9, "{free}");
        assert_eq!(
            b.intervals(),
            BASE,
            "no decision before a window has passed"
        );
        plant.run(&mut b, 2_000);
        let iv = b.intervals();
        assert!(iv.commit_ms > BASE.commit_ms, "{iv:?}");
        assert!(iv.commit_ms <= 5_000, "never past max_ack_delay: {iv:?}");
        assert!(iv.checkpoint_ms > BASE.checkpoint_ms && iv.checkpoint_ms <= MAX_CHECKPOINT_MS);
        // A few windows later the card is written within its budget, and
        // no reading waited longer than max_ack_delay for its commit.
        plant.run(&mut b, 5 * 60_000);
        plant.max_group_wait = 0;
        let budgeted = plant.daily(&mut b, 3_600_000);
        assert!(budgeted <= 2.0 * GIB as f64, "{budgeted} > 2 GiB a day");
        assert!(budgeted < free / 10.0, "{budgeted} vs {free}");
        assert!(plant.max_group_wait <= 5_000, "{}", plant.max_group_wait);
        assert!(!b.over_budget());
        // The input falls to a reading every 10 s: at the configured
        // intervals that is ~0.24 GB a day, so they come back.
        plant.per_s = 0.1;
        plant.run(&mut b, 10 * 60_000);
        assert_eq!(b.intervals(), BASE, "stretch {}", b.stretch());
        assert!(plant.daily(&mut b, 3_600_000) < 1.0 * GIB as f64);
        assert_eq!(b.intervals(), BASE);
    }

    #[test]
    fn a_budget_that_cannot_be_met_is_capped_at_max_ack_delay_and_said() {
        // 10 MB a day: even one commit every 5 s writes ~480 MB a day.
        let mut b = Budget::new(&cfg(Some(10_000_000)), BASE, 0, 0);
        let mut plant = Plant::new(1_000.0);
        plant.run(&mut b, 61_000);
        assert_eq!(b.intervals().commit_ms, 5_000, "straight to the cap");
        assert!(!b.over_budget(), "not yet measured at the cap");
        plant.run(&mut b, 60_000);
        let iv = b.intervals();
        assert_eq!(iv.commit_ms, 5_000);
        assert_eq!(iv.group_records, MAX_GROUP_RECORDS);
        assert_eq!(iv.checkpoint_ms, MAX_CHECKPOINT_MS);
        assert!(b.over_budget());
        plant.max_group_wait = 0;
        plant.run(&mut b, 600_000);
        assert!(plant.max_group_wait <= 5_000);
        // Input stops: the next window has no writes but a checkpoint's
        // worth at most, and the intervals return at once.
        plant.per_s = 0.0;
        plant.run(&mut b, 120_000);
        assert_eq!(b.intervals(), BASE);
        assert!(!b.over_budget());
    }

    #[test]
    fn the_band_holds_a_steady_rate_and_no_budget_never_stretches() {
        let mut b = Budget::new(&cfg(Some(86_400_000)), BASE, 0, 0); // 1 kB/s
                                                                     // 0.7 kB/s: inside [0.5, 1] of the budget: nothing changes.
        for i in 1..=10u64 {
            assert!(!b.handle_written(i as i64 * 60_000, i * 42_000));
        }
        assert_eq!((b.intervals(), b.stretch()), (BASE, 1.0));
        let mut free = Budget::new(&cfg(None), BASE, 0, 0);
        let mut plant = Plant::new(1_000.0);
        plant.run(&mut free, 600_000);
        assert_eq!(free.intervals(), BASE);
        assert!(free.rate().unwrap() > 400_000.0);
    }

    #[test]
    fn a_stretched_group_closes_early_only_while_the_broker_waits_for_acks() {
        let ms = Duration::from_millis;
        let mut b = Budget::new(&cfg(Some(86_400_000)), BASE, 0, 0);
        let t = Instant::now();
        // Not stretched: the configured interval.
        assert_eq!(b.commit_deadline(t, t + ms(1), 100), t + ms(50));
        b.handle_written(60_000, 600_000_000);
        assert_eq!(b.intervals().commit_ms, 5_000);
        // 100 messages in 99 ms, then nothing: no sign of a waiting broker
        // yet, so the group waits its full interval.
        assert_eq!(b.commit_deadline(t, t + ms(99), 100), t + ms(5_000));
        // The next group opened 2 ms after a commit: the broker was
        // holding messages back for our acks.
        b.on_group_committed(t + ms(5_000));
        b.on_group_opened(t + ms(5_002));
        let t2 = t + ms(5_002);
        // 8 gaps of 1 ms are less than group_commit: quiet for 50 ms.
        assert_eq!(b.commit_deadline(t2, t2 + ms(99), 100), t2 + ms(149));
        // Gaps of 20 ms: quiet for 160 ms.
        assert_eq!(b.commit_deadline(t2, t2 + ms(200), 11), t2 + ms(360));
        // Never past the interval, and a few messages tell no gap.
        assert_eq!(b.commit_deadline(t2, t2 + ms(4_990), 20), t2 + ms(5_000));
        assert_eq!(b.commit_deadline(t2, t2 + ms(7), 7), t2 + ms(5_000));
        assert_eq!(b.commit_deadline(t2, t2, 1), t2 + ms(5_000));
        // A group that opens long after the commit (bursts a second
        // apart): the broker was not waiting; full intervals again.
        b.on_group_committed(t2 + ms(150));
        b.on_group_opened(t2 + ms(1_000));
        assert_eq!(b.commit_deadline(t2, t2 + ms(99), 100), t2 + ms(5_000));
    }

    #[test]
    fn card_life_is_the_endurance_left_at_the_measured_rate() {
        let c = StorageConfig {
            endurance_bytes: 4_000_000_000_000,
            warn_days: 365,
            window_ms: 60_000,
            ..StorageConfig::default()
        };
        let mut b = Budget::new(&c, BASE, 1_000, 500);
        assert_eq!(b.card_life_days(0), None, "unknown before a window");
        assert_eq!(b.life_warning(0), None);
        // 10 GB a day = 6,944,444 bytes a minute.
        b.handle_written(61_000, 500 + 6_944_444);
        let d = b.card_life_days(1_000_000_000_000).unwrap();
        assert!((d - 300.0).abs() < 0.01, "{d}");
        let w = b.life_warning(1_000_000_000_000).expect("300 < 365 days");
        assert!(w.contains("300 days") && w.contains("365"), "{w}");
        assert_eq!(b.life_warning(0).as_deref(), None, "400 days");
        assert_eq!(b.card_life_days(5_000_000_000_000), Some(0.0));
        b.handle_written(121_000, 500 + 6_944_444);
        assert_eq!(b.card_life_days(0), Some(f64::INFINITY));
        assert_eq!(b.poll_timeout(), 181_000);
        // A smaller count is a store opened again: a new window.
        assert!(!b.handle_written(200_000, 10));
        assert_eq!(b.poll_timeout(), 260_000);
    }
}
