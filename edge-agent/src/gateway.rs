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
//!
//! [journal]
//! group_commit = "10ms"          # longest wait before a commit (acks wait for it)
//! group_records = 2000           # commit once this many records are staged
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
//! listen = "127.0.0.1:9464"      # Prometheus /metrics and /healthz; "" turns it off
//!
//! [dead_letters]
//! keep = 1000                    # the newest this many bad messages are kept
//! ```

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
}

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
    /// Journal or checkpoints only.
    pub durability: DurabilityMode,
    /// The local broker.
    pub broker: BrokerConfig,
    /// Longest wait before a group commit, ms.
    pub group_commit_ms: u64,
    /// Records that close a group early.
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
    /// Dead letters kept.
    pub dead_letters: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<Spanned<String>>,
    pipeline: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
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
    dead_letters: RawDead,
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
    let path = |s: &str| {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let id = match &raw.id {
        Some(s) if !check_level(s.get_ref()) => {
            return Err(ctx.err(
                Some(s.span()),
                format!("gateway id `{}` cannot be an MQTT topic level", s.get_ref()),
                "use letters, digits, `-` or `_`; no `/`, `+` or `#`",
            ))
        }
        Some(s) => s.get_ref().clone(),
        None => host_name(),
    };
    let durability = match &raw.durability {
        None => DurabilityMode::Journal,
        Some(s) => s.get_ref().parse().map_err(|e: String| {
            ctx.err(
                Some(s.span()),
                e,
                "journal: nothing acknowledged is lost; checkpoint: fewer flash writes, a crash loses the samples since the last checkpoint",
            )
        })?,
    };
    let b = &raw.broker;
    let (host, port, tls) = match &b.url {
        None => ("127.0.0.1".to_string(), 1883, false),
        Some(u) => parse_url(u.get_ref()).ok_or_else(|| {
            ctx.err(
                Some(u.span()),
                format!("`{}` is not a broker URL", u.get_ref()),
                "write mqtt://HOST:PORT or mqtts://HOST:PORT (TLS); the port defaults to 1883 / 8883",
            )
        })?,
    };
    let password = match (&b.password, &b.password_file) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                Some(f.span()),
                "both password and password_file are set",
                "keep one of them",
            ))
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(path(f.get_ref()))
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
    if password.is_some() && b.username.is_none() {
        return Err(ctx.err(
            b.password_file.as_ref().map(|f| f.span()),
            "a password without a username",
            "add `username = \"…\"` to [broker]",
        ));
    }
    let file_opt = |o: &Option<Spanned<String>>| -> Result<Option<PathBuf>, ConfigError> {
        match o {
            None => Ok(None),
            Some(s) => {
                let p = path(s.get_ref());
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
    let (ca, cert, key) = (file_opt(&b.ca)?, file_opt(&b.cert)?, file_opt(&b.key)?);
    if cert.is_some() != key.is_some() {
        return Err(ctx.err(
            b.cert.as_ref().or(b.key.as_ref()).map(|s| s.span()),
            "mutual TLS needs both `cert` and `key`",
            "set both, or neither",
        ));
    }
    if (ca.is_some() || cert.is_some()) && !tls {
        return Err(ctx.err(
            b.url.as_ref().map(|s| s.span()),
            "TLS files are set but the broker URL is not mqtts://",
            "write the url as mqtts://HOST:PORT",
        ));
    }
    let int = |v: &Option<Spanned<i64>>, lo: i64, hi: i64, dflt: i64, what: &str| match v {
        None => Ok(dflt),
        Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
        Some(s) => Err(ctx.err(
            Some(s.span()),
            format!("{what} = {} is out of range", s.get_ref()),
            format!("use a value from {lo} to {hi}"),
        )),
    };
    let dur = |d: &Option<Dur>, dflt: u64, lo: u64, what: &str| -> Result<u64, ConfigError> {
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
    };
    let broker = BrokerConfig {
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
        keep_alive_ms: dur(&b.keep_alive, 30_000, 5_000, "keep_alive")?,
        max_packet: int(&b.max_packet, 1024, 256 << 20, 1 << 20, "max_packet")? as usize,
        inflight: int(&b.inflight, 1, 65_535, 100, "inflight")? as u16,
    };
    let output_format = match raw
        .output
        .format
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s))
    {
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
    let prefix = match &raw.output.prefix {
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
    let metrics = match &raw.metrics.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        Some(s) if s.get_ref().is_empty() => None,
        Some(s) => Some(s.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(s.span()),
                format!("`{}` is not an address with a port", s.get_ref()),
                "write e.g. \"127.0.0.1:9464\" (or \"\" to turn metrics off)",
            )
        })?),
    };
    Ok(GatewayConfig {
        file: file.to_string(),
        pipeline: path(
            raw.pipeline
                .as_ref()
                .map_or("pipeline.toml", |p| p.get_ref()),
        ),
        data_dir: path(raw.data_dir.as_ref().map_or("weir-data", |p| p.get_ref())),
        id,
        durability,
        broker,
        group_commit_ms: dur(&raw.journal.group_commit, 10, 0, "group_commit")?,
        group_records: int(
            &raw.journal.group_records,
            1,
            1_000_000,
            2_000,
            "group_records",
        )? as usize,
        checkpoint_ms: dur(&raw.checkpoint.interval, 10_000, 100, "checkpoint interval")?,
        output_format,
        publish_windows: raw.output.windows.unwrap_or(true),
        prefix,
        metrics,
        dead_letters: int(&raw.dead_letters.keep, 0, 1_000_000, 1_000, "keep")? as usize,
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
    fn empty_file_has_defaults() {
        let g = p("").unwrap();
        assert_eq!((g.broker.host.as_str(), g.broker.port), ("127.0.0.1", 1883));
        assert_eq!(g.pipeline, Path::new("/etc/weir/pipeline.toml"));
        assert_eq!(g.durability, DurabilityMode::Journal);
        assert_eq!(g.broker.client_id, format!("weir-{}", g.id));
        assert_eq!(g.group_records, 2_000);
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
