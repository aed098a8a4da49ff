//! Ed25519 identities: a gateway's device key (made by `weir bundle`) and,
//! later, the fleet operator's signing key (`weir fleet keygen`).
//!
//! # Format
//! Both files are the standard PEM forms of RFC 8410, so OpenSSL and other
//! tools read them (`openssl pkey -in identity.key -pubout`):
//! - the private key: `-----BEGIN PRIVATE KEY-----`, PKCS#8 v1 (the 32-byte
//!   seed only, as `openssl genpkey -algorithm ed25519` writes it: OpenSSL
//!   3.0 refuses the v2 form with the public key inside), mode 0600. Both
//!   forms are read; a v2 key whose public half does not match is refused;
//! - the public key: `-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo,
//!   mode 0644.
//!
//! Text before the `-----BEGIN` line is ignored (RFC 7468's explanatory
//! text), so a public key saved from `weir bundle`'s output with its
//! `# gateway …` comment line loads as it is.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("weir-identity-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! std::fs::create_dir_all(&dir).unwrap();
//! let key = weir_agent::identity::generate().unwrap();
//! let (private, public) = weir_agent::identity::write(&dir, &key).unwrap();
//! let back = weir_agent::identity::load_signing_key(&private).unwrap();
//! let public = weir_agent::identity::load_verifying_key(&public).unwrap();
//! assert_eq!(back.verifying_key(), public);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
#[cfg(feature = "host-tools")]
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
#[cfg(feature = "host-tools")]
use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;

/// The private key's file name inside a folder written by [`write()`].
pub const PRIVATE_FILE: &str = "identity.key";
/// The public key's file name inside a folder written by [`write()`].
pub const PUBLIC_FILE: &str = "identity.pub";

const PRIVATE_LABEL: &str = "-----BEGIN PRIVATE KEY-----";
const PUBLIC_LABEL: &str = "-----BEGIN PUBLIC KEY-----";

/// Something wrong with a key or its file: which file, what, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{}: error: {msg}\n  help: {help}", file.display())]
pub struct IdentityError {
    /// The file (or `<os random source>` when no file is involved).
    pub file: PathBuf,
    /// What is wrong.
    pub msg: String,
    /// What to do.
    pub help: String,
}

fn err(file: &Path, msg: impl Into<String>, help: impl Into<String>) -> IdentityError {
    IdentityError {
        file: file.to_path_buf(),
        msg: msg.into(),
        help: help.into(),
    }
}

#[cfg(feature = "host-tools")]
/// A fresh key from 32 bytes of the operating system's random source.
///
/// # Errors
/// The OS random source failed (on Linux: `getrandom(2)` unavailable and no
/// `/dev/urandom`); nothing sensible can be made without it.
pub fn generate() -> Result<SigningKey, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| {
        err(
            Path::new("<os random source>"),
            format!("cannot read 32 random bytes: {e}"),
            "run on a system with getrandom(2) or /dev/urandom",
        )
    })?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

#[cfg(feature = "host-tools")]
/// The private key as PKCS#8 PEM text (keep it secret).
///
/// # Errors
/// Only if the DER encoder fails, which it does not for Ed25519 keys; the
/// error is passed on rather than unwrapped.
pub fn private_pem(key: &SigningKey) -> Result<String, IdentityError> {
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    v1.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|e| {
            err(
                Path::new("<private key>"),
                format!("cannot encode: {e}"),
                "report this as a bug",
            )
        })
}

/// The public key as SubjectPublicKeyInfo PEM text.
///
/// # Errors
/// As [`private_pem`].
pub fn public_pem(key: &VerifyingKey) -> Result<String, IdentityError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|e| {
        err(
            Path::new("<public key>"),
            format!("cannot encode: {e}"),
            "report this as a bug",
        )
    })
}

/// The raw public key in lower-case hex (64 digits): a short, unambiguous
/// way to name a key in logs and fleet tables.
pub fn public_hex(key: &VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(feature = "host-tools")]
/// Writes `identity.key` (mode 0600) and `identity.pub` (0644) into `dir`;
/// returns their paths. Never replaces an existing key.
///
/// # Errors
/// Either file already exists, or cannot be created or written.
pub fn write(dir: &Path, key: &SigningKey) -> Result<(PathBuf, PathBuf), IdentityError> {
    let private = dir.join(PRIVATE_FILE);
    let public = dir.join(PUBLIC_FILE);
    for p in [&private, &public] {
        if p.exists() {
            return Err(err(
                p,
                "already exists; a key is never overwritten",
                "move the old key away first if you really mean to replace this identity",
            ));
        }
    }
    create_file(&private, private_pem(key)?.as_bytes(), 0o600)?;
    create_file(&public, public_pem(&key.verifying_key())?.as_bytes(), 0o644)?;
    Ok((private, public))
}

#[cfg(feature = "host-tools")]
/// Creates `path` with `mode` from the start (no window in which a secret
/// is readable by others), durably: the file and its name survive a power
/// cut once this returns ([`crate::fsutil::write_new`]).
fn create_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::fsutil::write_new(path, bytes, mode).map_err(|e| {
        err(
            path,
            format!("cannot write: {e}"),
            "check that the folder exists and is writable",
        )
    })
}

#[cfg(feature = "host-tools")]
/// Reads a private key file written by [`write()`] (or any PKCS#8 Ed25519
/// PEM, e.g. `openssl genpkey -algorithm ed25519`).
///
/// # Errors
/// The file cannot be read, is readable by group or others (unix), is not a
/// PEM private key, holds another algorithm's key, or its embedded public
/// key does not match the private one.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, IdentityError> {
    let text = read(path, "private key")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(err(
                path,
                format!("the private key is readable by others (mode {mode:04o})"),
                format!("run: chmod 600 {}", path.display()),
            ));
        }
    }
    parse_signing_key(path, &text)
}

#[cfg(feature = "host-tools")]
/// Parses private key text; `file` names it in errors.
///
/// # Errors
/// See [`load_signing_key`].
pub fn parse_signing_key(file: &Path, text: &str) -> Result<SigningKey, IdentityError> {
    if text.contains(PUBLIC_LABEL) && !text.contains(PRIVATE_LABEL) {
        return Err(err(
            file,
            "this is a public key, not a private key",
            format!("give the private key ({PRIVATE_FILE}), not {PUBLIC_FILE}"),
        ));
    }
    let pem = pem_block(file, text, PRIVATE_LABEL, "private key")?;
    SigningKey::from_pkcs8_pem(pem).map_err(|e| {
        err(
            file,
            format!("not a valid Ed25519 private key: {e}"),
            "expected PKCS#8 PEM as written by `weir bundle` or `openssl genpkey -algorithm ed25519`; the file may be damaged or hold another algorithm's key",
        )
    })
}

/// Reads a public key file written by [`write()`] (or any SubjectPublicKeyInfo
/// Ed25519 PEM, e.g. `openssl pkey -pubout`).
///
/// # Errors
/// The file cannot be read, is not a PEM public key, or holds another
/// algorithm's key or an invalid curve point.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, IdentityError> {
    let text = read(path, "public key")?;
    parse_verifying_key(path, &text)
}

/// Parses public key text; `file` names it in errors.
///
/// # Errors
/// See [`load_verifying_key`].
pub fn parse_verifying_key(file: &Path, text: &str) -> Result<VerifyingKey, IdentityError> {
    if text.contains(PRIVATE_LABEL) {
        return Err(err(
            file,
            "this is a private key, not a public key",
            format!(
                "give the public key ({PUBLIC_FILE}); and keep the private key off shared machines"
            ),
        ));
    }
    let pem = pem_block(file, text, PUBLIC_LABEL, "public key")?;
    VerifyingKey::from_public_key_pem(pem).map_err(|e| {
        err(
            file,
            format!("not a valid Ed25519 public key: {e}"),
            "expected SubjectPublicKeyInfo PEM as written by `weir bundle` or `openssl pkey -pubout`; the file may be damaged or hold another algorithm's key",
        )
    })
}

fn read(path: &Path, what: &str) -> Result<String, IdentityError> {
    let bytes = fs::read(path).map_err(|e| {
        err(
            path,
            format!("cannot read the {what}: {e}"),
            "check the path",
        )
    })?;
    String::from_utf8(bytes).map_err(|_| {
        err(
            path,
            format!("the {what} file is not text"),
            "expected a PEM file (a DER or raw binary key is not accepted)",
        )
    })
}

/// The PEM block starting at `begin`, with anything before it dropped and
/// line endings normalised.
fn pem_block<'a>(
    file: &Path,
    text: &'a str,
    begin: &str,
    what: &str,
) -> Result<&'a str, IdentityError> {
    let start = text.find(begin).ok_or_else(|| {
        err(
            file,
            format!("no `{begin}` line: not a PEM {what}"),
            "expected the PEM text written by `weir bundle`",
        )
    })?;
    Ok(text[start..].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn pem_round_trip_and_sign() {
        let key = generate().unwrap();
        let private = private_pem(&key).unwrap();
        let public = public_pem(&key.verifying_key()).unwrap();
        assert!(private.starts_with(PRIVATE_LABEL), "{private}");
        assert!(public.starts_with(PUBLIC_LABEL), "{public}");
        let k2 = parse_signing_key(Path::new("k"), &private).unwrap();
        let p2 = parse_verifying_key(Path::new("p"), &format!("# gateway x\n{public}")).unwrap();
        assert_eq!(k2.to_bytes(), key.to_bytes());
        let sig = k2.sign(b"hello");
        p2.verify(b"hello", &sig).unwrap();
        assert!(p2.verify(b"hellO", &sig).is_err());
        assert_eq!(public_hex(&p2).len(), 64);
    }

    #[test]
    fn keys_differ() {
        assert_ne!(
            generate().unwrap().to_bytes(),
            generate().unwrap().to_bytes()
        );
    }

    #[test]
    fn wrong_inputs_say_what() {
        let key = generate().unwrap();
        let private = private_pem(&key).unwrap();
        let public = public_pem(&key.verifying_key()).unwrap();
        let f = Path::new("f.pem");
        let e = parse_signing_key(f, &public).unwrap_err();
        assert!(e.msg.contains("public key, not a private"), "{e}");
        let e = parse_verifying_key(f, &private).unwrap_err();
        assert!(e.msg.contains("private key, not a public"), "{e}");
        let e = parse_signing_key(f, "hello").unwrap_err();
        assert!(e.msg.contains("not a PEM"), "{e}");
        assert!(e.to_string().starts_with("f.pem: error:"), "{e}");
        // A truncated body does not decode.
        let body = private.lines().nth(1).unwrap();
        let cut = private.replace(body, &body[..40]);
        let e = parse_signing_key(f, &cut).unwrap_err();
        assert!(e.msg.contains("not a valid Ed25519 private key"), "{e}");
        // A v2 key (public key inside) that does not match its seed.
        let other = generate().unwrap();
        let v2 = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                other.verifying_key().to_bytes(),
            )),
        };
        let pem = v2.to_pkcs8_pem(LineEnding::LF).unwrap();
        let e = parse_signing_key(f, pem.as_str()).unwrap_err();
        assert!(e.msg.contains("not a valid Ed25519 private key"), "{e}");
        let good = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                key.verifying_key().to_bytes(),
            )),
        };
        let pem = good.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(
            parse_signing_key(f, pem.as_str()).unwrap().to_bytes(),
            key.to_bytes()
        );
        let e = parse_verifying_key(
            f,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap_err();
        assert!(e.msg.contains("not a valid Ed25519 public key"), "{e}");
    }
}
