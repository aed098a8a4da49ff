//! Every file weir creates or replaces must be durable by POSIX's rules
//! (its data fsynced, its name fsynced in its directory): that is what
//! `weir_agent::fsutil` does, and this test fails when source code writes
//! files another way. A write that is deliberately not state (a CSV report
//! the user asked for) says so with a `not-state:` comment on the line
//! before.

use std::path::{Path, PathBuf};

/// Calls that create, replace or rename files or directories.
const RAW: &[&str] = &[
    "fs::write(",
    "File::create(",
    "create_dir_all(",
    "create_dir(",
    "OpenOptions::new(",
    "fs::rename(",
    "fs::copy(",
    "create_new(",
    ".create(true)",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(file:line, text)` of each raw file write outside `fsutil.rs`, test
/// modules, comments and `not-state:` lines.
fn raw_writes(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for krate in ["edge-agent/src", "cloud-sync/src", "boards/src"] {
        sources(&root.join(krate), &mut files);
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("fsutil.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut prev = "";
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            // Unit tests sit at the end of a file, after `#[cfg(test)]`.
            if t.starts_with("#[cfg(test)]") {
                break;
            }
            let exempt = t.starts_with("//") || prev.contains("not-state:");
            prev = t;
            if exempt {
                continue;
            }
            if RAW.iter().any(|r| line.contains(r)) && !line.contains("fsutil::") {
                found.push((
                    format!("{}:{}", f.strip_prefix(root).unwrap().display(), i + 1),
                    t.to_string(),
                ));
            }
        }
    }
    found
}

#[test]
fn every_file_weir_writes_goes_through_fsutil() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let found = raw_writes(root);
    assert!(
        found.is_empty(),
        "files written without the fsyncs POSIX needs for a durable name; use \
         weir_agent::fsutil (write_atomic, write_new, open_or_create, create_dir_all):\n{}",
        found
            .iter()
            .map(|(at, l)| format!("  {at}: {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The scanner itself finds what it is for.
#[test]
fn the_scanner_finds_a_raw_write() {
    let dir = std::env::temp_dir().join(format!("weir-durable-scan-{}", std::process::id()));
    let src = dir.join("edge-agent/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.join("cloud-sync/src")).unwrap();
    std::fs::create_dir_all(dir.join("boards/src")).unwrap();
    for i in 0..21 {
        std::fs::write(src.join(format!("m{i}.rs")), "fn f() {}\n").unwrap();
    }
    std::fs::write(
        src.join("bad.rs"),
        "fn f() {\n    std::fs::write(\"state\", b\"x\").unwrap();\n}\n",
    )
    .unwrap();
    let found = raw_writes(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].0.ends_with("bad.rs:2"));
}
