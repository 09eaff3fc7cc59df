//! keygate's HTTP server: it assembles the parts (the authenticator of `keygate-auth`, the admin
//! operations of `keygate-ops`, the gateway, the console) and owns what only a server has:
//! configuration ([`config`]), start-up ([`startup`]), serving connections ([`serve`]), routing
//! ([`router`]), the handlers of keygate's own endpoints ([`routes`]) and telemetry ([`observe`]).
//!
//! Imports point one way: `startup` -> `router` -> `routes` -> `app` (the shared state);
//! `serve` runs any handler and knows none of them.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod app;
pub mod config;
pub mod observe;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod serve;
pub mod startup;

pub use config::Config;
pub use startup::Application;
