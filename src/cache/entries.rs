//! Where entries live: the layout of one entry, the key it is found by, what it weighs, and the
//! bounded index (quick_cache) that holds them.
//!
//! A hit must read as few cache lines as possible, and a million entries must cost little more
//! than their bytes. So an [`Entry`] is one allocation: a small header (the generations its read
//! started under, its scope, its expiry, where the `Item` sits), then the key's bytes, the
//! response body and its checksum's digits. The index holds one pointer to it as the key and
//! another as the value. A lookup carries the key's 64-bit hash, computed once when the
//! [`CacheKey`] is built; the index compares hashes, then the key's bytes in the entry it is about
//! to answer from anyway. Two keys with the same hash but different bytes are two entries: a hash
//! collision is a miss, never another key's answer.
//!
//! The weigher counts what an entry really costs: its allocation as the allocator rounds it, and
//! its share of the index. So the configured capacity is close to the memory the entries hold.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use prometheus::IntCounter;
use quick_cache::sync::{Cache as QuickCache, PlaceholderGuard};
use quick_cache::{Equivalent, Lifecycle, OptionsBuilder, Weighter};
use smallvec::SmallVec;
use triomphe::ThinArc;

use super::generations::{Scope, Stamp, TableGenerations};
use crate::protocol::table::TableId;

/// The hash of every key, seeded at random once per process: clients choose keys, and must not
/// be able to choose colliding ones.
static KEY_HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

fn hash_key(bytes: &[u8]) -> u64 {
    KEY_HASHER.hash_one(bytes)
}

/// Keys up to this length are built without an allocation (the usual GetItem's is about 60).
const INLINE_KEY: usize = 120;

/// A cache key: the table identity, a NUL, then the canonical request, and its hash.
#[derive(Clone)]
pub struct CacheKey {
    hash: u64,
    bytes: SmallVec<[u8; INLINE_KEY]>,
}

impl CacheKey {
    /// Item cache key: table, canonical primary key, canonical projection.
    pub fn item(table: &TableId, key: &[u8], projection: &[u8]) -> CacheKey {
        Self::build(table, key, Some(projection))
    }

    /// Query cache key: table and the canonical request.
    pub fn query(table: &TableId, canonical: &[u8]) -> CacheKey {
        Self::build(table, canonical, None)
    }

    /// The table, a NUL (a table identity never contains one, so the first NUL ends it), then
    /// `request`, and for an item 0xFF and its `projection`.
    fn build(table: &TableId, request: &[u8], projection: Option<&[u8]>) -> CacheKey {
        let table = table.as_str().as_bytes();
        let len = table.len() + 1 + request.len() + projection.map_or(0, |p| 1 + p.len());
        // Written in place (every read's key is built here): a `SmallVec` extended piece by
        // piece moves its tail and copies each piece, a call apiece.
        let join = |out: &mut [u8]| {
            out[..table.len()].copy_from_slice(table);
            out[table.len()] = 0;
            let at = table.len() + 1 + request.len();
            out[table.len() + 1..at].copy_from_slice(request);
            if let Some(projection) = projection {
                out[at] = 0xff;
                if !projection.is_empty() {
                    out[at + 1..].copy_from_slice(projection);
                }
            }
        };
        // On the stack when it fits, on the heap when not.
        let bytes = if len <= INLINE_KEY {
            let mut joined = [0; INLINE_KEY];
            join(&mut joined[..len]);
            SmallVec::from_buf_and_len(joined, len)
        } else {
            let mut joined = vec![0; len];
            join(&mut joined);
            SmallVec::from_vec(joined)
        };
        CacheKey {
            hash: hash_key(&bytes),
            bytes,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key's hash, computed once when it was built.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash)
    }
}

impl Equivalent<StoredKey> for CacheKey {
    fn equivalent(&self, stored: &StoredKey) -> bool {
        self.bytes[..] == *stored.0.key()
    }
}

/// The fixed part of an entry.
struct Header {
    /// The entry's table's cells (an entry checks them without looking its table up).
    table: Arc<TableGenerations>,
    /// [`Stamp::digest`] of the generations the read started under.
    generations: u64,
    /// The scope cell it depends on, packed ([`pack_scope`]).
    scope: u32,
    key_len: u32,
    body_len: u32,
    /// Where the `Item` sits in the body; `item_end == 0`: no item.
    item_start: u32,
    item_end: u32,
    /// Milliseconds on the cache's clock after which the entry is dead.
    expires: u64,
    /// Set on a reservation's key once its filled entry replaces it as the index's key.
    rekeyed: AtomicBool,
    /// The body is stored LZ4-compressed, its length prepended ([`lz4_flex::compress_prepend_size`]).
    compressed: bool,
    /// The digest of the shared tier's versions the entry was read under ([`Entry::shared`]) is
    /// stored after the checksum's digits. Most entries have none (no shared tier), and the
    /// header is 48 bytes instead of 56 without it.
    shared_stored: bool,
}

fn pack_scope(scope: Scope) -> u32 {
    match scope {
        Scope::Stripe(i) => i as u32,
        Scope::TableWrites => u32::MAX,
    }
}

fn unpack_scope(packed: u32) -> Scope {
    match packed {
        u32::MAX => Scope::TableWrites,
        i => Scope::Stripe(i as usize),
    }
}

/// A stored answer, or (while its read is upstream) the key a miss reserved. One allocation:
/// header, key bytes, body (as sent, or compressed), the checksum's decimal digits, and the shared
/// tier's digest when there is one. Cloning it is a reference count.
#[derive(Clone)]
pub struct Entry(ThinArc<Header, u8>);

/// What an [`Entry`] is built from.
pub(crate) struct NewEntry<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) item: Option<Range<usize>>,
    pub(crate) table: Arc<TableGenerations>,
    pub(crate) stamp: Stamp,
    pub(crate) expires: u64,
    /// The shared tier's stamp ([`Entry::shared`]).
    pub(crate) shared: u64,
    /// Store the body LZ4-compressed if that makes it smaller.
    pub(crate) compress: bool,
}

/// Bodies shorter than this are stored as they are: there is little to gain, and a hit on them
/// would pay a decompression and an allocation for it.
const COMPRESS_FROM: usize = 64;

/// A body of a few hundred bytes has little to compress on its own; what it shares with the
/// table's other answers (attribute names, DynamoDB's type tags, the shape of values) is most of
/// it. So each table compresses against a dictionary: DynamoDB's JSON tokens, then the start of
/// the first body compressed for the table.
const DICTIONARY_TOKENS: &[u8] = br#"{"Responses":{"UnprocessedKeys":{},"LastEvaluatedKey":{"Count":0,"ScannedCount":0,"Items":[{"BOOL":true},{"BOOL":false},{"NULL":true},{"SS":["NS":["BS":["L":[{"M":{"B":"N":"0"},"S":""},"Item":{"#;

/// How much of the first body the dictionary keeps: compressing hashes the whole dictionary, so
/// a larger one makes every fill dearer.
const DICTIONARY_SAMPLE: usize = 2048;

fn dictionary<'t>(table: &'t TableGenerations, first: &[u8]) -> &'t [u8] {
    table.dictionary.get_or_init(|| {
        let sample = &first[..first.len().min(DICTIONARY_SAMPLE)];
        [DICTIONARY_TOKENS, sample].concat().into_boxed_slice()
    })
}

impl Entry {
    pub(crate) fn new(e: NewEntry<'_>) -> Entry {
        let mut digits = itoa::Buffer::new();
        let crc = digits.format(crc32fast::hash(e.body)).as_bytes();
        let (item_start, item_end) = match e.item {
            // An entry's item is inside its body, whose length fits in u32 (bodies are bounded by
            // the request size limit, far below 4 GiB).
            Some(r) if r.end <= e.body.len() && r.start < r.end => (r.start as u32, r.end as u32),
            _ => (0, 0),
        };
        // Compressed on the stack where it fits: a buffer of the worst case's size, allocated and
        // then shrunk, would leave a hole in the heap beside every entry. The buffer is only
        // zeroed when used: placeholders and uncompressed entries are made on every miss.
        let mut scratch: [u8; 4096];
        let mut large = Vec::new();
        let size = (e.body.len() as u32).to_le_bytes();
        let compressed = if e.compress && e.body.len() >= COMPRESS_FROM {
            let bound = lz4_flex::block::get_maximum_output_size(e.body.len());
            let out = if bound <= 4096 {
                scratch = [0; 4096];
                &mut scratch[..bound]
            } else {
                large.resize(bound, 0);
                &mut large[..]
            };
            let dictionary = dictionary(&e.table, e.body);
            match lz4_flex::block::compress_into_with_dict(e.body, out, dictionary) {
                Ok(n) if size.len() + n < e.body.len() => Some(&out[..n]),
                _ => None,
            }
        } else {
            None
        };
        // A compressed body is stored as `decompress_size_prepended_with_dict` reads it: the
        // length as it came (u32, little-endian), then the LZ4 block.
        let (prefix, stored): (&[u8], &[u8]) = match compressed {
            Some(c) => (&size, c),
            None => (&[], e.body),
        };
        let header = Header {
            table: e.table,
            generations: e.stamp.digest(),
            scope: pack_scope(e.stamp.scope()),
            key_len: e.key.len() as u32,
            body_len: (prefix.len() + stored.len()) as u32,
            item_start,
            item_end,
            expires: e.expires,
            rekeyed: AtomicBool::new(false),
            compressed: compressed.is_some(),
            shared_stored: e.shared != 0,
        };
        let shared = e.shared.to_le_bytes();
        let shared: &[u8] = if e.shared != 0 { &shared } else { &[] };
        let parts = [e.key, prefix, stored, crc, shared];
        Entry(ThinArc::from_header_and_iter(header, Concat::new(&parts)))
    }

    fn header(&self) -> &Header {
        &self.0.header.header
    }

    fn key(&self) -> &[u8] {
        &self.0.slice[..self.header().key_len as usize]
    }

    fn body_range(&self) -> Range<usize> {
        let h = self.header();
        let start = h.key_len as usize;
        start..start + h.body_len as usize
    }

    /// The body as the entry holds it: compressed or not.
    fn stored(&self) -> &[u8] {
        &self.0.slice[self.body_range()]
    }

    /// The response body: the stored bytes, or a decompressed copy of them.
    pub fn body(&self) -> Cow<'_, [u8]> {
        if self.header().compressed {
            Cow::Owned(self.decompressed())
        } else {
            Cow::Borrowed(self.stored())
        }
    }

    fn decompressed(&self) -> Vec<u8> {
        let dictionary = self.table().dictionary.get().map_or(&[][..], |d| d);
        lz4_flex::block::decompress_size_prepended_with_dict(self.stored(), dictionary).expect(
            "an entry's compressed body is what Entry::new compressed, with this dictionary",
        )
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.header().item_end == 0
    }

    /// The item's JSON, for answering BatchGetItem from GetItem-shaped entries.
    pub(crate) fn item_json(&self) -> Option<Cow<'_, [u8]>> {
        let h = self.header();
        if h.item_end == 0 {
            return None;
        }
        let item = h.item_start as usize..h.item_end as usize;
        Some(match self.body() {
            Cow::Borrowed(body) => Cow::Borrowed(&body[item]),
            Cow::Owned(mut body) => {
                body.truncate(item.end);
                body.drain(..item.start);
                Cow::Owned(body)
            }
        })
    }

    /// The body and the decimal digits of its `x-amz-crc32`, sharing the entry's memory: no copy,
    /// one small allocation (a compressed body: decompressed into a buffer of its own).
    pub fn response_parts(&self) -> (Bytes, Bytes) {
        let body = self.body_range();
        let crc = body.end..self.0.slice.len() - self.shared_len();
        let whole = Bytes::from_owner(Whole(self.clone()));
        if self.header().compressed {
            return (Bytes::from(self.decompressed()), whole.slice(crc));
        }
        (whole.slice(body), whole.slice(crc))
    }

    pub(crate) fn table(&self) -> &TableGenerations {
        &self.header().table
    }

    pub(crate) fn scope(&self) -> Scope {
        unpack_scope(self.header().scope)
    }

    pub(crate) fn generations(&self) -> u64 {
        self.header().generations
    }

    pub(crate) fn expires(&self) -> u64 {
        self.header().expires
    }

    /// The digest of the shared tier's versions the entry was read under (0: none).
    pub(crate) fn shared(&self) -> u64 {
        let slice = &self.0.slice;
        match slice.len().checked_sub(self.shared_len()) {
            Some(at) if self.header().shared_stored => {
                u64::from_le_bytes(slice[at..].try_into().unwrap_or_default())
            }
            _ => 0,
        }
    }

    /// Bytes of the shared tier's digest at the end of the entry: 8, or none.
    fn shared_len(&self) -> usize {
        if self.header().shared_stored {
            8
        } else {
            0
        }
    }

    fn same(&self, other: &Entry) -> bool {
        std::ptr::eq(self.0.slice.as_ptr(), other.0.slice.as_ptr())
    }

    /// Bytes the allocator spends on this entry: glibc's malloc rounds a request plus its 8-byte
    /// chunk header up to 16 bytes, at least 32.
    fn allocated(&self) -> u64 {
        let requested = ENTRY_FIXED + self.0.slice.len();
        ((requested + 8).div_ceil(16) * 16).max(32) as u64
    }

    #[cfg(test)]
    pub(crate) fn for_tests(body: &[u8]) -> Entry {
        let generations = super::generations::Generations::new();
        let table = Arc::new(TableGenerations::default());
        let stamp = generations.stamp(&table, Scope::TableWrites);
        Entry::new(NewEntry {
            key: b"t\0k",
            body,
            item: None,
            table,
            stamp,
            expires: 0,
            shared: 0,
            compress: false,
        })
    }
}

/// The whole slice of an entry, as the owner of the `Bytes` a hit answers with.
struct Whole(Entry);

impl AsRef<[u8]> for Whole {
    fn as_ref(&self) -> &[u8] {
        &self.0 .0.slice
    }
}

/// An entry's fixed bytes: the reference count, the header and the slice length.
const ENTRY_FIXED: usize = 8 + std::mem::size_of::<Header>() + 8;

/// The key and the checksum are short and the body is copied once per fill; an exact-size
/// iterator over the parts lets the entry be allocated at its final size.
struct Concat<'a> {
    parts: &'a [&'a [u8]],
    part: usize,
    at: usize,
    left: usize,
}

impl<'a> Concat<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Self {
        Concat {
            parts,
            part: 0,
            at: 0,
            left: parts.iter().map(|p| p.len()).sum(),
        }
    }
}

impl Iterator for Concat<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        while self.part < self.parts.len() {
            if let Some(b) = self.parts[self.part].get(self.at) {
                self.at += 1;
                self.left -= 1;
                return Some(*b);
            }
            self.part += 1;
            self.at = 0;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Concat<'_> {}

/// The index's key: the entry itself (its key bytes), found by the key's hash.
#[derive(Clone)]
pub(crate) struct StoredKey(Entry);

impl PartialEq for StoredKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for StoredKey {}

impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(hash_key(self.0.key()))
    }
}

/// Passes the key's precomputed hash through: the index hashes nothing itself.
#[derive(Clone, Default)]
struct PassHash;

impl BuildHasher for PassHash {
    type Hasher = Passed;
    fn build_hasher(&self) -> Passed {
        Passed(0)
    }
}

struct Passed(u64);

impl Hasher for Passed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the key types above; anything else still hashes properly.
        self.0 = hash_key(bytes) ^ self.0.rotate_left(5);
    }
}

/// An entry's share of the index: its slot in quick_cache's slab (key, value, list links), its
/// slots in the hash table (a 4-byte token and a control byte, at most 7/8 full and on average
/// about 5/8), and the ghost (a remembered hash of an evicted key) it may leave behind.
const INDEX_BYTES: u64 = 40 + 8 + GHOST_SHARE;
const GHOST_ALLOCATION: f64 = 0.25;
const GHOST_SHARE: u64 = 12;

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<StoredKey, Entry> for ByteWeighter {
    fn weight(&self, key: &StoredKey, val: &Entry) -> u64 {
        // While a miss is upstream its key is an entry of its own; once filled, key and value are
        // one allocation.
        let key_alloc = if key.0.same(val) {
            0
        } else {
            key.0.allocated()
        };
        key_alloc + val.allocated() + INDEX_BYTES
    }
}

#[derive(Clone)]
struct CountEvictions(IntCounter);

impl Lifecycle<StoredKey, Entry> for CountEvictions {
    type RequestState = ();
    fn begin_request(&self) -> Self::RequestState {}
    fn on_evict(&self, _: &mut (), key: StoredKey, _: Entry) {
        // A reservation's key replaced by the filled entry's own is the entry moving, not an
        // eviction.
        if !key.0.header().rekeyed.load(Ordering::Relaxed) {
            self.0.inc();
        }
    }
}

type Index = QuickCache<StoredKey, Entry, ByteWeighter, PassHash, CountEvictions>;

/// The right to fill a key other lookups wait for (single-flight), and the key-only entry the
/// index holds meanwhile.
pub(crate) struct Reservation<'a> {
    guard: PlaceholderGuard<'a, StoredKey, Entry, ByteWeighter, PassHash, CountEvictions>,
    placeholder: Entry,
}

/// A bounded set of entries, weighed in bytes.
pub(crate) struct Entries {
    index: Index,
}

/// What an average entry is assumed to weigh when sizing the index up front; a wrong guess costs
/// a resize, not correctness.
const TYPICAL_ENTRY: u64 = 512;

impl Entries {
    pub(crate) fn new(capacity: u64, evictions: IntCounter) -> Entries {
        let estimated = (capacity / TYPICAL_ENTRY).clamp(1024, 8 << 20) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(capacity)
            .ghost_allocation(GHOST_ALLOCATION)
            .build()
            .expect("estimated items and weight capacity are set");
        Entries {
            index: QuickCache::with_options(
                options,
                ByteWeighter,
                PassHash,
                CountEvictions(evictions),
            ),
        }
    }

    /// A hit, without reserving anything.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Entry> {
        self.index.get(key)
    }

    /// The entry, or (on a miss) the right to fill it: concurrent callers wait for that fill.
    /// `placeholder` is the key-only entry the index holds meanwhile.
    pub(crate) async fn get_or_reserve(
        &self,
        placeholder: Entry,
    ) -> Result<Entry, Reservation<'_>> {
        self.index
            .get_value_or_guard_async(&StoredKey(placeholder.clone()))
            .await
            .map_err(|guard| Reservation { guard, placeholder })
    }

    /// Stores an entry under its own key, into a reservation or not.
    pub(crate) fn insert(&self, entry: Entry, reservation: Option<Reservation<'_>>) -> bool {
        match reservation {
            Some(r) => {
                if r.guard.insert(entry.clone()).is_err() {
                    return false;
                }
                // The reservation's key was an entry of its own; the stored one is its own key,
                // which frees the placeholder.
                r.placeholder
                    .header()
                    .rekeyed
                    .store(true, Ordering::Relaxed);
                let _ = self.index.replace(StoredKey(entry.clone()), entry, true);
                true
            }
            None => {
                self.index.insert(StoredKey(entry.clone()), entry);
                true
            }
        }
    }

    /// Removes `entry` if it is still the one stored under `key`.
    pub(crate) fn remove_if_same(&self, key: &CacheKey, entry: &Entry) {
        self.index.remove_if(key, |e| e.same(entry));
    }

    /// Drops every entry of a table.
    pub(crate) fn remove_table(&self, table: &TableId) {
        let table = table.as_str().as_bytes();
        self.index.retain(|k, _| {
            let key = k.0.key();
            !(key.len() > table.len() && key[table.len()] == 0 && key.starts_with(table))
        });
    }

    pub(crate) fn clear(&self) {
        self.index.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn weight(&self) -> u64 {
        self.index.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::generations::Generations;

    fn entry(key: &[u8], body: &[u8], item: Option<Range<usize>>) -> Entry {
        entry_stored(key, body, item, false)
    }

    fn entry_stored(key: &[u8], body: &[u8], item: Option<Range<usize>>, compress: bool) -> Entry {
        let g = Generations::new();
        let table = Arc::new(TableGenerations::default());
        let stamp = g.stamp(&table, Scope::Stripe(7));
        Entry::new(NewEntry {
            key,
            body,
            item,
            table,
            stamp,
            expires: 42,
            shared: 0,
            compress,
        })
    }

    #[test]
    fn keys_are_the_table_a_nul_and_the_request_however_long() {
        let table = TableId::new("us-east-1", "t");
        for len in [0, 1, 60, INLINE_KEY, 200] {
            let request = vec![b'k'; len];
            for projection in [&b""[..], b"p.q"] {
                let mut expected = b"us-east-1/t\0".to_vec();
                expected.extend_from_slice(&request);
                expected.push(0xff);
                expected.extend_from_slice(projection);
                let key = CacheKey::item(&table, &request, projection);
                assert_eq!(key.bytes(), &expected[..]);
                assert_eq!(key.hash(), hash_key(&expected));
            }
            let mut expected = b"us-east-1/t\0".to_vec();
            expected.extend_from_slice(&request);
            assert_eq!(CacheKey::query(&table, &request).bytes(), &expected[..]);
        }
    }

    #[test]
    fn an_entry_keeps_its_key_body_item_checksum_and_stamp_in_one_allocation() {
        let body = br#"{"Item":{"a":{"S":"x"}}}"#;
        let e = entry(b"t\0k", body, Some(8..23));
        assert_eq!(e.key(), b"t\0k");
        assert_eq!(&e.body()[..], body);
        assert_eq!(e.item_json().as_deref(), Some(&br#"{"a":{"S":"x"}}"#[..]));
        assert!(!e.is_negative());
        assert_eq!(e.scope(), Scope::Stripe(7));
        assert_eq!(e.expires(), 42);
        let (b, crc) = e.response_parts();
        assert_eq!(&b[..], body);
        assert_eq!(crc, crc32fast::hash(body).to_string().as_bytes());
        let negative = entry(b"t\0k", b"{}", None);
        assert!(negative.is_negative() && negative.item_json().is_none());
        assert_eq!(e.shared(), 0);
    }

    #[test]
    fn the_shared_tiers_digest_is_kept_after_the_checksum_only_when_there_is_one() {
        assert_eq!(std::mem::size_of::<Header>(), 48);
        let body = br#"{"Item":{"a":{"S":"x"}}}"#;
        let g = Generations::new();
        let table = Arc::new(TableGenerations::default());
        let stamp = g.stamp(&table, Scope::Stripe(7));
        let e = Entry::new(NewEntry {
            key: b"t\0k",
            body,
            item: Some(8..23),
            table,
            stamp,
            expires: 42,
            shared: 0x0102_0304_0506_0708,
            compress: false,
        });
        assert_eq!(e.shared(), 0x0102_0304_0506_0708);
        let (b, crc) = e.response_parts();
        assert_eq!(&b[..], body);
        assert_eq!(crc, crc32fast::hash(body).to_string().as_bytes());
        let plain = entry(b"t\0k", body, Some(8..23));
        assert_eq!(e.0.slice.len(), plain.0.slice.len() + 8);
    }

    #[test]
    fn a_compressed_entry_answers_the_bytes_it_was_given_in_less_memory() {
        let item = format!(
            r#"{{"pk":{{"S":"p1"}},"v":{{"S":"{}"}}}}"#,
            "ab".repeat(100)
        );
        let body = format!(r#"{{"Item":{item}}}"#);
        let range = Some(8..body.len() - 1);
        let plain = entry_stored(b"t\0k", body.as_bytes(), range.clone(), false);
        let packed = entry_stored(b"t\0k", body.as_bytes(), range, true);
        assert!(packed.header().compressed && !plain.header().compressed);
        assert!(packed.allocated() < plain.allocated());
        assert_eq!(&packed.body()[..], body.as_bytes());
        assert_eq!(packed.item_json().as_deref(), Some(item.as_bytes()));
        let (bytes, crc) = packed.response_parts();
        assert_eq!(&bytes[..], body.as_bytes());
        assert_eq!(crc, crc32fast::hash(body.as_bytes()).to_string().as_bytes());
        // What would not shrink is kept as it came.
        let short = entry_stored(b"t\0k", b"{}", None, true);
        assert!(!short.header().compressed);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        // (On the table whose dictionary the first body set: a table's first body compresses
        // against itself.)
        let g = Generations::new();
        let table = packed.header().table.clone();
        let stamp = g.stamp(&table, Scope::TableWrites);
        let random = Entry::new(NewEntry {
            key: b"t\0k",
            body: &noise,
            item: None,
            table,
            stamp,
            expires: 0,
            shared: 0,
            compress: true,
        });
        assert!(!random.header().compressed);
        assert_eq!(&random.body()[..], &noise[..]);
    }

    #[test]
    fn keys_with_the_same_hash_but_other_bytes_are_different_entries() {
        let entries = Entries::new(1 << 20, IntCounter::new("e", "e").unwrap());
        let a = CacheKey::query(&TableId::new("r", "t"), b"a");
        let stored = entry(a.bytes(), b"{\"A\":1}", None);
        assert!(entries.insert(stored, None));
        // Forge a key that collides with `a` on the hash but differs in its bytes.
        let mut forged = CacheKey::query(&TableId::new("r", "t"), b"b");
        forged.hash = a.hash;
        assert!(entries.get(&forged).is_none(), "a collision is a miss");
        assert_eq!(
            entries.get(&a).map(|e| e.body().to_vec()),
            Some(b"{\"A\":1}".to_vec())
        );
    }

    #[test]
    fn the_weight_counts_the_allocation_and_the_index_share() {
        let e = entry(&[b'k'; 60], &[b' '; 230], None);
        let key = StoredKey(e.clone());
        let w = ByteWeighter.weight(&key, &e);
        assert!(
            w >= (60 + 230 + 10 + ENTRY_FIXED) as u64 + INDEX_BYTES,
            "{w}"
        );
        assert!(
            w < (60 + 230 + 10 + ENTRY_FIXED) as u64 + INDEX_BYTES + 24,
            "{w}"
        );
        // A reserved key still separate from its value counts twice.
        let placeholder = entry(&[b'k'; 60], b"", None);
        assert!(ByteWeighter.weight(&StoredKey(placeholder), &e) > w);
    }

    #[tokio::test]
    async fn a_filled_reservation_is_stored_under_its_own_key_and_evicts_nothing() {
        let evictions = IntCounter::new("e", "e").unwrap();
        let entries = Entries::new(1 << 20, evictions.clone());
        let key = CacheKey::query(&TableId::new("r", "t"), b"q");
        let Err(reservation) = entries.get_or_reserve(entry(key.bytes(), b"", None)).await else {
            panic!("an empty index reserves");
        };
        let filled = entry(key.bytes(), b"{}", None);
        assert!(entries.insert(filled.clone(), Some(reservation)));
        assert_eq!(evictions.get(), 0);
        assert_eq!(
            entries.weight(),
            ByteWeighter.weight(&StoredKey(filled.clone()), &filled),
            "the placeholder key is gone"
        );
        assert!(entries.get(&key).is_some_and(|e| e.same(&filled)));
    }

    #[test]
    fn removing_a_table_keeps_tables_whose_names_extend_it() {
        let entries = Entries::new(1 << 20, IntCounter::new("e", "e").unwrap());
        for table in ["t", "tt"] {
            let key = CacheKey::query(&TableId::new("r", table), b"q");
            entries.insert(entry(key.bytes(), b"{}", None), None);
        }
        entries.remove_table(&TableId::new("r", "t"));
        assert!(entries
            .get(&CacheKey::query(&TableId::new("r", "t"), b"q"))
            .is_none());
        assert!(entries
            .get(&CacheKey::query(&TableId::new("r", "tt"), b"q"))
            .is_some());
    }
}
