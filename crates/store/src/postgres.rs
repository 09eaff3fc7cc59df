//! The shared backend for clusters: several keygate nodes (and the CLI) on one PostgreSQL.
//! Change-feed entries are appended under a transaction-level advisory lock, so they become
//! visible in `seq` order (a follower never sees seq N+1 before N is committed), and announced
//! with `NOTIFY keygate_changes` at commit so followers need not wait for their next poll.
//!
//! The rows and the statements PostgreSQL and SQLite say alike are shared (`rows`, `sql`); what
//! PostgreSQL says its own way (the feed's lock and NOTIFY, `FOR UPDATE` and the plan row locks,
//! the credits balances' row locks, `lower()` matching, `LEAST`, `string_agg`, the `UNNEST` usage
//! batch, `COLLATE "C"`) is written here.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::credits::{Adjustment, CreditBalance, CreditsConfig, Refill};
use keygate_core::decide::AccountState;
use keygate_core::model::{Account, AccountStatus, Credential, CredentialChange, KeyRole, Plan};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::RateLimit;
use keygate_core::{AccountId, ClientId, SecretHash};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, PgExecutor, Postgres, Transaction};

use keygate_core::audit::{Audit, AuditEntry, action};
use serde_json::{Value, json};

use crate::audit::{AuditLog, AuditQuery, Target, password_change, password_state, to_json};
use crate::credits::{Credits, Dialect};
use crate::keys::Keys;
use crate::rows::{
    AccountRow, AccountStateRow, BundleRow, ChangeRow, ConsoleAccountRow, EventRow, PlanRow, SecretRow, SessionRow,
    SigningKeyRow, parse_id,
};
use crate::sql::{
    self, account_columns, account_state_columns, credential_credits_columns, credential_lifecycle_columns,
    plan_columns,
};
use crate::usage::{self, BucketRow, CredentialBucketRow, Statements};
use crate::{
    AccountEvent, Adjusted, Change, ConsoleAccount, ConsoleSession, CreditLease, CreditRequest, CreditScope,
    CreditSettlement, Entity, NewAccount, Result, Role, SigningKey, Store, StoreError, now_ms,
};
use crate::{CredentialBucket, Granularity, UsageBucket, UsageDelta, UsageScope};

type Log = AuditLog<Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel followers LISTEN on; the payload is the new entry's seq.
pub const CHANNEL: &str = "keygate_changes";
/// Serialises change-feed appends (any constant unlikely to clash with an application's own).
const FEED_LOCK: i64 = 0x6b65_7967_6174_6501;

/// How long opening a store waits for a first connection (a refused one is retried meanwhile).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct PgStore {
    pool: PgPool,
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        // Connection-level failures, and the server shutting down or refusing connections.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}

async fn record_change(conn: &mut PgConnection, entity: Entity, id: &str, now: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FEED_LOCK).execute(&mut *conn).await.map_err(map_err)?;
    let seq: i64 = sqlx::query_scalar("INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3) RETURNING seq")
        .bind(entity.as_str())
        .bind(id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(seq.to_string())
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

impl Dialect for Postgres {
    // Nodes lease concurrently: a balance's row is locked before it is read. NO KEY UPDATE, as
    // an UPDATE of its other columns takes: inserting a credential (whose foreign key takes a
    // key-share lock on its account) does not wait for it.
    const LOCK_CREDENTIAL: Option<&'static str> =
        Some("SELECT 1 FROM credentials WHERE client_id = $1 FOR NO KEY UPDATE");
    const LOCK_ACCOUNT: Option<&'static str> = Some("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE");

    fn map_err(e: sqlx::Error) -> StoreError {
        map_err(e)
    }

    async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
        pool.begin().await.map_err(map_err)
    }

    /// Two statements for the whole batch, in arrays: the lease rows locked in the reports'
    /// order (one statement's rows are otherwise locked in whatever order its plan meets them),
    /// then the additions.
    async fn add_spent<'a>(
        conn: &'a mut PgConnection,
        holder: &'a str,
        reports: &'a [CreditSettlement],
        expires_at: i64,
    ) -> Result<()> {
        let n = reports.len();
        let (mut scopes, mut ids, mut epochs, mut spent) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for r in reports {
            scopes.push(r.scope.kind());
            ids.push(r.scope.id_hex());
            epochs.push(r.epoch);
            spent.push(r.spent);
        }
        sqlx::query(
            "SELECT 1 FROM credit_leases l JOIN UNNEST($1::text[], $2::text[]) AS b (scope, id) \
             ON l.scope = b.scope AND l.id = b.id WHERE l.holder = $3 \
             ORDER BY l.scope COLLATE \"C\", l.id COLLATE \"C\" FOR NO KEY UPDATE OF l",
        )
        .bind(&scopes)
        .bind(&ids)
        .bind(holder)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        static ADD: &str = concat!(
            "WITH batch AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
             AS b (scope, id, epoch, spent)) ",
            sql::add_leases_spent!("$5", "$6")
        );
        sqlx::query(ADD)
            .bind(&scopes)
            .bind(&ids)
            .bind(&epochs)
            .bind(&spent)
            .bind(holder)
            .bind(expires_at)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn record_change<'a>(conn: &'a mut PgConnection, entity: Entity, id: &'a str, now: i64) -> Result<()> {
        record_change(conn, entity, id, now).await
    }
}

/// A credential with its secret generations live at `now`.
async fn credential_in(conn: &mut PgConnection, client_id: ClientId, now: i64) -> Result<Credential> {
    crate::audit::credential_in::<Postgres>(conn, client_id, now).await
}

/// The credential as it is before a write (its row taken), for its audit entry.
async fn credential_before(conn: &mut PgConnection, client_id: ClientId, now: i64) -> Result<Option<Value>> {
    Log::snapshot(conn, Target::Credential(client_id), now).await
}

/// Ends a write to a credential: records `action` by `audit` (the fields of `before` that
/// changed), appends it to the feed, reads it back and commits.
async fn commit_credential(
    mut tx: Transaction<'_, Postgres>,
    audit: &Audit,
    action: &str,
    before: Option<Value>,
    client_id: ClientId,
    now: i64,
) -> Result<Credential> {
    let cred = credential_in(&mut tx, client_id, now).await?;
    Log::record_values(&mut tx, audit, action, Target::Credential(client_id), before, Some(to_json(&cred)?), now)
        .await?;
    record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(cred)
}

async fn insert_secret(
    ex: impl PgExecutor<'_>,
    secret: &SecretHash,
    client_id: ClientId,
    generation: i32,
    now: i64,
) -> Result<()> {
    sqlx::query(sql::INSERT_SECRET)
        .bind(&secret.as_bytes()[..])
        .bind(client_id.to_hex())
        .bind(generation)
        .bind(now)
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn delete_secrets(ex: impl PgExecutor<'_>, client_id: ClientId) -> Result<()> {
    sqlx::query(sql::DELETE_SECRETS).bind(client_id.to_hex()).execute(ex).await.map_err(map_err)?;
    Ok(())
}

/// Ends every console session of an account; returns how many there were.
async fn end_sessions(ex: impl PgExecutor<'_>, account: AccountId) -> Result<u64> {
    let done = sqlx::query(sql::DELETE_ACCOUNT_SESSIONS).bind(account.to_hex()).execute(ex).await.map_err(map_err)?;
    Ok(done.rows_affected())
}

struct Listener(sqlx::postgres::PgListener);

#[async_trait]
impl crate::ChangeListener for Listener {
    async fn wait(&mut self) -> Result<bool> {
        match self.0.try_recv().await {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }
}

impl PgStore {
    /// Opens the database at `url`: with `migrate`, applying migrations; without, only one with
    /// this build's schema ([`crate::Connect::existing`]).
    pub async fn open(url: &str, migrate: bool) -> Result<Self> {
        let how = if migrate { crate::Connect::migrate() } else { crate::Connect::existing() };
        Self::open_with(url, how).await
    }

    pub(crate) async fn open_with(url: &str, how: crate::Connect) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad PostgreSQL URL: {e}")))?
            .application_name("keygate");
        let pool = match PgPoolOptions::new()
            .max_connections(if how.short_lived { 1 } else { 16 })
            .test_before_acquire(!how.short_lived)
            .min_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            // The pool retries a refused connection until its deadline and then says only that
            // it timed out: one more attempt tells why.
            Err(sqlx::Error::PoolTimedOut) => {
                let why = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "it answered only after several attempts".into(),
                    Err(_) => "no answer".into(),
                };
                return Err(StoreError::Unavailable(format!("cannot connect within {CONNECT_TIMEOUT:?}: {why}")));
            }
            Err(e) => return Err(map_err(e)),
        };
        let store = Self { pool };
        if how.migrate {
            store.migrate().await?;
        } else {
            store.check_schema().await?;
        }
        Ok(store)
    }

    /// Fails unless every migration of this build, and no other, has been applied: one query,
    /// where running the migrator takes a lock and half a dozen.
    async fn check_schema(&self) -> Result<()> {
        let applied: Vec<(i64, Vec<u8>)> =
            match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => rows,
                // 42P01: undefined_table.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(map_err(e)),
            };
        crate::check_schema(&MIGRATOR, &applied)
    }

    /// Applies migrations; sqlx holds an advisory lock meanwhile, so nodes starting together
    /// take turns and all but the first find nothing to do.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sets a setting; an audited one (the admin token's hash) records `action` with it.
    async fn write_setting(
        &self,
        audit: Option<(&Audit, &str)>,
        name: &str,
        value: &[u8],
        only_if_absent: bool,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let statement = if only_if_absent { sql::INSERT_SETTING } else { sql::PUT_SETTING };
        let done = sqlx::query(statement).bind(name).bind(value).bind(now).execute(&mut *tx).await.map_err(map_err)?;
        if done.rows_affected() > 0 {
            if let Some((audit, action)) = audit {
                Log::record_values(&mut tx, audit, action, Target::AdminToken, None, None, now).await?;
            }
            record_change(&mut tx, Entity::Setting, name, now).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn console_account_by(&self, statement: &'static str, key: &str) -> Result<Option<ConsoleAccount>> {
        let row: Option<ConsoleAccountRow> =
            sqlx::query_as(statement).bind(key).fetch_optional(&self.pool).await.map_err(map_err)?;
        row.map(ConsoleAccountRow::into_console_account).transpose()
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    async fn create_account(&self, audit: &Audit, new: &NewAccount) -> Result<Account> {
        self.create_console_account(audit, new, None, Role::Customer).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Account> {
        let row: Option<AccountRow> =
            sqlx::query_as(sql::ACCOUNT).bind(id.to_hex()).fetch_optional(&self.pool).await.map_err(map_err)?;
        row.ok_or(StoreError::NotFound)?.into_account()
    }

    async fn list_accounts(&self, query: Option<&str>, limit: u32, after_uid: Option<i64>) -> Result<Vec<Account>> {
        let pattern = query.map(|q| sql::like_pattern(&q.to_lowercase()));
        let rows: Vec<AccountRow> = sqlx::query_as(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts \
             WHERE uid > $1 AND ($2::text IS NULL OR lower(email) LIKE $2 OR id LIKE $2) \
             ORDER BY uid LIMIT $3"
        ))
        .bind(after_uid.unwrap_or(0))
        .bind(&pattern)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    async fn set_account_status(
        &self,
        audit: &Audit,
        id: AccountId,
        status: AccountStatus,
        reason: Option<&str>,
    ) -> Result<Account> {
        let now = now_ms();
        let (ban_reason, kind) = sql::status_change(status, reason);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let before = Log::snapshot(&mut tx, Target::Account(id), now).await?;
        let row: AccountRow = sqlx::query_as(sql::SET_ACCOUNT_STATUS)
            .bind(status.as_str())
            .bind(ban_reason)
            .bind(now)
            .bind(id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        sqlx::query(sql::INSERT_ACCOUNT_EVENT)
            .bind(id.to_hex())
            .bind(kind)
            .bind(reason)
            .bind(audit.label())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if status == AccountStatus::Banned {
            // A banned account's console sessions end with the ban.
            end_sessions(&mut *tx, id).await?;
        }
        let action = if status == AccountStatus::Banned { action::ACCOUNT_BAN } else { action::ACCOUNT_UNBAN };
        Log::record(&mut tx, audit, action, Target::Account(id), before, now).await?;
        record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(map_err)?;
        row.into_account()
    }

    async fn account_events(&self, id: AccountId) -> Result<Vec<AccountEvent>> {
        let rows: Vec<EventRow> =
            sqlx::query_as(sql::ACCOUNT_EVENTS).bind(id.to_hex()).fetch_all(&self.pool).await.map_err(map_err)?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    async fn create_credential(
        &self,
        audit: &Audit,
        account: AccountId,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
        change: &CredentialChange,
    ) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let exists: Option<i32> = sqlx::query_scalar(sql::ACCOUNT_EXISTS)
            .bind(account.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(sql::INSERT_CREDENTIAL)
            .bind(client_id.to_hex())
            .bind(account.to_hex())
            .bind(hint)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_secret(&mut *tx, secret, client_id, 1, now).await?;
        if !change.is_empty() {
            Keys::<Postgres>::apply(&mut tx, client_id, change, now).await?;
        }
        commit_credential(tx, audit, action::CREDENTIAL_CREATE, None, client_id, now).await
    }

    async fn get_credential(&self, client_id: ClientId) -> Result<Credential> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        credential_in(&mut conn, client_id, now_ms()).await
    }

    async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>> {
        let now = now_ms();
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let ids: Vec<String> = sqlx::query_scalar(sql::CREDENTIAL_IDS)
            .bind(account.to_hex())
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(credential_in(&mut conn, parse_id(&id)?, now).await?);
        }
        Ok(out)
    }

    async fn revoke_credential(&self, audit: &Audit, client_id: ClientId) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let before = credential_before(&mut tx, client_id, now).await?;
        let done = sqlx::query(sql::REVOKE_CREDENTIAL)
            .bind(now)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sql::found(done.rows_affected())?;
        delete_secrets(&mut *tx, client_id).await?;
        commit_credential(tx, audit, action::CREDENTIAL_REVOKE, before, client_id, now).await
    }

    async fn rotate_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
        old_expires_at: Option<i64>,
    ) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let before = credential_before(&mut tx, client_id, now).await?;
        let (status, generation): (String, i32) =
            sqlx::query_as("SELECT status, generation FROM credentials WHERE client_id = $1 FOR UPDATE")
                .bind(client_id.to_hex())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
        if status != "active" {
            return Err(StoreError::Conflict("a revoked credential cannot be rotated".into()));
        }
        let next = generation + 1;
        match old_expires_at.filter(|t| *t > now) {
            // The rule: the current key and the one before it, at most. The key being replaced
            // works until the grace ends; any older one (still in an earlier grace) ends now.
            Some(until) => {
                sqlx::query(sql::DELETE_OLDER_SECRETS)
                    .bind(client_id.to_hex())
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query(sql::SET_SECRETS_EXPIRY)
                    .bind(until)
                    .bind(client_id.to_hex())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            None => delete_secrets(&mut *tx, client_id).await?,
        }
        sqlx::query(sql::DELETE_EXPIRED_SECRETS)
            .bind(client_id.to_hex())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_secret(&mut *tx, secret, client_id, next, now).await?;
        sqlx::query(sql::SET_GENERATION)
            .bind(next)
            .bind(hint)
            .bind(now)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        commit_credential(tx, audit, action::CREDENTIAL_ROTATE, before, client_id, now).await
    }

    async fn update_credential(
        &self,
        audit: &Audit,
        client_id: ClientId,
        change: &CredentialChange,
    ) -> Result<Credential> {
        let now = now_ms();
        let mut tx = Postgres::begin_write(&self.pool).await?;
        let before = credential_before(&mut tx, client_id, now).await?;
        Keys::<Postgres>::apply(&mut tx, client_id, change, now).await?;
        commit_credential(tx, audit, action::CREDENTIAL_UPDATE, before, client_id, now).await
    }

    async fn set_account_ip_allowlist(&self, audit: &Audit, id: AccountId, list: &[Cidr]) -> Result<Account> {
        Keys::<Postgres>::set_account_allowlist(&self.pool, audit, id, list, now_ms()).await
    }

    async fn put_role(&self, audit: &Audit, name: &str, permissions: &[String]) -> Result<(KeyRole, bool)> {
        Keys::<Postgres>::put_role(&self.pool, audit, name, permissions, now_ms()).await
    }

    async fn get_role(&self, name: &str) -> Result<KeyRole> {
        Keys::<Postgres>::get_role(&self.pool, name).await
    }

    async fn list_roles(&self) -> Result<Vec<KeyRole>> {
        Keys::<Postgres>::list_roles(&self.pool).await
    }

    async fn delete_role(&self, audit: &Audit, name: &str) -> Result<()> {
        Keys::<Postgres>::delete_role(&self.pool, audit, name, now_ms()).await
    }

    async fn role_holders(&self, name: &str) -> Result<u64> {
        Keys::<Postgres>::role_holders(&self.pool, name).await
    }

    async fn set_credential_ratelimits(
        &self,
        audit: &Audit,
        client_id: ClientId,
        ratelimits: &[RateLimit],
    ) -> Result<Credential> {
        let now = now_ms();
        let json = sql::optional_ratelimits_json(ratelimits)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let before = credential_before(&mut tx, client_id, now).await?;
        let done = sqlx::query(sql::SET_CREDENTIAL_LIMITS)
            .bind(json)
            .bind(now)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sql::found(done.rows_affected())?;
        commit_credential(tx, audit, action::CREDENTIAL_UPDATE, before, client_id, now).await
    }

    async fn update_account_limits(
        &self,
        audit: &Audit,
        id: AccountId,
        ratelimits: Option<&[RateLimit]>,
        plan: Option<Option<&str>>,
    ) -> Result<Account> {
        let now = now_ms();
        let json = ratelimits.map(sql::optional_ratelimits_json).transpose()?.flatten();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let before = Log::snapshot(&mut tx, Target::Account(id), now).await?;
        if let Some(Some(name)) = plan {
            // The key-share lock keeps the plan until commit (a delete waits, then sees the
            // account on it); the foreign key would refuse it anyway.
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM plans WHERE name = $1 FOR KEY SHARE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            if exists.is_none() {
                let account: Option<i32> = sqlx::query_scalar(sql::ACCOUNT_EXISTS)
                    .bind(id.to_hex())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                return Err(if account.is_none() { StoreError::NotFound } else { sql::no_plan(name) });
            }
        }
        let row: AccountRow = sqlx::query_as(sql::SET_ACCOUNT_LIMITS)
            .bind(ratelimits.is_some())
            .bind(json)
            .bind(plan.is_some())
            .bind(plan.flatten())
            .bind(now)
            .bind(id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| match plan.flatten() {
                Some(name) if sql::is_foreign_key_violation(&e) => sql::no_plan(name),
                _ => map_err(e),
            })?
            .ok_or(StoreError::NotFound)?;
        let account = row.into_account()?;
        Log::record_values(
            &mut tx,
            audit,
            action::ACCOUNT_UPDATE,
            Target::Account(id),
            before,
            Some(to_json(&account)?),
            now,
        )
        .await?;
        record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(account)
    }

    async fn put_plan(
        &self,
        audit: &Audit,
        name: &str,
        ratelimits: &[RateLimit],
        credits: Option<&Refill>,
    ) -> Result<(Plan, bool)> {
        let now = now_ms();
        let json = sql::ratelimits_json(ratelimits)?;
        let credits = sql::refill_json(credits)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Insert, or else replace. An insert racing with ours makes ours do nothing (it waits for
        // that one to commit); a delete between our two statements makes us insert again.
        let mut attempts = 0;
        let (row, created, before) = loop {
            // Taken with its row, so that the entry's "before" is what this write replaces.
            let before: Option<PlanRow> =
                sqlx::query_as(concat!("SELECT ", plan_columns!(), " FROM plans WHERE name = $1 FOR UPDATE"))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
            let before = before.map(|r| r.into_plan().and_then(|p| to_json(&p))).transpose()?;
            let inserted: Option<PlanRow> = sqlx::query_as(sql::INSERT_PLAN)
                .bind(name)
                .bind(&json)
                .bind(now)
                .bind(&credits)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            if let Some(row) = inserted {
                break (row, true, before);
            }
            let replaced: Option<PlanRow> = sqlx::query_as(sql::REPLACE_PLAN)
                .bind(name)
                .bind(&json)
                .bind(now)
                .bind(&credits)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            if let Some(row) = replaced {
                break (row, false, before);
            }
            attempts += 1;
            if attempts == 3 {
                return Err(StoreError::Conflict(format!("plan {name:?} is being changed concurrently")));
            }
        };
        let plan = row.into_plan()?;
        let action = if created { action::PLAN_CREATE } else { action::PLAN_UPDATE };
        Log::record_values(&mut tx, audit, action, Target::Plan(name), before, Some(to_json(&plan)?), now).await?;
        record_change(&mut tx, Entity::Plan, name, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok((plan, created))
    }

    async fn get_plan(&self, name: &str) -> Result<Plan> {
        let row: Option<PlanRow> =
            sqlx::query_as(sql::PLAN).bind(name).fetch_optional(&self.pool).await.map_err(map_err)?;
        row.ok_or(StoreError::NotFound)?.into_plan()
    }

    async fn list_plans(&self) -> Result<Vec<Plan>> {
        let rows: Vec<PlanRow> =
            sqlx::query_as(concat!("SELECT ", plan_columns!(), " FROM plans ORDER BY name COLLATE \"C\""))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        rows.into_iter().map(PlanRow::into_plan).collect()
    }

    async fn delete_plan(&self, audit: &Audit, name: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The row lock waits for any transaction putting an account on the plan (it holds a
        // key-share lock on it) and keeps new ones out until we commit; the count then sees them.
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM plans WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let before = Log::snapshot(&mut tx, Target::Plan(name), now).await?.ok_or(StoreError::NotFound)?;
        let accounts: i64 =
            sqlx::query_scalar(sql::PLAN_ACCOUNTS).bind(name).fetch_one(&mut *tx).await.map_err(map_err)?;
        if accounts > 0 {
            return Err(sql::plan_in_use(name, Some(accounts)));
        }
        sqlx::query(sql::DELETE_PLAN)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| if sql::is_foreign_key_violation(&e) { sql::plan_in_use(name, None) } else { map_err(e) })?;
        Log::record_values(&mut tx, audit, action::PLAN_DELETE, Target::Plan(name), Some(before), None, now).await?;
        record_change(&mut tx, Entity::Plan, name, now).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn plan_accounts(&self, name: &str) -> Result<u64> {
        let accounts: i64 =
            sqlx::query_scalar(sql::PLAN_ACCOUNTS).bind(name).fetch_one(&self.pool).await.map_err(map_err)?;
        Ok(accounts as u64)
    }

    async fn set_credits(
        &self,
        audit: &Audit,
        scope: CreditScope,
        config: Option<&CreditsConfig>,
        now_ms: i64,
    ) -> Result<()> {
        Credits::<Postgres>::set(&self.pool, audit, scope, config, now_ms).await
    }

    async fn adjust_credits(
        &self,
        audit: &Audit,
        scope: CreditScope,
        adjustment: Adjustment,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<Adjusted> {
        Credits::<Postgres>::adjust(&self.pool, audit, scope, adjustment, idempotency_key, now_ms).await
    }

    async fn credit_balance(&self, scope: CreditScope, now_ms: i64) -> Result<Option<CreditBalance>> {
        Credits::<Postgres>::balance(&self.pool, scope, now_ms).await
    }

    async fn lease_credits(
        &self,
        holder: &str,
        scope: CreditScope,
        need: i64,
        extra: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<CreditLease> {
        Credits::<Postgres>::lease(&self.pool, holder, scope, need, extra, now_ms, ttl_ms).await
    }

    async fn lease_credits_many(
        &self,
        holder: &str,
        requests: &[CreditRequest],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Vec<Option<CreditLease>>> {
        Credits::<Postgres>::lease_many(&self.pool, holder, requests, now_ms, ttl_ms).await
    }

    async fn settle_credits(&self, holder: &str, batch: &[CreditSettlement], now_ms: i64, ttl_ms: i64) -> Result<()> {
        Credits::<Postgres>::settle(&self.pool, holder, batch, now_ms, ttl_ms).await
    }

    async fn reclaim_credit_leases(&self, now_ms: i64) -> Result<u64> {
        Credits::<Postgres>::reclaim(&self.pool, now_ms).await
    }

    async fn record_usage(&self, batch: &[UsageDelta]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        usage::check_counts(batch)?;
        let n = batch.len();
        let (mut client_ids, mut hours, mut days, mut outcomes) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut requests, mut credits, mut last_used) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for d in batch {
            client_ids.push(d.client_id.to_hex());
            hours.push(d.hour);
            days.push(usage::day_of(d.hour));
            outcomes.push(d.outcome as i32);
            requests.push(d.requests as i64);
            credits.push(d.credits as i64);
            last_used.push(d.last_used_at);
        }
        // One statement for the whole batch (the hours, the days, last_used_at), so all or
        // nothing without an explicit transaction. A credential may have been deleted meanwhile:
        // its rows are skipped (its usage goes with it); repeats are summed first (`insert`); a
        // client_id in several hours keeps its newest last_used_at.
        static RECORD_USAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH batch AS ( \
                     SELECT b.client_id, b.hour, b.day, b.outcome, b.requests, b.credits, b.last_used_at \
                       FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::int8[], $6::int8[], $7::int8[]) \
                            AS b (client_id, hour, day, outcome, requests, credits, last_used_at) \
                 ), hourly AS ({}), daily AS ({}) \
                 UPDATE credentials c SET last_used_at = GREATEST(COALESCE(c.last_used_at, 0), newest.last_used_at) \
                   FROM (SELECT client_id, MAX(last_used_at) AS last_used_at FROM batch GROUP BY client_id) AS newest \
                  WHERE c.client_id = newest.client_id",
                usage::HOURLY.insert,
                usage::DAILY.insert
            )
        });
        sqlx::query(RECORD_USAGE.as_str())
            .bind(client_ids)
            .bind(hours)
            .bind(days)
            .bind(outcomes)
            .bind(requests)
            .bind(credits)
            .bind(last_used)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn usage(
        &self,
        scope: UsageScope,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>> {
        let (lo, hi) = usage::bounds(from_ms, to_ms, granularity);
        let rows: Vec<BucketRow> = sqlx::query_as(Statements::of(granularity).buckets(scope))
            .bind(scope.key())
            .bind(lo)
            .bind(hi)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(|r| r.into_bucket(granularity)).collect())
    }

    async fn usage_by_credential(
        &self,
        scope: UsageScope,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
    ) -> Result<Vec<CredentialBucket>> {
        let (lo, hi) = usage::bounds(from_ms, to_ms, granularity);
        let rows: Vec<CredentialBucketRow> = sqlx::query_as(Statements::of(granularity).rows(scope))
            .bind(scope.key())
            .bind(lo)
            .bind(hi)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(|r| r.into_bucket(granularity)).collect()
    }

    async fn prune_usage(&self, before_hour: i64) -> Result<u64> {
        let done = sqlx::query(usage::PRUNE_HOURLY).bind(before_hour).execute(&self.pool).await.map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn find_secret(&self, hash: &SecretHash) -> Result<Option<(ClientId, u32)>> {
        let row: Option<SecretRow> = sqlx::query_as(sql::FIND_SECRET)
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(SecretRow::into_secret).transpose()
    }

    async fn account_state(&self, id: AccountId) -> Result<Option<AccountState>> {
        let row: Option<AccountStateRow> =
            sqlx::query_as(sql::ACCOUNT_STATE).bind(id.to_hex()).fetch_optional(&self.pool).await.map_err(map_err)?;
        row.map(AccountStateRow::into_state).transpose()
    }

    async fn auth_bundle(&self, hash: &SecretHash) -> Result<Option<crate::AuthBundle>> {
        let row: Option<BundleRow> = sqlx::query_as(concat!(
            "SELECT s.generation AS presented, c.client_id, c.status, c.ratelimits, ",
            credential_credits_columns!(),
            ", ",
            credential_lifecycle_columns!(),
            ", ",
            account_state_columns!(),
            ", (SELECT string_agg(r.permissions, ' ') FROM credential_roles cr JOIN roles r ON r.name = cr.role \
                 WHERE cr.client_id = c.client_id) AS role_permissions",
            ", (SELECT string_agg(g.generation || ':' || COALESCE(g.expires_at::text, ''), ',') \
                  FROM credential_secrets g \
                 WHERE g.client_id = c.client_id AND (g.expires_at IS NULL OR g.expires_at > $2)) AS gens \
               FROM credential_secrets s \
               JOIN credentials c ON c.client_id = s.client_id \
               JOIN accounts a ON a.id = c.account_id \
               LEFT JOIN plans p ON p.name = a.plan \
              WHERE s.hash = $1"
        ))
        .bind(&hash.as_bytes()[..])
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(BundleRow::into_bundle).transpose()
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        let rows: Vec<ChangeRow> = sqlx::query_as(sql::CHANGES_SINCE)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(ChangeRow::into_change).collect()
    }

    async fn last_change_seq(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM changes")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn prune_changes(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query(sql::PRUNE_CHANGES).bind(before_ms).execute(&self.pool).await.map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows: Vec<SigningKeyRow> =
            sqlx::query_as(sql::SIGNING_KEYS).fetch_all(&self.pool).await.map_err(map_err)?;
        Ok(rows.into_iter().map(SigningKeyRow::into_signing_key).collect())
    }

    async fn add_signing_key(&self, audit: &Audit, kid: &str) -> Result<SigningKey> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(sql::INSERT_SIGNING_KEY).bind(kid).bind(now).execute(&mut *tx).await.map_err(map_err)?;
        let after = json!({ "kid": kid, "createdAt": now });
        Log::record_values(&mut tx, audit, action::SIGNING_KEY_ADD, Target::SigningKey(kid), None, Some(after), now)
            .await?;
        record_change(&mut tx, Entity::SigningKey, kid, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(SigningKey { kid: kid.to_owned(), created_at: now, retired_at: None })
    }

    async fn retire_signing_key(&self, audit: &Audit, kid: &str) -> Result<SigningKey> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row: SigningKeyRow = sqlx::query_as(sql::RETIRE_SIGNING_KEY)
            .bind(now)
            .bind(kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        let key = row.into_signing_key();
        Log::record_values(
            &mut tx,
            audit,
            action::SIGNING_KEY_RETIRE,
            Target::SigningKey(kid),
            Some(json!({ "retiredAt": null })),
            Some(json!({ "retiredAt": key.retired_at })),
            now,
        )
        .await?;
        record_change(&mut tx, Entity::SigningKey, kid, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(key)
    }

    async fn change_listener(&self) -> Result<Option<Box<dyn crate::ChangeListener>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await.map_err(map_err)?;
        listener.listen(CHANNEL).await.map_err(map_err)?;
        Ok(Some(Box::new(Listener(listener))))
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(sql::SETTING).bind(name).fetch_optional(&self.pool).await.map_err(map_err)
    }

    async fn put_setting(&self, name: &str, value: &[u8], only_if_absent: bool) -> Result<bool> {
        self.write_setting(None, name, value, only_if_absent).await
    }

    async fn take_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(sql::TAKE_SETTING).bind(name).fetch_optional(&self.pool).await.map_err(map_err)
    }

    async fn prune_settings(&self, prefix: &str, before_ms: i64) -> Result<u64> {
        let end = sql::prefix_end(prefix).ok_or_else(|| StoreError::Other("an empty settings prefix".into()))?;
        let done = sqlx::query(sql::PRUNE_SETTINGS)
            .bind(prefix)
            .bind(end)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn put_audited_setting(
        &self,
        audit: &Audit,
        action: &str,
        name: &str,
        value: &[u8],
        only_if_absent: bool,
    ) -> Result<bool> {
        self.write_setting(Some((audit, action)), name, value, only_if_absent).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        Log::list(&self.pool, query).await
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64> {
        Log::prune(&self.pool, before_ms, crate::audit::PRUNE_BATCH).await
    }

    async fn create_console_account(
        &self,
        audit: &Audit,
        new: &NewAccount,
        password_hash: Option<&str>,
        role: Role,
    ) -> Result<Account> {
        let now = now_ms();
        let id = AccountId::generate((now / 1000) as u64);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row: AccountRow = sqlx::query_as(sql::INSERT_ACCOUNT)
            .bind(id.to_hex())
            .bind(&new.email)
            .bind(&new.first_name)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| sql::email_taken(map_err(e)))?;
        let account = row.into_account()?;
        let mut after = to_json(&account)?;
        after["role"] = json!(role.as_str());
        after["password"] = password_state(password_hash)["password"].clone();
        Log::record_values(&mut tx, audit, action::ACCOUNT_CREATE, Target::Account(id), None, Some(after), now).await?;
        record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(account)
    }

    async fn console_account_by_email(&self, email: &str) -> Result<Option<ConsoleAccount>> {
        const BY_EMAIL: &str = concat!(
            "SELECT ",
            account_columns!(),
            ", role, password_hash FROM accounts WHERE lower(email) = lower($1)"
        );
        self.console_account_by(BY_EMAIL, email).await
    }

    async fn console_account(&self, id: AccountId) -> Result<ConsoleAccount> {
        self.console_account_by(sql::CONSOLE_ACCOUNT, &id.to_hex()).await?.ok_or(StoreError::NotFound)
    }

    async fn set_password_hash(&self, audit: &Audit, id: AccountId, password_hash: Option<&str>) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let had: Option<Option<String>> =
            sqlx::query_scalar("SELECT password_hash FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.to_hex())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let had = had.ok_or(StoreError::NotFound)?;
        let done = sqlx::query(sql::SET_PASSWORD_HASH)
            .bind(password_hash)
            .bind(now)
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sql::found(done.rows_affected())?;
        end_sessions(&mut *tx, id).await?;
        let (before, after) = password_change(had.as_deref(), password_hash);
        Log::record_values(
            &mut tx,
            audit,
            action::ACCOUNT_PASSWORD,
            Target::Account(id),
            Some(before),
            Some(after),
            now,
        )
        .await?;
        tx.commit().await.map_err(map_err)
    }

    async fn set_role(&self, audit: &Audit, id: AccountId, role: Role) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let had: Option<String> = sqlx::query_scalar("SELECT role FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let had = had.ok_or(StoreError::NotFound)?;
        sqlx::query(sql::SET_ROLE)
            .bind(role.as_str())
            .bind(now)
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let (before, after) = (json!({ "role": had }), json!({ "role": role.as_str() }));
        Log::record_values(&mut tx, audit, action::ACCOUNT_ROLE, Target::Account(id), Some(before), Some(after), now)
            .await?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_session(&self, token_hash: &SecretHash, account: AccountId, expires_at: i64) -> Result<()> {
        sqlx::query(sql::INSERT_SESSION)
            .bind(&token_hash.as_bytes()[..])
            .bind(account.to_hex())
            .bind(now_ms())
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn session(&self, token_hash: &SecretHash, now: i64) -> Result<Option<ConsoleSession>> {
        let row: Option<SessionRow> = sqlx::query_as(sql::SESSION)
            .bind(&token_hash.as_bytes()[..])
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(SessionRow::into_session).transpose()
    }

    async fn delete_session(&self, token_hash: &SecretHash) -> Result<()> {
        sqlx::query(sql::DELETE_SESSION).bind(&token_hash.as_bytes()[..]).execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    async fn delete_sessions(&self, account: AccountId) -> Result<u64> {
        end_sessions(&self.pool, account).await
    }

    async fn prune_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(sql::PRUNE_SESSIONS).bind(now).execute(&self.pool).await.map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
