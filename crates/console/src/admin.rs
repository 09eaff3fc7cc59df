//! Operator pages, `/console/admin/...`: search and list accounts, an account's credentials and
//! history, ban and unban with a reason, revoke any credential. Only operator accounts get in
//! (customers get 403); the actions go through the same [`keygate_ops::Ops`] as the admin API,
//! with `console:<operator email>` as the actor in the account's history.

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_core::model::{AccountStatus, CredentialStatus};
use keygate_core::{AccountId, ClientId};
use keygate_store::AccountEvent;
use serde::Deserialize;

use super::pages::{CredentialRow, NoFields, RevokePage};
use super::session::{Operator, Post, User};
use super::{ConsoleError, Nav, fmt_time, render};
use crate::ConsoleState;

const PAGE: u32 = 50;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/console/admin/accounts") }))
        .route("/admin/accounts", get(accounts))
        .route("/admin/accounts/{id}", get(account))
        .route("/admin/accounts/{id}/ban", post(ban))
        .route("/admin/accounts/{id}/unban", post(unban))
        .route("/admin/credentials/{client_id}/revoke", get(revoke_confirm).post(revoke))
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
}

fn account_id(id: &str) -> Result<AccountId, ConsoleError> {
    id.parse().map_err(|_| ConsoleError::NotFound)
}

async fn account(
    Operator(user): Operator,
    State(s): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id = account_id(&id)?;
    let store = s.ops.store();
    let ca = store.console_account(id).await?;
    let events: Vec<AccountEvent> = store.account_events(id).await?;
    let credentials = s.ops.list_credentials(id).await?;
    let a = &ca.account;
    let page = AccountPage {
        nav: Nav::of(&user, "accounts"),
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
    };
    Ok(render(StatusCode::OK, &page))
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
