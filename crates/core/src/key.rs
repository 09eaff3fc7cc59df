//! The API key format: `kgk_` + 22 random base62 characters (131 bits) + a 6-character
//! base62 CRC-32 of everything before it. 32 characters in all.
//!
//! The prefix makes a leaked key recognisable to secret scanners; the checksum lets a
//! mistyped or truncated key be refused without a database lookup (and lets scanners
//! drop false positives). The same format with the `kga_` prefix is used for admin tokens.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters after the prefix: 22 * log2(62) = 130.99 bits.
pub const RANDOM_LEN: usize = 22;
pub const CHECKSUM_LEN: usize = 6;
/// The prefix of customer API keys (the secret that is also the legacy `clientSecret`).
pub const API_KEY_PREFIX: &str = "kgk_";
/// The prefix of admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "kga_";
pub const KEY_LEN: usize = 4 + RANDOM_LEN + CHECKSUM_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key is empty")]
    Empty,
    #[error("key has the wrong prefix")]
    Prefix,
    #[error("key has the wrong length")]
    Length,
    #[error("key has characters outside base62")]
    Charset,
    #[error("key checksum does not match")]
    Checksum,
}

fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Generates a new key with the given 4-character prefix.
pub fn generate(prefix: &str) -> String {
    debug_assert_eq!(prefix.len(), 4);
    let mut s = String::with_capacity(KEY_LEN);
    s.push_str(prefix);
    s.extend(rand::rng().sample_iter(Alphanumeric).take(RANDOM_LEN).map(char::from));
    let sum = checksum(&s);
    s.push_str(std::str::from_utf8(&sum).expect("base62 is ascii"));
    s
}

/// Appends the checksum to a prefix + body (for tools that derive keys deterministically,
/// e.g. benchmarks seeding a million credentials).
pub fn with_checksum(prefix_and_body: &str) -> String {
    let sum = checksum(prefix_and_body);
    format!("{prefix_and_body}{}", std::str::from_utf8(&sum).expect("base62 is ascii"))
}

/// Checks prefix, length, alphabet and checksum. No IO; constant work for a given length.
pub fn check(prefix: &str, s: &str) -> Result<(), KeyFormatError> {
    check_shape(prefix, s)?;
    check_sum(s)
}

/// Checks prefix, length and alphabet, not the checksum: enough to look a key up among known
/// ones (a known key's checksum was right when it was made); [`check_sum`] before asking a
/// store about it.
pub fn check_shape(prefix: &str, s: &str) -> Result<(), KeyFormatError> {
    if s.is_empty() {
        return Err(KeyFormatError::Empty);
    }
    if !s.starts_with(prefix) {
        return Err(KeyFormatError::Prefix);
    }
    if s.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    if !s.as_bytes()[prefix.len()..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(KeyFormatError::Charset);
    }
    Ok(())
}

/// The checksum of a key that passed [`check_shape`] (any other string gets an error, never a
/// panic).
pub fn check_sum(s: &str) -> Result<(), KeyFormatError> {
    if s.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    if !s.is_char_boundary(KEY_LEN - CHECKSUM_LEN) {
        return Err(KeyFormatError::Charset);
    }
    let (body, sum) = s.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(body) != sum.as_bytes() {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// A customer API key. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate() -> Self {
        Self(generate(API_KEY_PREFIX))
    }

    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        check(API_KEY_PREFIX, s).map(|()| Self(s.to_owned()))
    }

    /// True when `s` looks like one of our keys (prefix only), e.g. a key sent as a Bearer value.
    pub fn has_prefix(s: &str) -> bool {
        s.starts_with(API_KEY_PREFIX)
    }

    /// The secret itself: show it once to its owner, hash it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What may be shown later to recognise the key: prefix and last four, e.g. `kgk_...Ab12`.
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

/// `kgk_...Ab12` for any key-shaped (ASCII) string.
pub fn hint_of(s: &str) -> String {
    let tail = &s[s.len().saturating_sub(4)..];
    format!("{}...{}", &s[..4.min(s.len())], tail)
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_check() {
        for _ in 0..1000 {
            let k = ApiKey::generate();
            assert_eq!(k.expose().len(), 32);
            assert!(ApiKey::parse(k.expose()).is_ok());
            assert!(k.hint().starts_with("kgk_..."));
            assert_eq!(format!("{k:?}"), "ApiKey(***)");
        }
    }

    #[test]
    fn errors_are_specific() {
        let k = ApiKey::generate();
        let s = k.expose();
        assert_eq!(ApiKey::parse(""), Err(KeyFormatError::Empty));
        assert_eq!(ApiKey::parse(&s[..31]), Err(KeyFormatError::Length));
        assert_eq!(ApiKey::parse(&s.replacen("kgk_", "kga_", 1)), Err(KeyFormatError::Prefix));
        let mut bad = s.to_owned();
        bad.replace_range(10..11, "-");
        assert_eq!(ApiKey::parse(&bad), Err(KeyFormatError::Charset));
        // 32 bytes whose checksum would start inside a character.
        let split = format!("{}\u{e9}{}", "a".repeat(25), "a".repeat(5));
        assert_eq!(split.len(), KEY_LEN);
        assert_eq!(check_sum(&split), Err(KeyFormatError::Charset));
    }

    proptest! {
        /// Any single-character substitution is caught (CRC-32 detects all single-symbol errors).
        #[test]
        fn single_typo_is_caught(pos in 4usize..32, c in "[0-9A-Za-z]") {
            let k = ApiKey::generate();
            let mut s = k.expose().to_owned();
            prop_assume!(&s[pos..pos + 1] != c.as_str());
            s.replace_range(pos..pos + 1, &c);
            prop_assert!(ApiKey::parse(&s).is_err());
        }

        /// Arbitrary strings never panic the parser, nor the checksum check alone.
        #[test]
        fn parser_total(s in ".{0,64}") {
            let _ = ApiKey::parse(&s);
            let _ = check_sum(&s);
        }

        /// The shape, then the checksum, decide as the whole check does (the authenticator
        /// checks the sum only of keys it does not know).
        #[test]
        fn shape_then_sum_is_check(s in "kgk_[0-9A-Za-z]{26,30}", typo in 4usize..32) {
            let k = ApiKey::generate();
            let mut t = k.expose().to_owned();
            t.replace_range(typo..typo + 1, "-");
            for candidate in [s.as_str(), k.expose(), &t] {
                let parts = check_shape(API_KEY_PREFIX, candidate).and_then(|()| check_sum(candidate));
                prop_assert_eq!(parts, check(API_KEY_PREFIX, candidate));
            }
        }
    }
}
