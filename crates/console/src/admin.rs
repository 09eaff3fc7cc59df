//! Operator pages, `/console/admin/...`: search and list accounts, an account's credentials and
//! history (its bans, and its latest audit log entries; the audit page is `audit`'s), ban and unban with a reason, revoke any credential; plans (list, create or replace,
//! delete; their rate limits and credits refill), an account's plan and own rate limits, a
//! credential's own rate limits; an account's and a credential's credits (a balance and its
//! refill, removed, or adjusted: a top-up, a refund or a new balance, applied once per form
//! thanks to an idempotency key made when the form is shown); any credential's settings (name,
//! expiry, enabled, permissions, roles among the existing ones, IP allowlist) and an account's
//! IP allowlist. Ban, unban and revoke are applied once per form (`forms`). Only operator accounts get in
//! (customers get 403); the actions go through the same [`keygate_ops::Ops`] as the admin API,
//! with `console:<operator email>` as the actor in the account's history. A refused limit or
//! credits form answers 400 (409 for a conflicting adjustment) with the form again, as it was
//! typed, and the reason; nothing is written.

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_core::credits::{CreditBalance, CreditsConfig};
use keygate_core::model::{AccountStatus, CredentialStatus};
use keygate_core::ratelimit::{self, EffectiveLimit};
use keygate_core::{AccountId, ClientId};
use keygate_ops::OpsError;
use keygate_store::{AccountEvent, CreditScope, now_ms};
use serde::Deserialize;

use super::audit::{self, AuditRow};
use super::credits::{self, CreditsBlock, Holder};
use super::forms::{self, Applied, Before};
use super::keys::{self, SettingsForm, SettingsView, Typed};
use super::limits::{self, LimitRow, Reader};
use super::pages::{CredentialRow, KeyForm, NoFields, RevokePage};
use super::session::{Operator, Post, User};
use super::{ConsoleError, Nav, capitalise, fmt_time, render};
use crate::ConsoleState;

const PAGE: u32 = 50;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/console/admin/accounts") }))
        .route("/admin/accounts", get(accounts))
        .route("/admin/accounts/{id}", get(account))
        .route("/admin/accounts/{id}/ban", post(ban))
        .route("/admin/accounts/{id}/unban", post(unban))
        .route("/admin/accounts/{id}/limits", post(set_account_limits))
        .route("/admin/accounts/{id}/credits", post(set_account_credits))
        .route("/admin/accounts/{id}/credits/remove", post(remove_account_credits))
        .route("/admin/accounts/{id}/credits/adjust", post(adjust_account_credits))
        .route("/admin/accounts/{id}/allowlist", post(set_account_allowlist))
        .route("/admin/credentials/{client_id}/revoke", get(revoke_confirm).post(revoke))
        .route("/admin/credentials/{client_id}/limits", post(set_credential_limits))
        .route("/admin/credentials/{client_id}/settings", post(set_credential_settings))
        .route("/admin/credentials/{client_id}/credits", post(set_credential_credits))
        .route("/admin/credentials/{client_id}/credits/remove", post(remove_credential_credits))
        .route("/admin/credentials/{client_id}/credits/adjust", post(adjust_credential_credits))
        .route("/admin/plans", get(plans).post(put_plan))
        .route("/admin/plans/{name}/delete", post(delete_plan))
}

struct AccountRow {
    id: String,
    uid: i64,
    email: String,
    first_name: String,
    banned: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_accounts.html")]
struct AccountsPage {
    nav: Nav,
    q: String,
    rows: Vec<AccountRow>,
    /// The `after` of the next page, when there is one.
    next: Option<String>,
    paged: bool,
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    after: Option<String>,
}

async fn accounts(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(q) = query.map_err(|_| ConsoleError::BadRequest("The search could not be read.".into()))?;
    let text = q.q.trim();
    let list = s.ops.list_accounts(Some(text), Some(PAGE), q.after.as_deref()).await?;
    let next = list.next;
    let rows = list
        .items
        .iter()
        .map(|a| AccountRow {
            id: a.id.to_hex(),
            uid: a.uid,
            email: a.email.clone(),
            first_name: a.first_name.clone(),
            banned: a.status == AccountStatus::Banned,
            created: fmt_time(a.created_at),
        })
        .collect();
    let page =
        AccountsPage { nav: Nav::of(&user, "accounts"), q: text.to_owned(), rows, next, paged: q.after.is_some() };
    Ok(render(StatusCode::OK, &page))
}

struct EventRow {
    kind: String,
    reason: Option<String>,
    actor: String,
    at: String,
}

/// A plan to pick in an account's form.
struct PlanOption {
    name: String,
    selected: bool,
}

/// A credential's own limits and their form on the account page.
struct CredentialLimits {
    client_id: String,
    hint: String,
    /// Its own limits, one per line (or as typed, after a refused form).
    lines: String,
    error: Option<String>,
    /// What its requests count against, and where from.
    limits: Vec<LimitRow>,
    /// Its own credits and their forms.
    credits: CreditsBlock,
    /// Its settings (name, expiry, enabled, permissions, roles, allowlist) and their form.
    settings: SettingsView,
    form: SettingsForm,
}

#[derive(Template)]
#[template(path = "admin_account.html")]
struct AccountPage {
    nav: Nav,
    id: String,
    uid: i64,
    email: String,
    first_name: String,
    role: &'static str,
    has_password: bool,
    banned: bool,
    ban_reason: Option<String>,
    created: String,
    own: bool,
    credentials: Vec<CredentialRow>,
    events: Vec<EventRow>,
    /// The latest entries of the audit log about the account and its credentials, newest first.
    history: Vec<AuditRow>,
    /// Whether older entries exist (the full log, filtered by the account, has them).
    history_more: bool,
    /// The plan the account is on.
    plan: Option<String>,
    /// What the account's requests count against, and where from.
    limits: Vec<LimitRow>,
    plans: Vec<PlanOption>,
    /// The account's own limits, one per line (or as typed, after a refused form).
    own_lines: String,
    limits_error: Option<String>,
    credential_limits: Vec<CredentialLimits>,
    syntax: &'static str,
    /// The account's credits (its own, or its plan's) and their forms.
    credits: CreditsBlock,
    refill_syntax: &'static str,
    /// The networks the account's keys may be used from (empty: anywhere), the form's lines (or
    /// as typed, after a refused form), why it was refused, whether it was just saved.
    allowlist: Vec<String>,
    allowlist_lines: String,
    allowlist_error: Option<String>,
    allowlist_saved: bool,
    /// The ban and unban forms' keys.
    form_key: String,
    /// What a replayed ban, unban or revoke form did, when it had not finished or was refused.
    replayed: Option<&'static str>,
}

/// A limit form that was refused: shown again as typed, with the reason.
enum Refused {
    None,
    /// The account's form: the plan picked, the lines typed, why.
    Account {
        plan: String,
        lines: String,
        error: String,
    },
    /// A credential's form.
    Credential {
        client_id: ClientId,
        lines: String,
        error: String,
    },
    /// A credential's settings form, as typed.
    Settings {
        client_id: ClientId,
        typed: Typed,
        error: String,
    },
    /// The account's allowlist form.
    Allowlist {
        lines: String,
        error: String,
    },
    /// A credits form of the account or of one of its credentials.
    Credits {
        scope: CreditScope,
        form: CreditsTyped,
        error: String,
        status: StatusCode,
    },
}

/// What a refused credits form held.
enum CreditsTyped {
    Set { remaining: String, refill: String },
    Adjust { op_set: bool, amount: String },
}

impl Refused {
    fn status(&self) -> StatusCode {
        match self {
            Self::None => StatusCode::OK,
            Self::Credits { status, .. } => *status,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// What the previous credits form did, said in its block.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CreditsDone {
    Saved,
    Removed,
    Adjusted,
    Replayed,
}

impl CreditsDone {
    fn message(self) -> &'static str {
        match self {
            Self::Saved => "Balance saved.",
            Self::Removed => "Balance removed.",
            Self::Adjusted => "Adjustment applied.",
            Self::Replayed => "This form had already been sent: the adjustment was applied once, not again.",
        }
    }
}

#[derive(Deserialize)]
struct AccountQuery {
    credits: Option<CreditsDone>,
    /// Whose credits: "account" or a clientId of the account's.
    of: Option<String>,
    /// What was saved: "allowlist", or a clientId (its settings).
    saved: Option<String>,
    /// A replayed form that had not finished ("pending") or was refused ("failed").
    form: Option<String>,
}

/// What the previous form did, said on the account page.
#[derive(Default)]
struct Notice {
    /// A credits form: what, and to whose credits ("account" or a clientId).
    credits: Option<(CreditsDone, String)>,
    saved: Option<String>,
    replayed: Option<&'static str>,
}

fn account_id(id: &str) -> Result<AccountId, ConsoleError> {
    id.parse().map_err(|_| ConsoleError::NotFound)
}

async fn account(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    // A notice that cannot be read is left out: the page is what was asked for.
    let notice = match query {
        Ok(Query(q)) => Notice {
            credits: q.credits.zip(q.of),
            saved: q.saved,
            replayed: super::pages::form_notice(q.form.as_deref().filter(|f| *f != "again")),
        },
        Err(_) => Notice::default(),
    };
    account_page(&s, &user, account_id(&id)?, Refused::None, notice).await
}

/// The account page; 400 with the refused form, if any, shown again; `notice`: what the previous
/// form did.
async fn account_page(
    s: &ConsoleState,
    user: &User,
    id: AccountId,
    refused: Refused,
    notice: Notice,
) -> Result<Response, ConsoleError> {
    let done = notice.credits;
    let store = s.ops.store();
    let ca = store.console_account(id).await?;
    let events: Vec<AccountEvent> = store.account_events(id).await?;
    // One more than shown: whether the full log has older entries.
    let mut history = s.ops.account_history(id, audit::PAGE + 1).await?;
    let history_more = history.len() > audit::PAGE as usize;
    history.truncate(audit::PAGE as usize);
    let credentials = s.ops.list_credentials(id).await?;
    let a = &ca.account;
    let effective = s.ops.account_limits(a).await?;
    let shared = limits::shared(&effective);
    let mut plans: Vec<String> = s.ops.list_plans().await?.into_iter().map(|p| p.name).collect();
    if let Some(p) = a.plan.as_ref().filter(|p| !plans.contains(p)) {
        plans.push(p.clone());
    }
    let (allowlist_lines, allowlist_error) = match &refused {
        Refused::Allowlist { lines, error } => (lines.clone(), Some(error.clone())),
        _ => (keys::allowlist_lines(&a.ip_allowlist), None),
    };
    let (picked, own_lines, limits_error) = match &refused {
        Refused::Account { plan, lines, error } => (plan.clone(), lines.clone(), Some(error.clone())),
        _ => (a.plan.clone().unwrap_or_default(), limits::to_lines(&a.ratelimits), None),
    };
    // Each block of credits: as it is now, with a refused form shown again and a notice.
    let block =
        |scope: CreditScope, key: String, action: String, balance: Option<&CreditBalance>, holder: Holder<'_>| {
            let mut b = CreditsBlock::new(key, action, balance, holder);
            if let Refused::Credits { scope: refused_scope, form, error, .. } = &refused
                && *refused_scope == scope
            {
                match form {
                    CreditsTyped::Set { remaining, refill } => {
                        (b.remaining, b.refill, b.set_error) = (remaining.clone(), refill.clone(), Some(error.clone()));
                    }
                    CreditsTyped::Adjust { op_set, amount } => {
                        (b.op_set, b.amount, b.adjust_error) = (*op_set, amount.clone(), Some(error.clone()));
                    }
                }
            }
            b.notice = done.as_ref().filter(|(_, of)| *of == b.key).map(|(d, _)| d.message());
            b
        };
    let account_balance = s.ops.credit_balance(CreditScope::Account(id)).await?;
    let credits = block(
        CreditScope::Account(id),
        "account".into(),
        format!("/console/admin/accounts/{}/credits", id.to_hex()),
        account_balance.as_ref(),
        Holder::Account(a.plan.as_deref()),
    );
    let roles = s.ops.list_roles().await?;
    let now = now_ms();
    let mut credential_limits = Vec::new();
    for c in credentials.iter().filter(|c| c.status == CredentialStatus::Active) {
        let (lines, error) = match &refused {
            Refused::Credential { client_id, lines, error } if *client_id == c.client_id => {
                (lines.clone(), Some(error.clone()))
            }
            _ => (limits::to_lines(&c.ratelimits), None),
        };
        let balance = s.ops.credit_balance(CreditScope::Credential(c.client_id)).await?;
        let client_id = c.client_id.to_hex();
        let mut form =
            SettingsForm::new(c, format!("/console/admin/credentials/{client_id}/settings"), Some(roles.as_slice()));
        if let Refused::Settings { client_id: refused_id, typed, error } = &refused
            && *refused_id == c.client_id
        {
            form = form.refused(typed, error.clone());
        }
        form.saved = notice.saved.as_deref() == Some(client_id.as_str());
        credential_limits.push(CredentialLimits {
            settings: SettingsView::of(c, now),
            form,
            credits: block(
                CreditScope::Credential(c.client_id),
                client_id.clone(),
                format!("/console/admin/credentials/{client_id}/credits"),
                balance.as_ref(),
                Holder::Credential,
            ),
            client_id,
            hint: c.hint.clone(),
            lines,
            error,
            limits: LimitRow::all(&EffectiveLimit::for_credential(&c.ratelimits, &shared), Reader::Operator),
        });
    }
    let page = AccountPage {
        nav: Nav::of(user, "accounts"),
        id: a.id.to_hex(),
        uid: a.uid,
        email: a.email.clone(),
        first_name: a.first_name.clone(),
        role: ca.role.as_str(),
        has_password: ca.password_hash.is_some(),
        banned: a.status == AccountStatus::Banned,
        ban_reason: a.ban_reason.clone(),
        created: fmt_time(a.created_at),
        own: a.id == user.account.id,
        credentials: credentials.iter().map(|c| CredentialRow::of(c, a.status == AccountStatus::Banned)).collect(),
        events: events
            .into_iter()
            .rev()
            .map(|e| EventRow { kind: e.kind, reason: e.reason, actor: e.actor, at: fmt_time(e.at) })
            .collect(),
        history: audit::rows(&history, Reader::Operator),
        history_more,
        plan: a.plan.clone(),
        limits: LimitRow::all(&effective, Reader::Operator),
        plans: plans.into_iter().map(|name| PlanOption { selected: name == picked, name }).collect(),
        own_lines,
        limits_error,
        credential_limits,
        syntax: limits::SYNTAX,
        credits,
        refill_syntax: credits::REFILL_SYNTAX,
        allowlist: SettingsView::allowlist_of(&a.ip_allowlist),
        allowlist_lines,
        allowlist_error,
        allowlist_saved: notice.saved.as_deref() == Some("allowlist"),
        form_key: forms::new_key(),
        replayed: notice.replayed,
    };
    Ok(render(refused.status(), &page))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
    /// Made when the form was shown: sent twice, it is applied (and written in the history) once.
    #[serde(default)]
    form_key: String,
}

/// Back to the account page, with the notice of a replay that had not finished.
fn to_account(id: AccountId, before: Option<Before>) -> Redirect {
    let form = match before {
        Some(Before::Pending) => "?form=pending",
        Some(Before::Failed) => "?form=failed",
        _ => "",
    };
    Redirect::to(&format!("/console/admin/accounts/{}{form}", id.to_hex()))
}

async fn ban(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<ReasonForm>,
) -> Result<Redirect, ConsoleError> {
    post.user.require_operator()?;
    let id = account_id(&id)?;
    if id == post.user.account.id {
        return Err(ConsoleError::BadRequest("You cannot ban your own account.".into()));
    }
    let reason = post.form.reason.trim();
    if reason.is_empty() {
        return Err(ConsoleError::BadRequest("A ban needs a reason: it is kept in the account's history.".into()));
    }
    let run = || async { Ok(s.ops.ban(&post.user.audit(), id, Some(reason)).await?) };
    let action = format!("ban:{}", id.to_hex());
    if let Applied::Before(b) =
        forms::once(&s, post.user.account.id, &post.form.form_key, &action, run, |_| String::new()).await?
    {
        return Ok(to_account(id, Some(b)));
    }
    tracing::info!(operator = %post.user.account.id, account = %id, "console: account banned");
    Ok(to_account(id, None))
}

async fn unban(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<ReasonForm>,
) -> Result<Redirect, ConsoleError> {
    post.user.require_operator()?;
    let id = account_id(&id)?;
    let reason = post.form.reason.trim();
    let run = || async { Ok(s.ops.unban(&post.user.audit(), id, Some(reason)).await?) };
    let action = format!("unban:{}", id.to_hex());
    if let Applied::Before(b) =
        forms::once(&s, post.user.account.id, &post.form.form_key, &action, run, |_| String::new()).await?
    {
        return Ok(to_account(id, Some(b)));
    }
    tracing::info!(operator = %post.user.account.id, account = %id, "console: account unbanned");
    Ok(to_account(id, None))
}

async fn revoke_confirm(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.get_credential(id).await?;
    let owner = s.ops.store().get_account(c.account_id).await?;
    let back = format!("/console/admin/accounts/{}", c.account_id.to_hex());
    if c.status != CredentialStatus::Active {
        return Ok(Redirect::to(&back).into_response());
    }
    let page = RevokePage {
        nav: Nav::of(&user, "accounts"),
        c: CredentialRow::of(&c, owner.status == AccountStatus::Banned),
        owner: Some(owner.email),
        action: format!("/console/admin/credentials/{}/revoke", id.to_hex()),
        cancel: back,
        form_key: forms::new_key(),
    };
    Ok(render(StatusCode::OK, &page))
}

async fn revoke(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<KeyForm>,
) -> Result<Redirect, ConsoleError> {
    post.user.require_operator()?;
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.get_credential(id).await?;
    let back = |form: &str| Redirect::to(&format!("/console/admin/accounts/{}{form}", c.account_id.to_hex()));
    if let Err(form) = super::pages::revoke_once(&s, &post.user, &c, &post.form.form_key).await? {
        return Ok(back(&format!("?form={form}")));
    }
    tracing::info!(operator = %post.user.account.id, client_id = %id, "console: credential revoked by an operator");
    Ok(back(""))
}

/// Changes a credential's name, expiry, enabled, permissions, roles and allowlist (one change:
/// all or nothing).
async fn set_credential_settings(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.get_credential(id).await?;
    if c.status != CredentialStatus::Active {
        return Err(ConsoleError::BadRequest("This credential is revoked: its settings no longer matter.".into()));
    }
    let typed = Typed::from_fields(&post.form);
    let refused = |typed: Typed, m: String| Refused::Settings { client_id: id, typed, error: capitalise(&m) };
    let change = match typed.change(&c, true, now_ms()) {
        Ok(change) => change,
        Err(m) => return account_page(&s, &post.user, c.account_id, refused(typed, m), Notice::default()).await,
    };
    match s.ops.update_credential(&post.user.audit(), id, change).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => {
            return account_page(&s, &post.user, c.account_id, refused(typed, m), Notice::default()).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, client_id = %id, "console: credential settings saved by an operator");
    let to =
        format!("/console/admin/accounts/{}?saved={}#settings-{}", c.account_id.to_hex(), id.to_hex(), id.to_hex());
    Ok(Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
struct AllowlistForm {
    #[serde(default)]
    allowlist: String,
}

/// Replaces the networks an account's keys may be used from (empty: anywhere).
async fn set_account_allowlist(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<AllowlistForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let id = account_id(&id)?;
    let refused = |m: String| Refused::Allowlist { lines: post.form.allowlist.clone(), error: capitalise(&m) };
    let list = match keys::parse_allowlist(&post.form.allowlist) {
        Ok(list) => list,
        Err(m) => return account_page(&s, &post.user, id, refused(m), Notice::default()).await,
    };
    let n = list.len();
    match s.ops.set_account_ip_allowlist(&post.user.audit(), id, list).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => return account_page(&s, &post.user, id, refused(m), Notice::default()).await,
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, account = %id, networks = n, "console: account allowlist set");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}?saved=allowlist#allowlist", id.to_hex())).into_response())
}

// ---- Rate limits and plans ----------------------------------------------------------------------

#[derive(Deserialize)]
struct AccountLimitsForm {
    /// The plan's name; empty: none.
    #[serde(default)]
    plan: String,
    /// The account's own limits, one per line.
    #[serde(default)]
    ratelimits: String,
}

/// Saves an account's plan and own limits together (both replaced).
async fn set_account_limits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<AccountLimitsForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let id = account_id(&id)?;
    let plan = post.form.plan.trim();
    let refused = |error: String| Refused::Account {
        plan: plan.to_owned(),
        lines: post.form.ratelimits.clone(),
        error: capitalise(&error),
    };
    let set = match limits::parse_lines(&post.form.ratelimits) {
        Ok(set) => set,
        Err(m) => return account_page(&s, &post.user, id, refused(m), Notice::default()).await,
    };
    let picked = (!plan.is_empty()).then_some(plan);
    match s.ops.update_account_limits(&post.user.audit(), id, Some(&set), Some(picked)).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => return account_page(&s, &post.user, id, refused(m), Notice::default()).await,
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, account = %id, plan = ?picked, limits = set.len(), "console: account rate limits set");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", id.to_hex())).into_response())
}

#[derive(Deserialize)]
struct LimitsForm {
    #[serde(default)]
    ratelimits: String,
}

/// Replaces a credential's own limits (empty: none).
async fn set_credential_limits(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<LimitsForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.get_credential(id).await?;
    let refused = |error: String| Refused::Credential {
        client_id: id,
        lines: post.form.ratelimits.clone(),
        error: capitalise(&error),
    };
    let set = match limits::parse_lines(&post.form.ratelimits) {
        Ok(set) => set,
        Err(m) => return account_page(&s, &post.user, c.account_id, refused(m), Notice::default()).await,
    };
    match s.ops.set_credential_ratelimits(&post.user.audit(), id, &set).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => {
            return account_page(&s, &post.user, c.account_id, refused(m), Notice::default()).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, client_id = %id, limits = set.len(), "console: credential rate limits set");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", c.account_id.to_hex())).into_response())
}

// ---- Credits ------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreditsForm {
    /// The balance now.
    #[serde(default)]
    remaining: String,
    /// `daily:AMOUNT` or `monthly:AMOUNT[:DAY]`; empty: not refilled.
    #[serde(default)]
    refill: String,
}

#[derive(Deserialize)]
struct AdjustForm {
    /// "add" (negative: a refund) or "set".
    #[serde(default)]
    op: String,
    #[serde(default)]
    amount: String,
    /// Made when the form was shown: the same form sent again is applied once.
    #[serde(default)]
    idempotency_key: String,
}

fn client_id(id: &str) -> Result<ClientId, ConsoleError> {
    id.parse().map_err(|_| ConsoleError::NotFound)
}

/// The account whose page shows a balance's forms, and the block's key there (404: unknown; a
/// revoked credential's credits are not edited).
async fn credits_page(s: &ConsoleState, scope: CreditScope) -> Result<(AccountId, String), ConsoleError> {
    match scope {
        CreditScope::Account(id) => {
            s.ops.store().get_account(id).await?;
            Ok((id, "account".into()))
        }
        CreditScope::Credential(id) => {
            let c = s.ops.get_credential(id).await?;
            if c.status != CredentialStatus::Active {
                return Err(ConsoleError::BadRequest(
                    "This credential is revoked: its credits no longer matter.".into(),
                ));
            }
            Ok((c.account_id, id.to_hex()))
        }
    }
}

/// Back to the account page, at the block, saying what was done.
fn credits_done(account: AccountId, key: &str, done: &str) -> Response {
    let anchor = if key == "account" { "credits".to_owned() } else { format!("credits-{key}") };
    Redirect::to(&format!("/console/admin/accounts/{}?credits={done}&of={key}#{anchor}", account.to_hex()))
        .into_response()
}

async fn set_account_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<CreditsForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    set_credits(&s, CreditScope::Account(account_id(&id)?), post).await
}

async fn set_credential_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<CreditsForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    set_credits(&s, CreditScope::Credential(client_id(&id)?), post).await
}

/// Sets a balance and its refill (both replaced).
async fn set_credits(s: &ConsoleState, scope: CreditScope, post: Post<CreditsForm>) -> Result<Response, ConsoleError> {
    let (account, key) = credits_page(s, scope).await?;
    let form = &post.form;
    let refused = |error: String| Refused::Credits {
        scope,
        form: CreditsTyped::Set { remaining: form.remaining.clone(), refill: form.refill.clone() },
        error: capitalise(&error),
        status: StatusCode::BAD_REQUEST,
    };
    let config = match credits::parse_balance(&form.remaining)
        .and_then(|remaining| Ok(CreditsConfig { remaining, refill: credits::parse_refill(&form.refill)? }))
    {
        Ok(c) => c,
        Err(m) => return account_page(s, &post.user, account, refused(m), Notice::default()).await,
    };
    match s.ops.set_credits(&post.user.audit(), scope, Some(&config)).await {
        Ok(()) => {}
        Err(OpsError::Invalid(m)) => return account_page(s, &post.user, account, refused(m), Notice::default()).await,
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, scope = ?scope, remaining = config.remaining, refill = ?config.refill, "console: credits set");
    Ok(credits_done(account, &key, "saved"))
}

async fn remove_account_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<NoFields>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    remove_credits(&s, CreditScope::Account(account_id(&id)?), &post.user).await
}

async fn remove_credential_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<NoFields>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    remove_credits(&s, CreditScope::Credential(client_id(&id)?), &post.user).await
}

/// Removes a balance: its requests are no longer charged to it (an account's plan's refill, if
/// any, applies again).
async fn remove_credits(s: &ConsoleState, scope: CreditScope, user: &User) -> Result<Response, ConsoleError> {
    let (account, key) = credits_page(s, scope).await?;
    s.ops.set_credits(&user.audit(), scope, None).await?;
    tracing::info!(operator = %user.account.id, scope = ?scope, "console: credits removed");
    Ok(credits_done(account, &key, "removed"))
}

async fn adjust_account_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<AdjustForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    adjust_credits(&s, CreditScope::Account(account_id(&id)?), post).await
}

async fn adjust_credential_credits(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<AdjustForm>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    adjust_credits(&s, CreditScope::Credential(client_id(&id)?), post).await
}

/// A top-up, a refund or a new balance, once per form (its idempotency key).
async fn adjust_credits(
    s: &ConsoleState,
    scope: CreditScope,
    post: Post<AdjustForm>,
) -> Result<Response, ConsoleError> {
    let (account, key) = credits_page(s, scope).await?;
    let form = &post.form;
    let refused = |error: String, status: StatusCode| Refused::Credits {
        scope,
        form: CreditsTyped::Adjust { op_set: form.op == "set", amount: form.amount.clone() },
        error: capitalise(&error),
        status,
    };
    let adjustment = match credits::parse_adjustment(form.op.trim(), &form.amount) {
        Ok(a) => a,
        Err(m) => {
            return account_page(s, &post.user, account, refused(m, StatusCode::BAD_REQUEST), Notice::default()).await;
        }
    };
    let idempotency_key = form.idempotency_key.trim();
    if idempotency_key.is_empty() {
        let m = "this form has expired: check the balance, then send the form again".to_owned();
        return account_page(s, &post.user, account, refused(m, StatusCode::BAD_REQUEST), Notice::default()).await;
    }
    let adjusted = match s.ops.adjust_credits(&post.user.audit(), scope, adjustment, Some(idempotency_key)).await {
        Ok(a) => a,
        Err(OpsError::Invalid(m)) => {
            return account_page(s, &post.user, account, refused(m, StatusCode::BAD_REQUEST), Notice::default()).await;
        }
        Err(OpsError::Conflict(m)) => {
            let m = if m.starts_with("idempotency key") {
                "this form was already sent with another change, which was applied: nothing was changed now. \
                 Check the balance, then send the form again to apply this change too"
                    .to_owned()
            } else if m.starts_with("no credits quota") {
                "no balance applies here: set one first".to_owned()
            } else {
                m
            };
            return account_page(s, &post.user, account, refused(m, StatusCode::CONFLICT), Notice::default()).await;
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        operator = %post.user.account.id, scope = ?scope, adjustment = ?adjustment, replayed = adjusted.replayed,
        remaining = adjusted.balance.remaining, "console: credits adjusted"
    );
    Ok(credits_done(account, &key, if adjusted.replayed { "replayed" } else { "adjusted" }))
}

struct PlanRow {
    name: String,
    limits: Vec<LimitRow>,
    /// The credits refill of its accounts, in words.
    credits: Option<String>,
    accounts: u64,
    updated: String,
}

#[derive(Template)]
#[template(path = "admin_plans.html")]
struct PlansPage {
    nav: Nav,
    plans: Vec<PlanRow>,
    /// A plan saved or deleted by the previous form.
    notice: Option<String>,
    /// Why the previous form was refused.
    error: Option<String>,
    /// The form: a plan being edited, or a refused one as typed.
    name: String,
    lines: String,
    /// Its credits refill line (empty: none).
    refill: String,
    editing: bool,
    syntax: &'static str,
    refill_syntax: &'static str,
}

impl PlansPage {
    fn form(nav: Nav, name: String, lines: String, refill: String) -> Self {
        Self {
            nav,
            plans: Vec::new(),
            notice: None,
            error: None,
            editing: !name.is_empty(),
            name,
            lines,
            refill,
            syntax: limits::SYNTAX,
            refill_syntax: credits::REFILL_SYNTAX,
        }
    }

    async fn render(mut self, s: &ConsoleState, status: StatusCode) -> Result<Response, ConsoleError> {
        for p in s.ops.list_plans().await? {
            let accounts = s.ops.store().plan_accounts(&p.name).await?;
            self.plans.push(PlanRow {
                limits: p.ratelimits.iter().map(LimitRow::plain).collect(),
                credits: p.credits.as_ref().map(credits::refill_words),
                accounts,
                updated: fmt_time(p.updated_at),
                name: p.name,
            });
        }
        Ok(render(status, &self))
    }
}

#[derive(Deserialize)]
struct PlansQuery {
    /// A plan to load into the form.
    edit: Option<String>,
    saved: Option<String>,
    deleted: Option<String>,
}

async fn plans(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    query: Result<Query<PlansQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(q) = query.map_err(|_| ConsoleError::BadRequest("The address could not be read.".into()))?;
    let mut page = PlansPage::form(Nav::of(&user, "plans"), String::new(), String::new(), String::new());
    if let Some(name) = q.edit.as_deref() {
        let (plan, _) = s.ops.get_plan(name).await?;
        let refill = plan.credits.map(|r| r.to_string()).unwrap_or_default();
        page = PlansPage::form(page.nav, plan.name, limits::to_lines(&plan.ratelimits), refill);
    }
    // Only a well-formed plan name is echoed.
    let named = |n: Option<String>| n.filter(|n| ratelimit::valid_name(n));
    page.notice = named(q.saved)
        .map(|n| format!("Plan {n} saved: its accounts count against its limits now."))
        .or_else(|| named(q.deleted).map(|n| format!("Plan {n} deleted.")));
    page.render(&s, StatusCode::OK).await
}

#[derive(Deserialize)]
struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ratelimits: String,
    /// The credits refill of its accounts (`daily:AMOUNT`, `monthly:AMOUNT[:DAY]`; empty: none).
    /// A form without the field (a page from before it existed) keeps the plan's.
    refill: Option<String>,
}

/// Creates a plan, or replaces the one of that name.
async fn put_plan(State(s): State<ConsoleState>, post: Post<PlanForm>) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let name = post.form.name.trim();
    let again = |error: String| {
        let mut page = PlansPage::form(
            Nav::of(&post.user, "plans"),
            name.to_owned(),
            post.form.ratelimits.clone(),
            post.form.refill.clone().unwrap_or_default(),
        );
        page.editing = false;
        page.error = Some(capitalise(&error));
        page.render(&s, StatusCode::BAD_REQUEST)
    };
    let set = match limits::parse_lines(&post.form.ratelimits) {
        Ok(set) => set,
        Err(m) => return again(m).await,
    };
    let credits = match post.form.refill.as_deref() {
        Some(line) => match credits::parse_refill(line) {
            Ok(r) => r,
            Err(m) => return again(m).await,
        },
        None => s.ops.store().get_plan(name).await.ok().and_then(|p| p.credits),
    };
    let created = match s.ops.put_plan(&post.user.audit(), name, &set, credits.as_ref()).await {
        Ok((_, created)) => created,
        Err(OpsError::Invalid(m)) => return again(m).await,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(operator = %post.user.account.id, plan = name, created, limits = set.len(), credits = ?credits, "console: plan saved");
    Ok(Redirect::to(&format!("/console/admin/plans?saved={name}")).into_response())
}

/// Deletes a plan; refused (409, the page again with the reason) while accounts are on it.
async fn delete_plan(
    State(s): State<ConsoleState>,
    Path(name): Path<String>,
    post: Post<NoFields>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    match s.ops.delete_plan(&post.user.audit(), &name).await {
        Ok(()) => {}
        Err(OpsError::Conflict(m)) => {
            let mut page = PlansPage::form(Nav::of(&post.user, "plans"), String::new(), String::new(), String::new());
            page.error = Some(capitalise(&format!(
                "{m}: move those accounts to another plan (or none) on their pages, then delete it"
            )));
            return page.render(&s, StatusCode::CONFLICT).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, plan = %name, "console: plan deleted");
    Ok(Redirect::to(&format!("/console/admin/plans?deleted={name}")).into_response())
}
