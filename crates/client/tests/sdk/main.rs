//! keygate-client against real keygate servers: every test starts its own server in-process
//! (temporary SQLite database and master key, port 0) and drives it with the SDK, as a
//! customer's program and a platform's backend would.
//!
//! - `consumer`: `ApiKeyClient` and `TokenClient` through `/auth/verify`: identities, the token
//!   cache, refresh before expiry, the one refresh on 1101, typed refusals (1101, 1102, 1200);
//! - `gateway`: requests to an API behind keygate (a tiny local upstream), in both status modes;
//! - `admin`: every admin API call, typed errors, lists as streams over several pages;
//! - `ratelimits`: rate limits on credentials and accounts, plans, `1005` with `Retry-After` (never
//!   retried) and where each limit stands after a verify;
//! - `credits`: balances on credentials, accounts and plans, spent through `/auth/verify` at a
//!   cost and through the gateway, `1006` as `Error::InsufficientCredits` (never retried),
//!   top-ups applied once per idempotency key, bad settings as typed `1003`s;
//! - `keys`: a credential's name, metadata, expiry, enabled, permissions, roles and allowlist at
//!   creation and in a change, roles, an account's allowlist, the identity's new fields, `1009` as
//!   `Error::PermissionDenied` (never retried), bad fields as typed `1003`s;
//! - `audit`: the audit log of the changes made with the SDK, by target, account, action, actor
//!   and time, who made them, the fields changed, paging as a stream, a bad filter as a `1003`;
//! - `usage`: usage by outcome for a credential and an account (buckets, CSV, the older form);
//! - `retry`: backoff on 5xx / 1503 / connection failures, never on 4xx, against a local server
//!   scripted to fail (it stands in for a failing upstream or proxy, not for keygate).

mod admin;
mod audit;
mod consumer;
mod credits;
mod gateway;
mod keys;
mod ratelimits;
mod retry;
mod support;
mod usage;
