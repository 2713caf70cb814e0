//! Writes: item writes, PartiQL, control-plane calls and operations ddbcache does not know.
//!
//! What a write may change is invalidated before it is forwarded and again once the upstream
//! answered — or failed to: a write that got no answer may still have happened, so what it touched
//! is also "in doubt" for a while (misses on it are not stored). Once sent, a write runs to its
//! end in a task of its own: a client that hangs up (an SDK timeout, a cancelled context) must not
//! cancel the invalidation that follows the upstream's answer.

use std::sync::Arc;

use crate::cache::{Cache, InvalidationCause};
use crate::fleet::Origin;
use crate::protocol::partiql;
use crate::protocol::table::TableId;
use crate::protocol::writes::{self, WriteContext, WriteScope};
use crate::protocol::ProtocolError;

use super::admit::Inbound;
use super::respond::{self, Outcome};
use super::tables::contradicts_schema;
use super::{Answered, Encoding, Proxy};

impl Proxy {
    /// PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems.
    pub(super) async fn item_write(
        self: &Arc<Self>,
        cache: &Arc<Cache>,
        inb: &Inbound,
    ) -> Answered {
        let schema = |id: &TableId| cache.schemas().get(id);
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
            if cache.schemas().get(id).is_none() {
                self.prefetch_schema(cache, id, id.name(), inb);
            }
        }
        self.write(cache, inb, scope, InvalidationCause::Write)
            .await
    }

    /// ExecuteStatement, BatchExecuteStatement, ExecuteTransaction: reads pass through, writes
    /// invalidate the tables their statements name.
    pub(super) async fn partiql(self: &Arc<Self>, cache: &Arc<Cache>, inb: &Inbound) -> Answered {
        let scope = partiql::parse_partiql(inb.op, &inb.json, inb.region.as_str());
        if scope.is_empty() {
            self.pass_through(inb).await
        } else {
            self.write(cache, inb, scope, InvalidationCause::Write)
                .await
        }
    }

    /// An operation ddbcache does not know (DynamoDB adds operations over time): it may have
    /// written anything.
    pub(super) async fn unknown(self: &Arc<Self>, cache: &Arc<Cache>, inb: &Inbound) -> Answered {
        self.write(
            cache,
            inb,
            WriteScope::everything(),
            InvalidationCause::Write,
        )
        .await
    }

    /// Control-plane calls: the table's entries and key schema go, before and after.
    pub(super) async fn control(self: &Arc<Self>, cache: &Arc<Cache>, inb: &Inbound) -> Answered {
        let scope = writes::control_scope(inb.op, &inb.json, inb.region.as_str());
        self.write(cache, inb, scope, InvalidationCause::Control)
            .await
    }

    /// Invalidate, forward, invalidate again, whatever the outcome — in a task that outlives the
    /// client's connection.
    async fn write(
        self: &Arc<Self>,
        cache: &Arc<Cache>,
        inb: &Inbound,
        scope: WriteScope,
        cause: InvalidationCause,
    ) -> Answered {
        let (this, cache, inb) = (self.clone(), cache.clone(), inb.clone());
        let task = tokio::spawn(async move {
            let control = cause == InvalidationCause::Control;
            if control {
                forget_schemas(&cache, &scope);
            }
            cache.write_started(&scope, cause);
            let result = this.forward(&inb, Encoding::AsClientAsked).await;
            let mut scope = scope;
            scope.in_doubt = match &result {
                Err(_) => true,
                Ok(answer) => answer.status.is_server_error(),
            };
            cache.write_finished(&scope);
            if control {
                forget_schemas(&cache, &scope);
            }
            // Before the client hears of it, so that a read through a peer sees it.
            let origin = if control {
                Origin::Control
            } else {
                Origin::Write
            };
            this.fleet.publish(&scope, origin).await;
            if let Ok(answer) = &result {
                if contradicts_schema(answer) {
                    for id in scope.items.iter().map(|i| &i.table).chain(&scope.tables) {
                        cache.schema_contradicted(id);
                    }
                }
            }
            result
        });
        let answer = task
            .await
            .map_err(|e| ProtocolError::Internal(format!("the write's task failed: {e}")))??;
        Ok((respond::relayed(answer), Outcome::NotCacheable))
    }
}

/// A control-plane call may recreate, restore or re-key a table: its schema is no longer known.
fn forget_schemas(cache: &Cache, scope: &WriteScope) {
    if scope.everything {
        cache.schemas().forget_all();
    }
    for id in &scope.tables {
        cache.schemas().forget(id);
    }
}
