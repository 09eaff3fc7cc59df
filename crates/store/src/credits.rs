//! Credits: the balance transactions of both backends, written once over sqlx's generic
//! [`Database`]. What differs is said by each backend's [`Dialect`]: how a write transaction
//! begins, how a balance's row is locked, how the change feed is appended to.
//!
//! A balance is its row's `credits_remaining` (what no node holds) plus the unspent part
//! (`granted - spent`) of the leases under the row's current epoch. Every transaction that
//! changes a balance first takes its row (locked on PostgreSQL, where several nodes lease at
//! once; on SQLite the write transaction already excludes every other writer), so that it reads
//! the row and its leases as no other writer can change them, decides in memory ([`Balance`])
//! and writes the row back before it commits: no two leases take the same credits, and no credit
//! is lost or counted twice. A transaction that takes several rows takes them in one order
//! ([`CreditScope::key`]), and appends to the change feed only after it has them all (the feed's
//! lock is taken last everywhere), so that two never wait for each other.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::future::Future;
use std::marker::PhantomData;

use keygate_core::audit::Audit;
use keygate_core::credits::{
    Adjustment, CreditBalance, CreditSource, CreditsConfig, CreditsPolicy, MAX_CREDITS, Refill,
};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type};

use serde_json::json;

use crate::audit::{AuditLog, Target};
use crate::rows::{AdjustmentRow, BalanceRow, LeaseRow, LeaseScopeRow};
use crate::sql::{self, BalanceStatements};
use crate::{Adjusted, CreditLease, CreditRequest, CreditScope, CreditSettlement, Entity, Result, StoreError};

/// How long an idempotency key of an adjustment is remembered.
const ADJUSTMENT_KEYS_KEPT_MS: i64 = 30 * 86_400_000;

/// What a backend says its own way in the credits transactions.
pub(crate) trait Dialect: Database {
    /// Locks a credential's row until commit (`$1`: its id; no row: none has it), before its
    /// balance is read; `None` where the write transaction already excludes every other writer.
    const LOCK_CREDENTIAL: Option<&'static str>;
    /// The same for an account.
    const LOCK_ACCOUNT: Option<&'static str>;

    fn map_err(e: sqlx::Error) -> StoreError;

    /// Begins a transaction that writes.
    fn begin_write(pool: &Pool<Self>) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Adds each report's `spent` to the lease `holder` holds of its balance under its epoch, in
    /// place, and extends it to `expires_at` ([`sql::add_leases_spent`], in as few statements as
    /// the backend can). `reports` has one report per (scope, epoch), in
    /// [`CreditScope::key`] order, the order their rows are taken in.
    fn add_spent<'a>(
        conn: &'a mut Self::Connection,
        holder: &'a str,
        reports: &'a [CreditSettlement],
        expires_at: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Appends to the change feed.
    fn record_change<'a>(
        conn: &'a mut Self::Connection,
        entity: Entity,
        id: &'a str,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

/// A balance as a transaction reads its row, decides and writes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Balance {
    /// What no node holds; `None`: nothing stored (no quota, or a plan's not used yet).
    pub(crate) remaining: Option<i64>,
    /// The refill that applies: the own quota's, else the plan's.
    pub(crate) refill: Option<Refill>,
    /// An own quota (a credential's is always its own).
    pub(crate) own: bool,
    /// When the refill period the balance belongs to started.
    pub(crate) period_start: Option<i64>,
    pub(crate) epoch: i64,
    /// What the leases of `epoch` hold unspent.
    pub(crate) leased: i64,
    /// Whether `remaining`, `period_start` or `epoch` differ from the row's.
    pub(crate) changed: bool,
}

impl Balance {
    /// Whether requests are charged: an own quota, or a plan's refill.
    fn has_quota(&self) -> bool {
        self.own || self.refill.is_some()
    }

    fn policy(&self) -> Option<CreditsPolicy> {
        self.has_quota().then_some(CreditsPolicy { refill: self.refill, epoch: self.epoch })
    }

    /// What the database holds, not counting leases.
    fn unleased(&self) -> i64 {
        self.remaining.unwrap_or(0)
    }

    /// Brings the balance to `now`'s refill period: a balance that follows its plan and has
    /// none stored yet starts at the plan's amount; one whose period is over is refilled (set to
    /// the amount, under a new epoch: leases of the old one are void). Once per period: the
    /// period's start is recorded.
    fn roll(&mut self, now: i64) {
        let Some(refill) = self.refill.filter(|_| self.has_quota()) else { return };
        let start = refill.period_start(refill.period(now));
        if self.remaining.is_none() {
            self.remaining = Some(refill.amount);
        } else if self.period_start.is_none_or(|p| start > p) {
            self.remaining = Some(refill.amount);
            self.epoch += 1;
            self.leased = 0;
        } else {
            return;
        }
        self.period_start = Some(start);
        self.changed = true;
    }

    /// Sets what the database holds.
    fn set_unleased(&mut self, remaining: i64) {
        self.remaining = Some(remaining);
        self.changed = true;
    }

    /// Gives back the unspent part of a lease that ends, if it is of the current epoch (a void
    /// one's is not the balance's any more).
    fn give_back(&mut self, lease: &LeaseRow) -> Result<()> {
        if let Some(remaining) = self.remaining.filter(|_| lease.epoch == self.epoch) {
            let unspent = checked(lease.granted.checked_sub(lease.spent))?;
            self.set_unleased(checked(remaining.checked_add(unspent))?);
            self.leased = self.leased.saturating_sub(unspent);
        }
        Ok(())
    }

    /// The balance as the audit log records it: `{"credits": {"remaining", "refill"}}`, or
    /// `{"credits": null}` without a quota.
    fn audit_view(&self, now: i64) -> serde_json::Value {
        if !self.has_quota() {
            return json!({ "credits": null });
        }
        let view = self.view(now);
        json!({ "credits": { "remaining": view.remaining, "refill": view.refill } })
    }

    /// The balance as the admin API shows it (of a scope with a quota).
    fn view(&self, now: i64) -> CreditBalance {
        CreditBalance {
            remaining: self.unleased().saturating_add(self.leased),
            leased: self.leased,
            refill: self.refill,
            source: if self.own { CreditSource::Own } else { CreditSource::Plan },
            next_refill_at: self.refill.map(|r| r.next_refill_at(now)),
        }
    }
}

/// What a lease grants from `left`: `need`, plus up to `extra` but at most half of what is left
/// beyond `need`; nothing when `left` does not cover `need`.
fn grant(left: i64, need: i64, extra: i64) -> i64 {
    if left < need { 0 } else { need + extra.min((left - need) / 2) }
}

fn checked(n: Option<i64>) -> Result<i64> {
    n.ok_or_else(|| StoreError::Other("credits arithmetic overflowed".into()))
}

fn check_request(need: i64, extra: i64) -> Result<()> {
    if !(1..=MAX_CREDITS).contains(&need) || !(0..=MAX_CREDITS).contains(&extra) {
        return Err(invalid(format_args!("a lease needs 1 to {MAX_CREDITS} credits, plus 0 to {MAX_CREDITS}")));
    }
    Ok(())
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("invalid credits request: {what}"))
}

impl CreditScope {
    /// The audit log's action for a change of this balance.
    fn audit_action(self) -> &'static str {
        match self {
            Self::Credential(_) => keygate_core::audit::action::CREDENTIAL_CREDITS,
            Self::Account(_) => keygate_core::audit::action::ACCOUNT_CREDITS,
        }
    }

    /// How `credit_leases` and `credit_adjustments` name the kind of balance.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Credential(_) => "credential",
            Self::Account(_) => "account",
        }
    }

    pub(crate) fn id_hex(self) -> String {
        match self {
            Self::Credential(id) => id.to_hex(),
            Self::Account(id) => id.to_hex(),
        }
    }

    /// The order transactions take several balances' rows in.
    pub(crate) fn key(self) -> (&'static str, String) {
        (self.kind(), self.id_hex())
    }

    /// The same order as [`Self::key`] (an id's hex sorts as its bytes), without an allocation.
    fn order(self) -> (&'static str, [u8; 12]) {
        match self {
            Self::Credential(id) => (self.kind(), *id.as_bytes()),
            Self::Account(id) => (self.kind(), *id.as_bytes()),
        }
    }

    fn statements(self) -> &'static BalanceStatements {
        match self {
            Self::Credential(_) => &sql::CREDENTIAL_BALANCE,
            Self::Account(_) => &sql::ACCOUNT_BALANCE,
        }
    }
}

/// The credits transactions on a backend `DB`.
pub(crate) struct Credits<DB>(PhantomData<DB>);

impl<DB: Dialect> Credits<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> BalanceRow: FromRow<'r, DB::Row>,
    for<'r> LeaseRow: FromRow<'r, DB::Row>,
    for<'r> LeaseScopeRow: FromRow<'r, DB::Row>,
    for<'r> AdjustmentRow: FromRow<'r, DB::Row>,
{
    /// [`crate::Store::set_credits`].
    pub(crate) async fn set(
        pool: &Pool<DB>,
        audit: &Audit,
        scope: CreditScope,
        config: Option<&CreditsConfig>,
        now: i64,
    ) -> Result<()> {
        if let Some(c) = config {
            c.validate().map_err(invalid)?;
        }
        let refill = config.and_then(|c| c.refill);
        let mut tx = DB::begin_write(pool).await?;
        let before = Self::read(&mut tx, scope).await?.map(|mut b| {
            b.roll(now);
            b.audit_view(now)
        });
        // One statement, which takes the row (and moves the epoch): the leases are void as they are.
        let mut set = sqlx::query_scalar::<DB, i64>(scope.statements().configure)
            .bind(config.map(|c| c.remaining))
            .bind(sql::refill_json(refill.as_ref())?)
            .bind(refill.map(|r| r.period_start(r.period(now))))
            .bind(now)
            .bind(scope.id_hex());
        if let CreditScope::Account(_) = scope {
            set = set.bind(config.is_some());
        }
        set.fetch_optional(&mut *tx).await.map_err(DB::map_err)?.ok_or(StoreError::NotFound)?;
        let after = match config {
            Some(c) => json!({ "credits": { "remaining": c.remaining, "refill": c.refill } }),
            None => json!({ "credits": null }),
        };
        AuditLog::<DB>::record_values(
            &mut tx,
            audit,
            scope.audit_action(),
            Target::Credits(scope),
            before,
            Some(after),
            now,
        )
        .await?;
        Self::announce(&mut tx, scope, now).await?;
        tx.commit().await.map_err(DB::map_err)
    }

    /// [`crate::Store::adjust_credits`].
    pub(crate) async fn adjust(
        pool: &Pool<DB>,
        audit: &Audit,
        scope: CreditScope,
        adjustment: Adjustment,
        idempotency_key: Option<&str>,
        now: i64,
    ) -> Result<Adjusted> {
        adjustment.validate().map_err(invalid)?;
        let (kind, amount) = match adjustment {
            Adjustment::Add(n) => ("add", n),
            Adjustment::Set(n) => ("set", n),
        };
        let mut tx = DB::begin_write(pool).await?;
        let mut balance = Self::take(&mut tx, scope).await?.ok_or(StoreError::NotFound)?;
        if !balance.has_quota() {
            return Err(StoreError::Conflict(format!("no credits quota on this {}", scope.kind())));
        }
        if let Some(key) = idempotency_key {
            let used: Option<AdjustmentRow> = sqlx::query_as(sql::ADJUSTMENT)
                .bind(scope.kind().to_owned())
                .bind(scope.id_hex())
                .bind(key.to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(DB::map_err)?;
            match used {
                Some(used) if (used.kind.as_str(), used.amount) == (kind, amount) => {
                    // Applied before: the balance now, as `credit_balance` reads it.
                    tx.commit().await.map_err(DB::map_err)?;
                    balance.roll(now);
                    return Ok(Adjusted { balance: balance.view(now), replayed: true });
                }
                Some(_) => {
                    return Err(StoreError::Conflict(format!(
                        "idempotency key {key:?} was used for another adjustment"
                    )));
                }
                None => {
                    sqlx::query(sql::INSERT_ADJUSTMENT)
                        .bind(scope.kind().to_owned())
                        .bind(scope.id_hex())
                        .bind(key.to_owned())
                        .bind(kind.to_owned())
                        .bind(amount)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(DB::map_err)?;
                }
            }
        }
        balance.roll(now);
        let before = balance.audit_view(now);
        match adjustment {
            Adjustment::Add(n) => {
                let sum = checked(balance.unleased().checked_add(n))?;
                if !(-MAX_CREDITS..=MAX_CREDITS).contains(&sum) {
                    return Err(StoreError::Conflict(format!(
                        "the balance would leave the range -{MAX_CREDITS} to {MAX_CREDITS}"
                    )));
                }
                balance.set_unleased(sum);
            }
            Adjustment::Set(n) => {
                // Leases taken before are void: what they hold is not the new balance's.
                balance.set_unleased(n);
                balance.epoch += 1;
                balance.leased = 0;
            }
        }
        Self::write(&mut tx, scope, &balance).await?;
        let mut after = balance.audit_view(now);
        after["credits"][kind] = json!(amount);
        if let Some(key) = idempotency_key {
            after["credits"]["idempotencyKey"] = json!(key);
        }
        AuditLog::<DB>::record_values(
            &mut tx,
            audit,
            scope.audit_action(),
            Target::Credits(scope),
            Some(before),
            Some(after),
            now,
        )
        .await?;
        Self::announce(&mut tx, scope, now).await?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok(Adjusted { balance: balance.view(now), replayed: false })
    }

    /// [`crate::Store::credit_balance`]: one statement, so a consistent reading without a lock.
    pub(crate) async fn balance(pool: &Pool<DB>, scope: CreditScope, now: i64) -> Result<Option<CreditBalance>> {
        let mut conn = pool.acquire().await.map_err(DB::map_err)?;
        let mut balance = Self::read(&mut conn, scope).await?.ok_or(StoreError::NotFound)?;
        balance.roll(now);
        Ok(balance.has_quota().then(|| balance.view(now)))
    }

    /// [`crate::Store::lease_credits`].
    pub(crate) async fn lease(
        pool: &Pool<DB>,
        holder: &str,
        scope: CreditScope,
        need: i64,
        extra: i64,
        now: i64,
        ttl: i64,
    ) -> Result<CreditLease> {
        check_request(need, extra)?;
        let mut tx = DB::begin_write(pool).await?;
        let lease = Self::lease_in(&mut tx, holder, scope, need, extra, now, ttl).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok(lease)
    }

    /// [`crate::Store::lease_credits_many`]: every lease in one transaction, the balances locked
    /// in one order (scope, id) whatever the order asked in, so that two batches cannot deadlock.
    pub(crate) async fn lease_many(
        pool: &Pool<DB>,
        holder: &str,
        requests: &[CreditRequest],
        now: i64,
        ttl: i64,
    ) -> Result<Vec<Option<CreditLease>>> {
        for r in requests {
            check_request(r.need, r.extra)?;
        }
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| requests[i].scope.key());
        let mut out = vec![None; requests.len()];
        if requests.is_empty() {
            return Ok(out);
        }
        let mut tx = DB::begin_write(pool).await?;
        for i in order {
            let r = &requests[i];
            out[i] = Self::lease_in(&mut tx, holder, r.scope, r.need, r.extra, now, ttl).await?;
        }
        tx.commit().await.map_err(DB::map_err)?;
        Ok(out)
    }

    /// One lease inside a write transaction (`None`: no such credential or account).
    async fn lease_in(
        tx: &mut DB::Connection,
        holder: &str,
        scope: CreditScope,
        need: i64,
        extra: i64,
        now: i64,
        ttl: i64,
    ) -> Result<Option<CreditLease>> {
        let Some(mut balance) = Self::take(tx, scope).await? else { return Ok(None) };
        // Nodes that stopped renewing their leases give them back first.
        for lease in Self::take_expired(tx, scope, now).await? {
            balance.give_back(&lease)?;
        }
        balance.roll(now);
        let Some(policy) = balance.policy() else {
            Self::write(tx, scope, &balance).await?;
            return Ok(Some(CreditLease { granted: 0, policy: None, unleased: 0 }));
        };
        let granted = grant(balance.unleased(), need, extra);
        if granted > 0 {
            balance.set_unleased(balance.unleased() - granted);
        }
        let held = Self::holder_lease(tx, scope, holder).await?;
        let expires_at = now.saturating_add(ttl);
        match held {
            Some(held) if held.epoch == balance.epoch => {
                checked(held.granted.checked_add(granted))?;
                Self::add_to_lease(tx, sql::ADD_LEASE_GRANT, scope, holder, balance.epoch, granted, expires_at).await?;
            }
            // A lease of an older epoch is void: replaced, its unspent part not given back.
            Some(_) => {
                let lease = LeaseRow { epoch: balance.epoch, granted, spent: 0 };
                Self::put_lease(tx, scope, holder, &lease, expires_at).await?;
            }
            None if granted > 0 => {
                let lease = LeaseRow { epoch: balance.epoch, granted, spent: 0 };
                Self::put_lease(tx, scope, holder, &lease, expires_at).await?;
            }
            None => {}
        }
        Self::write(tx, scope, &balance).await?;
        Ok(Some(CreditLease { granted, policy: Some(policy), unleased: balance.unleased() }))
    }

    /// [`crate::Store::settle_credits`].
    pub(crate) async fn settle(
        pool: &Pool<DB>,
        holder: &str,
        batch: &[CreditSettlement],
        now: i64,
        ttl: i64,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // A report that gives nothing back touches its lease row alone, adding in place (all of
        // them in a statement or a few); the give-backs take their balance's row, once each, all
        // in one order, before anything is written (settlements of one balance keep their order).
        let (reports, releases): (Vec<&CreditSettlement>, Vec<&CreditSettlement>) =
            batch.iter().partition(|s| !s.release);
        // Rows taken in one order (as the leases take them): two transactions cannot deadlock.
        // Reports of one lease (one balance, one epoch) are added up first: one row each.
        let mut sorted: Vec<CreditSettlement> = reports.into_iter().copied().collect();
        sorted.sort_by_key(|s| (s.scope.order(), s.epoch));
        let mut reports: Vec<CreditSettlement> = Vec::with_capacity(sorted.len());
        for s in sorted {
            match reports.last_mut() {
                Some(last) if (last.scope, last.epoch) == (s.scope, s.epoch) => {
                    last.spent = checked(last.spent.checked_add(s.spent))?;
                }
                _ => reports.push(s),
            }
        }
        let mut tx = DB::begin_write(pool).await?;
        let expires_at = now.saturating_add(ttl);
        if !reports.is_empty() {
            DB::add_spent(&mut tx, holder, &reports, expires_at).await?;
        }
        let mut order: Vec<&CreditSettlement> = releases;
        order.sort_by_key(|s| s.scope.key());
        let mut balances: BTreeMap<(&'static str, String), (CreditScope, Option<Balance>)> = BTreeMap::new();
        for s in &order {
            if let Entry::Vacant(vacant) = balances.entry(s.scope.key()) {
                vacant.insert((s.scope, Self::take(&mut tx, s.scope).await?));
            }
        }
        let mut announce = Vec::new();
        // Only a give-back changes a balance's row: the others are left unwritten.
        let mut changed: Vec<(&'static str, String)> = Vec::new();
        for s in order {
            let Some((_, Some(balance))) = balances.get_mut(&s.scope.key()) else { continue };
            let Some(mut lease) = Self::holder_lease(&mut tx, s.scope, holder).await?.filter(|l| l.epoch == s.epoch)
            else {
                continue;
            };
            lease.spent = checked(lease.spent.checked_add(s.spent))?;
            if s.release {
                changed.push(s.scope.key());
                let before = balance.unleased();
                balance.give_back(&lease)?;
                if before <= 0 && balance.unleased() > 0 && !announce.contains(&s.scope) {
                    announce.push(s.scope);
                }
                sqlx::query(sql::DELETE_LEASE)
                    .bind(s.scope.kind().to_owned())
                    .bind(s.scope.id_hex())
                    .bind(holder.to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(DB::map_err)?;
            } else {
                Self::put_lease(&mut tx, s.scope, holder, &lease, now.saturating_add(ttl)).await?;
            }
        }
        for (key, (scope, balance)) in &balances {
            if let Some(balance) = balance
                && changed.contains(key)
            {
                Self::write(&mut tx, *scope, balance).await?;
            }
        }
        for scope in announce {
            Self::announce(&mut tx, scope, now).await?;
        }
        tx.commit().await.map_err(DB::map_err)
    }

    /// [`crate::Store::reclaim_credit_leases`]; also forgets idempotency keys older than 30 days.
    pub(crate) async fn reclaim(pool: &Pool<DB>, now: i64) -> Result<u64> {
        let mut tx = DB::begin_write(pool).await?;
        let rows: Vec<LeaseScopeRow> =
            sqlx::query_as(sql::EXPIRED_LEASE_SCOPES).bind(now).fetch_all(&mut *tx).await.map_err(DB::map_err)?;
        let mut scopes = rows.into_iter().map(LeaseScopeRow::into_scope).collect::<Result<Vec<_>>>()?;
        scopes.sort_by_key(|s| s.key());
        scopes.dedup();
        let (mut reclaimed, mut announce) = (0, Vec::new());
        for scope in scopes {
            // Taken again under the row's lock: a node may have renewed or ended them meanwhile.
            let mut balance = Self::take(&mut tx, scope).await?;
            let expired = Self::take_expired(&mut tx, scope, now).await?;
            reclaimed += expired.len() as u64;
            if let Some(balance) = balance.as_mut() {
                let before = balance.unleased();
                for lease in &expired {
                    balance.give_back(lease)?;
                }
                Self::write(&mut tx, scope, balance).await?;
                if before <= 0 && balance.unleased() > 0 {
                    announce.push(scope);
                }
            }
        }
        for scope in announce {
            Self::announce(&mut tx, scope, now).await?;
        }
        sqlx::query(sql::PRUNE_ADJUSTMENTS)
            .bind(now.saturating_sub(ADJUSTMENT_KEYS_KEPT_MS))
            .execute(&mut *tx)
            .await
            .map_err(DB::map_err)?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok(reclaimed)
    }

    /// Takes a balance's row for the transaction (locked where the backend needs it) and reads
    /// it; `None`: no such credential or account.
    async fn take(conn: &mut DB::Connection, scope: CreditScope) -> Result<Option<Balance>> {
        let lock = match scope {
            CreditScope::Credential(_) => DB::LOCK_CREDENTIAL,
            CreditScope::Account(_) => DB::LOCK_ACCOUNT,
        };
        if let Some(lock) = lock {
            // A statement of its own: the reading after it sees every write committed before.
            let row = sqlx::query(lock).bind(scope.id_hex()).fetch_optional(&mut *conn).await.map_err(DB::map_err)?;
            if row.is_none() {
                return Ok(None);
            }
        }
        Self::read(conn, scope).await
    }

    async fn read(conn: &mut DB::Connection, scope: CreditScope) -> Result<Option<Balance>> {
        let row: Option<BalanceRow> = sqlx::query_as(scope.statements().read)
            .bind(scope.id_hex())
            .fetch_optional(&mut *conn)
            .await
            .map_err(DB::map_err)?;
        row.map(BalanceRow::into_balance).transpose()
    }

    /// Writes what the transaction decided, if anything.
    async fn write(conn: &mut DB::Connection, scope: CreditScope, balance: &Balance) -> Result<()> {
        if balance.changed {
            sqlx::query(scope.statements().write)
                .bind(balance.remaining)
                .bind(balance.period_start)
                .bind(balance.epoch)
                .bind(scope.id_hex())
                .execute(&mut *conn)
                .await
                .map_err(DB::map_err)?;
        }
        Ok(())
    }

    /// Ends the balance's leases expired at `now`, returning them.
    async fn take_expired(conn: &mut DB::Connection, scope: CreditScope, now: i64) -> Result<Vec<LeaseRow>> {
        sqlx::query_as(sql::TAKE_EXPIRED_LEASES)
            .bind(scope.kind().to_owned())
            .bind(scope.id_hex())
            .bind(now)
            .fetch_all(&mut *conn)
            .await
            .map_err(DB::map_err)
    }

    async fn holder_lease(conn: &mut DB::Connection, scope: CreditScope, holder: &str) -> Result<Option<LeaseRow>> {
        sqlx::query_as(sql::LEASE)
            .bind(scope.kind().to_owned())
            .bind(scope.id_hex())
            .bind(holder.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(DB::map_err)
    }

    /// An in-place addition to a lease row ([`sql::ADD_LEASE_GRANT`]).
    async fn add_to_lease(
        conn: &mut DB::Connection,
        statement: &'static str,
        scope: CreditScope,
        holder: &str,
        epoch: i64,
        amount: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(statement)
            .bind(scope.kind().to_owned())
            .bind(scope.id_hex())
            .bind(holder.to_owned())
            .bind(epoch)
            .bind(amount)
            .bind(expires_at)
            .execute(&mut *conn)
            .await
            .map_err(DB::map_err)?;
        Ok(())
    }

    async fn put_lease(
        conn: &mut DB::Connection,
        scope: CreditScope,
        holder: &str,
        lease: &LeaseRow,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(sql::PUT_LEASE)
            .bind(scope.kind().to_owned())
            .bind(scope.id_hex())
            .bind(holder.to_owned())
            .bind(lease.epoch)
            .bind(lease.granted)
            .bind(lease.spent)
            .bind(expires_at)
            .execute(&mut *conn)
            .await
            .map_err(DB::map_err)?;
        Ok(())
    }

    /// Appends the balance's change-feed entry (its credential or account).
    async fn announce(conn: &mut DB::Connection, scope: CreditScope, now: i64) -> Result<()> {
        let (entity, id) = scope.entity();
        DB::record_change(conn, entity, &id, now).await
    }
}

#[cfg(test)]
mod tests {
    use keygate_core::credits::Interval;

    use super::*;

    const DAY: i64 = 86_400_000;

    fn balance(remaining: Option<i64>, refill: Option<Refill>, own: bool, period_start: Option<i64>) -> Balance {
        Balance { remaining, refill, own, period_start, epoch: 3, leased: 7, changed: false }
    }

    #[test]
    fn orders_scopes_as_their_keys_without_allocating() {
        use keygate_core::{AccountId, ClientId};
        let mut scopes: Vec<CreditScope> = (0..64u64)
            .flat_map(|i| {
                [CreditScope::Credential(ClientId::generate(i * 977)), CreditScope::Account(AccountId::generate(i))]
            })
            .collect();
        scopes.sort_by_key(|s| s.order());
        let mut by_key = scopes.clone();
        by_key.sort_by_key(|s| s.key());
        assert_eq!(scopes, by_key);
    }

    #[test]
    fn grants_need_and_half_of_the_rest_at_most() {
        assert_eq!(grant(0, 1, 3), 0);
        assert_eq!(grant(4, 5, 3), 0);
        assert_eq!(grant(1, 1, 3), 1);
        assert_eq!(grant(2, 1, 3), 1);
        assert_eq!(grant(3, 1, 3), 2);
        assert_eq!(grant(100, 1, 3), 4);
        assert_eq!(grant(100, 10, 0), 10);
        assert_eq!(grant(-5, 1, 3), 0);
        assert_eq!(grant(MAX_CREDITS, MAX_CREDITS, MAX_CREDITS), MAX_CREDITS);
    }

    #[test]
    fn refills_once_per_period() {
        let daily = Refill { interval: Interval::Daily, amount: 10, refill_day: None };
        let mut b = balance(Some(2), Some(daily), true, Some(100 * DAY));
        b.roll(100 * DAY + 5);
        assert!(!b.changed, "same period");
        b.roll(101 * DAY);
        assert_eq!((b.remaining, b.epoch, b.leased, b.period_start), (Some(10), 4, 0, Some(101 * DAY)));
        b.remaining = Some(1);
        b.roll(101 * DAY + 1);
        assert_eq!((b.remaining, b.epoch), (Some(1), 4), "once");
        // A plan's balance not stored yet starts at the amount, under its epoch.
        let mut b = balance(None, Some(daily), false, None);
        b.roll(5 * DAY);
        assert_eq!((b.remaining, b.epoch, b.period_start, b.changed), (Some(10), 3, Some(5 * DAY), true));
        // No refill, or no quota: nothing moves.
        let mut b = balance(Some(2), None, true, None);
        b.roll(5 * DAY);
        assert!(!b.changed);
        let mut b = balance(Some(2), None, false, Some(0));
        b.roll(5 * DAY);
        assert_eq!((b.changed, b.policy()), (false, None));
    }

    #[test]
    fn gives_back_only_current_leases() {
        let mut b = balance(Some(-2), None, true, None);
        b.give_back(&LeaseRow { epoch: 2, granted: 5, spent: 1 }).unwrap();
        assert_eq!((b.remaining, b.changed), (Some(-2), false), "void");
        b.give_back(&LeaseRow { epoch: 3, granted: 5, spent: 1 }).unwrap();
        assert_eq!((b.remaining, b.leased), (Some(2), 3));
        let view = b.view(0);
        assert_eq!((view.remaining, view.leased, view.source), (5, 3, CreditSource::Own));
    }
}
