//! Crafted snapshots that are well-formed CBOR but inconsistent are refused
//! by restore (found by review: they used to be accepted and break later).

mod common;
use common::*;
use weir_core::prelude::*;

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[test]
fn a_window_ending_before_it_starts_is_refused() {
    let s = spec(WindowKind::Tumbling { size: 40 }, 0, 0);
    let mut e = s.clone().build().unwrap();
    e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    let mut b = e.snapshot().unwrap();
    let mut pat = vec![0x1b];
    pat.extend_from_slice(&((T0 + 40) as u64).to_be_bytes());
    let i = find(&b, &pat).expect("end encoded");
    // CBOR negative integer -1 - i64::MAX = i64::MIN as the window's end.
    b[i] = 0x3b;
    b[i + 1..i + 9].copy_from_slice(&(i64::MAX as u64).to_be_bytes());
    let mut f = s.build().unwrap();
    assert!(f.restore(&b).is_err());
    // The engine is left fresh and usable.
    f.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    f.handle_end_of_input();
    assert!(f.poll_output().is_some());
}

#[test]
fn an_id_in_both_free_lists_is_refused() {
    let mut s = spec(WindowKind::Tumbling { size: 10 }, 0, 0);
    s.state.ttl = Some(100);
    let mut e = s.clone().build().unwrap();
    e.handle_sample(T0, 0, "a", T0, &[1.0]).unwrap();
    e.handle_sample(T0, 0, "b", T0 + 1000, &[1.0]).unwrap();
    while e.poll_output().is_some() {}
    assert_eq!(e.stats().keys_evicted, 1);
    let b = e.snapshot().unwrap();
    // ... free [], pending [0]  ->  free [0], pending [0]
    let i = find(&b, &[0x80, 0x81, 0x00]).expect("free lists");
    let mut c = b[..i].to_vec();
    c.extend_from_slice(&[0x81, 0x00, 0x81, 0x00]);
    c.extend_from_slice(&b[i + 3..]);
    let mut f = s.clone().build().unwrap();
    assert!(f.restore(&c).is_err());
    // The unmodified snapshot restores.
    assert!(s.build().unwrap().restore(&b).is_ok());
}
