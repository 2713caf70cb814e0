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

use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use prometheus::IntCounter;
use quick_cache::sync::{Cache as QuickCache, PlaceholderGuard};
use quick_cache::{Lifecycle, Weighter};

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::protocol::writes::WriteScope;
use generations::{Generations, Stamp, TableGenerations};
use schemas::KeySchemas;

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
}

impl InvalidationCause {
    pub const ALL: [InvalidationCause; 3] = [
        InvalidationCause::Write,
        InvalidationCause::Control,
        InvalidationCause::Flush,
    ];

    pub fn label(self) -> &'static str {
        match self {
            InvalidationCause::Write => "write",
            InvalidationCause::Control => "control",
            InvalidationCause::Flush => "flush",
        }
    }
}

/// A cache key: the table name (so a table can be flushed) followed by the canonical request.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey {
    bytes: Box<[u8]>,
    table_len: usize,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

impl CacheKey {
    /// Item cache key: table, canonical primary key, canonical projection.
    pub fn item(table: &str, key: &[u8], projection: &[u8]) -> CacheKey {
        Self::build(table, &[key, b"\xff", projection])
    }

    /// Query cache key: table and the canonical request.
    pub fn query(table: &str, canonical: &[u8]) -> CacheKey {
        Self::build(table, &[canonical])
    }

    fn build(table: &str, parts: &[&[u8]]) -> CacheKey {
        let len = table.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(table.as_bytes());
        bytes.push(0);
        for p in parts {
            bytes.extend_from_slice(p);
        }
        CacheKey {
            bytes: bytes.into_boxed_slice(),
            table_len: table.len(),
        }
    }

    pub(crate) fn table(&self) -> &[u8] {
        &self.bytes[..self.table_len]
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// A stored answer: the upstream's response body, as it was, with its checksum precomputed.
pub struct Entry {
    pub(crate) body: Bytes,
    pub(crate) crc32: HeaderValue,
    /// Where the `Item` sits inside `body` (GetItem-shaped entries); `None` for "no such item".
    pub(crate) item: Option<Range<usize>>,
    stamp: Stamp,
    expires: Instant,
}

impl Entry {
    pub(crate) fn is_negative(&self) -> bool {
        self.item.is_none()
    }

    /// The item's JSON, for answering BatchGetItem from GetItem-shaped entries.
    pub(crate) fn item_json(&self) -> Option<&[u8]> {
        self.item.as_ref().map(|r| &self.body[r.clone()])
    }
}

/// Per-entry bookkeeping not visible in its bytes (the `Arc`, the stamp, the index slot).
const ENTRY_OVERHEAD: u64 = 160;

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<CacheKey, Arc<Entry>> for ByteWeighter {
    fn weight(&self, key: &CacheKey, val: &Arc<Entry>) -> u64 {
        key.len() as u64 + val.body.len() as u64 + ENTRY_OVERHEAD
    }
}

#[derive(Clone)]
struct CountEvictions(IntCounter);

impl Lifecycle<CacheKey, Arc<Entry>> for CountEvictions {
    type RequestState = ();
    fn begin_request(&self) -> Self::RequestState {}
    fn on_evict(&self, _: &mut (), _: CacheKey, _: Arc<Entry>) {
        self.0.inc();
    }
}

type Entries = QuickCache<CacheKey, Arc<Entry>, ByteWeighter, ahash::RandomState, CountEvictions>;
type Guard<'a> =
    PlaceholderGuard<'a, CacheKey, Arc<Entry>, ByteWeighter, ahash::RandomState, CountEvictions>;

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
        // Estimated entries only sizes the index; a wrong guess costs a resize, not correctness.
        let estimated = (capacity / 1024).clamp(1024, 4 << 20) as usize;
        Store {
            entries: QuickCache::with(
                estimated,
                capacity,
                ByteWeighter,
                ahash::RandomState::new(),
                CountEvictions(metrics.eviction_counter(kind.label())),
            ),
            hits: metrics.cache_hits.with_label_values(&label),
            misses: metrics.cache_misses.with_label_values(&label),
            negative_hits: metrics.cache_negative_hits.with_label_values(&label),
            coalesced: metrics.cache_coalesced.with_label_values(&label),
            capacity,
        }
    }
}

/// The outcome of a lookup.
pub enum Lookup<'a> {
    /// A current entry. `coalesced`: it arrived by waiting on another request's fill.
    Hit { entry: Arc<Entry>, coalesced: bool },
    /// Go upstream, then call [`Fill::complete`] (or drop the fill to give up).
    Miss(Fill<'a>),
}

/// The right to fill one entry, held while the miss is upstream. Other lookups of the same key
/// wait for it (single-flight); dropping it without completing lets the next one try.
pub struct Fill<'a> {
    cache: &'a Cache,
    kind: Kind,
    guard: Option<Guard<'a>>,
    key: Option<CacheKey>,
    stamp: Stamp,
    table: Arc<TableGenerations>,
    stripe: Option<usize>,
}

impl Fill<'_> {
    /// Stores an upstream answer if no write began since the read started.
    /// Returns whether it was stored.
    pub fn complete(mut self, body: Bytes, item: Option<Range<usize>>, ttl: Duration) -> bool {
        let current = self
            .cache
            .current_stamp(self.kind, &self.table, self.stripe);
        if current != self.stamp || ttl.is_zero() {
            return false;
        }
        // An upstream body is usually a slice of the connection's read buffer: storing it as it
        // is would keep that whole buffer alive for the entry's lifetime, several times the
        // bytes the weighter counts. An entry owns exactly its bytes.
        let body = Bytes::copy_from_slice(&body);
        let entry = Arc::new(Entry {
            crc32: crate::protocol::crc32_header(&body),
            body,
            item,
            stamp: self.stamp,
            expires: Instant::now() + ttl,
        });
        match (self.guard.take(), self.key.take()) {
            (Some(guard), _) => guard.insert(entry).is_ok(),
            (None, Some(key)) => {
                self.cache.store(self.kind).entries.insert(key, entry);
                true
            }
            (None, None) => false,
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
    schemas: KeySchemas,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Cache {
        let items = Store::new(config.item.capacity, Kind::Item, &metrics);
        let queries = Store::new(config.query.capacity, Kind::Query, &metrics);
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
            schemas: KeySchemas::default(),
            metrics,
        }
    }

    /// The key schemas of the tables this cache has seen.
    pub(crate) fn schemas(&self) -> &KeySchemas {
        &self.schemas
    }

    fn store(&self, kind: Kind) -> &Store {
        match kind {
            Kind::Item => &self.items,
            Kind::Query => &self.queries,
        }
    }

    fn current_stamp(&self, kind: Kind, table: &TableGenerations, stripe: Option<usize>) -> Stamp {
        match (kind, stripe) {
            (Kind::Item, Some(s)) => self.generations.item_stamp(table, s),
            _ => self.generations.query_stamp(table),
        }
    }

    fn stripe_for(&self, kind: Kind, table: &str, key_part: &[u8]) -> Option<usize> {
        (kind == Kind::Item).then(|| self.generations.stripe(table, key_part))
    }

    fn is_current(&self, entry: &Entry, stamp: Stamp, now: Instant) -> bool {
        entry.stamp == stamp && entry.expires > now
    }

    /// Looks a read up. `key_part` is what identifies the item (its canonical primary key) for the
    /// item cache; ignored for the query cache. On a miss, the returned [`Fill`] holds the key:
    /// concurrent lookups of it wait for this one's answer instead of going upstream too.
    pub async fn lookup(
        &self,
        kind: Kind,
        table: &str,
        key_part: &[u8],
        key: CacheKey,
    ) -> Lookup<'_> {
        let store = self.store(kind);
        let state = self.generations.table(table);
        let stripe = self.stripe_for(kind, table, key_part);
        // Bounded: each turn either answers or removes a dead entry; a key rewritten faster than
        // it can be read falls through to an unguarded miss.
        for _ in 0..4 {
            let stamp = self.current_stamp(kind, &state, stripe);
            // The plain get answers hits without touching placeholders; only a miss reserves.
            let (found, coalesced) = match store.entries.get(&key) {
                Some(entry) => (entry, false),
                None => match store.entries.get_value_or_guard_async(&key).await {
                    // Another request's upstream call filled it while this one waited.
                    Ok(entry) => (entry, true),
                    Err(guard) => {
                        store.misses.inc();
                        return Lookup::Miss(Fill {
                            cache: self,
                            kind,
                            guard: Some(guard),
                            key: None,
                            stamp,
                            table: state,
                            stripe,
                        });
                    }
                },
            };
            if self.is_current(&found, stamp, Instant::now()) {
                self.count_hit(kind, &found, coalesced);
                return Lookup::Hit {
                    entry: found,
                    coalesced,
                };
            }
            // Filled under generations that are no longer current, or expired: drop it and look
            // again (a concurrent fill may be fresh).
            store.entries.remove_if(&key, |e| Arc::ptr_eq(e, &found));
        }
        store.misses.inc();
        let stamp = self.current_stamp(kind, &state, stripe);
        Lookup::Miss(Fill {
            cache: self,
            kind,
            guard: None,
            key: Some(key),
            stamp,
            table: state,
            stripe,
        })
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
    pub(crate) fn peek_item(&self, table: &str, key_part: &[u8], key: CacheKey) -> Lookup<'_> {
        let state = self.generations.table(table);
        let stripe = Some(self.generations.stripe(table, key_part));
        let stamp = self.current_stamp(Kind::Item, &state, stripe);
        if let Some(entry) = self.items.entries.get(&key) {
            if self.is_current(&entry, stamp, Instant::now()) {
                self.count_hit(Kind::Item, &entry, false);
                return Lookup::Hit {
                    entry,
                    coalesced: false,
                };
            }
            self.items
                .entries
                .remove_if(&key, |e| Arc::ptr_eq(e, &entry));
        }
        self.items.misses.inc();
        Lookup::Miss(Fill {
            cache: self,
            kind: Kind::Item,
            guard: None,
            key: Some(key),
            stamp,
            table: state,
            stripe,
        })
    }

    /// Ends every entry a write may have changed; called before the write is forwarded.
    pub fn write_started(&self, set: &WriteScope) {
        self.count_invalidation(InvalidationCause::Write);
        self.bump_for_write(set);
    }

    /// Ends them again once the upstream answered — or failed: a write that got no answer may
    /// still have happened. Reads that started while the write was in flight cannot fill.
    pub fn write_finished(&self, set: &WriteScope) {
        self.bump_for_write(set);
    }

    fn bump_for_write(&self, set: &WriteScope) {
        if set.everything {
            self.generations.bump_global();
            return;
        }
        for (table, key) in &set.items {
            let state = self.generations.table(table);
            self.generations
                .bump_item(&state, self.generations.stripe(table, key));
        }
        for table in &set.tables {
            self.generations.bump_table(&self.generations.table(table));
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
    pub fn invalidate_table(&self, table: &str, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations.bump_table(&self.generations.table(table));
        if cause == InvalidationCause::Control {
            self.schemas.forget(table);
        }
        // Entries are already dead; reclaim their memory too.
        for store in [&self.items, &self.queries] {
            store.entries.retain(|k, _| k.table() != table.as_bytes());
        }
        self.refresh_gauges();
    }

    /// Drops everything, key schemas included.
    pub(crate) fn flush(&self) {
        self.count_invalidation(InvalidationCause::Flush);
        self.generations.bump_global();
        self.schemas.forget_all();
        self.items.entries.clear();
        self.queries.entries.clear();
        self.refresh_gauges();
    }

    /// A write or control call that names no table ddbcache can find: end every entry.
    pub(crate) fn invalidate_everything(&self, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations.bump_global();
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
        let mut config = CacheConfig::default();
        config.item.capacity = capacity;
        config.query.capacity = capacity;
        Cache::new(&config, Arc::new(Metrics::new()))
    }

    const TTL: Duration = Duration::from_secs(60);

    async fn fill_item(cache: &Cache, table: &str, pk: &[u8], body: &'static [u8]) -> bool {
        match cache
            .lookup(Kind::Item, table, pk, CacheKey::item(table, pk, b""))
            .await
        {
            Lookup::Miss(fill) => fill.complete(Bytes::from_static(body), Some(0..2), TTL),
            Lookup::Hit { .. } => panic!("expected a miss"),
        }
    }

    async fn is_hit(cache: &Cache, table: &str, pk: &[u8]) -> bool {
        matches!(
            cache
                .lookup(Kind::Item, table, pk, CacheKey::item(table, pk, b""))
                .await,
            Lookup::Hit { .. }
        )
    }

    fn item_write(table: &str, pk: &[u8]) -> WriteScope {
        WriteScope {
            items: vec![(table.into(), pk.to_vec())],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_entry_does_not_keep_the_buffer_its_body_came_from() {
        let cache = cache_with(1 << 20);
        let read_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let Lookup::Miss(fill) = cache
            .lookup(Kind::Item, "t", b"k", CacheKey::item("t", b"k", b""))
            .await
        else {
            panic!("expected a miss");
        };
        assert!(fill.complete(read_buffer.slice(0..100), Some(0..2), TTL));
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
        cache.write_started(&item_write("t", b"k1"));
        assert!(!is_hit(&cache, "t", b"k1").await);
        assert!(is_hit(&cache, "t", b"k2").await, "other items stay");
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_write_does_not_fill() {
        let cache = cache_with(1 << 20);
        let key = CacheKey::item("t", b"k", b"");
        let Lookup::Miss(fill) = cache.lookup(Kind::Item, "t", b"k", key).await else {
            panic!("expected a miss");
        };
        // The write begins (and ends) while the read is upstream.
        cache.write_started(&item_write("t", b"k"));
        assert!(!fill.complete(Bytes::from_static(b"{}"), None, TTL));
        assert!(!is_hit(&cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn query_entries_die_with_any_write_to_their_table() {
        let cache = cache_with(1 << 20);
        let q = |t: &str| CacheKey::query(t, b"Q{}");
        for t in ["t", "u"] {
            let Lookup::Miss(fill) = cache.lookup(Kind::Query, t, b"", q(t)).await else {
                panic!()
            };
            assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL));
        }
        cache.write_started(&item_write("t", b"any"));
        assert!(matches!(
            cache.lookup(Kind::Query, "t", b"", q("t")).await,
            Lookup::Miss(_)
        ));
        assert!(matches!(
            cache.lookup(Kind::Query, "u", b"", q("u")).await,
            Lookup::Hit { .. }
        ));
    }

    #[tokio::test]
    async fn expired_entries_are_misses() {
        let cache = cache_with(1 << 20);
        let Lookup::Miss(fill) = cache
            .lookup(Kind::Item, "t", b"k", CacheKey::item("t", b"k", b""))
            .await
        else {
            panic!()
        };
        assert!(fill.complete(Bytes::from_static(b"{}"), None, Duration::from_nanos(1)));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!is_hit(&cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_fill() {
        let cache = Arc::new(cache_with(1 << 20));
        let key = || CacheKey::item("t", b"k", b"");
        let Lookup::Miss(fill) = cache.lookup(Kind::Item, "t", b"k", key()).await else {
            panic!()
        };
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                match cache.lookup(Kind::Item, "t", b"k", key()).await {
                    Lookup::Hit { coalesced, .. } => coalesced,
                    Lookup::Miss(_) => panic!("the waiter should get the filled entry"),
                }
            })
        };
        // On the current-thread test runtime, yielding runs the waiter until it parks on the
        // placeholder.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL));
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn flush_table_keeps_other_tables() {
        let cache = cache_with(1 << 20);
        fill_item(&cache, "a", b"k", b"{}").await;
        fill_item(&cache, "b", b"k", b"{}").await;
        cache.invalidate_table("a", InvalidationCause::Flush);
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
                .lookup(Kind::Item, "t", &pk, CacheKey::item("t", &pk, b""))
                .await
            {
                fill.complete(Bytes::from_static(&BODY), None, TTL);
            }
        }
        let stats = cache.stats(Kind::Item);
        assert!(stats.bytes <= capacity, "{stats:?}");
        assert!(stats.entries > 10, "{stats:?}");
        assert!(cache.metrics.eviction_counter("item").get() > 0);
    }
}
