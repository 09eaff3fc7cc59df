//! The audit log: entries written inside the transaction of the change they record, read back
//! by filter and cursor, pruned by age. Written once for both backends over sqlx's generic
//! [`Database`] with the backends' [`Dialect`], as the credits and keys are.
//!
//! A writer reads the target as it was ([`AuditLog::snapshot`]) before it changes it, and calls
//! [`AuditLog::record`] after, in the same transaction: the entry keeps the fields that changed,
//! each side with its values, as the admin API shows them (which never includes a secret: keys
//! and tokens are hashes that no model type carries, passwords are recorded as set or not).

use std::marker::PhantomData;

use keygate_core::audit::{Audit, AuditEntry, TargetKind, changed_fields};
use keygate_core::model::Credential;
use keygate_core::{AccountId, ClientId};
use serde_json::{Value, json};
use sqlx::{Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use crate::credits::Dialect;
use crate::rows::{AccountRow, AuditRow, CredentialRoleRow, CredentialRow, GenerationRow, PlanRow, RoleRow};
use crate::{CreditScope, Result, StoreError, sql};

/// Fields that change with every write or with use, not with what was asked.
const IGNORED: &[&str] = &["updatedAt", "lastUsedAt"];

/// The most entries one call of [`crate::Store::prune_audit`] deletes.
pub(crate) const PRUNE_BATCH: i64 = 10_000;

/// The most entries one listing returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// What a change is about, as it is read for its before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Account(AccountId),
    Credential(ClientId),
    Plan(&'a str),
    Role(&'a str),
    /// A balance: its own fields (`remaining`, `refill`), not its holder's.
    Credits(CreditScope),
    SigningKey(&'a str),
    AdminToken,
}

impl Target<'_> {
    fn kind(&self) -> TargetKind {
        match self {
            Self::Account(_) | Self::Credits(CreditScope::Account(_)) => TargetKind::Account,
            Self::Credential(_) | Self::Credits(CreditScope::Credential(_)) => TargetKind::Credential,
            Self::Plan(_) => TargetKind::Plan,
            Self::Role(_) => TargetKind::Role,
            Self::SigningKey(_) => TargetKind::SigningKey,
            Self::AdminToken => TargetKind::AdminToken,
        }
    }

    fn id(&self) -> String {
        match self {
            Self::Account(id) | Self::Credits(CreditScope::Account(id)) => id.to_hex(),
            Self::Credential(id) | Self::Credits(CreditScope::Credential(id)) => id.to_hex(),
            Self::Plan(name) | Self::Role(name) | Self::SigningKey(name) => (*name).to_owned(),
            Self::AdminToken => "admin_token".to_owned(),
        }
    }
}

/// Which entries a listing returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Exactly this actor (an email, `user@host`, `admin token`, `keygate`).
    pub actor: Option<String>,
    /// Exactly this target (an accountId, clientId, plan or role name, signing key id).
    pub target: Option<String>,
    /// The account's own entries and its credentials'.
    pub account: Option<AccountId>,
    /// Exactly this action (`credential.update`), or with no dot every action on a kind of
    /// target (`credential`).
    pub action: Option<String>,
    /// From this time (Unix ms, inclusive).
    pub from: Option<i64>,
    /// Until this time (Unix ms, exclusive).
    pub to: Option<i64>,
    /// Entries older than this id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// At most this many (1 to [`MAX_AUDIT_PAGE`]).
    pub limit: u32,
}

/// A credential with its secret generations live at `now`, read on `conn` (both backends).
pub(crate) async fn credential_in<DB: Dialect>(
    conn: &mut DB::Connection,
    client_id: ClientId,
    now: i64,
) -> Result<Credential>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> CredentialRow: FromRow<'r, DB::Row>,
    for<'r> GenerationRow: FromRow<'r, DB::Row>,
    for<'r> CredentialRoleRow: FromRow<'r, DB::Row>,
{
    let id = client_id.to_hex();
    let row: CredentialRow = sqlx::query_as(sql::CREDENTIAL)
        .bind(id.clone())
        .fetch_optional(&mut *conn)
        .await
        .map_err(DB::map_err)?
        .ok_or(StoreError::NotFound)?;
    let live: Vec<GenerationRow> = sqlx::query_as(sql::LIVE_GENERATIONS)
        .bind(id.clone())
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(DB::map_err)?;
    let roles: Vec<CredentialRoleRow> =
        sqlx::query_as(sql::CREDENTIAL_ROLES).bind(id).fetch_all(&mut *conn).await.map_err(DB::map_err)?;
    row.into_credential(live, roles)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Other(format!("audit snapshot: {e}")))
}

/// The audit log on a backend `DB`.
pub(crate) struct AuditLog<DB>(PhantomData<DB>);

impl<DB: Dialect> AuditLog<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    /// [`Self::record`] with both sides given (for what no snapshot reads: a password set, a
    /// console role, an adjustment's amount).
    pub(crate) async fn record_values(
        conn: &mut DB::Connection,
        audit: &Audit,
        action: &str,
        target: Target<'_>,
        before: Option<Value>,
        after: Option<Value>,
        now: i64,
    ) -> Result<()> {
        let (before, after) = changed_fields(before, after, IGNORED);
        let account_id = match target {
            Target::Account(id) | Target::Credits(CreditScope::Account(id)) => Some(id.to_hex()),
            Target::Credential(id) | Target::Credits(CreditScope::Credential(id)) => {
                let row: Option<(String,)> = sqlx::query_as(ACCOUNT_OF_CREDENTIAL)
                    .bind(id.to_hex())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(DB::map_err)?;
                row.map(|(a,)| a)
            }
            _ => None,
        };
        sqlx::query(INSERT)
            .bind(now)
            .bind(audit.kind.as_str().to_owned())
            .bind(audit.actor.clone())
            .bind(action.to_owned())
            .bind(target.kind().as_str().to_owned())
            .bind(target.id())
            .bind(account_id)
            .bind(before.map(|v| v.to_string()))
            .bind(after.map(|v| v.to_string()))
            .bind(audit.source_ip.map(|ip| ip.to_string()))
            .bind(audit.request_id.clone())
            .execute(&mut *conn)
            .await
            .map_err(DB::map_err)?;
        Ok(())
    }

    /// Deletes the entries older than `before_ms`, at most `batch` of them (the oldest); how many.
    pub(crate) async fn prune(pool: &Pool<DB>, before_ms: i64, batch: i64) -> Result<u64> {
        let gone: Vec<(i64,)> =
            sqlx::query_as(PRUNE).bind(before_ms).bind(batch).fetch_all(pool).await.map_err(DB::map_err)?;
        Ok(gone.len() as u64)
    }
}

impl<DB: Dialect> AuditLog<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> AccountRow: FromRow<'r, DB::Row>,
    for<'r> PlanRow: FromRow<'r, DB::Row>,
    for<'r> RoleRow: FromRow<'r, DB::Row>,
    for<'r> CredentialRow: FromRow<'r, DB::Row>,
    for<'r> GenerationRow: FromRow<'r, DB::Row>,
    for<'r> CredentialRoleRow: FromRow<'r, DB::Row>,
    for<'r> AuditRow: FromRow<'r, DB::Row>,
{
    /// The target as it is now on `conn` (`None`: not there), as the admin API shows it. An
    /// account's or a credential's row is taken first where the backend locks rows, so that
    /// what is read is what the transaction's write replaces.
    pub(crate) async fn snapshot(conn: &mut DB::Connection, target: Target<'_>, now: i64) -> Result<Option<Value>> {
        let lock = match target {
            Target::Account(id) => DB::LOCK_ACCOUNT.map(|l| (l, id.to_hex())),
            Target::Credential(id) => DB::LOCK_CREDENTIAL.map(|l| (l, id.to_hex())),
            _ => None,
        };
        if let Some((lock, id)) = lock {
            sqlx::query(lock).bind(id).execute(&mut *conn).await.map_err(DB::map_err)?;
        }
        Ok(match target {
            Target::Account(id) => {
                let row: Option<AccountRow> = sqlx::query_as(sql::ACCOUNT)
                    .bind(id.to_hex())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(DB::map_err)?;
                row.map(|r| r.into_account()).transpose()?.map(|a| to_json(&a)).transpose()?
            }
            Target::Credential(id) => match credential_in::<DB>(conn, id, now).await {
                Ok(c) => Some(to_json(&c)?),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            },
            Target::Plan(name) => {
                let row: Option<PlanRow> = sqlx::query_as(sql::PLAN)
                    .bind(name.to_owned())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(DB::map_err)?;
                row.map(|r| r.into_plan()).transpose()?.map(|p| to_json(&p)).transpose()?
            }
            Target::Role(name) => {
                let row: Option<RoleRow> = sqlx::query_as(crate::keys::ROLE)
                    .bind(name.to_owned())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(DB::map_err)?;
                row.map(|r| to_json(&r.into_role())).transpose()?
            }
            // Recorded with both sides given (`record_values`).
            Target::Credits(_) | Target::SigningKey(_) | Target::AdminToken => None,
        })
    }

    /// Records `action` on `target` by `audit` inside the caller's transaction: the fields of
    /// `before` (from [`Self::snapshot`]) that differ from the target as it is now, and
    /// theirs now.
    pub(crate) async fn record(
        conn: &mut DB::Connection,
        audit: &Audit,
        action: &str,
        target: Target<'_>,
        before: Option<Value>,
        now: i64,
    ) -> Result<()> {
        let after = Self::snapshot(conn, target, now).await?;
        Self::record_values(conn, audit, action, target, before, after, now).await
    }

    /// Entries matching `q`, newest first.
    pub(crate) async fn list(pool: &Pool<DB>, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut s = QueryBuilder::<DB>::new(concat!("SELECT ", audit_columns!(), " FROM audit_log WHERE 1 = 1"));
        if let Some(actor) = &q.actor {
            s.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(target) = &q.target {
            s.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(account) = q.account {
            s.push(" AND account_id = ").push_bind(account.to_hex());
        }
        match q.action.as_deref() {
            Some(a) if a.contains('.') => {
                s.push(" AND action = ").push_bind(a.to_owned());
            }
            // A kind of target: its actions all start with its name and a dot.
            Some(kind) => {
                s.push(" AND target_kind = ").push_bind(kind.to_owned());
            }
            None => {}
        }
        if let Some(from) = q.from {
            s.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = q.to {
            s.push(" AND at < ").push_bind(to);
        }
        if let Some(id) = q.before_id {
            s.push(" AND id < ").push_bind(id);
        }
        s.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(q.limit.clamp(1, MAX_AUDIT_PAGE)));
        let rows: Vec<AuditRow> = s.build_query_as().fetch_all(pool).await.map_err(DB::map_err)?;
        rows.into_iter().map(AuditRow::into_entry).collect()
    }
}

/// A console password as the log records it: `{"password": "set"}` or `"none"`, never the hash.
pub(crate) fn password_state(hash: Option<&str>) -> Value {
    json!({ "password": if hash.is_some() { "set" } else { "none" } })
}

/// The before and after of a password change: set, cleared, or one replaced by another
/// (`"set"` to `"changed"`).
pub(crate) fn password_change(had: Option<&str>, has: Option<&str>) -> (Value, Value) {
    let (before, after) = (password_state(had), password_state(has));
    if before == after && has.is_some() { (before, json!({ "password": "changed" })) } else { (before, after) }
}

/// The columns of an entry, as `rows::AuditRow` reads them.
macro_rules! audit_columns {
    () => {
        "id, at, actor_kind, actor, action, target_kind, target, account_id, before, after, source_ip, request_id"
    };
}
use audit_columns;

const INSERT: &str = "INSERT INTO audit_log \
     (at, actor_kind, actor, action, target_kind, target, account_id, before, after, source_ip, request_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const ACCOUNT_OF_CREDENTIAL: &str = "SELECT account_id FROM credentials WHERE client_id = $1";
const PRUNE: &str = "DELETE FROM audit_log WHERE id IN \
     (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2) RETURNING id";
