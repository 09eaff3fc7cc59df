//! The bearer token returned by getToken: a JWT with the vendor's claim names plus what keygate
//! needs to kill it early (`cid`, the credential, and `gen`, its secret generation).
//!
//! RFC 8725: the algorithm is pinned to HS256 (no `none`, no algorithm confusion: a token whose
//! header names anything else is refused before its signature is looked at), `exp` is required,
//! and the key is chosen by `kid` among keygate's own key ids only.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ClientId};
use crate::secret::MasterKey;

/// Claims as issued. Names follow the vendor's tokens (`id`, `type`, `from`, `email`,
/// `firstName`, `uid`, `code`, `iat`, `exp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The account id (24-hex).
    pub id: AccountId,
    #[serde(rename = "type")]
    pub kind: String,
    pub from: String,
    pub email: String,
    #[serde(rename = "firstName")]
    pub first_name: String,
    pub uid: i64,
    /// Short non-secret code (vendor field); keygate puts the clientId's last four characters here.
    pub code: String,
    pub iat: i64,
    pub exp: i64,
    /// The credential (clientId) the token was issued to.
    pub cid: ClientId,
    /// The credential's secret generation at issue time.
    #[serde(rename = "gen")]
    pub generation: u32,
    /// Unique token id.
    pub jti: String,
}

/// What verification keeps of a token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct TokenSubject {
    #[serde(rename = "id")]
    pub account_id: AccountId,
    pub uid: i64,
    #[serde(rename = "cid")]
    pub client_id: ClientId,
    #[serde(rename = "gen")]
    pub generation: u32,
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token key id is unknown")]
    UnknownKid,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("no signing key is configured")]
    NoSigningKey,
}

/// The signing keys, derived from the master key; the newest kid signs, all verify.
pub struct Keyring {
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active_kid", &self.signing.as_ref().map(|(k, _)| k))
            .field("kids", &self.verifying.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// `kids` are the live key ids; `active` is the one that signs new tokens.
    pub fn new<'a>(master: &MasterKey, kids: impl IntoIterator<Item = &'a str>, active: Option<&str>) -> Self {
        let verifying =
            kids.into_iter().map(|kid| (kid.to_owned(), DecodingKey::from_secret(&master.jwt_secret(kid)))).collect();
        let signing = active.map(|kid| (kid.to_owned(), EncodingKey::from_secret(&master.jwt_secret(kid))));
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the caller's clock in `verify`, with no leeway.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self { signing, verifying, validation }
    }

    pub fn active_kid(&self) -> Option<&str> {
        self.signing.as_ref().map(|(k, _)| k.as_str())
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let (kid, key) = self.signing.as_ref().ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|_| TokenError::NoSigningKey)
    }

    /// Verifies signature, algorithm, key id and expiry (`exp <= now` is expired).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<TokenSubject, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKid)?;
        let key = self.verifying.get(kid).ok_or(TokenError::UnknownKid)?;
        let data = jsonwebtoken::decode::<TokenSubject>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })?;
        if data.claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn claims(exp: i64) -> Claims {
        Claims {
            id: AccountId::generate(1),
            kind: "user".into(),
            from: "keygate".into(),
            email: "a@b.c".into(),
            first_name: "A".into(),
            uid: 7,
            code: "Ab12".into(),
            iat: 100,
            exp,
            cid: ClientId::generate(1),
            generation: 1,
            jti: "j".into(),
        }
    }

    #[test]
    fn issue_and_verify() {
        let m = MasterKey::generate();
        let ring = Keyring::new(&m, ["k1"], Some("k1"));
        let c = claims(1000);
        let t = ring.issue(&c).unwrap();
        let s = ring.verify(&t, 999).unwrap();
        assert_eq!((s.account_id, s.client_id, s.uid, s.generation), (c.id, c.cid, 7, 1));
        assert_eq!(ring.verify(&t, 1000), Err(TokenError::Expired));
    }

    #[test]
    fn old_kid_still_verifies_after_rotation() {
        let m = MasterKey::generate();
        let old = Keyring::new(&m, ["k1"], Some("k1"));
        let t = old.issue(&claims(1000)).unwrap();
        let new = Keyring::new(&m, ["k1", "k2"], Some("k2"));
        assert!(new.verify(&t, 1).is_ok());
        assert!(new.issue(&claims(1000)).unwrap() != t);
        let retired = Keyring::new(&m, ["k2"], Some("k2"));
        assert_eq!(retired.verify(&t, 1), Err(TokenError::UnknownKid));
    }

    #[test]
    fn foreign_key_tampering_and_alg_confusion_refused() {
        let ring = Keyring::new(&MasterKey::generate(), ["k1"], Some("k1"));
        let foreign = Keyring::new(&MasterKey::generate(), ["k1"], Some("k1"));
        let t = foreign.issue(&claims(1000)).unwrap();
        assert_eq!(ring.verify(&t, 1), Err(TokenError::Signature));

        let good = ring.issue(&claims(1000)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // Payload tampered (uid changed), signature kept.
        let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["uid"] = 8.into();
        let forged = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
        assert_eq!(ring.verify(&forged, 1), Err(TokenError::Signature));
        // alg none, with and without a signature.
        let none = b64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(ring.verify(&format!("{none}.{}.", parts[1]), 1).is_err());
        assert!(ring.verify(&format!("{none}.{}.{}", parts[1], parts[2]), 1).is_err());
        // HS512 header.
        let hs512 = b64.encode(r#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#);
        assert_eq!(ring.verify(&format!("{hs512}.{}.{}", parts[1], parts[2]), 1), Err(TokenError::Algorithm));
        assert_eq!(ring.verify("not-a-jwt", 1), Err(TokenError::Malformed));
        assert_eq!(ring.verify("", 1), Err(TokenError::Malformed));
    }
}
