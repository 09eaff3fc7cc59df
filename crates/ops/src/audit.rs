//! Reading the audit log: a filter checked once for the admin API, the CLI and the console.
//! (Entries are written by the store, in the transaction of each change: see
//! `keygate_store::Store::audit_log`.)

use keygate_core::AccountId;
use keygate_core::audit::{AuditEntry, TargetKind, action};
use keygate_store::AuditQuery;

use crate::usage::parse_time;
use crate::{Ops, OpsError, Page, Result, page_limit};

/// The longest actor or target a filter may name (no actor or target is longer: see
/// `keygate_core::audit::MAX_ACTOR`).
pub const MAX_NAME: usize = keygate_core::audit::MAX_ACTOR;

/// A listing's filter as the admin API and the CLI take it (strings, checked here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub account: Option<String>,
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

impl AuditFilter {
    /// The store's query, or what is wrong with the filter.
    pub fn query(&self) -> Result<AuditQuery> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        for (name, value) in [("actor", &self.actor), ("target", &self.target)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > MAX_NAME) {
                return Err(OpsError::Invalid(format!("{name} must be at most {MAX_NAME} characters")));
            }
        }
        let action = text(&self.action);
        if let Some(a) = &action
            && !action::ALL.contains(&a.as_str())
            && TargetKind::parse(a).is_none()
        {
            return Err(OpsError::Invalid(format!(
                "action must be one of {} or a kind of target (account, credential, plan, role, signing_key, admin_token)",
                action::ALL.join(", ")
            )));
        }
        let account = text(&self.account)
            .map(|a| a.parse::<AccountId>().map_err(|_| OpsError::Invalid("account must be an accountId".into())))
            .transpose()?;
        let from = text(&self.from).map(|s| parse_time("from", &s)).transpose()?;
        let to = text(&self.to).map(|s| parse_time("to", &s)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(OpsError::Invalid("from must be before to".into()));
        }
        let before_id = text(&self.cursor)
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| OpsError::Invalid("cursor is not valid".into()))
            })
            .transpose()?;
        Ok(AuditQuery {
            actor: text(&self.actor),
            target: text(&self.target),
            account,
            action,
            from,
            to,
            before_id,
            limit: page_limit(self.limit)?,
        })
    }
}

impl Ops {
    /// Entries matching `filter`, newest first, a page at a time (`next`: the cursor of the
    /// following page).
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
        let mut query = filter.query()?;
        let limit = query.limit;
        query.limit = limit + 1;
        let mut items = self.store.audit_log(&query).await?;
        Ok(Page::cut(&mut items, limit, |e| e.id.to_string()))
    }

    /// An account's history: its own entries and its credentials', newest first.
    pub async fn account_history(&self, account: AccountId, limit: u32) -> Result<Vec<AuditEntry>> {
        let query = AuditQuery { account: Some(account), limit: limit.clamp(1, 1000), ..AuditQuery::default() };
        Ok(self.store.audit_log(&query).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let ok = AuditFilter {
            action: Some("credential".into()),
            from: Some("2026-01-01".into()),
            to: Some("1800000000000".into()),
            cursor: Some("42".into()),
            ..AuditFilter::default()
        };
        let q = ok.query().unwrap();
        assert_eq!((q.action.as_deref(), q.before_id, q.limit), (Some("credential"), Some(42), 100));
        for bad in [
            AuditFilter { action: Some("credential.delete".into()), ..AuditFilter::default() },
            AuditFilter { cursor: Some("-1".into()), ..AuditFilter::default() },
            AuditFilter { from: Some("yesterday".into()), ..AuditFilter::default() },
            AuditFilter { from: Some("2026-02-01".into()), to: Some("2026-01-01".into()), ..AuditFilter::default() },
            AuditFilter { account: Some("nope".into()), ..AuditFilter::default() },
            AuditFilter { limit: Some(0), ..AuditFilter::default() },
            AuditFilter { target: Some("0".repeat(321)), ..AuditFilter::default() },
            AuditFilter { actor: Some("é".repeat(321)), ..AuditFilter::default() },
        ] {
            assert!(matches!(bad.query(), Err(OpsError::Invalid(_))), "{bad:?}");
        }
        // Empty strings are no filter (an HTML form's empty fields).
        let empty = AuditFilter { actor: Some(" ".into()), action: Some(String::new()), ..AuditFilter::default() };
        assert_eq!(empty.query().unwrap().actor, None);
    }
}
