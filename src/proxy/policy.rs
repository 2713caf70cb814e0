//! Cache policy, in one place: whether a read may use the cache and how ([`plan`],
//! [`plan_batch`]), how a miss must be sent ([`miss_read`]), and what of an upstream answer is
//! stored ([`keep`], [`storable`]). Every "no" has a name — a [`BypassReason`] (the read went
//! around the cache) or an [`Unstored`] reason (the miss was answered but not stored) — that
//! becomes a metric label, so a metric or a log line says why. The read paths carry out what is
//! decided here and decide nothing themselves.
//!
//! The rules, in the order a read meets them:
//! 1. The fleet must let this sidecar serve hits (its bus is up, its own invalidations went out).
//! 2. The request must be one DynamoDB certainly accepts (`protocol::validate`), parsed to a key
//!    ddbcache understands, for a table ddbcache can identify (a name, or the ARN of a table of
//!    the request's region and account), without `ConsistentRead`, and the table's TTL for that
//!    cache must not be `0s`. Otherwise: bypass.
//! 3. A GetItem's (or BatchGetItem's) key must have exactly the table's key attributes (from its
//!    DescribeTable); when it does not, the schema is contradicted and the read bypasses. A Query
//!    that asks for `INDEXES` capacity on an index ddbcache cannot place yet bypasses while the
//!    schema is fetched (a hit could not say which kind of index it read).
//! 4. A miss on something written within the consistency window is sent with
//!    `ConsistentRead: true` where DynamoDB allows it (GetItem, BatchGetItem, Query and Scan on
//!    the table or a local secondary index) and the client did not ask for consumed capacity
//!    (which a consistent read would double); otherwise it is sent as it came and not stored.
//! 5. An answer is stored only if it is a 200 with a plain body, of the shape DynamoDB's answers
//!    have, the key schema is known and matches, and no write began or may still land since the
//!    read started.
//! 6. An answer a replica region gave while the breaker of the table's own region was open (read
//!    failover, `proxy::forward`) is stored only where every table it read says `store_failover`
//!    ([`failover_storable`], decided when the read is sent there): a replica may lag behind by an
//!    unbounded time, and an entry would go on answering with what it read.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode};

use crate::cache::{Address, Cache, CacheKey, Dependency, Entry, Kind, Restrictions};
use crate::config::{Config, TableOverrides, TableTtls};
use crate::fleet::{Blocked, Fleet};
use crate::protocol::answers;
use crate::protocol::reads::{BatchGetRead, Capacity, GetItemRead, Parsed, QueryRead, Read};
use crate::protocol::region::Region;
use crate::protocol::table::{KeySchema, TableId, TableRef};
use crate::protocol::{Operation, HEADER_CRC32};
use crate::upstream::{UpstreamError, UpstreamResponse};

use super::respond::ZeroCapacity;

/// Why a cacheable operation went straight upstream without looking in the cache or filling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
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

/// Why a miss was answered but its answer not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
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
    /// Read from a replica region while the table's own was down (rule 6), for a table that does
    /// not store such answers.
    Failover,
}

impl From<crate::cache::Refusal> for Unstored {
    fn from(r: crate::cache::Refusal) -> Unstored {
        match r {
            crate::cache::Refusal::Raced => Unstored::Raced,
            crate::cache::Refusal::InDoubt => Unstored::InDoubt,
        }
    }
}

/// A read that goes around the cache: why, and what the cache must learn from it.
pub(crate) struct Bypass<'r> {
    pub(crate) kind: Kind,
    pub(crate) reason: BypassReason,
    pub(crate) then: Option<SchemaAction<'r>>,
}

/// What a bypassed read tells about a table's key schema.
pub(crate) enum SchemaAction<'r> {
    /// The read's key contradicts it.
    Contradicted(TableId),
    /// It is unknown and wanted: fetch it, naming the table as the request did.
    Fetch { table: TableId, as_sent: &'r str },
}

impl Bypass<'_> {
    fn plain(kind: Kind, reason: BypassReason) -> Bypass<'static> {
        Bypass {
            kind,
            reason,
            then: None,
        }
    }
}

/// What a cacheable read is, as decided: GetItem, Query and Scan are one lookup; a BatchGetItem
/// is one per key.
// A plan carries its cache key inline (no allocation on the hit path); it is matched at once, so
// its size costs a move, where boxing would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Planned<'r> {
    One(Plan<'r>),
    Batch(BatchPlan<'r>),
}

/// How one read uses the cache: where its entry is, how a miss is sent, what of the answer is
/// kept, and what a hit reports.
pub(crate) struct Plan<'r> {
    pub(crate) kind: Kind,
    pub(crate) table: TableId,
    /// How the request named the table (the DescribeTable ddbcache sends names it the same way).
    pub(crate) as_sent: &'r str,
    pub(crate) key: CacheKey,
    depends: Depends<'r>,
    pub(crate) keep: Keep<'r>,
    /// What a hit reports as `ConsumedCapacity`, when the request asked for it.
    pub(crate) capacity: Option<ZeroCapacity<'r>>,
    /// Whether the client asked for consumed capacity (a consistent read would double it).
    wants_capacity: bool,
    /// Whether DynamoDB allows this read with `ConsistentRead`.
    consistent_allowed: bool,
    /// The key schema, when it was needed to plan and known.
    pub(crate) schema: Option<Arc<KeySchema>>,
    /// How long past its TTL an entry may answer if DynamoDB fails this read (zero: never).
    stale_if_error: Duration,
    /// The last part of its TTL in which a hit refreshes the entry (zero: never).
    refresh_ahead: f64,
}

/// What an entry depends on besides its table, owned by the plan.
enum Depends<'r> {
    Item(&'r [u8]),
    Partition(Vec<u8>),
    Table,
}

/// What of a miss's answer is kept, and for how long.
#[derive(Clone, Copy)]
pub(crate) enum Keep<'r> {
    /// A GetItem: its item for `found`, "no such item" for `absent` (`None`: not stored). The key
    /// schema is needed to store it (the key must be exactly the table's), fetched alongside the
    /// miss when unknown.
    Item {
        found: Option<Duration>,
        absent: Option<Duration>,
        key_names: &'r [Cow<'r, str>],
    },
    /// A Query or Scan page.
    Page { ttl: Duration },
}

impl<'r> Plan<'r> {
    /// Where the entry is.
    pub(crate) fn address(&self) -> Address<'_> {
        Address {
            kind: self.kind,
            table: &self.table,
            dependency: match &self.depends {
                Depends::Item(key) => Dependency::Item(key),
                Depends::Partition(p) => Dependency::Partition(p),
                Depends::Table => Dependency::Table,
            },
            key: &self.key,
        }
    }

    /// Rule 6: whether the expired entry a failed read replaces may answer it, `past` after its
    /// TTL ended: the table keeps entries for that long.
    pub(crate) fn answers_stale(&self, past: Duration) -> bool {
        past < self.stale_if_error
    }

    /// Rule 7: whether a hit refreshes its entry, which has `remaining` of its TTL left: it is in
    /// the last part of it the table says (refresh-ahead). `remaining` reads the clock, so it is
    /// only asked when the table refreshes ahead.
    pub(crate) fn refreshes(&self, entry: &Entry, remaining: impl FnOnce() -> Duration) -> bool {
        self.refresh_ahead > 0.0
            && self
                .ttl_of(entry)
                .is_some_and(|ttl| remaining() < ttl.mul_f64(self.refresh_ahead))
    }

    /// The TTL an entry of this read is kept for.
    pub(crate) fn ttl_of(&self, entry: &Entry) -> Option<Duration> {
        match self.keep {
            Keep::Page { ttl } => Some(ttl),
            Keep::Item { absent, .. } if entry.is_negative() => absent,
            Keep::Item { found, .. } => found,
        }
    }

    /// Whether a miss waits for the key schema when it is unknown (a GetItem cannot be stored
    /// without it) or only starts fetching it for later reads.
    pub(crate) fn awaits_schema(&self) -> bool {
        matches!(self.keep, Keep::Item { .. })
    }
}

/// A BatchGetItem's plan: the request, and per table what may be done with its keys.
pub(crate) struct BatchPlan<'r> {
    pub(crate) read: &'r BatchGetRead,
    pub(crate) tables: Vec<TablePlan<'r>>,
}

/// One table of a BatchGetItem.
pub(crate) struct TablePlan<'r> {
    pub(crate) table: TableId,
    pub(crate) as_sent: &'r str,
    /// TTLs of its items and of "no such item"; `None`: the cache is off for the table.
    pub(crate) ttls: Option<(Option<Duration>, Option<Duration>)>,
    /// How long past its TTL an entry may answer if DynamoDB fails the read (zero: never).
    pub(crate) stale_if_error: Duration,
    pub(crate) schema: Option<Arc<KeySchema>>,
}

impl TablePlan<'_> {
    /// Where the entry of key `key` (canonical) is, whose cache key is `cache_key`.
    pub(crate) fn address<'k>(&'k self, key: &'k [u8], cache_key: &'k CacheKey) -> Address<'k> {
        Address {
            kind: Kind::Item,
            table: &self.table,
            dependency: Dependency::Item(key),
            key: cache_key,
        }
    }
}

/// Which cache an operation's reads use.
pub(crate) fn kind_of(op: Operation) -> Kind {
    match op {
        Operation::Query | Operation::Scan => Kind::Query,
        _ => Kind::Item,
    }
}

/// Rules 1 to 3: whether, and how, a read of `op` uses the cache.
pub(crate) fn plan<'r>(
    config: &Config,
    cache: &Cache,
    fleet: &Fleet,
    op: Operation,
    region: &Region,
    parsed: &'r Parsed<'r>,
) -> Result<Planned<'r>, Bypass<'r>> {
    let kind = kind_of(op);
    if let Some(blocked) = fleet.blocked() {
        let reason = match blocked {
            Blocked::LinkDown => BypassReason::FleetLinkDown,
            Blocked::Backlog => BypassReason::FleetBacklog,
        };
        return Err(Bypass::plain(kind, reason));
    }
    let read = match parsed {
        Parsed::Proven(read) => read,
        Parsed::NotProven(_) => return Err(Bypass::plain(kind, BypassReason::NotProvenValid)),
        Parsed::NotUnderstood => return Err(Bypass::plain(kind, BypassReason::NotUnderstood)),
    };
    let region = region.as_str();
    match read {
        Read::GetItem(read) => plan_get_item(config, cache, region, read).map(Planned::One),
        Read::Query(read) => plan_query(config, cache, region, read).map(Planned::One),
        Read::BatchGetItem(read) => plan_batch(config, cache, region, read).map(Planned::Batch),
    }
}

fn plan_get_item<'r>(
    config: &Config,
    cache: &Cache,
    region: &str,
    read: &'r GetItemRead<'r>,
) -> Result<Plan<'r>, Bypass<'r>> {
    let bypass = |reason| Bypass::plain(Kind::Item, reason);
    let (table, name) = read_table(cache, region, &read.table).map_err(bypass)?;
    let ttls =
        item_ttls(config, name, read.consistent_read).map_err(|r| Bypass::plain(Kind::Item, r))?;
    let key_names = || read.key_names.iter().map(|n| n.as_ref());
    if cache.is_key(&table, key_names()) == Some(false) {
        return Err(Bypass {
            kind: Kind::Item,
            reason: BypassReason::KeyMismatch,
            then: Some(SchemaAction::Contradicted(table)),
        });
    }
    Ok(Plan {
        kind: Kind::Item,
        key: CacheKey::item(&table, &read.key, &read.projection),
        table,
        as_sent: &read.table,
        depends: Depends::Item(&read.key),
        keep: Keep::Item {
            found: ttls.item,
            absent: ttls.negative,
            key_names: &read.key_names,
        },
        capacity: zero_capacity(read.capacity, &read.table, None),
        wants_capacity: read.capacity != Capacity::None,
        consistent_allowed: true,
        schema: None,
        stale_if_error: ttls.stale_if_error,
        refresh_ahead: ttls.refresh_ahead,
    })
}

fn plan_query<'r>(
    config: &Config,
    cache: &Cache,
    region: &str,
    read: &'r QueryRead,
) -> Result<Plan<'r>, Bypass<'r>> {
    let bypass = |reason| Bypass::plain(Kind::Query, reason);
    let (table, name) = read_table(cache, region, &read.table).map_err(bypass)?;
    if read.consistent_read {
        return Err(bypass(BypassReason::ConsistentRead));
    }
    let ttls = config.table_ttls(name);
    let ttl = ttls.query.ok_or(bypass(BypassReason::CacheOff))?;
    let schema = cache.key_schema(&table);
    let index = read.index.as_deref();
    // The index read, and whether it is a global one.
    let index_kind = match (index, &schema) {
        (Some(i), Some(s)) => s.index_shares_partitions(Some(i)).map(|local| (i, !local)),
        _ => None,
    };
    if read.capacity == Capacity::Indexes && index.is_some() && index_kind.is_none() {
        // A hit could not say which kind of index it read.
        return Err(Bypass {
            kind: Kind::Query,
            reason: BypassReason::NotUnderstood,
            then: schema.is_none().then_some(SchemaAction::Fetch {
                table,
                as_sent: &read.table,
            }),
        });
    }
    let shares_partitions = schema
        .as_deref()
        .and_then(|s| s.index_shares_partitions(index));
    let partition = schema
        .as_deref()
        .filter(|_| shares_partitions == Some(true))
        .and_then(|s| read.partition(s));
    Ok(Plan {
        kind: Kind::Query,
        key: CacheKey::query(&table, &read.key),
        table,
        as_sent: &read.table,
        depends: match partition {
            Some(p) => Depends::Partition(p),
            None => Depends::Table,
        },
        keep: Keep::Page { ttl },
        capacity: zero_capacity(read.capacity, &read.table, index_kind),
        wants_capacity: read.capacity != Capacity::None,
        consistent_allowed: shares_partitions == Some(true),
        schema,
        stale_if_error: ttls.stale_if_error,
        refresh_ahead: ttls.refresh_ahead,
    })
}

fn plan_batch<'r>(
    config: &Config,
    cache: &Cache,
    region: &str,
    read: &'r BatchGetRead,
) -> Result<BatchPlan<'r>, Bypass<'r>> {
    let bypass = |reason| Bypass::plain(Kind::Item, reason);
    let mut tables = Vec::with_capacity(read.tables.len());
    for t in &read.tables {
        let (table, name) = read_table(cache, region, &t.request_name).map_err(bypass)?;
        let rules = match item_ttls(config, name, t.consistent_read) {
            Ok(ttls) => Some(ttls),
            Err(BypassReason::CacheOff) => None,
            Err(reason) => return Err(bypass(reason)),
        };
        let schema = cache.key_schema(&table);
        if let Some(s) = &schema {
            if !s.is_key(t.key_names.iter().map(String::as_str)) {
                return Err(Bypass {
                    kind: Kind::Item,
                    reason: BypassReason::KeyMismatch,
                    then: Some(SchemaAction::Contradicted(table)),
                });
            }
        }
        tables.push(TablePlan {
            table,
            as_sent: &t.request_name,
            ttls: rules.map(|r| (r.item, r.negative)),
            stale_if_error: rules.map_or(Duration::ZERO, |r| r.stale_if_error),
            schema,
        });
    }
    Ok(BatchPlan { read, tables })
}

/// The table a read names, if the cache may be used for it: its identity and its plain name
/// (per-table settings are by name). A name is a table of the request's region; an ARN is the
/// same table only when it is of the request's region and of the account whose credentials
/// reach it (as the table's own DescribeTable showed); anything else is foreign.
fn read_table<'n>(
    cache: &Cache,
    region: &str,
    table_name: &'n str,
) -> Result<(TableId, &'n str), BypassReason> {
    let name = match TableRef::parse(table_name) {
        TableRef::Name(n) => n,
        TableRef::Arn(a)
            if a.region == region && cache.local_account(region).as_deref() == Some(a.account) =>
        {
            a.name
        }
        TableRef::Arn(_) | TableRef::Malformed => return Err(BypassReason::ForeignTable),
    };
    Ok((TableId::new(region, name), name))
}

/// The rules of an item read of table `name`, if it may use the cache.
fn item_ttls(
    config: &Config,
    name: &str,
    consistent_read: bool,
) -> Result<TableTtls, BypassReason> {
    if consistent_read {
        return Err(BypassReason::ConsistentRead);
    }
    match config.table_ttls(name) {
        TableTtls {
            item: None,
            negative: None,
            ..
        } => Err(BypassReason::CacheOff),
        ttls => Ok(ttls),
    }
}

/// The capacity a hit reports, when the request asked for it.
pub(crate) fn zero_capacity<'a>(
    capacity: Capacity,
    table: &'a str,
    index: Option<(&'a str, bool)>,
) -> Option<ZeroCapacity<'a>> {
    match capacity {
        Capacity::None => None,
        Capacity::Total => Some(ZeroCapacity {
            indexes: false,
            table,
            index: None,
        }),
        Capacity::Indexes => Some(ZeroCapacity {
            indexes: true,
            table,
            index,
        }),
    }
}

/// Why DynamoDB did not answer a read, as stale-if-error counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum Failure {
    /// No answer: unreachable, connection lost, given up.
    Unavailable,
    /// A 5xx.
    ServerError,
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`.
    Throttled,
    /// Not sent: the endpoint's circuit breaker is open.
    Breaker,
}

/// Rule 6 (stale-if-error): the failure an upstream result is, when an expired entry may answer
/// for it; `None` for an answer (an error DynamoDB gives for the request itself included) and for
/// ddbcache's own trouble (no credentials to sign with, no endpoint), which is not DynamoDB down.
pub(crate) fn failure(result: &Result<UpstreamResponse, UpstreamError>) -> Option<Failure> {
    match result {
        Err(e) if e.refused_at_once() => Some(Failure::Breaker),
        Err(UpstreamError::Signing(_) | UpstreamError::Endpoint(_)) => None,
        Err(_) => Some(Failure::Unavailable),
        Ok(a) if a.status.is_server_error() => Some(Failure::ServerError),
        Ok(a) if answers::is_throttling(a.status.as_u16(), &a.body) => Some(Failure::Throttled),
        Ok(_) => None,
    }
}

/// What became of a background refresh (the `outcome` label of `ddbcache_cache_refreshes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum Refreshed {
    Stored,
    /// Answered, but not kept (a write raced it, its answer was not one to keep, ...).
    Unstored,
    /// DynamoDB did not answer it.
    Failed,
    /// The key was being refreshed already.
    Busy,
    /// The second's budget of refreshes was spent.
    Budget,
}

/// How a miss is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissRead {
    /// As the client sent it; the answer may be stored.
    AsSent,
    /// With `ConsistentRead: true` (rule 4); the answer may be stored.
    Consistent,
    /// As the client sent it; the answer must not be stored, for this reason.
    Unstored(Unstored),
}

/// Rule 4 for a planned read: how to send its miss, given the marks on what it reads.
pub(crate) fn miss_of(plan: &Plan<'_>, restrictions: Restrictions) -> MissRead {
    miss_read(restrictions, plan.consistent_allowed, plan.wants_capacity)
}

/// Rule 4: how to send a miss, given the marks on what it reads (`restrictions`), whether
/// DynamoDB allows a consistent read of it (`consistent_allowed`), and whether the client asked
/// for consumed capacity.
pub(crate) fn miss_read(
    restrictions: Restrictions,
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

/// What of a miss's answer to keep (rule 5).
#[derive(Debug)]
pub(crate) enum Keeping {
    /// Store this body (with the `Item`'s place in it) for `ttl`.
    Store {
        body: Bytes,
        item: Option<Range<usize>>,
        ttl: Duration,
    },
    /// Nothing: the answer is fine, but its TTL is off (a negative answer without a negative
    /// TTL).
    Nothing,
    /// Not stored, for this reason.
    Not(Unstored),
    /// Not stored: the key schema, fetched with the miss, contradicts the read's key.
    Contradicted,
}

/// Rule 5 for a planned read's miss, sent as `how`, answered `answer`, with the key schema as
/// known after the miss (`schema`).
pub(crate) fn keep(
    plan: &Plan<'_>,
    how: MissRead,
    op: Operation,
    answer: &UpstreamResponse,
    schema: Option<&KeySchema>,
) -> Keeping {
    if let MissRead::Unstored(reason) = how {
        return Keeping::Not(reason);
    }
    if let Err(reason) = failover_kept(answer) {
        return Keeping::Not(reason);
    }
    if let Err(reason) = storable(answer, op) {
        return Keeping::Not(reason);
    }
    let (found, absent) = match plan.keep {
        Keep::Page { .. } => (None, None),
        Keep::Item {
            found,
            absent,
            key_names,
        } => match schema {
            None => return Keeping::Not(Unstored::Schema),
            Some(s) if !s.is_key(key_names.iter().map(|n| n.as_ref())) => {
                return Keeping::Contradicted
            }
            Some(_) => (found, absent),
        },
    };
    let Some(body) = answers::without_consumed_capacity(&answer.body).map(Bytes::from) else {
        return Keeping::Not(Unstored::Answer);
    };
    let (item, ttl) = match plan.keep {
        Keep::Page { ttl } => (None, Some(ttl)),
        Keep::Item { .. } => match answers::get_item_output(&body) {
            Some(Some(item)) => (Some(item), found),
            Some(None) => (None, absent),
            None => return Keeping::Not(Unstored::Answer),
        },
    };
    match ttl {
        Some(ttl) => Keeping::Store { body, item, ttl },
        None => Keeping::Nothing,
    }
}

/// Rule 5, first part: whether an upstream answer to `op` may be stored at all — a 200 with a
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

/// Rule 6: whether an answer read from a replica region for tables with these settings (`None`:
/// a table with none) may be stored — only when every one of them says `store_failover`.
pub(crate) fn failover_storable<'t>(
    tables: impl IntoIterator<Item = Option<&'t TableOverrides>>,
) -> bool {
    tables
        .into_iter()
        .all(|t| t.is_some_and(|t| t.store_failover))
}

/// Rule 6, as the answer carries it: a replica's answer is kept only where
/// [`failover_storable`] allowed it when the read was sent there.
pub(crate) fn failover_kept(answer: &UpstreamResponse) -> Result<(), Unstored> {
    match &answer.from_replica {
        Some(replica) if !replica.storable => Err(Unstored::Failover),
        _ => Ok(()),
    }
}
