//! A wired sensor as a [`weir_core::seam::Source`]: sampled at a fixed
//! period on the gateway's clock, with bus faults counted and retried with
//! backoff ([`crate::health`]).

use weir_core::seam::{Reading, Source, SourceError};

use crate::health::{Health, HealthConfig, SensorStatus};

/// Values of one reading, in the order of [`Sensor::FIELDS`].
pub type Values = heapless::Vec<f64, 8>;

/// A sensor driver: brings the part up, then takes one sample at a time.
pub trait Sensor {
    /// The driver's error.
    type Error: SourceError;

    /// Names of the values a reading carries, in order (the pipeline
    /// source's `fields`).
    const FIELDS: &'static [&'static str];

    /// Checks the part's identity and starts measuring. Called before the
    /// first read and again after any failure (a part that browned out has
    /// lost its configuration).
    ///
    /// # Errors
    /// The bus failed or the part is not what it should be.
    fn init(&mut self) -> Result<(), Self::Error>;

    /// Takes one sample into `out` (empty on entry).
    ///
    /// # Errors
    /// The bus failed, no sample was ready, or the sample is implausible.
    fn read(&mut self, out: &mut Values) -> Result<(), Self::Error>;
}

/// A [`Sensor`] sampled every `period` ticks, keyed by its name. Readings
/// carry the gateway clock's `now` as their timestamp, like MQTT samples in
/// ingestion-time mode.
///
/// Call order: ask [`Source::poll_timeout`] when to come back, call
/// [`Source::poll_read`] with the clock's `now` then (early calls return
/// `Ok(None)` and touch no bus). A failed read is counted, the sensor is
/// re-initialised on the next try, and that try waits for the backoff; a
/// read never panics.
#[derive(Debug)]
pub struct SensorSource<S> {
    sensor: S,
    key: heapless::String<32>,
    period: i64,
    due: i64,
    ready: bool,
    missed: u64,
    health: Health,
}

impl<S: Sensor> SensorSource<S> {
    /// Samples `sensor` every `period` ticks (at least 1) from `start` on.
    pub fn new(
        sensor: S,
        key: heapless::String<32>,
        period: i64,
        start: i64,
        health: HealthConfig,
    ) -> Self {
        SensorSource {
            sensor,
            key,
            period: period.max(1),
            due: start,
            ready: false,
            missed: 0,
            health: Health::new(health),
        }
    }

    /// The key readings carry.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Health and fault counters.
    pub fn status(&self) -> SensorStatus {
        self.health.status()
    }

    /// Sample slots skipped because the source was polled more than a
    /// period late.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The driver.
    pub fn sensor_mut(&mut self) -> &mut S {
        &mut self.sensor
    }

    /// The driver, e.g. to give its bus back.
    pub fn into_inner(self) -> S {
        self.sensor
    }

    fn fail(&mut self, e: S::Error, now: i64) -> S::Error {
        self.ready = false;
        self.due = self.health.on_failure(e.kind(), now);
        e
    }
}

impl<S: Sensor> Source for SensorSource<S> {
    type Error = S::Error;

    fn poll_read(&mut self, now: i64) -> Result<Option<Reading>, S::Error> {
        if now < self.due {
            return Ok(None);
        }
        if !self.ready {
            if let Err(e) = self.sensor.init() {
                return Err(self.fail(e, now));
            }
            self.ready = true;
        }
        let mut values = Values::new();
        if let Err(e) = self.sensor.read(&mut values) {
            return Err(self.fail(e, now));
        }
        self.health.on_success();
        // Keep the phase of the schedule; if we fell behind by whole
        // periods, skip them (and count them) rather than read in a burst.
        let next = self.due.saturating_add(self.period);
        if next > now {
            self.due = next;
        } else {
            let behind = (now - self.due) / self.period;
            self.missed = self.missed.saturating_add(behind.unsigned_abs());
            self.due = self
                .due
                .saturating_add((behind + 1).saturating_mul(self.period));
        }
        Ok(Some(Reading {
            key: self.key.clone(),
            ts: now,
            values,
        }))
    }

    fn poll_timeout(&self) -> Option<i64> {
        Some(self.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::seam::SourceErrorKind;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Fault(SourceErrorKind);
    impl SourceError for Fault {
        fn kind(&self) -> SourceErrorKind {
            self.0
        }
    }

    /// A sensor that follows a script of outcomes: `Some(kind)` fails.
    struct Scripted {
        script: &'static [Option<SourceErrorKind>],
        at: usize,
        inits: u32,
        fail_init: bool,
    }

    impl Sensor for Scripted {
        type Error = Fault;
        const FIELDS: &'static [&'static str] = &["v"];
        fn init(&mut self) -> Result<(), Fault> {
            self.inits += 1;
            if self.fail_init {
                Err(Fault(SourceErrorKind::Nack))
            } else {
                Ok(())
            }
        }
        fn read(&mut self, out: &mut Values) -> Result<(), Fault> {
            let step = self.script.get(self.at).copied().flatten();
            self.at += 1;
            match step {
                Some(k) => Err(Fault(k)),
                None => {
                    out.push(self.at as f64).unwrap();
                    Ok(())
                }
            }
        }
    }

    const CFG: HealthConfig = HealthConfig {
        unhealthy_after: 2,
        backoff_base: 5,
        backoff_max: 40,
    };

    fn src(script: &'static [Option<SourceErrorKind>]) -> SensorSource<Scripted> {
        let s = Scripted {
            script,
            at: 0,
            inits: 0,
            fail_init: false,
        };
        SensorSource::new(s, "s1".try_into().unwrap(), 10, 100, CFG)
    }

    #[test]
    fn reads_on_schedule_stamped_with_the_gateway_clock() {
        let mut s = src(&[]);
        assert_eq!(s.poll_timeout(), Some(100));
        assert_eq!(s.poll_read(99).unwrap(), None);
        let r = s.poll_read(101).unwrap().unwrap();
        assert_eq!(
            (r.key.as_str(), r.ts, r.values.as_slice()),
            ("s1", 101, &[1.0][..])
        );
        assert_eq!(s.poll_timeout(), Some(110), "the schedule keeps its phase");
        assert_eq!(s.poll_read(109).unwrap(), None);
        assert!(s.poll_read(110).unwrap().is_some());
        assert_eq!(s.sensor_inits(), 1, "initialised once");
    }

    #[test]
    fn falling_behind_skips_and_counts_slots() {
        let mut s = src(&[]);
        s.poll_read(100).unwrap().unwrap();
        // Due at 110; polled at 145: slots 110, 120, 130, 140 → one read, 3 missed.
        s.poll_read(145).unwrap().unwrap();
        assert_eq!(s.missed(), 3);
        assert_eq!(s.poll_timeout(), Some(150));
    }

    #[test]
    fn failures_back_off_reinit_turn_unhealthy_and_recover() {
        use SourceErrorKind::*;
        let mut s = src(&[None, Some(Nack), Some(Timeout), Some(Nack), None]);
        s.poll_read(100).unwrap().unwrap();
        assert_eq!(s.poll_read(110).unwrap_err().kind(), Nack);
        assert_eq!(s.poll_timeout(), Some(115), "first retry after base");
        assert!(s.status().healthy);
        assert_eq!(
            s.poll_read(114).unwrap(),
            None,
            "no bus traffic during backoff"
        );
        assert_eq!(s.poll_read(115).unwrap_err().kind(), Timeout);
        assert_eq!(s.poll_timeout(), Some(125), "doubled");
        assert!(!s.status().healthy, "two in a row");
        assert_eq!(s.poll_read(125).unwrap_err().kind(), Nack);
        assert_eq!(s.poll_timeout(), Some(145));
        let r = s.poll_read(145).unwrap().unwrap();
        assert_eq!(r.ts, 145);
        let st = s.status();
        assert!(st.healthy);
        assert_eq!((st.faults.nack, st.faults.timeout, st.reads), (2, 1, 2));
        assert_eq!(s.sensor_inits(), 4, "re-initialised after each failure");
        assert_eq!(s.poll_timeout(), Some(155));
    }

    #[test]
    fn a_sensor_that_never_comes_up_is_unhealthy_and_polled_at_the_cap() {
        let mut s = src(&[]);
        s.sensor.fail_init = true;
        let mut now = 0;
        for _ in 0..20 {
            now = s.poll_timeout().unwrap();
            assert_eq!(s.poll_read(now).unwrap_err().kind(), SourceErrorKind::Nack);
        }
        assert!(!s.status().healthy);
        assert_eq!(s.poll_timeout(), Some(now + 40));
        assert_eq!(s.status().faults.nack, 20);
        assert_eq!(s.status().reads, 0);
    }

    impl SensorSource<Scripted> {
        fn sensor_inits(&self) -> u32 {
            self.sensor.inits
        }
    }
}
