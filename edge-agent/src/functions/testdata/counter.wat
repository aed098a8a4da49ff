;; A keyed function: per key and per second of event time, the count and
;; the sum of the readings, emitted by an event-time timer at the end of
;; the second (emit(ts = end, value = sum, tag = count)). Two seconds can
;; be open at once (the engine routes a sample before the watermark it
;; brings fires timers), so the state holds two slots, by the parity of
;; the second: [count, sum] at 0 and at 16. The state is cleared when both
;; are empty. A negative reading makes it write its state and then trap:
;; the host must discard that write (and the timer).
(module
  (import "weir" "state_read" (func $sr (param i32 i32) (result i32)))
  (import "weir" "state_write" (func $sw (param i32 i32)))
  (import "weir" "timer_event" (func $te (param i64)))
  (import "weir" "emit" (func $emit (param i64 f64 i32)))
  (memory (export "memory") 1)
  (func $slot (param $sec i64) (result i32)
    (i32.shl (i32.wrap_i64 (i64.and (local.get $sec) (i64.const 1))) (i32.const 4)))
  (func (export "weir_on_sample") (param $ts i64) (param $v f64) (local $o i32) (local $sec i64)
    (if (i32.lt_s (call $sr (i32.const 0) (i32.const 32)) (i32.const 32))
      (then
        (f64.store (i32.const 0) (f64.const 0))
        (f64.store (i32.const 8) (f64.const 0))
        (f64.store (i32.const 16) (f64.const 0))
        (f64.store (i32.const 24) (f64.const 0))))
    (local.set $sec (i64.div_s (local.get $ts) (i64.const 1000)))
    (local.set $o (call $slot (local.get $sec)))
    (f64.store (local.get $o) (f64.add (f64.load (local.get $o)) (f64.const 1)))
    (f64.store offset=8 (local.get $o)
      (f64.add (f64.load offset=8 (local.get $o)) (local.get $v)))
    (call $sw (i32.const 0) (i32.const 32))
    (if (f64.lt (local.get $v) (f64.const 0)) (then unreachable))
    (call $te (i64.mul (i64.add (local.get $sec) (i64.const 1)) (i64.const 1000))))
  (func (export "weir_on_timer") (param $at i64) (param $d i32) (local $o i32)
    (if (i32.eq (call $sr (i32.const 0) (i32.const 32)) (i32.const 32))
      (then
        (local.set $o
          (call $slot (i64.sub (i64.div_s (local.get $at) (i64.const 1000)) (i64.const 1))))
        (if (f64.gt (f64.load (local.get $o)) (f64.const 0))
          (then
            (call $emit
              (local.get $at)
              (f64.load offset=8 (local.get $o))
              (i32.trunc_f64_s (f64.load (local.get $o))))))
        (f64.store (local.get $o) (f64.const 0))
        (f64.store offset=8 (local.get $o) (f64.const 0))
        (if (f64.eq (f64.add (f64.load (i32.const 0)) (f64.load (i32.const 16))) (f64.const 0))
          (then (call $sw (i32.const 0) (i32.const 0)))
          (else (call $sw (i32.const 0) (i32.const 32))))))))
