//! The shared backend for clusters: several keygate nodes (and the CLI) on one PostgreSQL.
//! Change-feed entries are appended under a transaction-level advisory lock, so they become
//! visible in `seq` order (a follower never sees seq N+1 before N is committed), and announced
//! with `NOTIFY keygate_changes` at commit so followers need not wait for their next poll.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::decide::{AccountState, CredentialState};
use keygate_core::model::{Account, AccountStatus, Credential, CredentialStatus, SecretGeneration};
use keygate_core::{AccountId, ClientId, SecretHash};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::{
    AccountEvent, Change, ConsoleAccount, ConsoleSession, DailyUsage, Entity, NewAccount, Result, Role, SigningKey,
    Store, StoreError, UsageDelta, now_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel followers LISTEN on; the payload is the new entry's seq.
pub const CHANNEL: &str = "keygate_changes";
/// Serialises change-feed appends (any constant unlikely to clash with an application's own).
const FEED_LOCK: i64 = 0x6b65_7967_6174_6501;

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

fn bundle_from_row(r: &PgRow) -> Result<crate::AuthBundle> {
    let client_id = parse_id(r.get::<&str, _>("client_id"))?;
    let account_id = parse_id(r.get::<&str, _>("account_id"))?;
    Ok(crate::AuthBundle {
        generation: r.get::<i32, _>("presented") as u32,
        credential: CredentialState {
            client_id,
            account_id,
            status: CredentialStatus::parse(r.get("status"))
                .ok_or_else(|| StoreError::Other("bad credential status".into()))?,
            generations: crate::parse_generations(r.get::<Option<&str>, _>("gens"))?,
        },
        account: AccountState {
            id: account_id,
            uid: r.get("uid"),
            email: r.get("email"),
            first_name: r.get("first_name"),
            status: AccountStatus::parse(r.get("account_status"))
                .ok_or_else(|| StoreError::Other("bad account status".into()))?,
        },
    })
}

fn parse_id<T: FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| StoreError::Other(format!("malformed id in database: {s:?}")))
}

fn account_from_row(r: &PgRow) -> Result<Account> {
    Ok(Account {
        id: parse_id(r.get::<&str, _>("id"))?,
        uid: r.get("uid"),
        email: r.get("email"),
        first_name: r.get("first_name"),
        status: AccountStatus::parse(r.get("status")).ok_or_else(|| StoreError::Other("bad account status".into()))?,
        ban_reason: r.get("ban_reason"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn credential_from_row(r: &PgRow, live_generations: Vec<SecretGeneration>) -> Result<Credential> {
    Ok(Credential {
        client_id: parse_id(r.get::<&str, _>("client_id"))?,
        account_id: parse_id(r.get::<&str, _>("account_id"))?,
        status: CredentialStatus::parse(r.get("status"))
            .ok_or_else(|| StoreError::Other("bad credential status".into()))?,
        generation: r.get::<i32, _>("generation") as u32,
        hint: r.get("hint"),
        live_generations,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        revoked_at: r.get("revoked_at"),
        last_used_at: r.get("last_used_at"),
    })
}

async fn record_change(tx: &mut Transaction<'_, Postgres>, entity: Entity, id: &str, now: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FEED_LOCK).execute(&mut **tx).await.map_err(map_err)?;
    let seq: i64 = sqlx::query_scalar("INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3) RETURNING seq")
        .bind(entity.as_str())
        .bind(id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_err)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(seq.to_string())
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn live_generations(conn: &mut PgConnection, client_id: ClientId, now: i64) -> Result<Vec<SecretGeneration>> {
    let rows = sqlx::query(
        "SELECT generation, expires_at FROM credential_secrets \
         WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY generation DESC",
    )
    .bind(client_id.to_hex())
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| SecretGeneration { generation: r.get::<i32, _>("generation") as u32, expires_at: r.get("expires_at") })
        .collect())
}

async fn credential_in(conn: &mut PgConnection, client_id: ClientId, now: i64) -> Result<Credential> {
    let r = sqlx::query(
        "SELECT client_id, account_id, status, generation, hint, created_at, updated_at, revoked_at, last_used_at \
         FROM credentials WHERE client_id = $1",
    )
    .bind(client_id.to_hex())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?;
    let live = live_generations(conn, client_id, now).await?;
    credential_from_row(&r, live)
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
    pub async fn open(url: &str, migrate: bool) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad PostgreSQL URL: {e}")))?
            .application_name("keygate");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        let store = Self { pool };
        if migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies migrations; sqlx holds an advisory lock meanwhile, so nodes starting together
    /// take turns and all but the first find nothing to do.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

    async fn create_account(&self, new: &NewAccount) -> Result<Account> {
        self.create_console_account(new, None, Role::Customer).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Account> {
        let row = sqlx::query(
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at FROM accounts WHERE id = $1",
        )
        .bind(id.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        account_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_accounts(&self, query: Option<&str>, limit: u32, after_uid: Option<i64>) -> Result<Vec<Account>> {
        let pattern = query.map(|q| {
            let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = sqlx::query(
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at FROM accounts \
             WHERE uid > $1 AND ($2::text IS NULL OR lower(email) LIKE $2 OR id LIKE $2) \
             ORDER BY uid LIMIT $3",
        )
        .bind(after_uid.unwrap_or(0))
        .bind(&pattern)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn set_account_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Account> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let ban_reason = if status == AccountStatus::Banned { reason } else { None };
        let row = sqlx::query(
            "UPDATE accounts SET status = $1, ban_reason = $2, updated_at = $3 WHERE id = $4 \
             RETURNING id, uid, email, first_name, status, ban_reason, created_at, updated_at",
        )
        .bind(status.as_str())
        .bind(ban_reason)
        .bind(now)
        .bind(id.to_hex())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let kind = match status {
            AccountStatus::Banned => "banned",
            AccountStatus::Active => "unbanned",
        };
        sqlx::query("INSERT INTO account_events (account_id, kind, reason, actor, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_hex())
            .bind(kind)
            .bind(reason)
            .bind(actor)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if status == AccountStatus::Banned {
            // A banned account's console sessions end with the ban.
            sqlx::query("DELETE FROM console_sessions WHERE account_id = $1")
                .bind(id.to_hex())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(map_err)?;
        account_from_row(&row)
    }

    async fn account_events(&self, id: AccountId) -> Result<Vec<AccountEvent>> {
        let rows = sqlx::query("SELECT kind, reason, actor, at FROM account_events WHERE account_id = $1 ORDER BY id")
            .bind(id.to_hex())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| AccountEvent {
                kind: r.get("kind"),
                reason: r.get("reason"),
                actor: r.get("actor"),
                at: r.get("at"),
            })
            .collect())
    }

    async fn create_credential(
        &self,
        account: AccountId,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
    ) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
            .bind(account.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO credentials (client_id, account_id, status, generation, hint, created_at, updated_at) \
             VALUES ($1, $2, 'active', 1, $3, $4, $4)",
        )
        .bind(client_id.to_hex())
        .bind(account.to_hex())
        .bind(hint)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO credential_secrets (hash, client_id, generation, created_at) VALUES ($1, $2, 1, $3)")
            .bind(&secret.as_bytes()[..])
            .bind(client_id.to_hex())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = credential_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cred)
    }

    async fn get_credential(&self, client_id: ClientId) -> Result<Credential> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        credential_in(&mut conn, client_id, now_ms()).await
    }

    async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>> {
        let now = now_ms();
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT client_id FROM credentials WHERE account_id = $1 ORDER BY created_at, client_id",
        )
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

    async fn revoke_credential(&self, client_id: ClientId) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE credentials SET status = 'revoked', revoked_at = COALESCE(revoked_at, $1), updated_at = $1 \
             WHERE client_id = $2",
        )
        .bind(now)
        .bind(client_id.to_hex())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM credential_secrets WHERE client_id = $1")
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = credential_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cred)
    }

    async fn rotate_credential(
        &self,
        client_id: ClientId,
        secret: &SecretHash,
        hint: &str,
        old_expires_at: Option<i64>,
    ) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query("SELECT status, generation FROM credentials WHERE client_id = $1 FOR UPDATE")
            .bind(client_id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        if row.get::<&str, _>("status") != "active" {
            return Err(StoreError::Conflict("a revoked credential cannot be rotated".into()));
        }
        let next = row.get::<i32, _>("generation") + 1;
        match old_expires_at.filter(|t| *t > now) {
            Some(until) => sqlx::query(
                "UPDATE credential_secrets SET expires_at = LEAST(COALESCE(expires_at, $1), $1) WHERE client_id = $2",
            )
            .bind(until)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
            None => sqlx::query("DELETE FROM credential_secrets WHERE client_id = $1")
                .bind(client_id.to_hex())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?,
        };
        sqlx::query("DELETE FROM credential_secrets WHERE client_id = $1 AND expires_at <= $2")
            .bind(client_id.to_hex())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("INSERT INTO credential_secrets (hash, client_id, generation, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&secret.as_bytes()[..])
            .bind(client_id.to_hex())
            .bind(next)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("UPDATE credentials SET generation = $1, hint = $2, updated_at = $3 WHERE client_id = $4")
            .bind(next)
            .bind(hint)
            .bind(now)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = credential_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cred)
    }

    async fn record_usage(&self, batch: &[UsageDelta]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut client_ids = Vec::with_capacity(batch.len());
        let mut days = Vec::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        let mut last_used = Vec::with_capacity(batch.len());
        for d in batch {
            client_ids.push(d.client_id.to_hex());
            days.push(d.day as i32);
            requests.push(d.requests as i64);
            last_used.push(d.last_used_at);
        }
        // One statement for the whole batch, so all or nothing without an explicit transaction.
        // A credential may have been deleted meanwhile: its rows are skipped (its usage goes with
        // it). Rows are summed per (client_id, day) first, since ON CONFLICT cannot update a row
        // twice in one statement (the server sends each pair once, but nothing forbids repeats);
        // a client_id on several days (around midnight) keeps its newest last_used_at.
        sqlx::query(
            "WITH batch AS ( \
                 SELECT b.client_id, b.day, b.requests, b.last_used_at \
                   FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::int8[]) AS b (client_id, day, requests, last_used_at) \
                  WHERE EXISTS (SELECT 1 FROM credentials c WHERE c.client_id = b.client_id) \
             ), counted AS ( \
                 INSERT INTO credential_usage (client_id, day, requests) \
                 SELECT client_id, day, SUM(requests)::int8 FROM batch GROUP BY client_id, day \
                 ON CONFLICT (client_id, day) DO UPDATE SET requests = credential_usage.requests + excluded.requests \
             ) \
             UPDATE credentials c SET last_used_at = GREATEST(COALESCE(c.last_used_at, 0), newest.last_used_at) \
               FROM (SELECT client_id, MAX(last_used_at) AS last_used_at FROM batch GROUP BY client_id) AS newest \
              WHERE c.client_id = newest.client_id",
        )
        .bind(client_ids)
        .bind(days)
        .bind(requests)
        .bind(last_used)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn usage(&self, client_id: ClientId, since_day: i64) -> Result<Vec<DailyUsage>> {
        let rows =
            sqlx::query("SELECT day, requests FROM credential_usage WHERE client_id = $1 AND day >= $2 ORDER BY day")
                .bind(client_id.to_hex())
                .bind(since_day as i32)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| DailyUsage { day: r.get::<i32, _>("day") as i64, requests: r.get::<i64, _>("requests") as u64 })
            .collect())
    }

    async fn find_secret(&self, hash: &SecretHash) -> Result<Option<(ClientId, u32)>> {
        let row = sqlx::query("SELECT client_id, generation FROM credential_secrets WHERE hash = $1")
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| Ok((parse_id(r.get::<&str, _>("client_id"))?, r.get::<i32, _>("generation") as u32))).transpose()
    }

    async fn auth_bundle(&self, hash: &SecretHash) -> Result<Option<crate::AuthBundle>> {
        let row = sqlx::query(
            "SELECT s.generation AS presented, c.client_id, c.account_id, c.status, \
                    a.uid, a.email, a.first_name, a.status AS account_status, \
                    (SELECT string_agg(g.generation || ':' || COALESCE(g.expires_at::text, ''), ',') \
                       FROM credential_secrets g \
                      WHERE g.client_id = c.client_id AND (g.expires_at IS NULL OR g.expires_at > $2)) AS gens \
               FROM credential_secrets s \
               JOIN credentials c ON c.client_id = s.client_id \
               JOIN accounts a ON a.id = c.account_id \
              WHERE s.hash = $1",
        )
        .bind(&hash.as_bytes()[..])
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| bundle_from_row(&r)).transpose()
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        let rows = sqlx::query("SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    seq: r.get("seq"),
                    entity: Entity::parse(r.get("entity"))
                        .ok_or_else(|| StoreError::Other("bad change entity".into()))?,
                    entity_id: r.get("entity_id"),
                })
            })
            .collect()
    }

    async fn last_change_seq(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM changes")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn prune_changes(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM changes WHERE at < $1 AND seq < (SELECT MAX(seq) FROM changes)")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows = sqlx::query("SELECT kid, created_at, retired_at FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| SigningKey { kid: r.get("kid"), created_at: r.get("created_at"), retired_at: r.get("retired_at") })
            .collect())
    }

    async fn add_signing_key(&self, kid: &str) -> Result<SigningKey> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("INSERT INTO signing_keys (kid, created_at) VALUES ($1, $2)")
            .bind(kid)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::SigningKey, kid, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(SigningKey { kid: kid.to_owned(), created_at: now, retired_at: None })
    }

    async fn retire_signing_key(&self, kid: &str) -> Result<SigningKey> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1) WHERE kid = $2 \
             RETURNING kid, created_at, retired_at",
        )
        .bind(now)
        .bind(kid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        record_change(&mut tx, Entity::SigningKey, kid, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(SigningKey { kid: row.get("kid"), created_at: row.get("created_at"), retired_at: row.get("retired_at") })
    }

    async fn change_listener(&self) -> Result<Option<Box<dyn crate::ChangeListener>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await.map_err(map_err)?;
        listener.listen(CHANNEL).await.map_err(map_err)?;
        Ok(Some(Box::new(Listener(listener))))
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn put_setting(&self, name: &str, value: &[u8], only_if_absent: bool) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = if only_if_absent {
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        };
        let done = sqlx::query(sql).bind(name).bind(value).bind(now).execute(&mut *tx).await.map_err(map_err)?;
        if done.rows_affected() > 0 {
            record_change(&mut tx, Entity::Setting, name, now).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_console_account(
        &self,
        new: &NewAccount,
        password_hash: Option<&str>,
        role: Role,
    ) -> Result<Account> {
        let now = now_ms();
        let id = AccountId::generate((now / 1000) as u64);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query(
            "INSERT INTO accounts (id, email, first_name, status, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $6) \
             RETURNING id, uid, email, first_name, status, ban_reason, created_at, updated_at",
        )
        .bind(id.to_hex())
        .bind(&new.email)
        .bind(&new.first_name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("an account with this email already exists".into()),
            e => e,
        })?;
        let account = account_from_row(&row)?;
        record_change(&mut tx, Entity::Account, &id.to_hex(), now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(account)
    }

    async fn console_account_by_email(&self, email: &str) -> Result<Option<ConsoleAccount>> {
        let row = sqlx::query(
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at, role, password_hash \
             FROM accounts WHERE lower(email) = lower($1)",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(console_account_from_row).transpose()
    }

    async fn console_account(&self, id: AccountId) -> Result<ConsoleAccount> {
        let row = sqlx::query(
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at, role, password_hash \
             FROM accounts WHERE id = $1",
        )
        .bind(id.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        console_account_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn set_password_hash(&self, id: AccountId, password_hash: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query("UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now_ms())
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM console_sessions WHERE account_id = $1")
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn set_role(&self, id: AccountId, role: Role) -> Result<()> {
        let done = sqlx::query("UPDATE accounts SET role = $1, updated_at = $2 WHERE id = $3")
            .bind(role.as_str())
            .bind(now_ms())
            .bind(id.to_hex())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_session(&self, token_hash: &SecretHash, account: AccountId, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
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
        let row = sqlx::query(
            "SELECT a.id, a.uid, a.email, a.first_name, a.status, a.ban_reason, a.created_at, a.updated_at, a.role, \
             s.created_at AS session_created_at, s.expires_at AS session_expires_at \
             FROM console_sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(&token_hash.as_bytes()[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| {
            Ok(ConsoleSession {
                account: account_from_row(&r)?,
                role: parse_role(r.get("role"))?,
                created_at: r.get("session_created_at"),
                expires_at: r.get("session_expires_at"),
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token_hash: &SecretHash) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(&token_hash.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_sessions(&self, account: AccountId) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE account_id = $1")
            .bind(account.to_hex())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn prune_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| StoreError::Other("bad account role".into()))
}

fn console_account_from_row(r: &PgRow) -> Result<ConsoleAccount> {
    Ok(ConsoleAccount {
        account: account_from_row(r)?,
        role: parse_role(r.get("role"))?,
        password_hash: r.get("password_hash"),
    })
}
