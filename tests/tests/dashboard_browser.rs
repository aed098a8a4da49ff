//! The technician's page in a real browser: Debian's chromium, driven
//! over WebDriver (chromedriver), loads the dashboard `weir demo` prints,
//! waits for live data, and checks what a technician must see: all four
//! pumps, pump-3's alert, charts drawn, an alert acknowledged with the
//! token; any JavaScript error fails the test. Screenshots go to
//! `target/dashboard.png` and `target/dashboard-pump-3.png`.
//!
//! Skipped with a message without chromium and chromedriver (apt-get
//! install chromium chromium-driver); in CI (`CI` set) their absence is an
//! error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_e2e::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

fn have_browser() -> bool {
    let ok = Path::new(CHROMIUM).exists() && Path::new(DRIVER).exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipping: chromium or chromedriver missing (apt-get install chromium chromium-driver)"
        );
    }
    ok
}

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request to the WebDriver, JSON in and out.
fn wd(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then exactly
    // Content-Length bytes.
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&body)))
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

struct Browser {
    addr: SocketAddr,
    session: String,
}

impl Browser {
    fn exec(&self, script: &str) -> Value {
        let r = wd(
            self.addr,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({ "script": script, "args": [] })),
        );
        r["value"].clone()
    }

    fn wait(&self, what: &str, script: &str) {
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            if self.exec(script) == json!(true) {
                return;
            }
            let errors = self.exec("return window.__weirErrors || []");
            assert_eq!(errors, json!([]), "JavaScript errors on the page");
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, to: &Path) {
        let r = wd(
            self.addr,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        let png = base64_decode(r["value"].as_str().expect("screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).unwrap();
    }

    /// Browser console messages at SEVERE level (JS errors, failed loads).
    fn severe_logs(&self) -> Vec<String> {
        let r = wd(
            self.addr,
            "POST",
            &format!("/session/{}/se/log", self.session),
            Some(&json!({ "type": "browser" })),
        );
        r["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> → target
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

#[test]
fn a_technician_sees_the_pumps_and_pump_3s_alert_in_a_real_browser() {
    if !have_browser() {
        return;
    }
    let dir = TempDir::new("dashboard");
    let mut demo = Command::new(agent_exe())
        .args(["demo", "--for", "120s", "--data-dir"])
        .arg(dir.0.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir demo");
    let out = demo.stdout.take().unwrap();
    let _demo = Reap(demo);
    let mut lines = BufReader::new(out).lines();
    let url = loop {
        let l = lines.next().expect("demo output").unwrap();
        if let Some(u) = l.trim().strip_prefix("dashboard: ") {
            break u.to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("#token="), "{url}");
    // Keep reading the demo's terminal so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let port = free_port();
    let driver = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let _driver = Reap(driver);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(Duration::from_secs(30), "chromedriver", || {
        TcpStream::connect(addr).is_ok()
    });
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1366,900"]
        },
        "goog:loggingPrefs": { "browser": "ALL" }
    }}});
    let s = wd(addr, "POST", "/session", Some(&caps));
    let session = s["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {s}"))
        .to_string();
    let b = Browser { addr, session };
    wd(
        addr,
        "POST",
        &format!("/session/{}/url", b.session),
        Some(&json!({ "url": url })),
    );

    b.wait(
        "all four pumps listed",
        "const k = [...document.querySelectorAll('.card.machine')].map(c => c.dataset.key).sort(); \
         return JSON.stringify(k) === JSON.stringify(['pump-1','pump-2','pump-3','pump-4']);",
    );
    b.wait(
        "sparklines drawn for every pump",
        "return [...document.querySelectorAll('canvas.spark')].filter(c => +c.dataset.drawn > 0).length >= 8;",
    );
    b.wait(
        "pump-3's alert",
        "return document.querySelectorAll('#alerts tr.alert[data-key=\"pump-3\"]').length > 0 \
         && document.querySelector('.card.machine[data-key=\"pump-3\"]').classList.contains('alarm');",
    );
    let healthy = b.exec("return document.getElementById('health').textContent");
    assert_eq!(healthy, json!("healthy"));
    let target = target_dir();
    b.screenshot(&target.join("dashboard.png"));

    // pump-3's own page: its charts with the alarm, and an acknowledgement.
    b.exec("location.hash = '#/sensor/pump-3'; return true;");
    b.wait(
        "pump-3's charts",
        "return [...document.querySelectorAll('#sensor-charts canvas.big')].filter(c => +c.dataset.drawn > 0).length >= 2;",
    );
    b.wait(
        "an enabled acknowledge button",
        "const x = document.querySelector('#sensor-alerts button[data-ack]'); return !!x && !x.disabled;",
    );
    b.exec("document.querySelector('#sensor-alerts button[data-ack]').click(); return true;");
    b.wait(
        "the acknowledgement",
        "return document.querySelector('#sensor-alerts').textContent.includes('acknowledged by');",
    );
    b.screenshot(&target.join("dashboard-pump-3.png"));
    // The other views render without errors.
    for v in ["#/gateway", "#/pipeline", "#/deadletters", "#/alerts"] {
        b.exec(&format!("location.hash = '{v}'; return true;"));
        b.wait(
            v,
            &format!("return !document.getElementById('view-{}').classList.contains('hidden') && document.getElementById('view-{}').textContent.length > 20;", &v[2..], &v[2..]),
        );
    }
    let errors = b.exec("return window.__weirErrors");
    assert_eq!(errors, json!([]), "JavaScript errors on the page");
    let severe = b.severe_logs();
    assert!(severe.is_empty(), "browser console errors: {severe:?}");
    wd(addr, "DELETE", &format!("/session/{}", b.session), None);
}
