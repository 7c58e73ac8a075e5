//! Password checks against the table's hashes (the proxy never knows a job's password) and
//! the proxy's own scrambles as a client of the backend.

use std::path::Path;

use mysql_common::scramble::{scramble_native, scramble_sha256};
use rand::Rng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;

pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// Which plugin the proxy names in its greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plugin {
    #[default]
    Native,
    CachingSha2,
}

impl Plugin {
    pub fn name(self) -> &'static str {
        match self {
            Plugin::Native => NATIVE,
            Plugin::CachingSha2 => CACHING_SHA2,
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Plugin> {
        match name {
            b"mysql_native_password" => Some(Plugin::Native),
            b"caching_sha2_password" => Some(Plugin::CachingSha2),
            _ => None,
        }
    }
}

impl std::str::FromStr for Plugin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Plugin::from_name(s.as_bytes())
            .ok_or_else(|| format!("unknown auth plugin {s:?}: use {NATIVE} or {CACHING_SHA2}"))
    }
}

/// A fresh 20-byte scramble of printable ASCII without NUL (some clients treat it as a C
/// string), as MySQL servers generate it.
pub fn new_scramble() -> [u8; 20] {
    let mut rng = rand::rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rng.random_range(33u8..127);
    }
    s
}

/// A job password as the table stores it: `SHA1(SHA1(pw))` and `SHA256(SHA256(pw))`.
#[derive(Clone)]
pub struct PasswordHashes {
    pub sha1_sha1: [u8; 20],
    pub sha256_sha256: [u8; 32],
}

impl PasswordHashes {
    /// Decodes the table's hex; `None` when malformed. The table validator rejects such
    /// hashes, and a job whose hashes still do not decode is refused outright
    /// ([`crate::route::PasswordCheck::Unparsable`]), never let in by IP alone.
    pub fn from_hex(sha1_sha1: &str, sha256_sha256: &str) -> Option<Self> {
        let mut a = [0u8; 20];
        let mut b = [0u8; 32];
        hex::decode_to_slice(sha1_sha1, &mut a).ok()?;
        hex::decode_to_slice(sha256_sha256, &mut b).ok()?;
        Some(PasswordHashes {
            sha1_sha1: a,
            sha256_sha256: b,
        })
    }

    /// The hashes of `password` (tests, and a helper for writing control's config).
    pub fn of(password: &str) -> Self {
        let s1: [u8; 20] = Sha1::digest(Sha1::digest(password.as_bytes())).into();
        let s2: [u8; 32] = Sha256::digest(Sha256::digest(password.as_bytes())).into();
        PasswordHashes {
            sha1_sha1: s1,
            sha256_sha256: s2,
        }
    }

    /// Checks a client's auth response made with `plugin` against `scramble`.
    pub fn verify(&self, plugin: Plugin, scramble: &[u8], response: &[u8]) -> bool {
        match plugin {
            // response = SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))
            Plugin::Native => {
                let Ok(resp) = <[u8; 20]>::try_from(response) else {
                    return false;
                };
                let mut h = Sha1::new();
                h.update(scramble);
                h.update(self.sha1_sha1);
                let mask: [u8; 20] = h.finalize().into();
                let candidate: Vec<u8> = resp.iter().zip(mask).map(|(a, b)| a ^ b).collect();
                let check: [u8; 20] = Sha1::digest(&candidate).into();
                constant_time_eq(&check, &self.sha1_sha1)
            }
            // response = SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)
            Plugin::CachingSha2 => {
                let Ok(resp) = <[u8; 32]>::try_from(response) else {
                    return false;
                };
                let mut h = Sha256::new();
                h.update(self.sha256_sha256);
                h.update(scramble);
                let mask: [u8; 32] = h.finalize().into();
                let candidate: Vec<u8> = resp.iter().zip(mask).map(|(a, b)| a ^ b).collect();
                let check: [u8; 32] = Sha256::digest(&candidate).into();
                constant_time_eq(&check, &self.sha256_sha256)
            }
        }
    }

    /// Checks a password received in full (caching_sha2_password full authentication:
    /// over TLS, or decrypted with the proxy's RSA key) against `SHA256(SHA256(pw))`.
    pub fn verify_cleartext(&self, password: &[u8]) -> bool {
        let check: [u8; 32] = Sha256::digest(Sha256::digest(password)).into();
        constant_time_eq(&check, &self.sha256_sha256)
    }
}

/// The RSA key of caching_sha2_password full authentication over plain TCP: the client
/// asks for the public key (or has it already), sends `RSA-OAEP-SHA1(pw + NUL XOR
/// scramble)`, and the proxy decrypts it. The private key never leaves the process and is
/// not shown in debug output.
pub struct RsaKey {
    key: RsaPrivateKey,
    /// The public key as MySQL servers send it: SubjectPublicKeyInfo PEM.
    public_pem: Vec<u8>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKey")
            .field("bits", &(self.size() * 8))
            .finish_non_exhaustive()
    }
}

/// Why the RSA key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RsaKeyError {
    #[error("cannot read --rsa-key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--rsa-key {path} is not a PEM RSA private key (PKCS#8 or PKCS#1)")]
    NotAKey { path: String },
    #[error(
        "--rsa-key {path}: {bits}-bit key; caching_sha2_password clients need 2048 bits or more"
    )]
    TooSmall { path: String, bits: usize },
    #[error("cannot generate an RSA key: {0}")]
    Generate(rsa::Error),
    #[error("cannot encode the RSA public key: {0}")]
    Encode(String),
}

/// The size of the key the proxy generates when `--rsa-key` is absent.
pub const GENERATED_RSA_BITS: usize = 2048;

impl RsaKey {
    /// Reads a PEM private key (`PRIVATE KEY` or `RSA PRIVATE KEY`) from `path`.
    ///
    /// # Errors
    /// Unreadable file, not an RSA key, or smaller than 2048 bits.
    pub fn load(path: &Path) -> Result<RsaKey, RsaKeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| RsaKeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = RsaPrivateKey::from_pkcs8_pem(&pem)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_pem(&pem).ok())
            .ok_or_else(|| RsaKeyError::NotAKey {
                path: shown.clone(),
            })?;
        let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
        if bits < GENERATED_RSA_BITS {
            return Err(RsaKeyError::TooSmall { path: shown, bits });
        }
        RsaKey::from_key(key)
    }

    /// A fresh 2048-bit key (CPU-bound for up to a few seconds: run it off the runtime).
    ///
    /// # Errors
    /// The system's random source failing.
    pub fn generate() -> Result<RsaKey, RsaKeyError> {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, GENERATED_RSA_BITS)
            .map_err(RsaKeyError::Generate)?;
        RsaKey::from_key(key)
    }

    fn from_key(key: RsaPrivateKey) -> Result<RsaKey, RsaKeyError> {
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| RsaKeyError::Encode(e.to_string()))?
            .into_bytes();
        Ok(RsaKey { key, public_pem })
    }

    /// The public key in PEM, sent to a client that asks for it.
    pub fn public_pem(&self) -> &[u8] {
        &self.public_pem
    }

    /// The size of the modulus, and so of every ciphertext, in bytes.
    pub fn size(&self) -> usize {
        rsa::traits::PublicKeyParts::size(&self.key)
    }

    /// The password a client encrypted for full authentication: RSA-OAEP(SHA1) decrypted,
    /// un-XORed with the connection's `scramble`, the trailing NUL removed. `None` when
    /// the ciphertext does not decrypt (wrong key, garbage).
    pub fn decrypt_password(&self, ciphertext: &[u8], scramble: &[u8]) -> Option<Vec<u8>> {
        if ciphertext.len() != self.size() || scramble.is_empty() {
            return None;
        }
        let mut plain = self
            .key
            .decrypt_blinded(&mut rsa::rand_core::OsRng, Oaep::new::<Sha1>(), ciphertext)
            .ok()?;
        for (b, s) in plain.iter_mut().zip(scramble.iter().cycle()) {
            *b ^= s;
        }
        if plain.last() == Some(&0) {
            plain.pop();
        }
        Some(plain)
    }
}

/// The subject CN of a DER certificate (the first CN of a UTF8String, PrintableString or
/// IA5String); `None` when it has none or does not parse. Used for `require_cert_cn`, on
/// a certificate rustls has already verified against `--client-ca`.
pub fn certificate_cn(der: &[u8]) -> Option<String> {
    use x509_cert::der::{oid::db::rfc4519::CN, Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| match atv.value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(str::to_owned)
            }
            _ => None,
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an auth response carries a password (`using password: YES`). Some clients send
/// a lone NUL for an empty password.
pub fn has_password(response: &[u8]) -> bool {
    !matches!(response, [] | [0])
}

/// The proxy's answer, as a client of the backend, to a challenge from `plugin`.
pub fn client_response(plugin: &[u8], nonce: &[u8], password: &str) -> Option<Vec<u8>> {
    let pw = password.as_bytes();
    match plugin {
        b"mysql_native_password" => Some(
            scramble_native(nonce, pw)
                .map(|s| s.to_vec())
                .unwrap_or_default(),
        ),
        b"caching_sha2_password" => Some(
            scramble_sha256(nonce, pw)
                .map(|s| s.to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_real_client_scrambles_produce() {
        let h = PasswordHashes::of("s3cret");
        let nonce = new_scramble();
        let native = scramble_native(&nonce, b"s3cret").unwrap();
        assert!(h.verify(Plugin::Native, &nonce, &native));
        let sha2 = scramble_sha256(&nonce, b"s3cret").unwrap();
        assert!(h.verify(Plugin::CachingSha2, &nonce, &sha2));
        let wrong = scramble_native(&nonce, b"other").unwrap();
        assert!(!h.verify(Plugin::Native, &nonce, &wrong));
        assert!(!h.verify(Plugin::CachingSha2, &nonce, &native));
        assert!(!h.verify(Plugin::Native, &nonce, b""));
    }

    /// A client's RSA exchange as mysql_async does it (mysql_common's encryption with the
    /// key the proxy serves), decrypted by the proxy.
    #[test]
    fn rsa_encrypted_passwords_decrypt_and_verify() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/rsa-2048-test-only.pem");
        let key = RsaKey::load(&path).unwrap();
        assert_eq!(key.size(), 256);
        assert!(key.public_pem().starts_with(b"-----BEGIN PUBLIC KEY-----"));
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let nonce = new_scramble();
        let mut pw = b"s3cret\0".to_vec();
        for (b, s) in pw.iter_mut().zip(nonce.iter().cycle()) {
            *b ^= s;
        }
        let encrypted = mysql_common::crypto::encrypt(&pw, key.public_pem());
        let got = key.decrypt_password(&encrypted, &nonce).unwrap();
        assert_eq!(got, b"s3cret");
        let h = PasswordHashes::of("s3cret");
        assert!(h.verify_cleartext(&got));
        assert!(!h.verify_cleartext(b"other"));
        // Another connection's scramble, garbage, a short packet: no password.
        let other = new_scramble();
        assert_ne!(key.decrypt_password(&encrypted, &other).unwrap(), b"s3cret");
        assert!(key.decrypt_password(&[7u8; 256], &nonce).is_none());
        assert!(key.decrypt_password(&[0x02], &nonce).is_none());
        let missing = RsaKey::load(std::path::Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(missing.to_string().contains("--rsa-key"), "{missing}");
    }

    #[test]
    fn scrambles_are_printable_and_fresh() {
        let a = new_scramble();
        assert!(a.iter().all(|b| (33..127).contains(b)));
        assert_ne!(a, new_scramble());
    }
}
