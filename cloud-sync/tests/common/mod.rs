//! Shared test helpers: temporary databases, records, brokers, a link that
//! can be cut.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use weir_cloud_sync::wire::{record_id, Anomaly, OutputRecord, RecordKind};

pub mod net;

/// A fresh path under the system temp dir, removed on drop.
pub struct TempDb {
    pub path: PathBuf,
}

impl TempDb {
    pub fn new(tag: &str) -> TempDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("weir-cloud-sync-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDb { path: dir }
    }

    pub fn file(&self) -> PathBuf {
        self.path.join("gw.redb")
    }

    pub fn open(&self) -> redb::Database {
        redb::Database::create(self.file()).unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A W1-like window output: key `s<key>`, 10 s windows.
pub fn window(key: u32, k: i64) -> OutputRecord {
    let start = 1_700_000_000_000 + k * 10_000;
    let key = format!("s{key:04}");
    OutputRecord {
        id: record_id("gw1", "w", &key, start, 0),
        kind: RecordKind::Window,
        key,
        op: "w".into(),
        start,
        end: start + 10_000,
        fields: vec![
            ("count".into(), 10.0),
            ("mean".into(), 21.123_456_789),
            ("min".into(), 19.5),
            ("max".into(), 23.25),
            ("stddev".into(), 0.987_654_321),
        ],
        anomaly: Some(Anomaly {
            flag: false,
            score: 0.125,
        }),
        emitted_at: start + 12_000,
        text: Vec::new(),
    }
}

/// The same window, flagged: an alert.
pub fn alert(key: u32, k: i64) -> OutputRecord {
    let mut r = window(key, k);
    r.kind = RecordKind::Alert;
    r.anomaly = Some(Anomaly {
        flag: true,
        score: 0.99,
    });
    r
}
