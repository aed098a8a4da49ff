//! # weir-core
//!
//! The sans-IO heart of weir, a stream runtime for edge gateways: event time
//! and watermarks, keyed windows and aggregates, anomaly detectors, keyed
//! state with a budget, and versioned snapshots. It reads no clock, opens no
//! file or socket and spawns nothing, so the same calls always give the same
//! outputs: that is what makes crash recovery by replay exact.
//!
//! ## Layout
//! - [`time`]: timestamps, time modes, watermarks.
//! - [`agg`]: incremental, mergeable aggregates (Welford/Pébay moments).
//! - [`detect`]: per-key anomaly detectors.
//! - `spec` / `engine` / `window` / `snapshot` (feature `alloc`): the pipeline
//!   description and builder, the engine, the window operator, snapshots.
//! - `expr` (feature `alloc`): scalar expressions over a row (SQL's
//!   `WHERE`, `HAVING` and projections), three-valued logic.
//! - [`seam`]: the `Source`, `CheckpointStore` and `Clock` traits the
//!   drivers around the engine implement.
//! - [`fixed`]: a fixed-capacity keyed tumbling window for targets without an
//!   allocator (microcontrollers).
//!
//! ## Example
//! ```
//! use weir_core::prelude::*;
//! let mut engine = PipelineBuilder::new("demo")
//!     .source(SourceSpec::new("temp", ["celsius"]).out_of_orderness(1_000))
//!     .window("t10s", "temp", "celsius", WindowKind::Tumbling { size: 10_000 })
//!     .aggregate([AggKind::Count, AggKind::Mean])
//!     .done()
//!     .build()?;
//! let t0 = 1_700_000_000_000;
//! for i in 0..30 {
//!     engine.handle_sample(t0 + i * 1000, 0, "pump-1", t0 + i * 1000, &[20.0 + i as f64]).unwrap();
//! }
//! engine.handle_end_of_input();
//! let mut windows = 0;
//! while let Some(Output::Window(w)) = engine.poll_output() {
//!     assert_eq!(w.values.as_slice()[0], 10.0);
//!     windows += 1;
//! }
//! assert_eq!(windows, 3);
//! # Ok::<(), weir_core::BuildError>(())
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod agg;
pub mod detect;
pub mod fixed;
pub mod seam;
pub mod sketch;
pub mod time;

#[cfg(feature = "alloc")]
pub mod distinct;
#[cfg(feature = "alloc")]
pub mod engine;
#[cfg(feature = "alloc")]
pub mod expr;
#[cfg(feature = "alloc")]
pub mod keys;
#[cfg(feature = "alloc")]
pub mod output;
#[cfg(feature = "alloc")]
pub mod process;
#[cfg(feature = "alloc")]
pub mod snapshot;
#[cfg(feature = "alloc")]
pub mod spec;
#[cfg(feature = "alloc")]
pub mod timefn;
#[cfg(feature = "alloc")]
pub mod window;

#[cfg(feature = "alloc")]
pub use spec::BuildError;

/// The names most programs need.
#[cfg(feature = "alloc")]
pub mod prelude {
    pub use crate::agg::AggKind;
    pub use crate::detect::{DetectorSpec, Verdict};
    pub use crate::engine::{Engine, Eviction, Reject};
    pub use crate::output::{Emission, Output, WindowResult};
    pub use crate::spec::{
        FullPolicy, PipelineBuilder, PipelineSpec, SampleOrder, SourceSpec, StateSpec, TimeSpec,
        WatermarkMode, WindowKind,
    };
    pub use crate::time::{TimeMode, TimeUnit, Watermark};
}
