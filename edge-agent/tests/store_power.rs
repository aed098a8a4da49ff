//! Power cuts and failing cards below redb, simulated: [`SimDisk`] keeps a
//! durable and a live image, a cut keeps each sector written since the
//! last `fsync` at random (torn pages), and faults inject ENOSPC, EIO and
//! short writes. Thousands of seeded schedules run in seconds; each checks
//! by counting that every commit the store reported durable is there,
//! intact and contiguous, nothing is invented, and the store opens and
//! takes writes again.

use weir_agent::gen::SplitMix64;
use weir_agent::store::backend::{Faults, SimDisk};
use weir_agent::store::{Lsn, Sample, Store, StoreConfig, StoreError};
use weir_core::seam::CheckpointStore;

fn sample_for(lsn: Lsn) -> (u16, String, i64, Vec<f64>) {
    let key = format!("pump-{}", lsn % 23);
    let values = (0..1 + lsn % 3)
        .map(|i| lsn as f64 * 0.25 + i as f64)
        .collect();
    ((lsn % 2) as u16, key, lsn as i64 * 10, values)
}

fn snapshot_for(upto: Lsn) -> Vec<u8> {
    (0..200 + upto % 700).map(|i| (i ^ upto) as u8).collect()
}

fn config(seed: u64) -> StoreConfig {
    StoreConfig {
        max_chunk_bytes: 64 + (seed % 5) as usize * 500,
        max_dict_keys: 10,
        compact_above_bytes: u64::MAX,
        cache_bytes: 1 << 20,
        ..StoreConfig::default()
    }
}

fn open(disk: &SimDisk, seed: u64) -> Result<Store, StoreError> {
    Store::open_backend(disk.clone(), "sim/weir.redb", config(seed))
}

fn append(store: &mut Store, lsn: Lsn) -> Result<(), StoreError> {
    let (source, key, ts, values) = sample_for(lsn);
    let got = store.append(&Sample {
        source,
        key: &key,
        ts,
        now: ts + 1,
        values: &values,
    })?;
    assert_eq!(got, lsn);
    Ok(())
}

/// Opens what is left and checks it against what the store promised:
/// every LSN up to `committed` is there (in the journal or under the
/// checkpoint), the checkpoint is at least `checkpointed`, records are
/// exact, and the store takes new writes. Returns the last LSN found.
fn check(disk: &SimDisk, seed: u64, committed: Lsn, checkpointed: Lsn, attempted: Lsn) -> Lsn {
    let mut store = open(disk, seed).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
    let start = match store.latest().unwrap() {
        Some((upto, snap)) => {
            assert!(
                upto >= checkpointed,
                "seed {seed}: checkpoint {upto} < {checkpointed}"
            );
            assert_eq!(snap, snapshot_for(upto), "seed {seed}: snapshot {upto}");
            upto
        }
        None => {
            assert_eq!(checkpointed, 0, "seed {seed}: the checkpoint was lost");
            0
        }
    };
    let mut replay = store.replay_from(start).unwrap();
    let mut expected = start + 1;
    while let Some((lsn, s)) = replay
        .next_record()
        .unwrap_or_else(|e| panic!("seed {seed}: replay: {e}"))
    {
        assert_eq!(lsn, expected, "seed {seed}: gap");
        let (source, key, ts, values) = sample_for(lsn);
        assert_eq!(
            (s.source, s.key, s.ts),
            (source, &*key, ts),
            "seed {seed} lsn {lsn}"
        );
        assert_eq!(s.values, &values[..], "seed {seed} lsn {lsn}");
        expected += 1;
    }
    drop(replay);
    let last = expected - 1;
    assert!(
        last >= committed,
        "seed {seed}: committed {committed}, found up to {last}"
    );
    assert!(
        last <= attempted,
        "seed {seed}: invented records up to {last} > {attempted}"
    );
    append(&mut store, last + 1).unwrap();
    assert_eq!(store.commit().unwrap(), last + 1, "seed {seed}");
    last
}

/// One schedule: random appends, commits and checkpoints, with a fault at
/// a random step; then a power cut. `faults` picks the kind of fault.
fn schedule(seed: u64, fault: u64) {
    let mut rng = SplitMix64::new(seed);
    let disk = SimDisk::new();
    let mut store = open(&disk, seed).unwrap();
    let (mut committed, mut checkpointed, mut attempted) = (0, 0, 0);
    let steps = 1 + rng.below(30);
    let fault_at = rng.below(steps + 1);
    for step in 0..steps {
        if step == fault_at {
            disk.set_faults(match fault {
                0 => Faults {
                    fail_write_in: Some(rng.below(6)),
                    short_write: Some(rng.below(5000) as usize),
                    ..Faults::default()
                },
                1 => Faults {
                    fail_sync: true,
                    ..Faults::default()
                },
                2 => Faults {
                    capacity: Some(disk.live().len() as u64 + rng.below(20_000)),
                    ..Faults::default()
                },
                _ => Faults::default(),
            });
        }
        for _ in 0..1 + rng.below(80) {
            let lsn = store.next_lsn();
            if append(&mut store, lsn).is_err() {
                break;
            }
            attempted = attempted.max(lsn);
        }
        match store.commit() {
            Ok(c) => committed = c,
            Err(_) => break, // redb latched the error: the agent reopens
        }
        if rng.below(3) == 0 {
            let upto = committed - rng.below((committed - store.truncated_through()).min(50) + 1);
            store.put(upto, &snapshot_for(upto)).unwrap();
            match store.sync() {
                Ok(()) => checkpointed = upto,
                Err(_) => break,
            }
        }
    }
    let cut = disk.power_cut(seed ^ 0xC0FFEE);
    drop(store);
    check(
        &SimDisk::from_image(cut),
        seed,
        committed,
        checkpointed,
        attempted,
    );
    // And without a power cut: a reopen after the fault, once it is gone,
    // finds at least everything reported durable.
    disk.set_faults(Faults::default());
    check(&disk, seed, committed, checkpointed, attempted);
}

#[test]
fn power_cuts_after_clean_commits_lose_nothing_reported_durable() {
    for seed in 0..150 {
        schedule(seed, 3);
    }
}

#[test]
fn a_write_error_or_short_write_then_a_power_cut_loses_nothing_reported_durable() {
    for seed in 0..200 {
        schedule(seed, 0);
    }
}

#[test]
fn a_failed_fsync_then_a_power_cut_loses_nothing_reported_durable() {
    for seed in 0..120 {
        schedule(seed, 1);
    }
}

#[test]
fn a_full_disk_fails_the_commit_and_the_reopened_store_goes_on() {
    for seed in 0..120 {
        schedule(seed, 2);
    }
}

/// A full disk, concretely: the commit fails with an error that says so,
/// nothing panics, the failed store refuses further writes (redb latches
/// I/O errors), and once space returns a reopened store has every
/// acknowledged record and takes the unacknowledged ones again.
#[test]
fn enospc_is_an_error_and_space_coming_back_heals_after_reopen() {
    let disk = SimDisk::new();
    let mut store = open(&disk, 1).unwrap();
    for lsn in 1..=100 {
        append(&mut store, lsn).unwrap();
    }
    assert_eq!(store.commit().unwrap(), 100);
    disk.set_faults(Faults {
        capacity: Some(disk.live().len() as u64),
        ..Faults::default()
    });
    let mut failed = None;
    for lsn in 101..=5_000 {
        append(&mut store, lsn).unwrap();
        if lsn % 100 == 0 {
            if let Err(e) = store.commit() {
                failed = Some((lsn, e));
                break;
            }
        }
    }
    let (upto, e) = failed.expect("the full disk never failed a commit");
    let msg = e.to_string();
    assert!(
        msg.contains("sim/weir.redb") && msg.contains("no storage space"),
        "{msg}"
    );
    assert!(weir_agent::store::is_storage_fault(&e), "{e:?}");
    drop(store);
    disk.set_faults(Faults::default());
    let last = check(&disk, 1, upto - 100, 0, upto);
    assert!(last >= upto - 100);
}

#[test]
fn a_new_store_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("weir-store-mode-{}", std::process::id()));
    let path = dir.join("new/sub/weir.redb");
    drop(StoreConfig::default().build(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(mode, 0o600, "weir.redb is {mode:o}");
}
