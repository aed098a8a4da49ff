//! The outbox in redb: restarts keep everything unacknowledged, staging
//! rides the caller's transaction, the disk budget policy holds and every
//! drop is counted (against a reference model).

mod common;

use common::{alert, window, TempDb};
use proptest::prelude::*;
use redb::{ReadableDatabase, TableDefinition};
use weir_cloud_sync::outbox::{DropCounts, Outbox, OutboxConfig, ENTRY_OVERHEAD};
use weir_cloud_sync::wire::{OutputRecord, RecordKind};

fn seqs(ob: &Outbox, db: &redb::Database) -> Vec<u64> {
    ob.pending_from(db, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect()
}

#[test]
fn restart_keeps_everything_unacknowledged() {
    let tmp = TempDb::new("restart");
    let recs: Vec<OutputRecord> = (0..100).map(|i| window(i % 7, i64::from(i))).collect();
    {
        let db = tmp.open();
        let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
        let rep = ob.put(&db, &recs[..60]).unwrap();
        assert_eq!(rep.seqs, Some((1, 60)));
        ob.ack_through(20);
        assert_eq!(ob.flush_acks(&db).unwrap(), 20);
        assert_eq!(
            ob.flush_acks(&db).unwrap(),
            0,
            "nothing more to delete, no commit"
        );
        ob.put(&db, &recs[60..]).unwrap();
        // Acknowledged in memory only: these come back after the restart.
        ob.ack_through(30);
        assert_eq!(seqs(&ob, &db), (31..=100).collect::<Vec<_>>());
        // (The flush of 1..=20 was not durable by itself; the durable put
        // after it made it so.)
    }
    let db = tmp.open();
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    let pending = ob.pending_from(&db, 0, usize::MAX).unwrap();
    assert_eq!(
        pending.iter().map(|p| p.seq).collect::<Vec<_>>(),
        (21..=100).collect::<Vec<_>>()
    );
    for p in &pending {
        assert_eq!(p.record().unwrap(), recs[p.seq as usize - 1]);
    }
    // Sequences carry on; nothing is reused.
    assert_eq!(ob.put(&db, &recs[..1]).unwrap().seqs, Some((101, 101)));
    assert_eq!(
        ob.pending_from(&db, 50, 3)
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        [50, 51, 52]
    );
    let st = ob.stats(&db).unwrap();
    assert_eq!(st.records, 81);
    assert_eq!(st.next_seq, 102);
}

#[test]
fn staging_rides_the_callers_transaction() {
    const AGENT: TableDefinition<&str, u64> = TableDefinition::new("checkpoint");
    let tmp = TempDb::new("txn");
    let db = tmp.open();
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 1 << 30)).unwrap();
    // Aborted: neither the agent's write nor the outputs are there.
    let txn = db.begin_write().unwrap();
    txn.open_table(AGENT).unwrap().insert("upto", 10).unwrap();
    ob.stage(&txn, &[window(1, 1), window(1, 2)]).unwrap();
    txn.abort().unwrap();
    assert!(seqs(&ob, &db).is_empty());
    assert_eq!(ob.stats(&db).unwrap().records, 0);
    // Committed: both.
    let txn = db.begin_write().unwrap();
    txn.open_table(AGENT).unwrap().insert("upto", 10).unwrap();
    let rep = ob.stage(&txn, &[window(1, 1), window(1, 2)]).unwrap();
    assert_eq!(rep.seqs, Some((1, 2)));
    txn.commit().unwrap();
    assert_eq!(seqs(&ob, &db), [1, 2]);
    let r = db.begin_read().unwrap();
    assert_eq!(
        r.open_table(AGENT)
            .unwrap()
            .get("upto")
            .unwrap()
            .unwrap()
            .value(),
        10
    );
    // An acknowledgement is deleted by the next stage, in that transaction.
    ob.ack_through(1);
    let txn = db.begin_write().unwrap();
    let rep = ob.stage(&txn, &[window(1, 3)]).unwrap();
    assert_eq!(rep.deleted_acked, 1);
    txn.commit().unwrap();
    assert_eq!(ob.stats(&db).unwrap().records, 2);
}

fn size(r: &OutputRecord) -> u64 {
    r.to_cbor().len() as u64 + ENTRY_OVERHEAD
}

/// The budget policy in its simplest form: a list in sequence order.
#[derive(Default)]
struct Model {
    live: Vec<(u64, OutputRecord)>,
    next: u64,
    dropped: DropCounts,
}

impl Model {
    fn used(&self) -> u64 {
        self.live.iter().map(|(_, r)| size(r)).sum()
    }

    fn drop_kind(&mut self, k: RecordKind) {
        match k {
            RecordKind::Window => self.dropped.window += 1,
            RecordKind::Alert => self.dropped.alert += 1,
            _ => self.dropped.status += 1,
        }
    }

    fn push(&mut self, r: OutputRecord, budget: u64) {
        let s = size(&r);
        while s <= budget && self.used() + s > budget {
            let victim = self
                .live
                .iter()
                .position(|(_, x)| x.kind == RecordKind::Window)
                .or_else(|| (r.kind != RecordKind::Window && !self.live.is_empty()).then_some(0));
            match victim {
                Some(i) => {
                    let (_, v) = self.live.remove(i);
                    self.drop_kind(v.kind);
                }
                None => break,
            }
        }
        if self.used() + s > budget {
            self.drop_kind(r.kind);
        } else {
            self.next += 1;
            self.live.push((self.next, r));
        }
    }
}

#[test]
fn budget_keeps_alerts_and_drops_the_oldest_windows() {
    let tmp = TempDb::new("budget");
    let db = tmp.open();
    let w = size(&window(1, 1));
    let a = size(&alert(1, 1));
    // Room for 10 windows.
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 10 * w)).unwrap();
    let ws: Vec<_> = (0..30).map(|k| window(1, k)).collect();
    let rep = ob.put(&db, &ws).unwrap();
    assert_eq!(
        rep.dropped,
        DropCounts {
            window: 20,
            ..Default::default()
        }
    );
    // The newest 10 windows are left.
    assert_eq!(seqs(&ob, &db), (21..=30).collect::<Vec<_>>());
    // Alerts push windows out, oldest first.
    let al: Vec<_> = (0..4).map(|k| alert(2, k)).collect();
    let rep = ob.put(&db, &al).unwrap();
    let pushed_out = (4 * a).div_ceil(w).min(10);
    assert_eq!(rep.dropped.window, pushed_out);
    let left = seqs(&ob, &db);
    assert_eq!(left.first(), Some(&(21 + pushed_out)));
    assert_eq!(&left[left.len() - 4..], [31, 32, 33, 34]);
    // Fill with alerts: windows go, then the oldest alerts.
    let more: Vec<_> = (4..40).map(|k| alert(2, k)).collect();
    ob.put(&db, &more).unwrap();
    let st = ob.stats(&db).unwrap();
    let kept = 10 * w / a;
    assert_eq!(st.records, kept);
    assert_eq!(st.dropped.window, 30);
    assert_eq!(st.dropped.alert, 40 - kept);
    // Now a window cannot get in at all: it is the one dropped.
    let rep = ob.put(&db, &[window(3, 0)]).unwrap();
    assert_eq!(rep.dropped.window, 1);
    assert_eq!(rep.seqs, None);
    assert_eq!(ob.stats(&db).unwrap().dropped.alert, 40 - kept);
    // The report carries every drop, once.
    let c = ob.report_drops(&db).unwrap().unwrap();
    assert_eq!(
        c,
        DropCounts {
            window: 31,
            alert: 40 - kept,
            status: 0
        }
    );
    assert_eq!(ob.report_drops(&db).unwrap(), None);
    let last = ob
        .pending_from(&db, 0, usize::MAX)
        .unwrap()
        .pop()
        .unwrap()
        .record()
        .unwrap();
    assert_eq!(last.kind, RecordKind::Dropped);
    assert_eq!(last.id, "gw1/outbox/dropped/1");
    assert_eq!(
        last.fields,
        vec![
            ("window".into(), 31.0),
            ("alert".into(), (40 - kept) as f64),
            ("status".into(), 0.0)
        ]
    );
}

#[test]
fn acknowledged_records_make_room_without_counting_as_drops() {
    let tmp = TempDb::new("acked-room");
    let db = tmp.open();
    let w = size(&window(1, 1));
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 10 * w)).unwrap();
    ob.put(&db, &(0..10).map(|k| window(1, k)).collect::<Vec<_>>())
        .unwrap();
    ob.ack_through(10);
    let rep = ob
        .put(&db, &(10..20).map(|k| window(1, k)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(rep.deleted_acked, 10);
    assert_eq!(rep.dropped.total(), 0);
    assert_eq!(ob.report_drops(&db).unwrap(), None);
}

#[test]
fn a_dropped_drop_report_gives_its_counts_back() {
    let tmp = TempDb::new("report-dropped");
    let db = tmp.open();
    let a = size(&alert(1, 1));
    let ob = Outbox::open(&db, OutboxConfig::new("gw1", 3 * a)).unwrap();
    ob.put(&db, &(0..5).map(|k| alert(1, k)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(ob.report_drops(&db).unwrap().unwrap().alert, 2);
    // The report pushed out one more alert, now unreported; more alerts push
    // the report out: its count of 2 comes back.
    ob.put(&db, &(5..9).map(|k| alert(1, k)).collect::<Vec<_>>())
        .unwrap();
    let pending: Vec<_> = ob
        .pending_from(&db, 0, 100)
        .unwrap()
        .iter()
        .map(|p| p.record().unwrap().kind)
        .collect();
    assert!(!pending.contains(&RecordKind::Dropped));
    let st = ob.stats(&db).unwrap();
    assert_eq!(st.dropped.alert, 9 - 3);
    assert_eq!(
        st.unreported.alert,
        9 - 3,
        "every drop is still to be reported"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn budget_matches_the_reference_model(
        ops in proptest::collection::vec((0u8..10, 0u32..5, 1usize..6), 1..40),
        budget_windows in 1u64..15,
    ) {
        let tmp = TempDb::new("model");
        let db = tmp.open();
        let budget = budget_windows * size(&window(1, 1)) + 7;
        let ob = Outbox::open(&db, OutboxConfig::new("gw1", budget)).unwrap();
        let mut model = Model::default();
        let mut k = 0i64;
        for (what, key, n) in ops {
            let recs: Vec<OutputRecord> = (0..n)
                .map(|_| {
                    k += 1;
                    // Varying sizes: some records carry fewer fields.
                    let mut r = if what < 7 { window(key, k) } else { alert(key, k) };
                    r.fields.truncate(1 + (k as usize % 5));
                    if what == 9 {
                        r.kind = RecordKind::Status;
                    }
                    r
                })
                .collect();
            ob.put(&db, &recs).unwrap();
            for r in recs {
                model.push(r, budget);
            }
            let st = ob.stats(&db).unwrap();
            prop_assert_eq!(st.dropped, model.dropped);
            prop_assert!(st.bytes <= budget);
            prop_assert_eq!(st.bytes, model.used());
            let got: Vec<(u64, OutputRecord)> = ob
                .pending_from(&db, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|p| (p.seq, p.record().unwrap()))
                .collect();
            prop_assert_eq!(&got, &model.live);
        }
    }
}
