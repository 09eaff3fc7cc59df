//! Credits as the console shows and takes them: a balance in words for customers and operators
//! (what is left, whose balance it is, the refill as "500 every month on day 1", the next refill
//! in UTC), and the operator's forms: a balance and its refill line (`daily:AMOUNT` or
//! `monthly:AMOUNT[:DAY]`, the CLI's `--refill`), and an adjustment (add N, negative for a
//! refund, or set N) sent once per form thanks to an idempotency key made when the form is shown.
//! The rules (ranges, periods) are [`keygate_core::credits`]'; the operations
//! [`keygate_ops::Ops`]' (`set_credits`, `adjust_credits`, `credit_balance`).

use keygate_core::credits::{Adjustment, CreditBalance, CreditSource, Interval, MAX_CREDITS, Refill};
use rand::RngCore;

use super::limits::Reader;
use super::{fmt_time, iso_time};

/// The syntax of a refill line, for help texts and error messages.
pub(crate) const REFILL_SYNTAX: &str = "daily:AMOUNT or monthly:AMOUNT[:DAY], e.g. monthly:500:1";

/// The longest refill line the forms take (longer ones are not echoed in the error).
const MAX_REFILL_LINE: usize = 64;

/// A number of credits with thousands separators: `10,000`, `-1,500`.
pub(crate) fn amount(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A refill in words: "500 every day", "500 every month on day 1".
pub fn refill_words(r: &Refill) -> String {
    match r.interval {
        Interval::Daily => format!("{} every day", amount(r.amount)),
        Interval::Monthly => {
            let day = r.refill_day.unwrap_or(1);
            let shorter = if day > 28 { " (or the month's last day)" } else { "" };
            format!("{} every month on day {day}{shorter}", amount(r.amount))
        }
    }
}

/// Reads a refill line; empty: no refill. The error is safe to show (askama escapes it).
pub fn parse_refill(text: &str) -> Result<Option<Refill>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_REFILL_LINE {
        return Err(format!("a refill is {REFILL_SYNTAX}"));
    }
    // A malformed line is named in the message; a well-formed one out of range is not.
    text.parse().map(Some).map_err(|e: String| if e.starts_with('"') { e } else { format!("in the refill, {e}") })
}

/// Reads a balance: a whole number (the range is the operation's to check, with its message).
pub fn parse_balance(text: &str) -> Result<i64, String> {
    text.trim().parse().map_err(|_| format!("the balance must be a whole number of credits from 0 to {MAX_CREDITS}"))
}

/// Reads an adjustment: `op` is "add" or "set", `amount` a whole number (negative: a refund).
pub fn parse_adjustment(op: &str, text: &str) -> Result<Adjustment, String> {
    let n: Option<i64> = text.trim().strip_prefix('+').unwrap_or(text.trim()).parse().ok();
    match (op, n) {
        ("add", Some(n)) => Ok(Adjustment::Add(n)),
        ("set", Some(n)) => Ok(Adjustment::Set(n)),
        ("add", None) => Err(format!(
            "the credits to add must be a whole number from -{MAX_CREDITS} to {MAX_CREDITS} (negative: a refund)"
        )),
        ("set", None) => Err(format!("the balance must be a whole number of credits from 0 to {MAX_CREDITS}")),
        _ => Err("choose whether to add credits or set the balance".into()),
    }
}

/// A fresh idempotency key for an adjustment form: the same form sent twice (a refresh, a
/// double click, a retry) is applied once.
pub(crate) fn form_key() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    format!("console-{}", hex::encode(b))
}

/// Whose balance it is.
#[derive(Clone, Copy)]
pub(crate) enum Holder<'a> {
    Credential,
    /// An account, on plan `.0` (if any).
    Account(Option<&'a str>),
}

/// A balance as a page shows it.
pub(crate) struct BalanceView {
    /// What is left, with separators (may be below zero after a refund).
    pub remaining: String,
    pub negative: bool,
    /// Of that, what servers hold leased now (operators only; none when 0).
    pub leased: Option<String>,
    /// Whose balance it is: "your key", "your account", "plan pro"; "credential", "account".
    pub source: String,
    /// The refill in words.
    pub refill: Option<String>,
    /// The next refill: (as shown, in UTC; RFC 3339 for `<time datetime>`).
    pub next_refill: Option<(String, String)>,
}

impl BalanceView {
    pub fn of(b: &CreditBalance, holder: Holder<'_>, reader: Reader) -> Self {
        let source = match (holder, b.source, reader) {
            (Holder::Account(plan), CreditSource::Plan, _) => match plan {
                Some(p) => format!("plan {p}"),
                None => "plan".into(),
            },
            (Holder::Account(_), _, Reader::Customer) => "your account".into(),
            (Holder::Account(_), _, Reader::Operator) => "account".into(),
            (Holder::Credential, _, Reader::Customer) => "your key".into(),
            (Holder::Credential, _, Reader::Operator) => "credential".into(),
        };
        Self {
            remaining: amount(b.remaining),
            negative: b.remaining < 0,
            leased: matches!(reader, Reader::Operator).then_some(b.leased).filter(|l| *l > 0).map(amount),
            source,
            refill: b.refill.as_ref().map(refill_words),
            next_refill: b.next_refill_at.map(|t| (fmt_time(t), iso_time(t))),
        }
    }
}

/// The operator's view and forms for one balance (an account's or a credential's).
pub(crate) struct CreditsBlock {
    /// The suffix of the forms' element ids: "account" or the clientId.
    pub key: String,
    /// Where the forms post: `.../credits`, `.../credits/remove`, `.../credits/adjust`.
    pub action: String,
    /// The balance that applies (`None`: requests are not charged).
    pub balance: Option<BalanceView>,
    /// The balance is set on it (not the plan's): it can be removed.
    pub own: bool,
    /// The set form: the balance and the refill line (the current ones, or as typed).
    pub remaining: String,
    pub refill: String,
    pub set_error: Option<String>,
    /// The adjustment form: "set" picked (else "add"), the amount as typed, its key.
    pub op_set: bool,
    pub amount: String,
    pub adjust_error: Option<String>,
    pub idempotency_key: String,
    /// What the previous form did to this balance.
    pub notice: Option<&'static str>,
}

impl CreditsBlock {
    /// The block for a balance as it is now, with fresh forms.
    pub fn new(key: String, action: String, balance: Option<&CreditBalance>, holder: Holder<'_>) -> Self {
        let own = balance.is_some_and(|b| b.source == CreditSource::Own);
        // The set form starts from the balance's own values (a plan's are the plan's to change).
        let (remaining, refill) = match balance.filter(|_| own) {
            Some(b) => (b.remaining.to_string(), b.refill.map(|r| r.to_string()).unwrap_or_default()),
            None => (String::new(), String::new()),
        };
        Self {
            key,
            action,
            balance: balance.map(|b| BalanceView::of(b, holder, Reader::Operator)),
            own,
            remaining,
            refill,
            set_error: None,
            op_set: false,
            amount: String::new(),
            adjust_error: None,
            idempotency_key: form_key(),
            notice: None,
        }
    }

    /// Whether a refused form is shown in it (its forms are then open).
    pub fn refused(&self) -> bool {
        self.set_error.is_some() || self.adjust_error.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_separators() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (-1500, "-1,500"),
            (10_000, "10,000"),
            (123_456_789, "123,456,789"),
            (MAX_CREDITS, "1,000,000,000,000,000"),
            (i64::MIN, "-9,223,372,036,854,775,808"),
        ] {
            assert_eq!(amount(n), s);
        }
    }

    #[test]
    fn refills_in_words() {
        let words = |s: &str| refill_words(&s.parse().unwrap());
        assert_eq!(words("daily:100"), "100 every day");
        assert_eq!(words("monthly:500:1"), "500 every month on day 1");
        assert_eq!(words("monthly:500"), "500 every month on day 1");
        assert_eq!(words("monthly:10000:15"), "10,000 every month on day 15");
        assert_eq!(words("monthly:5:31"), "5 every month on day 31 (or the month's last day)");
    }

    #[test]
    fn forms_parse() {
        assert_eq!(parse_refill("  ").unwrap(), None);
        assert_eq!(parse_refill(" monthly:500:1 ").unwrap().unwrap().to_string(), "monthly:500:1");
        assert!(parse_refill("weekly:5").unwrap_err().contains("daily:AMOUNT or monthly:AMOUNT[:DAY]"));
        assert_eq!(
            parse_refill("monthly:5:40").unwrap_err(),
            "in the refill, refillDay must be between 1 and 31, got 40"
        );
        let long = "x".repeat(5000);
        assert!(parse_refill(&long).unwrap_err().len() < 100, "not echoed");
        assert_eq!(parse_balance(" 10000 "), Ok(10_000));
        assert!(parse_balance("ten").is_err());
        assert!(parse_balance("1.5").is_err());
        assert_eq!(parse_adjustment("add", "+500"), Ok(Adjustment::Add(500)));
        assert_eq!(parse_adjustment("add", "-500"), Ok(Adjustment::Add(-500)));
        assert_eq!(parse_adjustment("set", "7"), Ok(Adjustment::Set(7)));
        assert!(parse_adjustment("add", "").unwrap_err().contains("negative: a refund"));
        assert!(parse_adjustment("drop", "5").is_err());
        let (a, b) = (form_key(), form_key());
        assert!(a.len() == 40 && a != b, "{a} {b}");
    }

    #[test]
    fn balances_in_words() {
        let b = CreditBalance {
            remaining: 9_500,
            leased: 20,
            refill: Some("monthly:500:1".parse().unwrap()),
            source: CreditSource::Plan,
            next_refill_at: Some(1_738_368_000_000),
        };
        let v = BalanceView::of(&b, Holder::Account(Some("pro")), Reader::Customer);
        assert_eq!((v.remaining.as_str(), v.source.as_str(), v.leased), ("9,500", "plan pro", None));
        assert_eq!(v.refill.as_deref(), Some("500 every month on day 1"));
        assert_eq!(v.next_refill, Some(("2025-02-01 00:00\u{a0}UTC".into(), "2025-02-01T00:00:00Z".into())));
        let own = CreditBalance { source: CreditSource::Own, remaining: -3, refill: None, next_refill_at: None, ..b };
        let v = BalanceView::of(&own, Holder::Credential, Reader::Operator);
        assert_eq!((v.source.as_str(), v.negative, v.leased.as_deref()), ("credential", true, Some("20")));
        assert_eq!(BalanceView::of(&own, Holder::Credential, Reader::Customer).source, "your key");
        assert_eq!(BalanceView::of(&own, Holder::Account(Some("pro")), Reader::Customer).source, "your account");
        // The set form starts from an own balance, not from a plan's.
        let block = CreditsBlock::new("account".into(), "/a".into(), Some(&b), Holder::Account(Some("pro")));
        assert!(!block.own && block.remaining.is_empty() && block.refill.is_empty());
        let block = CreditsBlock::new("account".into(), "/a".into(), Some(&own), Holder::Account(None));
        assert!(block.own && block.remaining == "-3" && block.refill.is_empty());
    }
}
