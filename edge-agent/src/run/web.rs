//! The technician's page and its REST API (`/api/v1/…`, docs/api.md), on
//! the metrics listener. Assets are embedded in the binary (no CDN: plants
//! are offline). Live updates go out as Server-Sent Events
//! (`/api/v1/events`): a small message whenever something changed, after
//! which the page fetches what it shows.
//!
//! Access: reading is open on the listener (loopback by default; binding
//! elsewhere needs `[dashboard] token`, checked when the gateway file is
//! read). Acknowledging an alert needs the token (`Authorization: Bearer
//! …`, or `?token=` for the event stream). Off loopback, dead-letter
//! payloads are shown only with the token.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::metrics::Metrics;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");

/// The embedded assets, `(path, content type, body)`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/app.css", "text/css; charset=utf-8", APP_CSS),
];

/// A parsed request head.
#[derive(Debug, Default)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    /// `Authorization: Bearer` token, or `?token=`.
    pub token: Option<String>,
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Request {
    /// Parses a request head (`GET /path?x=1 HTTP/1.1` and headers).
    pub fn parse(head: &str) -> Request {
        let mut lines = head.lines();
        let first = lines.next().unwrap_or("");
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("");
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        let query: Vec<(String, String)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (pct_decode(k), pct_decode(v))
            })
            .collect();
        let mut token = query
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone());
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("authorization") {
                    if let Some(t) = v.trim().strip_prefix("Bearer ") {
                        token = Some(t.trim().to_string());
                    }
                }
            }
        }
        Request {
            method,
            path: pct_decode(path),
            query,
            token,
        }
    }

    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether `given` is the configured token (constant time in its length).
fn token_ok(m: &Metrics, given: Option<&str>) -> bool {
    let want = m.dash.token.lock().unwrap_or_else(|e| e.into_inner());
    match (want.as_deref(), given) {
        (Some(w), Some(g)) if w.len() == g.len() && !w.is_empty() => {
            w.bytes().zip(g.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        }
        _ => false,
    }
}

/// Whether this request is for the page or the API (else: metrics routes).
pub fn is_web(path: &str) -> bool {
    path.starts_with("/api/") || ASSETS.iter().any(|(p, _, _)| path == *p)
}

async fn respond(sock: &mut TcpStream, status: &str, ctype: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
    let _ = sock.shutdown().await;
}

async fn json_reply(sock: &mut TcpStream, status: &str, v: &Value) {
    let body = serde_json::to_vec(v).unwrap_or_default();
    respond(sock, status, "application/json", "", &body).await;
}

fn error(msg: &str) -> Value {
    json!({ "error": msg })
}

/// Serves one page or API request on `sock`.
pub async fn handle(mut sock: TcpStream, head: &str, m: Arc<Metrics>) {
    let req = Request::parse(head);
    let authed = token_ok(&m, req.token.as_deref());
    if req.method == "GET" {
        if let Some((_, ctype, body)) = ASSETS.iter().find(|(p, _, _)| req.path == *p) {
            respond(&mut sock, "200 OK", ctype, "", body.as_bytes()).await;
            return;
        }
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["api", "v1", "health"]) => json_reply(&mut sock, "200 OK", &health(&m)).await,
        ("GET", ["api", "v1", "overview"]) => {
            json_reply(&mut sock, "200 OK", &overview(&m, authed)).await
        }
        ("GET", ["api", "v1", "sensors"]) => {
            json_reply(&mut sock, "200 OK", &m.dash.sensors_json()).await
        }
        ("GET", ["api", "v1", "sensors", key, "windows"]) => {
            let from = req
                .param("from")
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN);
            let to = req
                .param("to")
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MAX);
            match m.dash.windows_json(key, from, to) {
                Some(v) => json_reply(&mut sock, "200 OK", &v).await,
                None => json_reply(&mut sock, "404 Not Found", &error("no such sensor")).await,
            }
        }
        ("GET", ["api", "v1", "alerts"]) => {
            let limit = req
                .param("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            json_reply(&mut sock, "200 OK", &m.dash.alerts_json(limit)).await
        }
        ("POST", ["api", "v1", "alerts", id, "ack"]) => {
            if !authed {
                return json_reply(
                    &mut sock,
                    "401 Unauthorized",
                    &error("acknowledging needs the dashboard token (Authorization: Bearer …)"),
                )
                .await;
            }
            let Ok(id) = id.parse::<u64>() else {
                return json_reply(
                    &mut sock,
                    "400 Bad Request",
                    &error("alert ids are numbers"),
                )
                .await;
            };
            let who = req.param("by").unwrap_or("technician");
            let who: String = who.chars().take(64).collect();
            if m.dash.ack(id, &who, m.now.load(Relaxed)) {
                json_reply(&mut sock, "200 OK", &json!({"acked": id})).await
            } else {
                json_reply(&mut sock, "404 Not Found", &error("no such alert")).await
            }
        }
        ("GET", ["api", "v1", "pipeline"]) => {
            json_reply(&mut sock, "200 OK", &m.dash.pipeline_json()).await
        }
        ("GET", ["api", "v1", "updates"]) => json_reply(&mut sock, "200 OK", &updates(&m)).await,
        ("GET", ["api", "v1", "deadletters"]) => {
            let limit = req
                .param("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            let show = authed || m.dash.loopback.load(Relaxed);
            json_reply(&mut sock, "200 OK", &dead_letters(&m, limit, show)).await
        }
        ("GET", ["api", "v1", "events"]) => events(sock, m, authed).await,
        ("GET", ["api", "v1", "auth"]) => {
            json_reply(&mut sock, "200 OK", &json!({"token_ok": authed})).await
        }
        (_, ["api", ..]) => {
            json_reply(
                &mut sock,
                "404 Not Found",
                &error("no such endpoint; see docs/api.md"),
            )
            .await
        }
        _ => respond(&mut sock, "404 Not Found", "text/plain", "", b"not found\n").await,
    }
}

fn health(m: &Metrics) -> Value {
    let fault = m
        .storage_fault
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ready = m.ready.load(Relaxed);
    let connected = m.connected.load(Relaxed);
    let status = if fault.is_some() {
        "storage_failing"
    } else if !ready {
        "recovering"
    } else if !connected {
        "broker_disconnected"
    } else {
        "ok"
    };
    json!({
        "status": status,
        "storage_fault": fault,
        "ready": ready,
        "broker_connected": connected,
        "outputs_connected": m.output_connected.load(Relaxed),
    })
}

/// Wired sensors' health, from the Prometheus text `weir-boards` writes.
fn wired(m: &Metrics) -> Value {
    let text = m
        .wired_health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut by: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        Default::default();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = l.split_once('{') else {
            continue;
        };
        let Some((labels, v)) = rest.split_once("} ") else {
            continue;
        };
        let Some(sensor) = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("sensor=\""))
            .map(|s| s.trim_end_matches('"').to_string())
        else {
            continue;
        };
        let field = name.trim_start_matches("weir_sensor_").to_string();
        let val: f64 = v.trim().parse().unwrap_or(f64::NAN);
        let entry = by.entry(sensor).or_default();
        let key = match labels.split(',').find_map(|kv| kv.strip_prefix("kind=\"")) {
            Some(k) => format!("{field}_{}", k.trim_end_matches('"')),
            None => field,
        };
        entry.insert(
            key,
            if val.is_finite() {
                json!(val)
            } else {
                Value::Null
            },
        );
    }
    Value::Array(
        by.into_iter()
            .map(|(k, mut v)| {
                v.insert("sensor".into(), json!(k));
                Value::Object(v)
            })
            .collect(),
    )
}

fn overview(m: &Metrics, _authed: bool) -> Value {
    let now = m.now.load(Relaxed);
    let sources: Vec<Value> = m
        .sources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, newest, _)| {
            json!({
                "name": name,
                "newest_event": newest,
                "lag_ms": newest.map(|t| now.saturating_sub(t)),
            })
        })
        .collect();
    let cloud = m
        .cloud
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(u, o)| {
            json!({
                "connects": u.connects,
                "published": u.published_records,
                "acked": u.acked_records,
                "outbox_records": o.records,
                "outbox_bytes": o.bytes,
            })
        });
    let wm = m.watermark.load(Relaxed);
    json!({
        "gateway": m.dash.gateway.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        "version": env!("CARGO_PKG_VERSION"),
        "now": now,
        "health": health(m),
        "durability": *m.mode.lock().unwrap_or_else(|e| e.into_inner()),
        "watermark": if wm == i64::MIN { Value::Null } else { json!(wm) },
        "sources": sources,
        "counts": {
            "messages": m.messages.load(Relaxed),
            "readings": m.readings.load(Relaxed),
            "windows": m.windows.load(Relaxed),
            "alerts": m.alerts.load(Relaxed),
            "late": m.late.load(Relaxed),
            "dead_letters": m.dead_letters.load(Relaxed),
            "duplicates": m.duplicates.load(Relaxed),
        },
        "store": {
            "commits": m.commits.load(Relaxed),
            "journal_bytes": m.journal_bytes.load(Relaxed),
            "checkpoints": m.checkpoints.load(Relaxed),
            "file_bytes": m.store_file_bytes.load(Relaxed),
            "flash_write_bytes": super::metrics::flash_write_bytes(),
            "storage_faults": m.storage_faults.load(Relaxed),
        },
        "cloud": cloud,
        "wired": wired(m),
        "keys": m.keys.load(Relaxed),
        "rss_bytes": super::metrics::rss_bytes(),
        "pipeline_version": m.pipeline_version.load(Relaxed),
    })
}

fn updates(m: &Metrics) -> Value {
    let counts: serde_json::Map<String, Value> = m
        .updates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let last = m
        .dash
        .last_update
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json!({
        "running_version": m.pipeline_version.load(Relaxed),
        "counts": counts,
        "last": last,
    })
}

fn dead_letters(m: &Metrics, limit: usize, payloads: bool) -> Value {
    let q = m.recent_dead.lock().unwrap_or_else(|e| e.into_inner());
    let list: Vec<Value> = q
        .iter()
        .rev()
        .take(limit)
        .map(|d| {
            let mut j = json!({
                "at": d.now,
                "topic": d.topic,
                "reason": d.reason,
                "detail": d.detail,
                "payload_bytes": d.payload.len(),
            });
            if payloads {
                let mut p = String::new();
                for &b in &d.payload {
                    if (0x20..0x7f).contains(&b) {
                        p.push(b as char);
                    } else {
                        let _ = write!(p, "\\x{b:02x}");
                    }
                }
                j["payload"] = json!(p);
            }
            j
        })
        .collect();
    json!({ "deadletters": list, "payloads_shown": payloads })
}

/// `text/event-stream`: an `update` event (the change counter and the
/// overview) whenever something changed, at most twice a second, and a
/// comment every 15 s so proxies keep the stream open.
async fn events(mut sock: TcpStream, m: Arc<Metrics>, _authed: bool) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\nretry: 2000\n\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut seen = u64::MAX;
    loop {
        let v = m.dash.version();
        if v != seen {
            seen = v;
            let data = json!({ "version": v, "overview": overview(&m, false) });
            let msg = format!("event: update\ndata: {data}\n\n");
            if sock.write_all(msg.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let changed = m.dash.changed.notified();
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(15)) => {
                if sock.write_all(b": keep-alive\n\n").await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_paths_queries_and_tokens() {
        let r = Request::parse(
            "GET /api/v1/sensors/pump%2D3/windows?from=10&to=20 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n",
        );
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/v1/sensors/pump-3/windows");
        assert_eq!(r.param("from"), Some("10"));
        assert_eq!(r.token.as_deref(), Some("s3cret"));
        let r = Request::parse("GET /api/v1/events?token=a%20b HTTP/1.1\r\n\r\n");
        assert_eq!(r.token.as_deref(), Some("a b"));
        assert_eq!(pct_decode("100%"), "100%");
        assert_eq!(pct_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn the_token_must_match_exactly() {
        let m = Metrics::default();
        assert!(
            !token_ok(&m, Some("x")),
            "no token configured: nothing matches"
        );
        *m.dash.token.lock().unwrap() = Some("abc".into());
        assert!(token_ok(&m, Some("abc")));
        assert!(!token_ok(&m, Some("abd")));
        assert!(!token_ok(&m, Some("ab")));
        assert!(!token_ok(&m, None));
    }

    #[test]
    fn the_embedded_page_stays_small() {
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(
            total < 200 * 1024,
            "{total} bytes of assets (budget 200 KiB)"
        );
    }
}
