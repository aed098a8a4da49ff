//! `weir check --store DIR`: verifies a store offline and says what is in
//! it. It works on a copy (the original is never written, and redb's
//! repair of an uncleanly closed file happens on the copy), checks redb's
//! page checksums and every journal chunk's CRC, and reports the journal
//! range, the checkpoint, the key dictionary, the cloud outbox, the
//! pipeline installed by an update and the dead letters.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use weir_core::seam::CheckpointStore;

use crate::store::{StoreConfig, StoreError};

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct StoreReport {
    /// The lines to print, one fact each.
    pub lines: Vec<String>,
    /// Whether every check passed.
    pub ok: bool,
}

/// The store file in `dir` (or `dir` itself when it names a file).
pub fn store_file(dir: &Path) -> PathBuf {
    if dir.is_dir() {
        dir.join("weir.redb")
    } else {
        dir.to_path_buf()
    }
}

/// Checks the store in `dir` (a data directory or a `weir.redb` file).
///
/// # Errors
/// Only when the file cannot be read or copied at all; damage is reported
/// in the [`StoreReport`].
pub fn check(dir: &Path) -> std::io::Result<StoreReport> {
    let path = store_file(dir);
    let len = std::fs::metadata(&path)?.len();
    let tmp = std::env::temp_dir().join(format!("weir-check-store-{}", std::process::id()));
    crate::fsutil::create_dir_all(&tmp, 0o700)?;
    let copy = tmp.join("weir.redb");
    let bytes = std::fs::read(&path)?;
    crate::fsutil::write_atomic(&copy, &bytes, 0o600)?;
    drop(bytes);
    let mut r = StoreReport {
        ok: true,
        ..StoreReport::default()
    };
    r.lines.push(format!("{}: {len} bytes", path.display()));
    inspect(&copy, &mut r);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(r)
}

fn inspect(copy: &Path, r: &mut StoreReport) {
    let bad = |r: &mut StoreReport, what: String| {
        r.ok = false;
        r.lines.push(format!("DAMAGED: {what}"));
    };
    // redb's own check: every page's checksum, the allocator state.
    match redb::Builder::new().create(copy) {
        Ok(mut db) => match db.check_integrity() {
            Ok(true) => r.lines.push("redb pages: checksums ok".into()),
            Ok(false) => r.lines.push(
                "redb pages: not closed cleanly; repaired on the copy (weir repairs it the same way on open)"
                    .into(),
            ),
            Err(e) => return bad(r, format!("redb integrity check failed: {e}")),
        },
        Err(e) => return bad(r, format!("not a readable redb database: {e}")),
    }
    let config = StoreConfig {
        compact_above_bytes: u64::MAX,
        ..StoreConfig::default()
    };
    let store = match config.build(copy) {
        Ok(s) => s,
        Err(e) => return bad(r, e.to_string()),
    };
    let ckpt = match store.latest() {
        Ok(Some((upto, snap))) => {
            r.lines.push(format!(
                "checkpoint: covers LSN 1..={upto}, snapshot {} bytes, CRC ok",
                snap.len()
            ));
            upto
        }
        Ok(None) => {
            r.lines.push("checkpoint: none".into());
            0
        }
        Err(e) => return bad(r, e.to_string()),
    };
    let from = ckpt.max(store.truncated_through());
    let mut replay = match store.replay_from(from) {
        Ok(rp) => rp,
        Err(e) => return bad(r, e.to_string()),
    };
    let (mut n, mut ticks, mut first, mut last) = (0u64, 0u64, None, 0);
    loop {
        match replay.next_record() {
            Ok(Some((lsn, s))) => {
                first.get_or_insert(lsn);
                last = lsn;
                if s.source == crate::store::TICK_SOURCE {
                    ticks += 1;
                } else {
                    n += 1;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let e: StoreError = e;
                drop(replay);
                return bad(r, format!("{e} (after {n} readable records)"));
            }
        }
    }
    drop(replay);
    match first {
        Some(f) => r.lines.push(format!(
            "journal: LSN {f}..={last} after the checkpoint ({n} readings, {ticks} clock ticks), \
             every chunk's CRC ok; truncated through {}",
            store.truncated_through()
        )),
        None => r.lines.push(format!(
            "journal: nothing after the checkpoint; truncated through {}",
            store.truncated_through()
        )),
    }
    r.lines
        .push(format!("keys: {} in the dictionary", store.dict_len()));
    let db = store.database();
    match crate::run::cloud::read_staged_lsn(db) {
        Ok(lsn) => {
            let outbox = weir_cloud_sync::outbox::Outbox::open(
                db,
                weir_cloud_sync::outbox::OutboxConfig::new("check", u64::MAX),
            )
            .and_then(|o| o.stats(db));
            match outbox {
                Ok(s) if s.records > 0 || lsn > 0 => r.lines.push(format!(
                    "cloud outbox: {} records ({} bytes) not yet deleted, next sequence {}, staged through LSN {lsn}",
                    s.records, s.bytes, s.next_seq
                )),
                Ok(_) => r.lines.push("cloud outbox: empty".into()),
                Err(e) => bad(r, format!("cloud outbox: {e}")),
            }
        }
        Err(e) => bad(r, format!("cloud outbox: {e}")),
    }
    match crate::run::update::load(db) {
        Ok(p) => {
            r.lines.push(match &p.active {
                Some(a) => format!(
                    "pipeline: version {} installed by a signed update ({} bytes of text)",
                    a.version,
                    a.text.len()
                ),
                None => "pipeline: the gateway's own pipeline file (no update installed)".into(),
            });
            let phase = match &p.stored {
                None | Some(crate::run::update::Stored::Idle) => "idle".to_string(),
                Some(crate::run::update::Stored::Staged { version, .. }) => {
                    format!("version {version} staged")
                }
                Some(crate::run::update::Stored::Checking { version, .. }) => {
                    format!("version {version} in its health check (resumes on start)")
                }
            };
            r.lines.push(format!(
                "updates: {phase}; highest version ever accepted {}",
                p.accepted
            ));
        }
        Err(e) => bad(r, format!("update state: {e}")),
    }
    match store.dead_letters() {
        Ok(d) => {
            let mut line = format!("dead letters: {}", d.len());
            if let Some((_, newest)) = d.last() {
                let _ = write!(line, " (newest: {} on `{}`)", newest.reason, newest.topic);
            }
            r.lines.push(line);
        }
        Err(e) => bad(r, format!("dead letters: {e}")),
    }
}
