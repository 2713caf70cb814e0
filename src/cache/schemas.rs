//! Key schemas, as facts: which attributes of a table's items form their primary key, as the
//! table's own DescribeTable says (the proxy fetches it; nothing here does I/O).
//!
//! A PutItem names its item, not its key; to invalidate exactly the entry it changes, ddbcache must
//! know which of the item's attributes are the key, and a GetItem's entry may only be stored when
//! its `Key` is exactly that key. A schema is never guessed from traffic. Each table's slot has an
//! epoch, bumped whenever the schema may have changed (a control-plane call, traffic that
//! contradicts it); a DescribeTable answer only lands in the epoch its fetch started in, so a late
//! answer never overwrites what a newer event said. Fetches are single-flight: the first caller
//! fetches, the others wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::protocol::table::{KeySchema, TableId};

/// How long a failed fetch (no such table, an error) keeps the schema unknown before ddbcache
/// asks again: traffic to a table that does not exist must not double the load.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

enum State {
    Unknown,
    /// A fetch is under way; its ticket holds the sender.
    Fetching(watch::Receiver<()>),
    Known(Arc<KeySchema>),
    Failed {
        /// On the cache's clock, in milliseconds.
        retry_at: u64,
    },
}

struct Slot {
    epoch: u64,
    state: State,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            epoch: 0,
            state: State::Unknown,
        }
    }
}

/// What a caller that needs a schema should do.
pub(crate) enum Need {
    Known(Arc<KeySchema>),
    /// Fetch it, then hand the answer to [`KeySchemas::finish`] with the ticket.
    Fetch(FetchTicket),
    /// Another caller is fetching it: wait for the change, then look again.
    Wait(watch::Receiver<()>),
    /// A recent fetch failed: do without.
    Unavailable,
}

/// The right to fetch one table's schema; dropping it unfinished lets the next caller try.
pub(crate) struct FetchTicket {
    schemas: Arc<KeySchemas>,
    table: TableId,
    epoch: u64,
    /// When the fetch started, on the cache's clock: a failure is retried from then on.
    started: u64,
    _done: watch::Sender<()>,
    finished: bool,
}

impl FetchTicket {
    /// Records the fetch's result: the schema, or `None` when there was none to be had.
    pub(crate) fn finish(mut self, schema: Option<KeySchema>) {
        self.finished = true;
        let mut tables = self.schemas.tables.lock();
        let slot = tables.entry(self.table.clone()).or_default();
        if slot.epoch != self.epoch {
            // Something said the schema may have changed while this answer was on its way.
            slot.state = State::Unknown;
            return;
        }
        slot.state = match schema {
            Some(s) => State::Known(Arc::new(s)),
            None => State::Failed {
                retry_at: self.started + RETRY_AFTER_FAILURE.as_millis() as u64,
            },
        };
    }
}

impl Drop for FetchTicket {
    fn drop(&mut self) {
        if !self.finished {
            let mut tables = self.schemas.tables.lock();
            if let Some(slot) = tables.get_mut(&self.table) {
                if slot.epoch == self.epoch && matches!(slot.state, State::Fetching(_)) {
                    slot.state = State::Unknown;
                }
            }
        }
    }
}

/// The key schemas, by table identity. Every hit asks it ([`KeySchemas::is_key`]), so the map
/// hashes with ahash (keyed at random per process, as std's is) rather than SipHash.
#[derive(Default)]
pub struct KeySchemas {
    tables: Mutex<HashMap<TableId, Slot, ahash::RandomState>>,
}

impl KeySchemas {
    /// Whether `names` are the table's key attributes, if its schema is known; unlike
    /// [`KeySchemas::get`], it leaves the shared schema's reference count alone (a hit asks it).
    pub(crate) fn is_key<'n>(
        &self,
        table: &TableId,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Option<bool> {
        match &self.tables.lock().get(table)?.state {
            State::Known(s) => Some(s.is_key(names)),
            _ => None,
        }
    }

    /// The table's schema, if known.
    pub(crate) fn get(&self, table: &TableId) -> Option<Arc<KeySchema>> {
        match &self.tables.lock().get(table)?.state {
            State::Known(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The schema, or what to do to have it, at `now` on the cache's clock.
    pub(crate) fn need(self: &Arc<Self>, table: &TableId, now: u64) -> Need {
        let mut tables = self.tables.lock();
        let slot = tables.entry(table.clone()).or_default();
        match &slot.state {
            State::Known(s) => return Need::Known(s.clone()),
            State::Fetching(done) => return Need::Wait(done.clone()),
            State::Failed { retry_at } if now < *retry_at => return Need::Unavailable,
            State::Unknown | State::Failed { .. } => {}
        }
        let (done, waiting) = watch::channel(());
        slot.state = State::Fetching(waiting);
        Need::Fetch(FetchTicket {
            schemas: self.clone(),
            table: table.clone(),
            epoch: slot.epoch,
            started: now,
            _done: done,
            finished: false,
        })
    }

    /// The schema may have changed (a control-plane call, contradicting traffic): forget it, and
    /// make any fetch under way land nowhere.
    pub(crate) fn forget(&self, table: &TableId) {
        let mut tables = self.tables.lock();
        let slot = tables.entry(table.clone()).or_default();
        slot.epoch += 1;
        slot.state = State::Unknown;
    }

    /// Forgets every schema (a full flush).
    pub(crate) fn forget_all(&self) {
        for slot in self.tables.lock().values_mut() {
            slot.epoch += 1;
            slot.state = State::Unknown;
        }
    }

    /// The account whose credentials reach this region's tables, from a known table's ARN.
    pub(crate) fn local_account(&self, region: &str) -> Option<String> {
        self.tables
            .lock()
            .iter()
            .find_map(|(id, slot)| match &slot.state {
                State::Known(s) if id.region() == region => s.account().map(str::to_string),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(hash: &str) -> KeySchema {
        KeySchema {
            table_arn: Some(format!("arn:aws:dynamodb:r:123456789012:table/{hash}")),
            hash: hash.into(),
            range: None,
            local_indexes: vec![],
            global_indexes: vec![],
        }
    }

    fn rt() -> TableId {
        TableId::new("r", "t")
    }

    fn fetch(s: &Arc<KeySchemas>, table: &TableId) -> FetchTicket {
        fetch_at(s, table, 0)
    }

    fn fetch_at(s: &Arc<KeySchemas>, table: &TableId, now: u64) -> FetchTicket {
        match s.need(table, now) {
            Need::Fetch(t) => t,
            _ => panic!("expected to fetch"),
        }
    }

    #[tokio::test]
    async fn one_fetch_at_a_time_and_waiters_see_its_result() {
        let s = Arc::new(KeySchemas::default());
        let ticket = fetch(&s, &rt());
        let Need::Wait(mut waiting) = s.need(&rt(), 0) else {
            panic!("a second caller waits");
        };
        ticket.finish(Some(schema("pk")));
        // The sender is gone: the waiter wakes.
        assert!(waiting.changed().await.is_err());
        assert!(matches!(s.need(&rt(), 0), Need::Known(k) if k.hash == "pk"));
        assert_eq!(s.local_account("r").as_deref(), Some("123456789012"));
        assert_eq!(s.local_account("other"), None);
    }

    #[test]
    fn an_answer_from_before_a_change_is_dropped() {
        let s = Arc::new(KeySchemas::default());
        let ticket = fetch(&s, &rt());
        s.forget(&rt());
        ticket.finish(Some(schema("old")));
        assert!(s.get(&rt()).is_none());
        let ticket = fetch(&s, &rt());
        ticket.finish(Some(schema("new")));
        assert_eq!(s.get(&rt()).unwrap().hash, "new");
    }

    #[test]
    fn an_abandoned_fetch_lets_the_next_caller_fetch_and_a_failure_backs_off() {
        let s = Arc::new(KeySchemas::default());
        drop(fetch(&s, &rt()));
        let ticket = fetch(&s, &rt());
        ticket.finish(None);
        assert!(matches!(s.need(&rt(), 999), Need::Unavailable));
        // A second later it is asked again.
        let again = fetch_at(&s, &rt(), 1000);
        again.finish(None);
        s.forget_all();
        assert!(matches!(s.need(&rt(), 0), Need::Fetch(_)));
    }
}
