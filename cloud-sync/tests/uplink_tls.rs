//! Mutual TLS against mosquitto (rustls, ring provider): with the client
//! certificate everything arrives; without it the broker refuses.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::net::{free_port, have_mosquitto, have_openssl, wait_listening, Mosquitto};
use common::{window, TempDb};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;
use weir_cloud_sync::outbox::{Outbox, OutboxConfig};
use weir_cloud_sync::uplink::{TlsFiles, Uplink, UplinkConfig};
use weir_cloud_sync::wire::Batch;

const WAIT: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=weir-test-ca",
    ]);
    openssl(dir, &ca);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "weir-gw1")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    // mosquitto started as root drops to its own user before reading keys.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["server.key", "server.pem", "ca.pem"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_and_a_missing_client_certificate_is_refused() {
    if !have_mosquitto() || !have_openssl() {
        return;
    }
    let certs = TempDb::new("certs");
    certificates(&certs.path);
    let p = |f: &str| certs.path.join(f);
    let (plain, tls) = (free_port(), free_port());
    let _m = Mosquitto::start_conf(
        tls,
        &format!(
            "listener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p("ca.pem").display(),
            p("server.pem").display(),
            p("server.key").display()
        ),
    );
    wait_listening(plain);

    // A plain subscriber on the other listener.
    let mut o = MqttOptions::new("tls-consumer", "127.0.0.1", plain);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 16);
    client
        .subscribe("weir/gw1/up", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    let _ = tx.send(None);
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(Some(Batch::from_cbor(&p.payload).unwrap().records.len()));
                }
                _ => {}
            }
        }
    });
    assert_eq!(
        timeout(WAIT, rx.recv()).await.unwrap(),
        Some(None),
        "subscribed"
    );

    let tmp = TempDb::new("tls");
    let db = Arc::new(tmp.open());
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let mut cfg = UplinkConfig::new("gw1", "127.0.0.1", tls);
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(100);
    cfg.tls = Some(TlsFiles {
        ca: p("ca.pem"),
        client_cert: Some(p("client.pem")),
        client_key: Some(p("client.key")),
        alpn: None,
    });
    let recs: Vec<_> = (0..100).map(|i| window(i % 4, i64::from(i))).collect();
    ob.put(&db, &recs).unwrap();
    let up = Uplink::start(cfg.clone(), db.clone(), ob.clone()).unwrap();
    let mut got = 0;
    timeout(WAIT, async {
        while got < recs.len() {
            got += rx.recv().await.unwrap().unwrap_or(0);
        }
    })
    .await
    .expect("delivered over mutual TLS");
    assert_eq!(up.counters().connection_errors, 0);
    up.shutdown().await;

    // Without the client certificate the broker refuses the connection.
    let tmp2 = TempDb::new("tls-anon");
    let db2 = Arc::new(tmp2.open());
    let ob2 = Outbox::open(&db2, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    ob2.put(&db2, &recs[..1]).unwrap();
    let mut anon = cfg.clone();
    anon.client_id = "weir-anon".into();
    anon.tls = Some(TlsFiles {
        client_cert: None,
        client_key: None,
        ..cfg.tls.clone().unwrap()
    });
    let up2 = Uplink::start(anon, db2.clone(), ob2.clone()).unwrap();
    let mut w = up2.watch();
    timeout(WAIT, w.wait_for(|s| s.errors >= 2))
        .await
        .expect("refused")
        .unwrap();
    let c = up2.counters();
    assert_eq!(c.connects, 0, "{c:?}");
    assert_eq!(c.acked_records, 0);

    // A missing file is an error that names it.
    let mut missing = cfg.clone();
    missing.tls = Some(TlsFiles {
        ca: p("nope.pem"),
        ..cfg.tls.clone().unwrap()
    });
    let e = Uplink::start(missing, db2.clone(), ob2.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server CA file") && e.contains("nope.pem"),
        "{e}"
    );
    up2.shutdown().await;
}
