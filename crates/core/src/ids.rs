//! 24-hex identifiers shaped like the vendor's (`64db241f6d9e5c4bd136c187`):
//! 4 bytes of creation time (seconds, big-endian) then 8 random bytes.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 24 lowercase hexadecimal characters")]
pub struct IdError;

fn parse_hex24(s: &str) -> Result<[u8; 12], IdError> {
    let b = s.as_bytes();
    if b.len() != 24 || !b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return Err(IdError);
    }
    let mut out = [0u8; 12];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdError)?;
    Ok(out)
}

fn hex24(b: &[u8; 12]) -> [u8; 24] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 24];
    for (i, byte) in b.iter().enumerate() {
        out[2 * i] = DIGITS[(byte >> 4) as usize];
        out[2 * i + 1] = DIGITS[(byte & 15) as usize];
    }
    out
}

fn generate(now_unix_secs: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&(now_unix_secs as u32).to_be_bytes());
    rand::rng().fill_bytes(&mut b[4..]);
    b
}

macro_rules! hex_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 12]);

        impl $name {
            /// A new identifier stamped with the given time.
            pub fn generate(now_unix_secs: u64) -> Self {
                Self(generate(now_unix_secs))
            }
            pub fn parse(s: &str) -> Result<Self, IdError> {
                parse_hex24(s).map(Self)
            }
            pub fn as_bytes(&self) -> &[u8; 12] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                String::from_utf8(self.hex_bytes().to_vec()).expect("hex is ASCII")
            }
            /// The 24 hex characters without allocating.
            pub fn hex_bytes(&self) -> [u8; 24] {
                hex24(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(std::str::from_utf8(&self.hex_bytes()).expect("hex is ASCII"))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(std::str::from_utf8(&self.hex_bytes()).expect("hex is ASCII"))
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(stringify!($name))
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

/// A 24-hex identifier in the OpenAPI document.
#[cfg(feature = "openapi")]
fn id_schema(name: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("{name}: 24 lowercase hexadecimal characters (4 bytes of time, 8 random)")))
        .pattern(Some("^[0-9a-f]{24}$"))
        .min_length(Some(24))
        .max_length(Some(24))
        .examples(["64db241f6d9e5c4bd136c187"])
        .into()
}

hex_id!(
    /// An account's public identifier (the token's `id` claim).
    AccountId
);
hex_id!(
    /// A credential's public identifier (`clientId`).
    ClientId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let id = AccountId::generate(0x64db241f);
        let s = id.to_string();
        assert_eq!(s.len(), 24);
        assert!(s.starts_with("64db241f"));
        assert_eq!(AccountId::parse(&s).unwrap(), id);
        assert!(ClientId::parse("64db241f6d9e5c4bd136c187").is_ok());
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        let id = ClientId::generate(0xdeadbeef);
        assert_eq!(id.to_hex(), hex::encode(id.as_bytes()));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "64db241f6d9e5c4bd136c18",
            "64db241f6d9e5c4bd136c1870",
            "64DB241F6D9E5C4BD136C187",
            "64db241f6d9e5c4bd136c18g",
        ] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
    }
}
