//! Damaged metadata and contract misuse found in review: errors, never
//! panics, and no checkpoint or truncation past the durable journal.

use std::path::PathBuf;
use weir_agent::store::codec::{crc32, BatchEncoder, KeyRef};
use weir_agent::store::{Sample, StoreConfig, JOURNAL, META};
use weir_core::seam::CheckpointStore;

fn dir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("weir-rev-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p.join("weir.redb")
}

fn s<'a>(key: &'a str, v: &'a [f64]) -> Sample<'a> {
    Sample {
        source: 0,
        key,
        ts: 1,
        now: 1,
        values: v,
    }
}

#[test]
fn a_damaged_key_dictionary_is_an_error_not_a_panic() {
    let path = dir("keyutf8");
    let mut st = StoreConfig::default().build(&path).unwrap();
    st.append(&s("KEYMARKERxyz", &[1.0])).unwrap();
    st.commit().unwrap();
    drop(st);
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = bytes
        .windows(12)
        .position(|w| w == b"KEYMARKERxyz")
        .expect("key bytes in file");
    bytes[pos] = 0xff; // a flipped byte on the card
    std::fs::write(&path, &bytes).unwrap();
    let r = std::panic::catch_unwind(|| StoreConfig::default().build(&path).map(|_| ()));
    assert!(
        r.is_ok(),
        "open panicked on a damaged key instead of returning an error"
    );
}

#[test]
fn a_huge_truncation_point_is_an_error_not_a_panic() {
    let path = dir("trunc");
    drop(StoreConfig::default().build(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("truncated", &u64::MAX.to_le_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let r = std::panic::catch_unwind(|| StoreConfig::default().build(&path).map(|_| ()));
    assert!(r.is_ok(), "open panicked on truncated = u64::MAX");
}

fn chunk(count_override: Option<u32>) -> Vec<u8> {
    let mut e = BatchEncoder::new();
    e.push(KeyRef::Inline("k"), &s("k", &[1.0]));
    let mut b = e.finish(|b| b.to_vec()).unwrap();
    if let Some(c) = count_override {
        let n = b.len();
        b[n - 8..n - 4].copy_from_slice(&c.to_le_bytes());
        let crc = crc32(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[test]
fn a_chunk_with_no_record_is_an_error_not_a_panic() {
    let path = dir("count0");
    drop(StoreConfig::default().build(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(JOURNAL)
            .unwrap()
            .insert(0u64, &chunk(Some(0))[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let r = std::panic::catch_unwind(|| StoreConfig::default().build(&path).map(|_| ()));
    assert!(r.is_ok(), "open panicked on a count-0 chunk at key 0");
}

#[test]
fn a_chunk_at_a_huge_key_is_an_error_not_a_panic() {
    let path = dir("hugekey");
    drop(StoreConfig::default().build(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(JOURNAL)
            .unwrap()
            .insert(u64::MAX, &chunk(None)[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let r = std::panic::catch_unwind(|| StoreConfig::default().build(&path).map(|_| ()));
    assert!(r.is_ok(), "open panicked on a chunk keyed u64::MAX");
}

#[test]
fn a_checkpoint_cannot_cover_records_that_are_not_committed() {
    let path = dir("staged");
    let mut st = StoreConfig::default().build(&path).unwrap();
    for _ in 0..5 {
        st.append(&s("a", &[1.0])).unwrap();
    }
    assert_eq!(st.commit().unwrap(), 5); // messages 1..=5 acked
    for _ in 0..5 {
        st.append(&s("a", &[2.0])).unwrap(); // 6..=10 staged, not acked
    }
    assert!(st.put(10, b"snapshot including 6..=10").is_err());
    st.put(5, b"snapshot through 5").unwrap();
    st.sync().unwrap();
    drop(st); // crash before the second commit
    let st = StoreConfig::default().build(&path).unwrap();
    let (upto, _) = st.latest().unwrap().unwrap();
    assert_eq!(
        (upto, st.next_lsn()),
        (5, 6),
        "redelivered 6..=10 get their LSNs again"
    );
}

#[test]
fn truncation_cannot_pass_the_durable_journal() {
    let path = dir("truncbeyond");
    let mut st = StoreConfig::default().build(&path).unwrap();
    for _ in 0..3 {
        st.append(&s("a", &[1.0])).unwrap();
    }
    st.commit().unwrap();
    assert!(st.truncate_through(1000).is_err());
    st.truncate_through(2).unwrap();
    let l = st.append(&s("a", &[1.0])).unwrap();
    st.commit().unwrap();
    drop(st);
    let st = StoreConfig::default().build(&path).unwrap();
    assert_eq!((l, st.next_lsn()), (4, 5), "LSNs contiguous across reopen");
}

/// A SIGKILL or power cut while a gateway first creates its store used to
/// leave `weir.redb` without redb's header, and every later start failed
/// ("magic number mismatch") for ever. The store is now made under a
/// temporary name and renamed into place once complete: what a crash
/// leaves is that unfinished temporary file, which the next start replaces.
#[test]
fn a_store_whose_creation_was_cut_short_is_made_again_on_the_next_start() {
    let path = dir("create");
    let tmp = path.with_file_name(".weir.redb.new");
    std::fs::write(&tmp, [0x5a; 700]).unwrap(); // half a header, then the kill
    assert!(!path.exists());
    let mut st = StoreConfig::default().build(&path).unwrap();
    st.append(&s("k", &[1.0])).unwrap();
    st.commit().unwrap();
    drop(st);
    assert!(!tmp.exists(), "the unfinished file is gone");
    // A complete store: it opens again, with its reading.
    let st = StoreConfig::default().build(&path).unwrap();
    assert_eq!(st.committed_lsn(), 1);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}
