//! `weir fleet`: the operator's side of signed pipeline updates.
//!
//! `keygen` writes an Ed25519 key pair ([`crate::identity`]); `sign` turns a
//! pipeline file into an update document
//! ([`weir_cloud_sync::update::sign`]); `push` publishes it on
//! `weir/<gateway>/pipeline/set` at QoS 1 and returns after the broker's
//! PUBACK (with `--wait`, after the gateway's status for that version);
//! `status` prints every gateway's retained status.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_cloud_sync::update::{self, Status, UpdateResult};

/// `weir fleet keygen --out DIR`.
///
/// # Errors
/// The key cannot be made or written (an existing key is never replaced).
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    crate::fsutil::create_dir_all(out, 0o700)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let key = crate::identity::generate()?;
    let (private, public) = crate::identity::write(out, &key)?;
    println!("private key: {}", private.display());
    println!(
        "public key:  {} (list it in the gateways' [updates] trusted_keys)",
        public.display()
    );
    println!("key id:      {}", update::key_id(&key.verifying_key()));
    Ok(())
}

/// The highest version `weir fleet sign` signs: 2^53 − 1, the largest
/// integer every JSON reader of the status holds exactly. A gateway accepts
/// only versions above every one it accepted before, so an update signed
/// as `u64::MAX` would be the last one it could ever take.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// `weir fleet sign`: the signed document's bytes.
///
/// # Errors
/// The version is 0 or above [`MAX_VERSION`], the key or pipeline cannot
/// be read, or the pipeline is invalid.
pub fn sign(
    key: &Path,
    version: u64,
    gateways: &[String],
    pipeline: &Path,
) -> anyhow::Result<Vec<u8>> {
    if gateways.is_empty() {
        bail!("name at least one target with --gateway ID");
    }
    if version == 0 || version > MAX_VERSION {
        bail!(
            "--version {version} is out of range: use 1 to {MAX_VERSION} (2^53 - 1), one above the version the gateways run; a gateway never accepts a version at or below one it accepted before, so a huge version would be the last update it could ever take"
        );
    }
    let key = crate::identity::load_signing_key(key)?;
    let text = std::fs::read_to_string(pipeline)
        .with_context(|| format!("cannot read {}", pipeline.display()))?;
    crate::pipeline_file::parse(&pipeline.display().to_string(), &text)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(update::sign(&key, &text, version, gateways))
}

fn connect(broker: &str, what: &str) -> anyhow::Result<(Client, rumqttc::Connection)> {
    let (host, port, tls) = crate::gateway::parse_url(broker)
        .ok_or_else(|| anyhow!("`{broker}` is not a broker URL (mqtt://HOST:PORT)"))?;
    if tls {
        bail!("mqtts:// is not supported by `weir fleet` yet; use a local mqtt:// listener");
    }
    let id = format!("weir-fleet-{what}-{}", std::process::id());
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(4 << 20, 4 << 20);
    Ok(Client::new(o, 16))
}

/// `weir fleet push`: publishes and waits for the PUBACK; with `wait`, for
/// the gateway's status naming the document's version too.
///
/// # Errors
/// Not acknowledged, or no status, within `timeout`.
pub fn push(
    broker: &str,
    gateway: &str,
    doc: &Path,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<Option<Status>> {
    let bytes = std::fs::read(doc).with_context(|| format!("cannot read {}", doc.display()))?;
    let (c, mut conn) = connect(broker, "push")?;
    let status_topic = format!("weir/{gateway}/pipeline/status");
    if wait {
        c.subscribe(status_topic.clone(), QoS::AtLeastOnce)?;
    }
    c.publish(
        format!("weir/{gateway}/pipeline/set"),
        QoS::AtLeastOnce,
        false,
        bytes,
    )?;
    let end = Instant::now() + timeout;
    let mut acked = false;
    while Instant::now() < end {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                acked = true;
                if !wait {
                    let _ = c.disconnect();
                    return Ok(None);
                }
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p))))
                if acked && p.topic == status_topic && !p.retain =>
            {
                if let Ok(s) = Status::from_cbor(&p.payload) {
                    if s.last_result != UpdateResult::Staged {
                        let _ = c.disconnect();
                        return Ok(Some(s));
                    }
                }
            }
            Ok(Err(e)) => bail!("{broker}: {e}"),
            _ => {}
        }
    }
    bail!(if acked {
        "no final status from {gateway} within {timeout:?}"
    } else {
        "the broker did not acknowledge within {timeout:?}"
    })
}

/// `weir fleet status`: every retained status, until `quiet` passes
/// without a new one or `timeout`.
///
/// # Errors
/// The broker cannot be reached.
pub fn status(broker: &str, quiet: Duration, timeout: Duration) -> anyhow::Result<Vec<Status>> {
    let (c, mut conn) = connect(broker, "status")?;
    c.subscribe("weir/+/pipeline/status", QoS::AtLeastOnce)?;
    let end = Instant::now() + timeout;
    let mut last = Instant::now();
    let mut out: Vec<Status> = Vec::new();
    let mut subscribed = false;
    while Instant::now() < end && !(subscribed && last.elapsed() >= quiet) {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed = true;
                last = Instant::now();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                if let Ok(s) = Status::from_cbor(&p.payload)
                    .or_else(|_| Status::from_json(&String::from_utf8_lossy(&p.payload)))
                {
                    out.retain(|o| o.gateway != s.gateway);
                    out.push(s);
                }
                last = Instant::now();
            }
            Ok(Err(e)) => bail!("{broker}: {e}"),
            _ => {}
        }
    }
    let _ = c.disconnect();
    out.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    Ok(out)
}

/// One line per gateway.
pub fn status_line(s: &Status) -> String {
    format!(
        "{}\tversion {}\t{:?}{}{}",
        s.gateway,
        s.current_version,
        s.last_result,
        s.last_version
            .map(|v| format!(" (update v{v})"))
            .unwrap_or_default(),
        s.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_refuses_versions_a_gateway_could_never_move_past() {
        let dir = std::env::temp_dir().join(format!("weir-fleet-sign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (key, _) = crate::identity::write(&dir, &crate::identity::generate().unwrap()).unwrap();
        let pipeline = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/w1.toml"));
        let gws = ["gw1".to_string()];
        for v in [0, u64::MAX, u64::MAX - 1, 1 << 53] {
            let e = sign(&key, v, &gws, pipeline).expect_err("refused");
            assert!(e.to_string().contains("--version"), "{e}");
        }
        for v in [1, (1 << 53) - 1] {
            assert!(sign(&key, v, &gws, pipeline).is_ok(), "version {v}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
