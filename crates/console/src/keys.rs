//! A credential's own settings as the console shows and takes them: its name, expiry, whether it
//! is enabled, its permissions, roles and IP allowlist, and the status those give it (active,
//! disabled, expired, revoked, or refused because its account is banned). Customers change the
//! name, expiry, permissions and allowlist of their own keys; operators those of any key, and
//! also enable or disable it and pick its roles among the existing ones. A form is one
//! [`CredentialChange`] written by one `update_credential` call: every field is checked first,
//! and a refused form changes nothing. The rules themselves are [`keygate_core::model`]'s.

use keygate_core::model::{Credential, CredentialChange, CredentialStatus, KeyRole, MAX_ALLOWLIST};
use keygate_core::net::Cidr;
use keygate_core::permission::Grants;

use super::{fmt_time, iso_time};

/// What a credential's requests get now, in words and as a CSS class (`status-<class>`).
pub(crate) fn status(c: &Credential, account_banned: bool, now: i64) -> (&'static str, &'static str) {
    if c.status == CredentialStatus::Revoked {
        ("revoked", "revoked")
    } else if account_banned {
        ("refused: account banned", "banned")
    } else if !c.enabled {
        ("disabled", "disabled")
    } else if c.expires_at.is_some_and(|t| t <= now) {
        ("expired", "expired")
    } else {
        ("active", "active")
    }
}

/// An expiry as the forms show it: `2026-12-31 23:59` (UTC).
pub fn expiry_input(ms: i64) -> String {
    iso_time(ms)[..16].replace('T', " ")
}

/// Reads an expiry typed in UTC: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (or with `T`), with an
/// optional `Z` or ` UTC`; empty: none. The error is safe to show.
pub fn parse_expiry(text: &str) -> Result<Option<i64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || "the expiry must be a date and time in UTC like 2026-12-31 23:59, or empty for none".to_owned();
    if t.len() > 40 {
        return Err(bad());
    }
    let t = t.strip_suffix("UTC").or_else(|| t.strip_suffix('Z')).unwrap_or(t).trim_end().replace('T', " ");
    let full = match t.len() {
        10 => format!("{t} 00:00:00"),
        16 => format!("{t}:00"),
        _ => t,
    };
    let at = humantime::parse_rfc3339_weak(&full).map_err(|_| bad())?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    i64::try_from(ms).map(Some).map_err(|_| bad())
}

/// Reads permissions: separated by lines, spaces or commas (the grammar is checked when saved).
pub fn parse_permissions(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

/// Reads an allowlist: one address or network per line (commas and spaces separate them too).
pub fn parse_allowlist(text: &str) -> Result<Vec<Cidr>, String> {
    let mut list = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for item in line.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()) {
            if list.len() >= MAX_ALLOWLIST {
                return Err(format!("an allowlist holds at most {MAX_ALLOWLIST} networks"));
            }
            let shown: String = item.chars().take(60).collect();
            let net = item.parse::<Cidr>().map_err(|_| {
                format!("line {}: {shown:?} is not an address or a network like 203.0.113.7 or 10.0.0.0/8", i + 1)
            })?;
            list.push(net);
        }
    }
    Ok(list)
}

/// An allowlist in the form [`parse_allowlist`] reads, one per line (a single address without
/// its `/32` or `/128`).
pub fn allowlist_lines(list: &[Cidr]) -> String {
    list.iter().map(short_cidr).collect::<Vec<_>>().join("\n")
}

fn short_cidr(c: &Cidr) -> String {
    let s = c.to_string();
    match s.split_once('/') {
        Some((a, "32")) if !a.contains(':') => a.to_owned(),
        Some((a, "128")) if a.contains(':') => a.to_owned(),
        _ => s,
    }
}

/// A credential's settings as its page shows them.
pub(crate) struct SettingsView {
    pub name: Option<String>,
    /// (as shown in UTC, RFC 3339), and whether it has passed.
    pub expires: Option<(String, String, bool)>,
    pub enabled: bool,
    pub permissions: Vec<String>,
    pub roles: Vec<String>,
    /// What its roles grant besides.
    pub role_permissions: Vec<String>,
    pub allowlist: Vec<String>,
}

impl SettingsView {
    pub fn of(c: &Credential, now: i64) -> Self {
        let mut role_permissions: Vec<String> =
            c.role_permissions.iter().filter(|p| !c.permissions.contains(p)).cloned().collect();
        role_permissions.sort();
        role_permissions.dedup();
        Self {
            name: c.name.clone(),
            expires: c.expires_at.map(|t| (fmt_time(t), iso_time(t), t <= now)),
            enabled: c.enabled,
            permissions: c.permissions.clone(),
            roles: c.roles.clone(),
            role_permissions,
            allowlist: Self::allowlist_of(&c.ip_allowlist),
        }
    }

    /// An allowlist as the pages list it.
    pub fn allowlist_of(list: &[Cidr]) -> Vec<String> {
        list.iter().map(short_cidr).collect()
    }
}

/// A role to pick in the operator's form.
pub(crate) struct RoleOption {
    pub name: String,
    pub permissions: String,
    pub checked: bool,
}

/// The settings form of one credential: its values now, or as typed in a refused form.
pub(crate) struct SettingsForm {
    /// The suffix of its element ids (the clientId).
    pub key: String,
    pub action: String,
    pub name: String,
    pub expires: String,
    pub permissions: String,
    pub allowlist: String,
    /// Operators' fields: enabled, and the roles to pick from.
    pub operator: bool,
    pub enabled: bool,
    pub roles: Vec<RoleOption>,
    pub error: Option<String>,
    /// The previous form was saved.
    pub saved: bool,
}

impl SettingsForm {
    /// The form with the credential's values now (`roles`: every role, for operators).
    pub fn new(c: &Credential, action: String, roles: Option<&[KeyRole]>) -> Self {
        Self {
            key: c.client_id.to_hex(),
            action,
            name: c.name.clone().unwrap_or_default(),
            expires: c.expires_at.map(expiry_input).unwrap_or_default(),
            permissions: c.permissions.join("\n"),
            allowlist: allowlist_lines(&c.ip_allowlist),
            operator: roles.is_some(),
            enabled: c.enabled,
            roles: role_options(roles.unwrap_or_default(), &c.roles),
            error: None,
            saved: false,
        }
    }

    /// The form as typed, refused for `error`.
    pub fn refused(mut self, typed: &Typed, error: String) -> Self {
        self.name.clone_from(&typed.name);
        self.expires.clone_from(&typed.expires);
        self.permissions.clone_from(&typed.permissions);
        self.allowlist.clone_from(&typed.allowlist);
        if self.operator {
            self.enabled = typed.enabled;
            for r in &mut self.roles {
                r.checked = typed.roles.contains(&r.name);
            }
        }
        self.error = Some(error);
        self
    }
}

fn role_options(all: &[KeyRole], held: &[String]) -> Vec<RoleOption> {
    let mut out: Vec<RoleOption> = all
        .iter()
        .map(|r| RoleOption {
            name: r.name.clone(),
            permissions: r.permissions.join(", "),
            checked: held.contains(&r.name),
        })
        .collect();
    // A held role is always offered (so that saving keeps it).
    for h in held.iter().filter(|h| !all.iter().any(|r| &r.name == *h)) {
        out.push(RoleOption { name: h.clone(), permissions: String::new(), checked: true });
    }
    out
}

/// A settings form as it was sent.
#[derive(Debug, Default, Clone)]
pub(crate) struct Typed {
    pub name: String,
    pub expires: String,
    pub permissions: String,
    pub allowlist: String,
    pub enabled: bool,
    pub roles: Vec<String>,
}

impl Typed {
    /// From a form's fields (`role` may repeat; `enabled` is a checkbox).
    pub fn from_fields(fields: &[(String, String)]) -> Self {
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
        Self {
            name: get("name"),
            expires: get("expires"),
            permissions: get("permissions"),
            allowlist: get("allowlist"),
            enabled: fields.iter().any(|(k, v)| k == "enabled" && !v.is_empty()),
            roles: fields.iter().filter(|(k, v)| k == "role" && !v.is_empty()).map(|(_, v)| v.clone()).collect(),
        }
    }

    /// The one change the form asks for, checked as far as the console can (the rest, e.g. the
    /// permissions' grammar and the roles' existence, when it is written). `operator`: enabled
    /// and roles too. An expiry left as shown keeps the credential's exact one; a new one must be
    /// in the future.
    pub fn change(&self, current: &Credential, operator: bool, now: i64) -> Result<CredentialChange, String> {
        let name = self.name.trim();
        let expires = self.expires.trim();
        let expires_at = if current.expires_at.map(expiry_input).unwrap_or_default() == expires {
            None
        } else {
            let t = parse_expiry(expires)?;
            if t.is_some_and(|t| t <= now) {
                return Err("the expiry must be in the future (or empty for none)".into());
            }
            Some(t)
        };
        let mut change = CredentialChange {
            name: Some((!name.is_empty()).then(|| name.to_owned())),
            expires_at,
            permissions: Some(parse_permissions(&self.permissions)),
            ip_allowlist: Some(parse_allowlist(&self.allowlist)?),
            ..CredentialChange::default()
        };
        if operator {
            change.enabled = Some(self.enabled);
            change.roles = Some(self.roles.clone());
        } else if let Some(asked) = &change.permissions {
            // A customer narrows what the operator gave the key, never widens it: each
            // permission must be covered by the key's own ones (not its roles', which the
            // operator may take away).
            let own = Grants::new(&current.permissions).unwrap_or_default();
            let beyond: Vec<&str> = asked.iter().map(String::as_str).filter(|g| !covers(&own, g)).collect();
            if !beyond.is_empty() {
                return Err(format!(
                    "a key's permissions can only be narrowed here; ask your operator for {}",
                    beyond.join(", ")
                ));
            }
        }
        // Checked here for the message; the operation checks again.
        change.clone().normalize()?;
        Ok(change)
    }
}

/// Whether `grant` (a name, `prefix.*` or `*`) is within what `held` grants.
fn covers(held: &Grants, grant: &str) -> bool {
    if grant == "*" {
        return held.iter().any(|h| h == "*");
    }
    match grant.strip_suffix(".*") {
        Some(prefix) => held.iter().any(|h| {
            h == "*"
                || h.strip_suffix(".*")
                    .is_some_and(|p| prefix == p || prefix.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
        }),
        None => held.allows(grant),
    }
}

/// The optional name and expiry of a new credential.
pub fn creation(name: &str, expires: &str, now: i64) -> Result<CredentialChange, String> {
    let name = name.trim();
    let expires_at = parse_expiry(expires)?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err("the expiry must be in the future (or empty for none)".into());
    }
    let mut change = CredentialChange {
        name: (!name.is_empty()).then(|| Some(name.to_owned())),
        expires_at: expires_at.map(Some),
        ..CredentialChange::default()
    };
    change.normalize()?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        let day = 1_798_761_600_000; // 2027-01-01T00:00:00Z
        assert_eq!(parse_expiry(" "), Ok(None));
        assert_eq!(parse_expiry("2027-01-01"), Ok(Some(day)));
        assert_eq!(parse_expiry("2027-01-01 00:01"), Ok(Some(day + 60_000)));
        assert_eq!(parse_expiry("2027-01-01T00:01:30Z"), Ok(Some(day + 90_000)));
        assert_eq!(parse_expiry("2027-01-01 00:01 UTC"), Ok(Some(day + 60_000)));
        for bad in ["tomorrow", "2027-13-01", "2027-01-01 25:00", &"9".repeat(100)] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
        assert_eq!(expiry_input(day + 90_000), "2027-01-01 00:01");
        assert_eq!(parse_expiry(&expiry_input(day + 60_000)), Ok(Some(day + 60_000)));
    }

    #[test]
    fn lists() {
        assert_eq!(parse_permissions("videos.create\n images.*, a"), ["videos.create", "images.*", "a"]);
        let held = Grants::new(["videos.*", "images.read"]).unwrap();
        for inside in ["videos.create", "videos.a.b", "videos.*", "videos.x.*", "images.read"] {
            assert!(covers(&held, inside), "{inside}");
        }
        for outside in ["*", "images.*", "images.write", "videosx.*", "admin"] {
            assert!(!covers(&held, outside), "{outside}");
        }
        let list = parse_allowlist("203.0.113.7\n10.0.0.0/8, ::1\n\n").unwrap();
        assert_eq!(allowlist_lines(&list), "203.0.113.7\n10.0.0.0/8\n::1");
        let e = parse_allowlist("10.0.0.0/8\n10.0.0.0/99").unwrap_err();
        assert!(e.starts_with("line 2: \"10.0.0.0/99\""), "{e}");
        assert!(parse_allowlist(&"x".repeat(5000)).unwrap_err().len() < 200, "not echoed whole");
    }

    #[test]
    fn creation_checks() {
        let now = 1_798_675_200_000;
        let c = creation(" ci ", "", now).unwrap();
        assert_eq!((c.name, c.expires_at), (Some(Some("ci".into())), None));
        assert!(creation("", "", now).unwrap().is_empty());
        assert!(creation("", "2020-01-01", now).unwrap_err().contains("future"));
        assert!(creation(&"n".repeat(201), "", now).unwrap_err().contains("1 to 200"));
    }
}
