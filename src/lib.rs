//! ddbcache: a caching proxy sidecar for Amazon DynamoDB.
//!
//! Applications point their DynamoDB endpoint at it and change nothing else. GetItem and
//! BatchGetItem are answered from an item cache, Query and Scan from a query cache; writes that
//! pass through invalidate what they touch, so a client never reads its own acknowledged write
//! back stale. Everything else is forwarded unchanged, re-signed with SigV4.
//!
//! Where things live (ARCHITECTURE.md has the whole map): [`config`] (settings), [`server`]
//! (listeners, lifecycle), [`proxy`] (the request pipeline and cache policy), [`protocol`] (the
//! DynamoDB wire format), [`cache`] (entries, generations, single-flight, key schemas),
//! [`upstream`] (HTTP client, signing), [`aliases`] (table aliases), [`readiness`], [`admin`]
//! and [`metrics`].

pub use ddbcache_protocol as protocol;

mod admin;
pub mod aliases;
pub mod cache;
mod clock;
pub mod config;
mod connection;
mod fleet;
pub mod inject;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod readiness;
pub mod server;
mod tls;
pub mod upstream;
mod wait;
