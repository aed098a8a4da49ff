//! The MQTT side of `weir run`: client options from `gateway.toml`, TLS
//! with rustls (ring), and the task that polls rumqttc's event loop.
//!
//! The poller forwards events into a bounded channel ([`EVENT_QUEUE`]
//! events): when the ingest loop falls behind, the poller waits, stops
//! reading the socket, and TCP pushes back to the broker, which queues (or,
//! for QoS 0, drops) by its own limits. Events are small (a topic, the
//! payload, a 4-byte ack token), so the queue holds little beyond the
//! payloads. The one exception is a pause on the ack debt (see
//! `run::MAX_ACK_DEBT`): the loop then keeps the channel moving into a side
//! queue, which grows while the pause lasts (QoS 0 beyond a cap is dropped
//! and counted).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Transport};
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
    Publish(Incoming),
    /// The broker acknowledged one of our QoS 1 publishes.
    PubAck,
    /// The connection failed or dropped; the poller retries after a backoff.
    Disconnected(String),
    /// A reading from a sensor wired to the gateway (board profile), for
    /// pipeline source index `.0`, stamped by the gateway clock.
    Wired(usize, Box<weir_core::seam::Reading>),
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
    if let Some(t) = tls(b)? {
        o.set_transport(t);
    }
    Ok(o)
}

/// The TLS transport for `mqtts://` (ring provider, installed once).
fn tls(b: &BrokerConfig) -> Result<Option<Transport>, String> {
    if !b.tls {
        return Ok(None);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let ca = match &b.ca {
        Some(p) => read(p)?,
        None => {
            return Err("mqtts:// needs the server's CA certificate: set `ca` in [broker]".into())
        }
    };
    let client_auth = match (&b.cert, &b.key) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    Ok(Some(Transport::Tls(rumqttc::TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })))
}

/// The receive maximum the ingest link asks of an MQTT 5 broker: a
/// quarter of the dedupe ring, half the ack debt's bound.
pub const RECEIVE_MAXIMUM: u16 = (super::dedupe::WINDOW / 4) as u16;

/// MQTT 5 options for the same connection (`[broker] protocol = 5`): a
/// session that outlives the connection (clean start off, session expiry
/// "never"), manual acks and a receive maximum ([`RECEIVE_MAXIMUM`]) on
/// ingest, the same limits and TLS.
///
/// # Errors
/// A TLS file cannot be read.
pub fn options_v5(b: &BrokerConfig, link: Link) -> Result<rumqttc::v5::MqttOptions, String> {
    let id = match link {
        Link::Ingest => b.client_id.clone(),
        Link::Output => format!("{}-out", b.client_id),
    };
    let mut o = rumqttc::v5::MqttOptions::new(id, b.host.clone(), b.port);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(u32::MAX))
        .set_manual_acks(link == Link::Ingest)
        .set_keep_alive(Duration::from_millis(b.keep_alive_ms))
        .set_max_packet_size(Some(MAX_INCOMING as u32))
        .set_outgoing_inflight_upper_limit(b.inflight)
        .set_pending_throttle(Duration::ZERO);
    if link == Link::Ingest {
        // The broker's window toward the agent: unacknowledged messages
        // stay below the ack debt's bound, so ingest does not pause and
        // hold (or shed) messages that MQTT 3.1.1 brokers send beyond
        // their own window.
        o.set_receive_maximum(Some(RECEIVE_MAXIMUM));
    }
    if let (Some(u), p) = (&b.username, &b.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if let Some(t) = tls(b)? {
        o.set_transport(t);
    }
    Ok(o)
}

/// A message from a subscription, whichever protocol brought it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: bytes::Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// What acknowledges it (QoS 1 and 2 only).
    pub ack: Option<AckToken>,
}

/// The payload in an allocation of its own. rumqttc hands it out as a
/// slice of its socket read buffer, which stays allocated as long as any
/// slice of it lives: a group (or the ack-debt side queue) holding a few
/// thousand messages kept hundreds of such buffers alive, 340 MB of RSS
/// for 56 MB of payloads in a SenML flood. A copy costs a `memcpy` of the
/// payload, and rumqttc can then reuse its buffer.
fn own_payload(p: bytes::Bytes) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&p)
}

/// Most events waiting between the pollers and the ingest loop.
pub const EVENT_QUEUE: usize = 1024;

/// The sending half the pollers (and the wired-sensor thread) feed.
pub type EventTx = mpsc::Sender<(Link, MqttEvent)>;

/// What an acknowledgement needs of the packet it answers: protocol, QoS
/// and packet id (4 bytes, where a whole rumqttc `Publish` is ~100–200: a
/// group holds thousands of these while its commit is on the way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    v5: bool,
    qos: u8,
    pkid: u16,
}

/// A client of either protocol; the agent sees one interface.
#[derive(Debug, Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V4(AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues a QoS 1 publish; gives topic and payload back when the
    /// request channel is full.
    pub fn try_publish(&self, topic: String, payload: Vec<u8>) -> Result<(), (String, Vec<u8>)> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .map_err(|e| match e {
                    rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))
                    | rumqttc::ClientError::Request(rumqttc::Request::Publish(p)) => {
                        (p.topic, p.payload.to_vec())
                    }
                    _ => (String::new(), Vec::new()),
                }),
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .map_err(|e| match e {
                    rumqttc::v5::ClientError::TryRequest(rumqttc::v5::Request::Publish(p))
                    | rumqttc::v5::ClientError::Request(rumqttc::v5::Request::Publish(p)) => (
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    ),
                    _ => (String::new(), Vec::new()),
                }),
        }
    }

    /// Queues an acknowledgement; false when the request channel is full.
    pub fn try_ack(&self, t: &AckToken) -> bool {
        match self {
            Client::V4(c) if !t.v5 => {
                let qos = if t.qos >= 2 {
                    rumqttc::QoS::ExactlyOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = t.pkid;
                c.try_ack(&p).is_ok()
            }
            Client::V5(c) if t.v5 => {
                use rumqttc::v5::mqttbytes::QoS;
                let qos = if t.qos >= 2 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let mut p =
                    rumqttc::v5::mqttbytes::v5::Publish::new("", qos, bytes::Bytes::new(), None);
                p.pkid = t.pkid;
                c.try_ack(&p).is_ok()
            }
            // A token of the other protocol cannot come from this client.
            _ => true,
        }
    }

    /// Queues a subscription.
    ///
    /// # Errors
    /// The request channel is full or closed.
    pub fn try_subscribe(&self, filter: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let q = if qos == 0 {
                    rumqttc::QoS::AtMostOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                c.try_subscribe(filter, q).map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let q = if qos == 0 {
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce
                } else {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                };
                c.try_subscribe(filter, q).map_err(|e| e.to_string())
            }
        }
    }

    /// Queues an unsubscription.
    ///
    /// # Errors
    /// The request channel is full or closed.
    pub fn try_unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(|e| e.to_string()),
        }
    }

    /// Sends DISCONNECT.
    pub async fn disconnect(&self) {
        match self {
            Client::V4(c) => {
                let _ = c.disconnect().await;
            }
            Client::V5(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}

/// Starts a client of `b`'s protocol for `link` whose poller task feeds
/// `tx`. `request_cap` bounds requests (publishes, acks) queued for the
/// event loop.
///
/// # Errors
/// A TLS file cannot be read.
pub fn connect(
    b: &BrokerConfig,
    link: Link,
    request_cap: usize,
    metrics: Arc<Metrics>,
    tx: EventTx,
) -> Result<(Client, tokio::task::JoinHandle<()>), String> {
    if b.protocol == 5 {
        let (client, eventloop) = rumqttc::v5::AsyncClient::new(options_v5(b, link)?, request_cap);
        let task = tokio::spawn(poll_v5(eventloop, tx, metrics, link));
        Ok((Client::V5(client), task))
    } else {
        let (client, task) = start(options(b, link)?, request_cap, metrics, link, tx);
        Ok((Client::V4(client), task))
    }
}

async fn poll_v5(mut el: rumqttc::v5::EventLoop, tx: EventTx, metrics: Arc<Metrics>, link: Link) {
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    use rumqttc::v5::Event as E;
    let connected = match link {
        Link::Ingest => &metrics.connected,
        Link::Output => &metrics.output_connected,
    };
    let mut backoff = 100u64;
    loop {
        let ev = match el.poll().await {
            Ok(E::Incoming(P::ConnAck(c))) => {
                backoff = 100;
                metrics.connects.fetch_add(1, Relaxed);
                connected.store(true, Relaxed);
                MqttEvent::Connected {
                    session_present: c.session_present,
                }
            }
            Ok(E::Incoming(P::Publish(p))) => {
                let qos = p.qos as u8;
                MqttEvent::Publish(Incoming {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: own_payload(p.payload),
                    qos,
                    ack: (qos > 0).then_some(AckToken {
                        v5: true,
                        qos,
                        pkid: p.pkid,
                    }),
                })
            }
            Ok(E::Incoming(P::PubAck(_))) => MqttEvent::PubAck,
            Ok(E::Incoming(P::SubAck(_))) => {
                if link == Link::Ingest {
                    metrics.subscribe_acks.fetch_add(1, Relaxed);
                }
                continue;
            }
            Ok(E::Outgoing(rumqttc::Outgoing::PubAck(_))) => {
                if link == Link::Ingest {
                    metrics.acks_written.fetch_add(1, Relaxed);
                }
                continue;
            }
            Ok(_) => continue,
            Err(rumqttc::v5::ConnectionError::RequestsDone) => return,
            Err(e) => {
                metrics.connection_errors.fetch_add(1, Relaxed);
                connected.store(false, Relaxed);
                if tx
                    .send((link, MqttEvent::Disconnected(e.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(backoff + jitter(backoff / 2))).await;
                backoff = (backoff * 2).min(5_000);
                continue;
            }
        };
        if tx.send((link, ev)).await.is_err() {
            return;
        }
    }
}

/// Starts a client whose poller task feeds `tx`. `request_cap` bounds
/// requests (publishes, acks) queued for the event loop.
pub fn start(
    opts: MqttOptions,
    request_cap: usize,
    metrics: Arc<Metrics>,
    link: Link,
    tx: EventTx,
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

async fn poll(mut el: EventLoop, tx: EventTx, metrics: Arc<Metrics>, link: Link) {
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
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let qos = p.qos as u8;
                MqttEvent::Publish(Incoming {
                    topic: p.topic,
                    payload: own_payload(p.payload),
                    qos,
                    ack: (qos > 0).then_some(AckToken {
                        v5: false,
                        qos,
                        pkid: p.pkid,
                    }),
                })
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => MqttEvent::PubAck,
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if link == Link::Ingest {
                    metrics.subscribe_acks.fetch_add(1, Relaxed);
                }
                continue;
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(_))) => {
                if link == Link::Ingest {
                    metrics.acks_written.fetch_add(1, Relaxed);
                }
                continue;
            }
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                metrics.connection_errors.fetch_add(1, Relaxed);
                connected.store(false, Relaxed);
                if tx
                    .send((link, MqttEvent::Disconnected(e.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(backoff + jitter(backoff / 2))).await;
                backoff = (backoff * 2).min(5_000);
                continue;
            }
        };
        if tx.send((link, ev)).await.is_err() {
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
