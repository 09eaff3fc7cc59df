//! The `keygate` binary: `serve`, `migrate`, and the admin CLI, which works directly on the
//! configured database (a running server picks its writes up through the change feed).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use keygate_auth::secrets;
use keygate_ops::password::{self, Passwords};
use keygate_ops::{IssuedCredential, Ops, parse_account_id, parse_client_id};
use keygate_server::config::{DatabaseArgs, LogFormat};
use keygate_server::{Application, Config};
use keygate_store::Role;
use serde::Serialize;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keygate", version, about = "Authentication server for HTTP APIs (x-api-key, getToken, Bearer)")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// TOML configuration file (flags and KEYGATE_* variables override it).
    #[arg(long, global = true, env = "KEYGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage API credentials (clientId + API key).
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Manage the JWT signing keys.
    #[command(subcommand)]
    SigningKey(SigningKeyCmd),
    /// Manage the admin API token.
    #[command(subcommand)]
    AdminToken(AdminTokenCmd),
}

/// `serve`'s flags are [`Config`]'s own (each setting's flag and environment variable are declared
/// on its field). They are kept as matches and laid over the config file's values, so a flag that
/// is not given leaves the file's setting as it is.
struct ServeArgs(ArgMatches);

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(matches.clone()))
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Config::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Config::augment_args_for_update(cmd)
    }
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        first_name: String,
        /// An operator of the web console (/console/admin): sees every account, bans, revokes.
        #[arg(long)]
        operator: bool,
        /// Read a web console password from the first line of standard input (never pass a
        /// password as an argument: the process list shows arguments).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's web console password, read from standard input; its console sessions end.
    SetPassword {
        id: String,
        /// Read the password from the first line of standard input (required: the only way).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Make an account an operator of the web console.
    Promote { id: String },
    /// Make an operator a customer again.
    Demote { id: String },
    /// List accounts.
    List {
        /// Match email or id substrings.
        #[arg(long)]
        query: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show an account, its console role and its history.
    Show { id: String },
    /// Ban an account: its keys and tokens are refused with 1200 everywhere.
    Ban {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Unban { id: String },
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// Create a credential; prints its clientId and API key (shown only this once).
    Create {
        #[arg(long)]
        account: String,
    },
    /// List an account's credentials.
    List {
        #[arg(long)]
        account: String,
    },
    /// Show one credential.
    Show { client_id: String },
    /// Revoke a credential: its key and tokens stop working at once.
    Revoke { client_id: String },
    /// New API key for the same clientId; prints it once.
    Rotate {
        client_id: String,
        /// How long the old key and its tokens keep working, e.g. 24h [default: none].
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        grace: Duration,
    },
}

#[derive(Subcommand)]
enum SigningKeyCmd {
    /// List signing key ids.
    List,
    /// Add a new signing key; new tokens use it, existing tokens keep verifying.
    Rotate,
    /// Retire a key id: tokens signed with it stop verifying.
    Retire { kid: String },
}

#[derive(Subcommand)]
enum AdminTokenCmd {
    /// Replace the admin token and print the new one.
    Reset,
}

impl Global {
    /// The config file's settings (or the defaults) with the global database flags over them.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        self.database.apply(&mut config);
        Ok(config)
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.global.config()?;
    let json = cli.global.json;
    match cli.command {
        Command::Serve(ServeArgs(flags)) => {
            config.update_from_arg_matches(&flags)?;
            config.validate()?;
            init_logging(config.log_format, "info,sqlx=warn");
            serve(config).await
        }
        Command::Migrate => {
            init_logging(LogFormat::Text, "warn");
            config.validate()?;
            secrets::open_store(&config.database_url, &config.master_key_source()?, true).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Account(cmd) => admin(config, json, Manage::Account(cmd)).await,
        Command::Credential(cmd) => admin(config, json, Manage::Credential(cmd)).await,
        Command::SigningKey(cmd) => admin(config, json, Manage::SigningKey(cmd)).await,
        Command::AdminToken(cmd) => admin(config, json, Manage::AdminToken(cmd)).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    if let Some(token) = &app.generated_admin_token {
        // Printed once, outside the log stream; only its hash is stored.
        eprintln!(
            "\n=== keygate admin API token (shown once; `keygate admin-token reset` makes a new one) ===\n{token}\n"
        );
    }
    app.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

enum Manage {
    Account(AccountCmd),
    Credential(CredentialCmd),
    SigningKey(SigningKeyCmd),
    AdminToken(AdminTokenCmd),
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

fn fmt_time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn account_line(a: &keygate_core::model::Account) -> String {
    format!(
        "{}  uid={}  {}  {}{}  created {}",
        a.id,
        a.uid,
        a.email,
        a.status.as_str(),
        a.ban_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        fmt_time(a.created_at)
    )
}

fn credential_line(c: &keygate_core::model::Credential) -> String {
    let grace: Vec<String> = c
        .live_generations
        .iter()
        .filter_map(|g| g.expires_at.map(|t| format!("gen {} until {}", g.generation, fmt_time(t))))
        .collect();
    format!(
        "{}  account={}  {}  {}  gen={}{}  created {}",
        c.client_id,
        c.account_id,
        c.hint,
        c.status.as_str(),
        c.generation,
        if grace.is_empty() { String::new() } else { format!("  (old: {})", grace.join(", ")) },
        fmt_time(c.created_at)
    )
}

fn issued(i: &IssuedCredential) -> String {
    format!(
        "clientId: {}\napiKey:   {}\n\nThe API key is also the clientSecret for getToken. It is shown only now: store it safely;\nkeygate keeps only a hash and cannot show it again.",
        i.client_id, i.api_key
    )
}

async fn admin(config: Config, json: bool, cmd: Manage) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "warn");
    config.validate()?;
    let (store, master) = secrets::open_store(&config.database_url, &config.master_key_source()?, true).await?;
    let ops = Ops::new(store.clone(), &master, None);
    match cmd {
        Manage::Account(cmd) => match cmd {
            AccountCmd::Create { email, first_name, operator: false, password_stdin: false } => {
                print(json, &ops.create_account(&email, &first_name).await?, account_line)
            }
            AccountCmd::Create { email, first_name, operator, password_stdin } => {
                let password = if password_stdin { Some(read_password()?) } else { None };
                let role = if operator { Role::Operator } else { Role::Customer };
                let passwords = Passwords::new(&master);
                let account =
                    ops.create_login_account(&email, &first_name, password.as_deref(), role, &passwords).await?;
                let mut value = serde_json::to_value(&account)?;
                value["role"] = role.as_str().into();
                print(json, &value, |_| {
                    let mut s = format!("{}  role={}", account_line(&account), role.as_str());
                    if password.is_none() {
                        s.push_str(&format!(
                            "\nNo console password yet: `keygate account set-password {} --password-stdin`.",
                            account.id
                        ));
                    }
                    s
                })
            }
            AccountCmd::SetPassword { id, password_stdin: _ } => {
                let id = parse_account_id(&id)?;
                let password = read_password()?;
                ops.set_password(id, &password, &Passwords::new(&master)).await?;
                print(json, &serde_json::json!({"id": id, "passwordSet": true}), |_| {
                    format!("password set for {id}; its console sessions have ended")
                })
            }
            AccountCmd::Promote { id } => set_role(&ops, json, &id, Role::Operator).await,
            AccountCmd::Demote { id } => set_role(&ops, json, &id, Role::Customer).await,
            AccountCmd::List { query, limit } => {
                print(json, &ops.list_accounts(query.as_deref(), Some(limit), None).await?.items, |v| {
                    if v.is_empty() {
                        "no accounts".into()
                    } else {
                        v.iter().map(account_line).collect::<Vec<_>>().join("\n")
                    }
                })
            }
            AccountCmd::Show { id } => {
                let (account, events) = ops.get_account(parse_account_id(&id)?).await?;
                let login = store.console_account(account.id).await?;
                let value = serde_json::json!({
                    "account": account,
                    "events": events,
                    "role": login.role,
                    "consoleLogin": login.password_hash.is_some(),
                });
                print(json, &value, |_| {
                    let mut s = format!(
                        "{}  role={}  console login: {}",
                        account_line(&account),
                        login.role.as_str(),
                        if login.password_hash.is_some() { "yes" } else { "no" }
                    );
                    for e in &events {
                        s.push_str(&format!(
                            "\n  {} {} by {}{}",
                            fmt_time(e.at),
                            e.kind,
                            e.actor,
                            e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                        ));
                    }
                    s
                })
            }
            AccountCmd::Ban { id, reason } => {
                print(json, &ops.ban(parse_account_id(&id)?, reason.as_deref(), "cli").await?, account_line)
            }
            AccountCmd::Unban { id } => {
                print(json, &ops.unban(parse_account_id(&id)?, None, "cli").await?, account_line)
            }
        },
        Manage::Credential(cmd) => match cmd {
            CredentialCmd::Create { account } => {
                print(json, &ops.create_credential(parse_account_id(&account)?).await?, issued)
            }
            CredentialCmd::List { account } => {
                print(json, &ops.list_credentials(parse_account_id(&account)?).await?, |v| {
                    if v.is_empty() {
                        "no credentials".into()
                    } else {
                        v.iter().map(credential_line).collect::<Vec<_>>().join("\n")
                    }
                })
            }
            CredentialCmd::Show { client_id } => {
                print(json, &ops.get_credential(parse_client_id(&client_id)?).await?, credential_line)
            }
            CredentialCmd::Revoke { client_id } => {
                print(json, &ops.revoke_credential(parse_client_id(&client_id)?).await?, credential_line)
            }
            CredentialCmd::Rotate { client_id, grace } => {
                print(json, &ops.rotate_credential(parse_client_id(&client_id)?, grace).await?, issued)
            }
        },
        Manage::SigningKey(cmd) => match cmd {
            SigningKeyCmd::List => print(json, &ops.signing_keys().await?, |v| {
                v.iter()
                    .map(|k| {
                        format!(
                            "{}  created {}{}",
                            k.kid,
                            fmt_time(k.created_at),
                            k.retired_at.map(|t| format!("  retired {}", fmt_time(t))).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
            SigningKeyCmd::Rotate => {
                print(json, &ops.rotate_signing_key().await?, |k| format!("new signing key {}", k.kid))
            }
            SigningKeyCmd::Retire { kid } => {
                print(json, &ops.retire_signing_key(&kid).await?, |k| format!("retired {}", k.kid))
            }
        },
        Manage::AdminToken(AdminTokenCmd::Reset) => {
            let token = ops.reset_admin_token().await?;
            print(json, &serde_json::json!({"adminToken": token}), |_| {
                format!("{token}\n\nShown only now; the previous admin token no longer works.")
            })
        }
    }
}

async fn set_role(ops: &Ops, json: bool, id: &str, role: Role) -> anyhow::Result<()> {
    let id = parse_account_id(id)?;
    ops.set_role(id, role).await?;
    print(json, &serde_json::json!({"id": id, "role": role}), |_| {
        format!("{id} is now a{} {}", if role == Role::Operator { "n" } else { "" }, role.as_str())
    })
}

/// Reads a password from the first line of standard input (without echo on a terminal) and
/// checks the console's policy.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    };
    if tty {
        eprint!("Console password (at least {} characters): ", password::MIN_LEN);
        stty("-echo");
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read.context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        anyhow::bail!(
            "no password on standard input: pipe one in, e.g. `printf '%s\\n' \"$PASSWORD\" | keygate account set-password ID --password-stdin`"
        );
    }
    password::check_policy(password).map_err(anyhow::Error::msg)?;
    Ok(password.to_owned())
}
