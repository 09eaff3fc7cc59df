//! keygate's server tested over HTTP: every test starts a real server (its own temporary
//! SQLite database and master key, port 0) and talks to it with reqwest, as customers' clients,
//! reverse proxies (`/auth/verify`) and operators (`/admin/v1`) do.
//!
//! - `protocol`: the vendor's protocol (x-api-key, getToken, Bearer, codes, statuses, bodies);
//! - `lifecycle`: revocation, rotation (with and without grace), bans, token expiry;
//! - `tokens`: forged, foreign and `alg: none` tokens, signing-key rotation;
//! - `admin`: the admin API's authentication, validation and answers;
//! - `feed`: writes made behind the server's back (as the CLI makes them) reach its cache;
//! - `console`: the web console's security (cookies, CSRF, throttling, sessions, ownership,
//!   the operator area, headers, secrets shown once);
//! - `console_audit`: the audit log in the console (the operators' page, its filters and paging,
//!   an account's history, a customer's own activity, escaping);
//! - `console_signup`: sign-up confirmed by email (`[email]`) through a real SMTP conversation
//!   with an in-test sink: accounts only by their link, a taken email not told, link expiry,
//!   mails per address, a relay that is down;
//! - `console_limits`: the console's plans and limits pages (operators edit, customers read);
//! - `console_credits`: credits in the console (operators set, adjust once per form and remove
//!   balances and plans' refills; customers read what is left and the next refill);
//! - `ratelimits`: rate limits and plans (1005, RateLimit headers, overrides, accuracy);
//! - `usage`: usage by outcome, hour and day, for a credential and an account (JSON and CSV);
//! - `gateway`: the reverse proxy in front of a real upstream (headers, routes, streaming,
//!   502/504, WebSocket, cancellation, metrics).

mod admin;
mod audit;
mod browser;
mod connections;
mod console;
mod console_audit;
mod console_credits;
mod console_keys;
mod console_limits;
mod console_signup;
mod credits;
mod feed;
mod gateway;
mod helpers;
mod lifecycle;
mod log;
mod permissions;
mod protocol;
mod ratelimits;
mod tokens;
mod usage;
