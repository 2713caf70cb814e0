//! GetItem, Query and Scan: parse the request down to its cache key, ask the policy, look up,
//! forward a miss (single-flight: concurrent misses of one key wait for the first) the way the
//! policy says, and fill.

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{Cache, CacheKey, Dependency, Kind, Lookup};
use crate::protocol::reads::{self, Capacity, ReadParse};
use crate::protocol::{answers, validate, Operation};
use crate::upstream::UpstreamResponse;

use super::admit::Inbound;
use super::policy::{self, BypassReason, ItemDecision, MissRead, QueryDecision, Unstored};
use super::respond::{self, Outcome, ZeroCapacity};
use super::tables::contradicts_schema;
use super::{unproven_json, Answered, Encoding, Proxy};

impl Proxy {
    pub(super) async fn get_item(self: &Arc<Self>, cache: &Arc<Cache>, inb: &Inbound) -> Answered {
        // The usual GetItem is read, and its body proven to be JSON, in one pass; anything else
        // is first checked as the front door would have.
        let parsed = match reads::get_item_fast(&inb.json) {
            Some(read) => (ReadParse::Cacheable(read), Ok(())),
            None => {
                if let Some(refused) = unproven_json(inb) {
                    return Ok((refused, Outcome::NotCacheable));
                }
                reads::read_get_item_full(&inb.json)?
            }
        };
        let read = match parsed {
            (ReadParse::Cacheable(r), Ok(())) => r,
            (ReadParse::Cacheable(_), Err(_)) => {
                return self
                    .bypass(Kind::Item, BypassReason::NotProvenValid, inb)
                    .await
            }
            (ReadParse::Uncacheable, _) => {
                return self
                    .bypass(Kind::Item, BypassReason::NotUnderstood, inb)
                    .await
            }
        };
        let table = match self.read_table(cache, inb.region.as_str(), &read.table) {
            Ok(t) => t,
            Err(reason) => return self.bypass(Kind::Item, reason, inb).await,
        };
        let (found_ttl, absent_ttl) =
            match policy::item_read(&self.config, table.name, read.consistent_read) {
                ItemDecision::Cache { found, absent } => (found, absent),
                ItemDecision::Bypass(reason) => return self.bypass(Kind::Item, reason, inb).await,
            };
        let key_names = || read.key_names.iter().map(|n| n.as_ref());
        if cache.schemas().is_key(&table.id, key_names()) == Some(false) {
            cache.schema_contradicted(&table.id);
            return self
                .bypass(Kind::Item, BypassReason::KeyMismatch, inb)
                .await;
        }
        let capacity = zero_capacity(read.capacity, &read.table, None);
        let key = CacheKey::item(&table.id, &read.key, &read.projection);
        let fill = match cache
            .lookup(Kind::Item, &table.id, Dependency::Item(&read.key), key)
            .await
        {
            Lookup::Hit { entry, .. } => {
                return Ok((respond::hit(&entry, capacity.as_ref()), Outcome::Hit))
            }
            Lookup::Miss(fill) => fill,
        };
        let known = cache.schemas().get(&table.id);
        let how = policy::miss_read(fill.restrictions(), true, read.capacity != Capacity::None);
        let request = self.miss_request(Kind::Item, inb, how);
        // The schema is needed to store the answer: fetch it alongside the read when unknown.
        let (upstream, schema) = match known {
            Some(s) => (self.forward(&request, Encoding::Identity).await?, Some(s)),
            None => {
                let (upstream, schema) = tokio::join!(
                    self.forward(&request, Encoding::Identity),
                    self.schema(cache, &table, inb)
                );
                (upstream?, schema)
            }
        };
        if contradicts_schema(&upstream) {
            cache.schema_contradicted(&table.id);
        }
        let answer = policy::storable(&upstream, inb.op);
        let stored = match how {
            MissRead::Unstored(reason) => Err(reason),
            _ if answer.is_err() => answer,
            _ => match &schema {
                Some(s) if s.is_key(key_names()) => stored_body(&upstream).and_then(|body| {
                    let item = answers::get_item_output(&body).ok_or(Unstored::Answer)?;
                    match if item.is_some() {
                        found_ttl
                    } else {
                        absent_ttl
                    } {
                        Some(ttl) => Ok(fill.complete(body, item, ttl)?),
                        None => Ok(()),
                    }
                }),
                Some(_) => {
                    cache.schema_contradicted(&table.id);
                    Err(Unstored::Schema)
                }
                None => Err(Unstored::Schema),
            },
        };
        if let Err(reason) = stored {
            self.count_unstored(Kind::Item, reason);
        }
        Ok((respond::relayed(upstream), Outcome::Miss))
    }

    /// Query and Scan: one entry per page, keyed by the whole canonical request.
    pub(super) async fn query(self: &Arc<Self>, cache: &Arc<Cache>, inb: &Inbound) -> Answered {
        let read = match reads::parse_query(&inb.json, inb.op == Operation::Scan)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => {
                return self
                    .bypass(Kind::Query, BypassReason::NotUnderstood, inb)
                    .await
            }
        };
        if validate::query_or_scan(&inb.json).is_err() {
            return self
                .bypass(Kind::Query, BypassReason::NotProvenValid, inb)
                .await;
        }
        let table = match self.read_table(cache, inb.region.as_str(), &read.table) {
            Ok(t) => t,
            Err(reason) => return self.bypass(Kind::Query, reason, inb).await,
        };
        let ttl = match policy::query_read(&self.config, table.name, read.consistent_read) {
            QueryDecision::Cache { ttl } => ttl,
            QueryDecision::Bypass(reason) => return self.bypass(Kind::Query, reason, inb).await,
        };
        let schema = cache.schemas().get(&table.id);
        let index = read.index.as_deref();
        let index_kind = match (index, &schema) {
            (None, _) => None,
            (Some(i), Some(s)) => s.index_shares_partitions(Some(i)).map(|local| (i, !local)),
            (Some(_), None) => None,
        };
        if read.capacity == Capacity::Indexes && index.is_some() && index_kind.is_none() {
            // The hit could not say which kind of index it read.
            self.prefetch_schema(cache, &table.id, table.as_sent, inb);
            return self
                .bypass(Kind::Query, BypassReason::NotUnderstood, inb)
                .await;
        }
        let capacity = zero_capacity(read.capacity, &read.table, index_kind);
        let partition = schema
            .as_deref()
            .filter(|s| s.index_shares_partitions(index) == Some(true))
            .and_then(|s| read.partition(s));
        let dependency = match &partition {
            Some(p) => Dependency::Partition(p),
            None => Dependency::Table,
        };
        let key = CacheKey::query(&table.id, &read.key);
        let fill = match cache.lookup(Kind::Query, &table.id, dependency, key).await {
            Lookup::Hit { entry, .. } => {
                return Ok((respond::hit(&entry, capacity.as_ref()), Outcome::Hit))
            }
            Lookup::Miss(fill) => fill,
        };
        if schema.is_none() {
            self.prefetch_schema(cache, &table.id, table.as_sent, inb);
        }
        let how = policy::miss_read(
            fill.restrictions(),
            policy::consistent_allowed(schema.as_deref(), index),
            read.capacity != Capacity::None,
        );
        let upstream = self
            .forward(
                &self.miss_request(Kind::Query, inb, how),
                Encoding::Identity,
            )
            .await?;
        if contradicts_schema(&upstream) {
            cache.schema_contradicted(&table.id);
        }
        let answer = policy::storable(&upstream, inb.op);
        let stored = match how {
            MissRead::Unstored(reason) => Err(reason),
            _ if answer.is_err() => answer,
            _ => stored_body(&upstream).and_then(|body| Ok(fill.complete(body, None, ttl)?)),
        };
        if let Err(reason) = stored {
            self.count_unstored(Kind::Query, reason);
        }
        Ok((respond::relayed(upstream), Outcome::Miss))
    }

    /// The request a miss sends: the client's, or the same asking for a consistent read.
    fn miss_request(&self, kind: Kind, inb: &Inbound, how: MissRead) -> Inbound {
        match how {
            MissRead::Consistent => match reads::with_consistent_read(&inb.json) {
                Some(body) => {
                    self.metrics
                        .cache_consistent_reads
                        .with_label_values(&[kind.label()])
                        .inc();
                    inb.with_body(Bytes::from(body))
                }
                None => inb.clone(),
            },
            _ => inb.clone(),
        }
    }
}

/// What is stored of an answer: its body without `ConsumedCapacity`.
fn stored_body(upstream: &UpstreamResponse) -> Result<Bytes, Unstored> {
    answers::without_consumed_capacity(&upstream.body)
        .map(Bytes::from)
        .ok_or(Unstored::Answer)
}

/// The capacity a hit reports, when the request asked for it.
pub(super) fn zero_capacity<'a>(
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
