//! Portico: a programmable API gateway built on Pingora.
//!
//! The binary (`src/main.rs`) is a thin command line over this library: [`server::run`]
//! assembles the Pingora server; [`snapshot::Snapshot`] is a config compiled into what the
//! request path reads; [`proxy::Gateway`] is the request path.

pub mod access_log;
pub mod admin;
pub mod certificates;
pub mod cli_registry;
pub mod compression;
pub mod config;
pub mod control;
pub mod dns;
pub mod drain;
pub mod global_limit;
pub mod json;
pub mod metrics;
pub mod otel;
pub mod probe;
pub mod proxy;
pub mod redis_link;
pub mod registry;
pub mod revocation_feed;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod socket_activation;
pub mod status_page;
pub mod tls;
pub mod upstream;
