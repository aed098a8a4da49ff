//! Scalar expressions over one row: the stateless part of a query
//! (`WHERE`, `HAVING`, computed projections), evaluated with SQL's rules.
//!
//! A row is a slice of [`Value`]s; [`Expr::Col`] reads one by position.
//! `NULL` propagates through arithmetic and comparisons, `AND`/`OR`/`NOT`
//! use three-valued logic, and a filter keeps a row only when its condition
//! is `TRUE` ([`Expr::test`]). Numbers are `f64` (SQL's DOUBLE); division
//! by zero gives `NULL` rather than an infinity. Evaluation never panics
//! and never allocates except for `CAST(… AS STRING)` and string literals.
//!
//! ```
//! use weir_core::expr::{BinOp, Expr, Value};
//! // value * 2 > 10
//! let e = Expr::bin(BinOp::Gt, Expr::bin(BinOp::Mul, Expr::Col(0), Expr::num(2.0)), Expr::num(10.0));
//! assert!(e.test(&[Value::Num(6.0)]));
//! assert!(!e.test(&[Value::Null]));
//! ```

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::timefn::{self, TimeField};

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `BOOLEAN`.
    Bool(bool),
    /// Any number (`INT`, `BIGINT`, `DOUBLE`, `DECIMAL` are all held as `f64`).
    Num(f64),
    /// `STRING`.
    Str(String),
    /// A timestamp in the pipeline's ticks (ms or µs since the epoch).
    Ts(i64),
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (`NULL` when dividing by zero)
    Div,
    /// `%` (`NULL` when dividing by zero)
    Mod,
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `AND` (three-valued)
    And,
    /// `OR` (three-valued)
    Or,
}

/// Built-in scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `ABS(x)`
    Abs,
    /// `SQRT(x)` (`NULL` for x < 0)
    Sqrt,
    /// `POWER(x, y)`
    Power,
    /// `LN(x)` (`NULL` for x ≤ 0)
    Ln,
    /// `LOG10(x)` (`NULL` for x ≤ 0)
    Log10,
    /// `EXP(x)`
    Exp,
    /// `ROUND(x [, d])`: half away from zero, to `d` decimals (default 0),
    /// on the decimal that `x` reads as ([`round_decimal`])
    Round,
    /// `FLOOR(x)`
    Floor,
    /// `CEIL(x)`
    Ceil,
    /// `COALESCE(a, b, …)`: the first argument that is not `NULL`
    Coalesce,
    /// `TRUNCATE(x [, d])`: toward zero, to `d` decimals (default 0), on
    /// the decimal that `x` reads as ([`round_decimal`])
    Truncate,
    /// `SIGN(x)`: -1, 0 or 1
    Sign,
    /// `LOG2(x)` (`NULL` for x ≤ 0)
    Log2,
    /// `LOG(x)` (natural) or `LOG(b, x)` (`NULL` for x ≤ 0, b ≤ 0 or b = 1)
    Log,
    /// `SIN(x)` (radians, as every trigonometric function)
    Sin,
    /// `COS(x)`
    Cos,
    /// `TAN(x)`
    Tan,
    /// `COT(x)`: 1 / tan(x)
    Cot,
    /// `ASIN(x)`
    Asin,
    /// `ACOS(x)`
    Acos,
    /// `ATAN(x)`
    Atan,
    /// `ATAN2(y, x)`
    Atan2,
    /// `SINH(x)`
    Sinh,
    /// `COSH(x)`
    Cosh,
    /// `TANH(x)`
    Tanh,
    /// `DEGREES(x)`: radians to degrees
    Degrees,
    /// `RADIANS(x)`: degrees to radians
    Radians,
    /// `GREATEST(a, b, …)`: the largest argument (`NULL` if any is)
    Greatest,
    /// `LEAST(a, b, …)`: the smallest argument (`NULL` if any is)
    Least,
    /// `UPPER(s)`: ASCII letters
    Upper,
    /// `LOWER(s)`: ASCII letters
    Lower,
    /// `CONCAT(a, b, …)` / `a || b`: `NULL` if any argument is
    Concat,
    /// `CHAR_LENGTH(s)`: characters
    CharLength,
    /// `SUBSTRING(s, pos [, len])`: from character `pos` (1-based; 0 is 1,
    /// a negative one counts from the end), `len` characters (all without;
    /// none if negative)
    Substring,
    /// `TRIM(s, chars, side)`: the characters of `chars` off `s`'s start
    /// (`side` 1), end (2) or both (0)
    Trim,
    /// `REPLACE(s, from, to)`: every `from` replaced by `to`
    Replace,
    /// The number a text stands for in a distinct count (SQL
    /// `COUNT(DISTINCT s)` over a STRING or BOOLEAN): a string's 53-bit
    /// FNV-1a hash as a whole number (two strings share one with odds of
    /// about n²/2⁵⁴), a boolean 0 or 1, `NULL` -1, a number itself.
    DistinctKey,
    /// `EXTRACT(field FROM ts)` and its short forms (`HOUR(ts)`…), a
    /// whole number ([`crate::timefn::extract`])
    Extract(TimeField),
    /// `TIMESTAMPDIFF(unit, a, b)`: whole units from `a` to `b`
    TimestampDiff(TimeField),
    /// `TIMESTAMPADD(unit, n, ts)`, also `ts ± INTERVAL …`
    TimestampAdd(TimeField),
    /// `FLOOR(ts TO unit)`, or `CEIL` when `true`
    FloorTime(TimeField, bool),
    /// `DATE_FORMAT(ts, pattern)` ([`crate::timefn::date_format`])
    DateFormat,
}

/// The values of `args` over `row`; `None` if any is `NULL`.
fn eval_all(args: &[Expr], row: &[Value]) -> Option<Vec<Value>> {
    args.iter()
        .map(|a| match a.eval(row) {
            Value::Null => None,
            v => Some(v),
        })
        .collect()
}

/// The time functions: any `NULL` argument gives `NULL`, so does a result
/// out of range.
fn time_call(f: Func, args: &[Expr], row: &[Value]) -> Value {
    let Some(vals) = eval_all(args, row) else {
        return Value::Null;
    };
    let ts = |i: usize| match vals.get(i) {
        Some(Value::Ts(t)) => Some(*t),
        _ => None,
    };
    let int = |i: usize| match vals.get(i) {
        Some(Value::Num(x)) if x.is_finite() && x.abs() < 9.0e15 => Some(*x as i64),
        _ => None,
    };
    let v = match f {
        Func::Extract(field) => ts(0).map(|t| Value::Num(timefn::extract(t, field) as f64)),
        Func::TimestampDiff(unit) => ts(0)
            .zip(ts(1))
            .and_then(|(a, b)| timefn::timestamp_diff(unit, a, b))
            .map(|d| Value::Num(d as f64)),
        Func::TimestampAdd(unit) => int(0)
            .zip(ts(1))
            .and_then(|(n, t)| timefn::timestamp_add(unit, n, t))
            .map(Value::Ts),
        Func::FloorTime(unit, up) => ts(0)
            .and_then(|t| timefn::floor_to(t, unit, up))
            .map(Value::Ts),
        Func::DateFormat => match (ts(0), vals.get(1)) {
            (Some(t), Some(Value::Str(p))) => Some(Value::Str(timefn::date_format(t, p))),
            _ => None,
        },
        _ => None,
    };
    v.unwrap_or(Value::Null)
}

/// The string functions: any `NULL` argument gives `NULL`.
fn text_call(f: Func, args: &[Expr], row: &[Value]) -> Value {
    let Some(vals) = eval_all(args, row) else {
        return Value::Null;
    };
    let text = |i: usize| match vals.get(i) {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let int = |i: usize| match vals.get(i) {
        Some(Value::Num(x)) if x.is_finite() => Some(*x as i64),
        _ => None,
    };
    let Some(s) = text(0) else {
        return Value::Null;
    };
    match f {
        // ASCII letters only: Unicode's case tables would cost the
        // gateway binary about 30 KB (docs/sql.md).
        Func::Upper => Value::Str(s.to_ascii_uppercase()),
        Func::Lower => Value::Str(s.to_ascii_lowercase()),
        Func::Concat => {
            let mut out = String::new();
            for i in 0..vals.len() {
                match text(i) {
                    Some(t) => out.push_str(t),
                    None => return Value::Null,
                }
            }
            Value::Str(out)
        }
        Func::CharLength => Value::Num(s.chars().count() as f64),
        Func::Substring => {
            let n = s.chars().count() as i64;
            let Some(pos) = int(1) else {
                return Value::Null;
            };
            let start = match pos {
                p if p > 0 => p - 1,
                p if p < 0 => (n + p).max(0),
                _ => 0,
            };
            let len = if vals.len() > 2 {
                match int(2) {
                    Some(l) => l.max(0),
                    None => return Value::Null,
                }
            } else {
                n
            };
            Value::Str(
                s.chars()
                    .skip(start.min(n) as usize)
                    .take(len.min(n) as usize)
                    .collect(),
            )
        }
        Func::Trim => {
            let Some(chars) = text(1) else {
                return Value::Null;
            };
            let hit = |c: char| chars.contains(c);
            Value::Str(
                match int(2) {
                    Some(1) => s.trim_start_matches(hit),
                    Some(2) => s.trim_end_matches(hit),
                    _ => s.trim_matches(hit),
                }
                .to_string(),
            )
        }
        Func::Replace => match (text(1), text(2)) {
            (Some(from), Some(to)) => Value::Str(s.replace(from, to)),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Target types of `CAST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastTo {
    /// `DOUBLE`: numbers stay, booleans become 0/1, strings parse (`NULL` if they do not).
    Double,
    /// `DECIMAL(p, s)`: as `Double`, then rounded half away from zero to
    /// `s` decimals ([`round_decimal`]).
    Decimal(u8),
    /// `INT` / `BIGINT`: truncated toward zero.
    Int,
    /// `BOOLEAN`: 0 is false, other numbers true; strings `true`/`false`.
    Bool,
    /// `STRING`, written as Flink writes a value of the argument's type.
    Str(StrFrom),
}

/// The argument type of a `CAST(… AS STRING)`: Flink writes a number by
/// its type ([`to_text`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrFrom {
    /// A `STRING` or `BOOLEAN` (`TRUE` / `FALSE`), or a number written in
    /// shortest form.
    Any,
    /// `INT` / `BIGINT`: `42`.
    Int,
    /// `DOUBLE`: as Java's `Double.toString`, `42.0`, `0.001`, `1.0E7`,
    /// `1.5E-4`.
    Double,
    /// `DECIMAL(p, s)`: `s` decimals, `4.00`.
    Decimal(u8),
    /// `TIMESTAMP(3)` / `TIMESTAMP_LTZ(3)` of epoch milliseconds (UTC):
    /// `2020-04-15 08:05:00.000`.
    TimestampMs,
}

/// A number as `CAST(x AS STRING)` writes it for an argument of type `from`.
pub fn to_text(x: f64, from: StrFrom) -> String {
    match from {
        StrFrom::Double => java_double(x),
        StrFrom::Int if x.is_finite() => alloc::format!("{}", libm::trunc(x) as i64),
        StrFrom::Decimal(s) if x.is_finite() => {
            let r = round_decimal(x, s.into(), false);
            let t = alloc::format!("{:.*}", usize::from(s), r);
            // No negative zero: Java's BigDecimal has none.
            if t.starts_with('-') && t.bytes().all(|b| matches!(b, b'-' | b'0' | b'.')) {
                t[1..].to_string()
            } else {
                t
            }
        }
        StrFrom::TimestampMs if x.is_finite() => timestamp_text(x as i64),
        _ => x.to_string(),
    }
}

/// Java's `Double.toString` on the shortest decimal that reads back as
/// `x`: plain notation with at least one decimal for `1e-3 <= |x| < 1e7`,
/// else one digit, at least one decimal and `E` with the exponent.
fn java_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return alloc::format!("{sign}0.0");
    }
    // `d.ddde±n`: the shortest digits and the exponent.
    let e = alloc::format!("{:e}", libm::fabs(x));
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let ax = libm::fabs(x);
    if (1e-3..1e7).contains(&ax) {
        let point = exp + 1; // digits before the decimal point
        let (int, frac) = if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            ("0".to_string(), zeros + &digits)
        } else {
            let p = point as usize;
            if digits.len() > p {
                (digits[..p].to_string(), digits[p..].to_string())
            } else {
                (
                    digits.clone() + &"0".repeat(p - digits.len()),
                    String::new(),
                )
            }
        };
        let frac = if frac.is_empty() { "0".into() } else { frac };
        alloc::format!("{sign}{int}.{frac}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        alloc::format!("{sign}{first}.{rest}E{exp}")
    }
}

/// `YYYY-MM-DD HH:MM:SS.sss` of epoch milliseconds (UTC, proleptic
/// Gregorian calendar).
fn timestamp_text(ms: i64) -> String {
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
    alloc::format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A scalar expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Lit(Value),
    /// The row's value at this position (`NULL` if out of range).
    Col(u16),
    /// `-x`
    Neg(Box<Expr>),
    /// `NOT x` (three-valued)
    Not(Box<Expr>),
    /// `a op b`
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL`
    IsNull(Box<Expr>, bool),
    /// `x [NOT] LIKE 'pattern'` (`%` any run, `_` one character)
    Like(Box<Expr>, String, bool),
    /// `CASE WHEN c THEN r … [ELSE e] END` (a missing `ELSE` is `NULL`)
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    /// A function call.
    Call(Func, Vec<Expr>),
    /// `CAST(x AS t)`
    Cast(Box<Expr>, CastTo),
}

impl Expr {
    /// A numeric literal.
    pub fn num(v: f64) -> Expr {
        Expr::Lit(Value::Num(v))
    }

    /// `a op b`.
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }

    /// The same expression reading other columns: `f` maps each column read
    /// to its new position, or `None` if it cannot be read there (then the
    /// whole expression cannot, and the result is `None`).
    pub fn map_cols(&self, f: &dyn Fn(u16) -> Option<u16>) -> Option<Expr> {
        let b = |x: &Expr| x.map_cols(f).map(Box::new);
        Some(match self {
            Expr::Lit(v) => Expr::Lit(v.clone()),
            Expr::Col(i) => Expr::Col(f(*i)?),
            Expr::Neg(x) => Expr::Neg(b(x)?),
            Expr::Not(x) => Expr::Not(b(x)?),
            Expr::Bin(op, x, y) => Expr::Bin(*op, b(x)?, b(y)?),
            Expr::IsNull(x, n) => Expr::IsNull(b(x)?, *n),
            Expr::Like(x, p, n) => Expr::Like(b(x)?, p.clone(), *n),
            Expr::Case(whens, otherwise) => Expr::Case(
                whens
                    .iter()
                    .map(|(c, r)| Some((c.map_cols(f)?, r.map_cols(f)?)))
                    .collect::<Option<Vec<_>>>()?,
                match otherwise {
                    Some(e) => Some(b(e)?),
                    None => None,
                },
            ),
            Expr::Call(func, args) => Expr::Call(
                *func,
                args.iter()
                    .map(|a| a.map_cols(f))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Expr::Cast(x, to) => Expr::Cast(b(x)?, *to),
        })
    }

    /// The highest column this expression reads, if it reads any.
    pub fn max_col(&self) -> Option<u16> {
        match self {
            Expr::Lit(_) => None,
            Expr::Col(i) => Some(*i),
            Expr::Neg(x)
            | Expr::Not(x)
            | Expr::IsNull(x, _)
            | Expr::Like(x, _, _)
            | Expr::Cast(x, _) => x.max_col(),
            Expr::Bin(_, a, b) => a.max_col().max(b.max_col()),
            Expr::Case(whens, otherwise) => whens
                .iter()
                .flat_map(|(c, r)| [c.max_col(), r.max_col()])
                .chain([otherwise.as_ref().and_then(|e| e.max_col())])
                .max()
                .flatten(),
            Expr::Call(_, args) => args.iter().filter_map(Expr::max_col).max(),
        }
    }

    /// Whether a filter with this condition keeps `row`: only a `TRUE` result does.
    pub fn test(&self, row: &[Value]) -> bool {
        matches!(self.eval(row), Value::Bool(true))
    }

    /// Evaluates over `row`.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Col(i) => row.get(*i as usize).cloned().unwrap_or(Value::Null),
            Expr::Neg(x) => match x.eval(row) {
                Value::Num(v) => Value::Num(-v),
                _ => Value::Null,
            },
            Expr::Not(x) => match x.eval(row) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::Bin(op, a, b) => bin(*op, a, b, row),
            Expr::IsNull(x, negated) => Value::Bool((x.eval(row) == Value::Null) != *negated),
            Expr::Like(x, pat, negated) => match x.eval(row) {
                Value::Str(s) => Value::Bool(like(s.as_bytes(), pat.as_bytes()) != *negated),
                _ => Value::Null,
            },
            Expr::Case(whens, otherwise) => {
                for (c, r) in whens {
                    if c.test(row) {
                        return r.eval(row);
                    }
                }
                otherwise.as_ref().map_or(Value::Null, |e| e.eval(row))
            }
            Expr::Call(f, args) => call(*f, args, row),
            Expr::Cast(x, to) => cast(x.eval(row), *to),
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Num(x) => Some(*x),
        _ => None,
    }
}

fn bin(op: BinOp, a: &Expr, b: &Expr, row: &[Value]) -> Value {
    use BinOp::*;
    if let And | Or = op {
        let truth = |v: Value| match v {
            Value::Bool(b) => Some(b),
            _ => None,
        };
        let x = truth(a.eval(row));
        // Short-circuit: FALSE AND _ is FALSE, TRUE OR _ is TRUE, even for NULL.
        if x == Some(op == Or) {
            return Value::Bool(op == Or);
        }
        let y = truth(b.eval(row));
        return match (x, y) {
            (_, Some(v)) if v == (op == Or) => Value::Bool(v),
            (Some(_), Some(v)) => Value::Bool(v),
            _ => Value::Null,
        };
    }
    let (x, y) = (a.eval(row), b.eval(row));
    if x == Value::Null || y == Value::Null {
        return Value::Null;
    }
    let ord = match (&x, &y) {
        (Value::Num(p), Value::Num(q)) => p.partial_cmp(q),
        (Value::Str(p), Value::Str(q)) => Some(p.cmp(q)),
        (Value::Ts(p), Value::Ts(q)) => Some(p.cmp(q)),
        (Value::Bool(p), Value::Bool(q)) => Some(p.cmp(q)),
        _ => None,
    };
    let cmp = |f: fn(core::cmp::Ordering) -> bool| ord.map_or(Value::Null, |o| Value::Bool(f(o)));
    match op {
        Eq => cmp(|o| o.is_eq()),
        Ne => cmp(|o| o.is_ne()),
        Lt => cmp(|o| o.is_lt()),
        Le => cmp(|o| o.is_le()),
        Gt => cmp(|o| o.is_gt()),
        Ge => cmp(|o| o.is_ge()),
        _ => {
            let (Some(p), Some(q)) = (num(&x), num(&y)) else {
                return Value::Null;
            };
            match op {
                Add => Value::Num(p + q),
                Sub => Value::Num(p - q),
                Mul => Value::Num(p * q),
                Div | Mod if q == 0.0 => Value::Null,
                Div => Value::Num(p / q),
                _ => Value::Num(libm::fmod(p, q)),
            }
        }
    }
}

fn call(f: Func, args: &[Expr], row: &[Value]) -> Value {
    if let Func::Upper
    | Func::Lower
    | Func::Concat
    | Func::CharLength
    | Func::Substring
    | Func::Trim
    | Func::Replace = f
    {
        return text_call(f, args, row);
    }
    if let Func::Extract(_)
    | Func::TimestampDiff(_)
    | Func::TimestampAdd(_)
    | Func::FloorTime(..)
    | Func::DateFormat = f
    {
        return time_call(f, args, row);
    }
    if f == Func::DistinctKey {
        return Value::Num(match args.first().map(|a| a.eval(row)) {
            Some(Value::Str(s)) => {
                let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (h >> 11) as f64
            }
            Some(Value::Bool(b)) => f64::from(u8::from(b)),
            Some(Value::Num(x)) => x,
            Some(Value::Ts(t)) => t as f64,
            Some(Value::Null) | None => -1.0,
        });
    }
    if f == Func::Coalesce {
        return args
            .iter()
            .map(|a| a.eval(row))
            .find(|v| *v != Value::Null)
            .unwrap_or(Value::Null);
    }
    if let Func::Greatest | Func::Least = f {
        let mut best: Option<f64> = None;
        for a in args {
            let Some(v) = num(&a.eval(row)) else {
                return Value::Null;
            };
            best = Some(match best {
                Some(b) if (f == Func::Greatest) == (b >= v) => b,
                _ => v,
            });
        }
        return best.map_or(Value::Null, Value::Num);
    }
    let arg = |i: usize| args.get(i).map(|a| a.eval(row)).and_then(|v| num(&v));
    let Some(x) = arg(0) else {
        return Value::Null;
    };
    let v = match f {
        Func::Abs => libm::fabs(x),
        Func::Sqrt if x < 0.0 => return Value::Null,
        Func::Sqrt => libm::sqrt(x),
        Func::Power => match arg(1) {
            Some(y) => libm::pow(x, y),
            None => return Value::Null,
        },
        Func::Ln | Func::Log10 if x <= 0.0 => return Value::Null,
        Func::Ln => libm::log(x),
        Func::Log10 => libm::log10(x),
        Func::Exp => libm::exp(x),
        Func::Round | Func::Truncate => {
            let d = if args.len() > 1 {
                match arg(1) {
                    Some(d) => d.clamp(-400.0, 400.0) as i32,
                    None => return Value::Null,
                }
            } else {
                0
            };
            round_decimal(x, d, f == Func::Truncate)
        }
        Func::Floor => libm::floor(x),
        Func::Ceil => libm::ceil(x),
        Func::Sign => match x {
            _ if x > 0.0 => 1.0,
            _ if x < 0.0 => -1.0,
            _ => x,
        },
        Func::Log2 if x <= 0.0 => return Value::Null,
        Func::Log2 => libm::log2(x),
        Func::Log if args.len() > 1 => match arg(1) {
            Some(y) if x > 0.0 && x != 1.0 && y > 0.0 => libm::log(y) / libm::log(x),
            _ => return Value::Null,
        },
        Func::Log if x <= 0.0 => return Value::Null,
        Func::Log => libm::log(x),
        Func::Sin => libm::sin(x),
        Func::Cos => libm::cos(x),
        Func::Tan => libm::tan(x),
        Func::Cot => 1.0 / libm::tan(x),
        Func::Asin => libm::asin(x),
        Func::Acos => libm::acos(x),
        Func::Atan => libm::atan(x),
        Func::Atan2 => match arg(1) {
            Some(y) => libm::atan2(x, y),
            None => return Value::Null,
        },
        Func::Sinh => libm::sinh(x),
        Func::Cosh => libm::cosh(x),
        Func::Tanh => libm::tanh(x),
        Func::Degrees => x.to_degrees(),
        Func::Radians => x.to_radians(),
        Func::Coalesce
        | Func::DistinctKey
        | Func::Greatest
        | Func::Least
        | Func::Upper
        | Func::Lower
        | Func::Concat
        | Func::CharLength
        | Func::Substring
        | Func::Trim
        | Func::Replace
        | Func::Extract(_)
        | Func::TimestampDiff(_)
        | Func::TimestampAdd(_)
        | Func::FloorTime(..)
        | Func::DateFormat => {
            unreachable!("handled above")
        }
    };
    Value::Num(v)
}

/// `10^i`, exact in `f64` for `i ≤ 22`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `x` rounded to `d` decimals (`d < 0`: to tens, hundreds, …) half away
/// from zero, or toward zero when `down`, the way Flink rounds a `DOUBLE`
/// (`ROUND`, `TRUNCATE`, `CAST(… AS DECIMAL(p, s))`): on the shortest
/// decimal that reads back as `x` (Java's `BigDecimal.valueOf(x)`), not on
/// its binary value. So `ROUND(2.675, 2)` is 2.68, though the double nearest
/// 2.675 lies just below it, and `TRUNCATE(0.29, 2)` is 0.29. The result is
/// the double nearest the rounded decimal (`+0.0` when that is zero);
/// non-finite values are returned as they are.
pub fn round_decimal(x: f64, d: i32, down: bool) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    // Fast path: x·10^d in floating point is within 1.5 units in its last
    // place of the decimal's own scaled value (half an ulp for x's
    // decimal, half for the product), so a fraction that far from the
    // rounding boundary (.5 for half-up; 0 and 1 for toward zero) rounds
    // the same way on both.
    if let Ok(i) = usize::try_from(d) {
        if let Some(&m) = POW10.get(i) {
            let y = libm::fabs(x) * m;
            if y < 4.0e15 {
                let t = libm::trunc(y);
                let frac = y - t;
                let ulp = f64::from_bits(y.to_bits() + 1) - y;
                let margin = 4.0 * ulp;
                let r = if down {
                    (frac > margin && frac < 1.0 - margin).then_some(t)
                } else {
                    ((frac - 0.5).abs() > margin).then_some(if frac > 0.5 { t + 1.0 } else { t })
                };
                if let Some(r) = r {
                    // Both exact: the quotient is the double nearest r/10^d.
                    let v = r / m;
                    return if v == 0.0 { 0.0 } else { v.copysign(x) };
                }
            }
        }
    }
    round_decimal_text(x, d, down)
}

/// [`round_decimal`] on the digits of `x`'s shortest decimal form.
fn round_decimal_text(x: f64, d: i32, down: bool) -> f64 {
    // "d.ddde±x": the shortest digits that read back as x.
    let text = alloc::format!("{:e}", libm::fabs(x));
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    // Digits before the rounding place (x = 0.d₁d₂… × 10^(exp+1)).
    let keep = exp.saturating_add(1).saturating_add(d);
    let Ok(k) = usize::try_from(keep) else {
        return 0.0;
    };
    if k >= digits.len() {
        return x;
    }
    let mut n: u64 = digits[..k]
        .iter()
        .fold(0, |n, &c| n * 10 + u64::from(c - b'0'));
    if !down && digits[k] >= b'5' {
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let v: f64 = alloc::format!("{n}e{}", -i64::from(d))
        .parse()
        .unwrap_or(f64::NAN);
    v.copysign(x)
}

fn cast(v: Value, to: CastTo) -> Value {
    match (v, to) {
        (Value::Null, _) => Value::Null,
        (Value::Num(x), CastTo::Double) => Value::Num(x),
        (Value::Num(x), CastTo::Decimal(s)) => Value::Num(round_decimal(x, s.into(), false)),
        (Value::Num(x), CastTo::Int) if x.is_finite() => Value::Num(libm::trunc(x)),
        (Value::Num(x), CastTo::Bool) => Value::Bool(x != 0.0),
        (Value::Num(x), CastTo::Str(from)) => Value::Str(to_text(x, from)),
        (Value::Bool(b), CastTo::Double | CastTo::Int | CastTo::Decimal(_)) => {
            Value::Num(b as u8 as f64)
        }
        (Value::Bool(b), CastTo::Bool) => Value::Bool(b),
        (Value::Bool(b), CastTo::Str(_)) => Value::Str(if b { "TRUE" } else { "FALSE" }.into()),
        (Value::Str(s), CastTo::Str(_)) => Value::Str(s),
        (Value::Str(s), CastTo::Double | CastTo::Int | CastTo::Decimal(_)) => {
            match s.trim().parse::<f64>() {
                Ok(x) => cast(Value::Num(x), to),
                Err(_) => Value::Null,
            }
        }
        (Value::Str(s), CastTo::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Null,
        },
        (Value::Ts(t), CastTo::Int | CastTo::Double | CastTo::Decimal(_)) => Value::Num(t as f64),
        (Value::Ts(t), CastTo::Str(StrFrom::TimestampMs)) => Value::Str(timestamp_text(t)),
        (Value::Ts(t), CastTo::Str(_)) => Value::Str(t.to_string()),
        _ => Value::Null,
    }
}

/// SQL `LIKE` on bytes: `%` matches any run (also empty), `_` one byte
/// (one character for ASCII text). Iterative with one backtrack point, so
/// linear-ish and without recursion.
fn like(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'_' || p[pi] == s[si]) && p[pi] != b'%' {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'%' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn three_valued_logic() {
        let t = Expr::Lit(Value::Bool(true));
        let f = Expr::Lit(Value::Bool(false));
        let n = Expr::Lit(Value::Null);
        let and = |a: &Expr, b: &Expr| Expr::bin(BinOp::And, a.clone(), b.clone()).eval(&[]);
        let or = |a: &Expr, b: &Expr| Expr::bin(BinOp::Or, a.clone(), b.clone()).eval(&[]);
        assert_eq!(and(&n, &f), Value::Bool(false));
        assert_eq!(and(&f, &n), Value::Bool(false));
        assert_eq!(and(&n, &t), Value::Null);
        assert_eq!(and(&t, &t), Value::Bool(true));
        assert_eq!(or(&n, &t), Value::Bool(true));
        assert_eq!(or(&n, &f), Value::Null);
        assert_eq!(or(&f, &f), Value::Bool(false));
        assert_eq!(Expr::Not(Box::new(n.clone())).eval(&[]), Value::Null);
        assert!(!Expr::bin(BinOp::Gt, n, Expr::num(1.0)).test(&[]));
    }

    #[test]
    fn arithmetic_and_functions() {
        let row = [Value::Num(-2.5), Value::Num(0.0)];
        let c = |i| Expr::Col(i);
        assert_eq!(Expr::bin(BinOp::Div, c(0), c(1)).eval(&row), Value::Null);
        assert_eq!(
            Expr::bin(BinOp::Mod, Expr::num(7.0), Expr::num(4.0)).eval(&row),
            Value::Num(3.0)
        );
        assert_eq!(
            Expr::Call(Func::Abs, vec![c(0)]).eval(&row),
            Value::Num(2.5)
        );
        assert_eq!(
            Expr::Call(Func::Round, vec![c(0)]).eval(&row),
            Value::Num(-3.0)
        );
        assert_eq!(
            Expr::Call(Func::Round, vec![Expr::num(1.23456), Expr::num(2.0)]).eval(&row),
            Value::Num(1.23)
        );
        assert_eq!(Expr::Call(Func::Sqrt, vec![c(0)]).eval(&row), Value::Null);
        assert_eq!(Expr::Call(Func::Ln, vec![c(1)]).eval(&row), Value::Null);
        assert_eq!(
            Expr::Call(Func::Power, vec![Expr::num(2.0), Expr::num(10.0)]).eval(&row),
            Value::Num(1024.0)
        );
        assert_eq!(
            Expr::Call(Func::Coalesce, vec![Expr::Lit(Value::Null), c(1)]).eval(&row),
            Value::Num(0.0)
        );
        assert_eq!(
            Expr::Cast(Box::new(c(0)), CastTo::Int).eval(&row),
            Value::Num(-2.0)
        );
        assert_eq!(
            Expr::Cast(Box::new(Expr::Lit(s("x"))), CastTo::Double).eval(&row),
            Value::Null
        );
        assert_eq!(Expr::Col(9).eval(&row), Value::Null);
    }

    #[test]
    fn string_functions_give_null_for_null() {
        let s = |x: &str| Expr::Lit(Value::Str(x.into()));
        let null = Expr::Lit(Value::Null);
        let call = |f: Func, a: Vec<Expr>| Expr::Call(f, a).eval(&[]);
        assert_eq!(call(Func::Upper, vec![s("ä-b")]), Value::Str("ä-B".into()));
        assert_eq!(call(Func::Concat, vec![s("a"), null.clone()]), Value::Null);
        assert_eq!(call(Func::CharLength, vec![s("äbc")]), Value::Num(3.0));
        assert_eq!(
            call(
                Func::Substring,
                vec![s("hello"), Expr::num(-3.0), Expr::num(2.0)]
            ),
            Value::Str("ll".into())
        );
        assert_eq!(
            call(Func::Substring, vec![s("hello"), Expr::num(9.0)]),
            Value::Str(String::new())
        );
        assert_eq!(
            call(
                Func::Substring,
                vec![s("hello"), Expr::num(2.0), Expr::num(-1.0)]
            ),
            Value::Str(String::new())
        );
        assert_eq!(
            call(Func::Substring, vec![s("hello"), null.clone()]),
            Value::Null
        );
        assert_eq!(
            call(Func::Replace, vec![s("a.b.c"), s("."), s("")]),
            Value::Str("abc".into())
        );
        assert_eq!(call(Func::Lower, vec![null]), Value::Null);
    }

    #[test]
    fn strings_of_numbers_as_flink_writes_them() {
        let d = |x: f64| to_text(x, StrFrom::Double);
        // Java's Double.toString.
        for (x, want) in [
            (42.0, "42.0"),
            (-0.5, "-0.5"),
            (0.001, "0.001"),
            (0.000_999, "9.99E-4"),
            (1.5e-4, "1.5E-4"),
            (9_999_999.0, "9999999.0"),
            (1e7, "1.0E7"),
            (12_345_678.9, "1.23456789E7"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123.456, "123.456"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e300, "1.0E300"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
        ] {
            assert_eq!(d(x), want, "{x:e}");
        }
        assert_eq!(to_text(42.9, StrFrom::Int), "42");
        assert_eq!(to_text(-7.0, StrFrom::Int), "-7");
        assert_eq!(to_text(4.0, StrFrom::Decimal(2)), "4.00");
        assert_eq!(to_text(2.675, StrFrom::Decimal(2)), "2.68");
        assert_eq!(to_text(-0.001, StrFrom::Decimal(2)), "0.00");
        assert_eq!(to_text(7.0, StrFrom::Decimal(0)), "7");
        assert_eq!(
            to_text(1_586_937_900_000.0, StrFrom::TimestampMs),
            "2020-04-15 08:05:00.000"
        );
        assert_eq!(timestamp_text(-1), "1969-12-31 23:59:59.999");
        assert_eq!(timestamp_text(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(
            Expr::Cast(
                Box::new(Expr::Lit(Value::Ts(1_586_937_900_000))),
                CastTo::Str(StrFrom::TimestampMs)
            )
            .eval(&[]),
            Value::Str("2020-04-15 08:05:00.000".into())
        );
    }

    proptest::proptest! {
        /// Java's form reads back as the same double.
        #[test]
        fn java_doubles_read_back(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let t = to_text(x, StrFrom::Double);
            proptest::prop_assert_eq!(t.replace('E', "e").parse::<f64>().unwrap(), x, "{}", t);
            proptest::prop_assert!(t.contains('.'), "{}", t);
        }
    }

    #[test]
    fn rounding_reads_the_decimal_as_flink_does() {
        let r = |x: f64, d: i32| round_decimal(x, d, false);
        let t = |x: f64, d: i32| round_decimal(x, d, true);
        // The double nearest 2.675 is 2.67499999999999982236431605997495353221893310546875.
        assert_eq!(r(2.675, 2), 2.68);
        assert_eq!(r(-2.675, 2), -2.68);
        assert_eq!(r(26.75 / 10.0, 2), 2.68);
        assert_eq!(r(1.005, 2), 1.01);
        assert_eq!(r(0.125, 2), 0.13);
        assert_eq!(r(2.5, 0), 3.0);
        assert_eq!(r(-2.5, 0), -3.0);
        assert_eq!(r(2.4999, 0), 2.0);
        assert_eq!(r(-0.4, 0).to_bits(), 0.0f64.to_bits());
        assert_eq!(r(0.6, 0), 1.0);
        assert_eq!(r(0.04, 0), 0.0);
        assert_eq!(r(1234.5, -2), 1200.0);
        assert_eq!(r(1250.0, -2), 1300.0);
        assert_eq!(r(1.23456, 2), 1.23);
        assert_eq!(r(1e300, 2), 1e300);
        assert_eq!(r(5e-324, 2), 0.0);
        assert_eq!(r(0.1 + 0.2, 1), 0.3);
        assert!(r(f64::NAN, 2).is_nan());
        assert_eq!(t(0.29, 2), 0.29);
        assert_eq!(t(-1.999, 2), -1.99);
        assert_eq!(t(123.456, -1), 120.0);
        assert_eq!(t(2.675, 2), 2.67);
        assert_eq!(t(0.7, 0), 0.0);
        let call = |f, x: f64, d: f64| Expr::Call(f, vec![Expr::num(x), Expr::num(d)]).eval(&[]);
        assert_eq!(call(Func::Round, 2.675, 2.0), Value::Num(2.68));
        assert_eq!(call(Func::Truncate, 0.29, 2.0), Value::Num(0.29));
        let dec = |x: f64, s: u8| Expr::Cast(Box::new(Expr::num(x)), CastTo::Decimal(s)).eval(&[]);
        assert_eq!(dec(2.675, 2), Value::Num(2.68));
        assert_eq!(dec(-0.0049, 2), Value::Num(0.0));
    }

    proptest::proptest! {
        /// The fast path agrees with rounding the shortest decimal's digits,
        /// on numbers written with few decimals (where ties are common) and
        /// on any double.
        #[test]
        fn fast_rounding_agrees_with_the_digits(
            units in -1_000_000_000i64..1_000_000_000,
            scale in 0u32..9,
            bits in proptest::prelude::any::<u64>(),
            d in -6i32..12,
            down in proptest::prelude::any::<bool>(),
        ) {
            let short = units as f64 / libm::pow(10.0, f64::from(scale));
            let any = f64::from_bits(bits);
            for x in [short, any] {
                if x.is_finite() && x != 0.0 {
                    let (a, b) = (round_decimal(x, d, down), round_decimal_text(x, d, down));
                    proptest::prop_assert_eq!(a.to_bits(), b.to_bits(), "x = {:e}, d = {}, down = {}", x, d, down);
                }
            }
        }
    }

    #[test]
    fn more_functions() {
        let call =
            |f, xs: &[f64]| Expr::Call(f, xs.iter().map(|&x| Expr::num(x)).collect()).eval(&[]);
        assert_eq!(call(Func::Sign, &[-3.5]), Value::Num(-1.0));
        assert_eq!(call(Func::Sign, &[0.0]), Value::Num(0.0));
        assert_eq!(call(Func::Sign, &[2.0]), Value::Num(1.0));
        assert_eq!(call(Func::Log2, &[8.0]), Value::Num(3.0));
        assert_eq!(call(Func::Log2, &[0.0]), Value::Null);
        assert_eq!(call(Func::Log, &[2.0, 1024.0]), Value::Num(10.0));
        assert_eq!(call(Func::Log, &[1.0, 5.0]), Value::Null);
        assert_eq!(call(Func::Log, &[core::f64::consts::E]), Value::Num(1.0));
        assert_eq!(
            call(Func::Degrees, &[core::f64::consts::PI]),
            Value::Num(180.0)
        );
        assert_eq!(
            call(Func::Radians, &[180.0]),
            Value::Num(core::f64::consts::PI)
        );
        assert_eq!(
            call(Func::Atan2, &[1.0, 1.0]),
            Value::Num(core::f64::consts::FRAC_PI_4)
        );
        assert_eq!(call(Func::Sin, &[0.0]), Value::Num(0.0));
        assert_eq!(call(Func::Cos, &[0.0]), Value::Num(1.0));
        assert_eq!(call(Func::Greatest, &[1.0, 7.0, 3.0]), Value::Num(7.0));
        assert_eq!(call(Func::Least, &[1.0, 7.0, -3.0]), Value::Num(-3.0));
        let g = Expr::Call(Func::Greatest, vec![Expr::num(1.0), Expr::Lit(Value::Null)]);
        assert_eq!(g.eval(&[]), Value::Null);
    }

    #[test]
    fn case_and_like() {
        let e = Expr::Case(
            vec![(
                Expr::bin(BinOp::Gt, Expr::Col(0), Expr::num(10.0)),
                Expr::Lit(s("high")),
            )],
            Some(Box::new(Expr::Lit(s("low")))),
        );
        assert_eq!(e.eval(&[Value::Num(11.0)]), s("high"));
        assert_eq!(e.eval(&[Value::Null]), s("low"));
        let l = |v: &str, p: &str| like(v.as_bytes(), p.as_bytes());
        assert!(l("pump-3", "pump-%"));
        assert!(l("pump-3", "%-_"));
        assert!(l("", "%"));
        assert!(l("abcabd", "%abd"));
        assert!(!l("pump", "pump_"));
        assert!(!l("fan-1", "pump%"));
        assert!(Expr::Like(Box::new(Expr::Col(0)), "a%".into(), true).test(&[s("ba")]));
    }
}
