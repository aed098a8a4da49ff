//! Signed pipeline updates that carry WebAssembly modules (embedded in the
//! signed text by `weir functions embed`, with their SHA-256): a good one
//! is applied and its keyed function computes the same window aggregates
//! as the native operator it replaces; one whose function traps on every call
//! fails the same health check as any bad update and is rolled back.
//!
//! Builds the W1 guest for wasm32-unknown-unknown; skipped, with a
//! message, when that target is not installed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir_agent::identity;
use weir_cloud_sync::update::{self, UpdateResult};
use weir_e2e::*;

const T0: i64 = 1_700_000_000_000;

/// The end-to-end pipeline with window `w` computed by the W1 guest with
/// windows of `size` ms (0 makes every call trap), the module embedded.
fn wasm_update(dir: &Path, module: &Path, size: u32) -> String {
    std::fs::copy(module, dir.join("w1.wasm")).unwrap();
    let cut = PIPELINE.find("[[window]]").expect("window");
    let text = format!(
        "{}[[function]]\nid = \"w\"\nkind = \"keyed\"\nmodule = \"w1.wasm\"\nsource = \"s\"\nfields = [\"v\"]\nsees_late = true\nmax_failures = 1000000\ncolumns = [\"count\", \"mean\", \"min\", \"max\", \"stddev\"]\nflag = true\nconfig = {{ size = {size}, alpha = 0.1, k = 3.0, warmup = 5 }}\n",
        &PIPELINE[..cut],
    );
    let file = dir.join("v2.toml");
    let embedded = weir_agent::functions::embed(&file.display().to_string(), &text).unwrap();
    assert!(embedded.contains("[modules.\"w1.wasm\"]"));
    embedded
}

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[1; 32])
}

struct Setup {
    dir: TempDir,
    addr: SocketAddr,
    agent: InProcAgent,
    status: Statuses,
}

fn setup(name: &str, extra: &str) -> Setup {
    let dir = TempDir::new(name);
    let addr = weir_agent::demo::start_broker().expect("broker");
    std::fs::write(
        dir.0.join("fleet.pub"),
        identity::public_pem(&key().verifying_key()).unwrap(),
    )
    .unwrap();
    let gw = gateway_file(
        &dir.0,
        addr,
        &format!("[updates]\ntrusted_keys = [\"fleet.pub\"]\nmax_bytes = 262144\n{extra}"),
    );
    let status = Statuses::start(addr);
    let agent = InProcAgent::start(&gw);
    agent.wait_subscribed(0);
    status.wait(0, "the initial status", |s| s.current_version == 0);
    Setup {
        dir,
        addr,
        agent,
        status,
    }
}

fn push(addr: SocketAddr, doc: Vec<u8>) {
    publish_raw(
        addr,
        std::iter::once((format!("weir/{GATEWAY}/pipeline/set"), doc)),
        Duration::from_secs(10),
    );
}

#[test]
fn an_update_carrying_a_module_runs_its_function() {
    let Some(module) = w1_module(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions")) else {
        return;
    };
    let s = setup("fn-upd-apply", "health_check = \"200ms\"\n");
    let col = Collector::start(s.addr, &format!("weir/{GATEWAY}/windows/#"));
    let msgs = input(16_000, 4, T0);
    let expected = reference(PIPELINE, &msgs);
    let v2 = wasm_update(&s.dir.0, &module, 1000);
    // The module file is gone: the update carries it.
    std::fs::remove_file(s.dir.0.join("w1.wasm")).unwrap();
    publish_all(s.addr, &msgs[..6_000], Duration::from_secs(30));
    wait_until(Duration::from_secs(10), "half the stream", || {
        s.agent
            .metrics()
            .readings
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6_000
    });
    let from = s.status.len();
    push(s.addr, update::sign(&key(), &v2, 2, &[GATEWAY.to_string()]));
    let st = s.status.wait(from, "applied", |st| {
        st.last_result == UpdateResult::Applied
    });
    assert_eq!(st.current_version, 2);
    // A native window's state does not pass to a function: `w` restarts.
    assert_eq!(st.reset, vec!["w".to_string()]);
    publish_all(s.addr, &msgs[6_000..], Duration::from_secs(30));
    // Windows that start after the switch (and its out-of-orderness) are
    // the guest's alone, and hold the native ones' aggregates.
    let later: Vec<&String> = expected
        .keys()
        .filter(|id| {
            id.rsplit('/')
                .next()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t >= T0 + 6_000 + 2_000)
        })
        .collect();
    assert!(later.len() >= 8, "{}", later.len());
    wait_until(Duration::from_secs(20), "the function's windows", || {
        col.with(|seen| later.iter().all(|k| seen.by_id.contains_key(*k)))
    });
    // The aggregates; the EWMA baseline restarted with the state, so the
    // verdicts differ.
    let aggs = |p: &[u8]| {
        let s = String::from_utf8_lossy(p).to_string();
        s[..s.find(",\"anomaly\"").expect("a verdict")].to_string()
    };
    col.with(|seen| {
        for id in &later {
            assert_eq!(aggs(&seen.by_id[*id]), aggs(&expected[*id]), "{id}");
        }
    });
    s.agent.stop();
}

#[test]
fn an_update_whose_function_traps_on_every_call_is_rolled_back() {
    let Some(module) = w1_module(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("functions")) else {
        return;
    };
    let s = setup("fn-upd-trap", "health_check = \"10s\"\nmax_errors = 20\n");
    let col = Collector::start(s.addr, &format!("weir/{GATEWAY}/windows/#"));
    let v2 = wasm_update(&s.dir.0, &module, 0);
    let msgs = input(9_000, 3, T0);
    publish_all(s.addr, &msgs[..3_000], Duration::from_secs(30));
    let from = s.status.len();
    push(s.addr, update::sign(&key(), &v2, 2, &[GATEWAY.to_string()]));
    s.status.wait(from, "staged", |st| {
        st.last_result == UpdateResult::Staged && st.current_version == 2
    });
    publish_all(s.addr, &msgs[3_000..3_100], Duration::from_secs(30));
    let st = s.status.wait(from, "rolled back", |st| {
        st.last_result == UpdateResult::RolledBack
    });
    assert_eq!(st.current_version, 0);
    assert!(
        st.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("health_check"),
        "{st:?}"
    );
    // The native pipeline runs again.
    let before = col.distinct();
    publish_all(s.addr, &msgs[3_100..], Duration::from_secs(30));
    assert!(
        col.wait_for(before + 3, Duration::from_secs(20)),
        "the previous pipeline produces outputs again"
    );
    s.agent.stop();
}
