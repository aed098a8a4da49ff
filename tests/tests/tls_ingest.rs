//! `weir run` over mutual TLS (`mqtts://`, rustls with the ring provider)
//! to mosquitto: readings in, windows out; without a client certificate
//! the broker refuses the agent and nothing is journaled.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

#[test]
fn mutual_tls_ingest_and_a_missing_client_certificate_is_refused() {
    if !have_mosquitto() || !have_openssl() {
        return;
    }
    let dir = TempDir::new("tls");
    tls_certificates(&dir.0);
    let p = |f: &str| dir.0.join(f).display().to_string();
    let tls_port = free_port();
    let mosq = Mosquitto::start_with(
        &dir.0,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        ),
    );
    let plain = mosq.addr();
    let tls = std::net::SocketAddr::from(([127, 0, 0, 1], tls_port));
    wait_until(Duration::from_secs(10), "the TLS listener", || {
        std::net::TcpStream::connect(tls).is_ok()
    });
    let gw = gateway_file(&dir.0, tls, "");
    let original = std::fs::read_to_string(&gw).unwrap();
    let with_tls = |certs: bool| {
        let files = if certs {
            format!(
                "ca = {:?}\ncert = {:?}\nkey = {:?}",
                p("ca.pem"),
                p("client.pem"),
                p("client.key")
            )
        } else {
            format!("ca = {:?}", p("ca.pem"))
        };
        let text = original
            .replace(&format!("mqtt://{tls}"), &format!("mqtts://{tls}"))
            .replacen(
                "keep_alive = \"5s\"",
                &format!("keep_alive = \"5s\"\n{files}"),
                1,
            );
        std::fs::write(&gw, text).unwrap();
    };

    // Without a client certificate: refused, retried with backoff, nothing in.
    with_tls(false);
    let agent = InProcAgent::start(&gw);
    wait_until(Duration::from_secs(20), "the refusal", || {
        agent.metrics().connection_errors.load(Relaxed) >= 1
    });
    assert!(!agent.metrics().connected.load(Relaxed));
    agent.stop();

    with_tls(true);
    let msgs = input(4_000, 4, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(plain, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    wait_until(Duration::from_secs(20), "the TLS connection", || {
        agent.metrics().connected.load(Relaxed) && agent.metrics().output_connected.load(Relaxed)
    });
    agent.wait_subscribed(0);
    publish_all(plain, &msgs, Duration::from_secs(60));
    assert!(col.wait_for(expected.len(), Duration::from_secs(60)));
    agent.stop();
    col.assert_matches(&expected);
}
