//! Writes: item writes, PartiQL, control-plane calls and operations ddbcache does not know. What a write may change is invalidated
//! before it is forwarded and again once the upstream answered — or failed to: a write that got no
//! answer may still have happened. Reads that started while it was in flight cannot fill.

use crate::cache::{Cache, InvalidationCause};
use crate::protocol::writes::{self, WriteScope};
use crate::protocol::{answers, partiql, Operation};

use super::admit::Inbound;
use super::respond::{self, Outcome};
use super::{Answered, Encoding, Proxy};

impl Proxy {
    /// PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems.
    pub(super) async fn item_write(&self, cache: &Cache, inb: &Inbound) -> Answered {
        let scope = writes::parse_write(inb.op, &inb.json, &|t: &str| {
            cache.schemas().key_names(t).map(|n| n.to_vec())
        })?;
        self.write(cache, inb, &scope).await
    }

    /// ExecuteStatement, BatchExecuteStatement, ExecuteTransaction: reads pass through, writes
    /// invalidate the tables their statements name.
    pub(super) async fn partiql(&self, cache: &Cache, inb: &Inbound) -> Answered {
        let scope = partiql::parse_partiql(inb.op, &inb.json)?;
        if scope == WriteScope::default() {
            self.pass_through(inb).await
        } else {
            self.write(cache, inb, &scope).await
        }
    }

    /// An operation ddbcache does not know (DynamoDB adds operations over time): it may have
    /// written anything.
    pub(super) async fn unknown(&self, cache: &Cache, inb: &Inbound) -> Answered {
        self.write(cache, inb, &WriteScope::everything()).await
    }

    /// Invalidate, forward, invalidate again, whatever the outcome.
    async fn write(&self, cache: &Cache, inb: &Inbound, scope: &WriteScope) -> Answered {
        cache.write_started(scope);
        let result = self.forward(inb, Encoding::AsClientAsked).await;
        cache.write_finished(scope);
        Ok((respond::relayed(result?), Outcome::NotCacheable))
    }

    /// Control-plane calls: the table's entries and key schema go, before and after.
    pub(super) async fn control(&self, cache: &Cache, inb: &Inbound) -> Answered {
        crate::protocol::reads::require_object(&inb.json)?;
        let table = writes::control_table(&inb.json);
        let invalidate = || match &table {
            Some(t) => cache.invalidate_table(t, InvalidationCause::Control),
            None => cache.invalidate_everything(InvalidationCause::Control),
        };
        invalidate();
        let result = self.forward(inb, Encoding::AsClientAsked).await;
        invalidate();
        let upstream = result?;
        if inb.op == Operation::CreateTable && upstream.status.is_success() {
            if let Some((table, names)) = answers::key_schema_of(&upstream.body) {
                cache.schemas().learn(&table, names);
            }
        }
        Ok((respond::relayed(upstream), Outcome::NotCacheable))
    }
}
