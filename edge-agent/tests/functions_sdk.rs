//! The Rust guest SDK and its examples (examples/functions), built for
//! wasm32-unknown-unknown by this test, against weir's host:
//!
//! - W1 as a keyed WebAssembly function (examples/w1_wasm.toml) writes the
//!   same rows as native W1 (examples/w1.toml) on generated W1 data;
//! - the unit conversion scalar computes its field;
//! - the detector's jump alerts match a model of it.
//!
//! Skipped, with a message, when the wasm32-unknown-unknown target is not
//! installed (`rustup target add wasm32-unknown-unknown`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use weir_agent::pipeline_file::{parse, PipelineFile};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the example modules once; `None` if the target is missing.
fn modules() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let sysroot = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()?;
        let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
        if !Path::new(&sysroot)
            .join("lib/rustlib/wasm32-unknown-unknown")
            .exists()
        {
            eprintln!(
                "SKIPPED: the wasm32-unknown-unknown target is not installed \
                 (rustup target add wasm32-unknown-unknown)"
            );
            return None;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions");
        let st = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(repo().join("examples/functions/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .current_dir(repo().join("examples/functions"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo");
        assert!(st.success(), "building examples/functions failed");
        Some(target.join("wasm32-unknown-unknown/release"))
    })
    .as_deref()
}

/// `text` with its `module = "…"` pointing at the built `name`.
fn with_module(text: &str, from: &str, dir: &Path, name: &str) -> String {
    let to = dir.join(format!("weir_fn_{name}.wasm"));
    assert!(text.contains(from), "{from}");
    text.replace(from, &to.display().to_string())
}

fn load(text: &str) -> PipelineFile {
    parse("pipeline.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn replay(pf: &PipelineFile, input: &[u8]) -> (String, weir_agent::replay::Summary) {
    let mut out = Vec::new();
    let (sum, _) = weir_agent::replay::replay(pf, 0, input, &mut out, |_, _| {}).unwrap();
    (String::from_utf8(out).unwrap(), sum)
}

fn sorted(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn w1_in_webassembly_writes_the_same_rows_as_native_w1() {
    let Some(dir) = modules() else { return };
    let native = load(&std::fs::read_to_string(repo().join("examples/w1.toml")).unwrap());
    let text = std::fs::read_to_string(repo().join("examples/w1_wasm.toml")).unwrap();
    let wasm = load(&with_module(&text, "functions/wasm/w1.wasm", dir, "w1"));
    for (events, seed) in [(100_000, 1), (100_000, 7)] {
        let mut input = Vec::new();
        weir_agent::gen::W1::new(events, seed)
            .write(&mut input)
            .unwrap();
        let (a, sa) = replay(&native, &input);
        let (b, sb) = replay(&wasm, &input);
        assert!(sa.windows > 100, "{sa}");
        assert!(a.contains(",true"), "no flagged window to compare");
        assert_eq!(sa.windows, sb.windows);
        assert_eq!(sa.flagged, sb.flagged);
        assert_eq!(sorted(&a), sorted(&b));
        let rep = wasm.functions.report();
        assert_eq!(rep[0].1.failed_total(), 0, "{}", rep[0].1);
    }
}

/// The keyed W1 guest called from SQL as a table function
/// (examples/w1_wasm.sql) builds the operator of examples/w1_wasm.toml
/// and writes its rows (the SQL rows with datetimes, a header and the
/// key first).
#[test]
fn w1_as_a_sql_table_function_writes_the_rows_of_the_toml_function() {
    let Some(dir) = modules() else { return };
    let toml = std::fs::read_to_string(repo().join("examples/w1_wasm.toml")).unwrap();
    let toml = load(&with_module(&toml, "functions/wasm/w1.wasm", dir, "w1"));
    let sql = std::fs::read_to_string(repo().join("examples/w1_wasm.sql")).unwrap();
    let sql = weir_agent::sql::parse(
        "w1_wasm.sql",
        &with_module(&sql, "functions/wasm/w1.wasm", dir, "w1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (&toml.spec.operators, &sql.pipeline.spec.operators);
    assert_eq!(b.len(), 1);
    assert_eq!(
        (&a[0].id, &a[0].source, &a[0].field),
        (&b[0].id, &b[0].source, &b[0].field)
    );
    assert_eq!(
        toml.spec.sources[0].fields,
        sql.pipeline.spec.sources[0].fields
    );
    assert_eq!(toml.spec.state.max_keys, sql.pipeline.spec.state.max_keys);
    let mut input = Vec::new();
    weir_agent::gen::W1::new(100_000, 1)
        .write(&mut input)
        .unwrap();
    let (want, sw) = replay(&toml, &input);
    let mut out = Vec::new();
    let (sg, _) = weir_agent::sql::exec::replay(&sql, &input[..], &mut out, |b, _| {
        panic!("bad row {}: {}", b.line, b.error)
    })
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("sensor,window_start,window_end,count,mean,min,max,stddev,anomaly")
    );
    let ts = |ms: &str| weir_agent::sql::exec::format_ts(ms.parse().unwrap());
    let want: Vec<String> = want
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{}", c[0], ts(c[1]), ts(c[2]), c[3..].join(","))
        })
        .collect();
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort_unstable();
    let mut got: Vec<&str> = lines.collect();
    got.sort_unstable();
    assert!(sw.windows > 100 && sw.flagged > 0, "{sw}");
    assert_eq!((sg.windows, sg.flagged), (sw.windows, sw.flagged));
    assert_eq!(got, want);
}

#[test]
fn the_unit_conversion_example_computes_its_field() {
    let Some(dir) = modules() else { return };
    let text = r#"
[[source]]
name = "s"
fields = ["volts", "amps"]
watermark = "per-source"
csv = { columns = ["key", "ts", "volts", "amps"], header = false, timestamp = "ms" }
[[function]]
id = "power"
module = "MODULE"
export = "watts"
source = "s"
fields = ["volts", "amps"]
output = "w"
[[window]]
id = "p"
source = "s"
field = "w"
kind = "tumbling"
size = "1s"
aggregates = ["count", "sum"]
"#;
    let pf = load(&with_module(text, "MODULE", dir, "unit"));
    let mut input = String::new();
    let mut want = 0.0;
    for i in 0..100i64 {
        let (v, a) = (220.0 + (i % 7) as f64, 0.5 + (i % 3) as f64);
        want += v * a;
        input.push_str(&format!("m,{},{v},{a}\n", 1_700_000_000_000 + i * 5));
    }
    let (out, _) = replay(&pf, input.as_bytes());
    let got: f64 = out
        .lines()
        .map(|l| l.split(',').nth(4).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((got - want).abs() < 1e-3, "{got} vs {want}: {out}");
}

#[test]
fn the_detector_example_alerts_on_jumps() {
    let Some(dir) = modules() else { return };
    let text = r#"
[[source]]
name = "s"
fields = ["value"]
watermark = "per-source"
csv = { columns = ["key", "ts", "value"], header = false, timestamp = "ms" }
[[function]]
id = "jump"
kind = "keyed"
module = "MODULE"
source = "s"
fields = ["value"]
config = { max_jump = 5.0, stale_ms = 3600000 }
"#;
    let pf = load(&with_module(text, "MODULE", dir, "detector"));
    let mut input = String::new();
    let mut want = Vec::new();
    let mut prev: [Option<f64>; 2] = [None, None];
    for i in 0..400i64 {
        let k = (i % 2) as usize;
        let v = ((i * 7919) % 23) as f64 * if i % 11 == 0 { 1.0 } else { 0.3 };
        let ts = 1_700_000_000_000 + i * 10;
        if let Some(p) = prev[k] {
            if (v - p).abs() > 5.0 {
                want.push(format!("jump,k{k},{ts},{},1", v - p));
            }
        }
        prev[k] = Some(v);
        input.push_str(&format!("k{k},{ts},{v}\n"));
    }
    assert!(!want.is_empty());
    let (out, _) = replay(&pf, input.as_bytes());
    let got: Vec<String> = out
        .lines()
        .map(|l| {
            // jump,key,ts,value,tag: compare the value as a number.
            let c: Vec<&str> = l.split(',').collect();
            let v: f64 = c[3].parse().unwrap();
            format!("{},{},{},{},{}", c[0], c[1], c[2], v, c[4])
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{out}");
    for (g, w) in got.iter().zip(&want) {
        let (gv, wv): (f64, f64) = (
            g.split(',').nth(3).unwrap().parse().unwrap(),
            w.split(',').nth(3).unwrap().parse().unwrap(),
        );
        assert!((gv - wv).abs() < 1e-5, "{g} vs {w}");
        assert_eq!(g.rsplit_once(',').unwrap().1, "1");
    }
}
