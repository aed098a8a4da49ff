//! `weir bundle` end to end, with `--binary` (no cross compilation here;
//! CI builds the real one): unpack with the system's `tar`, check every
//! file, its mode and contents, the key pair, and the errors for a missing
//! board, a wrong binary and missing cross tools.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ed25519_dalek::{Signer, Verifier};
use weir_agent::identity;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh, empty folder per test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-bundle-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn weir(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(args).current_dir(root());
    // Tests decide the cross tools themselves.
    c.env_remove("CC_aarch64_unknown_linux_musl");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The start of an ELF executable for `machine` (183 AArch64, 62 x86-64),
/// padded: all `weir bundle` looks at.
fn fake_elf(dir: &Path, machine: u16) -> PathBuf {
    let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    b.resize(16, 0);
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&machine.to_le_bytes());
    b.resize(4096, 0xab);
    let p = dir.join(format!("fake-weir-{machine}"));
    std::fs::write(&p, &b).unwrap();
    p
}

fn host_machine() -> u16 {
    match std::env::consts::ARCH {
        "aarch64" => 183,
        _ => 62,
    }
}

struct Made {
    tarball: PathBuf,
    unpacked: PathBuf,
    stdout: String,
    binary: PathBuf,
}

fn make(name: &str, board: &str, machine: u16, extra: &[&str]) -> Made {
    let dir = scratch(name);
    let binary = fake_elf(&dir, machine);
    let out = dir.join("out");
    let mut args = vec![
        "bundle",
        "--board",
        board,
        "--out",
        out.to_str().unwrap(),
        "--binary",
        binary.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = weir(&args, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let board_name = Path::new(board)
        .parent()
        .and_then(|p| p.file_name())
        .map_or(board.to_string(), |n| n.to_string_lossy().into_owned());
    let tarball = out.join(format!(
        "weir-{board_name}-{}.tar.gz",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(tarball.is_file(), "{} missing", tarball.display());
    let unpacked = dir.join("root");
    std::fs::create_dir_all(&unpacked).unwrap();
    let t = Command::new("tar")
        .arg("-xzpf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .expect("run tar");
    assert!(t.status.success(), "tar: {}", text(&t.stderr));
    Made {
        tarball,
        unpacked,
        stdout: text(&o.stdout),
        binary,
    }
}

/// path → mode of every regular file under `dir`.
fn files(dir: &Path) -> BTreeMap<String, u32> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, u32>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, m.permissions().mode() & 0o7777);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn read(m: &Made, path: &str) -> String {
    std::fs::read_to_string(m.unpacked.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Lines of a unit file that are settings (not comments).
fn settings(unit: &str) -> Vec<&str> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect()
}

#[test]
fn rpi4_bundle_has_every_file_with_its_mode() {
    let m = make("rpi4", "rpi4", 183, &[]);
    let want: BTreeMap<String, u32> = [
        ("usr/bin/weir", 0o755),
        ("etc/weir/board.toml", 0o644),
        ("etc/weir/gateway.toml", 0o644),
        ("etc/weir/identity.key", 0o600),
        ("etc/weir/identity.pub", 0o644),
        ("lib/systemd/system/weir.service", 0o644),
        ("usr/lib/sysusers.d/weir.conf", 0o644),
        ("usr/lib/udev/rules.d/60-weir.rules", 0o644),
        ("etc/mosquitto/conf.d/weir.conf", 0o644),
        ("usr/share/doc/weir/README", 0o644),
        ("usr/share/doc/weir/MANIFEST", 0o644),
    ]
    .into_iter()
    .map(|(p, mode)| (p.to_string(), mode))
    .collect();
    assert_eq!(files(&m.unpacked), want);
    // The tarball holds the private identity key: only its owner reads it.
    let mode = std::fs::metadata(&m.tarball).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "tarball mode {mode:o}");
    // Only etc/weir/ is a folder entry: extracting into / must not touch
    // the modes of /etc, /usr or a merged-/usr /lib symlink.
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&m.tarball)
        .output()
        .unwrap();
    let dirs: Vec<String> = text(&list.stdout)
        .lines()
        .filter(|l| l.ends_with('/'))
        .map(String::from)
        .collect();
    assert_eq!(dirs, ["etc/weir/"]);

    assert_eq!(
        std::fs::read(m.unpacked.join("usr/bin/weir")).unwrap(),
        std::fs::read(&m.binary).unwrap()
    );
    assert_eq!(
        read(&m, "etc/weir/board.toml"),
        std::fs::read_to_string(root().join("boards/rpi4/board.toml")).unwrap()
    );

    // The installed board profile still passes `weir check` where it lands.
    let board = m.unpacked.join("etc/weir/board.toml");
    let o = weir(&["check", board.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("ok: board `rpi4`"),
        "{}",
        text(&o.stdout)
    );

    let unit = read(&m, "lib/systemd/system/weir.service");
    let s = settings(&unit);
    for line in [
        "ExecStart=/usr/bin/weir run --config /etc/weir/gateway.toml",
        "Restart=always",
        "RestartSec=5s",
        "StartLimitIntervalSec=0",
        "User=weir",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/weir",
        "StateDirectory=weir",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryMax=256M",
        "SupplementaryGroups=i2c spi",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/i2c-1 rw",
        "DeviceAllow=/dev/spidev0.0 rw",
        "LoadCredential=identity.key:/etc/weir/identity.key",
        "ConditionPathExists=/etc/weir/pipeline.toml",
        "WantedBy=multi-user.target",
    ] {
        assert!(s.contains(&line), "unit lacks `{line}`:\n{unit}");
    }
    // PrivateDevices would hide the buses this board needs.
    assert!(!unit.contains("PrivateDevices"), "{unit}");

    let sysusers = read(&m, "usr/lib/sysusers.d/weir.conf");
    assert!(
        sysusers.contains("u weir - \"weir stream runtime\" /var/lib/weir /usr/sbin/nologin"),
        "{sysusers}"
    );
    assert!(
        sysusers.contains("m weir i2c") && sysusers.contains("m weir spi"),
        "{sysusers}"
    );
    let udev = read(&m, "usr/lib/udev/rules.d/60-weir.rules");
    assert!(udev.contains("KERNEL==\"i2c-1\", GROUP=\"i2c\""), "{udev}");
    assert!(
        udev.contains("KERNEL==\"spidev0.0\", GROUP=\"spi\""),
        "{udev}"
    );

    // gateway.toml: the keys of weir_agent::gateway, with the board's values.
    let g = read(&m, "etc/weir/gateway.toml");
    let t: toml::Table = toml::from_str(&g).unwrap();
    let id = t["id"].as_str().unwrap();
    assert!(id.starts_with("rpi4-") && id.len() == 17, "{id}");
    assert_eq!(t["broker"]["url"].as_str(), Some("mqtt://127.0.0.1:1883"));
    assert_eq!(t["data_dir"].as_str(), Some("/var/lib/weir"));
    assert_eq!(t["pipeline"].as_str(), Some("/etc/weir/pipeline.toml"));
    assert_eq!(t["durability"].as_str(), Some("journal"));
    assert_eq!(t["journal"]["group_commit"].as_str(), Some("50ms"));
    assert_eq!(t["checkpoint"]["interval"].as_str(), Some("5m"));
    assert_eq!(t["metrics"]["listen"].as_str(), Some("127.0.0.1:9464"));
    let parsed = weir_agent::gateway::parse("gateway.toml", &g, Path::new("/etc/weir")).unwrap();
    assert_eq!(parsed.id, id);
    assert_eq!(parsed.data_dir, Path::new("/var/lib/weir"));
    assert_eq!(
        (parsed.group_commit_ms, parsed.checkpoint_ms),
        (50, 300_000)
    );
    // The SD card's write budget, and a broker window wide enough for it.
    assert_eq!(parsed.storage.write_budget, Some(2 << 30));
    assert_eq!(parsed.storage.max_ack_delay_ms, 5_000);

    // The local broker: persistence on, the queue well above mosquitto's
    // 1000 (which drops QoS 1 for a subscriber that falls behind), and why.
    let mq = read(&m, "etc/mosquitto/conf.d/weir.conf");
    assert!(mq.lines().any(|l| l == "persistence true"), "{mq}");
    let queued: u64 = mq
        .lines()
        .find_map(|l| l.strip_prefix("max_queued_messages "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(queued >= 100_000, "{queued}");
    let inflight: u64 = mq
        .lines()
        .find_map(|l| l.strip_prefix("max_inflight_messages "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(inflight >= 5_000, "{inflight}");
    assert!(mq.contains("DROPPED") && mq.contains("1.3%"), "{mq}");
    // Debian's mosquitto.conf sets it; a second one is a startup error.
    assert!(
        !mq.lines().any(|l| l.starts_with("persistence_location")),
        "{mq}"
    );

    // The identity: the key pair matches, and stdout carries the public key.
    let key = identity::load_signing_key(&m.unpacked.join("etc/weir/identity.key")).unwrap();
    let public = identity::load_verifying_key(&m.unpacked.join("etc/weir/identity.pub")).unwrap();
    assert_eq!(key.verifying_key(), public);
    let sig = key.sign(b"pipeline v2");
    public.verify(b"pipeline v2", &sig).unwrap();
    let printed = identity::parse_verifying_key(Path::new("<stdout>"), &m.stdout).unwrap();
    assert_eq!(printed, public);
    assert!(
        m.stdout.starts_with(&format!(
            "# gateway {id} ed25519 {}",
            identity::public_hex(&public)
        )),
        "{}",
        m.stdout
    );

    // MANIFEST: every other file with its mode and size; no hash of the key.
    let manifest = read(&m, "usr/share/doc/weir/MANIFEST");
    for (path, mode) in files(&m.unpacked) {
        if path.ends_with("MANIFEST") {
            continue;
        }
        let size = std::fs::metadata(m.unpacked.join(&path)).unwrap().len();
        let line = manifest
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not in MANIFEST:\n{manifest}"));
        assert!(line.starts_with(&format!("{mode:04o} {size} ")), "{line}");
    }
    assert!(manifest.contains("0600 ") && manifest.contains("-(secret) etc/weir/identity.key"));
    let readme = read(&m, "usr/share/doc/weir/README");
    assert!(readme.contains("systemd-sysusers --root=/mnt"), "{readme}");
    assert!(readme.contains(id), "{readme}");
}

#[test]
fn sim_bundle_is_for_the_host_without_devices() {
    let m = make("sim", "boards/sim/board.toml", host_machine(), &[]);
    let f = files(&m.unpacked);
    assert_eq!(f.get("usr/bin/weir"), Some(&0o755));
    assert_eq!(f.get("etc/weir/identity.key"), Some(&0o600));
    assert!(
        !f.contains_key("usr/lib/udev/rules.d/60-weir.rules"),
        "{f:?}"
    );
    let unit = read(&m, "lib/systemd/system/weir.service");
    let s = settings(&unit);
    // The sim board's relative data_dir lands under /var/lib/weir.
    for line in [
        "ReadWritePaths=/var/lib/weir/weir-data",
        "StateDirectory=weir/weir-data",
        "PrivateDevices=yes",
        "ProtectSystem=strict",
    ] {
        assert!(s.contains(&line), "unit lacks `{line}`:\n{unit}");
    }
    assert!(!unit.contains("SupplementaryGroups"), "{unit}");
    assert!(!unit.contains("DeviceAllow"), "{unit}");
    let g: toml::Table = toml::from_str(&read(&m, "etc/weir/gateway.toml")).unwrap();
    assert_eq!(g["data_dir"].as_str(), Some("/var/lib/weir/weir-data"));
    assert_eq!(g["checkpoint"]["interval"].as_str(), Some("10s"));
    assert!(g["id"].as_str().unwrap().starts_with("sim-"));
}

#[test]
fn two_bundles_get_different_identities() {
    let a = make("id-a", "rpi4", 183, &[]);
    let b = make("id-b", "rpi4", 183, &[]);
    let key = |m: &Made| {
        identity::load_signing_key(&m.unpacked.join("etc/weir/identity.key"))
            .unwrap()
            .to_bytes()
    };
    assert_ne!(key(&a), key(&b));
    assert_ne!(a.stdout, b.stdout);
    assert_ne!(
        read(&a, "etc/weir/gateway.toml"),
        read(&b, "etc/weir/gateway.toml")
    );
}

const PUMPS: &str = r#"name = "pumps"
[time]
mode = "ingestion"
unit = "ms"
[[source]]
name = "vibration"
fields = ["x", "y", "z"]
[[source]]
name = "environment"
fields = ["temperature", "pressure", "humidity"]
[[source]]
name = "power"
fields = ["bus_voltage", "current"]
[[window]]
id = "vibration-rms"
source = "vibration"
field = "z"
kind = "tumbling"
size = "10s"
aggregates = ["count", "rms"]
"#;

#[test]
fn a_pipeline_is_checked_against_the_board_and_installed() {
    let dir = scratch("pipeline");
    let good = dir.join("pumps.toml");
    std::fs::write(&good, PUMPS).unwrap();
    let m = make(
        "pipeline-ok",
        "rpi4",
        183,
        &[
            "--pipeline",
            good.to_str().unwrap(),
            "--id",
            "pump-station-7",
        ],
    );
    assert_eq!(read(&m, "etc/weir/pipeline.toml"), PUMPS);
    assert_eq!(
        files(&m.unpacked).get("etc/weir/pipeline.toml"),
        Some(&0o644)
    );
    assert!(read(&m, "etc/weir/gateway.toml").contains("id = \"pump-station-7\""));

    // W1's pipeline has no `vibration` source for the board's ADXL345.
    let bin = fake_elf(&dir, 183);
    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi4",
            "--out",
            dir.join("out").to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
            "--pipeline",
            root().join("examples/w1.toml").to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("source `vibration`") && err.contains("w1.toml"),
        "{err}"
    );
    assert!(!dir
        .join("out")
        .join(format!("weir-rpi4-{}.tar.gz", env!("CARGO_PKG_VERSION")))
        .exists());

    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi4",
            "--out",
            dir.join("out").to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
            "--id",
            "a/b",
        ],
        &[],
    );
    assert!(
        text(&o.stderr).contains("gateway id `a/b`"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn an_existing_bundle_is_not_overwritten_without_force() {
    let m = make("force", "rpi4", 183, &[]);
    let out = m.tarball.parent().unwrap().to_str().unwrap().to_string();
    let before = std::fs::read(&m.tarball).unwrap();
    let args = [
        "bundle",
        "--board",
        "rpi4",
        "--out",
        &out,
        "--binary",
        m.binary.to_str().unwrap(),
    ];
    let o = weir(&args, &[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&m.tarball).unwrap(), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = weir(&forced, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_ne!(std::fs::read(&m.tarball).unwrap(), before);
}

#[test]
fn a_missing_board_is_a_clear_error() {
    let dir = scratch("noboard");
    let bin = fake_elf(&dir, 183);
    let out = dir.join("out");
    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi9",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("no board `rpi9`") && err.contains("boards/rpi9/board.toml"),
        "{err}"
    );
    assert!(err.contains("rpi4, sim"), "{err}");
    let o = weir(
        &[
            "bundle",
            "--board",
            "/nonexistent/board.toml",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        text(&o.stderr).contains("/nonexistent/board.toml does not exist"),
        "{}",
        text(&o.stderr)
    );
    // An invalid profile is reported the way `weir check` does, with its line.
    let bad = dir.join("bad/board.toml");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, "[board]\nname = \"bad\"\ntarget = \"mips\"\n").unwrap();
    let o = weir(
        &[
            "bundle",
            "--board",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("board.toml:") && err.contains("error:"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written for a bad board");
}

#[test]
fn a_binary_for_another_cpu_is_refused() {
    let dir = scratch("wrongcpu");
    let x86 = fake_elf(&dir, 62);
    let out = dir.join("out");
    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi4",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            x86.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("an ELF for x86-64") && err.contains("runs AArch64"),
        "{err}"
    );
    assert!(err.contains("--target aarch64-unknown-linux-musl"), "{err}");
    let script = dir.join("weir.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi4",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            script.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        text(&o.stderr).contains("not an ELF executable"),
        "{}",
        text(&o.stderr)
    );
    let o = weir(
        &[
            "bundle",
            "--board",
            "rpi4",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            dir.join("nope").to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        text(&o.stderr).contains("cannot read the binary"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn missing_cross_tools_say_what_to_install() {
    let dir = scratch("tools");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    // No aarch64-linux-gnu-gcc on PATH (an empty PATH: nothing is found).
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let o = weir(
        &["bundle", "--board", "rpi4", "--out", out],
        &[("PATH", empty.to_str().unwrap())],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("`aarch64-linux-gnu-gcc`"), "{err}");
    assert!(
        err.contains("apt-get install gcc-aarch64-linux-gnu"),
        "{err}"
    );
    // A compiler named in the environment that does not exist.
    let o = weir(
        &["bundle", "--board", "rpi4", "--out", out],
        &[("CC_aarch64_unknown_linux_musl", "/nonexistent/aarch64-gcc")],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("`/nonexistent/aarch64-gcc`")
            && err.contains("apt-get install gcc-aarch64-linux-gnu"),
        "{err}"
    );
    // A compiler, but a toolchain without the target's standard library.
    let rustc = dir.join("rustc");
    std::fs::write(
        &rustc,
        format!("#!/bin/sh\necho {}\n", dir.join("no-libdir").display()),
    )
    .unwrap();
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = weir(
        &["bundle", "--board", "rpi4", "--out", out],
        &[
            ("CC_aarch64_unknown_linux_musl", "/bin/sh"),
            ("RUSTC", rustc.to_str().unwrap()),
        ],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("standard library for aarch64-unknown-linux-musl is not installed"),
        "{err}"
    );
    assert!(
        err.contains("rustup target add aarch64-unknown-linux-musl"),
        "{err}"
    );
    assert!(
        !Path::new(out).exists(),
        "nothing is written when the build cannot start"
    );
}
