//! Brokers and a cuttable link for the uplink tests.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free port: bind `127.0.0.1:0`, read the port, close the socket. A
/// small race: another process may take the port before the broker binds
/// it (rumqttd does not report the address it bound, so there is no
/// race-free way with it).
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// rumqttd in a thread of its own on a free port (it cannot be stopped;
/// it dies with the test process).
pub fn start_rumqttd() -> u16 {
    use std::collections::HashMap;
    let port = free_port();
    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: 1 << 20,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: conn,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 100,
        max_outgoing_packet_count: 1_000,
        max_segment_size: 64 << 20,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    wait_listening(port);
    port
}

/// Waits (bounded) until something accepts TCP connections on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Debian's mosquitto as a child process, no persistence.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: super::TempDb,
}

/// Whether Debian's mosquitto is installed. Without it the tests that
/// need it skip with a message (a newcomer's `cargo test --workspace`
/// passes); in CI (`CI` set) its absence is an error.
pub fn have_mosquitto() -> bool {
    let ok = std::path::Path::new("/usr/sbin/mosquitto").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto is not installed (apt-get install mosquitto)"
        );
        eprintln!("skipping: /usr/sbin/mosquitto is not installed (apt-get install mosquitto)");
    }
    ok
}

/// Whether the `openssl` command is there; as [`have_mosquitto`].
pub fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is not installed (apt-get install openssl)"
        );
        eprintln!("skipping: openssl is not installed (apt-get install openssl)");
    }
    ok
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        Mosquitto::start_conf(port, &format!("listener {port} 127.0.0.1\n"))
    }

    /// With `listeners`: mosquitto.conf lines after the common ones; `port`
    /// is the one waited on.
    pub fn start_conf(port: u16, listeners: &str) -> Mosquitto {
        let dir = super::TempDb::new("mosquitto");
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "allow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_inflight_messages 100\n{listeners}"
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        wait_listening(port);
        Mosquitto {
            port,
            child,
            _dir: dir,
        }
    }

    /// SIGSTOP: the broker stops reading and acknowledging, the kernel
    /// still takes bytes: publishes pile up in flight.
    pub fn pause(&self) {
        let ok = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -STOP");
    }

    /// SIGKILL: in-flight publishes get no PUBACK; the broker keeps nothing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay between the uplink and a broker that the test can cut (all
/// connections closed, new ones refused at once) and restore. Its own
/// listener stays bound, so its port never races.
pub struct Link {
    pub port: u16,
    up: watch::Sender<bool>,
}

impl Link {
    pub async fn start(upstream: u16) -> Arc<Link> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (up, _) = watch::channel(true);
        let link = Arc::new(Link { port, up });
        let rx = link.up.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    drop(client);
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        link
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
