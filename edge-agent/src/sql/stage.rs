//! The stateless stages of a query around the engine, shared by
//! `weir replay` ([`super::exec`]) and `weir run` (`run/output.rs` after
//! the engine, `run/mod.rs`'s `feed` before it), so both compute the same
//! rows from the same samples:
//!
//! - before the engine, [`Query::keep_sample`]: the aggregated expressions
//!   and the `WHERE` that read the key, the time or a text column (the
//!   engine sees only numeric fields);
//! - after it, [`Join`] joins the window results of the query's operators
//!   for one key and window, [`Query::window_row`] makes the window row,
//!   [`Query::passes`] applies `HAVING`, and the result columns are
//!   evaluated over the row.
//!
//! Everything here is a pure function of the samples and window results:
//! a journal replay after a crash computes the same rows, so the agent
//! publishes the same ids and payloads.

use std::collections::HashMap;

use weir_core::expr::{Expr, Value};
use weir_core::output::{AggValues, Emission, ScoreResult, WindowResult};

/// A detector table function's row ([`Query::scores`]) as the window
/// result the row stages read: `window_start` the sample's time
/// (`window_end` 1 ms after it, so `window_time` is the time too), values
/// `[value, score]`, the verdict as the flag.
pub fn score_row(s: &ScoreResult) -> WindowResult {
    WindowResult {
        op: s.op,
        key: s.key,
        start: s.ts,
        end: s.ts.saturating_add(1),
        emission: Emission::OnTime,
        values: AggValues::from_slice(&[s.value, s.verdict.score]),
        anomaly: Some(s.verdict),
    }
}

use super::plan::Query;

impl Query {
    /// Whether rows need the post-window stage: a `HAVING` or a result
    /// column that is not one value of the window row as it is.
    pub fn projects(&self) -> bool {
        self.having.is_some()
            || !self.post.is_empty()
            || !self.columns.iter().all(|c| matches!(c.expr, Expr::Col(_)))
    }

    /// Whether `weir run` publishes the query's result rows (by column
    /// name): it [`Query::projects`], inserts into an mqtt sink, or groups
    /// by several key columns (the row holds each).
    pub fn publishes_rows(&self) -> bool {
        self.projects() || self.sink.is_some() || self.groups.is_some() || self.per_row.is_some()
    }

    /// `key` as people read it in ids, topics, cloud records and the
    /// dashboard: with several key columns, the composite key's values
    /// joined by `,` ([`super::groups::Groups::display`]); any other key as
    /// it is.
    pub fn shown_key<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        match &self.groups {
            Some(g) => std::borrow::Cow::Owned(g.display(key)),
            None => std::borrow::Cow::Borrowed(key),
        }
    }

    /// Whether samples go through [`Query::keep_sample`] before the engine.
    pub fn filters_before_engine(&self) -> bool {
        self.filter.is_some() || !self.computed.is_empty() || self.per_row.is_some()
    }

    /// Whether `weir run` applies `WHERE` to decoded readings before it
    /// journals them ([`Query::keep_decoded`]): `WHERE` reads a text
    /// column besides the key, which the journal does not hold.
    pub fn filters_at_ingest(&self) -> bool {
        self.texts > 0 && self.filter.is_some()
    }

    /// Whether `e` reads a text column besides the key (in the sample row).
    pub fn reads_text(&self, e: &Expr) -> bool {
        let text = 2 + self.columns_in..2 + self.columns_in + self.texts;
        let hit = std::cell::Cell::new(false);
        let _ = e.map_cols(&|c| {
            hit.set(hit.get() || text.contains(&usize::from(c)));
            Some(c)
        });
        hit.get()
    }

    /// The computed fields that read a text column besides the key, which
    /// `weir run` computes from decoded readings and journals after the
    /// fields ([`Query::computed_at_ingest`]), by index in `computed`.
    pub fn ingest_computed(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.computed.len()).filter(|&j| {
            self.computed_fn.get(j).copied().flatten().is_none()
                && self.reads_text(&self.computed[j])
        })
    }

    /// Whether `weir run` stages decoded readings before the journal:
    /// [`Query::filters_at_ingest`], [`Query::ingest_computed`] fields, or
    /// the composite key of several key columns ([`Query::groups`]).
    pub fn stages_at_ingest(&self) -> bool {
        self.filters_at_ingest() || self.ingest_computed().next().is_some() || self.groups.is_some()
    }

    /// `weir run`: the [`Query::ingest_computed`] fields of a decoded
    /// reading (text columns `text(i)`) into `out` (one each, NaN for
    /// `NULL`), journaled after its fields.
    pub fn computed_at_ingest<'t>(
        &self,
        key: &str,
        ts: i64,
        values: &[f64],
        text: impl Fn(usize) -> Option<&'t str>,
        sample: &mut Vec<Value>,
        out: &mut [f64],
    ) {
        self.sample_row(key, ts, values, text, sample);
        for (o, j) in out.iter_mut().zip(self.ingest_computed()) {
            *o = match self.computed[j].eval(sample) {
                Value::Num(x) => x,
                _ => f64::NAN,
            };
        }
    }

    /// The sample row `[key, ts, fields…, texts…]`; a field's NaN is its
    /// `NULL` (an empty CSV cell, an absent or `null` JSON field).
    fn sample_row<'t>(
        &self,
        key: &str,
        ts: i64,
        values: &[f64],
        text: impl Fn(usize) -> Option<&'t str>,
        sample: &mut Vec<Value>,
    ) {
        sample.clear();
        sample.push(Value::Str(key.to_string()));
        sample.push(Value::Ts(ts));
        let n = self.columns_in.min(values.len());
        sample.extend(values[..n].iter().map(|&v| {
            if v.is_nan() {
                Value::Null
            } else {
                Value::Num(v)
            }
        }));
        for i in 0..self.texts {
            sample.push(text(i).map_or(Value::Null, |t| Value::Str(t.to_string())));
        }
    }

    /// `weir run`'s `WHERE` on a decoded reading whose text columns are
    /// `text(i)` ([`Query::filters_at_ingest`]): `values` the source's
    /// fields. Readings it drops are never journaled, so a journal replay
    /// after a crash feeds the engine the same readings. `WHERE` reads no
    /// computed field, so this is the same test as [`Query::keep_sample`]'s.
    pub fn keep_decoded<'t>(
        &self,
        key: &str,
        ts: i64,
        values: &[f64],
        text: impl Fn(usize) -> Option<&'t str>,
        sample: &mut Vec<Value>,
    ) -> bool {
        let Some(f) = &self.filter else {
            return true;
        };
        self.sample_row(key, ts, values, text, sample);
        f.test(sample)
    }

    /// Before the engine: computes the aggregated expressions that read the
    /// key, the time or a text column into `values[columns_in..]`, and
    /// tests `WHERE`. `values` holds the source's fields (the first
    /// `columns_in` read from the input); `text(i)` is the `i`th text
    /// column `WHERE` reads; `sample` is scratch. A computed `NULL` leaves
    /// a NaN, which the engine takes as a `NULL` input of the operators
    /// reading that field (a nullable field, `SourceSpec::nullable`): it
    /// is left out of their aggregates only. A failed user function's NaN
    /// is in a field that is not nullable: the engine refuses the sample.
    pub fn keep_sample<'t>(
        &self,
        key: &str,
        ts: i64,
        values: &mut [f64],
        text: impl Fn(usize) -> Option<&'t str>,
        sample: &mut Vec<Value>,
    ) -> bool {
        self.stage_sample(key, ts, values, text, sample, true, &[])
    }

    /// [`Query::keep_sample`], testing `WHERE` only if `filter`; the
    /// [`Query::ingest_computed`] fields are taken from `given` (in
    /// order) when it has them.
    #[allow(clippy::too_many_arguments)]
    fn stage_sample<'t>(
        &self,
        key: &str,
        ts: i64,
        values: &mut [f64],
        text: impl Fn(usize) -> Option<&'t str>,
        sample: &mut Vec<Value>,
        filter: bool,
        given: &[f64],
    ) -> bool {
        if !self.filters_before_engine() {
            return true;
        }
        let n = self.columns_in.min(values.len());
        self.sample_row(key, ts, values, text, sample);
        let mut failed = false;
        let mut given = given.iter();
        for (j, e) in self.computed.iter().enumerate() {
            let journaled = if given.len() > 0
                && self.computed_fn.get(j).copied().flatten().is_none()
                && self.reads_text(e)
            {
                given.next().copied()
            } else {
                None
            };
            let x = match self.computed_fn.get(j).copied().flatten() {
                // Computed before the journal.
                _ if journaled.is_some() => journaled.unwrap_or(f64::NAN),
                // A user function reads its arguments from `values`.
                Some(src) => {
                    self.functions.fill(src, ts, values);
                    let x = values.get(n + j).copied().unwrap_or(f64::NAN);
                    failed |= x.is_nan();
                    x
                }
                None => match e.eval(sample) {
                    Value::Num(x) => x,
                    _ => f64::NAN,
                },
            };
            if let Some(v) = values.get_mut(n + j) {
                *v = x;
            }
            sample.push(if x.is_nan() {
                Value::Null
            } else {
                Value::Num(x)
            });
        }
        // A failed function leaves a NaN: the engine refuses the sample
        // (counted, dead-lettered) rather than the WHERE dropping it.
        failed || !filter || self.filter.as_ref().is_none_or(|f| f.test(sample))
    }

    /// `weir run`'s stage before the engine for one journal record:
    /// `values` (the fields read from the payload, then the
    /// [`Query::computed_at_ingest`] ones) completed by the other computed
    /// fields and the user functions, then `WHERE`; calls `f` with the
    /// sample's values unless `WHERE` drops it (`None`). The journal holds
    /// no text column besides the key: a `WHERE` that reads one was applied
    /// before the journal ([`Query::keep_decoded`]) and is skipped here,
    /// and a computed field that reads one was computed there.
    pub fn before_engine<R>(
        &self,
        fns: &crate::functions::Functions,
        source: usize,
        key: &str,
        ts: i64,
        values: &[f64],
        f: impl FnOnce(&[f64]) -> R,
    ) -> Option<R> {
        // The journal holds the fields, then the computed_at_ingest ones.
        let n = self.columns_in.min(values.len());
        let mut v = values[..n].to_vec();
        v.resize(self.columns_in + self.computed.len(), 0.0);
        let mut sample = Vec::new();
        let filter = !self.filters_at_ingest();
        if !self.stage_sample(key, ts, &mut v, |_| None, &mut sample, filter, &values[n..]) {
            return None;
        }
        fns.fill(source, ts, &mut v);
        Some(f(&v))
    }

    /// The window row `[key, window_start, window_end, window_time,
    /// aggregate slots…, detector flags…, key columns…]` (key columns with
    /// [`Query::groups`] only) of one key and window from the
    /// results of the query's operators (`parts`, in the order of
    /// [`Query::ops`]). A NaN aggregate is `NULL`.
    pub fn window_row(
        &self,
        key: &str,
        start: i64,
        end: i64,
        parts: &[(&[f64], bool)],
        row: &mut Vec<Value>,
    ) {
        row.clear();
        row.push(if self.keyed {
            Value::Str(key.to_string())
        } else {
            Value::Null
        });
        row.push(Value::Ts(start));
        row.push(Value::Ts(end));
        row.push(Value::Ts(end - 1));
        for &(op, v) in &self.slots {
            let x = parts
                .get(op)
                .and_then(|p| p.0.get(v))
                .copied()
                .unwrap_or(f64::NAN);
            row.push(if x.is_nan() {
                Value::Null
            } else {
                Value::Num(x)
            });
        }
        for &op in &self.flags {
            row.push(Value::Bool(parts.get(op).is_some_and(|p| p.1)));
        }
        if let Some(g) = &self.groups {
            g.split(key, row);
        }
        // User functions over the row, in order (one may read another's
        // result); a NULL argument gives NULL without a call.
        for (src, args) in &self.post {
            let mut v: Vec<f64> = args
                .iter()
                .map(|a| match a.eval(row) {
                    Value::Num(x) => x,
                    _ => f64::NAN,
                })
                .collect();
            let x = if v.iter().any(|x| x.is_nan()) {
                f64::NAN
            } else {
                v.push(0.0);
                self.functions.fill(*src, end - 1, &mut v);
                v[v.len() - 1]
            };
            row.push(if x.is_nan() {
                Value::Null
            } else {
                Value::Num(x)
            });
        }
    }

    /// Whether a window row passes `HAVING` (`NULL` does not).
    pub fn passes(&self, row: &[Value]) -> bool {
        self.having.as_ref().is_none_or(|h| h.test(row))
    }

    /// The result columns' values over a window row that passed.
    pub fn project(&self, row: &[Value], out: &mut Vec<Value>) {
        out.clear();
        out.extend(self.columns.iter().map(|c| c.expr.eval(row)));
    }
}

/// A window row waiting for the other operators' results of the same key
/// and window.
#[derive(Debug)]
struct Pending {
    parts: Vec<Option<(Vec<f64>, bool)>>,
    left: usize,
}

/// Joins the window results of a query's operators (one per aggregated
/// column) for the same key and window into one row. The engine fires the
/// windows of one source's operators together, while processing the same
/// sample, so a row is complete within one record's outputs and nothing
/// waits across a checkpoint.
#[derive(Debug, Default)]
pub struct Join {
    pending: HashMap<(String, i64, i64), Pending>,
}

impl Join {
    /// Offers a window result of engine operator `w.op`; once every
    /// operator of `q` has given its result for `key` and the window, calls
    /// `f` with the parts in the order of [`Query::ops`]. A result of an
    /// operator that is not the query's is ignored (`None`).
    pub fn offer<R>(
        &mut self,
        q: &Query,
        key: &str,
        w: &WindowResult,
        f: impl FnOnce(&[(&[f64], bool)]) -> R,
    ) -> Option<R> {
        // With grouping sets, each set's operators in turn; the composite
        // key tells the sets' windows apart.
        let n = q.ops.len() / q.groups.as_ref().map_or(1, |g| g.sets.len());
        let pos = q.ops.iter().position(|&op| op == w.op as usize)? % n;
        let flag = w.anomaly.is_some_and(|a| a.flag);
        if n == 1 {
            return Some(f(&[(w.values.as_slice(), flag)]));
        }
        let k = (key.to_string(), w.start, w.end);
        let p = self.pending.entry(k.clone()).or_insert_with(|| Pending {
            parts: vec![None; n],
            left: n,
        });
        if p.parts[pos].is_none() {
            p.left -= 1;
        }
        p.parts[pos] = Some((w.values.as_slice().to_vec(), flag));
        if p.left > 0 {
            return None;
        }
        let p = self.pending.remove(&k)?;
        let parts: Vec<(&[f64], bool)> = p
            .parts
            .iter()
            .flatten()
            .map(|(v, f)| (v.as_slice(), *f))
            .collect();
        Some(f(&parts))
    }

    /// Rows still waiting for an operator's result.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}
