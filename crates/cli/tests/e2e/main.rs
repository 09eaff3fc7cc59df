//! End-to-end tests of the `keygate` binary: real processes, a real SQLite file in a fresh
//! temporary directory per test, real HTTP.
//!
//! Run with `cargo test -p keygate --test e2e`. The vendor-example test needs `curl` and
//! Python `requests`, the nginx test an nginx with `auth_request`, the Caddy test `caddy`, the
//! console test Chromium and chromedriver; without them they print a loud SKIP, or fail when
//! `KEYGATE_TEST_REQUIRE_ALL=1`.

mod support;

mod audit;
mod caddy;
mod cli;
mod config;
mod console;
mod crash;
mod credits;
mod durability;
mod invalidation;
mod lifecycle;
mod limits;
mod nginx;
mod openapi;
mod operator;
mod permissions;
mod secrets;
mod soak;
mod systemd;
mod usage;
mod vendor;
