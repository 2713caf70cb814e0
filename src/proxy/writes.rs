//! Writes: item writes, PartiQL, control-plane calls and operations ddbcache does not know.
//!
//! What a write may change is invalidated before it is forwarded and again once the upstream
//! answered — or failed to: a write that got no answer may still have happened, so what it touched
//! is also "in doubt" for a while (misses on it are not stored). The cache applies those rules
//! itself ([`crate::cache::WriteInFlight`]); this path names the scope, forwards, and tells the
//! fleet before the client hears of it. Once sent, a write runs to its end in a task of its own: a
//! client that hangs up (an SDK timeout, a cancelled context), or that is answered a 503 at
//! `upstream.timeout`, must not cancel the invalidation that follows the upstream's answer. The
//! task waits for that answer for as long as the client does, and for `upstream.backstop` more
//! once nobody waits ([`super::forward::Forwarder::see_through`]); ddbcache never sends a write
//! twice. A write the circuit breaker of its endpoint refuses is answered at once, and touches
//! nothing: it was never sent.

use tokio::sync::oneshot;

use crate::cache::{WriteKind, WriteOutcome};
use crate::fleet::Origin;
use crate::protocol::table::TableId;
use crate::protocol::writes::{self, WriteContext, WriteScope};
use crate::protocol::{answers, partiql, ProtocolError};
use crate::upstream::{UpstreamError, UpstreamResponse};

use super::admit::Inbound;
use super::forward::Encoding;
use super::respond::{self, Outcome};
use super::{tables, Answered, Cached};

/// PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems.
pub(super) async fn item_write(cx: &Cached, inb: &Inbound) -> Answered {
    let schema = |id: &TableId| cx.cache.key_schema(id);
    let scope = writes::parse_write(
        inb.op,
        &inb.json,
        &WriteContext {
            region: inb.region.as_str(),
            schema: &schema,
        },
    );
    // Tables written without a known schema were invalidated whole; learn it for next time.
    for id in &scope.tables {
        if cx.cache.key_schema(id).is_none() {
            tables::prefetch(cx, id, id.name(), inb);
        }
    }
    forward(cx, inb, scope, WriteKind::Item).await
}

/// ExecuteStatement, BatchExecuteStatement, ExecuteTransaction: reads pass through, writes
/// invalidate the tables their statements name.
pub(super) async fn partiql(cx: &Cached, inb: &Inbound) -> Answered {
    let scope = partiql::parse_partiql(inb.op, &inb.json, inb.region.as_str());
    if scope.is_empty() {
        let upstream = cx.upstream.send(inb, Encoding::AsClientAsked).await?;
        return Ok((respond::relayed(upstream), Outcome::NotCacheable));
    }
    forward(cx, inb, scope, WriteKind::Item).await
}

/// Control-plane calls: the table's entries and key schema go, before and after.
pub(super) async fn control(cx: &Cached, inb: &Inbound) -> Answered {
    let scope = writes::control_scope(inb.op, &inb.json, inb.region.as_str());
    forward(cx, inb, scope, WriteKind::Control).await
}

/// An operation ddbcache does not know (DynamoDB adds operations over time): it may have
/// written anything.
pub(super) async fn unknown(cx: &Cached, inb: &Inbound) -> Answered {
    forward(cx, inb, WriteScope::everything(), WriteKind::Item).await
}

/// Invalidate, forward, invalidate again, whatever the outcome, and publish — in a task that
/// outlives the client's connection.
async fn forward(cx: &Cached, inb: &Inbound, scope: WriteScope, kind: WriteKind) -> Answered {
    // A write its endpoint's circuit breaker refuses is never sent: nothing it names changed, so
    // nothing is invalidated (entries an outage leaves are worth keeping) or in doubt.
    if let Some(refused) = cx.upstream.refusing(inb) {
        return Err(refused.into());
    }
    // Dropped once nobody waits for the answer: the client hung up (this future is dropped with
    // its request) or is answered at its deadline.
    let (_waiting, abandoned) = oneshot::channel::<()>();
    let task = {
        let (cx, inb) = (cx.clone(), inb.clone());
        tokio::spawn(async move {
            let write = cx.cache.write_started(scope, kind);
            let abandoned = async {
                let _ = abandoned.await;
            };
            let result = cx.upstream.see_through(&inb, abandoned).await;
            let scope = write.finished(outcome(&result));
            // Before the client hears of it, so that a read through a peer sees it.
            let origin = match kind {
                WriteKind::Item => Origin::Write,
                WriteKind::Control => Origin::Control,
            };
            cx.fleet.publish(&scope, origin).await;
            result
        })
    };
    let answer = cx
        .upstream
        .by_deadline(inb, task)
        .await?
        .map_err(|e| ProtocolError::Internal(format!("the write's task failed: {e}")))??;
    Ok((respond::relayed(answer), Outcome::NotCacheable))
}

/// How a forwarded write ended, as the cache needs to know it. One its endpoint's circuit breaker
/// refused at once (it opened after [`forward`] looked) was never sent: nothing of it can land.
fn outcome(result: &Result<UpstreamResponse, UpstreamError>) -> WriteOutcome {
    match result {
        Err(e) if e.refused_at_once() => WriteOutcome::Answered,
        Err(_) => WriteOutcome::Unknown,
        Ok(answer) if answer.status.is_server_error() => WriteOutcome::Unknown,
        Ok(answer) if answers::contradicts_schema(answer.status.as_u16(), &answer.body) => {
            WriteOutcome::ContradictedSchema
        }
        Ok(_) => WriteOutcome::Answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_at_once_is_not_in_doubt() {
        let endpoint = || "http://e".to_string();
        let refused = Err(UpstreamError::BreakerOpen {
            endpoint: endpoint(),
        });
        assert_eq!(outcome(&refused), WriteOutcome::Answered);
        let lost = Err(UpstreamError::Io {
            endpoint: endpoint(),
            detail: "reset".into(),
        });
        assert_eq!(outcome(&lost), WriteOutcome::Unknown);
    }
}
