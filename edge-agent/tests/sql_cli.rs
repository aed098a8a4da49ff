//! `weir replay`, `weir check` and `weir fleet sign` with SQL pipelines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-sql-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const BIDS: &str = "CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid.csv', 'format' = 'csv');
SELECT window_start, window_end, SUM(price) AS total_price
  FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  WHERE item <> 'Z'
  GROUP BY window_start, window_end;
";

#[test]
fn replay_reads_the_tables_path_and_writes_a_header() {
    let d = dir();
    let q = d.join("bids.sql");
    std::fs::write(&q, BIDS).unwrap();
    std::fs::write(
        d.join("bid.csv"),
        "2020-04-15 08:05:00,4.00,C\n2020-04-15 08:07:00,2.00,A\n2020-04-15 08:09:00,5.00,D\n\
         2020-04-15 08:11:00,3.00,B\n2020-04-15 08:12:00,9.00,Z\nnot a row\n2020-04-15 08:13:00,1.00,E\n2020-04-15 08:17:00,6.00,F\n",
    )
    .unwrap();
    let out = weir(&["replay", "--pipeline", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "window_start,window_end,total_price\n\
         2020-04-15 08:00:00.000,2020-04-15 08:10:00.000,11.00\n\
         2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00\n"
    );
    // The bad row is reported with its line, and skipped.
    assert!(
        text(&out.stderr).contains("bid.csv:6:"),
        "{}",
        text(&out.stderr)
    );
    // INSERT INTO a filesystem table writes its 'path'.
    let ins = d.join("insert.sql");
    std::fs::write(
        &ins,
        BIDS.replace(
            "SELECT window_start",
            "CREATE TABLE totals (window_start TIMESTAMP(3), window_end TIMESTAMP(3), total_price DECIMAL(10, 2))
  WITH ('connector' = 'filesystem', 'path' = 'totals.csv', 'format' = 'csv');
INSERT INTO totals SELECT window_start",
        ),
    )
    .unwrap();
    let out = weir(&["replay", "-p", ins.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let written = std::fs::read_to_string(d.join("totals.csv")).unwrap();
    assert!(
        written.ends_with("2020-04-15 08:10:00.000,2020-04-15 08:20:00.000,10.00\n"),
        "{written}"
    );
    // --input overrides 'path'.
    let other = d.join("other.csv");
    std::fs::write(&other, "2020-04-15 09:00:00.500,1.50,X\n").unwrap();
    let out = weir(&[
        "replay",
        "-p",
        q.to_str().unwrap(),
        "-i",
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        text(&out.stdout),
        "window_start,window_end,total_price\n2020-04-15 09:00:00.000,2020-04-15 09:10:00.000,1.50\n"
    );
}

#[test]
fn check_and_explain() {
    let d = dir();
    let w1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/w1.sql");
    let out = weir(&["check", w1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: SQL pipeline `w1`"));
    let q = d.join("explain.sql");
    std::fs::write(
        &q,
        BIDS.replace("SELECT window_start", "EXPLAIN SELECT window_start"),
    )
    .unwrap();
    let out = weir(&["replay", "-p", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    // A condition on a text column runs before the engine (which sees
    // only numbers).
    assert!(
        plan.contains("filter (on samples, before the engine") && plan.contains("): item <> 'Z'"),
        "{plan}"
    );
    assert!(
        plan.contains("window tumbling, size 600000 ms over `price`"),
        "{plan}"
    );
    let bad = d.join("bad.sql");
    std::fs::write(&bad, BIDS.replace("SUM(price)", "SUM(prize)")).unwrap();
    let out = weir(&["check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("bad.sql:7:38: error: `Bid` has no column `prize`"),
        "{e}"
    );
}

#[test]
fn signed_updates_take_sql_the_agent_can_run() {
    let d = dir();
    let keys = d.join("keys");
    assert!(weir(&["fleet", "keygen", "--out", keys.to_str().unwrap()])
        .status
        .success());
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| text(&std::fs::read(p).unwrap()).contains("PRIVATE"))
        .expect("a private key");
    let w1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/w1.sql");
    let out = weir(&[
        "fleet",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--version",
        "2",
        "--gateway",
        "gw-1",
        "--output",
        d.join("w1.update").to_str().unwrap(),
        w1.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A WHERE on a text column other than the key: the agent applies it
    // before its journal, so the update is signed.
    let q = d.join("filtered.sql");
    std::fs::write(&q, BIDS).unwrap();
    let sign = |q: &Path| {
        weir(&[
            "fleet",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--version",
            "3",
            "--gateway",
            "gw-1",
            "--output",
            d.join("q.update").to_str().unwrap(),
            q.to_str().unwrap(),
        ])
    };
    let out = sign(&q);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // So is an aggregated expression over one: the agent computes it
    // before the journal.
    std::fs::write(
        &q,
        BIDS.replace(
            "SUM(price) AS total_price",
            "SUM(CASE WHEN item = 'A' THEN price ELSE 0 END) AS a",
        ),
    )
    .unwrap();
    let out = sign(&q);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One on a numeric column runs in the engine: the update is signed.
    std::fs::write(&q, BIDS.replace("item <> 'Z'", "price > 1")).unwrap();
    let out = sign(&q);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // HAVING and computed result columns run in the agent: signed too.
    let having = BIDS
        .replace("item <> 'Z'", "price > 1")
        .replace("SUM(price) AS total_price", "SUM(price) * 2 AS twice")
        .replace(
            "GROUP BY window_start, window_end;",
            "GROUP BY window_start, window_end HAVING COUNT(*) > 1;",
        );
    std::fs::write(&q, having).unwrap();
    let out = sign(&q);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn replay_and_check_take_a_query_without_group_by() {
    let d = dir();
    let q = d.join("rows.sql");
    let ddl = BIDS.split("SELECT").next().unwrap();
    std::fs::write(
        &q,
        format!("{ddl}SELECT item, price, window_start FROM TABLE(TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES)) WHERE price > 2;\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("bid.csv"),
        "2020-04-15 08:11:00,3.00,B\n2020-04-15 08:05:00,4.00,C\nnot a row\n2020-04-15 08:07:00,2.00,A\n",
    )
    .unwrap();
    let out = weir(&["replay", "--pipeline", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // In input order, the one behind the other not late.
    assert_eq!(
        text(&out.stdout),
        "item,price,window_start\n\
         B,3.00,2020-04-15 08:10:00.000\n\
         C,4.00,2020-04-15 08:00:00.000\n"
    );
    assert!(
        text(&out.stderr).contains("4 rows in")
            && text(&out.stderr).contains(": 2 result rows, 1 bad rows"),
        "{}",
        text(&out.stderr)
    );
    let out = weir(&["check", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("each row as it comes, with its windows' bounds"),
        "{}",
        text(&out.stdout)
    );
}
