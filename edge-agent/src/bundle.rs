//! `weir bundle`: the tarball a gateway is flashed with.
//!
//! One call builds (or takes, with `--binary`) a static, stripped `weir` for
//! the board's target and packs it with everything the gateway needs to run
//! it as a hardened systemd service, plus a fresh device identity:
//!
//! | path in the tarball | mode | what |
//! |---|---|---|
//! | `usr/bin/weir` | 0755 | the agent, built with `--profile board --no-default-features --features linux` (real I2C/SPI buses) |
//! | `etc/weir/board.toml` | 0644 | the board profile, as given |
//! | `etc/weir/gateway.toml` | 0644 | id, local broker, data dir, pipeline path, durability (`weir_agent::gateway`'s keys) |
//! | `etc/weir/pipeline.toml` | 0644 | only with `--pipeline` (checked against the board first); `pipeline.sql` for a SQL pipeline |
//! | `etc/weir/identity.key` | 0600 | the device's Ed25519 private key ([`crate::identity`]) |
//! | `etc/weir/identity.pub` | 0644 | its public key (also printed on stdout for the fleet) |
//! | `lib/systemd/system/weir.service` | 0644 | the hardened unit |
//! | `usr/lib/sysusers.d/weir.conf` | 0644 | the `weir` system user and its bus groups |
//! | `usr/lib/tmpfiles.d/weir.conf` | 0644 | only for a data dir outside `/var/lib` (else `StateDirectory=`) |
//! | `usr/lib/udev/rules.d/60-weir.rules` | 0644 | only with I2C/SPI buses: their device nodes to groups `i2c`/`spi` |
//! | `etc/mosquitto/conf.d/weir.conf` | 0644 | the local broker: persistence, a queue that does not drop QoS 1 |
//! | `usr/share/doc/weir/README` | 0644 | how to install it |
//! | `usr/share/doc/weir/MANIFEST` | 0644 | every other file: mode, size, SHA-256 |
//!
//! Paths are relative to the gateway's root file system: `tar -xzpf … -C /`
//! on a running gateway, `-C /mnt` on a mounted SD card. The archive holds
//! only these files and `etc/weir/`, never system folders, so extracting it
//! does not touch the modes of `/etc` or `/usr` or replace a merged-`/usr`
//! symlink.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use weir_boards::profile::{BoardProfile, BusKind, DurabilityMode, Flash};

use crate::identity;

/// The size the stripped gateway binary must stay under: 4.5 MB (issue
/// #13), the engine and agent with the Flink SQL front end and the
/// WebAssembly interpreter, without the unwind tables
/// (`unwind_link_args`, `drop_unwind_tables`); `boards/cross-test.sh` and
/// `boards/bundle-test.sh` hold the same budget.
pub const BINARY_BUDGET: u64 = 4_500_000;

/// Where the systemd unit runs the agent from.
const CONFIG: &str = "/etc/weir/gateway.toml";
const PIPELINE: &str = "/etc/weir/pipeline.toml";
/// Where a SQL pipeline goes: `weir run` tells the formats by extension.
const PIPELINE_SQL: &str = "/etc/weir/pipeline.sql";

/// The pipeline's path on the gateway: `pipeline.sql` for a SQL file
/// (`weir run` reads a pipeline's format from its extension), else
/// `pipeline.toml`.
fn pipeline_install_path(pipeline: Option<&Path>) -> &'static str {
    match pipeline.and_then(|p| p.extension()) {
        Some(e) if e.eq_ignore_ascii_case("sql") => PIPELINE_SQL,
        _ => PIPELINE,
    }
}

/// What to bundle.
#[derive(Debug, Clone)]
pub struct Options {
    /// A board name under `boards/` (`rpi4`), or a path to a `board.toml`
    /// (or to its folder).
    pub board: String,
    /// The folder the tarball is written into (created if missing).
    pub out: PathBuf,
    /// Package this binary instead of building one.
    pub binary: Option<PathBuf>,
    /// A pipeline file to install as `/etc/weir/pipeline.toml` (or
    /// `pipeline.sql` for a SQL query).
    pub pipeline: Option<PathBuf>,
    /// The gateway id (default: `<board>-<12 hex digits of the public key>`).
    pub id: Option<String>,
    /// Replace an existing tarball of the same name.
    pub force: bool,
}

/// One file in the tarball.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the gateway's root, no leading `/`.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// A bundle that was written.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The tarball.
    pub tarball: PathBuf,
    /// The board's name.
    pub board: String,
    /// The board's target triple.
    pub target: String,
    /// The gateway id written into `gateway.toml`.
    pub gateway_id: String,
    /// The device's public key, PEM.
    pub public_pem: String,
    /// The device's public key, hex.
    pub public_hex: String,
    /// The packaged binary's size in bytes.
    pub binary_bytes: u64,
    /// Where the binary came from.
    pub binary_from: PathBuf,
    /// Everything in the tarball, in order.
    pub entries: Vec<Entry>,
}

/// Why a bundle could not be made; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The board profile is invalid or unreadable.
    #[error("{0}")]
    Board(#[from] weir_boards::profile::ProfileError),
    /// No board of that name.
    #[error("no board `{name}`: {} does not exist\n  help: {help}", looked.display())]
    NoBoard {
        /// The name given.
        name: String,
        /// Where it was looked for.
        looked: PathBuf,
        /// The boards there are, or how to pass a path.
        help: String,
    },
    /// The pipeline file is invalid or does not fit the board.
    #[error("{0}")]
    Pipeline(String),
    /// A tool needed to cross-compile is missing.
    #[error("{what}\n  help: {help}")]
    MissingTool {
        /// What is missing.
        what: String,
        /// The command or package that installs it.
        help: String,
    },
    /// `cargo build` failed or did not say where the binary is.
    #[error("building weir failed: {0}")]
    Build(String),
    /// The binary to package is not right for the board.
    #[error("{}: error: {msg}\n  help: {help}", path.display())]
    Binary {
        /// The binary.
        path: PathBuf,
        /// What is wrong.
        msg: String,
        /// What to do.
        help: String,
    },
    /// A value cannot go into the generated files as it is.
    #[error("{msg}\n  help: {help}")]
    Invalid {
        /// What is wrong.
        msg: String,
        /// What to do.
        help: String,
    },
    /// The device identity could not be made.
    #[error("{0}")]
    Identity(#[from] identity::IdentityError),
    /// Reading or writing a file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io { path, what, source }
}

/// `weir bundle`: makes the bundle, prints a summary on stderr and the
/// gateway's public key (PEM, after a `# gateway <id>` comment line) on
/// stdout, so `weir bundle … > gw.pub` saves it for the fleet.
///
/// # Errors
/// See [`bundle`].
pub fn main(opts: &Options) -> Result<(), BundleError> {
    let b = bundle(opts)?;
    let size = |n: u64| format!("{n} bytes ({:.2} MiB)", n as f64 / (1024.0 * 1024.0));
    let tar_bytes = fs::metadata(&b.tarball).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "weir bundle: board `{}` ({}), gateway id `{}`",
        b.board, b.target, b.gateway_id
    );
    eprintln!(
        "weir bundle: binary {}: {}{}",
        b.binary_from.display(),
        size(b.binary_bytes),
        if b.binary_bytes > BINARY_BUDGET {
            format!(", OVER the {} budget", size(BINARY_BUDGET))
        } else {
            String::new()
        }
    );
    for e in &b.entries {
        eprintln!("  {:04o} {:>9}  {}", e.mode, e.data.len(), e.path);
    }
    eprintln!(
        "weir bundle: wrote {} ({})",
        b.tarball.display(),
        size(tar_bytes)
    );
    if !b
        .entries
        .iter()
        .any(|e| e.path == PIPELINE[1..] || e.path == PIPELINE_SQL[1..])
    {
        eprintln!(
            "weir bundle: no --pipeline given: put one at {PIPELINE} on the gateway (the service waits for it)"
        );
    }
    eprintln!("weir bundle: the device's public key (stdout), for the fleet:");
    print!(
        "# gateway {} ed25519 {}\n{}",
        b.gateway_id, b.public_hex, b.public_pem
    );
    Ok(())
}

/// Makes the bundle described by `opts` and writes it to
/// `opts.out/weir-<board>-<version>.tar.gz`.
///
/// # Errors
/// The board cannot be found or is invalid; the pipeline does not fit it;
/// a cross tool is missing (the error names the install command); the build
/// fails; the binary is not an executable for the board's CPU; the tarball
/// exists (without `force`) or cannot be written.
pub fn bundle(opts: &Options) -> Result<Bundle, BundleError> {
    let workspace = find_workspace();
    let board_path = resolve_board(&opts.board, workspace.as_deref())?;
    let board_text = fs::read_to_string(&board_path).map_err(io(&board_path, "cannot read"))?;
    let board = weir_boards::profile::load(&board_path)?;
    let data_dir = install_data_dir(&board)?;
    let pipeline_path = pipeline_install_path(opts.pipeline.as_deref());
    let pipeline = match &opts.pipeline {
        None => None,
        Some(p) => {
            let pf =
                crate::pipeline_file::load(p).map_err(|e| BundleError::Pipeline(e.to_string()))?;
            board.check_pipeline(&pf.spec).map_err(|e| {
                BundleError::Pipeline(format!(
                    "pipeline {} does not fit board `{}`: {e}",
                    p.display(),
                    board.name
                ))
            })?;
            Some(fs::read(p).map_err(io(p, "cannot read"))?)
        }
    };
    if let Some(id) = &opts.id {
        check_id(id)?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let tarball = opts
        .out
        .join(format!("weir-{}-{version}.tar.gz", board.name));
    if tarball.exists() && !opts.force {
        return Err(BundleError::Invalid {
            msg: format!(
                "{} already exists (it holds another gateway's identity)",
                tarball.display()
            ),
            help: "pass --force to replace it, or choose another --out folder".into(),
        });
    }

    let binary_from = match &opts.binary {
        Some(p) => p.clone(),
        None => {
            let ws = workspace.as_deref().ok_or_else(|| BundleError::Invalid {
                msg: "weir bundle builds weir from its source, and this is not inside a weir checkout".into(),
                help: "run it from a weir checkout, or pass --binary PATH with an already built binary".into(),
            })?;
            let exe = build(ws, &board.target)?;
            drop_unwind_tables(&exe, &board.target)
        }
    };
    let binary = fs::read(&binary_from).map_err(io(&binary_from, "cannot read the binary"))?;
    check_binary(&binary_from, &binary, &board)?;

    let key = identity::generate()?;
    let public = key.verifying_key();
    let public_hex = identity::public_hex(&public);
    let public_pem = identity::public_pem(&public)?;
    let gateway_id = opts
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", board.name, &public_hex[..12]));

    let mut entries = vec![
        file("usr/bin/weir", 0o755, binary),
        file("etc/weir/board.toml", 0o644, board_text.into_bytes()),
        file(
            "etc/weir/gateway.toml",
            0o644,
            gateway_toml(&board, &gateway_id, &data_dir, pipeline_path).into_bytes(),
        ),
    ];
    if let Some(p) = pipeline {
        entries.push(file(&pipeline_path[1..], 0o644, p));
    }
    entries.push(file(
        "etc/weir/identity.key",
        0o600,
        identity::private_pem(&key)?.into_bytes(),
    ));
    entries.push(file(
        "etc/weir/identity.pub",
        0o644,
        public_pem.clone().into_bytes(),
    ));
    entries.push(file(
        "lib/systemd/system/weir.service",
        0o644,
        unit(&board, &data_dir, version, pipeline_path).into_bytes(),
    ));
    entries.push(file(
        "usr/lib/sysusers.d/weir.conf",
        0o644,
        sysusers(&board, &data_dir).into_bytes(),
    ));
    if state_directory(&data_dir).is_none() {
        entries.push(file(
            "usr/lib/tmpfiles.d/weir.conf",
            0o644,
            format!(
                "# weir's data directory (outside /var/lib, so not a StateDirectory=).\nd {} 0750 weir weir -\n",
                data_dir.display()
            )
            .into_bytes(),
        ));
    }
    if let Some(rules) = udev_rules(&board) {
        entries.push(file(
            "usr/lib/udev/rules.d/60-weir.rules",
            0o644,
            rules.into_bytes(),
        ));
    }
    entries.push(file(
        "etc/mosquitto/conf.d/weir.conf",
        0o644,
        MOSQUITTO.as_bytes().to_vec(),
    ));
    let tar_name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    entries.push(file(
        "usr/share/doc/weir/README",
        0o644,
        readme(
            pipeline_path,
            &board,
            &gateway_id,
            &tar_name,
            &data_dir,
            version,
        )
        .into_bytes(),
    ));
    let manifest = manifest(&entries);
    entries.push(file(
        "usr/share/doc/weir/MANIFEST",
        0o644,
        manifest.into_bytes(),
    ));

    crate::fsutil::create_dir_all(&opts.out, 0o750)
        .map_err(io(&opts.out, "cannot create the output folder"))?;
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tar = tar::ustar(&entries, mtime).map_err(|msg| BundleError::Invalid {
        msg,
        help: "report this as a bug".into(),
    })?;
    // 0600: it holds the gateway's private identity key. Written beside
    // the target, fsynced and renamed, the folder fsynced: a half-written
    // tarball never carries the final name.
    let write = || -> std::io::Result<()> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar)?;
        crate::fsutil::write_atomic(&tarball, &gz.finish()?, 0o600)
    };
    write().map_err(|e| BundleError::Io {
        path: tarball.clone(),
        what: "cannot write the tarball",
        source: e,
    })?;
    Ok(Bundle {
        tarball,
        board: board.name.clone(),
        target: board.target.clone(),
        gateway_id,
        public_pem,
        public_hex,
        binary_bytes: entries[0].data.len() as u64,
        binary_from,
        entries,
    })
}

fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
    Entry {
        path: path.to_string(),
        mode,
        data,
    }
}

/// The weir checkout around the current folder (where `boards/` and the
/// workspace `Cargo.toml` are), or the one this binary was built from.
pub fn find_workspace() -> Option<PathBuf> {
    let is_ws = |d: &Path| d.join("edge-agent/Cargo.toml").is_file() && d.join("boards").is_dir();
    let cwd = std::env::current_dir().ok();
    cwd.iter()
        .flat_map(|c| c.ancestors())
        .find(|d| is_ws(d))
        .map(Path::to_path_buf)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .filter(|d| is_ws(d))
                .map(Path::to_path_buf)
        })
}

/// `rpi4` → `<workspace>/boards/rpi4/board.toml`; a path (with a `/`, or
/// ending in `.toml`) is taken as it is, a folder gets `board.toml` added.
fn resolve_board(spec: &str, workspace: Option<&Path>) -> Result<PathBuf, BundleError> {
    let as_path = Path::new(spec);
    if spec.contains('/') || spec.ends_with(".toml") || as_path.exists() {
        let p = if as_path.is_dir() {
            as_path.join("board.toml")
        } else {
            as_path.to_path_buf()
        };
        if !p.is_file() {
            return Err(BundleError::NoBoard {
                name: spec.into(),
                looked: p,
                help: "give a board name under boards/ (e.g. rpi4) or the path of a board.toml"
                    .into(),
            });
        }
        return Ok(p);
    }
    let Some(ws) = workspace else {
        return Err(BundleError::NoBoard {
            name: spec.into(),
            looked: Path::new("boards").join(spec).join("board.toml"),
            help: "not inside a weir checkout, so board names cannot be looked up: pass --board PATH/board.toml".into(),
        });
    };
    let p = ws.join("boards").join(spec).join("board.toml");
    if p.is_file() {
        return Ok(p);
    }
    let mut known: Vec<String> = fs::read_dir(ws.join("boards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("board.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    known.sort();
    Err(BundleError::NoBoard {
        name: spec.into(),
        looked: p,
        help: format!(
            "boards here: {}; or pass the path of a board.toml",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ),
    })
}

/// The gateway id becomes an MQTT topic level and a systemd-free string.
fn check_id(id: &str) -> Result<(), BundleError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(BundleError::Invalid {
            msg: format!("gateway id `{id}` is not usable"),
            help: "use 1 to 64 letters, digits, `-`, `_` or `.` (it becomes an MQTT topic level)"
                .into(),
        });
    }
    Ok(())
}

/// The data directory on the gateway: the board's, or for a relative one
/// (host boards) the same path under `/var/lib/weir`. It goes into unit
/// lines and `ReadWritePaths=`, so it must be plain and not a system folder.
fn install_data_dir(board: &BoardProfile) -> Result<PathBuf, BundleError> {
    let d = if board.data_dir.is_absolute() {
        board.data_dir.clone()
    } else {
        Path::new("/var/lib/weir").join(&board.data_dir)
    };
    let s = d.to_string_lossy();
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    let depth = d.components().count(); // "/" counts as one
    let system = [
        "/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/proc", "/sys", "/dev", "/tmp", "/run",
    ]
    .iter()
    .any(|p| d.starts_with(p));
    if !plain || depth < 3 || system || s.contains("/../") || s.ends_with("/..") {
        return Err(BundleError::Invalid {
            msg: format!(
                "{}: data_dir `{}` cannot be the service's only writable folder",
                board.file,
                d.display()
            ),
            help: "use a dedicated folder such as /var/lib/weir or /data/weir (letters, digits, `.`, `_`, `-`), not a system folder or one under /tmp".into(),
        });
    }
    Ok(d)
}

/// `StateDirectory=` for a data dir under `/var/lib` (systemd creates it,
/// owned by the service user, at each start).
fn state_directory(data_dir: &Path) -> Option<String> {
    data_dir
        .strip_prefix("/var/lib")
        .ok()
        .map(|r| r.to_string_lossy().into_owned())
}

/// A C cross compiler for a target (ring builds C) and its Debian package.
fn cross_cc(target: &str) -> Option<(&'static str, &'static str)> {
    match target {
        "aarch64-unknown-linux-musl" => Some(("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")),
        "armv7-unknown-linux-musleabihf" => {
            Some(("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"))
        }
        "x86_64-unknown-linux-musl" => Some(("musl-gcc", "musl-tools")),
        _ => None,
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Some(PathBuf::from(tool)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Checks the cross tools for `target` and returns the environment cargo
/// needs. Each missing piece is reported with the command that installs it.
fn cross_env(target: &str) -> Result<Vec<(String, String)>, BundleError> {
    let mut env = Vec::new();
    if target == "host" {
        return Ok(env);
    }
    let under = target.replace('-', "_");
    if let Some((default_cc, package)) = cross_cc(target) {
        let var = format!("CC_{under}");
        let cc = std::env::var(&var).unwrap_or_else(|_| default_cc.to_string());
        if which(&cc).is_none() {
            return Err(BundleError::MissingTool {
                what: format!(
                    "the C cross compiler `{cc}` for {target} is not installed (ring, under rustls, compiles C; set {var} to use another)"
                ),
                help: format!("install it: apt-get install {package}"),
            });
        }
        env.push((var, cc));
        if target.starts_with("aarch64") || target.starts_with("armv7") {
            let var = format!("CARGO_TARGET_{}_LINKER", under.to_uppercase());
            let linker = std::env::var(&var).unwrap_or_else(|_| "rust-lld".into());
            env.push((var, linker));
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .stderr(Stdio::null())
        .output();
    let libdir = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        Ok(_) => PathBuf::new(),
        Err(e) => {
            return Err(BundleError::MissingTool {
                what: format!("cannot run `{rustc}`: {e}"),
                help: "install Rust with rustup, then: rustup target add ".to_string() + target,
            })
        }
    };
    let has_std = fs::read_dir(&libdir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"));
    if !has_std {
        return Err(BundleError::MissingTool {
            what: format!("the Rust standard library for {target} is not installed"),
            help: format!(
                "install it: rustup target add {target} (a distribution's rustc has no cross targets: install Rust with rustup)"
            ),
        });
    }
    Ok(env)
}

/// `cargo rustc --profile board` of `weir` without the demo broker for
/// `target` (with [`unwind_link_args`] when it links with rust-lld);
/// returns the binary's path (cargo says where, in its JSON messages, so a
/// custom target dir is found too).
fn build(workspace: &Path, target: &str) -> Result<PathBuf, BundleError> {
    let env = cross_env(target)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // `cargo rustc`: the link arguments below reach the final link of the
    // binary only (boards/cross-test.sh builds with the same command, so
    // the two share one build).
    cmd.current_dir(workspace).args([
        "rustc",
        "--locked",
        "--profile",
        "board",
        "-p",
        "weir-agent",
        "--bin",
        "weir",
        "--no-default-features",
        "--message-format=json-render-diagnostics",
    ]);
    if target != "host" {
        // A Linux gateway reads its wired sensors on real I2C/SPI buses.
        cmd.args(["--target", target, "--features", "linux"]);
    }
    let lld = env
        .iter()
        .any(|(k, v)| k.ends_with("_LINKER") && v.ends_with("rust-lld"));
    if lld {
        cmd.args(unwind_link_args(workspace));
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let shown_args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| !a.starts_with("--message-format"))
        .collect();
    eprintln!(
        "weir bundle: {} {cargo} {}",
        shown.join(" "),
        shown_args.join(" ")
    );
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BundleError::MissingTool {
            what: format!("cannot run `{cargo}`: {e}"),
            help: "install Rust with rustup".into(),
        })?;
    let mut exe = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "weir" {
                if let Some(p) = msg["executable"].as_str() {
                    exe = Some(PathBuf::from(p));
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| BundleError::Build(format!("cargo did not finish: {e}")))?;
    if !status.success() {
        return Err(BundleError::Build(format!(
            "cargo exited with {status} (its errors are above)"
        )));
    }
    exe.ok_or_else(|| {
        BundleError::Build("cargo did not report where it put the weir binary".into())
    })
}

/// The rustc arguments (after `--`) for the final link with rust-lld:
/// the unwind tables discarded (`boards/no-unwind-tables.ld` and
/// `--no-eh-frame-hdr`: 29 KB smaller than removing them afterwards with
/// [`drop_unwind_tables`], which then finds nothing to remove, since the
/// text no longer sits behind a hole where they were), and identical
/// functions folded into one (`--icf=all`: 30 KB; Rust makes no promise
/// that two functions have distinct addresses).
fn unwind_link_args(workspace: &Path) -> Vec<String> {
    let script = workspace.join("boards").join("no-unwind-tables.ld");
    let script = script.canonicalize().unwrap_or(script);
    vec![
        "--".into(),
        "-C".into(),
        format!("link-arg=-T{}", script.display()),
        "-C".into(),
        "link-arg=--no-eh-frame-hdr".into(),
        "-C".into(),
        "link-arg=--icf=all".into(),
    ]
}

/// The binutils `objcopy` for a target's binaries (the one beside its C
/// cross compiler).
fn objcopy_for(target: &str) -> String {
    match cross_cc(target) {
        Some((cc, _)) if target != "host" => match cc.strip_suffix("gcc") {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}objcopy"),
            _ => "objcopy".into(),
        },
        _ => "objcopy".into(),
    }
}

/// The unwind tables (`.eh_frame`, `.eh_frame_hdr`, about 0.95 MB of the
/// aarch64 binary) left out of the shipped binary: built with
/// panic = "abort", nothing unwinds (a panic prints its message and
/// aborts; a backtrace, if asked for, is empty). They come with the
/// prebuilt standard library, so no compiler flag leaves them out.
/// Returns the stripped copy (`weir.gateway` beside cargo's output), or
/// the binary as built when objcopy is missing or fails (said on stderr).
fn drop_unwind_tables(exe: &Path, target: &str) -> PathBuf {
    let tool = objcopy_for(target);
    let out = exe.with_extension("gateway");
    let st = Command::new(&tool)
        .args([
            "--remove-section=.eh_frame",
            "--remove-section=.eh_frame_hdr",
        ])
        .arg(exe)
        .arg(&out)
        .status();
    match st {
        Ok(s) if s.success() => {
            eprintln!(
                "weir bundle: {tool} --remove-section=.eh_frame --remove-section=.eh_frame_hdr: {}",
                out.display()
            );
            out
        }
        Ok(s) => {
            eprintln!(
                "weir bundle: note: {tool} exited with {s}; the binary keeps its unwind tables"
            );
            exe.to_path_buf()
        }
        Err(e) => {
            eprintln!("weir bundle: note: cannot run {tool} ({e}); the binary keeps its unwind tables (about 1 MB more)");
            exe.to_path_buf()
        }
    }
}

/// The ELF `e_machine` a target's binaries carry.
fn elf_machine(target: &str) -> Option<(u16, &'static str)> {
    let arch = if target == "host" {
        std::env::consts::ARCH
    } else {
        target.split('-').next().unwrap_or("")
    };
    match arch {
        "aarch64" => Some((183, "AArch64")),
        "x86_64" => Some((62, "x86-64")),
        a if a.starts_with("arm") => Some((40, "32-bit ARM")),
        _ => None,
    }
}

/// The binary must be an ELF executable for the board's CPU: packaging the
/// host's build into a Pi bundle is the mistake this catches.
fn check_binary(path: &Path, bin: &[u8], board: &BoardProfile) -> Result<(), BundleError> {
    let bad = |msg: String| {
        BundleError::Binary {
        path: path.to_path_buf(),
        msg,
        help: format!(
            "give a weir built for {} (`cargo build --profile board --no-default-features{}`), or leave out --binary to let weir bundle build it",
            board.target,
            if board.target == "host" { String::new() } else { format!(" --target {}", board.target) }
        ),
    }
    };
    if bin.len() < 20 || &bin[..4] != b"\x7fELF" {
        return Err(bad("not an ELF executable".into()));
    }
    let machine = if bin[5] == 1 {
        u16::from_le_bytes([bin[18], bin[19]])
    } else {
        u16::from_be_bytes([bin[18], bin[19]])
    };
    if let Some((want, name)) = elf_machine(&board.target) {
        if machine != want {
            let got = match machine {
                183 => "AArch64".to_string(),
                62 => "x86-64".to_string(),
                40 => "32-bit ARM".to_string(),
                m => format!("machine {m}"),
            };
            return Err(bad(format!(
                "an ELF for {got}; board `{}` ({}) runs {name}",
                board.name, board.target
            )));
        }
    }
    Ok(())
}

/// `"50ms"`, `"10s"`, `"5m"`: the shortest exact spelling.
fn duration(ms: u64) -> String {
    if ms != 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms != 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `gateway.toml` in `weir_agent::gateway`'s format, with the board's
/// durability settings.
fn gateway_toml(board: &BoardProfile, id: &str, data_dir: &Path, pipeline_path: &str) -> String {
    let d = &board.durability;
    let mode = match d.mode {
        DurabilityMode::Journal => "journal",
        DurabilityMode::Checkpoints => "checkpoint",
    };
    format!(
        r#"# weir gateway configuration, read by `weir run --config {CONFIG}`.
# Made by `weir bundle` for board `{board}`; the format is in docs/agent.md.

# This gateway's id: in topics (weir/<id>/…) and output ids. The fleet knows
# it together with the public key in /etc/weir/identity.pub.
id = "{id}"
pipeline = "{pipeline_path}"
data_dir = "{data_dir}"
# The board profile: its wired sensors feed the pipeline beside MQTT.
board = "/etc/weir/board.toml"
# journal: nothing acknowledged is lost; checkpoint: fewer flash writes, a
# crash loses the samples since the last checkpoint.
durability = "{mode}"

[broker]
# The gateway's own mosquitto (etc/mosquitto/conf.d/weir.conf).
url = "mqtt://127.0.0.1:1883"

[journal]
group_commit = "{gc}"

[checkpoint]
interval = "{ck}"

[metrics]
listen = "127.0.0.1:9464"
{storage}"#,
        storage = storage_toml(d.flash),
        board = board.name,
        data_dir = data_dir.display(),
        gc = duration(d.group_commit_ms),
        ck = duration(d.checkpoint_interval_ms),
    )
}

/// The `[storage]` table the board's flash suggests (docs/agent.md).
fn storage_toml(flash: Flash) -> &'static str {
    match flash {
        Flash::Sd => {
            r#"
[storage]
# An SD card wears out: a daily write budget (weir commits and checkpoints
# less often beyond it; acks then wait up to max_ack_delay) and its endurance
# for the predicted life in /metrics and /healthz. Set endurance to your
# card's rating (TBW, or its size times its rated full-card writes).
write_budget = "2GiB"
endurance = "4TB"
warn_days = 365
max_ack_delay = "5s"
"#
        }
        Flash::Emmc => {
            r#"
[storage]
# Soldered eMMC: still wears. Set endurance to the part's rating.
write_budget = "8GiB"
endurance = "30TB"
warn_days = 365
max_ack_delay = "5s"
"#
        }
        Flash::Ssd | Flash::Ram => {
            r#"
[storage]
# No write budget on this medium; the store's writes are still counted.
write_budget = "off"
"#
        }
    }
}

/// The buses' device nodes and the groups that own them.
fn devices(board: &BoardProfile) -> (Vec<(String, &'static str)>, Vec<&'static str>) {
    let mut devs = Vec::new();
    let mut groups = Vec::new();
    for b in &board.buses {
        let group = match b.kind {
            BusKind::I2c => "i2c",
            BusKind::Spi => "spi",
            _ => continue,
        };
        if let Some(d) = &b.device {
            devs.push((d.display().to_string(), group));
        }
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    (devs, groups)
}

/// The hardened unit. Every line that restricts something says why it is
/// safe for weir: it only needs its data dir, TCP to the brokers, and the
/// board's bus devices.
fn unit(board: &BoardProfile, data_dir: &Path, version: &str, pipeline_path: &str) -> String {
    let (devs, groups) = devices(board);
    let mut u = String::new();
    let _ = write!(
        u,
        r#"# weir {version}, board `{name}` ({target}); made by `weir bundle`.
# Runs as the unprivileged `weir` user (usr/lib/sysusers.d/weir.conf) with no
# capabilities, a read-only system and one writable folder, its data dir.
# Check it with: systemd-analyze security weir.service (1.5 "OK" for rpi4 on
# systemd 252; what is left open is the network, the buses and AF_UNIX).
[Unit]
Description=weir stream runtime (board {name})
Documentation=file:/usr/share/doc/weir/README
Wants=network-online.target mosquitto.service
After=network-online.target mosquitto.service
# Without a pipeline there is nothing to run: rather than a restart loop that
# writes the same error to the journal every few seconds, wait for one.
ConditionPathExists={pipeline_path}
# A gateway has nobody to press a button: never stop restarting.
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart=/usr/bin/weir run --config {CONFIG}
Restart=always
RestartSec=5s
# SIGTERM lets weir finish its group commit and checkpoint; then SIGKILL.
TimeoutStopSec=30s
User=weir
Group=weir
"#,
        name = board.name,
        target = board.target,
    );
    if !groups.is_empty() {
        let _ = writeln!(u, "SupplementaryGroups={}", groups.join(" "));
    }
    let _ = write!(
        u,
        r#"# The device key stays root-only (0600) on disk; systemd hands the service
# a private copy in $CREDENTIALS_DIRECTORY/identity.key.
LoadCredential=identity.key:/etc/weir/identity.key
"#
    );
    if let Some(state) = state_directory(data_dir) {
        let _ = writeln!(u, "StateDirectory={state}\nStateDirectoryMode=0750");
    }
    let _ = write!(
        u,
        r#"ReadWritePaths={data}
UMask=0077

# Memory: W1 (1,000 sensors) peaks under 10 MB; this bounds a runaway
# pipeline (MemoryHigh throttles first, MemoryMax kills and Restart= restarts).
MemoryHigh=192M
MemoryMax=256M

# File system: all read-only but the data dir.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
"#,
        data = data_dir.display()
    );
    if devs.is_empty() {
        let _ = writeln!(u, "PrivateDevices=yes");
    } else {
        let _ = writeln!(
            u,
            "# Devices: only the board's buses (plus /dev/null, /dev/urandom and the like)."
        );
        let _ = writeln!(u, "DevicePolicy=closed");
        for (d, _) in &devs {
            let _ = writeln!(u, "DeviceAllow={d} rw");
        }
    }
    let _ = write!(
        u,
        r#"
# Privileges: none, and no way to gain any.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RemoveIPC=yes

# Kernel: hands off.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible

# Network: TCP to the brokers and the metrics endpoint, Unix sockets for
# logging; I2C and SPI are ioctls on device files, not sockets.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"#
    );
    u
}

fn sysusers(board: &BoardProfile, data_dir: &Path) -> String {
    let (_, groups) = devices(board);
    let mut s = format!(
        "# weir's service user (lib/systemd/system/weir.service); applied at boot or by\n# `systemd-sysusers`.\nu weir - \"weir stream runtime\" {} /usr/sbin/nologin\n",
        data_dir.display()
    );
    if !groups.is_empty() {
        s.push_str("# The groups owning the board's bus devices (kept if they exist already).\n");
    }
    for g in groups {
        let _ = writeln!(s, "g {g} -\nm weir {g}");
    }
    s
}

/// Raspberry Pi OS already gives `/dev/i2c-*` to group `i2c` and
/// `/dev/spidev*` to `spi`; plain Debian does not, so the bundle says it.
fn udev_rules(board: &BoardProfile) -> Option<String> {
    let (devs, _) = devices(board);
    if devs.is_empty() {
        return None;
    }
    let mut s =
        String::from("# The board's bus devices, readable by their group (weir.service has it).\n");
    for (d, group) in devs {
        let node = d.strip_prefix("/dev/").unwrap_or(&d);
        let subsystem = if group == "i2c" { "i2c-dev" } else { "spidev" };
        let _ = writeln!(
            s,
            "SUBSYSTEM==\"{subsystem}\", KERNEL==\"{node}\", GROUP=\"{group}\", MODE=\"0660\""
        );
    }
    Some(s)
}

const MOSQUITTO: &str = r#"# The gateway's local broker for weir (made by `weir bundle`). Debian's
# mosquitto.conf reads this folder (include_dir /etc/mosquitto/conf.d) and
# already sets persistence_location, which must not be repeated here.

# Keep retained messages and the queues of persistent sessions (weir's is
# one) across a broker restart. Mosquitto saves them every autosave_interval
# seconds and on shutdown, not per message: a power cut loses what it held
# since the last save. weir acknowledges a QoS 1 message only once it is in
# weir's own journal, so that loss never includes acknowledged readings.
# A shorter interval rewrites the whole file more often: SD wear.
persistence true
autosave_interval 300

# Mosquitto's default max_queued_messages is 1000 per client. When weir falls
# behind a burst (a checkpoint, a slow SD card), messages beyond that are
# DROPPED for its session without any error, QoS 1 included: measured 0.2 to
# 1.3% of a 1 M message burst lost. 100,000 queued readings of ~100 bytes
# stay under ~20 MB of broker memory; no byte limit, as that would drop too.
max_queued_messages 100000
max_queued_bytes 0
# Unacknowledged messages out to weir at once. weir acknowledges after its
# group commit, which its flash write budget ([storage] in gateway.toml) may
# stretch to max_ack_delay (5 s): a group never holds more than this, so it
# must cover readings/s x max_ack_delay for the budget to save writes (5,000:
# 1,000 messages a second; weir pauses its own reading at 16,384).
max_inflight_messages 5000

# Only weir and local publishers by default. Sensors elsewhere on the LAN
# need a listener on that interface WITH authentication, e.g.:
#   listener 1883 192.0.2.10
#   password_file /etc/mosquitto/passwd     (mosquitto_passwd -c …)
listener 1883 127.0.0.1
allow_anonymous true
"#;

fn readme(
    pipeline_path: &str,
    board: &BoardProfile,
    id: &str,
    tar_name: &str,
    data_dir: &Path,
    version: &str,
) -> String {
    format!(
        r#"weir {version} for board `{board}` ({target}), gateway `{id}`
==============================================================

Everything in {tar_name} goes to the gateway's root file system. The
public key of this gateway is in /etc/weir/identity.pub; the private key
(/etc/weir/identity.key, mode 0600) exists only in this tarball: keep the
tarball as secret as the key, and make one bundle per gateway.

On an SD card (its root partition mounted at /mnt, on a Linux machine):

    sudo tar -xzpf {tar_name} -C /mnt
    sudo systemd-sysusers --root=/mnt            # the weir user and bus groups
    sudo systemctl --root=/mnt enable weir.service
    sudo cp pipeline.toml /mnt{pipeline_path}   # unless bundled with --pipeline
    # (a SQL query: copy it to /etc/weir/pipeline.sql and name that path
    # as `pipeline` in /etc/weir/gateway.toml)

then boot it and, on the gateway, install the local broker:
`sudo apt-get install mosquitto` (it reads /etc/mosquitto/conf.d/weir.conf).

On a running gateway (Raspberry Pi OS / Debian):

    sudo apt-get install -y mosquitto
    sudo tar -xzpf {tar_name} -C /
    sudo systemd-sysusers && sudo udevadm control --reload && sudo udevadm trigger
    sudo systemctl restart mosquitto
    sudo systemctl daemon-reload && sudo systemctl enable --now weir.service

Check it:

    weir --version && weir check /etc/weir/board.toml && weir check {pipeline_path}
    systemctl status weir; journalctl -u weir -f
    systemd-analyze security weir.service

The service runs `weir run --config {CONFIG}` as user `weir`, writes
only {data_dir}, waits (without failing) until {pipeline_path}
exists, and restarts 5 s after any exit. Its metrics are on
http://127.0.0.1:9464/metrics. usr/share/doc/weir/MANIFEST lists every file
with its mode, size and SHA-256.
"#,
        board = board.name,
        target = board.target,
        data_dir = data_dir.display(),
    )
}

/// `mode size sha256 path` per entry; the private key's hash is left out
/// (a file list is not a place for anything derived from a secret).
fn manifest(entries: &[Entry]) -> String {
    let mut m = String::from("# mode size sha256 path (weir bundle)\n");
    for e in entries {
        let hash = if e.mode & 0o077 == 0 {
            "-(secret)".to_string()
        } else {
            Sha256::digest(&e.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let _ = writeln!(m, "{:04o} {} {hash} {}", e.mode, e.data.len(), e.path);
    }
    m
}

/// A ustar writer: just what a bundle needs (regular files and their
/// parent `etc/weir/` folder, owner root), no dependency.
mod tar {
    use super::Entry;

    const BLOCK: usize = 512;

    fn octal(field: &mut [u8], v: u64) -> Result<(), String> {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        if s.len() >= field.len() {
            return Err(format!("{v} does not fit a {}-byte tar field", field.len()));
        }
        field[..s.len()].copy_from_slice(s.as_bytes());
        field[s.len()] = 0;
        Ok(())
    }

    fn header(
        path: &str,
        mode: u32,
        size: u64,
        mtime: u64,
        dir: bool,
    ) -> Result<[u8; BLOCK], String> {
        let mut h = [0u8; BLOCK];
        if path.len() > 100 {
            return Err(format!("tar path `{path}` is longer than 100 bytes"));
        }
        h[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut h[100..108], u64::from(mode))?;
        octal(&mut h[108..116], 0)?; // uid root
        octal(&mut h[116..124], 0)?; // gid root
        octal(&mut h[124..136], size)?;
        octal(&mut h[136..148], mtime)?;
        h[156] = if dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is taken with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        Ok(h)
    }

    /// The archive: `etc/weir/` (0755) first, then the entries.
    pub fn ustar(entries: &[Entry], mtime: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        out.extend_from_slice(&header("etc/weir/", 0o755, 0, mtime, true)?);
        for e in entries {
            out.extend_from_slice(&header(&e.path, e.mode, e.data.len() as u64, mtime, false)?);
            out.extend_from_slice(&e.data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn header_fields_and_checksum() {
            let h = header("usr/bin/weir", 0o755, 1234, 1_700_000_000, false).unwrap();
            assert_eq!(&h[..12], b"usr/bin/weir");
            assert_eq!(&h[100..108], b"0000755\0");
            assert_eq!(&h[124..136], b"00000002322\0");
            let stored =
                u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
            let mut blank = h;
            blank[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, blank.iter().map(|&b| u64::from(b)).sum::<u64>());
            assert!(header(&"x".repeat(101), 0o644, 0, 0, false).is_err());
        }

        #[test]
        fn archive_is_block_aligned() {
            let e = Entry {
                path: "a".into(),
                mode: 0o644,
                data: vec![1; 513],
            };
            let t = ustar(&[e], 0).unwrap();
            // dir header + file header + 2 data blocks + 2 end blocks
            assert_eq!(t.len(), 6 * BLOCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact() {
        assert_eq!(duration(50), "50ms");
        assert_eq!(duration(10_000), "10s");
        assert_eq!(duration(300_000), "5m");
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(duration(1500), "1500ms");
        assert_eq!(duration(0), "0ms");
    }

    #[test]
    fn ids() {
        assert!(check_id("rpi4-0123456789ab").is_ok());
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
        assert!(check_id("a b").is_err());
    }

    #[test]
    fn a_sql_pipeline_is_installed_under_its_own_extension_and_named_by_the_config_and_unit() {
        let sql = pipeline_install_path(Some(Path::new("q.SQL")));
        assert_eq!(sql, "/etc/weir/pipeline.sql");
        assert_eq!(pipeline_install_path(Some(Path::new("p.toml"))), PIPELINE);
        assert_eq!(pipeline_install_path(None), PIPELINE);
        let rpi4 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/rpi4/board.toml");
        let board = weir_boards::profile::load(&rpi4).expect("the rpi4 board profile loads");
        let d = Path::new("/var/lib/weir");
        assert!(gateway_toml(&board, "g", d, sql).contains("pipeline = \"/etc/weir/pipeline.sql\""));
        assert!(unit(&board, d, "0", sql).contains("ConditionPathExists=/etc/weir/pipeline.sql"));
    }
}
