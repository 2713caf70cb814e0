//! The item cache and the query cache, behind one handle with a few verbs: `lookup` (with
//! single-flight), `peek_item` and [`Fill`] (for BatchGetItem's many keys), `write_started` /
//! `write_finished`, `invalidate_table` and `flush`. No HTTP in here: entries are response bytes
//! and their checksum. Whether a request may use the cache, and for how long, is decided by the
//! proxy's policy, not here.
//!
//! Coherence lives in [`generations`]: entries carry the stamp their read started under, and a
//! lookup only accepts an entry whose stamp is still current. Key schemas, which writes need to
//! name the item they change, live in [`schemas`].

mod generations;
pub(crate) mod schemas;
mod store;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::IntCounter;

use crate::config::{Compression, Config};
use crate::metrics::Metrics;
use crate::protocol::table::TableId;
use crate::protocol::writes::WriteScope;
pub use generations::Restrictions;
use generations::{Generations, Marks, Scope, Stamp, TableGenerations};
use schemas::KeySchemas;
pub use store::{CacheKey, Entry};
use store::{Entries, NewEntry, Reservation};

/// Which cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Item,
    Query,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Item => "item",
            Kind::Query => "query",
        }
    }
}

/// Why entries were invalidated: the `cause` label of `ddbcache_cache_invalidations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationCause {
    /// A write passed through.
    Write,
    /// A control-plane call (the table may have been recreated, restored or re-keyed).
    Control,
    /// `POST /cache/flush`.
    Flush,
    /// A write made through another sidecar of the fleet.
    Fleet,
    /// A change read from a table's DynamoDB Stream.
    Stream,
    /// Traffic contradicted the table's key schema.
    Schema,
    /// The fleet link came back after being down: what was missed meanwhile is unknown.
    FleetResync,
}

impl InvalidationCause {
    pub const ALL: [InvalidationCause; 7] = [
        InvalidationCause::Write,
        InvalidationCause::Control,
        InvalidationCause::Flush,
        InvalidationCause::Fleet,
        InvalidationCause::Stream,
        InvalidationCause::Schema,
        InvalidationCause::FleetResync,
    ];

    pub fn label(self) -> &'static str {
        match self {
            InvalidationCause::Write => "write",
            InvalidationCause::Control => "control",
            InvalidationCause::Flush => "flush",
            InvalidationCause::Fleet => "fleet",
            InvalidationCause::Stream => "stream",
            InvalidationCause::Schema => "schema",
            InvalidationCause::FleetResync => "fleet_resync",
        }
    }
}

/// One of the two caches: its entries and its counters. The counters are resolved once: a labelled
/// lookup per hit would take the metric family's lock and hash the label on the hit path.
struct Store {
    entries: Entries,
    hits: IntCounter,
    misses: IntCounter,
    negative_hits: IntCounter,
    coalesced: IntCounter,
    capacity: u64,
}

impl Store {
    fn new(capacity: u64, kind: Kind, metrics: &Metrics) -> Store {
        let label = [kind.label()];
        Store {
            entries: Entries::new(capacity, metrics.eviction_counter(kind.label())),
            hits: metrics.cache_hits.with_label_values(&label),
            misses: metrics.cache_misses.with_label_values(&label),
            negative_hits: metrics.cache_negative_hits.with_label_values(&label),
            coalesced: metrics.cache_coalesced.with_label_values(&label),
            capacity,
        }
    }
}

/// What a cached read depends on, besides its table: the one scope whose writes end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency<'a> {
    /// An item entry: its canonical primary key.
    Item(&'a [u8]),
    /// A Query entry on the base table or a local secondary index whose partition is known: the
    /// canonical partition key (the partition key attribute alone, encoded like a key).
    Partition(&'a [u8]),
    /// Any other Query or Scan: every write to the table ends it.
    Table,
}

/// The outcome of a lookup.
// A miss carries its key inline (no allocation on the hit path builds it); the value is matched
// at once by the caller, so its size costs a move, where boxing would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Lookup<'a> {
    /// A current entry. `coalesced`: it arrived by waiting on another request's fill.
    Hit { entry: Entry, coalesced: bool },
    /// Go upstream, then call [`Fill::complete`] (or drop the fill to give up).
    Miss(Fill<'a>),
}

/// The right to fill one entry, held while the miss is upstream. Other lookups of the same key
/// wait for it (single-flight); dropping it without completing lets the next one try.
pub struct Fill<'a> {
    cache: &'a Cache,
    kind: Kind,
    reservation: Option<Reservation<'a>>,
    key: CacheKey,
    stamp: Stamp,
    table: Arc<TableGenerations>,
    scope: Scope,
    restrictions: Restrictions,
}

impl Fill<'_> {
    /// What the marks on this entry's scope allow, as they were when the read started: whether
    /// the miss must read consistently, or must not be stored.
    pub fn restrictions(&self) -> Restrictions {
        self.restrictions
    }

    /// Stores an upstream answer if no write began since the read started and no write whose
    /// outcome is unknown may still land on it.
    pub fn complete(
        self,
        body: Bytes,
        item: Option<Range<usize>>,
        ttl: Duration,
    ) -> Result<(), Refusal> {
        let cache = self.cache;
        let generations = &cache.generations;
        if generations.stamp(&self.table, self.scope) != self.stamp {
            return Err(Refusal::Raced);
        }
        if generations.restrictions(&self.table, self.scope).in_doubt {
            return Err(Refusal::InDoubt);
        }
        if ttl.is_zero() {
            return Err(Refusal::Raced);
        }
        // The entry is a copy: an upstream body is usually a slice of the connection's read
        // buffer, which it would otherwise keep alive.
        let entry = Entry::new(NewEntry {
            key: self.key.bytes(),
            body: &body,
            item,
            table: self.table,
            stamp: self.stamp,
            expires: cache.now_ms().saturating_add(ttl.as_millis() as u64),
            compress: cache.compress,
        });
        if cache
            .store(self.kind)
            .entries
            .insert(entry, self.reservation)
        {
            Ok(())
        } else {
            Err(Refusal::Raced)
        }
    }
}

/// Why a fill did not store its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A write began (or the entry was filled otherwise) since the read started.
    Raced,
    /// A write whose outcome is unknown may still land on the entry.
    InDoubt,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Raced => "raced",
            Refusal::InDoubt => "in_doubt",
        }
    }
}

/// Statistics of one cache, as `/cache` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStats {
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
}

/// The cache handle: both caches, their generations, and the key schemas.
pub struct Cache {
    items: Store,
    queries: Store,
    generations: Generations,
    schemas: Arc<KeySchemas>,
    /// How long what a write touched stays "recently written" after its answer.
    consistency_window: Duration,
    /// How long what a write whose outcome is unknown touched stays "in doubt".
    in_doubt_window: Duration,
    /// The clock of entries' expiry.
    clock: Instant,
    /// Store bodies LZ4-compressed (`cache.compression`).
    compress: bool,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Cache {
        let items = Store::new(config.cache.item.capacity, Kind::Item, &metrics);
        let queries = Store::new(config.cache.query.capacity, Kind::Query, &metrics);
        for (kind, store) in [(Kind::Item, &items), (Kind::Query, &queries)] {
            metrics
                .cache_capacity
                .with_label_values(&[kind.label()])
                .set(store.capacity as i64);
        }
        // Export zeros from the start, so rate() works from the first scrape.
        for cause in InvalidationCause::ALL {
            metrics.invalidations.with_label_values(&[cause.label()]);
        }
        Cache {
            items,
            queries,
            generations: Generations::new(),
            schemas: Arc::new(KeySchemas::default()),
            consistency_window: config.cache.consistency_window,
            in_doubt_window: config.in_doubt_window(),
            clock: Instant::now(),
            compress: config.cache.compression == Compression::Lz4,
            metrics,
        }
    }

    /// The key schemas of the tables this cache has seen.
    pub(crate) fn schemas(&self) -> &Arc<KeySchemas> {
        &self.schemas
    }

    /// Traffic contradicted what ddbcache knows of a table's key (a read's key has other
    /// attributes than the schema's, the upstream says the key does not match or the table does
    /// not exist): the schema is forgotten, and so is every entry of the table.
    pub(crate) fn schema_contradicted(&self, table: &TableId) {
        self.schemas.forget(table);
        self.invalidate_table(table, InvalidationCause::Schema);
    }

    fn store(&self, kind: Kind) -> &Store {
        match kind {
            Kind::Item => &self.items,
            Kind::Query => &self.queries,
        }
    }

    fn scope_of(&self, table: &TableId, dependency: Dependency<'_>) -> Scope {
        match dependency {
            Dependency::Item(key) => self.generations.item_scope(table, key),
            Dependency::Partition(key) => self.generations.partition_scope(table, key),
            Dependency::Table => Scope::TableWrites,
        }
    }

    /// Milliseconds on the cache's clock (entries' expiry).
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether an entry may answer: not expired, and none of the cells it depends on changed
    /// since its read started. The entry names its own cells, so a hit looks nothing else up.
    fn is_current(&self, entry: &Entry, now_ms: u64) -> bool {
        entry.expires() > now_ms
            && self
                .generations
                .stamp(entry.table(), entry.scope())
                .digest()
                == entry.generations()
    }

    /// Looks a read up. On a miss, the returned [`Fill`] holds the key: concurrent lookups of it
    /// wait for this one's answer instead of going upstream too.
    ///
    /// A hit is judged by the cells its entry names (the ones its read depended on, which every
    /// write that could change it bumps); `table` and `dependency` are only needed for a miss.
    pub async fn lookup(
        &self,
        kind: Kind,
        table: &TableId,
        dependency: Dependency<'_>,
        key: CacheKey,
    ) -> Lookup<'_> {
        let store = self.store(kind);
        // The plain get answers hits without touching placeholders; only a miss reserves.
        if let Some(found) = store.entries.get(&key) {
            if self.is_current(&found, self.now_ms()) {
                self.count_hit(kind, &found, false);
                return Lookup::Hit {
                    entry: found,
                    coalesced: false,
                };
            }
            store.entries.remove_if_same(&key, &found);
        }
        let state = self.generations.table(table);
        let scope = self.scope_of(table, dependency);
        // Bounded: each turn either answers or removes a dead entry; a key rewritten faster than
        // it can be read falls through to an unguarded miss.
        for _ in 0..4 {
            // Taken before the read can go upstream: a write that starts after it ends the fill.
            let stamp = self.generations.stamp(&state, scope);
            let placeholder = Entry::new(NewEntry {
                key: key.bytes(),
                body: b"",
                item: None,
                table: state.clone(),
                stamp,
                expires: 0,
                compress: false,
            });
            let (found, coalesced) = match store.entries.get_or_reserve(placeholder).await {
                Ok(entry) => {
                    // Another request's upstream call filled it while this one waited, unless it
                    // was there all along.
                    (entry, true)
                }
                Err(reservation) => {
                    store.misses.inc();
                    return Lookup::Miss(self.fill(
                        kind,
                        Some(reservation),
                        key,
                        stamp,
                        state,
                        scope,
                    ));
                }
            };
            if self.is_current(&found, self.now_ms()) {
                self.count_hit(kind, &found, coalesced);
                return Lookup::Hit {
                    entry: found,
                    coalesced,
                };
            }
            // Filled under generations that are no longer current, or expired: drop it and look
            // again (a concurrent fill may be fresh).
            store.entries.remove_if_same(&key, &found);
        }
        store.misses.inc();
        let stamp = self.generations.stamp(&state, scope);
        Lookup::Miss(self.fill(kind, None, key, stamp, state, scope))
    }

    fn fill<'a>(
        &'a self,
        kind: Kind,
        reservation: Option<Reservation<'a>>,
        key: CacheKey,
        stamp: Stamp,
        table: Arc<TableGenerations>,
        scope: Scope,
    ) -> Fill<'a> {
        let restrictions = self.generations.restrictions(&table, scope);
        Fill {
            cache: self,
            kind,
            reservation,
            key,
            stamp,
            table,
            scope,
            restrictions,
        }
    }

    fn count_hit(&self, kind: Kind, entry: &Entry, coalesced: bool) {
        let store = self.store(kind);
        store.hits.inc();
        if coalesced {
            store.coalesced.inc();
        }
        if kind == Kind::Item && entry.is_negative() {
            store.negative_hits.inc();
        }
    }

    /// Looks an item up without waiting or reserving (BatchGetItem's keys). On a miss, returns
    /// the [`Fill`] to complete once the upstream answered; it does not hold the key.
    pub(crate) fn peek_item(&self, table: &TableId, item_key: &[u8], key: CacheKey) -> Lookup<'_> {
        if let Some(entry) = self.items.entries.get(&key) {
            if self.is_current(&entry, self.now_ms()) {
                self.count_hit(Kind::Item, &entry, false);
                return Lookup::Hit {
                    entry,
                    coalesced: false,
                };
            }
            self.items.entries.remove_if_same(&key, &entry);
        }
        let state = self.generations.table(table);
        let scope = self.generations.item_scope(table, item_key);
        let stamp = self.generations.stamp(&state, scope);
        self.items.misses.inc();
        Lookup::Miss(self.fill(Kind::Item, None, key, stamp, state, scope))
    }

    /// Ends every entry a write (or a control-plane call) may change; called before it is
    /// forwarded.
    pub fn write_started(&self, scope: &WriteScope, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.apply(scope, Marks::default());
    }

    /// Ends them again once the upstream answered — or failed: a write that got no answer may
    /// still have happened. Reads that started while the write was in flight cannot fill; what
    /// it touched is recently written for the consistency window, and in doubt for the in-doubt
    /// window when `scope.in_doubt`.
    pub fn write_finished(&self, scope: &WriteScope) {
        self.apply(scope, self.marks_for(scope));
    }

    /// A write made through another sidecar (or seen on a table's stream): the same invalidation
    /// and marks as the writer's own.
    pub fn apply_remote(&self, scope: &WriteScope, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.apply(scope, self.marks_for(scope));
    }

    fn marks_for(&self, scope: &WriteScope) -> Marks {
        self.generations.marks(
            Some(self.consistency_window),
            scope.in_doubt.then_some(self.in_doubt_window),
        )
    }

    fn apply(&self, scope: &WriteScope, marks: Marks) {
        if scope.everything {
            self.generations.write_everything(marks);
            return;
        }
        for item in &scope.items {
            let state = self.generations.table(&item.table);
            self.generations.write_item(
                &state,
                &item.table,
                &item.key,
                item.partition.as_deref(),
                marks,
            );
        }
        for table in &scope.tables {
            self.generations
                .write_table(&self.generations.table(table), marks);
        }
    }

    fn count_invalidation(&self, cause: InvalidationCause) {
        self.metrics
            .invalidations
            .with_label_values(&[cause.label()])
            .inc();
    }

    /// Drops a table's entries (control-plane calls, flushes). A control-plane call also drops
    /// the table's key schema: the table may have been recreated with another key.
    pub fn invalidate_table(&self, table: &TableId, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations
            .write_table(&self.generations.table(table), Marks::default());
        if cause == InvalidationCause::Control {
            self.schemas.forget(table);
        }
        // Entries are already dead; reclaim their memory too.
        for store in [&self.items, &self.queries] {
            store.entries.remove_table(table);
        }
        self.refresh_gauges();
    }

    /// Drops the entries of every table named `name` (in every region, or in `region`): what
    /// `POST /cache/flush?table=NAME` does.
    pub(crate) fn flush_table(&self, name: &str, region: Option<&str>) -> usize {
        let ids: Vec<TableId> = self
            .generations
            .table_ids()
            .into_iter()
            .filter(|id| id.name() == name && region.is_none_or(|want| want == id.region()))
            .collect();
        for id in &ids {
            self.invalidate_table(id, InvalidationCause::Flush);
        }
        ids.len()
    }

    /// Table identities this cache has looked up or invalidated.
    pub(crate) fn table_ids(&self) -> Vec<TableId> {
        self.generations.table_ids()
    }

    /// Drops everything, key schemas included.
    pub(crate) fn flush(&self) {
        self.flush_for(InvalidationCause::Flush);
    }

    /// [`Cache::flush`], counted under `cause`. Key schemas go too: a table may have been
    /// recreated with another key while this cache was not told.
    pub(crate) fn flush_for(&self, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations.write_everything(Marks::default());
        self.schemas.forget_all();
        self.items.entries.clear();
        self.queries.entries.clear();
        self.refresh_gauges();
    }

    pub fn stats(&self, kind: Kind) -> StoreStats {
        let store = self.store(kind);
        let (hits, misses) = (store.hits.get(), store.misses.get());
        StoreStats {
            entries: store.entries.len() as u64,
            bytes: store.entries.weight(),
            capacity_bytes: store.capacity,
            hits,
            misses,
            hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
        }
    }

    /// Updates the entries and bytes gauges (called on scrape).
    pub(crate) fn refresh_gauges(&self) {
        for kind in [Kind::Item, Kind::Query] {
            let store = self.store(kind);
            let label = [kind.label()];
            self.metrics
                .cache_entries
                .with_label_values(&label)
                .set(store.entries.len() as i64);
            self.metrics
                .cache_bytes
                .with_label_values(&label)
                .set(store.entries.weight() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(capacity: u64) -> Cache {
        let mut config = Config::default();
        config.cache.item.capacity = capacity;
        config.cache.query.capacity = capacity;
        Cache::new(&config, Arc::new(Metrics::new()))
    }

    fn id(name: &str) -> TableId {
        TableId::new("r", name)
    }

    const TTL: Duration = Duration::from_secs(60);

    async fn fill_item(cache: &Cache, table: &str, pk: &[u8], body: &'static [u8]) -> bool {
        let table = &id(table);
        match cache
            .lookup(
                Kind::Item,
                table,
                Dependency::Item(pk),
                CacheKey::item(table, pk, b""),
            )
            .await
        {
            Lookup::Miss(fill) => fill
                .complete(Bytes::from_static(body), Some(0..2), TTL)
                .is_ok(),
            Lookup::Hit { .. } => panic!("expected a miss"),
        }
    }

    async fn is_hit(cache: &Cache, table: &str, pk: &[u8]) -> bool {
        let table = &id(table);
        matches!(
            cache
                .lookup(
                    Kind::Item,
                    table,
                    Dependency::Item(pk),
                    CacheKey::item(table, pk, b""),
                )
                .await,
            Lookup::Hit { .. }
        )
    }

    fn item_write(table: &str, pk: &[u8]) -> WriteScope {
        WriteScope {
            items: vec![crate::protocol::writes::ItemWrite {
                table: id(table),
                key: pk.to_vec(),
                partition: Some(pk.to_vec()),
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_entry_does_not_keep_the_buffer_its_body_came_from() {
        let cache = cache_with(1 << 20);
        let read_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let Lookup::Miss(fill) = cache
            .lookup(
                Kind::Item,
                &id("t"),
                Dependency::Item(b"k"),
                CacheKey::item(&id("t"), b"k", b""),
            )
            .await
        else {
            panic!("expected a miss");
        };
        assert!(fill
            .complete(read_buffer.slice(0..100), Some(0..2), TTL)
            .is_ok());
        assert!(is_hit(&cache, "t", b"k").await);
        assert!(
            read_buffer.is_unique(),
            "the cached entry must not hold a reference to the 64 KiB buffer"
        );
    }

    #[tokio::test]
    async fn fill_then_hit_then_write_invalidates() {
        let cache = cache_with(1 << 20);
        assert!(fill_item(&cache, "t", b"k1", b"{}").await);
        assert!(fill_item(&cache, "t", b"k2", b"{}").await);
        assert!(is_hit(&cache, "t", b"k1").await);
        cache.write_started(&item_write("t", b"k1"), InvalidationCause::Write);
        assert!(!is_hit(&cache, "t", b"k1").await);
        assert!(is_hit(&cache, "t", b"k2").await, "other items stay");
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_write_does_not_fill() {
        let cache = cache_with(1 << 20);
        let key = CacheKey::item(&id("t"), b"k", b"");
        let Lookup::Miss(fill) = cache
            .lookup(Kind::Item, &id("t"), Dependency::Item(b"k"), key)
            .await
        else {
            panic!("expected a miss");
        };
        // The write begins (and ends) while the read is upstream.
        cache.write_started(&item_write("t", b"k"), InvalidationCause::Write);
        assert_eq!(
            fill.complete(Bytes::from_static(b"{}"), None, TTL),
            Err(Refusal::Raced)
        );
        assert!(!is_hit(&cache, "t", b"k").await);
    }

    async fn fill_query(cache: &Cache, table: &str, dependency: Dependency<'_>, name: &[u8]) {
        let table = &id(table);
        let Lookup::Miss(fill) = cache
            .lookup(Kind::Query, table, dependency, CacheKey::query(table, name))
            .await
        else {
            panic!("expected a miss")
        };
        assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL).is_ok());
    }

    async fn is_query_hit(
        cache: &Cache,
        table: &str,
        dependency: Dependency<'_>,
        name: &[u8],
    ) -> bool {
        let table = &id(table);
        matches!(
            cache
                .lookup(Kind::Query, table, dependency, CacheKey::query(table, name))
                .await,
            Lookup::Hit { .. }
        )
    }

    #[tokio::test]
    async fn a_write_ends_queries_on_its_partition_and_table_wide_ones_not_other_partitions() {
        let cache = cache_with(1 << 20);
        fill_query(&cache, "t", Dependency::Partition(b"p"), b"Q p").await;
        fill_query(&cache, "t", Dependency::Partition(b"q"), b"Q q").await;
        fill_query(&cache, "t", Dependency::Table, b"S").await;
        fill_query(&cache, "u", Dependency::Table, b"S").await;
        cache.write_started(&item_write("t", b"p"), InvalidationCause::Write);
        assert!(!is_query_hit(&cache, "t", Dependency::Partition(b"p"), b"Q p").await);
        assert!(!is_query_hit(&cache, "t", Dependency::Table, b"S").await);
        assert!(is_query_hit(&cache, "t", Dependency::Partition(b"q"), b"Q q").await);
        assert!(is_query_hit(&cache, "u", Dependency::Table, b"S").await);
    }

    #[tokio::test]
    async fn a_write_in_doubt_blocks_fills_of_what_it_touched_and_marks_recent_writes() {
        let cache = cache_with(1 << 20);
        let mut scope = item_write("t", b"k");
        cache.write_started(&scope, InvalidationCause::Write);
        scope.in_doubt = true;
        cache.write_finished(&scope);
        let Lookup::Miss(fill) = cache
            .lookup(
                Kind::Item,
                &id("t"),
                Dependency::Item(b"k"),
                CacheKey::item(&id("t"), b"k", b""),
            )
            .await
        else {
            panic!("expected a miss");
        };
        assert!(fill.restrictions().in_doubt);
        assert!(fill.restrictions().recently_written);
        assert_eq!(
            fill.complete(Bytes::from_static(b"{}"), None, TTL),
            Err(Refusal::InDoubt)
        );
        // An answered write leaves only the recent mark.
        let scope = item_write("t", b"other");
        cache.write_started(&scope, InvalidationCause::Write);
        cache.write_finished(&scope);
        let Lookup::Miss(fill) = cache
            .lookup(
                Kind::Item,
                &id("t"),
                Dependency::Item(b"other"),
                CacheKey::item(&id("t"), b"other", b""),
            )
            .await
        else {
            panic!("expected a miss");
        };
        assert!(fill.restrictions().recently_written);
        assert!(!fill.restrictions().in_doubt);
    }

    #[tokio::test]
    async fn expired_entries_are_misses() {
        let cache = cache_with(1 << 20);
        let Lookup::Miss(fill) = cache
            .lookup(
                Kind::Item,
                &id("t"),
                Dependency::Item(b"k"),
                CacheKey::item(&id("t"), b"k", b""),
            )
            .await
        else {
            panic!()
        };
        assert!(fill
            .complete(Bytes::from_static(b"{}"), None, Duration::from_nanos(1))
            .is_ok());
        std::thread::sleep(Duration::from_millis(2));
        assert!(!is_hit(&cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_fill() {
        let cache = Arc::new(cache_with(1 << 20));
        let key = || CacheKey::item(&id("t"), b"k", b"");
        let Lookup::Miss(fill) = cache
            .lookup(Kind::Item, &id("t"), Dependency::Item(b"k"), key())
            .await
        else {
            panic!()
        };
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                match cache
                    .lookup(Kind::Item, &id("t"), Dependency::Item(b"k"), key())
                    .await
                {
                    Lookup::Hit { coalesced, .. } => coalesced,
                    Lookup::Miss(_) => panic!("the waiter should get the filled entry"),
                }
            })
        };
        // On the current-thread test runtime, yielding runs the waiter until it parks on the
        // placeholder.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL).is_ok());
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn flush_table_keeps_other_tables() {
        let cache = cache_with(1 << 20);
        fill_item(&cache, "a", b"k", b"{}").await;
        fill_item(&cache, "b", b"k", b"{}").await;
        cache.invalidate_table(&id("a"), InvalidationCause::Flush);
        assert!(!is_hit(&cache, "a", b"k").await);
        assert!(is_hit(&cache, "b", b"k").await);
        cache.flush();
        assert!(!is_hit(&cache, "b", b"k").await);
    }

    #[tokio::test]
    async fn bytes_stay_under_capacity() {
        let capacity = 64 * 1024;
        let cache = cache_with(capacity);
        static BODY: [u8; 1000] = [b' '; 1000];
        for i in 0..1000u32 {
            let pk = i.to_le_bytes();
            if let Lookup::Miss(fill) = cache
                .lookup(
                    Kind::Item,
                    &id("t"),
                    Dependency::Item(&pk),
                    CacheKey::item(&id("t"), &pk, b""),
                )
                .await
            {
                let _ = fill.complete(Bytes::from_static(&BODY), None, TTL);
            }
        }
        let stats = cache.stats(Kind::Item);
        assert!(stats.bytes <= capacity, "{stats:?}");
        assert!(stats.entries > 10, "{stats:?}");
        assert!(cache.metrics.eviction_counter("item").get() > 0);
    }
}
