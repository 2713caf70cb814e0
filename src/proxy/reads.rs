//! GetItem, Query and Scan, as planned: look up, and on a miss forward (single-flight: concurrent
//! misses of one key wait for the first) the way the policy says, then keep what it says.

use std::borrow::Cow;

use bytes::Bytes;

use crate::cache::{Kind, Lookup, Source};
use crate::protocol::{answers, reads};

use super::admit::Inbound;
use super::forward::Encoding;
use super::policy::{self, Keeping, MissRead, Plan, Unstored};
use super::respond::{self, Outcome};
use super::{tables, Answered, Cached};

/// Serves one planned read: a hit from its entry, a miss from upstream.
pub(super) async fn serve(cx: &Cached, inb: &Inbound, plan: Plan<'_>) -> Answered {
    let fill = match cx.cache.lookup(plan.address()).await {
        Lookup::Hit { entry, source, .. } => {
            let outcome = match source {
                Source::Local => Outcome::Hit,
                Source::Shared => {
                    // Answered by another sidecar's read: this one may never have fetched the
                    // table's key schema, which its writes need to name their items.
                    if plan.schema.is_none() && cx.cache.key_schema(&plan.table).is_none() {
                        tables::prefetch(cx, &plan.table, plan.as_sent, inb);
                    }
                    Outcome::HitShared
                }
            };
            return Ok((respond::hit(&entry, plan.capacity.as_ref()), outcome));
        }
        Lookup::Miss(fill) => fill,
    };
    let how = policy::miss_of(&plan, fill.restrictions());
    let request = miss_request(cx, plan.kind, inb, how);
    let send = cx.upstream.send(&request, Encoding::Identity);
    let known = plan
        .schema
        .clone()
        .or_else(|| cx.cache.key_schema(&plan.table));
    let (upstream, schema) = match known {
        Some(s) => (send.await?, Some(s)),
        // The schema is needed to store the answer: fetched alongside the read.
        None if plan.awaits_schema() => {
            let fetch = tables::schema(cx, &plan.table, plan.as_sent, inb);
            let (upstream, schema) = tokio::join!(send, fetch);
            (upstream?, schema)
        }
        None => {
            tables::prefetch(cx, &plan.table, plan.as_sent, inb);
            (send.await?, None)
        }
    };
    if answers::contradicts_schema(upstream.status.as_u16(), &upstream.body) {
        cx.cache.contradicted(&plan.table);
    }
    let unstored = match policy::keep(&plan, how, inb.op, &upstream, schema.as_deref()) {
        Keeping::Store { body, item, ttl } => fill.complete(body, item, ttl).err().map(Into::into),
        Keeping::Nothing => None,
        Keeping::Not(reason) => Some(reason),
        Keeping::Contradicted => {
            cx.cache.contradicted(&plan.table);
            Some(Unstored::Schema)
        }
    };
    if let Some(reason) = unstored {
        cx.counters.unstored(plan.kind, reason);
    }
    Ok((respond::relayed(upstream), Outcome::Miss))
}

/// The request a miss sends: the client's, or the same asking for a consistent read.
fn miss_request<'i>(cx: &Cached, kind: Kind, inb: &'i Inbound, how: MissRead) -> Cow<'i, Inbound> {
    if how == MissRead::Consistent {
        if let Some(body) = reads::with_consistent_read(&inb.json) {
            cx.counters.consistent_read(kind);
            return Cow::Owned(inb.with_body(Bytes::from(body)));
        }
    }
    Cow::Borrowed(inb)
}
