//! A keyed stateful user function as an engine operator
//! ([`weir_core::process::KeyedProcess`]).
//!
//! The host owns each key's state: a byte blob the guest reads with
//! `state_read` and replaces with `state_write`. It is encoded into weir's
//! checkpoints with the engine's timers, under the state type
//! [`STATE_TYPE`] and the function's id, so a new version of the module
//! takes over its predecessor's state. A call's effects (state, timers,
//! emits) are applied only if the call succeeds: a failed call leaves the
//! key as it was, and is counted and dead-lettered.

use std::collections::HashMap;
use std::sync::Arc;

use weir_core::detect::Verdict;
use weir_core::keys::KeyId;
use weir_core::process::{Context, KeyedProcess, TimeDomain};

use super::host::{CallError, Emit, FailKind, Instance, TimerOp};
use super::{FunctionDef, Health};

/// The state type of every keyed WebAssembly function: state is matched by
/// the function's id, whatever the module's version.
pub const STATE_TYPE: &str = "wasm-fn/1";

/// One keyed function operator.
pub struct WasmProcess {
    def: Arc<FunctionDef>,
    inst: Option<Instance>,
    states: HashMap<KeyId, Vec<u8>>,
}

impl WasmProcess {
    /// A fresh operator of `def` (instantiated now; a module that fails
    /// to instantiate makes an operator that counts and drops).
    pub fn new(def: Arc<FunctionDef>) -> Self {
        let inst = match def.compiled.instantiate() {
            Ok(i) => Some(i),
            Err(e) => {
                def.health
                    .disable(&format!("cannot instantiate: {}", e.detail));
                None
            }
        };
        WasmProcess {
            def,
            inst,
            states: HashMap::new(),
        }
    }

    fn health(&self) -> &Health {
        &self.def.health
    }

    /// Runs one call for `ctx.key()` and applies its effects if it succeeds.
    fn run(
        &mut self,
        ctx: &mut Context<'_>,
        what: &str,
        reading: &[f64],
        ts: i64,
        call: impl FnOnce(&mut Instance) -> Result<(), CallError>,
    ) {
        let health = self.def.health.clone();
        if health.is_disabled() {
            health.skipped(&self.def.id, ctx.key(), ts, reading);
            return;
        }
        let Some(inst) = self.inst.as_mut() else {
            health.skipped(&self.def.id, ctx.key(), ts, reading);
            return;
        };
        let key = ctx.key();
        let slot = self.states.entry(key).or_default();
        {
            let d = inst.data();
            std::mem::swap(&mut d.state_in, slot);
            d.now = ctx.now();
            d.watermark = ctx.watermark();
            d.key = key;
        }
        let mut res = call(inst);
        let d = inst.data();
        std::mem::swap(&mut d.state_in, slot);
        if res.is_ok() {
            res = check(&d.emits);
        }
        match res {
            Ok(()) => {
                if d.state_written {
                    std::mem::swap(slot, &mut d.state_out);
                }
                if slot.is_empty() {
                    self.states.remove(&key);
                }
                for t in d.timers.drain(..) {
                    match t {
                        TimerOp::Event(at) => ctx.register_event_timer(at),
                        TimerOp::Processing(at) => ctx.register_processing_timer(at),
                        TimerOp::DeleteEvent(at) => ctx.delete_timer(at, TimeDomain::EventTime),
                        TimerOp::DeleteProcessing(at) => {
                            ctx.delete_timer(at, TimeDomain::ProcessingTime)
                        }
                    }
                }
                for e in d.emits.drain(..) {
                    match e {
                        Emit::Value { ts, value, tag } => ctx.emit(ts, value, tag),
                        Emit::Window {
                            start,
                            end,
                            values,
                            flag,
                            score,
                        } => ctx.emit_window(
                            start,
                            end,
                            &values,
                            (flag >= 0).then_some(Verdict {
                                score,
                                flag: flag > 0,
                            }),
                        ),
                    }
                }
                health.ok();
            }
            Err(e) => {
                if slot.is_empty() {
                    self.states.remove(&key);
                }
                health.failed(&self.def.id, &e, what, key, ts, reading);
                // The guest's memory may be mid-update: start it afresh
                // (its state lives in the host, so nothing is lost).
                if e.kind != FailKind::BadOutput {
                    self.inst = self.def.compiled.instantiate().ok();
                }
            }
        }
    }
}

fn check(emits: &[Emit]) -> Result<(), CallError> {
    for e in emits {
        let ok = match e {
            Emit::Value { value, .. } => value.is_finite(),
            // NaN is how a window says "no value" (a mean of nothing).
            Emit::Window { values, score, .. } => {
                values.iter().all(|v| !v.is_infinite()) && !score.is_infinite()
            }
        };
        if !ok {
            return Err(CallError {
                kind: FailKind::BadOutput,
                detail: format!("emitted a non-finite value: {e:?}"),
            });
        }
    }
    Ok(())
}

impl KeyedProcess for WasmProcess {
    fn state_type(&self) -> &str {
        STATE_TYPE
    }

    fn on_sample(&mut self, ctx: &mut Context<'_>, ts: i64, value: f64) {
        self.run(ctx, "on_sample", &[value], ts, |i| i.call_sample(ts, value));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, at: i64, domain: TimeDomain) {
        let d = match domain {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        };
        self.run(ctx, "on_timer", &[], at, |i| i.call_timer(at, d));
    }

    fn sees_late(&self) -> bool {
        matches!(
            self.def.kind,
            super::Kind::Keyed {
                sees_late: true,
                ..
            }
        )
    }

    fn clear_key(&mut self, key: KeyId) {
        self.states.remove(&key);
    }

    fn holds_state(&self, key: KeyId) -> bool {
        self.states.contains_key(&key)
    }

    fn encode(
        &self,
        e: &mut minicbor::Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        // Sorted, so that equal states encode equally.
        let mut keys: Vec<&KeyId> = self.states.keys().collect();
        keys.sort_unstable();
        e.map(keys.len() as u64)?;
        for k in keys {
            e.u32(*k)?.bytes(&self.states[k])?;
        }
        Ok(())
    }

    fn decode(&mut self, d: &mut minicbor::Decoder<'_>) -> Result<(), minicbor::decode::Error> {
        let mut states = HashMap::new();
        let n = d
            .map()?
            .ok_or_else(|| minicbor::decode::Error::message("indefinite map"))?;
        for _ in 0..n {
            let k = d.u32()?;
            let b = d.bytes()?;
            if b.len() > self.def.compiled.limits.max_state {
                return Err(minicbor::decode::Error::message(
                    "a key's function state is larger than the limit",
                ));
            }
            states.insert(k, b.to_vec());
        }
        self.states = states;
        let _ = self.health();
        Ok(())
    }
}
