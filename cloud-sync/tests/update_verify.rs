//! Signed pipeline updates: every forgery, replay and misdirection is
//! refused with its reason; a good update is accepted.

use ed25519_dalek::SigningKey;
use weir_cloud_sync::update::{
    self, canonical_bytes, key_id, sign, verify, Status, UpdateRejection, UpdateResult,
};

const PIPE: &str = "[pipeline]\nname = \"w1\"\n\n[[operator]]\nid = \"w\"\n";
const MAX: usize = 64 * 1024;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn gw(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn reason(r: Result<update::VerifiedUpdate, UpdateRejection>) -> &'static str {
    r.expect_err("should be rejected").reason()
}

/// Rewrites the document's fields with minicbor and keeps the old
/// signature: what an attacker who can publish but not sign produces.
fn forge(doc: &[u8], f: impl FnOnce(&mut u64, &mut Vec<String>, &mut String)) -> Vec<u8> {
    let mut d = minicbor::Decoder::new(doc);
    assert_eq!(d.map().unwrap(), Some(5));
    let (mut version, mut targets, mut kid, mut pipe, mut sig) =
        (0u64, Vec::new(), String::new(), String::new(), Vec::new());
    for _ in 0..5 {
        match d.u64().unwrap() {
            0 => version = d.u64().unwrap(),
            1 => {
                let n = d.array().unwrap().unwrap();
                targets = (0..n).map(|_| d.str().unwrap().to_string()).collect();
            }
            2 => kid = d.str().unwrap().to_string(),
            3 => pipe = d.str().unwrap().to_string(),
            4 => sig = d.bytes().unwrap().to_vec(),
            k => panic!("key {k}"),
        }
    }
    f(&mut version, &mut targets, &mut pipe);
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(5).unwrap();
    e.u8(0).unwrap().u64(version).unwrap();
    e.u8(1).unwrap().array(targets.len() as u64).unwrap();
    for t in &targets {
        e.str(t).unwrap();
    }
    e.u8(2).unwrap().str(&kid).unwrap();
    e.u8(3).unwrap().str(&pipe).unwrap();
    e.u8(4).unwrap().bytes(&sig).unwrap();
    e.into_writer()
}

#[test]
fn a_good_update_is_accepted() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1", "gw2"]));
    let v = verify(
        &doc,
        &[key(9).verifying_key(), k.verifying_key()],
        "gw2",
        6,
        MAX,
    )
    .unwrap();
    assert_eq!(v.version, 7);
    assert_eq!(v.pipeline, PIPE);
    assert_eq!(v.targets, gw(&["gw1", "gw2"]));
    assert_eq!(v.key_id, key_id(&k.verifying_key()));
    // Re-encoding the same fields (the forge helper with no change) keeps
    // the signature valid: it covers canonical bytes, not the encoding.
    let same = forge(&doc, |_, _, _| {});
    assert!(verify(&same, &[k.verifying_key()], "gw1", 0, MAX).is_ok());
}

#[test]
fn tampered_pipeline_text_is_a_bad_signature() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    let bad = forge(&doc, |_, _, p| p.push_str("# evil\n"));
    assert_eq!(
        reason(verify(&bad, &[k.verifying_key()], "gw1", 0, MAX)),
        "bad_signature"
    );
    // One flipped byte inside the pipeline text, in place.
    let mut flipped = doc.clone();
    let at = doc.windows(5).position(|w| w == b"name ").unwrap();
    flipped[at] = b'N';
    assert_eq!(
        reason(verify(&flipped, &[k.verifying_key()], "gw1", 0, MAX)),
        "bad_signature"
    );
}

#[test]
fn tampered_version_is_a_bad_signature() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    let bad = forge(&doc, |v, _, _| *v = 1_000);
    assert_eq!(
        reason(verify(&bad, &[k.verifying_key()], "gw1", 0, MAX)),
        "bad_signature"
    );
}

#[test]
fn tampered_targets_are_a_bad_signature() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    let bad = forge(&doc, |_, t, _| t.push("gw2".into()));
    assert_eq!(
        reason(verify(&bad, &[k.verifying_key()], "gw2", 0, MAX)),
        "bad_signature"
    );
}

#[test]
fn replays_are_not_newer() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    let trusted = [k.verifying_key()];
    assert_eq!(reason(verify(&doc, &trusted, "gw1", 7, MAX)), "not_newer");
    assert_eq!(reason(verify(&doc, &trusted, "gw1", 8, MAX)), "not_newer");
    assert_eq!(
        verify(&doc, &trusted, "gw1", 9, MAX),
        Err(UpdateRejection::NotNewer {
            version: 7,
            current: 9
        })
    );
    assert!(verify(&doc, &trusted, "gw1", 6, MAX).is_ok());
}

#[test]
fn an_untrusted_key_is_unknown_and_a_collided_id_is_a_bad_signature() {
    let doc = sign(&key(2), PIPE, 7, &gw(&["gw1"]));
    assert_eq!(
        reason(verify(&doc, &[key(1).verifying_key()], "gw1", 0, MAX)),
        "unknown_key"
    );
    assert_eq!(reason(verify(&doc, &[], "gw1", 0, MAX)), "unknown_key");
    // Someone signs with their own key but names a trusted key's id.
    let trusted = key(1);
    let mallory = key(3);
    let kid = key_id(&trusted.verifying_key());
    let targets = gw(&["gw1"]);
    let sig = ed25519_dalek::Signer::sign(&mallory, &canonical_bytes(7, &targets, &kid, PIPE));
    let mut e = minicbor::Encoder::new(Vec::new());
    e.map(5).unwrap();
    e.u8(0).unwrap().u64(7).unwrap();
    e.u8(1).unwrap().array(1).unwrap().str("gw1").unwrap();
    e.u8(2).unwrap().str(&kid).unwrap();
    e.u8(3).unwrap().str(PIPE).unwrap();
    e.u8(4).unwrap().bytes(&sig.to_bytes()).unwrap();
    let doc = e.into_writer();
    assert_eq!(
        reason(verify(&doc, &[trusted.verifying_key()], "gw1", 0, MAX)),
        "bad_signature"
    );
}

#[test]
fn another_gateways_update_is_wrong_gateway() {
    let k = key(1);
    let doc = sign(&k, PIPE, 7, &gw(&["gw1", "gw2"]));
    assert_eq!(
        reason(verify(&doc, &[k.verifying_key()], "gw3", 0, MAX)),
        "wrong_gateway"
    );
    let none = sign(&k, PIPE, 7, &[]);
    assert_eq!(
        reason(verify(&none, &[k.verifying_key()], "gw1", 0, MAX)),
        "wrong_gateway"
    );
}

#[test]
fn malformed_documents_are_malformed() {
    let k = key(1);
    let trusted = [k.verifying_key()];
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    for bad in [
        &b""[..],
        b"\xff",
        b"{\"version\": 7}",
        b"\xa0",                     // empty map: no fields
        b"\xa1\x00\x07",             // version only
        b"\x9f\xff",                 // indefinite array
        b"\xbf\x00\x07\xff",         // indefinite map
        b"\xa1\x00\x1b\xff\xff\xff", // truncated integer
    ] {
        assert_eq!(
            reason(verify(bad, &trusted, "gw1", 0, MAX)),
            "malformed",
            "{bad:?}"
        );
    }
    for cut in [1, doc.len() / 2, doc.len() - 1] {
        assert_eq!(
            reason(verify(&doc[..cut], &trusted, "gw1", 0, MAX)),
            "malformed"
        );
    }
    let mut trailing = doc.clone();
    trailing.push(0);
    assert_eq!(
        reason(verify(&trailing, &trusted, "gw1", 0, MAX)),
        "malformed"
    );
    // A short signature.
    let short = {
        let mut v = doc[..doc.len() - 66].to_vec();
        v.extend_from_slice(&[0x58, 0x20]);
        v.extend_from_slice(&[0; 32]);
        v
    };
    assert_eq!(reason(verify(&short, &trusted, "gw1", 0, MAX)), "malformed");
}

#[test]
fn oversized_documents_are_refused_before_decoding() {
    let k = key(1);
    let big = "#".repeat(10_000);
    let doc = sign(&k, &big, 7, &gw(&["gw1"]));
    let r = verify(&doc, &[k.verifying_key()], "gw1", 0, 4096).unwrap_err();
    assert_eq!(r.reason(), "oversized");
    assert_eq!(
        r,
        UpdateRejection::Oversized {
            len: doc.len(),
            max: 4096
        }
    );
    assert_eq!(
        reason(verify(&[0xff; 5000], &[k.verifying_key()], "gw1", 0, 4096)),
        "oversized"
    );
    assert!(verify(&doc, &[k.verifying_key()], "gw1", 0, doc.len()).is_ok());
}

#[test]
fn reasons_are_stable_strings() {
    assert_eq!(
        UpdateRejection::InvalidPipeline("x:1:1".into()).reason(),
        "invalid_pipeline"
    );
    let m = UpdateRejection::Malformed("no version".into());
    assert_eq!(m.reason(), "malformed");
    assert!(m.to_string().contains("no version"));
}

#[test]
fn garbage_never_panics() {
    let k = key(1);
    let trusted = [k.verifying_key()];
    let doc = sign(&k, PIPE, 7, &gw(&["gw1"]));
    // Every single-byte corruption of a good document is refused.
    // (Signature checks are slow in debug builds: one flip per byte, and
    // type-confusing bytes in the head where the structure is.)
    for i in 0..doc.len() {
        let mut d = doc.clone();
        d[i] ^= 0x01;
        assert!(verify(&d, &trusted, "gw1", 0, MAX).is_err(), "byte {i} ^ 1");
    }
    for i in 0..doc.len().min(40) {
        for x in [0x00u8, 0xff, 0x1b, 0x5b, 0x7b, 0x9b, 0xbb] {
            let mut d = doc.clone();
            if d[i] != x {
                d[i] = x;
                assert!(
                    verify(&d, &trusted, "gw1", 0, MAX).is_err(),
                    "byte {i} = {x:#x}"
                );
            }
        }
    }
}

#[test]
fn status_round_trips_in_cbor_and_json() {
    let s = Status {
        gateway: "gw1".into(),
        current_version: 7,
        last_result: UpdateResult::Rejected,
        reason: Some("not_newer".into()),
        last_version: Some(6),
        kept: vec!["w".into(), "d".into()],
        reset: vec!["p".into()],
        updated_at: 1_700_000_000_000,
    };
    assert_eq!(Status::from_cbor(&s.to_cbor()).unwrap(), s);
    assert_eq!(Status::from_json(&s.to_json()).unwrap(), s);
    let none = Status {
        reason: None,
        last_version: None,
        last_result: UpdateResult::None,
        ..s
    };
    assert_eq!(Status::from_cbor(&none.to_cbor()).unwrap(), none);
    let b = none.to_cbor();
    for cut in 0..b.len() {
        assert!(Status::from_cbor(&b[..cut]).is_err());
    }
    assert!(Status::from_cbor(b"\xa0").is_err());
}
