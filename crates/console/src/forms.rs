//! Forms applied once. A form whose effect a second sending would repeat (generate a credential,
//! rotate a key, revoke, ban, unban) carries a key made when the page was shown (the `form_key`
//! hidden field, like the credits adjustment's idempotency key). The first sending claims the key in
//! the database before it acts (an insert only if absent, so two sendings at once, on one node or
//! two, cannot both act) and records the outcome after; a replay (a refresh of the answer, a
//! double click, a retry) finds the claim and acts no more: the page says it was done already,
//! and what was done. An API key is never recorded: a replayed "generate" says which credential
//! the form made, not its key.
//!
//! The claims are rows of the store's settings table (`console.form.<key>`), whose value names
//! the account, the action and its outcome; a key sent by another account, or for another
//! action, counts as an expired form. Rows are only written for valid forms about to act, one
//! per action done, and deleted once their form can no longer be sent (two session lifetimes,
//! at least a day: a form is only accepted within the session that showed it).

use keygate_core::AccountId;
use keygate_store::now_ms;

use super::ConsoleError;
use crate::ConsoleState;

/// A fresh key for a form applied once.
pub(crate) fn new_key() -> String {
    super::credits::form_key()
}

/// What a replayed form had done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Before {
    /// Claimed but not finished: still being handled, or interrupted (nothing is done again).
    Pending,
    /// Done; what the action recorded (e.g. the clientId made).
    Done(String),
    /// It was refused or failed after its claim: nothing was done.
    Failed,
}

/// The answer of [`once`].
pub(crate) enum Applied<T> {
    /// Done now.
    Now(T),
    /// The form had been sent before: nothing was done now.
    Before(Before),
}

/// The message when a form has no usable key (a page from before keys, or a tampered one).
pub(crate) const EXPIRED: &str =
    "This form has expired. Reload the page, check what it shows, and send the form again.";

fn valid_key(key: &str) -> bool {
    key.strip_prefix("console-").is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The settings' names of form claims start with this.
const PREFIX: &str = "console.form.";

fn setting(key: &str) -> String {
    format!("{PREFIX}{key}")
}

fn value(account: AccountId, action: &str, state: &str) -> Vec<u8> {
    format!("{} {action} {state}", account.to_hex()).into_bytes()
}

/// Runs `run` once per form key: the first time it acts and its outcome (`detail` of it) is
/// recorded; a replay of the same key for the same account and action does nothing and says
/// what the first one did. `action` names the action and its target (`revoke:<clientId>`), no
/// spaces. Check the form (anything that refuses it) before: a claimed key is spent.
pub(crate) async fn once<T, F, Fut>(
    s: &ConsoleState,
    account: AccountId,
    key: &str,
    action: &str,
    run: F,
    detail: impl FnOnce(&T) -> String,
) -> Result<Applied<T>, ConsoleError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ConsoleError>>,
{
    let key = key.trim();
    if !valid_key(key) {
        return Err(ConsoleError::BadRequest(EXPIRED.into()));
    }
    debug_assert!(!action.contains(' '), "{action}");
    let store = s.ops.store();
    // A claim is needed as long as its form can be sent: a form is only accepted within the
    // session that showed it, so claims older than two session lifetimes (at least a day) go.
    let kept = s.session_ttl.saturating_mul(2).max(std::time::Duration::from_secs(86_400));
    if let Err(e) = store.prune_settings(PREFIX, now_ms().saturating_sub(kept.as_millis() as i64)).await {
        tracing::warn!(error = %e, "console: pruning old form claims failed");
    }
    let name = setting(key);
    if !store.put_setting(&name, &value(account, action, "pending"), true).await? {
        let stored = store.get_setting(&name).await?.unwrap_or_default();
        let stored = String::from_utf8_lossy(&stored);
        let prefix = format!("{} {action} ", account.to_hex());
        let Some(state) = stored.strip_prefix(&prefix) else {
            // Another account's key, or another form's: not this form.
            return Err(ConsoleError::BadRequest(EXPIRED.into()));
        };
        let before = match state.split_once(' ') {
            Some(("done", d)) => Before::Done(d.to_owned()),
            None if state == "done" => Before::Done(String::new()),
            None if state == "failed" => Before::Failed,
            _ => Before::Pending,
        };
        tracing::info!(account = %account, action, before = ?before, "console: form sent again, not applied again");
        return Ok(Applied::Before(before));
    }
    match run().await {
        Ok(t) => {
            let d = detail(&t);
            let state = if d.is_empty() { "done".to_owned() } else { format!("done {d}") };
            if let Err(e) = store.put_setting(&name, &value(account, action, &state), false).await {
                // Done, but a replay will say "still being handled": it still does nothing.
                tracing::warn!(error = %e, action, "console: a form's outcome was not recorded");
            }
            Ok(Applied::Now(t))
        }
        Err(e) => {
            if let Err(e) = store.put_setting(&name, &value(account, action, "failed"), false).await {
                tracing::warn!(error = %e, action, "console: a refused form's outcome was not recorded");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(&new_key()));
        for bad in ["", "console-", "console-xyz", "k1", &format!("console-{}", "g".repeat(32))] {
            assert!(!valid_key(bad), "{bad}");
        }
    }
}
