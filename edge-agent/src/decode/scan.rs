//! A strict JSON (RFC 8259) byte scanner over a payload slice, for decoders
//! that read a known shape and skip the rest without building values.
//!
//! It accepts exactly what `serde_json::Deserializer::from_slice` accepts
//! (the SenML differential test checks it against serde_json) and yields the
//! same numbers: integers as `i64`/`u64`, `-0` and everything with a
//! fraction or exponent as a correctly rounded `f64` (serde_json is built
//! with `float_roundtrip`), and an error for a finite-looking number that
//! rounds to infinity. Like serde_json, strings that are read are checked
//! for UTF-8 and paired surrogates; strings inside skipped values are only
//! checked for escapes and control characters, and skipped numbers only for
//! their grammar. Skipping nests to any depth without recursion.

use super::{DecodeError, Scalar, Scratch};

/// Nesting depth kept inline while skipping; deeper values spill to the heap.
const INLINE_DEPTH: usize = 64 * 8;

pub(crate) struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn err(&self, what: &str) -> DecodeError {
        let detail = if self.i >= self.b.len() {
            format!("{what} at the end of the input (byte {})", self.b.len())
        } else {
            format!("{what} at byte {}", self.i)
        };
        DecodeError::Malformed {
            format: "JSON",
            detail,
        }
    }

    /// Skips whitespace and returns the next byte, not consuming it.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => self.i += 1,
                _ => return Some(c),
            }
        }
        None
    }

    /// Skips whitespace and consumes `c`.
    #[inline]
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `c` or fails with `what`.
    #[inline]
    pub(crate) fn expect(&mut self, c: u8, what: &str) -> Result<(), DecodeError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// Only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err("trailing characters")),
        }
    }

    /// After `[` or `{`: consumes `close` if the container is empty.
    #[inline]
    pub(crate) fn empty(&mut self, close: u8) -> bool {
        self.eat(close)
    }

    /// After an element or entry: `true` on `,`, `false` on `close`.
    #[inline]
    pub(crate) fn more(&mut self, close: u8) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            Some(_) if close == b']' => Err(self.err("expected `,` or `]`")),
            Some(_) => Err(self.err("expected `,` or `}`")),
            None if close == b']' => Err(self.err("unterminated array")),
            None => Err(self.err("unterminated object")),
        }
    }

    /// An object key without escapes and its colon, borrowed from the
    /// payload and checked as UTF-8. `None`, with nothing consumed, when the
    /// key needs the slow path (an escape, or an error that [`Scan::key`]
    /// then reports).
    #[inline]
    pub(crate) fn plain_key(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        let start = self.i + 1;
        let mut j = start;
        let mut high = 0;
        loop {
            match self.b.get(j) {
                Some(b'"') => break,
                Some(b'\\') => return Ok(None),
                Some(&c) if c >= 0x20 => {
                    high |= c;
                    j += 1;
                }
                // A control character or the end: the slow path reports it.
                _ => return Ok(None),
            }
        }
        let key = &self.b[start..j];
        if high >= 0x80 && std::str::from_utf8(key).is_err() {
            return Ok(None);
        }
        self.i = j + 1;
        self.expect(b':', "expected `:`")?;
        Ok(Some(key))
    }

    /// An object key and its colon, decoded into `text` from byte `a`.
    #[inline]
    pub(crate) fn key(&mut self, text: &mut String) -> Result<(usize, usize), DecodeError> {
        if !self.eat(b'"') {
            return Err(self.err("expected a string key"));
        }
        let r = self.string(text)?;
        self.expect(b':', "expected `:`")?;
        Ok(r)
    }

    /// After the opening quote: appends the decoded string to `text` and
    /// returns its range there. Checks UTF-8, escapes and surrogate pairs.
    pub(crate) fn string(&mut self, text: &mut String) -> Result<(usize, usize), DecodeError> {
        let a = text.len();
        loop {
            let start = self.i;
            let stop = loop {
                match self.b.get(self.i) {
                    None => return Err(self.err("unterminated string")),
                    Some(&c) if c == b'"' || c == b'\\' || c < 0x20 => break c,
                    Some(_) => self.i += 1,
                }
            };
            let run = &self.b[start..self.i];
            // An escape is ASCII, so checking each run between escapes is
            // checking the whole string.
            match std::str::from_utf8(run) {
                Ok(s) => text.push_str(s),
                Err(e) => {
                    self.i = start + e.valid_up_to();
                    return Err(self.err("invalid UTF-8 in a string"));
                }
            }
            if stop < 0x20 {
                return Err(self.err("control character in a string"));
            }
            self.i += 1;
            if stop == b'"' {
                return Ok((a, text.len()));
            }
            self.escape(text)?;
        }
    }

    /// After a backslash: one escape, decoded.
    fn escape(&mut self, text: &mut String) -> Result<(), DecodeError> {
        let c = match self.b.get(self.i) {
            None => return Err(self.err("unterminated string")),
            Some(&c) => c,
        };
        self.i += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = self.hex4()?;
                match n {
                    0xDC00..=0xDFFF => {
                        return Err(self.err("lone trailing surrogate in a \\u escape"))
                    }
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(&b"\\u"[..]) {
                            return Err(self.err("lone leading surrogate in a \\u escape"));
                        }
                        self.i += 2;
                        let n2 = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&n2) {
                            return Err(self.err("lone leading surrogate in a \\u escape"));
                        }
                        let c = 0x1_0000 + ((u32::from(n - 0xD800) << 10) | u32::from(n2 - 0xDC00));
                        char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                    // Not a surrogate: always a char.
                    n => char::from_u32(u32::from(n)).unwrap_or(char::REPLACEMENT_CHARACTER),
                }
            }
            _ => {
                self.i -= 1;
                return Err(self.err("invalid escape"));
            }
        };
        text.push(ch);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, DecodeError> {
        let Some(h) = self.b.get(self.i..self.i + 4) else {
            self.i = self.b.len();
            return Err(self.err("unterminated string"));
        };
        let mut n = 0u16;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            n = (n << 4) | u16::from(d);
        }
        self.i += 4;
        Ok(n)
    }

    /// After the opening quote of a skipped string: escapes and control
    /// characters are checked, UTF-8 is not (as serde_json skips).
    fn skip_string(&mut self) -> Result<(), DecodeError> {
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.b.get(self.i) {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        Some(_) => return Err(self.err("invalid escape")),
                    }
                }
                Some(&c) if c < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
    }

    /// `true`, `false` or `null` from its first byte.
    fn ident(&mut self, word: &'static [u8]) -> Result<(), DecodeError> {
        match self.b.get(self.i..self.i + word.len()) {
            Some(w) if w == word => {
                self.i += word.len();
                Ok(())
            }
            _ => Err(self.err("expected a value")),
        }
    }

    /// Skips a number, checking only its grammar (as serde_json skips).
    fn skip_number(&mut self) -> Result<(), DecodeError> {
        let digits = |s: &mut Self| {
            let a = s.i;
            while matches!(s.b.get(s.i), Some(b'0'..=b'9')) {
                s.i += 1;
            }
            s.i - a
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
                    return Err(self.err("invalid number (leading zero)"));
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(self.err("invalid number (no digit after `.`)"));
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("invalid number (no digit in the exponent)"));
            }
        }
        Ok(())
    }

    /// A number read as serde_json reads it, in one pass: the significant
    /// digits are gathered while the grammar is checked.
    fn number(&mut self) -> Result<Scalar, DecodeError> {
        let a = self.i;
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        // Digits from the first non-zero one; `sig` is exact while n <= 19.
        let mut sig = 0u64;
        let mut n = 0u32;
        let mut digit = |c: u8| {
            if sig != 0 || c != b'0' {
                n += 1;
            }
            if n <= 19 {
                sig = sig * 10 + u64::from(c - b'0');
            }
        };
        match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
                    return Err(self.err("invalid number (leading zero)"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                    digit(c);
                    self.i += 1;
                }
            }
            _ => return Err(self.err("invalid number")),
        }
        let mut float = false;
        let mut frac = 0usize;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            float = true;
            let s = self.i;
            while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                digit(c);
                self.i += 1;
            }
            frac = self.i - s;
            if frac == 0 {
                return Err(self.err("invalid number (no digit after `.`)"));
            }
        }
        // The exponent, exact while it has at most 4 digits.
        let mut exp = 0i32;
        let mut short_exp = true;
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            let neg_exp = match self.b.get(self.i) {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let s = self.i;
            while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                if self.i - s < 4 {
                    exp = exp * 10 + i32::from(c - b'0');
                }
                self.i += 1;
            }
            short_exp = self.i - s <= 4;
            if self.i == s {
                return Err(self.err("invalid number (no digit in the exponent)"));
            }
            if neg_exp {
                exp = -exp;
            }
        }
        if !float && n <= 19 {
            return Ok(if !neg {
                i64::try_from(sig).map_or(Scalar::UInt(sig), Scalar::Int)
            } else {
                // serde_json: `-0` and below `i64::MIN` are floats.
                let v = (sig as i64).wrapping_neg();
                if v >= 0 {
                    Scalar::Float(-(sig as f64))
                } else {
                    Scalar::Int(v)
                }
            });
        }
        if !float && !neg {
            // 20 digits or more: a u64 up to u64::MAX, else a float.
            if let Some(v) = parse_u64(&self.b[a..self.i]) {
                return Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int));
            }
        }
        // Clinger's fast path: at most 15 significant digits and a power of
        // ten up to 22 are both exact, so one IEEE operation rounds
        // correctly, as `f64::from_str` does.
        if n <= 15 && short_exp && frac <= 22 {
            const POW10: [f64; 23] = [
                1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
                1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
            ];
            #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
            let e = exp - frac as i32;
            let f = sig as f64;
            let f = match e {
                0..=22 => Some(f * POW10[e as usize]),
                -22..=-1 => Some(f / POW10[(-e) as usize]),
                _ => None,
            };
            if let Some(f) = f {
                return Ok(Scalar::Float(if neg { -f } else { f }));
            }
        }
        let text = &self.b[a..self.i];
        match std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
        {
            Some(f) if f.is_finite() => Ok(Scalar::Float(f)),
            _ => {
                self.i = a;
                Err(self.err("number out of range"))
            }
        }
    }

    /// A value read as a [`Scalar`]: strings go to the scratch text, arrays
    /// and objects are skipped and named (object keys are read, as serde_json
    /// reads them).
    pub(crate) fn scalar(&mut self, sc: &mut Scratch) -> Result<Scalar, DecodeError> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                let (a, b) = self.string(&mut sc.text)?;
                Ok(Scalar::Str(a, b))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.ident(b"true").map(|()| Scalar::Bool(true)),
            Some(b'f') => self.ident(b"false").map(|()| Scalar::Bool(false)),
            Some(b'n') => self.ident(b"null").map(|()| Scalar::Other("null")),
            Some(b'[') => {
                self.skip()?;
                Ok(Scalar::Other("an array"))
            }
            Some(b'{') => {
                self.i += 1;
                if !self.empty(b'}') {
                    let mark = sc.text.len();
                    loop {
                        self.key(&mut sc.text)?;
                        sc.text.truncate(mark);
                        self.skip()?;
                        if !self.more(b'}')? {
                            break;
                        }
                    }
                }
                Ok(Scalar::Other("an object"))
            }
            _ => Err(self.err("expected a value")),
        }
    }

    /// Skips one value of any depth.
    pub(crate) fn skip(&mut self) -> Result<(), DecodeError> {
        let mut stack = Nesting::default();
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    self.skip_string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.skip_number()?;
                }
                Some(b't') => self.ident(b"true")?,
                Some(b'f') => self.ident(b"false")?,
                Some(b'n') => self.ident(b"null")?,
                Some(b'[') => {
                    self.i += 1;
                    if !self.empty(b']') {
                        stack.push(false);
                        continue;
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    if !self.empty(b'}') {
                        stack.push(true);
                        self.skip_key()?;
                        continue;
                    }
                }
                _ => return Err(self.err("expected a value")),
            }
            // Close what the value ended, up to the next element.
            loop {
                let Some(object) = stack.top() else {
                    return Ok(());
                };
                if self.more(if object { b'}' } else { b']' })? {
                    if object {
                        self.skip_key()?;
                    }
                    break;
                }
                stack.pop();
            }
        }
    }

    fn skip_key(&mut self) -> Result<(), DecodeError> {
        if !self.eat(b'"') {
            return Err(self.err("expected a string key"));
        }
        self.skip_string()?;
        self.expect(b':', "expected `:`")
    }
}

/// An unsigned integer's digits as a u64, `None` on overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &c| {
        v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// Which containers a skipped value is inside: one bit per level, `true`
/// for an object.
#[derive(Default)]
struct Nesting {
    depth: usize,
    inline: [u64; INLINE_DEPTH / 64],
    spill: Vec<u64>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        let (w, b) = (self.depth / 64, self.depth % 64);
        let word = if w < self.inline.len() {
            &mut self.inline[w]
        } else {
            let w = w - self.inline.len();
            if w == self.spill.len() {
                self.spill.push(0);
            }
            &mut self.spill[w]
        };
        *word = (*word & !(1 << b)) | (u64::from(object) << b);
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        let (w, b) = (d / 64, d % 64);
        let word = if w < self.inline.len() {
            self.inline[w]
        } else {
            self.spill[w - self.inline.len()]
        };
        Some((word >> b) & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }
}
