//! Several `GROUP BY` key columns and grouping sets (`GROUPING SETS`,
//! `ROLLUP`, `CUBE`).
//!
//! The engine keys samples by one string, so the key columns of a sample
//! are joined into one composite key before the engine and split back into
//! the window row's key columns after it. Each grouping set has its own
//! engine source (the same fields, filter and computed fields) and its own
//! window operators; a sample goes into every set's source, keyed by the
//! set's columns. A column a set does not group by is marked absent in the
//! key and is `NULL` in that set's rows.
//!
//! Composite key: per key column, in [`Groups::cols`] order, U+001F and
//! the value (U+001F, U+001E and U+001B in it escaped by U+001B), or
//! U+001E for a column the set does not group by. It is never empty.

use std::fmt::Write as _;

use sqlparser::ast::Expr as SExpr;
use sqlparser::tokenizer::Location;
use weir_core::expr::{Expr, Value};

use super::ddl::{SqlType, Table};
use super::{Err, SqlError};

/// Starts a column the key holds.
const PRESENT: char = '\u{1f}';
/// A column the grouping set does not group by (`NULL`).
const ABSENT: char = '\u{1e}';
/// Escapes the next character of a value.
const ESCAPE: char = '\u{1b}';
/// Placeholder base for key column `i` in the window row until the slot,
/// flag and key counts are known.
pub(super) const KEYS_BASE: u16 = 15_000;
/// Most grouping sets in one query (each runs its own operators).
pub(super) const MAX_SETS: usize = 16;

/// A query's key columns and grouping sets ([`super::plan::Query::groups`]).
#[derive(Debug, Clone)]
pub struct Groups {
    /// The key columns: name and type, plain `GROUP BY` columns first, then
    /// those of the grouping sets, in order of first use.
    pub cols: Vec<(String, SqlType)>,
    /// Per grouping set (engine source `i`): bit `j` set when it groups by
    /// column `j`. One set, all the columns, without grouping sets.
    pub sets: Vec<u32>,
}

impl Groups {
    /// The groups of plain key columns `keys` and the grouping sets of a
    /// `GROUPING SETS` / `ROLLUP` / `CUBE` (column indices of `table`);
    /// `None` for at most one key column without grouping sets.
    pub(super) fn of(
        table: &Table,
        keys: &[usize],
        grouping: Option<(Vec<Vec<usize>>, Location)>,
        at: Location,
    ) -> Err<Option<Groups>> {
        if grouping.is_none() && keys.len() <= 1 {
            return Ok(None);
        }
        let mut cols = keys.to_vec();
        for s in grouping.iter().flat_map(|g| &g.0) {
            for c in s {
                if !cols.contains(c) {
                    cols.push(*c);
                }
            }
        }
        if cols.len() > 8 {
            return Err(SqlError::unsupported(
                at,
                "more than 8 key columns",
                "at most 8 key columns in GROUP BY",
            ));
        }
        let bits = |s: &[usize]| {
            s.iter().fold(0u32, |m, c| {
                m | 1 << cols.iter().position(|k| k == c).expect("listed")
            })
        };
        let plain = bits(keys);
        let sets: Vec<u32> = match &grouping {
            None => vec![plain],
            Some((g, _)) => g.iter().map(|s| plain | bits(s)).collect(),
        };
        if let Some((_, gat)) = &grouping {
            if sets.len() > MAX_SETS {
                return Err(SqlError::unsupported(
                    *gat,
                    &format!("{} grouping sets", sets.len()),
                    &format!("at most {MAX_SETS} grouping sets (CUBE of at most 4 columns)"),
                ));
            }
            if (1..sets.len()).any(|i| sets[..i].contains(&sets[i])) {
                return Err(SqlError::unsupported(
                    *gat,
                    "the same grouping set twice",
                    "list each grouping set once",
                ));
            }
        }
        Ok(Some(Groups {
            cols: cols
                .iter()
                .map(|&c| (table.columns[c].name.clone(), table.columns[c].ty))
                .collect(),
            sets,
        }))
    }

    /// A set's columns joined by `,` (`()` for none).
    pub fn label(&self, set: usize) -> String {
        let cols: Vec<&str> = (0..self.cols.len())
            .filter(|j| self.sets[set] & (1 << j) != 0)
            .map(|j| self.cols[j].0.as_str())
            .collect();
        format!("({})", cols.join(", "))
    }

    /// The suffix of grouping set `set`'s operator and source ids: `@`
    /// and its columns joined by `+` (`@` alone for the empty set); none
    /// without grouping sets.
    pub fn suffix(&self, set: usize) -> String {
        if self.sets.len() == 1 {
            return String::new();
        }
        let cols: Vec<&str> = (0..self.cols.len())
            .filter(|j| self.sets[set] & (1 << j) != 0)
            .map(|j| self.cols[j].0.as_str())
            .collect();
        format!("@{}", cols.join("+"))
    }

    /// Writes grouping set `set`'s composite key of a sample whose key
    /// column `j` is `text(j)` (a missing one is empty) into `out`.
    pub fn key<'t>(&self, set: usize, text: impl Fn(usize) -> Option<&'t str>, out: &mut String) {
        self.key_of(self.sets[set], text, out);
    }

    /// The composite key with every key column present: what `weir run`
    /// journals as a reading's key (each set's is made again from its
    /// [`values`]).
    pub fn full_key<'t>(&self, text: impl Fn(usize) -> Option<&'t str>, out: &mut String) {
        self.key_of(u32::MAX, text, out);
    }

    /// A composite key as people read it, for message ids and topics: the
    /// key columns' values joined by `,`, `*` for a column its grouping set
    /// does not group by (the rows it sums over), with `%`, `,` and `*`
    /// in values written `%25`, `%2C`, `%2A` so that different keys never
    /// read the same.
    pub fn display(&self, key: &str) -> String {
        let mut out = String::with_capacity(key.len());
        for (j, v) in values(key).enumerate() {
            if j > 0 {
                out.push(',');
            }
            let Some(v) = v else {
                out.push('*');
                continue;
            };
            for c in v.chars() {
                match c {
                    '%' => out.push_str("%25"),
                    ',' => out.push_str("%2C"),
                    '*' => out.push_str("%2A"),
                    c => out.push(c),
                }
            }
        }
        out
    }

    fn key_of<'t>(&self, mask: u32, text: impl Fn(usize) -> Option<&'t str>, out: &mut String) {
        out.clear();
        for j in 0..self.cols.len() {
            if mask & (1 << j) == 0 {
                out.push(ABSENT);
                continue;
            }
            out.push(PRESENT);
            let v = text(j).unwrap_or("");
            // An INT/BIGINT groups by its value: ` 012` is 12.
            if self.cols[j].1 != SqlType::String {
                if let Ok(n) = v.trim().parse::<i64>() {
                    let _ = write!(out, "{n}");
                    continue;
                }
            }
            for c in v.chars() {
                if matches!(c, PRESENT | ABSENT | ESCAPE) {
                    out.push(ESCAPE);
                }
                out.push(c);
            }
        }
    }

    /// Appends the key columns of a composite key to a window row: a
    /// `STRING` as text, an `INT`/`BIGINT` as a number (`NULL` if it is
    /// not one), an absent column as `NULL`; then per column its grouping
    /// bit (`GROUPING(col)`: 1 when absent, else 0).
    pub fn split(&self, key: &str, row: &mut Vec<Value>) {
        let mut bits = Vec::with_capacity(self.cols.len());
        let mut vals = values(key);
        for (_, ty) in &self.cols {
            let v = vals.next().flatten();
            bits.push(if v.is_some() { 0.0 } else { 1.0 });
            row.push(match (v, ty) {
                (None, _) => Value::Null,
                (Some(s), SqlType::String) => Value::Str(s.into_owned()),
                (Some(s), _) => s.trim().parse().map_or(Value::Null, Value::Num),
            });
        }
        row.extend(bits.into_iter().map(Value::Num));
    }
}

/// The key columns of a composite key, in order: a column's value
/// (unescaped; borrowed unless it held an escape), `None` for one its
/// grouping set leaves out.
pub fn values(key: &str) -> impl Iterator<Item = Option<std::borrow::Cow<'_, str>>> + '_ {
    let mut rest = key;
    std::iter::from_fn(move || {
        let mut chars = rest.chars();
        let mark = chars.next()?;
        let body = chars.as_str();
        if mark != PRESENT {
            rest = body;
            return Some(None);
        }
        // The value runs to the next mark that no escape precedes.
        let (mut end, mut escaped, mut escapes) = (body.len(), false, false);
        for (i, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == ESCAPE {
                escaped = true;
                escapes = true;
            } else if c == PRESENT || c == ABSENT {
                end = i;
                break;
            }
        }
        let (v, after) = body.split_at(end);
        rest = after;
        Some(Some(if escapes {
            let mut s = String::with_capacity(v.len());
            let mut cs = v.chars();
            while let Some(c) = cs.next() {
                s.extend(if c == ESCAPE { cs.next() } else { Some(c) });
            }
            std::borrow::Cow::Owned(s)
        } else {
            std::borrow::Cow::Borrowed(v)
        }))
    })
}

/// The grouping sets of one `GROUPING SETS (…)`, `ROLLUP (…)` or `CUBE
/// (…)` element of `GROUP BY`, each a list of expressions (Flink's
/// expansion: `ROLLUP (a, b)` is `(a, b), (a), ()`; `CUBE (a, b)` is `(a,
/// b), (a), (b), ()`); `None` for another element.
pub(super) fn expand(e: &SExpr) -> Option<Vec<Vec<&SExpr>>> {
    fn all<'e>(v: &'e [Vec<SExpr>], keep: &dyn Fn(usize) -> bool) -> Vec<&'e SExpr> {
        v.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .flat_map(|(_, g)| g.iter())
            .collect()
    }
    Some(match e {
        SExpr::GroupingSets(v) => v.iter().map(|s| s.iter().collect()).collect(),
        SExpr::Rollup(v) => (0..=v.len()).rev().map(|n| all(v, &|i| i < n)).collect(),
        SExpr::Cube(v) => {
            let n = v.len().min(8);
            (0..1usize << n)
                .map(|m| all(v, &|i| m & (1 << (n - 1 - i)) == 0))
                .collect()
        }
        _ => return None,
    })
}

/// Replaces key column placeholders once the row's layout is known: key
/// column `i` is at `base + i`.
pub(super) fn place_keys(e: &mut Expr, base: u16, nkeys: u16) {
    *e = e
        .map_cols(&|c| {
            Some(if (KEYS_BASE..KEYS_BASE + nkeys).contains(&c) {
                base + (c - KEYS_BASE)
            } else {
                c
            })
        })
        .expect("every column maps");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_columns() {
        let g = Groups {
            cols: vec![
                ("a".into(), SqlType::String),
                ("b".into(), SqlType::Int),
                ("c".into(), SqlType::String),
            ],
            sets: vec![0b111, 0b101, 0],
        };
        let texts = ["x\u{1f}y\u{1b}\u{1e}", "42", ""];
        let mut k = String::new();
        let mut row = Vec::new();
        g.key(0, |j| Some(texts[j]), &mut k);
        g.split(&k, &mut row);
        assert_eq!(
            row,
            [
                Value::Str(texts[0].into()),
                Value::Num(42.0),
                Value::Str(String::new()),
                Value::Num(0.0),
                Value::Num(0.0),
                Value::Num(0.0)
            ]
        );
        row.clear();
        g.key(1, |j| Some(texts[j]), &mut k);
        g.split(&k, &mut row);
        assert_eq!(row[1], Value::Null);
        assert_eq!(row[0], Value::Str(texts[0].into()));
        assert_eq!(
            row[3..],
            [Value::Num(0.0), Value::Num(1.0), Value::Num(0.0)]
        );
        row.clear();
        g.key(2, |j| Some(texts[j]), &mut k);
        assert!(!k.is_empty());
        g.split(&k, &mut row);
        assert_eq!(row[..3], [Value::Null, Value::Null, Value::Null]);
        assert_eq!(
            row[3..],
            [Value::Num(1.0), Value::Num(1.0), Value::Num(1.0)]
        );
        assert_eq!((g.suffix(1), g.suffix(2)), ("@a+c".into(), "@".into()));
        // Each set's key, made again from the full key's values, is the
        // key made from the sample's.
        let mut full = String::new();
        let mut p = String::new();
        g.full_key(|j| Some(texts[j]), &mut full);
        let vals: Vec<_> = values(&full).collect();
        for set in 0..3 {
            g.key(set, |j| Some(texts[j]), &mut k);
            g.key(set, |j| vals[j].as_deref(), &mut p);
            assert_eq!(p, k, "set {set}");
        }
        // Shown to people, unambiguously.
        let shown = |t: [&str; 3], set: usize| {
            let mut k = String::new();
            g.key(set, |j| Some(t[j]), &mut k);
            g.display(&k)
        };
        assert_eq!(shown(["north", "2", "x"], 0), "north,2,x");
        assert_eq!(shown(["north", "2", "x"], 1), "north,*,x");
        assert_eq!(shown(["north", "2", "x"], 2), "*,*,*");
        assert_eq!(shown(["a,b", "2", "*"], 0), "a%2Cb,2,%2A");
        assert_eq!(shown(["%", "", "\u{1f}"], 0), "%25,,\u{1f}");
        assert_ne!(shown(["", "", ""], 0), shown(["", "", ""], 2));
        // An INT groups by its value.
        let mut k2 = String::new();
        g.key(0, |j| Some(["a", "42", ""][j]), &mut k);
        g.key(0, |j| Some(["a", " 042", ""][j]), &mut k2);
        assert_eq!(k, k2);
    }
}
