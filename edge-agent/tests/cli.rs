//! The `weir` binary end to end: gen → replay → compare with an independent
//! implementation of W1; bad rows; `weir check` errors; stdin input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// W1 computed the obvious way: read all rows, replay the watermark rule to
/// find late rows, group the rest by (sensor, window), run the EWMA rule
/// over each sensor's windows in time order.
/// (sensor, window start) → (count, mean, min, max, stddev, flag)
type W1Rows = BTreeMap<(String, i64), (u64, f64, f64, f64, f64, bool)>;

fn w1_reference(csv: &str) -> W1Rows {
    let mut max_ts = i64::MIN;
    let mut groups: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    let mut fired_upto: i64 = i64::MIN; // watermark
    for line in csv.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let ts: i64 = f[1].parse().unwrap();
        let v: f64 = f[2].parse().unwrap();
        let start = ts.div_euclid(10_000) * 10_000;
        if fired_upto >= start + 10_000 - 1 {
            continue; // late
        }
        groups.entry((f[0].to_string(), start)).or_default().push(v);
        max_ts = max_ts.max(ts);
        fired_upto = fired_upto.max(max_ts - 2_000);
    }
    let mut out = BTreeMap::new();
    let mut base: BTreeMap<String, (u32, f64, f64)> = BTreeMap::new();
    for ((s, start), vs) in groups {
        let n = vs.len() as f64;
        let mean = vs.iter().sum::<f64>() / n;
        let sd = (vs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let min = vs.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let b = base.entry(s.clone()).or_insert((0, 0.0, 0.0));
        let flag = if b.0 == 0 {
            *b = (1, mean, 0.0);
            false
        } else {
            let d = mean - b.1;
            let flag = b.0 >= 5 && d.abs() > 3.0 * b.2.sqrt();
            b.1 += 0.1 * d;
            b.2 = 0.9 * (b.2 + 0.1 * d * d);
            b.0 += 1;
            flag
        };
        out.insert((s, start), (vs.len() as u64, mean, min, max, sd, flag));
    }
    out
}

#[test]
fn w1_replay_matches_an_independent_implementation() {
    let input = tmp("w1.csv");
    let output = tmp("w1.out");
    let o = weir(&[
        "gen",
        "w1",
        "--events",
        "300000",
        "--seed",
        "3",
        "-o",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let pipeline = root().join("examples/w1.toml");
    let o = weir(&[
        "replay",
        "-p",
        pipeline.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("300000 rows"), "{stderr}");
    let want = w1_reference(&std::fs::read_to_string(&input).unwrap());
    let got = std::fs::read_to_string(&output).unwrap();
    let mut seen = 0;
    let mut flags = 0;
    for line in got.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 9, "{line}");
        let start: i64 = f[1].parse().unwrap();
        let end: i64 = f[2].parse().unwrap();
        assert_eq!(end - start, 10_000);
        let w = want
            .get(&(f[0].to_string(), start))
            .unwrap_or_else(|| panic!("unexpected window {line}"));
        assert_eq!(f[3].parse::<u64>().unwrap(), w.0, "{line}");
        for (i, x) in [w.1, w.2, w.3, w.4].iter().enumerate() {
            let g: f64 = f[4 + i].parse().unwrap();
            assert!(
                (g - x).abs() <= 1e-6 + 1e-9 * x.abs(),
                "{line}: column {} is {g}, want {x}",
                4 + i
            );
        }
        // Means agree to rounding; a flag decided within rounding of the
        // threshold could differ, so flags are compared in aggregate below.
        flags += (f[8] == "true") as i32 - w.5 as i32;
        seen += 1;
    }
    assert_eq!(seen, want.len(), "every window emitted once");
    assert_eq!(flags, 0, "anomaly flags agree");
}

#[test]
fn bad_rows_are_reported_with_line_numbers_and_skipped() {
    let input = tmp("bad.csv");
    let rows = "s1,1700000000000,1.0\n\
                s1,notatime,2.0\n\
                s1,1700000000100,abc\n\
                s1,1700000000200\n\
                s1,1700000000300,NaN\n\
                s1,1700000000400,1.0,extra\n\
                ,1700000000500,1.0\n\
                s1,1700000000600,3.0\n";
    std::fs::write(&input, rows).unwrap();
    let pipeline = root().join("examples/w1.toml");
    let o = weir(&[
        "replay",
        "-p",
        pipeline.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for (line, what) in [
        (2, "timestamp"),
        (3, "not a number"),
        (4, "columns"),
        (5, "NaN"),
        (6, "columns"),
        (7, "key"),
    ] {
        assert!(
            err.contains(&format!("bad.csv:{line}: ")),
            "line {line} not reported:\n{err}"
        );
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("bad.csv:{line}: ")) && l.contains(what)),
            "line {line} lacks '{what}':\n{err}"
        );
    }
    assert!(err.contains("6 bad rows"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(
        out,
        "s1,1700000000000,1700000010000,2,2.000000,1.000000,3.000000,1.000000,false\n"
    );
}

#[test]
fn check_names_file_line_and_what_to_do() {
    let ok = weir(&["check", root().join("examples/w1.toml").to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = tmp("bad.toml");
    let text = std::fs::read_to_string(root().join("examples/w1.toml"))
        .unwrap()
        .replace("size = \"10s\"", "size = \"10 lightyears\"");
    std::fs::write(&bad, &text).unwrap();
    let line = text.lines().position(|l| l.contains("lightyears")).unwrap() + 1;
    let o = weir(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("bad.toml:{line}:")), "{err}");
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn check_validates_board_profiles_too() {
    for board in ["rpi4", "sim"] {
        let path = root().join(format!("boards/{board}/board.toml"));
        let o = weir(&["check", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("board `{board}`")));
    }
    let dir = tmp("boards/rpi4");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(root().join("boards/rpi4/board.toml")).unwrap();
    let bad = text.replacen("target = \"aarch64-unknown-linux-musl\"", "target = 42", 1);
    assert_ne!(bad, text);
    let path = dir.join("board.toml");
    std::fs::write(&path, &bad).unwrap();
    let line = bad.lines().position(|l| l.contains("target = 42")).unwrap() + 1;
    let o = weir(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("board.toml:{line}:")), "{err}");
}

#[test]
fn replay_reads_standard_input_and_nab_style_files() {
    let pipeline = tmp("nab.toml");
    std::fs::write(
        &pipeline,
        r#"
name = "nab"
[[source]]
name = "series"
fields = ["value"]
max_out_of_orderness = "1s"
csv = { columns = ["ts", "value"], header = true, timestamp = "datetime", key = "series" }

[[detect]]
id = "z"
source = "series"
field = "value"
kind = "ewma_z"
"#,
    )
    .unwrap();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..50 {
        csv.push_str(&format!(
            "2014-04-10 07:{:02}:00,{}\n",
            i,
            if i == 40 {
                100.0
            } else {
                10.0 + (i % 3) as f64
            }
        ));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["replay", "-p", pipeline.to_str().unwrap(), "-i", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(csv.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    assert_eq!(lines.len(), 51, "one row per input row");
    assert!(
        lines[1].starts_with("2014-04-10 07:00:00,10,"),
        "{}",
        lines[1]
    );
    let score = |l: &str| l.rsplit(',').next().unwrap().parse::<f64>().unwrap();
    assert!(score(lines[41]) > 0.9, "{}", lines[41]);
    assert!(score(lines[20]) < 0.5, "{}", lines[20]);
}

#[test]
fn check_validates_gateway_files_and_the_pipeline_they_name() {
    let dir = tmp("gw-check");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("examples/demo.toml"), dir.join("pumps.toml")).unwrap();
    let gw = dir.join("gateway.toml");
    std::fs::write(
        &gw,
        "id = \"pump-station-7\"\npipeline = \"pumps.toml\"\n[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n",
    )
    .unwrap();
    let out = weir(&["check", gw.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("gateway `pump-station-7`") && text.contains("1 MQTT source"),
        "{text}"
    );
    std::fs::write(
        &gw,
        "id = \"p7\"\n[broker]\nurl = \"mqtt://h\"\nkeep_alive = \"1s\"\n",
    )
    .unwrap();
    let out = weir(&["check", gw.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gateway.toml:4:14") && err.contains("keep_alive"),
        "{err}"
    );
    // A gateway whose pipeline has no MQTT source cannot run.
    std::fs::write(&gw, "pipeline = \"w1.toml\"\n").unwrap();
    std::fs::copy(root().join("examples/w1.toml"), dir.join("w1.toml")).unwrap();
    let out = weir(&["check", gw.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[source.mqtt]"));
}

#[test]
fn deadletters_lists_the_table_or_says_why_not() {
    let dir = tmp("gw-dead");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let gw = dir.join("gateway.toml");
    std::fs::write(&gw, "data_dir = \"data\"\n[metrics]\nlisten = \"\"\n").unwrap();
    let out = weir(&["deadletters", "--config", gw.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store yet"));
    {
        let mut store = weir_agent::store::StoreConfig::default()
            .build(dir.join("data/weir.redb"))
            .unwrap();
        for i in 0..3 {
            store.stage_dead_letter(&weir_agent::store::DeadLetter {
                now: 1_700_000_000_000 + i,
                topic: format!("plant/p{i}/vib"),
                reason: "malformed".into(),
                detail: "not valid JSON".into(),
                payload: b"{oops".to_vec(),
            });
        }
        store.commit().unwrap();
    }
    let out = weir(&["deadletters", "--config", gw.to_str().unwrap(), "-n", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "the newest two");
    assert_eq!(lines[0]["topic"], "plant/p1/vib");
    assert_eq!(lines[1]["reason"], "malformed");
    assert_eq!(lines[1]["payload"], "{oops");
}

/// `weir gen pump` → `weir replay` of examples/pump_health.toml: one row per
/// input row with the multivariate columns; a bearing fault (vibration 1
/// and temperature) raises alarms inside the fault, blamed on those two
/// fields, and the healthy part before it raises none.
#[test]
fn replay_scores_a_generated_pump_and_names_the_faulty_fields() {
    let csv = tmp("pump.csv");
    let o = weir(&[
        "gen",
        "pump",
        "--samples",
        "2000",
        "--fault",
        "bearing",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pipeline = root().join("examples/pump_health.toml");
    let o = weir(&[
        "replay",
        "-p",
        pipeline.to_str().unwrap(),
        "-i",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..4],
        ["timestamp", "anomaly_score", "alarm", "contrib_flow"]
    );
    assert_eq!(header.len(), 3 + 8);
    let vib1 = header.iter().position(|h| *h == "contrib_vib1").unwrap();
    let temp = header.iter().position(|h| *h == "contrib_temp").unwrap();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 2000, "one row per input row");
    // `weir gen pump` puts the fault over the third quarter: 1000..1500
    let alarms: Vec<usize> = (0..rows.len()).filter(|&i| rows[i][2] == 1.0).collect();
    assert!(
        alarms.iter().all(|&i| i >= 1000),
        "a false alarm: {alarms:?}"
    );
    assert!(
        alarms.iter().filter(|&&i| i < 1500).count() > 100,
        "{alarms:?}"
    );
    for &i in alarms.iter().filter(|&&i| i < 1500) {
        let r = &rows[i];
        assert!(r[1] >= 5.0 / 15.0, "alarm below the threshold at {i}");
        let mut c: Vec<(f64, usize)> = (3..r.len()).map(|j| (r[j], j)).collect();
        c.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top2 = [c[0].1, c[1].1];
        assert!(
            top2.contains(&vib1) || top2.contains(&temp),
            "row {i}: top contributors {top2:?}"
        );
    }
    let mean = |j: usize| {
        let v: Vec<f64> = alarms
            .iter()
            .filter(|&&i| i < 1500)
            .map(|&i| rows[i][j])
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let others = (3..11)
        .filter(|&j| j != vib1 && j != temp)
        .map(mean)
        .fold(0.0, f64::max);
    assert!(
        mean(vib1) > others && mean(temp) > others,
        "vib1 {} temp {} others {others}",
        mean(vib1),
        mean(temp)
    );
}
