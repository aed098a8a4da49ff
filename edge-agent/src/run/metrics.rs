//! The agent's counters, in Prometheus text format, and a small HTTP
//! endpoint for them (`/metrics`, `/healthz`, `/deadletters`).
//!
//! The ingest loop is the only writer; the HTTP task reads. Counters are
//! relaxed atomics; the per-topic tables sit behind a mutex taken once per
//! group commit by the writer.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use weir_cloud_sync::outbox::OutboxStats;
use weir_cloud_sync::uplink::UplinkCounters;

use crate::store::DeadLetter;

/// Every counter and gauge `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received.
    pub messages: AtomicU64,
    /// Payload bytes received.
    pub payload_bytes: AtomicU64,
    /// Readings journaled (decoded samples).
    pub readings: AtomicU64,
    /// QoS 1 messages acknowledged to the broker (handed to the client).
    pub acks: AtomicU64,
    /// Acknowledgements the client wrote to the connection.
    pub acks_written: AtomicU64,
    /// Redelivered readings dropped (already journaled).
    pub duplicates: AtomicU64,
    /// Readings the engine refused (also in `bad`).
    pub rejected: AtomicU64,
    /// Late samples (the late side output).
    pub late: AtomicU64,
    /// Window results emitted.
    pub windows: AtomicU64,
    /// Alerts emitted.
    pub alerts: AtomicU64,
    /// Outputs published (QoS 1) and acknowledged by the broker.
    pub published: AtomicU64,
    /// Of those, acknowledged.
    pub published_acked: AtomicU64,
    /// Dead letters staged.
    pub dead_letters: AtomicU64,
    /// QoS 0 messages dropped while ingest was paused on the ack debt.
    pub overload_drops: AtomicU64,
    /// QoS 1 messages left unacknowledged for the broker to redeliver
    /// because the side queue of a pause was full ([`Metrics::held_bytes`]).
    pub shed: AtomicU64,
    /// Ingest reconnections asked for to get shed messages redelivered.
    pub shed_reconnects: AtomicU64,
    /// Messages held aside while ingest is paused on the ack debt, and
    /// their payload bytes (gauges).
    pub held_messages: AtomicU64,
    /// See `held_messages`.
    pub held_bytes: AtomicU64,
    /// The most `held_bytes` has been since the start (bounded by
    /// `[broker] max_held` plus one message).
    pub held_bytes_peak: AtomicU64,
    /// Group commits.
    pub commits: AtomicU64,
    /// Journal chunk bytes written.
    pub journal_bytes: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Duration of the last checkpoint, µs.
    pub checkpoint_us: AtomicU64,
    /// Snapshot bytes of the last checkpoint.
    pub checkpoint_bytes: AtomicU64,
    /// The store file's size.
    pub store_file_bytes: AtomicU64,
    /// Storage faults (a full or failing device) that stopped input
    /// until the store could be opened again.
    pub storage_faults: AtomicU64,
    /// The storage fault in force, if any (for `/healthz`).
    pub storage_fault: Mutex<Option<String>>,
    /// Damaged stores moved aside for a new one.
    pub stores_moved_aside: AtomicU64,
    /// Connections to the broker made.
    pub connects: AtomicU64,
    /// Subscriptions the broker has acknowledged (SUBACKs on the ingest
    /// connection): after a reconnect, input flows once this has moved.
    pub subscribe_acks: AtomicU64,
    /// Connection errors.
    pub connection_errors: AtomicU64,
    /// Sessions the broker had lost on reconnect (outputs re-published).
    pub sessions_lost: AtomicU64,
    /// Samples replayed from the journal at start or after a lost session.
    pub replayed: AtomicU64,
    /// Live keys in the engine.
    pub keys: AtomicU64,
    /// Keyed state: estimated bytes, budget, unproven keys, admissions
    /// refused, evictions by reason (`weir_core::engine::Eviction::ALL`).
    pub state_bytes: AtomicU64,
    /// See `state_bytes`.
    pub state_budget: AtomicU64,
    /// See `state_bytes`.
    pub state_unproven: AtomicU64,
    /// See `state_bytes`.
    pub state_refused: AtomicU64,
    /// See `state_bytes`.
    pub state_evictions: [AtomicU64; 3],
    /// Samples a filter dropped: the source's `filter`, or a SQL `WHERE`
    /// (in the engine or before it).
    pub filtered: AtomicU64,
    /// Samples with a computed field that was not a finite number (dropped,
    /// or `NULL` for the SQL aggregates of that field).
    pub null_computed: AtomicU64,
    /// The engine's watermark (ms), `i64::MIN` before the first.
    pub watermark: AtomicI64,
    /// The agent clock at the last group (ms).
    pub now: AtomicI64,
    /// The ingest connection is up.
    pub connected: AtomicBool,
    /// The output connection is up.
    pub output_connected: AtomicBool,
    /// Recovery done and subscribed at least once.
    pub ready: AtomicBool,
    /// The durability mode's name.
    pub mode: Mutex<&'static str>,
    /// Per (topic, reason) bad input counts.
    pub bad: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Per source: newest event time (ms) and the agent clock then.
    pub sources: Mutex<Vec<(String, Option<i64>, i64)>>,
    /// Wired sensors' health in Prometheus text (from `weir_boards`).
    pub wired_health: Mutex<String>,
    /// Readings from wired sensors.
    pub wired_readings: AtomicU64,
    /// The newest dead letters, for `/deadletters`.
    pub recent_dead: Mutex<VecDeque<DeadLetter>>,
    /// The cloud uplink's counters and the outbox's stats (`[cloud]`),
    /// refreshed on the agent's timer.
    pub cloud: Mutex<Option<(UplinkCounters, OutboxStats)>>,
    /// The running pipeline's version (0: the gateway's file).
    pub pipeline_version: AtomicU64,
    /// Pipeline updates by result (`applied`, `rejected`, `rolled_back`).
    pub updates: Mutex<BTreeMap<&'static str, u64>>,
    /// What the technician's page shows (`/`, `/api/v1/…`).
    pub dash: super::dash::Dash,
    /// Device bytes the store has written over its life
    /// (`Store::lifetime_bytes_written`).
    pub storage_bytes_written: AtomicU64,
    /// `fdatasync`s of the store since the agent started.
    pub storage_syncs: AtomicU64,
    /// The write budget's state (`run::budget`), refreshed on the timer.
    pub storage: Mutex<StorageGauges>,
    /// Acknowledged messages by how long their group stayed open before
    /// its commit: counts per [`ACK_WAIT_BUCKETS`] bound, then the rest.
    pub ack_wait: Mutex<AckWait>,
}

/// The write budget's gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageGauges {
    /// The group commit interval in use, ms.
    pub commit_interval_ms: u64,
    /// The checkpoint interval in use, ms.
    pub checkpoint_interval_ms: u64,
    /// The budget; `None`: no budget.
    pub budget_bytes_per_day: Option<u64>,
    /// Device bytes per second over the last window.
    pub rate: Option<f64>,
    /// Predicted days until the card's endurance is spent.
    pub card_life_days: Option<f64>,
    /// Over budget with the intervals stretched as far as allowed.
    pub over_budget: bool,
    /// The `/healthz` warning, when the predicted life is below `warn_days`.
    pub warning: Option<String>,
}

/// Upper bounds (seconds) of the `weir_ack_wait_seconds` histogram.
pub const ACK_WAIT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `weir_ack_wait_seconds` histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AckWait {
    /// Per bucket (not cumulative), then the overflow.
    pub counts: [u64; ACK_WAIT_BUCKETS.len() + 1],
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl AckWait {
    /// The smallest bucket bound at or above the `q` quantile (0..=1) of
    /// the observations; `f64::INFINITY` when it is in the overflow, `None`
    /// without observations.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let n: u64 = self.counts.iter().sum();
        if n == 0 {
            return None;
        }
        let want = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(ACK_WAIT_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Keep this many dead letters in memory for `/deadletters`.
const RECENT_DEAD: usize = 100;
/// Distinct (topic, reason) pairs counted before topics fold into `_other`.
const MAX_BAD_TOPICS: usize = 1_000;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// `VmRSS` of this process, bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// `write_bytes` of this process from `/proc/self/io`: what reached the
/// block device (flash wear).
pub fn flash_write_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    let l = s.lines().find(|l| l.starts_with("write_bytes:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

impl Metrics {
    /// Copies the engine's keyed-state figures.
    pub fn set_state(&self, e: &weir_core::engine::Engine) {
        use weir_core::engine::{Eviction, Reject};
        let st = e.stats();
        self.keys.store(e.key_count() as u64, Relaxed);
        self.state_bytes.store(e.state_bytes() as u64, Relaxed);
        self.state_budget
            .store(e.spec().state.max_bytes as u64, Relaxed);
        self.state_unproven.store(e.unproven_keys() as u64, Relaxed);
        self.state_refused
            .store(st.rejected(Reject::KeyBudget), Relaxed);
        for (slot, why) in self.state_evictions.iter().zip(Eviction::ALL) {
            slot.store(st.evicted(why), Relaxed);
        }
        self.filtered.store(st.filtered, Relaxed);
        self.null_computed.store(st.null_computed, Relaxed);
    }

    /// Counts one bad message or record.
    pub fn count_bad(&self, topic: &str, reason: &'static str) {
        let mut m = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        let key = (topic.to_string(), reason);
        if m.len() >= MAX_BAD_TOPICS && !m.contains_key(&key) {
            *m.entry(("_other".into(), reason)).or_default() += 1;
        } else {
            *m.entry(key).or_default() += 1;
        }
    }

    /// Remembers a dead letter for `/deadletters`.
    pub fn remember_dead(&self, d: &DeadLetter) {
        self.dead_letters.fetch_add(1, Relaxed);
        let mut q = self.recent_dead.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= RECENT_DEAD {
            q.pop_front();
        }
        q.push_back(d.clone());
    }

    /// Counts `n` acknowledged messages of a group that waited `wait`
    /// from its first message to its commit (an upper bound for each).
    pub fn observe_ack_wait(&self, wait: std::time::Duration, n: u64) {
        if n == 0 {
            return;
        }
        let w = wait.as_secs_f64();
        let i = ACK_WAIT_BUCKETS
            .iter()
            .position(|b| w <= *b)
            .unwrap_or(ACK_WAIT_BUCKETS.len());
        let mut h = self.ack_wait.lock().unwrap_or_else(|e| e.into_inner());
        h.counts[i] += n;
        h.sum += w * n as f64;
    }

    /// The `/healthz` response: status line and body. 200 `ok` when
    /// recovered and connected, with a `warning:` line when the predicted
    /// card life is below `warn_days` (a worn card is not fixed by a
    /// restart, so it does not make the agent unhealthy); 503 otherwise.
    pub fn healthz(&self) -> (&'static str, String) {
        let fault = self
            .storage_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = fault {
            (
                "503 Service Unavailable",
                format!("storage failing, input paused (the broker buffers): {f}\n"),
            )
        } else if self.ready.load(Relaxed) && self.connected.load(Relaxed) {
            let mut body = "ok\n".to_string();
            if let Some(w) = &self
                .storage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .warning
            {
                let _ = writeln!(body, "warning: {w}");
            }
            ("200 OK", body)
        } else if self.ready.load(Relaxed) {
            (
                "503 Service Unavailable",
                "not connected to the broker\n".to_string(),
            )
        } else {
            ("503 Service Unavailable", "recovering\n".to_string())
        }
    }

    /// Bad input counted for `reason`, over all topics.
    pub fn bad_total(&self, reason: &str) -> u64 {
        let m = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|((_, r), _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut c = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                s,
                "# HELP weir_{name} {help}\n# TYPE weir_{name} counter\nweir_{name} {v}"
            );
        };
        c(
            "messages_total",
            "MQTT messages received.",
            self.messages.load(Relaxed),
        );
        c(
            "payload_bytes_total",
            "Payload bytes received.",
            self.payload_bytes.load(Relaxed),
        );
        c(
            "readings_total",
            "Readings decoded and journaled.",
            self.readings.load(Relaxed),
        );
        c(
            "rejected_total",
            "Readings refused by the engine.",
            self.rejected.load(Relaxed),
        );
        c(
            "acks_total",
            "QoS 1 messages acknowledged to the broker after their commit.",
            self.acks.load(Relaxed),
        );
        c(
            "acks_written_total",
            "Acknowledgements written to the broker connection.",
            self.acks_written.load(Relaxed),
        );
        c(
            "duplicate_readings_total",
            "Redelivered readings dropped because they were already journaled.",
            self.duplicates.load(Relaxed),
        );
        c(
            "late_samples_total",
            "Samples later than their window's lateness (late side output).",
            self.late.load(Relaxed),
        );
        c(
            "filtered_samples_total",
            "Samples dropped by a source's filter or a SQL WHERE.",
            self.filtered.load(Relaxed),
        );
        c(
            "null_computed_samples_total",
            "Samples with a NULL field: a computed field that was not a finite number (dropped, or NULL for the SQL aggregates of that field), or a SQL column absent or null in the payload.",
            self.null_computed.load(Relaxed),
        );
        c(
            "windows_total",
            "Window results emitted.",
            self.windows.load(Relaxed),
        );
        c("alerts_total", "Alerts emitted.", self.alerts.load(Relaxed));
        c(
            "outputs_published_total",
            "Outputs published at QoS 1.",
            self.published.load(Relaxed),
        );
        c(
            "outputs_acked_total",
            "Outputs acknowledged by the broker.",
            self.published_acked.load(Relaxed),
        );
        c(
            "dead_letters_total",
            "Bad messages or records written to the dead-letter table.",
            self.dead_letters.load(Relaxed),
        );
        c(
            "overload_drops_total",
            "QoS 0 messages dropped while ingest was paused waiting for acks to be written.",
            self.overload_drops.load(Relaxed),
        );
        c(
            "ingest_shed_messages_total",
            "QoS 1 messages left unacknowledged under overload (the side queue of a pause was full), redelivered by the broker after a reconnect.",
            self.shed.load(Relaxed),
        );
        c(
            "ingest_shed_reconnects_total",
            "Ingest reconnections made to have shed messages redelivered.",
            self.shed_reconnects.load(Relaxed),
        );
        c(
            "journal_commits_total",
            "Durable group commits.",
            self.commits.load(Relaxed),
        );
        c(
            "journal_bytes_total",
            "Journal chunk bytes written.",
            self.journal_bytes.load(Relaxed),
        );
        c(
            "checkpoints_total",
            "Checkpoints made durable.",
            self.checkpoints.load(Relaxed),
        );
        c(
            "storage_faults_total",
            "Storage faults (full or failing device) that paused input until the store opened again.",
            self.storage_faults.load(Relaxed),
        );
        c(
            "store_moved_aside_total",
            "Damaged stores moved aside (weir.redb.damaged-*) for a new, empty one.",
            self.stores_moved_aside.load(Relaxed),
        );
        c(
            "connects_total",
            "Connections to the broker.",
            self.connects.load(Relaxed),
        );
        c(
            "subscribe_acks_total",
            "Subscriptions the broker has acknowledged on the ingest connection.",
            self.subscribe_acks.load(Relaxed),
        );
        c(
            "connection_errors_total",
            "Broker connection errors.",
            self.connection_errors.load(Relaxed),
        );
        c(
            "sessions_lost_total",
            "Reconnects where the broker had lost the session.",
            self.sessions_lost.load(Relaxed),
        );
        c(
            "replayed_samples_total",
            "Journal records replayed at start or after a lost session.",
            self.replayed.load(Relaxed),
        );
        c(
            "storage_bytes_written_total",
            "Device bytes the journal store has written over its life (redb pages and headers; persisted with each checkpoint, so a crash loses at most one checkpoint interval's count; a new data directory starts at 0).",
            self.storage_bytes_written.load(Relaxed),
        );
        c(
            "storage_syncs_total",
            "fdatasyncs of the journal store since the agent started (one per durable commit or checkpoint).",
            self.storage_syncs.load(Relaxed),
        );
        if let Some(w) = flash_write_bytes() {
            c(
                "flash_write_bytes_total",
                "Bytes this process caused to be written to the block device (/proc/self/io).",
                w,
            );
        }
        let mut g = |name: &str, help: &str, v: String| {
            let _ = writeln!(
                s,
                "# HELP weir_{name} {help}\n# TYPE weir_{name} gauge\nweir_{name} {v}"
            );
        };
        g(
            "storage_ok",
            "1 while the store takes writes, 0 during a storage fault (input paused).",
            u8::from(
                self.storage_fault
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none(),
            )
            .to_string(),
        );
        g(
            "ingest_held_messages",
            "Messages held aside while ingest is paused waiting for acks to be written.",
            self.held_messages.load(Relaxed).to_string(),
        );
        g(
            "ingest_held_bytes",
            "Payload bytes of the messages held aside while ingest is paused.",
            self.held_bytes.load(Relaxed).to_string(),
        );
        g(
            "ingest_held_bytes_peak",
            "The most payload bytes held aside at once since the start (at most [broker] max_held plus one message).",
            self.held_bytes_peak.load(Relaxed).to_string(),
        );
        g(
            "checkpoint_duration_seconds",
            "Duration of the last checkpoint.",
            format!("{}", self.checkpoint_us.load(Relaxed) as f64 / 1e6),
        );
        g(
            "checkpoint_bytes",
            "Snapshot bytes of the last checkpoint.",
            self.checkpoint_bytes.load(Relaxed).to_string(),
        );
        g(
            "journal_file_bytes",
            "Size of the journal and checkpoint file.",
            self.store_file_bytes.load(Relaxed).to_string(),
        );
        g(
            "keys",
            "Live keys in the engine.",
            self.keys.load(Relaxed).to_string(),
        );
        g(
            "connected",
            "1 while connected to the broker.",
            (self.connected.load(Relaxed) as u8).to_string(),
        );
        if let Some(r) = rss_bytes() {
            g("resident_memory_bytes", "Resident set size.", r.to_string());
        }
        let st = self
            .storage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        g(
            "storage_commit_interval_seconds",
            "The group commit interval in use (the configured one, or longer under the write budget).",
            format!("{}", st.commit_interval_ms as f64 / 1e3),
        );
        g(
            "storage_checkpoint_interval_seconds",
            "The checkpoint interval in use (the configured one, or longer under the write budget).",
            format!("{}", st.checkpoint_interval_ms as f64 / 1e3),
        );
        if let Some(b) = st.budget_bytes_per_day {
            g(
                "storage_write_budget_bytes_per_day",
                "The daily device write budget ([storage] write_budget).",
                b.to_string(),
            );
        }
        g(
            "storage_over_budget",
            "1 when the store writes more than the budget even at max_ack_delay.",
            (st.over_budget as u8).to_string(),
        );
        if let Some(r) = st.rate {
            g(
                "storage_write_rate_bytes_per_second",
                "Device bytes per second the store wrote over the budget's last window.",
                format!("{r:.1}"),
            );
        }
        if let Some(d) = st.card_life_days {
            g(
                "storage_card_life_days",
                "Predicted days until the card's rated endurance is spent, at the last window's write rate (+Inf while nothing is written).",
                if d.is_finite() { format!("{d:.1}") } else { "+Inf".into() },
            );
        }
        let _ = writeln!(
            s,
            "# HELP weir_state_keys Live keys in the engine.\n# TYPE weir_state_keys gauge\nweir_state_keys {}\n\
             # HELP weir_state_unproven_keys Live keys that have not completed a window of their own (evicted first).\n# TYPE weir_state_unproven_keys gauge\nweir_state_unproven_keys {}\n\
             # HELP weir_state_bytes Keyed state, the engine's estimate.\n# TYPE weir_state_bytes gauge\nweir_state_bytes {}\n\
             # HELP weir_state_budget_bytes The keyed-state budget ([state] memory).\n# TYPE weir_state_budget_bytes gauge\nweir_state_budget_bytes {}\n\
             # HELP weir_state_admissions_refused_total New keys refused because the state budget was full.\n# TYPE weir_state_admissions_refused_total counter\nweir_state_admissions_refused_total {}\n\
             # HELP weir_state_evictions_total Keys evicted, by reason.\n# TYPE weir_state_evictions_total counter",
            self.keys.load(Relaxed),
            self.state_unproven.load(Relaxed),
            self.state_bytes.load(Relaxed),
            self.state_budget.load(Relaxed),
            self.state_refused.load(Relaxed),
        );
        for (slot, why) in self
            .state_evictions
            .iter()
            .zip(weir_core::engine::Eviction::ALL)
        {
            let _ = writeln!(
                s,
                "weir_state_evictions_total{{reason=\"{}\"}} {}",
                why.name(),
                slot.load(Relaxed)
            );
        }
        {
            let h = self
                .ack_wait
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let _ = writeln!(s, "# HELP weir_ack_wait_seconds Acknowledged messages by the time from their group's first message to its commit (an upper bound of each one's wait for the commit).\n# TYPE weir_ack_wait_seconds histogram");
            let mut cum = 0;
            for (b, c) in ACK_WAIT_BUCKETS.iter().zip(h.counts) {
                cum += c;
                let _ = writeln!(s, "weir_ack_wait_seconds_bucket{{le=\"{b}\"}} {cum}");
            }
            cum += h.counts[ACK_WAIT_BUCKETS.len()];
            let _ = writeln!(s, "weir_ack_wait_seconds_bucket{{le=\"+Inf\"}} {cum}\nweir_ack_wait_seconds_sum {}\nweir_ack_wait_seconds_count {cum}", h.sum);
        }
        let now = self.now.load(Relaxed);
        let wm = self.watermark.load(Relaxed);
        let _ = writeln!(s, "# HELP weir_watermark_lag_seconds Agent clock minus the newest event time, per source.\n# TYPE weir_watermark_lag_seconds gauge");
        for (name, newest, _) in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Some(t) = newest {
                let _ = writeln!(
                    s,
                    "weir_watermark_lag_seconds{{source=\"{}\"}} {}",
                    esc(name),
                    (now - t) as f64 / 1e3
                );
            }
        }
        if wm != i64::MIN {
            let _ = writeln!(s, "# HELP weir_watermark_ms The engine watermark.\n# TYPE weir_watermark_ms gauge\nweir_watermark_ms {wm}");
        }
        let _ = writeln!(s, "# HELP weir_bad_input_total Bad messages or records, by topic and reason.\n# TYPE weir_bad_input_total counter");
        for ((topic, reason), n) in self.bad.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                s,
                "weir_bad_input_total{{topic=\"{}\",reason=\"{reason}\"}} {n}",
                esc(topic)
            );
        }
        if let Some((u, o)) = *self.cloud.lock().unwrap_or_else(|e| e.into_inner()) {
            let mut c = |name: &str, help: &str, v: u64| {
                let _ = writeln!(
                    s,
                    "# HELP weir_cloud_{name} {help}\n# TYPE weir_cloud_{name} counter\nweir_cloud_{name} {v}"
                );
            };
            c(
                "published_records_total",
                "Records published to the cloud broker (republished ones included).",
                u.published_records,
            );
            c(
                "published_batches_total",
                "Batches published to the cloud broker.",
                u.published_batches,
            );
            c(
                "acked_records_total",
                "Records the cloud broker acknowledged.",
                u.acked_records,
            );
            c(
                "acked_batches_total",
                "Batches the cloud broker acknowledged.",
                u.acked_batches,
            );
            c(
                "republished_records_total",
                "Records published again after a reconnect.",
                u.republished_records,
            );
            c(
                "bytes_sent_total",
                "Payload and topic bytes sent to the cloud broker.",
                u.bytes_sent,
            );
            c(
                "connects_total",
                "Connections to the cloud broker.",
                u.connects,
            );
            c(
                "connection_errors_total",
                "Cloud broker connection errors.",
                u.connection_errors,
            );
            c(
                "oversized_records_total",
                "Records too large for any packet, skipped.",
                u.oversized_records,
            );
            c(
                "drop_reports_total",
                "Drop reports staged for the cloud.",
                o.reports,
            );
            let _ = writeln!(s, "# HELP weir_cloud_outbox_dropped_total Outputs the outbox dropped under its disk budget, by kind.\n# TYPE weir_cloud_outbox_dropped_total counter");
            for (k, v) in [
                ("window", o.dropped.window),
                ("alert", o.dropped.alert),
                ("status", o.dropped.status),
            ] {
                let _ = writeln!(s, "weir_cloud_outbox_dropped_total{{kind=\"{k}\"}} {v}");
            }
            let _ = writeln!(s, "# HELP weir_cloud_outbox_records Records in the outbox (acknowledged ones not yet deleted included).\n# TYPE weir_cloud_outbox_records gauge\nweir_cloud_outbox_records {}", o.records);
            let _ = writeln!(s, "# HELP weir_cloud_outbox_bytes Accounted bytes in the outbox.\n# TYPE weir_cloud_outbox_bytes gauge\nweir_cloud_outbox_bytes {}", o.bytes);
            let _ = writeln!(s, "# HELP weir_cloud_outbox_pending Records not yet acknowledged by the cloud broker.\n# TYPE weir_cloud_outbox_pending gauge\nweir_cloud_outbox_pending {}", o.next_seq.saturating_sub(1).saturating_sub(o.acked_through).min(o.records));
        }
        let _ = writeln!(s, "# HELP weir_pipeline_version The running pipeline's version (0: the gateway's file).\n# TYPE weir_pipeline_version gauge\nweir_pipeline_version {}", self.pipeline_version.load(Relaxed));
        let _ = writeln!(s, "# HELP weir_pipeline_updates_total Pipeline updates received, by result.\n# TYPE weir_pipeline_updates_total counter");
        for (r, n) in self
            .updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(s, "weir_pipeline_updates_total{{result=\"{r}\"}} {n}");
        }
        let mode = *self.mode.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(s, "# HELP weir_info The durability mode.\n# TYPE weir_info gauge\nweir_info{{durability=\"{mode}\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        s.push_str(&self.wired_health.lock().unwrap_or_else(|e| e.into_inner()));
        s
    }

    /// The newest dead letters as JSON lines.
    pub fn render_dead(&self) -> String {
        let q = self.recent_dead.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        for d in q.iter() {
            s.push_str(&dead_json(d));
            s.push('\n');
        }
        s
    }
}

/// One dead letter as a JSON object (payload as lossy UTF-8).
pub fn dead_json(d: &DeadLetter) -> String {
    serde_json::json!({
        "now": d.now,
        "topic": d.topic,
        "reason": d.reason,
        "detail": d.detail,
        "payload": String::from_utf8_lossy(&d.payload),
    })
    .to_string()
}

/// Serves `/metrics`, `/healthz` and `/deadletters` on `listener` until
/// the task is dropped. One request per connection, HTTP/1.0 style.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            // Read until the end of the request head (or a full buffer).
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                            || buf[..n].windows(2).any(|w| w == b"\n\n")
                        {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let bare = path.split('?').next().unwrap_or("");
            if super::web::is_web(bare) {
                super::web::handle(sock, &head, m).await;
                return;
            }
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", m.render()),
                "/healthz" => {
                    let (status, body) = m.healthz();
                    (status, "text/plain", body)
                }
                "/deadletters" => ("200 OK", "application/x-ndjson", m.render_dead()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /, /metrics, /healthz, /deadletters or /api/v1/ (docs/api.md)\n"
                        .to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_figures_reach_the_exposition() {
        let text = "[state]\nmax_keys = 3\n[[source]]\nname = \"s\"\nfields = [\"v\"]\n[[window]]\nid = \"w\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"1s\"\naggregates = [\"count\"]\n";
        let pf = crate::pipeline_file::parse("p.toml", text).unwrap();
        let mut e = pf.spec.build().unwrap();
        let t0 = 1_780_000_000_000i64;
        // Two proven keys, then a flood of one-reading ids.
        for k in ["a", "b"] {
            e.handle_sample(t0, 0, k, t0, &[1.0]).unwrap();
            e.handle_sample(t0 + 1_000, 0, k, t0 + 1_000, &[1.0])
                .unwrap();
        }
        for i in 0..10 {
            let t = t0 + 1_001 + i;
            e.handle_sample(t, 0, &format!("fake-{i}"), t, &[1.0])
                .unwrap();
        }
        let m = Metrics::default();
        m.set_state(&e);
        let out = m.render();
        for line in [
            "weir_state_keys 3\n".to_string(),
            "weir_state_unproven_keys 1\n".to_string(),
            format!("weir_state_bytes {}\n", e.state_bytes()),
            format!("weir_state_budget_bytes {}\n", 64 << 20),
            "weir_state_admissions_refused_total 0\n".to_string(),
            "weir_state_evictions_total{reason=\"unproven\"} 9\n".to_string(),
            "weir_state_evictions_total{reason=\"ttl\"} 0\n".to_string(),
        ] {
            assert!(out.contains(&line), "{line} missing from\n{out}");
        }
    }

    /// Drops by a SQL `WHERE` on the key (before the engine, in `weir
    /// run`'s `feed`) and by a numeric `WHERE` (the engine's filter) both
    /// reach `/metrics`.
    #[test]
    fn samples_a_where_drops_are_counted_in_the_exposition() {
        use crate::store::Sample;
        let ddl = "CREATE TABLE s (sensor STRING, ts BIGINT, t DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
";
        let t0 = 1_780_000_000_000i64;
        let run = |cond: &str, readings: &[(&str, f64)]| {
            let sql = format!(
                "{ddl}SELECT sensor, window_start, window_end, AVG(t) AS m
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE {cond}
GROUP BY sensor, window_start, window_end;"
            );
            let pf = crate::sql::parse_for_run("q.sql", &sql).unwrap();
            let mut e = pf.spec.clone().build().unwrap();
            for (i, (key, t)) in readings.iter().enumerate() {
                let ts = t0 + i as i64;
                let s = Sample {
                    source: 0,
                    key,
                    ts,
                    now: ts,
                    values: &[*t],
                };
                super::super::agent_core::feed(&mut e, &pf, &s).unwrap();
            }
            let m = Metrics::default();
            m.set_state(&e);
            (e.stats().accepted, m.render())
        };
        let readings = [("p1", 1.0), ("p2", 5.0), ("p2", 1.0), ("p1", 7.0)];
        let (accepted, out) = run("sensor = 'p1'", &readings);
        assert_eq!(accepted, 2);
        assert!(out.contains("weir_filtered_samples_total 2\n"), "{out}");
        let (accepted, out) = run("t > 2", &readings);
        assert_eq!(accepted, 4, "a numeric WHERE runs in the engine");
        assert!(out.contains("weir_filtered_samples_total 2\n"), "{out}");
        assert!(
            out.contains("weir_null_computed_samples_total 0\n"),
            "{out}"
        );
    }

    #[test]
    fn a_card_life_warning_keeps_healthz_at_200_and_says_why() {
        let m = Metrics::default();
        assert_eq!(m.healthz().0, "503 Service Unavailable");
        m.ready.store(true, Relaxed);
        m.connected.store(true, Relaxed);
        assert_eq!(m.healthz(), ("200 OK", "ok\n".to_string()));
        m.storage.lock().unwrap().warning = Some("predicted card life 300 days".into());
        let (status, body) = m.healthz();
        assert_eq!(status, "200 OK");
        assert_eq!(body, "ok\nwarning: predicted card life 300 days\n");
    }

    #[test]
    fn storage_metrics_are_rendered() {
        let m = Metrics::default();
        m.storage_bytes_written.store(123_456, Relaxed);
        *m.storage.lock().unwrap() = StorageGauges {
            commit_interval_ms: 2_500,
            checkpoint_interval_ms: 600_000,
            budget_bytes_per_day: Some(2 << 30),
            rate: Some(1_000.0),
            card_life_days: Some(f64::INFINITY),
            over_budget: false,
            warning: None,
        };
        m.observe_ack_wait(std::time::Duration::from_millis(40), 10);
        m.observe_ack_wait(std::time::Duration::from_millis(2_000), 1);
        m.observe_ack_wait(std::time::Duration::from_millis(9), 0);
        let r = m.render();
        for line in [
            "weir_storage_bytes_written_total 123456",
            "weir_storage_commit_interval_seconds 2.5",
            "weir_storage_checkpoint_interval_seconds 600",
            "weir_storage_write_budget_bytes_per_day 2147483648",
            "weir_storage_write_rate_bytes_per_second 1000.0",
            "weir_storage_card_life_days +Inf",
            "weir_ack_wait_seconds_bucket{le=\"0.05\"} 10",
            "weir_ack_wait_seconds_bucket{le=\"2.5\"} 11",
            "weir_ack_wait_seconds_count 11",
        ] {
            assert!(r.lines().any(|l| l == line), "no `{line}` in\n{r}");
        }
        let h = m.ack_wait.lock().unwrap().clone();
        assert_eq!(h.quantile_bound(0.5), Some(0.05));
        assert_eq!(h.quantile_bound(0.99), Some(2.5));
        assert_eq!(AckWait::default().quantile_bound(0.5), None);
    }
}
