//! `weir-cloud-sync`: the gateway's link to the cloud.
//!
//! Uplink: outputs bound for the cloud go into a durable [`outbox`] in the
//! agent's redb database (in the same write transaction as its checkpoint,
//! where it can), and the [`uplink`] publishes them in batches ([`wire`]
//! envelopes, CBOR) with QoS 1 to the cloud broker, deleting them only once
//! the broker has acknowledged them. Downlink: [`update`] signs and verifies
//! pipeline updates (Ed25519 over canonical bytes) and encodes the status a
//! gateway reports.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | [`wire::OutputRecord`], [`wire::Batch`]: CBOR and JSON, documented in `docs/wire.md` |
//! | [`outbox`] | [`outbox::Outbox`]: stage in the agent's redb transaction, read pending, acknowledge, disk budget |
//! | [`uplink`] | [`uplink::Uplink::start`]: batches the outbox to the cloud broker (rumqttc, QoS 1, TLS), republishes after reconnects, bandwidth cap, counters |
//! | [`update`] | [`update::sign`], [`update::verify`], [`update::UpdateRejection`], [`update::Status`] |
//!
//! # How the agent uses it
//!
//! 1. `Outbox::open(&db, OutboxConfig::new(gateway, budget))` once, on the
//!    agent's redb [`Database`](redb::Database) (shared as an `Arc`).
//! 2. On each checkpoint (or journal group) commit: build
//!    [`wire::OutputRecord`]s (e.g. [`wire::OutputRecord::from_window`]),
//!    call [`outbox::Outbox::stage`] with the same write transaction, commit,
//!    then [`outbox::Outbox::notify`].
//! 3. `Uplink::start(UplinkConfig::new(gateway, host, port), db, outbox)`
//!    inside the tokio runtime; read [`uplink::Uplink::counters`] for
//!    metrics; [`uplink::Uplink::shutdown`] on exit.
//! 4. For each message on `weir/<gateway>/pipeline/set`:
//!    [`update::verify`], then validate the pipeline (reject with
//!    [`update::UpdateRejection::InvalidPipeline`]), and publish an
//!    [`update::Status`] retained on `weir/<gateway>/pipeline/status`.
//!
//! # Example
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use weir_cloud_sync::update::{self, UpdateRejection};
//! use weir_cloud_sync::wire::{Batch, OutputRecord, RecordKind, record_id};
//!
//! // A fleet operator signs version 2 of a pipeline for gateway gw1 ...
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let doc = update::sign(&key, "[pipeline]\nname = \"w1\"\n", 2, &["gw1".to_string()]);
//! // ... and gw1, running version 1, accepts it; a replay is refused.
//! let trusted = [key.verifying_key()];
//! let ok = update::verify(&doc, &trusted, "gw1", 1, 64 * 1024).unwrap();
//! assert_eq!(ok.version, 2);
//! let replay = update::verify(&doc, &trusted, "gw1", 2, 64 * 1024).unwrap_err();
//! assert_eq!(replay.reason(), "not_newer");
//!
//! // A window's aggregates, in the envelope the cloud reads.
//! let rec = OutputRecord {
//!     id: record_id("gw1", "w", "s1", 10_000, 0),
//!     kind: RecordKind::Window,
//!     key: "s1".into(),
//!     op: "w".into(),
//!     start: 10_000,
//!     end: 20_000,
//!     fields: vec![("count".into(), 500.0), ("mean".into(), 21.5)],
//!     anomaly: None,
//!     emitted_at: 20_002,
//!     text: Vec::new(),
//! };
//! let batch = Batch { gateway: "gw1".into(), records: vec![rec] };
//! let bytes = batch.to_cbor();
//! assert_eq!(Batch::from_cbor(&bytes).unwrap(), batch);
//! assert!(Batch::from_cbor(&bytes[..bytes.len() - 1]).is_err());
//! ```

mod cbor;
pub mod outbox;
pub mod update;
pub mod uplink;
pub mod wire;
