//! Tests of the host, the sandbox and the wiring, with hand-written WAT
//! modules (testdata/*.wat).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::pipeline_file::{parse, PipelineFile};
use crate::replay::{replay, RowError};

/// A fresh directory holding the compiled WAT modules.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-fn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    // not-state: test fixtures in a temporary folder.
    std::fs::create_dir_all(&d).unwrap();
    for (f, src) in [
        ("celsius", include_str!("testdata/celsius.wat")),
        ("runaway", include_str!("testdata/runaway.wat")),
        ("counter", include_str!("testdata/counter.wat")),
    ] {
        // not-state: a test fixture.
        std::fs::write(d.join(format!("{f}.wasm")), wat::parse_str(src).unwrap()).unwrap();
    }
    d
}

fn pipeline(d: &std::path::Path, body: &str) -> Result<PipelineFile, String> {
    let text = format!(
        r#"
name = "t"
[[source]]
name = "s"
fields = ["value"]
max_out_of_orderness = 0
watermark = "per-source"
csv = {{ columns = ["key", "ts", "value"], header = false, timestamp = "ms" }}
{body}
"#
    );
    let file = d.join("p.toml");
    parse(&file.display().to_string(), &text).map_err(|e| e.to_string())
}

struct Run {
    out: String,
    bad: Vec<(u64, RowError)>,
}

fn run(pf: &PipelineFile, input: &str) -> Run {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    replay(pf, 0, input.as_bytes(), &mut out, |b, _| {
        bad.push((b.line, b.error))
    })
    .unwrap();
    Run {
        out: String::from_utf8(out).unwrap(),
        bad,
    }
}

/// Readings: key, ts (ms), value; a few keys over a few seconds.
fn readings(n: usize) -> Vec<(String, i64, f64)> {
    (0..n)
        .map(|i| {
            let key = format!("k{}", i % 3);
            let ts = 1_700_000_000_000 + (i as i64) * 137;
            let v = ((i * 7919) % 101) as f64 / 4.0 - 5.0;
            (key, ts, v)
        })
        .collect()
}

fn csv(r: &[(String, i64, f64)]) -> String {
    r.iter().map(|(k, t, v)| format!("{k},{t},{v}\n")).collect()
}

const WINDOW_ON: &str = r#"
[[window]]
id = "w"
source = "s"
field = "FIELD"
kind = "tumbling"
size = "1s"
aggregates = ["count", "sum"]
"#;

fn window_on(field: &str) -> String {
    WINDOW_ON.replace("FIELD", field)
}

/// `[w,]key,start,end,count,sum` rows by (key, start) → (count, sum).
fn window_rows(out: &str) -> BTreeMap<(String, i64), (u64, f64)> {
    out.lines()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let c = if c.len() == 6 { &c[1..] } else { &c[..] };
            (
                (c[0].to_string(), c[1].parse().unwrap()),
                (c[3].parse().unwrap(), c[4].parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn a_scalar_function_computes_a_field_that_windows_aggregate() {
    let d = dir("scalar");
    let pf = pipeline(
        &d,
        &format!(
            "[[function]]\nid = \"f\"\nmodule = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"value_f\"\n{}",
            window_on("value_f")
        ),
    )
    .unwrap();
    let r = readings(200);
    let got = run(&pf, &csv(&r));
    assert!(got.bad.is_empty(), "{:?}", got.bad);
    let mut want: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for (k, t, v) in &r {
        let e = want.entry((k.clone(), t - t.rem_euclid(1000))).or_default();
        e.0 += 1;
        e.1 += v * 1.8 + 32.0;
    }
    let rows = window_rows(&got.out);
    assert_eq!(rows.len(), want.len(), "{}", got.out);
    for (k, (n, s)) in &want {
        let (gn, gs) = rows[k];
        assert_eq!(gn, *n);
        assert!(
            (gs - s).abs() < 1e-6 * s.abs().max(1.0),
            "{k:?}: {gs} vs {s}"
        );
    }
    let rep = &pf.functions.report()[0].1;
    assert_eq!(rep.calls, 200);
    assert_eq!(rep.failed_total(), 0);
}

/// A runaway scalar function: every row is dead-lettered with the right
/// reason, the function is disabled after `max_failures`, and the replay
/// runs to its end.
fn runaway(export: &str, reason: &str) {
    let d = dir(export);
    let pf = pipeline(
        &d,
        &format!(
            "[[function]]\nid = \"bad\"\nmodule = \"runaway.wasm\"\nexport = \"{export}\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"y\"\nmax_failures = 5\nfuel = 100000\nmemory = \"1MiB\"\n{}",
            window_on("y")
        ),
    )
    .unwrap();
    let r = readings(50);
    let got = run(&pf, &csv(&r));
    // Every row is refused, for the function.
    assert_eq!(got.bad.len(), 50, "{:?}", got.bad);
    assert!(got.bad.iter().all(|b| b.1 == RowError::Function(0)));
    let rep = pf.functions.report()[0].1.clone();
    let i = super::host::FailKind::ALL
        .iter()
        .position(|k| k.name() == reason)
        .unwrap();
    assert_eq!(rep.failed[i], 5, "{rep}");
    assert_eq!(rep.failed_total(), 5, "{rep}");
    assert_eq!(rep.skipped, 45, "{rep}");
    assert!(rep.disabled.as_deref().unwrap().contains(reason), "{rep}");
    let dead = pf.functions.defs[0].health.take_dead_letters();
    assert_eq!(dead.len(), 50);
    assert_eq!(dead[0].function, "bad");
    assert_eq!(dead[0].reason, reason);
    assert_eq!(dead[0].reading, vec![r[0].2]);
    assert_eq!(dead[0].ts, r[0].1);
    assert_eq!(dead[49].reason, "disabled");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    runaway("spin", "fuel");
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    runaway("bomb", "memory");
}

#[test]
fn a_function_that_traps_on_every_call_is_disabled() {
    runaway("trap", "trap");
}

#[test]
fn a_nan_result_is_a_bad_output() {
    runaway("nan", "bad_output");
}

#[test]
fn unbounded_recursion_traps() {
    runaway("deep", "trap");
}

#[test]
fn a_failing_scalar_spoils_only_its_rows_and_the_engine_goes_on() {
    let d = dir("partial");
    let pf = pipeline(
        &d,
        &format!(
            "[[function]]\nid = \"sq\"\nmodule = \"runaway.wasm\"\nexport = \"sqrt_or_trap\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"root\"\nmax_failures = 1000\n{}",
            window_on("root")
        ),
    )
    .unwrap();
    let r = readings(300);
    let got = run(&pf, &csv(&r));
    let negatives = r.iter().filter(|x| x.2 < 0.0).count();
    assert!(negatives > 0 && negatives < r.len());
    assert_eq!(got.bad.len(), negatives);
    let mut want: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for (k, t, v) in r.iter().filter(|x| x.2 >= 0.0) {
        let e = want.entry((k.clone(), t - t.rem_euclid(1000))).or_default();
        e.0 += 1;
        e.1 += v.sqrt();
    }
    let rows = window_rows(&got.out);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (n, s)) in &want {
        assert_eq!(rows[k].0, *n);
        assert!((rows[k].1 - s).abs() < 1e-5 * s.max(1.0), "{k:?}");
    }
    let rep = &pf.functions.report()[0].1;
    assert_eq!(rep.failed[0] as usize, negatives);
    assert!(rep.disabled.is_none());
}

fn counter_pipeline(d: &std::path::Path) -> PipelineFile {
    pipeline(
        d,
        "[[function]]\nid = \"cnt\"\nmodule = \"counter.wasm\"\nkind = \"keyed\"\nsource = \"s\"\nfields = [\"value\"]\nmax_failures = 100000\n",
    )
    .unwrap()
}

/// (key, second end) → (sum, count) of the non-negative readings.
fn counter_want(r: &[(String, i64, f64)]) -> BTreeMap<(String, i64), (f64, u64)> {
    let mut want: BTreeMap<(String, i64), (f64, u64)> = BTreeMap::new();
    for (k, t, v) in r.iter().filter(|x| x.2 >= 0.0) {
        let e = want
            .entry((k.clone(), (t.div_euclid(1000) + 1) * 1000))
            .or_default();
        e.0 += v;
        e.1 += 1;
    }
    want
}

fn counter_rows(out: &str) -> BTreeMap<(String, i64), (f64, u64)> {
    let mut m = BTreeMap::new();
    for l in out.lines() {
        let c: Vec<&str> = l.split(',').collect();
        assert_eq!(c[0], "cnt", "{l}");
        let prev = m.insert(
            (c[1].to_string(), c[2].parse().unwrap()),
            (c[3].parse().unwrap(), c[4].parse().unwrap()),
        );
        assert!(prev.is_none(), "a second row for {l}");
    }
    m
}

#[test]
fn a_keyed_function_keeps_per_key_state_and_fires_event_timers() {
    let d = dir("keyed");
    let pf = counter_pipeline(&d);
    let r = readings(500);
    let got = run(&pf, &csv(&r));
    // Negative readings trap after writing state: the write is discarded.
    let rows = counter_rows(&got.out);
    let want = counter_want(&r);
    assert_eq!(rows.len(), want.len());
    for (k, (s, n)) in &want {
        assert_eq!(rows[k].1, *n, "{k:?}");
        assert!((rows[k].0 - s).abs() < 1e-9 * s.abs().max(1.0));
    }
    let rep = &pf.functions.report()[0].1;
    assert_eq!(
        rep.failed[0] as usize,
        r.iter().filter(|x| x.2 < 0.0).count()
    );
}

#[test]
fn keyed_state_and_timers_survive_a_checkpoint_into_a_new_instance() {
    let d = dir("ckpt");
    let pf = counter_pipeline(&d);
    let r = readings(400);
    let whole = counter_rows(&run(&pf, &csv(&r)).out);
    // First half into one engine, checkpoint, second half into another.
    let (a, b) = r.split_at(217);
    let mut e1 = pf.spec.clone().build().unwrap();
    let mut out = String::new();
    let feed =
        |e: &mut weir_core::engine::Engine, part: &[(String, i64, f64)], out: &mut String| {
            for (k, t, v) in part {
                let _ = e.handle_sample(*t, 0, k, *t, &[*v]);
                while let Some(o) = e.poll_output() {
                    if let weir_core::output::Output::Custom(c) = o {
                        out.push_str(&format!(
                            "cnt,{},{},{},{}\n",
                            e.key_name(c.key),
                            c.ts,
                            c.value,
                            c.tag
                        ));
                    }
                }
            }
        };
    feed(&mut e1, a, &mut out);
    let snap = e1.snapshot().unwrap();
    drop(e1);
    let mut e2 = pf.spec.clone().build().unwrap();
    e2.restore(&snap).unwrap();
    feed(&mut e2, b, &mut out);
    e2.handle_end_of_input();
    while let Some(o) = e2.poll_output() {
        if let weir_core::output::Output::Custom(c) = o {
            out.push_str(&format!(
                "cnt,{},{},{},{}\n",
                e2.key_name(c.key),
                c.ts,
                c.value,
                c.tag
            ));
        }
    }
    assert_eq!(counter_rows(&out), whole);
}

#[test]
fn bad_modules_and_tables_are_clear_errors() {
    let d = dir("errors");
    // not-state: a test fixture.
    std::fs::write(d.join("junk.wasm"), b"not wasm").unwrap();
    let cases = [
        ("module = \"missing.wasm\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"y\"", "cannot read"),
        ("module = \"junk.wasm\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"y\"", "not a valid WebAssembly module"),
        ("module = \"celsius.wasm\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"y\"", "exports no function `f`"),
        ("module = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"value\"]", "needs `output`"),
        ("module = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"nope\"\nfields = [\"value\"]\noutput = \"y\"", "no source named"),
        ("module = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"nope\"]\noutput = \"y\"", "no field `nope`"),
        ("module = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"value\"", "already has a field"),
        ("module = \"celsius.wasm\"\nkind = \"keyed\"\nsource = \"s\"\nfields = [\"value\"]", "weir_on_sample"),
        ("module = \"counter.wasm\"\nkind = \"nope\"\nsource = \"s\"\nfields = [\"value\"]", "unknown function kind"),
        ("module = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"y\"\nmemory = \"1KiB\"", "memory is not a size"),
    ];
    for (body, want) in cases {
        let e = pipeline(&d, &format!("[[function]]\nid = \"f\"\n{body}\n")).unwrap_err();
        assert!(e.contains(want), "{body}: {e}");
        assert!(e.contains("p.toml:"), "{e}");
    }
}

#[test]
fn base64_round_trips_and_refuses_junk() {
    for n in 0..40usize {
        let b: Vec<u8> = (0..n).map(|i| (i * 97 + n) as u8).collect();
        let e = super::base64_encode(&b);
        assert_eq!(e.len() % 4, 0);
        assert_eq!(super::base64_decode(&e).unwrap(), b, "{n}");
    }
    assert_eq!(super::base64_encode(b"weir"), "d2Vpcg==");
    assert!(super::base64_decode("d2V*cg==").is_err());
    assert!(super::base64_decode("d").is_err());
}

#[test]
fn embedded_modules_travel_with_the_text_and_are_checked() {
    let d = dir("embed");
    let body = "[[function]]\nid = \"cnt\"\nmodule = \"counter.wasm\"\nkind = \"keyed\"\nsource = \"s\"\nfields = [\"value\"]\n";
    let text = format!(
        "name = \"t\"\n[[source]]\nname = \"s\"\nfields = [\"value\"]\nmax_out_of_orderness = 0\nwatermark = \"per-source\"\ncsv = {{ columns = [\"key\", \"ts\", \"value\"], header = false, timestamp = \"ms\" }}\n{body}"
    );
    let file = d.join("p.toml").display().to_string();
    let embedded = super::embed(&file, &text).unwrap();
    assert!(embedded.contains("[modules.\"counter.wasm\"]"));
    assert!(super::embed(&file, &embedded).is_err(), "embeds twice");
    // Parsed from elsewhere, without the module file: the same results.
    let elsewhere = std::env::temp_dir().join("weir-fn-nowhere/x.toml");
    let pf = parse(&elsewhere.display().to_string(), &embedded).unwrap();
    let r = readings(300);
    let from_file = counter_rows(&run(&counter_pipeline(&d), &csv(&r)).out);
    assert_eq!(counter_rows(&run(&pf, &csv(&r)).out), from_file);
    assert!(parse(&elsewhere.display().to_string(), &text).is_err());
    // A changed byte or a changed hash is refused.
    let at = embedded.find("base64 = \"").unwrap() + 20;
    let mut bad = embedded.clone().into_bytes();
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    let e = parse("x.toml", &String::from_utf8(bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its sha256"), "{e}");
    let e = parse("x.toml", &embedded.replace("sha256 = \"", "sha256 = \"0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its sha256"), "{e}");
    // A module no function uses is refused.
    let extra = format!(
        "{embedded}[modules.\"other.wasm\"]\nsha256 = \"{}\"\nbase64 = \"\"\n",
        super::sha256_hex(b"")
    );
    let e = parse("x.toml", &extra).unwrap_err().to_string();
    assert!(e.contains("used by no [[function]]"), "{e}");
    // A file module with a pinned hash.
    let h = super::sha256_hex(&std::fs::read(d.join("counter.wasm")).unwrap());
    let pinned = text.replace(
        "kind = \"keyed\"",
        &format!("kind = \"keyed\"\nsha256 = \"{h}\""),
    );
    assert!(parse(&file, &pinned).is_ok());
    let other = format!("{}{}", if h.starts_with('0') { '1' } else { '0' }, &h[1..]);
    let e = parse(&file, &pinned.replace(&h, &other))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match sha256"), "{e}");
}

#[test]
fn a_new_version_of_a_module_takes_over_its_predecessors_state_by_id() {
    let d = dir("version");
    // Version 2: the same logic, other bytes (one more export).
    let v2 = include_str!("testdata/counter.wat").replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1)\n  (func (export \"version\") (result i32) i32.const 2)",
        1,
    );
    // not-state: a test fixture.
    std::fs::write(d.join("counter2.wasm"), wat::parse_str(&v2).unwrap()).unwrap();
    assert_ne!(
        std::fs::read(d.join("counter.wasm")).unwrap(),
        std::fs::read(d.join("counter2.wasm")).unwrap()
    );
    let p1 = counter_pipeline(&d);
    let text2 = "[[function]]\nid = \"cnt\"\nmodule = \"counter2.wasm\"\nkind = \"keyed\"\nsource = \"s\"\nfields = [\"value\"]\nmax_failures = 100000\n";
    let p2 = pipeline(&d, text2).unwrap();
    let r = readings(400);
    let whole = counter_rows(&run(&p1, &csv(&r)).out);
    let (a, b) = r.split_at(190);
    let mut out = String::new();
    let mut e1 = p1.spec.clone().build().unwrap();
    let mut e2 = p2.spec.clone().build().unwrap();
    let mut feed = |e: &mut weir_core::engine::Engine, part: &[(String, i64, f64)], end: bool| {
        for (k, t, v) in part {
            let _ = e.handle_sample(*t, 0, k, *t, &[*v]);
        }
        if end {
            e.handle_end_of_input();
        }
        while let Some(o) = e.poll_output() {
            if let weir_core::output::Output::Custom(c) = o {
                out.push_str(&format!(
                    "cnt,{},{},{},{}\n",
                    e.key_name(c.key),
                    c.ts,
                    c.value,
                    c.tag
                ));
            }
        }
    };
    feed(&mut e1, a, false);
    let rep = e2.restore(&e1.snapshot().unwrap()).unwrap();
    assert_eq!(rep.operators.len(), 1);
    assert!(
        matches!(rep.operators[0].1, weir_core::snapshot::OpRestore::Kept),
        "{rep:?}"
    );
    feed(&mut e2, b, true);
    assert_eq!(counter_rows(&out), whole);
}

fn sql(d: &std::path::Path, select: &str) -> Result<crate::sql::SqlPipeline, String> {
    let text = format!(
        "CREATE FUNCTION c_to_f AS 'celsius.wasm' LANGUAGE WASM;
CREATE TABLE s (k STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'in.csv', 'format' = 'csv');
{select}"
    );
    crate::sql::parse(&d.join("p.sql").display().to_string(), &text).map_err(|e| e.to_string())
}

#[test]
fn sql_create_function_computes_an_aggregated_field() {
    let d = dir("sql");
    let p = sql(
        &d,
        "SELECT k, window_start, COUNT(*) AS n, SUM(c_to_f(v)) AS f, SUM(v) AS c
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;",
    )
    .unwrap();
    let r = readings(200);
    let mut out = Vec::new();
    crate::sql::exec::replay(&p, csv(&r).as_bytes(), &mut out, |b, _| {
        panic!("bad row {}: {}", b.line, b.error)
    })
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let mut rows = 0;
    for l in out.lines().skip(1) {
        let c: Vec<&str> = l.split(',').collect();
        let (f, cel): (f64, f64) = (c[3].parse().unwrap(), c[4].parse().unwrap());
        let n: f64 = c[2].parse().unwrap();
        assert!((f - (cel * 1.8 + 32.0 * n)).abs() < 1e-4, "{l}");
        rows += 1;
    }
    assert!(rows > 20, "{out}");
    assert_eq!(p.pipeline.functions.report()[0].1.calls, 200);
    // An expression as the argument: computed first. An unknown language
    // is an error.
    let p = sql(&d, "SELECT k, window_start, SUM(c_to_f(v + 1)) AS f FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND)) GROUP BY k, window_start, window_end;")
        .unwrap();
    assert_eq!(p.query.computed.len(), 2);
    let e =
        crate::sql::parse("p.sql", "CREATE FUNCTION f AS 'x.wasm' LANGUAGE PYTHON;").unwrap_err();
    assert!(e.to_string().contains("LANGUAGE PYTHON"), "{e}");
}

#[test]
fn weir_run_completes_decoded_values_with_scalar_outputs_or_nan() {
    let d = dir("with-values");
    let ok = pipeline(
        &d,
        &format!(
            "[[function]]\nid = \"f\"\nmodule = \"celsius.wasm\"\nexport = \"c_to_f\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"value_f\"\n{}",
            window_on("value_f")
        ),
    )
    .unwrap();
    for x in [-40.0, 0.0, 21.5] {
        let got = ok.functions.with_values(0, 1, &[x], |v| v.to_vec());
        assert_eq!(got, vec![x, x * 1.8 + 32.0]);
    }
    let bad = pipeline(
        &d,
        &format!(
            "[[function]]\nid = \"sq\"\nmodule = \"runaway.wasm\"\nexport = \"sqrt_or_trap\"\nsource = \"s\"\nfields = [\"value\"]\noutput = \"root\"\n{}",
            window_on("root")
        ),
    )
    .unwrap();
    let got = bad.functions.with_values(0, 1, &[4.0], |v| v.to_vec());
    assert_eq!(got, vec![4.0, 2.0]);
    let got = bad.functions.with_values(0, 1, &[-4.0], |v| v.to_vec());
    assert!(got[1].is_nan(), "{got:?}");
    // The engine refuses the NaN reading, and the function has the failure.
    let mut e = bad.spec.clone().build().unwrap();
    let r = bad
        .functions
        .with_values(0, 1_700_000_000_000, &[-4.0], |v| {
            e.handle_sample(1_700_000_000_000, 0, "k", 1_700_000_000_000, v)
        });
    assert_eq!(r, Err(weir_core::prelude::Reject::NonFinite));
    assert_eq!(bad.functions.failures(), 2);
}

/// A user function under an aggregate in `weir run` and updates: the agent
/// computes its field on each journal record before the engine, as replay
/// does; elsewhere in an expression it is refused, by name.
#[test]
fn sql_functions_under_aggregates_run_in_the_agent() {
    let d = dir("sql-run");
    let text = |select: &str| {
        format!(
            "CREATE FUNCTION c_to_f AS 'celsius.wasm' LANGUAGE WASM;
CREATE TABLE s (k STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
{select}"
        )
    };
    let file = d.join("p.sql").display().to_string();
    let pf = crate::pipeline_file::parse(
        &file,
        &text(
            "SELECT k, window_start, window_end, AVG(c_to_f(v)) AS f
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;",
        ),
    )
    .unwrap();
    let q = pf
        .sql
        .clone()
        .expect("the field is computed before the engine");
    let got = q.before_engine(&pf.functions, 0, "k1", 1, &[100.0], |v| v.to_vec());
    assert_eq!(got, Some(vec![100.0, 212.0]));
    assert_eq!(pf.functions.report()[0].1.calls, 1);
}

/// The query with `c_to_f` and the same query with its arithmetic give
/// the same rows, in every position: WHERE, an expression's argument,
/// under an aggregate, over aggregates in a result column and HAVING.
const EVERY_POSITION: &str = "SELECT k, window_start, c_to_f(AVG(v)) AS mf, AVG(c_to_f(v)) AS fm,
       MAX(c_to_f(v + 1) - 1) AS hi, COUNT(*) AS n, c_to_f(c_to_f(MIN(v))) AS ff
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
WHERE c_to_f(v) > 30
GROUP BY k, window_start, window_end
HAVING c_to_f(MAX(v)) > 60;";

fn arithmetic(q: &str) -> String {
    // c_to_f(x) = x * 1.8 + 32, written out (the nested call first).
    q.replace("c_to_f(c_to_f(MIN(v)))", "((MIN(v) * 1.8 + 32) * 1.8 + 32)")
        .replace("c_to_f(AVG(v))", "(AVG(v) * 1.8 + 32)")
        .replace("c_to_f(v + 1)", "((v + 1) * 1.8 + 32)")
        .replace("c_to_f(v)", "(v * 1.8 + 32)")
        .replace("c_to_f(MAX(v))", "(MAX(v) * 1.8 + 32)")
}

#[test]
fn sql_functions_in_every_position_in_replay() {
    let d = dir("sql-every");
    let r = readings(600);
    let rows = |q: &str| {
        let p = sql(&d, q).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        crate::sql::exec::replay(&p, csv(&r).as_bytes(), &mut out, |b, _| {
            panic!("bad row {}: {}", b.line, b.error)
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .map(|l| {
                // Doubles to 4 decimals: the two sides round differently.
                l.split(',')
                    .map(|c| match c.parse::<f64>() {
                        Ok(x) if c.contains('.') => format!("{x:.4}"),
                        _ => c.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
    };
    let with_fn = rows(EVERY_POSITION);
    let by_hand = rows(&arithmetic(EVERY_POSITION));
    assert!(!arithmetic(EVERY_POSITION).contains("c_to_f"));
    assert_eq!(with_fn, by_hand);
    // HAVING keeps some windows and drops others; WHERE drops readings.
    let all = rows("SELECT k, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND)) GROUP BY k, window_start, window_end;");
    assert!(
        with_fn.len() > 10 && with_fn.len() < all.len(),
        "{} of {}",
        with_fn.len(),
        all.len()
    );
}

#[test]
fn sql_functions_in_every_position_in_the_agent() {
    let d = dir("sql-every-run");
    let file = d.join("p.sql").display().to_string();
    let text = |select: &str| {
        format!(
            "SET 'pipeline.name' = 'q';
CREATE FUNCTION c_to_f AS 'celsius.wasm' LANGUAGE WASM;
CREATE TABLE s (k STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
{select}"
        )
    };
    let r = readings(600);
    let published = |q: &str| {
        let pf = crate::pipeline_file::parse(&file, &text(q)).unwrap_or_else(|e| panic!("{e}"));
        let enc = crate::run::output::OutputEncoder::for_pipeline(
            "gw",
            "weir",
            crate::gateway::OutputFormat::Json,
            &pf,
        );
        let stage = pf.sql.clone().expect("a stage");
        let mut engine = pf.spec.clone().build().unwrap();
        let mut out = Vec::new();
        for (lsn, (k, ts, v)) in r.iter().enumerate() {
            let _ = stage.before_engine(&pf.functions, 0, k, *ts, &[*v], |x| {
                engine.handle_sample(*ts, 0, k, *ts, x)
            });
            while let Some(o) = engine.poll_output() {
                let key = match &o {
                    weir_core::output::Output::Window(w) => engine.key_name(w.key).to_string(),
                    _ => String::new(),
                };
                enc.encode(&o, &key, lsn as u64, true, &mut out);
            }
        }
        out.iter()
            .map(|e| {
                let mut v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                for x in v.as_object_mut().unwrap().values_mut() {
                    if let Some(f) = x.as_f64().filter(|_| x.is_f64()) {
                        *x = serde_json::json!((f * 1e4).round() / 1e4);
                    }
                }
                v
            })
            .collect::<Vec<_>>()
    };
    let with_fn = published(EVERY_POSITION);
    let by_hand = published(&arithmetic(EVERY_POSITION));
    assert!(with_fn.len() > 10, "{}", with_fn.len());
    assert_eq!(with_fn, by_hand);
    assert!(with_fn[0]["mf"].is_number() && with_fn[0]["ff"].is_number());
}

/// A SQL update carries its modules: `weir functions embed` appends them as
/// comment lines, and the text alone then loads, wherever it is; a changed
/// module is refused.
#[test]
fn sql_modules_ride_in_the_update_text() {
    let d = dir("sql-embed");
    let text = "CREATE FUNCTION c_to_f AS 'celsius.wasm' LANGUAGE WASM;
CREATE TABLE s (k STRING, ts BIGINT, v DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0' SECOND
) WITH ('connector' = 'mqtt', 'topic' = 'p/+', 'format' = 'json');
SELECT k, window_start, window_end, AVG(c_to_f(v)) AS f
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;";
    let file = d.join("p.sql").display().to_string();
    // Without the file beside it, the text does not load.
    assert!(crate::pipeline_file::parse("pipeline update v2", text).is_err());
    let out = super::embed(&file, text).unwrap();
    assert!(out.starts_with(text) && out.contains("-- weir:module sha256="));
    let pf = crate::pipeline_file::parse("pipeline update v2", &out).unwrap();
    let q = pf.sql.clone().unwrap();
    let got = q.before_engine(&pf.functions, 0, "k1", 1, &[0.0], |v| v.to_vec());
    assert_eq!(got, Some(vec![0.0, 32.0]));
    assert!(super::embed(&file, &out)
        .unwrap_err()
        .contains("already embeds"));
    // One changed byte of the module: refused by its hash.
    let i = out.find("base64=").unwrap() + "base64=".len() + 20;
    let mut bad = out.clone().into_bytes();
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let e = crate::pipeline_file::parse("pipeline update v2", &String::from_utf8(bad).unwrap())
        .unwrap_err();
    assert!(e.msg.contains("does not match its sha256"), "{e}");
}

/// A keyed function called from SQL as a table function builds the
/// operator a keyed `[[function]]` table builds (same id, state type,
/// source and field); a scalar function called as a table function and a
/// keyed one called in an expression are refused where they are called.
#[test]
fn sql_table_functions_are_keyed_functions() {
    let d = dir("sql-keyed");
    let text = |create: &str, select: &str| {
        format!(
            "{create}
CREATE TABLE s (k STRING, ts BIGINT, `value` DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'in.csv', 'format' = 'csv');
{select}"
        )
    };
    let file = d.join("p.sql").display().to_string();
    let p = crate::sql::parse(
        &file,
        &text(
            "CREATE FUNCTION cnt AS 'counter.wasm' LANGUAGE WASM;",
            "SELECT * FROM TABLE(cnt(TABLE s PARTITION BY k, DESCRIPTOR(rowtime), DESCRIPTOR(`value`),
  COLUMNS => DESCRIPTOR(total), limit => 80.5, name => 'x'));",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let toml = counter_pipeline(&d);
    let (a, b) = (&p.pipeline.spec.operators, &toml.spec.operators);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (&a[0].id, &a[0].source, &a[0].field),
        (&b[0].id, &b[0].source, &b[0].field)
    );
    assert_eq!(
        format!("{:?}", a[0].kind).split("factory").next(),
        format!("{:?}", b[0].kind).split("factory").next()
    );
    let cols: Vec<&str> = p.query.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        cols,
        ["k", "window_start", "window_end", "window_time", "total"]
    );
    assert!(
        p.query.explain.contains("config limit=80.5 name=x"),
        "{}",
        p.query.explain
    );

    let err = |create: &str, select: &str| {
        crate::sql::parse(&file, &text(create, select))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = err(
        "CREATE FUNCTION c_to_f AS 'celsius.wasm' LANGUAGE WASM;",
        "SELECT * FROM TABLE(c_to_f(TABLE s PARTITION BY k, DESCRIPTOR(rowtime), DESCRIPTOR(`value`),
  COLUMNS => DESCRIPTOR(total)));",
    );
    assert!(e.contains("p.sql:6:21"), "{e}");
    assert!(e.contains("`c_to_f` is a scalar function"), "{e}");
    assert!(e.contains("AVG(c_to_f(x))"), "{e}");
    let e = err(
        "CREATE FUNCTION cnt AS 'counter.wasm' LANGUAGE WASM;",
        "SELECT k, window_start, AVG(cnt(`value`)) AS a
FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(rowtime), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;",
    );
    assert!(e.contains("p.sql:6:29"), "{e}");
    assert!(e.contains("`cnt` is a keyed function"), "{e}");
    assert!(e.contains("FROM TABLE(cnt(TABLE t PARTITION BY key"), "{e}");
    // A table function's rows take no GROUP BY; its columns are checked.
    let e = err(
        "CREATE FUNCTION cnt AS 'counter.wasm' LANGUAGE WASM;",
        "SELECT k, nope FROM TABLE(cnt(TABLE s PARTITION BY k, DESCRIPTOR(rowtime), DESCRIPTOR(`value`),
  COLUMNS => DESCRIPTOR(total)));",
    );
    assert!(
        e.contains("p.sql:6:11") && e.contains("no column `nope`"),
        "{e}"
    );
    let e = err(
        "CREATE FUNCTION cnt AS 'counter.wasm' LANGUAGE WASM;",
        "SELECT k FROM TABLE(cnt(TABLE s, DESCRIPTOR(rowtime), DESCRIPTOR(`value`),
  COLUMNS => DESCRIPTOR(total)));",
    );
    assert!(e.contains("needs the key"), "{e}");
}
