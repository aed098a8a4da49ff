//! A SQL query's result rows, as CSV: a header of the result column names,
//! then one row per window that passes `HAVING`. Timestamps are written
//! `YYYY-MM-DD HH:MM:SS.sss` (UTC), BIGINT/INT as integers, DECIMAL(p, s)
//! with `s` decimals, DOUBLE with 6, BOOLEAN as `true`/`false`, NULL as
//! an empty field; strings are quoted when they hold `,`, `"` or a newline.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use weir_core::engine::Engine;
use weir_core::expr::Value;
use weir_core::output::{Output, WindowResult};

use super::ddl::SqlType;
use super::plan::Query;
use super::SqlPipeline;
use crate::numfmt::push_f64;
use crate::replay::{BadRow, Results, Summary, TextFields};
use crate::timefmt::format_datetime_ms;

/// A window row waiting for the other operators' results of the same key
/// and window.
struct Pending {
    parts: Vec<Option<(Vec<f64>, bool)>>,
    left: usize,
}

/// [`Results`] for a compiled query.
pub struct Rows<'q> {
    q: &'q Query,
    sample: Vec<Value>,
    pending: HashMap<(String, i64, i64), Pending>,
}

impl<'q> Rows<'q> {
    /// Result rows of `q`.
    pub fn new(q: &'q Query) -> Self {
        Rows {
            q,
            sample: Vec::new(),
            pending: HashMap::new(),
        }
    }

    /// The CSV header line.
    pub fn header(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, c) in self.q.columns.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_str(&mut b, &c.name);
        }
        b.push(b'\n');
        b
    }

    fn emit(
        &mut self,
        key: &str,
        w: &WindowResult,
        parts: &[(Vec<f64>, bool)],
        sum: &mut Summary,
        b: &mut Vec<u8>,
    ) {
        let q = self.q;
        let mut row = Vec::with_capacity(4 + q.slots.len() + q.flags.len());
        row.push(if q.keyed {
            Value::Str(key.to_string())
        } else {
            Value::Null
        });
        row.push(Value::Ts(w.start));
        row.push(Value::Ts(w.end));
        row.push(Value::Ts(w.end - 1));
        for &(op, i) in &q.slots {
            let v = parts[op].0.get(i).copied().unwrap_or(f64::NAN);
            row.push(if v.is_nan() {
                Value::Null
            } else {
                Value::Num(v)
            });
        }
        for &op in &q.flags {
            let flag = parts[op].1;
            sum.flagged += flag as u64;
            row.push(Value::Bool(flag));
        }
        if q.having.as_ref().is_some_and(|h| !h.test(&row)) {
            return;
        }
        sum.windows += 1;
        for (i, c) in q.columns.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_value(b, &c.expr.eval(&row), c.ty);
        }
        b.push(b'\n');
    }
}

impl Results for Rows<'_> {
    fn keep(&mut self, key: &str, ts: i64, values: &[f64], texts: &TextFields<'_>) -> bool {
        let Some(f) = &self.q.filter else {
            return true;
        };
        self.sample.clear();
        self.sample.push(Value::Str(key.to_string()));
        self.sample.push(Value::Ts(ts));
        self.sample.extend(values.iter().map(|v| Value::Num(*v)));
        for i in 0..self.q.texts {
            self.sample.push(
                texts
                    .get(i)
                    .map_or(Value::Null, |t| Value::Str(t.to_string())),
            );
        }
        f.test(&self.sample)
    }

    fn write(&mut self, engine: &Engine, o: &Output, sum: &mut Summary, b: &mut Vec<u8>) {
        match o {
            Output::Window(w) => {
                let Some(pos) = self.q.ops.iter().position(|&op| op == w.op as usize) else {
                    return;
                };
                let flag = w.anomaly.is_some_and(|a| a.flag);
                let values = w.values.as_slice().to_vec();
                let key = engine.key_name(w.key).to_string();
                let n = self.q.ops.len();
                if n == 1 {
                    self.emit(&key, w, &[(values, flag)], sum, b);
                    return;
                }
                let k = (key, w.start, w.end);
                let p = self.pending.entry(k.clone()).or_insert_with(|| Pending {
                    parts: vec![None; n],
                    left: n,
                });
                if p.parts[pos].is_none() {
                    p.left -= 1;
                }
                p.parts[pos] = Some((values, flag));
                if p.left == 0 {
                    let p = self.pending.remove(&k).expect("present");
                    let parts: Vec<(Vec<f64>, bool)> = p.parts.into_iter().flatten().collect();
                    self.emit(&k.0, w, &parts, sum, b);
                }
            }
            // Every operator sees the same late sample: count it once.
            Output::Late(l) if l.op as usize == self.q.ops[0] => sum.late += 1,
            _ => {}
        }
    }
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        b.push(b'"');
        b.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        b.push(b'"');
    } else {
        b.extend_from_slice(s.as_bytes());
    }
}

/// `YYYY-MM-DD HH:MM:SS.sss`, UTC.
pub fn format_ts(ms: i64) -> String {
    let mut s = format_datetime_ms(ms);
    if s.len() == 19 {
        s.push_str(".000");
    }
    s
}

fn push_value(b: &mut Vec<u8>, v: &Value, ty: SqlType) {
    match v {
        Value::Null => {}
        Value::Bool(x) => b.extend_from_slice(if *x { b"true" } else { b"false" }),
        Value::Str(s) => push_str(b, s),
        Value::Ts(t) => b.extend_from_slice(format_ts(*t).as_bytes()),
        Value::Num(x) => match ty {
            SqlType::Int | SqlType::BigInt if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                b.extend_from_slice((*x as i64).to_string().as_bytes())
            }
            SqlType::Decimal(s) if x.is_finite() => {
                b.extend_from_slice(format!("{:.*}", s as usize, x).as_bytes())
            }
            _ => push_f64(b, *x),
        },
    }
}

/// Runs `input` through a compiled SQL pipeline and writes its result rows
/// as CSV to `out`.
///
/// # Errors
/// I/O errors of `input` or `out`. Bad rows are not errors: `on_bad` sees them.
pub fn replay<R: Read, W: Write>(
    p: &SqlPipeline,
    input: R,
    out: W,
    on_bad: impl FnMut(&BadRow, &[u8]),
) -> io::Result<(Summary, Engine)> {
    let mut rows = Rows::new(&p.query);
    let header = rows.header();
    crate::replay::replay_with(&p.pipeline, 0, input, out, &header, &mut rows, on_bad)
}
