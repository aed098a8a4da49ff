;; Misbehaving scalar functions, one per export, for the sandbox tests.
(module
  (memory (export "memory") 1)
  ;; An infinite loop: only fuel stops it.
  (func (export "spin") (param f64) (result f64)
    (loop $l (br $l))
    f64.const 0)
  ;; A memory bomb: grows until the cap refuses.
  (func (export "bomb") (param f64) (result f64)
    (loop $l (drop (memory.grow (i32.const 16))) (br $l))
    f64.const 0)
  ;; Traps on every call.
  (func (export "trap") (param f64) (result f64)
    unreachable)
  ;; Traps on negative input only.
  (func (export "sqrt_or_trap") (param f64) (result f64)
    (if (f64.lt (local.get 0) (f64.const 0)) (then unreachable))
    (f64.sqrt (local.get 0)))
  ;; Returns NaN: a bad output.
  (func (export "nan") (param f64) (result f64)
    f64.const nan)
  ;; Deep recursion: the interpreter's stack limit traps it.
  (func $deep (export "deep") (param f64) (result f64)
    (call $deep (local.get 0))))
