//! What an entry is: the key it is found by, and the record it is stored as.
//!
//! A hit must read as few cache lines as possible, and a million entries must cost little more
//! than their bytes. So an entry is one packed record: a 39-byte header (the generations its
//! read started under, its scope, its expiry, where the `Item` sits), then the key's bytes, the
//! response body and its checksum's digits. Records are appended to segments
//! ([`super::segments`]), which hold them with no allocation of their own; an [`Entry`] is a
//! record's slice of its segment. A lookup carries the key's 64-bit hash, computed once when the
//! [`CacheKey`] is built; the index compares hashes, then the key's bytes in the record it is
//! about to answer from anyway. Two keys with the same hash but different bytes are two entries:
//! a hash collision is a miss, never another key's answer.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use append_only_bytes::{AppendOnlyBytes, BytesSlice};
use bytes::Bytes;
use smallvec::SmallVec;

use super::generations::{Scope, Stamp, TableGenerations};
use crate::protocol::table::TableId;

/// The hash of every key, seeded at random once per process: clients choose keys, and must not
/// be able to choose colliding ones.
static KEY_HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

pub(crate) fn hash_key(bytes: &[u8]) -> u64 {
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

    /// The same key, claiming another hash (to test what a collision does).
    #[cfg(test)]
    pub(crate) fn with_hash(mut self, hash: u64) -> CacheKey {
        self.hash = hash;
        self
    }

    /// The key's hash, computed once when it was built.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// Where an entry's fields sit in its record: every one fixed-width and little-endian, read in
/// place (a record is packed, so nothing is aligned and nothing is padded).
mod at {
    use std::ops::Range;
    pub(super) const KEY_LEN: Range<usize> = 0..4;
    pub(super) const STORED_LEN: Range<usize> = 4..8;
    /// Where the `Item` sits in the body; an end of 0: no item.
    pub(super) const ITEM_START: Range<usize> = 8..12;
    pub(super) const ITEM_END: Range<usize> = 12..16;
    /// [`super::Stamp::digest`] of the generations the read started under.
    pub(super) const GENERATIONS: Range<usize> = 16..24;
    /// Milliseconds on the cache's clock after which the entry is dead.
    pub(super) const EXPIRES: Range<usize> = 24..32;
    /// The scope cell it depends on, packed ([`super::pack_scope`]).
    pub(super) const SCOPE: Range<usize> = 32..36;
    /// Which of its segment's tables the entry's is (set when a segment stores it).
    pub(super) const TABLE: usize = 36;
    pub(super) const FLAGS: usize = 37;
    /// How many decimal digits the checksum has.
    pub(super) const CRC_LEN: usize = 38;
    pub(super) const HEADER: usize = 39;
}

/// The body is stored LZ4-compressed, its length prepended ([`lz4_flex::compress_prepend_size`]).
const COMPRESSED: u8 = 1;
/// The digest of the shared tier's versions the entry was read under ([`Entry::shared`]) is
/// stored after the checksum's digits. Most entries have none (no shared tier).
const SHARED: u8 = 2;

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

/// A record's header: read as an array, its fields' places are checked once, when it is taken.
type Header = [u8; at::HEADER];

fn header(record: &[u8]) -> &Header {
    record
        .first_chunk()
        .expect("a record starts with its header")
}

#[inline]
fn u32_at(header: &Header, at: Range<usize>) -> u32 {
    u32::from_le_bytes(header[at].try_into().unwrap_or_default())
}

#[inline]
fn u64_at(header: &Header, at: Range<usize>) -> u64 {
    u64::from_le_bytes(header[at].try_into().unwrap_or_default())
}

/// A record's whole length, read from the start of `bytes` (where a segment keeps it).
pub(crate) fn record_len(bytes: &[u8]) -> usize {
    let h = header(bytes);
    let shared = if h[at::FLAGS] & SHARED != 0 { 8 } else { 0 };
    at::HEADER
        + u32_at(h, at::KEY_LEN) as usize
        + u32_at(h, at::STORED_LEN) as usize
        + h[at::CRC_LEN] as usize
        + shared
}

/// A record's key, read from the start of `bytes`.
pub(crate) fn record_key(bytes: &[u8]) -> &[u8] {
    &bytes[at::HEADER..at::HEADER + u32_at(header(bytes), at::KEY_LEN) as usize]
}

/// The table of the record at the start of `bytes`, among its segment's `tables`.
pub(crate) fn table_of<'t>(
    bytes: &[u8],
    tables: &'t [Arc<TableGenerations>],
) -> &'t Arc<TableGenerations> {
    &tables[bytes[at::TABLE] as usize]
}

/// Appends the record at the start of `bytes` to `segment`, naming its table by `table` (its
/// place among the segment's tables).
pub(crate) fn copy_record(bytes: &[u8], segment: &mut AppendOnlyBytes, table: u8) {
    let len = record_len(bytes);
    segment.push_slice(&bytes[..at::TABLE]);
    segment.push(table);
    segment.push_slice(&bytes[at::TABLE + 1..len]);
}

/// A stored answer: its record (a packed header, the key's bytes, the body as sent or
/// compressed, the checksum's decimal digits, and the shared tier's digest when there is one),
/// shared with the segment that holds it, and its table. Cloning it is two reference counts; a
/// hit's answer is two slices of it.
#[derive(Clone)]
pub struct Entry {
    record: Bytes,
    table: Arc<TableGenerations>,
}

/// A slice of a segment, as the owner of a `Bytes`.
struct InSegment(BytesSlice);

impl AsRef<[u8]> for InSegment {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A slice of a segment as `Bytes`, which a hit's answer can be sliced from.
pub(crate) fn share(slice: BytesSlice) -> Bytes {
    Bytes::from_owner(InSegment(slice))
}

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
    /// An entry of its own: its record in an allocation of its exact size, until a segment
    /// stores a copy of it ([`copy_record`]).
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
        // zeroed when used.
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
        let flags = if compressed.is_some() { COMPRESSED } else { 0 }
            | if e.shared != 0 { SHARED } else { 0 };
        let mut header = [0u8; at::HEADER];
        header[at::KEY_LEN].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
        header[at::STORED_LEN]
            .copy_from_slice(&((prefix.len() + stored.len()) as u32).to_le_bytes());
        header[at::ITEM_START].copy_from_slice(&item_start.to_le_bytes());
        header[at::ITEM_END].copy_from_slice(&item_end.to_le_bytes());
        header[at::GENERATIONS].copy_from_slice(&e.stamp.digest().to_le_bytes());
        header[at::EXPIRES].copy_from_slice(&e.expires.to_le_bytes());
        header[at::SCOPE].copy_from_slice(&pack_scope(e.stamp.scope()).to_le_bytes());
        header[at::FLAGS] = flags;
        header[at::CRC_LEN] = crc.len() as u8;
        let shared = e.shared.to_le_bytes();
        let shared: &[u8] = if e.shared != 0 { &shared } else { &[] };
        let parts = [&header[..], e.key, prefix, stored, crc, shared];
        let mut record = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            record.extend_from_slice(part);
        }
        Entry {
            record: Bytes::from(record),
            table: e.table,
        }
    }

    /// The entry found at `offset` of a segment, whose tables include its table. `shared` is
    /// the segment as far as it was written when last shared: a record inside it is a slice of
    /// it (a reference count). One appended since (none, once a shard lets go of its lock) is
    /// shared on its own, an allocation.
    pub(crate) fn in_segment(
        segment: &AppendOnlyBytes,
        shared: &Bytes,
        offset: usize,
        tables: &[Arc<TableGenerations>],
    ) -> Entry {
        let record = &segment[offset..];
        let end = offset + record_len(record);
        Entry {
            table: table_of(record, tables).clone(),
            record: if end <= shared.len() {
                shared.slice(offset..end)
            } else {
                share(segment.slice(offset..end))
            },
        }
    }

    /// The whole record: its length is what the entry takes in a segment.
    pub(crate) fn record(&self) -> &[u8] {
        &self.record
    }

    fn header(&self) -> &Header {
        header(&self.record)
    }

    fn flags(&self) -> u8 {
        self.header()[at::FLAGS]
    }

    pub(crate) fn key(&self) -> &[u8] {
        record_key(self.record())
    }

    fn body_range(&self) -> Range<usize> {
        let h = self.header();
        let start = at::HEADER + u32_at(h, at::KEY_LEN) as usize;
        start..start + u32_at(h, at::STORED_LEN) as usize
    }

    /// The body as the entry holds it: compressed or not.
    fn stored(&self) -> &[u8] {
        &self.record()[self.body_range()]
    }

    fn compressed(&self) -> bool {
        self.flags() & COMPRESSED != 0
    }

    /// The response body: the stored bytes, or a decompressed copy of them.
    pub fn body(&self) -> Cow<'_, [u8]> {
        if self.compressed() {
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

    fn item(&self) -> Option<Range<usize>> {
        let h = self.header();
        let end = u32_at(h, at::ITEM_END) as usize;
        (end != 0).then(|| u32_at(h, at::ITEM_START) as usize..end)
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.item().is_none()
    }

    /// The item's JSON, for answering BatchGetItem from GetItem-shaped entries.
    pub(crate) fn item_json(&self) -> Option<Cow<'_, [u8]>> {
        let item = self.item()?;
        Some(match self.body() {
            Cow::Borrowed(body) => Cow::Borrowed(&body[item]),
            Cow::Owned(mut body) => {
                body.truncate(item.end);
                body.drain(..item.start);
                Cow::Owned(body)
            }
        })
    }

    /// The body and the decimal digits of its `x-amz-crc32`, sharing the entry's memory: no copy
    /// (a compressed body: decompressed into a buffer of its own).
    pub fn response_parts(&self) -> (Bytes, Bytes) {
        let body = self.body_range();
        let crc = body.end..body.end + self.header()[at::CRC_LEN] as usize;
        if self.compressed() {
            return (Bytes::from(self.decompressed()), self.record.slice(crc));
        }
        (self.record.slice(body), self.record.slice(crc))
    }

    pub(crate) fn table(&self) -> &Arc<TableGenerations> {
        &self.table
    }

    pub(crate) fn scope(&self) -> Scope {
        unpack_scope(u32_at(self.header(), at::SCOPE))
    }

    pub(crate) fn generations(&self) -> u64 {
        u64_at(self.header(), at::GENERATIONS)
    }

    pub(crate) fn expires(&self) -> u64 {
        u64_at(self.header(), at::EXPIRES)
    }

    /// The digest of the shared tier's versions the entry was read under (0: none).
    pub(crate) fn shared(&self) -> u64 {
        match self.record.last_chunk() {
            Some(digest) if self.flags() & SHARED != 0 => u64::from_le_bytes(*digest),
            _ => 0,
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::generations::Generations;

    pub(crate) fn entry(key: &[u8], body: &[u8], item: Option<Range<usize>>) -> Entry {
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
        assert_eq!(e.record().len(), plain.record().len() + 8);
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
        assert!(packed.compressed() && !plain.compressed());
        assert!(packed.record().len() < plain.record().len());
        assert_eq!(&packed.body()[..], body.as_bytes());
        assert_eq!(packed.item_json().as_deref(), Some(item.as_bytes()));
        let (bytes, crc) = packed.response_parts();
        assert_eq!(&bytes[..], body.as_bytes());
        assert_eq!(crc, crc32fast::hash(body.as_bytes()).to_string().as_bytes());
        // What would not shrink is kept as it came.
        let short = entry_stored(b"t\0k", b"{}", None, true);
        assert!(!short.compressed());
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
        let table = packed.table().clone();
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
        assert!(!random.compressed());
        assert_eq!(&random.body()[..], &noise[..]);
    }
}
