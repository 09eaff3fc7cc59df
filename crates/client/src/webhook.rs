//! Webhook callbacks in the vendor's scheme, signed and encrypted with a credential.
//!
//! A callback's body is `{"signature", "dataEncrypt", "timestamp", "nonce"}`:
//!
//! - `dataEncrypt` is base64 of AES-CBC with PKCS#7 padding of the JSON payload, with the
//!   clientSecret's bytes as the key (16, 24 or 32 bytes: AES-128, -192 or -256; keygate's API
//!   keys are 32 ASCII characters, so AES-256) and the first 16 bytes of the clientId as the IV;
//! - `timestamp` is Unix milliseconds (a JSON number), `nonce` a string;
//! - `signature = sha1_hex(concat(sorted([clientId, str(timestamp), nonce, dataEncrypt])))`, the
//!   four strings sorted plainly (byte order) and joined without separator.
//!
//! A receiver checks the signature (in constant time) first, optionally the timestamp's age,
//! and only then decrypts: [`verify_and_decrypt`], or a [`WebhookVerifier`] with a
//! [`max_age`](WebhookVerifier::max_age). [`sign_and_encrypt`] makes such a body (for tests, and
//! for platforms that send callbacks in this scheme).
//!
//! ```
//! use keygate_client::webhook;
//! use serde_json::json;
//!
//! let (client_id, secret) = ("64db241f6d9e5c4bd136c187", "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg");
//! let payload = json!({"_id": "64dd838cf0b6684651e90217", "status": 3, "type": "faceswap"});
//! let body = serde_json::to_string(&webhook::sign_and_encrypt(&payload, client_id, secret)?)?;
//!
//! // The receiving side:
//! let got = webhook::verify_and_decrypt(&body, client_id, secret)?;
//! assert_eq!(got, payload);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::Secret;

/// Why a callback was not accepted.
///
/// ```
/// let e = keygate_client::webhook::verify_and_decrypt("{}", "64db241f6d9e5c4bd136c187", "0123456789abcdef");
/// assert!(matches!(e, Err(keygate_client::webhook::WebhookError::Malformed(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The body is not `{"signature", "dataEncrypt", "timestamp", "nonce"}`.
    #[error("webhook body is malformed: {0}")]
    Malformed(String),
    /// The signature does not match: not from the holder of this credential, or altered.
    #[error("webhook signature does not match")]
    BadSignature,
    /// The timestamp is further from now than the allowed age (a replay, or a skewed clock).
    #[error("webhook timestamp is {age:?} away from now, more than the {max_age:?} allowed")]
    Stale {
        /// How far the timestamp is from now.
        age: Duration,
        /// The allowed age.
        max_age: Duration,
    },
    /// The clientSecret is not 16, 24 or 32 bytes long.
    #[error("the clientSecret must be 16, 24 or 32 bytes (AES-128/192/256), not {0}")]
    KeyLength(usize),
    /// The clientId is shorter than the 16 bytes of the IV.
    #[error("the clientId must be at least 16 bytes (the IV is its first 16), not {0}")]
    ClientIdLength(usize),
    /// `dataEncrypt` is not base64 of whole AES blocks, or does not decrypt with this key.
    #[error("dataEncrypt does not decrypt with this credential")]
    Decrypt,
    /// The decrypted payload is not JSON.
    #[error("the decrypted payload is not JSON: {0}")]
    Payload(String),
}

/// A callback's body, as sent.
///
/// ```
/// let body: keygate_client::webhook::WebhookBody = serde_json::from_str(
///     r#"{"signature":"04e30dd43d9d8f95dd7c127dad617f0929d61c1d","dataEncrypt":"LuG1...","timestamp":1710757981609,"nonce":"1529"}"#,
/// )?;
/// assert_eq!(body.timestamp, 1710757981609);
/// assert_eq!(body.nonce, "1529");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    /// Lowercase hex SHA-1 (40 characters).
    pub signature: String,
    /// Base64 of the encrypted JSON payload.
    pub data_encrypt: String,
    /// Unix milliseconds. Read from a JSON number (or a string of digits).
    #[serde(deserialize_with = "int_or_digits")]
    pub timestamp: i64,
    /// Read from a JSON string (or a number).
    #[serde(deserialize_with = "string_or_int")]
    pub nonce: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Text(String),
}

fn int_or_digits<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Int(n) => Ok(n),
        Scalar::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(serde::de::Error::custom)
        }
        Scalar::Text(_) => Err(serde::de::Error::custom("timestamp must be an integer of milliseconds")),
    }
}

fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::Int(n) => n.to_string(),
        Scalar::Text(s) => s,
    })
}

/// The signature of a callback: `sha1_hex` of the four strings sorted and joined.
///
/// ```
/// let sig = keygate_client::webhook::signature("64db241f6d9e5c4bd136c187", 1710757981609, "1529", "abc=");
/// assert_eq!(sig.len(), 40);
/// ```
pub fn signature(client_id: &str, timestamp_ms: i64, nonce: &str, data_encrypt: &str) -> String {
    let timestamp = timestamp_ms.to_string();
    let mut parts = [client_id, timestamp.as_str(), nonce, data_encrypt];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn iv_of(client_id: &str) -> Result<[u8; 16], WebhookError> {
    let b = client_id.as_bytes();
    let iv = b.get(..16).ok_or(WebhookError::ClientIdLength(b.len()))?;
    Ok(iv.try_into().expect("16 bytes"))
}

fn encrypt(key: &[u8], iv: &[u8; 16], plain: &[u8]) -> Result<Vec<u8>, WebhookError> {
    let bad = |_| WebhookError::KeyLength(key.len());
    Ok(match key.len() {
        16 => {
            cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv).map_err(bad)?.encrypt_padded_vec_mut::<Pkcs7>(plain)
        }
        24 => {
            cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv).map_err(bad)?.encrypt_padded_vec_mut::<Pkcs7>(plain)
        }
        32 => {
            cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv).map_err(bad)?.encrypt_padded_vec_mut::<Pkcs7>(plain)
        }
        n => return Err(WebhookError::KeyLength(n)),
    })
}

fn decrypt(key: &[u8], iv: &[u8; 16], cipher: &[u8]) -> Result<Vec<u8>, WebhookError> {
    let bad = |_| WebhookError::KeyLength(key.len());
    let plain = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt_padded_vec_mut::<Pkcs7>(cipher),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt_padded_vec_mut::<Pkcs7>(cipher),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt_padded_vec_mut::<Pkcs7>(cipher),
        n => return Err(WebhookError::KeyLength(n)),
    };
    plain.map_err(|_| WebhookError::Decrypt)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Checks a callback's signature (constant-time) and decrypts its payload, with no limit on the
/// timestamp's age ([`WebhookVerifier::max_age`] sets one).
///
/// ```
/// use keygate_client::webhook::{self, WebhookError};
/// let (id, secret) = ("64db241f6d9e5c4bd136c187", "0123456789abcdef");
/// let body = webhook::sign_and_encrypt(&serde_json::json!({"status": 3}), id, secret)?;
/// let json = serde_json::to_vec(&body)?;
/// assert_eq!(webhook::verify_and_decrypt(&json, id, secret)?["status"], 3);
/// // Another credential's secret does not pass.
/// assert_eq!(webhook::verify_and_decrypt(&json, "64db241f6d9e5c4bd136c999", secret), Err(WebhookError::BadSignature));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_and_decrypt(
    body: impl AsRef<[u8]>,
    client_id: &str,
    client_secret: &str,
) -> Result<serde_json::Value, WebhookError> {
    verify(body.as_ref(), client_id, client_secret.as_bytes(), None, now_ms())
}

fn verify(
    body: &[u8],
    client_id: &str,
    key: &[u8],
    max_age: Option<Duration>,
    now_ms: i64,
) -> Result<serde_json::Value, WebhookError> {
    let body: WebhookBody = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let expected = signature(client_id, body.timestamp, &body.nonce, &body.data_encrypt);
    let given = body.signature.trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(WebhookError::BadSignature);
    }
    if let Some(max_age) = max_age {
        let age = Duration::from_millis(now_ms.abs_diff(body.timestamp));
        if age > max_age {
            return Err(WebhookError::Stale { age, max_age });
        }
    }
    let iv = iv_of(client_id)?;
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(WebhookError::KeyLength(key.len()));
    }
    let cipher = BASE64.decode(body.data_encrypt.trim()).map_err(|_| WebhookError::Decrypt)?;
    let plain = decrypt(key, &iv, &cipher)?;
    serde_json::from_slice(&plain).map_err(|e| WebhookError::Payload(e.to_string()))
}

/// Makes a callback body for `payload`: encrypted with the credential, stamped now, with a
/// random nonce, signed.
///
/// ```
/// let body = keygate_client::webhook::sign_and_encrypt(
///     &serde_json::json!({"_id": "x", "status": 2}),
///     "64db241f6d9e5c4bd136c187",
///     "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg",
/// )?;
/// assert_eq!(body.signature.len(), 40);
/// # Ok::<(), keygate_client::webhook::WebhookError>(())
/// ```
pub fn sign_and_encrypt<T: Serialize + ?Sized>(
    payload: &T,
    client_id: &str,
    client_secret: &str,
) -> Result<WebhookBody, WebhookError> {
    let nonce = rand::random::<u64>().to_string();
    sign_and_encrypt_with(payload, client_id, client_secret, now_ms(), &nonce)
}

/// [`sign_and_encrypt`] with a given timestamp (Unix milliseconds) and nonce: the same input
/// gives the same body (CBC with a fixed IV), for fixtures.
///
/// ```
/// use keygate_client::webhook::sign_and_encrypt_with;
/// let p = serde_json::json!({"status": 3});
/// let a = sign_and_encrypt_with(&p, "64db241f6d9e5c4bd136c187", "0123456789abcdef", 1710757981609, "1529")?;
/// let b = sign_and_encrypt_with(&p, "64db241f6d9e5c4bd136c187", "0123456789abcdef", 1710757981609, "1529")?;
/// assert_eq!(a, b);
/// # Ok::<(), keygate_client::webhook::WebhookError>(())
/// ```
pub fn sign_and_encrypt_with<T: Serialize + ?Sized>(
    payload: &T,
    client_id: &str,
    client_secret: &str,
    timestamp_ms: i64,
    nonce: &str,
) -> Result<WebhookBody, WebhookError> {
    let plain = serde_json::to_vec(payload).map_err(|e| WebhookError::Payload(e.to_string()))?;
    let data_encrypt = BASE64.encode(encrypt(client_secret.as_bytes(), &iv_of(client_id)?, &plain)?);
    Ok(WebhookBody {
        signature: signature(client_id, timestamp_ms, nonce, &data_encrypt),
        data_encrypt,
        timestamp: timestamp_ms,
        nonce: nonce.to_owned(),
    })
}

/// A receiver of one credential's callbacks, optionally refusing old ones.
///
/// ```
/// use std::time::Duration;
/// use keygate_client::webhook::{self, WebhookError, WebhookVerifier};
///
/// let (id, secret) = ("64db241f6d9e5c4bd136c187", "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg");
/// let verifier = WebhookVerifier::new(id, secret).max_age(Duration::from_secs(300));
///
/// let fresh = serde_json::to_vec(&webhook::sign_and_encrypt(&serde_json::json!({"ok": true}), id, secret)?)?;
/// assert_eq!(verifier.verify_and_decrypt(&fresh)?["ok"], true);
///
/// let old = webhook::sign_and_encrypt_with(&serde_json::json!({"ok": true}), id, secret, 1710757981609, "1")?;
/// let old = serde_json::to_vec(&old)?;
/// assert!(matches!(verifier.verify_and_decrypt(&old), Err(WebhookError::Stale { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    client_id: String,
    client_secret: Secret,
    max_age: Option<Duration>,
}

impl WebhookVerifier {
    /// A verifier for the callbacks of the credential `client_id` with secret `client_secret`.
    ///
    /// ```
    /// let v = keygate_client::webhook::WebhookVerifier::new("64db241f6d9e5c4bd136c187", "0123456789abcdef");
    /// # let _ = v;
    /// ```
    pub fn new(client_id: &str, client_secret: impl Into<Secret>) -> Self {
        Self { client_id: client_id.to_owned(), client_secret: client_secret.into(), max_age: None }
    }

    /// Refuse callbacks whose timestamp is more than `max_age` from now (either way).
    ///
    /// ```
    /// let v = keygate_client::webhook::WebhookVerifier::new("64db241f6d9e5c4bd136c187", "0123456789abcdef")
    ///     .max_age(std::time::Duration::from_secs(300));
    /// # let _ = v;
    /// ```
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Verifies and decrypts `body` (see [`verify_and_decrypt`]).
    ///
    /// ```
    /// let v = keygate_client::webhook::WebhookVerifier::new("64db241f6d9e5c4bd136c187", "0123456789abcdef");
    /// assert!(v.verify_and_decrypt(b"not json").is_err());
    /// ```
    pub fn verify_and_decrypt(&self, body: impl AsRef<[u8]>) -> Result<serde_json::Value, WebhookError> {
        self.verify_and_decrypt_at(body, now_ms())
    }

    /// [`verify_and_decrypt`](Self::verify_and_decrypt) as if now were `now_ms` (Unix
    /// milliseconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate_client::webhook::{sign_and_encrypt_with, WebhookVerifier};
    /// let (id, secret) = ("64db241f6d9e5c4bd136c187", "0123456789abcdef");
    /// let body = serde_json::to_vec(&sign_and_encrypt_with(&1, id, secret, 1_000_000, "n")?)?;
    /// let v = WebhookVerifier::new(id, secret).max_age(Duration::from_secs(60));
    /// assert!(v.verify_and_decrypt_at(&body, 1_000_000 + 60_000).is_ok());
    /// assert!(v.verify_and_decrypt_at(&body, 1_000_000 + 60_001).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify_and_decrypt_at(
        &self,
        body: impl AsRef<[u8]>,
        now_ms: i64,
    ) -> Result<serde_json::Value, WebhookError> {
        verify(body.as_ref(), &self.client_id, self.client_secret.expose().as_bytes(), self.max_age, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const CLIENT_ID: &str = "64db241f6d9e5c4bd136c187";
    const TIMESTAMP: i64 = 1_710_757_981_609;
    const NONCE: &str = "1529";
    /// The exact bytes encrypted in the fixtures below.
    const PAYLOAD: &str =
        r#"{"_id":"64dd838cf0b6684651e90217","status":3,"type":"faceswap","url":"https://example.com/result.mp4"}"#;

    /// (clientSecret, dataEncrypt, signature), computed outside Rust: `openssl enc -aes-N-cbc
    /// -K hex(secret) -iv hex(clientId[..16]) -base64 -A` of PAYLOAD, and Python's
    /// `hashlib.sha1("".join(sorted([clientId, "1710757981609", "1529", dataEncrypt])))`.
    const FIXTURES: [(&str, &str, &str); 3] = [
        (
            "0123456789abcdef",
            "65SNqHTnNPDQhHljFDmh/rUTA8PAy/M1idaGTJEInbQE91UK6LnbQ97vBkjECl/bKvAQM5YC19wBy2rfU6Dy8tydymyfjYU8jHBctv8pv3wHXRQLKEyEtUVpdqMFtUbYQ75UkvDOEpFIFo3AqvPe3w==",
            "fb938d84c36901634512f1e3b7fd3fc1d3ac5be4",
        ),
        (
            "openapi.akool.com1234567",
            "Y9h+rwDg23VT+nPD1Qsf3kFz/AiusLW50MIvAKFzcETljh0Zgx5dgttxFmtC6RkEtsbOswEWW4KpmfsvrFTpOAj5GbWPborbWXduenq/OGNkB6EU4mIfjwt10hBuFsdrLXKirih3SvbPH4sN4Rvtxg==",
            "f174ab994158631b52e34c176e3878e6044cee7b",
        ),
        (
            // A keygate API key: 32 ASCII characters, so AES-256.
            "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg",
            "5QvB8aAwhIC33VSOzZh/DdEzmrRetBNV+3c6N46sdd4s7KhHRkn+9Tu8SeldSxJhz3ur16s3WYb+12SrSbdjMu9Y6Mit6NIQeGts1lKXuib3vvkaOZtkxa/jBOsOHa1cDaeCOgI21q0sk6zWzXfq+w==",
            "5e6d9ad712dec33ba5c8f17de2928ce8bcb32edd",
        ),
    ];

    fn body(data: &str, sig: &str) -> String {
        json!({"signature": sig, "dataEncrypt": data, "timestamp": TIMESTAMP, "nonce": NONCE}).to_string()
    }

    #[test]
    fn signature_matches_a_hand_computed_sha1() {
        // The vendor's published example body, signed with a clientId of keygate's shape; the
        // expected value is Python's hashlib over the sorted, joined strings
        // "1529" + "1710757981609" + "64db241f6d9e5c4bd136c187" + "LuG1...".
        let vendor_data = "LuG1OVSVIwOO/xpW00eSYo77Ncxa9h4VKmOJRjwoyoAmCIS/8FdJRJ+BpZn90BVAAg8xpU1bMmcDlAYDT010Wa9tNi1jivX25Ld03iA4EKs=";
        assert_eq!(signature(CLIENT_ID, TIMESTAMP, NONCE, vendor_data), "20c76a923361b65b9235c24b351fd09a0d9abc85");
        // SHA-1 of the empty string and of "abc" (FIPS 180 test vectors): the four parts are
        // joined with nothing between them, in sorted order.
        assert_eq!(signature("", 0, "", "").len(), 40);
        assert_eq!(hex(&Sha1::digest(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&Sha1::digest(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(signature("c", 0, "b", "a"), hex(&Sha1::digest(b"0abc")));
        // Byte order, not case-insensitive or numeric: "Z" < "a", "10" < "9".
        assert_eq!(signature("a", 9, "Z", "10"), hex(&Sha1::digest(b"109Za")));
    }

    #[test]
    fn fixtures_from_openssl_and_python_verify_and_decrypt() {
        let expected: Value = serde_json::from_str(PAYLOAD).unwrap();
        for (secret, data, sig) in FIXTURES {
            assert_eq!(verify_and_decrypt(body(data, sig), CLIENT_ID, secret), Ok(expected.clone()), "{secret}");
            // And the inverse gives the very same body, byte for byte.
            let made = sign_and_encrypt_with(&expected, CLIENT_ID, secret, TIMESTAMP, NONCE).unwrap();
            assert_eq!((made.data_encrypt.as_str(), made.signature.as_str()), (data, sig), "{secret}");
            // A signature in capitals is the same signature.
            assert!(verify_and_decrypt(body(data, &sig.to_uppercase()), CLIENT_ID, secret).is_ok());
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let (secret, data, sig) = FIXTURES[2];
        let ok = json!({"signature": sig, "dataEncrypt": data, "timestamp": TIMESTAMP, "nonce": NONCE});
        let tamper = |field: &str, value: Value| {
            let mut b = ok.clone();
            b[field] = value;
            verify_and_decrypt(b.to_string(), CLIENT_ID, secret)
        };
        assert_eq!(tamper("timestamp", json!(TIMESTAMP + 1)), Err(WebhookError::BadSignature));
        assert_eq!(tamper("nonce", json!("1530")), Err(WebhookError::BadSignature));
        let mut flipped = data.to_owned();
        flipped.replace_range(0..1, "6");
        assert_eq!(tamper("dataEncrypt", json!(flipped)), Err(WebhookError::BadSignature));
        assert_eq!(tamper("signature", json!(&sig[..39])), Err(WebhookError::BadSignature));
        assert_eq!(tamper("signature", json!("")), Err(WebhookError::BadSignature));
        assert_eq!(tamper("signature", json!(format!("{}0", &sig[..39]))), Err(WebhookError::BadSignature));
        // Another clientId: another signature (checked before anything is decrypted).
        assert_eq!(
            verify_and_decrypt(ok.to_string(), "64db241f6d9e5c4bd136c188", secret),
            Err(WebhookError::BadSignature)
        );
        // The right signature over a ciphertext made with another key: signed, but does not decrypt.
        let other =
            sign_and_encrypt_with(&json!({"a": 1}), CLIENT_ID, "kgk_0000000000000000000000000000", 1, "n").unwrap();
        let forged = json!({
            "signature": signature(CLIENT_ID, 1, "n", &other.data_encrypt),
            "dataEncrypt": other.data_encrypt, "timestamp": 1, "nonce": "n",
        });
        assert_eq!(verify_and_decrypt(forged.to_string(), CLIENT_ID, secret), Err(WebhookError::Decrypt));
    }

    #[test]
    fn round_trips_for_every_key_size_and_payload() {
        for secret in ["0123456789abcdef", "openapi.akool.com1234567", "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg"] {
            for payload in [
                json!({}),
                json!({"status": 3, "url": "https://example.com/a?b=c&d=é", "nested": {"list": [1, 2.5, null, true]}}),
                json!("a string"),
                json!([1, 2, 3]),
                json!({"a": "12345678"}), // 16 bytes of JSON: a whole block of padding
                json!({"long": "x".repeat(10_000)}),
            ] {
                let b = sign_and_encrypt(&payload, CLIENT_ID, secret).unwrap();
                assert!(b.nonce.bytes().all(|c| c.is_ascii_digit()));
                assert!((now_ms() - b.timestamp).abs() < 5_000);
                let wire = serde_json::to_vec(&b).unwrap();
                assert_eq!(verify_and_decrypt(&wire, CLIENT_ID, secret).unwrap(), payload);
            }
        }
        // Two callbacks of the same payload differ (nonce), and both verify.
        let a = sign_and_encrypt(&json!({"s": 1}), CLIENT_ID, "0123456789abcdef").unwrap();
        let b = sign_and_encrypt(&json!({"s": 1}), CLIENT_ID, "0123456789abcdef").unwrap();
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn bodies_keys_and_ids_are_checked() {
        let (secret, data, sig) = FIXTURES[0];
        for bad in [
            "".to_owned(),
            "not json".to_owned(),
            "[]".to_owned(),
            json!({"signature": sig, "dataEncrypt": data, "nonce": NONCE}).to_string(),
            json!({"signature": sig, "dataEncrypt": data, "timestamp": 1.5, "nonce": NONCE}).to_string(),
            json!({"signature": sig, "dataEncrypt": data, "timestamp": "soon", "nonce": NONCE}).to_string(),
            json!({"signature": 5, "dataEncrypt": data, "timestamp": TIMESTAMP, "nonce": NONCE}).to_string(),
        ] {
            assert!(matches!(verify_and_decrypt(&bad, CLIENT_ID, secret), Err(WebhookError::Malformed(_))), "{bad}");
        }
        // A timestamp sent as digits and a nonce sent as a number are read as the same strings.
        let lenient = json!({"signature": sig, "dataEncrypt": data, "timestamp": TIMESTAMP.to_string(), "nonce": 1529});
        assert!(verify_and_decrypt(lenient.to_string(), CLIENT_ID, secret).is_ok());

        // Key lengths other than 16/24/32 bytes, and clientIds shorter than the IV.
        for len in [0, 15, 17, 31, 33] {
            let key = "k".repeat(len);
            assert_eq!(sign_and_encrypt(&json!(1), CLIENT_ID, &key), Err(WebhookError::KeyLength(len)));
            let b = json!({"signature": signature(CLIENT_ID, 1, "n", data), "dataEncrypt": data, "timestamp": 1, "nonce": "n"});
            assert_eq!(verify_and_decrypt(b.to_string(), CLIENT_ID, &key), Err(WebhookError::KeyLength(len)));
        }
        assert_eq!(sign_and_encrypt(&json!(1), "short", secret), Err(WebhookError::ClientIdLength(5)));
        // Signed, but not base64 / not whole blocks / not JSON inside.
        for data in ["%%%notbase64", "AAAA", ""] {
            let b = json!({"signature": signature(CLIENT_ID, 1, "n", data), "dataEncrypt": data, "timestamp": 1, "nonce": "n"});
            assert_eq!(verify_and_decrypt(b.to_string(), CLIENT_ID, secret), Err(WebhookError::Decrypt), "{data:?}");
        }
        let not_json = BASE64.encode(encrypt(secret.as_bytes(), &iv_of(CLIENT_ID).unwrap(), b"{nope").unwrap());
        let b = json!({"signature": signature(CLIENT_ID, 1, "n", &not_json), "dataEncrypt": not_json, "timestamp": 1, "nonce": "n"});
        assert!(matches!(verify_and_decrypt(b.to_string(), CLIENT_ID, secret), Err(WebhookError::Payload(_))));
    }

    #[test]
    fn max_age_refuses_old_and_future_timestamps() {
        let (secret, data, sig) = FIXTURES[1];
        let v = WebhookVerifier::new(CLIENT_ID, secret).max_age(Duration::from_secs(300));
        let b = body(data, sig);
        assert!(v.verify_and_decrypt_at(&b, TIMESTAMP + 300_000).is_ok());
        assert!(v.verify_and_decrypt_at(&b, TIMESTAMP - 300_000).is_ok());
        assert_eq!(
            v.verify_and_decrypt_at(&b, TIMESTAMP + 300_001),
            Err(WebhookError::Stale { age: Duration::from_millis(300_001), max_age: Duration::from_secs(300) })
        );
        assert!(matches!(v.verify_and_decrypt_at(&b, TIMESTAMP - 400_000), Err(WebhookError::Stale { .. })));
        // The age is only looked at once the signature holds: a forged body is BadSignature.
        let forged = body(data, "0000000000000000000000000000000000000000");
        assert_eq!(v.verify_and_decrypt_at(&forged, TIMESTAMP + 10_000_000), Err(WebhookError::BadSignature));
        // Without max_age, any age passes.
        assert!(WebhookVerifier::new(CLIENT_ID, secret).verify_and_decrypt(&b).is_ok());
        assert!(!format!("{v:?}").contains(secret), "the secret stays out of Debug");
    }
}
