//! GetItem, Query and Scan, as planned: look up, and on a miss forward (single-flight: concurrent
//! misses of one key wait for the first) the way the policy says, then keep what it says. When
//! DynamoDB fails the read, an expired entry the table keeps for that answers instead
//! (stale-if-error); a hit in the last part of its entry's TTL refreshes it in the background
//! (refresh-ahead).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::cache::{Entry, Fill, Kind, Lookup, NoRefresh, Source};
use crate::protocol::table::KeySchema;
use crate::protocol::{answers, reads};
use crate::upstream::{UpstreamError, UpstreamResponse};

use super::admit::Inbound;
use super::forward::Encoding;
use super::policy::{self, Keeping, MissRead, Plan, Planned, Refreshed, Unstored};
use super::respond::{self, Body, Outcome};
use super::{tables, Answered, Cached};

/// Serves one planned read: a hit from its entry, a miss from upstream.
pub(super) async fn serve(cx: &Cached, inb: &Inbound, plan: Plan<'_>) -> Answered {
    let fill = match cx.cache.lookup(plan.address()).await {
        Lookup::Hit { entry, source, .. } => return Ok(hit(cx, inb, &plan, &entry, source)),
        Lookup::Miss(fill) => fill,
    };
    miss(cx, inb, plan, fill).await
}

/// A planned read answered from a current entry of this sidecar's, found without waiting for
/// anything ([`Cache::hit_now`]): most hits. `None` sends it on to [`serve`].
pub(super) fn hit_now(
    cx: &Cached,
    inb: &Inbound,
    plan: &Plan<'_>,
) -> Option<(Response<Body>, Outcome)> {
    let entry = cx.cache.hit_now(plan.address())?;
    Some(hit(cx, inb, plan, &entry, Source::Local))
}

/// A planned read the cache missed: forwarded as the policy says, answered stale when DynamoDB
/// fails it and the policy allows, kept when the policy says.
async fn miss(cx: &Cached, inb: &Inbound, plan: Plan<'_>, fill: Fill<'_>) -> Answered {
    let how = policy::miss_of(&plan, fill.restrictions());
    let (result, schema) = forward_miss(cx, inb, &plan, how, Waiting::Client).await;
    if let Some(stale) = stale_answer(cx, &plan, &fill, &result) {
        return Ok((stale, Outcome::Stale));
    }
    let upstream = result?;
    if let Some(reason) = keep_answer(cx, &plan, how, fill, inb, &upstream, schema) {
        cx.counters.unstored(plan.kind, reason);
    }
    Ok((respond::relayed(upstream), Outcome::Miss))
}

/// A hit's answer; a hit from another sidecar's read, or one late in its entry's TTL, starts
/// what follows from it in the background.
fn hit(
    cx: &Cached,
    inb: &Inbound,
    plan: &Plan<'_>,
    entry: &Entry,
    source: Source,
) -> (Response<Body>, Outcome) {
    let outcome = match source {
        Source::Local => Outcome::Hit,
        Source::Shared => {
            // Answered by another sidecar's read: this one may never have fetched the table's
            // key schema, which its writes need to name their items.
            if plan.schema.is_none() && cx.cache.key_schema(&plan.table).is_none() {
                tables::prefetch(cx, &plan.table, plan.as_sent, inb);
            }
            Outcome::HitShared
        }
    };
    if plan.refreshes(entry, || cx.cache.remaining(entry)) {
        tokio::spawn(refresh(cx.clone(), inb.clone()));
    }
    (respond::hit(entry, plan.capacity.as_ref()), outcome)
}

/// Who waits for a miss's answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The client: as long as it waits.
    Client,
    /// Nobody (a background refresh): `upstream.backstop` at most.
    Nobody,
}

/// Sends a miss upstream as the policy says, with the table's key schema when it is needed to
/// keep the answer (fetched alongside when unknown).
async fn forward_miss(
    cx: &Cached,
    inb: &Inbound,
    plan: &Plan<'_>,
    how: MissRead,
    waiting: Waiting,
) -> (
    Result<UpstreamResponse, UpstreamError>,
    Option<Arc<KeySchema>>,
) {
    let request = miss_request(cx, plan.kind, inb, how);
    let send = async {
        match waiting {
            Waiting::Client => cx.upstream.send(&request, Encoding::Identity).await,
            Waiting::Nobody => cx.upstream.send_own(&request, Encoding::Identity).await,
        }
    };
    let known = plan
        .schema
        .clone()
        .or_else(|| cx.cache.key_schema(&plan.table));
    match known {
        Some(s) => (send.await, Some(s)),
        None if plan.awaits_schema() => {
            let fetch = tables::schema(cx, &plan.table, plan.as_sent, inb);
            tokio::join!(send, fetch)
        }
        None => {
            tables::prefetch(cx, &plan.table, plan.as_sent, inb);
            (send.await, None)
        }
    }
}

/// Keeps what the policy says of a miss's answer; why not, when it is not kept.
fn keep_answer(
    cx: &Cached,
    plan: &Plan<'_>,
    how: MissRead,
    fill: Fill<'_>,
    inb: &Inbound,
    upstream: &UpstreamResponse,
    schema: Option<Arc<KeySchema>>,
) -> Option<Unstored> {
    if answers::contradicts_schema(upstream.status.as_u16(), &upstream.body) {
        cx.cache.contradicted(&plan.table);
    }
    match policy::keep(plan, how, inb.op, upstream, schema.as_deref()) {
        Keeping::Store { body, item, ttl } => fill.complete(body, item, ttl).err().map(Into::into),
        Keeping::Nothing => None,
        Keeping::Not(reason) => Some(reason),
        Keeping::Contradicted => {
            cx.cache.contradicted(&plan.table);
            Some(Unstored::Schema)
        }
    }
}

/// The expired entry a read DynamoDB failed may be answered with (stale-if-error), marked with
/// its age; `None` when the policy does not allow it.
fn stale_answer(
    cx: &Cached,
    plan: &Plan<'_>,
    fill: &Fill<'_>,
    result: &Result<UpstreamResponse, UpstreamError>,
) -> Option<Response<Body>> {
    let failure = policy::failure(result)?;
    let (entry, past) = fill.stale().filter(|(_, past)| plan.answers_stale(*past))?;
    cx.counters.stale_answer(plan.kind, failure, past);
    let age = plan.ttl_of(entry).unwrap_or(Duration::ZERO) + past;
    Some(respond::stale(entry, plan.capacity.as_ref(), age))
}

/// Refreshes an entry a hit found late in its TTL: the same read, sent again in the background
/// and kept under every fill rule, as one per key at a time within `cache.refresh_budget`.
async fn refresh(cx: Cached, inb: Inbound) {
    let Ok(reads::Parsed::Proven(read)) = reads::parse_read(inb.op, &inb.json) else {
        return;
    };
    let parsed = reads::Parsed::Proven(read);
    let planned = policy::plan(
        &cx.config,
        &cx.cache,
        &cx.fleet,
        inb.op,
        &inb.region,
        &parsed,
    );
    let Ok(Planned::One(plan)) = planned else {
        return;
    };
    let fill = match cx.cache.refresh(plan.address()) {
        Ok(fill) => fill,
        Err(NoRefresh::Busy) => return cx.counters.refreshed(plan.kind, Refreshed::Busy),
        Err(NoRefresh::Budget) => return cx.counters.refreshed(plan.kind, Refreshed::Budget),
    };
    let how = policy::miss_of(&plan, fill.restrictions());
    let (result, schema) = forward_miss(&cx, &inb, &plan, how, Waiting::Nobody).await;
    let outcome = match result {
        Err(_) => Refreshed::Failed,
        Ok(upstream) => match keep_answer(&cx, &plan, how, fill, &inb, &upstream, schema) {
            None => Refreshed::Stored,
            Some(_) => Refreshed::Unstored,
        },
    };
    cx.counters.refreshed(plan.kind, outcome);
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
