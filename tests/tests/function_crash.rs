//! A keyed WebAssembly user function under `weir run`, SIGKILLed while it
//! runs: the end-to-end pipeline's windows are computed inside the guest
//! (examples/functions/w1, 1 s windows), its per-key state lives in weir's
//! checkpoints, and after random kills and restarts the published windows,
//! deduplicated by id, must equal an uninterrupted *native* run's, id for
//! id and byte for byte: nothing lost, nothing counted twice.
//!
//! Builds the guest for wasm32-unknown-unknown; skipped, with a message,
//! when that target is not installed. `WEIR_CRASH_KILLS` (default 8) and
//! `WEIR_CRASH_SEED` as in recovery_crash.rs.

use std::path::Path;
use std::time::Duration;

use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

/// The end-to-end pipeline with its window operator `w` replaced by the
/// W1 guest under the same id.
fn wasm_pipeline(module: &Path) -> String {
    let cut = PIPELINE.find("[[window]]").expect("window");
    format!(
        "{}[[function]]\nid = \"w\"\nkind = \"keyed\"\nmodule = \"{}\"\nsource = \"s\"\nfields = [\"v\"]\nsees_late = true\ncolumns = [\"count\", \"mean\", \"min\", \"max\", \"stddev\"]\nflag = true\nconfig = {{ size = 1000, alpha = 0.1, k = 3.0, warmup = 5 }}\n",
        &PIPELINE[..cut],
        module.display()
    )
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn the_guest_computes_the_native_windows_byte_for_byte() {
    let Some(module) = w1_module(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions")) else {
        return;
    };
    let msgs = input(60_000, 4, T0);
    let native = reference(PIPELINE, &msgs);
    let wasm = reference(&wasm_pipeline(&module), &msgs);
    assert!(native.len() > 100);
    let flagged: Vec<String> = native
        .values()
        .map(|p| String::from_utf8_lossy(p).to_string())
        .filter(|p| p.contains("\"anomaly\""))
        .collect();
    eprintln!("{} windows, e.g. {:?}", native.len(), flagged.first());
    // Every window carries the baseline's verdict (flag and score).
    assert_eq!(flagged.len(), native.len());
    assert_eq!(wasm.len(), native.len());
    for (id, p) in &native {
        assert_eq!(
            wasm.get(id).map(|x| String::from_utf8_lossy(x).to_string()),
            Some(String::from_utf8_lossy(p).to_string()),
            "{id}"
        );
    }
}

#[test]
fn sigkill_while_a_stateful_function_runs_loses_nothing_and_counts_nothing_twice() {
    let Some(module) = w1_module(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions")) else {
        return;
    };
    let kills: usize = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("function crash test: {kills} kills, WEIR_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("fn-crash");
    let _mosq;
    let addr = if std::env::var_os("WEIR_CRASH_RUMQTTD").is_none() && have_mosquitto() {
        _mosq = Mosquitto::start(&dir.0);
        _mosq.addr()
    } else {
        weir_agent::demo::start_broker().expect("broker")
    };
    let gw = gateway_file(&dir.0, addr, "");
    std::fs::write(dir.0.join("pipeline.toml"), wasm_pipeline(&module)).unwrap();
    let msgs = input(20_000 + kills * 500, 10, T0);
    // The reference is the native operator's: the guest must match it.
    let expected = reference(PIPELINE, &msgs);
    let col = Collector::start(addr, &format!("weir/{GATEWAY}/windows/#"));
    precreate_session(addr, &format!("weir-{GATEWAY}"), "plant/+/v");
    let raw: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .map(|m| (m.topic.clone(), m.payload.clone().into_bytes()))
        .collect();
    let publisher =
        std::thread::spawn(move || publish_raw(addr, raw.into_iter(), Duration::from_secs(300)));
    let mut last_log = dir.0.join("agent-0.log");
    for k in 0..kills {
        last_log = dir.0.join(format!("agent-{k}.log"));
        let agent = AgentProc::start(&gw, &last_log);
        let target = col.distinct() + 1 + rng.below(12) as usize;
        col.wait_for(target, Duration::from_millis(30 + rng.below(400)));
        std::thread::sleep(Duration::from_millis(rng.below(15)));
        agent.kill();
    }
    publisher.join().expect("publisher");
    let final_log = dir.0.join("agent-final.log");
    let agent = AgentProc::start(&gw, &final_log);
    agent.wait_log(&final_log, "connected", Duration::from_secs(60));
    let done = col.wait_for(expected.len(), Duration::from_secs(120));
    let status = agent.terminate(Duration::from_secs(30));
    if !done {
        panic!(
            "only {} of {} outputs after {kills} kills (seed {seed}); last killed agent's log:\n{}\nfinal agent's log:\n{}",
            col.distinct(),
            expected.len(),
            tail(&last_log),
            tail(&final_log)
        );
    }
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        tail(&final_log)
    );
    col.assert_matches(&expected);
    eprintln!(
        "function crash test: {} windows from the guest exactly as native and uninterrupted after {kills} SIGKILLs",
        expected.len()
    );
}
