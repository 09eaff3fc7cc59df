//! The audit log in the console: the operators' page `/console/admin/audit` (every entry, newest
//! first, filtered by actor, action, target, account and time, a page at a time by the `next`
//! cursor), an account's history on its operator page, and a customer's own account's activity
//! on their credentials page.
//!
//! Entries are read through [`keygate_ops::Ops::audit_log`] and
//! [`keygate_ops::Ops::account_history`]; the filter is checked there, and a refused one shows
//! the page again with the reason (400). A customer only ever sees the entries of their own
//! account, and of the operators' changes only what changed, not who (their email) or from where.

use std::collections::BTreeSet;

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use keygate_core::audit::{ActorKind, AuditEntry, TargetKind, action};
use keygate_core::{AccountId, ClientId};
use keygate_ops::OpsError;
use keygate_ops::audit::AuditFilter;
use serde::Deserialize;
use serde_json::Value;

use super::limits::Reader;
use super::session::Operator;
use super::{ConsoleError, Nav, capitalise, iso_time, render};
use crate::ConsoleState;

/// Entries per page of the audit page, and in an account's history.
pub(crate) const PAGE: u32 = 50;

/// The longest value shown for one field (a credential's `meta` may be large): cut, with "…".
const MAX_VALUE: usize = 1000;

/// One field that changed: its value before and after, as compact JSON (None: that side has no
/// value, as for a creation or a deletion).
pub(crate) struct Change {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// An entry as the pages show it.
pub(crate) struct AuditRow {
    /// RFC 3339, UTC.
    pub at: String,
    pub actor_kind: &'static str,
    /// Who (an email, `user@host`, ...); None where the reader is not told.
    pub actor: Option<String>,
    pub action: String,
    pub target_kind: &'static str,
    pub target: String,
    /// The target's page, for an account or a credential (and an operator's plan).
    pub link: Option<String>,
    pub changes: Vec<Change>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
}

impl AuditRow {
    pub fn of(e: &AuditEntry, reader: Reader) -> Self {
        // A customer is told who among the customer's own (their email, their address); of the
        // platform's changes, only that the platform made them.
        let told = matches!(reader, Reader::Operator) || e.actor_kind == ActorKind::Customer;
        Self {
            at: iso_time(e.at),
            actor_kind: kind_label(e.actor_kind),
            actor: told.then(|| e.actor.clone()),
            action: e.action.clone(),
            target_kind: e.target_kind.as_str(),
            target: e.target.clone(),
            link: link(e, reader),
            changes: changes(e.before.as_ref(), e.after.as_ref()),
            source_ip: e.source_ip.clone().filter(|_| told),
            request_id: e.request_id.clone(),
        }
    }
}

fn kind_label(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::AdminToken => "admin API",
        ActorKind::Operator => "operator",
        ActorKind::Customer => "customer",
        ActorKind::Cli => "command line",
        ActorKind::System => "keygate",
    }
}

/// Where the target is shown to this reader: an account's page, a credential's (an operator's
/// is on its account's page), a plan's form.
fn link(e: &AuditEntry, reader: Reader) -> Option<String> {
    match (e.target_kind, reader) {
        (TargetKind::Account, Reader::Operator) => {
            let id: AccountId = e.target.parse().ok()?;
            Some(format!("/console/admin/accounts/{}", id.to_hex()))
        }
        (TargetKind::Credential, Reader::Operator) => {
            let id: ClientId = e.target.parse().ok()?;
            let account: AccountId = e.account_id.as_deref()?.parse().ok()?;
            Some(format!("/console/admin/accounts/{}#limits-{}", account.to_hex(), id.to_hex()))
        }
        (TargetKind::Plan, Reader::Operator) if e.action != action::PLAN_DELETE => {
            let q = serde_urlencoded::to_string([("edit", e.target.as_str())]).ok()?;
            Some(format!("/console/admin/plans?{q}"))
        }
        (TargetKind::Credential, Reader::Customer) => {
            let id: ClientId = e.target.parse().ok()?;
            Some(format!("/console/credentials/{}", id.to_hex()))
        }
        _ => None,
    }
}

/// The fields of `before` and `after` (objects holding only what changed), each side's value as
/// compact JSON. A side that is not an object is shown whole, as `value`.
fn changes(before: Option<&Value>, after: Option<&Value>) -> Vec<Change> {
    let whole = |v: Option<&Value>| v.is_some_and(|v| !v.is_object());
    if whole(before) || whole(after) {
        return vec![Change { field: "value".into(), before: before.map(compact), after: after.map(compact) }];
    }
    let (b, a) = (before.and_then(Value::as_object), after.and_then(Value::as_object));
    let fields: BTreeSet<&String> = b.into_iter().chain(a).flat_map(|m| m.keys()).collect();
    fields
        .into_iter()
        .map(|field| Change {
            field: field.clone(),
            before: b.and_then(|m| m.get(field)).map(compact),
            after: a.and_then(|m| m.get(field)).map(compact),
        })
        .collect()
}

/// A value as compact JSON, cut at [`MAX_VALUE`] bytes.
fn compact(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

pub(crate) fn rows(entries: &[AuditEntry], reader: Reader) -> Vec<AuditRow> {
    entries.iter().map(|e| AuditRow::of(e, reader)).collect()
}

/// The audit page's filter, as the form sends it (empty fields: no filter).
#[derive(Deserialize, Default)]
struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

impl AuditForm {
    /// The filter's fields that are set, as a query string (without the cursor).
    fn query(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("account", &self.account),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.trim()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    fn filter(&self) -> AuditFilter {
        let text = |s: &String| Some(s.clone());
        AuditFilter {
            actor: text(&self.actor),
            target: text(&self.target),
            account: text(&self.account),
            action: text(&self.action),
            from: text(&self.from),
            to: text(&self.to),
            cursor: text(&self.cursor),
            limit: Some(PAGE),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    nav: Nav,
    actor: String,
    action: String,
    target: String,
    account: String,
    from: String,
    to: String,
    /// Why the filter was refused.
    error: Option<String>,
    rows: Vec<AuditRow>,
    /// Some filter is set.
    filtered: bool,
    /// The first page of this filter, when this is a later one.
    newest: Option<String>,
    /// The next (older) page, when there is one.
    older: Option<String>,
    /// What the action field takes: every action, and every kind of target.
    actions: Vec<&'static str>,
}

const TARGET_KINDS: [TargetKind; 6] = [
    TargetKind::Account,
    TargetKind::Credential,
    TargetKind::Plan,
    TargetKind::Role,
    TargetKind::SigningKey,
    TargetKind::AdminToken,
];

/// The operators' audit page, `/admin/audit` (customers get 403).
pub(crate) fn routes() -> Router<ConsoleState> {
    Router::new().route("/admin/audit", get(audit))
}

async fn audit(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    query: Result<Query<AuditForm>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let (form, unreadable) = match query {
        Ok(Query(f)) => (f, false),
        Err(_) => (AuditForm::default(), true),
    };
    let base = form.query();
    let url = |extra: Option<&str>| {
        let mut q = base.clone();
        if let Some(cursor) = extra {
            let c = serde_urlencoded::to_string([("cursor", cursor)]).unwrap_or_default();
            q = if q.is_empty() { c } else { format!("{q}&{c}") };
        }
        if q.is_empty() { "/console/admin/audit".to_owned() } else { format!("/console/admin/audit?{q}") }
    };
    let mut page = AuditPage {
        nav: Nav::of(&user, "audit"),
        actor: form.actor.trim().to_owned(),
        action: form.action.trim().to_owned(),
        target: form.target.trim().to_owned(),
        account: form.account.trim().to_owned(),
        from: form.from.trim().to_owned(),
        to: form.to.trim().to_owned(),
        error: None,
        rows: Vec::new(),
        filtered: !base.is_empty(),
        newest: None,
        older: None,
        actions: action::ALL.iter().copied().chain(TARGET_KINDS.iter().map(|k| k.as_str())).collect(),
    };
    if unreadable {
        page.error = Some("The filter could not be read.".into());
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    }
    match s.ops.audit_log(&form.filter()).await {
        Ok(list) => {
            page.rows = rows(&list.items, Reader::Operator);
            page.older = list.next.as_deref().map(|n| url(Some(n)));
            page.newest = (!form.cursor.trim().is_empty()).then(|| url(None));
            Ok(render(StatusCode::OK, &page))
        }
        Err(OpsError::Invalid(m)) => {
            page.error = Some(capitalise(&m));
            Ok(render(StatusCode::BAD_REQUEST, &page))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(kind: TargetKind, target: &str, before: Option<Value>, after: Option<Value>) -> AuditEntry {
        AuditEntry {
            id: 7,
            at: 1_767_225_600_000,
            actor_kind: ActorKind::Operator,
            actor: "op@example.com".into(),
            action: "credential.update".into(),
            target_kind: kind,
            target: target.into(),
            account_id: Some("0123456789abcdef01234567".into()),
            before,
            after,
            source_ip: Some("127.0.0.1".into()),
            request_id: Some("req-1".into()),
        }
    }

    #[test]
    fn changes_are_shown_field_by_field() {
        let e = entry(
            TargetKind::Credential,
            "0123456789abcdef01234567",
            Some(json!({"name": "a", "roles": null})),
            Some(json!({"name": "b<", "roles": ["r"]})),
        );
        let row = AuditRow::of(&e, Reader::Operator);
        let shown: Vec<_> = row.changes.iter().map(|c| (c.field.as_str(), c.before.clone(), c.after.clone())).collect();
        assert_eq!(
            shown,
            [
                ("name", Some(r#""a""#.to_owned()), Some(r#""b<""#.to_owned())),
                ("roles", Some("null".to_owned()), Some(r#"["r"]"#.to_owned())),
            ]
        );
        assert_eq!(row.at, "2026-01-01T00:00:00Z");
        assert_eq!(row.actor.as_deref(), Some("op@example.com"));
        assert_eq!(
            row.link.as_deref(),
            Some("/console/admin/accounts/0123456789abcdef01234567#limits-0123456789abcdef01234567")
        );
        // A creation has no before.
        let created = AuditRow::of(&entry(TargetKind::Plan, "gold", None, Some(json!({"n": 1}))), Reader::Operator);
        assert_eq!((created.changes[0].before.as_deref(), created.changes[0].after.as_deref()), (None, Some("1")));
        assert_eq!(created.link.as_deref(), Some("/console/admin/plans?edit=gold"));
        assert_eq!(compact(&json!("x".repeat(2000))).chars().count(), MAX_VALUE + 1);
    }

    #[test]
    fn customers_are_not_told_who_the_operators_are() {
        let e = entry(TargetKind::Credential, "0123456789abcdef01234567", None, None);
        let row = AuditRow::of(&e, Reader::Customer);
        assert_eq!((row.actor_kind, row.actor, row.source_ip), ("operator", None, None));
        assert_eq!(row.link.as_deref(), Some("/console/credentials/0123456789abcdef01234567"));
        let own = AuditEntry { actor_kind: ActorKind::Customer, ..e };
        let row = AuditRow::of(&own, Reader::Customer);
        assert_eq!((row.actor.as_deref(), row.source_ip.as_deref()), (Some("op@example.com"), Some("127.0.0.1")));
    }
}
