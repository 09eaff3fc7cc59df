//! Credits: setting a balance and its refill, top-ups and refunds (idempotent with a key), and
//! reading a balance. Shared by the admin API, the CLI and the console.

use keygate_auth::envelope::Resource;
use keygate_core::audit::Audit;
use keygate_core::credits::{Adjustment, CreditBalance, CreditsConfig, Refill};
use keygate_store::{Adjusted, CreditScope, StoreError, now_ms};

use crate::{Ops, OpsError, Result};

/// The longest idempotency key, in characters (Stripe's limit).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn not_found(scope: CreditScope) -> Resource {
    match scope {
        CreditScope::Credential(_) => Resource::Credential,
        CreditScope::Account(_) => Resource::Account,
    }
}

impl Ops {
    /// Sets a balance and its refill (`None`: removes the quota, so requests are not charged).
    /// Leases nodes hold are void: every node charges the new balance within the feed bound.
    pub async fn set_credits(&self, audit: &Audit, scope: CreditScope, config: Option<&CreditsConfig>) -> Result<()> {
        if let Some(c) = config {
            c.validate().map_err(|e| OpsError::Invalid(e.to_string()))?;
        }
        self.store.set_credits(audit, scope, config, now_ms()).await.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(not_found(scope)),
            e => OpsError::Store(e),
        })?;
        self.credits_changed(scope);
        Ok(())
    }

    /// Adds to (a top-up; negative: a refund) or sets a balance, once per idempotency key.
    pub async fn adjust_credits(
        &self,
        audit: &Audit,
        scope: CreditScope,
        adjustment: Adjustment,
        idempotency_key: Option<&str>,
    ) -> Result<Adjusted> {
        adjustment.validate().map_err(|e| OpsError::Invalid(e.to_string()))?;
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY || key.chars().any(|c| c.is_control()))
        {
            return Err(OpsError::Invalid(format!(
                "idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters without control characters"
            )));
        }
        self.report_spent().await?;
        let adjusted = self.store.adjust_credits(audit, scope, adjustment, idempotency_key, now_ms()).await.map_err(
            |e| match e {
                StoreError::NotFound => OpsError::NotFound(not_found(scope)),
                StoreError::Conflict(m) => OpsError::Conflict(m),
                e => OpsError::Store(e),
            },
        )?;
        if !adjusted.replayed {
            self.credits_changed(scope);
        }
        Ok(adjusted)
    }

    /// The balance now (`None`: no quota applies): exact for what this process spent (reported
    /// first), at most one flush interval behind for other nodes.
    pub async fn credit_balance(&self, scope: CreditScope) -> Result<Option<CreditBalance>> {
        self.report_spent().await?;
        self.store.credit_balance(scope, now_ms()).await.map_err(|e| match e {
            StoreError::NotFound => OpsError::NotFound(not_found(scope)),
            e => OpsError::Store(e),
        })
    }

    /// Reports what this process's authenticator has spent, so that the balance it answers with
    /// counts it.
    async fn report_spent(&self) -> Result<()> {
        if let Some(auth) = &self.auth {
            auth.credits.settle(self.store.as_ref(), false).await?;
        }
        Ok(())
    }

    fn credits_changed(&self, scope: CreditScope) {
        let (entity, id) = scope.entity();
        self.changed(entity, &id);
    }
}

/// Validates a plan's credits refill.
pub(crate) fn check_refill(refill: Option<&Refill>) -> Result<()> {
    refill.map_or(Ok(()), |r| r.validate().map_err(|e| OpsError::Invalid(e.to_string())))
}
