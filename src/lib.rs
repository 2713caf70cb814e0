//! ddbcache: a caching proxy sidecar for Amazon DynamoDB.
//!
//! Applications point their DynamoDB endpoint at it and change nothing else. GetItem and
//! BatchGetItem are answered from an item cache, Query and Scan from a query cache; writes that
//! pass through invalidate what they touch, so a client never reads its own acknowledged write
//! back stale. Everything else is forwarded unchanged, re-signed with SigV4.
//!
//! Where things live: [`config`] (settings), [`server`] (listeners, shutdown), [`proxy`] (the
//! request pipeline), [`protocol`] (the DynamoDB wire format), [`cache`] (entries, generations,
//! single-flight), [`upstream`] (HTTP client, signing), [`admin`] and [`metrics`].

pub mod admin;
pub mod cache;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod upstream;
