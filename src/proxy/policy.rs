//! Cache policy, in one place: whether a read may use the cache and for how long, how a miss must
//! be sent, and whether an upstream answer may be stored. Every "no" has a name — a
//! [`BypassReason`] (the read went around the cache) or an [`Unstored`] reason (the miss was
//! answered but not stored) — that becomes a metric label, so a metric or a log line says why.
//!
//! The rules, in the order a read meets them:
//! 1. The request must be one DynamoDB certainly accepts (`protocol::validate`), parsed to a key
//!    ddbcache understands, for a table ddbcache can identify (a name, or the ARN of a table of
//!    the request's region and account), without `ConsistentRead`, and the table's TTL for that
//!    cache must not be `0s`. Otherwise: bypass.
//! 2. A GetItem's key must have exactly the table's key attributes (from its DescribeTable);
//!    when it does not, the schema is contradicted and the read bypasses.
//! 3. A miss on something written within the consistency window is sent with
//!    `ConsistentRead: true` where DynamoDB allows it (GetItem, BatchGetItem, Query and Scan on
//!    the table or a local secondary index) and the client did not ask for consumed capacity
//!    (which a consistent read would double); otherwise it is sent as it came and not stored.
//! 4. An answer is stored only if it is a 200 with a plain body, of the shape DynamoDB's answers
//!    have, the key schema is known and matches, and no write began or may still land since the
//!    read started.

use std::time::Duration;

use http::{header, StatusCode};

use crate::config::{Config, TableTtls};
use crate::fleet::{Blocked, Fleet};
use crate::protocol::table::KeySchema;
use crate::protocol::{answers, Operation, HEADER_CRC32};
use crate::upstream::UpstreamResponse;

/// Why a cacheable operation went straight upstream without looking in the cache or filling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BypassReason {
    /// `ConsistentRead: true`: the client asked for the latest committed value.
    ConsistentRead,
    /// The table's TTL for this cache is `0s`.
    CacheOff,
    /// A parameter ddbcache does not key on (an unknown field, a field of the wrong type, a key
    /// value that is not S, N or B): it might change the answer.
    NotUnderstood,
    /// Not proven to be a request DynamoDB accepts: a hit must never answer one it would reject.
    NotProvenValid,
    /// A table ARN of another account or region, or a malformed one: never a local table's
    /// entries.
    ForeignTable,
    /// The key's attributes are not the table's key attributes.
    KeyMismatch,
    /// The fleet bus subscription is down: a peer's invalidation may have been missed.
    FleetLinkDown,
    /// This sidecar's own invalidations wait to be published: peers may not know of them, and
    /// the bus is probably unhealthy.
    FleetBacklog,
}

impl BypassReason {
    pub(crate) const ALL: [BypassReason; 8] = [
        BypassReason::ConsistentRead,
        BypassReason::CacheOff,
        BypassReason::NotUnderstood,
        BypassReason::NotProvenValid,
        BypassReason::ForeignTable,
        BypassReason::KeyMismatch,
        BypassReason::FleetLinkDown,
        BypassReason::FleetBacklog,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            BypassReason::ConsistentRead => "consistent_read",
            BypassReason::CacheOff => "cache_off",
            BypassReason::NotUnderstood => "not_understood",
            BypassReason::NotProvenValid => "not_proven_valid",
            BypassReason::ForeignTable => "foreign_table",
            BypassReason::KeyMismatch => "key_mismatch",
            BypassReason::FleetLinkDown => "fleet_link_down",
            BypassReason::FleetBacklog => "fleet_backlog",
        }
    }
}

/// Why a miss was answered but its answer not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstored {
    /// A write began since the read started.
    Raced,
    /// A write whose outcome is unknown may still land.
    InDoubt,
    /// Written within the consistency window, and the read could not be made consistent.
    RecentWrite,
    /// The table's key schema could not be had, or does not match the read.
    Schema,
    /// Not a 200 with a plain body.
    Answer,
    /// The body does not match the upstream's `x-amz-crc32`: damaged on the way. It is passed on
    /// as it came, so the client's own check catches it, but never stored (a hit would re-serve
    /// it with a fresh, valid checksum).
    Checksum,
    /// Not shaped as DynamoDB's answer to the operation (unknown fields, items that are not
    /// attribute-value maps): whatever produced it, it is not an answer to keep.
    Shape,
}

impl Unstored {
    pub(crate) const ALL: [Unstored; 7] = [
        Unstored::Raced,
        Unstored::InDoubt,
        Unstored::RecentWrite,
        Unstored::Schema,
        Unstored::Answer,
        Unstored::Checksum,
        Unstored::Shape,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Unstored::Raced => "raced",
            Unstored::InDoubt => "in_doubt",
            Unstored::RecentWrite => "recent_write",
            Unstored::Schema => "schema",
            Unstored::Answer => "answer",
            Unstored::Checksum => "checksum",
            Unstored::Shape => "shape",
        }
    }
}

impl From<crate::cache::Refusal> for Unstored {
    fn from(r: crate::cache::Refusal) -> Unstored {
        match r {
            crate::cache::Refusal::Raced => Unstored::Raced,
            crate::cache::Refusal::InDoubt => Unstored::InDoubt,
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

/// Whether the fleet lets this sidecar use its cache at all: not while it may have missed a
/// peer's invalidation, nor while its own wait to be published. Asked before every cacheable read.
#[inline]
pub(crate) fn fleet_read(fleet: &Fleet) -> Option<BypassReason> {
    fleet.blocked().map(|blocked| match blocked {
        Blocked::LinkDown => BypassReason::FleetLinkDown,
        Blocked::Backlog => BypassReason::FleetBacklog,
    })
}

/// Rule 1 for an item read of table `name` (the plain name, for per-table settings).
pub(crate) fn item_read(config: &Config, name: &str, consistent_read: bool) -> ItemDecision {
    if consistent_read {
        return ItemDecision::Bypass(BypassReason::ConsistentRead);
    }
    match config.table_ttls(name) {
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

/// Rule 1 for a Query or Scan of table `name`.
pub(crate) fn query_read(config: &Config, name: &str, consistent_read: bool) -> QueryDecision {
    if consistent_read {
        return QueryDecision::Bypass(BypassReason::ConsistentRead);
    }
    match config.table_ttls(name).query {
        Some(ttl) => QueryDecision::Cache { ttl },
        None => QueryDecision::Bypass(BypassReason::CacheOff),
    }
}

/// How a miss is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissRead {
    /// As the client sent it; the answer may be stored.
    AsSent,
    /// With `ConsistentRead: true` (rule 3); the answer may be stored.
    Consistent,
    /// As the client sent it; the answer must not be stored, for this reason.
    Unstored(Unstored),
}

/// Rule 3: how to send a miss, given the marks on what it reads (`restrictions`), whether
/// DynamoDB allows a consistent read of it (`consistent_allowed`), and whether the client asked
/// for consumed capacity.
pub(crate) fn miss_read(
    restrictions: crate::cache::Restrictions,
    consistent_allowed: bool,
    wants_capacity: bool,
) -> MissRead {
    if restrictions.in_doubt {
        MissRead::Unstored(Unstored::InDoubt)
    } else if !restrictions.recently_written {
        MissRead::AsSent
    } else if consistent_allowed && !wants_capacity {
        MissRead::Consistent
    } else {
        MissRead::Unstored(Unstored::RecentWrite)
    }
}

/// Whether a Query or Scan on `index` may be sent with `ConsistentRead` (the base table and local
/// secondary indexes allow it; global ones do not).
pub(crate) fn consistent_allowed(schema: Option<&KeySchema>, index: Option<&str>) -> bool {
    schema.and_then(|s| s.index_shares_partitions(index)) == Some(true)
}

/// Rule 4, first part: whether an upstream answer to `op` may be stored at all — a 200 with a
/// plain body (a hit answers with the stored bytes as they are, so they must be the plain JSON),
/// matching the upstream's `x-amz-crc32` when it sent one, of the shape DynamoDB's answers to
/// `op` have.
pub(crate) fn storable(answer: &UpstreamResponse, op: Operation) -> Result<(), Unstored> {
    let identity = answer
        .headers
        .get(header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if answer.status != StatusCode::OK || !identity {
        return Err(Unstored::Answer);
    }
    if let Some(sent) = answer.headers.get(HEADER_CRC32) {
        let intact = std::str::from_utf8(sent.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|crc| crc == crc32fast::hash(&answer.body));
        if !intact {
            return Err(Unstored::Checksum);
        }
    }
    if !answers::has_answer_shape(op, &answer.body) {
        return Err(Unstored::Shape);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Restrictions;

    fn answer(status: u16, body: &'static [u8], crc: Option<&str>) -> UpstreamResponse {
        let mut headers = http::HeaderMap::new();
        if let Some(crc) = crc {
            headers.insert(HEADER_CRC32, crc.parse().unwrap());
        }
        UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: bytes::Bytes::from_static(body),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn only_intact_answers_of_dynamodb_shape_are_stored() {
        let item = br#"{"Item":{"pk":{"S":"a"}}}"#;
        let crc = crc32fast::hash(item).to_string();
        let get = |a: &UpstreamResponse| storable(a, Operation::GetItem);
        assert_eq!(get(&answer(200, item, Some(&crc))), Ok(()));
        assert_eq!(get(&answer(200, item, None)), Ok(()));
        assert_eq!(
            get(&answer(200, item, Some("12345"))),
            Err(Unstored::Checksum)
        );
        assert_eq!(get(&answer(500, item, None)), Err(Unstored::Answer));
        assert_eq!(
            get(&answer(200, br#"{"message":"x"}"#, None)),
            Err(Unstored::Shape)
        );
        assert_eq!(
            storable(&answer(200, br#"{"Count":0}"#, None), Operation::Query),
            Err(Unstored::Shape)
        );
    }

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

    #[test]
    fn a_recent_write_makes_a_miss_consistent_where_it_can_and_unstored_where_it_cannot() {
        let recent = Restrictions {
            recently_written: true,
            in_doubt: false,
        };
        assert_eq!(
            miss_read(Restrictions::default(), true, true),
            MissRead::AsSent
        );
        assert_eq!(miss_read(recent, true, false), MissRead::Consistent);
        assert_eq!(
            miss_read(recent, false, false),
            MissRead::Unstored(Unstored::RecentWrite)
        );
        assert_eq!(
            miss_read(recent, true, true),
            MissRead::Unstored(Unstored::RecentWrite)
        );
        let doubt = Restrictions {
            recently_written: true,
            in_doubt: true,
        };
        assert_eq!(
            miss_read(doubt, true, false),
            MissRead::Unstored(Unstored::InDoubt)
        );
    }
}
