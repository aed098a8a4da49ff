//! The reference for `weir replay`'s speed: a single-purpose, hand-written
//! loop doing exactly W1's work on the same file (CSV parsing, per-sensor
//! 10 s tumbling windows, the 2 s watermark, late accounting, EWMA flags,
//! the same output bytes), with no engine in between.
//!
//! `cargo run --release --example w1_loop -- INPUT OUTPUT`

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::{Read, Write};
use std::time::Instant;

use weir_agent::numfmt::{push_f64, push_i64, push_u64};
use weir_core::keys::FxHasher;

const SIZE: i64 = 10_000;
const BOUND: i64 = 2_000;
/// weir's default plausible range: 2000-01-01 to 2200-01-01.
const MIN_TS: i64 = 946_684_800_000;
const MAX_TS: i64 = 7_258_118_400_000;

#[derive(Clone, Copy)]
struct Win {
    start: i64,
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

#[derive(Default)]
struct Sensor {
    wins: Vec<Win>,
    seen: u32,
    mean: f64,
    var: f64,
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, d) = if b.first() == Some(&b'-') {
        (true, &b[1..])
    } else {
        (false, b)
    };
    let mut v = 0i64;
    for &c in d {
        let x = c.wrapping_sub(b'0');
        if x > 9 {
            return None;
        }
        v = v * 10 + x as i64;
    }
    Some(if neg { -v } else { v })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = (&args[1], &args[2]);
    let t = Instant::now();
    let mut f = std::fs::File::open(input).expect("input");
    let mut out = std::io::BufWriter::new(std::fs::File::create(output).expect("output"));
    let mut ids: HashMap<Box<str>, u32, BuildHasherDefault<FxHasher>> = HashMap::default();
    let mut names: Vec<Box<str>> = Vec::new();
    let mut sensors: Vec<Sensor> = Vec::new();
    let mut timers: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    let mut next_timer = i64::MAX;
    let mut wm = i64::MIN;
    let (mut rows, mut late, mut windows, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut ob: Vec<u8> = Vec::with_capacity(1 << 17);
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;

    let fire = |s: &mut Sensor, name: &str, end: i64, ob: &mut Vec<u8>| {
        let i = s
            .wins
            .iter()
            .position(|w| w.start + SIZE == end)
            .expect("window");
        let w = s.wins.remove(i);
        let sd = (w.m2 / w.n as f64).max(0.0).sqrt();
        let flag = if s.seen == 0 {
            s.seen = 1;
            s.mean = w.mean;
            s.var = 0.0;
            false
        } else {
            let d = w.mean - s.mean;
            let flag = s.seen >= 5 && d.abs() > 3.0 * s.var.sqrt();
            s.mean += 0.1 * d;
            s.var = 0.9 * (s.var + 0.1 * d * d);
            s.seen += 1;
            flag
        };
        ob.extend_from_slice(name.as_bytes());
        ob.push(b',');
        push_i64(ob, w.start);
        ob.push(b',');
        push_i64(ob, end);
        ob.push(b',');
        push_u64(ob, w.n);
        for v in [w.mean, w.min, w.max, sd] {
            ob.push(b',');
            push_f64(ob, v);
        }
        ob.extend_from_slice(if flag { b",true\n" } else { b",false\n" });
    };

    loop {
        let n = f.read(&mut buf[filled..]).expect("read");
        filled += n;
        let mut pos = 0;
        while let Some(nl) = buf[pos..filled].iter().position(|&c| c == b'\n') {
            let line = &buf[pos..pos + nl];
            pos += nl + 1;
            rows += 1;
            // The same checks weir makes on every row: a bad row is counted
            // and skipped, never a panic.
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(c1) = line.iter().position(|&c| c == b',') else {
                bad += 1;
                continue;
            };
            let Some(c2) = line[c1 + 1..]
                .iter()
                .position(|&c| c == b',')
                .map(|p| c1 + 1 + p)
            else {
                bad += 1;
                continue;
            };
            let (Ok(name), Some(ts), Ok(Ok(x))) = (
                std::str::from_utf8(&line[..c1]),
                parse_i64(&line[c1 + 1..c2]),
                std::str::from_utf8(&line[c2 + 1..]).map(str::parse::<f64>),
            ) else {
                bad += 1;
                continue;
            };
            if !x.is_finite()
                || !(MIN_TS..=MAX_TS).contains(&ts)
                || name.is_empty()
                || name.len() > 256
            {
                bad += 1;
                continue;
            }
            let id = match ids.get(name) {
                Some(&id) => id,
                None => {
                    let id = names.len() as u32;
                    ids.insert(name.into(), id);
                    names.push(name.into());
                    sensors.push(Sensor::default());
                    id
                }
            };
            let start = ts - ts.rem_euclid(SIZE);
            if wm >= start + SIZE - 1 {
                late += 1;
            } else {
                let s = &mut sensors[id as usize];
                match s.wins.iter_mut().find(|w| w.start == start) {
                    Some(w) => {
                        w.n += 1;
                        let d = x - w.mean;
                        let dn = d / w.n as f64;
                        w.mean += dn;
                        w.m2 += d * dn * (w.n - 1) as f64;
                        w.min = w.min.min(x);
                        w.max = w.max.max(x);
                    }
                    None => {
                        s.wins.push(Win {
                            start,
                            n: 1,
                            mean: x,
                            m2: 0.0,
                            min: x,
                            max: x,
                        });
                        let at = start + SIZE - 1;
                        timers.entry(at).or_default().push(id);
                        next_timer = next_timer.min(at);
                    }
                }
            }
            wm = wm.max(ts - BOUND);
            while next_timer <= wm {
                let (at, keys) = timers.pop_first().expect("timer");
                for k in keys {
                    fire(
                        &mut sensors[k as usize],
                        &names[k as usize],
                        at + 1,
                        &mut ob,
                    );
                    windows += 1;
                }
                next_timer = timers.first_key_value().map_or(i64::MAX, |(t, _)| *t);
            }
            if ob.len() > 1 << 16 {
                out.write_all(&ob).expect("write");
                ob.clear();
            }
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        if n == 0 {
            break;
        }
    }
    while let Some((at, keys)) = timers.pop_first() {
        for k in keys {
            fire(
                &mut sensors[k as usize],
                &names[k as usize],
                at + 1,
                &mut ob,
            );
            windows += 1;
        }
    }
    out.write_all(&ob).expect("write");
    out.flush().expect("flush");
    let secs = t.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_default();
    eprintln!(
        "w1_loop: {rows} rows in {secs:.3} s ({:.2} M rows/s): {windows} windows, {late} late, {bad} bad rows; peak RSS {rss} KiB",
        rows as f64 / secs / 1e6
    );
}
