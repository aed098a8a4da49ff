;; A scalar function: degrees Celsius to Fahrenheit.
(module
  (func (export "c_to_f") (param f64) (result f64)
    local.get 0
    f64.const 1.8
    f64.mul
    f64.const 32
    f64.add))
