//! What the cache benches share: a cache as the proxy configures it, the keys and GetItem bodies
//! `ddbcache-load` sends, an answer of the size a load run stores, and a GetItem served past HTTP
//! the way the proxy serves it. Each bench uses part of it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ddbcache::cache::{Address, Cache, CacheKey, Dependency, Kind, Lookup, MonotonicClock};
use ddbcache::config::{Compression, Config};
use ddbcache::metrics::Metrics;
use ddbcache::protocol::reads::{self, Parsed, Read};
use ddbcache::protocol::table::TableId;
use ddbcache::protocol::Operation;
use ddbcache::proxy::respond::{json_response, Body};
use http::{Response, StatusCode};

/// A table identity (region and name), as the proxy keys entries.
pub static TABLE: std::sync::LazyLock<TableId> =
    std::sync::LazyLock::new(|| TableId::new("us-east-1", "bench"));
pub const TTL: Duration = Duration::from_secs(3600);

/// A cache whose two parts each hold `capacity` bytes.
pub fn new_cache(capacity: u64) -> Cache {
    new_cache_with(capacity, Compression::None)
}

/// [`new_cache`] keeping bodies as `compression` says.
pub fn new_cache_with(capacity: u64, compression: Compression) -> Cache {
    let mut config = Config::default();
    config.cache.compression = compression;
    config.cache.item.capacity = capacity;
    config.cache.query.capacity = capacity;
    Cache::new(&config, Arc::new(Metrics::new()), MonotonicClock::new())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// The canonical key of item number `i`, shaped like the ones `ddbcache-load` sends.
pub fn key_part(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    for (name, value) in [("pk", format!("p{i:010}")), ("sk", "s000000".to_owned())] {
        k.push(b'A');
        k.extend_from_slice(&(name.len() as u32).to_le_bytes());
        k.extend_from_slice(name.as_bytes());
        k.push(b'S');
        k.extend_from_slice(&(value.len() as u32).to_le_bytes());
        k.extend_from_slice(value.as_bytes());
    }
    k
}

/// The GetItem body `ddbcache-load` sends for item number `i`.
pub fn get_item_body(i: u64) -> Vec<u8> {
    format!(r#"{{"TableName":"bench","Key":{{"pk":{{"S":"p{i:010}"}},"sk":{{"S":"s000000"}}}}}}"#)
        .into_bytes()
}

/// A GetItem answer of about 235 bytes: item 0's [`answer`].
pub fn response() -> Bytes {
    answer(0)
}

const WORDS: [&str; 32] = [
    "order", "shipped", "pending", "blue", "green", "large", "small", "express", "standard",
    "gift", "returned", "north", "south", "east", "west", "priority", "customer", "account",
    "review", "rating", "delivery", "window", "morning", "evening", "weekend", "address", "note",
    "call", "before", "after", "door", "front",
];
const NAMES: [&str; 16] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Dennis", "Margaret", "John",
    "Frances", "Leslie", "Niklaus", "Tony", "Radia", "Butler",
];
const CITIES: [&str; 8] = [
    "Lisbon", "Dublin", "Seattle", "Osaka", "Nairobi", "Lima", "Oslo", "Perth",
];

/// The GetItem answer for item `i`: about 235 bytes, every item different, shaped like an
/// application's record (names, an e-mail address, a city, numbers, a line of text drawn from a
/// vocabulary), so that what compression saves on it is what it would save on real answers.
pub fn answer(i: u64) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let name = NAMES[(next() % 16) as usize];
    let city = CITIES[(next() % 8) as usize];
    let score = next() % 100_000;
    let created = 1_700_000_000 + next() % 50_000_000;
    let note: Vec<&str> = (0..5).map(|_| WORDS[(next() % 32) as usize]).collect();
    let body = format!(
        r#"{{"Item":{{"pk":{{"S":"user#{i:010}"}},"sk":{{"S":"profile"}},"name":{{"S":"{name}"}},"email":{{"S":"{}.{i}@example.com"}},"city":{{"S":"{city}"}},"score":{{"N":"{score}"}},"created":{{"N":"{created}"}},"note":{{"S":"{}"}}}}}}"#,
        name.to_lowercase(),
        note.join(" "),
    );
    Bytes::from(body)
}

/// A GetItem as the proxy serves it past HTTP: the body read down to its cache key and proven
/// valid, the lookup, and on a hit the response built from the entry; a miss stores `body`.
pub async fn serve_get_item(cache: &Cache, request: &[u8], body: &Bytes) -> Option<Response<Body>> {
    let Ok(Parsed::Proven(Read::GetItem(read))) = reads::parse_read(Operation::GetItem, request)
    else {
        panic!("the bench body is a cacheable, valid GetItem");
    };
    let key = CacheKey::item(&TABLE, &read.key, &read.projection);
    let at = Address {
        kind: Kind::Item,
        table: &TABLE,
        dependency: Dependency::Item(&read.key),
        key: &key,
    };
    match cache.lookup(at).await {
        Lookup::Hit { entry, .. } => {
            let (body, crc32) = entry.response_parts();
            let crc32 = http::HeaderValue::from_maybe_shared(crc32).expect("decimal digits");
            Some(json_response(StatusCode::OK, body, crc32))
        }
        Lookup::Miss(fill) => {
            let _ = fill.complete(body.clone(), Some(8..body.len() - 1), TTL);
            None
        }
    }
}

/// xorshift64*: uniform enough to spread lookups over the whole cache, and cheap.
pub fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Looks item `key` up as the proxy does and, on a miss, stores `body` (a GetItem answer, its
/// item between the first 8 bytes and the last). Returns whether it was a hit.
pub async fn lookup_or_fill(cache: &Cache, key: &[u8], body: &Bytes) -> bool {
    let cache_key = CacheKey::item(&TABLE, key, b"");
    let at = Address {
        kind: Kind::Item,
        table: &TABLE,
        dependency: Dependency::Item(key),
        key: &cache_key,
    };
    match cache.lookup(at).await {
        Lookup::Hit { .. } => true,
        Lookup::Miss(fill) => {
            let _ = fill.complete(body.clone(), Some(8..body.len() - 1), TTL);
            false
        }
    }
}
