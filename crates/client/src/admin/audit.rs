//! The audit log: `GET /admin/v1/audit`, every change to accounts, credentials, plans, roles,
//! limits, credits, signing keys and the admin token, newest first, with who made it, from where,
//! and the fields that changed (never a secret). Nothing changes or deletes an entry; the
//! server's retention setting prunes old ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::{AdminClient, Page, paged};
use crate::error::Result;

/// Who made a change.
///
/// ```
/// use keygate_client::ActorKind;
/// assert_eq!(serde_json::from_str::<ActorKind>("\"admin_token\"")?, ActorKind::AdminToken);
/// assert_eq!(serde_json::to_string(&ActorKind::Cli)?, "\"cli\"");
/// assert_eq!(serde_json::from_str::<ActorKind>("\"robot\"")?, ActorKind::Other);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActorKind {
    /// The admin API, with the admin token (named `admin token`): this SDK's [`AdminClient`].
    AdminToken,
    /// An operator of the web console (named by email).
    Operator,
    /// A customer in the web console, on their own account (named by email).
    Customer,
    /// The `keygate` command line (named `USER@HOST`).
    Cli,
    /// keygate itself (named `keygate`): the first admin token and signing key at start-up.
    System,
    /// A kind this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// What an audit entry is about.
///
/// ```
/// use keygate_client::TargetKind;
/// assert_eq!(serde_json::from_str::<TargetKind>("\"signing_key\"")?, TargetKind::SigningKey);
/// assert_eq!(serde_json::from_str::<TargetKind>("\"webhook\"")?, TargetKind::Other);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetKind {
    /// An account (target: its id); its credits balance too.
    Account,
    /// A credential (target: its clientId); its credits balance too.
    Credential,
    /// A plan (target: its name).
    Plan,
    /// A role (target: its name).
    Role,
    /// A JWT signing key (target: its key id).
    SigningKey,
    /// The admin token (target: `admin_token`).
    AdminToken,
    /// A kind this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// One entry of the audit log: when, who (`actor_kind`, `actor`), what (`action`) on which
/// target, the fields that changed as they were (`before`) and as they became (`after`), the
/// client's address and the request's id. Times are Unix milliseconds.
///
/// ```
/// use keygate_client::{ActorKind, AuditEntry, TargetKind};
/// let e: AuditEntry = serde_json::from_str(r#"{"id":42,"at":1738368000000,"actorKind":"admin_token",
///     "actor":"admin token","action":"credential.update","targetKind":"credential",
///     "target":"64db241f6d9e5c4bd136c188","accountId":"64db241f6d9e5c4bd136c187",
///     "before":{"name":"ci"},"after":{"name":"ci runner"},"sourceIp":"203.0.113.7",
///     "requestId":"5f0c3a9e8b7d6c5b4a39281706f5e4d3"}"#)?;
/// assert_eq!((e.actor_kind, e.target_kind), (ActorKind::AdminToken, TargetKind::Credential));
/// assert_eq!(e.field_before("name"), Some(&serde_json::json!("ci")));
/// assert_eq!(e.field_after("name"), Some(&serde_json::json!("ci runner")));
/// assert_eq!(e.changed_fields(), ["name"]);
/// assert_eq!(e.time(), std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_738_368_000_000));
///
/// // A creation has no `before`; a change made by keygate itself, no address or request.
/// let e: AuditEntry = serde_json::from_str(r#"{"id":1,"at":1,"actorKind":"system","actor":"keygate",
///     "action":"signing_key.add","targetKind":"signing_key","target":"k1","after":{"kid":"k1"}}"#)?;
/// assert_eq!((e.before, e.source_ip, e.request_id, e.account_id), (None, None, None, None));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AuditEntry {
    /// Increases with every entry.
    pub id: i64,
    /// When the change was made.
    pub at: i64,
    /// Who made it.
    pub actor_kind: ActorKind,
    /// An email (console), `USER@HOST` (CLI), `admin token`, `keygate`.
    pub actor: String,
    /// `account.create`, `account.ban`, `credential.update`, `plan.delete`, ...: the target's kind,
    /// a dot and what was done.
    pub action: String,
    /// What the change is about.
    pub target_kind: TargetKind,
    /// An accountId, clientId, plan or role name, signing key id, `admin_token`.
    pub target: String,
    /// The account the target belongs to (an account's own entries and its credentials').
    #[serde(default)]
    pub account_id: Option<String>,
    /// The fields that changed, as they were (a JSON object; `None` for a creation). A field
    /// that appeared is `null` here.
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    /// The fields that changed, as they became (a JSON object; `None` for a deletion). A field
    /// that went away is `null` here.
    #[serde(default)]
    pub after: Option<serde_json::Value>,
    /// The client's address (behind trusted proxies, the client's); `None` for the CLI and
    /// keygate itself.
    #[serde(default)]
    pub source_ip: Option<String>,
    /// The id of the request that made the change, as in keygate's access log and its
    /// `x-request-id` answer header.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl AuditEntry {
    /// [`at`](Self::at) as a time.
    ///
    /// ```
    /// # let e: keygate_client::AuditEntry = serde_json::from_str(r#"{"id":1,"at":1500,"actorKind":"cli",
    /// #     "actor":"ops@host","action":"account.ban","targetKind":"account","target":"64db241f6d9e5c4bd136c187"}"#)?;
    /// assert_eq!(e.time(), std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn time(&self) -> SystemTime {
        match u64::try_from(self.at) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH - Duration::from_millis(self.at.unsigned_abs()),
        }
    }

    /// One field of [`before`](Self::before) (`None`: it did not change, or a creation).
    ///
    /// ```
    /// # let e: keygate_client::AuditEntry = serde_json::from_str(r#"{"id":1,"at":1,"actorKind":"admin_token",
    /// #     "actor":"admin token","action":"account.ban","targetKind":"account","target":"64db241f6d9e5c4bd136c187",
    /// #     "before":{"status":"active"},"after":{"status":"banned","banReason":"fraud"}}"#)?;
    /// assert_eq!(e.field_before("status"), Some(&serde_json::json!("active")));
    /// assert_eq!(e.field_before("email"), None);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn field_before(&self, name: &str) -> Option<&serde_json::Value> {
        self.before.as_ref()?.get(name)
    }

    /// One field of [`after`](Self::after) (`None`: it did not change, or a deletion).
    ///
    /// ```
    /// # let e: keygate_client::AuditEntry = serde_json::from_str(r#"{"id":1,"at":1,"actorKind":"admin_token",
    /// #     "actor":"admin token","action":"account.ban","targetKind":"account","target":"64db241f6d9e5c4bd136c187",
    /// #     "before":{"status":"active"},"after":{"status":"banned","banReason":"fraud"}}"#)?;
    /// assert_eq!(e.field_after("banReason"), Some(&serde_json::json!("fraud")));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn field_after(&self, name: &str) -> Option<&serde_json::Value> {
        self.after.as_ref()?.get(name)
    }

    /// The names of the fields in [`before`](Self::before) or [`after`](Self::after), sorted,
    /// each once.
    ///
    /// ```
    /// # let e: keygate_client::AuditEntry = serde_json::from_str(r#"{"id":1,"at":1,"actorKind":"admin_token",
    /// #     "actor":"admin token","action":"account.ban","targetKind":"account","target":"64db241f6d9e5c4bd136c187",
    /// #     "before":{"status":"active","banReason":null},"after":{"status":"banned","banReason":"fraud"}}"#)?;
    /// assert_eq!(e.changed_fields(), ["banReason", "status"]);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn changed_fields(&self) -> Vec<&str> {
        fn keys(v: &Option<serde_json::Value>) -> impl Iterator<Item = &str> {
            v.as_ref().and_then(serde_json::Value::as_object).into_iter().flat_map(|m| m.keys().map(String::as_str))
        }
        let mut names: Vec<&str> = keys(&self.before).chain(keys(&self.after)).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Which audit entries [`AdminClient::audit`] and [`AdminClient::audit_entries`] read: every
/// filter set must hold (none: every entry). Times are RFC 3339 (`2025-02-01T00:00:00Z`),
/// dates (`2025-02-01`: midnight UTC) or Unix milliseconds ([`AuditFilter::since_ms`]), as for
/// [`UsageQuery`](crate::UsageQuery). The server checks the filter and refuses a bad one (an
/// unknown action, a malformed time or cursor, `since` not before `until`) with `1003` (HTTP
/// 400).
///
/// ```
/// use keygate_client::AuditFilter;
/// // An account's history (its own entries and its credentials'), this year.
/// let history = AuditFilter::new().account("64db241f6d9e5c4bd136c187").since("2025-01-01");
/// // Every change to credentials the command line made, 50 per page.
/// let by_cli = AuditFilter::new().action("credential").actor("ops@bastion").limit(50);
/// // The changes to one credential's fields, before a time in milliseconds.
/// let one = AuditFilter::new().target("64db241f6d9e5c4bd136c188").action("credential.update").until_ms(1_738_368_000_000);
/// # let _ = (history, by_cli, one);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    actor: Option<String>,
    target: Option<String>,
    account: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

impl AuditFilter {
    /// No filter: every entry, newest first, pages of the server's default size (100).
    ///
    /// ```
    /// assert_eq!(keygate_client::AuditFilter::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly this actor (`actor=`): an email (console), `USER@HOST` (CLI), `admin token`,
    /// `keygate`.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Exactly this target (`target=`): an accountId, clientId, plan or role name, signing key
    /// id, `admin_token`.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// An account's history (`account=`, an accountId): its own entries and its credentials'.
    pub fn account(mut self, account_id: impl Into<String>) -> Self {
        self.account = Some(account_id.into());
        self
    }

    /// An action (`action=`, e.g. `credential.update`), or a kind of target for all of its
    /// actions (`credential`, `account`, `plan`, `role`, `signing_key`, `admin_token`).
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Entries from this time, inclusive (`from=`): RFC 3339 or a date.
    pub fn since(mut self, time: impl Into<String>) -> Self {
        self.from = Some(time.into());
        self
    }

    /// [`AuditFilter::since`] in Unix milliseconds.
    pub fn since_ms(self, ms: i64) -> Self {
        self.since(ms.to_string())
    }

    /// Entries before this time, exclusive (`to=`): RFC 3339 or a date.
    pub fn until(mut self, time: impl Into<String>) -> Self {
        self.to = Some(time.into());
        self
    }

    /// [`AuditFilter::until`] in Unix milliseconds.
    pub fn until_ms(self, ms: i64) -> Self {
        self.until(ms.to_string())
    }

    /// Entries per page (`limit=`, 1 to 1000; the server's default is 100).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// Entries older than this cursor (`cursor=`): the [`next`](Page::next) of the page before.
    /// [`AdminClient::audit_entries`] starts there and follows the pages' cursors itself.
    pub fn cursor(mut self, next: impl Into<String>) -> Self {
        self.cursor = Some(next.into());
        self
    }

    /// The query string's pairs.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("actor", &self.actor),
            ("target", &self.target),
            ("account", &self.account),
            ("action", &self.action),
            ("from", &self.from),
            ("to", &self.to),
            ("cursor", &self.cursor),
        ];
        let mut q: Vec<(&'static str, String)> =
            fields.into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))).collect();
        if let Some(n) = self.limit {
            q.push(("limit", n.to_string()));
        }
        q
    }
}

impl AdminClient {
    /// `GET /audit?actor=&target=&account=&action=&from=&to=&cursor=&limit=`: one page of the
    /// audit entries `filter` matches, newest first; pass the page's [`next`](Page::next) to
    /// [`AuditFilter::cursor`] for the following one. A bad filter is `1003` (HTTP 400).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::AuditFilter;
    /// let filter = AuditFilter::new().account("64db241f6d9e5c4bd136c187").limit(20);
    /// let page = admin.audit(&filter).await?;
    /// for e in &page.items {
    ///     println!("{} {:?} {} {} {}", e.at, e.actor_kind, e.actor, e.action, e.target);
    /// }
    /// if let Some(next) = page.next {
    ///     let older = admin.audit(&filter.cursor(next)).await?;
    ///     # let _ = older;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
        let (items, next) = self.get(&["audit"], &filter.pairs()).await?;
        Ok(Page { items, next })
    }

    /// Every audit entry `filter` matches, newest first, page after page (of the filter's
    /// `limit`), as a stream; from the filter's cursor, if it has one.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use futures_util::TryStreamExt;
    /// use keygate_client::{ActorKind, AuditFilter};
    /// // Who banned accounts since February, and why.
    /// let mut bans = admin.audit_entries(AuditFilter::new().action("account.ban").since("2025-02-01"));
    /// while let Some(e) = bans.try_next().await? {
    ///     let why = e.field_after("banReason").and_then(|r| r.as_str()).unwrap_or("no reason");
    ///     match e.actor_kind {
    ///         ActorKind::AdminToken => println!("{} by the admin API from {:?}: {why}", e.target, e.source_ip),
    ///         _ => println!("{} by {}: {why}", e.target, e.actor),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn audit_entries(&self, filter: AuditFilter) -> BoxStream<'static, Result<AuditEntry>> {
        let this = self.clone();
        paged(move |after| {
            let (this, mut filter) = (this.clone(), filter.clone());
            if after.is_some() {
                filter.cursor = after;
            }
            async move { this.audit(&filter).await }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_sent_as_the_server_reads_them() {
        assert!(AuditFilter::new().pairs().is_empty());
        let f = AuditFilter::new()
            .actor("admin token")
            .target("t")
            .account("a")
            .action("credential")
            .since("2025-01-01")
            .until_ms(5)
            .cursor("42")
            .limit(3);
        let pairs = f.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("actor", "admin token"),
                ("target", "t"),
                ("account", "a"),
                ("action", "credential"),
                ("from", "2025-01-01"),
                ("to", "5"),
                ("cursor", "42"),
                ("limit", "3"),
            ]
        );
    }

    #[test]
    fn times_before_1970_are_times_too() {
        let e: AuditEntry = serde_json::from_str(
            r#"{"id":1,"at":-1500,"actorKind":"system","actor":"keygate","action":"x.y","targetKind":"plan","target":"p"}"#,
        )
        .unwrap();
        assert_eq!(e.time(), UNIX_EPOCH - Duration::from_millis(1500));
        assert!(e.changed_fields().is_empty());
    }
}
