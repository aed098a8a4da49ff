//! The fleet operator's commands, as a person runs them: `weir fleet
//! keygen`, `sign`, `push --wait` against a running agent, `status`; and a
//! document signed by a key the gateway does not trust is refused.

use std::process::Command;
use std::time::Duration;

use weir_e2e::*;

fn weir(args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_exe())
        .args(args)
        .output()
        .expect("run weir");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn keygen_sign_push_and_status_from_the_command_line() {
    let addr = weir_agent::demo::start_broker().expect("broker");
    let dir = TempDir::new("fleet");
    let keys = dir.0.join("fleet-keys");
    let stranger = dir.0.join("stranger-keys");
    let (ok, out) = weir(&["fleet", "keygen", "--out", keys.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("key id:"), "{out}");
    let (ok, out) = weir(&["fleet", "keygen", "--out", keys.to_str().unwrap()]);
    assert!(!ok, "an existing key is never replaced: {out}");
    assert!(weir(&["fleet", "keygen", "--out", stranger.to_str().unwrap()]).0);
    std::fs::copy(keys.join("identity.pub"), dir.0.join("fleet.pub")).unwrap();

    let gw = gateway_file(
        &dir.0,
        addr,
        "[updates]\ntrusted_keys = [\"fleet.pub\"]\nhealth_check = \"200ms\"\n",
    );
    let agent = InProcAgent::start(&gw);
    // Version 1: the same pipeline with a 2 s window beside the 1 s one.
    let v1 = PIPELINE.to_string()
        + "[[window]]\nid = \"w2\"\nsource = \"s\"\nfield = \"v\"\nkind = \"tumbling\"\nsize = \"2s\"\naggregates = [\"count\"]\n";
    let p1 = dir.0.join("v1.toml");
    std::fs::write(&p1, v1).unwrap();
    let doc = dir.0.join("v1.update");
    let key = keys.join("identity.key");
    let (ok, out) = weir(&[
        "fleet",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--version",
        "1",
        "--gateway",
        GATEWAY,
        p1.to_str().unwrap(),
        "-o",
        doc.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    // A version no gateway could ever move past is refused, with why.
    for v in ["18446744073709551615", "9007199254740992", "0"] {
        let (ok, out) = weir(&[
            "fleet",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--version",
            v,
            "--gateway",
            GATEWAY,
            p1.to_str().unwrap(),
            "-o",
            dir.0.join("huge.update").to_str().unwrap(),
        ]);
        assert!(!ok, "version {v} is refused: {out}");
        assert!(out.contains("out of range"), "{out}");
    }
    assert!(!dir.0.join("huge.update").exists());
    let broker = format!("mqtt://{addr}");
    let (ok, out) = weir(&[
        "fleet",
        "push",
        "--broker",
        &broker,
        "--gateway",
        GATEWAY,
        doc.to_str().unwrap(),
        "--wait",
        "--timeout",
        "30",
    ]);
    assert!(ok, "push --wait reports the applied update: {out}");
    assert!(out.contains("version 1"), "{out}");

    // The same version signed by a stranger's key: refused, nothing changes.
    let bad = dir.0.join("bad.update");
    let skey = stranger.join("identity.key");
    assert!(
        weir(&[
            "fleet",
            "sign",
            "--key",
            skey.to_str().unwrap(),
            "--version",
            "2",
            "--gateway",
            GATEWAY,
            p1.to_str().unwrap(),
            "-o",
            bad.to_str().unwrap(),
        ])
        .0
    );
    let (ok, out) = weir(&[
        "fleet",
        "push",
        "--broker",
        &broker,
        "--gateway",
        GATEWAY,
        bad.to_str().unwrap(),
        "--wait",
        "--timeout",
        "30",
    ]);
    assert!(!ok, "a rejected update makes push --wait fail: {out}");
    assert!(
        out.contains("unknown_key") || out.contains("Rejected"),
        "{out}"
    );

    let (ok, out) = weir(&["fleet", "status", "--broker", &broker, "--timeout", "10"]);
    assert!(ok, "{out}");
    assert!(out.contains(GATEWAY) && out.contains("version 1"), "{out}");
    wait_until(
        Duration::from_secs(10),
        "the agent to run version 1",
        || agent.metrics().render().contains("weir_pipeline_version 1"),
    );
    agent.stop();
}
