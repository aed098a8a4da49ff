//! The redb store: checkpoint + truncation + replay, durability modes,
//! damaged bytes, compaction, and a model-based test against a `Vec`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use weir_agent::store::codec::crc32;
use weir_agent::store::{
    CodecError, DurabilityMode, Lsn, Sample, Store, StoreConfig, StoreError, JOURNAL, KEYS, META,
};
use weir_core::seam::CheckpointStore;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "weir-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn db(&self) -> PathBuf {
        self.0.join("weir.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key_of(lsn: Lsn) -> String {
    format!("sensor-{}", lsn % 13)
}

fn values_of(lsn: Lsn) -> Vec<f64> {
    vec![lsn as f64 * 0.5, 20.0 + (lsn % 100) as f64 / 100.0]
}

fn append(store: &mut Store, lsn: Lsn) {
    let key = key_of(lsn);
    let values = values_of(lsn);
    let got = store
        .append(&Sample {
            source: (lsn % 2) as u16,
            key: &key,
            ts: 1_700_000_000_000 + lsn as i64,
            now: lsn as i64 * 10,
            values: &values,
        })
        .unwrap();
    assert_eq!(got, lsn);
}

fn append_batch(store: &mut Store, n: u64) -> Lsn {
    for _ in 0..n {
        let lsn = store.next_lsn();
        append(store, lsn);
    }
    store.commit().unwrap()
}

/// Replays after `after`, checking every record's content; returns the LSNs.
fn replay(store: &Store, after: Lsn) -> Result<Vec<Lsn>, StoreError> {
    let mut r = store.replay_from(after)?;
    let mut out = Vec::new();
    while let Some((lsn, s)) = r.next_record()? {
        assert_eq!(s.key, key_of(lsn));
        assert_eq!(s.source, (lsn % 2) as u16);
        assert_eq!(s.ts, 1_700_000_000_000 + lsn as i64);
        assert_eq!(s.now, lsn as i64 * 10);
        assert_eq!(s.values, &values_of(lsn)[..]);
        out.push(lsn);
    }
    Ok(out)
}

fn small_chunks() -> StoreConfig {
    StoreConfig {
        max_chunk_bytes: 200,
        ..StoreConfig::default()
    }
}

/// Journal keys (first LSN of each chunk), read through redb directly.
fn chunk_keys(path: &Path) -> Vec<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(JOURNAL).unwrap();
    t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
}

fn overwrite_chunk(path: &Path, key: u64, bytes: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(JOURNAL).unwrap().insert(key, bytes).unwrap();
    txn.commit().unwrap();
}

#[test]
fn checkpoint_truncate_replay_gives_exactly_the_records_after() {
    let dir = TempDir::new("ckpt");
    let mut store = small_chunks().build(dir.db()).unwrap();
    for n in [7, 50, 1, 120, 33, 9] {
        append_batch(&mut store, n);
    }
    assert_eq!(store.committed_lsn(), 220);
    assert_eq!(replay(&store, 0).unwrap(), (1..=220).collect::<Vec<_>>());
    store.put(100, b"snapshot@100").unwrap();
    assert_eq!(store.latest().unwrap(), Some((100, &b"snapshot@100"[..])));
    store.sync().unwrap();
    // Not kept in memory after the sync: read back from the file.
    assert_eq!(store.latest().unwrap(), Some((100, &b"snapshot@100"[..])));
    assert!(store.stats().chunks_truncated > 0);
    assert_eq!(
        replay(&store, 100).unwrap(),
        (101..=220).collect::<Vec<_>>()
    );
    drop(store);

    // Every chunk left ends after the checkpoint; one may straddle it.
    let keys = chunk_keys(&dir.db());
    assert!(keys[0] <= 101, "{keys:?}");
    assert!(keys.len() < 2 || keys[1] > 101, "{keys:?}");

    let mut store = small_chunks().build(dir.db()).unwrap();
    assert_eq!(store.latest().unwrap(), Some((100, &b"snapshot@100"[..])));
    assert_eq!(store.truncated_through(), 100);
    assert_eq!(store.next_lsn(), 221);
    assert_eq!(
        replay(&store, 100).unwrap(),
        (101..=220).collect::<Vec<_>>()
    );
    assert_eq!(
        replay(&store, 150).unwrap(),
        (151..=220).collect::<Vec<_>>()
    );
    assert_eq!(replay(&store, 220).unwrap(), Vec::<Lsn>::new());
    assert!(matches!(
        replay(&store, 99),
        Err(StoreError::TruncatedAway {
            after: 99,
            truncated: 100,
            ..
        })
    ));

    // A checkpoint at the end empties the journal; LSNs go on.
    store.put(220, b"snapshot@220").unwrap();
    store.sync().unwrap();
    drop(store);
    assert_eq!(chunk_keys(&dir.db()), Vec::<u64>::new());
    let mut store = small_chunks().build(dir.db()).unwrap();
    assert_eq!(store.next_lsn(), 221);
    assert_eq!(append_batch(&mut store, 5), 225);
    assert_eq!(
        replay(&store, 220).unwrap(),
        (221..=225).collect::<Vec<_>>()
    );
}

#[test]
fn uncommitted_records_and_unsynced_checkpoints_are_lost() {
    let dir = TempDir::new("lost");
    let mut store = small_chunks().build(dir.db()).unwrap();
    append_batch(&mut store, 10);
    store.put(4, b"four").unwrap();
    store.sync().unwrap();
    for lsn in 11..=15 {
        append(&mut store, lsn);
    }
    store.put(8, b"eight").unwrap();
    assert_eq!(store.staged_records(), 5);
    drop(store); // a crash: nothing after the last commit and sync survives

    let store = small_chunks().build(dir.db()).unwrap();
    assert_eq!(store.latest().unwrap(), Some((4, &b"four"[..])));
    assert_eq!(store.next_lsn(), 11);
    assert_eq!(replay(&store, 4).unwrap(), (5..=10).collect::<Vec<_>>());
}

#[test]
fn checkpoints_cannot_point_ahead_or_behind() {
    let dir = TempDir::new("bounds");
    let mut store = StoreConfig::default().build(dir.db()).unwrap();
    append_batch(&mut store, 10);
    assert!(matches!(
        store.put(11, b"x"),
        Err(StoreError::CheckpointAhead { upto: 11, last: 10 })
    ));
    store.put(6, b"x").unwrap();
    store.sync().unwrap();
    assert!(matches!(
        store.put(5, b"x"),
        Err(StoreError::CheckpointBehind {
            upto: 5,
            truncated: 6
        })
    ));
    assert_eq!(store.latest().unwrap(), Some((6, &b"x"[..])));
}

#[test]
fn checkpoint_mode_writes_no_journal_and_loses_what_follows_the_checkpoint() {
    let dir = TempDir::new("mode");
    let cfg = || StoreConfig {
        mode: DurabilityMode::Checkpoint,
        ..StoreConfig::default()
    };
    let mut store = cfg().build(dir.db()).unwrap();
    assert_eq!(store.mode(), DurabilityMode::Checkpoint);
    assert_eq!(append_batch(&mut store, 1000), 1000);
    assert_eq!(store.stats().commits, 0);
    store.put(1000, b"snap").unwrap();
    store.sync().unwrap();
    append_batch(&mut store, 50);
    drop(store);
    assert_eq!(chunk_keys(&dir.db()), Vec::<u64>::new());

    let store = cfg().build(dir.db()).unwrap();
    assert_eq!(store.latest().unwrap(), Some((1000, &b"snap"[..])));
    assert_eq!(store.next_lsn(), 1001);
    assert_eq!(replay(&store, 1000).unwrap(), Vec::<Lsn>::new());
    assert_eq!("checkpoint".parse(), Ok(DurabilityMode::Checkpoint));
    assert_eq!("journal".parse(), Ok(DurabilityMode::Journal));
    assert!("fast".parse::<DurabilityMode>().is_err());
}

#[test]
fn damaged_chunks_are_errors_that_name_the_lsn() {
    let dir = TempDir::new("corrupt");
    let mut store = small_chunks().build(dir.db()).unwrap();
    for _ in 0..5 {
        append_batch(&mut store, 40);
    }
    drop(store);
    let keys = chunk_keys(&dir.db());
    assert!(keys.len() >= 6, "{keys:?}");
    let victim = keys[keys.len() / 2];

    // Garbage, then garbage with a valid CRC, then a dangling key id, then
    // a missing chunk: each is an error at `victim`, never a panic, and the
    // records before it replay.
    let mut valid_crc = vec![1u8, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 7, 0, 0, 0];
    valid_crc.extend_from_slice(&crc32(&valid_crc).to_le_bytes());
    let mut dangling = vec![1u8, 0, 0xFE, 0x7F, 0, 0, 0, 1, 0, 0, 0];
    dangling.extend_from_slice(&crc32(&dangling).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"this is not a journal chunk at all".to_vec()),
        ("empty", Vec::new()),
        ("valid crc", valid_crc),
        ("dangling key id", dangling),
    ];
    for (name, bytes) in cases {
        overwrite_chunk(&dir.db(), victim, &bytes);
        let store = small_chunks().build(dir.db()).unwrap();
        let mut r = store.replay_from(0).unwrap();
        let mut last = 0;
        let err = loop {
            match r.next_record() {
                Ok(Some((lsn, _))) => last = lsn,
                Ok(None) => panic!("{name}: damage not detected"),
                Err(e) => break e,
            }
        };
        assert_eq!(last, victim - 1, "{name}");
        match &err {
            StoreError::Corrupt { lsn, .. } => assert_eq!(*lsn, victim, "{name}"),
            StoreError::Gap { found, .. } => assert_eq!(*found, victim, "{name}"),
            e => panic!("{name}: {e}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("weir.redb") && msg.contains(&victim.to_string()),
            "{msg}"
        );
        if name == "dangling key id" {
            assert!(matches!(
                err,
                StoreError::Corrupt {
                    source: CodecError::UnknownKey { .. },
                    ..
                }
            ));
        }
    }

    // A chunk whose LSNs do not follow on is a gap.
    {
        let db = redb::Database::create(dir.db()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(JOURNAL).unwrap().remove(victim).unwrap();
        txn.commit().unwrap();
    }
    let store = small_chunks().build(dir.db()).unwrap();
    let mut r = store.replay_from(0).unwrap();
    let err = loop {
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("gap not detected"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, StoreError::Gap { expected, .. } if expected == victim),
        "{err}"
    );
}

#[test]
fn a_damaged_last_chunk_or_checkpoint_fails_the_open() {
    let dir = TempDir::new("open");
    let mut store = small_chunks().build(dir.db()).unwrap();
    append_batch(&mut store, 30);
    store.put(3, b"snap").unwrap();
    store.sync().unwrap();
    drop(store);
    let last = *chunk_keys(&dir.db()).last().unwrap();
    overwrite_chunk(&dir.db(), last, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let err = small_chunks().build(dir.db()).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { lsn, .. } if lsn == last),
        "{err}"
    );

    let db = redb::Database::create(dir.db()).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(JOURNAL).unwrap().remove(last).unwrap();
    {
        use redb::ReadableTable;
        let mut meta = txn.open_table(META).unwrap();
        let mut v = meta.get("checkpoint").unwrap().unwrap().value().to_vec();
        *v.last_mut().unwrap() ^= 0x40;
        meta.insert("checkpoint", &v[..]).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let err = small_chunks().build(dir.db()).unwrap_err();
    assert!(matches!(err, StoreError::CorruptCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn keys_beyond_the_dictionary_bound_are_inline() {
    let dir = TempDir::new("dict");
    let cfg = || StoreConfig {
        max_dict_keys: 5,
        ..small_chunks()
    };
    let mut store = cfg().build(dir.db()).unwrap();
    append_batch(&mut store, 60);
    assert_eq!(store.dict_len(), 5);
    drop(store);
    {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let db = redb::Database::create(dir.db()).unwrap();
        let n = db.begin_read().unwrap().open_table(KEYS).unwrap().len();
        assert_eq!(n.unwrap(), 5);
    }
    let store = cfg().build(dir.db()).unwrap();
    assert_eq!(replay(&store, 0).unwrap(), (1..=60).collect::<Vec<_>>());
}

#[test]
fn the_file_is_compacted_past_its_bound() {
    let dir = TempDir::new("compact");
    let mut store = StoreConfig {
        compact_above_bytes: 1 << 20,
        ..StoreConfig::default()
    }
    .build(dir.db())
    .unwrap();
    for _ in 0..30 {
        append_batch(&mut store, 10_000);
    }
    let before = store.file_len().unwrap();
    assert!(before > 2 << 20, "{before}");
    let upto = store.committed_lsn();
    store.put(upto, &[7; 10_000]).unwrap();
    store.sync().unwrap();
    let after = store.file_len().unwrap();
    assert_eq!(store.stats().compactions, 1);
    assert!(after < before / 2, "{before} -> {after}");
    // Small now: the next checkpoint does not compact again.
    append_batch(&mut store, 100);
    store.put(upto + 50, &[8; 10_000]).unwrap();
    store.sync().unwrap();
    assert_eq!(store.stats().compactions, 1);
    drop(store);
    let store = StoreConfig::default().build(dir.db()).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().0, upto + 50);
    assert_eq!(
        replay(&store, upto + 50).unwrap(),
        (upto + 51..=upto + 100).collect::<Vec<_>>()
    );
}

#[derive(Clone, Debug)]
enum Op {
    Append(u64),
    Commit,
    Checkpoint(u64),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..60).prop_map(Op::Append),
        3 => Just(Op::Commit),
        1 => (0u64..100).prop_map(Op::Checkpoint),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model: the durable journal is `1..=committed`, the durable
    /// checkpoint the last synced one; a crash keeps exactly those.
    #[test]
    fn store_matches_a_model_across_crashes(ops in proptest::collection::vec(op(), 1..25), chunk in 64usize..2000) {
        let dir = TempDir::new("model");
        let cfg = || StoreConfig { max_chunk_bytes: chunk, max_dict_keys: 7, ..StoreConfig::default() };
        let mut store = cfg().build(dir.db()).unwrap();
        let (mut next, mut committed, mut ckpt) = (1u64, 0u64, None::<(u64, Vec<u8>)>);
        for op in ops {
            match op {
                Op::Append(n) => {
                    for _ in 0..n { append(&mut store, next); next += 1; }
                }
                Op::Commit => {
                    prop_assert_eq!(store.commit().unwrap(), next - 1);
                    committed = next - 1;
                }
                Op::Checkpoint(back) => {
                    let floor = ckpt.as_ref().map_or(0, |c| c.0);
                    // A checkpoint covers committed records only.
                    let upto = committed.saturating_sub(back).max(floor);
                    let snap = upto.to_le_bytes().repeat(3);
                    store.put(upto, &snap).unwrap();
                    store.sync().unwrap();
                    ckpt = Some((upto, snap));
                }
                Op::Crash => {
                    drop(store);
                    store = cfg().build(dir.db()).unwrap();
                    next = committed.max(ckpt.as_ref().map_or(0, |c| c.0)) + 1;
                    committed = next - 1;
                }
            }
            let latest = store.latest().unwrap().map(|(u, s)| (u, s.to_vec()));
            prop_assert_eq!(&latest, &ckpt);
            prop_assert_eq!(store.next_lsn(), next);
        }
        drop(store);
        let store = cfg().build(dir.db()).unwrap();
        let from = ckpt.as_ref().map_or(0, |c| c.0);
        let want: Vec<Lsn> = (from + 1..=committed).collect();
        prop_assert_eq!(replay(&store, from).unwrap(), want);
    }
}

#[test]
fn the_lifetime_byte_count_survives_a_reopen_with_each_checkpoint() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = TempDir::new("lifetime");
    let mut store = StoreConfig::default().build(dir.db()).unwrap();
    append_batch(&mut store, 100);
    let io = store.io().clone();
    assert!(io.bytes_written.load(Relaxed) > 0 && io.syncs.load(Relaxed) > 0);
    assert_eq!(
        store.lifetime_bytes_written(),
        io.bytes_written.load(Relaxed)
    );
    store.put(100, b"snap").unwrap();
    let at_checkpoint = store.lifetime_bytes_written();
    store.sync().unwrap();
    // Written after the checkpoint and never checkpointed: not persisted.
    append_batch(&mut store, 10);
    drop(store);

    let mut store = StoreConfig::default().build(dir.db()).unwrap();
    let reopened = store.lifetime_bytes_written();
    let since_open = store.io().bytes_written.load(Relaxed);
    assert_eq!(reopened, at_checkpoint + since_open);
    store.put(110, b"snap").unwrap();
    let second = store.lifetime_bytes_written();
    store.sync().unwrap();
    drop(store);
    let store = StoreConfig::default().build(dir.db()).unwrap();
    assert_eq!(
        store.lifetime_bytes_written() - store.io().bytes_written.load(Relaxed),
        second
    );
    assert!(second > at_checkpoint);
}
