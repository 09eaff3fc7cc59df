//! Business codes of the protocol (`code` in every response envelope).

use serde::{Serialize, Serializer};

/// A business status code. The vendor's clients read this, not the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusinessCode {
    /// 1000: success.
    Success,
    /// 1003: parameter error (malformed body, missing field, value out of range).
    ParamError,
    /// 1005: operation too frequent.
    TooFrequent,
    /// 1009: permission denied.
    PermissionDenied,
    /// 1101: invalid authorization, or the token has expired.
    InvalidAuth,
    /// 1102: authorization cannot be empty.
    EmptyAuth,
    /// 1109: account does not exist.
    AccountNotFound,
    /// 1200: the account has been banned.
    Banned,
    /// 1500: internal error (keygate's own; the vendor documents no code for it).
    Internal,
    /// 1503: the store cannot be reached (keygate's own).
    Unavailable,
    /// 1502: the gateway's upstream refused or broke the connection (keygate's own).
    UpstreamUnavailable,
    /// 1504: the gateway's upstream did not answer in time (keygate's own).
    UpstreamTimeout,
}

impl BusinessCode {
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Success => 1000,
            Self::ParamError => 1003,
            Self::TooFrequent => 1005,
            Self::PermissionDenied => 1009,
            Self::InvalidAuth => 1101,
            Self::EmptyAuth => 1102,
            Self::AccountNotFound => 1109,
            Self::Banned => 1200,
            Self::Internal => 1500,
            Self::Unavailable => 1503,
            Self::UpstreamUnavailable => 1502,
            Self::UpstreamTimeout => 1504,
        }
    }

    /// The code as a static string (for metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "1000",
            Self::ParamError => "1003",
            Self::TooFrequent => "1005",
            Self::PermissionDenied => "1009",
            Self::InvalidAuth => "1101",
            Self::EmptyAuth => "1102",
            Self::AccountNotFound => "1109",
            Self::Banned => "1200",
            Self::Internal => "1500",
            Self::Unavailable => "1503",
            Self::UpstreamUnavailable => "1502",
            Self::UpstreamTimeout => "1504",
        }
    }

    /// The vendor's wording where it has one.
    pub const fn default_msg(self) -> &'static str {
        match self {
            Self::Success => "OK",
            Self::ParamError => "Parameter error",
            Self::TooFrequent => "Operation too frequent",
            Self::PermissionDenied => "Permission denied",
            Self::InvalidAuth => "Invalid authorization or the request token has expired",
            Self::EmptyAuth => "Authorization cannot be empty",
            Self::AccountNotFound => "Account does not exist",
            Self::Banned => "The account has been banned",
            Self::Internal => "Internal error",
            Self::Unavailable => "Service temporarily unavailable",
            Self::UpstreamUnavailable => "Upstream unavailable",
            Self::UpstreamTimeout => "Upstream timed out",
        }
    }
}

impl Serialize for BusinessCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_matches_number() {
        use BusinessCode::*;
        for c in [
            Success,
            ParamError,
            TooFrequent,
            PermissionDenied,
            InvalidAuth,
            EmptyAuth,
            AccountNotFound,
            Banned,
            Internal,
            Unavailable,
            UpstreamUnavailable,
            UpstreamTimeout,
        ] {
            assert_eq!(c.as_str(), c.as_u32().to_string());
        }
    }
}
