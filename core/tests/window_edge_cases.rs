//! Window and watermark edge cases found in review: sliding alignment,
//! session lateness and updates, repeated timestamps, idleness, names of
//! evicted keys in queued outputs, emission order.

mod common;
use common::*;
use weir_core::prelude::*;

fn rows_of(e: &mut Engine) -> Vec<Row> {
    let (mut rows, mut late) = (Vec::new(), 0);
    drain(e, &mut rows, &mut late);
    rows
}

// F1: sliding windows with size not a multiple of slide are misaligned.
#[test]
fn sliding_non_multiple_size_matches_reference() {
    let kind = WindowKind::Sliding { size: 10, slide: 3 };
    let s = spec(kind, 0, 0);
    // ts ≡ 2 (mod 3)
    let base = T0 - T0.rem_euclid(3);
    let evs = vec![Ev {
        key: 0,
        ts: base + 11,
        v: 1.0,
    }];
    let (got, _, _) = run(&s, &evs);
    let want = reference(kind, &evs);
    eprintln!(
        "got  {:?}",
        got.iter()
            .map(|r| (r.start - base, r.end - base))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "want {:?}",
        want.iter()
            .map(|r| (r.start - base, r.end - base))
            .collect::<Vec<_>>()
    );
    assert_same_windows(got, want);
}

// F2: TTL eviction in the same advance that emits the key's last window:
// key_name() of the queued output is already "".
#[test]
fn ttl_eviction_loses_name_of_queued_output() {
    let mut s = spec(WindowKind::Tumbling { size: 10_000 }, 0, 0);
    s.state.ttl = Some(1_000);
    let mut e = s.build().unwrap();
    e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "b", T0 + 20_000, &[1.0]).unwrap();
    let rows = rows_of(&mut e);
    eprintln!(
        "{:?}",
        rows.iter().map(|r| (&r.key, r.start)).collect::<Vec<_>>()
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, "a");
}

// F3: equal timestamps with the default bound 0 are late (count, detect, tumbling last tick).
#[test]
fn equal_timestamps_bound0_count_window_not_late() {
    let kind = WindowKind::Count { size: 2 };
    let s = spec(kind, 0, 0);
    let evs = vec![
        Ev {
            key: 0,
            ts: T0,
            v: 1.0,
        },
        Ev {
            key: 0,
            ts: T0,
            v: 2.0,
        },
        Ev {
            key: 1,
            ts: T0,
            v: 3.0,
        },
    ];
    let (got, late, _) = run(&s, &evs);
    eprintln!("late = {late}, rows = {}", got.len());
    assert_eq!(late, 0);
    assert_same_windows(got, reference(kind, &evs));
}

#[test]
fn equal_timestamps_bound0_tumbling_last_tick_not_late() {
    let kind = WindowKind::Tumbling { size: 10 };
    let s = spec(kind, 0, 0);
    let t = T0 + 9; // last tick of [T0, T0+10)
    let evs = vec![
        Ev {
            key: 0,
            ts: t,
            v: 1.0,
        },
        Ev {
            key: 1,
            ts: t,
            v: 2.0,
        },
    ];
    let (got, late, _) = run(&s, &evs);
    eprintln!("late = {late}, rows = {}", got.len());
    assert_eq!(late, 0);
    assert_same_windows(got, reference(kind, &evs));
}

// F4: session lateness is judged on the sample's singleton window, not on the
// retained session it falls into.
#[test]
fn session_sample_inside_retained_session_is_update_not_late() {
    let s = spec(WindowKind::Session { gap: 10 }, 0, 50);
    let mut e = s.build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    for i in 0..10 {
        e.handle_sample(T0, 0, "a", T0 + i * 9, &[1.0]).unwrap(); // session [T0, T0+91)
    }
    e.handle_sample(T0, 0, "b", T0 + 100, &[1.0]).unwrap(); // wm = T0+100: session fired at T0+90
    drain(&mut e, &mut rows, &mut late);
    assert_eq!(rows.len(), 1);
    // retained until wm >= T0+90+50 = T0+140. A sample at T0+5 falls inside it.
    e.handle_sample(T0, 0, "a", T0 + 5, &[7.0]).unwrap();
    drain(&mut e, &mut rows, &mut late);
    eprintln!(
        "late = {late}, rows = {:?}",
        rows.iter()
            .map(|r| (&r.key, r.start - T0, r.end - T0, r.update, r.vals[0]))
            .collect::<Vec<_>>()
    );
    assert_eq!(late, 0, "session [T0,T0+91) is within allowed lateness");
}

// F5: emission order within one fire time is not the order windows were opened
// when lateness > 0 (purge timers share the timer list).
#[test]
fn emission_order_within_fire_time_is_open_order() {
    let s = spec(WindowKind::Tumbling { size: 10 }, 100, 10);
    let mut e = s.build().unwrap();
    let t = T0; // T0 % 10 == 0
    e.handle_sample(t, 0, "a", t + 1, &[1.0]).unwrap(); // a [0,10) purge at 19
    e.handle_sample(t, 0, "b", t + 11, &[1.0]).unwrap(); // b [10,20) fire at 19 (opened before a's)
    e.handle_sample(t, 0, "a", t + 12, &[1.0]).unwrap(); // a [10,20) fire at 19
    e.handle_end_of_input();
    let rows = rows_of(&mut e);
    let order: Vec<_> = rows.iter().map(|r| (r.key.clone(), r.start - t)).collect();
    eprintln!("{order:?}");
    let ib = order
        .iter()
        .position(|x| *x == ("b".to_string(), 10))
        .unwrap();
    let ia = order
        .iter()
        .position(|x| *x == ("a".to_string(), 10))
        .unwrap();
    assert!(ib < ia, "b's [10,20) was opened first");
}

// F6: idleness is only evaluated in handle_time; a driver that only calls
// handle_sample (with advancing now) never gets a quiet source marked idle.
#[test]
fn idle_source_detected_on_handle_sample_too() {
    let mut s = spec(WindowKind::Tumbling { size: 1000 }, 0, 0);
    s.sources[0].idle_timeout = Some(5_000);
    s.sources
        .push(SourceSpec::new("quiet", ["v"]).idle_timeout(5_000));
    let mut e = s.build().unwrap();
    e.handle_sample(T0, 1, "q", T0, &[1.0]).unwrap();
    let mut n = 0;
    for i in 0..40 {
        let t = T0 + i * 500;
        e.handle_sample(t, 0, "a", t, &[1.0]).unwrap();
        while e.poll_output().is_some() {
            n += 1;
        }
    }
    eprintln!(
        "now - last_now(quiet) = 19500 > 5000; source_idle(1) = {}, windows = {n}",
        e.source_idle(1)
    );
    assert!(e.source_idle(1));
}

// F7: processing mode: handle_time(now) sets W = now (ignoring the bound), so a
// sample handled at the same `now` right after is late.
#[test]
fn processing_mode_sample_after_handle_time_same_now_is_not_late() {
    let mut s = spec(WindowKind::Count { size: 1 }, 100, 0);
    s.time.mode = TimeMode::Processing;
    let mut e = s.build().unwrap();
    e.handle_sample(T0, 0, "a", 0, &[1.0]).unwrap();
    e.handle_time(T0 + 50);
    while e.poll_output().is_some() {}
    e.handle_sample(T0 + 50, 0, "a", 0, &[2.0]).unwrap();
    let mut late = 0;
    while let Some(o) = e.poll_output() {
        if let Output::Late(_) = o {
            late += 1;
        }
    }
    eprintln!("late = {late}, op late = {}", e.op_stats(0).unwrap().late);
    assert_eq!(late, 0);
}

// F8: a session first seen after it was due (within lateness) is never emitted.
#[test]
fn session_first_seen_after_due_within_lateness_is_emitted() {
    let s = spec(WindowKind::Session { gap: 10 }, 0, 50);
    let mut e = s.build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    e.handle_sample(T0, 0, "a", T0 + 100, &[1.0]).unwrap(); // wm = T0+100
    e.handle_sample(T0, 0, "b", T0 + 50, &[2.0]).unwrap(); // [T0+50, T0+60): due at 59, purge at 109
    e.handle_sample(T0, 0, "a", T0 + 500, &[1.0]).unwrap(); // wm far past the purge time
    e.handle_end_of_input();
    drain(&mut e, &mut rows, &mut late);
    let st = e.op_stats(0).unwrap();
    eprintln!(
        "rows = {:?}, late = {late}, stats = {st:?}",
        rows.iter()
            .map(|r| (&r.key, r.start - T0, r.update))
            .collect::<Vec<_>>()
    );
    assert!(
        rows.iter().any(|r| r.key == "b"),
        "b's sample was counted on_time but never emitted"
    );
}

// Session bridged by a late sample within lateness is re-emitted as OnTime (not Update),
// and two fired sessions merged by a late sample yield an Update with new bounds while
// the two earlier results are never retracted.
#[test]
fn session_late_bridge_emissions() {
    let s = spec(WindowKind::Session { gap: 20 }, 0, 100);
    let mut e = s.build().unwrap();
    let (mut rows, mut late) = (Vec::new(), 0);
    for (k, ts) in [("a", 0), ("a", 30), ("z", 60), ("a", 15)] {
        e.handle_sample(T0, 0, k, T0 + ts, &[1.0]).unwrap();
        drain(&mut e, &mut rows, &mut late);
    }
    e.handle_end_of_input();
    drain(&mut e, &mut rows, &mut late);
    let v: Vec<_> = rows
        .iter()
        .filter(|r| r.key == "a")
        .map(|r| {
            (
                r.start - T0,
                r.end - T0,
                if r.update { "Update" } else { "OnTime" },
                r.vals[0],
            )
        })
        .collect();
    eprintln!("{v:?}  stats {:?}", e.op_stats(0).unwrap());
    let mut e = spec(WindowKind::Session { gap: 20 }, 0, 100)
        .build()
        .unwrap();
    let mut rows2 = Vec::new();
    for (k, ts) in [("a", 0), ("z", 25), ("a", 10)] {
        e.handle_sample(T0, 0, k, T0 + ts, &[1.0]).unwrap();
        drain(&mut e, &mut rows2, &mut late);
    }
    e.handle_end_of_input();
    drain(&mut e, &mut rows2, &mut late);
    let v2: Vec<_> = rows2
        .iter()
        .filter(|r| r.key == "a")
        .map(|r| {
            (
                r.start - T0,
                r.end - T0,
                if r.update { "Update" } else { "OnTime" },
                r.vals[0],
            )
        })
        .collect();
    eprintln!("{v2:?}  stats {:?}", e.op_stats(0).unwrap());
    assert!(
        v2.iter().filter(|x| x.2 == "OnTime").count() <= 1,
        "session [0,30) emitted OnTime twice"
    );
}

// Sessions that touch merge, as in Flink (`TimeWindow::intersects`: start <=
// other.end && end >= other.start): a sample exactly `gap` after the last one
// joins its session; one a tick later starts a new one.
#[test]
fn a_sample_exactly_gap_after_the_last_joins_its_session() {
    let s = spec(WindowKind::Session { gap: 10 }, 0, 0);
    let mut e = s.build().unwrap();
    for ts in [0, 10, 20, 31] {
        e.handle_sample(T0, 0, "a", T0 + ts, &[1.0]).unwrap();
    }
    e.handle_sample(T0, 0, "b", T0 + 1_000, &[1.0]).unwrap();
    let rows = rows_of(&mut e);
    let got: Vec<(i64, i64, f64)> = rows
        .iter()
        .filter(|r| r.key == "a")
        .map(|r| (r.start - T0, r.end - T0, r.vals[0]))
        .collect();
    assert_eq!(got, [(0, 30, 3.0), (31, 41, 1.0)], "count per session");
}

// Processing time: `poll_timeout` names the `now` at which the next window
// ends (plus the bound), so a driver that ticks only then fires every
// window on time and never ticks in between.
#[test]
fn processing_mode_poll_timeout_is_the_next_window_end() {
    for bound in [0, 2_000] {
        let mut s = spec(WindowKind::Tumbling { size: 10_000 }, bound, 0);
        s.time.mode = TimeMode::Processing;
        let mut e = s.build().unwrap();
        let (mut rows, mut late) = (Vec::new(), 0);
        assert_eq!(e.poll_timeout(), None, "no window open");
        let now = T0 + 1_234;
        e.handle_sample(now, 0, "a", now, &[1.0]).unwrap();
        let due = e.poll_timeout().expect("a window is open");
        assert_eq!(due, T0 + 10_000 + bound, "bound {bound}");
        e.handle_time(due - 1);
        drain(&mut e, &mut rows, &mut late);
        assert!(rows.is_empty());
        assert_eq!(e.poll_timeout(), Some(due), "an early tick moves nothing");
        e.handle_time(due);
        drain(&mut e, &mut rows, &mut late);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].start, rows[0].end), (T0, T0 + 10_000));
        assert_eq!(e.poll_timeout(), None, "idle: nothing is due");
        // Samples every 3 s for a minute, ticks only when due: each window
        // fires at its deadline, one tick per window.
        let (mut ticks, mut now) = (0, due);
        rows.clear();
        for i in 1..=20 {
            let at = due + i * 3_000;
            while let Some(t) = e.poll_timeout().filter(|t| *t <= at) {
                assert!(t >= now, "deadlines move forward");
                now = t;
                e.handle_time(t);
                ticks += 1;
                let before = rows.len();
                drain(&mut e, &mut rows, &mut late);
                assert_eq!(rows.len(), before + 1, "a tick at {t} fired a window");
                assert_eq!(rows.last().unwrap().end + bound, t);
            }
            now = at;
            e.handle_sample(at, 0, "a", at, &[1.0]).unwrap();
            drain(&mut e, &mut rows, &mut late);
        }
        assert_eq!(ticks, rows.len());
        assert_eq!(late, 0);
    }
}
