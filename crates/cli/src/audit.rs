//! `keygate audit list`: the audit log, newest first, filtered as the admin API filters it
//! (`keygate_ops::audit::AuditFilter`).

use clap::{Args, Subcommand};
use keygate_core::audit::AuditEntry;
use keygate_ops::Ops;
use keygate_ops::audit::AuditFilter;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print audit entries, newest first: when, who, what on which target, and the fields that
    /// changed. With --json, the page as `{"items": [...], "next": CURSOR}` (the admin API's
    /// `data` and `next`; `next` is null on the last page).
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Exactly this actor: an email (console), USER@HOST (CLI), "admin token", "keygate".
    #[arg(long)]
    actor: Option<String>,
    /// Exactly this target: an accountId, clientId, plan or role name, signing key id.
    #[arg(long)]
    target: Option<String>,
    /// An account's history: its own entries and its credentials'.
    #[arg(long, value_name = "ACCOUNT_ID")]
    account: Option<String>,
    /// An action (credential.update), or a kind of target for all its actions (credential).
    #[arg(long)]
    action: Option<String>,
    /// From this time: RFC 3339, a date (midnight UTC) or Unix milliseconds.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Until this time (exclusive), in the same forms.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Entries older than this cursor (the `next` of a previous listing).
    #[arg(long)]
    cursor: Option<String>,
    /// At most this many entries, 1 to 1000.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn run(ops: &Ops, json: bool, cmd: AuditCmd) -> anyhow::Result<()> {
    let AuditCmd::List(a) = cmd;
    let filter = AuditFilter {
        actor: a.actor,
        target: a.target,
        account: a.account,
        action: a.action,
        from: a.from,
        to: a.to,
        cursor: a.cursor,
        limit: Some(a.limit),
    };
    let page = ops.audit_log(&filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"items": page.items, "next": page.next}))?);
        return Ok(());
    }
    if page.items.is_empty() {
        println!("no audit entries");
    }
    for e in &page.items {
        println!("{}", line(e));
    }
    if let Some(next) = page.next {
        println!("(more: --cursor {next})");
    }
    Ok(())
}

/// One entry on one line: `TIME  ACTOR_KIND ACTOR  ACTION TARGET  field: before -> after, ...  from IP`.
fn line(e: &AuditEntry) -> String {
    let mut s = format!("{}  {} {}  {} {}", crate::fmt_time(e.at), e.actor_kind.as_str(), e.actor, e.action, e.target);
    let changes = changes(e);
    if !changes.is_empty() {
        s.push_str("  ");
        s.push_str(&changes);
    }
    if let Some(ip) = &e.source_ip {
        s.push_str(&format!("  from {ip}"));
    }
    s
}

fn changes(e: &AuditEntry) -> String {
    use serde_json::Value;
    let empty = serde_json::Map::new();
    let before = e.before.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let after = e.after.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|k| match (before.get(*k), after.get(*k)) {
            (Some(b), Some(a)) => format!("{k}: {b} -> {a}"),
            (None, Some(a)) => format!("{k}: {a}"),
            (Some(b), None) => format!("{k}: {b} -> (gone)"),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
