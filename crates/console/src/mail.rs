//! Email the console sends, over SMTP ([lettre]), when `[email]` is configured: at sign-up, the
//! link that makes the account, or, to an address that has an account already, a note saying so
//! and no link. The sign-up page answers the same either way (`signup`), so it does not tell who
//! is registered; only the mailbox's owner learns it.
//!
//! A mail is sent in the background: the page's answer neither waits for the relay nor takes
//! longer when it is slow or down. Each send has a 10 s timeout; at most [`MAX_IN_FLIGHT`] are
//! under way, more are dropped; one address gets at most a few mails per throttle window
//! (`throttle`), so sign-up cannot be used to flood someone's mailbox. Every outcome is counted in
//! `keygate_console_emails_total{kind,outcome}` and failures are logged (the relay's error, never
//! the message, which holds the link).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate_core::Secret;
use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox, Message};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// Sends under way at once, at most; past it a mail is dropped (and counted).
pub const MAX_IN_FLIGHT: usize = 32;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `[email]`: where and as whom the console sends mail.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// The relay, as lettre's URL: `smtps://USER:PASS@HOST:465` (TLS),
    /// `smtp://USER:PASS@HOST:587?tls=required` (STARTTLS), `smtp://HOST:PORT` (plain, for a
    /// relay on the same host). May hold the relay's password.
    pub smtp_url: Secret,
    /// The sender, `Name <address>` or an address.
    pub from: String,
    /// The console's public address, which the links in mails point to
    /// (`https://api.example.com/console`); never taken from a request's `Host`.
    pub console_url: String,
    /// How long a sign-up link stays valid.
    pub signup_link_ttl: Duration,
}

impl MailSettings {
    /// Whether the settings can be used (the URL parses, the sender is an address, the console
    /// URL is http(s) with a host and no query). Errors never repeat the SMTP URL (it may hold a
    /// password).
    pub fn check(&self) -> Result<(), String> {
        Mailer::new(self).map(|_| ())
    }
}

/// What a mail is, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The link that makes a new account.
    SignupLink,
    /// To an address with an account: someone tried to sign up with it.
    AlreadyRegistered,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::SignupLink => "signup_link",
            Self::AlreadyRegistered => "already_registered",
        }
    }
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Without a trailing `/`.
    console_url: String,
    pub(crate) link_ttl: Duration,
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).field("console_url", &self.console_url).finish()
    }
}

impl Mailer {
    pub fn new(s: &MailSettings) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(s.smtp_url.expose())
            .map_err(|_| {
                "email smtp_url must be smtps://[USER:PASS@]HOST[:PORT] or smtp://[USER:PASS@]HOST[:PORT][?tls=required]"
                    .to_owned()
            })?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| format!("email from {:?} is not an address (Name <a@example.com>): {e}", s.from))?;
        let console_url = s.console_url.trim_end_matches('/').to_owned();
        let ok = (console_url.starts_with("https://") || console_url.starts_with("http://"))
            && console_url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
            && !console_url.contains(['?', '#', ' ', '"', '<', '>'])
            && !console_url.chars().any(char::is_control);
        if !ok {
            return Err(format!(
                "email console_url {:?} must be the console's public http(s) address, e.g. https://api.example.com/console",
                s.console_url
            ));
        }
        if s.signup_link_ttl < Duration::from_secs(1) || s.signup_link_ttl > Duration::from_secs(30 * 86_400) {
            return Err("email signup_link_ttl must be between 1s and 30d".into());
        }
        Ok(Self { transport, from, console_url, link_ttl: s.signup_link_ttl, in_flight: Arc::default() })
    }

    /// The address a mail to `email` goes to, if it is one SMTP can carry.
    pub(crate) fn address(email: &str) -> Option<Address> {
        email.trim().parse().ok()
    }

    /// The sign-up link's mail.
    pub(crate) fn signup_link(&self, to: Address, token: &str) -> Option<Message> {
        let link = format!("{}/signup/confirm?token={token}", self.console_url);
        let body = format!(
            "Hello,\n\n\
             someone, hopefully you, asked to create an account with this email address at\n{console}.\n\n\
             To create it, open this link within {ttl}:\n\n{link}\n\n\
             If it was not you, ignore this mail: no account is made without the link.\n",
            console = self.console_url,
            ttl = in_words(self.link_ttl),
        );
        self.message(to, "Confirm your new account", body)
    }

    /// The mail to an address that has an account already.
    pub(crate) fn already_registered(&self, to: Address) -> Option<Message> {
        let body = format!(
            "Hello,\n\n\
             someone, maybe you, tried to create an account with this email address at\n{console}.\n\
             This address has an account already, so none was made. To sign in:\n\n{console}/login\n\n\
             (An account made for you by the platform's operators may have no password yet: ask them.)\n\
             If it was not you, you can ignore this mail.\n",
            console = self.console_url,
        );
        self.message(to, "You already have an account", body)
    }

    fn message(&self, to: Address, subject: &str, body: String) -> Option<Message> {
        // Lines end in CRLF before lettre picks the transfer encoding (the link's line is longer
        // than 7bit's 78 characters, so it is quoted-printable, whose line breaks stay breaks).
        let body = Body::new(body.replace('\n', "\r\n"));
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| tracing::error!(error = %e, "console: building a mail failed"))
            .ok()
    }

    /// Sends `message` in the background.
    pub(crate) fn send(&self, kind: Kind, message: Message) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(kind = kind.label(), "console: a mail was dropped: {MAX_IN_FLIGHT} sends are under way");
            count(kind, "dropped");
            return;
        }
        let transport = self.transport.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            match transport.send(message).await {
                Ok(_) => count(kind, "sent"),
                Err(e) => {
                    tracing::error!(kind = kind.label(), error = %e, "console: sending a mail failed");
                    count(kind, "failed");
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// A mail not sent because its address had had its share.
    pub(crate) fn throttled(&self, kind: Kind) {
        tracing::info!(kind = kind.label(), "console: a mail was not sent: its address had its share for now");
        count(kind, "throttled");
    }
}

/// "24 hours", "30 minutes", "1 day": how long, as a page or a mail says it.
pub(crate) fn in_words(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 && s != 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn count(kind: Kind, outcome: &'static str) {
    metrics::counter!("keygate_console_emails_total", "kind" => kind.label(), "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, from: &str, console: &str) -> MailSettings {
        MailSettings {
            smtp_url: Secret::new(url),
            from: from.into(),
            console_url: console.into(),
            signup_link_ttl: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn settings_are_checked_without_repeating_the_password() {
        let good = settings(
            "smtps://u:hunter2@mail.example.com",
            "Example <no-reply@example.com>",
            "https://x.example/console/",
        );
        good.check().unwrap();
        for (url, from, console) in [
            ("ftp://u:hunter2@mail.example.com", "a@example.com", "https://x.example/console"),
            ("not a url hunter2", "a@example.com", "https://x.example/console"),
            ("smtp://mail.example.com", "nobody", "https://x.example/console"),
            ("smtp://mail.example.com", "a@example.com", "x.example/console"),
            ("smtp://mail.example.com", "a@example.com", "https:///console"),
            ("smtp://mail.example.com", "a@example.com", "https://x.example/console?next=1"),
            ("smtp://mail.example.com", "a@example.com", "javascript:alert(1)"),
        ] {
            let e = settings(url, from, console).check().unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let mut short = good.clone();
        short.signup_link_ttl = Duration::from_millis(999);
        assert!(short.check().is_err());
    }

    #[tokio::test]
    async fn the_link_points_at_the_configured_console() {
        let m = Mailer::new(&settings("smtp://127.0.0.1:1", "a@example.com", "https://x.example/console/")).unwrap();
        let to = Mailer::address("b@example.com").unwrap();
        // Quoted-printable's soft line breaks and `=` undone (as a mail reader does).
        let decoded = |m: Message| String::from_utf8(m.formatted()).unwrap().replace("=\r\n", "").replace("=3D", "=");
        let text = decoded(m.signup_link(to.clone(), "TOKEN").unwrap());
        assert!(
            text.contains("\r\nhttps://x.example/console/signup/confirm?token=TOKEN\r\n"),
            "on a line of its own: {text}"
        );
        assert!(text.contains("within 24 hours"), "{text}");
        assert!(text.contains("To: b@example.com"), "{text}");
        let text = decoded(m.already_registered(to).unwrap());
        assert!(!text.contains("token"), "no link that makes an account: {text}");
        assert!(text.contains("https://x.example/console/login"), "{text}");
        assert!(Mailer::address("a b@example.com").is_none());
    }

    #[test]
    fn durations_in_words() {
        for (secs, words) in [
            (86_400, "24 hours"),
            (172_800, "2 days"),
            (3_600, "1 hour"),
            (1_800, "30 minutes"),
            (90, "90 seconds"),
            (1, "1 second"),
        ] {
            assert_eq!(in_words(Duration::from_secs(secs)), words);
        }
    }
}
