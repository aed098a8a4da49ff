//! Unit conversions as scalar user functions: each export `f(f64…) -> f64`
//! becomes a computed field (`[[function]] kind = "scalar"`, docs/functions.md).

/// Degrees Celsius to degrees Fahrenheit.
#[unsafe(no_mangle)]
pub extern "C" fn c_to_f(c: f64) -> f64 {
    c * 1.8 + 32.0
}

/// Pounds per square inch to bar.
#[unsafe(no_mangle)]
pub extern "C" fn psi_to_bar(psi: f64) -> f64 {
    psi * 0.068_947_572_931_683_6
}

/// Power in watts from voltage (V) and current (A).
#[unsafe(no_mangle)]
pub extern "C" fn watts(volts: f64, amps: f64) -> f64 {
    volts * amps
}
