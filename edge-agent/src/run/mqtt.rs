//! The MQTT side of `weir run`: client options from `gateway.toml`, TLS
//! with rustls (ring), and the task that polls rumqttc's event loop.
//!
//! The poller never blocks on the ingest loop: it forwards every event into
//! an unbounded channel. That is bounded in practice because QoS 1 messages
//! are acknowledged only after their group commit, so the broker never has
//! more than its in-flight window outstanding; QoS 0 floods are cut by the
//! ingest loop (counted as overload drops).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, Transport,
};
use tokio::sync::mpsc;

use super::metrics::Metrics;
use crate::gateway::BrokerConfig;

/// Which of the agent's two connections an event is from. Ingest
/// (subscriptions, manual acknowledgements) and outputs (QoS 1 publishes)
/// use separate connections, so acknowledgements never wait behind
/// outputs in rumqttc's in-flight window, nor outputs behind a flood of
/// redelivered messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Client id `<client_id>`: subscriptions and acknowledgements.
    Ingest,
    /// Client id `<client_id>-out`: window results and alerts.
    Output,
}

/// What the poller tells the ingest loop, in the order it happened.
#[derive(Debug)]
pub enum MqttEvent {
    /// Connected; `session_present` is the broker's word on the session.
    Connected {
        /// Whether the broker still had the session.
        session_present: bool,
    },
    /// A message from a subscription.
    Publish(Publish),
    /// The broker acknowledged one of our QoS 1 publishes.
    PubAck,
    /// The connection failed or dropped; the poller retries after a backoff.
    Disconnected(String),
    /// A reading from a sensor wired to the gateway (board profile), for
    /// pipeline source index `.0`, stamped by the gateway clock.
    Wired(usize, weir_core::seam::Reading),
}

/// The incoming packet limit: effectively none, so an oversized message
/// reaches the decoder (which dead-letters it) instead of breaking the
/// connection and being redelivered forever.
const MAX_INCOMING: usize = 256 << 20;

/// Builds rumqttc options. TLS uses the ring provider, installed as the
/// process default on first use.
///
/// # Errors
/// A TLS file cannot be read.
pub fn options(b: &BrokerConfig, link: Link) -> Result<MqttOptions, String> {
    let id = match link {
        Link::Ingest => b.client_id.clone(),
        Link::Output => format!("{}-out", b.client_id),
    };
    let mut o = MqttOptions::new(id, b.host.clone(), b.port);
    o.set_clean_session(false)
        .set_manual_acks(link == Link::Ingest)
        .set_keep_alive(Duration::from_millis(b.keep_alive_ms))
        .set_max_packet_size(MAX_INCOMING, b.max_packet)
        .set_inflight(b.inflight)
        .set_pending_throttle(Duration::ZERO);
    if let (Some(u), p) = (&b.username, &b.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if b.tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let ca = match &b.ca {
            Some(p) => read(p)?,
            None => {
                return Err(
                    "mqtts:// needs the server's CA certificate: set `ca` in [broker]".into(),
                )
            }
        };
        let client_auth = match (&b.cert, &b.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        o.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Starts a client whose poller task feeds `tx`. `request_cap` bounds
/// requests (publishes, acks) queued for the event loop.
pub fn start(
    opts: MqttOptions,
    request_cap: usize,
    metrics: Arc<Metrics>,
    link: Link,
    tx: mpsc::UnboundedSender<(Link, MqttEvent)>,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let (client, eventloop) = AsyncClient::new(opts, request_cap);
    let task = tokio::spawn(poll(eventloop, tx, metrics, link));
    (client, task)
}

/// A little jitter from the clock, so a fleet does not reconnect in step.
fn jitter(max_ms: u64) -> u64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    n % max_ms.max(1)
}

async fn poll(
    mut el: EventLoop,
    tx: mpsc::UnboundedSender<(Link, MqttEvent)>,
    metrics: Arc<Metrics>,
    link: Link,
) {
    let connected = match link {
        Link::Ingest => &metrics.connected,
        Link::Output => &metrics.output_connected,
    };
    let mut backoff = 100u64;
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                backoff = 100;
                metrics.connects.fetch_add(1, Relaxed);
                connected.store(true, Relaxed);
                MqttEvent::Connected {
                    session_present: c.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => MqttEvent::Publish(p),
            Ok(Event::Incoming(Packet::PubAck(_))) => MqttEvent::PubAck,
            Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(_))) => {
                metrics.acks_written.fetch_add(1, Relaxed);
                continue;
            }
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                metrics.connection_errors.fetch_add(1, Relaxed);
                connected.store(false, Relaxed);
                if tx
                    .send((link, MqttEvent::Disconnected(e.to_string())))
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(backoff + jitter(backoff / 2))).await;
                backoff = (backoff * 2).min(5_000);
                continue;
            }
        };
        if tx.send((link, ev)).is_err() {
            return;
        }
    }
}

/// Whether MQTT topic filter `filter` matches `topic`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // `$`-topics are not matched by wildcards at the first level.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filter_matches as m;

    #[test]
    fn topic_filters() {
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/c"));
        assert!(m("a/+/c", "a/x/c"));
        assert!(!m("a/+/c", "a/x/y/c"));
        assert!(m("a/#", "a/x/y"));
        assert!(m("a/#", "a"));
        assert!(m("#", "x/y"));
        assert!(!m("#", "$SYS/x"));
        assert!(m("+/+", "a/b"));
        assert!(!m("+", "a/b"));
        assert!(m("a/+", "a/"));
    }
}
