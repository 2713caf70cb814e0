//! Cache policy, in one place: whether a read may use the cache and for how long, and whether an
//! upstream answer may be stored. Every "no" has a named reason ([`BypassReason`]) that becomes the
//! `reason` label of `ddbcache_cache_bypasses_total`, so a metric or a log line says why a request
//! went around the cache.

use std::time::Duration;

use http::{header, StatusCode};

use crate::config::{Config, TableTtls};
use crate::upstream::UpstreamResponse;

/// Why a cacheable operation went straight upstream without looking in the cache or filling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BypassReason {
    /// `ConsistentRead: true`: the client asked for the latest committed value.
    ConsistentRead,
    /// The table's TTL for this cache is `0s`.
    CacheOff,
    /// A parameter ddbcache does not key on (an unknown field, a key value that is not S, N or
    /// B, a projection naming an undefined attribute name): it might change the answer.
    NotUnderstood,
}

impl BypassReason {
    pub(crate) const ALL: [BypassReason; 3] = [
        BypassReason::ConsistentRead,
        BypassReason::CacheOff,
        BypassReason::NotUnderstood,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            BypassReason::ConsistentRead => "consistent_read",
            BypassReason::CacheOff => "cache_off",
            BypassReason::NotUnderstood => "not_understood",
        }
    }
}

/// What may be done with an item read (GetItem, or one table of a BatchGetItem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemDecision {
    /// Look up, and fill a miss: an item for `found`, "no such item" for `absent` (`None`: not
    /// stored).
    Cache {
        found: Option<Duration>,
        absent: Option<Duration>,
    },
    Bypass(BypassReason),
}

/// What may be done with a Query or Scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryDecision {
    Cache { ttl: Duration },
    Bypass(BypassReason),
}

pub(crate) fn item_read(config: &Config, table: &str, consistent_read: bool) -> ItemDecision {
    if consistent_read {
        return ItemDecision::Bypass(BypassReason::ConsistentRead);
    }
    match config.table_ttls(table) {
        TableTtls {
            item: None,
            negative: None,
            ..
        } => ItemDecision::Bypass(BypassReason::CacheOff),
        TableTtls { item, negative, .. } => ItemDecision::Cache {
            found: item,
            absent: negative,
        },
    }
}

pub(crate) fn query_read(config: &Config, table: &str, consistent_read: bool) -> QueryDecision {
    if consistent_read {
        return QueryDecision::Bypass(BypassReason::ConsistentRead);
    }
    match config.table_ttls(table).query {
        Some(ttl) => QueryDecision::Cache { ttl },
        None => QueryDecision::Bypass(BypassReason::CacheOff),
    }
}

/// Whether an upstream answer may be stored at all: a 200 with an uncompressed body (a cache hit
/// answers with the stored bytes as they are, so they must be the plain JSON).
pub(crate) fn storable(answer: &UpstreamResponse) -> bool {
    let identity = answer
        .headers
        .get(header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    answer.status == StatusCode::OK && identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_read_and_zero_ttl_bypass_with_their_reason() {
        let config = Config::from_toml(
            "[tables.off]\nitem_ttl = \"0s\"\nnegative_ttl = \"0s\"\nquery_ttl = \"0s\"\n",
        )
        .unwrap();
        assert_eq!(
            item_read(&config, "t", true),
            ItemDecision::Bypass(BypassReason::ConsistentRead)
        );
        assert_eq!(
            item_read(&config, "off", false),
            ItemDecision::Bypass(BypassReason::CacheOff)
        );
        assert_eq!(
            query_read(&config, "off", false),
            QueryDecision::Bypass(BypassReason::CacheOff)
        );
        assert!(matches!(
            item_read(&config, "t", false),
            ItemDecision::Cache {
                found: Some(_),
                absent: Some(_)
            }
        ));
    }
}
