//! What the technician's page shows, kept in memory by the agent: per key
//! and operator the latest window and a one-hour history in minute
//! buckets, the recent alerts (which can be acknowledged), and the running
//! pipeline. The ingest loop writes ([`Dash::window`], [`Dash::score`]);
//! the HTTP tasks read, and wait on [`Dash::changed`] for live updates.
//!
//! Memory is bounded: at most [`DashConfig::max_series`] (key, operator)
//! series of at most [`HISTORY_MINUTES`] buckets of 24 bytes (about 1.5 KB
//! a series, 1.5 MB for 1,000), [`MAX_ALERTS`] alerts. History is not
//! persisted: after a restart the page fills again from new windows (and
//! from the journal replay, which re-emits what came after the checkpoint).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Value};
use weir_core::detect::DetectorSpec;
use weir_core::output::{ScoreResult, WindowResult};
use weir_core::spec::{OperatorKind, PipelineSpec};

/// Minutes of history per series.
pub const HISTORY_MINUTES: usize = 60;
/// Alerts kept (oldest dropped first).
pub const MAX_ALERTS: usize = 500;

/// Dashboard settings (`[dashboard]` in gateway.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashConfig {
    /// Most (key, operator) series kept; new ones beyond are not charted
    /// (counted in `series_dropped`).
    pub max_series: usize,
}

impl Default for DashConfig {
    fn default() -> Self {
        DashConfig { max_series: 2_000 }
    }
}

/// One minute of a series' primary value.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    minute: i64,
    min: f32,
    max: f32,
    last: f32,
    alarm: bool,
}

/// The latest window of one (key, operator).
#[derive(Debug, Default)]
struct Series {
    start: i64,
    end: i64,
    values: Vec<f64>,
    score: Option<f64>,
    alarm: bool,
    /// Windows seen.
    windows: u64,
    history: VecDeque<Bucket>,
}

/// An alert as the page shows it.
#[derive(Clone, Debug)]
pub struct Alert {
    /// Its number (for acknowledging), from 1.
    pub id: u64,
    /// The agent clock when it was raised (ms).
    pub raised: i64,
    /// The key (machine or sensor).
    pub key: String,
    /// The operator's id.
    pub operator: String,
    /// The detector (`ewma_z`, `kestrel`, …).
    pub detector: String,
    /// What it watched (`rms`, the field).
    pub on: String,
    /// The value it flagged.
    pub value: f64,
    /// Its score in [0, 1].
    pub score: f64,
    /// The window that triggered it (`start`, `end`; a sample: both its ts).
    pub window: (i64, i64),
    /// Acknowledged by whom and when (agent clock ms).
    pub acked: Option<(String, i64)>,
}

/// An operator as the page names it.
#[derive(Clone, Debug, Default)]
struct Op {
    id: String,
    kind: &'static str,
    field: String,
    aggs: Vec<String>,
    /// Index of the charted aggregate in `aggs`.
    primary: usize,
    detector: Option<(String, String)>,
}

/// The running pipeline, as the page shows it.
#[derive(Clone, Debug, Default)]
pub struct PipelineInfo {
    /// Its name.
    pub name: String,
    /// Its version (0: the gateway's own file).
    pub version: u64,
    /// Where it came from (a file path, or "signed update").
    pub origin: String,
    /// Its text, when known.
    pub text: String,
}

#[derive(Debug, Default)]
struct State {
    ops: Vec<Op>,
    /// Per key, its operators' series (looked up by `&str`, no allocation
    /// per window or sample).
    series: BTreeMap<String, Vec<(u16, Series)>>,
    series_count: usize,
    series_dropped: u64,
    alerts: VecDeque<Alert>,
    next_alert: u64,
    pipeline: PipelineInfo,
    /// Bumped on every change; SSE clients compare.
    version: u64,
}

/// The dashboard's state (one per agent, in [`super::metrics::Metrics`]).
#[derive(Debug, Default)]
pub struct Dash {
    state: Mutex<State>,
    config: Mutex<DashConfig>,
    /// Notified when something changed (windows, alerts, acks, pipeline).
    pub changed: tokio::sync::Notify,
    /// Who may change things and see payloads: `[dashboard] token`.
    pub token: Mutex<Option<String>>,
    /// Whether the listener is on a loopback address.
    pub loopback: std::sync::atomic::AtomicBool,
    /// The gateway's id.
    pub gateway: Mutex<String>,
    /// The last update's status as published (JSON), if any.
    pub last_update: Mutex<Option<Value>>,
}

fn detector_name(d: &DetectorSpec) -> String {
    match d {
        DetectorSpec::EwmaZ { .. } => "ewma_z".into(),
        DetectorSpec::Scored { detector, .. } => {
            let s = format!("{detector:?}");
            s.split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .unwrap_or("scored")
                .to_lowercase()
        }
        DetectorSpec::Multivariate { .. } => "multivariate".into(),
    }
}

impl Dash {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the limits.
    pub fn configure(&self, c: DashConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    /// A (new) running pipeline: operator names for what follows. History
    /// of operators that kept their id stays.
    pub fn set_pipeline(&self, spec: &PipelineSpec, info: PipelineInfo) {
        let ops: Vec<Op> =
            spec.operators
                .iter()
                .map(|o| match &o.kind {
                    OperatorKind::Window(w) => {
                        let aggs = super::output::agg_names(&w.aggregates);
                        let on = w
                            .detect
                            .as_ref()
                            .and_then(|d| d.on)
                            .and_then(|a| w.aggregates.iter().position(|x| *x == a))
                            .map(|i| aggs[i].clone());
                        let primary = on
                            .as_ref()
                            .and_then(|n| aggs.iter().position(|a| a == n))
                            .or_else(|| aggs.iter().position(|a| a == "mean"))
                            .or_else(|| aggs.iter().position(|a| a != "count"))
                            .unwrap_or(0);
                        Op {
                            id: o.id.clone(),
                            kind: "window",
                            field: o.field.clone(),
                            primary,
                            detector: w.detect.as_ref().map(|d| {
                                (detector_name(&d.detector), on.clone().unwrap_or_default())
                            }),
                            aggs,
                        }
                    }
                    OperatorKind::Detect(d) => Op {
                        id: o.id.clone(),
                        kind: "detect",
                        field: o.field.clone(),
                        aggs: vec!["value".into(), "score".into()],
                        primary: 0,
                        detector: Some((detector_name(&d.detector), o.field.clone())),
                    },
                    OperatorKind::Process(p) => Op {
                        id: o.id.clone(),
                        kind: "process",
                        field: o.field.clone(),
                        aggs: vec![p.state_type.clone()],
                        primary: 0,
                        detector: None,
                    },
                })
                .collect();
        let mut s = self.lock();
        // Series are keyed by operator index: keep those whose operator id
        // is still there, under its new index.
        let old: Vec<String> = s.ops.iter().map(|o| o.id.clone()).collect();
        let mut count = 0;
        for list in s.series.values_mut() {
            list.retain_mut(|(op, _)| {
                let new = old
                    .get(*op as usize)
                    .and_then(|id| ops.iter().position(|o| &o.id == id));
                match new {
                    Some(i) => {
                        *op = i as u16;
                        true
                    }
                    None => false,
                }
            });
            count += list.len();
        }
        s.series.retain(|_, l| !l.is_empty());
        s.series_count = count;
        s.ops = ops;
        s.pipeline = info;
        s.version += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    /// A window result of `key` (agent clock `now`).
    pub fn window(&self, key: &str, w: &WindowResult, now: i64) {
        let max_series = self.config.lock().map_or(2_000, |c| c.max_series);
        let mut s = self.lock();
        let Some(primary_at) = s.ops.get(w.op as usize).map(|o| o.primary) else {
            return;
        };
        let vals = w.values.as_slice();
        let primary = vals.get(primary_at).copied().unwrap_or(f64::NAN);
        let alarm = w.anomaly.is_some_and(|a| a.flag);
        let Some(series) = series_of(&mut s, key, w.op, max_series) else {
            return;
        };
        series.start = w.start;
        series.end = w.end;
        series.values.clear();
        series.values.extend_from_slice(vals);
        series.score = w.anomaly.map(|a| a.score);
        series.alarm = alarm;
        series.windows += 1;
        push_bucket(&mut series.history, w.end, primary, alarm);
        if alarm {
            let score = w.anomaly.map_or(1.0, |a| a.score);
            raise(&mut s, key, w.op, primary, score, (w.start, w.end), now);
        }
        s.version += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    /// A per-sample score of `key` (only flagged ones and one point a
    /// minute are kept).
    pub fn score(&self, key: &str, r: &ScoreResult, now: i64) {
        let (op, ts, value, score, flag) = (r.op, r.ts, r.value, r.verdict.score, r.verdict.flag);
        let max_series = self.config.lock().map_or(2_000, |c| c.max_series);
        let mut s = self.lock();
        if s.ops.get(op as usize).is_none() {
            return;
        }
        let Some(series) = series_of(&mut s, key, op, max_series) else {
            return;
        };
        series.start = ts;
        series.end = ts;
        series.values.clear();
        series.values.extend_from_slice(&[value, score]);
        series.score = Some(score);
        series.alarm = flag;
        series.windows += 1;
        push_bucket(&mut series.history, ts, value, flag);
        if flag {
            raise(&mut s, key, op, value, score, (ts, ts), now);
            s.version += 1;
            drop(s);
            self.changed.notify_waiters();
        }
    }

    /// Acknowledges alert `id` (by `who`, agent clock `now`); `false` if
    /// there is no such alert (too old, or never raised).
    pub fn ack(&self, id: u64, who: &str, now: i64) -> bool {
        let mut s = self.lock();
        let Some(a) = s.alerts.iter_mut().find(|a| a.id == id) else {
            return false;
        };
        if a.acked.is_none() {
            a.acked = Some((who.to_string(), now));
        }
        s.version += 1;
        drop(s);
        self.changed.notify_waiters();
        true
    }

    /// A change counter: differs after any change.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// `GET /api/v1/sensors`: every key with each operator's latest window
    /// and its history's last values (a sparkline).
    pub fn sensors_json(&self) -> Value {
        let s = self.lock();
        let mut keys: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (key, list) in &s.series {
            for (op, v) in list {
                let Some(o) = s.ops.get(*op as usize) else {
                    continue;
                };
                keys.entry(key).or_default().push(series_json(o, v, true));
            }
        }
        let open_alerts = |k: &str| {
            s.alerts
                .iter()
                .filter(|a| a.key == k && a.acked.is_none())
                .count()
        };
        json!({
            "sensors": keys.into_iter().map(|(k, ops)| json!({
                "key": k,
                "open_alerts": open_alerts(k),
                "alarm": ops.iter().any(|o| o["alarm"] == json!(true)),
                "operators": ops,
            })).collect::<Vec<_>>(),
            "series_dropped": s.series_dropped,
        })
    }

    /// `GET /api/v1/sensors/{key}/windows?from=&to=`: the history of every
    /// operator of `key` within `[from, to)` (event time, ms); `None` for an
    /// unknown key.
    pub fn windows_json(&self, key: &str, from: i64, to: i64) -> Option<Value> {
        let s = self.lock();
        let mut ops = Vec::new();
        for (op, v) in s.series.get(key).map_or(&[][..], |l| &l[..]) {
            let Some(o) = s.ops.get(*op as usize) else {
                continue;
            };
            let mut j = series_json(o, v, false);
            j["history"] = Value::Array(
                v.history
                    .iter()
                    .filter(|b| (from..to).contains(&(b.minute * 60_000)))
                    .map(bucket_json)
                    .collect(),
            );
            ops.push(j);
        }
        if ops.is_empty() {
            return None;
        }
        let alerts: Vec<Value> = s
            .alerts
            .iter()
            .rev()
            .filter(|a| a.key == key)
            .map(alert_json)
            .collect();
        Some(json!({ "key": key, "operators": ops, "alerts": alerts }))
    }

    /// `GET /api/v1/alerts`: newest first.
    pub fn alerts_json(&self, limit: usize) -> Value {
        let s = self.lock();
        json!({
            "alerts": s.alerts.iter().rev().take(limit).map(alert_json).collect::<Vec<_>>(),
            "open": s.alerts.iter().filter(|a| a.acked.is_none()).count(),
        })
    }

    /// `GET /api/v1/pipeline`.
    pub fn pipeline_json(&self) -> Value {
        let s = self.lock();
        let p = &s.pipeline;
        json!({
            "name": p.name,
            "version": p.version,
            "origin": p.origin,
            "text": p.text,
            "operators": s.ops.iter().map(|o| json!({
                "id": o.id,
                "kind": o.kind,
                "field": o.field,
                "aggregates": o.aggs,
                "detector": o.detector.as_ref().map(|(d, on)| json!({"kind": d, "on": on})),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Records an alert of operator `op` on `key` (once per window: a replay
/// emits the same windows again).
fn raise(s: &mut State, key: &str, op: u16, value: f64, score: f64, window: (i64, i64), now: i64) {
    let o = &s.ops[op as usize];
    if s.alerts
        .iter()
        .any(|x| x.window == window && x.operator == o.id && x.key == key)
    {
        return;
    }
    let (detector, on) = o.detector.clone().unwrap_or_default();
    let operator = o.id.clone();
    s.next_alert += 1;
    if s.alerts.len() >= MAX_ALERTS {
        s.alerts.pop_front();
    }
    s.alerts.push_back(Alert {
        id: s.next_alert,
        raised: now,
        key: key.to_string(),
        operator,
        detector,
        on,
        value,
        score,
        window,
        acked: None,
    });
}

/// The series of (`key`, `op`), made if there is room.
fn series_of<'a>(s: &'a mut State, key: &str, op: u16, max: usize) -> Option<&'a mut Series> {
    let full = s.series_count >= max;
    if !s.series.contains_key(key) {
        if full {
            s.series_dropped += 1;
            return None;
        }
        // Room for one operator: most keys have one, and a `push` into an
        // empty Vec makes room for four (336 bytes a key wasted, 0.33 MiB
        // with 1,000 sensors).
        s.series.insert(key.to_string(), Vec::with_capacity(1));
    }
    let list = s.series.get_mut(key)?;
    let at = match list.iter().position(|(o, _)| *o == op) {
        Some(i) => i,
        None => {
            if full {
                s.series_dropped += 1;
                return None;
            }
            list.push((op, Series::default()));
            list.sort_by_key(|(o, _)| *o);
            s.series_count += 1;
            let list = s.series.get_mut(key)?;
            list.iter().position(|(o, _)| *o == op)?
        }
    };
    Some(&mut s.series.get_mut(key)?[at].1)
}

fn push_bucket(h: &mut VecDeque<Bucket>, t: i64, v: f64, alarm: bool) {
    let minute = t.div_euclid(60_000);
    let v32 = v as f32;
    match h.back_mut() {
        Some(b) if b.minute == minute => {
            if v.is_finite() {
                if !b.min.is_finite() || v32 < b.min {
                    b.min = v32;
                }
                if !b.max.is_finite() || v32 > b.max {
                    b.max = v32;
                }
                b.last = v32;
            }
            b.alarm |= alarm;
        }
        // Late updates of an older minute are not charted.
        Some(b) if b.minute > minute => {}
        _ => {
            h.push_back(Bucket {
                minute,
                min: v32,
                max: v32,
                last: v32,
                alarm,
            });
            while h.len() > HISTORY_MINUTES
                || h.front()
                    .is_some_and(|f| f.minute <= minute - HISTORY_MINUTES as i64)
            {
                h.pop_front();
            }
        }
    }
}

fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

fn bucket_json(b: &Bucket) -> Value {
    json!({
        "t": b.minute * 60_000,
        "min": num(b.min as f64),
        "max": num(b.max as f64),
        "last": num(b.last as f64),
        "alarm": b.alarm,
    })
}

fn series_json(o: &Op, v: &Series, spark: bool) -> Value {
    let mut j = json!({
        "operator": o.id,
        "kind": o.kind,
        "field": o.field,
        "primary": o.aggs.get(o.primary),
        "start": v.start,
        "end": v.end,
        "values": o.aggs.iter().zip(&v.values).map(|(n, x)| (n.clone(), num(*x))).collect::<serde_json::Map<_, _>>(),
        "score": v.score.map(num),
        "alarm": v.alarm,
        "windows": v.windows,
    });
    if spark {
        j["spark"] = Value::Array(
            v.history
                .iter()
                .map(|b| json!([b.minute * 60_000, num(b.last as f64), b.alarm]))
                .collect(),
        );
    }
    j
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "raised": a.raised,
        "key": a.key,
        "operator": a.operator,
        "detector": a.detector,
        "on": a.on,
        "value": num(a.value),
        "score": num(a.score),
        "window": { "start": a.window.0, "end": a.window.1 },
        "acked": a.acked.as_ref().map(|(who, at)| json!({"by": who, "at": at})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> PipelineSpec {
        crate::pipeline_file::parse("demo.toml", include_str!("../../../examples/demo.toml"))
            .unwrap()
            .spec
    }

    fn win(op: u16, end: i64, flag: bool) -> WindowResult {
        WindowResult {
            op,
            key: Default::default(),
            start: end - 10_000,
            end,
            emission: weir_core::output::Emission::OnTime,
            values: Default::default(),
            anomaly: Some(weir_core::detect::Verdict { score: 0.9, flag }),
        }
    }

    #[test]
    fn series_are_bounded_alerts_deduplicated_and_acknowledged() {
        let d = Dash::default();
        d.configure(DashConfig { max_series: 3 });
        d.set_pipeline(&demo(), PipelineInfo::default());
        for k in ["a", "b"] {
            d.window(k, &win(0, 10_000, false), 1);
            d.window(k, &win(1, 10_000, false), 1);
        }
        let j = d.sensors_json();
        assert_eq!(j["series_dropped"], 1, "{j}");
        assert_eq!(j["sensors"].as_array().unwrap().len(), 2);
        // An alarm, and the same window again (a replay): one alert.
        d.window("a", &win(0, 20_000, true), 5);
        d.window("a", &win(0, 20_000, true), 6);
        let a = d.alerts_json(10);
        assert_eq!(a["open"], 1, "{a}");
        assert_eq!(a["alerts"][0]["key"], "a");
        assert_eq!(a["alerts"][0]["operator"], "vibration");
        assert_eq!(a["alerts"][0]["window"]["end"], 20_000);
        let id = a["alerts"][0]["id"].as_u64().unwrap();
        assert!(d.ack(id, "eve", 7));
        assert!(!d.ack(id + 100, "eve", 7));
        assert_eq!(d.alerts_json(10)["open"], 0);
        assert_eq!(d.alerts_json(10)["alerts"][0]["acked"]["by"], "eve");
        // A pipeline without `temperature` keeps `vibration`'s history.
        let mut spec = demo();
        spec.operators.retain(|o| o.id == "vibration");
        d.set_pipeline(&spec, PipelineInfo::default());
        let w = d.windows_json("a", i64::MIN, i64::MAX).unwrap();
        assert_eq!(w["operators"].as_array().unwrap().len(), 1, "{w}");
        assert_eq!(w["operators"][0]["operator"], "vibration");
        assert!(d.windows_json("nope", 0, 1).is_none());
    }

    #[test]
    fn history_keeps_an_hour_of_minutes_and_marks_alarms() {
        let mut h = VecDeque::new();
        for i in 0..(2 * 60 * 6) {
            // 10 s windows over two hours
            push_bucket(&mut h, i * 10_000, i as f64, i == 700);
        }
        assert_eq!(h.len(), HISTORY_MINUTES);
        let last = h.back().unwrap();
        assert_eq!(last.minute, (2 * 60 * 6 - 1) * 10_000 / 60_000);
        assert_eq!(last.min as i64, 714);
        assert_eq!(last.max as i64, 719);
        assert!(h.iter().any(|b| b.alarm));
        assert!(h.iter().filter(|b| b.alarm).count() == 1);
    }
}
