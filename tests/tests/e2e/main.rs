//! End-to-end tests: the real `portico` binary, real upstreams, real sockets.

mod support;

mod admin;
mod balancing;
mod better_auth;
mod browser;
mod check;
mod discovery;
mod dns;
mod docs;
mod edge;
mod grpc;
mod health;
mod jwt;
mod lifecycle;
mod limits;
mod logs;
mod observability;
mod rate_limit;
mod reload;
mod resilience;
mod revocation;
mod routing;
mod tls;
mod tracing;
