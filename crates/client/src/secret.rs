//! [`Secret`]: a string that never shows itself in `Debug` output or logs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string (an API key, a client secret, the admin token, a token). Its `Debug` form is
/// `***`, so a secret inside a logged struct or error does not leak; [`Secret::expose`] gives
/// the value to whoever really needs it.
///
/// ```
/// use keygate_client::Secret;
///
/// let key = Secret::new("kgk_0123456789abcdefghijklmnopqr");
/// assert_eq!(format!("{key:?}"), "***");
/// assert_eq!(key.expose(), "kgk_0123456789abcdefghijklmnopqr");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    ///
    /// ```
    /// let s = keygate_client::Secret::new(String::from("x"));
    /// assert_eq!(s.expose(), "x");
    /// ```
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    ///
    /// ```
    /// assert_eq!(keygate_client::Secret::from("kga_token").expose(), "kga_token");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}
