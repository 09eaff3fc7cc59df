//! keygate's domain, free of IO: identifiers, the API key format, secret hashing,
//! token claims, business codes and the authentication decision itself.
//!
//! Architecture invariant: nothing here touches the network, the filesystem, a
//! database or a clock it was not handed. Everything is a pure function of its
//! inputs, so it is tested with plain unit and property tests.
#![forbid(unsafe_code)]

pub mod audit;
pub mod code;
pub mod credits;
pub mod decide;
pub mod ids;
pub mod key;
pub mod model;
pub mod net;
pub mod permission;
pub mod ratelimit;
pub mod secret;
pub mod token;

pub use code::BusinessCode;
pub use ids::{AccountId, ClientId};
pub use key::{ApiKey, KeyFormatError};
pub use secret::{MasterKey, Secret, SecretHash, SecretHasher};

/// Reads an enum from its name as serde reads it from a configuration file (the same names,
/// aliases and renaming), for `FromStr` impls that flags and environment variables use: one
/// table of names per enum.
pub fn from_name<'de, T: serde::Deserialize<'de>>(name: &'de str) -> Result<T, String> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name)).map_err(|e| e.to_string())
}
