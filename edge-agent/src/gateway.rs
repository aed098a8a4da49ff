//! `gateway.toml`: how `weir run` connects and where it keeps its data.
//!
//! Every key has a default, so an empty file is a valid gateway that talks
//! to `mqtt://127.0.0.1:1883` and runs `pipeline.toml` beside it. Paths are
//! relative to the file. Errors name `file:line:column` and say what to do.
//!
//! ```toml
//! id = "pump-station-7"          # gateway id: topics, output ids (default: host name)
//! pipeline = "pipeline.toml"     # the pipeline file
//! data_dir = "weir-data"         # journal, checkpoints, dead letters (one redb file)
//! board = "board.toml"           # optional: a board profile whose wired sensors feed the pipeline
//! durability = "journal"         # journal (default) | checkpoint
//!
//! [broker]                       # the local broker the sensors publish to
//! url = "mqtt://127.0.0.1:1883"  # mqtt://host:port or mqtts://host:port (TLS)
//! client_id = "weir-pump-station-7"
//! username = "weir"              # optional, with password or password_file
//! password_file = "/etc/weir/broker.pass"
//! ca = "ca.pem"                  # TLS: server CA (PEM); cert + key for mutual TLS
//! keep_alive = "30s"
//! max_packet = 1048576           # bytes, both directions (rumqttc's default is 10 KiB)
//! inflight = 100                 # outgoing QoS 1 publishes in flight
//! protocol = 4                   # 4 (MQTT 3.1.1, default) or 5
//! max_held = "16MiB"             # incoming payloads held while acks are written;
//!                                # past it QoS 1 messages wait for the broker's
//!                                # redelivery after a reconnect
//!
//! [journal]
//! group_commit = "10ms"          # longest wait before a commit (acks wait for it)
//! group_records = 2000           # commit once this many messages (16× as many records) are staged
//!
//! [checkpoint]
//! interval = "10s"
//!
//! [output]
//! format = "json"                # json | cbor
//! windows = true                 # publish every window result, not only alerts
//! prefix = "weir"                # topics: <prefix>/<id>/windows/<key>, …/alerts/<key>
//!
//! [metrics]
//! listen = "127.0.0.1:9464"      # the page (/), /api/v1, /metrics, /healthz; "" turns it off
//!
//! [dashboard]
//! token_file = "dashboard.token" # who may acknowledge alerts (and read dead-letter
//!                                # payloads off loopback); made (0600, random) if missing.
//!                                # A listener off loopback needs it (or `token`).
//! max_series = 2000              # (key, operator) series charted (~1.5 KB each)
//!
//! [dead_letters]
//! keep = 1000                    # the newest this many bad messages are kept
//!
//! [storage]                      # the flash write budget (docs/agent.md); defaults for an SD card
//! write_budget = "2GiB"          # device bytes the store may write per day; "off" = no budget
//! endurance = "4TB"              # the card's rated total bytes written (TBW)
//! warn_days = 365                # /healthz warns when the predicted card life is shorter
//! max_ack_delay = "5s"           # longest group commit the budget may stretch to
//! window = "10m"                 # the write rate is measured over this (at least 2 × max_ack_delay)
//!
//! [cloud]                        # the uplink to the cloud broker; absent = none
//! url = "mqtts://iot.example.com:8883"
//! client_id = "weir-pump-station-7-cloud"
//! topic = "weir/pump-station-7/up"   # where batches go (default weir/<id>/up)
//! ca = "cloud-ca.pem"            # cert + key for mutual TLS, username + password(_file)
//! encoding = "cbor"              # cbor | json (docs/wire.md)
//! budget = 67108864              # outbox disk budget, bytes (alerts kept before windows)
//! bandwidth = 2048               # bytes/s cap for metered links (default: none)
//! burst = 65536                  # bytes that may go at once after a quiet period
//! batch_records = 500            # records per message at most
//! batch_bytes = 65536            # payload bytes per message at most
//! inflight = 8                   # unacknowledged batches at most
//! keep_alive = "30s"
//! backoff_min = "500ms"          # reconnect backoff (doubling, with jitter)
//! backoff_max = "60s"
//!
//! [updates]                      # signed pipeline updates on weir/<id>/pipeline/set
//! trusted_keys = ["fleet.pub"]   # Ed25519 public keys (PEM); none = updates off
//! max_bytes = 262144             # largest update document
//! via = "cloud"                  # cloud (default with [cloud]) | local
//! health_check = "30s"           # how long a new pipeline is watched
//! max_errors = 100               # bad inputs + engine rejects that fail it
//! ```
//!
//! `[storage]` is on by default. Its defaults are for a consumer SD card:
//! a 32 GB card rated for ~125 full-card writes (4 TB; SD cards write
//! small commits with a large internal amplification, so their ratings
//! are low) at 2 GiB a day lasts ~5 years. `endurance` is total bytes
//! written, as industrial cards are rated (TBW); for a card rated in
//! full-card writes (P/E cycles), write its size times that number
//! (`"32GB"` × 3,000 = `"96TB"`). Sizes are bytes or a number with `B`,
//! `kB`, `MB`, `GB`, `TB` (powers of 1,000) or `KiB`, `MiB`, `GiB`,
//! `TiB` (powers of 1,024).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use weir_core::time::TimeUnit;

use crate::pipeline_file::{ConfigError, Ctx, Dur};
use crate::store::DurabilityMode;

/// Output payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON object per output.
    Json,
    /// One CBOR map per output (the same fields).
    Cbor,
}

/// The local broker connection.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// MQTT client id (the persistent session is keyed by it).
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password (read from `password_file` if given there).
    pub password: Option<String>,
    /// Server CA certificates (PEM), for TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    pub key: Option<PathBuf>,
    /// MQTT keep-alive, ms.
    pub keep_alive_ms: u64,
    /// Largest packet, bytes, both directions.
    pub max_packet: usize,
    /// Outgoing QoS 1 publishes in flight.
    pub inflight: u16,
    /// MQTT protocol version: 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Payload bytes of incoming messages held while ingest waits for its
    /// acknowledgements to be written; past them QoS 1 messages are left
    /// to the broker's redelivery (`max_held`, default 16 MiB).
    pub max_held: usize,
}

/// `[broker] max_held` when not given: 16 MiB.
pub const DEFAULT_MAX_HELD: usize = 16 << 20;

/// A parsed, validated `gateway.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// The file it was read from (for messages).
    pub file: String,
    /// Gateway id.
    pub id: String,
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// A board profile whose wired sensors (I2C/SPI, or simulated) feed
    /// the pipeline beside MQTT.
    pub board: Option<PathBuf>,
    /// Journal or checkpoints only.
    pub durability: DurabilityMode,
    /// The local broker.
    pub broker: BrokerConfig,
    /// Longest wait before a group commit, ms.
    pub group_commit_ms: u64,
    /// Messages that close a group early (or 16 times as many records,
    /// for packs of many readings).
    pub group_records: usize,
    /// Checkpoint interval, ms.
    pub checkpoint_ms: u64,
    /// Output payload format.
    pub output_format: OutputFormat,
    /// Publish window results (alerts are always published).
    pub publish_windows: bool,
    /// Topic prefix.
    pub prefix: String,
    /// Metrics address; `None` turns the endpoint off.
    pub metrics: Option<SocketAddr>,
    /// `[dashboard]`: the page and its API on the metrics listener.
    pub dashboard: DashboardConfig,
    /// Dead letters kept.
    pub dead_letters: usize,
    /// The cloud uplink, if configured.
    pub cloud: Option<CloudConfig>,
    /// Signed pipeline updates.
    pub updates: UpdatesConfig,
    /// The flash write budget (`[storage]`).
    pub storage: StorageConfig,
}

/// `[storage]`: the flash write budget and the card's endurance
/// (`weir_agent::run::budget`).
#[derive(Clone, Debug, PartialEq)]
pub struct StorageConfig {
    /// Device bytes the store may write per day; `None`: no budget (the
    /// configured intervals always hold).
    pub write_budget: Option<u64>,
    /// The card's rated endurance: total bytes written over its life.
    pub endurance_bytes: u64,
    /// `/healthz` warns when the predicted card life is shorter than this
    /// many days (0: never).
    pub warn_days: u64,
    /// Longest group commit interval the budget may stretch to, ms (an
    /// acknowledgement waits at most this plus the commit itself).
    pub max_ack_delay_ms: u64,
    /// The write rate is measured, and the intervals decided, over windows
    /// of this many ms.
    pub window_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            write_budget: Some(2 << 30),
            endurance_bytes: 4_000_000_000_000,
            warn_days: 365,
            max_ack_delay_ms: 5_000,
            window_ms: 600_000,
        }
    }
}

/// Envelope encoding on the cloud link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudEncoding {
    /// CBOR (default).
    Cbor,
    /// JSON.
    Json,
}

/// `[cloud]`: the uplink to the cloud broker.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudConfig {
    /// The connection (host, port, TLS files, credentials, client id,
    /// keep-alive).
    pub broker: BrokerConfig,
    /// Topic the batches go to.
    pub topic: String,
    /// Envelope encoding.
    pub encoding: CloudEncoding,
    /// Outbox disk budget, bytes.
    pub budget_bytes: u64,
    /// Bandwidth cap (bytes/s, burst bytes).
    pub bandwidth: Option<(u64, u64)>,
    /// Records per batch at most.
    pub batch_records: usize,
    /// Payload bytes per batch at most.
    pub batch_bytes: usize,
    /// Unacknowledged batches at most.
    pub inflight: u16,
    /// First reconnect delay, ms.
    pub backoff_min_ms: u64,
    /// Largest reconnect delay, ms.
    pub backoff_max_ms: u64,
}

/// Which broker pipeline updates arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdatesVia {
    /// The cloud broker of `[cloud]`.
    Cloud,
    /// The local broker of `[broker]`.
    Local,
}

/// `[dashboard]`: the technician's page on the metrics listener.
#[derive(Clone, Debug, PartialEq)]
pub struct DashboardConfig {
    /// The token, given inline (`token`).
    pub token: Option<String>,
    /// Where the token is kept (`token_file`; default `dashboard.token` in
    /// the data directory, made with a random token if missing).
    pub token_file: PathBuf,
    /// (key, operator) series charted at most.
    pub max_series: usize,
}

/// `[updates]`: signed pipeline updates.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdatesConfig {
    /// Trusted Ed25519 public keys (PEM files); empty: updates are off.
    pub trusted_keys: Vec<PathBuf>,
    /// Largest update document, bytes.
    pub max_bytes: usize,
    /// Where updates come from.
    pub via: UpdatesVia,
    /// How long a new pipeline is watched before it counts as applied, ms.
    pub health_ms: u64,
    /// Bad inputs plus engine rejects during the health check that fail it.
    pub max_errors: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<Spanned<String>>,
    pipeline: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    board: Option<Spanned<String>>,
    durability: Option<Spanned<String>>,
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    checkpoint: RawCheckpoint,
    #[serde(default)]
    output: RawOutput,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    dashboard: RawDashboard,
    #[serde(default)]
    dead_letters: RawDead,
    cloud: Option<Spanned<RawCloud>>,
    #[serde(default)]
    updates: RawUpdates,
    #[serde(default)]
    storage: RawStorage,
}

/// A size as written: bytes, or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Int(i64),
    Str(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    write_budget: Option<Spanned<SizeValue>>,
    endurance: Option<Spanned<SizeValue>>,
    warn_days: Option<Spanned<i64>>,
    max_ack_delay: Option<Dur>,
    window: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    keep_alive: Option<Dur>,
    budget: Option<Spanned<i64>>,
    bandwidth: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    batch_records: Option<Spanned<i64>>,
    batch_bytes: Option<Spanned<i64>>,
    inflight: Option<Spanned<i64>>,
    backoff_min: Option<Dur>,
    backoff_max: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpdates {
    trusted_keys: Option<Vec<Spanned<String>>>,
    max_bytes: Option<Spanned<i64>>,
    via: Option<Spanned<String>>,
    health_check: Option<Dur>,
    max_errors: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    keep_alive: Option<Dur>,
    max_packet: Option<Spanned<i64>>,
    inflight: Option<Spanned<i64>>,
    protocol: Option<Spanned<i64>>,
    max_held: Option<Spanned<SizeValue>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    group_commit: Option<Dur>,
    group_records: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    interval: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    format: Option<Spanned<String>>,
    windows: Option<bool>,
    prefix: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    max_series: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDead {
    keep: Option<Spanned<i64>>,
}

/// Reads and validates a gateway file.
///
/// # Errors
/// The file cannot be read, is not TOML, or has a bad value; the error
/// says where and what to do.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read the gateway file: {e}"),
        help: "check the path passed with --config".into(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&file, &text, base)
}

/// A topic level must not hold wildcards or separators.
fn check_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

/// The host name, for the default gateway id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| check_level(s))
        .unwrap_or_else(|| "gateway".into())
}

/// Parses gateway text; relative paths are taken against `base`.
///
/// # Errors
/// See [`load`].
pub fn parse(file: &str, text: &str, base: &Path) -> Result<GatewayConfig, ConfigError> {
    let ctx = Ctx { file, text };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        ctx.err(
            e.span(),
            e.message().trim(),
            "see the gateway.toml format in `weir_agent::gateway` (docs/agent.md)",
        )
    })?;
    let path = |s: &str| rel(base, s);
    let id = gateway_id(&ctx, &raw.id)?;
    let durability = durability(&ctx, &raw.durability)?;
    let broker = broker_config(&ctx, base, &id, &raw.broker)?;
    let (output_format, prefix) = output_config(&ctx, &raw.output)?;
    let metrics = metrics_config(&ctx, &raw.metrics)?;
    let data_dir = path(raw.data_dir.as_ref().map_or("weir-data", |p| p.get_ref()));
    let dashboard = dashboard_config(&ctx, base, &data_dir, &raw.dashboard, metrics)?;
    let cloud = match &raw.cloud {
        None => None,
        Some(c) => Some(cloud_config(&ctx, base, &id, c)?),
    };
    let updates = updates_config(&ctx, base, &raw.updates, cloud.is_some())?;
    let group_commit_ms = ms(&ctx, &raw.journal.group_commit, 10, 0, "group_commit")?;
    let storage = storage_config(&ctx, &raw.storage, group_commit_ms)?;
    Ok(GatewayConfig {
        storage,
        cloud,
        updates,
        file: file.to_string(),
        pipeline: path(
            raw.pipeline
                .as_ref()
                .map_or("pipeline.toml", |p| p.get_ref()),
        ),
        data_dir,
        dashboard,
        board: raw.board.as_ref().map(|b| path(b.get_ref())),
        id,
        durability,
        broker,
        group_commit_ms,
        group_records: range_int(
            &ctx,
            &raw.journal.group_records,
            1,
            1_000_000,
            2_000,
            "group_records",
        )? as usize,
        checkpoint_ms: ms(
            &ctx,
            &raw.checkpoint.interval,
            10_000,
            100,
            "checkpoint interval",
        )?,
        output_format,
        publish_windows: raw.output.windows.unwrap_or(true),
        prefix,
        metrics,
        dead_letters: range_int(&ctx, &raw.dead_letters.keep, 0, 1_000_000, 1_000, "keep")?
            as usize,
    })
}

/// `id`: one MQTT topic level, the host name by default.
fn gateway_id(ctx: &Ctx<'_>, id: &Option<Spanned<String>>) -> Result<String, ConfigError> {
    Ok(match &id {
        Some(s) if !check_level(s.get_ref()) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("gateway id `{}` cannot be an MQTT topic level", s.get_ref()),
                "use letters, digits, `-` or `_`; no `/`, `+` or `#`",
            ))
        }
        Some(s) => s.get_ref().clone(),
        None => host_name(),
    })
}

/// `durability`: `journal` (the default) or `checkpoint`.
fn durability(ctx: &Ctx<'_>, d: &Option<Spanned<String>>) -> Result<DurabilityMode, ConfigError> {
    Ok(match d {
        None => DurabilityMode::Journal,
        Some(s) => s.get_ref().parse().map_err(|e: String| {
            ctx.err(
                Some(s.span()),
                e,
                "journal: nothing acknowledged is lost; checkpoint: fewer flash writes, a crash loses the samples since the last checkpoint",
            )
        })?,
    })
}

/// A `url` of `[broker]` or `[cloud]`: host, port and whether it is TLS.
fn broker_url(ctx: &Ctx<'_>, u: &Spanned<String>) -> Result<(String, u16, bool), ConfigError> {
    parse_url(u.get_ref()).ok_or_else(|| {
        ctx.err(
            Some(u.span()),
            format!("`{}` is not a broker URL", u.get_ref()),
            "write mqtt://HOST:PORT or mqtts://HOST:PORT (TLS); the port defaults to 1883 / 8883",
        )
    })
}

/// What `[broker]` and `[cloud]` share: how to log in to a broker.
struct Login<'a> {
    /// The table's name, for messages.
    table: &'static str,
    /// The table's span, where a message has no better place.
    table_span: Option<std::ops::Range<usize>>,
    /// The URL is `mqtts://`.
    tls: bool,
    url: Option<&'a Spanned<String>>,
    username: &'a Option<String>,
    password: &'a Option<String>,
    password_file: &'a Option<Spanned<String>>,
    ca: &'a Option<Spanned<String>>,
    cert: &'a Option<Spanned<String>>,
    key: &'a Option<Spanned<String>>,
}

/// The password (inline or from `password_file`) and the TLS files
/// (relative to `base`) of a [`Login`], checked: one password source, a
/// username with a password, readable PEM files, `cert` with `key`, TLS
/// files only with `mqtts://`.
#[allow(clippy::type_complexity)]
fn login(
    ctx: &Ctx<'_>,
    base: &Path,
    l: Login<'_>,
) -> Result<
    (
        Option<String>,
        Option<PathBuf>,
        Option<PathBuf>,
        Option<PathBuf>,
    ),
    ConfigError,
> {
    let password = match (l.password, l.password_file) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                Some(f.span()),
                "both password and password_file are set",
                "keep one of them",
            ))
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(rel(base, f.get_ref()))
                .map_err(|e| {
                    ctx.err(
                        Some(f.span()),
                        format!("cannot read password_file `{}`: {e}", f.get_ref()),
                        "check the path (relative paths are taken from the gateway file's folder)",
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        (None, None) => None,
    };
    if password.is_some() && l.username.is_none() {
        return Err(ctx.err(
            l.password_file
                .as_ref()
                .map(|f| f.span())
                .or(l.table_span.clone()),
            "a password without a username",
            format!("add `username = \"…\"` to [{}]", l.table),
        ));
    }
    let file_opt = |o: &Option<Spanned<String>>| -> Result<Option<PathBuf>, ConfigError> {
        match o {
            None => Ok(None),
            Some(s) => {
                let p = rel(base, s.get_ref());
                if p.is_file() {
                    Ok(Some(p))
                } else {
                    Err(ctx.err(
                        Some(s.span()),
                        format!("`{}` is not a readable file", p.display()),
                        "give the path of a PEM file (relative paths are taken from the gateway file's folder)",
                    ))
                }
            }
        }
    };
    let (ca, cert, key) = (file_opt(l.ca)?, file_opt(l.cert)?, file_opt(l.key)?);
    if cert.is_some() != key.is_some() {
        return Err(ctx.err(
            l.cert.as_ref().or(l.key.as_ref()).map(|s| s.span()),
            "mutual TLS needs both `cert` and `key`",
            "set both, or neither",
        ));
    }
    if (ca.is_some() || cert.is_some()) && !l.tls {
        return Err(ctx.err(
            l.url.map(|s| s.span()),
            format!("TLS files are set but the {} URL is not mqtts://", l.table),
            "write the url as mqtts://HOST:PORT",
        ));
    }
    Ok((password, ca, cert, key))
}

/// `[broker]`: the URL, login and TLS files (relative to `base`), the
/// MQTT session settings; `id` names the default client id.
fn broker_config(
    ctx: &Ctx<'_>,
    base: &Path,
    id: &str,
    b: &RawBroker,
) -> Result<BrokerConfig, ConfigError> {
    let (host, port, tls) = match &b.url {
        None => ("127.0.0.1".to_string(), 1883, false),
        Some(u) => broker_url(ctx, u)?,
    };
    let (password, ca, cert, key) = login(
        ctx,
        base,
        Login {
            table: "broker",
            table_span: None,
            tls,
            url: b.url.as_ref(),
            username: &b.username,
            password: &b.password,
            password_file: &b.password_file,
            ca: &b.ca,
            cert: &b.cert,
            key: &b.key,
        },
    )?;
    Ok(BrokerConfig {
        host,
        port,
        tls,
        client_id: match &b.client_id {
            Some(c) if c.get_ref().is_empty() || c.get_ref().len() > 128 => {
                return Err(ctx.err(
                    Some(c.span()),
                    "client_id must be 1 to 128 bytes",
                    "leave it out to use weir-<id>",
                ))
            }
            Some(c) => c.get_ref().clone(),
            None => format!("weir-{id}"),
        },
        username: b.username.clone(),
        password,
        ca,
        cert,
        key,
        keep_alive_ms: ms(ctx, &b.keep_alive, 30_000, 5_000, "keep_alive")?,
        max_packet: range_int(ctx, &b.max_packet, 1024, 256 << 20, 1 << 20, "max_packet")? as usize,
        inflight: range_int(ctx, &b.inflight, 1, 65_535, 100, "inflight")? as u16,
        max_held: match &b.max_held {
            None => DEFAULT_MAX_HELD,
            Some(v) => {
                let n = size(ctx, v, "max_held")?;
                if !(1024..=1 << 30).contains(&n) {
                    return Err(ctx.err(
                        Some(v.span()),
                        format!("max_held = {n} bytes is out of range"),
                        "give 1KiB to 1GiB (default \"16MiB\")",
                    ));
                }
                n as usize
            }
        },
        protocol: match &b.protocol {
            None => 4,
            Some(p) if matches!(p.get_ref(), 4 | 5) => *p.get_ref() as u8,
            Some(p) => {
                return Err(ctx.err(
                    Some(p.span()),
                    format!(
                        "protocol = {} is not an MQTT version weir speaks",
                        p.get_ref()
                    ),
                    "use 4 (MQTT 3.1.1, the default) or 5",
                ))
            }
        },
    })
}

/// `[output]`: the payload format and the topic prefix.
fn output_config(ctx: &Ctx<'_>, o: &RawOutput) -> Result<(OutputFormat, String), ConfigError> {
    let format = match o.format.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("json", _)) => OutputFormat::Json,
        Some(("cbor", _)) => OutputFormat::Cbor,
        Some((o, s)) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("unknown output format `{o}`"),
                "use json or cbor",
            ))
        }
    };
    let prefix = match &o.prefix {
        Some(p) if !check_level(p.get_ref()) => {
            return Err(ctx.err(
                Some(p.span()),
                format!("prefix `{}` must be one topic level", p.get_ref()),
                "no `/`, `+` or `#`",
            ))
        }
        Some(p) => p.get_ref().clone(),
        None => "weir".into(),
    };
    Ok((format, prefix))
}

/// `[metrics] listen`: the default loopback port, `""` for off.
fn metrics_config(ctx: &Ctx<'_>, m: &RawMetrics) -> Result<Option<SocketAddr>, ConfigError> {
    Ok(match &m.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) => Some(s.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(s.span()),
                format!("`{}` is not an address with a port", s.get_ref()),
                "write e.g. \"127.0.0.1:9464\" (or \"\" to turn metrics off)",
            )
        })?),
    })
}

/// `[dashboard]`. A listener off loopback serves sensor data to the
/// network: it needs a token there (the page is read-only without it).
fn dashboard_config(
    ctx: &Ctx<'_>,
    base: &Path,
    data_dir: &Path,
    d: &RawDashboard,
    listen: Option<SocketAddr>,
) -> Result<DashboardConfig, ConfigError> {
    let token = match &d.token {
        Some(t) if t.get_ref().len() < 16 => return Err(ctx.err(
            Some(t.span()),
            "the dashboard token is shorter than 16 characters",
            "use a long random one, e.g. `openssl rand -hex 16`, or leave it out to have one made",
        )),
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    let token_file = match &d.token_file {
        Some(f) => rel(base, f.get_ref()),
        None => data_dir.join("dashboard.token"),
    };
    let max_series = match &d.max_series {
        None => 2_000,
        Some(n) if (0..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err(ctx.err(
                Some(n.span()),
                format!("max_series = {}", n.get_ref()),
                "use 0 (no charts) to 1000000; each series costs about 1.5 KB",
            ))
        }
    };
    if let Some(a) = listen {
        if !a.ip().is_loopback() && token.is_none() && d.token_file.is_none() {
            return Err(ctx.err(
                None,
                format!("[metrics] listen = \"{a}\" serves the dashboard and its API beyond this machine, without a token"),
                "add [dashboard] token = \"…\" (or token_file) so only holders can acknowledge alerts and read payloads, and put TLS in front (docs/api.md); or listen on 127.0.0.1",
            ));
        }
    }
    Ok(DashboardConfig {
        token,
        token_file,
        max_series,
    })
}

fn rel(base: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn range_int(
    ctx: &Ctx<'_>,
    v: &Option<Spanned<i64>>,
    lo: i64,
    hi: i64,
    dflt: i64,
    what: &str,
) -> Result<i64, ConfigError> {
    match v {
        None => Ok(dflt),
        Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
        Some(s) => Err(ctx.err(
            Some(s.span()),
            format!("{what} = {} is out of range", s.get_ref()),
            format!("use a value from {lo} to {hi}"),
        )),
    }
}

fn ms(ctx: &Ctx<'_>, d: &Option<Dur>, dflt: u64, lo: u64, what: &str) -> Result<u64, ConfigError> {
    match d {
        None => Ok(dflt),
        Some(d) => {
            let v = ctx.duration(d, TimeUnit::Millis, what)? as u64;
            if v < lo {
                Err(ctx.err(
                    Some(d.span()),
                    format!("{what} of {v} ms is too short"),
                    format!("use at least {lo} ms"),
                ))
            } else {
                Ok(v)
            }
        }
    }
}

/// `[cloud]`.
fn cloud_config(
    ctx: &Ctx<'_>,
    base: &Path,
    id: &str,
    t: &Spanned<RawCloud>,
) -> Result<CloudConfig, ConfigError> {
    let c = t.get_ref();
    let (host, port, tls) = match &c.url {
        None => {
            return Err(ctx.err(
                Some(t.span()),
                "[cloud] has no url",
                "add url = \"mqtts://HOST:PORT\" (or mqtt:// without TLS), or remove [cloud] to run without a cloud link",
            ))
        }
        Some(u) => broker_url(ctx, u)?,
    };
    let (password, ca, cert, key) = login(
        ctx,
        base,
        Login {
            table: "cloud",
            table_span: Some(t.span()),
            tls,
            url: c.url.as_ref(),
            username: &c.username,
            password: &c.password,
            password_file: &c.password_file,
            ca: &c.ca,
            cert: &c.cert,
            key: &c.key,
        },
    )?;
    if tls && ca.is_none() {
        return Err(ctx.err(
            c.url.as_ref().map(|s| s.span()),
            "mqtts:// needs the server's CA certificate",
            "add ca = \"ca.pem\" to [cloud]",
        ));
    }
    let client_id = match &c.client_id {
        Some(s) if s.get_ref().is_empty() || s.get_ref().len() > 128 => {
            return Err(ctx.err(
                Some(s.span()),
                "client_id must be 1 to 128 bytes",
                "leave it out to use weir-<id>-cloud",
            ))
        }
        Some(s) => s.get_ref().clone(),
        None => format!("weir-{id}-cloud"),
    };
    let topic = match &c.topic {
        Some(s) if s.get_ref().is_empty() || s.get_ref().contains(['+', '#', '\0']) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("`{}` is not a topic to publish to", s.get_ref()),
                "no wildcards (`+`, `#`); leave it out to use weir/<id>/up",
            ))
        }
        Some(s) => s.get_ref().clone(),
        None => format!("weir/{id}/up"),
    };
    let encoding = match c.encoding.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("cbor", _)) => CloudEncoding::Cbor,
        Some(("json", _)) => CloudEncoding::Json,
        Some((o, s)) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("unknown encoding `{o}`"),
                "use cbor or json",
            ))
        }
    };
    let bandwidth = match &c.bandwidth {
        None => {
            if let Some(b) = &c.burst {
                return Err(ctx.err(
                    Some(b.span()),
                    "burst without bandwidth",
                    "set bandwidth (bytes/s) too, or remove burst",
                ));
            }
            None
        }
        Some(_) => {
            let bps = range_int(ctx, &c.bandwidth, 1, 1 << 40, 0, "bandwidth")? as u64;
            let burst = range_int(
                ctx,
                &c.burst,
                1,
                1 << 40,
                (bps as i64).max(64 * 1024),
                "burst",
            )? as u64;
            Some((bps, burst))
        }
    };
    let backoff_min_ms = ms(ctx, &c.backoff_min, 500, 10, "backoff_min")?;
    let backoff_max_ms = ms(ctx, &c.backoff_max, 60_000, 10, "backoff_max")?;
    if backoff_max_ms < backoff_min_ms {
        return Err(ctx.err(
            c.backoff_max.as_ref().map(|d| d.span()),
            "backoff_max is shorter than backoff_min",
            "make backoff_max at least backoff_min",
        ));
    }
    Ok(CloudConfig {
        broker: BrokerConfig {
            host,
            port,
            tls,
            client_id,
            username: c.username.clone(),
            password,
            ca,
            cert,
            key,
            keep_alive_ms: ms(ctx, &c.keep_alive, 30_000, 1_000, "keep_alive")?,
            max_packet: 1 << 20,
            inflight: 100,
            max_held: DEFAULT_MAX_HELD,
            protocol: 4,
        },
        topic,
        encoding,
        budget_bytes: range_int(ctx, &c.budget, 4096, 1 << 44, 64 << 20, "budget")? as u64,
        bandwidth,
        batch_records: range_int(ctx, &c.batch_records, 1, 100_000, 500, "batch_records")? as usize,
        batch_bytes: range_int(ctx, &c.batch_bytes, 512, 64 << 20, 64 * 1024, "batch_bytes")?
            as usize,
        inflight: range_int(ctx, &c.inflight, 1, 1_000, 8, "inflight")? as u16,
        backoff_min_ms,
        backoff_max_ms,
    })
}

/// `[updates]`.
fn updates_config(
    ctx: &Ctx<'_>,
    base: &Path,
    u: &RawUpdates,
    have_cloud: bool,
) -> Result<UpdatesConfig, ConfigError> {
    let mut trusted_keys = Vec::new();
    for k in u.trusted_keys.iter().flatten() {
        let p = rel(base, k.get_ref());
        if !p.is_file() {
            return Err(ctx.err(
                Some(k.span()),
                format!("trusted key `{}` is not a readable file", p.display()),
                "give the path of a public key written by `weir fleet keygen` (relative paths are taken from the gateway file's folder)",
            ));
        }
        if let Err(e) = crate::identity::load_verifying_key(&p) {
            return Err(ctx.err(
                Some(k.span()),
                format!("trusted key `{}`: {e}", p.display()),
                "use the .pub file `weir fleet keygen` wrote",
            ));
        }
        trusted_keys.push(p);
    }
    let via = match u.via.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None => {
            if have_cloud {
                UpdatesVia::Cloud
            } else {
                UpdatesVia::Local
            }
        }
        Some(("local", _)) => UpdatesVia::Local,
        Some(("cloud", _)) if have_cloud => UpdatesVia::Cloud,
        Some(("cloud", s)) => {
            return Err(ctx.err(
                Some(s.span()),
                "via = \"cloud\" but there is no [cloud] table",
                "add [cloud] with the broker's url, or use via = \"local\"",
            ))
        }
        Some((o, s)) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("unknown via `{o}`"),
                "use cloud or local",
            ))
        }
    };
    Ok(UpdatesConfig {
        trusted_keys,
        max_bytes: range_int(
            ctx,
            &u.max_bytes,
            256,
            64 << 20,
            weir_cloud_sync::update::DEFAULT_MAX_DOC_BYTES as i64,
            "max_bytes",
        )? as usize,
        via,
        health_ms: ms(ctx, &u.health_check, 30_000, 0, "health_check")?,
        max_errors: range_int(ctx, &u.max_errors, 0, i64::MAX, 100, "max_errors")? as u64,
    })
}

/// `"2GiB"`, `"500MB"`, `"4TB"` or a number of bytes.
fn size(ctx: &Ctx<'_>, v: &Spanned<SizeValue>, what: &str) -> Result<u64, ConfigError> {
    let help = format!(
        "write {what} in bytes or with a unit: \"500MB\", \"2GiB\", \"4TB\" (kB, MB, GB, TB are powers of 1,000; KiB, MiB, GiB, TiB of 1,024)"
    );
    match v.get_ref() {
        SizeValue::Int(n) if *n > 0 => Ok(*n as u64),
        SizeValue::Int(n) => Err(ctx.err(
            Some(v.span()),
            format!("{what} must be positive ({n})"),
            help,
        )),
        SizeValue::Str(s) => parse_size(s)
            .filter(|n| *n > 0)
            .ok_or_else(|| ctx.err(Some(v.span()), format!("`{s}` is not a size"), help)),
    }
}

/// `<digits>[.<digits>]<unit>` in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, u) = s.split_at(split);
    let mult: u64 = match u.trim() {
        "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    match n.split_once('.') {
        None => n.parse::<u64>().ok()?.checked_mul(mult),
        Some((i, f)) if !i.is_empty() && !f.is_empty() && f.len() <= 6 => {
            let (i, fv) = (i.parse::<u64>().ok()?, f.parse::<u64>().ok()?);
            let scale = 10u64.pow(f.len() as u32);
            let whole = i.checked_mul(mult)?;
            let frac = (fv as u128 * mult as u128 / scale as u128) as u64;
            whole.checked_add(frac)
        }
        Some(_) => None,
    }
}

/// `[storage]`.
fn storage_config(
    ctx: &Ctx<'_>,
    s: &RawStorage,
    group_commit_ms: u64,
) -> Result<StorageConfig, ConfigError> {
    let d = StorageConfig::default();
    let write_budget = match &s.write_budget {
        None => d.write_budget,
        Some(v) if matches!(v.get_ref(), SizeValue::Str(t) if t.trim() == "off") => None,
        Some(v) => {
            let b = size(ctx, v, "write_budget")?;
            if b < 1 << 20 {
                return Err(ctx.err(
                    Some(v.span()),
                    format!("a write budget of {b} bytes a day pays for only a few group commits (each writes ~28 KB)"),
                    "give at least \"1MiB\" a day, or \"off\" for no budget",
                ));
            }
            Some(b)
        }
    };
    let endurance_bytes = match &s.endurance {
        None => d.endurance_bytes,
        Some(v) => size(ctx, v, "endurance")?,
    };
    let warn_days = range_int(
        ctx,
        &s.warn_days,
        0,
        100_000,
        d.warn_days as i64,
        "warn_days",
    )? as u64;
    let max_ack_delay_ms = match &s.max_ack_delay {
        None => d.max_ack_delay_ms.max(group_commit_ms),
        Some(v) => {
            let ms = ctx.duration(v, TimeUnit::Millis, "max_ack_delay")? as u64;
            if ms < group_commit_ms {
                return Err(ctx.err(
                    Some(v.span()),
                    format!("max_ack_delay of {ms} ms is shorter than [journal] group_commit ({group_commit_ms} ms)"),
                    "the budget only ever lengthens group commits: make max_ack_delay at least group_commit",
                ));
            }
            if ms > 60_000 {
                return Err(ctx.err(
                    Some(v.span()),
                    format!("max_ack_delay of {ms} ms is longer than a minute"),
                    "QoS 1 publishers and the broker's in-flight window wait that long for each acknowledgement: use at most \"60s\"",
                ));
            }
            ms
        }
    };
    let window_ms = match &s.window {
        None => d.window_ms.max(2 * max_ack_delay_ms),
        Some(v) => {
            let ms = ctx.duration(v, TimeUnit::Millis, "window")? as u64;
            if ms < 2 * max_ack_delay_ms || ms < 100 {
                return Err(ctx.err(
                    Some(v.span()),
                    format!("a window of {ms} ms is shorter than twice max_ack_delay ({max_ack_delay_ms} ms)"),
                    "a window must hold several commits to measure a rate: make it at least twice max_ack_delay (and at least 100 ms)",
                ));
            }
            ms
        }
    };
    Ok(StorageConfig {
        write_budget,
        endurance_bytes,
        warn_days,
        max_ack_delay_ms,
        window_ms,
    })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` → (host, port, tls).
pub fn parse_url(url: &str) -> Option<(String, u16, bool)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("tcp://") {
        (false, r)
    } else {
        return None;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    Some((host.to_string(), port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<GatewayConfig, ConfigError> {
        parse("g.toml", text, Path::new("/etc/weir"))
    }

    #[test]
    fn a_dashboard_off_loopback_needs_a_token() {
        let e = p("[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
        assert!(e.msg.contains("without a token"), "{e}");
        assert!(e.help.contains("[dashboard] token"), "{e}");
        let g = p(
            "[metrics]\nlisten = \"0.0.0.0:9464\"\n[dashboard]\ntoken = \"0123456789abcdef01\"\n",
        )
        .unwrap();
        assert_eq!(g.dashboard.token.as_deref(), Some("0123456789abcdef01"));
        let e = p("[dashboard]\ntoken = \"short\"\n").unwrap_err();
        assert!(e.msg.contains("shorter than 16"), "{e}");
        let g = p("").unwrap();
        assert_eq!(
            g.dashboard.token_file,
            Path::new("/etc/weir/weir-data/dashboard.token")
        );
        assert_eq!(g.dashboard.max_series, 2_000);
    }

    #[test]
    fn empty_file_has_defaults() {
        let g = p("").unwrap();
        assert_eq!((g.broker.host.as_str(), g.broker.port), ("127.0.0.1", 1883));
        assert_eq!(g.pipeline, Path::new("/etc/weir/pipeline.toml"));
        assert_eq!(g.durability, DurabilityMode::Journal);
        assert_eq!(g.broker.client_id, format!("weir-{}", g.id));
        assert_eq!(g.group_records, 2_000);
        assert_eq!(g.broker.max_held, 16 << 20);
    }

    #[test]
    fn max_held_is_a_size_in_range() {
        let g = p("[broker]\nmax_held = \"2MiB\"\n").unwrap();
        assert_eq!(g.broker.max_held, 2 << 20);
        let e = p("[broker]\n\nmax_held = \"100B\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.help.contains("1KiB to 1GiB"), "{e}");
        let e = p("[broker]\nmax_held = \"lots\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn values_are_read() {
        let g = p("id = \"gw7\"\ndata_dir = \"/var/lib/weir\"\ndurability = \"checkpoint\"\n[broker]\nurl = \"mqtt://broker.local:1884\"\nusername = \"u\"\npassword = \"p\"\n[journal]\ngroup_commit = \"50ms\"\ngroup_records = 500\n[checkpoint]\ninterval = \"5m\"\n[output]\nformat = \"cbor\"\nwindows = false\n[metrics]\nlisten = \"\"\n").unwrap();
        assert_eq!(g.id, "gw7");
        assert_eq!(g.data_dir, Path::new("/var/lib/weir"));
        assert_eq!(g.durability, DurabilityMode::Checkpoint);
        assert_eq!(
            (g.broker.host.as_str(), g.broker.port),
            ("broker.local", 1884)
        );
        assert_eq!(g.broker.password.as_deref(), Some("p"));
        assert_eq!((g.group_commit_ms, g.group_records), (50, 500));
        assert_eq!(g.checkpoint_ms, 300_000);
        assert_eq!(g.output_format, OutputFormat::Cbor);
        assert!(!g.publish_windows);
        assert_eq!(g.metrics, None);
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = p("id = \"gw\"\n[broker]\nurl = \"http://x\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 7), "{e}");
        assert!(e.help.contains("mqtt://"), "{e}");
        let e = p("id = \"a/b\"\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        let e = p("\n\ndurability = \"fast\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = p("[broker]\nurll = \"mqtt://x\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[journal]\ngroup_records = 0\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[broker]\nurl = \"mqtt://x\"\nca = \"/nonexistent.pem\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = p("[broker]\npassword = \"p\"\n").unwrap_err();
        assert!(e.msg.contains("username"), "{e}");
    }

    #[test]
    fn cloud_table() {
        let g = p("").unwrap();
        assert!(g.cloud.is_none());
        assert_eq!(g.updates.via, UpdatesVia::Local);
        let g = p("id = \"gw\"\n[cloud]\nurl = \"mqtt://cloud:1884\"\nbudget = 100000\nbandwidth = 2048\nencoding = \"json\"\nusername = \"u\"\npassword = \"p\"\n").unwrap();
        let c = g.cloud.unwrap();
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("cloud", 1884));
        assert_eq!(c.broker.client_id, "weir-gw-cloud");
        assert_eq!(c.topic, "weir/gw/up");
        assert_eq!(c.budget_bytes, 100_000);
        assert_eq!(c.bandwidth, Some((2048, 64 * 1024)));
        assert_eq!(c.encoding, CloudEncoding::Json);
        assert_eq!(g.updates.via, UpdatesVia::Cloud);
        let e = p("[cloud]\nbudget = 100000\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.msg.contains("url"), "{e}");
        let e = p("[cloud]\nurl = \"mqtt://x\"\n\nbudget = 10\n").unwrap_err();
        assert_eq!((e.line, e.col), (4, 10), "{e}");
        let e = p("[cloud]\nurl = \"mqtts://x\"\n").unwrap_err();
        assert!(e.help.contains("ca"), "{e}");
        let e = p("[cloud]\nurl = \"mqtt://x\"\nburst = 5\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = p("[cloud]\nurl = \"mqtt://x\"\ntopic = \"a/#\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = p("[updates]\nvia = \"cloud\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[updates]\ntrusted_keys = [\"/nonexistent.pub\"]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[cloud]\nurl = \"mqtt://x\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn storage_table() {
        let g = p("").unwrap();
        assert_eq!(g.storage, StorageConfig::default());
        assert_eq!(g.storage.write_budget, Some(2 << 30));
        let g = p("[storage]\nwrite_budget = \"500MB\"\nendurance = \"1.5TB\"\nwarn_days = 30\nmax_ack_delay = \"2s\"\nwindow = \"1m\"\n").unwrap();
        assert_eq!(
            g.storage,
            StorageConfig {
                write_budget: Some(500_000_000),
                endurance_bytes: 1_500_000_000_000,
                warn_days: 30,
                max_ack_delay_ms: 2_000,
                window_ms: 60_000,
            }
        );
        let g = p("[storage]\nwrite_budget = \"off\"\nendurance = 1099511627776\n").unwrap();
        assert_eq!(g.storage.write_budget, None);
        assert_eq!(g.storage.endurance_bytes, 1 << 40);
        // The default delay never undercuts a longer group commit.
        let g = p("[journal]\ngroup_commit = \"8s\"\n").unwrap();
        assert_eq!(
            (g.storage.max_ack_delay_ms, g.storage.window_ms),
            (8_000, 600_000)
        );
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("0.5 MiB"), Some(1 << 19));
        assert_eq!(parse_size("3 parsecs"), None);
        assert_eq!(parse_size("1.2.3GB"), None);
    }

    #[test]
    fn storage_errors_point_at_the_line() {
        let e = p("[storage]\nwrite_budget = \"2 gigs\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 16), "{e}");
        assert!(e.help.contains("GiB"), "{e}");
        let e = p("[storage]\n\nwrite_budget = 1000\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.help.contains("1MiB"), "{e}");
        let e = p("[storage]\nendurance = -5\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e =
            p("[journal]\ngroup_commit = \"2s\"\n[storage]\nmax_ack_delay = \"1s\"\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.msg.contains("group_commit"), "{e}");
        let e = p("[storage]\nmax_ack_delay = \"5m\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[storage]\nmax_ack_delay = \"5s\"\nwindow = \"9s\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.help.contains("twice"), "{e}");
        let e = p("[storage]\nwarn_days = -1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[storage]\nbudget = \"1GiB\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("mqtt://h"), Some(("h".into(), 1883, false)));
        assert_eq!(parse_url("mqtts://h"), Some(("h".into(), 8883, true)));
        assert_eq!(parse_url("mqtt://h:1"), Some(("h".into(), 1, false)));
        assert_eq!(parse_url("mqtt://[::1]:7"), Some(("::1".into(), 7, false)));
        assert_eq!(parse_url("mqtt://h:x"), None);
        assert_eq!(parse_url("mqtt://"), None);
        assert_eq!(parse_url("h:1883"), None);
    }
}
