//! User functions in WebAssembly (`docs/functions.md`).
//!
//! A `[[function]]` table of a pipeline file names a module (`.wasm`), the
//! source and fields it reads, and its kind:
//!
//! - **scalar**: an export `f(f64…) -> f64` computes a new field of the
//!   source (`output`) from `fields`, before the sample enters the engine;
//!   windows and detectors read it like any other field.
//! - **keyed**: the module exports `weir_on_sample(ts: i64, v: f64)` and
//!   `weir_on_timer(at: i64, domain: i32)` and becomes an engine operator
//!   ([`keyed::WasmProcess`]) with host-owned per-key state in weir's
//!   checkpoints, event- and processing-time timers, and emitted results.
//!
//! The runtime is wasmi, an interpreter: no JIT pages (the systemd unit's
//! `MemoryDenyWriteExecute=yes` holds), the same on aarch64, and small. It
//! lives in weir-agent, not weir-core, so that the engine stays `no_std`
//! and small; the engine only sees a [`weir_core::process::KeyedProcess`].
//!
//! Sandbox: every call has a fuel budget, every instance a memory cap, and
//! every call's effects are all-or-nothing. A trap, exhausted fuel, a
//! refused `memory.grow` or a bad output is counted in the function's
//! [`Health`] and dead-lettered with the function id and reading; after
//! `max_failures` consecutive failures the function is disabled (it then
//! drops what it is given, counted as skipped) and says why in its status.

pub mod host;
pub mod keyed;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use toml::Spanned;
use weir_core::keys::KeyId;
use weir_core::spec::{OperatorKind, OperatorSpec, ProcessSpec, SourceSpec};

use crate::pipeline_file::{parse_size, ConfigError, Ctx};
use host::{CallError, Compiled, FailKind, Limits};

/// Largest module accepted, in bytes (also the limit of modules carried in
/// a signed pipeline update).
pub const MAX_MODULE_BYTES: usize = 4 << 20;

/// Dead letters kept per function (the newest).
pub const DEAD_LETTERS_KEPT: usize = 100;

/// A `[[function]]` table as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFunction {
    id: Spanned<String>,
    module: Spanned<String>,
    kind: Option<Spanned<String>>,
    source: Spanned<String>,
    fields: Spanned<Vec<String>>,
    output: Option<Spanned<String>>,
    export: Option<Spanned<String>>,
    fuel: Option<Spanned<u64>>,
    memory: Option<Spanned<String>>,
    max_state: Option<Spanned<String>>,
    max_failures: Option<Spanned<u32>>,
    columns: Option<Spanned<Vec<String>>>,
    flag: Option<bool>,
    sees_late: Option<bool>,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    config: toml::Table,
}

/// A module embedded in the pipeline text (`[modules."name.wasm"]`), as
/// `weir functions embed` writes it for a signed update.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModule {
    sha256: Spanned<String>,
    base64: Spanned<String>,
}

/// Embedded modules by the name `module` gives.
pub(crate) type RawModules = std::collections::BTreeMap<String, RawModule>;

/// Lower-case hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64 (padding optional, no whitespace).
///
/// # Errors
/// A character outside the alphabet, or a length no encoding has.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return Err("base64 of an impossible length".into());
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in s.bytes().enumerate() {
        let v = B64
            .iter()
            .position(|x| *x == c)
            .ok_or_else(|| format!("byte {i} of the base64 is not base64"))?;
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// A failed call, kept for inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The function's id.
    pub function: String,
    /// The entry point (`scalar`, `on_sample`, `on_timer`).
    pub entry: String,
    /// Engine key id (0 for scalar functions, which have no key).
    pub key: KeyId,
    /// The reading's (or timer's) timestamp.
    pub ts: i64,
    /// The reading's values (empty for a timer).
    pub reading: Vec<f64>,
    /// `trap`, `fuel`, `memory`, `bad_output` or `disabled`.
    pub reason: String,
    /// What wasmi or the host said.
    pub detail: String,
}

/// Counters and status of one function, shared by all its instances.
#[derive(Debug, Default)]
pub struct Health {
    calls: AtomicU64,
    failed: [AtomicU64; 4],
    skipped: AtomicU64,
    consecutive: AtomicU32,
    max_failures: u32,
    is_disabled: std::sync::atomic::AtomicBool,
    disabled: Mutex<Option<String>>,
    dead: Mutex<VecDeque<DeadLetter>>,
}

/// A copy of a function's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Calls made (successful or not).
    pub calls: u64,
    /// Failed calls by kind: trap, fuel, memory, bad_output.
    pub failed: [u64; 4],
    /// Inputs dropped because the function is disabled.
    pub skipped: u64,
    /// Why the function is disabled, if it is.
    pub disabled: Option<String>,
}

impl HealthReport {
    /// All failed calls.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

impl std::fmt::Display for HealthReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} calls, {} failed (", self.calls, self.failed_total())?;
        for (i, k) in FailKind::ALL.iter().enumerate() {
            write!(
                f,
                "{}{}={}",
                if i > 0 { " " } else { "" },
                k.name(),
                self.failed[i]
            )?;
        }
        write!(f, "), {} skipped", self.skipped)?;
        match &self.disabled {
            Some(r) => write!(f, ", DISABLED: {r}"),
            None => f.write_str(", enabled"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    fn new(max_failures: u32) -> Self {
        Health {
            max_failures,
            ..Default::default()
        }
    }

    /// Whether the function is disabled.
    pub fn is_disabled(&self) -> bool {
        self.is_disabled.load(Ordering::Relaxed)
    }

    /// Disables the function with a reason (logged once).
    pub fn disable(&self, why: &str) {
        let mut d = lock(&self.disabled);
        if d.is_none() {
            tracing::warn!(reason = why, "a user function is disabled");
            *d = Some(why.to_string());
            self.is_disabled.store(true, Ordering::Relaxed);
        }
    }

    fn ok(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
    }

    fn push_dead(&self, d: DeadLetter) {
        let mut q = lock(&self.dead);
        if q.len() == DEAD_LETTERS_KEPT {
            q.pop_front();
        }
        q.push_back(d);
    }

    fn failed(&self, id: &str, e: &CallError, entry: &str, key: KeyId, ts: i64, reading: &[f64]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let i = FailKind::ALL.iter().position(|k| *k == e.kind).unwrap_or(0);
        self.failed[i].fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        self.push_dead(DeadLetter {
            function: id.to_string(),
            entry: entry.to_string(),
            key,
            ts,
            reading: reading.to_vec(),
            reason: e.kind.name().to_string(),
            detail: e.detail.clone(),
        });
        if n >= self.max_failures {
            self.disable(&format!(
                "{n} consecutive failed calls, the last: {}: {}",
                e.kind.name(),
                e.detail
            ));
        }
    }

    fn skipped(&self, id: &str, key: KeyId, ts: i64, reading: &[f64]) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.push_dead(DeadLetter {
            function: id.to_string(),
            entry: "skipped".into(),
            key,
            ts,
            reading: reading.to_vec(),
            reason: "disabled".into(),
            detail: lock(&self.disabled).clone().unwrap_or_default(),
        });
    }

    /// The counters now.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            calls: self.calls.load(Ordering::Relaxed),
            failed: std::array::from_fn(|i| self.failed[i].load(Ordering::Relaxed)),
            skipped: self.skipped.load(Ordering::Relaxed),
            disabled: lock(&self.disabled).clone(),
        }
    }

    /// Takes the dead letters kept so far.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead).drain(..).collect()
    }
}

/// Scalar or keyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `f(f64…) -> f64` into a new field `output` (by index in the
    /// source's fields), reading `args` (indices).
    Scalar {
        /// The export called.
        export: String,
        /// Field indices of the arguments.
        args: Vec<usize>,
        /// Field index of the result.
        output: usize,
    },
    /// A keyed operator; `columns` name the values of the window rows it
    /// emits and `flag` says whether they carry an anomaly verdict.
    Keyed {
        /// Names of emitted window values (for output headers; the first
        /// `count` is written as an integer).
        columns: Vec<String>,
        /// Whether window rows carry a flag column.
        flag: bool,
        /// Field index it reads.
        field: usize,
        /// Whether samples behind the watermark still reach it.
        sees_late: bool,
    },
}

/// One declared function, compiled.
#[derive(Debug)]
pub struct FunctionDef {
    /// Its id (the operator id of a keyed function).
    pub id: String,
    /// The module file as written.
    pub module_path: String,
    /// The module's bytes (what a signed update carries).
    pub module: Arc<[u8]>,
    /// Index of the source it reads.
    pub source: usize,
    /// Scalar or keyed.
    pub kind: Kind,
    /// The compiled module.
    pub compiled: Compiled,
    /// Its counters, shared by all instances.
    pub health: Arc<Health>,
}

/// The functions of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct Functions {
    /// In declaration order.
    pub defs: Vec<Arc<FunctionDef>>,
    /// Live scalar instances by source, for [`Functions::with_values`].
    live: Arc<Mutex<Vec<Option<Scalars>>>>,
}

impl std::fmt::Debug for Scalars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scalars")
            .field("fns", &self.fns.len())
            .finish()
    }
}

impl Functions {
    /// Instances of the scalar functions of `source`, for a driver.
    pub fn scalars(&self, source: usize) -> Scalars {
        Scalars {
            fns: self
                .defs
                .iter()
                .filter(|d| d.source == source && matches!(d.kind, Kind::Scalar { .. }))
                .map(|d| ScalarInst {
                    inst: None,
                    def: d.clone(),
                })
                .collect(),
            args: Vec::new(),
        }
    }

    /// Calls `f` with a sample's values completed by the source's scalar
    /// functions (`weir run`): `values` as decoded, without the computed
    /// fields. A failed or disabled function's field (and those after it)
    /// is NaN, so the engine rejects the sample as non-finite; the
    /// function's [`Health`] has the failure and its dead letter.
    pub fn with_values<R>(
        &self,
        source: usize,
        ts: i64,
        values: &[f64],
        f: impl FnOnce(&[f64]) -> R,
    ) -> R {
        if !self
            .defs
            .iter()
            .any(|d| d.source == source && matches!(d.kind, Kind::Scalar { .. }))
        {
            return f(values);
        }
        let outputs = self
            .defs
            .iter()
            .filter(|d| d.source == source && matches!(d.kind, Kind::Scalar { .. }))
            .count();
        let mut v = values.to_vec();
        v.resize(values.len() + outputs, 0.0);
        self.fill(source, ts, &mut v);
        f(&v)
    }

    /// Computes the source's scalar functions' fields of `v`, which has
    /// room for them (a SQL query's computed fields: `crate::sql::stage`).
    /// A failed or disabled function's field (and those after it) is NaN,
    /// as in [`Functions::with_values`].
    pub fn fill(&self, source: usize, ts: i64, v: &mut [f64]) {
        if !self
            .defs
            .iter()
            .any(|d| d.source == source && matches!(d.kind, Kind::Scalar { .. }))
        {
            return;
        }
        let mut live = lock(&self.live);
        if live.len() <= source {
            live.resize_with(source + 1, || None);
        }
        let sc = live[source].get_or_insert_with(|| self.scalars(source));
        if let Err(i) = sc.apply(ts, v) {
            for s in &sc.fns[i..] {
                if let Kind::Scalar { output, .. } = s.def.kind {
                    if let Some(x) = v.get_mut(output) {
                        *x = f64::NAN;
                    }
                }
            }
        }
    }

    /// The keyed function whose operator id is `id`.
    pub fn keyed(&self, id: &str) -> Option<&FunctionDef> {
        self.defs
            .iter()
            .find(|d| d.id == id && matches!(d.kind, Kind::Keyed { .. }))
            .map(|d| &**d)
    }

    /// A line per function: its counters and status.
    pub fn report(&self) -> Vec<(String, HealthReport)> {
        self.defs
            .iter()
            .map(|d| (d.id.clone(), d.health.report()))
            .collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Failed calls and inputs skipped while disabled, over all functions:
    /// what a pipeline update's health check counts as bad inputs.
    pub fn failures(&self) -> u64 {
        self.defs
            .iter()
            .map(|d| {
                let r = d.health.report();
                r.failed_total() + r.skipped
            })
            .sum()
    }
}

struct ScalarInst {
    def: Arc<FunctionDef>,
    inst: Option<(host::Instance, wasmi::Func)>,
}

/// Live scalar functions of one source: [`Scalars::apply`] fills in their
/// output fields.
pub struct Scalars {
    fns: Vec<ScalarInst>,
    args: Vec<f64>,
}

impl Scalars {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }

    /// Computes each function's field of `values`, in declaration order.
    ///
    /// # Errors
    /// The index (in this source's scalar functions) of the first function
    /// that failed or is disabled; the failure is counted and
    /// dead-lettered, and the sample should not reach the engine.
    pub fn apply(&mut self, ts: i64, values: &mut [f64]) -> Result<(), usize> {
        for (i, s) in self.fns.iter_mut().enumerate() {
            let Kind::Scalar {
                export,
                args,
                output,
            } = &s.def.kind
            else {
                continue;
            };
            let health = &s.def.health;
            if *output >= values.len() || args.iter().any(|a| *a >= values.len()) {
                // A plan that does not fit the row: refuse the sample
                // rather than index out of it.
                return Err(i);
            }
            self.args.clear();
            self.args.extend(args.iter().map(|a| values[*a]));
            if health.is_disabled() {
                health.skipped(&s.def.id, 0, ts, &self.args);
                return Err(i);
            }
            if s.inst.is_none() {
                let made = s.def.compiled.instantiate().and_then(|inst| {
                    let f = inst.func(export).ok_or_else(|| CallError {
                        kind: FailKind::Trap,
                        detail: format!("no export `{export}`"),
                    })?;
                    Ok((inst, f))
                });
                match made {
                    Ok(x) => s.inst = Some(x),
                    Err(e) => {
                        health.failed(&s.def.id, &e, "instantiate", 0, ts, &self.args);
                        return Err(i);
                    }
                }
            }
            let Some((inst, f)) = s.inst.as_mut() else {
                return Err(i);
            };
            match inst.call_scalar(f, &self.args) {
                Ok(v) => {
                    health.ok();
                    values[*output] = v;
                }
                Err(e) => {
                    health.failed(&s.def.id, &e, "scalar", 0, ts, &self.args);
                    if e.kind != FailKind::BadOutput {
                        s.inst = None;
                    }
                    return Err(i);
                }
            }
        }
        Ok(())
    }

    /// The id of the function at `i` (as [`Scalars::apply`] reports it).
    pub fn id(&self, i: usize) -> &str {
        self.fns.get(i).map_or("?", |s| s.def.id.as_str())
    }
}

fn config_text(
    ctx: &Ctx,
    t: &toml::Table,
    at: std::ops::Range<usize>,
) -> Result<Vec<u8>, ConfigError> {
    let mut s = String::new();
    for (k, v) in t {
        let v = match v {
            toml::Value::String(x) => x.clone(),
            toml::Value::Integer(x) => x.to_string(),
            toml::Value::Float(x) => format!("{x:?}"),
            toml::Value::Boolean(x) => x.to_string(),
            _ => {
                return Err(ctx.err(
                    Some(at),
                    format!("config `{k}` is not a string, number or boolean"),
                    "a function's config holds flat key = value pairs",
                ))
            }
        };
        if k.contains(['=', '\n']) || v.contains('\n') {
            return Err(ctx.err(
                Some(at),
                format!("config `{k}` contains `=` in its name or a newline"),
                "use plain names and one-line values",
            ));
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&v);
        s.push('\n');
    }
    Ok(s.into_bytes())
}

/// A scalar function for the SQL front end (`CREATE FUNCTION`): `export`
/// of `bytes` computes field `output` of source `source` from `args`.
///
/// # Errors
/// Not a valid module, or no such export `f(f64…) -> f64`.
pub fn scalar_def(
    id: &str,
    module_path: &str,
    bytes: Vec<u8>,
    source: usize,
    export: &str,
    args: Vec<usize>,
    output: usize,
) -> Result<Arc<FunctionDef>, String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "`{module_path}` is {} bytes; the limit is {MAX_MODULE_BYTES}",
            bytes.len()
        ));
    }
    let compiled = Compiled::new(&bytes, Limits::default(), Vec::new())
        .map_err(|e| format!("`{module_path}` is not a valid WebAssembly module: {e}"))?;
    compiled
        .instantiate()
        .map_err(|e| format!("`{module_path}` does not instantiate: {}", e.detail))?;
    let ok = compiled.exports().any(|(n, t)| {
        n == export
            && t.params().len() == args.len()
            && t.params().iter().all(|p| *p == wasmi::ValType::F64)
            && t.results() == [wasmi::ValType::F64]
    });
    if !ok {
        if compiled.instantiate().is_ok_and(|i| i.is_keyed()) {
            return Err(format!(
                "`{export}` is a keyed function (`{module_path}` exports weir_on_sample), not a scalar one: call it as a table function, FROM TABLE({export}(TABLE t PARTITION BY key, DESCRIPTOR(rowtime), DESCRIPTOR(field), …))"
            ));
        }
        return Err(format!(
            "`{module_path}` exports no function `{export}` taking {} f64 and returning one f64",
            args.len()
        ));
    }
    Ok(Arc::new(FunctionDef {
        id: id.to_string(),
        module_path: module_path.to_string(),
        module: bytes.into(),
        source,
        kind: Kind::Scalar {
            export: export.to_string(),
            args,
            output,
        },
        compiled,
        health: Arc::new(Health::new(100)),
    }))
}

/// What a keyed function is called with from SQL (a table function):
/// see [`keyed_def`].
#[derive(Clone, Debug, Default)]
pub struct KeyedArgs {
    /// Field index it reads.
    pub field: usize,
    /// Names of the values of its window rows.
    pub columns: Vec<String>,
    /// Whether its window rows carry a flag.
    pub flag: bool,
    /// Whether samples behind the watermark still reach it.
    pub sees_late: bool,
    /// `name=value` lines handed to the guest, in name order (as a TOML
    /// `config` table gives them).
    pub config: Vec<(String, String)>,
}

/// A keyed function for the SQL front end (a table function over
/// `CREATE FUNCTION id AS 'module'`): the same definition a keyed
/// `[[function]]` table with the same id builds.
///
/// # Errors
/// Not a valid module, or not a keyed one (then it says how to call a
/// scalar function).
pub fn keyed_def(
    id: &str,
    module_path: &str,
    bytes: Vec<u8>,
    source: usize,
    a: KeyedArgs,
) -> Result<Arc<FunctionDef>, String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "`{module_path}` is {} bytes; the limit is {MAX_MODULE_BYTES}",
            bytes.len()
        ));
    }
    let mut config = a.config.clone();
    config.sort();
    let mut text = String::new();
    for (k, v) in &config {
        if k.contains(['=', '\n']) || v.contains('\n') {
            return Err(format!(
                "config `{k}` contains `=` in its name or a newline"
            ));
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    let compiled = Compiled::new(&bytes, Limits::default(), text.into_bytes())
        .map_err(|e| format!("`{module_path}` is not a valid WebAssembly module: {e}"))?;
    let inst = compiled
        .instantiate()
        .map_err(|e| format!("`{module_path}` does not instantiate: {}", e.detail))?;
    if !inst.is_keyed() {
        return Err(format!(
            "`{id}` is a scalar function (`{module_path}` exports no weir_on_sample(i64, f64)), not a keyed one: call it in an expression, e.g. AVG({id}(x)) or WHERE {id}(x) > 0"
        ));
    }
    drop(inst);
    if a.columns.len() > weir_core::spec::MAX_AGGS {
        return Err(format!("at most {} columns", weir_core::spec::MAX_AGGS));
    }
    Ok(Arc::new(FunctionDef {
        id: id.to_string(),
        module_path: module_path.to_string(),
        module: bytes.into(),
        source,
        kind: Kind::Keyed {
            columns: a.columns,
            flag: a.flag,
            field: a.field,
            sees_late: a.sees_late,
        },
        compiled,
        health: Arc::new(Health::new(100)),
    }))
}

/// The engine operator of a keyed function (`None` for a scalar one): id
/// the function's id, reading `field` of `source`.
pub fn keyed_operator(def: &Arc<FunctionDef>, source: &str, field: &str) -> Option<OperatorSpec> {
    let Kind::Keyed { columns, .. } = &def.kind else {
        return None;
    };
    let d = def.clone();
    Some(OperatorSpec {
        id: def.id.clone(),
        source: source.to_string(),
        field: field.to_string(),
        kind: OperatorKind::Process(ProcessSpec {
            state_type: keyed::STATE_TYPE.to_string(),
            factory: weir_core::process::ProcessFactory(Arc::new(move || {
                Box::new(keyed::WasmProcess::new(d.clone()))
            })),
            columns: columns.clone(),
        }),
    })
}

impl Functions {
    /// Functions from definitions.
    pub fn from_defs(defs: Vec<Arc<FunctionDef>>) -> Self {
        Functions {
            defs,
            live: Default::default(),
        }
    }
}

/// Reads a module file named in a pipeline (relative to the pipeline
/// file's directory).
///
/// # Errors
/// It cannot be read or is larger than [`MAX_MODULE_BYTES`].
pub fn read_module(pipeline_file: &str, module: &str) -> Result<Vec<u8>, String> {
    let base = Path::new(pipeline_file)
        .parent()
        .unwrap_or_else(|| Path::new("."));
    let p = base.join(module);
    let meta = std::fs::metadata(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if meta.len() > MAX_MODULE_BYTES as u64 {
        return Err(format!(
            "{} is {} bytes; the limit is {MAX_MODULE_BYTES}",
            p.display(),
            meta.len()
        ));
    }
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// Wires the `[[function]]` tables of a pipeline: scalar functions add
/// their output field to their source, keyed ones add an operator.
/// `modules` supplies a module's bytes by the name written in the file.
pub(crate) fn wire(
    ctx: &Ctx,
    raw: &[RawFunction],
    sources: &mut [SourceSpec],
    operators: &mut Vec<OperatorSpec>,
    inline: &RawModules,
    modules: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Functions, ConfigError> {
    for (name, m) in inline {
        if !raw.iter().any(|f| f.module.get_ref() == name) {
            return Err(ctx.err(
                Some(m.sha256.span()),
                format!("embedded module `{name}` is used by no [[function]]"),
                "remove it, or name it in a function's `module`",
            ));
        }
    }
    let mut defs: Vec<Arc<FunctionDef>> = Vec::new();
    for f in raw {
        let id = f.id.get_ref();
        if id.is_empty()
            || defs.iter().any(|d| &d.id == id)
            || operators.iter().any(|o| &o.id == id)
        {
            return Err(ctx.err(
                Some(f.id.span()),
                format!("function id `{id}` is empty or already used"),
                "give each function and operator its own id",
            ));
        }
        let Some(si) = sources.iter().position(|s| &s.name == f.source.get_ref()) else {
            return Err(ctx.err(
                Some(f.source.span()),
                format!("no source named `{}`", f.source.get_ref()),
                "name one of the [[source]] tables",
            ));
        };
        let mut args = Vec::new();
        for n in f.fields.get_ref() {
            match sources[si].fields.iter().position(|x| x == n) {
                Some(i) => args.push(i),
                None => {
                    return Err(ctx.err(
                        Some(f.fields.span()),
                        format!("source `{}` has no field `{n}`", sources[si].name),
                        format!(
                            "use fields of the source: {}",
                            sources[si].fields.join(", ")
                        ),
                    ))
                }
            }
        }
        let mut limits = Limits::default();
        if let Some(x) = &f.fuel {
            if *x.get_ref() == 0 {
                return Err(ctx.err(
                    Some(x.span()),
                    "fuel must be positive",
                    "e.g. fuel = 1000000",
                ));
            }
            limits.fuel = *x.get_ref();
        }
        for (v, slot, min, what) in [
            (&f.memory, &mut limits.memory, 1usize << 16, "memory"),
            (&f.max_state, &mut limits.max_state, 1, "max_state"),
        ] {
            if let Some(x) = v {
                match parse_size(x.get_ref()) {
                    Some(n) if n >= min => *slot = n,
                    _ => {
                        return Err(ctx.err(
                            Some(x.span()),
                            format!("{what} is not a size of at least {min} bytes"),
                            "write a size such as \"16MiB\" or \"64KiB\"",
                        ))
                    }
                }
            }
        }
        let config = config_text(ctx, &f.config, f.id.span())?;
        let bytes = match inline.get(f.module.get_ref()) {
            Some(m) => {
                let b = base64_decode(m.base64.get_ref()).map_err(|e| {
                    ctx.err(Some(m.base64.span()), e, "write the module with `weir functions embed`")
                })?;
                if &sha256_hex(&b) != m.sha256.get_ref() {
                    return Err(ctx.err(
                        Some(m.sha256.span()),
                        format!("embedded module `{}` does not match its sha256", f.module.get_ref()),
                        "the module's bytes were changed: embed it again",
                    ));
                }
                b
            }
            None => modules(f.module.get_ref()).map_err(|e| {
                ctx.err(
                    Some(f.module.span()),
                    e,
                    "module is a .wasm file, relative to the pipeline file (or embedded with `weir functions embed`)",
                )
            })?,
        };
        if let Some(h) = &f.sha256 {
            if &sha256_hex(&bytes) != h.get_ref() {
                return Err(ctx.err(
                    Some(h.span()),
                    format!(
                        "module `{}` does not match sha256 {}",
                        f.module.get_ref(),
                        h.get_ref()
                    ),
                    "rebuild the module, or update the hash",
                ));
            }
        }
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ctx.err(
                Some(f.module.span()),
                format!(
                    "the module is {} bytes; the limit is {MAX_MODULE_BYTES}",
                    bytes.len()
                ),
                "build it with --release and opt-level = \"s\"",
            ));
        }
        let compiled = Compiled::new(&bytes, limits, config).map_err(|e| {
            ctx.err(
                Some(f.module.span()),
                format!(
                    "`{}` is not a valid WebAssembly module: {e}",
                    f.module.get_ref()
                ),
                "build it for --target wasm32-unknown-unknown",
            )
        })?;
        // Instantiating once checks the imports and the start function.
        let inst = compiled.instantiate().map_err(|e| {
            ctx.err(
                Some(f.module.span()),
                format!(
                    "`{}` does not instantiate: {}",
                    f.module.get_ref(),
                    e.detail
                ),
                "a module may import only the `weir` host functions of docs/functions.md",
            )
        })?;
        let kind_name = f.kind.as_ref().map_or("scalar", |k| k.get_ref().as_str());
        let kind = match kind_name {
            "scalar" => {
                let export = f
                    .export
                    .as_ref()
                    .map_or(id.as_str(), |e| e.get_ref().as_str());
                let ok = compiled.exports().any(|(n, t)| {
                    n == export
                        && t.params().len() == args.len()
                        && t.params().iter().all(|p| *p == wasmi::ValType::F64)
                        && t.results() == [wasmi::ValType::F64]
                });
                if !ok {
                    return Err(ctx.err(
                        Some(f.module.span()),
                        format!(
                            "the module exports no function `{export}` taking {} f64 and returning one f64",
                            args.len()
                        ),
                        "export it with #[unsafe(no_mangle)] pub extern \"C\" fn, or name it with export = \"…\"",
                    ));
                }
                let Some(out) = &f.output else {
                    return Err(ctx.err(
                        Some(f.id.span()),
                        "a scalar function needs `output`, the name of the field it computes",
                        "add output = \"value_f\" (for example)",
                    ));
                };
                if sources[si].fields.iter().any(|x| x == out.get_ref()) {
                    return Err(ctx.err(
                        Some(out.span()),
                        format!(
                            "source `{}` already has a field `{}`",
                            sources[si].name,
                            out.get_ref()
                        ),
                        "name the computed field differently",
                    ));
                }
                sources[si].fields.push(out.get_ref().clone());
                Kind::Scalar {
                    export: export.to_string(),
                    args,
                    output: sources[si].fields.len() - 1,
                }
            }
            "keyed" => {
                if !inst.is_keyed() {
                    return Err(ctx.err(
                        Some(f.module.span()),
                        "a keyed function exports weir_on_sample(i64, f64)",
                        "use weir_guest::keyed! or export it yourself",
                    ));
                }
                if args.len() != 1 {
                    return Err(ctx.err(
                        Some(f.fields.span()),
                        "a keyed function reads exactly one field",
                        "write fields = [\"value\"] (for example)",
                    ));
                }
                let columns = f
                    .columns
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default();
                if columns.len() > weir_core::spec::MAX_AGGS {
                    return Err(ctx.err(
                        f.columns.as_ref().map(|c| c.span()),
                        format!("at most {} columns", weir_core::spec::MAX_AGGS),
                        "emit fewer values per row",
                    ));
                }
                Kind::Keyed {
                    columns,
                    flag: f.flag.unwrap_or(false),
                    field: args[0],
                    sees_late: f.sees_late.unwrap_or(false),
                }
            }
            o => {
                return Err(ctx.err(
                    f.kind.as_ref().map(|k| k.span()),
                    format!("unknown function kind `{o}`"),
                    "use \"scalar\" or \"keyed\"",
                ))
            }
        };
        drop(inst);
        let def = Arc::new(FunctionDef {
            id: id.clone(),
            module_path: f.module.get_ref().clone(),
            module: bytes.into(),
            source: si,
            kind,
            compiled,
            health: Arc::new(Health::new(
                f.max_failures
                    .as_ref()
                    .map_or(100, |m| *m.get_ref().max(&1)),
            )),
        });
        if let Kind::Keyed { field, .. } = def.kind {
            operators.extend(keyed_operator(
                &def,
                &sources[si].name,
                &sources[si].fields[field],
            ));
        }
        defs.push(def);
    }
    Ok(Functions {
        defs,
        live: Default::default(),
    })
}

/// Prints each function's counters and status, then up to `show` of its
/// dead letters, to stderr (`weir replay`); `key_name` names a keyed
/// function's key.
pub fn print_report(fns: &Functions, show: u64, key_name: impl Fn(KeyId) -> String) {
    for d in &fns.defs {
        eprintln!("weir replay: function {}: {}", d.id, d.health.report());
        for l in d.health.take_dead_letters().iter().take(show as usize) {
            let key = match d.kind {
                Kind::Keyed { .. } => format!(" key `{}`", key_name(l.key)),
                Kind::Scalar { .. } => String::new(),
            };
            eprintln!(
                "weir replay: dead letter: function {} {}{key} ts {} reading {:?}: {}: {}",
                l.function, l.entry, l.ts, l.reading, l.reason, l.detail
            );
        }
    }
}

#[cfg(test)]
mod tests;

/// Appends each function's module to pipeline `text` as an embedded
/// `[modules."name"]` table (base64 and SHA-256), so that the text alone,
/// signed as a pipeline update, carries the modules (`weir functions
/// embed`). `file` names the pipeline, for module paths and errors.
///
/// # Errors
/// The pipeline does not parse, already embeds modules, or a module cannot
/// be read.
pub fn embed(file: &str, text: &str) -> Result<String, String> {
    if crate::sql::looks_like_sql(file, text) {
        return embed_sql(file, text);
    }
    let pf = crate::pipeline_file::parse(file, text).map_err(|e| e.to_string())?;
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if table.contains_key("modules") {
        return Err(format!("{file}: already embeds its modules"));
    }
    let mut out = text.trim_end().to_string();
    out.push_str("\n\n# User-function modules, embedded by `weir functions embed`.\n");
    let mut done = std::collections::BTreeSet::new();
    for d in &pf.functions.defs {
        if !done.insert(d.module_path.clone()) {
            continue;
        }
        let name = format!(
            "\"{}\"",
            d.module_path.replace('\\', "\\\\").replace('"', "\\\"")
        );
        out.push_str(&format!(
            "[modules.{name}]\nsha256 = \"{}\"\nbase64 = \"{}\"\n",
            sha256_hex(&d.module),
            base64_encode(&d.module)
        ));
    }
    // The result must load without the files.
    crate::pipeline_file::parse("embedded.toml", &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`embed`] for SQL text: a comment line per module
/// ([`crate::sql::MODULE_LINE`]), which `CREATE FUNCTION` then reads
/// instead of the file.
fn embed_sql(file: &str, text: &str) -> Result<String, String> {
    if text
        .lines()
        .any(|l| l.trim_start().starts_with(crate::sql::MODULE_LINE))
    {
        return Err(format!("{file}: already embeds its modules"));
    }
    let p = crate::sql::parse(file, text).map_err(|e| e.to_string())?;
    let mut out = text.trim_end().to_string();
    out.push_str("\n\n-- User-function modules, embedded by `weir functions embed`.\n");
    let mut done = std::collections::BTreeSet::new();
    for d in &p.pipeline.functions.defs {
        if !done.insert(d.module_path.clone()) {
            continue;
        }
        if d.module_path.contains(['\n', '\r']) {
            return Err(format!(
                "{file}: module name {:?} holds a line break",
                d.module_path
            ));
        }
        out.push_str(&format!(
            "{}sha256={} base64={} {}\n",
            crate::sql::MODULE_LINE,
            sha256_hex(&d.module),
            base64_encode(&d.module),
            d.module_path
        ));
    }
    // The result must load without the files.
    crate::sql::parse("embedded.sql", &out).map_err(|e| e.to_string())?;
    Ok(out)
}
