//! Where entries live: records appended to segments, found through a table of 8-byte slots,
//! evicted a segment at a time: memcached's and Segcache's layout, sized for a million entries
//! that cost little more than their bytes.
//!
//! Entries are split into shards by their key's hash, each behind its own lock. A shard appends
//! each record ([`super::entries`]) to its newest segment; a full segment stays as it is, and a
//! hit holds its record's slice of it ([`Entry`]), so the segment's memory lives on while a hit
//! still answers from it. The index is a hash table of slots: the record's segment (a sequence
//! number) and its offset there, 8 bytes with a bit for "read since it was stored". Keys are not
//! in the index: a probe compares the key's bytes in the record it is about to answer from.
//!
//! When a shard holds more than its share of the capacity, its oldest segment goes. A record in it
//! that was read since it was stored is copied to the newest segment (a second chance, up to half
//! the segment's bytes, so that eviction always frees memory); the others are gone, and counted.
//! A record replaced or removed stays in its segment, unreachable, until that segment goes.
//!
//! A miss may reserve its key: lookups of the same key then wait for the reserving fill
//! (single-flight), and try again when it is stored or given up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use append_only_bytes::AppendOnlyBytes;
use hashbrown::HashTable;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::Notify;

use super::entries::{copy_record, hash_key, record_key, record_len, table_of, CacheKey, Entry};
use super::generations::TableGenerations;
use crate::protocol::table::TableId;

/// Where a record is: its segment's sequence number (31 bits) and its offset there (32 bits),
/// and whether a hit read it since it was stored there (the top bit).
#[derive(Clone, Copy)]
struct Slot(u64);

const READ: u64 = 1 << 63;
const SEQUENCE: u32 = (1 << 31) - 1;

impl Slot {
    fn new(sequence: u32, offset: usize) -> Slot {
        Slot(u64::from(sequence & SEQUENCE) << 32 | offset as u32 as u64)
    }

    fn sequence(self) -> u32 {
        (self.0 >> 32) as u32 & SEQUENCE
    }

    fn offset(self) -> usize {
        self.0 as u32 as usize
    }

    fn read(self) -> bool {
        self.0 & READ != 0
    }

    /// The place alone, without the read bit.
    fn place(self) -> u64 {
        self.0 & !READ
    }
}

/// Records, back to back, and the tables they belong to (a record names its table by its place in
/// `tables`: a byte, instead of a pointer per record).
struct Segment {
    bytes: AppendOnlyBytes,
    tables: Vec<Arc<TableGenerations>>,
}

/// The most tables one segment's records may name.
const TABLES_PER_SEGMENT: usize = 256;

impl Segment {
    fn new(size: usize) -> Segment {
        Segment {
            bytes: AppendOnlyBytes::with_capacity(size),
            tables: Vec::new(),
        }
    }

    fn fits(&self, len: usize, table: &Arc<TableGenerations>) -> bool {
        self.bytes.capacity() - self.bytes.len() >= len
            && (self.tables.len() < TABLES_PER_SEGMENT
                || self.tables.iter().any(|t| Arc::ptr_eq(t, table)))
    }

    /// Appends a record (as [`copy_record`] writes it) of `table`; returns its offset.
    fn append(&mut self, record: &[u8], table: &Arc<TableGenerations>) -> usize {
        let place = match self.tables.iter().position(|t| Arc::ptr_eq(t, table)) {
            Some(place) => place,
            None => {
                self.tables.push(table.clone());
                self.tables.len() - 1
            }
        };
        let offset = self.bytes.len();
        copy_record(record, &mut self.bytes, place as u8);
        offset
    }
}

/// A fill other lookups of its key wait for.
struct Pending {
    hash: u64,
    key: Box<[u8]>,
    id: u64,
    done: Arc<Notify>,
}

/// How a shard is sized.
struct Shape {
    /// Bytes a shard may hold: its segments and its index.
    budget: u64,
    /// Bytes of a segment; a record of more than a quarter of that gets a segment of its own size.
    segment: usize,
}

struct Shard {
    index: HashTable<Slot>,
    segments: VecDeque<Segment>,
    /// The sequence number of `segments[0]`.
    first: u32,
    /// Bytes of the segments, as allocated.
    segment_bytes: u64,
    pending: Vec<Pending>,
}

/// The record a slot names (its bytes from its start to its segment's end), and its segment.
fn at(segments: &VecDeque<Segment>, first: u32, slot: Slot) -> (&Segment, &[u8]) {
    let segment = &segments[(slot.sequence().wrapping_sub(first) & SEQUENCE) as usize];
    (segment, &segment.bytes[slot.offset()..])
}

impl Shard {
    fn new() -> Shard {
        Shard {
            index: HashTable::new(),
            segments: VecDeque::new(),
            first: 0,
            segment_bytes: 0,
            pending: Vec::new(),
        }
    }

    /// The segments' bytes (the newest one's only as far as it is written: the rest of it is
    /// not yet memory a page of which was touched) and the index's.
    fn weight(&self) -> u64 {
        let unwritten = self
            .segments
            .back()
            .map_or(0, |s| s.bytes.capacity() - s.bytes.len());
        self.segment_bytes - unwritten as u64 + self.index.allocation_size() as u64
    }

    fn get(&mut self, key: &CacheKey) -> Option<Entry> {
        let Shard {
            index,
            segments,
            first,
            ..
        } = self;
        // The segment the probe found the key in: found once, read twice.
        let mut found = None;
        let slot = index.find_mut(key.hash(), |s| {
            let (segment, record) = at(segments, *first, *s);
            let same = record_key(record) == key.bytes();
            if same {
                found = Some(segment);
            }
            same
        })?;
        slot.0 |= READ;
        let segment = found?;
        Some(Entry::in_segment(
            &segment.bytes,
            slot.offset(),
            &segment.tables,
        ))
    }

    /// Forgets what is stored under `key` if `only` says so (given the record's first byte).
    fn remove(&mut self, hash: u64, key: &[u8], only: impl FnOnce(*const u8) -> bool) {
        let Shard {
            index,
            segments,
            first,
            ..
        } = self;
        if let Ok(found) = index.find_entry(hash, |s| record_key(at(segments, *first, *s).1) == key)
        {
            if only(at(segments, *first, *found.get()).1.as_ptr()) {
                found.remove();
            }
        }
    }

    /// Stores `entry` under its key (`hash` is the key's), in place of what was there; then
    /// evicts while the shard holds more than its share.
    fn store(&mut self, entry: &Entry, hash: u64, shape: &Shape, evicted: &IntCounter) {
        self.remove(hash, entry.key(), |_| true);
        let record = entry.record();
        if record.len() as u64 > shape.budget {
            return;
        }
        if !self
            .segments
            .back()
            .is_some_and(|s| s.fits(record.len(), entry.table()))
        {
            let size = if record.len() > shape.segment / 4 {
                record.len()
            } else {
                shape.segment
            };
            self.segments.push_back(Segment::new(size));
            self.segment_bytes += size as u64;
        }
        let sequence = self.newest();
        let Shard {
            index,
            segments,
            first,
            ..
        } = self;
        let offset = segments
            .back_mut()
            .expect("a segment was just made if none had room")
            .append(record, entry.table());
        index.insert_unique(hash, Slot::new(sequence, offset), |s| {
            hash_key(record_key(at(segments, *first, *s).1))
        });
        while self.weight() > shape.budget && self.segments.len() > 1 {
            self.evict_oldest(evicted);
        }
    }

    fn newest(&self) -> u32 {
        self.first.wrapping_add(self.segments.len() as u32 - 1) & SEQUENCE
    }

    /// Drops the oldest segment. Its records read since they were stored are copied to the newest
    /// segment while it has room, up to half the dropped segment's bytes; the rest are evicted.
    fn evict_oldest(&mut self, evicted: &IntCounter) {
        let Some(oldest) = self.segments.pop_front() else {
            return;
        };
        let sequence = self.first;
        self.first = self.first.wrapping_add(1) & SEQUENCE;
        self.segment_bytes -= oldest.bytes.capacity() as u64;
        let newest = self.newest();
        let mut second_chances = oldest.bytes.capacity() / 2;
        let Shard {
            index, segments, ..
        } = self;
        let bytes = oldest.bytes.as_bytes();
        let mut offset = 0;
        while offset < bytes.len() {
            let record = &bytes[offset..];
            let len = record_len(record);
            let place = Slot::new(sequence, offset).place();
            // Replaced and removed records are still here, but no slot names them.
            if let Ok(mut found) =
                index.find_entry(hash_key(record_key(record)), |s| s.place() == place)
            {
                let table = table_of(record, &oldest.tables);
                match segments.back_mut() {
                    Some(back)
                        if found.get().read() && len <= second_chances && back.fits(len, table) =>
                    {
                        second_chances -= len;
                        let moved = back.append(&record[..len], table);
                        *found.get_mut() = Slot::new(newest, moved);
                    }
                    _ => {
                        found.remove();
                        evicted.inc();
                    }
                }
            }
            offset += len;
        }
    }

    /// Forgets every entry and fill whose key `matches`; the fills' waiters look again.
    fn forget(&mut self, matches: impl Fn(&[u8]) -> bool) {
        let Shard {
            index,
            segments,
            first,
            pending,
            ..
        } = self;
        index.retain(|s| !matches(record_key(at(segments, *first, *s).1)));
        pending.retain(|p| {
            let forgotten = matches(&p.key);
            if forgotten {
                p.done.notify_waiters();
            }
            !forgotten
        });
    }
}

/// The right to fill a key other lookups wait for (single-flight). Dropped unused, it lets them
/// look again.
pub(crate) struct Reservation<'a> {
    entries: &'a Entries,
    hash: u64,
    id: u64,
    done: Arc<Notify>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.entries
            .shard(self.hash)
            .lock()
            .pending
            .retain(|p| p.id != self.id);
        self.done.notify_waiters();
    }
}

/// A bounded set of entries, weighed in bytes.
pub(crate) struct Entries {
    shards: Box<[Mutex<Shard>]>,
    shape: Shape,
    evictions: IntCounter,
    fills: AtomicU64,
}

/// A shard is given at least this much of the capacity: a small cache is one shard, so that its
/// segments are not too small for its entries.
const SMALLEST_SHARD: u64 = 256 << 10;
const SMALLEST_SEGMENT: u64 = 4 << 10;
const LARGEST_SEGMENT: u64 = 256 << 10;

impl Entries {
    pub(crate) fn new(capacity: u64, evictions: IntCounter) -> Entries {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let most = (capacity / SMALLEST_SHARD).max(1);
        let shards = ((threads * 4).next_power_of_two() as u64).min(1 << most.ilog2());
        let budget = capacity / shards;
        Entries {
            shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
            shape: Shape {
                budget,
                segment: (budget / 8).clamp(SMALLEST_SEGMENT, LARGEST_SEGMENT) as usize,
            },
            evictions,
            fills: AtomicU64::new(0),
        }
    }

    /// Bits of the hash the index does not use (its buckets take the low bits, its tags the top
    /// seven) choose the shard.
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)]
    }

    /// A hit, without reserving anything.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Entry> {
        self.shard(key.hash()).lock().get(key)
    }

    /// The entry, or (on a miss) the right to fill it: concurrent callers wait for that fill,
    /// then look again.
    pub(crate) async fn get_or_reserve(&self, key: &CacheKey) -> Result<Entry, Reservation<'_>> {
        loop {
            let filled = {
                let mut shard = self.shard(key.hash()).lock();
                if let Some(entry) = shard.get(key) {
                    return Ok(entry);
                }
                let waiting = shard
                    .pending
                    .iter()
                    .find(|p| p.hash == key.hash() && *p.key == *key.bytes());
                match waiting {
                    // Made under the lock: the fill's end cannot slip in before it listens.
                    Some(p) => p.done.clone().notified_owned(),
                    None => {
                        let id = self.fills.fetch_add(1, Ordering::Relaxed);
                        let done = Arc::new(Notify::new());
                        shard.pending.push(Pending {
                            hash: key.hash(),
                            key: key.bytes().into(),
                            id,
                            done: done.clone(),
                        });
                        return Err(Reservation {
                            entries: self,
                            hash: key.hash(),
                            id,
                            done,
                        });
                    }
                }
            };
            filled.await;
        }
    }

    /// Stores an entry under its own key, through a reservation or not. `false`: the
    /// reservation was cancelled (its table dropped, or the cache cleared) and nothing is stored.
    pub(crate) fn insert(&self, entry: Entry, reservation: Option<Reservation<'_>>) -> bool {
        let hash = hash_key(entry.key());
        let mut shard = self.shard(hash).lock();
        if let Some(r) = &reservation {
            let Some(at) = shard.pending.iter().position(|p| p.id == r.id) else {
                return false;
            };
            shard.pending.swap_remove(at);
        }
        shard.store(&entry, hash, &self.shape, &self.evictions);
        true
    }

    /// Removes `entry` if it is still the one stored under `key`.
    pub(crate) fn remove_if_same(&self, key: &CacheKey, entry: &Entry) {
        let record = entry.record().as_ptr();
        self.shard(key.hash())
            .lock()
            .remove(key.hash(), key.bytes(), |stored| stored == record);
    }

    /// Drops every entry of a table.
    pub(crate) fn remove_table(&self, table: &TableId) {
        let table = table.as_str().as_bytes();
        for shard in &self.shards {
            shard.lock().forget(|key| {
                key.len() > table.len() && key[table.len()] == 0 && key.starts_with(table)
            });
        }
    }

    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.forget(|_| true);
            *shard = Shard {
                pending: std::mem::take(&mut shard.pending),
                ..Shard::new()
            };
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().index.len()).sum()
    }

    /// Bytes held: the segments (the newest as far as it is written) and the index.
    pub(crate) fn weight(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().weight()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entries::tests::entry;

    fn entries(capacity: u64) -> (Entries, IntCounter) {
        let evictions = IntCounter::new("e", "e").unwrap();
        (Entries::new(capacity, evictions.clone()), evictions)
    }

    fn key(table: &str, request: &[u8]) -> CacheKey {
        CacheKey::query(&TableId::new("r", table), request)
    }

    /// Polls a lookup once: whether it waits.
    async fn still_waiting<F: std::future::Future>(mut f: std::pin::Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }

    fn stored(key: &CacheKey, body: &[u8]) -> Entry {
        entry(key.bytes(), body, None)
    }

    #[test]
    fn keys_with_the_same_hash_but_other_bytes_are_different_entries() {
        let (entries, _) = entries(1 << 20);
        let a = key("t", b"a");
        assert!(entries.insert(stored(&a, b"{\"A\":1}"), None));
        // Forge a key that collides with `a` on the hash but differs in its bytes.
        let forged = key("t", b"b").with_hash(a.hash());
        assert!(entries.get(&forged).is_none(), "a collision is a miss");
        assert_eq!(
            entries.get(&a).map(|e| e.body().to_vec()),
            Some(b"{\"A\":1}".to_vec())
        );
    }

    #[test]
    fn an_entry_replaces_its_keys_last_and_is_removed_only_if_still_the_same() {
        let (entries, _) = entries(1 << 20);
        let k = key("t", b"q");
        let old = stored(&k, b"{\"v\":1}");
        entries.insert(old, None);
        let found_old = entries.get(&k).unwrap();
        entries.insert(stored(&k, b"{\"v\":2}"), None);
        assert_eq!(entries.len(), 1);
        entries.remove_if_same(&k, &found_old);
        let found_new = entries
            .get(&k)
            .expect("a newer entry is not removed as the old one");
        assert_eq!(&found_new.body()[..], b"{\"v\":2}");
        // The old hit still answers from its segment.
        assert_eq!(&found_old.body()[..], b"{\"v\":1}");
        entries.remove_if_same(&k, &found_new);
        assert!(entries.get(&k).is_none());
    }

    #[test]
    fn the_weight_is_the_segments_and_the_index_and_stays_within_the_capacity() {
        let capacity = 64 << 10;
        let (entries, evictions) = entries(capacity);
        for i in 0..1000u32 {
            let k = key("t", &i.to_le_bytes());
            entries.insert(stored(&k, &[b' '; 200]), None);
            assert!(entries.weight() <= capacity, "{}", entries.weight());
        }
        assert!(evictions.get() > 0);
        let (len, evicted) = (entries.len() as u64, evictions.get());
        assert_eq!(len + evicted, 1000, "every entry is kept or counted");
        // Most of the capacity holds entries: records are about 260 bytes.
        assert!(len * 260 > capacity / 2, "{len}");
    }

    #[test]
    fn an_entry_read_since_it_was_stored_outlives_its_segment() {
        let capacity = 64 << 10;
        let (entries, _) = entries(capacity);
        let hot = key("t", b"hot");
        entries.insert(stored(&hot, &[b' '; 200]), None);
        for i in 0..2000u32 {
            assert!(entries.get(&hot).is_some(), "evicted after {i} fills");
            let k = key("t", &i.to_le_bytes());
            entries.insert(stored(&k, &[b' '; 200]), None);
        }
        // Not read, the first cold entry is long gone.
        assert!(entries.get(&key("t", &0u32.to_le_bytes())).is_none());
    }

    #[test]
    fn segment_numbers_wrap_around() {
        let (entries, _) = entries(64 << 10);
        for shard in entries.shards.iter() {
            shard.lock().first = SEQUENCE - 2;
        }
        let hot = key("t", b"hot");
        entries.insert(stored(&hot, &[b' '; 200]), None);
        for i in 0..2000u32 {
            let k = key("t", &i.to_le_bytes());
            entries.insert(stored(&k, &[b' '; 200]), None);
            assert!(entries.get(&k).is_some());
            assert!(entries.get(&hot).is_some(), "lost after {i} fills");
        }
        let firsts: Vec<u32> = entries.shards.iter().map(|s| s.lock().first).collect();
        assert!(firsts.iter().all(|f| *f < 1000), "{firsts:?}");
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_its_own_and_one_larger_than_a_shard_is_not_kept() {
        let capacity = 64 << 10;
        let (entries, _) = entries(capacity);
        let large = key("t", b"large");
        entries.insert(stored(&large, &vec![b' '; 20 << 10]), None);
        assert_eq!(entries.get(&large).unwrap().body().len(), 20 << 10);
        let huge = key("t", b"huge");
        entries.insert(stored(&huge, &vec![b' '; 80 << 10]), None);
        assert!(entries.get(&huge).is_none());
        assert!(entries.weight() <= capacity);
    }

    #[tokio::test]
    async fn lookups_of_a_reserved_key_wait_for_its_fill() {
        let (entries, evictions) = entries(1 << 20);
        let k = key("t", b"q");
        let Err(reservation) = entries.get_or_reserve(&k).await else {
            panic!("an empty index reserves");
        };
        let waiter = entries.get_or_reserve(&k);
        tokio::pin!(waiter);
        assert!(still_waiting(waiter.as_mut()).await);
        assert!(entries.insert(stored(&k, b"{}"), Some(reservation)));
        let Ok(found) = waiter.await else {
            panic!("the waiter gets the fill");
        };
        assert_eq!(&found.body()[..], b"{}");
        assert_eq!(evictions.get(), 0);
    }

    #[tokio::test]
    async fn a_reservation_given_up_lets_a_waiter_reserve() {
        let (entries, _) = entries(1 << 20);
        let k = key("t", b"q");
        let Err(reservation) = entries.get_or_reserve(&k).await else {
            panic!("an empty index reserves");
        };
        let waiter = entries.get_or_reserve(&k);
        tokio::pin!(waiter);
        assert!(still_waiting(waiter.as_mut()).await);
        drop(reservation);
        assert!(waiter.await.is_err(), "the waiter reserves in turn");
    }

    #[tokio::test]
    async fn a_reservation_of_a_removed_table_stores_nothing() {
        let (entries, _) = entries(1 << 20);
        let k = key("t", b"q");
        let Err(reservation) = entries.get_or_reserve(&k).await else {
            panic!("an empty index reserves");
        };
        entries.remove_table(&TableId::new("r", "t"));
        assert!(!entries.insert(stored(&k, b"{}"), Some(reservation)));
        assert!(entries.get(&k).is_none());
    }

    #[test]
    fn removing_a_table_keeps_tables_whose_names_extend_it() {
        let (entries, _) = entries(1 << 20);
        for table in ["t", "tt"] {
            entries.insert(stored(&key(table, b"q"), b"{}"), None);
        }
        entries.remove_table(&TableId::new("r", "t"));
        assert!(entries.get(&key("t", b"q")).is_none());
        assert!(entries.get(&key("tt", b"q")).is_some());
        entries.clear();
        assert!(entries.get(&key("tt", b"q")).is_none());
        assert_eq!((entries.len(), entries.weight()), (0, 0));
    }
}
