//! Crash injection for the redb journal: a child process (this test binary,
//! run again with `WEIR_STORE_CRASH_DIR` set) appends, commits and
//! checkpoints, printing each LSN after `commit` (or `sync`) returned; the
//! parent SIGKILLs it after a random number of commits, reopens the file and
//! checks that everything the child reported durable is there, intact,
//! contiguous, and that nothing else is invented.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weir_agent::gen::SplitMix64;
use weir_agent::store::{Lsn, Sample, Store, StoreConfig};
use weir_core::seam::CheckpointStore;

const DIR_ENV: &str = "WEIR_STORE_CRASH_DIR";
const SEED_ENV: &str = "WEIR_STORE_CRASH_SEED";
const ITERATIONS: u64 = 30;

/// What the child writes at `lsn`: a pure function, so the parent can check
/// every record.
fn sample_for(lsn: Lsn) -> (u16, String, i64, i64, Vec<f64>) {
    let key = format!("k{}", lsn % 37);
    let values = (0..lsn % 4)
        .map(|i| match i {
            0 => lsn as f64 / 8.0,
            1 => -(lsn as f64).sqrt(),
            2 => f64::from_bits(0x7ff8_0000_0000_0000 | lsn),
            _ => lsn as f64 * 0.001,
        })
        .collect();
    let ts = lsn as i64 * 3 - (lsn % 5) as i64;
    ((lsn % 3) as u16, key, ts, lsn as i64 * 2 + 7, values)
}

fn snapshot_for(upto: Lsn) -> Vec<u8> {
    (0..1000 + upto % 3000)
        .map(|i| (i ^ upto.wrapping_mul(31)) as u8)
        .collect()
}

fn config(seed: u64) -> StoreConfig {
    StoreConfig {
        // Many chunks per commit, and keys beyond the dictionary inline.
        max_chunk_bytes: 64 + (seed % 7) as usize * 300,
        max_dict_keys: 20,
        compact_above_bytes: if seed.is_multiple_of(3) { 1 } else { u64::MAX },
        ..StoreConfig::default()
    }
}

fn append(store: &mut Store, lsn: Lsn) {
    let (source, key, ts, now, values) = sample_for(lsn);
    let got = store
        .append(&Sample {
            source,
            key: &key,
            ts,
            now,
            values: &values,
        })
        .unwrap();
    assert_eq!(got, lsn);
}

/// The child's role; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut rng = SplitMix64::new(seed);
    let mut store = config(seed)
        .build(PathBuf::from(dir).join("weir.redb"))
        .unwrap();
    for _ in 0..100_000 {
        for _ in 0..1 + rng.below(300) {
            let lsn = store.next_lsn();
            append(&mut store, lsn);
        }
        let c = store.commit().unwrap();
        println!("C {c}");
        if rng.below(4) == 0 {
            let upto = c - rng.below((c - store.truncated_through()).min(200) + 1);
            store.put(upto, &snapshot_for(upto)).unwrap();
            store.sync().unwrap();
            println!("K {upto}");
        }
    }
}

fn check(path: &Path, seed: u64, committed: Lsn, checkpointed: Option<Lsn>) -> Lsn {
    let mut store = config(seed).build(path).unwrap();
    let start = match store.latest().unwrap() {
        Some((upto, snap)) => {
            assert!(
                checkpointed.is_none_or(|k| upto >= k),
                "seed {seed}: checkpoint {upto} older than the reported {checkpointed:?}"
            );
            assert_eq!(snap, snapshot_for(upto), "seed {seed}: snapshot of {upto}");
            upto
        }
        None => {
            assert_eq!(checkpointed, None, "seed {seed}: reported checkpoint lost");
            0
        }
    };
    let mut replay = store.replay_from(start).unwrap();
    let mut expected = start + 1;
    while let Some((lsn, s)) = replay
        .next_record()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
    {
        assert_eq!(lsn, expected, "seed {seed}: journal not contiguous");
        let (source, key, ts, now, values) = sample_for(lsn);
        assert_eq!(
            (s.source, s.key, s.ts, s.now),
            (source, &*key, ts, now),
            "seed {seed} lsn {lsn}"
        );
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(s.values), bits(&values), "seed {seed} lsn {lsn}");
        expected += 1;
    }
    drop(replay);
    let last = expected - 1;
    assert!(
        last >= committed,
        "seed {seed}: reported committed {committed}, journal ends at {last}"
    );
    assert_eq!(store.next_lsn(), last + 1, "seed {seed}");
    // Still writable, and the LSNs go on.
    append(&mut store, last + 1);
    assert_eq!(store.commit().unwrap(), last + 1);
    last
}

#[test]
fn sigkill_at_random_points_loses_nothing_committed() {
    let exe = std::env::current_exe().unwrap();
    let base = std::env::temp_dir().join(format!("weir-store-crash-{}", std::process::id()));
    let mut rng = SplitMix64::new(0x5EED_0006);
    let mut checkpoints_seen = 0;
    for iter in 0..ITERATIONS {
        let seed = rng.next_u64() % 1_000_000;
        let dir = base.join(iter.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let kill_after = 1 + rng.below(40);
        let mut child = Command::new(&exe)
            .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &dir)
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut commits, mut committed, mut checkpointed) = (0, 0, None);
        while commits < kill_after {
            let Some(line) = lines.next() else {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "seed {seed}: child ended early: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let line = line.unwrap();
            if let Some(c) = line.strip_prefix("C ") {
                committed = c.parse().unwrap();
                commits += 1;
            } else if let Some(k) = line.strip_prefix("K ") {
                checkpointed = Some(k.parse().unwrap());
                checkpoints_seen += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let last = check(&dir.join("weir.redb"), seed, committed, checkpointed);
        assert!(last >= committed);
    }
    assert!(
        checkpoints_seen > 0,
        "the test never crashed near a checkpoint"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
