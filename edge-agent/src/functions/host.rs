//! The wasmi host: one sandboxed instance of a user module, the host calls
//! it may import (module `weir`), and the per-call bookkeeping that makes a
//! call all-or-nothing.
//!
//! A call runs with a fresh fuel budget; the instance's memory is capped by
//! a [`wasmi::StoreLimits`] that traps on a refused `memory.grow`. What the
//! guest asks for during a call (state write, timers, emitted results) is
//! collected here and applied by the caller only if the call returns
//! normally and everything it asked for is well-formed.

use std::sync::Arc;

use wasmi::{
    Caller, Config, Engine, Extern, Func, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, TypedFunc, Val,
};

/// Why a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The guest trapped (`unreachable`, a bad memory access, a Rust panic,
    /// stack exhaustion, …).
    Trap,
    /// The call used up its fuel budget (a runaway loop).
    Fuel,
    /// The guest tried to grow its memory past the cap.
    Memory,
    /// The call returned, but what it returned or emitted is not accepted
    /// (a non-finite number, an oversized state, too many emits or timers).
    BadOutput,
}

impl FailKind {
    /// All kinds, in counter order.
    pub const ALL: [FailKind; 4] = [
        FailKind::Trap,
        FailKind::Fuel,
        FailKind::Memory,
        FailKind::BadOutput,
    ];

    /// Short name for counters and dead letters.
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Trap => "trap",
            FailKind::Fuel => "fuel",
            FailKind::Memory => "memory",
            FailKind::BadOutput => "bad_output",
        }
    }
}

/// A failed call: its kind and what wasmi or the host said.
#[derive(Clone, Debug)]
pub struct CallError {
    /// The kind, for counters.
    pub kind: FailKind,
    /// The detail, for dead letters.
    pub detail: String,
}

/// Limits of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (wasmi fuel: about one unit per instruction).
    pub fuel: u64,
    /// Linear memory cap in bytes.
    pub memory: usize,
    /// Largest state blob of one key, in bytes.
    pub max_state: usize,
    /// Most results one call may emit.
    pub max_emits: usize,
    /// Most timer operations one call may make.
    pub max_timers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000,
            memory: 16 << 20,
            max_state: 64 << 10,
            max_emits: 256,
            max_timers: 64,
        }
    }
}

/// A timer request of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerOp {
    /// Register an event-time timer.
    Event(i64),
    /// Register a processing-time timer.
    Processing(i64),
    /// Delete an event-time timer.
    DeleteEvent(i64),
    /// Delete a processing-time timer.
    DeleteProcessing(i64),
}

/// A result one call emitted.
#[derive(Clone, Debug, PartialEq)]
pub enum Emit {
    /// `weir.emit(ts, value, tag)`.
    Value {
        /// Timestamp.
        ts: i64,
        /// Value.
        value: f64,
        /// Tag.
        tag: u32,
    },
    /// `weir.emit_window(start, end, ptr, n, flag, score)`.
    Window {
        /// Window start.
        start: i64,
        /// Window end.
        end: i64,
        /// The values.
        values: Vec<f64>,
        /// -1 no verdict, 0 not flagged, 1 flagged.
        flag: i32,
        /// The verdict's score.
        score: f64,
    },
}

/// What the host functions see: the call's inputs and what it asked for.
pub struct HostData {
    limits: StoreLimits,
    lim: Limits,
    config: Arc<[u8]>,
    /// The current key's state (input); untouched by the guest.
    pub state_in: Vec<u8>,
    /// What `state_write` wrote, if it did.
    pub state_out: Vec<u8>,
    /// Whether `state_write` was called.
    pub state_written: bool,
    /// Timer requests.
    pub timers: Vec<TimerOp>,
    /// Emitted results.
    pub emits: Vec<Emit>,
    /// The driver's clock.
    pub now: i64,
    /// The watermark.
    pub watermark: i64,
    /// The key id.
    pub key: u32,
    /// A host-detected misuse that failed the call.
    pub misuse: Option<String>,
    memory: Option<Memory>,
}

impl HostData {
    fn reset(&mut self) {
        self.state_written = false;
        self.timers.clear();
        self.emits.clear();
        self.misuse = None;
    }
}

/// A compiled module with its limits and config, ready to instantiate.
pub struct Compiled {
    engine: Engine,
    module: Module,
    linker: Linker<HostData>,
    /// The limits of each instance.
    pub limits: Limits,
    config: Arc<[u8]>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("limits", &self.limits)
            .finish()
    }
}

fn misuse(caller: &mut Caller<'_, HostData>, msg: String) -> wasmi::Error {
    caller.data_mut().misuse = Some(msg.clone());
    wasmi::Error::new(msg)
}

/// The instance's exported memory (looked up once, then cached).
fn memory(caller: &mut Caller<'_, HostData>) -> Option<Memory> {
    if let Some(m) = caller.data().memory {
        return Some(m);
    }
    let m = match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    };
    caller.data_mut().memory = m;
    m
}

fn read_bytes(
    caller: &mut Caller<'_, HostData>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Vec<u8>, wasmi::Error> {
    let Some(mem) = memory(&mut *caller) else {
        return Err(misuse(caller, "the module exports no `memory`".into()));
    };
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(&*caller);
    match p.checked_add(l).and_then(|e| data.get(p..e)) {
        Some(b) => Ok(b.to_vec()),
        None => Err(misuse(
            caller,
            format!("{what}: bytes {p}..{p}+{l} are outside the guest's memory"),
        )),
    }
}

fn write_bytes(
    caller: &mut Caller<'_, HostData>,
    ptr: i32,
    src: &[u8],
    what: &str,
) -> Result<(), wasmi::Error> {
    let Some(mem) = memory(&mut *caller) else {
        return Err(misuse(caller, "the module exports no `memory`".into()));
    };
    let p = ptr as u32 as usize;
    let data = mem.data_mut(&mut *caller);
    match p.checked_add(src.len()).and_then(|e| data.get_mut(p..e)) {
        Some(d) => {
            d.copy_from_slice(src);
            Ok(())
        }
        None => Err(misuse(
            caller,
            format!("{what}: the buffer at {p} is outside the guest's memory"),
        )),
    }
}

fn push_timer(caller: &mut Caller<'_, HostData>, t: TimerOp) -> Result<(), wasmi::Error> {
    let max = caller.data().lim.max_timers;
    if caller.data().timers.len() >= max {
        return Err(misuse(
            caller,
            format!("more than {max} timer operations in one call"),
        ));
    }
    caller.data_mut().timers.push(t);
    Ok(())
}

fn push_emit(caller: &mut Caller<'_, HostData>, e: Emit) -> Result<(), wasmi::Error> {
    let max = caller.data().lim.max_emits;
    if caller.data().emits.len() >= max {
        return Err(misuse(caller, format!("more than {max} emits in one call")));
    }
    caller.data_mut().emits.push(e);
    Ok(())
}

fn linker(engine: &Engine) -> Result<Linker<HostData>, wasmi::Error> {
    let mut l = Linker::<HostData>::new(engine);
    l.func_wrap("weir", "state_len", |c: Caller<'_, HostData>| -> i32 {
        c.data().state_in.len() as i32
    })?;
    l.func_wrap(
        "weir",
        "state_read",
        |mut c: Caller<'_, HostData>, ptr: i32, cap: i32| -> Result<i32, wasmi::Error> {
            let st = std::mem::take(&mut c.data_mut().state_in);
            let n = st.len().min(cap.max(0) as usize);
            let r = write_bytes(&mut c, ptr, &st[..n], "state_read");
            c.data_mut().state_in = st;
            r.map(|()| n as i32)
        },
    )?;
    l.func_wrap(
        "weir",
        "state_write",
        |mut c: Caller<'_, HostData>, ptr: i32, len: i32| -> Result<(), wasmi::Error> {
            let max = c.data().lim.max_state;
            if len < 0 || len as usize > max {
                return Err(misuse(
                    &mut c,
                    format!("state_write of {len} bytes: the limit is {max}"),
                ));
            }
            let Some(mem) = memory(&mut c) else {
                return Err(misuse(&mut c, "the module exports no `memory`".into()));
            };
            let (p, l) = (ptr as u32 as usize, len as usize);
            let (data, d) = mem.data_and_store_mut(&mut c);
            match p.checked_add(l).and_then(|e| data.get(p..e)) {
                Some(b) => {
                    d.state_out.clear();
                    d.state_out.extend_from_slice(b);
                    d.state_written = true;
                    Ok(())
                }
                None => Err(misuse(
                    &mut c,
                    format!("state_write: bytes {p}..{p}+{l} are outside the guest's memory"),
                )),
            }
        },
    )?;
    l.func_wrap("weir", "config_len", |c: Caller<'_, HostData>| -> i32 {
        c.data().config.len() as i32
    })?;
    l.func_wrap(
        "weir",
        "config_read",
        |mut c: Caller<'_, HostData>, ptr: i32, cap: i32| -> Result<i32, wasmi::Error> {
            let cfg = c.data().config.clone();
            let n = cfg.len().min(cap.max(0) as usize);
            write_bytes(&mut c, ptr, &cfg[..n], "config_read").map(|()| n as i32)
        },
    )?;
    l.func_wrap("weir", "now", |c: Caller<'_, HostData>| -> i64 {
        c.data().now
    })?;
    l.func_wrap("weir", "watermark", |c: Caller<'_, HostData>| -> i64 {
        c.data().watermark
    })?;
    l.func_wrap("weir", "key_id", |c: Caller<'_, HostData>| -> i32 {
        c.data().key as i32
    })?;
    l.func_wrap(
        "weir",
        "timer_event",
        |mut c: Caller<'_, HostData>, at: i64| push_timer(&mut c, TimerOp::Event(at)),
    )?;
    l.func_wrap(
        "weir",
        "timer_processing",
        |mut c: Caller<'_, HostData>, at: i64| push_timer(&mut c, TimerOp::Processing(at)),
    )?;
    l.func_wrap(
        "weir",
        "timer_delete",
        |mut c: Caller<'_, HostData>, at: i64, domain: i32| {
            push_timer(
                &mut c,
                if domain == 0 {
                    TimerOp::DeleteEvent(at)
                } else {
                    TimerOp::DeleteProcessing(at)
                },
            )
        },
    )?;
    l.func_wrap(
        "weir",
        "emit",
        |mut c: Caller<'_, HostData>, ts: i64, value: f64, tag: i32| {
            push_emit(
                &mut c,
                Emit::Value {
                    ts,
                    value,
                    tag: tag as u32,
                },
            )
        },
    )?;
    l.func_wrap(
        "weir",
        "emit_window",
        |mut c: Caller<'_, HostData>,
         start: i64,
         end: i64,
         ptr: i32,
         n: i32,
         flag: i32,
         score: f64|
         -> Result<(), wasmi::Error> {
            if !(0..=weir_core::spec::MAX_AGGS as i32).contains(&n) {
                return Err(misuse(
                    &mut c,
                    format!(
                        "emit_window with {n} values: 0 to {} allowed",
                        weir_core::spec::MAX_AGGS
                    ),
                ));
            }
            let b = read_bytes(&mut c, ptr, n * 8, "emit_window")?;
            let values = b
                .chunks_exact(8)
                .map(|x| f64::from_le_bytes(x.try_into().unwrap_or([0; 8])))
                .collect();
            push_emit(
                &mut c,
                Emit::Window {
                    start,
                    end,
                    values,
                    flag,
                    score,
                },
            )
        },
    )?;
    Ok(l)
}

fn classify(e: &wasmi::Error, data: &HostData) -> CallError {
    if let Some(m) = &data.misuse {
        return CallError {
            kind: FailKind::BadOutput,
            detail: m.clone(),
        };
    }
    let detail = e.to_string();
    let kind = if matches!(e.as_trap_code(), Some(wasmi::TrapCode::OutOfFuel)) {
        FailKind::Fuel
    } else if matches!(
        e.as_trap_code(),
        Some(wasmi::TrapCode::GrowthOperationLimited)
    ) || matches!(e.kind(), wasmi::errors::ErrorKind::Memory(_))
    {
        FailKind::Memory
    } else {
        FailKind::Trap
    };
    CallError { kind, detail }
}

impl Compiled {
    /// Validates and compiles `wasm`; `config` is handed to the guest by
    /// `config_read`.
    ///
    /// # Errors
    /// The bytes are not a valid WebAssembly module (the message says why).
    pub fn new(wasm: &[u8], limits: Limits, config: Vec<u8>) -> Result<Self, String> {
        let mut cfg = Config::default();
        cfg.consume_fuel(true);
        let engine = Engine::new(&cfg);
        let module = Module::new(&engine, wasm).map_err(|e| e.to_string())?;
        let linker = linker(&engine).map_err(|e| e.to_string())?;
        Ok(Compiled {
            engine,
            module,
            linker,
            limits,
            config: config.into(),
        })
    }

    /// The module's exported functions with their parameter and result
    /// counts, all `f64` or not.
    pub fn exports(&self) -> impl Iterator<Item = (&str, wasmi::FuncType)> {
        self.module.exports().filter_map(|e| match e.ty() {
            wasmi::ExternType::Func(f) => Some((e.name(), f.clone())),
            _ => None,
        })
    }

    /// The state-in-a-buffer entry points, if the module has them: its
    /// `weir_state_buf(cap) -> ptr` is called once for a buffer of `cap`
    /// bytes, checked to lie in its memory.
    fn fast_path(
        store: &mut Store<HostData>,
        inst: &wasmi::Instance,
        cap: usize,
    ) -> Result<Option<Fast>, CallError> {
        let (Ok(buf), Ok(sample)) = (
            inst.get_typed_func::<i32, i32>(&*store, "weir_state_buf"),
            inst.get_typed_func::<(i64, f64, i64, i64, i32), i32>(&*store, "weir_on_sample_state"),
        ) else {
            return Ok(None);
        };
        let timer = inst
            .get_typed_func::<(i64, i32, i64, i64, i32), i32>(&*store, "weir_on_timer_state")
            .ok();
        let ptr = buf
            .call(&mut *store, cap as i32)
            .map_err(|e| classify(&e, store.data()))?;
        let Some(mem) = inst.get_memory(&*store, "memory") else {
            return Err(CallError {
                kind: FailKind::Trap,
                detail: "the module exports no `memory`".into(),
            });
        };
        let p = ptr as u32 as usize;
        if p.checked_add(cap)
            .is_none_or(|e| e > mem.data(&*store).len())
        {
            return Err(CallError {
                kind: FailKind::BadOutput,
                detail: format!("weir_state_buf({cap}) returned {ptr}, outside the guest's memory"),
            });
        }
        Ok(Some(Fast {
            buf: p,
            cap,
            mem,
            sample,
            timer,
        }))
    }

    /// A fresh instance (its start function runs under the fuel budget).
    ///
    /// # Errors
    /// An import weir does not provide, a start function that fails, or a
    /// memory declared larger than the cap.
    pub fn instantiate(&self) -> Result<Instance, CallError> {
        let data = HostData {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory)
                .memories(1)
                .tables(4)
                .instances(1)
                .trap_on_grow_failure(true)
                .build(),
            lim: self.limits,
            config: self.config.clone(),
            state_in: Vec::new(),
            state_out: Vec::new(),
            state_written: false,
            timers: Vec::new(),
            emits: Vec::new(),
            now: 0,
            watermark: i64::MIN,
            key: 0,
            misuse: None,
            memory: None,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        let fail = |e: wasmi::Error, s: &Store<HostData>| classify(&e, s.data());
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| fail(e, &store))?;
        let inst = match self.linker.instantiate_and_start(&mut store, &self.module) {
            Ok(i) => i,
            Err(e) => return Err(fail(e, &store)),
        };
        let on_sample = inst
            .get_typed_func::<(i64, f64), ()>(&store, "weir_on_sample")
            .ok();
        let on_timer = inst
            .get_typed_func::<(i64, i32), ()>(&store, "weir_on_timer")
            .ok();
        let fast = Self::fast_path(&mut store, &inst, self.limits.max_state)?;
        Ok(Instance {
            store,
            inst,
            on_sample,
            on_timer,
            fast,
            fuel: self.limits.fuel,
            args: Vec::new(),
            res: [Val::F64(0.0f64.into())],
        })
    }
}

/// One live instance.
pub struct Instance {
    store: Store<HostData>,
    inst: wasmi::Instance,
    on_sample: Option<TypedFunc<(i64, f64), ()>>,
    on_timer: Option<TypedFunc<(i64, i32), ()>>,
    fast: Option<Fast>,
    fuel: u64,
    args: Vec<Val>,
    res: [Val; 1],
}

/// `weir_on_sample_state`'s signature.
type SampleFn = TypedFunc<(i64, f64, i64, i64, i32), i32>;
/// `weir_on_timer_state`'s signature.
type TimerFn = TypedFunc<(i64, i32, i64, i64, i32), i32>;

/// The state-in-a-buffer entry points (`weir_on_sample_state(ts, v,
/// watermark, now, len) -> new len`, `weir_on_timer_state(at, domain,
/// watermark, now, len) -> new len`; -1 keeps the state as it was): the
/// key's state is copied into the guest's buffer before the call and out
/// after it, so a call makes no host call for its state.
struct Fast {
    buf: usize,
    cap: usize,
    mem: Memory,
    sample: SampleFn,
    timer: Option<TimerFn>,
}

impl Fast {
    /// Copies the key's state in; false if it does not fit the buffer.
    fn put(&self, store: &mut Store<HostData>) -> bool {
        let (data, d) = self.mem.data_and_store_mut(&mut *store);
        let n = d.state_in.len();
        if n > self.cap {
            return false;
        }
        data[self.buf..self.buf + n].copy_from_slice(&d.state_in);
        true
    }

    /// Takes the call's result: the state's new length, or -1.
    fn take(&self, store: &mut Store<HostData>, ret: i32) -> Result<(), CallError> {
        if ret == -1 {
            return Ok(());
        }
        let n = ret as usize;
        if ret < -1 || n > self.cap || n > store.data().lim.max_state {
            return Err(CallError {
                kind: FailKind::BadOutput,
                detail: format!("returned a state length of {ret} (buffer {})", self.cap),
            });
        }
        let (data, d) = self.mem.data_and_store_mut(&mut *store);
        d.state_out.clear();
        d.state_out.extend_from_slice(&data[self.buf..self.buf + n]);
        d.state_written = true;
        Ok(())
    }
}

impl Instance {
    /// The call's scratch: inputs to set and requests to read.
    pub fn data(&mut self) -> &mut HostData {
        self.store.data_mut()
    }

    /// Whether the module exports the keyed entry points.
    pub fn is_keyed(&self) -> bool {
        self.on_sample.is_some() || self.fast.is_some()
    }

    /// An exported function by name.
    pub fn func(&self, name: &str) -> Option<Func> {
        self.inst.get_func(&self.store, name)
    }

    fn prepare(&mut self) {
        self.store.data_mut().reset();
        // Fuel is enabled, so this cannot fail.
        let _ = self.store.set_fuel(self.fuel);
    }

    /// Calls a scalar function `f(f64…) -> f64`.
    ///
    /// # Errors
    /// The call failed, or returned a non-finite number.
    pub fn call_scalar(&mut self, f: &Func, args: &[f64]) -> Result<f64, CallError> {
        self.prepare();
        self.args.clear();
        self.args.extend(args.iter().map(|a| Val::F64((*a).into())));
        let r = f.call(&mut self.store, &self.args, &mut self.res);
        if let Err(e) = r {
            return Err(classify(&e, self.store.data()));
        }
        match self.res[0] {
            Val::F64(v) if f64::from(v).is_finite() => Ok(f64::from(v)),
            Val::F64(v) => Err(CallError {
                kind: FailKind::BadOutput,
                detail: format!("returned {}", f64::from(v)),
            }),
            _ => Err(CallError {
                kind: FailKind::BadOutput,
                detail: "returned a value that is not an f64".into(),
            }),
        }
    }

    /// Calls `weir_on_sample(ts, value)`.
    ///
    /// # Errors
    /// The call failed.
    pub fn call_sample(&mut self, ts: i64, value: f64) -> Result<(), CallError> {
        self.prepare();
        if let Some(fast) = &self.fast {
            return self.call_fast(fast.sample, (ts, value));
        }
        let Some(f) = self.on_sample else {
            return Err(CallError {
                kind: FailKind::Trap,
                detail: "the module exports no weir_on_sample".into(),
            });
        };
        f.call(&mut self.store, (ts, value))
            .map_err(|e| classify(&e, self.store.data()))
    }

    /// Calls `weir_on_timer(at, domain)` (0 event time, 1 processing time);
    /// a module without it ignores timers.
    ///
    /// # Errors
    /// The call failed.
    pub fn call_timer(&mut self, at: i64, domain: i32) -> Result<(), CallError> {
        self.prepare();
        if let Some(fast) = &self.fast {
            return match fast.timer {
                Some(t) => self.call_fast(t, (at, domain)),
                None => Ok(()),
            };
        }
        let Some(f) = self.on_timer else {
            return Ok(());
        };
        f.call(&mut self.store, (at, domain))
            .map_err(|e| classify(&e, self.store.data()))
    }

    fn call_fast<A: Copy>(
        &mut self,
        f: TypedFunc<(i64, A, i64, i64, i32), i32>,
        (x, a): (i64, A),
    ) -> Result<(), CallError>
    where
        (i64, A, i64, i64, i32): wasmi::WasmParams,
    {
        let Some(fast) = self.fast.as_ref() else {
            return Ok(());
        };
        if !fast.put(&mut self.store) {
            return Err(CallError {
                kind: FailKind::BadOutput,
                detail: "the key's state is larger than the guest's state buffer".into(),
            });
        }
        let d = self.store.data();
        let args = (x, a, d.watermark, d.now, d.state_in.len() as i32);
        let ret = f
            .call(&mut self.store, args)
            .map_err(|e| classify(&e, self.store.data()))?;
        fast.take(&mut self.store, ret)
    }
}
