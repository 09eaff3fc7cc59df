//! Business codes of the protocol (`code` in every response envelope).

use serde::{Serialize, Serializer};

/// One table of the codes: variant, number, and the vendor's wording where it has one.
macro_rules! business_codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $msg:literal;)*) => {
        /// A business status code. The vendor's clients read this, not the HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum BusinessCode {
            $($(#[$doc])* $name,)*
        }

        impl BusinessCode {
            /// Every code, for tests and documentation.
            pub const ALL: &'static [BusinessCode] = &[$(Self::$name),*];

            pub const fn as_u32(self) -> u32 {
                match self {
                    $(Self::$name => $num,)*
                }
            }

            /// The code as a static string (for metric labels).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($num),)*
                }
            }

            /// The vendor's wording where it has one.
            pub const fn default_msg(self) -> &'static str {
                match self {
                    $(Self::$name => $msg,)*
                }
            }
        }
    };
}

business_codes! {
    /// 1000: success.
    Success = 1000, "OK";
    /// 1003: parameter error (malformed body, missing field, value out of range).
    ParamError = 1003, "Parameter error";
    /// 1005: operation too frequent.
    TooFrequent = 1005, "Operation too frequent";
    /// 1006: insufficient quota balance (the credits left do not cover the request's cost).
    InsufficientQuota = 1006, "Insufficient quota balance";
    /// 1009: permission denied.
    PermissionDenied = 1009, "Permission denied";
    /// 1101: invalid authorization, or the token has expired.
    InvalidAuth = 1101, "Invalid authorization or the request token has expired";
    /// 1102: authorization cannot be empty.
    EmptyAuth = 1102, "Authorization cannot be empty";
    /// 1109: account does not exist.
    AccountNotFound = 1109, "Account does not exist";
    /// 1200: the account has been banned.
    Banned = 1200, "The account has been banned";
    /// 1408: the client did not send its request body in time (keygate's own, as HTTP 408).
    RequestTimeout = 1408, "Request body not received in time";
    /// 1499: the client closed the connection before its request was complete (keygate's own,
    /// as nginx's 499; for the log and metrics, since no one is left to read it).
    ClientClosed = 1499, "Client closed the request";
    /// 1500: internal error (keygate's own; the vendor documents no code for it).
    Internal = 1500, "Internal error";
    /// 1503: the store cannot be reached (keygate's own).
    Unavailable = 1503, "Service temporarily unavailable";
    /// 1502: the gateway's upstream refused or broke the connection (keygate's own).
    UpstreamUnavailable = 1502, "Upstream unavailable";
    /// 1504: the gateway's upstream did not answer in time (keygate's own).
    UpstreamTimeout = 1504, "Upstream timed out";
}

/// In the OpenAPI document: an integer, one of the table's numbers.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for BusinessCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let table: Vec<String> = Self::ALL.iter().map(|c| format!("{} {}", c.as_u32(), c.default_msg())).collect();
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some(format!("Business code: {}", table.join("; "))))
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_u32())))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for BusinessCode {}

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
        assert_eq!(BusinessCode::ALL.len(), 15);
        for c in BusinessCode::ALL {
            assert_eq!(c.as_str(), c.as_u32().to_string());
            assert!(!c.default_msg().is_empty());
        }
        assert_eq!(BusinessCode::Banned.as_u32(), 1200);
        assert_eq!(BusinessCode::EmptyAuth.as_str(), "1102");
    }
}
