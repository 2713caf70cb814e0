//! Where entries live: records appended to segments, found through a table of 8-byte slots,
//! evicted a segment at a time: memcached's and Segcache's layout, sized for a million entries
//! that cost little more than their bytes.
//!
//! Entries are split into shards by their key's hash, each behind its own lock: hits share it,
//! fills, removals and evictions take it alone. A shard appends each record ([`super::entries`])
//! to the newest segment of a queue. A segment is shared as `Bytes` as far as it is written, once
//! per fill: a hit's [`Entry`] is a slice of it, so the segment's memory lives on while a hit
//! still answers from it, and a hit allocates nothing. The index is a hash table of slots: the
//! record's queue, segment (a sequence number) and offset, 8 bytes with a count of the reads
//! since it was stored. Keys are not in the index: a probe compares the key's bytes in the record
//! it is about to answer from.
//!
//! Eviction is S3-FIFO's, a segment at a time. New records go to a small queue (a twentieth of
//! the shard); when its oldest segment goes, the records read meanwhile are promoted to the main
//! queue and the others are evicted, so that entries read once and never again (most of a
//! skewed workload's) do not take the place of those read again. When the main queue's oldest
//! segment goes, the records read since they were last moved are moved to its newest segment, a
//! read fewer, up to seven eighths of the segment's bytes, so that eviction always frees memory;
//! the others are evicted, and counted. A record replaced or removed stays in its segment,
//! unreachable, until that segment goes.
//!
//! A miss may reserve its key: lookups of the same key then wait for the reserving fill
//! (single-flight), and try again when it is stored or given up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use append_only_bytes::AppendOnlyBytes;
use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::RwLock;
use prometheus::IntCounter;
use tokio::sync::Notify;

use super::entries::{
    copy_record, hash_key, record_key, record_len, share, table_of, CacheKey, Entry,
};
use super::generations::TableGenerations;
use crate::protocol::table::TableId;

/// Where a record is: its queue ([`SMALL`] or [`MAIN`]), its segment's sequence number there
/// (29 bits) and its offset in that segment (32 bits), and how often hits read it since it was
/// stored there, up to 3 (the top two bits).
#[derive(Clone, Copy)]
struct Slot(u64);

const READS: u64 = 3 << 62;
const ONE_READ: u64 = 1 << 62;
const IN_MAIN: u64 = 1 << 61;
const SEQUENCE: u32 = (1 << 29) - 1;

/// The queue new entries start in, a twentieth of a shard's bytes: an entry read there is
/// promoted to [`MAIN`], one never read is evicted early (S3-FIFO: most entries of a skewed
/// workload are never read again, and would otherwise take the place of those that are).
const SMALL: usize = 0;
/// The queue of entries read since they were stored.
const MAIN: usize = 1;

/// The small queue's share of a shard, in percent.
const SMALL_SHARE: u64 = 5;

/// How much of a main segment, in eighths, may move to the newest when it is evicted: what is
/// left is what eviction frees at least.
const SECOND_CHANCES: usize = 7;

impl Slot {
    fn new(queue: usize, sequence: u32, offset: usize) -> Slot {
        let main = if queue == MAIN { IN_MAIN } else { 0 };
        Slot(main | u64::from(sequence & SEQUENCE) << 32 | offset as u32 as u64)
    }

    fn queue(self) -> usize {
        if self.0 & IN_MAIN != 0 {
            MAIN
        } else {
            SMALL
        }
    }

    fn sequence(self) -> u32 {
        (self.0 >> 32) as u32 & SEQUENCE
    }

    fn offset(self) -> usize {
        self.0 as u32 as usize
    }

    fn reads(self) -> u64 {
        self.0 >> 62
    }

    /// The place alone, without the reads.
    fn place(self) -> u64 {
        self.0 & !READS
    }

    /// The same place, read `reads` times.
    fn with_reads(self, reads: u64) -> Slot {
        Slot(self.place() | reads.min(3) << 62)
    }
}

/// A [`Slot`] in the index: hits mark it read under the shard's read lock.
struct Stored(AtomicU64);

impl Stored {
    fn new(slot: Slot) -> Stored {
        Stored(AtomicU64::new(slot.0))
    }

    fn load(&self) -> Slot {
        Slot(self.0.load(Ordering::Relaxed))
    }

    /// Counts a read, up to 3: written no more than three times, so that hits on a hot entry
    /// from many threads do not all write its cache line. Two hits counting at once may count
    /// one: the count is a hint to eviction.
    fn mark_read(&self) {
        let slot = self.load();
        if slot.reads() < 3 {
            self.0.store(slot.0 + ONE_READ, Ordering::Relaxed);
        }
    }
}

/// Records, back to back, and the tables they belong to (a record names its table by its place in
/// `tables`: a byte, instead of a pointer per record).
struct Segment {
    bytes: AppendOnlyBytes,
    /// The bytes as far as they were written when last shared ([`Segment::share`]): hits slice
    /// their answers from it.
    shared: Bytes,
    tables: Vec<Arc<TableGenerations>>,
}

/// The most tables one segment's records may name.
const TABLES_PER_SEGMENT: usize = 256;

impl Segment {
    fn new(size: usize) -> Segment {
        Segment {
            bytes: AppendOnlyBytes::with_capacity(size),
            shared: Bytes::new(),
            tables: Vec::new(),
        }
    }

    /// Shares what was appended since the last time, once for all the hits that will read it
    /// (instead of an allocation a hit).
    fn share(&mut self) {
        if self.shared.len() != self.bytes.len() {
            self.shared = share(self.bytes.slice(..));
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

/// Segments in the order they were made: appended to at the back, evicted from the front.
#[derive(Default)]
struct Queue {
    segments: VecDeque<Segment>,
    /// The sequence number of `segments[0]`.
    first: u32,
    /// Bytes of the segments, as allocated.
    allocated: u64,
}

impl Queue {
    /// The segments' bytes, the newest one's only as far as it is written: the rest of it is not
    /// yet memory a page of which was touched.
    fn weight(&self) -> u64 {
        let unwritten = self
            .segments
            .back()
            .map_or(0, |s| s.bytes.capacity() - s.bytes.len());
        self.allocated - unwritten as u64
    }

    fn newest(&self) -> u32 {
        self.first.wrapping_add(self.segments.len() as u32 - 1) & SEQUENCE
    }

    /// Appends a record, in a new segment if the newest has no room; returns its sequence number
    /// and offset. Hits find it at once, but slice their answers from it cheaply only after
    /// [`Queue::share`].
    fn append(
        &mut self,
        record: &[u8],
        table: &Arc<TableGenerations>,
        segment: usize,
    ) -> (u32, usize) {
        if !self
            .segments
            .back()
            .is_some_and(|s| s.fits(record.len(), table))
        {
            // A record of more than a quarter of a segment gets one of its own size.
            let size = if record.len() > segment / 4 {
                record.len()
            } else {
                segment
            };
            if let Some(full) = self.segments.back_mut() {
                full.share();
            }
            self.segments.push_back(Segment::new(size));
            self.allocated += size as u64;
        }
        let newest = self.newest();
        let back = self.segments.back_mut().expect("a segment with room");
        (newest, back.append(record, table))
    }

    /// Shares what the newest segment was appended since ([`Segment::share`]).
    fn share(&mut self) {
        if let Some(newest) = self.segments.back_mut() {
            newest.share();
        }
    }

    fn pop(&mut self) -> Option<(u32, Segment)> {
        let oldest = self.segments.pop_front()?;
        let sequence = self.first;
        self.first = self.first.wrapping_add(1) & SEQUENCE;
        self.allocated -= oldest.bytes.capacity() as u64;
        Some((sequence, oldest))
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
    /// Bytes of a segment.
    segment: usize,
}

struct Shard {
    index: HashTable<Stored>,
    queues: [Queue; 2],
    pending: Vec<Pending>,
}

/// The record a slot names (its bytes from its start to its segment's end), and its segment.
fn at(queues: &[Queue; 2], slot: Slot) -> (&Segment, &[u8]) {
    let queue = &queues[slot.queue()];
    let segment = &queue.segments[(slot.sequence().wrapping_sub(queue.first) & SEQUENCE) as usize];
    (segment, &segment.bytes[slot.offset()..])
}

impl Shard {
    fn new() -> Shard {
        Shard {
            index: HashTable::new(),
            queues: Default::default(),
            pending: Vec::new(),
        }
    }

    /// The queues' bytes and the index's.
    fn weight(&self) -> u64 {
        self.queues.iter().map(Queue::weight).sum::<u64>() + self.index.allocation_size() as u64
    }

    fn get(&self, key: &CacheKey) -> Option<Entry> {
        // The segment the probe found the key in: found once, read twice.
        let mut found = None;
        let stored = self.index.find(key.hash(), |s| {
            let (segment, record) = at(&self.queues, s.load());
            let same = record_key(record) == key.bytes();
            if same {
                found = Some(segment);
            }
            same
        })?;
        stored.mark_read();
        let segment = found?;
        Some(Entry::in_segment(
            &segment.bytes,
            &segment.shared,
            stored.load().offset(),
            &segment.tables,
        ))
    }

    /// Forgets what is stored under `key` if `only` says so (given the record's first byte).
    fn remove(&mut self, hash: u64, key: &[u8], only: impl FnOnce(*const u8) -> bool) {
        let Shard { index, queues, .. } = self;
        if let Ok(found) = index.find_entry(hash, |s| record_key(at(queues, s.load()).1) == key) {
            if only(at(queues, found.get().load()).1.as_ptr()) {
                found.remove();
            }
        }
    }

    /// Stores `entry` under its key (`hash` is the key's), in place of what was there; then
    /// evicts while the shard holds more than its share.
    fn store(&mut self, entry: &Entry, hash: u64, shape: &Shape, evicted: &IntCounter) {
        self.remove(hash, entry.key(), |_| true);
        let record = entry.record();
        if record.len() as u64 > shape.budget / 2 {
            return;
        }
        let (sequence, offset) = self.queues[SMALL].append(record, entry.table(), shape.segment);
        let Shard { index, queues, .. } = self;
        index.insert_unique(hash, Stored::new(Slot::new(SMALL, sequence, offset)), |s| {
            hash_key(record_key(at(queues, s.load()).1))
        });
        while self.weight() > shape.budget {
            // The small queue keeps its share, and the segment just stored to.
            let small = &self.queues[SMALL];
            let evict =
                if small.weight() > shape.budget * SMALL_SHARE / 100 && small.segments.len() > 1 {
                    SMALL
                } else if !self.queues[MAIN].segments.is_empty() {
                    MAIN
                } else if small.segments.len() > 1 {
                    SMALL
                } else {
                    break;
                };
            self.evict_oldest(evict, shape, evicted);
        }
        for queue in &mut self.queues {
            queue.share();
        }
    }

    /// Drops a queue's oldest segment. A record read since it was stored moves to the main
    /// queue's newest segment: from the small queue, every one (promoted); from the main queue,
    /// up to seven eighths of the segment's bytes, a read fewer (a second chance, which leaves
    /// eviction something to free). The rest are evicted.
    fn evict_oldest(&mut self, queue: usize, shape: &Shape, evicted: &IntCounter) {
        let Some((sequence, oldest)) = self.queues[queue].pop() else {
            return;
        };
        let mut second_chances = if queue == MAIN {
            oldest.bytes.capacity() * SECOND_CHANCES / 8
        } else {
            usize::MAX
        };
        let Shard { index, queues, .. } = self;
        let bytes = oldest.bytes.as_bytes();
        let mut offset = 0;
        while offset < bytes.len() {
            let record = &bytes[offset..];
            let len = record_len(record);
            let place = Slot::new(queue, sequence, offset).place();
            // Replaced and removed records are still here, but no slot names them.
            if let Ok(mut found) =
                index.find_entry(hash_key(record_key(record)), |s| s.load().place() == place)
            {
                let reads = found.get().load().reads();
                if reads > 0 && len <= second_chances {
                    second_chances -= len;
                    let table = table_of(record, &oldest.tables);
                    let (moved, at) = queues[MAIN].append(&record[..len], table, shape.segment);
                    // Promoted from the small queue, it starts afresh; kept in the main one, it
                    // has a read fewer.
                    let left = if queue == MAIN { reads - 1 } else { 0 };
                    *found.get_mut() = Stored::new(Slot::new(MAIN, moved, at).with_reads(left));
                } else {
                    found.remove();
                    evicted.inc();
                }
            }
            offset += len;
        }
    }

    /// Forgets every entry and fill whose key `matches`; the fills' waiters look again.
    fn forget(&mut self, matches: impl Fn(&[u8]) -> bool) {
        let Shard {
            index,
            queues,
            pending,
            ..
        } = self;
        index.retain(|s| !matches(record_key(at(queues, s.load()).1)));
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
            .write()
            .pending
            .retain(|p| p.id != self.id);
        self.done.notify_waiters();
    }
}

/// A bounded set of entries, weighed in bytes.
pub(crate) struct Entries {
    shards: Box<[RwLock<Shard>]>,
    shape: Shape,
    evictions: IntCounter,
    fills: AtomicU64,
}

/// A shard is given at least this much of the capacity: a small cache is one shard, so that its
/// segments are not too small for its entries.
const SMALLEST_SHARD: u64 = 256 << 10;
const SMALLEST_SEGMENT: u64 = 4 << 10;
/// Evicting a segment hashes and looks up each of its records, and may move most of them, while
/// hits of the shard wait: a segment of 64 KiB (about 200 records of 300 bytes) keeps that
/// to tens of microseconds.
const LARGEST_SEGMENT: u64 = 64 << 10;

impl Entries {
    pub(crate) fn new(capacity: u64, evictions: IntCounter) -> Entries {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let most = (capacity / SMALLEST_SHARD).max(1);
        let shards = ((threads * 4).next_power_of_two() as u64).min(1 << most.ilog2());
        let budget = capacity / shards;
        // Segments small enough for the small queue to be a few of them.
        let shape = Shape {
            budget,
            segment: (budget / 128).clamp(SMALLEST_SEGMENT, LARGEST_SEGMENT) as usize,
        };
        Entries {
            shards: (0..shards).map(|_| RwLock::new(Shard::new())).collect(),
            shape,
            evictions,
            fills: AtomicU64::new(0),
        }
    }

    /// Bits of the hash the index does not use (its buckets take the low bits, its tags the top
    /// seven) choose the shard.
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)]
    }

    /// A hit, without reserving anything.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Entry> {
        self.shard(key.hash()).read().get(key)
    }

    /// The entry, or (on a miss) the right to fill it: concurrent callers wait for that fill,
    /// then look again.
    pub(crate) async fn get_or_reserve(&self, key: &CacheKey) -> Result<Entry, Reservation<'_>> {
        loop {
            let filled = {
                let mut shard = self.shard(key.hash()).write();
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

    /// Stores an entry under its key (`key`, whose hash is already known), through a reservation
    /// or not. `false`: the reservation was cancelled (its table dropped, or the cache cleared)
    /// and nothing is stored.
    pub(crate) fn insert(
        &self,
        key: &CacheKey,
        entry: Entry,
        reservation: Option<Reservation<'_>>,
    ) -> bool {
        debug_assert_eq!(entry.key(), key.bytes());
        let mut shard = self.shard(key.hash()).write();
        if let Some(r) = &reservation {
            let Some(at) = shard.pending.iter().position(|p| p.id == r.id) else {
                return false;
            };
            shard.pending.swap_remove(at);
        }
        shard.store(&entry, key.hash(), &self.shape, &self.evictions);
        true
    }

    /// Removes `entry` if it is still the one stored under `key`.
    pub(crate) fn remove_if_same(&self, key: &CacheKey, entry: &Entry) {
        let record = entry.record().as_ptr();
        self.shard(key.hash())
            .write()
            .remove(key.hash(), key.bytes(), |stored| stored == record);
    }

    /// Drops every entry of a table.
    pub(crate) fn remove_table(&self, table: &TableId) {
        let table = table.as_str().as_bytes();
        for shard in &self.shards {
            shard.write().forget(|key| {
                key.len() > table.len() && key[table.len()] == 0 && key.starts_with(table)
            });
        }
    }

    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.write();
            shard.forget(|_| true);
            *shard = Shard {
                pending: std::mem::take(&mut shard.pending),
                ..Shard::new()
            };
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().index.len()).sum()
    }

    /// Bytes held: the segments (the newest as far as it is written) and the index.
    pub(crate) fn weight(&self) -> u64 {
        self.shards.iter().map(|s| s.read().weight()).sum()
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
        assert!(entries.insert(&a, stored(&a, b"{\"A\":1}"), None));
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
        entries.insert(&k, old, None);
        let found_old = entries.get(&k).unwrap();
        entries.insert(&k, stored(&k, b"{\"v\":2}"), None);
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
            entries.insert(&k, stored(&k, &[b' '; 200]), None);
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
        entries.insert(&hot, stored(&hot, &[b' '; 200]), None);
        for i in 0..2000u32 {
            assert!(entries.get(&hot).is_some(), "evicted after {i} fills");
            let k = key("t", &i.to_le_bytes());
            entries.insert(&k, stored(&k, &[b' '; 200]), None);
        }
        // Not read, the first cold entry is long gone.
        assert!(entries.get(&key("t", &0u32.to_le_bytes())).is_none());
    }

    #[test]
    fn entries_never_read_do_not_take_the_place_of_those_read_once() {
        let (entries, evictions) = entries(64 << 10);
        let read: Vec<CacheKey> = (0..50u32).map(|i| key("read", &i.to_le_bytes())).collect();
        for k in &read {
            entries.insert(k, stored(k, &[b' '; 200]), None);
            assert!(entries.get(k).is_some());
        }
        // A scan of many times the capacity, never read again.
        for i in 0..2000u32 {
            let scanned = key("scan", &i.to_le_bytes());
            entries.insert(&scanned, stored(&scanned, &[b' '; 200]), None);
        }
        assert!(evictions.get() > 1500);
        let kept = read.iter().filter(|k| entries.get(k).is_some()).count();
        assert_eq!(
            kept,
            read.len(),
            "the scan went through the small queue alone"
        );
    }

    #[test]
    fn segment_numbers_wrap_around() {
        let (entries, _) = entries(64 << 10);
        for shard in entries.shards.iter() {
            for queue in &mut shard.write().queues {
                queue.first = SEQUENCE - 2;
            }
        }
        let hot = key("t", b"hot");
        entries.insert(&hot, stored(&hot, &[b' '; 200]), None);
        for i in 0..2000u32 {
            let k = key("t", &i.to_le_bytes());
            entries.insert(&k, stored(&k, &[b' '; 200]), None);
            // Every other one read: promoted to the main queue, which turns over too.
            if i % 2 == 0 {
                assert!(entries.get(&k).is_some());
            }
            assert!(entries.get(&hot).is_some(), "lost after {i} fills");
        }
        let firsts: Vec<u32> = entries
            .shards
            .iter()
            .flat_map(|s| s.read().queues.iter().map(|q| q.first).collect::<Vec<_>>())
            .collect();
        assert!(firsts.iter().all(|f| *f < 1000), "{firsts:?}");
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_its_own_and_one_larger_than_a_shard_is_not_kept() {
        let capacity = 64 << 10;
        let (entries, _) = entries(capacity);
        let large = key("t", b"large");
        entries.insert(&large, stored(&large, &vec![b' '; 20 << 10]), None);
        assert_eq!(entries.get(&large).unwrap().body().len(), 20 << 10);
        let huge = key("t", b"huge");
        entries.insert(&huge, stored(&huge, &vec![b' '; 80 << 10]), None);
        assert!(entries.get(&huge).is_none());
        assert!(entries.weight() <= capacity);
    }

    #[tokio::test]
    async fn lookups_of_a_reserved_key_wait_for_its_fill_or_reserve_it_when_given_up() {
        let (entries, evictions) = entries(1 << 20);
        let k = key("t", b"q");
        let Err(given_up) = entries.get_or_reserve(&k).await else {
            panic!("an empty index reserves");
        };
        let waiter = entries.get_or_reserve(&k);
        tokio::pin!(waiter);
        assert!(still_waiting(waiter.as_mut()).await);
        drop(given_up);
        let Err(filled) = waiter.await else {
            panic!("the waiter reserves in turn");
        };
        let waiter = entries.get_or_reserve(&k);
        tokio::pin!(waiter);
        assert!(still_waiting(waiter.as_mut()).await);
        assert!(entries.insert(&k, stored(&k, b"{}"), Some(filled)));
        let Ok(found) = waiter.await else {
            panic!("the waiter gets the fill");
        };
        assert_eq!(&found.body()[..], b"{}");
        assert_eq!(evictions.get(), 0);
    }

    #[tokio::test]
    async fn a_reservation_of_a_removed_table_stores_nothing() {
        let (entries, _) = entries(1 << 20);
        let k = key("t", b"q");
        let Err(reservation) = entries.get_or_reserve(&k).await else {
            panic!("an empty index reserves");
        };
        entries.remove_table(&TableId::new("r", "t"));
        assert!(!entries.insert(&k, stored(&k, b"{}"), Some(reservation)));
        assert!(entries.get(&k).is_none());
    }

    #[test]
    fn removing_a_table_keeps_tables_whose_names_extend_it() {
        let (entries, _) = entries(1 << 20);
        for table in ["t", "tt"] {
            let k = key(table, b"q");
            entries.insert(&k, stored(&k, b"{}"), None);
        }
        entries.remove_table(&TableId::new("r", "t"));
        assert!(entries.get(&key("t", b"q")).is_none());
        assert!(entries.get(&key("tt", b"q")).is_some());
        entries.clear();
        assert!(entries.get(&key("tt", b"q")).is_none());
        assert_eq!((entries.len(), entries.weight()), (0, 0));
    }
}
