//! What cached items cost in memory: the resident set of this process with a million GetItem
//! answers of about 230 bytes cached, and with a cache of capacity C filled three times over (so
//! it evicts as it goes), next to what the weigher counted.
//!
//! `cargo bench --bench memory` runs both cases with bodies stored as they came and compressed
//! (`cache.compression = "lz4"`), each in a process of its own (memory freed by one would
//! otherwise be counted in the next); `-- items 200000 [lz4]` or `-- full 128 [lz4]` runs one (an
//! item count, a capacity in MiB). The entries are filled through `Cache::lookup` and
//! `Fill::complete`, as misses are stored.
//!
//! The items look like an application's: a user record of names, an e-mail address, a city,
//! numbers and a line of text drawn from a vocabulary, different for every item. How much LZ4
//! saves depends on that content: on bodies of random bytes it saves nothing, and ddbcache then
//! stores them as they came.

use std::sync::Arc;

use ddbcache::cache::{Cache, Kind, MonotonicClock};
use ddbcache::config::{Compression, Config};
use ddbcache::metrics::Metrics;

mod support;
use support::{answer, key_part, lookup_or_fill, TABLE};

const MIB: f64 = 1024.0 * 1024.0;

fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

fn new_cache(capacity: u64, compression: Compression) -> Cache {
    let mut config = Config::default();
    config.cache.compression = compression;
    config.cache.item.capacity = capacity;
    config.cache.query.capacity = 1 << 20;
    Cache::new(&config, Arc::new(Metrics::new()), MonotonicClock::new())
}

/// Stores items `0..n`; returns the answer bytes stored and the key bytes they are stored under.
async fn fill(cache: &Cache, n: u64) -> (u64, u64) {
    let mut payload = 0;
    let mut keys = 0;
    for i in 0..n {
        let k = key_part(i);
        let body = answer(i);
        if !lookup_or_fill(cache, &k, &body).await {
            payload += body.len() as u64;
            // The key as stored: table, NUL, canonical key, 0xff, projection (none).
            keys += (TABLE.as_str().len() + 1 + k.len() + 1) as u64;
        }
    }
    (payload, keys)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |default: u64| {
        args.iter()
            .skip_while(|a| !matches!(a.as_str(), "items" | "full"))
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let compression = if args.iter().any(|a| a == "lz4") {
        Compression::Lz4
    } else {
        Compression::None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    if args.iter().any(|a| a == "items") {
        rt.block_on(items(number(1_000_000), compression));
    } else if args.iter().any(|a| a == "full") {
        rt.block_on(full(number(64) << 20, compression));
    } else {
        let me = std::env::current_exe().expect("the bench's own path");
        for case in ["items", "full"] {
            for stored in ["none", "lz4"] {
                let status = std::process::Command::new(&me)
                    .args([case, stored])
                    .status();
                assert!(status.is_ok_and(|s| s.success()), "{case} {stored} failed");
            }
        }
    }
}

/// A cache large enough for every item.
async fn items(n: u64, compression: Compression) {
    let start = rss_bytes();
    let cache = new_cache(4 << 30, compression);
    let (payload, keys) = fill(&cache, n).await;
    let stats = cache.stats(Kind::Item);
    let rss = rss_bytes();
    let per_item = (rss - start) / stats.entries as f64;
    println!(
        "{n} items ({:.1} MiB of answers, {:.0} B of body and key each), compression {compression:?}: RSS {:.1} MiB (process at start {:.1} MiB), {:.0} B per item, {:.0} B beyond body and key; weighed {:.1} MiB, {:.0} B per item; {:.0} items per GiB",
        payload as f64 / MIB,
        (payload + keys) as f64 / n as f64,
        rss / MIB,
        start / MIB,
        per_item,
        per_item - (payload + keys) as f64 / n as f64,
        stats.bytes as f64 / MIB,
        stats.bytes as f64 / stats.entries as f64,
        stats.entries as f64 * 1024.0 * MIB / (rss - start),
    );
}

/// A full cache: capacity C, three times as many items read as fit.
async fn full(capacity: u64, compression: Compression) {
    let start = rss_bytes();
    let cache = new_cache(capacity, compression);
    fill(&cache, 3 * capacity / 400).await;
    let stats = cache.stats(Kind::Item);
    let rss = rss_bytes();
    let bound = 1.1 * capacity as f64 + 30.0 * MIB;
    println!(
        "full cache of {} MiB, compression {compression:?}: {} entries, weighed {:.1} MiB, RSS {:.1} MiB (process at start {:.1} MiB); bound 1.1 x C + 30 MiB = {:.1} MiB: {}",
        capacity >> 20,
        stats.entries,
        stats.bytes as f64 / MIB,
        rss / MIB,
        start / MIB,
        bound / MIB,
        if rss <= bound { "met" } else { "NOT met" }
    );
}
