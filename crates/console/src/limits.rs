//! Rate limits as the console shows and takes them: one limit per line, `NAME=LIMIT/DURATION`
//! (the CLI's `--ratelimit` syntax, e.g. `requests=10/1s`), and rows for the pages that list what
//! applies and where it comes from. The rules themselves (names, windows, overrides) are
//! [`keygate_core::ratelimit`]'s; the operations are [`keygate_ops::Ops`]'.

use keygate_core::ratelimit::{self, AccountLimit, EffectiveLimit, MAX_LIMIT, RateLimit, Source, Window};

/// The syntax of one limit, for help texts and error messages.
pub(crate) const SYNTAX: &str = "NAME=LIMIT/DURATION, e.g. requests=10/1s";

/// Reads a set of limits: one per line (commas separate them too), blank lines ignored. The
/// error names the line and is safe to show (askama escapes it).
pub fn parse_lines(text: &str) -> Result<Vec<RateLimit>, String> {
    let mut set = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            set.push(parse_one(item).map_err(|m| format!("line {}: {m}", i + 1))?);
        }
    }
    ratelimit::validate(&set)?;
    Ok(set)
}

fn parse_one(item: &str) -> Result<RateLimit, String> {
    let shown: String = item.chars().take(60).collect();
    let bad = || format!("{shown:?} is not a rate limit: write {SYNTAX}");
    let (name, rest) = item.split_once('=').ok_or_else(bad)?;
    let (limit, duration) = rest.split_once('/').ok_or_else(bad)?;
    let (name, limit, duration) = (name.trim(), limit.trim(), duration.trim());
    if !ratelimit::valid_name(name) {
        return Err(format!(
            "the name {:?} must be 1 to 64 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit",
            name.chars().take(60).collect::<String>()
        ));
    }
    let bad_limit = || format!("the limit of {name:?} must be a whole number from 0 to {MAX_LIMIT}");
    let limit: u64 = limit.parse().map_err(|_| bad_limit())?;
    if limit > MAX_LIMIT {
        return Err(bad_limit());
    }
    let duration: Window =
        duration.parse().map_err(|_| format!("the duration of {name:?} must be a whole number and a unit (s, m, h or d) from 1s to 30d, like 1s, 10m, 24h or 30d"))?;
    Ok(RateLimit::new(name, limit, duration))
}

/// A set of limits in the form [`parse_lines`] reads, one per line.
pub fn to_lines(set: &[RateLimit]) -> String {
    set.iter().map(|l| format!("{}={}/{}", l.name, l.limit, l.duration)).collect::<Vec<_>>().join("\n")
}

/// An account's limits (as [`keygate_ops::Ops::account_limits`] gives them) in the form
/// [`EffectiveLimit::for_credential`] combines with each credential's own: one look-up for a
/// page of credentials.
pub(crate) fn shared(account: &[EffectiveLimit]) -> Vec<AccountLimit> {
    account.iter().map(|e| AccountLimit { limit: e.rate_limit(), plan: e.plan.clone() }).collect()
}

/// Who reads where a limit comes from.
#[derive(Clone, Copy)]
pub(crate) enum Reader {
    Customer,
    Operator,
}

/// One limit as a page shows it.
pub(crate) struct LimitRow {
    pub name: String,
    pub limit: u64,
    pub duration: String,
    /// Where it comes from ("" for a plan's own list).
    pub source: String,
}

impl LimitRow {
    pub fn plain(l: &RateLimit) -> Self {
        Self { name: l.name.clone(), limit: l.limit, duration: l.duration.to_string(), source: String::new() }
    }

    pub fn of(e: &EffectiveLimit, reader: Reader) -> Self {
        let source = match (&e.source, reader) {
            (Source::Plan, _) => match &e.plan {
                Some(p) => format!("plan {p}"),
                None => "plan".into(),
            },
            (Source::Account, Reader::Customer) => "your account".into(),
            (Source::Account, Reader::Operator) => "account".into(),
            (Source::Credential, Reader::Customer) => "your key".into(),
            (Source::Credential, Reader::Operator) => "credential".into(),
        };
        Self { source, ..Self::plain(&e.rate_limit()) }
    }

    pub fn all(set: &[EffectiveLimit], reader: Reader) -> Vec<Self> {
        set.iter().map(|e| Self::of(e, reader)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_print() {
        let set = parse_lines("requests=10/1s\r\n\n  daily = 10000 / 1d ,burst=0/60s\n").unwrap();
        let shown: Vec<_> = set.iter().map(|l| (l.name.as_str(), l.limit, l.duration.to_string())).collect();
        assert_eq!(
            shown,
            [("requests", 10, "1s".to_owned()), ("daily", 10000, "1d".to_owned()), ("burst", 0, "1m".to_owned())]
        );
        assert_eq!(to_lines(&set), "requests=10/1s\ndaily=10000/1d\nburst=0/1m");
        assert_eq!(parse_lines(&to_lines(&set)).unwrap(), set);
        assert!(parse_lines("").unwrap().is_empty());
        assert!(parse_lines(" \n\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, says) in [
            ("requests=10/1s\nnonsense", "line 2: \"nonsense\" is not a rate limit"),
            ("requests=10", "line 1: \"requests=10\" is not a rate limit"),
            ("Requests=10/1s", "line 1: the name \"Requests\""),
            ("=10/1s", "line 1: the name \"\""),
            ("requests=-1/1s", "the limit of \"requests\" must be a whole number"),
            ("requests=ten/1s", "the limit of \"requests\" must be a whole number"),
            ("requests=1000000001/1s", "from 0 to 1000000000"),
            ("requests=10/1w", "the duration of \"requests\""),
            ("requests=10/31d", "the duration of \"requests\""),
            ("requests=10/0s", "the duration of \"requests\""),
            ("a=1/1s\na=2/1m", "\"a\" appears twice"),
        ] {
            let e = parse_lines(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let many: String = (0..=ratelimit::MAX_LIMITS).map(|i| format!("l{i}=1/1s\n")).collect();
        assert!(parse_lines(&many).unwrap_err().contains("at most 16"));
        // A long line is not echoed whole.
        let long = "x".repeat(5000);
        assert!(parse_lines(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn sources_per_reader() {
        let w: Window = "1s".parse().unwrap();
        let plan = [RateLimit::new("requests", 10, w)];
        let own = [RateLimit::new("burst", 5, w)];
        let account = ratelimit::account_limits(Some(("pro", &plan)), &own);
        let effective = EffectiveLimit::for_account(&account);
        assert_eq!(shared(&effective), account);
        let cred = EffectiveLimit::for_credential(&[RateLimit::new("key", 1, w)], &shared(&effective));
        let customer: Vec<_> = LimitRow::all(&cred, Reader::Customer).into_iter().map(|r| r.source).collect();
        assert_eq!(customer, ["your key", "plan pro", "your account"]);
        let operator: Vec<_> = LimitRow::all(&cred, Reader::Operator).into_iter().map(|r| r.source).collect();
        assert_eq!(operator, ["credential", "plan pro", "account"]);
    }
}
