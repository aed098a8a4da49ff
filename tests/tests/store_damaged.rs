//! A store damaged beyond redb's repair (a flipped bit in a committed
//! journal chunk): `weir check --store` says so offline; `weir run` moves
//! it aside (`weir.redb.damaged-<time>`), says so (metric, dead letter,
//! log) and starts a new store, ingesting as before, instead of refusing
//! to boot.

use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use weir_agent::store::{Sample, StoreConfig};
use weir_core::seam::CheckpointStore;
use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;
const MARK: &str = "KEYMARKER-bearing-7";

/// A store whose journal holds `MARK` inline in a chunk, one byte flipped.
fn damaged_store(data: &std::path::Path) {
    let path = data.join("weir.redb");
    let mut st = StoreConfig {
        max_dict_keys: 0, // keys inline in the chunks
        ..StoreConfig::default()
    }
    .build(&path)
    .unwrap();
    for i in 0..50 {
        st.append(&Sample {
            source: 0,
            key: MARK,
            ts: T0 + i,
            now: T0 + i,
            values: &[1.0],
        })
        .unwrap();
    }
    st.commit().unwrap();
    st.put(10, b"not an engine snapshot, never read")
        .unwrap_or(());
    drop(st);
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = bytes
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("marker in the file");
    bytes[pos + 3] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
}

fn weir(args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_exe()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn weir_check_store_reports_a_sound_store_and_a_damaged_one() {
    let dir = TempDir::new("check-store");
    let data = dir.0.join("data");
    let mut st = StoreConfig::default()
        .build(data.join("weir.redb"))
        .unwrap();
    for i in 0..100 {
        st.append(&Sample {
            source: 0,
            key: "pump-1",
            ts: T0 + i,
            now: T0 + i,
            values: &[i as f64],
        })
        .unwrap();
    }
    st.commit().unwrap();
    st.put(40, b"snapshot").unwrap();
    st.sync().unwrap();
    drop(st);
    let before = std::fs::read(data.join("weir.redb")).unwrap();
    let (ok, text) = weir(&["check", "--store", data.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("checkpoint: covers LSN 1..=40"), "{text}");
    assert!(text.contains("journal: LSN 41..=100"), "{text}");
    assert!(text.contains("store ok"), "{text}");
    assert_eq!(
        std::fs::read(data.join("weir.redb")).unwrap(),
        before,
        "check wrote to the store"
    );

    let dir2 = TempDir::new("check-store-bad");
    let data2 = dir2.0.join("data");
    damaged_store(&data2);
    let (ok, text) = weir(&["check", "--store", data2.to_str().unwrap()]);
    assert!(!ok, "a damaged store passed: {text}");
    assert!(text.contains("DAMAGED"), "{text}");
}

#[test]
fn a_damaged_store_is_moved_aside_and_the_gateway_keeps_working() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("store-damaged");
    damaged_store(&dir.0.join("data"));
    let msgs = input(3_000, 4, T0);
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    let agent = InProcAgent::start(&gateway_file(&dir.0, addr, ""));
    assert_eq!(agent.metrics().stores_moved_aside.load(Relaxed), 1);
    let aside: Vec<_> = std::fs::read_dir(dir.0.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("weir.redb.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        agent.metrics().render_dead().contains("store_damaged"),
        "{}",
        agent.metrics().render_dead()
    );
    agent.wait_subscribed(0);
    publish_all(addr, &msgs, Duration::from_secs(60));
    assert!(col.wait_for(expected.len(), Duration::from_secs(60)));
    wait_until(Duration::from_secs(30), "every reading journaled", || {
        agent.metrics().readings.load(Relaxed) == msgs.len() as u64
    });
    let s = agent.stop();
    assert_eq!(s.readings, msgs.len() as u64);
    col.assert_matches(&expected);
}
