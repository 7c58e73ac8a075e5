//! Password checks against the table's hashes (the proxy never knows a job's password) and
//! the proxy's own scrambles as a client of the backend.

use mysql_common::scramble::{scramble_native, scramble_sha256};
use rand::Rng;
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

    #[test]
    fn scrambles_are_printable_and_fresh() {
        let a = new_scramble();
        assert!(a.iter().all(|b| (33..127).contains(b)));
        assert_ne!(a, new_scramble());
    }
}
