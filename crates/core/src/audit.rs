//! Who changed what: the actor and context every change is recorded with, and the audit log's
//! entries as they are read back.
//!
//! Every write to accounts, credentials, plans, roles, limits, credits, signing keys and the
//! admin token takes an [`Audit`]; the store records the entry in the same transaction as the
//! change, so a change without its entry (or an entry without its change) cannot exist.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// The admin API, with the admin token.
    AdminToken,
    /// An operator of the web console (named by email).
    Operator,
    /// A customer in the web console, on their own account (named by email).
    Customer,
    /// The `keygate` command line (named `user@host`).
    Cli,
    /// keygate itself (the first admin token and signing key at start-up).
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminToken => "admin_token",
            Self::Operator => "operator",
            Self::Customer => "customer",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin_token" => Self::AdminToken,
            "operator" => Self::Operator,
            "customer" => Self::Customer,
            "cli" => Self::Cli,
            "system" => Self::System,
            _ => return None,
        })
    }
}

/// The longest actor name kept (an email is at most 254 bytes; `user@host` is cut to this).
pub const MAX_ACTOR: usize = 320;
/// The longest request id kept.
pub const MAX_REQUEST_ID: usize = 128;

/// Who is making a change, from where: given to every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub kind: ActorKind,
    /// An email for console users, `user@host` for the CLI, `admin token` or `keygate`.
    pub actor: String,
    /// The client's address (behind trusted proxies: the client's, not the proxy's).
    pub source_ip: Option<IpAddr>,
    /// The request id of the admin API or console request (as in the log).
    pub request_id: Option<String>,
}

impl Audit {
    fn new(kind: ActorKind, actor: &str) -> Self {
        Self { kind, actor: cut(actor, MAX_ACTOR), source_ip: None, request_id: None }
    }

    /// The admin API, authenticated with the admin token.
    pub fn admin_token() -> Self {
        Self::new(ActorKind::AdminToken, "admin token")
    }

    pub fn operator(email: &str) -> Self {
        Self::new(ActorKind::Operator, email)
    }

    pub fn customer(email: &str) -> Self {
        Self::new(ActorKind::Customer, email)
    }

    /// The command line, as `user` on `host`.
    pub fn cli(user: &str, host: &str) -> Self {
        Self::new(ActorKind::Cli, &format!("{user}@{host}"))
    }

    /// keygate itself.
    pub fn system() -> Self {
        Self::new(ActorKind::System, "keygate")
    }

    /// With the request's client address and id.
    pub fn from_request(mut self, source_ip: Option<IpAddr>, request_id: Option<&str>) -> Self {
        self.source_ip = source_ip;
        self.request_id = request_id.map(|id| cut(id, MAX_REQUEST_ID));
        self
    }

    /// How the actor appears in an account's ban history (as it did before the audit log):
    /// `admin-api`, `console:EMAIL`, `cli:USER@HOST`, `keygate`.
    pub fn label(&self) -> String {
        match self.kind {
            ActorKind::AdminToken => "admin-api".to_owned(),
            ActorKind::Operator | ActorKind::Customer => format!("console:{}", self.actor),
            ActorKind::Cli => format!("cli:{}", self.actor),
            ActorKind::System => self.actor.clone(),
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Account,
    Credential,
    Plan,
    Role,
    SigningKey,
    AdminToken,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Credential => "credential",
            Self::Plan => "plan",
            Self::Role => "role",
            Self::SigningKey => "signing_key",
            Self::AdminToken => "admin_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "account" => Self::Account,
            "credential" => Self::Credential,
            "plan" => Self::Plan,
            "role" => Self::Role,
            "signing_key" => Self::SigningKey,
            "admin_token" => Self::AdminToken,
            _ => return None,
        })
    }
}

/// The actions recorded, by target. The names are the API's (`action=` filters by one, or by
/// its target with `credential`, `account`, ...).
pub mod action {
    pub const ACCOUNT_CREATE: &str = "account.create";
    pub const ACCOUNT_BAN: &str = "account.ban";
    pub const ACCOUNT_UNBAN: &str = "account.unban";
    /// Rate limits, plan or IP allowlist.
    pub const ACCOUNT_UPDATE: &str = "account.update";
    /// Made an operator of the console, or a customer again.
    pub const ACCOUNT_ROLE: &str = "account.role";
    /// A console password set, changed or removed (never the password or its hash).
    pub const ACCOUNT_PASSWORD: &str = "account.password";
    pub const ACCOUNT_CREDITS: &str = "account.credits";
    pub const CREDENTIAL_CREATE: &str = "credential.create";
    /// Name, meta, expiry, enabled, permissions, roles, IP allowlist or rate limits.
    pub const CREDENTIAL_UPDATE: &str = "credential.update";
    pub const CREDENTIAL_REVOKE: &str = "credential.revoke";
    pub const CREDENTIAL_ROTATE: &str = "credential.rotate";
    pub const CREDENTIAL_CREDITS: &str = "credential.credits";
    pub const PLAN_CREATE: &str = "plan.create";
    pub const PLAN_UPDATE: &str = "plan.update";
    pub const PLAN_DELETE: &str = "plan.delete";
    pub const ROLE_CREATE: &str = "role.create";
    pub const ROLE_UPDATE: &str = "role.update";
    pub const ROLE_DELETE: &str = "role.delete";
    pub const SIGNING_KEY_ADD: &str = "signing_key.add";
    pub const SIGNING_KEY_RETIRE: &str = "signing_key.retire";
    pub const ADMIN_TOKEN_CREATE: &str = "admin_token.create";
    pub const ADMIN_TOKEN_RESET: &str = "admin_token.reset";

    /// Every action, for validating a filter.
    pub const ALL: &[&str] = &[
        ACCOUNT_CREATE,
        ACCOUNT_BAN,
        ACCOUNT_UNBAN,
        ACCOUNT_UPDATE,
        ACCOUNT_ROLE,
        ACCOUNT_PASSWORD,
        ACCOUNT_CREDITS,
        CREDENTIAL_CREATE,
        CREDENTIAL_UPDATE,
        CREDENTIAL_REVOKE,
        CREDENTIAL_ROTATE,
        CREDENTIAL_CREDITS,
        PLAN_CREATE,
        PLAN_UPDATE,
        PLAN_DELETE,
        ROLE_CREATE,
        ROLE_UPDATE,
        ROLE_DELETE,
        SIGNING_KEY_ADD,
        SIGNING_KEY_RETIRE,
        ADMIN_TOKEN_CREATE,
        ADMIN_TOKEN_RESET,
    ];
}

/// One entry of the audit log, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increases with every entry (the cursor of a listing).
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    pub actor_kind: ActorKind,
    /// An email, `user@host`, `admin token` or `keygate`.
    pub actor: String,
    /// e.g. `credential.update`.
    pub action: String,
    pub target_kind: TargetKind,
    /// An accountId, clientId, plan or role name, signing key id.
    pub target: String,
    /// The account the target belongs to (an account's own entries and its credentials').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The fields that changed, as they were (absent for a creation). Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<serde_json::Value>,
    /// The fields that changed, as they are now (absent for a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub after: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The fields of `before` and `after` (JSON objects) that differ, each side with its own
/// values; `ignore` lists fields that change with every write (`updatedAt`). Not objects: both
/// whole.
pub fn changed_fields(
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    ignore: &[&str],
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    use serde_json::{Map, Value};
    match (before, after) {
        (Some(Value::Object(mut b)), Some(Value::Object(mut a))) => {
            let keys: std::collections::BTreeSet<String> = b.keys().chain(a.keys()).cloned().collect();
            let (mut before, mut after) = (Map::new(), Map::new());
            for key in keys {
                if ignore.contains(&key.as_str()) {
                    continue;
                }
                let (old, new) = (b.remove(&key), a.remove(&key));
                if old != new {
                    // A field that appeared or went away shows as null on its missing side.
                    before.insert(key.clone(), old.unwrap_or(Value::Null));
                    after.insert(key, new.unwrap_or(Value::Null));
                }
            }
            (Some(Value::Object(before)), Some(Value::Object(after)))
        }
        (b, a) => (b.map(|v| strip(v, ignore)), a.map(|v| strip(v, ignore))),
    }
}

fn strip(v: serde_json::Value, ignore: &[&str]) -> serde_json::Value {
    match v {
        serde_json::Value::Object(mut m) => {
            for key in ignore {
                m.remove(*key);
            }
            serde_json::Value::Object(m)
        }
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_changed_fields_are_kept_on_both_sides() {
        let (b, a) = changed_fields(
            Some(json!({"name": "a", "enabled": true, "updatedAt": 1, "meta": {"x": 1}})),
            Some(json!({"name": "b", "enabled": true, "updatedAt": 2, "roles": ["r"]})),
            &["updatedAt"],
        );
        assert_eq!(b, Some(json!({"name": "a", "meta": {"x": 1}, "roles": null})));
        assert_eq!(a, Some(json!({"name": "b", "meta": null, "roles": ["r"]})));
    }

    #[test]
    fn a_creation_keeps_everything_but_the_ignored() {
        let (b, a) = changed_fields(None, Some(json!({"name": "a", "updatedAt": 2})), &["updatedAt"]);
        assert_eq!(b, None);
        assert_eq!(a, Some(json!({"name": "a"})));
    }

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let a = Audit::customer(&long);
        assert!(a.actor.len() <= MAX_ACTOR && a.actor.chars().all(|c| c == 'é'));
        let a = Audit::cli("ops", "host").from_request(None, Some(&"x".repeat(500)));
        assert_eq!(a.request_id.unwrap().len(), MAX_REQUEST_ID);
        assert_eq!(Audit::cli("ops", "host").label(), "cli:ops@host");
        assert_eq!(Audit::admin_token().label(), "admin-api");
        assert_eq!(Audit::operator("op@example.com").label(), "console:op@example.com");
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in [ActorKind::AdminToken, ActorKind::Operator, ActorKind::Customer, ActorKind::Cli, ActorKind::System] {
            assert_eq!(ActorKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        for k in [
            TargetKind::Account,
            TargetKind::Credential,
            TargetKind::Plan,
            TargetKind::Role,
            TargetKind::SigningKey,
            TargetKind::AdminToken,
        ] {
            assert_eq!(TargetKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
    }
}
