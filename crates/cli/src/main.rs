//! The `keygate` binary: `serve`, `migrate`, and the admin CLI, which works directly on the
//! configured database (a running server picks its writes up through the change feed).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use keygate_auth::secrets;
use keygate_core::credits::{Adjustment, CreditBalance, CreditsConfig};
use keygate_core::model::{Credential, CredentialChange, Meta, SecretGeneration};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::{EffectiveLimit, RateLimit, Source};
use keygate_ops::password::{self, Passwords};
use keygate_ops::usage::parse_time;
use keygate_ops::{IssuedCredential, Ops, parse_account_id, parse_client_id};
use keygate_server::config::{DatabaseArgs, LogFormat};
use keygate_server::{Application, Config};
use keygate_store::{CreditScope, Role};
use serde::Serialize;

mod audit;
mod usage;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `keygate --version`: the package version and the git revision it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KEYGATE_GIT_REVISION"), ")");

#[derive(Parser)]
#[command(
    name = "keygate",
    version = VERSION,
    about = "Authentication server for HTTP APIs (x-api-key, getToken, Bearer)"
)]
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
    /// On an error, also print where in the code it arose (a backtrace); `RUST_LOG=debug` does too.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Print the OpenAPI 3.1 description of the HTTP API (what /openapi.json serves).
    Openapi,
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
    /// Manage plans: named sets of rate limits assigned to accounts.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Manage roles: named sets of permissions credentials hold.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Export usage (requests per day or hour and outcome, credits spent) for billing.
    #[command(subcommand)]
    Usage(usage::UsageCmd),
    /// Read the audit log: every change to accounts, credentials, plans, roles, limits, credits,
    /// signing keys and the admin token, by whom, from where.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Print a shell completion script, e.g. `keygate completions bash > /etc/bash_completion.d/keygate`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
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
        /// The account's email (unique; also its console login).
        #[arg(long)]
        email: String,
        /// The first name tokens carry in their `firstName` claim.
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
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
        /// Read the password from the first line of standard input (required: the only way).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Make an account an operator of the web console.
    Promote {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
    },
    /// Make an operator a customer again.
    Demote {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
    },
    /// List accounts.
    List {
        /// Match email or id substrings.
        #[arg(long)]
        query: Option<String>,
        /// At most this many accounts (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show an account, its console role and its history.
    Show {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
    },
    /// Ban an account: its keys and tokens are refused with 1200 everywhere.
    Ban {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
        /// Why, kept in the account's history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Unban {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
    },
    /// Set an account's own rate limits (shared by its credentials) and/or its plan; without
    /// flags, show the limits that apply.
    Limits {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
        #[command(flatten)]
        set: LimitFlags,
        /// Put the account on this plan.
        #[arg(long, conflicts_with = "no_plan")]
        plan: Option<String>,
        /// Take the account off its plan.
        #[arg(long)]
        no_plan: bool,
    },
    /// Set, top up or refund an account's credits balance (shared by its credentials); without
    /// flags, show it.
    Credits {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
        #[command(flatten)]
        change: CreditFlags,
    },
    /// Set the networks an account's credentials may be used from (each credential's own
    /// allowlist applies as well); without networks or --clear, show them.
    Allowlist {
        /// The account's id (24 hexadecimal characters, as `account create` prints it).
        id: String,
        /// The whole new list: addresses or networks, e.g. `203.0.113.7 10.0.0.0/8 2001:db8::/32`.
        #[arg(value_name = "CIDR", conflicts_with = "clear")]
        networks: Vec<Cidr>,
        /// Remove the allowlist: its credentials may be used from anywhere (as far as the account goes).
        #[arg(long)]
        clear: bool,
    },
}

/// A change of a credits balance given on the command line.
#[derive(Args)]
struct CreditFlags {
    /// Add credits (a top-up) or, negative, take them away (a refund), e.g. `--add 10000` or
    /// `--add=-500`.
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with_all = ["set", "remaining", "clear"])]
    add: Option<i64>,
    /// Set the balance (credits leased by nodes before are void).
    #[arg(long, value_name = "N", conflicts_with_all = ["remaining", "clear"])]
    set: Option<i64>,
    /// Apply --add or --set once: a retry with the same key changes nothing.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Give it a quota of its own: this balance now, refilled with --refill.
    #[arg(long, value_name = "N", conflicts_with = "clear")]
    remaining: Option<i64>,
    /// With --remaining: daily:AMOUNT or monthly:AMOUNT[:DAY] (the balance is set to AMOUNT at
    /// each period's start, UTC).
    #[arg(long, value_name = "REFILL", requires = "remaining")]
    refill: Option<keygate_core::credits::Refill>,
    /// Remove its own quota (requests are no longer charged to it).
    #[arg(long)]
    clear: bool,
}

/// A rate-limit set given on the command line: the whole set, as `PATCH ... {"ratelimits": [...]}`.
#[derive(Args)]
struct LimitFlags {
    /// A limit: NAME=LIMIT/DURATION, e.g. `requests=10/1s` or `daily=10000/1d` (repeat for
    /// several; the whole set is replaced).
    #[arg(long = "ratelimit", value_name = "NAME=LIMIT/DURATION", value_parser = clap::value_parser!(RateLimit))]
    ratelimits: Vec<RateLimit>,
    /// Remove every own rate limit.
    #[arg(long, conflicts_with = "ratelimits")]
    clear: bool,
}

impl LimitFlags {
    /// The new set, if one was given.
    fn set(&self) -> Option<&[RateLimit]> {
        (self.clear || !self.ratelimits.is_empty()).then_some(self.ratelimits.as_slice())
    }
}

#[derive(Subcommand)]
enum PlanCmd {
    /// Create or replace a plan: every account on it counts against the new limits at once.
    Put {
        /// The plan's name: lowercase letters, digits, '_', '.', '-'.
        name: String,
        #[command(flatten)]
        set: LimitFlags,
        /// The credits refill of its accounts that have no credits of their own:
        /// daily:AMOUNT or monthly:AMOUNT[:DAY] (none: the plan gives no credits quota).
        #[arg(long, value_name = "REFILL")]
        credits_refill: Option<keygate_core::credits::Refill>,
    },
    /// List the plans.
    List,
    /// Show a plan and how many accounts are on it.
    Show {
        /// The plan's name.
        name: String,
    },
    /// Delete a plan (refused while accounts are on it).
    Delete {
        /// The plan's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Create or replace a role: every credential holding it, and its tokens, has the new
    /// permissions at once.
    Put {
        /// The role's name: lowercase letters, digits, '_', '.', '-'.
        name: String,
        /// A permission it grants: a name (`videos.create`), `prefix.*` or `*` (repeat, or separate
        /// with commas; the whole set is replaced).
        #[arg(long = "permission", visible_alias = "permissions", value_name = "PERMISSION", value_delimiter = ',')]
        permissions: Vec<String>,
    },
    /// List the roles.
    List,
    /// Show a role and how many credentials hold it.
    #[command(visible_alias = "get")]
    Show {
        /// The role's name.
        name: String,
    },
    /// Delete a role (refused while credentials hold it).
    Delete {
        /// The role's name.
        name: String,
    },
}

/// What a credential may do and when, set as it is created (in the same transaction).
#[derive(Args)]
struct NewCredentialFlags {
    /// A name for people, e.g. "dashboard (read-only)" (1 to 200 characters); sent upstream.
    #[arg(long)]
    name: Option<String>,
    /// Metadata: a JSON object of up to 4 KB, e.g. '{"tier":"gold"}'; sent upstream.
    #[arg(long, value_name = "JSON", value_parser = parse_meta)]
    meta: Option<Meta>,
    /// When it and its tokens stop working (1101 "expired"): an RFC 3339 time
    /// (2026-12-31T23:59:59Z), a date (its midnight, UTC) or Unix milliseconds.
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    /// Create it disabled: refused (1101 "disabled") until `credential update --enable`.
    #[arg(long, visible_alias = "disable")]
    disabled: bool,
    /// A permission it holds: a name (`videos.create`), `prefix.*` or `*` (repeat, or separate
    /// with commas).
    #[arg(long = "permission", visible_alias = "permissions", value_name = "PERMISSION", value_delimiter = ',')]
    permissions: Vec<String>,
    /// A role it holds, which must exist (`role put`); repeat, or separate with commas.
    #[arg(long = "role", visible_alias = "roles", value_name = "ROLE", value_delimiter = ',')]
    roles: Vec<String>,
    /// An address or network it may be used from, e.g. 10.0.0.0/8 (repeat, or separate with
    /// commas; none: anywhere). Its account's allowlist applies as well.
    #[arg(long = "allow-ip", visible_alias = "allow-ips", value_name = "CIDR", value_delimiter = ',')]
    allow_ips: Vec<Cidr>,
    /// Its own rate limit: NAME=LIMIT/DURATION, e.g. `burst=100/1m` (repeat for several).
    #[arg(long = "ratelimit", value_name = "NAME=LIMIT/DURATION", value_parser = clap::value_parser!(RateLimit))]
    ratelimits: Vec<RateLimit>,
}

impl NewCredentialFlags {
    fn change(self) -> anyhow::Result<CredentialChange> {
        Ok(CredentialChange {
            name: self.name.map(Some),
            meta: self.meta.map(Some),
            expires_at: self.expires.as_deref().map(|t| parse_time("--expires", t).map(Some)).transpose()?,
            enabled: self.disabled.then_some(false),
            permissions: some_vec(self.permissions),
            roles: some_vec(self.roles),
            ip_allowlist: some_vec(self.allow_ips),
            ratelimits: some_vec(self.ratelimits),
        })
    }
}

/// What to change on a credential: each flag given replaces that field, the others stay.
#[derive(Args)]
struct CredentialUpdateFlags {
    /// A new name for people (1 to 200 characters).
    #[arg(long, conflicts_with = "no_name")]
    name: Option<String>,
    /// Remove its name.
    #[arg(long)]
    no_name: bool,
    /// New metadata: a JSON object of up to 4 KB, e.g. '{"tier":"gold"}' (replaces the old).
    #[arg(long, value_name = "JSON", value_parser = parse_meta, conflicts_with = "no_meta")]
    meta: Option<Meta>,
    /// Remove its metadata.
    #[arg(long)]
    no_meta: bool,
    /// When it and its tokens stop working: an RFC 3339 time (2026-12-31T23:59:59Z), a date
    /// (its midnight, UTC) or Unix milliseconds.
    #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
    expires: Option<String>,
    /// Remove its expiry: it works until revoked.
    #[arg(long)]
    no_expiry: bool,
    /// Let it work again after --disable.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Refuse it and its tokens (1101 "disabled") until --enable; unlike a revoke, reversible.
    #[arg(long)]
    disable: bool,
    /// Its permissions, the whole set, comma-separated: names (`videos.create`), `prefix.*` or
    /// `*`; an empty string ('') removes them all.
    #[arg(long, visible_alias = "permission", value_name = "P,P,...")]
    permissions: Option<Vec<String>>,
    /// The roles it holds, the whole set, comma-separated (each must exist); '' removes them all.
    #[arg(long, visible_alias = "role", value_name = "ROLE,...")]
    roles: Option<Vec<String>>,
    /// The addresses or networks it may be used from, the whole set, comma-separated, e.g.
    /// 10.0.0.0/8,2001:db8::/32; '' removes the allowlist (anywhere).
    #[arg(long, visible_alias = "allow-ip", value_name = "CIDR,...", value_parser = parse_networks)]
    allow_ips: Option<Vec<Networks>>,
}

impl CredentialUpdateFlags {
    fn change(self) -> anyhow::Result<CredentialChange> {
        let clearable = |value: Option<String>, clear: bool| if clear { Some(None) } else { value.map(Some) };
        let expires_at = match (self.expires, self.no_expiry) {
            (_, true) => Some(None),
            (Some(t), false) => Some(Some(parse_time("--expires", &t)?)),
            (None, false) => None,
        };
        let change = CredentialChange {
            name: clearable(self.name, self.no_name),
            meta: if self.no_meta { Some(None) } else { self.meta.map(Some) },
            expires_at,
            enabled: if self.enable { Some(true) } else { self.disable.then_some(false) },
            permissions: list(self.permissions),
            roles: list(self.roles),
            ip_allowlist: self.allow_ips.map(|v| v.into_iter().flat_map(|n| n.0).collect()),
            ratelimits: None,
        };
        if change.is_empty() {
            anyhow::bail!(
                "nothing to change: give at least one of --name/--no-name, --meta/--no-meta, --expires/--no-expiry, \
                 --enable/--disable, --permissions, --roles or --allow-ips (`credential show CLIENT_ID` shows it as it is; \
                 `credential limits` and `credential credits` change its rate limits and credits)"
            );
        }
        Ok(change)
    }
}

/// A list given, or `None` for an empty one (the field left as it is).
fn some_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// A comma-separated list given once or several times, as one list (`''`: the empty list).
fn list(values: Option<Vec<String>>) -> Option<Vec<String>> {
    values.map(|v| {
        v.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    })
}

/// Networks given as one comma-separated value (`''`: none).
#[derive(Clone)]
struct Networks(Vec<Cidr>);

fn parse_networks(s: &str) -> Result<Networks, String> {
    s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::parse).collect::<Result<_, _>>().map(Networks)
}

/// `--meta`: a JSON object.
fn parse_meta(s: &str) -> Result<Meta, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("must be a JSON object, e.g. '{\"tier\":\"gold\"}'".into()),
        Err(e) => Err(format!("not JSON ({e}); give an object, e.g. '{{\"tier\":\"gold\"}}'")),
    }
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// Create a credential; prints its clientId and API key (shown only this once). Its name,
    /// metadata, expiry, permissions, roles, allowlist and limits are set in the same transaction.
    Create {
        /// The id of the account the credential belongs to.
        #[arg(long, value_name = "ACCOUNT_ID")]
        account: String,
        #[command(flatten)]
        fields: NewCredentialFlags,
    },
    /// Change a credential's name, metadata, expiry, enabled, permissions, roles or allowlist
    /// (one transaction; every node, and its live tokens, see it within the feed bound).
    Update {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
        #[command(flatten)]
        change: CredentialUpdateFlags,
    },
    /// List an account's credentials.
    List {
        /// The id of the account whose credentials to list.
        #[arg(long, value_name = "ACCOUNT_ID")]
        account: String,
    },
    /// Show one credential.
    Show {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
    },
    /// Revoke a credential: its key and tokens stop working at once.
    Revoke {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
    },
    /// Set a credential's own rate limits (counted for it alone); without flags, show the
    /// limits that apply.
    Limits {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
        #[command(flatten)]
        set: LimitFlags,
    },
    /// Set, top up or refund a credential's own credits balance; without flags, show it.
    Credits {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
        #[command(flatten)]
        change: CreditFlags,
    },
    /// New API key for the same clientId; prints it once, and until when the old key works.
    Rotate {
        /// The credential's clientId (24 hexadecimal characters, as `credential create` prints it).
        client_id: String,
        /// How long the old key and its tokens keep working, e.g. 24h or 7d (at most 90 days).
        /// Without it they stop at once.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum SigningKeyCmd {
    /// List signing key ids.
    List,
    /// Add a new signing key; new tokens use it, existing tokens keep verifying.
    Rotate,
    /// Retire a key id: tokens signed with it stop verifying.
    Retire {
        /// The key id, as `signing-key list` prints it.
        kid: String,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A backtrace is for whoever asks for one (`-v`, `RUST_LOG=debug`), never for a user who
    // happens to have RUST_BACKTRACE set: errors are printed here, not by returning them.
    let verbose = cli.global.verbose || debug_logging();
    if verbose {
        capture_backtraces();
    }
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "keygate", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // The admin commands run one statement at a time: one thread is all they need.
    let runtime = match cli.command {
        Command::Serve(_) | Command::Migrate => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, verbose);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error as its cause chain (`error:`, then one `caused by:` line per cause), a hint
/// when there is one, and the backtrace only when `verbose`.
fn report(e: &anyhow::Error, verbose: bool) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("caused by: {cause}");
    }
    let on_database = e.downcast_ref::<OnDatabase>();
    if let Some(hint) = on_database.and_then(|d| d.hint) {
        eprintln!("hint: {hint}");
    }
    if verbose {
        // Where the error arose, not where it was given its database.
        let backtrace = on_database.map_or(e, |d| &d.error).backtrace();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("\nbacktrace:\n{backtrace}");
        } else {
            eprintln!("(no backtrace was captured)");
        }
    }
}

/// Whether `RUST_LOG` asks for debug (or trace) logging anywhere.
fn debug_logging() -> bool {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .is_ok_and(|f| f.max_level_hint().is_some_and(|l| l >= tracing::level_filters::LevelFilter::DEBUG))
}

/// Makes errors record where they arose. anyhow records a backtrace only when RUST_LIB_BACKTRACE
/// (or RUST_BACKTRACE) is set as the process starts, and a running process cannot set its own
/// environment safely: so the process executes itself again, once, with RUST_LIB_BACKTRACE=1.
fn capture_backtraces() {
    let enabled = match std::env::var_os("RUST_LIB_BACKTRACE") {
        Some(_) => true, // set: "1" records them, "0" is someone's explicit choice
        None => std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0"),
    };
    if enabled {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        std::os::unix::process::CommandExt::arg0(&mut again, arg0);
    }
    again.args(args).env("RUST_LIB_BACKTRACE", "1");
    // Only returns if the execution failed: then there is no backtrace, and that is all.
    let _ = std::os::unix::process::CommandExt::exec(&mut again);
}

/// An error of an admin command that involves the database: it names the database (password
/// hidden, a relative SQLite path resolved) and, when the database could not be opened or did
/// not hold what was asked for, says how to point the command at another one.
#[derive(Debug)]
struct OnDatabase {
    error: anyhow::Error,
    /// The database, when the error's own message does not name it already.
    database: Option<String>,
    hint: Option<&'static str>,
}

impl OnDatabase {
    /// For a database that could not be opened.
    const CANNOT_OPEN: &str = "this command works on an existing database: point it at yours with --database-url URL, \
                               the KEYGATE_DATABASE_URL variable or --config FILE (its database_url)";
    /// For what the database does not hold.
    const NOT_THERE: &str = "if that is not the database the server uses, point this command at it with \
                             --database-url URL, the KEYGATE_DATABASE_URL variable or --config FILE (its database_url)";

    /// The error of a database that could not be opened (its message names the database).
    fn cannot_open(error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Self { error, database: None, hint: Some(Self::CANNOT_OPEN) })
    }

    /// The error of a command on an open database, with the database named when the error
    /// involves it (a malformed id does not).
    fn of_command(error: anyhow::Error, database: &str) -> anyhow::Error {
        use keygate_ops::OpsError;
        let (involved, not_found) = match error.downcast_ref::<OpsError>() {
            Some(OpsError::NotFound(_)) => (true, true),
            Some(OpsError::Store(_) | OpsError::Conflict(_)) => (true, false),
            Some(OpsError::Invalid(_) | OpsError::Internal(_)) => (false, false),
            None => (error.downcast_ref::<keygate_store::StoreError>().is_some(), false),
        };
        if !involved {
            return error;
        }
        let database = Some(secrets::describe_url(database));
        anyhow::Error::new(Self { error, database, hint: not_found.then_some(Self::NOT_THERE) })
    }
}

impl std::fmt::Display for OnDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.database {
            Some(db) => write!(f, "{}, in database {db}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for OnDatabase {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.global.config()?;
    let json = cli.global.json;
    match cli.command {
        Command::Completions { .. } => unreachable!("answered before the runtime starts"),
        Command::Serve(ServeArgs(flags)) => {
            config.update_from_arg_matches(&flags)?;
            config.validate()?;
            init_logging(config.log_format, "info,sqlx=warn");
            serve(config).await
        }
        Command::Openapi => {
            println!("{}", keygate_server::openapi::document());
            Ok(())
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
        Command::Plan(cmd) => admin(config, json, Manage::Plan(cmd)).await,
        Command::Role(cmd) => admin(config, json, Manage::Role(cmd)).await,
        Command::Usage(cmd) => admin(config, json, Manage::Usage(cmd)).await,
        Command::Audit(cmd) => admin(config, json, Manage::Audit(cmd)).await,
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
    Plan(PlanCmd),
    Role(RoleCmd),
    Account(AccountCmd),
    Credential(CredentialCmd),
    SigningKey(SigningKeyCmd),
    AdminToken(AdminTokenCmd),
    Usage(usage::UsageCmd),
    Audit(audit::AuditCmd),
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

fn credential_line(c: &Credential) -> String {
    let grace: Vec<String> = c
        .live_generations
        .iter()
        .filter_map(|g| g.expires_at.map(|t| format!("gen {} until {}", g.generation, fmt_time(t))))
        .collect();
    let mut s = format!(
        "{}  account={}  {}  {}{}  gen={}{}  created {}",
        c.client_id,
        c.account_id,
        c.hint,
        c.status.as_str(),
        if c.enabled { "" } else { " (disabled)" },
        c.generation,
        if grace.is_empty() { String::new() } else { format!("  (old: {})", grace.join(", ")) },
        fmt_time(c.created_at)
    );
    if let Some(name) = &c.name {
        s.push_str(&format!("  name={name:?}"));
    }
    if let Some(t) = c.expires_at {
        let verb = if t <= keygate_store::now_ms() { "expired" } else { "expires" };
        s.push_str(&format!("  {verb} {}", fmt_time(t)));
    }
    if !c.permissions.is_empty() {
        s.push_str(&format!("  permissions={}", c.permissions.join(",")));
    }
    if !c.roles.is_empty() {
        s.push_str(&format!("  roles={}", c.roles.join(",")));
    }
    if !c.ip_allowlist.is_empty() {
        s.push_str(&format!("  ip-allowlist={}", join(&c.ip_allowlist)));
    }
    if let Some(meta) = &c.meta {
        s.push_str(&format!("  meta={}", serde_json::Value::Object(meta.clone())));
    }
    s
}

/// A role's permissions, indented under its name.
fn permission_line(permissions: &[String]) -> String {
    if permissions.is_empty() {
        "  no permissions".into()
    } else {
        format!("  permissions: {}", permissions.join(", "))
    }
}

/// Networks, comma-separated.
fn join(networks: &[Cidr]) -> String {
    networks.iter().map(Cidr::to_string).collect::<Vec<_>>().join(",")
}

/// What a rotation did to the keys it did not issue: the one it replaced works until the grace
/// ends (or stopped at once), and any older one still in an earlier grace stopped at once (the
/// rule: the current key and the one before it, at most).
struct Rotation {
    /// The generation it replaced.
    previous: u32,
    /// Until when the replaced key works (`None`: it stopped at once).
    previous_until: Option<i64>,
    /// Older generations that were still working and stopped now, with the end they had.
    ended: Vec<SecretGeneration>,
}

impl Rotation {
    fn of(before: &Credential, after: &Credential) -> Self {
        let previous = after.generation - 1;
        let previous_until =
            after.live_generations.iter().find(|g| g.generation == previous).and_then(|g| g.expires_at);
        let now = keygate_store::now_ms();
        let ended = before
            .live_generations
            .iter()
            .filter(|g| g.generation < previous && g.is_live(now))
            .filter(|g| !after.live_generations.iter().any(|a| a.generation == g.generation))
            .copied()
            .collect();
        Self { previous, previous_until, ended }
    }

    fn describe(&self, c: &Credential) -> String {
        let mut s = match self.previous_until {
            Some(t) => {
                let mut s = format!(
                    "The previous API key (generation {}, and its tokens) keeps working until {}.",
                    self.previous,
                    fmt_time(t)
                );
                if let Some(end) = c.expires_at.filter(|e| *e < t) {
                    s.push_str(&format!(" The credential itself expires at {}, and every key with it.", fmt_time(end)));
                }
                s
            }
            None => format!("The previous API key (generation {}, and its tokens) stopped working now.", self.previous),
        };
        for g in &self.ended {
            let grace = g.expires_at.map(|t| format!(" (its grace ran until {})", fmt_time(t))).unwrap_or_default();
            s.push_str(&format!(
                "\nThe older API key of generation {}{grace} stopped working now: a rotation keeps at most the current key and the one it replaced.",
                g.generation
            ));
        }
        s
    }
}

fn issued(i: &IssuedCredential) -> String {
    format!(
        "clientId: {}\napiKey:   {}\n\nThe API key is also the clientSecret for getToken. It is shown only now: store it safely;\nkeygate keeps only a hash and cannot show it again.",
        i.client_id, i.api_key
    )
}

/// Who the command line is in the audit log: the OS user on this host.
static WHO: std::sync::LazyLock<keygate_core::audit::Audit> = std::sync::LazyLock::new(|| {
    let user = whoami::username().ok().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let host = whoami::hostname().unwrap_or_else(|_| "unknown".into());
    keygate_core::audit::Audit::cli(&user, &host)
});

async fn admin(config: Config, json: bool, cmd: Manage) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "warn");
    config.validate()?;
    let url = &config.database_url;
    // Only `serve` and `migrate` create a database: a command run in the wrong directory, or
    // with the wrong URL, must not silently start an empty one. One connection: a command runs
    // one statement at a time, and each connection to PostgreSQL costs handshakes.
    let how = keygate_store::Connect::existing().short_lived();
    let (store, master) =
        secrets::open_store_with(url, &config.master_key_source()?, how).await.map_err(OnDatabase::cannot_open)?;
    let ops = Ops::new(store.clone(), &master, None);
    manage(&ops, store.as_ref(), &master, json, cmd).await.map_err(|e| OnDatabase::of_command(e, url))
}

async fn manage(
    ops: &Ops,
    store: &dyn keygate_store::Store,
    master: &keygate_core::MasterKey,
    json: bool,
    cmd: Manage,
) -> anyhow::Result<()> {
    match cmd {
        Manage::Account(cmd) => match cmd {
            AccountCmd::Create { email, first_name, operator: false, password_stdin: false } => {
                print(json, &ops.create_account(&WHO, &email, &first_name).await?, account_line)
            }
            AccountCmd::Create { email, first_name, operator, password_stdin } => {
                let password = if password_stdin { Some(read_password()?) } else { None };
                let role = if operator { Role::Operator } else { Role::Customer };
                let passwords = Passwords::new(master);
                let account =
                    ops.create_login_account(&WHO, &email, &first_name, password.as_deref(), role, &passwords).await?;
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
                ops.set_password(&WHO, id, &password, &Passwords::new(master)).await?;
                print(json, &serde_json::json!({"id": id, "passwordSet": true}), |_| {
                    format!("password set for {id}; its console sessions have ended")
                })
            }
            AccountCmd::Promote { id } => set_role(ops, json, &id, Role::Operator).await,
            AccountCmd::Demote { id } => set_role(ops, json, &id, Role::Customer).await,
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
                print(json, &ops.ban(&WHO, parse_account_id(&id)?, reason.as_deref()).await?, account_line)
            }
            AccountCmd::Unban { id } => {
                print(json, &ops.unban(&WHO, parse_account_id(&id)?, None).await?, account_line)
            }
            AccountCmd::Limits { id, set, plan, no_plan } => {
                let id = parse_account_id(&id)?;
                let plan = if no_plan { Some(None) } else { plan.as_deref().map(Some) };
                let account = if set.set().is_some() || plan.is_some() {
                    ops.update_account_limits(&WHO, id, set.set(), plan).await?
                } else {
                    ops.get_account(id).await?.0
                };
                let effective = ops.account_limits(&account).await?;
                let value = serde_json::json!({"account": account, "effectiveRatelimits": effective});
                print(json, &value, |_| {
                    let plan = account.plan.as_deref().map(|p| format!("  plan={p}")).unwrap_or_default();
                    format!("{}{plan}\n{}", account_line(&account), limit_lines(&effective))
                })
            }
            AccountCmd::Credits { id, change } => {
                credits(ops, CreditScope::Account(parse_account_id(&id)?), change, json).await
            }
            AccountCmd::Allowlist { id, networks, clear } => {
                let id = parse_account_id(&id)?;
                let account = if clear || !networks.is_empty() {
                    ops.set_account_ip_allowlist(&WHO, id, networks).await?
                } else {
                    ops.get_account(id).await?.0
                };
                print(json, &account, |a| {
                    let list = if a.ip_allowlist.is_empty() {
                        "  ip allowlist: none (any address, as far as the account goes)".into()
                    } else {
                        format!("  ip allowlist: {}", join(&a.ip_allowlist))
                    };
                    format!("{}\n{list}", account_line(a))
                })
            }
        },
        Manage::Role(cmd) => match cmd {
            RoleCmd::Put { name, permissions } => {
                let (role, created) = ops.put_role(&WHO, &name, permissions).await?;
                print(json, &role, |r| {
                    let verb = if created { "created" } else { "replaced" };
                    format!("role {} {verb}\n{}", r.name, permission_line(&r.permissions))
                })
            }
            RoleCmd::List => print(json, &ops.list_roles().await?, |v| {
                if v.is_empty() {
                    return "no roles".into();
                }
                v.iter()
                    .map(|r| format!("{}\n{}", r.name, permission_line(&r.permissions)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
            RoleCmd::Show { name } => {
                let (role, credentials) = ops.get_role(&name).await?;
                let value = serde_json::json!({"role": role, "credentials": credentials});
                print(json, &value, |_| {
                    format!("{}  credentials={credentials}\n{}", role.name, permission_line(&role.permissions))
                })
            }
            RoleCmd::Delete { name } => {
                ops.delete_role(&WHO, &name).await?;
                print(json, &serde_json::json!({"name": name, "deleted": true}), |_| format!("role {name} deleted"))
            }
        },
        Manage::Plan(cmd) => match cmd {
            PlanCmd::Put { name, set, credits_refill } => {
                let (plan, created) =
                    ops.put_plan(&WHO, &name, set.set().unwrap_or_default(), credits_refill.as_ref()).await?;
                print(json, &plan, |p| {
                    let verb = if created { "created" } else { "replaced" };
                    format!("plan {} {verb}\n{}", p.name, plan_limit_lines(&p.ratelimits))
                })
            }
            PlanCmd::List => print(json, &ops.list_plans().await?, |v| {
                if v.is_empty() {
                    return "no plans".into();
                }
                v.iter()
                    .map(|p| format!("{}\n{}", p.name, plan_limit_lines(&p.ratelimits)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
            PlanCmd::Show { name } => {
                let (plan, accounts) = ops.get_plan(&name).await?;
                let value = serde_json::json!({"plan": plan, "accounts": accounts});
                print(json, &value, |_| {
                    format!("{}  accounts={accounts}\n{}", plan.name, plan_limit_lines(&plan.ratelimits))
                })
            }
            PlanCmd::Delete { name } => {
                ops.delete_plan(&WHO, &name).await?;
                print(json, &serde_json::json!({"name": name, "deleted": true}), |_| format!("plan {name} deleted"))
            }
        },
        Manage::Credential(cmd) => match cmd {
            CredentialCmd::Create { account, fields } => {
                let account = parse_account_id(&account)?;
                let change = fields.change()?;
                let plain = change.is_empty();
                let issued = ops.create_credential_with(&WHO, account, change).await?;
                print(json, &issued, |i| {
                    // What it was created with, when it was created with something.
                    if plain {
                        self::issued(i)
                    } else {
                        format!("{}\n\n{}", credential_line(&i.credential), self::issued(i))
                    }
                })
            }
            CredentialCmd::Update { client_id, change } => {
                let change = change.change()?;
                print(json, &ops.update_credential(&WHO, parse_client_id(&client_id)?, change).await?, credential_line)
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
                print(json, &ops.revoke_credential(&WHO, parse_client_id(&client_id)?).await?, credential_line)
            }
            CredentialCmd::Limits { client_id, set } => {
                let id = parse_client_id(&client_id)?;
                let credential = match set.set() {
                    Some(limits) => ops.set_credential_ratelimits(&WHO, id, limits).await?,
                    None => ops.get_credential(id).await?,
                };
                let effective = ops.credential_limits(&credential).await?;
                let value = serde_json::json!({"credential": credential, "effectiveRatelimits": effective});
                print(json, &value, |_| format!("{}\n{}", credential_line(&credential), limit_lines(&effective)))
            }
            CredentialCmd::Credits { client_id, change } => {
                credits(ops, CreditScope::Credential(parse_client_id(&client_id)?), change, json).await
            }
            CredentialCmd::Rotate { client_id, grace } => {
                let id = parse_client_id(&client_id)?;
                // What worked before, to say which older keys this rotation ended.
                let before = ops.get_credential(id).await?;
                let rotated = ops.rotate_credential(&WHO, id, grace.unwrap_or_default()).await?;
                let rotation = Rotation::of(&before, &rotated.credential);
                let mut value = serde_json::to_value(&rotated)?;
                value["oldKeyExpiresAt"] = rotation.previous_until.into();
                value["previousGeneration"] = rotation.previous.into();
                value["endedGenerations"] = rotation.ended.iter().map(|g| g.generation).collect::<Vec<_>>().into();
                print(json, &value, |_| format!("{}\n\n{}", issued(&rotated), rotation.describe(&rotated.credential)))
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
                print(json, &ops.rotate_signing_key(&WHO).await?, |k| format!("new signing key {}", k.kid))
            }
            SigningKeyCmd::Retire { kid } => {
                print(json, &ops.retire_signing_key(&WHO, &kid).await?, |k| format!("retired {}", k.kid))
            }
        },
        Manage::Usage(cmd) => usage::run(ops, json, cmd).await,
        Manage::Audit(cmd) => audit::run(ops, json, cmd).await,
        Manage::AdminToken(AdminTokenCmd::Reset) => {
            let token = ops.reset_admin_token(&WHO).await?;
            print(json, &serde_json::json!({"adminToken": token}), |_| {
                format!("{token}\n\nShown only now; the previous admin token no longer works.")
            })
        }
    }
}

/// One line per limit that applies, with where it comes from.
fn limit_lines(limits: &[EffectiveLimit]) -> String {
    if limits.is_empty() {
        return "  no rate limits".into();
    }
    limits
        .iter()
        .map(|l| {
            let from = match (&l.source, &l.plan) {
                (Source::Plan, Some(p)) => format!("plan {p}"),
                (Source::Plan, None) => "plan".into(),
                (Source::Account, _) => "account".into(),
                (Source::Credential, _) => "credential".into(),
            };
            format!("  {}={}/{}  from {from}", l.name, l.limit, l.duration)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn plan_limit_lines(limits: &[RateLimit]) -> String {
    if limits.is_empty() {
        return "  no rate limits".into();
    }
    limits.iter().map(|l| format!("  {}={}/{}", l.name, l.limit, l.duration)).collect::<Vec<_>>().join("\n")
}

/// `credential credits` / `account credits`: one change (or none) and the balance after it.
async fn credits(ops: &Ops, scope: CreditScope, change: CreditFlags, json: bool) -> anyhow::Result<()> {
    let adjustment = match (change.add, change.set) {
        (Some(n), _) => Some(Adjustment::Add(n)),
        (_, Some(n)) => Some(Adjustment::Set(n)),
        _ => None,
    };
    let mut replayed = false;
    if let Some(a) = adjustment {
        replayed = ops.adjust_credits(&WHO, scope, a, change.idempotency_key.as_deref()).await?.replayed;
    } else if change.idempotency_key.is_some() {
        anyhow::bail!("--idempotency-key goes with --add or --set");
    } else if let Some(remaining) = change.remaining {
        ops.set_credits(&WHO, scope, Some(&CreditsConfig { remaining, refill: change.refill })).await?;
    } else if change.clear {
        ops.set_credits(&WHO, scope, None).await?;
    }
    let balance = ops.credit_balance(scope).await?;
    let value = serde_json::json!({"credits": balance, "replayed": replayed});
    print(json, &value, |_| {
        let line = balance.as_ref().map_or_else(|| "no credits quota: requests are not charged".into(), credit_line);
        if replayed { format!("{line}\n(already applied with this idempotency key: nothing changed)") } else { line }
    })
}

fn credit_line(b: &CreditBalance) -> String {
    let refill = match (b.refill, b.next_refill_at) {
        (Some(r), Some(at)) => format!("  refill={r} next={}", fmt_time(at)),
        (Some(r), None) => format!("  refill={r}"),
        _ => String::new(),
    };
    let source = match b.source {
        keygate_core::credits::CreditSource::Own => "",
        keygate_core::credits::CreditSource::Plan => "  (from its plan)",
    };
    format!("credits remaining={} (leased by nodes: {}){refill}{source}", b.remaining, b.leased)
}

async fn set_role(ops: &Ops, json: bool, id: &str, role: Role) -> anyhow::Result<()> {
    let id = parse_account_id(id)?;
    ops.set_role(&WHO, id, role).await?;
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
