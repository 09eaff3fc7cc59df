//! `keygate usage export`: a credential's or an account's usage, per UTC day or hour and outcome,
//! as CSV (for billing) or JSON, on standard output. The period is checked as the admin API
//! checks it (`keygate_ops::UsageRequest::range`).

use std::io::Write;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use keygate_ops::{Ops, UsageRequest, parse_account_id, parse_client_id};
use keygate_store::{Granularity, UsageScope, now_ms};

#[derive(Subcommand)]
pub enum UsageCmd {
    /// Print a credential's or an account's usage per UTC day (or hour) and outcome, with the
    /// credits spent. CSV: a header line `start,client_id,outcome,requests,credits`, then one
    /// line per day or hour, credential and outcome (an account's credentials each have their
    /// own lines, no sums). JSON: what the admin API answers in `data`.
    Export(ExportArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["credential", "account"])))]
pub struct ExportArgs {
    /// The credential's clientId.
    #[arg(long, value_name = "CLIENT_ID")]
    credential: Option<String>,
    /// The account's id: its credentials' usage.
    #[arg(long, value_name = "ACCOUNT_ID")]
    account: Option<String>,
    /// The earliest start of a day or hour to include: RFC 3339 (2025-02-01T00:00:00Z), a date
    /// (2025-02-01, midnight UTC) or Unix milliseconds [default: 30 days, or 24 hours, before
    /// --to].
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// The end, exclusive, in the same forms [default: the end of the current day, or hour].
    /// At most 366 days after --from.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Days, or hours (kept for the last 7 days only).
    #[arg(long, value_enum, default_value_t = Bucket::Day)]
    granularity: Bucket,
    /// [default: csv; json with --json]
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bucket {
    Day,
    Hour,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Json,
}

pub async fn run(ops: &Ops, json: bool, cmd: UsageCmd) -> anyhow::Result<()> {
    let UsageCmd::Export(args) = cmd;
    let scope = match (&args.credential, &args.account) {
        (Some(id), _) => UsageScope::Credential(parse_client_id(id)?),
        (None, Some(id)) => UsageScope::Account(parse_account_id(id)?),
        (None, None) => unreachable!("clap requires --credential or --account"),
    };
    let granularity = match args.granularity {
        Bucket::Day => Granularity::Day,
        Bucket::Hour => Granularity::Hour,
    };
    let range =
        UsageRequest { from: args.from, to: args.to, granularity: Some(granularity), days: None }.range(now_ms())?;
    let format = args.format.unwrap_or(if json { Format::Json } else { Format::Csv });
    let out = match format {
        Format::Csv => ops.usage_csv(scope, range).await?,
        Format::Json => serde_json::to_string_pretty(&ops.usage(scope, range).await?)? + "\n",
    };
    // An export may be long and piped into `head`: a closed pipe ends it quietly.
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
