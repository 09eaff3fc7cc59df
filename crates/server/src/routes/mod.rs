//! HTTP handlers, one module per audience: the protocol (customers' clients), the admin API
//! (operators), health (orchestrators). Handlers stay thin: extract, authenticate, call
//! ops/authenticator, map to a DTO.

pub mod admin;
pub mod audit;
pub mod credits;
pub mod extract;
pub mod health;
pub mod keys;
pub mod protocol;
pub mod usage;
