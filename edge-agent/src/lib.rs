//! # weir-agent
//!
//! The gateway side of weir: the `weir` command-line tool and (as it grows)
//! the daemon that subscribes to MQTT, journals, checkpoints and drives
//! [`weir_core`]'s engine.
//!
//! ## Layout
//! - [`bundle`]: the tarball a gateway is flashed with (`weir bundle`).
//! - [`identity`]: Ed25519 device and fleet keys, PEM files.
//! - [`fleet`]: `weir fleet` keygen, sign, push and status (signed pipeline updates).
//! - [`cli`]: the `weir` commands; `main.rs` only calls [`cli::main`].
//! - [`decode`]: MQTT payloads (JSON, CBOR, SenML) → samples; pure, no I/O.
//! - [`pipeline_file`]: the pipeline TOML format, with file:line:column errors.
//! - [`replay`]: a CSV file through a pipeline (`weir replay`).
//! - [`sql`]: Flink SQL pipelines (`.sql`), compiled onto the same plan.
//! - [`gen`]: deterministic synthetic inputs (`weir gen w1`).
//! - [`numfmt`], [`timefmt`]: exact, fast number and date formatting.
//! - [`store`]: the durable ingest journal and checkpoints, in redb.
//! - [`gateway`]: `gateway.toml`, the agent's own configuration.
//! - [`run`]: `weir run`, the MQTT gateway agent (ingest, journal,
//!   engine, outputs, checkpoints, metrics).
//!
//! ## Example
//! ```
//! let pf = weir_agent::pipeline_file::parse("w1.toml", include_str!("../../examples/w1.toml")).unwrap();
//! let mut csv = Vec::new();
//! weir_agent::gen::W1::new(50_000, 1).write(&mut csv).unwrap();
//! let mut out = Vec::new();
//! let (summary, _engine) = weir_agent::replay::replay(&pf, 0, &csv[..], &mut out, |_, _| {}).unwrap();
//! assert_eq!(summary.rows, 50_000);
//! assert_eq!(summary.bad_rows, 0);
//! assert!(summary.windows >= 4_000);
//! ```

#[cfg(feature = "host-tools")]
pub mod bundle;
pub mod check_store;
pub mod cli;
pub mod decode;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "host-tools")]
pub mod fleet;
pub mod fsutil;
pub mod functions;
pub mod gateway;
pub mod gen;
pub mod identity;
pub mod log;
pub mod numfmt;
pub mod pipeline_file;
pub mod replay;
pub mod run;
pub mod sql;
pub mod store;
pub mod timefmt;
