//! What a key may do and when (names, metadata, expiry, enabled, permissions, roles, IP
//! allowlists) and the roles themselves: the transactions of both backends, written once over
//! sqlx's generic [`Database`] with the backends' [`Dialect`], as the credits are.
//!
//! Every write here appends to the change feed in its transaction: a credential's entry for a
//! change of its fields, an account's for its allowlist, a role's (every credential holding it
//! is reloaded) for a role.

use std::marker::PhantomData;

use keygate_core::model::{CredentialChange, KeyRole};
use keygate_core::net::Cidr;
use keygate_core::{AccountId, ClientId};
use sqlx::{Encode, Executor, FromRow, IntoArguments, Pool, Type};

use keygate_core::audit::{Audit, action};

use crate::audit::{AuditLog, Target, to_json};
use crate::credits::Dialect;
use crate::rows::{AccountRow, RoleRow};
use crate::sql;
use crate::{Entity, Result, StoreError};

/// Words joined by single spaces, `None` when there are none (how lists of permissions and
/// networks are stored).
pub(crate) fn words_text<T: std::fmt::Display>(words: &[T]) -> Option<String> {
    (!words.is_empty()).then(|| words.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
}

/// The statements (shared by both dialects).
const UPDATE_CREDENTIAL: &str = "UPDATE credentials SET \
     name = CASE WHEN $1 THEN $2 ELSE name END, \
     meta = CASE WHEN $3 THEN $4 ELSE meta END, \
     expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END, \
     enabled = CASE WHEN $7 THEN $8 ELSE enabled END, \
     permissions = CASE WHEN $9 THEN $10 ELSE permissions END, \
     ip_allowlist = CASE WHEN $11 THEN $12 ELSE ip_allowlist END, \
     ratelimits = CASE WHEN $13 THEN $14 ELSE ratelimits END, \
     updated_at = $15 WHERE client_id = $16 RETURNING client_id";
const DELETE_CREDENTIAL_ROLES: &str = "DELETE FROM credential_roles WHERE client_id = $1";
const INSERT_CREDENTIAL_ROLE: &str = "INSERT INTO credential_roles (client_id, role) VALUES ($1, $2)";
const ROLE_EXISTS: &str = "SELECT 1 FROM roles WHERE name = $1";
pub(crate) const ROLE: &str = "SELECT name, permissions, created_at, updated_at FROM roles WHERE name = $1";
const ROLES: &str = "SELECT name, permissions, created_at, updated_at FROM roles";
const INSERT_ROLE: &str = "INSERT INTO roles (name, permissions, created_at, updated_at) VALUES ($1, $2, $3, $3) \
     ON CONFLICT (name) DO NOTHING RETURNING name, permissions, created_at, updated_at";
const REPLACE_ROLE: &str = "UPDATE roles SET permissions = $2, updated_at = $3 WHERE name = $1 \
     RETURNING name, permissions, created_at, updated_at";
const ROLE_HOLDERS: &str = "SELECT COUNT(*) FROM credential_roles WHERE role = $1";
const DELETE_ROLE: &str = "DELETE FROM roles WHERE name = $1";
const SET_ACCOUNT_ALLOWLIST: &str =
    concat!("UPDATE accounts SET ip_allowlist = $1, updated_at = $2 WHERE id = $3 RETURNING ", sql::account_columns!());

fn role_in_use(name: &str, holders: Option<i64>) -> StoreError {
    StoreError::Conflict(match holders {
        Some(1) => format!("role {name:?} is held by 1 credential"),
        Some(n) => format!("role {name:?} is held by {n} credentials"),
        None => format!("role {name:?} is held by credentials"),
    })
}

/// The key-lifecycle transactions on a backend `DB`.
pub(crate) struct Keys<DB>(PhantomData<DB>);

impl<DB: Dialect> Keys<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (i32,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> RoleRow: FromRow<'r, DB::Row>,
    for<'r> AccountRow: FromRow<'r, DB::Row>,
{
    /// Applies `change` to a credential inside the caller's transaction (which appends the
    /// credential to the feed). `NotFound`: no such credential; `Conflict`: a role that does not
    /// exist.
    pub(crate) async fn apply(
        conn: &mut DB::Connection,
        client_id: ClientId,
        change: &CredentialChange,
        now: i64,
    ) -> Result<()> {
        let id = client_id.to_hex();
        let meta = match &change.meta {
            Some(Some(m)) => Some(serde_json::Value::Object(m.clone()).to_string()),
            _ => None,
        };
        let ratelimits = match &change.ratelimits {
            Some(set) => sql::optional_ratelimits_json(set)?,
            None => None,
        };
        let found: Option<(String,)> = sqlx::query_as(UPDATE_CREDENTIAL)
            .bind(change.name.is_some())
            .bind(change.name.clone().flatten())
            .bind(change.meta.is_some())
            .bind(meta)
            .bind(change.expires_at.is_some())
            .bind(change.expires_at.flatten())
            .bind(change.enabled.is_some())
            .bind(change.enabled.unwrap_or(true))
            .bind(change.permissions.is_some())
            .bind(change.permissions.as_deref().and_then(words_text))
            .bind(change.ip_allowlist.is_some())
            .bind(change.ip_allowlist.as_deref().and_then(words_text))
            .bind(change.ratelimits.is_some())
            .bind(ratelimits)
            .bind(now)
            .bind(id.clone())
            .fetch_optional(&mut *conn)
            .await
            .map_err(DB::map_err)?;
        found.ok_or(StoreError::NotFound)?;
        if let Some(roles) = &change.roles {
            sqlx::query(DELETE_CREDENTIAL_ROLES).bind(id.clone()).execute(&mut *conn).await.map_err(DB::map_err)?;
            for role in roles {
                let exists: Option<(i32,)> = sqlx::query_as(ROLE_EXISTS)
                    .bind(role.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(DB::map_err)?;
                if exists.is_none() {
                    return Err(StoreError::Conflict(format!("no role named {role:?}")));
                }
                sqlx::query(INSERT_CREDENTIAL_ROLE)
                    .bind(id.clone())
                    .bind(role.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        if sql::is_foreign_key_violation(&e) {
                            StoreError::Conflict(format!("no role named {role:?}"))
                        } else {
                            DB::map_err(e)
                        }
                    })?;
            }
        }
        Ok(())
    }

    /// [`crate::Store::put_role`].
    pub(crate) async fn put_role(
        pool: &Pool<DB>,
        audit: &Audit,
        name: &str,
        permissions: &[String],
        now: i64,
    ) -> Result<(KeyRole, bool)> {
        let text = permissions.join(" ");
        let mut tx = DB::begin_write(pool).await?;
        let before: Option<RoleRow> =
            sqlx::query_as(ROLE).bind(name).fetch_optional(&mut *tx).await.map_err(DB::map_err)?;
        let before = before.map(|r| to_json(&r.into_role())).transpose()?;
        let inserted: Option<RoleRow> = sqlx::query_as(INSERT_ROLE)
            .bind(name)
            .bind(text.clone())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DB::map_err)?;
        let (row, created) = match inserted {
            Some(row) => (row, true),
            None => {
                let row: RoleRow = sqlx::query_as(REPLACE_ROLE)
                    .bind(name)
                    .bind(text)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(DB::map_err)?;
                (row, false)
            }
        };
        let role = row.into_role();
        let action = if created { action::ROLE_CREATE } else { action::ROLE_UPDATE };
        AuditLog::<DB>::record_values(&mut tx, audit, action, Target::Role(name), before, Some(to_json(&role)?), now)
            .await?;
        DB::record_change(&mut tx, Entity::Role, name, now).await?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok((role, created))
    }

    pub(crate) async fn get_role(pool: &Pool<DB>, name: &str) -> Result<KeyRole> {
        let row: Option<RoleRow> = sqlx::query_as(ROLE).bind(name).fetch_optional(pool).await.map_err(DB::map_err)?;
        row.map(RoleRow::into_role).ok_or(StoreError::NotFound)
    }

    /// Every role, by name (in bytes: the same order on both backends).
    pub(crate) async fn list_roles(pool: &Pool<DB>) -> Result<Vec<KeyRole>> {
        let rows: Vec<RoleRow> = sqlx::query_as(ROLES).fetch_all(pool).await.map_err(DB::map_err)?;
        let mut roles: Vec<KeyRole> = rows.into_iter().map(RoleRow::into_role).collect();
        roles.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(roles)
    }

    pub(crate) async fn role_holders(pool: &Pool<DB>, name: &str) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(ROLE_HOLDERS).bind(name).fetch_one(pool).await.map_err(DB::map_err)?;
        Ok(n as u64)
    }

    /// [`crate::Store::delete_role`].
    pub(crate) async fn delete_role(pool: &Pool<DB>, audit: &Audit, name: &str, now: i64) -> Result<()> {
        let mut tx = DB::begin_write(pool).await?;
        let before: Option<RoleRow> =
            sqlx::query_as(ROLE).bind(name).fetch_optional(&mut *tx).await.map_err(DB::map_err)?;
        let before = to_json(&before.ok_or(StoreError::NotFound)?.into_role())?;
        let (holders,): (i64,) =
            sqlx::query_as(ROLE_HOLDERS).bind(name).fetch_one(&mut *tx).await.map_err(DB::map_err)?;
        if holders > 0 {
            return Err(role_in_use(name, Some(holders)));
        }
        // A credential that took the role meanwhile (PostgreSQL) makes the foreign key refuse.
        sqlx::query(DELETE_ROLE)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| if sql::is_foreign_key_violation(&e) { role_in_use(name, None) } else { DB::map_err(e) })?;
        AuditLog::<DB>::record_values(&mut tx, audit, action::ROLE_DELETE, Target::Role(name), Some(before), None, now)
            .await?;
        DB::record_change(&mut tx, Entity::Role, name, now).await?;
        tx.commit().await.map_err(DB::map_err)
    }

    /// [`crate::Store::set_account_ip_allowlist`].
    pub(crate) async fn set_account_allowlist(
        pool: &Pool<DB>,
        audit: &Audit,
        id: AccountId,
        list: &[Cidr],
        now: i64,
    ) -> Result<keygate_core::model::Account> {
        let mut tx = DB::begin_write(pool).await?;
        let before: Option<AccountRow> =
            sqlx::query_as(sql::ACCOUNT).bind(id.to_hex()).fetch_optional(&mut *tx).await.map_err(DB::map_err)?;
        let before = to_json(&before.ok_or(StoreError::NotFound)?.into_account()?)?;
        let row: Option<AccountRow> = sqlx::query_as(SET_ACCOUNT_ALLOWLIST)
            .bind(words_text(list))
            .bind(now)
            .bind(id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(DB::map_err)?;
        let account = row.ok_or(StoreError::NotFound)?.into_account()?;
        let after = to_json(&account)?;
        AuditLog::<DB>::record_values(
            &mut tx,
            audit,
            action::ACCOUNT_UPDATE,
            Target::Account(id),
            Some(before),
            Some(after),
            now,
        )
        .await?;
        DB::record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok(account)
    }
}
