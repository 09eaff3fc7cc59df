//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so an acknowledged
//! write survives `kill -9` and power loss. Writers use `BEGIN IMMEDIATE` and a busy timeout, so
//! a server and CLI processes can write the same file at once without "database is locked".

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::decide::{AccountState, CredentialState};
use keygate_core::model::{Account, AccountStatus, Credential, CredentialStatus, SecretGeneration};
use keygate_core::{AccountId, ClientId, SecretHash};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::{
    AccountEvent, Change, ConsoleAccount, ConsoleSession, DailyUsage, Entity, NewAccount, Result, Role, SigningKey,
    Store, StoreError, UsageDelta, now_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Usage deltas per statement in [`Store::record_usage`]: at most 3 bound values each, far below
/// SQLite's limit of 32,766 per statement, and one round trip to the connection's worker thread
/// for many rows.
const USAGE_CHUNK: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file (none for in-memory databases).
    path: Option<std::path::PathBuf>,
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Other(e.to_string()),
    }
}

fn account_from_row(r: &SqliteRow) -> Result<Account> {
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

fn bundle_from_row(r: &SqliteRow) -> Result<crate::AuthBundle> {
    let client_id = parse_id(r.get::<&str, _>("client_id"))?;
    let account_id = parse_id(r.get::<&str, _>("account_id"))?;
    Ok(crate::AuthBundle {
        generation: r.get::<i64, _>("presented") as u32,
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

/// An exclusive lock on `<db>-lock`, held until the returned file is dropped. (Not a lock on the
/// database file itself: closing another descriptor of it would drop SQLite's own POSIX locks.)
async fn lock_file(db: &std::path::Path) -> Result<std::fs::File> {
    let mut name = db.to_path_buf().into_os_string();
    name.push("-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StoreError::Other(format!("cannot open lock file {name:?}: {e}")))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
        .map_err(|e| StoreError::Other(format!("cannot take lock {name:?}: {e}")))
}

fn parse_id<T: FromStr>(s: &str) -> Result<T> {
    s.parse().map_err(|_| StoreError::Other(format!("malformed id in database: {s:?}")))
}

async fn record_change(tx: &mut Transaction<'_, Sqlite>, entity: Entity, id: &str, now: i64) -> Result<()> {
    sqlx::query("INSERT INTO changes (entity, entity_id, at) VALUES (?, ?, ?)")
        .bind(entity.as_str())
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH` or `sqlite::memory:`).
    pub async fn open(url: &str, migrate: bool) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let path = (!opts.get_filename().as_os_str().is_empty() && !url.contains(":memory:"))
            .then(|| opts.get_filename().to_path_buf());
        // Creating the file and switching it to WAL need an exclusive lock that SQLite's busy
        // timeout does not always wait for: processes opening a new database together take turns.
        let _guard = match (&path, migrate) {
            (Some(db), true) => Some(lock_file(db).await?),
            _ => None,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(map_err)?;
        let store = Self { pool, path };
        if migrate {
            store.run_migrations().await?;
        }
        Ok(store)
    }

    /// Applies migrations. sqlx takes no lock for SQLite, so processes opening a new database
    /// at once (a server and a CLI command) would both apply them; an exclusive lock on a
    /// `<db>-lock` file beside the database makes them take turns.
    pub async fn migrate(&self) -> Result<()> {
        let _guard = match &self.path {
            Some(db) => Some(lock_file(db).await?),
            None => None,
        };
        self.run_migrations().await
    }

    async fn run_migrations(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
    }

    async fn credential_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        client_id: ClientId,
        now: i64,
    ) -> Result<Credential> {
        let r = sqlx::query(
            "SELECT client_id, account_id, status, generation, hint, created_at, updated_at, revoked_at, last_used_at \
             FROM credentials WHERE client_id = ?",
        )
        .bind(client_id.to_hex())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let live = live_generations(conn, client_id, now).await?;
        credential_from_row(&r, live)
    }
}

fn credential_from_row(r: &SqliteRow, live_generations: Vec<SecretGeneration>) -> Result<Credential> {
    Ok(Credential {
        client_id: parse_id(r.get::<&str, _>("client_id"))?,
        account_id: parse_id(r.get::<&str, _>("account_id"))?,
        status: CredentialStatus::parse(r.get("status"))
            .ok_or_else(|| StoreError::Other("bad credential status".into()))?,
        generation: r.get::<i64, _>("generation") as u32,
        hint: r.get("hint"),
        live_generations,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        revoked_at: r.get("revoked_at"),
        last_used_at: r.get("last_used_at"),
    })
}

async fn live_generations(
    conn: &mut sqlx::SqliteConnection,
    client_id: ClientId,
    now: i64,
) -> Result<Vec<SecretGeneration>> {
    let rows = sqlx::query(
        "SELECT generation, expires_at FROM credential_secrets \
         WHERE client_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY generation DESC",
    )
    .bind(client_id.to_hex())
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| SecretGeneration { generation: r.get::<i64, _>("generation") as u32, expires_at: r.get("expires_at") })
        .collect())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    async fn create_account(&self, new: &NewAccount) -> Result<Account> {
        self.create_console_account(new, None, Role::Customer).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Account> {
        let sql =
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at FROM accounts WHERE id = ?";
        let row = sqlx::query(sql).bind(id.to_hex()).fetch_optional(&self.pool).await.map_err(map_err)?;
        account_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_accounts(&self, query: Option<&str>, limit: u32, after_uid: Option<i64>) -> Result<Vec<Account>> {
        let pattern = query.map(|q| {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = sqlx::query(
            "SELECT id, uid, email, first_name, status, ban_reason, created_at, updated_at FROM accounts \
             WHERE uid > ? AND (? IS NULL OR email LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\') \
             ORDER BY uid LIMIT ?",
        )
        .bind(after_uid.unwrap_or(0))
        .bind(&pattern)
        .bind(&pattern)
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
        let mut tx = self.write_tx().await?;
        let ban_reason = if status == AccountStatus::Banned { reason } else { None };
        let row = sqlx::query(
            "UPDATE accounts SET status = ?, ban_reason = ?, updated_at = ? WHERE id = ? \
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
        sqlx::query("INSERT INTO account_events (account_id, kind, reason, actor, at) VALUES (?, ?, ?, ?, ?)")
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
            sqlx::query("DELETE FROM console_sessions WHERE account_id = ?")
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
        let rows = sqlx::query("SELECT kind, reason, actor, at FROM account_events WHERE account_id = ? ORDER BY id")
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
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = ?")
            .bind(account.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO credentials (client_id, account_id, status, generation, hint, created_at, updated_at) \
             VALUES (?, ?, 'active', 1, ?, ?, ?)",
        )
        .bind(client_id.to_hex())
        .bind(account.to_hex())
        .bind(hint)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO credential_secrets (hash, client_id, generation, created_at) VALUES (?, ?, 1, ?)")
            .bind(&secret.as_bytes()[..])
            .bind(client_id.to_hex())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = self.credential_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cred)
    }

    async fn get_credential(&self, client_id: ClientId) -> Result<Credential> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        self.credential_in(&mut conn, client_id, now_ms()).await
    }

    async fn list_credentials(&self, account: AccountId) -> Result<Vec<Credential>> {
        let now = now_ms();
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT client_id FROM credentials WHERE account_id = ? ORDER BY created_at, client_id")
                .bind(account.to_hex())
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.credential_in(&mut conn, parse_id(&id)?, now).await?);
        }
        Ok(out)
    }

    async fn revoke_credential(&self, client_id: ClientId) -> Result<Credential> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE credentials SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?), updated_at = ? WHERE client_id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(client_id.to_hex())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // A revoked credential keeps no secret: nothing left to match.
        sqlx::query("DELETE FROM credential_secrets WHERE client_id = ?")
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = self.credential_in(&mut tx, client_id, now).await?;
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
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT status, generation FROM credentials WHERE client_id = ?")
            .bind(client_id.to_hex())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        if row.get::<&str, _>("status") != "active" {
            return Err(StoreError::Conflict("a revoked credential cannot be rotated".into()));
        }
        let next = row.get::<i64, _>("generation") + 1;
        match old_expires_at.filter(|t| *t > now) {
            // Older generations keep working until the grace ends (never longer than they had).
            Some(until) => sqlx::query(
                "UPDATE credential_secrets SET expires_at = MIN(COALESCE(expires_at, ?1), ?1) WHERE client_id = ?2",
            )
            .bind(until)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?,
            None => sqlx::query("DELETE FROM credential_secrets WHERE client_id = ?")
                .bind(client_id.to_hex())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?,
        };
        // Expired generations are dead weight: drop them while we are here.
        sqlx::query("DELETE FROM credential_secrets WHERE client_id = ? AND expires_at <= ?")
            .bind(client_id.to_hex())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("INSERT INTO credential_secrets (hash, client_id, generation, created_at) VALUES (?, ?, ?, ?)")
            .bind(&secret.as_bytes()[..])
            .bind(client_id.to_hex())
            .bind(next)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("UPDATE credentials SET generation = ?, hint = ?, updated_at = ? WHERE client_id = ?")
            .bind(next)
            .bind(hint)
            .bind(now)
            .bind(client_id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        record_change(&mut tx, Entity::Credential, &client_id.to_hex(), now).await?;
        let cred = self.credential_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cred)
    }

    async fn record_usage(&self, batch: &[UsageDelta]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Two statements per chunk of rows, all in one transaction. A credential may have been
        // deleted meanwhile: its rows are skipped (its usage goes with it). A (client_id, day)
        // given twice counts both; a client_id on several days (around midnight) keeps its newest
        // last_used_at.
        let mut tx = self.write_tx().await?;
        for chunk in batch.chunks(USAGE_CHUNK) {
            // Full chunks share one statement, kept prepared; a batch's tail may have any length.
            let persistent = chunk.len() == USAGE_CHUNK;
            let mut counts = QueryBuilder::<Sqlite>::new("WITH batch (client_id, day, requests) AS (");
            counts.push_values(chunk, |mut row, d| {
                row.push_bind(d.client_id.to_hex()).push_bind(d.day).push_bind(d.requests as i64);
            });
            counts.push(
                ") INSERT INTO credential_usage (client_id, day, requests) \
                 SELECT client_id, day, SUM(requests) FROM batch \
                 WHERE EXISTS (SELECT 1 FROM credentials c WHERE c.client_id = batch.client_id) \
                 GROUP BY client_id, day \
                 ON CONFLICT (client_id, day) DO UPDATE SET requests = requests + excluded.requests",
            );
            counts.build().persistent(persistent).execute(&mut *tx).await.map_err(map_err)?;
            let mut last_used = QueryBuilder::<Sqlite>::new("WITH batch (client_id, last_used_at) AS (");
            last_used.push_values(chunk, |mut row, d| {
                row.push_bind(d.client_id.to_hex()).push_bind(d.last_used_at);
            });
            last_used.push(
                ") UPDATE credentials \
                 SET last_used_at = MAX(COALESCE(credentials.last_used_at, 0), newest.last_used_at) \
                 FROM (SELECT client_id, MAX(last_used_at) AS last_used_at FROM batch GROUP BY client_id) AS newest \
                 WHERE credentials.client_id = newest.client_id",
            );
            last_used.build().persistent(persistent).execute(&mut *tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn usage(&self, client_id: ClientId, since_day: i64) -> Result<Vec<DailyUsage>> {
        let rows =
            sqlx::query("SELECT day, requests FROM credential_usage WHERE client_id = ? AND day >= ? ORDER BY day")
                .bind(client_id.to_hex())
                .bind(since_day)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| DailyUsage { day: r.get("day"), requests: r.get::<i64, _>("requests") as u64 })
            .collect())
    }

    async fn find_secret(&self, hash: &SecretHash) -> Result<Option<(ClientId, u32)>> {
        let row = sqlx::query("SELECT client_id, generation FROM credential_secrets WHERE hash = ?")
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| Ok((parse_id(r.get::<&str, _>("client_id"))?, r.get::<i64, _>("generation") as u32))).transpose()
    }

    async fn auth_bundle(&self, hash: &SecretHash) -> Result<Option<crate::AuthBundle>> {
        let row = sqlx::query(
            "SELECT s.generation AS presented, c.client_id, c.account_id, c.status, \
                    a.uid, a.email, a.first_name, a.status AS account_status, \
                    (SELECT group_concat(g.generation || ':' || COALESCE(g.expires_at, ''), ',') \
                       FROM credential_secrets g \
                      WHERE g.client_id = c.client_id AND (g.expires_at IS NULL OR g.expires_at > ?2)) AS gens \
               FROM credential_secrets s \
               JOIN credentials c ON c.client_id = s.client_id \
               JOIN accounts a ON a.id = c.account_id \
              WHERE s.hash = ?1",
        )
        .bind(&hash.as_bytes()[..])
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| bundle_from_row(&r)).transpose()
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        let rows = sqlx::query("SELECT seq, entity, entity_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
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
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes").fetch_one(&self.pool).await.map_err(map_err)
    }

    async fn prune_changes(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM changes WHERE at < ? AND seq < (SELECT MAX(seq) FROM changes)")
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
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO signing_keys (kid, created_at) VALUES (?, ?)")
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
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE signing_keys SET retired_at = COALESCE(retired_at, ?) WHERE kid = ? RETURNING kid, created_at, retired_at",
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

    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn put_setting(&self, name: &str, value: &[u8], only_if_absent: bool) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let sql = if only_if_absent {
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) \
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
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO accounts (id, email, first_name, status, password_hash, role, created_at, updated_at) \
             VALUES (?, ?, ?, 'active', ?, ?, ?, ?) RETURNING id, uid, email, first_name, status, ban_reason, created_at, updated_at",
        )
        .bind(id.to_hex())
        .bind(&new.email)
        .bind(&new.first_name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now)
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
             FROM accounts WHERE email = ? COLLATE NOCASE",
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
             FROM accounts WHERE id = ?",
        )
        .bind(id.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        console_account_from_row(&row.ok_or(StoreError::NotFound)?)
    }

    async fn set_password_hash(&self, id: AccountId, password_hash: Option<&str>) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(password_hash)
            .bind(now)
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM console_sessions WHERE account_id = ?")
            .bind(id.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn set_role(&self, id: AccountId, role: Role) -> Result<()> {
        let done = sqlx::query("UPDATE accounts SET role = ?, updated_at = ? WHERE id = ?")
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
            "INSERT INTO console_sessions (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
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
             WHERE s.token_hash = ? AND s.expires_at > ?",
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
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = ?")
            .bind(&token_hash.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_sessions(&self, account: AccountId) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE account_id = ?")
            .bind(account.to_hex())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn prune_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?")
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

fn console_account_from_row(r: &SqliteRow) -> Result<ConsoleAccount> {
    Ok(ConsoleAccount {
        account: account_from_row(r)?,
        role: parse_role(r.get("role"))?,
        password_hash: r.get("password_hash"),
    })
}
