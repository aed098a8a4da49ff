//! `Engine::handle_sample_hinted` against `Engine::handle_sample`: the same
//! results, outputs and counters, while keys are evicted (budget, TTL) and
//! their ids reused by other keys, and in an engine restored from a
//! snapshot.

mod common;

use std::collections::HashMap;

use common::*;
use weir_core::keys::KeyHint;
use weir_core::prelude::*;

/// A seeded stream of (key, ts, value): `keys` names, time mostly moving
/// forward, sometimes a burst of new names that the budget must evict.
fn stream(seed: u64, n: usize, keys: u64) -> Vec<(String, i64, f64)> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ts = T0;
    (0..n)
        .map(|i| {
            ts += (next() % 40) as i64;
            let k = next() % keys;
            let v = (next() % 1000) as f64 / 10.0;
            // Every 50th sample jitters back in time (late or reordered).
            let t = if i % 50 == 49 { ts - 150 } else { ts };
            (format!("k{k}"), t, v)
        })
        .collect()
}

/// Feeds `evs` from `from` to a plain engine and a hinted one side by side
/// (one hint per key name), draining both after some samples only (so that
/// evicted ids wait for the queue to empty before reuse), and checks that
/// every call returns the same and every output is the same.
fn side_by_side(
    plain: &mut Engine,
    hinted: &mut Engine,
    hints: &mut HashMap<String, KeyHint>,
    evs: &[(String, i64, f64)],
) -> usize {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut late_a, mut late_b) = (0, 0);
    for (i, (k, ts, v)) in evs.iter().enumerate() {
        let now = *ts;
        let want = plain.handle_sample(now, 0, k, *ts, &[*v]);
        let hint = hints.entry(k.clone()).or_default();
        let got = hinted.handle_sample_hinted(now, 0, k, hint, *ts, &[*v]);
        assert_eq!(got, want, "sample {i} ({k} at {ts})");
        if i % 3 != 0 {
            drain(plain, &mut a, &mut late_a);
            drain(hinted, &mut b, &mut late_b);
        }
    }
    drain(plain, &mut a, &mut late_a);
    drain(hinted, &mut b, &mut late_b);
    assert_eq!(
        a.iter().map(Row::bits).collect::<Vec<_>>(),
        b.iter().map(Row::bits).collect::<Vec<_>>()
    );
    assert_eq!(late_a, late_b);
    assert_eq!(plain.stats(), hinted.stats());
    assert_eq!(plain.key_count(), hinted.key_count());
    a.len()
}

fn specs() -> Vec<(&'static str, PipelineSpec)> {
    let mut evict = spec(WindowKind::Tumbling { size: 100 }, 20, 0);
    evict.state.max_keys = 4;
    evict.state.on_full = FullPolicy::EvictIdle;
    let mut reject = spec(WindowKind::Tumbling { size: 100 }, 20, 0);
    reject.state.max_keys = 3;
    let mut ttl = spec(
        WindowKind::Sliding {
            size: 200,
            slide: 100,
        },
        20,
        50,
    );
    ttl.state.ttl = Some(300);
    vec![("evict idle", evict), ("reject new", reject), ("ttl", ttl)]
}

#[test]
fn hinted_samples_match_plain_ones_while_keys_come_and_go() {
    for (what, s) in specs() {
        for seed in 1..=4u64 {
            let evs = stream(seed * 7919, 3_000, 12);
            let mut plain = s.clone().build().unwrap();
            let mut hinted = s.clone().build().unwrap();
            let mut hints = HashMap::new();
            let rows = side_by_side(&mut plain, &mut hinted, &mut hints, &evs);
            assert!(rows > 0, "{what}: no windows");
            let st = plain.stats();
            assert!(
                st.keys_evicted + st.rejected(Reject::KeyBudget) > 0,
                "{what}, seed {seed}: the budget never acted, so no hint went stale"
            );
        }
    }
}

#[test]
fn hints_work_in_an_engine_restored_from_a_snapshot() {
    for (what, s) in specs() {
        let evs = stream(4242, 4_000, 12);
        let (head, tail) = evs.split_at(1_500);
        let mut plain = s.clone().build().unwrap();
        let mut hinted = s.clone().build().unwrap();
        let mut hints = HashMap::new();
        side_by_side(&mut plain, &mut hinted, &mut hints, head);
        let snap = plain.snapshot().unwrap();
        assert_eq!(snap, hinted.snapshot().unwrap(), "{what}");
        let mut plain = s.clone().build().unwrap();
        plain.restore(&snap).unwrap();
        let mut hinted = s.clone().build().unwrap();
        hinted.restore(&snap).unwrap();
        // Hints belong to one engine: the restored one starts empty.
        let mut hints = HashMap::new();
        side_by_side(&mut plain, &mut hinted, &mut hints, tail);
    }
}
