//! Signed pipeline updates: the document a fleet operator publishes on
//! `weir/<gateway>/pipeline/set`, how it is signed, and how a gateway
//! verifies it; and the status document the gateway publishes retained on
//! `weir/<gateway>/pipeline/status` (`docs/wire.md`).
//!
//! The signature (Ed25519, [`ed25519_dalek`]) covers **canonical bytes**
//! ([`canonical_bytes`]), never the CBOR document itself, so a document can
//! be re-encoded without breaking it and two encodings cannot mean two
//! things:
//!
//! ```text
//! "weir-update-v1"                       14 bytes, domain separation
//! version                                u64 big-endian
//! target count                           u32 big-endian
//! per target: len u32 BE, UTF-8 bytes    the gateway ids
//! key id:     len u32 BE, UTF-8 bytes
//! pipeline:   len u32 BE, UTF-8 bytes    the pipeline file (TOML)
//! ```
//!
//! The document is a CBOR map: `0` version (uint), `1` targets (array of
//! text), `2` key id (text), `3` pipeline (text), `4` signature (64-byte
//! bytes). Verification checks, in order: size, shape, key, signature,
//! target, version; pipeline validation is the agent's
//! ([`UpdateRejection::InvalidPipeline`]).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::cbor;

/// Domain-separation prefix of the signed bytes.
pub const DOMAIN: &[u8] = b"weir-update-v1";

/// Default bound on an update document's size (a pipeline file is a few KB).
pub const DEFAULT_MAX_DOC_BYTES: usize = 256 * 1024;

/// The id of a public key: the first 8 bytes of the key, in lowercase hex
/// (16 characters). It only selects the key; the signature binds the whole
/// key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&key.as_bytes()[..8])
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

fn put_lp(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths above u32::MAX cannot reach here: documents are bounded far
    // below that before anything is signed or verified; saturate anyway.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

/// The bytes an update's signature covers (layout in the module docs).
pub fn canonical_bytes(version: u64, targets: &[String], key_id: &str, pipeline: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 32 + pipeline.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(targets.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for t in targets {
        put_lp(&mut out, t.as_bytes());
    }
    put_lp(&mut out, key_id.as_bytes());
    put_lp(&mut out, pipeline.as_bytes());
    out
}

/// Signs an update and returns the document to publish (CBOR).
pub fn sign(key: &SigningKey, pipeline: &str, version: u64, targets: &[String]) -> Vec<u8> {
    let kid = key_id(&key.verifying_key());
    let sig = key.sign(&canonical_bytes(version, targets, &kid, pipeline));
    encode_doc(version, targets, &kid, pipeline, &sig.to_bytes())
}

fn encode_doc(version: u64, targets: &[String], kid: &str, pipeline: &str, sig: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pipeline.len() + 128);
    cbor::map(&mut out, 5);
    cbor::uint(&mut out, 0);
    cbor::uint(&mut out, version);
    cbor::uint(&mut out, 1);
    cbor::array(&mut out, targets.len() as u64);
    for t in targets {
        cbor::text(&mut out, t);
    }
    cbor::uint(&mut out, 2);
    cbor::text(&mut out, kid);
    cbor::uint(&mut out, 3);
    cbor::text(&mut out, pipeline);
    cbor::uint(&mut out, 4);
    cbor::bytes(&mut out, sig);
    out
}

/// An update whose signature, target and version checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedUpdate {
    /// The new version (above the one the gateway passed to [`verify`]).
    pub version: u64,
    /// The gateways it is for.
    pub targets: Vec<String>,
    /// Which trusted key signed it.
    pub key_id: String,
    /// The pipeline file (TOML); not yet validated.
    pub pipeline: String,
}

/// Why an update was refused. [`reason`](UpdateRejection::reason) is the
/// stable string reported in the status document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateRejection {
    /// The signature does not verify against the named key (the document
    /// was altered, or signed by someone else under that id).
    #[error("update rejected: bad signature (key {key_id})")]
    BadSignature {
        /// The key id the document named.
        key_id: String,
    },
    /// The document names a key this gateway does not trust.
    #[error(
        "update rejected: unknown key {key_id}; add its public key to the gateway's trusted keys"
    )]
    UnknownKey {
        /// The key id the document named.
        key_id: String,
    },
    /// Its version is not above the newest the gateway accepted (a replay,
    /// also of an update that was rolled back, or a stale push).
    #[error("update rejected: version {version} is not above {current}, the newest version this gateway accepted (sign it as a higher version)")]
    NotNewer {
        /// The document's version.
        version: u64,
        /// The version it must exceed: the newest the gateway ever
        /// accepted (the `current_version` argument of [`verify`]).
        current: u64,
    },
    /// The update is for other gateways.
    #[error("update rejected: for gateways {targets:?}, not {gateway}")]
    WrongGateway {
        /// This gateway.
        gateway: String,
        /// The document's targets.
        targets: Vec<String>,
    },
    /// Not an update document.
    #[error("update rejected: malformed document: {0}")]
    Malformed(String),
    /// Larger than the gateway accepts.
    #[error("update rejected: document of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// The document's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The agent's pipeline validation refused the pipeline (the message
    /// says where, as `weir check` would).
    #[error("update rejected: invalid pipeline: {0}")]
    InvalidPipeline(String),
    /// Another update is on trial (its health check runs); push again once
    /// its status is final.
    #[error("update rejected: version {version} arrived while version {on_trial} runs its health check; push it again once that one is applied or rolled back")]
    Busy {
        /// The document's version.
        version: u64,
        /// The version on trial.
        on_trial: u64,
    },
}

impl UpdateRejection {
    /// The stable machine-readable reason: `bad_signature`, `unknown_key`,
    /// `not_newer`, `wrong_gateway`, `malformed`, `oversized`,
    /// `invalid_pipeline`, `busy`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpdateRejection::BadSignature { .. } => "bad_signature",
            UpdateRejection::UnknownKey { .. } => "unknown_key",
            UpdateRejection::NotNewer { .. } => "not_newer",
            UpdateRejection::WrongGateway { .. } => "wrong_gateway",
            UpdateRejection::Malformed(_) => "malformed",
            UpdateRejection::Oversized { .. } => "oversized",
            UpdateRejection::InvalidPipeline(_) => "invalid_pipeline",
            UpdateRejection::Busy { .. } => "busy",
        }
    }
}

struct Doc {
    version: u64,
    targets: Vec<String>,
    key_id: String,
    pipeline: String,
    signature: [u8; 64],
}

fn decode_doc(bytes: &[u8]) -> Result<Doc, String> {
    let mut d = minicbor::Decoder::new(bytes);
    let e = |e: minicbor::decode::Error| e.to_string();
    let n = d.map().map_err(e)?.ok_or("indefinite-length map")?;
    let (mut version, mut targets, mut kid, mut pipeline, mut sig) = (None, None, None, None, None);
    for _ in 0..n {
        let k = d.u64().map_err(e)?;
        match k {
            0 if version.is_none() => version = Some(d.u64().map_err(e)?),
            1 if targets.is_none() => {
                let len = d.array().map_err(e)?.ok_or("indefinite-length targets")?;
                let mut ts = Vec::with_capacity(len.min(64) as usize);
                for _ in 0..len {
                    ts.push(d.str().map_err(e)?.to_string());
                }
                targets = Some(ts);
            }
            2 if kid.is_none() => kid = Some(d.str().map_err(e)?.to_string()),
            3 if pipeline.is_none() => pipeline = Some(d.str().map_err(e)?.to_string()),
            4 if sig.is_none() => {
                let b = d.bytes().map_err(e)?;
                let arr: [u8; 64] = b
                    .try_into()
                    .map_err(|_| format!("signature of {} bytes, expected 64", b.len()))?;
                sig = Some(arr);
            }
            0..=4 => return Err(format!("key {k} repeated")),
            _ => return Err(format!("unknown key {k}")),
        }
    }
    if d.position() != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - d.position()));
    }
    Ok(Doc {
        version: version.ok_or("no version (0)")?,
        targets: targets.ok_or("no targets (1)")?,
        key_id: kid.ok_or("no key id (2)")?,
        pipeline: pipeline.ok_or("no pipeline (3)")?,
        signature: sig.ok_or("no signature (4)")?,
    })
}

/// Verifies an update document for `gateway`; its version must be above
/// `current_version` (a gateway passes the newest version it ever accepted,
/// so an update that was rolled back cannot be replayed).
///
/// # Errors
/// The first check that fails, in this order: [`Oversized`], [`Malformed`],
/// [`UnknownKey`], [`BadSignature`], [`WrongGateway`], [`NotNewer`]. Only
/// authenticated documents get as far as the target and version checks, so
/// a forged document is reported as forged, whatever it claims.
///
/// [`Oversized`]: UpdateRejection::Oversized
/// [`Malformed`]: UpdateRejection::Malformed
/// [`UnknownKey`]: UpdateRejection::UnknownKey
/// [`BadSignature`]: UpdateRejection::BadSignature
/// [`WrongGateway`]: UpdateRejection::WrongGateway
/// [`NotNewer`]: UpdateRejection::NotNewer
pub fn verify(
    doc: &[u8],
    trusted_keys: &[VerifyingKey],
    gateway: &str,
    current_version: u64,
    max_doc_bytes: usize,
) -> Result<VerifiedUpdate, UpdateRejection> {
    if doc.len() > max_doc_bytes {
        return Err(UpdateRejection::Oversized {
            len: doc.len(),
            max: max_doc_bytes,
        });
    }
    let d = decode_doc(doc).map_err(UpdateRejection::Malformed)?;
    let key = trusted_keys
        .iter()
        .find(|k| key_id(k) == d.key_id)
        .ok_or_else(|| UpdateRejection::UnknownKey {
            key_id: d.key_id.clone(),
        })?;
    let msg = canonical_bytes(d.version, &d.targets, &d.key_id, &d.pipeline);
    key.verify_strict(&msg, &Signature::from_bytes(&d.signature))
        .map_err(|_| UpdateRejection::BadSignature {
            key_id: d.key_id.clone(),
        })?;
    if !d.targets.iter().any(|t| t == gateway) {
        return Err(UpdateRejection::WrongGateway {
            gateway: gateway.to_string(),
            targets: d.targets,
        });
    }
    if d.version <= current_version {
        return Err(UpdateRejection::NotNewer {
            version: d.version,
            current: current_version,
        });
    }
    Ok(VerifiedUpdate {
        version: d.version,
        targets: d.targets,
        key_id: d.key_id,
        pipeline: d.pipeline,
    })
}

/// The outcome of the last update, as reported in [`Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// No update has been received since the gateway started from its file.
    None,
    /// Verified and staged; waiting for a checkpoint boundary.
    Staged,
    /// Running, health check passed.
    Applied,
    /// Refused; the reason says why.
    Rejected,
    /// Applied, failed its health check, previous pipeline restored.
    RolledBack,
}

impl UpdateResult {
    fn code(self) -> u64 {
        match self {
            UpdateResult::None => 0,
            UpdateResult::Staged => 1,
            UpdateResult::Applied => 2,
            UpdateResult::Rejected => 3,
            UpdateResult::RolledBack => 4,
        }
    }

    fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            0 => UpdateResult::None,
            1 => UpdateResult::Staged,
            2 => UpdateResult::Applied,
            3 => UpdateResult::Rejected,
            4 => UpdateResult::RolledBack,
            _ => return None,
        })
    }
}

/// The gateway's pipeline status, published retained on
/// `weir/<gateway>/pipeline/status`. CBOR map: `0` gateway (text), `1`
/// current version (uint), `2` last result (uint: 0 none, 1 staged,
/// 2 applied, 3 rejected, 4 rolled back), `3` reason (text or null), `4`
/// version the last update carried (uint or null), `5` operators whose state
/// was kept, `6` operators reset (arrays of text), `7` updated at (ms, int).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The gateway.
    pub gateway: String,
    /// The pipeline version running now.
    pub current_version: u64,
    /// What happened to the last update.
    pub last_result: UpdateResult,
    /// Why (an [`UpdateRejection::reason`], or a health-check failure).
    pub reason: Option<String>,
    /// The version the last update carried (absent when it was malformed).
    pub last_version: Option<u64>,
    /// Operators whose state carried over.
    pub kept: Vec<String>,
    /// Operators that started empty.
    pub reset: Vec<String>,
    /// When this status was written, ms since the epoch.
    pub updated_at: i64,
}

impl Status {
    /// The CBOR form.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        cbor::map(&mut out, 8);
        cbor::uint(&mut out, 0);
        cbor::text(&mut out, &self.gateway);
        cbor::uint(&mut out, 1);
        cbor::uint(&mut out, self.current_version);
        cbor::uint(&mut out, 2);
        cbor::uint(&mut out, self.last_result.code());
        cbor::uint(&mut out, 3);
        match &self.reason {
            Some(r) => cbor::text(&mut out, r),
            None => out.push(0xf6),
        }
        cbor::uint(&mut out, 4);
        match self.last_version {
            Some(v) => cbor::uint(&mut out, v),
            None => out.push(0xf6),
        }
        for (k, list) in [(5, &self.kept), (6, &self.reset)] {
            cbor::uint(&mut out, k);
            cbor::array(&mut out, list.len() as u64);
            for s in list {
                cbor::text(&mut out, s);
            }
        }
        cbor::uint(&mut out, 7);
        cbor::int(&mut out, self.updated_at);
        out
    }

    /// Decodes the CBOR form; unknown keys are skipped.
    ///
    /// # Errors
    /// [`UpdateRejection::Malformed`]-style message as a `String`.
    pub fn from_cbor(bytes: &[u8]) -> Result<Status, String> {
        let mut d = minicbor::Decoder::new(bytes);
        let e = |e: minicbor::decode::Error| e.to_string();
        let n = d.map().map_err(e)?.ok_or("indefinite-length map")?;
        let mut s = Status {
            gateway: String::new(),
            current_version: 0,
            last_result: UpdateResult::None,
            reason: None,
            last_version: None,
            kept: Vec::new(),
            reset: Vec::new(),
            updated_at: 0,
        };
        let mut seen = 0u8;
        for _ in 0..n {
            let k = d.u64().map_err(e)?;
            if k < 8 {
                if seen & (1 << k) != 0 {
                    return Err(format!("key {k} repeated"));
                }
                seen |= 1 << k;
            }
            let nullable = |d: &mut minicbor::Decoder<'_>| -> Result<bool, String> {
                if d.datatype().map_err(e)? == minicbor::data::Type::Null {
                    d.skip().map_err(e)?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            };
            match k {
                0 => s.gateway = d.str().map_err(e)?.to_string(),
                1 => s.current_version = d.u64().map_err(e)?,
                2 => {
                    let c = d.u64().map_err(e)?;
                    s.last_result = UpdateResult::from_code(c).ok_or(format!("result {c}"))?;
                }
                3 => {
                    if !nullable(&mut d)? {
                        s.reason = Some(d.str().map_err(e)?.to_string());
                    }
                }
                4 => {
                    if !nullable(&mut d)? {
                        s.last_version = Some(d.u64().map_err(e)?);
                    }
                }
                5 | 6 => {
                    let len = d.array().map_err(e)?.ok_or("indefinite-length array")?;
                    let mut v = Vec::with_capacity(len.min(256) as usize);
                    for _ in 0..len {
                        v.push(d.str().map_err(e)?.to_string());
                    }
                    if k == 5 {
                        s.kept = v;
                    } else {
                        s.reset = v;
                    }
                }
                7 => s.updated_at = d.i64().map_err(e)?,
                _ => d.skip().map_err(e)?,
            }
        }
        if seen & 0b111 != 0b111 {
            return Err("status without gateway, version or result".into());
        }
        if d.position() != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - d.position()));
        }
        Ok(s)
    }

    /// The JSON form, for `weir fleet status` and people.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Decodes the JSON form.
    ///
    /// # Errors
    /// serde_json's message.
    pub fn from_json(s: &str) -> Result<Status, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }
}
