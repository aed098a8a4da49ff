//! Benchmark of the redb journal (`weir_agent::store`) beside a plain-file
//! reference, in the same run.
//!
//! `cargo run --release -p weir-agent --example store_bench -- [READINGS] [BATCH...]`
//! (defaults: 1,000,000 readings; batches of 1,000, then 250 and 4,000 on a
//! quarter of the readings).
//!
//! Input: W1 rows (`weir gen w1`: 1,000 keys, `s0123,1700000000123,21.1234`,
//! ~28 bytes each), parsed to samples; "payload" is the CSV bytes.
//! Journal: `append` each sample, `commit` (one durable redb transaction)
//! per batch. Bytes written come from `/proc/self/io` `write_bytes` (bytes
//! this process sent to the block layer); where that reads 0 (some
//! containers) the file growth is the only figure. References: the CSV
//! bytes, then the store's own encoded chunks, appended to a plain file
//! with `write_all` + `sync_data` per batch.
//! Checkpoint mode: the same readings, no journal, a 1.5 MB checkpoint per
//! 100,000 readings.
//! Recovery: a 1.5 MB checkpoint (the size of a 10k-key snapshot) plus a
//! journal of all readings after it; then open + `latest` + full replay,
//! once after a clean close and once after the writer (a child process)
//! exited without closing, so that redb repairs the file on open.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use weir_agent::gen::{SplitMix64, W1};
use weir_agent::store::codec::{BatchEncoder, KeyRef};
use weir_agent::store::{DurabilityMode, Sample, StoreConfig};
use weir_core::seam::CheckpointStore;

struct Row {
    key: String,
    ts: i64,
    now: i64,
    value: f64,
    payload: usize,
}

fn write_bytes() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rows(n: u64) -> Vec<Row> {
    let mut csv = Vec::new();
    W1::new(n, 1).write(&mut csv).expect("generate W1");
    let text = String::from_utf8(csv).expect("W1 is ASCII");
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let mut f = l.split(',');
            let key = f.next().expect("key").to_string();
            let ts = f.next().expect("ts").parse().expect("ts");
            let value = f.next().expect("value").parse().expect("value");
            Row {
                key,
                ts,
                // W1 arrives 1 ms apart.
                now: 1_700_000_000_000 + i as i64,
                value,
                payload: l.len() + 1,
            }
        })
        .collect()
}

struct Figures {
    secs: f64,
    written: u64,
    grown: u64,
}

fn report(name: &str, rows: &[Row], f: &Figures) {
    let n = rows.len() as f64;
    let payload: usize = rows.iter().map(|r| r.payload).sum();
    let per = f.written as f64 / n;
    println!(
        "  {name:<34} {:>10.0} readings/s  write_bytes {:>7.1} B/reading ({:>5.2}× payload)  file growth {:>6.1} B/reading",
        n / f.secs,
        per,
        per / (payload as f64 / n),
        f.grown as f64 / n,
    );
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    p
}

fn bench_store(dir: &Path, rows: &[Row], batch: usize, cfg: StoreConfig) -> Figures {
    let path = fresh(dir, "bench.redb");
    let mut store = cfg.build(&path).expect("open store");
    let len0 = store.file_len().expect("len");
    let w0 = write_bytes();
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        for r in chunk {
            store
                .append(&Sample {
                    source: 0,
                    key: &r.key,
                    ts: r.ts,
                    now: r.now,
                    values: &[r.value],
                })
                .expect("append");
        }
        store.commit().expect("commit");
    }
    let secs = t.elapsed().as_secs_f64();
    let written = write_bytes() - w0;
    let grown = store.file_len().expect("len") - len0;
    let s = store.stats();
    println!(
        "  (store: {} commits, {} chunks, {:.2} encoded B/reading, file {:.1} MB)",
        s.commits,
        s.chunks,
        s.journal_bytes as f64 / rows.len() as f64,
        (len0 + grown) as f64 / 1e6
    );
    Figures {
        secs,
        written,
        grown,
    }
}

fn bench_plain(dir: &Path, rows: &[Row], batch: usize, encoded: bool) -> Figures {
    let path = fresh(dir, "bench.plain");
    let mut f = File::create(&path).expect("create");
    let mut dict = std::collections::HashMap::new();
    let mut enc = BatchEncoder::new();
    let mut buf = Vec::new();
    let w0 = write_bytes();
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        buf.clear();
        for r in chunk {
            if encoded {
                let n = dict.len() as u32;
                let id = *dict.entry(r.key.as_str()).or_insert(n);
                let s = Sample {
                    source: 0,
                    key: &r.key,
                    ts: r.ts,
                    now: r.now,
                    values: &[r.value],
                };
                enc.push(KeyRef::Id(id), &s);
            } else {
                buf.extend_from_slice(r.key.as_bytes());
                buf.push(b',');
                buf.extend_from_slice(r.ts.to_string().as_bytes());
                buf.push(b',');
                buf.extend_from_slice(format!("{:.4}\n", r.value).as_bytes());
            }
        }
        if encoded {
            enc.finish(|b| buf.extend_from_slice(b));
        }
        f.write_all(&buf).expect("write");
        f.sync_data().expect("sync");
    }
    let secs = t.elapsed().as_secs_f64();
    let written = write_bytes() - w0;
    let grown = f.metadata().expect("len").len();
    Figures {
        secs,
        written,
        grown,
    }
}

/// Writes the recovery database: a 1.5 MB checkpoint at LSN 0, then every
/// row journaled in commits of 10,000. With `crash`, the process exits
/// without closing the database, as a crash would (redb then repairs on
/// open).
fn write_recovery_db(path: &Path, rows: &[Row], crash: bool) {
    let mut rng = SplitMix64::new(7);
    let snapshot: Vec<u8> = (0..1_500_000).map(|_| rng.next_u64() as u8).collect();
    let mut store = StoreConfig::default().build(path).expect("open");
    store.put(0, &snapshot).expect("put");
    store.sync().expect("sync");
    for chunk in rows.chunks(10_000) {
        for r in chunk {
            store
                .append(&Sample {
                    source: 0,
                    key: &r.key,
                    ts: r.ts,
                    now: r.now,
                    values: &[r.value],
                })
                .expect("append");
        }
        store.commit().expect("commit");
    }
    if crash {
        std::process::exit(0);
    }
}

fn bench_recovery(path: &Path, rows: &[Row], what: &str) {
    let len = fs::metadata(path).expect("len").len();
    let t = Instant::now();
    let store = StoreConfig::default().build(path).expect("open");
    let t_open = t.elapsed();
    let (upto, snap) = store.latest().expect("latest").expect("a checkpoint");
    let snap_len = snap.len();
    let t_ckpt = t.elapsed();
    let mut replay = store.replay_from(upto).expect("replay");
    let (mut n, mut sum) = (0u64, 0.0);
    while let Some((_, s)) = replay.next_record().expect("record") {
        n += 1;
        sum += s.values[0];
    }
    let total = t.elapsed();
    assert_eq!(n, rows.len() as u64);
    println!(
        "  {what}: open {:.1} ms, latest checkpoint ({} B) {:.1} ms, replay {} records {:.1} ms: total {:.1} ms  (file {:.1} MB, checksum {sum:.1})",
        t_open.as_secs_f64() * 1e3,
        snap_len,
        (t_ckpt - t_open).as_secs_f64() * 1e3,
        n,
        (total - t_ckpt).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        len as f64 / 1e6,
    );
}

/// Checkpoint mode: no journal writes; a 1.5 MB checkpoint every
/// `every` readings.
fn bench_checkpoint_mode(dir: &Path, rows: &[Row], every: usize) {
    let path = fresh(dir, "ckpt.redb");
    let mut store = StoreConfig {
        mode: DurabilityMode::Checkpoint,
        ..StoreConfig::default()
    }
    .build(&path)
    .expect("open");
    let snapshot = vec![0x5A; 1_500_000];
    let w0 = write_bytes();
    let t = Instant::now();
    for chunk in rows.chunks(every) {
        for r in chunk {
            store
                .append(&Sample {
                    source: 0,
                    key: &r.key,
                    ts: r.ts,
                    now: r.now,
                    values: &[r.value],
                })
                .expect("append");
        }
        let upto = store.commit().expect("commit");
        store.put(upto, &snapshot).expect("put");
        store.sync().expect("sync");
    }
    let secs = t.elapsed().as_secs_f64();
    let written = write_bytes() - w0;
    let n = rows.len() as f64;
    let checkpoints = store.stats().checkpoints;
    println!(
        "  checkpoint mode, 1.5 MB checkpoint per {every} readings: {:.0} readings/s, {} checkpoints, write_bytes {:.1} B/reading ({:.2} MB per checkpoint), file {:.1} MB",
        n / secs,
        checkpoints,
        written as f64 / n,
        written as f64 / checkpoints as f64 / 1e6,
        store.file_len().expect("len") as f64 / 1e6,
    );
}

const CHILD_ENV: &str = "WEIR_STORE_BENCH_WRITER";

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("READINGS"));
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        write_recovery_db(Path::new(&path), &rows(n), true);
    }
    let mut batches: Vec<usize> = args.map(|a| a.parse().expect("BATCH")).collect();
    if batches.is_empty() {
        batches = vec![1000, 250, 4000];
    }
    let dir = std::env::temp_dir().join(format!("weir-store-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let all = rows(n);
    let payload: usize = all.iter().map(|r| r.payload).sum();
    println!(
        "store_bench: {} W1 readings, {:.2} payload B/reading (CSV), dir {}",
        all.len(),
        payload as f64 / all.len() as f64,
        dir.display()
    );
    if write_bytes() == 0 {
        // Reading once more after a synced write tells whether it counts.
        let p = dir.join("probe");
        let mut f = File::create(&p).expect("probe");
        f.write_all(&[0; 8192]).expect("probe");
        f.sync_data().expect("probe");
        if write_bytes() == 0 {
            println!("  note: /proc/self/io write_bytes reads 0 here; use the file-growth figures");
        }
    }
    for (i, &batch) in batches.iter().enumerate() {
        let rows = if i == 0 {
            &all[..]
        } else {
            &all[..all.len() / 4]
        };
        println!("batch {batch} ({} readings):", rows.len());
        let f = bench_store(&dir, rows, batch, StoreConfig::default());
        report("redb journal, commit per batch", rows, &f);
        let f = bench_plain(&dir, rows, batch, false);
        report("ref: CSV, write_all+sync_data", rows, &f);
        let f = bench_plain(&dir, rows, batch, true);
        report("ref: chunks, write_all+sync_data", rows, &f);
    }
    bench_checkpoint_mode(&dir, &all, 100_000);
    println!(
        "recovery (1.5 MB checkpoint + {} journal records after it):",
        all.len()
    );
    let path = fresh(&dir, "recovery.redb");
    write_recovery_db(&path, &all, false);
    bench_recovery(&path, &all, "after a clean close");
    let path = fresh(&dir, "recovery-crash.redb");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg(all.len().to_string())
        .env(CHILD_ENV, &path)
        .status()
        .expect("spawn the writer");
    assert!(status.success(), "writer failed: {status}");
    // Open a copy with redb directly, to show that the file did need repair.
    let copy = dir.join("recovery-crash-copy.redb");
    fs::copy(&path, &copy).expect("copy");
    bench_recovery(&path, &all, "after a crash (redb repair)");
    let repaired = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = repaired.clone();
    redb::Builder::new()
        .set_repair_callback(move |_| flag.set(true))
        .open(&copy)
        .expect("open the copy");
    println!(
        "  (redb repair ran on the crashed file: {})",
        repaired.get()
    );
    let _ = fs::remove_dir_all(&dir);
}
