//! keygate's HTTP server: the protocol endpoints, the authenticator and its cache, the change
//! feed follower, the admin API and start-up. Only this crate knows HTTP.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod console;
pub mod error;
pub mod feed;
pub mod gateway;
pub mod keys;
pub mod observe;
pub mod ops;
pub mod routes;
pub mod serve;
pub mod upstream;
pub mod usage;

pub use app::Application;
pub use config::Config;
