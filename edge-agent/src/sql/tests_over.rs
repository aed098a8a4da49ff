//! `OVER` aggregations: rows computed by hand, a long out-of-order input
//! against a brute-force recomputation of every frame, NULLs, Flink's
//! integer `AVG`, checkpoints, and what is refused.

use super::*;

const S: &str = "CREATE TABLE s (sensor STRING, ts BIGINT, v DOUBLE, n INT, site STRING,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv');
";

const T0: i64 = 1_700_000_000_000;

/// `weir replay`'s rows (header first), checking nothing is bad.
fn replay(sql: &str, input: &str) -> (Vec<String>, crate::replay::Summary) {
    let p = parse("q.sql", &format!("{S}{sql}")).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let (sum, _) = exec::replay(&p, input.as_bytes(), &mut out, |b, _| panic!("{b:?}")).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(sum.windows as usize + 1, lines.len(), "{text}");
    (lines, sum)
}

/// A row: sensor, ms after [`T0`], `v` (`None`: NULL).
type Row<'a> = (&'a str, i64, Option<f64>);

/// Rows `(sensor, ms after T0, v)` as CSV (`n` is `v` truncated, `site` x).
fn csv(rows: &[Row<'_>]) -> String {
    let mut s = String::new();
    for (k, t, v) in rows {
        let (v, n) = match v {
            Some(v) => (format!("{v}"), format!("{}", *v as i64)),
            None => (String::new(), String::new()),
        };
        s.push_str(&format!("{k},{},{v},{n},x\n", T0 + t));
    }
    s
}

/// Out of order within the watermark's second, two rows at one time
/// (peers), and a late row (…100 after …5000 was seen).
fn sample() -> String {
    csv(&[
        ("a", 1000, Some(1.0)),
        ("b", 1000, Some(10.0)),
        ("a", 2000, Some(2.0)),
        ("a", 2000, Some(3.0)),
        ("b", 3000, Some(20.0)),
        ("a", 5000, Some(4.0)),
        ("a", 4000, Some(5.0)),
        ("a", 100, Some(99.0)),
        ("b", 9000, Some(30.0)),
        ("a", 12000, Some(6.0)),
    ])
}

#[test]
fn a_range_frame_holds_the_rows_of_its_interval_and_the_rows_peers() {
    let (rows, sum) = replay(
        "SELECT sensor, ts - 1700000000000 AS t, v,
           COUNT(*) OVER w AS cnt, SUM(v) OVER w AS total, AVG(v) OVER w AS mean,
           v - MIN(v) OVER w AS above_min, MAX(v) OVER w AS top
         FROM s
         WINDOW w AS (PARTITION BY sensor ORDER BY rowtime
                      RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW);",
        &sample(),
    );
    // Each row once the watermark (newest − 1 s − 1 ms) passes it, in time
    // order per sensor; the two rows at 2000 see each other; 4000 came
    // after 5000 but in time; 100 is late and dropped; frames hold rows
    // at most 2 s older, inclusive.
    assert_eq!(
        rows,
        [
            "sensor,t,v,cnt,total,mean,above_min,top",
            "a,1000,1.000000,1,1.000000,1.000000,0.000000,1.000000",
            "b,1000,10.000000,1,10.000000,10.000000,0.000000,10.000000",
            "a,2000,2.000000,3,6.000000,2.000000,1.000000,3.000000",
            "a,2000,3.000000,3,6.000000,2.000000,2.000000,3.000000",
            "b,3000,20.000000,2,30.000000,15.000000,10.000000,20.000000",
            "a,4000,5.000000,3,10.000000,3.333333,3.000000,5.000000",
            "a,5000,4.000000,2,9.000000,4.500000,0.000000,5.000000",
            "b,9000,30.000000,1,30.000000,30.000000,0.000000,30.000000",
            "a,12000,6.000000,1,6.000000,6.000000,0.000000,6.000000",
        ]
    );
    assert_eq!(sum.late, 1);
}

#[test]
fn rows_frames_count_rows_and_ties_keep_their_order() {
    let sql = |frame: &str| {
        format!(
            "SELECT sensor, ts - 1700000000000 AS t, v, SUM(v) OVER w AS total, COUNT(v) OVER w AS cnt
             FROM s WHERE sensor = 'a'
             WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"
        )
    };
    let (rows, _) = replay(&sql("ROWS BETWEEN 1 PRECEDING AND CURRENT ROW"), &sample());
    assert_eq!(
        rows[1..],
        [
            "a,1000,1.000000,1.000000,1",
            "a,2000,2.000000,3.000000,2",
            "a,2000,3.000000,5.000000,2",
            "a,4000,5.000000,8.000000,2",
            "a,5000,4.000000,9.000000,2",
            "a,12000,6.000000,10.000000,2",
        ]
    );
    // Unbounded: a running total; ROWS gives each peer its own, RANGE
    // (also the frame without a frame clause) all peers the same.
    let totals = |frame: &str| -> Vec<String> {
        let (rows, _) = replay(&sql(frame), &sample());
        rows[1..]
            .iter()
            .map(|r| {
                r.split(',')
                    .nth(3)
                    .unwrap()
                    .trim_end_matches(".000000")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        totals("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
        ["1", "3", "6", "11", "15", "21"]
    );
    for frame in ["RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", ""] {
        assert_eq!(totals(frame), ["1", "6", "6", "11", "15", "21"], "{frame}");
    }
    // `ROWS 2 PRECEDING`, the short form; `CURRENT ROW` alone.
    let (rows, _) = replay(&sql("ROWS 2 PRECEDING"), &sample());
    assert_eq!(rows[3], "a,2000,3.000000,6.000000,3");
    let (rows, _) = replay(&sql("ROWS BETWEEN CURRENT ROW AND CURRENT ROW"), &sample());
    assert_eq!(rows[3], "a,2000,3.000000,3.000000,1");
}

#[test]
fn nulls_are_left_out_and_an_integer_average_is_an_integer() {
    let input = csv(&[
        ("a", 1000, Some(3.0)),
        ("b", 1000, None),
        ("a", 2000, None),
        ("a", 3000, Some(4.0)),
    ]);
    let (rows, _) = replay(
        "SELECT sensor, v, COUNT(*) OVER w AS all_rows, COUNT(v) OVER w AS vs,
                SUM(v) OVER w AS total, AVG(n) OVER w AS avg_n
         FROM s WINDOW w AS (PARTITION BY sensor ORDER BY rowtime);",
        &input,
    );
    assert_eq!(
        rows,
        [
            "sensor,v,all_rows,vs,total,avg_n",
            "a,3.000000,1,1,3.000000,3",
            "b,,1,0,,",
            "a,,2,1,3.000000,3",
            // Flink: AVG of an INT is an INT (7 / 2 = 3).
            "a,4.000000,3,2,7.000000,3",
        ]
    );
}

#[test]
fn lag_gives_an_earlier_rows_value() {
    // ROWS: each row the one before it; RANGE (the default frame): rows
    // of one time share the value before the last of them, as Flink's LAG
    // over RANGE gives; a default where there is no such row, a NULL
    // value stays NULL.
    let sql = |frame: &str| {
        format!(
            "SELECT sensor, ts - 1700000000000 AS t, v - LAG(v) OVER w AS delta,
                    LAG(v, 2, -1) OVER w AS lag2, LAG(v, 0) OVER w AS same
             FROM s WHERE sensor = 'a'
             WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"
        )
    };
    let (rows, _) = replay(
        &sql("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
        &sample(),
    );
    assert_eq!(
        rows,
        [
            "sensor,t,delta,lag2,same",
            "a,1000,,-1.000000,1.000000",
            "a,2000,1.000000,-1.000000,2.000000",
            "a,2000,1.000000,1.000000,3.000000",
            "a,4000,2.000000,2.000000,5.000000",
            "a,5000,-1.000000,3.000000,4.000000",
            "a,12000,2.000000,5.000000,6.000000",
        ]
    );
    let (rows, _) = replay(&sql(""), &sample());
    assert_eq!(
        rows[2..4],
        [
            "a,2000,0.000000,1.000000,3.000000",
            "a,2000,1.000000,1.000000,3.000000"
        ]
    );
    let input = csv(&[
        ("a", 1000, Some(3.0)),
        ("a", 2000, None),
        ("a", 3000, Some(4.0)),
    ]);
    let (rows, _) = replay(
        "SELECT v, LAG(v, 1, 0) OVER (PARTITION BY sensor ORDER BY rowtime) AS prev FROM s;",
        &input,
    );
    assert_eq!(rows[1..], ["3.000000,0.000000", ",3.000000", "4.000000,"]);
}

#[test]
fn without_partition_by_all_rows_are_one_partition() {
    let (rows, _) = replay(
        "SELECT v, COUNT(*) OVER (ORDER BY rowtime ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c,
                MAX(v) OVER (ORDER BY rowtime ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS m
         FROM s;",
        &sample(),
    );
    // In time order over both sensors (ties as they came). (Reading
    // `sensor` here is refused: a text column not in PARTITION BY.)
    assert_eq!(
        rows[1..],
        [
            "1.000000,1,1.000000",
            "10.000000,2,10.000000",
            "2.000000,3,10.000000",
            "3.000000,3,10.000000",
            "20.000000,3,20.000000",
            "5.000000,3,20.000000",
            "4.000000,3,20.000000",
            "30.000000,3,30.000000",
            "6.000000,3,30.000000",
        ]
    );
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_frame_matches_a_brute_force_recomputation() {
    // 6,000 rows over 3 sensors, times jittered by up to 1.5 s (some late,
    // some peers), a few NULLs.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut input = Vec::new();
    for i in 0..6_000i64 {
        let k = ["a", "b", "c"][(rng.next() % 3) as usize];
        let t = i * 200 + (rng.next() % 1500) as i64 - 750;
        let t = t - t % 100; // ties
        let v = if rng.next().is_multiple_of(17) {
            None
        } else {
            Some((rng.next() % 1000) as f64 / 10.0)
        };
        input.push((k, t, v));
    }
    let text = csv(&input);
    // Which rows are on time: behind the watermark (newest seen before,
    // minus 1 s, minus 1 ms) is late.
    let mut newest = i64::MIN;
    let mut kept = Vec::new();
    for (i, r) in input.iter().enumerate() {
        if newest == i64::MIN || r.1 > newest - 1001 {
            kept.push((i, *r));
        }
        newest = newest.max(r.1);
    }
    for frame in [
        "ROWS BETWEEN 4 PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    ] {
        let (rows, sum) = replay(
            &format!(
                "SELECT sensor, ts - 1700000000000 AS t, v, COUNT(*) OVER w AS c, COUNT(v) OVER w AS cv,
                        SUM(v) OVER w AS s, MIN(v) OVER w AS lo, MAX(v) OVER w AS hi,
                        STDDEV_POP(v) OVER w AS sd, LAG(v, 3, -1) OVER w AS l3
                 FROM s WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"
            ),
            &text,
        );
        assert_eq!(sum.late as usize, input.len() - kept.len(), "{frame}");
        let mut got: Vec<String> = rows[1..].to_vec();
        // Brute force: per sensor, the kept rows in (time, arrival) order;
        // each row's frame recomputed from scratch.
        let mut want = Vec::new();
        for k in ["a", "b", "c"] {
            let mut part: Vec<(usize, Row<'_>)> =
                kept.iter().filter(|r| r.1 .0 == k).copied().collect();
            part.sort_by_key(|r| (r.1 .1, r.0));
            for (j, (_, (_, t, v))) in part.iter().enumerate() {
                let frame_rows: Vec<Option<f64>> = part
                    .iter()
                    .enumerate()
                    .filter(|(m, r)| match frame {
                        f if f.starts_with("ROWS BETWEEN 4") => *m <= j && m + 4 >= j,
                        f if f.starts_with("RANGE BETWEEN INTERVAL") => {
                            r.1 .1 <= *t && r.1 .1 >= t - 1000
                        }
                        f if f.starts_with("ROWS") => *m <= j,
                        _ => r.1 .1 <= *t,
                    })
                    .map(|(_, r)| r.1 .2)
                    .collect();
                let xs: Vec<f64> = frame_rows.iter().flatten().copied().collect();
                let n = xs.len() as f64;
                let f = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.6}"));
                let (s, lo, hi, sd) = if xs.is_empty() {
                    (None, None, None, None)
                } else {
                    let s: f64 = xs.iter().sum();
                    let mean = s / n;
                    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                    (
                        Some(s),
                        Some(xs.iter().copied().fold(f64::INFINITY, f64::min)),
                        Some(xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                        Some(var.sqrt()),
                    )
                };
                // LAG: 3 rows before the row (under RANGE, before the last
                // of its time's peers), -1 before the partition's start.
                let last = if frame.starts_with("ROWS") {
                    j
                } else {
                    j + part[j..].iter().take_while(|r| r.1 .1 == *t).count() - 1
                };
                let l3 = if last >= 3 {
                    f(part[last - 3].1 .2)
                } else {
                    f(Some(-1.0))
                };
                want.push(format!(
                    "{k},{t},{},{},{},{},{},{},{},{l3}",
                    f(*v),
                    frame_rows.len(),
                    xs.len(),
                    f(s),
                    f(lo),
                    f(hi),
                    f(sd)
                ));
            }
        }
        // Compare per sensor in the order written (time order per sensor),
        // numbers within rounding of the 6th decimal.
        got.sort_by_key(|r| r.split(',').next().unwrap().to_string());
        let mut want_sorted = want.clone();
        want_sorted.sort_by_key(|r| r.split(',').next().unwrap().to_string());
        assert_eq!(got.len(), want_sorted.len(), "{frame}");
        for (g, w) in got.iter().zip(&want_sorted) {
            let (gs, ws): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
            assert_eq!(gs.len(), ws.len(), "{frame}: {g} vs {w}");
            for (a, b) in gs.iter().zip(&ws) {
                let close = match (a.parse::<f64>(), b.parse::<f64>()) {
                    (Ok(x), Ok(y)) => (x - y).abs() <= 2e-6 * x.abs().max(1.0),
                    _ => a == b,
                };
                assert!(close, "{frame}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn the_over_operator_checkpoints_and_restores() {
    // Stopped halfway, snapshotted and restored into a new engine, it
    // writes what an engine that never stopped writes.
    let p = parse(
        "q.sql",
        &format!(
            "{S}SELECT sensor, v, AVG(v) OVER w AS a, COUNT(*) OVER w AS c, LAG(v, 2) OVER w AS l FROM s
             WINDOW w AS (PARTITION BY sensor ORDER BY rowtime RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW);"
        ),
    )
    .unwrap();
    let spec = &p.pipeline.spec;
    let mut rng = Rng(7);
    let samples: Vec<(String, i64, f64)> = (0..400)
        .map(|i| {
            let k = format!("k{}", rng.next() % 4);
            let t = T0 + i * 300 - (rng.next() % 900) as i64;
            (k, t, (rng.next() % 100) as f64)
        })
        .collect();
    let run = |engine: &mut weir_core::engine::Engine, part: &[(String, i64, f64)]| {
        let mut out = Vec::new();
        for (k, t, v) in part {
            // Late samples are refused; the others give rows.
            let _ = engine.handle_sample(*t, 0, k, *t, &[*v, 1.0]);
            while let Some(o) = engine.poll_output() {
                out.push(format!("{o:?}"));
            }
        }
        out
    };
    let mut a = spec.clone().build().unwrap();
    let mut whole = run(&mut a, &samples);
    a.handle_end_of_input();
    whole.extend(std::iter::from_fn(|| a.poll_output()).map(|o| format!("{o:?}")));
    let mut b = spec.clone().build().unwrap();
    let mut halves = run(&mut b, &samples[..200]);
    let snap = b.snapshot().unwrap();
    let mut c = spec.clone().build().unwrap();
    c.restore(&snap).unwrap();
    halves.extend(run(&mut c, &samples[200..]));
    c.handle_end_of_input();
    halves.extend(std::iter::from_fn(|| c.poll_output()).map(|o| format!("{o:?}")));
    assert!(whole.len() > 300, "{}", whole.len());
    assert_eq!(whole, halves);
}

/// Feeds `samples` (key, time, v) to `engine`, checking after each that
/// the keyed state keeps within `budget`; the outputs' `Debug` texts.
fn run_within(
    engine: &mut weir_core::engine::Engine,
    samples: &[(String, i64, f64)],
    budget: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, t, v) in samples {
        let _ = engine.handle_sample(*t, 0, k, *t, &[*v, 1.0]);
        assert!(
            engine.state_bytes() <= budget,
            "{} bytes of state, budget {budget}",
            engine.state_bytes()
        );
        out.extend(std::iter::from_fn(|| engine.poll_output()).map(|o| format!("{o:?}")));
    }
    out
}

/// The last value of each window row in `outs` (the row's place aside):
/// here the frame's `COUNT(*)`.
fn counts(outs: &[String]) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| {
            let v = o.split("vals: [").nth(1)?.split(']').next()?;
            let len: usize = o.split("len: ").nth(1)?.split(' ').next()?.parse().ok()?;
            let vals: Vec<&str> = v.split(", ").take(len).collect();
            vals.get(len.checked_sub(2)?)?
                .parse::<f64>()
                .ok()
                .map(|c| c as u64)
        })
        .collect()
}

#[test]
fn over_frames_keep_within_the_state_budget() {
    // An hour's RANGE frame over 4 sensors at 100 Hz: 64 MiB holds every
    // row, 64 KiB does not. Under the small budget the state never
    // passes it, every row still gets its result, the frames hold what
    // fits (their oldest rows leave early), and a snapshot restores the
    // same bytes (the run after it is the same).
    let q = |set: &str| {
        parse(
            "q.sql",
            &format!(
                "{S}{set}SELECT sensor, v, COUNT(*) OVER w AS c FROM s
                 WINDOW w AS (PARTITION BY sensor ORDER BY rowtime
                              RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW);"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline
        .spec
    };
    let samples: Vec<(String, i64, f64)> = (0..20_000)
        .map(|i| (format!("k{}", i % 4), T0 + i * 10, (i % 97) as f64))
        .collect();
    let big = q("");
    let mut a = big.clone().build().unwrap();
    let mut whole = run_within(&mut a, &samples, big.state.max_bytes);
    a.handle_end_of_input();
    whole.extend(std::iter::from_fn(|| a.poll_output()).map(|o| format!("{o:?}")));
    let c = counts(&whole);
    assert_eq!(c.len(), 20_000, "{}", whole[0]);
    assert_eq!(
        c.iter().max(),
        Some(&5_000),
        "every row of a sensor in its frame"
    );

    for bad in ["lots", "1KiB", "-5"] {
        let e = parse(
            "q.sql",
            &format!("{S}SET 'weir.state.memory' = '{bad}';\nSELECT * FROM s;"),
        )
        .err()
        .unwrap_or_else(|| panic!("{bad} accepted"))
        .to_string();
        assert!(e.contains("not a size of at least 64KiB"), "{e}");
    }
    let small = q("SET 'weir.state.memory' = '64KiB';\n");
    assert_eq!(small.state.max_bytes, 64 << 10);
    let mut b = small.clone().build().unwrap();
    let mut cut = run_within(&mut b, &samples[..10_000], 64 << 10);
    let snap = b.snapshot().unwrap();
    let mut r = small.clone().build().unwrap();
    r.restore(&snap).unwrap();
    assert_eq!(
        r.state_bytes(),
        b.state_bytes(),
        "restored state, same bytes"
    );
    let mut rest_b = run_within(&mut b, &samples[10_000..], 64 << 10);
    let rest_r = run_within(&mut r, &samples[10_000..], 64 << 10);
    assert_eq!(rest_b, rest_r, "a restore changes nothing");
    cut.append(&mut rest_b);
    b.handle_end_of_input();
    cut.extend(std::iter::from_fn(|| b.poll_output()).map(|o| format!("{o:?}")));
    let c = counts(&cut);
    assert_eq!(c.len(), 20_000, "every row has its result");
    let top = *c.iter().max().unwrap();
    assert!((100..1_000).contains(&top), "frames of at most {top} rows");
    // The frames stay as full as the budget allows: the last rows' frames
    // are within a tenth of the largest.
    assert!(
        c[c.len() - 100..].iter().all(|n| *n * 10 >= top * 9),
        "{:?}",
        &c[c.len() - 100..]
    );
}

#[test]
fn a_lag_history_is_charged_to_its_key_and_never_stops_the_rows() {
    // LAG(v, 500) keeps a key's last 501 rows: bounded, so charged to the
    // key when it is admitted; the keys whose histories fit are admitted,
    // the others refused, and the admitted keys' rows keep coming (the
    // histories once filled the budget and then every row was refused).
    let spec = parse(
        "q.sql",
        &format!(
            "{S}SET 'weir.state.memory' = '64KiB';
             SELECT sensor, v, LAG(v, 500) OVER (PARTITION BY sensor ORDER BY rowtime) AS l FROM s;"
        ),
    )
    .unwrap()
    .pipeline
    .spec;
    let mut e = spec.build().unwrap();
    assert!(e.key_cost() > 500 * 40, "{} bytes a key", e.key_cost());
    let mut per_chunk = Vec::new();
    let mut refused = 0;
    for chunk in 0..8 {
        let mut n = 0;
        for i in chunk * 1_000..(chunk + 1) * 1_000 {
            // k0 and k1 first (their rows span time: proven keys, not
            // the first evicted for a new one), then all four.
            let k = format!("k{}", if i < 200 { i % 2 } else { i % 4 });
            let t = T0 + i * 10;
            if e.handle_sample(t, 0, &k, t, &[1.0, 1.0])
                == Err(weir_core::engine::Reject::KeyBudget)
            {
                refused += 1;
            }
            assert!(e.state_bytes() <= 64 << 10, "{}", e.state_bytes());
            n += std::iter::from_fn(|| e.poll_output()).count();
        }
        per_chunk.push(n);
    }
    assert_eq!(e.key_count(), 2, "two histories fit");
    assert_eq!(refused, 3_900, "the other two keys' rows");
    assert!(per_chunk[1..].iter().all(|n| *n >= 450), "{per_chunk:?}");
}

#[test]
fn rows_without_room_are_refused_and_new_keys_too() {
    // An unbounded frame keeps moments, not rows; but rows wait for the
    // watermark, and 20,000 rows of one time never see it pass: beyond
    // the budget they are refused (no result), and so is a new key.
    let spec = parse(
        "q.sql",
        &format!(
            "{S}SET 'weir.state.memory' = '64KiB';
             SELECT sensor, v, SUM(v) OVER (PARTITION BY sensor ORDER BY rowtime) AS total FROM s;"
        ),
    )
    .unwrap()
    .pipeline
    .spec;
    let mut e = spec.clone().build().unwrap();
    // `a` proves itself first (its rows span time: it is not the first
    // key evicted for a new one).
    let mut samples: Vec<(String, i64, f64)> =
        vec![("a".into(), T0, 1.0), ("a".into(), T0 + 5_000, 1.0)];
    samples.extend((0..20_000).map(|_| ("a".into(), T0 + 10_000, 1.0)));
    assert_eq!(run_within(&mut e, &samples, 64 << 10).len(), 2);
    assert_eq!(
        e.handle_sample(T0, 0, "b", T0, &[1.0, 1.0]),
        Err(weir_core::engine::Reject::KeyBudget)
    );
    e.handle_end_of_input();
    let outs: Vec<String> = std::iter::from_fn(|| e.poll_output())
        .map(|o| format!("{o:?}"))
        .collect();
    let n = outs.len();
    assert!((100..2_000).contains(&n), "{n} rows kept of 20,000");
    assert!(
        outs.iter()
            .all(|o| o.contains("\"a\"") || o.contains("key: 0")),
        "{}",
        outs[0]
    );
}

#[test]
fn over_aggregations_say_what_they_cannot_do() {
    let msg = |sql: &str| {
        parse("q.sql", &format!("{S}{sql}"))
            .unwrap_err()
            .to_string()
    };
    let w = "WINDOW w AS (PARTITION BY sensor ORDER BY rowtime ROWS 3 PRECEDING)";
    let cases = [
        (
            "SELECT AVG(v) OVER (PARTITION BY sensor ORDER BY rowtime), SUM(v) OVER (PARTITION BY sensor ORDER BY rowtime ROWS 2 PRECEDING) FROM s;".to_string(),
            "different windows",
        ),
        (
            "SELECT AVG(v) OVER (PARTITION BY sensor ORDER BY ts) FROM s;".into(),
            "ordered by the time attribute",
        ),
        (
            "SELECT AVG(v) OVER (PARTITION BY sensor ORDER BY rowtime DESC) FROM s;".into(),
            "ordered by the time attribute",
        ),
        (
            "SELECT AVG(v) OVER (PARTITION BY sensor ORDER BY rowtime ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM s;".into(),
            "does not end at the current row",
        ),
        (
            "SELECT AVG(v) OVER (PARTITION BY n ORDER BY rowtime) FROM s;".into(),
            "PARTITION BY the numeric column `n`",
        ),
        (
            format!("SELECT site, AVG(v) OVER w FROM s {w};"),
            "not in the OVER window's PARTITION BY",
        ),
        (
            format!("SELECT APPROX_PERCENTILE(v, 0.5) OVER w FROM s {w};"),
            "APPROX_PERCENTILE(…) over an OVER window",
        ),
        (
            format!("SELECT AVG(v * 2) OVER w FROM s {w};"),
            "an expression, FILTER or DISTINCT",
        ),
        (
            "SELECT AVG(v) OVER x FROM s;".into(),
            "no window named `x`",
        ),
        (
            format!("SELECT ROW_NUMBER() OVER w FROM s {w};"),
            "ROW_NUMBER() outside a window Top-N",
        ),
        (
            format!("SELECT LEAD(v) OVER w FROM s {w};"),
            "LEAD() OVER",
        ),
        (
            format!("SELECT LAG(v, -1) OVER w FROM s {w};"),
            "LAG's offset must be a whole number",
        ),
        (
            format!("SELECT LAG(v, 1, v) OVER w FROM s {w};"),
            "LAG's default must be a number or NULL",
        ),
        (
            format!("SELECT LAG(sensor) OVER w FROM s {w};"),
            "LAG of the STRING column `sensor`",
        ),
        (
            format!("SELECT LAG(n, 1, 0.5) OVER w FROM s {w};"),
            "is not a whole number",
        ),
        (
            "SELECT SUM(v) OVER (ORDER BY rowtime ROWS BETWEEN 5 PRECEDING AND 2 PRECEDING) FROM s;".into(),
            "does not end at the current row",
        ),
        (
            "SELECT SUM(v) AS t, SUM(v) OVER (ORDER BY rowtime) FROM s;".into(),
            "an OVER aggregate beside GROUP BY or plain aggregates",
        ),
        (
            format!("SELECT COUNT(DISTINCT v) OVER w FROM s {w};"),
            "COUNT(…) over an OVER window",
        ),
        (
            "SELECT AVG(v) OVER (PARTITION BY sensor ORDER BY rowtime RANGE BETWEEN 5 PRECEDING AND CURRENT ROW) FROM s;".into(),
            "takes an interval",
        ),
        (
            format!("SELECT sensor, COUNT(*) FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE)) GROUP BY sensor, window_start, window_end {w};"),
            "WINDOW clause (OVER aggregation) in a query with GROUP BY",
        ),
    ];
    for (sql, want) in cases {
        let e = msg(&sql);
        assert!(e.contains(want), "{sql}\n{e}");
    }
    // What works is EXPLAINed and runs in weir run.
    let p = parse(
        "q.sql",
        &format!("{S}EXPLAIN SELECT sensor, v, AVG(v) OVER w FROM s {w};"),
    )
    .unwrap();
    assert!(
        p.query.explain.contains(
            "over: [mean(v)] per row over (PARTITION BY sensor ORDER BY rowtime ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)"
        ),
        "{}",
        p.query.explain
    );
    p.agent_can_run().unwrap();
}

#[test]
fn rows_of_one_time_are_numbered_and_a_changed_plan_has_another_state_type() {
    // The last value of a result is the row's place among its key's rows
    // of that time: the agent's message id. Under ROWS each row is emitted
    // on its own, and still numbered.
    for frame in [
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW",
        "",
    ] {
        let p = parse(
            "q.sql",
            &format!("{S}SELECT sensor, v, SUM(v) OVER w AS s FROM s WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"),
        )
        .unwrap();
        let mut e = p.pipeline.spec.clone().build().unwrap();
        for v in [1.0, 2.0, 3.0] {
            e.handle_sample(T0, 0, "a", T0, &[v, 1.0]).unwrap();
        }
        e.handle_end_of_input();
        let places: Vec<f64> = std::iter::from_fn(|| e.poll_output())
            .filter_map(|o| match o {
                weir_core::output::Output::Window(w) => w.values.as_slice().last().copied(),
                _ => None,
            })
            .collect();
        assert_eq!(places, [0.0, 1.0, 2.0], "{frame}");
    }
    let state = |frame: &str| {
        let p = parse(
            "q.sql",
            &format!("{S}SELECT v, SUM(v) OVER (ORDER BY rowtime {frame}) FROM s;"),
        )
        .unwrap();
        match &p.pipeline.spec.operators[0].kind {
            weir_core::spec::OperatorKind::Process(ps) => ps.state_type.clone(),
            _ => panic!("a process operator"),
        }
    };
    assert!(state("ROWS 2 PRECEDING").starts_with("weir/over/1 ROWS"));
    assert_ne!(state("ROWS 2 PRECEDING"), state("ROWS 3 PRECEDING"));
    assert_ne!(state("ROWS 2 PRECEDING"), state(""));
}

#[test]
fn weirs_own_aggregates_run_over_frames_too() {
    // KURTOSIS needs the third and fourth moments, RMS and CREST the
    // second: each frame computes what its aggregates read.
    let xs = [1.0, 2.0, 3.0, 4.0, 10.0];
    let input = csv(&xs
        .iter()
        .enumerate()
        .map(|(i, &x)| ("a", 1000 * (i as i64 + 1), Some(x)))
        .collect::<Vec<_>>());
    for frame in [
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN 4 PRECEDING AND CURRENT ROW",
    ] {
        let (rows, _) = replay(
            &format!(
                "SELECT KURTOSIS(v) OVER w AS k, RMS(v) OVER w AS r, CREST(v) OVER w AS c, P2P(v) OVER w AS p
                 FROM s WINDOW w AS (PARTITION BY sensor ORDER BY rowtime {frame});"
            ),
            &input,
        );
        let last: Vec<f64> = rows[5].split(',').map(|c| c.parse().unwrap()).collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let m2: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
        let m4: f64 = xs.iter().map(|x| (x - mean).powi(4)).sum();
        let rms = (xs.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
        let want = [n * m4 / (m2 * m2), rms, 10.0 / rms, 9.0];
        for (g, w) in last.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{frame}: {last:?} vs {want:?}");
        }
    }
}
