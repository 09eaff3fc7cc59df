//! The master key and what is derived from it.
//!
//! One 32-byte master key (a file beside the SQLite database by default, or supplied by the
//! operator) is the root of every server secret; the database never holds a secret in plain text:
//! - API keys and admin tokens are stored as HMAC-SHA256(pepper, key), pepper = HKDF(master).
//!   Keys carry 131 bits of entropy, so a fast keyed hash looked up by index is the right tool
//!   (a password hash would only slow every request down); the pepper means a stolen database
//!   alone cannot even confirm a guessed key.
//! - JWT signing secrets are HKDF(master, kid): the database stores only key ids, so rotating the
//!   signing key is "add a kid", and tokens signed under older kids keep verifying.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const MASTER_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("master key must be {MASTER_KEY_LEN} bytes written as 64 hexadecimal characters")]
pub struct MasterKeyError;

/// The root secret. `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; MASTER_KEY_LEN];
        rand::rng().fill_bytes(&mut k);
        Self(k)
    }

    /// Parses the hex form (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, MasterKeyError> {
        let mut k = [0u8; MASTER_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut k).map_err(|_| MasterKeyError)?;
        Ok(Self(k))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"keygate/v1"), &self.0);
        let mut out = [0u8; 32];
        hk.expand(info, &mut out).expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }

    /// The hasher for customer API keys.
    pub fn api_key_hasher(&self) -> SecretHasher {
        SecretHasher::new(&self.derive(b"api-key-hash"))
    }

    /// The hasher for admin tokens (a separate domain: an admin token hash never matches a key's).
    pub fn admin_token_hasher(&self) -> SecretHasher {
        SecretHasher::new(&self.derive(b"admin-token-hash"))
    }

    /// The hasher for web-console session tokens: the database keeps only this hash of a
    /// session cookie, so a copy of the database cannot be replayed as a login.
    pub fn console_session_hasher(&self) -> SecretHasher {
        SecretHasher::new(&self.derive(b"console-session-hash"))
    }

    /// The key of the web console's CSRF tokens (HMAC of the session, never stored).
    pub fn console_csrf_hasher(&self) -> SecretHasher {
        SecretHasher::new(&self.derive(b"console-csrf"))
    }

    /// The pepper mixed into console password hashes (Argon2id's secret input): a stolen
    /// database alone cannot be used to guess passwords offline.
    pub fn console_password_pepper(&self) -> [u8; 32] {
        self.derive(b"console-password-pepper")
    }

    /// The HS256 secret for JWT key id `kid`.
    pub fn jwt_secret(&self, kid: &str) -> [u8; 32] {
        let mut info = b"jwt-hs256:".to_vec();
        info.extend_from_slice(kid.as_bytes());
        self.derive(&info)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// HMAC-SHA256 digest of a secret: what the database stores and indexes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality, for comparing against a configured value.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}..)", hex::encode(&self.0[..4]))
    }
}

/// A keyed hash with its key schedule precomputed; cloning it per use is cheap.
#[derive(Clone)]
pub struct SecretHasher(Hmac<Sha256>);

impl SecretHasher {
    fn new(key: &[u8; 32]) -> Self {
        Self(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    pub fn hash(&self, secret: &str) -> SecretHash {
        let mut mac = self.0.clone();
        mac.update(secret.as_bytes());
        SecretHash(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_separated_and_stable() {
        let m = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let a = m.api_key_hasher().hash("x");
        let b = m.admin_token_hasher().hash("x");
        assert_ne!(a, b);
        assert_eq!(a, m.api_key_hasher().hash("x"));
        assert_ne!(m.jwt_secret("a"), m.jwt_secret("b"));
        assert_ne!(m.console_session_hasher().hash("x"), a);
        assert_ne!(m.console_csrf_hasher().hash("x"), m.console_session_hasher().hash("x"));
        assert_ne!(m.console_password_pepper(), m.jwt_secret(""));
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        assert_ne!(a, other.api_key_hasher().hash("x"));
        assert_eq!(format!("{m:?}"), "MasterKey(***)");
    }

    #[test]
    fn hex_round_trip() {
        let m = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&format!(" {}\n", m.to_hex())).unwrap().to_hex(), m.to_hex());
        assert!(MasterKey::from_hex("abcd").is_err());
    }
}

/// A secret setting (an admin token, a master key in hex) as configuration carries it: `Debug`
/// and `Display` print `***`, so a logged or printed configuration never shows it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod secret_setting_tests {
    use super::Secret;

    #[test]
    fn never_printed() {
        let s: Secret = "kga_very-secret-value".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "kga_very-secret-value");
    }
}
