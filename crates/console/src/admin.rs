//! Operator pages, `/console/admin/...`: search and list accounts, an account's credentials and
//! history, ban and unban with a reason, revoke any credential; plans (list, create or replace,
//! delete), an account's plan and own rate limits, a credential's own rate limits. Only operator
//! accounts get in (customers get 403); the actions go through the same [`keygate_ops::Ops`] as
//! the admin API, with `console:<operator email>` as the actor in the account's history. A
//! refused limit form answers 400 with the form again, as it was typed, and the reason.

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_core::model::{AccountStatus, CredentialStatus};
use keygate_core::ratelimit::{self, EffectiveLimit};
use keygate_core::{AccountId, ClientId};
use keygate_ops::OpsError;
use keygate_store::AccountEvent;
use serde::Deserialize;

use super::limits::{self, LimitRow, Reader};
use super::pages::{CredentialRow, NoFields, RevokePage};
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
        .route("/admin/credentials/{client_id}/revoke", get(revoke_confirm).post(revoke))
        .route("/admin/credentials/{client_id}/limits", post(set_credential_limits))
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
}

fn account_id(id: &str) -> Result<AccountId, ConsoleError> {
    id.parse().map_err(|_| ConsoleError::NotFound)
}

async fn account(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    account_page(&s, &user, account_id(&id)?, Refused::None).await
}

/// The account page; 400 with the refused form, if any, shown again.
async fn account_page(
    s: &ConsoleState,
    user: &User,
    id: AccountId,
    refused: Refused,
) -> Result<Response, ConsoleError> {
    let store = s.ops.store();
    let ca = store.console_account(id).await?;
    let events: Vec<AccountEvent> = store.account_events(id).await?;
    let credentials = s.ops.list_credentials(id).await?;
    let a = &ca.account;
    let effective = s.ops.account_limits(a).await?;
    let shared = limits::shared(&effective);
    let mut plans: Vec<String> = s.ops.list_plans().await?.into_iter().map(|p| p.name).collect();
    if let Some(p) = a.plan.as_ref().filter(|p| !plans.contains(p)) {
        plans.push(p.clone());
    }
    let (picked, own_lines, limits_error) = match &refused {
        Refused::Account { plan, lines, error } => (plan.clone(), lines.clone(), Some(error.clone())),
        _ => (a.plan.clone().unwrap_or_default(), limits::to_lines(&a.ratelimits), None),
    };
    let credential_limits = credentials
        .iter()
        .filter(|c| c.status == CredentialStatus::Active)
        .map(|c| {
            let (lines, error) = match &refused {
                Refused::Credential { client_id, lines, error } if *client_id == c.client_id => {
                    (lines.clone(), Some(error.clone()))
                }
                _ => (limits::to_lines(&c.ratelimits), None),
            };
            CredentialLimits {
                client_id: c.client_id.to_hex(),
                hint: c.hint.clone(),
                lines,
                error,
                limits: LimitRow::all(&EffectiveLimit::for_credential(&c.ratelimits, &shared), Reader::Operator),
            }
        })
        .collect();
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
        credentials: credentials.iter().map(CredentialRow::of).collect(),
        events: events
            .into_iter()
            .rev()
            .map(|e| EventRow { kind: e.kind, reason: e.reason, actor: e.actor, at: fmt_time(e.at) })
            .collect(),
        plan: a.plan.clone(),
        limits: LimitRow::all(&effective, Reader::Operator),
        plans: plans.into_iter().map(|name| PlanOption { selected: name == picked, name }).collect(),
        own_lines,
        limits_error,
        credential_limits,
        syntax: limits::SYNTAX,
    };
    let status = if matches!(refused, Refused::None) { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok(render(status, &page))
}

fn actor(user: &User) -> String {
    format!("console:{}", user.account.email)
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
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
    s.ops.ban(id, Some(reason), &actor(&post.user)).await?;
    tracing::info!(operator = %post.user.account.id, account = %id, "console: account banned");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", id.to_hex())))
}

async fn unban(
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
    post: Post<ReasonForm>,
) -> Result<Redirect, ConsoleError> {
    post.user.require_operator()?;
    let id = account_id(&id)?;
    s.ops.unban(id, Some(post.form.reason.trim()), &actor(&post.user)).await?;
    tracing::info!(operator = %post.user.account.id, account = %id, "console: account unbanned");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", id.to_hex())))
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
        c: CredentialRow::of(&c),
        owner: Some(owner.email),
        action: format!("/console/admin/credentials/{}/revoke", id.to_hex()),
        cancel: back,
    };
    Ok(render(StatusCode::OK, &page))
}

async fn revoke(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<NoFields>,
) -> Result<Redirect, ConsoleError> {
    post.user.require_operator()?;
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.revoke_credential(id).await?;
    tracing::info!(operator = %post.user.account.id, client_id = %id, "console: credential revoked by an operator");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", c.account_id.to_hex())))
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
        Err(m) => return account_page(&s, &post.user, id, refused(m)).await,
    };
    let picked = (!plan.is_empty()).then_some(plan);
    match s.ops.update_account_limits(id, Some(&set), Some(picked)).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => return account_page(&s, &post.user, id, refused(m)).await,
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
        Err(m) => return account_page(&s, &post.user, c.account_id, refused(m)).await,
    };
    match s.ops.set_credential_ratelimits(id, &set).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => return account_page(&s, &post.user, c.account_id, refused(m)).await,
        Err(e) => return Err(e.into()),
    }
    tracing::info!(operator = %post.user.account.id, client_id = %id, limits = set.len(), "console: credential rate limits set");
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", c.account_id.to_hex())).into_response())
}

struct PlanRow {
    name: String,
    limits: Vec<LimitRow>,
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
    editing: bool,
    syntax: &'static str,
}

impl PlansPage {
    fn form(nav: Nav, name: String, lines: String) -> Self {
        Self {
            nav,
            plans: Vec::new(),
            notice: None,
            error: None,
            editing: !name.is_empty(),
            name,
            lines,
            syntax: limits::SYNTAX,
        }
    }

    async fn render(mut self, s: &ConsoleState, status: StatusCode) -> Result<Response, ConsoleError> {
        for p in s.ops.list_plans().await? {
            let accounts = s.ops.store().plan_accounts(&p.name).await?;
            self.plans.push(PlanRow {
                limits: p.ratelimits.iter().map(LimitRow::plain).collect(),
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
    let mut page = PlansPage::form(Nav::of(&user, "plans"), String::new(), String::new());
    if let Some(name) = q.edit.as_deref() {
        let (plan, _) = s.ops.get_plan(name).await?;
        page = PlansPage::form(page.nav, plan.name, limits::to_lines(&plan.ratelimits));
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
}

/// Creates a plan, or replaces the one of that name.
async fn put_plan(State(s): State<ConsoleState>, post: Post<PlanForm>) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    let name = post.form.name.trim();
    let again = |error: String| {
        let mut page = PlansPage::form(Nav::of(&post.user, "plans"), name.to_owned(), post.form.ratelimits.clone());
        page.editing = false;
        page.error = Some(capitalise(&error));
        page.render(&s, StatusCode::BAD_REQUEST)
    };
    let set = match limits::parse_lines(&post.form.ratelimits) {
        Ok(set) => set,
        Err(m) => return again(m).await,
    };
    // The form edits the limits; the plan's credits refill (set in the admin API or the CLI) stays.
    let credits = s.ops.store().get_plan(name).await.ok().and_then(|p| p.credits);
    let created = match s.ops.put_plan(name, &set, credits.as_ref()).await {
        Ok((_, created)) => created,
        Err(OpsError::Invalid(m)) => return again(m).await,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(operator = %post.user.account.id, plan = name, created, limits = set.len(), "console: plan saved");
    Ok(Redirect::to(&format!("/console/admin/plans?saved={name}")).into_response())
}

/// Deletes a plan; refused (409, the page again with the reason) while accounts are on it.
async fn delete_plan(
    State(s): State<ConsoleState>,
    Path(name): Path<String>,
    post: Post<NoFields>,
) -> Result<Response, ConsoleError> {
    post.user.require_operator()?;
    match s.ops.delete_plan(&name).await {
        Ok(()) => {}
        Err(OpsError::Conflict(m)) => {
            let mut page = PlansPage::form(Nav::of(&post.user, "plans"), String::new(), String::new());
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
