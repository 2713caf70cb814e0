//! The item cache and the query cache, behind one handle with a few verbs.
//!
//! Reads: [`Cache::lookup`] (single-flight: concurrent misses of one key wait for the first) and
//! [`Cache::peek`] (BatchGetItem's many keys) answer a hit or hand out a [`Fill`], the right to
//! store the answer of the miss once the upstream gave it.
//!
//! Changes: the cache is told what kind of change happened and applies its own coherence rules —
//! which cells to bump, what to mark recently written or in doubt, which key schemas to forget.
//! A write this sidecar forwards is bracketed by [`Cache::write_started`] and
//! [`WriteInFlight::finished`]; a change learned from elsewhere (a peer sidecar, a stream record)
//! is [`Cache::learned`]; traffic that contradicts a key schema is [`Cache::contradicted`].
//!
//! Key schemas, which writes need to name the item they change, are kept here too ([`schemas`]),
//! behind [`Cache::key_schema`], [`Cache::need_schema`] and [`Cache::local_account`].
//!
//! No HTTP in here, and no clock of its own ([`clock`]): entries are response bytes and their
//! checksum. Whether a request may use the cache, and for how long, is the proxy's policy.
//! Coherence lives in [`generations`]: entries carry the stamp their read started under, and a
//! lookup only accepts an entry whose stamp is still current.

pub mod clock;
mod entries;
mod generations;
mod schemas;
mod segments;
pub mod tier;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use crate::config::{Compression, Config};
use crate::metrics::Metrics;
use crate::protocol::table::{KeySchema, TableId};
use crate::protocol::writes::WriteScope;
pub use clock::{Clock, ManualClock, MonotonicClock};
use entries::NewEntry;
pub use entries::{CacheKey, Entry};
pub use generations::Restrictions;
use generations::{Generations, Marks, Scope, Stamp, TableGenerations};
use schemas::KeySchemas;
pub(crate) use schemas::Need;
use segments::{Entries, Reservation};
pub use tier::{SharedEntry, Tier, TierAnswer, TierFill, TierFuture};

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

/// What kind of write this sidecar forwards, which decides what else goes with its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// An item write, a PartiQL write, an operation ddbcache does not know.
    Item,
    /// A control-plane call: the table may be recreated, restored or re-keyed, so its key schema
    /// goes too, before and after.
    Control,
}

/// How a forwarded write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The upstream answered.
    Answered,
    /// The upstream answered that the table's key is not what ddbcache thought, or the table is
    /// gone.
    ContradictedSchema,
    /// No answer, or a 5xx: the write may still land.
    Unknown,
}

/// A change learned from elsewhere than this sidecar's own forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A write another sidecar of the fleet forwarded.
    PeerWrite,
    /// A control-plane call another sidecar forwarded, or a message it could not be understood
    /// (published as everything): key schemas go too.
    PeerControl,
    /// A change read from a table's DynamoDB Stream.
    Stream,
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

/// Where an entry is kept: which cache, its table, what it depends on, and its key.
#[derive(Clone, Copy)]
pub struct Address<'a> {
    pub kind: Kind,
    pub table: &'a TableId,
    pub dependency: Dependency<'a>,
    pub key: &'a CacheKey,
}

/// The outcome of a lookup.
// A miss carries its key inline (no allocation on the hit path builds it); the value is matched
// at once by the caller, so its size costs a move, where boxing would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Lookup<'a> {
    /// A current entry. `coalesced`: it arrived by waiting on another request's fill.
    Hit {
        entry: Entry,
        coalesced: bool,
        source: Source,
    },
    /// Go upstream, then call [`Fill::complete`] (or drop the fill to give up).
    Miss(Fill<'a>),
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This process's own cache.
    Local,
    /// The shared tier: an entry kept for the whole fleet (now kept here too).
    Shared,
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
    /// The right to fill the shared tier's entry too, when there is one and it answered.
    shared: Option<Box<dyn TierFill>>,
    /// The entry this one replaces, expired but never invalidated: what may answer if the
    /// upstream fails (stale-if-error). Put back if the fill is given up.
    stale: Option<Entry>,
    /// A background refresh's fill: its key is in [`Cache::refreshing`] until it ends.
    refresh: bool,
    /// Stored (or refused for good): nothing to put back.
    done: bool,
}

impl Drop for Fill<'_> {
    fn drop(&mut self) {
        let cache = self.cache;
        if self.refresh {
            cache.refreshing.lock().remove(&self.key.hash());
        }
        // Given up (the upstream failed, or its answer was not to be kept): the expired entry
        // goes back, still never invalidated, for the next read that finds DynamoDB failing.
        if let (false, Some(stale)) = (self.done, self.stale.take()) {
            if cache
                .generations
                .stamp(stale.table(), stale.scope())
                .digest()
                == stale.generations()
            {
                cache
                    .store(self.kind)
                    .entries
                    .insert(&self.key, stale, self.reservation.take());
            }
        }
    }
}

impl Fill<'_> {
    /// The entry this read would have answered had it not expired, and how long ago it expired:
    /// one no write, stream record or control-plane call has ended since it was stored.
    pub fn stale(&self) -> Option<(&Entry, Duration)> {
        let stale = self.stale.as_ref()?;
        let past = self.cache.clock.now_ms().saturating_sub(stale.expires());
        Some((stale, Duration::from_millis(past)))
    }
    /// What the marks on this entry's scope allow, as they were when the read started (here,
    /// and in the shared tier): whether the miss must read consistently, or must not be stored.
    pub fn restrictions(&self) -> Restrictions {
        self.restrictions
    }

    fn restrict(&mut self, more: Restrictions) {
        self.restrictions.recently_written |= more.recently_written;
        self.restrictions.in_doubt |= more.in_doubt;
    }

    /// Stores an upstream answer if no write began since the read started and no write whose
    /// outcome is unknown may still land on it. The shared tier, when there is one, is offered
    /// the answer too, and decides for itself by its own versions and marks (which every
    /// sidecar's writes change): a sidecar that missed a peer's message still cannot fill it
    /// stale. Nothing waits for its answer.
    pub fn complete(
        mut self,
        body: Bytes,
        item: Option<Range<usize>>,
        ttl: Duration,
    ) -> Result<(), Refusal> {
        if ttl.is_zero() {
            return Err(Refusal::Raced);
        }
        let mut shared_stamp = 0;
        if let Some(shared) = self.shared.take() {
            shared_stamp = shared.stamp();
            let consistent = self.restrictions.recently_written;
            tokio::spawn(shared.store(body.clone(), item.clone(), ttl, consistent));
        }
        let cache = self.cache;
        let generations = &cache.generations;
        if generations.stamp(&self.table, self.scope) != self.stamp {
            return Err(Refusal::Raced);
        }
        if generations
            .restrictions(&self.table, self.scope, cache.clock.now_ms())
            .in_doubt
        {
            return Err(Refusal::InDoubt);
        }
        self.keep(&body, item, ttl, shared_stamp)
    }

    /// Keeps an answer in this process's cache, stamped as the read started. The entry is a
    /// copy: an upstream body is usually a slice of the connection's read buffer, which it
    /// would otherwise keep alive.
    fn keep(
        mut self,
        body: &[u8],
        item: Option<Range<usize>>,
        ttl: Duration,
        shared: u64,
    ) -> Result<(), Refusal> {
        let cache = self.cache;
        let entry = Entry::new(NewEntry {
            key: self.key.bytes(),
            body,
            item,
            table: self.table.clone(),
            stamp: self.stamp,
            expires: cache.clock.now_ms().saturating_add(ttl.as_millis() as u64),
            shared,
            compress: cache.compress,
        });
        self.done = true;
        if cache
            .store(self.kind)
            .entries
            .insert(&self.key, entry, self.reservation.take())
        {
            Ok(())
        } else {
            Err(Refusal::Raced)
        }
    }

    /// Keeps a shared entry in this process's cache too, and returns it as the hit to answer —
    /// whether or not it could be kept: it was current when the shared tier answered.
    fn keep_shared(mut self, found: SharedEntry) -> Entry {
        let cache = self.cache;
        let current = cache.generations.stamp(&self.table, self.scope) == self.stamp;
        let entry = Entry::new(NewEntry {
            key: self.key.bytes(),
            body: &found.body,
            item: found.item,
            table: self.table.clone(),
            stamp: self.stamp,
            expires: cache
                .clock
                .now_ms()
                .saturating_add(found.ttl.as_millis() as u64),
            shared: found.stamp,
            compress: cache.compress,
        });
        if current && !found.ttl.is_zero() {
            self.done = true;
            cache.store(self.kind).entries.insert(
                &self.key,
                entry.clone(),
                self.reservation.take(),
            );
        }
        entry
    }
}

/// Why no background refresh was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRefresh {
    /// The key is being refreshed already.
    Busy,
    /// This second's budget of refreshes is spent.
    Budget,
}

/// Why a fill did not store its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A write began (or the entry was filled otherwise) since the read started.
    Raced,
    /// A write whose outcome is unknown may still land on the entry.
    InDoubt,
}

/// A write between [`Cache::write_started`] and [`WriteInFlight::finished`]. Dropped unfinished
/// (its task failed), it finishes as a write whose outcome is unknown.
pub struct WriteInFlight<'a> {
    cache: &'a Cache,
    scope: WriteScope,
    kind: WriteKind,
    finished: bool,
}

impl WriteInFlight<'_> {
    /// Ends what the write touched again, now that the upstream answered — or failed: reads that
    /// started while it was in flight cannot fill; what it touched is recently written for the
    /// consistency window, and in doubt for the in-doubt window when the outcome is unknown.
    /// Returns the write's scope as it ended (`in_doubt` set), for peers to apply.
    pub fn finished(mut self, outcome: WriteOutcome) -> WriteScope {
        self.finish(outcome);
        std::mem::take(&mut self.scope)
    }

    fn finish(&mut self, outcome: WriteOutcome) {
        self.finished = true;
        let cache = self.cache;
        self.scope.in_doubt = outcome == WriteOutcome::Unknown;
        cache.apply(&self.scope, cache.marks_for(&self.scope));
        if self.kind == WriteKind::Control {
            cache.forget_schemas(&self.scope);
        }
        if outcome == WriteOutcome::ContradictedSchema {
            for table in self.scope.touched_tables() {
                cache.contradicted(table);
            }
        }
    }
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(WriteOutcome::Unknown);
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
    /// The clock of entries' expiry, of marks and of schema retries.
    clock: Arc<dyn Clock>,
    /// Store bodies LZ4-compressed (`cache.compression`).
    compress: bool,
    /// The shared second tier, when the fleet keeps one.
    tier: Option<Arc<dyn Tier>>,
    /// Some table's entries may answer past their TTL when DynamoDB fails: an expired entry is
    /// kept with the fill that replaces it, and put back if that fill is given up.
    keeps_stale: bool,
    /// Keys being refreshed in the background (by their hash): one refresh per key at a time.
    refreshing: parking_lot::Mutex<std::collections::HashSet<u64>>,
    /// Background refreshes allowed per second, and those started this second.
    refresh_budget: u32,
    refresh_window: parking_lot::Mutex<(u64, u32)>,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(config: &Config, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Cache {
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
            clock,
            compress: config.cache.compression == Compression::Lz4,
            tier: None,
            keeps_stale: !config.cache.stale_if_error.is_zero()
                || config
                    .tables
                    .values()
                    .any(|t| t.stale_if_error.is_some_and(|d| !d.is_zero())),
            refreshing: parking_lot::Mutex::new(std::collections::HashSet::new()),
            refresh_budget: config.cache.refresh_budget,
            refresh_window: parking_lot::Mutex::new((0, 0)),
            metrics,
        }
    }

    /// The cache with a shared second tier behind it.
    pub fn with_tier(mut self, tier: Arc<dyn Tier>) -> Cache {
        self.tier = Some(tier);
        self
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

    /// Whether an entry may answer: not expired, and none of the cells it depends on changed
    /// since its read started. The entry names its own cells, so a hit looks nothing else up.
    fn is_current(&self, entry: &Entry) -> bool {
        entry.expires() > self.clock.now_ms() && self.never_invalidated(entry)
    }

    fn never_invalidated(&self, entry: &Entry) -> bool {
        self.generations
            .stamp(entry.table(), entry.scope())
            .digest()
            == entry.generations()
    }

    /// An entry that is not current only because its TTL ended (stale-if-error may answer it),
    /// when some table keeps such entries.
    fn stale(&self, entry: &Entry) -> Option<Entry> {
        (self.keeps_stale
            && entry.expires() <= self.clock.now_ms()
            && self.never_invalidated(entry))
        .then(|| entry.clone())
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// A current entry for `at`, found without waiting for anything: what most hits are. `None`
    /// when there is none, or when a hit must first be confirmed with the shared tier (strict
    /// consistency); [`Cache::lookup`] then does all a lookup does.
    pub fn hit_now(&self, at: Address<'_>) -> Option<Entry> {
        if self.tier.as_ref().is_some_and(|t| t.strict()) {
            return None;
        }
        let found = self.store(at.kind).entries.get(at.key)?;
        if !self.is_current(&found) {
            return None;
        }
        self.count_hit(at.kind, &found, false);
        Some(found)
    }

    /// Looks a read up. On a miss, the returned [`Fill`] holds the key: concurrent lookups of it
    /// wait for this one's answer instead of going upstream too. With a shared tier, a miss here
    /// asks it before it is a miss (and may wait briefly for another sidecar's fill of the key).
    ///
    /// A hit is judged by the cells its entry names (the ones its read depended on, which every
    /// write that could change it bumps); the address's table and dependency are only needed for
    /// a miss.
    pub async fn lookup(&self, at: Address<'_>) -> Lookup<'_> {
        let store = self.store(at.kind);
        let mut stale = None;
        // The plain get answers hits under a shared lock, touching no reservation; only a miss
        // reserves.
        if let Some(found) = store.entries.get(at.key) {
            if self.is_current(&found) && self.confirmed(at, &found).await {
                self.count_hit(at.kind, &found, false);
                return Lookup::Hit {
                    entry: found,
                    coalesced: false,
                    source: Source::Local,
                };
            }
            stale = self.stale(&found);
            store.entries.remove_if_same(at.key, &found);
        }
        // A miss reserves its key or waits for another's fill, and may ask the shared tier: a
        // future many times a hit's, kept on the heap so that every caller's stays small (a
        // future is moved whole at each await that creates it).
        Box::pin(self.reserve(at, stale)).await
    }

    /// The rest of a [`Cache::lookup`] that found no current entry: reserve the key (or wait for
    /// the fill of the request that did), then the shared tier. `stale` is the expired entry the
    /// lookup found, if it may answer stale.
    async fn reserve(&self, at: Address<'_>, mut stale: Option<Entry>) -> Lookup<'_> {
        let store = self.store(at.kind);
        let state = self.generations.table(at.table);
        let scope = self.scope_of(at.table, at.dependency);
        // Bounded: each turn either answers or removes a dead entry; a key rewritten faster than
        // it can be read falls through to an unguarded miss.
        for _ in 0..4 {
            let (found, coalesced) = match store.entries.get_or_reserve(at.key).await {
                // Another request's upstream call filled it while this one waited, unless it was
                // there all along.
                Ok(entry) => (entry, true),
                Err(reservation) => {
                    let mut fill =
                        self.fill(at.kind, Some(reservation), at.key.clone(), state, scope);
                    fill.stale = stale;
                    return self.shared_lookup(at, fill).await;
                }
            };
            if self.is_current(&found) && self.confirmed(at, &found).await {
                self.count_hit(at.kind, &found, coalesced);
                return Lookup::Hit {
                    entry: found,
                    coalesced,
                    source: Source::Local,
                };
            }
            // Filled under generations that are no longer current, or expired: drop it and look
            // again (a concurrent fill may be fresh).
            stale = self.stale(&found).or(stale);
            store.entries.remove_if_same(at.key, &found);
        }
        let mut fill = self.fill(at.kind, None, at.key.clone(), state, scope);
        fill.stale = stale;
        self.shared_lookup(at, fill).await
    }

    /// A miss of this process's cache, asked of the shared tier (when there is one): its entry
    /// is kept here too and answered, or the fill also gets the right to fill the shared entry.
    /// When another sidecar holds the key's fill lease, the miss waits (within
    /// `fleet.shared.lease_wait`) for that fill rather than reading upstream too.
    async fn shared_lookup<'a>(&'a self, at: Address<'_>, fill: Fill<'a>) -> Lookup<'a> {
        let Some(tier) = &self.tier else {
            self.store(at.kind).misses.inc();
            return Lookup::Miss(fill);
        };
        let waits = &self.metrics.shared.lease_waits;
        let waiting_until = self.clock.now_ms() + tier.lease_wait().as_millis() as u64;
        let mut pause = Duration::from_millis(1);
        let mut waited = false;
        loop {
            let answer = tier.lookup(std::slice::from_ref(&at), true).await.pop();
            match &answer {
                Some(TierAnswer::Miss {
                    leased_elsewhere: true,
                    ..
                }) if self.clock.now_ms() < waiting_until => {
                    waited = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(8));
                    continue;
                }
                Some(TierAnswer::Hit(_)) if waited => {
                    waits.with_label_values(&["filled"]).inc();
                }
                Some(_) if waited => waits.with_label_values(&["gave_up"]).inc(),
                _ => {}
            }
            return self.shared_answer(at.kind, fill, answer);
        }
    }

    /// Whether a hit of this process's cache may answer: always, unless consistency is strict —
    /// then only once the shared tier confirmed the versions it was read under.
    async fn confirmed(&self, at: Address<'_>, entry: &Entry) -> bool {
        let Some(tier) = self.tier.as_ref().filter(|t| t.strict()) else {
            return true;
        };
        entry.shared() != 0 && tier.confirm(at, entry.shared()).await
    }

    /// Looks many item reads up at once (BatchGetItem's keys), without waiting for or
    /// reserving any: hits here, then the shared tier's for the rest in one round trip; each
    /// miss gets the [`Fill`] to complete once the upstream answered. With strict consistency,
    /// every key is asked of the shared tier.
    pub async fn lookup_many<'a>(&'a self, at: &[Address<'_>]) -> Vec<Lookup<'a>> {
        let strict = self.tier.as_ref().is_some_and(|t| t.strict());
        let peeked: Vec<Lookup<'a>> = at.iter().map(|a| self.peek(*a, strict)).collect();
        let asked: Vec<Address<'_>> = at
            .iter()
            .zip(&peeked)
            .filter(|(_, l)| matches!(l, Lookup::Miss(_)))
            .map(|(a, _)| *a)
            .collect();
        let answers = match &self.tier {
            Some(tier) if !asked.is_empty() => tier.lookup(&asked, false).await,
            _ => Vec::new(),
        };
        let mut answers = answers.into_iter();
        peeked
            .into_iter()
            .zip(at)
            .map(|(lookup, a)| match lookup {
                Lookup::Miss(fill) => self.shared_answer(a.kind, fill, answers.next()),
                hit => hit,
            })
            .collect()
    }

    /// What a miss of this process's cache becomes with the shared tier's answer for it.
    fn shared_answer<'a>(
        &self,
        kind: Kind,
        mut fill: Fill<'a>,
        answer: Option<TierAnswer>,
    ) -> Lookup<'a> {
        match answer {
            Some(TierAnswer::Hit(found)) => {
                self.count_shared_hit(kind);
                Lookup::Hit {
                    entry: fill.keep_shared(found),
                    coalesced: false,
                    source: Source::Shared,
                }
            }
            Some(TierAnswer::Miss {
                fill: shared,
                restrictions,
                ..
            }) => {
                fill.restrict(restrictions);
                fill.shared = Some(shared);
                self.store(kind).misses.inc();
                Lookup::Miss(fill)
            }
            Some(TierAnswer::Unavailable) | None => {
                self.store(kind).misses.inc();
                Lookup::Miss(fill)
            }
        }
    }

    /// One key of [`Cache::lookup_many`], in this process's cache only; `ask_shared`: treat a
    /// hit as a miss to be confirmed by the shared tier.
    fn peek<'a>(&'a self, at: Address<'_>, ask_shared: bool) -> Lookup<'a> {
        let store = self.store(at.kind);
        if let Some(entry) = store.entries.get(at.key) {
            if self.is_current(&entry) && !ask_shared {
                self.count_hit(at.kind, &entry, false);
                return Lookup::Hit {
                    entry,
                    coalesced: false,
                    source: Source::Local,
                };
            }
            let stale = self.stale(&entry);
            if !self.is_current(&entry) {
                store.entries.remove_if_same(at.key, &entry);
            }
            let state = self.generations.table(at.table);
            let scope = self.scope_of(at.table, at.dependency);
            let mut fill = self.fill(at.kind, None, at.key.clone(), state, scope);
            fill.stale = stale;
            return Lookup::Miss(fill);
        }
        let state = self.generations.table(at.table);
        let scope = self.scope_of(at.table, at.dependency);
        Lookup::Miss(self.fill(at.kind, None, at.key.clone(), state, scope))
    }

    /// The right to refresh a current entry in the background (refresh-ahead): a fill stamped
    /// now, which replaces the entry if nothing invalidates it meanwhile. `None` when the key is
    /// being refreshed already, or the second's budget (`cache.refresh_budget`) is spent.
    pub fn refresh<'a>(&'a self, at: Address<'_>) -> Result<Fill<'a>, NoRefresh> {
        if !self.refreshing.lock().insert(at.key.hash()) {
            return Err(NoRefresh::Busy);
        }
        let second = self.clock.now_ms() / 1000;
        {
            let mut window = self.refresh_window.lock();
            if window.0 != second {
                *window = (second, 0);
            }
            if window.1 >= self.refresh_budget {
                self.refreshing.lock().remove(&at.key.hash());
                return Err(NoRefresh::Budget);
            }
            window.1 += 1;
        }
        let state = self.generations.table(at.table);
        let scope = self.scope_of(at.table, at.dependency);
        let mut fill = self.fill(at.kind, None, at.key.clone(), state, scope);
        fill.refresh = true;
        Ok(fill)
    }

    /// How long an entry has left before its TTL ends.
    pub fn remaining(&self, entry: &Entry) -> Duration {
        Duration::from_millis(entry.expires().saturating_sub(self.clock.now_ms()))
    }

    /// The right to fill `key`, stamped with the generations as they are now: a write that starts
    /// after this ends the fill.
    fn fill<'a>(
        &'a self,
        kind: Kind,
        reservation: Option<Reservation<'a>>,
        key: CacheKey,
        table: Arc<TableGenerations>,
        scope: Scope,
    ) -> Fill<'a> {
        let stamp = self.generations.stamp(&table, scope);
        let restrictions = self
            .generations
            .restrictions(&table, scope, self.clock.now_ms());
        Fill {
            cache: self,
            kind,
            reservation,
            key,
            stamp,
            table,
            scope,
            restrictions,
            shared: None,
            stale: None,
            refresh: false,
            done: false,
        }
    }

    fn count_shared_hit(&self, kind: Kind) {
        self.metrics
            .shared
            .hits
            .with_label_values(&[kind.label()])
            .inc();
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

    // -----------------------------------------------------------------------------------------
    // Changes

    /// A write (or control-plane call) this sidecar is about to forward: every entry it may change
    /// ends now, and again when it [finishes](WriteInFlight::finished).
    pub fn write_started(&self, scope: WriteScope, kind: WriteKind) -> WriteInFlight<'_> {
        self.count_invalidation(match kind {
            WriteKind::Item => InvalidationCause::Write,
            WriteKind::Control => InvalidationCause::Control,
        });
        if kind == WriteKind::Control {
            self.forget_schemas(&scope);
        }
        self.apply(&scope, Marks::default());
        WriteInFlight {
            cache: self,
            scope,
            kind,
            finished: false,
        }
    }

    /// A change learned from elsewhere: the same invalidation and marks as the writer's own, so
    /// fills that started before it arrived are refused.
    pub fn learned(&self, scope: &WriteScope, from: Learned) {
        self.count_invalidation(match from {
            Learned::PeerWrite | Learned::PeerControl => InvalidationCause::Fleet,
            Learned::Stream => InvalidationCause::Stream,
        });
        self.apply(scope, self.marks_for(scope));
        if from == Learned::PeerControl {
            // The table may have been recreated with another key.
            self.forget_schemas(scope);
        }
    }

    /// Traffic contradicted what ddbcache knows of a table's key (a read's key has other
    /// attributes than the schema's, the upstream says the key does not match or the table does
    /// not exist): the schema is forgotten, and so is every entry of the table.
    pub fn contradicted(&self, table: &TableId) {
        self.schemas.forget(table);
        self.drop_table(table, InvalidationCause::Schema);
    }

    /// Drops the entries of every table named `name` (in every region, or in `region`): what
    /// `POST /cache/flush?table=NAME` does.
    pub fn flush_table(&self, name: &str, region: Option<&str>) -> usize {
        let ids: Vec<TableId> = self
            .generations
            .table_ids()
            .into_iter()
            .filter(|id| id.name() == name && region.is_none_or(|want| want == id.region()))
            .collect();
        for id in &ids {
            self.drop_table(id, InvalidationCause::Flush);
        }
        ids.len()
    }

    /// Drops everything, key schemas included, counted under `cause` (a flush, or a fleet link
    /// that came back: a table may have been recreated with another key while this cache was not
    /// told).
    pub fn flush(&self, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations.write_everything(Marks::default());
        self.schemas.forget_all();
        self.items.entries.clear();
        self.queries.entries.clear();
        self.refresh_gauges();
    }

    fn marks_for(&self, scope: &WriteScope) -> Marks {
        Generations::marks(
            self.clock.now_ms(),
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

    fn forget_schemas(&self, scope: &WriteScope) {
        if scope.everything {
            self.schemas.forget_all();
        }
        for table in &scope.tables {
            self.schemas.forget(table);
        }
    }

    /// Ends a table's entries and reclaims their memory.
    fn drop_table(&self, table: &TableId, cause: InvalidationCause) {
        self.count_invalidation(cause);
        self.generations
            .write_table(&self.generations.table(table), Marks::default());
        for store in [&self.items, &self.queries] {
            store.entries.remove_table(table);
        }
        self.refresh_gauges();
    }

    fn count_invalidation(&self, cause: InvalidationCause) {
        self.metrics
            .invalidations
            .with_label_values(&[cause.label()])
            .inc();
    }

    // -----------------------------------------------------------------------------------------
    // Key schemas

    /// The table's key schema, if known.
    pub fn key_schema(&self, table: &TableId) -> Option<Arc<KeySchema>> {
        self.schemas.get(table)
    }

    /// Whether `names` are the table's key attributes, if its schema is known; unlike
    /// [`Cache::key_schema`] it leaves the shared schema's reference count alone (a hit asks it).
    pub fn is_key<'n>(
        &self,
        table: &TableId,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Option<bool> {
        self.schemas.is_key(table, names)
    }

    /// The table's key schema, or what to do to have it (fetch it, or wait for the fetch under
    /// way): fetches are single-flight, and an answer only lands if nothing said the schema
    /// changed while it was on its way.
    pub(crate) fn need_schema(&self, table: &TableId) -> Need {
        self.schemas.need(table, self.clock.now_ms())
    }

    /// The account whose credentials reach this region's tables, from a known table's ARN.
    pub fn local_account(&self, region: &str) -> Option<String> {
        self.schemas.local_account(region)
    }

    // -----------------------------------------------------------------------------------------
    // Statistics

    /// Table identities this cache has looked up or invalidated.
    pub fn table_ids(&self) -> Vec<TableId> {
        self.generations.table_ids()
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
    pub fn refresh_gauges(&self) {
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
    use crate::protocol::writes::ItemWrite;

    fn id(name: &str) -> TableId {
        TableId::new("r", name)
    }

    const TTL: Duration = Duration::from_secs(60);

    struct Fixture {
        cache: Arc<Cache>,
        clock: Arc<ManualClock>,
    }

    fn cache_with(capacity: u64) -> Fixture {
        let mut config = Config::default();
        config.cache.item.capacity = capacity;
        config.cache.query.capacity = capacity;
        let clock = ManualClock::new();
        let cache = Arc::new(Cache::new(&config, Arc::new(Metrics::new()), clock.clone()));
        Fixture { cache, clock }
    }

    fn item_key(table: &str, pk: &[u8]) -> (TableId, CacheKey) {
        let t = id(table);
        let key = CacheKey::item(&t, pk, b"");
        (t, key)
    }

    async fn lookup_item<'c>(cache: &'c Cache, table: &str, pk: &[u8]) -> Lookup<'c> {
        let (t, key) = item_key(table, pk);
        cache
            .lookup(Address {
                kind: Kind::Item,
                table: &t,
                dependency: Dependency::Item(pk),
                key: &key,
            })
            .await
    }

    async fn fill_item(cache: &Cache, table: &str, pk: &[u8], body: &'static [u8]) -> bool {
        match lookup_item(cache, table, pk).await {
            Lookup::Miss(fill) => fill
                .complete(Bytes::from_static(body), Some(0..2), TTL)
                .is_ok(),
            Lookup::Hit { .. } => panic!("expected a miss"),
        }
    }

    async fn is_hit(cache: &Cache, table: &str, pk: &[u8]) -> bool {
        matches!(lookup_item(cache, table, pk).await, Lookup::Hit { .. })
    }

    async fn miss<'c>(cache: &'c Cache, table: &str, pk: &[u8]) -> Fill<'c> {
        match lookup_item(cache, table, pk).await {
            Lookup::Miss(fill) => fill,
            Lookup::Hit { .. } => panic!("expected a miss"),
        }
    }

    fn item_write(table: &str, pk: &[u8]) -> WriteScope {
        WriteScope {
            items: vec![ItemWrite {
                table: id(table),
                key: pk.to_vec(),
                partition: Some(pk.to_vec()),
            }],
            ..Default::default()
        }
    }

    fn table_write(table: &str) -> WriteScope {
        WriteScope {
            tables: vec![id(table)],
            ..Default::default()
        }
    }

    fn schema(hash: &str) -> KeySchema {
        KeySchema {
            table_arn: None,
            hash: hash.into(),
            range: None,
            local_indexes: vec![],
            global_indexes: vec![],
        }
    }

    /// Makes the schema of `table` known, as a DescribeTable would.
    fn learn_schema(cache: &Cache, table: &str) {
        let Need::Fetch(ticket) = cache.need_schema(&id(table)) else {
            panic!("the schema should be unknown");
        };
        ticket.finish(Some(schema("pk")));
        assert!(cache.key_schema(&id(table)).is_some());
    }

    #[tokio::test]
    async fn an_entry_does_not_keep_the_buffer_its_body_came_from() {
        let f = cache_with(1 << 20);
        let read_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let fill = miss(&f.cache, "t", b"k").await;
        assert!(fill
            .complete(read_buffer.slice(0..100), Some(0..2), TTL)
            .is_ok());
        assert!(is_hit(&f.cache, "t", b"k").await);
        assert!(
            read_buffer.is_unique(),
            "the cached entry must not hold a reference to the 64 KiB buffer"
        );
    }

    #[tokio::test]
    async fn fill_then_hit_then_write_invalidates() {
        let f = cache_with(1 << 20);
        assert!(fill_item(&f.cache, "t", b"k1", b"{}").await);
        assert!(fill_item(&f.cache, "t", b"k2", b"{}").await);
        assert!(is_hit(&f.cache, "t", b"k1").await);
        let write = f
            .cache
            .write_started(item_write("t", b"k1"), WriteKind::Item);
        assert!(!is_hit(&f.cache, "t", b"k1").await);
        assert!(is_hit(&f.cache, "t", b"k2").await, "other items stay");
        write.finished(WriteOutcome::Answered);
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_write_does_not_fill() {
        let f = cache_with(1 << 20);
        let fill = miss(&f.cache, "t", b"k").await;
        // The write begins (and ends) while the read is upstream.
        f.cache
            .write_started(item_write("t", b"k"), WriteKind::Item)
            .finished(WriteOutcome::Answered);
        assert_eq!(
            fill.complete(Bytes::from_static(b"{}"), None, TTL),
            Err(Refusal::Raced)
        );
        assert!(!is_hit(&f.cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn a_read_that_started_while_a_write_was_in_flight_does_not_fill() {
        let f = cache_with(1 << 20);
        let write = f
            .cache
            .write_started(item_write("t", b"k"), WriteKind::Item);
        let fill = miss(&f.cache, "t", b"k").await;
        write.finished(WriteOutcome::Answered);
        assert_eq!(
            fill.complete(Bytes::from_static(b"{}"), None, TTL),
            Err(Refusal::Raced)
        );
    }

    async fn fill_query(cache: &Cache, table: &str, dependency: Dependency<'_>, name: &[u8]) {
        let t = id(table);
        let key = CacheKey::query(&t, name);
        let Lookup::Miss(fill) = cache
            .lookup(Address {
                kind: Kind::Query,
                table: &t,
                dependency,
                key: &key,
            })
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
        let t = id(table);
        let key = CacheKey::query(&t, name);
        matches!(
            cache
                .lookup(Address {
                    kind: Kind::Query,
                    table: &t,
                    dependency,
                    key: &key,
                })
                .await,
            Lookup::Hit { .. }
        )
    }

    #[tokio::test]
    async fn a_write_ends_queries_on_its_partition_and_table_wide_ones_not_other_partitions() {
        let f = cache_with(1 << 20);
        let cache = &f.cache;
        fill_query(cache, "t", Dependency::Partition(b"p"), b"Q p").await;
        fill_query(cache, "t", Dependency::Partition(b"q"), b"Q q").await;
        fill_query(cache, "t", Dependency::Table, b"S").await;
        fill_query(cache, "u", Dependency::Table, b"S").await;
        let _write = cache.write_started(item_write("t", b"p"), WriteKind::Item);
        assert!(!is_query_hit(cache, "t", Dependency::Partition(b"p"), b"Q p").await);
        assert!(!is_query_hit(cache, "t", Dependency::Table, b"S").await);
        assert!(is_query_hit(cache, "t", Dependency::Partition(b"q"), b"Q q").await);
        assert!(is_query_hit(cache, "u", Dependency::Table, b"S").await);
    }

    #[tokio::test]
    async fn a_write_in_doubt_blocks_fills_of_what_it_touched_until_its_window_ends() {
        let f = cache_with(1 << 20);
        let doubt = Config::default().in_doubt_window();
        let scope = f
            .cache
            .write_started(item_write("t", b"k"), WriteKind::Item)
            .finished(WriteOutcome::Unknown);
        assert!(scope.in_doubt, "the scope to publish says so");
        let fill = miss(&f.cache, "t", b"k").await;
        assert!(fill.restrictions().in_doubt);
        assert!(fill.restrictions().recently_written);
        assert_eq!(
            fill.complete(Bytes::from_static(b"{}"), None, TTL),
            Err(Refusal::InDoubt)
        );
        // Once the window is over, the key may be stored again.
        f.clock.advance(doubt + Duration::from_millis(1));
        let fill = miss(&f.cache, "t", b"k").await;
        assert_eq!(fill.restrictions(), Restrictions::default());
        assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL).is_ok());
        // An answered write leaves only the recent mark.
        f.cache
            .write_started(item_write("t", b"other"), WriteKind::Item)
            .finished(WriteOutcome::Answered);
        let fill = miss(&f.cache, "t", b"other").await;
        assert!(fill.restrictions().recently_written);
        assert!(!fill.restrictions().in_doubt);
    }

    #[tokio::test]
    async fn a_write_whose_task_ended_without_an_answer_is_in_doubt() {
        let f = cache_with(1 << 20);
        drop(
            f.cache
                .write_started(item_write("t", b"k"), WriteKind::Item),
        );
        let fill = miss(&f.cache, "t", b"k").await;
        assert!(fill.restrictions().in_doubt);
    }

    #[tokio::test]
    async fn expired_entries_are_misses() {
        let f = cache_with(1 << 20);
        let fill = miss(&f.cache, "t", b"k").await;
        assert!(fill
            .complete(Bytes::from_static(b"{}"), None, Duration::from_millis(5))
            .is_ok());
        f.clock.advance(Duration::from_millis(4));
        assert!(is_hit(&f.cache, "t", b"k").await);
        f.clock.advance(Duration::from_millis(1));
        assert!(!is_hit(&f.cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_fill() {
        let f = cache_with(1 << 20);
        let fill = miss(&f.cache, "t", b"k").await;
        let waiter = {
            let cache = f.cache.clone();
            tokio::spawn(async move {
                match lookup_item(&cache, "t", b"k").await {
                    Lookup::Hit { coalesced, .. } => coalesced,
                    Lookup::Miss(_) => panic!("the waiter should get the filled entry"),
                }
            })
        };
        // On the current-thread test runtime, yielding runs the waiter until it waits for the
        // reservation.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(fill.complete(Bytes::from_static(b"{}"), None, TTL).is_ok());
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn flush_table_keeps_other_tables() {
        let f = cache_with(1 << 20);
        fill_item(&f.cache, "a", b"k", b"{}").await;
        fill_item(&f.cache, "b", b"k", b"{}").await;
        assert_eq!(f.cache.flush_table("a", None), 1);
        assert!(!is_hit(&f.cache, "a", b"k").await);
        assert!(is_hit(&f.cache, "b", b"k").await);
        f.cache.flush(InvalidationCause::Flush);
        assert!(!is_hit(&f.cache, "b", b"k").await);
    }

    #[tokio::test]
    async fn a_control_call_forgets_its_tables_schema_and_an_item_write_does_not() {
        let f = cache_with(1 << 20);
        learn_schema(&f.cache, "t");
        f.cache
            .write_started(item_write("t", b"k"), WriteKind::Item)
            .finished(WriteOutcome::Answered);
        assert!(f.cache.key_schema(&id("t")).is_some());
        let control = f.cache.write_started(table_write("t"), WriteKind::Control);
        assert!(f.cache.key_schema(&id("t")).is_none(), "forgotten before");
        // A DescribeTable answered while the call is in flight may show the old table.
        learn_schema(&f.cache, "t");
        control.finished(WriteOutcome::Answered);
        assert!(f.cache.key_schema(&id("t")).is_none(), "and after");
    }

    #[tokio::test]
    async fn a_peers_control_call_forgets_schemas_and_a_peers_write_does_not() {
        let f = cache_with(1 << 20);
        learn_schema(&f.cache, "t");
        f.cache.learned(&table_write("t"), Learned::PeerWrite);
        assert!(f.cache.key_schema(&id("t")).is_some());
        f.cache.learned(&table_write("t"), Learned::PeerControl);
        assert!(f.cache.key_schema(&id("t")).is_none());
        learn_schema(&f.cache, "t");
        f.cache
            .learned(&WriteScope::everything(), Learned::PeerControl);
        assert!(f.cache.key_schema(&id("t")).is_none());
    }

    #[tokio::test]
    async fn a_contradicted_schema_goes_with_its_tables_entries() {
        let f = cache_with(1 << 20);
        learn_schema(&f.cache, "t");
        fill_item(&f.cache, "t", b"k", b"{}").await;
        f.cache
            .write_started(item_write("t", b"other"), WriteKind::Item)
            .finished(WriteOutcome::ContradictedSchema);
        assert!(f.cache.key_schema(&id("t")).is_none());
        assert!(!is_hit(&f.cache, "t", b"k").await);
    }

    #[tokio::test]
    async fn a_failed_schema_fetch_is_asked_again_a_second_later() {
        let f = cache_with(1 << 20);
        let Need::Fetch(ticket) = f.cache.need_schema(&id("t")) else {
            panic!("unknown at first");
        };
        ticket.finish(None);
        assert!(matches!(f.cache.need_schema(&id("t")), Need::Unavailable));
        f.clock.advance(Duration::from_secs(1));
        assert!(matches!(f.cache.need_schema(&id("t")), Need::Fetch(_)));
    }

    #[tokio::test]
    async fn bytes_stay_under_capacity() {
        let capacity = 64 * 1024;
        let f = cache_with(capacity);
        static BODY: [u8; 1000] = [b' '; 1000];
        for i in 0..1000u32 {
            let pk = i.to_le_bytes();
            if let Lookup::Miss(fill) = lookup_item(&f.cache, "t", &pk).await {
                let _ = fill.complete(Bytes::from_static(&BODY), None, TTL);
            }
        }
        let stats = f.cache.stats(Kind::Item);
        assert!(stats.bytes <= capacity, "{stats:?}");
        assert!(stats.entries > 10, "{stats:?}");
        assert!(f.cache.metrics.eviction_counter("item").get() > 0);
    }
}
