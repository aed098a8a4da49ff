//! The journal's batch format: pure encoding and decoding, no I/O.
//!
//! One encoded batch is one redb value (see the layout in [`super`]). The
//! encoder appends records to a growing buffer; [`BatchEncoder::finish`]
//! seals it with the record count and a CRC-32. The decoder checks the
//! length and the CRC before it reads a single record, then checks every
//! field, so damaged bytes give a [`CodecError`], never a panic.

use thiserror::Error;

/// Batch format version written by this code. Version 2 added the
/// message-continuation bit (the low bit of the source field); version 1
/// batches are still read, every record starting a message.
pub const BATCH_VERSION: u8 = 2;

/// The oldest batch format version this code reads.
pub const OLDEST_BATCH_VERSION: u8 = 1;

/// Most values one record may carry.
pub const MAX_VALUES: usize = 255;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Scale tag meaning "the raw 8 bytes of the `f64` follow".
const RAW_F64: u64 = 15;

/// Largest magnitude stored as a scaled decimal (keeps `zigzag(m) << 4` in a
/// `u64`, and `m` exact in an `f64`).
const MAX_DECIMAL: i64 = 1 << 52;

/// Powers of ten used for decimal packing; exact in `f64`.
const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Bytes of the fixed header: version byte.
const HEADER_LEN: usize = 1;

/// Bytes of the trailer: record count (u32 LE) + CRC-32 (u32 LE).
const TRAILER_LEN: usize = 8;

/// What is wrong with an encoded batch or a sample to encode.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value is shorter than a header and trailer.
    #[error("batch is {len} bytes, shorter than the {min}-byte minimum")]
    TooShort {
        /// Length found.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The CRC does not match: the bytes were changed after they were written.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC stored in the trailer.
        stored: u32,
        /// CRC of the bytes found.
        computed: u32,
    },
    /// A batch written by a newer (or unknown) format.
    #[error("unsupported batch format version {0} (this build reads {OLDEST_BATCH_VERSION} to {BATCH_VERSION})")]
    Version(u8),
    /// A field runs past the end of the batch.
    #[error("record {record}: {field} runs past the end of the batch")]
    Truncated {
        /// Index of the record in the batch.
        record: u32,
        /// Which field.
        field: &'static str,
    },
    /// A field holds a value that cannot be right.
    #[error("record {record}: bad {field}")]
    BadField {
        /// Index of the record in the batch.
        record: u32,
        /// Which field.
        field: &'static str,
    },
    /// The batch has bytes after its last record.
    #[error("{0} trailing bytes after the last record")]
    TrailingBytes(usize),
    /// The batch says it holds no record (the encoder never writes one).
    #[error("batch holds no record")]
    Empty,
    /// A record refers to a key id the dictionary does not have.
    #[error("record {record}: unknown key id {id}")]
    UnknownKey {
        /// Index of the record in the batch.
        record: u32,
        /// The key id.
        id: u32,
    },
    /// A key longer than [`MAX_KEY_LEN`] (when encoding).
    #[error("key is {0} bytes, longer than the {MAX_KEY_LEN}-byte limit")]
    KeyTooLong(usize),
    /// More than [`MAX_VALUES`] values (when encoding).
    #[error("{0} values, more than the limit of {MAX_VALUES}")]
    TooManyValues(usize),
}

/// One decoded sample: what replay hands back to the engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// Index of the pipeline source the sample came in on.
    pub source: u16,
    /// The key (sensor id).
    pub key: &'a str,
    /// Timestamp, in the pipeline's unit.
    pub ts: i64,
    /// The driver's clock when the sample was handed to the engine (the
    /// `now` of `handle_sample`): replay passes it again, so idleness, the
    /// future guard and ingestion time come out the same.
    pub now: i64,
    /// Values, in the order of the source's fields.
    pub values: &'a [f64],
}

/// How a record names its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// An id in the persistent key dictionary.
    Id(u32),
    /// The key bytes, inline (dictionary full).
    Inline(&'a str),
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), table-driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_resume(0, bytes)
}

/// The tables of [`crc32_resume`]: `tables[0]` is the classic
/// byte-at-a-time table; `tables[j][b]` is the CRC of byte `b` followed by
/// `j` zero bytes, so eight bytes are folded in one step
/// ("slicing-by-8"). Computed once, at first use (a few microseconds),
/// rather than stored: 8 KB less in the gateway binary.
fn crc_tables() -> &'static [[u32; 256]; 8] {
    static TABLES: std::sync::OnceLock<Box<[[u32; 256]; 8]>> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Box::new([[0u32; 256]; 8]);
        for i in 0..256 {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            t[0][i] = c;
        }
        for j in 1..8 {
            for i in 0..256 {
                let prev = t[j - 1][i];
                t[j][i] = t[0][(prev & 0xFF) as usize] ^ (prev >> 8);
            }
        }
        t
    })
}

/// The CRC-32 of `a` followed by `bytes`, given `crc = crc32(a)`:
/// `crc32_resume(crc32(a), b) == crc32(a ++ b)`. Eight bytes a step
/// (a journal chunk is checked whole on every replay: byte at a time, the
/// check was a third of decoding it).
pub fn crc32_resume(crc: u32, bytes: &[u8]) -> u32 {
    let t = crc_tables();
    let mut c = !crc;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][w[4] as usize]
            ^ t[2][w[5] as usize]
            ^ t[1][w[6] as usize]
            ^ t[0][w[7] as usize];
    }
    for &b in words.remainder() {
        c = t[0][((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Packs `v` as `zigzag(m) << 4 | k` when `v` is bit-for-bit `m / 10^k`
/// (k ≤ 9): a reading parsed from "21.1234" takes 3–4 bytes instead of 8.
/// Anything else (NaN, −0.0, huge or long values) is stored raw.
fn put_value(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() && v.abs() < MAX_DECIMAL as f64 {
        for (k, &p) in POW10.iter().enumerate() {
            let scaled = v * p;
            if scaled.abs() >= MAX_DECIMAL as f64 {
                break;
            }
            let m = scaled.round() as i64;
            // Decoding computes exactly this expression, so equal bits here
            // mean a bit-exact round trip.
            if (m as f64 / p).to_bits() == v.to_bits() {
                put_varint(buf, (zigzag(m) << 4) | k as u64);
                return;
            }
        }
    }
    put_varint(buf, RAW_F64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Builds one batch value. Reuse it: [`BatchEncoder::finish`] resets it.
#[derive(Debug, Default)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    count: u32,
    prev_ts: i64,
    prev_now: i64,
}

impl BatchEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records in the open batch.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the open batch so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the open batch has no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Checks a sample against the format's limits.
    ///
    /// # Errors
    /// [`CodecError::KeyTooLong`], [`CodecError::TooManyValues`].
    pub fn check(sample: &Sample<'_>) -> Result<(), CodecError> {
        if sample.key.len() > MAX_KEY_LEN {
            return Err(CodecError::KeyTooLong(sample.key.len()));
        }
        if sample.values.len() > MAX_VALUES {
            return Err(CodecError::TooManyValues(sample.values.len()));
        }
        Ok(())
    }

    /// Appends a record: `sample`, its key written as `key`. The caller has
    /// [checked](BatchEncoder::check) it. The record starts a message.
    pub fn push(&mut self, key: KeyRef<'_>, sample: &Sample<'_>) {
        self.push_part(key, sample, false);
    }

    /// As [`push`](BatchEncoder::push); `cont` marks a record that continues
    /// the message of the record before it (a pack of readings in one MQTT
    /// message), so a replay can tell messages apart.
    pub fn push_part(&mut self, key: KeyRef<'_>, sample: &Sample<'_>, cont: bool) {
        if self.count == 0 {
            self.buf.clear();
            self.buf.push(BATCH_VERSION);
            self.prev_ts = 0;
            self.prev_now = 0;
        }
        let Sample {
            source,
            ts,
            now,
            values,
            ..
        } = *sample;
        put_varint(&mut self.buf, ((source as u64) << 1) | cont as u64);
        match key {
            KeyRef::Id(id) => put_varint(&mut self.buf, (id as u64) << 1),
            KeyRef::Inline(k) => {
                put_varint(&mut self.buf, ((k.len() as u64) << 1) | 1);
                self.buf.extend_from_slice(k.as_bytes());
            }
        }
        put_varint(&mut self.buf, zigzag(ts.wrapping_sub(self.prev_ts)));
        self.prev_ts = ts;
        put_varint(&mut self.buf, zigzag(now.wrapping_sub(self.prev_now)));
        self.prev_now = now;
        put_varint(&mut self.buf, values.len() as u64);
        for &v in values {
            put_value(&mut self.buf, v);
        }
        self.count += 1;
    }

    /// Seals the open batch (count + CRC) and hands its bytes to `f`;
    /// the encoder is empty afterwards. Does nothing without records.
    pub fn finish<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.count == 0 {
            return None;
        }
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        let crc = crc32(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.count = 0;
        let r = f(&self.buf);
        self.buf.clear();
        Some(r)
    }
}

/// Checks a batch's length, CRC and version, and returns its record count.
///
/// # Errors
/// [`CodecError::TooShort`], [`CodecError::Checksum`], [`CodecError::Version`].
pub fn batch_count(bytes: &[u8]) -> Result<u32, CodecError> {
    let min = HEADER_LEN + TRAILER_LEN;
    if bytes.len() < min {
        return Err(CodecError::TooShort {
            len: bytes.len(),
            min,
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    if !(OLDEST_BATCH_VERSION..=BATCH_VERSION).contains(&bytes[0]) {
        return Err(CodecError::Version(bytes[0]));
    }
    let n = &body[body.len() - 4..];
    match u32::from_le_bytes(n.try_into().expect("4 bytes")) {
        0 => Err(CodecError::Empty),
        n => Ok(n),
    }
}

/// Reads the records of one batch, one at a time, without allocating per
/// record (the values go into a buffer it keeps).
#[derive(Debug)]
pub struct BatchDecoder<'b> {
    bytes: &'b [u8],
    pos: usize,
    end: usize,
    index: u32,
    count: u32,
    prev_ts: i64,
    prev_now: i64,
    version: u8,
}

/// One record as stored: the key not yet looked up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawRecord<'b> {
    /// Source index.
    pub source: u16,
    /// Key, by dictionary id or inline.
    pub key: KeyRef<'b>,
    /// Timestamp.
    pub ts: i64,
    /// The driver's clock at ingest.
    pub now: i64,
    /// Whether it continues the message of the record before it (always
    /// false in version 1 batches).
    pub cont: bool,
}

impl<'b> BatchDecoder<'b> {
    /// Checks the batch (length, CRC, version) and opens it.
    ///
    /// # Errors
    /// As [`batch_count`].
    pub fn new(bytes: &'b [u8]) -> Result<Self, CodecError> {
        let count = batch_count(bytes)?;
        Ok(BatchDecoder {
            bytes,
            pos: HEADER_LEN,
            end: bytes.len() - TRAILER_LEN,
            index: 0,
            count,
            prev_ts: 0,
            prev_now: 0,
            version: bytes[0],
        })
    }

    /// Records in the batch.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// A LEB128 varint; one-byte ones (most fields of a record) inline.
    #[inline(always)]
    fn varint(&mut self, field: &'static str) -> Result<u64, CodecError> {
        match self.bytes[..self.end].get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(b as u64)
            }
            _ => self.varint_long(field),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.bytes[..self.end].get(self.pos) else {
                return Err(CodecError::Truncated {
                    record: self.index,
                    field,
                });
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(CodecError::BadField {
                    record: self.index,
                    field,
                });
            }
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(CodecError::BadField {
                    record: self.index,
                    field,
                });
            }
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'b [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.end);
        let Some(end) = end else {
            return Err(CodecError::Truncated {
                record: self.index,
                field,
            });
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next record, its values replacing the contents of `values`;
    /// `None` after the last one.
    ///
    /// # Errors
    /// A field is truncated or out of range, or bytes are left over.
    pub fn next_record(
        &mut self,
        values: &mut Vec<f64>,
    ) -> Result<Option<RawRecord<'b>>, CodecError> {
        if self.index == self.count {
            if self.pos != self.end {
                return Err(CodecError::TrailingBytes(self.end - self.pos));
            }
            return Ok(None);
        }
        let record = self.index;
        let bad = |field| CodecError::BadField { record, field };
        let mut source = self.varint("source")?;
        let mut cont = false;
        if self.version >= 2 {
            cont = source & 1 == 1;
            source >>= 1;
        }
        let source = u16::try_from(source).map_err(|_| bad("source"))?;
        let k = self.varint("key")?;
        let key = if k & 1 == 0 {
            KeyRef::Id(u32::try_from(k >> 1).map_err(|_| bad("key id"))?)
        } else {
            let len = usize::try_from(k >> 1).map_err(|_| bad("key length"))?;
            if len > MAX_KEY_LEN {
                return Err(bad("key length"));
            }
            let b = self.take(len, "key")?;
            KeyRef::Inline(core::str::from_utf8(b).map_err(|_| bad("key (not UTF-8)"))?)
        };
        let ts = self
            .prev_ts
            .wrapping_add(unzigzag(self.varint("timestamp")?));
        self.prev_ts = ts;
        let now = self.prev_now.wrapping_add(unzigzag(self.varint("now")?));
        self.prev_now = now;
        let n = self.varint("value count")?;
        if n > MAX_VALUES as u64 {
            return Err(bad("value count"));
        }
        values.clear();
        for _ in 0..n {
            let w = self.varint("value")?;
            let k = (w & 0xF) as usize;
            let v = if w == RAW_F64 {
                let b = self.take(8, "value")?;
                f64::from_le_bytes(b.try_into().expect("8 bytes"))
            } else if k < POW10.len() {
                let m = unzigzag(w >> 4);
                if m.unsigned_abs() >= MAX_DECIMAL as u64 {
                    return Err(bad("value"));
                }
                m as f64 / POW10[k]
            } else {
                return Err(bad("value scale"));
            };
            values.push(v);
        }
        self.index += 1;
        Ok(Some(RawRecord {
            source,
            key,
            ts,
            now,
            cont,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: &[f64]) -> Vec<f64> {
        let mut e = BatchEncoder::new();
        let s = Sample {
            source: 3,
            key: "k",
            ts: -5,
            now: 9,
            values,
        };
        e.push(KeyRef::Inline("k"), &s);
        let bytes = e.finish(|b| b.to_vec()).unwrap();
        let mut d = BatchDecoder::new(&bytes).unwrap();
        let mut out = Vec::new();
        let r = d.next_record(&mut out).unwrap().unwrap();
        assert_eq!(
            (r.source, r.key, r.ts, r.now),
            (3, KeyRef::Inline("k"), -5, 9)
        );
        assert_eq!(d.next_record(&mut Vec::new()).unwrap(), None);
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_resume(crc32(b"1234"), b"56789"), 0xCBF4_3926);
        assert_eq!(crc32_resume(crc32(b""), b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn crc32_eight_at_a_time_equals_byte_at_a_time() {
        fn bytewise(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c = crc_tables()[0][((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
            }
            !c
        }
        // Every length from 0 to 64 (each remainder, several words) and
        // every split point of a resumed CRC, over pseudo-random bytes.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        for n in 0..=64 {
            assert_eq!(crc32(&bytes[..n]), bytewise(&bytes[..n]), "length {n}");
            for k in 0..=n {
                let resumed = crc32_resume(crc32(&bytes[..k]), &bytes[k..n]);
                assert_eq!(resumed, bytewise(&bytes[..n]), "length {n} split at {k}");
            }
        }
        assert_eq!(crc32(&bytes), bytewise(&bytes));
        assert_eq!(crc32(&bytes[3..4000]), bytewise(&bytes[3..4000]));
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        let vs = [
            21.1234,
            -0.0,
            0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -3.0e-7,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            4503599627370495.0,
            -123456.789,
            f64::MAX,
        ];
        let out = roundtrip(&vs);
        for (a, b) in vs.iter().zip(&out) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
    }

    #[test]
    fn decimal_readings_pack_small() {
        let mut e = BatchEncoder::new();
        let s = |ts, now, v| Sample {
            source: 0,
            key: "",
            ts,
            now,
            values: v,
        };
        e.push(
            KeyRef::Id(999),
            &s(1_700_000_000_123, 1_700_000_000_200, &[21.1234]),
        );
        let first = e.len();
        e.push(
            KeyRef::Id(5),
            &s(1_700_000_000_100, 1_700_000_000_201, &[-3.5]),
        );
        // source 1 + key id 1 + ts delta 1 + now delta 1 + count 1 + value 2
        assert_eq!(e.len() - first, 7);
    }

    #[test]
    fn any_flipped_bit_is_an_error() {
        let mut e = BatchEncoder::new();
        for i in 0..20 {
            let v = [i as f64 * 0.5, 1.25];
            let s = Sample {
                source: i,
                key: "",
                ts: i as i64 * 7,
                now: i as i64 * 9,
                values: &v,
            };
            e.push(KeyRef::Id(i as u32), &s);
        }
        let bytes = e.finish(|b| b.to_vec()).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(BatchDecoder::new(&b).is_err(), "bit {i}");
        }
        for n in 0..bytes.len() {
            assert!(BatchDecoder::new(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn message_continuation_bit_roundtrips_and_version_1_still_reads() {
        let s = |source| Sample {
            source,
            key: "k",
            ts: 7,
            now: 8,
            values: &[1.5],
        };
        let mut e = BatchEncoder::new();
        e.push_part(KeyRef::Id(0), &s(3), false);
        e.push_part(KeyRef::Id(0), &s(3), true);
        e.push_part(KeyRef::Id(1), &s(u16::MAX), false);
        e.push_part(KeyRef::Id(1), &s(u16::MAX), true);
        let bytes = e.finish(|b| b.to_vec()).unwrap();
        let mut d = BatchDecoder::new(&bytes).unwrap();
        let mut v = Vec::new();
        let mut got = Vec::new();
        while let Some(r) = d.next_record(&mut v).unwrap() {
            got.push((r.source, r.cont));
        }
        assert_eq!(
            got,
            [(3, false), (3, true), (u16::MAX, false), (u16::MAX, true)]
        );
        // A version 1 batch: source 3, inline key "k", ts 7, now 8, no
        // values; every record starts a message.
        let mut b = vec![1u8, 3, 3, b'k', 14, 16, 0];
        b.extend_from_slice(&1u32.to_le_bytes());
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let mut d = BatchDecoder::new(&b).unwrap();
        let r = d.next_record(&mut v).unwrap().unwrap();
        assert_eq!(
            (r.source, r.key, r.ts, r.now, r.cont),
            (3, KeyRef::Inline("k"), 7, 8, false)
        );
        b[0] = 3;
        let n = b.len();
        let crc = crc32(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(BatchDecoder::new(&b).unwrap_err(), CodecError::Version(3));
    }

    #[test]
    fn garbage_with_a_valid_crc_is_an_error_not_a_panic() {
        let mut rng = crate::gen::SplitMix64::new(42);
        for len in 0..300 {
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if b.len() >= 9 {
                b[0] = BATCH_VERSION;
                let n = b.len();
                let crc = crc32(&b[..n - 4]);
                b[n - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            if let Ok(mut d) = BatchDecoder::new(&b) {
                let mut v = Vec::new();
                for _ in 0..d.count().min(1000) {
                    match d.next_record(&mut v) {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}
