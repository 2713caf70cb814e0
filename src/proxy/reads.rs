//! GetItem, Query and Scan: parse the request down to its cache key, ask the policy, look up,
//! forward a miss (single-flight: concurrent misses of one key wait for the first), and fill.

use crate::cache::{Cache, CacheKey, Kind, Lookup};
use crate::protocol::answers;
use crate::protocol::reads::{self, ReadParse};
use crate::protocol::Operation;

use super::admit::Inbound;
use super::policy::{self, BypassReason, ItemDecision, QueryDecision};
use super::respond::{self, Outcome};
use super::{Answered, Encoding, Proxy};

impl Proxy {
    pub(super) async fn get_item(&self, cache: &Cache, inb: &Inbound) -> Answered {
        let read = match reads::parse_get_item(&inb.json)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => {
                return self
                    .bypass(Kind::Item, BypassReason::NotUnderstood, inb)
                    .await
            }
        };
        let (found_ttl, absent_ttl) =
            match policy::item_read(&self.config, &read.table, read.consistent_read) {
                ItemDecision::Cache { found, absent } => (found, absent),
                ItemDecision::Bypass(reason) => return self.bypass(Kind::Item, reason, inb).await,
            };
        let key = CacheKey::item(&read.table, &read.key, &read.projection);
        let fill = match cache.lookup(Kind::Item, &read.table, &read.key, key).await {
            Lookup::Hit { entry, .. } => return Ok((respond::hit(&entry), Outcome::Hit)),
            Lookup::Miss(fill) => fill,
        };
        let upstream = self.forward(inb, Encoding::Identity).await?;
        let answer = policy::storable(&upstream)
            .then(|| answers::parse_get_item_output(&upstream.body))
            .flatten()
            .filter(|a| !a.has_capacity);
        if let Some(answer) = answer {
            if cache.schemas().key_names(&read.table).is_none() {
                let names = read.key_names.iter().map(|n| n.to_string()).collect();
                cache.schemas().learn(&read.table, names);
            }
            let ttl = if answer.item.is_some() {
                found_ttl
            } else {
                absent_ttl
            };
            if let Some(ttl) = ttl {
                fill.complete(upstream.body.clone(), answer.item, ttl);
            }
        }
        Ok((respond::relayed(upstream), Outcome::Miss))
    }

    /// Query and Scan: one entry per page, keyed by the whole canonical request.
    pub(super) async fn query(&self, cache: &Cache, inb: &Inbound) -> Answered {
        let read = match reads::parse_query(&inb.json, inb.op == Operation::Scan)? {
            ReadParse::Cacheable(r) => r,
            ReadParse::Uncacheable => {
                return self
                    .bypass(Kind::Query, BypassReason::NotUnderstood, inb)
                    .await
            }
        };
        let ttl = match policy::query_read(&self.config, &read.table, read.consistent_read) {
            QueryDecision::Cache { ttl } => ttl,
            QueryDecision::Bypass(reason) => return self.bypass(Kind::Query, reason, inb).await,
        };
        let key = CacheKey::query(&read.table, &read.key);
        let fill = match cache.lookup(Kind::Query, &read.table, b"", key).await {
            Lookup::Hit { entry, .. } => return Ok((respond::hit(&entry), Outcome::Hit)),
            Lookup::Miss(fill) => fill,
        };
        let upstream = self.forward(inb, Encoding::Identity).await?;
        if policy::storable(&upstream) && !answers::has_consumed_capacity(&upstream.body) {
            fill.complete(upstream.body.clone(), None, ttl);
        }
        Ok((respond::relayed(upstream), Outcome::Miss))
    }
}
