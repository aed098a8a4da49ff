//! Bus-fault accounting for one sensor: counters per kind, exponential
//! backoff, and a healthy/unhealthy state.
//!
//! States: a sensor starts healthy. Each failure counts against its kind and
//! schedules the next try `base · 2^(n−1)` ticks later (capped at `max`),
//! where `n` is the number of consecutive failures. After
//! `unhealthy_after` consecutive failures it is unhealthy. One success
//! makes it healthy again and resets the backoff. Time is the driver's
//! clock, passed in; nothing here sleeps.

use core::fmt;

use weir_core::seam::SourceErrorKind;

/// Backoff and health thresholds, in the driver's clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failures after which the sensor is unhealthy (≥ 1).
    pub unhealthy_after: u32,
    /// First retry delay.
    pub backoff_base: i64,
    /// Longest retry delay.
    pub backoff_max: i64,
}

impl HealthConfig {
    /// Five failures in a row; retries from 100 to 30 000 ticks (ms: 0.1 s
    /// to 30 s).
    pub const DEFAULT_MS: HealthConfig = HealthConfig {
        unhealthy_after: 5,
        backoff_base: 100,
        backoff_max: 30_000,
    };
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self::DEFAULT_MS
    }
}

/// Fault counters, one per [`SourceErrorKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// No acknowledge.
    pub nack: u64,
    /// Bus errors.
    pub bus: u64,
    /// Timeouts (including "no measurement ready").
    pub timeout: u64,
    /// Implausible values, wrong chip ids.
    pub implausible: u64,
    /// Anything else.
    pub other: u64,
}

impl FaultCounts {
    /// The counter for `kind`.
    pub fn get(&self, kind: SourceErrorKind) -> u64 {
        match kind {
            SourceErrorKind::Nack => self.nack,
            SourceErrorKind::Bus => self.bus,
            SourceErrorKind::Timeout => self.timeout,
            SourceErrorKind::Implausible => self.implausible,
            _ => self.other,
        }
    }

    fn bump(&mut self, kind: SourceErrorKind) {
        let c = match kind {
            SourceErrorKind::Nack => &mut self.nack,
            SourceErrorKind::Bus => &mut self.bus,
            SourceErrorKind::Timeout => &mut self.timeout,
            SourceErrorKind::Implausible => &mut self.implausible,
            _ => &mut self.other,
        };
        *c = c.saturating_add(1);
    }

    /// All faults.
    pub fn total(&self) -> u64 {
        self.nack
            .saturating_add(self.bus)
            .saturating_add(self.timeout)
            .saturating_add(self.implausible)
            .saturating_add(self.other)
    }

    /// `(label, count)` in a fixed order, for metrics.
    pub fn labelled(&self) -> [(&'static str, u64); 5] {
        [
            ("nack", self.nack),
            ("bus", self.bus),
            ("timeout", self.timeout),
            ("implausible", self.implausible),
            ("other", self.other),
        ]
    }
}

/// One sensor's health, as status and metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    cfg: HealthConfig,
    healthy: bool,
    consecutive: u32,
    reads: u64,
    faults: FaultCounts,
    last_error: Option<SourceErrorKind>,
    became_unhealthy: u64,
}

impl Health {
    /// A healthy sensor with no history.
    pub const fn new(cfg: HealthConfig) -> Self {
        Health {
            cfg,
            healthy: true,
            consecutive: 0,
            reads: 0,
            faults: FaultCounts {
                nack: 0,
                bus: 0,
                timeout: 0,
                implausible: 0,
                other: 0,
            },
            last_error: None,
            became_unhealthy: 0,
        }
    }

    /// Records a good reading.
    pub fn on_success(&mut self) {
        self.reads = self.reads.saturating_add(1);
        self.consecutive = 0;
        self.healthy = true;
    }

    /// Records a failure at `now`; returns when to try again.
    pub fn on_failure(&mut self, kind: SourceErrorKind, now: i64) -> i64 {
        self.faults.bump(kind);
        self.last_error = Some(kind);
        self.consecutive = self.consecutive.saturating_add(1);
        if self.healthy && self.consecutive >= self.cfg.unhealthy_after.max(1) {
            self.healthy = false;
            self.became_unhealthy = self.became_unhealthy.saturating_add(1);
        }
        now.saturating_add(self.backoff())
    }

    /// The delay before the next try after the current run of failures
    /// (0 when there is none).
    pub fn backoff(&self) -> i64 {
        if self.consecutive == 0 {
            return 0;
        }
        let base = self.cfg.backoff_base.max(1);
        let max = self.cfg.backoff_max.max(base);
        let shift = (self.consecutive - 1).min(62);
        base.checked_mul(1i64 << shift).map_or(max, |d| d.min(max))
    }

    /// Whether the sensor is healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// What status and metrics report.
    pub fn status(&self) -> SensorStatus {
        SensorStatus {
            healthy: self.healthy,
            reads: self.reads,
            faults: self.faults,
            consecutive_failures: self.consecutive,
            last_error: self.last_error,
            became_unhealthy: self.became_unhealthy,
        }
    }
}

/// A snapshot of one sensor's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensorStatus {
    /// Healthy (fewer than `unhealthy_after` failures since the last success).
    pub healthy: bool,
    /// Good readings.
    pub reads: u64,
    /// Faults by kind.
    pub faults: FaultCounts,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The kind of the most recent failure.
    pub last_error: Option<SourceErrorKind>,
    /// How often the sensor went from healthy to unhealthy.
    pub became_unhealthy: u64,
}

/// A Prometheus label value, escaped (backslash, quote, newline).
struct Label<'a>(&'a str);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// Writes Prometheus text for a set of sensors (`key`, status), one family
/// header each, label values escaped: `weir_sensor_healthy`, `weir_sensor_reads_total`,
/// `weir_sensor_faults_total{kind}`, `weir_sensor_consecutive_failures`.
///
/// # Errors
/// Only those of `out`.
pub fn write_prometheus<'a, W: fmt::Write>(
    out: &mut W,
    sensors: impl Iterator<Item = (&'a str, SensorStatus)> + Clone,
) -> fmt::Result {
    writeln!(
        out,
        "# HELP weir_sensor_healthy 1 if the wired sensor is healthy, 0 after repeated bus faults."
    )?;
    writeln!(out, "# TYPE weir_sensor_healthy gauge")?;
    for (k, s) in sensors.clone() {
        writeln!(
            out,
            "weir_sensor_healthy{{sensor=\"{}\"}} {}",
            Label(k),
            u8::from(s.healthy)
        )?;
    }
    writeln!(
        out,
        "# HELP weir_sensor_reads_total Good readings from the wired sensor."
    )?;
    writeln!(out, "# TYPE weir_sensor_reads_total counter")?;
    for (k, s) in sensors.clone() {
        writeln!(
            out,
            "weir_sensor_reads_total{{sensor=\"{}\"}} {}",
            Label(k),
            s.reads
        )?;
    }
    writeln!(
        out,
        "# HELP weir_sensor_faults_total Failed reads of the wired sensor, by kind."
    )?;
    writeln!(out, "# TYPE weir_sensor_faults_total counter")?;
    for (k, s) in sensors.clone() {
        for (kind, n) in s.faults.labelled() {
            writeln!(
                out,
                "weir_sensor_faults_total{{sensor=\"{}\",kind=\"{kind}\"}} {n}",
                Label(k)
            )?;
        }
    }
    writeln!(
        out,
        "# HELP weir_sensor_consecutive_failures Failed reads since the last good one."
    )?;
    writeln!(out, "# TYPE weir_sensor_consecutive_failures gauge")?;
    for (k, s) in sensors {
        writeln!(
            out,
            "weir_sensor_consecutive_failures{{sensor=\"{}\"}} {}",
            Label(k),
            s.consecutive_failures
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: HealthConfig = HealthConfig {
        unhealthy_after: 3,
        backoff_base: 10,
        backoff_max: 100,
    };

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let mut h = Health::new(CFG);
        let retries: [i64; 6] = core::array::from_fn(|_| h.on_failure(SourceErrorKind::Nack, 1000));
        assert_eq!(retries, [1010, 1020, 1040, 1080, 1100, 1100]);
        h.on_success();
        assert_eq!(h.backoff(), 0);
        assert_eq!(h.on_failure(SourceErrorKind::Bus, 2000), 2010);
    }

    #[test]
    fn unhealthy_after_n_consecutive_failures_and_healthy_after_one_success() {
        let mut h = Health::new(CFG);
        h.on_failure(SourceErrorKind::Timeout, 0);
        h.on_failure(SourceErrorKind::Timeout, 0);
        assert!(h.is_healthy());
        h.on_success();
        h.on_failure(SourceErrorKind::Nack, 0);
        h.on_failure(SourceErrorKind::Implausible, 0);
        assert!(h.is_healthy(), "the success reset the run");
        h.on_failure(SourceErrorKind::Nack, 0);
        assert!(!h.is_healthy());
        h.on_failure(SourceErrorKind::Nack, 0);
        let s = h.status();
        assert_eq!(s.became_unhealthy, 1, "counted once per transition");
        assert_eq!(
            (s.faults.nack, s.faults.timeout, s.faults.implausible),
            (3, 2, 1)
        );
        assert_eq!(s.faults.total(), 6);
        assert_eq!(s.last_error, Some(SourceErrorKind::Nack));
        h.on_success();
        assert!(h.is_healthy());
        assert_eq!(h.status().reads, 2);
    }

    #[test]
    fn huge_backoff_settings_saturate_instead_of_overflowing() {
        let mut h = Health::new(HealthConfig {
            unhealthy_after: 1,
            backoff_base: i64::MAX / 2,
            backoff_max: i64::MAX,
        });
        for _ in 0..100 {
            h.on_failure(SourceErrorKind::Other, i64::MAX - 5);
        }
        assert_eq!(h.backoff(), i64::MAX);
        assert_eq!(h.on_failure(SourceErrorKind::Other, 5), i64::MAX);
    }

    #[test]
    fn prometheus_text_names_each_sensor_and_kind() {
        let mut h = Health::new(CFG);
        for _ in 0..3 {
            h.on_failure(SourceErrorKind::Nack, 0);
        }
        let ok = Health::new(CFG);
        let mut out = heapless::String::<2048>::new();
        write_prometheus(
            &mut out,
            [("vib", h.status()), ("temp", ok.status())].into_iter(),
        )
        .unwrap();
        assert!(out.contains("weir_sensor_healthy{sensor=\"vib\"} 0\n"));
        assert!(out.contains("weir_sensor_healthy{sensor=\"temp\"} 1\n"));
        assert!(out.contains("weir_sensor_faults_total{sensor=\"vib\",kind=\"nack\"} 3\n"));
        let mut odd = heapless::String::<2048>::new();
        write_prometheus(&mut odd, [("a\"b\\c\nd", ok.status())].into_iter()).unwrap();
        assert!(odd.contains("sensor=\"a\\\"b\\\\c\\nd\""), "{odd}");
        assert!(out.contains("weir_sensor_consecutive_failures{sensor=\"vib\"} 3\n"));
        assert_eq!(out.matches("# TYPE").count(), 4);
    }
}
