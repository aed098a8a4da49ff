//! # mcu-example
//!
//! weir on a sensor node without an allocator: an ADXL345 read through
//! `embedded-hal` 1.0 I2C (any HAL's bus), sampled every 10 ms with bus
//! faults counted and retried ([`weir_boards::source::SensorSource`]), the
//! vibration energy `x² + y² + z²` windowed in 1 s tumbling windows with
//! fixed capacity ([`weir_core::fixed::FixedTumbling`]), each window scored
//! against an EWMA baseline, and alerts sent as CBOR
//! ([`weir_core::fixed::FixedWindow::encode_cbor`]) through an [`Uplink`]
//! (a UART, a LoRa or BLE radio on a real node).
//!
//! The logic is here, target-independent and tested on the host; the
//! firmware entry (`src/main.rs`) only wires a bus, a clock and an uplink.
//!
//! ```
//! use mcu_example::{LastFrame, Node};
//! use weir_boards::sim::{SimAdxl345, SimI2c};
//! let bus = SimI2c::new().with_adxl345(SimAdxl345::new(0x53, 1));
//! let mut node = Node::new(bus, 0x53, LastFrame::default());
//! let mut now = 0;
//! while now < 5_000 {
//!     node.step(now);
//!     now = node.next_wakeup();
//! }
//! assert_eq!(node.stats().samples, 500);
//! assert_eq!(node.stats().windows, 4);
//! ```
#![cfg_attr(not(test), no_std)]

use embedded_hal::i2c::I2c;
use weir_boards::adxl345::{Adxl345, Adxl345Config};
use weir_boards::health::{HealthConfig, SensorStatus};
use weir_boards::regs::I2cRegs;
use weir_boards::source::SensorSource;
use weir_core::fixed::{FixedTumbling, FixedWindow};
use weir_core::seam::Source;

/// Sample period, ms.
pub const PERIOD_MS: i64 = 10;
/// Window size, ms.
pub const WINDOW_MS: i64 = 1_000;
/// Watermark bound, ms: samples come in order from one local clock.
pub const BOUND_MS: i64 = 0;
/// The key windows carry (one sensor, one feature).
pub const KEY: u32 = 0;

/// Where alert frames go.
pub trait Uplink {
    /// Sends one CBOR frame (at most [`FixedWindow::MAX_CBOR`] bytes).
    fn send(&mut self, frame: &[u8]);
}

/// An uplink that keeps only the last frame and counts them (a stand-in
/// for a UART or radio).
#[derive(Clone, Debug, Default)]
pub struct LastFrame {
    /// The last frame sent.
    pub last: heapless::Vec<u8, { FixedWindow::MAX_CBOR }>,
    /// Frames sent.
    pub sent: u32,
}

impl Uplink for LastFrame {
    fn send(&mut self, frame: &[u8]) {
        self.last.clear();
        // Frames are at most MAX_CBOR bytes: this cannot fail.
        let _ = self.last.extend_from_slice(frame);
        self.sent += 1;
    }
}

/// Counters of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Good samples windowed.
    pub samples: u64,
    /// Failed reads (by kind in [`Node::health`]).
    pub faults: u64,
    /// Samples the windows refused (late, full, non-finite).
    pub refused: u64,
    /// Windows closed.
    pub windows: u64,
    /// Alerts sent.
    pub alerts: u64,
}

/// The node: sensor → windows → baseline → alerts. Call [`Node::step`] at
/// [`Node::next_wakeup`] with a millisecond clock; it never blocks and
/// never panics.
pub struct Node<I: I2c, U: Uplink> {
    src: SensorSource<Adxl345<I2cRegs<I>>>,
    windows: FixedTumbling<1, 2>,
    uplink: U,
    stats: NodeStats,
}

impl<I: I2c, U: Uplink> Node<I, U> {
    /// An ADXL345 at `addr` on `i2c`, ±16 g, sampled at 100 Hz; alerts when
    /// a second's mean energy is 4 σ off its EWMA baseline (α 0.1, after 10
    /// windows).
    pub fn new(i2c: I, addr: u8, uplink: U) -> Self {
        let acc = Adxl345::new(
            I2cRegs::new(i2c, addr),
            Adxl345Config {
                range_g: 16,
                rate_hz: 1000.0 / PERIOD_MS as f64,
            },
        );
        let health = HealthConfig {
            unhealthy_after: 5,
            backoff_base: 20,
            backoff_max: 5_000,
        };
        Node {
            src: SensorSource::new(acc, heapless::String::new(), PERIOD_MS, 0, health),
            windows: FixedTumbling::new(WINDOW_MS, BOUND_MS).with_baseline(0.1, 4.0, 10),
            uplink,
            stats: NodeStats::default(),
        }
    }

    /// Does what is due at `now` (ms).
    pub fn step(&mut self, now: i64) {
        match self.src.poll_read(now) {
            Ok(Some(r)) => {
                let energy: f64 = r.values.iter().map(|v| v * v).sum();
                match self.windows.push(KEY, r.ts, energy) {
                    Ok(()) => self.stats.samples += 1,
                    Err(_) => self.stats.refused += 1,
                }
            }
            Ok(None) => {}
            Err(_) => self.stats.faults += 1,
        }
        while let Some(w) = self.windows.poll() {
            self.stats.windows += 1;
            if w.anomaly.is_some_and(|a| a.flag) {
                let mut buf = [0u8; FixedWindow::MAX_CBOR];
                if let Ok(n) = w.encode_cbor(&mut buf) {
                    self.uplink.send(&buf[..n]);
                    self.stats.alerts += 1;
                }
            }
        }
    }

    /// When to call [`Node::step`] next (ms).
    pub fn next_wakeup(&self) -> i64 {
        self.src.poll_timeout().unwrap_or(0)
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// The sensor's health and fault counters.
    pub fn health(&self) -> SensorStatus {
        self.src.status()
    }

    /// The uplink.
    pub fn uplink(&self) -> &U {
        &self.uplink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_boards::sim::{SimAdxl345, SimI2c, SimPart};

    fn run<U: Uplink>(node: &mut Node<SimI2c, U>, until: i64) {
        let mut now = node.next_wakeup();
        while now < until {
            node.step(now);
            now = node.next_wakeup().max(now + 1);
        }
    }

    fn node() -> Node<SimI2c, LastFrame> {
        let bus = SimI2c::new().with_adxl345(SimAdxl345::new(0x53, 3));
        Node::new(bus, 0x53, LastFrame::default())
    }

    #[test]
    fn steady_vibration_raises_no_alert() {
        let mut n = node();
        run(&mut n, 60_000);
        let s = n.stats();
        assert_eq!((s.samples, s.faults, s.refused), (6_000, 0, 0));
        assert_eq!(s.windows, 59, "the last window is still open");
        assert_eq!(s.alerts, 0);
    }

    #[test]
    fn a_jump_in_vibration_is_sent_as_a_cbor_alert() {
        let mut n = node();
        run(&mut n, 30_000);
        assert_eq!(n.stats().alerts, 0);
        // The pump starts shaking four times as hard.
        if let Some(SimPart::Adxl345(p)) = n.src_bus_mut().part_mut(0x53) {
            p.amp = 2.0;
        }
        run(&mut n, 32_000);
        assert!(n.stats().alerts >= 1, "{:?}", n.stats());
        let f = &n.uplink().last;
        assert_eq!(f[0], 0xA9, "a CBOR map of 9 pairs");
        // "a": true at the end: text(1) 'a', simple(21).
        assert_eq!(&f[f.len() - 3..], &[0x61, b'a', 0xF5]);
        // "s": window start 30000 → key 0x61 's', uint16 0x7530.
        let s = f.windows(4).position(|w| w == [0x61, b's', 0x19, 0x75]);
        assert!(s.is_some(), "{f:x?}");
    }

    #[test]
    fn bus_faults_are_counted_backed_off_and_survived() {
        let mut n = node();
        run(&mut n, 1_000);
        n.src_bus_mut().nack_next(0x53, 8);
        run(&mut n, 10_000);
        let h = n.health();
        assert_eq!(h.faults.nack, 8);
        assert_eq!(h.became_unhealthy, 1);
        assert!(h.healthy, "recovered after the faults");
        assert_eq!(n.stats().faults, 8);
        // 8 failures with backoff 20·2^k (capped 5 s): 20+40+…+2560 = 5100 ms
        // + 5000 ms missing → fewer samples than 1000, but reading again.
        assert!((300..500).contains(&n.stats().samples), "{:?}", n.stats());
    }

    impl<U: Uplink> Node<SimI2c, U> {
        /// The simulated bus, through the driver stack.
        fn src_bus_mut(&mut self) -> &mut SimI2c {
            self.src.sensor_mut().bus_mut().bus_mut()
        }
    }
}
