//! A full card under a running agent, on a real (small) file system: a
//! tmpfs mounted for the test (root only; skipped with a message
//! elsewhere, and run in CI). The agent's commit fails with ENOSPC; it
//! stops acknowledging (the broker keeps the input), says so in /healthz
//! and the metrics, keeps serving them, and once space returns it resumes
//! by itself with nothing lost and nothing counted twice.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x5a_u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_card_pauses_input_and_space_coming_back_resumes_it_losing_nothing() {
    if !have_mosquitto() {
        eprintln!("skipped: needs Debian's mosquitto");
        return;
    }
    let base = TempDir::new("storage-full");
    let Some(mount) = Mount::tmpfs(&base.0.join("card"), "12m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root); CI runs this test");
        return;
    };
    let dir = mount.0.clone();
    let mut mosq = Mosquitto::start(&base.0);
    let addr = mosq.addr();
    let msgs = input(16_000, 6, T0);
    let expected = reference(PIPELINE, &msgs);
    let (a, b) = msgs.split_at(4_000);
    // A long checkpoint interval: the journal grows, so the full card is
    // met by a journal commit.
    let gw = gateway_file(
        &dir,
        addr,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[checkpoint]\ninterval = \"1h\"\n",
    );
    let gw_text = std::fs::read_to_string(&gw)
        .unwrap()
        .replace("[checkpoint]\ninterval = \"300ms\"\n", "");
    std::fs::write(&gw, gw_text).unwrap();
    let agent = InProcAgent::start(&gw);
    let maddr = agent.handle.metrics_addr.expect("metrics address");
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    agent.wait_subscribed(0);
    publish_all(addr, a, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "the first part journaled", || {
        agent.metrics().readings.load(Relaxed) == a.len() as u64
    });

    let filler = fill(&dir);
    publish_all(addr, b, Duration::from_secs(60));
    wait_until(
        Duration::from_secs(60),
        "the full card to fail a commit",
        || agent.metrics().storage_faults.load(Relaxed) >= 1,
    );
    let (status, body) = http_get(maddr, "/healthz");
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("storage failing"), "{body}");
    let (_, text) = http_get(maddr, "/metrics");
    assert!(text.contains("weir_storage_ok 0"), "{text}");
    assert!(
        agent.metrics().readings.load(Relaxed) < msgs.len() as u64,
        "everything was journaled on a full card?"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(90),
        "everything journaled after space came back",
        || agent.metrics().readings.load(Relaxed) >= msgs.len() as u64,
    );
    assert!(
        col.wait_for(expected.len(), Duration::from_secs(60)),
        "{} of {} windows",
        col.distinct(),
        expected.len()
    );
    let (status, _) = http_get(maddr, "/healthz");
    assert!(status.contains("200"), "{status}");
    let s = agent.stop();
    assert_eq!(
        s.readings,
        msgs.len() as u64,
        "nothing lost, nothing counted twice"
    );
    col.with(|seen| {
        assert!(seen.conflicts.is_empty(), "{:?}", seen.conflicts);
        for (id, want) in &expected {
            assert_eq!(seen.by_id.get(id), Some(want), "{id}");
        }
    });
    mosq.kill();
    drop(mount);
}
