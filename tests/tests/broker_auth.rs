//! `weir run` against a broker that requires a user name and password
//! (mosquitto with a password file): the right ones connect and ingest;
//! a wrong password is refused, retried with backoff, and nothing is
//! journaled.

use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

#[test]
fn credentials_connect_and_a_wrong_password_is_refused() {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("auth");
    let pw = dir.0.join("passwd");
    let ok = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["weir", "s3cret"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mosquitto_passwd (package mosquitto) failed");
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644));
    }
    // The plain listener of `start_with` allows anonymous clients (the
    // test's publisher and collector); the second one requires a login.
    let auth_port = free_port();
    let mosq = Mosquitto::start_with(
        &dir.0,
        &format!(
            "per_listener_settings true\nlistener {auth_port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            pw.display()
        ),
    );
    let plain = mosq.addr();
    let auth = std::net::SocketAddr::from(([127, 0, 0, 1], auth_port));
    wait_until(Duration::from_secs(10), "the login listener", || {
        std::net::TcpStream::connect(auth).is_ok()
    });
    let gw = gateway_file(&dir.0, auth, "");
    let original = std::fs::read_to_string(&gw).unwrap();
    let login = |password: &str| {
        let text = original.replacen(
            "keep_alive = \"5s\"",
            &format!("keep_alive = \"5s\"\nusername = \"weir\"\npassword = \"{password}\""),
            1,
        );
        std::fs::write(&gw, text).unwrap();
    };

    login("wrong");
    let agent = InProcAgent::start(&gw);
    wait_until(Duration::from_secs(20), "the refusal", || {
        agent.metrics().connection_errors.load(Relaxed) >= 1
    });
    assert!(!agent.metrics().connected.load(Relaxed));
    assert_eq!(agent.metrics().readings.load(Relaxed), 0);
    agent.stop();

    login("s3cret");
    let msgs = input(3_000, 3, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(plain, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gw);
    wait_until(Duration::from_secs(20), "the login", || {
        agent.metrics().connected.load(Relaxed) && agent.metrics().output_connected.load(Relaxed)
    });
    agent.wait_subscribed(0);
    publish_all(plain, &msgs, Duration::from_secs(60));
    assert!(col.wait_for(expected.len(), Duration::from_secs(60)));
    agent.stop();
    col.assert_matches(&expected);
}
